/*
 * Versioned stats structs (amber_stats, amber_repack_stats): the caller
 * sets the version; the library checks it before doing anything and, at
 * the end, fills only the fields of that version it knows.
 *
 * Each struct has a function giving its size at each version: when a
 * version adds fields at the end, the size of the version before is the
 * offset of the first new field, e.g.
 *   return v == 1 ? offsetof(amber_stats, new_field) : sizeof(amber_stats);
 */
#ifndef AMBER_STATS_H
#define AMBER_STATS_H

#include "amber.h"
#include "error.h"

#include <stddef.h>
#include <string.h>

/* Bytes of amber_stats at version v (>= 1; a newer one: all the library knows). */
static inline size_t amber_stats_size(unsigned int v)
{
	return v == 1   ? offsetof(amber_stats, new_chunks)
	       : v == 2 ? offsetof(amber_stats, repack_ns)
	       : v == 3 ? offsetof(amber_stats, pack_listings)
			: sizeof(amber_stats);
}

/* Bytes of amber_repack_stats at version v, likewise. */
static inline size_t amber_repack_stats_size(unsigned int v)
{
	(void)v;
	return sizeof(amber_repack_stats);
}

static inline unsigned int amber_stats_version(const void *st)
{
	unsigned int v;

	memcpy(&v, st, sizeof(v));
	return v;
}

/**
 * A caller's stats struct (NULL is fine) before anything is done: version 0
 * (zeroed, not initialised) is AMBER_EINVAL naming the init macro; a version
 * newer than the library's is accepted (the newer fields are left alone).
 */
static inline int amber_stats_check(const void *st, const char *type, const char *init)
{
	unsigned int v;

	if (!st)
		return 0;
	memcpy(&v, st, sizeof(v));
	if (v >= 1)
		return 0;
	return amber_fail(AMBER_EINVAL, "%s has version 0: initialise it with %s", type, init);
}

/**
 * Copy the library's counters `src` into the caller's `dst` (NULL-safe;
 * checked by amber_stats_check()) as far as `n` bytes, the size of dst's
 * version as the library knows it (amber_stats_size()...).  dst's version
 * stays as the caller set it.
 */
static inline void amber_stats_put(void *dst, const void *src, size_t n)
{
	if (dst)
		memcpy((char *)dst + sizeof(unsigned int), (const char *)src + sizeof(unsigned int),
		       n - sizeof(unsigned int));
}

#endif
