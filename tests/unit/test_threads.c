/*
 * The thread model that libamber(3) (THREADS) and amber.h document, on a
 * real encrypted archive: several threads reading through one archive
 * handle, one snapshot and one listing; errors kept per thread; and a
 * writer session snapshotting in one thread while others read the archive
 * through a second handle opened on the same path and another thread tags
 * snapshots through a third (each writer call takes the archive's lock or
 * returns AMBER_ELOCKED, and is then repeated).  scripts/tsan-run runs
 * these tests under ThreadSanitizer too.
 *
 * Criterion's assertions are made on the test's own thread only: the other
 * threads record their first failure, which the test then asserts is none.
 *
 * Criterion's runner cannot start under ThreadSanitizer (its inheritable
 * arena cannot be mapped: Criterion issue 274), so this file also builds
 * with AMBER_THREADS_MAIN as a program of its own (tests/threads_main, for
 * scripts/tsan-run): the same tests, run one after the other by the main()
 * at the end, with assertions that print what failed and exit 1.
 */
#ifdef AMBER_THREADS_MAIN
#define CRITERION_H_ /* not Criterion: the few assertions used here, below */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok, const char *what, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	if (ok)
		return;
	fprintf(stderr, "%s:%d: assertion failed: %s", file, line, what);
	va_start(ap, fmt);
	if (*fmt) {
		fputs(": ", stderr);
		vfprintf(stderr, fmt, ap);
	}
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define CHECK_(ok, what, ...) check(ok, what, __FILE__, __LINE__, "" __VA_ARGS__)
#define cr_assert(c, ...) CHECK_(!!(c), #c, __VA_ARGS__)
#define cr_assert_eq(a, b, ...) CHECK_((a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) CHECK_((a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_assert_not_null(p, ...) CHECK_((p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) CHECK_(strcmp(a, b) == 0, #a " == " #b, __VA_ARGS__)
#define TestSuite(...)
#define Test(suite, name, ...) static void name(void)
#endif

#include "libfix.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <time.h>

#define NFILES 6
#define READERS 4
#define GENERATIONS 8
#define GEN_BYTES ((size_t)96 << 10)

static uint8_t *want[NFILES];
static size_t want_len[NFILES];

/* Deterministic bytes: a file of `len` bytes for seed `seed`. */
static void fill_bytes(uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

/* base/rel into buf: at() is not for threads (it rotates static buffers). */
static const char *path_in(char *buf, size_t size, const char *rel)
{
	snprintf(buf, size, "%s/%s", base, rel);
	return buf;
}

static void write_bytes(const char *rel, const uint8_t *p, size_t len)
{
	int fd = open(at(rel), O_WRONLY | O_CREAT | O_TRUNC, 0644);

	cr_assert_geq(fd, 0, "create %s", rel);
	cr_assert_eq(write(fd, p, len), (ssize_t)len);
	close(fd);
}

static void setup(void)
{
	static const size_t sizes[NFILES] = {(size_t)3 << 20, 1, 4096, 70000, 200000, 12345};
	char name[32];

	scratch_make("threads");
	mkdir(at("src"), 0755);
	for (int i = 0; i < NFILES; i++) {
		want_len[i] = sizes[i];
		want[i] = malloc(sizes[i]);
		cr_assert_not_null(want[i]);
		fill_bytes(want[i], sizes[i], (uint64_t)i);
		snprintf(name, sizeof(name), "src/f%d", i);
		write_bytes(name, want[i], sizes[i]);
	}
	for (int i = 0; i < 6; i++) { /* directories, for restore's listing read-ahead */
		snprintf(name, sizeof(name), "src/d%d", i);
		mkdir(at(name), 0755);
		snprintf(name, sizeof(name), "src/d%d/f%d", i, i);
		write_bytes(name, want[i], want_len[i]);
	}
}

static void teardown(void)
{
	for (int i = 0; i < NFILES; i++)
		free(want[i]);
	scratch_remove();
}

TestSuite(threads, .init = setup, .fini = teardown, .timeout = 120);

/* A thread's first failure (empty: none). */
typedef struct failure {
	char msg[512];
} failure;

static int failed(failure *f, const char *fmt, ...)
{
	va_list ap;

	if (f->msg[0])
		return 1;
	va_start(ap, fmt);
	vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
	va_end(ap);
	return 1;
}

/* Whether bytes [off, off + len) of file k of snapshot s are the expected ones. */
static int read_matches(failure *f, amber_snapshot *s, const amber_entry *e, int k, uint64_t off,
			size_t len)
{
	uint8_t *buf = malloc(len ? len : 1);
	size_t n = 0;
	int rc;

	if (!buf)
		return !failed(f, "out of memory");
	rc = amber_file_read(&n, s, e, off, buf, len);
	if (rc < 0)
		failed(f, "f%d at %llu: %s", k, (unsigned long long)off, amber_error_last());
	else if (n != len || memcmp(buf, want[k] + off, len) != 0)
		failed(f, "f%d at %llu: %zu bytes read, not the %zu written", k,
		       (unsigned long long)off, n, len);
	free(buf);
	return rc == 0 && !f->msg[0];
}

/* The same through amber_file_pieces(): bytes pinned in the handle's shared cache. */
static void pieces_match(failure *f, amber_snapshot *s, const amber_entry *e, int k, uint64_t off,
			 size_t len)
{
	amber_piece p[16];
	size_t n = 0, nread = 0, at_ = 0;

	if (amber_file_pieces(p, 16, &n, &nread, s, e, off, len) < 0) {
		failed(f, "pieces of f%d at %llu: %s", k, (unsigned long long)off, amber_error_last());
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (memcmp(p[i].data, want[k] + off + at_, p[i].len) != 0)
			failed(f, "piece %zu of f%d at %llu differs", i, k, (unsigned long long)off);
		at_ += p[i].len;
	}
	if (at_ != nread || (nread == 0 && len))
		failed(f, "pieces of f%d at %llu: %zu bytes, %zu said", k, (unsigned long long)off,
		       at_, nread);
	amber_file_pieces_release(s, p, n);
}

/* ---- several threads, one archive handle, one snapshot, one listing ------------------- */

typedef struct shared_read {
	amber_archive *a;
	amber_snapshot *s;       /* shared by every thread */
	const amber_dir *root;   /* shared listing of the snapshot's root */
	const char *id;
	int t;
	failure f;
} shared_read;

static int count_change(const amber_change *c, void *payload)
{
	(*(int *)payload)++;
	return 0;
}

static void *shared_reader(void *arg)
{
	shared_read *x = arg;
	amber_entry *miss = NULL;
	char name[32], nosuch[32], out[64], path[4200];
	uint64_t r = (uint64_t)x->t * 7919 + 1;

	for (int i = 0; i < 24 && !x->f.msg[0]; i++) {
		int k = (x->t + i) % NFILES;
		const amber_entry *e;
		uint64_t off;
		size_t len;

		snprintf(name, sizeof(name), "f%d", k);
		e = amber_dir_lookup(x->root, name, strlen(name));
		if (!e) {
			failed(&x->f, "%s is not in the shared listing", name);
			break;
		}
		r = r * 6364136223846793005ull + 1442695040888963407ull;
		off = want_len[k] > 1 ? (r >> 33) % want_len[k] : 0;
		len = want_len[k] - off < 300000 ? want_len[k] - off : 300000;
		amber_file_prefetch(x->s, e, off); /* the handle's read-ahead worker, shared */
		read_matches(&x->f, x->s, e, k, off, len);
		pieces_match(&x->f, x->s, e, k, off, len);

		/* an error of this thread is this thread's, whatever the others do */
		snprintf(nosuch, sizeof(nosuch), "no-such-%d-%d", x->t, i);
		if (amber_stat(&miss, x->s, nosuch) != AMBER_ENOTFOUND)
			failed(&x->f, "stat of %s did not fail with ENOTFOUND", nosuch);
		else if (!strstr(amber_error_last(), nosuch))
			failed(&x->f, "thread %d's error names another path: %s", x->t,
			       amber_error_last());
		amber_entry_free(miss);
		miss = NULL;
	}
	if (!x->f.msg[0]) { /* a snapshot of its own on the shared handle: diff and restore */
		amber_snapshot *mine = NULL;
		int changes = 0;

		if (amber_snapshot_open(&mine, x->a, x->id) < 0)
			failed(&x->f, "open %s: %s", x->id, amber_error_last());
		else if (amber_diff(x->s, mine, "", 1, count_change, &changes) < 0 || changes)
			failed(&x->f, "diff of a snapshot with itself: %d changes (%s)", changes,
			       amber_error_last());
		snprintf(out, sizeof(out), "out%d", x->t);
		if (!x->f.msg[0] &&
		    amber_restore(NULL, mine, "", path_in(path, sizeof(path), out), NULL) < 0)
			failed(&x->f, "restore into %s: %s", out, amber_error_last());
		amber_snapshot_free(mine);
	}
	return NULL;
}

static void same_file(const char *rel, int k)
{
	FILE *f = fopen(at(rel), "rb");
	uint8_t *got = malloc(want_len[k] + 1);

	cr_assert_not_null(f, "open %s", rel);
	cr_assert_eq(fread(got, 1, want_len[k] + 1, f), want_len[k], "%s: wrong size", rel);
	cr_assert_eq(memcmp(got, want[k], want_len[k]), 0, "%s differs", rel);
	free(got);
	fclose(f);
}

Test(threads, several_threads_read_through_one_handle_one_snapshot_and_one_listing)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_entry *root = NULL;
	amber_dir *d = NULL;
	shared_read x[READERS];
	pthread_t th[READERS];
	char id[AMBER_OID_HEXSZ + 1], rel[64];

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&root, s, ""));
	OK(amber_dir_open(&d, s, root));
	for (int t = 0; t < READERS; t++) {
		x[t] = (shared_read){.a = a, .s = s, .root = d, .id = id, .t = t};
		cr_assert_eq(pthread_create(&th[t], NULL, shared_reader, &x[t]), 0);
	}
	for (int t = 0; t < READERS; t++)
		pthread_join(th[t], NULL);
	for (int t = 0; t < READERS; t++)
		cr_assert_eq(x[t].f.msg[0], '\0', "reader %d: %s", t, x[t].f.msg);
	for (int t = 0; t < READERS; t++)
		for (int k = 0; k < NFILES; k++) {
			snprintf(rel, sizeof(rel), "out%d/f%d", t, k);
			same_file(rel, k);
			snprintf(rel, sizeof(rel), "out%d/d%d/f%d", t, k, k);
			same_file(rel, k);
		}
	amber_dir_free(d);
	amber_entry_free(root);
	amber_snapshot_free(s);
	amber_archive_free(a);
}

/* ---- a writer session in one thread, readers on another handle -------------------------- */

typedef struct published {
	pthread_mutex_t lock;
	char id[GENERATIONS + 1][AMBER_OID_HEXSZ + 1]; /* [0]: before the session */
	int last;                                       /* newest published generation */
	atomic_int done;
} published;

typedef struct session_run {
	amber_writer *w;
	published *p;
	int locked;              /* calls that found the lock taken */
	failure f;
} session_run;

typedef struct session_read {
	amber_archive *a;        /* the readers' handle */
	published *p;
	int t;
	int seen;                /* generations read */
	failure f;
} session_read;

static void nap(void)
{
	struct timespec ms = {0, 1000000};

	nanosleep(&ms, NULL);
}

/* Tags made by a thread of its own, on a third handle, while the session writes. */
typedef struct tagger {
	amber_archive *a;
	published *p;
	int tags, locked;        /* tags made; calls that found the lock taken */
	char tagged[GENERATIONS + 1][AMBER_OID_HEXSZ + 1];
	failure f;
} tagger;

static void *session_tagger(void *arg)
{
	tagger *x = arg;
	char id[AMBER_OID_HEXSZ + 1], name[32];
	int last_done = 0, done_g = -1;

	while (!x->f.msg[0] && !last_done && x->tags <= GENERATIONS) {
		int rc, g;

		last_done = atomic_load(&x->p->done);
		pthread_mutex_lock(&x->p->lock);
		g = x->p->last;
		memcpy(id, x->p->id[g], sizeof(id));
		pthread_mutex_unlock(&x->p->lock);
		if (g == done_g) { /* nothing new to tag yet */
			nap();
			continue;
		}
		done_g = g;
		snprintf(name, sizeof(name), "gen-%d", g);
		/* one writer at a time: the lock is taken or not, never another error */
		while ((rc = amber_tag_create(x->a, id, name, NULL, NULL, 0)) == AMBER_ELOCKED) {
			x->locked++;
			nap();
		}
		if (rc < 0)
			failed(&x->f, "tag %s: %d %s", name, rc, amber_error_last());
		else
			memcpy(x->tagged[x->tags++], id, sizeof(id));
	}
	return NULL;
}

/* The content of src/gen at generation g. */
static uint8_t *gen_bytes(int g)
{
	uint8_t *p = malloc(GEN_BYTES);

	cr_assert_not_null(p);
	fill_bytes(p, GEN_BYTES, 1000 + (uint64_t)g);
	return p;
}

static void *session_writer(void *arg)
{
	session_run *x = arg;
	amber_dirty dirty = {.path = "gen"};
	char id[AMBER_OID_HEXSZ + 1], rel[] = "src/gen", path[4200];

	for (int g = 1; g <= GENERATIONS && !x->f.msg[0]; g++) {
		uint8_t buf[GEN_BYTES];
		int fd, rc;

		fill_bytes(buf, GEN_BYTES, 1000 + (uint64_t)g);
		fd = open(path_in(path, sizeof(path), rel), O_WRONLY | O_TRUNC);
		if (fd < 0 || write(fd, buf, GEN_BYTES) != (ssize_t)GEN_BYTES) {
			failed(&x->f, "cannot write %s", rel);
			if (fd >= 0)
				close(fd);
			break;
		}
		close(fd);
		/* the tagger may hold the lock: such a call is simply repeated */
		while ((rc = amber_writer_snapshot(id, NULL, x->w, &dirty, 1)) == AMBER_ELOCKED) {
			x->locked++;
			nap();
		}
		if (rc < 0) {
			failed(&x->f, "snapshot %d: %s", g, amber_error_last());
			break;
		}
		pthread_mutex_lock(&x->p->lock);
		memcpy(x->p->id[g], id, sizeof(id));
		x->p->last = g;
		pthread_mutex_unlock(&x->p->lock);
	}
	atomic_store(&x->p->done, 1);
	return NULL;
}

/* Which generation src/gen holds in snapshot s (-1: none of them). */
static int gen_of(failure *f, amber_snapshot *s)
{
	uint8_t *got = malloc(GEN_BYTES), *exp;
	amber_entry *e = NULL;
	size_t n = 0;
	int g = -1;

	if (!got || amber_stat(&e, s, "gen") < 0 ||
	    amber_file_read(&n, s, e, 0, got, GEN_BYTES) < 0 || n != GEN_BYTES) {
		failed(f, "read gen: %s", amber_error_last());
		g = -2;
	}
	exp = g == -1 ? malloc(GEN_BYTES) : NULL; /* not gen_bytes(): no assertion off the test's thread */
	for (int i = 0; exp && g == -1 && i <= GENERATIONS; i++) {
		fill_bytes(exp, GEN_BYTES, 1000 + (uint64_t)i);
		if (memcmp(got, exp, GEN_BYTES) == 0)
			g = i;
	}
	free(exp);
	if (g == -1)
		failed(f, "gen holds bytes of no generation written");
	amber_entry_free(e);
	free(got);
	return g;
}

static void *session_reader(void *arg)
{
	session_read *x = arg;
	amber_timeline *tl = NULL;
	char id[AMBER_OID_HEXSZ + 1], latest[AMBER_OID_HEXSZ + 1];
	int last_done = 0;

	if (x->t == 0 && amber_timeline_open(&tl, x->a, NULL) < 0)
		failed(&x->f, "timeline: %s", amber_error_last());
	while (!x->f.msg[0] && !last_done) {
		amber_snapshot *s = NULL, *l = NULL;
		amber_entry *e = NULL;
		size_t before = tl ? amber_timeline_count(tl) : 0;
		int g, lg;

		last_done = atomic_load(&x->p->done); /* one more round after the last */
		pthread_mutex_lock(&x->p->lock);
		g = x->p->last;
		memcpy(id, x->p->id[g], sizeof(id));
		pthread_mutex_unlock(&x->p->lock);

		/* a published snapshot reads back as written, on the other handle */
		if (amber_snapshot_open(&s, x->a, id) < 0) {
			failed(&x->f, "open generation %d (%s): %s", g, id, amber_error_last());
			break;
		}
		if (gen_of(&x->f, s) != g)
			failed(&x->f, "snapshot %s of generation %d holds another one", id, g);
		if (!x->f.msg[0] && amber_stat(&e, s, "f0") == 0)
			read_matches(&x->f, s, e, 0, (uint64_t)x->t * 500000, 500000);
		amber_entry_free(e);
		amber_snapshot_free(s);

		/* "latest" is never older than what was published before asking */
		if (!x->f.msg[0] && (amber_resolve(latest, x->a, NULL, "latest") < 0 ||
				     amber_snapshot_open(&l, x->a, latest) < 0))
			failed(&x->f, "latest: %s", amber_error_last());
		if (!x->f.msg[0] && (lg = gen_of(&x->f, l)) >= 0 && lg < g)
			failed(&x->f, "latest is generation %d after %d was published", lg, g);
		amber_snapshot_free(l);

		if (tl && !x->f.msg[0] && amber_timeline_refresh(tl, NULL) < 0)
			failed(&x->f, "timeline refresh: %s", amber_error_last());
		if (tl && amber_timeline_count(tl) < before)
			failed(&x->f, "the timeline lost snapshots");
		x->seen++;
	}
	if (tl && !x->f.msg[0] && amber_timeline_count(tl) != GENERATIONS + 1)
		failed(&x->f, "the timeline holds %zu snapshots after the session, not %d",
		       amber_timeline_count(tl), GENERATIONS + 1);
	amber_timeline_free(tl);
	return NULL;
}

Test(threads, a_writer_session_snapshots_while_other_threads_read_through_another_handle)
{
	amber_archive *a = fix_archive(0), *ra = NULL;
	amber_open_opts oo = fix_open_opts();
	amber_writer_opts wo = AMBER_WRITER_OPTS_INIT;
	published p = {.lock = PTHREAD_MUTEX_INITIALIZER};
	session_run wr = {.p = &p};
	session_read rd[READERS - 1];
	tagger tg = {.p = &p};
	pthread_t wt, tt, th[READERS - 1];
	uint8_t *g0 = gen_bytes(0);
	char latest[AMBER_OID_HEXSZ + 1];

	write_bytes("src/gen", g0, GEN_BYTES);
	free(g0);
	fix_snapshot(p.id[0], a, 1);
	wo.snap.threads = 2;
	OK(amber_writer_open(&wr.w, a, at("src"), &wo));
	OK(amber_archive_open_ext(&ra, at("archive"), &oo));
	OK(amber_archive_unlock(ra, (const unsigned char *)PASS, strlen(PASS)));
	OK(amber_archive_open_ext(&tg.a, at("archive"), &oo));
	OK(amber_archive_unlock(tg.a, (const unsigned char *)PASS, strlen(PASS)));

	for (int t = 0; t < READERS - 1; t++) {
		rd[t] = (session_read){.a = ra, .p = &p, .t = t};
		cr_assert_eq(pthread_create(&th[t], NULL, session_reader, &rd[t]), 0);
	}
	cr_assert_eq(pthread_create(&tt, NULL, session_tagger, &tg), 0);
	cr_assert_eq(pthread_create(&wt, NULL, session_writer, &wr), 0);
	pthread_join(wt, NULL);
	pthread_join(tt, NULL);
	for (int t = 0; t < READERS - 1; t++)
		pthread_join(th[t], NULL);
	cr_assert_eq(wr.f.msg[0], '\0', "writer: %s", wr.f.msg);
	for (int t = 0; t < READERS - 1; t++) {
		cr_assert_eq(rd[t].f.msg[0], '\0', "reader %d: %s", t, rd[t].f.msg);
		cr_assert_geq(rd[t].seen, 2, "reader %d read only %d times", t, rd[t].seen);
	}
	OK(amber_resolve(latest, ra, NULL, "latest"));
	cr_assert_str_eq(latest, p.id[GENERATIONS], "the readers' handle does not see the last "
			 "snapshot of the session");
	cr_assert_eq(tg.f.msg[0], '\0', "tagger: %s", tg.f.msg);
	cr_assert_geq(tg.tags, 1, "no tag was made while the session wrote");
	for (int i = 0; i < tg.tags; i++) { /* each tag names what it tagged */
		char name[32], got[AMBER_OID_HEXSZ + 1];

		for (int g = 0; g <= GENERATIONS; g++)
			if (strcmp(tg.tagged[i], p.id[g]) == 0)
				snprintf(name, sizeof(name), "gen-%d", g);
		OK(amber_resolve(got, ra, NULL, name));
		cr_assert_str_eq(got, tg.tagged[i], "tag %s", name);
	}
	amber_archive_free(tg.a);
	OK(amber_writer_close(wr.w));
	amber_archive_free(ra);
	amber_archive_free(a);
}

#ifdef AMBER_THREADS_MAIN
int main(void)
{
	setup();
	several_threads_read_through_one_handle_one_snapshot_and_one_listing();
	teardown();
	setup();
	a_writer_session_snapshots_while_other_threads_read_through_another_handle();
	teardown();
	puts("threads: 2 tests passed");
	return 0;
}
#endif
