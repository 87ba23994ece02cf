/*
 * Native diff of two snapshots.
 *
 * Cost follows the change, not the archive: a directory whose tree object
 * and manifest link are the same in both snapshots is identical all the way
 * down (every link below is bound by those objects), so it is skipped
 * without reading, let alone decrypting, anything inside it.  Only the
 * manifests of directories on the path to a change are decoded.
 *
 * For a modified multi-chunk file, the changed region is found from the
 * two chunk lists: the run of identical chunks at the start and at the end
 * bounds it, and the two chunks where it starts are decoded to find the
 * first differing byte, so an append to a ledger reads as exactly that.
 */
#include "amber.h"
#include "error.h"
#include "manifest.h"
#include "dir.h"
#include "file.h"
#include "record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct differ {
	amber_snapshot *a, *b;
	int ranges;
	amber_diff_cb cb;
	void *payload;
	unsigned depth;           /* of the directories being compared */
	char path[8192];
} differ;

/* ---- chunk lists ----------------------------------------------------------- */

/* A file's chunks as (link, len) with start offsets; NONE gives zero chunks. */
typedef struct chunks {
	amber_cobj *held;         /* cache entry for multi-chunk files */
	const amber_chunkref *c;
	const uint64_t *off;
	size_t n;
	amber_chunkref one;
	uint64_t one_off[2];
} chunks;

static int chunks_get(chunks *k, amber_archive *a, const amber_entry *e)
{
	memset(k, 0, sizeof(*k));
	if (e->content == AMBER_C_CHUNKED) {
		int rc = amber_file_index(&k->held, a, e, e->name);
		const file_index *x = k->held ? k->held->data : NULL;

		if (rc < 0)
			return rc;
		k->c = x->c;
		k->off = x->off;
		k->n = x->n;
	} else if (e->content == AMBER_C_BLOB) {
		k->one.link = e->link;
		k->one.len = (uint32_t)e->size;
		k->one_off[1] = e->size;
		k->c = &k->one;
		k->off = k->one_off;
		k->n = 1;
	}
	return 0;
}

static void chunks_put(chunks *k, amber_archive *a)
{
	amber_cache_release(a->cache, k->held);
}

static int same_chunk(const amber_chunkref *x, const amber_chunkref *y)
{
	return x->len == y->len && memcmp(x->link.oid, y->link.oid, 20) == 0;
}

/*
 * The first differing byte of two chunks (or the shorter's length) and,
 * if `tail` is wanted, how many bytes at their ends agree after it.
 */
static int chunk_bounds(uint64_t *head, uint64_t *tail, amber_archive *a,
			const amber_chunkref *x, const amber_chunkref *y)
{
	amber_cobj *ox = NULL, *oy = NULL;
	int rc = amber_chunk_get(&ox, a, &x->link, x->len, "diff");

	if (rc == 0)
		rc = amber_chunk_get(&oy, a, &y->link, y->len, "diff");
	if (rc == 0) {
		const amber_buf *bx = ox->data, *by = oy->data;
		size_t n = bx->len < by->len ? bx->len : by->len, i = 0, j = 0;

		while (i < n && bx->data[i] == by->data[i])
			i++;
		while (tail && j < n - i && bx->data[bx->len - 1 - j] == by->data[by->len - 1 - j])
			j++;
		*head = i;
		if (tail)
			*tail = j;
	}
	amber_cache_release(a->cache, ox);
	amber_cache_release(a->cache, oy);
	return rc;
}

/* Fill old_range/new_range/appended of a modified regular file. */
static int content_ranges(amber_change *ch, differ *d)
{
	amber_archive *arc = d->a->a;
	chunks o, n;
	size_t p = 0, s = 0;
	uint64_t start, skip = 0, tail = 0;
	int one, rc = chunks_get(&o, arc, ch->old_e);

	if (rc == 0 && (rc = chunks_get(&n, arc, ch->new_e)) < 0)
		chunks_put(&o, arc);
	if (rc < 0)
		return rc;
	while (p < o.n && p < n.n && same_chunk(&o.c[p], &n.c[p]))
		p++;
	while (s < o.n - p && s < n.n - p && same_chunk(&o.c[o.n - 1 - s], &n.c[n.n - 1 - s]))
		s++;
	/* one chunk differs on each side: its bytes bound the change at both ends */
	one = o.n - s - p == 1 && n.n - s - p == 1;
	start = p < o.n ? o.off[p] : ch->old_e->size;
	if (p < o.n && p < n.n)
		rc = chunk_bounds(&skip, one ? &tail : NULL, arc, &o.c[p], &n.c[p]);
	start += skip;
	ch->old_range.off = ch->new_range.off = start;
	ch->old_range.len = (s ? o.off[o.n - s] : ch->old_e->size) - start - tail;
	ch->new_range.len = (s ? n.off[n.n - s] : ch->new_e->size) - start - tail;
	if (ch->old_range.len == 0 && start == ch->old_e->size)
		ch->appended = ch->new_range.len;
	chunks_put(&n, arc);
	chunks_put(&o, arc);
	return rc;
}

/* ---- entries ----------------------------------------------------------------- */

static int xattrs_equal(const amber_entry *x, const amber_entry *y)
{
	if (x->nxattrs != y->nxattrs)
		return 0;
	for (size_t i = 0; i < x->nxattrs; i++)
		if (strcmp(x->xattrs[i].name, y->xattrs[i].name) != 0 ||
		    x->xattrs[i].value_len != y->xattrs[i].value_len ||
		    memcmp(x->xattrs[i].value, y->xattrs[i].value, x->xattrs[i].value_len) != 0)
			return 0;
	return 1;
}

/* Metadata other than content; a directory's mtime follows its children. */
static int meta_equal(const amber_entry *x, const amber_entry *y)
{
	int dir = x->type == AMBER_T_DIR;

	return x->mode == y->mode && x->uid == y->uid && x->gid == y->gid &&
	       (dir || (x->mtime_sec == y->mtime_sec && x->mtime_nsec == y->mtime_nsec)) &&
	       xattrs_equal(x, y);
}

static int content_equal(const amber_entry *x, const amber_entry *y)
{
	switch (x->type) {
	case AMBER_T_REG:
		return x->size == y->size && x->content == y->content &&
		       (x->content == AMBER_C_NONE ||
			memcmp(x->link.oid, y->link.oid, 20) == 0);
	case AMBER_T_SYMLINK:
		return x->target_len == y->target_len &&
		       memcmp(x->target, y->target, x->target_len) == 0;
	case AMBER_T_CHR:
	case AMBER_T_BLK:
		return x->rdev == y->rdev;
	default:
		return 1;
	}
}

static int report(differ *d, int kind, const amber_entry *o, const amber_entry *n)
{
	amber_change ch = {.kind = kind, .path = d->path, .old_e = o, .new_e = n};
	int rc;

	if (kind == AMBER_MODIFIED) {
		ch.meta_changed = !meta_equal(o, n);
		if (d->ranges && o->type == AMBER_T_REG && (rc = content_ranges(&ch, d)) < 0)
			return rc;
	}
	return d->cb(&ch, d->payload);
}

static int diff_dirs(differ *d, const amber_entry *o, const amber_entry *n);

static int diff_pair(differ *d, const amber_entry *o, const amber_entry *n)
{
	if (!o)
		return report(d, AMBER_ADDED, NULL, n);
	if (!n)
		return report(d, AMBER_REMOVED, o, NULL);
	if (o->type != n->type)
		return report(d, AMBER_TYPE_CHANGED, o, n);
	if (o->type == AMBER_T_DIR) {
		int rc = meta_equal(o, n) ? 0 : report(d, AMBER_META_CHANGED, o, n);

		return rc ? rc : diff_dirs(d, o, n);
	}
	if (!content_equal(o, n))
		return report(d, AMBER_MODIFIED, o, n);
	return meta_equal(o, n) ? 0 : report(d, AMBER_META_CHANGED, o, n);
}

static int diff_child(void *ctx, const amber_entry *o, const amber_entry *n)
{
	differ *d = ctx;
	const amber_entry *e = o ? o : n;
	size_t l = strlen(d->path);
	int rc;

	if (l + e->name_len + 2 > sizeof(d->path))
		return amber_fail(AMBER_ERROR, "path too long under %s", d->path);
	snprintf(d->path + l, sizeof(d->path) - l, "%s%s", l ? "/" : "", e->name);
	rc = diff_pair(d, o, n);
	d->path[l] = '\0';
	return rc;
}

/* What merge() does with each name: its entry in x (o) and in y (n), NULL where absent. */
typedef int (*pair_fn)(void *ctx, const amber_entry *o, const amber_entry *n);

/* Walk two sorted listings in step, each name once, in name order. */
static int merge(const amber_dir *x, const amber_dir *y, pair_fn fn, void *ctx)
{
	size_t i = 0, j = 0, nx = amber_dir_count(x), ny = amber_dir_count(y);
	int rc = 0;

	while (rc == 0 && (i < nx || j < ny)) {
		const amber_entry *o = i < nx ? amber_dir_entry(x, i) : NULL;
		const amber_entry *n = j < ny ? amber_dir_entry(y, j) : NULL;
		int c = !o ? 1 : !n ? -1 : amber_name_cmp(o->name, o->name_len, n->name, n->name_len);

		rc = fn(ctx, c <= 0 ? o : NULL, c >= 0 ? n : NULL);
		i += c <= 0;
		j += c >= 0;
	}
	return rc;
}

static int diff_listings(differ *d, amber_dir *x, amber_dir *y)
{
	int rc = merge(x, y, diff_child, d);

	amber_dir_free(y);
	amber_dir_free(x);
	return rc;
}

/*
 * The children of a fanned-out directory, gathered from the buckets that
 * differ and then reported in name order (the buckets are keyed by token,
 * so their entries interleave in name order).  The listings stay open
 * while their entries are referenced.
 */
typedef struct gathered {
	struct pair { const amber_entry *o, *n; } *p;
	size_t n, cap;
	amber_dir **dirs;
	size_t ndirs;
} gathered;

static int gather_pair(void *ctx, const amber_entry *o, const amber_entry *n)
{
	gathered *g = ctx;

	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 64;
		struct pair *p = realloc(g->p, cap * sizeof(*p));

		if (!p)
			return amber_fail(AMBER_ERROR, "out of memory");
		g->p = p;
		g->cap = cap;
	}
	g->p[g->n++] = (struct pair){o, n};
	return 0;
}

static int keep_dir(gathered *g, amber_dir *x)
{
	amber_dir **d = realloc(g->dirs, (g->ndirs + 1) * sizeof(*d));

	if (!d) {
		amber_dir_free(x);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	g->dirs = d;
	g->dirs[g->ndirs++] = x;
	return 0;
}

/* One bucket of two fanned-out directories (either side may lack it). */
static int gather_bucket(gathered *g, differ *d, const amber_entry *o, const amber_entry *n,
			 const amber_bucket *bo, const amber_bucket *bn, unsigned bits)
{
	amber_dir *x = NULL, *y = NULL;
	int rc = 0;

	if (bo && bn && memcmp(bo->tree_oid, bn->tree_oid, 20) == 0)
		return 0; /* the same bucket: nothing in it changed */
	if (bo)
		rc = amber_dir_open_bucket(&x, d->a, o, bo, bits);
	if (rc == 0 && bn)
		rc = amber_dir_open_bucket(&y, d->b, n, bn, bits);
	if (rc == 0 && !x)
		x = amber_dir_empty();
	if (rc == 0 && !y)
		y = amber_dir_empty();
	if (rc == 0 && (!x || !y))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (rc < 0) {
		amber_dir_free(x);
		amber_dir_free(y);
		return rc;
	}
	if ((rc = keep_dir(g, x)) < 0) {
		amber_dir_free(y);
		return rc;
	}
	if ((rc = keep_dir(g, y)) < 0)
		return rc;
	return merge(x, y, gather_pair, g);	/* one bucket's two listings */
}

static int pair_cmp(const void *pa, const void *pb)
{
	const struct pair *a = pa, *b = pb;
	const amber_entry *x = a->o ? a->o : a->n, *y = b->o ? b->o : b->n;

	return amber_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

/*
 * Buckets are keyed by token, so with the same fan-out width an entry is in
 * the bucket of the same number on both sides: only buckets whose trees
 * differ are read, and their children are reported in name order.
 */
static int diff_fanout(differ *d, const amber_entry *o, const amber_entry *n,
		       const amber_fanout_view *vo, const amber_fanout_view *vn)
{
	gathered g = {0};
	size_t i = 0, j = 0;
	int rc = 0;

	while (rc == 0 && (i < vo->nb || j < vn->nb)) {
		const amber_bucket *bo = i < vo->nb ? &vo->b[i] : NULL;
		const amber_bucket *bn = j < vn->nb ? &vn->b[j] : NULL;
		int c = !bo ? 1 : !bn ? -1 : (int)bo->id - (int)bn->id;

		rc = gather_bucket(&g, d, o, n, c <= 0 ? bo : NULL, c >= 0 ? bn : NULL,
				   vo->bits);
		i += c <= 0;
		j += c >= 0;
	}
	if (rc == 0 && g.n > 1)
		qsort(g.p, g.n, sizeof(*g.p), pair_cmp);
	for (size_t k = 0; rc == 0 && k < g.n; k++)
		rc = diff_child(d, g.p[k].o, g.p[k].n);
	for (size_t k = 0; k < g.ndirs; k++)
		amber_dir_free(g.dirs[k]);
	free(g.dirs);
	free(g.p);
	return rc;
}

static int diff_dirs_at(differ *d, const amber_entry *o, const amber_entry *n)
{
	amber_fanout_view vo = {0}, vn = {0};
	amber_dir *x = NULL, *y = NULL;
	int rc = amber_dir_buckets_pair(&vo, &vn, d->a, o, d->b, n);

	if (rc == 0 && vo.b && vn.b && vo.bits == vn.bits) {
		rc = diff_fanout(d, o, n, &vo, &vn);
	} else if (rc == 0) {
		rc = amber_dir_open(&x, d->a, o);
		if (rc == 0)
			rc = amber_dir_open(&y, d->b, n);
		rc = rc == 0 ? diff_listings(d, x, y) : (amber_dir_free(x), amber_dir_free(y), rc);
	}
	free(vo.b);
	free(vn.b);
	return rc;
}

/* Recursive: bounded by AMBER_MAX_DEPTH, as no archive nests deeper. */
static int diff_dirs(differ *d, const amber_entry *o, const amber_entry *n)
{
	int rc;

	/* the same tree and manifest: identical below, nothing decrypted */
	if (memcmp(o->tree_oid, n->tree_oid, 20) == 0 &&
	    memcmp(&o->link, &n->link, sizeof(o->link)) == 0)
		return 0;
	if (d->depth > AMBER_MAX_DEPTH)
		return amber_fail(AMBER_ECORRUPT, "%.200s...: directories nested more than %d "
				  "levels deep, which no archive holds: the archive is malformed "
				  "(see amberfs verify)", d->path, AMBER_MAX_DEPTH);
	d->depth++;
	rc = diff_dirs_at(d, o, n);
	d->depth--;
	return rc;
}

int amber_diff(amber_snapshot *a, amber_snapshot *b, const char *path, int ranges,
	       amber_diff_cb cb, void *payload)
{
	differ *d = calloc(1, sizeof(*d));
	amber_entry *o = NULL, *n = NULL;
	int rc, ro, rn;

	if (!d)
		return amber_fail(AMBER_ERROR, "out of memory");
	if (a->a != b->a) {
		free(d);
		return amber_fail(AMBER_EINVAL, "cannot diff snapshots of two archives");
	}
	*d = (differ){.a = a, .b = b, .ranges = ranges, .cb = cb, .payload = payload};
	ro = amber_stat(&o, a, path ? path : "");
	rn = amber_stat(&n, b, path ? path : "");
	rc = ro < 0 && ro != AMBER_ENOTFOUND ? ro : rn < 0 && rn != AMBER_ENOTFOUND ? rn : 0;
	if (rc == 0 && !o && !n)
		rc = ro; /* missing on both sides */
	if (rc == 0) {
		amber_error_clear();
		rc = diff_pair(d, o, n);
	}
	amber_entry_free(o);
	amber_entry_free(n);
	free(d);
	return rc;
}
