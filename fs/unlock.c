/*
 * Where an archive's key comes from: a passphrase (secret.c), a key file,
 * SLIP-0039 shares, or (the token module) a PKCS#11 token.
 *
 * The options that name these secrets are the same for every command that
 * needs the key, so main() takes them out of the command's argv before the
 * command parses it (cli_unlock_scan): --keyfile F, --share F (repeatable),
 * --share-passphrase-file F.  A token's options join the table `scanned`.
 * The mount adds the same from -o keyfile=,share=,share_passphrase_file=.
 *
 * systemd credentials: when $CREDENTIALS_DIRECTORY is set, a secret file
 * named without a '/' is taken from that directory if it is there
 * (LoadCredential=keyfile:/etc/amberfs/venue.key, then --keyfile keyfile),
 * and with no secret option at all the well-known names are used, first
 * found wins: `keyfile`, `shares` (a file or a directory of share files,
 * with `share-passphrase` if present), then `passphrase`.
 *
 * Secret bytes only ever live in sodium_malloc memory, read there directly
 * with read(2), and are wiped on free.
 */
#include "cli.h"

#include "amber_keys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct cli_unlock cli_unlock_src;

/* ---- scanning argv ----------------------------------------------------------------- */

static const struct {
	const char *name;
	int repeat;
} scanned[] = {
	{"--keyfile", 0},
	{"--share", 1},
	{"--share-passphrase-file", 0},
};

#define NSCANNED (sizeof(scanned) / sizeof(scanned[0]))

static int store(size_t which, const char *value, const char *cmd)
{
	struct cli_unlock *u = &cli_unlock_src;

	if (!*value)
		return cli_usage(cmd, "%s wants a file name", scanned[which].name);
	if (which == 0) {
		if (u->keyfile)
			return cli_usage(cmd, "--keyfile given twice");
		u->keyfile = value;
	} else if (which == 1) {
		if (u->nshares == CLI_SHARE_ARGS_MAX)
			return cli_usage(cmd, "more than %d --share options", CLI_SHARE_ARGS_MAX);
		u->shares[u->nshares++] = value;
	} else {
		if (u->share_passfile)
			return cli_usage(cmd, "--share-passphrase-file given twice");
		u->share_passfile = value;
	}
	return 0;
}

/* Which scanned option argv[i] is (its value inline after '=' or not), or -1. */
static int match(const char *arg, const char **inline_value)
{
	for (size_t k = 0; k < NSCANNED; k++) {
		size_t n = strlen(scanned[k].name);

		if (strncmp(arg, scanned[k].name, n) != 0)
			continue;
		if (arg[n] == '\0') {
			*inline_value = NULL;
			return (int)k;
		}
		if (arg[n] == '=') {
			*inline_value = arg + n + 1;
			return (int)k;
		}
	}
	return -1;
}

int cli_unlock_scan(int *argc, char **argv)
{
	int out = 1, i = 1;

	while (i < *argc) {
		const char *val = NULL;
		int k = strcmp(argv[i], "--") == 0 ? -2 : match(argv[i], &val);
		int rc;

		if (k == -2)
			break;
		if (k < 0) {
			argv[out++] = argv[i++];
			continue;
		}
		if (!val && i + 1 >= *argc)
			return cli_usage(argv[0], "option '%s' requires an argument", argv[i]);
		rc = store((size_t)k, val ? val : argv[i + 1], argv[0]);
		if (rc)
			return rc;
		i += val ? 1 : 2;
	}
	while (i < *argc)
		argv[out++] = argv[i++];
	argv[out] = NULL;
	*argc = out;
	return 0;
}

int cli_unlock_add_share(const char *file)
{
	return store(1, file, "mount");
}

/* ---- credentials ------------------------------------------------------------------- */

char *cli_secret_path(const char *name)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	struct stat st;
	char *p;
	size_t len;

	if (!dir || !*dir || strchr(name, '/') || !*name)
		return strdup(name);
	len = strlen(dir) + strlen(name) + 2;
	if (!(p = malloc(len)))
		return NULL;
	snprintf(p, len, "%s/%s", dir, name);
	if (stat(p, &st) == 0)
		return p;
	free(p);
	return strdup(name);
}

/* $CREDENTIALS_DIRECTORY/name if it exists (malloc'd), else NULL. */
static char *credential(const char *name)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	struct stat st;
	char *p;
	size_t len;

	if (!dir || !*dir)
		return NULL;
	len = strlen(dir) + strlen(name) + 2;
	if (!(p = malloc(len)))
		return NULL;
	snprintf(p, len, "%s/%s", dir, name);
	if (stat(p, &st) == 0)
		return p;
	free(p);
	return NULL;
}

/* ---- key files ----------------------------------------------------------------------- */

static int keyfile_read(uint8_t *key, const char *name)
{
	char *path = cli_secret_path(name);
	uint8_t extra;
	ssize_t r = 0;
	size_t n = 0;
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) : -1;

	if (fd < 0) {
		cli_error("cannot open key file %s: %s", name, strerror(path ? errno : ENOMEM));
		free(path);
		return CLI_EXIT_ERROR;
	}
	free(path);
	while (n < AMBER_KEYFILE_BYTES && (r = read(fd, key + n, AMBER_KEYFILE_BYTES - n)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		n += (size_t)r;
	}
	if (r >= 0 && n == AMBER_KEYFILE_BYTES)
		while ((r = read(fd, &extra, 1)) < 0 && errno == EINTR)
			;
	close(fd);
	if (r < 0)
		return cli_error("cannot read key file %s: %s", name, strerror(errno));
	if (n != AMBER_KEYFILE_BYTES || r > 0)
		return cli_error("key file %s is not an amberfs key file (those are exactly %d "
				 "bytes): give the file 'amberfs key add-keyfile' wrote", name,
				 AMBER_KEYFILE_BYTES);
	return 0;
}

/* ---- share files ----------------------------------------------------------------------- */

#define SHARE_ARENA (64u << 10)
#define SHARE_LINE_MAX 1024

struct shares {
	char *arena;            /* sodium_malloc: every mnemonic, NUL-terminated */
	size_t used;
	const char *m[CLI_SHARES_MAX];
	char where[CLI_SHARES_MAX][64]; /* "FILE line N", for messages */
	size_t n;
};

static int share_add_line(struct shares *s, const char *line, size_t len, const char *file,
			  size_t lineno)
{
	while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	while (len && (*line == ' ' || *line == '\t'))
		line++, len--;
	if (len == 0 || line[0] == '#')
		return 0;
	if (s->n == CLI_SHARES_MAX)
		return cli_error("more than %d shares given: give only the shares needed",
				 CLI_SHARES_MAX);
	if (s->used + len + 1 > SHARE_ARENA || len > SHARE_LINE_MAX)
		return cli_error("share file %s: line %zu is too long to be a share", file, lineno);
	memcpy(s->arena + s->used, line, len);
	s->arena[s->used + len] = '\0';
	s->m[s->n] = s->arena + s->used;
	snprintf(s->where[s->n++], sizeof(s->where[0]), "%.48s line %zu", file, lineno);
	s->used += len + 1;
	return 0;
}

/* Read a whole file into buf (sodium memory, cap bytes); @return its length or -1. */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	ssize_t r;

	while (n < cap && (r = read(fd, buf + n, cap - n)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		n += (size_t)r;
	}
	return (ssize_t)n;
}

static int share_file(struct shares *s, const char *path, const char *shown)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY), rc = 0;
	char *buf;
	ssize_t len;
	size_t lineno = 1;

	if (fd < 0)
		return cli_error("cannot open share file %s: %s", shown, strerror(errno));
	if (!(buf = sodium_malloc(SHARE_ARENA))) {
		close(fd);
		return cli_error("out of locked memory for shares");
	}
	len = read_all(fd, buf, SHARE_ARENA);
	close(fd);
	if (len < 0)
		rc = cli_error("cannot read share file %s: %s", shown, strerror(errno));
	else if ((size_t)len == SHARE_ARENA)
		rc = cli_error("share file %s is too large to hold shares", shown);
	for (char *p = buf; rc == 0 && len > 0 && p < buf + len; lineno++) {
		char *nl = memchr(p, '\n', (size_t)(buf + len - p));
		size_t l = nl ? (size_t)(nl - p) : (size_t)(buf + len - p);

		rc = share_add_line(s, p, l, shown, lineno);
		p += l + 1;
	}
	sodium_free(buf);
	return rc;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of a directory not starting with '.', in name order. */
static int share_dir(struct shares *s, const char *path, const char *shown)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char *names[CLI_SHARES_MAX], full[PATH_MAX];
	size_t n = 0;
	int rc = 0;

	if (!d)
		return cli_error("cannot open share directory %s: %s", shown, strerror(errno));
	while (rc == 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == CLI_SHARES_MAX)
			rc = cli_error("share directory %s has more than %d files", shown,
				       CLI_SHARES_MAX);
		else if (!(names[n++] = strdup(e->d_name)))
			rc = cli_error("out of memory");
	}
	closedir(d);
	if (rc == 0)
		qsort(names, n, sizeof(names[0]), name_cmp);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct stat st;

		snprintf(full, sizeof(full), "%s/%s", path, names[i]);
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode))
			rc = share_file(s, full, names[i]);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	return rc;
}

static int share_source(struct shares *s, const char *name)
{
	char *path = cli_secret_path(name);
	struct stat st;
	int rc;

	if (!path)
		return cli_error("out of memory");
	if (stat(path, &st) != 0)
		rc = cli_error("cannot open share file %s: %s", name, strerror(errno));
	else if (S_ISDIR(st.st_mode))
		rc = share_dir(s, path, name);
	else
		rc = share_file(s, path, strrchr(name, '/') ? strrchr(name, '/') + 1 : name);
	free(path);
	return rc;
}

static void shares_free(struct shares *s)
{
	if (s->arena) {
		sodium_memzero(s->arena, SHARE_ARENA);
		sodium_free(s->arena);
	}
	free(s);
}

static int shares_read(struct shares **out, const char *const *files, size_t nfiles)
{
	struct shares *s = calloc(1, sizeof(*s));
	int rc = 0;

	*out = NULL;
	if (!s || !(s->arena = sodium_malloc(SHARE_ARENA))) {
		free(s);
		return cli_error("out of locked memory for shares");
	}
	for (size_t i = 0; rc == 0 && i < nfiles; i++)
		rc = share_source(s, files[i]);
	if (rc == 0 && s->n == 0)
		rc = cli_error("no shares found in the share files given");
	if (rc) {
		shares_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* "share N ..." messages: say where share N came from. */
static int shares_fail(const struct shares *s, int code, const char *archive)
{
	const char *msg = amber_error_last();
	unsigned long n = 0;

	if (code == AMBER_EPLAIN)
		return cli_fail(code, archive);
	if (sscanf(msg, "share %lu", &n) == 1 && n >= 1 && n <= s->n)
		return cli_error("%s (share %lu is %s)", msg, n, s->where[n - 1]);
	return cli_error("%s", msg);
}

/* ---- unlocking -------------------------------------------------------------------------- */

/* The passphrase for the shares, if any: "" when none is given. */
static int share_passphrase(unsigned char **pass, size_t *len, const char *archive)
{
	char *cred = NULL;
	const char *file = cli_unlock_src.share_passfile;
	int rc;

	*pass = NULL;
	*len = 0;
	if (!file)
		file = cred = credential("share-passphrase");
	if (!file)
		return 0;
	rc = cli_secret_get(pass, len, archive, file, 0);
	free(cred);
	return rc;
}

static int unlock_shares(amber_archive *a, const char *path, const char *const *files,
			 size_t nfiles)
{
	struct shares *s = NULL;
	unsigned char *pass = NULL;
	size_t plen = 0;
	int rc = shares_read(&s, files, nfiles);

	if (rc)
		return rc;
	rc = share_passphrase(&pass, &plen, path);
	if (rc == 0) {
		/* cli_secret_get leaves a NUL after the bytes (its buffer is larger) */
		rc = amber_archive_unlock_shares(a, s->m, s->n, pass ? (const char *)pass : NULL);
		if (rc)
			rc = shares_fail(s, rc, path);
	}
	cli_secret_free(pass, plen);
	shares_free(s);
	return rc;
}

/* A wrong key file or share set: the library says which and what to do. */
static int unlock_fail(int code, const char *archive)
{
	if (code == AMBER_EPLAIN || code != AMBER_EBADKEY)
		return cli_fail(code, archive);
	return cli_error("%s", amber_error_last());
}

static int unlock_keyfile(amber_archive *a, const char *path, const char *file)
{
	uint8_t *key = sodium_malloc(AMBER_KEYFILE_BYTES);
	int rc;

	if (!key)
		return cli_error("out of locked memory for the key file");
	rc = keyfile_read(key, file);
	if (rc == 0 && (rc = amber_archive_unlock_with(a, AMBER_SLOT_KEYFILE, key,
						       AMBER_KEYFILE_BYTES)) != 0)
		rc = unlock_fail(rc, path);
	sodium_free(key);
	return rc;
}

static int unlock_passphrase(amber_archive *a, const char *path, const char *passfile)
{
	unsigned char *pass = NULL;
	size_t len = 0;
	int rc;

	if (cli_secret_get(&pass, &len, path, passfile, 0))
		return CLI_EXIT_ERROR;
	rc = amber_archive_unlock(a, pass, len);
	cli_secret_free(pass, len);
	return rc ? cli_fail(rc, path) : 0;
}

int cli_unlock_given(void)
{
	return cli_unlock_src.keyfile || cli_unlock_src.nshares;
}

/* No option names a secret: the well-known credentials, in order. */
static int unlock_credentials(amber_archive *a, const char *path, int *done)
{
	char *p;
	int rc;

	*done = 1;
	if ((p = credential("keyfile"))) {
		rc = unlock_keyfile(a, path, p);
	} else if ((p = credential("shares"))) {
		const char *files[1] = {p};

		rc = unlock_shares(a, path, files, 1);
	} else if ((p = credential("passphrase"))) {
		rc = unlock_passphrase(a, path, p);
	} else {
		*done = 0;
		return 0;
	}
	free(p);
	return rc;
}

int cli_unlock_archive(amber_archive *a, const char *path, const char *passfile)
{
	const char *env = getenv("AMBERFS_PASSPHRASE_FILE");
	int done = 0, rc;

	if (cli_unlock_src.keyfile && cli_unlock_src.nshares)
		return cli_error("give --keyfile or --share, not both");
	if ((cli_unlock_src.keyfile || cli_unlock_src.nshares) && passfile)
		return cli_error("give --passphrase-file, --keyfile or --share, only one of them");
	if (cli_unlock_src.keyfile)
		return unlock_keyfile(a, path, cli_unlock_src.keyfile);
	if (cli_unlock_src.nshares)
		return unlock_shares(a, path, cli_unlock_src.shares, cli_unlock_src.nshares);
	if (!passfile && !(env && *env)) {
		rc = unlock_credentials(a, path, &done);
		if (done)
			return rc;
	}
	return unlock_passphrase(a, path, passfile);
}
