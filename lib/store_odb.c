/*
 * Checked packs: the pack backend of every store's object database, and
 * the store's own read path.
 *
 * libgit2 1.5 takes a pack index's offsets on trust: an offset past the end
 * of its pack makes it read beyond the end of the mapped file and die of
 * SIGBUS (the bit-flip sweep found it: one flipped byte of an offset killed
 * verify, restore and the mount).  A pack truncated in place under a
 * running reader did the same through libgit2's mmap windows, with an
 * index that was sane when it was checked.  So packs are not read by
 * libgit2 at all: each checked pack is kept as two open descriptors (its
 * .idx and .pack) and read with pread and zlib by packread.c, where a short
 * read is an error naming the pack, never a signal.  The store's object
 * reads (amber_store_read: the mount, restore, verify) call
 * amber_packset_read() directly, under this set's shared lock only, so any
 * number of threads decode at once; the same code answers libgit2 through
 * the backend below for what libgit2 reads itself (refs' targets, commits,
 * walks, prefix lookups).
 *
 * A pack gets in through a scan, which the odb calls on every miss (its
 * refresh), amber_store_refresh() calls through git_odb_refresh(), and
 * lookups call once a second at most (each thread looks at the clock
 * every RESCAN_EVERY lookups, not on every object it reads); or by name,
 * when this process installed it (amber_packset_add: a writer's commit,
 * which so lists objects/pack once a snapshot, not once per pack it
 * writes), and goes by name when this process removed it
 * (amber_packset_drop: a consolidation).  Either way:
 *
 * - a new pack-X.idx is checked (idx_check: sizes, the pack's header and
 *   object count, a fan-out that never falls) on the descriptors then
 *   kept, so no file swapped in between is read; one that fails is
 *   refused: remembered with its file's identity, so that it is not read
 *   again on every miss until it changes, and named when an object is not
 *   found;
 * - the offsets of a large index (over IDX_WHOLE_MAX objects) are not read
 *   at the scan: that cost O(objects) in every process that opened an
 *   archive (7.4 MB read per CLI command at half a million snapshots).
 *   A small one's are (one pread of at most 4 KiB, bounded per pack), so
 *   that a small damaged index is refused whole as before.  Each lookup
 *   checks the one offset it uses (amber_pack_find: inside the pack as it
 *   was checked, a large one inside its table), so a damaged offset is an
 *   error naming the index at the read that needs it, and an object never
 *   read costs nothing.  No reader relies on offsets being sorted or
 *   unique (verify's pack order only sorts by them; repack parses and
 *   checks whole indexes itself).  amber_idx_sane() checks the whole
 *   table: verify calls it on every index;
 * - a loaded pack whose .idx is gone (a consolidation removed it: repack.c
 *   removes the .idx first) is dropped, and its descriptors go with it, so
 *   its disk space is freed while the reader runs.  Until then a removed
 *   pack stays readable through them.
 *
 * Memory: nothing of a pack or its index is mapped.  Each index's fan-out
 * (1 KiB) is kept; once it has served amber_pack_copy_after() lookups by
 * pread, an index is copied into memory whole while the set's copies stay
 * under IDX_COPY_MAX (32 MiB: an index
 * takes 28 bytes an object, so about a million objects), and looked up
 * there without a system call; past that budget names and offsets are
 * read with pread on each lookup (the page cache holds what is hot), and
 * the index gets a Bloom filter of its names instead (a byte an object,
 * under IDX_FILTER_MAX a set: packread.c), so that a lookup of an object
 * it does not hold, which a writer makes for every new object in every
 * pack, reads nothing from it.
 *
 * Locks: `lock` is taken shared by every lookup and read and exclusively
 * by a scan, so a pack is never dropped (nor its descriptors closed) under
 * a read that uses it; a REF_DELTA's base is looked up under the same
 * shared hold.  A read hands back a copy, so nothing a caller holds points
 * into a dropped pack; a caller whose object moved to the merged pack
 * between two lookups misses once, and the rescan on that miss finds it
 * there.  (When libgit2 calls in here it may hold the odb's mutex: the
 * order is always odb mutex, then `lock`, never the reverse.)
 *
 * Not followed: objects/info/alternates (an archive is self-contained, and
 * an alternate's packs would be read unchecked) and the multi-pack-index
 * (it names offsets too; repack.c removes it).  Loose objects are read by
 * libgit2's loose backend, which reads files whole rather than mapping them.
 */
#include "store_odb.h"

#include "store.h"

#include "error.h"
#include "packread.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <git2/sys/odb_backend.h>

#define LOOSE_PRIORITY 1
#define PACKED_PRIORITY 2	/* asked first, as libgit2's default odb does */
#define IDX_HEAD (8 + 256 * 4)
#define IDX_BATCH 4096
#define RESCAN_NS 1000000000LL	/* a lookup rescans if the last scan is older */
#define RESCAN_EVERY 64u	/* lookups a thread makes between two looks at the clock */
#define GIT_READ_MAX ((size_t)1 << 30)	/* what libgit2 may read through us */
#define IDX_COPY_MAX ((size_t)32 << 20)	/* indexes held in memory, per set */
#define IDX_FILTER_MAX ((size_t)16 << 20) /* filters of indexes not copied, per set */
#define IDX_WHOLE_MAX 1024u	/* an index this small has its offsets checked at the scan */

struct cpack {
	char *name;		/* pack-<hex>.idx */
	char *pname;		/* pack-<hex>.pack, for messages */
	amber_pack pk;		/* its descriptors and fan-out (packread.h) */
	off_t size;		/* of the .idx: the order lookups ask in */
	int keep;		/* a pack-<hex>.keep was listed beside it (repack leaves it) */
	int moved;		/* now owned by the next state of the set (ps_merge) */
};

struct refused {
	char *name;
	struct stat st;		/* the index as it was when refused */
};

struct amber_packset {
	git_odb_backend parent;	/* first: libgit2 sees a git_odb_backend */
	char *dir;		/* GITDIR/objects/pack */
	pthread_rwlock_t lock;	/* shared: lookups; exclusive: scans */
	struct cpack *v;	/* loaded packs, sorted by name (lock) */
	size_t n;
	size_t *order;		/* indexes into v, largest pack first (lock) */
	struct refused *bad;	/* refused indexes, sorted by name (lock) */
	size_t nbad;
	atomic_size_t hint;	/* the pack the last hit came from */
	atomic_size_t idx_bytes; /* copies of indexes held (amber_pack.mem), <= IDX_COPY_MAX */
	atomic_size_t filter_bytes; /* their filters (amber_pack.filter), <= IDX_FILTER_MAX */
	atomic_llong scanned;	/* CLOCK_MONOTONIC ns of the last scan */
	atomic_ullong listings;	/* directory listings of objects/pack made so far */
	size_t copy_max;	/* budget of index copies; IDX_COPY_MAX unless a test sets it */
};

/* Index checks -------------------------------------------------------------- */

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static char *path_join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", a, b);
	return p;
}

/*
 * The least and greatest of k 32-bit offsets, in runs of a fixed length
 * that the compiler turns into vector code: verify checks every offset of
 * every index (at a million snapshots, millions of them).  With AVX2
 * (asked of the CPU at run time) a run is a few vector instructions; the
 * baseline has no unsigned vector min/max.
 */
#define RUN 64
static inline __attribute__((always_inline)) void
span_of(uint32_t *lo, uint32_t *hi, const uint8_t *buf, uint32_t k)
{
	uint32_t mn = UINT32_MAX, mx = 0, j = 0;

	for (; j + RUN <= k; j += RUN) {
		uint32_t v[RUN], a = UINT32_MAX, b = 0;

		memcpy(v, buf + 4 * (size_t)j, sizeof(v));
		for (int r = 0; r < RUN; r++) {
			uint32_t x = __builtin_bswap32(v[r]);

			a = x < a ? x : a;
			b = x > b ? x : b;
		}
		mn = a < mn ? a : mn;
		mx = b > mx ? b : mx;
	}
	for (; j < k; j++) {
		uint32_t x = get_be32(buf + 4 * (size_t)j);

		mn = x < mn ? x : mn;
		mx = x > mx ? x : mx;
	}
	*lo = mn;
	*hi = mx;
}

__attribute__((target("avx2")))
static void offsets_span_avx2(uint32_t *lo, uint32_t *hi, const uint8_t *buf, uint32_t k)
{
	span_of(lo, hi, buf, k);
}

static void offsets_span(uint32_t *lo, uint32_t *hi, const uint8_t *buf, uint32_t k)
{
	if (__builtin_cpu_supports("avx2"))
		offsets_span_avx2(lo, hi, buf, k);
	else
		span_of(lo, hi, buf, k);
}

/* Offsets of n objects at `at` in the index; large ones index the table at `big`. */
static int idx_offsets_ok(int fd, off_t at, uint32_t n, off_t big, uint64_t nbig,
			  uint64_t packsize)
{
	uint8_t buf[IDX_BATCH * 4], b8[8];

	for (uint32_t i = 0; i < n; i += IDX_BATCH) {
		uint32_t k = n - i < IDX_BATCH ? n - i : IDX_BATCH, lo, hi;

		if (pread(fd, buf, (size_t)k * 4, at + (off_t)i * 4) != (ssize_t)k * 4)
			return 0;
		/* a batch of 32-bit offsets only (the common case): its extremes decide */
		offsets_span(&lo, &hi, buf, k);
		if (!(hi & 0x80000000u)) {
			if (lo < 12 || hi >= packsize - 20)
				return 0;
			continue;
		}
		for (uint32_t j = 0; j < k; j++) {
			uint64_t off = get_be32(buf + 4 * j);

			if (off & 0x80000000u) {
				if ((off &= 0x7fffffffu) >= nbig ||
				    pread(fd, b8, 8, big + (off_t)off * 8) != 8)
					return 0;
				off = (uint64_t)get_be32(b8) << 32 | get_be32(b8 + 4);
			}
			if (off < 12 || off >= packsize - 20)
				return 0;
		}
	}
	return 1;
}

/*
 * 1 if dir/pack-X.idx is sane for pack-X.pack: both regular files, a
 * version-2 index whose size matches its object count, whose fan-out never
 * falls, a pack header of version 2 or 3 naming as many objects, and (with
 * `all_offsets`, or for an index of at most IDX_WHOLE_MAX objects) every
 * offset, 32- or 64-bit, between the pack's header and its trailing
 * checksum; 0 if not; -1 if the pack does not exist (nothing
 * would read the index); -2 if we are out of descriptors (errno says).
 * *ist receives the index's stat (zeroed if it could not be opened), *psize
 * the pack's size, head[IDX_HEAD] the index's header (magic, version,
 * fan-out table).  With idx_fd and pack_fd, a sane pair's descriptors are
 * handed over (else closed).
 */
static int idx_check(const char *dir, const char *name, int all_offsets, struct stat *ist,
		     uint64_t *psize, uint8_t *head, int *idx_fd, int *pack_fd)
{
	char *idx = path_join(dir, name), *pack = idx ? malloc(strlen(idx) + 2) : NULL;
	struct stat pst;
	int fd = -1, pfd = -1, ok = 0;
	uint8_t ph[12];

	memset(ist, 0, sizeof(*ist));
	if (!pack)
		goto done;
	memcpy(pack, idx, strlen(idx) - 3);
	memcpy(pack + strlen(idx) - 3, "pack", 5); /* pack-X.idx -> pack-X.pack */
	/* the descriptors checked are the ones read: no swap between check and use */
	pfd = open(pack, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (pfd < 0 || fstat(pfd, &pst) < 0) {
		ok = pfd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM) ? -2 : -1;
		goto done;
	}
	/* O_NONBLOCK: a fifo named like an index must not hang the reader */
	fd = open(idx, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOENT)) {
		/* ENOENT: removed since it was listed (a consolidation): not damage */
		ok = errno == ENOENT ? -1 : -2;
		goto done;
	}
	if (fd < 0 || fstat(fd, ist) < 0 || !S_ISREG(ist->st_mode) || !S_ISREG(pst.st_mode) ||
	    pst.st_size < 32 || ist->st_size < IDX_HEAD + 40 ||
	    pread(fd, head, IDX_HEAD, 0) != IDX_HEAD || memcmp(head, "\377tOc\0\0\0\2", 8))
		goto done;
	uint64_t n = get_be32(head + IDX_HEAD - 4), fixed = IDX_HEAD + 28 * n + 40;

	if ((uint64_t)ist->st_size < fixed || ((uint64_t)ist->st_size - fixed) % 8)
		goto done;
	/* the pack's header: git's, holding as many objects as the index names */
	if (pread(pfd, ph, 12, 0) != 12 || memcmp(ph, "PACK", 4) != 0 ||
	    (get_be32(ph + 4) != 2 && get_be32(ph + 4) != 3) || get_be32(ph + 8) != n)
		goto done;
	for (int i = 0; i < 256; i++) {	/* sorted names: a fan-out that never falls */
		uint32_t prev = i ? get_be32(head + 8 + 4 * (i - 1)) : 0;

		if (get_be32(head + 8 + 4 * i) < prev)
			goto done;
	}
	*psize = (uint64_t)pst.st_size;
	ok = (!all_offsets && n > IDX_WHOLE_MAX) ||
	     idx_offsets_ok(fd, IDX_HEAD + 24 * (off_t)n, (uint32_t)n, IDX_HEAD + 28 * (off_t)n,
			    ((uint64_t)ist->st_size - fixed) / 8, (uint64_t)pst.st_size);
done:
	if (ok == 1 && idx_fd) {
		*idx_fd = fd;
		*pack_fd = pfd;
		fd = pfd = -1;
	}
	if (fd >= 0)
		close(fd);
	if (pfd >= 0)
		close(pfd);
	free(pack);
	free(idx);
	return ok;
}

int amber_idx_sane(const char *dir, const char *name)
{
	uint8_t head[IDX_HEAD];
	uint64_t psize;
	struct stat st;

	return idx_check(dir, name, 1, &st, &psize, head, NULL, NULL);
}

/* Scanning ------------------------------------------------------------------ */

struct names {
	char **v;
	size_t n, cap;
};

static void names_dispose(struct names *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int names_add(struct names *l, const char *name, size_t len)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		char **v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	if (!(l->v[l->n] = strndup(name, len)))
		return -1;
	l->n++;
	return 0;
}

/*
 * The pack-*.idx names in dir, sorted, and the pack-*.keep ones as
 * pack-*.idx (so that a loaded pack finds its .keep by its own name).
 */
static int list_indexes(struct names *l, struct names *keeps, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int rc = 0;

	if (!d)
		return errno == ENOENT ? 0 : amber_fail_errno("cannot list %s", dir);
	while (rc == 0 && (de = readdir(d))) {
		size_t len = strlen(de->d_name);
		struct names *to = NULL;

		if (len < 10 || strncmp(de->d_name, "pack-", 5) != 0)
			continue;
		if (strcmp(de->d_name + len - 4, ".idx") == 0)
			to = l;
		else if (len > 10 && strcmp(de->d_name + len - 5, ".keep") == 0)
			to = keeps;
		if (!to)
			continue;
		if (names_add(to, de->d_name, len - (to == keeps)) < 0)
			rc = amber_fail(AMBER_ERROR, "out of memory listing %s", dir);
		else if (to == keeps)
			memcpy(to->v[to->n - 1] + len - 5, ".idx", 5);
	}
	closedir(d);
	if (rc == 0 && l->n)
		qsort(l->v, l->n, sizeof(*l->v), cmp_str);
	if (rc == 0 && keeps->n)
		qsort(keeps->v, keeps->n, sizeof(*keeps->v), cmp_str);
	return rc;
}

static int cmp_cpack(const void *key, const void *elem)
{
	return strcmp(key, ((const struct cpack *)elem)->name);
}

static int cmp_refused(const void *key, const void *elem)
{
	return strcmp(key, ((const struct refused *)elem)->name);
}

static int same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The next state of the set, built beside the current one by ps_merge. */
struct next {
	struct cpack *v;
	size_t n;
	struct refused *bad;
	size_t nbad;
	size_t *order;
};

/* Larger index (more objects) first: after geometric consolidation the
 * largest pack holds most objects, so most lookups end at the first ask. */
static int cmp_larger(const void *a, const void *b, void *ctx)
{
	const struct cpack *v = ctx;
	off_t x = v[*(const size_t *)a].size, y = v[*(const size_t *)b].size;

	return x > y ? -1 : x < y;
}

static int keep_refused(struct next *x, const char *name, const struct stat *st)
{
	char *copy = strdup(name);

	if (!copy)
		return amber_fail(AMBER_ERROR, "out of memory");
	x->bad[x->nbad++] = (struct refused){copy, *st};
	return 0;
}

/* Load `name` (not loaded yet) into *x if its index is sane, else refuse it. */
static int add_new(struct next *x, amber_packset *ps, const char *name)
{
	struct refused *old = ps->nbad ? bsearch(name, ps->bad, ps->nbad, sizeof(*ps->bad),
						 cmp_refused) : NULL;
	char *path = path_join(ps->dir, name), *copy = NULL, *pname = NULL;
	uint8_t head[IDX_HEAD];
	uint64_t psize = 0;
	struct stat st;
	int ok, ifd = -1, pfd = -1;

	if (!path)
		return amber_fail(AMBER_ERROR, "out of memory");
	if (old && stat(path, &st) == 0 && same_file(&st, &old->st)) {
		free(path);	/* refused before and unchanged: not read again */
		return keep_refused(x, name, &old->st);
	}
	/* offsets are checked by each lookup that uses one (amber_pack_find) */
	ok = idx_check(ps->dir, name, 0, &st, &psize, head, &ifd, &pfd);
	free(path);
	if (ok == -2)		/* out of descriptors: not the pack's fault */
		return amber_fail_errno("cannot open %s/%s (each pack holds two open files: "
					"raise 'ulimit -n', or merge packs with 'amberfs repack')",
					ps->dir, name);
	if (ok <= 0)		/* -1, no .pack: nothing to read, look again next time */
		return ok < 0 ? 0 : keep_refused(x, name, &st);
	size_t len = strlen(name);

	if (!(copy = strdup(name)) || !(pname = malloc(len + 2))) {
		free(copy);
		close(ifd);
		close(pfd);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	memcpy(pname, name, len - 3);
	memcpy(pname + len - 3, "pack", 5);	/* pack-X.idx -> pack-X.pack */
	struct cpack *c = &x->v[x->n++];

	*c = (struct cpack){.name = copy, .pname = pname, .size = st.st_size};
	amber_pack_setup(&c->pk, head, (uint64_t)st.st_size, psize);
	c->pk.idx_fd = ifd;
	c->pk.pack_fd = pfd;
	c->pk.name = pname;
	c->pk.idx_name = copy;
	c->pk.budget = &ps->idx_bytes;
	c->pk.budget_max = ps->copy_max;
	c->pk.fbudget = &ps->filter_bytes;
	c->pk.fbudget_max = IDX_FILTER_MAX;
	return 0;
}

/* Free the loaded packs (but those moved elsewhere), the refused names, both arrays. */
static void cpack_dispose(struct cpack *c)
{
	amber_pack_dispose(&c->pk);
	close(c->pk.idx_fd);
	close(c->pk.pack_fd);
	free(c->name);
	free(c->pname);
}

static void ps_release(amber_packset *ps)
{
	for (size_t i = 0; i < ps->n; i++) {
		if (!ps->v[i].moved)
			cpack_dispose(&ps->v[i]);
	}
	for (size_t i = 0; i < ps->nbad; i++)
		free(ps->bad[i].name);
	free(ps->v);
	free(ps->bad);
}

/*
 * Make the set what `l` (sorted) lists: loaded packs still listed stay,
 * new ones are checked and loaded or refused, the rest are dropped.  After
 * an error the packs already loaded stay loaded.  Caller holds the lock
 * exclusively.
 */
static void ps_order(amber_packset *ps)
{
	for (size_t i = 0; i < ps->n; i++)
		ps->order[i] = i;
	qsort_r(ps->order, ps->n, sizeof(*ps->order), cmp_larger, ps->v);
}

static int ps_merge(amber_packset *ps, const struct names *l, const struct names *keeps)
{
	struct next x = {calloc(l->n + 1, sizeof(*x.v)), 0, calloc(l->n + 1, sizeof(*x.bad)), 0,
			 calloc(l->n + 1, sizeof(*x.order))};
	int rc = 0;

	if (!x.v || !x.bad || !x.order) {
		free(x.v);
		free(x.bad);
		free(x.order);
		return amber_fail(AMBER_ERROR, "out of memory scanning %s", ps->dir);
	}
	for (size_t i = 0; i < l->n; i++) {
		struct cpack *have = ps->n ? bsearch(l->v[i], ps->v, ps->n, sizeof(*ps->v),
						     cmp_cpack) : NULL;

		if (have) {
			x.v[x.n++] = *have;
			have->moved = 1;
		} else if (rc == 0) {
			rc = add_new(&x, ps, l->v[i]);
		}
	}
	ps_release(ps);	/* what is still there: packs whose index is gone */
	ps->v = x.v;
	ps->n = x.n;
	ps->bad = x.bad;
	ps->nbad = x.nbad;
	free(ps->order);
	ps->order = x.order;
	for (size_t i = 0; i < ps->n; i++)
		ps->v[i].keep = keeps->n && bsearch(&ps->v[i].name, keeps->v, keeps->n,
						    sizeof(*keeps->v), cmp_str);
	ps_order(ps);
	return rc;
}

static long long mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int amber_packset_scan(amber_packset *ps)
{
	struct names l = {0}, keeps = {0};
	int rc;

	atomic_store(&ps->scanned, mono_ns());
	atomic_fetch_add(&ps->listings, 1);
	rc = list_indexes(&l, &keeps, ps->dir);

	if (rc == 0) {
		pthread_rwlock_wrlock(&ps->lock);
		rc = ps_merge(ps, &l, &keeps);
		pthread_rwlock_unlock(&ps->lock);
	}
	names_dispose(&l);
	names_dispose(&keeps);
	return rc;
}

void amber_packset_set_budget(amber_packset *ps, size_t bytes)
{
	pthread_rwlock_wrlock(&ps->lock);
	ps->copy_max = bytes;
	pthread_rwlock_unlock(&ps->lock);
}

unsigned long long amber_packset_listings(amber_packset *ps)
{
	return atomic_load(&ps->listings);
}

/*
 * Put the one pack `name` into the set, as a scan that found it would,
 * without listing the directory: a writer's own new pack.  Caller holds
 * the lock exclusively.
 */
static int ps_insert(amber_packset *ps, const char *name)
{
	struct next x = {calloc(1, sizeof(*x.v)), 0, calloc(1, sizeof(*x.bad)), 0, NULL};
	struct cpack *v = NULL;
	struct refused *bad = NULL;
	size_t *order = NULL, at;
	int rc = x.v && x.bad ? add_new(&x, ps, name) : amber_fail(AMBER_ERROR, "out of memory");

	if (rc == 0 && x.n) {
		v = realloc(ps->v, (ps->n + 1) * sizeof(*v));
		order = v ? realloc(ps->order, (ps->n + 1) * sizeof(*order)) : NULL;
		if (v)
			ps->v = v;
		if (order)
			ps->order = order;
		if (!v || !order) {
			rc = amber_fail(AMBER_ERROR, "out of memory adding %s", name);
		} else {
			for (at = 0; at < ps->n && strcmp(ps->v[at].name, name) < 0; at++)
				;
			memmove(&ps->v[at + 1], &ps->v[at], (ps->n - at) * sizeof(*v));
			ps->v[at] = x.v[0];
			ps->n++;
			x.n = 0;
			ps_order(ps);
		}
	}
	if (rc == 0 && x.nbad) {
		bad = realloc(ps->bad, (ps->nbad + 1) * sizeof(*bad));
		if (!bad) {
			rc = amber_fail(AMBER_ERROR, "out of memory adding %s", name);
		} else {
			ps->bad = bad;
			for (at = 0; at < ps->nbad && strcmp(ps->bad[at].name, name) < 0; at++)
				;
			memmove(&ps->bad[at + 1], &ps->bad[at], (ps->nbad - at) * sizeof(*bad));
			ps->bad[at] = x.bad[0];
			ps->nbad++;
			x.nbad = 0;
		}
	}
	if (x.n)
		cpack_dispose(&x.v[0]);
	if (x.nbad)
		free(x.bad[0].name);
	free(x.v);
	free(x.bad);
	return rc;
}

int amber_packset_add(amber_packset *ps, const char *name)
{
	int rc = 0;

	pthread_rwlock_wrlock(&ps->lock);
	if (!(ps->n && bsearch(name, ps->v, ps->n, sizeof(*ps->v), cmp_cpack)) &&
	    !(ps->nbad && bsearch(name, ps->bad, ps->nbad, sizeof(*ps->bad), cmp_refused)))
		rc = ps_insert(ps, name);
	if (rc == 0 && ps->nbad && bsearch(name, ps->bad, ps->nbad, sizeof(*ps->bad), cmp_refused))
		rc = 1;
	pthread_rwlock_unlock(&ps->lock);
	return rc;
}

void amber_packset_drop(amber_packset *ps, const char *name)
{
	struct cpack *c;

	pthread_rwlock_wrlock(&ps->lock);
	c = ps->n ? bsearch(name, ps->v, ps->n, sizeof(*ps->v), cmp_cpack) : NULL;
	if (c) {
		size_t at = (size_t)(c - ps->v);

		cpack_dispose(c);
		memmove(&ps->v[at], &ps->v[at + 1], (ps->n - at - 1) * sizeof(*ps->v));
		ps->n--;
		ps_order(ps);
	}
	pthread_rwlock_unlock(&ps->lock);
}

int amber_packset_list(amber_store_pack **out, size_t *n_out, amber_packset *ps)
{
	amber_store_pack *v;

	pthread_rwlock_rdlock(&ps->lock);
	v = calloc(ps->n ? ps->n : 1, sizeof(*v));
	for (size_t i = 0; v && i < ps->n; i++) {
		const struct cpack *c = &ps->v[i];

		snprintf(v[i].name, sizeof(v[i].name), "%.*s", (int)strlen(c->name) - 4, c->name);
		v[i].pack_size = c->pk.pack_size;
		v[i].keep = c->keep;
		v[i].copied = atomic_load(&((struct cpack *)c)->pk.mem) != NULL;
		v[i].filtered = atomic_load(&((struct cpack *)c)->pk.filter) != NULL;
	}
	*n_out = v ? ps->n : 0;
	pthread_rwlock_unlock(&ps->lock);
	*out = v;
	return v ? 0 : amber_fail(AMBER_ERROR, "out of memory listing packs");
}

size_t amber_packset_refused(amber_packset *ps, char *name, size_t cap)
{
	size_t n;

	pthread_rwlock_rdlock(&ps->lock);
	n = ps->nbad;
	snprintf(name, cap, "%s", n ? ps->bad[0].name : "");
	pthread_rwlock_unlock(&ps->lock);
	return n;
}

/* Lookups -------------------------------------------------------------------- */

/*
 * A pack is asked only if its fan-out has objects with the id's first byte
 * (most packs a lookup skips are small, and hold no object starting with
 * that byte).  1 found (*off), 0 not, <0 error.
 */
static int find_in(uint64_t *off, const struct cpack *p, const uint8_t *oid)
{
	uint8_t first = oid[0];

	if (p->pk.fanout[first] == (first ? p->pk.fanout[first - 1] : 0))
		return 0;
	return amber_pack_find(off, &p->pk, oid);
}

/*
 * The pack holding oid: the one that answered last, then the others,
 * largest first.  A pack whose index fails for oid (a damaged offset) does
 * not hide a good copy in another pack: its error is returned only if no
 * pack has one.  Caller holds the lock shared.  1 found, 0 not, <0 error.
 */
static int locate(const struct cpack **out, uint64_t *off, amber_packset *ps, const uint8_t *oid)
{
	size_t n = ps->n, h = n ? atomic_load_explicit(&ps->hint, memory_order_relaxed) % n : 0;
	int r = n ? find_in(off, &ps->v[h], oid) : 0, err = r < 0 ? r : 0;

	if (r > 0) {
		*out = &ps->v[h];
		return r;
	}
	for (size_t k = 0; k < n; k++) {
		size_t i = ps->order[k];

		if (i == h || (r = find_in(off, &ps->v[i], oid)) == 0)
			continue;
		if (r < 0) {
			err = err ? err : r;
			continue;
		}
		atomic_store_explicit(&ps->hint, i, memory_order_relaxed);
		*out = &ps->v[i];
		return r;
	}
	return err;
}

/* A REF_DELTA's base, through the same set (the lock is already held). */
static int resolve_base(const amber_pack **pk, uint64_t *off, void *ctx, const uint8_t oid[20])
{
	const struct cpack *c;
	int r = locate(&c, off, ctx, oid);

	if (r > 0)
		*pk = &c->pk;
	return r;
}

/*
 * A reader that never misses (no new snapshot) would hold the packs a
 * consolidation removed for as long as it runs: so lookups and ref reads
 * also rescan, once a second at most (a readdir of objects/pack, and a
 * check of what is new).  One thread does it; a failure leaves the set as
 * it was.
 */
void amber_packset_rescan_due(amber_packset *ps)
{
	long long now = mono_ns(), last = atomic_load(&ps->scanned);

	if (now - last >= RESCAN_NS && atomic_compare_exchange_strong(&ps->scanned, &last, now))
		(void)amber_packset_scan(ps);
}

/* What a lookup does with the object it found: 0 or <0 (message set). */
typedef int (*found_fn)(amber_packset *ps, const struct cpack *c, uint64_t off, void *ctx);

/* Lookups this thread made since it last looked at the clock (any set). */
static _Thread_local unsigned since_clock;

/*
 * Every lookup of one object: a rescan if one is due (unless !rescan;
 * asked every RESCAN_EVERY lookups of a thread, so a reader that keeps
 * reading still lets go of removed packs a second after they went),
 * then, under the shared lock (no pack is dropped under `found`), the pack
 * holding oid, handed with its offset to `found` (NULL: nothing to do).
 * @return found's result; AMBER_ENOTFOUND if no loaded pack holds oid,
 *         with a message naming `what` (NULL: no message, the caller asks
 *         elsewhere); <0 if an index could not be read.
 */
static int lookup(amber_packset *ps, const uint8_t *oid, int rescan, const char *what,
		  found_fn found, void *ctx)
{
	const struct cpack *c = NULL;
	uint64_t off = 0;
	int r;

	if (rescan && ++since_clock >= RESCAN_EVERY) {
		since_clock = 0;
		amber_packset_rescan_due(ps);
	}
	pthread_rwlock_rdlock(&ps->lock);
	r = locate(&c, &off, ps, oid);
	if (r > 0)
		r = found ? found(ps, c, off, ctx) : 0;
	else if (r == 0)
		r = what ? amber_fail(AMBER_ENOTFOUND, "object %s not found", what)
			 : AMBER_ENOTFOUND;
	pthread_rwlock_unlock(&ps->lock);
	return r;
}

/* What amber_packset_read() and _header() were asked (read only: max, oid, alloc, ctx). */
struct obj_args {
	int *type;
	size_t *len;
	const char *what;
	size_t max;
	const uint8_t *oid;
	amber_pack_alloc_fn alloc;
	void *ctx;
};

static int read_found(amber_packset *ps, const struct cpack *c, uint64_t off, void *ctx)
{
	const struct obj_args *a = ctx;

	return amber_pack_read(a->type, a->len, &c->pk, off, a->max, a->what, a->oid, a->alloc,
			       a->ctx, resolve_base, ps);
}

int amber_packset_read(int *type_out, size_t *len_out, amber_packset *ps, const uint8_t oid[20],
		       size_t max, const char *what, amber_pack_alloc_fn alloc, void *ctx)
{
	struct obj_args a = {type_out, len_out, what, max, oid, alloc, ctx};

	return lookup(ps, oid, 1, what, read_found, &a);
}

static int header_found(amber_packset *ps, const struct cpack *c, uint64_t off, void *ctx)
{
	const struct obj_args *a = ctx;

	return amber_pack_header(a->type, a->len, &c->pk, off, a->what, resolve_base, ps);
}

int amber_packset_header(int *type_out, size_t *len_out, amber_packset *ps,
			 const uint8_t oid[20], const char *what)
{
	struct obj_args a = {.type = type_out, .len = len_out, .what = what};

	return lookup(ps, oid, 1, what, header_found, &a);
}

struct position_args {
	uint32_t *pack;
	uint64_t *off;
};

static int position_found(amber_packset *ps, const struct cpack *c, uint64_t off, void *ctx)
{
	const struct position_args *a = ctx;

	*a->pack = (uint32_t)(c - ps->v) + 1;
	*a->off = off;
	return 0;
}

/* No rescan: a batch's positions share one numbering of the packs, which a scan changes. */
int amber_packset_position(uint32_t *pack, uint64_t *off, amber_packset *ps,
			   const uint8_t oid[20])
{
	struct position_args a = {pack, off};

	return lookup(ps, oid, 0, NULL, position_found, &a) == 0;
}

/* The libgit2 backend ----------------------------------------------------------- */

static void hex_of(char hex[41], const git_oid *oid)
{
	git_oid_tostr(hex, 41, oid);
}

/* Our error as libgit2's: not found stays GIT_ENOTFOUND, the rest is an odb error. */
static int to_git(int rc)
{
	if (rc == AMBER_ENOTFOUND)
		return GIT_ENOTFOUND;
	git_error_set_str(GIT_ERROR_ODB, amber_error_last());
	return -1;
}

struct room {
	git_odb_backend *be;
	void *p;		/* what libgit2 will own, once the read succeeded */
};

static void *git_room(void *ctx, size_t len)
{
	struct room *r = ctx;

	return r->p = git_odb_backend_data_alloc(r->be, len ? len : 1);
}

/* What libgit2 reads itself (commits, trees, tags, walks, push): at most 1 GiB. */
static int ps_read(void **data, size_t *len, git_object_t *type, git_odb_backend *be,
		   const git_oid *oid)
{
	amber_packset *ps = (amber_packset *)be;
	struct room room = {be, NULL};
	char hex[41];
	int t = 0, r;

	hex_of(hex, oid);
	r = amber_packset_read(&t, len, ps, oid->id, GIT_READ_MAX, hex, git_room, &room);
	if (r < 0) {
		if (room.p)
			git_odb_backend_data_free(be, room.p);
		return to_git(r);
	}
	*data = room.p;
	*type = (git_object_t)t;
	return 0;
}

static int ps_read_header(size_t *len, git_object_t *type, git_odb_backend *be,
			  const git_oid *oid)
{
	char hex[41];
	int t = 0, r;
	struct obj_args a = {.type = &t, .len = len, .what = hex};

	hex_of(hex, oid);
	r = lookup((amber_packset *)be, oid->id, 1, NULL, header_found, &a);
	if (r < 0)
		return to_git(r);
	*type = (git_object_t)t;
	return 0;
}

static int ps_exists(git_odb_backend *be, const git_oid *oid)
{
	return lookup((amber_packset *)be, oid->id, 1, NULL, NULL, NULL) == 0;
}

/* Whether the first len hex digits of a and b agree. */
static int prefix_match(const uint8_t *a, const uint8_t *b, size_t len)
{
	size_t whole = len / 2;

	if (memcmp(a, b, whole) != 0)
		return 0;
	return len % 2 == 0 || (a[whole] & 0xf0) == (b[whole] & 0xf0);
}

/* The one object whose id starts with the first len hex digits of `key`. */
static int ps_exists_prefix(git_oid *out, git_odb_backend *be, const git_oid *key, size_t len)
{
	amber_packset *ps = (amber_packset *)be;
	uint8_t lo[20] = {0}, got[20];
	int err = 0, found = 0;

	if (len > 40)
		len = 40;
	memcpy(lo, key->id, (len + 1) / 2);
	if (len % 2)
		lo[len / 2] &= 0xf0;
	pthread_rwlock_rdlock(&ps->lock);
	for (size_t i = 0; i < ps->n && err == 0; i++) {
		const amber_pack *pk = &ps->v[i].pk;
		uint32_t pos;
		int rc = amber_pack_lower_bound(&pos, pk, lo);

		/* the object at pos and the one after it: a second match is ambiguous */
		for (int k = 0; rc == 0 && k < 2 && pos + k < pk->n; k++) {
			if ((rc = amber_pack_oid_at(got, pk, pos + k)) < 0 ||
			    !prefix_match(got, lo, len))
				break;
			if (found && memcmp(got, out->id, 20) != 0) {
				git_error_set_str(GIT_ERROR_ODB, "multiple matches for prefix");
				err = GIT_EAMBIGUOUS;
				break;
			}
			git_oid_fromraw(out, got);
			found = 1;
		}
		if (rc < 0)
			err = to_git(rc);
	}
	pthread_rwlock_unlock(&ps->lock);
	if (err == 0 && !found) {
		git_error_set_str(GIT_ERROR_ODB, "no matching pack entry for prefix");
		err = GIT_ENOTFOUND;
	}
	return err;
}

static int ps_read_prefix(git_oid *out, void **data, size_t *len, git_object_t *type,
			  git_odb_backend *be, const git_oid *key, size_t keylen)
{
	git_oid full;
	int err = ps_exists_prefix(&full, be, key, keylen);

	if (err == 0)
		err = ps_read(data, len, type, be, &full);
	if (err == 0)
		git_oid_cpy(out, &full);
	return err;
}

#define FOREACH_BATCH 1024

static int ps_foreach(git_odb_backend *be, git_odb_foreach_cb cb, void *payload)
{
	amber_packset *ps = (amber_packset *)be;
	uint8_t *names = malloc(20 * FOREACH_BATCH);
	int err = names ? 0 : -1;
	git_oid id;

	if (!names)
		git_error_set_oom();
	pthread_rwlock_rdlock(&ps->lock);
	for (size_t i = 0; i < ps->n && err == 0; i++) {
		const amber_pack *pk = &ps->v[i].pk;

		for (uint32_t at = 0; at < pk->n && err == 0; at += FOREACH_BATCH) {
			uint32_t k = pk->n - at < FOREACH_BATCH ? pk->n - at : FOREACH_BATCH;

			if (pread(pk->idx_fd, names, 20 * (size_t)k, IDX_HEAD + 20 * (off_t)at) !=
			    (ssize_t)(20 * (size_t)k)) {
				git_error_set(GIT_ERROR_ODB, "cannot read the index of %s", pk->name);
				err = -1;
				break;
			}
			for (uint32_t j = 0; j < k && err == 0; j++) {
				git_oid_fromraw(&id, names + 20 * j);
				err = cb(&id, payload);
			}
		}
	}
	pthread_rwlock_unlock(&ps->lock);
	free(names);
	return err;
}

/* The odb's refresh, on a missed lookup or git_odb_refresh(): our scan. */
static int ps_refresh(git_odb_backend *be)
{
	if (amber_packset_scan((amber_packset *)be) < 0) {
		git_error_set_str(GIT_ERROR_ODB, amber_error_last());
		return -1;
	}
	return 0;
}

static void ps_free(git_odb_backend *be)
{
	amber_packset *ps = (amber_packset *)be;

	ps_release(ps);
	free(ps->order);
	pthread_rwlock_destroy(&ps->lock);
	free(ps->dir);
	free(ps);
}

static int ps_new(amber_packset **out, const char *objects)
{
	amber_packset *ps = calloc(1, sizeof(*ps));

	if (!ps || !(ps->dir = path_join(objects, "pack"))) {
		free(ps);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	git_odb_init_backend(&ps->parent, GIT_ODB_BACKEND_VERSION);
	ps->parent.read = ps_read;
	ps->parent.read_prefix = ps_read_prefix;
	ps->parent.read_header = ps_read_header;
	ps->parent.exists = ps_exists;
	ps->parent.exists_prefix = ps_exists_prefix;
	ps->parent.refresh = ps_refresh;
	ps->parent.foreach = ps_foreach;
	ps->parent.free = ps_free;
	pthread_rwlock_init(&ps->lock, NULL);
	ps->copy_max = IDX_COPY_MAX;
	*out = ps;
	return 0;
}

/* Opening --------------------------------------------------------------------- */

static int odb_fail(const char *what, const char *dir)
{
	const git_error *e = git_error_last();

	return amber_fail(AMBER_ERROR, "%s: %s: %s", dir, what,
			  e && e->message ? e->message : "unknown libgit2 error");
}

int amber_odb_open(git_odb **out, amber_packset **set_out, const char *gitdir)
{
	git_odb *odb = NULL;
	git_odb_backend *loose = NULL;
	amber_packset *ps = NULL;
	char *objects = path_join(gitdir, "objects");
	int rc = objects ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	*out = NULL;
	*set_out = NULL;
	if (rc == 0 && git_odb_new(&odb) < 0)
		rc = odb_fail("cannot create an object database", gitdir);
	if (rc == 0 && git_odb_backend_loose(&loose, objects, -1, 0, 0, 0) < 0)
		rc = odb_fail("cannot open loose objects", objects);
	if (rc == 0 && git_odb_add_backend(odb, loose, LOOSE_PRIORITY) < 0) {
		loose->free(loose);
		rc = odb_fail("cannot open loose objects", objects);
	}
	if (rc == 0)
		rc = ps_new(&ps, objects);
	if (rc == 0 && git_odb_add_backend(odb, &ps->parent, PACKED_PRIORITY) < 0) {
		ps_free(&ps->parent);
		rc = odb_fail("cannot open packs", objects);
	}
	if (rc == 0)
		rc = amber_packset_scan(ps);
	free(objects);
	if (rc < 0) {
		git_odb_free(odb);
		return rc;
	}
	*out = odb;
	*set_out = ps;
	return 0;
}
