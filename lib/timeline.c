/*
 * The time index of a stream: (time, commit) pairs, oldest first.
 *
 * Snapshot times strictly increase along a stream, so the first-parent
 * chain read backwards from the ref is already sorted.  The index lives in
 * the user's cache directory; refreshing reads only the commits written
 * since the last known tip, so opening is proportional to what is new, not
 * to the length of the history.  If the ref no longer descends from the last
 * known tip (history rewritten or rolled back), the index is rebuilt.
 */
#include "amber.h"
#include "archive.h"
#include "cachedir.h"
#include "error.h"
#include "history.h"
#include "record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char TL_MAGIC[8] = "AMBTL01\n";

typedef struct tl_ent {
	uint8_t oid[20];
	int64_t time_ns;
} tl_ent;

struct amber_timeline {
	amber_archive *a;
	char stream[AMBER_STREAM_MAX + 1];
	char *cache_path;       /* NULL when no cache directory is usable */
	tl_ent *v;
	size_t n, cap;
};

size_t amber_timeline_count(const amber_timeline *t)
{
	return t->n;
}

int64_t amber_timeline_time(const amber_timeline *t, size_t i)
{
	return t->v[i].time_ns;
}

void amber_timeline_id(char out[AMBER_OID_HEXSZ + 1], const amber_timeline *t, size_t i)
{
	amber_oid_tohex(out, t->v[i].oid);
}

size_t amber_timeline_lower_bound(const amber_timeline *t, int64_t time_ns)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->v[mid].time_ns < time_ns)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

long amber_timeline_find(const amber_timeline *t, int64_t time_ns)
{
	size_t i = amber_timeline_lower_bound(t, time_ns);

	if (i < t->n && t->v[i].time_ns == time_ns)
		return (long)i;
	return (long)i - 1;
}

void amber_timeline_free(amber_timeline *t)
{
	if (!t)
		return;
	free(t->cache_path);
	free(t->v);
	free(t);
}

static int reserve(amber_timeline *t, size_t n)
{
	tl_ent *v;
	size_t cap = t->cap ? t->cap : 64;

	if (n <= t->cap)
		return 0;
	while (cap < n)
		cap *= 2;
	v = realloc(t->v, cap * sizeof(*v));
	if (!v)
		return amber_fail(AMBER_ERROR, "out of memory");
	t->v = v;
	t->cap = cap;
	return 0;
}

/* The cache holds a prefix of the history; refresh() checks it against the ref. */
static void load_cache(amber_timeline *t)
{
	uint8_t hdr[40];
	tl_ent e;
	FILE *f = t->cache_path ? fopen(t->cache_path, "rb") : NULL;

	if (!f)
		return;
	if (fread(hdr, 1, sizeof(hdr), f) == sizeof(hdr) && memcmp(hdr, TL_MAGIC, 8) == 0 &&
	    memcmp(hdr + 8, t->a->id, 32) == 0) {
		while (fread(e.oid, 1, 20, f) == 20 && fread(&e.time_ns, 1, 8, f) == 8) {
			if ((t->n && e.time_ns <= t->v[t->n - 1].time_ns) || reserve(t, t->n + 1) < 0)
				break;
			t->v[t->n++] = e;
		}
	}
	fclose(f);
}

static void save_cache(const amber_timeline *t)
{
	char *tmp = NULL;
	FILE *f;
	int ok;

	if (!t->cache_path)
		return;
	if (!(f = amber_tmpfile_new(&tmp, t->cache_path))) {
		amber_error_clear(); /* read-only cache: run without persisting */
		return;
	}
	ok = fwrite(TL_MAGIC, 1, 8, f) == 8 && fwrite(t->a->id, 1, 32, f) == 32;
	for (size_t i = 0; ok && i < t->n; i++)
		ok = fwrite(t->v[i].oid, 1, 20, f) == 20 && fwrite(&t->v[i].time_ns, 1, 8, f) == 8;
	if (amber_tmpfile_commit(f, tmp, t->cache_path, ok) < 0)
		amber_error_clear();
}

static long find_oid(const amber_timeline *t, const uint8_t oid[20])
{
	for (size_t i = t->n; i-- > 0;)
		if (memcmp(t->v[i].oid, oid, 20) == 0)
			return (long)i;
	return -1;
}

/*
 * Nothing known yet: the whole history from the archive's index pages (a
 * page read per 1,024 snapshots, times from the authenticated records)
 * instead of a commit read per snapshot.  1 when the index cannot give it
 * (no pages, a locked archive, an index that does not match the chain):
 * the walk then does, as for archives written before pages.
 */
static int from_index(amber_timeline *t, const uint8_t tip[20])
{
	amber_page_ent *v = NULL;
	size_t n = 0;
	int rc = amber_history_span(&v, &n, t->a, t->stream, tip, INT64_MIN, INT64_MAX, 0);

	if (rc == 0 && (rc = reserve(t, n)) == 0) {
		for (size_t i = 0; i < n; i++) {
			memcpy(t->v[i].oid, v[i].oid, 20);
			t->v[i].time_ns = v[i].time_ns;
		}
		t->n = n;
	}
	free(v);
	if (rc != 0)
		amber_error_clear();
	return rc == 0 ? 0 : 1;
}

/* Walk back from tip until a known commit; append what is new, oldest first. */
static int extend(amber_timeline *t, const uint8_t tip[20])
{
	tl_ent *fresh = NULL;
	size_t nf = 0, cap = 0;
	uint8_t cur[20];
	long known = -1;
	int has_parent = 1, rc = 0;

	memcpy(cur, tip, 20);
	while (rc == 0 && has_parent && (known = find_oid(t, cur)) < 0) {
		if (nf == cap) {
			tl_ent *v = realloc(fresh, (cap = cap ? cap * 2 : 64) * sizeof(*v));

			if (!v) {
				rc = amber_fail(AMBER_ERROR, "out of memory");
				break;
			}
			fresh = v;
		}
		memcpy(fresh[nf].oid, cur, 20);
		rc = amber_commit_time(&fresh[nf].time_ns, cur, &has_parent, t->a, cur);
		if (rc == 0 && nf && fresh[nf].time_ns >= fresh[nf - 1].time_ns)
			rc = amber_fail(AMBER_ECORRUPT, "stream '%s': snapshot times do not increase",
					t->stream);
		nf++;
	}
	/* not descended from what we knew (or descended from an older entry):
	 * history was rewritten or rolled back; keep only the common part */
	t->n = known < 0 ? 0 : (size_t)known + 1;
	if (rc == 0 && t->n && nf && fresh[nf - 1].time_ns <= t->v[t->n - 1].time_ns)
		rc = amber_fail(AMBER_ECORRUPT, "stream '%s': snapshot times do not increase",
				t->stream);
	if (rc == 0)
		rc = reserve(t, t->n + nf);
	for (size_t i = 0; rc == 0 && i < nf; i++)
		t->v[t->n++] = fresh[nf - 1 - i];
	free(fresh);
	return rc;
}

int amber_timeline_refresh(amber_timeline *t, int *changed)
{
	char ref[128];
	uint8_t tip[20];
	size_t before = t->n;
	uint8_t last[20] = {0};
	int rc;

	if (changed)
		*changed = 0;
	if (t->n)
		memcpy(last, t->v[t->n - 1].oid, 20);
	snprintf(ref, sizeof(ref), "refs/heads/%s", t->stream);
	rc = amber_store_ref_read(tip, t->a->store, ref);
	if (rc == AMBER_ENOTFOUND) {
		amber_error_clear();
		t->n = 0;
		rc = 0;
	} else if (rc == 0 && !(t->n && memcmp(tip, last, 20) == 0)) {
		if (t->n || from_index(t, tip) != 0)
			rc = extend(t, tip);
	} else {
		return rc;
	}
	if (rc < 0)
		return rc;
	if (t->n != before || (t->n && memcmp(t->v[t->n - 1].oid, last, 20) != 0)) {
		if (changed)
			*changed = 1;
		save_cache(t);
	}
	return 0;
}

int amber_timeline_open(amber_timeline **out, amber_archive *a, const char *stream)
{
	amber_timeline *t = calloc(1, sizeof(*t));
	char *dir;
	int rc;

	if (!t)
		return amber_fail(AMBER_ERROR, "out of memory");
	t->a = a;
	snprintf(t->stream, sizeof(t->stream), "%s", stream ? stream : "main");
	if ((dir = amber_archive_cache_dir(a))) {
		size_t len = strlen(dir) + strlen(t->stream) + 16;

		if ((t->cache_path = malloc(len)))
			snprintf(t->cache_path, len, "%s/timeline-%s", dir, t->stream);
		free(dir);
	}
	amber_error_clear();
	load_cache(t);
	rc = amber_timeline_refresh(t, NULL);
	if (rc < 0) {
		amber_timeline_free(t);
		return rc;
	}
	*out = t;
	return 0;
}
