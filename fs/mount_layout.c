/*
 * The virtual tree above the snapshots.
 *
 *   latest                 symlink to snapshots/<day>/<name> (newest)
 *   snapshots/<day>/<name> every snapshot, <day> = YYYY-MM-DD (UTC),
 *                          <name> = YYYYMMDDTHHMMSS.fffffffffZ (ns)
 *   at/<time>              the newest snapshot before the end of the span
 *                          <time> denotes (14:03:07 is in force to :08)
 *   streams/<s>/...        latest, snapshots and at of every stream
 *   tags/<tag>             tagged snapshots
 *   ids/<id>               every snapshot by commit id (prefixes resolve)
 *
 * A day directory, and the names in it, come from the time index that
 * travels with the archive (amber_history_list: skip links and index pages
 * in the authenticated records), so that listing one day of a long history
 * costs a few dozen object reads with an empty cache directory; the last
 * day listed is kept, and rebuilt when a listing starts over more than
 * MNT_REFRESH_NS after it was built.  Archives written before index pages
 * (and snapshots/ itself, and ids/) use the streams' amber_timeline, opened
 * on first use (so mounting costs nothing per snapshot; with an empty cache
 * it is read from the index pages) and refreshed when a
 * moving name is used more than MNT_REFRESH_NS after the last refresh (so a
 * snapshot written while mounted shows up within a second): a day is found
 * there by binary search, so listing snapshots/ costs O(days * log n).
 *
 * Readdir cookies: 1 and 2 are "." and "..", then each listing encodes a
 * position it can resume from without state: a time line index for days
 * and day directories, (stream ordinal << 40 | index) for ids/, and a list
 * index for the short lists (root, streams/, tags/).
 *
 * Names carry the stored time to the ns: times strictly increase along a
 * stream, so no two snapshots of a day share a name.
 */
#include "mount.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY_NS (86400LL * 1000000000LL)
#define COOKIE_BASE 2
#define IDS_SHIFT 40

/* a / b rounded down: times before 1970 are negative. */
static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b < 0);
}

/* Time lines ---------------------------------------------------------------- */

static struct mnt_tl *tl_open(struct mnt *m, const char *stream, int *err)
{
	struct mnt_tl *t = calloc(1, sizeof(*t));
	int rc;

	if (!t || !(t->stream = strdup(stream))) {
		free(t);
		*err = ENOMEM;
		return NULL;
	}
	rc = amber_timeline_open(&t->t, m->a, stream);
	if (rc) {
		*err = mnt_errno(m, rc, stream);
		free(t->stream);
		free(t);
		return NULL;
	}
	t->refreshed_ns = mnt_now_ns();
	t->next = m->tls;
	m->tls = t;
	return t;
}

/*
 * Lock the time lines and give the one of `stream`, refreshed if `fresh`
 * and stale.  @return 0 with tl_lock held, or an errno with it released.
 */
/*
 * tl_lock's `fresh`: 0 as it is, 1 refreshed if older than MNT_REFRESH_NS,
 * TL_NOW refreshed now.  latest and at/ read the ref itself, so a name they
 * give may be newer than the time line: lookups that miss refresh at once.
 */
#define TL_NOW 2

static int tl_lock(struct mnt *m, const char *stream, int fresh, amber_timeline **out)
{
	struct mnt_tl *t;
	int err = 0, rc;

	pthread_mutex_lock(&m->tl_lock);
	for (t = m->tls; t && strcmp(t->stream, stream) != 0; t = t->next)
		;
	if (!t && !(t = tl_open(m, stream, &err))) {
		pthread_mutex_unlock(&m->tl_lock);
		return err;
	}
	if (fresh == TL_NOW || (fresh && mnt_now_ns() - t->refreshed_ns > MNT_REFRESH_NS)) {
		rc = amber_timeline_refresh(t->t, NULL);
		if (rc)
			mnt_errno(m, rc, stream);   /* keep serving what we have */
		t->refreshed_ns = mnt_now_ns();
	}
	*out = t->t;
	return 0;
}

static void tl_unlock(struct mnt *m)
{
	pthread_mutex_unlock(&m->tl_lock);
}

/* Days from the index ------------------------------------------------------- */

#define DAY_NO_INDEX (-1)

static int64_t next_day(int64_t day)
{
	int64_t next;

	if (__builtin_mul_overflow(floor_div(day, DAY_NS) + 1, DAY_NS, &next))
		return INT64_MAX;
	return next;
}

static void day_drop(struct mnt_day *d)
{
	free(d->stream);
	free(d->v);
	memset(d, 0, sizeof(*d));
}

/*
 * The listing of day `day` of `stream` from the archive's index, built
 * again if `rebuild` and older than MNT_REFRESH_NS.  @return 0 with tl_lock
 * held, DAY_NO_INDEX (the archive has no index pages there: use the time
 * line) or an errno, with it released.
 */
static int day_lock(struct mnt *m, const char *stream, int64_t day, int rebuild,
		    const struct mnt_day **out)
{
	struct mnt_day *d = &m->day, fresh = {0};
	int rc;

	pthread_mutex_lock(&m->tl_lock);
	*out = d;
	if (d->stream && strcmp(d->stream, stream) == 0 && d->day_ns == day &&
	    !(rebuild && mnt_now_ns() - d->built_ns > MNT_REFRESH_NS))
		return 0;
	rc = amber_history_list(&fresh.v, &fresh.n, m->a, stream, day, next_day(day), 0);
	if (rc == 0 && !(fresh.stream = strdup(stream)))
		rc = AMBER_ERROR;
	if (rc != 0) {
		day_drop(&fresh);
		pthread_mutex_unlock(&m->tl_lock);
		return rc == 1 ? DAY_NO_INDEX : mnt_errno(m, rc, stream);
	}
	day_drop(d);
	*d = fresh;
	d->day_ns = day;
	d->built_ns = mnt_now_ns();
	return 0;
}

/*
 * The snapshot of `stream` taken at exactly `ns`, or in the day starting at
 * `day` if ns is INT64_MIN (the newest of it), from the index.
 * @return 0 (*id "" if none), DAY_NO_INDEX, or an errno.
 */
static int index_find(struct mnt *m, const char *stream, int64_t day, int64_t ns,
		      char id[AMBER_OID_HEXSZ + 1])
{
	amber_snapref *v = NULL;
	size_t n = 0;
	int rc = ns == INT64_MIN ?
		amber_history_list(&v, &n, m->a, stream, day, next_day(day), 1) :
		amber_history_list(&v, &n, m->a, stream, ns, ns + (ns < INT64_MAX), 1);

	id[0] = '\0';
	if (rc == 0 && n == 1 && (ns == INT64_MIN || v[0].time_ns == ns))
		memcpy(id, v[0].id, AMBER_OID_HEXSZ + 1);
	free(v);
	if (rc == 1)
		return DAY_NO_INDEX;
	return rc ? mnt_errno(m, rc, stream) : 0;
}

void mnt_tl_destroy(struct mnt *m)
{
	day_drop(&m->day);
	for (struct mnt_tl *t = m->tls, *next; t; t = next) {
		next = t->next;
		amber_timeline_free(t->t);
		free(t->stream);
		free(t);
	}
	m->tls = NULL;
}

/* Names ----------------------------------------------------------------- */

/*
 * Times come from unauthenticated commit trailers and may be anywhere in
 * int64.  The first day of that range (1677-09-21) starts before INT64_MIN,
 * so it starts at INT64_MIN here (which is also what parsing its name
 * gives); the last day (2262-04-11) has no representable next midnight.
 */
static int64_t day_of(int64_t ns)
{
	int64_t d;

	if (__builtin_mul_overflow(floor_div(ns, DAY_NS), DAY_NS, &d))
		return INT64_MIN;
	return d;
}

/* Index of the first snapshot after the day starting at `day`. Caller holds tl_lock. */
static size_t day_end(const amber_timeline *t, int64_t day)
{
	int64_t next;

	if (__builtin_mul_overflow(floor_div(day, DAY_NS) + 1, DAY_NS, &next))
		return amber_timeline_count(t);
	return amber_timeline_lower_bound(t, next);
}

static void utc(struct tm *tm, int64_t ns, long *usec)
{
	int64_t sec = ns / 1000000000LL, rem = ns % 1000000000LL;
	time_t t;

	if (rem < 0) {
		sec--;
		rem += 1000000000LL;
	}
	t = (time_t)sec;
	if (!gmtime_r(&t, tm))
		memset(tm, 0, sizeof(*tm));
	*usec = (long)(rem / 1000);
}

static void day_name(char out[32], int64_t ns)
{
	struct tm tm;
	long us;

	utc(&tm, ns, &us);
	snprintf(out, 32, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/*
 * The name of a snapshot taken at ns: its time to the ns, as stored, so
 * that the name is unique in its stream (times strictly increase) and
 * resolves to it here, under at/ and as a CLI @TIME.
 */
static void time_name(char out[48], int64_t ns)
{
	struct tm tm;
	long us;

	utc(&tm, ns, &us);
	snprintf(out, 48, "%04d%02d%02dT%02d%02d%02d.%09ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (long)(((ns % 1000000000LL) + 1000000000LL) % 1000000000LL));
}

static void snap_name(char out[48], const amber_timeline *t, size_t i)
{
	time_name(out, amber_timeline_time(t, i));
}

static uint64_t vino(enum mnt_kind kind, const char *stream, int64_t day)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind;

	for (const unsigned char *p = (const unsigned char *)stream; p && *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	h = (h ^ (uint64_t)day) * 1099511628211ULL;
	return h | (1ULL << 63);
}

/* Small sorted string lists (streams, tags) ------------------------------ */

struct strv {
	char **v;
	size_t n, cap;
};

static int strv_add(struct strv *s, const char *str)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		char **v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -1;
		s->v = v;
		s->cap = cap;
	}
	if (!(s->v[s->n] = strdup(str)))
		return -1;
	s->n++;
	return 0;
}

static void strv_free(struct strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void strv_sort_unique(struct strv *s)
{
	size_t j = 0;

	if (s->n)
		qsort(s->v, s->n, sizeof(*s->v), cmp_str);
	for (size_t i = 0; i < s->n; i++) {
		if (j && strcmp(s->v[j - 1], s->v[i]) == 0)
			free(s->v[i]);
		else
			s->v[j++] = s->v[i];
	}
	s->n = j;
}

static int strv_has(const struct strv *s, const char *str)
{
	return s->n && bsearch(&str, s->v, s->n, sizeof(*s->v), cmp_str) != NULL;
}

static int strv_cb(const char *stream, void *payload)
{
	return strv_add(payload, stream) ? AMBER_ERROR : 0;
}

static int list_streams(struct mnt *m, struct strv *out)
{
	int rc = amber_stream_list(m->a, strv_cb, out);

	if (rc && rc != AMBER_ENOTFOUND)
		return mnt_errno(m, rc, "streams");
	strv_sort_unique(out);
	return 0;
}

/*
 * Only the names come from here (lib skips refs with names it would never
 * write): what a tag points to is resolved and authenticated by
 * amber_resolve and amber_snapshot_open.
 */
static int list_tags(struct mnt *m, struct strv *out)
{
	int rc = amber_tag_list(m->a, strv_cb, out);

	if (rc)
		return mnt_errno(m, rc, "tags");
	strv_sort_unique(out);
	return 0;
}

/* Lookup ------------------------------------------------------------------- */

static int virt(struct mnt_nodeinfo *o, enum mnt_kind kind, uint64_t ino, const char *stream)
{
	o->kind = kind;
	o->st_ino = ino;
	o->entry_timeout = MNT_TIMEOUT_MOVING;
	if (stream && !(o->stream = strdup(stream)))
		return ENOMEM;
	return 0;
}

static int snaproot(struct mnt *m, const char *id, double timeout, struct mnt_nodeinfo *o)
{
	int err = mnt_snap_get(m, id, &o->snap);

	if (err)
		return err;
	o->kind = MK_SNAPROOT;
	o->st_ino = amber_entry_ino(m->a, o->snap->root);
	o->entry_timeout = timeout;
	return amber_entry_dup(&o->e, o->snap->root) < 0 ? ENOMEM : 0;
}

/* snaproot for a snapshot found on stream's time line: by its record it must
 * belong to that stream (a ref moved to another stream's tip is EIO). */
static int stream_snaproot(struct mnt *m, const char *stream, const char *id, double timeout,
			   struct mnt_nodeinfo *o)
{
	struct mnt_snap *s;
	int rc, err = mnt_snap_get(m, id, &s);

	if (err)
		return err;
	rc = amber_snapshot_check_stream(s->s, stream);
	mnt_snap_put(m, s);
	return rc ? mnt_errno(m, rc, id) : snaproot(m, id, timeout, o);
}

/*
 * From the ref: never walks the history (mounting stays O(1)).  A tip that
 * cannot be resolved for another reason than "no snapshot" (a forged or
 * damaged record) still has a `latest`, whose readlink is EIO: the view
 * must not silently look empty.
 */
static int stream_has_snapshots(struct mnt *m, const char *stream)
{
	char id[AMBER_OID_HEXSZ + 1];
	return amber_resolve(id, m->a, stream, "latest") != AMBER_ENOTFOUND;
}

/* Names shared by the root (for the default stream) and streams/<s>/. */
static int lookup_stream_view(struct mnt *m, const char *stream, int top, const char *name,
			      struct mnt_nodeinfo *o)
{
	if (strcmp(name, "latest") == 0) {
		if (!stream_has_snapshots(m, stream))
			return ENOENT;
		return virt(o, MK_LATEST, top ? MNT_INO_LATEST : vino(MK_LATEST, stream, 0),
			    stream);
	}
	if (strcmp(name, "snapshots") == 0)
		return virt(o, MK_SNAPSHOTS,
			    top ? MNT_INO_SNAPSHOTS : vino(MK_SNAPSHOTS, stream, 0), stream);
	if (strcmp(name, "at") == 0)
		return virt(o, MK_AT, top ? MNT_INO_AT : vino(MK_AT, stream, 0), stream);
	return ENOENT;
}

static int lookup_root(struct mnt *m, const char *name, struct mnt_nodeinfo *o)
{
	if (strcmp(name, "streams") == 0)
		return virt(o, MK_STREAMS, MNT_INO_STREAMS, NULL);
	if (strcmp(name, "tags") == 0)
		return virt(o, MK_TAGS, MNT_INO_TAGS, NULL);
	if (strcmp(name, "ids") == 0)
		return virt(o, MK_IDS, MNT_INO_IDS, NULL);
	return lookup_stream_view(m, m->o.stream, 1, name, o);
}

static int lookup_streams(struct mnt *m, const char *name, struct mnt_nodeinfo *o)
{
	struct strv s = {0};
	int err = list_streams(m, &s);

	if (!err && !strv_has(&s, name))
		err = ENOENT;
	if (!err)
		err = virt(o, MK_STREAM, vino(MK_STREAM, name, 0), name);
	strv_free(&s);
	return err;
}

static int lookup_day(struct mnt *m, struct mnt_node *p, const char *name,
		      struct mnt_nodeinfo *o)
{
	char check[32], id[AMBER_OID_HEXSZ + 1];
	amber_timeline *t;
	int64_t ns;
	size_t i;
	int err;

	if (amber_time_parse(&ns, name) || day_of(ns) != ns)
		return ENOENT;
	day_name(check, ns);
	if (strcmp(check, name) != 0)
		return ENOENT;
	err = index_find(m, p->stream, ns, INT64_MIN, id);
	if (err == 0 && !id[0])
		return ENOENT;
	for (int fresh = 1, found = 0; err == DAY_NO_INDEX && !found && fresh <= TL_NOW;
	     fresh++) {
		int e = tl_lock(m, p->stream, fresh, &t);

		if (e)
			return e;
		i = amber_timeline_lower_bound(t, ns);
		found = i < day_end(t, ns);
		tl_unlock(m);
		if (found || fresh == TL_NOW)
			err = found ? 0 : ENOENT;
	}
	if (!err)
		err = virt(o, MK_DAY, vino(MK_DAY, p->stream, ns), p->stream);
	o->day_ns = ns;
	return err;
}

/*
 * The index named `name` in day directory p, or -1: the snapshot taken at
 * exactly that time, however it is spelled (the listed name, or the time
 * `amberfs log` prints).  Caller holds tl_lock.
 */
static long find_in_day(const amber_timeline *t, const struct mnt_node *p, const char *name)
{
	int64_t ns;
	size_t i;

	if (amber_time_parse(&ns, name) || day_of(ns) != p->day_ns)
		return -1;
	i = amber_timeline_lower_bound(t, ns);
	if (i >= amber_timeline_count(t) || amber_timeline_time(t, i) != ns)
		return -1;
	return (long)i;
}

static int lookup_in_day(struct mnt *m, struct mnt_node *p, const char *name,
			 struct mnt_nodeinfo *o)
{
	char id[AMBER_OID_HEXSZ + 1];
	amber_timeline *t;
	int64_t ns;
	long i = -1;
	int err;

	if (amber_time_parse(&ns, name) || day_of(ns) != p->day_ns)
		return ENOENT;
	err = index_find(m, p->stream, p->day_ns, ns, id);
	if (err > 0)
		return err;
	if (err == 0 && !id[0])
		return ENOENT;
	for (int fresh = 1; err == DAY_NO_INDEX && i < 0 && fresh <= TL_NOW; fresh++) {
		int e = tl_lock(m, p->stream, fresh, &t);

		if (e)
			return e;
		i = find_in_day(t, p, name);
		if (i >= 0)
			amber_timeline_id(id, t, (size_t)i);
		tl_unlock(m);
	}
	if (err == DAY_NO_INDEX && i < 0)
		return ENOENT;
	err = stream_snaproot(m, p->stream, id, MNT_TIMEOUT_IMMUTABLE, o);
	/* verify checks every entry of an index page, readers only its ends:
	 * the name must be the time of the snapshot's own record */
	if (!err && amber_snapshot_info(o->snap->s)->time_ns != ns) {
		mnt_log(m, "snapshot %s is listed at %s but its record has another time "
			"(tampered time index; run amberfs verify)", id, name);
		err = EIO;
	}
	return err;
}

/*
 * The newest snapshot before the end of the span `name` denotes, by the
 * skip links of the records from the stream's tip: O(log n) record reads,
 * no walk of the history (amber_resolve).  Reading the ref each time keeps
 * at/ live.
 */
static int lookup_at(struct mnt *m, struct mnt_node *p, const char *name,
		     struct mnt_nodeinfo *o)
{
	char id[AMBER_OID_HEXSZ + 1], spec[300];
	int64_t ns, end;
	int rc;

	if (amber_time_parse_span(&ns, &end, name) || strlen(name) > 256)
		return ENOENT;
	snprintf(spec, sizeof(spec), "@%s", name);
	rc = amber_resolve(id, m->a, p->stream, spec);
	if (rc == AMBER_ENOTFOUND || rc == AMBER_EINVAL)
		return ENOENT;
	if (rc)
		return mnt_errno(m, rc, name);
	return stream_snaproot(m, p->stream, id, MNT_TIMEOUT_MOVING, o);
}

static int lookup_tag(struct mnt *m, const char *name, struct mnt_nodeinfo *o)
{
	char id[AMBER_OID_HEXSZ + 1];
	struct strv tags = {0};
	int err = list_tags(m, &tags), found = strv_has(&tags, name), rc;

	strv_free(&tags);
	if (err || !found)
		return err ? err : ENOENT;
	rc = amber_resolve(id, m->a, NULL, name);
	if (rc)
		return rc == AMBER_ENOTFOUND ? ENOENT : mnt_errno(m, rc, name);
	return snaproot(m, id, MNT_TIMEOUT_IMMUTABLE, o);
}

static int lookup_id(struct mnt *m, const char *name, struct mnt_nodeinfo *o)
{
	char id[AMBER_OID_HEXSZ + 1];
	size_t len = strlen(name);
	int rc;

	if (len < 7 || len > AMBER_OID_HEXSZ || strspn(name, "0123456789abcdef") != len)
		return ENOENT;
	rc = amber_resolve(id, m->a, NULL, name);
	if (rc == AMBER_ENOTFOUND || rc == AMBER_EAMBIGUOUS || rc == AMBER_EINVAL)
		return ENOENT;
	if (rc)
		return mnt_errno(m, rc, name);
	if (strncmp(id, name, len) != 0)
		return ENOENT;  /* resolved as something other than an id */
	return snaproot(m, id, len == AMBER_OID_HEXSZ ? MNT_TIMEOUT_IMMUTABLE :
			MNT_TIMEOUT_MOVING, o);
}

int mnt_layout_lookup(struct mnt *m, struct mnt_node *p, const char *name,
		      struct mnt_nodeinfo *o)
{
	switch (p->kind) {
	case MK_ROOT: return lookup_root(m, name, o);
	case MK_STREAM: return lookup_stream_view(m, p->stream, 0, name, o);
	case MK_STREAMS: return lookup_streams(m, name, o);
	case MK_SNAPSHOTS: return lookup_day(m, p, name, o);
	case MK_DAY: return lookup_in_day(m, p, name, o);
	case MK_AT: return lookup_at(m, p, name, o);
	case MK_TAGS: return lookup_tag(m, name, o);
	case MK_IDS: return lookup_id(m, name, o);
	default: return ENOTDIR;
	}
}

int mnt_layout_is_virtual_dir(const struct mnt_node *n)
{
	return n->kind != MK_LATEST && n->kind != MK_SNAPROOT && n->kind != MK_ENTRY;
}

/* Readlink ---------------------------------------------------------------- */

int mnt_layout_readlink(struct mnt *m, struct mnt_node *n, char *out, size_t cap)
{
	char day[32], name[48], id[AMBER_OID_HEXSZ + 1];
	struct mnt_snap *snap = NULL;
	int64_t ns;
	int rc = amber_resolve(id, m->a, n->stream, "latest");

	if (rc == AMBER_ENOTFOUND)
		return ENOENT;
	if (rc)
		return mnt_errno(m, rc, n->stream);
	rc = mnt_snap_get(m, id, &snap);
	if (rc)
		return rc;
	ns = amber_snapshot_info(snap->s)->time_ns;
	mnt_snap_put(m, snap);
	day_name(day, ns);
	time_name(name, ns);
	snprintf(out, cap, "snapshots/%s/%s", day, name);
	return 0;
}

/* Listings ---------------------------------------------------------------- */

struct fixed_ent {
	const char *name;
	enum mnt_kind kind;
	uint64_t ino;
};

static int list_fixed(const struct fixed_ent *v, size_t n, size_t p, const char *stream,
		      int has_latest, mnt_emit_fn emit, void *ctx)
{
	for (size_t i = p; i < n; i++) {
		uint64_t ino = v[i].ino ? v[i].ino : vino(v[i].kind, stream, 0);

		if (v[i].kind == MK_LATEST && !has_latest)
			continue;
		if (emit(ctx, v[i].name, ino, v[i].kind == MK_LATEST ? S_IFLNK : S_IFDIR,
			 (off_t)(i + 1 + COOKIE_BASE)))
			break;
	}
	return 0;
}

static int list_root(struct mnt *m, struct mnt_node *n, size_t p, mnt_emit_fn emit, void *ctx)
{
	static const struct fixed_ent root[] = {
		{"latest", MK_LATEST, MNT_INO_LATEST},
		{"snapshots", MK_SNAPSHOTS, MNT_INO_SNAPSHOTS},
		{"at", MK_AT, MNT_INO_AT},
		{"streams", MK_STREAMS, MNT_INO_STREAMS},
		{"tags", MK_TAGS, MNT_INO_TAGS},
		{"ids", MK_IDS, MNT_INO_IDS},
	};
	static const struct fixed_ent stream[] = {
		{"latest", MK_LATEST, 0},
		{"snapshots", MK_SNAPSHOTS, 0},
		{"at", MK_AT, 0},
	};
	const char *s = n->kind == MK_ROOT ? m->o.stream : n->stream;
	int has = p == 0 && stream_has_snapshots(m, s);

	if (n->kind == MK_ROOT)
		return list_fixed(root, 6, p, s, has, emit, ctx);
	return list_fixed(stream, 3, p, s, has, emit, ctx);
}

static int list_strv(const struct strv *v, size_t p, enum mnt_kind kind, mnt_emit_fn emit,
		     void *ctx)
{
	for (size_t i = p; i < v->n; i++) {
		uint64_t ino = kind == MK_STREAM ? vino(MK_STREAM, v->v[i], 0)
						 : vino(MK_TAGS, v->v[i], 1);

		if (emit(ctx, v->v[i], ino, S_IFDIR, (off_t)(i + 1 + COOKIE_BASE)))
			break;
	}
	return 0;
}

static int list_days(struct mnt *m, struct mnt_node *n, size_t p, mnt_emit_fn emit, void *ctx)
{
	char name[32];
	amber_timeline *t;
	size_t i = p, next, count;
	int err = tl_lock(m, n->stream, 1, &t);

	if (err)
		return err;
	count = amber_timeline_count(t);
	for (; i < count; i = next) {
		int64_t day = day_of(amber_timeline_time(t, i));

		next = day_end(t, day);
		if (next <= i)          /* times strictly increase; never loop anyway */
			next = i + 1;
		day_name(name, day);
		if (emit(ctx, name, vino(MK_DAY, n->stream, day), S_IFDIR,
			 (off_t)(next + COOKIE_BASE)))
			break;
	}
	tl_unlock(m);
	return 0;
}

/* A day from the index: cookies are positions in the day's listing. */
static int list_day_index(struct mnt *m, const struct mnt_day *d, size_t p, mnt_emit_fn emit,
			  void *ctx)
{
	char name[48];

	for (size_t i = p; i < d->n; i++) {
		time_name(name, d->v[i].time_ns);
		if (emit(ctx, name, vino(MK_SNAPROOT, d->v[i].id, 0), S_IFDIR,
			 (off_t)(i + 1 + COOKIE_BASE)))
			break;
	}
	return 0;
}

static int list_day(struct mnt *m, struct mnt_node *n, size_t p, mnt_emit_fn emit, void *ctx)
{
	char name[48], id[AMBER_OID_HEXSZ + 1];
	const struct mnt_day *d;
	amber_timeline *t;
	size_t i, end;
	int err = day_lock(m, n->stream, n->day_ns, p == 0, &d);

	if (err == 0) {
		list_day_index(m, d, p, emit, ctx);
		tl_unlock(m);
		return 0;
	}
	if (err != DAY_NO_INDEX || (err = tl_lock(m, n->stream, 1, &t)) != 0)
		return err;
	i = amber_timeline_lower_bound(t, n->day_ns);
	end = day_end(t, n->day_ns);
	for (i = i > p ? i : p; i < end; i++) {
		snap_name(name, t, i);
		amber_timeline_id(id, t, i);
		/* d_ino: a stand-in; stat gives the root entry's number */
		if (emit(ctx, name, vino(MK_SNAPROOT, id, 0), S_IFDIR,
			 (off_t)(i + 1 + COOKIE_BASE)))
			break;
	}
	tl_unlock(m);
	return 0;
}

/* Emit the ids of stream ordinal s from index i. @return 1 if emit is full. */
static int list_ids_of(struct mnt *m, const char *stream, size_t s, size_t i,
		       mnt_emit_fn emit, void *ctx)
{
	char id[AMBER_OID_HEXSZ + 1];
	amber_timeline *t;
	int full = 0;

	if (tl_lock(m, stream, 1, &t))
		return 0;
	for (size_t n = amber_timeline_count(t); i < n && !full; i++) {
		amber_timeline_id(id, t, i);
		full = emit(ctx, id, vino(MK_SNAPROOT, id, 0), S_IFDIR,
			    (off_t)(((uint64_t)s << IDS_SHIFT | (i + 1)) + COOKIE_BASE));
	}
	tl_unlock(m);
	return full;
}

static int list_ids(struct mnt *m, size_t p, mnt_emit_fn emit, void *ctx)
{
	struct strv streams = {0};
	size_t s = p >> IDS_SHIFT, i = p & ((1ULL << IDS_SHIFT) - 1);
	int err = list_streams(m, &streams);

	for (; !err && s < streams.n; s++, i = 0)
		if (list_ids_of(m, streams.v[s], s, i, emit, ctx))
			break;
	strv_free(&streams);
	return err;
}

int mnt_layout_list(struct mnt *m, struct mnt_node *n, off_t off, mnt_emit_fn emit,
		    void *ctx)
{
	size_t p = off > COOKIE_BASE ? (size_t)(off - COOKIE_BASE) : 0;
	struct strv v = {0};
	int err = 0;

	switch (n->kind) {
	case MK_ROOT:
	case MK_STREAM: return list_root(m, n, p, emit, ctx);
	case MK_SNAPSHOTS: return list_days(m, n, p, emit, ctx);
	case MK_DAY: return list_day(m, n, p, emit, ctx);
	case MK_IDS: return list_ids(m, p, emit, ctx);
	case MK_AT: return 0;
	case MK_STREAMS:
		err = list_streams(m, &v);
		if (!err)
			list_strv(&v, p, MK_STREAM, emit, ctx);
		break;
	case MK_TAGS:
		err = list_tags(m, &v);
		if (!err)
			list_strv(&v, p, MK_TAGS, emit, ctx);
		break;
	default:
		return ENOTDIR;
	}
	strv_free(&v);
	return err;
}
