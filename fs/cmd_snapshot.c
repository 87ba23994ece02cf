/*
 * amberfs snapshot ARCHIVE SRC [--stream S] [--tag T] [-m|--message M]
 *                  [--no-cache] [--threads N] [--passphrase-file FILE]
 *                  [--signing-key FILE|pkcs11:URI [--pin-file FILE] | --unsigned]
 *
 * Prints the new snapshot's commit id on stdout.  Source entries that cannot
 * be read are named on stderr and left out; the snapshot is still written,
 * and the exit status is then CLI_EXIT_PARTIAL, as it is when --tag could
 * not be created after the snapshot became visible.
 */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char help[] =
	"Usage: amberfs snapshot ARCHIVE SRC [OPTIONS]\n"
	"Store a snapshot of the directory tree SRC in ARCHIVE and print its commit id.\n"
	"\n"
	"      --stream S              add the snapshot to stream S (default: main)\n"
	"      --tag T                 also name the snapshot T (T must be new)\n"
	"  -m, --message M             store the free text M with the snapshot\n"
	"      --no-cache              re-read every file instead of trusting the files\n"
	"                              cache ($AMBERFS_CACHE_DIR)\n"
	"      --threads N             compression threads (default 0: one per core)\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"      --keyfile FILE, --share FILE (repeatable), --share-passphrase-file FILE\n"
	"                              unlock with a key file or recovery shares instead\n"
	"      --signing-key FILE      sign the snapshot with the archive's secret signing\n"
	"                              key in FILE (default: $AMBERFS_SIGNING_KEY); an\n"
	"                              archive with a signing key needs it; or the\n"
	"                              pkcs11:URI of the archive's key in a token\n"
	"      --token-uri pkcs11:URI  unlock with the AES key of a token (a pkcs11 key\n"
	"                              slot) instead of a passphrase\n"
	"      --pin-file FILE         read the token's PIN from FILE (default: ask on\n"
	"                              the terminal)\n"
	"      --unsigned              write an unsigned snapshot into an archive that\n"
	"                              has a signing key; its encrypted record says so,\n"
	"                              and verify reports it as a warning, not as a\n"
	"                              stripped signature\n"
	"  -h, --help                  show this help\n"
	"\n"
	"Exit status 3: the snapshot was written (its id is printed), but some entries\n"
	"of SRC could not be read, each named in a warning on stderr, or the tag T\n"
	"could not be created.  A tag that exists or that git refuses is refused\n"
	"before anything is written (exit status 1).\n";

enum { OPT_STREAM = CLI_OPT_LONG, OPT_TAG, OPT_MESSAGE, OPT_NO_CACHE, OPT_THREADS,
       OPT_PASSFILE, OPT_SIGNING_KEY, OPT_UNSIGNED };

struct snapshot_args {
	const char *pos[2];     /* ARCHIVE, SRC */
	const char *passfile;
	amber_snapshot_opts opts;
};

static int option(struct snapshot_args *o, int c, char **argv)
{
	switch (c) {
	case 'h': return cli_help(help);
	case OPT_STREAM: o->opts.stream = optarg; return -1;
	case OPT_TAG: o->opts.tag = optarg; return -1;
	case 'm':
	case OPT_MESSAGE: o->opts.message = optarg; return -1;
	case OPT_NO_CACHE: o->opts.no_cache = 1; return -1;
	case OPT_PASSFILE: o->passfile = optarg; return -1;
	case OPT_SIGNING_KEY: o->opts.signing_key_path = optarg; return -1;
	case OPT_UNSIGNED: o->opts.unsigned_ok = 1; return -1;
	case OPT_THREADS:
		if (cli_parse_int(&o->opts.threads, optarg, 0, 1024, "snapshot", "--threads"))
			return CLI_EXIT_USAGE;
		return -1;
	}
	return cli_bad_option("snapshot", c, argv);
}

/* @return -1 to go on, else the exit status. */
static int parse(struct snapshot_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"stream", required_argument, NULL, OPT_STREAM},
		{"tag", required_argument, NULL, OPT_TAG},
		{"message", required_argument, NULL, OPT_MESSAGE},
		{"no-cache", no_argument, NULL, OPT_NO_CACHE},
		{"threads", required_argument, NULL, OPT_THREADS},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"signing-key", required_argument, NULL, OPT_SIGNING_KEY},
		{"unsigned", no_argument, NULL, OPT_UNSIGNED},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, status;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":hm:", opts)) != -1) {
		status = option(o, c, argv);
		if (status >= 0)
			return status;
	}
	/* --unsigned overrides the environment's key */
	status = cli_signing_key("snapshot", &o->opts.signing_key_path, o->opts.unsigned_ok);
	if (status >= 0)
		return status;
	if (cli_token_check("snapshot"))
		return CLI_EXIT_USAGE;
	if (cli_positionals(o->pos, 2, argc, argv, optind, "snapshot", "ARCHIVE SRC"))
		return CLI_EXIT_USAGE;
	return -1;
}

/* The snapshot exists: its id goes to stdout like any other's. */
static int tag_failed(const char *id)
{
	printf("%s\n", id);
	fflush(stdout);
	cli_error("%s", amber_error_last());
	return CLI_EXIT_PARTIAL;
}

/* Say what --unsigned did in an archive that has a signing key. */
static void unsigned_note(const struct snapshot_args *o, amber_archive *a, const char *id)
{
	uint8_t pk[32];

	if (!o->opts.unsigned_ok || o->opts.signing_key_path ||
	    amber_archive_signing_pubkey(pk, a) != 0)
		return;
	fprintf(stderr, "amberfs: note: snapshot %.12s is unsigned (--unsigned) though archive %s "
		"has a signing key; its record says it was left unsigned on purpose, and verify "
		"reports it as a warning\n", id, o->pos[0]);
}

static int write_snapshot(struct snapshot_args *o, amber_archive *a)
{
	char id[AMBER_OID_HEXSZ + 1];
	amber_stats stats = AMBER_STATS_INIT;
	struct cli_progress prog;
	int rc;

	cli_progress_init(&prog);
	o->opts.progress = cli_progress_cb;
	o->opts.warn = cli_progress_warn;
	o->opts.payload = &prog;
	rc = amber_snapshot_create(id, &stats, a, o->pos[1], &o->opts);
	cli_progress_end(&prog);
	if (rc == AMBER_EBADKEY) /* the signing key, not the passphrase */
		return cli_error("%s", amber_error_last());
	if (rc && id[0]) /* written, but the tag was not created */
		return tag_failed(id);
	if (rc)
		return cli_fail(rc, o->pos[0]);
	printf("%s\n", id);
	unsigned_note(o, a, id);
	if (stats.errors == 0)
		return CLI_EXIT_OK;
	fprintf(stderr, "amberfs: snapshot %s is incomplete: %llu entries of %s could not be "
		"read\n", id, (unsigned long long)stats.errors, o->pos[1]);
	return CLI_EXIT_PARTIAL;
}

/*
 * `amberfs snapshot SRC ARCHIVE` is an easy slip: when the first operand is
 * a directory but no git repository, say which operand comes first.
 */
static int operands_swapped(const struct snapshot_args *o)
{
	struct stat st;
	char *head = NULL;
	int repo;

	if (stat(o->pos[0], &st) != 0 || !S_ISDIR(st.st_mode))
		return 0;
	if (asprintf(&head, "%s/HEAD", o->pos[0]) < 0)
		return 0;
	repo = access(head, F_OK) == 0;
	free(head);
	if (repo)
		return 0;
	return cli_error("%s is not an amberfs archive: the archive comes first "
			 "(amberfs snapshot ARCHIVE SRC; 'amberfs init ARCHIVE' creates one)",
			 o->pos[0]);
}

int cmd_snapshot(int argc, char **argv)
{
	struct snapshot_args o = {.opts = AMBER_SNAPSHOT_OPTS_INIT};
	amber_archive *a = NULL;
	int status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	if ((status = operands_swapped(&o)))
		return status;
	status = cli_open_archive(&a, o.pos[0], o.passfile);
	if (status == 0)
		status = cli_archive_pin(a, o.opts.signing_key_path, NULL, "snapshot");
	if (status == 0)
		status = write_snapshot(&o, a);
	amber_archive_free(a);
	return status;
}
