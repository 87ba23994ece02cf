/*
 * Key material.  The only module that touches raw keys besides the codec.
 *
 * An encrypted archive has one random 32-byte master key, never stored in
 * the clear.  Key slots wrap it (a passphrase slot: Argon2id -> key-encryption
 * key -> XChaCha20-Poly1305).  Working subkeys are derived from the master
 * key with libsodium's crypto_kdf (BLAKE2b), context "amberfs1":
 *
 *   id 1  nonce_key   keyed BLAKE2b of the exact bytes encrypted -> nonce
 *   id 2  enc_key     keyed BLAKE2b of the nonce -> per-object subkey
 *   id 3  token_key   keyed BLAKE2b of an entry name -> tree entry token
 *   id 4  chunk_key   seed of the chunker's gear table
 *   id 5  cache_key   key of the hash of plaintext chunks in the local caches
 *   id 6  record_key  the metadata authenticator (config and key slots)
 *   id 7  ino_key     SipHash key of the mount's inode numbers (amber_entry_ino;
 *                     16 bytes; nothing stored depends on it)
 *
 * All of it lives in sodium_malloc memory and is wiped on free.
 */
#ifndef AMBER_KEYS_H
#define AMBER_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "amber.h"
#include "amber_keys.h"

#include <sodium.h>

#define AMBER_KEY_BYTES 32
#define AMBER_INO_KEY_BYTES 16 /* crypto_shorthash_KEYBYTES */

typedef struct amber_keys {
	uint8_t master[AMBER_KEY_BYTES];
	uint8_t nonce_key[AMBER_KEY_BYTES];
	uint8_t enc_key[AMBER_KEY_BYTES];
	uint8_t token_key[AMBER_KEY_BYTES];
	uint8_t chunk_key[AMBER_KEY_BYTES];
	uint8_t cache_key[AMBER_KEY_BYTES];
	uint8_t record_key[AMBER_KEY_BYTES];
	uint8_t ino_key[AMBER_INO_KEY_BYTES];
	/* BLAKE2b keyed with token_key, before any input: a name token then
	 * costs one compression, not two (the key is a block of its own) */
	crypto_generichash_state token_state;
} amber_keys;

/** Make a new random master key and its subkeys (sodium_malloc'd). */
int amber_keys_generate(amber_keys **out);

/** Derive the subkeys from a master key (copied in). */
int amber_keys_from_master(amber_keys **out, const uint8_t master[AMBER_KEY_BYTES]);

/** Wipe and free.  NULL-safe. */
void amber_keys_free(amber_keys *k);

/** Lock k's pages in memory again (after fork).  NULL-safe.  @return 0 or AMBER_ERROR. */
int amber_keys_lock(const amber_keys *k);

/**
 * Seal the master key under a passphrase into a key slot blob (format in
 * amberfs-format(5): magic "AMBSLOT1", kind, Argon2id parameters, salt,
 * nonce, ciphertext).  *slot is malloc'd; the caller frees it.
 * @param profile  AMBER_KDF_DEFAULT (opslimit 3, memlimit 64 MiB) or
 *                 AMBER_KDF_TEST (the minimum, labelled alg 2; tests only)
 */
int amber_keyslot_seal(uint8_t **slot, size_t *slot_len, const amber_keys *k,
		       const uint8_t *pass, size_t pass_len, int profile);

/**
 * Open a passphrase key slot.  Its cost is checked before any work: above
 * the bounds it is refused; below the minimum, or of the test profile, it
 * is refused unless weak_ok.
 * @return 0 and *out set, AMBER_EBADKEY if the passphrase does not open it,
 *         AMBER_ECORRUPT if the slot is malformed or its cost refused.
 */
AMBER_MUST_USE int amber_keyslot_open(amber_keys **out, const uint8_t *slot, size_t slot_len,
				      const uint8_t *pass, size_t pass_len, int weak_ok);

/**
 * AMBER_ECORRUPT (with a message) if a slot of either version is malformed
 * or, for a passphrase slot, its cost is out of bounds.
 */
int amber_keyslot_check(const uint8_t *slot, size_t slot_len);

/** 1 if a well-formed slot is weak (test profile or below the minimum cost). */
int amber_keyslot_weak(const uint8_t *slot, size_t slot_len);

/**
 * Open a slot of kind `kind` with its secret (see enum amber_slot_kind).
 * Weak passphrase slots are refused unless weak_ok.
 * @return 0 and *out set, AMBER_EBADKEY if the secret does not open it or
 *         the slot is of another kind, AMBER_ECORRUPT if it is malformed.
 */
AMBER_MUST_USE int amber_slot_open(amber_keys **out, const uint8_t *blob, size_t len, int kind,
				   const void *secret, size_t secret_len, int weak_ok);

/** Seal k's master key into a new version-2 passphrase or key file slot. */
int amber_slot_seal(uint8_t **blob, size_t *len, const amber_keys *k, const amber_slot_new *n);

/** Seal k's master key into a version-2 share slot under a recovery secret. */
int amber_slot_seal_shares(uint8_t **blob, size_t *len, const amber_keys *k,
			   const uint8_t recovery[AMBER_RECOVERY_BYTES], const char *label,
			   uint16_t set_id, uint8_t exponent, uint8_t group_threshold,
			   const amber_slip39_group *groups, size_t ngroups);

/**
 * Seal k's master key into a pkcs11 slot under `kek`, whose token-wrapped
 * form and token identification are in `params` (amberfs-format(5)).
 */
int amber_slot_seal_pkcs11(uint8_t **blob, size_t *len, const amber_keys *k, const char *label,
			   const uint8_t *params, size_t plen, const uint8_t kek[AMBER_KEY_BYTES]);

/**
 * The token-wrapped kek inside a well-formed pkcs11 slot (pointing into blob).
 * @return 0, AMBER_ECORRUPT (malformed), AMBER_EINVAL (another kind).
 */
int amber_slot_pkcs11_wrapped(const uint8_t **wrapped, size_t *wlen, const uint8_t *blob,
			      size_t len);

#define AMBER_TOKEN_HEXSZ 32

/**
 * The tree entry token of a name: 32 lowercase hex characters of a 16-byte
 * BLAKE2b of the name, keyed with token_key (unkeyed when k is NULL, for
 * plain archives).  out gets a NUL terminator.
 */
void amber_name_token(char out[AMBER_TOKEN_HEXSZ + 1], const amber_keys *k, const void *name,
		      size_t len);

/**
 * 32-byte keyed hash of plaintext for the local caches (plaintext-chunk
 * cache, files cache keys): SHA-256 of cache_key || data; plain SHA-256
 * when k is NULL.  Never stored in the archive.
 */
void amber_content_hash(uint8_t out[32], const amber_keys *k, const void *data, size_t len);

/** Fill `n` bytes with random data. */
void amber_random(void *out, size_t n);

#endif
