/*
 * The git object store: the only module that speaks to libgit2.
 *
 * Objects are written by our own pack writer, because libgit2 1.5's pack
 * builder always deflates at level 6 and searches for deltas, which on
 * incompressible ciphertext ran at about 6.5 MB/s on a 2-core machine:
 * each object is a pack entry with no delta whose zlib stream uses stored
 * blocks; the .idx (version 2) is written by us as well; both are fsynced
 * under temporary names, renamed into objects/pack/ (.pack first, .idx
 * last, since git only sees a pack once its index exists), and the
 * directory is fsynced.  Refs move by compare-and-swap with fsync on.
 * Reads go through git_odb with strict hash verification off: the frame's
 * authentication binds content to links; full SHA-1 checking belongs to
 * `verify`.
 */
#ifndef AMBER_STORE_H
#define AMBER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "amber.h"
#include "buf.h"

enum amber_gittype {
	AMBER_GIT_COMMIT = 1,
	AMBER_GIT_TREE = 2,
	AMBER_GIT_BLOB = 3,
	AMBER_GIT_TAG = 4,
};

typedef struct amber_store amber_store;

/** One-time global setup of libgit2 (fsync on, strict hash checks off). */
int amber_store_global_init(void);

/**
 * libgit2's process-wide memory: its object cache now and its cap, and the
 * cap on mmapped pack windows (set in amber_store_global_init).
 */
void amber_store_memory(size_t *objects, size_t *objects_max, size_t *mapped_max);

/**
 * Create a bare repository at `path` (must not exist, or be an empty dir)
 * with core.compression=0, pack.compression=0, gc.auto=0.
 * @return 0 or AMBER_EEXISTS.
 */
int amber_store_init(amber_store **out, const char *path);

/**
 * Open an existing bare repository without writing to it.  Every pack
 * index is checked before libgit2 reads through it (store_odb.c).
 * @return 0, AMBER_ENOTFOUND (no such path), AMBER_ENOTARCHIVE (not a git
 *         repository), AMBER_ECORRUPT (a damaged pack index, named).
 */
int amber_store_open(amber_store **out, const char *path);

/**
 * A second handle on the objects of `s`, for one long sequential read (a
 * walk of the whole history) whose memory must not grow with it.  libgit2
 * keeps what a handle read: objects in its cache (up to its global cap),
 * mapped pack windows (up to its mapped limit), and every pack index it
 * searched, mapped whole, with the pages it touched resident (over a
 * hundred MiB at a million snapshots).  A walk reads through a twin and
 * replaces it every so often, so none of that outlives a batch.  Pack
 * indexes that `s` found sane are not checked again.  Object reads only
 * (amber_store_read, amber_store_exists); no refs, no writing.
 */
int amber_store_open_twin(amber_store **out, amber_store *s);

void amber_store_free(amber_store *s);
const char *amber_store_path(const amber_store *s);

/**
 * Between these two calls (nested: the outermost end counts) the calling
 * thread's reads of small objects from packs may be served from runs of
 * pack bytes it read together (64 KiB): for decoding a directory, whose
 * objects lie one after another.  The runs are dropped at the end.
 */
void amber_store_runs_begin(void);
void amber_store_runs_end(void);

/**
 * Read object `oid` into out (appended).  Thread-safe.  A failed read is
 * retried once after rescanning objects/pack, since a repack may have
 * replaced the pack that held it.
 * @param type_out receives an amber_gittype (may be NULL)
 * @param max      refuse objects larger than this (AMBER_ECORRUPT)
 * @return 0, AMBER_ENOTFOUND, AMBER_ECORRUPT (also for an object not found
 *         while a pack index that appeared since open was refused: the
 *         message names it).
 */
int amber_store_read(amber_buf *out, int *type_out, amber_store *s, const uint8_t oid[20],
		     size_t max);

/** 1 if the object exists, 0 if not.  Thread-safe. */
int amber_store_exists(amber_store *s, const uint8_t oid[20]);

/**
 * Re-scan objects/pack (after another process wrote or removed packs): new
 * packs are loaded once their index passed the check, removed ones are
 * let go (their descriptors and maps closed).  A missed lookup does the
 * same by itself.
 * @return 0, AMBER_ECORRUPT (a damaged pack index, named: not loaded).
 */
int amber_store_refresh(amber_store *s);

/** A pack of the store's set, as it was when the set last saw it. */
typedef struct amber_store_pack {
	char name[80];		/* pack-<hex>, no extension */
	uint64_t pack_size;	/* bytes of the .pack when its index was checked */
	int keep;		/* a .keep beside it when objects/pack was last listed */
	int copied;		/* its index is held in memory */
	int filtered;		/* its index is not, but a filter of its names is */
} amber_store_pack;

/**
 * The packs the store reads from now, from memory (no system call): what
 * the last listing of objects/pack found, plus the packs this process has
 * installed or removed since.  *out is freed by the caller with free().
 * @return 0 or AMBER_ERROR (out of memory).
 */
int amber_store_packs(amber_store_pack **out, size_t *n, amber_store *s);

/**
 * Let go of the pack objects/pack/`base`.idx that this process just
 * removed (a consolidation), without listing the directory.
 */
void amber_store_pack_removed(amber_store *s, const char *base);

/**
 * Listings of objects/pack this handle made so far: its rescans, plus
 * those a consolidation reported with amber_store_note_listing().
 */
uint64_t amber_store_pack_listings(amber_store *s);
void amber_store_note_listing(amber_store *s);

/**
 * Bytes of pack indexes the store may copy into memory (default 32 MiB);
 * indexes past it are read by pread, and get a filter (see packread.h).
 * For tests and benchmarks; the packs already loaded keep their limit.
 */
void amber_store_set_idx_budget(amber_store *s, size_t bytes);

/** The rollover size amber_packw_new() would give a writer now. */
uint64_t amber_store_rollover(const amber_store *s);

/** The git object id of `data` as an object of `type` (SHA-1). */
void amber_store_hash(uint8_t oid[20], int type, const void *data, size_t len);

/* Pack writer ------------------------------------------------------------ */

typedef struct amber_packw amber_packw;

/**
 * Start writing objects; temporary files live in ARCHIVE/amberfs-tmp/ and
 * are removed by amber_packw_free() if never committed.
 */
int amber_packw_new(amber_packw **out, amber_store *s);

/**
 * amber_packw_new() without its rescan of objects/pack: for a writer that
 * starts right after another one in the same hold of the writer lock
 * (a consolidation after a snapshot), when nothing else can have written.
 */
int amber_packw_new_noscan(amber_packw **out, amber_store *s);

/** Pack size at which later writers roll over to a new pack; 0: 512 MiB. */
void amber_store_set_rollover(amber_store *s, uint64_t bytes);

/**
 * Add an object (thread-safe).  Objects that already exist in the store or
 * were already added are not written again.  Rolls over to a new pack
 * file when the current one passes 512 MiB, or the threshold set with
 * amber_store_set_rollover() (read by amber_packw_new()).
 * @param oid_out  receives the object id
 * @param is_new   set to 1 if this call wrote it (may be NULL)
 */
int amber_packw_add(uint8_t oid_out[20], int *is_new, amber_packw *w, int type,
		    const void *data, size_t len);

/** Bytes written so far (pack payload). */
uint64_t amber_packw_bytes(const amber_packw *w);

/**
 * Finish: write trailer and index, fsync, rename into place, fsync the
 * directory, and load the new pack into the odb's set (no rescan: packs
 * others wrote are seen at the next amber_packw_new() or refresh), so the
 * new objects are readable.  Writes nothing if no object was added.
 */
int amber_packw_commit(amber_packw *w);

/**
 * Add an already-encoded pack entry (thread-safe), copied byte for byte:
 * the repacker moves objects between packs without decoding them.  The
 * entry must not be an OFS_DELTA (its base offset would be wrong here).
 * An id already added to this writer is skipped; the store is not asked.
 * @param crc  crc32 of the entry bytes, for the .idx
 */
int amber_packw_add_raw(amber_packw *w, const uint8_t oid[20], uint32_t crc,
			const void *entry, size_t len);

/** The pack size at which this writer starts a new pack. */
uint64_t amber_packw_rollover(const amber_packw *w);

/** 1 if this writer installed the pack whose trailing checksum is `sum`. */
int amber_packw_installed(const amber_packw *w, const uint8_t sum[20]);

/** Abort (if not committed) and free.  NULL-safe. */
void amber_packw_free(amber_packw *w);

/* Refs ------------------------------------------------------------------- */

/** Read a ref (e.g. "refs/heads/main").  @return 0 or AMBER_ENOTFOUND. */
int amber_store_ref_read(uint8_t oid[20], amber_store *s, const char *name);

/**
 * Move ref `name` to `oid` if it still points at `expect` (NULL: the ref
 * must not exist).  Durable (fsync) when it returns.  Refused while
 * packed-refs has a malformed line (as git refuses it).
 * @return 0, AMBER_ELOCKED if it moved meanwhile or exists, AMBER_ECORRUPT
 *         (packed-refs), AMBER_ERROR.
 */
int amber_store_ref_update(amber_store *s, const char *name, const uint8_t oid[20],
			   const uint8_t *expect, const char *log_message);

/**
 * Visit refs matching an fnmatch(3) glob (e.g. "refs/tags/" followed by a
 * star); return non-zero from cb to stop (that value is returned).
 */
int amber_store_ref_foreach(amber_store *s, const char *glob,
			    int (*cb)(const char *name, const uint8_t oid[20], void *payload),
			    void *payload);

/**
 * Malformed lines of packed-refs (skipped by the ref readers, which keep
 * every other ref readable).  @param first_line  receives the first one's
 * line number.  @return how many (0 if none or no packed-refs).
 */
int amber_store_packed_refs_bad(amber_store *s, size_t *first_line);

/**
 * Find the objects whose hex id starts with `prefix` (>= 4 hex chars).
 * @return 0, AMBER_ENOTFOUND, AMBER_EAMBIGUOUS.
 */
int amber_store_expand_prefix(uint8_t oid[20], amber_store *s, const char *prefix);

/* Checks and replication (verify, push) ------------------------------------ */

/**
 * Check every pack file in objects/pack: its trailing SHA-1 matches its
 * contents, its header is a version 2 pack, and its .idx exists, names
 * the same checksum, matches its own, and every offset in it lies inside
 * the pack (readers check only the offsets they use).  Calls cb once per
 * bad file (name relative to the archive, one-line message); returns the
 * number of packs checked or an error.  Loose objects are not packs and are not looked at here.
 */
int amber_store_check_packs(amber_store *s,
			    void (*cb)(const char *file, const char *message, void *payload),
			    void *payload);

/** Where an object lies: pack file number (from 1; 0 = in no pack) and offset. */
typedef struct amber_packpos {
	uint32_t pack;
	uint64_t off;
} amber_packpos;

/**
 * Find where each of the n objects `oids` (20 bytes each) lies in the pack
 * files, so that a caller can read them in file order: sorted by (pack,
 * off), each pack is read front to back.  pos[i] is {0, 0} for an object in
 * no pack (loose or missing).  Only the order depends on it: reads still go
 * through amber_store_read, so an index that cannot be read just leaves its
 * objects at {0, 0}.
 * @return 0, or AMBER_ERROR (out of memory).
 */
int amber_store_pack_positions(amber_packpos *pos, amber_store *s, const uint8_t *oids,
			       size_t n);

/**
 * Push refs `names[0..n)` (each to the same name) to `url`, never forcing.
 * A local path that does not exist is first created as a bare repository
 * with the archive's git config.
 * @param updated  receives how many remote refs were created or moved
 * @param created  set to 1 if the local bare repository was created
 * @return 0, AMBER_EEXISTS (a non-fast-forward update, refused; the
 *         message names the ref), AMBER_ERROR.
 */
int amber_store_push(uint64_t *updated, int *created, amber_store *s, const char *url,
		     const char *const *names, size_t n);

/* Writer lock ------------------------------------------------------------- */

/**
 * Take the archive's writer lock (flock on ARCHIVE/amberfs.lock; released by
 * the kernel if the process dies).  Also clears stale temporary files of
 * dead writers.  Refused while packed-refs has a malformed line: every
 * write ends in a ref update that would be refused (amber_store_ref_update).
 * The lock is counted within the process: threads of one writer (a
 * session's snapshot and its consolidation) may each take it, and each
 * amber_store_unlock() gives back one hold; the file lock and the clearing
 * of temporary files go with the first and last holder.
 * @return 0, AMBER_ELOCKED, or AMBER_ECORRUPT (packed-refs).
 */
int amber_store_lock(amber_store *s);
void amber_store_unlock(amber_store *s);

/* Hex helpers -------------------------------------------------------------- */

void amber_oid_tohex(char out[41], const uint8_t oid[20]);
/** @return 0 or AMBER_EINVAL. */
int amber_oid_fromhex(uint8_t oid[20], const char *hex);

#endif
