/*
 * Integration-test helpers; see helpers.h.
 *
 * Programs are started with fork + execvpe and an argv array built in the
 * parent (no shell, so names with spaces, newlines or odd bytes pass through
 * unharmed).  The environment of the child is built in the parent too, so
 * nothing but async-signal-safe calls happen between fork and exec.
 */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

itest_ctx IT;

/* ------------------------------------------------------------------ */
/* Small utilities                                                     */

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	return s;
}

char *pjoin(const char *a, const char *b)
{
	return xasprintf("%s/%s", a, b);
}

double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_s(double s)
{
	if (s <= 0)
		return;
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int contains_nocase(const char *s, const char *needle)
{
	return strcasestr(s, needle) != NULL;
}

/* A printable rendering of a path (odd bytes as \xNN), malloc'd. */
static char *printable(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(4 * n + 1);
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			out[j++] = (char)c;
		} else {
			snprintf(out + j, 5, "\\x%02x", c);
			j += 4;
		}
	}
	out[j] = '\0';
	return out;
}

/* ------------------------------------------------------------------ */
/* Running programs                                                    */

/* Build envp: environ with the overrides applied ("N=V" sets, "N" unsets). */
static char **build_env(const char *const *over1, const char *const *over2)
{
	size_t n = 0, cap = 16;
	for (char **e = environ; *e; e++)
		cap++;
	for (const char *const *o = over1; o && *o; o++)
		cap++;
	for (const char *const *o = over2; o && *o; o++)
		cap++;
	char **env = calloc(cap, sizeof(*env));
	for (char **e = environ; *e; e++)
		env[n++] = *e;
	const char *const *lists[2] = { over1, over2 };
	for (int l = 0; l < 2; l++) {
		for (const char *const *o = lists[l]; o && *o; o++) {
			const char *eq = strchr(*o, '=');
			size_t klen = eq ? (size_t)(eq - *o) : strlen(*o);
			size_t w = 0;
			for (size_t i = 0; i < n; i++) {
				if (strncmp(env[i], *o, klen) == 0 && env[i][klen] == '=')
					continue;
				env[w++] = env[i];
			}
			n = w;
			if (eq)
				env[n++] = (char *)*o;
		}
	}
	env[n] = NULL;
	return env;
}

static char **build_argv(const char *const *prefix, const char *const argv[])
{
	size_t n = 0, m = 0;
	while (prefix && prefix[n])
		n++;
	while (argv[m])
		m++;
	char **v = calloc(n + m + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = (char *)prefix[i];
	for (size_t i = 0; i < m; i++)
		v[n + i] = (char *)argv[i];
	return v;
}

/* In the child: only async-signal-safe calls. */
static void child_exec(const run_opts *o, char **argv, char **envp, int outfd, int errfd)
{
	setsid();
	const char *in = (o && o->stdin_path) ? o->stdin_path : "/dev/null";
	int infd = open(in, O_RDONLY);
	if (infd < 0)
		_exit(126);
	dup2(infd, 0);
	if (outfd >= 0)
		dup2(outfd, 1);
	if (errfd >= 0)
		dup2(errfd, 2);
	if (o && o->cwd && chdir(o->cwd) != 0)
		_exit(126);
	execvpe(argv[0], argv, envp);
	static const char msg[] = "itest: exec failed\n";
	ssize_t ignored = write(2, msg, sizeof(msg) - 1);
	(void)ignored;
	_exit(127);
}

static int decode_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return -1;
}

int wait_exit(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return decode_status(st);
}

static void buf_append(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
	if (*len + n + 1 > *cap) {
		while (*len + n + 1 > *cap)
			*cap = *cap ? *cap * 2 : 4096;
		*buf = realloc(*buf, *cap);
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0';
}

static int run_env(run_result *r, const run_opts *o, const char *const *base_env,
		   const char *const argv_in[])
{
	memset(r, 0, sizeof(*r));
	r->out = calloc(1, 1);
	r->err = calloc(1, 1);
	size_t ocap = 1, ecap = 1;
	char **argv = build_argv(o ? o->prefix : NULL, argv_in);
	char **envp = build_env(base_env, o ? o->env : NULL);
	int op[2] = { -1, -1 }, ep[2];
	int outfile = -1;
	if (o && o->stdout_path) {
		outfile = open(o->stdout_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		cr_assert(outfile >= 0, "open %s: %s", o->stdout_path, strerror(errno));
	} else {
		cr_assert(pipe2(op, O_CLOEXEC) == 0);
	}
	cr_assert(pipe2(ep, O_CLOEXEC) == 0);
	double start = now_s();
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0)
		child_exec(o, argv, envp, outfile >= 0 ? outfile : op[1], ep[1]);
	if (outfile >= 0)
		close(outfile);
	else
		close(op[1]);
	close(ep[1]);
	double timeout = (o && o->timeout > 0) ? o->timeout : 600;
	struct pollfd pf[2] = { { op[0], POLLIN, 0 }, { ep[0], POLLIN, 0 } };
	int open_fds = (op[0] >= 0) + 1;
	char chunk[65536];
	while (open_fds > 0) {
		double left = timeout - (now_s() - start);
		if (left <= 0 && !r->timed_out) {
			r->timed_out = 1;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
		}
		int pr = poll(pf, 2, r->timed_out ? 1000 : (int)(left * 1000) + 1);
		if (pr < 0 && errno == EINTR)
			continue;
		for (int i = 0; i < 2; i++) {
			if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(pf[i].fd, chunk, sizeof(chunk));
			if (n > 0) {
				if (i == 0)
					buf_append(&r->out, &r->out_len, &ocap, chunk, (size_t)n);
				else
					buf_append(&r->err, &r->err_len, &ecap, chunk, (size_t)n);
			} else if (n == 0 || errno != EINTR) {
				close(pf[i].fd);
				pf[i].fd = -1;
				open_fds--;
			}
		}
	}
	r->status = wait_exit(pid);
	r->seconds = now_s() - start;
	free(argv);
	free(envp);
	return r->status;
}

int run_argv(run_result *r, const run_opts *o, const char *const argv[])
{
	return run_env(r, o, NULL, argv);
}

#define MAX_ARGS 64

static void collect_args(const char **argv, size_t start, const char *arg0, va_list ap)
{
	size_t n = start;
	for (const char *a = arg0; a; a = va_arg(ap, const char *)) {
		cr_assert(n < MAX_ARGS - 1, "too many arguments");
		argv[n++] = a;
	}
	argv[n] = NULL;
}

int run_cmd(run_result *r, const run_opts *o, const char *arg0, ...)
{
	const char *argv[MAX_ARGS];
	va_list ap;
	va_start(ap, arg0);
	collect_args(argv, 0, arg0, ap);
	va_end(ap);
	return run_argv(r, o, argv);
}

void run_result_dispose(run_result *r)
{
	free(r->out);
	free(r->err);
	memset(r, 0, sizeof(*r));
}

static pid_t spawn_env(const run_opts *o, const char *const *base_env, const char *const argv_in[])
{
	char **argv = build_argv(o ? o->prefix : NULL, argv_in);
	char **envp = build_env(base_env, o ? o->env : NULL);
	const char *op = (o && o->stdout_path) ? o->stdout_path : "/dev/null";
	const char *ep = (o && o->stderr_path) ? o->stderr_path : "/dev/null";
	int outfd = open(op, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int errfd = open(ep, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert(outfd >= 0 && errfd >= 0, "open output files: %s", strerror(errno));
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0)
		child_exec(o, argv, envp, outfd, errfd);
	close(outfd);
	close(errfd);
	free(argv);
	free(envp);
	return pid;
}

pid_t spawn_bg(const run_opts *o, const char *const argv[])
{
	return spawn_env(o, NULL, argv);
}

/* ------------------------------------------------------------------ */
/* Context and amberfs                                                 */

static char *amber_env_strs[4];

static const char *const *amber_base_env(void)
{
	static const char *env[5];
	free(amber_env_strs[0]);
	free(amber_env_strs[1]);
	free(amber_env_strs[2]);
	amber_env_strs[0] = xasprintf("AMBERFS_PASSPHRASE_FILE=%s", IT.passfile);
	amber_env_strs[1] = xasprintf("AMBERFS_CACHE_DIR=%s", IT.cache);
	amber_env_strs[2] = xasprintf("HOME=%s", IT.home);
	env[0] = amber_env_strs[0];
	env[1] = amber_env_strs[1];
	env[2] = amber_env_strs[2];
	env[3] = NULL;
	return env;
}

void itest_setup(void)
{
	memset(&IT, 0, sizeof(IT));
	const char *bin = getenv("AMBERFS_BIN");
	cr_assert(bin && *bin,
		  "AMBERFS_BIN is not set: integration tests need the path of the amberfs binary "
		  "(meson test sets it); refusing to skip");
	cr_assert(access(bin, X_OK) == 0, "AMBERFS_BIN=%s is not an executable file: %s", bin,
		  strerror(errno));
	IT.bin = strdup(bin);
	IT.tmp = make_temp_dir();
	IT.passfile = pjoin(IT.tmp, "passphrase");
	write_passfile(IT.passfile, IT_PASSPHRASE);
	IT.cache = pjoin(IT.tmp, "cache");
	mkdir_p(IT.cache, 0700);
	IT.home = pjoin(IT.tmp, "home");
	mkdir_p(IT.home, 0700);
}

void itest_teardown(void)
{
	fg_unmount();
	if (IT.tmp)
		rm_rf(IT.tmp);
	free(IT.tmp);
	free(IT.bin);
	free(IT.passfile);
	free(IT.cache);
	free(IT.home);
	memset(&IT, 0, sizeof(IT));
}

static const char **amber_argv(const char *const args[])
{
	size_t n = 0;
	while (args[n])
		n++;
	const char **argv = calloc(n + 3, sizeof(*argv));
	cr_assert(IT.bin, "itest_setup() was not run");
	argv[0] = IT.bin;
	argv[1] = "--kdf-profile=test"; /* cheap key slots; see amber_a() */
	for (size_t i = 0; i < n; i++)
		argv[i + 2] = args[i];
	return argv;
}

int amber_a(run_result *r, const run_opts *o, const char *const args[])
{
	const char **argv = amber_argv(args);
	int st = run_env(r, o, amber_base_env(), argv);
	free(argv);
	return st;
}

pid_t amber_spawn(const run_opts *o, const char *const args[])
{
	const char **argv = amber_argv(args);
	pid_t pid = spawn_env(o, amber_base_env(), argv);
	free(argv);
	return pid;
}

int amber_o(run_result *r, const run_opts *o, const char *arg0, ...)
{
	const char *args[MAX_ARGS];
	va_list ap;
	va_start(ap, arg0);
	collect_args(args, 0, arg0, ap);
	va_end(ap);
	return amber_a(r, o, args);
}

int amber(run_result *r, const char *arg0, ...)
{
	const char *args[MAX_ARGS];
	va_list ap;
	va_start(ap, arg0);
	collect_args(args, 0, arg0, ap);
	va_end(ap);
	return amber_a(r, NULL, args);
}

void amber_init_archive(const char *archive, int plain)
{
	run_result r;
	if (plain)
		amber(&r, "init", archive, "--plain", NULL);
	else
		amber(&r, "init", archive, NULL);
	assert_ok(&r, "amberfs init");
	run_result_dispose(&r);
}

/* ------------------------------------------------------------------ */
/* A foreground mount                                                  */

static char *fg_mnt;	/* the mount point of fg_mount(), NULL if none */
static pid_t fg_pid;	/* its daemon, 0 if none */

int is_mount_point(const char *mnt)
{
	char *parent = xasprintf("%s/..", mnt);
	struct stat a, b;
	int yes = stat(mnt, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;

	free(parent);
	return yes;
}

int fg_alive(void)
{
	int st;

	return fg_pid > 0 && waitpid(fg_pid, &st, WNOHANG) == 0;
}

const char *fg_mount(const char *archive)
{
	char *log = pjoin(IT.tmp, "daemon.log");
	const char *args[] = { "mount", archive, NULL, "-f", NULL };
	run_opts o = { .stderr_path = log };

	cr_assert_null(fg_mnt, "fg_mount: one mount a test");
	fg_mnt = pjoin(IT.tmp, "mnt");
	mkdir_p(fg_mnt, 0755);
	args[2] = fg_mnt;
	fg_pid = amber_spawn(&o, args);
	double end = now_s() + 30;
	while (!is_mount_point(fg_mnt)) {
		cr_assert(fg_alive(), "amberfs mount -f exited before mounting: %s",
			  read_file(log, NULL));
		cr_assert(now_s() < end, "%s not mounted after 30 s", fg_mnt);
		sleep_s(0.02);
	}
	free(log);
	return fg_mnt;
}

static void quiet(const char *a0, const char *a1, const char *a2)
{
	run_opts o = { .timeout = 30 };
	run_result r;

	run_cmd(&r, &o, a0, a1, a2, NULL);
	run_result_dispose(&r);
}

void fg_unmount(void)
{
	if (fg_mnt && is_mount_point(fg_mnt))
		quiet("fusermount3", "-u", fg_mnt);
	if (fg_mnt && is_mount_point(fg_mnt))
		quiet("umount", "-l", fg_mnt);
	if (fg_pid > 0) {
		kill(fg_pid, SIGTERM);
		for (int i = 0; i < 250 && fg_alive(); i++)
			sleep_s(0.02);
		if (fg_alive()) {
			kill(fg_pid, SIGKILL);
			waitpid(fg_pid, NULL, 0);
		}
	}
	free(fg_mnt);
	fg_mnt = NULL;
	fg_pid = 0;
}

static int is_hex40(const char *s, size_t len)
{
	if (len != 40)
		return 0;
	for (size_t i = 0; i < 40; i++) {
		if (!strchr("0123456789abcdef", s[i]))
			return 0;
	}
	return 1;
}

void amber_snapshot_ok(char id[41], const char *archive, const char *src, const char *const *extra)
{
	const char *args[MAX_ARGS] = { "snapshot", archive, src };
	size_t n = 3;
	for (const char *const *e = extra; e && *e; e++)
		args[n++] = *e;
	args[n] = NULL;
	run_result r;
	amber_a(&r, NULL, args);
	assert_ok(&r, "amberfs snapshot");
	size_t len = r.out_len;
	while (len > 0 && (r.out[len - 1] == '\n' || r.out[len - 1] == ' '))
		len--;
	cr_assert(is_hex40(r.out, len), "snapshot: stdout is not one 40-hex commit id: '%s'", r.out);
	memcpy(id, r.out, 40);
	id[40] = '\0';
	run_result_dispose(&r);
}

void assert_fsck(const char *repo)
{
	run_result r;
	char *gd = xasprintf("--git-dir=%s", repo);
	run_cmd(&r, NULL, "git", gd, "fsck", "--full", "--no-progress", NULL);
	cr_assert_eq(r.status, 0, "git fsck --full failed on %s (exit %d):\n%s\n%s", repo,
		     r.status, r.out, r.err);
	free(gd);
	run_result_dispose(&r);
}

/* ------------------------------------------------------------------ */
/* Assertions                                                          */

void assert_one_error_line(const run_result *r, const char *what)
{
	cr_assert(r->err_len > 10 && strncmp(r->err, "amberfs: ", 9) == 0,
		  "%s: stderr should be one line starting 'amberfs: ', got: '%s'", what, r->err);
	const char *nl = memchr(r->err, '\n', r->err_len);
	cr_assert(nl && (size_t)(nl - r->err) == r->err_len - 1,
		  "%s: stderr should be exactly one line, got: '%s'", what, r->err);
	cr_assert(strlen(r->err) == r->err_len, "%s: stderr contains a NUL byte", what);
	cr_assert_eq(r->out_len, 0, "%s: expected nothing on stdout, got: '%.200s'", what, r->out);
}

void assert_not_contains(const void *hay, size_t len, const char *needle, const char *what)
{
	cr_assert(memmem(hay, len, needle, strlen(needle)) == NULL, "%s: found '%s' in output",
		  what, needle);
}

/* ------------------------------------------------------------------ */
/* Files and directories                                               */

char *make_temp_dir(void)
{
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	char *tmpl = xasprintf("%s/amberfs-itest-XXXXXX", base);
	cr_assert(mkdtemp(tmpl) != NULL, "mkdtemp %s: %s", tmpl, strerror(errno));
	return tmpl;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	if (remove(path) != 0 && errno != ENOENT)
		fprintf(stderr, "itest: cannot remove %s: %s\n", path, strerror(errno));
	return 0;
}

int rm_rf(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : -1;
	if (nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS) == 0 && lstat(path, &st) != 0 &&
	    errno == ENOENT)
		return 0;
	/* a tree whose paths pass PATH_MAX (a hostile archive's, restored):
	 * nftw stops there; GNU rm walks it by descriptors */
	run_result r;
	run_opts o = {.timeout = 120};
	int rc = run_cmd(&r, &o, "rm", "-rf", "--", path, NULL) == 0 && r.status == 0 ? 0 : -1;
	run_result_dispose(&r);
	return rc;
}

void mkdir_p(const char *path, mode_t mode)
{
	char *p = strdup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) != 0)
			cr_assert(errno == EEXIST, "mkdir %s: %s", p, strerror(errno));
		*s = '/';
	}
	if (mkdir(p, mode) != 0)
		cr_assert(errno == EEXIST, "mkdir %s: %s", p, strerror(errno));
	free(p);
}

void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	cr_assert(fd >= 0, "create %s: %s", path, strerror(errno));
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		cr_assert(n > 0, "write %s: %s", path, strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	cr_assert(close(fd) == 0);
}

void write_str(const char *path, const char *s)
{
	write_file(path, s, strlen(s), 0644);
}

char *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	for (;;) {
		if (n == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
		}
		ssize_t k = read(fd, buf + n, cap - n);
		cr_assert(k >= 0, "read %s: %s", path, strerror(errno));
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

void fill_random(void *buf, size_t len, uint64_t *s)
{
	uint8_t *p = buf;
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
	while (len >= 8) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		uint64_t v = x * 0x2545f4914f6cdd1dull;
		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	if (len) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		uint64_t v = x * 0x2545f4914f6cdd1dull;
		memcpy(p, &v, len);
	}
	*s = x;
}

void write_random_file(const char *path, uint64_t size, uint64_t seed, int append)
{
	int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
	int fd = open(path, flags, 0644);
	cr_assert(fd >= 0, "create %s: %s", path, strerror(errno));
	size_t bsz = (size_t)4 << 20;
	uint8_t *buf = malloc(bsz);
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	while (size > 0) {
		size_t n = size < bsz ? (size_t)size : bsz;
		fill_random(buf, n, &s);
		size_t off = 0;
		while (off < n) {
			ssize_t w = write(fd, buf + off, n - off);
			cr_assert(w > 0, "write %s: %s", path, strerror(errno));
			off += (size_t)w;
		}
		size -= n;
	}
	free(buf);
	cr_assert(close(fd) == 0);
}

void write_passfile(const char *path, const char *pass)
{
	write_file(path, pass, strlen(pass), 0600);
	cr_assert(chmod(path, 0600) == 0);
}

/* Fingerprints: nftw has no payload argument, so a file-scope collector. */
static char **fp_lines;
static size_t fp_n, fp_cap;
static size_t fp_rootlen;

static int fp_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)flag;
	(void)f;
	if (fp_n == fp_cap) {
		fp_cap = fp_cap ? 2 * fp_cap : 256;
		fp_lines = realloc(fp_lines, fp_cap * sizeof(*fp_lines));
	}
	char *rel = printable(path + fp_rootlen);
	fp_lines[fp_n++] = xasprintf("%s %07o %lld %lld.%09ld\n", rel, (unsigned)st->st_mode,
				     (long long)st->st_size, (long long)st->st_mtim.tv_sec,
				     st->st_mtim.tv_nsec);
	free(rel);
	return 0;
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *dir_fingerprint(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return strdup("");
	fp_lines = NULL;
	fp_n = fp_cap = 0;
	fp_rootlen = strlen(path);
	cr_assert(nftw(path, fp_cb, 32, FTW_PHYS) == 0, "walk %s: %s", path, strerror(errno));
	qsort(fp_lines, fp_n, sizeof(*fp_lines), cmp_strp);
	size_t total = 1;
	for (size_t i = 0; i < fp_n; i++)
		total += strlen(fp_lines[i]);
	char *out = malloc(total);
	out[0] = '\0';
	char *w = out;
	for (size_t i = 0; i < fp_n; i++) {
		size_t l = strlen(fp_lines[i]);
		memcpy(w, fp_lines[i], l + 1);
		w += l;
		free(fp_lines[i]);
	}
	free(fp_lines);
	fp_lines = NULL;
	return out;
}

uint64_t du_bytes(const char *path)
{
	run_result r;
	run_cmd(&r, NULL, "du", "-sb", path, NULL);
	cr_assert_eq(r.status, 0, "du -sb %s: %s", path, r.err);
	char *end = NULL;
	unsigned long long v = strtoull(r.out, &end, 10);
	cr_assert(end != r.out, "du -sb %s: unexpected output '%s'", path, r.out);
	run_result_dispose(&r);
	return v;
}

static int file_contains(const char *path, const void *needle, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	size_t bsz = (size_t)1 << 20;
	char *buf = malloc(bsz + len);
	size_t keep = 0;
	int found = 0;
	for (;;) {
		ssize_t n = read(fd, buf + keep, bsz);
		if (n <= 0)
			break;
		size_t have = keep + (size_t)n;
		if (memmem(buf, have, needle, len)) {
			found = 1;
			break;
		}
		keep = have < len - 1 ? have : len - 1;
		memmove(buf, buf + have - keep, keep);
	}
	free(buf);
	close(fd);
	return found;
}

static const void *tc_needle;
static size_t tc_len;
static int tc_found;

static int tc_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)flag;
	(void)f;
	if (S_ISREG(st->st_mode) && file_contains(path, tc_needle, tc_len)) {
		tc_found = 1;
		return 1;
	}
	return 0;
}

int tree_contains_bytes(const char *path, const void *needle, size_t len)
{
	tc_needle = needle;
	tc_len = len;
	tc_found = 0;
	nftw(path, tc_cb, 32, FTW_PHYS);
	return tc_found;
}

/* ------------------------------------------------------------------ */
/* The awkward tree                                                    */

static char *awk_root;

static char *ap(const char *rel)
{
	return pjoin(awk_root, rel);
}

static void awk_dir(const char *rel)
{
	char *p = ap(rel);
	mkdir_p(p, 0755);
	free(p);
}

static void awk_file(const char *rel, const void *data, size_t len)
{
	char *p = ap(rel);
	write_file(p, data, len, 0644);
	free(p);
}

static void awk_str(const char *rel, const char *s)
{
	awk_file(rel, s, strlen(s));
}

static void awk_random(const char *rel, uint64_t size, uint64_t seed)
{
	char *p = ap(rel);
	write_random_file(p, size, seed, 0);
	free(p);
}

static void awk_symlink(const char *target, const char *rel)
{
	char *p = ap(rel);
	cr_assert(symlink(target, p) == 0, "symlink %s: %s", p, strerror(errno));
	free(p);
}

static void awk_link(const char *from, const char *to)
{
	char *a = ap(from), *b = ap(to);
	cr_assert(link(a, b) == 0, "link %s %s: %s", a, b, strerror(errno));
	free(a);
	free(b);
}

static void awk_chown(const char *rel, uid_t u, gid_t g)
{
	char *p = ap(rel);
	cr_assert(lchown(p, u, g) == 0, "lchown %s: %s", p, strerror(errno));
	free(p);
}

static void awk_chmod(const char *rel, mode_t m)
{
	char *p = ap(rel);
	cr_assert(chmod(p, m) == 0, "chmod %s: %s", p, strerror(errno));
	free(p);
}

static void awk_xattr(const char *rel, const char *name, const void *val, size_t len)
{
	char *p = ap(rel);
	cr_assert(lsetxattr(p, name, val, len, 0) == 0,
		  "setxattr %s on %s: %s (does the file system support user xattrs?)", name, p,
		  strerror(errno));
	free(p);
}

static void awk_mtime(const char *rel, int64_t sec, long nsec)
{
	char *p = ap(rel);
	struct timespec ts[2] = { { (time_t)sec, nsec }, { (time_t)sec, nsec } };
	cr_assert(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW) == 0, "utimensat %s: %s", p,
		  strerror(errno));
	free(p);
}

static void awk_names(void)
{
	awk_str("name with spaces.txt", "spaces in the name\n");
	awk_str("new\nline", "a newline in the name\n");
	awk_str("\xff\xfe invalid utf8", "invalid UTF-8 in the name\n");
	char longname[256];
	memset(longname, 'L', 255);
	memcpy(longname, "long-", 5);
	longname[255] = '\0';
	awk_str(longname, "a 255-byte name\n");
	awk_str("-dash", "leading dash\n");
	awk_str(".hidden", "dot file\n");
	awk_str("back\\slash", "backslash\n");
	/* Names a naive layout would confuse with its own git tree entries. */
	awk_str("m", "a file named m\n");
	awk_str("i", "a file named i\n");
	awk_str("c00000000", "a file named like a chunk\n");
	awk_dir(".git");
	awk_str(".git/config", "[core]\n\tbare = true\n");
	awk_file("empty", "", 0);
	awk_dir("empty dir");
}

static void awk_sizes(void)
{
	static const struct {
		const char *name;
		uint64_t size;
	} sizes[] = {
		{ "sizes/128k-1", (128u << 10) - 1 }, { "sizes/128k", 128u << 10 },
		{ "sizes/128k+1", (128u << 10) + 1 }, { "sizes/512k", 512u << 10 },
		{ "sizes/2m-1", (2u << 20) - 1 },     { "sizes/2m", 2u << 20 },
		{ "sizes/2m+1", (2u << 20) + 1 },
	};
	awk_dir("sizes");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		awk_random(sizes[i].name, sizes[i].size, 100 + i);
	awk_file("sizes/empty too", "", 0);
	awk_dir("big");
	awk_random(AWK_BIG, 5u << 20, 7);
	size_t clen = 3u << 20;
	char *c = malloc(clen);
	size_t off = 0;
	for (unsigned line = 0; off < clen; line++) {
		char tmp[128];
		int n = snprintf(tmp, sizeof(tmp), "%08u,BTC-USD,bid,%u.%02u,%u\n", line,
				 60000 + line % 97, line % 100, 1 + line % 13);
		size_t k = (size_t)n < clen - off ? (size_t)n : clen - off;
		memcpy(c + off, tmp, k);
		off += k;
	}
	awk_file("big/compressible 3m", c, clen);
	free(c);
}

static void awk_links_and_odd_dir(void)
{
	awk_dir("links");
	awk_symlink("../sizes/512k", "links/relative");
	awk_symlink("/etc/hostname", "links/absolute");
	awk_symlink("no/such/target", "links/dangling");
	awk_symlink("target with\nnewline \xff", "links/odd target");
	awk_dir(AWK_SUBDIR "/hl");
	awk_dir(AWK_SUBDIR "/hl2");
	awk_dir(AWK_SUBDIR "/nested/deeper");
	awk_str(AWK_SUBDIR "/hl/one", "hardlinked content\n");
	awk_link(AWK_SUBDIR "/hl/one", AWK_SUBDIR "/hl/two");
	awk_link(AWK_SUBDIR "/hl/one", AWK_SUBDIR "/hl2/three");
	awk_str(AWK_SUBDIR "/file with spaces", "in the odd dir\n");
	awk_file(AWK_SUBDIR "/nested/deeper/empty", "", 0);
	awk_symlink("../hl/one", AWK_SUBDIR "/nested/to one");
	awk_random(AWK_SUBDIR "/nested/300k", 300u << 10, 11);
}

static void awk_specials(void)
{
	awk_dir("modes/sticky");
	awk_dir("modes/setgid dir");
	awk_str("modes/setuid", "#!/bin/sh\necho setuid\n");
	awk_str("modes/setgid", "#!/bin/sh\necho setgid\n");
	awk_str("modes/none", "mode 0000\n");
	awk_str("modes/private", "mode 0600\n");
	awk_str("modes/sticky/inside", "in a sticky dir\n");
	awk_dir("special");
	char *fifo = ap("special/fifo");
	cr_assert(mkfifo(fifo, 0640) == 0, "mkfifo %s: %s", fifo, strerror(errno));
	free(fifo);
	char *chr = ap("special/null-like");
	int rc = mknod(chr, S_IFCHR | 0620, makedev(1, 3));
	cr_assert(rc == 0, "mknod %s (character device) failed: %s -- these tests must run as root "
		  "(CI does); not skipping", chr, strerror(errno));
	free(chr);
	char *blk = ap("special/block");
	cr_assert(mknod(blk, S_IFBLK | 0600, makedev(7, 200)) == 0, "mknod %s: %s", blk,
		  strerror(errno));
	free(blk);
	awk_dir("owned/sub");
	awk_str("owned/file", "owned by 1234:5678\n");
	/* chown before chmod: chown clears setuid/setgid bits. */
	awk_chown("owned", 1234, 5678);
	awk_chown("owned/file", 1234, 5678);
	awk_chown("owned/sub", 4321, 8765);
	awk_chown("links/relative", 1234, 5678);
	awk_chown("special/fifo", 1234, 5678);
	awk_chown(AWK_SETUID, 1234, 5678);
	awk_chmod(AWK_SETUID, 04755);
	awk_chmod(AWK_SETGID, 02755);
	awk_chmod(AWK_STICKY, 01777);
	awk_chmod("modes/setgid dir", 02775);
	awk_chmod("modes/none", 0000);
	awk_chmod("modes/private", 0600);
}

static void awk_xattrs(void)
{
	static const unsigned char bin[] = { 0x00, 0xff, 0x01, '\n', 0x80, 0x7f, 0x00, 'z' };
	awk_dir("xattr/dir");
	awk_str("xattr/file", "has xattrs\n");
	awk_xattr("xattr/file", "user.binary", bin, sizeof(bin));
	awk_xattr("xattr/file", "user.empty", "", 0);
	awk_xattr("xattr/file", "user.text", "plain text value", 16);
	unsigned char big[1000];
	uint64_t s = 42;
	fill_random(big, sizeof(big), &s);
	awk_xattr("xattr/dir", "user.dirattr", big, sizeof(big));
	awk_xattr("xattr", "user.on parent dir", bin, sizeof(bin));
	awk_xattr(AWK_BIG, "user.on big file", bin, 3);
	awk_xattr(AWK_SUBDIR "/hl/one", "user.hardlinked", "x", 1);
}

static void awk_deep_and_wide(void)
{
	char path[256] = "deep";
	for (int i = 1; i <= 20; i++) {
		size_t l = strlen(path);
		snprintf(path + l, sizeof(path) - l, "/d%02d", i);
	}
	awk_dir(path);
	char *leaf = xasprintf("%s/leaf.txt", path);
	awk_str(leaf, "twenty levels down\n");
	free(leaf);
	awk_dir("wide");
	for (int i = 0; i < 1500; i++) {
		char name[32], body[32];
		snprintf(name, sizeof(name), "wide/f%04d", i);
		snprintf(body, sizeof(body), "entry %d\n", i);
		awk_str(name, body);
	}
}

/* ns mtimes on everything, children before parents (FTW_DEPTH). */
static int mtime_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	uint64_t h = 1469598103934665603ull;
	for (const char *p = path + strlen(awk_root); *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	struct timespec ts[2];
	ts[0].tv_sec = ts[1].tv_sec = (time_t)(1300000000 + h % 400000000);
	ts[0].tv_nsec = ts[1].tv_nsec = (long)((h >> 20) % 1000000000);
	cr_assert(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) == 0, "utimensat %s: %s",
		  path, strerror(errno));
	return 0;
}

void make_awkward_tree(const char *root)
{
	awk_root = (char *)root;
	mkdir_p(root, 0755);
	awk_names();
	awk_sizes();
	awk_links_and_odd_dir();
	awk_specials();
	awk_xattrs();
	awk_deep_and_wide();
	awk_dir("times/old dir");
	awk_str("times/pre-1970", "from 1960\n");
	awk_str("times/far-future", "from 2100\n");
	awk_symlink("pre-1970", "times/old link");
	cr_assert(nftw(root, mtime_cb, 32, FTW_DEPTH | FTW_PHYS) == 0);
	/* After the pass: none of these creates or removes entries. */
	awk_mtime("times/pre-1970", -315619200, 123456789);          /* 1960-01-01 */
	awk_mtime("times/far-future", 4102444800LL, 987654321);      /* 2100-01-01 */
	awk_mtime("times/old link", -1, 999999999);                   /* 1969-12-31 */
	awk_mtime("times/old dir", -86400LL * 365, 1);
	awk_mtime("times", 4102444800LL + 1, 500000000);
	awk_root = NULL;
}

/* ------------------------------------------------------------------ */
/* Tree comparison                                                     */

typedef struct hl_pair {
	ino_t a, b;
} hl_pair;

typedef struct td_ctx {
	hl_pair *pairs;
	size_t n, cap;
	int flags;
} td_ctx;

static int td_names(const char *dir, char ***out, size_t *count)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	size_t n = 0, cap = 64;
	char **v = malloc(cap * sizeof(*v));
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof(*v));
		}
		v[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(v, n, sizeof(*v), cmp_strp);
	*out = v;
	*count = n;
	return 0;
}

static void free_names(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static char *td_fail(const char *rel, const char *fmt, ...) ITEST_PRINTF(2, 3);

static char *td_fail(const char *rel, const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap2;
	va_start(ap2, fmt);
	if (vasprintf(&msg, fmt, ap2) < 0)
		abort();
	va_end(ap2);
	char *pr = printable(*rel ? rel : "/");
	char *out = xasprintf("%s: %s", pr, msg);
	free(pr);
	free(msg);
	return out;
}

static char *td_content(const char *pa, const char *pb, const char *rel)
{
	int fa = open(pa, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int fb = open(pb, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	char *res = NULL;
	if (fa < 0 || fb < 0) {
		res = td_fail(rel, "cannot open for comparison: %s", strerror(errno));
		goto done;
	}
	size_t bsz = (size_t)1 << 20;
	char *ba = malloc(bsz), *bb = malloc(bsz);
	uint64_t off = 0;
	for (;;) {
		ssize_t na = read(fa, ba, bsz), nb = read(fb, bb, bsz);
		if (na < 0 || nb < 0) {
			res = td_fail(rel, "read error: %s", strerror(errno));
			break;
		}
		if (na != nb || memcmp(ba, bb, (size_t)na) != 0) {
			size_t i = 0, m = (size_t)(na < nb ? na : nb);
			while (i < m && ba[i] == bb[i])
				i++;
			res = td_fail(rel, "contents differ at byte %llu", (unsigned long long)(off + i));
			break;
		}
		if (na == 0)
			break;
		off += (uint64_t)na;
	}
	free(ba);
	free(bb);
done:
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	return res;
}

static int xattr_names(const char *path, char ***out, size_t *count)
{
	ssize_t len = llistxattr(path, NULL, 0);
	if (len < 0)
		return -1;
	char *buf = malloc((size_t)len + 1);
	len = llistxattr(path, buf, (size_t)len);
	if (len < 0) {
		free(buf);
		return -1;
	}
	size_t n = 0;
	char **v = malloc(((size_t)len + 1) * sizeof(*v));
	for (ssize_t i = 0; i < len; i += (ssize_t)strlen(buf + i) + 1) {
		if (strcmp(buf + i, "security.selinux") != 0)
			v[n++] = strdup(buf + i);
	}
	free(buf);
	qsort(v, n, sizeof(*v), cmp_strp);
	*out = v;
	*count = n;
	return 0;
}

static char *xattr_value(const char *path, const char *name, ssize_t *len)
{
	*len = lgetxattr(path, name, NULL, 0);
	if (*len < 0)
		return NULL;
	char *v = malloc((size_t)*len + 1);
	*len = lgetxattr(path, name, v, (size_t)*len);
	return v;
}

static char *td_xattrs(const char *pa, const char *pb, const char *rel)
{
	char **na = NULL, **nb = NULL;
	size_t ca = 0, cb = 0;
	char *res = NULL;
	if (xattr_names(pa, &na, &ca) != 0 || xattr_names(pb, &nb, &cb) != 0)
		return td_fail(rel, "listxattr failed: %s", strerror(errno));
	for (size_t i = 0; !res && i < (ca > cb ? ca : cb); i++) {
		if (i >= ca || i >= cb || strcmp(na[i], nb[i]) != 0) {
			res = td_fail(rel, "xattr names differ: '%s' vs '%s'", i < ca ? na[i] : "(none)",
				      i < cb ? nb[i] : "(none)");
			break;
		}
		ssize_t la, lb;
		char *va = xattr_value(pa, na[i], &la), *vb = xattr_value(pb, nb[i], &lb);
		if (!va || !vb || la != lb || memcmp(va, vb, (size_t)la) != 0)
			res = td_fail(rel, "xattr %s differs (%zd vs %zd bytes)", na[i], la, lb);
		free(va);
		free(vb);
	}
	free_names(na, ca);
	free_names(nb, cb);
	return res;
}

static char *td_hardlink(td_ctx *c, const struct stat *a, const struct stat *b, const char *rel)
{
	if (a->st_nlink != b->st_nlink)
		return td_fail(rel, "link count %lu vs %lu", (unsigned long)a->st_nlink,
			       (unsigned long)b->st_nlink);
	if (a->st_nlink <= 1)
		return NULL;
	for (size_t i = 0; i < c->n; i++) {
		if (c->pairs[i].a == a->st_ino || c->pairs[i].b == b->st_ino) {
			if (c->pairs[i].a != a->st_ino || c->pairs[i].b != b->st_ino)
				return td_fail(rel, "hardlink groups differ");
			return NULL;
		}
	}
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 16;
		c->pairs = realloc(c->pairs, c->cap * sizeof(*c->pairs));
	}
	c->pairs[c->n++] = (hl_pair){ a->st_ino, b->st_ino };
	return NULL;
}

static char *td_meta(const char *pa, const char *pb, const struct stat *a, const struct stat *b,
		     const char *rel)
{
	if ((a->st_mode & 07777) != (b->st_mode & 07777))
		return td_fail(rel, "mode %04o vs %04o", (unsigned)(a->st_mode & 07777),
			       (unsigned)(b->st_mode & 07777));
	if (a->st_uid != b->st_uid || a->st_gid != b->st_gid)
		return td_fail(rel, "owner %u:%u vs %u:%u", (unsigned)a->st_uid, (unsigned)a->st_gid,
			       (unsigned)b->st_uid, (unsigned)b->st_gid);
	if (!S_ISDIR(a->st_mode) && a->st_size != b->st_size)
		return td_fail(rel, "size %lld vs %lld", (long long)a->st_size, (long long)b->st_size);
	if (a->st_mtim.tv_sec != b->st_mtim.tv_sec || a->st_mtim.tv_nsec != b->st_mtim.tv_nsec)
		return td_fail(rel, "mtime %lld.%09ld vs %lld.%09ld", (long long)a->st_mtim.tv_sec,
			       a->st_mtim.tv_nsec, (long long)b->st_mtim.tv_sec, b->st_mtim.tv_nsec);
	if ((S_ISCHR(a->st_mode) || S_ISBLK(a->st_mode)) && a->st_rdev != b->st_rdev)
		return td_fail(rel, "device %u:%u vs %u:%u", major(a->st_rdev), minor(a->st_rdev),
			       major(b->st_rdev), minor(b->st_rdev));
	if (!S_ISLNK(a->st_mode))
		return td_xattrs(pa, pb, rel);
	return NULL;
}

static char *td_symlink(const char *pa, const char *pb, const char *rel)
{
	char ta[4097], tb[4097];
	ssize_t la = readlink(pa, ta, sizeof(ta) - 1), lb = readlink(pb, tb, sizeof(tb) - 1);
	if (la < 0 || lb < 0)
		return td_fail(rel, "readlink: %s", strerror(errno));
	if (la != lb || memcmp(ta, tb, (size_t)la) != 0) {
		ta[la] = tb[lb] = '\0';
		char *x = printable(ta), *y = printable(tb);
		char *r = td_fail(rel, "symlink target '%s' vs '%s'", x, y);
		free(x);
		free(y);
		return r;
	}
	return NULL;
}

static char *td_entry(td_ctx *c, const char *pa, const char *pb, const char *rel, int is_root);

static char *td_dir(td_ctx *c, const char *pa, const char *pb, const char *rel)
{
	char **na = NULL, **nb = NULL;
	size_t ca = 0, cb = 0;
	if (td_names(pa, &na, &ca) != 0 || td_names(pb, &nb, &cb) != 0)
		return td_fail(rel, "cannot list directory: %s", strerror(errno));
	char *res = NULL;
	for (size_t i = 0; !res && i < (ca > cb ? ca : cb); i++) {
		if (i >= ca || i >= cb || strcmp(na[i], nb[i]) != 0) {
			char *x = printable(i < ca ? na[i] : "(none)");
			char *y = printable(i < cb ? nb[i] : "(none)");
			res = td_fail(rel, "entry names differ (%zu vs %zu entries): first mismatch '%s' vs '%s'",
				      ca, cb, x, y);
			free(x);
			free(y);
			break;
		}
		char *ca_p = pjoin(pa, na[i]), *cb_p = pjoin(pb, nb[i]);
		char *crel = *rel ? pjoin(rel, na[i]) : strdup(na[i]);
		res = td_entry(c, ca_p, cb_p, crel, 0);
		free(ca_p);
		free(cb_p);
		free(crel);
	}
	free_names(na, ca);
	free_names(nb, cb);
	return res;
}

static char *td_entry(td_ctx *c, const char *pa, const char *pb, const char *rel, int is_root)
{
	struct stat a, b;
	if (lstat(pa, &a) != 0)
		return td_fail(rel, "lstat %s: %s", pa, strerror(errno));
	if (lstat(pb, &b) != 0)
		return td_fail(rel, "lstat %s: %s", pb, strerror(errno));
	if ((a.st_mode & S_IFMT) != (b.st_mode & S_IFMT))
		return td_fail(rel, "type %06o vs %06o", (unsigned)(a.st_mode & S_IFMT),
			       (unsigned)(b.st_mode & S_IFMT));
	char *res = NULL;
	if (S_ISDIR(a.st_mode)) {
		res = td_dir(c, pa, pb, rel);
		if (res)
			return res;
		/* Re-stat: directory mtimes are compared after all children. */
		if (lstat(pa, &a) != 0 || lstat(pb, &b) != 0)
			return td_fail(rel, "lstat: %s", strerror(errno));
	} else {
		res = td_hardlink(c, &a, &b, rel);
		if (!res && S_ISREG(a.st_mode) && a.st_size == b.st_size)
			res = td_content(pa, pb, rel);
		if (!res && S_ISLNK(a.st_mode))
			res = td_symlink(pa, pb, rel);
		if (res)
			return res;
	}
	if (is_root && (c->flags & TD_SKIP_ROOT_META))
		return NULL;
	return td_meta(pa, pb, &a, &b, rel);
}

char *tree_diff(const char *a, const char *b, int flags)
{
	td_ctx c = { .flags = flags };
	char *res = td_entry(&c, a, b, "", 1);
	free(c.pairs);
	return res;
}

void assert_trees_equal(const char *a, const char *b, int flags, const char *what)
{
	char *d = tree_diff(a, b, flags);
	cr_assert(d == NULL, "%s: trees differ: %s", what, d);
}

/* ------------------------------------------------------------------ */
/* Tiny JSON                                                           */

static const char *js_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *js_value(const char *p, int depth);

static const char *js_string(const char *p)
{
	if (*p != '"')
		return NULL;
	for (p++; *p && *p != '"'; p++) {
		if ((unsigned char)*p < 0x20)
			return NULL;
		if (*p == '\\') {
			p++;
			if (*p == 'u') {
				for (int i = 1; i <= 4; i++) {
					if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i])
						return NULL;
				}
				p += 4;
			} else if (!*p || !strchr("\"\\/bfnrt", *p)) {
				return NULL;
			}
		}
	}
	return *p == '"' ? p + 1 : NULL;
}

static const char *js_number(const char *p)
{
	const char *s = p;
	if (*p == '-')
		p++;
	if (*p < '0' || *p > '9')
		return NULL;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return NULL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (*p < '0' || *p > '9')
			return NULL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	return p > s ? p : NULL;
}

static const char *js_seq(const char *p, char close, int is_obj, int depth)
{
	p = js_ws(p + 1);
	if (*p == close)
		return p + 1;
	for (;;) {
		if (is_obj) {
			p = js_string(js_ws(p));
			if (!p)
				return NULL;
			p = js_ws(p);
			if (*p != ':')
				return NULL;
			p++;
		}
		p = js_value(p, depth + 1);
		if (!p)
			return NULL;
		p = js_ws(p);
		if (*p == close)
			return p + 1;
		if (*p != ',')
			return NULL;
		p++;
	}
}

static const char *js_value(const char *p, int depth)
{
	if (depth > 64)
		return NULL;
	p = js_ws(p);
	if (*p == '{')
		return js_seq(p, '}', 1, depth);
	if (*p == '[')
		return js_seq(p, ']', 0, depth);
	if (*p == '"')
		return js_string(p);
	if (!strncmp(p, "true", 4))
		return p + 4;
	if (!strncmp(p, "false", 5))
		return p + 5;
	if (!strncmp(p, "null", 4))
		return p + 4;
	return js_number(p);
}

int json_valid(const char *text)
{
	const char *p = js_value(text, 0);
	return p && *js_ws(p) == '\0';
}

char *json_get(const char *obj, const char *key, int *is_string)
{
	char *pat = xasprintf("\"%s\"", key);
	const char *p = obj;
	char *res = NULL;
	while ((p = strstr(p, pat))) {
		const char *q = js_ws(p + strlen(pat));
		p += strlen(pat);
		if (*q != ':')
			continue;
		q = js_ws(q + 1);
		if (*q == '"') {
			const char *end = js_string(q);
			if (!end)
				break;
			res = malloc((size_t)(end - q));
			size_t j = 0;
			for (const char *s = q + 1; s < end - 1; s++) {
				if (*s == '\\') {
					s++;
					char e = *s;
					res[j++] = e == 'n' ? '\n' : e == 't' ? '\t' : e;
					if (e == 'u')
						s += 4;
				} else {
					res[j++] = *s;
				}
			}
			res[j] = '\0';
			if (is_string)
				*is_string = 1;
		} else {
			const char *end = js_value(q, 0);
			if (!end)
				break;
			res = strndup(q, (size_t)(end - q));
			if (is_string)
				*is_string = 0;
		}
		break;
	}
	free(pat);
	return res;
}

long long json_get_ll(const char *obj, const char *key)
{
	char *v = json_get(obj, key, NULL);
	cr_assert(v, "JSON object has no \"%s\": %s", key, obj);
	char *end = NULL;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	cr_assert(end != v && *end == '\0' && errno == 0, "\"%s\" is not an integer: %s", key, v);
	free(v);
	return x;
}

size_t json_lines(const char *text, char ***objs)
{
	size_t n = 0, cap = 16;
	char **v = malloc(cap * sizeof(*v));
	const char *line = text;
	while (*line) {
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t)(eol - line) : strlen(line);
		const char *open = memchr(line, '{', len);
		const char *close = NULL;
		for (const char *s = line + len; s > line; s--) {
			if (s[-1] == '}') {
				close = s;
				break;
			}
		}
		if (open && close && close > open) {
			if (n == cap) {
				cap *= 2;
				v = realloc(v, cap * sizeof(*v));
			}
			v[n++] = strndup(open, (size_t)(close - open));
		}
		line += len + (eol ? 1 : 0);
	}
	*objs = v;
	return n;
}

static const char *const git_ident_env[] = {
	"GIT_AUTHOR_NAME=Mallory", "GIT_AUTHOR_EMAIL=mallory@example.invalid",
	"GIT_COMMITTER_NAME=Mallory", "GIT_COMMITTER_EMAIL=mallory@example.invalid",
	"GIT_CONFIG_NOSYSTEM=1", NULL
};

char *git_ok(const char *repo, const char *stdin_path, const char *arg0, ...)
{
	const char *argv[32];
	size_t n = 0;
	char *gd = xasprintf("--git-dir=%s", repo);
	va_list ap;
	run_opts o = {.env = git_ident_env, .stdin_path = stdin_path};
	run_result r;

	argv[n++] = "git";
	argv[n++] = gd;
	va_start(ap, arg0);
	for (const char *a = arg0; a && n < 31; a = va_arg(ap, const char *))
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	run_argv(&r, &o, argv);
	cr_assert_eq(r.status, 0, "git %s failed (exit %d): %s", arg0, r.status, r.err);
	while (r.out_len > 0 && r.out[r.out_len - 1] == '\n')
		r.out[--r.out_len] = '\0';
	free(gd);
	free(r.err);
	return r.out;
}

void amber_init_archive_real_kdf(const char *archive)
{
	char *pf = xasprintf("AMBERFS_PASSPHRASE_FILE=%s", IT.passfile);
	char *cache = xasprintf("AMBERFS_CACHE_DIR=%s", IT.cache);
	const char *env[] = {pf, cache, NULL};
	run_opts o = {.env = env};
	run_result r;

	run_cmd(&r, &o, IT.bin, "init", archive, NULL); /* no --kdf-profile=test */
	assert_ok(&r, "amberfs init (real KDF)");
	run_result_dispose(&r);
	free(cache);
	free(pf);
}

/* A new metadata commit whose tree has `entry` (config or keys) replaced. */
void meta_replace(const char *arch, const char *entry, const char *oid)
{
	char *ls = git_ok(arch, NULL, "ls-tree", "refs/amberfs/meta^{tree}", NULL);
	char *in = pjoin(IT.tmp, "mktree.in"), *msg = pjoin(IT.tmp, "meta.msg");
	FILE *f = fopen(in, "w");

	cr_assert(f);
	for (char *sv = NULL, *l = strtok_r(ls, "\n", &sv); l; l = strtok_r(NULL, "\n", &sv)) {
		char mode[8], type[8], o[41], name[80];

		cr_assert(sscanf(l, "%7s %7s %40s\t%79s", mode, type, o, name) == 4);
		fprintf(f, "%s %s %s\t%s\n", mode, type, strcmp(name, entry) ? o : oid, name);
	}
	fclose(f);
	char *tree = git_ok(arch, in, "mktree", NULL);
	write_str(msg, "amberfs archive metadata\n");
	char *c = git_ok(arch, NULL, "commit-tree", tree, "-p", "refs/amberfs/meta", "-F", msg,
			 NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/amberfs/meta", c, NULL));
	free(c);
	free(tree);
	free(msg);
	free(in);
	free(ls);
}
