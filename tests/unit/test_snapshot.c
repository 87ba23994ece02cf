/* Writing snapshots through the public API, and reading them back. */
#include "libfix.h"

static void setup(void)
{
	scratch_make("snapshot");
	mkdir(at("src"), 0755);
	mkdir(at("src/d"), 0755);
	put_file("src/a", "alpha\n");
	put_file("src/d/b", "bravo\n");
}

TestSuite(snapshot, .init = setup, .fini = scratch_remove);

Test(snapshot, every_file_reads_back_as_written)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	char id[AMBER_OID_HEXSZ + 1], *x;

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	x = fix_read(s, "a");
	cr_assert_str_eq(x, "alpha\n");
	free(x);
	x = fix_read(s, "d/b");
	cr_assert_str_eq(x, "bravo\n");
	free(x);
	cr_assert_eq(amber_snapshot_info(s)->time_ns, T0 + 1000000000);
	cr_assert_str_eq(amber_snapshot_info(s)->stream, "main");
	cr_assert_str_eq(amber_snapshot_info(s)->parent, "");
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(snapshot, a_second_snapshot_has_the_first_as_parent_and_sees_the_change)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1], *x;

	fix_snapshot(id1, a, 1);
	put_file("src/a", "alpha two\n");
	fix_snapshot(id2, a, 2);
	cr_assert_str_neq(id1, id2);
	OK(amber_snapshot_open(&s, a, id2));
	cr_assert_str_eq(amber_snapshot_info(s)->parent, id1);
	x = fix_read(s, "a");
	cr_assert_str_eq(x, "alpha two\n");
	free(x);
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(snapshot, an_unchanged_tree_keeps_its_root_tree)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s1 = NULL, *s2 = NULL;
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id1, a, 1);
	fix_snapshot(id2, a, 2);
	OK(amber_snapshot_open(&s1, a, id1));
	OK(amber_snapshot_open(&s2, a, id2));
	cr_assert_str_eq(amber_snapshot_info(s1)->tree, amber_snapshot_info(s2)->tree,
			 "dedup: an unchanged tree must reuse every object");
	amber_snapshot_free(s1);
	amber_snapshot_free(s2);
	amber_archive_free(a);
}

Test(snapshot, a_time_not_after_the_tip_is_refused_and_writes_nothing)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot_opts so = {.version = AMBER_SNAPSHOT_OPTS_VERSION,
		.threads = 1, .time_ns = T0};
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1], tip[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id1, a, 1);
	cr_assert_lt(amber_snapshot_create(id2, NULL, a, at("src"), &so), 0,
		     "a snapshot older than its parent was written");
	OK(amber_resolve(tip, a, NULL, "latest"));
	cr_assert_str_eq(tip, id1);
	amber_archive_free(a);
}

Test(snapshot, a_missing_source_is_enotfound_and_a_bad_stream_einval)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot_opts so = {.version = AMBER_SNAPSHOT_OPTS_VERSION,
		.threads = 1, .stream = "bad/../name"};
	char id[AMBER_OID_HEXSZ + 1];

	cr_assert_eq(amber_snapshot_create(id, NULL, a, at("nowhere"), NULL), AMBER_ENOTFOUND);
	cr_assert_eq(amber_snapshot_create(id, NULL, a, at("src"), &so), AMBER_EINVAL);
	cr_assert_eq(amber_resolve(id, a, NULL, "latest"), AMBER_ENOTFOUND);
	amber_archive_free(a);
}

Test(snapshot, a_locked_archive_cannot_be_written)
{
	amber_archive *b = NULL;
	amber_open_opts o = fix_open_opts();
	char id[AMBER_OID_HEXSZ + 1];

	amber_archive_free(fix_archive(0));
	OK(amber_archive_open_ext(&b, at("archive"), &o));
	cr_assert_eq(amber_snapshot_create(id, NULL, b, at("src"), NULL), AMBER_ENEEDKEY);
	amber_archive_free(b);
}
