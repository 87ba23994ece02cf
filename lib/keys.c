/*
 * Key material: the master key, its subkeys, and passphrase key slots.
 *
 * Passphrase key slot, version 1 (106 bytes, integers little-endian):
 *
 *   offset size  field
 *        0    8  magic     "AMBSLOT1"
 *        8    1  kind      1 = passphrase
 *        9    1  alg       1 = Argon2id v1.3; 2 = Argon2id v1.3, test profile
 *       10    4  opslimit  Argon2id passes (u32)
 *       14    4  memlimit  Argon2id memory in KiB (u32)
 *       18   16  salt      random
 *       34   24  nonce     random
 *       58   48  sealed    XChaCha20-Poly1305-IETF(key = kek, nonce,
 *                          plaintext = master key (32 bytes),
 *                          ad = bytes 0..57 of the slot) = 32 + 16-byte tag
 *
 *   kek = Argon2id13(passphrase, salt, opslimit, memlimit * 1024), 32 bytes.
 *
 * The associated data covers every byte before the ciphertext, so the cost
 * parameters and the salt cannot be altered without the slot failing to
 * open.  The cost parameters are bounded before Argon2id runs: a hostile
 * slot must not make us allocate gigabytes or spin for minutes (at most
 * 1 GiB, 32 passes, and passes x memory at most libsodium's "sensitive"
 * level, 4 x 1 GiB).  A slot below the minimum (2 passes, 19 MiB) or of the
 * test profile (alg 2: 1 pass, 8 KiB, which only test suites ask for) opens
 * only when the caller explicitly accepts weak slots: nothing an archive or
 * an environment says makes a reader trust a cheaply guessable slot.
 *
 * Subkeys: crypto_kdf_derive_from_key(master, id, context "amberfs1"),
 * ids as listed in keys.h.  An amber_keys lives in sodium_malloc memory
 * (guarded, locked, wiped on free) and is read-only once derived.
 */
#include "keys.h"

#include "error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#define SLOT_MAGIC "AMBSLOT1"
#define SLOT_MAGIC_LEN 8
#define SLOT_KIND_PASSPHRASE 1
#define SLOT_ALG_ARGON2ID13 1
#define SLOT_ALG_ARGON2ID13_TEST 2
#define SLOT_SALT_OFF 18
#define SLOT_NONCE_OFF (SLOT_SALT_OFF + crypto_pwhash_SALTBYTES)
#define SLOT_CT_OFF (SLOT_NONCE_OFF + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
#define SLOT_LEN (SLOT_CT_OFF + AMBER_KEY_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES)

#define SLOT_OPS_DEFAULT 3
#define SLOT_MEM_KIB_DEFAULT (64u << 10)
#define SLOT_OPS_MIN 2
#define SLOT_MEM_KIB_MIN (19u << 10)
#define SLOT_OPS_MAX 32
#define SLOT_MEM_KIB_MAX (1u << 20)             /* 1 GiB */
#define SLOT_WORK_MAX ((uint64_t)4 << 20)       /* passes x KiB: 4 passes over 1 GiB */

static const char kdf_context[crypto_kdf_CONTEXTBYTES + 1] = "amberfs1";

static int ensure_sodium(void)
{
	if (sodium_init() < 0)
		return amber_fail(AMBER_ERROR, "libsodium failed to initialise");
	return 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int keys_alloc(amber_keys **out)
{
	if (ensure_sodium() < 0)
		return AMBER_ERROR;
	*out = sodium_malloc(sizeof(**out));
	if (!*out)
		return amber_fail(AMBER_ERROR, "out of locked memory for keys");
	return 0;
}

/* Derive the subkeys of k->master, then make the whole struct read-only. */
static void keys_derive(amber_keys *k)
{
	uint8_t *sub[] = {k->nonce_key, k->enc_key, k->token_key,
			  k->chunk_key, k->cache_key, k->record_key};

	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
		crypto_kdf_derive_from_key(sub[i], AMBER_KEY_BYTES, i + 1, kdf_context, k->master);
	sodium_mprotect_readonly(k);
}

int amber_keys_generate(amber_keys **out)
{
	if (keys_alloc(out) < 0)
		return AMBER_ERROR;
	randombytes_buf((*out)->master, AMBER_KEY_BYTES);
	keys_derive(*out);
	return 0;
}

int amber_keys_from_master(amber_keys **out, const uint8_t master[AMBER_KEY_BYTES])
{
	if (keys_alloc(out) < 0)
		return AMBER_ERROR;
	memcpy((*out)->master, master, AMBER_KEY_BYTES);
	keys_derive(*out);
	return 0;
}

void amber_keys_free(amber_keys *k)
{
	/* sodium_free makes the pages writable again and wipes them. */
	sodium_free(k);
}

/* Memory locks are not inherited across fork(): a child locks its keys again. */
int amber_keys_lock(const amber_keys *k)
{
	if (k && sodium_mlock((void *)k, sizeof(*k)) != 0)
		return amber_fail(AMBER_ERROR, "cannot lock the key memory: %s", strerror(errno));
	return 0;
}

/* The slot's algorithm byte and Argon2id cost for a profile. */
static void slot_cost(int profile, uint8_t *alg, uint32_t *ops, uint32_t *mem_kib)
{
	if (profile == AMBER_KDF_TEST) {
		*alg = SLOT_ALG_ARGON2ID13_TEST;
		*ops = crypto_pwhash_OPSLIMIT_MIN;
		*mem_kib = (uint32_t)(crypto_pwhash_MEMLIMIT_MIN >> 10);
	} else {
		*alg = SLOT_ALG_ARGON2ID13;
		*ops = SLOT_OPS_DEFAULT;
		*mem_kib = SLOT_MEM_KIB_DEFAULT;
	}
}

/* kek = Argon2id13(pass, salt, ops, mem_kib KiB); ops and mem_kib already bounded. */
static int derive_kek(uint8_t kek[AMBER_KEY_BYTES], const uint8_t *pass, size_t pass_len,
		      const uint8_t *salt, uint32_t ops, uint32_t mem_kib)
{
	if (crypto_pwhash(kek, AMBER_KEY_BYTES, (const char *)pass, pass_len, salt, ops,
			  (size_t)mem_kib << 10, crypto_pwhash_ALG_ARGON2ID13) != 0)
		return amber_fail(AMBER_ERROR, "passphrase key derivation failed "
				  "(out of memory? it needs %u KiB)", mem_kib);
	return 0;
}

/* Everything before the salt: magic, kind, alg, opslimit, memlimit. */
static void slot_prefix(uint8_t *s, uint8_t alg, uint32_t ops, uint32_t mem_kib)
{
	memcpy(s, SLOT_MAGIC, SLOT_MAGIC_LEN);
	s[8] = SLOT_KIND_PASSPHRASE;
	s[9] = alg;
	put_le32(s + 10, ops);
	put_le32(s + 14, mem_kib);
}

int amber_keyslot_seal(uint8_t **slot, size_t *slot_len, const amber_keys *k,
		       const uint8_t *pass, size_t pass_len, int profile)
{
	uint8_t kek[AMBER_KEY_BYTES], alg;
	uint32_t ops, mem_kib;
	uint8_t *s;

	*slot = NULL;
	*slot_len = 0;
	if (ensure_sodium() < 0)
		return AMBER_ERROR;
	s = malloc(SLOT_LEN);
	if (!s)
		return amber_fail(AMBER_ERROR, "out of memory (key slot)");
	slot_cost(profile, &alg, &ops, &mem_kib);
	slot_prefix(s, alg, ops, mem_kib);
	randombytes_buf(s + SLOT_SALT_OFF, crypto_pwhash_SALTBYTES);
	randombytes_buf(s + SLOT_NONCE_OFF, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	if (derive_kek(kek, pass, pass_len, s + SLOT_SALT_OFF, ops, mem_kib) < 0) {
		free(s);
		return AMBER_ERROR;
	}
	crypto_aead_xchacha20poly1305_ietf_encrypt(s + SLOT_CT_OFF, NULL, k->master,
						   AMBER_KEY_BYTES, s, SLOT_CT_OFF, NULL,
						   s + SLOT_NONCE_OFF, kek);
	sodium_memzero(kek, sizeof(kek));
	*slot = s;
	*slot_len = SLOT_LEN;
	return 0;
}

/* Costs a reader may pay: bounded above always, below unless weak_ok. */
static int slot_cost_check(uint8_t alg, uint32_t ops, uint32_t mem_kib, int weak_ok)
{
	if (ops < crypto_pwhash_OPSLIMIT_MIN || ops > SLOT_OPS_MAX || mem_kib > SLOT_MEM_KIB_MAX ||
	    mem_kib < (crypto_pwhash_MEMLIMIT_MIN >> 10) || (uint64_t)ops * mem_kib > SLOT_WORK_MAX)
		return amber_fail(AMBER_ECORRUPT, "key slot asks for %u Argon2id passes over %u KiB "
				  "(accepted: at most %u passes, %u KiB, and %llu KiB-passes)",
				  ops, mem_kib, SLOT_OPS_MAX, SLOT_MEM_KIB_MAX,
				  (unsigned long long)SLOT_WORK_MAX);
	if (weak_ok)
		return 0;
	if (alg == SLOT_ALG_ARGON2ID13_TEST)
		return amber_fail(AMBER_ECORRUPT, "key slot uses the insecure test KDF profile "
				  "(%u pass, %u KiB): refused (only test suites accept it)", ops,
				  mem_kib);
	if (ops < SLOT_OPS_MIN || mem_kib < SLOT_MEM_KIB_MIN)
		return amber_fail(AMBER_ECORRUPT, "key slot has a weak Argon2id cost (%u passes, "
				  "%u KiB; the minimum is %u passes, %u KiB): refused", ops, mem_kib,
				  SLOT_OPS_MIN, SLOT_MEM_KIB_MIN);
	return 0;
}

/* Validate a slot's structure and read its cost, before any expensive work. */
static int slot_parse(const uint8_t *s, size_t len, uint32_t *ops, uint32_t *mem_kib,
		      int weak_ok)
{
	if (len != SLOT_LEN || memcmp(s, SLOT_MAGIC, SLOT_MAGIC_LEN) != 0)
		return amber_fail(AMBER_ECORRUPT, "key slot is malformed (%zu bytes, expected a "
				  "%zu-byte " SLOT_MAGIC " slot)", len, (size_t)SLOT_LEN);
	if (s[8] != SLOT_KIND_PASSPHRASE ||
	    (s[9] != SLOT_ALG_ARGON2ID13 && s[9] != SLOT_ALG_ARGON2ID13_TEST))
		return amber_fail(AMBER_ECORRUPT, "key slot of unknown kind %u / algorithm %u",
				  s[8], s[9]);
	*ops = get_le32(s + 10);
	*mem_kib = get_le32(s + 14);
	return slot_cost_check(s[9], *ops, *mem_kib, weak_ok);
}

int amber_keyslot_check(const uint8_t *slot, size_t slot_len)
{
	uint32_t ops, mem_kib;

	return slot_parse(slot, slot_len, &ops, &mem_kib, 1);
}

int amber_keyslot_weak(const uint8_t *slot, size_t slot_len)
{
	uint32_t ops, mem_kib;

	int weak = slot_parse(slot, slot_len, &ops, &mem_kib, 1) == 0 &&
		   slot_parse(slot, slot_len, &ops, &mem_kib, 0) < 0;

	amber_error_clear();
	return weak;
}

static int slot_unseal(amber_keys *k, const uint8_t *s, const uint8_t kek[AMBER_KEY_BYTES])
{
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(k->master, NULL, NULL, s + SLOT_CT_OFF,
						       SLOT_LEN - SLOT_CT_OFF, s, SLOT_CT_OFF,
						       s + SLOT_NONCE_OFF, kek) != 0)
		return amber_fail(AMBER_EBADKEY,
				  "passphrase does not open any key slot of this archive");
	return 0;
}

int amber_keyslot_open(amber_keys **out, const uint8_t *slot, size_t slot_len,
		       const uint8_t *pass, size_t pass_len, int weak_ok)
{
	uint8_t kek[AMBER_KEY_BYTES];
	uint32_t ops = 0, mem_kib = 0;
	amber_keys *k = NULL;
	int rc;

	*out = NULL;
	rc = slot_parse(slot, slot_len, &ops, &mem_kib, weak_ok);
	if (rc < 0)
		return rc;
	rc = keys_alloc(&k);
	if (rc < 0)
		return rc;
	rc = derive_kek(kek, pass, pass_len, slot + SLOT_SALT_OFF, ops, mem_kib);
	if (rc == 0)
		rc = slot_unseal(k, slot, kek);
	sodium_memzero(kek, sizeof(kek));
	if (rc < 0) {
		sodium_free(k);
		return rc;
	}
	keys_derive(k);
	*out = k;
	return 0;
}

void amber_name_token(char out[AMBER_TOKEN_HEXSZ + 1], const amber_keys *k, const void *name,
		      size_t len)
{
	uint8_t h[AMBER_TOKEN_HEXSZ / 2];

	crypto_generichash(h, sizeof(h), name, len, k ? k->token_key : NULL,
			   k ? sizeof(k->token_key) : 0);
	sodium_bin2hex(out, AMBER_TOKEN_HEXSZ + 1, h, sizeof(h));
}

/*
 * SHA-256 over cache_key || data.  This hash runs over every byte of every
 * changed file on each snapshot (the chunk cache's key), and with the CPU's
 * SHA extensions OpenSSL's SHA-256 is about twice as fast as BLAKE2b here.
 * A fixed-length secret prefix makes it a keyed PRF for equality lookups;
 * length extension is irrelevant to that use.
 */
void amber_content_hash(uint8_t out[32], const amber_keys *k, const void *data, size_t len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = 0;

	/* only out of memory can fail here, for a few hundred bytes */
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    (k && EVP_DigestUpdate(ctx, k->cache_key, sizeof(k->cache_key)) != 1) ||
	    EVP_DigestUpdate(ctx, data, len) != 1 || EVP_DigestFinal_ex(ctx, out, &n) != 1)
		abort();
	EVP_MD_CTX_free(ctx);
}

void amber_random(void *out, size_t n)
{
	randombytes_buf(out, n);
}
