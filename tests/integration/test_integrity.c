/*
 * Guards that keep an archive honest, each through the real binary: the
 * marks verify keeps between runs, a snapshot's tag, the files cache's
 * trust in stat data, the read-back before a ref moves, the pack's fsync
 * before its rename, and the order of snapshot times along a stream.
 */
#include "helpers.h"

#include <dirent.h>
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
	char *blob = git_ok(other, NULL, "rev-parse", "refs/amberfs/meta:keys/slot-00", NULL);
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
	cr_assert(contains_nocase(r.out, "was added or replaced since the last verify"), "%s", r.out);
	cr_assert(!contains_nocase(r.out, "rewritten"), "the stream is untouched: %s", r.out);
	run_result_dispose(&r);
}

/* The archive's own directory in the cache (the only one there). */
static char *archive_cache_dir(void)
{
	DIR *d = opendir(IT.cache);
	struct dirent *e;
	char *dir = NULL;

	cr_assert(d, "cache directory %s", IT.cache);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			dir = pjoin(IT.cache, e->d_name);
	closedir(d);
	cr_assert(dir, "no archive directory in %s", IT.cache);
	return dir;
}

/* A slot mark left by an older version (verified-keyslots) is still used. */
Test(integrity, slot_mark_of_an_older_version_still_notices_a_swap)
{
	char *src = small_src(), *arch = pjoin(IT.tmp, "archive");
	char id[41];
	run_result r;

	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	verify_clean(arch, "--no-key", "first verify");
	char *dir = archive_cache_dir();
	char *now = pjoin(dir, "verified-.keyslots"), *old = pjoin(dir, "verified-keyslots");
	cr_assert_eq(rename(now, old), 0, "the slot mark is %s", now);
	replace_slot0(arch, foreign_slot(arch));
	amber(&r, "verify", arch, "--no-key", NULL);
	cr_assert_eq(r.status, 1, "a swapped slot is a problem: %s\n%s", r.out, r.err);
	cr_assert(contains_nocase(r.out, "was added or replaced since the last verify"), "%s", r.out);
	run_result_dispose(&r);
	free(dir), free(now), free(old);
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

/*
 * The files cache trusts a file only if size, inode, mtime and ctime are
 * all unchanged.  A rewrite of the same size whose mtime is put back (touch
 * -d, as a restore tool or build system might) changes only the ctime.
 */
Test(integrity, rewrite_with_same_size_and_mtime_is_stored_again)
{
	char *src = pjoin(IT.tmp, "src"), *f = pjoin(IT.tmp, "src/same.txt");
	char id1[41], id2[41], *arch = pjoin(IT.tmp, "archive");
	struct stat before, after;
	run_result r;

	mkdir_p(src, 0755);
	write_str(f, "version one, forty bytes long......\n");
	cr_assert_eq(system(xasprintf("touch -d '2020-01-02 03:04:05.123456789' '%s'", f)), 0);
	amber_init_archive(arch, 0);
	sleep_s(1.2); /* out of the files cache's trust window (ctime too) */
	amber_snapshot_ok(id1, arch, src, NULL);
	cr_assert_eq(stat(f, &before), 0);
	write_str(f, "version TWO, forty bytes long......\n");
	cr_assert_eq(system(xasprintf("touch -d '2020-01-02 03:04:05.123456789' '%s'", f)), 0);
	cr_assert_eq(stat(f, &after), 0);
	cr_assert(before.st_size == after.st_size && before.st_ino == after.st_ino &&
		  before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
		  before.st_mtim.tv_nsec == after.st_mtim.tv_nsec, "only the ctime differs");
	amber_snapshot_ok(id2, arch, src, NULL);
	char *spec = xasprintf("%s:same.txt", id2);
	amber(&r, "cat", arch, spec, NULL);
	assert_ok(&r, "cat the second snapshot's file");
	cr_assert_str_eq(r.out, "version TWO, forty bytes long......\n",
			 "the rewritten content is stored");
	run_result_dispose(&r);
}

/* ASAN_OPTIONS that tolerate a preloaded library ahead of the ASan runtime. */
static char *asan_preload_options(void)
{
	const char *cur = getenv("ASAN_OPTIONS");

	return xasprintf("ASAN_OPTIONS=%s%sverify_asan_link_order=0", cur ? cur : "",
			 cur && *cur ? ":" : "");
}

/*
 * Every new object is read back before the stream's ref moves.  The shim
 * flips a byte of the new pack after its checksum was computed, as a bad
 * disk or controller might: only the read-back can notice, and then the
 * snapshot is refused and the ref stays where it was.
 */
Test(integrity, pack_corrupted_before_the_read_back_is_refused)
{
	char *src = small_src(), *arch = pjoin(IT.tmp, "archive");
	char *preload = xasprintf("LD_PRELOAD=%s", CORRUPT_PACK_SHIM), *asan = asan_preload_options();
	const char *const env[] = { preload, asan, NULL };
	run_opts o = { .env = env };
	char first[41];
	run_result r;

	cr_assert_eq(access(CORRUPT_PACK_SHIM, R_OK), 0, "shim %s is built", CORRUPT_PACK_SHIM);
	amber_init_archive(arch, 0);
	amber_snapshot_ok(first, arch, src, NULL);
	write_random_file(pjoin(src, "c.bin"), 400000, 9, 0);
	amber_o(&r, &o, "snapshot", arch, src, NULL);
	assert_exit(&r, 1, "snapshot whose pack was corrupted on its way into place");
	cr_assert(strstr(r.err, "read-back check"), "the read-back names the object: %s", r.err);
	cr_assert_eq(r.out_len, 0, "no id is printed: %s", r.out);
	run_result_dispose(&r);
	char *tip = git_ok(arch, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_assert_str_eq(tip, first, "the ref did not move");
	free(tip), free(preload), free(asan);
}

/* Index of the first line of `lines` at or after `from` containing a and b. */
static long find_line(char **lines, long n, long from, const char *a, const char *b)
{
	for (long i = from; i < n; i++)
		if (strstr(lines[i], a) && (!b || strstr(lines[i], b)))
			return i;
	return -1;
}

/* The lines of a file (in place; the array is malloc'd). */
static long split_lines(char *text, char ***out)
{
	long n = 0;
	char **v = NULL;

	for (char *p = text; p && *p;) {
		char *e = strchr(p, '\n');

		v = realloc(v, (size_t)(n + 1) * sizeof(*v));
		cr_assert(v);
		v[n++] = p;
		if (e)
			*e++ = '\0';
		p = e;
	}
	*out = v;
	return n;
}

/*
 * The pack is durable before git can see it: its file descriptor is
 * fsynced before the .pack is renamed into objects/pack/.  strace -y names
 * the file behind each descriptor.
 */
Test(integrity, pack_is_fsynced_before_its_rename_into_place)
{
	char *src = small_src(), *arch = pjoin(IT.tmp, "archive");
	char *trace = pjoin(IT.tmp, "strace.out");
	const char *const prefix[] = { "strace", "-f", "-y", "-qq", "-o", trace, "-e",
				       "trace=fsync,fdatasync,rename,renameat,renameat2", NULL };
	run_opts o = { .prefix = prefix };
	char **lines;
	run_result r;

	amber_init_archive(arch, 0);
	amber_o(&r, &o, "snapshot", arch, src, NULL);
	assert_ok(&r, "snapshot under strace");
	run_result_dispose(&r);
	long n = split_lines(read_file(trace, NULL), &lines);
	long ren = find_line(lines, n, 0, "amberfs-tmp/pack-", ".pack\"");
	cr_assert(ren >= 0, "a rename of the new pack into objects/pack in the trace");
	char *tmp = strstr(lines[ren], "amberfs-tmp/pack-");
	char name[64];
	cr_assert_eq(sscanf(tmp, "amberfs-tmp/%40[A-Za-z0-9_-]", name), 1);
	long sync = -1;
	for (long i = 0; i < ren && sync < 0; i++)
		if ((strstr(lines[i], "fsync(") || strstr(lines[i], "fdatasync(")) &&
		    strstr(lines[i], name) && strstr(lines[i], ">)"))
			sync = i;
	cr_assert(sync >= 0, "fd of %s is fsynced before line %ld: %s", name, ren, lines[ren]);
	free(lines);
}

/*
 * Two genuine snapshot commits put in the wrong order: the older one's
 * exact commit (tree, idents, trailers, its real record) on top of the
 * newer one's.  Without the key nothing but the order of times gives it
 * away, so verify --no-key must report times that do not increase.
 */
Test(integrity, stream_whose_times_go_back_fails_verify)
{
	char *src = small_src(), *arch = pjoin(IT.tmp, "archive");
	char c1[41], c2[41];
	run_result r;

	amber_init_archive(arch, 0);
	amber_snapshot_ok(c1, arch, src, NULL);
	write_str(pjoin(src, "a.txt"), "second\n");
	amber_snapshot_ok(c2, arch, src, NULL);
	/* X: c2's commit without its parent; Y: c1's commit with parent X */
	char *raw2 = git_ok(arch, NULL, "cat-file", "commit", c2, NULL);
	char *par = strstr(raw2, "\nparent ");
	cr_assert(par, "c2 has a parent line: %s", raw2);
	memmove(par, par + 48, strlen(par + 48) + 1);
	char *in = pjoin(IT.tmp, "x.commit");
	write_str(in, xasprintf("%s\n", raw2));
	char *x = git_ok(arch, in, "hash-object", "-t", "commit", "-w", "--stdin", NULL);
	char *raw1 = git_ok(arch, NULL, "cat-file", "commit", c1, NULL);
	char *nl = strchr(raw1, '\n');
	cr_assert(nl && !strstr(raw1, "\nparent "));
	*nl = '\0';
	write_str(in, xasprintf("%s\nparent %s\n%s\n", raw1, x, nl + 1));
	char *y = git_ok(arch, in, "hash-object", "-t", "commit", "-w", "--stdin", NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", y, NULL));

	amber(&r, "verify", arch, "--no-key", NULL);
	cr_assert_eq(r.status, 1, "verify --no-key exit %d: %s\n%s", r.status, r.out, r.err);
	cr_assert(strstr(r.out, "times must strictly increase"), "%s", r.out);
	cr_assert(!strstr(r.out, "not the one amberfs writes"), "the commits are amberfs's own: %s",
		  r.out);
	run_result_dispose(&r);
	free(raw1), free(raw2), free(x), free(y), free(in);
}

/* ------------------------------------------------------------------ */
/* st_ino through a real mount                                         */

static char *mnt_path;

static void unmount_then_teardown(void)
{
	run_result r;

	if (mnt_path) {
		run_cmd(&r, NULL, "fusermount3", "-u", mnt_path, NULL);
		if (r.status != 0) {
			run_result_dispose(&r);
			run_cmd(&r, NULL, "umount", "-l", mnt_path, NULL);
		}
		run_result_dispose(&r);
	}
	itest_teardown();
}

static ino_t ino_at(const char *mnt, const char *tag, const char *rel)
{
	char *p = xasprintf("%s/tags/%s/%s", mnt, tag, rel);
	struct stat st;

	cr_assert_eq(lstat(p, &st), 0, "lstat %s", p);
	free(p);
	return st.st_ino;
}

/*
 * st_ino is the identity of an entry's content and metadata: a chmod alone
 * must give the file a new st_ino (tools that compare trees by st_ino
 * would otherwise miss it), while an untouched file keeps its number.
 */
Test(integrity, chmod_between_snapshots_changes_st_ino_through_the_mount,
     .fini = unmount_then_teardown)
{
	char *src = small_src(), *arch = pjoin(IT.tmp, "archive");
	const char *const t1[] = { "--tag", "one", NULL }, *const t2[] = { "--tag", "two", NULL };
	char id1[41], id2[41];
	run_result r;

	amber_init_archive(arch, 0);
	amber_snapshot_ok(id1, arch, src, t1);
	cr_assert_eq(chmod(pjoin(src, "a.txt"), 0600), 0);
	amber_snapshot_ok(id2, arch, src, t2);
	mnt_path = pjoin(IT.tmp, "mnt");
	mkdir_p(mnt_path, 0755);
	amber(&r, "mount", arch, mnt_path, NULL);
	assert_ok(&r, "amberfs mount");
	run_result_dispose(&r);
	cr_assert_eq(ino_at(mnt_path, "one", "b.bin"), ino_at(mnt_path, "two", "b.bin"),
		     "the untouched file keeps its st_ino");
	cr_assert_neq(ino_at(mnt_path, "one", "a.txt"), ino_at(mnt_path, "two", "a.txt"),
		      "the chmodded file gets another st_ino");
	struct stat st;
	char *p = xasprintf("%s/tags/two/a.txt", mnt_path);
	cr_assert(lstat(p, &st) == 0 && (st.st_mode & 07777) == 0600, "mode through the mount");
	free(p);
}

/*
 * A copy of an archive (same archive id) that shares the user's cache must
 * not reference chunks that only the original holds: the chunk cache says
 * which chunks a run stored, not which this store has.
 */
Test(integrity, a_copy_sharing_the_cache_stores_its_own_chunks)
{
	char *src = pjoin(IT.tmp, "src"), *a = pjoin(IT.tmp, "a"), *b = pjoin(IT.tmp, "b");
	char *out = pjoin(IT.tmp, "out"), id[41];
	run_result r;

	mkdir_p(src, 0755);
	write_str(pjoin(src, "old"), "before the copy\n");
	amber_init_archive(a, 0);
	amber_snapshot_ok(id, a, src, NULL);
	cr_assert_eq(run_cmd(&r, NULL, "cp", "-a", a, b, NULL), 0, "cp -a: %s", r.err);
	run_result_dispose(&r);
	write_random_file(pjoin(src, "new"), 3 << 20, 42, 0);
	amber_snapshot_ok(id, a, src, NULL);
	amber_snapshot_ok(id, b, src, NULL);
	assert_fsck(b);
	cr_assert_eq(amber(&r, "restore", b, id, out, "--passphrase-file", IT.passfile, NULL), 0,
		     "restore from the copy: %s", r.err);
	run_result_dispose(&r);
	assert_trees_equal(src, out, 0, "the copy's snapshot");
}
