/*
 * Armored SSH signatures, checked against a fixed key and message: the
 * parser must refuse or reject, never read out of bounds.
 */
#include "fuzz.h"

#include "sign.h"

#include <stdlib.h>

AMBER_FUZZ(sshsig)
{
	static const uint8_t pk[AMBER_SIGN_PK_BYTES] = {1, 2, 3};
	char *s = fuzz_cstring(data, size);
	int rc;

	fuzz_init();
	if (s) {
		rc = amber_sshsig_verify(s, pk, "git", "msg", 3);
		if (rc == 0)
			__builtin_trap(); /* nobody holds the secret key of pk */
	}
	free(s);
	return 0;
}
