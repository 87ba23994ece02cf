/*
 * amberfs verify, push and amberfs-coldsync.  Each tamper made with git
 * plumbing (by someone without the key) is detected with its own words:
 * corrupt, missing, rollback / moved back, rewritten / other history,
 * authentication, inconsistent config, key slot.  Clean archives and
 * replicas verify; replicas restore identically and leak nothing.
 */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(verify, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

/* A small source tree with a multi-chunk file; returns its path. */
static char *make_src(void)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	write_random_file(pjoin(src, "big"), 5u << 20, 77, 0);
	write_str(pjoin(src, "NAMEMARKER_notes.txt"), "CONTENTMARKER first version\n");
	mkdir_p(pjoin(src, "sub"), 0755);
	write_str(pjoin(src, "sub/deep.txt"), "deep file\n");
	return src;
}

/* An encrypted archive with two snapshots s1, s2 (41 bytes each). */
static char *two_snapshots(char *s1, char *s2, char **src_out)
{
	char *src = make_src(), *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	amber_snapshot_ok(s1, arch, src, NULL);
	write_str(pjoin(src, "NAMEMARKER_notes.txt"), "CONTENTMARKER second version\n");
	amber_snapshot_ok(s2, arch, src, NULL);
	if (src_out)
		*src_out = src;
	return arch;
}

/* `amberfs verify ARCHIVE [extra]`; returns the result (dispose it). */
static run_result verify(const char *arch, const char *extra1, const char *extra2)
{
	run_result r;
	amber(&r, "verify", arch, extra1, extra2, NULL);
	return r;
}

static void expect_clean(const char *arch, const char *extra1, const char *extra2)
{
	run_result r = verify(arch, extra1, extra2);
	char *what = xasprintf("verify %s %s", extra1 ? extra1 : "", extra2 ? extra2 : "");
	assert_ok(&r, what);
	cr_assert(strstr(r.out, "verify: 0 problems"), "%s: no summary line: %s", what, r.out);
	cr_assert(strstr(r.out, "MiB/s"), "%s: the summary gives throughput: %s", what, r.out);
	free(what);
	run_result_dispose(&r);
}

/* Assert verify exits 1 and its report contains `word` (case-insensitive). */
static void expect_problem(const char *arch, const char *extra, const char *word,
			   const char *what)
{
	run_result r = verify(arch, extra, NULL);
	cr_assert_eq(r.status, 1, "%s: verify should exit 1, got %d; stdout: %s; stderr: %s", what,
		     r.status, r.out, r.err);
	cr_assert(contains_nocase(r.out, word), "%s: the report should say '%s':\n%s", what, word,
		  r.out);
	cr_assert(contains_nocase(r.err, "problem"), "%s: stderr names the count: %s", what,
		  r.err);
	run_result_dispose(&r);
}

static void expect_no_word(const char *arch, const char *extra, const char *word)
{
	run_result r = verify(arch, extra, NULL);
	cr_assert(!contains_nocase(r.out, word), "verify %s should not say '%s':\n%s",
		  extra ? extra : "", word, r.out);
	run_result_dispose(&r);
}

/* ------------------------------------------------------------------ */

Test(verify, clean_archive_verifies_every_way)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	expect_clean(arch, NULL, NULL);
	expect_clean(arch, "--read-data", NULL);
	expect_clean(arch, "--no-key", NULL);
	/* --no-key must not ask for a passphrase: none is available here */
	run_result r;
	const char *const env[] = { "AMBERFS_PASSPHRASE_FILE", NULL };
	run_opts o = { .env = env };
	amber_o(&r, &o, "verify", arch, "--no-key", NULL);
	assert_ok(&r, "verify --no-key without any passphrase source");
	run_result_dispose(&r);
	char *plain = pjoin(IT.tmp, "plain");
	amber_init_archive(plain, 1);
	char id[41];
	amber_snapshot_ok(id, plain, pjoin(IT.tmp, "src"), NULL);
	expect_clean(plain, "--read-data", NULL);
}

/* Byte offset and pack file of object oid (via git verify-pack). */
static char *locate(const char *arch, const char *oid, long long *off, long long *psize)
{
	run_result r;
	char *dir = pjoin(arch, "objects/pack"), *file = NULL, *save = NULL;
	run_cmd(&r, NULL, "find", dir, "-name", "*.idx", NULL);
	assert_ok(&r, "find pack indexes");
	for (char *idx = strtok_r(r.out, "\n", &save); idx && !file;
	     idx = strtok_r(NULL, "\n", &save)) {
		run_result v;
		run_cmd(&v, NULL, "git", "verify-pack", "-v", idx, NULL);
		char *hit = strstr(v.out, oid);
		char type[16];
		long long size;
		if (hit && sscanf(hit + 40, " %15s %lld %lld %lld", type, &size, psize, off) == 4)
			file = xasprintf("%.*s.pack", (int)(strlen(idx) - 4), idx);
		run_result_dispose(&v);
	}
	run_result_dispose(&r);
	cr_assert(file, "object %s not found in any pack", oid);
	return file;
}

Test(verify, flipped_byte_in_a_pack_is_corrupt)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	char *spec = xasprintf("%s:", s2);
	char *tree = git_ok(arch, NULL, "rev-parse", spec, NULL);
	char *ls = git_ok(arch, NULL, "ls-tree", tree, NULL);
	/* the first blob of the root tree that is a file chunk (not 'm') */
	char oid[41] = "";
	for (char *sv = NULL, *l = strtok_r(ls, "\n", &sv); l; l = strtok_r(NULL, "\n", &sv)) {
		char mode[8], type[8], o[41], name[80];
		if (sscanf(l, "%7s %7s %40s\t%79s", mode, type, o, name) == 4 &&
		    !strcmp(type, "blob") && strcmp(name, "m"))
			memcpy(oid, o, 41);
	}
	cr_assert(oid[0], "no file blob in the root tree");
	long long off, psize;
	char *pack = locate(arch, oid, &off, &psize);
	int fd = open(pack, O_RDWR);
	cr_assert(fd >= 0);
	unsigned char c;
	off += psize / 2;
	cr_assert(pread(fd, &c, 1, off) == 1);
	c ^= 0x20;
	cr_assert(pwrite(fd, &c, 1, off) == 1);
	close(fd);
	expect_problem(arch, "--no-key", "corrupt", "flipped byte, no key");
	expect_problem(arch, "--no-key", oid, "the report names the bad object");
	expect_problem(arch, NULL, "corrupt", "flipped byte, with the key");
	/* with the key the reader names the path of the file that uses it */
	expect_problem(arch, NULL, "NAMEMARKER_notes.txt", "the report names the path");
}

Test(verify, deleted_pack_is_missing)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	long long off, psize;
	char *pack = locate(arch, s2, &off, &psize);
	char *idx = xasprintf("%.*s.idx", (int)(strlen(pack) - 5), pack);
	cr_assert(unlink(idx) == 0 && unlink(pack) == 0);
	expect_problem(arch, "--no-key", "missing", "deleted pack, no key");
	expect_problem(arch, "--no-key", s2, "the report names the missing snapshot");
}

Test(verify, ref_moved_back_is_a_rollback)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	expect_clean(arch, "--no-key", NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", s1, NULL));
	expect_problem(arch, "--no-key", "rollback", "ref moved back");
	expect_problem(arch, NULL, "moved back", "ref moved back, with the key");
	expect_no_word(arch, "--no-key", "rewritten");
	/* the mark did not move: putting the ref back makes it clean again */
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", s2, NULL));
	expect_clean(arch, NULL, NULL);
}

/* The message of a commit in a file. */
static char *message_file(const char *repo, const char *commit)
{
	char *raw = git_ok(repo, NULL, "cat-file", "commit", commit, NULL);
	char *body = strstr(raw, "\n\n");
	cr_assert(body);
	char *path = xasprintf("%s/msg-%s", IT.tmp, commit);
	write_str(path, body + 2);
	free(raw);
	return path;
}

Test(verify, ref_on_other_history_is_rewritten)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	expect_clean(arch, NULL, NULL);
	/* a new commit on s1 carrying s2's message and s1's tree */
	char *spec = xasprintf("%s^{tree}", s1);
	char *tree = git_ok(arch, NULL, "rev-parse", spec, NULL);
	char *x = git_ok(arch, NULL, "commit-tree", tree, "-p", s1, "-F", message_file(arch, s2), NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", x, NULL));
	expect_problem(arch, "--no-key", "rewritten", "rewritten history");
	expect_no_word(arch, "--no-key", "rollback");
}

/*
 * A snapshot's tree swapped for another's, same message and parent.  With
 * the key the record names another tree: authentication failure.  Without
 * the key and without signatures only the form of the commit gives it away
 * (git commit-tree writes its own author line); a forger who also copies
 * the author line is caught only by the key, a signature or the mark.
 */
Test(verify, swapped_tree_fails_authentication)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	char *spec = xasprintf("%s^{tree}", s1);
	char *tree = git_ok(arch, NULL, "rev-parse", spec, NULL);
	char *x = git_ok(arch, NULL, "commit-tree", tree, "-p", s1, "-F", message_file(arch, s2), NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", x, NULL));
	expect_problem(arch, NULL, "authenticat", "swapped tree, with the key");
	expect_problem(arch, NULL, "record", "the record names another tree");
	expect_problem(arch, "--no-key", "author line", "swapped tree, no key");
}

/* Replace entry `name` of the meta tree (or of keys/) and commit a new meta. */
static void new_meta(const char *arch, const char *config_blob, const char *slot_blob)
{
	char *meta = git_ok(arch, NULL, "rev-parse", "refs/amberfs/meta", NULL);
	char *spec = xasprintf("%s^{tree}", meta);
	char *ls = git_ok(arch, NULL, "ls-tree", spec, NULL);
	char *in = pjoin(IT.tmp, "mktree.in");
	FILE *f = fopen(in, "w");
	cr_assert(f);
	for (char *sv = NULL, *l = strtok_r(ls, "\n", &sv); l; l = strtok_r(NULL, "\n", &sv)) {
		char mode[8], type[8], o[41], name[80];
		cr_assert(sscanf(l, "%7s %7s %40s\t%79s", mode, type, o, name) == 4);
		if (!strcmp(name, "config") && config_blob)
			memcpy(o, config_blob, 41);
		if (!strcmp(name, "keys") && slot_blob) {
			char *kin = pjoin(IT.tmp, "keys.in");
			char *line = xasprintf("100644 blob %s\tslot-0\n", slot_blob);
			write_str(kin, line);
			char *kt = git_ok(arch, kin, "mktree", NULL);
			memcpy(o, kt, 41);
		}
		fprintf(f, "%s %s %s\t%s\n", mode, type, o, name);
	}
	fclose(f);
	char *tree = git_ok(arch, in, "mktree", NULL);
	char *msg = pjoin(IT.tmp, "meta.msg");
	write_str(msg, "amberfs archive metadata\n");
	char *c = git_ok(arch, NULL, "commit-tree", tree, "-p", meta, "-F", msg, NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/amberfs/meta", c, NULL));
}

Test(verify, config_claiming_no_encryption_is_inconsistent)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	char *cfg = git_ok(arch, NULL, "cat-file", "blob", "refs/amberfs/meta:config", NULL);
	char *p = strstr(cfg, "encryption xchacha20poly1305-blake2b");
	cr_assert(p, "config: %s", cfg);
	char *edited = xasprintf("%.*sencryption none%s\n", (int)(p - cfg), cfg,
				 p + strlen("encryption xchacha20poly1305-blake2b"));
	char *file = pjoin(IT.tmp, "config.edited");
	write_str(file, edited);
	char *blob = git_ok(arch, NULL, "hash-object", "-w", file, NULL);
	new_meta(arch, blob, NULL);
	expect_problem(arch, "--no-key", "inconsistent", "config edited, no key");
	expect_problem(arch, "--no-key", "encrypted", "config edited: objects are encrypted");
	expect_problem(arch, NULL, "inconsistent", "config edited, verify as it opens");
}

Test(verify, replaced_key_slot_does_not_open)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	expect_clean(arch, NULL, NULL);
	/* another archive's slot, sealed with another passphrase */
	char *other = pjoin(IT.tmp, "other"), *opass = pjoin(IT.tmp, "other.pass");
	write_passfile(opass, "another passphrase entirely");
	run_result r;
	amber(&r, "init", other, "--passphrase-file", opass, NULL);
	assert_ok(&r, "init other");
	run_result_dispose(&r);
	char *slot = pjoin(IT.tmp, "slot");
	run_opts so = { .stdout_path = slot };
	char *gd = xasprintf("--git-dir=%s", other);
	run_cmd(&r, &so, "git", gd, "cat-file", "blob", "refs/amberfs/meta:keys/slot-00", NULL);
	assert_ok(&r, "cat-file slot");
	run_result_dispose(&r);
	char *blob = git_ok(arch, NULL, "hash-object", "-w", slot, NULL);
	new_meta(arch, NULL, blob);
	expect_problem(arch, NULL, "no key slot opens", "replaced slot, with the key");
	expect_problem(arch, "--no-key", "was added or replaced since the last verify",
		       "replaced slot, no key");
}

/* ------------------------------------------------------------------ */
/* Signatures                                                          */

Test(verify, signed_archive_verifies_and_a_hand_edited_commit_fails)
{
	char *src = make_src(), *arch = pjoin(IT.tmp, "signed");
	char *key = pjoin(IT.tmp, "signing.key");
	run_result r;
	amber(&r, "init", arch, "--signing-key", key, NULL);
	assert_ok(&r, "init --signing-key");
	run_result_dispose(&r);
	char *env_key = xasprintf("AMBERFS_SIGNING_KEY=%s", key);
	const char *const env[] = { env_key, NULL };
	run_opts o = { .env = env };
	for (int i = 0; i < 2; i++) {
		amber_o(&r, &o, "snapshot", arch, src, NULL);
		assert_ok(&r, "signed snapshot");
		run_result_dispose(&r);
	}
	expect_clean(arch, "--no-key", NULL);
	r = verify(arch, "--no-key", NULL);
	cr_assert(strstr(r.out, "2 signed and verified"), "%s", r.out);
	run_result_dispose(&r);

	/* the public key pinned from a file: the right one passes */
	char *pub = pjoin(IT.tmp, "pub");
	run_opts po = { .stdout_path = pub };
	amber_o(&r, &po, "key", "show-public", arch, NULL);
	assert_ok(&r, "key show-public");
	run_result_dispose(&r);
	char *pk_opt = xasprintf("--public-key=%s", pub);
	expect_clean(arch, "--no-key", pk_opt);

	/* a hand-edited signed commit: same signature, other bytes */
	char *tip = git_ok(arch, NULL, "rev-parse", "refs/heads/main", NULL);
	char *raw = git_ok(arch, NULL, "cat-file", "commit", tip, NULL);
	char *p = strstr(raw, "amberfs snapshot ");
	cr_assert(p && strstr(raw, "gpgsig"), "a signed snapshot commit: %s", raw);
	p[strlen("amberfs snapsh")] = '0';
	char *file = pjoin(IT.tmp, "edited.commit");
	char *text = xasprintf("%s\n", raw);
	write_str(file, text);
	char *x = git_ok(arch, NULL, "hash-object", "-t", "commit", "-w", file, NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", x, NULL));
	expect_problem(arch, "--no-key", "bad signature", "hand-edited signed commit");

	/* and a commit made without the key on top of signed history */
	char *spec = xasprintf("%s^{tree}", tip);
	char *tree = git_ok(arch, NULL, "rev-parse", spec, NULL);
	char *msg = pjoin(IT.tmp, "msg");
	char *body = strstr(raw, "\n\n");
	write_str(msg, body + 2);
	char *y = git_ok(arch, NULL, "commit-tree", tree, "-p", tip, "-F", msg, NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", y, NULL));
	expect_problem(arch, "--no-key", "stripped", "unsigned commit above signed ones");

	/* another archive's public key pinned: every signature is foreign */
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", tip, NULL));
	char *other = pjoin(IT.tmp, "other"), *okey = pjoin(IT.tmp, "other.key");
	amber(&r, "init", other, "--signing-key", okey, NULL);
	assert_ok(&r, "init other");
	run_result_dispose(&r);
	amber_o(&r, &po, "key", "show-public", other, NULL);
	assert_ok(&r, "key show-public other");
	run_result_dispose(&r);
	expect_problem(arch, pk_opt, "bad signature", "foreign public key");
}

/* ------------------------------------------------------------------ */
/* Replication                                                         */

static void assert_no_plaintext(const char *repo)
{
	char *dump = pjoin(IT.tmp, "replica.dump");
	char *gd = xasprintf("--git-dir=%s", repo);
	run_opts o = { .stdout_path = dump };
	run_result r;
	run_cmd(&r, &o, "git", gd, "cat-file", "--batch-all-objects", "--batch", NULL);
	assert_ok(&r, "git cat-file --batch-all-objects --batch");
	run_result_dispose(&r);
	size_t len = 0;
	char *all = read_file(dump, &len);
	cr_assert(len > (5u << 20), "the replica's objects are suspiciously small");
	static const char *const markers[] = { "NAMEMARKER", "CONTENTMARKER", "deep.txt",
					       "deep file" };
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		cr_assert(!memmem(all, len, markers[i], strlen(markers[i])),
			  "the replica's objects contain the plaintext '%s'", markers[i]);
	free(all);
	unlink(dump);
	cr_assert(!tree_contains_bytes(repo, "NAMEMARKER", 10), "a replica file holds a name");
	cr_assert(!tree_contains_bytes(repo, "CONTENTMARKER", 13), "a replica file holds data");
}

static void assert_restores_like(const char *replica, const char *src)
{
	char *dest = xasprintf("%s/restored-%d", IT.tmp, rand());
	run_result r;
	amber(&r, "restore", replica, "latest", dest, NULL);
	assert_ok(&r, "restore from the replica");
	run_result_dispose(&r);
	assert_trees_equal(src, dest, TD_SKIP_ROOT_META, "restore of the replica");
}

Test(verify, push_to_a_new_local_path_makes_a_verifying_replica)
{
	char s1[41], s2[41], *src = NULL;
	char *arch = two_snapshots(s1, s2, &src);
	char *rep = pjoin(IT.tmp, "replica.git");
	run_result r;
	amber(&r, "push", arch, rep, NULL);
	assert_ok(&r, "push to a new path");
	cr_assert(strstr(r.out, "created"), "push says it created the repository: %s", r.out);
	run_result_dispose(&r);
	expect_clean(rep, "--no-key", NULL);
	assert_fsck(rep);
	assert_restores_like(rep, src);
	assert_no_plaintext(rep);

	amber(&r, "push", arch, rep, NULL);
	assert_ok(&r, "second push");
	cr_assert(strstr(r.out, "0 of") && strstr(r.out, "up to date"),
		  "a second push changes nothing: %s", r.out);
	run_result_dispose(&r);

	/* file:// URL and a new snapshot */
	write_str(pjoin(src, "added"), "added later\n");
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *url = xasprintf("file://%s", rep);
	amber(&r, "push", arch, url, NULL);
	assert_ok(&r, "push over file://");
	run_result_dispose(&r);
	char *head = git_ok(rep, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_assert_str_eq(head, id);
	expect_clean(rep, "--read-data", NULL);
}

/* The names of the .pack files in repo's objects/pack, sorted, one per line. */
static char *pack_names(const char *repo)
{
	char *dir = xasprintf("%s/objects/pack", repo), *out = xasprintf("%s", "");
	struct dirent **v = NULL;
	int n = scandir(dir, &v, NULL, alphasort);

	cr_assert_geq(n, 0, "cannot list %s", dir);
	for (int i = 0; i < n; i++) {
		if (strstr(v[i]->d_name, ".pack"))
			out = xasprintf("%s%s\n", out, v[i]->d_name);
		free(v[i]);
	}
	free(v);
	return out;
}

Test(verify, a_new_replica_gets_the_archive_packs_as_they_are)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	char *rep = pjoin(IT.tmp, "replica.git");
	run_result r;

	amber(&r, "push", arch, rep, NULL);
	assert_ok(&r, "push to a new path");
	run_result_dispose(&r);
	/* no re-packing: the same pack files (named by their checksum) */
	cr_assert_str_eq(pack_names(rep), pack_names(arch));
	cr_assert_str_eq(git_ok(rep, NULL, "rev-parse", "refs/heads/main", NULL), s2);
	expect_clean(rep, "--read-data", NULL);
}

Test(verify, non_fast_forward_push_is_refused)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	char *rep = pjoin(IT.tmp, "replica.git");
	run_result r;
	amber(&r, "push", arch, rep, NULL);
	assert_ok(&r, "push");
	run_result_dispose(&r);
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", s1, NULL));
	amber(&r, "push", arch, rep, NULL);
	cr_assert_eq(r.status, 1, "a non-fast-forward push must fail: %s", r.err);
	cr_assert(contains_nocase(r.err, "non-fast-forward"), "clear message: %s", r.err);
	assert_one_error_line(&r, "refused push");
	run_result_dispose(&r);
	char *head = git_ok(rep, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_assert_str_eq(head, s2, "the replica's ref must not move back");
}

/* $AMBERFS_COLDSYNC (set by meson), else next to a build dir in the source. */
static char *coldsync_path(void)
{
	const char *env = getenv("AMBERFS_COLDSYNC");
	if (env && *env)
		return xasprintf("%s", env);
	const char *slash = strrchr(IT.bin, '/');
	int dirlen = slash ? (int)(slash - IT.bin) : 1;
	return xasprintf("%.*s/../../mount-helpers/amberfs-coldsync", dirlen,
			 slash ? IT.bin : ".");
}

Test(verify, coldsync_interrupted_then_rerun_verifies)
{
	char s1[41], s2[41], *src = NULL;
	char *arch = two_snapshots(s1, s2, &src);
	char *cold = pjoin(IT.tmp, "cold");
	run_result r;
	/* the first step only, by hand: the packs, as an interrupted run leaves */
	char *from = xasprintf("%s/objects/pack/", arch), *to = xasprintf("%s/objects/pack/", cold);
	mkdir_p(to, 0755);
	run_cmd(&r, NULL, "rsync", "-a", "--ignore-existing", "--include=pack-*.pack",
		"--exclude=*", from, to, NULL);
	assert_ok(&r, "first rsync step");
	run_result_dispose(&r);
	amber(&r, "verify", cold, "--no-key", NULL);
	cr_assert_neq(r.status, 0, "a half-copied replica does not verify");
	run_result_dispose(&r);

	char *script = coldsync_path();
	char *bin = xasprintf("AMBERFS_BIN=%s", IT.bin);
	char *cache = xasprintf("AMBERFS_CACHE_DIR=%s", IT.cache);
	const char *const env[] = { bin, cache, NULL };
	run_opts o = { .env = env };
	run_cmd(&r, &o, "sh", script, arch, cold, NULL);
	assert_ok(&r, "coldsync rerun");
	cr_assert(strstr(r.out, "verify: 0 problems"), "coldsync ends with a verify: %s", r.out);
	run_result_dispose(&r);
	assert_fsck(cold);
	assert_restores_like(cold, src);
	assert_no_plaintext(cold);

	/* again after a new snapshot: resumes, still verifies */
	write_str(pjoin(src, "later"), "later\n");
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	run_cmd(&r, &o, "sh", script, arch, cold, NULL);
	assert_ok(&r, "coldsync after a new snapshot");
	run_result_dispose(&r);
	char *head = git_ok(cold, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_assert_str_eq(head, id);
}

/* ------------------------------------------------------------------ */
/* --read-data: each distinct chunk once, on worker threads            */

/* `verify --read-data --json [--threads N]` of a clean archive: its summary line. */
static char *json_summary(const char *arch, const char *threads)
{
	run_result r;
	amber(&r, "verify", arch, "--read-data", "--json", threads ? "--threads" : NULL, threads,
	      NULL);
	assert_ok(&r, "verify --read-data --json");
	char **objs = NULL;
	size_t n = json_lines(r.out, &objs);
	cr_assert_gt(n, 0, "no JSON from verify --json: %s", r.out);
	char *last = objs[n - 1];
	for (size_t i = 0; i + 1 < n; i++)
		free(objs[i]);
	free(objs);
	cr_assert(json_valid(last), "not JSON: %s", last);
	char *type = json_get(last, "type", NULL);
	cr_assert(type && !strcmp(type, "summary"), "the last line is the summary: %s", r.out);
	free(type);
	run_result_dispose(&r);
	return last;
}

Test(verify, read_data_decodes_each_distinct_chunk_once_however_many_snapshots_share_it)
{
	char s1[41], s2[41], id[41], *src = NULL;
	char *arch = two_snapshots(s1, s2, &src);
	char *one = json_summary(arch, NULL);
	long long chunks = json_get_ll(one, "chunks"), data = json_get_ll(one, "data_bytes");
	cr_assert_gt(chunks, 4, "the 5 MiB file alone has several chunks: %s", one);
	cr_assert_gt(json_get_ll(one, "archive_bytes"), 5 << 20, "%s", one);
	cr_assert_gt(json_get_ll(one, "chunk_bytes"), 5 << 20, "%s", one);
	/* four more snapshots that change one small file each: four new chunks;
	 * decoding per snapshot would decode the big file's chunks four more times */
	long long added = 0;
	for (int i = 3; i <= 6; i++) {
		char *text = xasprintf("CONTENTMARKER version %d\n", i);
		write_str(pjoin(src, "NAMEMARKER_notes.txt"), text);
		added += (long long)strlen(text);
		amber_snapshot_ok(id, arch, src, NULL);
		free(text);
	}
	char *six = json_summary(arch, NULL);
	cr_assert_eq(json_get_ll(six, "snapshots"), 6, "%s", six);
	cr_assert_eq(json_get_ll(six, "chunks"), chunks + 4, "each distinct chunk once: %s", six);
	cr_assert_eq(json_get_ll(six, "data_bytes"), data + added, "%s", six);
	cr_assert_eq(json_get_ll(six, "problems"), 0);
	/* the rates, and the threads: one per CPU by default, else as asked */
	char *rate = json_get(six, "archive_mib_per_s", NULL), *drate = json_get(six,
		"data_mib_per_s", NULL);
	cr_assert(rate && drate, "the summary gives both rates: %s", six);
	free(rate);
	free(drate);
	cr_assert_eq(json_get_ll(six, "threads"), sysconf(_SC_NPROCESSORS_ONLN), "%s", six);
	char *three = json_summary(arch, "3");
	cr_assert_eq(json_get_ll(three, "threads"), 3, "%s", three);
	cr_assert_eq(json_get_ll(three, "chunks"), chunks + 4, "%s", three);
	run_result r;
	amber(&r, "verify", arch, "--read-data", NULL);
	assert_ok(&r, "verify --read-data");
	cr_assert(strstr(r.out, "of archive checked in") && strstr(r.out, "of file data in") &&
		  strstr(r.out, "chunks decoded ("), "the summary gives both rates: %s", r.out);
	run_result_dispose(&r);
	free(one);
	free(six);
	free(three);
}

/* The report of `verify --read-data --threads N` without its timing (the last line). */
static char *problems_with_threads(const char *arch, const char *threads, int *status)
{
	run_result r;
	amber(&r, "verify", arch, "--read-data", "--threads", threads, NULL);
	*status = r.status;
	char *end = strrchr(r.out, '\n');
	while (end && end > r.out && end[-1] != '\n')
		end--;
	char *report = xasprintf("%.*s", end ? (int)(end - r.out) : 0, r.out);
	cr_assert(strstr(r.out, "verify: "), "no summary: %s%s", r.out, r.err);
	run_result_dispose(&r);
	return report;
}

Test(verify, corrupt_chunk_is_reported_alike_with_one_thread_and_four)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, s2, NULL);
	/* a chunk of the big file: the blob entries of its chunk tree ("c00000000"...) */
	char *spec = xasprintf("%s:", s2);
	char *ls = git_ok(arch, NULL, "ls-tree", "-r", spec, NULL);
	char oid[41] = "";
	for (char *sv = NULL, *l = strtok_r(ls, "\n", &sv); l && !oid[0]; l = strtok_r(NULL, "\n", &sv)) {
		char mode[8], type[8], o[41], name[512];
		if (sscanf(l, "%7s %7s %40s\t%511s", mode, type, o, name) == 4 &&
		    strstr(name, "/c00000001"))
			memcpy(oid, o, 41);
	}
	cr_assert(oid[0], "no second chunk of the big file in the tree");
	long long off, psize;
	char *pack = locate(arch, oid, &off, &psize);
	int fd = open(pack, O_RDWR);
	cr_assert(fd >= 0);
	unsigned char c;
	off += psize / 2;
	cr_assert(pread(fd, &c, 1, off) == 1);
	c ^= 0x20;
	cr_assert(pwrite(fd, &c, 1, off) == 1);
	close(fd);
	int st1, st4;
	char *one = problems_with_threads(arch, "1", &st1);
	char *four = problems_with_threads(arch, "4", &st4);
	cr_assert_eq(st1, 1, "verify --threads 1 exits 1: %s", one);
	cr_assert_eq(st4, 1, "verify --threads 4 exits 1: %s", four);
	cr_assert_str_eq(one, four, "the same report with 1 and 4 threads");
	cr_assert(strstr(one, oid), "the report names the bad chunk %s:\n%s", oid, one);
	cr_assert(strstr(one, "; path /big"), "and the file that uses it:\n%s", one);
	cr_assert(strstr(one, s1) && strstr(one, s2), "in both snapshots:\n%s", one);
	free(one);
	free(four);
}
