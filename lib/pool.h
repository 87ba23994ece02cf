/*
 * A small worker pool for the snapshot writer: the walking thread reads and
 * chunks, workers compress, encrypt and append to the pack.  Submitting
 * blocks while more than `max_cost` bytes are in flight, which bounds the
 * writer's memory whatever the size of the files.
 */
#ifndef AMBER_POOL_H
#define AMBER_POOL_H

#include <stddef.h>

typedef struct amber_pool amber_pool;
typedef struct amber_task amber_task;

/** A set of tasks one can wait for. */
typedef struct amber_group {
	size_t pending;      /* protected by the pool's lock */
} amber_group;

struct amber_task {
	void (*run)(amber_task *t);
	size_t cost;         /* bytes held until run() returns */
	amber_group *group;
	amber_task *next;    /* queue link, owned by the pool */
};

/** @return 0 or AMBER_ERROR. */
int amber_pool_new(amber_pool **out, int threads, size_t max_cost);

/** Queue t (which must stay valid until it has run) in group g. */
void amber_pool_submit(amber_pool *p, amber_task *t, amber_group *g);

/** Wait until every task of g has run. */
void amber_pool_wait(amber_pool *p, amber_group *g);

/** Stop the workers (after the queue drains) and free.  NULL-safe. */
void amber_pool_free(amber_pool *p);

#endif
