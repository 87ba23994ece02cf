/*
 * The amberfs command line: bad input (a wrong key, a missing archive, a
 * malformed spec) gets one clear error line that names the thing and
 * loses nothing; the exit codes of amberfs(1); snapshot spec resolution;
 * log/ls/cat output; and secrets kept out of argv, logs and output (a
 * passphrase is read only from a file, a descriptor or the terminal).
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

TestSuite(cli, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

/* A small source: a few files, special modes and one multi-chunk file. */
static char *small_src(void)
{
	char *src = pjoin(IT.tmp, "src");
	char *p;
	mkdir_p(src, 0755);
	p = pjoin(src, "a.txt");
	write_str(p, "alpha\n");
	free(p);
	p = pjoin(src, "dir");
	mkdir_p(p, 0755);
	free(p);
	p = pjoin(src, "dir/b.txt");
	write_str(p, "bravo\n");
	free(p);
	p = pjoin(src, "modes");
	mkdir_p(p, 0755);
	free(p);
	p = pjoin(src, "modes/setuid");
	write_str(p, "#!/bin/sh\n");
	cr_assert(chmod(p, 04755) == 0);
	free(p);
	p = pjoin(src, "modes/setgid");
	write_str(p, "#!/bin/sh\n");
	cr_assert(chmod(p, 02755) == 0);
	free(p);
	p = pjoin(src, "modes/sticky");
	mkdir_p(p, 0755);
	cr_assert(chmod(p, 01777) == 0);
	free(p);
	p = pjoin(src, "big");
	write_random_file(p, (5u << 20) + 12345, 99, 0);
	free(p);
	return src;
}

static char *new_archive(const char *name, int plain)
{
	char *a = pjoin(IT.tmp, name);
	amber_init_archive(a, plain);
	return a;
}

/* ------------------------------------------------------------------ */

Test(cli, missing_archive_is_a_one_line_error_and_creates_nothing)
{
	char *src = small_src();
	char *nope = pjoin(IT.tmp, "no-such-archive");
	char *dest = pjoin(IT.tmp, "dest");
	const char *cmds[][6] = {
		{ "log", nope, NULL },
		{ "ls", nope, "latest", NULL },
		{ "cat", nope, "latest:a.txt", NULL },
		{ "snapshot", nope, src, NULL },
		{ "restore", nope, "latest", dest, NULL },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		run_result r;
		amber_a(&r, NULL, cmds[i]);
		char *what = xasprintf("amberfs %s on a missing archive", cmds[i][0]);
		assert_exit(&r, 1, what);
		assert_one_error_line(&r, what);
		cr_assert(strstr(r.err, "no-such-archive"), "%s: the error should name the path: %s",
			  what, r.err);
		cr_assert(access(nope, F_OK) != 0, "%s created %s", what, nope);
		cr_assert(access(dest, F_OK) != 0, "%s created the restore destination", what);
		free(what);
		run_result_dispose(&r);
	}
}

Test(cli, directory_that_is_not_an_archive_is_refused_untouched)
{
	char *src = small_src();
	char *empty = pjoin(IT.tmp, "empty");
	char *withfile = pjoin(IT.tmp, "withfile");
	char *bare = pjoin(IT.tmp, "bare.git");
	mkdir_p(empty, 0755);
	mkdir_p(withfile, 0755);
	char *f = pjoin(withfile, "notes.txt");
	write_str(f, "not an archive\n");
	run_result r;
	run_cmd(&r, NULL, "git", "init", "-q", "--bare", bare, NULL);
	assert_ok(&r, "git init --bare");
	run_result_dispose(&r);
	const char *dirs[] = { empty, withfile, bare };
	for (size_t i = 0; i < 3; i++) {
		char *before = dir_fingerprint(dirs[i]);
		const char *cmds[][4] = {
			{ "log", dirs[i], NULL },
			{ "ls", dirs[i], "latest", NULL },
			{ "snapshot", dirs[i], src, NULL },
		};
		for (size_t j = 0; j < 3; j++) {
			amber_a(&r, NULL, cmds[j]);
			char *what = xasprintf("amberfs %s on non-archive %s", cmds[j][0], dirs[i]);
			assert_exit(&r, 1, what);
			assert_one_error_line(&r, what);
			char *after = dir_fingerprint(dirs[i]);
			cr_assert_str_eq(before, after, "%s changed the directory", what);
			free(after);
			free(what);
			run_result_dispose(&r);
		}
		free(before);
	}
}

Test(cli, wrong_passphrase_fails_and_changes_nothing)
{
	char *src = small_src();
	char *arch = new_archive("archive", 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *wrong = pjoin(IT.tmp, "wrong-pass");
	write_passfile(wrong, "not the passphrase at all");
	char *env_s = xasprintf("AMBERFS_PASSPHRASE_FILE=%s", wrong);
	const char *env[] = { env_s, NULL };
	run_opts o = { .env = env };
	char *dest = pjoin(IT.tmp, "dest");
	char *catspec = xasprintf("%s:a.txt", id);
	char *before = dir_fingerprint(arch);
	const char *cmds[][6] = {
		{ "snapshot", arch, src, NULL },
		{ "log", arch, NULL },
		{ "ls", arch, "latest", NULL },
		{ "cat", arch, catspec, NULL },
		{ "restore", arch, "latest", dest, NULL },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		run_result r;
		amber_a(&r, &o, cmds[i]);
		char *what = xasprintf("amberfs %s with a wrong passphrase", cmds[i][0]);
		assert_exit(&r, 1, what);
		assert_one_error_line(&r, what);
		cr_assert(contains_nocase(r.err, "passphrase"),
			  "%s: the error should mention the passphrase: %s", what, r.err);
		char *after = dir_fingerprint(arch);
		cr_assert_str_eq(before, after, "%s changed the archive:\nbefore:\n%s\nafter:\n%s",
				 what, before, after);
		cr_assert(access(dest, F_OK) != 0, "%s created the restore destination", what);
		free(after);
		free(what);
		run_result_dispose(&r);
	}
	/* The right passphrase still works and the archive still has one snapshot. */
	run_result r;
	amber(&r, "cat", arch, catspec, NULL);
	assert_ok(&r, "cat with the right passphrase");
	cr_assert_str_eq(r.out, "alpha\n");
	run_result_dispose(&r);
	amber(&r, "log", arch, "--json", NULL);
	assert_ok(&r, "log");
	char **objs;
	cr_assert_eq(json_lines(r.out, &objs), 1, "a failed snapshot added a snapshot: %s", r.out);
	run_result_dispose(&r);
}

/*
 * Root reads anything, so the unreadable file is made by running amberfs as
 * an unprivileged user (setpriv) on a source it owns, with one file 0000.
 */
Test(cli, unreadable_source_file_exits_3_and_snapshot_keeps_the_rest)
{
	cr_assert(chmod(IT.tmp, 0755) == 0);
	char *nb = pjoin(IT.tmp, "nobody");
	char *src = pjoin(nb, "src");
	char *sub = pjoin(src, "sub");
	mkdir_p(sub, 0755);
	char *ok1 = pjoin(src, "ok1"), *ok2 = pjoin(sub, "ok2"), *bad = pjoin(src, "unreadable-file");
	write_str(ok1, "first readable file\n");
	write_str(ok2, "second readable file\n");
	write_str(bad, "you cannot read me\n");
	char *pass = pjoin(nb, "pass"), *cache = pjoin(nb, "cache"), *home = pjoin(nb, "home");
	write_passfile(pass, IT_PASSPHRASE);
	mkdir_p(cache, 0700);
	mkdir_p(home, 0700);
	run_result r;
	run_cmd(&r, NULL, "chown", "-R", "65534:65534", nb, NULL);
	assert_ok(&r, "chown -R");
	run_result_dispose(&r);
	cr_assert(chmod(bad, 0000) == 0);

	char *e1 = xasprintf("AMBERFS_PASSPHRASE_FILE=%s", pass);
	char *e2 = xasprintf("AMBERFS_CACHE_DIR=%s", cache);
	char *e3 = xasprintf("HOME=%s", home);
	const char *env[] = { e1, e2, e3, NULL };
	const char *prefix[] = { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
				 NULL };
	run_opts o = { .env = env, .prefix = prefix };
	char *arch = pjoin(nb, "archive");
	amber_o(&r, &o, "init", arch, NULL);
	assert_ok(&r, "init as an unprivileged user");
	run_result_dispose(&r);

	amber_o(&r, &o, "snapshot", arch, src, NULL);
	assert_exit(&r, 3, "snapshot with an unreadable file");
	cr_assert(strstr(r.err, "unreadable-file"), "the unreadable file should be named: %s", r.err);
	for (const char *line = r.err; *line;) {
		cr_assert(strncmp(line, "amberfs: ", 9) == 0,
			  "every stderr line should start 'amberfs: ': %s", r.err);
		const char *nl = strchr(line, '\n');
		line = nl ? nl + 1 : line + strlen(line);
	}
	size_t idlen = strspn(r.out, "0123456789abcdef");
	cr_assert_eq(idlen, 40, "snapshot should still print its commit id: '%s'", r.out);
	char id[41];
	memcpy(id, r.out, 40);
	id[40] = '\0';
	run_result_dispose(&r);

	amber_o(&r, &o, "log", arch, "--json", NULL);
	assert_ok(&r, "log");
	char **objs;
	cr_assert_eq(json_lines(r.out, &objs), 1, "one snapshot expected: %s", r.out);
	cr_assert(strstr(objs[0], id), "log should list %s: %s", id, objs[0]);
	cr_assert_eq(json_get_ll(objs[0], "errors"), 1, "errors should count the file: %s",
		     objs[0]);
	run_result_dispose(&r);

	char *dest = pjoin(nb, "restored");
	amber_o(&r, &o, "restore", arch, id, dest, NULL);
	assert_ok(&r, "restore of the snapshot with an error");
	run_result_dispose(&r);
	char *d1 = pjoin(dest, "ok1"), *d2 = pjoin(dest, "sub/ok2"), *d3 = pjoin(dest, "unreadable-file");
	cr_assert_str_eq(read_file(d1, NULL), "first readable file\n");
	cr_assert_str_eq(read_file(d2, NULL), "second readable file\n");
	cr_assert(access(d3, F_OK) != 0, "the unreadable file must not be restored (as empty or otherwise)");
}

Test(cli, restore_into_non_empty_dest_is_refused_and_dest_unchanged)
{
	char *src = small_src();
	char *arch = new_archive("archive", 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *dest = pjoin(IT.tmp, "dest");
	mkdir_p(dest, 0755);
	char *keep = pjoin(dest, "a.txt");
	write_str(keep, "precious, do not overwrite\n");
	char *before = dir_fingerprint(dest);
	run_result r;
	amber(&r, "restore", arch, "latest", dest, NULL);
	assert_exit(&r, 1, "restore into a non-empty directory");
	assert_one_error_line(&r, "restore into a non-empty directory");
	char *after = dir_fingerprint(dest);
	cr_assert_str_eq(before, after, "restore changed a non-empty destination");
	cr_assert_str_eq(read_file(keep, NULL), "precious, do not overwrite\n");
	run_result_dispose(&r);

	char *file = pjoin(IT.tmp, "a-file");
	write_str(file, "a file, not a directory\n");
	amber(&r, "restore", arch, "latest", file, NULL);
	assert_exit(&r, 1, "restore onto an existing file");
	assert_one_error_line(&r, "restore onto an existing file");
	cr_assert_str_eq(read_file(file, NULL), "a file, not a directory\n");
	run_result_dispose(&r);

	char *emptyd = pjoin(IT.tmp, "empty-dest");
	mkdir_p(emptyd, 0755);
	amber(&r, "restore", arch, "latest", emptyd, NULL);
	assert_ok(&r, "restore into an existing empty directory");
	assert_trees_equal(src, emptyd, TD_SKIP_ROOT_META, "restore into an empty directory");
	run_result_dispose(&r);
}

Test(cli, usage_errors_exit_2_with_one_line)
{
	char *src = small_src();
	char *arch = pjoin(IT.tmp, "usage-archive");
	char *dest = pjoin(IT.tmp, "dest");
	const char *cmds[][8] = {
		{ NULL },
		{ "frobnicate", NULL },
		{ "init", NULL },
		{ "snapshot", arch, NULL },
		{ "snapshot", arch, src, "--bogus-option", NULL },
		{ "snapshot", arch, src, "--stream", NULL },
		{ "restore", arch, "latest", NULL },
		{ "cat", arch, NULL },
		{ "ls", NULL },
		{ "log", arch, "--passphrase", "hunter2", NULL },
		{ "restore", arch, "latest", dest, "extra-operand", NULL },
	};
	char *fails = strdup("");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		run_result r;
		amber_a(&r, NULL, cmds[i]);
		char *what = xasprintf("usage error #%zu (amberfs %s ...)", i,
				       cmds[i][0] ? cmds[i][0] : "");
		const char *nl = strchr(r.err, '\n');
		const char *why = NULL;
		if (r.status != 2)
			why = "exit code is not 2";
		else if (strncmp(r.err, "amberfs: ", 9) != 0 || r.err_len < 11)
			why = "stderr does not start with 'amberfs: '";
		else if (!nl || nl[1] != '\0')
			why = "stderr is not exactly one line";
		else if (r.out_len != 0)
			why = "something was printed on stdout";
		if (why) {
			char *f = xasprintf("%s  %s: %s (exit %d); stderr: %s\n", fails, what, why,
					    r.status, r.err);
			free(fails);
			fails = f;
		}
		cr_assert(access(arch, F_OK) != 0, "%s created the archive", what);
		cr_assert(access(dest, F_OK) != 0, "%s created the destination", what);
		free(what);
		run_result_dispose(&r);
	}
	cr_assert(fails[0] == '\0', "usage errors must exit 2 with one line 'amberfs: ...':\n%s",
		  fails);
}

Test(cli, init_refuses_an_existing_archive_or_non_empty_dir)
{
	char *src = small_src();
	char *arch = new_archive("archive", 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *before = dir_fingerprint(arch);
	run_result r;
	const char *variants[][4] = {
		{ "init", arch, NULL },
		{ "init", arch, "--plain", NULL },
	};
	for (int i = 0; i < 2; i++) {
		amber_a(&r, NULL, variants[i]);
		assert_exit(&r, 1, "init on an existing archive");
		assert_one_error_line(&r, "init on an existing archive");
		char *after = dir_fingerprint(arch);
		cr_assert_str_eq(before, after, "init on an existing archive changed it");
		free(after);
		run_result_dispose(&r);
	}
	char *spec = xasprintf("%s:a.txt", id);
	amber(&r, "cat", arch, spec, NULL);
	assert_ok(&r, "the archive still opens with its passphrase");
	cr_assert_str_eq(r.out, "alpha\n");
	run_result_dispose(&r);

	char *busy = pjoin(IT.tmp, "busy");
	mkdir_p(busy, 0755);
	char *f = pjoin(busy, "file");
	write_str(f, "data\n");
	char *bb = dir_fingerprint(busy);
	amber(&r, "init", busy, NULL);
	assert_exit(&r, 1, "init in a non-empty directory");
	assert_one_error_line(&r, "init in a non-empty directory");
	char *ba = dir_fingerprint(busy);
	cr_assert_str_eq(bb, ba, "init changed a non-empty directory");
	run_result_dispose(&r);
}

/* ------------------------------------------------------------------ */
/* Snapshot specs and log                                              */

typedef struct snaps {
	char *arch, *src, *gen;
	char id[3][41];
	long long t[3];
} snaps;

/* Three snapshots whose file "gen" says 1, 2, 3; the second tagged "t2". */
static void three_snapshots(snaps *s)
{
	s->src = pjoin(IT.tmp, "src");
	mkdir_p(s->src, 0755);
	s->gen = pjoin(s->src, "gen");
	s->arch = new_archive("archive", 0);
	for (int i = 0; i < 3; i++) {
		char body[16];
		snprintf(body, sizeof(body), "%d\n", i + 1);
		write_str(s->gen, body);
		const char *tag[] = { "--tag", "t2", NULL };
		amber_snapshot_ok(s->id[i], s->arch, s->src, i == 1 ? tag : NULL);
		sleep_s(0.02);
	}
	run_result r;
	amber(&r, "log", s->arch, "--json", NULL);
	assert_ok(&r, "log --json");
	char **objs;
	cr_assert_eq(json_lines(r.out, &objs), 3, "three snapshots expected: %s", r.out);
	for (int i = 0; i < 3; i++) {
		char *id = json_get(objs[2 - i], "id", NULL);
		cr_assert(id && !strcmp(id, s->id[i]), "log entry %d should be %s: %s", 2 - i,
			  s->id[i], objs[2 - i]);
		s->t[i] = json_get_ll(objs[2 - i], "time_ns");
		free(id);
	}
	run_result_dispose(&r);
}

/* Resolve spec by `amberfs cat ARCHIVE SPEC:gen`; returns the generation or -1. */
static int gen_of(const snaps *s, const char *spec, run_result *r, const char *stream)
{
	char *arg = xasprintf("%s:gen", spec);
	if (stream)
		amber(r, "cat", s->arch, arg, "--stream", stream, NULL);
	else
		amber(r, "cat", s->arch, arg, NULL);
	free(arg);
	return r->status == 0 ? (int)strtol(r->out, NULL, 10) : -1;
}

static void expect_gen(const snaps *s, const char *spec, int want)
{
	run_result r;
	int got = gen_of(s, spec, &r, NULL);
	cr_assert_eq(got, want, "spec '%s' should resolve to snapshot %d, got %d (exit %d): %s",
		     spec, want, got, r.status, r.err);
	run_result_dispose(&r);
}

/* ISO 8601 with `digits` fraction digits and a UTC offset in minutes. */
static char *iso(long long ns, int digits, int offset_min)
{
	long long sec = ns / 1000000000LL, frac = ns % 1000000000LL;
	if (frac < 0) {
		frac += 1000000000LL;
		sec--;
	}
	time_t t = (time_t)(sec + offset_min * 60);
	struct tm tm;
	gmtime_r(&t, &tm);
	char base[64], fr[16] = "", off[16] = "Z";
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	if (digits > 0) {
		char all[24];
		snprintf(all, sizeof(all), "%09lld", frac);
		all[digits] = '\0';
		fr[0] = '.';
		memcpy(fr + 1, all, (size_t)digits + 1);
	}
	if (offset_min)
		snprintf(off, sizeof(off), "%c%02d:%02d", offset_min < 0 ? '-' : '+',
			 abs(offset_min) / 60, abs(offset_min) % 60);
	return xasprintf("@%s%s%s", base, fr, off);
}

static char *epoch(long long ns)
{
	return xasprintf("@%lld.%09lld", ns / 1000000000LL, ns % 1000000000LL);
}

Test(cli, snapshot_specs_resolve)
{
	snaps s;
	three_snapshots(&s);
	cr_assert(s.t[0] < s.t[1] && s.t[1] < s.t[2], "times should increase: %lld %lld %lld",
		  s.t[0], s.t[1], s.t[2]);
	expect_gen(&s, "latest", 3);
	expect_gen(&s, s.id[0], 1);
	char prefix[8];
	memcpy(prefix, s.id[0], 7);
	prefix[7] = '\0';
	expect_gen(&s, prefix, 1);
	expect_gen(&s, "t2", 2);
	expect_gen(&s, iso(s.t[1], 9, 0), 2);                               /* exact, Z */
	expect_gen(&s, iso(s.t[1], 9, 330), 2);                             /* exact, +05:30 */
	expect_gen(&s, iso(s.t[1] + (s.t[2] - s.t[1]) / 2, 9, -420), 2);    /* between, -07:00 */
	expect_gen(&s, iso(s.t[0] + (s.t[1] - s.t[0]) / 2, 3, 0), 1);       /* ms precision */
	expect_gen(&s, iso((s.t[2] / 1000000000LL + 1) * 1000000000LL, 0, 0), 3); /* s precision */
	expect_gen(&s, iso(s.t[1] - 1, 9, 0), 1);                           /* 1 ns before t2 */
	expect_gen(&s, epoch(s.t[0]), 1);                                   /* @EPOCH.frac exact */
	expect_gen(&s, epoch(s.t[1] + (s.t[2] - s.t[1]) / 2), 2);
	char *ep = xasprintf("@%lld", s.t[2] / 1000000000LL + 1);           /* @EPOCH */
	expect_gen(&s, ep, 3);
	expect_gen(&s, "@2100-01-01T00:00:00Z", 3);                        /* far future */
	expect_gen(&s, "@4102444800", 3);

	const char *bad[] = { iso(s.t[0] - 1000000000LL, 9, 0), epoch(s.t[0] - 1), "nosuchtag",
			      "@not-a-time", "0000000" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		run_result r;
		int g = gen_of(&s, bad[i], &r, NULL);
		char *what = xasprintf("spec '%s'", bad[i]);
		cr_assert_eq(g, -1, "%s should not resolve, got snapshot %d", what, g);
		if (!strcmp(bad[i], "@not-a-time") && r.status == 2)
			r.status = 1; /* a malformed spec may count as a usage error */
		assert_exit(&r, 1, what);
		assert_one_error_line(&r, what);
		free(what);
		run_result_dispose(&r);
	}

	/* Streams: "latest" follows --stream. */
	write_str(s.gen, "42\n");
	const char *other[] = { "--stream", "other", NULL };
	char oid[41];
	amber_snapshot_ok(oid, s.arch, s.src, other);
	run_result r;
	int g = gen_of(&s, "latest", &r, "other");
	cr_assert_eq(g, 42, "latest of stream other: got %d: %s", g, r.err);
	run_result_dispose(&r);
	expect_gen(&s, "latest", 3);
	g = gen_of(&s, "@2100-01-01T00:00:00Z", &r, "other");
	cr_assert_eq(g, 42, "@TIME in stream other: got %d: %s", g, r.err);
	run_result_dispose(&r);
}

Test(cli, log_lists_snapshots_newest_first)
{
	snaps s;
	three_snapshots(&s);
	cr_assert(s.t[0] < s.t[1] && s.t[1] < s.t[2],
		  "snapshot times should strictly increase: %lld %lld %lld", s.t[0], s.t[1], s.t[2]);
	run_result r;
	amber(&r, "log", s.arch, NULL);
	assert_ok(&r, "log");
	const char *p2 = strstr(r.out, s.id[2]);
	const char *p1 = strstr(r.out, s.id[1]);
	const char *p0 = strstr(r.out, s.id[0]);
	if (!p2 || !p1 || !p0) {
		char a[8] = "", b[8] = "", c[8] = "";
		memcpy(a, s.id[2], 7);
		memcpy(b, s.id[1], 7);
		memcpy(c, s.id[0], 7);
		p2 = strstr(r.out, a);
		p1 = strstr(r.out, b);
		p0 = strstr(r.out, c);
	}
	cr_assert(p2 && p1 && p0 && p2 < p1 && p1 < p0,
		  "log should show the ids newest first:\n%s", r.out);
	cr_assert(strstr(r.out, "t2"), "log should show the tag t2:\n%s", r.out);
	run_result_dispose(&r);
}

Test(cli, log_json_parses_with_the_documented_fields)
{
	snaps s;
	three_snapshots(&s);
	run_result r;
	amber(&r, "log", s.arch, "--json", NULL);
	assert_ok(&r, "log --json");
	cr_assert(json_valid(r.out), "log --json is not valid JSON:\n%s", r.out);
	const char *first = r.out + strspn(r.out, " \n");
	cr_assert_eq(*first, '[', "log --json should be a JSON array:\n%s", r.out);
	char **objs;
	cr_assert_eq(json_lines(r.out, &objs), 3, "one object per line expected:\n%s", r.out);
	static const char *fields[] = { "id", "time", "time_ns", "stream", "tags", "parent",
					"files", "bytes", "bytes_new", "objects_new", "errors" };
	for (int i = 0; i < 3; i++) {
		char *obj = objs[i];
		for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
			char *v = json_get(obj, fields[f], NULL);
			cr_assert(v, "log --json object lacks \"%s\": %s", fields[f], obj);
			free(v);
		}
		int isstr = 0;
		char *stream = json_get(obj, "stream", &isstr);
		cr_assert(isstr && !strcmp(stream, "main"), "stream should be \"main\": %s", obj);
		char *parent = json_get(obj, "parent", &isstr);
		if (i < 2)
			cr_assert(isstr && !strcmp(parent, s.id[1 - i]), "parent of entry %d: %s", i, obj);
		else
			cr_assert(!strcmp(parent, "") || !strcmp(parent, "null"),
				  "the first snapshot has no parent: %s", obj);
		char *time = json_get(obj, "time", &isstr);
		cr_assert(isstr && strlen(time) >= 20 && time[4] == '-' && time[10] == 'T',
			  "\"time\" should be an ISO 8601 string: %s", obj);
		cr_assert_eq(json_get_ll(obj, "files"), 1, "files: %s", obj);
		cr_assert_eq(json_get_ll(obj, "bytes"), 2, "bytes (one 2-byte file): %s", obj);
		cr_assert_eq(json_get_ll(obj, "errors"), 0, "errors: %s", obj);
		char *tags = json_get(obj, "tags", &isstr);
		cr_assert(!isstr && tags[0] == '[', "tags should be an array: %s", obj);
		if (i == 1)
			cr_assert(strstr(tags, "\"t2\""), "snapshot 2 should carry tag t2: %s", obj);
		else
			cr_assert(!strstr(tags, "t2"), "only snapshot 2 has tag t2: %s", obj);
	}
	cr_assert(json_get_ll(objs[0], "time_ns") > json_get_ll(objs[1], "time_ns") &&
			  json_get_ll(objs[1], "time_ns") > json_get_ll(objs[2], "time_ns"),
		  "newest first with strictly increasing times:\n%s", r.out);
	run_result_dispose(&r);
}

Test(cli, log_of_an_archive_without_snapshots_is_empty_and_succeeds)
{
	char *arch = new_archive("empty", 1);
	run_result r;

	amber(&r, "log", arch, NULL);
	assert_ok(&r, "log of an empty archive");
	cr_assert_eq(r.out_len, 0, "log of an empty archive should print nothing:\n%s", r.out);
	run_result_dispose(&r);
	amber(&r, "log", arch, "--json", NULL);
	assert_ok(&r, "log --json of an empty archive");
	cr_assert_str_eq(r.out, "[]\n", "log --json of an empty archive should be []");
	run_result_dispose(&r);
	amber(&r, "log", arch, "--stream", "other", "--json", NULL);
	assert_ok(&r, "log --json of a stream without snapshots");
	cr_assert_str_eq(r.out, "[]\n", "a stream without snapshots should list as []");
	run_result_dispose(&r);
	amber(&r, "log", arch, "--stream", "../x", NULL);
	cr_assert_neq(r.status, 0, "log of a stream with an invalid name should fail");
	run_result_dispose(&r);
	free(arch);
}

Test(cli, ls_long_shows_setuid_setgid_and_sticky_mode_strings)
{
	char *src = small_src();
	char *arch = new_archive("archive", 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	run_result r;
	amber(&r, "ls", arch, "latest:modes", "-l", NULL);
	assert_ok(&r, "ls -l");
	cr_assert(strstr(r.out, "-rwsr-xr-x"), "ls -l should show -rwsr-xr-x for setuid:\n%s", r.out);
	cr_assert(strstr(r.out, "-rwxr-sr-x"), "ls -l should show -rwxr-sr-x for setgid:\n%s", r.out);
	cr_assert(strstr(r.out, "drwxrwxrwt"), "ls -l should show drwxrwxrwt for sticky:\n%s", r.out);
	cr_assert(strstr(r.out, "setuid") && strstr(r.out, "sticky"), "names missing:\n%s", r.out);
	run_result_dispose(&r);

	amber(&r, "ls", arch, "latest", NULL);
	assert_ok(&r, "ls");
	cr_assert(strstr(r.out, "a.txt") && strstr(r.out, "dir") && strstr(r.out, "big"),
		  "ls of the root should list its names:\n%s", r.out);
	run_result_dispose(&r);

	amber(&r, "ls", arch, "latest", "--json", NULL);
	assert_ok(&r, "ls --json");
	cr_assert(json_valid(r.out), "ls --json is not valid JSON:\n%s", r.out);
	cr_assert(strstr(r.out, "\"a.txt\""), "ls --json should name a.txt:\n%s", r.out);
	run_result_dispose(&r);

	amber(&r, "ls", arch, "latest:no/such/path", NULL);
	assert_exit(&r, 1, "ls of a missing path");
	assert_one_error_line(&r, "ls of a missing path");
	run_result_dispose(&r);
}

Test(cli, cat_of_a_multichunk_file_equals_the_source)
{
	char *src = small_src();
	char *arch = new_archive("archive", 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *out = pjoin(IT.tmp, "cat.out");
	run_opts o = { .stdout_path = out };
	run_result r;
	amber_o(&r, &o, "cat", arch, "latest:big", NULL);
	assert_ok(&r, "cat of a multi-chunk file");
	run_result_dispose(&r);
	char *orig = pjoin(src, "big");
	run_cmd(&r, NULL, "cmp", orig, out, NULL);
	cr_assert_eq(r.status, 0, "cat output differs from the source: %s%s", r.out, r.err);
	run_result_dispose(&r);

	amber(&r, "cat", arch, "latest:dir", NULL);
	assert_exit(&r, 1, "cat of a directory");
	assert_one_error_line(&r, "cat of a directory");
	run_result_dispose(&r);
}

/* Reads /proc/PID/cmdline and environ until the process exits. */
static int watch_proc(pid_t pid, const char *secret, int *saw_cmd)
{
	char *cmdf = xasprintf("/proc/%d/cmdline", (int)pid);
	char *envf = xasprintf("/proc/%d/environ", (int)pid);
	int status = -1;
	for (;;) {
		char buf[65536];
		const char *files[2] = { cmdf, envf };
		for (int f = 0; f < 2; f++) {
			int fd = open(files[f], O_RDONLY);
			if (fd < 0)
				continue;
			ssize_t n = read(fd, buf, sizeof(buf));
			close(fd);
			if (n <= 0)
				continue;
			cr_assert(memmem(buf, (size_t)n, secret, strlen(secret)) == NULL,
				  "the passphrase is visible in %s", files[f]);
			if (f == 0 && memmem(buf, (size_t)n, "snapshot", 8))
				*saw_cmd = 1;
		}
		int st;
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid) {
			status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			break;
		}
		sleep_s(0.002);
	}
	free(cmdf);
	free(envf);
	return status;
}

Test(cli, passphrase_never_appears_in_argv_or_any_output)
{
	char *src = small_src();
	char *big = pjoin(src, "big2");
	write_random_file(big, 96u << 20, 5, 0);
	char *arch = pjoin(IT.tmp, "archive");
	run_result r;
	/* Every command's output is checked. */
	char *dest = pjoin(IT.tmp, "dest");
	const char *cmds[][6] = {
		{ "init", arch, NULL },
		{ "snapshot", arch, src, "--message", "hello", NULL },
		{ "log", arch, NULL },
		{ "log", arch, "--json", NULL },
		{ "ls", arch, "latest", "-l", NULL },
		{ "ls", arch, "latest", "--json", NULL },
		{ "cat", arch, "latest:a.txt", NULL },
		{ "restore", arch, "latest", dest, NULL },
		{ "cat", arch, "latest:nonexistent", NULL },
		{ "init", arch, NULL },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		amber_a(&r, NULL, cmds[i]);
		char *what = xasprintf("amberfs %s (#%zu)", cmds[i][0], i);
		if (i < 8)
			assert_ok(&r, what);
		assert_not_contains(r.out, r.out_len, IT_PASSPHRASE, what);
		assert_not_contains(r.err, r.err_len, IT_PASSPHRASE, what);
		assert_not_contains(r.out, r.out_len, "Zq8xT3", what);
		assert_not_contains(r.err, r.err_len, "Zq8xT3", what);
		free(what);
		run_result_dispose(&r);
	}
	/* A wrong passphrase is not echoed either. */
	char *wrong = pjoin(IT.tmp, "wrong");
	write_passfile(wrong, "WrongPass-8d1e77");
	char *ew = xasprintf("AMBERFS_PASSPHRASE_FILE=%s", wrong);
	const char *env[] = { ew, NULL };
	run_opts o = { .env = env };
	amber_o(&r, &o, "log", arch, NULL);
	assert_exit(&r, 1, "log with a wrong passphrase");
	assert_not_contains(r.err, r.err_len, "WrongPass-8d1e77", "log with a wrong passphrase");
	run_result_dispose(&r);

	/* While a snapshot runs, its argv and environment do not hold the passphrase. */
	write_random_file(big, 96u << 20, 6, 0);
	char *outp = pjoin(IT.tmp, "snap.out"), *errp = pjoin(IT.tmp, "snap.err");
	run_opts bo = { .stdout_path = outp, .stderr_path = errp };
	const char *args[] = { "snapshot", arch, src, "--no-cache", NULL };
	pid_t pid = amber_spawn(&bo, args);
	int saw = 0;
	int st = watch_proc(pid, IT_PASSPHRASE, &saw);
	cr_assert_eq(st, 0, "background snapshot failed: %s", read_file(errp, NULL));
	cr_assert(saw, "never saw the running snapshot's command line (it finished too fast?)");

	/* Nor is it stored anywhere in the archive. */
	cr_assert(!tree_contains_bytes(arch, IT_PASSPHRASE, strlen(IT_PASSPHRASE)),
		  "the passphrase is stored in clear in the archive");
	cr_assert(!tree_contains_bytes(IT.cache, IT_PASSPHRASE, strlen(IT_PASSPHRASE)),
		  "the passphrase is stored in clear in the cache directory");
}

/*
 * An archive holds two descriptors per pack while it is open.  One of a few
 * hundred packs (an archive from before consolidation, or one that was never
 * repacked) must still open under the usual soft limit: amberfs raises its
 * soft limit to the hard one.
 */
Test(cli, an_archive_of_more_packs_than_the_soft_descriptor_limit_allows_opens)
{
	char *src = small_src(), *a = new_archive("packs", 1), id[41];
	struct rlimit old, low;
	run_result r;

	amber_snapshot_ok(id, a, src, NULL);
	/* 150 more packs of one object each: one hash-object, one pack-objects each */
	char *sh = xasprintf("cd %s && mkdir x && for i in $(seq 150); do echo $i > x/$i; done && "
			     "ls -d x/* | git --git-dir=. hash-object -w --stdin-paths > x.ids && "
			     "while read o; do echo $o | git --git-dir=. pack-objects -q objects/pack/pack "
			     ">/dev/null || exit 1; done < x.ids && git --git-dir=. prune-packed && "
			     "rm -r x x.ids", a);
	cr_assert_eq(run_cmd(&r, NULL, "/bin/sh", "-c", sh, NULL), 0, "%s", r.err);
	run_result_dispose(&r);
	cr_assert(getrlimit(RLIMIT_NOFILE, &old) == 0);
	cr_assert(old.rlim_max == RLIM_INFINITY || old.rlim_max >= 2048,
		  "the hard descriptor limit (%llu) is too low for this test",
		  (unsigned long long)old.rlim_max);
	low = old;
	low.rlim_cur = 128; /* 151 packs need 302 descriptors */
	cr_assert(setrlimit(RLIMIT_NOFILE, &low) == 0);
	amber(&r, "cat", a, "latest:a.txt", NULL);
	cr_assert(setrlimit(RLIMIT_NOFILE, &old) == 0);
	cr_assert_eq(r.status, 0, "cat with 151 packs and a soft limit of 128: %s", r.err);
	cr_assert_str_eq(r.out, "alpha\n");
	run_result_dispose(&r);
	free(sh);
	free(a);
	free(src);
}
