/*
 * `amberfs mount`, for real, through /dev/fuse: the time-travel tree reads
 * back the source exactly (data, metadata, xattrs, hard links) with ordinary
 * tools; the layout (latest, snapshots/, at/, streams/, tags/, ids/) names
 * the right snapshots; st_ino follows content so `diff -r` between
 * snapshots reads only what changed; every change is EROFS; concurrent
 * readers, a live snapshot, clean unmounts; a corrupt object is EIO for that
 * file only; a killed daemon leaves ENOTCONN, not an empty directory;
 * read-only archives mount and are never written; mount(8)-style options.
 *
 * Every test mounts its own archive in its own temporary directory.  The
 * mounts (and bind mounts, and foreground daemons) a test makes are
 * registered before they are made and taken down in the suite's .fini,
 * which Criterion runs after a failed assertion too.  A missing /dev/fuse
 * or a mount that cannot be made fails the test; nothing here skips.
 */
#include "amber.h"
#include "archive.h"
#include "codec.h"
#include "gitobj.h"
#include "helpers.h"
#include "manifest.h"
#include "record.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* Append `s` and a newline to the string in dst[cap]; the test fails if it
 * does not fit. */
static void append_line(char *dst, size_t cap, const char *s)
{
	size_t have = strlen(dst);
	int n = snprintf(dst + have, cap - have, "%s\n", s);

	cr_assert(n >= 0 && (size_t)n < cap - have, "test buffer too small for %s", s);
}

/* ------------------------------------------------------------------ */
/* Mounts, bind mounts and daemons to take down in teardown            */

#define MT_MAX 16

typedef struct mt_mount {
	char *path;   /* absolute, resolved when registered */
	int bind;     /* 1: a bind mount (umount), 0: a FUSE mount (fusermount3 -u) */
} mt_mount;

static mt_mount mt_mounts[MT_MAX];
static size_t mt_nmounts;
static pid_t mt_pids[MT_MAX];
static size_t mt_npids;

static const char *const no_passphrase_env[] = { "AMBERFS_PASSPHRASE_FILE", NULL };

/* Undo the octal escapes (\040 etc.) of /proc/self/mountinfo, in place. */
static void mi_unescape(char *s)
{
	char *w = s;
	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			*w++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			*w++ = *p;
		}
	}
	*w = '\0';
}

/*
 * Look `mnt` (absolute) up in /proc/self/mountinfo; the last (topmost)
 * match wins.  Copies fstype, source and the per-mount options (each may
 * be NULL).  @return 1 if mounted, 0 if not.
 */
static int mount_lookup(const char *mnt, char *fstype, size_t fl, char *source, size_t sl,
			char *opts, size_t ol)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return 0;
	char *line = NULL;
	size_t cap = 0;
	int found = 0;
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *tok[16];
		int n = 0, dash = -1;
		for (char *t = strtok_r(line, " \n", &save); t && n < 16; t = strtok_r(NULL, " \n", &save)) {
			if (!strcmp(t, "-") && dash < 0)
				dash = n;
			tok[n++] = t;
		}
		if (n < 6 || dash < 0 || dash + 2 >= n)
			continue;
		mi_unescape(tok[4]);
		if (strcmp(tok[4], mnt) != 0)
			continue;
		found = 1;
		if (fstype)
			snprintf(fstype, fl, "%s", tok[dash + 1]);
		if (source) {
			mi_unescape(tok[dash + 2]);
			snprintf(source, sl, "%s", tok[dash + 2]);
		}
		if (opts)
			snprintf(opts, ol, "%s", tok[5]);
	}
	free(line);
	fclose(f);
	return found;
}

static int is_mounted(const char *mnt)
{
	return mount_lookup(mnt, NULL, 0, NULL, 0, NULL, 0);
}

/* Quietly run a command for teardown: no assertions about its result. */
static int quiet_run(const char *a0, const char *a1, const char *a2)
{
	const char *argv[] = { a0, a1, a2, NULL };
	run_opts o = { .timeout = 30 };
	run_result r;
	int st = run_argv(&r, &o, argv);
	if (st != 0)
		fprintf(stderr, "itest_mount: teardown: %s %s %s: exit %d: %s", a0, a1,
			a2 ? a2 : "", st, r.err);
	run_result_dispose(&r);
	return st;
}

/* Take a mount down: fusermount3 -u (or umount), falling back to umount -l. */
static void mt_unmount_quietly(const mt_mount *m)
{
	if (!is_mounted(m->path))
		return;
	if (m->bind) {
		/* A FUSE daemon unmounted just before may still hold files. */
		for (int i = 0; i < 25 && is_mounted(m->path); i++) {
			const char *argv[] = { "umount", m->path, NULL };
			run_opts o = { .timeout = 30 };
			run_result r;
			run_argv(&r, &o, argv);
			run_result_dispose(&r);
			if (is_mounted(m->path))
				sleep_s(0.2);
		}
	} else
		quiet_run("fusermount3", "-u", m->path);
	if (is_mounted(m->path))
		quiet_run("umount", "-l", m->path);
}

/* Poll a child for up to `secs`; @return exit code (128 + signal) or -2. */
static int wait_timeout(pid_t pid, double secs)
{
	double end = now_s() + secs;
	for (;;) {
		int st;
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (w < 0 && errno != EINTR)
			return -1;
		if (now_s() > end)
			return -2;
		sleep_s(0.02);
	}
}

static void forget_pid(pid_t pid)
{
	for (size_t i = 0; i < mt_npids; i++) {
		if (mt_pids[i] == pid)
			mt_pids[i] = 0;
	}
}

/*
 * The watcher: a process forked at setup that learns every mount and
 * daemon the test registers through a pipe.  If the test process dies
 * without its teardown (killed at Criterion's timeout, say), the pipe
 * closes and the watcher detaches the mounts and kills the daemons, so no
 * mount is ever left behind.  A normal teardown says "D" and it just exits.
 */
static int mt_watch_fd = -1;
static pid_t mt_watch_pid;

static void watcher_main(int fd)
{
	char *mounts[MT_MAX];
	pid_t pids[MT_MAX];
	size_t nm = 0, np = 0;
	FILE *in = fdopen(fd, "r");
	char line[PATH_MAX + 8];
	while (in && fgets(line, sizeof(line), in)) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == 'D')
			_exit(0);
		if (line[0] == 'M' && nm < MT_MAX)
			mounts[nm++] = strdup(line + 1);
		if (line[0] == 'P' && np < MT_MAX)
			pids[np++] = (pid_t)strtol(line + 1, NULL, 10);
	}
	for (size_t i = 0; i < np; i++)
		kill(pids[i], SIGKILL);
	for (size_t i = nm; i-- > 0;) {
		if (umount2(mounts[i], MNT_DETACH) == 0)
			fprintf(stderr, "itest_mount: the test died without its teardown; "
				"detached %s\n", mounts[i]);
	}
	_exit(0);
}

static void watch_send(char kind, const char *what)
{
	if (mt_watch_fd >= 0)
		dprintf(mt_watch_fd, "%c%s\n", kind, what);
}

static void watch_pid(pid_t pid)
{
	char b[32];
	snprintf(b, sizeof(b), "%d", (int)pid);
	watch_send('P', b);
}

static void mt_setup(void)
{
	itest_setup();
	mt_nmounts = 0;
	mt_npids = 0;
	int p[2];
	cr_assert(pipe2(p, O_CLOEXEC) == 0);
	mt_watch_pid = fork();
	cr_assert(mt_watch_pid >= 0, "fork: %s", strerror(errno));
	if (mt_watch_pid == 0) {
		setsid();
		signal(SIGPIPE, SIG_IGN);
		if (p[0] != 3) {
			dup2(p[0], 3);
		}
		closefrom(4);
		watcher_main(3);
	}
	close(p[0]);
	mt_watch_fd = p[1];
	struct stat st;
	cr_assert(stat("/dev/fuse", &st) == 0 && S_ISCHR(st.st_mode),
		  "/dev/fuse is missing (%s): the mount tests need FUSE and must not pass "
		  "without it; run them where /dev/fuse exists (e.g. a container with "
		  "--device /dev/fuse --cap-add SYS_ADMIN)",
		  strerror(errno));
}

static void mt_teardown(void)
{
	for (size_t i = mt_nmounts; i-- > 0;) {
		mt_unmount_quietly(&mt_mounts[i]);
		if (is_mounted(mt_mounts[i].path))
			fprintf(stderr, "itest_mount: teardown: %s is STILL MOUNTED\n",
				mt_mounts[i].path);
	}
	for (size_t i = 0; i < mt_npids; i++) {
		pid_t pid = mt_pids[i];
		if (pid <= 0)
			continue;
		if (wait_timeout(pid, 2) == -2) {
			kill(pid, SIGTERM);
			if (wait_timeout(pid, 5) == -2) {
				kill(pid, SIGKILL);
				wait_timeout(pid, 5);
			}
		}
	}
	/* Re-check after the daemons are gone (a killed daemon's mount stays). */
	for (size_t i = mt_nmounts; i-- > 0;) {
		mt_unmount_quietly(&mt_mounts[i]);
		free(mt_mounts[i].path);
	}
	mt_nmounts = 0;
	mt_npids = 0;
	if (mt_watch_fd >= 0) {
		watch_send('D', "");
		close(mt_watch_fd);
		mt_watch_fd = -1;
		wait_timeout(mt_watch_pid, 5);
	}
	itest_teardown();
}

TestSuite(mount, .init = mt_setup, .fini = mt_teardown, .timeout = 300);

/* Register a mount point (created if missing) before anything mounts on it. */
static char *mt_register(const char *path, int bind)
{
	mkdir_p(path, 0755);
	char *abs = realpath(path, NULL);
	cr_assert(abs, "realpath %s: %s", path, strerror(errno));
	cr_assert(mt_nmounts < MT_MAX);
	mt_mounts[mt_nmounts++] = (mt_mount){ abs, bind };
	watch_send('M', abs);
	return strdup(abs);
}

/* A fresh mount point IT.tmp/name, registered for teardown. */
static char *mountpoint(const char *name)
{
	char *p = pjoin(IT.tmp, name);
	char *abs = mt_register(p, 0);
	free(p);
	return abs;
}

static void assert_is_amberfs_mount(const char *mnt, const char *what)
{
	char fstype[64];
	cr_assert(mount_lookup(mnt, fstype, sizeof(fstype), NULL, 0, NULL, 0),
		  "%s: %s is not a mount point (not in /proc/self/mountinfo)", what, mnt);
	cr_assert_str_eq(fstype, "fuse.amberfs", "%s: %s is mounted with type %s", what, mnt,
			 fstype);
}

/*
 * `amberfs mount ARCHIVE MNT [extra...]` in the background: must exit 0
 * with nothing on stdout or stderr, and the mount must be there the moment
 * the command returns.  env is put on top of amber_a()'s environment.
 */
static void mount_bg(const char *arch, const char *mnt, const char *const *env,
		     const char *const *extra)
{
	const char *args[32] = { "mount", arch, mnt };
	size_t n = 3;
	for (const char *const *e = extra; e && *e; e++)
		args[n++] = *e;
	args[n] = NULL;
	run_opts o = { .env = env, .timeout = 60 };
	run_result r;
	amber_a(&r, &o, args);
	cr_assert(!r.timed_out,
		  "amberfs mount %s %s did not return within 60 s (does the background daemon "
		  "keep the caller's stdout/stderr open?); stderr: %s", arch, mnt, r.err);
	cr_assert_eq(r.status, 0, "amberfs mount %s %s: expected exit 0, got %d; stderr: %s", arch,
		     mnt, r.status, r.err);
	cr_assert_eq(r.err_len, 0, "amberfs mount wrote to stderr: %s", r.err);
	cr_assert_eq(r.out_len, 0, "amberfs mount wrote to stdout: %s", r.out);
	assert_is_amberfs_mount(mnt, "right after `amberfs mount` returned");
	run_result_dispose(&r);
}

/*
 * `amberfs mount ARCHIVE MNT -f [extra...]` as a child with its stderr in
 * `log`; waits until the mount shows in /proc/self/mountinfo and the root
 * answers.  @return the daemon's pid (registered for teardown).
 */
static pid_t mount_fg(const char *arch, const char *mnt, const char *log,
		      const char *const *extra)
{
	const char *args[32] = { "mount", arch, mnt, "-f" };
	size_t n = 4;
	for (const char *const *e = extra; e && *e; e++)
		args[n++] = *e;
	args[n] = NULL;
	run_opts o = { .stderr_path = log };
	pid_t pid = amber_spawn(&o, args);
	cr_assert(mt_npids < MT_MAX);
	mt_pids[mt_npids++] = pid;
	watch_pid(pid);
	double end = now_s() + 30;
	while (!is_mounted(mnt)) {
		int st = wait_timeout(pid, 0);
		if (st != -2) {
			forget_pid(pid);
			char *l = read_file(log, NULL);
			cr_assert(0, "amberfs mount -f %s %s exited (status %d) before the mount "
				"appeared; its stderr: %s", arch, mnt, st, l);
		}
		cr_assert(now_s() < end, "amberfs mount -f: %s not mounted after 30 s", mnt);
		sleep_s(0.02);
	}
	struct stat st;
	cr_assert(stat(mnt, &st) == 0 && S_ISDIR(st.st_mode), "stat %s after mounting: %s", mnt,
		  strerror(errno));
	assert_is_amberfs_mount(mnt, "foreground daemon");
	return pid;
}

/* fusermount3 -u MNT; asserts exit 0 and that the mount is gone. */
static void unmount_ok(const char *mnt)
{
	run_result r;
	run_opts o = { .timeout = 30 };
	int st = -1;
	for (int i = 0; i < 20; i++) {
		run_cmd(&r, &o, "fusermount3", "-u", mnt, NULL);
		st = r.status;
		/* A reader thread that just closed its file may keep it busy briefly. */
		if (st == 0 || !strstr(r.err, "busy"))
			break;
		run_result_dispose(&r);
		sleep_s(0.1);
	}
	cr_assert_eq(st, 0, "fusermount3 -u %s: exit %d: %s", mnt, st, r.err);
	run_result_dispose(&r);
	cr_assert(!is_mounted(mnt), "%s is still mounted after fusermount3 -u", mnt);
}

/* ------------------------------------------------------------------ */
/* Small tools                                                         */

/* Read a whole file without asserting.  @return 0 or an errno. */
static int read_all(const char *path, char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	size_t cap = 65536, n = 0;
	char *b = malloc(cap + 1);
	for (;;) {
		if (n == cap) {
			cap *= 2;
			b = realloc(b, cap + 1);
		}
		ssize_t k = read(fd, b + n, cap - n);
		if (k < 0) {
			int e = errno;
			close(fd);
			b[n] = '\0';
			*buf = b;
			*len = n;
			return e;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

static void assert_file_content(const char *path, const char *want)
{
	char *got;
	size_t len;
	int e = read_all(path, &got, &len);
	cr_assert_eq(e, 0, "read %s: %s", path, strerror(e));
	cr_assert(len == strlen(want) && !memcmp(got, want, len),
		  "%s: expected content '%s', got '%s'", path, want, got);
	free(got);
}

/* getxattr (following symlinks) as a NUL-terminated string; NULL + errno. */
static char *xget(const char *path, const char *name)
{
	ssize_t n = getxattr(path, name, NULL, 0);
	if (n < 0)
		return NULL;
	char *v = malloc((size_t)n + 1);
	n = getxattr(path, name, v, (size_t)n);
	if (n < 0) {
		int e = errno;
		free(v);
		errno = e;
		return NULL;
	}
	v[n] = '\0';
	return v;
}

static char *xget_ok(const char *path, const char *name)
{
	char *v = xget(path, name);
	cr_assert(v, "getxattr %s %s: %s", path, name, strerror(errno));
	return v;
}

/* One counter of the mount root's user.amberfs.stats. */
static long long stats_counter(const char *stats, const char *key)
{
	char *pat = xasprintf("%s=", key);
	const char *p = stats;
	while ((p = strstr(p, pat))) {
		if (p == stats || p[-1] == ' ')
			break;
		p++;
	}
	cr_assert(p, "user.amberfs.stats lacks %s: '%s'", pat, stats);
	char *end;
	long long v = strtoll(p + strlen(pat), &end, 10);
	cr_assert(end != p + strlen(pat), "user.amberfs.stats: %s is not a number: '%s'", key,
		  stats);
	free(pat);
	return v;
}

/* Sorted names in a directory, one per line ("" if empty); asserts. */
static char *list_dir(const char *path)
{
	DIR *d = opendir(path);
	cr_assert(d, "opendir %s: %s", path, strerror(errno));
	char **v = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		v = realloc(v, (n + 1) * sizeof(*v));
		v[n++] = strdup(de->d_name);
	}
	closedir(d);
	for (size_t i = 1; i < n; i++) {
		for (size_t j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
			char *t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	}
	size_t total = 1;
	for (size_t i = 0; i < n; i++)
		total += strlen(v[i]) + 1;
	char *out = malloc(total);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		append_line(out, total, v[i]);
		free(v[i]);
	}
	free(v);
	return out;
}

static char *readlink_str(const char *path)
{
	char buf[PATH_MAX];
	ssize_t n = readlink(path, buf, sizeof(buf) - 1);
	if (n < 0)
		return NULL;
	buf[n] = '\0';
	return strdup(buf);
}

/* MNT/<target of MNT/latest>: the newest snapshot's directory. */
static char *latest_dir(const char *mnt)
{
	char *l = pjoin(mnt, "latest");
	char *t = readlink_str(l);
	cr_assert(t, "readlink %s: %s", l, strerror(errno));
	char *d = pjoin(mnt, t);
	free(l);
	free(t);
	return d;
}

static ino_t ino_of(const char *path)
{
	struct stat st;
	cr_assert(lstat(path, &st) == 0, "lstat %s: %s", path, strerror(errno));
	return st.st_ino;
}

/* Run git on repo; assert success; stdout with trailing newlines cut. */
static char *git_out(const char *repo, const char *a0, const char *a1, const char *a2)
{
	char *gd = xasprintf("--git-dir=%s", repo);
	const char *argv[] = { "git", gd, a0, a1, a2, NULL };
	run_result r;
	run_argv(&r, NULL, argv);
	cr_assert_eq(r.status, 0, "git %s %s %s: exit %d: %s", a0, a1, a2 ? a2 : "", r.status,
		     r.err);
	while (r.out_len > 0 && r.out[r.out_len - 1] == '\n')
		r.out[--r.out_len] = '\0';
	free(gd);
	free(r.err);
	return r.out;
}

/* ------------------------------------------------------------------ */
/* Snapshot times                                                      */

typedef struct snapinfo {
	char id[41];
	long long ns;      /* time_ns from `amberfs log --json` */
	char time[48];     /* time as log prints it */
} snapinfo;

/* `amberfs log ARCH --json [--stream S]`, newest first. */
static size_t log_snaps(const char *arch, const char *stream, snapinfo *out, size_t max)
{
	run_result r;
	if (stream)
		amber(&r, "log", arch, "--json", "--stream", stream, NULL);
	else
		amber(&r, "log", arch, "--json", NULL);
	assert_ok(&r, "amberfs log --json");
	char **objs;
	size_t n = json_lines(r.out, &objs);
	cr_assert(n <= max);
	for (size_t i = 0; i < n; i++) {
		char *id = json_get(objs[i], "id", NULL), *t = json_get(objs[i], "time", NULL);
		cr_assert(id && strlen(id) == 40 && t, "log --json line lacks id/time: %s", objs[i]);
		snprintf(out[i].id, sizeof(out[i].id), "%s", id);
		snprintf(out[i].time, sizeof(out[i].time), "%s", t);
		out[i].ns = json_get_ll(objs[i], "time_ns");
		free(id);
		free(t);
		free(objs[i]);
	}
	free(objs);
	run_result_dispose(&r);
	return n;
}

static snapinfo *find_snap(snapinfo *v, size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(v[i].id, id))
			return &v[i];
	}
	cr_assert(0, "snapshot %s is not in amberfs log", id);
	return NULL;
}

/*
 * ISO 8601 of ns: digits < 0 gives seconds only, else that many fraction
 * digits (truncated); off_min is the UTC offset written (0 gives "Z").
 */
static char *iso(long long ns, int digits, int off_min)
{
	long long sec = ns / 1000000000LL;
	long long frac = ns % 1000000000LL;
	time_t local = (time_t)(sec + off_min * 60LL);
	struct tm tm;
	gmtime_r(&local, &tm);
	char base[40], fr[16] = "", zone[8];
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	if (digits > 0) {
		char all[16];
		snprintf(all, sizeof(all), "%09lld", frac);
		snprintf(fr, sizeof(fr), ".%.*s", digits, all);
	}
	if (off_min == 0)
		snprintf(zone, sizeof(zone), "Z");
	else
		snprintf(zone, sizeof(zone), "%c%02d:%02d", off_min < 0 ? '-' : '+',
			 abs(off_min) / 60, abs(off_min) % 60);
	return xasprintf("%s%s%s", base, fr, zone);
}

/* snapshots/<day>/<name> of a snapshot taken at ns. */
static char *snap_rel(long long ns)
{
	time_t sec = (time_t)(ns / 1000000000LL);
	struct tm tm;
	gmtime_r(&sec, &tm);
	char day[16], hms[24];
	strftime(day, sizeof(day), "%Y-%m-%d", &tm);
	strftime(hms, sizeof(hms), "%Y%m%dT%H%M%S", &tm);
	return xasprintf("snapshots/%s/%s.%09lldZ", day, hms, ns % 1000000000LL);
}

/* ------------------------------------------------------------------ */
/* 1. Round trip of the awkward tree                                   */

static void snapshot_as(char id[41], const char *arch, const char *src, int plain,
			const char *const *extra)
{
	if (!plain) {
		amber_snapshot_ok(id, arch, src, extra);
		return;
	}
	const char *args[16] = { "snapshot", arch, src };
	size_t n = 3;
	for (const char *const *e = extra; e && *e; e++)
		args[n++] = *e;
	args[n] = NULL;
	run_opts o = { .env = no_passphrase_env };
	run_result r;
	amber_a(&r, &o, args);
	assert_ok(&r, "amberfs snapshot (plain archive, no passphrase)");
	cr_assert(r.out_len >= 40 && strspn(r.out, "0123456789abcdef") == 40,
		  "snapshot should print a commit id: '%s'", r.out);
	memcpy(id, r.out, 40);
	id[40] = '\0';
	run_result_dispose(&r);
}

/* `getfattr -d -h -e hex PATH` without its "# file:" line. */
static char *getfattr_dump(const char *path)
{
	run_result r;
	run_cmd(&r, NULL, "getfattr", "-d", "-h", "-e", "hex", "--absolute-names", path, NULL);
	cr_assert_eq(r.status, 0, "getfattr -d %s: exit %d: %s", path, r.status, r.err);
	char *body = strchr(r.out, '\n');
	char *res = strdup(body ? body + 1 : "");
	run_result_dispose(&r);
	return res;
}

static void assert_mode(const char *path, mode_t want)
{
	struct stat st;
	cr_assert(lstat(path, &st) == 0, "lstat %s: %s", path, strerror(errno));
	cr_assert_eq(st.st_mode & 07777, want, "%s: mode %04o, expected %04o", path,
		     (unsigned)(st.st_mode & 07777), (unsigned)want);
}

static void roundtrip(int plain)
{
	const char *kind = plain ? "plain" : "encrypted";
	char *src = pjoin(IT.tmp, "src");
	make_awkward_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, plain);
	char id[41];
	snapshot_as(id, arch, src, plain, NULL);
	char *mnt = mountpoint("mnt");
	mount_bg(arch, mnt, plain ? no_passphrase_env : NULL, NULL);
	char *snap = latest_dir(mnt);

	/* diff -r: identical.  GNU diff --no-dereference reports any two fifos
	 * or device nodes as different ("File a is a fifo while file b is a
	 * fifo", even between two copies of the source), so those are left to
	 * the tree comparison below. */
	run_result r;
	run_opts lo = { .timeout = 120 };
	run_cmd(&r, &lo, "diff", "-r", "--no-dereference", "--exclude=fifo", "--exclude=block",
		"--exclude=null-like", src, snap, NULL);
	cr_assert(r.status == 0 && r.out_len == 0 && r.err_len == 0,
		  "%s: diff -r SRC MNT/latest should find nothing (exit %d):\n%.2000s\n%.1000s",
		  kind, r.status, r.out, r.err);
	run_result_dispose(&r);

	/* Every entry: bytes (cmp), type, mode, uid, gid, size, mtime ns,
	 * symlink targets, rdev, listed xattrs, nlink and hard-link groups. */
	char *what = xasprintf("%s: SRC vs MNT/latest", kind);
	assert_trees_equal(src, snap, TD_SKIP_ROOT_META, what);
	free(what);

	/* The odd modes and hard links, spelled out. */
	char *p = pjoin(snap, AWK_SETUID);
	assert_mode(p, 04755);
	struct stat st;
	cr_assert(lstat(p, &st) == 0 && st.st_uid == 1234 && st.st_gid == 5678,
		  "%s: owner %u:%u, expected 1234:5678", p, (unsigned)st.st_uid,
		  (unsigned)st.st_gid);
	free(p);
	p = pjoin(snap, AWK_SETGID);
	assert_mode(p, 02755);
	free(p);
	p = pjoin(snap, AWK_STICKY);
	assert_mode(p, 01777);
	free(p);
	p = pjoin(snap, "modes/none");
	assert_mode(p, 0);
	free(p);
	const char *group[] = { AWK_SUBDIR "/hl/one", AWK_SUBDIR "/hl/two", AWK_SUBDIR "/hl2/three" };
	ino_t gi = 0;
	for (int i = 0; i < 3; i++) {
		p = pjoin(snap, group[i]);
		cr_assert(lstat(p, &st) == 0, "lstat %s: %s", p, strerror(errno));
		cr_assert_eq(st.st_nlink, 3, "%s: nlink %lu, expected 3 (as stored)", p,
			     (unsigned long)st.st_nlink);
		if (i == 0)
			gi = st.st_ino;
		cr_assert_eq(st.st_ino, gi, "%s: the files of a hard-link group must share st_ino",
			     p);
		free(p);
	}
	p = pjoin(snap, AWK_SUBDIR "/file with spaces");
	cr_assert_neq(ino_of(p), gi, "a file outside the hard-link group shares its st_ino");
	free(p);
	/* Equal content is not a hard link: both empty files keep nlink 1. */
	const char *empties[] = { "empty", "sizes/empty too" };
	for (int i = 0; i < 2; i++) {
		p = pjoin(snap, empties[i]);
		cr_assert(lstat(p, &st) == 0 && st.st_nlink == 1,
			  "%s: nlink %lu, expected 1", p, (unsigned long)st.st_nlink);
		free(p);
	}

	/* readlink of every kind of symlink target. */
	const char *links[] = { "links/relative", "links/absolute", "links/dangling",
				"links/odd target", AWK_SUBDIR "/nested/to one", "times/old link" };
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		char *a = pjoin(src, links[i]), *b = pjoin(snap, links[i]);
		char *ta = readlink_str(a), *tb = readlink_str(b);
		cr_assert(ta && tb && !strcmp(ta, tb), "readlink %s: '%s', source has '%s' (%s)", b,
			  tb ? tb : "(error)", ta ? ta : "(error)", strerror(errno));
		free(a);
		free(b);
		free(ta);
		free(tb);
	}

	/* getfattr -d shows the file's own user.* xattrs and nothing else. */
	const char *xa[] = { "xattr/file", "xattr/dir", "xattr", AWK_BIG, AWK_SUBDIR "/hl/one",
			     "name with spaces.txt" };
	for (size_t i = 0; i < sizeof(xa) / sizeof(xa[0]); i++) {
		char *a = pjoin(src, xa[i]), *b = pjoin(snap, xa[i]);
		char *da = getfattr_dump(a), *db = getfattr_dump(b);
		cr_assert_str_eq(db, da, "%s: getfattr -d through the mount differs from the source "
				 "(user.amberfs.* must not be listed without show_provenance)",
				 xa[i]);
		free(a);
		free(b);
		free(da);
		free(db);
	}

	/* Provenance, read by name. */
	p = pjoin(snap, AWK_BIG);
	char *v = xget_ok(p, "user.amberfs.snapshot");
	cr_assert_str_eq(v, id, "user.amberfs.snapshot of %s", p);
	free(v);
	v = xget_ok(p, "user.amberfs.oid");
	cr_assert(strlen(v) == 40 && strspn(v, "0123456789abcdef") == 40,
		  "user.amberfs.oid of %s should be a 40-hex object id: '%s'", p, v);
	free(v);
	free(p);

	/* rsync sees nothing to do, except the root's mtime: a snapshot
	 * directory's mtime is the snapshot's time by contract. */
	char *from = xasprintf("%s/", snap), *to = xasprintf("%s/", src);
	run_cmd(&r, &lo, "rsync", "-aHAX", "--dry-run", "--itemize-changes", from, to, NULL);
	cr_assert_eq(r.status, 0, "%s: rsync -aHAX --dry-run: exit %d: %s", kind, r.status, r.err);
	char *save = NULL;
	for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		const char *sp = strchr(line, ' ');
		if (sp && !strcmp(sp + 1, "./") && line[0] == '.' && line[1] == 'd')
			continue;
		cr_assert(0, "%s: rsync -aHAX --dry-run --itemize-changes MNT/latest/ SRC/ wants to change "
			"something: '%s'\nfull output:\n%.2000s", kind, line, r.out);
	}
	run_result_dispose(&r);
	free(from);
	free(to);

	/* cp -a out of the mount gives back the source. */
	char *dest = pjoin(IT.tmp, "copy");
	run_cmd(&r, &lo, "cp", "-a", snap, dest, NULL);
	cr_assert(r.status == 0 && r.err_len == 0, "%s: cp -a MNT/latest DEST: exit %d: %s", kind,
		  r.status, r.err);
	run_result_dispose(&r);
	what = xasprintf("%s: cp -a of MNT/latest vs SRC", kind);
	assert_trees_equal(src, dest, TD_SKIP_ROOT_META, what);
	free(what);
	free(dest);

	unmount_ok(mnt);
	free(snap);
	free(mnt);
	free(arch);
	free(src);
}

Test(mount, awkward_tree_reads_back_identically_encrypted)
{
	roundtrip(0);
}

Test(mount, awkward_tree_reads_back_identically_plain)
{
	roundtrip(1);
}

/* ------------------------------------------------------------------ */
/* 2. Layout                                                           */

/* Assert that MNT/path is the snapshot `id` (by xattr and content), or
 * ENOENT when id is NULL. */
static void expect_snap(const char *mnt, const char *rel, const char *id, const char *content)
{
	char *p = pjoin(mnt, rel);
	struct stat st;
	errno = 0;
	int rc = stat(p, &st);
	int e = errno;
	if (!id) {
		cr_expect(rc != 0 && e == ENOENT, "%s: expected ENOENT, got %s", rel,
			  rc == 0 ? "an entry" : strerror(e));
		free(p);
		return;
	}
	if (!(rc == 0 && S_ISDIR(st.st_mode))) {
		cr_expect(0, "%s: expected the snapshot %s, got %s", rel, id,
			  rc == 0 ? "a non-directory" : strerror(e));
		free(p);
		return;
	}
	char *v = xget(p, "user.amberfs.snapshot");
	cr_expect(v && !strcmp(v, id), "%s resolves to the wrong snapshot: %s, expected %s", rel,
		  v ? v : strerror(errno), id);
	free(v);
	char *f = pjoin(p, "version");
	assert_file_content(f, content);
	free(f);
	free(p);
}

Test(mount, layout_names_times_ids_tags_and_streams)
{
	char *src = pjoin(IT.tmp, "src"), *src2 = pjoin(IT.tmp, "src2");
	mkdir_p(src, 0755);
	mkdir_p(src2, 0755);
	char *ver = pjoin(src, "version"), *ver2 = pjoin(src2, "version");
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	const char *contents[3] = { "one\n", "two\n", "three\n" };
	char ids[3][41], oid[41];
	const char *tag_first[] = { "--tag", "first", NULL }, *tag_third[] = { "--tag", "third", NULL };
	write_str(ver, contents[0]);
	amber_snapshot_ok(ids[0], arch, src, tag_first);
	sleep_s(1.2);
	write_str(ver, contents[1]);
	amber_snapshot_ok(ids[1], arch, src, NULL);
	sleep_s(1.2);
	write_str(ver, contents[2]);
	amber_snapshot_ok(ids[2], arch, src, tag_third);
	write_str(ver2, "other\n");
	const char *other[] = { "--stream", "other", NULL };
	amber_snapshot_ok(oid, arch, src2, other);

	snapinfo all[8], oth[2];
	size_t n = log_snaps(arch, NULL, all, 8);
	cr_assert_eq(n, 3, "amberfs log should list 3 snapshots of main, got %zu", n);
	cr_assert_eq(log_snaps(arch, "other", oth, 2), 1);
	snapinfo *s[3];
	for (int i = 0; i < 3; i++)
		s[i] = find_snap(all, n, ids[i]);
	cr_assert(s[1]->ns - s[0]->ns >= 1000000000LL && s[2]->ns - s[1]->ns >= 1000000000LL,
		  "snapshots taken 1.2 s apart have times %s %s %s", s[0]->time, s[1]->time,
		  s[2]->time);

	char *mnt = mountpoint("mnt");
	mount_bg(arch, mnt, NULL, NULL);

	/* Top level. */
	char *top = list_dir(mnt);
	cr_assert_str_eq(top, "at\nids\nlatest\nsnapshots\nstreams\ntags\n",
			 "the mount root should list exactly the six views");
	free(top);

	/* latest -> snapshots/<day>/<name> of the newest. */
	char *l = pjoin(mnt, "latest");
	struct stat st;
	cr_assert(lstat(l, &st) == 0 && S_ISLNK(st.st_mode), "MNT/latest should be a symlink");
	char *target = readlink_str(l), *want = snap_rel(s[2]->ns);
	cr_assert_str_eq(target, want, "MNT/latest points to the wrong place (snapshot time %s)",
			 s[2]->time);
	free(target);
	free(want);
	free(l);

	/* snapshots/: the days, and in each day the names. */
	char days_want[64] = "", *rels[3];
	for (int i = 0; i < 3; i++) {
		rels[i] = snap_rel(s[i]->ns);
		char day[16];
		memcpy(day, rels[i] + strlen("snapshots/"), 10);
		day[10] = '\0';
		if (!strstr(days_want, day)) {
			append_line(days_want, sizeof days_want, day);
		}
	}
	char *sd = pjoin(mnt, "snapshots");
	char *days = list_dir(sd);
	cr_assert_str_eq(days, days_want, "MNT/snapshots/ should list the UTC days");
	free(days);
	free(sd);
	for (int i = 0; i < 3; i++) {
		char *dirp = pjoin(mnt, rels[i]);
		char *slash = strrchr(dirp, '/');
		*slash = '\0';
		char *names = list_dir(dirp);
		cr_assert(strstr(names, slash + 1), "%s should list %s; lists:\n%s", dirp, slash + 1,
			  names);
		free(names);
		free(dirp);
		dirp = pjoin(mnt, rels[i]);
		cr_assert(stat(dirp, &st) == 0 && S_ISDIR(st.st_mode), "stat %s: %s", rels[i],
			  strerror(errno));
		cr_expect(st.st_mtim.tv_sec == s[i]->ns / 1000000000LL &&
				  st.st_mtim.tv_nsec == s[i]->ns % 1000000000LL,
			  "%s: mtime %lld.%09ld, expected the snapshot time %s", rels[i],
			  (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, s[i]->time);
		char *v = xget_ok(dirp, "user.amberfs.time");
		cr_assert_str_eq(v, s[i]->time, "%s: user.amberfs.time", rels[i]);
		free(v);
		v = xget_ok(dirp, "user.amberfs.stream");
		cr_assert_str_eq(v, "main", "%s: user.amberfs.stream", rels[i]);
		free(v);
		v = xget_ok(dirp, "user.amberfs.tags");
		cr_assert_str_eq(v, i == 0 ? "first" : i == 2 ? "third" : "",
				 "%s: user.amberfs.tags", rels[i]);
		free(v);
		free(dirp);
		expect_snap(mnt, rels[i], ids[i], contents[i]);
	}
	int total = 0;
	for (char *day = days_want; *day; day = strchr(day, '\n') + 1) {
		char *dirp = xasprintf("%s/snapshots/%.10s", mnt, day);
		char *names = list_dir(dirp);
		for (char *c = names; *c; c++)
			total += *c == '\n';
		free(names);
		free(dirp);
	}
	cr_assert_eq(total, 3, "MNT/snapshots/<day>/ should list the 3 snapshots, found %d", total);

	/* at/: not listed; resolves on lookup. */
	char *atd = pjoin(mnt, "at");
	char *atl = list_dir(atd);
	cr_assert_str_eq(atl, "", "MNT/at/ should list nothing");
	free(atl);
	free(atd);
	struct {
		char *spelling;
		int snap; /* -1: ENOENT */
	} at[] = {
		{ iso(s[1]->ns, 9, 0), 1 },                                  /* exact, ns */
		{ iso(s[1]->ns, 9, -330), 1 },                               /* exact, -05:30 */
		{ iso(s[0]->ns + (s[1]->ns - s[0]->ns) / 2, 9, 0), 0 },      /* between -> older */
		{ iso(s[0]->ns - 1, 9, 0), -1 },                             /* 1 ns before the first */
		{ iso(s[0]->ns - 5000000000LL, -1, 0), -1 },                 /* seconds before */
		{ iso(s[1]->ns, -1, 0), 1 },        /* its second: in force to its end */
		{ iso(s[1]->ns, -1, 120), 1 },      /* +02:00 */
		{ iso(s[2]->ns, 6, 0), 2 },         /* truncated to us: the span holds it */
		{ xasprintf("@%lld.%09lld", s[1]->ns / 1000000000LL, s[1]->ns % 1000000000LL), 1 },
		{ xasprintf("@%lld", s[1]->ns / 1000000000LL), 1 },
		{ xasprintf("@%lld.5", s[0]->ns / 1000000000LL - 3), -1 },
		{ strdup("2100-01-01T00:00:00Z"), 2 },                       /* future */
		{ strdup("2999-01-01T00:00:00Z"), 2 },                       /* far future */
		{ strdup("2999-12-31T23:59Z"), 2 },
		{ strdup("2999-12-31"), 2 },
		{ strdup("@32503680000"), 2 },
		{ strdup("1999-01-01T00:00:00+02:00"), -1 },
	};
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		char *rel = xasprintf("at/%s", at[i].spelling);
		int k = at[i].snap;
		expect_snap(mnt, rel, k < 0 ? NULL : ids[k], k < 0 ? NULL : contents[k]);
		free(rel);
		free(at[i].spelling);
	}

	/* ids/: every snapshot of every stream listed; 7-hex prefixes resolve. */
	char *idsd = pjoin(mnt, "ids");
	char *idl = list_dir(idsd);
	for (int i = 0; i < 3; i++)
		cr_assert(strstr(idl, ids[i]), "MNT/ids/ should list %s; lists:\n%s", ids[i], idl);
	cr_assert(strstr(idl, oid), "MNT/ids/ should list the other stream's %s too", oid);
	free(idl);
	free(idsd);
	for (int i = 0; i < 3; i++) {
		char *full = xasprintf("ids/%s", ids[i]);
		expect_snap(mnt, full, ids[i], contents[i]);
		free(full);
		int unique = 1;
		for (int j = 0; j < 3; j++)
			unique &= j == i || strncmp(ids[i], ids[j], 7) != 0;
		unique &= strncmp(ids[i], oid, 7) != 0;
		if (unique) {
			char *pre = xasprintf("ids/%.7s", ids[i]);
			expect_snap(mnt, pre, ids[i], contents[i]);
			free(pre);
		}
		char *six = xasprintf("ids/%.6s", ids[i]);
		expect_snap(mnt, six, NULL, NULL);
		free(six);
	}
	/* A prefix of no snapshot. */
	char nope[8] = "0000000";
	for (char c = '0'; c <= '9'; c++) {
		int used = 0;
		nope[0] = c;
		for (int i = 0; i < 3; i++)
			used |= !strncmp(ids[i], nope, 7);
		used |= !strncmp(oid, nope, 7);
		if (!used)
			break;
	}
	char *np = xasprintf("ids/%s", nope);
	expect_snap(mnt, np, NULL, NULL);
	free(np);

	/* tags/. */
	char *tagsd = pjoin(mnt, "tags");
	char *tl = list_dir(tagsd);
	cr_assert_str_eq(tl, "first\nthird\n", "MNT/tags/ should list the two tags");
	free(tl);
	free(tagsd);
	expect_snap(mnt, "tags/first", ids[0], contents[0]);
	expect_snap(mnt, "tags/third", ids[2], contents[2]);
	expect_snap(mnt, "tags/nosuchtag", NULL, NULL);

	/* streams/. */
	char *std = pjoin(mnt, "streams");
	char *sl = list_dir(std);
	cr_assert_str_eq(sl, "main\nother\n", "MNT/streams/ should list both streams");
	free(sl);
	free(std);
	char *ol = pjoin(mnt, "streams/other/latest");
	char *ot = readlink_str(ol), *owant = snap_rel(oth[0].ns);
	cr_assert(ot, "readlink streams/other/latest: %s", strerror(errno));
	cr_assert_str_eq(ot, owant, "streams/other/latest points to the wrong place");
	free(ot);
	free(ol);
	char *orel = xasprintf("streams/other/%s", owant);
	expect_snap(mnt, orel, oid, "other\n");
	free(orel);
	expect_snap(mnt, "streams/other/latest", oid, "other\n");
	expect_snap(mnt, "streams/other/at/2100-01-01T00:00:00Z", oid, "other\n");
	char *obefore = xasprintf("streams/other/at/%s", iso(oth[0].ns - 1, 9, 0));
	expect_snap(mnt, obefore, NULL, NULL);
	free(obefore);
	char *ml = pjoin(mnt, "streams/main/latest");
	char *mt = readlink_str(ml), *mwant = snap_rel(s[2]->ns);
	cr_assert(mt && !strcmp(mt, mwant), "streams/main/latest: '%s', expected '%s'",
		  mt ? mt : strerror(errno), mwant);
	free(mt);
	free(ml);
	free(mwant);
	char *mat = xasprintf("streams/main/at/%s", iso(s[0]->ns, 9, 0));
	expect_snap(mnt, mat, ids[0], contents[0]);
	free(mat);
	char *v = xget_ok(pjoin(mnt, "streams/other/latest"), "user.amberfs.stream");
	cr_assert_str_eq(v, "other", "user.amberfs.stream of the other stream's snapshot");
	free(v);
	expect_snap(mnt, "no-such-entry", NULL, NULL);

	/* The mount root carries the counters. */
	char *stats = xget_ok(mnt, "user.amberfs.stats");
	const char *keys[] = { "lookups", "opens", "reads", "read_bytes", "chunks_decoded",
			       "dirs_decoded", "cache_hits" };
	for (size_t i = 0; i < 7; i++)
		stats_counter(stats, keys[i]);
	cr_assert(stats_counter(stats, "lookups") > 0, "no lookups counted: %s", stats);
	free(stats);

	unmount_ok(mnt);
	for (int i = 0; i < 3; i++)
		free(rels[i]);
	free(owant);
}

static pid_t daemon_of(const char *mnt);

/* The read calls process `pid` has made (/proc/PID/io syscr). */
static long long read_calls(pid_t pid)
{
	char *p = xasprintf("/proc/%d/io", (int)pid);
	char *text = read_file(p, NULL), *at = text ? strstr(text, "syscr:") : NULL;
	cr_assert(at, "%s has no syscr line", p);
	long long n = strtoll(at + strlen("syscr:"), NULL, 10);
	free(text);
	free(p);
	return n;
}

/*
 * Opening a snapshot once listed the tags naming it, reading every tag ref:
 * with 300 tags each snapshot a mount opened cost 300 reads (19 ms).  The
 * tags are listed only when user.amberfs.tags is asked for, and then as
 * they are now (a tag made after the snapshot was opened shows).
 */
Test(mount, opening_a_snapshot_does_not_read_every_tag)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char ids[4][41];
	mkdir_p(src, 0755);
	amber_init_archive(arch, 0);
	for (int i = 0; i < 4; i++) {
		char *f = pjoin(src, "f"), *c = xasprintf("%d\n", i);
		write_str(f, c);
		amber_snapshot_ok(ids[i], arch, src, NULL);
		free(f);
		free(c);
	}
	for (int t = 0; t < 300; t++) {     /* loose refs, as `git tag` writes them */
		char *ref = xasprintf("%s/refs/tags/t%03d", arch, t);
		char *line = xasprintf("%s\n", ids[t % 2]);
		write_str(ref, line);
		free(ref);
		free(line);
	}
	char *mnt = mountpoint("mnt");
	mount_bg(arch, mnt, NULL, NULL);
	pid_t pid = daemon_of(mnt);
	long long before = read_calls(pid);
	for (int i = 0; i < 4; i++) {
		char *d = xasprintf("%s/ids/%s", mnt, ids[i]);
		struct stat st;
		cr_assert(stat(d, &st) == 0 && S_ISDIR(st.st_mode), "stat %s: %s", d,
			  strerror(errno));
		free(d);
	}
	long long used = read_calls(pid) - before;
	cr_assert_lt(used, 200, "opening 4 snapshots made %lld read calls (300 tags)", used);

	char *d3 = xasprintf("%s/ids/%s", mnt, ids[3]), *d1 = xasprintf("%s/ids/%s", mnt, ids[1]);
	char *v = xget_ok(d3, "user.amberfs.tags");
	cr_assert_str_eq(v, "", "ids/%s: user.amberfs.tags", ids[3]);
	free(v);
	v = xget_ok(d1, "user.amberfs.tags");
	cr_assert_eq(strlen(v), 150 * 5 - 1, "ids/%s: 150 tags expected: %s", ids[1], v);
	for (int t = 0; t < 300; t++) {
		char name[8];
		snprintf(name, sizeof(name), "t%03d", t);
		cr_assert_eq(strstr(v, name) != NULL, t % 2 == 1, "ids/%s: %s in tags %s", ids[1],
			     name, v);
	}
	free(v);
	char *ref = xasprintf("%s/refs/tags/late", arch), *line = xasprintf("%s\n", ids[3]);
	write_str(ref, line);
	v = xget_ok(d3, "user.amberfs.tags");
	cr_assert_str_eq(v, "late", "a tag made after the open: user.amberfs.tags");
	free(v);
	unmount_ok(mnt);
	free(ref);
	free(line);
	free(d3);
	free(d1);
	free(mnt);
	free(arch);
	free(src);
}

/* ------------------------------------------------------------------ */
/* 3. st_ino from content; diff -r costs what changed                  */

static void write_text_file(const char *path, size_t size, uint64_t seed)
{
	static const char hex[] = "0123456789abcdef";
	char *buf = malloc(size);
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 7;
	fill_random(buf, size, &s);
	for (size_t i = 0; i < size; i++)
		buf[i] = (i % 64 == 63) ? '\n' : hex[(unsigned char)buf[i] & 15];
	write_file(path, buf, size, 0644);
	free(buf);
}

/* Replace one 64-byte line in the middle of a text file, same size, and
 * move its mtime so no files cache can mistake it for the old one. */
static void change_text_file(const char *path, long long mtime)
{
	size_t len;
	char *b = read_file(path, &len);
	size_t at = (len / 2) / 64 * 64;
	memcpy(b + at, "CHANGED-CHANGED-CHANGED-CHANGED-CHANGED-CHANGED-CHANGED-CHANGED", 63);
	write_file(path, b, len, 0644);
	struct timespec ts[2] = { { (time_t)mtime, 0 }, { (time_t)mtime, 0 } };
	cr_assert(utimensat(AT_FDCWD, path, ts, 0) == 0);
	free(b);
}

/* The distinct blob ids a file's content is made of (the blob itself, or
 * every blob of its chunk tree), appended to set[]. */
static size_t content_blobs(const char *arch, const char *oid, char (*set)[41], size_t n)
{
	char *type = git_out(arch, "cat-file", "-t", oid);
	char *list = NULL;
	if (!strcmp(type, "blob")) {
		list = xasprintf("100644 blob %s\tx", oid);
	} else {
		cr_assert_str_eq(type, "tree", "object %s is a %s", oid, type);
		list = git_out(arch, "ls-tree", oid, NULL);
	}
	char *save = NULL;
	for (char *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char mode[8], t[8], o[41];
		cr_assert(sscanf(line, "%7s %7s %40s", mode, t, o) == 3, "ls-tree line: %s", line);
		const char *name = strchr(line, '\t');
		if (strcmp(t, "blob") != 0 || (name && !strcmp(name + 1, "i")))
			continue; /* the chunk index is not a chunk */
		int seen = 0;
		for (size_t i = 0; i < n; i++)
			seen |= !strcmp(set[i], o);
		if (!seen)
			memcpy(set[n++], o, 41);
	}
	free(list);
	free(type);
	return n;
}

Test(mount, unchanged_entries_share_st_ino_and_diff_reads_only_the_changes)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	for (int d = 0; d < 10; d++) {
		for (int f = 0; f < 20; f++) {
			char *p = xasprintf("%s/d%02d/f%02d", src, d, f);
			if (f == 0) {
				char *dir = xasprintf("%s/d%02d", src, d);
				mkdir_p(dir, 0755);
				free(dir);
			}
			write_text_file(p, 1024 + (size_t)(d * 20 + f) * 37, (uint64_t)(d * 100 + f));
			free(p);
		}
	}
	char *bigp = pjoin(src, "big.log");
	write_text_file(bigp, (5u << 20) + 123, 999);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char ida[41], idb[41];
	amber_snapshot_ok(ida, arch, src, NULL);
	const char *changed[] = { "big.log", "d03/f07", "d06/f12" };
	for (int i = 0; i < 3; i++) {
		char *p = pjoin(src, changed[i]);
		change_text_file(p, 1700000000 + i);
		free(p);
	}
	amber_snapshot_ok(idb, arch, src, NULL);
	snapinfo sn[4];
	size_t n = log_snaps(arch, NULL, sn, 4);
	cr_assert_eq(n, 2);
	char *mnt = mountpoint("mnt");
	mount_bg(arch, mnt, NULL, NULL);
	char *ra = snap_rel(find_snap(sn, n, ida)->ns), *rb = snap_rel(find_snap(sn, n, idb)->ns);
	char *a = pjoin(mnt, ra), *b = pjoin(mnt, rb);

	/* st_ino (lstat only: nothing is opened here). */
	struct {
		const char *rel;
		int same;
	} cases[] = {
		{ "d00/f00", 1 }, { "d03/f08", 1 }, { "d00", 1 }, { "d09", 1 },
		{ "d03/f07", 0 }, { "d06/f12", 0 }, { "big.log", 0 }, { "d03", 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *pa = pjoin(a, cases[i].rel), *pb = pjoin(b, cases[i].rel);
		ino_t ia = ino_of(pa), ib = ino_of(pb);
		if (cases[i].same)
			cr_assert_eq(ia, ib, "unchanged %s should have the same st_ino in both "
				     "snapshots: %lu vs %lu", cases[i].rel, (unsigned long)ia,
				     (unsigned long)ib);
		else
			cr_assert_neq(ia, ib, "changed %s should get another st_ino, both have %lu",
				      cases[i].rel, (unsigned long)ia);
		free(pa);
		free(pb);
	}
	char *p1 = pjoin(a, "d00/f00"), *p2 = pjoin(a, "d00/f01"), *p3 = pjoin(a, "d01");
	cr_assert_neq(ino_of(p1), ino_of(p2), "two different files share st_ino");
	cr_assert_neq(ino_of(p3), ino_of(p1), "a directory and a file share st_ino");
	struct stat st;
	cr_assert(lstat(p1, &st) == 0 && st.st_nlink == 1, "a plain file should have nlink 1");
	free(p1);
	free(p2);
	free(p3);

	/* What reading the changed files needs: every distinct chunk of both
	 * versions (chunks the versions share are decoded once). */
	char (*need)[41] = calloc(4096, 41);
	size_t nneed = 0;
	for (int i = 0; i < 3; i++) {
		for (int side = 0; side < 2; side++) {
			char *p = pjoin(side ? b : a, changed[i]);
			char *o = xget_ok(p, "user.amberfs.oid");
			nneed = content_blobs(arch, o, need, nneed);
			free(o);
			free(p);
		}
	}
	cr_assert(nneed > 6, "big.log (5 MiB) should be stored in several chunks");

	char *before = xget_ok(mnt, "user.amberfs.stats");
	run_result r;
	run_opts o = { .timeout = 120 };
	run_cmd(&r, &o, "diff", "-r", a, b, NULL);
	char *after = xget_ok(mnt, "user.amberfs.stats");
	cr_assert_eq(r.status, 1, "diff -r A B: expected exit 1 (differences), got %d: %s", r.status,
		     r.err);
	cr_assert_eq(r.err_len, 0, "diff -r A B wrote to stderr: %s", r.err);
	char *got = calloc(1, r.out_len + 1);
	char *save = NULL;
	for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cr_assert(strncmp(line, "Only in", 7) != 0, "diff -r: %s", line);
		if (strncmp(line, "diff -r ", 8) != 0)
			continue;
		const char *rest = line + 8;
		cr_assert(!strncmp(rest, a, strlen(a)) && rest[strlen(a)] == '/',
			  "unexpected diff header: %s", line);
		rest += strlen(a) + 1;
		const char *sp = strchr(rest, ' ');
		cr_assert(sp, "unexpected diff header: %s", line);
		size_t have = strlen(got);
		snprintf(got + have, r.out_len + 1 - have, "%.*s\n", (int)(sp - rest), rest);
	}
	cr_assert_str_eq(got, "big.log\nd03/f07\nd06/f12\n",
			 "diff -r between the snapshots should report exactly the 3 changed files");
	run_result_dispose(&r);
	free(got);

	/* files open without asking the daemon: count its reads (at most
	   1 MiB each: 5 MiB twice and two small files twice need under 20) */
	long long dreads = stats_counter(after, "reads") - stats_counter(before, "reads");
	long long dchunks = stats_counter(after, "chunks_decoded") -
			    stats_counter(before, "chunks_decoded");
	cr_log_info("diff -r of 201 files, 3 changed: reads +%lld, chunks_decoded +%lld "
		    "(the changed files have %zu distinct chunks); before: %s; after: %s",
		    dreads, dchunks, nneed, before, after);
	cr_assert(dreads >= 1 && dreads <= 40,
		  "diff -r made %lld reads; only the 3 changed files, both sides, should be "
		  "read: unchanged files must be skipped by st_ino\nbefore: %s\nafter:  %s",
		  dreads, before, after);
	cr_assert(dchunks >= 1 && dchunks <= (long long)nneed,
		  "diff -r decoded %lld chunks; the changed files need at most %zu\n"
		  "before: %s\nafter:  %s", dchunks, nneed, before, after);
	free(before);
	free(after);
	free(need);
	unmount_ok(mnt);
}

/* ------------------------------------------------------------------ */
/* 4. Read-only                                                        */

#define EXPECT_EROFS_AT(call, where, desc)                                                \
	do {                                                                              \
		errno = 0;                                                                \
		long rc_ = (long)(call);                                                  \
		int e_ = errno;                                                           \
		cr_expect(rc_ < 0 && e_ == EROFS, "%s%s: expected EROFS, got %s", (where), \
			  (desc), rc_ >= 0 ? "success" : strerror(e_));                   \
		if (rc_ >= 0 && strstr(#call, "open("))                                   \
			close((int)rc_);                                                  \
	} while (0)

#define EXPECT_EROFS(call, desc) EXPECT_EROFS_AT(call, "", desc)

static void assert_write_calls_fail(const char *dir, const char *file, const char *subdir,
				    const char *where)
{
	char *nf = pjoin(dir, "new-file"), *nd = pjoin(dir, "new-dir");
	char *ns = pjoin(dir, "new-symlink"), *nl = pjoin(dir, "new-link");
	char *nn = pjoin(dir, "new-fifo"), *nr = pjoin(dir, "renamed");
	EXPECT_EROFS_AT(open(nf, O_CREAT | O_WRONLY | O_CLOEXEC, 0644), where, ": open O_CREAT");
	EXPECT_EROFS_AT(open(nf, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644), where, ": open O_CREAT|O_EXCL");
	EXPECT_EROFS_AT(mkdir(nd, 0755), where, ": mkdir");
	EXPECT_EROFS_AT(symlink("target", ns), where, ": symlink");
	EXPECT_EROFS_AT(link(file, nl), where, ": link");
	EXPECT_EROFS_AT(mknod(nn, S_IFIFO | 0644, 0), where, ": mknod fifo");
	EXPECT_EROFS_AT(mknod(nn, S_IFREG | 0644, 0), where, ": mknod regular");
	EXPECT_EROFS_AT(rename(file, nr), where, ": rename");
	EXPECT_EROFS_AT(rename(subdir, nr), where, ": rename a directory");
	EXPECT_EROFS_AT(chmod(file, 0600), where, ": chmod");
	EXPECT_EROFS_AT(chmod(subdir, 0700), where, ": chmod a directory");
	EXPECT_EROFS_AT(lchown(file, 1, 1), where, ": chown");
	EXPECT_EROFS_AT(chown(subdir, 1, 1), where, ": chown a directory");
	EXPECT_EROFS_AT(utimensat(AT_FDCWD, file, NULL, AT_SYMLINK_NOFOLLOW), where, ": utimensat now");
	struct timespec ts[2] = { { 1, 0 }, { 1, 0 } };
	EXPECT_EROFS_AT(utimensat(AT_FDCWD, subdir, ts, 0), where, ": utimensat a directory");
	EXPECT_EROFS_AT(lsetxattr(file, "user.new", "v", 1, 0), where, ": setxattr");
	EXPECT_EROFS_AT(setxattr(subdir, "user.new", "v", 1, 0), where, ": setxattr on a directory");
	EXPECT_EROFS_AT(rmdir(subdir), where, ": rmdir");
	EXPECT_EROFS_AT(unlink(file), where, ": unlink");
	free(nf);
	free(nd);
	free(ns);
	free(nl);
	free(nn);
	free(nr);
}

Test(mount, read_only_mount_refuses_every_change_with_erofs)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	char *f = pjoin(src, "file");
	write_str(f, "do not change me\n");
	cr_assert(setxattr(f, "user.keep", "kept", 4, 0) == 0, "setxattr: %s", strerror(errno));
	char *ed = pjoin(src, "emptydir");
	mkdir_p(ed, 0755);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	mount_bg(arch, mnt, NULL, NULL);

	/* findmnt: type, source, ro,nosuid,nodev. */
	run_result r;
	run_cmd(&r, NULL, "findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", mnt, NULL);
	assert_ok(&r, "findmnt MNT");
	char fstype[64], source[PATH_MAX], opts[512];
	cr_assert(sscanf(r.out, "%63s %4095s %511s", fstype, source, opts) == 3,
		  "findmnt output: %s", r.out);
	run_result_dispose(&r);
	char *absarch = realpath(arch, NULL);
	cr_assert_str_eq(fstype, "fuse.amberfs", "findmnt FSTYPE");
	cr_assert_str_eq(source, absarch, "findmnt SOURCE should be the archive");
	char *o = xasprintf(",%s,", opts);
	cr_assert(strstr(o, ",ro,") && strstr(o, ",nosuid,") && strstr(o, ",nodev,"),
		  "the mount should be ro,nosuid,nodev; findmnt says %s", opts);
	free(o);

	/* At the root of the mount. */
	char *latest = pjoin(mnt, "latest"), *tags = pjoin(mnt, "tags");
	assert_write_calls_fail(mnt, latest, tags, "mount root");
	char *mf = pjoin(mnt, "new");
	EXPECT_EROFS(open(mf, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644),
		     "mount root: open O_CREAT|O_TRUNC");
	free(mf);
	EXPECT_EROFS(chmod(mnt, 0700), "mount root: chmod of the root");
	EXPECT_EROFS(setxattr(mnt, "user.amberfs.stats", "x", 1, 0),
		     "mount root: setxattr user.amberfs.stats");
	char *snap = latest_dir(mnt);
	EXPECT_EROFS(rmdir(snap), "rmdir of a snapshot directory");
	char *ren = pjoin(mnt, "snapshots/renamed");
	EXPECT_EROFS(rename(snap, ren), "rename of a snapshot directory");
	free(ren);

	/* Inside a snapshot. */
	char *sf = pjoin(snap, "file"), *sd = pjoin(snap, "emptydir");
	assert_write_calls_fail(snap, sf, sd, "inside a snapshot");
	EXPECT_EROFS(open(sf, O_WRONLY | O_CLOEXEC), "open O_WRONLY of an existing file");
	EXPECT_EROFS(open(sf, O_RDWR | O_CLOEXEC), "open O_RDWR of an existing file");
	EXPECT_EROFS(open(sf, O_WRONLY | O_APPEND | O_CLOEXEC), "open O_APPEND of an existing file");
	EXPECT_EROFS(open(sf, O_RDONLY | O_TRUNC | O_CLOEXEC), "open O_TRUNC of an existing file");
	EXPECT_EROFS(truncate(sf, 0), "truncate");
	EXPECT_EROFS(truncate(sf, 100), "truncate to grow");
	EXPECT_EROFS(lremovexattr(sf, "user.keep"), "removexattr");
	EXPECT_EROFS(lsetxattr(sf, "user.keep", "changed", 7, XATTR_REPLACE),
		     "setxattr replacing an existing xattr");
	EXPECT_EROFS(utimensat(AT_FDCWD, snap, NULL, 0), "utimensat of the snapshot directory");

	/* And nothing changed. */
	assert_file_content(sf, "do not change me\n");
	char *v = xget_ok(sf, "user.keep");
	cr_assert_str_eq(v, "kept");
	free(v);
	assert_mode(sf, 0644);
	char *list = list_dir(snap);
	cr_assert_str_eq(list, "emptydir\nfile\n", "the snapshot's listing changed");
	free(list);
	int fd = open(sf, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "a read-only open must work: %s", strerror(errno));
	errno = 0;
	cr_expect(write(fd, "x", 1) < 0, "write(2) on a read-only descriptor succeeded");
	close(fd);
	unmount_ok(mnt);
	free(absarch);
}

/* ------------------------------------------------------------------ */
/* 5. Concurrent readers, a live snapshot, a clean unmount             */

static uint64_t fnv1a(const unsigned char *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

#define NFILES 40
#define NREADERS 16

typedef struct reader {
	pthread_t th;
	int index;
	const char *root;
	char **names;
	const uint64_t *want;
	int files_ok;
	char err[512];
} reader;

static void *reader_main(void *arg)
{
	reader *rd = arg;
	size_t bsz = (size_t)(rd->index % 4 + 1) * 16384 + (size_t)rd->index * 512;
	unsigned char *buf = malloc(bsz);
	for (int k = 0; k < NFILES; k++) {
		int i = (k + rd->index * 5) % NFILES;
		char *p = pjoin(rd->root, rd->names[i]);
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			snprintf(rd->err, sizeof(rd->err), "reader %d: open %s: %s", rd->index, p,
				 strerror(errno));
			free(p);
			break;
		}
		uint64_t h = 1469598103934665603ull;
		ssize_t n;
		while ((n = read(fd, buf, bsz)) > 0)
			h = fnv1a(buf, (size_t)n, h);
		int e = errno;
		close(fd);
		if (n < 0) {
			snprintf(rd->err, sizeof(rd->err), "reader %d: read %s: %s", rd->index, p,
				 strerror(e));
			free(p);
			break;
		}
		if (h != rd->want[i]) {
			snprintf(rd->err, sizeof(rd->err), "reader %d: %s hashes to %016" PRIx64
				 ", the source to %016" PRIx64, rd->index, p, h, rd->want[i]);
			free(p);
			break;
		}
		rd->files_ok++;
		free(p);
	}
	free(buf);
	return NULL;
}

Test(mount, concurrent_readers_live_snapshot_and_clean_unmount_exit_0)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	char *names[NFILES];
	uint64_t want[NFILES];
	for (int i = 0; i < NFILES; i++) {
		uint64_t size = i == 0 ? (3u << 20) + 17 : i == 1 ? (2u << 20) + 1 : i == 2 ? 0 :
				(uint64_t)(i * i * 397 % 300000);
		names[i] = xasprintf("%s/f%02d", i % 3 ? "sub" : "top", i);
		char *dir = pjoin(src, i % 3 ? "sub" : "top");
		mkdir_p(dir, 0755);
		free(dir);
		char *p = pjoin(src, names[i]);
		write_random_file(p, size, (uint64_t)i + 500, 0);
		size_t len;
		char *b = read_file(p, &len);
		want[i] = fnv1a((unsigned char *)b, len, 1469598103934665603ull);
		free(b);
		free(p);
	}
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id1[41];
	amber_snapshot_ok(id1, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	char *log = pjoin(IT.tmp, "daemon.log");
	pid_t daemon = mount_fg(arch, mnt, log, NULL);
	char *old = readlink_str(pjoin(mnt, "latest"));
	cr_assert(old, "readlink MNT/latest: %s", strerror(errno));
	char *snap = pjoin(mnt, old);

	/* A new snapshot is written while 16 readers hash every file. */
	char *newf = pjoin(src, "new.txt");
	write_str(newf, "written while mounted\n");
	char *snap_out = pjoin(IT.tmp, "snapshot.out"), *snap_err = pjoin(IT.tmp, "snapshot.err");
	run_opts so = { .stdout_path = snap_out, .stderr_path = snap_err };
	const char *sargs[] = { "snapshot", arch, src, NULL };
	pid_t writer = amber_spawn(&so, sargs);
	mt_pids[mt_npids++] = writer;
	watch_pid(writer);

	reader rd[NREADERS];
	for (int i = 0; i < NREADERS; i++) {
		rd[i] = (reader){ .index = i, .root = snap, .names = names, .want = want };
		cr_assert(pthread_create(&rd[i].th, NULL, reader_main, &rd[i]) == 0);
	}
	for (int i = 0; i < NREADERS; i++)
		pthread_join(rd[i].th, NULL);
	for (int i = 0; i < NREADERS; i++)
		cr_expect(rd[i].err[0] == '\0' && rd[i].files_ok == NFILES, "%s (%d of %d files ok)",
			  rd[i].err, rd[i].files_ok, NFILES);

	int st = wait_timeout(writer, 120);
	forget_pid(writer);
	char *serr = read_file(snap_err, NULL);
	cr_assert(st != -2, "amberfs snapshot did not finish within 120 s while the archive was "
		  "mounted (the mount must never block writers)");
	cr_assert_eq(st, 0, "amberfs snapshot while mounted: exit %d: %s", st, serr);
	double done = now_s();
	char *idout = read_file(snap_out, NULL);
	cr_assert(strlen(idout) >= 40, "snapshot printed no id: '%s'", idout);
	char id2[41];
	memcpy(id2, idout, 40);
	id2[40] = '\0';

	/* It shows up without a remount within 2 s. */
	char *lpath = pjoin(mnt, "latest");
	char *now = NULL;
	for (;;) {
		free(now);
		now = readlink_str(lpath);
		if (now && strcmp(now, old) != 0)
			break;
		if (now_s() - done > 2.0)
			break;
		sleep_s(0.05);
	}
	cr_assert(now && strcmp(now, old) != 0,
		  "MNT/latest still points to %s %.1f s after a new snapshot was written", old,
		  now_s() - done);
	cr_log_info("the new snapshot appeared %.2f s after `amberfs snapshot` returned",
		    now_s() - done);
	char *v = xget_ok(lpath, "user.amberfs.snapshot");
	cr_assert_str_eq(v, id2, "MNT/latest should now be the new snapshot");
	free(v);
	char *nf = pjoin(lpath, "new.txt");
	assert_file_content(nf, "written while mounted\n");
	char *snew = pjoin(mnt, now);
	cr_assert(access(snew, F_OK) == 0, "the new snapshot is not under MNT/%s", now);
	cr_assert(access(snap, F_OK) == 0, "the old snapshot vanished from MNT/%s", old);
	char *id2dir = xasprintf("%s/ids/%s", mnt, id2);
	cr_assert(access(id2dir, F_OK) == 0, "ids/%s missing: %s", id2, strerror(errno));

	/* Clean unmount: fusermount3 -u, the foreground daemon exits 0. */
	unmount_ok(mnt);
	st = wait_timeout(daemon, 15);
	forget_pid(daemon);
	char *dlog = read_file(log, NULL);
	cr_assert(st != -2, "the foreground daemon did not exit within 15 s of fusermount3 -u");
	cr_assert_eq(st, 0, "the foreground daemon exited %d after a clean unmount; stderr: %s", st,
		     dlog);
	cr_assert_eq(strlen(dlog), 0, "the daemon wrote to stderr: %s", dlog);
	for (int i = 0; i < NFILES; i++)
		free(names[i]);
}

/*
 * A one-file archive mounted by a foreground daemon (its stderr in *log),
 * with latest/f already read through the mount.  @return the daemon's pid.
 */
static pid_t one_file_mount(char **mnt, char **log)
{
	char *src = pjoin(IT.tmp, "src");
	char *arch = pjoin(IT.tmp, "archive");
	char id[41];
	pid_t daemon;

	mkdir_p(src, 0755);
	write_str(pjoin(src, "f"), "content\n");
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	*mnt = mountpoint("mnt");
	*log = pjoin(IT.tmp, "daemon.log");
	daemon = mount_fg(arch, *mnt, *log, NULL);
	assert_file_content(pjoin(*mnt, "latest/f"), "content\n");
	return daemon;
}

Test(mount, sigterm_unmounts_and_the_daemon_exits_0)
{
	char *mnt, *log;
	pid_t daemon = one_file_mount(&mnt, &log);
	cr_assert(kill(daemon, SIGTERM) == 0);
	int st = wait_timeout(daemon, 15);
	forget_pid(daemon);
	char *dlog = read_file(log, NULL);
	cr_assert(st != -2, "the daemon did not exit within 15 s of SIGTERM");
	cr_assert_eq(st, 0, "the daemon exited %d on SIGTERM; stderr: %s", st, dlog);
	cr_assert(!is_mounted(mnt), "SIGTERM should unmount; %s is still mounted", mnt);
	struct stat sb;
	cr_assert(stat(mnt, &sb) == 0, "the mount point after SIGTERM: %s", strerror(errno));
}

/* ------------------------------------------------------------------ */
/* 6. A corrupt object                                                  */

/* Where object oid's stored data sits: its loose file, or its pack and
 * the offset of the middle of its packed data. */
static char *locate_object(const char *arch, const char *oid, long long *off)
{
	char *file = xasprintf("%s/objects/%.2s/%s", arch, oid, oid + 2);
	struct stat st;
	if (stat(file, &st) == 0) {
		*off = st.st_size / 2;
		return file;
	}
	free(file);
	file = NULL;
	*off = -1;
	char *packdir = pjoin(arch, "objects/pack");
	DIR *d = opendir(packdir);
	cr_assert(d, "opendir %s: %s", packdir, strerror(errno));
	struct dirent *de;
	while (!file && (de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l < 5 || strcmp(de->d_name + l - 4, ".idx") != 0)
			continue;
		char *idx = pjoin(packdir, de->d_name);
		run_result v;
		run_cmd(&v, NULL, "git", "verify-pack", "-v", idx, NULL);
		cr_assert_eq(v.status, 0, "git verify-pack -v %s: %s", idx, v.err);
		char *hit = strstr(v.out, oid);
		if (hit) {
			char type[16];
			long long size, psize, poff;
			cr_assert(sscanf(hit + 40, " %15s %lld %lld %lld", type, &size, &psize,
					 &poff) == 4, "verify-pack line: %.120s", hit);
			*off = poff + psize / 2;
			file = xasprintf("%.*s.pack", (int)(strlen(idx) - 4), idx);
		}
		run_result_dispose(&v);
		free(idx);
	}
	closedir(d);
	free(packdir);
	cr_assert(file, "object %s not found in %s", oid, arch);
	return file;
}

/* Flip one byte at off in file; pack files are 0444, so the mode is
 * lifted and put back. */
static void flip_byte(const char *file, long long off, const char *oid)
{
	struct stat st;
	cr_assert(stat(file, &st) == 0);
	cr_assert(chmod(file, 0644) == 0, "chmod %s: %s", file, strerror(errno));
	int fd = open(file, O_RDWR | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", file, strerror(errno));
	unsigned char c;
	cr_assert(pread(fd, &c, 1, off) == 1);
	c ^= 0x20;
	cr_assert(pwrite(fd, &c, 1, off) == 1);
	cr_assert(fsync(fd) == 0);
	close(fd);
	cr_assert(chmod(file, st.st_mode & 07777) == 0);
	cr_log_info("flipped byte %lld of %s (object %s)", off, file, oid);
}

/* Read path to the end: @return 0 or the errno of the failing read; the
 * bytes before the failure must be the file's. */
static int read_checked(const char *path, const char *orig, size_t orig_len)
{
	char *got;
	size_t len;
	int e = read_all(path, &got, &len);
	cr_assert(e != 0 || len == orig_len, "%s: read %zu bytes, the file has %zu", path, len,
		  orig_len);
	cr_assert(len <= orig_len && memcmp(got, orig, len) == 0,
		  "%s: the mount returned bytes that are not the file's (corrupt data leaked)", path);
	free(got);
	return e;
}

Test(mount, corrupt_object_gives_eio_for_that_file_and_others_still_read)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	const char *names[] = { "big", "single", "small.txt", "other" };
	uint64_t sizes[] = { 5u << 20, 100u << 10, 0, 300u << 10 };
	for (int i = 0; i < 4; i++) {
		char *p = pjoin(src, names[i]);
		if (sizes[i])
			write_random_file(p, sizes[i], 4242 + (uint64_t)i, 0);
		else
			write_str(p, "small file content\n");
		free(p);
	}
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);

	/* The content ids, read from the mount without reading the files. */
	char *mnt = mountpoint("mnt");
	mount_bg(arch, mnt, NULL, NULL);
	char *snap = latest_dir(mnt);
	char *pbig = pjoin(snap, "big"), *psingle = pjoin(snap, "single");
	char *big_oid = xget_ok(pbig, "user.amberfs.oid");
	char *single_oid = xget_ok(psingle, "user.amberfs.oid");
	unmount_ok(mnt);

	char *t = git_out(arch, "cat-file", "-t", big_oid);
	cr_assert_str_eq(t, "tree", "a 5 MiB file should be a tree of chunks");
	free(t);
	char *chunks = git_out(arch, "ls-tree", big_oid, NULL);
	char *c1 = strstr(chunks, "\tc00000001");
	cr_assert(c1, "a 5 MiB file should have a chunk c00000001:\n%s", chunks);
	char chunk_oid[41];
	memcpy(chunk_oid, c1 - 40, 40);
	chunk_oid[40] = '\0';
	free(chunks);
	t = git_out(arch, "cat-file", "-t", single_oid);
	cr_assert_str_eq(t, "blob", "a 100 KiB file should be one blob");
	free(t);
	/* Both located before either is damaged (verify-pack stops at damage). */
	long long off1, off2;
	char *f1 = locate_object(arch, chunk_oid, &off1);
	char *f2 = locate_object(arch, single_oid, &off2);
	flip_byte(f1, off1, chunk_oid);
	flip_byte(f2, off2, single_oid);
	free(f1);
	free(f2);

	char *log = pjoin(IT.tmp, "errors.log");
	char *logopt = xasprintf("log=%s", log);
	const char *extra[] = { "-o", logopt, NULL };
	mount_bg(arch, mnt, NULL, extra);
	free(snap);
	snap = latest_dir(mnt);
	char *orig[4];
	size_t olen[4];
	for (int i = 0; i < 4; i++) {
		char *p = pjoin(src, names[i]);
		orig[i] = read_file(p, &olen[i]);
		free(p);
	}
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 4; i++) {
			char *p = pjoin(snap, names[i]);
			int e = read_checked(p, orig[i], olen[i]);
			if (i < 2)
				cr_assert_eq(e, EIO, "reading %s (a corrupt %s) should fail with EIO, "
					     "got %s (round %d)", names[i],
					     i ? "blob" : "chunk", e ? strerror(e) : "success", round);
			else
				cr_assert_eq(e, 0, "%s is intact and should read, got %s (round %d)",
					     names[i], strerror(e), round);
			free(p);
		}
	}
	/* Reading past the bad chunk: the first chunk still reads. */
	char *pb = pjoin(snap, "big");
	int fd = open(pb, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", pb, strerror(errno));
	char buf[4096];
	cr_assert(pread(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf) &&
			  !memcmp(buf, orig[0], sizeof(buf)),
		  "the first 4 KiB of big (in an intact chunk) should read: %s", strerror(errno));
	close(fd);
	struct stat st;
	cr_assert(stat(log, &st) == 0 && st.st_size > 0,
		  "the damaged object should be logged to -o log=FILE");
	unmount_ok(mnt);
	for (int i = 0; i < 4; i++)
		free(orig[i]);
	free(logopt);
}

/* ------------------------------------------------------------------ */
/* 7. A killed daemon                                                   */

Test(mount, killed_daemon_leaves_enotconn_not_an_empty_directory)
{
	char *mnt, *log;
	pid_t daemon = one_file_mount(&mnt, &log);

	cr_assert(kill(daemon, SIGKILL) == 0);
	int st = wait_timeout(daemon, 10);
	forget_pid(daemon);
	cr_assert_eq(st, 128 + SIGKILL, "the daemon should have died of SIGKILL, got %d", st);

	/* Listing it fails at once: never an empty directory. */
	errno = 0;
	DIR *d = opendir(mnt);
	int e = errno;
	if (d)
		closedir(d);
	cr_assert(!d && e == ENOTCONN, "opendir of a dead mount: expected ENOTCONN, got %s",
		  d ? "success (it looks like a directory)" : strerror(e));
	/* stat may be answered from the kernel's attribute cache for the
	 * root's attribute timeout; after that it must say ENOTCONN too. */
	struct stat sb;
	double t0 = now_s();
	int rc;
	for (;;) {
		errno = 0;
		rc = stat(mnt, &sb);
		e = errno;
		if (rc != 0 || now_s() - t0 > 2.0)
			break;
		sleep_s(0.05);
	}
	cr_assert(rc != 0 && e == ENOTCONN,
		  "stat of the mount point after the daemon was killed: expected ENOTCONN "
		  "(Transport endpoint is not connected), got %s (%.1f s after the kill)",
		  rc == 0 ? "success" : strerror(e), now_s() - t0);
	cr_log_info("stat of the dead mount point: ENOTCONN after %.2f s", now_s() - t0);
	run_result r;
	run_cmd(&r, NULL, "ls", mnt, NULL);
	cr_assert(r.status != 0 && strstr(r.err, "not connected"),
		  "ls of a dead mount should fail saying 'Transport endpoint is not connected': "
		  "exit %d, stderr %s", r.status, r.err);
	run_result_dispose(&r);
	cr_assert(is_mounted(mnt), "the mount should stay (no auto-unmount) until unmounted");

	unmount_ok(mnt);
	cr_assert(stat(mnt, &sb) == 0 && S_ISDIR(sb.st_mode), "stat %s after unmounting: %s", mnt,
		  strerror(errno));
}

/* ------------------------------------------------------------------ */
/* 8. Read-only archives                                                */

static void small_tree(const char *src)
{
	mkdir_p(src, 0755);
	char *p = pjoin(src, "a.txt");
	write_str(p, "alpha\n");
	free(p);
	p = pjoin(src, "sub");
	mkdir_p(p, 0755);
	free(p);
	p = pjoin(src, "sub/big");
	write_random_file(p, (3u << 20) + 5, 77, 0);
	free(p);
	p = pjoin(src, "sub/link");
	cr_assert(symlink("../a.txt", p) == 0);
	free(p);
}

/* Mount `arch`, read everything and the virtual views, unmount; assert the
 * archive's listing (sizes, modes, mtimes) is the same during and after. */
static void mount_reads_and_writes_nothing(const char *arch, const char *src, const char *fp0,
					   const char *what)
{
	char *mnt = mountpoint("mnt");
	mount_bg(arch, mnt, NULL, NULL);
	char *snap = latest_dir(mnt);
	char *m = xasprintf("%s: MNT/latest vs SRC", what);
	assert_trees_equal(src, snap, TD_SKIP_ROOT_META, m);
	free(m);
	char *id = xget_ok(snap, "user.amberfs.snapshot");
	char *pre = xasprintf("%s/ids/%.7s/a.txt", mnt, id);
	assert_file_content(pre, "alpha\n");
	char *at = pjoin(mnt, "at/2100-01-01T00:00:00Z/a.txt");
	assert_file_content(at, "alpha\n");
	free(xget_ok(mnt, "user.amberfs.stats"));
	char *fp1 = dir_fingerprint(arch);
	cr_assert_str_eq(fp1, fp0, "%s: the archive changed while mounted", what);
	unmount_ok(mnt);
	char *fp2 = dir_fingerprint(arch);
	cr_assert_str_eq(fp2, fp0, "%s: mounting changed the archive", what);
	free(fp1);
	free(fp2);
	free(at);
	free(pre);
	free(id);
	free(snap);
	free(mnt);
}

Test(mount, archive_on_a_read_only_bind_mount_mounts_and_reads)
{
	char *src = pjoin(IT.tmp, "src");
	small_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *ro = mt_register(pjoin(IT.tmp, "ro-archive"), 1);
	run_result r;
	run_cmd(&r, NULL, "mount", "--bind", arch, ro, NULL);
	assert_ok(&r, "mount --bind ARCHIVE RO");
	run_result_dispose(&r);
	run_cmd(&r, NULL, "mount", "-o", "remount,ro,bind", ro, NULL);
	assert_ok(&r, "mount -o remount,ro,bind RO");
	run_result_dispose(&r);
	char *probe = pjoin(ro, "probe");
	errno = 0;
	cr_assert(open(probe, O_CREAT | O_WRONLY | O_CLOEXEC, 0644) < 0 && errno == EROFS,
		  "the bind mount should be read-only");
	char *fp0 = dir_fingerprint(ro);
	mount_reads_and_writes_nothing(ro, src, fp0, "archive on a read-only bind mount");
	char *fp = dir_fingerprint(arch);
	cr_assert_str_eq(fp, fp0, "the archive changed");
	free(fp);
	free(fp0);
	free(probe);
}

Test(mount, mounting_a_write_protected_archive_writes_nothing)
{
	char *src = pjoin(IT.tmp, "src");
	small_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *copy = pjoin(IT.tmp, "archive-copy");
	run_result r;
	run_cmd(&r, NULL, "cp", "-a", arch, copy, NULL);
	assert_ok(&r, "cp -a ARCHIVE COPY");
	run_result_dispose(&r);
	run_cmd(&r, NULL, "chmod", "-R", "a-w", copy, NULL);
	assert_ok(&r, "chmod -R a-w COPY");
	run_result_dispose(&r);
	char *fp0 = dir_fingerprint(copy);
	mount_reads_and_writes_nothing(copy, src, fp0, "write-protected archive copy");
	/* Let teardown remove it. */
	run_cmd(&r, NULL, "chmod", "-R", "u+w", copy, NULL);
	run_result_dispose(&r);
	free(fp0);
}

/* ------------------------------------------------------------------ */
/* 9. Options, passphrases, mount(8)                                     */

static int is_exec(const char *p)
{
	return access(p, X_OK) == 0;
}

/* The directory part of path, malloc'd. */
static char *dir_of(const char *path)
{
	char *d = strdup(path);
	char *s = strrchr(d, '/');
	if (s && s != d)
		*s = '\0';
	else if (s)
		s[1] = '\0';
	else {
		free(d);
		d = strdup(".");
	}
	return d;
}

/*
 * The build's mount helper (meson configures it into the build dir), never
 * an installed one: the suite tests this build whatever is installed (the
 * installed files have itest_install).
 */
static char *find_helper(void)
{
	char *bindir = dir_of(IT.bin);
	char *cand = xasprintf("%s/../mount-helpers/mount.fuse.amberfs", bindir);
	cr_assert(access(cand, R_OK) == 0, "no mount helper in the build dir: %s", cand);
	free(bindir);
	return cand;
}

Test(mount, mount_helper_takes_passphrase_file_option_and_ignores_fstab_words)
{
	char *src = pjoin(IT.tmp, "src");
	small_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive_real_kdf(arch); /* the helper runs amberfs itself */
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");

	char *helper = find_helper();
	char *bindir = dir_of(IT.bin);
	/* an installed amberfs first on PATH must not be what runs */
	char *path = xasprintf("PATH=%s:/usr/local/bin:/usr/bin:/bin", bindir);
	char *cache = xasprintf("AMBERFS_CACHE_DIR=%s", IT.cache);
	char *home = xasprintf("HOME=%s", IT.home);
	char *prog = xasprintf("AMBERFS=%s", IT.bin);
	const char *env[] = { "AMBERFS_PASSPHRASE_FILE", prog, path, cache, home, NULL };
	char *opts = xasprintf("rw,noauto,nofail,_netdev,x-systemd.automount,passphrase_file=%s",
			       IT.passfile);
	run_opts o = { .env = env, .timeout = 60 };
	run_result r;
	/* As mount(8) runs it: SOURCE MOUNTPOINT -o OPTIONS. */
	const char *by_sh[] = { "sh", helper, arch, mnt, "-o", opts, NULL };
	const char *direct[] = { helper, arch, mnt, "-o", opts, NULL };
	run_argv(&r, &o, is_exec(helper) ? direct : by_sh);
	cr_assert(!r.timed_out, "the mount helper did not return within 60 s: %s", r.err);
	cr_assert_eq(r.status, 0, "%s %s %s -o %s: exit %d: %s", helper, arch, mnt, opts,
		     r.status, r.err);
	run_result_dispose(&r);
	assert_is_amberfs_mount(mnt, "mounted through the helper");
	char source[PATH_MAX];
	mount_lookup(mnt, NULL, 0, source, sizeof(source), NULL, 0);
	char *absarch = realpath(arch, NULL);
	cr_assert_str_eq(source, absarch, "the mount's source should be the archive");
	char *a = pjoin(mnt, "latest/a.txt");
	assert_file_content(a, "alpha\n");
	char *snap = latest_dir(mnt);
	assert_trees_equal(src, snap, TD_SKIP_ROOT_META, "mounted through the helper");
	unmount_ok(mnt);
	free(absarch);
	free(a);
	free(snap);
	free(opts);
	free(path);
	free(cache);
	free(home);
	free(prog);
	free(helper);
	free(bindir);
}

Test(mount, passphrase_from_flag_env_or_option_and_bad_mounts_refused)
{
	char *src = pjoin(IT.tmp, "src");
	small_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	char *pf = xasprintf("passphrase_file=%s", IT.passfile);
	char *a = pjoin(mnt, "latest/a.txt");

	/* From the environment (AMBERFS_PASSPHRASE_FILE). */
	mount_bg(arch, mnt, NULL, NULL);
	assert_file_content(a, "alpha\n");
	unmount_ok(mnt);
	/* --passphrase-file F. */
	const char *flag[] = { "--passphrase-file", IT.passfile, NULL };
	mount_bg(arch, mnt, no_passphrase_env, flag);
	assert_file_content(a, "alpha\n");
	unmount_ok(mnt);
	/* -o passphrase_file=F with fstab-only words around it. */
	char *opts = xasprintf("noauto,nofail,_netdev,%s,ro", pf);
	const char *opt[] = { "-o", opts, NULL };
	mount_bg(arch, mnt, no_passphrase_env, opt);
	assert_file_content(a, "alpha\n");
	unmount_ok(mnt);

	/* A wrong passphrase: an error, and no mount left behind. */
	char *bad = pjoin(IT.tmp, "wrong-pass");
	write_passfile(bad, "not the passphrase");
	const char *badflag[] = { "mount", arch, mnt, "--passphrase-file", bad, NULL };
	run_opts o = { .env = no_passphrase_env, .timeout = 60 };
	run_result r;
	amber_a(&r, &o, badflag);
	cr_assert(r.status != 0, "mount with a wrong passphrase should fail");
	assert_one_error_line(&r, "mount with a wrong passphrase");
	run_result_dispose(&r);
	cr_assert(!is_mounted(mnt), "a failed mount left %s mounted", mnt);
	/* -o rw is refused. */
	const char *rw[] = { "mount", arch, mnt, "-o", "rw", NULL };
	amber_a(&r, &o, rw);
	cr_assert(r.status != 0, "mount -o rw should be refused");
	run_result_dispose(&r);
	cr_assert(!is_mounted(mnt), "mount -o rw left %s mounted", mnt);
	/* Not an archive. */
	const char *notarch[] = { "mount", src, mnt, NULL };
	amber_a(&r, NULL, notarch);
	cr_assert(r.status != 0, "mounting a directory that is not an archive should fail");
	assert_one_error_line(&r, "mount of a non-archive");
	run_result_dispose(&r);
	cr_assert(!is_mounted(mnt), "a failed mount left %s mounted", mnt);
	free(opts);
	free(pf);
	free(a);
	free(bad);
}

/* ------------------------------------------------------------------ */
/* 9. Hostile archives: what someone who can write the store may plant  */

/*
 * Sorted names in a directory, one per line, like list_dir(), but a
 * listing that goes past `max` entries fails the test instead of running
 * on forever.
 */
static char *list_dir_capped(const char *path, size_t max)
{
	DIR *d = opendir(path);
	cr_assert(d, "opendir %s: %s", path, strerror(errno));
	char **v = NULL, *out;
	size_t n = 0, total = 1;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		cr_assert(n < max, "the listing of %s does not end: more than %zu entries "
			  "(the last: '%s')", path, max, de->d_name);
		v = realloc(v, (n + 1) * sizeof(*v));
		v[n++] = strdup(de->d_name);
		total += strlen(de->d_name) + 1;
	}
	closedir(d);
	for (size_t i = 1; i < n; i++) {
		for (size_t j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
			char *t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	}
	out = calloc(1, total);
	for (size_t i = 0, len = 0; i < n; i++) {
		len += (size_t)snprintf(out + len, total - len, "%s\n", v[i]);
		free(v[i]);
	}
	free(v);
	return out;
}

/*
 * A commit with the tree and message of `model` but the Amberfs-Time
 * trailer set to `when`, on `parent` (NULL: a root commit).  Git plumbing
 * only: the times are not authenticated until a snapshot is opened, so
 * this needs no key.
 */
static char *forge_time(const char *arch, const char *model, const char *parent,
			const char *when)
{
	static int seq;
	char *raw = git_ok(arch, NULL, "cat-file", "commit", model, NULL);
	char *body = strstr(raw, "\n\n");
	cr_assert(body, "commit %s has no message", model);
	char *t = strstr(body, "\nAmberfs-Time: ");
	cr_assert(t, "commit %s has no Amberfs-Time trailer:\n%s", model, raw);
	char *eol = strchr(t + 1, '\n');
	*t = '\0';
	char *msg = xasprintf("%s\nAmberfs-Time: %s%s\n", body + 2, when, eol ? eol : "");
	char *path = xasprintf("%s/forged-msg-%d", IT.tmp, seq++);
	write_str(path, msg);
	char *spec = xasprintf("%s^{tree}", model);
	char *tree = git_ok(arch, NULL, "rev-parse", spec, NULL);
	char *oid = parent ? git_ok(arch, NULL, "commit-tree", tree, "-p", parent, "-F", path,
				    NULL)
			   : git_ok(arch, NULL, "commit-tree", tree, "-F", path, NULL);
	free(tree);
	free(spec);
	free(path);
	free(msg);
	free(raw);
	return oid;
}

/*
 * Snapshot times come from commit trailers that anyone who can write the
 * store can forge.  The ends of the int64 ns range (1677-09-21, whose
 * midnight is not representable, and 2262-04-11, whose next midnight is
 * not) and times just around 1970 must still list as one directory per
 * day, each listing must end (or fail with EIO: day listings come from the
 * authenticated records, which the forged chain does not match), and each
 * name listed must resolve to its snapshot (which then fails
 * authentication: EIO, not ENOENT).
 */
Test(mount, forged_extreme_snapshot_times_list_by_day_and_listings_end)
{
	static const struct {
		const char *when, *day, *name;
	} f[] = {
		{ "1600-01-01T00:00:00Z", "1677-09-21", "16770921T001243.145224192Z" },
		{ "1969-12-31T23:59:59.999999999Z", "1969-12-31", "19691231T235959.999999999Z" },
		{ "1970-01-01T00:00:00Z", "1970-01-01", "19700101T000000.000000000Z" },
		{ "2262-04-11T23:47:16.854775807Z", "2262-04-11", "22620411T234716.854775807Z" },
	};
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char id[41], *tip = NULL;
	mkdir_p(src, 0755);
	write_str(pjoin(src, "f"), "content\n");
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		char *c = forge_time(arch, id, tip, f[i].when);
		free(tip);
		tip = c;
	}
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", tip, NULL));

	char *mnt = mountpoint("mnt");
	mount_fg(arch, mnt, pjoin(IT.tmp, "daemon.log"), NULL);
	char *days = list_dir_capped(pjoin(mnt, "snapshots"), 64);
	cr_assert_str_eq(days, "1677-09-21\n1969-12-31\n1970-01-01\n2262-04-11\n",
			 "snapshots/ of the forged times:\n%s", days);
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		char *day = xasprintf("%s/snapshots/%s", mnt, f[i].day);
		/* A day is listed from the authenticated records and index
		 * pages, which a forged chain does not match: EIO is right, a
		 * listing that never ends or names from the trailers is not. */
		DIR *dd = opendir(day);
		if (!dd) {
			cr_assert_eq(errno, EIO, "opendir %s: %s (expected EIO or a listing)", day,
				     strerror(errno));
			free(day);
			continue;
		}
		closedir(dd);
		char *want = xasprintf("%s\n", f[i].name);
		char *got = list_dir_capped(day, 64);
		cr_assert_str_eq(got, want, "%s lists '%s'", day, got);
		char *snap = pjoin(day, f[i].name);
		struct stat st;
		errno = 0;
		cr_assert(stat(snap, &st) != 0 && errno == EIO,
			  "%s: a forged snapshot must be found and then fail authentication "
			  "(EIO), got %s", snap, errno ? strerror(errno) : "success");
		free(snap);
		free(got);
		free(want);
		free(day);
	}
	/* The forged tip's record does not authenticate: latest is there, and
	 * reading it is EIO (never a silently empty view). */
	char *latest = readlink_str(pjoin(mnt, "latest"));
	cr_assert(!latest && errno == EIO, "latest -> %s", latest ? latest : strerror(errno));
	run_result r;
	run_opts o = { .timeout = 20 };
	char *snaps = pjoin(mnt, "snapshots"), *last = pjoin(snaps, "2262-04-11");
	run_cmd(&r, &o, "ls", "-1", snaps, NULL);
	assert_ok(&r, "ls -1 snapshots/");
	run_result_dispose(&r);
	run_cmd(&r, &o, "ls", "-1", last, NULL);
	cr_assert(r.status == 0 || strstr(r.err, "Input/output error"),
		  "ls -1 snapshots/2262-04-11/ must end with a listing or EIO: exit %d: %s",
		  r.status, r.err);
	run_result_dispose(&r);
	free(last);
	free(snaps);
	free(latest);
	free(days);
	free(mnt);
	free(tip);
	free(arch);
	free(src);
}

/* The pid of the one amberfs daemon whose argv names mount point `mnt`. */
static pid_t daemon_of(const char *mnt)
{
	DIR *d = opendir("/proc");
	cr_assert(d, "opendir /proc: %s", strerror(errno));
	pid_t found = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char *end, buf[8192];
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		char *p = xasprintf("/proc/%ld/cmdline", pid);
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (fd >= 0)
			close(fd);
		free(p);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		int is_mount = 0, names_mnt = 0;
		for (char *a = buf; a < buf + n; a += strlen(a) + 1) {
			is_mount |= !strcmp(a, "mount");
			names_mnt |= !strcmp(a, mnt);
		}
		if (!is_mount || !names_mnt || !strstr(buf, "amberfs"))
			continue;
		cr_assert(!found, "two amberfs processes serve %s: %d and %ld", mnt, (int)found,
			  pid);
		found = (pid_t)pid;
	}
	closedir(d);
	cr_assert(found, "no amberfs daemon serves %s", mnt);
	return found;
}

/* The line of /proc/PID/FILE that starts with `key`, without the key. */
static char *proc_line(pid_t pid, const char *file, const char *key)
{
	char *p = xasprintf("/proc/%d/%s", (int)pid, file);
	char *text = read_file(p, NULL), *line = text, *res = NULL;
	while (line && *line) {
		char *eol = strchr(line, '\n');
		if (eol)
			*eol = '\0';
		if (!strncmp(line, key, strlen(key))) {
			res = strdup(line + strlen(key));
			break;
		}
		line = eol ? eol + 1 : NULL;
	}
	cr_assert(res, "%s has no line '%s':\n%s", p, key, text);
	free(text);
	free(p);
	return res;
}

/*
 * The daemon holds the archive's keys and decrypted data.  In the usual
 * background mode it is a child of the process that unlocked the archive,
 * and a fork does not inherit memory locks: its keys must be locked again.
 * It must not dump core, and must not be dumpable (which also keeps other
 * processes of its user out of its memory).  The daemon runs as root with
 * group nogroup: the kernel shows a dumpable process's /proc files as its
 * own uid:gid, and a non-dumpable one's as root:root.
 */
Test(mount, background_daemon_locks_its_keys_and_cannot_dump)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char id[41];
	mkdir_p(src, 0755);
	write_str(pjoin(src, "f"), "content\n");
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	const char *const prefix[] = { "setpriv", "--regid=65534", "--clear-groups", "--", NULL };
	const char *const args[] = { "mount", arch, mnt, "-o", "allow_other", NULL };
	run_opts o = { .prefix = prefix, .timeout = 60 };
	run_result r;
	amber_a(&r, &o, args);
	assert_ok(&r, "amberfs mount (background, group nogroup)");
	run_result_dispose(&r);
	assert_is_amberfs_mount(mnt, "right after `amberfs mount` returned");
	assert_file_content(pjoin(mnt, "latest/f"), "content\n");
	pid_t pid = daemon_of(mnt);

	char *gid = proc_line(pid, "status", "Gid:");
	cr_assert_eq(strtol(gid, NULL, 10), 65534, "the daemon runs with gid%s", gid);
	char *lck = proc_line(pid, "status", "VmLck:");
	long long kb = strtoll(lck, NULL, 10);
#if defined(__SANITIZE_ADDRESS__)
	/* ASan's mlock() interceptor does nothing (a daemon that never forked has
	 * VmLck 0 too): the plain build checks the lock */
	cr_log_info("ASan build: mlock is a no-op, VmLck:%s (%lld) not checked", lck, kb);
#else
	cr_assert(kb > 0, "the daemon's keys are not in locked memory: VmLck:%s", lck);
#endif
	char *core = proc_line(pid, "limits", "Max core file size");
	char soft[32] = "", hard[32] = "";
	sscanf(core, "%31s %31s", soft, hard);
	cr_assert(!strcmp(soft, "0") && !strcmp(hard, "0"),
		  "the daemon may dump core: Max core file size%s", core);
	char *status = xasprintf("/proc/%d/status", (int)pid);
	struct stat st;
	cr_assert(stat(status, &st) == 0, "stat %s: %s", status, strerror(errno));
	cr_assert(st.st_uid == 0 && st.st_gid == 0,
		  "%s is owned by %d:%d: the daemon is dumpable", status, (int)st.st_uid,
		  (int)st.st_gid);
	unmount_ok(mnt);
	free(status);
	free(core);
	free(lck);
	free(gid);
	free(mnt);
	free(arch);
	free(src);
}

/*
 * `amberfs mount` returns without waiting for its daemon to leave the
 * caller's session; the daemon must still be out of reach of a hang-up
 * sent to that session the moment the command returns (libfuse's own
 * daemonize waited for the child's setsid() to close that race): here the
 * caller's whole process group gets SIGHUP right after the mount returns,
 * and the mount must go on serving from a daemon in its own session.
 */
Test(mount, hangup_of_the_callers_session_right_after_mount_leaves_the_daemon_serving)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char id[41];
	mkdir_p(src, 0755);
	write_str(pjoin(src, "f"), "content\n");
	amber_init_archive(arch, 1);
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	const char *const prefix[] = { "setsid", "-w", "sh", "-c", "\"$0\" \"$@\"; kill -HUP 0",
				       NULL };
	const char *const args[] = { "mount", arch, mnt, NULL };
	run_opts o = { .prefix = prefix, .timeout = 60 };
	run_result r;
	amber_a(&r, &o, args);
	run_result_dispose(&r);      /* sh dies of its own hang-up: status 129 */
	assert_is_amberfs_mount(mnt, "after a hang-up of the mounting session");
	pid_t pid = daemon_of(mnt);
	cr_assert_eq(getsid(pid), pid, "the daemon %d is not the leader of its own session",
		     (int)pid);
	usleep(300 * 1000);
	assert_file_content(pjoin(mnt, "latest/f"), "content\n");
	cr_assert(kill(pid, 0) == 0, "the daemon %d is gone after the hang-up", (int)pid);
	unmount_ok(mnt);
	free(mnt);
	free(arch);
	free(src);
}

/* Run `cat path` as nobody; @return its result (dispose it). */
static void cat_as_nobody(run_result *r, const char *path)
{
	const char *const prefix[] = { "setpriv", "--reuid=65534", "--regid=65534",
				       "--clear-groups", "--", NULL };
	run_opts o = { .prefix = prefix, .timeout = 30 };
	run_cmd(r, &o, "cat", path, NULL);
}

/*
 * POSIX ACLs are stored and served as system.posix_acl_* attributes; a
 * shared mount (allow_other, hence default_permissions) must enforce them
 * as the source did, not just the mode bits: a file of mode 0644 whose ACL
 * denies nobody, and a directory likewise, stay closed to nobody.  A
 * single-user mount lets no other user in at all.
 */
Test(mount, shared_mount_enforces_stored_posix_acls)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char id[41];
	mkdir_p(src, 0755);
	mkdir_p(pjoin(src, "closed"), 0755);
	write_file(pjoin(src, "open"), "open\n", 5, 0644);
	write_file(pjoin(src, "denied"), "secret\n", 7, 0644);
	write_file(pjoin(src, "closed/inner"), "inner\n", 6, 0644);
	const char *acl_targets[] = { "denied", "closed" };
	for (size_t i = 0; i < 2; i++) {
		run_result r;
		run_cmd(&r, NULL, "setfacl", "-m", "u:nobody:---", pjoin(src, acl_targets[i]),
			NULL);
		assert_ok(&r, "setfacl -m u:nobody:---");
		run_result_dispose(&r);
	}
	/* the source denies nobody; nobody must reach the mount point itself */
	cr_assert(chmod(IT.tmp, 0711) == 0, "chmod %s: %s", IT.tmp, strerror(errno));
	run_result r;
	cat_as_nobody(&r, pjoin(src, "denied"));
	cr_assert(r.status != 0, "the source file should be closed to nobody: %s", r.out);
	run_result_dispose(&r);
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);

	char *mnt = mountpoint("mnt");
	const char *const shared[] = { "-o", "allow_other", NULL };
	mount_bg(arch, mnt, NULL, shared);
	cat_as_nobody(&r, pjoin(mnt, "latest/open"));
	assert_ok(&r, "nobody reads a plain 0644 file through the shared mount");
	cr_assert_str_eq(r.out, "open\n");
	run_result_dispose(&r);
	const char *closed[] = { "latest/denied", "latest/closed/inner" };
	for (size_t i = 0; i < 2; i++) {
		cat_as_nobody(&r, pjoin(mnt, closed[i]));
		cr_assert(r.status != 0 && strstr(r.err, "Permission denied"),
			  "%s: an ACL denies nobody at the source, but through the mount: "
			  "exit %d, stdout '%s', stderr '%s'", closed[i], r.status, r.out, r.err);
		assert_not_contains(r.out, r.out_len, "secret", closed[i]);
		run_result_dispose(&r);
	}
	assert_file_content(pjoin(mnt, "latest/denied"), "secret\n");
	unmount_ok(mnt);

	mount_bg(arch, mnt, NULL, NULL);
	cat_as_nobody(&r, pjoin(mnt, "latest/open"));
	cr_assert(r.status != 0 && strstr(r.err, "Permission denied"),
		  "a single-user mount let nobody in: exit %d, stderr '%s'", r.status, r.err);
	run_result_dispose(&r);
	assert_file_content(pjoin(mnt, "latest/denied"), "secret\n");
	unmount_ok(mnt);
	free(mnt);
	free(arch);
	free(src);
}

/*
 * Tags are listed from the store's refs, and anyone who can write the
 * store can plant refs under refs/tags/ with names amberfs never writes:
 * a leading '-' or '.', "..", a ".lock" suffix, a space, a '/', more than
 * 64 bytes; loose (git update-ref, or a file) or as packed-refs lines.
 * None of them shows in tags/ or resolves there; the good tags do.
 */
Test(mount, tags_with_hostile_names_are_not_listed_or_resolved)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char id[41];
	mkdir_p(src, 0755);
	write_str(pjoin(src, "f"), "content\n");
	amber_init_archive(arch, 0);
	const char *tag[] = { "--tag", "good", NULL };
	amber_snapshot_ok(id, arch, src, tag);
	free(git_ok(arch, NULL, "update-ref", "refs/tags/also.good_1-x", id, NULL));
	free(git_ok(arch, NULL, "update-ref", "refs/tags/-x", id, NULL));
	free(git_ok(arch, NULL, "update-ref", "refs/tags/sub/x", id, NULL));
	char *line = xasprintf("%s\n", id);
	write_str(pjoin(arch, "refs/tags/loose.lock"), line);
	write_str(pjoin(arch, "refs/tags/.dot"), line);
	char long_name[70];
	memset(long_name, 'a', 65);
	long_name[65] = '\0';
	const char *packed[] = { "a..b", "p.lock", "-dash", ".hidden", "sp ace", long_name };
	char *pr = pjoin(arch, "packed-refs");
	struct stat st;
	cr_assert(stat(pr, &st) != 0, "this test writes packed-refs from scratch");
	FILE *f = fopen(pr, "w");
	cr_assert(f, "fopen %s: %s", pr, strerror(errno));
	for (size_t i = 0; i < sizeof(packed) / sizeof(packed[0]); i++)
		fprintf(f, "%s refs/tags/%s\n", id, packed[i]);
	cr_assert(fclose(f) == 0);

	char *mnt = mountpoint("mnt");
	char *log = pjoin(IT.tmp, "daemon.log");
	mount_fg(arch, mnt, log, NULL);
	char *tags = list_dir_capped(pjoin(mnt, "tags"), 64);
	cr_assert_str_eq(tags, "also.good_1-x\ngood\n", "tags/ lists:\n%s\ndaemon log: %s", tags,
			 read_file(log, NULL));
	assert_file_content(pjoin(mnt, "tags/good/f"), "content\n");
	assert_file_content(pjoin(mnt, "tags/also.good_1-x/f"), "content\n");
	const char *hostile[] = { "-x", "sub", "loose.lock", ".dot", "a..b", "p.lock", "-dash",
				  ".hidden", "sp ace", long_name };
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		char *p = xasprintf("%s/tags/%s", mnt, hostile[i]);
		errno = 0;
		cr_assert(lstat(p, &st) != 0 && errno == ENOENT,
			  "tags/%s: a hostile tag name must not resolve (got %s)", hostile[i],
			  errno ? strerror(errno) : "success");
		free(p);
	}
	free(tags);
	free(pr);
	free(line);
	free(mnt);
	free(arch);
	free(src);
}

/* Anonymous resident memory of process pid (not the pack files it maps), in KiB. */
static long long rss_anon_kib(pid_t pid)
{
	char *v = proc_line(pid, "status", "RssAnon:");
	long long kb = strtoll(v, NULL, 10);
	free(v);
	return kb;
}

#define BIGX_DIRS 60
#define BIGX_FILES 320
#define BIGX_VALUE 3900

/*
 * Decoded listings are cached for lookups under a memory bound (16 MiB of
 * idle listings).  Their memory is mostly what the archive put in them:
 * names, targets and xattrs.  60 directories of 320 entries with 3.9 KB of
 * xattrs each decode to about 75 MB: looking a name up in every one of them
 * must leave the daemon's own (anonymous) resident memory within the bound
 * plus slack (decoding buffers, and an ASan build's shadow and redzones),
 * and user.amberfs.stats must account for the xattrs.
 */
Test(mount, listing_cache_counts_xattrs_and_stays_within_its_bound)
{
	char *p = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char id[41], value[BIGX_VALUE];
	uint64_t seed = 99;
	/* a tmpfs (taken down in teardown): 15,000 xattr blocks are slow on disk */
	char *src = mt_register(p, 1);
	cr_assert(mount("tmpfs", src, "tmpfs", 0, "size=256m,mode=0755") == 0,
		  "mount tmpfs on %s: %s", src, strerror(errno));
	for (int d = 0; d < BIGX_DIRS; d++) {
		char *dir = xasprintf("%s/d%02d", src, d);
		mkdir_p(dir, 0755);
		for (int i = 0; i < BIGX_FILES; i++) {
			char *f = xasprintf("%s/f%03d", dir, i);
			write_file(f, "", 0, 0644);
			fill_random(value, sizeof(value), &seed);
			cr_assert(setxattr(f, "user.big", value, sizeof(value), 0) == 0,
				  "setxattr %s: %s", f, strerror(errno));
			free(f);
		}
		free(dir);
	}
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);

	/* an ASan build holds freed memory in quarantine; let it reuse it as malloc does */
	const char *asan = getenv("ASAN_OPTIONS");
	char *asan_opts = xasprintf("%s%squarantine_size_mb=0", asan ? asan : "",
				    asan && *asan ? ":" : "");
	cr_assert(setenv("ASAN_OPTIONS", asan_opts, 1) == 0);
	char *mnt = mountpoint("mnt");
	const char *const small[] = { "-o", "cache_size=1M", NULL };
	pid_t pid = mount_fg(arch, mnt, pjoin(IT.tmp, "daemon.log"), small);
	char *snap = latest_dir(mnt);
	struct stat st;
	cr_assert(stat(snap, &st) == 0, "stat %s: %s", snap, strerror(errno));
	long long rss0 = rss_anon_kib(pid), one = 0;
	for (int d = 0; d < BIGX_DIRS; d++) {
		char *miss = xasprintf("%s/d%02d/no such file", snap, d);
		cr_assert(stat(miss, &st) != 0 && errno == ENOENT, "stat %s: %s", miss,
			  strerror(errno));
		free(miss);
		if (d == 0) {
			char *stats = xget_ok(mnt, "user.amberfs.stats");
			one = stats_counter(stats, "dir_cache_bytes");
			free(stats);
		}
	}
	long long grown = rss_anon_kib(pid) - rss0;
	cr_log_info("the listing cache grew the daemon by %lld KiB", grown);
	cr_assert(grown < 48 << 10, "the listing cache grew the daemon by %lld KiB (bound: "
		  "16 MiB of listings)", grown);
	char *stats = xget_ok(mnt, "user.amberfs.stats");
	long long all = stats_counter(stats, "dir_cache_bytes");
	cr_assert(one >= (long long)BIGX_FILES * BIGX_VALUE,
		  "one cached listing of %d entries with %d bytes of xattrs each is accounted "
		  "as %lld bytes", BIGX_FILES, BIGX_VALUE, one);
	cr_assert(all <= 16 << 20, "the listing cache holds %lld bytes, over its 16 MiB", all);
	free(stats);
	free(snap);
	free(mnt);
	free(asan_opts);
	free(arch);
	free(src);
	free(p);
}

/* Bytes of a regular file read whole with read(2); asserts. */
static size_t read_through(const char *path, size_t limit)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	static char buf[1 << 20];
	size_t got = 0;
	ssize_t n;
	while (got < limit && (n = read(fd, buf, sizeof(buf) < limit - got ? sizeof(buf)
									      : limit - got)) > 0)
		got += (size_t)n;
	cr_assert(got == limit || n == 0, "read %s: %s", path, strerror(errno));
	close(fd);
	return got;
}

#define REUSE_DIRS 2
#define REUSE_FILES 1000

/*
 * Nodes live in 2 MiB chunks (mount_slab.c), and the block of a node the
 * kernel forgot is reused by the next node of its size: name after name
 * looked up under a small -o node_cache, far more nodes made than one
 * chunk holds, and the chunks stay at one.  (Without the reuse each lookup
 * took fresh bytes, and the chunks grew with every node ever made.)
 */
Test(mount, node_blocks_are_reused_after_forget)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char id[41], **paths = calloc(REUSE_DIRS * REUSE_FILES, sizeof(char *));

	cr_assert_not_null(paths);
	for (int d = 0; d < REUSE_DIRS; d++) {
		char *dir = xasprintf("%s/d%d", src, d);
		mkdir_p(dir, 0755);
		for (int i = 0; i < REUSE_FILES; i++) {
			char *f = xasprintf("%s/file-%04d", dir, i);
			write_file(f, "", 0, 0644);
			free(f);
		}
		free(dir);
	}
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	const char *const opts[] = { "-o", "node_cache=256K", NULL };
	mount_fg(arch, mnt, pjoin(IT.tmp, "daemon.log"), opts);
	char *snap = latest_dir(mnt);
	for (int d = 0; d < REUSE_DIRS; d++)
		for (int i = 0; i < REUSE_FILES; i++)
			paths[d * REUSE_FILES + i] = xasprintf("%s/d%d/file-%04d", snap, d, i);

	/* stat every name until 7,000 nodes were made (2.6 MiB of blocks, more
	   than a chunk); the trimmer makes the kernel forget them behind us */
	char *stats = NULL;
	long long made = 0;
	for (int pass = 0; pass < 40 && made < 7000; pass++) {
		struct stat st;
		for (int i = 0; i < REUSE_DIRS * REUSE_FILES; i++)
			cr_assert(stat(paths[i], &st) == 0, "stat %s: %s", paths[i],
				  strerror(errno));
		free(stats);
		stats = xget_ok(mnt, "user.amberfs.stats");
		made = stats_counter(stats, "lookups");
		if (made < 7000)
			sleep_s(0.05);  /* let the FORGETs arrive */
	}
	cr_log_info("after the lookups: %s", stats);
	cr_assert(made >= 7000, "only %lld lookups after 40 passes: %s", made, stats);
	cr_assert(stats_counter(stats, "nodes_dropped") > 0, "%s", stats);
	cr_assert_eq(stats_counter(stats, "node_arena_bytes"), 2 << 20,
		     "%lld lookups, and the nodes' chunks hold %lld bytes, not one chunk: %s",
		     made, stats_counter(stats, "node_arena_bytes"), stats);
	free(stats);
	unmount_ok(mnt);
	for (int i = 0; i < REUSE_DIRS * REUSE_FILES; i++)
		free(paths[i]);
	free(paths);
	free(snap);
	free(mnt);
	free(arch);
	free(src);
}

#define MEMX_DIRS 10
#define MEMX_FILES 120
#define MEMX_VALUE 60000

/*
 * The daemon reports each part of its memory with its bound in
 * user.amberfs.stats, and the parts stay within them: the decoded-chunk
 * cache holds what was read (plus the read-ahead window) up to its cap;
 * the listing cache stays within its bound while a tree of 72 MB of
 * listings (1,200 entries with a 60 KB xattr each) is walked; the node
 * table, which the kernel alone would let grow with its dentry cache, is
 * trimmed back to -o node_cache; and the resident size after find + du +
 * cat stays under the sum of the bounds plus a fixed slack for the program
 * itself (libraries, stacks; more under ASan, whose allocator keeps freed
 * memory and shadows all of it).
 */
Test(mount, memory_report_bounds_every_part_and_rss_stays_within_them)
{
	char *p = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char id[41];
	static char value[MEMX_VALUE];
	uint64_t seed = 7;
	char *src = mt_register(p, 1);
	cr_assert(mount("tmpfs", src, "tmpfs", 0, "size=512m,mode=0755") == 0,
		  "mount tmpfs on %s: %s", src, strerror(errno));
	for (int d = 0; d < MEMX_DIRS; d++) {
		char *dir = xasprintf("%s/d%02d", src, d);
		mkdir_p(dir, 0755);
		for (int i = 0; i < MEMX_FILES; i++) {
			char *f = xasprintf("%s/f%03d", dir, i);
			write_file(f, "", 0, 0644);
			fill_random(value, sizeof(value), &seed);
			cr_assert(setxattr(f, "user.big", value, sizeof(value), 0) == 0,
				  "setxattr %s: %s", f, strerror(errno));
			free(f);
		}
		free(dir);
	}
	char *small = pjoin(src, "small.bin"), *big = pjoin(src, "big.bin");
	write_random_file(small, 4 << 20, 11, 0);
	write_random_file(big, 24 << 20, 12, 0);
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);

	const char *asan = getenv("ASAN_OPTIONS");
	char *asan_opts = xasprintf("%s%squarantine_size_mb=0", asan ? asan : "",
				    asan && *asan ? ":" : "");
	cr_assert(setenv("ASAN_OPTIONS", asan_opts, 1) == 0);
	char *mnt = mountpoint("mnt");
	const char *const opts[] = { "-o", "cache_size=8M,node_cache=4M", NULL };
	pid_t pid = mount_fg(arch, mnt, pjoin(IT.tmp, "daemon.log"), opts);
	char *snap = latest_dir(mnt);

	/* every part is reported with its bound */
	char *stats = xget_ok(mnt, "user.amberfs.stats");
	cr_log_info("at mount: %s", stats);
	cr_assert_eq(stats_counter(stats, "chunk_cache_max"), 8 << 20);
	cr_assert_eq(stats_counter(stats, "node_max"), 4 << 20);
	cr_assert_eq(stats_counter(stats, "chunk_cache_bytes"), 0);
	const char *const parts[] = { "dir_cache_max", "pack_map_max", "git_cache_max",
				      "request_buffers_max", "bound_bytes", "rss_bytes", NULL };
	for (const char *const *k = parts; *k; k++)
		cr_assert(stats_counter(stats, *k) > 0, "%s is 0: %s", *k, stats);
	free(stats);

	/* the chunk cache holds what was read, not more */
	char *f = pjoin(snap, "small.bin");
	cr_assert_eq(read_through(f, SIZE_MAX), (size_t)4 << 20);
	free(f);
	stats = xget_ok(mnt, "user.amberfs.stats");
	long long cached = stats_counter(stats, "chunk_cache_bytes");
	cr_assert(cached >= 4 << 20 && cached <= (4 << 20) + (256 << 10),
		  "after reading a 4 MiB file the chunk cache holds %lld bytes: %s", cached, stats);
	free(stats);
	f = pjoin(snap, "big.bin");
	cr_assert_eq(read_through(f, 1 << 20), (size_t)1 << 20);
	stats = xget_ok(mnt, "user.amberfs.stats");
	cached = stats_counter(stats, "chunk_cache_bytes") - (4 << 20);
	long long asked = stats_counter(stats, "read_bytes") - (4 << 20);
	/* the daemon reads ahead by 4 MiB, in whole chunks (at most 2 MiB) */
	cr_assert(cached > 0 && cached <= asked + (6 << 20) + (256 << 10),
		  "the kernel asked for %lld bytes of big.bin and the cache holds %lld of it: %s",
		  asked, cached, stats);
	free(stats);
	cr_assert_eq(read_through(f, SIZE_MAX), (size_t)24 << 20);
	free(f);

	/* walk the tree: find, then du (a stat of every entry) */
	run_result r;
	run_opts o = { .timeout = 120 };
	run_cmd(&r, &o, "find", snap, "-type", "f", NULL);
	cr_assert_eq(r.status, 0, "find %s: %s", snap, r.err);
	run_result_dispose(&r);
	run_cmd(&r, &o, "du", "-s", snap, NULL);
	cr_assert_eq(r.status, 0, "du -s %s: %s", snap, r.err);
	run_result_dispose(&r);

	/* the trimmer works in the background: give it a moment */
	long long nb = 0, rss = 0, bound = 0;
	for (int i = 0; i < 50; i++) {
		stats = xget_ok(mnt, "user.amberfs.stats");
		nb = stats_counter(stats, "node_bytes");
		if (nb <= 4 << 20)
			break;
		free(stats);
		stats = NULL;
		sleep_s(0.1);
	}
	cr_assert(stats, "the node table holds %lld bytes 5 s after the walk, over its "
		  "4 MiB bound", nb);
	cr_log_info("after the walk: %s", stats);
	cr_assert(stats_counter(stats, "nodes_dropped") > 0, "%s", stats);
	cr_assert(stats_counter(stats, "dir_cache_bytes") <= 16 << 20,
		  "the listing cache is over its 16 MiB: %s", stats);
	cr_assert(stats_counter(stats, "chunk_cache_bytes") <= 8 << 20,
		  "the chunk cache is over its 8 MiB cap: %s", stats);
	cr_assert(stats_counter(stats, "dirs_decoded") > 0);
	bound = stats_counter(stats, "bound_bytes");
	free(stats);
	char *v = proc_line(pid, "status", "VmRSS:");
	rss = strtoll(v, NULL, 10) << 10;
	free(v);
#if defined(__SANITIZE_ADDRESS__)
	long long slack = 160 << 20;
#else
	long long slack = 40 << 20;
#endif
	cr_log_info("VmRSS %lld MiB, bounds %lld MiB", rss >> 20, bound >> 20);
	cr_assert(rss <= bound + slack, "the daemon's VmRSS is %lld MiB after find, du and "
		  "cat: over the sum of its bounds (%lld MiB) plus %lld MiB", rss >> 20,
		  bound >> 20, slack >> 20);
	unmount_ok(mnt);
	free(snap);
	free(mnt);
	free(asan_opts);
	free(small);
	free(big);
	free(arch);
	free(src);
	free(p);
}

/* ------------------------------------------------------------------ */
/* Printed names round-trip                                            */

#define RT_SNAPS 6

/*
 * Snapshots of src at chosen times, through libamber (the CLI takes the
 * clock's time, and a slow build may not fit two in one second): three in
 * one second, two of them in one millisecond, and ns that no print at
 * fewer than nine digits keeps.
 */
static void snapshots_at_chosen_times(char ids[RT_SNAPS][41], const char *arch, const char *src)
{
	static const int64_t off[RT_SNAPS] = {0, 1007, 2500003, 1200017001LL, 1200034999LL,
					      3700000001LL};
	int64_t base = ((int64_t)time(NULL) - 60) * 1000000000LL + 123456789;
	amber_archive *a = NULL;
	char *ver = pjoin(src, "version");

	cr_assert_eq(amber_global_init(), 0);
	cr_assert_eq(amber_archive_open(&a, arch), 0, "open %s: %s", arch, amber_error_last());
	for (int k = 0; k < RT_SNAPS; k++) {
		amber_snapshot_opts o = {.version = AMBER_SNAPSHOT_OPTS_VERSION,
			.stream = "main", .threads = 1, .time_ns = base + off[k]};
		char c[16];
		snprintf(c, sizeof(c), "%d\n", k);
		write_str(ver, c);
		cr_assert_eq(amber_snapshot_create(ids[k], NULL, a, src, &o), 0, "snapshot %d: %s",
			     k, amber_error_last());
	}
	amber_archive_free(a);
	free(ver);
}

/* `amberfs cat ARCH @NAME:version`: the generation of the snapshot NAME
 * resolves to, or -1 if it does not resolve. */
static int cli_gen(const char *arch, const char *name)
{
	char *spec = xasprintf("@%s:version", name);
	run_result r;
	amber(&r, "cat", arch, spec, NULL);
	int g = r.status == 0 ? (int)strtol(r.out, NULL, 10) : -1;
	run_result_dispose(&r);
	free(spec);
	return g;
}

/* Every spelling of snapshot k's time resolves to it: CLI, at/, snapshots/DAY/. */
static void expect_name_resolves(const char *arch, const char *mnt, const char *day,
				 const char *name, const char *id, int k, const char *where)
{
	char content[16];
	snprintf(content, sizeof(content), "%d\n", k);
	int g = cli_gen(arch, name);
	cr_expect_eq(g, k, "%s name %s: amberfs cat @%s gives snapshot %d, not %d", where, name,
		     name, g, k);
	char *at = xasprintf("at/%s", name), *in_day = xasprintf("snapshots/%s/%s", day, name);
	expect_snap(mnt, at, id, content);
	expect_snap(mnt, in_day, id, content);
	free(at);
	free(in_day);
}

/* The time column of `amberfs log` (text) for snapshot id. */
static char *log_text_time(const char *text, const char *id)
{
	const char *line = strstr(text, id);
	cr_assert(line, "amberfs log does not list %s:\n%s", id, text);
	line += 40;
	line += strspn(line, " ");
	return xasprintf("%.*s", (int)strcspn(line, " \n"), line);
}

Test(mount, every_printed_snapshot_name_resolves_to_that_snapshot)
{
	char *src = pjoin(IT.tmp, "src"), *ver = pjoin(src, "version");
	char *arch = pjoin(IT.tmp, "archive");
	char ids[RT_SNAPS][41];
	mkdir_p(src, 0755);
	amber_init_archive(arch, 1);
	snapshots_at_chosen_times(ids, arch, src);
	snapinfo all[RT_SNAPS];
	cr_assert_eq(log_snaps(arch, NULL, all, RT_SNAPS), RT_SNAPS);
	int same_second = 0;
	for (int i = 1; i < RT_SNAPS; i++)
		same_second |= all[i].ns / 1000000000LL == all[i - 1].ns / 1000000000LL;
	cr_assert(same_second, "no two snapshots fell within one second");
	run_result r;
	amber(&r, "log", arch, NULL);
	assert_ok(&r, "amberfs log");
	char *mnt = mountpoint("mnt");
	mount_bg(arch, mnt, no_passphrase_env, NULL);
	for (int k = 0; k < RT_SNAPS; k++) {
		snapinfo *s = find_snap(all, RT_SNAPS, ids[k]);
		char *rel = snap_rel(s->ns), *day = xasprintf("%.10s", rel + strlen("snapshots/"));
		char *listed = pjoin(mnt, rel), *dayd = xasprintf("%s/snapshots/%s", mnt, day);
		char *names = list_dir(dayd), *text = log_text_time(r.out, ids[k]);
		const char *base = rel + strlen("snapshots/") + 11;
		expect_name_resolves(arch, mnt, day, s->time, ids[k], k, "log --json");
		expect_name_resolves(arch, mnt, day, text, ids[k], k, "log");
		cr_assert(strstr(names, base), "%s/ does not list %s:\n%s", dayd, base, names);
		char *xt = xget_ok(listed, "user.amberfs.time");
		expect_name_resolves(arch, mnt, day, base, ids[k], k, "snapshots/DAY/");
		expect_name_resolves(arch, mnt, day, xt, ids[k], k, "user.amberfs.time");
		free(xt);
		free(text);
		free(names);
		free(dayd);
		free(listed);
		free(day);
		free(rel);
	}
	char *latest = latest_dir(mnt), *v = xget_ok(latest, "user.amberfs.snapshot");
	cr_expect_str_eq(v, ids[RT_SNAPS - 1], "latest does not lead to the newest snapshot");
	free(v);
	free(latest);
	run_result_dispose(&r);
	free(mnt);
	free(arch);
	free(ver);
	free(src);
}

/* ------------------------------------------------------------------ */
/* Mounting like any other filesystem: mount(8), /etc/fstab, systemd   */

/* How many mounts /proc/self/mountinfo has exactly at mnt. */
static int mounts_at(const char *mnt)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	cr_assert(f, "/proc/self/mountinfo: %s", strerror(errno));
	char *line = NULL, at[PATH_MAX];
	size_t cap = 0;
	int n = 0;
	while (getline(&line, &cap, f) > 0) {
		if (sscanf(line, "%*s %*s %*s %*s %4095s", at) != 1)
			continue;
		mi_unescape(at);
		n += strcmp(at, mnt) == 0;
	}
	free(line);
	fclose(f);
	return n;
}

Test(mount, second_mount_on_the_same_directory_is_refused_naming_the_first)
{
	char *src = pjoin(IT.tmp, "src");
	small_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 1);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	mount_bg(arch, mnt, NULL, NULL);
	run_result r;
	amber(&r, "mount", arch, mnt, NULL);
	cr_assert_eq(r.status, 1, "a second mount on %s: expected exit 1, got %d (stderr: %s)", mnt,
		     r.status, r.err);
	assert_one_error_line(&r, "a second mount on the same directory");
	cr_assert(strstr(r.err, mnt) && strstr(r.err, "already a mount point") &&
		  strstr(r.err, "fuse.amberfs") && strstr(r.err, arch),
		  "the refusal should name the mount already there (%s of %s): %s", mnt, arch, r.err);
	run_result_dispose(&r);
	cr_assert_eq(mounts_at(mnt), 1, "%s: %d mounts stacked", mnt, mounts_at(mnt));
	unmount_ok(mnt);
	cr_assert_eq(mounts_at(mnt), 0, "one unmount should leave %s empty", mnt);
	free(mnt);
	free(arch);
	free(src);
}

#define SYS_HELPER "/sbin/mount.fuse.amberfs"
#define FSTAB "/etc/fstab"
#define FSTAB_MARK "# amberfs test suite: this line and the next are removed after the test\n"

static int sys_helper_placed;
static char *fstab_saved;

/* Put back what the mount(8) tests changed on the system, even on failure. */
static void sys_restore(void)
{
	if (fstab_saved) {
		FILE *f = fopen(FSTAB, "w");
		if (f) {
			fputs(fstab_saved, f);
			fclose(f);
		}
		free(fstab_saved);
		fstab_saved = NULL;
	}
	if (sys_helper_placed)
		unlink(SYS_HELPER);
	sys_helper_placed = 0;
}

/*
 * The tests that change /etc/fstab or /sbin take this lock first, so that
 * two suites on one machine (a plain and an ASan pass, two worktrees) take
 * turns; it is released when the test's process exits.
 */
static void sys_lock(void)
{
	static int held;
	if (held)
		return;
	held = 1;
	int fd = open("/run/lock/amberfs-itest-system.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert(fd >= 0, "/run/lock/amberfs-itest-system.lock: %s", strerror(errno));
	cr_assert(flock(fd, LOCK_EX) == 0, "flock: %s", strerror(errno));
}

/*
 * mount(8) runs /sbin/mount.fuse.amberfs for type fuse.amberfs.  An
 * installed one is used as it is (it runs $AMBERFS, the build's binary
 * here); otherwise the build's helper is put there for the test.
 */
static void sys_helper_ready(void)
{
	sys_lock();
	if (access(SYS_HELPER, X_OK) == 0)
		return;
	char *helper = find_helper();
	size_t len;
	char *text = read_file(helper, &len);
	write_file(SYS_HELPER, text, len, 0755);
	sys_helper_placed = 1;
	free(text);
	free(helper);
}

/* The environment mount(8) passes on: $AMBERFS picks the build's binary. */
static const char *const *sys_env(void)
{
	static char *prog;
	static const char *env[4];
	free(prog);
	prog = xasprintf("AMBERFS=%s", IT.bin);
	env[0] = prog;
	env[1] = "AMBERFS_PASSPHRASE_FILE";
	env[2] = NULL;
	return env;
}

/* Runs before the suite's teardown (which unmounts what is left). */
static void sys_fini(void)
{
	sys_restore();
}

Test(mount, mount_t_fuse_amberfs_goes_through_mount8, .fini = sys_fini)
{
	char *src = pjoin(IT.tmp, "src");
	small_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive_real_kdf(arch); /* mount(8) cannot pass --kdf-profile=test */
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	sys_helper_ready();
	char *opts = xasprintf("passphrase_file=%s,cache_dir=%s", IT.passfile, IT.cache);
	run_opts o = { .env = sys_env(), .timeout = 60 };
	run_result r;
	run_cmd(&r, &o, "mount", "-t", "fuse.amberfs", arch, mnt, "-o", opts, NULL);
	cr_assert_eq(r.status, 0, "mount -t fuse.amberfs %s %s -o %s: exit %d: %s", arch, mnt,
		     opts, r.status, r.err);
	run_result_dispose(&r);
	assert_is_amberfs_mount(mnt, "mount -t fuse.amberfs");
	char *snap = latest_dir(mnt);
	assert_trees_equal(src, snap, TD_SKIP_ROOT_META, "mounted by mount(8)");
	run_cmd(&r, &o, "umount", mnt, NULL);
	cr_assert_eq(r.status, 0, "umount %s: %s", mnt, r.err);
	run_result_dispose(&r);
	cr_assert(!is_mounted(mnt));
	free(snap);
	free(opts);
	free(mnt);
	free(arch);
	free(src);
}

Test(mount, fstab_line_mounts_with_mount_mountpoint, .fini = sys_fini)
{
	char *src = pjoin(IT.tmp, "src");
	small_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive_real_kdf(arch);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	sys_helper_ready();

	size_t len;
	sys_lock();
	char *orig = read_file(FSTAB, &len);
	char *left = strstr(orig, FSTAB_MARK); /* from a run that was killed */
	if (left)
		*left = '\0';
	fstab_saved = strdup(orig);
	char *line = xasprintf("%s%s%s%s %s fuse.amberfs noauto,nofail,passphrase_file=%s,"
			       "cache_dir=%s,allow_other 0 0\n", orig,
			       orig[0] && orig[strlen(orig) - 1] != '\n' ? "\n" : "", FSTAB_MARK,
			       arch, mnt, IT.passfile, IT.cache);
	write_str(FSTAB, line);

	run_opts o = { .env = sys_env(), .timeout = 60 };
	run_result r;
	run_cmd(&r, &o, "mount", mnt, NULL);
	cr_assert_eq(r.status, 0, "mount %s (an /etc/fstab line): exit %d: %s", mnt, r.status,
		     r.err);
	run_result_dispose(&r);
	assert_is_amberfs_mount(mnt, "mount MOUNTPOINT from /etc/fstab");
	char opts[512];
	mount_lookup(mnt, NULL, 0, NULL, 0, opts, sizeof(opts));
	cr_assert(strstr(opts, "ro"), "the fstab mount should be read-only: %s", opts);
	char *a = pjoin(mnt, "latest/a.txt");
	assert_file_content(a, "alpha\n");
	run_cmd(&r, &o, "umount", mnt, NULL);
	cr_assert_eq(r.status, 0, "umount %s: %s", mnt, r.err);
	run_result_dispose(&r);
	sys_restore();
	char *after = read_file(FSTAB, NULL);
	cr_assert_str_eq(after, orig, "/etc/fstab should be as it was");
	free(after);
	free(a);
	free(line);
	free(orig);
	free(mnt);
	free(arch);
	free(src);
}

/* mount.fuse3 runs `amberfs SOURCE MOUNTPOINT -o OPTIONS` when no helper of ours is found. */
Test(mount, mount_fuse3_form_amberfs_archive_mountpoint_mounts)
{
	char *src = pjoin(IT.tmp, "src");
	small_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 1);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	char *bindir = dir_of(IT.bin);
	char *path = xasprintf("PATH=%s:/usr/bin:/bin", bindir);
	const char *env[] = { path, "AMBERFS", NULL };
	run_opts o = { .env = env, .timeout = 60 };
	run_result r;
	run_cmd(&r, &o, "/sbin/mount.fuse3", arch, mnt, "-t", "amberfs", "-o",
		"rw,noauto,nofail", NULL);
	cr_assert_eq(r.status, 0, "mount.fuse3 %s %s -t amberfs: exit %d: %s", arch, mnt,
		     r.status, r.err);
	run_result_dispose(&r);
	assert_is_amberfs_mount(mnt, "amberfs ARCHIVE MOUNTPOINT -o ... (as mount.fuse3 runs it)");
	char *a = pjoin(mnt, "latest/a.txt");
	assert_file_content(a, "alpha\n");
	unmount_ok(mnt);
	/* a word that is no command and no path is still an unknown command */
	amber(&r, "snapshots", "x", NULL);
	cr_assert_eq(r.status, 2);
	cr_assert(strstr(r.err, "unknown command 'snapshots'"), "%s", r.err);
	run_result_dispose(&r);
	free(a);
	free(path);
	free(bindir);
	free(mnt);
	free(arch);
	free(src);
}

/* The shipped systemd unit, for this test's archive and mount point. */
static char *unit_for(const char *arch, const char *mnt, char **name)
{
	char *example = read_file(AMBER_SOURCE_DIR "/mount-helpers/amberfs-vault.mount", NULL);
	size_t cap = strlen(example) + 4096, n = 0;
	char *out = calloc(1, cap);
	cr_assert(out);
	char *line, *save = NULL;
	for (line = strtok_r(example, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *l = NULL;
		if (!strncmp(line, "What=", 5))
			l = xasprintf("What=%s", arch);
		else if (!strncmp(line, "Where=", 6))
			l = xasprintf("Where=%s", mnt);
		else if (!strncmp(line, "RequiresMountsFor=", 18))
			l = xasprintf("RequiresMountsFor=%s", arch);
		else if (!strncmp(line, "Options=", 8))
			l = xasprintf("Options=passphrase_file=%s,cache_dir=%s", IT.passfile, IT.cache);
		n += (size_t)snprintf(out + n, cap - n, "%s\n", l ? l : line);
		cr_assert(n < cap);
		free(l);
	}
	free(example);
	run_result r;
	run_cmd(&r, NULL, "systemd-escape", "-p", "--suffix=mount", mnt, NULL);
	cr_assert_eq(r.status, 0, "systemd-escape: %s", r.err);
	r.out[strcspn(r.out, "\n")] = '\0';
	*name = strdup(r.out);
	run_result_dispose(&r);
	return out;
}

Test(mount, systemd_mount_unit_verifies_and_mounts_where_systemd_runs, .fini = sys_fini)
{
	char *src = pjoin(IT.tmp, "src");
	small_tree(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive_real_kdf(arch);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *mnt = mountpoint("mnt");
	char *name;
	char *unit = unit_for(arch, mnt, &name);
	char *dir = pjoin(IT.tmp, "units");
	mkdir_p(dir, 0755);
	char *file = pjoin(dir, name);
	write_str(file, unit);
	run_result r;
	run_opts o = { .timeout = 60 };
	run_cmd(&r, &o, "systemd-analyze", "verify", "--man=no", file, NULL);
	cr_assert_eq(r.status, 0, "systemd-analyze verify %s: exit %d: %s%s", name, r.status,
		     r.out, r.err);
	cr_assert(!strstr(r.err, name), "systemd-analyze verify complains: %s", r.err);
	run_result_dispose(&r);
	if (access("/run/systemd/system", F_OK) != 0) {
		/*
		 * systemd is not PID 1 here: nothing can start the unit.  Said on
		 * stderr (a Criterion warning would fail the program's exit status).
		 */
		fprintf(stderr, "note: systemd is not running (PID 1 is not systemd): %s was "
			"verified, not started\n", name);
	} else {
		sys_helper_ready();
		char *run = pjoin("/run/systemd/system", name);
		write_str(run, unit);
		run_cmd(&r, &o, "systemctl", "daemon-reload", NULL);
		run_result_dispose(&r);
		run_cmd(&r, &o, "systemctl", "start", name, NULL);
		int st = r.status;
		char *err = strdup(r.err);
		run_result_dispose(&r);
		int ok = st == 0 && is_mounted(mnt);
		if (ok) {
			char *a = pjoin(mnt, "latest/a.txt");
			assert_file_content(a, "alpha\n");
			free(a);
		}
		run_cmd(&r, &o, "systemctl", "stop", name, NULL);
		run_result_dispose(&r);
		unlink(run);
		run_cmd(&r, &o, "systemctl", "daemon-reload", NULL);
		run_result_dispose(&r);
		cr_assert(ok, "systemctl start %s: exit %d: %s", name, st, err);
		cr_assert(!is_mounted(mnt), "systemctl stop %s left %s mounted", name, mnt);
		free(err);
		free(run);
	}
	free(file);
	free(dir);
	free(unit);
	free(name);
	free(mnt);
	free(arch);
	free(src);
}

/* 1 if /proc/PID/FILE holds needle[0..n). */
static int proc_holds(pid_t pid, const char *file, const void *needle, size_t n)
{
	char *p = xasprintf("/proc/%d/%s", (int)pid, file);
	size_t len = 0;
	char *data = read_file(p, &len);
	int found = 0;

	for (size_t i = 0; data && i + n <= len && !found; i++)
		found = memcmp(data + i, needle, n) == 0;
	free(data);
	free(p);
	return found;
}

#define SHARE_PASS "share passphrase Kq71 of the custodians"

/*
 * A mount unlocked with recovery shares (-o share=, the way an fstab line
 * gives them): it serves the snapshot, its cmdline and environ hold file
 * names and no secret, and a core dump of it holds neither the shares nor
 * their passphrase.
 */
Test(mount, shares_unlock_the_mount_and_no_core_or_proc_file_shows_them)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive"), id[41];
	char *dir = pjoin(IT.tmp, "shares");
	run_result r;

	mkdir_p(src, 0755);
	write_str(pjoin(src, "f"), "content\n");
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	char *sp = pjoin(IT.tmp, "share-pass");
	write_passfile(sp, SHARE_PASS);
	amber(&r, "key", "split", arch, "--threshold", "2", "--shares", "3",
	      "--iteration-exponent", "0", "--share-passphrase-file", sp, "--out-dir", dir, NULL);
	assert_ok(&r, "key split");
	run_result_dispose(&r);
	FILE *ls = popen(xasprintf("ls %s", dir), "r");
	char f1[256] = "", f3[256] = "", skip[256];
	cr_assert(ls && fgets(f1, sizeof(f1), ls) && fgets(skip, sizeof(skip), ls) &&
		  fgets(f3, sizeof(f3), ls));
	pclose(ls);
	f1[strcspn(f1, "\n")] = f3[strcspn(f3, "\n")] = '\0';
	size_t len;
	char *m1 = read_file(pjoin(dir, f1), &len);

	char *mnt = mountpoint("mnt"), *log = pjoin(IT.tmp, "daemon.log");
	char *opt = xasprintf("share=%s/%s,share=%s/%s,share_passphrase_file=%s", dir, f1, dir,
			      f3, sp);
	const char *const args[] = { "mount", arch, mnt, "-f", "-o", opt, NULL };
	const char *const env[] = { "AMBERFS_PASSPHRASE_FILE", NULL };
	run_opts o = { .stderr_path = log, .env = env };
	pid_t pid = amber_spawn(&o, args);
	double end = now_s() + 30;
	while (!is_mounted(mnt)) {
		cr_assert(wait_timeout(pid, 0) == -2, "the mount exited: %s", read_file(log, NULL));
		cr_assert(now_s() < end, "not mounted after 30 s");
		sleep_s(0.02);
	}
	assert_file_content(pjoin(mnt, "latest/f"), "content\n");
	cr_assert(!proc_holds(pid, "cmdline", m1, 30), "a share in the daemon's cmdline");
	cr_assert(!proc_holds(pid, "environ", m1, 30), "a share in the daemon's environ");
	cr_assert(!proc_holds(pid, "cmdline", IT_PASSPHRASE, strlen(IT_PASSPHRASE)));
	cr_assert(!proc_holds(pid, "environ", IT_PASSPHRASE, strlen(IT_PASSPHRASE)));
	cr_assert(proc_holds(pid, "cmdline", "share=", 6), "not the daemon's cmdline");

	/*
	 * Even a dump taken from outside (root's gcore, which ptrace allows
	 * despite PR_SET_DUMPABLE 0) holds none of the secrets it was given:
	 * the share files and their passphrase were read into locked memory
	 * and wiped once the archive opened.  (The master key is there: the
	 * daemon needs it.)
	 */
#if defined(__SANITIZE_ADDRESS__)
	/* ASan's terabytes of shadow mappings make gcore run for minutes: the
	 * plain build takes the dump */
	cr_log_info("ASan build: the daemon's core is not taken");
	char *pidarg = NULL;
#else
	char *core = pjoin(IT.tmp, "daemon-core"), *pidarg = xasprintf("%d", (int)pid);
	run_cmd(&r, &(run_opts){ .timeout = 120 }, "gcore", "-o", core, pidarg, NULL);
	assert_ok(&r, "gcore of the daemon");
	run_result_dispose(&r);
	char *corefile = xasprintf("%s.%d", core, (int)pid);
	size_t clen = 0;
	char *dump = read_file(corefile, &clen);
	cr_assert(clen > (1u << 20), "core of %zu bytes", clen);
	size_t mlen = strcspn(m1, "\n");
	cr_assert(!memmem(dump, clen, m1, mlen), "the daemon's memory holds share 1");
	cr_assert(!memmem(dump, clen, m1, 60), "the daemon's memory holds share 1's start");
	cr_assert(!memmem(dump, clen, SHARE_PASS, strlen(SHARE_PASS)),
		  "the daemon's memory holds the share passphrase");
	assert_file_content(pjoin(mnt, "latest/f"), "content\n");
	unlink(corefile);
	free(dump);
	free(corefile);
	free(core);
#endif
	free(pidarg);
	free(opt);
	free(log);
	free(mnt);
	free(m1);
}

/* ------------------------------------------------------------------ */
/* Day directories from the archive's index pages                      */

#define PG_SNAPS 14
#define PG_SPAN 3

/* The record of snapshot `id` of plain archive a. */
static void pg_record(amber_record *r, amber_archive *a, const char *id)
{
	uint8_t oid[20];
	cr_assert_eq(amber_oid_fromhex(oid, id), 0);
	cr_assert_eq(amber_record_read(r, a, oid), 0, "record %s: %s", id, amber_error_last());
}

/* git hash-object -w of `len` bytes; the id. */
static void pg_put(char out[41], const char *arch, const char *type, const void *data,
		   size_t len)
{
	char *f = pjoin(IT.tmp, "forged.obj");
	FILE *fp = fopen(f, "wb");
	cr_assert(fp && fwrite(data, 1, len, fp) == len && fclose(fp) == 0);
	char *gd = xasprintf("--git-dir=%s", arch);
	const char *argv[] = { "git", gd, "hash-object", "-w", "-t", type, f, NULL };
	run_result r;
	run_argv(&r, NULL, argv);
	cr_assert(r.status == 0 && r.out_len >= 40, "hash-object: %s", r.err);
	memcpy(out, r.out, 40);
	out[40] = '\0';
	run_result_dispose(&r);
	free(gd);
	free(f);
}

/*
 * With span 3, the snapshot at height 13 (ids[12]) writes the page of
 * heights 10..12: rewrite its record to name a page whose last entry is
 * ids[0], and make that commit the tip.
 */
static void forge_tip_page(const char *arch, char ids[][41])
{
	amber_open_opts oo = AMBER_OPEN_OPTS_INIT;
	amber_archive *a = NULL;
	amber_record r, r9;
	amber_page_ent v[PG_SPAN];
	amber_page pg = { .first = 10, .n = PG_SPAN, .v = v };
	amber_buf enc = AMBER_BUF_INIT, frame = AMBER_BUF_INIT, rec = AMBER_BUF_INIT;
	amber_buf c = AMBER_BUF_INIT;
	char hex[41], *msg, *b64;

	oo.cache_dir = "";
	cr_assert_eq(amber_archive_open_ext(&a, arch, &oo), 0, "%s", amber_error_last());
	pg_record(&r9, a, ids[9]);      /* height 10 names the page of 7..9 */
	pg.prev_height = r9.page_height;
	pg.prev = r9.page;
	for (int i = 0; i < PG_SPAN; i++) {
		amber_record e;
		pg_record(&e, a, ids[9 + i]);
		v[i].time_ns = e.time_ns;
		cr_assert_eq(amber_oid_fromhex(v[i].oid, ids[9 + i]), 0);
		amber_record_dispose(&e);
	}
	cr_assert_eq(amber_oid_fromhex(v[PG_SPAN - 1].oid, ids[0]), 0);
	cr_assert_eq(amber_page_encode(&enc, &pg), 0, "%s", amber_error_last());
	pg_record(&r, a, ids[12]);
	cr_assert_eq(r.page_height, 12);
	cr_assert_eq(amber_codec_encode(&frame, r.page.mac, NULL, AMBER_OBJ_PAGE, enc.data,
					enc.len, 0), 0);
	pg_put(hex, arch, "blob", frame.data, frame.len);
	cr_assert_eq(amber_oid_fromhex(r.page.oid, hex), 0);
	amber_buf_dispose(&frame);
	cr_assert_eq(amber_record_encode(&rec, &r), 0, "%s", amber_error_last());
	uint8_t mac[AMBER_MAC_BYTES];
	cr_assert_eq(amber_codec_encode(&frame, mac, NULL, AMBER_OBJ_RECORD, rec.data, rec.len, 0),
		     0);
	size_t bl = sodium_base64_ENCODED_LEN(frame.len, sodium_base64_VARIANT_ORIGINAL);
	b64 = malloc(bl);
	sodium_bin2base64(b64, bl, frame.data, frame.len, sodium_base64_VARIANT_ORIGINAL);
	char t9[40];
	amber_time_format(t9, r.time_ns, 9);
	msg = xasprintf("amberfs snapshot %s\n\nAmberfs-Time: %s\nAmberfs-Record: %s\n", t9, t9,
			b64);
	cr_assert_eq(amber_commit_build(&c, r.tree, r.parent, r.time_ns / 1000000000, msg), 0);
	pg_put(hex, arch, "commit", c.data, c.len);
	free(git_out(arch, "update-ref", "refs/heads/main", hex));
	free(msg);
	free(b64);
	amber_buf_dispose(&c);
	amber_buf_dispose(&rec);
	amber_buf_dispose(&frame);
	amber_buf_dispose(&enc);
	amber_record_dispose(&r);
	amber_record_dispose(&r9);
	amber_archive_free(a);
}

/*
 * A history written through the library with index pages of 3 snapshots
 * (a stream keeps the span it was started with), crossing midnight: 5
 * snapshots on the first day, 9 on the second, so that both days span page
 * boundaries.  Mounted with an empty cache directory, each day lists
 * exactly the snapshots `amberfs log` walks, every name opens its
 * snapshot, and no time line is written to the cache.
 */
Test(mount, day_directories_list_the_chain_from_index_pages_with_an_empty_cache)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char *cache = pjoin(IT.tmp, "fresh-cache"), ids[PG_SNAPS][41];
	int64_t day0 = (int64_t)1709251200 * 1000000000LL;      /* 2024-03-01T00:00:00Z */
	amber_open_opts oo = AMBER_OPEN_OPTS_INIT;
	amber_archive *a = NULL;

	mkdir_p(src, 0755);
	mkdir_p(cache, 0700);
	amber_init_archive(arch, 1);
	oo.cache_dir = "";
	oo.index_span = PG_SPAN;
	cr_assert_eq(amber_global_init(), 0);
	cr_assert_eq(amber_archive_open_ext(&a, arch, &oo), 0, "%s", amber_error_last());
	for (int k = 0; k < PG_SNAPS; k++) {
		int64_t t = day0 + (int64_t)(k - 5) * 1234567890123LL + k * 7;
		amber_snapshot_opts o = {.version = AMBER_SNAPSHOT_OPTS_VERSION, .stream = "main",
					 .threads = 1, .time_ns = t};
		char *f = pjoin(src, "version"), c[16];

		snprintf(c, sizeof(c), "%d\n", k);
		write_str(f, c);
		free(f);
		cr_assert_eq(amber_snapshot_create(ids[k], NULL, a, src, &o), 0, "snapshot %d: %s",
			     k, amber_error_last());
	}
	amber_archive_free(a);

	snapinfo all[PG_SNAPS];
	size_t n = log_snaps(arch, NULL, all, PG_SNAPS);
	cr_assert_eq(n, PG_SNAPS, "log lists %zu snapshots", n);
	char *mnt = mountpoint("mnt"), *opt = xasprintf("cache_dir=%s", cache);
	const char *extra[] = { "-o", opt, NULL };
	mount_bg(arch, mnt, NULL, extra);
	const char *days[] = { "2024-02-29", "2024-03-01" };
	for (int d = 0; d < 2; d++) {
		char want[PG_SNAPS * 40] = "";
		int count = 0;
		for (int k = 0; k < PG_SNAPS; k++) {       /* log order is newest first */
			snapinfo *s = find_snap(all, n, ids[k]);
			char *rel = snap_rel(s->ns);
			if (!strncmp(rel + strlen("snapshots/"), days[d], 10)) {
				append_line(want, sizeof want, rel + strlen("snapshots/") + 11);
				count++;
				char *p = pjoin(mnt, rel), *v = xget_ok(p, "user.amberfs.snapshot");
				cr_assert_str_eq(v, ids[k], "%s opens another snapshot", rel);
				free(v);
				free(p);
			}
			free(rel);
		}
		cr_assert(count >= PG_SPAN + 2, "day %s has %d snapshots: no page boundary",
			  days[d], count);
		char *dir = xasprintf("%s/snapshots/%s", mnt, days[d]), *got = list_dir(dir);
		cr_assert_str_eq(got, want, "%s lists other snapshots than the chain", dir);
		free(got);
		free(dir);
	}
	char *none = xasprintf("%s/snapshots/2024-03-02", mnt);
	struct stat st;
	cr_assert(stat(none, &st) != 0 && errno == ENOENT, "a day without snapshots exists");
	free(none);
	unmount_ok(mnt);
	run_result r;
	run_cmd(&r, NULL, "find", cache, "-name", "timeline-*", NULL);
	cr_assert_eq(r.out_len, 0, "listing days walked the history into the cache: %s", r.out);
	run_result_dispose(&r);
	/* snapshots/ itself, from a time line built from the pages */
	mount_bg(arch, mnt, NULL, extra);
	char *snaps = pjoin(mnt, "snapshots"), *dl = list_dir(snaps);
	cr_assert_str_eq(dl, "2024-02-29\n2024-03-01\n", "%s lists other days", snaps);
	free(dl);
	free(snaps);
	unmount_ok(mnt);

	/* A forged page (its last entry names another snapshot) under the record
	 * that writes it, made the tip: the day is EIO, never a wrong listing. */
	forge_tip_page(arch, ids);
	char *cache2 = pjoin(IT.tmp, "fresh-cache-2"), *opt2 = xasprintf("cache_dir=%s", cache2);
	const char *extra2[] = { "-o", opt2, NULL };
	mkdir_p(cache2, 0700);
	mount_bg(arch, mnt, NULL, extra2);
	char *day1 = xasprintf("%s/snapshots/%s", mnt, days[1]);
	DIR *dd = opendir(day1);
	int err = 0;
	if (!dd)
		err = errno;
	else {
		errno = 0;
		while (readdir(dd))
			;
		err = errno;
		closedir(dd);
	}
	cr_assert_eq(err, EIO, "listing %s under a forged index page gave errno %d, not EIO",
		     day1, err);
	unmount_ok(mnt);
	free(day1);
	free(opt2);
	free(cache2);
	free(opt);
	free(mnt);
	free(cache);
	free(arch);
	free(src);
}

#define TWIN_FILES 4000

/* dir with n small account files, A0000000.json on (a venue's margin files). */
static void account_files(const char *dir, int n)
{
	mkdir_p(dir, 0755);
	for (int i = 0; i < n; i++) {
		char *f = xasprintf("%s/A%07d.json", dir, i);
		char body[64];
		int len = snprintf(body, sizeof(body), "{\"id\":%d}\n", i);
		write_file(f, body, (size_t)len, 0644);
		free(f);
	}
}

/*
 * diff -r of two snapshots walks two directories side by side, one name in
 * each in turn.  With their listings together over the idle-listing bound,
 * dropping the least recently used one decoded the other directory again at
 * every name: O(n^2), hours for two 40k-entry directories.  The two
 * listings used last stay cached whatever the bound.  (With a node table
 * large enough, names are found among the nodes readdirplus made; a small
 * one, as a huge tree makes it, sends lookups to the listings.)
 */
Test(mount, diff_of_two_directories_over_the_listing_bound_decodes_each_once)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char *dir = pjoin(src, "acc");
	char id1[41], id2[41];

	account_files(dir, TWIN_FILES);
	amber_init_archive(arch, 1);
	amber_snapshot_ok(id1, arch, src, NULL);
	char *changed = xasprintf("%s/A%07d.json", dir, TWIN_FILES / 2);
	write_file(changed, "changed\n", 8, 0644);
	amber_snapshot_ok(id2, arch, src, NULL);

	char *mnt = mountpoint("mnt");
	const char *const opts[] = { "-o", "dir_cache=64K,node_cache=256K", NULL };
	pid_t pid = mount_fg(arch, mnt, pjoin(IT.tmp, "daemon.log"), opts);
	(void)pid;
	char *a = xasprintf("%s/ids/%s", mnt, id1), *b = xasprintf("%s/ids/%s", mnt, id2);
	char *stats = xget_ok(mnt, "user.amberfs.stats");
	long long before = stats_counter(stats, "dirs_decoded");
	cr_assert_eq(stats_counter(stats, "dir_cache_max"), 64 << 10, "%s", stats);
	free(stats);

	run_result r;
	run_opts o = { .timeout = 120 };
	run_cmd(&r, &o, "diff", "-r", a, b, NULL);
	cr_assert_eq(r.status, 1, "diff -r of the two snapshots: exit %d: %s", r.status, r.err);
	char *name = xasprintf("A%07d.json", TWIN_FILES / 2);
	cr_assert(strstr(r.out, name) && strstr(r.out, "changed"),
		  "diff -r does not show the changed file %s: %s", name, r.out);
	free(name);
	run_result_dispose(&r);

	stats = xget_ok(mnt, "user.amberfs.stats");
	long long decoded = stats_counter(stats, "dirs_decoded") - before;
	/* dirs_decoded counts listing objects (a fanned-out directory's buckets,
	   about 500 for each directory here).  A small node table makes lookups
	   go to the listings: linear in the names with both kept (about 9,000
	   here), quadratic when each lookup drops the other (about 2,000,000). */
	cr_log_info("diff -r of 2 x %d names: %lld listing objects decoded", TWIN_FILES, decoded);
	cr_assert(decoded < 4 * TWIN_FILES, "diff -r of two %d-entry directories decoded %lld "
		  "listing objects (the two listings should stay cached): %s",
		  TWIN_FILES, decoded, stats);
	free(stats);
	unmount_ok(mnt);
	free(a);
	free(b);
	free(changed);
	free(mnt);
	free(dir);
	free(arch);
	free(src);
}

/* A plain archive of src with one snapshot, mounted: the snapshot's directory. */
static char *archive_and_mount(const char *src, char **mnt)
{
	char *arch = pjoin(IT.tmp, "archive");
	char id[41];

	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	*mnt = mountpoint("mnt");
	mount_fg(arch, *mnt, pjoin(IT.tmp, "daemon.log"), NULL);
	return latest_dir(*mnt);
}

#define NOOPEN_FILES 40

/* n small files in a new directory src: names and bodies from printf
 * formats of their index. */
static void small_files(const char *src, const char *name_fmt, const char *body_fmt, int n)
{
	mkdir_p(src, 0755);
	for (int i = 0; i < n; i++) {
		char *name = xasprintf(name_fmt, i), *body = xasprintf(body_fmt, i);
		char *f = pjoin(src, name);
		write_file(f, body, strlen(body), 0644);
		free(f);
		free(name);
		free(body);
	}
}

/*
 * A file is opened without a request to the daemon: the first open is
 * answered "not needed" and the kernel opens every file after it by
 * itself, so reading a small file costs one request (its read), not three
 * (open, read, release).  The pages stay cached between opens.
 */
Test(mount, files_open_without_a_request_to_the_daemon)
{
	char *src = pjoin(IT.tmp, "src");

	small_files(src, "f%02d", "file %d\n", NOOPEN_FILES);
	char *mnt, *snap = archive_and_mount(src, &mnt);

	char *stats[3];
	for (int pass = 0; pass < 3; pass++) {
		stats[pass] = xget_ok(mnt, "user.amberfs.stats");
		for (int i = 0; pass < 2 && i < NOOPEN_FILES; i++) {
			char *f = xasprintf("%s/f%02d", snap, i), *body = xasprintf("file %d\n", i);
			assert_file_content(f, body);
			free(f);
			free(body);
		}
	}
	char *before = stats[0], *mid = stats[1], *after = stats[2];
	long long opens = stats_counter(mid, "opens") - stats_counter(before, "opens");
	long long reads = stats_counter(mid, "reads") - stats_counter(before, "reads");
	cr_log_info("%d files read: opens +%lld, reads +%lld", NOOPEN_FILES, opens, reads);
	cr_assert(opens <= 1, "reading %d files asked the daemon %lld opens (at most the first "
		  "should reach it)\nbefore: %s\nafter:  %s", NOOPEN_FILES, opens, before, mid);
	cr_assert(reads >= NOOPEN_FILES, "%d files read with %lld read requests", NOOPEN_FILES,
		  reads);
	cr_assert_eq(stats_counter(after, "reads"), stats_counter(mid, "reads"),
		     "reading the same files again went to the daemon (their pages were "
		     "dropped at close)\nfirst: %s\nagain: %s", mid, after);
	free(before);
	free(mid);
	free(after);
	unmount_ok(mnt);
}

#define SIBLING_FILES 30

/* The file at `mounted` holds exactly the bytes of `source`. */
static void assert_same_bytes(const char *mounted, const char *source)
{
	size_t ml = 0, sl = 0;
	char *m = read_file(mounted, &ml), *s = read_file(source, &sl);

	cr_assert(ml == sl && memcmp(m, s, sl) == 0, "%s: %zu bytes, not the %zu of %s", mounted,
		  ml, sl, source);
	free(m);
	free(s);
}

/*
 * Read files 0 and 1 (names from fmt) of snap, the source's bytes, give
 * the store thread time, and return the stats then; then read files 2 to
 * 9, which must hold the source's bytes too.
 */
static char *read_two_then_eight(const char *mnt, const char *snap, const char *src,
				 const char *fmt)
{
	char *stats = NULL;

	for (int i = 0; i < 10; i++) {
		char *name = xasprintf(fmt, i);
		char *f = pjoin(snap, name), *sf = pjoin(src, name);

		if (i == 2) {
			sleep_s(0.5);   /* the store thread works in the background */
			stats = xget_ok(mnt, "user.amberfs.stats");
		}
		assert_same_bytes(f, sf);
		free(f);
		free(sf);
		free(name);
	}
	return stats;
}

/*
 * A reader of file after file (rsync, cp -r, tar) finds the next small
 * files already in the kernel's page cache: the daemon decoded them and
 * stored them there, so their reads never reach it, and they hold the
 * source's bytes.  A reader that picks files (diff -r) does not set the
 * read-ahead off.
 */
Test(mount, reading_files_in_order_decodes_the_next_ones_ahead)
{
	char *src = pjoin(IT.tmp, "src");
	uint64_t seed = 3;

	mkdir_p(src, 0755);
	for (int i = 0; i < SIBLING_FILES; i++) {
		char *f = xasprintf("%s/f%02d", src, i), body[3000];
		fill_random(body, sizeof(body), &seed);
		write_file(f, body, sizeof(body), 0644);
		free(f);
	}
	char *mnt, *snap = archive_and_mount(src, &mnt);
	run_result r;
	run_opts o = { .timeout = 60 };
	run_cmd(&r, &o, "ls", snap, NULL);      /* the listing, as a copying tool makes it */
	cr_assert_eq(r.status, 0, "ls %s: %s", snap, r.err);
	run_result_dispose(&r);

	/* picked files: each decoded alone */
	char *s0 = xget_ok(mnt, "user.amberfs.stats");
	for (int i = 20; i <= 25; i += 5) {
		char *f = xasprintf("%s/f%02d", snap, i);
		cr_assert_eq(read_through(f, SIZE_MAX), 3000);
		free(f);
	}
	sleep_s(0.3);
	char *s1 = xget_ok(mnt, "user.amberfs.stats");
	long long picked = stats_counter(s1, "chunks_decoded") - stats_counter(s0, "chunks_decoded");
	cr_assert_eq(picked, 2, "reading f20 and f25 decoded %lld objects\nbefore: %s\nafter:  %s",
		     picked, s0, s1);
	cr_assert_eq(stats_counter(s1, "stored"), stats_counter(s0, "stored"),
		     "picked files set the read-ahead off\nbefore: %s\nafter:  %s", s0, s1);

	/* f00 then f01: f02..f09 are stored ahead, and their reads stay in the kernel */
	char *s2 = read_two_then_eight(mnt, snap, src, "f%02d");
	char *s3 = xget_ok(mnt, "user.amberfs.stats");
	long long stored = stats_counter(s2, "stored") - stats_counter(s1, "stored");
	long long reads = stats_counter(s3, "reads") - stats_counter(s2, "reads");
	cr_log_info("f02..f09 after f00 and f01: %lld stored ahead, %lld read requests; %s", stored,
		    reads, s3);
	cr_assert_geq(stored, 8, "the 8 files after f01 were not stored ahead\nbefore: %s\n"
		      "after:  %s", s1, s2);
	cr_assert_eq(reads, 0, "reading the 8 files stored ahead made %lld read requests\n"
		     "before: %s\nafter:  %s", reads, s2, s3);
	free(s0);
	free(s1);
	free(s2);
	free(s3);
	unmount_ok(mnt);
}

#define NAMED_FILES 1100        /* > 1024 entries: stored fanned out, listed by bucket */

/*
 * rsync reads a directory's files in name order, and a large directory
 * lists its entries bucket by bucket: the read-ahead across files follows
 * the name order too.
 */
Test(mount, reading_files_in_name_order_stores_the_next_ones_ahead)
{
	char *src = pjoin(IT.tmp, "src");

	small_files(src, "n%04d", "file %d of many\n", NAMED_FILES);
	char *mnt, *snap = archive_and_mount(src, &mnt);
	char *listing = NULL;
	size_t cap = 0;
	FILE *ls = popen(xasprintf("ls -U %s | head -n 3", snap), "r");
	cr_assert(ls);
	cr_assert(getdelim(&listing, &cap, '\0', ls) > 0);
	pclose(ls);
	cr_log_info("first entries listed: %s", listing);
	cr_assert(strncmp(listing, "n0000\nn0001\nn0002\n", 18) != 0,
		  "the large directory lists in name order: the test needs bucket order");

	char *s0 = read_two_then_eight(mnt, snap, src, "n%04d");
	char *s1 = xget_ok(mnt, "user.amberfs.stats");
	long long reads = stats_counter(s1, "reads") - stats_counter(s0, "reads");
	cr_log_info("n0002..n0009 after n0000 and n0001: %lld read requests; %s", reads, s1);
	cr_assert_eq(reads, 0, "the 8 files after n0001 in name order were not stored ahead: "
		     "%lld read requests\nbefore: %s\nafter:  %s", reads, s0, s1);
	free(listing);
	free(s0);
	free(s1);
	unmount_ok(mnt);
}

#define AHEAD_FILES 3000

/* The mount's node count once the kernel has forgotten what it can
 * (drop_caches; its forgets arrive asynchronously: wait until the count
 * holds still). */
static long long nodes_settled(const char *mnt)
{
	long long last = -1, now = 0;
	int still = 0;

	for (int i = 0; i < 100 && still < 5; i++) {
		int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
		cr_assert(fd >= 0, "drop_caches: %s (the test needs root)", strerror(errno));
		cr_assert_eq(write(fd, "2", 1), 1, "drop_caches: %s", strerror(errno));
		close(fd);
		usleep(20000);
		char *stats = xget_ok(mnt, "user.amberfs.stats");
		now = stats_counter(stats, "nodes");
		free(stats);
		still = now == last ? still + 1 : 0;
		last = now;
	}
	return now;
}

/*
 * A walk gets the next readdir batch of a large directory made while the
 * kernel was taking the last one, and the listing is whole and exact; a
 * batch made ahead that was never asked for gives back the lookups of its
 * entries when the directory is closed (their nodes go once the kernel
 * forgets the rest).
 */
Test(mount, a_walk_gets_its_next_readdir_batch_made_ahead)
{
	char *src = pjoin(IT.tmp, "src");

	mkdir_p(src, 0755);
	for (int i = 0; i < AHEAD_FILES; i++) {
		char *f = xasprintf("%s/entry-%04d", src, i);
		write_file(f, "", 0, 0644);
		free(f);
	}
	char *mnt, *snap = archive_and_mount(src, &mnt);
	char seen[AHEAD_FILES] = {0};
	size_t n = 0;
	char *before = xget_ok(mnt, "user.amberfs.stats");
	DIR *d = opendir(snap);
	struct dirent *de;

	cr_assert(d, "opendir %s: %s", snap, strerror(errno));
	while ((de = readdir(d))) {
		unsigned i;
		char tail;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		cr_assert(sscanf(de->d_name, "entry-%4u%c", &i, &tail) == 1 && i < AHEAD_FILES,
			  "readdir listed a name not in the source: %s", de->d_name);
		cr_assert(!seen[i], "readdir listed %s twice", de->d_name);
		seen[i] = 1;
		n++;
	}
	closedir(d);
	char *after = xget_ok(mnt, "user.amberfs.stats");
	long long ahead = stats_counter(after, "readdir_ahead") -
			  stats_counter(before, "readdir_ahead");
	cr_log_info("%d entries listed; %lld batches answered from ahead", AHEAD_FILES, ahead);
	cr_assert_eq(n, AHEAD_FILES, "readdir listed %zu of %d entries", n, AHEAD_FILES);
	cr_assert(ahead >= 1, "no readdir batch of %d entries was made ahead\nbefore: %s\nafter: %s",
		  AHEAD_FILES, before, after);

	/* the first batch only: the next, made ahead, is never asked for */
	long long base = nodes_settled(mnt);
	d = opendir(snap);
	cr_assert(d && readdir(d), "opendir/readdir %s: %s", snap, strerror(errno));
	closedir(d);
	long long left = nodes_settled(mnt);
	cr_log_info("nodes: %lld before the first batch, %lld once it was forgotten", base, left);
	cr_assert(left <= base + 8, "%lld nodes stayed after the directory was closed and its "
		  "entries forgotten (%lld before): a batch made ahead kept its lookups", left, base);
	free(before);
	free(after);
	unmount_ok(mnt);
}

#define KEPT_FILES 3000

/* find DIR through the mount: exit 0 and one line per name, DIR's included. */
static void find_all(const char *dir, int names)
{
	run_result r;
	run_opts o = { .timeout = 120 };
	int lines = 0;

	run_cmd(&r, &o, "find", dir, NULL);
	cr_assert_eq(r.status, 0, "find %s: exit %d: %s", dir, r.status, r.err);
	for (const char *p = r.out; (p = strchr(p, '\n')); p++)
		lines++;
	cr_assert_eq(lines, names + 1, "find %s printed %d names, not %d", dir, lines, names + 1);
	run_result_dispose(&r);
}

/*
 * A decoded listing is kept by what it lists, not by the kernel's name for
 * it: once the kernel has forgotten a walked directory (drop_caches, or
 * the node trimmer), walking it again decodes nothing, and neither does
 * walking the same directory in another snapshot.  (The listing went with
 * the directory's node before: every walk after a drop_caches decoded the
 * whole directory again.)
 */
Test(mount, a_listing_outlives_the_kernels_names_and_serves_every_snapshot_holding_it)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive");
	char *dir = pjoin(src, "acc"), *other = pjoin(src, "other");
	char id1[41], id2[41];

	account_files(dir, KEPT_FILES);
	write_file(other, "one\n", 4, 0644);
	amber_init_archive(arch, 1);
	amber_snapshot_ok(id1, arch, src, NULL);
	write_file(other, "two\n", 4, 0644);         /* acc is the same in both */
	amber_snapshot_ok(id2, arch, src, NULL);

	char *mnt = mountpoint("mnt");
	const char *const opts[] = { NULL };
	pid_t pid = mount_fg(arch, mnt, pjoin(IT.tmp, "daemon.log"), opts);
	(void)pid;
	char *a = xasprintf("%s/ids/%s/acc", mnt, id1), *b = xasprintf("%s/ids/%s/acc", mnt, id2);

	find_all(a, KEPT_FILES);
	long long walked = nodes_settled(mnt);
	char *s0 = xget_ok(mnt, "user.amberfs.stats");
	cr_assert(stats_counter(s0, "dirs_decoded") > 0, "%s", s0);
	cr_assert(walked < KEPT_FILES / 2, "the kernel kept %lld nodes after drop_caches: the "
		  "test cannot tell a kept listing from a node's", walked);

	find_all(a, KEPT_FILES);                /* again, the kernel's names gone */
	struct stat st;                         /* the other snapshot's root: another listing */
	cr_assert(stat(b, &st) == 0 && S_ISDIR(st.st_mode), "stat %s: %s", b, strerror(errno));
	char *s1 = xget_ok(mnt, "user.amberfs.stats");
	find_all(b, KEPT_FILES);                /* the same directory, the other snapshot */
	char *s2 = xget_ok(mnt, "user.amberfs.stats");
	long long again = stats_counter(s1, "dirs_decoded") - stats_counter(s0, "dirs_decoded") - 1;
	long long other_snap = stats_counter(s2, "dirs_decoded") - stats_counter(s1, "dirs_decoded");
	cr_log_info("listing objects decoded: %lld first, %lld again, %lld in the other snapshot",
		    stats_counter(s0, "dirs_decoded"), again, other_snap);
	cr_assert_eq(again, 0, "walking %s again after drop_caches decoded %lld listing objects",
		     a, again);
	cr_assert_eq(other_snap, 0, "walking the same directory in the other snapshot decoded "
		     "%lld listing objects", other_snap);

	run_result r;
	run_opts o = { .timeout = 120 };
	run_cmd(&r, &o, "diff", "-r", dir, b, NULL);
	cr_assert_eq(r.status, 0, "diff -r %s %s: exit %d: %s%s", dir, b, r.status, r.out, r.err);
	run_result_dispose(&r);
	const char *const id[2] = { id1, id2 }, *const body[2] = { "one\n", "two\n" };
	for (int i = 0; i < 2; i++) {
		char *f = xasprintf("%s/ids/%s/other", mnt, id[i]), *got;
		size_t len;
		int err = read_all(f, &got, &len);
		cr_assert(err == 0 && len == 4 && memcmp(got, body[i], 4) == 0,
			  "%s: errno %d, %zu bytes, not \"%.3s\"", f, err, len, body[i]);
		free(got);
		free(f);
	}
	free(s0);
	free(s1);
	free(s2);
	unmount_ok(mnt);
	free(a);
	free(b);
	free(mnt);
	free(other);
	free(dir);
	free(arch);
	free(src);
}

#define LONG_FILE ((size_t)48 << 20)

/*
 * A long read keeps only a few MiB of decoded chunks: each chunk read
 * through goes once all of its bytes were handed to the kernel (whose
 * page cache has them), so the decoding runs in memory that stays in the
 * processor's caches and the daemon does not grow by the file's size.
 * The bytes are the source's.  (The cache held the whole file before.)
 */
Test(mount, a_long_read_keeps_a_few_mib_of_decoded_chunks)
{
	char *src = pjoin(IT.tmp, "src");

	mkdir_p(src, 0755);
	char *f = pjoin(src, "long");
	write_random_file(f, LONG_FILE, 17, 0);
	char *mnt, *snap = archive_and_mount(src, &mnt);
	char *mf = pjoin(snap, "long");
	char *before = xget_ok(mnt, "user.amberfs.stats");

	assert_same_bytes(mf, f);
	char *after = xget_ok(mnt, "user.amberfs.stats");
	long long cached = stats_counter(after, "chunk_cache_bytes");
	long long grew = stats_counter(after, "rss_bytes") - stats_counter(before, "rss_bytes");
	cr_log_info("after reading %zu MiB: %lld bytes of chunks cached, RSS grew %lld bytes; %s",
		    LONG_FILE >> 20, cached, grew, after);
	cr_assert_leq(cached, (long long)(12 << 20), "reading %zu MiB left %lld bytes of chunks "
		      "in the cache\nbefore: %s\nafter:  %s", LONG_FILE >> 20, cached, before, after);
#if !defined(__SANITIZE_ADDRESS__)     /* ASan's quarantine holds freed buffers */
	cr_assert_lt(grew, (long long)(LONG_FILE / 2), "the daemon grew by %lld bytes reading "
		     "%zu MiB", grew, LONG_FILE >> 20);
#endif
	free(before);
	free(after);
	free(mf);
	free(f);
	unmount_ok(mnt);
}
