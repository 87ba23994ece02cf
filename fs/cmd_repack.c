/*
 * amberfs repack ARCHIVE [--all] [--quiet]
 *
 * Consolidates the archive's pack files now, as every snapshot does after
 * it is written (amber_archive_repack()).  Needs no key: objects are
 * copied as they are stored.
 */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

static const char help[] =
	"Usage: amberfs repack ARCHIVE [OPTIONS]\n"
	"Merge ARCHIVE's smallest pack files until each pack is at least twice the\n"
	"size of all smaller ones together (every snapshot does this too), so that\n"
	"a long history keeps few packs.  Objects are copied as they are stored;\n"
	"old packs are removed only once the merged one is on disk.  Takes the\n"
	"writer lock; mounts and restores may keep running.  No passphrase is needed.\n"
	"\n"
	"      --all     merge every pack below the rollover size into one\n"
	"  -q, --quiet   print nothing on success\n"
	"  -h, --help    show this help\n";

enum { OPT_ALL = CLI_OPT_LONG };

struct repack_args {
	const char *pos[1];     /* ARCHIVE */
	unsigned flags;
	int quiet;
};

static int parse(struct repack_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"all", no_argument, NULL, OPT_ALL},
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
		else if (c == OPT_ALL)
			o->flags |= AMBER_REPACK_ALL;
		else
			return cli_bad_option("repack", c, argv);
	}
	if (cli_positionals(o->pos, 1, argc, argv, optind, "repack", "ARCHIVE"))
		return CLI_EXIT_USAGE;
	return -1;
}

static const char *plural(uint64_t n)
{
	return n == 1 ? "" : "s";
}

static void report(const amber_repack_stats *st)
{
	char size[32];

	cli_human_size(size, st->bytes);
	printf("repack: %" PRIu64 " pack%s before, %" PRIu64 " merged (%" PRIu64 " object%s, "
	       "%s copied), %" PRIu64 " after\n", st->packs_before, plural(st->packs_before),
	       st->packs_merged, st->objects, plural(st->objects), size, st->packs_after);
}

int cmd_repack(int argc, char **argv)
{
	struct repack_args o = {0};
	amber_repack_stats st = AMBER_REPACK_STATS_INIT;
	amber_archive *a = NULL;
	int status = parse(&o, argc, argv), rc;

	if (status >= 0)
		return status;
	rc = amber_archive_open(&a, o.pos[0]);
	if (rc)
		return cli_fail(rc, o.pos[0]);
	rc = amber_archive_repack(&st, a, o.flags);
	amber_archive_free(a);
	if (rc)
		return cli_fail(rc, o.pos[0]);
	if (!o.quiet)
		report(&st);
	return CLI_EXIT_OK;
}
