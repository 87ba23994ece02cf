/*
 * libamber: encrypted, deduplicated, time-indexed snapshots of directory
 * trees in a git object store.
 *
 * This is the library's whole public contract.  The `amberfs` program (CLI
 * and FUSE daemon) is a thin client of it.  Every fallible function returns
 * 0 or a negative AMBER_E* code; the one-line message describing the failure
 * (naming the object or path involved) is available from
 * amber_error_last() on the same thread until the next failing call.
 *
 * Thread safety: an amber_archive may be shared by several threads for
 * reading (amber_snapshot_open, amber_file_read, ...).  Writing a snapshot
 * takes the archive's writer lock; only one writer per archive at a time.
 */
#ifndef AMBER_H
#define AMBER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AMBER_FORMAT_VERSION 1
#define AMBER_OID_HEXSZ 40
#define AMBER_NAME_MAX 255
#define AMBER_STREAM_MAX 64

#if defined(__GNUC__)
#define AMBER_MUST_USE __attribute__((warn_unused_result))
#else
#define AMBER_MUST_USE
#endif

/** Error codes: the failures a caller can act on; -1 for the rest. */
enum amber_error {
	AMBER_OK = 0,
	AMBER_ERROR = -1,        /**< anything else (I/O, out of memory, ...) */
	AMBER_ENOTFOUND = -2,    /**< no such archive, snapshot, path or object */
	AMBER_EEXISTS = -3,      /**< would overwrite something that exists */
	AMBER_ELOCKED = -4,      /**< another writer holds the archive lock */
	AMBER_ECORRUPT = -5,     /**< malformed or inconsistent archive data */
	AMBER_EAUTH = -6,        /**< an object failed authentication */
	AMBER_EBADKEY = -7,      /**< wrong passphrase or key */
	AMBER_EINVAL = -8,       /**< invalid argument (bad spec, bad name) */
	AMBER_ENOTARCHIVE = -9,  /**< the path is not an amberfs archive */
	AMBER_EAMBIGUOUS = -10,  /**< an id prefix matches several snapshots */
	AMBER_ENOTDIR = -11,     /**< a path component is not a directory */
	AMBER_EISDIR = -12,      /**< a file was expected, a directory found */
	AMBER_ENEEDKEY = -13,    /**< the archive is encrypted and locked */
	AMBER_EPLAIN = -14,      /**< the archive says it is plain where encryption was
				      expected (a key was given, or it was seen encrypted) */
};

/**
 * The message of the last failure on this thread ("" if none).  The string
 * is owned by the library and valid until the next libamber call on this
 * thread.
 */
const char *amber_error_last(void);

/** The last failure's code on this thread (AMBER_OK if none). */
int amber_error_code(void);

/**
 * Initialise the library (libsodium, libgit2 and their global options).
 * Safe to call several times; must be called before anything else.
 * @return 0, or AMBER_ERROR if a dependency cannot start.
 */
int amber_global_init(void);

/* ------------------------------------------------------------------ */
/* Archives                                                            */

typedef struct amber_archive amber_archive;

#define AMBER_CREATE_OPTS_VERSION 1

/**
 * Options for amber_archive_create().  Initialise with
 * AMBER_CREATE_OPTS_INIT, then set fields (libamber(3), OPTION STRUCTS).
 */
typedef struct amber_create_opts {
	unsigned int version;           /**< AMBER_CREATE_OPTS_VERSION */
	int plain;                      /**< no encryption (authenticates nothing) */
	const unsigned char *passphrase; /**< required unless plain */
	size_t passphrase_len;
	/** If set: create an Ed25519 signing key pair, write its secret key to
	 *  this new file (mode 0600; an existing file is never overwritten) and
	 *  store the public key in the archive, whose snapshots must then be
	 *  signed.  NULL: an archive without a signing key.  A "pkcs11:" URI
	 *  (RFC 7512) instead names an existing Ed25519 key in a PKCS#11
	 *  token: its public key becomes the archive's (the key never leaves
	 *  the token; it must sign a test message with token_pin). */
	const char *signing_key_path;
	/** AMBER_KDF_DEFAULT, or AMBER_KDF_TEST: a passphrase slot with the
	 *  minimum Argon2id cost, labelled as such, for test suites only (it
	 *  opens only with amber_open_opts.weak_kdf_ok). */
	int kdf_profile;
	/** Settings of the returned handle (cache directory, pack size); NULL
	 *  for the defaults. */
	const struct amber_open_opts *open;
	/** The token PIN for a pkcs11: signing_key_path (NULL: no login); the
	 *  returned handle keeps it as amber_archive_set_token_pin() does. */
	const unsigned char *token_pin;
	size_t token_pin_len;
} amber_create_opts;

#define AMBER_CREATE_OPTS_INIT {.version = AMBER_CREATE_OPTS_VERSION}

enum amber_kdf_profile {
	AMBER_KDF_DEFAULT = 0,   /**< Argon2id, 3 passes, 64 MiB */
	AMBER_KDF_TEST = 1,      /**< Argon2id at its minimum cost: insecure, tests only */
};

/**
 * Create a new archive at `path` (a directory that does not exist or is
 * empty).  An encrypted archive gets a random master key wrapped in one
 * passphrase key slot.  The returned archive is unlocked.
 * @return 0, AMBER_EEXISTS if `path` is a non-empty directory or a file,
 *         AMBER_EINVAL for a missing passphrase or an options struct of
 *         an unknown version.  Free with
 *         amber_archive_free().
 */
int amber_archive_create(amber_archive **out, const char *path, const amber_create_opts *opts);

/**
 * Open an existing archive.  Reads its configuration, not its contents.
 * Opening writes nothing into the archive (read-only media work).
 * @return 0, AMBER_ENOTFOUND if `path` does not exist,
 *         AMBER_ENOTARCHIVE if it is not an amberfs archive,
 *         AMBER_ECORRUPT if its configuration is malformed.
 */
int amber_archive_open(amber_archive **out, const char *path);

#define AMBER_OPEN_OPTS_VERSION 1

/**
 * Options for amber_archive_open_ext() (and amber_create_opts.open).
 * Initialise with AMBER_OPEN_OPTS_INIT, then set fields: the library reads
 * no environment variable, callers pass what they want here.
 */
typedef struct amber_open_opts {
	unsigned int version;     /**< AMBER_OPEN_OPTS_VERSION */
	/** Base of the local caches (time indexes, files cache, verify marks,
	 *  the record that an archive was seen encrypted), kept in
	 *  cache_dir/<archive id>/.  NULL: ~/.cache/amberfs of the user's home
	 *  directory in the password database; "": no cache.  A directory that
	 *  is not the user's own, or that others may write, is not used. */
	const char *cache_dir;
	/** The caller holds a key for this archive: if it says it is plain,
	 *  opening fails with AMBER_EPLAIN instead of reading it unencrypted. */
	int expect_encrypted;
	/** Accept key slots of the test KDF profile (AMBER_KDF_TEST) and any
	 *  below the minimum cost.  Tests only. */
	int weak_kdf_ok;
	/** Bytes written to one pack file before the writer starts another;
	 *  0: 512 MiB. */
	uint64_t pack_rollover;
	/** Open an archive that says it is plain although this machine saw it
	 *  encrypted or it has key slots, instead of failing with AMBER_EPLAIN
	 *  (amber_verify() then reports it as a config problem). */
	int plain_claim_ok;
	/** Snapshots listed by each time index page of a stream this handle
	 *  starts (a stream keeps the span its records give); 0: 1024.  Tests
	 *  set a small span to cross page boundaries with few snapshots. */
	uint32_t index_span;
} amber_open_opts;

#define AMBER_OPEN_OPTS_INIT {AMBER_OPEN_OPTS_VERSION, NULL, 0, 0, 0, 0, 0}

/**
 * amber_archive_open() with options (NULL: the defaults).  Besides its
 * errors: AMBER_EPLAIN if the archive says it is plain while
 * opts->expect_encrypted is set, this machine's cache records it as
 * encrypted, or it has key slots (its config was rewritten),
 * AMBER_EINVAL for an unknown
 * opts->version.  Opening an encrypted archive records that in the cache.
 */
int amber_archive_open_ext(amber_archive **out, const char *path, const amber_open_opts *opts);

/** 1 if the archive is encrypted and not yet unlocked, else 0. */
int amber_archive_needs_key(const amber_archive *a);

/** 1 if the archive is encrypted, 0 if it is plain. */
int amber_archive_is_encrypted(const amber_archive *a);

/**
 * Unlock an encrypted archive with a passphrase.  The passphrase is read,
 * never kept.  Every key slot is tried; a slot that is malformed or asks
 * for a cost out of bounds is skipped.
 * @return 0, AMBER_EBADKEY if no key slot opens with it (or the best other
 *         error of the slots), AMBER_EPLAIN on a plain archive: a caller
 *         with a passphrase expected encryption.
 */
AMBER_MUST_USE int amber_archive_unlock(amber_archive *a, const unsigned char *pass, size_t len);

/** The archive's path as given to open/create; owned by the archive. */
const char *amber_archive_path(const amber_archive *a);

/** The archive's random id (32 hex characters); owned by the archive. */
const char *amber_archive_id(const amber_archive *a);

/**
 * Whether the archive's local cache directory (amber_open_opts.cache_dir)
 * can be used.  One that is not the caller's own, or that others may
 * write, is never used: the caches are skipped (slower, never wrong), and
 * this says so, so that a front end can tell the user once.  Creates
 * nothing.
 * @return 0, or AMBER_ERROR with the reason (naming the directory and what
 *         to do) in amber_error_last().
 */
int amber_archive_cache_check(const amber_archive *a);

/** Close an archive and wipe its keys.  NULL-safe. */
void amber_archive_free(amber_archive *a);

/* Signing keys ------------------------------------------------------- */

/**
 * The archive's public Ed25519 signing key, which checks the SSH signatures
 * (git's gpg.format=ssh) of its snapshot commits and tags.  Needs no
 * passphrase.
 * @param pk  receives the 32-byte public key
 * @return 0, or AMBER_ENOTFOUND if the archive has no signing key (its
 *         snapshots are unsigned).
 */
int amber_archive_signing_pubkey(uint8_t pk[32], const amber_archive *a);

/**
 * Give an archive that has no signing key one: create a key pair, write the
 * secret key to the new file `secret_path` (mode 0600, never overwriting)
 * -- or take the Ed25519 key of a token that the "pkcs11:" URI
 * `secret_path` names, logging in with the PIN set by
 * amber_archive_set_token_pin() -- and store the public key in the
 * archive's metadata (a new metadata commit, moved by compare-and-swap
 * under the writer lock).  Snapshots written afterwards must be signed.  Keys are not rotated: an archive
 * keeps its first signing key.  Needs no passphrase.
 * @return 0, AMBER_EEXISTS if the archive already has a signing key or the
 *         file exists, AMBER_ELOCKED if another writer is active or the
 *         metadata changed since the archive was opened.
 */
int amber_archive_add_signing_key(amber_archive *a, const char *secret_path);

/**
 * The PIN to log in to the PKCS#11 token of a signing key given as a
 * "pkcs11:" URI (amber_snapshot_opts.signing_key_path, amber_tag_create(),
 * amber_archive_add_signing_key(), writer sessions).  The PIN is copied
 * into locked memory, kept until the archive is freed or the PIN is set
 * again, and wiped; NULL forgets it.
 * @return 0, or AMBER_ERROR if no locked memory is left.
 */
int amber_archive_set_token_pin(amber_archive *a, const unsigned char *pin, size_t len);

/**
 * Format a public signing key as one OpenSSH public-key line,
 * "ssh-ed25519 AAAA... comment" (no newline), as allowed-signers files and
 * `ssh-keygen -Y verify` take it.
 * @param comment  NULL or "" for none
 * @return 0, or AMBER_ERROR if out (outlen bytes) is too small (~100 bytes do).
 */
int amber_pubkey_format(char *out, size_t outlen, const uint8_t pk[32], const char *comment);

/**
 * Parse an "ssh-ed25519 AAAA... [comment]" line.
 * @return 0 or AMBER_ECORRUPT.
 */
int amber_pubkey_parse(uint8_t pk[32], const char *line);

/* ------------------------------------------------------------------ */
/* Writing snapshots                                                   */

#define AMBER_STATS_VERSION 2

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
 * Read the listing of directory entry `dir` (entries sorted by name).
 * @return 0, AMBER_ENOTDIR, AMBER_EAUTH, AMBER_ECORRUPT.  Free with
 *         amber_dir_free().
 */
int amber_dir_open(amber_dir **out, amber_snapshot *s, const amber_entry *dir);
size_t amber_dir_count(const amber_dir *d);
/** The i-th entry; owned by the listing. */
const amber_entry *amber_dir_entry(const amber_dir *d, size_t i);
/** Binary search by name; NULL if absent.  Owned by the listing. */
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

/* Diff -------------------------------------------------------------- */

enum amber_change_kind {
	AMBER_ADDED = 'A',
	AMBER_REMOVED = 'D',
	AMBER_MODIFIED = 'M',        /**< content (or symlink target, device) changed */
	AMBER_TYPE_CHANGED = 'T',
	AMBER_META_CHANGED = 'm',    /**< only mode, owner, mtime or xattrs changed */
};

/** A byte range of a file. */
typedef struct amber_range {
	uint64_t off, len;
} amber_range;

/** One difference between two snapshots, as passed to the callback. */
typedef struct amber_change {
	int kind;                    /**< enum amber_change_kind */
	const char *path;            /**< relative to the diffed path; valid during the call */
	const amber_entry *old_e;    /**< NULL when added */
	const amber_entry *new_e;    /**< NULL when removed */
	int meta_changed;            /**< metadata differs too (for AMBER_MODIFIED) */
	/** For modified regular files with ranges asked for: the changed region,
	 *  as [old_range) in the old file replaced by [new_range) in the new. */
	amber_range old_range, new_range;
	uint64_t appended;           /**< > 0: the change is exactly this many bytes
					  appended at offset old size */
} amber_change;

typedef int (*amber_diff_cb)(const amber_change *c, void *payload);

/**
 * Compare `path` ("" = everything) of two snapshots of one archive, calling
 * cb for each difference, depth first in name order (the entries of a
 * directory of more than 1024 entries come one fan-out bucket at a time,
 * in name order within each).  Identical subtrees and buckets are skipped
 * by object id without being decrypted; an added or removed directory is
 * one change (its contents are not listed).  With `ranges`, modified files'
 * changed byte region is found from their chunk lists, decoding at most the
 * two chunks where the region starts.
 * @return 0, the callback's non-zero value, or an error.
 */
int amber_diff(amber_snapshot *a, amber_snapshot *b, const char *path, int ranges,
	       amber_diff_cb cb, void *payload);

/** How deep amber_restore() nests directories below the one it restores. */
#define AMBER_RESTORE_MAX_DEPTH 4096

/** What amber_restore() left out because `safe` was set. */
typedef struct amber_restore_skipped {
	uint64_t devices;      /**< device nodes not created */
	uint64_t setid;        /**< non-directories whose setuid/setgid bits were cleared */
	uint64_t xattrs;       /**< security.* and trusted.* attributes not set */
} amber_restore_skipped;

#define AMBER_RESTORE_OPTS_VERSION 1

/** Options for amber_restore().  Initialise with AMBER_RESTORE_OPTS_INIT. */
typedef struct amber_restore_opts {
	unsigned int version;  /**< AMBER_RESTORE_OPTS_VERSION */
	int no_owner;          /**< do not chown (default when not root) */
	amber_progress_cb progress;
	amber_warn_cb warn;    /**< metadata that could not be applied */
	void *payload;
	/** For untrusted archives: create no device nodes, clear setuid and
	 *  setgid on everything but directories, set no security.* or
	 *  trusted.* attribute, and leave everything owned by the caller. */
	int safe;
	amber_restore_skipped *skipped; /**< if set, receives what `safe` left out */
} amber_restore_opts;

#define AMBER_RESTORE_OPTS_INIT {.version = AMBER_RESTORE_OPTS_VERSION}

/**
 * Restore `path` of snapshot s into `dest`, which must not exist or be an
 * empty directory.  Restores contents, modes, owners (as root), ns mtimes,
 * xattrs, symlinks, hardlink groups, fifos and device nodes (all but
 * the last with opts->safe).  Nothing it sets metadata on is reached
 * through a symlink; a node replaced by someone else while being
 * restored fails the restore.  Directories nested more than
 * AMBER_RESTORE_MAX_DEPTH deep fail it.
 * @param stats receives the counts (may be NULL; else AMBER_STATS_INIT)
 * @param opts  NULL for the defaults
 * @return 0, AMBER_EEXISTS if dest is not empty, AMBER_ENOTFOUND, AMBER_EAUTH,
 *         AMBER_EINVAL for options of an unknown version or stats of
 *         version 0...
 */
int amber_restore(amber_stats *stats, amber_snapshot *s, const char *path, const char *dest,
		  const amber_restore_opts *opts);

/**
 * Lock the archive's key memory again.  Keys live in locked memory, but a
 * child made by fork() (a daemon) does not inherit memory locks: it calls
 * this to keep its keys out of swap.  No-op for a plain or locked archive.
 * @return 0, or AMBER_ERROR if the memory cannot be locked (RLIMIT_MEMLOCK).
 */
int amber_archive_lock_keys(amber_archive *a);

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
