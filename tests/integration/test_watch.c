/*
 * amberfs watch: the resident writer, driven by real inotify events.
 *
 * Each test starts `amberfs watch --json` in the background on a source
 * tree, changes the tree, and reads the JSON reports.  The --quiesce hook
 * stops the test process (SIGSTOP, waiting until it is stopped) and copies
 * the source to copies/<capture number>; --resume continues it.  So the
 * tree cannot change between the copy and the snapshot, and every snapshot
 * the watch reports must restore to exactly its copy.
 */
#include "helpers.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

TestSuite(watch, .init = itest_setup, .fini = itest_teardown);

#define INTERVAL 0.25
#define INTERVAL_ARG "250ms"

typedef struct watcher {
	pid_t pid;
	char *src, *arch, *json, *err, *copies;
} watcher;

static void write_hooks(watcher *w)
{
	char *q = pjoin(IT.tmp, "quiesce.sh"), *r = pjoin(IT.tmp, "resume.sh");
	char *text = xasprintf(
		"set -e\n"
		"p=%d\n"
		"kill -STOP $p\n"
		"while :; do\n"
		"  s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null) || break\n"
		"  case \"$s\" in T|t|Z|X|'') break;; esac\n"
		"done\n"
		"cp -a '%s' '%s/'\"$AMBERFS_CAPTURE\"\n", (int)getpid(), w->src, w->copies);

	write_str(q, text);
	free(text);
	text = xasprintf("kill -CONT %d\n", (int)getpid());
	write_str(r, text);
	free(text);
	free(q);
	free(r);
}

static void watcher_init(watcher *w)
{
	memset(w, 0, sizeof(*w));
	w->src = pjoin(IT.tmp, "src");
	w->arch = pjoin(IT.tmp, "arch");
	w->json = pjoin(IT.tmp, "watch.json");
	w->err = pjoin(IT.tmp, "watch.err");
	w->copies = pjoin(IT.tmp, "copies");
	mkdir_p(w->src, 0755);
	mkdir_p(w->copies, 0755);
	amber_init_archive(w->arch, 0);
	write_hooks(w);
}

static void watcher_dispose(watcher *w)
{
	free(w->src);
	free(w->arch);
	free(w->json);
	free(w->err);
	free(w->copies);
}

static char *json_text(const watcher *w)
{
	size_t len = 0;

	return access(w->json, F_OK) == 0 ? read_file(w->json, &len) : strdup("");
}

/* Number of report lines containing `needle`. */
static int count_lines(const watcher *w, const char *needle)
{
	char *t = json_text(w);
	int n = 0;

	for (char *p = strstr(t, needle); p; p = strstr(p + 1, needle))
		n++;
	free(t);
	return n;
}

/* Wait until count_lines(needle) >= n; assert within `timeout` seconds. */
static double wait_lines(const watcher *w, const char *needle, int n, double timeout)
{
	double t0 = now_s();

	while (count_lines(w, needle) < n) {
		if (now_s() - t0 > timeout) {
			char *e = read_file(w->err, NULL), *j = json_text(w);

			cr_assert_fail("no %d lines with %s after %.1f s\nreports:\n%s\nstderr:\n%s", n,
				       needle, timeout, j, e);
		}
		sleep_s(0.01);
	}
	return now_s() - t0;
}

/*
 * Start the watch; with `hooks`, captures stop this process and copy the
 * tree (never with kill -9: a hook orphaned mid-capture would stop us for
 * good).
 */
static void start(watcher *w, int hooks, const char *const *extra)
{
	char *q = xasprintf("sh %s/quiesce.sh", IT.tmp), *r = xasprintf("sh %s/resume.sh", IT.tmp);
	const char *args[32] = {"watch", w->arch, w->src, "--json", "--interval", INTERVAL_ARG,
				"--quiesce", q, "--resume", r};
	int n = hooks ? 10 : 6;
	run_opts o = {.stdout_path = w->json, .stderr_path = w->err};

	for (; extra && *extra; extra++)
		args[n++] = *extra;
	args[n] = NULL;
	unlink(w->json);
	w->pid = amber_spawn(&o, args);
	cr_assert_gt(w->pid, 0);
	wait_lines(w, "\"event\":\"ready\"", 1, 60);
	free(q);
	free(r);
}

static int stop(watcher *w, int sig)
{
	int status;

	kill(w->pid, sig);
	status = wait_exit(w->pid);
	w->pid = 0;
	return status;
}

static char *src_path(const watcher *w, const char *rel)
{
	return pjoin(w->src, rel);
}

/* Restore snapshot `id` and compare it with the copy of capture `seq`. */
static void assert_restores_to_copy(const watcher *w, const char *id, long long seq)
{
	char *dest = xasprintf("%s/restore-%lld", IT.tmp, seq);
	char *copy = xasprintf("%s/%lld", w->copies, seq);
	char *what = xasprintf("snapshot %s (capture %lld)", id, seq);
	run_result r;

	amber(&r, "restore", w->arch, id, dest, NULL);
	assert_ok(&r, "restore");
	run_result_dispose(&r);
	assert_trees_equal(copy, dest, 0, what);
	rm_rf(dest);
	free(dest);
	free(copy);
	free(what);
}

/* Every snapshot reported restores to the tree as it was at its capture. */
static int assert_all_snapshots_exact(const watcher *w)
{
	char *t = json_text(w), **objs = NULL;
	size_t n = json_lines(t, &objs);
	int checked = 0;

	for (size_t i = 0; i < n; i++) {
		char *ev = json_get(objs[i], "event", NULL);

		if (ev && strcmp(ev, "snapshot") == 0) {
			char *id = json_get(objs[i], "id", NULL);

			assert_restores_to_copy(w, id, json_get_ll(objs[i], "seq"));
			checked++;
			free(id);
		}
		free(ev);
		free(objs[i]);
	}
	free(objs);
	free(t);
	return checked;
}

/* A number of the newest snapshot report. */
static double last_snapshot(const watcher *w, const char *key)
{
	char *t = json_text(w), **objs = NULL;
	size_t n = json_lines(t, &objs);
	double v = -1;

	for (size_t i = 0; i < n; i++) {
		char *raw = strstr(objs[i], "\"event\":\"snapshot\"") ? json_get(objs[i], key, NULL)
									: NULL;

		if (raw)
			v = strtod(raw, NULL);
		free(raw);
		free(objs[i]);
	}
	free(objs);
	free(t);
	return v;
}

#define last_bytes_read(w) ((long long)last_snapshot((w), "bytes_read"))

/*
 * Make one change, then wait for the snapshot that holds it: its capture
 * starts within two intervals (plus the hooks' own time, under load).
 */
#define CHANGE(w, snaps, code)                                                           \
	do {                                                                             \
		(snaps) = count_lines((w), "\"event\":\"snapshot\"");                    \
		code;                                                                    \
		double waited_ = wait_lines((w), "\"event\":\"snapshot\"", ++(snaps), 10); \
		double took_ = last_snapshot((w), "duration_ms") / 1000;                  \
		cr_expect_leq(waited_, 2 * INTERVAL + took_ + 0.75,                      \
			      "%s appeared after %.2f s (the snapshot took %.2f s), more "  \
			      "than two intervals", #code, waited_, took_);              \
	} while (0)

/* Overwrite bytes in the middle of a file: same inode, same size. */
static void rewrite_in_place(const char *path, off_t off)
{
	int fd = open(path, O_WRONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, "changed in place", 16, off), 16);
	close(fd);
}

Test(watch, every_change_is_a_snapshot_that_restores_exactly, .timeout = 240)
{
	watcher w;
	int snaps = 1;
	char *f = NULL, *d = NULL;

	watcher_init(&w);
	mkdir_p(f = src_path(&w, "books/deep/er"), 0755);
	free(f);
	write_str(f = src_path(&w, "ledger.log"), "genesis\n");
	free(f);
	write_random_file(f = src_path(&w, "books/big.bin"), 3 << 20, 1, 0);
	free(f);
	start(&w, 1, NULL);
	CHANGE(&w, snaps, write_random_file(f = src_path(&w, "ledger.log"), 5000, 2, 1));
	free(f);
	CHANGE(&w, snaps, write_str(f = src_path(&w, "books/new.csv"), "px,qty\n1,2\n"));
	free(f);
	CHANGE(&w, snaps, truncate(f = src_path(&w, "books/big.bin"), 1 << 20));
	free(f);
	CHANGE(&w, snaps, write_random_file(f = src_path(&w, "books/big.bin"), 1 << 20, 3, 0));
	free(f);
	CHANGE(&w, snaps, rename(f = src_path(&w, "books/new.csv"), d = src_path(&w, "moved.csv")));
	free(f);
	free(d);
	CHANGE(&w, snaps, unlink(f = src_path(&w, "moved.csv")));
	free(f);
	CHANGE(&w, snaps, mkdir_p(f = src_path(&w, "fresh/sub"), 0700);
	       write_str(d = src_path(&w, "fresh/sub/in.txt"), "inside a new directory\n"));
	free(f);
	free(d);
	CHANGE(&w, snaps, rename(f = src_path(&w, "fresh"), d = src_path(&w, "books/deep/fresh")));
	free(f);
	free(d);
	CHANGE(&w, snaps, write_str(f = src_path(&w, "books/deep/fresh/sub/in.txt"), "moved\n"));
	free(f);
	CHANGE(&w, snaps, chmod(f = src_path(&w, "ledger.log"), 0600));
	free(f);
	CHANGE(&w, snaps, setxattr(f = src_path(&w, "books"), "user.desk", "fx", 2, 0));
	free(f);
	CHANGE(&w, snaps, symlink("../ledger.log", f = src_path(&w, "books/link")));
	free(f);
	CHANGE(&w, snaps, rewrite_in_place(f = src_path(&w, "books/big.bin"), 300000));
	free(f);
	CHANGE(&w, snaps, setxattr(f = src_path(&w, "ledger.log"), "user.origin", "engine", 6, 0));
	free(f);
	CHANGE(&w, snaps, removexattr(f = src_path(&w, "ledger.log"), "user.origin"));
	free(f);
	CHANGE(&w, snaps, chmod(f = src_path(&w, "books/deep"), 0750));
	free(f);
	write_str(f = src_path(&w, "books/replacement"), "the new one\n");
	CHANGE(&w, snaps, rename(f, d = src_path(&w, "books/deep/fresh/sub/in.txt")));
	free(f);
	free(d);
	CHANGE(&w, snaps, rm_rf(f = src_path(&w, "books/deep/fresh")));
	free(f);
	cr_assert_eq(stop(&w, SIGTERM), 0);
	cr_assert_geq(assert_all_snapshots_exact(&w), snaps);
	assert_fsck(w.arch);
	watcher_dispose(&w);
}

Test(watch, an_interval_without_change_writes_nothing, .timeout = 60)
{
	watcher w;
	char *f;
	run_result r;

	watcher_init(&w);
	write_str(f = src_path(&w, "still"), "nothing happens\n");
	start(&w, 1, NULL);
	free(read_file(f, NULL)); /* reading is not a change */
	sleep_s(6 * INTERVAL);
	cr_assert_eq(count_lines(&w, "\"event\":\"snapshot\""), 1, "only the start snapshot");
	cr_assert_eq(stop(&w, SIGINT), 0);
	amber(&r, "log", w.arch, NULL);
	cr_assert_eq(strchr(r.out, '\n') - r.out + 1, (long)strlen(r.out), "one snapshot: %s",
		     r.out);
	run_result_dispose(&r);
	/* a restart finds the tree as the tip has it and writes nothing either */
	start(&w, 1, NULL);
	cr_assert_eq(count_lines(&w, "\"event\":\"snapshot\""), 0);
	cr_assert_eq(stop(&w, SIGTERM), 0);
	free(f);
	watcher_dispose(&w);
}

Test(watch, sigterm_writes_a_last_snapshot, .timeout = 60)
{
	watcher w;
	char *f;
	const char *slow[] = {"--interval", "1h", NULL};

	watcher_init(&w);
	write_str(f = src_path(&w, "state"), "before\n");
	start(&w, 1, slow);
	write_str(f, "after, just before the stop\n");
	sleep_s(0.2); /* the event is queued */
	cr_assert_eq(stop(&w, SIGTERM), 0);
	cr_assert_eq(count_lines(&w, "\"event\":\"snapshot\""), 2, "start and the last one");
	cr_assert_eq(count_lines(&w, "\"event\":\"stopped\""), 1);
	cr_assert_eq(assert_all_snapshots_exact(&w), 2);
	free(f);
	watcher_dispose(&w);
}

static void set_queue_limit(const char *value)
{
	write_str("/proc/sys/fs/inotify/max_queued_events", value);
}

Test(watch, an_overflowing_event_queue_rescans_and_loses_nothing, .timeout = 120)
{
	watcher w;
	char *saved, *d;
	int snaps;

	watcher_init(&w);
	saved = read_file("/proc/sys/fs/inotify/max_queued_events", NULL);
	set_queue_limit("8"); /* read once, when the watch creates its queue */
	start(&w, 1, NULL);
	set_queue_limit(saved);
	snaps = count_lines(&w, "\"event\":\"snapshot\"");
	cr_assert_eq(kill(w.pid, SIGSTOP), 0); /* so that the queue fills up */
	d = strdup(w.src); /* a watched directory */
	for (int i = 0; i < 200; i++) {
		char *f = xasprintf("%s/f%03d", d, i);

		write_str(f, f);
		free(f);
	}
	cr_assert_eq(kill(w.pid, SIGCONT), 0);
	wait_lines(&w, "inotify queue overflow", 1, 10);
	wait_lines(&w, "\"event\":\"snapshot\"", snaps + 1, 10);
	cr_assert_eq(stop(&w, SIGTERM), 0);
	cr_assert_geq(count_lines(&w, "\"full\":true"), 2, "the overflow made a whole walk");
	cr_assert_eq(assert_all_snapshots_exact(&w), snaps + 1);
	free(d);
	free(saved);
	watcher_dispose(&w);
}

Test(watch, kill_9_at_any_moment_then_restart_needs_nothing, .timeout = 120)
{
	watcher w;
	char *f, *dest = pjoin(IT.tmp, "final");
	run_result r;

	watcher_init(&w);
	for (int round = 0; round < 3; round++) {
		start(&w, 0, NULL);
		f = xasprintf("%s/big%d.bin", w.src, round);
		write_random_file(f, 8 << 20, (uint64_t)round + 10, 0); /* a longer capture */
		sleep_s(INTERVAL + 0.1 * round);
		stop(&w, SIGKILL);
		free(f);
	}
	start(&w, 0, NULL); /* no manual step: the lock and temporary files are the kernel's */
	cr_assert_eq(stop(&w, SIGTERM), 0);
	amber(&r, "restore", w.arch, "latest", dest, NULL);
	assert_ok(&r, "restore");
	assert_trees_equal(w.src, dest, TD_SKIP_ROOT_META, "after kill -9 and a restart");
	run_result_dispose(&r);
	assert_fsck(w.arch);
	amber(&r, "verify", w.arch, NULL);
	cr_assert_eq(r.status, 0, "verify: %s", r.out);
	run_result_dispose(&r);
	free(dest);
	watcher_dispose(&w);
}

Test(watch, a_systemd_credential_gives_the_passphrase, .timeout = 60)
{
	watcher w;
	char *cred = pjoin(IT.tmp, "credentials"), *pass = pjoin(cred, "passphrase");
	char *env_cred = xasprintf("CREDENTIALS_DIRECTORY=%s", cred);
	const char *env[] = {"AMBERFS_PASSPHRASE_FILE", env_cred, NULL};
	const char *args[] = {"watch", NULL, NULL, "--json", "--interval", INTERVAL_ARG, NULL};
	run_opts o = {.env = env};

	watcher_init(&w);
	mkdir_p(cred, 0700);
	write_passfile(pass, IT_PASSPHRASE);
	args[1] = w.arch;
	args[2] = w.src;
	o.stdout_path = w.json;
	o.stderr_path = w.err;
	w.pid = amber_spawn(&o, args);
	wait_lines(&w, "\"event\":\"ready\"", 1, 30);
	cr_assert_eq(stop(&w, SIGTERM), 0);
	/* and without it, no passphrase at all: a clear error */
	env[1] = NULL;
	w.pid = amber_spawn(&o, args);
	cr_assert_eq(wait_exit(w.pid), 1);
	char *err = read_file(w.err, NULL);

	cr_assert(strstr(err, "is encrypted"), "%s", err);
	free(err);
	free(env_cred);
	free(pass);
	free(cred);
	watcher_dispose(&w);
}


Test(watch, append_only_files_are_read_from_their_tail, .timeout = 120)
{
	watcher w;
	char *f, *dest;
	const char *globs[] = {"--append-only", "*.log", NULL};
	int snaps = 0;
	run_result r;

	watcher_init(&w);
	f = src_path(&w, "ledger.log");
	write_random_file(f, 6 << 20, 1, 0);
	start(&w, 1, globs);
	for (int i = 0; i < 3; i++) {
		CHANGE(&w, snaps, write_random_file(f, 64 << 10, (uint64_t)i + 2, 1));
		cr_assert_leq(last_bytes_read(&w), (2 << 20) + (64 << 10),
			      "an append re-read %lld bytes", last_bytes_read(&w));
	}
	cr_assert_geq(assert_all_snapshots_exact(&w), 4);
	/* a broken promise: an early byte rewritten, then an append */
	snaps = count_lines(&w, "\"event\":\"snapshot\"");
	int fd = open(f, O_WRONLY);

	cr_assert_eq(pwrite(fd, "rewritten in place", 18, 1000), 18);
	close(fd);
	write_random_file(f, 1000, 98, 1);
	wait_lines(&w, "\"event\":\"snapshot\"", snaps + 1, 10);
	cr_assert_eq(count_lines(&w, "declared append-only"), 0, "the tail alone looks fine");
	kill(w.pid, SIGHUP); /* a whole walk now */
	wait_lines(&w, "declared append-only, but bytes before its end changed", 1, 10);
	/* truncated and grown again: its stored end no longer matches, read whole */
	cr_assert_eq(truncate(f, 1 << 20), 0);
	write_random_file(f, 200 << 10, 99, 1);
	wait_lines(&w, "declared append-only, but it shrank or its stored end", 1, 10);
	cr_assert_eq(stop(&w, SIGTERM), 0);
	dest = pjoin(IT.tmp, "final");
	amber(&r, "restore", w.arch, "latest", dest, NULL);
	assert_ok(&r, "restore");
	assert_trees_equal(w.src, dest, TD_SKIP_ROOT_META, "after the whole walk");
	run_result_dispose(&r);
	free(dest);
	free(f);
	watcher_dispose(&w);
}
