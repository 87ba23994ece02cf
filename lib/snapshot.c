/*
 * The snapshot writer.
 *
 * One thread walks the source tree in name order, reads files and cuts
 * them into chunks; a pool of workers hashes, compresses, encrypts and
 * appends each chunk to the pack.  A directory's manifest is written once
 * all of its children are done, so the walk is a post-order build of the
 * Merkle tree that amberfs-format(5) describes.
 *
 * Durability order (invariant 2): all objects go into one pack (or a few,
 * when large) that is fsynced and renamed into place; every new object is
 * then read back through the store and checked (decrypt, decompress, hash)
 * before the stream's ref moves by compare-and-swap.  A crash at any point
 * leaves the ref at the previous snapshot; an unreferenced pack is harmless
 * and its objects are reused by the next snapshot.
 *
 * Two local caches (rebuildable, in the user's cache directory) make
 * incremental snapshots cheap: the files cache maps a path to the stat
 * fields and content links of the last snapshot, so unchanged files are not
 * read at all; the chunk cache maps a keyed hash of plaintext to its link,
 * so a chunk that exists is not compressed and encrypted again.
 *
 * The chunk cache is bounded, not a record of the whole history: each entry
 * carries the generation (one per snapshot that used the cache) in which it
 * was last written or found, and a save keeps only the entries of the last
 * CHUNK_KEEP generations, or more of the newest when the tree itself needs
 * more (about two entries per chunk of the tree).  Its size and the cost of
 * loading and saving it are so flat in the length of the history.  A chunk
 * dropped from it is at worst encoded again: the pack writer finds the
 * object in the store and does not write it twice.  An entry is never taken
 * on trust either: one loaded from disk is checked against the store before
 * its first use.
 */
#include "amber.h"
#include "archive.h"
#include "chunker.h"
#include "codec.h"
#include "error.h"
#include "gitobj.h"
#include "kvmap.h"
#include "manifest.h"
#include "pool.h"
#include "dir.h"
#include "file.h"
#include "history.h"
#include "record.h"
#include "repack.h"
#include "stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF ((size_t)8 << 20)
#define MAX_INFLIGHT ((size_t)64 << 20)
#define READ_RETRIES 3

static const char FILES_MAGIC[8] = "AMBFC01\n";
static const char CHUNKS_MAGIC[8] = "AMBCC02\n"; /* 01: no generation; dropped */

/* Generations a chunk stays in the chunk cache after its last use. */
#define CHUNK_KEEP 32u

/* files cache value: what a path held at the last snapshot */
typedef struct fc_val {
	uint64_t size, ino;
	int64_t mtime_ns, ctime_ns;
	uint8_t content;
	uint8_t tree_oid[20];
	amber_link link;
} fc_val;

/* chunk cache value */
typedef struct cc_val {
	amber_link link;
	uint8_t verified;   /* exists in the store, or written by this run */
	uint32_t gen;       /* generation of its last use */
} cc_val;

/* an object written by this run, to read back before the ref moves */
typedef struct readback {
	uint8_t oid[20];
	uint8_t mac[24];
	size_t plain_len;  /* frames: payload length */
	int type;          /* AMBER_OBJ_* for frames, 0 for raw git objects */
	int gittype;
	amber_task task;
	struct snap *s;
	int rc;
	char msg[256];
} readback;

typedef struct chunk_task {
	amber_task task;
	struct snap *s;
	uint8_t *data;
	size_t len;
	amber_link link;
	int rc;
	char msg[256];
} chunk_task;

/* a regular file whose chunks are in flight */
typedef struct pending {
	size_t entry;           /* index in the directory's entry array */
	amber_group group;
	chunk_task **chunks;
	size_t n, cap;
	uint8_t key[32];        /* files cache key */
	fc_val fc;
	uint64_t hl_ino, hl_dev;
} pending;

typedef struct hardlink {
	uint64_t dev, ino, group;
	amber_entry content;    /* content fields only */
	int done;
} hardlink;

/* Kinds of objects, for the breakdown of bytes_new (amber_stats version 2). */
enum {
	K_CHUNK, K_MANIFEST, K_BUCKET, K_FANOUT, K_INDEX, K_DIRTREE, K_FANOUTTREE,
	K_CHUNKTREE, K_COMMIT, K_PAGE, K_NKINDS
};

typedef struct snap {
	amber_archive *a;
	const amber_snapshot_opts *o;
	amber_packw *w;
	amber_pool *pool;
	amber_stats st;
	atomic_uint_fast64_t bytes_new, objects_new;
	atomic_uint_fast64_t kind[K_NKINDS]; /* bytes_new by kind of object */
	uint64_t record_b64;    /* bytes of the record in the commit message */
	amber_kvmap *files_old, *files_new, *chunks;
	uint32_t gen;           /* generation stamped on the chunk entries this snapshot uses */
	atomic_int stamped;     /* whether any entry was */
	pthread_mutex_t lock;   /* protects chunks, rb */
	readback **rb;
	size_t nrb, caprb;
	hardlink *hl;
	size_t nhl, caphl;
	uint64_t next_group;
	int64_t start_ns;
	uint64_t listings0;	/* amber_store_pack_listings() when the snapshot began */
	int fatal;              /* a store error: abandon the snapshot */
	char fatal_msg[512];
	int fatal_code;
	struct timespec last_progress;
	amber_signer *signer;   /* NULL: unsigned commit */
	const char *const *append_only; /* globs of files that only grow (writer sessions) */
	uint8_t *buf;           /* read buffer of the walking thread */
	unsigned depth;         /* of the directory being walked (the root's is 0) */
	char path[8192];        /* current relative path */
	/* an index page written by this snapshot: the commit that keeps it
	 * reachable by git, and what refs/amberfs/pages/<stream> held before */
	int page_state;         /* 0: none, 1: the ref is new, 2: it moves from page_prev */
	uint8_t page_commit[20], page_prev[20];
} snap;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_fatal(snap *s, int rc)
{
	pthread_mutex_lock(&s->lock);
	if (!s->fatal) {
		s->fatal = 1;
		s->fatal_code = rc;
		snprintf(s->fatal_msg, sizeof(s->fatal_msg), "%s", amber_error_last());
	}
	pthread_mutex_unlock(&s->lock);
}

static void warn(snap *s, const char *path, const char *msg, int is_error)
{
	if (is_error)
		s->st.errors++;
	if (s->o->warn)
		s->o->warn(path, msg, s->o->payload);
}

static void warn_errno(snap *s, const char *path, const char *what)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
	warn(s, path, msg, 1);
}

static void progress(snap *s, int force)
{
	struct timespec now;

	if (!s->o->progress)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!force && (now.tv_sec - s->last_progress.tv_sec) * 1000000000L +
			      (now.tv_nsec - s->last_progress.tv_nsec) < 100000000L)
		return;
	s->last_progress = now;
	s->st.bytes_new = atomic_load(&s->bytes_new);
	s->o->progress(&s->st, s->path, s->o->payload);
}

/* ---- storing objects ----------------------------------------------------- */

/* The counters of the objects written, for the caller (not the record). */
static void stats_final(snap *s)
{
	amber_stats *st = &s->st;

	st->bytes_new = atomic_load(&s->bytes_new);
	st->objects_new = atomic_load(&s->objects_new);
	st->pack_listings = s->a ? amber_store_pack_listings(s->a->store) - s->listings0 : 0;
	st->new_chunks = atomic_load(&s->kind[K_CHUNK]);
	st->new_manifests = atomic_load(&s->kind[K_MANIFEST]);
	st->new_buckets = atomic_load(&s->kind[K_BUCKET]);
	st->new_fanout = atomic_load(&s->kind[K_FANOUT]);
	st->new_indexes = atomic_load(&s->kind[K_INDEX]);
	st->new_dirtrees = atomic_load(&s->kind[K_DIRTREE]);
	st->new_fanouttrees = atomic_load(&s->kind[K_FANOUTTREE]);
	st->new_chunktrees = atomic_load(&s->kind[K_CHUNKTREE]);
	st->new_commits = atomic_load(&s->kind[K_COMMIT]);
	st->new_record = st->new_commits ? s->record_b64 : 0;
	st->new_pages = atomic_load(&s->kind[K_PAGE]);
	st->pack_bytes = s->w ? amber_packw_bytes(s->w) : 0;
}

static int add_readback(snap *s, readback *r)
{
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	if (s->nrb == s->caprb) {
		size_t cap = s->caprb ? s->caprb * 2 : 1024;
		readback **n = realloc(s->rb, cap * sizeof(*n));

		if (n) {
			s->rb = n;
			s->caprb = cap;
		} else {
			rc = amber_fail(AMBER_ERROR, "out of memory");
		}
	}
	if (rc == 0)
		s->rb[s->nrb++] = r;
	pthread_mutex_unlock(&s->lock);
	if (rc < 0)
		free(r);
	return rc;
}

/* Add a raw git object (tree, commit) to the pack. */
static int put_git(uint8_t oid[20], snap *s, int type, int kind, const void *data, size_t len)
{
	readback *r;
	int is_new = 0;
	int rc = amber_packw_add(oid, &is_new, s->w, type, data, len);

	if (rc < 0 || !is_new)
		return rc;
	atomic_fetch_add(&s->objects_new, 1);
	atomic_fetch_add(&s->bytes_new, len);
	atomic_fetch_add(&s->kind[kind], len);
	r = calloc(1, sizeof(*r));
	if (!r)
		return amber_fail(AMBER_ERROR, "out of memory");
	memcpy(r->oid, oid, 20);
	r->gittype = type;
	return add_readback(s, r);
}

/* Encode a payload as a frame and add it as a blob.  Thread-safe. */
static int put_frame(amber_link *l, snap *s, int type, int kind, const void *data, size_t len)
{
	amber_buf f = AMBER_BUF_INIT;
	const amber_keys *k = amber_archive_keys(s->a);
	readback *r = NULL;
	int is_new = 0, rc;

	amber_buf_init(&f, len + 1024 + len / 8);
	rc = amber_codec_encode(&f, l->mac, k, type, data, len, s->a->zstd_level);
	if (rc == 0)
		rc = amber_packw_add(l->oid, &is_new, s->w, AMBER_GIT_BLOB, f.data, f.len);
	if (rc == 0 && is_new) {
		atomic_fetch_add(&s->objects_new, 1);
		atomic_fetch_add(&s->bytes_new, f.len);
		atomic_fetch_add(&s->kind[kind], f.len);
		r = calloc(1, sizeof(*r));
		if (!r)
			rc = amber_fail(AMBER_ERROR, "out of memory");
	}
	if (r) {
		memcpy(r->oid, l->oid, 20);
		memcpy(r->mac, l->mac, 24);
		r->plain_len = len;
		r->type = type;
		rc = add_readback(s, r);
	}
	amber_buf_dispose(&f);
	return rc;
}

static int chunk_cache_get(snap *s, amber_link *l, const uint8_t hash[32])
{
	cc_val v;
	const cc_val *p;
	int found = 0;

	pthread_mutex_lock(&s->lock);
	p = amber_kvmap_get(s->chunks, hash);
	if (p)
		v = *p;
	pthread_mutex_unlock(&s->lock);
	if (!p)
		return 0;
	if (!v.verified && !amber_store_exists(s->a->store, v.link.oid))
		return 0;
	if (!v.verified || v.gen != s->gen) {
		v.verified = 1;
		v.gen = s->gen;
		pthread_mutex_lock(&s->lock);
		amber_kvmap_put(s->chunks, hash, &v); /* replaces: cannot fail */
		pthread_mutex_unlock(&s->lock);
		atomic_store(&s->stamped, 1);
	}
	*l = v.link;
	found = 1;
	return found;
}

static void chunk_run(amber_task *t)
{
	chunk_task *c = (chunk_task *)t;
	snap *s = c->s;
	uint8_t hash[32];
	cc_val v;

	amber_content_hash(hash, amber_archive_keys(s->a), c->data, c->len);
	if (!chunk_cache_get(s, &c->link, hash)) {
		c->rc = put_frame(&c->link, s, AMBER_OBJ_CHUNK, K_CHUNK, c->data, c->len);
		if (c->rc == 0) {
			memset(&v, 0, sizeof(v));
			v.link = c->link;
			v.verified = 1;
			v.gen = s->gen;
			pthread_mutex_lock(&s->lock);
			c->rc = amber_kvmap_put(s->chunks, hash, &v);
			pthread_mutex_unlock(&s->lock);
			atomic_store(&s->stamped, 1);
		}
		if (c->rc < 0)
			snprintf(c->msg, sizeof(c->msg), "%s", amber_error_last());
	}
	free(c->data);
	c->data = NULL;
}

/* ---- reading one regular file ---------------------------------------------- */

static int pending_add(pending *p, snap *s, const uint8_t *data, size_t len)
{
	chunk_task *c;

	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 8;
		chunk_task **n = realloc(p->chunks, cap * sizeof(*n));

		if (!n)
			return amber_fail(AMBER_ERROR, "out of memory");
		p->chunks = n;
		p->cap = cap;
	}
	c = calloc(1, sizeof(*c));
	if (!c || !(c->data = malloc(len ? len : 1))) {
		free(c);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	memcpy(c->data, data, len);
	c->len = len;
	c->s = s;
	c->task.run = chunk_run;
	c->task.cost = len;
	p->chunks[p->n++] = c;
	amber_pool_submit(s->pool, &c->task, &p->group);
	return 0;
}

static void pending_clear(pending *p, snap *s)
{
	amber_pool_wait(s->pool, &p->group);
	for (size_t i = 0; i < p->n; i++)
		free(p->chunks[i]);
	free(p->chunks);
	p->chunks = NULL;
	p->n = p->cap = 0;
}

/*
 * Read fd to its end, or `limit` bytes, queueing chunks.  With `rest` set,
 * the last piece (cut by the end of the data, not by the chunker) is not
 * queued: *rest points at it in buf and *rest_len is its length.  Returns
 * bytes read or -1 (errno).
 */
static int64_t read_chunks_rest(pending *p, snap *s, int fd, uint8_t *buf, uint64_t limit,
				const uint8_t **rest, size_t *rest_len)
{
	const amber_chunker *ch = &s->a->chunker;
	size_t pos = 0, avail = 0;
	int64_t total = 0;
	int eof = 0;

	if (rest) {
		*rest = NULL;
		*rest_len = 0;
	}
	for (;;) {
		if (!eof && avail - pos < ch->max) {
			memmove(buf, buf + pos, avail - pos);
			avail -= pos;
			pos = 0;
			while (!eof && avail < READ_BUF) {
				uint64_t left = limit - (uint64_t)total;
				size_t want = READ_BUF - avail < left ? READ_BUF - avail : (size_t)left;
				ssize_t r = want ? read(fd, buf + avail, want) : 0;

				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0)
					return -1;
				eof = r == 0;
				avail += (size_t)r;
				total += r;
			}
		}
		if (pos == avail)
			return total;
		size_t n = amber_chunker_next(ch, buf + pos, avail - pos, eof);

		if (rest && eof && pos + n == avail) {
			*rest = buf + pos;
			*rest_len = n;
			s->st.bytes_read += n;
			return total;
		}
		if (pending_add(p, s, buf + pos, n) < 0) {
			set_fatal(s, AMBER_ERROR);
			errno = ENOMEM;
			return -1;
		}
		pos += n;
		s->st.bytes_read += n;
		progress(s, 0);
	}
}

static int64_t read_chunks_upto(pending *p, snap *s, int fd, uint8_t *buf, uint64_t limit)
{
	return read_chunks_rest(p, s, fd, buf, limit, NULL, NULL);
}

/* 1 if path matches one of the append-only globs (NULL-terminated, may be NULL). */
static int append_glob(const char *const *globs, const char *path)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	for (const char *const *g = globs; g && *g; g++)
		if (strchr(*g, '/') ? fnmatch(*g, path, FNM_PATHNAME) == 0
				    : fnmatch(*g, base, 0) == 0)
			return 1;
	return 0;
}

/* The same file, only grown (an append-only file read up to its old size). */
static int same_prefix(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev && b->st_size >= a->st_size;
}

static int same_version(const struct stat *a, const struct stat *b)
{
	return a->st_size == b->st_size && a->st_ino == b->st_ino &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/*
 * Read a file into chunks.  A file that changes while it is read (size,
 * mtime or ctime differ before and after) is read again, and reported if it
 * never holds still: a torn file is never stored.
 * Returns 0, 1 if the file was skipped (warned), or a fatal error.
 */
static int read_file(pending *p, snap *s, int dfd, const char *name, struct stat *st,
		     uint8_t *buf)
{
	int grows = append_glob(s->append_only, s->path);

	for (int attempt = 0; attempt < READ_RETRIES; attempt++) {
		struct stat before, after;
		int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
		int64_t got;

		if (fd < 0) {
			warn_errno(s, s->path, "cannot open");
			return 1;
		}
		if (fstat(fd, &before) < 0 || !S_ISREG(before.st_mode)) {
			close(fd);
			warn(s, s->path, "changed type while being read; not stored", 1);
			return 1;
		}
		/* an append-only file is read up to the size it had: bytes below
		 * it never change, so growth meanwhile does not tear it */
		got = read_chunks_upto(p, s, fd, buf, grows ? (uint64_t)before.st_size : UINT64_MAX);
		if (got < 0) {
			warn_errno(s, s->path, "read failed");
			close(fd);
			pending_clear(p, s);
			return s->fatal ? AMBER_ERROR : 1;
		}
		fstat(fd, &after);
		close(fd);
		if ((grows ? same_prefix(&before, &after) : same_version(&before, &after)) &&
		    got == before.st_size) {
			*st = grows ? before : after;
			return 0;
		}
		pending_clear(p, s);
	}
	warn(s, s->path, "changed while being read (tried 3 times); not stored", 1);
	return 1;
}

/* ---- files cache ------------------------------------------------------------ */

static void files_key(uint8_t key[32], snap *s)
{
	amber_content_hash(key, amber_archive_keys(s->a), s->path, strlen(s->path));
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

static void fc_fill(fc_val *v, const struct stat *st)
{
	memset(v, 0, sizeof(*v));
	v->size = (uint64_t)st->st_size;
	v->ino = st->st_ino;
	v->mtime_ns = ts_ns(&st->st_mtim);
	v->ctime_ns = ts_ns(&st->st_ctim);
}

/* Content of an unchanged file from the files cache, if its objects exist. */
static int files_cache_hit(snap *s, amber_entry *e, const uint8_t key[32], const struct stat *st)
{
	const fc_val *v;
	fc_val now;

	if (!s->files_old || s->o->no_cache)
		return 0;
	v = amber_kvmap_get(s->files_old, key);
	fc_fill(&now, st);
	if (!v || v->size != now.size || v->ino != now.ino || v->mtime_ns != now.mtime_ns ||
	    v->ctime_ns != now.ctime_ns)
		return 0;
	if (v->content == AMBER_C_CHUNKED && !amber_store_exists(s->a->store, v->tree_oid))
		return 0;
	if (v->content != AMBER_C_NONE && !amber_store_exists(s->a->store, v->link.oid))
		return 0;
	e->content = v->content;
	memcpy(e->tree_oid, v->tree_oid, 20);
	e->link = v->link;
	return 1;
}

static void files_cache_put(snap *s, const uint8_t key[32], fc_val *v, const amber_entry *e)
{
	/* A file changed within the last second may change again within the
	 * timestamp granularity without its stat changing: do not trust it. */
	if (v->ctime_ns >= s->start_ns - 1000000000 || v->mtime_ns >= s->start_ns - 1000000000)
		return;
	v->content = e->content;
	memcpy(v->tree_oid, e->tree_oid, 20);
	v->link = e->link;
	if (amber_kvmap_put(s->files_new, key, v) < 0)
		amber_error_clear(); /* only a cache */
}

/* ---- finishing a file: its chunks become a blob or a chunk tree ----------- */

/* Layout 1: an index of chunks refs[0..n) and a tree of it and every chunk. */
static int index_write_flat(snap *s, uint8_t tree[20], amber_link *l, const amber_chunkref *refs,
			    size_t n)
{
	amber_tentry *te = calloc(n + 1, sizeof(*te));
	amber_buf b = AMBER_BUF_INIT;
	int rc = te ? amber_index_encode(&b, refs, n) : amber_fail(AMBER_ERROR, "out of memory");

	for (size_t i = 0; rc == 0 && i < n; i++) {
		snprintf(te[i].name, sizeof(te[i].name), "c%08zu", i);
		te[i].mode = AMBER_GIT_MODE_BLOB;
		memcpy(te[i].oid, refs[i].link.oid, 20);
	}
	if (rc == 0)
		rc = put_frame(l, s, AMBER_OBJ_INDEX, K_INDEX, b.data, b.len);
	if (rc == 0) {
		snprintf(te[n].name, sizeof(te[n].name), "i");
		te[n].mode = AMBER_GIT_MODE_BLOB;
		memcpy(te[n].oid, l->oid, 20);
		amber_buf_reset(&b);
		rc = amber_tree_build(&b, te, n + 1);
	}
	if (rc == 0)
		rc = put_git(tree, s, AMBER_GIT_TREE, K_CHUNKTREE, b.data, b.len);
	amber_buf_dispose(&b);
	free(te);
	return rc;
}

/*
 * The index and chunk tree of multi-chunk file e: paged (layout 2) above
 * AMBER_INDEX_PAGE chunks, so that an append, which changes the last chunks,
 * adds its last page and a small root; the pages before encode to the
 * objects they already are.
 */
static int index_write(snap *s, amber_entry *e, const amber_chunkref *refs, size_t n)
{
	size_t np = (n + AMBER_INDEX_PAGE - 1) / AMBER_INDEX_PAGE;
	amber_indexpage *pg = NULL;
	amber_tentry *te = NULL;
	amber_buf b = AMBER_BUF_INIT;
	int rc = 0;

	if (np < 2 || np > AMBER_INDEX_MAX_PAGES || s->a->index_layout == 1)
		return index_write_flat(s, e->tree_oid, &e->link, refs, n);
	pg = calloc(np, sizeof(*pg));
	te = calloc(np + 1, sizeof(*te));
	if (!pg || !te)
		rc = amber_fail(AMBER_ERROR, "out of memory");
	for (size_t p = 0; rc == 0 && p < np; p++) {
		const amber_chunkref *c = refs + p * AMBER_INDEX_PAGE;

		pg[p].chunks = (uint32_t)(p + 1 < np ? AMBER_INDEX_PAGE : n - p * AMBER_INDEX_PAGE);
		for (size_t i = 0; i < pg[p].chunks; i++)
			pg[p].bytes += c[i].len;
		rc = index_write_flat(s, pg[p].tree_oid, &pg[p].link, c, pg[p].chunks);
		snprintf(te[p].name, sizeof(te[p].name), "p%05zu", p);
		te[p].mode = AMBER_GIT_MODE_TREE;
		memcpy(te[p].oid, pg[p].tree_oid, 20);
	}
	if (rc == 0)
		rc = amber_index_root_encode(&b, pg, np);
	if (rc == 0)
		rc = put_frame(&e->link, s, AMBER_OBJ_INDEX, K_INDEX, b.data, b.len);
	if (rc == 0) {
		snprintf(te[np].name, sizeof(te[np].name), "i");
		te[np].mode = AMBER_GIT_MODE_BLOB;
		memcpy(te[np].oid, e->link.oid, 20);
		amber_buf_reset(&b);
		rc = amber_tree_build(&b, te, np + 1);
	}
	if (rc == 0)
		rc = put_git(e->tree_oid, s, AMBER_GIT_TREE, K_CHUNKTREE, b.data, b.len);
	amber_buf_dispose(&b);
	free(te);
	free(pg);
	return rc;
}

static int chunked_objects(snap *s, amber_entry *e, pending *p)
{
	amber_chunkref *refs = calloc(p->n, sizeof(*refs));
	int rc = refs ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	for (size_t i = 0; rc == 0 && i < p->n; i++) {
		refs[i].link = p->chunks[i]->link;
		refs[i].len = (uint32_t)p->chunks[i]->len;
	}
	if (rc == 0)
		rc = index_write(s, e, refs, p->n);
	free(refs);
	return rc;
}

static int pending_finish(snap *s, amber_entry *e, pending *p)
{
	int rc = 0;

	amber_pool_wait(s->pool, &p->group);
	for (size_t i = 0; i < p->n; i++)
		if (p->chunks[i]->rc < 0)
			return amber_fail(p->chunks[i]->rc, "%s", p->chunks[i]->msg);
	if (p->n == 0) {
		e->content = AMBER_C_NONE;
	} else if (p->n == 1) {
		e->content = AMBER_C_BLOB;
		e->link = p->chunks[0]->link;
	} else {
		e->content = AMBER_C_CHUNKED;
		rc = chunked_objects(s, e, p);
	}
	return rc;
}

/* ---- directory entries -------------------------------------------------------- */

/* `path` names the entry without following a final symlink. */
static int read_xattrs(snap *s, amber_entry *e, const char *path)
{
	char names[65536];
	ssize_t n;

	n = llistxattr(path, names, sizeof(names));
	if (n <= 0)
		return 0; /* none, or not supported here */
	for (char *p = names; p < names + n; p += strlen(p) + 1) {
		uint8_t val[AMBER_XATTR_VALUE_MAX];
		ssize_t vl = lgetxattr(path, p, val, sizeof(val));
		amber_xattr *x;

		if (vl < 0 || strlen(p) > AMBER_XATTR_NAME_MAX || e->nxattrs == AMBER_XATTR_MAX_COUNT) {
			warn(s, s->path, "an extended attribute could not be read; not stored", 0);
			continue;
		}
		x = realloc(e->xattrs, (e->nxattrs + 1) * sizeof(*x));
		if (!x)
			return amber_fail(AMBER_ERROR, "out of memory");
		e->xattrs = x;
		x = &e->xattrs[e->nxattrs];
		x->name = strdup(p);
		x->value = malloc(vl ? (size_t)vl : 1);
		if (!x->name || !x->value)
			return amber_fail(AMBER_ERROR, "out of memory");
		memcpy(x->value, val, (size_t)vl);
		x->value_len = (size_t)vl;
		e->nxattrs++;
	}
	return 0;
}

static int xattr_cmp(const void *a, const void *b)
{
	return strcmp(((const amber_xattr *)a)->name, ((const amber_xattr *)b)->name);
}

static void meta_from_stat(amber_entry *e, const struct stat *st)
{
	e->mode = st->st_mode & 07777;
	e->uid = st->st_uid;
	e->gid = st->st_gid;
	e->mtime_sec = st->st_mtim.tv_sec;
	e->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
	e->nlink = 1;
}

static int read_symlink(snap *s, amber_entry *e, int dfd, const char *name)
{
	char buf[AMBER_TARGET_MAX + 1];
	ssize_t n = readlinkat(dfd, name, buf, sizeof(buf));

	if (n <= 0 || n > AMBER_TARGET_MAX) {
		if (n > AMBER_TARGET_MAX)
			errno = ENAMETOOLONG;
		warn_errno(s, s->path, "cannot read symlink");
		return 1;
	}
	e->target = strndup(buf, (size_t)n);
	if (!e->target)
		return amber_fail(AMBER_ERROR, "out of memory");
	e->target_len = (size_t)n;
	e->size = (uint64_t)n;
	return 0;
}

static hardlink *hardlink_find(snap *s, const struct stat *st)
{
	for (size_t i = 0; i < s->nhl; i++)
		if (s->hl[i].dev == st->st_dev && s->hl[i].ino == st->st_ino)
			return &s->hl[i];
	return NULL;
}

static hardlink *hardlink_new(snap *s, const struct stat *st)
{
	if (s->nhl == s->caphl) {
		size_t cap = s->caphl ? s->caphl * 2 : 16;
		hardlink *n = realloc(s->hl, cap * sizeof(*n));

		if (!n)
			return NULL;
		s->hl = n;
		s->caphl = cap;
	}
	memset(&s->hl[s->nhl], 0, sizeof(s->hl[0]));
	s->hl[s->nhl].dev = st->st_dev;
	s->hl[s->nhl].ino = st->st_ino;
	s->hl[s->nhl].group = ++s->next_group;
	return &s->hl[s->nhl++];
}

static void content_copy(amber_entry *dst, const amber_entry *src)
{
	dst->content = src->content;
	memcpy(dst->tree_oid, src->tree_oid, 20);
	dst->link = src->link;
	dst->size = src->size;
}

static int snap_dir(snap *s, int dfd, amber_entry *self);

/*
 * Regular file: from the files cache, from an earlier member of its hardlink
 * group, or read.  Returns 0 (done or pending), 1 (skipped), <0 fatal.
 */
static int do_regular(snap *s, amber_entry *e, int dfd, const char *name, struct stat *st,
		      pending *p, uint8_t *buf)
{
	hardlink *h = NULL;
	int rc;

	e->type = AMBER_T_REG;
	if (st->st_nlink > 1) {
		h = hardlink_find(s, st);
		if (h && h->done) {
			content_copy(e, &h->content);
			e->hardlink = h->group;
			e->nlink = (uint32_t)st->st_nlink;
			p->entry = SIZE_MAX;
			s->st.files++;
			s->st.bytes += e->size;
			return 0;
		}
	}
	files_key(p->key, s);
	if (files_cache_hit(s, e, p->key, st)) {
		fc_fill(&p->fc, st);
		files_cache_put(s, p->key, &p->fc, e);
		p->entry = SIZE_MAX; /* nothing pending */
	} else {
		rc = read_file(p, s, dfd, name, st, buf);
		if (rc != 0)
			return rc;
		fc_fill(&p->fc, st);
	}
	e->size = (uint64_t)st->st_size;
	meta_from_stat(e, st);
	s->st.files++;
	s->st.bytes += e->size;
	if (st->st_nlink > 1) {
		/* finish now: later members (maybe in other directories) copy it */
		if (p->entry != SIZE_MAX && (rc = pending_finish(s, e, p)) < 0)
			return rc;
		if (p->entry != SIZE_MAX)
			files_cache_put(s, p->key, &p->fc, e);
		pending_clear(p, s);
		p->entry = SIZE_MAX;
		if (!h && !(h = hardlink_new(s, st)))
			return amber_fail(AMBER_ERROR, "out of memory");
		content_copy(&h->content, e);
		h->done = 1;
		e->hardlink = h->group;
		e->nlink = (uint32_t)st->st_nlink;
	}
	return 0;
}

static int do_entry(snap *s, amber_entry *e, int dfd, const char *name, pending *p,
		    uint8_t *buf)
{
	struct stat st;
	int rc = 0;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		warn_errno(s, s->path, "cannot stat");
		return 1;
	}
	meta_from_stat(e, &st);
	switch (st.st_mode & S_IFMT) {
	case S_IFREG:
		rc = do_regular(s, e, dfd, name, &st, p, buf);
		break;
	case S_IFDIR: {
		int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (fd < 0) {
			warn_errno(s, s->path, "cannot open directory");
			return 1;
		}
		e->type = AMBER_T_DIR;
		s->depth++;
		rc = snap_dir(s, fd, e);
		s->depth--;
		close(fd);
		break;
	}
	case S_IFLNK:
		e->type = AMBER_T_SYMLINK;
		rc = read_symlink(s, e, dfd, name);
		break;
	case S_IFIFO:
		e->type = AMBER_T_FIFO;
		break;
	case S_IFCHR:
	case S_IFBLK:
		e->type = S_ISCHR(st.st_mode) ? AMBER_T_CHR : AMBER_T_BLK;
		e->rdev = st.st_rdev;
		break;
	default:
		warn(s, s->path, "socket skipped", 0);
		return 1;
	}
	if (rc == 0) {
		char path[64 + NAME_MAX];

		snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dfd, name);
		rc = read_xattrs(s, e, path);
	}
	if (rc == 0 && e->nxattrs > 1)
		qsort(e->xattrs, e->nxattrs, sizeof(*e->xattrs), xattr_cmp);
	if (rc == 0 && e->type != AMBER_T_REG)
		s->st.files += e->type != AMBER_T_DIR;
	return rc;
}

static int name_cmp_qsort(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;

	return amber_name_cmp(x, strlen(x), y, strlen(y));
}

/* Names of a directory, sorted; *out is a malloc'd array of malloc'd names. */
static int list_names(char ***out, size_t *n, int dfd)
{
	int fd = dup(dfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	char **v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 64;
			char **nv = realloc(v, cap * sizeof(*nv));

			if (!nv)
				break;
			v = nv;
		}
		if (!(v[cnt] = strdup(de->d_name)))
			break;
		cnt++;
	}
	closedir(d);
	if (cnt)
		qsort(v, cnt, sizeof(*v), name_cmp_qsort);
	*out = v;
	*n = cnt;
	return 0;
}

static void path_push(snap *s, size_t *saved, const char *name)
{
	size_t l = strlen(s->path);

	*saved = l;
	snprintf(s->path + l, sizeof(s->path) - l, "%s%s", l ? "/" : "", name);
}

/* ---- directory objects ------------------------------------------------------ */

/* Leaf directory (or bucket): manifest blob "m" plus one entry per content. */
static int write_leaf(snap *s, uint8_t tree[20], amber_link *m, amber_entry *e, size_t n,
		      char (*tok)[AMBER_TOKEN_HEXSZ + 1], int kind)
{
	amber_tentry *te = calloc(n + 1, sizeof(*te));
	amber_buf b = AMBER_BUF_INIT;
	size_t k = 0;
	int rc = te ? amber_manifest_encode(&b, e, n) : amber_fail(AMBER_ERROR, "out of memory");

	if (rc == 0)
		rc = put_frame(m, s, AMBER_OBJ_MANIFEST, kind, b.data, b.len);
	if (rc == 0) {
		snprintf(te[k].name, sizeof(te[k].name), "m");
		te[k].mode = AMBER_GIT_MODE_BLOB;
		memcpy(te[k++].oid, m->oid, 20);
	}
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (e[i].content == AMBER_C_NONE)
			continue;
		te[k].longname = tok[i];
		te[k].mode = e[i].content == AMBER_C_BLOB ? AMBER_GIT_MODE_BLOB : AMBER_GIT_MODE_TREE;
		memcpy(te[k++].oid, e[i].content == AMBER_C_BLOB ? e[i].link.oid : e[i].tree_oid, 20);
	}
	amber_buf_reset(&b);
	if (rc == 0)
		rc = amber_tree_build(&b, te, k);
	if (rc == 0)
		rc = put_git(tree, s, AMBER_GIT_TREE, K_DIRTREE, b.data, b.len);
	amber_buf_dispose(&b);
	free(te);
	return rc;
}

/*
 * Bits of fan-out for n entries: about 16 entries a bucket, so that a
 * snapshot changing k entries rewrites about k small buckets plus the
 * bucket list, not whole directories of thousands of entries.
 */
static unsigned fanout_bits(size_t n)
{
	unsigned bits = AMBER_FANOUT_MIN_BITS;

	while (bits < AMBER_FANOUT_MAX_BITS && ((size_t)16 << bits) < n)
		bits++;
	return bits;
}

typedef struct fanout {
	unsigned bits;
	size_t *order;          /* entry indexes grouped by bucket, name order within */
	unsigned *bucket;       /* bucket of each entry */
	amber_bucket *bk;
	size_t nb;
} fanout;

static int fanout_group(fanout *f, size_t n, char (*tok)[AMBER_TOKEN_HEXSZ + 1])
{
	size_t nbuckets = (size_t)1 << f->bits, *start = calloc(nbuckets + 1, sizeof(*start));

	f->order = malloc(n * sizeof(*f->order));
	f->bucket = malloc(n * sizeof(*f->bucket));
	f->bk = calloc(n + 1, sizeof(*f->bk));
	if (!start || !f->order || !f->bucket || !f->bk) {
		free(start);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	for (size_t i = 0; i < n; i++)
		start[(f->bucket[i] = amber_token_bucket(tok[i], f->bits)) + 1]++;
	for (size_t b = 0; b < nbuckets; b++)
		start[b + 1] += start[b];
	for (size_t i = 0; i < n; i++) /* stable: name order within a bucket */
		f->order[start[f->bucket[i]]++] = i;
	free(start);
	return 0;
}

static void fanout_dispose(fanout *f)
{
	free(f->order);
	free(f->bucket);
	free(f->bk);
}

/* Write the bucket holding order[from..to). */
static int write_bucket(snap *s, fanout *f, size_t from, size_t to, amber_entry *e,
			char (*tok)[AMBER_TOKEN_HEXSZ + 1], amber_entry *be,
			char (*bt)[AMBER_TOKEN_HEXSZ + 1])
{
	amber_bucket *b = &f->bk[f->nb];
	int rc;

	for (size_t k = from; k < to; k++) {
		be[k - from] = e[f->order[k]];
		memcpy(bt[k - from], tok[f->order[k]], sizeof(bt[0]));
	}
	b->id = (uint16_t)f->bucket[f->order[from]];
	b->count = (uint32_t)(to - from);
	rc = write_leaf(s, b->tree_oid, &b->link, be, to - from, bt, K_BUCKET);
	f->nb++;
	return rc;
}

/* Layout 1: the flat bucket list and a tree of "m" and every bucket. */
static int fanout_write_flat(snap *s, amber_entry *self, unsigned bits, const amber_bucket *bk,
			     size_t nb)
{
	amber_tentry *te = calloc(nb + 1, sizeof(*te));
	amber_buf b = AMBER_BUF_INIT;
	int rc = te ? amber_fanout_encode(&b, bits, bk, nb)
		    : amber_fail(AMBER_ERROR, "out of memory");

	if (rc == 0)
		rc = put_frame(&self->link, s, AMBER_OBJ_FANOUT, K_FANOUT, b.data, b.len);
	if (rc == 0) {
		snprintf(te[0].name, sizeof(te[0].name), "m");
		te[0].mode = AMBER_GIT_MODE_BLOB;
		memcpy(te[0].oid, self->link.oid, 20);
		for (size_t i = 0; i < nb; i++) {
			snprintf(te[i + 1].name, sizeof(te[i + 1].name), "b%04x", bk[i].id);
			te[i + 1].mode = AMBER_GIT_MODE_TREE;
			memcpy(te[i + 1].oid, bk[i].tree_oid, 20);
		}
		amber_buf_reset(&b);
		rc = amber_tree_build(&b, te, nb + 1);
	}
	if (rc == 0)
		rc = put_git(self->tree_oid, s, AMBER_GIT_TREE, K_FANOUTTREE, b.data, b.len);
	amber_buf_dispose(&b);
	free(te);
	return rc;
}

/* One layout-2 node and its tree: "m" and one tree per child. */
static int node_put(snap *s, const amber_fanout_node *nd, uint8_t tree[20], amber_link *m)
{
	amber_tentry te[AMBER_FANOUT_NODE_MAX + 1];
	amber_buf b = AMBER_BUF_INIT;
	unsigned w = amber_fanout_width(nd->bits, nd->level);
	int last = nd->level + 1 == amber_fanout_levels(nd->bits);
	int rc = amber_fanout_node_encode(&b, nd);

	memset(te, 0, sizeof(te));
	if (rc == 0)
		rc = put_frame(m, s, AMBER_OBJ_FANOUT, K_FANOUT, b.data, b.len);
	snprintf(te[0].name, sizeof(te[0].name), "m");
	te[0].mode = AMBER_GIT_MODE_BLOB;
	memcpy(te[0].oid, m->oid, 20);
	for (size_t i = 0; i < nd->n; i++) {
		if (last)
			snprintf(te[i + 1].name, sizeof(te[i + 1].name), "b%04x",
				 (nd->prefix << w) | nd->c[i].id);
		else
			snprintf(te[i + 1].name, sizeof(te[i + 1].name), "f%x", nd->c[i].id);
		te[i + 1].mode = AMBER_GIT_MODE_TREE;
		memcpy(te[i + 1].oid, nd->c[i].tree_oid, 20);
	}
	amber_buf_reset(&b);
	if (rc == 0)
		rc = amber_tree_build(&b, te, nd->n + 1);
	if (rc == 0)
		rc = put_git(tree, s, AMBER_GIT_TREE, K_FANOUTTREE, b.data, b.len);
	amber_buf_dispose(&b);
	return rc;
}

/*
 * The layout-2 node at `level` with `prefix` over buckets bk[0..n) (all
 * under that prefix, ids increasing), its children first.  Unchanged nodes
 * encode to the objects they already are, so a snapshot that changes k
 * buckets adds only the k paths of nodes above them.
 */
static int node_write(snap *s, unsigned bits, unsigned level, unsigned prefix,
		      const amber_bucket *bk, size_t n, amber_bucket *out)
{
	amber_fanout_node nd = {.bits = bits, .level = level, .prefix = prefix};
	unsigned w = amber_fanout_width(bits, level);
	unsigned shift = bits - level * AMBER_FANOUT_DIGIT - w, mask = (1u << w) - 1;
	int last = level + 1 == amber_fanout_levels(bits), rc = 0;

	out->count = 0;
	for (size_t i = 0, j; rc == 0 && i < n; i = j) {
		unsigned digit = (bk[i].id >> shift) & mask;
		amber_bucket *c = &nd.c[nd.n++];

		for (j = i + 1; j < n && ((bk[j].id >> shift) & mask) == digit; j++)
			;
		if (last)
			*c = bk[i];
		else
			rc = node_write(s, bits, level + 1, (prefix << w) | digit, bk + i, j - i,
					c);
		c->id = (uint16_t)digit;
		out->count += c->count;
	}
	if (rc == 0)
		rc = node_put(s, &nd, out->tree_oid, &out->link);
	return rc;
}

/* The fan-out of directory self over its non-empty buckets bk[0..nb) (ids
 * increasing): its "m" (self->link) and tree (self->tree_oid). */
static int fanout_write(snap *s, amber_entry *self, unsigned bits, const amber_bucket *bk,
			size_t nb)
{
	amber_bucket top;
	int rc;

	self->content = AMBER_C_DIR;
	if (s->a->fanout_layout == 1)
		return fanout_write_flat(s, self, bits, bk, nb);
	rc = node_write(s, bits, 0, 0, bk, nb, &top);
	if (rc == 0) {
		memcpy(self->tree_oid, top.tree_oid, 20);
		self->link = top.link;
	}
	return rc;
}

/*
 * A large directory fans out into buckets by the top bits of each token,
 * so that changing a few entries rewrites a few buckets, not everything.
 */
static int write_fanout(snap *s, amber_entry *self, amber_entry *e, size_t n,
			char (*tok)[AMBER_TOKEN_HEXSZ + 1])
{
	fanout f = {.bits = fanout_bits(n)};
	amber_entry *be = malloc(n * sizeof(*be));
	char(*bt)[AMBER_TOKEN_HEXSZ + 1] = malloc(n * sizeof(*bt));
	int rc = (be && bt) ? fanout_group(&f, n, tok) : amber_fail(AMBER_ERROR, "out of memory");

	for (size_t from = 0, to; rc == 0 && from < n; from = to) {
		for (to = from + 1; to < n && f.bucket[f.order[to]] == f.bucket[f.order[from]]; to++)
			;
		rc = write_bucket(s, &f, from, to, e, tok, be, bt);
	}
	if (rc == 0)
		rc = fanout_write(s, self, f.bits, f.bk, f.nb);
	fanout_dispose(&f);
	free(bt);
	free(be);
	return rc;
}

static int write_dir(snap *s, amber_entry *self, amber_entry *e, size_t n)
{
	char(*tok)[AMBER_TOKEN_HEXSZ + 1] = calloc(n ? n : 1, sizeof(*tok));
	int rc;

	if (!tok)
		return amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; i < n; i++)
		amber_name_token(tok[i], amber_archive_keys(s->a), e[i].name, e[i].name_len);
	self->content = AMBER_C_DIR;
	if (n > AMBER_FANOUT_THRESHOLD)
		rc = write_fanout(s, self, e, n, tok);
	else
		rc = write_leaf(s, self->tree_oid, &self->link, e, n, tok, K_MANIFEST);
	free(tok);
	return rc;
}

/* ---- walking a directory ------------------------------------------------------ */

typedef struct dirwork {
	char **names;
	size_t n, kept;
	amber_entry *e;
	pending **p;
} dirwork;

static void dirwork_dispose(snap *s, dirwork *d)
{
	for (size_t i = 0; i < d->n; i++) {
		if (d->p && d->p[i]) {
			pending_clear(d->p[i], s);
			free(d->p[i]);
		}
		free(d->names[i]);
	}
	free(d->names);
	free(d->p);
	if (d->e)
		amber_entries_free(d->e, d->kept);
}

/* Process entry i: 0 kept, 1 skipped, <0 fatal. */
static int dir_entry(snap *s, dirwork *d, size_t i, int dfd, uint8_t *buf)
{
	amber_entry *e = &d->e[d->kept];
	pending *p = calloc(1, sizeof(*p));
	size_t saved;
	int rc;

	if (!p)
		return amber_fail(AMBER_ERROR, "out of memory");
	memset(e, 0, sizeof(*e));
	e->name = strdup(d->names[i]);
	e->name_len = strlen(d->names[i]);
	p->entry = d->kept;
	path_push(s, &saved, d->names[i]);
	rc = e->name ? do_entry(s, e, dfd, d->names[i], p, buf) : AMBER_ERROR;
	progress(s, 0);
	if (rc == 0 && e->type == AMBER_T_REG && p->entry != SIZE_MAX) {
		d->p[i] = p;
	} else {
		pending_clear(p, s);
		free(p);
	}
	if (rc == 0)
		d->kept++;
	else
		amber_entry_dispose(e);
	s->path[saved] = '\0';
	return rc;
}

static int dir_finish(snap *s, dirwork *d, amber_entry *self)
{
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < d->n; i++) {
		pending *p = d->p[i];

		if (!p)
			continue;
		rc = pending_finish(s, &d->e[p->entry], p);
		if (rc == 0)
			files_cache_put(s, p->key, &p->fc, &d->e[p->entry]);
	}
	if (rc == 0 && s->fatal)
		rc = amber_fail(s->fatal_code, "%s", s->fatal_msg);
	if (rc == 0)
		rc = write_dir(s, self, d->e, d->kept);
	return rc;
}

/* A source deeper than an archive may be: refused, naming the end of its path. */
static int too_deep(snap *s)
{
	size_t len = strlen(s->path);
	const char *tail = len > 200 ? s->path + len - 200 : s->path;

	return amber_fail(AMBER_EINVAL, "source %s%s: directories nested more than %d levels "
			  "deep, more than an archive holds: snapshot the deeper part as a "
			  "source of its own", tail == s->path ? "" : "...", tail, AMBER_MAX_DEPTH);
}

static int snap_dir(snap *s, int dfd, amber_entry *self)
{
	dirwork d = {0};
	int rc = 0;

	if (s->depth > AMBER_MAX_DEPTH)
		return too_deep(s);
	s->st.dirs++;
	if (list_names(&d.names, &d.n, dfd) < 0) {
		warn_errno(s, s->path[0] ? s->path : ".", "cannot list directory");
		return 1;
	}
	d.e = calloc(d.n ? d.n : 1, sizeof(*d.e));
	d.p = calloc(d.n ? d.n : 1, sizeof(*d.p));
	if (!d.e || !d.p)
		rc = amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; rc >= 0 && i < d.n; i++)
		rc = dir_entry(s, &d, i, dfd, s->buf);
	if (rc >= 0)
		rc = dir_finish(s, &d, self);
	dirwork_dispose(s, &d);
	return rc;
}

/* ---- read-back ----------------------------------------------------------------- */

static void readback_run(amber_task *t)
{
	readback *r = (readback *)((char *)t - offsetof(readback, task));
	snap *s = r->s;
	amber_buf b = AMBER_BUF_INIT;
	amber_link l;
	uint8_t h[32];
	char hex[41];

	amber_buf_init(&b, (size_t)64 << 20);
	if (r->type) {
		memcpy(l.oid, r->oid, 20);
		memcpy(l.mac, r->mac, 24);
		/* authenticates the frame, and zstd's content checksum proves the
		 * compressed form expands to what was given to the compressor */
		r->rc = amber_archive_read_obj(&b, s->a, &l, r->type, AMBER_BUF_DEFAULT_MAX,
					       "read-back");
		if (r->rc == 0 && b.len != r->plain_len)
			r->rc = amber_fail(AMBER_ECORRUPT, "decoded length differs");
	} else {
		int type = 0;

		r->rc = amber_store_read(&b, &type, s->a->store, r->oid, b.max);
		amber_store_hash(h, r->gittype, b.data, b.len);
		if (r->rc == 0 && (type != r->gittype || memcmp(h, r->oid, 20) != 0))
			r->rc = amber_fail(AMBER_ECORRUPT, "object reads back different");
	}
	if (r->rc < 0) {
		amber_oid_tohex(hex, r->oid);
		snprintf(r->msg, sizeof(r->msg), "new object %s failed its read-back check (%s); "
			 "the snapshot was not recorded", hex, amber_error_last());
	}
	amber_buf_dispose(&b);
}

/* Read every new object back through the store before the ref moves. */
static int readback_all(snap *s)
{
	amber_group g = {0};

	for (size_t i = 0; i < s->nrb; i++) {
		s->rb[i]->s = s;
		s->rb[i]->task.run = readback_run;
		s->rb[i]->task.cost = 1;
		amber_pool_submit(s->pool, &s->rb[i]->task, &g);
	}
	amber_pool_wait(s->pool, &g);
	for (size_t i = 0; i < s->nrb; i++)
		if (s->rb[i]->rc < 0)
			return amber_fail(s->rb[i]->rc, "%s", s->rb[i]->msg);
	return 0;
}

/* ---- the commit ------------------------------------------------------------------- */

/* Time of the stream's tip from its authenticated record. */
static int parent_time(int64_t *t, snap *s, const uint8_t parent[20])
{
	amber_snapinfo info;
	char hex[41];
	amber_snapshot *ps = NULL;
	int rc;

	amber_oid_tohex(hex, parent);
	rc = amber_snapshot_open(&ps, s->a, hex);
	if (rc == 0) {
		info = *amber_snapshot_info(ps);
		*t = info.time_ns;
	}
	amber_snapshot_free(ps);
	return rc;
}

static int commit_message(amber_buf *msg, snap *s, const amber_record *r)
{
	amber_buf frame = AMBER_BUF_INIT, rec = AMBER_BUF_INIT;
	uint8_t mac[24];
	char t6[40], t9[40], *b64 = NULL;
	int rc = amber_record_encode(&rec, r);

	if (rc == 0)
		rc = amber_codec_encode(&frame, mac, amber_archive_keys(s->a), AMBER_OBJ_RECORD,
					rec.data, rec.len, 0);
	if (rc == 0) {
		size_t bl = sodium_base64_ENCODED_LEN(frame.len, sodium_base64_VARIANT_ORIGINAL);

		b64 = malloc(bl);
		if (!b64)
			rc = amber_fail(AMBER_ERROR, "out of memory");
		else
			sodium_bin2base64(b64, bl, frame.data, frame.len,
					  sodium_base64_VARIANT_ORIGINAL);
	}
	amber_time_format(t6, r->time_ns, 6);
	amber_time_format(t9, r->time_ns, 9);
	if (rc == 0) {
		char head[160];
		int n = snprintf(head, sizeof(head),
				 "amberfs snapshot %s\n\nAmberfs-Time: %s\nAmberfs-Record: ", t6, t9);

		rc = amber_buf_put(msg, head, (size_t)n);
		if (rc == 0)
			rc = amber_buf_put(msg, b64, strlen(b64));
		s->record_b64 = strlen(b64);
		if (rc == 0)
			rc = amber_buf_put(msg, "\n", 2); /* with the NUL, for commit_build */
	}
	free(b64);
	amber_buf_dispose(&rec);
	amber_buf_dispose(&frame);
	return rc;
}

/*
 * Sign `payload` (a commit or tag text) in namespace "git", as git does for
 * gpg.format=ssh, and check the signature before it is used.
 */
static int sign_git(char **armored, const amber_signer *signer, const amber_buf *payload)
{
	uint8_t pk[AMBER_SIGN_PK_BYTES];
	int rc = amber_sshsig_sign(armored, signer, "git", payload->data, payload->len);

	amber_signer_public(pk, signer);
	if (rc == 0)
		rc = amber_sshsig_verify(*armored, pk, "git", payload->data, payload->len);
	return rc;
}

/* The commit text with a "gpgsig" header over the unsigned text. */
static int sign_commit(amber_buf *out, const amber_signer *signer, const amber_buf *c)
{
	char *armored = NULL;
	int rc = sign_git(&armored, signer, c);

	if (rc == 0)
		rc = amber_commit_add_signature(out, c->data, c->len, armored);
	free(armored);
	return rc;
}

static int write_commit(uint8_t commit[20], snap *s, amber_record *r)
{
	amber_buf msg = AMBER_BUF_INIT, c = AMBER_BUF_INIT, sc = AMBER_BUF_INIT;
	const amber_buf *text = &c;
	int rc = commit_message(&msg, s, r);

	if (rc == 0)
		rc = amber_commit_build(&c, r->tree, r->has_parent ? r->parent : NULL,
					r->time_ns / 1000000000, (const char *)msg.data);
	if (rc == 0 && s->signer) {
		rc = sign_commit(&sc, s->signer, &c);
		text = &sc;
	}
	if (rc == 0)
		rc = put_git(commit, s, AMBER_GIT_COMMIT, K_COMMIT, text->data, text->len);
	amber_buf_dispose(&sc);
	amber_buf_dispose(&c);
	amber_buf_dispose(&msg);
	return rc;
}

static int fill_record(amber_record *r, snap *s, const amber_entry *root, const char *src,
		       amber_buf *rootmeta)
{
	char host[256] = "", *real = realpath(src, NULL);
	int rc;

	memcpy(r->tree, root->tree_oid, 20);
	r->root = root->link;
	r->root_content = AMBER_C_DIR;
	snprintf(r->stream, sizeof(r->stream), "%s", s->o->stream ? s->o->stream : "main");
	gethostname(host, sizeof(host) - 1);
	r->host = strdup(host);
	r->source = real ? real : strdup(src);
	r->message = strdup(s->o->message ? s->o->message : "");
	s->st.bytes_new = atomic_load(&s->bytes_new);
	s->st.objects_new = atomic_load(&s->objects_new);
	r->stats = s->st;
	/* the authenticated record tells a deliberate --unsigned from a stripped signature */
	r->unsigned_on_purpose = !s->signer && s->a->has_sign_pk;
	if (!r->host || !r->source || !r->message)
		return amber_fail(AMBER_ERROR, "out of memory");
	rc = amber_manifest_encode(rootmeta, root, 1);
	r->root_meta = rootmeta->data;
	r->root_meta_len = rootmeta->len;
	return rc;
}

static int choose_time(amber_record *r, snap *s)
{
	int64_t pt = 0, t = s->o->time_ns ? s->o->time_ns : s->start_ns;
	int rc = 0;

	if (r->has_parent && (rc = parent_time(&pt, s, r->parent)) < 0)
		return rc;
	/* strictly increasing and distinct at µs, the resolution of the names
	 * snapshots get in the mount */
	if (r->has_parent && t / 1000 <= pt / 1000) {
		if (s->o->time_ns)
			return amber_fail(AMBER_EINVAL,
					  "snapshot time must be later than the stream's newest");
		t = (pt / 1000 + 1) * 1000;
	}
	r->time_ns = t;
	return 0;
}

/* ---- caches ------------------------------------------------------------------------ */

static void cache_paths(snap *s, char *files, char *chunks, size_t len)
{
	char *dir = amber_archive_cache_dir(s->a);

	files[0] = chunks[0] = '\0';
	if (!dir) {
		amber_error_clear(); /* no cache directory: run without caches */
		return;
	}
	snprintf(files, len, "%s/files-%s", dir, s->o->stream ? s->o->stream : "main");
	snprintf(chunks, len, "%s/chunks", dir);
	free(dir);
}

/* Mark a loaded entry as not yet checked against this store; arg: the newest generation. */
static void cc_loaded(void *value, void *arg)
{
	cc_val *v = value;
	uint32_t *newest = arg;

	v->verified = 0;
	if (v->gen > *newest)
		*newest = v->gen;
}

typedef struct cc_gens {
	uint32_t *gen;
	size_t n, cap;
} cc_gens;

static void cc_collect(void *value, void *arg)
{
	cc_gens *g = arg;

	if (g->n < g->cap)
		g->gen[g->n++] = ((const cc_val *)value)->gen;
}

static int cc_newer_first(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

	return (a < b) - (a > b);
}

static int cc_keep(const void *value, void *arg)
{
	return ((const cc_val *)value)->gen >= *(const uint32_t *)arg;
}

/*
 * Bound the chunk cache (see the top of this file): keep the entries used
 * in the generations now-CHUNK_KEEP+1..now, and, if that is fewer than the
 * tree's `need` (about two per chunk of the tree, so that a large file
 * unchanged for a while is not encoded again when it changes), the newest
 * `need` entries (ties kept).
 */
static void chunks_prune(amber_kvmap *m, uint32_t now, uint64_t need)
{
	uint32_t cut = now >= CHUNK_KEEP ? now - CHUNK_KEEP + 1 : 0;
	size_t n = amber_kvmap_count(m);
	cc_gens g = {0};

	if (n <= need)
		return;
	if (need > 0) {
		g.cap = n;
		if (!(g.gen = malloc(n * sizeof(*g.gen))))
			return; /* only a cache: pruned next time */
		amber_kvmap_each(m, cc_collect, &g);
		qsort(g.gen, g.n, sizeof(*g.gen), cc_newer_first);
		if (g.gen[need - 1] < cut)
			cut = g.gen[need - 1];
		free(g.gen);
	}
	amber_kvmap_prune(m, cc_keep, &cut);
}

/* About two chunk entries for every chunk of a tree of these totals. */
static uint64_t chunks_need(const amber_stats *st)
{
	return 2 * (st->files + st->bytes / AMBER_CHUNK_AVG);
}

/*
 * The caches are keyed by archive id, and a copy of an archive (cp -a, a
 * restored backup, a replica) has the same id but not necessarily the same
 * objects: a chunk cached as stored by another run is checked against this
 * store before it is used.
 */
static void caches_load(snap *s, const char *files, const char *chunks)
{
	uint32_t newest = 0;

	s->gen = 1;
	if (!files[0])
		return;
	amber_kvmap_load(s->files_old, files, FILES_MAGIC, (const uint8_t *)s->a->id);
	amber_kvmap_load(s->chunks, chunks, CHUNKS_MAGIC, (const uint8_t *)s->a->id);
	amber_kvmap_each(s->chunks, cc_loaded, &newest);
	s->gen = newest + 1;
}

static void caches_save(snap *s, const char *files, const char *chunks)
{
	if (!files[0])
		return;
	if (amber_kvmap_save(s->files_new, files, FILES_MAGIC, (const uint8_t *)s->a->id) < 0 ||
	    amber_kvmap_save(s->chunks, chunks, CHUNKS_MAGIC, (const uint8_t *)s->a->id) < 0)
		warn(s, files, amber_error_last(), 0);
}

/* ---- entry point --------------------------------------------------------------------- */

static int snap_setup(snap *s, amber_archive *a, const amber_snapshot_opts *o)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	int threads = o->threads > 0 ? o->threads : (int)(cores > 0 ? cores : 2);

	s->a = a;
	s->o = o;
	s->start_ns = now_ns();
	s->listings0 = amber_store_pack_listings(a->store);
	s->st.version = AMBER_STATS_VERSION; /* as progress callbacks see it */
	pthread_mutex_init(&s->lock, NULL);
	s->files_old = amber_kvmap_new(sizeof(fc_val));
	s->files_new = amber_kvmap_new(sizeof(fc_val));
	s->chunks = amber_kvmap_new(sizeof(cc_val));
	s->buf = malloc(READ_BUF);
	if (!s->files_old || !s->files_new || !s->chunks || !s->buf)
		return amber_fail(AMBER_ERROR, "out of memory");
	if (amber_pool_new(&s->pool, threads, MAX_INFLIGHT) < 0)
		return AMBER_ERROR;
	return amber_packw_new(&s->w, a->store);
}

static void snap_dispose(snap *s)
{
	amber_pool_free(s->pool);
	amber_packw_free(s->w);
	for (size_t i = 0; i < s->nrb; i++)
		free(s->rb[i]);
	free(s->rb);
	free(s->hl);
	free(s->buf);
	amber_kvmap_free(s->files_old);
	amber_kvmap_free(s->files_new);
	amber_kvmap_free(s->chunks);
	pthread_mutex_destroy(&s->lock);
}

static int check_args(amber_archive *a, const char *src, const amber_snapshot_opts *o,
		      struct stat *st)
{
	int rc = amber_archive_check_unlocked(a);

	if (rc < 0)
		return rc;
	if (o->stream && !amber_refname_valid(o->stream))
		return amber_fail(AMBER_EINVAL, "invalid stream name '%s'", o->stream);
	if (o->tag && !amber_refname_valid(o->tag))
		return amber_fail(AMBER_EINVAL, "invalid tag name '%s'", o->tag);
	if (stat(src, st) < 0) {
		if (errno == ENOENT)
			return amber_fail(AMBER_ENOTFOUND, "source %s does not exist", src);
		return amber_fail_errno("cannot read source %s", src);
	}
	if (!S_ISDIR(st->st_mode))
		return amber_fail(AMBER_EINVAL, "source %s is not a directory", src);
	return 0;
}

/* Refuse a tag that exists or that git would not create, before anything is written. */
static int tag_free(amber_archive *a, const char *tag)
{
	char ref[256];
	uint8_t oid[20];
	int rc;

	if (!tag)
		return 0;
	snprintf(ref, sizeof(ref), "refs/tags/%s", tag);
	rc = amber_store_ref_read(oid, a->store, ref);
	if (rc == 0)
		return amber_fail(AMBER_EEXISTS, "tag '%s' already exists", tag);
	if (rc == AMBER_EINVAL) /* e.g. a trailing '.', which git refuses */
		return amber_fail(AMBER_EINVAL, "invalid tag name '%s': git refuses %s", tag, ref);
	if (rc != AMBER_ENOTFOUND)
		return rc;
	amber_error_clear();
	return 0;
}

/* Walk the source and write the root directory. */
static int snap_tree(snap *s, amber_entry *root, const char *src, const struct stat *st)
{
	int fd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return amber_fail_errno("cannot open source %s", src);
	root->name = strdup("root");
	root->name_len = 4;
	root->type = AMBER_T_DIR;
	meta_from_stat(root, st);
	rc = root->name ? snap_dir(s, fd, root) : AMBER_ERROR;
	if (rc == 1)
		rc = amber_fail(AMBER_ERROR, "cannot list source %s", src);
	if (rc == 0) {
		char path[64];

		/* "/." so that the magic link resolves to the directory itself */
		snprintf(path, sizeof(path), "/proc/self/fd/%d/.", fd);
		rc = read_xattrs(s, root, path);
		if (root->nxattrs > 1)
			qsort(root->xattrs, root->nxattrs, sizeof(*root->xattrs), xattr_cmp);
	}
	close(fd);
	return rc;
}

static int publish_page(snap *s, const amber_record *r);

static int publish(snap *s, const amber_record *r, const uint8_t commit[20],
		   char id_out[AMBER_OID_HEXSZ + 1])
{
	char ref[256];
	int rc = amber_packw_commit(s->w);

	if (rc == 0)
		rc = readback_all(s);
	if (rc == 0)
		rc = publish_page(s, r);
	snprintf(ref, sizeof(ref), "refs/heads/%s", r->stream);
	if (rc == 0)
		rc = amber_store_ref_update(s->a->store, ref, commit, r->has_parent ? r->parent : NULL,
					    "amberfs snapshot");
	/* The snapshot is visible now: the caller gets its id whatever follows. */
	if (rc == 0)
		amber_oid_tohex(id_out, commit);
	return rc;
}

/*
 * The tag comes after the stream's ref (a tag must not name a snapshot that
 * never became visible), so its failure leaves a snapshot without its tag:
 * tag_free() refused what it could beforehand, and the message says so.
 */
static int tag_snapshot(snap *s, const amber_record *r, const uint8_t commit[20],
			const char *id)
{
	char ref[256];
	int rc;

	if (!s->o->tag)
		return 0;
	snprintf(ref, sizeof(ref), "refs/tags/%s", s->o->tag);
	rc = amber_store_ref_update(s->a->store, ref, commit, NULL, "amberfs tag");
	if (rc < 0)
		amber_fail(rc, "snapshot %s was written to stream '%s', but tag '%s' was not "
			   "created (%s); name it with amberfs tag", id, r->stream, s->o->tag,
			   amber_error_last());
	return rc;
}

/*
 * A page is named only from inside a record, which git cannot see: a chain
 * of commits on refs/amberfs/pages/<stream>, one per page with the page as
 * its tree's only blob, keeps every page reachable, so that git gc keeps it
 * and clone --mirror and push copy it.  The ref moves before the stream's
 * (publish): a crash between the two leaves a page no snapshot names yet,
 * which the next snapshot writes again (same bytes, same id).
 */
static int keep_page(snap *s, const amber_record *r, const amber_link *page)
{
	amber_tentry te = {.name = "page", .mode = AMBER_GIT_MODE_BLOB};
	amber_buf t = AMBER_BUF_INIT, c = AMBER_BUF_INIT;
	uint8_t tree[20];
	char ref[128], msg[96];
	int rc;

	snprintf(ref, sizeof(ref), "refs/amberfs/pages/%s", r->stream);
	rc = amber_store_ref_read(s->page_prev, s->a->store, ref);
	s->page_state = rc == 0 ? 2 : 1;
	if (rc == AMBER_ENOTFOUND)
		amber_error_clear();
	memcpy(te.oid, page->oid, 20);
	snprintf(msg, sizeof(msg), "amberfs index page of heights %llu..%llu\n",
		 (unsigned long long)(r->height - r->page_span), (unsigned long long)r->height - 1);
	rc = rc == AMBER_ENOTFOUND ? 0 : rc;
	if (rc == 0)
		rc = amber_tree_build(&t, &te, 1);
	if (rc == 0)
		rc = put_git(tree, s, AMBER_GIT_TREE, K_PAGE, t.data, t.len);
	if (rc == 0)
		rc = amber_commit_build(&c, tree, s->page_state == 2 ? s->page_prev : NULL,
					r->time_ns / 1000000000, msg);
	if (rc == 0)
		rc = put_git(s->page_commit, s, AMBER_GIT_COMMIT, K_PAGE, c.data, c.len);
	if (rc < 0)
		s->page_state = 0;
	amber_buf_dispose(&c);
	amber_buf_dispose(&t);
	return rc;
}

/* The time index of the new record: skip links, and an index page when one is due. */
static int index_record(amber_record *r, snap *s)
{
	amber_buf page = AMBER_BUF_INIT;
	amber_link l;
	int rc = amber_history_links(r, s->a, &page);

	s->page_state = 0;
	if (rc == 0 && page.len && (rc = put_frame(&l, s, AMBER_OBJ_PAGE, K_PAGE, page.data,
						   page.len)) == 0)
		rc = keep_page(s, r, &l);
	if (rc == 0 && page.len)
		amber_history_page_written(r, &l);
	amber_buf_dispose(&page);
	return rc;
}

/* After the objects are durable, before the stream's ref: the page's ref. */
static int publish_page(snap *s, const amber_record *r)
{
	char ref[128];

	if (!s->page_state)
		return 0;
	snprintf(ref, sizeof(ref), "refs/amberfs/pages/%s", r->stream);
	return amber_store_ref_update(s->a->store, ref, s->page_commit,
				      s->page_state == 2 ? s->page_prev : NULL, "amberfs index page");
}

static int snap_run(snap *s, const char *src, const struct stat *st,
		    char id_out[AMBER_OID_HEXSZ + 1])
{
	amber_record r = {0};
	amber_entry root = {0};
	amber_buf rootmeta = AMBER_BUF_INIT;
	uint8_t commit[20];
	char ref[256], files[4096], chunks[4096];
	int rc;

	snprintf(ref, sizeof(ref), "refs/heads/%s", s->o->stream ? s->o->stream : "main");
	rc = amber_store_ref_read(r.parent, s->a->store, ref);
	r.has_parent = rc == 0;
	if (rc == AMBER_ENOTFOUND)
		rc = 0;
	cache_paths(s, files, chunks, sizeof(files));
	caches_load(s, files, chunks);
	if (rc == 0)
		rc = snap_tree(s, &root, src, st);
	if (rc == 0)
		rc = choose_time(&r, s);
	if (rc == 0)
		rc = fill_record(&r, s, &root, src, &rootmeta);
	if (rc == 0)
		rc = index_record(&r, s);
	if (rc == 0)
		rc = write_commit(commit, s, &r);
	if (rc == 0)
		rc = publish(s, &r, commit, id_out);
	if (rc == 0) {
		chunks_prune(s->chunks, s->gen, chunks_need(&s->st));
		caches_save(s, files, chunks);
		rc = tag_snapshot(s, &r, commit, id_out);
	}
	amber_entry_dispose(&root);
	r.root_meta = NULL;
	amber_record_dispose(&r);
	amber_buf_dispose(&rootmeta);
	return rc;
}

/*
 * Consolidate packs while the writer lock is still held (repack.c), so that
 * the cost of the next snapshot does not grow with history.  The snapshot
 * is already published: a failure here is only a warning.
 */
static void repack_lazy(amber_repack_stats *st, amber_store *store, const amber_snapshot_opts *o)
{
	if (amber_repack_locked(st, store, AMBER_REPACK_LAZY) < 0 && o->warn)
		o->warn(amber_store_path(store), amber_error_last(), o->payload);
}

/* The consolidation's time and work go into the snapshot's stats (version 3). */
static void snap_repack(snap *s)
{
	amber_repack_stats st;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	repack_lazy(&st, s->a->store, s->o);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s->st.repack_ns = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL +
				     (t1.tv_nsec - t0.tv_nsec));
	s->st.repack_packs = st.packs_merged;
	s->st.repack_bytes = st.bytes;
}

int amber_snapshot_create(char id_out[AMBER_OID_HEXSZ + 1], amber_stats *stats,
			  amber_archive *a, const char *src, const amber_snapshot_opts *opts)
{
	static const amber_snapshot_opts defaults;
	const amber_snapshot_opts *o = opts ? opts : &defaults;
	struct stat st;
	snap s;
	int rc;

	id_out[0] = '\0';
	if ((rc = amber_stats_check(stats, "amber_stats", "AMBER_STATS_INIT")) < 0)
		return rc;
	if ((rc = amber_opts_check(opts, AMBER_SNAPSHOT_OPTS_VERSION, "amber_snapshot_opts",
				   "AMBER_SNAPSHOT_OPTS_INIT")) < 0)
		return rc;
	if ((rc = check_args(a, src, o, &st)) < 0)
		return rc;
	memset(&s, 0, sizeof(s));
	if ((rc = amber_archive_signer(&s.signer, a, o->signing_key_path, o->unsigned_ok)) < 0)
		return rc;
	if ((rc = amber_store_lock(a->store)) < 0) {
		amber_signer_free(s.signer);
		return rc;
	}
	s.o = o;
	rc = tag_free(a, o->tag);
	if (rc == 0)
		rc = snap_setup(&s, a, o);
	if (rc == 0)
		rc = snap_run(&s, src, &st, id_out);
	if (rc == 0)
		snap_repack(&s);
	progress(&s, 1);
	stats_final(&s);
	amber_stats_put(stats, &s.st, stats ? amber_stats_size(amber_stats_version(stats)) : 0);
	snap_dispose(&s);
	amber_signer_free(s.signer);
	amber_store_unlock(a->store);
	return rc;
}

/* ---- annotated tags ------------------------------------------------------------------ */

static int tag_check(amber_archive *a, const char *id, const char *name, const char *message)
{
	amber_buf b = AMBER_BUF_INIT;
	uint8_t oid[20];
	int type = 0, rc;

	if (!amber_refname_valid(name))
		return amber_fail(AMBER_EINVAL, "invalid tag name '%s'", name);
	if (message && strstr(message, "-----BEGIN "))
		return amber_fail(AMBER_EINVAL, "a tag message may not contain an armor line");
	if (strlen(id) != AMBER_OID_HEXSZ || amber_oid_fromhex(oid, id) < 0)
		return amber_fail(AMBER_EINVAL, "'%s' is not a commit id", id);
	rc = amber_store_read(&b, &type, a->store, oid, AMBER_MAX_META);
	if (rc == 0 && type != AMBER_GIT_COMMIT)
		rc = amber_fail(AMBER_EINVAL, "%s is not a snapshot commit", id);
	amber_buf_dispose(&b);
	return rc;
}

/* The tag object as git writes it; the message ends in a newline. */
static int tag_text(amber_buf *t, const char *id, const char *name, const char *message)
{
	char line[128];
	int n;

	if (amber_buf_put(t, "object ", 7) < 0 || amber_buf_put(t, id, AMBER_OID_HEXSZ) < 0 ||
	    amber_buf_put(t, "\ntype commit\ntag ", 17) < 0 ||
	    amber_buf_put(t, name, strlen(name)) < 0)
		return amber_fail(AMBER_ERROR, "out of memory");
	n = snprintf(line, sizeof(line), "\ntagger amberfs <amberfs@localhost> %lld +0000\n\n",
		     (long long)(now_ns() / 1000000000));
	if (amber_buf_put(t, line, (size_t)n) < 0)
		return amber_fail(AMBER_ERROR, "out of memory");
	if (!message || !*message)
		n = amber_buf_put(t, "amberfs tag ", 12) < 0 ||
		    amber_buf_put(t, name, strlen(name)) < 0;
	else
		n = amber_buf_put(t, message, strlen(message)) < 0;
	if (n == 0 && t->data[t->len - 1] != '\n')
		n = amber_buf_put(t, "\n", 1) < 0;
	return n ? amber_fail(AMBER_ERROR, "out of memory") : 0;
}

static int tag_write(amber_archive *a, const char *id, const char *name, const char *message,
		     const amber_signer *signer)
{
	amber_buf t = AMBER_BUF_INIT;
	amber_packw *w = NULL;
	uint8_t oid[20];
	char ref[512], *armored = NULL;
	int rc = tag_text(&t, id, name, message);

	if (rc == 0 && signer && (rc = sign_git(&armored, signer, &t)) == 0)
		rc = amber_buf_put(&t, armored, strlen(armored));
	if (rc == 0)
		rc = amber_packw_new(&w, a->store);
	if (rc == 0)
		rc = amber_packw_add(oid, NULL, w, AMBER_GIT_TAG, t.data, t.len);
	if (rc == 0)
		rc = amber_packw_commit(w);
	snprintf(ref, sizeof(ref), "refs/tags/%s", name);
	if (rc == 0)
		rc = amber_store_ref_update(a->store, ref, oid, NULL, "amberfs tag");
	amber_packw_free(w);
	free(armored);
	amber_buf_dispose(&t);
	return rc;
}

int amber_tag_create(amber_archive *a, const char *id, const char *name, const char *message,
		     const char *signing_key_path, int unsigned_ok)
{
	amber_signer *signer = NULL;
	int rc = tag_check(a, id, name, message);

	if (rc == 0)
		rc = amber_archive_signer(&signer, a, signing_key_path, unsigned_ok);
	if (rc == 0 && (rc = amber_store_lock(a->store)) == 0) {
		rc = tag_free(a, name);
		if (rc == 0)
			rc = tag_write(a, id, name, message, signer);
		amber_store_unlock(a->store);
	}
	amber_signer_free(signer);
	return rc;
}

/* ---- writer sessions ------------------------------------------------------------------ */

/*
 * A writer session keeps, between snapshots, what amber_snapshot_create()
 * sets up and tears down on every call: the signer, the worker pool, the
 * read buffer, the files and chunk caches (in memory; saved after each
 * whole walk and at close) and the previous snapshot.
 *
 * An incremental snapshot is a walk of the caller's changed paths arranged
 * as a trie.  For each directory on the way to a changed path, the
 * previous snapshot's listing is decoded and copied, except for the
 * children the trie names: those are looked at again (stat; gone ones are
 * dropped; files are read again; directories that were directories are
 * recursed into, or keep their old tree when nothing below them is named;
 * anything new or flagged `subtree` is walked like a whole snapshot walks
 * it).  Directories nobody named are never listed nor stat'ed: their old
 * manifests are reused by link.  Totals (files, dirs, bytes) are the
 * previous snapshot's, minus what was replaced or removed, plus what was
 * walked.
 *
 * Hard links are the exception: group ids are allocated by a whole walk
 * and link counts change on other paths than the one that changed, so a
 * change touching a hard-linked file (old or new) makes the snapshot a
 * whole walk (NEED_FULL).
 */

#define NEED_FULL 2            /* internal: redo this snapshot as a whole walk */
#define DIRTY_MAX 200000       /* more changed paths than this: a whole walk */

struct amber_writer {
	amber_archive *a;
	char *src;
	amber_writer_opts o;       /* strings borrowed from the caller */
	amber_signer *signer;
	amber_pool *pool;
	amber_kvmap *files, *chunks;
	uint32_t gen;              /* chunk cache generation of the last snapshot */
	uint64_t need;             /* chunks_need() of the last snapshot's tree */
	size_t chunks_kept;        /* entries after the last prune */
	uint8_t *buf;
	char files_path[4096], chunks_path[4096];
	amber_snapshot *prev;      /* the stream's tip this session knows, or NULL */
	uint8_t tip[20];
	int has_tip;
	char **suspects;           /* append-only files read from their tail since the
				      last whole walk, checked by the next one */
	size_t nsuspects;
	struct tailmark *tails;    /* settled chunks of append-only files (a cache) */
	size_t ntails;
	/* Consolidation beside the writer (writer_repack): one thread, started
	   by the first snapshot; bg_* under bg_mu. */
	pthread_t bg;
	int bg_started, bg_want, bg_stop;
	pthread_mutex_t bg_mu;
	pthread_cond_t bg_cv;
};

/* How many leading chunks of the stored version `oid` of path end at a
 * boundary the chunker cut (the rest are fragments of the growing tail). */
typedef struct tailmark {
	char *path;
	uint8_t oid[20];           /* the version's content link: its index or blob */
	size_t settled;
} tailmark;

/* The changed paths as a trie; kids in name order. */
typedef struct dnode {
	char *name;
	int named, tree;
	struct dnode **kids;
	size_t nkids, cap;
} dnode;

/* One incremental snapshot. */
typedef struct incr {
	snap *s;
	amber_writer *w;
	amber_stats gone;          /* counts of old entries replaced or removed */
} incr;

static void dnode_free(dnode *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->nkids; i++)
		dnode_free(n->kids[i]);
	free(n->kids);
	free(n->name);
	free(n);
}

/* The kid `name` of n: paths arrive in trie pre-order, so it is the last. */
static dnode *dnode_kid(dnode *n, const char *name, size_t len)
{
	dnode *k = n->nkids ? n->kids[n->nkids - 1] : NULL;

	if (k && strlen(k->name) == len && memcmp(k->name, name, len) == 0)
		return k;
	if (n->nkids == n->cap) {
		size_t cap = n->cap ? n->cap * 2 : 4;
		dnode **v = realloc(n->kids, cap * sizeof(*v));

		if (!v)
			return NULL;
		n->kids = v;
		n->cap = cap;
	}
	k = calloc(1, sizeof(*k));
	if (!k || !(k->name = strndup(name, len))) {
		free(k);
		return NULL;
	}
	n->kids[n->nkids++] = k;
	return k;
}

/* Bytes in trie order: end of string, then '/', then the rest. */
static int path_byte(const char *p)
{
	unsigned char c = (unsigned char)*p;

	return c == '/' ? 1 : c ? c + 1 : 0;
}

static int dirty_cmp(const void *x, const void *y)
{
	const char *a = ((const amber_dirty *)x)->path, *b = ((const amber_dirty *)y)->path;

	for (; *a && *a == *b; a++, b++)
		;
	return path_byte(a) - path_byte(b);
}

/* "a//b/" -> "a/b"; AMBER_EINVAL for "." or ".." components or long names. */
static int dirty_norm(char **out, const char *path)
{
	char *v = malloc(strlen(path) + 1), *o = v;
	const char *p = path;

	if (!v)
		return amber_fail(AMBER_ERROR, "out of memory");
	while (*p) {
		size_t l;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		l = strcspn(p, "/");
		if (!amber_name_valid(p, l)) {
			free(v);
			return amber_fail(AMBER_EINVAL, "changed path '%s' is not a path below the "
					  "source", path);
		}
		if (o != v)
			*o++ = '/';
		memcpy(o, p, l);
		o += l;
		p += l;
	}
	*o = '\0';
	*out = v;
	return 0;
}

static int trie_add(dnode *root, const char *path, int tree)
{
	dnode *n = root;

	for (const char *p = path; *p;) {
		size_t l = strcspn(p, "/");

		if (!(n = dnode_kid(n, p, l)))
			return amber_fail(AMBER_ERROR, "out of memory");
		p += l + (p[l] == '/');
	}
	n->named = 1;
	n->tree |= tree != 0;
	return 0;
}

static int dirty_trie(dnode **out, const amber_dirty *d, size_t n)
{
	amber_dirty *v = calloc(n ? n : 1, sizeof(*v));
	dnode *root = calloc(1, sizeof(*root));
	size_t m = 0;
	int rc = (v && root) ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	for (size_t i = 0; rc == 0 && i < n; i++) {
		char *p = NULL;

		rc = dirty_norm(&p, d[i].path ? d[i].path : "");
		v[m].path = p;
		v[m++].subtree = d[i].subtree;
	}
	if (rc == 0 && m > 1)
		qsort(v, m, sizeof(*v), dirty_cmp);
	for (size_t i = 0; rc == 0 && i < m; i++)
		rc = trie_add(root, v[i].path, v[i].subtree);
	for (size_t i = 0; v && i < m; i++)
		free((char *)v[i].path);
	free(v);
	if (rc < 0) {
		dnode_free(root);
		return rc;
	}
	*out = root;
	return 0;
}

/* Add an old entry's counts (a directory: its whole subtree) to c. */
static int old_counts(amber_stats *c, amber_writer *w, const amber_entry *e)
{
	amber_dir *d = NULL;
	int rc;

	if (e->hardlink)
		return NEED_FULL;
	if (e->type != AMBER_T_DIR) {
		c->files++;
		c->bytes += e->type == AMBER_T_REG ? e->size : 0;
		return 0;
	}
	c->dirs++;
	rc = amber_dir_open(&d, w->prev, e);
	for (size_t i = 0; rc == 0 && i < amber_dir_count(d); i++)
		rc = old_counts(c, w, amber_dir_entry(d, i));
	amber_dir_free(d);
	return rc;
}

/* A directory's own metadata and xattrs from its open descriptor. */
static int dir_meta(snap *s, amber_entry *e, int fd)
{
	struct stat st;
	char path[64];
	int rc;

	if (fstat(fd, &st) < 0)
		return amber_fail_errno("cannot stat directory %s", s->path[0] ? s->path : ".");
	meta_from_stat(e, &st);
	snprintf(path, sizeof(path), "/proc/self/fd/%d/.", fd);
	rc = read_xattrs(s, e, path);
	if (rc == 0 && e->nxattrs > 1)
		qsort(e->xattrs, e->nxattrs, sizeof(*e->xattrs), xattr_cmp);
	return rc;
}

static int entry_cmp(const void *x, const void *y)
{
	const amber_entry *a = x, *b = y;

	return amber_name_cmp(a->name, a->name_len, b->name, b->name_len);
}

/* Walk the fresh kids like a whole walk does and move them into ne. */
static int fresh_finish(snap *s, dirwork *d, int dfd, amber_entry *ne, size_t *k)
{
	int rc = 0;

	for (size_t i = 0; rc >= 0 && i < d->n; i++)
		rc = dir_entry(s, d, i, dfd, s->buf);
	for (size_t i = 0; rc >= 0 && i < d->n; i++) {
		pending *p = d->p[i];

		if (!p)
			continue;
		rc = pending_finish(s, &d->e[p->entry], p);
		if (rc == 0)
			files_cache_put(s, p->key, &p->fc, &d->e[p->entry]);
	}
	if (rc < 0)
		return rc;
	memcpy(ne + *k, d->e, d->kept * sizeof(*ne));
	*k += d->kept;
	d->kept = 0;
	return 0;
}

static int update_dir(incr *x, int dfd, const amber_entry *old, const dnode *node,
		      amber_entry *self);

/* A directory that was one: fresh metadata, old contents except named paths. */
static int update_subdir(incr *x, int dfd, const amber_entry *oe, const dnode *kid,
			 amber_entry *e)
{
	int fd = openat(dfd, kid->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int rc;

	if (fd < 0) {
		warn_errno(x->s, x->s->path, "cannot open directory");
		return 1;
	}
	memset(e, 0, sizeof(*e));
	e->name = strdup(kid->name);
	e->name_len = strlen(kid->name);
	e->type = AMBER_T_DIR;
	rc = e->name ? dir_meta(x->s, e, fd) : amber_fail(AMBER_ERROR, "out of memory");
	if (rc == 0 && kid->nkids) {
		x->s->depth++;
		rc = x->s->depth > AMBER_MAX_DEPTH ? too_deep(x->s)
						   : update_dir(x, fd, oe, kid, e);
		x->s->depth--;
	} else if (rc == 0) {
		e->content = oe->content;
		memcpy(e->tree_oid, oe->tree_oid, 20);
		e->link = oe->link;
	}
	close(fd);
	if (rc != 0)
		amber_entry_dispose(e);
	return rc;
}

static int fresh_add(dirwork *fresh, const char *name)
{
	if (!(fresh->names[fresh->n] = strdup(name)))
		return amber_fail(AMBER_ERROR, "out of memory");
	fresh->n++;
	return 0;
}

static int append_try(incr *x, int dfd, const amber_entry *oe, const dnode *kid,
		      const struct stat *st, amber_entry *e);

/* One named child: dropped, recursed into, or queued as fresh. */
static int update_kid(incr *x, int dfd, const amber_entry *oe, const dnode *kid,
		      amber_entry *ne, size_t *k, dirwork *fresh)
{
	snap *s = x->s;
	struct stat st;
	size_t saved;
	int rc;

	path_push(s, &saved, kid->name);
	if (fstatat(dfd, kid->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			warn_errno(s, s->path, "cannot stat");
		rc = oe ? old_counts(&x->gone, x->w, oe) : 0;
	} else if (S_ISDIR(st.st_mode) && oe && oe->type == AMBER_T_DIR && !kid->tree) {
		rc = update_subdir(x, dfd, oe, kid, &ne[*k]);
		if (rc == 0)
			(*k)++;
		else if (rc == 1)
			rc = old_counts(&x->gone, x->w, oe);
	} else if ((rc = append_try(x, dfd, oe, kid, &st, &ne[*k])) == 0) {
		(*k)++;
		rc = old_counts(&x->gone, x->w, oe);
	} else if (rc == 1) {
		rc = oe ? old_counts(&x->gone, x->w, oe) : 0;
		if (rc == 0)
			rc = fresh_add(fresh, kid->name);
	}
	s->path[saved] = '\0';
	return rc;
}

static int update_alloc(amber_entry **ne, dirwork *fresh, size_t nold, size_t nkids)
{
	*ne = calloc(nold + nkids + 1, sizeof(**ne));
	fresh->names = calloc(nkids + 1, sizeof(*fresh->names));
	fresh->e = calloc(nkids + 1, sizeof(*fresh->e));
	fresh->p = calloc(nkids + 1, sizeof(*fresh->p));
	if (!*ne || !fresh->names || !fresh->e || !fresh->p)
		return amber_fail(AMBER_ERROR, "out of memory");
	return 0;
}

/* Merge listing od (NULL: empty) with the named kids: *out sorted, *n entries. */
static int merge_listing(incr *x, int dfd, const amber_dir *od, dnode *const *kids,
			 size_t nkids, amber_entry **out, size_t *n)
{
	dirwork fresh = {0};
	amber_entry *ne = NULL;
	size_t k = 0, nold = od ? amber_dir_count(od) : 0, i = 0, j = 0;
	int rc = update_alloc(&ne, &fresh, nold, nkids);

	while (rc == 0 && (i < nold || j < nkids)) {
		const amber_entry *oe = i < nold ? amber_dir_entry(od, i) : NULL;
		const dnode *kid = j < nkids ? kids[j] : NULL;
		int c = !kid ? -1 : !oe ? 1 : amber_name_cmp(oe->name, oe->name_len, kid->name,
							     strlen(kid->name));

		if (c < 0) {
			rc = amber_entry_copy(&ne[k], oe);
			k += rc == 0;
			i++;
			continue;
		}
		rc = update_kid(x, dfd, c == 0 ? oe : NULL, kid, ne, &k, &fresh);
		i += c == 0;
		j++;
	}
	if (rc == 0)
		rc = fresh_finish(x->s, &fresh, dfd, ne, &k);
	if (rc == 0 && x->s->fatal)
		rc = amber_fail(x->s->fatal_code, "%s", x->s->fatal_msg);
	if (rc == 0 && k > 1)
		qsort(ne, k, sizeof(*ne), entry_cmp);
	if (fresh.names)
		dirwork_dispose(x->s, &fresh);
	if (rc != 0 && ne)
		amber_entries_free(ne, k);
	*out = rc == 0 ? ne : NULL;
	*n = rc == 0 ? k : 0;
	return rc;
}

static int update_flat(incr *x, int dfd, const amber_entry *old, const dnode *node,
		       amber_entry *self)
{
	amber_dir *od = NULL;
	amber_entry *ne = NULL;
	size_t k = 0;
	int rc = amber_dir_open(&od, x->w->prev, old);

	if (rc == 0)
		rc = merge_listing(x, dfd, od, node->kids, node->nkids, &ne, &k);
	if (rc == 0)
		rc = write_dir(x->s, self, ne, k);
	if (ne)
		amber_entries_free(ne, k);
	amber_dir_free(od);
	return rc;
}

/* ---- large directories: only the buckets holding a named path ---- */

#define RETRY_FLAT 3               /* internal: the fan-out changes shape */

typedef struct kidbucket {
	unsigned bucket;
	size_t idx;
} kidbucket;

static int kidbucket_cmp(const void *x, const void *y)
{
	const kidbucket *a = x, *b = y;

	if (a->bucket != b->bucket)
		return a->bucket < b->bucket ? -1 : 1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int bucket_leaf(snap *s, amber_bucket *b, unsigned id, amber_entry *e, size_t n)
{
	char(*tok)[AMBER_TOKEN_HEXSZ + 1] = calloc(n, sizeof(*tok));
	int rc;

	if (!tok)
		return amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; i < n; i++)
		amber_name_token(tok[i], amber_archive_keys(s->a), e[i].name, e[i].name_len);
	b->id = (uint16_t)id;
	b->count = (uint32_t)n;
	rc = write_leaf(s, b->tree_oid, &b->link, e, n, tok, K_BUCKET);
	free(tok);
	return rc;
}

/* Bucket `id` (old: ob, or NULL) merged with its named kids into *nbk. */
static int update_bucket(incr *x, int dfd, const amber_entry *old, unsigned bits,
			 const amber_bucket *ob, unsigned id, dnode *const *kids, size_t g,
			 amber_bucket *nbk)
{
	amber_dir *bd = NULL;
	amber_entry *ne = NULL;
	size_t k = 0;
	int rc = ob ? amber_dir_open_bucket(&bd, x->w->prev, old, ob, bits) : 0;

	if (rc == 0)
		rc = merge_listing(x, dfd, bd, kids, g, &ne, &k);
	nbk->count = 0;
	if (rc == 0 && k)
		rc = bucket_leaf(x->s, nbk, id, ne, k);
	if (ne)
		amber_entries_free(ne, k);
	amber_dir_free(bd);
	return rc;
}

static int group_kids(kidbucket **out, incr *x, const dnode *node, unsigned bits)
{
	kidbucket *kb = malloc((node->nkids + 1) * sizeof(*kb));
	char tok[AMBER_TOKEN_HEXSZ + 1];

	if (!kb)
		return amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; i < node->nkids; i++) {
		const char *nm = node->kids[i]->name;

		amber_name_token(tok, amber_archive_keys(x->s->a), nm, strlen(nm));
		kb[i].bucket = amber_token_bucket(tok, bits);
		kb[i].idx = i;
	}
	qsort(kb, node->nkids, sizeof(*kb), kidbucket_cmp);
	*out = kb;
	return 0;
}

/*
 * A fanned-out directory: decode and rewrite only the buckets that hold a
 * named path; the others keep their trees.  RETRY_FLAT if the entry count
 * no longer gives the same fan-out (then the whole directory is rewritten).
 */
static int update_fanout(incr *x, int dfd, const amber_entry *old, const dnode *node,
			 amber_entry *self, const amber_fanout_view *v)
{
	size_t nk = node->nkids, nb = 0, i = 0, j = 0;
	kidbucket *kb = NULL;
	dnode **grp = malloc((nk + 1) * sizeof(*grp));
	amber_bucket *out = malloc((v->nb + nk + 1) * sizeof(*out));
	uint64_t total = 0;
	int rc = (grp && out) ? group_kids(&kb, x, node, v->bits)
			      : amber_fail(AMBER_ERROR, "out of memory");

	while (rc == 0 && (i < v->nb || j < nk)) {
		unsigned oid_ = i < v->nb ? v->b[i].id : UINT_MAX, kid_ = j < nk ? kb[j].bucket : UINT_MAX;
		unsigned id = oid_ < kid_ ? oid_ : kid_;
		const amber_bucket *ob = oid_ == id ? &v->b[i++] : NULL;
		size_t g = 0;

		while (j < nk && kb[j].bucket == id)
			grp[g++] = node->kids[kb[j++].idx];
		if (g == 0)
			out[nb] = *ob;
		else
			rc = update_bucket(x, dfd, old, v->bits, ob, id, grp, g, &out[nb]);
		total += out[nb].count;
		nb += out[nb].count > 0;
	}
	if (rc == 0 && (total <= AMBER_FANOUT_THRESHOLD || fanout_bits(total) != v->bits))
		rc = RETRY_FLAT;
	if (rc == 0)
		rc = fanout_write(x->s, self, v->bits, out, nb);
	free(kb);
	free(grp);
	free(out);
	return rc;
}

/* A walk down a layout-2 fan-out: the kids, sorted by bucket, and where to group them. */
typedef struct nodewalk {
	incr *x;
	int dfd;
	const amber_entry *old;
	const dnode *node;
	const kidbucket *kb;
	dnode **grp;
	unsigned bits;
} nodewalk;

static int update_node(nodewalk *nw, unsigned level, unsigned prefix, const amber_bucket *oc,
		       size_t j0, size_t j1, amber_bucket *out);

/* Child `digit` of a node (old: oc, or NULL) with the kids kb[j0..j1) under it. */
static int update_child(nodewalk *nw, unsigned level, unsigned prefix, unsigned digit,
			const amber_bucket *oc, size_t j0, size_t j1, amber_bucket *out)
{
	unsigned w = amber_fanout_width(nw->bits, level), id = (prefix << w) | digit;
	int rc;

	if (level + 1 < amber_fanout_levels(nw->bits))
		return update_node(nw, level + 1, id, oc, j0, j1, out);
	for (size_t j = j0; j < j1; j++)
		nw->grp[j - j0] = nw->node->kids[nw->kb[j].idx];
	if (oc) {
		amber_bucket ob = *oc;

		ob.id = (uint16_t)id;
		oc = &ob;
		rc = update_bucket(nw->x, nw->dfd, nw->old, nw->bits, oc, id, nw->grp, j1 - j0,
				   out);
	} else {
		rc = update_bucket(nw->x, nw->dfd, nw->old, nw->bits, NULL, id, nw->grp,
				   j1 - j0, out);
	}
	return rc;
}

/*
 * Node `prefix` at `level` (old: oc, or NULL) with the named kids kb[j0..j1)
 * under it: only the children that hold a kid are read and rewritten, so a
 * snapshot changing k entries reads and writes k paths of nodes.  out gets
 * the new node (count 0: it is empty now, and not written).
 */
static int update_node(nodewalk *nw, unsigned level, unsigned prefix, const amber_bucket *oc,
		       size_t j0, size_t j1, amber_bucket *out)
{
	amber_fanout_node on = {0}, nn = {.bits = nw->bits, .level = level, .prefix = prefix};
	unsigned w = amber_fanout_width(nw->bits, level);
	unsigned shift = nw->bits - level * AMBER_FANOUT_DIGIT - w, mask = (1u << w) - 1;
	size_t i = 0, j = j0;
	int rc = 0;

	if (oc)
		rc = amber_dir_node(&on, nw->x->w->prev, &oc->link, oc->tree_oid, level, prefix,
				    nw->bits, oc->count, nw->x->s->path);
	out->count = 0;
	while (rc == 0 && (i < on.n || j < j1)) {
		unsigned od = i < on.n ? on.c[i].id : UINT_MAX;
		unsigned kd = j < j1 ? (nw->kb[j].bucket >> shift) & mask : UINT_MAX;
		unsigned d = od < kd ? od : kd;
		const amber_bucket *ochild = od == d ? &on.c[i++] : NULL;
		size_t k = j;
		amber_bucket *c = &nn.c[nn.n];

		while (k < j1 && ((nw->kb[k].bucket >> shift) & mask) == d)
			k++;
		if (k == j)
			*c = *ochild;
		else
			rc = update_child(nw, level, prefix, d, ochild, j, k, c);
		j = k;
		c->id = (uint16_t)d;
		out->count += c->count;
		nn.n += c->count > 0;
	}
	if (rc == 0 && nn.n)
		rc = node_put(nw->x->s, &nn, out->tree_oid, &out->link);
	return rc;
}

/*
 * A layout-2 fanned-out directory: the nodes and buckets on the paths to the
 * named kids are rewritten.  RETRY_FLAT if the entry count no longer gives
 * the same fan-out.
 */
static int update_nodes(incr *x, int dfd, const amber_entry *old, const dnode *node,
			amber_entry *self)
{
	amber_fanout_node top;
	nodewalk nw = {.x = x, .dfd = dfd, .old = old, .node = node};
	amber_bucket oc = {.link = old->link}, out = {0};
	int rc;

	memcpy(oc.tree_oid, old->tree_oid, 20);
	rc = amber_dir_node(&top, x->w->prev, &old->link, old->tree_oid, 0, 0, 0, 0, x->s->path);
	nw.bits = top.bits;
	nw.grp = malloc((node->nkids + 1) * sizeof(*nw.grp));
	if (rc == 0 && !nw.grp)
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (rc == 0)
		rc = group_kids((kidbucket **)&nw.kb, x, node, nw.bits);
	for (size_t i = 0; rc == 0 && i < top.n; i++)
		oc.count += top.c[i].count;
	if (rc == 0)
		rc = update_node(&nw, 0, 0, &oc, 0, node->nkids, &out);
	if (rc == 0 && (out.count <= AMBER_FANOUT_THRESHOLD || fanout_bits(out.count) != nw.bits))
		rc = RETRY_FLAT;
	if (rc == 0) {
		self->content = AMBER_C_DIR;
		memcpy(self->tree_oid, out.tree_oid, 20);
		self->link = out.link;
	}
	free((void *)nw.kb);
	free(nw.grp);
	return rc;
}

/* Merge the old listing of `old` with the named kids and write the result. */
static int update_dir(incr *x, int dfd, const amber_entry *old, const dnode *node,
		      amber_entry *self)
{
	amber_fanout_view v = {0};
	amber_stats gone = x->gone, st = x->s->st;
	int layout = 0, rc = amber_dir_fanout_layout(&layout, x->w->prev, old);

	if (rc == 0 && layout == 2 && x->s->a->fanout_layout != 1) {
		rc = update_nodes(x, dfd, old, node, self);
		if (rc == RETRY_FLAT) {
			x->gone = gone;
			x->s->st = st;
			rc = update_flat(x, dfd, old, node, self);
		}
	} else if (rc == 0 && layout && (rc = amber_dir_buckets(&v, x->w->prev, old)) == 0) {
		rc = update_fanout(x, dfd, old, node, self, &v);
		if (rc == RETRY_FLAT) {
			x->gone = gone; /* counted again by the flat pass */
			x->s->st = st;
			rc = update_flat(x, dfd, old, node, self);
		}
	} else if (rc == 0) {
		rc = update_flat(x, dfd, old, node, self);
	}
	free(v.b);
	return rc;
}

static uint64_t minus(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

/* The root of an incremental snapshot. */
static int incr_tree(snap *s, amber_writer *w, const dnode *trie, amber_entry *root)
{
	incr x = {.s = s, .w = w};
	const amber_stats *old = &amber_snapshot_info(w->prev)->stats;
	int fd = open(w->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return amber_fail_errno("cannot open source %s", w->src);
	root->name = strdup("root");
	root->name_len = 4;
	root->type = AMBER_T_DIR;
	rc = root->name ? dir_meta(s, root, fd) : amber_fail(AMBER_ERROR, "out of memory");
	if (rc == 0 && trie->nkids) {
		rc = update_dir(&x, fd, &w->prev->root, trie, root);
	} else if (rc == 0) {
		root->content = w->prev->root.content;
		memcpy(root->tree_oid, w->prev->root.tree_oid, 20);
		root->link = w->prev->root.link;
	}
	close(fd);
	if (rc == 0 && s->nhl)
		rc = NEED_FULL; /* a hard-linked file was walked */
	s->st.files += minus(old->files, x.gone.files);
	s->st.dirs += minus(old->dirs, x.gone.dirs);
	s->st.bytes += minus(old->bytes, x.gone.bytes);
	return rc;
}

/*
 * Append-only files.  A file the caller declared append-only (a glob of
 * amber_writer_opts) and names as changed is read from its last settled
 * chunk boundary: one the chunker cut, not the end of the file.  The chunks
 * before it are kept, and since chunk boundaries depend only on the bytes
 * since the previous boundary, the chunks cut from there are the ones a
 * whole read would cut.  What the chunker has not cut yet (the growing
 * tail) is not stored again whole at every snapshot: it is kept as
 * fragments, a new one per snapshot holding just the bytes appended since,
 * until the chunker cuts a chunk there (then that chunk is stored, and what
 * follows it becomes one fragment), or until FRAG_MAX fragments, which are
 * then stored again as one.  Fragments are ordinary chunks to a reader
 * (amberfs-format(5) does not ask chunks to end at chunker boundaries); the
 * session remembers, for the version of each such file it stored, how many
 * leading chunks are settled, and without that (a new session) takes all
 * but the last, as a whole read leaves them.
 *
 * The stored fragments are first compared with the file's bytes; a file
 * that shrank or whose tail differs is read whole, with a warning.  Bytes
 * before the tail are not checked here: such files are remembered as
 * suspects and the next whole walk reads them whole (their files-cache
 * entries are never refreshed by a tail read) and warns if the bytes of the
 * last tail-read version no longer are the file's.
 */

#define FRAG_MAX 32                /* fragments kept before they are merged */
#define TAILS_MAX 4096             /* settled counts remembered per session */

/* The chunk list of stored regular file e (malloc'd). */
static int stored_chunks(amber_chunkref **out, size_t *n, amber_archive *a, const amber_entry *e)
{
	amber_cobj *o = NULL;
	int rc = 0;

	*out = NULL;
	*n = 0;
	if (e->content == AMBER_C_BLOB) {
		if (!(*out = malloc(sizeof(**out))))
			return amber_fail(AMBER_ERROR, "out of memory");
		(*out)[0].link = e->link;
		(*out)[0].len = (uint32_t)e->size;
		*n = 1;
		return 0;
	}
	if (e->content != AMBER_C_CHUNKED)
		return 0;
	rc = amber_file_index(&o, a, e, e->name);
	if (rc == 0) {
		const file_index *x = o->data;

		*out = malloc(x->n * sizeof(**out));
		if (*out) {
			memcpy(*out, x->c, x->n * sizeof(**out));
			*n = x->n;
		} else {
			rc = amber_fail(AMBER_ERROR, "out of memory");
		}
	}
	amber_cache_release(a->cache, o);
	return rc;
}

/* 1 if the file's bytes at off are the stored chunk c. */
static int tail_matches(snap *s, int fd, const amber_chunkref *c, uint64_t off)
{
	amber_cobj *o = NULL;
	uint8_t *b = malloc(c->len);
	int same = b && pread(fd, b, c->len, (off_t)off) == (ssize_t)c->len &&
		   amber_chunk_get(&o, s->a, &c->link, c->len, s->path) == 0 &&
		   memcmp(((amber_buf *)o->data)->data, b, c->len) == 0;

	amber_cache_release(s->a->cache, o);
	amber_error_clear();
	free(b);
	return same;
}

/* A file from chunk refs: one blob, or an index and a chunk tree. */
static int refs_objects(snap *s, amber_entry *e, const amber_chunkref *refs, size_t n)
{
	e->content = n == 1 ? AMBER_C_BLOB : AMBER_C_CHUNKED;
	if (n == 1) {
		e->link = refs[0].link;
		return 0;
	}
	return index_write(s, e, refs, n);
}

/* The bytes of the unsettled tail as one more chunk of p (a fragment). */
static int fragment_add(pending *p, snap *s, const uint8_t *data, size_t len)
{
	if (len && pending_add(p, s, data, len) < 0)
		return AMBER_ERROR;
	amber_pool_wait(s->pool, &p->group);
	for (size_t i = 0; i < p->n; i++)
		if (p->chunks[i]->rc < 0)
			return amber_fail(p->chunks[i]->rc, "%s", p->chunks[i]->msg);
	if (s->fatal)
		return amber_fail(s->fatal_code, "%s", s->fatal_msg);
	return 0;
}

/*
 * The file's new chunk list: old[0..settled), then either the old fragments
 * and one for the bytes appended since (the chunker cut nothing new), or
 * the chunks it cut and one fragment for what follows them.  `rest` is the
 * uncut end read from old_off (= the start of the old fragments), `had` of
 * its bytes being the old fragments'.
 */
static int tail_finish(snap *s, amber_entry *e, const amber_chunkref *old, size_t n,
		       size_t settled, pending *p, const uint8_t *rest, size_t rest_len,
		       size_t had, size_t *settled_out)
{
	size_t cut = p->n, keep = cut == 0 && n - settled < FRAG_MAX ? n - settled : 0;
	amber_chunkref *refs = NULL;
	size_t k = 0;
	int rc = keep ? fragment_add(p, s, rest + had, rest_len - had)
		      : fragment_add(p, s, rest, rest_len);

	if (rc == 0 && !(refs = malloc((settled + keep + p->n + 1) * sizeof(*refs))))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (rc < 0)
		return rc;
	memcpy(refs, old, (settled + keep) * sizeof(*refs));
	k = settled + keep;
	for (size_t i = 0; i < p->n; i++, k++) {
		refs[k].link = p->chunks[i]->link;
		refs[k].len = (uint32_t)p->chunks[i]->len;
	}
	*settled_out = settled + cut;
	if (k > 0)
		rc = refs_objects(s, e, refs, k);
	free(refs);
	return rc;
}

/* Name, metadata and xattrs of a regular file read from its tail. */
static int append_entry(snap *s, amber_entry *e, int dfd, const char *name, const struct stat *st)
{
	char path[64 + NAME_MAX];
	int rc;

	e->name = strdup(name);
	e->name_len = strlen(name);
	e->type = AMBER_T_REG;
	e->size = (uint64_t)st->st_size;
	meta_from_stat(e, st);
	if (!e->name)
		return amber_fail(AMBER_ERROR, "out of memory");
	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dfd, name);
	rc = read_xattrs(s, e, path);
	if (rc == 0 && e->nxattrs > 1)
		qsort(e->xattrs, e->nxattrs, sizeof(*e->xattrs), xattr_cmp);
	s->st.files++;
	s->st.bytes += e->size;
	return rc;
}

/* 1 if the file's bytes from off are the stored chunks c[0..n). */
static int chunks_match(snap *s, int fd, const amber_chunkref *c, size_t n, uint64_t off)
{
	for (size_t i = 0; i < n; off += c[i++].len)
		if (!tail_matches(s, fd, &c[i], off))
			return 0;
	return 1;
}

/*
 * One attempt at reading fd from its last settled boundary: 0 done, 1 read
 * it whole instead (warned), 2 it changed while being read (try again),
 * <0 fatal.  *settled_out: the settled chunks of the result.
 */
static int append_once(snap *s, int fd, const amber_chunkref *old, size_t n, size_t settled,
		       uint64_t old_size, amber_entry *e, struct stat *st, size_t *settled_out)
{
	uint64_t off = old_size;
	const uint8_t *rest = NULL;
	size_t rest_len = 0;
	struct stat after;
	pending p = {0};
	int64_t got;
	int rc = 2;

	for (size_t i = settled; i < n; i++)
		off -= old[i].len;
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode) || st->st_nlink > 1)
		return 1;
	if ((uint64_t)st->st_size < old_size || !chunks_match(s, fd, old + settled, n - settled, off)) {
		warn(s, s->path, "declared append-only, but it shrank or its stored end no longer "
			"matches (rewritten?): read whole", 0);
		return 1;
	}
	if (lseek(fd, (off_t)off, SEEK_SET) < 0 ||
	    (got = read_chunks_rest(&p, s, fd, s->buf, (uint64_t)st->st_size - off, &rest,
				    &rest_len)) < 0) {
		pending_clear(&p, s);
		return s->fatal ? amber_fail(s->fatal_code, "%s", s->fatal_msg) : 1;
	}
	/* read up to the size it had: growth meanwhile is the next snapshot's */
	if (fstat(fd, &after) == 0 && same_prefix(st, &after) &&
	    (uint64_t)got == (uint64_t)st->st_size - off)
		rc = tail_finish(s, e, old, n, settled, &p, rest, rest_len,
				 (size_t)(old_size - off), settled_out);
	pending_clear(&p, s);
	return rc;
}

/* Settled chunks of the stored version oe of path: remembered, or all but the last. */
static size_t tail_settled(const amber_writer *w, const char *path, const amber_entry *oe,
			   size_t n)
{
	for (size_t i = 0; i < w->ntails; i++)
		if (strcmp(w->tails[i].path, path) == 0)
			return memcmp(w->tails[i].oid, oe->link.oid, 20) == 0 &&
					       w->tails[i].settled < n
				       ? w->tails[i].settled
				       : n - 1;
	return n - 1;
}

/* Remember that the version e of path has `settled` settled chunks (a cache). */
static void tail_remember(amber_writer *w, const char *path, const amber_entry *e,
			  size_t settled)
{
	tailmark *t = NULL;

	for (size_t i = 0; i < w->ntails && !t; i++)
		if (strcmp(w->tails[i].path, path) == 0)
			t = &w->tails[i];
	if (!t && w->ntails < TAILS_MAX) {
		tailmark *v = realloc(w->tails, (w->ntails + 1) * sizeof(*v));
		char *p = strdup(path);

		if (!v || !p) {
			free(p);
			if (v)
				w->tails = v;
			return; /* only a cache: the next read settles all but the last */
		}
		w->tails = v;
		t = &w->tails[w->ntails++];
		t->path = p;
	}
	if (t) {
		memcpy(t->oid, e->link.oid, 20);
		t->settled = settled;
	}
}

static int suspect_add(amber_writer *w, const char *path)
{
	char **v;

	for (size_t i = 0; i < w->nsuspects; i++)
		if (strcmp(w->suspects[i], path) == 0)
			return 0;
	v = realloc(w->suspects, (w->nsuspects + 1) * sizeof(*v));
	if (!v)
		return amber_fail(AMBER_ERROR, "out of memory");
	w->suspects = v;
	if (!(v[w->nsuspects] = strdup(path)))
		return amber_fail(AMBER_ERROR, "out of memory");
	w->nsuspects++;
	return 0;
}

/*
 * Read a changed append-only file from its last stored chunk into e.
 * @return 0 done, 1 not such a file or read it whole instead, <0 fatal.
 */
static int append_try(incr *x, int dfd, const amber_entry *oe, const dnode *kid,
		      const struct stat *st0, amber_entry *e)
{
	snap *s = x->s;
	amber_chunkref *old = NULL;
	struct stat st;
	size_t n = 0, settled, now_settled = 0;
	int fd, rc = 1;

	if (!oe || kid->tree || !S_ISREG(st0->st_mode) || oe->type != AMBER_T_REG ||
	    oe->hardlink || st0->st_nlink > 1 || !append_glob(x->w->o.append_only, s->path))
		return 1;
	if (stored_chunks(&old, &n, s->a, oe) < 0 || n == 0) {
		amber_error_clear(); /* unreadable index or empty: read it whole */
		free(old);
		return 1;
	}
	memset(e, 0, sizeof(*e));
	settled = tail_settled(x->w, s->path, oe, n);
	fd = openat(dfd, kid->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	for (int attempt = 0; fd >= 0 && attempt < READ_RETRIES && rc != 0; attempt++) {
		rc = append_once(s, fd, old, n, settled, oe->size, e, &st, &now_settled);
		if (rc == 1 || rc < 0)
			break;
	}
	if (fd >= 0)
		close(fd);
	rc = rc == 2 ? 1 : rc;
	if (rc == 0)
		rc = append_entry(s, e, dfd, kid->name, &st);
	if (rc == 0)
		rc = suspect_add(x->w, s->path);
	if (rc == 0)
		tail_remember(x->w, s->path, e, now_settled);
	if (rc != 0)
		amber_entry_dispose(e);
	free(old);
	return rc;
}

/*
 * 1 if the stored chunks a are the bytes of the source file at their
 * offsets: a chunk of b (the whole walk's) at the same offset with the same
 * object is taken as read; any other is compared with the file.
 */
static int prefix_holds(snap *s, const char *file, const amber_chunkref *a, size_t na,
			const amber_chunkref *b, size_t nb)
{
	uint64_t oa = 0, ob = 0;
	size_t j = 0;
	int fd = -1, ok = 1;

	for (size_t i = 0; ok && i < na; oa += a[i++].len) {
		while (j < nb && ob < oa)
			ob += b[j++].len;
		if (j < nb && ob == oa && b[j].len == a[i].len &&
		    memcmp(b[j].link.oid, a[i].link.oid, 20) == 0)
			continue;
		if (fd < 0 && (fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
			return 0;
		ok = tail_matches(s, fd, &a[i], oa);
	}
	if (fd >= 0)
		close(fd);
	return ok;
}

/* After a whole walk: did a suspect's earlier bytes change behind its promise? */
static void suspect_check(snap *s, const char *src, amber_snapshot *before,
			  amber_snapshot *after, const char *path)
{
	amber_entry *eo = NULL, *en = NULL;
	amber_chunkref *co = NULL, *cn = NULL;
	size_t no = 0, nn = 0;
	char file[8192];

	snprintf(file, sizeof(file), "%s/%s", src, path);
	if (amber_stat(&eo, before, path) == 0 && amber_stat(&en, after, path) == 0 &&
	    eo->type == AMBER_T_REG && en->type == AMBER_T_REG &&
	    stored_chunks(&co, &no, s->a, eo) == 0 && stored_chunks(&cn, &nn, s->a, en) == 0 &&
	    (en->size < eo->size || !prefix_holds(s, file, co, no, cn, nn)))
		warn(s, path, "declared append-only, but bytes before its end changed: the "
			"snapshots since it was last read whole may hold stale bytes there; "
			"this one stores it whole", 1);
	amber_error_clear();
	free(co);
	free(cn);
	amber_entry_free(eo);
	amber_entry_free(en);
}

static void suspects_clear(amber_writer *w)
{
	for (size_t i = 0; i < w->nsuspects; i++)
		free(w->suspects[i]);
	free(w->suspects);
	w->suspects = NULL;
	w->nsuspects = 0;
}

static int full_tree(snap *s, amber_writer *w, amber_entry *root)
{
	struct stat st;

	if (stat(w->src, &st) < 0)
		return amber_fail_errno("cannot read source %s", w->src);
	if (!S_ISDIR(st.st_mode))
		return amber_fail(AMBER_EINVAL, "source %s is not a directory", w->src);
	return snap_tree(s, root, w->src, &st);
}

/* 1 if root is what the tip has (tree, manifest and the root's own metadata). */
static int root_unchanged(amber_writer *w, const amber_entry *root)
{
	amber_buf x = AMBER_BUF_INIT, y = AMBER_BUF_INIT;
	int same = memcmp(root->tree_oid, w->prev->root.tree_oid, 20) == 0 &&
		   amber_manifest_encode(&x, root, 1) == 0 &&
		   amber_manifest_encode(&y, &w->prev->root, 1) == 0 && x.len == y.len &&
		   memcmp(x.data, y.data, x.len) == 0;

	amber_error_clear();
	amber_buf_dispose(&x);
	amber_buf_dispose(&y);
	return same;
}

static const char *writer_stream(const amber_writer *w)
{
	return w->o.snap.stream ? w->o.snap.stream : "main";
}

/* Follow the stream's ref: *full is set when it is not our last snapshot. */
static int writer_sync_tip(amber_writer *w, int *full)
{
	uint8_t tip[20];
	char ref[256], hex[41];
	int rc;

	snprintf(ref, sizeof(ref), "refs/heads/%s", writer_stream(w));
	rc = amber_store_ref_read(tip, w->a->store, ref);
	if (rc == 0 && w->prev && memcmp(tip, w->tip, 20) == 0)
		return 0;
	*full = 1;
	amber_snapshot_free(w->prev);
	w->prev = NULL;
	w->has_tip = 0;
	if (rc == AMBER_ENOTFOUND) {
		amber_error_clear();
		return 0;
	}
	if (rc == 0)
		rc = amber_store_refresh(w->a->store);
	amber_oid_tohex(hex, tip);
	if (rc == 0)
		rc = amber_snapshot_open(&w->prev, w->a, hex);
	if (rc == 0) {
		memcpy(w->tip, tip, 20);
		w->has_tip = 1;
	}
	return rc;
}

/* The new commit becomes the session's previous snapshot. */
static void writer_advance(amber_writer *w, const uint8_t commit[20])
{
	char hex[41];

	amber_snapshot_free(w->prev);
	w->prev = NULL;
	amber_oid_tohex(hex, commit);
	if (amber_snapshot_open(&w->prev, w->a, hex) < 0) {
		amber_error_clear(); /* published; the next snapshot walks everything */
		w->has_tip = 0;
		return;
	}
	memcpy(w->tip, commit, 20);
	w->has_tip = 1;
}

static int session_setup(snap *s, amber_writer *w, const amber_snapshot_opts *o, int full)
{
	s->a = w->a;
	s->o = o;
	s->start_ns = now_ns();
	s->listings0 = amber_store_pack_listings(w->a->store);
	s->st.version = AMBER_STATS_VERSION; /* as progress callbacks see it */
	pthread_mutex_init(&s->lock, NULL);
	s->files_old = w->files;
	s->files_new = full ? amber_kvmap_new(sizeof(fc_val)) : w->files;
	s->chunks = w->chunks;
	s->gen = w->gen + 1;
	s->buf = w->buf;
	s->pool = w->pool;
	s->signer = w->signer;
	s->append_only = w->o.append_only;
	if (!s->files_new)
		return amber_fail(AMBER_ERROR, "out of memory");
	return amber_packw_new(&s->w, w->a->store);
}

static void writer_caches_reload(amber_writer *w)
{
	snap t = {.a = w->a, .o = &w->o.snap};
	amber_kvmap *c = amber_kvmap_new(sizeof(cc_val));

	if (!c)
		return; /* keep the old one: entries may name lost objects only
			   if a pack was abandoned, and then exists() is asked */
	amber_kvmap_free(w->chunks);
	w->chunks = t.chunks = c;
	t.files_old = amber_kvmap_new(sizeof(fc_val));
	if (t.files_old)
		caches_load(&t, w->files_path, w->chunks_path);
	amber_kvmap_free(t.files_old);
	w->gen = t.gen - 1;
	w->chunks_kept = amber_kvmap_count(c);
}

/*
 * The chunk cache after a snapshot of the session: a new generation if the
 * snapshot used it, and a prune in memory whenever it has doubled since the
 * last, so that a long session stays as bounded as the file.
 */
static void writer_chunks_after(amber_writer *w, snap *s, int rc)
{
	if (atomic_load(&s->stamped))
		w->gen = s->gen;
	if (rc < 0 || rc == NEED_FULL)
		return;
	w->need = chunks_need(&s->st);
	if (amber_kvmap_count(w->chunks) > 2 * w->chunks_kept + 1024) {
		chunks_prune(w->chunks, w->gen, w->need);
		w->chunks_kept = amber_kvmap_count(w->chunks);
	}
}

/*
 * Give back what the snapshot borrowed.  A whole walk's files cache
 * replaces the session's; after a failure the chunk cache may name objects
 * of an abandoned pack, so it is reloaded from disk.
 */
static void session_release(snap *s, amber_writer *w, int full, int rc)
{
	if (full && rc >= 0 && rc != NEED_FULL) {
		amber_kvmap_free(w->files);
		w->files = s->files_new;
	} else if (full) {
		amber_kvmap_free(s->files_new);
	}
	s->files_old = s->files_new = s->chunks = NULL;
	s->buf = NULL;
	s->pool = NULL;
	s->signer = NULL;
	snap_dispose(s);
	if (rc < 0)
		writer_caches_reload(w);
}

static void writer_save(amber_writer *w)
{
	snap t = {.a = w->a, .o = &w->o.snap, .files_new = w->files, .chunks = w->chunks};

	chunks_prune(w->chunks, w->gen, w->need);
	w->chunks_kept = amber_kvmap_count(w->chunks);
	caches_save(&t, w->files_path, w->chunks_path);
}

static int writer_commit(char id_out[AMBER_OID_HEXSZ + 1], snap *s, amber_writer *w,
			 amber_entry *root)
{
	amber_record r = {0};
	amber_buf rootmeta = AMBER_BUF_INIT;
	uint8_t commit[20];
	int rc;

	r.has_parent = w->has_tip;
	memcpy(r.parent, w->tip, 20);
	rc = choose_time(&r, s);
	if (rc == 0)
		rc = fill_record(&r, s, root, w->src, &rootmeta);
	if (rc == 0)
		rc = index_record(&r, s);
	if (rc == 0)
		rc = write_commit(commit, s, &r);
	if (rc == 0)
		rc = publish(s, &r, commit, id_out);
	if (rc == 0)
		writer_advance(w, commit);
	r.root_meta = NULL;
	amber_record_dispose(&r);
	amber_buf_dispose(&rootmeta);
	return rc;
}

/* Commit; after a whole walk, check the append-only suspects against it. */
static int writer_commit_checked(char id_out[AMBER_OID_HEXSZ + 1], snap *s, amber_writer *w,
				 amber_entry *root, int full)
{
	amber_snapshot *before = full && w->nsuspects ? w->prev : NULL;
	int rc;

	if (before)
		w->prev = NULL; /* kept for the check; the commit opens the new one */
	rc = writer_commit(id_out, s, w, root);
	for (size_t i = 0; rc == 0 && before && w->prev && i < w->nsuspects; i++)
		suspect_check(s, w->src, before, w->prev, w->suspects[i]);
	amber_snapshot_free(before);
	return rc;
}

/*
 * One snapshot, whole (full) or incremental.  When nothing changed, or an
 * incremental walk gives up for a whole one, the pack is still committed
 * (it is usually empty) so that the chunk cache never names a lost object.
 */
static int writer_run(char id_out[AMBER_OID_HEXSZ + 1], amber_stats *st, amber_writer *w,
		      const dnode *trie, int full)
{
	amber_snapshot_opts o = w->o.snap;
	amber_entry root = {0};
	snap s;
	int rc;

	o.no_cache = o.no_cache || !full; /* named files are read again */
	memset(&s, 0, sizeof(s));
	rc = session_setup(&s, w, &o, full);
	if (rc == 0)
		rc = full ? full_tree(&s, w, &root) : incr_tree(&s, w, trie, &root);
	if (rc == 0 && w->prev && root_unchanged(w, &root))
		rc = 1;
	if (rc == 1 || rc == NEED_FULL) {
		int crc = amber_packw_commit(s.w);

		rc = crc < 0 ? crc : rc;
	}
	if (rc == 1)
		amber_oid_tohex(id_out, w->tip);
	if (rc == 0)
		rc = writer_commit_checked(id_out, &s, w, &root, full);
	if (full && rc >= 0)
		suspects_clear(w);
	stats_final(&s);
	amber_stats_put(st, &s.st, st ? amber_stats_size(amber_stats_version(st)) : 0);
	amber_entry_dispose(&root);
	writer_chunks_after(w, &s, rc);
	session_release(&s, w, full, rc);
	if (full && rc >= 0)
		writer_save(w);
	return rc;
}

/*
 * A session consolidates packs as a CLI snapshot does (snap_repack), so that
 * a capture every second does not leave a pack every second; but beside the
 * writer, on a thread of its own, so that a merge (up to the rollover size,
 * seconds for the largest) never delays the next snapshot.  The thread holds
 * the writer lock while it merges (the lock is counted: the session's
 * snapshots take it too), so other processes stay out as they do during a
 * CLI snapshot.  Running beside a snapshot is safe for the reasons a repack
 * beside a reader is (repack.c): packs are only added by the snapshot and
 * only removed by the merge once their objects are durable in the merged
 * pack, and a read that misses rescans the packs.
 */
static void writer_merge(amber_writer *w)
{
	amber_store *store = w->a->store;
	amber_repack_stats st;

	/* Another process holding the lock: the next snapshot asks again. */
	if (amber_store_lock(store) < 0)
		return;
	repack_lazy(&st, store, &w->o.snap);
	amber_store_unlock(store);
}

static void *writer_bg(void *arg)
{
	amber_writer *w = arg;

	pthread_mutex_lock(&w->bg_mu);
	for (;;) {
		while (!w->bg_want && !w->bg_stop)
			pthread_cond_wait(&w->bg_cv, &w->bg_mu);
		if (!w->bg_want)
			break;
		w->bg_want = 0;
		pthread_mutex_unlock(&w->bg_mu);
		writer_merge(w);
		pthread_mutex_lock(&w->bg_mu);
	}
	pthread_mutex_unlock(&w->bg_mu);
	return NULL;
}

/* Ask the consolidation thread for a pass; without the thread, merge here. */
static void writer_repack(amber_writer *w)
{
	pthread_mutex_lock(&w->bg_mu);
	if (!w->bg_started && pthread_create(&w->bg, NULL, writer_bg, w) == 0)
		w->bg_started = 1;
	w->bg_want = 1;
	pthread_cond_signal(&w->bg_cv);
	pthread_mutex_unlock(&w->bg_mu);
	if (!w->bg_started) {
		w->bg_want = 0;
		writer_merge(w);
	}
}

int amber_writer_snapshot(char id_out[AMBER_OID_HEXSZ + 1], amber_stats *stats,
			  amber_writer *w, const amber_dirty *dirty, size_t n)
{
	dnode *trie = NULL;
	int full = !dirty || n > DIRTY_MAX, rc;

	if ((rc = amber_stats_check(stats, "amber_stats", "AMBER_STATS_INIT")) < 0 ||
	    (rc = amber_store_lock(w->a->store)) < 0)
		return rc;
	rc = writer_sync_tip(w, &full);
	if (rc == 0 && !full)
		rc = dirty_trie(&trie, dirty, n);
	if (rc == 0 && !full && trie->tree)
		full = 1;
	if (rc == 0)
		rc = writer_run(id_out, stats, w, trie, full);
	if (rc == NEED_FULL)
		rc = writer_run(id_out, stats, w, NULL, 1);
	if (rc == 0)
		writer_repack(w);
	dnode_free(trie);
	amber_store_unlock(w->a->store);
	return rc;
}

static int writer_check(const amber_writer_opts *o)
{
	if (!o)
		return amber_fail(AMBER_EINVAL, "a writer session needs its options");
	if (amber_opts_check(o, AMBER_WRITER_OPTS_VERSION, "amber_writer_opts",
			     "AMBER_WRITER_OPTS_INIT") < 0 ||
	    amber_opts_check(&o->snap, AMBER_SNAPSHOT_OPTS_VERSION, "amber_writer_opts.snap",
			     "AMBER_WRITER_OPTS_INIT") < 0)
		return AMBER_EINVAL;
	if (o->snap.tag || o->snap.time_ns)
		return amber_fail(AMBER_EINVAL, "a writer session neither tags nor sets times");
	return 0;
}

static int writer_setup(amber_writer *w)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	int threads = w->o.snap.threads > 0 ? w->o.snap.threads : (int)(cores > 0 ? cores : 2);
	snap t = {.a = w->a, .o = &w->o.snap};

	w->files = amber_kvmap_new(sizeof(fc_val));
	w->chunks = amber_kvmap_new(sizeof(cc_val));
	w->buf = malloc(READ_BUF);
	if (!w->src || !w->files || !w->chunks || !w->buf)
		return amber_fail(AMBER_ERROR, "out of memory");
	cache_paths(&t, w->files_path, w->chunks_path, sizeof(w->files_path));
	t.files_old = w->files;
	t.chunks = w->chunks;
	caches_load(&t, w->files_path, w->chunks_path);
	w->gen = t.gen - 1;
	w->chunks_kept = amber_kvmap_count(w->chunks);
	return amber_pool_new(&w->pool, threads, MAX_INFLIGHT);
}

int amber_writer_open(amber_writer **out, amber_archive *a, const char *src,
		      const amber_writer_opts *opts)
{
	amber_writer *w = NULL;
	struct stat st;
	int rc = writer_check(opts);

	if (rc == 0)
		rc = check_args(a, src, &opts->snap, &st);
	if (rc == 0 && !(w = calloc(1, sizeof(*w))))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (rc < 0)
		return rc;
	pthread_mutex_init(&w->bg_mu, NULL);
	pthread_cond_init(&w->bg_cv, NULL);
	w->a = a;
	w->o = *opts;
	w->src = strdup(src);
	rc = amber_archive_signer(&w->signer, a, opts->snap.signing_key_path,
				  opts->snap.unsigned_ok);
	if (rc == 0)
		rc = writer_setup(w);
	if (rc < 0) {
		w->files_path[0] = '\0'; /* nothing to save */
		amber_writer_close(w);
		return rc;
	}
	*out = w;
	return 0;
}

int amber_writer_close(amber_writer *w)
{
	int rc = 0;

	if (!w)
		return 0;
	pthread_mutex_lock(&w->bg_mu);
	w->bg_stop = 1;	/* a pass asked for still runs: the last snapshot's */
	pthread_cond_signal(&w->bg_cv);
	pthread_mutex_unlock(&w->bg_mu);
	if (w->bg_started)
		pthread_join(w->bg, NULL);
	pthread_mutex_destroy(&w->bg_mu);
	pthread_cond_destroy(&w->bg_cv);
	if (w->chunks && w->need)
		chunks_prune(w->chunks, w->gen, w->need);
	if (w->files && w->chunks && w->files_path[0] &&
	    (amber_kvmap_save(w->files, w->files_path, FILES_MAGIC, (const uint8_t *)w->a->id) < 0 ||
	     amber_kvmap_save(w->chunks, w->chunks_path, CHUNKS_MAGIC,
			      (const uint8_t *)w->a->id) < 0))
		rc = AMBER_ERROR;
	amber_snapshot_free(w->prev);
	suspects_clear(w);
	for (size_t i = 0; i < w->ntails; i++)
		free(w->tails[i].path);
	free(w->tails);
	amber_pool_free(w->pool);
	amber_kvmap_free(w->files);
	amber_kvmap_free(w->chunks);
	free(w->buf);
	amber_signer_free(w->signer);
	free(w->src);
	free(w);
	return rc;
}
