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

/**
 * Read and authenticate the record of snapshot commit `oid`, checked
 * against the commit (tree, parent, time).  Dispose *r with
 * amber_record_dispose().
 */
int amber_record_read(amber_record *r, amber_archive *a, const uint8_t oid[20]);

/* The time index in the records (lib/history.c). */

/** amber_history_find(): the records carry no index; walk instead. */
#define AMBER_HISTORY_NO_INDEX 1

/**
 * The newest snapshot of `stream` (tip `tip`) taken before `end`, by the
 * skip links of the records: O(log n) authenticated record reads.
 * @return 0 with *out set, AMBER_ENOTFOUND if every snapshot is at or after
 *         end, AMBER_HISTORY_NO_INDEX for records without an index (written
 *         before it existed), or an error (AMBER_EAUTH for a link that does
 *         not match the record it names).
 */
int amber_history_find(uint8_t out[20], amber_archive *a, const char *stream,
		       const uint8_t tip[20], int64_t end);

/**
 * Fill in r->height, r->skip and the page fields of a new record from its
 * parent (r->parent, r->has_parent, r->stream set).  When the record is due
 * to write an index page, its payload is appended to `page`: the caller
 * stores it as an AMBER_OBJ_PAGE frame and calls
 * amber_history_page_written() with its link.  `page` stays empty otherwise.
 */
int amber_history_links(amber_record *r, amber_archive *a, amber_buf *page);

/** Name the page amber_history_links() asked for in r. */
void amber_history_page_written(amber_record *r, const amber_link *page);

/**
 * The snapshots of `stream` (tip `tip`) taken in [start, end), oldest
 * first, from the index pages: a few page reads and at most span - 1
 * record reads, each authenticated and checked against the chain.
 * @param max  keep only the newest max (0: all)
 * @return 0 with *out (free()) and *n set (possibly none),
 *         AMBER_HISTORY_NO_INDEX when the records in the way have no pages
 *         (written before them: walk instead), AMBER_EAUTH/AMBER_ECORRUPT
 *         for a page that does not match the chain.
 */
int amber_history_span(amber_page_ent **out, size_t *n, amber_archive *a, const char *stream,
		       const uint8_t tip[20], int64_t start, int64_t end, size_t max);

/** A defect found by amber_history_check() in the record of snapshot `oid`. */
typedef void (*amber_history_problem_fn)(const uint8_t oid[20], const char *msg, void *payload);

/**
 * Check the index of every record of the stream whose tip is `tip`: heights
 * count down to 1 and each skip link names the ancestor at its distance,
 * with its time.  Each defect goes to `fn`.
 * @return 0 when the walk finished (defects or not), or the error that
 *         stopped it (an unreadable record).
 */
int amber_history_check(amber_archive *a, const char *stream, const uint8_t tip[20],
			amber_history_problem_fn fn, void *payload);

#endif
