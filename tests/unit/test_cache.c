/*
 * The decoded-object cache: LRU order, holds that block eviction, duplicate
 * puts, free_fn called exactly once per entry, and concurrent use.
 */
#include "cache.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Tracked payloads -------------------------------------------------------- */

#define MAXOBJ 4096
#define ALIVE 0xA11CEu

typedef struct tobj {
	unsigned magic;  /* ALIVE until freed */
	int id;
} tobj;

static atomic_int freed[MAXOBJ];     /* free_fn calls per payload id */
static atomic_int nalloc, nfree;
static int free_order[MAXOBJ];       /* ids in the order free_fn saw them */
static atomic_int nfree_order;

static void reset_counters(void)
{
	for (int i = 0; i < MAXOBJ; i++)
		atomic_store(&freed[i], 0);
	atomic_store(&nalloc, 0);
	atomic_store(&nfree, 0);
	atomic_store(&nfree_order, 0);
}

TestSuite(cache, .init = reset_counters);

static void tobj_free(void *p)
{
	tobj *o = p;

	cr_assert_eq(o->magic, ALIVE, "payload %d freed twice or corrupted", o->id);
	o->magic = 0;
	atomic_fetch_add(&freed[o->id], 1);
	int k = atomic_fetch_add(&nfree_order, 1);

	if (k < MAXOBJ)
		free_order[k] = o->id;
	atomic_fetch_add(&nfree, 1);
	free(o);
}

static tobj *tobj_new(int id)
{
	tobj *o = malloc(sizeof(*o));

	cr_assert_not_null(o);
	cr_assert(id >= 0 && id < MAXOBJ);
	o->magic = ALIVE;
	o->id = id;
	atomic_fetch_add(&nalloc, 1);
	return o;
}

/* Key n; keys of different n land in different buckets unless `collide`. */
static void mkkey(uint8_t key[AMBER_CKEY], unsigned n)
{
	memset(key, 0, AMBER_CKEY);
	memcpy(key, &n, sizeof(n));
	key[10] = (uint8_t)(n * 7 + 1);
	key[20] = 1;
}

/* Keys that share the hash bucket (same first 4 bytes and kind byte). */
static void mkkey_colliding(uint8_t key[AMBER_CKEY], unsigned n)
{
	memset(key, 0, AMBER_CKEY);
	memcpy(key + 8, &n, sizeof(n));
	key[20] = 2;
}

static int has(amber_cache *c, unsigned n)
{
	uint8_t k[AMBER_CKEY];

	mkkey(k, n);
	return amber_cache_has(c, k);
}

/* Put id n under key n with `size`, then release it. */
static void put_released(amber_cache *c, unsigned n, size_t size)
{
	uint8_t k[AMBER_CKEY];
	amber_cobj *o;

	mkkey(k, n);
	o = amber_cache_put(c, k, tobj_new((int)n), size, tobj_free);
	cr_assert_not_null(o, "put %u", n);
	amber_cache_release(c, o);
}

static amber_cobj *put_held(amber_cache *c, unsigned n, size_t size)
{
	uint8_t k[AMBER_CKEY];
	amber_cobj *o;

	mkkey(k, n);
	o = amber_cache_put(c, k, tobj_new((int)n), size, tobj_free);
	cr_assert_not_null(o, "put %u", n);
	return o;
}

static void touch(amber_cache *c, unsigned n)
{
	uint8_t k[AMBER_CKEY];
	amber_cobj *o;

	mkkey(k, n);
	o = amber_cache_get(c, k);
	cr_assert_not_null(o, "get %u", n);
	amber_cache_release(c, o);
}

/* Basic get/put/release ----------------------------------------------------- */

Test(cache, get_of_absent_key_returns_null)
{
	amber_cache *c = amber_cache_new(1000);
	uint8_t k[AMBER_CKEY];

	cr_assert_not_null(c);
	mkkey(k, 1);
	cr_assert_null(amber_cache_get(c, k));
	cr_assert_eq(amber_cache_has(c, k), 0);
	amber_cache_free(c);
}

Test(cache, put_returns_held_entry_and_get_finds_it)
{
	amber_cache *c = amber_cache_new(1000);
	uint8_t k[AMBER_CKEY];
	tobj *d = tobj_new(5);
	amber_cobj *o, *g;

	mkkey(k, 5);
	o = amber_cache_put(c, k, d, 100, tobj_free);
	cr_assert_not_null(o);
	cr_assert_eq(o->data, d);
	cr_assert_eq(o->size, 100);
	cr_assert_eq(memcmp(o->key, k, AMBER_CKEY), 0);
	amber_cache_release(c, o);

	g = amber_cache_get(c, k);
	cr_assert_eq(g, o, "get returns the entry put");
	cr_assert_eq(((tobj *)g->data)->id, 5);
	amber_cache_release(c, g);
	cr_assert_eq(amber_cache_has(c, k), 1);
	cr_assert_eq(atomic_load(&freed[5]), 0, "nothing freed while under the cap");
	amber_cache_free(c);
	cr_assert_eq(atomic_load(&freed[5]), 1);
}

Test(cache, keys_differing_only_in_kind_byte_are_distinct)
{
	amber_cache *c = amber_cache_new(1000);
	uint8_t k1[AMBER_CKEY], k2[AMBER_CKEY];
	amber_cobj *o;

	mkkey(k1, 9);
	memcpy(k2, k1, AMBER_CKEY);
	k2[20] = 7;
	amber_cache_release(c, amber_cache_put(c, k1, tobj_new(1), 1, tobj_free));
	cr_assert_eq(amber_cache_has(c, k2), 0);
	amber_cache_release(c, amber_cache_put(c, k2, tobj_new(2), 1, tobj_free));
	o = amber_cache_get(c, k1);
	cr_assert_eq(((tobj *)o->data)->id, 1);
	amber_cache_release(c, o);
	o = amber_cache_get(c, k2);
	cr_assert_eq(((tobj *)o->data)->id, 2);
	amber_cache_release(c, o);
	cr_assert_eq(atomic_load(&nfree), 0);
	amber_cache_free(c);
	cr_assert_eq(atomic_load(&nfree), 2);
}

Test(cache, release_of_null_is_harmless)
{
	amber_cache *c = amber_cache_new(10);

	amber_cache_release(c, NULL);
	amber_cache_free(c);
	amber_cache_free(NULL);
}

/* has -------------------------------------------------------------------------- */

Test(cache, has_takes_no_hold)
{
	amber_cache *c = amber_cache_new(10);

	put_released(c, 1, 10);
	cr_assert_eq(has(c, 1), 1);
	cr_assert_eq(has(c, 1), 1);
	/* were 1 held by has(), it could not be evicted now */
	put_released(c, 2, 10);
	cr_assert_eq(has(c, 1), 0, "entry checked with has() was still evicted");
	cr_assert_eq(has(c, 2), 1);
	cr_assert_eq(atomic_load(&freed[1]), 1);
	amber_cache_free(c);
}

Test(cache, has_does_not_refresh_recency)
{
	amber_cache *c = amber_cache_new(20);

	put_released(c, 1, 10);
	put_released(c, 2, 10);
	cr_assert_eq(has(c, 1), 1);
	put_released(c, 3, 10);   /* 1 is still the least recently used */
	cr_assert_eq(has(c, 1), 0);
	cr_assert_eq(has(c, 2), 1);
	cr_assert_eq(has(c, 3), 1);
	amber_cache_free(c);
}

/* Eviction order ---------------------------------------------------------------- */

Test(cache, nothing_is_evicted_at_exactly_the_cap)
{
	amber_cache *c = amber_cache_new(30);

	for (unsigned i = 0; i < 3; i++)
		put_released(c, i, 10);
	for (unsigned i = 0; i < 3; i++)
		cr_assert_eq(has(c, i), 1, "entry %u", i);
	cr_assert_eq(atomic_load(&nfree), 0);
	amber_cache_free(c);
	cr_assert_eq(atomic_load(&nfree), 3);
}

Test(cache, oldest_insertions_are_evicted_first)
{
	amber_cache *c = amber_cache_new(30);

	for (unsigned i = 0; i < 8; i++)
		put_released(c, i, 10);
	/* the cap holds three: 5, 6, 7; 0..4 went in insertion order */
	for (unsigned i = 0; i < 8; i++)
		cr_assert_eq(has(c, i), i >= 5, "entry %u", i);
	cr_assert_eq(atomic_load(&nfree_order), 5);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(free_order[i], i, "eviction %d freed %d", i, free_order[i]);
	amber_cache_free(c);
}

Test(cache, get_makes_an_entry_most_recently_used)
{
	amber_cache *c = amber_cache_new(30);

	put_released(c, 1, 10);
	put_released(c, 2, 10);
	put_released(c, 3, 10);
	touch(c, 1);              /* order, coldest first: 2 3 1 */
	put_released(c, 4, 10);   /* evicts 2 */
	cr_assert_eq(has(c, 2), 0, "least recently used entry survived");
	cr_assert_eq(has(c, 1), 1, "recently used entry was evicted");
	cr_assert_eq(has(c, 3), 1);
	cr_assert_eq(has(c, 4), 1);
	touch(c, 3);              /* 1 4 3 */
	put_released(c, 5, 10);   /* evicts 1 */
	cr_assert_eq(has(c, 1), 0);
	cr_assert_eq(has(c, 3), 1);
	cr_assert_eq(has(c, 4), 1);
	cr_assert_eq(atomic_load(&nfree_order), 2);
	cr_assert_eq(free_order[0], 2);
	cr_assert_eq(free_order[1], 1);
	amber_cache_free(c);
}

Test(cache, large_insert_evicts_several_coldest_entries)
{
	amber_cache *c = amber_cache_new(40);

	for (unsigned i = 0; i < 4; i++)
		put_released(c, i, 10);
	put_released(c, 9, 25);   /* 65 > 40: 0, 1 and 2 must go, leaving 35 */
	cr_assert_eq(has(c, 0), 0);
	cr_assert_eq(has(c, 1), 0);
	cr_assert_eq(has(c, 2), 0);
	cr_assert_eq(has(c, 3), 1);
	cr_assert_eq(has(c, 9), 1);
	amber_cache_free(c);
}

Test(cache, entries_sharing_a_bucket_evict_and_find_correctly)
{
	amber_cache *c = amber_cache_new(30);
	uint8_t k[AMBER_CKEY];
	amber_cobj *o;

	for (unsigned i = 0; i < 5; i++) {
		mkkey_colliding(k, i);
		amber_cache_release(c, amber_cache_put(c, k, tobj_new((int)i), 10, tobj_free));
	}
	/* 0 and 1 evicted from the middle/end of one hash chain */
	for (unsigned i = 0; i < 5; i++) {
		mkkey_colliding(k, i);
		cr_assert_eq(amber_cache_has(c, k), i >= 2, "entry %u", i);
		o = amber_cache_get(c, k);
		if (i >= 2) {
			cr_assert_not_null(o);
			cr_assert_eq(((tobj *)o->data)->id, (int)i);
			amber_cache_release(c, o);
		} else {
			cr_assert_null(o);
		}
	}
	amber_cache_free(c);
	cr_assert_eq(atomic_load(&nfree), 5);
}

/* Holds ---------------------------------------------------------------------------- */

Test(cache, held_entry_is_never_evicted)
{
	amber_cache *c = amber_cache_new(20);
	amber_cobj *h = put_held(c, 0, 10);

	for (unsigned i = 1; i < 50; i++)
		put_released(c, i, 10);
	cr_assert_eq(has(c, 0), 1, "held entry was evicted");
	cr_assert_eq(atomic_load(&freed[0]), 0, "held entry's data was freed");
	cr_assert_eq(((tobj *)h->data)->magic, ALIVE);
	cr_assert_eq(((tobj *)h->data)->id, 0);
	amber_cache_release(c, h);
	amber_cache_free(c);
}

Test(cache, held_entry_is_evicted_on_release_once_over_the_cap)
{
	amber_cache *c = amber_cache_new(10);
	amber_cobj *a = put_held(c, 1, 10);
	amber_cobj *b = put_held(c, 2, 10);   /* 20 > 10, but both held */

	cr_assert_eq(has(c, 1), 1);
	cr_assert_eq(has(c, 2), 1);
	cr_assert_eq(atomic_load(&nfree), 0);
	amber_cache_release(c, a);            /* now 1 can go, and must */
	cr_assert_eq(has(c, 1), 0, "released entry over the cap stayed");
	cr_assert_eq(atomic_load(&freed[1]), 1);
	cr_assert_eq(has(c, 2), 1);
	amber_cache_release(c, b);            /* back at the cap: stays */
	cr_assert_eq(has(c, 2), 1);
	cr_assert_eq(atomic_load(&freed[2]), 0);
	amber_cache_free(c);
	cr_assert_eq(atomic_load(&freed[2]), 1);
}

Test(cache, entry_held_twice_survives_until_last_release)
{
	amber_cache *c = amber_cache_new(10);
	uint8_t k[AMBER_CKEY];
	amber_cobj *a = put_held(c, 1, 10), *a2;

	mkkey(k, 1);
	a2 = amber_cache_get(c, k);
	cr_assert_eq(a2, a);
	put_released(c, 2, 10);   /* over the cap; 2 itself is evicted, 1 is held */
	amber_cache_release(c, a);
	cr_assert_eq(has(c, 1), 1, "entry evicted while still held once");
	cr_assert_eq(atomic_load(&freed[1]), 0);
	put_released(c, 3, 10);
	cr_assert_eq(has(c, 1), 1);
	amber_cache_release(c, a2);
	put_released(c, 4, 10);
	cr_assert_eq(has(c, 1), 0);
	cr_assert_eq(atomic_load(&freed[1]), 1);
	amber_cache_free(c);
}

Test(cache, entry_larger_than_cap_lives_only_while_held)
{
	amber_cache *c = amber_cache_new(10);
	amber_cobj *big = put_held(c, 1, 1000);

	cr_assert_eq(has(c, 1), 1);
	cr_assert_eq(((tobj *)big->data)->magic, ALIVE);
	amber_cache_release(c, big);
	cr_assert_eq(has(c, 1), 0);
	cr_assert_eq(atomic_load(&freed[1]), 1);
	put_released(c, 2, 10);
	cr_assert_eq(has(c, 2), 1, "accounting still counts the evicted entry");
	amber_cache_free(c);
}

/* Duplicate put ------------------------------------------------------------------------ */

Test(cache, put_of_existing_key_frees_new_data_and_returns_existing_entry)
{
	amber_cache *c = amber_cache_new(100);
	uint8_t k[AMBER_CKEY];
	tobj *first = tobj_new(1), *second = tobj_new(2);
	amber_cobj *o1, *o2;

	mkkey(k, 1);
	o1 = amber_cache_put(c, k, first, 10, tobj_free);
	o2 = amber_cache_put(c, k, second, 10, tobj_free);
	cr_assert_eq(o2, o1, "duplicate put returned another entry");
	cr_assert_eq(o2->data, first);
	cr_assert_eq(atomic_load(&freed[2]), 1, "new data was not freed");
	cr_assert_eq(atomic_load(&freed[1]), 0, "existing data was freed");
	/* the duplicate put took its own hold */
	amber_cache_release(c, o1);
	put_released(c, 3, 1000);   /* way over the cap: all unheld entries go */
	cr_assert_eq(has(c, 1), 1, "duplicate put did not hold the entry");
	amber_cache_release(c, o2);
	put_released(c, 4, 1000);
	cr_assert_eq(has(c, 1), 0);
	amber_cache_free(c);
	for (int i = 1; i <= 4; i++)
		cr_assert_eq(atomic_load(&freed[i]), 1, "payload %d freed %d times", i,
			     atomic_load(&freed[i]));
}

Test(cache, duplicate_put_is_not_counted_twice_against_the_cap)
{
	amber_cache *c = amber_cache_new(20);
	uint8_t k[AMBER_CKEY];

	mkkey(k, 1);
	for (int i = 0; i < 5; i++)
		amber_cache_release(c, amber_cache_put(c, k, tobj_new(10 + i), 10, tobj_free));
	put_released(c, 2, 10);
	cr_assert_eq(has(c, 1), 1, "duplicate puts were accounted");
	cr_assert_eq(has(c, 2), 1);
	amber_cache_free(c);
}

Test(cache, put_of_existing_key_counts_as_a_use)
{
	amber_cache *c = amber_cache_new(30);
	uint8_t k[AMBER_CKEY];

	put_released(c, 1, 10);
	put_released(c, 2, 10);
	put_released(c, 3, 10);
	/* a second decoder of 1 loses the race: it gets 1 back, which it uses */
	mkkey(k, 1);
	amber_cache_release(c, amber_cache_put(c, k, tobj_new(100), 10, tobj_free));
	put_released(c, 4, 10);
	cr_assert_eq(has(c, 2), 0, "2 was the least recently used");
	cr_assert_eq(has(c, 1), 1, "entry just returned by put was evicted as the coldest");
	amber_cache_free(c);
}

/* free_fn accounting -------------------------------------------------------------------- */

Test(cache, free_fn_is_called_exactly_once_per_entry)
{
	amber_cache *c = amber_cache_new(50);
	amber_cobj *held[8];
	int nheld = 0, id = 0;
	uint8_t k[AMBER_CKEY];

	/* a mix of evictions, duplicates, holds and the final free */
	for (unsigned round = 0; round < 400; round++) {
		unsigned key = (round * 37u) % 23u;
		amber_cobj *o;

		mkkey(k, key);
		o = amber_cache_put(c, k, tobj_new(id++), 1 + round % 13, tobj_free);
		cr_assert_not_null(o);
		cr_assert_eq(((tobj *)o->data)->magic, ALIVE);
		if (round % 50 == 0 && nheld < 8)
			held[nheld++] = o;
		else
			amber_cache_release(c, o);
	}
	for (int i = 0; i < nheld; i++) {
		cr_assert_eq(((tobj *)held[i]->data)->magic, ALIVE);
		amber_cache_release(c, held[i]);
	}
	amber_cache_free(c);
	cr_assert_eq(atomic_load(&nalloc), id);
	cr_assert_eq(atomic_load(&nfree), id, "%d payloads, %d frees", id, atomic_load(&nfree));
	for (int i = 0; i < id; i++)
		cr_assert_eq(atomic_load(&freed[i]), 1, "payload %d freed %d times", i,
			     atomic_load(&freed[i]));
}

Test(cache, free_releases_held_and_unheld_entries)
{
	amber_cache *c = amber_cache_new(1000);

	put_released(c, 1, 10);
	(void)put_held(c, 2, 10);   /* still held at free: the cache owns the data */
	amber_cache_free(c);
	cr_assert_eq(atomic_load(&freed[1]), 1);
	cr_assert_eq(atomic_load(&freed[2]), 1);
}

/* Concurrency --------------------------------------------------------------------------- */

#define NTHREADS 8
#define NKEYS 64
#define NOPS 20000

static amber_cache *shared;
static atomic_int bad_reads;

static void *hammer(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
	uint8_t k[AMBER_CKEY];

	for (int i = 0; i < NOPS; i++) {
		unsigned key;
		amber_cobj *o;

		seed = seed * 1103515245u + 12345u;
		key = (seed >> 8) % NKEYS;
		mkkey(k, key);
		o = amber_cache_get(shared, k);
		if (!o) {
			tobj *d = malloc(sizeof(*d));

			if (!d) {
				atomic_fetch_add(&bad_reads, 1);
				continue;
			}
			d->magic = ALIVE;
			d->id = (int)key;
			atomic_fetch_add(&nalloc, 1);
			o = amber_cache_put(shared, k, d, 1 + key % 7, tobj_free);
		}
		if (!o) {
			atomic_fetch_add(&bad_reads, 1);
			continue;
		}
		/* while held, the payload must be the key's and alive */
		tobj *d = o->data;

		if (d->magic != ALIVE || d->id != (int)key || memcmp(o->key, k, AMBER_CKEY))
			atomic_fetch_add(&bad_reads, 1);
		if (i % 3 == 0)
			(void)amber_cache_has(shared, k);
		amber_cache_release(shared, o);
	}
	return NULL;
}

Test(cache, concurrent_get_put_release_on_overlapping_keys)
{
	pthread_t th[NTHREADS];

	/* cap well below the working set so evictions race with gets */
	shared = amber_cache_new(60);
	atomic_store(&bad_reads, 0);
	for (uintptr_t i = 0; i < NTHREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, hammer, (void *)i), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(atomic_load(&bad_reads), 0, "%d bad reads", atomic_load(&bad_reads));
	cr_assert_gt(atomic_load(&nfree), 0, "no eviction happened: test is too weak");
	amber_cache_free(shared);
	cr_assert_eq(atomic_load(&nfree), atomic_load(&nalloc), "%d allocated, %d freed",
		     atomic_load(&nalloc), atomic_load(&nfree));
}

/* ---- load-once ---------------------------------------------------------- */

struct loader {
	amber_cache *c;
	atomic_int loads;       /* how many threads were told to load */
	atomic_int seen;        /* how many got the loaded value */
};

static void *acquire_and_load(void *arg)
{
	struct loader *l = arg;
	uint8_t key[AMBER_CKEY];
	int mine = 0;
	amber_cobj *o;

	mkkey(key, 7);
	o = amber_cache_acquire(l->c, key, &mine);
	if (o && mine) {
		int *v = malloc(sizeof(*v));

		atomic_fetch_add(&l->loads, 1);
		usleep(20000); /* others arrive while this one "decodes" */
		*v = 4242;
		amber_cache_fill(l->c, o, v, sizeof(*v), sizeof(*v), free);
	}
	if (o && *(int *)o->data == 4242)
		atomic_fetch_add(&l->seen, 1);
	amber_cache_release(l->c, o);
	return NULL;
}

Test(cache, concurrent_acquires_of_one_key_load_it_once)
{
	struct loader l = {.c = amber_cache_new(1 << 20)};
	pthread_t t[8];

	for (int i = 0; i < 8; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, acquire_and_load, &l), 0);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	cr_expect_eq(atomic_load(&l.loads), 1, "loaded %d times", atomic_load(&l.loads));
	cr_expect_eq(atomic_load(&l.seen), 8, "only %d threads saw the value",
		     atomic_load(&l.seen));
	amber_cache_free(l.c);
}

Test(cache, abandoned_load_lets_the_next_caller_load)
{
	amber_cache *c = amber_cache_new(1 << 20);
	uint8_t key[AMBER_CKEY];
	int mine = 0;
	amber_cobj *o;

	mkkey(key, 9);
	o = amber_cache_acquire(c, key, &mine);
	cr_assert(o && mine);
	amber_cache_abandon(c, o);
	cr_expect(!amber_cache_has(c, key), "an abandoned entry stays visible");
	o = amber_cache_acquire(c, key, &mine);
	cr_expect(o && mine, "the next caller is not asked to load");
	amber_cache_abandon(c, o);
	amber_cache_free(c);
}

/*
 * Entries evicted from the heap give their pages back to the system, even
 * with live allocations between them (which keep malloc from trimming the
 * top of its heap): 32 MiB of 64 KiB entries, each followed by a small
 * allocation that stays, are pushed out by 40 MiB of mapped ones, and the
 * resident size does not keep both.  Under AddressSanitizer malloc is its
 * own, which keeps freed memory in quarantine: the test measures glibc's.
 */
#if !defined(__SANITIZE_ADDRESS__)
static long resident_kib(void)
{
	long pages = 0, size = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%ld %ld", &size, &pages), 2);
	fclose(f);
	return pages * (sysconf(_SC_PAGESIZE) / 1024);
}

#define TRIM_SMALL (64 << 10)
#define TRIM_BIG (1 << 20)

static void unmap_big(void *p)
{
	munmap(p, TRIM_BIG);
}

Test(cache, evicted_heap_entries_give_their_pages_back)
{
	amber_cache *c = amber_cache_new(32 << 20);
	void **pins = calloc(512, sizeof(void *));
	uint8_t key[AMBER_CKEY];

	cr_assert(c && pins);
	for (int i = 0; i < 512; i++) {
		uint8_t *d = malloc(TRIM_SMALL);
		cr_assert_not_null(d);
		memset(d, 0x5a, TRIM_SMALL);
		pins[i] = malloc(32);
		memset(key, 0, sizeof(key));
		memcpy(key, &i, sizeof(i));
		amber_cache_release(c, amber_cache_put(c, key, d, TRIM_SMALL, free));
	}
	long full = resident_kib();
	for (int i = 0; i < 40; i++) {
		void *d = mmap(NULL, TRIM_BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		cr_assert(d != MAP_FAILED);
		memset(d, 0xa5, TRIM_BIG);
		memset(key, 0xff, sizeof(key));
		memcpy(key, &i, sizeof(i));
		amber_cache_release(c, amber_cache_put(c, key, d, TRIM_BIG, unmap_big));
	}
	long after = resident_kib();
	cr_log_info("resident: %ld KiB with the small entries, %ld KiB after the big ones",
		    full, after);
	/* the cache holds 32 MiB either way; kept holes would add 32 MiB */
	cr_assert_lt(after, full + 12 * 1024,
		     "resident grew from %ld to %ld KiB: the evicted entries' pages were kept",
		     full, after);
	for (int i = 0; i < 512; i++)
		free(pins[i]);
	free(pins);
	amber_cache_free(c);
}
#endif

/* Entries in their own mappings (decoded chunks) leave no holes in the heap:
 * evicting them never trims it (malloc_trim walks every free list: it cost
 * a long read a trim per 32 MiB for nothing); heap entries still do. */
static void unmap_mib(void *p)
{
	munmap(p, (size_t)1 << 20);
}

Test(cache, only_evicted_heap_memory_leads_to_a_trim)
{
	amber_cache *c = amber_cache_new(8 << 20);
	uint8_t key[AMBER_CKEY];
	int mine;

	cr_assert_not_null(c);
	for (int i = 0; i < 100; i++) { /* 92 MiB of mapped entries evicted */
		void *d = mmap(NULL, (size_t)1 << 20, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		amber_cobj *o;

		cr_assert(d != MAP_FAILED);
		memset(key, 0, sizeof(key));
		memcpy(key, &i, sizeof(i));
		o = amber_cache_acquire(c, key, &mine);
		cr_assert(o && mine);
		amber_cache_fill(c, o, d, (size_t)1 << 20, 64, unmap_mib);
		amber_cache_release(c, o);
	}
	cr_assert_eq(amber_cache_trims(c), 0, "%zu trims for mapped entries",
		     amber_cache_trims(c));
	for (int i = 0; i < 48; i++) { /* then 40 MiB of heap entries evicted */
		memset(key, 0xee, sizeof(key));
		memcpy(key, &i, sizeof(i));
		amber_cache_release(c, amber_cache_put(c, key, calloc(1, 1 << 20), 1 << 20, free));
	}
	cr_assert_eq(amber_cache_trims(c), 1, "%zu trims for 40 MiB of heap entries evicted",
		     amber_cache_trims(c));
	amber_cache_free(c);
}

/* Read-through entries ------------------------------------------------------- */

#define MIB ((size_t)1 << 20)

/*
 * An entry all of whose bytes were handed out (in pieces, in any order) is
 * consumed: consumed entries are kept to AMBER_CACHE_CONSUMED bytes, oldest
 * out first, however far below its cap the cache is; one handed out in part
 * stays; a get takes a consumed entry back.
 */
Test(cache, read_through_entries_are_kept_to_a_few_mib)
{
	amber_cache *c = amber_cache_new((size_t)256 << 20);
	size_t n = AMBER_CACHE_CONSUMED / MIB + 4;
	uint8_t k[AMBER_CKEY];

	cr_assert_lt(n, 200);
	for (unsigned i = 0; i < n; i++) {
		amber_cobj *o = put_held(c, i, MIB);

		/* the second half first, then the first: all of it, out of order */
		amber_cobj *again;
		mkkey(k, i);
		again = amber_cache_get(c, k);
		amber_cache_release_served(c, again, MIB / 2, MIB);
		amber_cache_release_served(c, o, MIB / 2, MIB);
	}
	put_held(c, 500, MIB);          /* handed out in part only */
	mkkey(k, 500);
	amber_cache_release_served(c, amber_cache_get(c, k), MIB / 2, MIB);
	amber_cache_release(c, amber_cache_get(c, k));
	amber_cache_release_served(c, amber_cache_get(c, k), 10, MIB);
	/* (the put's own hold) */
	amber_cobj *p500 = amber_cache_get(c, k);
	amber_cache_release(c, p500);

	size_t used, max;
	amber_cache_usage(c, &used, &max);
	cr_assert_leq(used, AMBER_CACHE_CONSUMED + MIB + MIB, "%zu bytes kept", used);
	for (unsigned i = 0; i < 4; i++)
		cr_assert(!has(c, i), "consumed entry %u (of the oldest) still kept", i);
	cr_assert(has(c, (unsigned)n - 1), "the newest consumed entry was dropped");
	cr_assert(has(c, 500), "an entry handed out in part was dropped");

	/* a get takes the newest consumed entry back: consuming more keeps it */
	mkkey(k, (unsigned)n - 1);
	amber_cobj *back = amber_cache_get(c, k);
	cr_assert_not_null(back);
	amber_cache_release(c, back);
	for (unsigned i = 1000; i < 1000 + n; i++)
		amber_cache_release_served(c, put_held(c, i, MIB), MIB, MIB);
	cr_assert(has(c, (unsigned)n - 1), "an entry taken back was dropped as consumed");
	amber_cache_free(c);
}
