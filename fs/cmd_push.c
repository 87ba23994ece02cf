/*
 * amberfs push ARCHIVE REMOTE
 *
 * Copies every amberfs ref (refs/heads/, refs/tags/, refs/amberfs/) and the
 * objects they reach to REMOTE, any git URL libgit2 supports.  Objects go
 * first, refs last; nothing is forced.  A local path that does not exist
 * becomes a new bare repository.  The replica is a complete archive that
 * `amberfs verify --no-key` checks and that reads with the key.
 */
#include "cli.h"

#include "amber_verify.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

static const char help[] =
	"Usage: amberfs push ARCHIVE REMOTE\n"
	"Copy ARCHIVE's snapshots, tags, key slots and config to REMOTE, a git URL\n"
	"(a path, file://, ssh://user@host/path) or a path that does not exist yet\n"
	"(created as a bare repository).  Objects are sent before refs; refs are\n"
	"never forced, so a replica holding other history is refused.\n"
	"No passphrase is needed.\n"
	"\n"
	"  -q, --quiet   print nothing on success\n"
	"  -h, --help    show this help\n";

struct push_args {
	const char *pos[2];     /* ARCHIVE, REMOTE */
	int quiet;
};

static int parse(struct push_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":hq", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		else if (c == 'q')
			o->quiet = 1;
		else
			return cli_bad_option("push", c, argv);
	}
	if (cli_positionals(o->pos, 2, argc, argv, optind, "push", "ARCHIVE REMOTE"))
		return CLI_EXIT_USAGE;
	return -1;
}

int cmd_push(int argc, char **argv)
{
	struct push_args o = {0};
	amber_push_stats st = AMBER_PUSH_STATS_INIT;
	amber_open_opts oo;
	amber_archive *a = NULL;
	int status = parse(&o, argc, argv), rc;

	if (status >= 0)
		return status;
	cli_open_opts(&oo);
	rc = amber_archive_open_ext(&a, o.pos[0], &oo);
	if (rc)
		return cli_fail(rc, o.pos[0]);
	rc = amber_push(&st, a, o.pos[1]);
	amber_archive_free(a);
	if (rc)
		return cli_fail(rc, o.pos[0]);
	if (!o.quiet)
		printf("push: %s%" PRIu64 " of %" PRIu64 " refs updated%s\n",
		       st.created ? "created a bare repository; " : "", st.updated, st.refs,
		       st.updated ? "" : " (already up to date)");
	return CLI_EXIT_OK;
}
