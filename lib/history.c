/*
 * The time index that travels with the archive: skip links in the records.
 *
 * Snapshot number h of a stream (its height: 1 for the first) carries in
 * its authenticated record the ids and times of its ancestors at heights
 * h - 2^i for every i <= ctz(h) with h - 2^i >= 1.  Link 0 is the parent;
 * a snapshot at an odd height has only that, one at a multiple of 2^k has
 * k + 1 links, two on average.  This is a deterministic skip list laid
 * backwards along the first-parent chain:
 *
 *   - Finding the newest snapshot before a time T from the tip: at a node
 *     at or after T, jump along its farthest link whose time is still at
 *     or after T; when even the parent is before T, the parent is the
 *     answer.  Going back, the levels first rise (each jump lands on a
 *     multiple of a larger power of two), then, once a level overshoots,
 *     they strictly fall: at most 2 log2(n) record reads.
 *   - Times in the links let each step decide without reading the node it
 *     does not jump to; the node jumped to is read, authenticated, and must
 *     have the height and time its link promised, or the archive is
 *     tampered with (AMBER_EAUTH).
 *
 * Records written before the index (layout 1) have height 0 and no links;
 * a search that meets one reports AMBER_HISTORY_NO_INDEX and the caller
 * walks the history instead (amber_timeline).  A record written on top of
 * such a history counts its ancestors once to learn its height.
 */
#include "amber.h"
#include "archive.h"
#include "codec.h"
#include "error.h"
#include "manifest.h"
#include "history.h"
#include "record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The record of `oid`, which a link said is at `height` with `time`
 * (height 0: no expectation). */
static int read_node(amber_record *r, amber_archive *a, const char *stream,
		     const uint8_t oid[20], uint64_t height, int64_t time)
{
	char hex[41];
	int rc = amber_record_read(r, a, oid);

	if (rc < 0)
		return rc;
	amber_oid_tohex(hex, oid);
	if (strcmp(r->stream, stream) != 0)
		rc = amber_fail(AMBER_EAUTH, "snapshot %s belongs to stream '%s', found on "
				"stream '%s'", hex, r->stream, stream);
	else if (height && ((r->height && r->height != height) || r->time_ns != time))
		rc = amber_fail(AMBER_EAUTH, "snapshot %s: a skip link names it with another "
				"height or time (tampered index; run amberfs verify)", hex);
	if (rc < 0)
		amber_record_dispose(r);
	return rc;
}

/* The farthest link of r whose time is at or after end (r->skip[0] is). */
static size_t farthest_at_or_after(const amber_record *r, int64_t end)
{
	size_t j = 0;

	while (j + 1 < r->nskip && r->skip[j + 1].time_ns >= end)
		j++;
	return j;
}

int amber_history_find(uint8_t out[20], amber_archive *a, const char *stream,
		       const uint8_t tip[20], int64_t end)
{
	amber_record r;
	uint64_t h;
	int64_t t;
	size_t j;
	int rc = read_node(&r, a, stream, tip, 0, 0);

	while (rc == 0 && r.time_ns >= end) {
		if (r.height == 0) {
			rc = AMBER_HISTORY_NO_INDEX;
		} else if (r.nskip == 0) {
			rc = AMBER_ENOTFOUND;
		} else if (r.skip[0].time_ns < end) {
			memcpy(out, r.skip[0].oid, 20);
			amber_record_dispose(&r);
			return 0;
		} else {
			j = farthest_at_or_after(&r, end);
			memcpy(out, r.skip[j].oid, 20);
			h = r.height - (1ULL << j);
			t = r.skip[j].time_ns;
			amber_record_dispose(&r);
			rc = read_node(&r, a, stream, out, h, t);
			continue;
		}
		amber_record_dispose(&r);
		return rc;
	}
	if (rc == 0) {
		memcpy(out, tip, 20);
		amber_record_dispose(&r);
	}
	return rc;
}

/* ---- writing the links ---------------------------------------------------------------- */

/* Height of `oid` in a history without an index: count to the first. */
static int count_height(uint64_t *h, amber_archive *a, const uint8_t oid[20])
{
	uint8_t cur[20], parent[20];
	int64_t t;
	int has = 1, rc = 0;

	memcpy(cur, oid, 20);
	for (*h = 0; rc == 0 && has; (*h)++, memcpy(cur, parent, 20))
		rc = amber_commit_time(&t, parent, &has, a, cur);
	return rc;
}

/*
 * The ancestor at height `target` of `from` (at height `from_h`), with its
 * time: along the farthest link that does not pass the target, or parent
 * by parent through records without links.
 */
static int seek_height(amber_skiplink *out, amber_archive *a, const char *stream,
		       const amber_skiplink *from, uint64_t from_h, uint64_t target)
{
	amber_record r;
	amber_skiplink cur = *from;
	uint64_t h = from_h;
	int rc = 0;

	while (rc == 0 && h > target) {
		size_t j = 0;

		if ((rc = read_node(&r, a, stream, cur.oid, h, cur.time_ns)) < 0)
			break;
		if (r.height == 0 && !r.has_parent)
			rc = amber_fail(AMBER_ECORRUPT, "stream '%s' is shorter than its index says",
					stream);
		else if (r.height == 0) {
			memcpy(cur.oid, r.parent, 20);
			h--;
			amber_record_dispose(&r);
			if ((rc = amber_record_read(&r, a, cur.oid)) < 0)
				break;
			cur.time_ns = r.time_ns;
		} else {
			while (j + 1 < r.nskip && h - (1ULL << (j + 1)) >= target)
				j++;
			cur = r.skip[j];
			h -= 1ULL << j;
		}
		amber_record_dispose(&r);
	}
	if (rc == 0)
		*out = cur;
	return rc;
}

/*
 * The page a record at height h with (h - 1) % span == 0 writes: the span
 * snapshots below it, read parent by parent from `parent` (at h - 1, time
 * parent_time), each authenticated and checked against the link that led
 * to it.  Costs span record reads once every span snapshots.
 */
static int build_page(amber_buf *out, amber_archive *a, const amber_record *r,
		      const amber_record *p)
{
	amber_page pg = {0};
	amber_skiplink cur = r->skip[0];
	amber_record n;
	int rc = 0;

	pg.n = r->page_span;
	pg.first = r->height - pg.n;
	if (p->page_span && p->page_height && p->page_height == pg.first - 1) {
		pg.prev_height = p->page_height;
		pg.prev = p->page;
	}
	if (!(pg.v = malloc(pg.n * sizeof(*pg.v))))
		return amber_fail(AMBER_ERROR, "out of memory");
	for (uint32_t i = pg.n; rc == 0 && i-- > 0;) {
		pg.v[i].time_ns = cur.time_ns;
		memcpy(pg.v[i].oid, cur.oid, 20);
		if (i == 0)
			break;
		if ((rc = read_node(&n, a, r->stream, cur.oid, pg.first + i, cur.time_ns)) < 0)
			break;
		if (!n.has_parent)
			rc = amber_fail(AMBER_ECORRUPT, "stream '%s' is shorter than its index says",
					r->stream);
		memcpy(cur.oid, n.parent, 20);
		cur.time_ns = n.nskip ? n.skip[0].time_ns : 0;
		if (!n.nskip && rc == 0) {      /* a record without links: read the parent */
			amber_record_dispose(&n);
			if ((rc = amber_record_read(&n, a, cur.oid)) == 0)
				cur.time_ns = n.time_ns;
		}
		amber_record_dispose(&n);
	}
	if (rc == 0)
		rc = amber_page_encode(out, &pg);
	free(pg.v);
	return rc;
}

/* Pages: inherit the parent's newest page, or write the next one. */
static int page_links(amber_record *r, amber_archive *a, const amber_record *p,
		      amber_buf *page)
{
	r->page_span = p && p->page_span ? p->page_span
		       : a->index_span ? a->index_span : AMBER_PAGE_SPAN_DEFAULT;
	if (p && p->page_span) {
		r->page_height = p->page_height;
		r->page = p->page;
	}
	if (r->height < 2 || (r->height - 1) % r->page_span != 0)
		return 0;
	return build_page(page, a, r, p);
}

int amber_history_links(amber_record *r, amber_archive *a, amber_buf *page)
{
	amber_record p;
	uint64_t ph;
	int rc;

	r->nskip = 0;
	r->height = 1;
	r->page_height = 0;
	memset(&r->page, 0, sizeof(r->page));
	if (!r->has_parent)
		return page_links(r, a, NULL, page);
	if ((rc = read_node(&p, a, r->stream, r->parent, 0, 0)) < 0)
		return rc;
	ph = p.height;
	memcpy(r->skip[0].oid, r->parent, 20);
	r->skip[0].time_ns = p.time_ns;
	if (ph == 0 && (rc = count_height(&ph, a, r->parent)) < 0) {
		amber_record_dispose(&p);
		return rc;
	}
	r->height = ph + 1;
	r->nskip = amber_skip_count(r->height);
	/* link i is link i - 1 of the ancestor link i - 1 names */
	for (size_t i = 1; rc == 0 && i < r->nskip; i++)
		rc = seek_height(&r->skip[i], a, r->stream, &r->skip[i - 1],
				 r->height - (1ULL << (i - 1)), r->height - (1ULL << i));
	if (rc == 0)
		rc = page_links(r, a, &p, page);
	amber_record_dispose(&p);
	return rc;
}

/* Where a new page lands: the caller stores the page and names it here. */
void amber_history_page_written(amber_record *r, const amber_link *page)
{
	r->page = *page;
	r->page_height = r->height - 1;
}

/* ---- listing a span of time ----------------------------------------------------------- */

/*
 * Listing [start, end): the newest snapshot before end (skip links), then
 * parent by parent down to the newest page (at most span - 1 records), then
 * page by page.  Each page is authenticated by the link that names it and
 * must end just below where the walk is: its last entry is the parent named
 * by the record above it, and the record of its first entry (one read per
 * page) names the last entry of the page before.
 */
typedef struct span_list {
	amber_page_ent *v;      /* newest first while collecting */
	size_t n, cap, max;     /* max: keep only the newest max (0: all) */
	int64_t start;
} span_list;

/* Add one entry; 1 when the list is done (an entry before start, or full). */
static int take(span_list *l, int64_t time, const uint8_t oid[20], int *rc)
{
	if (time < l->start || (l->max && l->n >= l->max))
		return 1;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		amber_page_ent *v = realloc(l->v, cap * sizeof(*v));

		if (!v) {
			*rc = amber_fail(AMBER_ERROR, "out of memory");
			return 1;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].time_ns = time;
	memcpy(l->v[l->n].oid, oid, 20);
	l->n++;
	return 0;
}

/* Where the pages start: the record just above the newest page. */
typedef struct page_at {
	amber_link link;
	uint64_t height;        /* last height the page lists */
	uint32_t span;
	amber_skiplink last;    /* what its last entry must be */
} page_at;

/*
 * From snapshot x down to the newest page below it, parent by parent.
 * @return 0 with *pa->height set when pages follow (0: the list is done),
 *         AMBER_HISTORY_NO_INDEX for records without pages, or an error.
 */
static int walk_tail(span_list *l, page_at *pa, amber_archive *a, const char *stream,
		     const uint8_t x[20])
{
	amber_record r;
	uint8_t cur[20];
	uint64_t h = 0;
	int64_t t = 0;
	int rc = 0;

	memcpy(cur, x, 20);
	pa->height = 0;
	while ((rc = read_node(&r, a, stream, cur, h, t)) == 0) {
		if (r.page_span == 0 || (r.page_height == 0 && r.height > r.page_span))
			rc = AMBER_HISTORY_NO_INDEX;    /* written before pages */
		else if (take(l, r.time_ns, cur, &rc) || r.height == 1)
			;
		else if (r.height == r.page_height + 1) {
			pa->link = r.page;
			pa->height = r.page_height;
			pa->span = r.page_span;
			pa->last = r.skip[0];
		} else {
			memcpy(cur, r.parent, 20);
			h = r.height - 1;
			t = r.skip[0].time_ns;
			amber_record_dispose(&r);
			continue;
		}
		amber_record_dispose(&r);
		break;
	}
	return rc;
}

static int read_page(amber_page *pg, amber_archive *a, const page_at *pa)
{
	amber_buf b = AMBER_BUF_INIT;
	char hex[41];
	int rc;

	amber_oid_tohex(hex, pa->link.oid);
	rc = amber_archive_read_obj(&b, a, &pa->link, AMBER_OBJ_PAGE,
				    80 + (size_t)pa->span * 28, "index page");
	if (rc == 0)
		rc = amber_page_decode(pg, b.data, b.len);
	amber_buf_dispose(&b);
	if (rc < 0)
		return amber_fail(rc, "index page %s: %s", hex, amber_error_last());
	if (pg->n != pa->span || pg->first + pg->n - 1 != pa->height ||
	    memcmp(pg->v[pg->n - 1].oid, pa->last.oid, 20) != 0 ||
	    pg->v[pg->n - 1].time_ns != pa->last.time_ns) {
		free(pg->v);
		return amber_fail(AMBER_EAUTH, "index page %s does not list the snapshots below "
				  "the record that names it (tampered time index; run amberfs "
				  "verify)", hex);
	}
	return 0;
}

/* Page after page from pa, each checked at both ends against the chain. */
static int walk_pages(span_list *l, page_at *pa, amber_archive *a, const char *stream)
{
	amber_page pg;
	amber_record r;
	int rc = 0, done = 0, have;

	while (rc == 0 && !done && pa->height) {
		if ((rc = read_page(&pg, a, pa)) < 0)
			break;
		/* the first entry's record: its height and time as listed, and its
		 * parent is the last entry of the page before */
		rc = read_node(&r, a, stream, pg.v[0].oid, pg.first, pg.v[0].time_ns);
		have = rc == 0;
		for (uint32_t i = pg.n; rc == 0 && !done && i-- > 0;)
			done = take(l, pg.v[i].time_ns, pg.v[i].oid, &rc);
		if (rc == 0 && !done && pg.first > 1 && !pg.prev_height)
			rc = AMBER_HISTORY_NO_INDEX;    /* pages start above older records */
		else if (rc == 0 && !done && pg.first > 1) {
			pa->link = pg.prev;
			pa->height = pg.prev_height;
			pa->last = r.skip[0];
		} else {
			done = 1;
		}
		if (have)
			amber_record_dispose(&r);
		free(pg.v);
	}
	return rc;
}

int amber_history_span(amber_page_ent **out, size_t *n, amber_archive *a, const char *stream,
		       const uint8_t tip[20], int64_t start, int64_t end, size_t max)
{
	span_list l = {NULL, 0, 0, max, start};
	page_at pa = {0};
	uint8_t x[20];
	int rc = amber_history_find(x, a, stream, tip, end);

	*out = NULL;
	*n = 0;
	if (rc == AMBER_ENOTFOUND) {
		amber_error_clear();
		return 0;
	}
	if (rc == 0)
		rc = walk_tail(&l, &pa, a, stream, x);
	if (rc == 0)
		rc = walk_pages(&l, &pa, a, stream);
	if (rc != 0) {
		free(l.v);
		return rc;
	}
	for (size_t i = 0; i < l.n / 2; i++) {   /* oldest first */
		amber_page_ent e = l.v[i];

		l.v[i] = l.v[l.n - 1 - i];
		l.v[l.n - 1 - i] = e;
	}
	*out = l.v;
	*n = l.n;
	return 0;
}

int amber_history_list(amber_snapref **out, size_t *n, amber_archive *a, const char *stream,
		       int64_t start, int64_t end, size_t max)
{
	const char *st = stream ? stream : "main";
	amber_page_ent *v = NULL;
	char ref[128];
	uint8_t tip[20];
	size_t k = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (!amber_refname_valid(st))
		return amber_fail(AMBER_EINVAL, "invalid stream name '%s'", st);
	snprintf(ref, sizeof(ref), "refs/heads/%s", st);
	rc = amber_store_ref_read(tip, a->store, ref);
	if (rc == AMBER_ENOTFOUND) {
		amber_error_clear();
		return 0;
	}
	if (rc == 0 && (rc = amber_archive_check_unlocked(a)) == 0)
		rc = amber_history_span(&v, &k, a, st, tip, start, end, max);
	if (rc == 0 && k && !(*out = malloc(k * sizeof(**out))))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; rc == 0 && i < k; i++) {
		(*out)[i].time_ns = v[i].time_ns;
		amber_oid_tohex((*out)[i].id, v[i].oid);
	}
	if (rc == 0)
		*n = k;
	free(v);
	return rc;
}

/* ---- checking the links --------------------------------------------------------------- */

/* A link seen on the way down, to be met at its height. */
typedef struct pending {
	uint64_t height;
	amber_skiplink link;
	uint8_t from[20];       /* the record that holds it */
} pending;

typedef struct hcheck {
	pending *v;
	size_t n, cap;
	amber_history_problem_fn fn;
	void *payload;
	amber_archive *a;
	amber_page pg;          /* the page whose entries are met on the way down */
	uint8_t pg_from[20];    /* the record that names it */
	int have_child;         /* the record above (child): its page fields */
	uint32_t c_span;
	uint64_t c_height, c_page_height;
	amber_link c_page;
} hcheck;

static int expect_link(hcheck *c, const amber_record *r, const uint8_t oid[20], size_t i)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		pending *v = realloc(c->v, cap * sizeof(*v));

		if (!v)
			return amber_fail(AMBER_ERROR, "out of memory");
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n].height = r->height - (1ULL << i);
	c->v[c->n].link = r->skip[i];
	memcpy(c->v[c->n].from, oid, 20);
	c->n++;
	return 0;
}

/* Meet the links that name height h: they must name (oid, time). */
static void meet(hcheck *c, uint64_t h, const uint8_t oid[20], int64_t time)
{
	size_t k = 0;

	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i].height != h) {
			c->v[k++] = c->v[i];
			continue;
		}
		if (memcmp(c->v[i].link.oid, oid, 20) != 0 || c->v[i].link.time_ns != time)
			c->fn(c->v[i].from, "a skip link does not name the ancestor at its "
			      "distance, or not with its time (tampered time index)", c->payload);
	}
	c->n = k;
}

/* One record on the way down; *h is its height if known (0 until then). */
static int check_one(hcheck *c, const amber_record *r, const uint8_t oid[20], uint64_t *h)
{
	int rc = 0;

	if (r->height && *h && r->height != *h)
		c->fn(oid, "height is not one less than its child's (tampered time index)",
		      c->payload);
	if (r->height && !*h)
		*h = r->height;
	if (*h)
		meet(c, *h, oid, r->time_ns);
	for (size_t i = 0; rc == 0 && i < r->nskip; i++)
		rc = expect_link(c, r, oid, i);
	if (!r->has_parent && *h > 1)
		c->fn(oid, "the first snapshot of the stream has a height above 1 (tampered "
		      "time index)", c->payload);
	return rc;
}

/* The page record `oid` writes: read it, to be met on the way down. */
static void page_open(hcheck *c, const amber_record *r, const uint8_t oid[20])
{
	page_at pa = {r->page, r->page_height, r->page_span, r->skip[0]};

	free(c->pg.v);
	memset(&c->pg, 0, sizeof(c->pg));
	if (read_page(&c->pg, c->a, &pa) < 0) {
		c->fn(oid, amber_error_last(), c->payload);
		amber_error_clear();
		memset(&c->pg, 0, sizeof(c->pg));
		return;
	}
	memcpy(c->pg_from, oid, 20);
}

/* Meet the pending page's entry for height h. */
static void page_meet(hcheck *c, uint64_t h, const uint8_t oid[20], int64_t time)
{
	amber_page_ent *e;

	if (!c->pg.v || h < c->pg.first || h >= c->pg.first + c->pg.n)
		return;
	e = &c->pg.v[h - c->pg.first];
	if (memcmp(e->oid, oid, 20) != 0 || e->time_ns != time)
		c->fn(c->pg_from, "an index page does not list the snapshot at its height, or not "
		      "with its time (tampered time index)", c->payload);
}

/* The page fields of a record against those of its child, and its own page. */
static void check_pages(hcheck *c, const amber_record *r, const uint8_t oid[20], uint64_t h)
{
	int creator = c->have_child && c->c_page_height && c->c_height == c->c_page_height + 1;

	page_meet(c, h, oid, r->time_ns);
	/* where pages start on an older history: the child has no page yet, or
	 * writes the first page, which links to none */
	if (c->have_child && c->c_span && !r->page_span && c->c_page_height &&
	    !(creator && c->pg.v && !c->pg.prev_height))
		c->fn(oid, "a record without index pages below one that names a page above it "
		      "(tampered time index)", c->payload);
	if (c->have_child && c->c_span && r->page_span) {
		if (r->page_span != c->c_span)
			c->fn(oid, "index page span differs from its child's (tampered time index)",
			      c->payload);
		else if (!creator && (r->page_height != c->c_page_height ||
				      memcmp(&r->page, &c->c_page, sizeof(r->page)) != 0))
			c->fn(oid, "names another index page than its child (tampered time index)",
			      c->payload);
		else if (creator && c->pg.v && (r->page_height != c->pg.prev_height ||
			 (r->page_height && memcmp(&r->page, &c->pg.prev, sizeof(r->page)) != 0)))
			c->fn(oid, "its index page is not the one the next page links back to "
			      "(tampered time index)", c->payload);
	}
	if (r->page_span && r->page_height && h == r->page_height + 1)
		page_open(c, r, oid);
	c->have_child = 1;
	c->c_span = r->page_span;
	c->c_height = h;
	c->c_page_height = r->page_height;
	c->c_page = r->page;
}

int amber_history_check(amber_archive *a, const char *stream, const uint8_t tip[20],
			amber_history_problem_fn fn, void *payload)
{
	hcheck c = {.fn = fn, .payload = payload, .a = a};
	amber_record r;
	uint8_t cur[20];
	uint64_t h = 0;
	int rc = 0, more = 1;

	memcpy(cur, tip, 20);
	while (rc == 0 && more) {
		if ((rc = read_node(&r, a, stream, cur, 0, 0)) < 0)
			break;
		rc = check_one(&c, &r, cur, &h);
		if (rc == 0)
			check_pages(&c, &r, cur, h);
		more = r.has_parent;
		memcpy(cur, r.parent, 20);
		h -= h > 0;
		amber_record_dispose(&r);
	}
	if (rc == 0 && c.n)
		fn(c.v[0].from, "a skip link names a height below the first snapshot (tampered "
		   "time index)", payload);
	free(c.v);
	free(c.pg.v);
	return rc;
}
