/*
 * amberfs diff ARCHIVE A B [PATH] [--stat] [--json] [--name-only] [--stream S]
 *
 * What changed between two snapshots, from the library's native diff:
 * identical subtrees are skipped without being decrypted, so the cost is
 * that of the change.  One line per change:
 *
 *   A<TAB>path<TAB>file 1.2 KiB
 *   D<TAB>path<TAB>dir
 *   M<TAB>path<TAB>256.0 MiB -> 258.0 MiB, appended 2.0 MiB at offset 268435456
 *   M<TAB>path<TAB>1.1 KiB -> 1.1 KiB, bytes 12..512 changed
 *   T<TAB>path<TAB>file -> symlink
 *   m<TAB>path<TAB>mode 0644 -> 0600
 */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char help[] =
	"Usage: amberfs diff ARCHIVE A B [PATH]\n"
	"Show what changed from snapshot A to snapshot B (under PATH), in name order:\n"
	"one line per change, STATUS<tab>PATH, where STATUS is A added, D removed,\n"
	"M modified, T type changed or m metadata only.\n"
	"A and B are snapshot specs: latest, a commit id or a unique prefix of\n"
	"at least 7 hex digits, a tag, @TIME or STREAM@TIME.\n"
	"\n"
	"      --name-only             print only the paths\n"
	"      --stat                  print only the number of changes of each kind and\n"
	"                              how many bytes of file data were added or changed\n"
	"                              and how many were removed or replaced\n"
	"      --json                  one JSON object per line: status, path, type,\n"
	"                              old_/new_ size and mode, and for a modified file\n"
	"                              the changed byte ranges [offset,length]\n"
	"      --stream S              resolve latest and @TIME in stream S\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"      --keyfile FILE, --share FILE (repeatable), --share-passphrase-file FILE\n"
	"                              unlock with a key file or recovery shares instead\n"
	"      --token-uri pkcs11:URI  unlock with the AES key of a token (a pkcs11 key\n"
	"                              slot) instead of a passphrase\n"
	"      --pin-file FILE         read the token's PIN from FILE (default: ask on\n"
	"                              the terminal)\n"
	"  -h, --help                  show this help\n";

enum { OPT_STAT = CLI_OPT_LONG, OPT_JSON, OPT_NAMES, OPT_STREAM, OPT_PASSFILE };

struct diff_args {
	const char *pos[4];     /* ARCHIVE, A, B, PATH */
	const char *passfile, *stream;
	int stat, json, names, tty;
	uint64_t count[128];    /* by change kind */
	uint64_t added_bytes, removed_bytes;
};

static int parse_opt(struct diff_args *o, int c, char **argv)
{
	if (c == 'h')
		return cli_help(help);
	if (c == OPT_STAT)
		o->stat = 1;
	else if (c == OPT_JSON)
		o->json = 1;
	else if (c == OPT_NAMES)
		o->names = 1;
	else if (c == OPT_STREAM)
		o->stream = optarg;
	else if (c == OPT_PASSFILE)
		o->passfile = optarg;
	else
		return cli_bad_option("diff", c, argv);
	return -1;
}

static int parse(struct diff_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"stat", no_argument, NULL, OPT_STAT},
		{"json", no_argument, NULL, OPT_JSON},
		{"name-only", no_argument, NULL, OPT_NAMES},
		{"stream", required_argument, NULL, OPT_STREAM},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, status;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":h", opts)) != -1)
		if ((status = parse_opt(o, c, argv)) >= 0)
			return status;
	if (o->stat + o->json + o->names > 1)
		return cli_usage("diff", "--stat, --json and --name-only exclude each other");
	o->pos[3] = "";
	if (argc - optind == 4)
		o->pos[3] = argv[argc - 1];
	if (cli_token_check("diff"))
		return CLI_EXIT_USAGE;
	if (cli_positionals(o->pos, 3, argc - (argc - optind == 4), argv, optind, "diff",
			    "ARCHIVE A B [PATH]"))
		return CLI_EXIT_USAGE;
	o->tty = isatty(STDOUT_FILENO);
	return -1;
}

static const char *type_word(const amber_entry *e)
{
	static const char *const words[] = {"?", "file", "dir", "symlink", "fifo", "chr", "blk"};

	return e && e->type <= AMBER_T_BLK ? words[e->type] : "?";
}

/* What of the metadata changed, e.g. "mode 0644 -> 0600, mtime". */
static void print_meta(const amber_entry *o, const amber_entry *n)
{
	const char *sep = "\t";

	if (o->mode != n->mode) {
		printf("%smode %04o -> %04o", sep, o->mode, n->mode);
		sep = ", ";
	}
	if (o->uid != n->uid || o->gid != n->gid) {
		printf("%sowner %u:%u -> %u:%u", sep, o->uid, o->gid, n->uid, n->gid);
		sep = ", ";
	}
	if (o->mtime_sec != n->mtime_sec || o->mtime_nsec != n->mtime_nsec) {
		char t[64];

		cli_time_iso(t, n->mtime_sec, n->mtime_nsec, 9);
		printf("%smtime -> %s", sep, t);
		sep = ", ";
	}
	if (*sep == '\t')
		printf("\txattrs");
}

static void print_detail(const amber_change *c)
{
	char a[32], b[32], n[32];

	if (c->kind == AMBER_ADDED || c->kind == AMBER_REMOVED) {
		const amber_entry *e = c->new_e ? c->new_e : c->old_e;

		cli_human_size(a, e->size);
		printf("\t%s%s%s", type_word(e), e->type == AMBER_T_REG ? " " : "",
		       e->type == AMBER_T_REG ? a : "");
	} else if (c->kind == AMBER_TYPE_CHANGED) {
		printf("\t%s -> %s", type_word(c->old_e), type_word(c->new_e));
	} else if (c->kind == AMBER_META_CHANGED) {
		print_meta(c->old_e, c->new_e);
	} else if (c->new_e->type == AMBER_T_REG) {
		cli_human_size(a, c->old_e->size);
		cli_human_size(b, c->new_e->size);
		cli_human_size(n, c->appended ? c->appended : c->new_range.len);
		if (c->appended)
			printf("\t%s -> %s, appended %s at offset %" PRIu64, a, b, n,
			       c->old_range.off);
		else
			printf("\t%s -> %s, bytes %" PRIu64 "..%" PRIu64 " changed (now %s)", a, b,
			       c->old_range.off, c->old_range.off + c->old_range.len, n);
	} else {
		printf("\t%s changed", type_word(c->new_e));
	}
}

static void print_json(const amber_change *c)
{
	const amber_entry *e = c->new_e ? c->new_e : c->old_e;

	printf("{\"status\":\"%c\",", c->kind);
	cli_json_bytes(stdout, "path", c->path, strlen(c->path));
	printf(",\"type\":\"%s\"", type_word(e));
	if (c->old_e)
		printf(",\"old_type\":\"%s\",\"old_size\":%" PRIu64 ",\"old_mode\":%u",
		       type_word(c->old_e), c->old_e->size, c->old_e->mode);
	if (c->new_e)
		printf(",\"new_size\":%" PRIu64 ",\"new_mode\":%u", c->new_e->size, c->new_e->mode);
	if (c->kind == AMBER_MODIFIED && e->type == AMBER_T_REG)
		printf(",\"old_range\":[%" PRIu64 ",%" PRIu64 "],\"new_range\":[%" PRIu64
		       ",%" PRIu64 "],\"appended\":%" PRIu64,
		       c->old_range.off, c->old_range.len, c->new_range.off, c->new_range.len,
		       c->appended);
	if (c->kind == AMBER_MODIFIED)
		printf(",\"meta_changed\":%s", c->meta_changed ? "true" : "false");
	puts("}");
}

static int on_change(const amber_change *c, void *payload)
{
	struct diff_args *o = payload;

	o->count[c->kind & 127]++;
	if (c->kind == AMBER_ADDED && c->new_e->type == AMBER_T_REG)
		o->added_bytes += c->new_e->size;
	if (c->kind == AMBER_REMOVED && c->old_e->type == AMBER_T_REG)
		o->removed_bytes += c->old_e->size;
	if (c->kind == AMBER_MODIFIED && c->new_e->type == AMBER_T_REG) {
		o->added_bytes += c->new_range.len;
		o->removed_bytes += c->old_range.len;
	}
	if (o->json) {
		print_json(c);
	} else if (!o->stat) {
		if (!o->names)
			printf("%c\t", c->kind);
		cli_print_name(stdout, c->path[0] ? c->path : ".", c->path[0] ? strlen(c->path) : 1,
			       !o->tty);
		if (!o->names)
			print_detail(c);
		putchar('\n');
	}
	return 0;
}

static void print_stat(const struct diff_args *o)
{
	char a[32], r[32];

	cli_human_size(a, o->added_bytes);
	cli_human_size(r, o->removed_bytes);
	printf("%" PRIu64 " added, %" PRIu64 " removed, %" PRIu64 " modified, %" PRIu64
	       " type changed, %" PRIu64 " metadata only; %s of file data added or changed, "
	       "%s removed or replaced\n",
	       o->count['A'], o->count['D'], o->count['M'], o->count['T'], o->count['m'], a, r);
}

int cmd_diff(int argc, char **argv)
{
	struct diff_args o = {0};
	amber_archive *a = NULL;
	amber_snapshot *x = NULL, *y = NULL;
	int rc, status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	status = cli_open_archive(&a, o.pos[0], o.passfile);
	if (status == 0)
		status = cli_open_snapshot(&x, a, o.stream, o.pos[1]);
	if (status == 0)
		status = cli_open_snapshot(&y, a, o.stream, o.pos[2]);
	if (status == 0) {
		rc = amber_diff(x, y, o.pos[3], !o.names, on_change, &o);
		status = rc ? cli_fail(rc, o.pos[0]) : CLI_EXIT_OK;
	}
	if (status == 0 && o.stat)
		print_stat(&o);
	if (fflush(stdout) != 0 && status == 0)
		status = cli_error("write error on standard output");
	amber_snapshot_free(y);
	amber_snapshot_free(x);
	amber_archive_free(a);
	return status;
}
