/*
 * The time index of a stream, over a real archive written with the public
 * API: order, lookups by time, incremental refresh, the cache file, and
 * refs moved back behind its back.
 */
#include "amber.h"

#include <criterion/criterion.h>

#include "scratch.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define OK(expr)                                                                     \
	do {                                                                         \
		int rc_ = (expr);                                                    \
		cr_assert_eq(rc_, 0, "%s = %d: %s", #expr, rc_, amber_error_last()); \
	} while (0)

#define MAXSNAP 16
#define T0 ((int64_t)1700000000 * 1000000000 + 123456789)
#define STEP ((int64_t)3600 * 1000000000 + 1001)   /* an hour and a bit */

static char cache[4200];

static void setup(void)
{
	scratch_make("timeline");
	snprintf(cache, sizeof(cache), "%s/cache", base);
	OK(amber_global_init());
}

TestSuite(timeline, .init = setup, .fini = scratch_remove);

/* Helpers ------------------------------------------------------------------------------- */

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int run(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int st;

	va_start(ap, fmt);
	cr_assert_lt(vsnprintf(cmd, sizeof(cmd), fmt, ap), (int)sizeof(cmd));
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fwrite(data, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

static amber_archive *new_archive(const char *pass)
{
	amber_open_opts oo = AMBER_OPEN_OPTS_INIT;
	amber_create_opts o = {.version = AMBER_CREATE_OPTS_VERSION,
		.kdf_profile = AMBER_KDF_TEST, .open = &oo};
	amber_archive *a = NULL;

	oo.cache_dir = cache;
	oo.weak_kdf_ok = 1;
	if (pass) {
		o.passphrase = (const unsigned char *)pass;
		o.passphrase_len = strlen(pass);
	} else {
		o.plain = 1;
	}
	cr_assert_eq(mkdir(at("src"), 0755), 0);
	write_file(at("src/file"), "start\n", 6);
	OK(amber_archive_create(&a, at("arch"), &o));
	return a;
}

/* Snapshot the source (changed a little) at exactly time t into `stream`. */
static void snap_into(char id[AMBER_OID_HEXSZ + 1], amber_archive *a, const char *stream,
		      int64_t t)
{
	amber_snapshot_opts o = AMBER_SNAPSHOT_OPTS_INIT;
	char text[64];
	int n = snprintf(text, sizeof(text), "state at %lld\n", (long long)t);

	write_file(at("src/file"), text, (size_t)n);
	o.stream = stream;
	o.threads = 1;
	o.time_ns = t;
	OK(amber_snapshot_create(id, NULL, a, at("src"), &o));
}

static void snap(char id[AMBER_OID_HEXSZ + 1], amber_archive *a, int64_t t)
{
	snap_into(id, a, NULL, t);
}

typedef struct idlist {
	char id[MAXSNAP][AMBER_OID_HEXSZ + 1];
	int64_t t[MAXSNAP];
	int n;
} idlist;

static int collect(const amber_snapinfo *info, void *payload)
{
	idlist *l = payload;

	cr_assert_lt(l->n, MAXSNAP);
	memcpy(l->id[l->n], info->id, sizeof(l->id[0]));
	l->t[l->n] = info->time_ns;
	l->n++;
	return 0;
}

/* The stream's snapshots from amber_log, newest first. */
static idlist logged(amber_archive *a, const char *stream)
{
	idlist l;
	int rc;

	memset(&l, 0, sizeof(l));
	rc = amber_log(a, stream, collect, &l);
	cr_assert(rc == 0 || rc == AMBER_ENOTFOUND, "amber_log = %d: %s", rc, amber_error_last());
	return l;
}

/* The timeline matches the log exactly, oldest first. */
static void assert_matches_log(const amber_timeline *t, amber_archive *a, const char *stream)
{
	idlist l = logged(a, stream);
	char id[AMBER_OID_HEXSZ + 1];

	cr_assert_eq(amber_timeline_count(t), (size_t)l.n, "timeline has %zu, log %d",
		     amber_timeline_count(t), l.n);
	for (int i = 0; i < l.n; i++) {
		size_t k = (size_t)(l.n - 1 - i);

		amber_timeline_id(id, t, k);
		cr_assert_str_eq(id, l.id[i], "index %zu", k);
		cr_assert_eq(amber_timeline_time(t, k), l.t[i], "time of index %zu", k);
	}
}

static void assert_entry(const amber_timeline *t, size_t i, const char *id, int64_t time)
{
	char got[AMBER_OID_HEXSZ + 1];

	cr_assert_lt(i, amber_timeline_count(t));
	amber_timeline_id(got, t, i);
	cr_assert_str_eq(got, id, "id of index %zu", i);
	cr_assert_eq(amber_timeline_time(t, i), time, "time of index %zu: %lld, want %lld", i,
		     (long long)amber_timeline_time(t, i), (long long)time);
}

static void update_ref(amber_archive *a, const char *ref, const char *id)
{
	cr_assert_eq(run("git --git-dir='%s' update-ref %s %s", amber_archive_path(a), ref, id), 0,
		     "git update-ref %s %s", ref, id);
}

static void cache_file(char *out, size_t len, amber_archive *a, const char *stream)
{
	snprintf(out, len, "%s/cache/%s/timeline-%s", base, amber_archive_id(a), stream);
}

/* Count and order ---------------------------------------------------------------------- */

Test(timeline, lists_snapshots_oldest_first_with_their_times_and_ids)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[5][AMBER_OID_HEXSZ + 1];

	for (int i = 0; i < 5; i++)
		snap(ids[i], a, T0 + i * STEP + i * 7);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 5);
	for (size_t i = 0; i < 5; i++)
		assert_entry(t, i, ids[i], T0 + (int64_t)i * STEP + (int64_t)i * 7);
	assert_matches_log(t, a, NULL);
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, works_on_an_encrypted_archive)
{
	amber_archive *a = new_archive("correct horse");
	amber_timeline *t = NULL;
	char ids[3][AMBER_OID_HEXSZ + 1];

	cr_assert_eq(amber_archive_is_encrypted(a), 1);
	for (int i = 0; i < 3; i++)
		snap(ids[i], a, T0 + i * STEP);
	OK(amber_timeline_open(&t, a, "main"));
	cr_assert_eq(amber_timeline_count(t), 3);
	for (size_t i = 0; i < 3; i++)
		assert_entry(t, i, ids[i], T0 + (int64_t)i * STEP);
	assert_matches_log(t, a, "main");
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, empty_stream_has_no_snapshots)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char id[AMBER_OID_HEXSZ + 1];
	int changed = -1;

	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 0);
	cr_assert_eq(amber_timeline_find(t, T0), -1);
	cr_assert_eq(amber_timeline_find(t, INT64_MAX), -1);
	cr_assert_eq(amber_timeline_lower_bound(t, T0), 0);
	OK(amber_timeline_refresh(t, &changed));
	cr_assert_eq(changed, 0);
	amber_timeline_free(t);

	/* another stream's snapshots do not show */
	snap(id, a, T0);
	OK(amber_timeline_open(&t, a, "other"));
	cr_assert_eq(amber_timeline_count(t), 0);
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, streams_are_indexed_separately)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *tm = NULL, *tw = NULL;
	char m[2][AMBER_OID_HEXSZ + 1], w[3][AMBER_OID_HEXSZ + 1];

	snap_into(m[0], a, "main", T0);
	snap_into(w[0], a, "work", T0 + 1000);
	snap_into(w[1], a, "work", T0 + 2000);
	snap_into(m[1], a, "main", T0 + 3000);
	snap_into(w[2], a, "work", T0 + 4000);
	OK(amber_timeline_open(&tm, a, "main"));
	OK(amber_timeline_open(&tw, a, "work"));
	cr_assert_eq(amber_timeline_count(tm), 2);
	cr_assert_eq(amber_timeline_count(tw), 3);
	assert_entry(tm, 1, m[1], T0 + 3000);
	assert_entry(tw, 2, w[2], T0 + 4000);
	assert_matches_log(tm, a, "main");
	assert_matches_log(tw, a, "work");
	amber_timeline_free(tm);
	amber_timeline_free(tw);
	amber_archive_free(a);
}

/* Lookups ---------------------------------------------------------------------------------- */

Test(timeline, find_returns_newest_snapshot_at_or_before_a_time)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[4][AMBER_OID_HEXSZ + 1];
	int64_t ts[4];

	for (int i = 0; i < 4; i++) {
		ts[i] = T0 + i * STEP;
		snap(ids[i], a, ts[i]);
	}
	OK(amber_timeline_open(&t, a, NULL));
	for (long i = 0; i < 4; i++) {
		cr_assert_eq(amber_timeline_find(t, ts[i]), i, "exact time of %ld", i);
		cr_assert_eq(amber_timeline_find(t, ts[i] + 1), i, "just after %ld", i);
		cr_assert_eq(amber_timeline_find(t, ts[i] - 1), i - 1, "just before %ld", i);
	}
	cr_assert_eq(amber_timeline_find(t, ts[1] + STEP / 2), 1, "between 1 and 2: the older");
	cr_assert_eq(amber_timeline_find(t, ts[0] - STEP), -1, "before the first");
	cr_assert_eq(amber_timeline_find(t, INT64_MIN), -1);
	cr_assert_eq(amber_timeline_find(t, ts[3] + (int64_t)100 * 365 * 86400 * 1000000000),
		     3, "far future: the last");
	cr_assert_eq(amber_timeline_find(t, INT64_MAX), 3);
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, lower_bound_returns_oldest_snapshot_at_or_after_a_time)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[4][AMBER_OID_HEXSZ + 1];
	int64_t ts[4];

	for (int i = 0; i < 4; i++) {
		ts[i] = T0 + i * STEP;
		snap(ids[i], a, ts[i]);
	}
	OK(amber_timeline_open(&t, a, NULL));
	for (size_t i = 0; i < 4; i++) {
		cr_assert_eq(amber_timeline_lower_bound(t, ts[i]), i, "exact %zu", i);
		cr_assert_eq(amber_timeline_lower_bound(t, ts[i] - 1), i, "just before %zu", i);
		cr_assert_eq(amber_timeline_lower_bound(t, ts[i] + 1), i + 1, "just after %zu", i);
	}
	cr_assert_eq(amber_timeline_lower_bound(t, INT64_MIN), 0);
	cr_assert_eq(amber_timeline_lower_bound(t, ts[3] + STEP), 4, "after the last: count");
	cr_assert_eq(amber_timeline_lower_bound(t, INT64_MAX), 4);
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, find_agrees_with_resolve_at_time)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[3][AMBER_OID_HEXSZ + 1], got[AMBER_OID_HEXSZ + 1], spec[64];

	for (int i = 0; i < 3; i++)
		snap(ids[i], a, T0 + i * STEP);
	OK(amber_timeline_open(&t, a, NULL));
	/* halfway between 1 and 2, as "@EPOCH.frac" */
	int64_t q = T0 + STEP + STEP / 2;

	snprintf(spec, sizeof(spec), "@%lld.%09lld", (long long)(q / 1000000000),
		 (long long)(q % 1000000000));
	OK(amber_resolve(got, a, NULL, spec));
	cr_assert_str_eq(got, ids[1]);
	cr_assert_eq(amber_timeline_find(t, q), 1);
	amber_timeline_free(t);
	amber_archive_free(a);
}

/* Refresh ------------------------------------------------------------------------------------ */

Test(timeline, refresh_picks_up_new_snapshots_and_reports_change)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[5][AMBER_OID_HEXSZ + 1];
	int changed = -1;

	snap(ids[0], a, T0);
	snap(ids[1], a, T0 + STEP);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 2);

	OK(amber_timeline_refresh(t, &changed));
	cr_assert_eq(changed, 0, "nothing new, yet changed");
	cr_assert_eq(amber_timeline_count(t), 2);

	snap(ids[2], a, T0 + 2 * STEP);
	snap(ids[3], a, T0 + 3 * STEP);
	snap(ids[4], a, T0 + 4 * STEP);
	cr_assert_eq(amber_timeline_count(t), 2, "changed without a refresh");
	OK(amber_timeline_refresh(t, &changed));
	cr_assert_eq(changed, 1);
	cr_assert_eq(amber_timeline_count(t), 5);
	for (size_t i = 0; i < 5; i++)
		assert_entry(t, i, ids[i], T0 + (int64_t)i * STEP);
	cr_assert_eq(amber_timeline_find(t, T0 + 4 * STEP + 1), 4);
	assert_matches_log(t, a, NULL);

	changed = -1;
	OK(amber_timeline_refresh(t, &changed));
	cr_assert_eq(changed, 0);
	OK(amber_timeline_refresh(t, NULL));
	cr_assert_eq(amber_timeline_count(t), 5);
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, refresh_of_an_empty_timeline_finds_the_first_snapshot)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char id[AMBER_OID_HEXSZ + 1];
	int changed = -1;

	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 0);
	snap(id, a, T0);
	OK(amber_timeline_refresh(t, &changed));
	cr_assert_eq(changed, 1);
	cr_assert_eq(amber_timeline_count(t), 1);
	assert_entry(t, 0, id, T0);
	amber_timeline_free(t);
	amber_archive_free(a);
}

/* The cache file -------------------------------------------------------------------------- */

Test(timeline, second_open_gives_identical_results)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t1 = NULL, *t2 = NULL;
	char ids[4][AMBER_OID_HEXSZ + 1], path[4300], x[41], y[41];
	struct stat st;

	for (int i = 0; i < 4; i++)
		snap(ids[i], a, T0 + i * STEP);
	OK(amber_timeline_open(&t1, a, NULL));
	cache_file(path, sizeof(path), a, "main");
	cr_assert_eq(stat(path, &st), 0, "no cache file at %s", path);
	cr_assert_eq(st.st_size, 40 + 4 * 28, "cache file of %lld bytes", (long long)st.st_size);
	OK(amber_timeline_open(&t2, a, NULL));
	cr_assert_eq(amber_timeline_count(t2), amber_timeline_count(t1));
	for (size_t i = 0; i < 4; i++) {
		amber_timeline_id(x, t1, i);
		amber_timeline_id(y, t2, i);
		cr_assert_str_eq(x, y);
		cr_assert_eq(amber_timeline_time(t1, i), amber_timeline_time(t2, i));
	}
	amber_timeline_free(t1);
	amber_timeline_free(t2);

	/* and without any cache at all */
	cr_assert_eq(run("rm -rf '%s'", at("cache")), 0);
	OK(amber_timeline_open(&t2, a, NULL));
	cr_assert_eq(amber_timeline_count(t2), 4);
	for (size_t i = 0; i < 4; i++)
		assert_entry(t2, i, ids[i], T0 + (int64_t)i * STEP);
	amber_timeline_free(t2);
	amber_archive_free(a);
}

/* Rewrite the time of entry i in the cache file (keeping the order valid). */
static void doctor_cache_time(const char *path, size_t i, int64_t delta)
{
	int fd = open(path, O_RDWR);
	int64_t v;

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(pread(fd, &v, 8, (off_t)(40 + i * 28 + 20)), 8);
	v += delta;
	cr_assert_eq(pwrite(fd, &v, 8, (off_t)(40 + i * 28 + 20)), 8);
	close(fd);
}

Test(timeline, open_reads_known_snapshots_from_the_cache_not_the_history)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[5][AMBER_OID_HEXSZ + 1], path[4300];

	for (int i = 0; i < 3; i++)
		snap(ids[i], a, T0 + i * STEP);
	OK(amber_timeline_open(&t, a, NULL));
	amber_timeline_free(t);
	cache_file(path, sizeof(path), a, "main");
	/* a time only the cache file knows: if it shows, the history was not read */
	doctor_cache_time(path, 0, -5);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 3);
	cr_assert_eq(amber_timeline_time(t, 0), T0 - 5, "open re-read the known history");
	amber_timeline_free(t);

	/* new snapshots are appended to the cached prefix, which is not re-read */
	snap(ids[3], a, T0 + 3 * STEP);
	snap(ids[4], a, T0 + 4 * STEP);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 5);
	cr_assert_eq(amber_timeline_time(t, 0), T0 - 5, "refresh re-read the known history");
	for (size_t i = 1; i < 5; i++)
		assert_entry(t, i, ids[i], T0 + (int64_t)i * STEP);
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, garbage_cache_file_is_ignored)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[3][AMBER_OID_HEXSZ + 1], path[4300], junk[300];

	for (int i = 0; i < 3; i++)
		snap(ids[i], a, T0 + i * STEP);
	OK(amber_timeline_open(&t, a, NULL));
	amber_timeline_free(t);
	cache_file(path, sizeof(path), a, "main");
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 131 + 7);
	for (size_t len = 0; len <= sizeof(junk); len += 60) {
		write_file(path, junk, len);
		OK(amber_timeline_open(&t, a, NULL));
		cr_assert_eq(amber_timeline_count(t), 3, "junk of %zu bytes", len);
		for (size_t i = 0; i < 3; i++)
			assert_entry(t, i, ids[i], T0 + (int64_t)i * STEP);
		amber_timeline_free(t);
	}
	amber_archive_free(a);
}

Test(timeline, cache_naming_unknown_commits_is_rebuilt)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[3][AMBER_OID_HEXSZ + 1], path[4300];
	uint8_t fake[20];
	int fd;

	for (int i = 0; i < 3; i++)
		snap(ids[i], a, T0 + i * STEP);
	OK(amber_timeline_open(&t, a, NULL));
	amber_timeline_free(t);
	cache_file(path, sizeof(path), a, "main");
	/* every cached id replaced by one the archive does not have */
	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	for (int i = 0; i < 3; i++) {
		memset(fake, 0xa0 + i, sizeof(fake));
		cr_assert_eq(pwrite(fd, fake, 20, 40 + i * 28), 20);
	}
	close(fd);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 3);
	for (size_t i = 0; i < 3; i++)
		assert_entry(t, i, ids[i], T0 + (int64_t)i * STEP);
	amber_timeline_free(t);
	amber_archive_free(a);
}

/* Rolled-back refs ---------------------------------------------------------------------------- */

Test(timeline, rolled_back_ref_is_followed_on_refresh)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[5][AMBER_OID_HEXSZ + 1], fresh[AMBER_OID_HEXSZ + 1];
	int changed = -1;

	for (int i = 0; i < 4; i++)
		snap(ids[i], a, T0 + i * STEP);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 4);

	update_ref(a, "refs/heads/main", ids[1]);
	OK(amber_timeline_refresh(t, &changed));
	cr_assert_eq(changed, 1);
	cr_assert_eq(amber_timeline_count(t), 2, "count did not shrink");
	assert_entry(t, 1, ids[1], T0 + STEP);
	cr_assert_eq(amber_timeline_find(t, T0 + 3 * STEP), 1, "a removed snapshot is found");
	cr_assert_eq(amber_timeline_find(t, INT64_MAX), 1);
	cr_assert_eq(amber_timeline_lower_bound(t, T0 + 2 * STEP), 2);
	assert_matches_log(t, a, NULL);

	/* writing on from there: the new snapshot replaces the removed ones */
	snap(fresh, a, T0 + 2 * STEP + STEP / 2);
	OK(amber_timeline_refresh(t, &changed));
	cr_assert_eq(changed, 1);
	cr_assert_eq(amber_timeline_count(t), 3);
	assert_entry(t, 2, fresh, T0 + 2 * STEP + STEP / 2);
	cr_assert_eq(amber_timeline_find(t, T0 + 3 * STEP), 2);
	assert_matches_log(t, a, NULL);
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, rolled_back_ref_is_followed_on_open_with_a_stale_cache)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[4][AMBER_OID_HEXSZ + 1], fresh[AMBER_OID_HEXSZ + 1];

	for (int i = 0; i < 4; i++)
		snap(ids[i], a, T0 + i * STEP);
	OK(amber_timeline_open(&t, a, NULL));   /* the cache now lists all four */
	amber_timeline_free(t);

	update_ref(a, "refs/heads/main", ids[2]);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 3, "the stale cache's tip was kept");
	cr_assert_eq(amber_timeline_find(t, T0 + 3 * STEP), 2);
	assert_matches_log(t, a, NULL);
	amber_timeline_free(t);

	/* rolled back to the root, then a different snapshot on top */
	update_ref(a, "refs/heads/main", ids[0]);
	snap(fresh, a, T0 + STEP / 2);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 2);
	assert_entry(t, 0, ids[0], T0);
	assert_entry(t, 1, fresh, T0 + STEP / 2);
	cr_assert_eq(amber_timeline_find(t, T0 + 3 * STEP), 1);
	assert_matches_log(t, a, NULL);
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, rewritten_history_is_rebuilt)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[3][AMBER_OID_HEXSZ + 1], other[2][AMBER_OID_HEXSZ + 1];
	int changed = -1;

	for (int i = 0; i < 3; i++)
		snap(ids[i], a, T0 + i * STEP);
	/* an unrelated history in another stream, then main pointed at it */
	snap_into(other[0], a, "side", T0 + 10000);
	snap_into(other[1], a, "side", T0 + 20000);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 3);
	update_ref(a, "refs/heads/main", other[1]);
	OK(amber_timeline_refresh(t, &changed));
	cr_assert_eq(changed, 1);
	cr_assert_eq(amber_timeline_count(t), 2);
	assert_entry(t, 0, other[0], T0 + 10000);
	assert_entry(t, 1, other[1], T0 + 20000);
	cr_assert_eq(amber_timeline_find(t, T0 + 2 * STEP), 1);
	amber_timeline_free(t);
	amber_archive_free(a);
}

Test(timeline, deleted_ref_empties_the_timeline)
{
	amber_archive *a = new_archive(NULL);
	amber_timeline *t = NULL;
	char ids[2][AMBER_OID_HEXSZ + 1];
	int changed = -1;

	snap(ids[0], a, T0);
	snap(ids[1], a, T0 + STEP);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 2);
	cr_assert_eq(run("git --git-dir='%s' update-ref -d refs/heads/main", amber_archive_path(a)),
		     0);
	OK(amber_timeline_refresh(t, &changed));
	cr_assert_eq(changed, 1);
	cr_assert_eq(amber_timeline_count(t), 0);
	cr_assert_eq(amber_timeline_find(t, INT64_MAX), -1);
	amber_timeline_free(t);
	OK(amber_timeline_open(&t, a, NULL));
	cr_assert_eq(amber_timeline_count(t), 0, "the stale cache came back");
	amber_timeline_free(t);
	amber_archive_free(a);
}
