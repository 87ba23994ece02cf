/*
 * SLIP-0039 shares, bit for bit as the standard specifies.
 *
 * A share is a sequence of 10-bit words (indexes into the word list):
 *
 *   bits  field
 *     15  identifier           random, the same for every share of a set
 *      1  extendable flag      1: the identifier is not part of the salt
 *      4  iteration exponent   e: PBKDF2 runs (10000 << e) / 4 per round
 *      4  group index          0..15
 *      4  group threshold - 1
 *      4  group count - 1
 *      4  member index         0..15
 *      4  member threshold - 1
 *    10w  share value          big-endian, zero-padded at the front to a
 *                              multiple of 10 bits (at most 8 padding bits)
 *     30  checksum             RS1024 over GF(1024) with the customization
 *                              string "shamir" ("shamir_extendable" if ext)
 *
 * The master secret is encrypted with a 4-round Feistel network whose round
 * function is PBKDF2-HMAC-SHA256(i || passphrase, salt || R), salt =
 * "shamir" || identifier (2 bytes) or empty when extendable.  The encrypted
 * secret is split with Shamir over GF(256) (Rijndael polynomial) into the
 * groups, and each group secret into its members.  With a threshold t >= 2,
 * t - 2 shares are random, the share at x = 254 is a 4-byte HMAC-SHA256
 * digest of the secret followed by random bytes, and the secret sits at
 * x = 255; combining checks that digest.
 *
 * Constant time: share values and word indexes are secret.  GF(256)
 * multiplication is a shift-and-mask loop and inversion an exponentiation
 * (a^254), never log/exp tables; word lookups in both directions scan the
 * whole list with masks; the RS1024 checksum applies its generators through
 * masks; digests compare with sodium_memcmp.  Only public facts (share
 * indexes, lengths, thresholds, whether a share is valid) steer branches.
 * Secrets and intermediates live in sodium_malloc memory, wiped on free.
 */
#include "amber_slip39.h"

#include "error.h"

#include <string.h>

#include <sodium.h>

#define META_WORDS 7 /* 4 header words + 3 checksum words */
#define HEADER_WORDS 4
#define CHECKSUM_WORDS 3
#define MIN_WORDS (META_WORDS + (AMBER_SLIP39_MIN_SECRET * 8 + 9) / 10)
#define MAX_WORDS (META_WORDS + (AMBER_SLIP39_MAX_SECRET * 8 + 9) / 10)
#define MAX_SHARES (AMBER_SLIP39_MAX_GROUPS * AMBER_SLIP39_MAX_MEMBERS)
#define MNEMONIC_MAX (MAX_WORDS * (AMBER_SLIP39_WORD_MAX + 1))
#define DIGEST_BYTES 4
#define DIGEST_INDEX 254
#define SECRET_INDEX 255
#define ROUND_ITERATIONS 2500 /* 10000 base iterations over 4 rounds */
#define ROUNDS 4
#define SECRET_MAX AMBER_SLIP39_MAX_SECRET

/*
 * sodium_malloc puts the block right before a guard page, so the pointer is
 * only as aligned as the size is: round sizes of blocks with pointers or
 * size_t fields up to 16.
 */
#define ALIGNED_SIZE(n) (((n) + 15) & ~(size_t)15)

typedef struct {
	uint16_t id;
	uint8_t ext, e, gi, gt, gc, mi, mt;
	size_t nwords;
	size_t len;
	uint8_t value[SECRET_MAX];
} share;

/* ---- GF(256) ---------------------------------------------------------- */

uint8_t amber_slip39_gf_mul(uint8_t a, uint8_t b)
{
	uint8_t r = 0;

	for (int i = 0; i < 8; i++) {
		r ^= (uint8_t)(-(b & 1) & a);
		a = (uint8_t)((a << 1) ^ (-(a >> 7) & 0x1b));
		b >>= 1;
	}
	return r;
}

uint8_t amber_slip39_gf_inv(uint8_t a)
{
	uint8_t r = 1, x = a;

	/* 254 = 0b11111110: the exponent is public, so branching on it is fine. */
	for (int i = 0; i < 8; i++) {
		if ((254 >> i) & 1)
			r = amber_slip39_gf_mul(r, x);
		x = amber_slip39_gf_mul(x, x);
	}
	return r;
}

/*
 * out = f(x) for the polynomial through the k points (xs[i], ys[i]).  The xs
 * are public and distinct; the ys only meet the constant-time multiply.
 */
static void interpolate(uint8_t *out, size_t len, const uint8_t *xs,
			const uint8_t *const *ys, size_t k, uint8_t x)
{
	memset(out, 0, len);
	for (size_t i = 0; i < k; i++) {
		uint8_t num = 1, den = 1, basis;

		for (size_t j = 0; j < k; j++) {
			if (j == i)
				continue;
			num = amber_slip39_gf_mul(num, x ^ xs[j]);
			den = amber_slip39_gf_mul(den, xs[i] ^ xs[j]);
		}
		basis = amber_slip39_gf_mul(num, amber_slip39_gf_inv(den));
		for (size_t b = 0; b < len; b++)
			out[b] ^= amber_slip39_gf_mul(basis, ys[i][b]);
	}
}

/* The first 4 bytes of HMAC-SHA256(key = random part, secret). */
static void make_digest(uint8_t out[DIGEST_BYTES], const uint8_t *rnd, size_t rlen,
			const uint8_t *secret, size_t len)
{
	crypto_auth_hmacsha256_state st;
	uint8_t mac[crypto_auth_hmacsha256_BYTES];

	crypto_auth_hmacsha256_init(&st, rnd, rlen);
	crypto_auth_hmacsha256_update(&st, secret, len);
	crypto_auth_hmacsha256_final(&st, mac);
	memcpy(out, mac, DIGEST_BYTES);
	sodium_memzero(&st, sizeof(st));
	sodium_memzero(mac, sizeof(mac));
}

/* Shares 0..count-1 of secret with threshold t; ds is SECRET_MAX of scratch. */
static void split_secret(uint8_t (*out)[SECRET_MAX], uint8_t t, uint8_t count,
			 const uint8_t *secret, size_t len, uint8_t *ds)
{
	uint8_t xs[AMBER_SLIP39_MAX_MEMBERS];
	const uint8_t *ys[AMBER_SLIP39_MAX_MEMBERS];
	size_t nrand = (size_t)t - 2;

	if (t == 1) {
		for (size_t i = 0; i < count; i++)
			memcpy(out[i], secret, len);
		return;
	}
	for (size_t i = 0; i < nrand; i++) {
		randombytes_buf(out[i], len);
		xs[i] = (uint8_t)i;
		ys[i] = out[i];
	}
	randombytes_buf(ds + DIGEST_BYTES, len - DIGEST_BYTES);
	make_digest(ds, ds + DIGEST_BYTES, len - DIGEST_BYTES, secret, len);
	xs[nrand] = DIGEST_INDEX;
	ys[nrand] = ds;
	xs[nrand + 1] = SECRET_INDEX;
	ys[nrand + 1] = secret;
	for (size_t i = nrand; i < count; i++)
		interpolate(out[i], len, xs, ys, t, (uint8_t)i);
	sodium_memzero(ds, SECRET_MAX);
}

/* The secret behind t shares; -1 (no message) if its digest does not match. */
static int recover_secret(uint8_t *out, size_t len, uint8_t t, const uint8_t *xs,
			  const uint8_t *const *ys, uint8_t *ds)
{
	uint8_t d[DIGEST_BYTES];
	int bad;

	if (t == 1) {
		memcpy(out, ys[0], len);
		return 0;
	}
	interpolate(out, len, xs, ys, t, SECRET_INDEX);
	interpolate(ds, len, xs, ys, t, DIGEST_INDEX);
	make_digest(d, ds + DIGEST_BYTES, len - DIGEST_BYTES, out, len);
	bad = sodium_memcmp(d, ds, DIGEST_BYTES);
	sodium_memzero(d, sizeof(d));
	sodium_memzero(ds, SECRET_MAX);
	return bad ? -1 : 0;
}

/* ---- Feistel encryption with PBKDF2-HMAC-SHA256 ----------------------- */

/*
 * One PBKDF2-HMAC-SHA256 block (outlen <= 32).  The password is given as a
 * one-byte prefix and a string, the salt as a prefix and a body, so no copy
 * of the secret halves is made.  The keyed HMAC state is built once and
 * copied for each iteration.
 */
static void pbkdf2_block(uint8_t *out, size_t outlen, const uint8_t *pass, size_t passlen,
			 const uint8_t *salt, size_t saltlen, const uint8_t *body, size_t bodylen,
			 uint32_t iterations)
{
	static const uint8_t block1[4] = {0, 0, 0, 1};
	crypto_auth_hmacsha256_state key, st;
	uint8_t u[crypto_auth_hmacsha256_BYTES], t[crypto_auth_hmacsha256_BYTES];

	crypto_auth_hmacsha256_init(&key, pass, passlen);
	st = key;
	crypto_auth_hmacsha256_update(&st, salt, saltlen);
	crypto_auth_hmacsha256_update(&st, body, bodylen);
	crypto_auth_hmacsha256_update(&st, block1, sizeof(block1));
	crypto_auth_hmacsha256_final(&st, u);
	memcpy(t, u, sizeof(t));
	for (uint32_t i = 1; i < iterations; i++) {
		st = key;
		crypto_auth_hmacsha256_update(&st, u, sizeof(u));
		crypto_auth_hmacsha256_final(&st, u);
		for (size_t b = 0; b < sizeof(t); b++)
			t[b] ^= u[b];
	}
	memcpy(out, t, outlen);
	sodium_memzero(&key, sizeof(key));
	sodium_memzero(&st, sizeof(st));
	sodium_memzero(u, sizeof(u));
	sodium_memzero(t, sizeof(t));
}

typedef struct {
	uint8_t l[SECRET_MAX / 2], r[SECRET_MAX / 2], f[SECRET_MAX / 2];
	uint8_t salt[8];
	size_t saltlen;
	uint32_t iterations;
	size_t passlen; /* 1 (round number) + passphrase */
	uint8_t pass[];
} feistel_mem;

/*
 * Encrypt (or decrypt) len bytes of in into out; both may be the same.
 * Returns 0 or AMBER_ERROR when out of memory.
 */
static int feistel(uint8_t *out, const uint8_t *in, size_t len, const char *passphrase,
		   const share *params, bool decrypt)
{
	size_t half = len / 2, plen = strlen(passphrase);
	feistel_mem *m = sodium_malloc(ALIGNED_SIZE(sizeof(*m) + 1 + plen));

	if (!m)
		return amber_fail(AMBER_ERROR, "out of memory for the SLIP-0039 passphrase");
	memcpy(m->pass + 1, passphrase, plen);
	m->passlen = 1 + plen;
	m->saltlen = params->ext ? 0 : 8;
	memcpy(m->salt, "shamir", 6);
	m->salt[6] = (uint8_t)(params->id >> 8);
	m->salt[7] = (uint8_t)params->id;
	m->iterations = (uint32_t)ROUND_ITERATIONS << params->e;
	memcpy(m->l, in, half);
	memcpy(m->r, in + half, half);
	for (int step = 0; step < ROUNDS; step++) {
		m->pass[0] = (uint8_t)(decrypt ? ROUNDS - 1 - step : step);
		pbkdf2_block(m->f, half, m->pass, m->passlen, m->salt, m->saltlen, m->r, half,
			     m->iterations);
		for (size_t b = 0; b < half; b++)
			m->f[b] ^= m->l[b];
		memcpy(m->l, m->r, half);
		memcpy(m->r, m->f, half);
	}
	memcpy(out, m->r, half);
	memcpy(out + half, m->l, half);
	sodium_free(m);
	return 0;
}

/* ---- RS1024 checksum ---------------------------------------------------- */

static uint32_t polymod_step(uint32_t chk, uint32_t v)
{
	static const uint32_t gen[10] = {0xE0E040,   0x1C1C080,  0x3838100,  0x7070200,
					 0xE0E0009,  0x1C0C2412, 0x38086C24, 0x3090FC48,
					 0x21B1F890, 0x3F3F120};
	uint32_t b = chk >> 20;

	chk = ((chk & 0xFFFFF) << 10) ^ v;
	for (int i = 0; i < 10; i++)
		chk ^= gen[i] & (0u - ((b >> i) & 1));
	return chk;
}

/* RS1024 polymod of customization string, n words, then `zeros` zero words. */
static uint32_t polymod(bool ext, const uint16_t *w, size_t n, size_t zeros)
{
	const char *cs = ext ? "shamir_extendable" : "shamir";
	uint32_t chk = 1;

	for (const char *p = cs; *p; p++)
		chk = polymod_step(chk, (uint8_t)*p);
	for (size_t i = 0; i < n; i++)
		chk = polymod_step(chk, w[i]);
	for (size_t i = 0; i < zeros; i++)
		chk = polymod_step(chk, 0);
	return chk;
}

/* ---- words <-> share ---------------------------------------------------- */

static size_t value_words(size_t len)
{
	return (len * 8 + 9) / 10;
}

static void bytes_to_words(uint16_t *w, const uint8_t *v, size_t len)
{
	unsigned bits = (unsigned)(value_words(len) * 10 - len * 8); /* leading zeros */
	uint32_t acc = 0;
	size_t k = 0;

	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8) | v[i];
		bits += 8;
		if (bits >= 10) {
			bits -= 10;
			w[k++] = (uint16_t)((acc >> bits) & 1023);
		}
	}
	acc = 0;
}

/* Returns the padding bits (must be zero) in front of the len bytes. */
static uint32_t words_to_bytes(uint8_t *v, const uint16_t *w, size_t nw, size_t len)
{
	unsigned pad = (unsigned)(nw * 10 - len * 8), bits = 0;
	uint32_t acc = 0, padbits = 0;
	size_t k = 0;

	for (size_t i = 0; i < nw; i++) {
		acc = (acc << 10) | w[i];
		bits += 10;
		if (i == 0) {
			padbits = acc >> (10 - pad);
			bits -= pad;
		}
		while (bits >= 8) {
			bits -= 8;
			v[k++] = (uint8_t)(acc >> bits);
		}
	}
	acc = 0;
	return padbits;
}

static size_t encode_words(uint16_t *w, const share *s)
{
	uint32_t a = (uint32_t)s->id << 5 | (uint32_t)s->ext << 4 | s->e;
	uint32_t b = (uint32_t)s->gi << 16 | (uint32_t)(s->gt - 1) << 12 |
		     (uint32_t)(s->gc - 1) << 8 | (uint32_t)s->mi << 4 | (uint32_t)(s->mt - 1);
	size_t n = HEADER_WORDS + value_words(s->len);
	uint32_t chk;

	w[0] = (uint16_t)(a >> 10);
	w[1] = (uint16_t)(a & 1023);
	w[2] = (uint16_t)(b >> 10);
	w[3] = (uint16_t)(b & 1023);
	bytes_to_words(w + HEADER_WORDS, s->value, s->len);
	chk = polymod(s->ext, w, n, CHECKSUM_WORDS) ^ 1;
	for (size_t i = 0; i < CHECKSUM_WORDS; i++)
		w[n + i] = (uint16_t)((chk >> (10 * (2 - i))) & 1023);
	return n + CHECKSUM_WORDS;
}

static void decode_header(share *s, const uint16_t *w)
{
	uint32_t a = (uint32_t)w[0] << 10 | w[1];
	uint32_t b = (uint32_t)w[2] << 10 | w[3];

	s->id = (uint16_t)(a >> 5);
	s->ext = (a >> 4) & 1;
	s->e = a & 15;
	s->gi = (b >> 16) & 15;
	s->gt = (uint8_t)(((b >> 12) & 15) + 1);
	s->gc = (uint8_t)(((b >> 8) & 15) + 1);
	s->mi = (b >> 4) & 15;
	s->mt = (uint8_t)((b & 15) + 1);
}

/* 1 if x == y, else 0, without a branch. */
static uint32_t ct_eq(uint32_t x, uint32_t y)
{
	uint32_t d = x ^ y;

	return (uint32_t)(((uint64_t)d - 1) >> 63);
}

/* Copy word `idx` into out (AMBER_SLIP39_WORD_MAX + 1 bytes), scanning all. */
static void word_at(char *out, uint32_t idx)
{
	memset(out, 0, AMBER_SLIP39_WORD_MAX + 1);
	for (uint32_t i = 0; i < AMBER_SLIP39_WORDS; i++) {
		char m = (char)(0u - ct_eq(i, idx));

		for (size_t k = 0; k <= AMBER_SLIP39_WORD_MAX; k++)
			out[k] |= (char)(amber_slip39_words[i][k] & m);
	}
}

/* Index of a word (lowercase, NUL-padded to 9 bytes) or -1, scanning all. */
static int word_index(const char *padded)
{
	uint32_t found = 0, idx = 0;

	for (uint32_t i = 0; i < AMBER_SLIP39_WORDS; i++) {
		uint32_t diff = 0, eq;

		for (size_t k = 0; k <= AMBER_SLIP39_WORD_MAX; k++)
			diff |= (uint8_t)(padded[k] ^ amber_slip39_words[i][k]);
		eq = ct_eq(diff, 0);
		idx |= i & (0u - eq);
		found |= eq;
	}
	return found ? (int)idx : -1;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static char to_lower(char c)
{
	unsigned u = (unsigned char)c;

	return (char)(u | (uint32_t)((u - 'A') < 26) << 5);
}

/* Look up the word of wlen bytes at p, the pos-th (1-based) of share idx. */
static int lookup_word(uint16_t *out, const char *p, size_t wlen, size_t idx, size_t pos)
{
	char padded[AMBER_SLIP39_WORD_MAX + 1] = {0};
	int w = -1;

	if (wlen <= AMBER_SLIP39_WORD_MAX) {
		for (size_t k = 0; k < wlen; k++)
			padded[k] = to_lower(p[k]);
		w = word_index(padded);
		sodium_memzero(padded, sizeof(padded));
	}
	if (w < 0)
		return amber_fail(AMBER_EINVAL,
				  "share %zu, word %zu \"%.*s\" is not a SLIP-0039 word: "
				  "check its spelling",
				  idx, pos, (int)(wlen > 20 ? 20 : wlen), p);
	*out = (uint16_t)w;
	return 0;
}

/* Split mnemonic m (share idx) into word indexes; at most MAX_WORDS. */
static int tokenize(uint16_t *w, size_t *n, const char *m, size_t idx)
{
	const char *p = m;

	*n = 0;
	for (;;) {
		size_t wlen = 0;
		int rc;

		while (is_space(*p))
			p++;
		if (!*p)
			return 0;
		while (p[wlen] && !is_space(p[wlen]))
			wlen++;
		if (*n == MAX_WORDS)
			return amber_fail(AMBER_EINVAL,
					  "share %zu has more than %d words: it is not a share "
					  "(at most %d bytes of secret are supported)",
					  idx, MAX_WORDS, SECRET_MAX);
		rc = lookup_word(&w[*n], p, wlen, idx, *n + 1);
		if (rc < 0)
			return rc;
		++*n;
		p += wlen;
	}
}

/*
 * A share whose checksum fails: if exchanging two neighbouring words makes
 * it valid, say which (a copying slip); otherwise a word is wrong.  Only
 * public word indexes of a share that is already unusable are tried.
 */
static int checksum_failed(uint16_t *w, size_t n, size_t idx)
{
	for (size_t i = 0; i + 1 < n; i++) {
		uint16_t t = w[i];
		int ok;

		if (w[i] == w[i + 1])
			continue;
		w[i] = w[i + 1];
		w[i + 1] = t;
		ok = polymod((w[1] >> 4) & 1, w, n, 0) == 1;
		w[i + 1] = w[i];
		w[i] = t;
		if (ok)
			return amber_fail(AMBER_EINVAL,
					  "share %zu fails its checksum: words %zu and %zu look "
					  "swapped: put them back in order",
					  idx, i + 1, i + 2);
	}
	return amber_fail(AMBER_EINVAL,
			  "share %zu fails its checksum: a word is mistyped (a valid word, "
			  "but not the one written): check each word against the share",
			  idx);
}

/* Check the length, checksum and padding of share idx's words. */
static int parse_share(share *s, uint16_t *w, size_t n, size_t idx)
{
	size_t vw = n - META_WORDS;

	if (n < MIN_WORDS)
		return amber_fail(AMBER_EINVAL,
				  "share %zu has %zu words, a share has at least %d: a word is "
				  "missing",
				  idx, n, MIN_WORDS);
	if ((vw * 10) % 16 > 8)
		return amber_fail(AMBER_EINVAL,
				  "share %zu has %zu words, a length no share has: a word is "
				  "missing or extra",
				  idx, n);
	if (polymod((w[1] >> 4) & 1, w, n, 0) != 1)
		return checksum_failed(w, n, idx);
	decode_header(s, w);
	s->nwords = n;
	s->len = (vw * 10 - (vw * 10) % 16) / 8;
	if (words_to_bytes(s->value, w + HEADER_WORDS, vw, s->len) != 0)
		return amber_fail(AMBER_EINVAL,
				  "share %zu has nonzero padding bits: it is not a valid share",
				  idx);
	if (s->gt > s->gc)
		return amber_fail(AMBER_EINVAL,
				  "share %zu asks for %u groups of %u: it is not a valid share",
				  idx, s->gt, s->gc);
	return 0;
}

int amber_slip39_identifier(uint16_t *id, const char *mnemonic)
{
	uint16_t w[MAX_WORDS];
	size_t n = 0;
	int rc = tokenize(w, &n, mnemonic, 1);

	if (rc == 0 && n < 2)
		rc = amber_fail(AMBER_EINVAL, "share 1 has %zu words, a share has at least %d: a "
				"word is missing", n, MIN_WORDS);
	if (rc == 0)
		*id = (uint16_t)(((uint32_t)w[0] << 10 | w[1]) >> 5);
	sodium_memzero(w, sizeof(w));
	return rc;
}

/* ---- combine ------------------------------------------------------------ */

typedef struct {
	share shares[MAX_SHARES];
	uint16_t words[MAX_WORDS];
	uint8_t group_secret[AMBER_SLIP39_MAX_GROUPS][SECRET_MAX];
	uint8_t ems[SECRET_MAX];
	uint8_t ds[SECRET_MAX];
	uint8_t count[AMBER_SLIP39_MAX_GROUPS];
	uint8_t mt[AMBER_SLIP39_MAX_GROUPS];
} combine_mem;

static int check_passphrase(const char *passphrase)
{
	for (const char *p = passphrase; *p; p++)
		if (*p < 32 || *p > 126)
			return amber_fail(AMBER_EINVAL,
					  "the share passphrase has a character that is not "
					  "printable ASCII: SLIP-0039 allows only those");
	return 0;
}

/* Share i (0-based) against share 0: one set, one set of parameters. */
static int check_same_set(const share *s, size_t i)
{
	const share *a = s, *b = s + i;
	const char *what = NULL;

	if (a->id != b->id)
		return amber_fail(AMBER_EINVAL,
				  "share %zu is from another share set than share 1 (identifier "
				  "%u, not %u): use only shares made together",
				  i + 1, b->id, a->id);
	if (a->ext != b->ext)
		what = "extendable flag";
	else if (a->e != b->e)
		what = "iteration exponent";
	else if (a->gt != b->gt)
		what = "group threshold";
	else if (a->gc != b->gc)
		what = "group count";
	else if (a->nwords != b->nwords)
		what = "length";
	if (what)
		return amber_fail(AMBER_EINVAL,
				  "share %zu has another %s than share 1: one of them is corrupt "
				  "or from another set",
				  i + 1, what);
	return 0;
}

/* Shares i and j (0-based, same group): same threshold, distinct members. */
static int check_pair(const share *s, size_t i, size_t j)
{
	const share *a = s + i, *b = s + j;

	if (a->gi != b->gi)
		return 0;
	if (a->mt != b->mt)
		return amber_fail(AMBER_EINVAL,
				  "shares %zu and %zu of group %u disagree on its member "
				  "threshold: one of them is corrupt or from another set",
				  i + 1, j + 1, a->gi + 1);
	if (a->mi != b->mi)
		return 0;
	if (sodium_memcmp(a->value, b->value, a->len) == 0)
		return amber_fail(AMBER_EINVAL,
				  "share %zu is a duplicate of share %zu: give each share once, "
				  "and another share of group %u instead",
				  j + 1, i + 1, a->gi + 1);
	return amber_fail(AMBER_EINVAL,
			  "shares %zu and %zu are both member %u of group %u but differ: one "
			  "of them is corrupt or from another set",
			  i + 1, j + 1, a->mi + 1, a->gi + 1);
}

static int parse_all(combine_mem *m, const char *const *mnemonics, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t nw;
		int rc = tokenize(m->words, &nw, mnemonics[i], i + 1);

		if (rc == 0)
			rc = parse_share(&m->shares[i], m->words, nw, i + 1);
		if (rc < 0)
			return rc;
	}
	for (size_t i = 1; i < n; i++) {
		int rc = check_same_set(m->shares, i);

		if (rc < 0)
			return rc;
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++) {
			int rc = check_pair(m->shares, i, j);

			if (rc < 0)
				return rc;
		}
	return 0;
}

/* Say what is missing when fewer than gt groups are complete. */
static int not_enough(const combine_mem *m, uint8_t gt, unsigned complete)
{
	unsigned best = 0, more = 0, have = 0, need = 0;

	for (unsigned g = 0; g < AMBER_SLIP39_MAX_GROUPS; g++) {
		unsigned c = m->count[g], t = m->mt[g];

		if (c > 0 && c < t && (!best || t - c < more)) {
			best = g + 1;
			more = t - c;
			have = c;
			need = t;
		}
	}
	if (best && gt - complete == 1)
		return amber_fail(AMBER_EINVAL,
				  "not enough shares: add %u more share(s) of group %u (it has %u "
				  "of the %u needed)",
				  more, best, have, need);
	if (best)
		return amber_fail(AMBER_EINVAL,
				  "not enough shares: %u of the %u groups needed are complete; "
				  "add %u more share(s) of group %u (it has %u of %u) and "
				  "complete %u more group(s)",
				  complete, gt, more, best, have, need, gt - complete - 1);
	return amber_fail(AMBER_EINVAL,
			  "not enough shares: %u of the %u groups needed are complete; add "
			  "shares of %u more group(s)",
			  complete, gt, gt - complete);
}

/* Recover the secret of group g from its first mt shares. */
static int recover_group(combine_mem *m, size_t n, unsigned g, uint8_t *out)
{
	uint8_t xs[AMBER_SLIP39_MAX_MEMBERS];
	const uint8_t *ys[AMBER_SLIP39_MAX_MEMBERS];
	size_t k = 0;

	for (size_t i = 0; i < n && k < m->mt[g]; i++)
		if (m->shares[i].gi == g) {
			xs[k] = m->shares[i].mi;
			ys[k++] = m->shares[i].value;
		}
	if (recover_secret(out, m->shares[0].len, m->mt[g], xs, ys, m->ds) < 0)
		return amber_fail(AMBER_EINVAL,
				  "the shares of group %u do not combine (digest mismatch): one "
				  "of them is corrupt or from another set",
				  g + 1);
	return 0;
}

/* The encrypted master secret into m->ems. */
static int recover_ems(combine_mem *m, size_t n)
{
	const share *s = m->shares;
	uint8_t xs[AMBER_SLIP39_MAX_GROUPS];
	const uint8_t *ys[AMBER_SLIP39_MAX_GROUPS];
	unsigned complete = 0;

	for (size_t i = 0; i < n; i++) {
		m->count[s[i].gi]++;
		m->mt[s[i].gi] = s[i].mt;
	}
	for (unsigned g = 0; g < AMBER_SLIP39_MAX_GROUPS && complete < s->gt; g++) {
		int rc;

		if (m->count[g] == 0 || m->count[g] < m->mt[g])
			continue;
		rc = recover_group(m, n, g, m->group_secret[complete]);
		if (rc < 0)
			return rc;
		xs[complete] = (uint8_t)g;
		ys[complete] = m->group_secret[complete];
		complete++;
	}
	if (complete < s->gt)
		return not_enough(m, s->gt, complete);
	if (recover_secret(m->ems, s->len, s->gt, xs, ys, m->ds) < 0)
		return amber_fail(AMBER_EINVAL,
				  "the groups do not combine (digest mismatch): a share is "
				  "corrupt or from another set");
	return 0;
}

int amber_slip39_combine(uint8_t *secret_out, size_t *len, const char *const *mnemonics,
			 size_t n, const char *passphrase)
{
	combine_mem *m = NULL;
	int rc;

	if (!passphrase)
		passphrase = "";
	if (n == 0)
		return amber_fail(AMBER_EINVAL, "no shares given: give the shares to combine");
	if (n > MAX_SHARES)
		return amber_fail(AMBER_EINVAL, "%zu shares given, a set has at most %d", n,
				  MAX_SHARES);
	if ((rc = check_passphrase(passphrase)) < 0)
		return rc;
	if (sodium_init() < 0 || !(m = sodium_malloc(sizeof(*m))))
		return amber_fail(AMBER_ERROR, "out of memory for SLIP-0039 shares");
	memset(m, 0, sizeof(*m));
	rc = parse_all(m, mnemonics, n);
	if (rc == 0)
		rc = recover_ems(m, n);
	if (rc == 0 && *len < m->shares[0].len)
		rc = amber_fail(AMBER_ERROR, "the shares hold a %zu-byte secret, room for %zu",
				m->shares[0].len, *len);
	if (rc == 0)
		rc = feistel(secret_out, m->ems, m->shares[0].len, passphrase, &m->shares[0],
			     true);
	if (rc == 0)
		*len = m->shares[0].len;
	sodium_free(m);
	return rc;
}

/* ---- split -------------------------------------------------------------- */

typedef struct {
	uint8_t ems[SECRET_MAX];
	uint8_t group_shares[AMBER_SLIP39_MAX_GROUPS][SECRET_MAX];
	uint8_t member_shares[AMBER_SLIP39_MAX_MEMBERS][SECRET_MAX];
	uint8_t ds[SECRET_MAX];
	uint16_t words[MAX_WORDS];
	char word[AMBER_SLIP39_WORD_MAX + 1];
	share s;
} split_mem;

static int check_groups(uint8_t gt, const amber_slip39_group *groups, size_t ngroups)
{
	if (ngroups < 1 || ngroups > AMBER_SLIP39_MAX_GROUPS)
		return amber_fail(AMBER_EINVAL, "%zu groups asked for: give 1 to %d", ngroups,
				  AMBER_SLIP39_MAX_GROUPS);
	if (gt < 1 || gt > ngroups)
		return amber_fail(AMBER_EINVAL,
				  "group threshold %u of %zu groups: give 1 to the group count",
				  gt, ngroups);
	for (size_t g = 0; g < ngroups; g++) {
		uint8_t t = groups[g].member_threshold, c = groups[g].member_count;

		if (t < 1 || t > c || c > AMBER_SLIP39_MAX_MEMBERS)
			return amber_fail(AMBER_EINVAL,
					  "group %zu: %u of %u members: give a threshold from 1 "
					  "to the count, and at most %d members",
					  g + 1, t, c, AMBER_SLIP39_MAX_MEMBERS);
		if (t == 1 && c > 1)
			return amber_fail(AMBER_EINVAL,
					  "group %zu: 1 of %u members is not allowed by SLIP-0039: "
					  "use 1 of 1",
					  g + 1, c);
	}
	return 0;
}

static int check_split(size_t len, const char *passphrase, uint8_t gt,
		       const amber_slip39_group *groups, size_t ngroups, uint8_t e)
{
	int rc;

	if (len < AMBER_SLIP39_MIN_SECRET || len > SECRET_MAX || len % 2)
		return amber_fail(AMBER_EINVAL,
				  "a %zu-byte secret cannot be split: give an even number of "
				  "bytes from %d to %d",
				  len, AMBER_SLIP39_MIN_SECRET, SECRET_MAX);
	if (e > AMBER_SLIP39_MAX_EXPONENT)
		return amber_fail(AMBER_EINVAL, "iteration exponent %u: give 0 to %d", e,
				  AMBER_SLIP39_MAX_EXPONENT);
	if ((rc = check_passphrase(passphrase)) < 0)
		return rc;
	return check_groups(gt, groups, ngroups);
}

/* Write the mnemonic of m->s into out (MNEMONIC_MAX bytes). */
static void write_mnemonic(char *out, split_mem *m)
{
	size_t n = encode_words(m->words, &m->s), pos = 0;

	for (size_t i = 0; i < n; i++) {
		size_t wl;

		word_at(m->word, m->words[i]);
		wl = strlen(m->word);
		if (i)
			out[pos++] = ' ';
		memcpy(out + pos, m->word, wl);
		pos += wl;
	}
	out[pos] = '\0';
	sodium_memzero(m->word, sizeof(m->word));
	sodium_memzero(m->words, sizeof(m->words));
}

/* Split the group secrets into members; fill the out strings in order. */
static void split_members(char **out, split_mem *m, const amber_slip39_group *groups,
			  size_t ngroups, size_t len)
{
	size_t k = 0;

	for (size_t g = 0; g < ngroups; g++) {
		split_secret(m->member_shares, groups[g].member_threshold,
			     groups[g].member_count, m->group_shares[g], len, m->ds);
		m->s.gi = (uint8_t)g;
		m->s.mt = groups[g].member_threshold;
		for (uint8_t i = 0; i < groups[g].member_count; i++) {
			m->s.mi = i;
			memcpy(m->s.value, m->member_shares[i], len);
			write_mnemonic(out[k++], m);
		}
	}
}

static char **alloc_mnemonics(size_t count)
{
	char **out = sodium_malloc(ALIGNED_SIZE(count * (sizeof(char *) + MNEMONIC_MAX)));
	char *text;

	if (!out)
		return NULL;
	text = (char *)(out + count);
	for (size_t i = 0; i < count; i++)
		out[i] = text + i * MNEMONIC_MAX;
	return out;
}

int amber_slip39_split(char ***mnemonics, size_t *count, const uint8_t *secret, size_t len,
		       const char *passphrase, uint8_t group_threshold,
		       const amber_slip39_group *groups, size_t ngroups, uint8_t iteration_exponent,
		       bool extendable)
{
	split_mem *m = NULL;
	char **out = NULL;
	size_t total = 0;
	int rc;

	*mnemonics = NULL;
	*count = 0;
	if (!passphrase)
		passphrase = "";
	rc = check_split(len, passphrase, group_threshold, groups, ngroups, iteration_exponent);
	if (rc < 0)
		return rc;
	for (size_t g = 0; g < ngroups; g++)
		total += groups[g].member_count;
	if (sodium_init() < 0 || !(m = sodium_malloc(sizeof(*m))) ||
	    !(out = alloc_mnemonics(total))) {
		sodium_free(m);
		return amber_fail(AMBER_ERROR, "out of memory for SLIP-0039 shares");
	}
	memset(&m->s, 0, sizeof(m->s));
	m->s.id = (uint16_t)randombytes_uniform(1u << 15);
	m->s.ext = extendable;
	m->s.e = iteration_exponent;
	m->s.gt = group_threshold;
	m->s.gc = (uint8_t)ngroups;
	m->s.len = len;
	rc = feistel(m->ems, secret, len, passphrase, &m->s, false);
	if (rc == 0) {
		split_secret(m->group_shares, group_threshold, (uint8_t)ngroups, m->ems, len,
			     m->ds);
		split_members(out, m, groups, ngroups, len);
		*mnemonics = out;
		*count = total;
		out = NULL;
	}
	sodium_free(out);
	sodium_free(m);
	return rc;
}

void amber_slip39_free(char **mnemonics, size_t count)
{
	(void)count;
	/* One sodium_malloc block: sodium_free wipes it. */
	sodium_free(mnemonics);
}
