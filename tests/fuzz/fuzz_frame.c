/*
 * Object frames: header checks, the plain path (zstd, declared sizes,
 * checksums) and the encrypted path under a fixed key.  The first input
 * byte picks the object type.
 */
#include "fuzz.h"

#include "codec.h"
#include "keys.h"

AMBER_FUZZ(frame)
{
	static amber_keys *k;
	static const uint8_t master[AMBER_KEY_BYTES] = {7};
	amber_buf out;
	int type;

	fuzz_init();
	if (!k && amber_keys_from_master(&k, master) < 0)
		return 0;
	if (size < 1)
		return 0;
	type = 1 + data[0] % 5;
	amber_buf_init(&out, (size_t)4 << 20);
	if (amber_codec_decode(&out, NULL, type, NULL, data + 1, size - 1, (size_t)4 << 20) == 0)
		amber_buf_dispose(&out);
	amber_buf_init(&out, (size_t)4 << 20);
	if (amber_codec_decode(&out, k, type, NULL, data + 1, size - 1, (size_t)4 << 20) == 0)
		amber_buf_dispose(&out);
	amber_buf_dispose(&out);
	return 0;
}
