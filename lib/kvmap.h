/*
 * A map from 32-byte keys (keyed hashes) to fixed-size values, with load
 * and save to a file.  Backs the local caches (files cache, plaintext-chunk
 * cache).  Those caches can be deleted at any time: a file that is missing,
 * truncated or written by another version is treated as empty.
 */
#ifndef AMBER_KVMAP_H
#define AMBER_KVMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct amber_kvmap amber_kvmap;

/** New empty map with values of `vsize` bytes; NULL on out of memory. */
amber_kvmap *amber_kvmap_new(size_t vsize);
void amber_kvmap_free(amber_kvmap *m);

/** Pointer to the value stored for key, or NULL.  Valid until the next put. */
const void *amber_kvmap_get(const amber_kvmap *m, const uint8_t key[32]);

/** Insert or replace.  @return 0 or AMBER_ERROR (out of memory). */
int amber_kvmap_put(amber_kvmap *m, const uint8_t key[32], const void *value);

size_t amber_kvmap_count(const amber_kvmap *m);

/** Call fn on every value (in no particular order); fn may change it in place. */
void amber_kvmap_each(amber_kvmap *m, void (*fn)(void *value, void *arg), void *arg);

/**
 * Remove every entry for which keep(value, arg) returns 0, and shrink the
 * table to fit what is left.  @return the number removed.
 */
size_t amber_kvmap_prune(amber_kvmap *m, int (*keep)(const void *value, void *arg), void *arg);

/**
 * Load entries from `path` whose header matches `magic` (8 bytes) and
 * `tag` (32 bytes, e.g. the archive id); anything unreadable is ignored.
 */
void amber_kvmap_load(amber_kvmap *m, const char *path, const char magic[8],
		      const uint8_t tag[32]);

/** Write atomically (temp file, fsync, rename).  @return 0 or AMBER_ERROR. */
int amber_kvmap_save(const amber_kvmap *m, const char *path, const char magic[8],
		     const uint8_t tag[32]);

/** mkdir -p for a cache directory.  @return 0 or AMBER_ERROR. */
int amber_mkdirs(const char *path, int mode);

#endif
