/*
 * Directories and paths in a snapshot.  A directory's git tree holds "m",
 * its manifest, and one object per child named by the child's token; a
 * fanned-out directory holds one subtree per bucket instead (its link then
 * names the fan-out list).  The tree is checked against the authenticated
 * manifest: "m" must be the manifest the parent's link names, and every
 * child object in the tree must be the one the manifest names under that
 * child's token, with nothing extra (invariant 5; record.c).
 */
#include "dir.h"

#include "codec.h"
#include "error.h"
#include "record.h"
#include "store.h"

#include <assert.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_MANIFEST ((size_t)256 << 20)

struct amber_dir {
	amber_entry *e;
	size_t n;
	size_t cap;             /* entries allocated in e (while merging buckets) */
	/* a streamed listing (AMBER_DIR_STREAM): its buckets in order, each
	 * decoded into its place in e while the listing is in use */
	struct bucket_work *w;  /* NULL otherwise */
	size_t mapped;          /* e is a mapping of this many bytes (entries_map), or 0 */
	amber_fanout_view v;    /* owned */
	char *what;             /* owned */
	atomic_int complete;    /* every bucket was found decoded */
	/* of a complete streamed listing, made when first asked for: the entry
	 * after each in name order (n for the last) */
	_Atomic(size_t *) name_next;
};

static void stream_free(amber_dir *d);
static void entries_unmap(amber_entry *e, size_t mapped);

void amber_dir_free(amber_dir *d)
{
	if (!d)
		return;
	if (d->w)
		stream_free(d);
	else if (d->mapped)     /* a stream that never started: no entries yet */
		entries_unmap(d->e, d->mapped);
	else
		amber_entries_free(d->e, d->n);
	free(atomic_load(&d->name_next));
	free(d->v.b);
	free(d->what);
	free(d);
}

amber_dir *amber_dir_empty(void)
{
	return calloc(1, sizeof(amber_dir));
}

size_t amber_dir_count(const amber_dir *d)
{
	return d->n;
}

static int stream_wait(const amber_dir *d, size_t bucket);
static size_t stream_bucket_of(const amber_dir *d, size_t i);

int amber_dir_entry_get(const amber_dir *d, size_t i, const amber_entry **out)
{
	int rc = 0;

	*out = NULL;
	if (i >= d->n)
		return 0;
	if (d->w && (rc = stream_wait(d, stream_bucket_of(d, i))) < 0)
		return rc;
	*out = &d->e[i];
	return 0;
}

const amber_entry *amber_dir_entry(const amber_dir *d, size_t i)
{
	const amber_entry *e;

	if (amber_dir_entry_get(d, i, &e) < 0)
		amber_error_clear();
	return e;
}

/* Binary search of e[lo, hi) by name. */
static const amber_entry *search(const amber_entry *e, size_t lo, size_t hi, const char *name,
				 size_t len)
{
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = amber_name_cmp(e[mid].name, e[mid].name_len, name, len);

		if (c == 0)
			return &e[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int stream_find(const amber_dir *d, const char *name, size_t len, const amber_entry **out);

int amber_dir_find(const amber_dir *d, const char *name, size_t len, const amber_entry **out)
{
	if (d->w)
		return stream_find(d, name, len, out);
	*out = search(d->e, 0, d->n, name, len);
	return 0;
}

const amber_entry *amber_dir_lookup(const amber_dir *d, const char *name, size_t len)
{
	const amber_entry *e;

	if (amber_dir_find(d, name, len, &e) < 0)
		amber_error_clear();
	return e;
}

int amber_tree_read(amber_buf *b, amber_tparsed **t, size_t *n, amber_archive *a,
		    const uint8_t oid[20], const char *what)
{
	int type = 0;
	int rc = amber_store_read(b, &type, a->store, oid, MAX_MANIFEST);

	if (rc == 0 && type != AMBER_GIT_TREE)
		rc = amber_fail(AMBER_EAUTH, "%s: object is not a tree", what);
	if (rc == 0)
		rc = amber_tree_parse(t, n, b->data, b->len, what);
	return rc;
}

int amber_tree_mismatch(const char *what)
{
	return amber_fail(AMBER_EAUTH, "%s: git tree does not match its authenticated "
			  "manifest (spliced or swapped objects)", what);
}

/*
 * Every child object in the tree is the one the manifest names, nothing
 * more; in bucket b of a fanned-out directory (b not NULL), the manifest
 * holds b's count of entries, each of whose name token falls in b.  One
 * token per entry serves both checks.
 */
static int check_leaf(amber_snapshot *s, const amber_tparsed *t, size_t tn,
		      const amber_entry *e, size_t n, const amber_bucket *b, unsigned bits,
		      const char *what)
{
	char tok[AMBER_TOKEN_HEXSZ + 1];
	size_t want = 1;

	if (b && n != b->count)
		return amber_tree_mismatch(what);
	for (size_t i = 0; i < n; i++) {
		const amber_tparsed *x;
		const uint8_t *oid = e[i].content == AMBER_C_BLOB ? e[i].link.oid : e[i].tree_oid;
		uint32_t mode = e[i].content == AMBER_C_BLOB ? 0100644 : 040000;

		if (e[i].content == AMBER_C_NONE && !b)
			continue;
		amber_name_token(tok, amber_archive_keys(s->a), e[i].name, e[i].name_len);
		if (b && amber_token_bucket(tok, bits) != b->id)
			return amber_tree_mismatch(what);
		if (e[i].content == AMBER_C_NONE)
			continue;
		want++;
		x = amber_tree_find(t, tn, tok);
		if (!x || x->mode != mode || memcmp(x->oid, oid, 20) != 0)
			return amber_tree_mismatch(what);
	}
	return tn == want ? 0 : amber_tree_mismatch(what);
}

/* Read a leaf directory tree and its manifest ("m" must be link); b, bits:
 * the bucket it is, in a fanned-out directory (else NULL).  into (with b):
 * the entries go there, b->count of them, and *e is into (a listing's place
 * for the bucket: no copy); on failure it holds nothing to free. */
static int read_leaf(amber_entry **e, size_t *n, amber_snapshot *s, const uint8_t tree[20],
		     const amber_link *link, const amber_bucket *b, unsigned bits,
		     const char *what, amber_entry *into)
{
	amber_buf tb = AMBER_BUF_INIT, mb = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	const amber_tparsed *m;
	size_t tn = 0;
	int rc = amber_tree_read(&tb, &t, &tn, s->a, tree, what);

	if (rc == 0 && (!(m = amber_tree_find(t, tn, "m")) || memcmp(m->oid, link->oid, 20)))
		rc = amber_tree_mismatch(what);
	amber_buf_init(&mb, MAX_MANIFEST);
	if (rc == 0)
		rc = amber_archive_read_obj(&mb, s->a, link, AMBER_OBJ_MANIFEST, MAX_MANIFEST, what);
	if (rc == 0 && into) {
		rc = amber_manifest_decode_into(into, b->count, mb.data, mb.len);
		if (rc > 0) /* another count than its bucket's */
			rc = amber_tree_mismatch(what);
		*e = rc == 0 ? into : NULL;
		*n = rc == 0 ? b->count : 0;
	} else if (rc == 0) {
		rc = amber_manifest_decode(e, n, mb.data, mb.len);
	}
	if (rc == 0)
		atomic_fetch_add(&s->a->counters.dirs_decoded, 1);
	if (rc == 0 && (rc = check_leaf(s, t, tn, *e, *n, b, bits, what)) < 0) {
		if (into)
			amber_entries_clear(into, *n);
		else
			amber_entries_free(*e, *n);
		*e = NULL;
	}
	free(t);
	amber_buf_dispose(&mb);
	amber_buf_dispose(&tb);
	return rc;
}

/* Move n entries to the end of d (growing it geometrically: a fanned-out
 * directory arrives in hundreds of buckets). */
static int append_entries(amber_dir *d, amber_entry *e, size_t n)
{
	amber_entry *v;
	size_t cap = d->cap;

	if (n > SIZE_MAX / sizeof(*v) / 2 - d->n)
		return amber_fail(AMBER_ERROR, "out of memory");
	if (d->n + n > cap) {
		cap = cap ? cap * 2 : 64;
		if (cap < d->n + n)
			cap = d->n + n;
		if (!(v = realloc(d->e, cap * sizeof(*v))))
			return amber_fail(AMBER_ERROR, "out of memory");
		d->e = v;
		d->cap = cap;
	}
	memcpy(d->e + d->n, e, n * sizeof(*e));
	d->n += n;
	return 0;
}

/* An entry's place in the sort: its name's first 8 bytes, big-endian and
 * zero-padded, order names as amber_name_cmp does unless they are equal. */
struct sort_key {
	uint64_t prefix;
	size_t i;
};

static int sort_key_cmp(const void *a, const void *b, void *arg)
{
	const struct sort_key *x = a, *y = b;
	const amber_entry *e = arg;

	if (x->prefix != y->prefix)
		return x->prefix < y->prefix ? -1 : 1;
	return amber_name_cmp(e[x->i].name, e[x->i].name_len, e[y->i].name, e[y->i].name_len);
}

/*
 * Sort d's entries by name.  Keys are sorted (qsort of the entries
 * themselves would move each large struct log n times), each with the
 * start of its name, so that nearly every comparison reads the key alone
 * instead of two entries and their names scattered over megabytes; then
 * the entries are permuted in place, one cycle at a time: each moves once,
 * and no second array of them is allocated (a 20k-entry directory's
 * entries are 3.6 MiB, every page of which a fresh daemon would fault in).
 */
static int sort_entries(amber_dir *d)
{
	struct sort_key *keys = malloc((d->n ? d->n : 1) * sizeof(*keys));
	size_t *to = (size_t *)(void *)keys;       /* reused: the source of each place */

	if (!keys)
		return amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; i < d->n; i++) {
		uint64_t v = 0;

		for (size_t j = 0; j < 8; j++)
			v = v << 8 | (j < d->e[i].name_len ? (uint8_t)d->e[i].name[j] : 0);
		keys[i].prefix = v;
		keys[i].i = i;
	}
	qsort_r(keys, d->n, sizeof(*keys), sort_key_cmp, d->e);
	/* (to[i] is written after keys[i] was read: the array shrinks in place) */
	for (size_t i = 0; i < d->n; i++)
		to[i] = keys[i].i;
	for (size_t i = 0; i < d->n; i++) {
		amber_entry tmp;
		size_t j = i;

		if (to[i] == i)
			continue;
		tmp = d->e[i];
		while (to[j] != i) {
			size_t k = to[j];

			d->e[j] = d->e[k];
			to[j] = j;
			j = k;
		}
		d->e[j] = tmp;
		to[j] = j;
	}
	free(keys);
	return 0;
}

static const char *dir_what(char *buf, size_t len, const amber_entry *dir)
{
	snprintf(buf, len, "directory '%s'", dir->name ? dir->name : "/");
	return buf;
}

/* Check a fan-out list against its directory's tree: "m" and one b<id> per bucket. */
static int check_buckets(const amber_fanout_view *v, const amber_tparsed *t, size_t tn,
			 const char *what)
{
	if (tn != v->nb + 1)
		return amber_tree_mismatch(what);
	for (size_t i = 0; i < v->nb; i++) {
		char name[8];
		const amber_tparsed *x;

		snprintf(name, sizeof(name), "b%04x", v->b[i].id);
		x = amber_tree_find(t, tn, name);
		if (!x || x->mode != 040000 || memcmp(x->oid, v->b[i].tree_oid, 20) != 0)
			return amber_tree_mismatch(what);
	}
	return 0;
}

/* The tree name of child c of a layout-2 node: a bucket at the last level. */
static void node_child_name(char name[8], const amber_fanout_node *nd, const amber_bucket *c)
{
	unsigned w = amber_fanout_width(nd->bits, nd->level);

	if (nd->level + 1 == amber_fanout_levels(nd->bits))
		snprintf(name, 8, "b%04x", (nd->prefix << w) | c->id);
	else
		snprintf(name, 8, "f%x", c->id);
}

/* Append one bucket to v, grown to 64, 128, 256, ... as nb reaches each (the
 * capacity follows from nb; at most 2^16 buckets, as ids are distinct). */
static int view_add(amber_fanout_view *v, const amber_bucket *b)
{
	if (v->nb == 0 || (v->nb >= 64 && (v->nb & (v->nb - 1)) == 0)) {
		size_t nc = v->nb ? v->nb * 2 : 64;
		amber_bucket *x = realloc(v->b, nc * sizeof(*x));

		if (!x)
			return amber_fail(AMBER_ERROR, "out of memory");
		v->b = x;
	}
	v->b[v->nb++] = *b;
	return 0;
}

/* Each child of nd is in its tree t under its name, and nothing else is. */
static int check_node_tree(const amber_fanout_node *nd, const amber_tparsed *t, size_t tn,
			   const amber_link *m, const char *what)
{
	const amber_tparsed *x = amber_tree_find(t, tn, "m");

	if (!x || x->mode != 0100644 || memcmp(x->oid, m->oid, 20) || tn != nd->n + 1)
		return amber_tree_mismatch(what);
	for (size_t i = 0; i < nd->n; i++) {
		char name[8];

		node_child_name(name, nd, &nd->c[i]);
		x = amber_tree_find(t, tn, name);
		if (!x || x->mode != 040000 || memcmp(x->oid, nd->c[i].tree_oid, 20) != 0)
			return amber_tree_mismatch(what);
	}
	return 0;
}

int amber_dir_node(amber_fanout_node *nd, amber_snapshot *s, const amber_link *m,
		   const uint8_t tree[20], unsigned level, unsigned prefix, unsigned bits,
		   uint32_t count, const char *what)
{
	amber_buf fb = AMBER_BUF_INIT, tb = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	size_t tn = 0;
	uint64_t sum = 0;
	int rc;

	amber_buf_init(&fb, 4096);
	rc = amber_archive_read_obj(&fb, s->a, m, AMBER_OBJ_FANOUT, 4096, what);
	if (rc == 0)
		rc = amber_fanout_node_decode(nd, fb.data, fb.len);
	amber_buf_dispose(&fb);
	if (rc == 0 && ((level && nd->bits != bits) || nd->level != level || nd->prefix != prefix))
		rc = amber_fail(AMBER_ECORRUPT, "%s: fan-out node out of place", what);
	for (size_t i = 0; rc == 0 && i < nd->n; i++)
		sum += nd->c[i].count;
	if (rc == 0 && level && sum != count)
		rc = amber_fail(AMBER_ECORRUPT, "%s: fan-out node holds %llu entries, its parent "
				"says %u", what, (unsigned long long)sum, count);
	if (rc == 0)
		rc = amber_tree_read(&tb, &t, &tn, s->a, tree, what);
	if (rc == 0)
		rc = check_node_tree(nd, t, tn, m, what);
	free(t);
	amber_buf_dispose(&tb);
	return rc;
}

/*
 * Walk the layout-2 node named by m (tree `tree`) at `level` with `prefix`,
 * which its parent said holds `count` entries, adding its buckets to v in
 * id order.  The nesting is at most AMBER_FANOUT_LEVELS_MAX deep: each
 * node's level must be the one below its parent's.
 */
static int node_walk(amber_fanout_view *v, amber_snapshot *s, const amber_link *m,
		     const uint8_t tree[20], unsigned level, unsigned prefix, uint32_t count,
		     int items, const char *what)
{
	amber_fanout_node nd;
	unsigned w;
	int last, rc = amber_dir_node(&nd, s, m, tree, level, prefix, v->bits, count, what);

	if (rc < 0)
		return rc;
	v->bits = nd.bits;
	if (items && level == 0)        /* stop above the last level of nodes */
		v->item_level = amber_fanout_levels(nd.bits) >= 2 ? amber_fanout_levels(nd.bits) - 1
								  : 0;
	w = amber_fanout_width(nd.bits, level);
	last = level + 1 == amber_fanout_levels(nd.bits) ||
	       (v->item_level && level + 1 == v->item_level);
	for (size_t i = 0; rc == 0 && i < nd.n; i++) {
		amber_bucket b = nd.c[i];

		b.id = (uint16_t)((prefix << w) | b.id);
		if (last)
			rc = view_add(v, &b);
		else
			rc = node_walk(v, s, &b.link, b.tree_oid, level + 1, b.id, b.count, items,
				       what);
	}
	return rc;
}

/* Decode the fan-out (a bucket list, or the tree of nodes) and check it
 * against the directory's tree. */
static int fanout_list(amber_fanout_view *v, amber_snapshot *s, const amber_entry *dir,
		       const amber_tparsed *t, size_t tn, int items, const char *what)
{
	amber_buf fb = AMBER_BUF_INIT;
	int rc;

	amber_buf_init(&fb, 8 << 20);
	rc = amber_archive_read_obj(&fb, s->a, &dir->link, AMBER_OBJ_FANOUT, 8 << 20, what);
	if (rc == 0 && amber_fanout_layout(fb.data, fb.len) == 2) {
		amber_buf_dispose(&fb);
		v->nb = 0;
		rc = node_walk(v, s, &dir->link, dir->tree_oid, 0, 0, 0, items, what);
	} else {
		if (rc == 0)
			rc = amber_fanout_decode(&v->b, &v->bits, &v->nb, fb.data, fb.len);
		if (rc == 0)
			rc = check_buckets(v, t, tn, what);
		amber_buf_dispose(&fb);
	}
	if (rc < 0) {
		free(v->b);
		v->b = NULL;
		v->nb = 0;
	}
	return rc;
}

static int is_fanout(const amber_tparsed *t, size_t tn)
{
	for (size_t i = 0; i < tn; i++)
		if (t[i].mode == 040000 && ((t[i].name_len == 5 && t[i].name[0] == 'b') ||
					    (t[i].name_len == 2 && t[i].name[0] == 'f')))
			return 1;
	return 0;
}

/* amber_dir_buckets(), or with items the view of a streamed listing (see
 * amber_fanout_view.item_level). */
static int dir_view(amber_fanout_view *v, amber_snapshot *s, const amber_entry *dir, int items)
{
	amber_buf tb = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	const amber_tparsed *m;
	char what[AMBER_NAME_MAX + 64];
	size_t tn = 0;
	int rc = 0;

	memset(v, 0, sizeof(*v));
	dir_what(what, sizeof(what), dir);
	if (dir->type != AMBER_T_DIR || dir->content != AMBER_C_DIR)
		rc = amber_fail(AMBER_ENOTDIR, "%s is not a directory", dir->name);
	if (rc == 0)
		rc = amber_tree_read(&tb, &t, &tn, s->a, dir->tree_oid, what);
	if (rc == 0 && (!(m = amber_tree_find(t, tn, "m")) || memcmp(m->oid, dir->link.oid, 20)))
		rc = amber_tree_mismatch(what);
	amber_store_runs_begin();       /* the fan-out's nodes lie together */
	if (rc == 0 && is_fanout(t, tn))
		rc = fanout_list(v, s, dir, t, tn, items, what);
	amber_store_runs_end();
	free(t);
	amber_buf_dispose(&tb);
	return rc;
}

int amber_dir_buckets(amber_fanout_view *v, amber_snapshot *s, const amber_entry *dir)
{
	return dir_view(v, s, dir, 0);
}

/* Both sides of a pair walk (amber_dir_buckets_pair). */
typedef struct pairwalk {
	amber_fanout_view *v[2];
	amber_snapshot *s[2];
	const char *what;
} pairwalk;

/*
 * Nodes at `level`, `prefix` of two layout-2 fan-outs of the same bits
 * (either may be absent: c[k] NULL): children whose trees are the same on
 * both sides are skipped, the others walked, so that only the buckets that
 * differ are gathered, at a cost that follows the change.
 */
static int pair_nodes(pairwalk *pw, const amber_bucket *const c[2], unsigned level,
		      unsigned prefix)
{
	amber_fanout_node nd[2];
	size_t i[2] = {0, 0};
	unsigned bits = pw->v[0]->bits, w;
	int last, rc = 0;

	for (int k = 0; k < 2; k++) {
		nd[k].n = 0;
		if (rc == 0 && c[k])
			rc = amber_dir_node(&nd[k], pw->s[k], &c[k]->link, c[k]->tree_oid, level,
					    prefix, bits, level ? c[k]->count : 0, pw->what);
	}
	if (rc == 0 && level == 0 && nd[0].bits != nd[1].bits)
		return 1; /* not the same fan-out width: the caller walks both whole */
	if (rc == 0 && level == 0)
		bits = pw->v[0]->bits = pw->v[1]->bits = nd[0].bits;
	w = amber_fanout_width(bits, level);
	last = level + 1 == amber_fanout_levels(bits);
	while (rc == 0 && (i[0] < nd[0].n || i[1] < nd[1].n)) {
		unsigned id0 = i[0] < nd[0].n ? nd[0].c[i[0]].id : UINT_MAX;
		unsigned id1 = i[1] < nd[1].n ? nd[1].c[i[1]].id : UINT_MAX;
		unsigned id = id0 < id1 ? id0 : id1;
		amber_bucket b[2];
		const amber_bucket *cc[2] = {NULL, NULL};

		for (int k = 0; k < 2; k++)
			if ((k ? id1 : id0) == id) {
				b[k] = nd[k].c[i[k]++];
				b[k].id = (uint16_t)((prefix << w) | id);
				cc[k] = &b[k];
			}
		if (cc[0] && cc[1] && memcmp(b[0].tree_oid, b[1].tree_oid, 20) == 0)
			continue;
		for (int k = 0; last && rc == 0 && k < 2; k++)
			if (cc[k])
				rc = view_add(pw->v[k], cc[k]);
		if (!last && rc == 0)
			rc = pair_nodes(pw, cc, level + 1, (prefix << w) | id);
	}
	return rc;
}

int amber_dir_buckets_pair(amber_fanout_view *vo, amber_fanout_view *vn, amber_snapshot *so,
			   const amber_entry *o, amber_snapshot *sn, const amber_entry *n)
{
	int lo = 0, ln = 0, rc = amber_dir_fanout_layout(&lo, so, o);
	char what[AMBER_NAME_MAX + 64];

	memset(vo, 0, sizeof(*vo));
	memset(vn, 0, sizeof(*vn));
	if (rc == 0)
		rc = amber_dir_fanout_layout(&ln, sn, n);
	if (rc == 0 && lo == 2 && ln == 2) {
		amber_bucket bo = {.link = o->link}, bn = {.link = n->link};
		const amber_bucket *c[2] = {&bo, &bn};
		pairwalk pw = {{vo, vn}, {so, sn}, dir_what(what, sizeof(what), n)};

		memcpy(bo.tree_oid, o->tree_oid, 20);
		memcpy(bn.tree_oid, n->tree_oid, 20);
		rc = pair_nodes(&pw, c, 0, 0);
		for (int k = 0; rc == 0 && k < 2; k++) {
			amber_fanout_view *v = k ? vn : vo;
			amber_bucket none = {0};

			/* a side with no bucket that differs: empty, but fanned out */
			if (!v->b && (rc = view_add(v, &none)) == 0)
				v->nb = 0;
		}
		if (rc == 0)
			return 0;
		free(vo->b);
		free(vn->b);
		memset(vo, 0, sizeof(*vo));
		memset(vn, 0, sizeof(*vn));
		if (rc < 0)
			return rc;
		rc = 0; /* not the same width: every bucket of each */
	}
	if (rc == 0)
		rc = amber_dir_buckets(vo, so, o);
	if (rc == 0)
		rc = amber_dir_buckets(vn, sn, n);
	return rc;
}

int amber_dir_fanout_layout(int *layout, amber_snapshot *s, const amber_entry *dir)
{
	amber_buf tb = AMBER_BUF_INIT, fb = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	char what[AMBER_NAME_MAX + 64];
	size_t tn = 0;
	int rc = 0;

	*layout = 0;
	dir_what(what, sizeof(what), dir);
	if (dir->type != AMBER_T_DIR || dir->content != AMBER_C_DIR)
		rc = amber_fail(AMBER_ENOTDIR, "%s is not a directory", dir->name);
	if (rc == 0)
		rc = amber_tree_read(&tb, &t, &tn, s->a, dir->tree_oid, what);
	if (rc == 0 && is_fanout(t, tn)) {
		amber_buf_init(&fb, 8 << 20);
		rc = amber_archive_read_obj(&fb, s->a, &dir->link, AMBER_OBJ_FANOUT, 8 << 20, what);
		if (rc == 0 && (*layout = amber_fanout_layout(fb.data, fb.len)) < 0)
			rc = amber_fail(AMBER_ECORRUPT, "%s: unknown fan-out layout", what);
	}
	free(t);
	amber_buf_dispose(&fb);
	amber_buf_dispose(&tb);
	return rc;
}

int amber_dir_open_bucket(amber_dir **out, amber_snapshot *s, const amber_entry *dir,
			  const amber_bucket *b, unsigned bits)
{
	amber_dir *d = calloc(1, sizeof(*d));
	char what[AMBER_NAME_MAX + 64];
	int rc = d ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	dir_what(what, sizeof(what), dir);
	if (rc == 0)
		rc = read_leaf(&d->e, &d->n, s, b->tree_oid, &b->link, b, bits, what, NULL);
	if (rc < 0) {
		amber_dir_free(d);
		return rc;
	}
	d->cap = d->n;
	*out = d;
	return 0;
}

/*
 * A fanned-out directory's buckets are decoded by the caller's thread and
 * up to DIR_HELPERS_MAX helpers started for the call, each bucket straight
 * into its own part of the listing: a FUSE opendir of a 20k-entry directory
 * waits for about 2,000 buckets (two objects each, read, decrypted and
 * checked), while the other cores are idle.  The threads take buckets in
 * order from one counter, so the caller never waits for a helper that has
 * not started yet (on a busy machine it may start late, or after the work
 * is done): it waits only for the buckets in flight.  A directory of fewer
 * than DIR_PAR_MIN buckets starts no helper.  The failure reported is the
 * one of the first failing bucket, as one thread would have met it, on the
 * caller's thread.
 */
#define DIR_HELPERS_MAX 3
#define DIR_PAR_MIN 64
/* Entries a listing makes room for at once; a hostile fan-out list may
 * declare more, and is then read bucket by bucket into a growing array. */
#define DIR_PRESIZE_MAX ((size_t)1 << 20)

/* The work of one call, shared by its threads; the last one out frees it. */
struct bucket_work {
	pthread_mutex_t lock;
	pthread_cond_t idle;    /* busy fell to 0 */
	pthread_cond_t progress; /* a bucket was done or failed */
	unsigned refs;          /* the caller and the helpers still running */
	size_t nb;              /* buckets (a late helper must not read v) */
	size_t next;            /* the next bucket to take */
	size_t busy;            /* buckets taken, not yet done */
	size_t failed;          /* the first failing bucket, nb if none */
	int rc;                 /* its code and message */
	char msg[1024];
	/* read-only, and read only by a thread that holds a bucket (the
	 * caller's v and what are gone once it returns) */
	amber_snapshot *s;
	const amber_fanout_view *v;
	const char *what;
	amber_entry *e;         /* the listing */
	size_t *at;             /* where bucket i's entries go in e */
	uint8_t *done;          /* bucket i's entries are in e */
	/* a view of nodes (v->item_level): the buckets of node i, set with done[i] */
	struct item_buckets *sub;
};

/* The buckets of one node of a streamed listing, in id order (their
 * entries follow each other from the node's place in the listing). */
struct item_buckets {
	size_t n;
	uint16_t id[AMBER_FANOUT_NODE_MAX];
	uint32_t count[AMBER_FANOUT_NODE_MAX];
};

static void work_put(struct bucket_work *w)
{
	unsigned left;

	pthread_mutex_lock(&w->lock);
	left = --w->refs;
	pthread_mutex_unlock(&w->lock);
	if (left)
		return;
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->idle);
	pthread_cond_destroy(&w->progress);
	free(w->at);
	free(w->done);
	free(w->sub);
	free(w);
}

/* Caller holds w->lock: take the next bucket, or return 0 if none is left
 * (or one before it failed, or the listing is being freed). */
static int work_take(struct bucket_work *w, size_t *i)
{
	if (w->next >= w->nb || w->next > w->failed)
		return 0;
	*i = w->next++;
	w->busy++;
	return 1;
}

/*
 * Node i of a view of nodes: the node (at v->item_level, checked against
 * what its parent said) and each of its buckets, into their place.  All or
 * nothing: the entries of a node whose bucket fails are freed.
 */
static int work_item(struct bucket_work *w, size_t i)
{
	const amber_fanout_view *v = w->v;
	const amber_bucket *p = &v->b[i];
	amber_fanout_node nd;
	amber_entry *e;
	size_t n, at = w->at[i], k;
	unsigned width = amber_fanout_width(v->bits, v->item_level);
	int rc = amber_dir_node(&nd, w->s, &p->link, p->tree_oid, v->item_level, p->id, v->bits,
				p->count, w->what);

	/* each bucket straight into its place: amber_dir_node held the counts
	 * to the node's, read_leaf holds each bucket to its count */
	for (k = 0; rc == 0 && k < nd.n; k++) {
		amber_bucket b = nd.c[k];

		b.id = (uint16_t)((p->id << width) | b.id);
		rc = read_leaf(&e, &n, w->s, b.tree_oid, &b.link, &b, v->bits, w->what,
			       w->e + at);
		w->sub[i].id[k] = b.id;
		w->sub[i].count[k] = b.count;
		if (rc == 0)
			at += n;
	}
	if (rc == 0) {
		assert(at == w->at[i] + p->count); /* amber_dir_node holds it to its count */
		w->sub[i].n = nd.n;
	} else { /* all or nothing: the buckets before the failing one go */
		amber_entries_clear(w->e + w->at[i], at - w->at[i]);
	}
	return rc;
}

/* Decode bucket i (taken) into its place; returns with w->lock held. */
static void work_one(struct bucket_work *w, size_t i)
{
	const amber_fanout_view *v = w->v;
	amber_entry *e = NULL;
	size_t n = 0;
	int rc;

	if (v->item_level)
		rc = work_item(w, i);
	else
		rc = read_leaf(&e, &n, w->s, v->b[i].tree_oid, &v->b[i].link, &v->b[i], v->bits,
			       w->what, w->e + w->at[i]);
	pthread_mutex_lock(&w->lock);
	if (rc == 0) {
		w->done[i] = 1;
	} else if (i < w->failed) {
		w->failed = i;
		w->rc = rc;
		snprintf(w->msg, sizeof(w->msg), "%s", amber_error_last());
	}
	if (--w->busy == 0)
		pthread_cond_broadcast(&w->idle);
	pthread_cond_broadcast(&w->progress);
}

/* Take and decode buckets until none is left (or one before it failed). */
static void work_run(struct bucket_work *w)
{
	size_t i;

	amber_store_runs_begin();
	pthread_mutex_lock(&w->lock);
	while (work_take(w, &i)) {
		pthread_mutex_unlock(&w->lock);
		work_one(w, i);
	}
	pthread_mutex_unlock(&w->lock);
	amber_store_runs_end();
}

static void *helper_main(void *arg)
{
	work_run(arg);
	work_put(arg);
	return NULL;
}

static size_t online_cpus(void)
{
	static atomic_long n;
	long c = atomic_load(&n);

	if (c == 0) {
		c = sysconf(_SC_NPROCESSORS_ONLN);
		c = c < 1 ? 1 : c;
		atomic_store(&n, c);
	}
	return (size_t)c;
}

/* Every bucket into d, growing it bucket by bucket (a list declaring more
 * than DIR_PRESIZE_MAX entries). */
static int read_buckets_grow(amber_dir *d, amber_snapshot *s, const amber_fanout_view *v,
			     const char *what)
{
	int rc = 0;

	amber_store_runs_begin();
	for (size_t i = 0; rc == 0 && i < v->nb; i++) {
		amber_entry *e = NULL;
		size_t n = 0;

		rc = read_leaf(&e, &n, s, v->b[i].tree_oid, &v->b[i].link, &v->b[i], v->bits, what,
			       NULL);
		if (rc == 0 && (rc = append_entries(d, e, n)) == 0)
			free(e); /* entries moved into d */
		else
			amber_entries_free(e, n);
	}
	amber_store_runs_end();
	return rc;
}

/*
 * A streamed listing's array of n entries.  A large one (a 20k-entry
 * directory's is about 4 MiB) is a mapping of its own, 2 MiB-aligned and
 * with transparent huge pages asked for: the helpers' first writes to it
 * then fault a few times instead of once per 4 KiB page (a sixth of the
 * daemon's CPU in the first walk of such a directory).  *mapped: its
 * length, or 0 from malloc.
 */
#define ENTRIES_HUGE ((size_t)2 << 20)

static amber_entry *entries_map(size_t n, size_t *mapped)
{
	size_t len = (n ? n : 1) * sizeof(amber_entry), head;
	char *q, *p;

	*mapped = 0;
	if (len < ENTRIES_HUGE)
		return malloc(len);
	len = (len + ENTRIES_HUGE - 1) & ~(ENTRIES_HUGE - 1);
	q = mmap(NULL, len + ENTRIES_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	if (q == MAP_FAILED)
		return NULL;
	p = (char *)(((uintptr_t)q + ENTRIES_HUGE - 1) & ~(uintptr_t)(ENTRIES_HUGE - 1));
	head = (size_t)(p - q);
	if (head)
		munmap(q, head);
	munmap(p + len, ENTRIES_HUGE - head);
	(void)madvise(p, len, MADV_HUGEPAGE);   /* a hint: 4 KiB pages else */
	*mapped = len;
	return (amber_entry *)(void *)p;
}

static void entries_unmap(amber_entry *e, size_t mapped)
{
	if (mapped)
		munmap(e, mapped);
	else
		free(e);
}

/*
 * The shared work of decoding v's buckets into d (room for total entries),
 * with its helpers started; NULL on out of memory.  v and what must stay
 * until no bucket is in flight and none will be taken.  stream: d's array
 * is entries_map's (freed by stream_free or amber_dir_free).
 */
static struct bucket_work *work_start(amber_dir *d, amber_snapshot *s,
				      const amber_fanout_view *v, const char *what, size_t total,
				      int stream)
{
	struct bucket_work *w = calloc(1, sizeof(*w));
	/* (a node of a view of nodes holds up to AMBER_FANOUT_NODE_MAX buckets) */
	int many = v->nb * (v->item_level ? AMBER_FANOUT_NODE_MAX : 1) >= DIR_PAR_MIN;
	size_t helpers = many ? online_cpus() - 1 : 0, sum = 0;
	pthread_attr_t attr;

	if (stream)
		d->e = entries_map(total, &d->mapped);
	else
		d->e = malloc((total ? total : 1) * sizeof(*d->e));
	if (!w || !d->e || !(w->at = malloc((v->nb ? v->nb : 1) * sizeof(*w->at))) ||
	    !(w->done = calloc(v->nb ? v->nb : 1, 1)) ||
	    (v->item_level && !(w->sub = calloc(v->nb ? v->nb : 1, sizeof(*w->sub))))) {
		if (w) {
			free(w->at);
			free(w->done);
			free(w);
		}
		amber_fail(AMBER_ERROR, "out of memory");
		return NULL;
	}
	d->cap = total;
	for (size_t i = 0; i < v->nb; i++) {
		w->at[i] = sum;
		sum += v->b[i].count;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->idle, NULL);
	pthread_cond_init(&w->progress, NULL);
	w->refs = 1;
	w->nb = w->failed = v->nb;
	w->s = s;
	w->v = v;
	w->what = what;
	w->e = d->e;
	/* (one helper at least: every machine then runs the same code, and one
	 * thread is cheap next to DIR_PAR_MIN buckets) */
	if (many && helpers < 1)
		helpers = 1;
	helpers = helpers > DIR_HELPERS_MAX ? DIR_HELPERS_MAX : helpers;
	if (helpers && pthread_attr_init(&attr) == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		for (size_t k = 0; k < helpers; k++) {
			pthread_t t;

			w->refs++;      /* no helper runs yet: no lock needed */
			if (pthread_create(&t, &attr, helper_main, w) != 0) {
				w->refs--;
				break;
			}
		}
		pthread_attr_destroy(&attr);
	}
	return w;
}

/* Every bucket into d, on several threads (see DIR_HELPERS_MAX). */
static int read_buckets_par(amber_dir *d, amber_snapshot *s, const amber_fanout_view *v,
			    const char *what, size_t total)
{
	struct bucket_work *w = work_start(d, s, v, what, total, 0);
	int rc = 0;

	if (!w)
		return AMBER_ERROR;
	work_run(w);
	pthread_mutex_lock(&w->lock);
	while (w->busy)
		pthread_cond_wait(&w->idle, &w->lock);
	/* every bucket is taken now, or none after a failure will be */
	w->next = v->nb;
	if (w->failed < v->nb)
		rc = amber_fail(w->rc, "%s", w->msg);
	pthread_mutex_unlock(&w->lock);
	if (rc < 0) {
		for (size_t i = 0; i < v->nb; i++)
			for (size_t j = 0; w->done[i] && j < v->b[i].count; j++)
				amber_entry_dispose(&d->e[w->at[i] + j]);
	} else {
		d->n = total;
	}
	work_put(w);
	return rc;
}

/* Merge every bucket's listing into d, in name order. */
static int read_buckets(amber_dir *d, amber_snapshot *s, const amber_fanout_view *v,
			const char *what)
{
	size_t total = 0;
	int rc;

	for (size_t i = 0; i < v->nb; i++)
		total += v->b[i].count;
	if (total > DIR_PRESIZE_MAX)
		rc = read_buckets_grow(d, s, v, what);
	else
		rc = read_buckets_par(d, s, v, what, total);
	if (rc == 0)
		rc = sort_entries(d);
	for (size_t i = 1; rc == 0 && i < d->n; i++)
		if (amber_name_cmp(d->e[i - 1].name, d->e[i - 1].name_len, d->e[i].name,
				   d->e[i].name_len) == 0)
			rc = amber_fail(AMBER_ECORRUPT, "%s: duplicate name in fanned-out directory",
					what);
	return rc;
}

/* ---- streamed listings ---------------------------------------------------------
 *
 * A streamed listing of a fanned-out directory holds its buckets in bucket
 * order (each bucket in name order), decoded by helper threads from the
 * open on, and by a reader that gets ahead of them: the first entries are
 * there after one item (a bucket, or a node of the last level of a
 * layout-2 fan-out with its buckets: amber_fanout_view.item_level) instead
 * of all of them, and a walk lists them while the rest are decoded on the
 * other cores.  A name is looked up in the bucket its token falls in.
 */

/* The bucket holding entry i: the last whose first entry is at or before i. */
static size_t stream_bucket_of(const amber_dir *d, size_t i)
{
	const size_t *at = d->w->at;
	size_t lo = 0, hi = d->v.nb;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (at[mid] <= i)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* Wait until bucket k is decoded, decoding the buckets up to it that no
 * helper has taken yet; its error if it (or one before it) failed. */
static int stream_wait(const amber_dir *d, size_t k)
{
	struct bucket_work *w = d->w;
	size_t i;
	int rc = 0;

	pthread_mutex_lock(&w->lock);
	while (!w->done[k]) {
		if (w->failed <= k) {
			rc = amber_fail(w->rc, "%s", w->msg);
			break;
		}
		if (w->next <= k && work_take(w, &i)) {
			pthread_mutex_unlock(&w->lock);
			amber_store_runs_begin();
			work_one(w, i);         /* returns with the lock held */
			amber_store_runs_end();
			continue;
		}
		pthread_cond_wait(&w->progress, &w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return rc;
}

/* Name in item k (decoded) of d, which holds bucket id if any does. */
static int stream_search(const amber_dir *d, size_t k, unsigned id, const char *name,
			 size_t len, const amber_entry **out)
{
	const struct item_buckets *ib;
	size_t at = d->w->at[k];

	if (!d->v.item_level) {
		*out = search(d->e, at, at + d->v.b[k].count, name, len);
		return 0;
	}
	ib = &d->w->sub[k];
	for (size_t j = 0; j < ib->n; at += ib->count[j++]) {
		if (ib->id[j] == id) {
			*out = search(d->e, at, at + ib->count[j], name, len);
			return 0;
		}
	}
	return 0;       /* no such bucket in the node: no such name */
}

static int stream_find(const amber_dir *d, const char *name, size_t len, const amber_entry **out)
{
	char tok[AMBER_TOKEN_HEXSZ + 1];
	unsigned id, item;
	size_t lo = 0, hi = d->v.nb;
	int rc;

	*out = NULL;
	amber_name_token(tok, amber_archive_keys(d->w->s->a), name, len);
	id = amber_token_bucket(tok, d->v.bits);
	/* the node holding bucket id: its prefix, the bits the levels below resolve dropped */
	item = d->v.item_level ? id >> amber_fanout_width(d->v.bits, d->v.item_level) : id;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (d->v.b[mid].id == item) {
			if ((rc = stream_wait(d, mid)) < 0)
				return rc;
			return stream_search(d, mid, id, name, len, out);
		}
		if (d->v.b[mid].id < item)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;       /* no bucket: no such name */
}

/* Stop the helpers, wait for the buckets in flight, free what was decoded. */
static void stream_free(amber_dir *d)
{
	struct bucket_work *w = d->w;

	pthread_mutex_lock(&w->lock);
	w->next = w->nb;
	while (w->busy)
		pthread_cond_wait(&w->idle, &w->lock);
	pthread_mutex_unlock(&w->lock);
	for (size_t i = 0; i < d->v.nb; i++)
		for (size_t j = 0; w->done[i] && j < d->v.b[i].count; j++)
			amber_entry_dispose(&d->e[w->at[i] + j]);
	entries_unmap(d->e, d->mapped);
	work_put(w);
}

int amber_dir_complete(const amber_dir *d)
{
	struct bucket_work *w = d->w;
	int all = 1;

	if (!w || atomic_load_explicit(&d->complete, memory_order_acquire))
		return 1;
	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; all && i < w->nb; i++)
		all = w->done[i];
	pthread_mutex_unlock(&w->lock);
	if (all)
		atomic_store_explicit(&((amber_dir *)d)->complete, 1, memory_order_release);
	return all;
}

/* Indexes into the listing (base), by their entries' names. */
static int by_name_r(const void *a, const void *b, void *base)
{
	const amber_entry *x = &((const amber_entry *)base)[*(const size_t *)a];
	const amber_entry *y = &((const amber_entry *)base)[*(const size_t *)b];

	return amber_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

int amber_dir_name_next(const amber_dir *d, size_t i, size_t *next)
{
	size_t *nx, *order, *none = NULL;

	*next = d->n;
	if (i >= d->n)
		return 0;
	if (!d->w) {                    /* in name order already */
		*next = i + 1;
		return 0;
	}
	if ((nx = atomic_load_explicit(&d->name_next, memory_order_acquire)) != NULL) {
		*next = nx[i];
		return 0;
	}
	if (!amber_dir_complete(d))
		return amber_fail(AMBER_ERROR, "%s: the listing is still being decoded", d->what);
	nx = malloc(d->n * sizeof(*nx));
	order = malloc(d->n * sizeof(*order));
	if (!nx || !order) {
		free(nx);
		free(order);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	for (size_t k = 0; k < d->n; k++)
		order[k] = k;
	qsort_r(order, d->n, sizeof(*order), by_name_r, d->e);
	for (size_t k = 0; k < d->n; k++)
		nx[order[k]] = k + 1 < d->n ? order[k + 1] : d->n;
	free(order);
	/* another thread may have made it meanwhile: keep the first */
	if (!atomic_compare_exchange_strong(&((amber_dir *)d)->name_next, &none, nx)) {
		free(nx);
		nx = none;
	}
	*next = nx[i];
	return 0;
}

/* Start d as a streamed listing of the buckets of v (taken over). */
static int stream_open(amber_dir *d, amber_snapshot *s, amber_fanout_view *v, const char *what,
		       size_t total)
{
	d->v = *v;
	v->b = NULL;
	if (!(d->what = strdup(what)))
		return amber_fail(AMBER_ERROR, "out of memory");
	if (!(d->w = work_start(d, s, &d->v, d->what, total, 1)))
		return AMBER_ERROR;
	d->n = d->cap = total;
	return 0;
}

/* Whether v can be streamed: ids in order, as the format has them, many
 * buckets (a few are decoded at once), and a count that fits in memory. */
static int streamable(const amber_fanout_view *v, size_t *total)
{
	*total = 0;
	for (size_t i = 0; i < v->nb; i++) {
		if (i && v->b[i - 1].id >= v->b[i].id)
			return 0;
		*total += v->b[i].count;
	}
	return (v->item_level ? v->nb >= 2 : v->nb >= DIR_PAR_MIN) && *total <= DIR_PRESIZE_MAX;
}

int amber_dir_open_ext(amber_dir **out, amber_snapshot *s, const amber_entry *dir,
		       unsigned flags)
{
	amber_fanout_view v = {0};
	amber_dir *d = calloc(1, sizeof(*d));
	char what[AMBER_NAME_MAX + 64];
	int stream = !!(flags & AMBER_DIR_STREAM);
	int rc = d ? dir_view(&v, s, dir, stream) : amber_fail(AMBER_ERROR, "out of memory");
	size_t total;

	dir_what(what, sizeof(what), dir);
	if (rc == 0 && v.b && stream && !streamable(&v, &total) && v.item_level) {
		free(v.b);      /* too few nodes to stream: every bucket at once */
		rc = dir_view(&v, s, dir, 0);
		stream = 0;
	}
	if (rc == 0 && v.b && stream && streamable(&v, &total))
		rc = stream_open(d, s, &v, what, total);
	else if (rc == 0 && v.b)
		rc = read_buckets(d, s, &v, what);
	else if (rc == 0)
		rc = read_leaf(&d->e, &d->n, s, dir->tree_oid, &dir->link, NULL, 0, what, NULL);
	free(v.b);
	if (rc < 0) {
		amber_dir_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

int amber_dir_open(amber_dir **out, amber_snapshot *s, const amber_entry *dir)
{
	return amber_dir_open_ext(out, s, dir, 0);
}

/* ---- paths -------------------------------------------------------------------- */

void amber_entry_free(amber_entry *e)
{
	if (!e)
		return;
	amber_entry_dispose(e);
	free(e);
}

int amber_entry_dup(amber_entry **out, const amber_entry *e)
{
	amber_entry *d = calloc(1, sizeof(*d));
	int rc = d ? amber_entry_copy(d, e) : amber_fail(AMBER_ERROR, "out of memory");

	*out = NULL;
	if (rc < 0) {
		free(d); /* amber_entry_copy disposed of what it had copied */
		return rc;
	}
	*out = d;
	return 0;
}

static int step(amber_entry *cur, amber_snapshot *s, const char *comp, size_t len,
		const char *path)
{
	amber_dir *d = NULL;
	const amber_entry *x;
	int rc = amber_dir_open(&d, s, cur);

	if (rc == AMBER_ENOTDIR)
		rc = amber_fail(AMBER_ENOTDIR, "%s: a component is not a directory", path);
	if (rc == 0 && !(x = amber_dir_lookup(d, comp, len)))
		rc = amber_fail(AMBER_ENOTFOUND, "%s: no such file or directory in snapshot %.12s",
				path, s->info.id);
	if (rc == 0) {
		amber_entry_dispose(cur);
		rc = amber_entry_copy(cur, x);
	}
	amber_dir_free(d);
	return rc;
}

int amber_stat(amber_entry **out, amber_snapshot *s, const char *path)
{
	amber_entry *cur = calloc(1, sizeof(*cur));
	const char *p = path;
	int rc = cur ? amber_entry_copy(cur, &s->root) : amber_fail(AMBER_ERROR, "out of memory");

	while (rc == 0 && *p) {
		size_t len = strcspn(p, "/");

		if (len > 0 && !(len == 1 && p[0] == '.'))
			rc = step(cur, s, p, len, path);
		p += len;
		p += *p == '/';
	}
	if (rc < 0) {
		amber_entry_free(cur);
		return rc;
	}
	*out = cur;
	return 0;
}
