/*
 * Chunk indexes of multi-chunk files (layout 1) and roots of paged indexes
 * (layout 2).  The first 8 input bytes are the file size the entry
 * declares, as a reader gets it from the manifest.
 */
#include "fuzz.h"

#include "chunker.h"
#include "manifest.h"

#include <stdlib.h>
#include <string.h>

/* A root that decodes re-encodes to itself and covers exactly the file. */
static void root(const uint8_t *data, size_t size, uint64_t fsize)
{
	amber_indexpage *p = NULL;
	amber_buf re = AMBER_BUF_INIT;
	uint64_t sum = 0;
	size_t n = 0;

	if (amber_index_root_decode(&p, &n, data, size, fsize, AMBER_CHUNK_MAX) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		if (p[i].chunks == 0 || p[i].chunks > AMBER_INDEX_PAGE)
			__builtin_trap();
		sum += p[i].bytes;
	}
	amber_buf_init(&re, (size_t)4 << 20);
	if (sum != fsize || amber_index_root_encode(&re, p, n) != 0 || re.len != size ||
	    memcmp(re.data, data, size))
		__builtin_trap();
	amber_buf_dispose(&re);
	free(p);
}

AMBER_FUZZ(index)
{
	amber_chunkref *c = NULL;
	size_t n = 0;
	uint64_t fsize = 0;

	if (size < 8)
		return 0;
	memcpy(&fsize, data, 8);
	if (amber_index_layout(data + 8, size - 8) == 2)
		root(data + 8, size - 8, fsize);
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
