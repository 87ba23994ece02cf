/*
 * amberfs init ARCHIVE [--plain] [--passphrase-file FILE]
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>

static const char help[] =
	"Usage: amberfs init ARCHIVE [--plain] [--passphrase-file FILE]\n"
	"Create a new archive in ARCHIVE, a directory that does not exist or is empty.\n"
	"Archives are encrypted unless --plain is given.\n"
	"\n"
	"      --plain                 no encryption: anyone who can read the archive\n"
	"                              can read the snapshots\n"
	"      --passphrase-file FILE  read the new passphrase from FILE (default:\n"
	"                              $AMBERFS_PASSPHRASE_FILE, else ask twice on\n"
	"                              the terminal)\n"
	"  -h, --help                  show this help\n";

enum { OPT_PLAIN = CLI_OPT_LONG, OPT_PASSFILE };

struct init_args {
	const char *archive;
	const char *passfile;
	int plain;
};

/* @return -1 to go on, else the exit status. */
static int parse(struct init_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"plain", no_argument, NULL, OPT_PLAIN},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		else if (c == OPT_PLAIN)
			o->plain = 1;
		else if (c == OPT_PASSFILE)
			o->passfile = optarg;
		else
			return cli_bad_option("init", c, argv);
	}
	if (o->plain && o->passfile)
		return cli_usage("init", "--plain and --passphrase-file exclude each other");
	if (cli_positionals(&o->archive, 1, argc, argv, optind, "init", "ARCHIVE"))
		return CLI_EXIT_USAGE;
	return -1;
}

static int create(const struct init_args *o)
{
	amber_create_opts co = {.plain = o->plain};
	amber_archive *a = NULL;
	unsigned char *pass = NULL;
	size_t len = 0;
	int rc;

	if (!o->plain && cli_secret_get(&pass, &len, o->archive, o->passfile, 1))
		return CLI_EXIT_ERROR;
	co.passphrase = pass;
	co.passphrase_len = len;
	rc = amber_archive_create(&a, o->archive, &co);
	cli_secret_free(pass, len);
	if (rc)
		return cli_fail(rc, o->archive);
	printf("Created %s archive %s (id %s)\n", o->plain ? "plain" : "encrypted",
	       amber_archive_path(a), amber_archive_id(a));
	amber_archive_free(a);
	return CLI_EXIT_OK;
}

int cmd_init(int argc, char **argv)
{
	struct init_args o = {0};
	int status = parse(&o, argc, argv);

	return status >= 0 ? status : create(&o);
}
