/*
 * Reading snapshots: resolving specs, authenticating commits, walking
 * directories and reading files.
 *
 * Every link is checked on the way down (invariant 5):
 *   commit  -> its record (AEAD; binds tree, parent, time and stream, and
 *              carries the root directory's entry)
 *   tree    -> "m" must be the manifest the parent's link names, and every
 *              child object in the tree must be the one the manifest names
 *              under that child's token, with nothing extra
 *   object  -> decoded with the mac its parent recorded, so its content is
 *              the one the parent was written with
 * Anything that does not match is AMBER_EAUTH: no data from a spliced,
 * swapped or rolled-back object is ever returned.
 */
#include "reader.h"

#include "cache.h"
#include "codec.h"
#include "error.h"
#include "gitobj.h"
#include "manifest.h"

#include <ctype.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RECORD ((size_t)4 << 20) /* the root's xattrs ride in the record */
#define MAX_MANIFEST ((size_t)256 << 20)
#define MAX_INDEX ((size_t)AMBER_INDEX_MAX_CHUNKS * 48 + 64)

struct amber_dir {
	amber_entry *e;
	size_t n;
};

const amber_snapinfo *amber_snapshot_info(const amber_snapshot *s)
{
	return &s->info;
}

void amber_snapinfo_dispose(amber_snapinfo *info)
{
	free(info->host);
	free(info->source);
	free(info->message);
	for (size_t i = 0; info->tags && info->tags[i]; i++)
		free(info->tags[i]);
	free(info->tags);
	info->host = info->source = info->message = NULL;
	info->tags = NULL;
}

void amber_snapshot_free(amber_snapshot *s)
{
	if (!s)
		return;
	amber_snapinfo_dispose(&s->info);
	amber_entry_dispose(&s->root);
	free(s);
}

/* ---- commits and records ---------------------------------------------------- */

/*
 * Strict hash checking is off on the read path, where every object below a
 * commit is bound to its parent's link by a mac.  A commit has no parent:
 * its id is all that names it, so its bytes must hash to that id, or a
 * genuine snapshot stored under another id would be served as that id.
 * Commits are small, so this costs little.
 */
static int check_commit_id(const amber_buf *b, const uint8_t oid[20], const char *hex)
{
	uint8_t h[20];

	amber_store_hash(h, AMBER_GIT_COMMIT, b->data, b->len);
	if (memcmp(h, oid, 20) == 0)
		return 0;
	return amber_fail(AMBER_EAUTH, "snapshot %s: the commit stored under this id does not "
			  "hash to it (another commit's bytes); run amberfs verify", hex);
}

static int read_commit(amber_commit *c, amber_archive *a, const uint8_t oid[20],
		       const char *hex)
{
	amber_buf b = AMBER_BUF_INIT;
	int type = 0;
	int rc = amber_store_read(&b, &type, a->store, oid, (size_t)1 << 20);

	if (rc == AMBER_ENOTFOUND)
		rc = amber_fail(AMBER_ENOTFOUND, "no snapshot %s in archive %s", hex, a->path);
	else if (rc == 0 && type != AMBER_GIT_COMMIT)
		rc = amber_fail(AMBER_ENOTFOUND, "%s is not a snapshot (not a commit)", hex);
	if (rc == 0)
		rc = check_commit_id(&b, oid, hex);
	if (rc == 0)
		rc = amber_commit_parse(c, b.data, b.len, hex);
	amber_buf_dispose(&b);
	return rc;
}

static int decode_record(amber_record *r, amber_archive *a, const char *b64, const char *hex)
{
	size_t cap = strlen(b64), len = 0;
	uint8_t *bin = malloc(cap + 1);
	amber_buf plain = AMBER_BUF_INIT;
	int rc = 0;

	if (!bin)
		return amber_fail(AMBER_ERROR, "out of memory");
	if (sodium_base642bin(bin, cap, b64, cap, NULL, &len, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0)
		rc = amber_fail(AMBER_EAUTH, "snapshot %s: record is not valid base64", hex);
	if (rc == 0)
		rc = amber_codec_decode(&plain, amber_archive_keys(a), AMBER_OBJ_RECORD, NULL, bin,
					len, MAX_RECORD);
	if (rc < 0 && rc != AMBER_ENEEDKEY)
		rc = amber_fail(AMBER_EAUTH, "snapshot %s: record fails authentication (%s)", hex,
				amber_error_last());
	if (rc == 0)
		rc = amber_record_decode(r, plain.data, plain.len);
	amber_buf_dispose(&plain);
	free(bin);
	return rc;
}

/* The commit must say what its authenticated record says. */
static int check_commit(const amber_commit *c, const amber_record *r, const char *hex)
{
	char *t = amber_trailer_get(c->message, "Amberfs-Time");
	int64_t tn = 0;
	int ok = t && amber_time_parse(&tn, t) == 0 && tn == r->time_ns;

	free(t);
	amber_error_clear();
	if (memcmp(c->tree, r->tree, 20) != 0)
		return amber_fail(AMBER_EAUTH, "snapshot %s: root tree is not the one its "
				  "authenticated record names (spliced or rewritten commit)", hex);
	if (c->nparents != r->has_parent ||
	    (r->has_parent && memcmp(c->parent, r->parent, 20) != 0))
		return amber_fail(AMBER_EAUTH, "snapshot %s: parent is not the one its "
				  "authenticated record names (rewritten history)", hex);
	if (!ok)
		return amber_fail(AMBER_EAUTH, "snapshot %s: time does not match its "
				  "authenticated record", hex);
	return 0;
}

static int root_entry(amber_snapshot *s, const amber_record *r, const char *hex)
{
	amber_entry *e = NULL;
	size_t n = 0;
	int rc = amber_manifest_decode(&e, &n, r->root_meta, r->root_meta_len);

	if (rc == 0 && (n != 1 || e[0].type != AMBER_T_DIR || e[0].content != AMBER_C_DIR ||
			memcmp(e[0].tree_oid, r->tree, 20) != 0 ||
			memcmp(&e[0].link, &r->root, sizeof(r->root)) != 0))
		rc = amber_fail(AMBER_EAUTH, "snapshot %s: root entry does not match its record",
				hex);
	if (rc == 0) {
		s->root = e[0];
		memset(&e[0], 0, sizeof(e[0]));
	}
	amber_entries_free(e, n);
	return rc;
}

static int fill_info(amber_snapinfo *info, const amber_record *r)
{
	amber_oid_tohex(info->tree, r->tree);
	info->parent[0] = '\0';
	if (r->has_parent)
		amber_oid_tohex(info->parent, r->parent);
	snprintf(info->stream, sizeof(info->stream), "%s", r->stream);
	info->time_ns = r->time_ns;
	info->stats = r->stats;
	info->host = strdup(r->host ? r->host : "");
	info->source = strdup(r->source ? r->source : "");
	info->message = strdup(r->message ? r->message : "");
	info->tags = calloc(1, sizeof(char *));
	if (!info->host || !info->source || !info->message || !info->tags)
		return amber_fail(AMBER_ERROR, "out of memory");
	return 0;
}

typedef struct tagscan {
	amber_archive *a;
	const uint8_t *oid;
	char ***tags;
	size_t n;
} tagscan;

/* Peel an annotated tag to the commit it names. */
static int peel(uint8_t out[20], amber_archive *a, const uint8_t oid[20])
{
	amber_buf b = AMBER_BUF_INIT;
	int type = 0;
	int rc = amber_store_read(&b, &type, a->store, oid, (size_t)1 << 20);

	memcpy(out, oid, 20);
	if (rc == 0 && type == AMBER_GIT_TAG) {
		char hex[41] = "";

		if (b.len > 47 && memcmp(b.data, "object ", 7) == 0)
			memcpy(hex, b.data + 7, 40);
		rc = amber_oid_fromhex(out, hex) < 0 ? amber_fail(AMBER_ECORRUPT, "malformed tag") : 0;
	}
	amber_buf_dispose(&b);
	return rc;
}

static int tag_cb(const char *name, const uint8_t oid[20], void *payload)
{
	tagscan *t = payload;
	uint8_t target[20];
	char **v;

	if (peel(target, t->a, oid) < 0 || memcmp(target, t->oid, 20) != 0)
		return 0;
	v = realloc(*t->tags, (t->n + 2) * sizeof(*v));
	if (!v)
		return AMBER_ERROR;
	*t->tags = v;
	v[t->n] = strdup(name + strlen("refs/tags/"));
	v[++t->n] = NULL;
	return 0;
}

/* The authenticated record of commit c, checked against it. */
static int open_record(amber_record *r, amber_archive *a, const amber_commit *c,
		       const char *hex)
{
	char *b64 = amber_trailer_get(c->message, "Amberfs-Record");
	int rc = b64 ? decode_record(r, a, b64, hex) :
		       amber_fail(AMBER_EAUTH, "snapshot %s: commit has no amberfs record", hex);

	if (rc == 0)
		rc = check_commit(c, r, hex);
	free(b64);
	return rc;
}

static int stream_mismatch(const char *hex, const char *has, const char *stream)
{
	return amber_fail(AMBER_EAUTH, "snapshot %s belongs to stream '%s', not to stream '%s' "
			  "whose ref names it (a moved ref); run amberfs verify", hex, has,
			  stream ? stream : "main");
}

int amber_snapshot_check_stream(const amber_snapshot *s, const char *stream)
{
	if (strcmp(s->info.stream, stream ? stream : "main") == 0)
		return 0;
	return stream_mismatch(s->info.id, s->info.stream, stream);
}

int amber_snapshot_open(amber_snapshot **out, amber_archive *a, const char *id)
{
	amber_snapshot *s = NULL;
	amber_commit c = {0};
	amber_record r = {0};
	uint8_t oid[20];
	int rc = amber_archive_check_unlocked(a);

	if (rc == 0 && amber_oid_fromhex(oid, id) < 0)
		rc = amber_fail(AMBER_EINVAL, "'%s' is not a snapshot id", id);
	if (rc == 0)
		rc = read_commit(&c, a, oid, id);
	if (rc == 0)
		rc = open_record(&r, a, &c, id);
	if (rc == 0 && !(s = calloc(1, sizeof(*s))))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (rc == 0) {
		s->a = a;
		snprintf(s->info.id, sizeof(s->info.id), "%s", id);
		rc = fill_info(&s->info, &r);
	}
	if (rc == 0)
		rc = root_entry(s, &r, id);
	if (rc == 0) {
		tagscan t = {a, oid, &s->info.tags, 0};

		rc = amber_store_ref_foreach(a->store, "refs/tags/*", tag_cb, &t);
	}
	amber_record_dispose(&r);
	amber_commit_dispose(&c);
	if (rc < 0) {
		amber_snapshot_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* ---- directories -------------------------------------------------------------- */

void amber_dir_free(amber_dir *d)
{
	if (!d)
		return;
	amber_entries_free(d->e, d->n);
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

const amber_entry *amber_dir_entry(const amber_dir *d, size_t i)
{
	return i < d->n ? &d->e[i] : NULL;
}

const amber_entry *amber_dir_lookup(const amber_dir *d, const char *name, size_t len)
{
	size_t lo = 0, hi = d->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = amber_name_cmp(d->e[mid].name, d->e[mid].name_len, name, len);

		if (c == 0)
			return &d->e[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int read_tree(amber_buf *b, amber_tparsed **t, size_t *n, amber_archive *a,
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

static int tree_mismatch(const char *what)
{
	return amber_fail(AMBER_EAUTH, "%s: git tree does not match its authenticated "
			  "manifest (spliced or swapped objects)", what);
}

/* Every child object in the tree is the one the manifest names, nothing more. */
static int check_leaf(amber_snapshot *s, const amber_tparsed *t, size_t tn,
		      const amber_entry *e, size_t n, const char *what)
{
	char tok[AMBER_TOKEN_HEXSZ + 1];
	size_t want = 1;

	for (size_t i = 0; i < n; i++) {
		const amber_tparsed *x;
		const uint8_t *oid = e[i].content == AMBER_C_BLOB ? e[i].link.oid : e[i].tree_oid;
		uint32_t mode = e[i].content == AMBER_C_BLOB ? 0100644 : 040000;

		if (e[i].content == AMBER_C_NONE)
			continue;
		want++;
		amber_name_token(tok, amber_archive_keys(s->a), e[i].name, e[i].name_len);
		x = amber_tree_find(t, tn, tok);
		if (!x || x->mode != mode || memcmp(x->oid, oid, 20) != 0)
			return tree_mismatch(what);
	}
	return tn == want ? 0 : tree_mismatch(what);
}

/* Read a leaf directory tree and its manifest ("m" must be link). */
static int read_leaf(amber_entry **e, size_t *n, amber_snapshot *s, const uint8_t tree[20],
		     const amber_link *link, const char *what)
{
	amber_buf tb = AMBER_BUF_INIT, mb = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	const amber_tparsed *m;
	size_t tn = 0;
	int rc = read_tree(&tb, &t, &tn, s->a, tree, what);

	if (rc == 0 && (!(m = amber_tree_find(t, tn, "m")) || memcmp(m->oid, link->oid, 20)))
		rc = tree_mismatch(what);
	amber_buf_init(&mb, MAX_MANIFEST);
	if (rc == 0)
		rc = amber_archive_read_obj(&mb, s->a, link, AMBER_OBJ_MANIFEST, MAX_MANIFEST, what);
	if (rc == 0)
		rc = amber_manifest_decode(e, n, mb.data, mb.len);
	if (rc == 0)
		atomic_fetch_add(&s->a->counters.dirs_decoded, 1);
	if (rc == 0 && (rc = check_leaf(s, t, tn, *e, *n, what)) < 0) {
		amber_entries_free(*e, *n);
		*e = NULL;
	}
	free(t);
	amber_buf_dispose(&mb);
	amber_buf_dispose(&tb);
	return rc;
}

static int merge_bucket(amber_dir *d, amber_entry *e, size_t n, const amber_bucket *b,
			unsigned bits, amber_snapshot *s, const char *what)
{
	char tok[AMBER_TOKEN_HEXSZ + 1];
	amber_entry *v;

	if (n != b->count)
		return tree_mismatch(what);
	for (size_t i = 0; i < n; i++) {
		amber_name_token(tok, amber_archive_keys(s->a), e[i].name, e[i].name_len);
		if (amber_token_bucket(tok, bits) != b->id)
			return tree_mismatch(what);
	}
	v = realloc(d->e, (d->n + n) * sizeof(*v));
	if (!v)
		return amber_fail(AMBER_ERROR, "out of memory");
	d->e = v;
	memcpy(d->e + d->n, e, n * sizeof(*e));
	d->n += n;
	return 0;
}

static int entry_qsort_cmp(const void *a, const void *b)
{
	const amber_entry *x = a, *y = b;

	return amber_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static const char *dir_what(char *buf, size_t len, const amber_entry *dir)
{
	snprintf(buf, len, "directory '%s'", dir->name ? dir->name : "/");
	return buf;
}

/* Decode the fan-out list and check it against the directory's tree. */
static int fanout_list(amber_fanout_view *v, amber_snapshot *s, const amber_entry *dir,
		       const amber_tparsed *t, size_t tn, const char *what)
{
	amber_buf fb = AMBER_BUF_INIT;
	int rc;

	amber_buf_init(&fb, 8 << 20);
	rc = amber_archive_read_obj(&fb, s->a, &dir->link, AMBER_OBJ_FANOUT, 8 << 20, what);
	if (rc == 0)
		rc = amber_fanout_decode(&v->b, &v->bits, &v->nb, fb.data, fb.len);
	if (rc == 0 && tn != v->nb + 1)
		rc = tree_mismatch(what);
	for (size_t i = 0; rc == 0 && i < v->nb; i++) {
		char name[8];
		const amber_tparsed *x;

		snprintf(name, sizeof(name), "b%04x", v->b[i].id);
		x = amber_tree_find(t, tn, name);
		if (!x || x->mode != 040000 || memcmp(x->oid, v->b[i].tree_oid, 20) != 0)
			rc = tree_mismatch(what);
	}
	amber_buf_dispose(&fb);
	if (rc < 0) {
		free(v->b);
		v->b = NULL;
	}
	return rc;
}

static int is_fanout(const amber_tparsed *t, size_t tn)
{
	for (size_t i = 0; i < tn; i++)
		if (t[i].name_len == 5 && t[i].name[0] == 'b' && t[i].mode == 040000)
			return 1;
	return 0;
}

int amber_dir_buckets(amber_fanout_view *v, amber_snapshot *s, const amber_entry *dir)
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
		rc = read_tree(&tb, &t, &tn, s->a, dir->tree_oid, what);
	if (rc == 0 && (!(m = amber_tree_find(t, tn, "m")) || memcmp(m->oid, dir->link.oid, 20)))
		rc = tree_mismatch(what);
	if (rc == 0 && is_fanout(t, tn))
		rc = fanout_list(v, s, dir, t, tn, what);
	free(t);
	amber_buf_dispose(&tb);
	return rc;
}

int amber_dir_open_bucket(amber_dir **out, amber_snapshot *s, const amber_entry *dir,
			  const amber_bucket *b, unsigned bits)
{
	amber_dir *d = calloc(1, sizeof(*d));
	char what[AMBER_NAME_MAX + 64];
	amber_entry *e = NULL;
	size_t n = 0;
	int rc = d ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	dir_what(what, sizeof(what), dir);
	if (rc == 0)
		rc = read_leaf(&e, &n, s, b->tree_oid, &b->link, what);
	if (rc == 0)
		rc = merge_bucket(d, e, n, b, bits, s, what);
	if (rc == 0)
		free(e); /* entries moved into d */
	else
		amber_entries_free(e, n);
	if (rc < 0) {
		amber_dir_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

/* Merge every bucket's listing into d, in name order. */
static int read_buckets(amber_dir *d, amber_snapshot *s, const amber_entry *dir,
			const amber_fanout_view *v, const char *what)
{
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < v->nb; i++) {
		amber_dir *b = NULL;

		rc = amber_dir_open_bucket(&b, s, dir, &v->b[i], v->bits);
		if (rc == 0 && (rc = merge_bucket(d, b->e, b->n, &v->b[i], v->bits, s, what)) == 0)
			b->n = 0; /* entries moved into d */
		amber_dir_free(b);
	}
	if (rc == 0)
		qsort(d->e, d->n, sizeof(*d->e), entry_qsort_cmp);
	for (size_t i = 1; rc == 0 && i < d->n; i++)
		if (amber_name_cmp(d->e[i - 1].name, d->e[i - 1].name_len, d->e[i].name,
				   d->e[i].name_len) == 0)
			rc = amber_fail(AMBER_ECORRUPT, "%s: duplicate name in fanned-out directory",
					what);
	return rc;
}

int amber_dir_open(amber_dir **out, amber_snapshot *s, const amber_entry *dir)
{
	amber_fanout_view v = {0};
	amber_dir *d = calloc(1, sizeof(*d));
	char what[AMBER_NAME_MAX + 64];
	int rc = d ? amber_dir_buckets(&v, s, dir) : amber_fail(AMBER_ERROR, "out of memory");

	dir_what(what, sizeof(what), dir);
	if (rc == 0 && v.b)
		rc = read_buckets(d, s, dir, &v, what);
	else if (rc == 0)
		rc = read_leaf(&d->e, &d->n, s, dir->tree_oid, &dir->link, what);
	free(v.b);
	if (rc < 0) {
		amber_dir_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

/* ---- paths -------------------------------------------------------------------- */

void amber_entry_free(amber_entry *e)
{
	if (!e)
		return;
	amber_entry_dispose(e);
	free(e);
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

/* ---- file contents ----------------------------------------------------------------- */

/*
 * Decoded chunks and chunk indexes live in the archive's shared cache
 * (cache.c), so several threads and snapshots reading the same content
 * decode it once.  An entry is keyed by everything its decode checked: the
 * link (object id and mac), the size the parent declared and, for an index,
 * the chunk tree it was checked against.  Keyed by object id alone, a hostile
 * manifest could name a good index under a larger file size, or a good chunk
 * under another mac, and be served what was checked for someone else.
 */

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
 * A chunk tree holds exactly c00000000.. (one per chunk, fixed width, so
 * git order is chunk order) and then "i", the index: checked in one pass.
 */
static int check_chunk_tree(amber_archive *a, const amber_entry *e, const amber_chunkref *c,
			    size_t n, const char *what)
{
	amber_buf tb = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	size_t tn = 0;
	int rc = read_tree(&tb, &t, &tn, a, e->tree_oid, what);

	if (rc == 0 && (tn != n + 1 || !is_blob(&t[n], "i", e->link.oid)))
		rc = tree_mismatch(what);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char name[24];

		snprintf(name, sizeof(name), "c%08zu", i);
		if (!is_blob(&t[i], name, c[i].link.oid))
			rc = tree_mismatch(what);
	}
	free(t);
	amber_buf_dispose(&tb);
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
	if (rc == 0)
		rc = amber_index_decode(&x->c, &x->n, ib.data, ib.len, e->size, a->chunk_max);
	if (rc == 0)
		rc = check_chunk_tree(a, e, x->c, x->n, what);
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
	amber_cache_fill(a->cache, *out, x, x->n * 56 + 64, index_free);
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
	amber_buf_init(b, AMBER_CHUNK_MAX + 64);
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
	amber_cache_fill(a->cache, *out, b, b->cap + 64, amber_buf_free);
	return 0;
}

static int copy_chunk(uint8_t *buf, size_t *n, amber_archive *a, const amber_link *l,
		      size_t clen, uint64_t in, size_t want, const char *what)
{
	amber_cobj *o = NULL;
	int rc = amber_chunk_get(&o, a, l, clen, what);
	const amber_buf *b = rc == 0 ? o->data : NULL;

	*n = 0;
	if (rc == 0 && (in >= b->len || b->len != clen))
		rc = amber_fail(AMBER_ECORRUPT, "%s: read at byte %" PRIu64 " of a chunk of %zu "
				"bytes (its index and the file size disagree)", what, in, b->len);
	if (rc == 0) {
		*n = b->len - in < want ? (size_t)(b->len - in) : want;
		memcpy(buf, b->data + in, *n);
	}
	amber_cache_release(a->cache, o);
	return rc;
}

static size_t chunk_at(const file_index *x, uint64_t off)
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
	for (size_t i = rc == 0 ? chunk_at(x, off) : 0; rc == 0 && len > 0 && i < x->n; i++) {
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

/* ---- read-ahead ---------------------------------------------------------------------- */

#define PREFETCH_AHEAD ((uint64_t)4 << 20)

static void prefetch_link(amber_archive *a, const amber_link *l, size_t len)
{
	uint8_t key[AMBER_CKEY];

	amber_link_key(key, l, 'c', len, NULL);
	if (!amber_cache_has(a->cache, key))
		amber_archive_prefetch(a, l, len);
}

void amber_file_prefetch(amber_snapshot *s, const amber_entry *e, uint64_t off)
{
	amber_archive *a = s->a;
	amber_cobj *o = NULL;
	const file_index *x;

	if (e->type != AMBER_T_REG || off >= e->size)
		return;
	if (e->content == AMBER_C_BLOB) {
		prefetch_link(a, &e->link, (size_t)e->size);
		return;
	}
	if (e->content != AMBER_C_CHUNKED || amber_file_index(&o, a, e, "read-ahead") < 0) {
		amber_error_clear();
		return;
	}
	x = o->data;
	for (size_t i = chunk_at(x, off); i < x->n && x->off[i] < off + PREFETCH_AHEAD; i++)
		prefetch_link(a, &x->c[i].link, x->c[i].len);
	amber_cache_release(a->cache, o);
}

/* ---- resolving specs and walking history --------------------------------------------- */

static int stream_tip(uint8_t oid[20], amber_archive *a, const char *stream)
{
	char ref[256];
	int rc;

	snprintf(ref, sizeof(ref), "refs/heads/%s", stream ? stream : "main");
	rc = amber_store_ref_read(oid, a->store, ref);
	if (rc == AMBER_ENOTFOUND)
		return amber_fail(AMBER_ENOTFOUND, "stream '%s' of archive %s has no snapshot",
				  stream ? stream : "main", a->path);
	return rc;
}

int amber_commit_time(int64_t *time_ns, uint8_t parent[20], int *has_parent, amber_archive *a,
		      const uint8_t oid[20])
{
	amber_commit c = {0};
	char hex[41], *tt = NULL;
	int rc;

	amber_oid_tohex(hex, oid);
	rc = read_commit(&c, a, oid, hex);
	if (rc == 0) {
		tt = amber_trailer_get(c.message, "Amberfs-Time");
		rc = tt && amber_time_parse(time_ns, tt) == 0 ?
			     0 : amber_fail(AMBER_ECORRUPT, "snapshot %s has no valid time", hex);
		memcpy(parent, c.parent, 20);
		*has_parent = c.nparents == 1;
	}
	free(tt);
	amber_commit_dispose(&c);
	return rc;
}

int amber_record_read(amber_record *r, amber_archive *a, const uint8_t oid[20])
{
	amber_commit c = {0};
	char hex[41], *b64 = NULL;
	int rc;

	memset(r, 0, sizeof(*r));
	amber_oid_tohex(hex, oid);
	rc = read_commit(&c, a, oid, hex);
	if (rc == 0 && !(b64 = amber_trailer_get(c.message, "Amberfs-Record")))
		rc = amber_fail(AMBER_EAUTH, "snapshot %s: commit has no amberfs record", hex);
	if (rc == 0)
		rc = decode_record(r, a, b64, hex);
	if (rc == 0 && (rc = check_commit(&c, r, hex)) < 0)
		amber_record_dispose(r);
	free(b64);
	amber_commit_dispose(&c);
	return rc;
}

/* Newest snapshot of the stream taken before `end`, through the skip links
 * of the records or else the time index (amber_snapshot_open then
 * authenticates the one chosen). */
static int resolve_time(uint8_t out[20], amber_archive *a, const char *stream, int64_t end,
			const char *spec)
{
	amber_timeline *tl = NULL;
	char hex[41];
	size_t i = 0;
	uint8_t tip[20];
	int rc = stream_tip(tip, a, stream);

	/* the skip links of the records; archives written before them walk */
	if (rc == 0)
		rc = amber_history_find(out, a, stream ? stream : "main", tip, end);
	if (rc == AMBER_ENOTFOUND)
		return amber_fail(rc, "no snapshot of stream '%s' at or before %s",
				  stream ? stream : "main", spec + 1);
	if (rc <= 0)
		return rc;
	rc = amber_timeline_open(&tl, a, stream);
	if (rc == 0 && (i = amber_timeline_lower_bound(tl, end)) == 0)
		rc = amber_fail(AMBER_ENOTFOUND, "no snapshot of stream '%s' at or before %s",
				stream ? stream : "main", spec + 1);
	if (rc == 0) {
		amber_timeline_id(hex, tl, i - 1);
		rc = amber_oid_fromhex(out, hex);
	}
	amber_timeline_free(tl);
	return rc;
}

static int is_hex(const char *s)
{
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s) || isupper((unsigned char)*s))
			return 0;
	return 1;
}

static int resolve_at(uint8_t oid[20], amber_archive *a, const char *stream, const char *spec)
{
	int64_t t, end;

	/* A time names the span its precision covers: 14:03:07 is in force
	 * until 14:03:08, so a printed (truncated) time finds its snapshot. */
	if (amber_time_parse_span(&t, &end, spec) < 0 &&
	    amber_time_parse_span(&t, &end, spec + 1) < 0)
		return amber_fail(AMBER_EINVAL, "'%s' is not a time (ISO 8601 or @EPOCH[.frac])",
				  spec);
	return resolve_time(oid, a, stream, end, spec);
}

/* Resolve spec; via receives the stream whose ref it went through, or "". */
static int resolve_oid(uint8_t oid[20], char via[AMBER_STREAM_MAX + 1], amber_archive *a,
		       const char *stream, const char *spec)
{
	char ref[512];
	size_t len = strlen(spec);
	const char *at = strchr(spec, '@');

	snprintf(via, AMBER_STREAM_MAX + 1, "%s", spec[0] == '@' || !strcmp(spec, "latest") ?
		 (stream ? stream : "main") : "");
	if (strcmp(spec, "latest") == 0)
		return stream_tip(oid, a, stream);
	if (spec[0] == '@')
		return resolve_at(oid, a, stream, spec);
	if (at && (size_t)(at - spec) <= AMBER_STREAM_MAX) {
		/* STREAM@TIME; no tag or stream name contains '@' */
		snprintf(via, AMBER_STREAM_MAX + 1, "%.*s", (int)(at - spec), spec);
		if (amber_refname_valid(via))
			return resolve_at(oid, a, via, at);
		via[0] = '\0';
	}
	if (len == 40 && is_hex(spec))
		return amber_oid_fromhex(oid, spec);
	if (amber_refname_valid(spec)) {
		snprintf(ref, sizeof(ref), "refs/tags/%s", spec);
		if (amber_store_ref_read(oid, a->store, ref) == 0)
			return peel(oid, a, oid);
	}
	if (len >= 7 && len < 40 && is_hex(spec)) {
		int rc = amber_store_expand_prefix(oid, a->store, spec);

		if (rc == AMBER_EAMBIGUOUS)
			return amber_fail(rc, "snapshot id prefix '%s' is ambiguous", spec);
		if (rc != AMBER_ENOTFOUND)
			return rc;
	}
	return amber_fail(AMBER_ENOTFOUND, "no snapshot '%s' (not latest, a tag, an id or @TIME)",
			  spec);
}

/*
 * A snapshot reached through refs/heads/S must be one of S's, as its
 * authenticated record says, or a ref moved to another stream's tip would
 * be served as S.  A locked archive serves nothing, so it is not checked
 * until it is unlocked.
 */
static int check_via(amber_archive *a, const amber_commit *c, const char *hex, const char *via)
{
	amber_record r = {0};
	int rc;

	if (!via[0] || amber_archive_needs_key(a))
		return 0;
	rc = open_record(&r, a, c, hex);
	if (rc == 0 && strcmp(r.stream, via) != 0)
		rc = stream_mismatch(hex, r.stream, via);
	amber_record_dispose(&r);
	return rc;
}

int amber_resolve(char id_out[AMBER_OID_HEXSZ + 1], amber_archive *a, const char *stream,
		  const char *spec)
{
	char hex[41], via[AMBER_STREAM_MAX + 1];
	uint8_t oid[20];
	int rc = resolve_oid(oid, via, a, stream, spec);
	amber_commit c = {0};

	if (rc < 0)
		return rc;
	amber_oid_tohex(hex, oid);
	rc = read_commit(&c, a, oid, hex);
	if (rc == 0)
		rc = check_via(a, &c, hex, via);
	amber_commit_dispose(&c);
	if (rc == 0)
		memcpy(id_out, hex, 41);
	return rc;
}

int amber_log(amber_archive *a, const char *stream, amber_log_cb cb, void *payload)
{
	const char *st = stream ? stream : "main";
	int64_t newer = INT64_MAX;
	uint8_t cur[20];
	int rc = stream_tip(cur, a, stream);

	while (rc == 0) {
		amber_snapshot *s = NULL;
		char hex[41];

		amber_oid_tohex(hex, cur);
		if ((rc = amber_snapshot_open(&s, a, hex)) < 0)
			break;
		if (strcmp(s->info.stream, st) != 0)
			rc = amber_fail(AMBER_EAUTH, "snapshot %s belongs to stream '%s', found on "
					"stream '%s'", hex, s->info.stream, st);
		if (rc == 0 && s->info.time_ns >= newer)
			rc = amber_fail(AMBER_EAUTH, "snapshot %s is not older than its child: "
					"rewritten history", hex);
		newer = s->info.time_ns;
		if (rc == 0)
			rc = cb(&s->info, payload);
		if (rc == 0 && !s->info.parent[0]) {
			amber_snapshot_free(s);
			break;
		}
		if (rc == 0)
			amber_oid_fromhex(cur, s->info.parent);
		amber_snapshot_free(s);
	}
	return rc;
}

typedef struct streamscan {
	int (*cb)(const char *, void *);
	void *payload;
} streamscan;

static int stream_cb(const char *name, const uint8_t oid[20], void *payload)
{
	streamscan *sc = payload;

	return sc->cb(name + strlen("refs/heads/"), sc->payload);
}

int amber_stream_list(amber_archive *a, int (*cb)(const char *stream, void *payload),
		      void *payload)
{
	streamscan sc = {cb, payload};

	return amber_store_ref_foreach(a->store, "refs/heads/*", stream_cb, &sc);
}

/* ---- the read-ahead worker ------------------------------------------------------------- */

static void *prefetch_main(void *arg)
{
	amber_archive *a = arg;

	pthread_mutex_lock(&a->pf_lock);
	while (!a->pf_stop) {
		amber_link l;
		size_t len;
		amber_cobj *o = NULL;

		if (a->pf_n == 0) {
			pthread_cond_wait(&a->pf_cond, &a->pf_lock);
			continue;
		}
		l = a->pf_queue[0];
		len = a->pf_len[0];
		a->pf_n--;
		memmove(a->pf_queue, a->pf_queue + 1, a->pf_n * sizeof(a->pf_queue[0]));
		memmove(a->pf_len, a->pf_len + 1, a->pf_n * sizeof(a->pf_len[0]));
		pthread_mutex_unlock(&a->pf_lock);
		if (amber_chunk_get(&o, a, &l, len, "read-ahead") < 0)
			amber_error_clear(); /* the real read reports it */
		amber_cache_release(a->cache, o);
		pthread_mutex_lock(&a->pf_lock);
	}
	pthread_mutex_unlock(&a->pf_lock);
	return NULL;
}

void amber_archive_prefetch(amber_archive *a, const amber_link *l, size_t len)
{
	pthread_mutex_lock(&a->pf_lock);
	for (size_t i = 0; i < a->pf_n; i++)
		if (memcmp(&a->pf_queue[i], l, sizeof(*l)) == 0 && a->pf_len[i] == len)
			goto done;
	if (!a->pf_started && !a->pf_stop)
		a->pf_started = pthread_create(&a->pf_thread, NULL, prefetch_main, a) == 0;
	if (!a->pf_started || a->pf_n == sizeof(a->pf_len) / sizeof(a->pf_len[0]))
		goto done;
	a->pf_queue[a->pf_n] = *l;
	a->pf_len[a->pf_n++] = len;
	pthread_cond_signal(&a->pf_cond);
done:
	pthread_mutex_unlock(&a->pf_lock);
}

void amber_archive_prefetch_stop(amber_archive *a)
{
	int started;

	pthread_mutex_lock(&a->pf_lock);
	a->pf_stop = 1;
	started = a->pf_started;
	pthread_cond_broadcast(&a->pf_cond);
	pthread_mutex_unlock(&a->pf_lock);
	if (started)
		pthread_join(a->pf_thread, NULL);
}
