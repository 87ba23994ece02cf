/* Writing snapshots through the public API, and reading them back. */
#include "libfix.h"

static void setup(void)
{
	scratch_make("snapshot");
	mkdir(at("src"), 0755);
	mkdir(at("src/d"), 0755);
	put_file("src/a", "alpha\n");
	put_file("src/d/b", "bravo\n");
}

TestSuite(snapshot, .init = setup, .fini = scratch_remove);

Test(snapshot, every_file_reads_back_as_written)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	char id[AMBER_OID_HEXSZ + 1], *x;

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	x = fix_read(s, "a");
	cr_assert_str_eq(x, "alpha\n");
	free(x);
	x = fix_read(s, "d/b");
	cr_assert_str_eq(x, "bravo\n");
	free(x);
	cr_assert_eq(amber_snapshot_info(s)->time_ns, T0 + 1000000000);
	cr_assert_str_eq(amber_snapshot_info(s)->stream, "main");
	cr_assert_str_eq(amber_snapshot_info(s)->parent, "");
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(snapshot, a_second_snapshot_has_the_first_as_parent_and_sees_the_change)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1], *x;

	fix_snapshot(id1, a, 1);
	put_file("src/a", "alpha two\n");
	fix_snapshot(id2, a, 2);
	cr_assert_str_neq(id1, id2);
	OK(amber_snapshot_open(&s, a, id2));
	cr_assert_str_eq(amber_snapshot_info(s)->parent, id1);
	x = fix_read(s, "a");
	cr_assert_str_eq(x, "alpha two\n");
	free(x);
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(snapshot, an_unchanged_tree_keeps_its_root_tree)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s1 = NULL, *s2 = NULL;
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id1, a, 1);
	fix_snapshot(id2, a, 2);
	OK(amber_snapshot_open(&s1, a, id1));
	OK(amber_snapshot_open(&s2, a, id2));
	cr_assert_str_eq(amber_snapshot_info(s1)->tree, amber_snapshot_info(s2)->tree,
			 "dedup: an unchanged tree must reuse every object");
	amber_snapshot_free(s1);
	amber_snapshot_free(s2);
	amber_archive_free(a);
}

Test(snapshot, a_time_not_after_the_tip_is_refused_and_writes_nothing)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot_opts so = {.version = AMBER_SNAPSHOT_OPTS_VERSION,
		.threads = 1, .time_ns = T0};
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1], tip[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id1, a, 1);
	cr_assert_lt(amber_snapshot_create(id2, NULL, a, at("src"), &so), 0,
		     "a snapshot older than its parent was written");
	OK(amber_resolve(tip, a, NULL, "latest"));
	cr_assert_str_eq(tip, id1);
	amber_archive_free(a);
}

Test(snapshot, a_missing_source_is_enotfound_and_a_bad_stream_einval)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot_opts so = {.version = AMBER_SNAPSHOT_OPTS_VERSION,
		.threads = 1, .stream = "bad/../name"};
	char id[AMBER_OID_HEXSZ + 1];

	cr_assert_eq(amber_snapshot_create(id, NULL, a, at("nowhere"), NULL), AMBER_ENOTFOUND);
	cr_assert_eq(amber_snapshot_create(id, NULL, a, at("src"), &so), AMBER_EINVAL);
	cr_assert_eq(amber_resolve(id, a, NULL, "latest"), AMBER_ENOTFOUND);
	amber_archive_free(a);
}

Test(snapshot, a_locked_archive_cannot_be_written)
{
	amber_archive *b = NULL;
	amber_open_opts o = fix_open_opts();
	char id[AMBER_OID_HEXSZ + 1];

	amber_archive_free(fix_archive(0));
	OK(amber_archive_open_ext(&b, at("archive"), &o));
	cr_assert_eq(amber_snapshot_create(id, NULL, b, at("src"), NULL), AMBER_ENEEDKEY);
	amber_archive_free(b);
}

/* ---- the CLI writer's chunk cache stays bounded ---------------------------------------- */

#include <dirent.h>
#include <glob.h>

/* The chunk cache file of the scratch archive (cache/<archive id>/chunks). */
static const char *chunk_cache_file(void)
{
	static char path[4200];
	glob_t g;

	cr_assert_eq(glob(at("cache/*/chunks"), 0, NULL, &g), 0, "no chunk cache was written");
	cr_assert_eq(g.gl_pathc, 1);
	snprintf(path, sizeof(path), "%s", g.gl_pathv[0]);
	globfree(&g);
	return path;
}

static off_t file_size(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat %s", path);
	return st.st_size;
}

/* A file of `len` bytes that no earlier step wrote (so it makes new chunks). */
static void put_step(const char *rel, int step, size_t len)
{
	char *text = malloc(len + 1);
	uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(step + 1);

	cr_assert_not_null(text);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		text[i] = (char)('a' + x % 26);
	}
	text[len] = '\0';
	put_file(rel, text);
	free(text);
}

/*
 * Issue 7: every CLI snapshot loads and saves the chunk cache whole, and it
 * grew by one entry per new chunk for ever.  It keeps the entries used in
 * the last generations only: its size after 4N snapshots is what it was
 * after N.
 */
Test(snapshot, the_chunk_cache_does_not_grow_with_the_history)
{
	amber_archive *a = fix_archive(0);
	char id[AMBER_OID_HEXSZ + 1];
	off_t after_n = 0, after_4n;
	const int n = 40;

	for (int i = 1; i <= 4 * n; i++) {
		put_step("src/changing", i, 300);
		fix_snapshot(id, a, i);
		if (i == n)
			after_n = file_size(chunk_cache_file());
	}
	after_4n = file_size(chunk_cache_file());
	cr_assert_gt(after_n, 40);
	cr_assert_leq(after_4n, after_n + 256,
		      "chunk cache: %lld bytes after %d snapshots, %lld after %d",
		      (long long)after_n, n, (long long)after_4n, 4 * n);
	cr_assert_lt(after_4n, 8192, "chunk cache of a 3-file tree: %lld bytes",
		     (long long)after_4n);
	amber_archive_free(a);
}

/* The object ids a pack's .idx (version 2) lists. */
static uint8_t *pack_ids(size_t *n, const char *idx)
{
	FILE *f = fopen(idx, "rb");
	uint8_t hdr[8 + 256 * 4], *ids;

	cr_assert_not_null(f, "open %s", idx);
	cr_assert_eq(fread(hdr, 1, sizeof(hdr), f), sizeof(hdr));
	cr_assert_eq(memcmp(hdr, "\377tOc\0\0\0\2", 8), 0, "%s: not an idx v2", idx);
	*n = (size_t)hdr[8 + 255 * 4] << 24 | (size_t)hdr[8 + 255 * 4 + 1] << 16 |
	     (size_t)hdr[8 + 255 * 4 + 2] << 8 | hdr[8 + 255 * 4 + 3];
	ids = malloc(*n * 20 + 1);
	cr_assert_not_null(ids);
	cr_assert_eq(fread(ids, 20, *n, f), *n);
	fclose(f);
	return ids;
}

static int newer(const char *x, const char *y)
{
	struct stat a, b;

	cr_assert_eq(stat(x, &a), 0);
	cr_assert_eq(stat(y, &b), 0);
	return a.st_mtim.tv_sec > b.st_mtim.tv_sec ||
	       (a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec > b.st_mtim.tv_nsec);
}

static uint8_t *slurp(size_t *len, const char *path)
{
	FILE *f = fopen(path, "rb");
	off_t size = file_size(path);
	uint8_t *data = malloc((size_t)size + 1);

	cr_assert_not_null(f, "open %s", path);
	cr_assert_not_null(data);
	cr_assert_eq(fread(data, 1, (size_t)size, f), (size_t)size);
	fclose(f);
	*len = (size_t)size;
	return data;
}

/*
 * A chunk dropped from the cache is still in the store: when its file
 * changes again, the chunk is found there, not stored a second time nor
 * lost, and the snapshot restores byte for byte.
 */
Test(snapshot, a_chunk_dropped_from_the_cache_is_found_in_the_store)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot_opts so = AMBER_SNAPSHOT_OPTS_INIT;
	amber_restore_opts ro = AMBER_RESTORE_OPTS_INIT;
	amber_snapshot *s = NULL;
	amber_stats st = AMBER_STATS_INIT;
	char id[AMBER_OID_HEXSZ + 1];
	uint8_t *ids, *cache, *want, *got;
	size_t nids, clen, wlen, glen;
	glob_t g;
	size_t before;
	const char *newest = NULL;
	int step = 1;

	put_step("src/big", 0, (size_t)3 << 20); /* about six chunks */
	put_step("src/changing", step, 300);
	/* files changed within the last second are read again by every
	 * snapshot (their stat is not trusted yet): let that second pass */
	usleep(1100 * 1000);
	before = glob(at("archive/objects/pack/*.idx"), 0, NULL, &g) == 0 ? g.gl_pathc : 0;
	globfree(&g);
	fix_snapshot(id, a, step);
	cr_assert_eq(glob(at("archive/objects/pack/*.idx"), 0, NULL, &g), 0);
	cr_assert_eq(g.gl_pathc, before + 1, "the first snapshot writes one pack");
	for (size_t i = 0; i < g.gl_pathc; i++) { /* the newest pack */
		if (!newest || newer(g.gl_pathv[i], newest))
			newest = g.gl_pathv[i];
	}
	ids = pack_ids(&nids, newest);
	globfree(&g);
	cache = slurp(&clen, chunk_cache_file());
	{
		size_t cached = 0;

		for (size_t i = 0; i < nids; i++)
			cached += memmem(cache, clen, ids + 20 * i, 20) != NULL;
		cr_assert_geq(cached, 6, "the chunks of the first snapshot are cached");
	}
	free(cache);

	/* Enough snapshots of another change for big's chunks to age out. */
	while (++step <= 41) {
		put_step("src/changing", step, 300);
		fix_snapshot(id, a, step);
	}
	cache = slurp(&clen, chunk_cache_file());
	for (size_t i = 0; i < nids; i++)
		cr_assert_null(memmem(cache, clen, ids + 20 * i, 20),
			       "object %zu of the first pack is still in the chunk cache", i);
	free(cache);
	free(ids);

	/* big changes at its end: its first chunks are found in the store. */
	want = slurp(&wlen, at("src/big"));
	memcpy(want + wlen - 1000, "changed at the end", 18);
	{
		FILE *f = fopen(at("src/big"), "wb");

		cr_assert_eq(fwrite(want, 1, wlen, f), wlen);
		fclose(f);
	}
	so.threads = 1;
	so.time_ns = T0 + (int64_t)step * 1000000000;
	OK(amber_snapshot_create(id, &st, a, at("src"), &so));
	cr_assert_lt(st.bytes_new, (uint64_t)1 << 20,
		     "%llu bytes written for a change at the end of a 3 MiB file",
		     (unsigned long long)st.bytes_new);

	OK(amber_snapshot_open(&s, a, id));
	OK(amber_restore(NULL, s, "", at("out"), &ro));
	got = slurp(&glen, at("out/big"));
	cr_assert_eq(glen, wlen);
	cr_assert_eq(memcmp(got, want, wlen), 0, "big does not restore byte for byte");
	free(got);
	free(want);
	amber_snapshot_free(s);
	amber_archive_free(a);
}
