/*
 * libamber: checking an archive end to end, and copying it to a replica.
 *
 * A sub-header of amber.h (include amber.h first or let this header do it).
 *
 * amber_verify() checks what can be checked with what the caller holds:
 *
 *  - always (no key needed): every object reachable from every ref is
 *    present and hashes to its id; trees, commits and tags parse; every
 *    stream's history is linear (first parents only) with strictly
 *    decreasing Amberfs-Time going back; snapshot commits have the form
 *    amberfs-format(5) gives them; content blobs are frames of the mode
 *    the config claims ('E' for encrypted archives); the metadata commit,
 *    config and key slot blobs are well-formed; signatures of snapshots
 *    and tags verify against the pinned public key;
 *  - with the archive unlocked: every record, manifest, fan-out list and
 *    chunk index authenticates and decodes and matches its tree (through
 *    the ordinary reader, so exactly what a reader would serve is checked),
 *    file sizes match their chunks, and with read_data every chunk decodes
 *    (each distinct chunk once, on worker threads, in pack order);
 *  - a local high-water mark per stream (in the user's cache directory)
 *    turns a ref moved back ("rollback") or onto another history
 *    ("rewritten history") into a problem; a clean run moves the marks.
 *
 * Problems are reported through a callback, one call per problem; the
 * function itself fails only when it cannot go on at all (the archive
 * cannot be read).
 */
#ifndef AMBER_VERIFY_H
#define AMBER_VERIFY_H

#include "amber.h"

#ifdef __cplusplus
extern "C" {
#endif

/** What kind of problem a verify found. */
enum amber_verify_kind {
	AMBER_VERIFY_MISSING = 1,   /**< an object some ref reaches is absent */
	AMBER_VERIFY_CORRUPT,       /**< an object is unreadable or does not hash to its id */
	AMBER_VERIFY_MALFORMED,     /**< a tree, commit, tag, frame or ref is not well-formed */
	AMBER_VERIFY_AUTH,          /**< an object fails authentication or decoding (key needed) */
	AMBER_VERIFY_HISTORY,       /**< history not linear, times not increasing, wrong stream */
	AMBER_VERIFY_SIGNATURE,     /**< a bad, foreign or stripped signature */
	AMBER_VERIFY_ROLLBACK,      /**< a stream's ref points at an ancestor of the last verified tip */
	AMBER_VERIFY_REWRITTEN,     /**< a stream's tip does not descend from the last verified tip */
	AMBER_VERIFY_CONFIG,        /**< the config contradicts the archive's objects or key slots */
	AMBER_VERIFY_KEYSLOT,       /**< a key slot is malformed, does not open or was replaced */
};

/** A short lowercase word for a kind ("missing", "corrupt", ...). */
const char *amber_verify_kind_name(int kind);

/** One problem, as passed to the callback (strings valid during the call). */
typedef struct amber_verify_problem {
	int kind;               /**< enum amber_verify_kind */
	const char *object;     /**< 40-hex object id, or "" if none */
	const char *snapshot;   /**< 40-hex snapshot commit that uses it, or "" */
	const char *path;       /**< path inside that snapshot, or "" if unknown */
	const char *message;    /**< one line, names what is wrong */
} amber_verify_problem;

typedef void (*amber_verify_cb)(const amber_verify_problem *p, void *payload);

#define AMBER_VERIFY_STATS_VERSION 1

/**
 * Counters of one verify run.  Versioned as amber_stats is (libamber(3),
 * STATS STRUCTS): initialise with AMBER_VERIFY_STATS_INIT.
 */
typedef struct amber_verify_stats {
	unsigned int version;        /**< AMBER_VERIFY_STATS_VERSION, set by the caller */
	uint64_t streams;
	uint64_t snapshots;          /**< snapshot commits checked */
	uint64_t signed_ok;          /**< of which with a signature that verified */
	uint64_t unsigned_snapshots; /**< of which carrying no signature */
	uint64_t unchecked;          /**< signed, but no public key to check them */
	uint64_t objects;            /**< git objects read and hashed */
	uint64_t bytes;              /**< bytes of those objects */
	uint64_t files, dirs;        /**< entries walked (with the key) */
	uint64_t data_bytes;         /**< file bytes decoded (read_data), each chunk once */
	uint64_t problems;           /**< callback calls */
	int keyed;                   /**< 1 if the keyed checks ran */
	int marks_updated;           /**< 1 if the high-water marks moved */
	/** Well-formed key slots with a weak KDF cost (the test profile, or
	 *  below the minimum): not problems, but worth a loud warning. */
	uint64_t weak_slots;
	/** Warnings: findings that are not problems (a snapshot whose
	 *  authenticated record says it was written unsigned on purpose). */
	uint64_t warnings;
	/** The archive predates the metadata authenticator (checked with the
	 *  key): its slots and config are not authenticated; 'amberfs key
	 *  seal' adds it.  Not a problem. */
	int meta_unauthenticated;
	uint64_t chunks;             /**< distinct chunks decoded (read_data), each once */
	uint64_t chunk_bytes;        /**< their bytes in the archive */
	unsigned threads;            /**< threads that decoded them */
} amber_verify_stats;

#define AMBER_VERIFY_STATS_INIT {.version = AMBER_VERIFY_STATS_VERSION}

#define AMBER_VERIFY_OPTS_VERSION 2

/**
 * Options for amber_verify().  Initialise with AMBER_VERIFY_OPTS_INIT; every
 * other field is optional (zero = default).
 */
typedef struct amber_verify_opts {
	unsigned int version;        /**< AMBER_VERIFY_OPTS_VERSION */
	/** For an encrypted archive: the passphrase.  Each key slot is tried
	 *  and checked against the snapshots; the archive is unlocked with a
	 *  slot that opens and authenticates.  NULL: no keyed checks (unless
	 *  the archive is already unlocked or plain). */
	const unsigned char *passphrase;
	size_t passphrase_len;
	int no_key;                  /**< skip every check that needs the key */
	int read_data;               /**< also decode every chunk of every file */
	const uint8_t *public_key;   /**< 32-byte Ed25519 key to pin; NULL: the archive's */
	int no_marks;                /**< neither check nor move the high-water marks */
	amber_verify_cb problem;     /**< called for each problem (may be NULL) */
	/** Called for each warning (may be NULL): not a problem, but said. */
	amber_verify_cb warning;
	/** Called with each unsigned snapshot's id (may be NULL). */
	void (*unsigned_snapshot)(const char *id, void *payload);
	/** Progress, at most ~10 times a second: objects and bytes so far. */
	void (*progress)(const amber_verify_stats *sofar, void *payload);
	void *payload;
	/* Version 2: */
	/** Threads reading and hashing the snapshots' blobs, and decoding
	 *  chunks with read_data (the calling thread is one of them); 0: one
	 *  per online CPU.  Callbacks are only ever called on the calling
	 *  thread. */
	int threads;
} amber_verify_opts;

#define AMBER_VERIFY_OPTS_INIT {.version = AMBER_VERIFY_OPTS_VERSION}

/**
 * Check archive `a` (see the top of this header for what is checked).
 * @param stats  receives the counters (may be NULL; else
 *               AMBER_VERIFY_STATS_INIT)
 * @param opts   NULL for the defaults
 * @return 0 if the checks ran (stats->problems says whether anything was
 *         found), or an error code if they could not run at all (AMBER_EINVAL
 *         for options of an unknown version or stats of version 0).
 */
int amber_verify(amber_verify_stats *stats, amber_archive *a, const amber_verify_opts *opts);

#define AMBER_PUSH_STATS_VERSION 1

/** Result of amber_push(); versioned as amber_stats is. */
typedef struct amber_push_stats {
	unsigned int version;       /**< AMBER_PUSH_STATS_VERSION, set by the caller */
	uint64_t refs;              /**< refs considered */
	uint64_t updated;           /**< refs created or moved on the remote */
	int created;                /**< 1 if a local bare repository was created */
} amber_push_stats;

#define AMBER_PUSH_STATS_INIT {.version = AMBER_PUSH_STATS_VERSION}

/**
 * Push every amberfs ref (refs/heads/, refs/tags/, refs/amberfs/) of the
 * archive at `archive` to `remote`, any URL libgit2 supports (a path,
 * file://, ssh://).  Objects go first and refs last; no ref is forced, so
 * a remote ref that is not an ancestor of ours is refused.  A local path
 * that does not exist is created as a bare repository first.
 * @param stats  may be NULL; else initialised with AMBER_PUSH_STATS_INIT
 * @return 0, AMBER_EEXISTS for a refused non-fast-forward update (message
 *         names the ref), AMBER_ENOTFOUND, AMBER_EINVAL (stats of version 0),
 *         AMBER_ERROR.
 */
int amber_push(amber_push_stats *stats, amber_archive *a, const char *remote);

#ifdef __cplusplus
}
#endif

#endif
