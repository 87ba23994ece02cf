/*
 * Long histories: what reading one costs must not grow with its length.
 *
 * The archives are real, written in-process by amber_snapshot_create()
 * (the writer every path uses; a small tree, one file changing per
 * snapshot, one snapshot a second), on /dev/shm when it exists: each
 * snapshot fsyncs, and on a disk the fsyncs alone would take most of the
 * time.
 */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "amber.h"

/*
 * Under AddressSanitizer the child's resident size is mostly the
 * sanitizer's own (allocator and shadow memory), which grows with the
 * allocations and mappings a walk makes, whatever it holds: 64.6 MiB at
 * 250 snapshots and 70.2 MiB at 1,000 with the walk that stays at 11 MiB
 * in the plain build.  So the ASan pass checks the walk (a shorter one,
 * still crossing a store replacement) and its output; the memory bound is
 * the plain pass's.
 */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define T0 ((int64_t)1699920000) /* 2023-11-14T00:00:00Z */
#define TAGGED 10                /* snapshot i = 10 is tagged "deep" */

static void setup(void)
{
	struct stat st;

	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode))
		setenv("TMPDIR", "/dev/shm", 1);
	itest_setup();
}

TestSuite(history_scale, .init = setup, .fini = itest_teardown, .timeout = 300);

#define OK(expr)                                                                     \
	do {                                                                         \
		int rc_ = (expr);                                                    \
		cr_assert_eq(rc_, 0, "%s = %d: %s", #expr, rc_, amber_error_last()); \
	} while (0)

/* A plain archive at ARCH with a 20-file tree at SRC; no cache directory. */
static amber_archive *new_history(const char *arch, const char *src)
{
	static amber_open_opts oo = AMBER_OPEN_OPTS_INIT;
	amber_create_opts o = {.version = AMBER_CREATE_OPTS_VERSION, .plain = 1};
	amber_archive *a = NULL;

	OK(amber_global_init());
	oo.cache_dir = "";
	o.open = &oo;
	OK(amber_archive_create(&a, arch, &o));
	mkdir_p(src, 0755);
	for (int i = 0; i < 20; i++) {
		char name[32], *p;

		snprintf(name, sizeof(name), "file%02d", i);
		p = pjoin(src, name);
		write_file(p, name, strlen(name), 0644);
		free(p);
	}
	return a;
}

/* Snapshots [from, to) of the history: file "step" says i, time T0 + i s. */
static void grow(amber_archive *a, const char *src, int from, int to)
{
	amber_snapshot_opts o = AMBER_SNAPSHOT_OPTS_INIT;
	char id[AMBER_OID_HEXSZ + 1], text[32], *step = pjoin(src, "step");

	o.threads = 1;
	for (int i = from; i < to; i++) {
		int n = snprintf(text, sizeof(text), "step %d\n", i);

		write_file(step, text, (size_t)n, 0644);
		o.time_ns = (T0 + i) * 1000000000;
		o.tag = i == TAGGED ? "deep" : NULL;
		OK(amber_snapshot_create(id, NULL, a, src, &o));
	}
	free(step);
}

/*
 * Run argv with stdout to `out` and return its peak resident size in KiB
 * (ru_maxrss of the child, from wait4: the kernel's high-water mark, file
 * mappings included).  It must exit 0.
 */
static long peak_rss_kib(const char *const argv[], const char *out)
{
	struct rusage ru;
	int st = 0, fd;
	pid_t pid = fork();

	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || dup2(fd, 1) < 0)
			_exit(126);
		/* ASan holds freed memory in quarantine, which would grow with
		 * the number of allocations (with the history): not ours */
		setenv("ASAN_OPTIONS", "detect_leaks=0:quarantine_size_mb=0", 1);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	while (wait4(pid, &st, 0, &ru) < 0)
		cr_assert_eq(errno, EINTR, "wait4: %s", strerror(errno));
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s %s exited with status %d", argv[0],
		  argv[1], st);
	return ru.ru_maxrss;
}

/*
 * The log --json at `path` lists snapshots n - 1 .. 0 of grow(), newest
 * first: one a second, each the parent of the one before it, the tag on
 * TAGGED (a long walk reads old snapshots through other stores than the
 * archive's; what it prints must not change).
 */
static void expect_log(const char *path, int n)
{
	size_t len = 0;
	char *s = read_file(path, &len), *p = s, prev_parent[41] = "";
	int k = 0, orphan = 0;

	cr_assert_not_null(s, "%s: %s", path, strerror(errno));
	for (; (p = strstr(p, "{\"id\":\"")); p++, k++) {
		char want[64], *parent = strstr(p, "\"parent\":");
		char *end = strchr(p, '\n');

		cr_assert(k < n, "log --json lists more than %d snapshots", n);
		snprintf(want, sizeof(want), "\"time_ns\":%lld000000000", (long long)(T0 + n - 1 - k));
		cr_assert(strstr(p, want) && strstr(p, want) < end, "entry %d lacks %s", k, want);
		if (k)
			cr_assert(strncmp(p + 7, prev_parent, 40) == 0, "entry %d is not the parent "
				  "of entry %d", k, k - 1);
		cr_assert_not_null(parent);
		orphan = strncmp(parent + 9, "null", 4) == 0;
		snprintf(prev_parent, sizeof(prev_parent), "%.40s", parent + 10);
		if (n - 1 - k == TAGGED)
			cr_assert(strstr(p, "\"tags\":[\"deep\"]") &&
				  strstr(p, "\"tags\":[\"deep\"]") < end, "entry %d lost its tag", k);
	}
	cr_assert_eq(k, n, "log --json lists %d snapshots, not %d", k, n);
	cr_assert(orphan, "the oldest snapshot has a parent");
	free(s);
}

/*
 * log --json streams: its peak RSS at 4N snapshots is that at N, within a
 * bound far below what holding 3N more snapshots costs.  (Before, each
 * snapshot walked left its commit in libgit2's object cache and its pages
 * of pack and pack index mapped: about 5 KiB per snapshot, 3.6 MiB for the
 * 750 more here, and 12.5 MiB at 1,000 against 54 MiB at 15,000.)
 */
Test(history_scale, log_json_peak_rss_does_not_grow_with_the_history)
{
	enum { N = UNDER_ASAN ? 50 : 250, BOUND_KIB = 1536 };
	char *arch = pjoin(IT.tmp, "arch"), *src = pjoin(IT.tmp, "src");
	char *out = pjoin(IT.tmp, "log.json");
	const char *argv[] = {IT.bin, "log", arch, "--json", NULL};
	amber_archive *a = new_history(arch, src);
	long small, large, again;

	setenv("AMBERFS_CACHE_DIR", IT.cache, 1);
	grow(a, src, 0, N);
	small = peak_rss_kib(argv, out);
	expect_log(out, N);
	grow(a, src, N, 4 * N);
	large = peak_rss_kib(argv, out);
	expect_log(out, 4 * N);
	again = peak_rss_kib(argv, out);   /* the same history twice: the noise */
	cr_log_info("log --json peak RSS: %ld KiB at %d snapshots, %ld and %ld KiB at %d", small,
		    N, large, again, 4 * N);
	if (!UNDER_ASAN)
		cr_assert_lt(labs(large - small), BOUND_KIB,
			     "log --json peak RSS grew from %ld KiB at %d snapshots to %ld KiB at "
			     "%d: it holds the history in memory", small, N, large, 4 * N);
	amber_archive_free(a);
	free(arch);
	free(src);
	free(out);
}

/*
 * Snapshots [from, to) with a 64 KiB file that changes entirely each time
 * (bytes of a xorshift stream seeded by i: nothing to share or compress),
 * so that what a walk reads grows by 64 KiB a snapshot.
 */
static void grow_fat(amber_archive *a, const char *src, int from, int to)
{
	amber_snapshot_opts o = AMBER_SNAPSHOT_OPTS_INIT;
	char id[AMBER_OID_HEXSZ + 1], *fat = pjoin(src, "fat");
	static uint64_t buf[8192];

	o.threads = 1;
	for (int i = from; i < to; i++) {
		uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1);

		for (size_t k = 0; k < 8192; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[k] = x;
		}
		write_file(fat, buf, sizeof(buf), 0644);
		o.time_ns = (T0 + i) * 1000000000;
		OK(amber_snapshot_create(id, NULL, a, src, &o));
	}
	free(fat);
}

/*
 * verify --no-key holds no more at 4N snapshots than at N: its peak RSS
 * differs by less than the walk reads in 16 snapshots here.  Beyond that
 * bound, only its set of the objects it met (`seen`, about 50 bytes an
 * object) may grow.  Before, the walk read through the archive's store,
 * whose pack windows kept what it read (up to 32 MiB), and listed every
 * blob of the history before reading any: 22 MiB more at 400 snapshots
 * than at 100 here; 134 MiB at 100,000 snapshots of the small tree.
 */
Test(history_scale, verify_peak_rss_does_not_grow_with_the_history)
{
	enum { N = UNDER_ASAN ? 20 : 100, BOUND_KIB = 1024 };
	char *arch = pjoin(IT.tmp, "arch"), *src = pjoin(IT.tmp, "src");
	char *out = pjoin(IT.tmp, "verify.out");
	const char *argv[] = {IT.bin, "verify", arch, "--no-key", NULL};
	amber_archive *a = new_history(arch, src);
	long small, large, again;
	char want[96];
	size_t len = 0;
	char *s;

	setenv("AMBERFS_CACHE_DIR", IT.cache, 1);
	grow_fat(a, src, 0, N);
	small = peak_rss_kib(argv, out);
	grow_fat(a, src, N, 4 * N);
	large = peak_rss_kib(argv, out);
	again = peak_rss_kib(argv, out);
	s = read_file(out, &len);
	cr_assert_not_null(s, "%s: %s", out, strerror(errno));
	snprintf(want, sizeof(want), "verify: 0 problems; %d snapshots in 1 stream", 4 * N);
	cr_assert(strstr(s, want), "verify --no-key of %d snapshots said: %s", 4 * N, s);
	cr_log_info("verify --no-key peak RSS: %ld KiB at %d snapshots, %ld and %ld KiB at %d",
		    small, N, large, again, 4 * N);
	if (!UNDER_ASAN)
		cr_assert_lt(labs(large - small), BOUND_KIB,
			     "verify --no-key peak RSS grew from %ld KiB at %d snapshots to %ld KiB "
			     "at %d: it holds the history in memory", small, N, large, 4 * N);
	free(s);
	amber_archive_free(a);
	free(arch);
	free(src);
	free(out);
}

/* Turn every pack of `arch` into loose objects (so that one can be removed). */
static void explode_packs(const char *arch)
{
	char *packdir = pjoin(arch, "objects/pack"), *aside = pjoin(IT.tmp, "packs-aside");
	char *ls = git_ok(arch, NULL, "count-objects", "-v", NULL);
	DIR *d;
	struct dirent *de;

	free(ls);
	cr_assert_eq(rename(packdir, aside), 0, "rename %s: %s", packdir, strerror(errno));
	mkdir_p(packdir, 0755);
	cr_assert_not_null(d = opendir(aside));
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		char *p;

		if (len < 5 || strcmp(de->d_name + len - 5, ".pack") != 0)
			continue;
		p = pjoin(aside, de->d_name);
		free(git_ok(arch, p, "unpack-objects", "-q", NULL));
		free(p);
	}
	closedir(d);
	rm_rf(aside);
	free(aside);
	free(packdir);
}

/* Remove the loose object of a blob that snapshot `commit` added (its id in oid). */
static void remove_new_blob(char oid[41], const char *arch, const char *commit)
{
	char *parent = xasprintf("%s^", commit);
	char *diff = git_ok(arch, NULL, "diff-tree", "-r", "--no-renames", parent, commit, NULL);
	char *line = strstr(diff, " 100644 "), *path;

	cr_assert_not_null(line, "snapshot %s changed no blob: %s", commit, diff);
	memcpy(oid, line + 8, 40);
	oid[40] = '\0';
	path = xasprintf("%s/objects/%.2s/%s", arch, oid, oid + 2);
	cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
	free(path);
	free(parent);
	free(diff);
}

/*
 * The walk reads and judges the blobs a few dozen at a time as it goes,
 * holding what it finds: problems still come in the order of the walk,
 * newest snapshot first, across those batches (blobs that snapshots 3, 35
 * and 70 back from the tip of 80 added, missing; two blobs a snapshot, so
 * the walk reads them 32 snapshots at a time).
 */
Test(history_scale, verify_problems_come_in_walk_order_across_blob_batches)
{
	static const int back[] = {3, 35, 70};
	char *arch = pjoin(IT.tmp, "arch"), *src = pjoin(IT.tmp, "src"), *ids[3], gone[3][41];
	amber_archive *a = new_history(arch, src);
	const char *at[3];
	run_result r = {0};

	setenv("AMBERFS_CACHE_DIR", IT.cache, 1);
	grow(a, src, 0, 80);
	amber_archive_free(a);
	for (int i = 0; i < 3; i++) {
		char *rev = xasprintf("main~%d", back[i]);

		ids[i] = git_ok(arch, NULL, "rev-parse", rev, NULL);
		free(rev);
	}
	explode_packs(arch);
	for (int i = 0; i < 3; i++)
		remove_new_blob(gone[i], arch, ids[i]);
	amber(&r, "verify", arch, "--no-key", NULL);
	cr_assert_eq(r.status, 1, "verify --no-key: status %d: %s%s", r.status, r.out, r.err);
	for (int i = 0; i < 3; i++) {
		at[i] = strstr(r.out, gone[i]);
		cr_assert_not_null(at[i], "no problem names object %s: %s", gone[i], r.out);
		cr_assert(i == 0 || at[i] > at[i - 1], "the problem of snapshot %d back comes before "
			  "that of snapshot %d back: %s", back[i], back[i - 1], r.out);
	}
	cr_assert(strstr(r.out, "3 problems"), "%s", r.out);
	for (int i = 0; i < 3; i++)
		free(ids[i]);
	run_result_dispose(&r);
	free(arch);
	free(src);
}
