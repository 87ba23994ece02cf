/*
 * amberfs watch ARCHIVE SRC [--interval T] [--stream S] [--json] ...
 *
 * The resident writer: unlock once, keep one writer session (lib's
 * amber_writer_*), learn from the kernel what changed, and write a snapshot
 * in each interval in which something did, naming only the changed paths.
 *
 * What changed comes from inotify, one watch per directory, added as
 * directories appear.  Each event becomes a changed path: the path it
 * names (watch path + name), or the watched directory itself for events
 * about it.  A directory created or moved in is a `subtree` change and its
 * directories are watched at once, before the snapshot walks it, so that
 * nothing created inside it meanwhile is missed; re-adding a watch to a
 * directory that moved inside the tree returns its old watch descriptor,
 * whose path is then updated, so events from inside a moved directory
 * carry its new path.  Events still queued with an old path name a path
 * that no longer exists, which the writer drops; it never misses one.
 * A lost event queue (IN_Q_OVERFLOW), SIGHUP, a failed snapshot and the
 * --rescan-interval timer make the next snapshot a whole walk (the files
 * cache keeps it cheap) and re-add every watch.
 *
 * A capture: --quiesce CMD (must succeed), drain the queue, snapshot,
 * --resume CMD.  Events that arrive during the snapshot stay queued for the
 * next one.  SIGTERM/SIGINT: a last capture, then exit 0.  A kill -9 loses
 * nothing published (refs move only after objects are durable); the next
 * start walks the whole source once.
 */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char help[] =
	"Usage: amberfs watch ARCHIVE SRC [OPTIONS]\n"
	"Keep writing snapshots of SRC into ARCHIVE: one in each interval in which\n"
	"something under SRC changed, reading only what changed.\n"
	"\n"
	"      --interval T            time between snapshots (default 1s; e.g. 500ms)\n"
	"      --stream S              write into stream S (default: main)\n"
	"      --append-only GLOB      files matching GLOB only ever grow: read them from\n"
	"                              their last stored chunk (repeatable; a GLOB with a\n"
	"                              '/' matches the relative path, else the file name)\n"
	"      --quiesce CMD           run CMD (sh -c) before each capture; it must succeed\n"
	"      --resume CMD            run CMD after each capture that ran --quiesce\n"
	"      --rescan-interval T     walk the whole tree this often (default 10m; 0: never)\n"
	"      --json                  one JSON object per line on stdout for each event\n"
	"      --threads N             compression threads (default 0: one per core)\n"
	"      --passphrase-file FILE  read the passphrase from FILE (default:\n"
	"                              $AMBERFS_PASSPHRASE_FILE, else\n"
	"                              $CREDENTIALS_DIRECTORY/passphrase)\n"
	"      --signing-key FILE      sign with the secret key in FILE (default:\n"
	"                              $AMBERFS_SIGNING_KEY, else\n"
	"                              $CREDENTIALS_DIRECTORY/signing-key if present),\n"
	"                              or the pkcs11:URI of the archive's token key\n"
	"      --token-uri pkcs11:URI  unlock with the AES key of a token (a pkcs11 key\n"
	"                              slot) instead of a passphrase\n"
	"      --pin-file FILE         read the token's PIN from FILE (default:\n"
	"                              $CREDENTIALS_DIRECTORY/pin if present, else ask\n"
	"                              on the terminal)\n"
	"      --keyfile FILE, --share FILE (repeatable), --share-passphrase-file FILE\n"
	"                              unlock with a key file or recovery shares instead\n"
	"      --unsigned              write unsigned snapshots into a signing archive\n"
	"  -h, --help                  show this help\n"
	"\n"
	"SIGHUP: walk the whole tree at the next capture.  SIGTERM, SIGINT: write a\n"
	"last snapshot and exit.  Each capture's environment has AMBERFS_CAPTURE=N,\n"
	"the sequence number its report carries.\n";

enum { OPT_INTERVAL = CLI_OPT_LONG, OPT_STREAM, OPT_APPEND, OPT_QUIESCE, OPT_RESUME,
       OPT_RESCAN, OPT_JSON, OPT_THREADS, OPT_PASSFILE, OPT_SIGNING_KEY, OPT_UNSIGNED };

#define MAX_GLOBS 64
#define DIRTY_LIMIT 100000    /* more changed paths: walk everything instead */
#define NS 1000000000LL
#define WATCH_MASK (IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM |    \
		    IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_DONT_FOLLOW |      \
		    IN_ONLYDIR | IN_EXCL_UNLINK)

struct watch_args {
	const char *pos[2];     /* ARCHIVE, SRC */
	const char *passfile;
	const char *quiesce, *resume;
	int64_t interval, rescan;
	int json;
	const char *globs[MAX_GLOBS + 1];
	int nglobs;
	amber_writer_opts opts;
	char cred_pass[4096], cred_key[4096];
};

/* The changed paths of the next capture (a set). */
struct dset {
	char **path;
	unsigned char *tree;
	size_t cap, n;
};

struct watch {
	struct watch_args *o;
	amber_archive *a;
	amber_writer *w;
	int ifd, sfd;
	char **wdpath;          /* watch descriptor -> relative path ("" = SRC) */
	size_t nwd;
	struct dset dirty;
	int full;               /* the next capture walks everything */
	const char *full_why;
	int64_t first_change;   /* CLOCK_MONOTONIC of the oldest uncaptured change; 0: none */
	int64_t next_rescan;
	uint64_t seq;
	int stop, blind;
	uint64_t warnings;
};

/* ---- options ----------------------------------------------------------------- */

/* "500ms", "1s", "1.5s", "2m", "1h", or seconds. */
static int parse_duration(int64_t *out, const char *text, int64_t min, const char *opt)
{
	char *end = NULL;
	double v, mult = 1e9;

	errno = 0;
	v = strtod(text, &end);
	if (strcmp(end, "ms") == 0)
		mult = 1e6;
	else if (strcmp(end, "m") == 0)
		mult = 60e9;
	else if (strcmp(end, "h") == 0)
		mult = 3600e9;
	else if (*end && strcmp(end, "s") != 0)
		end = NULL;
	if (errno || !end || end == text || v < 0 || v * mult > 86400e9 ||
	    (v * mult < (double)min && v != 0))
		return cli_usage("watch", "%s wants a duration such as 500ms, 2s or 10m, not '%s'",
				 opt, text);
	*out = (int64_t)(v * mult);
	return 0;
}

static int option(struct watch_args *o, int c, char **argv)
{
	switch (c) {
	case 'h': return cli_help(help);
	case OPT_STREAM: o->opts.snap.stream = optarg; return -1;
	case OPT_QUIESCE: o->quiesce = optarg; return -1;
	case OPT_RESUME: o->resume = optarg; return -1;
	case OPT_JSON: o->json = 1; return -1;
	case OPT_PASSFILE: o->passfile = optarg; return -1;
	case OPT_SIGNING_KEY: o->opts.snap.signing_key_path = optarg; return -1;
	case OPT_UNSIGNED: o->opts.snap.unsigned_ok = 1; return -1;
	case OPT_INTERVAL:
		return parse_duration(&o->interval, optarg, 10000000, "--interval") ? CLI_EXIT_USAGE
										       : -1;
	case OPT_RESCAN:
		return parse_duration(&o->rescan, optarg, NS, "--rescan-interval") ? CLI_EXIT_USAGE
										   : -1;
	case OPT_THREADS:
		return cli_parse_int(&o->opts.snap.threads, optarg, 0, 1024, "watch",
				     "--threads") ? CLI_EXIT_USAGE : -1;
	case OPT_APPEND:
		if (o->nglobs == MAX_GLOBS || !*optarg)
			return cli_usage("watch", "--append-only wants a glob (at most %d)",
					 MAX_GLOBS);
		o->globs[o->nglobs++] = optarg;
		return -1;
	}
	return cli_bad_option("watch", c, argv);
}

/* Files systemd's LoadCredential= put in $CREDENTIALS_DIRECTORY. */
static void credentials(struct watch_args *o)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	const char *envpass = getenv("AMBERFS_PASSPHRASE_FILE");

	if (!dir || !*dir)
		return;
	snprintf(o->cred_pass, sizeof(o->cred_pass), "%s/passphrase", dir);
	snprintf(o->cred_key, sizeof(o->cred_key), "%s/signing-key", dir);
	if (!o->passfile && !(envpass && *envpass) && !cli_unlock_given() &&
	    access(o->cred_pass, R_OK) == 0)
		o->passfile = o->cred_pass;
	if (!o->opts.snap.signing_key_path && !o->opts.snap.unsigned_ok &&
	    access(o->cred_key, R_OK) == 0)
		o->opts.snap.signing_key_path = o->cred_key;
}

static int parse(struct watch_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"interval", required_argument, NULL, OPT_INTERVAL},
		{"stream", required_argument, NULL, OPT_STREAM},
		{"append-only", required_argument, NULL, OPT_APPEND},
		{"quiesce", required_argument, NULL, OPT_QUIESCE},
		{"resume", required_argument, NULL, OPT_RESUME},
		{"rescan-interval", required_argument, NULL, OPT_RESCAN},
		{"json", no_argument, NULL, OPT_JSON},
		{"threads", required_argument, NULL, OPT_THREADS},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"signing-key", required_argument, NULL, OPT_SIGNING_KEY},
		{"unsigned", no_argument, NULL, OPT_UNSIGNED},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, status;

	o->interval = NS;
	o->rescan = 600 * NS;
	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
		status = option(o, c, argv);
		if (status >= 0)
			return status;
	}
	status = cli_signing_key("watch", &o->opts.snap.signing_key_path,
				 o->opts.snap.unsigned_ok);
	if (status >= 0)
		return status;
	credentials(o);
	if (cli_token_check("watch"))
		return CLI_EXIT_USAGE;
	o->opts.append_only = o->globs;
	if (cli_positionals(o->pos, 2, argc, argv, optind, "watch", "ARCHIVE SRC"))
		return CLI_EXIT_USAGE;
	return -1;
}

/* ---- small helpers ------------------------------------------------------------- */

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static char *path_join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 2);

	if (!p)
		return NULL;
	memcpy(p, a, la);
	p[la] = '/';
	memcpy(p + la + 1, b, lb + 1);
	if (!*a)
		memmove(p, p + 1, lb + 1); /* "" + b = b */
	return p;
}

/* ---- the changed-path set --------------------------------------------------------- */

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static size_t dset_slot(const struct dset *d, const char *p)
{
	size_t i = str_hash(p) & (d->cap - 1);

	while (d->path[i] && strcmp(d->path[i], p) != 0)
		i = (i + 1) & (d->cap - 1);
	return i;
}

static int dset_grow(struct dset *d)
{
	struct dset n = {.cap = d->cap ? d->cap * 2 : 256};

	n.path = calloc(n.cap, sizeof(*n.path));
	n.tree = calloc(n.cap, 1);
	if (!n.path || !n.tree) {
		free(n.path);
		free(n.tree);
		return -1;
	}
	for (size_t i = 0; i < d->cap; i++) {
		if (!d->path[i])
			continue;
		size_t k = dset_slot(&n, d->path[i]);

		n.path[k] = d->path[i];
		n.tree[k] = d->tree[i];
	}
	n.n = d->n;
	free(d->path);
	free(d->tree);
	*d = n;
	return 0;
}

/* Takes ownership of p.  @return 0, or -1 when out of memory (p freed). */
static int dset_add(struct dset *d, char *p, int tree)
{
	size_t k;

	if ((d->n + 1) * 2 > d->cap && dset_grow(d) < 0) {
		free(p);
		return -1;
	}
	k = dset_slot(d, p);
	if (d->path[k]) {
		free(p);
	} else {
		d->path[k] = p;
		d->n++;
	}
	d->tree[k] |= (unsigned char)(tree != 0);
	return 0;
}

static void dset_clear(struct dset *d)
{
	for (size_t i = 0; i < d->cap; i++) {
		free(d->path[i]);
		d->path[i] = NULL;
		d->tree[i] = 0;
	}
	d->n = 0;
}

static void dset_free(struct dset *d)
{
	dset_clear(d);
	free(d->path);
	free(d->tree);
}

/* The set as the writer takes it; points into the set. */
static amber_dirty *dset_list(const struct dset *d)
{
	amber_dirty *v = calloc(d->n ? d->n : 1, sizeof(*v));
	size_t k = 0;

	for (size_t i = 0; v && i < d->cap; i++) {
		if (!d->path[i])
			continue;
		v[k].path = d->path[i];
		v[k++].subtree = d->tree[i];
	}
	return v;
}

/* ---- reports ------------------------------------------------------------------------ */

static void json_head(struct watch *x, const char *event)
{
	printf("{\"event\":\"%s\",\"seq\":%llu", event, (unsigned long long)x->seq);
}

static void json_end(void)
{
	fputs("}\n", stdout);
	fflush(stdout);
}

static void report_full(struct watch *x, const char *why)
{
	if (!x->full && x->o->json) {
		json_head(x, "rescan");
		fputs(",\"reason\":", stdout);
		cli_json_string(stdout, why, strlen(why));
		json_end();
	}
	if (!x->full)
		x->full_why = why;
	x->full = 1;
}

static void on_warn(const char *path, const char *message, void *payload)
{
	struct watch *x = payload;

	x->warnings++;
	fputs("amberfs: warning: ", stderr);
	cli_print_name(stderr, path, strlen(path), 0);
	fprintf(stderr, ": %s\n", message);
	if (!x->o->json)
		return;
	json_head(x, "warning");
	putchar(',');
	cli_json_bytes(stdout, "path", path, strlen(path));
	fputs(",\"message\":", stdout);
	cli_json_string(stdout, message, strlen(message));
	json_end();
}

struct capture {
	char id[AMBER_OID_HEXSZ + 1];
	amber_stats st;
	size_t npaths;          /* 0 and full: a whole walk */
	int full;
	int64_t lag, took;      /* ns */
};

static void report_snapshot(struct watch *x, const struct capture *c)
{
	char size[32];

	cli_human_size(size, c->st.bytes_new);
	fprintf(stderr, "amberfs: watch: snapshot %.12s: %s, %s new, lag %.3f s, took %.3f s\n",
		c->id, c->full ? "whole walk" : "changed paths", size, (double)c->lag / 1e9,
		(double)c->took / 1e9);
	if (!x->o->json)
		return;
	json_head(x, "snapshot");
	printf(",\"id\":\"%s\",\"full\":%s,\"paths\":%zu,\"lag_ms\":%.3f,\"duration_ms\":%.3f,"
	       "\"bytes_read\":%llu,\"bytes_new\":%llu,\"objects_new\":%llu,\"files\":%llu,"
	       "\"bytes\":%llu,\"errors\":%llu", c->id, c->full ? "true" : "false", c->npaths,
	       (double)c->lag / 1e6, (double)c->took / 1e6,
	       (unsigned long long)c->st.bytes_read, (unsigned long long)c->st.bytes_new,
	       (unsigned long long)c->st.objects_new, (unsigned long long)c->st.files,
	       (unsigned long long)c->st.bytes, (unsigned long long)c->st.errors);
	json_end();
}

static void report_event(struct watch *x, const char *event, const char *text)
{
	if (x->o->json) {
		json_head(x, event);
		if (text) {
			fputs(",\"message\":", stdout);
			cli_json_string(stdout, text, strlen(text));
		}
		json_end();
	}
}

/* ---- inotify watches ------------------------------------------------------------------ */

static int wd_set(struct watch *x, int wd, const char *rel)
{
	char *p = strdup(rel);

	if (!p)
		return -1;
	if ((size_t)wd >= x->nwd) {
		size_t n = (size_t)wd * 2 + 16;
		char **v = realloc(x->wdpath, n * sizeof(*v));

		if (!v) {
			free(p);
			return -1;
		}
		memset(v + x->nwd, 0, (n - x->nwd) * sizeof(*v));
		x->wdpath = v;
		x->nwd = n;
	}
	free(x->wdpath[wd]);
	x->wdpath[wd] = p;
	return 0;
}

static void wd_drop(struct watch *x, int wd)
{
	if (wd >= 0 && (size_t)wd < x->nwd) {
		free(x->wdpath[wd]);
		x->wdpath[wd] = NULL;
	}
}

static int is_dir(const char *abs, const struct dirent *de)
{
	struct stat st;

	if (de->d_type != DT_UNKNOWN)
		return de->d_type == DT_DIR;
	return lstat(abs, &st) == 0 && S_ISDIR(st.st_mode);
}

static int watch_tree(struct watch *x, const char *rel);

static void watch_children(struct watch *x, const char *abs, const char *rel)
{
	DIR *d = opendir(abs);
	struct dirent *de;

	if (!d)
		return; /* gone meanwhile; its parent's events say so */
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *cabs = path_join(abs, de->d_name), *crel = path_join(rel, de->d_name);

		if (cabs && crel && is_dir(cabs, de))
			watch_tree(x, crel);
		free(cabs);
		free(crel);
	}
	closedir(d);
}

/* Watch directory rel and every directory below it (the watch first).
 * @return rel's watch descriptor or -1 (errno). */
static int watch_tree(struct watch *x, const char *rel)
{
	char *abs = path_join(x->o->pos[1], rel);
	int wd = abs ? inotify_add_watch(x->ifd, abs, WATCH_MASK) : -1;

	if (wd < 0 && abs && errno == ENOSPC && !x->blind) {
		x->blind = 1;
		cli_error("watch: cannot watch %s: the inotify watch limit is reached (raise "
			  "fs.inotify.max_user_watches); every snapshot walks the whole tree", abs);
	}
	if (wd >= 0 && wd_set(x, wd, rel) == 0)
		watch_children(x, abs, rel);
	free(abs);
	return wd;
}

/* ---- events -------------------------------------------------------------------------- */

static void dirty_add(struct watch *x, char *path, int tree)
{
	if (!path || dset_add(&x->dirty, path, tree) < 0 || x->dirty.n > DIRTY_LIMIT) {
		dset_clear(&x->dirty);
		report_full(x, "too many changed paths");
	}
	if (!x->first_change)
		x->first_change = mono_ns();
}

static void on_event(struct watch *x, const struct inotify_event *ev)
{
	const char *dir = ev->wd >= 0 && (size_t)ev->wd < x->nwd ? x->wdpath[ev->wd] : NULL;
	char *p;

	if (ev->mask & IN_Q_OVERFLOW) {
		report_full(x, "inotify queue overflow");
		if (!x->first_change)
			x->first_change = mono_ns();
		return;
	}
	if (!dir)
		return;
	if (ev->mask & IN_IGNORED) {
		if (!*dir && !x->stop)
			report_full(x, "the source directory itself was removed or moved");
		wd_drop(x, ev->wd);
		return;
	}
	p = ev->len ? path_join(dir, ev->name) : strdup(dir);
	if ((ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO)) && p) {
		watch_tree(x, p);
		dirty_add(x, p, 1);
	} else if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
		free(p); /* the parent's event names it */
	} else {
		dirty_add(x, p, 0);
	}
}

/* Read every queued event without blocking. */
static void drain(struct watch *x)
{
	char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));

	for (;;) {
		ssize_t n = read(x->ifd, buf, sizeof(buf));

		if (n <= 0)
			return;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			on_event(x, ev);
			p += sizeof(*ev) + ev->len;
		}
	}
}

/* ---- captures ---------------------------------------------------------------------------- */

/* Run `cmd` with sh -c and AMBERFS_CAPTURE=seq.  @return 0 if it exited 0. */
static int run_hook(struct watch *x, const char *what, const char *cmd)
{
	char seq[32];
	sigset_t none;
	int status = 0;
	pid_t pid;

	snprintf(seq, sizeof(seq), "%llu", (unsigned long long)x->seq);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setenv("AMBERFS_CAPTURE", seq, 1);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	cli_error("watch: %s command failed (%s %d); no snapshot this time", what,
		  pid < 0 ? "fork" : WIFEXITED(status) ? "exit" : "signal",
		  pid < 0 ? errno : WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	report_event(x, "hook-failed", what);
	return -1;
}

static int snapshot_now(struct watch *x, struct capture *c)
{
	amber_dirty *list = NULL;
	int64_t t0 = mono_ns();
	int rc;

	c->full = x->full || x->blind;
	if (!c->full && !(list = dset_list(&x->dirty)))
		return cli_error("out of memory");
	c->npaths = c->full ? 0 : x->dirty.n;
	rc = amber_writer_snapshot(c->id, &c->st, x->w, c->full ? NULL : list, c->npaths);
	c->took = mono_ns() - t0;
	c->lag = x->first_change ? mono_ns() - x->first_change : c->took;
	free(list);
	return rc;
}

/* A whole walk also re-watches everything (paths of moved directories). */
static void capture_done(struct watch *x, int rc, const struct capture *c)
{
	if (rc == 0)
		report_snapshot(x, c);
	if (rc >= 0) {
		dset_clear(&x->dirty);
		x->full = 0;
		x->first_change = 0;
	}
	if (rc >= 0 && c->full)
		x->next_rescan = x->o->rescan ? mono_ns() + x->o->rescan : 0;
}

/* @return 0, or an exit status when watching cannot go on. */
static int capture(struct watch *x)
{
	struct capture c = {.st = AMBER_STATS_INIT};
	int rc = 0;

	x->seq++;
	if (x->o->quiesce && run_hook(x, "--quiesce", x->o->quiesce) < 0) {
		if (x->o->resume)
			run_hook(x, "--resume", x->o->resume);
		return 0;
	}
	drain(x);
	if (x->full)
		watch_tree(x, "");
	rc = snapshot_now(x, &c);
	if (x->o->resume)
		run_hook(x, "--resume", x->o->resume);
	capture_done(x, rc, &c);
	if (rc == AMBER_EBADKEY || rc == AMBER_ENEEDKEY || rc == AMBER_EINVAL)
		return cli_fail(rc, x->o->pos[0]);
	if (rc < 0) {
		cli_error("watch: snapshot failed (%s); trying again at the next interval",
			  amber_error_last());
		report_event(x, "error", amber_error_last());
		if (rc != AMBER_ELOCKED)
			report_full(x, "the last snapshot failed");
	}
	return 0;
}

/* ---- the loop ---------------------------------------------------------------------------- */

static void on_signal(struct watch *x)
{
	struct signalfd_siginfo si;

	while (read(x->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGHUP)
			report_full(x, "SIGHUP");
		else
			x->stop = 1;
	}
}

static int due(struct watch *x, int64_t now)
{
	if (x->o->rescan && x->next_rescan && now >= x->next_rescan)
		report_full(x, "periodic rescan");
	return x->full || x->dirty.n > 0;
}

static int loop(struct watch *x)
{
	int64_t next = mono_ns() + x->o->interval;
	int status = 0;

	while (!x->stop && status == 0) {
		struct pollfd p[2] = {{x->ifd, POLLIN, 0}, {x->sfd, POLLIN, 0}};
		int64_t now = mono_ns(), wait = next > now ? (next - now + 999999) / 1000000 : 0;

		if (poll(p, 2, (int)wait) < 0 && errno != EINTR)
			return cli_error("watch: poll: %s", strerror(errno));
		if (p[0].revents)
			drain(x);
		if (p[1].revents)
			on_signal(x);
		now = mono_ns();
		if (x->stop || now < next)
			continue;
		if (due(x, now))
			status = capture(x);
		next += x->o->interval;
		if (next <= now)
			next = now + x->o->interval;
	}
	drain(x);
	if (status == 0 && due(x, mono_ns()))
		status = capture(x); /* the last one, on SIGTERM/SIGINT */
	return status;
}

/* ---- set up and tear down ------------------------------------------------------------------- */

/* Blocked in every thread (so before the writer starts its workers): the
 * signals are read from a signalfd by the loop. */
static void block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigprocmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int setup_fds(struct watch *x, const sigset_t *set)
{
	x->sfd = signalfd(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
	x->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (x->sfd < 0 || x->ifd < 0)
		return cli_error("watch: cannot set up %s: %s", x->sfd < 0 ? "signals" : "inotify",
				 strerror(errno));
	return 0;
}

static int start(struct watch *x)
{
	sigset_t set;
	int rc;

	block_signals(&set);
	rc = amber_writer_open(&x->w, x->a, x->o->pos[1], &x->o->opts);
	if (rc == AMBER_EBADKEY)
		return cli_error("%s", amber_error_last());
	if (rc)
		return cli_fail(rc, x->o->pos[0]);
	if (setup_fds(x, &set))
		return CLI_EXIT_ERROR;
	if (watch_tree(x, "") < 0)
		return cli_error("watch: cannot watch %s: %s", x->o->pos[1], strerror(errno));
	report_full(x, "start");
	rc = capture(x);
	if (rc == 0) {
		fprintf(stderr, "amberfs: watch: watching %s\n", x->o->pos[1]);
		report_event(x, "ready", NULL);
	}
	return rc;
}

static void teardown(struct watch *x)
{
	if (amber_writer_close(x->w) < 0)
		cli_error("watch: the caches could not be saved (%s); the next start walks "
			  "the whole tree", amber_error_last());
	for (size_t i = 0; i < x->nwd; i++)
		free(x->wdpath[i]);
	free(x->wdpath);
	dset_free(&x->dirty);
	if (x->ifd >= 0)
		close(x->ifd);
	if (x->sfd >= 0)
		close(x->sfd);
	amber_archive_free(x->a);
}

int cmd_watch(int argc, char **argv)
{
	static struct watch_args o;
	struct watch x = {.o = &o, .ifd = -1, .sfd = -1};
	int status;

	memset(&o, 0, sizeof(o));
	o.opts = (amber_writer_opts)AMBER_WRITER_OPTS_INIT;
	status = parse(&o, argc, argv);
	if (status >= 0)
		return status;
	o.opts.snap.warn = on_warn;
	o.opts.snap.payload = &x;
	status = cli_open_archive(&x.a, o.pos[0], o.passfile);
	if (status == 0)
		status = cli_archive_pin(x.a, o.opts.snap.signing_key_path, NULL, "watch");
	if (status == 0)
		status = start(&x);
	if (status == 0)
		status = loop(&x);
	if (status == 0)
		report_event(&x, "stopped", NULL);
	teardown(&x);
	return status;
}
