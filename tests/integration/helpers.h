/*
 * Helpers for amberfs integration tests: running programs without a shell,
 * temporary directories, generated source trees ("the awkward tree"), a
 * parallel tree comparison, and small checks shared by the test files.
 *
 * Every test runs the real `amberfs` binary named by $AMBERFS_BIN.  A test
 * whose binary is missing fails; it never skips.
 *
 * Each test gets a fresh context (IT) from itest_setup(): a temporary
 * directory, a passphrase file and a files-cache directory inside it.
 * itest_teardown() removes it all.  Criterion runs each test in its own
 * process, so the global context is per test.
 */
#ifndef ITEST_HELPERS_H
#define ITEST_HELPERS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <criterion/criterion.h>

#define ITEST_SENTINEL __attribute__((sentinel))
#define ITEST_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ------------------------------------------------------------------ */
/* Running programs                                                    */

/** What a finished program did. */
typedef struct run_result {
	int status;       /**< exit code; 128 + signal if killed; -1 if it could not run */
	int timed_out;    /**< 1 if we killed it at the timeout */
	char *out;        /**< captured stdout, NUL-terminated ("" if sent to a file) */
	size_t out_len;
	char *err;        /**< captured stderr, NUL-terminated */
	size_t err_len;
	double seconds;   /**< wall time */
} run_result;

/** How to run it.  All fields optional (zero = default). */
typedef struct run_opts {
	const char *const *env;     /**< "NAME=value" sets, "NAME" unsets; NULL-terminated */
	const char *const *prefix;  /**< argv words put before the program (e.g. setpriv ...) */
	double timeout;             /**< seconds; 0 = 600 */
	const char *cwd;
	const char *stdin_path;     /**< default /dev/null */
	const char *stdout_path;    /**< stdout to this file (created 0644) instead of captured */
	const char *stderr_path;    /**< spawn_bg only: stderr to this file */
} run_opts;

/**
 * Run argv (argv[0] looked up in PATH) in a new session with stdin from
 * /dev/null, capturing stdout and stderr.  Never uses a shell.
 * @return r->status.  Free r with run_result_dispose().
 */
int run_argv(run_result *r, const run_opts *o, const char *const argv[]);

/** run_argv() with the words given inline, NULL-terminated. */
int run_cmd(run_result *r, const run_opts *o, const char *arg0, ...) ITEST_SENTINEL;

void run_result_dispose(run_result *r);

/**
 * Start argv in the background (new session; stdout/stderr to
 * o->stdout_path / o->stderr_path or /dev/null).  @return its pid.
 */
pid_t spawn_bg(const run_opts *o, const char *const argv[]);

/** Wait for a spawned process; @return exit code or 128 + signal. */
int wait_exit(pid_t pid);

/* ------------------------------------------------------------------ */
/* The per-test context and the amberfs binary                         */

typedef struct itest_ctx {
	char *bin;       /**< $AMBERFS_BIN */
	char *tmp;       /**< per-test temporary directory */
	char *passfile;  /**< passphrase file (0600) holding IT_PASSPHRASE */
	char *cache;     /**< $AMBERFS_CACHE_DIR for amberfs runs */
	char *home;      /**< $HOME for child programs */
} itest_ctx;

extern itest_ctx IT;

/** A distinctive passphrase; tests check it never shows up anywhere. */
#define IT_PASSPHRASE "correct horse Zq8xT3 battery staple 7f3c9e1d"

/** Criterion .init / .fini for every integration test. */
void itest_setup(void);
void itest_teardown(void);

/**
 * Run amberfs with args (NULL-terminated, without the program name), after
 * the global option --kdf-profile=test (archives made by init get cheap,
 * labelled test key slots, which only this option accepts when unlocking).
 * The environment gets AMBERFS_PASSPHRASE_FILE=IT.passfile,
 * AMBERFS_CACHE_DIR=IT.cache and HOME=IT.home, then o->env on top.
 */
int amber_a(run_result *r, const run_opts *o, const char *const args[]);
int amber_o(run_result *r, const run_opts *o, const char *arg0, ...) ITEST_SENTINEL;
int amber(run_result *r, const char *arg0, ...) ITEST_SENTINEL;

/** Start amberfs in the background with the same environment as amber_a(). */
pid_t amber_spawn(const run_opts *o, const char *const args[]);

/** `amberfs init ARCHIVE` (encrypted unless plain); asserts success. */
void amber_init_archive(const char *archive, int plain);

/**
 * `amberfs init ARCHIVE` without --kdf-profile=test: an encrypted archive
 * whose key slot has the real Argon2id cost, for runs through programs
 * that call amberfs themselves (mount helpers).  Asserts success.
 */
void amber_init_archive_real_kdf(const char *archive);

/**
 * `amberfs snapshot ARCHIVE SRC [extra...]`; asserts exit 0 and that stdout
 * is a 40-hex commit id, which is copied into id (41 bytes).
 */
void amber_snapshot_ok(char id[41], const char *archive, const char *src, const char *const *extra);

/**
 * Run git --git-dir=repo with the words given (stdin from stdin_path or
 * /dev/null, a fixed committer identity), assert exit 0, and return its
 * stdout with trailing newlines cut (free it).
 */
char *git_ok(const char *repo, const char *stdin_path, const char *arg0, ...) ITEST_SENTINEL;

/** Assert that `git fsck --full` passes on `repo`. */
void assert_fsck(const char *repo);

/* ------------------------------------------------------------------ */
/* A foreground mount                                                  */

/**
 * `amberfs mount ARCH IT.tmp/mnt -f`, its stderr to IT.tmp/daemon.log;
 * returns the mount point once it is mounted (asserts within 30 s, and
 * that the daemon did not exit first).  One a test: itest_teardown() takes
 * it down if fg_unmount() did not.
 */
const char *fg_mount(const char *archive);

/** 1 while the daemon fg_mount() started still runs. */
int fg_alive(void);

/** Unmount fg_mount()'s mount (fusermount3 -u, else umount -l) and end its
 *  daemon (SIGTERM, SIGKILL after 5 s); nothing if there is none. */
void fg_unmount(void);

/** 1 if mnt is on another device than its parent (something is mounted there). */
int is_mount_point(const char *mnt);

/* ------------------------------------------------------------------ */
/* Assertions on run results                                           */

/** Assert the exit code, printing stderr on failure. */
#define assert_exit(r, code, what)                                                       \
	cr_assert_eq((r)->status, (code), "%s: expected exit %d, got %d%s; stderr: %s",     \
		     (what), (code), (r)->status, (r)->timed_out ? " (timed out)" : "",      \
		     (r)->err)

#define assert_ok(r, what) assert_exit((r), 0, (what))

/**
 * Assert that stderr is exactly one line starting "amberfs: " with some
 * text after it, and that stdout is empty.
 */
void assert_one_error_line(const run_result *r, const char *what);

/** Assert that haystack (len bytes) does not contain needle. */
void assert_not_contains(const void *hay, size_t len, const char *needle, const char *what);

/** 1 if s contains needle ignoring ASCII case. */
int contains_nocase(const char *s, const char *needle);

/* ------------------------------------------------------------------ */
/* Files and directories                                               */

/** malloc'd printf; aborts on failure. */
char *xasprintf(const char *fmt, ...) ITEST_PRINTF(1, 2);

/** a "/" b, malloc'd. */
char *pjoin(const char *a, const char *b);

/** mkdtemp under $TMPDIR or /tmp with a name starting "amberfs-itest-". */
char *make_temp_dir(void);

/** Remove path and everything below it.  @return 0 or -1. */
int rm_rf(const char *path);

/** mkdir -p with mode for the created components; asserts. */
void mkdir_p(const char *path, mode_t mode);

/** Write a file (O_TRUNC) with mode; asserts. */
void write_file(const char *path, const void *data, size_t len, mode_t mode);
void write_str(const char *path, const char *s);

/** Read a whole file (malloc'd, NUL-terminated); asserts. */
char *read_file(const char *path, size_t *len);

/** Write (or append, if append) `size` pseudo-random bytes from `seed`. */
void write_random_file(const char *path, uint64_t size, uint64_t seed, int append);

/** Fill buf with pseudo-random bytes continuing state *s (xorshift64*). */
void fill_random(void *buf, size_t len, uint64_t *s);

/** Write the passphrase file `path` (mode 0600) holding `pass` exactly. */
void write_passfile(const char *path, const char *pass);

/**
 * A listing of everything under `path`: one sorted line per entry with its
 * relative path, type, mode, size and mtime (ns).  "" for a missing path.
 */
char *dir_fingerprint(const char *path);

/** Total bytes (st_size) of regular files under path (like du -sb). */
uint64_t du_bytes(const char *path);

/** 1 if some regular file under `path` contains `needle` (byte search). */
int tree_contains_bytes(const char *path, const void *needle, size_t len);

/** Current CLOCK_MONOTONIC in seconds. */
double now_s(void);

/** Sleep for `s` seconds (nanosleep, restarted on EINTR). */
void sleep_s(double s);

/* ------------------------------------------------------------------ */
/* Generated trees and comparison                                      */

/**
 * Build the awkward tree at `root` (created): odd names, chunk-boundary
 * sizes, multi-chunk and compressible files, symlinks, a hardlink group,
 * binary xattrs, odd modes, a fifo, a device node, ns mtimes (pre-1970 and
 * far future), foreign owners, a 20-level deep directory and a directory
 * of 1500 entries.  Asserts on any failure (mknod EPERM included).
 */
void make_awkward_tree(const char *root);

/** Name of the multi-chunk 5 MiB file in the awkward tree (relative path). */
#define AWK_BIG "big/random 5m"
/** The setuid file and sticky directory (relative paths). */
#define AWK_SETUID "modes/setuid"
#define AWK_SETGID "modes/setgid"
#define AWK_STICKY "modes/sticky"
/** A directory with awkward content, for subpath restores. */
#define AWK_SUBDIR "odd dir"

enum tree_diff_flags {
	TD_SKIP_ROOT_META = 1,   /**< do not compare the two roots' own metadata */
};

/**
 * Walk trees a and b in parallel and compare every entry: names, type,
 * mode (07777), uid, gid, size, mtime (s, ns; directories after their
 * children), bytes, symlink targets, xattrs, hardlink groups, rdev.
 * @return NULL if equal, else a malloc'd description of the first
 *         difference, naming the path.
 */
char *tree_diff(const char *a, const char *b, int flags);

/** Assert tree_diff(a, b, flags) finds nothing. */
void assert_trees_equal(const char *a, const char *b, int flags, const char *what);

/* ------------------------------------------------------------------ */
/* Tiny JSON helpers                                                   */

/** 1 if text is one syntactically valid JSON value (with surrounding space). */
int json_valid(const char *text);

/**
 * Find "key": in obj (a flat JSON object's text) and return its value: a
 * string (unescaped, malloc'd) or for non-strings the raw token (malloc'd).
 * NULL if absent.  Sets *is_string if non-NULL.
 */
char *json_get(const char *obj, const char *key, int *is_string);

/** json_get() as an integer (number or numeric string); asserts presence. */
long long json_get_ll(const char *obj, const char *key);

/**
 * Split the objects of a JSON array printed one object per line.
 * @return number of objects; *objs receives malloc'd strings.
 */
size_t json_lines(const char *text, char ***objs);

/* A new metadata commit (refs/amberfs/meta) whose tree has `entry` (config
 * or keys) replaced by the blob oid (hex). */
void meta_replace(const char *arch, const char *entry, const char *oid);

#endif
