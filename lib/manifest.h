/*
 * Serialisation of the payloads inside object frames: directory manifests,
 * fan-out bucket lists, chunk indexes of multi-chunk files and snapshot
 * records.  Pure byte formats (little-endian, no pointers); everything
 * decoded is hostile until checked, and the decoders check it all: bounds
 * before allocation, names (no '/', no NUL, not "." or "..", not empty,
 * <= 255 bytes), strict sorting and uniqueness, known enum values.
 * The byte layouts are specified in amberfs-format(5).
 */
#ifndef AMBER_MANIFEST_H
#define AMBER_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "amber.h"
#include "buf.h"

#define AMBER_MANIFEST_MAX_ENTRIES (1u << 20)
#define AMBER_XATTR_MAX_COUNT 1024
#define AMBER_XATTR_NAME_MAX 255
#define AMBER_XATTR_VALUE_MAX (64u << 10)
#define AMBER_TARGET_MAX 4096
#define AMBER_INDEX_MAX_CHUNKS (1u << 24)
#define AMBER_FANOUT_THRESHOLD 1024  /* directories with more entries fan out */
/* Directories nest at most this deep below a snapshot's root (a root's
 * child is at depth 1): writers refuse deeper sources, and readers that
 * walk a tree stop there with an error instead of running out of stack. */
#define AMBER_MAX_DEPTH 1024

/** 1 if name[0..len) is a valid entry name, else 0. */
int amber_name_valid(const char *name, size_t len);

/** Order of entry names: bytewise, shorter first on a common prefix. */
int amber_name_cmp(const char *a, size_t alen, const char *b, size_t blen);

/**
 * Encode entries (sorted by amber_name_cmp, unique, valid names) as a
 * manifest payload appended to out.  Asserts on unsorted input (a bug).
 */
int amber_manifest_encode(amber_buf *out, const amber_entry *e, size_t n);

/**
 * Decode and validate a manifest payload.  *out is a malloc'd array of n
 * entries; free with amber_entries_free().
 * @return 0 or AMBER_ECORRUPT naming the defect.
 */
int amber_manifest_decode(amber_entry **out, size_t *n, const void *data, size_t len);

/**
 * Decode a manifest that must hold exactly n entries into v[0..n), the
 * caller's memory (a listing's place for one bucket: no copy).  Unless it
 * returns 0, v[0..n) is left zeroed: nothing in it to free.
 * @return 0; 1 if it holds another count; or AMBER_ECORRUPT naming the
 * defect.
 */
int amber_manifest_decode_into(amber_entry *v, size_t n, const void *data, size_t len);

/** Deep-copy one entry (into *dst, which the caller owns).  */
int amber_entry_copy(amber_entry *dst, const amber_entry *src);
/** Free what one entry holds (not the entry itself). */
void amber_entry_dispose(amber_entry *e);
/** Dispose n entries and free the array.  NULL-safe. */
void amber_entries_free(amber_entry *e, size_t n);
/** Free what e[0..n) hold and zero them (the array is the caller's). */
void amber_entries_clear(amber_entry *e, size_t n);

/*
 * A large directory fans out into 2^bits buckets (bits 8..16); an entry's
 * bucket is the top `bits` bits of the first two bytes of its token.
 */
#define AMBER_FANOUT_MIN_BITS 8
#define AMBER_FANOUT_MAX_BITS 16

/** The bucket of a token (32 lowercase hex characters) at `bits`. */
static inline unsigned amber_token_bucket(const char *tok, unsigned bits)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++)
		v = v * 16 + (unsigned)(tok[i] <= '9' ? tok[i] - '0' : tok[i] - 'a' + 10);
	return v >> (16 - bits);
}

/** One bucket of a fanned-out directory. */
typedef struct amber_bucket {
	uint16_t id;           /* < 2^bits */
	uint32_t count;        /* entries in the bucket */
	uint8_t tree_oid[20];
	amber_link link;       /* the bucket's manifest */
} amber_bucket;

int amber_fanout_encode(amber_buf *out, unsigned bits, const amber_bucket *b, size_t n);
/** Decode; ids strictly increasing and < 2^bits; *out malloc'd (free()). */
int amber_fanout_decode(amber_bucket **out, unsigned *bits, size_t *n, const void *data,
			size_t len);

/*
 * Fan-out layout 2: the bucket list is itself a tree of nodes, so that
 * changing k entries of a large directory rewrites k paths of small nodes
 * (O(k log n) bytes), not a list of every bucket.  Each node resolves one
 * hex digit (4 bits; the last level the bits that remain) of the bucket id,
 * from the top: a directory of `bits` bucket bits has
 * amber_fanout_levels(bits) levels of nodes, the first at the directory's
 * own tree, and the children of the last level are the buckets.
 */
#define AMBER_FANOUT_DIGIT 4
#define AMBER_FANOUT_NODE_MAX (1u << AMBER_FANOUT_DIGIT)
#define AMBER_FANOUT_LEVELS_MAX \
	((AMBER_FANOUT_MAX_BITS + AMBER_FANOUT_DIGIT - 1) / AMBER_FANOUT_DIGIT)

static inline unsigned amber_fanout_levels(unsigned bits)
{
	return (bits + AMBER_FANOUT_DIGIT - 1) / AMBER_FANOUT_DIGIT;
}

/** Bits of the bucket id that level `level` of a `bits` fan-out resolves. */
static inline unsigned amber_fanout_width(unsigned bits, unsigned level)
{
	unsigned done = level * AMBER_FANOUT_DIGIT;

	return bits - done < AMBER_FANOUT_DIGIT ? bits - done : AMBER_FANOUT_DIGIT;
}

/** One node of a layout-2 fan-out.  A child's id is its digit; its count
 *  the entries below it; tree_oid and link its tree and that tree's "m"
 *  (a node, or at the last level the bucket's manifest). */
typedef struct amber_fanout_node {
	unsigned bits;         /* the directory's bucket bits */
	unsigned level;        /* 0: the node in the directory's own tree */
	unsigned prefix;       /* the level * 4 bits of bucket id above this node */
	size_t n;              /* children, 1..2^width */
	amber_bucket c[AMBER_FANOUT_NODE_MAX];
} amber_fanout_node;

int amber_fanout_node_encode(amber_buf *out, const amber_fanout_node *nd);
/** Decode and check one node (ids increasing, counts in range, their sum at
 *  most AMBER_MANIFEST_MAX_ENTRIES). */
int amber_fanout_node_decode(amber_fanout_node *nd, const void *data, size_t len);
/** The layout version byte of a fan-out payload (1 or 2), or -1. */
int amber_fanout_layout(const void *data, size_t len);

/** One chunk of a multi-chunk file. */
typedef struct amber_chunkref {
	amber_link link;
	uint32_t len;          /* plaintext length, 1..AMBER_CHUNK_MAX */
} amber_chunkref;

int amber_index_encode(amber_buf *out, const amber_chunkref *c, size_t n);
/**
 * Decode; checks each len is 1..max_chunk and that the lengths add up to
 * `file_size`.  *out malloc'd (free()).
 */
int amber_index_decode(amber_chunkref **out, size_t *n, const void *data, size_t len,
		       uint64_t file_size, size_t max_chunk);

/*
 * Index layout 2 (paged): the chunk tree of a file of more than
 * AMBER_INDEX_PAGE chunks holds "i", a root listing pages, and one page
 * tree p00000, p00001, ... per AMBER_INDEX_PAGE chunks, each a layout-1
 * chunk tree of its chunks (the last page holds the rest).  An append then
 * rewrites the last page and the small root, not an entry per chunk.
 */
#define AMBER_INDEX_PAGE 64
#define AMBER_INDEX_MAX_PAGES 16384  /* larger files keep layout 1 */

/** One page of a paged chunk index. */
typedef struct amber_indexpage {
	uint32_t chunks;       /* AMBER_INDEX_PAGE, fewer (>= 1) in the last page */
	uint64_t bytes;        /* plaintext bytes of its chunks */
	uint8_t tree_oid[20];  /* its chunk tree */
	amber_link link;       /* that tree's "i" (a layout-1 index) */
} amber_indexpage;

/** The layout version byte of an index payload (1 or 2), or -1. */
int amber_index_layout(const void *data, size_t len);
int amber_index_root_encode(amber_buf *out, const amber_indexpage *p, size_t n);
/**
 * Decode a paged index root; checks page sizes (every page but the last
 * full), byte counts (chunks..chunks * max_chunk each) and that they add up
 * to `file_size`.  *out malloc'd (free()).
 */
int amber_index_root_decode(amber_indexpage **out, size_t *n, const void *data, size_t len,
			    uint64_t file_size, size_t max_chunk);

/*
 * The time index in the records (record layout 2): snapshot number `height`
 * (1 for the first of a stream) links to its ancestors at heights
 * height - 2^i for i = 0 .. ctz(height) that exist (>= 1), each with that
 * ancestor's time: a deterministic skip list, so the newest snapshot before
 * a time is O(log n) record reads from the tip.  Link 0 is the parent.
 */
#define AMBER_SKIP_MAX 64

typedef struct amber_skiplink {
	uint8_t oid[20];
	int64_t time_ns;
} amber_skiplink;

/** Number of skip links a record at `height` (>= 1) carries. */
static inline size_t amber_skip_count(uint64_t height)
{
	size_t n = 0;

	for (unsigned i = 0; i < 64 && height > (1ULL << i) && height % (1ULL << i) == 0; i++)
		n++;
	return n;
}

/*
 * Index pages (record layout 3): the record of the snapshot at height h
 * with (h - 1) % span == 0 (h > 1) writes a page listing the `span`
 * snapshots below it, heights h - span .. h - 1, as (time, commit id)
 * pairs, oldest first, with a link to the page before.  Every record names
 * the newest page below it (page_height: the last height that page lists;
 * 0 with no page yet), so listing a span of time costs a few page reads
 * plus a walk of at most span - 1 records above the newest page.
 */
#define AMBER_PAGE_SPAN_DEFAULT 1024
#define AMBER_PAGE_SPAN_MAX 65536

typedef struct amber_page_ent {
	int64_t time_ns;
	uint8_t oid[20];
} amber_page_ent;

/** A decoded index page. */
typedef struct amber_page {
	uint64_t first;            /* height of v[0] (>= 1) */
	uint32_t n;                /* entries: the span of the stream */
	uint64_t prev_height;      /* last height of the page before; 0: none */
	amber_link prev;           /* that page (zero when prev_height is 0) */
	amber_page_ent *v;         /* malloc'd, oldest first */
} amber_page;

int amber_page_encode(amber_buf *out, const amber_page *p);
/** Decode and check the page's own consistency; free p->v. */
int amber_page_decode(amber_page *p, const void *data, size_t len);

/** The authenticated record a snapshot commit carries. */
typedef struct amber_record {
	uint8_t tree[20];          /* the commit's root tree */
	uint8_t parent[20];        /* zero if none */
	int has_parent;
	amber_link root;           /* root directory manifest */
	uint8_t root_content;      /* AMBER_C_DIR */
	uint8_t *root_meta;        /* the root directory's own entry (mode, owner,
				      times, xattrs) as a one-entry manifest
				      payload whose tree_oid and link are `tree`
				      and `root`; decode mallocs, dispose frees */
	size_t root_meta_len;
	char stream[AMBER_STREAM_MAX + 1];
	int64_t time_ns;
	char *host;                /* malloc'd strings, <= 4096 bytes each */
	char *source;
	char *message;
	amber_stats stats;
	int unsigned_on_purpose;   /* written without a signature, by choice, in an
				      archive that has a signing key (--unsigned):
				      a version 3 record */
	uint64_t height;           /* 0: a layout 1 record, which has no index */
	size_t nskip;              /* amber_skip_count(height) */
	amber_skiplink skip[AMBER_SKIP_MAX];
	uint32_t page_span;        /* layout 3: snapshots per index page; 0: layout 1 or 2 */
	uint64_t page_height;      /* last height of the newest page below; 0: none */
	amber_link page;           /* that page (zero when page_height is 0) */
} amber_record;

/**
 * Encode: layout 4 (a flags byte, then the index and the page reference
 * as flagged) when the record has a flag to carry (unsigned on purpose),
 * else layout 3 (index and pages) if r->page_span, 2 (skip links) if
 * r->height, else 1.  Ordinary snapshots stay readable by readers that
 * predate 4.
 */
int amber_record_encode(amber_buf *out, const amber_record *r);
int amber_record_decode(amber_record *r, const void *data, size_t len);
/** Free the strings and root_meta of a record. */
void amber_record_dispose(amber_record *r);

/** 1 if s is a valid stream or tag name (git ref-safe, [A-Za-z0-9._-], 1..64,
 *  not starting with '.' or '-', no "..", not ending with ".lock"). */
int amber_refname_valid(const char *s);

#endif
