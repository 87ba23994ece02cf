#include "pool.h"

#include "amber.h"
#include "error.h"

#include <pthread.h>
#include <stdlib.h>

struct amber_pool {
	pthread_mutex_t lock;
	pthread_cond_t work;     /* a task was queued or stop was set */
	pthread_cond_t done;     /* a task finished */
	amber_task *head, *tail; /* queue, protected by lock */
	size_t inflight, max_cost;
	int stop, nthreads;
	pthread_t *threads;
};

static void *worker(void *arg)
{
	amber_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		amber_task *t;

		while (!p->head && !p->stop)
			pthread_cond_wait(&p->work, &p->lock);
		if (!p->head)
			break;
		t = p->head;
		p->head = t->next;
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->lock);
		size_t cost = t->cost;
		amber_group *g = t->group;
		t->run(t);  /* t may be gone after this */
		pthread_mutex_lock(&p->lock);
		p->inflight -= cost;
		g->pending--;
		pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int amber_pool_new(amber_pool **out, int threads, size_t max_cost)
{
	amber_pool *p = calloc(1, sizeof(*p));

	if (!p || !(p->threads = calloc((size_t)threads, sizeof(pthread_t)))) {
		free(p);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	p->max_cost = max_cost;
	for (; p->nthreads < threads; p->nthreads++)
		if (pthread_create(&p->threads[p->nthreads], NULL, worker, p) != 0)
			break;
	if (p->nthreads == 0) {
		amber_pool_free(p);
		return amber_fail(AMBER_ERROR, "cannot start worker threads");
	}
	*out = p;
	return 0;
}

void amber_pool_submit(amber_pool *p, amber_task *t, amber_group *g)
{
	pthread_mutex_lock(&p->lock);
	while (p->inflight > 0 && p->inflight + t->cost > p->max_cost)
		pthread_cond_wait(&p->done, &p->lock);
	t->group = g;
	t->next = NULL;
	g->pending++;
	p->inflight += t->cost;
	if (p->tail)
		p->tail->next = t;
	else
		p->head = t;
	p->tail = t;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->lock);
}

void amber_pool_wait(amber_pool *p, amber_group *g)
{
	pthread_mutex_lock(&p->lock);
	while (g->pending)
		pthread_cond_wait(&p->done, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

void amber_pool_free(amber_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->done);
	free(p->threads);
	free(p);
}
