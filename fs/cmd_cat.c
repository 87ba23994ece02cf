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
	"\n"
	"      --stream S              resolve 'latest' and @TIME in stream S\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"  -h, --help                  show this help\n";

enum { OPT_STREAM = CLI_OPT_LONG, OPT_PASSFILE };

struct cat_args {
	const char *pos[2];     /* ARCHIVE, SNAPSHOT:PATH */
	const char *passfile;
	const char *stream;
};

/* @return -1 to go on, else the exit status. */
static int parse(struct cat_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"stream", required_argument, NULL, OPT_STREAM},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		else if (c == OPT_STREAM)
			o->stream = optarg;
		else if (c == OPT_PASSFILE)
			o->passfile = optarg;
		else
			return cli_bad_option("cat", c, argv);
	}
	if (cli_positionals(o->pos, 2, argc, argv, optind, "cat", "ARCHIVE SNAPSHOT:PATH"))
		return CLI_EXIT_USAGE;
	return -1;
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

/* Directories are left to amber_file_read, whose AMBER_EISDIR names them. */
static int cat(struct cli_target *t)
{
	amber_entry *e = NULL;
	char *buf = NULL;
	int status, rc = amber_stat(&e, t->snap, t->path);

	if (rc)
		return cli_fail(rc, amber_archive_path(t->archive));
	if (e->type != AMBER_T_REG && e->type != AMBER_T_DIR)
		status = cli_error("%s: not a regular file", t->path);
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
		status = cat(&t);
	cli_target_close(&t);
	return status;
}
