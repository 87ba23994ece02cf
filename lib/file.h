/* File contents through the archive's shared cache (file.c). */
#ifndef AMBER_FILE_H
#define AMBER_FILE_H

#include "amber.h"
#include "archive.h"
#include "cache.h"
#include "manifest.h"

/* The decoded chunk list of a multi-chunk file, as held in the cache. */
typedef struct file_index {
	amber_chunkref *c;
	uint64_t *off;          /* start of each chunk; n + 1 values */
	size_t n;
} file_index;

/**
 * The cache key (layout in cache.h) of link l decoded as `kind` ('c' chunk,
 * 'i' index) for a parent that declares `size` bytes and, for an index, the
 * chunk tree `tree` (NULL: none).  Two keys are equal only when decoding
 * would check exactly the same things.
 */
void amber_link_key(uint8_t key[AMBER_CKEY], const amber_link *l, uint8_t kind, uint64_t size,
		    const uint8_t *tree);

/**
 * The cache entry (data: file_index) of the chunk index of multi-chunk
 * file e, decoding and checking it against the chunk tree if needed.
 * Release with amber_cache_release(a->cache, *out).
 */
int amber_file_index(amber_cobj **out, amber_archive *a, const amber_entry *e,
		     const char *what);

/** The chunk of index x that holds byte `off` (off < the file's size). */
size_t amber_file_chunk_at(const file_index *x, uint64_t off);

/**
 * The cache entry (data: amber_buf) of a decoded chunk of `len` bytes.
 * Release with amber_cache_release(a->cache, *out).
 */
int amber_chunk_get(amber_cobj **out, amber_archive *a, const amber_link *l, size_t len,
		    const char *what);

#endif
