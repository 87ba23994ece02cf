/*
 * amberfs log ARCHIVE [--stream S] [-n N] [--json] [--passphrase-file FILE]
 *
 * The JSON form is an array with one object per line, so that both JSON
 * parsers and line tools (grep, head) can read it.  Both stream: each
 * snapshot is printed as the walk reaches it, and the walk reads a long
 * history through object stores it replaces as it goes (amber_log), so
 * memory does not grow with the history (itest_history_scale); -n stops
 * the walk after N snapshots.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
	"Usage: amberfs log ARCHIVE [--stream S] [-n N] [--json]\n"
	"List the snapshots of a stream, newest first: commit id, UTC time, files,\n"
	"total size, size of the new data stored, and tags.\n"
	"\n"
	"      --stream S              list stream S (default: main)\n"
	"  -n, --max-count N           list only the N newest snapshots\n"
	"      --json                  write a JSON array, one snapshot object per line\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"      --keyfile FILE, --share FILE (repeatable), --share-passphrase-file FILE\n"
	"                              unlock with a key file or recovery shares instead\n"
	"      --token-uri pkcs11:URI  unlock with the AES key of a token (a pkcs11 key\n"
	"                              slot) instead of a passphrase\n"
	"      --pin-file FILE         read the token's PIN from FILE (default: ask on\n"
	"                              the terminal)\n"
	"  -h, --help                  show this help\n";

enum { OPT_STREAM = CLI_OPT_LONG, OPT_JSON, OPT_PASSFILE };

#define LOG_ENOUGH 1    /* visit(): -n snapshots printed, stop the walk */

struct log_args {
	const char *archive;
	const char *passfile;
	const char *stream;
	int json;
	size_t max;             /* 0: all */
	size_t count;           /* snapshots printed so far */
};

/* A positive count for -n; 0 or -1 as in the usage message. */
static int parse_count(size_t *out, const char *text)
{
	char *end = NULL;
	unsigned long long v;

	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno || !end || *end || text[0] < '0' || text[0] > '9' || v == 0 || v > SIZE_MAX) {
		fprintf(stderr, "amberfs: log: -n wants a positive count, not '%s'\n", text);
		return -1;
	}
	*out = (size_t)v;
	return 0;
}

/* @return -1 to go on, else the exit status. */
static int parse(struct log_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"stream", required_argument, NULL, OPT_STREAM},
		{"json", no_argument, NULL, OPT_JSON},
		{"max-count", required_argument, NULL, 'n'},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":hn:", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		else if (c == 'n' && parse_count(&o->max, optarg))
			return CLI_EXIT_USAGE;
		else if (c == 'n')
			continue;
		else if (c == OPT_STREAM)
			o->stream = optarg;
		else if (c == OPT_JSON)
			o->json = 1;
		else if (c == OPT_PASSFILE)
			o->passfile = optarg;
		else
			return cli_bad_option("log", c, argv);
	}
	if (cli_token_check("log"))
		return CLI_EXIT_USAGE;
	if (cli_positionals(&o->archive, 1, argc, argv, optind, "log", "ARCHIVE"))
		return CLI_EXIT_USAGE;
	return -1;
}

static void print_text(const amber_snapinfo *in)
{
	char when[40], size[32], fresh[32];

	amber_time_format(when, in->time_ns, 9);
	cli_human_size(size, in->stats.bytes);
	cli_human_size(fresh, in->stats.bytes_new);
	printf("%s  %s  %6llu file%s  %10s  %10s new", in->id, when,
	       (unsigned long long)in->stats.files, in->stats.files == 1 ? " " : "s", size, fresh);
	for (size_t i = 0; in->tags && in->tags[i]; i++)
		printf("%s%s", i ? ", " : "  tags: ", in->tags[i]);
	putchar('\n');
}

static void json_str(const char *key, const char *s)
{
	printf(",");
	cli_json_bytes(stdout, key, s ? s : "", s ? strlen(s) : 0);
}

static void json_u64(const char *key, uint64_t v)
{
	printf(",\"%s\":%llu", key, (unsigned long long)v);
}

static void json_tags(char *const *tags)
{
	printf(",\"tags\":[");
	for (size_t i = 0; tags && tags[i]; i++) {
		if (i)
			putchar(',');
		cli_json_string(stdout, tags[i], strlen(tags[i]));
	}
	putchar(']');
}

static void print_json(const amber_snapinfo *in)
{
	char when[40];

	amber_time_format(when, in->time_ns, 9);
	printf("{\"id\":\"%s\",\"time\":\"%s\",\"time_ns\":%lld", in->id, when,
	       (long long)in->time_ns);
	json_str("stream", in->stream);
	json_tags(in->tags);
	if (in->parent[0])
		printf(",\"parent\":\"%s\"", in->parent);
	else
		printf(",\"parent\":null");
	json_str("host", in->host);
	json_str("source", in->source);
	json_str("message", in->message);
	json_u64("files", in->stats.files);
	json_u64("dirs", in->stats.dirs);
	json_u64("bytes", in->stats.bytes);
	json_u64("bytes_read", in->stats.bytes_read);
	json_u64("bytes_new", in->stats.bytes_new);
	json_u64("objects_new", in->stats.objects_new);
	json_u64("errors", in->stats.errors);
	putchar('}');
}

static int visit(const amber_snapinfo *info, void *payload)
{
	struct log_args *o = payload;

	if (!o->json)
		print_text(info);
	else {
		fputs(o->count ? ",\n" : "[\n", stdout);
		print_json(info);
	}
	o->count++;
	return o->max && o->count >= o->max ? LOG_ENOUGH : 0;
}

static int is_stream(const char *name, void *payload)
{
	return strcmp(name, payload) == 0;
}

/* A stream with no snapshot yet has no ref: an empty history, not an error. */
static int list(struct log_args *o, amber_archive *a)
{
	const char *st = o->stream ? o->stream : "main";
	int rc = amber_stream_list(a, is_stream, (void *)st), found = rc == 1;

	if (rc == 0 || rc == 1 || rc == AMBER_ENOTFOUND)
		rc = amber_log(a, o->stream, visit, o);
	if (rc == AMBER_ENOTFOUND && !found && o->count == 0)
		rc = 0;         /* no ref: nothing to list (a bad name is AMBER_EINVAL) */
	if (rc && rc != LOG_ENOUGH)
		return cli_fail(rc, o->archive);
	if (o->json)
		fputs(o->count ? "\n]\n" : "[]\n", stdout);
	return CLI_EXIT_OK;
}

int cmd_log(int argc, char **argv)
{
	struct log_args o = {0};
	amber_archive *a = NULL;
	int status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	status = cli_open_archive(&a, o.archive, o.passfile);
	if (status == 0)
		status = list(&o, a);
	amber_archive_free(a);
	return status;
}
