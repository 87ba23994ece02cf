/*
 * amberfs init ARCHIVE [--plain] [--passphrase-file FILE]
 *              [--signing-key FILE|pkcs11:URI [--pin-file FILE]]
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char help[] =
	"Usage: amberfs init ARCHIVE [--plain] [--passphrase-file FILE]\n"
	"                    [--signing-key FILE|pkcs11:URI [--pin-file FILE]]\n"
	"Create a new archive in ARCHIVE, a directory that does not exist or is empty.\n"
	"Archives are encrypted unless --plain is given.\n"
	"\n"
	"      --plain                 no encryption: anyone who can read the archive\n"
	"                              can read the snapshots\n"
	"      --passphrase-file FILE  read the new passphrase from FILE (default:\n"
	"                              $AMBERFS_PASSPHRASE_FILE, else ask twice on\n"
	"                              the terminal)\n"
	"      --signing-key FILE      create an Ed25519 signing key: write its secret\n"
	"                              key to the new FILE (default: $AMBERFS_SIGNING_KEY;\n"
	"                              never overwritten) and keep its public key in\n"
	"                              the archive; every snapshot must then be signed\n"
	"      --signing-key pkcs11:URI  use the existing Ed25519 key of a PKCS#11 token\n"
	"                              (RFC 7512 URI): its public key goes into the\n"
	"                              archive; the secret key never leaves the token\n"
	"      --pin-file FILE         read the token's PIN from FILE (default: ask on\n"
	"                              the terminal)\n"
	"      --weak-ok               accept a passphrase under 12 characters (refused\n"
	"                              otherwise, unless typed on a terminal: a warning)\n"
	"  -h, --help                  show this help\n";

enum { OPT_PLAIN = CLI_OPT_LONG, OPT_PASSFILE, OPT_SIGNING_KEY, OPT_WEAK_OK };

struct init_args {
	const char *archive;
	const char *passfile;
	const char *signing_key;
	const char *pinfile;
	int plain;
	int weak_ok;
};

/* @return -1 to go on, else the exit status. */
static int parse(struct init_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"plain", no_argument, NULL, OPT_PLAIN},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"signing-key", required_argument, NULL, OPT_SIGNING_KEY},
		{"weak-ok", no_argument, NULL, OPT_WEAK_OK},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *env = getenv("AMBERFS_SIGNING_KEY");
	int c;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		else if (c == OPT_PLAIN)
			o->plain = 1;
		else if (c == OPT_PASSFILE)
			o->passfile = optarg;
		else if (c == OPT_SIGNING_KEY)
			o->signing_key = optarg;
		else if (c == OPT_WEAK_OK)
			o->weak_ok = 1;
		else
			return cli_bad_option("init", c, argv);
	}
	if (o->plain && o->passfile)
		return cli_usage("init", "--plain and --passphrase-file exclude each other");
	if (o->signing_key && !*o->signing_key)
		return cli_usage("init", "--signing-key wants a file name");
	if (!o->signing_key && env && *env)
		o->signing_key = env;
	o->pinfile = cli_unlock_src.pin_file; /* main() takes --pin-file out of argv */
	if (o->pinfile && !cli_is_token_uri(o->signing_key))
		return cli_usage("init", "--pin-file goes with a pkcs11: URI as --signing-key");
	if (cli_positionals(&o->archive, 1, argc, argv, optind, "init", "ARCHIVE"))
		return CLI_EXIT_USAGE;
	return -1;
}

static void print_created(const struct init_args *o, const amber_archive *a)
{
	uint8_t pk[32];
	char line[160];

	printf("Created %s archive %s (id %s)\n", o->plain ? "plain" : "encrypted",
	       amber_archive_path(a), amber_archive_id(a));
	if (!o->plain && cli_kdf_test)
		fprintf(stderr, "amberfs: warning: %s: its key slot uses the insecure test KDF "
			"profile (--kdf-profile=test): for test suites only\n", o->archive);
	if (amber_archive_signing_pubkey(pk, a) != 0 ||
	    amber_pubkey_format(line, sizeof(line), pk, "amberfs") != 0)
		return;
	if (cli_is_token_uri(o->signing_key))
		printf("Signing key held by the token of %s (it never leaves the token)\n"
		       "Public signing key: %s\n", o->signing_key, line);
	else
		printf("Secret signing key written to %s (keep it apart from the archive)\n"
		       "Public signing key: %s\n",
		       o->signing_key, line);
}

/* Refuse an existing key file before asking for a passphrase (the library
 * refuses it again, atomically, when it writes the file). */
static int key_file_is_new(const char *path)
{
	struct stat st;

	if (lstat(path, &st) == 0)
		return cli_error("signing key file %s already exists: refusing to overwrite it; "
				 "choose another path", path);
	return 0;
}

static int create(const struct init_args *o)
{
	amber_create_opts co = AMBER_CREATE_OPTS_INIT;
	amber_open_opts oo;
	amber_archive *a = NULL;
	unsigned char *pass = NULL, *pin = NULL;
	size_t len = 0, pinlen = 0;
	int rc, token = cli_is_token_uri(o->signing_key);

	if (o->signing_key && !token && key_file_is_new(o->signing_key))
		return CLI_EXIT_ERROR;
	if (!o->plain && cli_secret_get(&pass, &len, o->archive, o->passfile, 1))
		return CLI_EXIT_ERROR;
	if (!o->plain && cli_passphrase_strong(&pass, &len, o->weak_ok,
					       !o->passfile && isatty(STDIN_FILENO)))
		return CLI_EXIT_ERROR;
	if (token && cli_pin_get(&pin, &pinlen, o->signing_key, o->pinfile)) {
		cli_secret_free(pass, len);
		return CLI_EXIT_ERROR;
	}
	co.token_pin = pin;
	co.token_pin_len = pinlen;
	cli_open_opts(&oo);
	co.plain = o->plain;
	co.signing_key_path = o->signing_key;
	co.open = &oo;
	co.kdf_profile = cli_kdf_test ? AMBER_KDF_TEST : AMBER_KDF_DEFAULT;
	co.passphrase = pass;
	co.passphrase_len = len;
	rc = amber_archive_create(&a, o->archive, &co);
	cli_secret_free(pass, len);
	cli_secret_free(pin, pinlen);
	if (rc)
		return cli_fail(rc, o->archive);
	print_created(o, a);
	amber_archive_free(a);
	return CLI_EXIT_OK;
}

int cmd_init(int argc, char **argv)
{
	struct init_args o = {0};
	int status = parse(&o, argc, argv);

	return status >= 0 ? status : create(&o);
}
