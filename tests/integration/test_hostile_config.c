/*
 * Hostile archives: someone who can write the archive (but has no key)
 * edits its config, key slots and refs with git plumbing, or another local
 * user plants files in the cache.  Each attack must fail loudly and output
 * nothing of the attacker's.
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(hostile_config, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

#define GOOD "GOOD-DATA-7c1e0 written by the owner\n"
#define EVIL "EVIL-DATA-3f9a2 planted by the attacker\n"

/* An encrypted archive (test KDF profile) with one snapshot of GOOD. */
static char *good_archive(void)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive"), id[41];
	char *f = pjoin(src, "file");

	mkdir_p(src, 0755);
	write_str(f, GOOD);
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	free(f);
	free(src);
	return arch;
}

/* A blob holding data[0..len) in arch; returns its id. */
static char *blob_of(const char *arch, const void *data, size_t len)
{
	char *file = pjoin(IT.tmp, "blob.in");

	write_file(file, data, len, 0644);
	char *oid = git_ok(arch, NULL, "hash-object", "-w", file, NULL);
	free(file);
	return oid;
}

static char *config_text(const char *arch)
{
	char *cfg = git_ok(arch, NULL, "cat-file", "blob", "refs/amberfs/meta:config", NULL);
	char *text = xasprintf("%s\n", cfg); /* git_ok cut the last newline */

	free(cfg);
	return text;
}

/* Replace line `key ...` of the config with `line` (no newline). */
static void config_set(const char *arch, const char *key, const char *line)
{
	char *cfg = config_text(arch), *p = strstr(cfg, key);

	cr_assert(p, "config has no %s: %s", key, cfg);
	char *edited = xasprintf("%.*s%s%s", (int)(p - cfg), cfg, line, strchr(p, '\n'));
	char *blob = blob_of(arch, edited, strlen(edited));
	meta_replace(arch, "config", blob);
	free(blob);
	free(edited);
	free(cfg);
}

/* Run amberfs as another machine would: its own empty cache. */
static const char *const *fresh_machine_env(const char *name)
{
	static const char *env[3];
	static char *cache;

	free(cache);
	cache = xasprintf("AMBERFS_CACHE_DIR=%s/%s", IT.tmp, name);
	env[0] = cache;
	env[1] = "AMBERFS_PASSPHRASE_FILE";
	env[2] = NULL;
	return env;
}

/*
 * The attacker says the archive is plain and puts a plain snapshot of EVIL
 * on its main stream: made with amberfs in an archive of their own, on
 * their own machine, and fetched in with git.
 */
static void downgrade(const char *arch)
{
	char *evil = pjoin(IT.tmp, "evil"), *f = pjoin(evil, "file");
	char *theirs = pjoin(IT.tmp, "attacker-archive");
	run_opts o = {.env = fresh_machine_env("attacker-cache")};
	run_result r;

	mkdir_p(evil, 0755);
	write_str(f, EVIL);
	amber_o(&r, &o, "init", "--plain", theirs, NULL);
	assert_ok(&r, "the attacker's plain archive");
	run_result_dispose(&r);
	amber_o(&r, &o, "snapshot", theirs, evil, NULL);
	assert_ok(&r, "the attacker's plain snapshot");
	run_result_dispose(&r);
	free(git_ok(arch, NULL, "fetch", "-q", "--no-tags", theirs,
		    "+refs/heads/main:refs/heads/main", NULL));
	config_set(arch, "encryption ", "encryption none");
	free(theirs);
	free(f);
	free(evil);
}

static void assert_refused(const run_result *r, int code, const char *word, const char *what)
{
	cr_assert_eq(r->status, code, "%s: expected exit %d, got %d; stdout: %.200s; stderr: %s",
		     what, code, r->status, r->out, r->err);
	cr_assert(contains_nocase(r->err, word), "%s: stderr should say '%s': %s", what, word,
		  r->err);
	assert_not_contains(r->out, r->out_len, "EVIL", what);
}

Test(hostile_config, downgrade_to_plain_is_refused_when_a_passphrase_file_is_given)
{
	char *arch = good_archive(), *dest = pjoin(IT.tmp, "dest");
	run_opts o = {.env = fresh_machine_env("victim-cache")};
	run_result r;

	downgrade(arch);
	amber_o(&r, &o, "restore", "--passphrase-file", IT.passfile, arch, "latest", dest, NULL);
	assert_refused(&r, 4, "not encrypted", "restore --passphrase-file");
	run_result_dispose(&r);
	cr_assert(access(dest, F_OK) != 0, "restore created %s", dest);
	amber_o(&r, &o, "cat", "--passphrase-file", IT.passfile, arch, "latest:file", NULL);
	assert_refused(&r, 4, "not encrypted", "cat --passphrase-file");
	run_result_dispose(&r);
	amber_o(&r, &o, "ls", "--passphrase-file", IT.passfile, arch, "latest", NULL);
	assert_refused(&r, 4, "not encrypted", "ls --passphrase-file");
	run_result_dispose(&r);
}

/* Here the passphrase comes from the environment, but this machine's cache
 * saw the archive encrypted (init and snapshot recorded it). */
Test(hostile_config, downgrade_is_refused_where_the_archive_was_seen_encrypted)
{
	char *arch = good_archive(), *dest = pjoin(IT.tmp, "dest");
	run_result r;

	downgrade(arch);
	amber(&r, "restore", arch, "latest", dest, NULL);
	assert_refused(&r, 4, "saw it encrypted", "restore");
	run_result_dispose(&r);
	cr_assert(access(dest, F_OK) != 0, "restore created %s", dest);
	amber(&r, "cat", arch, "latest:file", NULL);
	assert_refused(&r, 4, "saw it encrypted", "cat");
	run_result_dispose(&r);
	amber(&r, "verify", arch, NULL);
	cr_assert_eq(r.status, 1, "verify: %s", r.err);
	cr_assert(contains_nocase(r.out, "downgrade"), "verify names the downgrade: %s", r.out);
	run_result_dispose(&r);
}

/* A fresh machine, the passphrase from the environment: the key slots the
 * attacker left in place give the downgrade away. */
Test(hostile_config, downgrade_is_refused_while_the_archive_has_key_slots)
{
	char *arch = good_archive();
	char *pf = xasprintf("AMBERFS_PASSPHRASE_FILE=%s", IT.passfile);
	run_result r;

	downgrade(arch);
	const char *env[] = {fresh_machine_env("victim-cache")[0], pf, NULL};
	amber_o(&r, &(run_opts){.env = env}, "cat", arch, "latest:file", NULL);
	assert_refused(&r, 4, "key slots", "cat");
	run_result_dispose(&r);
	free(pf);
}

/* With "last line wins", one appended line turned encryption off. */
Test(hostile_config, config_with_a_repeated_key_is_corrupt)
{
	char *arch = good_archive(), *cfg = config_text(arch);
	char *edited = xasprintf("%sencryption none\n", cfg);
	char *blob = blob_of(arch, edited, strlen(edited));
	run_opts o = {.env = fresh_machine_env("victim-cache")};
	run_result r;

	meta_replace(arch, "config", blob);
	amber_o(&r, &o, "cat", arch, "latest:file", NULL);
	assert_refused(&r, 1, "twice", "cat with a repeated config key");
	assert_one_error_line(&r, "cat with a repeated config key");
	run_result_dispose(&r);
}

/* Numbers that overflow an int were read with sscanf("%d"): 2^32 + 1 read as 1. */
Test(hostile_config, config_numbers_that_overflow_are_corrupt)
{
	static const char *const cases[][2] = {
		{"format ", "format 4294967297"},
		{"compression ", "compression zstd 4294967297"},
		{"compression ", "compression zstd 1x"},
		{"compression ", "compression zstd -1"},
		{"chunker ", "chunker fastcdc-gear 18446744073709551617 65536 262144"},
	};
	char *arch = good_archive();
	char *orig = git_ok(arch, NULL, "rev-parse", "refs/amberfs/meta", NULL);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		run_result r;

		free(git_ok(arch, NULL, "update-ref", "refs/amberfs/meta", orig, NULL));
		config_set(arch, cases[i][0], cases[i][1]);
		amber(&r, "ls", arch, "latest", NULL);
		cr_assert_eq(r.status, 1, "'%s' was accepted: %s", cases[i][1], r.out);
		cr_assert(contains_nocase(r.err, "config"), "'%s': %s", cases[i][1], r.err);
		run_result_dispose(&r);
	}
	free(orig);
}

/* ---- key slots ------------------------------------------------------------------------ */

static char *slot0(const char *arch, size_t *len)
{
	char *out = pjoin(IT.tmp, "slot0");
	run_opts o = {.stdout_path = out, .env = NULL};
	const char *argv[] = {"git", NULL, "cat-file", "blob", "refs/amberfs/meta:keys/slot-00",
			      NULL};
	run_result r;

	argv[1] = xasprintf("--git-dir=%s", arch);
	run_argv(&r, &o, argv);
	assert_ok(&r, "git cat-file slot-00");
	run_result_dispose(&r);
	char *data = read_file(out, len);
	free(out);
	return data;
}

/* keys/ with slot-0 = bad[0..badlen) and slot-1 = the archive's real slot. */
static void bad_slot_first(const char *arch, const void *bad, size_t badlen)
{
	size_t len;
	char *real = slot0(arch, &len);
	char *b0 = blob_of(arch, bad, badlen), *b1 = blob_of(arch, real, len);
	char *in = pjoin(IT.tmp, "keys.in");
	char *text = xasprintf("100644 blob %s\tslot-0\n100644 blob %s\tslot-1\n", b0, b1);

	write_str(in, text);
	char *tree = git_ok(arch, in, "mktree", NULL);
	meta_replace(arch, "keys", tree);
	free(tree);
	free(text);
	free(in);
	free(b1);
	free(b0);
	free(real);
}

/*
 * A slot set changed without the key no longer matches the metadata
 * authenticator: the reader refuses it, and at once (no slot's KDF makes it
 * wait first).
 */
static void assert_refused_as_tampering(const char *arch, double max_s, const char *what)
{
	run_result r;

	amber(&r, "cat", arch, "latest:file", NULL);
	cr_assert_eq(r.status, 1, "%s: exit %d", what, r.status);
	cr_assert(strstr(r.err, "its key slots or config were changed by someone without the "
			 "key"), "%s: %s", what, r.err);
	assert_not_contains(r.out, r.out_len, GOOD, what);
	cr_assert(r.seconds < max_s, "%s: took %.1f s", what, r.seconds);
	run_result_dispose(&r);
}

Test(hostile_config, malformed_slot_before_a_valid_one_is_refused_as_tampering)
{
	char *arch = good_archive();

	bad_slot_first(arch, "not a key slot at all", 21);
	assert_refused_as_tampering(arch, 30, "cat with a malformed slot 0");
}

/* 100 passes over 4 GiB used to run 45 s and take 4.2 GiB. */
Test(hostile_config, costly_slot_before_a_valid_one_is_refused_at_once, .timeout = 60)
{
	char *arch = good_archive();
	size_t len;
	unsigned char *slot = (unsigned char *)slot0(arch, &len);

	cr_assert_eq(len, 134); /* AMBSLOT2, label "initial": params at 35 */
	slot[35] = 1;
	slot[36] = 100, slot[37] = slot[38] = slot[39] = 0;
	slot[40] = 0, slot[41] = 0, slot[42] = 0x40, slot[43] = 0; /* 4 GiB in KiB */
	bad_slot_first(arch, slot, len);
	assert_refused_as_tampering(arch, 5, "cat with a 100-pass 4 GiB slot 0");
	free(slot);
}

/* A test-profile slot opens only with the explicit global option. */
Test(hostile_config, test_profile_slot_needs_the_explicit_option)
{
	char *arch = good_archive();
	run_result r;

	run_cmd(&r, &(run_opts){.env = fresh_machine_env("plain-run")}, IT.bin, "cat",
		"--passphrase-file", IT.passfile, arch, "latest:file", NULL);
	cr_assert_eq(r.status, 1, "a test-profile slot opened without --kdf-profile=test: %s",
		     r.err);
	cr_assert(contains_nocase(r.err, "test KDF profile"), "%s", r.err);
	assert_not_contains(r.out, r.out_len, "GOOD", "cat without the option");
	run_result_dispose(&r);
}

/* AMBERFS_KDF_INSECURE_FAST=1 used to make `amberfs init` write a weak slot. */
Test(hostile_config, kdf_environment_variable_does_not_weaken_init)
{
	char *arch = pjoin(IT.tmp, "archive"), *cache = xasprintf("AMBERFS_CACHE_DIR=%s", IT.cache);
	char *pf = xasprintf("AMBERFS_PASSPHRASE_FILE=%s", IT.passfile);
	const char *env[] = {"AMBERFS_KDF_INSECURE_FAST=1", cache, pf, NULL};
	run_result r;
	size_t len;

	run_cmd(&r, &(run_opts){.env = env}, IT.bin, "init", arch, NULL);
	assert_ok(&r, "init with AMBERFS_KDF_INSECURE_FAST=1");
	run_result_dispose(&r);
	unsigned char *slot = (unsigned char *)slot0(arch, &len);
	cr_assert_eq(len, 134);
	cr_assert_eq(memcmp(slot, "AMBSLOT2\x01", 9), 0, "not a version-2 passphrase slot");
	cr_assert_eq(slot[35], 1, "alg %u: not the real Argon2id profile", slot[35]);
	cr_assert_eq(slot[36] | slot[37] << 8, 3, "Argon2id passes");
	cr_assert_eq(slot[40] | slot[41] << 8 | slot[42] << 16, 64 * 1024, "Argon2id KiB");
	free(slot);
}

Test(hostile_config, verify_warns_about_a_weak_slot)
{
	char *arch = good_archive();
	run_result r;

	amber(&r, "verify", arch, NULL);
	assert_ok(&r, "verify");
	cr_assert(strstr(r.err, "WARNING") && contains_nocase(r.err, "weak"),
		  "verify should warn loudly: %s", r.err);
	run_result_dispose(&r);
}

/* ---- refs ----------------------------------------------------------------------------- */

Test(hostile_config, malformed_packed_refs_line_spares_the_other_refs)
{
	char *arch = good_archive(), *packed = pjoin(arch, "packed-refs");
	run_result r;

	free(git_ok(arch, NULL, "pack-refs", "--all", NULL));
	int fd = open(packed, O_WRONLY | O_APPEND);
	cr_assert(fd >= 0);
	cr_assert(write(fd, "this is not a ref\n", 18) == 18);
	close(fd);
	amber(&r, "cat", arch, "latest:file", NULL);
	assert_ok(&r, "cat with a malformed packed-refs line");
	cr_assert_str_eq(r.out, GOOD);
	run_result_dispose(&r);
	amber(&r, "log", arch, NULL);
	assert_ok(&r, "log with a malformed packed-refs line");
	run_result_dispose(&r);
	amber(&r, "verify", arch, NULL);
	cr_assert_eq(r.status, 1, "verify should report the line: %s %s", r.out, r.err);
	cr_assert(strstr(r.out, "packed-refs") && strstr(r.out, "line 4"), "%s", r.out);
	cr_assert(strstr(r.out, "1 snapshot in"), "the other refs were checked: %s", r.out);
	run_result_dispose(&r);
	free(packed);
}

static void expect_packed_refs_refusal(run_result *r, const char *what)
{
	cr_assert_eq(r->status, 1, "%s: exit %d; stdout %s; stderr %s", what, r->status, r->out,
		     r->err);
	cr_assert(strstr(r->err, "packed-refs: line 6 is malformed") &&
		  strstr(r->err, "remove or repair the line"), "%s: %s", what, r->err);
	run_result_dispose(r);
}

/*
 * Writes refuse (as git does), naming the file, its line and what to do;
 * readers keep every other ref, packed tags included, however often they
 * list them; once the line is removed, writing works again.
 */
Test(hostile_config, malformed_packed_refs_line_refuses_writes_and_keeps_tags)
{
	char *arch = good_archive(), *packed = pjoin(arch, "packed-refs");
	char *src = pjoin(IT.tmp, "src"), *fresh = pjoin(IT.tmp, "src/new"), *main = NULL;
	char id[41];
	run_result r;

	amber(&r, "tag", arch, "latest", "t1", NULL);
	assert_ok(&r, "tag t1");
	run_result_dispose(&r);
	free(git_ok(arch, NULL, "pack-refs", "--all", NULL));
	main = git_ok(arch, NULL, "rev-parse", "refs/heads/main", NULL);
	int fd = open(packed, O_WRONLY | O_APPEND);
	cr_assert(fd >= 0);
	cr_assert(write(fd, "this is not a ref\n", 18) == 18);
	close(fd);
	write_str(fresh, "new\n");
	amber(&r, "snapshot", arch, src, NULL);
	expect_packed_refs_refusal(&r, "snapshot");
	amber(&r, "tag", arch, "latest", "t2", NULL);
	expect_packed_refs_refusal(&r, "tag");
	amber(&r, "log", arch, NULL);
	assert_ok(&r, "log");
	cr_assert(strstr(r.out, "tags: t1"), "log lost the packed tag: %s", r.out);
	run_result_dispose(&r);
	char *loose_main = pjoin(arch, "refs/heads/main"), *loose_t2 = pjoin(arch, "refs/tags/t2");
	cr_assert(access(loose_main, F_OK) != 0 && access(loose_t2, F_OK) != 0, "a ref was written");
	free(loose_main);
	free(loose_t2);
	run_opts o = {0};
	run_cmd(&r, &o, "sed", "-i", "/not a ref/d", packed, NULL);
	assert_ok(&r, "sed");
	run_result_dispose(&r);
	char *now = git_ok(arch, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_assert_str_eq(now, main, "main moved while packed-refs was malformed");
	free(now);
	amber_snapshot_ok(id, arch, src, NULL);
	assert_fsck(arch);
	free(main);
	free(fresh);
	free(src);
	free(packed);
}

/* ---- the cache directory -------------------------------------------------------------- */

static char *cache_of(const char *arch)
{
	char *cfg = config_text(arch), id[33];

	cr_assert(sscanf(strstr(cfg, "\nid ") + 4, "%32s", id) == 1);
	free(cfg);
	return pjoin(IT.cache, id);
}

/* verify wrote its marks through a fixed temporary name, O_TRUNC, following symlinks. */
Test(hostile_config, symlink_planted_at_a_mark_temp_name_is_not_followed)
{
	char *arch = good_archive(), *dir = cache_of(arch);
	char *victim = pjoin(IT.tmp, "victim"), *link = pjoin(dir, "verified-main.tmp");
	run_result r;

	write_str(victim, "precious\n");
	cr_assert_eq(symlink(victim, link), 0, "%s", strerror(errno));
	amber(&r, "verify", arch, NULL);
	assert_ok(&r, "verify");
	run_result_dispose(&r);
	char *after = read_file(victim, NULL);
	cr_assert_str_eq(after, "precious\n", "the symlink's target was written");
	free(after);
}

/* Another user's cache directory is not used: nothing is written in it. */
Test(hostile_config, cache_directory_of_another_user_is_not_used)
{
	char *arch = good_archive(), *foreign = pjoin(IT.tmp, "foreign");
	char *env0 = xasprintf("AMBERFS_CACHE_DIR=%s", foreign);
	const char *env[] = {env0, NULL};
	char *dir = cache_of(arch), *id = strrchr(dir, '/') + 1, *mine = pjoin(foreign, id);
	run_result r;

	mkdir_p(foreign, 0755);
	cr_assert_eq(chown(foreign, 12345, 12345), 0, "%s", strerror(errno));
	amber_o(&r, &(run_opts){.env = env}, "log", arch, NULL);
	assert_ok(&r, "log with a foreign cache directory");
	run_result_dispose(&r);
	cr_assert(access(mine, F_OK) != 0, "%s was created in another user's directory", mine);
	amber_o(&r, &(run_opts){.env = env}, "verify", arch, NULL);
	cr_assert_eq(r.status, 1, "verify must not use a foreign cache: %s", r.err);
	cr_assert(contains_nocase(r.err, "not safe"), "%s", r.err);
	run_result_dispose(&r);
	cr_assert(access(mine, F_OK) != 0, "%s was created in another user's directory", mine);
}

/* With HOME unset the cache fell back to /tmp/.cache/amberfs, shared by all. */
Test(hostile_config, home_unset_does_not_use_tmp)
{
	char *arch = good_archive(), *dir = cache_of(arch), *id = strrchr(dir, '/') + 1;
	char *tmpdir = xasprintf("/tmp/.cache/amberfs/%s", id);
	const char *env[] = {"HOME", "XDG_CACHE_HOME", "AMBERFS_CACHE_DIR", NULL};
	char *home_cache = NULL;
	run_result r;

	amber_o(&r, &(run_opts){.env = env}, "verify", arch, NULL);
	cr_assert(access(tmpdir, F_OK) != 0, "%s was used", tmpdir);
	assert_ok(&r, "verify with HOME unset");
	run_result_dispose(&r);
	home_cache = xasprintf("%s/.cache/amberfs/%s", getpwuid(geteuid())->pw_dir, id);
	cr_assert(access(home_cache, F_OK) == 0, "the password database's home was not used");
	rm_rf(home_cache);
	free(home_cache);
	free(tmpdir);
}

/* ---- the local cache directory ------------------------------------------------------------ */

/* stderr holds exactly one line, the warning about `dir`. */
static void expect_one_cache_warning(const run_result *r, const char *dir, const char *what)
{
	const char *nl = strchr(r->err, '\n');

	cr_assert_eq(r->status, 0, "%s: exit %d: %s", what, r->status, r->err);
	cr_assert(strncmp(r->err, "amberfs: warning: cache directory ", 34) == 0 &&
		  strstr(r->err, dir) && strstr(r->err, "not safe") &&
		  strstr(r->err, "AMBERFS_CACHE_DIR"), "%s: %s", what, r->err);
	cr_assert(nl && nl[1] == '\0', "%s: one line expected: %s", what, r->err);
}

/*
 * A cache directory that others may write, or that is not the caller's,
 * is not used (so nobody can plant files in it), and ls, log and snapshot
 * say so once each, naming it and what to do, instead of going silently
 * slower.
 */
Test(hostile_config, unsafe_cache_directory_is_named_once_by_ls_log_and_snapshot)
{
	char *arch = good_archive(), *src = pjoin(IT.tmp, "src"), *cache = pjoin(IT.tmp, "shared");
	char *env = xasprintf("AMBERFS_CACHE_DIR=%s", cache);
	const char *const vars[] = {env, NULL};
	run_opts o = {.env = vars};
	run_result r;

	mkdir_p(cache, 0700);
	cr_assert_eq(chmod(cache, 01777), 0);
	amber_o(&r, &o, "ls", arch, "latest", NULL);
	expect_one_cache_warning(&r, cache, "ls");
	cr_assert(strstr(r.out, "file"), "ls: %s", r.out);
	run_result_dispose(&r);
	amber_o(&r, &o, "log", arch, NULL);
	expect_one_cache_warning(&r, cache, "log");
	run_result_dispose(&r);
	amber_o(&r, &o, "snapshot", arch, src, NULL);
	expect_one_cache_warning(&r, cache, "snapshot");
	run_result_dispose(&r);
	cr_assert_eq(chmod(cache, 0700), 0);
	if (geteuid() == 0) { /* someone else's, mode 0700 */
		cr_assert_eq(chown(cache, 65534, 65534), 0);
		amber_o(&r, &o, "log", arch, NULL);
		expect_one_cache_warning(&r, cache, "log, another user's directory");
		cr_assert(strstr(r.err, "uid 65534"), "%s", r.err);
		run_result_dispose(&r);
		cr_assert_eq(chown(cache, 0, 0), 0);
	}
	amber_o(&r, &o, "log", arch, NULL);
	assert_ok(&r, "log with a safe cache");
	cr_assert_str_eq(r.err, "", "no warning for a safe cache directory");
	run_result_dispose(&r);
	free(env);
	free(cache);
	free(src);
}
