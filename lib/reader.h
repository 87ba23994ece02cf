/* The snapshot handle shared by the reader and restore modules. */
#ifndef AMBER_READER_H
#define AMBER_READER_H

#include <pthread.h>

#include "amber.h"
#include "archive.h"
#include "buf.h"
#include "cache.h"
#include "manifest.h"

struct amber_snapshot {
	amber_archive *a;
	amber_snapinfo info;
	amber_entry root;       /* the root directory, from the record */
};

/* The bucket list of a fanned-out directory. */
typedef struct amber_fanout_view {
	amber_bucket *b;        /* malloc'd; NULL when the directory has no fan-out */
	size_t nb;
	unsigned bits;
} amber_fanout_view;

/**
 * Read directory `dir`'s tree and, if it fans out, its bucket list (checked
 * against the tree); v->b is NULL for an ordinary directory.  Free v->b.
 */
int amber_dir_buckets(amber_fanout_view *v, amber_snapshot *s, const amber_entry *dir);

/** An empty listing (NULL on out of memory); free with amber_dir_free(). */
amber_dir *amber_dir_empty(void);

/** The listing of one bucket of fanned-out directory `dir` (checked). */
int amber_dir_open_bucket(amber_dir **out, amber_snapshot *s, const amber_entry *dir,
			  const amber_bucket *b, unsigned bits);

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

/**
 * The cache entry (data: amber_buf) of a decoded chunk of `len` bytes.
 * Release with amber_cache_release(a->cache, *out).
 */
int amber_chunk_get(amber_cobj **out, amber_archive *a, const amber_link *l, size_t len,
		    const char *what);

/**
 * Time (from the Amberfs-Time trailer) and first parent of commit `oid`,
 * without authenticating the record.  *has_parent set to 0 or 1.
 */
int amber_commit_time(int64_t *time_ns, uint8_t parent[20], int *has_parent, amber_archive *a,
		      const uint8_t oid[20]);

#endif
