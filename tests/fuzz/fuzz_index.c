/*
 * Chunk indexes of multi-chunk files.  The first 8 input bytes are the
 * file size the entry declares, as a reader gets it from the manifest.
 */
#include "fuzz.h"

#include "chunker.h"
#include "manifest.h"

#include <stdlib.h>
#include <string.h>

AMBER_FUZZ(index)
{
	amber_chunkref *c = NULL;
	size_t n = 0;
	uint64_t fsize = 0;

	if (size < 8)
		return 0;
	memcpy(&fsize, data, 8);
	if (amber_index_decode(&c, &n, data + 8, size - 8, fsize, AMBER_CHUNK_MAX) < 0)
		return 0;
	{
		uint64_t sum = 0;

		for (size_t i = 0; i < n; i++) {
			if (c[i].len == 0 || c[i].len > AMBER_CHUNK_MAX)
				__builtin_trap();
			sum += c[i].len;
		}
		if (sum != fsize)
			__builtin_trap();
	}
	free(c);
	return 0;
}
