/*
 * libamber: reading snapshots: the log, names and times, timelines, entries,
 * directories and file bytes.  Part of <amber.h>; see libamber(3).
 */
#ifndef AMBER_READ_PUBLIC_H
#define AMBER_READ_PUBLIC_H

#include "amber_archive.h"
#include "amber_snapshot.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Reading snapshots                                                   */

/** What is known of one snapshot without reading its tree. */
typedef struct amber_snapinfo {
	char id[AMBER_OID_HEXSZ + 1];
	char parent[AMBER_OID_HEXSZ + 1]; /**< "" for the first of a stream */
	char tree[AMBER_OID_HEXSZ + 1];
	char stream[AMBER_STREAM_MAX + 1];
	int64_t time_ns;                  /**< UTC, ns since the epoch */
	char *host;                       /**< writer's host name */
	char *source;                     /**< source path as given */
	char *message;                    /**< may be "" */
	char **tags;                      /**< NULL-terminated, may be empty */
	amber_stats stats;
} amber_snapinfo;

/** Release what an amber_snapinfo holds (not the struct itself). */
void amber_snapinfo_dispose(amber_snapinfo *info);

/** Iteration callback; return non-zero to stop (that value is returned). */
typedef int (*amber_log_cb)(const amber_snapinfo *info, void *payload);

/**
 * Visit the snapshots of `stream` (NULL = "main"), newest first.  Each
 * snapshot's record is authenticated before the callback sees it.
 * @return 0, the callback's non-zero value, AMBER_ENOTFOUND if the stream
 *         has no snapshot, AMBER_EAUTH/AMBER_ECORRUPT for a bad record.
 */
int amber_log(amber_archive *a, const char *stream, amber_log_cb cb, void *payload);

/** List the archive's streams; cb gets each name; return non-zero to stop. */
int amber_stream_list(amber_archive *a, int (*cb)(const char *stream, void *payload),
		      void *payload);

/**
 * Resolve a snapshot spec to a commit id.  Specs: "latest", a full commit
 * id or a unique prefix of at least 7 hex digits, a tag name, "@TIME"
 * (the newest snapshot of the stream taken before the end of the span TIME
 * denotes, see amber_time_parse_span(); ISO 8601 in UTC or
 * with an offset, any precision, or "@EPOCH[.frac]"), or "STREAM@TIME"
 * (the same in another stream).
 * The commit's bytes must hash to its id, and a snapshot reached through a
 * stream ("latest", "@TIME", "STREAM@TIME") must belong to that stream by
 * its authenticated record (checked once the archive is unlocked).
 * @param stream  NULL = "main"; used by "latest" and "@TIME"
 * @return 0, AMBER_ENOTFOUND, AMBER_EAMBIGUOUS, AMBER_EINVAL, AMBER_EAUTH.
 */
int amber_resolve(char id_out[AMBER_OID_HEXSZ + 1], amber_archive *a, const char *stream,
		  const char *spec);

/**
 * Parse a time as accepted by "@TIME" (without the '@' for ISO forms;
 * "@EPOCH[.frac]" keeps it).  Fractions beyond ns are truncated.
 * @return 0 or AMBER_EINVAL.
 */
int amber_time_parse(int64_t *ns_out, const char *text);

/**
 * Parse a time as amber_time_parse() does, and give the span it denotes at
 * the precision it is written in: [*start, *end).  A date is a day, "hh:mm"
 * a minute, "hh:mm:ss" a second, and each fractional digit a tenth of the
 * unit before it ("@EPOCH" is a second); nine or more digits are one ns.
 * @return 0 or AMBER_EINVAL.
 */
int amber_time_parse_span(int64_t *start, int64_t *end, const char *text);

/** Format `ns` as ISO 8601 UTC with `digits` (0..9) fractional digits. */
void amber_time_format(char out[40], int64_t ns, int digits);

typedef struct amber_snapshot amber_snapshot;

/**
 * Open the snapshot with commit id `id` (40 hex) for reading, checking its
 * record against the commit (root tree, parent, stream, time).
 * @return 0, AMBER_ENOTFOUND, AMBER_EAUTH, AMBER_ECORRUPT, AMBER_ENEEDKEY.
 */
int amber_snapshot_open(amber_snapshot **out, amber_archive *a, const char *id);

/** amber_snapshot_open_ext() flag: leave info->tags empty. */
#define AMBER_SNAP_NO_TAGS 1u

/**
 * amber_snapshot_open() with flags.  AMBER_SNAP_NO_TAGS skips listing the
 * tags that name the snapshot (info->tags stays empty), which reads every
 * tag ref: for a reader that opens many snapshots and shows their tags
 * rarely, as the mount does; it asks amber_snapshot_tags() when it needs
 * them.
 * @return as amber_snapshot_open(), or AMBER_EINVAL for an unknown flag.
 */
int amber_snapshot_open_ext(amber_snapshot **out, amber_archive *a, const char *id,
			    unsigned flags);

/**
 * Call cb with the name of each tag (refs/tags/NAME) that names s now, in
 * the order of the refs.  A tag that cannot be read names nothing.
 * @return 0, the callback's non-zero value to stop, or an error.
 */
int amber_snapshot_tags(amber_snapshot *s, int (*cb)(const char *tag, void *payload),
			void *payload);

/** The snapshot's info; owned by the snapshot. */
const amber_snapinfo *amber_snapshot_info(const amber_snapshot *s);

/**
 * Check that s belongs to `stream` (NULL = "main") by its authenticated
 * record: a snapshot reached through refs/heads/STREAM must.
 * @return 0 or AMBER_EAUTH naming the snapshot and both streams.
 */
int amber_snapshot_check_stream(const amber_snapshot *s, const char *stream);

/** Close a snapshot.  NULL-safe. */
void amber_snapshot_free(amber_snapshot *s);

/* Time index ------------------------------------------------------ */

typedef struct amber_timeline amber_timeline;

/**
 * The snapshots of one stream in time order, for O(log n) lookups by time.
 * Kept in the user's cache directory and extended incrementally: opening
 * loads the cache and reads only the snapshots written since; with nothing
 * cached it is read from the archive's index pages (a page read per 1,024
 * snapshots, times from the authenticated records) when the stream has
 * them.  Times of snapshots walked come from the commits;
 * amber_snapshot_open() authenticates the one you use.
 * Not thread-safe: callers serialise access to one timeline.
 * @return 0 (an empty timeline if the stream has no snapshot yet) or an error.
 *         Free with amber_timeline_free().
 */
int amber_timeline_open(amber_timeline **out, amber_archive *a, const char *stream);

/**
 * Catch up with the stream's ref (new snapshots written meanwhile).
 * @param changed  set to 1 if the timeline changed (may be NULL)
 */
int amber_timeline_refresh(amber_timeline *t, int *changed);

/** Number of snapshots. */
size_t amber_timeline_count(const amber_timeline *t);

/** Time (ns, UTC) of the i-th snapshot, oldest first. */
int64_t amber_timeline_time(const amber_timeline *t, size_t i);

/** Commit id of the i-th snapshot. */
void amber_timeline_id(char out[AMBER_OID_HEXSZ + 1], const amber_timeline *t, size_t i);

/** Index of the newest snapshot at or before time_ns, or -1 if none. */
long amber_timeline_find(const amber_timeline *t, int64_t time_ns);

/** Index of the oldest snapshot at or after time_ns (count if none). */
size_t amber_timeline_lower_bound(const amber_timeline *t, int64_t time_ns);

void amber_timeline_free(amber_timeline *t);

/** One snapshot of a listing by time. */
typedef struct amber_snapref {
	int64_t time_ns;                  /**< UTC, ns since the epoch */
	char id[AMBER_OID_HEXSZ + 1];
} amber_snapref;

/**
 * The snapshots of `stream` (NULL = "main") taken in [start, end), oldest
 * first, from the time index that travels with the archive: the skip links
 * and index pages of the authenticated records (amberfs-format(5)), so that
 * a day of a long history costs a few dozen object reads and no cache.
 * Every record and page read is authenticated and checked against the
 * chain before its names are given out.
 * @param max  keep only the newest max snapshots of the span (0: all)
 * @return 0 with *out (free() it) and *n set, none if the stream has no
 *         snapshot in the span (or none at all); 1 when the records in the
 *         way were written before index pages existed (walk the history
 *         instead, e.g. with amber_timeline); AMBER_EAUTH or AMBER_ECORRUPT
 *         for an index that does not match the history (tampered or
 *         damaged), AMBER_ENEEDKEY for a locked archive, AMBER_EINVAL for
 *         a bad stream name.
 */
int amber_history_list(amber_snapref **out, size_t *n, amber_archive *a, const char *stream,
		       int64_t start, int64_t end, size_t max);

/* Entries ----------------------------------------------------------- */

enum amber_type {
	AMBER_T_REG = 1,
	AMBER_T_DIR = 2,
	AMBER_T_SYMLINK = 3,
	AMBER_T_FIFO = 4,
	AMBER_T_CHR = 5,
	AMBER_T_BLK = 6,
};

/** A 20-byte git object id plus the 24-byte check that binds its content. */
typedef struct amber_link {
	uint8_t oid[20];
	uint8_t mac[24];
} amber_link;

enum amber_content {
	AMBER_C_NONE = 0,     /**< no object: empty file, symlink, device, fifo */
	AMBER_C_BLOB = 1,     /**< one chunk blob; tree_oid unused */
	AMBER_C_CHUNKED = 2,  /**< tree of chunks; link names the index blob */
	AMBER_C_DIR = 3,      /**< directory tree; link names its manifest blob */
};

typedef struct amber_xattr {
	char *name;           /**< NUL-terminated */
	uint8_t *value;
	size_t value_len;
} amber_xattr;

/**
 * One directory entry with its metadata, as stored in a manifest.  Names
 * and symlink targets are byte strings (NUL-terminated for convenience but
 * never containing NUL).
 */
typedef struct amber_entry {
	char *name;
	size_t name_len;
	uint8_t type;          /**< enum amber_type */
	uint32_t mode;         /**< permission bits incl. setuid/setgid/sticky (07777) */
	uint32_t uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t size;         /**< regular file: bytes; symlink: target length */
	uint64_t rdev;         /**< devices only */
	uint32_t nlink;        /**< members of its hardlink group, else 1 (dirs: 1) */
	uint64_t hardlink;     /**< hardlink group id, 0 = none */
	char *target;          /**< symlink target or NULL */
	size_t target_len;
	amber_xattr *xattrs;
	size_t nxattrs;
	uint8_t content;       /**< enum amber_content */
	uint8_t tree_oid[20];  /**< directory or chunk tree (CHUNKED, DIR) */
	amber_link link;       /**< blob, index or manifest (BLOB, CHUNKED, DIR) */
} amber_entry;

/**
 * Find the entry at `path` ("" or "/" is the root directory) in snapshot s.
 * @param out  receives a copy the caller frees with amber_entry_free().
 * @return 0, AMBER_ENOTFOUND, AMBER_ENOTDIR, AMBER_EAUTH, AMBER_ECORRUPT.
 */
int amber_stat(amber_entry **out, amber_snapshot *s, const char *path);

/** Free an entry returned by amber_stat() or amber_entry_dup().  NULL-safe. */
void amber_entry_free(amber_entry *e);

/**
 * A deep copy of entry e (name, symlink target, xattrs) that outlives the
 * listing or snapshot it came from (a FUSE daemon's inode table keeps them).
 * @param out  receives the copy, or NULL on failure; free with amber_entry_free()
 * @return 0 or AMBER_ERROR (out of memory).
 */
int amber_entry_dup(amber_entry **out, const amber_entry *e);

typedef struct amber_dir amber_dir;

/**
 * Read the listing of directory entry `dir` (entries sorted by name).  A
 * large fanned-out directory is decoded on helper threads as well
 * (libamber(3), THREADS); the error, if any, is set on the caller's thread.
 * @return 0, AMBER_ENOTDIR, AMBER_EAUTH, AMBER_ECORRUPT.  Free with
 *         amber_dir_free().
 */
int amber_dir_open(amber_dir **out, amber_snapshot *s, const amber_entry *dir);

/**
 * Flag of amber_dir_open_ext(): a fanned-out directory of many buckets is
 * listed in bucket order (by name within each bucket), and returned once
 * the upper levels of its fan-out are read, while helper threads read the
 * nodes of the last level and their buckets; amber_dir_entry_get() and
 * amber_dir_find() wait for the node they need (decoding it themselves if
 * no helper has taken it), so the first entries come after one node
 * instead of all.  Other directories are read as by amber_dir_open().
 */
#define AMBER_DIR_STREAM 1u
/** amber_dir_open() with flags (AMBER_DIR_STREAM). */
int amber_dir_open_ext(amber_dir **out, amber_snapshot *s, const amber_entry *dir,
		       unsigned flags);
size_t amber_dir_count(const amber_dir *d);
/**
 * The i-th entry, owned by the listing, in *out (NULL past the end).
 * @return 0, or the error of a streamed listing's bucket that could not be
 *         read (AMBER_EAUTH, AMBER_ECORRUPT, ...).
 */
int amber_dir_entry_get(const amber_dir *d, size_t i, const amber_entry **out);
/** The entry named name in *out (NULL if absent); errors as amber_dir_entry_get(). */
int amber_dir_find(const amber_dir *d, const char *name, size_t len, const amber_entry **out);
/** 1 once every entry is decoded (always, but for a streamed listing). */
int amber_dir_complete(const amber_dir *d);
/**
 * The index of the entry after entry i in name order, in *next (the count
 * after the last): i + 1 but in a streamed listing, whose name order is
 * worked out once, when first asked for after it is complete.
 * @return 0, or AMBER_ERROR (a streamed listing still being decoded, or out
 *         of memory).
 */
int amber_dir_name_next(const amber_dir *d, size_t i, size_t *next);
/** amber_dir_entry_get(), NULL on error too. */
const amber_entry *amber_dir_entry(const amber_dir *d, size_t i);
/** amber_dir_find(), NULL on error too. */
const amber_entry *amber_dir_lookup(const amber_dir *d, const char *name, size_t len);
void amber_dir_free(amber_dir *d);

/**
 * Read up to `len` bytes of regular file `e` at offset `off` into buf.
 * Every chunk read is authenticated first; nothing unauthenticated is ever
 * copied into buf.
 * @param nread  receives the count (short only at end of file)
 * @return 0, AMBER_EISDIR, AMBER_EAUTH, AMBER_ECORRUPT, AMBER_ENOTFOUND.
 */
int amber_file_read(size_t *nread, amber_snapshot *s, const amber_entry *e, uint64_t off,
		    void *buf, size_t len);

/** A piece of a file's bytes inside a decoded, authenticated chunk. */
typedef struct amber_piece {
	const void *data;
	size_t len;
	void *ref;              /**< pins the chunk; see amber_file_pieces_release() */
} amber_piece;

/**
 * amber_file_read() without the copy: up to `len` bytes of regular file e
 * at `off`, as at most `max` pieces pointing into decoded chunks (each
 * authenticated before it is handed out), pinned in the archive's cache
 * until released.  For replying straight from the chunks (writev).
 * @param n      receives the number of pieces
 * @param nread  receives their total: short at end of file, or when `max`
 *               pieces were not enough (read the rest, or use
 *               amber_file_read())
 * @return 0 or an error as amber_file_read(); on error nothing is held.
 */
int amber_file_pieces(amber_piece *p, size_t max, size_t *n, size_t *nread, amber_snapshot *s,
		      const amber_entry *e, uint64_t off, size_t len);

/** Release pieces from amber_file_pieces(). */
void amber_file_pieces_release(amber_snapshot *s, amber_piece *p, size_t n);
/**
 * amber_file_pieces_release() for a reader that keeps the bytes (as the
 * kernel's page cache keeps a mount's): a chunk leaves the cache once all
 * of its bytes were handed out, in whatever order, so that its memory is
 * reused at once.  amber_file_read() counts the bytes it copies the same
 * way.
 */
void amber_file_pieces_consumed(amber_snapshot *s, amber_piece *p, size_t n);

/* Long-lived readers (the FUSE daemon) ------------------------------ */

/**
 * Give the archive one cache of decoded objects (chunks and chunk indexes),
 * shared by all its snapshots and threads, bounded to `bytes` (least
 * recently used first out; entries being copied out are never evicted).
 * The default is 8 MiB.  Call before reading.
 * @return 0 or AMBER_ERROR.
 */
int amber_archive_set_cache(amber_archive *a, size_t bytes);

/**
 * Read-ahead: decode, in a background thread, the chunks of `e` from offset
 * `off` up to 4 MiB further into the archive's cache, so that the reads
 * that follow find them decoded.  Returns at once; does nothing at the end
 * of the file.  The worker thread starts on first use (after any fork).
 */
void amber_file_prefetch(amber_snapshot *s, const amber_entry *e, uint64_t off);

/**
 * An inode number from content identity: a keyed 64-bit hash of the entry's
 * content object(s) and metadata (type, mode, owner, size, mtime, rdev,
 * symlink target, xattrs, hardlink group), but not its name.  The same
 * unchanged file or directory in two snapshots gets the same number;
 * anything changed gets another.  Never 0 or 1.
 */
uint64_t amber_entry_ino(const amber_archive *a, const amber_entry *e);

/** Work counters of an archive handle (for tests and diagnostics). */
typedef struct amber_counters {
	uint64_t chunks_decoded;     /**< chunk objects decrypted and decompressed */
	uint64_t chunk_bytes;        /**< plaintext bytes of those chunks */
	uint64_t dirs_decoded;       /**< directory manifests decoded */
	uint64_t cache_hits;         /**< chunk reads served from the cache */
} amber_counters;

/** A snapshot of the counters (thread-safe). */
void amber_archive_counters(const amber_archive *a, amber_counters *out);

/** Memory held for reading, now and its cap (see amber_archive_memory()). */
typedef struct amber_memory {
	uint64_t cache_bytes;        /**< decoded chunks and indexes in the shared cache */
	uint64_t cache_max;          /**< its cap (amber_archive_set_cache(); 0: no cache) */
	uint64_t git_objects;        /**< libgit2's object cache (process-wide) */
	uint64_t git_objects_max;    /**< its cap */
	uint64_t pack_map_max;       /**< cap on libgit2's mmapped pack windows */
} amber_memory;

/** What the archive's readers hold in memory, and the caps (thread-safe). */
void amber_archive_memory(const amber_archive *a, amber_memory *out);

/**
 * Buffers for decoded data that the process keeps for reuse (shared by all
 * archives; thread-safe): bytes held now, and the most it keeps.
 */
void amber_decode_pool_usage(uint64_t *bytes, uint64_t *max);

/**
 * What each thread that reads objects from packs keeps for reuse, at most:
 * its last runs of a pack's bytes (a directory's listing objects lie one
 * after another, and are read a run at a time).  Freed when the thread ends.
 */
#define AMBER_READER_THREAD_BYTES ((size_t)132 << 10)


/**
 * List the archive's tags: cb gets each tag's name (without "refs/tags/"),
 * in no particular order.  Refs under refs/tags/ whose name is not a valid
 * tag name (one component of [A-Za-z0-9._-], at most AMBER_STREAM_MAX
 * bytes, not starting with '.' or '-', without "..", not ending ".lock")
 * are skipped: anyone who can write the store can plant them.  The names
 * are not authenticated; amber_resolve() and amber_snapshot_open() check
 * what a tag names.  The name is valid only during the callback.
 * @return 0, the callback's non-zero value to stop, or an error.
 */
int amber_tag_list(amber_archive *a, int (*cb)(const char *tag, void *payload), void *payload);

#ifdef __cplusplus
}
#endif

#endif
