/*
 * The shape of the public API: every options struct is checked by its
 * version (a zeroed struct or one from a newer library is refused with
 * AMBER_EINVAL naming its init macro, the init macro is accepted),
 * amber_entry_dup() copies an entry that outlives its listing, and the
 * stats structs are versioned: a zeroed one is refused, a newer one is
 * filled only as far as the library knows it.
 */
#include <criterion/criterion.h>

#include "libfix.h"

#include <sys/stat.h>

static amber_archive *arc;
static char id[AMBER_OID_HEXSZ + 1];

static void setup(void)
{
	scratch_make("api");
	mkdir(at("src"), 0755);
	put_file("src/a", "alpha");
	arc = fix_archive(1);
	fix_snapshot(id, arc, 1);
}

static void teardown(void)
{
	amber_archive_free(arc);
	scratch_remove();
}

TestSuite(api, .init = setup, .fini = teardown);

/* rc must be AMBER_EINVAL with a message that names the init macro. */
static void refused(int rc, const char *init)
{
	cr_assert_eq(rc, AMBER_EINVAL, "rc %d: %s", rc, amber_error_last());
	cr_assert_not_null(strstr(amber_error_last(), init), "message: %s", amber_error_last());
}

Test(api, create_opts_of_version_0_or_a_newer_one_are_refused)
{
	amber_create_opts co = AMBER_CREATE_OPTS_INIT;
	amber_archive *a = NULL;

	co.plain = 1;
	co.version = 0;
	refused(amber_archive_create(&a, at("other"), &co), "AMBER_CREATE_OPTS_INIT");
	co.version = AMBER_CREATE_OPTS_VERSION + 1;
	refused(amber_archive_create(&a, at("other"), &co), "AMBER_CREATE_OPTS_INIT");
	cr_assert_eq(access(at("other"), F_OK), -1, "a refused create wrote the archive");
	co.version = AMBER_CREATE_OPTS_VERSION;
	OK(amber_archive_create(&a, at("other"), &co));
	amber_archive_free(a);
}

Test(api, snapshot_opts_of_version_0_or_a_newer_one_are_refused)
{
	amber_snapshot_opts so = AMBER_SNAPSHOT_OPTS_INIT;
	char out[AMBER_OID_HEXSZ + 1];

	so.threads = 1;
	so.time_ns = T0 + 5000000000;
	so.version = 0;
	refused(amber_snapshot_create(out, NULL, arc, at("src"), &so), "AMBER_SNAPSHOT_OPTS_INIT");
	so.version = AMBER_SNAPSHOT_OPTS_VERSION + 1;
	refused(amber_snapshot_create(out, NULL, arc, at("src"), &so), "AMBER_SNAPSHOT_OPTS_INIT");
	OK(amber_resolve(out, arc, NULL, "latest"));
	cr_assert_str_eq(out, id, "a refused snapshot was written");
}

Test(api, writer_opts_and_their_snapshot_opts_are_checked)
{
	amber_writer_opts wo = AMBER_WRITER_OPTS_INIT;
	amber_writer *w = NULL;

	cr_assert_eq(wo.snap.version, AMBER_SNAPSHOT_OPTS_VERSION, "the init macro sets both");
	wo.version = 0;
	refused(amber_writer_open(&w, arc, at("src"), &wo), "AMBER_WRITER_OPTS_INIT");
	wo.version = AMBER_WRITER_OPTS_VERSION;
	wo.snap.version = 0;
	refused(amber_writer_open(&w, arc, at("src"), &wo), "AMBER_WRITER_OPTS_INIT");
	wo.snap.version = AMBER_SNAPSHOT_OPTS_VERSION;
	OK(amber_writer_open(&w, arc, at("src"), &wo));
	OK(amber_writer_close(w));
}

Test(api, restore_opts_of_version_0_or_a_newer_one_are_refused)
{
	amber_restore_opts ro = AMBER_RESTORE_OPTS_INIT;
	amber_snapshot *s = NULL;

	OK(amber_snapshot_open(&s, arc, id));
	ro.version = 0;
	refused(amber_restore(NULL, s, "", at("dest"), &ro), "AMBER_RESTORE_OPTS_INIT");
	ro.version = AMBER_RESTORE_OPTS_VERSION + 1;
	refused(amber_restore(NULL, s, "", at("dest"), &ro), "AMBER_RESTORE_OPTS_INIT");
	cr_assert_eq(access(at("dest"), F_OK), -1, "a refused restore wrote the destination");
	ro.version = AMBER_RESTORE_OPTS_VERSION;
	OK(amber_restore(NULL, s, "", at("dest"), &ro));
	cr_assert_eq(access(at("dest/a"), F_OK), 0);
	amber_snapshot_free(s);
}

Test(api, verify_opts_of_version_0_or_a_newer_one_are_refused)
{
	amber_verify_opts vo = AMBER_VERIFY_OPTS_INIT;
	amber_verify_stats st = AMBER_VERIFY_STATS_INIT;

	vo.no_marks = 1;
	vo.version = 0;
	refused(amber_verify(&st, arc, &vo), "AMBER_VERIFY_OPTS_INIT");
	vo.version = AMBER_VERIFY_OPTS_VERSION + 1;
	refused(amber_verify(&st, arc, &vo), "AMBER_VERIFY_OPTS_INIT");
	vo.version = AMBER_VERIFY_OPTS_VERSION;
	OK(amber_verify(&st, arc, &vo));
	cr_assert_eq(st.problems, 0);
	OK(amber_verify(&st, arc, NULL)); /* NULL: the defaults */
}

Test(api, open_opts_of_a_newer_version_are_refused)
{
	amber_open_opts oo = fix_open_opts();
	amber_archive *a = NULL;

	oo.version = AMBER_OPEN_OPTS_VERSION + 1;
	refused(amber_archive_open_ext(&a, at("archive"), &oo), "AMBER_OPEN_OPTS_INIT");
}

Test(api, a_duplicated_entry_outlives_its_listing)
{
	amber_snapshot *s = NULL;
	amber_entry *root = NULL, *copy = NULL;
	amber_dir *d = NULL;

	OK(amber_snapshot_open(&s, arc, id));
	OK(amber_stat(&root, s, ""));
	OK(amber_dir_open(&d, s, root));
	OK(amber_entry_dup(&copy, amber_dir_lookup(d, "a", 1)));
	amber_dir_free(d);
	amber_entry_free(root);
	cr_assert_eq(copy->name_len, 1);
	cr_assert_str_eq(copy->name, "a");
	cr_assert_eq(copy->size, 5);
	{
		char buf[8] = "";
		size_t n = 0;

		OK(amber_file_read(&n, s, copy, 0, buf, sizeof(buf)));
		cr_assert_eq(n, 5);
		cr_assert_str_eq(buf, "alpha", "the copy still names the file's content");
	}
	amber_entry_free(copy);
	amber_snapshot_free(s);
}

/* ---- stats structs: versioned, filled as far as the caller's version reaches -------------- */

/* A caller built against a newer amber.h: its struct has a field this library does not know. */
typedef struct newer_stats {
	amber_stats s;
	uint64_t later;
} newer_stats;

typedef struct newer_repack_stats {
	amber_repack_stats s;
	uint64_t later;
} newer_repack_stats;

static unsigned progress_version;

static void note_progress(const amber_stats *sofar, const char *path, void *payload)
{
	progress_version = sofar->version;
}

Test(api, snapshot_stats_of_version_0_are_refused_and_newer_ones_filled_as_known)
{
	amber_snapshot_opts so = AMBER_SNAPSHOT_OPTS_INIT;
	amber_stats zero = {0};
	newer_stats n = {.s = {.version = AMBER_STATS_VERSION + 1}, .later = 0x5eed};
	amber_snapshot *s = NULL;
	char out[AMBER_OID_HEXSZ + 1];

	so.threads = 1;
	so.time_ns = T0 + 5000000000;
	so.progress = note_progress;
	refused(amber_snapshot_create(out, &zero, arc, at("src"), &so), "AMBER_STATS_INIT");
	OK(amber_resolve(out, arc, NULL, "latest"));
	cr_assert_str_eq(out, id, "a snapshot refused for its stats was written");

	put_file("src/b", "bravo");
	OK(amber_snapshot_create(out, &n.s, arc, at("src"), &so));
	cr_assert_eq(n.s.version, AMBER_STATS_VERSION + 1, "the caller's version was changed");
	cr_assert_eq(n.s.files, 2);
	cr_assert_eq(n.s.bytes, 10);
	cr_assert_eq(n.later, 0x5eed, "a field the library does not know was written");
	cr_assert_eq(progress_version, AMBER_STATS_VERSION, "progress stats of version %u",
		     progress_version);
	OK(amber_snapshot_open(&s, arc, out));
	cr_assert_eq(amber_snapshot_info(s)->stats.version, AMBER_STATS_VERSION);
	cr_assert_eq(amber_snapshot_info(s)->stats.files, 2);
	amber_snapshot_free(s);
}

/*
 * Version 3: a snapshot reports what the consolidation after it cost, so
 * that its amortised share can be measured apart; a version-2 caller gets
 * none of it.  Each snapshot adds a pack; the lazy merge runs once 8 small
 * ones break the progression, within the first 9 snapshots after setup's.
 */
Test(api, snapshot_stats_report_the_consolidation_and_stop_at_the_callers_version)
{
	amber_snapshot_opts so = AMBER_SNAPSHOT_OPTS_INIT;
	amber_stats st, v2;
	char out[AMBER_OID_HEXSZ + 1], name[16];
	uint64_t merged = 0, bytes = 0, ns = 0;
	int i;

	so.threads = 1;
	for (i = 2; i < 12 && !merged; i++) {
		snprintf(name, sizeof(name), "src/f%d", i);
		put_file(name, name);
		so.time_ns = T0 + (int64_t)i * 1000000000;
		st = (amber_stats)AMBER_STATS_INIT;
		OK(amber_snapshot_create(out, &st, arc, at("src"), &so));
		merged = st.repack_packs;
		bytes = st.repack_bytes;
		ns = st.repack_ns;
	}
	cr_assert_geq(merged, 8, "no snapshot reported a merge of 8 packs (got %llu)",
		      (unsigned long long)merged);
	cr_assert_gt(bytes, 0, "a merge of %llu packs copied no bytes", (unsigned long long)merged);
	cr_assert_gt(ns, 0, "a merge of %llu packs took no time", (unsigned long long)merged);

	/* the next snapshot has nothing to merge: it says so */
	put_file("src/g", "golf");
	so.time_ns = T0 + 20 * (int64_t)1000000000;
	st = (amber_stats)AMBER_STATS_INIT;
	OK(amber_snapshot_create(out, &st, arc, at("src"), &so));
	cr_assert_eq(st.repack_packs, 0);
	cr_assert_eq(st.repack_bytes, 0);

	memset(&v2, 0xa5, sizeof(v2));
	v2.version = 2;
	put_file("src/h", "hotel");
	so.time_ns = T0 + 21 * (int64_t)1000000000;
	OK(amber_snapshot_create(out, &v2, arc, at("src"), &so));
	cr_assert_gt(v2.pack_bytes, 0, "a version-2 field was not filled");
	cr_assert_eq(v2.repack_ns, 0xa5a5a5a5a5a5a5a5ull, "a version-3 field was written for a "
		     "version-2 caller");
}

Test(api, restore_writer_and_repack_stats_follow_the_same_scheme)
{
	amber_writer_opts wo = AMBER_WRITER_OPTS_INIT;
	amber_writer *w = NULL;
	amber_snapshot *s = NULL;
	amber_stats zero = {0};
	amber_repack_stats rzero = {0};
	newer_stats n = {.s = AMBER_STATS_INIT, .later = 7};
	newer_repack_stats rn = {.s = {.version = AMBER_REPACK_STATS_VERSION + 1}, .later = 9};
	char out[AMBER_OID_HEXSZ + 1];

	OK(amber_snapshot_open(&s, arc, id));
	refused(amber_restore(&zero, s, "", at("dest"), NULL), "AMBER_STATS_INIT");
	cr_assert_eq(access(at("dest"), F_OK), -1, "a refused restore wrote the destination");
	n.s.version = AMBER_STATS_VERSION + 1;
	OK(amber_restore(&n.s, s, "", at("dest"), NULL));
	cr_assert_eq(n.s.files, 1);
	cr_assert_eq(n.s.bytes, 5);
	cr_assert_eq(n.later, 7);
	amber_snapshot_free(s);

	OK(amber_writer_open(&w, arc, at("src"), &wo));
	refused(amber_writer_snapshot(out, &zero, w, NULL, 0), "AMBER_STATS_INIT");
	put_file("src/c", "charlie");
	n.s = (amber_stats)AMBER_STATS_INIT;
	OK(amber_writer_snapshot(out, &n.s, w, NULL, 0));
	cr_assert_eq(n.s.version, AMBER_STATS_VERSION);
	cr_assert_eq(n.s.files, 2);
	OK(amber_writer_close(w));

	refused(amber_archive_repack(&rzero, arc, AMBER_REPACK_ALL), "AMBER_REPACK_STATS_INIT");
	OK(amber_archive_repack(&rn.s, arc, AMBER_REPACK_ALL));
	cr_assert_eq(rn.s.version, AMBER_REPACK_STATS_VERSION + 1);
	cr_assert_geq(rn.s.packs_before, 2, "packs before: %llu",
		      (unsigned long long)rn.s.packs_before);
	cr_assert_eq(rn.later, 9);
}

typedef struct newer_verify_stats {
	amber_verify_stats s;
	uint64_t later;
} newer_verify_stats;

typedef struct newer_push_stats {
	amber_push_stats s;
	uint64_t later;
} newer_push_stats;

static unsigned verify_progress_version;

static void note_verify_progress(const amber_verify_stats *sofar, void *payload)
{
	verify_progress_version = sofar->version;
}

Test(api, verify_and_push_stats_follow_the_same_scheme)
{
	amber_verify_opts vo = AMBER_VERIFY_OPTS_INIT;
	amber_verify_stats zero = {0};
	amber_push_stats pzero = {0};
	newer_verify_stats n = {.s = {.version = AMBER_VERIFY_STATS_VERSION + 1}, .later = 0x5eed};
	newer_push_stats pn = {.s = {.version = AMBER_PUSH_STATS_VERSION + 1}, .later = 11};

	vo.no_marks = 1;
	vo.progress = note_verify_progress;
	refused(amber_verify(&zero, arc, &vo), "AMBER_VERIFY_STATS_INIT");
	cr_assert_eq(verify_progress_version, 0, "a refused verify ran");
	OK(amber_verify(&n.s, arc, &vo));
	cr_assert_eq(n.s.version, AMBER_VERIFY_STATS_VERSION + 1, "the caller's version was changed");
	cr_assert_eq(n.s.snapshots, 1);
	cr_assert_eq(n.s.problems, 0);
	cr_assert_eq(n.later, 0x5eed, "a field the library does not know was written");
	cr_assert_eq(verify_progress_version, AMBER_VERIFY_STATS_VERSION);

	refused(amber_push(&pzero, arc, at("replica.git")), "AMBER_PUSH_STATS_INIT");
	cr_assert_eq(access(at("replica.git"), F_OK), -1, "a refused push created the remote");
	OK(amber_push(&pn.s, arc, at("replica.git")));
	cr_assert_eq(pn.s.version, AMBER_PUSH_STATS_VERSION + 1);
	cr_assert_eq(pn.s.created, 1);
	cr_assert_geq(pn.s.refs, 1);
	cr_assert_eq(pn.later, 11);
}

static int collect_tag(const char *tag, void *payload)
{
	char *out = payload;
	size_t len = strlen(out);

	snprintf(out + len, 256 - len, "%s%s", len ? "," : "", tag);
	return 0;
}

/* AMBER_SNAP_NO_TAGS leaves info->tags empty; amber_snapshot_tags() lists
 * them as they are when asked; an unknown flag is refused. */
Test(api, a_snapshot_opened_without_its_tags_lists_them_on_request)
{
	amber_snapshot *s = NULL, *t = NULL;
	char got[256] = "";

	cr_assert_eq(amber_tag_create(arc, id, "first", NULL, NULL, 0), 0, "%s",
		     amber_error_last());
	cr_assert_eq(amber_snapshot_open(&s, arc, id), 0, "%s", amber_error_last());
	cr_assert_str_eq(amber_snapshot_info(s)->tags[0], "first");
	cr_assert_null(amber_snapshot_info(s)->tags[1]);
	cr_assert_eq(amber_snapshot_open_ext(&t, arc, id, AMBER_SNAP_NO_TAGS), 0, "%s",
		     amber_error_last());
	cr_assert_null(amber_snapshot_info(t)->tags[0], "NO_TAGS listed a tag");
	cr_assert_eq(amber_tag_create(arc, id, "second", NULL, NULL, 0), 0, "%s",
		     amber_error_last());
	cr_assert_eq(amber_snapshot_tags(t, collect_tag, got), 0, "%s", amber_error_last());
	cr_assert_str_eq(got, "first,second");
	amber_snapshot_free(t);
	t = NULL;
	cr_assert_eq(amber_snapshot_open_ext(&t, arc, id, 2), AMBER_EINVAL);
	cr_assert_null(t);
	amber_snapshot_free(s);
}

/*
 * One more snapshot must not cost more as packs accumulate: each lists
 * objects/pack once (to see what other processes wrote), and a
 * consolidation that merges lists it once more; one that has nothing to
 * merge decides from the packs in memory.  A pack another handle (another
 * process, as far as the store can tell) wrote in between is still seen.
 */
Test(api, a_snapshot_lists_the_pack_directory_once_and_sees_packs_others_wrote)
{
	amber_snapshot_opts so = AMBER_SNAPSHOT_OPTS_INIT;
	amber_open_opts oo = fix_open_opts();
	amber_archive *other = NULL;
	amber_snapshot *s = NULL;
	amber_stats st;
	char out[AMBER_OID_HEXSZ + 1], name[16], *text;
	int merges = 0, plain = 0;

	so.threads = 1;
	for (int i = 2; i < 22; i++) {
		snprintf(name, sizeof(name), "src/f%d", i);
		put_file(name, name);
		so.time_ns = T0 + (int64_t)i * 1000000000;
		st = (amber_stats)AMBER_STATS_INIT;
		OK(amber_snapshot_create(out, &st, arc, at("src"), &so));
		cr_assert_eq(st.pack_listings, st.repack_packs ? 2u : 1u,
			     "snapshot %d listed objects/pack %llu times (merged %llu packs)", i,
			     (unsigned long long)st.pack_listings,
			     (unsigned long long)st.repack_packs);
		merges += st.repack_packs > 0;
		plain += st.repack_packs == 0;
	}
	cr_assert(merges > 0 && plain > 0, "%d merging and %d other snapshots", merges, plain);

	OK(amber_archive_open_ext(&other, at("archive"), &oo));
	put_file("src/other", "written by another handle");
	so.time_ns = T0 + 30 * (int64_t)1000000000;
	OK(amber_snapshot_create(out, NULL, other, at("src"), &so));
	amber_archive_free(other);
	put_file("src/after", "after");
	so.time_ns = T0 + 31 * (int64_t)1000000000;
	st = (amber_stats)AMBER_STATS_INIT;
	OK(amber_snapshot_create(out, &st, arc, at("src"), &so));
	OK(amber_snapshot_open(&s, arc, out));
	text = fix_read(s, "other");
	cr_assert_str_eq(text, "written by another handle");
	free(text);
	text = fix_read(s, "after");
	cr_assert_str_eq(text, "after");
	free(text);
	amber_snapshot_free(s);
}
