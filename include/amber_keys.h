/*
 * libamber: key custody.  The key slots of an encrypted archive, each a
 * way in to its one master key: passphrases, key files, SLIP-0039
 * recovery share sets and (slot kind 4) keys held in a PKCS#11 token.
 *
 * A sub-header of amber.h (include amber.h first or let this header do it).
 *
 * Every change to the slot set is a new metadata commit that carries an
 * authenticator of the config and of every slot blob, keyed with the
 * master key (record_key), and is signed when the archive has a signing
 * key.  A reader that unlocks the archive checks the authenticator and
 * refuses a config or slot set the key did not authenticate
 * (amberfs-format(5) KEY SLOTS and THE METADATA COMMIT).
 */
#ifndef AMBER_KEYS_PUBLIC_H
#define AMBER_KEYS_PUBLIC_H

#include "amber.h"
#include "amber_slip39.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Slot kinds (the kind byte of a slot). */
enum amber_slot_kind {
	AMBER_SLOT_PASSPHRASE = 1, /**< secret: the passphrase bytes */
	AMBER_SLOT_KEYFILE = 2,    /**< secret: the 32 bytes of a key file */
	AMBER_SLOT_SHARES = 3,     /**< secret: the 32-byte recovery secret the shares combine to */
	AMBER_SLOT_PKCS11 = 4,     /**< secret: defined by the token module (lib/pkcs11.c) */
};

#define AMBER_SLOT_ID_HEXSZ 16
#define AMBER_SLOT_LABEL_MAX 64
#define AMBER_KEYFILE_BYTES 32
#define AMBER_RECOVERY_BYTES 32

/** What `key list` shows of one slot (public: no key needed). */
typedef struct amber_slot_info {
	int kind;                            /**< enum amber_slot_kind */
	char id[AMBER_SLOT_ID_HEXSZ + 1];    /**< stable id, 16 lowercase hex digits */
	int64_t created;                     /**< Unix seconds; 0 for a version-1 slot */
	char label[AMBER_SLOT_LABEL_MAX + 1];
	int version;                         /**< 1: an AMBSLOT1 slot (made before kinds), 2 */
	int weak;                            /**< a passphrase slot of a weak KDF cost */
	/* passphrase slots */
	int kdf_test;                        /**< the insecure test profile */
	uint32_t kdf_ops, kdf_mem_kib;       /**< Argon2id passes and KiB */
	/* share slots */
	uint16_t share_set;                  /**< the SLIP-0039 identifier of the set */
	uint8_t share_exponent;              /**< its iteration exponent */
	uint8_t group_threshold, ngroups;
	amber_slip39_group groups[AMBER_SLIP39_MAX_GROUPS];
	unsigned nshares;                    /**< shares made, over all groups */
	/* pkcs11 slots: which token and key wrap it (as recorded by add-pkcs11) */
	char token_label[33];                /**< the token's label */
	char token_serial[33];               /**< the token's serial number */
	char token_key[65];                  /**< the wrapping key's label */
	char token_uri[257];                 /**< the URI it was added with (cut at 256) */
} amber_slot_info;

/** "passphrase", "keyfile", "shares", "pkcs11" or "unknown". */
const char *amber_slot_kind_name(int kind);

/**
 * 1 once this process held a key that could not be locked in memory
 * (RLIMIT_MEMLOCK too low and no CAP_IPC_LOCK): it may have reached swap.
 * The library goes on; a program says so once (amberfs warns at exit).
 */
int amber_key_memory_unlocked(void);

/** Number of key slots of the archive (0 for a plain archive). */
size_t amber_archive_slot_count(const amber_archive *a);

/**
 * Describe slot i (0-based, in metadata order).
 * @return 0, AMBER_ENOTFOUND if there is no slot i, AMBER_ECORRUPT if it is
 *         malformed (its id is still set: the hash of its blob).
 */
int amber_archive_slot_info(amber_slot_info *out, const amber_archive *a, size_t i);

/**
 * Unlock with a secret of one slot kind: every slot of that kind is tried
 * (see amber_slot_kind for what `secret` is).  Then the metadata
 * authenticator is checked (see the top of this header).
 * @return 0, AMBER_EBADKEY if no slot of that kind opens with it (the
 *         message says what to try), AMBER_EAUTH if the slot set or config
 *         was changed by someone without the key, AMBER_EPLAIN on a plain
 *         archive, AMBER_ECORRUPT if no slot of that kind is usable.
 */
AMBER_MUST_USE int amber_archive_unlock_with(amber_archive *a, int kind, const void *secret,
					     size_t len);

/**
 * Unlock with SLIP-0039 mnemonics (a share slot): combine them with the
 * share passphrase (NULL: none) and open the share slot of that set.
 * @return as amber_archive_unlock_with(); AMBER_EINVAL for shares that do
 *         not combine (the message names the share and what to do).
 */
AMBER_MUST_USE int amber_archive_unlock_shares(amber_archive *a, const char *const *mnemonics,
					       size_t n, const char *passphrase);

/** A new slot, for amber_archive_seal_slot(). */
typedef struct amber_slot_new {
	int kind;               /**< AMBER_SLOT_PASSPHRASE or AMBER_SLOT_KEYFILE */
	const char *label;      /**< printable UTF-8, at most 64 bytes; NULL: none */
	const void *secret;     /**< the passphrase, or the key file's 32 bytes */
	size_t secret_len;
	int kdf_profile;        /**< passphrase: AMBER_KDF_DEFAULT or AMBER_KDF_TEST */
	const char *keep_id;    /**< NULL: a new random id; else this id (key passwd) */
} amber_slot_new;

/**
 * Seal the unlocked archive's master key into a new slot blob (not yet
 * added: see amber_archive_change_slots).  *blob is malloc'd.
 * @return 0, AMBER_ENEEDKEY if locked, AMBER_EINVAL for a bad label/kind.
 */
int amber_archive_seal_slot(uint8_t **blob, size_t *len, const amber_archive *a,
			    const amber_slot_new *n);

/** Parameters of a recovery share set, for amber_archive_seal_shares(). */
typedef struct amber_shares_new {
	const char *label;
	const char *passphrase;     /**< SLIP-0039 passphrase, printable ASCII; NULL: none */
	uint8_t group_threshold;    /**< groups needed */
	size_t ngroups;
	amber_slip39_group groups[AMBER_SLIP39_MAX_GROUPS];
	uint8_t iteration_exponent; /**< 0..15 */
} amber_shares_new;

/**
 * Make a fresh random recovery secret, split it into SLIP-0039 mnemonics
 * and seal the master key under it into a share slot blob (not yet added).
 * The recovery secret itself is wiped: only the mnemonics and the slot
 * remain.  Free *mnemonics with amber_slip39_free(), *blob with free().
 */
int amber_archive_seal_shares(uint8_t **blob, size_t *len, char ***mnemonics, size_t *count,
			      const amber_archive *a, const amber_shares_new *n);

/** How a slot change is written (amber_archive_change_slots). */
typedef struct amber_slot_change {
	const uint8_t *add;          /**< a slot blob to add, or NULL */
	size_t add_len;
	const char *remove_id;       /**< id (or unique prefix of 4+) of a slot to remove, or NULL */
	/** Secret signing key file for the metadata commit of a signed
	 *  archive; NULL with unsigned_ok for an unsigned commit. */
	const char *signing_key_path;
	int unsigned_ok;
	const char *message;         /**< first line of the commit message; NULL: a default */
} amber_slot_change;

/**
 * Change the slot set of an unlocked archive: remove one slot, add one,
 * or both at once (a passphrase change), as one new metadata commit that
 * carries the authenticator, moved by compare-and-swap under the writer
 * lock.  The last slot is never removed.  An added blob must be a
 * well-formed slot whose id is not in use (after the removal).
 * @return 0, AMBER_ENEEDKEY (locked, or a signed archive and no signing
 *         key), AMBER_ENOTFOUND / AMBER_EAMBIGUOUS for remove_id,
 *         AMBER_EINVAL for the last slot or a bad blob, AMBER_ELOCKED.
 */
int amber_archive_change_slots(amber_archive *a, const amber_slot_change *c);

/**
 * Describe a slot blob of either version (AMBSLOT1 or AMBSLOT2, any kind)
 * from its public bytes.  out->id is set even when it is malformed.
 * @return 0 or AMBER_ECORRUPT.
 */
int amber_slot_describe(amber_slot_info *out, const uint8_t *blob, size_t len);

/**
 * Whether a slot change could be written with this signing key file (NULL
 * for none): checked before any secret is made.
 * @return 0, AMBER_ENEEDKEY (a signed archive and no key, without
 *         unsigned_ok), AMBER_EBADKEY (not the archive's key), ...
 */
int amber_archive_check_signer(const amber_archive *a, const char *signing_key_path,
			       int unsigned_ok);

/**
 * 1 if the archive's metadata carries an authenticator (archives made
 * before slot kinds have none until their first slot change), else 0.
 */
int amber_archive_meta_authenticated(const amber_archive *a);

/**
 * Find a slot by id (or unique prefix of at least 4 hex digits) or exact
 * label.  @return its index, or AMBER_ENOTFOUND / AMBER_EAMBIGUOUS.
 */
int amber_archive_slot_find(const amber_archive *a, const char *which);

/**
 * Build a version-2 slot blob of any kind from its parts (for kinds whose
 * sealing happens elsewhere, a token's): the common header (kind, a new
 * random id or keep_id, the creation time now, label), then `params`
 * (at most 1024 bytes) and `sealed` (at most 4096 bytes), see
 * amberfs-format(5).  *blob is malloc'd.
 */
int amber_slot_build(uint8_t **blob, size_t *len, int kind, const char *keep_id,
		     const char *label, const uint8_t *params, size_t params_len,
		     const uint8_t *sealed, size_t sealed_len);

/* Key slots held by a PKCS#11 token (kind 4) ---------------------------- */

/**
 * Seal the unlocked archive's master key into a new pkcs11 slot blob (not
 * yet added: see amber_archive_change_slots): a random key-encryption key
 * is wrapped by the AES key of the token that the "pkcs11:" URI names
 * (CKM_AES_KEY_WRAP; the AES key never leaves the token), logging in with
 * the PIN from amber_archive_set_token_pin().  The wrap is checked by
 * unwrapping it again.  *blob is malloc'd.
 * @return 0, AMBER_ENEEDKEY if locked, the token's errors (pkcs11.h).
 */
int amber_archive_seal_pkcs11(uint8_t **blob, size_t *len, const amber_archive *a,
			      const char *uri, const char *label);

/**
 * Unlock with the AES key of the token that `uri` names (PIN from
 * amber_archive_set_token_pin()): each pkcs11 slot's wrapped key is
 * unwrapped by the token until one opens.  Then the metadata
 * authenticator is checked, as amber_archive_unlock_with() does.
 * @return 0, AMBER_EBADKEY (no pkcs11 slot is wrapped by that key, or a
 *         wrong PIN), AMBER_ENOTFOUND (no such token or key), AMBER_EAUTH,
 *         AMBER_ERROR (the token failed or went away).
 */
AMBER_MUST_USE int amber_archive_unlock_token(amber_archive *a, const char *uri);

#ifdef __cplusplus
}
#endif

#endif
