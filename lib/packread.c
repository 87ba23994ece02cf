/*
 * Reading git pack files with pread and zlib.
 *
 * libgit2 reads packs through mmap windows: a pack truncated under a
 * running reader then kills it with SIGBUS, and libgit2 1.5.1 holds the
 * odb's mutex across every read, so a mount decodes one object at a time.
 * Here every byte comes from pread on descriptors the caller keeps open: a
 * removed pack stays readable, a truncated one gives a short read, which
 * is an error naming the pack and the offset.  Nothing is shared between
 * threads but the read-only amber_pack, so any number of them read at
 * once; while a directory decodes, a thread keeps its last runs of a
 * pack's bytes (see first_read()).
 *
 * Index (version 2): magic, version, fan-out[256], then n names (20 B),
 * n crc32s, n 32-bit offsets (high bit: index into the 64-bit table), the
 * 64-bit table, two checksums.  The fan-out is kept in memory (the caller
 * read it); a lookup reads the names around where the id should be with
 * pread (see search()).
 *
 * Entries: type and size varint, then for OFS_DELTA a relative offset and
 * for REF_DELTA the base's id, then a zlib stream that must inflate to
 * exactly the declared size (a stream that ends early or would go on is
 * corrupt).  amberfs writes no deltas, but `git repack` on a mirror does;
 * a chain is followed to its base (at most AMBER_PACK_MAX_DEPTH links, so
 * a cycle through REF_DELTA ends too) and the deltas applied outward,
 * every copy and insert checked (patch-delta.c's format).  Sizes are
 * bounded before anything is allocated: the object's by the caller's
 * limit, a base's by that or AMBER_PACK_BASE_MIN_MAX, a delta's by twice
 * the size it may produce (git's deltas are at most a little larger than
 * their target).
 *
 * Hashes: an entry stored whole is returned as inflated (strict hash
 * checking is off in the store: the AEAD, or a plain archive's link macs,
 * authenticate what is read, and verify hashes every object).  An object
 * rebuilt from deltas is hashed and compared with its id: amberfs writes
 * no deltas, so this costs nothing on its own archives, and a delta
 * against a base found by id must not turn one object into another.
 */
#include "packread.h"

#include "error.h"
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <zlib.h>

#define IDX_HEAD (8 + 256 * 4)
#define WINDOW 128		/* names read in one pread (2.5 KiB) */
#define READ_MAX ((size_t)1 << 20)	/* largest pread of compressed bytes */
#define ENTRY_HEAD 32		/* type/size varint + base offset or id fit */
#define FIRST_READ 4096		/* read at an object's offset: small ones whole */

enum { OBJ_OFS_DELTA = 6, OBJ_REF_DELTA = 7 };

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Bytes read (short only at end of file), or -1 with errno. */
static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

uint32_t amber_pack_copy_after(const amber_pack *p)
{
	size_t n = p->mem_len / AMBER_IDX_COPY_BYTES;

	return n < AMBER_IDX_COPY_AFTER ? (uint32_t)n : AMBER_IDX_COPY_AFTER;
}

/*
 * Copy the whole index into memory, once, if the budget has room: lookups
 * then read no file.  Not at the first lookup: a command that looks up a
 * few dozen objects (log -n 20, cat, a mount's first answers) would pay
 * for reading the whole index (two indexes of 15 MiB at 300,000 snapshots:
 * 0.12 s of a 0.16 s `log -n 20`, and their 30 MiB resident) where two
 * preads a lookup cost microseconds.  After as many lookups as the copy
 * costs (one per AMBER_IDX_COPY_BYTES of index: 11 for the 190 KiB index of
 * a 5,000-file tree, whose first directory walk makes thousands of them;
 * AMBER_IDX_COPY_AFTER at most) the walk is long enough for the copy to
 * pay.  A thread that finds it loading (or given up) reads
 * by pread meanwhile.  The copy is of the file as it is now; an index
 * rewritten since it was checked gives the same errors either way (an
 * offset outside the pack is a short read).
 */
/*
 * The filter is a blocked Bloom filter: an id's FILTER_PROBES bits all lie
 * in one 64-bit word, chosen by the id's leading bits, so that building
 * it from an index (whose names are sorted) writes its words in order:
 * probes scattered over a MiB bitmap cost a cache miss each, 60 ms for a
 * 600,000-object index, more than the reads the filter spares a writer
 * in hundreds of snapshots.  The bits in the word come from a hash of the
 * whole id (ids that differ in one bit, as a hostile index may hold, fall
 * apart there; ids that are not uniform only make the filter say "maybe"
 * more often, never "absent" for a name it holds).
 */
static uint64_t filter_hash(const uint8_t *id)
{
	uint64_t w[3] = {0}, h;

	memcpy(w, id, 20);
	h = (w[0] ^ (w[1] * 0x9e3779b97f4a7c15ull) ^ (w[2] * 0xc2b2ae3d27d4eb4full));
	h ^= h >> 31;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 29;
	return h;
}

#define FILTER_PROBES 4
#define FILTER_BATCH 4096u	/* names read in one pread when building a filter */

/* The word of a filter of 2^shift words that id lies in, and its bits there. */
static uint64_t filter_bits(const uint8_t *id, uint64_t *word, unsigned shift)
{
	uint64_t lead = 0, h = filter_hash(id), bits = 0;

	for (int i = 0; i < 8; i++)
		lead = lead << 8 | id[i];
	*word = shift ? lead >> (64 - shift) : 0;
	for (int j = 0; j < FILTER_PROBES; j++)
		bits |= (uint64_t)1 << ((h >> (6 * j)) & 63);
	return bits;
}

/* Bytes of p's filter: a power of two, at least a byte (8 bits) an object. */
static size_t filter_bytes(const amber_pack *p)
{
	size_t bytes = 8;

	while (bytes < p->n && bytes < ((size_t)1 << 30))
		bytes *= 2;
	return bytes;
}

/*
 * Build p's filter from every name of its index (read by pread, in
 * batches).  A false "absent" is impossible: every name read sets its bits.
 */
static void filter_build(amber_pack *p)
{
	size_t bytes = filter_bytes(p);
	uint64_t *f = NULL, word, bits;
	uint8_t *names = NULL;
	unsigned shift = 0;

	while (((size_t)8 << shift) < bytes)
		shift++;

	if (atomic_fetch_add(p->fbudget, bytes) + bytes > p->fbudget_max)
		goto fail;
	if (!(f = calloc(bytes / 8, 8)) || !(names = malloc(20 * (size_t)FILTER_BATCH)))
		goto fail;
	for (uint32_t at = 0; at < p->n; at += FILTER_BATCH) {
		uint32_t k = p->n - at < FILTER_BATCH ? p->n - at : FILTER_BATCH;

		if (pread_full(p->idx_fd, names, 20 * (size_t)k, IDX_HEAD + 20 * (uint64_t)at) !=
		    (ssize_t)(20 * (size_t)k))
			goto fail;
		for (uint32_t i = 0; i < k; i++) {
			bits = filter_bits(names + 20 * (size_t)i, &word, shift);
			f[word] |= bits;
		}
	}
	free(names);
	p->filter_shift = shift;
	atomic_store_explicit(&p->filter, f, memory_order_release);
	return;
fail:
	free(names);
	free(f);
	atomic_fetch_sub(p->fbudget, bytes);
}

/* 1 if p's filter says it cannot hold id (no filter: 0). */
static int filter_absent(const amber_pack *p, const uint8_t id[20])
{
	const uint64_t *f = atomic_load_explicit(&((amber_pack *)p)->filter, memory_order_acquire);
	uint64_t word, bits;

	if (!f)
		return 0;
	bits = filter_bits(id, &word, p->filter_shift);
	return (f[word] & bits) != bits;
}

/*
 * A lookup of an id p does not hold, answered by pread: once an index
 * that is not copied has answered as many as a copy would have waited for
 * (amber_pack_copy_after(): one per 16 KiB of index, the cost of reading
 * its names once), it gets its filter, and misses read nothing after.
 * Hits do not count: a filter does not spare them a read.
 */
static void miss_by_pread(amber_pack *p)
{
	if (!p->fbudget || p->n < AMBER_IDX_FILTER_MIN ||
	    atomic_load_explicit(&p->filter, memory_order_relaxed) ||
	    atomic_fetch_add_explicit(&p->misses, 1, memory_order_relaxed) + 1 !=
		    amber_pack_copy_after(p))
		return;
	filter_build(p);
}

static void idx_load(amber_pack *p)
{
	int no = 0;
	uint8_t *m;

	if (!p->budget || p->mem_len == 0 ||
	    atomic_fetch_add_explicit(&p->lookups, 1, memory_order_relaxed) <
		    amber_pack_copy_after(p) ||
	    !atomic_compare_exchange_strong(&p->mem_tried, &no, 1))
		return;
	if (atomic_fetch_add(p->budget, p->mem_len) + p->mem_len > p->budget_max) {
		atomic_fetch_sub(p->budget, p->mem_len);
		return;
	}
	if (!(m = malloc(p->mem_len)) || pread_full(p->idx_fd, m, p->mem_len, 0) !=
	    (ssize_t)p->mem_len) {
		free(m);
		atomic_fetch_sub(p->budget, p->mem_len);
		return;
	}
	atomic_store_explicit(&p->mem, m, memory_order_release);
}

void amber_pack_dispose(amber_pack *p)
{
	uint8_t *m = atomic_exchange(&p->mem, NULL);
	uint64_t *f = atomic_exchange(&p->filter, NULL);

	if (m) {
		free(m);
		atomic_fetch_sub(p->budget, p->mem_len);
	}
	if (f) {
		free(f);
		atomic_fetch_sub(p->fbudget, filter_bytes(p));
	}
}

static int idx_read(const amber_pack *p, void *buf, size_t n, uint64_t off)
{
	const uint8_t *m = atomic_load_explicit(&((amber_pack *)p)->mem, memory_order_acquire);
	ssize_t r;

	if (m && off <= p->mem_len && n <= p->mem_len - off) {
		memcpy(buf, m + off, n);
		return 0;
	}
	atomic_fetch_add_explicit(&((amber_pack *)p)->idx_reads, 1, memory_order_relaxed);
	r = pread_full(p->idx_fd, buf, n, off);

	if (r < 0)
		return amber_fail_errno("cannot read the index of %s", p->name);
	if ((size_t)r != n)
		return amber_fail(AMBER_ECORRUPT, "the index of %s is truncated (it changed after "
				  "it was checked); reopen the archive", p->name);
	return 0;
}

static atomic_ullong pack_serials;     /* amber_pack.serial: the last one given */

void amber_pack_setup(amber_pack *p, const uint8_t *head, uint64_t idx_size,
		      uint64_t pack_size)
{
	for (int i = 0; i < 256; i++)
		p->fanout[i] = get_be32(head + 8 + 4 * i);
	p->n = p->fanout[255];
	p->nbig = (idx_size - (IDX_HEAD + 28 * (uint64_t)p->n + 40)) / 8;
	p->mem_len = idx_size < SIZE_MAX ? (size_t)idx_size : 0;
	p->pack_size = pack_size;
	p->serial = atomic_fetch_add(&pack_serials, 1) + 1;
}

/* An offset of the index that cannot be an entry of the pack: the index is damaged. */
static int bad_offset(const amber_pack *p, uint32_t pos, uint64_t off, const char *why)
{
	return amber_fail(AMBER_ECORRUPT, "%s is damaged (object %u's offset %llu %s): rebuild it "
			  "with 'git index-pack' from %s, or copy it from a replica",
			  p->idx_name ? p->idx_name : "the index", pos, (unsigned long long)off,
			  why, p->name);
}

/* The names of objects whose first byte is b: [*lo, *hi). */
static int bucket(uint32_t *lo, uint32_t *hi, const amber_pack *p, uint8_t b)
{
	*lo = b ? p->fanout[b - 1] : 0;
	*hi = p->fanout[b];
	if (*lo > *hi || *hi > p->n)
		return amber_fail(AMBER_ECORRUPT, "the index of %s has a bad fan-out table",
				  p->name);
	return 0;
}

/* The first of names[0..n) >= key, n if none. */
static uint32_t scan(const uint8_t *names, uint32_t n, const uint8_t key[20], int *exact)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (memcmp(names + 20 * (size_t)mid, key, 20) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*exact = lo < n && memcmp(names + 20 * (size_t)lo, key, 20) == 0;
	return lo;
}

/*
 * The first name >= key in key's bucket: *pos (the bucket's end if none),
 * *exact whether it is key.  Object ids are uniform, so the bytes after
 * the first say where in the bucket the key falls: one read of WINDOW
 * names around that guess nearly always holds the answer (a lookup is two
 * preads: names, then the offset); when it does not, a binary search by
 * pread narrows the rest down to WINDOW names.
 */
static int search(uint32_t *pos, int *exact, const amber_pack *p, const uint8_t key[20])
{
	uint8_t names[WINDOW * 20];
	uint32_t lo, hi, w;
	int rc = bucket(&lo, &hi, p, key[0]);

	if (rc == 0 && hi - lo > WINDOW) {
		uint64_t guess = lo + ((uint64_t)(hi - lo) * get_be32(key + 1) >> 32);
		uint32_t wlo = guess > lo + WINDOW / 2 ? (uint32_t)guess - WINDOW / 2 : lo;

		if (wlo > hi - WINDOW)
			wlo = hi - WINDOW;
		rc = idx_read(p, names, sizeof(names), IDX_HEAD + 20 * (uint64_t)wlo);
		if (rc < 0)
			return rc;
		if (wlo > lo && memcmp(names, key, 20) >= 0) {
			hi = wlo + 1;		/* names[wlo] >= key: the answer is <= wlo */
		} else if (wlo + WINDOW < hi &&
			   memcmp(names + 20 * (WINDOW - 1), key, 20) < 0) {
			lo = wlo + WINDOW;	/* all of them < key */
		} else {
			w = scan(names, WINDOW, key, exact);
			*pos = wlo + w;		/* w == WINDOW only when wlo + WINDOW == hi */
			return 0;
		}
	}
	while (rc == 0 && hi - lo > WINDOW) {
		uint32_t mid = lo + (hi - lo) / 2;

		rc = idx_read(p, names, 20, IDX_HEAD + 20 * (uint64_t)mid);
		if (rc == 0 && memcmp(names, key, 20) < 0)
			lo = mid + 1;
		else
			hi = mid + 1;	/* names[mid] >= key: the answer is <= mid */
	}
	if (rc == 0 && hi > lo)
		rc = idx_read(p, names, 20 * (size_t)(hi - lo), IDX_HEAD + 20 * (uint64_t)lo);
	if (rc < 0)
		return rc;
	w = scan(names, hi - lo, key, exact);
	*pos = lo + w;
	return 0;
}

int amber_pack_lower_bound(uint32_t *pos, const amber_pack *p, const uint8_t key[20])
{
	int exact;

	return search(pos, &exact, p, key);
}

int amber_pack_oid_at(uint8_t oid[20], const amber_pack *p, uint32_t i)
{
	return idx_read(p, oid, 20, IDX_HEAD + 20 * (uint64_t)i);
}

int amber_pack_find(uint64_t *off, const amber_pack *p, const uint8_t oid[20])
{
	uint8_t b[8];
	uint32_t pos;
	uint64_t o;
	int exact, rc;

	if (!atomic_load_explicit(&((amber_pack *)p)->mem_tried, memory_order_relaxed))
		idx_load((amber_pack *)p);
	if (filter_absent(p, oid))
		return 0;
	rc = search(&pos, &exact, p, oid);

	if (rc == 0 && !exact && !atomic_load_explicit(&((amber_pack *)p)->mem,
						       memory_order_relaxed))
		miss_by_pread((amber_pack *)p);
	if (rc < 0 || !exact)
		return rc;
	if ((rc = idx_read(p, b, 4, IDX_HEAD + 24 * (uint64_t)p->n + 4 * (uint64_t)pos)) < 0)
		return rc;
	o = get_be32(b);
	if (o & 0x80000000u) {
		o &= 0x7fffffffu;
		if (o >= p->nbig)
			return bad_offset(p, pos, o, "names no entry of its 64-bit table");
		if ((rc = idx_read(p, b, 8, IDX_HEAD + 28 * (uint64_t)p->n + 8 * o)) < 0)
			return rc;
		o = (uint64_t)get_be32(b) << 32 | get_be32(b + 4);
	}
	/* the pack's 12-byte header before, its 20-byte checksum after */
	if (o < 12 || p->pack_size < 32 || o >= p->pack_size - 20)
		return bad_offset(p, pos, o, "lies outside its pack");
	*off = o;
	return 1;
}

/* Entries ------------------------------------------------------------------- */

struct entry {
	const amber_pack *p;
	uint64_t off;		/* where the entry starts */
	uint64_t data;		/* where its zlib stream starts */
	int type;		/* 1-4, OBJ_OFS_DELTA or OBJ_REF_DELTA */
	uint64_t size;		/* inflated size */
	uint64_t base;		/* OFS_DELTA: the base's offset */
	uint8_t base_id[20];	/* REF_DELTA: the base's id */
	const uint8_t *pre;	/* the stream's first pre_len bytes, read with the header */
	size_t pre_len;
};

static int entry_fail(const struct entry *e, const char *what, const char *why)
{
	return amber_fail(AMBER_ECORRUPT, "object %s: %s, entry at offset %llu: %s", what,
			  e->p->name, (unsigned long long)e->off, why);
}

/*
 * An object's first read (cap bytes at off; short only at the end of the
 * pack).  Between amber_store_runs_begin() and _end() (a directory's
 * decoding) it goes through the thread's spans, the last two runs of a
 * pack's bytes read there.  A directory's listing objects (bucket trees
 * and manifests, a few hundred bytes to a few KiB each) lie one after
 * another in the pack, its fan-out nodes in another run, and reading each
 * object with a pread of its own made ~4,700 system calls for the first
 * walk of a 20k-entry directory (~150 with spans).  So a read inside a
 * span is a copy; one just around a span (within SPAN_BACK of either end:
 * a manifest lies just before the tree read first) reads SPAN bytes there
 * at once; any other (past a large object, a random lookup) reads only
 * cap bytes, as outside, into the span used least recently.  The spans
 * are dropped at the end: a span holds the pack as it was when read, and
 * a pack damaged since must read as damaged by the next command or
 * listing.  What is read is checked after either way (AEAD, link macs,
 * ids).  Spans are keyed by the pack's serial, never by its descriptor or
 * address, which a later pack may reuse.
 */
#define SPAN ((size_t)64 << 10)
#define SPAN_BACK ((size_t)4 << 10)

struct span {
	unsigned long long serial;      /* of the pack; 0: empty */
	uint64_t off;
	size_t len;                     /* less than asked only at the end of the pack */
	size_t asked;
	uint8_t data[SPAN];
};

struct spans {
	struct span s[2];
	unsigned last;                  /* the one used last */
};

_Static_assert(sizeof(struct spans) <= AMBER_READER_THREAD_BYTES,
	       "a thread's spans are more than amber_read.h says");

static _Thread_local unsigned span_depth;      /* amber_store_runs_begin() calls open */
static pthread_key_t span_key;
static pthread_once_t span_once = PTHREAD_ONCE_INIT;
static int span_ok;

static void span_key_init(void)
{
	span_ok = pthread_key_create(&span_key, free) == 0;
}

static struct spans *spans_get(void)
{
	struct spans *t;

	pthread_once(&span_once, span_key_init);
	if (!span_ok)
		return NULL;
	if ((t = pthread_getspecific(span_key)) == NULL && (t = calloc(1, sizeof(*t))) != NULL &&
	    pthread_setspecific(span_key, t) != 0) {
		free(t);
		t = NULL;
	}
	return t;
}

/* Whether span s holds cap bytes at off (or all the pack has from there). */
static int span_has(const struct span *s, const amber_pack *p, uint64_t off, size_t cap)
{
	return s->serial == p->serial && off >= s->off && off - s->off < s->len &&
	       (s->len - (off - s->off) >= cap || s->len < s->asked);
}

/* Whether off lies just around span s (a large object's next neighbour does not). */
static int span_near(const struct span *s, const amber_pack *p, uint64_t off)
{
	return s->serial == p->serial && off + SPAN_BACK >= s->off &&
	       off <= s->off + s->len + SPAN_BACK;
}

/* (counted on the read-only pack as idx_reads are: statistics only) */
static void counted_read(const amber_pack *p, size_t n)
{
	atomic_fetch_add_explicit(&((amber_pack *)p)->pack_reads, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&((amber_pack *)p)->pack_read_bytes, n, memory_order_relaxed);
}

void amber_store_runs_begin(void)
{
	span_depth++;
}

void amber_store_runs_end(void)
{
	struct spans *t;

	if (span_depth == 0 || --span_depth > 0)
		return;
	if (span_ok && (t = pthread_getspecific(span_key)) != NULL)
		t->s[0].serial = t->s[1].serial = 0;
}

static ssize_t first_read(const amber_pack *p, uint8_t *buf, size_t cap, uint64_t off)
{
	struct spans *t = span_depth && p->serial && cap + SPAN_BACK <= SPAN ? spans_get() : NULL;
	struct span *s;
	uint64_t start = off;
	size_t want = cap, n;
	ssize_t r;
	unsigned i;

	if (!t) {
		counted_read(p, cap);
		return pread_full(p->pack_fd, buf, cap, off);
	}
	for (i = 0; i < 2 && !span_has(&t->s[i], p, off, cap); i++)
		;
	if (i == 2) {
		for (i = 0; i < 2 && !span_near(&t->s[i], p, off); i++)
			;
		if (i < 2) {
			start = off >= SPAN_BACK + 12 ? off - SPAN_BACK : off;
			want = SPAN;
		} else {
			i = t->last ^ 1;
		}
		s = &t->s[i];
		s->serial = 0;
		counted_read(p, want);
		if ((r = pread_full(p->pack_fd, s->data, want, start)) < 0)
			return r;
		s->serial = p->serial;
		s->off = start;
		s->len = (size_t)r;
		s->asked = want;
	}
	t->last = i;
	s = &t->s[i];
	if (off - s->off >= s->len)
		return 0;
	n = s->len - (size_t)(off - s->off);
	n = n < cap ? n : cap;
	memcpy(buf, s->data + (off - s->off), n);
	return (ssize_t)n;
}

/*
 * Parse the entry at off.  With buf (cap >= ENTRY_HEAD bytes) the first cap
 * bytes are read into it and what follows the header is kept for
 * entry_inflate: a small object then takes one read, header and all
 * (first_read()).
 */
static int entry_parse(struct entry *e, const amber_pack *p, uint64_t off, const char *what,
		       uint8_t *buf, size_t cap)
{
	uint8_t local[ENTRY_HEAD], *h = buf ? buf : local;
	ssize_t r;
	size_t i = 0;
	unsigned shift = 4;
	uint8_t c;

	*e = (struct entry){.p = p, .off = off};
	if (off < 12)
		return entry_fail(e, what, "offset inside the pack header");
	r = buf ? first_read(p, h, cap, off) : pread_full(p->pack_fd, h, sizeof(local), off);
	if (r < 0)
		return amber_fail_errno("object %s: cannot read %s at offset %llu", what, p->name,
					(unsigned long long)off);
	if (r == 0)
		return entry_fail(e, what, "the pack ends before it (truncated)");
	c = h[i++];
	e->type = c >> 4 & 7;
	e->size = c & 15;
	while (c & 0x80) {
		if (i >= (size_t)r || shift > 57)
			return entry_fail(e, what, i >= (size_t)r ? "truncated header"
					  : "size field too long");
		c = h[i++];
		e->size |= (uint64_t)(c & 0x7f) << shift;
		shift += 7;
	}
	if (e->type == OBJ_OFS_DELTA) {
		uint64_t rel;

		if (i >= (size_t)r)
			return entry_fail(e, what, "truncated header");
		c = h[i++];
		rel = c & 0x7f;
		while (c & 0x80) {
			if (i >= (size_t)r || rel >= (uint64_t)1 << 56)
				return entry_fail(e, what, "bad delta base offset");
			c = h[i++];
			rel = ((rel + 1) << 7) | (c & 0x7f);
		}
		if (rel == 0 || rel > off - 12)
			return entry_fail(e, what, "delta base offset outside the pack");
		e->base = off - rel;
	} else if (e->type == OBJ_REF_DELTA) {
		if (i + 20 > (size_t)r)
			return entry_fail(e, what, "truncated header");
		memcpy(e->base_id, h + i, 20);
		i += 20;
	} else if (e->type < 1 || e->type > 4) {
		return entry_fail(e, what, "unknown object type");
	}
	e->data = off + i;
	if (buf) {
		e->pre = h + i;
		e->pre_len = (size_t)r - i;
	}
	return 0;
}

/*
 * The stream as amberfs writes it (store.c): 78 01, blocks of exactly
 * 65,535 bytes but the last, each after its 5-byte head, the adler32.  One
 * preadv puts the data straight into dst (no copy through a buffer, which
 * cost a tenth of a cold read's CPU) and the rest into `meta`; each head is
 * then checked as stored_copy checks it, and the checksum.  1 if dst holds
 * the object; 0 if the stream is laid out otherwise (git's, a short read):
 * the caller reads it again the general way, which names any defect.
 */
#define DIRECT_BLOCKS 48	/* 3 MiB: any chunk (AMBER_CHUNK_MAX) in its frame */

static int stored_direct(const struct entry *e, uint8_t *dst, size_t len)
{
	size_t nb = len ? (len + 65534) / 65535 : 1, need = 2 + 5 * nb + len + 4, out = 0;
	uint8_t meta[2 + 5 * DIRECT_BLOCKS + 4], *m = meta;
	struct iovec iov[2 * DIRECT_BLOCKS + 1];
	int niov = 0;
	ssize_t r;

	if (nb > DIRECT_BLOCKS)
		return 0;
	for (size_t k = 0; k < nb; k++) {
		size_t n = len - out < 65535 ? len - out : 65535, hl = k ? 5 : 7;

		iov[niov++] = (struct iovec){m, hl};
		m += hl;
		if (n)
			iov[niov++] = (struct iovec){dst + out, n};
		out += n;
	}
	iov[niov++] = (struct iovec){m, 4};
	do
		r = preadv(e->p->pack_fd, iov, niov, (off_t)e->data);
	while (r < 0 && errno == EINTR);
	if (r != (ssize_t)need || meta[0] != 0x78 || meta[1] != 0x01)
		return 0;
	out = 0;
	m = meta + 2;
	for (size_t k = 0; k < nb; k++, m += 5) {
		size_t n = len - out < 65535 ? len - out : 65535;

		if (m[0] != (k + 1 == nb) || ((size_t)m[1] | (size_t)m[2] << 8) != n ||
		    ((size_t)m[3] | (size_t)m[4] << 8) != (~n & 0xffff))
			return 0;
		out += n;
	}
	return adler32_z(1, dst, len) == get_be32(m);
}

/*
 * amberfs writes its entries as zlib streams of stored blocks (its payload
 * is ciphertext: the archive sets pack compression 0).  Such a stream is
 * copied out here and its Adler-32 checked, without starting zlib, whose
 * state (several KiB, allocated and freed per object) cost more than the
 * copy: a directory's first listing reads two small objects a bucket.
 * Anything else (deflated blocks, smaller blocks than git writes, any
 * inconsistency) is left to zlib, which decides and names the error: the
 * bytes accepted here are exactly those zlib would produce.
 * Returns 1 when dst holds the object's len bytes, 0 to use zlib.
 */
static int stored_copy(const struct entry *e, uint8_t *dst, size_t len)
{
	/* header, blocks of at most 65,535 bytes with 5-byte heads, checksum */
	size_t need = 2 + 5 * (len / 65535 + 1) + len + 4, have = e->pre_len, i = 2, out = 0;
	const uint8_t *s = e->pre;
	uint8_t *own = NULL;
	int last = 0, ok = 0;

	if (have < need && stored_direct(e, dst, len))
		return 1;
	if (len > READ_MAX)
		return 0;       /* zlib streams it in pieces */
	if (have < need) {
		if (!(own = malloc(need)) ||
		    pread_full(e->p->pack_fd, own, need, e->data) != (ssize_t)need)
			goto done;
		s = own;
		have = need;
	}
	if ((s[0] & 0x0f) != 8 || s[0] >> 4 > 7 || (s[1] & 0x20) || ((unsigned)s[0] << 8 | s[1]) % 31)
		goto done;
	while (!last) {
		size_t n;

		if (i + 5 > have || (s[i] & 6))         /* not a stored block */
			goto done;
		last = s[i] & 1;
		n = (size_t)s[i + 1] | (size_t)s[i + 2] << 8;
		if ((n ^ ((size_t)s[i + 3] | (size_t)s[i + 4] << 8)) != 0xffff || n > len - out ||
		    n > have - i - 5)
			goto done;
		memcpy(dst + out, s + i + 5, n);
		out += n;
		i += 5 + n;
	}
	ok = out == len && i + 4 <= have &&
	     adler32_z(1, dst, len) == get_be32(s + i);
done:
	free(own);
	return ok;
}

/*
 * Inflate e's stream into dst.  exact: it must produce exactly len bytes
 * and end there; otherwise stop after len bytes (a header peek).
 */
static int entry_inflate(const struct entry *e, uint8_t *dst, size_t len, int exact,
			 const char *what)
{
	/* stored blocks (amberfs's entries) take 5 bytes a 64 KiB, zlib 6 more */
	size_t cap = len < READ_MAX / 2 ? len + len / 8192 + 64 : READ_MAX;
	uint8_t *in = NULL, extra;
	uint64_t pos = e->data + e->pre_len;
	z_stream z;
	int zr, rc = 0;

	if (exact && stored_copy(e, dst, len))
		return 0;
	memset(&z, 0, sizeof(z));
	if (inflateInit(&z) != Z_OK)
		return amber_fail(AMBER_ERROR, "object %s: cannot start zlib", what);
	z.next_in = (uint8_t *)e->pre;	/* zlib does not write through it */
	z.avail_in = (uInt)e->pre_len;
	for (;;) {
		if (z.avail_in == 0) {
			ssize_t r;

			if (!in && !(in = malloc(cap))) {
				rc = amber_fail(AMBER_ERROR, "object %s: out of memory", what);
				break;
			}
			r = pread_full(e->p->pack_fd, in, cap, pos);

			if (r < 0) {
				rc = amber_fail_errno("object %s: cannot read %s at offset %llu", what,
						      e->p->name, (unsigned long long)pos);
				break;
			}
			if (r == 0) {
				rc = entry_fail(e, what, "the pack ends inside it (truncated)");
				break;
			}
			pos += (uint64_t)r;
			z.next_in = in;
			z.avail_in = (uInt)r;
		}
		if (z.avail_out == 0) {
			if (z.total_out < len) {
				size_t left = len - z.total_out;

				z.next_out = dst + z.total_out;
				z.avail_out = left > UINT32_MAX ? UINT32_MAX : (uInt)left;
			} else if (!exact) {
				break;
			} else {
				z.next_out = &extra;	/* any more output is too much */
				z.avail_out = 1;
			}
		}
		zr = inflate(&z, Z_NO_FLUSH);
		if (z.total_out > len) {
			rc = entry_fail(e, what, "inflates to more than its declared size");
			break;
		}
		if (zr == Z_STREAM_END) {
			if (z.total_out != len)
				rc = entry_fail(e, what, exact ? "inflates to less than its declared size"
						: "delta header truncated");
			break;
		}
		if (zr != Z_OK && !(zr == Z_BUF_ERROR && (z.avail_in == 0 || z.avail_out == 0))) {
			rc = entry_fail(e, what, zr == Z_MEM_ERROR ? "out of memory inflating it"
					: "bad zlib stream");
			break;
		}
	}
	inflateEnd(&z);
	free(in);
	return rc;
}

/* Deltas -------------------------------------------------------------------- */

static int delta_varint(uint64_t *v, const uint8_t *d, size_t len, size_t *i)
{
	unsigned shift = 0;
	uint8_t c;

	*v = 0;
	do {
		if (*i >= len || shift > 63)
			return -1;
		c = d[(*i)++];
		if (shift == 63 && (c & 0x7e))
			return -1;
		*v |= (uint64_t)(c & 0x7f) << shift;
		shift += 7;
	} while (c & 0x80);
	return 0;
}

int amber_delta_sizes(uint64_t *src, uint64_t *dst, size_t *ops, const uint8_t *d, size_t d_len)
{
	size_t i = 0;

	if (delta_varint(src, d, d_len, &i) < 0 || delta_varint(dst, d, d_len, &i) < 0)
		return amber_fail(AMBER_ECORRUPT, "delta header truncated");
	*ops = i;
	return 0;
}

static int delta_fail(const char *what, const char *why)
{
	return amber_fail(AMBER_ECORRUPT, "object %s: bad delta: %s", what, why);
}

int amber_delta_apply(uint8_t *dst, size_t dst_len, const uint8_t *base, size_t base_len,
		      const uint8_t *d, size_t d_len, const char *what)
{
	uint64_t src, tgt;
	size_t i, out = 0;

	if (amber_delta_sizes(&src, &tgt, &i, d, d_len) < 0)
		return delta_fail(what, "header truncated");
	if (src != base_len)
		return delta_fail(what, "its base is not the size it declares");
	if (tgt != dst_len)
		return delta_fail(what, "target size differs from the one read before");
	while (i < d_len) {
		uint8_t cmd = d[i++];

		if (cmd & 0x80) {
			uint64_t off = 0, n = 0;

			for (int k = 0; k < 4; k++) {
				if (cmd & 1 << k) {
					if (i >= d_len)
						return delta_fail(what, "copy op truncated");
					off |= (uint64_t)d[i++] << 8 * k;
				}
			}
			for (int k = 0; k < 3; k++) {
				if (cmd & 0x10 << k) {
					if (i >= d_len)
						return delta_fail(what, "copy op truncated");
					n |= (uint64_t)d[i++] << 8 * k;
				}
			}
			if (n == 0)
				n = 0x10000;
			if (off > base_len || n > base_len - off)
				return delta_fail(what, "copy from outside its base");
			if (n > dst_len - out)
				return delta_fail(what, "copy past its declared size");
			memcpy(dst + out, base + off, n);
			out += n;
		} else if (cmd) {
			if (cmd > d_len - i)
				return delta_fail(what, "insert op past the end of the delta");
			if (cmd > dst_len - out)
				return delta_fail(what, "insert past its declared size");
			memcpy(dst + out, d + i, cmd);
			out += cmd;
			i += cmd;
		} else {
			return delta_fail(what, "reserved op 0");
		}
	}
	if (out != dst_len)
		return delta_fail(what, "produces less than its declared size");
	return 0;
}

/* Chains -------------------------------------------------------------------- */

static size_t sat_bound(size_t lim)
{
	return lim > (SIZE_MAX - 1024) / 2 ? SIZE_MAX : 2 * lim + 1024;
}

/* The chain from the entry at off to its base: e[0..*n), e[*n - 1] not a delta. */
static int chain_walk(struct entry *e, size_t *n, const amber_pack *p, uint64_t off,
		      const char *what, amber_pack_resolve_fn resolve, void *rctx, uint8_t *buf,
		      size_t cap)
{
	int rc = entry_parse(&e[0], p, off, what, buf, cap);

	*n = 1;
	while (rc == 0 && e[*n - 1].type > 4) {
		const struct entry *d = &e[*n - 1];
		const amber_pack *bp = d->p;
		uint64_t boff = d->base;

		if (*n > AMBER_PACK_MAX_DEPTH)
			return amber_fail(AMBER_ECORRUPT, "object %s: delta chain longer than %d "
					  "(or a cycle), at %s offset %llu", what,
					  AMBER_PACK_MAX_DEPTH, d->p->name,
					  (unsigned long long)d->off);
		if (d->type == OBJ_REF_DELTA) {
			char hex[41];

			rc = resolve ? resolve(&bp, &boff, rctx, d->base_id) : 0;
			if (rc < 0)
				return rc;
			if (rc == 0) {
				for (int k = 0; k < 20; k++)
					snprintf(hex + 2 * k, 3, "%02x", d->base_id[k]);
				return amber_fail(AMBER_ECORRUPT, "object %s: its delta base %s is in no "
						  "pack (entry at %s offset %llu)", what, hex,
						  d->p->name, (unsigned long long)d->off);
			}
		}
		rc = entry_parse(&e[*n], bp, boff, what, NULL, 0);
		(*n)++;
	}
	return rc;
}

int amber_pack_header(int *type_out, size_t *len_out, const amber_pack *p, uint64_t off,
		      const char *what, amber_pack_resolve_fn resolve, void *rctx)
{
	struct entry e[AMBER_PACK_MAX_DEPTH + 1];
	uint8_t h[20];
	uint64_t src, dst;
	size_t n, ops;
	int rc = chain_walk(e, &n, p, off, what, resolve, rctx, NULL, 0);

	if (rc < 0)
		return rc;
	*type_out = e[n - 1].type;
	if (n == 1) {
		if (e[0].size > SIZE_MAX)
			return entry_fail(&e[0], what, "too large");
		*len_out = (size_t)e[0].size;
		return 0;
	}
	size_t peek = e[0].size < sizeof(h) ? (size_t)e[0].size : sizeof(h);

	rc = entry_inflate(&e[0], h, peek, peek == e[0].size, what);
	if (rc == 0 && amber_delta_sizes(&src, &dst, &ops, h, peek) < 0)
		rc = entry_fail(&e[0], what, "delta header truncated");
	if (rc == 0 && dst > SIZE_MAX)
		rc = entry_fail(&e[0], what, "too large");
	if (rc == 0)
		*len_out = (size_t)dst;
	return rc;
}

static void *heap_alloc(void *ctx, size_t len)
{
	(void)ctx;
	return malloc(len ? len : 1);
}

int amber_pack_read(int *type_out, size_t *len_out, const amber_pack *p, uint64_t off,
		    size_t max, const char *what, const uint8_t *id, amber_pack_alloc_fn alloc,
		    void *actx, amber_pack_resolve_fn resolve, void *rctx)
{
	struct entry e[AMBER_PACK_MAX_DEPTH + 1];
	size_t bmax = max > AMBER_PACK_BASE_MIN_MAX ? max : AMBER_PACK_BASE_MIN_MAX;
	uint8_t *cur = NULL, *d = NULL, *next;
	size_t n, cur_len, lim;
	uint8_t first[FIRST_READ];
	int rc = chain_walk(e, &n, p, off, what, resolve, rctx, first, sizeof(first)), own;

	if (rc < 0)
		return rc;
	/* the base: straight into the caller's room if there is no delta */
	const struct entry *b = &e[n - 1];

	lim = n == 1 ? max : bmax;
	if (b->size > lim)
		return amber_fail(AMBER_ECORRUPT, "object %s: %llu bytes, more than the %zu allowed",
				  what, (unsigned long long)b->size, lim);
	cur_len = (size_t)b->size;
	own = n > 1;
	cur = own ? heap_alloc(NULL, cur_len) : alloc(actx, cur_len);
	if (!cur)
		return amber_fail(AMBER_ERROR, "object %s: out of memory (%zu bytes)", what, cur_len);
	rc = entry_inflate(b, cur, cur_len, 1, what);
	for (size_t k = n - 1; rc == 0 && k-- > 0;) {
		uint64_t src, dst;
		size_t ops;

		lim = k == 0 ? max : bmax;
		if (e[k].size > sat_bound(lim)) {
			rc = entry_fail(&e[k], what, "delta larger than the object it may produce");
			break;
		}
		if (!(d = malloc(e[k].size ? (size_t)e[k].size : 1))) {
			rc = amber_fail(AMBER_ERROR, "object %s: out of memory", what);
			break;
		}
		rc = entry_inflate(&e[k], d, (size_t)e[k].size, 1, what);
		if (rc == 0 && amber_delta_sizes(&src, &dst, &ops, d, (size_t)e[k].size) < 0)
			rc = entry_fail(&e[k], what, "delta header truncated");
		if (rc == 0 && src != cur_len)
			rc = entry_fail(&e[k], what, "bad delta: its base is not the size it declares");
		if (rc == 0 && dst > lim)
			rc = amber_fail(AMBER_ECORRUPT, "object %s: %llu bytes, more than the %zu "
					"allowed", what, (unsigned long long)dst, lim);
		next = NULL;
		if (rc == 0 && !(next = k ? heap_alloc(NULL, (size_t)dst) : alloc(actx, (size_t)dst)))
			rc = amber_fail(AMBER_ERROR, "object %s: out of memory", what);
		if (rc == 0)
			rc = amber_delta_apply(next, (size_t)dst, cur, cur_len, d, (size_t)e[k].size,
					       what);
		if (next && (rc == 0 || k > 0)) {
			free(cur);	/* cur is ours here: n > 1 */
			cur = next;
			cur_len = (size_t)dst;
			own = k > 0;
		}
		free(d);
		d = NULL;
	}
	if (rc == 0 && n > 1 && id) {
		uint8_t sum[20];

		amber_store_hash(sum, b->type, cur, cur_len);
		if (memcmp(sum, id, 20) != 0)
			rc = amber_fail(AMBER_ECORRUPT, "object %s: rebuilt from %zu deltas in %s, its "
					"bytes do not hash to its id", what, n - 1, p->name);
	}
	if (own)
		free(cur);
	if (rc == 0) {
		*type_out = b->type;
		*len_out = cur_len;
	}
	return rc;
}
