/*
 * A bounded cache of decoded objects (chunks, chunk indexes), shared by all
 * snapshots and threads of an archive.  Entries are reference-counted: a
 * reader holds one while it copies out of it, and eviction (least recently
 * used first) skips held entries, so the cap can be exceeded only by what
 * readers hold at that moment.
 */
#ifndef AMBER_CACHE_H
#define AMBER_CACHE_H

#include <stddef.h>
#include <stdint.h>

/*
 * A key names a decoded object by everything its decoding checked, so an
 * entry is only ever served for a link that would decode to the same thing:
 *   object id (20) | kind (1) | mac (24) | declared size, u64 LE (8) |
 *   tree id (20; zero when the decode checked no tree)
 * The hash bucket comes from the object id and the kind.
 */
#define AMBER_CKEY 73

/* The most bytes of consumed entries kept (amber_cache_release_served). */
#define AMBER_CACHE_CONSUMED ((size_t)8 << 20)
/* Heap bytes evicted between two trims (amber_cache_trims). */
#define AMBER_CACHE_TRIM_EVERY ((size_t)32 << 20)

typedef struct amber_cache amber_cache;

typedef struct amber_cobj {
	uint8_t key[AMBER_CKEY];
	void *data;
	size_t size;                  /* accounted bytes */
	size_t heap;                  /* of them on the heap (freeing leaves holes there) */
	void (*free_fn)(void *data);
	/* private to cache.c, under its lock */
	unsigned refs;
	int loading;                  /* reserved by amber_cache_acquire, no data yet */
	int consumed;                 /* read through: first to go (amber_cache_release_served) */
	size_t served;                /* bytes handed out (amber_cache_release_served) */
	struct amber_cobj *prev, *next, *hnext;
} amber_cobj;

amber_cache *amber_cache_new(size_t max_bytes);
void amber_cache_free(amber_cache *c);

/** A held entry for key, or NULL.  Release with amber_cache_release(). */
amber_cobj *amber_cache_get(amber_cache *c, const uint8_t key[AMBER_CKEY]);

/**
 * Insert data (ownership passes to the cache, freed with free_fn) and
 * return the held entry; if key is already present, data is freed and the
 * existing entry is returned instead.  NULL only on out of memory (data
 * freed).
 */
amber_cobj *amber_cache_put(amber_cache *c, const uint8_t key[AMBER_CKEY], void *data,
			    size_t size, void (*free_fn)(void *));

void amber_cache_release(amber_cache *c, amber_cobj *o);


/**
 * Release o after handing out `bytes` of it to a reader that keeps them
 * (the kernel's page cache).  Once every one of its `total` bytes was
 * handed out, whatever the order of the reads, it is consumed: it joins
 * the consumed entries at the cold end, which are kept to AMBER_CACHE_CONSUMED
 * bytes (another file sharing the chunk, read alongside, still finds it;
 * a get takes it back).  So a long read decodes into a few MiB of memory
 * that stay in the processor's caches, instead of filling the whole cap
 * with bytes nobody will ask for again.
 */
void amber_cache_release_served(amber_cache *c, amber_cobj *o, size_t bytes, size_t total);

/**
 * Load-once access: the held entry for key, waiting while another thread
 * loads it.  If nobody has it, an empty entry is reserved and *mine is set
 * to 1: the caller loads the data and then calls amber_cache_fill() (or
 * amber_cache_abandon() on failure, after which waiters try themselves).
 * So concurrent readers of one chunk decode it once.  NULL only on out of
 * memory.
 */
amber_cobj *amber_cache_acquire(amber_cache *c, const uint8_t key[AMBER_CKEY], int *mine);
/* (heap: how much of size is heap memory, see amber_cache_trims) */
void amber_cache_fill(amber_cache *c, amber_cobj *o, void *data, size_t size, size_t heap,
		      void (*free_fn)(void *));
void amber_cache_abandon(amber_cache *c, amber_cobj *o);

/** The accounted bytes held now (*used) and the cap (*max). */
void amber_cache_usage(amber_cache *c, size_t *used, size_t *max);

/**
 * How many times the cache handed free heap pages back (malloc_trim):
 * once per AMBER_CACHE_TRIM_EVERY bytes of heap memory evicted.  Memory
 * mapped on its own (decoded chunks) leaves no holes and counts nothing.
 */
size_t amber_cache_trims(amber_cache *c);

/** 1 if key is present (no hold taken). */
int amber_cache_has(amber_cache *c, const uint8_t key[AMBER_CKEY]);

#endif
