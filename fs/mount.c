/*
 * amberfs mount ARCHIVE MOUNTPOINT [-f] [-d] [-s] [-o OPTIONS]
 *
 * The order of setup matters.  Everything that can fail for a reason the
 * user should see (options, passphrase, opening and unlocking the archive,
 * the mount itself) happens in the foreground, before fuse_daemonize(), so
 * errors reach the terminal with the CLI's exit statuses and the mount is
 * ready when the command returns.  fuse_daemonize() forks, and a fork
 * keeps only the calling thread: nothing may start a thread before it (the
 * archive's read-ahead worker starts on first use, after the cache is set
 * up, which is done after the fork).
 *
 * There is no auto_unmount: if the daemon dies, the mount point answers
 * ENOTCONN instead of looking like an empty directory that an rsync
 * --delete would happily mirror.
 */
#include "cli.h"
#include "mount.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CACHE_SIZE ((size_t)256 << 20)

static const char help[] =
	"Usage: amberfs mount ARCHIVE MOUNTPOINT [-f] [-d] [-s] [-o OPTION[,OPTION...]]\n"
	"Mount the snapshots of ARCHIVE, read-only, at MOUNTPOINT (FUSE).\n"
	"\n"
	"  latest                 symbolic link to the newest snapshot\n"
	"  snapshots/DAY/TIME/    every snapshot, grouped by UTC day\n"
	"  at/TIME/               the snapshot in force at TIME (ISO 8601 or @EPOCH)\n"
	"  streams/STREAM/...     latest, snapshots/ and at/ of every stream\n"
	"  tags/TAG/              tagged snapshots\n"
	"  ids/ID/                snapshots by commit id (unique prefixes of 7+ work)\n"
	"\n"
	"  -f                     stay in the foreground\n"
	"  -d                     log every FUSE request (implies -f)\n"
	"  -s                     serve requests in one thread\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"  -o passphrase_file=FILE     the same\n"
	"  -o token_uri=pkcs11:URI     unlock with the AES key of a PKCS#11 token (a\n"
	"                              pkcs11 key slot) instead of a passphrase\n"
	"  -o pin_file=FILE            the token's PIN (default: ask on the terminal)\n"
	"      --keyfile FILE          unlock with a key file ('key add-keyfile')\n"
	"  -o keyfile=FILE             the same\n"
	"      --share FILE            unlock with SLIP-0039 shares: a file of shares,\n"
	"                              one per line, or a directory of share files\n"
	"  -o share=FILE               the same (repeatable)\n"
	"      --share-passphrase-file FILE  the shares' passphrase\n"
	"  -o share_passphrase_file=FILE   the same\n"
	"                         (secret files: see KEYS in amberfs(1) for\n"
	"                         $CREDENTIALS_DIRECTORY)\n"
	"  -o cache_size=SIZE     decoded-data cache, with K, M or G (default 256M)\n"
	"  -o node_cache=SIZE     memory of the names the kernel has looked up, beyond\n"
	"                         which it is asked to forget the oldest (default 32M)\n"
	"  -o dir_cache=SIZE      decoded listings kept while idle (default 16M; the\n"
	"                         two used last are kept whatever their size)\n"
	"  -o cache_dir=DIR       where time indexes are cached (AMBERFS_CACHE_DIR)\n"
	"  -o stream=S            stream of the top-level latest, snapshots/, at/\n"
	"                         (default main)\n"
	"  -o allow_other         let other users in (adds default_permissions)\n"
	"  -o allow_root          let root in\n"
	"  -o default_permissions let the kernel check the stored modes and ACLs\n"
	"  -o show_provenance     list the user.amberfs.* attributes in listxattr\n"
	"  -o log=FILE            append error lines to FILE (default: standard\n"
	"                         error in the foreground, syslog in the background)\n"
	"  -o debug               the same as -d\n"
	"  -o ro                  accepted: the mount is always read-only\n"
	"  -o auto,noauto,user,nouser,users,_netdev,nofail,defaults,x-*  ignored\n"
	"  -h, --help             show this help\n"
	"\n"
	"The mount is always ro,nosuid,nodev.  Without -f, amberfs returns once the\n"
	"mount is ready and keeps serving in the background.  Unmount with\n"
	"'fusermount3 -u MOUNTPOINT' (or umount as root); the daemon then exits 0.\n";

enum {
	KEY_FOREGROUND, KEY_DEBUG, KEY_SINGLE, KEY_HELP, KEY_DISCARD, KEY_KEYFILE, KEY_SHARE,
	KEY_SHARE_PASSFILE,
};

#define MNT_OPT(t, p, v) {t, offsetof(struct mnt_opts, p), v}

static const struct fuse_opt opt_spec[] = {
	MNT_OPT("passphrase_file=%s", passfile, 0),
	MNT_OPT("--passphrase-file=%s", passfile, 0),
	MNT_OPT("--passphrase-file %s", passfile, 0),
	/* secrets besides the passphrase: into cli_unlock_src (unlock.c) */
	FUSE_OPT_KEY("keyfile=", KEY_KEYFILE),
	FUSE_OPT_KEY("share=", KEY_SHARE),
	FUSE_OPT_KEY("share_passphrase_file=", KEY_SHARE_PASSFILE),
	MNT_OPT("token_uri=%s", token_uri, 0),
	MNT_OPT("pin_file=%s", pin_file, 0),
	MNT_OPT("cache_size=%s", cache_size_text, 0),
	MNT_OPT("node_cache=%s", node_cache_text, 0),
	MNT_OPT("dir_cache=%s", dir_cache_text, 0),
	MNT_OPT("cache_dir=%s", cache_dir, 0),
	MNT_OPT("log=%s", log, 0),
	MNT_OPT("stream=%s", stream, 0),
	MNT_OPT("allow_other", allow_other, 1),
	MNT_OPT("allow_root", allow_root, 1),
	MNT_OPT("default_permissions", default_permissions, 1),
	MNT_OPT("show_provenance", show_provenance, 1),
	MNT_OPT("debug", debug, 1),
	MNT_OPT("ro", ro, 1),
	MNT_OPT("rw", rw, 1),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("-s", KEY_SINGLE),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("auto", KEY_DISCARD),
	FUSE_OPT_KEY("noauto", KEY_DISCARD),
	FUSE_OPT_KEY("user", KEY_DISCARD),
	FUSE_OPT_KEY("nouser", KEY_DISCARD),
	FUSE_OPT_KEY("users", KEY_DISCARD),
	FUSE_OPT_KEY("_netdev", KEY_DISCARD),
	FUSE_OPT_KEY("nofail", KEY_DISCARD),
	FUSE_OPT_KEY("defaults", KEY_DISCARD),
	/* always set below; accepted so that fstab lines may spell them out */
	FUSE_OPT_KEY("nosuid", KEY_DISCARD),
	FUSE_OPT_KEY("nodev", KEY_DISCARD),
	FUSE_OPT_KEY("noexec", KEY_DISCARD),
	FUSE_OPT_END,
};

/* Errors and logging -------------------------------------------------------- */

int64_t mnt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void mnt_log(struct mnt *m, const char *fmt, ...)
{
	char line[1024], when[40];
	struct timespec ts;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (m->logf) {
		clock_gettime(CLOCK_REALTIME, &ts);
		amber_time_format(when, (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec, 3);
		fprintf(m->logf, "%s amberfs[%ld]: %s\n", when, (long)getpid(), line);
		fflush(m->logf);
	} else if (m->daemonized) {
		syslog(LOG_ERR, "%s", line);
	} else {
		fprintf(stderr, "amberfs: %s\n", line);
	}
}

/* The one map from libamber codes to errno. */
int mnt_errno(struct mnt *m, int code, const char *what)
{
	switch (code) {
	case AMBER_OK: return 0;
	case AMBER_ENOTFOUND: return ENOENT;
	case AMBER_ENOTDIR: return ENOTDIR;
	case AMBER_EISDIR: return EISDIR;
	case AMBER_EINVAL: return EINVAL;
	case AMBER_ENEEDKEY: return EACCES;
	}
	mnt_log(m, "%s: %s", what, amber_error_last());
	return EIO;
}

/* Options ------------------------------------------------------------------- */

/* -o keyfile=F, share=F, share_passphrase_file=F (kept for the process's life). */
static int unlock_opt(int key, const char *arg)
{
	char *v = strdup(strchr(arg, '=') + 1);

	if (!v || !*v) {
		cli_usage("mount", "option '%.*s' wants a file name", (int)strcspn(arg, "="), arg);
		free(v);
		return -1;
	}
	if (key == KEY_SHARE)
		return cli_unlock_add_share(v) ? -1 : 0;
	if (key == KEY_KEYFILE && !cli_unlock_src.keyfile)
		cli_unlock_src.keyfile = v;
	else if (key == KEY_SHARE_PASSFILE && !cli_unlock_src.share_passfile)
		cli_unlock_src.share_passfile = v;
	else {
		cli_usage("mount", "option '%.*s' given twice", (int)strcspn(arg, "="), arg);
		free(v);
		return -1;
	}
	return 0;
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct mnt_opts *o = data;

	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (o->npos == 2) {
			cli_usage("mount", "unexpected operand '%s'", arg);
			return -1;
		}
		o->pos[o->npos++] = arg;
		return 0;
	case FUSE_OPT_KEY_OPT:
		if (arg[0] == '-') {
			cli_usage("mount", "unknown option '%s'", arg);
			return -1;
		}
		/* x-systemd.*, x-gvfs-*, comment=: for mount(8) and systemd only */
		if (strncmp(arg, "x-", 2) == 0 || strncmp(arg, "comment=", 8) == 0)
			return 0;
		return 1;       /* anything else goes to libfuse, which judges it */
	case KEY_FOREGROUND: o->foreground = 1; return 0;
	case KEY_DEBUG: o->debug = 1; return 0;
	case KEY_SINGLE: o->single_thread = 1; return 0;
	case KEY_HELP: o->help = 1; return 0;
	case KEY_KEYFILE: case KEY_SHARE: case KEY_SHARE_PASSFILE: return unlock_opt(key, arg);
	default: return 0;
	}
}

static int parse_size(size_t *out, const char *text)
{
	char *end = NULL;
	unsigned long long v;
	int shift = 0;

	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno || end == text || text[0] == '-')
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (shift && strcmp(end, "iB") == 0)
		end += 2;
	if (*end || v == 0 || v > (SIZE_MAX >> shift))
		return -1;
	*out = (size_t)(v << shift);
	return 0;
}

static int stream_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= AMBER_STREAM_MAX && s[0] != '.' &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* Combinations and values, after parsing. @return 0 or CLI_EXIT_USAGE. */
static int validate(struct mnt_opts *o)
{
	const char *env = getenv("AMBERFS_ARCHIVE");

	if (o->npos == 1 && env && *env) {
		o->pos[1] = o->pos[0];
		o->pos[0] = env;
		o->npos = 2;
	}
	if (o->npos < 2)
		return cli_usage("mount", "missing operand (expected ARCHIVE MOUNTPOINT)");
	if (o->rw && !cli_mount_helper)
		return cli_usage("mount", "option 'rw': amberfs mounts are read-only");
	o->cache_size = DEFAULT_CACHE_SIZE;
	if (o->cache_size_text && parse_size(&o->cache_size, o->cache_size_text))
		return cli_usage("mount", "cache_size wants a size such as 64M or 2G, not '%s'",
				 o->cache_size_text);
	o->node_cache = MNT_NODE_BYTES;
	if (o->node_cache_text && parse_size(&o->node_cache, o->node_cache_text))
		return cli_usage("mount", "node_cache wants a size such as 16M or 1G, not '%s'",
				 o->node_cache_text);
	o->dir_cache = MNT_DIRCACHE_BYTES;
	if (o->dir_cache_text && parse_size(&o->dir_cache, o->dir_cache_text))
		return cli_usage("mount", "dir_cache wants a size such as 16M or 1G, not '%s'",
				 o->dir_cache_text);
	if (!o->stream && !(o->stream = strdup("main")))
		return cli_error("out of memory");
	if (!stream_ok(o->stream))
		return cli_usage("mount", "'%s' is not a valid stream name", o->stream);
	if (o->allow_other && o->allow_root)
		return cli_usage("mount", "allow_other and allow_root exclude each other");
	if (o->allow_other)
		o->default_permissions = 1;
	if (o->debug)
		o->foreground = 1;
	return 0;
}

/* @return -1 to go on, else the exit status. */
static int parse(struct mnt *m, struct fuse_args *args)
{
	int status;

	if (fuse_opt_parse(args, &m->o, opt_spec, opt_proc) == -1)
		return CLI_EXIT_USAGE;
	if (m->o.help)
		return cli_help(help);
	status = validate(&m->o);
	return status ? status : -1;
}

/* Setup ----------------------------------------------------------------------- */

/* Undo mountinfo's octal escapes (\040 for a space ...) in place. */
static void unescape_mountinfo(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

/*
 * The mount last stacked on `dir`, if any (its type and source).  An
 * autofs mount (x-systemd.automount) is what we are meant to cover, so it
 * does not count.  @return 1 if one is there.
 */
static int mounted_on(const char *dir, char *type, char *source, size_t cap)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL, *sep, mnt[PATH_MAX], fstype[256], src[PATH_MAX];
	size_t n = 0;
	int found = 0;

	if (!f)
		return 0;
	while (getline(&line, &n, f) > 0) {
		sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
		    sscanf(sep + 3, "%255s %4095s", fstype, src) != 2)
			continue;
		unescape_mountinfo(mnt);
		if (strcmp(mnt, dir) != 0)
			continue;
		found = strcmp(fstype, "autofs") != 0;
		unescape_mountinfo(src);
		snprintf(type, cap, "%s", fstype);
		snprintf(source, cap, "%s", src);
	}
	free(line);
	fclose(f);
	return found;
}

/* A second mount on the same directory would hide the first one. */
static int refuse_stacking(const char *dir)
{
	char type[PATH_MAX], source[PATH_MAX];

	if (!mounted_on(dir, type, source, sizeof(type)))
		return 0;
	return cli_error("%s is already a mount point (%s on %s, type %s): unmount it first "
			 "(fusermount3 -u %s) or choose another directory",
			 dir, source, dir, type, dir);
}

/* The daemon runs in "/", so every path it keeps must be absolute. */
static char *absolute(const char *path)
{
	char cwd[PATH_MAX], *r = realpath(path, NULL);
	size_t len;

	if (r || path[0] == '/')
		return r ? r : strdup(path);
	if (!getcwd(cwd, sizeof(cwd)))
		return strdup(path);
	len = strlen(cwd) + strlen(path) + 2;
	r = malloc(len);
	if (r)
		snprintf(r, len, "%s/%s", cwd, path);
	return r;
}

static int add_opt(struct fuse_args *args, const char *fmt, const char *value)
{
	char opt[PATH_MAX + 64];

	snprintf(opt, sizeof(opt), fmt, value);
	if (fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, opt))
		return cli_error("out of memory");
	return 0;
}

/* The mount options we always want, and the ones the parse consumed. */
static int fuse_options(struct mnt *m, struct fuse_args *args)
{
	char *fsname = NULL;
	int status = 0;

	if (fuse_opt_add_opt_escaped(&fsname, m->archive_abs))
		return cli_error("out of memory");
	status = add_opt(args, "ro,nosuid,nodev,subtype=amberfs,fsname=%s", fsname);
	free(fsname);
	if (!status && m->o.allow_other)
		status = add_opt(args, "%s", "allow_other");
	if (!status && m->o.allow_root)
		status = add_opt(args, "%s", "allow_root");
	if (!status && m->o.default_permissions)
		status = add_opt(args, "%s", "default_permissions");
	if (!status && m->o.debug)
		status = add_opt(args, "%s", "debug");
	return status;
}

static int set_cache_dir(const char *dir)
{
	char *abs = absolute(dir);
	int rc;

	if (!abs)
		return cli_error("out of memory");
	rc = setenv("AMBERFS_CACHE_DIR", abs, 1);
	free(abs);
	return rc ? cli_error("cannot set AMBERFS_CACHE_DIR: %s", strerror(errno)) : 0;
}

static int setup(struct mnt *m)
{
	int status;

	m->uid = getuid();
	m->gid = getgid();
	m->start_sec = (int64_t)time(NULL);
	m->archive_abs = absolute(m->o.pos[0]);
	if (!m->archive_abs)
		return cli_error("out of memory");
	/* libfuse unmounts by this path after chdir("/") */
	m->mountpoint_abs = realpath(m->o.pos[1], NULL);
	if (!m->mountpoint_abs)
		return cli_error("mount point %s: %s", m->o.pos[1], strerror(errno));
	if ((status = refuse_stacking(m->mountpoint_abs)))
		return status;
	if (m->o.cache_dir && (status = set_cache_dir(m->o.cache_dir)))
		return status;
	if (m->o.log && !(m->logf = fopen(m->o.log, "ae")))
		return cli_error("cannot open log file %s: %s", m->o.log, strerror(errno));
	if (m->o.token_uri)
		cli_token_option(1, m->o.token_uri);
	if (m->o.pin_file)
		cli_token_option(0, m->o.pin_file);
	if (cli_token_check("mount"))
		return CLI_EXIT_USAGE;
	status = cli_open_archive(&m->a, m->archive_abs, m->o.passfile);
	if (status)
		return status;
	if (mnt_table_init(m))
		return cli_error("out of memory");
	return 0;
}

/* Run ------------------------------------------------------------------------- */

/*
 * fuse_daemonize() without its handshake.  libfuse's parent waits until the
 * child has made its own session, so that a hang-up sent to the old one
 * (its leader exiting) cannot reach the daemon: one more trip through the
 * scheduler between the kernel mount and the command's return, on the path
 * of every mount.  Here the parent returns at once (the kernel holds the
 * mount; a request made before the daemon answers INIT waits for it), and
 * SIGHUP is ignored from before the fork until the child has left the
 * session, which covers the same race: a hang-up in that window is dropped,
 * not turned into an unmount by libfuse's handler, which is then put back.
 * Only the calling thread exists here (see the top of this file).
 * @return 0 in the daemon, -1 (errno set) if the fork failed; the parent
 * does not return.
 */
static int daemonize(void)
{
	struct sigaction ign = {.sa_handler = SIG_IGN}, hup;
	int fd;

	sigemptyset(&ign.sa_mask);
	if (sigaction(SIGHUP, &ign, &hup) != 0)
		return -1;
	switch (fork()) {
	case -1:
		sigaction(SIGHUP, &hup, NULL);
		return -1;
	case 0:
		break;
	default:
		_exit(CLI_EXIT_OK);
	}
	setsid();
	sigaction(SIGHUP, &hup, NULL);
	if (chdir("/") != 0)
		return -1;
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return 0;
}

/* Leave the terminal (unless -f), or stay and only move to "/" as libfuse does. */
static int detach(struct mnt *m)
{
	if (m->o.foreground)
		return chdir("/");
	return daemonize();
}

static int serve(struct mnt *m, struct fuse_session *se)
{
	struct fuse_loop_config *cfg;
	int rc;

	if (amber_archive_set_cache(m->a, m->o.cache_size))
		mnt_log(m, "no shared cache: %s", amber_error_last());
	mnt_trim_start(m, se);
	if (m->o.single_thread) {
		rc = fuse_session_loop(se);
	} else if (!(cfg = fuse_loop_cfg_create())) {
		rc = -ENOMEM;
	} else {
		/* each worker keeps a request buffer of MNT_READ_MAX: bound them */
		fuse_loop_cfg_set_clone_fd(cfg, 0);
		fuse_loop_cfg_set_max_threads(cfg, MNT_MAX_THREADS);
		fuse_loop_cfg_set_idle_threads(cfg, MNT_MAX_THREADS);
		rc = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	mnt_store_stop(m);
	mnt_trim_stop(m);
	return rc;
}

/*
 * @return the exit status: 0 after an unmount or SIGTERM/SIGINT/SIGHUP
 * (the loop then returns the signal number), 1 if the loop failed.
 */
static int run(struct mnt *m, struct fuse_args *args)
{
	struct fuse_session *se;
	int rc, status = CLI_EXIT_ERROR;

	if (fuse_options(m, args))
		return CLI_EXIT_ERROR;
	se = fuse_session_new(args, &mnt_ops, sizeof(mnt_ops), m);
	if (!se)
		return cli_error("%s: cannot start the FUSE session", m->mountpoint_abs);
	if (fuse_set_signal_handlers(se) == 0) {
		if (fuse_session_mount(se, m->mountpoint_abs) != 0) {
			cli_error("%s: cannot mount", m->mountpoint_abs);
		} else {
			if (detach(m) != 0)
				mnt_log(m, "%s: cannot detach: %s", m->mountpoint_abs,
					strerror(errno));
			m->daemonized = !m->o.foreground;
			if (m->daemonized && !m->logf)
				openlog("amberfs", LOG_PID, LOG_DAEMON);
			/* the fork left the keys' memory locks behind in the parent */
			if (m->daemonized && amber_archive_lock_keys(m->a))
				mnt_log(m, "%s: keys may be swapped out: %s", m->archive_abs,
					amber_error_last());
			rc = serve(m, se);
			status = rc < 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
			if (rc < 0)
				mnt_log(m, "%s: session ended: %s", m->mountpoint_abs,
					strerror(-rc));
			fuse_session_unmount(se);
		}
		fuse_remove_signal_handlers(se);
	}
	fuse_session_destroy(se);
	return status;
}

static void teardown(struct mnt *m)
{
	mnt_table_destroy(m);
	mnt_tl_destroy(m);
	amber_archive_free(m->a);
	if (m->logf)
		fclose(m->logf);
	free(m->archive_abs);
	free(m->mountpoint_abs);
	free(m->o.passfile);
	free(m->o.token_uri);
	free(m->o.pin_file);
	free(m->o.cache_size_text);
	free(m->o.node_cache_text);
	free(m->o.dir_cache_text);
	free(m->o.cache_dir);
	free(m->o.log);
	free(m->o.stream);
}

int cmd_mount(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct mnt *m = calloc(1, sizeof(*m));
	int status;

	if (!m)
		return cli_error("out of memory");
	/*
	 * Each FUSE worker thread would otherwise get its own malloc arena
	 * that keeps what it freed: two arenas keep the daemon's resident
	 * size near its caches' caps.
	 */
	mallopt(M_ARENA_MAX, 2);
	/*
	 * A fixed threshold: decoded chunks of 512 KiB or more (up to 2 MiB)
	 * and large listings are then always mmapped and go back to the system when
	 * freed.  glibc's default raises the threshold to the largest block
	 * freed, after which those blocks come from the heap and their memory
	 * stays behind (fragmented) when the cache evicts them.
	 */
	mallopt(M_MMAP_THRESHOLD, 512 * 1024);
	mallopt(M_TRIM_THRESHOLD, 8 * 1024 * 1024);
	/* grow the heap in steps of 1 MiB: a walk makes thousands of nodes */
	mallopt(M_TOP_PAD, 1024 * 1024);
	status = parse(m, &args);
	if (status < 0) {
		status = setup(m);
		if (status == 0)
			status = run(m, &args);
	}
	fuse_opt_free_args(&args);
	teardown(m);
	free(m);
	return status;
}
