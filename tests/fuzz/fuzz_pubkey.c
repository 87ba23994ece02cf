/* OpenSSH public key lines (signing/ed25519.pub, allowed-signers files). */
#include "fuzz.h"

#include "sign.h"

#include <stdlib.h>

AMBER_FUZZ(pubkey)
{
	char *s = fuzz_cstring(data, size);
	uint8_t pk[AMBER_SIGN_PK_BYTES];

	fuzz_init();
	if (s && amber_pubkey_parse(pk, s) == 0) {
		char line[256];

		if (amber_pubkey_format(line, sizeof(line), pk, "x") < 0)
			__builtin_trap();
	}
	free(s);
	return 0;
}
