/*
 * Helpers shared by the amberfs subcommands: usage errors, opening and
 * unlocking an archive, SNAPSHOT[:PATH] specs, and output of names, JSON,
 * sizes and times.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Usage and errors ------------------------------------------------------- */

int cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "amberfs: %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (try 'amberfs %s --help')\n", cmd);
	return CLI_EXIT_USAGE;
}

static const char *bad_token; /* an abbreviated long option cli_getopt refused */

int cli_getopt(int argc, char **argv, const char *sopts, const struct option *lopts)
{
	const char *tok;
	size_t len;
	int idx = -1;
	int c = getopt_long(argc, argv, sopts, lopts, &idx);

	bad_token = NULL;
	if (idx < 0 || c == '?' || c == ':')
		return c;
	/*
	 * getopt_long accepts any unique prefix ("--pass" for
	 * "--passphrase-file"): refuse it, so a secret typed after a wrong
	 * option name is never taken for a file name.
	 */
	tok = (lopts[idx].has_arg == required_argument && optarg == argv[optind - 1] &&
	       optind >= 2) ? argv[optind - 2] : argv[optind - 1];
	len = strcspn(tok + 2, "=");
	if (strncmp(tok, "--", 2) == 0 && (strlen(lopts[idx].name) != len ||
					   strncmp(tok + 2, lopts[idx].name, len) != 0)) {
		bad_token = tok;
		optopt = 0;
		return '?';
	}
	return c;
}

int cli_signing_key(const char *cmd, const char **key, int unsigned_ok)
{
	const char *env = getenv("AMBERFS_SIGNING_KEY");

	if (*key && unsigned_ok)
		return cli_usage(cmd, "--signing-key and --unsigned exclude each other");
	if (*key && !**key)
		return cli_usage(cmd, "--signing-key wants a file name");
	if (!*key && !unsigned_ok && env && *env)
		*key = env;
	return -1;
}

enum { READ_OPT_STREAM = CLI_OPT_LONG, READ_OPT_PASSFILE, READ_OPT_SAFE };

int cli_parse_read_cmd(const char **pos, int npos, const char **stream, const char **passfile,
		       int *safe, int argc, char **argv, const char *cmd, const char *usage,
		       const char *help)
{
	static const struct option opts[] = {
		{"safe", no_argument, NULL, READ_OPT_SAFE},
		{"stream", required_argument, NULL, READ_OPT_STREAM},
		{"passphrase-file", required_argument, NULL, READ_OPT_PASSFILE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		else if (c == READ_OPT_STREAM)
			*stream = optarg;
		else if (c == READ_OPT_PASSFILE)
			*passfile = optarg;
		else if (c == READ_OPT_SAFE && safe)
			*safe = 1;
		else
			return cli_bad_option(cmd, c, argv);
	}
	if (cli_positionals(pos, npos, argc, argv, optind, cmd, usage))
		return CLI_EXIT_USAGE;
	return -1;
}

int cli_bad_option(const char *cmd, int c, char **argv)
{
	const char *arg = bad_token ? bad_token : argv[optind - 1];

	/* optopt is the letter for short options, 0 or >= CLI_OPT_LONG for long. */
	if (c == ':') {
		if (optopt > 0 && optopt < CLI_OPT_LONG)
			return cli_usage(cmd, "option '-%c' requires an argument", optopt);
		return cli_usage(cmd, "option '%s' requires an argument", arg);
	}
	if (optopt > 0 && optopt < CLI_OPT_LONG)
		return cli_usage(cmd, "unknown option '-%c'", optopt);
	/* never echo what follows '=': it may be a secret */
	return cli_usage(cmd, "unknown option '%.*s'", (int)strcspn(arg, "="), arg);
}

int cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("amberfs: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return CLI_EXIT_ERROR;
}

int cli_fail(int code, const char *archive)
{
	const char *msg = amber_error_last();

	if (code == AMBER_EBADKEY && archive)
		return cli_error("wrong passphrase for %s: no key slot opens with it", archive);
	if (!msg || !*msg)
		return cli_error("%s: unexpected error %d", archive ? archive : "amberfs", code);
	cli_error("%s", msg);
	return code == AMBER_EPLAIN ? CLI_EXIT_PLAIN : CLI_EXIT_ERROR;
}

int cli_help(const char *text)
{
	fputs(text, stdout);
	return CLI_EXIT_OK;
}

int cli_positionals(const char **out, int need, int argc, char **argv, int first,
		    const char *cmd, const char *synopsis)
{
	int have = argc - first;
	const char *env = getenv("AMBERFS_ARCHIVE");
	int skip = 0;

	if (have == need - 1 && env && *env) {
		out[0] = env;
		skip = 1;
	} else if (have != need) {
		if (have < need)
			return cli_usage(cmd, "missing operand (expected %s)", synopsis);
		return cli_usage(cmd, "unexpected operand '%s' (expected %s)",
				 argv[first + need], synopsis);
	}
	for (int i = skip; i < need; i++)
		out[i] = argv[first + i - skip];
	return 0;
}

int cli_parse_int(int *out, const char *text, int min, int max, const char *cmd,
		  const char *opt)
{
	char *end = NULL;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < min || v > max)
		return cli_usage(cmd, "%s wants an integer from %d to %d, not '%s'", opt, min,
				 max, text);
	*out = (int)v;
	return 0;
}

/* Archives and snapshots -------------------------------------------------- */

int cli_kdf_test;

/* The library reads no environment: this is where amberfs maps it. */
static const char *cache_base(void)
{
	static char buf[4096];
	const char *env = getenv("AMBERFS_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	int n = -1;

	if (env && *env)
		return env;
	if (xdg && *xdg)
		n = snprintf(buf, sizeof(buf), "%s/amberfs", xdg);
	else if (home && *home)
		n = snprintf(buf, sizeof(buf), "%s/.cache/amberfs", home);
	return n > 0 && (size_t)n < sizeof(buf) ? buf : NULL;
}

static uint64_t pack_rollover(void)
{
	const char *env = getenv("AMBERFS_PACK_ROLLOVER_BYTES");
	char *end = NULL;
	unsigned long long v;

	if (!env || !*env || strspn(env, "0123456789") != strlen(env))
		return 0;
	errno = 0;
	v = strtoull(env, &end, 10);
	return errno || *end ? 0 : v;
}

void cli_open_opts(amber_open_opts *o)
{
	amber_open_opts init = AMBER_OPEN_OPTS_INIT;

	*o = init;
	o->cache_dir = cache_base();
	o->pack_rollover = pack_rollover();
	o->weak_kdf_ok = cli_kdf_test;
}

/* The library skips an unsafe cache directory without a word: say so, once. */
static void cache_warn_once(const amber_archive *a)
{
	static int warned;

	if (!warned && amber_archive_cache_check(a) < 0) {
		warned = 1;
		fprintf(stderr, "amberfs: warning: %s\n", amber_error_last());
	}
}

int cli_open_archive(amber_archive **out, const char *path, const char *passfile)
{
	amber_archive *a = NULL;
	amber_open_opts oo;
	int rc;

	cli_open_opts(&oo);
	oo.expect_encrypted = passfile != NULL || cli_unlock_given();
	rc = amber_archive_open_ext(&a, path, &oo);
	if (rc)
		return cli_fail(rc, path);
	if (amber_archive_needs_key(a) && (rc = cli_unlock_archive(a, path, passfile)) != 0) {
		amber_archive_free(a);
		return rc;
	}
	cache_warn_once(a);
	*out = a;
	return 0;
}

/* "@EPOCH[.frac]" parses with its '@', ISO forms without it. */
static int is_time(const char *text)
{
	int64_t ns;

	return amber_time_parse(&ns, text) == 0 || amber_time_parse(&ns, text + 1) == 0;
}

void cli_split_spec(char *arg, const char **spec, const char **path)
{
	char *colon;

	*spec = arg;
	*path = "";
	if (arg[0] != '@') {
		colon = strchr(arg, ':');
		if (colon) {
			*colon = '\0';
			*path = colon + 1;
		}
		return;
	}
	if (is_time(arg))
		return;
	for (colon = strrchr(arg, ':'); colon; colon = memrchr(arg, ':', colon - arg)) {
		*colon = '\0';
		if (is_time(arg)) {
			*path = colon + 1;
			return;
		}
		*colon = ':';
	}
	/* Not a time at all: amber_resolve will say what is wrong with it. */
}

int cli_open_snapshot(amber_snapshot **out, amber_archive *a, const char *stream,
		      const char *spec)
{
	char id[AMBER_OID_HEXSZ + 1];
	int rc;

	rc = amber_resolve(id, a, stream, spec);
	if (!rc)
		rc = amber_snapshot_open(out, a, id);
	if (rc)
		return cli_fail(rc, amber_archive_path(a));
	return 0;
}

int cli_target_open(struct cli_target *t, const char *archive, const char *passfile,
		    const char *stream, const char *arg)
{
	int status;

	t->arg = strdup(arg);
	if (!t->arg)
		return cli_error("out of memory");
	cli_split_spec(t->arg, &t->spec, &t->path);
	status = cli_open_archive(&t->archive, archive, passfile);
	if (status == 0)
		status = cli_open_snapshot(&t->snap, t->archive, stream, t->spec);
	return status;
}

void cli_target_close(struct cli_target *t)
{
	amber_snapshot_free(t->snap);
	amber_archive_free(t->archive);
	free(t->arg);
	t->snap = NULL;
	t->archive = NULL;
	t->arg = NULL;
}

/* Output -------------------------------------------------------------------- */

size_t cli_utf8_seq(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)))
		return 0;
	if (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
		return 0;
	return len;
}

int cli_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0, k; i < n; i += k) {
		k = cli_utf8_seq(p + i, n - i);
		if (!k)
			return 0;
	}
	return 1;
}

static void json_char(FILE *f, unsigned char c)
{
	switch (c) {
	case '"': fputs("\\\"", f); return;
	case '\\': fputs("\\\\", f); return;
	case '\n': fputs("\\n", f); return;
	case '\t': fputs("\\t", f); return;
	case '\r': fputs("\\r", f); return;
	}
	if (c < 0x20 || c == 0x7f)
		fprintf(f, "\\u%04x", c);
	else
		fputc(c, f);
}

/* Invalid bytes become \u00XX: each byte read as a Latin-1 code point. */
void cli_json_string(FILE *f, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, k;

	fputc('"', f);
	while (i < n) {
		k = cli_utf8_seq(p + i, n - i);
		if (k == 1)
			json_char(f, p[i]);
		else if (k > 1)
			fwrite(p + i, 1, k, f);
		else
			fprintf(f, "\\u%04x", p[i]);
		i += k ? k : 1;
	}
	fputc('"', f);
}

static void json_base64(FILE *f, const char *s, size_t n)
{
	size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(cap);

	if (!b64) {
		fputs("null", f);
		return;
	}
	sodium_bin2base64(b64, cap, (const unsigned char *)s, n,
			  sodium_base64_VARIANT_ORIGINAL);
	fprintf(f, "\"%s\"", b64);
	free(b64);
}

void cli_json_bytes(FILE *f, const char *key, const char *s, size_t n)
{
	fprintf(f, "\"%s\":", key);
	cli_json_string(f, s, n);
	if (cli_utf8_valid(s, n))
		return;
	fprintf(f, ",\"%s_base64\":", key);
	json_base64(f, s, n);
}

/* C0 controls, DEL and the C1 controls U+0080..U+009F (C2 80..C2 9F). */
static int is_control(const unsigned char *p, size_t k)
{
	if (k == 1)
		return p[0] < 0x20 || p[0] == 0x7f;
	return k == 2 && p[0] == 0xc2 && p[1] < 0xa0;
}

void cli_print_name(FILE *f, const char *s, size_t n, int raw)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, k;

	if (raw) {
		fwrite(s, 1, n, f);
		return;
	}
	while (i < n) {
		k = cli_utf8_seq(p + i, n - i);
		if (!k || is_control(p + i, k))
			fputc('?', f);
		else
			fwrite(p + i, 1, k, f);
		i += k ? k : 1;
	}
}

void cli_human_size(char out[32], uint64_t bytes)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)bytes;
	int u = -1;

	if (bytes < 1024) {
		snprintf(out, 32, "%llu B", (unsigned long long)bytes);
		return;
	}
	while (v >= 1024.0 && u < 5) {
		v /= 1024.0;
		u++;
	}
	snprintf(out, 32, "%.1f %s", v, units[u]);
}

void cli_time_iso(char out[64], int64_t sec, uint32_t nsec, int digits)
{
	struct tm tm;
	time_t t = (time_t)sec;
	char frac[16] = "";
	uint32_t f = nsec;

	if (!gmtime_r(&t, &tm)) {
		snprintf(out, 64, "@%lld", (long long)sec);
		return;
	}
	if (digits > 0 && digits <= 9) {
		for (int i = digits; i < 9; i++)
			f /= 10;
		snprintf(frac, sizeof(frac), ".%0*u", digits, f);
	}
	snprintf(out, 64, "%04lld-%02d-%02dT%02d:%02d:%02d%sZ", (long long)tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}
