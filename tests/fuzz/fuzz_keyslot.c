/*
 * Key slots as stored in the archive, opened with a fixed passphrase: the
 * cost parameters come from the slot and must be bounded before use.
 */
#include "fuzz.h"

#include "keys.h"

AMBER_FUZZ(keyslot)
{
	amber_keys *k = NULL;

	fuzz_init();
	if (amber_keyslot_open(&k, data, size, (const uint8_t *)"pass", 4, 1) == 0)
		amber_keys_free(k);
	return 0;
}
