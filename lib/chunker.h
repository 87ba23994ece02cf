/*
 * Content-defined chunking (FastCDC with normalised chunking, gear hash).
 * The gear table is derived from a 32-byte seed (the archive's chunk_key,
 * or a fixed public seed for plain archives), so boundaries depend on the
 * key as well as the content.
 */
#ifndef AMBER_CHUNKER_H
#define AMBER_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

#define AMBER_CHUNK_MIN ((size_t)128 << 10)
#define AMBER_CHUNK_AVG ((size_t)512 << 10)
#define AMBER_CHUNK_MAX ((size_t)2 << 20)

typedef struct amber_chunker {
	uint64_t gear[256];
	size_t min, avg, max;
	uint64_t mask_small, mask_large;  /* normalised chunking masks */
} amber_chunker;

/**
 * Set up a chunker.  seed NULL = the fixed public table.  min < avg < max,
 * avg a power of two; asserts otherwise.
 */
void amber_chunker_init(amber_chunker *c, const uint8_t seed[32], size_t min, size_t avg,
			size_t max);

/**
 * Length of the next chunk at the start of data[0..len).  The caller passes
 * at least c->max bytes unless the data ends there (at_eof), in which case
 * everything left may form the last chunk.  Returns a value in 1..len
 * (0 only when len is 0); never more than c->max.
 */
size_t amber_chunker_next(const amber_chunker *c, const uint8_t *data, size_t len, int at_eof);

#endif
