/*
 * amberfs command line: helpers shared by the subcommands.
 *
 * Every command is a function `int cmd_<name>(int argc, char **argv)` that
 * receives argv starting at the command's own name and returns the process
 * exit status (enum cli_exit).  Helpers that can fail print their one-line
 * message themselves and return an exit status too, so a command passes a
 * non-zero result straight up.
 */
#ifndef AMBERFS_CLI_H
#define AMBERFS_CLI_H

#include <getopt.h>

#include "amber.h"

#include <stdint.h>
#include <stdio.h>

/** Exit statuses, documented in amberfs(1). */
enum cli_exit {
	CLI_EXIT_OK = 0,
	CLI_EXIT_ERROR = 1,     /**< the command failed */
	CLI_EXIT_USAGE = 2,     /**< bad options or arguments */
	CLI_EXIT_PARTIAL = 3,   /**< done, but some entries could not be handled */
	CLI_EXIT_PLAIN = 4,     /**< refused: the archive says it is plain where
				     encryption was expected (a downgrade?) */
};

/**
 * Set by the global option --kdf-profile=test: init writes a test-profile
 * key slot (minimum Argon2id cost) and unlocking accepts such weak slots.
 * For test suites only; never set from the environment.
 */
extern int cli_kdf_test;

/**
 * Set when amberfs runs as `amberfs ARCHIVE MOUNTPOINT -o OPTIONS` (the
 * form mount.fuse3 uses): mount then drops the "rw" mount(8) adds.
 */
extern int cli_mount_helper;

/**
 * The library options every command opens archives with, from the
 * environment (AMBERFS_CACHE_DIR, else XDG_CACHE_HOME/amberfs, else
 * $HOME/.cache/amberfs, else the library's default from the password
 * database; AMBERFS_PACK_ROLLOVER_BYTES) and --kdf-profile.
 */
void cli_open_opts(amber_open_opts *o);

/** How every command's help names snapshots (help stands without the man page). */
#define CLI_HELP_SNAPSHOT \
	"SNAPSHOT is latest (the newest), a commit id or a unique prefix of at least 7\n" \
	"hex digits, a tag, or @TIME (ISO 8601 in UTC or with an offset, or @EPOCH).\n"

/** Long-only option values start here, above every short option letter. */
#define CLI_OPT_LONG 256

/** One subcommand in main.c's table. */
struct cli_cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;    /**< one line for `amberfs --help` */
};

int cmd_init(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_log(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_key(int argc, char **argv);
int cmd_tag(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_push(int argc, char **argv);
int cmd_repack(int argc, char **argv);
int cmd_watch(int argc, char **argv);

/* Usage and errors ----------------------------------------------------- */

/**
 * Print "amberfs: CMD: <message>" and the "Try 'amberfs CMD --help'." hint
 * on stderr.  @return CLI_EXIT_USAGE.
 */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * Report getopt_long's '?' or ':' result for `cmd` (call with the value
 * getopt_long returned and the argv it parsed).  @return CLI_EXIT_USAGE.
 */
/**
 * getopt_long that refuses abbreviated long options (returns '?'; then
 * cli_bad_option names the option as typed).
 */
int cli_getopt(int argc, char **argv, const char *sopts, const struct option *lopts);
int cli_bad_option(const char *cmd, int c, char **argv);

/**
 * Settle the signing key of a writing command: --signing-key and --unsigned
 * exclude each other, an empty file name is refused, and without either
 * option $AMBERFS_SIGNING_KEY is the default.
 * @return -1 to go on, else the usage exit status.
 */
int cli_signing_key(const char *cmd, const char **key, int unsigned_ok);

/**
 * Parse a read command that takes only --stream, --passphrase-file,
 * --help and (when `safe` is not NULL) --safe, and exactly `npos`
 * operands (named in `usage`) into pos.
 * @return -1 to go on, else the exit status.
 */
int cli_parse_read_cmd(const char **pos, int npos, const char **stream, const char **passfile,
		       int *safe, int argc, char **argv, const char *cmd, const char *usage,
		       const char *help);

/** Print "amberfs: <message>" on stderr.  @return CLI_EXIT_ERROR. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * Print the library's last error for a call that returned `code`, with the
 * wording amberfs(1) promises for a wrong passphrase on `archive`.
 * @return CLI_EXIT_PLAIN for AMBER_EPLAIN, else CLI_EXIT_ERROR.
 */
int cli_fail(int code, const char *archive);

/** Print `text` (a command's help) on stdout.  @return CLI_EXIT_OK. */
int cli_help(const char *text);

/**
 * Take the command's positionals argv[first..argc) into out[0..need).
 * When exactly one is missing and AMBERFS_ARCHIVE is set, out[0] is the
 * archive from the environment.  `synopsis` names the expected operands.
 * @return 0 or CLI_EXIT_USAGE (after printing why).
 */
int cli_positionals(const char **out, int need, int argc, char **argv, int first,
		    const char *cmd, const char *synopsis);

/**
 * Parse a decimal integer in [min, max] for option `opt` of `cmd`.
 * @return 0 or CLI_EXIT_USAGE.
 */
int cli_parse_int(int *out, const char *text, int min, int max, const char *cmd,
		  const char *opt);

/* Archives and snapshots ------------------------------------------------ */

/**
 * Open the archive at `path` and, if it is encrypted, unlock it with the
 * passphrase from `passfile`, $AMBERFS_PASSPHRASE_FILE or the terminal.
 * An explicit `passfile` says the archive is encrypted: if it claims to be
 * plain, that is refused (CLI_EXIT_PLAIN), as is a plain claim of an
 * archive this machine saw encrypted.
 * @return 0 (free *out with amber_archive_free) or the exit status.
 */
int cli_open_archive(amber_archive **out, const char *path, const char *passfile);

/**
 * Split SNAPSHOT[:PATH] in place: `arg` is cut at the separating ':' and
 * *path points after it ("" when there is no PATH).  Specs starting with
 * '@' are times, which contain ':' themselves: the whole argument is tried
 * as a time first, then each ':' from the right until the left side parses.
 */
void cli_split_spec(char *arg, const char **spec, const char **path);

/**
 * Resolve `spec` in `stream` and open that snapshot.
 * @return 0 (free *out with amber_snapshot_free) or CLI_EXIT_ERROR.
 */
int cli_open_snapshot(amber_snapshot **out, amber_archive *a, const char *stream,
		      const char *spec);

/** An opened archive, one of its snapshots, and a PATH inside it. */
struct cli_target {
	amber_archive *archive;
	amber_snapshot *snap;
	char *arg;              /**< owned copy of SNAPSHOT[:PATH], split in place */
	const char *spec;       /**< SNAPSHOT part of arg */
	const char *path;       /**< PATH part of arg, "" for the root */
};

/**
 * Open `archive` (unlocking it), split `arg` as SNAPSHOT[:PATH] and open
 * that snapshot of `stream` (NULL = main).
 * @return 0 or CLI_EXIT_ERROR; call cli_target_close() either way.
 */
int cli_target_open(struct cli_target *t, const char *archive, const char *passfile,
		    const char *stream, const char *arg);

/** Release what cli_target_open() opened.  Safe on a zeroed struct. */
void cli_target_close(struct cli_target *t);

/* Output ------------------------------------------------------------------ */

/** Length of the valid UTF-8 sequence at s (n > 0 bytes), or 0 if invalid. */
size_t cli_utf8_seq(const unsigned char *s, size_t n);

/** 1 if s[0..n) is entirely valid UTF-8 (no overlongs, no surrogates). */
int cli_utf8_valid(const char *s, size_t n);

/** Write s[0..n) as a JSON string literal (quotes included). */
void cli_json_string(FILE *f, const char *s, size_t n);

/**
 * Write `"key":"..."` for the byte string s[0..n); when s is not valid
 * UTF-8 also write `,"key_base64":"..."` with the exact bytes.
 */
void cli_json_bytes(FILE *f, const char *key, const char *s, size_t n);

/**
 * Write the byte string s[0..n) for a human: raw when `raw`, otherwise
 * with control characters and invalid UTF-8 replaced by '?'.
 */
void cli_print_name(FILE *f, const char *s, size_t n, int raw);

/** Format a byte count as "512 B", "1.5 KiB", "3.0 GiB" ... */
void cli_human_size(char out[32], uint64_t bytes);

/**
 * Format sec.nsec as ISO 8601 UTC with `digits` (0..9) fractional digits,
 * for any int64 second count (entry mtimes may lie outside int64 ns).
 */
void cli_time_iso(char out[64], int64_t sec, uint32_t nsec, int digits);

/* Secrets (secret.c) ------------------------------------------------------ */

/** Longest passphrase accepted, in bytes. */
#define CLI_SECRET_MAX 4096

/**
 * Obtain the passphrase for `archive`: from `file` if given, else from the
 * file named by $AMBERFS_PASSPHRASE_FILE, else from the terminal when stdin
 * is one (asked twice and compared if `confirm`).  The result lives in
 * sodium_malloc memory; release it with cli_secret_free().
 * @return 0, or CLI_EXIT_ERROR after printing why (no source, unreadable or
 *         empty file, mismatch, too long).
 */
int cli_secret_get(unsigned char **out, size_t *len, const char *archive, const char *file,
		   int confirm);

/** Wipe and free a passphrase from cli_secret_get().  NULL-safe. */
void cli_secret_free(unsigned char *secret, size_t len);

/**
 * A new passphrase for a key slot: from `file` (--new-passphrase-file)
 * or the terminal, asked twice.  One under 12 characters is refused off a
 * terminal unless `weak_ok`, and warned about on one.  Free with
 * cli_secret_free().  @return 0 or CLI_EXIT_ERROR after printing why.
 */
int cli_new_passphrase(unsigned char **out, size_t *len, const char *archive, const char *file,
		       int weak_ok);

/**
 * The weak-passphrase rule for a new passphrase: under CLI_PASSPHRASE_MIN
 * characters it is warned about when typed on a terminal (`tty`) and
 * refused otherwise (wiped, *pass NULL) unless `weak_ok`.
 * @return 0 or CLI_EXIT_ERROR after printing why.
 */
int cli_passphrase_strong(unsigned char **pass, size_t *len, int weak_ok, int tty);

/** Shortest new passphrase taken without --weak-ok, in characters. */
#define CLI_PASSPHRASE_MIN 12

/* Other secrets (unlock.c) ---------------------------------------------- */

#define CLI_SHARE_ARGS_MAX 32    /**< --share options */
#define CLI_SHARES_MAX 256       /**< mnemonics in all */

/**
 * The secrets named on the command line besides a passphrase: filled by
 * cli_unlock_scan() (and the mount's -o options), used by
 * cli_unlock_archive().  A token's URI and PIN file join them.
 */
struct cli_unlock {
	const char *keyfile;                   /**< --keyfile F */
	const char *shares[CLI_SHARE_ARGS_MAX]; /**< --share F (file or directory) */
	size_t nshares;
	const char *share_passfile;            /**< --share-passphrase-file F */
};

extern struct cli_unlock cli_unlock_src;

/**
 * Take --keyfile, --share and --share-passphrase-file (as "--opt F" or
 * "--opt=F", up to a "--") out of a command's argv (argv[0] is the
 * command's name) into cli_unlock_src, so that every command accepts them.
 * @return 0, or CLI_EXIT_USAGE after printing why.
 */
int cli_unlock_scan(int *argc, char **argv);

/** Add one share file or directory (the mount's -o share=F). @return 0 or CLI_EXIT_USAGE. */
int cli_unlock_add_share(const char *file);

/** 1 if --keyfile or --share was given. */
int cli_unlock_given(void);

/**
 * Unlock `a` with what was given: --keyfile, --share, else the passphrase
 * (`passfile`, $AMBERFS_PASSPHRASE_FILE), else the systemd credentials
 * (see unlock.c), else the terminal.
 * @return 0 or the exit status after printing why.
 */
int cli_unlock_archive(amber_archive *a, const char *path, const char *passfile);

/**
 * A secret file's path: a name without '/' is taken from
 * $CREDENTIALS_DIRECTORY when that is set and holds it.  malloc'd (NULL
 * when out of memory).
 */
char *cli_secret_path(const char *name);

/* Progress (progress.c) --------------------------------------------------- */

/**
 * State of the progress line and warning count of one long operation; it
 * is the payload of the amber_progress_cb / amber_warn_cb below.
 */
struct cli_progress {
	int enabled;            /**< stderr is a terminal */
	int width;              /**< terminal columns */
	int shown;              /**< columns of the line on screen, 0 if none */
	int64_t start_ns;       /**< CLOCK_MONOTONIC at cli_progress_init */
	int64_t last_ns;        /**< when the line was last drawn */
	uint64_t warnings;      /**< warnings reported so far */
	const char *noun;       /**< what `files` counts, singular (default "file") */
	char path[512];         /**< the entry the line last showed */
	uint64_t path_base;     /**< bytes_read when that entry first showed */
	uint64_t path_files;    /**< files done when that entry first showed */
};

void cli_progress_init(struct cli_progress *p);

/** amber_progress_cb: redraw the line (at most ~10 times a second). */
void cli_progress_cb(const amber_stats *sofar, const char *path, void *payload);

/** amber_warn_cb: print "amberfs: warning: PATH: message" and count it. */
void cli_progress_warn(const char *path, const char *message, void *payload);

/** Erase the progress line, if one is shown. */
void cli_progress_end(struct cli_progress *p);

#endif
