/* Resolving specs, listing directories and reading files of snapshots. */
#include "libfix.h"

static void setup(void)
{
	scratch_make("reader");
	mkdir(at("src"), 0755);
	put_file("src/b", "second\n");
	put_file("src/a", "first\n");
	put_file("src/c", "third\n");
}

TestSuite(reader, .init = setup, .fini = scratch_remove);

Test(reader, specs_resolve_to_the_snapshot_in_force)
{
	amber_archive *a = fix_archive(0);
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1], got[AMBER_OID_HEXSZ + 1];
	char prefix[8], spec[64];

	fix_snapshot(id1, a, 10);
	put_file("src/a", "changed\n");
	fix_snapshot(id2, a, 20);
	OK(amber_resolve(got, a, NULL, "latest"));
	cr_assert_str_eq(got, id2);
	snprintf(spec, sizeof(spec), "@%lld", (long long)(T0 / 1000000000 + 15));
	OK(amber_resolve(got, a, NULL, spec));
	cr_assert_str_eq(got, id1, "@T between the two must give the earlier");
	snprintf(spec, sizeof(spec), "@%lld", (long long)(T0 / 1000000000 + 5));
	cr_assert_eq(amber_resolve(got, a, NULL, spec), AMBER_ENOTFOUND);
	memcpy(prefix, id1, 7);
	prefix[7] = '\0';
	OK(amber_resolve(got, a, NULL, prefix));
	cr_assert_str_eq(got, id1);
	cr_assert_eq(amber_resolve(got, a, NULL, "no-such-tag"), AMBER_ENOTFOUND);
	amber_archive_free(a);
}

Test(reader, a_directory_lists_in_name_order)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_entry *root = NULL;
	amber_dir *d = NULL;
	char id[AMBER_OID_HEXSZ + 1];
	const char *want[] = {"a", "b", "c"};

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&root, s, ""));
	OK(amber_dir_open(&d, s, root));
	cr_assert_eq(amber_dir_count(d), 3);
	for (size_t i = 0; i < 3; i++)
		cr_assert_str_eq(amber_dir_entry(d, i)->name, want[i]);
	cr_assert_not_null(amber_dir_lookup(d, "b", 1));
	cr_assert_null(amber_dir_lookup(d, "z", 1));
	amber_dir_free(d);
	amber_entry_free(root);
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(reader, reads_at_and_past_the_end_return_what_is_there)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_entry *e = NULL;
	char id[AMBER_OID_HEXSZ + 1];
	uint8_t buf[64];
	size_t n = 99;

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&e, s, "c"));
	OK(amber_file_read(&n, s, e, 3, buf, sizeof(buf)));
	cr_assert_eq(n, 3);
	cr_assert_eq(memcmp(buf, "rd\n", 3), 0);
	OK(amber_file_read(&n, s, e, 6, buf, sizeof(buf)));
	cr_assert_eq(n, 0, "a read at EOF returned %zu bytes", n);
	OK(amber_file_read(&n, s, e, (uint64_t)1 << 40, buf, sizeof(buf)));
	cr_assert_eq(n, 0);
	amber_entry_free(e);
	cr_assert_eq(amber_stat(&e, s, "missing"), AMBER_ENOTFOUND);
	cr_assert_eq(amber_stat(&e, s, "a/under-a-file"), AMBER_ENOTDIR);
	amber_snapshot_free(s);
	amber_archive_free(a);
}
