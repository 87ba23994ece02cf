/*
 * amberfs key new-signing ARCHIVE [--signing-key FILE|pkcs11:URI [--pin-file FILE]]
 * amberfs key show-public ARCHIVE
 *
 * The archive's Ed25519 signing key.  Neither subcommand needs the
 * passphrase: the public key lives in the archive's metadata in the clear,
 * and the secret key only ever in the file the operator names.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
	"Usage: amberfs key new-signing ARCHIVE [--signing-key FILE|pkcs11:URI\n"
	"                                       [--pin-file FILE]]\n"
	"       amberfs key show-public ARCHIVE\n"
	"Manage the archive's Ed25519 signing key.\n"
	"\n"
	"  new-signing    create a signing key pair for an archive that has none:\n"
	"                 write the secret key to the new FILE and store the public\n"
	"                 key in the archive; print the public key\n"
	"  show-public    print the archive's public signing key as one OpenSSH\n"
	"                 public-key line (for an allowed-signers file)\n"
	"\n"
	"      --signing-key FILE  new-signing: where to write the secret key\n"
	"                          (default: $AMBERFS_SIGNING_KEY); never overwritten;\n"
	"                          or the pkcs11:URI of an Ed25519 key in a token,\n"
	"                          whose public key the archive then keeps\n"
	"      --pin-file FILE     read the token's PIN from FILE (default: ask on\n"
	"                          the terminal)\n"
	"  -h, --help              show this help\n";

enum { OPT_SIGNING_KEY = CLI_OPT_LONG, OPT_PIN_FILE };

struct key_args {
	const char *sub;        /* "new-signing" or "show-public" */
	const char *archive;
	const char *signing_key;
	const char *pinfile;
};

/* @return -1 to go on, else the exit status. */
static int parse(struct key_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"signing-key", required_argument, NULL, OPT_SIGNING_KEY},
		{"pin-file", required_argument, NULL, OPT_PIN_FILE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *env = getenv("AMBERFS_SIGNING_KEY");
	int c;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		else if (c == OPT_SIGNING_KEY)
			o->signing_key = optarg;
		else if (c == OPT_PIN_FILE)
			o->pinfile = optarg;
		else
			return cli_bad_option("key", c, argv);
	}
	if (optind == argc)
		return cli_usage("key", "missing subcommand (new-signing or show-public)");
	o->sub = argv[optind++];
	if (strcmp(o->sub, "new-signing") != 0 && strcmp(o->sub, "show-public") != 0)
		return cli_usage("key", "unknown subcommand '%s' (expected new-signing or "
				 "show-public)", o->sub);
	if ((o->signing_key || o->pinfile) && strcmp(o->sub, "new-signing") != 0)
		return cli_usage("key", "--signing-key and --pin-file go with new-signing only");
	if (!o->signing_key && env && *env && strcmp(o->sub, "new-signing") == 0)
		o->signing_key = env;
	if (!o->signing_key && strcmp(o->sub, "new-signing") == 0)
		return cli_usage("key", "new-signing needs --signing-key FILE (or "
				 "AMBERFS_SIGNING_KEY) to write the secret key to");
	if (o->signing_key && !*o->signing_key)
		return cli_usage("key", "--signing-key wants a file name");
	if (cli_positionals(&o->archive, 1, argc, argv, optind, "key", "ARCHIVE"))
		return CLI_EXIT_USAGE;
	return -1;
}

static int print_public(const amber_archive *a)
{
	uint8_t pk[32];
	char line[160];
	int rc = amber_archive_signing_pubkey(pk, a);

	if (rc == AMBER_ENOTFOUND)
		return cli_error("archive %s has no signing key: create one with 'amberfs key "
				 "new-signing %s --signing-key FILE'",
				 amber_archive_path(a), amber_archive_path(a));
	if (rc == 0)
		rc = amber_pubkey_format(line, sizeof(line), pk, "amberfs");
	if (rc)
		return cli_fail(rc, amber_archive_path(a));
	printf("%s\n", line);
	return CLI_EXIT_OK;
}

static int new_signing(amber_archive *a, const struct key_args *o)
{
	const char *path = o->signing_key;
	int rc = cli_archive_pin(a, path, o->pinfile, "key");

	if (rc)
		return rc;
	if ((rc = amber_archive_add_signing_key(a, path)))
		return cli_fail(rc, amber_archive_path(a));
	if (cli_is_token_uri(path))
		fprintf(stderr, "amberfs: the archive's signing key is now the token key %s; "
			"snapshots of %s must now be signed\n", path, amber_archive_path(a));
	else
		fprintf(stderr, "amberfs: secret signing key written to %s (keep it apart from "
			"the archive); snapshots of %s must now be signed\n", path,
			amber_archive_path(a));
	return print_public(a);
}

int cmd_key(int argc, char **argv)
{
	struct key_args o = {0};
	amber_open_opts oo;
	amber_archive *a = NULL;
	int rc, status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	cli_open_opts(&oo);
	rc = amber_archive_open_ext(&a, o.archive, &oo);
	if (rc)
		return cli_fail(rc, o.archive);
	if (strcmp(o.sub, "new-signing") == 0)
		status = new_signing(a, &o);
	else
		status = print_public(a);
	amber_archive_free(a);
	return status;
}
