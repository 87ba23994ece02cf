/*
 * Guards that keep an archive honest, each through the real binary: the
 * marks verify keeps between runs, a snapshot's tag, the files cache's
 * trust in stat data, the read-back before a ref moves, the pack's fsync
 * before its rename, and the order of snapshot times along a stream.
 */
#include "helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(integrity, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

/* A tiny source tree; returns its path. */
static char *small_src(void)
{
	char *src = pjoin(IT.tmp, "src");

	mkdir_p(src, 0755);
	write_str(pjoin(src, "a.txt"), "first file\n");
	write_random_file(pjoin(src, "b.bin"), 300000, 5, 0);
	return src;
}

/* `amberfs verify ARCHIVE [extra]`: assert it is clean. */
static void verify_clean(const char *arch, const char *extra, const char *what)
{
	run_result r;

	amber(&r, "verify", arch, extra, NULL);
	cr_assert_eq(r.status, 0, "%s: verify exit %d\nstdout: %s\nstderr: %s", what, r.status,
		     r.out, r.err);
	cr_assert(strstr(r.out, "verify: 0 problems"), "%s: %s", what, r.out);
	run_result_dispose(&r);
}

/* Put `slot_blob` in place of keys/slot-0 in a new refs/amberfs/meta commit. */
static void replace_slot0(const char *arch, const char *slot_blob)
{
	char *ls = git_ok(arch, NULL, "ls-tree", "refs/amberfs/meta^{tree}", NULL);
	char *in = pjoin(IT.tmp, "mktree.in"), *kin = pjoin(IT.tmp, "keys.in");
	FILE *f = fopen(in, "w");
	char *line, *save = NULL;

	cr_assert(f);
	write_str(kin, line = xasprintf("100644 blob %s\tslot-0\n", slot_blob));
	for (char *l = strtok_r(ls, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char mode[8], type[8], o[41], name[80];

		cr_assert(sscanf(l, "%7s %7s %40s\t%79s", mode, type, o, name) == 4);
		if (!strcmp(name, "keys")) {
			char *kt = git_ok(arch, kin, "mktree", NULL);
			memcpy(o, kt, 41);
			free(kt);
		}
		fprintf(f, "%s %s %s\t%s\n", mode, type, o, name);
	}
	fclose(f);
	char *tree = git_ok(arch, in, "mktree", NULL), *msg = pjoin(IT.tmp, "meta.msg");
	write_str(msg, "amberfs archive metadata\n");
	char *c = git_ok(arch, NULL, "commit-tree", tree, "-p", "refs/amberfs/meta", "-F", msg,
			 NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/amberfs/meta", c, NULL));
	free(ls), free(in), free(kin), free(line), free(tree), free(msg), free(c);
}

/* keys/slot-0 of a new archive with another passphrase, stored in arch. */
static char *foreign_slot(const char *arch)
{
	char *other = pjoin(IT.tmp, "other"), *opass = pjoin(IT.tmp, "other.pass");
	char *slot = pjoin(IT.tmp, "slot");
	run_result r;

	write_passfile(opass, "another passphrase entirely");
	amber(&r, "init", other, "--passphrase-file", opass, NULL);
	assert_ok(&r, "init other");
	run_result_dispose(&r);
	char *blob = git_ok(other, NULL, "rev-parse", "refs/amberfs/meta:keys/slot-0", NULL);
	char *spec = xasprintf("%s", blob);
	char *gd = xasprintf("--git-dir=%s", other);
	run_opts so = { .stdout_path = slot };
	run_cmd(&r, &so, "git", gd, "cat-file", "blob", spec, NULL);
	assert_ok(&r, "cat-file slot");
	run_result_dispose(&r);
	char *mine = git_ok(arch, NULL, "hash-object", "-w", slot, NULL);
	free(other), free(opass), free(slot), free(blob), free(spec), free(gd);
	return mine;
}

/*
 * The key slots' mark and a stream's mark must be different files: a
 * stream named "keyslots" once shared its mark with the slots, so the
 * second verify saw the slot list where the stream's tip should be.
 */
Test(integrity, stream_named_keyslots_verifies_twice_and_slot_swap_is_seen)
{
	char *src = small_src(), *arch = pjoin(IT.tmp, "archive");
	const char *const extra[] = { "--stream", "keyslots", NULL };
	char id1[41], id2[41];

	amber_init_archive(arch, 0);
	amber_snapshot_ok(id1, arch, src, NULL);
	amber_snapshot_ok(id2, arch, src, extra);
	verify_clean(arch, "--no-key", "first verify");
	verify_clean(arch, "--no-key", "second verify");
	verify_clean(arch, NULL, "third verify, with the key");

	replace_slot0(arch, foreign_slot(arch));
	run_result r;
	amber(&r, "verify", arch, "--no-key", NULL);
	cr_assert_eq(r.status, 1, "a swapped slot is a problem: %s\n%s", r.out, r.err);
	cr_assert(contains_nocase(r.out, "slot 0 was replaced"), "%s", r.out);
	cr_assert(!contains_nocase(r.out, "rewritten"), "the stream is untouched: %s", r.out);
	run_result_dispose(&r);
}

/* Number of commits on refs/heads/main. */
static long commits_on_main(const char *arch)
{
	char *n = git_ok(arch, NULL, "rev-list", "--count", "refs/heads/main", NULL);
	long v = strtol(n, NULL, 10);

	free(n);
	return v;
}

/* `snapshot --tag tag` must fail with exit 1 and leave main where it was. */
static void tag_refused(const char *arch, const char *src, const char *tag, const char *word)
{
	long before = commits_on_main(arch);
	char *tip = git_ok(arch, NULL, "rev-parse", "refs/heads/main", NULL);
	run_result r;

	amber(&r, "snapshot", arch, src, "--tag", tag, NULL);
	assert_exit(&r, 1, tag);
	assert_one_error_line(&r, tag);
	cr_assert(contains_nocase(r.err, word), "--tag %s: stderr should say '%s': %s", tag, word,
		  r.err);
	run_result_dispose(&r);
	cr_assert_eq(commits_on_main(arch), before, "--tag %s: no snapshot may be written", tag);
	char *now = git_ok(arch, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_assert_str_eq(now, tip, "--tag %s: main must not move", tag);
	free(tip), free(now);
}

Test(integrity, snapshot_refuses_an_existing_or_invalid_tag_before_writing)
{
	char *src = small_src(), *arch = pjoin(IT.tmp, "archive");
	const char *const extra[] = { "--tag", "release", NULL };
	char id[41];

	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, extra);
	write_str(pjoin(src, "a.txt"), "changed\n");
	tag_refused(arch, src, "release", "exists");
	/* valid for amberfs's name check, refused by git at the ref */
	tag_refused(arch, src, "release.", "invalid tag name");
}

/*
 * A tag that fails only when it is created (a git process holds its lock)
 * comes after the snapshot is visible: the id is still printed, the exit
 * status is 3 and the message says the snapshot exists without its tag.
 */
Test(integrity, tag_failing_after_the_snapshot_still_prints_its_id)
{
	char *src = small_src(), *arch = pjoin(IT.tmp, "archive");
	char first[41];
	run_result r;

	amber_init_archive(arch, 0);
	amber_snapshot_ok(first, arch, src, NULL);
	mkdir_p(pjoin(arch, "refs/tags"), 0755);
	write_str(pjoin(arch, "refs/tags/late.lock"), "");
	write_str(pjoin(src, "a.txt"), "changed\n");
	amber(&r, "snapshot", arch, src, "--tag", "late", NULL);
	assert_exit(&r, 3, "snapshot --tag with the tag's lock held");
	cr_assert_eq(r.out_len, 41, "stdout is the id: '%s'", r.out);
	r.out[40] = '\0';
	char *tip = git_ok(arch, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_assert_str_eq(r.out, tip, "the printed id is the new tip of main");
	cr_assert_str_neq(tip, first, "a new snapshot was written");
	cr_assert(strstr(r.err, "was written") && strstr(r.err, "tag 'late' was not created"),
		  "stderr says the snapshot exists without its tag: %s", r.err);
	run_result_dispose(&r);
	amber(&r, "verify", arch, NULL);
	assert_ok(&r, "the snapshot without its tag verifies");
	run_result_dispose(&r);
	unlink(pjoin(arch, "refs/tags/late.lock"));
	amber(&r, "tag", arch, tip, "late", NULL);
	assert_ok(&r, "the tag can be created afterwards");
	run_result_dispose(&r);
	free(tip);
}
