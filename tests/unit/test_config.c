/*
 * The archive config (refs/amberfs/meta:config) as amber_archive_open_ext()
 * reads it: every number range-checked with no trailing garbage, every key
 * at most once.  Each case rewrites the config of a fresh plain archive
 * with git plumbing and opens it again.
 */
#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "amber.h"
#include "scratch.h"

#define OK(call)                                                                        \
	do {                                                                            \
		int rc_ = (call);                                                       \
		cr_assert_eq(rc_, 0, "%s -> %d: %s", #call, rc_, amber_error_last());   \
	} while (0)

static void setup(void)
{
	scratch_make("config");
	OK(amber_global_init());
}

TestSuite(config, .init = setup, .fini = scratch_remove);

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
	char cmd[16384];
	va_list ap;
	int st;

	va_start(ap, fmt);
	cr_assert_lt(vsnprintf(cmd, sizeof(cmd), fmt, ap), (int)sizeof(cmd));
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char id[33];

static void new_archive(void)
{
	amber_open_opts oo = AMBER_OPEN_OPTS_INIT;
	amber_create_opts o = {.version = AMBER_CREATE_OPTS_VERSION, .plain = 1, .open = &oo};
	amber_archive *a = NULL;

	oo.cache_dir = "";
	OK(amber_archive_create(&a, at("arch"), &o));
	memcpy(id, amber_archive_id(a), 33);
	amber_archive_free(a);
}

/* Open the archive after replacing its config with `text`. */
static int open_with_config(const char *text)
{
	amber_open_opts oo = AMBER_OPEN_OPTS_INIT;
	amber_archive *a = NULL;
	FILE *f = fopen(at("config"), "w");
	int rc;

	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	cr_assert_eq(sh("set -e; cd '%s'; g='git --git-dir=arch'; "
			"b=$($g hash-object -w config); "
			"t=$($g ls-tree refs/amberfs/meta^{tree} | sed \"s/ [0-9a-f]*\\tconfig$/ $b\\tconfig/\" "
			"| $g mktree); "
			"c=$(echo meta | $g commit-tree $t -p refs/amberfs/meta); "
			"$g update-ref refs/amberfs/meta $c", base), 0);
	oo.cache_dir = "";
	rc = amber_archive_open_ext(&a, at("arch"), &oo);
	amber_archive_free(a);
	return rc;
}

static char *config(const char *fmt, const char *enc, const char *chunker, const char *zstd)
{
	static char text[1024];

	snprintf(text, sizeof(text), "format %s\nid %s\nencryption %s\nchunker fastcdc-gear %s\n"
		 "compression zstd %s\n", fmt, id, enc, chunker, zstd);
	return text;
}

#define CHUNKER "131072 524288 2097152"

Test(config, the_written_config_opens)
{
	new_archive();
	OK(open_with_config(config("1", "none", CHUNKER, "1")));
}

Test(config, numbers_that_overflow_are_corrupt)
{
	new_archive();
	cr_assert_eq(open_with_config(config("4294967297", "none", CHUNKER, "1")), AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config("18446744073709551617", "none", CHUNKER, "1")),
		     AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config("1", "none", CHUNKER, "4294967297")), AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config("1", "none", CHUNKER, "-4294967295")), AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config("1", "none",
		"18446744073709682688 524288 2097152", "1")), AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config("1", "none",
		"131072 524288 18446744073711648768", "1")), AMBER_ECORRUPT);
}

Test(config, signs_spaces_and_trailing_garbage_are_corrupt)
{
	new_archive();
	cr_assert_eq(open_with_config(config("+1", "none", CHUNKER, "1")), AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config("1x", "none", CHUNKER, "1")), AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config(" 1", "none", CHUNKER, "1")), AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config("1", "none", CHUNKER, "1 ")), AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config("1", "nonesuch", CHUNKER, "1")), AMBER_ECORRUPT);
	cr_assert_eq(open_with_config(config("1", "none", CHUNKER " 5", "1")), AMBER_ECORRUPT);
}

Test(config, a_key_given_twice_is_corrupt)
{
	char text[1200];

	new_archive();
	snprintf(text, sizeof(text), "%sencryption none\n", config("1", "none", CHUNKER, "1"));
	cr_assert_eq(open_with_config(text), AMBER_ECORRUPT);
	cr_assert_neq(strstr(amber_error_last(), "twice"), NULL, "%s", amber_error_last());
	snprintf(text, sizeof(text), "%sfuture 1\nfuture 2\n", config("1", "none", CHUNKER, "1"));
	cr_assert_eq(open_with_config(text), AMBER_ECORRUPT);
	snprintf(text, sizeof(text), "%sfuture 1\n", config("1", "none", CHUNKER, "1"));
	OK(open_with_config(text));
}
