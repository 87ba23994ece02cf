/*
 * The pack reader (lib/packread.c) through amber_store_read: packs with
 * OFS_DELTA and REF_DELTA entries read back right; hostile deltas, chains
 * and cycles, truncated and oversized entries are errors, never crashes;
 * a pack truncated under an open store gives an error naming it (libgit2's
 * mmap'ed reader died of SIGBUS); two threads read at once.
 *
 * The packs are written here by hand (header, entries, trailer, a version-2
 * index), so that they can say what git would never write.
 */
#include <criterion/criterion.h>

#include "buf.h"
#include "error.h"
#include "packread.h"
#include "scratch.h"
#include "store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>

#define OK(expr)                                                                   \
	do {                                                                       \
		int rc_ = (expr);                                                  \
		cr_assert_eq(rc_, 0, "%s: %d: %s", #expr, rc_, amber_error_last()); \
	} while (0)

static void setup(void)
{
	scratch_make("packread");
	OK(amber_store_global_init());
}

TestSuite(packread, .init = setup, .fini = scratch_remove, .timeout = 60);

/* A pack written by hand ----------------------------------------------------- */

#define MAXENT 7000

struct pack {
	uint8_t *p;
	size_t len, cap;
	size_t n;
	uint8_t id[MAXENT][20];
	uint64_t off[MAXENT];
	uint32_t crc[MAXENT];
};

static void put(struct pack *k, const void *d, size_t n)
{
	if (k->len + n > k->cap) {
		k->cap = (k->len + n) * 2;
		k->p = realloc(k->p, k->cap);
		cr_assert_not_null(k->p);
	}
	memcpy(k->p + k->len, d, n);
	k->len += n;
}

static void pack_begin(struct pack *k)
{
	memset(k, 0, sizeof(*k));
	put(k, "PACK\0\0\0\2\0\0\0\0", 12);
}

static void fake_id(uint8_t id[20], unsigned i)
{
	memset(id, 0, 20);
	id[0] = (uint8_t)(0x40 + i % 64);
	id[1] = (uint8_t)(i >> 8);
	id[2] = (uint8_t)i;
	id[19] = 0xee;
}

/* A zlib stream of stored blocks of at most `block` bytes (an empty final one
 * if `tail`), as a pack written with compression 0 holds; free *out. */
static size_t stored_stream(uint8_t **out, const uint8_t *d, size_t len, size_t block, int tail)
{
	size_t n = 2 + 5 * (len / block + 2) + len + 4, o = 2, i = 0;
	uint8_t *z = malloc(n);
	uLong a = adler32(1, d, (uInt)len);

	cr_assert_not_null(z);
	z[0] = 0x78;
	z[1] = 0x01;
	do {
		size_t b = len - i < block ? len - i : block;
		int fin = !tail && i + b == len;

		z[o] = (uint8_t)fin;
		z[o + 1] = (uint8_t)b;
		z[o + 2] = (uint8_t)(b >> 8);
		z[o + 3] = (uint8_t)~b;
		z[o + 4] = (uint8_t)(~b >> 8);
		memcpy(z + o + 5, d + i, b);
		o += 5 + b;
		i += b;
	} while (i < len);
	if (tail) {
		memcpy(z + o, "\1\0\0\377\377", 5);
		o += 5;
	}
	for (int k = 3; k >= 0; k--)
		z[o++] = (uint8_t)(a >> 8 * k);
	*out = z;
	return o;
}

/* Entry header: type and size; then rel (OFS) or ref (REF); then the zlib stream z. */
static size_t pack_z(struct pack *k, const uint8_t id[20], int type, uint64_t size,
		     uint64_t base_off, const uint8_t *ref, const uint8_t *z, size_t zl)
{
	size_t start = k->len, i = k->n++;
	uint8_t h[32], c;
	size_t hn = 0;

	cr_assert_lt(i, MAXENT);
	c = (uint8_t)(type << 4 | (size & 15));
	size >>= 4;
	while (size) {
		h[hn++] = c | 0x80;
		c = size & 0x7f;
		size >>= 7;
	}
	h[hn++] = c;
	if (type == 6) {
		uint64_t rel = start - base_off;
		uint8_t v[16];
		int vn = 15;

		v[vn] = rel & 0x7f;
		while (rel >>= 7)
			v[--vn] = 0x80 | (--rel & 0x7f);
		memcpy(h + hn, v + vn, (size_t)(16 - vn));
		hn += (size_t)(16 - vn);
	}
	put(k, h, hn);
	if (type == 7)
		put(k, ref, 20);
	put(k, z, zl);
	memcpy(k->id[i], id, 20);
	k->off[i] = start;
	k->crc[i] = (uint32_t)crc32(0, k->p + start, (uInt)(k->len - start));
	return i;
}

/* The same with data deflated (level 1). */
static size_t pack_entry(struct pack *k, const uint8_t id[20], int type, uint64_t size,
			 uint64_t base_off, const uint8_t *ref, const void *data, size_t len)
{
	uLongf zl = compressBound((uLong)len);
	uint8_t *z = malloc(zl);
	size_t i;

	cr_assert_eq(compress2(z, &zl, data, (uLong)len, 1), Z_OK);
	i = pack_z(k, id, type, size, base_off, ref, z, zl);
	free(z);
	return i;
}

static size_t add_obj(struct pack *k, const uint8_t id[20], int type, const void *d, size_t n)
{
	return pack_entry(k, id, type, n, 0, NULL, d, n);
}

static size_t add_ofs(struct pack *k, const uint8_t id[20], size_t bse, const void *delta,
		      size_t n)
{
	return pack_entry(k, id, 6, n, k->off[bse], NULL, delta, n);
}

static size_t add_ref(struct pack *k, const uint8_t id[20], const uint8_t bse[20],
		      const void *delta, size_t n)
{
	return pack_entry(k, id, 7, n, 0, bse, delta, n);
}

static void sha1(uint8_t out[20], const void *d, size_t n)
{
	cr_assert_eq(EVP_Digest(d, n, out, NULL, EVP_sha1(), NULL), 1);
}

static void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static struct pack *sort_ctx;

static int cmp_pos(const void *a, const void *b)
{
	return memcmp(sort_ctx->id[*(const size_t *)a], sort_ctx->id[*(const size_t *)b], 20);
}

static void write_file(const char *path, const void *d, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	cr_assert(fd >= 0, "%s", path);
	cr_assert_eq(write(fd, d, n), (ssize_t)n);
	close(fd);
}

/* Finish k into repo/objects/pack; pack_path receives the .pack's path. */
static void pack_write(struct pack *k, const char *repo, char pack_path[4200])
{
	uint8_t sum[20], *idx, *q;
	static size_t pos[MAXENT];
	size_t ilen = 8 + 1024 + 28 * k->n + 40;
	char hex[41];

	be32(k->p + 8, (uint32_t)k->n);
	sha1(sum, k->p, k->len);
	put(k, sum, 20);
	for (size_t i = 0; i < k->n; i++)
		pos[i] = i;
	sort_ctx = k;
	qsort(pos, k->n, sizeof(pos[0]), cmp_pos);
	q = idx = calloc(1, ilen);
	memcpy(q, "\377tOc\0\0\0\2", 8);
	for (int b = 0; b < 256; b++) {
		uint32_t c = 0;

		for (size_t i = 0; i < k->n; i++)
			c += k->id[i][0] <= b;
		be32(q + 8 + 4 * b, c);
	}
	q += 8 + 1024;
	for (size_t i = 0; i < k->n; i++, q += 20)
		memcpy(q, k->id[pos[i]], 20);
	for (size_t i = 0; i < k->n; i++, q += 4)
		be32(q, k->crc[pos[i]]);
	for (size_t i = 0; i < k->n; i++, q += 4)
		be32(q, (uint32_t)k->off[pos[i]]);
	memcpy(q, sum, 20);
	sha1(q + 20, idx, ilen - 20);
	amber_oid_tohex(hex, sum);
	snprintf(pack_path, 4200, "%s/objects/pack/pack-%s.pack", repo, hex);
	write_file(pack_path, k->p, k->len);
	char idx_path[4200];

	snprintf(idx_path, sizeof(idx_path), "%s/objects/pack/pack-%s.idx", repo, hex);
	write_file(idx_path, idx, ilen);
	free(idx);
	free(k->p);
	k->p = NULL;
}

/* Deltas --------------------------------------------------------------------- */

struct delta {
	uint8_t d[1 << 16];
	size_t n;
};

static void d_varint(struct delta *d, uint64_t v)
{
	while (v >= 0x80) {
		d->d[d->n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	d->d[d->n++] = (uint8_t)v;
}

static void d_head(struct delta *d, uint64_t src, uint64_t dst)
{
	d->n = 0;
	d_varint(d, src);
	d_varint(d, dst);
}

static void d_copy(struct delta *d, uint32_t off, uint32_t size)
{
	d->d[d->n++] = 0x80 | 0x0f | 0x70;
	for (int i = 0; i < 4; i++)
		d->d[d->n++] = (uint8_t)(off >> 8 * i);
	for (int i = 0; i < 3; i++)
		d->d[d->n++] = (uint8_t)(size >> 8 * i);
}

static void d_insert(struct delta *d, const void *p, uint8_t n)
{
	d->d[d->n++] = n;
	memcpy(d->d + d->n, p, n);
	d->n += n;
}

static uint8_t *pattern(size_t n, unsigned seed)
{
	uint8_t *p = malloc(n ? n : 1);

	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i * 31 + seed) ^ (i >> 7));
	return p;
}

static amber_store *open_repo(const char *name)
{
	amber_store *s = NULL;

	OK(amber_store_init(&s, at(name)));
	return s;
}

static int read_obj(amber_buf *b, int *type, amber_store *s, const uint8_t id[20])
{
	amber_buf_init(b, (size_t)256 << 20);
	OK(amber_store_refresh(s));
	return amber_store_read(b, type, s, id, (size_t)128 << 20);
}

static void expect_bytes(amber_store *s, const uint8_t id[20], int type, const void *d, size_t n)
{
	amber_buf b;
	int t = 0;

	OK(read_obj(&b, &t, s, id));
	cr_assert_eq(t, type);
	cr_assert_eq(b.len, n);
	cr_assert(n == 0 || memcmp(b.data, d, n) == 0, "wrong bytes");
	amber_buf_dispose(&b);
}

static void expect_corrupt(amber_store *s, const uint8_t id[20], const char *needle)
{
	amber_buf b;
	int t = 0, rc = read_obj(&b, &t, s, id);

	cr_assert_lt(rc, 0, "a hostile object was read (%zu bytes)", b.len);
	cr_assert(strstr(amber_error_last(), needle), "message '%s' lacks '%s'",
		  amber_error_last(), needle);
	amber_buf_dispose(&b);
}

/* Tests ---------------------------------------------------------------------- */

Test(packread, ofs_and_ref_deltas_read_back)
{
	amber_store *s = open_repo("a");
	static struct pack k;
	struct delta d;
	uint8_t *bse = pattern(10000, 1), want1[10010], want2[300], id[4][20];
	char path[4200];

	pack_begin(&k);
	amber_store_hash(id[0], AMBER_GIT_BLOB, bse, 10000);
	add_obj(&k, id[0], AMBER_GIT_BLOB, bse, 10000);
	/* want1 = base[0..5000) "0123456789" base[5000..10000) */
	memcpy(want1, bse, 5000);
	memcpy(want1 + 5000, "0123456789", 10);
	memcpy(want1 + 5010, bse + 5000, 5000);
	d_head(&d, 10000, 10010);
	d_copy(&d, 0, 5000);
	d_insert(&d, "0123456789", 10);
	d_copy(&d, 5000, 5000);
	amber_store_hash(id[1], AMBER_GIT_BLOB, want1, 10010);
	add_ofs(&k, id[1], 0, d.d, d.n);
	/* want2, a REF_DELTA against the OFS_DELTA: a chain of two */
	memcpy(want2, want1 + 4990, 290);
	memcpy(want2 + 290, "abcdefghij", 10);
	d_head(&d, 10010, 300);
	d_copy(&d, 4990, 290);
	d_insert(&d, "abcdefghij", 10);
	amber_store_hash(id[2], AMBER_GIT_BLOB, want2, 300);
	add_ref(&k, id[2], id[1], d.d, d.n);
	/* an empty object from a delta (a copy of nothing is not an op: no ops) */
	d_head(&d, 10000, 0);
	amber_store_hash(id[3], AMBER_GIT_BLOB, "", 0);
	add_ofs(&k, id[3], 0, d.d, d.n);
	pack_write(&k, at("a"), path);

	expect_bytes(s, id[0], AMBER_GIT_BLOB, bse, 10000);
	expect_bytes(s, id[1], AMBER_GIT_BLOB, want1, 10010);
	expect_bytes(s, id[2], AMBER_GIT_BLOB, want2, 300);
	expect_bytes(s, id[3], AMBER_GIT_BLOB, "", 0);
	cr_assert_eq(amber_store_exists(s, id[2]), 1);
	amber_store_free(s);
	free(bse);
}

Test(packread, hostile_deltas_are_errors)
{
	amber_store *s = open_repo("a");
	static struct pack k;
	struct delta d;
	uint8_t *bse = pattern(1000, 2), id[17][20], nowhere[20];
	char path[4200];
	size_t b;

	for (unsigned i = 0; i < 17; i++)
		fake_id(id[i], i);
	fake_id(nowhere, 999);
	pack_begin(&k);
	b = add_obj(&k, id[0], AMBER_GIT_BLOB, bse, 1000);
	d_head(&d, 1000, 100);			/* 1: copy past the end of the bse */
	d_copy(&d, 950, 100);
	add_ofs(&k, id[1], b, d.d, d.n);
	d_head(&d, 1000, 200);			/* 2: produces 100, declares 200 */
	d_copy(&d, 0, 100);
	add_ofs(&k, id[2], b, d.d, d.n);
	d_head(&d, 1000, 50);			/* 3: produces more than it declares */
	d_copy(&d, 0, 100);
	add_ofs(&k, id[3], b, d.d, d.n);
	d_head(&d, 999, 10);			/* 4: the bse is not the size declared */
	d_copy(&d, 0, 10);
	add_ofs(&k, id[4], b, d.d, d.n);
	d_head(&d, 1000, 10);			/* 5: an insert running off the delta */
	d.d[d.n++] = 100;
	memcpy(d.d + d.n, "short", 5);
	d.n += 5;
	add_ofs(&k, id[5], b, d.d, d.n);
	d_head(&d, 1000, 10);			/* 6: reserved op 0 */
	d.d[d.n++] = 0;
	add_ofs(&k, id[6], b, d.d, d.n);
	d_head(&d, 1000, 10);			/* 7: REF_DELTA cycle: 7 -> 8 -> 7 */
	d_copy(&d, 0, 10);
	add_ref(&k, id[7], id[8], d.d, d.n);
	d_head(&d, 10, 1000);
	d_copy(&d, 0, 10);
	add_ref(&k, id[8], id[7], d.d, d.n);
	add_ref(&k, id[9], nowhere, d.d, d.n);	/* 9: bse in no pack */
	/* 10: a chain deeper than the bound, each link a copy of the whole */
	size_t prev = b;

	for (int i = 0; i < AMBER_PACK_MAX_DEPTH + 2; i++) {
		uint8_t link[20];

		fake_id(link, 1000 + (unsigned)i);
		d_head(&d, 1000, 1000);
		d_copy(&d, 0, 1000);
		prev = add_ofs(&k, i == AMBER_PACK_MAX_DEPTH + 1 ? id[10] : link, prev, d.d, d.n);
	}
	/* 11: a declared size beyond the caller's limit (nothing allocated) */
	pack_entry(&k, id[11], AMBER_GIT_BLOB, (uint64_t)1 << 40, 0, NULL, bse, 1000);
	/* 12: inflates to less than declared; 13: to more */
	pack_entry(&k, id[12], AMBER_GIT_BLOB, 1001, 0, NULL, bse, 1000);
	pack_entry(&k, id[13], AMBER_GIT_BLOB, 999, 0, NULL, bse, 1000);
	/* 14: a delta declaring a huge target (checked before allocating) */
	d_head(&d, 1000, (uint64_t)1 << 50);
	d_copy(&d, 0, 10);
	add_ofs(&k, id[14], b, d.d, d.n);
	/* 15: type 5 (reserved) */
	pack_entry(&k, id[15], 5, 1000, 0, NULL, bse, 1000);
	/* 16: a delta that applies, under an id its result does not hash to */
	d_head(&d, 1000, 10);
	d_copy(&d, 0, 10);
	add_ofs(&k, id[16], b, d.d, d.n);
	pack_write(&k, at("a"), path);

	expect_corrupt(s, id[1], "copy from outside its base");
	expect_corrupt(s, id[2], "less than its declared size");
	expect_corrupt(s, id[3], "copy past its declared size");
	expect_corrupt(s, id[4], "not the size it declares");
	expect_corrupt(s, id[5], "insert op past the end");
	expect_corrupt(s, id[6], "reserved op 0");
	expect_corrupt(s, id[7], "delta chain longer than");
	expect_corrupt(s, id[9], "in no pack");
	expect_corrupt(s, id[10], "delta chain longer than");
	expect_corrupt(s, id[11], "more than the");
	expect_corrupt(s, id[12], "less than its declared size");
	expect_corrupt(s, id[13], "more than its declared size");
	expect_corrupt(s, id[14], "more than the");
	expect_corrupt(s, id[15], "unknown object type");
	expect_corrupt(s, id[16], "do not hash to its id");
	expect_bytes(s, id[0], AMBER_GIT_BLOB, bse, 1000);	/* the rest still reads */
	amber_store_free(s);
	free(bse);
}

/*
 * Stored-block streams (what amberfs writes: pack compression 0) are copied
 * out without zlib; any size, blocks smaller than git's or an empty final
 * block read back the same, and a broken checksum, block length or declared
 * size is the error zlib would report.
 */
Test(packread, stored_streams_read_back_and_damaged_ones_are_errors)
{
	amber_store *s = open_repo("a");
	static struct pack k;
	static const size_t sizes[] = { 0, 1, 100, 4000, 5000, 65535, 65536, 200000,
					(size_t)1 << 20, ((size_t)1 << 20) + 1 };
	enum { NS = sizeof(sizes) / sizeof(sizes[0]) };
	uint8_t *d = pattern(((size_t)1 << 20) + 1, 5), id[NS + 11][20], *z;
	size_t zl;
	char path[4200];

	pack_begin(&k);
	for (size_t i = 0; i < NS; i++) {
		amber_store_hash(id[i], AMBER_GIT_BLOB, d, sizes[i]);
		zl = stored_stream(&z, d, sizes[i], 65535, 0);
		pack_z(&k, id[i], AMBER_GIT_BLOB, sizes[i], 0, NULL, z, zl);
		free(z);
	}
	/* 1,000-byte blocks; an empty final block (zlib takes those) */
	for (unsigned v = 0; v < 2; v++) {
		fake_id(id[NS + v], 2000 + v);
		zl = stored_stream(&z, d, 70000, v ? 65535 : 1000, (int)v);
		pack_z(&k, id[NS + v], AMBER_GIT_BLOB, 70000, 0, NULL, z, zl);
		free(z);
	}
	/* damaged: the checksum, a block's NLEN, the size declared (+1, -1), a
	   deflated block among stored ones that does not check */
	for (unsigned v = 0; v < 5; v++) {
		fake_id(id[NS + 2 + v], 3000 + v);
		zl = stored_stream(&z, d, 3000, 65535, 0);
		if (v == 0)
			z[zl - 1] ^= 1;
		if (v == 1)
			z[5] ^= 1;
		if (v == 4)
			z[2] = 0x02;    /* BTYPE 01: fixed Huffman, from bytes that are not */
		pack_z(&k, id[NS + 2 + v], AMBER_GIT_BLOB, v == 2 ? 3001 : v == 3 ? 2999 : 3000, 0,
		       NULL, z, zl);
		free(z);
	}
	/* the same damage to a stream past the first read (read with one
	   preadv straight into place): the checksum, the second block's NLEN,
	   the size declared (+1, -1) */
	for (unsigned v = 0; v < 4; v++) {
		fake_id(id[NS + 7 + v], 4000 + v);
		zl = stored_stream(&z, d, 200000, 65535, 0);
		if (v == 0)
			z[zl - 1] ^= 1;
		if (v == 1)
			z[2 + 5 + 65535 + 3] ^= 1;
		pack_z(&k, id[NS + 7 + v], AMBER_GIT_BLOB, v == 2 ? 200001 : v == 3 ? 199999 : 200000,
		       0, NULL, z, zl);
		free(z);
	}
	pack_write(&k, at("a"), path);
	for (size_t i = 0; i < NS; i++)
		expect_bytes(s, id[i], AMBER_GIT_BLOB, d, sizes[i]);
	expect_corrupt(s, id[NS + 7], "bad zlib stream");
	expect_corrupt(s, id[NS + 8], "bad zlib stream");
	expect_corrupt(s, id[NS + 9], "less than its declared size");
	expect_corrupt(s, id[NS + 10], "more than its declared size");
	expect_bytes(s, id[NS], AMBER_GIT_BLOB, d, 70000);
	expect_bytes(s, id[NS + 1], AMBER_GIT_BLOB, d, 70000);
	expect_corrupt(s, id[NS + 2], "bad zlib stream");
	expect_corrupt(s, id[NS + 3], "bad zlib stream");
	expect_corrupt(s, id[NS + 4], "less than its declared size");
	expect_corrupt(s, id[NS + 5], "more than its declared size");
	expect_corrupt(s, id[NS + 6], "");
	amber_store_free(s);
	free(d);
}

/* libgit2 read packs through mmap: a pack truncated under it was SIGBUS. */
Test(packread, a_pack_truncated_under_an_open_store_is_an_error_naming_it)
{
	amber_store *s = open_repo("a");
	static struct pack k;
	uint8_t *one = pattern(300000, 3), *two = pattern(300000, 4), id1[20], id2[20];
	char path[4200], *name;
	amber_buf b;
	int t;

	pack_begin(&k);
	amber_store_hash(id1, AMBER_GIT_BLOB, one, 300000);
	amber_store_hash(id2, AMBER_GIT_BLOB, two, 300000);
	add_obj(&k, id1, AMBER_GIT_BLOB, one, 300000);
	add_obj(&k, id2, AMBER_GIT_BLOB, two, 300000);
	pack_write(&k, at("a"), path);
	expect_bytes(s, id1, AMBER_GIT_BLOB, one, 300000);
	cr_assert_eq(truncate(path, (off_t)k.off[1] + 40), 0);
	amber_buf_init(&b, (size_t)1 << 20);
	cr_assert_lt(amber_store_read(&b, &t, s, id2, (size_t)1 << 20), 0);
	name = strrchr(path, '/') + 1;
	cr_assert(strstr(amber_error_last(), name), "the message does not name the pack: %s",
		  amber_error_last());
	/* overwritten in place with other bytes: an error, not other bytes */
	int fd = open(path, O_WRONLY);

	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, two, 4096, (off_t)k.off[0] + 8), 4096);
	close(fd);
	amber_buf_reset(&b);
	cr_assert_lt(amber_store_read(&b, &t, s, id1, (size_t)1 << 20), 0);
	amber_buf_dispose(&b);
	amber_store_free(s);
	free(one);
	free(two);
}

/*
 * Lookups in a large bucket: 6,000 objects whose ids all start with 0x42,
 * half uniform after that (the guessed window holds them), half bunched
 * (the guess misses: the binary search finds them); absent ids and prefixes
 * too.
 */
Test(packread, lookups_in_a_large_bucket)
{
	static struct pack k;
	amber_store *s = open_repo("a");
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	static uint8_t ids[6000][20];
	char path[4200], hex[41];
	uint8_t got[20];
	uint32_t v;

	pack_begin(&k);
	for (uint32_t i = 0; i < 6000; i++) {
		for (int j = 0; j < 20; j++) {
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			ids[i][j] = (uint8_t)rng;
		}
		ids[i][0] = 0x42;
		if (i % 2) {			/* bunched: 42 10 00 00 xx ... */
			ids[i][1] = 0x10;
			ids[i][2] = ids[i][3] = 0;
		}
		add_obj(&k, ids[i], AMBER_GIT_BLOB, &i, sizeof(i));
	}
	pack_write(&k, at("a"), path);
	OK(amber_store_refresh(s));
	for (uint32_t i = 0; i < 6000; i++) {
		amber_buf b;
		int t = 0;

		amber_buf_init(&b, 64);
		OK(amber_store_read(&b, &t, s, ids[i], 64));
		cr_assert_eq(b.len, sizeof(v));
		memcpy(&v, b.data, sizeof(v));
		cr_assert_eq(v, i, "id %u read object %u", i, v);
		amber_buf_dispose(&b);
	}
	for (int i = 0; i < 200; i++) {		/* absent: one bit off */
		uint8_t absent[20];
		amber_buf b;
		int t = 0;

		memcpy(absent, ids[i * 29], 20);
		absent[19] ^= 0x80;
		amber_buf_init(&b, 64);
		cr_assert_eq(amber_store_read(&b, &t, s, absent, 64), AMBER_ENOTFOUND);
		amber_buf_dispose(&b);
	}
	/* the same lookups by pread (no copy of the index: no budget) */
	char idx_path[4200];
	uint8_t head[8 + 1024];
	struct stat st;
	amber_pack pk = {.name = "large.pack"};
	uint64_t off;

	snprintf(idx_path, sizeof(idx_path), "%.*sidx", (int)(strlen(path) - 4), path);
	pk.idx_fd = open(idx_path, O_RDONLY);
	pk.pack_fd = open(path, O_RDONLY);
	cr_assert(pk.idx_fd >= 0 && pk.pack_fd >= 0 && fstat(pk.idx_fd, &st) == 0);
	cr_assert_eq(pread(pk.idx_fd, head, sizeof(head), 0), (ssize_t)sizeof(head));
	struct stat pst;

	cr_assert_eq(fstat(pk.pack_fd, &pst), 0);
	amber_pack_setup(&pk, head, (uint64_t)st.st_size, (uint64_t)pst.st_size);
	for (uint32_t i = 0; i < 6000; i++) {
		cr_assert_eq(amber_pack_find(&off, &pk, ids[i]), 1, "id %u not found by pread", i);
		cr_assert_eq(off, k.off[i]);
	}
	for (int i = 0; i < 200; i++) {
		uint8_t absent[20];

		memcpy(absent, ids[i * 29], 20);
		absent[19] ^= 0x80;
		cr_assert_eq(amber_pack_find(&off, &pk, absent), 0);
	}
	cr_assert_null(atomic_load(&pk.mem), "an index was copied without a budget");
	/* With a budget: a short command's lookups stay preads (copying the
	 * whole index would cost it more than they do); a walk that has made as
	 * many lookups as the copy costs gets it.  That is one per
	 * AMBER_IDX_COPY_BYTES of index: a few dozen for this one (a mount's first
	 * directory walk makes thousands), at most AMBER_IDX_COPY_AFTER for a
	 * huge one (log -n 20 at 300,000 snapshots makes about a hundred). */
	atomic_size_t budget = 0;
	uint32_t after = amber_pack_copy_after(&pk);
	amber_pack huge = {.mem_len = (size_t)15 << 20};

	cr_assert_eq(after, (uint32_t)((size_t)st.st_size / AMBER_IDX_COPY_BYTES),
		     "a %lld-byte index is copied after %u lookups", (long long)st.st_size, after);
	cr_assert(after >= 8 && after <= 64, "%u lookups before the copy", after);
	cr_assert_eq(amber_pack_copy_after(&huge), 960);
	huge.mem_len = (size_t)1 << 30;
	cr_assert_eq(amber_pack_copy_after(&huge), AMBER_IDX_COPY_AFTER);
	pk.budget = &budget;
	pk.budget_max = (size_t)32 << 20;
	atomic_store(&pk.lookups, 0);
	for (uint32_t i = 0; i < after; i++)
		cr_assert_eq(amber_pack_find(&off, &pk, ids[i]), 1);
	cr_assert_null(atomic_load(&pk.mem), "the index was copied for %u lookups", after);
	for (uint32_t i = after; i < after + 2; i++) {
		cr_assert_eq(amber_pack_find(&off, &pk, ids[i]), 1);
		cr_assert_eq(off, k.off[i]);
	}
	cr_assert_not_null(atomic_load(&pk.mem), "no copy after %u lookups", after + 2);
	for (uint32_t i = 0; i < 6000; i++) {
		cr_assert_eq(amber_pack_find(&off, &pk, ids[i]), 1);
		cr_assert_eq(off, k.off[i]);
	}
	cr_assert_eq(atomic_load(&budget), (size_t)st.st_size);
	amber_pack_dispose(&pk);
	cr_assert_eq(atomic_load(&budget), 0);
	close(pk.idx_fd);
	close(pk.pack_fd);
	amber_oid_tohex(hex, ids[0]);
	hex[12] = 0;
	OK(amber_store_expand_prefix(got, s, hex));
	cr_assert(memcmp(got, ids[0], 20) == 0);
	cr_assert_eq(amber_store_expand_prefix(got, s, "4210000"), AMBER_EAMBIGUOUS);
	amber_store_free(s);
}

/* A pack of n objects with random ids into ids; its .pack path into path. */
static void random_pack(struct pack *k, uint8_t (*ids)[20], uint32_t n, char path[4200])
{
	uint64_t rng = 0x2545f4914f6cdd1dull;

	pack_begin(k);
	for (uint32_t i = 0; i < n; i++) {
		for (int j = 0; j < 20; j++) {
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			ids[i][j] = (uint8_t)(rng >> 11);
		}
		add_obj(k, ids[i], AMBER_GIT_BLOB, &i, sizeof(i));
	}
	pack_write(k, at("f"), path);
}

/*
 * A large index that the copy budget has no room for gets a filter once it
 * has answered as many lookups of absent ids by pread as a copy would have
 * waited for: then looking up an id it does not hold (what a writer does
 * for each new object, in every large pack) reads nothing, nearly always,
 * and every id it holds is still found.
 */
Test(packread, a_large_index_left_on_disk_answers_misses_from_its_filter)
{
	static struct pack k;
	static uint8_t ids[6000][20];
	amber_store *s = open_repo("f");
	char path[4200], idx_path[4200];
	uint8_t head[8 + 1024], absent[20];
	atomic_size_t budget = 0, fbudget = 0;
	amber_pack pk = {.name = "filtered.pack"};
	struct stat st, pst;
	uint64_t off;
	unsigned long reads;

	random_pack(&k, ids, 6000, path);
	snprintf(idx_path, sizeof(idx_path), "%.*sidx", (int)(strlen(path) - 4), path);
	pk.idx_fd = open(idx_path, O_RDONLY);
	pk.pack_fd = open(path, O_RDONLY);
	cr_assert(pk.idx_fd >= 0 && pk.pack_fd >= 0 && fstat(pk.idx_fd, &st) == 0 &&
		  fstat(pk.pack_fd, &pst) == 0);
	cr_assert_eq(pread(pk.idx_fd, head, sizeof(head), 0), (ssize_t)sizeof(head));
	amber_pack_setup(&pk, head, (uint64_t)st.st_size, (uint64_t)pst.st_size);
	pk.budget = &budget;
	pk.budget_max = 1024;		/* no room for a copy of this index */
	pk.fbudget = &fbudget;
	pk.fbudget_max = (size_t)1 << 20;
	cr_assert_geq(pk.n, AMBER_IDX_FILTER_MIN);
	for (uint32_t i = 0; i < 6000; i++)	/* hits: a filter would not spare them a read */
		cr_assert_eq(amber_pack_find(&off, &pk, ids[i]), 1);
	cr_assert_null(atomic_load(&pk.mem), "the index was copied beyond its budget");
	cr_assert_null(atomic_load(&pk.filter), "a filter was built for hits");
	for (uint32_t i = 0; i < amber_pack_copy_after(&pk); i++) {
		memcpy(absent, ids[i], 20);
		absent[19] ^= 1;
		cr_assert_eq(amber_pack_find(&off, &pk, absent), 0);
		cr_assert((atomic_load(&pk.filter) != NULL) == (i + 1 == amber_pack_copy_after(&pk)),
			  "filter after %u misses (built after %u)", i + 1,
			  amber_pack_copy_after(&pk));
	}
	cr_assert_gt(atomic_load(&fbudget), 0);
	for (uint32_t i = 0; i < 6000; i++) {
		cr_assert_eq(amber_pack_find(&off, &pk, ids[i]), 1, "id %u not found", i);
		cr_assert_eq(off, k.off[i]);
	}
	reads = atomic_load(&pk.idx_reads);
	for (uint32_t i = 0; i < 6000; i++) {	/* absent: one bit off, in each byte in turn */
		memcpy(absent, ids[i], 20);
		absent[1 + i % 19] ^= (uint8_t)(1u << (i % 8));
		cr_assert_eq(amber_pack_find(&off, &pk, absent), 0);
	}
	reads = atomic_load(&pk.idx_reads) - reads;
	cr_assert_lt(reads, 300, "6000 misses read the index %lu times", reads);
	amber_pack_dispose(&pk);
	cr_assert_null(atomic_load(&pk.filter));
	cr_assert_eq(atomic_load(&fbudget), 0, "the filter's bytes were not given back");
	close(pk.idx_fd);
	close(pk.pack_fd);
	amber_store_free(s);
}

/* Two threads --------------------------------------------------------------- */

#define BIG ((size_t)1 << 20)
#define CHAIN 50

struct race {
	amber_store *s;
	uint8_t long_id[20], short_id[20];
	const uint8_t *short_data;
	atomic_int in_long;	/* the long reader is inside amber_store_read */
	atomic_int done;
	int during;		/* short reads begun and ended while the long one ran */
	int bad;
};

static void *long_reader(void *arg)
{
	struct race *r = arg;
	amber_buf b;
	int t;

	for (int i = 0; i < 3; i++) {
		amber_buf_init(&b, BIG + 2);
		atomic_store(&r->in_long, 1);
		if (amber_store_read(&b, &t, r->s, r->long_id, BIG + 1) < 0 || b.len != BIG + 1)
			r->bad = 1;
		atomic_store(&r->in_long, 0);
		amber_buf_dispose(&b);
	}
	atomic_store(&r->done, 1);
	return NULL;
}

static void *short_reader(void *arg)
{
	struct race *r = arg;
	amber_buf b;
	int t;

	while (!atomic_load(&r->done)) {
		int before = atomic_load(&r->in_long);

		amber_buf_init(&b, 4096);
		if (amber_store_read(&b, &t, r->s, r->short_id, 4096) < 0 || b.len != 1000 ||
		    memcmp(b.data, r->short_data, 1000) != 0)
			r->bad = 1;
		amber_buf_dispose(&b);
		r->during += before && atomic_load(&r->in_long);
	}
	return NULL;
}

/*
 * A long read (a chain of CHAIN deltas over 1 MiB) and short reads at the
 * same time: the short ones must not wait for it (libgit2 holds the odb's
 * mutex across a whole read).
 */
Test(packread, two_threads_read_at_once)
{
	static struct race r;
	amber_store *s = open_repo("a");
	static struct pack k;
	struct delta d;
	uint8_t *bse = pattern(BIG, 5), *small = pattern(1000, 6);
	char path[4200];
	size_t prev;
	pthread_t a, b;

	pack_begin(&k);
	amber_store_hash(r.short_id, AMBER_GIT_BLOB, small, 1000);
	add_obj(&k, r.short_id, AMBER_GIT_BLOB, small, 1000);
	uint8_t base_id[20];

	amber_store_hash(base_id, AMBER_GIT_BLOB, bse, BIG);
	prev = add_obj(&k, base_id, AMBER_GIT_BLOB, bse, BIG);
	/* each link copies the whole; the last adds a byte: base + "Z" */
	bse = realloc(bse, BIG + 1);
	bse[BIG] = 'Z';
	amber_store_hash(r.long_id, AMBER_GIT_BLOB, bse, BIG + 1);
	for (int i = 0; i < CHAIN; i++) {
		uint8_t link[20];

		fake_id(link, 2000 + (unsigned)i);
		d_head(&d, BIG, BIG + (i == CHAIN - 1));
		for (size_t at_ = 0; at_ < BIG; at_ += 0x8000)
			d_copy(&d, (uint32_t)at_, 0x8000);
		if (i == CHAIN - 1)
			d_insert(&d, "Z", 1);
		prev = add_ofs(&k, i == CHAIN - 1 ? r.long_id : link, prev, d.d, d.n);
	}
	pack_write(&k, at("a"), path);
	OK(amber_store_refresh(s));
	r.s = s;
	r.short_data = small;
	cr_assert_eq(pthread_create(&a, NULL, long_reader, &r), 0);
	while (!atomic_load(&r.in_long))
		;
	cr_assert_eq(pthread_create(&b, NULL, short_reader, &r), 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	cr_assert_eq(r.bad, 0, "a thread read wrong bytes or failed: %s", amber_error_last());
	cr_log_info("short reads during the long ones: %d", r.during);
	cr_assert_geq(r.during, 20, "only %d short reads ran during the long ones: reads are "
		      "serialised", r.during);
	amber_store_free(s);
	free(bse);
	free(small);
}

/* Spans ---------------------------------------------------------------------- */

static uint8_t *noise(size_t n, uint64_t seed)
{
	uint8_t *p = malloc(n ? n : 1);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
	return p;
}

static void open_pack(amber_pack *pk, const char *path)
{
	char idx_path[4200];
	uint8_t head[8 + 1024];
	struct stat st, pst;

	snprintf(idx_path, sizeof(idx_path), "%.*sidx", (int)(strlen(path) - 4), path);
	pk->idx_fd = open(idx_path, O_RDONLY);
	pk->pack_fd = open(path, O_RDONLY);
	cr_assert(pk->idx_fd >= 0 && pk->pack_fd >= 0 && fstat(pk->idx_fd, &st) == 0 &&
		  fstat(pk->pack_fd, &pst) == 0);
	cr_assert_eq(pread(pk->idx_fd, head, sizeof(head), 0), (ssize_t)sizeof(head));
	amber_pack_setup(pk, head, (uint64_t)st.st_size, (uint64_t)pst.st_size);
}

static void *into(void *ctx, size_t len)
{
	amber_buf *b = ctx;

	b->len = 0;
	if (amber_buf_reserve(b, len) < 0)
		return NULL;
	b->len = len;
	return b->data;
}

/* Object i of pk at off is want (n bytes). */
static void expect_at(amber_pack *pk, uint64_t off, const uint8_t *want, size_t n, size_t i)
{
	amber_buf b;
	size_t len = 0;
	int t = 0;

	amber_buf_init(&b, (size_t)1 << 20);
	OK(amber_pack_read(&t, &len, pk, off, (size_t)1 << 20, "span test", NULL, into, &b, NULL,
			   NULL));
	cr_assert(t == AMBER_GIT_BLOB && len == n && memcmp(b.data, want, n) == 0,
		  "object %zu of %s: type %d, %zu bytes, not its own", i, pk->name, t, len);
	amber_buf_dispose(&b);
}

#define SPAN_OBJS 2000
#define SPAN_OBJ 300

/*
 * A directory's listing objects lie one after another in the pack, a few
 * hundred bytes each.  Within a run (amber_store_runs_begin/_end, what a
 * directory's decoding opens), reading them in order, or each pair
 * backwards (a bucket's tree is read before the manifest that lies just
 * before it), costs a few reads of a span of the pack, not a pread each
 * (2,000 here); the bytes are each object's own, also with a second pack
 * of the same layout read in turn on the same thread (a span is never
 * served for another pack at the same offsets); after the run, an object
 * damaged since reads as damaged; and large objects read in order are read
 * as before, only their first 4 KiB (no span is read past them).
 */
Test(packread, small_objects_in_order_are_read_a_span_at_a_time)
{
	static struct pack k[3];
	static uint64_t offs[2][SPAN_OBJS];
	uint8_t *obj[2][SPAN_OBJS];
	char path[3][4200];
	amber_pack pk[3] = {{.name = "one.pack"}, {.name = "two.pack"}, {.name = "large.pack"}};
	amber_store *s = open_repo("spans");

	for (int p = 0; p < 2; p++) {
		pack_begin(&k[p]);
		for (unsigned i = 0; i < SPAN_OBJS; i++) {
			uint8_t id[20];

			fake_id(id, i);
			id[1] = (uint8_t)p;
			id[2] = (uint8_t)(i >> 8);
			id[3] = (uint8_t)i;
			obj[p][i] = noise(SPAN_OBJ, (uint64_t)p * 100000 + i);
			add_obj(&k[p], id, AMBER_GIT_BLOB, obj[p][i], SPAN_OBJ);
			offs[p][i] = k[p].off[i];
		}
		pack_write(&k[p], at("spans"), path[p]);
		open_pack(&pk[p], path[p]);
	}
	cr_assert_eq(memcmp(offs[0], offs[1], sizeof(offs[0])), 0, "the two packs differ in layout");

	amber_store_runs_begin();
	for (unsigned i = 0; i < SPAN_OBJS; i++)
		expect_at(&pk[0], offs[0][i], obj[0][i], SPAN_OBJ, i);
	unsigned long reads = atomic_load(&pk[0].pack_reads);
	cr_log_info("%d objects of %d bytes in order: %lu reads of the pack", SPAN_OBJS, SPAN_OBJ,
		    reads);
	cr_assert(reads <= SPAN_OBJS / 50, "%d small objects read in order took %lu reads",
		  SPAN_OBJS, reads);

	for (unsigned i = 0; i + 1 < SPAN_OBJS; i += 2) {       /* each pair backwards */
		expect_at(&pk[0], offs[0][i + 1], obj[0][i + 1], SPAN_OBJ, i + 1);
		expect_at(&pk[0], offs[0][i], obj[0][i], SPAN_OBJ, i);
	}
	reads = atomic_load(&pk[0].pack_reads) - reads;
	cr_assert(reads <= SPAN_OBJS / 50, "pairs read backwards took %lu reads", reads);

	for (unsigned i = 0; i < SPAN_OBJS; i += 7)             /* the two packs in turn */
		for (int p = 0; p < 2; p++)
			expect_at(&pk[p], offs[p][i], obj[p][i], SPAN_OBJ, i);
	amber_store_runs_end();

	/* outside a run every read is the pack's own: one damaged since its
	 * span was read (object 7's stream) reads as damaged */
	unsigned long before = atomic_load(&pk[0].pack_reads);
	int fd = open(path[0], O_RDWR);
	uint8_t c;
	cr_assert(fd >= 0 && pread(fd, &c, 1, (off_t)offs[0][7] + 8) == 1);
	c ^= 0x5a;
	cr_assert_eq(pwrite(fd, &c, 1, (off_t)offs[0][7] + 8), 1);
	close(fd);
	amber_buf b;
	size_t len = 0;
	int t = 0;
	amber_buf_init(&b, (size_t)1 << 20);
	cr_assert_lt(amber_pack_read(&t, &len, &pk[0], offs[0][7], (size_t)1 << 20, "span test",
				     NULL, into, &b, NULL, NULL), 0,
		     "object 7, damaged after a run held it, read back whole");
	amber_buf_dispose(&b);
	expect_at(&pk[0], offs[0][8], obj[0][8], SPAN_OBJ, 8);
	cr_assert_eq(atomic_load(&pk[0].pack_reads) - before, 2, "outside a run: a pread each");

	pack_begin(&k[2]);
	uint8_t *big[8];
	uint64_t big_off[8];
	for (unsigned i = 0; i < 8; i++) {
		uint8_t id[20];

		fake_id(id, i);
		id[1] = 9;
		big[i] = noise((size_t)256 << 10, 7000 + i);
		add_obj(&k[2], id, AMBER_GIT_BLOB, big[i], (size_t)256 << 10);
		big_off[i] = k[2].off[i];
	}
	pack_write(&k[2], at("spans"), path[2]);
	open_pack(&pk[2], path[2]);
	amber_store_runs_begin();
	for (unsigned i = 0; i < 8; i++)
		expect_at(&pk[2], big_off[i], big[i], (size_t)256 << 10, i);
	amber_store_runs_end();
	unsigned long long bytes = atomic_load(&pk[2].pack_read_bytes);
	cr_assert(bytes <= 8 * 4096, "8 large objects' first reads read %llu bytes (a span each?)",
		  bytes);

	for (int p = 0; p < 3; p++) {
		amber_pack_dispose(&pk[p]);
		close(pk[p].idx_fd);
		close(pk[p].pack_fd);
	}
	for (int p = 0; p < 2; p++)
		for (unsigned i = 0; i < SPAN_OBJS; i++)
			free(obj[p][i]);
	for (unsigned i = 0; i < 8; i++)
		free(big[i]);
	amber_store_free(s);
}
