/* Key material: subkeys, passphrase key slots, name tokens. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "error.h"
#include "keys.h"

/* Assert that a libamber call succeeds, printing its error message if not. */
#define OK(call)                                                                       \
	do {                                                                           \
		int rc_ = (call);                                                      \
		cr_assert_eq(rc_, 0, "%s -> %d: %s", #call, rc_, amber_error_last());  \
	} while (0)

#define PASS ((const uint8_t *)"correct horse battery staple")
#define PASS_LEN 28
#define SLOT_LEN 106
#define OPS_OFF 10
#define MEM_OFF 14

static void setup(void)
{
	cr_assert_geq(sodium_init(), 0);
}

TestSuite(keys, .init = setup);

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void assert_same_keys(const amber_keys *a, const amber_keys *b)
{
	cr_assert_eq(memcmp(a, b, sizeof(*a)), 0, "keys differ");
}

static void seal_new(amber_keys **k, uint8_t **slot, size_t *len)
{
	OK(amber_keys_generate(k));
	OK(amber_keyslot_seal(slot, len, *k, PASS, PASS_LEN, AMBER_KDF_TEST));
	cr_assert_eq(*len, SLOT_LEN);
}

Test(keys, subkeys_are_distinct_and_reproducible)
{
	amber_keys *a = NULL, *b = NULL;
	const uint8_t *sub[7];

	OK(amber_keys_generate(&a));
	OK(amber_keys_from_master(&b, a->master));
	assert_same_keys(a, b);
	sub[0] = a->master;
	sub[1] = a->nonce_key;
	sub[2] = a->enc_key;
	sub[3] = a->token_key;
	sub[4] = a->chunk_key;
	sub[5] = a->cache_key;
	sub[6] = a->record_key;
	for (int i = 0; i < 7; i++)
		for (int j = i + 1; j < 7; j++)
			cr_assert_neq(memcmp(sub[i], sub[j], AMBER_KEY_BYTES), 0,
				      "keys %d and %d are equal", i, j);
	amber_keys_free(a);
	amber_keys_free(b);
}

Test(keys, generated_master_keys_differ)
{
	amber_keys *a = NULL, *b = NULL;

	OK(amber_keys_generate(&a));
	OK(amber_keys_generate(&b));
	cr_assert_neq(memcmp(a->master, b->master, AMBER_KEY_BYTES), 0);
	amber_keys_free(a);
	amber_keys_free(b);
}

Test(keys, free_accepts_null)
{
	amber_keys_free(NULL);
}

Test(keys, slot_round_trip_recovers_the_master_key)
{
	amber_keys *k = NULL, *opened = NULL;
	uint8_t *slot = NULL;
	size_t len;

	seal_new(&k, &slot, &len);
	cr_assert_null(memmem(slot, len, k->master, AMBER_KEY_BYTES), "master key in the clear");
	OK(amber_keyslot_open(&opened, slot, len, PASS, PASS_LEN, 1));
	assert_same_keys(k, opened);
	amber_keys_free(k);
	amber_keys_free(opened);
	free(slot);
}

Test(keys, slot_layout_matches_the_format)
{
	amber_keys *k = NULL;
	uint8_t *slot = NULL;
	size_t len;

	seal_new(&k, &slot, &len);
	cr_assert_eq(memcmp(slot, "AMBSLOT1", 8), 0);
	cr_assert_eq(slot[8], 1, "kind");
	cr_assert_eq(slot[9], 2, "alg: Argon2id, labelled as the test profile");
	cr_assert_eq(get_le32(slot + OPS_OFF), crypto_pwhash_OPSLIMIT_MIN);
	cr_assert_eq(get_le32(slot + MEM_OFF), crypto_pwhash_MEMLIMIT_MIN / 1024);
	amber_keys_free(k);
	free(slot);
}

Test(keys, default_cost_is_three_passes_and_64_mib)
{
	amber_keys *k = NULL;
	uint8_t *slot = NULL;
	size_t len;

	OK(amber_keys_generate(&k));
	OK(amber_keyslot_seal(&slot, &len, k, PASS, PASS_LEN, AMBER_KDF_DEFAULT));
	cr_assert_eq(slot[9], 1, "alg: Argon2id");
	cr_assert_eq(get_le32(slot + OPS_OFF), 3);
	cr_assert_eq(get_le32(slot + MEM_OFF), 64 * 1024);
	amber_keys_free(k);
	free(slot);
}

Test(keys, sealing_twice_gives_different_slots)
{
	amber_keys *k = NULL;
	uint8_t *a = NULL, *b = NULL;
	size_t la, lb;

	seal_new(&k, &a, &la);
	OK(amber_keyslot_seal(&b, &lb, k, PASS, PASS_LEN, AMBER_KDF_TEST));
	cr_assert_neq(memcmp(a, b, la), 0, "salt and nonce must be fresh");
	amber_keys_free(k);
	free(a);
	free(b);
}

Test(keys, wrong_passphrase_is_bad_key)
{
	amber_keys *k = NULL, *opened = NULL;
	uint8_t *slot = NULL;
	size_t len;
	int rc;

	seal_new(&k, &slot, &len);
	rc = amber_keyslot_open(&opened, slot, len, (const uint8_t *)"correct horse battery stapl",
				PASS_LEN - 1, 1);
	cr_assert_eq(rc, AMBER_EBADKEY, "rc %d: %s", rc, amber_error_last());
	cr_assert_null(opened);
	cr_assert_neq(strstr(amber_error_last(), "passphrase"), NULL);
	rc = amber_keyslot_open(&opened, slot, len, (const uint8_t *)"", 0, 1);
	cr_assert_eq(rc, AMBER_EBADKEY);
	amber_keys_free(k);
	free(slot);
}

Test(keys, corrupted_slot_never_opens)
{
	amber_keys *k = NULL, *opened = NULL;
	uint8_t *slot = NULL;
	size_t len;
	int rc;

	seal_new(&k, &slot, &len);
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			slot[i] ^= (uint8_t)(1u << bit);
			rc = amber_keyslot_open(&opened, slot, len, PASS, PASS_LEN, 1);
			cr_assert(rc == AMBER_ECORRUPT || rc == AMBER_EBADKEY,
				  "flip of bit %d at %zu: rc %d (%s)", bit, i, rc,
				  amber_error_last());
			cr_assert_null(opened);
			slot[i] ^= (uint8_t)(1u << bit);
		}
	}
	amber_keys_free(k);
	free(slot);
}

Test(keys, truncated_or_extended_slot_is_corrupt)
{
	amber_keys *k = NULL, *opened = NULL;
	uint8_t *slot = NULL, big[SLOT_LEN + 1];
	size_t len;

	seal_new(&k, &slot, &len);
	for (size_t l = 0; l < len; l++)
		cr_assert_eq(amber_keyslot_open(&opened, slot, l, PASS, PASS_LEN, 1), AMBER_ECORRUPT,
			     "truncated to %zu", l);
	memcpy(big, slot, len);
	big[len] = 0;
	cr_assert_eq(amber_keyslot_open(&opened, big, len + 1, PASS, PASS_LEN, 1), AMBER_ECORRUPT);
	amber_keys_free(k);
	free(slot);
}

static int open_with_cost(const uint8_t *slot, uint32_t ops, uint32_t mem_kib)
{
	uint8_t copy[SLOT_LEN];
	amber_keys *opened = NULL;
	int rc;

	memcpy(copy, slot, SLOT_LEN);
	put_le32(copy + OPS_OFF, ops);
	put_le32(copy + MEM_OFF, mem_kib);
	rc = amber_keyslot_open(&opened, copy, SLOT_LEN, PASS, PASS_LEN, 1);
	amber_keys_free(opened);
	return rc;
}

/*
 * ECORRUPT (not AMBER_ERROR from a failed allocation, not EBADKEY after a
 * long Argon2id run) shows the slot was refused before Argon2id started.
 */
Test(keys, absurd_cost_is_refused_before_argon2, .timeout = 10)
{
	amber_keys *k = NULL;
	uint8_t *slot = NULL;
	size_t len;
	uint32_t ops = crypto_pwhash_OPSLIMIT_MIN, mem = crypto_pwhash_MEMLIMIT_MIN / 1024;

	seal_new(&k, &slot, &len);
	cr_assert_eq(open_with_cost(slot, ops, 0xffffffffu), AMBER_ECORRUPT, "%s",
		     amber_error_last());
	cr_assert_eq(open_with_cost(slot, ops, (4u << 20) + 1), AMBER_ECORRUPT);
	cr_assert_eq(open_with_cost(slot, ops, 0), AMBER_ECORRUPT);
	cr_assert_eq(open_with_cost(slot, 101, mem), AMBER_ECORRUPT);
	cr_assert_eq(open_with_cost(slot, 0xffffffffu, mem), AMBER_ECORRUPT);
	cr_assert_eq(open_with_cost(slot, 0, mem), AMBER_ECORRUPT);
	/* In-range but altered cost: authenticated data, so the slot does not open. */
	cr_assert_eq(open_with_cost(slot, ops + 1, mem), AMBER_EBADKEY);
	amber_keys_free(k);
	free(slot);
}

Test(keys, unknown_kind_or_algorithm_is_corrupt)
{
	amber_keys *k = NULL, *opened = NULL;
	uint8_t *slot = NULL;
	size_t len;

	seal_new(&k, &slot, &len);
	slot[8] = 2;
	cr_assert_eq(amber_keyslot_open(&opened, slot, len, PASS, PASS_LEN, 1), AMBER_ECORRUPT);
	slot[8] = 1;
	slot[9] = 3;
	cr_assert_eq(amber_keyslot_open(&opened, slot, len, PASS, PASS_LEN, 1), AMBER_ECORRUPT);
	amber_keys_free(k);
	free(slot);
}

static int is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[n] == '\0';
}

Test(keys, tokens_equal_for_equal_names_and_differ_between_keys)
{
	amber_keys *a = NULL, *b = NULL;
	char t1[AMBER_TOKEN_HEXSZ + 1], t2[AMBER_TOKEN_HEXSZ + 1], t3[AMBER_TOKEN_HEXSZ + 1];

	OK(amber_keys_generate(&a));
	OK(amber_keys_generate(&b));
	amber_name_token(t1, a, "ledger.csv", 10);
	amber_name_token(t2, a, "ledger.csv", 10);
	amber_name_token(t3, b, "ledger.csv", 10);
	cr_assert(is_lower_hex(t1, AMBER_TOKEN_HEXSZ), "token '%s'", t1);
	cr_assert_str_eq(t1, t2);
	cr_assert_str_neq(t1, t3);
	amber_name_token(t2, a, "ledger.csx", 10);
	cr_assert_str_neq(t1, t2);
	amber_name_token(t2, NULL, "ledger.csv", 10);
	cr_assert_str_neq(t1, t2, "keyed token equals the unkeyed one");
	amber_keys_free(a);
	amber_keys_free(b);
}

Test(keys, unkeyed_token_is_plain_blake2b_128)
{
	char t[AMBER_TOKEN_HEXSZ + 1], want[AMBER_TOKEN_HEXSZ + 1];
	uint8_t h[16];

	crypto_generichash(h, 16, (const uint8_t *)"a\xff" "b", 3, NULL, 0);
	sodium_bin2hex(want, sizeof(want), h, 16);
	amber_name_token(t, NULL, "a\xff" "b", 3);
	cr_assert_str_eq(t, want);
	amber_name_token(t, NULL, "", 0);
	cr_assert(is_lower_hex(t, AMBER_TOKEN_HEXSZ));
}

/* The format's token: BLAKE2b-128 of the name keyed with token_key, the
 * same from the kept keyed state as from one call, for names of every
 * length around a BLAKE2b block. */
Test(keys, keyed_token_is_blake2b_128_keyed_with_the_token_key)
{
	amber_keys *k = NULL;
	char t[AMBER_TOKEN_HEXSZ + 1], want[AMBER_TOKEN_HEXSZ + 1];
	uint8_t h[16], name[300];

	OK(amber_keys_generate(&k));
	for (size_t i = 0; i < sizeof(name); i++)
		name[i] = (uint8_t)(i * 7 + 1);
	for (size_t len = 0; len < sizeof(name); len += len < 140 ? 1 : 37) {
		crypto_generichash(h, 16, name, len, k->token_key, sizeof(k->token_key));
		sodium_bin2hex(want, sizeof(want), h, 16);
		amber_name_token(t, k, name, len);
		cr_assert_str_eq(t, want, "name of %zu bytes", len);
	}
	amber_keys_free(k);
}

Test(keys, content_hash_is_keyed)
{
	amber_keys *a = NULL, *b = NULL;
	uint8_t h1[32], h2[32], h3[32];

	OK(amber_keys_generate(&a));
	OK(amber_keys_generate(&b));
	amber_content_hash(h1, a, "chunk", 5);
	amber_content_hash(h2, a, "chunk", 5);
	amber_content_hash(h3, b, "chunk", 5);
	cr_assert_eq(memcmp(h1, h2, 32), 0);
	cr_assert_neq(memcmp(h1, h3, 32), 0);
	amber_content_hash(h3, NULL, "chunk", 5);
	cr_assert_neq(memcmp(h1, h3, 32), 0);
	amber_keys_free(a);
	amber_keys_free(b);
}

/* ---- weak key slots ------------------------------------------------------ */

Test(keys, test_profile_slot_opens_only_when_weak_slots_are_accepted)
{
	amber_keys *k = NULL, *opened = NULL;
	uint8_t *slot = NULL;
	size_t len;
	int rc;

	seal_new(&k, &slot, &len);
	rc = amber_keyslot_open(&opened, slot, len, PASS, PASS_LEN, 0);
	cr_assert_eq(rc, AMBER_ECORRUPT, "rc %d: %s", rc, amber_error_last());
	cr_assert_null(opened);
	cr_assert_neq(strstr(amber_error_last(), "test KDF profile"), NULL, "%s",
		      amber_error_last());
	cr_assert_eq(amber_keyslot_weak(slot, len), 1);
	amber_keys_free(k);
	free(slot);
}

/* A slot labelled Argon2id (alg 1) but below the minimum cost: refused
 * before any work unless weak slots are accepted (then the altered,
 * authenticated cost makes it a wrong key). */
Test(keys, slot_below_minimum_cost_is_refused, .timeout = 30)
{
	amber_keys *k = NULL, *opened = NULL;
	uint8_t *slot = NULL;
	size_t len;

	OK(amber_keys_generate(&k));
	OK(amber_keyslot_seal(&slot, &len, k, PASS, PASS_LEN, AMBER_KDF_DEFAULT));
	cr_assert_eq(amber_keyslot_weak(slot, len), 0);
	put_le32(slot + OPS_OFF, 1);
	cr_assert_eq(amber_keyslot_open(&opened, slot, len, PASS, PASS_LEN, 0), AMBER_ECORRUPT);
	cr_assert_neq(strstr(amber_error_last(), "weak"), NULL, "%s", amber_error_last());
	cr_assert_eq(amber_keyslot_weak(slot, len), 1);
	cr_assert_eq(amber_keyslot_open(&opened, slot, len, PASS, PASS_LEN, 1), AMBER_EBADKEY);
	amber_keys_free(k);
	free(slot);
}

/* The environment no longer chooses the cost: only the caller's profile does. */
Test(keys, environment_does_not_weaken_the_default_profile)
{
	amber_keys *k = NULL;
	uint8_t *slot = NULL;
	size_t len;

	cr_assert_eq(setenv("AMBERFS_KDF_INSECURE_FAST", "1", 1), 0);
	OK(amber_keys_generate(&k));
	OK(amber_keyslot_seal(&slot, &len, k, PASS, PASS_LEN, AMBER_KDF_DEFAULT));
	cr_assert_eq(slot[9], 1);
	cr_assert_eq(get_le32(slot + OPS_OFF), 3);
	cr_assert_eq(get_le32(slot + MEM_OFF), 64 * 1024);
	amber_keys_free(k);
	free(slot);
}

/* 100 passes over 4 GiB took 45 s and 4.2 GiB: refused before Argon2id. */
Test(keys, costly_slot_is_refused_at_once, .timeout = 5)
{
	amber_keys *k = NULL;
	uint8_t *slot = NULL;
	size_t len;

	seal_new(&k, &slot, &len);
	cr_assert_eq(open_with_cost(slot, 100, 4u << 20), AMBER_ECORRUPT);
	cr_assert_eq(open_with_cost(slot, 33, 8), AMBER_ECORRUPT);
	cr_assert_eq(open_with_cost(slot, 1, (1u << 20) + 1), AMBER_ECORRUPT);
	cr_assert_eq(open_with_cost(slot, 5, 1u << 20), AMBER_ECORRUPT, "over the work bound");
	amber_keys_free(k);
	free(slot);
}
