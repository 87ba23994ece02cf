/*
 * What a new user reads: error messages that name the thing and say what
 * to do, output words a reader understands without the man page, one unit
 * system and correct plurals, progress that moves, and scripts that say
 * what they are doing (issue: a user's first hour).  Terminal behaviour is
 * checked on a real pseudo-terminal through script(1).
 */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(messages, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

/* A plain archive with one snapshot of a small tree; returns the archive. */
static char *small_archive(char id[41], int plain)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	char *p = pjoin(src, "a.txt");
	write_str(p, "alpha\n");
	free(p);
	p = pjoin(src, "keys");
	mkdir_p(p, 0755);
	free(p);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, plain);
	amber_snapshot_ok(id, arch, src, NULL);
	free(src);
	return arch;
}

/* Run `amberfs --kdf-profile=test ARGS` on a pseudo-terminal; @return all it printed. */
static char *on_tty(const char *args)
{
	char *cmd = xasprintf("'%s' --kdf-profile=test %s", IT.bin, args);
	char *pf = xasprintf("AMBERFS_PASSPHRASE_FILE=%s", IT.passfile);
	char *cache = xasprintf("AMBERFS_CACHE_DIR=%s", IT.cache);
	const char *env[] = { pf, cache, "COLUMNS=200", NULL };
	run_opts o = { .env = env, .timeout = 120 };
	run_result r;
	run_cmd(&r, &o, "script", "-qfec", cmd, "/dev/null", NULL);
	cr_assert_eq(r.status, 0, "on a terminal: amberfs %s: exit %d: %s%s", args, r.status,
		     r.out, r.err);
	char *out = strdup(r.out);
	run_result_dispose(&r);
	free(cache);
	free(pf);
	free(cmd);
	return out;
}

/* ---- point 9: errors that name the thing and say what to do ---------- */

Test(messages, short_id_prefix_says_ids_need_seven_hex_digits)
{
	char id[41];
	char *arch = small_archive(id, 1);
	char six[7];
	memcpy(six, id, 6);
	six[6] = '\0';
	run_result r;
	amber(&r, "ls", arch, six, NULL);
	assert_exit(&r, 1, "ls with a 6-hex id prefix");
	assert_one_error_line(&r, "a 6-hex id prefix");
	cr_assert(strstr(r.err, six) && strstr(r.err, "at least 7"),
		  "the error should say that ids need at least 7 hex digits: %s", r.err);
	run_result_dispose(&r);
	free(arch);
}

Test(messages, cat_of_a_directory_names_the_path_and_suggests_ls)
{
	char id[41];
	char *arch = small_archive(id, 1);
	run_result r;
	amber(&r, "cat", arch, "latest", NULL);
	assert_exit(&r, 1, "cat ARCHIVE latest");
	assert_one_error_line(&r, "cat of a snapshot's root");
	cr_assert(strstr(r.err, "latest") && strstr(r.err, "directory") &&
		  strstr(r.err, "amberfs ls") && !strstr(r.err, "root is a directory"),
		  "cat latest should name the snapshot's root and suggest ls: %s", r.err);
	run_result_dispose(&r);
	amber(&r, "cat", arch, "latest:keys", NULL);
	assert_exit(&r, 1, "cat ARCHIVE latest:keys");
	cr_assert(strstr(r.err, "latest:keys is a directory") && strstr(r.err, "amberfs ls"),
		  "cat of a directory should name it and suggest ls: %s", r.err);
	run_result_dispose(&r);
	free(arch);
}

Test(messages, snapshot_with_swapped_operands_shows_the_operand_order)
{
	char id[41];
	char *arch = small_archive(id, 1);
	char *src = pjoin(IT.tmp, "src");
	run_result r;
	amber(&r, "snapshot", src, arch, NULL);
	assert_exit(&r, 1, "snapshot SRC ARCHIVE");
	assert_one_error_line(&r, "snapshot with swapped operands");
	cr_assert(strstr(r.err, "not an amberfs archive") &&
		  strstr(r.err, "amberfs snapshot ARCHIVE SRC") &&
		  !strstr(r.err, "not a git repository"),
		  "swapped operands: say it is not an amberfs archive and show the order: %s", r.err);
	run_result_dispose(&r);
	free(src);
	free(arch);
}

/* ---- point 10: diff --stat in words ------------------------------------ */

Test(messages, diff_stat_says_what_its_byte_totals_are)
{
	char id[41];
	char *arch = small_archive(id, 1);
	char *p = pjoin(IT.tmp, "src/b.txt");
	write_str(p, "a new file of some bytes\n");
	char id2[41];
	char *src = pjoin(IT.tmp, "src");
	amber_snapshot_ok(id2, arch, src, NULL);
	run_result r;
	amber(&r, "diff", arch, id, id2, "--stat", NULL);
	assert_ok(&r, "diff --stat");
	cr_assert(!strstr(r.out, " in, ") && !strstr(r.out, " out\n"),
		  "diff --stat should not say 'in' and 'out': %s", r.out);
	cr_assert(strstr(r.out, "1 added") && strstr(r.out, "25 B of file data added or changed") &&
		  strstr(r.out, "0 B removed or replaced"), "diff --stat: %s", r.out);
	run_result_dispose(&r);
	free(src);
	free(p);
	free(arch);
}

/* ---- point 11: one unit system, correct plurals ------------------------ */

Test(messages, verify_uses_iec_units_and_singulars_and_counts_objects)
{
	char id[41];
	char *arch = small_archive(id, 0);
	run_result r;
	amber(&r, "verify", arch, NULL);
	assert_ok(&r, "verify");
	cr_assert(strstr(r.out, "1 snapshot in 1 stream ("),
		  "one snapshot in one stream, in the singular: %s", r.out);
	cr_assert(strstr(r.out, "MiB/s") && !strstr(r.out, "MB/s"),
		  "verify's rate in MiB/s like every other figure: %s", r.out);
	run_result_dispose(&r);
	char *args = xasprintf("verify '%s'", arch);
	char *tty = on_tty(args);
	cr_assert(strstr(tty, " objects ") || strstr(tty, " object "),
		  "verify's progress line should count objects: %s", tty);
	cr_assert(!strstr(tty, " files "), "verify's progress counts objects, not files: %s", tty);
	free(tty);
	free(args);
	free(arch);
}

/* ---- point 12: progress within a large file; scripts say what they do --- */

Test(messages, snapshot_progress_moves_while_one_large_file_is_read)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	char *big = pjoin(src, "ledger-big.log");
	write_random_file(big, 192u << 20, 5, 0); /* over a second of reading: several redraws */
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 1);
	char *args = xasprintf("snapshot '%s' '%s'", arch, src);
	char *tty = on_tty(args);
	/* frames are separated by '\r'; count distinct in-file byte figures */
	int frames = 0, distinct = 0;
	char last[64] = "";
	for (char *s = strstr(tty, "of this one)"); s; s = strstr(s + 1, "of this one)")) {
		char *open = s;
		while (open > tty && *open != '(')
			open--;
		char fig[64];
		snprintf(fig, sizeof(fig), "%.*s", (int)(s - open), open);
		frames++;
		if (strcmp(fig, last) != 0)
			distinct++;
		snprintf(last, sizeof(last), "%s", fig);
	}
	cr_assert(distinct >= 2, "while ledger-big.log (192 MiB) is read the progress line should "
		  "show its bytes moving; %d frames, %d distinct: %s", frames, distinct, tty);
	free(tty);
	free(args);
	free(arch);
	free(big);
	free(src);
}

Test(messages, scripts_test_says_what_it_is_doing)
{
	/* ninja and meson stubs: the suite must not rebuild the tree it runs from */
	char *bin = pjoin(IT.tmp, "bin");
	mkdir_p(bin, 0755);
	char *stub = pjoin(bin, "ninja");
	write_file(stub, "#!/bin/sh\nexit 0\n", 17, 0755);
	free(stub);
	stub = pjoin(bin, "meson");
	write_file(stub, "#!/bin/sh\nexit 0\n", 17, 0755);
	free(stub);
	char *path = xasprintf("PATH=%s:/usr/sbin:/usr/bin:/sbin:/bin", bin);
	const char *env[] = { "AMBERFS_NO_ASAN=1", path, NULL };
	run_opts o = { .env = env, .timeout = 600, .cwd = AMBER_SOURCE_DIR };
	run_result r;
	run_cmd(&r, &o, "scripts/test", "no-such-test-program", NULL);
	cr_assert(strstr(r.out, "dependencies") && strstr(r.out, "building"),
		  "scripts/test should say it checks dependencies and builds: %s", r.out);
	cr_assert(strstr(r.out, "0 passed, 0 failed"), "%s", r.out);
	run_result_dispose(&r);
	free(path);
	free(bin);
}

Test(messages, scripts_build_shows_the_compiler_errors_when_it_fails)
{
	/* a copy of scripts/build over a real ninja file whose one rule fails as
	 * a compiler does: its message on stdout, exit 1 */
	char *proj = pjoin(IT.tmp, "proj");
	char *dir = pjoin(proj, "scripts");
	mkdir_p(dir, 0755);
	size_t n;
	char *script = read_file(AMBER_SOURCE_DIR "/scripts/build", &n);
	char *p = pjoin(dir, "build");
	write_file(p, script, n, 0755);
	free(p);
	free(dir);
	dir = pjoin(proj, "build");
	mkdir_p(dir, 0755);
	p = pjoin(dir, "build.ninja");
	write_str(p, "rule cc\n  command = echo 'x.c:1:2: error: expected ; before }'; false\n"
		     "build x.o: cc\ndefault x.o\n");
	free(p);
	run_opts o = { .cwd = proj };
	run_result r;
	run_cmd(&r, &o, "scripts/build", NULL);
	cr_assert_neq(r.status, 0, "a failed build exited 0");
	cr_assert(strstr(r.err, "x.c:1:2: error: expected ; before }"),
		  "the compiler's error was hidden: stdout %s, stderr %s", r.out, r.err);
	cr_assert(strstr(r.err, "scripts/build: the build failed"), "%s", r.err);
	run_result_dispose(&r);
	free(script);
	free(dir);
	free(proj);
}

/* ---- point 13: no raw escape codes off a terminal ---------------------- */

Test(messages, demo_headings_are_plain_text_off_a_terminal)
{
	char *demo = read_file(AMBER_SOURCE_DIR "/scripts/demo", NULL);
	cr_assert(strstr(demo, ". scripts/common.sh") && !strstr(demo, "\\033"),
		  "scripts/demo should print headings through scripts/common.sh");
	const char *sh = ". scripts/common.sh; say generating sample state";
	run_opts o = { .cwd = AMBER_SOURCE_DIR };
	run_result r;
	run_cmd(&r, &o, "bash", "-c", sh, NULL);
	assert_ok(&r, "say");
	cr_assert(strstr(r.out, "== generating sample state"), "%s", r.out);
	cr_assert(!strchr(r.out, '\033'), "escape codes written to a pipe: %s", r.out);
	run_result_dispose(&r);
	char *cmd = xasprintf("bash -c '%s'", sh);
	run_cmd(&r, &o, "script", "-qfec", cmd, "/dev/null", NULL);
	assert_ok(&r, "say on a terminal");
	cr_assert(strstr(r.out, "\033[1m== generating"), "bold on a terminal: %s", r.out);
	run_result_dispose(&r);
	free(cmd);
	free(demo);
}

/* ---- point 14: -m for snapshot as for tag ------------------------------ */

Test(messages, snapshot_takes_dash_m_like_tag)
{
	char id[41];
	char *arch = small_archive(id, 1);
	char *src = pjoin(IT.tmp, "src");
	const char *extra[] = { "-m", "after halt", NULL };
	char id2[41];
	amber_snapshot_ok(id2, arch, src, extra);
	run_result r;
	amber(&r, "log", arch, "--json", "-n", "1", NULL);
	assert_ok(&r, "log --json");
	cr_assert(strstr(r.out, "\"after halt\""), "the -m message should be stored: %s", r.out);
	run_result_dispose(&r);
	free(src);
	free(arch);
}

/* ---- points 1 and 16: the README's install step and tour --------------- */

Test(messages, readme_installs_and_its_tour_creates_the_files_it_uses)
{
	char *readme = read_file(AMBER_SOURCE_DIR "/README.md", NULL);
	char *quick = strstr(readme, "## Quick start");
	cr_assert(quick, "README has no quick start");
	char *end = strstr(quick + 3, "\n## ");
	cr_assert(end);
	*end = '\0';
	cr_assert(strstr(quick, "scripts/demo") && strstr(quick, "scripts/test"), "%s", quick);
	cr_assert(strstr(quick, "scripts/install") || strstr(quick, "meson install"),
		  "the quick start should say how amberfs gets on PATH: %s", quick);
	*end = '\n';
	char *use = strstr(readme, "/etc/amberfs/vault.pass");
	char *dir = strstr(readme, "install -d -m 700 /etc/amberfs");
	cr_assert(dir && use && dir < use, "the tour should create /etc/amberfs (install -d -m 700) "
		  "before it uses /etc/amberfs/vault.pass");
	char *line_end = strchr(dir, '\n');
	char *pass = strstr(line_end, "vault.pass");
	cr_assert(pass == use || (pass && pass < strstr(readme, "AMBERFS_PASSPHRASE_FILE=/etc")),
		  "the tour should write the passphrase file before it exports it");
	cr_assert(strstr(readme, "umask 077") || strstr(readme, "install -m 600"),
		  "the passphrase file should be made mode 0600");
	free(readme);
}

/* ---- point 3: help that stands without man ----------------------------- */

Test(messages, every_command_help_stands_on_its_own)
{
	run_result r;
	amber(&r, "--help", NULL);
	assert_ok(&r, "amberfs --help");
	char *top = strdup(r.out);
	run_result_dispose(&r);
	cr_assert(strstr(top, "Exit status"), "amberfs --help should give the exit statuses");
	char *cmds = strstr(top, "Commands:\n");
	cr_assert(cmds, "%s", top);
	int n = 0;
	for (char *l = strchr(cmds, '\n') + 1; l[0] == ' ' && l[1] == ' '; l = strchr(l, '\n') + 1) {
		char name[32];
		cr_assert(sscanf(l, " %31s", name) == 1);
		amber(&r, name, "--help", NULL);
		assert_ok(&r, name);
		char *usage = xasprintf("Usage: amberfs %s", name);
		cr_assert(!strncmp(r.out, usage, strlen(usage)), "%s --help: %s", name, r.out);
		cr_assert(!contains_nocase(r.out, "see amberfs(1)"),
			  "%s --help sends the reader to the man page: %s", name, r.out);
		if (strstr(r.out, "SNAPSHOT") || !strcmp(name, "diff"))
			cr_assert(strstr(r.out, "latest") && strstr(r.out, "@TIME") &&
				  strstr(r.out, "at least 7") && strstr(r.out, "tag"),
				  "%s --help should say how snapshots are named: %s", name, r.out);
		if (strstr(r.out, "--passphrase-file FILE  read the passphrase from FILE") &&
		    strcmp(name, "init") && strcmp(name, "key"))
			cr_assert(strstr(r.out, "--keyfile") && strstr(r.out, "--share") &&
				  (strstr(r.out, "--token-uri") || strstr(r.out, "token_uri=")),
				  "%s --help should name every way to unlock: %s", name, r.out);
		run_result_dispose(&r);
		free(usage);
		n++;
	}
	cr_assert(n >= 14, "only %d commands listed: %s", n, top);
	free(top);
}

Test(messages, log_and_repack_say_one_file_and_use_iec_sizes)
{
	char id[41];
	char *arch = small_archive(id, 1); /* one file: a.txt */
	run_result r;
	amber(&r, "log", arch, NULL);
	assert_ok(&r, "log");
	cr_assert(strstr(r.out, " 1 file ") && !strstr(r.out, " 1 files"),
		  "log should say '1 file': %s", r.out);
	run_result_dispose(&r);
	amber(&r, "repack", arch, "--all", NULL);
	assert_ok(&r, "repack --all");
	cr_assert(!strstr(r.out, " bytes copied") && !strstr(r.out, " 1 packs") &&
		  !strstr(r.out, " 1 objects"), "repack: IEC sizes and singulars: %s", r.out);
	run_result_dispose(&r);
	free(arch);
}
