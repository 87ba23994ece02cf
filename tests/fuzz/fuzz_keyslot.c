/*
 * Key slots as stored in the archive, of either version and any kind:
 * described, then opened with a fixed secret of each kind.  The cost
 * parameters and every length come from the slot and must be bounded
 * before use.
 */
#include "fuzz.h"

#include "keys.h"

AMBER_FUZZ(keyslot)
{
	static const uint8_t secret[32] = "fuzzing secret of 32 bytes.....";
	amber_slot_info info;
	amber_keys *k = NULL;

	fuzz_init();
	(void)amber_slot_describe(&info, data, size);
	if (amber_keyslot_open(&k, data, size, (const uint8_t *)"pass", 4, 1) == 0)
		amber_keys_free(k);
	for (int kind = AMBER_SLOT_PASSPHRASE; kind <= AMBER_SLOT_PKCS11; kind++)
		if (amber_slot_open(&k, data, size, kind, secret, sizeof(secret), 1) == 0)
			amber_keys_free(k);
	return 0;
}
