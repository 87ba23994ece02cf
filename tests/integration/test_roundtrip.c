/*
 * Snapshot -> restore gives back the source exactly (the awkward tree,
 * encrypted and plain, whole and a subpath); archives are valid git
 * repositories that replicate with `git clone --mirror` (invariant 1);
 * dedup survives encryption (invariant 4).
 */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(roundtrip, .init = itest_setup, .fini = itest_teardown, .timeout = 600);

static char *awkward_src(void)
{
	char *src = pjoin(IT.tmp, "src");
	make_awkward_tree(src);
	return src;
}

static const char *const no_passphrase_env[] = { "AMBERFS_PASSPHRASE_FILE", NULL };

static void restore_ok(const char *arch, const char *spec, const char *dest, int plain)
{
	run_opts o = { .env = plain ? no_passphrase_env : NULL };
	run_result r;
	amber_o(&r, &o, "restore", arch, spec, dest, NULL);
	char *what = xasprintf("amberfs restore %s %s", arch, spec);
	assert_ok(&r, what);
	free(what);
	run_result_dispose(&r);
}

static void snapshot_plain_ok(char id[41], const char *arch, const char *src)
{
	run_opts o = { .env = no_passphrase_env };
	run_result r;
	amber_o(&r, &o, "snapshot", arch, src, NULL);
	assert_ok(&r, "snapshot of a plain archive without a passphrase");
	cr_assert(r.out_len >= 40 && strspn(r.out, "0123456789abcdef") == 40,
		  "snapshot should print a commit id: '%s'", r.out);
	memcpy(id, r.out, 40);
	id[40] = '\0';
	run_result_dispose(&r);
}

Test(roundtrip, awkward_tree_restores_identically_encrypted)
{
	char *src = awkward_src();
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	char *dest = pjoin(IT.tmp, "restored");
	restore_ok(arch, "latest", dest, 0);
	assert_trees_equal(src, dest, 0, "restore of the awkward tree (encrypted)");
	char *dest2 = pjoin(IT.tmp, "restored-by-id");
	restore_ok(arch, id, dest2, 0);
	assert_trees_equal(src, dest2, 0, "restore by commit id");
	assert_fsck(arch);
}

Test(roundtrip, awkward_tree_restores_identically_plain)
{
	char *src = awkward_src();
	char *arch = pjoin(IT.tmp, "archive");
	run_opts o = { .env = no_passphrase_env };
	run_result r;
	amber_o(&r, &o, "init", arch, "--plain", NULL);
	assert_ok(&r, "init --plain without a passphrase");
	run_result_dispose(&r);
	char id[41];
	snapshot_plain_ok(id, arch, src);
	char *dest = pjoin(IT.tmp, "restored");
	restore_ok(arch, "latest", dest, 1);
	assert_trees_equal(src, dest, 0, "restore of the awkward tree (plain)");
	assert_fsck(arch);
}

Test(roundtrip, subpath_restores_identically)
{
	char *src = awkward_src();
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);

	static const char *subs[] = { AWK_SUBDIR, "sizes", "modes",
				      "deep/d01/d02/d03/d04/d05/d06/d07/d08/d09/d10" };
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		char *spec = xasprintf("latest:%s", subs[i]);
		char *dest = xasprintf("%s/sub-%zu", IT.tmp, i);
		char *orig = pjoin(src, subs[i]);
		restore_ok(arch, spec, dest, 0);
		char *what = xasprintf("restore of subpath '%s'", subs[i]);
		assert_trees_equal(orig, dest, 0, what);
		free(what);
		free(spec);
		free(dest);
		free(orig);
	}
	assert_fsck(arch);
}

Test(roundtrip, mirror_clone_is_a_complete_replica)
{
	char *src = awkward_src();
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	const char *tag[] = { "--tag", "first", NULL };
	amber_snapshot_ok(id, arch, src, tag);
	char *copy = pjoin(IT.tmp, "mirror.git");
	run_result r;
	run_cmd(&r, NULL, "git", "clone", "-q", "--mirror", arch, copy, NULL);
	assert_ok(&r, "git clone --mirror");
	run_result_dispose(&r);
	assert_fsck(arch);
	assert_fsck(copy);

	char *dest = pjoin(IT.tmp, "restored");
	restore_ok(copy, "latest", dest, 0);
	assert_trees_equal(src, dest, 0, "restore from a mirror clone");
	char *dest2 = pjoin(IT.tmp, "restored-tag");
	restore_ok(copy, "first", dest2, 0);
	assert_trees_equal(src, dest2, 0, "restore of a tag from a mirror clone");
	amber(&r, "log", copy, "--json", NULL);
	assert_ok(&r, "log of a mirror clone");
	cr_assert(strstr(r.out, id), "the mirror's log should list %s:\n%s", id, r.out);
	run_result_dispose(&r);
	assert_fsck(copy);
}

Test(roundtrip, unchanged_tree_second_snapshot_adds_almost_nothing)
{
	char *src = awkward_src();
	char *arch = pjoin(IT.tmp, "archive");
	char *objs = pjoin(arch, "objects");
	amber_init_archive(arch, 0);
	char id1[41], id2[41], id3[41];
	amber_snapshot_ok(id1, arch, src, NULL);
	uint64_t s1 = du_bytes(objs);
	amber_snapshot_ok(id2, arch, src, NULL);
	uint64_t s2 = du_bytes(objs);
	cr_assert(s2 - s1 < 64u << 10,
		  "second snapshot of an unchanged tree grew objects/ by %llu bytes (limit 64 KiB)",
		  (unsigned long long)(s2 - s1));
	const char *nocache[] = { "--no-cache", NULL };
	amber_snapshot_ok(id3, arch, src, nocache);
	uint64_t s3 = du_bytes(objs);
	cr_assert(s3 - s2 < 64u << 10,
		  "--no-cache snapshot of an unchanged tree grew objects/ by %llu bytes (limit 64 KiB)",
		  (unsigned long long)(s3 - s2));
	cr_assert(strcmp(id1, id2) && strcmp(id2, id3), "each snapshot is a new commit");
	char *dest = pjoin(IT.tmp, "restored");
	restore_ok(arch, id3, dest, 0);
	assert_trees_equal(src, dest, 0, "restore of the --no-cache snapshot");
	assert_fsck(arch);
}

/* The same property at a quarter of the size under ASan, which is slow to write it. */
#ifdef __SANITIZE_ADDRESS__
#define HUGE_MIB 128
#else
#define HUGE_MIB 512
#endif

Test(roundtrip, append_to_huge_file_stores_only_the_tail, .timeout = 900)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	char *big = pjoin(src, "huge");
	write_random_file(big, (uint64_t)HUGE_MIB << 20, 2024, 0);
	char *arch = pjoin(IT.tmp, "archive");
	char *objs = pjoin(arch, "objects");
	amber_init_archive(arch, 0);
	char id1[41], id2[41];
	amber_snapshot_ok(id1, arch, src, NULL);
	uint64_t s1 = du_bytes(objs);
	cr_assert(s1 >= (uint64_t)HUGE_MIB << 20, "%d MiB of random data stored in %llu bytes?",
		  HUGE_MIB, (unsigned long long)s1);
	write_random_file(big, (uint64_t)1 << 20, 777, 1);
	amber_snapshot_ok(id2, arch, src, NULL);
	uint64_t s2 = du_bytes(objs);
	uint64_t growth = s2 - s1;
	uint64_t lo = (uint64_t)1 << 20, hi = ((uint64_t)3 << 20) + (64u << 10);
	cr_assert(growth >= lo && growth <= hi,
		  "appending 1 MiB to a %d MiB file grew objects/ by %llu bytes "
		  "(expected between %llu and %llu)",
		  HUGE_MIB, (unsigned long long)growth, (unsigned long long)lo, (unsigned long long)hi);

	char *out = pjoin(IT.tmp, "huge.out");
	run_opts o = { .stdout_path = out };
	run_result r;
	amber_o(&r, &o, "cat", arch, "latest:huge", NULL);
	assert_ok(&r, "cat of the appended file");
	run_result_dispose(&r);
	run_cmd(&r, NULL, "cmp", big, out, NULL);
	cr_assert_eq(r.status, 0, "the appended file reads back wrong: %s%s", r.out, r.err);
	run_result_dispose(&r);
	unlink(out);
	assert_fsck(arch);
}
