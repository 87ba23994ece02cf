/*
 * Pack consolidation: a long history keeps O(log n) packs and every
 * snapshot restores; readers (a real FUSE mount, a restore) running across
 * `amberfs repack` see correct bytes; kill -9 of a repack at any point
 * leaves an archive that fscks, restores every snapshot and takes the next
 * snapshot and repack.
 */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "amber.h"

TestSuite(repack, .init = itest_setup, .fini = itest_teardown, .timeout = 900);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/*
 * Packs git and libgit2 see: those with an index.  (A kill between removing
 * an old pack's .idx and its .pack leaves a .pack alone: garbage that a
 * repack removes once it is a minute old.)
 */
static int count_packs(const char *arch)
{
	char *dir = pjoin(arch, "objects/pack");
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	cr_assert(d, "opendir %s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (len > 4 && !strcmp(de->d_name + len - 4, ".idx"))
			n++;
	}
	closedir(d);
	free(dir);
	return n;
}

static void step_content(char *buf, size_t len, int i)
{
	snprintf(buf, len, "step %d of the long history, %d squared is %d\n", i, i, i * i);
}

/* 20 files that never change plus "step", rewritten before each snapshot. */
static void make_plain_tree(const char *src)
{
	mkdir_p(src, 0755);
	for (int i = 0; i < 20; i++) {
		char *p = xasprintf("%s/f%02d", src, i);
		write_random_file(p, 1000u * (uint64_t)(i + 1), 90 + (uint64_t)i, 0);
		free(p);
	}
}

/* Snapshots first..first+n-1 written from this process, one second apart. */
static void write_history(amber_archive *a, const char *src, int first, int n,
			  char (*ids)[41], void (*each)(int i, void *), void *payload)
{
	char *step = pjoin(src, "step");
	char buf[128];

	for (int i = first; i < first + n; i++) {
		amber_snapshot_opts o = {.version = AMBER_SNAPSHOT_OPTS_VERSION, .stream = "main" };
		o.time_ns = (1700000000LL + i) * 1000000000LL;
		step_content(buf, sizeof(buf), i);
		write_str(step, buf);
		cr_assert_eq(amber_snapshot_create(ids[i], NULL, a, src, &o), 0,
			     "snapshot %d: %s", i, amber_error_last());
		if (each)
			each(i, payload);
	}
	free(step);
}

/* Restore snapshot `id` and compare it with the tree that step i had. */
static void check_plain_snapshot(const char *arch, const char *src, const char *id, int i)
{
	char *dest = pjoin(IT.tmp, "check");
	char *what = xasprintf("restore of snapshot #%d %s", i, id);
	char buf[128];
	run_result r;

	amber(&r, "restore", arch, id, dest, NULL);
	assert_ok(&r, what);
	run_result_dispose(&r);
	char *step = pjoin(dest, "step");
	char *got = read_file(step, NULL);
	step_content(buf, sizeof(buf), i);
	cr_assert_str_eq(got, buf, "%s: wrong step file", what);
	unlink(step);
	char *src_step = pjoin(src, "step");
	char *keep = read_file(src_step, NULL);
	unlink(src_step);
	/* both roots just lost "step": their mtimes say when, not what was stored */
	assert_trees_equal(src, dest, TD_SKIP_ROOT_META, what);
	write_str(src_step, keep);
	rm_rf(dest);
	free(keep);
	free(src_step);
	free(got);
	free(step);
	free(what);
	free(dest);
}

/* 2 * log2(n) + 8: the progression plus the few small packs a snapshot leaves. */
static int pack_bound(int n)
{
	int lg = 0;

	while ((1 << (lg + 1)) <= n)
		lg++;
	return 2 * lg + 8;
}

struct bound_check {
	const char *arch;
	int worst;
};

static void check_bound(int i, void *payload)
{
	struct bound_check *b = payload;
	int n = i + 1, packs;

	if (n % 50)
		return;
	packs = count_packs(b->arch);
	if (packs > b->worst)
		b->worst = packs;
	cr_assert(packs <= pack_bound(n), "after %d snapshots %d packs remain (bound %d)", n,
		  packs, pack_bound(n));
}

/* ------------------------------------------------------------------ */
/* 1. A long history                                                   */

#ifdef __SANITIZE_ADDRESS__
#define LONG_N 400   /* the same checks on a shorter history: ASan slows each snapshot */
#else
#define LONG_N 1200
#endif

Test(repack, long_history_keeps_log_n_packs_and_every_snapshot_restores)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	static char ids[LONG_N][41];
	struct bound_check b = { arch, 0 };
	amber_archive *a = NULL;

	make_plain_tree(src);
	amber_init_archive(arch, 1);
	cr_assert_eq(amber_global_init(), 0);
	cr_assert_eq(amber_archive_open(&a, arch), 0, "%s", amber_error_last());
	double t0 = now_s();
	write_history(a, src, 0, LONG_N, ids, check_bound, &b);
	amber_archive_free(a);
	fprintf(stderr, "repack: %d snapshots in %.1f s, at most %d packs, %d at the end\n",
		LONG_N, now_s() - t0, b.worst, count_packs(arch));

	run_result r;
	amber(&r, "repack", arch, NULL);
	assert_ok(&r, "amberfs repack after a long history");
	run_result_dispose(&r);
	cr_assert(count_packs(arch) <= pack_bound(LONG_N));
	assert_fsck(arch);
	amber(&r, "verify", arch, NULL);
	assert_ok(&r, "amberfs verify after consolidation");
	run_result_dispose(&r);
	check_plain_snapshot(arch, src, ids[0], 0);
	check_plain_snapshot(arch, src, ids[LONG_N - 1], LONG_N - 1);
	for (int i = 37; i < LONG_N - 1; i += 97)
		check_plain_snapshot(arch, src, ids[i], i);

	/* --all leaves one pack, and the history still reads */
	amber(&r, "repack", "--all", arch, NULL);
	assert_ok(&r, "amberfs repack --all");
	run_result_dispose(&r);
	cr_assert_eq(count_packs(arch), 1);
	assert_fsck(arch);
	check_plain_snapshot(arch, src, ids[LONG_N / 2], LONG_N / 2);
}

/*
 * A writer session (the library's in-process writer, and `amberfs watch`)
 * consolidates as the CLI does: a capture a second must not leave a pack a
 * second.
 */
#ifdef __SANITIZE_ADDRESS__
#define SESSION_N 100
#else
#define SESSION_N 200
#endif

Test(repack, a_writer_session_keeps_log_n_packs_and_its_snapshots_restore)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char *step = pjoin(src, "step");
	static char ids[SESSION_N][41];
	amber_writer_opts o = AMBER_WRITER_OPTS_INIT;
	amber_archive *a = NULL;
	amber_writer *w = NULL;
	int worst = 0;
	char buf[128];

	make_plain_tree(src);
	amber_init_archive(arch, 1);
	cr_assert_eq(amber_global_init(), 0);
	cr_assert_eq(amber_archive_open(&a, arch), 0, "%s", amber_error_last());
	o.snap.stream = "main";
	cr_assert_eq(amber_writer_open(&w, a, src, &o), 0, "%s", amber_error_last());
	for (int i = 0; i < SESSION_N; i++) {
		step_content(buf, sizeof(buf), i);
		write_str(step, buf);
		cr_assert_eq(amber_writer_snapshot(ids[i], NULL, w, (amber_dirty[]){{"step", 0}}, 1),
			     0, "session snapshot %d: %s", i, amber_error_last());
		if ((i + 1) % 50 == 0) {
			int packs = count_packs(arch);

			worst = packs > worst ? packs : worst;
			cr_assert(packs <= pack_bound(i + 1),
				  "after %d session snapshots %d packs remain (bound %d)", i + 1,
				  packs, pack_bound(i + 1));
		}
	}
	cr_assert_eq(amber_writer_close(w), 0, "%s", amber_error_last());
	amber_archive_free(a);
	fprintf(stderr, "repack: %d session snapshots, at most %d packs\n", SESSION_N, worst);
	assert_fsck(arch);
	check_plain_snapshot(arch, src, ids[0], 0);
	check_plain_snapshot(arch, src, ids[SESSION_N / 2], SESSION_N / 2);
	check_plain_snapshot(arch, src, ids[SESSION_N - 1], SESSION_N - 1);
	free(step);
}

Test(repack, a_second_writer_is_refused_while_one_holds_the_lock)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char id[41];
	amber_archive *a = NULL;
	amber_repack_stats st = AMBER_REPACK_STATS_INIT;

	make_plain_tree(src);
	amber_init_archive(arch, 1);
	amber_snapshot_ok(id, arch, src, NULL);
	cr_assert_eq(amber_global_init(), 0);
	cr_assert_eq(amber_archive_open(&a, arch), 0, "%s", amber_error_last());
	/* this process holds the writer lock through a repack handle's store */
	int fd = open(pjoin(arch, "amberfs.lock"), O_RDWR);
	cr_assert(fd >= 0);
	cr_assert_eq(flock(fd, LOCK_EX), 0);
	cr_assert_eq(amber_archive_repack(&st, a, 0), AMBER_ELOCKED,
		     "repack must take the writer lock: %s", amber_error_last());
	run_result r;
	amber(&r, "repack", arch, NULL);
	cr_assert_eq(r.status, 1, "amberfs repack while locked: %d %s", r.status, r.err);
	cr_assert(strstr(r.err, "locked"), "%s", r.err);
	run_result_dispose(&r);
	close(fd);
	cr_assert_eq(amber_archive_repack(&st, a, AMBER_REPACK_ALL), 0, "%s", amber_error_last());
	amber_archive_free(a);
}

/* ------------------------------------------------------------------ */
/* Archives of a few large snapshots                                    */

#define BIG_N 6

typedef struct big_ctx {
	char *src, *arch, *expect;
	char ids[BIG_N + 8][41];
	int n;
	uint64_t mib;
} big_ctx;

/*
 * Snapshot k: "big" holds new random data, "small" never changes.  `cache`
 * (NULL: the test's) is the cache dir: copies of one archive share its id,
 * and so would share the cache's record of which chunks are stored.
 */
static void big_snapshot(big_ctx *c, const char *cache)
{
	int k = c->n;
	char *big = pjoin(c->src, "big");
	char *exp = xasprintf("%s/%d", c->expect, k);
	char *env_cache = cache ? xasprintf("AMBERFS_CACHE_DIR=%s", cache) : NULL;
	const char *env[] = { env_cache, NULL };
	run_opts o = { .env = env };
	run_result r;

	write_random_file(big, c->mib << 20, 7000 + (uint64_t)k, 0);
	write_random_file(exp, c->mib << 20, 7000 + (uint64_t)k, 0);
	amber_o(&r, &o, "snapshot", c->arch, c->src, NULL);
	assert_ok(&r, "snapshot");
	cr_assert_eq(r.out_len, 41, "snapshot printed %s", r.out);
	memcpy(c->ids[k], r.out, 40);
	c->ids[k][40] = '\0';
	run_result_dispose(&r);
	free(env_cache);
	c->n++;
	free(big);
	free(exp);
}

static void big_setup(big_ctx *c, uint64_t mib)
{
	c->src = pjoin(IT.tmp, "src");
	c->arch = pjoin(IT.tmp, "archive");
	c->expect = pjoin(IT.tmp, "expect");
	c->mib = mib;
	mkdir_p(c->src, 0755);
	mkdir_p(c->expect, 0755);
	write_random_file(pjoin(c->src, "small"), 5000, 3, 0);
	amber_init_archive(c->arch, 0);
	for (int k = 0; k < BIG_N; k++)
		big_snapshot(c, NULL);
}

/* Restore snapshot k of arch and compare its "big" file. */
static void check_big(const big_ctx *c, const char *arch, int k, const char *what)
{
	char *dest = pjoin(IT.tmp, "restored");
	char *exp = xasprintf("%s/%d", c->expect, k);
	char *msg = xasprintf("%s: restore of snapshot #%d", what, k);
	run_result r;

	amber(&r, "restore", arch, c->ids[k], dest, NULL);
	assert_ok(&r, msg);
	run_result_dispose(&r);
	char *got = pjoin(dest, "big");
	size_t la, lb;
	char *x = read_file(exp, &la), *y = read_file(got, &lb);
	cr_assert(la == lb && !memcmp(x, y, la), "%s: wrong bytes", msg);
	rm_rf(dest);
	free(x);
	free(y);
	free(got);
	free(msg);
	free(exp);
	free(dest);
}

/* ------------------------------------------------------------------ */
/* 2. kill -9 during a repack                                           */

static void cp_a(const char *from, const char *to)
{
	run_result r;

	run_cmd(&r, NULL, "cp", "-a", from, to, NULL);
	assert_ok(&r, "cp -a");
	run_result_dispose(&r);
}

/*
 * One `repack --all` of a copy of the template, killed: after `at` seconds,
 * or (at < 0) by strace's SIGKILL injection named in `prefix`.
 */
static void kill_repack(big_ctx *c, const char *tmpl, const char *const *prefix, double at,
			const char *what, int round)
{
	char *work = xasprintf("%s/work%d", IT.tmp, round);
	const char *args[] = { "repack", "--all", work, NULL };
	run_opts o = { .prefix = prefix };
	int st;

	cp_a(tmpl, work);
	if (at >= 0) {
		pid_t pid = amber_spawn(NULL, args);
		sleep_s(at);
		kill(pid, SIGKILL);
		st = wait_exit(pid);
	} else {
		run_result r;
		st = amber_a(&r, &o, args);
		cr_assert_eq(st, 128 + SIGKILL, "%s: expected a kill, got exit %d: %s", what, st,
			     r.err);
		run_result_dispose(&r);
	}
	int packs = count_packs(work);
	assert_fsck(work);
	for (int k = 0; k < c->n; k++)
		check_big(c, work, k, what);

	/* the next snapshot and repack work without repair */
	char *saved = c->arch, *cache = xasprintf("%s/cache%d", IT.tmp, round);
	c->arch = work;
	big_snapshot(c, cache);
	run_result r;
	amber(&r, "repack", "--all", work, NULL);
	assert_ok(&r, what);
	run_result_dispose(&r);
	cr_assert_eq(count_packs(work), 1, "%s: repack --all after the kill", what);
	assert_fsck(work);
	check_big(c, work, c->n - 1, what);
	check_big(c, work, 0, what);
	c->n--;
	c->arch = saved;
	fprintf(stderr, "repack: %s: status %d, %d packs left by the kill\n", what, st, packs);
	rm_rf(work);
	rm_rf(cache);
	free(cache);
	free(work);
}

static char *make_template(big_ctx *c)
{
	big_setup(c, 8);
	cr_assert_geq(count_packs(c->arch), 2);
	char *tmpl = pjoin(IT.tmp, "template");
	cp_a(c->arch, tmpl);
	return tmpl;
}

Test(repack, kill_9_after_a_delay_leaves_a_complete_archive)
{
	big_ctx c = { 0 };
	char *tmpl = make_template(&c);

	/* how long an undisturbed repack of this archive takes */
	char *probe = pjoin(IT.tmp, "probe");
	cp_a(tmpl, probe);
	run_result r;
	amber(&r, "repack", "--all", probe, NULL);
	assert_ok(&r, "repack --all");
	double T = r.seconds;
	run_result_dispose(&r);
	rm_rf(probe);
	fprintf(stderr, "repack: an undisturbed repack --all takes %.2f s\n", T);

	static const double frac[] = { 0.02, 0.5, 0.85, 0.95 };
	for (size_t i = 0; i < sizeof(frac) / sizeof(frac[0]); i++) {
		char *what = xasprintf("kill -9 of repack after %.0f ms", frac[i] * T * 1000);
		kill_repack(&c, tmpl, NULL, frac[i] * T, what, (int)i);
		free(what);
	}
}

/*
 * SIGKILL at chosen system calls (strace's fault injection): before the
 * merged pack is renamed into place, between its .pack and .idx, and at
 * points of the removal of the old packs (each old pack: unlink .idx,
 * .rev, .bitmap, .pack; the first unlink is the multi-pack-index).
 */
Test(repack, kill_9_at_each_step_leaves_a_complete_archive)
{
	static const char *const points[] = {
		"fsync:when=1", "rename:when=1", "rename:when=2", "unlink:when=2",
		"unlink:when=3", "unlink:when=14", "unlink:when=25",
	};
	big_ctx c = { 0 };
	char *tmpl = make_template(&c);

	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		char *colon = strchr(points[i], ':');
		char *inject = xasprintf("inject=%.*s:signal=KILL%s", (int)(colon - points[i]),
					 points[i], colon);
		const char *prefix[] = { "strace", "-f", "-o", "/dev/null", "-e", inject, NULL };
		char *what = xasprintf("kill -9 of repack at %s", points[i]);
		kill_repack(&c, tmpl, prefix, -1, what, (int)i);
		free(what);
		free(inject);
	}
}

/* ------------------------------------------------------------------ */
/* 3. Readers across a repack                                           */

typedef struct reader {
	const big_ctx *c;
	const char *mnt;
	volatile int stop;
	int reads, errors;
	char msg[512];
} reader;

/* Read one file through the mount, compare, and drop it from the page cache. */
static int read_compare(reader *rd, const char *path, const char *exp_path)
{
	size_t le, lg;
	char *exp = read_file(exp_path, &le);
	int fd = open(path, O_RDONLY);
	char *got = malloc(le + 1);
	ssize_t n = 0, r = 0;

	if (fd < 0) {
		snprintf(rd->msg, sizeof(rd->msg), "open %s: %s", path, strerror(errno));
		free(exp);
		free(got);
		return -1;
	}
	while ((size_t)n <= le && (r = read(fd, got + n, le + 1 - (size_t)n)) > 0)
		n += r;
	lg = (size_t)n;
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
	int bad = r < 0 || lg != le || memcmp(exp, got, le);
	if (bad)
		snprintf(rd->msg, sizeof(rd->msg), "%s: %s", path,
			 r < 0 ? strerror(errno) : "wrong bytes");
	free(exp);
	free(got);
	return bad ? -1 : 0;
}

static void *reader_main(void *arg)
{
	reader *rd = arg;

	for (int i = 0; !rd->stop; i++) {
		int k = i % BIG_N;
		char *path = xasprintf("%s/ids/%s/big", rd->mnt, rd->c->ids[k]);
		char *exp = xasprintf("%s/%d", rd->c->expect, k);
		if (read_compare(rd, path, exp) < 0)
			rd->errors++;
		rd->reads++;
		free(path);
		free(exp);
	}
	return NULL;
}

static int is_mounted(const char *mnt)
{
	char *mi = read_file("/proc/self/mountinfo", NULL);
	char *needle = xasprintf(" %s ", mnt);
	int yes = strstr(mi, needle) != NULL;

	free(mi);
	free(needle);
	return yes;
}

static pid_t mount_fg(const char *arch, const char *mnt, const char *log)
{
	const char *args[] = { "mount", arch, mnt, "-f", "-o", "cache_size=1M", NULL };
	run_opts o = { .stderr_path = log };
	pid_t pid = amber_spawn(&o, args);
	double end = now_s() + 30;

	while (!is_mounted(mnt)) {
		cr_assert(now_s() < end, "%s not mounted after 30 s: %s", mnt, read_file(log, NULL));
		sleep_s(0.02);
	}
	return pid;
}

static void unmount(const char *mnt, pid_t pid)
{
	run_result r;

	for (int i = 0; i < 50 && is_mounted(mnt); i++) {
		run_cmd(&r, NULL, "fusermount3", "-u", mnt, NULL);
		run_result_dispose(&r);
		if (is_mounted(mnt))
			sleep_s(0.1);
	}
	cr_assert(!is_mounted(mnt), "%s is still mounted", mnt);
	cr_assert_eq(wait_exit(pid), 0, "the mount daemon did not exit 0");
}

Test(repack, a_mount_and_a_restore_across_a_repack_read_correct_bytes)
{
	big_ctx c = { 0 };
	big_setup(&c, 4);
	char *mnt = pjoin(IT.tmp, "mnt"), *log = pjoin(IT.tmp, "daemon.log");
	mkdir_p(mnt, 0755);
	char *abs = realpath(mnt, NULL);
	pid_t daemon = mount_fg(c.arch, abs, log);
	reader rd = { .c = &c, .mnt = abs };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, reader_main, &rd), 0);

	for (int round = 0; round < 4; round++) {
		/* a restore started before the repack, running across it */
		char *dest = xasprintf("%s/restore%d", IT.tmp, round);
		const char *args[] = { "restore", c.arch, c.ids[round % BIG_N], dest, NULL };
		pid_t restore = amber_spawn(NULL, args);
		run_result r;
		amber(&r, "repack", "--all", c.arch, NULL);
		assert_ok(&r, "repack under a mount");
		run_result_dispose(&r);
		cr_assert_eq(wait_exit(restore), 0, "restore across a repack failed");
		char *got = pjoin(dest, "big"), *exp = xasprintf("%s/%d", c.expect, round % BIG_N);
		size_t la, lb;
		char *x = read_file(exp, &la), *y = read_file(got, &lb);
		cr_assert(la == lb && !memcmp(x, y, la), "restore across repack: wrong bytes");
		free(x);
		free(y);
		rm_rf(dest);
		/* a new pack for the next repack to merge (the reader reads 0..BIG_N-1) */
		write_random_file(pjoin(c.src, "big"), 1 << 20, 99 + (uint64_t)round, 0);
		char id[41];
		amber_snapshot_ok(id, c.arch, c.src, NULL);
		sleep_s(0.3);
	}
	rd.stop = 1;
	pthread_join(th, NULL);
	fprintf(stderr, "repack: %d reads through the mount across 4 repacks\n", rd.reads);
	cr_assert_eq(rd.errors, 0, "%d of %d reads through the mount failed; last: %s", rd.errors,
		     rd.reads, rd.msg);
	cr_assert_geq(rd.reads, BIG_N, "the reader read too little to tell");
	unmount(abs, daemon);
	char *dlog = read_file(log, NULL);
	cr_assert(!strstr(dlog, "rror"), "the daemon logged an error: %s", dlog);
	assert_fsck(c.arch);
}

/* ------------------------------------------------------------------ */
/* 4. Packs amberfs did not write                                       */

/*
 * `git repack -f` writes OFS_DELTA entries, whose base is named by its
 * position in the pack: such a pack cannot be copied entry by entry, so
 * repack must leave it alone and merge the others.
 */
Test(repack, a_pack_with_deltas_written_by_git_is_left_alone)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char ids[6][41], buf[128];
	run_result r;

	make_plain_tree(src);
	amber_init_archive(arch, 1);
	for (int i = 0; i < 6; i++) {
		if (i == 3) {
			free(git_ok(arch, NULL, "repack", "-a", "-d", "-f", "--window=50", "-q", NULL));
			cr_assert_eq(count_packs(arch), 1);
		}
		step_content(buf, sizeof(buf), i);
		write_str(pjoin(src, "step"), buf);
		amber_snapshot_ok(ids[i], arch, src, NULL);
	}
	amber(&r, "repack", "--all", arch, NULL);
	assert_ok(&r, "repack --all next to a pack with deltas");
	run_result_dispose(&r);
	cr_assert_eq(count_packs(arch), 2, "the delta pack stays, the others become one");
	assert_fsck(arch);
	for (int i = 0; i < 6; i++)
		check_plain_snapshot(arch, src, ids[i], i);
}

/* ------------------------------------------------------------------ */
/* 5. An archive from before consolidation, mounted while it is repacked */

#define MANY 200

/* One pack per snapshot, as amberfs wrote before it consolidated packs. */
static void one_pack_per_commit(const char *arch, char (*ids)[41], int n)
{
	char *list = pjoin(IT.tmp, "objects.list"), *base = pjoin(arch, "objects/pack/pack");
	char *old = git_ok(arch, NULL, "rev-parse", "--git-path", "objects/pack", NULL);
	char *before = pjoin(IT.tmp, "packs.before");
	run_result r;

	run_cmd(&r, NULL, "sh", "-c", "ls \"$0\"/pack-*.pack > \"$1\"", arch, before, NULL);
	run_result_dispose(&r);
	for (int i = -1; i < n; i++) {
		/* -1: the metadata ref; then each snapshot's own new objects */
		char *range = i < 0 ? strdup("refs/amberfs/meta")
			: i == 0 ? strdup(ids[0]) : xasprintf("%s ^%s", ids[i], ids[i - 1]);
		char *cmd = xasprintf("git --git-dir=\"$0\" rev-list --objects %s | "
				      "git --git-dir=\"$0\" pack-objects -q --window=0 --depth=0 \"$1\" "
				      "> /dev/null", range);
		run_cmd(&r, NULL, "sh", "-c", cmd, arch, base, NULL);
		assert_ok(&r, "git pack-objects");
		run_result_dispose(&r);
		free(cmd);
		free(range);
	}
	run_cmd(&r, NULL, "sh", "-c", "for p in $(cat \"$0\"); do rm -f \"$p\" \"${p%.pack}.idx\"; "
		"done", before, NULL);
	assert_ok(&r, "removing the consolidated packs");
	run_result_dispose(&r);
	free(before);
	free(old);
	free(base);
	free(list);
}

typedef struct step_reader {
	const char *mnt;
	char (*ids)[41];
	volatile int stop;
	int reads, errors;
	char msg[512];
} step_reader;

static void *step_reader_main(void *arg)
{
	step_reader *rd = arg;
	char want[128];

	/* a stride through all snapshots, so that every pack is opened in turn */
	for (int j = 0; !rd->stop; j++) {
		int i = (j * 37) % MANY;
		char *path = xasprintf("%s/ids/%s/step", rd->mnt, rd->ids[i]);
		size_t len = 0;
		char *got = NULL;
		int fd = open(path, O_RDONLY);
		step_content(want, sizeof(want), i);
		if (fd >= 0) {
			got = calloc(1, 256);
			ssize_t n = read(fd, got, 255);
			len = n > 0 ? (size_t)n : 0;
			close(fd);
		}
		if (!got || len != strlen(want) || memcmp(got, want, len)) {
			rd->errors++;
			snprintf(rd->msg, sizeof(rd->msg), "%s: %s", path,
				 fd < 0 ? strerror(errno) : "wrong bytes");
		}
		rd->reads++;
		free(got);
		free(path);
	}
	return NULL;
}

Test(repack, a_mount_of_a_many_pack_archive_reads_across_its_first_repack)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	static char ids[MANY][41];
	amber_archive *a = NULL;

	make_plain_tree(src);
	amber_init_archive(arch, 1);
	cr_assert_eq(amber_global_init(), 0);
	cr_assert_eq(amber_archive_open(&a, arch), 0, "%s", amber_error_last());
	write_history(a, src, 0, MANY, ids, NULL, NULL);
	amber_archive_free(a);
	one_pack_per_commit(arch, ids, MANY);
	cr_assert_geq(count_packs(arch), MANY, "more packs than libgit2 keeps open (128)");
	assert_fsck(arch);

	char *mnt = pjoin(IT.tmp, "mnt"), *log = pjoin(IT.tmp, "daemon.log");
	mkdir_p(mnt, 0755);
	char *abs = realpath(mnt, NULL);
	pid_t daemon = mount_fg(arch, abs, log);
	step_reader rd = { .mnt = abs, .ids = ids };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, step_reader_main, &rd), 0);
	sleep_s(2);	/* every pack opened once, most closed again */
	int before = rd.reads;
	run_result r;
	amber(&r, "repack", arch, NULL);
	assert_ok(&r, "the first repack of a many-pack archive under a mount");
	run_result_dispose(&r);
	cr_assert_lt(count_packs(arch), 16);
	sleep_s(2);
	rd.stop = 1;
	pthread_join(th, NULL);
	fprintf(stderr, "repack: %d reads through the mount, %d of them after the repack began\n",
		rd.reads, rd.reads - before);
	cr_assert_eq(rd.errors, 0, "%d of %d reads failed; last: %s", rd.errors, rd.reads, rd.msg);
	cr_assert_geq(rd.reads - before, MANY, "too few reads after the repack to tell");
	unmount(abs, daemon);
	char *dlog = read_file(log, NULL);
	cr_assert(!strstr(dlog, "rror"), "the daemon logged an error: %s", dlog);
}

/* ------------------------------------------------------------------ */
/* 6. A long-running mount lets go of the packs a repack removed        */

/* What of a removed pack file the process still holds: lines of its maps and
 * links of its descriptors that name one. */
static char *removed_packs_held(pid_t pid)
{
	char *p = xasprintf("%d", (int)pid);
	run_result r;

	run_cmd(&r, NULL, "sh", "-c",
		"{ cat /proc/$0/maps; for f in /proc/$0/fd/*; do readlink \"$f\"; done; } | "
		"grep 'objects/pack/pack-.*(deleted)'; true", p, NULL);
	assert_ok(&r, "read the daemon's maps and descriptors");
	char *out = strdup(r.out);
	run_result_dispose(&r);
	free(p);
	return out;
}

/* Pack files the daemon holds: mapped, or open (packs are read with pread). */
static int pack_maps(pid_t pid)
{
	char *p = xasprintf("%d", (int)pid);
	run_result r;
	int n = 0;

	run_cmd(&r, NULL, "sh", "-c",
		"{ cat /proc/$0/maps; for f in /proc/$0/fd/*; do readlink \"$f\"; done; } | "
		"grep -c 'objects/pack/pack-'; true", p, NULL);
	assert_ok(&r, "read the daemon's maps and descriptors");
	n = (int)strtol(r.out, NULL, 10);
	run_result_dispose(&r);
	free(p);
	return n;
}

/* Every file of snapshots first..n-1 (step i, and the 20 files that never
 * change) reads back byte-identical through the mount. */
static void read_all(const char *mnt, const char *src, char (*ids)[41], int first, int n)
{
	char buf[128];

	for (int i = first; i < n; i++) {
		for (int f = 0; f <= 20; f++) {
			char *name = f < 20 ? xasprintf("f%02d", f) : strdup("step");
			char *got_path = xasprintf("%s/ids/%s/%s", mnt, ids[i], name);
			char *exp_path = pjoin(src, name);
			size_t lg = 0, le = 0;
			char *got = read_file(got_path, &lg), *exp = NULL;
			if (f < 20) {
				exp = read_file(exp_path, &le);
			} else {
				step_content(buf, sizeof(buf), i);
				exp = strdup(buf);
				le = strlen(buf);
			}
			cr_assert(lg == le && memcmp(got, exp, le) == 0, "%s: wrong bytes", got_path);
			free(exp);
			free(got);
			free(exp_path);
			free(got_path);
			free(name);
		}
	}
}

/*
 * A mount kept every pack it had ever seen until it was unmounted, so the
 * packs a consolidation removed kept their disk space for the life of the
 * mount.  Its next rescan (a new snapshot it is asked for, or a look at
 * the snapshots a second later) must let go of them, and every file must
 * still read the same.
 */
Test(repack, a_mount_lets_go_of_the_packs_a_repack_removed)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char ids[5][41], buf[128];
	run_result r;

	make_plain_tree(src);
	amber_init_archive(arch, 1);
	for (int i = 0; i < 4; i++) {
		step_content(buf, sizeof(buf), i);
		write_str(pjoin(src, "step"), buf);
		amber_snapshot_ok(ids[i], arch, src, NULL);
	}
	cr_assert_geq(count_packs(arch), 4);
	char *mnt = pjoin(IT.tmp, "mnt"), *log = pjoin(IT.tmp, "daemon.log");
	mkdir_p(mnt, 0755);
	char *abs = realpath(mnt, NULL);
	pid_t daemon = mount_fg(arch, abs, log);
	read_all(abs, src, ids, 0, 4);
	cr_assert_gt(pack_maps(daemon), 0, "the daemon holds no pack: this test could not tell");

	amber(&r, "repack", "--all", arch, NULL);
	assert_ok(&r, "repack --all under a mount");
	run_result_dispose(&r);
	cr_assert_eq(count_packs(arch), 1);
	step_content(buf, sizeof(buf), 4);
	write_str(pjoin(src, "step"), buf);
	amber_snapshot_ok(ids[4], arch, src, NULL);
	read_all(abs, src, ids, 4, 5);	/* the mount rescans objects/pack for it */
	read_all(abs, src, ids, 0, 5);
	char *held = removed_packs_held(daemon);
	/* with no new snapshot to look for, a look at the snapshots a second
	 * later rescans (what is read back comes from caches) */
	amber(&r, "repack", "--all", arch, NULL);
	assert_ok(&r, "a second repack under a mount");
	run_result_dispose(&r);
	cr_assert_eq(count_packs(arch), 1);
	sleep_s(1.1);
	char *snaps = pjoin(abs, "snapshots");
	run_cmd(&r, NULL, "ls", "-R", snaps, NULL);
	assert_ok(&r, "ls -R snapshots/");
	run_result_dispose(&r);
	free(snaps);
	read_all(abs, src, ids, 0, 5);
	char *held2 = removed_packs_held(daemon);
	unmount(abs, daemon);
	cr_assert_str_eq(held, "", "after a new snapshot, the daemon still holds removed packs:\n%s",
			 held);
	cr_assert_str_eq(held2, "", "a second after a repack, the daemon still holds removed "
			 "packs:\n%s", held2);
	free(held2);
	free(held);
	char *dlog = read_file(log, NULL);
	cr_assert(!strstr(dlog, "rror"), "the daemon logged an error: %s", dlog);
	free(dlog);
	free(abs);
	free(log);
	free(mnt);
	free(arch);
	free(src);
}
