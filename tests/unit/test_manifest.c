/*
 * Manifest, fan-out, index and record payloads: round trips of awkward but
 * valid values, and hostile bytes that must be refused with AMBER_ECORRUPT
 * (never a crash, never a huge allocation).  Hostile manifests are made by
 * raw_entry(), an independent writer of the documented layout that checks
 * nothing; a test also pins the library's output to it byte for byte.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "amber.h"
#include "buf.h"
#include "error.h"
#include "manifest.h"

#define OK(call) cr_assert_eq((call), 0, "%s failed: %s", #call, amber_error_last())

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

static amber_entry plain_file(const char *name, size_t len)
{
	amber_entry e;

	memset(&e, 0, sizeof(e));
	e.name = (char *)name;
	e.name_len = len;
	e.type = AMBER_T_REG;
	e.mode = 0644;
	e.nlink = 1;
	e.content = AMBER_C_NONE;
	return e;
}

/* The layout of one entry, written with no checks at all. */
static void raw_entry(amber_buf *b, const amber_entry *e)
{
	amber_buf_put_u16(b, (uint16_t)e->name_len);
	amber_buf_put(b, e->name, e->name_len);
	amber_buf_put_u8(b, e->type);
	amber_buf_put_u32(b, e->mode);
	amber_buf_put_u32(b, e->uid);
	amber_buf_put_u32(b, e->gid);
	amber_buf_put_u64(b, (uint64_t)e->mtime_sec);
	amber_buf_put_u32(b, e->mtime_nsec);
	amber_buf_put_u64(b, e->size);
	amber_buf_put_u64(b, e->rdev);
	amber_buf_put_u32(b, e->nlink);
	amber_buf_put_u64(b, e->hardlink);
	amber_buf_put_u8(b, e->content);
	if (e->content == AMBER_C_CHUNKED || e->content == AMBER_C_DIR)
		amber_buf_put(b, e->tree_oid, 20);
	if (e->content != AMBER_C_NONE) {
		amber_buf_put(b, e->link.oid, 20);
		amber_buf_put(b, e->link.mac, 24);
	}
	if (e->type == AMBER_T_SYMLINK) {
		amber_buf_put_u16(b, (uint16_t)e->target_len);
		amber_buf_put(b, e->target, e->target_len);
	}
	amber_buf_put_u16(b, (uint16_t)e->nxattrs);
	for (size_t i = 0; i < e->nxattrs; i++) {
		amber_buf_put_u8(b, (uint8_t)strlen(e->xattrs[i].name));
		amber_buf_put(b, e->xattrs[i].name, strlen(e->xattrs[i].name));
		amber_buf_put_u32(b, (uint32_t)e->xattrs[i].value_len);
		amber_buf_put(b, e->xattrs[i].value, e->xattrs[i].value_len);
	}
}

static void raw_manifest(amber_buf *b, const amber_entry *e, size_t n)
{
	amber_buf_init(b, 0);
	amber_buf_put_u8(b, 1);
	amber_buf_put_u32(b, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		raw_entry(b, &e[i]);
}

static void expect_corrupt(const void *data, size_t len, const char *what)
{
	amber_entry *v = (amber_entry *)1;
	size_t n = 99;
	int rc = amber_manifest_decode(&v, &n, data, len);

	cr_expect_eq(rc, AMBER_ECORRUPT, "%s: decode gave %d", what, rc);
	cr_expect_null(v, "%s: output not cleared", what);
	cr_expect_eq(n, 0, "%s", what);
	if (rc == 0)
		amber_entries_free(v, n);
}

static void expect_raw_corrupt(const amber_entry *e, size_t n, const char *what)
{
	amber_buf b;

	raw_manifest(&b, e, n);
	expect_corrupt(b.data, b.len, what);
	amber_buf_dispose(&b);
}

static void same_entry(const amber_entry *a, const amber_entry *b)
{
	cr_assert_eq(a->name_len, b->name_len);
	cr_assert_eq(memcmp(a->name, b->name, a->name_len), 0);
	cr_expect_eq(b->name[b->name_len], '\0');
	cr_expect_eq(a->type, b->type);
	cr_expect_eq(a->mode, b->mode);
	cr_expect_eq(a->uid, b->uid);
	cr_expect_eq(a->gid, b->gid);
	cr_expect_eq(a->mtime_sec, b->mtime_sec);
	cr_expect_eq(a->mtime_nsec, b->mtime_nsec);
	cr_expect_eq(a->size, b->size);
	cr_expect_eq(a->rdev, b->rdev);
	cr_expect_eq(a->nlink, b->nlink);
	cr_expect_eq(a->hardlink, b->hardlink);
	cr_expect_eq(a->content, b->content);
	cr_expect_eq(a->target_len, b->target_len);
	if (a->target_len)
		cr_expect_eq(memcmp(a->target, b->target, a->target_len), 0);
	if (a->content == AMBER_C_CHUNKED || a->content == AMBER_C_DIR)
		cr_expect_eq(memcmp(a->tree_oid, b->tree_oid, 20), 0);
	if (a->content != AMBER_C_NONE)
		cr_expect_eq(memcmp(&a->link, &b->link, sizeof(a->link)), 0);
	cr_assert_eq(a->nxattrs, b->nxattrs);
	for (size_t i = 0; i < a->nxattrs; i++) {
		cr_expect_str_eq(a->xattrs[i].name, b->xattrs[i].name);
		cr_assert_eq(a->xattrs[i].value_len, b->xattrs[i].value_len);
		if (a->xattrs[i].value_len)
			cr_expect_eq(memcmp(a->xattrs[i].value, b->xattrs[i].value,
					    a->xattrs[i].value_len), 0);
	}
}

static int cmp_entries(const void *x, const void *y)
{
	const amber_entry *a = x, *b = y;

	return amber_name_cmp(a->name, a->name_len, b->name, b->name_len);
}

/* ------------------------------------------------------------------ */
/* An awkward but valid directory                                      */

static char long_name[256];
static uint8_t bin_value[300];
static uint8_t big_value[AMBER_XATTR_VALUE_MAX];
static amber_xattr xattrs[] = {
	{"security.capability", bin_value, sizeof(bin_value)},
	{"trusted.big", big_value, sizeof(big_value)},
	{"user.empty", NULL, 0},
	{"user.mime\n\xff", bin_value, 3},
};

#define NAWK 14
static amber_entry awk[NAWK];

static void make_awkward(void)
{
	static const char sp[] = "name with spaces", nl[] = "new\nline", bad[] = "\xff\xfe.bin";

	memset(long_name, 'L', 255);
	fill(bin_value, sizeof(bin_value), 0);
	fill(big_value, sizeof(big_value), 3);
	awk[0] = plain_file(sp, strlen(sp));
	awk[0].xattrs = xattrs;
	awk[0].nxattrs = 4;
	awk[1] = plain_file(nl, strlen(nl));
	awk[1].mode = 04755;
	awk[1].content = AMBER_C_BLOB;
	awk[1].size = 1;
	fill(awk[1].link.oid, 20, 1);
	fill(awk[1].link.mac, 24, 2);
	awk[2] = plain_file(bad, strlen(bad));
	awk[2].mode = 01777;
	awk[2].content = AMBER_C_CHUNKED;
	awk[2].size = UINT64_MAX;
	fill(awk[2].tree_oid, 20, 3);
	fill(awk[2].link.oid, 20, 4);
	fill(awk[2].link.mac, 24, 5);
	awk[3] = plain_file(long_name, 255);
	awk[3].mtime_sec = -1;
	awk[3].mtime_nsec = 999999999;
	awk[3].uid = UINT32_MAX;
	awk[3].gid = 65534;
	awk[4] = plain_file("d", 1);
	awk[4].type = AMBER_T_DIR;
	awk[4].mode = 02775;
	awk[4].content = AMBER_C_DIR;
	fill(awk[4].tree_oid, 20, 6);
	fill(awk[4].link.oid, 20, 7);
	fill(awk[4].link.mac, 24, 8);
	awk[5] = plain_file("link", 4);
	awk[5].type = AMBER_T_SYMLINK;
	awk[5].mode = 0777;
	awk[5].target = "../target with \xff bytes\n";
	awk[5].target_len = strlen(awk[5].target);
	awk[5].size = awk[5].target_len;
	awk[6] = plain_file("fifo", 4);
	awk[6].type = AMBER_T_FIFO;
	awk[7] = plain_file("chr", 3);
	awk[7].type = AMBER_T_CHR;
	awk[7].rdev = (1ull << 40) | 5;
	awk[8] = plain_file("blk", 3);
	awk[8].type = AMBER_T_BLK;
	awk[8].rdev = 0x0801;
	awk[9] = plain_file("hard1", 5);
	awk[9].nlink = 3;
	awk[9].hardlink = 42;
	awk[10] = plain_file("hard2", 5);
	awk[10].nlink = 3;
	awk[10].hardlink = 42;
	awk[11] = plain_file("hard1.", 6);
	awk[11].nlink = 2;
	awk[11].hardlink = UINT64_MAX;
	awk[12] = plain_file("...", 3);
	awk[12].mtime_sec = 1795183387;
	awk[12].mtime_nsec = 123456789;
	awk[13] = plain_file(".hidden", 7);
	awk[13].mode = 07777;
	qsort(awk, NAWK, sizeof(awk[0]), cmp_entries);
}

static void encode_awkward(amber_buf *b)
{
	make_awkward();
	amber_buf_init(b, 0);
	OK(amber_manifest_encode(b, awk, NAWK));
}

Test(manifest, awkward_entries_round_trip)
{
	amber_buf b, again;
	amber_entry *v = NULL;
	size_t n = 0;

	encode_awkward(&b);
	OK(amber_manifest_decode(&v, &n, b.data, b.len));
	cr_assert_eq(n, NAWK);
	for (size_t i = 0; i < n; i++)
		same_entry(&awk[i], &v[i]);
	amber_buf_init(&again, 0);
	OK(amber_manifest_encode(&again, v, n));
	cr_expect_eq(again.len, b.len);
	cr_expect_eq(memcmp(again.data, b.data, b.len), 0, "re-encoding differs");
	amber_entries_free(v, n);
	amber_buf_dispose(&again);
	amber_buf_dispose(&b);
}

/* Into the caller's memory (a listing's place): the same entries; another
 * count or a defect leaves it zeroed, nothing in it to free. */
Test(manifest, decoding_into_place_gives_the_same_entries_or_nothing)
{
	amber_buf b;
	amber_entry v[NAWK + 1], zero;

	encode_awkward(&b);
	OK(amber_manifest_decode_into(v, NAWK, b.data, b.len));
	for (size_t i = 0; i < NAWK; i++) {
		same_entry(&awk[i], &v[i]);
		amber_entry_dispose(&v[i]);
	}

	memset(&zero, 0, sizeof(zero));
	memset(v, 0xa5, sizeof(v));
	cr_assert_eq(amber_manifest_decode_into(v, NAWK + 1, b.data, b.len), 1);
	for (size_t i = 0; i <= NAWK; i++)
		cr_assert_eq(memcmp(&v[i], &zero, sizeof(zero)), 0, "entry %zu not zeroed", i);
	cr_assert_eq(amber_manifest_decode_into(v, NAWK - 1, b.data, b.len), 1);

	for (size_t len = 0; len < b.len; len += 7) { /* truncated, after some entries too */
		int rc;

		memset(v, 0xa5, sizeof(v));
		rc = amber_manifest_decode_into(v, NAWK, b.data, len);

		cr_assert_eq(rc, AMBER_ECORRUPT, "%zu bytes of %zu: %d", len, b.len, rc);
		for (size_t i = 0; i < NAWK; i++)
			cr_assert(v[i].name == NULL && v[i].xattrs == NULL && v[i].target == NULL,
				  "entry %zu left after a failure at %zu bytes", i, len);
	}
	amber_buf_dispose(&b);
}

Test(manifest, layout_is_pinned)
{
	amber_buf lib, raw;

	encode_awkward(&lib);
	raw_manifest(&raw, awk, NAWK);
	cr_assert_eq(lib.len, raw.len);
	cr_expect_eq(memcmp(lib.data, raw.data, raw.len), 0);
	amber_buf_dispose(&raw);
	amber_buf_dispose(&lib);
}

Test(manifest, empty_directory_round_trips)
{
	amber_buf b;
	amber_entry *v = (amber_entry *)1;
	size_t n = 7;

	amber_buf_init(&b, 0);
	OK(amber_manifest_encode(&b, NULL, 0));
	cr_expect_eq(b.len, 5);
	OK(amber_manifest_decode(&v, &n, b.data, b.len));
	cr_expect_eq(n, 0);
	amber_entries_free(v, n);
	amber_buf_dispose(&b);
}

Test(manifest, entry_copy_is_deep)
{
	amber_entry c;

	make_awkward();
	for (size_t i = 0; i < NAWK; i++) {
		OK(amber_entry_copy(&c, &awk[i]));
		cr_expect_neq(c.name, awk[i].name);
		if (c.nxattrs)
			cr_expect_neq(c.xattrs[0].value, awk[i].xattrs[0].value);
		same_entry(&awk[i], &c);
		amber_entry_dispose(&c);
		cr_expect_null(c.name);
	}
	amber_entries_free(NULL, 3);
}

/* ------------------------------------------------------------------ */
/* Hostile manifests                                                   */

static void one_bad_name(const char *name, size_t len)
{
	amber_entry e = plain_file(name, len);

	expect_raw_corrupt(&e, 1, name);
}

Test(manifest, bad_names_are_refused)
{
	static char n256[256];

	memset(n256, 'x', 256);
	one_bad_name("a/b", 3);
	one_bad_name("/", 1);
	one_bad_name("a\0b", 3);
	one_bad_name(".", 1);
	one_bad_name("..", 2);
	one_bad_name("", 0);
	one_bad_name(n256, 256);
}

Test(manifest, unsorted_and_duplicate_pairs_are_refused)
{
	amber_entry pair[2] = {plain_file("b", 1), plain_file("a", 1)};

	expect_raw_corrupt(pair, 2, "unsorted");
	pair[1] = plain_file("b", 1);
	expect_raw_corrupt(pair, 2, "duplicate");
	pair[0] = plain_file("ab", 2);
	pair[1] = plain_file("a", 1);
	expect_raw_corrupt(pair, 2, "longer before its prefix");
}

/* Mutate one valid entry in a way that breaks one rule. */
typedef void (*breaker)(amber_entry *e);

static void bad_type(amber_entry *e) { e->type = 7; }
static void zero_type(amber_entry *e) { e->type = 0; }
static void bad_mode(amber_entry *e) { e->mode = 010644; }
static void bad_nsec(amber_entry *e) { e->mtime_nsec = 1000000000; }
static void zero_nlink(amber_entry *e) { e->nlink = 0; }
static void bad_content(amber_entry *e) { e->content = 4; }
static void size_no_content(amber_entry *e) { e->size = 1; }
static void file_dir_content(amber_entry *e) { e->content = AMBER_C_DIR; }
static void dir_none(amber_entry *e) { e->type = AMBER_T_DIR; }
static void dir_blob(amber_entry *e) { e->type = AMBER_T_DIR; e->content = AMBER_C_BLOB; }
static void fifo_blob(amber_entry *e) { e->type = AMBER_T_FIFO; e->content = AMBER_C_BLOB; }
static void empty_chunked(amber_entry *e) { e->content = AMBER_C_CHUNKED; }
static void huge_blob(amber_entry *e) { e->content = AMBER_C_BLOB; e->size = 3u << 20; }

static void hard_dir(amber_entry *e)
{
	e->type = AMBER_T_DIR;
	e->content = AMBER_C_DIR;
	e->hardlink = 5;
}

static void fifo_size(amber_entry *e)
{
	e->type = AMBER_T_FIFO;
	e->size = 1;
}

static void file_rdev(amber_entry *e)
{
	e->rdev = 0x801;
}

static void symlink_empty(amber_entry *e)
{
	e->type = AMBER_T_SYMLINK;
	e->target = "";
}

static void symlink_nul(amber_entry *e)
{
	e->type = AMBER_T_SYMLINK;
	e->target = "a\0b";
	e->target_len = e->size = 3;
}

static void symlink_long(amber_entry *e)
{
	static char t[AMBER_TARGET_MAX + 1];

	memset(t, 't', sizeof(t));
	e->type = AMBER_T_SYMLINK;
	e->target = t;
	e->target_len = e->size = sizeof(t);
}

static void symlink_size(amber_entry *e)
{
	e->type = AMBER_T_SYMLINK;
	e->target = "abc";
	e->target_len = 3;
	e->size = 4;
}

static void xattrs_unsorted(amber_entry *e)
{
	static amber_xattr x[2] = {{"user.b", (uint8_t *)"1", 1}, {"user.a", (uint8_t *)"2", 1}};

	e->xattrs = x;
	e->nxattrs = 2;
}

static void xattrs_dup(amber_entry *e)
{
	static amber_xattr x[2] = {{"user.a", (uint8_t *)"1", 1}, {"user.a", (uint8_t *)"2", 1}};

	e->xattrs = x;
	e->nxattrs = 2;
}

static void xattr_empty_name(amber_entry *e)
{
	static amber_xattr x[1] = {{"", (uint8_t *)"1", 1}};

	e->xattrs = x;
	e->nxattrs = 1;
}

static void xattr_big_value(amber_entry *e)
{
	static uint8_t v[AMBER_XATTR_VALUE_MAX + 1];
	static amber_xattr x[1] = {{"user.big", v, sizeof(v)}};

	e->xattrs = x;
	e->nxattrs = 1;
}

static const struct {
	const char *what;
	breaker f;
} breakers[] = {
	{"type 7", bad_type},
	{"type 0", zero_type},
	{"mode 010644", bad_mode},
	{"nsec 1e9", bad_nsec},
	{"nlink 0", zero_nlink},
	{"content 4", bad_content},
	{"non-empty file without content", size_no_content},
	{"file with dir content", file_dir_content},
	{"dir without content", dir_none},
	{"dir with blob", dir_blob},
	{"fifo with blob", fifo_blob},
	{"empty chunked file", empty_chunked},
	{"blob over the chunk limit", huge_blob},
	{"hard-linked dir", hard_dir},
	{"fifo with a size", fifo_size},
	{"file with a device number", file_rdev},
	{"symlink with empty target", symlink_empty},
	{"symlink target with NUL", symlink_nul},
	{"symlink target too long", symlink_long},
	{"symlink size mismatch", symlink_size},
	{"xattrs unsorted", xattrs_unsorted},
	{"xattrs duplicate", xattrs_dup},
	{"xattr empty name", xattr_empty_name},
	{"xattr value too big", xattr_big_value},
};

Test(manifest, inconsistent_entries_are_refused_both_ways)
{
	for (size_t i = 0; i < sizeof(breakers) / sizeof(breakers[0]); i++) {
		amber_entry e = plain_file("f", 1);
		amber_buf b;

		breakers[i].f(&e);
		expect_raw_corrupt(&e, 1, breakers[i].what);
		/* The encoder refuses it too rather than writing it. */
		amber_buf_init(&b, 0);
		cr_expect_eq(amber_manifest_encode(&b, &e, 1), AMBER_EINVAL, "%s",
			     breakers[i].what);
		cr_expect_eq(b.len, 0, "%s: partial output left", breakers[i].what);
		amber_buf_dispose(&b);
	}
}

Test(manifest, xattr_name_with_nul_is_refused)
{
	amber_xattr x = {"user.ab", (uint8_t *)"v", 1};
	amber_entry e = plain_file("f", 1);
	amber_buf b;
	uint8_t *p;

	e.xattrs = &x;
	e.nxattrs = 1;
	raw_manifest(&b, &e, 1);
	p = memmem(b.data, b.len, "user.ab", 7);
	cr_assert_not_null(p);
	p[6] = '\0';
	expect_corrupt(b.data, b.len, "xattr name with NUL");
	amber_buf_dispose(&b);
}

Test(manifest, huge_counts_are_refused_before_allocating)
{
	uint8_t hdr[5 + 59] = {1, 0xff, 0xff, 0xff, 0xff};
	uint32_t counts[] = {UINT32_MAX, AMBER_MANIFEST_MAX_ENTRIES + 1, 2};
	amber_entry e = plain_file("f", 1);
	amber_buf b;

	/* Only the count is hostile: each would need far more bytes. */
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		memcpy(hdr + 1, &counts[i], 4);
		expect_corrupt(hdr, sizeof(hdr), "count");
		cr_expect(strstr(amber_error_last(), "cannot fit") != NULL, "%u: %s", counts[i],
			  amber_error_last());
	}
	/* An xattr count too large for the remaining bytes. */
	raw_manifest(&b, &e, 1);
	b.data[b.len - 2] = 0x00;
	b.data[b.len - 1] = 0x04;
	expect_corrupt(b.data, b.len, "xattr count");
	amber_buf_dispose(&b);
}

Test(manifest, every_truncation_is_refused)
{
	amber_buf b;

	encode_awkward(&b);
	for (size_t len = 0; len < b.len; len++) {
		/* A fresh copy of exactly len bytes so ASan sees any overread. */
		uint8_t *copy = malloc(len ? len : 1);

		memcpy(copy, b.data, len);
		expect_corrupt(copy, len, "truncated");
		free(copy);
	}
	amber_buf_dispose(&b);
}

Test(manifest, trailing_byte_and_bad_version_are_refused)
{
	amber_buf b;

	encode_awkward(&b);
	amber_buf_put_u8(&b, 0);
	expect_corrupt(b.data, b.len, "trailing byte");
	b.len--;
	b.data[0] = 2;
	expect_corrupt(b.data, b.len, "version 2");
	b.data[0] = 0;
	expect_corrupt(b.data, b.len, "version 0");
	amber_buf_dispose(&b);
}

Test(manifest, every_single_byte_flip_is_safe)
{
	amber_buf b;
	amber_entry *v;
	size_t n;

	/* Decoding may succeed (a flipped uid is still valid), but never crashes. */
	encode_awkward(&b);
	for (size_t i = 0; i < b.len; i += (i < 4096 ? 1 : 997)) {
		b.data[i] ^= 0x80;
		if (amber_manifest_decode(&v, &n, b.data, b.len) == 0)
			amber_entries_free(v, n);
		b.data[i] ^= 0x80;
	}
	amber_buf_dispose(&b);
}

Test(manifest, name_rules)
{
	cr_expect(amber_name_valid("a", 1));
	cr_expect(amber_name_valid("...", 3));
	cr_expect(amber_name_valid(".a", 2));
	cr_expect(amber_name_valid(" ", 1));
	cr_expect(amber_name_valid("\n\xff\xfe", 3));
	cr_expect_not(amber_name_valid(NULL, 0));
	cr_expect_not(amber_name_valid("", 0));
	cr_expect_not(amber_name_valid(".", 1));
	cr_expect_not(amber_name_valid("..", 2));
	cr_expect_not(amber_name_valid("a/", 2));
	cr_expect_not(amber_name_valid("a\0", 2));
	cr_expect_lt(amber_name_cmp("a", 1, "ab", 2), 0);
	cr_expect_gt(amber_name_cmp("b", 1, "ab", 2), 0);
	cr_expect_eq(amber_name_cmp("ab", 2, "ab", 2), 0);
	cr_expect_gt(amber_name_cmp("\xff", 1, "a", 1), 0);
	cr_expect_eq(amber_name_cmp("", 0, "", 0), 0);
}

Test(manifest, refname_rules)
{
	static const char *good[] = {"main", "a", "prod-eu_1.2", "A.b-c", "x.lck", "9"};
	static const char *bad[] = {
		"", ".hidden", "-opt", "a..b", "main.lock", "a/b", "a b", "caf\xc3\xa9", "a~",
		"a^", "a:b", "a\\b", "@{", "a*", "a?", "a[",
		"01234567890123456789012345678901234567890123456789012345678901234",
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		cr_expect(amber_refname_valid(good[i]), "%s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_not(amber_refname_valid(bad[i]), "%s", bad[i]);
	cr_expect_not(amber_refname_valid(NULL));
	cr_expect(amber_refname_valid(
		"0123456789012345678901234567890123456789012345678901234567890123"));
}

/* ------------------------------------------------------------------ */
/* Fan-out                                                             */

static void make_buckets(amber_bucket *b, size_t n)
{
	memset(b, 0, n * sizeof(*b));
	for (size_t i = 0; i < n; i++) {
		b[i].id = (uint16_t)(n >= 256 ? i : i * 3);
		b[i].count = (uint32_t)(i + 1) * 5;
		fill(b[i].tree_oid, 20, (uint8_t)i);
		fill(b[i].link.oid, 20, (uint8_t)(i + 1));
		fill(b[i].link.mac, 24, (uint8_t)(i + 2));
	}
}

#define FAN_HDR 6      /* version, bits, count u32 */
#define FAN_BUCKET 70  /* id u16, count u32, tree 20, link 44 */

Test(fanout, round_trips)
{
	static amber_bucket in[4096];
	amber_bucket *out = NULL;
	size_t sizes[] = {1, 40, 256, 4096};
	unsigned bits[] = {8, 8, 8, 12}, got_bits = 0;
	amber_buf b;
	size_t n;

	for (size_t k = 0; k < 4; k++) {
		make_buckets(in, sizes[k]);
		amber_buf_init(&b, 0);
		OK(amber_fanout_encode(&b, bits[k], in, sizes[k]));
		cr_expect_eq(b.len, FAN_HDR + FAN_BUCKET * sizes[k]);
		OK(amber_fanout_decode(&out, &got_bits, &n, b.data, b.len));
		cr_assert_eq(n, sizes[k]);
		cr_expect_eq(got_bits, bits[k]);
		cr_expect_eq(memcmp(in, out, n * sizeof(*out)), 0);
		free(out);
		amber_buf_dispose(&b);
	}
}

static void expect_fanout_corrupt(const amber_buf *b, const char *what)
{
	amber_bucket *out = (amber_bucket *)1;
	unsigned bits = 0;
	size_t n = 9;

	cr_expect_eq(amber_fanout_decode(&out, &bits, &n, b->data, b->len), AMBER_ECORRUPT,
		     "%s", what);
	cr_expect_null(out, "%s", what);
}

Test(fanout, hostile_lists_are_refused)
{
	amber_bucket in[3];
	amber_buf b;

	make_buckets(in, 3);
	amber_buf_init(&b, 0);
	OK(amber_fanout_encode(&b, 8, in, 3));
	b.data[FAN_HDR + FAN_BUCKET] = b.data[FAN_HDR]; /* bucket 1 id = bucket 0 id */
	expect_fanout_corrupt(&b, "duplicate id");
	b.data[FAN_HDR + FAN_BUCKET] = 3;
	b.data[FAN_HDR] = 200;                         /* ids 200, 3, 6 */
	expect_fanout_corrupt(&b, "unsorted ids");
	b.data[FAN_HDR] = 0;
	b.data[FAN_HDR + 2 * FAN_BUCKET + 1] = 1;      /* id 262 >= 2^8 */
	expect_fanout_corrupt(&b, "id out of range");
	b.data[FAN_HDR + 2 * FAN_BUCKET + 1] = 0;
	memset(b.data + FAN_HDR + FAN_BUCKET + 2, 0, 4); /* bucket 1 count 0 */
	expect_fanout_corrupt(&b, "empty bucket");
	amber_buf_reset(&b);
	OK(amber_fanout_encode(&b, 8, in, 3));
	b.data[2] = 4;                                 /* 4 buckets declared, 3 present */
	expect_fanout_corrupt(&b, "count over data");
	b.data[2] = 3;
	b.data[1] = 7;                                 /* bits below the minimum */
	expect_fanout_corrupt(&b, "7 bits");
	b.data[1] = 17;                                /* bits above the maximum */
	expect_fanout_corrupt(&b, "17 bits");
	b.data[1] = 8;
	amber_buf_put_u8(&b, 0);
	expect_fanout_corrupt(&b, "trailing byte");
	for (size_t len = 0; len < b.len - 1; len++) {
		amber_buf t = {b.data, len, len, 0, 0};

		expect_fanout_corrupt(&t, "truncated");
	}
	amber_buf_dispose(&b);
}

Test(fanout, encoder_refuses_bad_lists)
{
	amber_bucket in[2];
	amber_buf b;

	make_buckets(in, 2);
	amber_buf_init(&b, 0);
	cr_expect_eq(amber_fanout_encode(&b, 7, in, 2), AMBER_EINVAL);
	in[1].id = in[0].id;
	cr_expect_eq(amber_fanout_encode(&b, 8, in, 2), AMBER_EINVAL);
	cr_expect_eq(amber_fanout_encode(&b, 8, in, 0), AMBER_EINVAL);
	cr_expect_eq(b.len, 0);
	amber_buf_dispose(&b);
}

/* Layout 2: one node of the tree of buckets. */

#define NODE_HDR 6     /* version, bits, level, prefix u16, count u8 */
#define NODE_CHILD 69  /* id u8, count u32, tree 20, link 44 */

static amber_fanout_node make_node(unsigned bits, unsigned level, unsigned prefix, size_t n)
{
	amber_fanout_node nd = {.bits = bits, .level = level, .prefix = prefix, .n = n};

	make_buckets(nd.c, n);
	for (size_t i = 0; i < n; i++)
		nd.c[i].id = (uint16_t)i;
	return nd;
}

Test(fanout, nodes_round_trip)
{
	amber_fanout_node in[] = {make_node(11, 0, 0, 16), make_node(11, 2, 0xab, 8),
				  make_node(16, 3, 0xfff, 1), make_node(8, 1, 15, 16)};
	amber_fanout_node out;
	amber_buf b;

	for (size_t k = 0; k < sizeof(in) / sizeof(in[0]); k++) {
		amber_buf_init(&b, 0);
		OK(amber_fanout_node_encode(&b, &in[k]));
		cr_expect_eq(b.len, NODE_HDR + NODE_CHILD * in[k].n);
		cr_expect_eq(amber_fanout_layout(b.data, b.len), 2);
		OK(amber_fanout_node_decode(&out, b.data, b.len));
		cr_expect_eq(memcmp(&in[k], &out, sizeof(out)), 0, "node %zu", k);
		amber_buf_dispose(&b);
	}
	cr_expect_eq(amber_fanout_levels(8), 2);
	cr_expect_eq(amber_fanout_levels(11), 3);
	cr_expect_eq(amber_fanout_width(11, 2), 3);
	cr_expect_eq(amber_fanout_levels(16), AMBER_FANOUT_LEVELS_MAX);
}

static void expect_node_corrupt(const amber_buf *b, const char *what)
{
	amber_fanout_node nd;

	cr_expect_eq(amber_fanout_node_decode(&nd, b->data, b->len), AMBER_ECORRUPT, "%s", what);
}

Test(fanout, hostile_nodes_are_refused)
{
	amber_fanout_node in = make_node(11, 2, 0xab, 3);
	amber_buf b;

	amber_buf_init(&b, 0);
	OK(amber_fanout_node_encode(&b, &in));
	b.data[0] = 1;
	expect_node_corrupt(&b, "layout 1 read as a node");
	b.data[0] = 3;
	expect_node_corrupt(&b, "unknown layout version");
	b.data[0] = 2;
	b.data[2] = 3;                                  /* level 3 of an 11-bit fan-out */
	expect_node_corrupt(&b, "level below the last");
	b.data[2] = 1;                                  /* prefix 0xab needs level 2 */
	expect_node_corrupt(&b, "prefix out of range");
	b.data[2] = 2;
	b.data[1] = 7;
	expect_node_corrupt(&b, "7 bits");
	b.data[1] = 17;
	expect_node_corrupt(&b, "17 bits");
	b.data[1] = 11;
	b.data[NODE_HDR + 2 * NODE_CHILD] = 8;          /* id 8 at a 3-bit level */
	expect_node_corrupt(&b, "id out of range");
	b.data[NODE_HDR + 2 * NODE_CHILD] = 1;          /* ids 0, 1, 1 */
	expect_node_corrupt(&b, "duplicate id");
	b.data[NODE_HDR + 2 * NODE_CHILD] = 2;
	memset(b.data + NODE_HDR + NODE_CHILD + 1, 0, 4);
	expect_node_corrupt(&b, "empty child");
	memset(b.data + NODE_HDR + NODE_CHILD + 1, 0xff, 3);
	b.data[NODE_HDR + NODE_CHILD + 4] = 0;          /* 2^24 - 1 entries, over 2^20 */
	expect_node_corrupt(&b, "child over a directory's entries");
	memset(b.data + NODE_HDR + NODE_CHILD + 1, 0, 4);
	b.data[NODE_HDR + NODE_CHILD + 3] = 0x08;       /* 2^19 + 2^19 + ... over 2^20 */
	memset(b.data + NODE_HDR + 1, 0, 4);
	b.data[NODE_HDR + 3] = 0x08;
	memset(b.data + NODE_HDR + 2 * NODE_CHILD + 1, 0, 4);
	b.data[NODE_HDR + 2 * NODE_CHILD + 3] = 0x08;
	expect_node_corrupt(&b, "children over a directory's entries");
	amber_buf_reset(&b);
	OK(amber_fanout_node_encode(&b, &in));
	b.data[5] = 4;                                  /* 4 children declared, 3 present */
	expect_node_corrupt(&b, "count over data");
	b.data[5] = 0;
	expect_node_corrupt(&b, "no children");
	b.data[5] = 3;
	amber_buf_put_u8(&b, 0);
	expect_node_corrupt(&b, "trailing byte");
	for (size_t len = 0; len < b.len - 1; len++) {
		amber_buf t = {b.data, len, len, 0, 0};

		expect_node_corrupt(&t, "truncated");
	}
	amber_buf_dispose(&b);
}

Test(fanout, encoder_refuses_bad_nodes)
{
	amber_fanout_node nd = make_node(11, 2, 0xab, 9); /* 9 children at a 3-bit level */
	amber_buf b;

	amber_buf_init(&b, 0);
	cr_expect_eq(amber_fanout_node_encode(&b, &nd), AMBER_EINVAL);
	nd = make_node(8, 2, 0, 1);                       /* 8 bits have levels 0 and 1 */
	cr_expect_eq(amber_fanout_node_encode(&b, &nd), AMBER_EINVAL);
	cr_expect_eq(b.len, 0);
	amber_buf_dispose(&b);
}

/* ------------------------------------------------------------------ */
/* Chunk index                                                         */

#define MAXC ((size_t)2 << 20)

static void make_chunks(amber_chunkref *c, size_t n, uint64_t *total)
{
	*total = 0;
	memset(c, 0, n * sizeof(*c));
	for (size_t i = 0; i < n; i++) {
		c[i].len = (uint32_t)(i == n - 1 ? 1 : MAXC - i);
		fill(c[i].link.oid, 20, (uint8_t)i);
		fill(c[i].link.mac, 24, (uint8_t)(i * 5));
		*total += c[i].len;
	}
}

Test(index, round_trips)
{
	amber_chunkref in[5], *out = NULL;
	uint64_t total;
	amber_buf b;
	size_t n;

	make_chunks(in, 5, &total);
	amber_buf_init(&b, 0);
	OK(amber_index_encode(&b, in, 5));
	cr_expect_eq(b.len, 5 + 48 * 5);
	OK(amber_index_decode(&out, &n, b.data, b.len, total, MAXC));
	cr_assert_eq(n, 5);
	cr_expect_eq(memcmp(in, out, sizeof(in)), 0);
	free(out);
	amber_buf_dispose(&b);
}

static void expect_index_corrupt(const void *d, size_t len, uint64_t size, size_t max,
				 const char *what)
{
	amber_chunkref *out = (amber_chunkref *)1;
	size_t n = 9;

	cr_expect_eq(amber_index_decode(&out, &n, d, len, size, max), AMBER_ECORRUPT, "%s", what);
	cr_expect_null(out, "%s", what);
	cr_expect_eq(n, 0, "%s", what);
}

Test(index, hostile_indexes_are_refused)
{
	amber_chunkref in[3];
	uint64_t total;
	amber_buf b;

	make_chunks(in, 3, &total);
	amber_buf_init(&b, 0);
	OK(amber_index_encode(&b, in, 3));
	expect_index_corrupt(b.data, b.len, total + 1, MAXC, "sum below file size");
	expect_index_corrupt(b.data, b.len, total - 1, MAXC, "sum above file size");
	expect_index_corrupt(b.data, b.len, total, MAXC - 1, "chunk over max");
	memset(b.data + 5 + 44, 0, 4);          /* chunk 0 length 0 */
	expect_index_corrupt(b.data, b.len, total - in[0].len, MAXC, "zero-length chunk");
	amber_buf_reset(&b);
	OK(amber_index_encode(&b, in, 3));
	memset(b.data + 1, 0xff, 4);
	expect_index_corrupt(b.data, b.len, total, MAXC, "huge count");
	memset(b.data + 1, 0, 4);
	expect_index_corrupt(b.data, b.len, 0, MAXC, "zero count");
	b.data[1] = 3;
	amber_buf_put_u8(&b, 0);
	expect_index_corrupt(b.data, b.len, total, MAXC, "trailing byte");
	for (size_t len = 0; len < b.len - 1; len++)
		expect_index_corrupt(b.data, len, total, MAXC, "truncated");
	amber_buf_dispose(&b);
}

Test(index, large_lengths_must_add_up_exactly)
{
	amber_chunkref in[3];
	amber_buf b;
	amber_chunkref *out;
	size_t n;

	memset(in, 0, sizeof(in));
	for (int i = 0; i < 3; i++)
		in[i].len = UINT32_MAX;
	amber_buf_init(&b, 0);
	OK(amber_index_encode(&b, in, 3));
	cr_expect_eq(amber_index_decode(&out, &n, b.data, b.len, UINT64_MAX, SIZE_MAX),
		     AMBER_ECORRUPT);
	OK(amber_index_decode(&out, &n, b.data, b.len, 3ull * UINT32_MAX, SIZE_MAX));
	free(out);
	amber_buf_dispose(&b);
}

/* Index layout 2: roots of paged indexes. */

#define ROOT_HDR 5     /* version, count u32 */
#define ROOT_PAGE 76   /* chunks u32, bytes u64, tree 20, link 44 */

static void make_pages(amber_indexpage *p, size_t n, uint32_t last)
{
	memset(p, 0, n * sizeof(*p));
	for (size_t i = 0; i < n; i++) {
		p[i].chunks = i + 1 < n ? AMBER_INDEX_PAGE : last;
		p[i].bytes = (uint64_t)p[i].chunks * 1000 + i;
		fill(p[i].tree_oid, 20, (uint8_t)i);
		fill(p[i].link.oid, 20, (uint8_t)(i + 1));
		fill(p[i].link.mac, 24, (uint8_t)(i + 2));
	}
}

static uint64_t pages_bytes(const amber_indexpage *p, size_t n)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += p[i].bytes;
	return sum;
}

Test(index, paged_roots_round_trip)
{
	static amber_indexpage in[300];
	amber_indexpage *out = NULL;
	size_t n = 0, sizes[] = {2, 3, 300};
	amber_buf b;

	for (size_t k = 0; k < 3; k++) {
		make_pages(in, sizes[k], (uint32_t)(k * 30 + 1));
		amber_buf_init(&b, 0);
		OK(amber_index_root_encode(&b, in, sizes[k]));
		cr_expect_eq(b.len, ROOT_HDR + ROOT_PAGE * sizes[k]);
		cr_expect_eq(amber_index_layout(b.data, b.len), 2);
		OK(amber_index_root_decode(&out, &n, b.data, b.len, pages_bytes(in, sizes[k]),
					   MAXC));
		cr_assert_eq(n, sizes[k]);
		cr_expect_eq(memcmp(in, out, n * sizeof(*out)), 0);
		free(out);
		amber_buf_dispose(&b);
	}
}

static void expect_root_corrupt(const amber_buf *b, uint64_t size, const char *what)
{
	amber_indexpage *out = (amber_indexpage *)1;
	size_t n = 9;

	cr_expect_eq(amber_index_root_decode(&out, &n, b->data, b->len, size, MAXC), AMBER_ECORRUPT,
		     "%s", what);
	cr_expect_null(out, "%s", what);
}

Test(index, hostile_paged_roots_are_refused)
{
	amber_indexpage in[3];
	amber_buf b;
	uint64_t size;

	make_pages(in, 3, 5);
	size = pages_bytes(in, 3);
	amber_buf_init(&b, 0);
	OK(amber_index_root_encode(&b, in, 3));
	expect_root_corrupt(&b, size + 1, "pages short of the file size");
	expect_root_corrupt(&b, size - 1, "pages over the file size");
	b.data[ROOT_HDR] = 63;                          /* a page before the last not full */
	expect_root_corrupt(&b, size, "short page");
	b.data[ROOT_HDR] = 64;
	b.data[ROOT_HDR + 2 * ROOT_PAGE] = 65;          /* last page over 64 chunks */
	expect_root_corrupt(&b, size, "long last page");
	b.data[ROOT_HDR + 2 * ROOT_PAGE] = 0;
	expect_root_corrupt(&b, size, "empty last page");
	b.data[ROOT_HDR + 2 * ROOT_PAGE] = 5;
	memset(b.data + ROOT_HDR + 4, 0, 8);            /* page 0 of 0 bytes */
	b.data[ROOT_HDR + 4] = 63;                      /* 63 bytes for 64 chunks */
	expect_root_corrupt(&b, size, "fewer bytes than chunks");
	amber_buf_reset(&b);
	OK(amber_index_root_encode(&b, in, 3));
	b.data[0] = 1;
	expect_root_corrupt(&b, size, "layout 1 read as a root");
	b.data[0] = 2;
	b.data[1] = 4;                                  /* 4 pages declared, 3 present */
	expect_root_corrupt(&b, size, "count over data");
	b.data[1] = 1;
	expect_root_corrupt(&b, size, "one page");
	b.data[1] = 3;
	amber_buf_put_u8(&b, 0);
	expect_root_corrupt(&b, size, "trailing byte");
	for (size_t len = 0; len < b.len - 1; len++) {
		amber_buf t = {b.data, len, len, 0, 0};

		expect_root_corrupt(&t, size, "truncated");
	}
	amber_buf_dispose(&b);
}

/* ------------------------------------------------------------------ */
/* Snapshot record                                                     */

/* The root's own entry as the record carries it; static, borrowed by r. */
static void set_root_meta(amber_record *r, uint8_t type)
{
	static amber_buf b = AMBER_BUF_INIT;
	amber_entry e = plain_file("root", 4);

	e.type = type;
	e.mode = 0755;
	e.content = type == AMBER_T_DIR ? AMBER_C_DIR : AMBER_C_CHUNKED;
	e.size = type == AMBER_T_DIR ? 0 : 10;
	memcpy(e.tree_oid, r->tree, 20);
	e.link = r->root;
	amber_buf_dispose(&b);
	amber_buf_init(&b, 0);
	OK(amber_manifest_encode(&b, &e, 1));
	r->root_meta = b.data;
	r->root_meta_len = b.len;
}

static void make_record(amber_record *r)
{
	memset(r, 0, sizeof(*r));
	fill(r->tree, 20, 1);
	fill(r->parent, 20, 2);
	r->has_parent = 1;
	fill(r->root.oid, 20, 3);
	fill(r->root.mac, 24, 4);
	r->root_content = AMBER_C_DIR;
	set_root_meta(r, AMBER_T_DIR);
	memcpy(r->stream, "prod-eu", 8);
	r->time_ns = 1795183387LL * 1000000000 + 123456789;
	r->host = "venue-01";
	r->source = "/srv/state with space/\xff";
	r->message = "before the close\nsecond line";
	r->stats = (amber_stats){.version = AMBER_STATS_VERSION, .files = 1, .dirs = 2, .bytes = 3,
				 .bytes_read = 4, .bytes_new = 5, .objects_new = 6,
				 .errors = UINT64_MAX};
}

Test(record, round_trips)
{
	amber_record in, out;
	amber_buf b;

	make_record(&in);
	amber_buf_init(&b, 0);
	OK(amber_record_encode(&b, &in));
	OK(amber_record_decode(&out, b.data, b.len));
	cr_expect_eq(memcmp(in.tree, out.tree, 20), 0);
	cr_expect_eq(memcmp(in.parent, out.parent, 20), 0);
	cr_expect_eq(out.has_parent, 1);
	cr_expect_eq(memcmp(&in.root, &out.root, sizeof(in.root)), 0);
	cr_expect_eq(out.root_content, AMBER_C_DIR);
	cr_expect_str_eq(out.stream, "prod-eu");
	cr_expect_eq(out.time_ns, in.time_ns);
	cr_expect_str_eq(out.host, in.host);
	cr_expect_str_eq(out.source, in.source);
	cr_expect_str_eq(out.message, in.message);
	cr_expect_eq(memcmp(&in.stats, &out.stats, sizeof(in.stats)), 0);
	cr_assert_eq(out.root_meta_len, in.root_meta_len);
	cr_expect_neq(out.root_meta, in.root_meta);
	cr_expect_eq(memcmp(out.root_meta, in.root_meta, in.root_meta_len), 0);
	amber_record_dispose(&out);
	cr_expect_null(out.host);
	cr_expect_null(out.root_meta);
	amber_buf_dispose(&b);
}

Test(record, first_snapshot_and_empty_texts_round_trip)
{
	amber_record in, out;
	amber_buf b;

	make_record(&in);
	in.has_parent = 0;
	memset(in.parent, 0, 20);
	in.host = NULL;
	in.message = "";
	amber_buf_init(&b, 0);
	OK(amber_record_encode(&b, &in));
	OK(amber_record_decode(&out, b.data, b.len));
	cr_expect_eq(out.has_parent, 0);
	cr_expect_str_eq(out.host, "");
	cr_expect_str_eq(out.message, "");
	amber_record_dispose(&out);
	amber_buf_dispose(&b);
}

static void expect_record_corrupt(const amber_buf *b, const char *what)
{
	amber_record out;

	cr_expect_eq(amber_record_decode(&out, b->data, b->len), AMBER_ECORRUPT, "%s", what);
	cr_expect_null(out.host, "%s", what);
}

/* Encode a good record, then replace the first `from` with `to` (same length). */
static void patched(amber_buf *b, const char *from, const char *to, size_t len)
{
	amber_record in;
	uint8_t *p;

	make_record(&in);
	amber_buf_init(b, 0);
	OK(amber_record_encode(b, &in));
	p = memmem(b->data, b->len, from, len);
	cr_assert_not_null(p);
	memcpy(p, to, len);
}

Test(record, hostile_records_are_refused)
{
	static const char *streams[] = {"prod/eu", "-prod-e", "prod..u", "prod\0eu", "prod eu"};
	amber_buf b;

	for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
		patched(&b, "prod-eu", streams[i], 7);
		expect_record_corrupt(&b, streams[i]);
		amber_buf_dispose(&b);
	}
	patched(&b, "venue-01", "venue\0" "01", 8);
	expect_record_corrupt(&b, "NUL in host");
	b.data[1 + 20] = 2;                     /* has_parent 2 */
	expect_record_corrupt(&b, "has_parent 2");
	amber_buf_dispose(&b);
	patched(&b, "venue-01", "venue-01", 8);
	b.data[1 + 20] = 0;                     /* no parent, yet parent bytes set */
	expect_record_corrupt(&b, "stray parent");
	b.data[1 + 20] = 1;
	b.data[1 + 20 + 1 + 20 + 44] = AMBER_C_BLOB;
	expect_record_corrupt(&b, "root not a dir");
	b.data[1 + 20 + 1 + 20 + 44] = AMBER_C_DIR;
	amber_buf_put_u8(&b, 0);
	expect_record_corrupt(&b, "trailing byte");
	for (size_t len = 0; len < b.len - 1; len++) {
		amber_buf t = {b.data, len, len, 0, 0};

		expect_record_corrupt(&t, "truncated");
	}
	amber_buf_dispose(&b);
}

Test(record, encoder_refuses_bad_records)
{
	amber_record in;
	amber_buf b;
	char big[4098];

	amber_buf_init(&b, 0);
	make_record(&in);
	memcpy(in.stream, "main.lock", 10);
	cr_expect_eq(amber_record_encode(&b, &in), AMBER_EINVAL);
	make_record(&in);
	memset(big, 'm', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	in.message = big;
	cr_expect_eq(amber_record_encode(&b, &in), AMBER_EINVAL);
	big[4096] = '\0';
	OK(amber_record_encode(&b, &in));
	in.root_meta_len = 0;
	cr_expect_eq(amber_record_encode(&b, &in), AMBER_EINVAL);
	amber_buf_dispose(&b);
}

/* Encode a record whose root entry is made for other values, raw. */
static void raw_record(amber_buf *b, const amber_record *r)
{
	amber_buf_init(b, 0);
	amber_buf_put_u8(b, 1);
	amber_buf_put(b, r->tree, 20);
	amber_buf_put_u8(b, (uint8_t)r->has_parent);
	amber_buf_put(b, r->parent, 20);
	amber_buf_put(b, &r->root, 44);
	amber_buf_put_u8(b, r->root_content);
	amber_buf_put_u32(b, (uint32_t)r->root_meta_len);
	amber_buf_put(b, r->root_meta, r->root_meta_len);
	amber_buf_put_u8(b, (uint8_t)strlen(r->stream));
	amber_buf_put(b, r->stream, strlen(r->stream));
	amber_buf_put_u64(b, (uint64_t)r->time_ns);
	amber_buf_put_u16(b, (uint16_t)strlen(r->host));
	amber_buf_put(b, r->host, strlen(r->host));
	amber_buf_put_u16(b, (uint16_t)strlen(r->source));
	amber_buf_put(b, r->source, strlen(r->source));
	amber_buf_put_u16(b, (uint16_t)strlen(r->message));
	amber_buf_put(b, r->message, strlen(r->message));
	amber_buf_put(b, &r->stats.files, 7 * sizeof(uint64_t)); /* seven u64, little-endian
								     host; not the version */
}

Test(record, layout_is_pinned)
{
	amber_record in;
	amber_buf lib, raw;

	make_record(&in);
	amber_buf_init(&lib, 0);
	OK(amber_record_encode(&lib, &in));
	raw_record(&raw, &in);
	cr_assert_eq(lib.len, raw.len);
	cr_expect_eq(memcmp(lib.data, raw.data, raw.len), 0);
	amber_buf_dispose(&raw);
	amber_buf_dispose(&lib);
}

Test(record, spliced_root_entries_are_refused)
{
	amber_record in;
	amber_buf b;

	make_record(&in);
	in.tree[0] ^= 1;                        /* root entry names another tree */
	raw_record(&b, &in);
	expect_record_corrupt(&b, "root entry for another tree");
	amber_buf_dispose(&b);
	make_record(&in);
	in.root.mac[23] ^= 1;                   /* ... or another manifest */
	raw_record(&b, &in);
	expect_record_corrupt(&b, "root entry for another manifest");
	amber_buf_dispose(&b);
	make_record(&in);
	set_root_meta(&in, AMBER_T_REG);
	raw_record(&b, &in);
	expect_record_corrupt(&b, "root entry is a file");
	amber_buf_dispose(&b);
	make_record(&in);
	in.root_meta_len = 0;
	raw_record(&b, &in);
	expect_record_corrupt(&b, "no root entry");
	amber_buf_dispose(&b);
	make_record(&in);
	in.root_meta_len--;
	raw_record(&b, &in);
	expect_record_corrupt(&b, "truncated root entry");
	amber_buf_dispose(&b);
}

/* Version 4: the unsigned-on-purpose flag, with and without the time index and pages. */
Test(record, unsigned_on_purpose_flag_round_trips_as_version_4)
{
	amber_record in, out;
	amber_buf b;

	for (int kind = 0; kind < 3; kind++) { /* 0: no index, 1: index, 2: index + pages */
		size_t after = 0;                   /* bytes after the flags byte */

		make_record(&in);
		in.unsigned_on_purpose = 1;
		if (kind > 0) {
			in.has_parent = 0;
			memset(in.parent, 0, 20);
			in.height = 1;
			after += 8 + 1;
		}
		if (kind > 1) {
			in.page_span = 1024;
			after += 4 + 8 + 20 + 24;
		}
		amber_buf_init(&b, 0);
		OK(amber_record_encode(&b, &in));
		cr_assert_eq(b.data[0], 4, "a flagged record is version 4");
		OK(amber_record_decode(&out, b.data, b.len));
		cr_expect_eq(out.unsigned_on_purpose, 1);
		cr_expect_eq(out.height, in.height);
		cr_expect_eq(out.page_span, in.page_span);
		cr_expect_str_eq(out.message, in.message);
		amber_record_dispose(&out);
		if (kind == 2) { /* pages without the index they hang from are refused */
			b.data[b.len - after - 1] &= (uint8_t)~0x02;
			expect_record_corrupt(&b, "pages flagged without the index");
			b.data[b.len - after - 1] |= 0x02;
		}
		/* an unknown flag bit is refused, not ignored */
		b.data[b.len - after - 1] |= 0x80;
		expect_record_corrupt(&b, "unknown record flag");
		amber_buf_dispose(&b);
	}
	/* without the flag, records stay version 2 (or 1): older readers read them */
	make_record(&in);
	amber_buf_init(&b, 0);
	OK(amber_record_encode(&b, &in));
	cr_expect_eq(b.data[0], 1);
	OK(amber_record_decode(&out, b.data, b.len));
	cr_expect_eq(out.unsigned_on_purpose, 0);
	amber_record_dispose(&out);
	amber_buf_dispose(&b);
}
