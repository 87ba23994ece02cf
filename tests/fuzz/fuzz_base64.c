/* The base64 of a record's trailer: never more bytes than len / 4 * 3, and
 * the verdict and bytes of libsodium's decoder on anything without a byte
 * above 127 (which libsodium 1.0.18 reads as '/'). */
#include "fuzz.h"

#include "buf.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

AMBER_FUZZ(base64)
{
	size_t cap = size / 4 * 3, n = 0, wn = 0;
	uint8_t *out = malloc(cap + 1), *want = malloc(cap + 1);
	int got, w, high = 0;

	if (!out || !want)
		abort();
	for (size_t i = 0; i < size; i++)
		high |= data[i] > 127;
	got = amber_base64_decode(out, &n, (const char *)data, size);
	if (got == 0 && n > cap)
		abort();
	if (!high) {
		fuzz_init();
		w = sodium_base642bin(want, cap + 1, (const char *)data, size, NULL, &wn, NULL,
				      sodium_base64_VARIANT_ORIGINAL);
		if (w != got || (w == 0 && (wn != n || memcmp(want, out, n) != 0)))
			abort();
	}
	free(want);
	free(out);
	return 0;
}
