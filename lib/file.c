/*
 * File contents: chunk indexes and chunks, decoded through the archive's
 * shared cache, and reads of a byte range of a file.  Every object is
 * decoded with the mac its parent recorded, so its content is the one the
 * parent was written with (invariant 5; record.c).
 *
 * Decoded chunks and chunk indexes live in the archive's shared cache
 * (cache.c), so several threads and snapshots reading the same content
 * decode it once.  An entry is keyed by everything its decode checked: the
 * link (object id and mac), the size the parent declared and, for an index,
 * the chunk tree it was checked against.  Keyed by object id alone, a hostile
 * manifest could name a good index under a larger file size, or a good chunk
 * under another mac, and be served what was checked for someone else.
 */
#include "file.h"

#include "dir.h"
#include "codec.h"
#include "error.h"
#include "record.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INDEX ((size_t)AMBER_INDEX_MAX_CHUNKS * 48 + 64)

static void index_free(void *p)
{
	file_index *x = p;

	free(x->c);
	free(x->off);
	free(x);
}

void amber_link_key(uint8_t key[AMBER_CKEY], const amber_link *l, uint8_t kind, uint64_t size,
		    const uint8_t *tree)
{
	memset(key, 0, AMBER_CKEY);
	memcpy(key, l->oid, 20);
	key[20] = kind;
	memcpy(key + 21, l->mac, 24);
	for (int i = 0; i < 8; i++)
		key[45 + i] = (uint8_t)(size >> (8 * i));
	if (tree)
		memcpy(key + 53, tree, 20);
}

/* 1 if tree entry x is blob `name` with id oid. */
static int is_blob(const amber_tparsed *x, const char *name, const uint8_t oid[20])
{
	size_t nl = strlen(name);

	return x->mode == AMBER_GIT_MODE_BLOB && x->name_len == nl &&
	       memcmp(x->name, name, nl) == 0 && memcmp(x->oid, oid, 20) == 0;
}

/*
 * A chunk tree (tree, whose "i" is blob index) holds exactly c00000000..
 * (one per chunk, fixed width, so git order is chunk order) and then "i":
 * checked in one pass.
 */
static int check_chunk_tree(amber_archive *a, const uint8_t tree[20], const uint8_t index[20],
			    const amber_chunkref *c, size_t n, const char *what)
{
	amber_buf tb = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	size_t tn = 0;
	int rc = amber_tree_read(&tb, &t, &tn, a, tree, what);

	if (rc == 0 && (tn != n + 1 || !is_blob(&t[n], "i", index)))
		rc = amber_tree_mismatch(what);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char name[24];

		snprintf(name, sizeof(name), "c%08zu", i);
		if (!is_blob(&t[i], name, c[i].link.oid))
			rc = amber_tree_mismatch(what);
	}
	free(t);
	amber_buf_dispose(&tb);
	return rc;
}

/* The root tree of a paged index: "i" (index) then p00000.. (one per page). */
static int check_root_tree(amber_archive *a, const amber_entry *e, const amber_indexpage *p,
			   size_t n, const char *what)
{
	amber_buf tb = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	size_t tn = 0;
	int rc = amber_tree_read(&tb, &t, &tn, a, e->tree_oid, what);

	if (rc == 0 && (tn != n + 1 || !is_blob(&t[0], "i", e->link.oid)))
		rc = amber_tree_mismatch(what);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char name[24];

		snprintf(name, sizeof(name), "p%05zu", i);
		if (t[i + 1].mode != AMBER_GIT_MODE_TREE || t[i + 1].name_len != 6 ||
		    memcmp(t[i + 1].name, name, 6) != 0 || memcmp(t[i + 1].oid, p[i].tree_oid, 20))
			rc = amber_tree_mismatch(what);
	}
	free(t);
	amber_buf_dispose(&tb);
	return rc;
}

/* One page of a paged index: its chunks, checked against its tree, into c. */
static int read_page(amber_chunkref *c, amber_archive *a, const amber_indexpage *p,
		     const char *what)
{
	amber_buf ib = AMBER_BUF_INIT;
	amber_chunkref *pc = NULL;
	size_t pn = 0, max = (size_t)AMBER_INDEX_PAGE * 48 + 64;
	int rc;

	amber_buf_init(&ib, max);
	rc = amber_archive_read_obj(&ib, a, &p->link, AMBER_OBJ_INDEX, max, what);
	if (rc == 0)
		rc = amber_index_decode(&pc, &pn, ib.data, ib.len, p->bytes, a->chunk_max);
	if (rc == 0 && pn != p->chunks)
		rc = amber_fail(AMBER_ECORRUPT, "%s: an index page holds %zu chunks, its root says "
				"%u", what, pn, p->chunks);
	if (rc == 0)
		rc = check_chunk_tree(a, p->tree_oid, p->link.oid, pc, pn, what);
	if (rc == 0)
		memcpy(c, pc, pn * sizeof(*pc));
	free(pc);
	amber_buf_dispose(&ib);
	return rc;
}

/* The chunks of a paged index whose root payload is root[0..len). */
static int decode_paged(file_index *x, amber_archive *a, const amber_entry *e,
			const uint8_t *root, size_t len, const char *what)
{
	amber_indexpage *p = NULL;
	size_t np = 0;
	int rc = amber_index_root_decode(&p, &np, root, len, e->size, a->chunk_max);

	if (rc == 0)
		rc = check_root_tree(a, e, p, np, what);
	if (rc == 0) {
		x->n = (np - 1) * AMBER_INDEX_PAGE + p[np - 1].chunks;
		if (!(x->c = malloc(x->n * sizeof(*x->c))))
			rc = amber_fail(AMBER_ERROR, "out of memory");
	}
	for (size_t i = 0; rc == 0 && i < np; i++)
		rc = read_page(x->c + i * AMBER_INDEX_PAGE, a, &p[i], what);
	free(p);
	return rc;
}

static int decode_index(file_index **out, amber_archive *a, const amber_entry *e,
			const char *what)
{
	amber_buf ib = AMBER_BUF_INIT;
	file_index *x = calloc(1, sizeof(*x));
	int rc = x ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	amber_buf_init(&ib, MAX_INDEX);
	if (rc == 0)
		rc = amber_archive_read_obj(&ib, a, &e->link, AMBER_OBJ_INDEX, MAX_INDEX, what);
	if (rc == 0 && amber_index_layout(ib.data, ib.len) == 2) {
		rc = decode_paged(x, a, e, ib.data, ib.len, what);
	} else {
		if (rc == 0)
			rc = amber_index_decode(&x->c, &x->n, ib.data, ib.len, e->size,
						a->chunk_max);
		if (rc == 0)
			rc = check_chunk_tree(a, e->tree_oid, e->link.oid, x->c, x->n, what);
	}
	if (rc == 0 && !(x->off = malloc((x->n + 1) * sizeof(uint64_t))))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	amber_buf_dispose(&ib);
	if (rc < 0) {
		if (x)
			index_free(x);
		return rc;
	}
	x->off[0] = 0;
	for (size_t i = 0; i < x->n; i++)
		x->off[i + 1] = x->off[i] + x->c[i].len;
	*out = x;
	return 0;
}

/* A cached index must cover exactly e's bytes (the key makes it so; this
 * keeps a mistake there from ever becoming a read past a chunk). */
static int index_fits(amber_cobj **o, amber_archive *a, const amber_entry *e, const char *what)
{
	const file_index *x = (*o)->data;

	if (x->off[x->n] == e->size)
		return 0;
	amber_cache_release(a->cache, *o);
	*o = NULL;
	return amber_fail(AMBER_ECORRUPT, "%s: its chunk index covers %" PRIu64 " bytes, the "
			  "file has %" PRIu64, what, x->off[x->n], e->size);
}

/* The held cache entry of the chunk index of multi-chunk file e. */
int amber_file_index(amber_cobj **out, amber_archive *a, const amber_entry *e, const char *what)
{
	uint8_t key[AMBER_CKEY];
	file_index *x = NULL;
	int mine, rc;

	amber_link_key(key, &e->link, 'i', e->size, e->tree_oid);
	if (!(*out = amber_cache_acquire(a->cache, key, &mine)))
		return amber_fail(AMBER_ERROR, "out of memory");
	if (!mine)
		return index_fits(out, a, e, what);
	if ((rc = decode_index(&x, a, e, what)) < 0) {
		amber_cache_abandon(a->cache, *out);
		*out = NULL;
		return rc;
	}
	amber_cache_fill(a->cache, *out, x, x->n * 56 + 64, x->n * 56 + 64, index_free);
	return 0;
}

/* The held cache entry of a decoded chunk (an amber_buf). */
static int decode_chunk(amber_buf **out, amber_archive *a, const amber_link *l, size_t len,
			const char *what)
{
	amber_buf *b = calloc(1, sizeof(*b));
	int rc;

	if (!b)
		return amber_fail(AMBER_ERROR, "out of memory");
	amber_buf_init_pages(b, AMBER_CHUNK_MAX + 64);
	rc = amber_archive_read_obj(b, a, l, AMBER_OBJ_CHUNK, AMBER_CHUNK_MAX, what);
	if (rc == 0 && b->len != len)
		rc = amber_fail(AMBER_ECORRUPT, "%s: chunk has %zu bytes, its index says %zu", what,
				b->len, len);
	if (rc < 0) {
		amber_buf_free(b);
		return rc;
	}
	atomic_fetch_add(&a->counters.chunks_decoded, 1);
	atomic_fetch_add(&a->counters.chunk_bytes, b->len);
	*out = b;
	return 0;
}

int amber_chunk_get(amber_cobj **out, amber_archive *a, const amber_link *l, size_t len,
		    const char *what)
{
	uint8_t key[AMBER_CKEY];
	amber_buf *b = NULL;
	int mine, rc;

	amber_link_key(key, l, 'c', len, NULL);
	if (!(*out = amber_cache_acquire(a->cache, key, &mine)))
		return amber_fail(AMBER_ERROR, "out of memory");
	if (!mine) {
		atomic_fetch_add(&a->counters.cache_hits, 1);
		if (((amber_buf *)(*out)->data)->len == len)
			return 0;
		amber_cache_release(a->cache, *out);
		*out = NULL;
		return amber_fail(AMBER_ECORRUPT, "%s: chunk length differs from its index", what);
	}
	if ((rc = decode_chunk(&b, a, l, len, what)) < 0) {
		amber_cache_abandon(a->cache, *out);
		*out = NULL;
		return rc;
	}
	/* a decoded chunk is mostly its own mapping (amber_buf_init_pages) */
	amber_cache_fill(a->cache, *out, b, b->cap + 64,
			 b->pages & AMBER_BUF_PAGES_MAPPED ? 64 : b->cap + 64, amber_buf_free);
	return 0;
}

/* One piece: bytes [in, in + want) of the chunk l (clen bytes), pinned. */
static int chunk_piece(amber_piece *p, amber_archive *a, const amber_link *l, size_t clen,
		       uint64_t in, size_t want, const char *what)
{
	amber_cobj *o = NULL;
	int rc = amber_chunk_get(&o, a, l, clen, what);
	const amber_buf *b = rc == 0 ? o->data : NULL;

	if (rc == 0 && (in >= b->len || b->len != clen))
		rc = amber_fail(AMBER_ECORRUPT, "%s: read at byte %" PRIu64 " of a chunk of %zu "
				"bytes (its index and the file size disagree)", what, in, b->len);
	if (rc < 0) {
		amber_cache_release(a->cache, o);
		return rc;
	}
	p->data = b->data + in;
	p->len = b->len - in < want ? (size_t)(b->len - in) : want;
	p->ref = o;
	return 0;
}

/* Bytes [in, in + want) of the chunk l (clen bytes) copied to buf: *n of them. */
static int copy_chunk(uint8_t *buf, size_t *n, amber_archive *a, const amber_link *l,
		      size_t clen, uint64_t in, size_t want, const char *what)
{
	amber_piece p;
	int rc = chunk_piece(&p, a, l, clen, in, want, what);

	*n = 0;
	if (rc == 0) {
		memcpy(buf, p.data, p.len);
		*n = p.len;
		amber_cache_release_served(a->cache, p.ref, p.len, clen);
	}
	return rc;
}

size_t amber_file_chunk_at(const file_index *x, uint64_t off)
{
	size_t lo = 0, hi = x->n;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (x->off[mid] <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static int read_chunked(size_t *nread, amber_archive *a, const amber_entry *e, uint64_t off,
			uint8_t *buf, size_t len, const char *what)
{
	amber_cobj *o = NULL;
	const file_index *x;
	int rc = amber_file_index(&o, a, e, what);

	*nread = 0;
	x = o ? o->data : NULL;
	for (size_t i = rc == 0 ? amber_file_chunk_at(x, off) : 0;
	     rc == 0 && len > 0 && i < x->n; i++) {
		size_t n = 0;

		rc = copy_chunk(buf, &n, a, &x->c[i].link, x->c[i].len, off - x->off[i], len, what);
		buf += n;
		len -= n;
		off += n;
		*nread += n;
	}
	amber_cache_release(a->cache, o);
	return rc;
}

int amber_file_read(size_t *nread, amber_snapshot *s, const amber_entry *e, uint64_t off,
		    void *buf, size_t len)
{
	char what[AMBER_NAME_MAX + 16];

	*nread = 0;
	if (e->type == AMBER_T_DIR)
		return amber_fail(AMBER_EISDIR, "%s is a directory", e->name);
	if (e->type != AMBER_T_REG)
		return amber_fail(AMBER_EINVAL, "%s is not a regular file", e->name);
	if (off >= e->size || len == 0)
		return 0;
	if (len > e->size - off)
		len = (size_t)(e->size - off);
	snprintf(what, sizeof(what), "file '%s'", e->name);
	if (e->content == AMBER_C_BLOB)
		return copy_chunk(buf, nread, s->a, &e->link, (size_t)e->size, off, len, what);
	if (e->content == AMBER_C_CHUNKED)
		return read_chunked(nread, s->a, e, off, buf, len, what);
	return amber_fail(AMBER_ECORRUPT, "%s: has %" PRIu64 " bytes but no content", what,
			  e->size);
}

void amber_file_pieces_release(amber_snapshot *s, amber_piece *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		amber_cache_release(s->a->cache, p[i].ref);
}

void amber_file_pieces_consumed(amber_snapshot *s, amber_piece *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		amber_cobj *o = p[i].ref;

		amber_cache_release_served(s->a->cache, o, p[i].len,
					   ((const amber_buf *)o->data)->len);
	}
}

int amber_file_pieces(amber_piece *p, size_t max, size_t *n, size_t *nread, amber_snapshot *s,
		      const amber_entry *e, uint64_t off, size_t len)
{
	char what[AMBER_NAME_MAX + 16];
	amber_cobj *o = NULL;
	const file_index *x;
	int rc = 0;

	*n = *nread = 0;
	if (e->type == AMBER_T_DIR)
		return amber_fail(AMBER_EISDIR, "%s is a directory", e->name);
	if (e->type != AMBER_T_REG)
		return amber_fail(AMBER_EINVAL, "%s is not a regular file", e->name);
	if (off >= e->size || len == 0 || max == 0)
		return 0;
	if (len > e->size - off)
		len = (size_t)(e->size - off);
	snprintf(what, sizeof(what), "file '%s'", e->name);
	if (e->content == AMBER_C_BLOB) {
		rc = chunk_piece(p, s->a, &e->link, (size_t)e->size, off, len, what);
		if (rc == 0) {
			*n = 1;
			*nread = p->len;
		}
		return rc;
	}
	if (e->content != AMBER_C_CHUNKED)
		return amber_fail(AMBER_ECORRUPT, "%s: has %" PRIu64 " bytes but no content", what,
				  e->size);
	rc = amber_file_index(&o, s->a, e, what);
	x = o ? o->data : NULL;
	for (size_t i = rc == 0 ? amber_file_chunk_at(x, off) : 0;
	     rc == 0 && len > 0 && i < x->n && *n < max; i++) {
		rc = chunk_piece(&p[*n], s->a, &x->c[i].link, x->c[i].len, off - x->off[i], len,
				 what);
		if (rc < 0)
			break;
		len -= p[*n].len;
		off += p[*n].len;
		*nread += p[*n].len;
		(*n)++;
	}
	amber_cache_release(s->a->cache, o);
	if (rc < 0) {
		amber_file_pieces_release(s, p, *n);
		*n = *nread = 0;
	}
	return rc;
}
