/*
 * amberfs cat ARCHIVE SNAPSHOT:PATH [--stream S]
 *
 * Copies a regular file to stdout in 1 MiB blocks.  Every block is
 * authenticated by the library before it is handed over, so a damaged
 * file stops the copy with an error rather than emitting bad bytes.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK (1u << 20)

static const char help[] =
	"Usage: amberfs cat ARCHIVE SNAPSHOT:PATH\n"
	"Write the contents of regular file PATH of SNAPSHOT to standard output.\n"
	CLI_HELP_SNAPSHOT
	"\n"
	"      --stream S              resolve 'latest' and @TIME in stream S\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"      --keyfile FILE, --share FILE (repeatable), --share-passphrase-file FILE\n"
	"                              unlock with a key file or recovery shares instead\n"
	"      --token-uri pkcs11:URI  unlock with the AES key of a token (a pkcs11 key\n"
	"                              slot) instead of a passphrase\n"
	"      --pin-file FILE         read the token's PIN from FILE (default: ask on\n"
	"                              the terminal)\n"
	"  -h, --help                  show this help\n";

struct cat_args {
	const char *pos[2];     /* ARCHIVE, SNAPSHOT:PATH */
	const char *passfile;
	const char *stream;
};

/* @return -1 to go on, else the exit status. */
static int parse(struct cat_args *o, int argc, char **argv)
{
	return cli_parse_read_cmd(o->pos, 2, &o->stream, &o->passfile, NULL, argc, argv, "cat",
				  "ARCHIVE SNAPSHOT:PATH", help);
}

static int write_all(const char *buf, size_t len)
{
	ssize_t r;

	while (len) {
		r = write(STDOUT_FILENO, buf, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return cli_error("write error on standard output: %s", strerror(errno));
		buf += r;
		len -= (size_t)r;
	}
	return 0;
}

static int copy(struct cli_target *t, const amber_entry *e, char *buf)
{
	uint64_t off = 0;
	size_t n;
	int rc;

	do {
		rc = amber_file_read(&n, t->snap, e, off, buf, BLOCK);
		if (rc)
			return cli_fail(rc, amber_archive_path(t->archive));
		if (write_all(buf, n))
			return CLI_EXIT_ERROR;
		off += n;
	} while (n == BLOCK);
	if (off != e->size)
		return cli_error("%s: read %llu bytes, the entry says %llu", t->path,
				 (unsigned long long)off, (unsigned long long)e->size);
	return CLI_EXIT_OK;
}

/* A directory: say which, and how to list it. */
static int is_dir(const struct cli_target *t, const char *archive)
{
	if (!t->path[0])
		return cli_error("%s is a snapshot's root directory, not a file: name a file as "
				 "%s:PATH (list them with 'amberfs ls %s %s')",
				 t->spec, t->spec, archive, t->spec);
	return cli_error("%s:%s is a directory, not a file (list it with 'amberfs ls %s %s:%s')",
			 t->spec, t->path, archive, t->spec, t->path);
}

static int cat(struct cli_target *t, const char *archive)
{
	amber_entry *e = NULL;
	char *buf = NULL;
	int status, rc = amber_stat(&e, t->snap, t->path);

	if (rc)
		return cli_fail(rc, amber_archive_path(t->archive));
	if (e->type == AMBER_T_DIR)
		status = is_dir(t, archive);
	else if (e->type != AMBER_T_REG)
		status = cli_error("%s:%s is not a regular file", t->spec, t->path);
	else if (!(buf = malloc(BLOCK)))
		status = cli_error("out of memory");
	else
		status = copy(t, e, buf);
	free(buf);
	amber_entry_free(e);
	return status;
}

int cmd_cat(int argc, char **argv)
{
	struct cat_args o = {0};
	struct cli_target t = {0};
	int status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	status = cli_target_open(&t, o.pos[0], o.passfile, o.stream, o.pos[1]);
	if (status == 0)
		status = cat(&t, o.pos[0]);
	cli_target_close(&t);
	return status;
}
