/*
 * amberfs ls ARCHIVE SNAPSHOT[:PATH] [-l] [--json] [--stream S]
 *
 * Names are byte strings.  They are written raw when stdout is not a
 * terminal (so scripts get the exact bytes), and with control characters
 * and invalid UTF-8 shown as '?' on a terminal (so a name cannot move the
 * cursor or retitle the window).  JSON escapes them and adds the exact
 * bytes in base64 when they are not UTF-8.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static const char help[] =
	"Usage: amberfs ls ARCHIVE SNAPSHOT[:PATH] [-l] [--json]\n"
	"List directory PATH of SNAPSHOT (default: its root), or the one entry PATH\n"
	"if it is not a directory.\n"
	CLI_HELP_SNAPSHOT
	"\n"
	"  -l                          long listing: mode, links, uid, gid, size (or\n"
	"                              major,minor), mtime (UTC), name, link target\n"
	"      --json                  write a JSON array, one entry object per line\n"
	"      --stream S              resolve 'latest' and @TIME in stream S\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"      --keyfile FILE, --share FILE (repeatable), --share-passphrase-file FILE\n"
	"                              unlock with a key file or recovery shares instead\n"
	"      --token-uri pkcs11:URI  unlock with the AES key of a token (a pkcs11 key\n"
	"                              slot) instead of a passphrase\n"
	"      --pin-file FILE         read the token's PIN from FILE (default: ask on\n"
	"                              the terminal)\n"
	"  -h, --help                  show this help\n";

enum { OPT_JSON = CLI_OPT_LONG, OPT_STREAM, OPT_PASSFILE };

struct ls_args {
	const char *pos[2];     /* ARCHIVE, SNAPSHOT[:PATH] */
	const char *passfile;
	const char *stream;
	int json, lng;
	int raw;                /* stdout is not a terminal */
};

/* Column widths of the long listing. */
struct widths {
	int nlink, uid, gid, size;
};

/* @return -1 to go on, else the exit status. */
static int parse(struct ls_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, OPT_JSON},
		{"stream", required_argument, NULL, OPT_STREAM},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":hl", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		else if (c == 'l')
			o->lng = 1;
		else if (c == OPT_JSON)
			o->json = 1;
		else if (c == OPT_STREAM)
			o->stream = optarg;
		else if (c == OPT_PASSFILE)
			o->passfile = optarg;
		else
			return cli_bad_option("ls", c, argv);
	}
	if (cli_token_check("ls"))
		return CLI_EXIT_USAGE;
	if (cli_positionals(o->pos, 2, argc, argv, optind, "ls", "ARCHIVE SNAPSHOT[:PATH]"))
		return CLI_EXIT_USAGE;
	return -1;
}

static int is_device(const amber_entry *e)
{
	return e->type == AMBER_T_CHR || e->type == AMBER_T_BLK;
}

static const char *type_name(uint8_t type)
{
	static const char *const names[] = {"?", "file", "dir", "symlink", "fifo", "chr", "blk"};

	return type <= AMBER_T_BLK ? names[type] : "?";
}

static char exec_char(uint32_t mode, uint32_t x, uint32_t special, char on, char off)
{
	if (mode & special)
		return mode & x ? on : off;
	return mode & x ? 'x' : '-';
}

static void mode_string(char out[11], const amber_entry *e)
{
	static const char types[] = "?-dlpcb";
	uint32_t m = e->mode;

	out[0] = e->type <= AMBER_T_BLK ? types[e->type] : '?';
	out[1] = m & 0400 ? 'r' : '-';
	out[2] = m & 0200 ? 'w' : '-';
	out[3] = exec_char(m, 0100, 04000, 's', 'S');
	out[4] = m & 040 ? 'r' : '-';
	out[5] = m & 020 ? 'w' : '-';
	out[6] = exec_char(m, 010, 02000, 's', 'S');
	out[7] = m & 04 ? 'r' : '-';
	out[8] = m & 02 ? 'w' : '-';
	out[9] = exec_char(m, 01, 01000, 't', 'T');
	out[10] = '\0';
}

static void size_field(char out[48], const amber_entry *e)
{
	if (is_device(e))
		snprintf(out, 48, "%u,%u", major(e->rdev), minor(e->rdev));
	else
		snprintf(out, 48, "%llu", (unsigned long long)e->size);
}

static void widen(int *w, const char *text)
{
	int n = (int)strlen(text);

	if (n > *w)
		*w = n;
}

static void measure(struct widths *w, const amber_entry *const *v, size_t n)
{
	char buf[48];

	for (size_t i = 0; i < n; i++) {
		snprintf(buf, sizeof(buf), "%u", v[i]->nlink);
		widen(&w->nlink, buf);
		snprintf(buf, sizeof(buf), "%u", v[i]->uid);
		widen(&w->uid, buf);
		snprintf(buf, sizeof(buf), "%u", v[i]->gid);
		widen(&w->gid, buf);
		size_field(buf, v[i]);
		widen(&w->size, buf);
	}
}

static void print_long(const struct ls_args *o, const struct widths *w, const amber_entry *e)
{
	char mode[11], size[48], mtime[64];

	mode_string(mode, e);
	size_field(size, e);
	cli_time_iso(mtime, e->mtime_sec, e->mtime_nsec, 9);
	printf("%s %*u %*u %*u %*s %s ", mode, w->nlink, e->nlink, w->uid, e->uid, w->gid,
	       e->gid, w->size, size, mtime);
	cli_print_name(stdout, e->name, e->name_len, o->raw);
	if (e->type == AMBER_T_SYMLINK && e->target) {
		fputs(" -> ", stdout);
		cli_print_name(stdout, e->target, e->target_len, o->raw);
	}
	putchar('\n');
}

static void json_xattrs(const amber_entry *e)
{
	if (!e->nxattrs)
		return;
	fputs(",\"xattrs\":[", stdout);
	for (size_t i = 0; i < e->nxattrs; i++) {
		if (i)
			putchar(',');
		cli_json_string(stdout, e->xattrs[i].name, strlen(e->xattrs[i].name));
	}
	putchar(']');
}

static void json_mtime(const amber_entry *e)
{
	char mtime[64];
	int64_t ns;

	cli_time_iso(mtime, e->mtime_sec, e->mtime_nsec, 9);
	printf(",\"mtime\":\"%s\"", mtime);
	if (__builtin_mul_overflow(e->mtime_sec, (int64_t)1000000000, &ns) ||
	    __builtin_add_overflow(ns, (int64_t)e->mtime_nsec, &ns))
		fputs(",\"mtime_ns\":null", stdout);
	else
		printf(",\"mtime_ns\":%lld", (long long)ns);
}

static void print_json(const amber_entry *e)
{
	putchar('{');
	cli_json_bytes(stdout, "name", e->name, e->name_len);
	printf(",\"type\":\"%s\",\"mode\":%u,\"uid\":%u,\"gid\":%u,\"size\":%llu",
	       type_name(e->type), e->mode & 07777, e->uid, e->gid,
	       (unsigned long long)e->size);
	json_mtime(e);
	printf(",\"nlink\":%u", e->nlink);
	if (e->type == AMBER_T_SYMLINK && e->target) {
		putchar(',');
		cli_json_bytes(stdout, "target", e->target, e->target_len);
	}
	json_xattrs(e);
	if (is_device(e))
		printf(",\"rdev\":%llu,\"major\":%u,\"minor\":%u", (unsigned long long)e->rdev,
		       major(e->rdev), minor(e->rdev));
	putchar('}');
}

static void print_all(const struct ls_args *o, const amber_entry *const *v, size_t n)
{
	struct widths w = {0};

	if (o->lng && !o->json)
		measure(&w, v, n);
	if (o->json)
		fputs(n ? "[\n" : "[]\n", stdout);
	for (size_t i = 0; i < n; i++) {
		if (o->json) {
			print_json(v[i]);
			fputs(i + 1 < n ? ",\n" : "\n]\n", stdout);
		} else if (o->lng) {
			print_long(o, &w, v[i]);
		} else {
			cli_print_name(stdout, v[i]->name, v[i]->name_len, o->raw);
			putchar('\n');
		}
	}
}

static int list_dir(const struct ls_args *o, amber_snapshot *s, const amber_entry *dir)
{
	amber_dir *d = NULL;
	const amber_entry **v = NULL;
	size_t n;
	int rc = amber_dir_open(&d, s, dir);

	if (rc)
		return cli_fail(rc, o->pos[0]);
	n = amber_dir_count(d);
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v) {
		amber_dir_free(d);
		return cli_error("out of memory listing %zu entries", n);
	}
	for (size_t i = 0; i < n; i++)
		v[i] = amber_dir_entry(d, i);
	print_all(o, v, n);
	free(v);
	amber_dir_free(d);
	return CLI_EXIT_OK;
}

static int list(const struct ls_args *o, struct cli_target *t)
{
	amber_entry *e = NULL;
	const amber_entry *one;
	int status, rc = amber_stat(&e, t->snap, t->path);

	if (rc)
		return cli_fail(rc, o->pos[0]);
	if (e->type == AMBER_T_DIR) {
		status = list_dir(o, t->snap, e);
	} else {
		one = e;
		print_all(o, &one, 1);
		status = CLI_EXIT_OK;
	}
	amber_entry_free(e);
	return status;
}

int cmd_ls(int argc, char **argv)
{
	struct ls_args o = {0};
	struct cli_target t = {0};
	int status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	o.raw = !isatty(STDOUT_FILENO);
	status = cli_target_open(&t, o.pos[0], o.passfile, o.stream, o.pos[1]);
	if (status == 0)
		status = list(&o, &t);
	cli_target_close(&t);
	return status;
}
