/*
 * Pack consolidation.
 *
 * Every snapshot writes one pack, and every object lookup that misses asks
 * each pack's index in turn, so without consolidation the cost of a
 * snapshot (and of opening an archive) grows with the length of history.
 * After each snapshot the writer merges packs geometrically, as
 * `git repack --geometric=2` does: sorted by size, the packs must form a
 * progression in which each is at least twice the one below it; the
 * smallest packs that break it, and any above them that are less than
 * twice the sum of those, are merged into one.  Each object is copied
 * O(log n) times over a history of n snapshots and O(log n) packs remain.
 * Packs at or above the writer's rollover size, packs with a .keep file,
 * and packs holding an OFS_DELTA entry (written by git, not by us) are
 * left alone.  After a snapshot the merge waits until LAZY_MIN small
 * packs have gathered.
 *
 * Entries are copied byte for byte (our packs hold whole objects in stored
 * deflate blocks, so an entry does not depend on its position): ciphertext
 * is never decoded or rewritten.  Each copied entry is checked against the
 * crc32 its old index records, so damage is not carried forward.
 *
 * Crash safety: the merged pack and its index are made durable and
 * installed by the ordinary pack writer (fsync file, rename, fsync dir)
 * before any old pack is removed; an old pack loses its .idx first (git
 * stops seeing it), then its .pack.  A crash at any point leaves every
 * object in at least one indexed pack; a .pack left without its .idx is
 * garbage, removed by a later repack.  Readers in other processes keep
 * reading a removed pack through the descriptor they hold, or rescan
 * objects/pack and find the object in the merged pack (amber_store_read
 * retries once after a rescan).  The caller holds the writer lock.
 */
#include "repack.h"

#include "archive.h"
#include "error.h"
#include "stats.h"

#include <assert.h>
#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#define PACK_SUBDIR "objects/pack"
#define ENTRY_MAX ((size_t)1 << 30)	/* refuse larger entries: memory bound */
#define IDX_HEAD (8 + 256 * 4)
#define BASE_MAX (PATH_MAX - 32)	/* room for an extension */
#define ORPHAN_AGE 60			/* seconds before a lone .pack is garbage */
#define OBJ_OFS_DELTA 6
/*
 * After a snapshot, merge only once this many small packs break the
 * progression: a merge costs a few fsyncs, so doing it every eighth
 * snapshot rather than every second keeps the writer's cost down, and adds
 * at most LAZY_MIN - 1 packs to the O(log n) ones.
 */
#define LAZY_MIN 8

struct rpack {
	char *base;		/* ARCHIVE/objects/pack/pack-<hex>, no extension */
	uint64_t size;		/* bytes of the .pack */
	int skip;		/* .keep, or holds an OFS_DELTA */
};

struct plist {
	struct rpack *v;
	size_t n, cap;
};

struct ient {
	uint8_t oid[20];
	uint32_t crc;
	uint64_t off;
};

/* Listing ------------------------------------------------------------------ */

static void plist_dispose(struct plist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].base);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* base + ext; bases are made shorter than BASE_MAX, extensions are short. */
static void ext_path(char out[PATH_MAX], const char *base, const char *ext)
{
	size_t n = strlen(base), k = strlen(ext);

	assert(n < BASE_MAX && k < PATH_MAX - BASE_MAX);
	memcpy(out, base, n);
	memcpy(out + n, ext, k + 1);
}

/* dir/name[0..stem) into out; -1 if too long. */
static int base_path(char out[BASE_MAX], const char *dir, const char *name, size_t stem)
{
	size_t n = strlen(dir);

	if (n + 1 + stem >= BASE_MAX)
		return -1;
	memcpy(out, dir, n);
	out[n] = '/';
	memcpy(out + n + 1, name, stem);
	out[n + 1 + stem] = '\0';
	return 0;
}

static int file_exists(const char *base, const char *ext, struct stat *st)
{
	char path[PATH_MAX];
	struct stat tmp;

	ext_path(path, base, ext);
	return stat(path, st ? st : &tmp) == 0;
}

static int plist_add(struct plist *l, const char *dir, const char *name, size_t stem)
{
	struct rpack *p;
	struct stat st;
	char base[BASE_MAX];

	if (base_path(base, dir, name, stem) < 0)
		return amber_fail(AMBER_ERROR, "%s/%s: path too long", dir, name);
	if (!file_exists(base, ".pack", &st))
		return 0;	/* an index without its pack: not ours to judge */
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		struct rpack *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return amber_fail(AMBER_ERROR, "out of memory listing packs");
		l->v = v;
		l->cap = cap;
	}
	p = &l->v[l->n];
	p->base = strdup(base);
	if (!p->base)
		return amber_fail(AMBER_ERROR, "out of memory listing packs");
	p->size = (uint64_t)st.st_size;
	p->skip = file_exists(base, ".keep", NULL);
	l->n++;
	return 0;
}

static int has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), k = strlen(suffix);

	return n > k && strcmp(name + n - k, suffix) == 0;
}

/* Remove a .pack with no .idx that is old enough not to be a write in flight. */
static void orphan_remove(const char *dir, const char *name)
{
	char base[BASE_MAX], path[PATH_MAX];
	struct stat st;

	if (base_path(base, dir, name, strlen(name) - 5) < 0)
		return;
	ext_path(path, base, ".pack");
	if (!file_exists(base, ".idx", NULL) && stat(path, &st) == 0 &&
	    st.st_mtime + ORPHAN_AGE < time(NULL))
		unlink(path);
}

static int list_packs(struct plist *l, amber_store *s, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int rc = 0;

	amber_store_note_listing(s);
	if (!d)
		return errno == ENOENT ? 0 : amber_fail_errno("cannot list %s", dir);
	while (rc == 0 && (de = readdir(d))) {
		if (strncmp(de->d_name, "pack-", 5) != 0)
			continue;
		if (has_suffix(de->d_name, ".idx"))
			rc = plist_add(l, dir, de->d_name, strlen(de->d_name) - 4);
		else if (has_suffix(de->d_name, ".pack"))
			orphan_remove(dir, de->d_name);
	}
	closedir(d);
	return rc;
}

/*
 * The packs as the store's set knows them, without a system call: a lazy
 * consolidation after each snapshot decides from them whether there is
 * anything to merge, and lists the directory (stat of every pack, orphan
 * removal) only when there is.  The set is what the snapshot's writer
 * listed when it started, plus its own new pack.
 */
static int memory_packs(struct plist *l, amber_store *s, const char *dir)
{
	amber_store_pack *v = NULL;
	size_t n = 0;
	char base[BASE_MAX];
	int rc = amber_store_packs(&v, &n, s);

	if (rc == 0 && n && !(l->v = calloc(n, sizeof(*l->v))))
		rc = amber_fail(AMBER_ERROR, "out of memory listing packs");
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (base_path(base, dir, v[i].name, strlen(v[i].name)) < 0)
			rc = amber_fail(AMBER_ERROR, "%s/%s: path too long", dir, v[i].name);
		else if (!(l->v[i].base = strdup(base)))
			rc = amber_fail(AMBER_ERROR, "out of memory listing packs");
		else
			l->v[l->n++] = (struct rpack){l->v[i].base, v[i].pack_size, v[i].keep};
	}
	l->cap = l->n;
	free(v);
	return rc;
}

/* Planning ------------------------------------------------------------------ */

static int cmp_size(const void *a, const void *b)
{
	const struct rpack *x = *(struct rpack *const *)a, *y = *(struct rpack *const *)b;

	return x->size < y->size ? -1 : x->size > y->size;
}

/*
 * How many of the smallest packs p[0..n) (sorted by size) to merge so that
 * the rest form a factor-2 progression (git's geometric repack).
 */
static size_t geometric_split(struct rpack **p, size_t n)
{
	uint64_t total = 0;
	size_t i, split;

	if (n < 2)
		return 0;
	for (i = n - 1; i > 0; i--) {
		if (p[i]->size < 2 * p[i - 1]->size)
			break;
	}
	split = i ? i + 1 : 0;
	for (i = 0; i < split; i++)
		total += p[i]->size;
	while (split < n && p[split]->size < 2 * total)
		total += p[split++]->size;
	return split;
}

/* The packs to merge, smallest first; *nout = 0 if there is nothing to do. */
static int plan(struct rpack ***out, size_t *nout, struct plist *l, uint64_t limit, int all,
		int lazy)
{
	struct rpack **p = calloc(l->n ? l->n : 1, sizeof(*p));
	size_t n = 0, m;

	if (!p)
		return amber_fail(AMBER_ERROR, "out of memory planning a repack");
	for (size_t i = 0; i < l->n; i++) {
		if (!l->v[i].skip && l->v[i].size < limit)
			p[n++] = &l->v[i];
	}
	qsort(p, n, sizeof(*p), cmp_size);
	m = all ? n : geometric_split(p, n);
	*out = p;
	*nout = m >= (lazy ? LAZY_MIN : 2) ? m : 0;
	return 0;
}

/* Reading an index ------------------------------------------------------------ */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int read_whole(uint8_t **out, size_t *len, const char *path, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *buf = NULL;
	int rc = 0;

	*out = NULL;
	if (fd < 0 || fstat(fd, &st) < 0)
		rc = amber_fail_errno("cannot read %s", path);
	else if ((uint64_t)st.st_size > max)
		rc = amber_fail(AMBER_ECORRUPT, "%s: too large for a pack index", path);
	else if (!(buf = malloc((size_t)st.st_size + 1)))
		rc = amber_fail(AMBER_ERROR, "out of memory reading %s", path);
	else if (pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
		rc = amber_fail_errno("cannot read %s", path);
	if (fd >= 0)
		close(fd);
	if (rc < 0) {
		free(buf);
		return rc;
	}
	*out = buf;
	*len = (size_t)st.st_size;
	return 0;
}

/* Offset of entry i from a version-2 index (large offsets checked in bounds). */
static int idx_offset(uint64_t *off, const uint8_t *idx, size_t len, size_t n, size_t i)
{
	size_t offs = IDX_HEAD + n * 24, large = offs + n * 4;
	uint32_t v = be32(idx + offs + 4 * i);
	size_t k = v & 0x7fffffffu;

	if (!(v & 0x80000000u)) {
		*off = v;
		return 0;
	}
	if (large + 8 * (k + 1) > len - 40)
		return -1;
	*off = (uint64_t)be32(idx + large + 8 * k) << 32 | be32(idx + large + 8 * k + 4);
	return 0;
}

static int cmp_off(const void *a, const void *b)
{
	const struct ient *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* Entries of idx sorted by offset, each checked to lie inside the pack. */
static int idx_entries(struct ient *e, const uint8_t *idx, size_t len, size_t n,
		       uint64_t packsize)
{
	for (size_t i = 0; i < n; i++) {
		memcpy(e[i].oid, idx + IDX_HEAD + 20 * i, 20);
		e[i].crc = be32(idx + IDX_HEAD + n * 20 + 4 * i);
		if (idx_offset(&e[i].off, idx, len, n, i) < 0 || e[i].off < 12 ||
		    e[i].off >= packsize - 20)
			return -1;
	}
	qsort(e, n, sizeof(*e), cmp_off);
	for (size_t i = 1; i < n; i++) {
		if (e[i].off == e[i - 1].off)
			return -1;
	}
	return 0;
}

/* Parse base.idx (version 2 only); *sum receives the pack checksum it names. */
static int idx_load(struct ient **out, size_t *nout, uint8_t sum[20], const struct rpack *p)
{
	static const uint8_t magic[8] = {0xff, 't', 'O', 'c', 0, 0, 0, 2};
	char path[PATH_MAX];
	uint8_t *idx = NULL;
	struct ient *e = NULL;
	size_t len = 0, n = 0;
	int rc;

	ext_path(path, p->base, ".idx");
	rc = read_whole(&idx, &len, path, p->size + ((size_t)1 << 30));
	if (rc < 0)
		return rc;
	if (len >= IDX_HEAD + 40 && !memcmp(idx, magic, 8))
		n = be32(idx + 8 + 255 * 4);
	if (len < IDX_HEAD + 40 || memcmp(idx, magic, 8) || n > (len - IDX_HEAD - 40) / 28 ||
	    p->size < 32)
		rc = amber_fail(AMBER_ECORRUPT, "%s: not a version 2 pack index", path);
	else if (!(e = malloc((n ? n : 1) * sizeof(*e))))
		rc = amber_fail(AMBER_ERROR, "out of memory reading %s", path);
	else if (idx_entries(e, idx, len, n, p->size) < 0)
		rc = amber_fail(AMBER_ECORRUPT, "%s: bad object offsets; run amberfs verify", path);
	if (rc == 0)
		memcpy(sum, idx + len - 40, 20);
	free(idx);
	if (rc < 0) {
		free(e);
		return rc;
	}
	*out = e;
	*nout = n;
	return 0;
}

/* Copying -------------------------------------------------------------------- */

struct copy {
	amber_packw *w;
	uint8_t *buf;
	size_t cap;
	uint64_t objects, bytes;
};

static int pack_check_head(int fd, const struct rpack *p, size_t n, const uint8_t sum[20])
{
	uint8_t head[12], tail[20];

	if (pread(fd, head, 12, 0) != 12 || memcmp(head, "PACK\0\0\0\2", 8) ||
	    be32(head + 8) != n || pread(fd, tail, 20, (off_t)p->size - 20) != 20 ||
	    memcmp(tail, sum, 20))
		return amber_fail(AMBER_ECORRUPT, "%s.pack does not match its index; "
				  "run amberfs verify", p->base);
	return 0;
}

static int copy_grow(struct copy *c, size_t len)
{
	uint8_t *b;

	if (len <= c->cap)
		return 0;
	b = realloc(c->buf, len);
	if (!b)
		return amber_fail(AMBER_ERROR, "out of memory copying a %zu-byte object", len);
	c->buf = b;
	c->cap = len;
	return 0;
}

/* Copy one entry; 1 if it is an OFS_DELTA (the pack cannot be merged). */
static int copy_entry(struct copy *c, int fd, const struct rpack *p, const struct ient *e,
		      uint64_t end)
{
	size_t len = (size_t)(end - e->off);
	char hex[41];

	amber_oid_tohex(hex, e->oid);
	if (end - e->off > ENTRY_MAX)
		return amber_fail(AMBER_ERROR, "%s.pack: object %s is too large to repack",
				  p->base, hex);
	if (copy_grow(c, len) < 0)
		return AMBER_ERROR;
	if (pread(fd, c->buf, len, (off_t)e->off) != (ssize_t)len)
		return amber_fail_errno("cannot read %s.pack", p->base);
	if (((c->buf[0] >> 4) & 7) == OBJ_OFS_DELTA)
		return 1;
	if ((uint32_t)crc32_z(crc32_z(0, NULL, 0), c->buf, len) != e->crc)
		return amber_fail(AMBER_ECORRUPT, "%s.pack: object %s does not match its index "
				  "(damaged bytes); nothing was removed; run amberfs verify",
				  p->base, hex);
	c->objects++;
	c->bytes += len;
	return amber_packw_add_raw(c->w, e->oid, e->crc, c->buf, len);
}

/* Copy every entry of pack p; 1 if it holds an OFS_DELTA. */
static int copy_pack(struct copy *c, const struct rpack *p)
{
	char path[PATH_MAX];
	struct ient *e = NULL;
	uint8_t sum[20];
	size_t n = 0;
	int fd = -1, rc = idx_load(&e, &n, sum, p);

	ext_path(path, p->base, ".pack");
	if (rc == 0 && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		rc = amber_fail_errno("cannot read %s", path);
	if (rc == 0)
		rc = pack_check_head(fd, p, n, sum);
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = copy_entry(c, fd, p, &e[i], i + 1 < n ? e[i + 1].off : p->size - 20);
	if (fd >= 0)
		close(fd);
	free(e);
	return rc;
}

/* Removing ------------------------------------------------------------------- */

static int unlink_ext(const char *base, const char *ext)
{
	char path[PATH_MAX];

	ext_path(path, base, ext);
	if (unlink(path) < 0 && errno != ENOENT)
		return amber_fail_errno("cannot remove %s", path);
	return 0;
}

/* 1 if p is one of the packs w just installed (same checksum, same name). */
static int is_new_pack(amber_packw *w, const struct rpack *p)
{
	const char *hex = strrchr(p->base, '-');
	uint8_t sum[20];

	return hex && amber_oid_fromhex(sum, hex + 1) == 0 && amber_packw_installed(w, sum);
}

/*
 * Remove the merged packs: index first, so that git never sees an index
 * without its pack.  A multi-pack-index written by git may name them, so
 * it goes first (it is only an accelerator; git and libgit2 read packs
 * without it).
 */
static int remove_old(amber_packw *w, amber_store *s, struct rpack **p, size_t n,
		      const char *dir)
{
	char midx[PATH_MAX];
	int rc = 0;

	ext_path(midx, dir, "/multi-pack-index");
	if (unlink(midx) < 0 && errno != ENOENT)
		return amber_fail_errno("cannot remove %s", midx);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (is_new_pack(w, p[i]))
			continue;
		rc = unlink_ext(p[i]->base, ".idx");
		if (rc == 0)
			amber_store_pack_removed(s, strrchr(p[i]->base, '/') + 1);
		if (rc == 0)
			rc = unlink_ext(p[i]->base, ".rev");
		if (rc == 0)
			rc = unlink_ext(p[i]->base, ".bitmap");
		if (rc == 0)
			rc = unlink_ext(p[i]->base, ".pack");
	}
	/* No fsync: a removal lost in a crash only brings back a duplicate. */
	return rc;
}

/* Merging --------------------------------------------------------------------- */

/* Merge p[0..n) through w; 1 if some pack turned out unmergeable (marked skip). */
static int merge(amber_repack_stats *st, amber_packw *w, amber_store *s, struct rpack **p,
		 size_t n, const char *dir)
{
	struct copy c = {.w = w};
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < n; i++) {
		rc = copy_pack(&c, p[i]);
		if (rc == 1)
			p[i]->skip = 1;
	}
	if (rc == 0)
		rc = amber_packw_commit(w);
	if (rc == 0)
		rc = remove_old(w, s, p, n, dir);
	if (rc == 0) {
		st->packs_merged += n;
		st->objects += c.objects;
		st->bytes += c.bytes;
	}
	free(c.buf);
	return rc;
}

/* One planning and merging attempt over l; 1 to plan again. */
static int attempt(amber_repack_stats *st, amber_store *s, struct plist *l, const char *dir,
		   unsigned flags)
{
	amber_packw *w = NULL;
	struct rpack **p = NULL;
	size_t n = 0;
	int rc = flags & AMBER_REPACK_LAZY ? amber_packw_new_noscan(&w, s) : amber_packw_new(&w, s);

	if (rc == 0)
		rc = plan(&p, &n, l, amber_packw_rollover(w), flags & AMBER_REPACK_ALL,
			  flags & AMBER_REPACK_LAZY);
	if (rc == 0 && n > 0)
		rc = merge(st, w, s, p, n, dir);
	amber_packw_free(w);	/* discards the temporary pack of a failed attempt */
	free(p);
	return rc;
}

/* 1 if a lazy consolidation would merge some of l (planned as attempt() plans). */
static int worth_listing(struct plist *l, uint64_t limit)
{
	struct rpack **p = NULL;
	size_t n = 0;

	if (plan(&p, &n, l, limit, 0, 1) < 0) {
		amber_error_clear();
		return 1;	/* let the listing plan (and fail) as before */
	}
	free(p);
	return n > 0;
}

int amber_repack_locked(amber_repack_stats *st, amber_store *s, unsigned flags)
{
	struct plist l = {0};
	amber_store_pack *sp = NULL;
	size_t n = 0;
	char dir[PATH_MAX];
	const char *path = amber_store_path(s);
	int rc;

	memset(st, 0, sizeof(*st));
	if (strlen(path) + sizeof(PACK_SUBDIR) + 80 >= BASE_MAX)
		return amber_fail(AMBER_ERROR, "%s: path too long", path);
	ext_path(dir, path, "/" PACK_SUBDIR);
	if (flags & AMBER_REPACK_LAZY) {
		rc = memory_packs(&l, s, dir);
		st->packs_before = st->packs_after = l.n;
		if (rc < 0 || !worth_listing(&l, amber_store_rollover(s))) {
			plist_dispose(&l);
			return rc;
		}
		plist_dispose(&l);
	}
	rc = list_packs(&l, s, dir);
	st->packs_before = l.n;
	/* A pack found unmergeable while copying is marked skip and planned around. */
	while (rc == 0 && (rc = attempt(st, s, &l, dir, flags)) == 1)
		rc = 0;
	plist_dispose(&l);
	if (rc == 0 && (flags & AMBER_REPACK_LAZY)) {
		/* the set, as this process installed and removed packs: no listing */
		if ((rc = amber_store_packs(&sp, &n, s)) == 0)
			st->packs_after = n;
		free(sp);
	} else if (rc == 0 && (rc = list_packs(&l, s, dir)) == 0) {
		st->packs_after = l.n;
	}
	plist_dispose(&l);
	return rc;
}

int amber_archive_repack(amber_repack_stats *st, amber_archive *a, unsigned flags)
{
	amber_repack_stats tmp = AMBER_REPACK_STATS_INIT;
	int rc = amber_stats_check(st, "amber_repack_stats", "AMBER_REPACK_STATS_INIT");

	if (rc < 0 || (rc = amber_store_lock(a->store)) < 0)
		return rc;
	rc = amber_repack_locked(&tmp, a->store, flags);
	amber_store_unlock(a->store);
	amber_stats_put(st, &tmp, st ? amber_repack_stats_size(amber_stats_version(st)) : 0);
	return rc;
}
