/*
 * Reading git pack files ourselves, with pread and zlib (packread.c).
 * Private to the store module: store_odb.c keeps one amber_pack per
 * checked pack and looks objects up through it.
 */
#ifndef AMBER_PACKREAD_H
#define AMBER_PACKREAD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/** Longest delta chain followed (git's default --depth is 50). */
#define AMBER_PACK_MAX_DEPTH 128

/**
 * An intermediate object of a delta chain (a base) may be this large even
 * when the caller asked for less: a small object may be a delta against a
 * big one.  Larger limits asked by the caller apply to bases too.
 */
#define AMBER_PACK_BASE_MIN_MAX ((size_t)64 << 20)

/*
 * One open pack: its index and pack files by descriptor (a removed pack's
 * descriptors keep its data readable; a truncated one gives short reads,
 * which are errors).  The fan-out table is kept in memory; object names and
 * offsets are read from the index with pread on each lookup.
 */
typedef struct amber_pack {
	int idx_fd;
	int pack_fd;
	uint32_t n;		/* objects */
	uint64_t nbig;		/* entries of the 64-bit offset table */
	uint64_t pack_size;	/* of the .pack when it was checked: offsets lie in [12, size - 20) */
	uint32_t fanout[256];	/* objects whose first byte is <= i */
	const char *name;	/* pack-<hex>.pack, for messages (owned by the caller) */
	const char *idx_name;	/* pack-<hex>.idx, for messages (owned by the caller; NULL: none) */
	/*
	 * A copy of the whole index, read once the index has served
	 * AMBER_IDX_COPY_AFTER lookups by pread, if the budget allows (then
	 * lookups make no system call), else NULL: free it with
	 * amber_pack_dispose().  budget (optional, shared by a caller's packs):
	 * bytes of copies held, at most budget_max.
	 */
	_Atomic(uint8_t *) mem;
	size_t mem_len;		/* the index's size when it was checked */
	atomic_int mem_tried;
	atomic_uint lookups;	/* served by pread so far (up to the copy) */
	atomic_size_t *budget;
	size_t budget_max;
	/*
	 * An index that is not copied (the budget had no room) and has
	 * answered amber_pack_copy_after() lookups of ids it does not hold
	 * by pread gets a filter of its names (a Bloom filter, a byte an
	 * object) if fbudget (bytes of filters held, at most fbudget_max) has
	 * room: a lookup of an id the pack does not hold, which a writer
	 * makes for each new object, then reads nothing, nearly always.  It
	 * never says absent for a name of the index.  Freed with the copy.
	 */
	_Atomic(uint64_t *) filter;
	unsigned filter_shift;	/* it has 2^filter_shift 64-bit words */
	atomic_uint misses;	/* lookups of absent ids answered by pread */
	atomic_size_t *fbudget;
	size_t fbudget_max;
	atomic_ulong idx_reads;	/* preads of the index by lookups so far */
	unsigned long long serial; /* this pack among every one set up (amber_pack_setup), >= 1 */
	atomic_ulong pack_reads;	/* preads of the pack by objects' first reads so far */
	atomic_ullong pack_read_bytes;	/* ... and the bytes they asked for */
} amber_pack;

/** Indexes with fewer objects get no filter (one pread finds a miss there). */
#define AMBER_IDX_FILTER_MIN 1024u

/*
 * Lookups an index serves by pread before it is copied into memory: one per
 * AMBER_IDX_COPY_BYTES of the index (a lookup by pread costs about what
 * copying that much does), at most AMBER_IDX_COPY_AFTER.
 */
#define AMBER_IDX_COPY_AFTER 4096u
#define AMBER_IDX_COPY_BYTES ((size_t)16 << 10)

/** The lookups by pread after which p's index is copied (see above). */
uint32_t amber_pack_copy_after(const amber_pack *p);

/**
 * Where a REF_DELTA's base lives: *pack and *off of the object `oid` in any
 * pack the caller reads.  @return 1 found, 0 not found, <0 error (set).
 */
typedef int (*amber_pack_resolve_fn)(const amber_pack **pack, uint64_t *off, void *ctx,
				     const uint8_t oid[20]);

/**
 * Room for the object's `len` bytes, or NULL (out of memory: the read
 * fails with AMBER_ERROR).  Called once, after the size was checked.
 */
typedef void *(*amber_pack_alloc_fn)(void *ctx, size_t len);

/**
 * Fill p's counts from the index header `head` (magic, version, fan-out:
 * 8 + 1024 bytes, already checked by the caller), the index size and the
 * pack size (which bounds every offset amber_pack_find() hands out).
 */
void amber_pack_setup(amber_pack *p, const uint8_t *head, uint64_t idx_size,
		      uint64_t pack_size);

/** Free p's copy of its index, if any, and give its bytes back to the budget. */
void amber_pack_dispose(amber_pack *p);

/**
 * Look `oid` up in p's index.  The offset found is checked here, on each
 * lookup (an index is not checked whole when it is loaded: that costs
 * O(objects) per open): it must lie between the pack's header and its
 * trailing checksum, and a large one must name an entry of the 64-bit table.
 * @return 1 (and *off) if there, 0 if not, AMBER_ECORRUPT (naming the index
 *         and the fix) if its offset is bad, <0 if the index cannot be read.
 */
int amber_pack_find(uint64_t *off, const amber_pack *p, const uint8_t oid[20]);

/** The id of the i-th object of p (i < p->n). @return 0 or <0. */
int amber_pack_oid_at(uint8_t oid[20], const amber_pack *p, uint32_t i);

/**
 * Where key is or would be in p's names (for prefix lookups): *pos is the
 * first object whose id is >= key (the end of key's first-byte bucket if
 * none in it: the first object of a later bucket, or p->n).  @return 0 or <0.
 */
int amber_pack_lower_bound(uint32_t *pos, const amber_pack *p, const uint8_t key[20]);

/**
 * Read the object at `off` of p, following deltas (at most
 * AMBER_PACK_MAX_DEPTH); its bytes go where alloc says.
 * @param type_out the git type (1 commit, 2 tree, 3 blob, 4 tag)
 * @param len_out  its size
 * @param max      the largest size accepted: larger is AMBER_ECORRUPT, found
 *                 from the entry (or delta) header before anything is allocated
 * @param what     names the object in messages (its hex id)
 * @param id       its id: an object rebuilt from deltas must hash to it
 *                 (NULL: not checked); one stored whole is not hashed
 * @return 0, AMBER_ECORRUPT (malformed, truncated, a delta that does not
 *         apply or whose REF_DELTA base is in no pack, a rebuilt object
 *         that does not hash to id) or AMBER_ERROR.
 */
int amber_pack_read(int *type_out, size_t *len_out, const amber_pack *p, uint64_t off,
		    size_t max, const char *what, const uint8_t *id, amber_pack_alloc_fn alloc,
		    void *actx, amber_pack_resolve_fn resolve, void *rctx);

/** Type and size of the object at `off` without reading all of it. */
int amber_pack_header(int *type_out, size_t *len_out, const amber_pack *p, uint64_t off,
		      const char *what, amber_pack_resolve_fn resolve, void *rctx);

/**
 * Apply git's delta `d` (source size, target size, copy and insert ops) to
 * `base`, writing exactly dst_len bytes to dst: each copy must lie inside
 * the base, each insert inside the delta, and the ops must produce exactly
 * the target size the delta declares, which must be dst_len.
 * @return 0 or AMBER_ECORRUPT (message names `what`).
 */
int amber_delta_apply(uint8_t *dst, size_t dst_len, const uint8_t *base, size_t base_len,
		      const uint8_t *d, size_t d_len, const char *what);

/**
 * The source and target sizes a delta declares, and where its ops begin.
 * @return 0 or AMBER_ECORRUPT.
 */
int amber_delta_sizes(uint64_t *src, uint64_t *dst, size_t *ops, const uint8_t *d, size_t d_len);

#endif
