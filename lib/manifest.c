/*
 * Payload byte layouts (all integers little-endian, layout version 1).
 * amberfs-format(5) is the specification; this is a summary.
 *
 *   MANIFEST  ver u8 | count u32 | entry[count]
 *     entry   name_len u16 | name | type u8 | mode u32 | uid u32 | gid u32 |
 *             mtime_sec i64 | mtime_nsec u32 | size u64 | rdev u64 |
 *             nlink u32 | hardlink u64 | content u8 |
 *             [tree_oid 20]           if content is CHUNKED or DIR
 *             [oid 20 | mac 24]       if content is not NONE
 *             [target_len u16 | target]  symlinks only
 *             nxattrs u16 | (name_len u8 | name | value_len u32 | value)*
 *   FANOUT    ver u8 | count u16 | (id u8 | count u32 | tree_oid 20 |
 *             oid 20 | mac 24)*
 *   INDEX     ver u8 | count u32 | (oid 20 | mac 24 | len u32)*
 *   RECORD    ver u8 | tree 20 | has_parent u8 | parent 20 | root oid 20 |
 *             root mac 24 | root_content u8 | root_meta_len u32 | root_meta |
 *             stream_len u8 | stream |
 *             time_ns i64 | host, source, message (len u16 | bytes) |
 *             7 x u64 stats (files dirs bytes bytes_read bytes_new
 *             objects_new errors)
 *             layout 2 (ver 2) adds: height u64 | nskip u8 |
 *             (oid 20 | time_ns i64)[nskip]   (the time index)
 *
 * Every layout is canonical: one set of values has exactly one encoding
 * (optional fields are absent rather than zero-filled, unused fields must
 * be zero, no trailing bytes).  Identical directories therefore produce
 * identical payloads, which is what lets dedup work across snapshots.
 *
 * The encoders run the same checks as the decoders, so a writer bug is
 * caught before it reaches the store (AMBER_EINVAL) rather than by every
 * later reader (AMBER_ECORRUPT).
 */
#include "manifest.h"

#include "chunker.h"
#include "error.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYOUT_VERSION 1
#define RECORD_VERSION_INDEXED 2
#define RECORD_VERSION_PAGED 3
#define RECORD_VERSION_FLAGS 4          /* a flags byte says what follows */
#define RECORD_FLAG_UNSIGNED 0x01       /* unsigned on purpose (--unsigned) */
#define RECORD_FLAG_INDEXED 0x02        /* the time index follows */
#define RECORD_FLAG_PAGED 0x04          /* then the index page reference */
#define PAGE_VERSION 1
#define PAGE_ENT_SIZE (8 + 20)
#define RECORD_TEXT_MAX 4096
#define MODE_MASK 07777u
#define NSEC_PER_SEC 1000000000u

/* Smallest possible encodings, used to bound counts before allocating. */
#define LINK_SIZE (20 + 24)
#define ENTRY_FIXED 54    /* type .. content */
#define ENTRY_MIN (2 + 1 + ENTRY_FIXED + 2)
#define XATTR_MIN (1 + 1 + 4)
#define BUCKET_SIZE (2 + 4 + 20 + LINK_SIZE)
#define CHUNKREF_SIZE (LINK_SIZE + 4)

/* Writer with a sticky error, the mirror of amber_rd's `bad` flag. */
typedef struct wr {
	amber_buf *b;
	int err;
} wr;

static void w_bytes(wr *w, const void *p, size_t n)
{
	if (!w->err && amber_buf_put(w->b, p, n) < 0)
		w->err = AMBER_ERROR;
}

static void w_u8(wr *w, uint8_t v)
{
	if (!w->err && amber_buf_put_u8(w->b, v) < 0)
		w->err = AMBER_ERROR;
}

static void w_u16(wr *w, uint16_t v)
{
	if (!w->err && amber_buf_put_u16(w->b, v) < 0)
		w->err = AMBER_ERROR;
}

static void w_u32(wr *w, uint32_t v)
{
	if (!w->err && amber_buf_put_u32(w->b, v) < 0)
		w->err = AMBER_ERROR;
}

static void w_u64(wr *w, uint64_t v)
{
	if (!w->err && amber_buf_put_u64(w->b, v) < 0)
		w->err = AMBER_ERROR;
}

static void w_link(wr *w, const amber_link *l)
{
	w_bytes(w, l->oid, sizeof(l->oid));
	w_bytes(w, l->mac, sizeof(l->mac));
}

/* Finish an encode: on failure leave `out` as it was before. */
static int w_finish(wr *w, size_t start)
{
	if (w->err)
		w->b->len = start;
	return w->err;
}

static void r_copy(amber_rd *r, void *dst, size_t n)
{
	const uint8_t *p;

	if (amber_rd_bytes(r, &p, n) == 0)
		memcpy(dst, p, n);
}

static void r_link(amber_rd *r, amber_link *l)
{
	r_copy(r, l->oid, sizeof(l->oid));
	r_copy(r, l->mac, sizeof(l->mac));
}

static void r_i64(amber_rd *r, int64_t *v)
{
	uint64_t u = 0;

	amber_rd_u64(r, &u);
	*v = (int64_t)u;
}

/* Read the layout version byte. */
static int r_version(amber_rd *r, const char *what)
{
	uint8_t ver = 0;

	if (amber_rd_u8(r, &ver) < 0)
		return amber_fail(AMBER_ECORRUPT, "%s: empty payload", what);
	if (ver != LAYOUT_VERSION)
		return amber_fail(AMBER_ECORRUPT, "%s: unknown layout version %u", what, ver);
	return 0;
}

static int r_finish(const amber_rd *r, const char *what)
{
	if (r->bad)
		return amber_fail(AMBER_ECORRUPT, "%s: truncated", what);
	if (r->left)
		return amber_fail(AMBER_ECORRUPT, "%s: %zu trailing bytes", what, r->left);
	return 0;
}

/* malloc'd NUL-terminated copy of n bytes (n may be 0). */
static char *dup_bytes(const void *p, size_t n)
{
	char *s = malloc(n + 1);

	if (!s)
		return NULL;
	if (n)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Names                                                               */

int amber_name_valid(const char *name, size_t len)
{
	if (!name || len == 0 || len > AMBER_NAME_MAX)
		return 0;
	if (memchr(name, '/', len) || memchr(name, '\0', len))
		return 0;
	if (name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.')))
		return 0;
	return 1;
}

int amber_name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = n ? memcmp(a, b, n) : 0;

	if (c)
		return c;
	return (alen > blen) - (alen < blen);
}

static int refchar_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

int amber_refname_valid(const char *s)
{
	size_t len;

	if (!s)
		return 0;
	len = strnlen(s, AMBER_STREAM_MAX + 1);
	if (len == 0 || len > AMBER_STREAM_MAX || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!refchar_ok(s[i]) || (s[i] == '.' && s[i + 1] == '.'))
			return 0;
	return !(len >= 5 && memcmp(s + len - 5, ".lock", 5) == 0);
}

/* ------------------------------------------------------------------ */
/* Entry checks shared by encoder and decoder                          */

static int xattr_name_ok(const char *name)
{
	size_t len = name ? strnlen(name, AMBER_XATTR_NAME_MAX + 1) : 0;

	return len >= 1 && len <= AMBER_XATTR_NAME_MAX;
}

static const char *xattrs_defect(const amber_entry *e)
{
	if (e->nxattrs > AMBER_XATTR_MAX_COUNT)
		return "too many xattrs";
	for (size_t i = 0; i < e->nxattrs; i++) {
		const amber_xattr *x = &e->xattrs[i];

		if (!xattr_name_ok(x->name))
			return "xattr name empty or too long";
		if (x->value_len > AMBER_XATTR_VALUE_MAX)
			return "xattr value too long";
		if (i && strcmp(e->xattrs[i - 1].name, x->name) >= 0)
			return "xattr names not strictly sorted";
	}
	return NULL;
}

static const char *target_defect(const amber_entry *e)
{
	if (e->type != AMBER_T_SYMLINK)
		return e->target_len ? "target on a non-symlink" : NULL;
	if (!e->target || e->target_len == 0)
		return "symlink without a target";
	if (e->target_len > AMBER_TARGET_MAX)
		return "symlink target too long";
	if (memchr(e->target, '\0', e->target_len))
		return "symlink target contains NUL";
	if (e->size != e->target_len)
		return "symlink size differs from its target length";
	return NULL;
}

/* Which content kinds each type may have (see enum amber_content). */
static const char *content_defect(const amber_entry *e)
{
	switch (e->type) {
	case AMBER_T_DIR:
		return e->content == AMBER_C_DIR ? NULL : "directory without directory content";
	case AMBER_T_REG:
		if (e->content == AMBER_C_NONE)
			return e->size == 0 ? NULL : "non-empty file without content";
		if (e->content == AMBER_C_BLOB)
			return e->size <= AMBER_CHUNK_MAX ? NULL : "single blob larger than a chunk";
		if (e->content == AMBER_C_CHUNKED)
			return e->size > 0 ? NULL : "empty file with a chunk tree";
		return "file with directory or unknown content";
	case AMBER_T_SYMLINK:
	case AMBER_T_FIFO:
	case AMBER_T_CHR:
	case AMBER_T_BLK:
		return e->content == AMBER_C_NONE ? NULL : "special file with content";
	default:
		return "unknown type";
	}
}

/* Fields a type does not use must be zero, so that encodings stay canonical. */
static const char *unused_defect(const amber_entry *e)
{
	int dev = e->type == AMBER_T_CHR || e->type == AMBER_T_BLK;

	if (!dev && e->rdev)
		return "device number on a non-device";
	if (e->type != AMBER_T_REG && e->type != AMBER_T_SYMLINK && e->size)
		return "size on a directory, fifo or device";
	if (e->type == AMBER_T_DIR && e->hardlink)
		return "hard-linked directory";
	return NULL;
}

static const char *entry_defect(const amber_entry *e)
{
	const char *why;

	if (!amber_name_valid(e->name, e->name_len))
		return "invalid name";
	if ((why = content_defect(e)) != NULL)
		return why;
	if (e->mode & ~MODE_MASK)
		return "mode has bits outside 07777";
	if (e->mtime_nsec >= NSEC_PER_SEC)
		return "mtime nanoseconds out of range";
	if (e->nlink == 0)
		return "nlink is 0";
	if ((why = unused_defect(e)) != NULL || (why = target_defect(e)) != NULL)
		return why;
	return xattrs_defect(e);
}

/* ------------------------------------------------------------------ */
/* Manifest                                                            */

static int has_tree(uint8_t content)
{
	return content == AMBER_C_CHUNKED || content == AMBER_C_DIR;
}

static void put_entry(wr *w, const amber_entry *e)
{
	w_u16(w, (uint16_t)e->name_len);
	w_bytes(w, e->name, e->name_len);
	w_u8(w, e->type);
	w_u32(w, e->mode);
	w_u32(w, e->uid);
	w_u32(w, e->gid);
	w_u64(w, (uint64_t)e->mtime_sec);
	w_u32(w, e->mtime_nsec);
	w_u64(w, e->size);
	w_u64(w, e->rdev);
	w_u32(w, e->nlink);
	w_u64(w, e->hardlink);
	w_u8(w, e->content);
	if (has_tree(e->content))
		w_bytes(w, e->tree_oid, sizeof(e->tree_oid));
	if (e->content != AMBER_C_NONE)
		w_link(w, &e->link);
	if (e->type == AMBER_T_SYMLINK) {
		w_u16(w, (uint16_t)e->target_len);
		w_bytes(w, e->target, e->target_len);
	}
	w_u16(w, (uint16_t)e->nxattrs);
	for (size_t i = 0; i < e->nxattrs; i++) {
		size_t nl = strlen(e->xattrs[i].name);

		w_u8(w, (uint8_t)nl);
		w_bytes(w, e->xattrs[i].name, nl);
		w_u32(w, (uint32_t)e->xattrs[i].value_len);
		w_bytes(w, e->xattrs[i].value, e->xattrs[i].value_len);
	}
}

int amber_manifest_encode(amber_buf *out, const amber_entry *e, size_t n)
{
	wr w = {out, 0};
	size_t start = out->len;
	const char *why;

	if (n > AMBER_MANIFEST_MAX_ENTRIES)
		return amber_fail(AMBER_EINVAL, "manifest: %zu entries (limit %u)", n,
				  AMBER_MANIFEST_MAX_ENTRIES);
	for (size_t i = 0; i < n; i++) {
		if ((why = entry_defect(&e[i])) != NULL)
			return amber_fail(AMBER_EINVAL, "manifest: entry %zu: %s", i, why);
		assert(i == 0 || amber_name_cmp(e[i - 1].name, e[i - 1].name_len, e[i].name,
						e[i].name_len) < 0);
	}
	w_u8(&w, LAYOUT_VERSION);
	w_u32(&w, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		put_entry(&w, &e[i]);
	return w_finish(&w, start);
}

static int get_xattr(amber_xattr *x, amber_rd *r)
{
	const uint8_t *p = NULL;
	uint8_t nl = 0;
	uint32_t vl = 0;

	amber_rd_u8(r, &nl);
	if (amber_rd_bytes(r, &p, nl) < 0)
		return 0;
	if (nl == 0 || memchr(p, '\0', nl))
		return amber_fail(AMBER_ECORRUPT, "xattr name empty or contains NUL");
	if (!(x->name = dup_bytes(p, nl)))
		return amber_fail(AMBER_ERROR, "out of memory");
	amber_rd_u32(r, &vl);
	if (vl > AMBER_XATTR_VALUE_MAX)
		return amber_fail(AMBER_ECORRUPT, "xattr value of %u bytes", vl);
	if (amber_rd_bytes(r, &p, vl) < 0)
		return 0;
	/* One spare byte so that an empty value is still a non-NULL pointer. */
	if (!(x->value = malloc(vl + 1u)))
		return amber_fail(AMBER_ERROR, "out of memory");
	memcpy(x->value, p, vl);
	x->value_len = vl;
	return 0;
}

static int get_xattrs(amber_entry *e, amber_rd *r)
{
	uint16_t nx = 0;
	int rc;

	if (amber_rd_u16(r, &nx) < 0 || nx == 0)
		return 0;
	if (nx > AMBER_XATTR_MAX_COUNT || nx > r->left / XATTR_MIN)
		return amber_fail(AMBER_ECORRUPT, "%u xattrs do not fit", nx);
	if (!(e->xattrs = calloc(nx, sizeof(*e->xattrs))))
		return amber_fail(AMBER_ERROR, "out of memory");
	e->nxattrs = nx;
	for (size_t i = 0; i < nx && !r->bad; i++)
		if ((rc = get_xattr(&e->xattrs[i], r)) < 0)
			return rc;
	return 0;
}

static int get_target(amber_entry *e, amber_rd *r)
{
	const uint8_t *p = NULL;
	uint16_t tl = 0;

	if (e->type != AMBER_T_SYMLINK)
		return 0;
	amber_rd_u16(r, &tl);
	if (amber_rd_bytes(r, &p, tl) < 0)
		return 0;
	if (!(e->target = dup_bytes(p, tl)))
		return amber_fail(AMBER_ERROR, "out of memory");
	e->target_len = tl;
	return 0;
}

static void get_fixed(amber_entry *e, amber_rd *r)
{
	amber_rd_u8(r, &e->type);
	amber_rd_u32(r, &e->mode);
	amber_rd_u32(r, &e->uid);
	amber_rd_u32(r, &e->gid);
	r_i64(r, &e->mtime_sec);
	amber_rd_u32(r, &e->mtime_nsec);
	amber_rd_u64(r, &e->size);
	amber_rd_u64(r, &e->rdev);
	amber_rd_u32(r, &e->nlink);
	amber_rd_u64(r, &e->hardlink);
	amber_rd_u8(r, &e->content);
	if (e->content > AMBER_C_DIR)
		return;
	if (has_tree(e->content))
		r_copy(r, e->tree_oid, sizeof(e->tree_oid));
	if (e->content != AMBER_C_NONE)
		r_link(r, &e->link);
}

/*
 * Decode one entry.  Parse errors inside leave r->bad set and are reported
 * as truncation by the caller; semantic defects fail here.
 */
static int get_entry(amber_entry *e, amber_rd *r)
{
	const uint8_t *p = NULL;
	uint16_t nl = 0;
	const char *why;
	int rc;

	amber_rd_u16(r, &nl);
	if (amber_rd_bytes(r, &p, nl) < 0)
		return 0;
	if (!(e->name = dup_bytes(p, nl)))
		return amber_fail(AMBER_ERROR, "out of memory");
	e->name_len = nl;
	get_fixed(e, r);
	if (e->content > AMBER_C_DIR)
		return amber_fail(AMBER_ECORRUPT, "unknown content kind %u", e->content);
	if ((rc = get_target(e, r)) < 0 || (rc = get_xattrs(e, r)) < 0)
		return rc;
	if (r->bad)
		return 0;
	if ((why = entry_defect(e)) != NULL)
		return amber_fail(AMBER_ECORRUPT, "%s", why);
	return 0;
}

static int get_entries(amber_entry *v, size_t n, amber_rd *r)
{
	char why[256];
	int rc;

	for (size_t i = 0; i < n; i++) {
		if ((rc = get_entry(&v[i], r)) < 0) {
			/* Prefix the entry number to the defect named below. */
			snprintf(why, sizeof(why), "%s", amber_error_last());
			return amber_fail(rc, "manifest: entry %zu: %s", i, why);
		}
		if (r->bad)
			return amber_fail(AMBER_ECORRUPT, "manifest: entry %zu truncated", i);
		if (i && amber_name_cmp(v[i - 1].name, v[i - 1].name_len, v[i].name,
					v[i].name_len) >= 0)
			return amber_fail(AMBER_ECORRUPT,
					  "manifest: entry %zu: names not strictly sorted", i);
	}
	return 0;
}

/* The version and the entry count; *r is left at the first entry. */
static int decode_head(uint32_t *count, amber_rd *r, const void *data, size_t len)
{
	int rc;

	amber_rd_init(r, data, len);
	if ((rc = r_version(r, "manifest")) < 0)
		return rc;
	if (amber_rd_u32(r, count) < 0)
		return amber_fail(AMBER_ECORRUPT, "manifest: truncated");
	if (*count > AMBER_MANIFEST_MAX_ENTRIES || *count > r->left / ENTRY_MIN)
		return amber_fail(AMBER_ECORRUPT, "manifest: %u entries cannot fit in %zu bytes",
				  *count, len);
	return 0;
}

int amber_manifest_decode(amber_entry **out, size_t *n, const void *data, size_t len)
{
	amber_entry *v = NULL;
	uint32_t count = 0;
	amber_rd r;
	int rc;

	*out = NULL;
	*n = 0;
	if ((rc = decode_head(&count, &r, data, len)) < 0)
		return rc;
	if (count && !(v = calloc(count, sizeof(*v))))
		return amber_fail(AMBER_ERROR, "out of memory (%u manifest entries)", count);
	rc = get_entries(v, count, &r);
	if (rc == 0)
		rc = r_finish(&r, "manifest");
	if (rc < 0) {
		amber_entries_free(v, count);
		return rc;
	}
	*out = v;
	*n = count;
	return 0;
}

int amber_manifest_decode_into(amber_entry *v, size_t n, const void *data, size_t len)
{
	uint32_t count = 0;
	amber_rd r;
	int rc;

	memset(v, 0, n * sizeof(*v));
	if ((rc = decode_head(&count, &r, data, len)) < 0)
		return rc;
	if (count != n)
		return 1;
	rc = get_entries(v, count, &r);
	if (rc == 0)
		rc = r_finish(&r, "manifest");
	if (rc < 0)
		amber_entries_clear(v, n);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Entry memory                                                        */

static int copy_xattrs(amber_entry *dst, const amber_entry *src)
{
	if (src->nxattrs == 0)
		return 0;
	if (!(dst->xattrs = calloc(src->nxattrs, sizeof(*dst->xattrs))))
		return amber_fail(AMBER_ERROR, "out of memory");
	dst->nxattrs = src->nxattrs;
	for (size_t i = 0; i < src->nxattrs; i++) {
		const amber_xattr *x = &src->xattrs[i];

		dst->xattrs[i].name = dup_bytes(x->name, strlen(x->name));
		dst->xattrs[i].value = (uint8_t *)dup_bytes(x->value, x->value_len);
		dst->xattrs[i].value_len = x->value_len;
		if (!dst->xattrs[i].name || !dst->xattrs[i].value)
			return amber_fail(AMBER_ERROR, "out of memory");
	}
	return 0;
}

int amber_entry_copy(amber_entry *dst, const amber_entry *src)
{
	*dst = *src;
	dst->name = NULL;
	dst->target = NULL;
	dst->xattrs = NULL;
	dst->nxattrs = 0;
	if (!(dst->name = dup_bytes(src->name, src->name_len)))
		goto nomem;
	if (src->target && !(dst->target = dup_bytes(src->target, src->target_len)))
		goto nomem;
	if (copy_xattrs(dst, src) < 0)
		goto fail;
	return 0;
nomem:
	amber_fail(AMBER_ERROR, "out of memory");
fail:
	amber_entry_dispose(dst);
	return AMBER_ERROR;
}

void amber_entry_dispose(amber_entry *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->nxattrs; i++) {
		free(e->xattrs[i].name);
		free(e->xattrs[i].value);
	}
	free(e->xattrs);
	free(e->target);
	free(e->name);
	e->xattrs = NULL;
	e->nxattrs = 0;
	e->target = NULL;
	e->target_len = 0;
	e->name = NULL;
	e->name_len = 0;
}

void amber_entries_clear(amber_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		amber_entry_dispose(&e[i]);
	memset(e, 0, n * sizeof(*e));
}

void amber_entries_free(amber_entry *e, size_t n)
{
	if (!e)
		return;
	for (size_t i = 0; i < n; i++)
		amber_entry_dispose(&e[i]);
	free(e);
}

/* ------------------------------------------------------------------ */
/* Fan-out                                                             */

static const char *bucket_defect(const amber_bucket *b, size_t i, unsigned bits)
{
	if (b[i].count == 0 || b[i].count > AMBER_MANIFEST_MAX_ENTRIES)
		return "bucket entry count out of range";
	if (i && b[i - 1].id >= b[i].id)
		return "bucket ids not strictly increasing";
	if (b[i].id >> bits)
		return "bucket id out of range";
	return NULL;
}

static int bits_ok(unsigned bits)
{
	return bits >= AMBER_FANOUT_MIN_BITS && bits <= AMBER_FANOUT_MAX_BITS;
}

int amber_fanout_encode(amber_buf *out, unsigned bits, const amber_bucket *b, size_t n)
{
	wr w = {out, 0};
	size_t start = out->len;
	const char *why;

	if (!bits_ok(bits) || n == 0 || n > ((size_t)1 << bits))
		return amber_fail(AMBER_EINVAL, "fanout: %zu buckets of %u bits", n, bits);
	for (size_t i = 0; i < n; i++)
		if ((why = bucket_defect(b, i, bits)) != NULL)
			return amber_fail(AMBER_EINVAL, "fanout: bucket %zu: %s", i, why);
	w_u8(&w, LAYOUT_VERSION);
	w_u8(&w, (uint8_t)bits);
	w_u32(&w, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		w_u16(&w, b[i].id);
		w_u32(&w, b[i].count);
		w_bytes(&w, b[i].tree_oid, sizeof(b[i].tree_oid));
		w_link(&w, &b[i].link);
	}
	return w_finish(&w, start);
}

static int get_buckets(amber_bucket *v, size_t n, unsigned bits, amber_rd *r)
{
	const char *why;

	for (size_t i = 0; i < n; i++) {
		amber_rd_u16(r, &v[i].id);
		amber_rd_u32(r, &v[i].count);
		r_copy(r, v[i].tree_oid, sizeof(v[i].tree_oid));
		r_link(r, &v[i].link);
		if (r->bad)
			return amber_fail(AMBER_ECORRUPT, "fanout: truncated");
		if ((why = bucket_defect(v, i, bits)) != NULL)
			return amber_fail(AMBER_ECORRUPT, "fanout: bucket %zu: %s", i, why);
	}
	return r_finish(r, "fanout");
}

int amber_fanout_decode(amber_bucket **out, unsigned *bits, size_t *n, const void *data,
			size_t len)
{
	amber_bucket *v;
	uint32_t count = 0;
	uint8_t b = 0;
	amber_rd r;
	int rc;

	*out = NULL;
	*n = 0;
	amber_rd_init(&r, data, len);
	if ((rc = r_version(&r, "fanout")) < 0)
		return rc;
	if (amber_rd_u8(&r, &b) < 0 || amber_rd_u32(&r, &count) < 0)
		return amber_fail(AMBER_ECORRUPT, "fanout: truncated");
	if (!bits_ok(b) || count == 0 || count > (1u << b) || count > r.left / BUCKET_SIZE)
		return amber_fail(AMBER_ECORRUPT, "fanout: %u buckets of %u bits in %zu bytes",
				  count, b, len);
	if (!(v = calloc(count, sizeof(*v))))
		return amber_fail(AMBER_ERROR, "out of memory");
	if ((rc = get_buckets(v, count, b, &r)) < 0) {
		free(v);
		return rc;
	}
	*out = v;
	*bits = b;
	*n = count;
	return 0;
}

/* Fan-out layout 2: one node of the tree of buckets. */

#define FANOUT_NODE_VERSION 2
#define NODE_CHILD_SIZE (1 + 4 + 20 + LINK_SIZE)

int amber_fanout_layout(const void *data, size_t len)
{
	const uint8_t *p = data;

	return len && (p[0] == LAYOUT_VERSION || p[0] == FANOUT_NODE_VERSION) ? p[0] : -1;
}

static const char *node_defect(const amber_fanout_node *nd)
{
	unsigned w;
	uint64_t sum = 0;

	if (!bits_ok(nd->bits) || nd->level >= amber_fanout_levels(nd->bits))
		return "bits or level out of range";
	w = amber_fanout_width(nd->bits, nd->level);
	if (nd->prefix >> (nd->level * AMBER_FANOUT_DIGIT))
		return "prefix out of range";
	if (nd->n == 0 || nd->n > (1u << w))
		return "child count out of range";
	for (size_t i = 0; i < nd->n; i++) {
		const amber_bucket *c = &nd->c[i];

		if (c->count == 0 || c->count > AMBER_MANIFEST_MAX_ENTRIES)
			return "child entry count out of range";
		if (c->id >> w || (i && nd->c[i - 1].id >= c->id))
			return "child ids out of range or not strictly increasing";
		sum += c->count;
	}
	return sum > AMBER_MANIFEST_MAX_ENTRIES ? "more entries than a directory holds" : NULL;
}

int amber_fanout_node_encode(amber_buf *out, const amber_fanout_node *nd)
{
	wr w = {out, 0};
	size_t start = out->len;
	const char *why = node_defect(nd);

	if (why)
		return amber_fail(AMBER_EINVAL, "fanout node: %s", why);
	w_u8(&w, FANOUT_NODE_VERSION);
	w_u8(&w, (uint8_t)nd->bits);
	w_u8(&w, (uint8_t)nd->level);
	w_u16(&w, (uint16_t)nd->prefix);
	w_u8(&w, (uint8_t)nd->n);
	for (size_t i = 0; i < nd->n; i++) {
		w_u8(&w, (uint8_t)nd->c[i].id);
		w_u32(&w, nd->c[i].count);
		w_bytes(&w, nd->c[i].tree_oid, sizeof(nd->c[i].tree_oid));
		w_link(&w, &nd->c[i].link);
	}
	return w_finish(&w, start);
}

int amber_fanout_node_decode(amber_fanout_node *nd, const void *data, size_t len)
{
	uint8_t ver = 0, bits = 0, level = 0, n = 0;
	uint16_t prefix = 0;
	amber_rd r;
	const char *why;

	memset(nd, 0, sizeof(*nd));
	amber_rd_init(&r, data, len);
	amber_rd_u8(&r, &ver);
	amber_rd_u8(&r, &bits);
	amber_rd_u8(&r, &level);
	amber_rd_u16(&r, &prefix);
	amber_rd_u8(&r, &n);
	if (r.bad)
		return amber_fail(AMBER_ECORRUPT, "fanout node: truncated");
	if (ver != FANOUT_NODE_VERSION)
		return amber_fail(AMBER_ECORRUPT, "fanout node: unknown layout version %u", ver);
	if (n == 0 || n > AMBER_FANOUT_NODE_MAX || n > r.left / NODE_CHILD_SIZE)
		return amber_fail(AMBER_ECORRUPT, "fanout node: %u children in %zu bytes", n, len);
	nd->bits = bits;
	nd->level = level;
	nd->prefix = prefix;
	nd->n = n;
	for (size_t i = 0; i < n; i++) {
		uint8_t id = 0;

		amber_rd_u8(&r, &id);
		nd->c[i].id = id;
		amber_rd_u32(&r, &nd->c[i].count);
		r_copy(&r, nd->c[i].tree_oid, sizeof(nd->c[i].tree_oid));
		r_link(&r, &nd->c[i].link);
	}
	if (r.bad)
		return amber_fail(AMBER_ECORRUPT, "fanout node: truncated");
	if ((why = node_defect(nd)) != NULL)
		return amber_fail(AMBER_ECORRUPT, "fanout node: %s", why);
	return r_finish(&r, "fanout node");
}

/* ------------------------------------------------------------------ */
/* Chunk index                                                         */

int amber_index_encode(amber_buf *out, const amber_chunkref *c, size_t n)
{
	wr w = {out, 0};
	size_t start = out->len;

	if (n == 0 || n > AMBER_INDEX_MAX_CHUNKS)
		return amber_fail(AMBER_EINVAL, "index: %zu chunks", n);
	for (size_t i = 0; i < n; i++)
		if (c[i].len == 0)
			return amber_fail(AMBER_EINVAL, "index: chunk %zu is empty", i);
	w_u8(&w, LAYOUT_VERSION);
	w_u32(&w, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		w_link(&w, &c[i].link);
		w_u32(&w, c[i].len);
	}
	return w_finish(&w, start);
}

static int get_chunks(amber_chunkref *v, size_t n, amber_rd *r, uint64_t file_size,
		      size_t max_chunk)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < n; i++) {
		r_link(r, &v[i].link);
		amber_rd_u32(r, &v[i].len);
		if (r->bad)
			return amber_fail(AMBER_ECORRUPT, "index: truncated");
		if (v[i].len == 0 || v[i].len > max_chunk)
			return amber_fail(AMBER_ECORRUPT, "index: chunk %zu has length %u", i,
					  v[i].len);
		if (v[i].len > file_size - sum)
			return amber_fail(AMBER_ECORRUPT, "index: chunks exceed the file size %llu",
					  (unsigned long long)file_size);
		sum += v[i].len;
	}
	if (sum != file_size)
		return amber_fail(AMBER_ECORRUPT, "index: chunks add up to %llu, file size %llu",
				  (unsigned long long)sum, (unsigned long long)file_size);
	return r_finish(r, "index");
}

int amber_index_decode(amber_chunkref **out, size_t *n, const void *data, size_t len,
		       uint64_t file_size, size_t max_chunk)
{
	amber_chunkref *v;
	uint32_t count = 0;
	amber_rd r;
	int rc;

	*out = NULL;
	*n = 0;
	amber_rd_init(&r, data, len);
	if ((rc = r_version(&r, "index")) < 0)
		return rc;
	if (amber_rd_u32(&r, &count) < 0)
		return amber_fail(AMBER_ECORRUPT, "index: truncated");
	if (count == 0 || count > AMBER_INDEX_MAX_CHUNKS || count > r.left / CHUNKREF_SIZE)
		return amber_fail(AMBER_ECORRUPT, "index: %u chunks in %zu bytes", count, len);
	if (!(v = calloc(count, sizeof(*v))))
		return amber_fail(AMBER_ERROR, "out of memory (%u chunk refs)", count);
	if ((rc = get_chunks(v, count, &r, file_size, max_chunk)) < 0) {
		free(v);
		return rc;
	}
	*out = v;
	*n = count;
	return 0;
}

/* Index layout 2: the root of a paged index. */

#define INDEX_ROOT_VERSION 2
#define INDEXPAGE_SIZE (4 + 8 + 20 + LINK_SIZE)

int amber_index_layout(const void *data, size_t len)
{
	const uint8_t *p = data;

	return len && (p[0] == LAYOUT_VERSION || p[0] == INDEX_ROOT_VERSION) ? p[0] : -1;
}

static const char *page_size_defect(const amber_indexpage *p, size_t i, size_t n,
				    size_t max_chunk)
{
	if (i + 1 < n ? p[i].chunks != AMBER_INDEX_PAGE
		      : p[i].chunks == 0 || p[i].chunks > AMBER_INDEX_PAGE)
		return "page chunk count out of place";
	if (p[i].bytes < p[i].chunks || p[i].bytes > (uint64_t)p[i].chunks * max_chunk)
		return "page byte count out of range";
	return NULL;
}

int amber_index_root_encode(amber_buf *out, const amber_indexpage *p, size_t n)
{
	wr w = {out, 0};
	size_t start = out->len;
	const char *why;

	if (n < 2 || n > AMBER_INDEX_MAX_PAGES)
		return amber_fail(AMBER_EINVAL, "index root: %zu pages", n);
	for (size_t i = 0; i < n; i++)
		if ((why = page_size_defect(p, i, n, AMBER_CHUNK_MAX)) != NULL)
			return amber_fail(AMBER_EINVAL, "index root: page %zu: %s", i, why);
	w_u8(&w, INDEX_ROOT_VERSION);
	w_u32(&w, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		w_u32(&w, p[i].chunks);
		w_u64(&w, p[i].bytes);
		w_bytes(&w, p[i].tree_oid, sizeof(p[i].tree_oid));
		w_link(&w, &p[i].link);
	}
	return w_finish(&w, start);
}

static int get_pages(amber_indexpage *v, size_t n, amber_rd *r, uint64_t file_size,
		     size_t max_chunk)
{
	uint64_t sum = 0;
	const char *why;

	for (size_t i = 0; i < n; i++) {
		amber_rd_u32(r, &v[i].chunks);
		amber_rd_u64(r, &v[i].bytes);
		r_copy(r, v[i].tree_oid, sizeof(v[i].tree_oid));
		r_link(r, &v[i].link);
		if (r->bad)
			return amber_fail(AMBER_ECORRUPT, "index root: truncated");
		if ((why = page_size_defect(v, i, n, max_chunk)) != NULL)
			return amber_fail(AMBER_ECORRUPT, "index root: page %zu: %s", i, why);
		if (v[i].bytes > file_size - sum)
			return amber_fail(AMBER_ECORRUPT, "index root: pages exceed the file size "
					  "%" PRIu64, file_size);
		sum += v[i].bytes;
	}
	if (sum != file_size)
		return amber_fail(AMBER_ECORRUPT, "index root: pages add up to %" PRIu64
				  ", file size %" PRIu64, sum, file_size);
	return r_finish(r, "index root");
}

int amber_index_root_decode(amber_indexpage **out, size_t *n, const void *data, size_t len,
			    uint64_t file_size, size_t max_chunk)
{
	amber_indexpage *v;
	uint32_t count = 0;
	uint8_t ver = 0;
	amber_rd r;
	int rc;

	*out = NULL;
	*n = 0;
	amber_rd_init(&r, data, len);
	if (amber_rd_u8(&r, &ver) < 0 || amber_rd_u32(&r, &count) < 0)
		return amber_fail(AMBER_ECORRUPT, "index root: truncated");
	if (ver != INDEX_ROOT_VERSION)
		return amber_fail(AMBER_ECORRUPT, "index root: unknown layout version %u", ver);
	if (count < 2 || count > AMBER_INDEX_MAX_PAGES || count > r.left / INDEXPAGE_SIZE)
		return amber_fail(AMBER_ECORRUPT, "index root: %u pages in %zu bytes", count, len);
	if (!(v = calloc(count, sizeof(*v))))
		return amber_fail(AMBER_ERROR, "out of memory");
	if ((rc = get_pages(v, count, &r, file_size, max_chunk)) < 0) {
		free(v);
		return rc;
	}
	*out = v;
	*n = count;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Snapshot record                                                     */

static int text_ok(const char *s)
{
	return !s || strnlen(s, RECORD_TEXT_MAX + 1) <= RECORD_TEXT_MAX;
}

/*
 * The root has no parent manifest to carry its metadata, so the record
 * carries its entry; it must describe the very tree and manifest the
 * record names, or a valid entry from elsewhere could be spliced in.
 */
static const char *root_meta_defect(const amber_record *r)
{
	amber_entry *e = NULL;
	size_t n = 0;
	const char *why = NULL;

	if (amber_manifest_decode(&e, &n, r->root_meta, r->root_meta_len) < 0)
		why = "root entry is not a valid manifest";
	else if (n != 1 || e[0].type != AMBER_T_DIR)
		why = "root entry is not one directory";
	else if (memcmp(e[0].tree_oid, r->tree, sizeof(r->tree)) != 0 ||
		 memcmp(&e[0].link, &r->root, sizeof(r->root)) != 0)
		why = "root entry does not match the root tree and link";
	amber_entries_free(e, n);
	return why;
}

/* The newest page below a record is the last whole span under it, or none. */
static const char *page_defect(const amber_record *r)
{
	if (r->page_span < 2 || r->page_span > AMBER_PAGE_SPAN_MAX)
		return "index page span out of range";
	if (r->page_height % r->page_span != 0 || r->page_height >= r->height)
		return "index page height is not a multiple of its span below the record";
	if (r->page_height && r->height - 1 - r->page_height >= r->page_span)
		return "index page is not the newest below the record";
	if (!r->page_height && !all_zero((const uint8_t *)&r->page, sizeof(r->page)))
		return "index page link set without a page";
	return NULL;
}

/*
 * What one record can say about its own index: the link count its height
 * implies, the parent as link 0, older times the farther back.  Whether the
 * links name the right ancestors is checked by readers that follow them and
 * by verify (lib/history.c).
 */
static const char *index_defect(const amber_record *r)
{
	if (r->has_parent != (r->height > 1))
		return "height does not match having a parent";
	if (r->nskip != amber_skip_count(r->height))
		return "wrong number of skip links for its height";
	if (r->nskip && memcmp(r->skip[0].oid, r->parent, 20) != 0)
		return "first skip link is not the parent";
	for (size_t i = 0; i < r->nskip; i++)
		if (r->skip[i].time_ns >= (i ? r->skip[i - 1].time_ns : r->time_ns))
			return "skip link times do not decrease";
	return r->page_span ? page_defect(r) : NULL;
}

static const char *record_defect(const amber_record *r)
{
	const char *why;

	if (r->has_parent != 0 && r->has_parent != 1)
		return "has_parent is not 0 or 1";
	if (!r->has_parent && !all_zero(r->parent, sizeof(r->parent)))
		return "parent set without has_parent";
	if (r->root_content != AMBER_C_DIR)
		return "root is not a directory";
	if (!amber_refname_valid(r->stream))
		return "invalid stream name";
	if (!text_ok(r->host) || !text_ok(r->source) || !text_ok(r->message))
		return "text field longer than 4096 bytes";
	if (r->root_meta_len > UINT32_MAX)
		return "root entry too large";
	if (r->height && (why = index_defect(r)) != NULL)
		return why;
	return root_meta_defect(r);
}

static void put_text(wr *w, const char *s)
{
	size_t len = s ? strlen(s) : 0;

	w_u16(w, (uint16_t)len);
	w_bytes(w, s, len);
}

static void put_stats(wr *w, const amber_stats *s)
{
	w_u64(w, s->files);
	w_u64(w, s->dirs);
	w_u64(w, s->bytes);
	w_u64(w, s->bytes_read);
	w_u64(w, s->bytes_new);
	w_u64(w, s->objects_new);
	w_u64(w, s->errors);
}

int amber_record_encode(amber_buf *out, const amber_record *r)
{
	wr w = {out, 0};
	size_t start = out->len;
	const char *why;

	if ((why = record_defect(r)) != NULL)
		return amber_fail(AMBER_EINVAL, "record: %s", why);
	if (r->unsigned_on_purpose)
		w_u8(&w, RECORD_VERSION_FLAGS);
	else
		w_u8(&w, r->page_span ? RECORD_VERSION_PAGED
			 : r->height ? RECORD_VERSION_INDEXED : LAYOUT_VERSION);
	w_bytes(&w, r->tree, sizeof(r->tree));
	w_u8(&w, (uint8_t)r->has_parent);
	w_bytes(&w, r->parent, sizeof(r->parent));
	w_link(&w, &r->root);
	w_u8(&w, r->root_content);
	w_u32(&w, (uint32_t)r->root_meta_len);
	w_bytes(&w, r->root_meta, r->root_meta_len);
	w_u8(&w, (uint8_t)strlen(r->stream));
	w_bytes(&w, r->stream, strlen(r->stream));
	w_u64(&w, (uint64_t)r->time_ns);
	put_text(&w, r->host);
	put_text(&w, r->source);
	put_text(&w, r->message);
	put_stats(&w, &r->stats);
	if (r->unsigned_on_purpose)
		w_u8(&w, RECORD_FLAG_UNSIGNED | (r->height ? RECORD_FLAG_INDEXED : 0) |
			 (r->page_span ? RECORD_FLAG_PAGED : 0));
	if (r->height) {
		w_u64(&w, r->height);
		w_u8(&w, (uint8_t)r->nskip);
		for (size_t i = 0; i < r->nskip; i++) {
			w_bytes(&w, r->skip[i].oid, 20);
			w_u64(&w, (uint64_t)r->skip[i].time_ns);
		}
	}
	if (r->page_span) {
		w_u32(&w, r->page_span);
		w_u64(&w, r->page_height);
		w_link(&w, &r->page);
	}
	return w_finish(&w, start);
}

static int get_text(char **out, amber_rd *r)
{
	const uint8_t *p = NULL;
	uint16_t len = 0;

	amber_rd_u16(r, &len);
	if (amber_rd_bytes(r, &p, len) < 0)
		return 0;
	if (len > RECORD_TEXT_MAX || memchr(p, '\0', len))
		return amber_fail(AMBER_ECORRUPT, "record: text field too long or contains NUL");
	if (!(*out = dup_bytes(p, len)))
		return amber_fail(AMBER_ERROR, "out of memory");
	return 0;
}

static int get_stream(amber_record *rec, amber_rd *r)
{
	const uint8_t *p = NULL;
	uint8_t len = 0;

	amber_rd_u8(r, &len);
	if (amber_rd_bytes(r, &p, len) < 0)
		return 0;
	/* A NUL inside would hide bytes from amber_refname_valid(). */
	if (len > AMBER_STREAM_MAX || memchr(p, '\0', len))
		return amber_fail(AMBER_ECORRUPT, "record: invalid stream name");
	memcpy(rec->stream, p, len);
	rec->stream[len] = '\0';
	return 0;
}

static int get_root_meta(amber_record *rec, amber_rd *r)
{
	const uint8_t *p = NULL;
	uint32_t len = 0;

	amber_rd_u32(r, &len);
	if (amber_rd_bytes(r, &p, len) < 0)
		return 0;
	/* A copy: the record outlives the buffer it was decoded from. */
	if (!(rec->root_meta = malloc(len ? len : 1)))
		return amber_fail(AMBER_ERROR, "out of memory");
	memcpy(rec->root_meta, p, len);
	rec->root_meta_len = len;
	return 0;
}

static void get_stats(amber_stats *s, amber_rd *r)
{
	s->version = AMBER_STATS_VERSION; /* as amber_snapinfo hands it out */
	amber_rd_u64(r, &s->files);
	amber_rd_u64(r, &s->dirs);
	amber_rd_u64(r, &s->bytes);
	amber_rd_u64(r, &s->bytes_read);
	amber_rd_u64(r, &s->bytes_new);
	amber_rd_u64(r, &s->objects_new);
	amber_rd_u64(r, &s->errors);
}

static int get_index(amber_record *rec, amber_rd *r)
{
	uint8_t n = 0;

	amber_rd_u64(r, &rec->height);
	amber_rd_u8(r, &n);
	if (rec->height == 0 || n > AMBER_SKIP_MAX)
		return amber_fail(AMBER_ECORRUPT, "record: invalid height or skip link count");
	rec->nskip = n;
	for (size_t i = 0; i < rec->nskip; i++) {
		r_copy(r, rec->skip[i].oid, 20);
		r_i64(r, &rec->skip[i].time_ns);
	}
	return 0;
}

static void get_page_ref(amber_record *rec, amber_rd *r)
{
	amber_rd_u32(r, &rec->page_span);
	amber_rd_u64(r, &rec->page_height);
	r_link(r, &rec->page);
}

/*
 * Version 4: the flags byte says what follows; unknown flags are refused,
 * and so are pages without the index they hang from.
 */
static int get_flags(amber_record *rec, amber_rd *r, int *indexed, int *paged)
{
	uint8_t f = 0;

	if (amber_rd_u8(r, &f) < 0)
		return 0; /* r_finish reports the short payload */
	if (f & ~(RECORD_FLAG_UNSIGNED | RECORD_FLAG_INDEXED | RECORD_FLAG_PAGED))
		return amber_fail(AMBER_ECORRUPT, "record: unknown flags 0x%02x", f);
	if ((f & RECORD_FLAG_PAGED) && !(f & RECORD_FLAG_INDEXED))
		return amber_fail(AMBER_ECORRUPT, "record: index pages without the time index");
	rec->unsigned_on_purpose = (f & RECORD_FLAG_UNSIGNED) != 0;
	*indexed = (f & RECORD_FLAG_INDEXED) != 0;
	*paged = (f & RECORD_FLAG_PAGED) != 0;
	return 0;
}

static int get_record(amber_record *rec, amber_rd *r, int ver)
{
	int indexed = ver == RECORD_VERSION_INDEXED || ver == RECORD_VERSION_PAGED;
	int paged = ver == RECORD_VERSION_PAGED;
	uint8_t hp = 0;
	const char *why;
	int rc;

	r_copy(r, rec->tree, sizeof(rec->tree));
	amber_rd_u8(r, &hp);
	rec->has_parent = hp;
	r_copy(r, rec->parent, sizeof(rec->parent));
	r_link(r, &rec->root);
	amber_rd_u8(r, &rec->root_content);
	if ((rc = get_root_meta(rec, r)) < 0 || (rc = get_stream(rec, r)) < 0)
		return rc;
	r_i64(r, &rec->time_ns);
	if ((rc = get_text(&rec->host, r)) < 0 || (rc = get_text(&rec->source, r)) < 0 ||
	    (rc = get_text(&rec->message, r)) < 0)
		return rc;
	get_stats(&rec->stats, r);
	if (ver == RECORD_VERSION_FLAGS && (rc = get_flags(rec, r, &indexed, &paged)) < 0)
		return rc;
	if (indexed && (rc = get_index(rec, r)) < 0)
		return rc;
	if (paged)
		get_page_ref(rec, r);
	if ((rc = r_finish(r, "record")) < 0)
		return rc;
	if ((why = record_defect(rec)) != NULL)
		return amber_fail(AMBER_ECORRUPT, "record: %s", why);
	return 0;
}

int amber_record_decode(amber_record *rec, const void *data, size_t len)
{
	amber_rd r;
	uint8_t ver = 0;
	int rc;

	memset(rec, 0, sizeof(*rec));
	amber_rd_init(&r, data, len);
	if (amber_rd_u8(&r, &ver) < 0)
		return amber_fail(AMBER_ECORRUPT, "record: empty payload");
	/* layout 1 records (no index) and 2 (no pages) stay readable: readers walk */
	if (ver < LAYOUT_VERSION || ver > RECORD_VERSION_FLAGS)
		return amber_fail(AMBER_ECORRUPT, "record: unknown layout version %u", ver);
	if ((rc = get_record(rec, &r, ver)) < 0)
		amber_record_dispose(rec);
	return rc;
}

void amber_record_dispose(amber_record *r)
{
	if (!r)
		return;
	free(r->host);
	free(r->source);
	free(r->message);
	free(r->root_meta);
	r->host = r->source = r->message = NULL;
	r->root_meta = NULL;
	r->root_meta_len = 0;
}

/* ------------------------------------------------------------------ */
/* Index page                                                          */

static const char *page_defect_of(const amber_page *p)
{
	if (p->n < 2 || p->n > AMBER_PAGE_SPAN_MAX || p->first == 0 || p->first > UINT64_MAX - p->n)
		return "entry count or first height out of range";
	if (p->prev_height ? p->prev_height != p->first - 1
			   : !all_zero((const uint8_t *)&p->prev, sizeof(p->prev)))
		return "the page before does not end just below this one";
	for (uint32_t i = 1; i < p->n; i++)
		if (p->v[i].time_ns <= p->v[i - 1].time_ns)
			return "times do not increase";
	return NULL;
}

int amber_page_encode(amber_buf *out, const amber_page *p)
{
	wr w = {out, 0};
	size_t start = out->len;
	const char *why = page_defect_of(p);

	if (why)
		return amber_fail(AMBER_EINVAL, "index page: %s", why);
	w_u8(&w, PAGE_VERSION);
	w_u64(&w, p->first);
	w_u32(&w, p->n);
	w_u64(&w, p->prev_height);
	w_link(&w, &p->prev);
	for (uint32_t i = 0; i < p->n; i++) {
		w_u64(&w, (uint64_t)p->v[i].time_ns);
		w_bytes(&w, p->v[i].oid, 20);
	}
	return w_finish(&w, start);
}

int amber_page_decode(amber_page *p, const void *data, size_t len)
{
	amber_rd r;
	uint8_t ver = 0;
	const char *why;
	int rc;

	memset(p, 0, sizeof(*p));
	amber_rd_init(&r, data, len);
	amber_rd_u8(&r, &ver);
	amber_rd_u64(&r, &p->first);
	amber_rd_u32(&r, &p->n);
	amber_rd_u64(&r, &p->prev_height);
	r_link(&r, &p->prev);
	if (ver != PAGE_VERSION || p->n < 2 || p->n > AMBER_PAGE_SPAN_MAX ||
	    p->n > r.left / PAGE_ENT_SIZE)
		return amber_fail(AMBER_ECORRUPT, "index page: unknown version or bad entry count");
	if (!(p->v = malloc(p->n * sizeof(*p->v))))
		return amber_fail(AMBER_ERROR, "out of memory");
	for (uint32_t i = 0; i < p->n; i++) {
		r_i64(&r, &p->v[i].time_ns);
		r_copy(&r, p->v[i].oid, 20);
	}
	rc = r_finish(&r, "index page");
	if (rc == 0 && (why = page_defect_of(p)) != NULL)
		rc = amber_fail(AMBER_ECORRUPT, "index page: %s", why);
	if (rc < 0) {
		free(p->v);
		p->v = NULL;
	}
	return rc;
}
