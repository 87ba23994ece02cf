/*
 * The archive object shared by the writer and the reader modules.
 *
 * Layout of the archive's own metadata (amberfs-format(5)):
 *   refs/amberfs/meta -> commit -> tree { config, keys/slot-<n> ...,
 *                                         signing/ed25519.pub }
 * so that config, key slots and the public signing key replicate with
 * `git clone --mirror`.
 */
#ifndef AMBER_ARCHIVE_H
#define AMBER_ARCHIVE_H

#include <pthread.h>
#include <stdatomic.h>

#include "amber.h"
#include "buf.h"
#include "cache.h"
#include "chunker.h"
#include "gitobj.h"
#include "keys.h"
#include "sign.h"
#include "store.h"

#define AMBER_META_REF "refs/amberfs/meta"
#define AMBER_MAX_SLOTS 64
#define AMBER_MAX_META (1u << 20)

struct amber_archive {
	char *path;
	amber_store *store;
	char *cache_base;          /* amber_open_opts.cache_dir (NULL: the default) */
	int cache_none;            /* amber_open_opts.cache_dir was "" */
	int weak_kdf_ok;           /* amber_open_opts.weak_kdf_ok */
	uint32_t index_span;       /* amber_open_opts.index_span (0: the default) */
	int encrypted;
	char id[33];
	int zstd_level;
	unsigned fanout_layout;    /* written fan-outs: 1 the flat bucket list of old
				      archives (tests keep that writer), else 2 */
	unsigned index_layout;     /* written chunk indexes: 1 always one list (old
				      archives; tests), else paged above 64 chunks */
	size_t chunk_min, chunk_avg, chunk_max;
	amber_keys *keys;          /* NULL until unlocked; NULL for plain archives */
	amber_chunker chunker;     /* set up once keys are known */
	uint8_t *slots[AMBER_MAX_SLOTS];
	size_t slot_len[AMBER_MAX_SLOTS];
	size_t nslots;
	uint8_t *config_raw;       /* the config blob's bytes, as the authenticator covers them */
	size_t config_len;
	int has_auth;              /* the metadata tree has an `auth` blob */
	uint8_t auth[32];          /* its value */
	uint8_t sign_pk[32];       /* public signing key, if has_sign_pk */
	unsigned char *token_pin;  /* sodium_malloc: PIN for pkcs11: keys, or NULL */
	size_t token_pin_len;
	int has_sign_pk;
	uint8_t meta_oid[20];      /* the metadata commit this handle was loaded from */
	amber_cache *cache;        /* decoded chunks and indexes, all snapshots */
	struct {
		atomic_uint_fast64_t chunks_decoded, chunk_bytes, dirs_decoded, cache_hits;
	} counters;
	/* read-ahead: one worker thread, started on first use (after any fork) */
	pthread_mutex_t pf_lock;   /* protects the pf_* fields */
	pthread_cond_t pf_cond;
	pthread_t pf_thread;
	int pf_started, pf_stop;
	amber_link pf_queue[32];
	size_t pf_len[32], pf_n;
};

#define AMBER_DEFAULT_CACHE ((size_t)8 << 20)

/** Stop and join the read-ahead worker (started by prefetch.c), if started. */
void amber_archive_prefetch_stop(amber_archive *a);

/** Keys to pass to the codec: NULL for plain archives. */
static inline const amber_keys *amber_archive_keys(const amber_archive *a)
{
	return a->encrypted ? a->keys : NULL;
}

/**
 * The metadata authenticator: keyed BLAKE2b-256 under
 * k->record_key of the config bytes and every slot blob with its tree
 * name, in tree order (amberfs-format(5) THE METADATA COMMIT).
 */
void amber_meta_auth(uint8_t out[32], const amber_keys *k, const uint8_t *config,
		     size_t config_len, uint8_t *const *slots, const size_t *slot_len,
		     size_t nslots);

/** The tree name of slot i ("slot-00" ... "slot-63"); 8 bytes of room. */
void amber_slot_name(char out[16], size_t i);

/**
 * After a slot opened: check the authenticator against a->keys (slots.c).
 * @return 0, or AMBER_EAUTH (the config or slot set was changed without the key).
 */
int amber_archive_check_auth(const amber_archive *a);

/** The `auth` blob's text for a->keys and the current slots (85 bytes of room). */
int amber_archive_auth_text(char out[96], const amber_archive *a, uint8_t *const *slots,
			    const size_t *slot_len, size_t nslots);

/** Write one blob of the metadata tree into w and fill its tree entry. */
int amber_meta_blob(amber_tentry *e, amber_packw *w, const char *name, const void *data,
		    size_t len);

/** The current metadata tree's entries, kept to build the next one. */
typedef struct amber_meta_keep {
	amber_buf c, t;            /* the metadata commit and tree (entries point into t) */
	amber_commit commit;
	amber_tparsed *e;
	amber_tentry *top;         /* the kept entries, k of them, with room for `extra` more */
	size_t k;
} amber_meta_keep;

/**
 * Read the metadata tree of a->meta_oid and keep every entry whose name is
 * not in `drop` (NULL-terminated) byte for byte.  Dispose *m whatever it
 * returns.  @return 0 or an error.
 */
int amber_meta_keep_open(amber_meta_keep *m, amber_archive *a, const char *const *drop,
			 size_t extra);
void amber_meta_keep_dispose(amber_meta_keep *m);

/** Write the tree of entries e[0..n) into w; its id in oid. */
int amber_meta_tree(uint8_t oid[20], amber_packw *w, amber_tentry *e, size_t n);

/** Set up the chunker once a->keys is known (after an unlock). */
void amber_archive_setup_chunker(amber_archive *a);

/** Read a metadata object of the expected git type (bounded by AMBER_MAX_META). */
int amber_archive_read_meta(amber_buf *out, amber_archive *a, const uint8_t oid[20],
			    int want_type);

/** AMBER_ENEEDKEY (with a message) if the archive is encrypted and locked. */
int amber_archive_check_unlocked(const amber_archive *a);

/**
 * Read object `l` and decode it as `type`, checking its mac; appends the
 * payload to out.  `what` names the object for messages.
 */
int amber_archive_read_obj(amber_buf *out, amber_archive *a, const amber_link *l, int type,
			   size_t max_plain, const char *what);

/**
 * The signer for a snapshot or tag, enforcing the archive's policy: *out is
 * the loaded key (free with amber_signer_free), or NULL for an unsigned
 * write, which is allowed when the archive has no signing key or with
 * `unsigned_ok`.  A key that is not the archive's is AMBER_EBADKEY; no key
 * for a signing archive is AMBER_ENEEDKEY.
 */
int amber_archive_signer(amber_signer **out, const amber_archive *a, const char *path,
			 int unsigned_ok);

/**
 * The user's cache directory for this archive (malloc'd), created, or NULL
 * (error set) if there is none or it is not safe to use (cachedir.h).
 */
char *amber_archive_cache_dir(const amber_archive *a);

/** 1 if this machine's cache records that the archive was seen encrypted. */
int amber_archive_seen_encrypted(const amber_archive *a);

#endif
