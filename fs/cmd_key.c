/*
 * amberfs key new-signing ARCHIVE [--signing-key FILE|pkcs11:URI [--pin-file FILE]]
 * amberfs key show-public ARCHIVE
 *
 * The archive's Ed25519 signing key.  Neither subcommand needs the
 * passphrase: the public key lives in the archive's metadata in the clear,
 * and the secret key only ever in the file the operator names.
 */
#include "cli.h"

#include "amber_keys.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
	"Usage: amberfs key new-signing ARCHIVE [--signing-key FILE|pkcs11:URI\n"
	"                                       [--pin-file FILE]]\n"
	"       amberfs key add-pkcs11 ARCHIVE --token-uri pkcs11:URI [--pin-file FILE]\n"
	"                  [--label L] [--passphrase-file FILE]\n"
	"                  [--signing-key FILE|pkcs11:URI | --unsigned]\n"
	"       amberfs key show-public ARCHIVE\n"
	"Manage the archive's Ed25519 signing key.\n"
	"\n"
	"  new-signing    create a signing key pair for an archive that has none:\n"
	"                 write the secret key to the new FILE and store the public\n"
	"                 key in the archive; print the public key\n"
	"  show-public    print the archive's public signing key as one OpenSSH\n"
	"                 public-key line (for an allowed-signers file)\n"
	"  add-pkcs11     add a key slot opened by an AES key held in a PKCS#11\n"
	"                 token (the archive is unlocked as usual first); then\n"
	"                 --token-uri opens the archive\n"
	"\n"
	"      --signing-key FILE  new-signing: where to write the secret key\n"
	"                          (default: $AMBERFS_SIGNING_KEY); never overwritten;\n"
	"                          or the pkcs11:URI of an Ed25519 key in a token,\n"
	"                          whose public key the archive then keeps\n"
	"      --pin-file FILE     read the token's PIN from FILE (default: ask on\n"
	"                          the terminal)\n"
	"      --token-uri URI     add-pkcs11: the token's AES key (CKA_WRAP/UNWRAP)\n"
	"      --label L           add-pkcs11: the slot's label\n"
	"      --passphrase-file FILE  add-pkcs11: unlock with this passphrase\n"
	"      --unsigned          add-pkcs11: an unsigned metadata commit in a\n"
	"                          signing archive\n"
	"  -h, --help              show this help\n";

enum { OPT_SIGNING_KEY = CLI_OPT_LONG, OPT_PIN_FILE, OPT_TOKEN_URI, OPT_LABEL, OPT_PASSFILE,
       OPT_UNSIGNED };

struct key_args {
	const char *sub;        /* "new-signing", "show-public" or "add-pkcs11" */
	const char *archive;
	const char *signing_key;
	const char *pinfile;
	const char *token_uri;  /* add-pkcs11: the token key of the new slot */
	const char *label;
	const char *passfile;
	int unsigned_ok;
};

static int option(struct key_args *o, int c, char **argv)
{
	switch (c) {
	case 'h': return cli_help(help);
	case OPT_SIGNING_KEY: o->signing_key = optarg; return -1;
	case OPT_PIN_FILE: o->pinfile = optarg; return -1;
	case OPT_TOKEN_URI: o->token_uri = optarg; return -1;
	case OPT_LABEL: o->label = optarg; return -1;
	case OPT_PASSFILE: o->passfile = optarg; return -1;
	case OPT_UNSIGNED: o->unsigned_ok = 1; return -1;
	}
	return cli_bad_option("key", c, argv);
}

static int check_add_pkcs11(struct key_args *o)
{
	if (!cli_is_token_uri(o->token_uri))
		return cli_usage("key", "add-pkcs11 needs --token-uri pkcs11:URI naming the "
				 "token's AES key");
	return cli_signing_key("key", &o->signing_key, o->unsigned_ok);
}

static int check_signing(struct key_args *o)
{
	const char *env = getenv("AMBERFS_SIGNING_KEY");
	int sign = strcmp(o->sub, "new-signing") == 0;

	if ((o->signing_key || o->pinfile) && !sign)
		return cli_usage("key", "--signing-key and --pin-file go with new-signing and "
				 "add-pkcs11 only");
	if (o->token_uri || o->label || o->passfile || o->unsigned_ok)
		return cli_usage("key", "--token-uri, --label, --passphrase-file and --unsigned "
				 "go with add-pkcs11 only");
	if (!o->signing_key && env && *env && sign)
		o->signing_key = env;
	if (!o->signing_key && sign)
		return cli_usage("key", "new-signing needs --signing-key FILE (or "
				 "AMBERFS_SIGNING_KEY) to write the secret key to");
	if (o->signing_key && !*o->signing_key)
		return cli_usage("key", "--signing-key wants a file name");
	return -1;
}

/* @return -1 to go on, else the exit status. */
static int parse(struct key_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"signing-key", required_argument, NULL, OPT_SIGNING_KEY},
		{"pin-file", required_argument, NULL, OPT_PIN_FILE},
		{"token-uri", required_argument, NULL, OPT_TOKEN_URI},
		{"label", required_argument, NULL, OPT_LABEL},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"unsigned", no_argument, NULL, OPT_UNSIGNED},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, status;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":h", opts)) != -1)
		if ((status = option(o, c, argv)) >= 0)
			return status;
	if (optind == argc)
		return cli_usage("key", "missing subcommand (new-signing, show-public or "
				 "add-pkcs11)");
	o->sub = argv[optind++];
	if (strcmp(o->sub, "add-pkcs11") == 0)
		status = check_add_pkcs11(o);
	else if (strcmp(o->sub, "new-signing") == 0 || strcmp(o->sub, "show-public") == 0)
		status = check_signing(o);
	else
		return cli_usage("key", "unknown subcommand '%s' (expected new-signing, "
				 "show-public or add-pkcs11)", o->sub);
	if (status >= 0)
		return status;
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

/* A slot whose AES key stays in the token wraps the master key. */
static int add_pkcs11(const struct key_args *o)
{
	amber_slot_change ch = {.signing_key_path = o->signing_key, .unsigned_ok = o->unsigned_ok,
				.message = "amberfs: add a pkcs11 key slot"};
	amber_archive *a = NULL;
	unsigned char *pin = NULL;
	uint8_t *blob = NULL;
	size_t len = 0, plen = 0;
	int rc, status = cli_open_archive(&a, o->archive, o->passfile);

	if (status)
		return status;
	if (cli_pin_get(&pin, &plen, o->token_uri, o->pinfile)) {
		amber_archive_free(a);
		return CLI_EXIT_ERROR;
	}
	rc = amber_archive_set_token_pin(a, pin, plen);
	cli_secret_free(pin, plen);
	if (rc == 0)
		rc = amber_archive_seal_pkcs11(&blob, &len, a, o->token_uri, o->label);
	ch.add = blob;
	ch.add_len = len;
	if (rc == 0)
		rc = amber_archive_change_slots(a, &ch);
	if (rc == 0)
		fprintf(stderr, "amberfs: %s: added a pkcs11 key slot: the AES key of %s now opens "
			"the archive (--token-uri)\n", o->archive, o->token_uri);
	status = rc ? cli_fail(rc, o->archive) : CLI_EXIT_OK;
	free(blob);
	amber_archive_free(a);
	return status;
}

int cmd_key(int argc, char **argv)
{
	struct key_args o = {0};
	amber_open_opts oo;
	amber_archive *a = NULL;
	int rc, status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	if (strcmp(o.sub, "add-pkcs11") == 0)
		return add_pkcs11(&o);
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
