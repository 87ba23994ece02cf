/*
 * amberfs restore ARCHIVE SNAPSHOT[:PATH] DEST [--safe] [--stream S]
 *
 * The library refuses a DEST that exists and is not an empty directory; we
 * do not check it first (that would race) and print its error.  Metadata
 * that could not be applied is named in warnings and gives exit status 3.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <unistd.h>

static const char help[] =
	"Usage: amberfs restore ARCHIVE SNAPSHOT[:PATH] DEST [--safe]\n"
	"Copy PATH of SNAPSHOT (default: all of it) into DEST, which must not exist\n"
	"or be an empty directory.  Contents, modes, times, xattrs, symlinks, hard\n"
	"links, fifos and devices are restored, and owners when run as root.\n"
	CLI_HELP_SNAPSHOT
	"\n"
	"      --safe                  for an archive you do not trust: create no\n"
	"                              device nodes, clear setuid and setgid bits,\n"
	"                              set no security.* or trusted.* xattrs, and\n"
	"                              leave everything owned by you\n"
	"      --stream S              resolve 'latest' and @TIME in stream S\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"      --keyfile FILE, --share FILE (repeatable), --share-passphrase-file FILE\n"
	"                              unlock with a key file or recovery shares instead\n"
	"      --token-uri pkcs11:URI  unlock with the AES key of a token (a pkcs11 key\n"
	"                              slot) instead of a passphrase\n"
	"      --pin-file FILE         read the token's PIN from FILE (default: ask on\n"
	"                              the terminal)\n"
	"  -h, --help                  show this help\n"
	"\n"
	"Exit status 3: restored, but some entries or metadata could not be written;\n"
	"each is named in a warning on stderr.\n";

struct restore_args {
	const char *pos[3];     /* ARCHIVE, SNAPSHOT[:PATH], DEST */
	const char *passfile;
	const char *stream;
	int safe;
};

/* @return -1 to go on, else the exit status. */
static int parse(struct restore_args *o, int argc, char **argv)
{
	return cli_parse_read_cmd(o->pos, 3, &o->stream, &o->passfile, &o->safe, argc, argv,
				  "restore", "ARCHIVE SNAPSHOT[:PATH] DEST", help);
}

/* One line per kind of thing --safe left out. */
static void report_skipped(const amber_restore_skipped *k)
{
	if (k->devices)
		fprintf(stderr, "amberfs: --safe: %llu device node(s) not created\n",
			(unsigned long long)k->devices);
	if (k->setid)
		fprintf(stderr, "amberfs: --safe: setuid/setgid bits cleared on %llu file(s)\n",
			(unsigned long long)k->setid);
	if (k->xattrs)
		fprintf(stderr, "amberfs: --safe: %llu security.*/trusted.* xattr(s) not set\n",
			(unsigned long long)k->xattrs);
}

static int restore(const struct restore_args *o, struct cli_target *t)
{
	amber_stats stats = AMBER_STATS_INIT;
	struct cli_progress prog;
	amber_restore_opts ro = AMBER_RESTORE_OPTS_INIT;
	amber_restore_skipped skipped = {0};
	int rc;

	cli_progress_init(&prog);
	ro.no_owner = geteuid() != 0;
	ro.safe = o->safe;
	ro.skipped = &skipped;
	ro.progress = cli_progress_cb;
	ro.warn = cli_progress_warn;
	ro.payload = &prog;
	rc = amber_restore(&stats, t->snap, t->path, o->pos[2], &ro);
	cli_progress_end(&prog);
	report_skipped(&skipped);
	if (rc)
		return cli_fail(rc, o->pos[0]);
	if (stats.errors == 0 && prog.warnings == 0)
		return CLI_EXIT_OK;
	fprintf(stderr, "amberfs: %s is incomplete: %llu warnings above\n", o->pos[2],
		(unsigned long long)(stats.errors > prog.warnings ? stats.errors : prog.warnings));
	return CLI_EXIT_PARTIAL;
}

int cmd_restore(int argc, char **argv)
{
	struct restore_args o = {0};
	struct cli_target t = {0};
	int status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	status = cli_target_open(&t, o.pos[0], o.passfile, o.stream, o.pos[1]);
	if (status == 0)
		status = restore(&o, &t);
	cli_target_close(&t);
	return status;
}
