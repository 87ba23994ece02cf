/*
 * amberfs verify ARCHIVE [--read-data] [--threads N] [--public-key FILE | --no-key]
 *                [--json] [-v]
 *
 * Each problem is one line on stdout ("KIND: message; object ...;
 * snapshot ...; path ..."), then one summary line (with --json: one JSON
 * object per line for each, the summary last); a progress line goes to
 * stderr when it is a terminal.  Exit 0: nothing found; 1: problems found
 * (or the archive could not be read at all); 2: usage.
 */
#include "cli.h"

#include "amber_verify.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char help[] =
	"Usage: amberfs verify ARCHIVE [--read-data] [--threads N] [--public-key FILE | --no-key]\n"
	"                      [--json] [-v]\n"
	"Check every object, snapshot, signature and key slot of ARCHIVE.\n"
	"\n"
	"Without the key: every object reachable from a ref is present and hashes to\n"
	"its id, histories are linear with increasing times, config and key slots are\n"
	"well-formed, and signatures verify against the archive's public key (or\n"
	"FILE).  With the key (the default): also every record, directory and chunk\n"
	"index authenticates and decodes.  A stream whose tip no longer descends from\n"
	"the tip the last clean verify saw is reported as a rollback or as rewritten\n"
	"history (marks live in the user's cache directory).\n"
	"\n"
	"      --read-data             also decode every chunk of every file (needs the key);\n"
	"                              each distinct chunk once, in pack order\n"
	"      --threads N             threads reading, hashing and decoding objects\n"
	"                              (default 0: one per CPU)\n"
	"      --no-key                do not ask for the passphrase; skip keyed checks\n"
	"      --public-key FILE       check signatures against this OpenSSH public key\n"
	"      --passphrase-file FILE  read the passphrase from FILE\n"
	"      --keyfile FILE, --share FILE (repeatable), --share-passphrase-file FILE,\n"
	"      --token-uri URI, --pin-file FILE\n"
	"                              unlock with a key file, recovery shares or a\n"
	"                              PKCS#11 token instead of a passphrase\n"
	"      --json                  one JSON object per line: each problem, warning and\n"
	"                              (with -v) unsigned snapshot, then the summary\n"
	"  -v, --verbose               list the ids of unsigned snapshots\n"
	"  -h, --help                  show this help\n"
	"\n"
	"Exit status: 0 nothing found, 1 problems found (each on its own line) or the\n"
	"archive could not be read, 2 usage error.\n";

enum { OPT_READ_DATA = CLI_OPT_LONG, OPT_NO_KEY, OPT_PUBKEY, OPT_PASSFILE, OPT_THREADS,
       OPT_JSON };

struct verify_args {
	const char *pos[1];
	const char *passfile;
	const char *pubkey_file;
	int read_data, no_key, verbose, json, threads;
	int raw;                /* stdout is not a terminal */
	struct cli_progress prog;
};

/* @return -1 to go on, else the exit status. */
static int parse(struct verify_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"read-data", no_argument, NULL, OPT_READ_DATA},
		{"no-key", no_argument, NULL, OPT_NO_KEY},
		{"public-key", required_argument, NULL, OPT_PUBKEY},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"threads", required_argument, NULL, OPT_THREADS},
		{"json", no_argument, NULL, OPT_JSON},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, bad = 0;

	opterr = 0;
	while (!bad && (c = cli_getopt(argc, argv, ":hv", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		else if (c == 'v')
			o->verbose = 1;
		else if (c == OPT_READ_DATA)
			o->read_data = 1;
		else if (c == OPT_NO_KEY)
			o->no_key = 1;
		else if (c == OPT_PUBKEY)
			o->pubkey_file = optarg;
		else if (c == OPT_PASSFILE)
			o->passfile = optarg;
		else if (c == OPT_THREADS)
			bad = cli_parse_int(&o->threads, optarg, 0, 1024, "verify", "--threads");
		else if (c == OPT_JSON)
			o->json = 1;
		else
			return cli_bad_option("verify", c, argv);
	}
	if (bad)
		return CLI_EXIT_USAGE;
	if (cli_positionals(o->pos, 1, argc, argv, optind, "verify", "ARCHIVE"))
		return CLI_EXIT_USAGE;
	if (o->read_data && o->no_key)
		return cli_usage("verify", "--read-data needs the key; it cannot go with --no-key");
	return -1;
}

static int load_pubkey(uint8_t pk[32], const char *file)
{
	char line[4096];
	FILE *f = fopen(file, "r");
	int ok = f && fgets(line, sizeof(line), f);

	if (f)
		fclose(f);
	if (!ok)
		return cli_error("verify: cannot read public key file %s", file);
	line[strcspn(line, "\r\n")] = '\0';
	if (amber_pubkey_parse(pk, line) < 0)
		return cli_error("verify: %s is not an ssh-ed25519 public key line", file);
	return 0;
}

static void print_field(struct verify_args *o, const char *label, const char *value)
{
	if (!value || !*value)
		return;
	printf("; %s ", label);
	cli_print_name(stdout, value, strlen(value), o->raw);
}

/* {"type":TYPE,"kind":...,"message":...,"object":...,"snapshot":...,"path":...} */
static void json_problem(const char *type, const amber_verify_problem *p)
{
	printf("{\"type\":\"%s\",\"kind\":\"%s\",", type, amber_verify_kind_name(p->kind));
	cli_json_bytes(stdout, "message", p->message, strlen(p->message));
	printf(",\"object\":\"%s\",\"snapshot\":\"%s\",", p->object, p->snapshot);
	cli_json_bytes(stdout, "path", p->path, strlen(p->path));
	puts("}");
	fflush(stdout);
}

static void on_problem(const amber_verify_problem *p, void *payload)
{
	struct verify_args *o = payload;

	cli_progress_end(&o->prog);
	if (o->json) {
		json_problem("problem", p);
		return;
	}
	printf("%s: ", amber_verify_kind_name(p->kind));
	cli_print_name(stdout, p->message, strlen(p->message), o->raw);
	print_field(o, "object", p->object);
	print_field(o, "snapshot", p->snapshot);
	print_field(o, "path", p->path);
	putchar('\n');
	fflush(stdout);
}

/* Findings that are not problems: "warning: KIND: message; snapshot ID". */
static void on_warning(const amber_verify_problem *p, void *payload)
{
	struct verify_args *o = payload;

	cli_progress_end(&o->prog);
	if (o->json) {
		json_problem("warning", p);
		return;
	}
	printf("warning: %s: ", amber_verify_kind_name(p->kind));
	cli_print_name(stdout, p->message, strlen(p->message), o->raw);
	print_field(o, "snapshot", p->snapshot);
	putchar('\n');
	fflush(stdout);
}

static void on_unsigned(const char *id, void *payload)
{
	struct verify_args *o = payload;

	if (!o->verbose)
		return;
	cli_progress_end(&o->prog);
	if (o->json)
		printf("{\"type\":\"unsigned\",\"snapshot\":\"%s\"}\n", id);
	else
		printf("unsigned snapshot %s\n", id);
}

static void on_progress(const amber_verify_stats *s, void *payload)
{
	struct verify_args *o = payload;
	amber_stats st = AMBER_STATS_INIT;

	/* Reuse the shared progress line: objects and bytes read so far. */
	o->prog.noun = "object";
	st.files = s->objects;
	st.dirs = s->snapshots;
	st.bytes = s->bytes + s->data_bytes;	/* archive bytes, then file data */
	st.bytes_read = st.bytes;
	cli_progress_cb(&st, "", &o->prog);
}

static double elapsed_s(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static double mib_s(uint64_t bytes, double secs)
{
	return secs > 0 ? (double)bytes / 1048576.0 / secs : 0.0;
}

/* The rates: archive bytes checked (every object read and hashed) and,
 * with --read-data, file data decoded. */
static void summary_rates(const amber_verify_stats *s, double secs, int read_data)
{
	char size[32];

	cli_human_size(size, s->bytes);
	printf("), %" PRIu64 " object%s, %s of archive checked in %.1f s (%.1f MiB/s)", s->objects,
	       s->objects == 1 ? "" : "s", size, secs, mib_s(s->bytes, secs));
	if (read_data && s->keyed) {
		cli_human_size(size, s->data_bytes);
		printf("; %s of file data in %" PRIu64 " chunk%s decoded (%.1f MiB/s, %u thread%s)",
		       size, s->chunks, s->chunks == 1 ? "" : "s", mib_s(s->data_bytes, secs),
		       s->threads, s->threads == 1 ? "" : "s");
	}
	printf("%s\n", s->keyed ? "" : "; contents not authenticated (no key)");
}

static void summary(const amber_verify_stats *s, double secs, int read_data)
{
	printf("verify: %" PRIu64 " problem%s", s->problems, s->problems == 1 ? "" : "s");
	if (s->warnings)
		printf(", %" PRIu64 " warning%s", s->warnings, s->warnings == 1 ? "" : "s");
	printf("; %" PRIu64 " snapshot%s in %" PRIu64
	       " stream%s (%" PRIu64 " signed and verified, %" PRIu64 " unsigned",
	       s->snapshots, s->snapshots == 1 ? "" : "s",
	       s->streams, s->streams == 1 ? "" : "s", s->signed_ok, s->unsigned_snapshots);
	if (s->unchecked)
		printf(", %" PRIu64 " signed but no public key to check", s->unchecked);
	/* the same units as every other figure: IEC sizes, MiB/s */
	summary_rates(s, secs, read_data);
}

/* The summary as one JSON object: counts, bytes and rates. */
static void summary_json(const amber_verify_stats *s, double secs, int read_data)
{
	printf("{\"type\":\"summary\",\"problems\":%" PRIu64 ",\"warnings\":%" PRIu64
	       ",\"streams\":%" PRIu64 ",\"snapshots\":%" PRIu64 ",\"signed_ok\":%" PRIu64
	       ",\"unsigned\":%" PRIu64 ",\"unchecked\":%" PRIu64, s->problems, s->warnings,
	       s->streams, s->snapshots, s->signed_ok, s->unsigned_snapshots, s->unchecked);
	printf(",\"keyed\":%s,\"read_data\":%s,\"objects\":%" PRIu64 ",\"archive_bytes\":%"
	       PRIu64 ",\"files\":%" PRIu64 ",\"dirs\":%" PRIu64, s->keyed ? "true" : "false",
	       read_data && s->keyed ? "true" : "false", s->objects, s->bytes, s->files, s->dirs);
	printf(",\"chunks\":%" PRIu64 ",\"chunk_bytes\":%" PRIu64 ",\"data_bytes\":%" PRIu64
	       ",\"threads\":%u,\"seconds\":%.3f,\"archive_mib_per_s\":%.1f"
	       ",\"data_mib_per_s\":%.1f,\"marks_updated\":%s}\n", s->chunks, s->chunk_bytes,
	       s->data_bytes, s->threads, secs, mib_s(s->bytes, secs), mib_s(s->data_bytes, secs),
	       s->marks_updated ? "true" : "false");
}

static int run(struct verify_args *o, amber_archive *a, const uint8_t *pk)
{
	amber_verify_opts vo = AMBER_VERIFY_OPTS_INIT;
	amber_verify_stats st = AMBER_VERIFY_STATS_INIT;
	unsigned char *pass = NULL;
	size_t plen = 0;
	struct timespec t0;
	int rc;

	if (!o->no_key && amber_archive_needs_key(a) && cli_unlock_given()) {
		if ((rc = cli_unlock_archive(a, o->pos[0], o->passfile)) != 0)
			return rc;
	} else if (!o->no_key && amber_archive_needs_key(a) &&
		   cli_secret_get(&pass, &plen, o->pos[0], o->passfile, 0)) {
		return CLI_EXIT_ERROR;
	}
	vo.passphrase = pass;
	vo.passphrase_len = plen;
	vo.no_key = o->no_key;
	vo.read_data = o->read_data;
	vo.threads = o->threads;
	vo.public_key = pk;
	vo.problem = on_problem;
	vo.warning = on_warning;
	vo.unsigned_snapshot = on_unsigned;
	vo.progress = on_progress;
	vo.payload = o;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cli_progress_init(&o->prog);
	rc = amber_verify(&st, a, &vo);
	cli_progress_end(&o->prog);
	cli_secret_free(pass, plen);
	if (rc < 0)
		return cli_fail(rc, o->pos[0]);
	if (o->json)
		summary_json(&st, elapsed_s(&t0), o->read_data);
	else
		summary(&st, elapsed_s(&t0), o->read_data);
	if (st.weak_slots)
		fprintf(stderr, "amberfs: WARNING: %s: %" PRIu64 " key slot%s a weak or test-only "
			"KDF cost: anyone with a copy of the archive can guess the passphrase "
			"quickly; do not keep real data in it\n", o->pos[0], st.weak_slots,
			st.weak_slots == 1 ? " uses" : "s use");
	if (st.meta_unauthenticated)
		fprintf(stderr, "amberfs: note: %s: its key slots and config are not authenticated "
			"(an archive made before slot kinds): run 'amberfs key seal %s' to add "
			"the authenticator\n", o->pos[0], o->pos[0]);
	if (st.problems)
		return cli_error("verify: %s: %" PRIu64 " problem%s found", o->pos[0], st.problems,
				 st.problems == 1 ? "" : "s");
	return CLI_EXIT_OK;
}

int cmd_verify(int argc, char **argv)
{
	struct verify_args o = {0};
	amber_open_opts oo;
	amber_archive *a = NULL;
	uint8_t pk[32];
	int status = parse(&o, argc, argv), rc;

	if (status >= 0)
		return status;
	if (o.pubkey_file && load_pubkey(pk, o.pubkey_file))
		return CLI_EXIT_ERROR;
	o.raw = !isatty(STDOUT_FILENO);
	cli_open_opts(&oo);
	oo.plain_claim_ok = 1; /* reported as a problem instead */
	oo.expect_encrypted = o.passfile != NULL;
	rc = amber_archive_open_ext(&a, o.pos[0], &oo);
	if (rc)
		return cli_fail(rc, o.pos[0]);
	status = run(&o, a, o.pubkey_file ? pk : NULL);
	amber_archive_free(a);
	return status;
}
