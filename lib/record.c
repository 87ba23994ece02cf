/*
 * Commits and records: reading a snapshot's commit, authenticating its
 * record, and opening a snapshot handle on them.
 *
 * Every link is checked on the way down (invariant 5):
 *   commit  -> its record (AEAD; binds tree, parent, time and stream, and
 *              carries the root directory's entry)
 *   tree    -> "m" must be the manifest the parent's link names, and every
 *              child object in the tree must be the one the manifest names
 *              under that child's token, with nothing extra (dir.c)
 *   object  -> decoded with the mac its parent recorded, so its content is
 *              the one the parent was written with (file.c)
 * Anything that does not match is AMBER_EAUTH: no data from a spliced,
 * swapped or rolled-back object is ever returned.
 */
#include "record.h"

#include "buf.h"
#include "codec.h"
#include "error.h"
#include "gitobj.h"
#include "manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RECORD ((size_t)4 << 20) /* the root's xattrs ride in the record */

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

int amber_commit_read(amber_commit *c, amber_archive *a, const uint8_t oid[20],
		      const char *hex)
{
	return amber_commit_read_in(c, a, a->store, oid, hex);
}

int amber_commit_read_in(amber_commit *c, amber_archive *a, amber_store *st,
			 const uint8_t oid[20], const char *hex)
{
	amber_buf b = AMBER_BUF_INIT;
	int type = 0;
	int rc = amber_store_read(&b, &type, st, oid, (size_t)1 << 20);

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
	if (amber_base64_decode(bin, &len, b64, cap) != 0)
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

/* One walk of the tag refs: each tag that names `oid` goes to cb. */
typedef struct tagscan {
	amber_archive *a;
	const uint8_t *oid;
	int (*cb)(const char *tag, void *payload);
	void *payload;
} tagscan;

int amber_tag_peel(uint8_t out[20], amber_archive *a, const uint8_t oid[20])
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

	if (amber_tag_peel(target, t->a, oid) < 0) {
		amber_error_clear();    /* an unreadable tag names no snapshot */
		return 0;
	}
	return memcmp(target, t->oid, 20) == 0 ? t->cb(name + strlen("refs/tags/"), t->payload) : 0;
}

/* Collect into a NULL-terminated array (info->tags). */
typedef struct tagvec {
	char ***v;
	size_t n;
} tagvec;

static int tagvec_add(const char *tag, void *payload)
{
	tagvec *t = payload;
	char **v = realloc(*t->v, (t->n + 2) * sizeof(*v));

	if (!v)
		return amber_fail(AMBER_ERROR, "out of memory");
	*t->v = v;
	if (!(v[t->n] = strdup(tag)))
		return amber_fail(AMBER_ERROR, "out of memory");
	v[++t->n] = NULL;
	return 0;
}

static int scan_tags(amber_archive *a, const uint8_t oid[20],
		     int (*cb)(const char *tag, void *payload), void *payload)
{
	tagscan t = {a, oid, cb, payload};

	return amber_store_ref_foreach(a->store, "refs/tags/*", tag_cb, &t);
}

int amber_snapshot_tags(amber_snapshot *s, int (*cb)(const char *tag, void *payload),
			void *payload)
{
	uint8_t oid[20];

	if (amber_oid_fromhex(oid, s->info.id) < 0)
		return amber_fail(AMBER_EINVAL, "'%s' is not a snapshot id", s->info.id);
	return scan_tags(s->a, oid, cb, payload);
}

int amber_record_open(amber_record *r, amber_archive *a, const amber_commit *c,
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

int amber_stream_mismatch(const char *hex, const char *has, const char *stream)
{
	return amber_fail(AMBER_EAUTH, "snapshot %s belongs to stream '%s', not to stream '%s' "
			  "whose ref names it (a moved ref); run amberfs verify", hex, has,
			  stream ? stream : "main");
}

int amber_snapshot_check_stream(const amber_snapshot *s, const char *stream)
{
	if (strcmp(s->info.stream, stream ? stream : "main") == 0)
		return 0;
	return amber_stream_mismatch(s->info.id, s->info.stream, stream);
}

/* ---- the tags of a whole walk, read once ------------------------------------------- */

static int tagtab_cb(const char *name, const uint8_t oid[20], void *payload)
{
	amber_tagtab *t = payload;
	amber_tagent *v;

	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;

		if (!(v = realloc(t->v, cap * sizeof(*v))))
			return amber_fail(AMBER_ERROR, "out of memory");
		t->v = v;
		t->cap = cap;
	}
	v = &t->v[t->n];
	if (amber_tag_peel(v->oid, t->a, oid) < 0) {
		amber_error_clear();    /* as a per-snapshot scan: an unreadable tag names none */
		return 0;
	}
	if (!(v->name = strdup(name + strlen("refs/tags/"))))
		return amber_fail(AMBER_ERROR, "out of memory");
	t->n++;
	return 0;
}

static int tagent_cmp(const void *x, const void *y)
{
	const amber_tagent *a = x, *b = y;
	int c = memcmp(a->oid, b->oid, 20);

	return c ? c : strcmp(a->name, b->name);
}

int amber_tagtab_load(amber_tagtab *t, amber_archive *a)
{
	int rc;

	memset(t, 0, sizeof(*t));
	t->a = a;
	rc = amber_store_ref_foreach(a->store, "refs/tags/*", tagtab_cb, t);
	if (rc < 0) {
		amber_tagtab_dispose(t);
		return rc;
	}
	if (t->n)
		qsort(t->v, t->n, sizeof(*t->v), tagent_cmp);
	return 0;
}

void amber_tagtab_dispose(amber_tagtab *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].name);
	free(t->v);
	memset(t, 0, sizeof(*t));
}

/* info->tags (empty, as fill_info leaves it) becomes the tags of oid in t. */
static int tagtab_fill(char ***tags, const amber_tagtab *t, const uint8_t oid[20])
{
	size_t lo = 0, hi = t->n, k = 0, n;
	char **v;

	while (lo < hi) {       /* the first entry at or after oid */
		size_t mid = lo + (hi - lo) / 2;

		if (memcmp(t->v[mid].oid, oid, 20) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (n = 0; lo + n < t->n && memcmp(t->v[lo + n].oid, oid, 20) == 0; n++)
		;
	if (!n)
		return 0;
	if (!(v = realloc(*tags, (n + 1) * sizeof(*v))))
		return amber_fail(AMBER_ERROR, "out of memory");
	*tags = v;
	for (; k < n; k++) {
		v[k + 1] = NULL;
		if (!(v[k] = strdup(t->v[lo + k].name)))
			return amber_fail(AMBER_ERROR, "out of memory");
	}
	return 0;
}

static int open_in(amber_snapshot **out, amber_archive *a, amber_store *st,
		   const amber_tagtab *tags, const char *id, unsigned flags)
{
	amber_snapshot *s = NULL;
	amber_commit c = {0};
	amber_record r = {0};
	uint8_t oid[20];
	int rc = amber_archive_check_unlocked(a);

	if (rc == 0 && amber_oid_fromhex(oid, id) < 0)
		rc = amber_fail(AMBER_EINVAL, "'%s' is not a snapshot id", id);
	if (rc == 0)
		rc = amber_commit_read_in(&c, a, st, oid, id);
	if (rc == 0)
		rc = amber_record_open(&r, a, &c, id);
	if (rc == 0 && !(s = calloc(1, sizeof(*s))))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (rc == 0) {
		s->a = a;
		snprintf(s->info.id, sizeof(s->info.id), "%s", id);
		rc = fill_info(&s->info, &r);
	}
	if (rc == 0)
		rc = root_entry(s, &r, id);
	if (rc == 0 && tags)
		rc = tagtab_fill(&s->info.tags, tags, oid);
	else if (rc == 0 && !(flags & AMBER_SNAP_NO_TAGS)) {
		tagvec t = {&s->info.tags, 0};

		rc = scan_tags(a, oid, tagvec_add, &t);
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

int amber_snapshot_open(amber_snapshot **out, amber_archive *a, const char *id)
{
	return open_in(out, a, a->store, NULL, id, 0);
}

int amber_snapshot_open_ext(amber_snapshot **out, amber_archive *a, const char *id,
			    unsigned flags)
{
	if (flags & ~AMBER_SNAP_NO_TAGS)
		return amber_fail(AMBER_EINVAL, "amber_snapshot_open_ext: unknown flags %#x", flags);
	return open_in(out, a, a->store, NULL, id, flags);
}

int amber_snapshot_open_in(amber_snapshot **out, amber_archive *a, amber_store *st,
			   const amber_tagtab *tags, const char *id)
{
	return open_in(out, a, st, tags, id, 0);
}

int amber_commit_time(int64_t *time_ns, uint8_t parent[20], int *has_parent, amber_archive *a,
		      const uint8_t oid[20])
{
	amber_commit c = {0};
	char hex[41], *tt = NULL;
	int rc;

	amber_oid_tohex(hex, oid);
	rc = amber_commit_read(&c, a, oid, hex);
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
	rc = amber_commit_read(&c, a, oid, hex);
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
