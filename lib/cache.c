#include "cache.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 4096

/*
 * Evicted entries that lived on the heap leave holes among the live ones,
 * which malloc keeps (it gives back only the top of a heap): a reader that
 * goes from many small files to a large one would hold the cache's cap
 * twice over.  So every AMBER_CACHE_TRIM_EVERY bytes of heap evicted, the
 * freeing thread hands the free pages back (malloc_trim walks the free
 * lists: a millisecond or so, against the ~100 ms it takes to decode that
 * much).
 */
struct amber_cache {
	atomic_size_t evicted;  /* heap bytes evicted since the last trim */
	atomic_size_t trims;
	pthread_mutex_t lock;   /* protects everything below and every entry's refs/links */
	pthread_cond_t loaded;  /* an entry stopped loading (filled or abandoned) */
	size_t max, used;
	size_t consumed;        /* bytes of the consumed entries */
	amber_cobj *head, *tail; /* most recently used first */
	amber_cobj *chead, *ctail; /* the consumed entries, most recently consumed first */
	amber_cobj *buckets[NBUCKETS];
};

amber_cache *amber_cache_new(size_t max_bytes)
{
	amber_cache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->loaded, NULL);
	c->max = max_bytes;
	return c;
}

void amber_cache_usage(amber_cache *c, size_t *used, size_t *max)
{
	pthread_mutex_lock(&c->lock);
	*used = c->used;
	*max = c->max;
	pthread_mutex_unlock(&c->lock);
}

static void obj_free(amber_cobj *o)
{
	if (o->free_fn)
		o->free_fn(o->data);
	free(o);
}

void amber_cache_free(amber_cache *c)
{
	if (!c)
		return;
	for (amber_cobj *o = c->head, *n; o; o = n) {
		n = o->next;
		obj_free(o);
	}
	for (amber_cobj *o = c->chead, *n; o; o = n) {
		n = o->next;
		obj_free(o);
	}
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->loaded);
	free(c);
}

static size_t bucket(const uint8_t key[AMBER_CKEY])
{
	uint32_t h;

	memcpy(&h, key, sizeof(h)); /* object ids are uniform */
	return (h ^ key[20]) % NBUCKETS;
}

static amber_cobj *find(amber_cache *c, const uint8_t key[AMBER_CKEY])
{
	for (amber_cobj *o = c->buckets[bucket(key)]; o; o = o->hnext)
		if (memcmp(o->key, key, AMBER_CKEY) == 0)
			return o;
	return NULL;
}

/* The list o is on: the consumed entries, or the others. */
static amber_cobj **list_head(amber_cache *c, const amber_cobj *o)
{
	return o->consumed ? &c->chead : &c->head;
}

static amber_cobj **list_tail(amber_cache *c, const amber_cobj *o)
{
	return o->consumed ? &c->ctail : &c->tail;
}

static void unlink_lru(amber_cache *c, amber_cobj *o)
{
	if (o->prev)
		o->prev->next = o->next;
	else
		*list_head(c, o) = o->next;
	if (o->next)
		o->next->prev = o->prev;
	else
		*list_tail(c, o) = o->prev;
	o->prev = o->next = NULL;
}

/* o to the front of its list. */
static void push_front(amber_cache *c, amber_cobj *o)
{
	amber_cobj **head = list_head(c, o), **tail = list_tail(c, o);

	o->next = *head;
	o->prev = NULL;
	if (*head)
		(*head)->prev = o;
	*head = o;
	if (!*tail)
		*tail = o;
}

static void remove_obj(amber_cache *c, amber_cobj *o)
{
	amber_cobj **pp = &c->buckets[bucket(o->key)];

	while (*pp != o)
		pp = &(*pp)->hnext;
	*pp = o->hnext;
	unlink_lru(c, o);
	c->used -= o->size;
	if (o->consumed)
		c->consumed -= o->size;
}

static int over_cap(const amber_cache *c)
{
	return c->used > c->max;
}

static int over_consumed(const amber_cache *c)
{
	return c->consumed > AMBER_CACHE_CONSUMED || over_cap(c);
}

/* Unlink unheld entries of a list from o (its cold end) on while over(c),
 * chaining them onto dead. */
static amber_cobj *evict_list(amber_cache *c, amber_cobj *o, int (*over)(const amber_cache *),
			      amber_cobj *dead)
{
	for (amber_cobj *p; o && over(c); o = p) {
		p = o->prev;
		if (o->refs)
			continue;
		remove_obj(c, o);
		o->hnext = dead;
		dead = o;
	}
	return dead;
}

/* Evict unheld entries from the cold ends: the consumed ones first, the
 * oldest first, over their own bound or while the cache is over its cap;
 * then the others while it still is. */
static amber_cobj *evict(amber_cache *c)
{
	return evict_list(c, c->tail, over_cap, evict_list(c, c->ctail, over_consumed, NULL));
}

/* Free what evict() unlinked, outside the lock (free_fn may be slow). */
static void free_chain(amber_cache *c, amber_cobj *dead)
{
	size_t bytes = 0;

	while (dead) {
		amber_cobj *n = dead->hnext;

		bytes += dead->heap;
		obj_free(dead);
		dead = n;
	}
	if (bytes && atomic_fetch_add(&c->evicted, bytes) + bytes >= AMBER_CACHE_TRIM_EVERY &&
	    atomic_exchange(&c->evicted, 0) >= AMBER_CACHE_TRIM_EVERY) {
		atomic_fetch_add(&c->trims, 1);
		malloc_trim(0);
	}
}

/* Caller holds the lock: the loaded entry for key, held and made most
 * recently used, waiting while another thread loads it; NULL if absent. */
static amber_cobj *hold_loaded(amber_cache *c, const uint8_t key[AMBER_CKEY])
{
	amber_cobj *o;

	while ((o = find(c, key)) && o->loading)
		pthread_cond_wait(&c->loaded, &c->lock);
	if (o) {
		o->refs++;
		unlink_lru(c, o);
		if (o->consumed) {      /* wanted again */
			o->consumed = 0;
			c->consumed -= o->size;
		}
		push_front(c, o);
	}
	return o;
}

amber_cobj *amber_cache_get(amber_cache *c, const uint8_t key[AMBER_CKEY])
{
	amber_cobj *o;

	pthread_mutex_lock(&c->lock);
	o = hold_loaded(c, key);
	pthread_mutex_unlock(&c->lock);
	return o;
}

int amber_cache_has(amber_cache *c, const uint8_t key[AMBER_CKEY])
{
	int has;

	pthread_mutex_lock(&c->lock);
	has = find(c, key) != NULL;
	pthread_mutex_unlock(&c->lock);
	return has;
}

amber_cobj *amber_cache_put(amber_cache *c, const uint8_t key[AMBER_CKEY], void *data,
			    size_t size, void (*free_fn)(void *))
{
	amber_cobj *o = calloc(1, sizeof(*o)), *old, *dead;

	if (!o) {
		free_fn(data);
		return NULL;
	}
	memcpy(o->key, key, AMBER_CKEY);
	o->data = data;
	o->size = o->heap = size;
	o->free_fn = free_fn;
	pthread_mutex_lock(&c->lock);
	if ((old = hold_loaded(c, key))) {
		pthread_mutex_unlock(&c->lock);
		obj_free(o);
		return old;
	}
	o->refs = 1;
	o->hnext = c->buckets[bucket(key)];
	c->buckets[bucket(key)] = o;
	push_front(c, o);
	c->used += size;
	dead = evict(c);
	pthread_mutex_unlock(&c->lock);
	free_chain(c, dead);
	return o;
}

/* Caller holds the lock: drop a hold on o (consumed: it was read through,
 * to the cold end with the consumed entries), then evict.  What to free. */
static amber_cobj *release_locked(amber_cache *c, amber_cobj *o, int consumed)
{
	o->refs--;
	if (consumed && !o->consumed && !o->loading) {
		unlink_lru(c, o);
		o->consumed = 1;
		c->consumed += o->size;
		push_front(c, o);
	}
	return evict(c);
}

void amber_cache_release(amber_cache *c, amber_cobj *o)
{
	amber_cobj *dead;

	if (!o)
		return;
	pthread_mutex_lock(&c->lock);
	dead = release_locked(c, o, 0);
	pthread_mutex_unlock(&c->lock);
	free_chain(c, dead);
}

void amber_cache_release_served(amber_cache *c, amber_cobj *o, size_t bytes, size_t total)
{
	amber_cobj *dead;

	if (!o)
		return;
	pthread_mutex_lock(&c->lock);
	o->served += bytes;
	dead = release_locked(c, o, o->served >= total);
	pthread_mutex_unlock(&c->lock);
	free_chain(c, dead);
}

amber_cobj *amber_cache_acquire(amber_cache *c, const uint8_t key[AMBER_CKEY], int *mine)
{
	amber_cobj *o;

	*mine = 0;
	pthread_mutex_lock(&c->lock);
	if (!(o = hold_loaded(c, key)) && (o = calloc(1, sizeof(*o)))) {
		memcpy(o->key, key, AMBER_CKEY);
		o->refs = 1;
		o->loading = 1;
		o->hnext = c->buckets[bucket(key)];
		c->buckets[bucket(key)] = o;
		push_front(c, o);
		*mine = 1;
	}
	pthread_mutex_unlock(&c->lock);
	return o;
}

void amber_cache_fill(amber_cache *c, amber_cobj *o, void *data, size_t size, size_t heap,
		      void (*free_fn)(void *))
{
	amber_cobj *dead;

	pthread_mutex_lock(&c->lock);
	o->data = data;
	o->size = size;
	o->heap = heap < size ? heap : size;
	o->free_fn = free_fn;
	o->loading = 0;
	c->used += size;
	dead = evict(c);
	pthread_cond_broadcast(&c->loaded);
	pthread_mutex_unlock(&c->lock);
	free_chain(c, dead);
}

size_t amber_cache_trims(amber_cache *c)
{
	return atomic_load(&c->trims);
}

void amber_cache_abandon(amber_cache *c, amber_cobj *o)
{
	pthread_mutex_lock(&c->lock);
	remove_obj(c, o);
	pthread_cond_broadcast(&c->loaded);
	pthread_mutex_unlock(&c->lock);
	free(o);
}
