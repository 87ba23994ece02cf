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
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Set once a key could not be locked in memory (see amber_key_memory_unlocked). */
static atomic_int keys_unlocked;

int amber_key_memory_unlocked(void)
{
	return atomic_load(&keys_unlocked);
}

/*
 * sodium_malloc() tries to lock its pages but goes on silently when it
 * cannot (RLIMIT_MEMLOCK, no CAP_IPC_LOCK): lock them again here and
 * remember a failure, so that the program can say so once.
 */
static int keys_alloc(amber_keys **out)
{
	if (ensure_sodium() < 0)
		return AMBER_ERROR;
	*out = sodium_malloc(sizeof(**out));
	if (!*out)
		return amber_fail(AMBER_ERROR, "out of locked memory for keys");
	if (sodium_mlock(*out, sizeof(**out)) != 0)
		atomic_store(&keys_unlocked, 1);
	return 0;
}

/* Derive the subkeys of k->master, then make the whole struct read-only. */
static void keys_derive(amber_keys *k)
{
	uint8_t *sub[] = {k->nonce_key, k->enc_key, k->token_key,
			  k->chunk_key, k->cache_key, k->record_key};

	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
		crypto_kdf_derive_from_key(sub[i], AMBER_KEY_BYTES, i + 1, kdf_context, k->master);
	crypto_kdf_derive_from_key(k->ino_key, sizeof(k->ino_key), 7, kdf_context, k->master);
	crypto_generichash_init(&k->token_state, k->token_key, sizeof(k->token_key),
				AMBER_TOKEN_HEXSZ / 2);
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

/* ---- version-2 slots: kinds ----------------------------------------------------- */

/*
 * Version-2 slot (AMBSLOT2), integers little-endian:
 *
 *   offset      size  field
 *        0         8  magic    "AMBSLOT2"
 *        8         1  kind     1 passphrase, 2 key file, 3 shares, 4 pkcs11
 *        9         8  id       random at creation, kept by a passphrase change
 *       17         8  created  Unix seconds (u64)
 *       25         1  L        label length (0..64)
 *       26         L  label    printable UTF-8 (no control bytes)
 *     26+L         2  P        params length (u16, at most 1024)
 *     28+L         P  params   per kind (below)
 *   28+L+P         2  S        sealed length (u16, at most 4096)
 *   30+L+P         S  sealed   per kind
 *
 * Kinds 1-3 seal the master key the same way: sealed = nonce (24) ||
 * XChaCha20-Poly1305-IETF(kek, nonce, master) (48), with the associated
 * data being every byte of the slot before the ciphertext (header, label,
 * params, S and nonce), so nothing of the slot can be altered without it
 * failing to open.  Their params start with an alg byte and a 16-byte
 * salt; the kek is:
 *
 *   1 passphrase  alg u8 (1, or 2 = test profile), opslimit u32,
 *                 memlimit KiB u32, salt[16]:
 *                 kek = Argon2id13(passphrase, salt, opslimit, memlimit)
 *   2 key file    alg u8 (1), salt[16]:
 *                 kek = BLAKE2b-256(key = the file's 32 bytes,
 *                                   "amberfs key file" || salt)
 *   3 shares      alg u8 (1), salt[16], set identifier u16, iteration
 *                 exponent u8, group threshold u8, group count G u8, then
 *                 G x (member threshold u8, member count u8):
 *                 kek = BLAKE2b-256(key = the 32-byte recovery secret,
 *                                   "amberfs recovery" || salt)
 *   4 pkcs11      alg u8 (1), the kek wrapped by a token's AES key, and
 *                 the token's identification (below, at parse_pkcs11):
 *                 kek = AES-key-unwrap(token key, wrapped kek)
 *
 * A key file and a recovery secret are 256 random bits, so a fast keyed
 * hash is the whole derivation: nothing to stretch.
 *
 * Each kind is one entry of `kinds` below: a parser of its params (which
 * fills the slot's public description) and an opener.  A new kind adds an
 * entry and nothing else.
 */
#define V2_MAGIC "AMBSLOT2"
#define V2_HDR 26
#define V2_PARAMS_MAX 1024
#define V2_SEALED_MAX 4096
#define V2_MAX (V2_HDR + AMBER_SLOT_LABEL_MAX + 2 + V2_PARAMS_MAX + 2 + V2_SEALED_MAX)
#define AEAD_NONCE crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define AEAD_CT (AMBER_KEY_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES)
#define SALT_BYTES 16

typedef struct slot_view {
	amber_slot_info info;
	const uint8_t *blob;
	size_t len;
	const uint8_t *params;
	size_t params_len;
	const uint8_t *sealed;
	size_t sealed_len;
} slot_view;

typedef struct slot_kind {
	uint8_t kind;
	const char *name;
	/* check params (and sealed's length), fill v->info; AMBER_ECORRUPT */
	int (*parse)(slot_view *v, int weak_ok);
	/* master key into out->master; AMBER_EBADKEY if the secret is wrong */
	int (*open)(amber_keys *out, const slot_view *v, const void *secret, size_t len);
} slot_kind;

static int parse_passphrase(slot_view *v, int weak_ok);
static int parse_keyfile(slot_view *v, int weak_ok);
static int parse_shares(slot_view *v, int weak_ok);
static int parse_pkcs11(slot_view *v, int weak_ok);
static int open_passphrase(amber_keys *out, const slot_view *v, const void *s, size_t len);
static int open_keyfile(amber_keys *out, const slot_view *v, const void *s, size_t len);
static int open_shares(amber_keys *out, const slot_view *v, const void *s, size_t len);
static int open_pkcs11(amber_keys *out, const slot_view *v, const void *s, size_t len);

static const slot_kind kinds[] = {
	{AMBER_SLOT_PASSPHRASE, "passphrase", parse_passphrase, open_passphrase},
	{AMBER_SLOT_KEYFILE, "keyfile", parse_keyfile, open_keyfile},
	{AMBER_SLOT_SHARES, "shares", parse_shares, open_shares},
	{AMBER_SLOT_PKCS11, "pkcs11", parse_pkcs11, open_pkcs11},
};

static const slot_kind *kind_find(int kind)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].kind == kind)
			return &kinds[i];
	return NULL;
}

const char *amber_slot_kind_name(int kind)
{
	const slot_kind *k = kind_find(kind);

	return k ? k->name : "unknown";
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

static int label_ok(const char *label, size_t len)
{
	if (len > AMBER_SLOT_LABEL_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)label[i] < 0x20 || label[i] == 0x7f)
			return 0;
	return 1;
}

/* A version-1 slot's id: the first 8 bytes of BLAKE2b of its blob. */
static void legacy_id(char out[AMBER_SLOT_ID_HEXSZ + 1], const uint8_t *blob, size_t len)
{
	uint8_t h[8];

	crypto_generichash(h, sizeof(h), blob, len, NULL, 0);
	sodium_bin2hex(out, AMBER_SLOT_ID_HEXSZ + 1, h, sizeof(h));
}

static int v2_bad(const char *why)
{
	return amber_fail(AMBER_ECORRUPT, "key slot is malformed (%s)", why);
}

/* The common header of a version-2 slot; the kind's parser does the rest. */
static int v2_split(slot_view *v)
{
	const uint8_t *b = v->blob;
	size_t L, P, S, off;

	if (v->len < V2_HDR + 4 || v->len > V2_MAX)
		return v2_bad("bad length");
	v->info.version = 2;
	v->info.kind = b[8];
	sodium_bin2hex(v->info.id, sizeof(v->info.id), b + 9, 8);
	v->info.created = (int64_t)(get_le64(b + 17) & INT64_MAX);
	L = b[25];
	/* Bounds first: the label is read only once it is known to be there. */
	if (V2_HDR + L + 4 > v->len || !label_ok((const char *)b + V2_HDR, L))
		return v2_bad("bad label");
	memcpy(v->info.label, b + V2_HDR, L);
	v->info.label[L] = '\0';
	off = V2_HDR + L;
	P = (size_t)b[off] | (size_t)b[off + 1] << 8;
	if (P > V2_PARAMS_MAX || off + 2 + P + 2 > v->len)
		return v2_bad("bad params length");
	v->params = b + off + 2;
	v->params_len = P;
	off += 2 + P;
	S = (size_t)b[off] | (size_t)b[off + 1] << 8;
	if (S > V2_SEALED_MAX || off + 2 + S != v->len)
		return v2_bad("bad sealed length");
	v->sealed = b + off + 2;
	v->sealed_len = S;
	return 0;
}

/* Parse a slot of either version without any expensive work. */
static int slot_view_parse(slot_view *v, const uint8_t *blob, size_t len, int weak_ok)
{
	const slot_kind *k;
	uint32_t ops, mem;
	int rc;

	memset(v, 0, sizeof(*v));
	v->blob = blob;
	v->len = len;
	if (len >= SLOT_MAGIC_LEN && memcmp(blob, SLOT_MAGIC, SLOT_MAGIC_LEN) == 0) {
		legacy_id(v->info.id, blob, len);
		v->info.version = 1;
		v->info.kind = AMBER_SLOT_PASSPHRASE;
		if ((rc = slot_parse(blob, len, &ops, &mem, weak_ok)) < 0)
			return rc;
		v->info.kdf_ops = ops;
		v->info.kdf_mem_kib = mem;
		v->info.kdf_test = blob[9] == SLOT_ALG_ARGON2ID13_TEST;
		return 0;
	}
	legacy_id(v->info.id, blob, len);
	if (len < SLOT_MAGIC_LEN || memcmp(blob, V2_MAGIC, SLOT_MAGIC_LEN) != 0)
		return amber_fail(AMBER_ECORRUPT, "key slot is malformed (%zu bytes, no "
				  SLOT_MAGIC " or " V2_MAGIC " magic)", len);
	if ((rc = v2_split(v)) < 0)
		return rc;
	if (!(k = kind_find(v->info.kind)))
		return amber_fail(AMBER_ECORRUPT, "key slot %s is of unknown kind %d (made by a "
				  "newer amberfs?)", v->info.id, v->info.kind);
	return k->parse(v, weak_ok);
}

/* Kinds 1-3: alg, salt, ..., and a 72-byte nonce || ciphertext. */
static int aead_sealed_ok(const slot_view *v)
{
	if (v->sealed_len != AEAD_NONCE + AEAD_CT)
		return v2_bad("sealed part is not 72 bytes");
	return 0;
}

static int parse_passphrase(slot_view *v, int weak_ok)
{
	const uint8_t *p = v->params;
	amber_slot_info *i = &v->info;

	if (v->params_len != 9 + SALT_BYTES || aead_sealed_ok(v) < 0)
		return v2_bad("passphrase slot of the wrong size");
	if (p[0] != SLOT_ALG_ARGON2ID13 && p[0] != SLOT_ALG_ARGON2ID13_TEST)
		return amber_fail(AMBER_ECORRUPT, "key slot %s has unknown KDF %u", i->id, p[0]);
	i->kdf_test = p[0] == SLOT_ALG_ARGON2ID13_TEST;
	i->kdf_ops = get_le32(p + 1);
	i->kdf_mem_kib = get_le32(p + 5);
	return slot_cost_check(p[0], i->kdf_ops, i->kdf_mem_kib, weak_ok);
}

static int parse_keyfile(slot_view *v, int weak_ok)
{
	(void)weak_ok;
	if (v->params_len != 1 + SALT_BYTES || aead_sealed_ok(v) < 0 || v->params[0] != 1)
		return v2_bad("key file slot of the wrong size or algorithm");
	return 0;
}

static int parse_shares(slot_view *v, int weak_ok)
{
	const uint8_t *p = v->params;
	amber_slot_info *i = &v->info;
	size_t base = 1 + SALT_BYTES + 5;

	(void)weak_ok;
	if (v->params_len < base || aead_sealed_ok(v) < 0 || p[0] != 1)
		return v2_bad("share slot of the wrong size or algorithm");
	i->share_set = (uint16_t)(p[17] | p[18] << 8);
	i->share_exponent = p[19];
	i->group_threshold = p[20];
	i->ngroups = p[21];
	if (i->ngroups < 1 || i->ngroups > AMBER_SLIP39_MAX_GROUPS ||
	    v->params_len != base + 2u * i->ngroups || i->group_threshold < 1 ||
	    i->group_threshold > i->ngroups || i->share_exponent > AMBER_SLIP39_MAX_EXPONENT)
		return v2_bad("share slot with impossible thresholds");
	for (size_t g = 0; g < i->ngroups; g++) {
		i->groups[g].member_threshold = p[base + 2 * g];
		i->groups[g].member_count = p[base + 2 * g + 1];
		i->nshares += i->groups[g].member_count;
		if (i->groups[g].member_threshold < 1 ||
		    i->groups[g].member_threshold > i->groups[g].member_count ||
		    i->groups[g].member_count > AMBER_SLIP39_MAX_MEMBERS)
			return v2_bad("share slot with impossible thresholds");
	}
	return 0;
}

/*
 * Kind 4, pkcs11 (amberfs-format(5)): a random kek sealed the master key
 * as for kinds 1-3; a token's AES key wrapped the kek (CKM_AES_KEY_WRAP,
 * RFC 3394).  params:
 *
 *   alg u8 (1), W u8 (40) + wrapped kek, then four u8-length strings:
 *   token serial (<= 32), token label (<= 32), key CKA_ID (<= 64, bytes),
 *   key label (<= 64), and a u16-length URI (<= 512): the one add-pkcs11
 *   was given.  Only the wrapped kek is secret-derived, and only the token
 *   can unwrap it; the rest is for `key list` and never used to find or
 *   load anything (the user names the token with --token-uri).
 */
static int aead_open(amber_keys *out, const slot_view *v, const uint8_t kek[AMBER_KEY_BYTES]);

#define P11_WRAPPED 40
#define P11_URI_MAX 512

struct p11_reader {
	const uint8_t *p, *end;
};

static const uint8_t *p11_take(struct p11_reader *r, size_t n)
{
	const uint8_t *at = r->p;

	if ((size_t)(r->end - r->p) < n)
		return NULL;
	r->p += n;
	return at;
}

/* A u8-length (or u16 if wide) string of at most max bytes, copied as text if out. */
static int p11_string(struct p11_reader *r, char *out, size_t cap, size_t max, int wide,
		      int text)
{
	const uint8_t *n = p11_take(r, wide ? 2 : 1), *b;
	size_t len;

	if (!n)
		return -1;
	len = wide ? (size_t)(n[0] | n[1] << 8) : n[0];
	if (len > max || !(b = p11_take(r, len)))
		return -1;
	for (size_t i = 0; text && i < len; i++)
		if (b[i] < 0x20 || b[i] == 0x7f)
			return -1;
	if (out)
		snprintf(out, cap, "%.*s", (int)len, (const char *)b);
	return 0;
}

static int parse_pkcs11(slot_view *v, int weak_ok)
{
	struct p11_reader r = {v->params, v->params + v->params_len};
	amber_slot_info *i = &v->info;
	const uint8_t *alg = p11_take(&r, 1), *w = p11_take(&r, 1);

	(void)weak_ok;
	if (!alg || !w || *alg != 1 || *w != P11_WRAPPED || !p11_take(&r, P11_WRAPPED) ||
	    aead_sealed_ok(v) < 0)
		return v2_bad("pkcs11 slot of the wrong size or algorithm");
	if (p11_string(&r, i->token_serial, sizeof(i->token_serial), 32, 0, 1) < 0 ||
	    p11_string(&r, i->token_label, sizeof(i->token_label), 32, 0, 1) < 0 ||
	    p11_string(&r, NULL, 0, 64, 0, 0) < 0 ||
	    p11_string(&r, i->token_key, sizeof(i->token_key), 64, 0, 1) < 0 ||
	    p11_string(&r, i->token_uri, sizeof(i->token_uri), P11_URI_MAX, 1, 1) < 0 ||
	    r.p != r.end)
		return v2_bad("pkcs11 slot with malformed token identification");
	return 0;
}

/* The secret is the kek, unwrapped by the token. */
static int open_pkcs11(amber_keys *out, const slot_view *v, const void *s, size_t len)
{
	if (len != AMBER_KEY_BYTES)
		return amber_fail(AMBER_EBADKEY, "a pkcs11 slot's key is %d bytes, not %zu",
				  AMBER_KEY_BYTES, len);
	return aead_open(out, v, s);
}

int amber_slot_pkcs11_wrapped(const uint8_t **wrapped, size_t *wlen, const uint8_t *blob,
			      size_t len)
{
	slot_view v;
	int rc = slot_view_parse(&v, blob, len, 1);

	if (rc < 0)
		return rc;
	if (v.info.kind != AMBER_SLOT_PKCS11)
		return AMBER_EINVAL;
	*wrapped = v.params + 2;
	*wlen = v.params[1];
	return 0;
}

static int aead_open(amber_keys *out, const slot_view *v, const uint8_t kek[AMBER_KEY_BYTES])
{
	size_t ad = v->len - AEAD_CT;

	if (crypto_aead_xchacha20poly1305_ietf_decrypt(out->master, NULL, NULL, v->blob + ad,
						       AEAD_CT, v->blob, ad, v->sealed,
						       kek) != 0)
		return amber_fail(AMBER_EBADKEY, "%s does not open key slot %s",
				  amber_slot_kind_name(v->info.kind), v->info.id);
	return 0;
}

static void hash_kek(uint8_t kek[AMBER_KEY_BYTES], const char *ctx, const uint8_t *salt,
		     const void *secret)
{
	crypto_generichash_state h;

	crypto_generichash_init(&h, secret, AMBER_KEY_BYTES, AMBER_KEY_BYTES);
	crypto_generichash_update(&h, (const uint8_t *)ctx, strlen(ctx));
	crypto_generichash_update(&h, salt, SALT_BYTES);
	crypto_generichash_final(&h, kek, AMBER_KEY_BYTES);
	sodium_memzero(&h, sizeof(h));
}

static int open_hashed(amber_keys *out, const slot_view *v, const char *ctx, const void *s,
		       size_t len)
{
	uint8_t kek[AMBER_KEY_BYTES];
	int rc;

	if (len != AMBER_KEY_BYTES)
		return amber_fail(AMBER_EBADKEY, "a %s secret is %d bytes, not %zu",
				  amber_slot_kind_name(v->info.kind), AMBER_KEY_BYTES, len);
	hash_kek(kek, ctx, v->params + 1, s);
	rc = aead_open(out, v, kek);
	sodium_memzero(kek, sizeof(kek));
	return rc;
}

#define KEYFILE_CTX "amberfs key file"
#define SHARES_CTX "amberfs recovery"

static int open_keyfile(amber_keys *out, const slot_view *v, const void *s, size_t len)
{
	return open_hashed(out, v, KEYFILE_CTX, s, len);
}

static int open_shares(amber_keys *out, const slot_view *v, const void *s, size_t len)
{
	return open_hashed(out, v, SHARES_CTX, s, len);
}

static int open_passphrase(amber_keys *out, const slot_view *v, const void *s, size_t len)
{
	uint8_t kek[AMBER_KEY_BYTES];
	int rc = derive_kek(kek, s, len, v->params + 9, v->info.kdf_ops, v->info.kdf_mem_kib);

	if (rc == 0)
		rc = aead_open(out, v, kek);
	sodium_memzero(kek, sizeof(kek));
	return rc;
}

int amber_slot_describe(amber_slot_info *out, const uint8_t *blob, size_t len)
{
	slot_view v;
	int rc = slot_view_parse(&v, blob, len, 1);

	if (rc == 0) {
		v.info.weak = v.info.kind == AMBER_SLOT_PASSPHRASE &&
			      slot_view_parse(&v, blob, len, 0) < 0;
		amber_error_clear();
	}
	*out = v.info;
	return rc;
}

int amber_slot_open(amber_keys **out, const uint8_t *blob, size_t len, int kind,
		    const void *secret, size_t secret_len, int weak_ok)
{
	slot_view v;
	amber_keys *k = NULL;
	int rc;

	*out = NULL;
	if ((rc = slot_view_parse(&v, blob, len, weak_ok)) < 0)
		return rc;
	if (v.info.kind != kind)
		return amber_fail(AMBER_EBADKEY, "key slot %s is a %s slot",
				  v.info.id, amber_slot_kind_name(v.info.kind));
	if (v.info.version == 1)
		return amber_keyslot_open(out, blob, len, secret, secret_len, weak_ok);
	if ((rc = keys_alloc(&k)) < 0)
		return rc;
	rc = kind_find(kind)->open(k, &v, secret, secret_len);
	if (rc < 0) {
		sodium_free(k);
		return rc;
	}
	keys_derive(k);
	*out = k;
	return 0;
}

int amber_slot_build(uint8_t **blob, size_t *len, int kind, const char *keep_id,
		     const char *label, const uint8_t *params, size_t params_len,
		     const uint8_t *sealed, size_t sealed_len)
{
	size_t L = label ? strlen(label) : 0, n, off;
	uint8_t *b;
	time_t now = time(NULL);

	*blob = NULL;
	*len = 0;
	if (!label_ok(label ? label : "", L))
		return amber_fail(AMBER_EINVAL, "a slot label is at most %d bytes of printable "
				  "text", AMBER_SLOT_LABEL_MAX);
	if (!kind_find(kind) || params_len > V2_PARAMS_MAX || sealed_len > V2_SEALED_MAX)
		return amber_fail(AMBER_EINVAL, "bad key slot kind %d or size", kind);
	if (keep_id && (strlen(keep_id) != AMBER_SLOT_ID_HEXSZ ||
			strspn(keep_id, "0123456789abcdef") != AMBER_SLOT_ID_HEXSZ))
		return amber_fail(AMBER_EINVAL, "bad key slot id '%.20s'", keep_id);
	n = V2_HDR + L + 2 + params_len + 2 + sealed_len;
	if (!(b = malloc(n)))
		return amber_fail(AMBER_ERROR, "out of memory (key slot)");
	memcpy(b, V2_MAGIC, SLOT_MAGIC_LEN);
	b[8] = (uint8_t)kind;
	if (keep_id)
		sodium_hex2bin(b + 9, 8, keep_id, AMBER_SLOT_ID_HEXSZ, NULL, NULL, NULL);
	else
		randombytes_buf(b + 9, 8);
	put_le64(b + 17, now > 0 ? (uint64_t)now : 0);
	b[25] = (uint8_t)L;
	if (L)
		memcpy(b + V2_HDR, label, L);
	off = V2_HDR + L;
	b[off] = (uint8_t)params_len;
	b[off + 1] = (uint8_t)(params_len >> 8);
	if (params_len)
		memcpy(b + off + 2, params, params_len);
	off += 2 + params_len;
	b[off] = (uint8_t)sealed_len;
	b[off + 1] = (uint8_t)(sealed_len >> 8);
	if (sealed_len)
		memcpy(b + off + 2, sealed, sealed_len);
	*blob = b;
	*len = n;
	return 0;
}

/* Fill the nonce and ciphertext of a built kinds-1-3 slot under kek. */
static void aead_seal(uint8_t *b, size_t n, const amber_keys *k,
		      const uint8_t kek[AMBER_KEY_BYTES])
{
	size_t ad = n - AEAD_CT;

	randombytes_buf(b + ad - AEAD_NONCE, AEAD_NONCE);
	crypto_aead_xchacha20poly1305_ietf_encrypt(b + ad, NULL, k->master, AMBER_KEY_BYTES, b,
						   ad, NULL, b + ad - AEAD_NONCE, kek);
}

static int seal_with(uint8_t **blob, size_t *len, const amber_keys *k, int kind,
		     const char *keep_id, const char *label, const uint8_t *params, size_t plen,
		     const uint8_t kek[AMBER_KEY_BYTES])
{
	uint8_t zero[AEAD_NONCE + AEAD_CT] = {0};
	int rc = amber_slot_build(blob, len, kind, keep_id, label, params, plen, zero,
				  sizeof(zero));

	if (rc == 0)
		aead_seal(*blob, *len, k, kek);
	return rc;
}

int amber_slot_seal_pkcs11(uint8_t **blob, size_t *len, const amber_keys *k, const char *label,
			   const uint8_t *params, size_t plen, const uint8_t kek[AMBER_KEY_BYTES])
{
	*blob = NULL;
	return seal_with(blob, len, k, AMBER_SLOT_PKCS11, NULL, label, params, plen, kek);
}

int amber_slot_seal(uint8_t **blob, size_t *len, const amber_keys *k, const amber_slot_new *n)
{
	uint8_t kek[AMBER_KEY_BYTES], params[9 + SALT_BYTES], alg;
	uint32_t ops, mem;
	int rc;

	*blob = NULL;
	if (ensure_sodium() < 0)
		return AMBER_ERROR;
	if (n->kind == AMBER_SLOT_KEYFILE) {
		if (n->secret_len != AMBER_KEYFILE_BYTES)
			return amber_fail(AMBER_EINVAL, "a key file holds %d bytes",
					  AMBER_KEYFILE_BYTES);
		params[0] = 1;
		randombytes_buf(params + 1, SALT_BYTES);
		hash_kek(kek, KEYFILE_CTX, params + 1, n->secret);
		rc = seal_with(blob, len, k, n->kind, n->keep_id, n->label, params,
			       1 + SALT_BYTES, kek);
		sodium_memzero(kek, sizeof(kek));
		return rc;
	}
	if (n->kind != AMBER_SLOT_PASSPHRASE || !n->secret || n->secret_len == 0)
		return amber_fail(AMBER_EINVAL, "a new slot needs a passphrase or a key file");
	slot_cost(n->kdf_profile, &alg, &ops, &mem);
	params[0] = alg;
	put_le32(params + 1, ops);
	put_le32(params + 5, mem);
	randombytes_buf(params + 9, SALT_BYTES);
	if ((rc = derive_kek(kek, n->secret, n->secret_len, params + 9, ops, mem)) == 0)
		rc = seal_with(blob, len, k, n->kind, n->keep_id, n->label, params,
			       sizeof(params), kek);
	sodium_memzero(kek, sizeof(kek));
	return rc;
}

int amber_slot_seal_shares(uint8_t **blob, size_t *len, const amber_keys *k,
			   const uint8_t recovery[AMBER_RECOVERY_BYTES], const char *label,
			   uint16_t set_id, uint8_t exponent, uint8_t group_threshold,
			   const amber_slip39_group *groups, size_t ngroups)
{
	uint8_t kek[AMBER_KEY_BYTES], params[1 + SALT_BYTES + 5 + 2 * AMBER_SLIP39_MAX_GROUPS];
	size_t plen = 1 + SALT_BYTES + 5 + 2 * ngroups;
	int rc;

	if (ngroups < 1 || ngroups > AMBER_SLIP39_MAX_GROUPS)
		return amber_fail(AMBER_EINVAL, "1 to %d groups", AMBER_SLIP39_MAX_GROUPS);
	params[0] = 1;
	randombytes_buf(params + 1, SALT_BYTES);
	params[17] = (uint8_t)set_id;
	params[18] = (uint8_t)(set_id >> 8);
	params[19] = exponent;
	params[20] = group_threshold;
	params[21] = (uint8_t)ngroups;
	for (size_t g = 0; g < ngroups; g++) {
		params[22 + 2 * g] = groups[g].member_threshold;
		params[23 + 2 * g] = groups[g].member_count;
	}
	hash_kek(kek, SHARES_CTX, params + 1, recovery);
	rc = seal_with(blob, len, k, AMBER_SLOT_SHARES, NULL, label, params, plen, kek);
	sodium_memzero(kek, sizeof(kek));
	return rc;
}



/* Both versions: the structure, and a passphrase slot's cost bounds. */
int amber_keyslot_check(const uint8_t *slot, size_t slot_len)
{
	slot_view v;

	return slot_view_parse(&v, slot, slot_len, 1);
}

int amber_keyslot_weak(const uint8_t *slot, size_t slot_len)
{
	amber_slot_info i;

	return amber_slot_describe(&i, slot, slot_len) == 0 && i.weak;
}

void amber_name_token(char out[AMBER_TOKEN_HEXSZ + 1], const amber_keys *k, const void *name,
		      size_t len)
{
	static const char digit[] = "0123456789abcdef";
	uint8_t h[AMBER_TOKEN_HEXSZ / 2];

	if (k) {
		crypto_generichash_state st = k->token_state;

		crypto_generichash_update(&st, name, len);
		crypto_generichash_final(&st, h, sizeof(h));
	} else {
		crypto_generichash(h, sizeof(h), name, len, NULL, 0);
	}
	/* (not sodium_bin2hex, which takes constant time at a multiple of the
	 * cost: a token is public, a git tree entry name, and a listing checks
	 * one per entry) */
	for (size_t i = 0; i < sizeof(h); i++) {
		out[2 * i] = digit[h[i] >> 4];
		out[2 * i + 1] = digit[h[i] & 15];
	}
	out[AMBER_TOKEN_HEXSZ] = '\0';
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
