/*
 * verify's bulk work on every core, in pack order: the blobs of the
 * snapshot trees read and hashed (the structure pass), and with --read-data
 * every distinct chunk decoded once.
 *
 * verify.c collects the jobs: each blob once by id, each chunk once by all
 * the reader checks (object id, mac, declared length).  Here they are sorted
 * by where their objects lie in the pack files and taken in turn from one
 * shared counter by the worker threads, so each pack is read front to back:
 * the threads interleave, but the offsets asked for only grow, and the
 * kernel's read-ahead sees one sequential stream.  A worker keeps its
 * buffers (the object, the plaintext) for the whole run, so there is no
 * allocation and no page fault per object, and nothing goes through the
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

struct worker;

struct run {
	amber_archive *a;
	amber_store *st;        /* what the jobs are read through: a->store or a twin */
	int keep_order;         /* read the jobs in the order given, not in pack order */
	char *jobs;             /* n jobs of `size` bytes, each starting with an amber_vat */
	size_t n, size;
	void (*fn)(struct worker *w, void *job);
	size_t max;             /* the largest object a job may read */
	atomic_size_t next;
	atomic_uint_fast64_t done, failed, raw_bytes, plain_bytes;
	amber_vdata_progress progress;
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
static void decode_chunk(struct worker *w, void *job)
{
	amber_vjob *j = job;
	struct run *r = w->r;
	int type = 0, rc;

	amber_buf_reset(&w->raw);
	amber_buf_reset(&w->out);
	rc = amber_store_read(&w->raw, &type, r->st, j->link.oid, RAW_MAX);
	j->raw = w->raw.len;
	if (rc == 0 && type != AMBER_GIT_BLOB)
		rc = AMBER_EAUTH;
	if (rc == 0)
		rc = amber_codec_decode_in_place(&w->out, amber_archive_keys(r->a), AMBER_OBJ_CHUNK,
						 j->link.mac, w->raw.data, w->raw.len,
						 AMBER_CHUNK_MAX);
	if (rc == 0 && w->out.len != j->len)
		rc = AMBER_ECORRUPT;
	amber_error_clear();
	j->rc = rc;
	atomic_fetch_add(&r->raw_bytes, j->raw);
	if (rc < 0) {
		atomic_fetch_add(&r->failed, 1);
		return;
	}
	atomic_fetch_add(&r->plain_bytes, j->len);
	atomic_fetch_add(&r->a->counters.chunks_decoded, 1);
	atomic_fetch_add(&r->a->counters.chunk_bytes, j->len);
}

/* What obj_get and check_frame (verify.c) look at. */
static void read_blob(struct worker *w, void *job)
{
	amber_vblob *b = job;
	struct run *r = w->r;
	const uint8_t *d;
	uint8_t sum[20];

	amber_buf_reset(&w->raw);
	b->rc = amber_store_read(&w->raw, &b->type, r->st, b->at.oid, r->max);
	if (b->rc < 0) {
		b->msg = strdup(amber_error_last());
		amber_error_clear();
		atomic_fetch_add(&r->failed, 1);
		return;
	}
	d = w->raw.data;
	b->len = w->raw.len;
	amber_store_hash(sum, b->type, d, b->len);
	b->hash_ok = memcmp(sum, b->at.oid, 20) == 0;
	if (b->len >= AMBER_FRAME_HDR + AMBER_INNER_HDR && memcmp(d, "amb", 3) == 0 &&
	    d[3] == 1 && (d[4] == 'E' || d[4] == 'P'))
		b->frame = d[4];
	atomic_fetch_add(&r->raw_bytes, b->len);
	if (!b->hash_ok)
		atomic_fetch_add(&r->failed, 1);
}

static void run_jobs(struct worker *w)
{
	struct run *r = w->r;
	size_t i;

	while ((i = atomic_fetch_add(&r->next, 1)) < r->n) {
		r->fn(w, r->jobs + i * r->size);
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
	const amber_vat *a = x, *b = y;
	uint32_t pa = a->pack ? a->pack : UINT32_MAX, pb = b->pack ? b->pack : UINT32_MAX;

	if (pa != pb)
		return pa < pb ? -1 : 1;
	if (a->off != b->off)
		return a->off < b->off ? -1 : 1;
	return memcmp(a->oid, b->oid, 20);
}

/* Sort the jobs into pack order (loose objects last). */
static int pack_order(struct run *r)
{
	uint8_t *oids;
	amber_packpos *pos;
	int rc;

	if (r->n == 0)
		return 0;
	oids = calloc(r->n, 20);
	pos = calloc(r->n, sizeof(*pos));
	rc = oids && pos ? 0 : amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; rc == 0 && i < r->n; i++)
		memcpy(oids + 20 * i, ((amber_vat *)(r->jobs + i * r->size))->oid, 20);
	if (rc == 0)
		rc = amber_store_pack_positions(pos, r->st, oids, r->n);
	for (size_t i = 0; rc == 0 && i < r->n; i++) {
		amber_vat *at = (amber_vat *)(r->jobs + i * r->size);

		at->pack = pos[i].pack;
		at->off = pos[i].off;
	}
	if (rc == 0)
		qsort(r->jobs, r->n, r->size, by_position);
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

static int run_pool(amber_vdata_stats *st, struct run *r, unsigned threads)
{
	struct worker *w;
	unsigned started = 1;
	int rc = r->keep_order ? 0 : pack_order(r);

	r->threads = thread_count(threads, r->n);
	if (rc < 0 || !(w = calloc(r->threads, sizeof(*w))))
		return rc < 0 ? rc : amber_fail(AMBER_ERROR, "out of memory");
	for (unsigned i = 0; i < r->threads; i++) {
		w[i].r = r;
		amber_buf_init(&w[i].raw, r->max);
		amber_buf_init(&w[i].out, AMBER_CHUNK_MAX + 64);
	}
	w[0].caller = 1;
	r->last = mono_ns();
	/* Fewer threads than asked if the system refuses more: the work gets done. */
	while (started < r->threads &&
	       pthread_create(&w[started].tid, NULL, worker_main, &w[started]) == 0)
		started++;
	r->threads = started;
	run_jobs(&w[0]);
	for (unsigned i = 1; i < started; i++)
		pthread_join(w[i].tid, NULL);
	progress(r, 1);
	counters(st, r);
	for (unsigned i = 0; i < started; i++)
		worker_dispose(&w[i]);
	free(w);
	return 0;
}

int amber_vdata_run(amber_vdata_stats *st, amber_archive *a, amber_vjob *jobs, size_t n,
		    unsigned threads, amber_vdata_progress progress_cb, void *payload)
{
	struct run r = {.a = a, .st = a->store, .jobs = (char *)jobs, .n = n, .size = sizeof(*jobs),
			.fn = decode_chunk, .max = RAW_MAX, .progress = progress_cb,
			.payload = payload};

	for (size_t i = 0; i < n; i++)
		memcpy(jobs[i].at.oid, jobs[i].link.oid, 20);
	return run_pool(st, &r, threads);
}

int amber_vblob_run(amber_vdata_stats *st, amber_archive *a, amber_store *via, int keep_order,
		    amber_vblob *blobs, size_t n, size_t max, unsigned threads,
		    amber_vdata_progress progress_cb, void *payload)
{
	struct run r = {.a = a, .st = via ? via : a->store, .keep_order = keep_order,
			.jobs = (char *)blobs, .n = n, .size = sizeof(*blobs),
			.fn = read_blob, .max = max, .progress = progress_cb, .payload = payload};

	return run_pool(st, &r, threads);
}
