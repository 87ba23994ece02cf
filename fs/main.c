/*
 * amberfs: the command-line program.  main() parses the global options,
 * finds the subcommand in the table below, runs it and checks that its
 * output reached stdout; each subcommand lives in cmd_<name>.c and returns
 * the exit status (see enum cli_exit and EXIT STATUS in amberfs(1)).
 */
#include "cli.h"

#include "amber_keys.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef AMBERFS_VERSION
#define AMBERFS_VERSION "0.1.0"
#endif

static const struct cli_cmd commands[] = {
	{"init", cmd_init, "create a new archive"},
	{"snapshot", cmd_snapshot, "store a snapshot of a directory tree"},
	{"log", cmd_log, "list the snapshots of a stream, newest first"},
	{"ls", cmd_ls, "list a directory (or one entry) of a snapshot"},
	{"cat", cmd_cat, "write a file of a snapshot to standard output"},
	{"restore", cmd_restore, "copy a snapshot, or a part of it, into a new directory"},
	{"diff", cmd_diff, "show what changed between two snapshots"},
	{"mount", cmd_mount, "mount the snapshots read-only as a time-travel tree (FUSE)"},
	{"tag", cmd_tag, "name a snapshot with a signed annotated tag"},
	{"key", cmd_key, "manage key slots, recovery shares and the signing key"},
	{"verify", cmd_verify, "check an archive's objects, snapshots and signatures"},
	{"push", cmd_push, "copy an archive to another git repository"},
	{"repack", cmd_repack, "merge small pack files (every snapshot does this too)"},
	{"watch", cmd_watch, "keep snapshotting a directory tree as it changes"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char usage_head[] =
	"Usage: amberfs [--help | --version] [--kdf-profile=test] COMMAND [ARGS...]\n"
	"Encrypted, deduplicated snapshots of directory trees in a git object store.\n"
	"(--kdf-profile=test: cheap, insecure key slots, for test suites only.)\n"
	"\n"
	"Commands:\n";

static const char usage_tail[] =
	"\n"
	"Run 'amberfs COMMAND --help' (or 'amberfs help COMMAND') for its options.\n"
	"ARCHIVE may be left out when AMBERFS_ARCHIVE names it.  Every command that\n"
	"needs the key takes --passphrase-file FILE (or AMBERFS_PASSPHRASE_FILE, or\n"
	"the terminal), --keyfile FILE, or --share FILE (repeatable; a file of shares,\n"
	"one per line, or a directory of share files) with --share-passphrase-file\n"
	"FILE; with $CREDENTIALS_DIRECTORY (systemd) see KEYS in amberfs(1).\n"
	"\n"
	"Exit status: 0 success, 1 error, 2 usage error, 3 done but some entries\n"
	"could not be read or restored (each one named in a warning), 4 refused: the\n"
	"archive says it is plain where encryption was expected.\n"
	"See amberfs(1).\n";

struct main_args {
	const struct cli_cmd *cmd;
	int argc;                /* the command's argv, starting at its name */
	char **argv;
	int help;                /* `amberfs help COMMAND`: run COMMAND --help */
};

static int print_usage(void)
{
	fputs(usage_head, stdout);
	for (size_t i = 0; i < NCOMMANDS; i++)
		printf("  %-10s %s\n", commands[i].name, commands[i].summary);
	fputs(usage_tail, stdout);
	return CLI_EXIT_OK;
}

static int main_usage_error(const char *fmt, const char *arg)
{
	fputs("amberfs: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs(" (try 'amberfs --help')\n", stderr);
	return CLI_EXIT_USAGE;
}

static const struct cli_cmd *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* `help [COMMAND]`: argv[0] is "help". */
static int parse_help(struct main_args *m, int argc, char **argv)
{
	if (argc == 1)
		return print_usage();
	if (argc > 2)
		return main_usage_error("help: unexpected operand '%s'", argv[2]);
	m->cmd = find_command(argv[1]);
	if (!m->cmd)
		return main_usage_error("unknown command '%s'", argv[1]);
	m->help = 1;
	return -1;
}

int cli_mount_helper;

/*
 * `amberfs ARCHIVE MOUNTPOINT [-o OPTIONS]`: how mount.fuse3 runs the
 * filesystem program for `mount -t fuse.amberfs` when mount.fuse.amberfs
 * is not installed where mount(8) looks.  The first word is then a path,
 * not a command.
 */
static int helper_form(int argc, char **argv)
{
	return argc >= 2 && (strchr(argv[0], '/') || access(argv[0], F_OK) == 0) &&
	       argv[1][0] != '-';
}

/* Run it as `amberfs mount ...`, with the words mount(8) adds (rw) allowed. */
static int parse_helper_form(struct main_args *m, int argc, char **argv)
{
	static char mount_word[] = "mount";

	/* argv[optind - 1] is the program name or a global option: reuse its slot */
	m->cmd = find_command(mount_word);
	m->argc = argc - optind + 1;
	m->argv = argv + optind - 1;
	m->argv[0] = mount_word;
	cli_mount_helper = 1;
	return -1;
}

/* @return -1 to run m->cmd, else the exit status. */
static int parse(struct main_args *m, int argc, char **argv)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{"kdf-profile", required_argument, NULL, 'K'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		if (c == 'h')
			return print_usage();
		if (c == 'K' && strcmp(optarg, "test") == 0) {
			cli_kdf_test = 1; /* test suites only: see amberfs(1) */
			continue;
		}
		if (c == 'K')
			return main_usage_error("--kdf-profile: the only profile is 'test' "
						"(insecure, for test suites), not '%s'", optarg);
		if (c == 'V')
			return printf("amberfs %s (archive format %d)\n", AMBERFS_VERSION,
				      AMBER_FORMAT_VERSION) < 0;
		return main_usage_error("unknown option '%s'", argv[optind - 1]);
	}
	if (optind == argc)
		return main_usage_error("missing command%s", "");
	if (strcmp(argv[optind], "help") == 0)
		return parse_help(m, argc - optind, argv + optind);
	m->cmd = find_command(argv[optind]);
	if (!m->cmd && helper_form(argc - optind, argv + optind))
		return parse_helper_form(m, argc, argv);
	if (!m->cmd)
		return main_usage_error("unknown command '%s'", argv[optind]);
	m->argc = argc - optind;
	m->argv = argv + optind;
	if (cli_unlock_scan(&m->argc, m->argv))
		return CLI_EXIT_USAGE;
	if (cli_unlock_given() && (strcmp(m->cmd->name, "init") == 0 ||
				   strcmp(m->cmd->name, "push") == 0 ||
				   strcmp(m->cmd->name, "repack") == 0))
		return main_usage_error("%s needs no key: --keyfile and --share go with the "
					"commands that unlock an archive", m->cmd->name);
	return -1;
}

/*
 * Commands handle keys and decrypted data: a crash must not write them to
 * a core file (RLIMIT_CORE 0 stops files, and a non-dumpable process is not
 * dumped even through a core_pattern pipe, nor ptrace-readable by other
 * processes of the same user).  Children inherit both across fork.
 */
static void harden(void)
{
	struct rlimit none = {0, 0};

	setrlimit(RLIMIT_CORE, &none);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/*
 * An open archive holds two descriptors per pack (its index and its data,
 * read with pread), and a mount adds the files being read: an archive of a
 * few hundred packs would not open under the usual soft limit of 1024.  So
 * raise the soft limit to the hard one: the hard limit is the one an
 * administrator sets, the soft one is only the shell's default.
 */
static void raise_nofile(void)
{
	struct rlimit r;

	if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}
}

static int setup(void)
{
	harden();
	raise_nofile();
	if (amber_global_init())
		return cli_error("cannot initialise: %s", amber_error_last());
	return 0;
}

static int run(const struct main_args *m)
{
	char *help_argv[] = {(char *)m->cmd->name, (char *)"--help", NULL};

	/* Each command parses its own argv with getopt_long from the start. */
	optind = 0;
	if (m->help)
		return m->cmd->run(2, help_argv);
	return m->cmd->run(m->argc, m->argv);
}

/* Output that never reached stdout (full disk, closed pipe) is a failure. */
static int teardown(int status)
{
	if (amber_key_memory_unlocked())
		fprintf(stderr, "amberfs: warning: the archive key could not be locked in memory, so "
			"it may have been written to swap: raise RLIMIT_MEMLOCK (ulimit -l, "
			"LimitMEMLOCK= in a unit) or run with CAP_IPC_LOCK\n");
	if (fflush(stdout) != 0 || ferror(stdout)) {
		cli_error("write error on standard output: %s", strerror(errno));
		return status ? status : CLI_EXIT_ERROR;
	}
	return status;
}

int main(int argc, char **argv)
{
	struct main_args m = {0};
	int status;

	status = parse(&m, argc, argv);
	if (status < 0) {
		status = setup();
		if (status == 0)
			status = run(&m);
	}
	return teardown(status);
}
