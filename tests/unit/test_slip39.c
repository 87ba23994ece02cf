/*
 * SLIP-0039 shares: the published test vectors of the standard, every
 * qualifying subset of generated sets, and the error each way of getting
 * shares wrong gives.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "error.h"
#include "amber_slip39.h"
#include "slip39_vectors.h"

#define OK(call)                                                                       \
	do {                                                                           \
		int rc_ = (call);                                                      \
		cr_assert_eq(rc_, 0, "%s -> %d: %s", #call, rc_, amber_error_last());  \
	} while (0)

/* The call fails with AMBER_EINVAL and a message containing `text`. */
#define FAILS_WITH(call, text)                                                         \
	do {                                                                           \
		int rc_ = (call);                                                      \
		cr_assert_eq(rc_, AMBER_EINVAL, "%s -> %d (%s)", #call, rc_,          \
			     amber_error_last());                                      \
		cr_assert_not_null(strstr(amber_error_last(), (text)),                \
				   "message \"%s\" lacks \"%s\"", amber_error_last(),  \
				   (text));                                            \
	} while (0)

static void setup(void)
{
	cr_assert_geq(sodium_init(), 0);
}

TestSuite(slip39, .init = setup);

static size_t unhex(uint8_t *out, const char *hex)
{
	size_t n = strlen(hex) / 2;

	for (size_t i = 0; i < n; i++) {
		unsigned v;

		cr_assert_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
	return n;
}

static size_t count_mnemonics(const slip39_vector *v)
{
	size_t n = 0;

	while (v->mnemonics[n])
		n++;
	return n;
}

Test(slip39, published_vectors_give_their_secret_or_are_refused)
{
	size_t nvec = sizeof(slip39_vectors) / sizeof(slip39_vectors[0]);

	cr_assert_eq(nvec, 45, "the SLIP-0039 vector file has 45 vectors");
	for (size_t i = 0; i < nvec; i++) {
		const slip39_vector *v = &slip39_vectors[i];
		uint8_t want[AMBER_SLIP39_MAX_SECRET], got[AMBER_SLIP39_MAX_SECRET];
		size_t wlen = unhex(want, v->secret_hex), glen = sizeof(got);
		int rc = amber_slip39_combine(got, &glen, v->mnemonics, count_mnemonics(v),
					      "TREZOR");

		if (wlen == 0) {
			cr_assert_eq(rc, AMBER_EINVAL, "vector \"%s\" was accepted", v->desc);
			continue;
		}
		cr_assert_eq(rc, 0, "vector \"%s\": %s", v->desc, amber_error_last());
		cr_assert_eq(glen, wlen, "vector \"%s\": length %zu", v->desc, glen);
		cr_assert_eq(memcmp(got, want, wlen), 0, "vector \"%s\": wrong secret", v->desc);
	}
}

Test(slip39, vector_refusals_say_why)
{
	static const struct {
		size_t index;
		const char *text;
	} why[] = {
		{1, "fails its checksum"},
		{2, "nonzero padding"},
		{4, "not enough shares"},
		{5, "another share set"},
		{6, "another iteration exponent"},
		{7, "another group threshold"},
		{8, "another group count"},
		{9, "asks for"},
		{10, "differ"},
		{11, "member threshold"},
		{12, "digest mismatch"},
		{13, "not enough shares"},
		{15, "not enough shares"},
		{38, "at least 20"},
		{39, "a length no share has"},
	};

	for (size_t i = 0; i < sizeof(why) / sizeof(why[0]); i++) {
		const slip39_vector *v = &slip39_vectors[why[i].index];
		uint8_t got[AMBER_SLIP39_MAX_SECRET];
		size_t glen = sizeof(got);

		FAILS_WITH(amber_slip39_combine(got, &glen, v->mnemonics, count_mnemonics(v),
						"TREZOR"),
			   why[i].text);
	}
}

/* ---- GF(256) ------------------------------------------------------------ */

/* Carry-less product reduced by x^8 + x^4 + x^3 + x + 1: the plain way. */
static uint8_t ref_mul(uint8_t a, uint8_t b)
{
	unsigned p = 0;

	for (int i = 0; i < 8; i++)
		if (b & (1 << i))
			p ^= (unsigned)a << i;
	for (int i = 15; i >= 8; i--)
		if (p & (1u << i))
			p ^= 0x11Bu << (i - 8);
	return (uint8_t)p;
}

Test(slip39, gf256_matches_reference_tables)
{
	uint8_t exp[255], log[256] = {0};
	uint8_t x = 1;

	/* 3 generates the multiplicative group: exp/log tables as the standard's
	 * reference implementation builds them. */
	for (int i = 0; i < 255; i++) {
		exp[i] = x;
		log[x] = (uint8_t)i;
		x = ref_mul(x, 3);
	}
	cr_assert_eq(x, 1);
	for (unsigned a = 0; a < 256; a++) {
		for (unsigned b = 0; b < 256; b++) {
			uint8_t want = (a && b) ? exp[(log[a] + log[b]) % 255] : 0;

			cr_assert_eq(amber_slip39_gf_mul((uint8_t)a, (uint8_t)b), want,
				     "%u * %u", a, b);
			cr_assert_eq(ref_mul((uint8_t)a, (uint8_t)b), want);
		}
		if (a)
			cr_assert_eq(amber_slip39_gf_inv((uint8_t)a), exp[(255 - log[a]) % 255],
				     "1 / %u", a);
	}
	cr_assert_eq(amber_slip39_gf_inv(0), 0);
}

/* ---- generated sets ----------------------------------------------------- */

typedef struct {
	char **m;
	size_t n;
	uint8_t secret[AMBER_SLIP39_MAX_SECRET];
	size_t len;
	const char *pass;
} set;

static void make_set(set *s, size_t len, const char *pass, uint8_t gt,
		     const amber_slip39_group *groups, size_t ngroups, bool ext)
{
	s->len = len;
	s->pass = pass;
	randombytes_buf(s->secret, len);
	OK(amber_slip39_split(&s->m, &s->n, s->secret, len, pass, gt, groups, ngroups, 0,
			      ext));
}

static void make_simple(set *s, uint8_t k, uint8_t n)
{
	amber_slip39_group g = {k, n};

	make_set(s, 16, NULL, 1, &g, 1, true);
	cr_assert_eq(s->n, n);
}

/* Combine the mnemonics at idx[0..k-1]; 0 or the error code. */
static int combine_some(const set *s, const size_t *idx, size_t k)
{
	const char *pick[AMBER_SLIP39_MAX_GROUPS * AMBER_SLIP39_MAX_MEMBERS];
	uint8_t got[AMBER_SLIP39_MAX_SECRET];
	size_t glen = sizeof(got);
	int rc;

	for (size_t i = 0; i < k; i++)
		pick[i] = s->m[idx[i]];
	rc = amber_slip39_combine(got, &glen, pick, k, s->pass);
	if (rc == 0) {
		cr_assert_eq(glen, s->len);
		cr_assert_eq(memcmp(got, s->secret, s->len), 0, "wrong secret");
	}
	return rc;
}

static void opens(const set *s, const size_t *idx, size_t k)
{
	int rc = combine_some(s, idx, k);

	cr_assert_eq(rc, 0, "combine: %s", amber_error_last());
}

/* Indexes of the members of `mask` (bit i = mnemonic first + i). */
static size_t mask_to_idx(size_t *idx, unsigned mask, size_t first)
{
	size_t k = 0;

	for (unsigned i = 0; i < 16; i++)
		if (mask & (1u << i))
			idx[k++] = first + i;
	return k;
}

Test(slip39, every_k_subset_of_n_opens_and_k_minus_1_does_not)
{
	for (uint8_t n = 1; n <= 6; n++)
		for (uint8_t k = (n == 1 ? 1 : 2); k <= n; k++) {
			set s;

			make_simple(&s, k, n);
			for (unsigned mask = 1; mask < (1u << n); mask++) {
				size_t idx[16], cnt = mask_to_idx(idx, mask, 0);

				if (cnt == k)
					opens(&s, idx, cnt);
				else if (cnt == (size_t)k - 1)
					FAILS_WITH(combine_some(&s, idx, cnt),
						   "not enough shares: add 1 more share(s) of "
						   "group 1");
			}
			amber_slip39_free(s.m, s.n);
		}
}

/* Groups 2-of-3 of (2-of-3, 3-of-5, 2-of-2): all threshold combinations. */
Test(slip39, two_level_groups_open_with_every_qualifying_combination)
{
	static const amber_slip39_group groups[] = {{2, 3}, {3, 5}, {2, 2}};
	static const size_t first[] = {0, 3, 8};
	size_t opened = 0;
	set s;

	make_set(&s, 16, "group pass", 2, groups, 3, false);
	cr_assert_eq(s.n, 10);
	for (unsigned a = 0; a < 3; a++)
		for (unsigned b = a + 1; b < 3; b++)
			for (unsigned ma = 1; ma < (1u << groups[a].member_count); ma++)
				for (unsigned mb = 1; mb < (1u << groups[b].member_count);
				     mb++) {
					size_t idx[16], k;

					if ((unsigned)__builtin_popcount(ma) !=
						    groups[a].member_threshold ||
					    (unsigned)__builtin_popcount(mb) !=
						    groups[b].member_threshold)
						continue;
					k = mask_to_idx(idx, ma, first[a]);
					k += mask_to_idx(idx + k, mb, first[b]);
					opens(&s, idx, k);
					opened++;
				}
	cr_assert_eq(opened, 3 * 10 + 3 * 1 + 10 * 1);
	amber_slip39_free(s.m, s.n);
}

Test(slip39, one_complete_group_of_two_needed_says_so)
{
	static const amber_slip39_group groups[] = {{2, 3}, {3, 5}, {2, 2}};
	size_t one_group[] = {3, 4, 5}, partial[] = {3, 4, 5, 0};
	set s;

	make_set(&s, 16, NULL, 2, groups, 3, true);
	FAILS_WITH(combine_some(&s, one_group, 3),
		   "1 of the 2 groups needed are complete; add shares of 1 more group");
	FAILS_WITH(combine_some(&s, partial, 4), "add 1 more share(s) of group 1 (it has 1 of");
	amber_slip39_free(s.m, s.n);
}

Test(slip39, duplicated_share_is_named)
{
	set s;
	size_t idx[] = {1, 1};

	make_simple(&s, 2, 3);
	FAILS_WITH(combine_some(&s, idx, 2), "share 2 is a duplicate of share 1");
	amber_slip39_free(s.m, s.n);
}

/* Copy of mnemonic m with word `pos` (0-based) replaced by `word`. */
static char *replace_word(const char *m, size_t pos, const char *word)
{
	size_t cap = strlen(m) + 16, used = 0;
	char *out = calloc(1, cap);
	const char *p = m;

	cr_assert_not_null(out);
	for (size_t i = 0; *p; i++) {
		int wl = (int)strcspn(p, " ");

		used += (size_t)snprintf(out + used, cap - used, "%s%.*s", i ? " " : "",
					 i == pos ? (int)strlen(word) : wl, i == pos ? word : p);
		p += wl;
		p += (*p == ' ');
	}
	return out;
}

/* Word pos (0-based) of mnemonic m, into w. */
static void word_of(char *w, const char *m, size_t pos)
{
	const char *p = m;

	for (size_t i = 0; i < pos; i++)
		p += strcspn(p, " ") + 1;
	snprintf(w, AMBER_SLIP39_WORD_MAX + 1, "%.*s", (int)strcspn(p, " "), p);
}

/* The first two words hold the identifier (and flag and exponent). */
static bool same_identifier(const char *m1, const char *m2)
{
	char a[AMBER_SLIP39_WORD_MAX + 1], b[AMBER_SLIP39_WORD_MAX + 1];

	for (size_t i = 0; i < 2; i++) {
		word_of(a, m1, i);
		word_of(b, m2, i);
		if (strcmp(a, b))
			return false;
	}
	return true;
}

Test(slip39, share_of_another_set_is_named)
{
	set a, b;
	const char *pick[2];
	uint8_t got[AMBER_SLIP39_MAX_SECRET];
	size_t glen = sizeof(got);

	make_simple(&a, 2, 3);
	make_simple(&b, 2, 3);
	while (same_identifier(a.m[0], b.m[0])) { /* 1 in 32768 */
		amber_slip39_free(b.m, b.n);
		make_simple(&b, 2, 3);
	}
	pick[0] = a.m[0];
	pick[1] = b.m[1];
	FAILS_WITH(amber_slip39_combine(got, &glen, pick, 2, NULL),
		   "share 2 is from another share set than share 1");
	amber_slip39_free(a.m, a.n);
	amber_slip39_free(b.m, b.n);
}

Test(slip39, mistyped_word_is_named_with_its_position)
{
	set s;
	char *bad;
	const char *pick[2];
	uint8_t got[AMBER_SLIP39_MAX_SECRET];
	size_t glen = sizeof(got);

	make_simple(&s, 2, 3);
	bad = replace_word(s.m[2], 6, "acadmy");
	pick[0] = s.m[0];
	pick[1] = bad;
	FAILS_WITH(amber_slip39_combine(got, &glen, pick, 2, NULL),
		   "share 2, word 7 \"acadmy\" is not a SLIP-0039 word");
	free(bad);
	amber_slip39_free(s.m, s.n);
}

Test(slip39, word_changed_to_another_list_word_fails_the_checksum)
{
	set s;
	char w[AMBER_SLIP39_WORD_MAX + 1], *bad;
	const char *pick[2];
	uint8_t got[AMBER_SLIP39_MAX_SECRET];
	size_t glen = sizeof(got);

	make_simple(&s, 2, 3);
	word_of(w, s.m[1], 10);
	bad = replace_word(s.m[1], 10, strcmp(w, "academic") ? "academic" : "acid");
	pick[0] = bad;
	pick[1] = s.m[2];
	FAILS_WITH(amber_slip39_combine(got, &glen, pick, 2, NULL),
		   "share 1 fails its checksum: a word is mistyped (a valid word, but not the "
		   "one written): check each word against the share");
	free(bad);
	amber_slip39_free(s.m, s.n);
}

Test(slip39, swapped_words_fail_the_checksum)
{
	set s;
	char w1[AMBER_SLIP39_WORD_MAX + 1], w2[AMBER_SLIP39_WORD_MAX + 1], *t, *bad;
	const char *pick[2];
	uint8_t got[AMBER_SLIP39_MAX_SECRET];
	size_t glen = sizeof(got), pos = 5;

	make_simple(&s, 2, 3);
	for (;; pos++) {
		word_of(w1, s.m[0], pos);
		word_of(w2, s.m[0], pos + 1);
		if (strcmp(w1, w2))
			break;
	}
	t = replace_word(s.m[0], pos, w2);
	bad = replace_word(t, pos + 1, w1);
	pick[0] = s.m[1];
	pick[1] = bad;
	char want[128];

	snprintf(want, sizeof(want), "share 2 fails its checksum: words %zu and %zu look "
		 "swapped: put them back in order", pos + 1, pos + 2);
	FAILS_WITH(amber_slip39_combine(got, &glen, pick, 2, NULL), want);
	free(t);
	free(bad);
	amber_slip39_free(s.m, s.n);
}

static void round_trip(size_t len, const char *pass, bool ext)
{
	amber_slip39_group g = {3, 5};
	size_t idx[] = {4, 0, 2};
	set s;

	make_set(&s, len, pass, 1, &g, 1, ext);
	opens(&s, idx, 3);
	amber_slip39_free(s.m, s.n);
}

Test(slip39, round_trip_16_and_32_bytes_with_and_without_passphrase)
{
	for (int ext = 0; ext < 2; ext++) {
		round_trip(16, NULL, ext);
		round_trip(16, "", ext);
		round_trip(16, "correct horse battery staple", ext);
		round_trip(32, NULL, ext);
		round_trip(32, "TREZOR", ext);
		round_trip(64, "x", ext);
	}
}

Test(slip39, wrong_passphrase_gives_another_secret)
{
	amber_slip39_group g = {1, 1};
	uint8_t got[AMBER_SLIP39_MAX_SECRET];
	size_t glen = sizeof(got);
	set s;

	make_set(&s, 32, "right", 1, &g, 1, true);
	OK(amber_slip39_combine(got, &glen, (const char *const *)s.m, 1, "wrong"));
	cr_assert_eq(glen, 32);
	cr_assert_neq(memcmp(got, s.secret, 32), 0);
	amber_slip39_free(s.m, s.n);
}

Test(slip39, words_match_in_any_case_and_spacing)
{
	amber_slip39_group g = {1, 1};
	uint8_t got[AMBER_SLIP39_MAX_SECRET];
	size_t glen = sizeof(got);
	char *m;
	const char *pick[1];
	set s;

	make_set(&s, 16, NULL, 1, &g, 1, false);
	m = calloc(1, strlen(s.m[0]) * 2 + 4);
	cr_assert_not_null(m);
	m[0] = '\n';
	for (size_t i = 0, j = 1; s.m[0][i]; i++) {
		char c = s.m[0][i];

		m[j++] = c == ' ' ? '\t' : (char)(i % 2 ? c - 32 : c);
		if (c == ' ')
			m[j++] = ' ';
	}
	pick[0] = m;
	OK(amber_slip39_combine(got, &glen, pick, 1, NULL));
	cr_assert_eq(memcmp(got, s.secret, 16), 0);
	free(m);
	amber_slip39_free(s.m, s.n);
}

Test(slip39, bad_split_parameters_are_refused)
{
	uint8_t secret[32] = {0};
	amber_slip39_group ok = {2, 3}, one_of_two = {1, 2}, over = {4, 3};
	char **m = NULL;
	size_t n = 0;

	FAILS_WITH(amber_slip39_split(&m, &n, secret, 15, NULL, 1, &ok, 1, 0, true),
		   "15-byte secret");
	FAILS_WITH(amber_slip39_split(&m, &n, secret, 18, "é", 1, &ok, 1, 0, true),
		   "printable ASCII");
	FAILS_WITH(amber_slip39_split(&m, &n, secret, 16, NULL, 2, &ok, 1, 0, true),
		   "group threshold 2 of 1");
	FAILS_WITH(amber_slip39_split(&m, &n, secret, 16, NULL, 1, &one_of_two, 1, 0, true),
		   "use 1 of 1");
	FAILS_WITH(amber_slip39_split(&m, &n, secret, 16, NULL, 1, &over, 1, 0, true),
		   "4 of 3 members");
	FAILS_WITH(amber_slip39_split(&m, &n, secret, 16, NULL, 1, &ok, 1, 16, true),
		   "iteration exponent 16");
	cr_assert_null(m);
	cr_assert_eq(n, 0);
}

Test(slip39, iteration_exponent_round_trips)
{
	amber_slip39_group g = {1, 1};
	uint8_t secret[16], got[AMBER_SLIP39_MAX_SECRET];
	size_t glen = sizeof(got), n;
	char **m;

	randombytes_buf(secret, sizeof(secret));
	OK(amber_slip39_split(&m, &n, secret, 16, "p", 1, &g, 1, 2, false));
	OK(amber_slip39_combine(got, &glen, (const char *const *)m, n, "p"));
	cr_assert_eq(memcmp(got, secret, 16), 0);
	amber_slip39_free(m, n);
}

/* sodium_malloc blocks end at a guard page: the pointer array must still be aligned. */
Test(slip39, mnemonic_array_is_aligned_for_every_count)
{
	uint8_t secret[16] = {1};

	for (uint8_t c = 1; c <= AMBER_SLIP39_MAX_MEMBERS; c++) {
		amber_slip39_group g = {c == 1 ? 1 : 2, c};
		char **m;
		size_t n;

		OK(amber_slip39_split(&m, &n, secret, sizeof(secret), NULL, 1, &g, 1, 0, true));
		cr_assert_eq((uintptr_t)m % _Alignof(char *), 0, "%u shares: misaligned", c);
		amber_slip39_free(m, n);
	}
}
