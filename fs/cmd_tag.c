/*
 * amberfs tag ARCHIVE SNAPSHOT NAME [-m MSG] [--stream S]
 *             [--signing-key FILE|pkcs11:URI [--pin-file FILE] | --unsigned]
 *             [--passphrase-file FILE]
 *
 * Names a snapshot with an annotated tag object, refs/tags/NAME.  The
 * snapshot is opened (its record authenticated) before it is named.  In an
 * archive with a signing key the tag carries an SSH signature, as
 * `git tag -s` writes it with gpg.format=ssh.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>

static const char help[] =
	"Usage: amberfs tag ARCHIVE SNAPSHOT NAME [OPTIONS]\n"
	"Name SNAPSHOT with an annotated tag NAME (refs/tags/NAME), signed with the\n"
	"archive's signing key when it has one.\n"
	CLI_HELP_SNAPSHOT
	"\n"
	"  -m, --message MSG           the tag's message (default: \"amberfs tag NAME\")\n"
	"      --stream S              resolve 'latest' and @TIME in stream S\n"
	"      --signing-key FILE      the archive's secret signing key (default:\n"
	"                              $AMBERFS_SIGNING_KEY), or the pkcs11:URI of\n"
	"                              the archive's key in a token\n"
	"      --token-uri pkcs11:URI  unlock with the AES key of a token (a pkcs11 key\n"
	"                              slot) instead of a passphrase\n"
	"      --pin-file FILE         read the token's PIN from FILE (default: ask on\n"
	"                              the terminal)\n"
	"      --unsigned              write an unsigned tag in an archive that has a\n"
	"                              signing key\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"      --keyfile FILE, --share FILE (repeatable), --share-passphrase-file FILE\n"
	"                              unlock with a key file or recovery shares instead\n"
	"  -h, --help                  show this help\n";

enum { OPT_STREAM = CLI_OPT_LONG, OPT_PASSFILE, OPT_SIGNING_KEY, OPT_UNSIGNED };

struct tag_args {
	const char *pos[3];     /* ARCHIVE, SNAPSHOT, NAME */
	const char *message;
	const char *stream;
	const char *passfile;
	const char *signing_key;
	int unsigned_ok;
};

static int option(struct tag_args *o, int c, char **argv)
{
	switch (c) {
	case 'h': return cli_help(help);
	case 'm': o->message = optarg; return -1;
	case OPT_STREAM: o->stream = optarg; return -1;
	case OPT_PASSFILE: o->passfile = optarg; return -1;
	case OPT_SIGNING_KEY: o->signing_key = optarg; return -1;
	case OPT_UNSIGNED: o->unsigned_ok = 1; return -1;
	}
	return cli_bad_option("tag", c, argv);
}

/* @return -1 to go on, else the exit status. */
static int parse(struct tag_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"message", required_argument, NULL, 'm'},
		{"stream", required_argument, NULL, OPT_STREAM},
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
	status = cli_signing_key("tag", &o->signing_key, o->unsigned_ok);
	if (status >= 0)
		return status;
	if (cli_token_check("tag"))
		return CLI_EXIT_USAGE;
	if (cli_positionals(o->pos, 3, argc, argv, optind, "tag", "ARCHIVE SNAPSHOT NAME"))
		return CLI_EXIT_USAGE;
	return -1;
}

static int make_tag(const struct tag_args *o, amber_archive *a)
{
	amber_snapshot *s = NULL;
	int rc, status = cli_open_snapshot(&s, a, o->stream, o->pos[1]);

	if (status)
		return status;
	rc = amber_tag_create(a, amber_snapshot_info(s)->id, o->pos[2], o->message,
			      o->signing_key, o->unsigned_ok);
	amber_snapshot_free(s);
	if (rc == AMBER_EBADKEY) /* the signing key, not the passphrase */
		return cli_error("%s", amber_error_last());
	return rc ? cli_fail(rc, o->pos[0]) : CLI_EXIT_OK;
}

int cmd_tag(int argc, char **argv)
{
	struct tag_args o = {0};
	amber_archive *a = NULL;
	int status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	status = cli_open_archive(&a, o.pos[0], o.passfile);
	if (status == 0)
		status = cli_archive_pin(a, o.signing_key, NULL, "tag");
	if (status == 0)
		status = make_tag(&o, a);
	amber_archive_free(a);
	return status;
}
