/*
 * libamber: errors, library start-up, archives (create, open, unlock,
 * signing keys).  Part of <amber.h>; see libamber(3).
 */
#ifndef AMBER_ARCHIVE_PUBLIC_H
#define AMBER_ARCHIVE_PUBLIC_H

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


/**
 * Lock the archive's key memory again.  Keys live in locked memory, but a
 * child made by fork() (a daemon) does not inherit memory locks: it calls
 * this to keep its keys out of swap.  No-op for a plain or locked archive.
 * @return 0, or AMBER_ERROR if the memory cannot be locked (RLIMIT_MEMLOCK).
 */
int amber_archive_lock_keys(amber_archive *a);

#ifdef __cplusplus
}
#endif

#endif
