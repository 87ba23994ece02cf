/*
 * The writer's worker pool: tasks run exactly once, groups are waited for
 * separately, the in-flight cost bound holds, and work really is parallel.
 * Every wait that could hang on a broken pool has a timeout, so a bug fails
 * the test instead of stalling it.
 */
#include "amber.h"
#include "pool.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define OK(expr)                                                                     \
	do {                                                                         \
		int rc_ = (expr);                                                    \
		cr_assert_eq(rc_, 0, "%s = %d: %s", #expr, rc_, amber_error_last()); \
	} while (0)

TestSuite(pool);

/* Helpers ---------------------------------------------------------------------- */

static struct timespec deadline_in(int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* A gate tasks block on until the test opens it (or a timeout passes). */
typedef struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int open;
	int waiting;
} gate;

static void gate_init(gate *g)
{
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->open = 0;
	g->waiting = 0;
}

/* @return 1 if the gate opened, 0 on timeout. */
static int gate_pass(gate *g, int timeout_ms)
{
	struct timespec ts = deadline_in(timeout_ms);
	int rc = 0;

	pthread_mutex_lock(&g->lock);
	g->waiting++;
	pthread_cond_broadcast(&g->cond);
	while (!g->open && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&g->cond, &g->lock, &ts);
	g->waiting--;
	rc = g->open;
	pthread_mutex_unlock(&g->lock);
	return rc;
}

static void gate_open(gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = 1;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

/* Wait until n tasks are blocked at the gate; 0 on timeout. */
static int gate_wait_for(gate *g, int n, int timeout_ms)
{
	struct timespec ts = deadline_in(timeout_ms);
	int rc = 0, ok;

	pthread_mutex_lock(&g->lock);
	while (g->waiting < n && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&g->cond, &g->lock, &ts);
	ok = g->waiting >= n;
	pthread_mutex_unlock(&g->lock);
	return ok;
}

/* Run fn(arg) in a thread; `done` tells whether it finished within ms. */
typedef struct bg {
	pthread_t th;
	atomic_int finished;
	void (*fn)(void *);
	void *arg;
} bg;

static void *bg_main(void *p)
{
	bg *b = p;

	b->fn(b->arg);
	atomic_store(&b->finished, 1);
	return NULL;
}

static void bg_start(bg *b, void (*fn)(void *), void *arg)
{
	atomic_store(&b->finished, 0);
	b->fn = fn;
	b->arg = arg;
	cr_assert_eq(pthread_create(&b->th, NULL, bg_main, b), 0);
}

/* 1 if it finished within ms (and was joined); 0 if still running. */
static int bg_join(bg *b, int ms)
{
	struct timespec ts = deadline_in(ms);

	return pthread_timedjoin_np(b->th, NULL, &ts) == 0;
}

/* Tasks ---------------------------------------------------------------------------- */

typedef struct ctask {
	amber_task t;
	atomic_int *runs;     /* incremented once per run */
	gate *gate;           /* block here first, if set */
	atomic_size_t *cur;   /* cost currently running */
	atomic_size_t *max;   /* max of *cur observed */
	int sleep_ms;
	atomic_int gate_timeouts;
} ctask;

static void ctask_run(amber_task *t)
{
	ctask *c = (ctask *)t;

	if (c->cur) {
		size_t now = atomic_fetch_add(c->cur, c->t.cost) + c->t.cost;
		size_t m = atomic_load(c->max);

		while (now > m && !atomic_compare_exchange_weak(c->max, &m, now))
			;
	}
	if (c->gate && !gate_pass(c->gate, 10000))
		atomic_fetch_add(&c->gate_timeouts, 1);
	if (c->sleep_ms)
		sleep_ms(c->sleep_ms);
	if (c->cur)
		atomic_fetch_sub(c->cur, c->t.cost);
	atomic_fetch_add(c->runs, 1);   /* last: the task may be freed after this */
}

static void ctask_init(ctask *c, atomic_int *runs, size_t cost)
{
	memset(c, 0, sizeof(*c));
	c->t.run = ctask_run;
	c->t.cost = cost;
	c->runs = runs;
}

/* Exactly once ------------------------------------------------------------------------ */

Test(pool, every_task_runs_exactly_once)
{
	enum { N = 2000 };
	amber_pool *p;
	amber_group g = {0};
	ctask *t = calloc(N, sizeof(*t));
	atomic_int *runs = calloc(N, sizeof(*runs));

	cr_assert(t && runs);
	OK(amber_pool_new(&p, 4, 64));
	for (int i = 0; i < N; i++) {
		ctask_init(&t[i], &runs[i], (size_t)(i % 9));
		amber_pool_submit(p, &t[i].t, &g);
	}
	amber_pool_wait(p, &g);
	for (int i = 0; i < N; i++)
		cr_assert_eq(atomic_load(&runs[i]), 1, "task %d ran %d times", i,
			     atomic_load(&runs[i]));
	cr_assert_eq(g.pending, 0);
	amber_pool_free(p);
	for (int i = 0; i < N; i++)
		cr_assert_eq(atomic_load(&runs[i]), 1, "task %d ran again at free", i);
	free(t);
	free(runs);
}

Test(pool, free_runs_tasks_still_queued)
{
	enum { N = 200 };
	amber_pool *p;
	amber_group g = {0};
	ctask t[N];
	atomic_int runs = 0;

	OK(amber_pool_new(&p, 2, 1 << 20));
	for (int i = 0; i < N; i++) {
		ctask_init(&t[i], &runs, 1);
		amber_pool_submit(p, &t[i].t, &g);
	}
	amber_pool_free(p);   /* no wait: the queue drains first */
	cr_assert_eq(atomic_load(&runs), N);
}

/* Groups ------------------------------------------------------------------------------ */

typedef struct waitarg {
	amber_pool *p;
	amber_group *g;
} waitarg;

static void do_wait(void *arg)
{
	waitarg *w = arg;

	amber_pool_wait(w->p, w->g);
}

Test(pool, wait_returns_when_its_group_is_done_while_another_is_blocked)
{
	enum { NA = 50 };
	amber_pool *p;
	amber_group ga = {0}, gb = {0};
	ctask a[NA], b;
	atomic_int runs_a = 0, runs_b = 0;
	gate gt;
	waitarg w = {0};
	bg waiter;

	gate_init(&gt);
	OK(amber_pool_new(&p, 2, 1 << 20));
	/* B occupies one worker until the gate opens */
	ctask_init(&b, &runs_b, 1);
	b.gate = &gt;
	amber_pool_submit(p, &b.t, &gb);
	cr_assert(gate_wait_for(&gt, 1, 5000), "the B task never started");
	for (int i = 0; i < NA; i++) {
		ctask_init(&a[i], &runs_a, 1);
		a[i].sleep_ms = i % 5 == 0 ? 1 : 0;
		amber_pool_submit(p, &a[i].t, &ga);
	}
	w.p = p;
	w.g = &ga;
	bg_start(&waiter, do_wait, &w);
	if (!bg_join(&waiter, 5000)) {
		gate_open(&gt);
		bg_join(&waiter, 5000);
		cr_assert_fail("waiting for group A also waited for group B");
	}
	cr_assert_eq(atomic_load(&runs_a), NA, "wait(A) returned before A's tasks all ran");
	cr_assert_eq(atomic_load(&runs_b), 0);

	/* waiting for B really waits for B */
	w.g = &gb;
	bg_start(&waiter, do_wait, &w);
	cr_assert_not(bg_join(&waiter, 200), "wait(B) returned while B's task was blocked");
	gate_open(&gt);
	cr_assert(bg_join(&waiter, 5000), "wait(B) did not return after B finished");
	cr_assert_eq(atomic_load(&runs_b), 1);
	cr_assert_eq(atomic_load(&b.gate_timeouts), 0);
	amber_pool_free(p);
}

Test(pool, wait_on_an_empty_group_returns_at_once)
{
	amber_pool *p;
	amber_group g = {0};

	OK(amber_pool_new(&p, 1, 10));
	amber_pool_wait(p, &g);
	amber_pool_free(p);
}

Test(pool, groups_can_be_reused_after_wait)
{
	amber_pool *p;
	amber_group g = {0};
	ctask t[30];
	atomic_int runs = 0;

	OK(amber_pool_new(&p, 3, 100));
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 10; i++) {
			ctask_init(&t[round * 10 + i], &runs, 7);
			amber_pool_submit(p, &t[round * 10 + i].t, &g);
		}
		amber_pool_wait(p, &g);
		cr_assert_eq(atomic_load(&runs), (round + 1) * 10);
	}
	amber_pool_free(p);
}

/* Cost bound -------------------------------------------------------------------------- */

Test(pool, in_flight_cost_never_exceeds_max_cost)
{
	enum { N = 60, M = 1000 };
	amber_pool *p;
	amber_group g = {0};
	ctask t[N];
	atomic_int runs = 0;
	atomic_size_t cur = 0, max = 0;

	/* more workers than the bound admits: only the bound can limit them */
	OK(amber_pool_new(&p, 8, M));
	for (int i = 0; i < N; i++) {
		ctask_init(&t[i], &runs, M / 4);
		t[i].cur = &cur;
		t[i].max = &max;
		t[i].sleep_ms = 3;
		amber_pool_submit(p, &t[i].t, &g);
	}
	amber_pool_wait(p, &g);
	cr_assert_eq(atomic_load(&runs), N);
	cr_assert_leq(atomic_load(&max), (size_t)M, "%zu bytes in flight, bound %d",
		      atomic_load(&max), M);
	cr_assert_gt(atomic_load(&max), (size_t)(M / 4), "tasks never overlapped: test too weak");
	amber_pool_free(p);
}

typedef struct subarg {
	amber_pool *p;
	amber_task *t;
	amber_group *g;
} subarg;

static void do_submit(void *arg)
{
	subarg *s = arg;

	amber_pool_submit(s->p, s->t, s->g);
}

Test(pool, task_larger_than_max_cost_is_admitted_alone)
{
	enum { M = 1000 };
	amber_pool *p;
	amber_group g = {0};
	ctask big, small;
	atomic_int runs_big = 0, runs_small = 0;
	atomic_size_t cur = 0, max = 0;
	gate gt;
	subarg sa;
	bg sub;

	gate_init(&gt);
	OK(amber_pool_new(&p, 4, M));
	ctask_init(&big, &runs_big, 5 * M);
	big.gate = &gt;
	big.cur = &cur;
	big.max = &max;
	sa = (subarg){p, &big.t, &g};
	bg_start(&sub, do_submit, &sa);
	cr_assert(bg_join(&sub, 5000), "a task larger than max_cost was never admitted");
	cr_assert(gate_wait_for(&gt, 1, 5000), "the large task never started");

	/* while it runs, even a tiny task must wait */
	ctask_init(&small, &runs_small, 1);
	small.cur = &cur;
	small.max = &max;
	sa = (subarg){p, &small.t, &g};
	bg_start(&sub, do_submit, &sa);
	if (bg_join(&sub, 300)) {
		gate_open(&gt);
		amber_pool_wait(p, &g);
		amber_pool_free(p);
		cr_assert_fail("a task was admitted beside one larger than max_cost");
	}
	cr_assert_eq(atomic_load(&runs_small), 0);
	gate_open(&gt);
	cr_assert(bg_join(&sub, 5000), "the small task was not admitted after the large one");
	amber_pool_wait(p, &g);
	cr_assert_eq(atomic_load(&runs_big), 1);
	cr_assert_eq(atomic_load(&runs_small), 1);
	cr_assert_eq(atomic_load(&max), (size_t)5 * M, "the large task did not run alone");
	amber_pool_free(p);
}

Test(pool, task_larger_than_max_cost_waits_for_running_tasks)
{
	enum { M = 1000 };
	amber_pool *p;
	amber_group g = {0};
	ctask small, big;
	atomic_int runs_small = 0, runs_big = 0;
	gate gt;
	subarg sa;
	bg sub;

	gate_init(&gt);
	OK(amber_pool_new(&p, 4, M));
	ctask_init(&small, &runs_small, 10);
	small.gate = &gt;
	amber_pool_submit(p, &small.t, &g);
	cr_assert(gate_wait_for(&gt, 1, 5000));
	ctask_init(&big, &runs_big, 2 * M);
	sa = (subarg){p, &big.t, &g};
	bg_start(&sub, do_submit, &sa);
	if (bg_join(&sub, 300)) {
		gate_open(&gt);
		amber_pool_wait(p, &g);
		amber_pool_free(p);
		cr_assert_fail("a task larger than max_cost was admitted beside another");
	}
	gate_open(&gt);
	cr_assert(bg_join(&sub, 5000));
	amber_pool_wait(p, &g);
	cr_assert_eq(atomic_load(&runs_big), 1);
	amber_pool_free(p);
}

/* Lifecycle --------------------------------------------------------------------------- */

Test(pool, free_with_empty_queue_returns)
{
	for (int threads = 1; threads <= 8; threads *= 2) {
		amber_pool *p = NULL;

		OK(amber_pool_new(&p, threads, 100));
		cr_assert_not_null(p);
		amber_pool_free(p);
	}
	amber_pool_free(NULL);
}

/* Parallelism --------------------------------------------------------------------------- */

typedef struct ptask {
	amber_task t;
	pthread_t self;
	int met;              /* both tasks were inside at once */
	struct rendezvous *rv;
} ptask;

struct rendezvous {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int arrived;
};

static void ptask_run(amber_task *t)
{
	ptask *pt = (ptask *)t;
	struct rendezvous *rv = pt->rv;
	struct timespec ts = deadline_in(5000);
	int rc = 0;

	pt->self = pthread_self();
	pthread_mutex_lock(&rv->lock);
	rv->arrived++;
	pthread_cond_broadcast(&rv->cond);
	while (rv->arrived < 2 && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&rv->cond, &rv->lock, &ts);
	pt->met = rv->arrived >= 2;
	pthread_mutex_unlock(&rv->lock);
}

Test(pool, two_threads_run_two_tasks_at_once)
{
	amber_pool *p;
	amber_group g = {0};
	struct rendezvous rv = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
	ptask t[2];

	OK(amber_pool_new(&p, 2, 100));
	for (int i = 0; i < 2; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		t[i].t.run = ptask_run;
		t[i].t.cost = 1;
		t[i].rv = &rv;
		amber_pool_submit(p, &t[i].t, &g);
	}
	amber_pool_wait(p, &g);
	cr_assert(t[0].met && t[1].met, "the two tasks never ran at the same time");
	cr_assert_not(pthread_equal(t[0].self, t[1].self), "both tasks ran on one thread");
	cr_assert_not(pthread_equal(t[0].self, pthread_self()), "a task ran on the submitter");
	amber_pool_free(p);
}
