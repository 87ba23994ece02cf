/* Content-defined chunking: bounds, stability under edits, keyed boundaries. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "chunker.h"

#define MAX_CUTS 100000

/* Small parameters give many chunks per test, hence sharper statistics. */
#define S_MIN ((size_t)2 << 10)
#define S_AVG ((size_t)8 << 10)
#define S_MAX ((size_t)32 << 10)

static void setup(void)
{
	cr_assert_geq(sodium_init(), 0);
}

TestSuite(chunker, .init = setup);

/* Deterministic pseudo-random bytes: the ChaCha20 keystream of `tag`. */
static uint8_t *noise(size_t n, uint8_t tag)
{
	static const uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
	uint8_t key[crypto_stream_chacha20_KEYBYTES] = {tag};
	uint8_t *p = malloc(n ? n : 1);

	cr_assert_not_null(p);
	crypto_stream_chacha20(p, n, nonce, key);
	return p;
}

typedef struct cuts {
	size_t n;
	size_t end[MAX_CUTS];  /* end offset of each chunk */
} cuts;

/* Chunk the whole buffer, handing the chunker everything that is left. */
static cuts *chunk_all(const amber_chunker *c, const uint8_t *d, size_t len)
{
	cuts *k = calloc(1, sizeof(*k));
	size_t off = 0, l;

	cr_assert_not_null(k);
	while (off < len) {
		l = amber_chunker_next(c, d + off, len - off, 1);
		cr_assert(l >= 1 && l <= len - off, "chunk of %zu at %zu", l, off);
		cr_assert_lt(k->n, MAX_CUTS);
		off += l;
		k->end[k->n++] = off;
	}
	cr_assert_eq(amber_chunker_next(c, d + off, 0, 1), 0);
	return k;
}

/* Chunk as a streaming reader would: windows of exactly max bytes. */
static cuts *chunk_windowed(const amber_chunker *c, const uint8_t *d, size_t len)
{
	cuts *k = calloc(1, sizeof(*k));
	size_t off = 0, win;

	cr_assert_not_null(k);
	while (off < len) {
		win = len - off > c->max ? c->max : len - off;
		off += amber_chunker_next(c, d + off, win, off + win == len);
		k->end[k->n++] = off;
	}
	return k;
}

static int has_cut(const cuts *k, size_t at)
{
	for (size_t i = 0; i < k->n; i++)
		if (k->end[i] == at)
			return 1;
	return 0;
}

static void assert_sizes_in_bounds(const amber_chunker *c, const cuts *k)
{
	size_t prev = 0, l;

	for (size_t i = 0; i < k->n; i++) {
		l = k->end[i] - prev;
		cr_assert_leq(l, c->max, "chunk %zu is %zu bytes, max %zu", i, l, c->max);
		if (i + 1 < k->n)
			cr_assert_geq(l, c->min, "chunk %zu is %zu bytes, min %zu", i, l, c->min);
		prev = k->end[i];
	}
}

Test(chunker, every_chunk_but_the_last_is_within_min_and_max)
{
	size_t n = 24 << 20;
	uint8_t *d = noise(n, 1);
	amber_chunker c, s;
	cuts *k;

	amber_chunker_init(&c, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	k = chunk_all(&c, d, n);
	cr_assert_gt(k->n, 10);
	assert_sizes_in_bounds(&c, k);
	free(k);
	amber_chunker_init(&s, NULL, S_MIN, S_AVG, S_MAX);
	k = chunk_all(&s, d, n);
	assert_sizes_in_bounds(&s, k);
	free(k);
	free(d);
}

Test(chunker, mean_chunk_size_is_near_avg)
{
	size_t n = 16 << 20;
	uint8_t *d = noise(n, 2);
	amber_chunker c;
	cuts *k;
	size_t mean;

	amber_chunker_init(&c, NULL, S_MIN, S_AVG, S_MAX);
	k = chunk_all(&c, d, n);
	mean = n / k->n;
	cr_assert(mean > S_AVG / 2 && mean < S_AVG * 2, "mean chunk %zu, avg %zu", mean, S_AVG);
	free(k);
	free(d);
}

static void assert_constant_data_bounded(const amber_chunker *c, int byte)
{
	size_t n = 9 * c->max + 12345;
	uint8_t *d = malloc(n);
	cuts *k;

	cr_assert_not_null(d);
	memset(d, byte, n);
	k = chunk_all(c, d, n);
	assert_sizes_in_bounds(c, k);
	free(k);
	free(d);
}

Test(chunker, max_is_enforced_on_constant_data)
{
	amber_chunker c, s;
	uint8_t seed[32] = {7};

	amber_chunker_init(&c, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	amber_chunker_init(&s, seed, S_MIN, S_AVG, S_MAX);
	for (int b = 0; b < 256; b += 85) {
		assert_constant_data_bounded(&c, b);
		assert_constant_data_bounded(&s, b);
	}
}

Test(chunker, zero_filled_data_is_cut_at_max)
{
	size_t n = 5 * AMBER_CHUNK_MAX + 1000;
	uint8_t *d = calloc(1, n);
	amber_chunker c;
	cuts *k;

	cr_assert_not_null(d);
	amber_chunker_init(&c, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	k = chunk_all(&c, d, n);
	/* Under the public table zeros never clear a mask, so every cut is forced. */
	cr_assert_eq(k->n, 6);
	for (size_t i = 0; i < 5; i++)
		cr_assert_eq(k->end[i], (i + 1) * AMBER_CHUNK_MAX);
	free(k);
	free(d);
}

Test(chunker, short_input_at_eof_is_one_chunk)
{
	uint8_t *d = noise(AMBER_CHUNK_MIN, 3);
	amber_chunker c;

	amber_chunker_init(&c, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	cr_assert_eq(amber_chunker_next(&c, d, 0, 1), 0);
	cr_assert_eq(amber_chunker_next(&c, d, 1, 1), 1);
	cr_assert_eq(amber_chunker_next(&c, d, AMBER_CHUNK_MIN, 1), AMBER_CHUNK_MIN);
	free(d);
}

Test(chunker, windowed_feeding_matches_whole_buffer)
{
	size_t n = 20 << 20;
	uint8_t *d = noise(n, 4);
	amber_chunker c;
	cuts *a, *b;

	amber_chunker_init(&c, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	a = chunk_all(&c, d, n);
	b = chunk_windowed(&c, d, n);
	cr_assert_eq(a->n, b->n);
	cr_assert_eq(memcmp(a->end, b->end, a->n * sizeof(a->end[0])), 0);
	free(a);
	free(b);
	free(d);
}

/* Count cuts of `before` past `from` that reappear, moved by `shift`, in `after`. */
static size_t count_lost(const cuts *before, const cuts *after, size_t from, size_t shift,
			 size_t *total)
{
	size_t lost = 0;

	*total = 0;
	for (size_t i = 0; i + 1 < before->n; i++) {
		if (before->end[i] <= from)
			continue;
		(*total)++;
		lost += !has_cut(after, before->end[i] + shift);
	}
	return lost;
}

static void assert_insert_is_local(const amber_chunker *c, size_t n, size_t at, size_t ins)
{
	uint8_t *d = noise(n, 5), *e = malloc(n + ins), *extra = noise(ins, 6);
	cuts *a, *b;
	size_t lost, total;

	cr_assert_not_null(e);
	memcpy(e, d, at);
	memcpy(e + at, extra, ins);
	memcpy(e + at + ins, d + at, n - at);
	a = chunk_all(c, d, n);
	b = chunk_all(c, e, n + ins);
	lost = count_lost(a, b, at, ins, &total);
	cr_assert_gt(total, 10);
	cr_assert_leq(lost, 2, "%zu of %zu boundaries after an insert of %zu at %zu moved",
		      lost, total, ins, at);
	free(a);
	free(b);
	free(d);
	free(e);
	free(extra);
}

Test(chunker, boundaries_survive_an_insert_near_the_start)
{
	amber_chunker c, s;

	amber_chunker_init(&c, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	amber_chunker_init(&s, NULL, S_MIN, S_AVG, S_MAX);
	assert_insert_is_local(&c, 24 << 20, 1000, 100);
	assert_insert_is_local(&c, 24 << 20, 300000, 1);
	assert_insert_is_local(&s, 4 << 20, 1000, 100);
	assert_insert_is_local(&s, 4 << 20, 5, 4096);
}

Test(chunker, boundaries_survive_an_append)
{
	size_t n = 20 << 20, more = 3 << 20;
	uint8_t *d = noise(n + more, 7);
	amber_chunker c;
	cuts *a, *b;
	size_t lost, total;

	amber_chunker_init(&c, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	a = chunk_all(&c, d, n);
	b = chunk_all(&c, d, n + more);
	/* Every cut but the end of the data depends only on bytes that did not change. */
	lost = count_lost(a, b, 0, 0, &total);
	cr_assert_eq(lost, 0, "%zu of %zu boundaries moved after an append", lost, total);
	free(a);
	free(b);
	free(d);
}

Test(chunker, different_seeds_give_different_boundaries)
{
	size_t n = 16 << 20, same_ab = 0, same_an = 0;
	uint8_t *d = noise(n, 8), sa[32], sb[32];
	amber_chunker ca, cb, cn;
	cuts *a, *b, *p;

	memset(sa, 0x11, sizeof(sa));
	memset(sb, 0x22, sizeof(sb));
	amber_chunker_init(&ca, sa, S_MIN, S_AVG, S_MAX);
	amber_chunker_init(&cb, sb, S_MIN, S_AVG, S_MAX);
	amber_chunker_init(&cn, NULL, S_MIN, S_AVG, S_MAX);
	cr_assert_neq(memcmp(ca.gear, cb.gear, sizeof(ca.gear)), 0);
	a = chunk_all(&ca, d, n);
	b = chunk_all(&cb, d, n);
	p = chunk_all(&cn, d, n);
	for (size_t i = 0; i + 1 < a->n; i++) {
		same_ab += has_cut(b, a->end[i]);
		same_an += has_cut(p, a->end[i]);
	}
	cr_assert_lt(same_ab, a->n / 10, "%zu of %zu cuts shared between seeds", same_ab, a->n);
	cr_assert_lt(same_an, a->n / 10, "%zu of %zu cuts shared with the public seed", same_an,
		     a->n);
	free(a);
	free(b);
	free(p);
	free(d);
}

Test(chunker, same_seed_gives_same_table)
{
	amber_chunker a, b;
	uint8_t seed[32] = {1, 2, 3};

	amber_chunker_init(&a, seed, S_MIN, S_AVG, S_MAX);
	amber_chunker_init(&b, seed, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	cr_assert_eq(memcmp(a.gear, b.gear, sizeof(a.gear)), 0);
}

/*
 * The public seed is part of the format of plain archives: pin it and the
 * boundaries it gives, so a change cannot slip in unnoticed.
 */
Test(chunker, public_seed_is_the_documented_one)
{
	amber_chunker a, b;

	amber_chunker_init(&a, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	amber_chunker_init(&b, (const uint8_t *)"amberfs format 1 plain gear seed",
			   AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	cr_assert_eq(memcmp(a.gear, b.gear, sizeof(a.gear)), 0);
}

Test(chunker, reference_boundaries_are_pinned)
{
	static const size_t want[] = {
		287957, 931428, 2284062, 2918940, 3707402, 4076167, 4736795,
		5036780, 5577931, 6146562, 7185536, 7728359, 8388608,
	};
	size_t n = 8 << 20;
	uint8_t *d = noise(n, 9);
	amber_chunker c;
	cuts *k;

	amber_chunker_init(&c, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	k = chunk_all(&c, d, n);
	cr_assert_eq(k->n, sizeof(want) / sizeof(want[0]));
	cr_assert_eq(memcmp(k->end, want, sizeof(want)), 0, "chunk boundaries changed");
	free(k);
	free(d);
}

/* Chunk 3 MiB of noise(tag) with three bytes ending at `last` replaced. */
static cuts *chunk_patched(uint8_t tag, size_t last, const uint8_t b[3])
{
	size_t n = 3 << 20;
	uint8_t *d = noise(n, tag);
	amber_chunker c;
	cuts *k;

	memcpy(d + last - 2, b, 3);
	amber_chunker_init(&c, NULL, AMBER_CHUNK_MIN, AMBER_CHUNK_AVG, AMBER_CHUNK_MAX);
	k = chunk_all(&c, d, n);
	free(d);
	return k;
}

/*
 * The first cut candidate is a chunk of exactly min bytes.  The three bytes
 * were chosen so that the hash at offset min - 1 clears the mask: the
 * first chunk is min long, not a byte more.
 */
Test(chunker, a_cut_at_exactly_min_is_taken)
{
	static const uint8_t b[3] = {0x70, 0x1e, 0xf8};
	static const size_t want[] = {
		131072, 340571, 965154, 1848084, 2490638, 3134201, 3145728,
	};
	cuts *k = chunk_patched(21, AMBER_CHUNK_MIN - 1, b);

	cr_assert_eq(k->end[0], AMBER_CHUNK_MIN, "first chunk %zu, want exactly min", k->end[0]);
	cr_assert_eq(k->n, sizeof(want) / sizeof(want[0]));
	cr_assert_eq(memcmp(k->end, want, sizeof(want)), 0, "chunk boundaries changed");
	free(k);
}

/*
 * And nothing shorter: here the hash at offset min - 2 clears the mask (a
 * chunk of min - 1 bytes), which must not become a cut.
 */
Test(chunker, a_cut_one_byte_before_min_is_not_taken)
{
	static const uint8_t b[3] = {0x0a, 0xe2, 0x0e};
	static const size_t want[] = {
		147900, 630568, 1375534, 1951281, 2489742, 2765186, 3145728,
	};
	cuts *k = chunk_patched(22, AMBER_CHUNK_MIN - 2, b);

	cr_assert_eq(k->n, sizeof(want) / sizeof(want[0]));
	cr_assert_eq(memcmp(k->end, want, sizeof(want)), 0, "chunk boundaries changed");
	free(k);
}
