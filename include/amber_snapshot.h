/*
 * libamber: writing snapshots (one at a time, or from a writer session for
 * continuous capture) and consolidating packs.  Part of <amber.h>; see
 * libamber(3).
 */
#ifndef AMBER_SNAPSHOT_PUBLIC_H
#define AMBER_SNAPSHOT_PUBLIC_H

#include "amber_archive.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Writing snapshots                                                   */

#define AMBER_STATS_VERSION 4

/**
 * Counters of one snapshot (stored, encrypted, in its record) or restore.
 * Versioned like the option structs, so that fields can be added: the
 * caller initialises a struct it passes with AMBER_STATS_INIT (a version of
 * 0 is refused with AMBER_EINVAL before anything is done), and the library
 * fills only the fields of that version it knows, leaving any others as the
 * caller set them.  A struct the library hands out (progress callbacks,
 * amber_snapinfo) has the library's version.  libamber(3), STATS STRUCTS.
 */
typedef struct amber_stats {
	unsigned int version;   /**< AMBER_STATS_VERSION, set by the caller */
	uint64_t files;         /**< non-directory entries */
	uint64_t dirs;          /**< directories */
	uint64_t bytes;         /**< logical bytes of regular files */
	uint64_t bytes_read;    /**< bytes actually read from the source */
	uint64_t bytes_new;     /**< bytes of new objects written to the store */
	uint64_t objects_new;   /**< new git objects written */
	uint64_t errors;        /**< source entries that could not be read */
	/* Version 2: bytes_new by kind of object (git object sizes), for the
	 * snapshot just written; not stored in its record (zero when read back). */
	uint64_t new_chunks;      /**< file chunks */
	uint64_t new_manifests;   /**< manifests of directories */
	uint64_t new_buckets;     /**< manifests of the buckets of large directories */
	uint64_t new_fanout;      /**< fan-out bucket lists and nodes */
	uint64_t new_indexes;     /**< chunk indexes of multi-chunk files */
	uint64_t new_dirtrees;    /**< git trees of directories and buckets */
	uint64_t new_fanouttrees; /**< git trees of fan-out nodes (and of fanned-out
				       directories) */
	uint64_t new_chunktrees;  /**< git trees of multi-chunk files */
	uint64_t new_commits;     /**< the snapshot commit, its record included */
	uint64_t new_record;      /**< of which the record (base64 in the message) */
	uint64_t new_pages;       /**< time-index pages, their trees and commits */
	uint64_t pack_bytes;      /**< bytes written to pack files: the objects plus
				       their entry headers (pack overhead) */
	/* Version 3: the consolidation of packs that amber_snapshot_create()
	 * runs after the snapshot is published (see amber_archive_repack()),
	 * so that its amortised share of a snapshot's cost can be told apart;
	 * zero for a writer session, which merges on a thread of its own, and
	 * when read back. */
	uint64_t repack_ns;       /**< wall time spent consolidating, ns */
	uint64_t repack_packs;    /**< pack files merged (and removed) */
	uint64_t repack_bytes;    /**< bytes copied into the merged pack */
	/* Version 4: what the snapshot cost the object store in system calls
	 * that grow with the number of packs; zero when read back. */
	uint64_t pack_listings;   /**< listings of objects/pack made while the
				       snapshot ran (its consolidation included,
				       for amber_snapshot_create()) */
} amber_stats;

#define AMBER_STATS_INIT {.version = AMBER_STATS_VERSION}

/** Progress report, called from the writing thread at most ~10 times/s. */
typedef void (*amber_progress_cb)(const amber_stats *sofar, const char *current_path,
				  void *payload);

/** Called for each source entry that could not be stored (or was skipped). */
typedef void (*amber_warn_cb)(const char *path, const char *message, void *payload);

#define AMBER_SNAPSHOT_OPTS_VERSION 1

/**
 * Options for amber_snapshot_create() (and amber_writer_opts.snap).
 * Initialise with AMBER_SNAPSHOT_OPTS_INIT, then set fields.
 */
typedef struct amber_snapshot_opts {
	unsigned int version;   /**< AMBER_SNAPSHOT_OPTS_VERSION */
	const char *stream;     /**< default "main" */
	const char *message;    /**< free text, stored encrypted; may be NULL */
	const char *tag;        /**< also create refs/tags/<tag>; may be NULL */
	int threads;            /**< compression workers; 0 = number of cores */
	int no_cache;           /**< ignore the files cache (re-read everything) */
	int64_t time_ns;        /**< 0 = now; otherwise the snapshot time (must
				     still be later than the stream's tip) */
	amber_progress_cb progress;
	amber_warn_cb warn;
	void *payload;
	/** Secret signing key file (from amber_archive_create() or
	 *  amber_archive_add_signing_key()), or the "pkcs11:" URI of the
	 *  token key (PIN from amber_archive_set_token_pin()): the commit is
	 *  signed with it.  It must match the archive's public key. */
	const char *signing_key_path;
	/** Allow an unsigned snapshot in an archive that has a signing key
	 *  (ignored when signing_key_path is set). */
	int unsigned_ok;
} amber_snapshot_opts;

#define AMBER_SNAPSHOT_OPTS_INIT {.version = AMBER_SNAPSHOT_OPTS_VERSION}

/**
 * Write a snapshot of the directory tree `src` into stream opts->stream.
 * The snapshot becomes visible by one ref update after all its objects are
 * durable and have been read back and checked.  Entries that cannot be read
 * are reported through opts->warn, counted in stats->errors and left out;
 * the snapshot is still written.
 * @param id_out   receives the new commit id (40 hex + NUL); "" until the
 *                 snapshot is visible, so an error with a non-empty id_out
 *                 means the snapshot exists but opts->tag was not created
 * @param stats    receives the counters (may be NULL; else AMBER_STATS_INIT)
 * If the archive has a signing key, the commit carries an SSH signature
 * ("gpgsig" header) that `git verify-commit` accepts; opts->tag stays a
 * lightweight tag of that signed commit.
 * @return 0, AMBER_ELOCKED if another writer is active, AMBER_ENEEDKEY if
 *         the archive is locked or has a signing key and none was given
 *         (without opts->unsigned_ok), AMBER_EBADKEY if the signing key is
 *         not the archive's, AMBER_EINVAL for a bad stream or tag name or a
 *         signing key for an archive that has none, AMBER_EEXISTS if the
 *         tag exists, AMBER_ENOTFOUND if `src` (or the key file) is missing.
 *         An existing or invalid tag is refused before anything is written,
 *         as are options of an unknown version and stats of version 0
 *         (AMBER_EINVAL).
 */
int amber_snapshot_create(char id_out[AMBER_OID_HEXSZ + 1], amber_stats *stats,
			  amber_archive *a, const char *src, const amber_snapshot_opts *opts);

/**
 * Name snapshot `id` (a 40-hex commit id) with an annotated tag object at
 * refs/tags/<name>, signed like the snapshots (an SSH signature at the end
 * of the tag message, as git writes with gpg.format=ssh, so that
 * `git verify-tag` accepts it) when the archive has a signing key.
 * @param message           free text of the tag (NULL: "amberfs tag NAME")
 * @param signing_key_path  the secret signing key file, or NULL
 * @param unsigned_ok       allow an unsigned tag in an archive that has a
 *                          signing key
 * @return 0, AMBER_EINVAL (bad name, not a commit id), AMBER_ENOTFOUND (no
 *         such commit), AMBER_EEXISTS (the tag exists), AMBER_ELOCKED,
 *         AMBER_ENEEDKEY / AMBER_EBADKEY as for amber_snapshot_create().
 */
int amber_tag_create(amber_archive *a, const char *id, const char *name, const char *message,
		     const char *signing_key_path, int unsigned_ok);

/* Pack consolidation ------------------------------------------------- */

#define AMBER_REPACK_STATS_VERSION 1

/** What amber_archive_repack() did; versioned as amber_stats is. */
typedef struct amber_repack_stats {
	unsigned int version;        /**< AMBER_REPACK_STATS_VERSION, set by the caller */
	uint64_t packs_before;       /**< pack files before */
	uint64_t packs_merged;       /**< pack files merged into new ones and removed */
	uint64_t packs_after;        /**< pack files after */
	uint64_t objects;            /**< object entries copied */
	uint64_t bytes;              /**< bytes copied */
} amber_repack_stats;

#define AMBER_REPACK_STATS_INIT {.version = AMBER_REPACK_STATS_VERSION}

/** amber_archive_repack() flag: merge every pack below the rollover size. */
#define AMBER_REPACK_ALL 1u

/**
 * Consolidate the archive's pack files under its writer lock, as every
 * snapshot does when it is written: the smallest packs are merged until
 * each pack is at least twice the size of all smaller ones together, so a
 * history of n snapshots keeps O(log n) packs.  Objects are copied byte for
 * byte (ciphertext is never decoded); old packs are removed only once the
 * merged pack is durable.  Needs no key.  Readers may keep running.
 * @param st     receives what was done (may be NULL; else AMBER_REPACK_STATS_INIT)
 * @param flags  0 or AMBER_REPACK_ALL
 * @return 0, AMBER_ELOCKED (another writer is active), AMBER_ECORRUPT (a
 *         pack does not match its index; nothing was removed), AMBER_ERROR.
 */
int amber_archive_repack(amber_repack_stats *st, amber_archive *a, unsigned flags);

/* ------------------------------------------------------------------ */
/* Writer sessions (continuous capture)                                */

/**
 * A writer session: a long-lived snapshot writer for one source directory
 * and one stream.  It unlocks nothing itself (the archive is unlocked
 * already) but keeps, between snapshots, what amber_snapshot_create()
 * builds and drops on every call: the signing key, the compression
 * workers, the files and chunk caches in memory, and the previous
 * snapshot, whose directory manifests are reused for every directory the
 * caller does not name as changed.  A snapshot then costs in proportion to
 * what changed, not to the size of the tree.
 *
 * Thread model: one thread at a time calls a session's functions (the
 * session's compression workers are its own).  The archive's writer lock
 * is taken by each amber_writer_snapshot() call and released before it
 * returns, so other writers (tags, one-off snapshots) can interleave;
 * whenever the stream's tip is not the session's own last snapshot, the
 * next snapshot walks the whole source again.
 */
typedef struct amber_writer amber_writer;

#define AMBER_WRITER_OPTS_VERSION 1

/** Options for amber_writer_open(). */
typedef struct amber_writer_opts {
	unsigned version;          /**< AMBER_WRITER_OPTS_VERSION */
	/** stream, message, threads, no_cache (for whole walks), warn,
	 *  payload, signing_key_path and unsigned_ok as for
	 *  amber_snapshot_create(); tag and time_ns must be unset. */
	amber_snapshot_opts snap;
	/** fnmatch(3) globs of files the caller promises are only ever
	 *  appended to: a glob with a '/' matches the whole relative path
	 *  (FNM_PATHNAME), one without matches the file name.  Such a file,
	 *  named as changed, is read from its last chunk boundary the
	 *  chunker cut, after checking that the stored bytes from there still
	 *  match the file (else it is read whole, with a warning); the uncut
	 *  end is stored as fragments, one per snapshot holding only what was
	 *  appended since, so a growing tail is not stored again whole each
	 *  time.  The next whole walk reads it whole and warns if bytes before
	 *  its end changed.  NULL-terminated; may be NULL. */
	const char *const *append_only;
} amber_writer_opts;

#define AMBER_WRITER_OPTS_INIT \
	{.version = AMBER_WRITER_OPTS_VERSION, .snap = AMBER_SNAPSHOT_OPTS_INIT}

/** A path that changed since the session's last snapshot. */
typedef struct amber_dirty {
	/** Relative to the source ("" or "/" is the source itself).  The entry
	 *  there is looked at again: gone, it is removed; a file is re-read
	 *  (append-only files from their tail); a directory that existed at the
	 *  last snapshot gets its own metadata refreshed and keeps its contents
	 *  except for paths below it that are named too.  Every directory on
	 *  the way to a named path has its metadata refreshed. */
	const char *path;
	/** Non-zero: everything at and below path is walked again (a directory
	 *  created, moved in or replaced).  A directory replaced by another one
	 *  must be named with subtree set. */
	int subtree;
} amber_dirty;

/**
 * Open a writer session on source directory `src`.  Loads the caches of
 * the stream from the cache directory and the signing key; no lock is
 * held between snapshots.
 * @return 0, AMBER_EINVAL (bad options: a tag, a time, a bad stream name,
 *         a bad options version), AMBER_ENOTFOUND (src missing),
 *         AMBER_ENEEDKEY / AMBER_EBADKEY as for amber_snapshot_create().
 *         Close with amber_writer_close().
 */
int amber_writer_open(amber_writer **out, amber_archive *a, const char *src,
		      const amber_writer_opts *opts);

/**
 * Write a snapshot of the source if it changed.  With `dirty` NULL the
 * whole source is walked (as amber_snapshot_create() does, trusting the
 * files cache); the first snapshot of a session, and any after another
 * writer moved the stream, is such a walk whatever is passed.  Otherwise
 * only the named paths are looked at: the caller must name every path
 * that changed since the session's last snapshot (see amber_dirty).
 * Changes involving hard-linked files make the snapshot a whole walk.
 * Once the snapshot is published, packs are consolidated as
 * amber_snapshot_create() does (see amber_archive_repack()), so a session
 * that snapshots every second keeps O(log n) packs; the merge runs on a
 * thread of the session (holding the writer lock while it merges), so it
 * does not delay the next snapshot, and the session's warn callback may be
 * called from that thread.  amber_writer_close() waits for a merge in
 * progress.
 * Stats are the tree's totals (files, dirs, bytes) and this snapshot's
 * work (bytes_read, bytes_new, objects_new, errors).
 * @param id_out  the new commit id, or the tip's when nothing changed
 * @param stats   may be NULL; else initialised with AMBER_STATS_INIT
 * @return 0 when a snapshot was written, 1 when the source is as the tip
 *         has it (nothing written), or an error as amber_snapshot_create()
 *         returns (AMBER_ELOCKED: another writer holds the lock; try
 *         again).  After an error the session is still usable; name the
 *         same paths again (or pass NULL).
 */
int amber_writer_snapshot(char id_out[AMBER_OID_HEXSZ + 1], amber_stats *stats,
			  amber_writer *w, const amber_dirty *dirty, size_t n);

/**
 * Save the session's caches to the cache directory and free it.  NULL-safe.
 * @return 0, or AMBER_ERROR if the caches could not be saved (nothing is
 *         lost: they are rebuilt by the next whole walk).
 */
int amber_writer_close(amber_writer *w);

#ifdef __cplusplus
}
#endif

#endif
