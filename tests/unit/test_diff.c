/* Native diff of two snapshots: kinds, order, ranges, metadata. */
#include "libfix.h"

#include <sys/xattr.h>

static void setup(void)
{
	scratch_make("diff");
	mkdir(at("src"), 0755);
	put_file("src/keep", "same\n");
	put_file("src/mod", "0123456789\n");
	put_file("src/gone", "bye\n");
	put_file("src/attr", "x\n");
}

TestSuite(diff, .init = setup, .fini = scratch_remove);

struct seen {
	char lines[16][64];
	int n;
};

static int collect(const amber_change *c, void *payload)
{
	struct seen *s = payload;

	cr_assert_lt(s->n, 16);
	snprintf(s->lines[s->n++], 64, "%c %s", c->kind, c->path);
	return 0;
}

Test(diff, changes_come_in_name_order_with_their_kind)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s1 = NULL, *s2 = NULL;
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1];
	struct seen seen = {0};
	const char *want[] = {"m attr", "D gone", "M mod", "A new"};

	fix_snapshot(id1, a, 1);
	put_file("src/mod", "0123456789 and more\n");
	unlink(at("src/gone"));
	put_file("src/new", "hello\n");
	cr_assert_eq(setxattr(at("src/attr"), "user.k", "vv", 2, 0), 0);
	fix_snapshot(id2, a, 2);
	OK(amber_snapshot_open(&s1, a, id1));
	OK(amber_snapshot_open(&s2, a, id2));
	OK(amber_diff(s1, s2, "", 0, collect, &seen));
	cr_assert_eq(seen.n, 4, "got %d changes", seen.n);
	for (int i = 0; i < 4; i++)
		cr_assert_str_eq(seen.lines[i], want[i]);
	amber_snapshot_free(s1);
	amber_snapshot_free(s2);
	amber_archive_free(a);
}

static int appended(const amber_change *c, void *payload)
{
	*(uint64_t *)payload = c->appended;
	return 0;
}

Test(diff, an_append_is_reported_as_one)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s1 = NULL, *s2 = NULL;
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1];
	uint64_t app = 0;

	fix_snapshot(id1, a, 1);
	put_file("src/mod", "0123456789\nABC");
	fix_snapshot(id2, a, 2);
	OK(amber_snapshot_open(&s1, a, id1));
	OK(amber_snapshot_open(&s2, a, id2));
	OK(amber_diff(s1, s2, "mod", 1, appended, &app));
	cr_assert_eq(app, 3);
	amber_snapshot_free(s1);
	amber_snapshot_free(s2);
	amber_archive_free(a);
}

Test(diff, identical_snapshots_have_no_changes)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s1 = NULL, *s2 = NULL;
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1];
	struct seen seen = {0};

	fix_snapshot(id1, a, 1);
	fix_snapshot(id2, a, 2);
	OK(amber_snapshot_open(&s1, a, id1));
	OK(amber_snapshot_open(&s2, a, id2));
	OK(amber_diff(s1, s2, "", 1, collect, &seen));
	cr_assert_eq(seen.n, 0);
	amber_snapshot_free(s1);
	amber_snapshot_free(s2);
	amber_archive_free(a);
}
