/*
 * A small trading engine that snapshots its own state with libamber.
 *
 * The engine keeps its state as files under STATE: an append-only ledger,
 * one order book per symbol (rewritten on every trade) and one file per
 * account.  At each consistent point (here: after every step) it knows
 * exactly which files it touched, so it hands that list to a libamber
 * writer session, which then stats and reads only those paths: no scan of
 * the tree.  The ledger is declared append-only, so each snapshot reads
 * only its new tail.
 *
 *   engine ARCHIVE STATE [--steps N] [--passphrase-file FILE] [--cache-dir DIR]
 *
 * Creates ARCHIVE if it does not exist (plain, or encrypted with the
 * passphrase in FILE), writes a first snapshot of STATE, then runs N steps
 * (default 5) with a snapshot after each, and prints the id of every
 * snapshot on standard output, one per line.  The session's caches live
 * in DIR (default: the user's cache directory).  Build it with
 *
 *   cc -o engine engine.c $(pkg-config --cflags --libs libamber)
 */
#include <amber.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_PASS 1024

static const char *const symbols[] = {"AAPL", "MSFT", "NVDA"};
#define NSYMBOLS (sizeof(symbols) / sizeof(symbols[0]))

struct engine {
	const char *state;
	amber_archive *a;
	amber_writer *w;
	char paths[8][64];       /* what the current step changed */
	amber_dirty dirty[8];
	size_t ndirty;
};

static int fail(const char *what)
{
	fprintf(stderr, "engine: %s: %s\n", what, amber_error_last());
	return 1;
}

/* Write (or with `append`, append) `text` to STATE/rel and note rel as changed. */
static int put(struct engine *e, const char *rel, const char *text, int append)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", e->state, rel);
	f = fopen(path, append ? "a" : "w");
	if (!f || fputs(text, f) == EOF || fclose(f) != 0) {
		fprintf(stderr, "engine: %s: %s\n", path, strerror(errno));
		return -1;
	}
	snprintf(e->paths[e->ndirty], sizeof(e->paths[0]), "%s", rel);
	e->dirty[e->ndirty].path = e->paths[e->ndirty];
	e->dirty[e->ndirty].subtree = 0;
	e->ndirty++;
	return 0;
}

/* One trade: a ledger line, a rewritten order book, a new account. */
static int step(struct engine *e, int n)
{
	char line[256], rel[64];
	const char *sym = symbols[n % NSYMBOLS];

	e->ndirty = 0;
	snprintf(line, sizeof(line), "%06d BUY %s 100 @ %d.%02d\n", n, sym, 100 + n, n % 100);
	snprintf(rel, sizeof(rel), "books/%s", sym);
	if (put(e, "ledger.log", line, 1) < 0 || put(e, rel, line + 7, 0) < 0)
		return -1;
	snprintf(rel, sizeof(rel), "accounts/acct-%04d", n);
	snprintf(line, sizeof(line), "balance %d\n", 1000 * n);
	return put(e, rel, line, 0);
}

static int make_state(const char *state)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/books", state);
	if ((mkdir(state, 0755) < 0 && errno != EEXIST) || (mkdir(path, 0755) < 0 && errno != EEXIST))
		return -1;
	snprintf(path, sizeof(path), "%s/accounts", state);
	return mkdir(path, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

/* The passphrase from FILE (one line), into pass; never in argv. */
static int read_pass(unsigned char *pass, size_t *len, const char *file)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, pass, MAX_PASS);

	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		fprintf(stderr, "engine: cannot read the passphrase file %s\n", file);
		return -1;
	}
	while (n > 0 && (pass[n - 1] == '\n' || pass[n - 1] == '\r'))
		n--;
	*len = (size_t)n;
	return 0;
}

static int open_archive(struct engine *e, const char *path, const char *passfile,
			const char *cache_dir)
{
	amber_open_opts oo = AMBER_OPEN_OPTS_INIT;
	unsigned char pass[MAX_PASS];
	size_t len = 0;
	int rc;

	if (passfile && read_pass(pass, &len, passfile) < 0)
		return -1;
	oo.cache_dir = cache_dir;
	oo.expect_encrypted = passfile != NULL;
	rc = amber_archive_open_ext(&e->a, path, &oo);
	if (rc == AMBER_ENOTFOUND) {
		amber_create_opts co = AMBER_CREATE_OPTS_INIT;

		co.plain = !passfile;
		co.passphrase = passfile ? pass : NULL;
		co.passphrase_len = len;
		co.open = &oo;
		rc = amber_archive_create(&e->a, path, &co);
	} else if (rc == 0 && amber_archive_needs_key(e->a) && !passfile) {
		fprintf(stderr, "engine: %s is encrypted: give --passphrase-file\n", path);
		rc = AMBER_ENEEDKEY;
	} else if (rc == 0 && amber_archive_needs_key(e->a)) {
		rc = amber_archive_unlock(e->a, pass, len);
	}
	explicit_bzero(pass, sizeof(pass));
	if (rc < 0 && rc != AMBER_ENEEDKEY)
		fail(path);
	return rc < 0 ? -1 : 0;
}

/* Snapshot what the last step changed (NULL list: the first, whole walk). */
static int capture(struct engine *e, int whole)
{
	char id[AMBER_OID_HEXSZ + 1];
	amber_stats st = AMBER_STATS_INIT;
	int rc = amber_writer_snapshot(id, &st, e->w, whole ? NULL : e->dirty,
				       whole ? 0 : e->ndirty);

	if (rc < 0)
		return fail("snapshot");
	printf("%s\n", id);
	fprintf(stderr, "engine: %s %s: %" PRIu64 " files, %" PRIu64 " bytes read\n",
		rc == 1 ? "unchanged" : "snapshot", id, st.files, st.bytes_read);
	return 0;
}

static int run(struct engine *e, const char *src, int steps)
{
	static const char *const append_only[] = {"ledger.log", NULL};
	amber_writer_opts wo = AMBER_WRITER_OPTS_INIT;
	int rc = 0;

	wo.snap.message = "engine state at a consistent point";
	wo.append_only = append_only;
	if (step(e, 0) < 0)
		return -1;
	if (amber_writer_open(&e->w, e->a, src, &wo) < 0)
		return fail("writer session");
	rc = capture(e, 1);
	for (int n = 1; rc == 0 && n <= steps; n++)
		rc = step(e, n) < 0 ? -1 : capture(e, 0);
	if (amber_writer_close(e->w) < 0 && rc == 0)
		rc = fail("closing the writer session");
	return rc;
}

static int usage(void)
{
	fprintf(stderr, "usage: engine ARCHIVE STATE [--steps N] [--passphrase-file FILE] "
		"[--cache-dir DIR]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct engine e = {0};
	const char *passfile = NULL, *cache_dir = NULL;
	int steps = 5, rc;

	if (argc < 3)
		return usage();
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
			steps = (int)strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--passphrase-file") == 0 && i + 1 < argc)
			passfile = argv[++i];
		else if (strcmp(argv[i], "--cache-dir") == 0 && i + 1 < argc)
			cache_dir = argv[++i];
		else
			return usage();
	}
	e.state = argv[2];
	if (amber_global_init() < 0)
		return fail("init");
	if (make_state(e.state) < 0) {
		fprintf(stderr, "engine: %s: %s\n", e.state, strerror(errno));
		return 1;
	}
	if (open_archive(&e, argv[1], passfile, cache_dir) < 0)
		return 1;
	rc = run(&e, e.state, steps);
	amber_archive_free(e.a);
	return rc == 0 ? 0 : 1;
}
