/*
 * The cache map: put/get/replace, growth, and its file format, which must
 * survive anything (missing, foreign, truncated files are empty or partial,
 * never a crash) and be replaced atomically.
 */
#include "amber.h"
#include "kvmap.h"

#include <criterion/criterion.h>

#include "scratch.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OK(expr)                                                                     \
	do {                                                                         \
		int rc_ = (expr);                                                    \
		cr_assert_eq(rc_, 0, "%s = %d: %s", #expr, rc_, amber_error_last()); \
	} while (0)

static const char MAGIC[8] = "KVTEST1\n";
static const char OTHER_MAGIC[8] = "KVTEST2\n";

static void setup(void)
{
	scratch_make("kvmap");
}

TestSuite(kvmap, .init = setup, .fini = scratch_remove);

/* Helpers --------------------------------------------------------------------- */

/* Key i: a well-spread hash, like the keyed hashes the map really holds. */
static void mkkey(uint8_t key[32], uint32_t i)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ull + 0x1234567;

	for (int j = 0; j < 32; j++) {
		x ^= x >> 29;
		x *= 0xbf58476d1ce4e5b9ull;
		x ^= x >> 32;
		key[j] = (uint8_t)x;
	}
}

/* Keys that all probe from the same slot: equal first 8 bytes. */
static void mkkey_colliding(uint8_t key[32], uint32_t i)
{
	memset(key, 0xAB, 32);
	memcpy(key + 20, &i, sizeof(i));
}

typedef struct val {
	uint32_t a;
	uint64_t b;
	char tag[12];
} val;

static val mkval(uint32_t i, uint32_t gen)
{
	val v;

	memset(&v, 0, sizeof(v));
	v.a = i;
	v.b = ((uint64_t)gen << 32) | (i ^ 0x5a5a5a5au);
	snprintf(v.tag, sizeof(v.tag), "v%u", i % 100000u);
	return v;
}

static void tag_of(uint8_t tag[32], int which)
{
	memset(tag, which, 32);
}

static amber_kvmap *filled(uint32_t n)
{
	amber_kvmap *m = amber_kvmap_new(sizeof(val));
	uint8_t k[32];

	cr_assert_not_null(m);
	for (uint32_t i = 0; i < n; i++) {
		val v = mkval(i, 1);

		mkkey(k, i);
		OK(amber_kvmap_put(m, k, &v));
	}
	return m;
}

static void assert_holds(const amber_kvmap *m, uint32_t n)
{
	uint8_t k[32];

	cr_assert_eq(amber_kvmap_count(m), n, "count %zu, want %u", amber_kvmap_count(m), n);
	for (uint32_t i = 0; i < n; i++) {
		val want = mkval(i, 1);
		const void *got;

		mkkey(k, i);
		got = amber_kvmap_get(m, k);
		cr_assert_not_null(got, "key %u lost", i);
		cr_assert_eq(memcmp(got, &want, sizeof(want)), 0, "value of key %u differs", i);
	}
}

static off_t file_size(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
	return st.st_size;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fwrite(data, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

static void *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	void *p;
	long n;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	p = malloc((size_t)n + 1);
	cr_assert_not_null(p);
	cr_assert_eq(fread(p, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return p;
}

/* Names in base other than "." and "..". */
static int dir_entries(char names[][256], int max)
{
	DIR *d = opendir(base);
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (n < max)
			snprintf(names[n], 256, "%s", e->d_name);
		n++;
	}
	closedir(d);
	return n;
}

static int is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* put / get / replace ----------------------------------------------------------- */

Test(kvmap, new_map_is_empty)
{
	amber_kvmap *m = amber_kvmap_new(sizeof(val));
	uint8_t k[32];

	cr_assert_not_null(m);
	mkkey(k, 0);
	cr_assert_eq(amber_kvmap_count(m), 0);
	cr_assert_null(amber_kvmap_get(m, k));
	amber_kvmap_free(m);
	amber_kvmap_free(NULL);
}

Test(kvmap, put_then_get_returns_the_value)
{
	amber_kvmap *m = amber_kvmap_new(sizeof(val));
	uint8_t k[32], other[32];
	val v = mkval(7, 1);

	mkkey(k, 7);
	mkkey(other, 8);
	OK(amber_kvmap_put(m, k, &v));
	cr_assert_eq(amber_kvmap_count(m), 1);
	cr_assert_not_null(amber_kvmap_get(m, k));
	cr_assert_eq(memcmp(amber_kvmap_get(m, k), &v, sizeof(v)), 0);
	cr_assert_null(amber_kvmap_get(m, other));
	amber_kvmap_free(m);
}

Test(kvmap, put_copies_the_value)
{
	amber_kvmap *m = amber_kvmap_new(sizeof(val));
	uint8_t k[32];
	val v = mkval(1, 1), orig = v;

	mkkey(k, 1);
	OK(amber_kvmap_put(m, k, &v));
	memset(&v, 0xff, sizeof(v));
	cr_assert_eq(memcmp(amber_kvmap_get(m, k), &orig, sizeof(orig)), 0);
	amber_kvmap_free(m);
}

Test(kvmap, put_of_existing_key_replaces_value_and_keeps_count)
{
	amber_kvmap *m = amber_kvmap_new(sizeof(val));
	uint8_t k[32];
	val v1 = mkval(3, 1), v2 = mkval(3, 2);

	mkkey(k, 3);
	OK(amber_kvmap_put(m, k, &v1));
	OK(amber_kvmap_put(m, k, &v2));
	cr_assert_eq(amber_kvmap_count(m), 1);
	cr_assert_eq(memcmp(amber_kvmap_get(m, k), &v2, sizeof(v2)), 0);
	amber_kvmap_free(m);
}

Test(kvmap, keys_sharing_a_probe_start_are_kept_apart)
{
	amber_kvmap *m = amber_kvmap_new(sizeof(val));
	uint8_t k[32];

	for (uint32_t i = 0; i < 300; i++) {
		val v = mkval(i, 1);

		mkkey_colliding(k, i);
		OK(amber_kvmap_put(m, k, &v));
	}
	cr_assert_eq(amber_kvmap_count(m), 300);
	for (uint32_t i = 0; i < 300; i++) {
		val want = mkval(i, 1);

		mkkey_colliding(k, i);
		cr_assert_not_null(amber_kvmap_get(m, k), "key %u", i);
		cr_assert_eq(memcmp(amber_kvmap_get(m, k), &want, sizeof(want)), 0, "key %u", i);
	}
	mkkey_colliding(k, 300);
	cr_assert_null(amber_kvmap_get(m, k));
	amber_kvmap_free(m);
}

Test(kvmap, growth_past_thousands_of_entries_keeps_every_value)
{
	amber_kvmap *m = filled(50000);
	uint8_t k[32];

	assert_holds(m, 50000);
	/* replacing after growth still finds the one slot */
	for (uint32_t i = 0; i < 50000; i += 97) {
		val v = mkval(i, 9);

		mkkey(k, i);
		OK(amber_kvmap_put(m, k, &v));
	}
	cr_assert_eq(amber_kvmap_count(m), 50000);
	for (uint32_t i = 0; i < 50000; i += 97) {
		val want = mkval(i, 9);

		mkkey(k, i);
		cr_assert_eq(memcmp(amber_kvmap_get(m, k), &want, sizeof(want)), 0);
	}
	amber_kvmap_free(m);
}

Test(kvmap, large_values_are_stored_whole)
{
	amber_kvmap *m = amber_kvmap_new(300);
	uint8_t k[32], v[300];

	for (uint32_t i = 0; i < 3000; i++) {
		memset(v, (int)(i & 0xff), sizeof(v));
		v[299] = (uint8_t)(i >> 8);
		mkkey(k, i);
		OK(amber_kvmap_put(m, k, v));
	}
	for (uint32_t i = 0; i < 3000; i++) {
		const uint8_t *got;

		mkkey(k, i);
		got = amber_kvmap_get(m, k);
		cr_assert_not_null(got);
		cr_assert_eq(got[0], (uint8_t)(i & 0xff));
		cr_assert_eq(got[298], (uint8_t)(i & 0xff));
		cr_assert_eq(got[299], (uint8_t)(i >> 8));
	}
	amber_kvmap_free(m);
}

/* save / load ---------------------------------------------------------------------- */

Test(kvmap, save_then_load_round_trips_every_entry)
{
	amber_kvmap *m = filled(5000), *r = amber_kvmap_new(sizeof(val));
	uint8_t tag[32];

	tag_of(tag, 1);
	OK(amber_kvmap_save(m, at("map"), MAGIC, tag));
	cr_assert_eq(file_size(at("map")), 40 + 5000 * (32 + (off_t)sizeof(val)));
	amber_kvmap_load(r, at("map"), MAGIC, tag);
	assert_holds(r, 5000);
	amber_kvmap_free(m);
	amber_kvmap_free(r);
}

Test(kvmap, empty_map_round_trips_as_empty)
{
	amber_kvmap *m = amber_kvmap_new(sizeof(val)), *r = amber_kvmap_new(sizeof(val));
	uint8_t tag[32];

	tag_of(tag, 1);
	OK(amber_kvmap_save(m, at("map"), MAGIC, tag));
	cr_assert_eq(file_size(at("map")), 40);
	amber_kvmap_load(r, at("map"), MAGIC, tag);
	cr_assert_eq(amber_kvmap_count(r), 0);
	amber_kvmap_free(m);
	amber_kvmap_free(r);
}

Test(kvmap, replaced_values_are_saved_as_replaced)
{
	amber_kvmap *m = filled(100), *r = amber_kvmap_new(sizeof(val));
	uint8_t k[32], tag[32];
	val v2 = mkval(42, 2);

	mkkey(k, 42);
	OK(amber_kvmap_put(m, k, &v2));
	tag_of(tag, 1);
	OK(amber_kvmap_save(m, at("map"), MAGIC, tag));
	amber_kvmap_load(r, at("map"), MAGIC, tag);
	cr_assert_eq(amber_kvmap_count(r), 100);
	cr_assert_eq(memcmp(amber_kvmap_get(r, k), &v2, sizeof(v2)), 0);
	amber_kvmap_free(m);
	amber_kvmap_free(r);
}

Test(kvmap, load_of_missing_file_leaves_map_empty)
{
	amber_kvmap *r = amber_kvmap_new(sizeof(val));
	uint8_t tag[32];

	tag_of(tag, 1);
	amber_kvmap_load(r, at("no-such-file"), MAGIC, tag);
	cr_assert_eq(amber_kvmap_count(r), 0);
	amber_kvmap_load(r, at("no-such-dir/map"), MAGIC, tag);
	cr_assert_eq(amber_kvmap_count(r), 0);
	amber_kvmap_free(r);
}

Test(kvmap, load_of_a_directory_or_empty_file_leaves_map_empty)
{
	amber_kvmap *r = amber_kvmap_new(sizeof(val));
	uint8_t tag[32];

	tag_of(tag, 1);
	cr_assert_eq(mkdir(at("adir"), 0700), 0);
	amber_kvmap_load(r, at("adir"), MAGIC, tag);
	cr_assert_eq(amber_kvmap_count(r), 0);
	write_file(at("empty"), "", 0);
	amber_kvmap_load(r, at("empty"), MAGIC, tag);
	cr_assert_eq(amber_kvmap_count(r), 0);
	amber_kvmap_free(r);
}

Test(kvmap, load_with_wrong_magic_is_empty)
{
	amber_kvmap *m = filled(50), *r = amber_kvmap_new(sizeof(val));
	uint8_t tag[32];

	tag_of(tag, 1);
	OK(amber_kvmap_save(m, at("map"), OTHER_MAGIC, tag));
	amber_kvmap_load(r, at("map"), MAGIC, tag);
	cr_assert_eq(amber_kvmap_count(r), 0, "a file of another version was loaded");
	amber_kvmap_load(r, at("map"), OTHER_MAGIC, tag);
	cr_assert_eq(amber_kvmap_count(r), 50, "control: the right magic loads");
	amber_kvmap_free(m);
	amber_kvmap_free(r);
}

Test(kvmap, load_with_wrong_tag_is_empty)
{
	amber_kvmap *m = filled(50), *r = amber_kvmap_new(sizeof(val));
	uint8_t tag[32], other[32];

	tag_of(tag, 1);
	tag_of(other, 1);
	other[31] = 2;   /* differs only in the last byte */
	OK(amber_kvmap_save(m, at("map"), MAGIC, tag));
	amber_kvmap_load(r, at("map"), MAGIC, other);
	cr_assert_eq(amber_kvmap_count(r), 0, "another archive's cache was loaded");
	amber_kvmap_load(r, at("map"), MAGIC, tag);
	cr_assert_eq(amber_kvmap_count(r), 50);
	amber_kvmap_free(m);
	amber_kvmap_free(r);
}

Test(kvmap, load_of_truncated_header_is_empty)
{
	amber_kvmap *m = filled(10), *r = amber_kvmap_new(sizeof(val));
	uint8_t tag[32];
	size_t len;
	void *data;

	tag_of(tag, 1);
	OK(amber_kvmap_save(m, at("map"), MAGIC, tag));
	data = read_file(at("map"), &len);
	for (size_t cut = 0; cut < 40; cut += 7) {
		write_file(at("cut"), data, cut);
		amber_kvmap_load(r, at("cut"), MAGIC, tag);
		cr_assert_eq(amber_kvmap_count(r), 0, "header cut at %zu", cut);
	}
	free(data);
	amber_kvmap_free(m);
	amber_kvmap_free(r);
}

Test(kvmap, load_of_file_truncated_mid_record_keeps_only_complete_records)
{
	const size_t rec = 32 + sizeof(val);
	amber_kvmap *m = filled(200);
	uint8_t tag[32], k[32];
	size_t len;
	uint8_t *data;

	tag_of(tag, 1);
	OK(amber_kvmap_save(m, at("map"), MAGIC, tag));
	data = read_file(at("map"), &len);
	cr_assert_eq(len, 40 + 200 * rec);
	/* cut inside record 0, inside the key of record 57, inside the value of 123 */
	const size_t cuts[][2] = {{40 + 5, 0}, {40 + 57 * rec + 10, 57}, {40 + 123 * rec + 40, 123},
				  {len - 1, 199}};

	for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
		amber_kvmap *r = amber_kvmap_new(sizeof(val));
		size_t found = 0;

		write_file(at("cut"), data, cuts[c][0]);
		amber_kvmap_load(r, at("cut"), MAGIC, tag);
		cr_assert_eq(amber_kvmap_count(r), cuts[c][1], "cut at %zu: %zu entries, want %zu",
			     cuts[c][0], amber_kvmap_count(r), cuts[c][1]);
		/* whatever was loaded is a true (key, value) pair */
		for (uint32_t i = 0; i < 200; i++) {
			const void *got;
			val want = mkval(i, 1);

			mkkey(k, i);
			if (!(got = amber_kvmap_get(r, k)))
				continue;
			found++;
			cr_assert_eq(memcmp(got, &want, sizeof(want)), 0, "key %u", i);
		}
		cr_assert_eq(found, cuts[c][1]);
		amber_kvmap_free(r);
	}
	free(data);
	amber_kvmap_free(m);
}

Test(kvmap, load_of_garbage_never_crashes)
{
	uint8_t tag[32], junk[4096];
	uint32_t x = 12345;

	tag_of(tag, 1);
	for (size_t i = 0; i < sizeof(junk); i++) {
		x = x * 1103515245u + 12345u;
		junk[i] = (uint8_t)(x >> 16);
	}
	/* random bytes, and random bytes behind a valid header */
	memcpy(junk + 1000, MAGIC, 8);
	memcpy(junk + 1008, tag, 32);
	for (size_t off = 0; off <= 1000; off += 1000) {
		amber_kvmap *r = amber_kvmap_new(sizeof(val));

		write_file(at("junk"), junk + off, sizeof(junk) - off);
		amber_kvmap_load(r, at("junk"), MAGIC, tag);
		if (off == 0)
			cr_assert_eq(amber_kvmap_count(r), 0);
		else
			cr_assert_eq(amber_kvmap_count(r), (sizeof(junk) - off - 40) / (32 + sizeof(val)));
		amber_kvmap_free(r);
	}
}

Test(kvmap, save_leaves_no_temp_file_behind)
{
	amber_kvmap *m = filled(100);
	uint8_t tag[32];
	char names[8][256];
	int n;

	tag_of(tag, 1);
	OK(amber_kvmap_save(m, at("map"), MAGIC, tag));
	OK(amber_kvmap_save(m, at("map"), MAGIC, tag));
	n = dir_entries(names, 8);
	cr_assert_eq(n, 1, "%d files after save, first '%s'", n, names[0]);
	cr_assert_str_eq(names[0], "map");
	amber_kvmap_free(m);
}

Test(kvmap, save_replaces_an_existing_file_atomically)
{
	amber_kvmap *m = filled(300), *r = amber_kvmap_new(sizeof(val));
	uint8_t tag[32];
	char old[64] = "the previous contents of this cache file";
	char seen[64] = {0};
	struct stat before, after;
	int fd;

	tag_of(tag, 1);
	write_file(at("map"), old, sizeof(old));
	cr_assert_eq(stat(at("map"), &before), 0);
	fd = open(at("map"), O_RDONLY);
	cr_assert_geq(fd, 0);
	OK(amber_kvmap_save(m, at("map"), MAGIC, tag));
	/* a reader of the old file still sees it whole: it was replaced, not rewritten */
	cr_assert_eq(pread(fd, seen, sizeof(seen), 0), (ssize_t)sizeof(seen));
	cr_assert_eq(memcmp(seen, old, sizeof(old)), 0, "old file was rewritten in place");
	close(fd);
	cr_assert_eq(stat(at("map"), &after), 0);
	cr_assert_neq(before.st_ino, after.st_ino, "file was not replaced by rename");
	amber_kvmap_load(r, at("map"), MAGIC, tag);
	assert_holds(r, 300);
	amber_kvmap_free(m);
	amber_kvmap_free(r);
}

Test(kvmap, failed_save_reports_error_and_leaves_nothing)
{
	amber_kvmap *m = filled(10);
	uint8_t tag[32];
	char names[8][256];
	int rc;

	tag_of(tag, 1);
	rc = amber_kvmap_save(m, at("missing-dir/map"), MAGIC, tag);
	cr_assert_eq(rc, AMBER_ERROR);
	cr_assert_neq(strstr(amber_error_last(), "missing-dir"), NULL, "message: %s",
		      amber_error_last());
	/* rename onto a directory fails after the temp file was written */
	cr_assert_eq(mkdir(at("isdir"), 0700), 0);
	cr_assert_eq(mkdir(at("isdir/x"), 0700), 0);
	rc = amber_kvmap_save(m, at("isdir"), MAGIC, tag);
	cr_assert_eq(rc, AMBER_ERROR);
	cr_assert_eq(dir_entries(names, 8), 1, "temp file left behind: %s", names[0]);
	cr_assert(is_dir(at("isdir/x")));
	amber_kvmap_free(m);
}

/* amber_mkdirs ----------------------------------------------------------------------- */

Test(kvmap, mkdirs_creates_nested_directories_with_mode)
{
	struct stat st;

	OK(amber_mkdirs(at("a/b/c/d"), 0700));
	cr_assert(is_dir(at("a")));
	cr_assert(is_dir(at("a/b")));
	cr_assert(is_dir(at("a/b/c")));
	cr_assert(is_dir(at("a/b/c/d")));
	cr_assert_eq(stat(at("a/b/c/d"), &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0700);
}

Test(kvmap, mkdirs_accepts_existing_directories)
{
	OK(amber_mkdirs(at("x/y"), 0700));
	OK(amber_mkdirs(at("x/y"), 0700));
	OK(amber_mkdirs(at("x"), 0700));
	OK(amber_mkdirs(at("x/y/z"), 0700));
	OK(amber_mkdirs(base, 0700));
	cr_assert(is_dir(at("x/y/z")));
}

Test(kvmap, mkdirs_tolerates_trailing_and_doubled_slashes)
{
	OK(amber_mkdirs(at("p//q/"), 0700));
	cr_assert(is_dir(at("p/q")));
}

Test(kvmap, mkdirs_through_a_regular_file_fails)
{
	write_file(at("f"), "x", 1);
	cr_assert_lt(amber_mkdirs(at("f/sub"), 0700), 0);
	cr_assert_neq(strlen(amber_error_last()), 0);
}

Test(kvmap, mkdirs_of_an_existing_regular_file_fails)
{
	write_file(at("f"), "x", 1);
	cr_assert_lt(amber_mkdirs(at("f"), 0700), 0, "a file was accepted as a directory");
}
