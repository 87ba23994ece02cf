/*
 * verify --read-data: every distinct chunk decoded once, on every core, in
 * pack order.
 *
 * The keyed walk (verify.c) collects each distinct chunk, keyed by all the
 * reader checks (object id, mac, declared length), as a job.  Here the jobs
 * are sorted by where their objects lie in the pack files and taken in turn
 * from one shared counter by the worker threads, so each pack is read front
 * to back: the threads interleave, but the offsets asked for only grow, and
 * the kernel's read-ahead sees one sequential stream.  A worker keeps its
 * two buffers (the object, the plaintext) for the whole run, so there is no
 * allocation and no page fault per chunk, and nothing goes through the
 * archive's cache, which a pass over every chunk would only churn.
 *
 * Sharing: each job is written only by the thread that took it; `next` and
 * the counters are atomics; the odb is thread-safe (store.c), the codec
 * keeps a zstd context per thread, and error messages are thread-local.
 * The caller's progress callback runs on the calling thread only.
 */
#include "verify_data.h"

#include "archive.h"
#include "chunker.h"
#include "codec.h"
#include "error.h"
#include "store.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64u
#define RAW_MAX (AMBER_CHUNK_MAX + AMBER_FRAME_HDR + AMBER_INNER_HDR + 64)
#define PROGRESS_NS 100000000

struct run {
	amber_archive *a;
	amber_vjob *jobs;
	size_t n;
	atomic_size_t next;
	atomic_uint_fast64_t done, failed, raw_bytes, plain_bytes;
	void (*progress)(const amber_vdata_stats *st, void *payload);
	void *payload;
	int64_t last;           /* the caller's last progress call */
	unsigned threads;
};

struct worker {
	struct run *r;
	amber_buf raw, out;
	int caller;             /* 1 for the calling thread */
	pthread_t tid;
};

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void counters(amber_vdata_stats *st, struct run *r)
{
	st->done = atomic_load(&r->done);
	st->failed = atomic_load(&r->failed);
	st->raw_bytes = atomic_load(&r->raw_bytes);
	st->plain_bytes = atomic_load(&r->plain_bytes);
	st->threads = r->threads;
}

static void progress(struct run *r, int force)
{
	amber_vdata_stats st;
	int64_t now;

	if (!r->progress)
		return;
	now = mono_ns();
	if (!force && now - r->last < PROGRESS_NS)
		return;
	r->last = now;
	counters(&st, r);
	r->progress(&st, r->payload);
}

/* The checks of amber_chunk_get (file.c: decode_chunk, amber_archive_read_obj). */
static int decode_one(struct worker *w, amber_vjob *j)
{
	amber_archive *a = w->r->a;
	int type = 0, rc;

	amber_buf_reset(&w->raw);
	amber_buf_reset(&w->out);
	rc = amber_store_read(&w->raw, &type, a->store, j->link.oid, RAW_MAX);
	j->raw = w->raw.len;
	if (rc == 0 && type != AMBER_GIT_BLOB)
		rc = AMBER_EAUTH;
	if (rc == 0)
		rc = amber_codec_decode(&w->out, amber_archive_keys(a), AMBER_OBJ_CHUNK,
					j->link.mac, w->raw.data, w->raw.len, AMBER_CHUNK_MAX);
	if (rc == 0 && w->out.len != j->len)
		rc = AMBER_ECORRUPT;
	amber_error_clear();
	return rc;
}

static void run_jobs(struct worker *w)
{
	struct run *r = w->r;
	size_t i;

	while ((i = atomic_fetch_add(&r->next, 1)) < r->n) {
		amber_vjob *j = &r->jobs[i];

		j->rc = decode_one(w, j);
		atomic_fetch_add(&r->raw_bytes, j->raw);
		if (j->rc == 0) {
			atomic_fetch_add(&r->plain_bytes, j->len);
			atomic_fetch_add(&r->a->counters.chunks_decoded, 1);
			atomic_fetch_add(&r->a->counters.chunk_bytes, j->len);
		} else {
			atomic_fetch_add(&r->failed, 1);
		}
		atomic_fetch_add(&r->done, 1);
		if (w->caller)
			progress(r, 0);
	}
}

static void *worker_main(void *p)
{
	run_jobs(p);
	return NULL;
}

static int by_position(const void *x, const void *y)
{
	const amber_vjob *a = x, *b = y;
	uint32_t pa = a->pack ? a->pack : UINT32_MAX, pb = b->pack ? b->pack : UINT32_MAX;

	if (pa != pb)
		return pa < pb ? -1 : 1;
	if (a->off != b->off)
		return a->off < b->off ? -1 : 1;
	return memcmp(a->link.oid, b->link.oid, 20);
}

/* Sort the jobs into pack order (loose objects last). */
static int pack_order(amber_archive *a, amber_vjob *jobs, size_t n)
{
	uint8_t *oids;
	amber_packpos *pos;
	int rc;

	if (n == 0)
		return 0;
	oids = calloc(n, 20);
	pos = calloc(n, sizeof(*pos));
	rc = oids && pos ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	for (size_t i = 0; rc == 0 && i < n; i++)
		memcpy(oids + 20 * i, jobs[i].link.oid, 20);
	if (rc == 0)
		rc = amber_store_pack_positions(pos, a->store, oids, n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		jobs[i].pack = pos[i].pack;
		jobs[i].off = pos[i].off;
	}
	if (rc == 0)
		qsort(jobs, n, sizeof(*jobs), by_position);
	free(pos);
	free(oids);
	return rc;
}

static unsigned thread_count(unsigned want, size_t n)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (!want)
		want = cpus > 0 ? (unsigned)cpus : 1;
	if (want > MAX_THREADS)
		want = MAX_THREADS;
	if (want > n)
		want = n ? (unsigned)n : 1;
	return want;
}

static void worker_dispose(struct worker *w)
{
	if (w->out.data)
		sodium_memzero(w->out.data, w->out.cap);
	amber_buf_dispose(&w->out);
	amber_buf_dispose(&w->raw);
}

int amber_vdata_run(amber_vdata_stats *st, amber_archive *a, amber_vjob *jobs, size_t n,
		    unsigned threads, void (*progress_cb)(const amber_vdata_stats *st, void *payload),
		    void *payload)
{
	struct run r = {.a = a, .jobs = jobs, .n = n, .progress = progress_cb, .payload = payload};
	struct worker *w;
	unsigned started = 1;
	int rc = pack_order(a, jobs, n);

	r.threads = thread_count(threads, n);
	if (rc < 0 || !(w = calloc(r.threads, sizeof(*w))))
		return rc < 0 ? rc : amber_fail(AMBER_ERROR, "out of memory");
	for (unsigned i = 0; i < r.threads; i++) {
		w[i].r = &r;
		amber_buf_init(&w[i].raw, RAW_MAX);
		amber_buf_init(&w[i].out, AMBER_CHUNK_MAX + 64);
	}
	w[0].caller = 1;
	r.last = mono_ns();
	/* Fewer threads than asked if the system refuses more: the work gets done. */
	while (started < r.threads && pthread_create(&w[started].tid, NULL, worker_main,
						     &w[started]) == 0)
		started++;
	r.threads = started;
	run_jobs(&w[0]);
	for (unsigned i = 1; i < started; i++)
		pthread_join(w[i].tid, NULL);
	progress(&r, 1);
	counters(st, &r);
	for (unsigned i = 0; i < started; i++)
		worker_dispose(&w[i]);
	free(w);
	return 0;
}
