/*
 * The store against the real git: every pack we write must be readable by
 * libgit2 in this process and pass `git fsck --full` in another.
 */
#include "error.h"
#include "repack.h"
#include "store.h"
#include "store_odb.h"

#include <criterion/criterion.h>

#include "scratch.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define OK(expr)                                                                   \
	do {                                                                       \
		int rc_ = (expr);                                                  \
		cr_assert_eq(rc_, 0, "%s = %d: %s", #expr, rc_, amber_error_last()); \
	} while (0)

static void setup(void)
{
	scratch_make("store");
	OK(amber_store_global_init());
}

TestSuite(store, .init = setup, .fini = scratch_remove);

/* Helpers ------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static uint8_t *random_bytes(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);

	cr_assert_not_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
	return p;
}

/* Run a shell command; return its exit status and its output in out. */
static int run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t cap, const char *fmt, ...)
{
	char cmd[8192];
	char sink[4096];
	va_list ap;
	FILE *f;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	if (out) {
		n = fread(out, 1, cap - 1, f);
		out[n] = '\0';
	}
	/* Drain the rest: a closed pipe would kill the command with SIGPIPE. */
	while (fread(sink, 1, sizeof(sink), f) > 0)
		;
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int count_files(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	size_t ls = strlen(suffix);

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (de->d_name[0] != '.' && l >= ls && !strcmp(de->d_name + l - ls, suffix))
			n++;
	}
	closedir(d);
	return n;
}

static int npacks(const char *repo)
{
	char dir[4200];

	snprintf(dir, sizeof(dir), "%s/objects/pack", repo);
	return count_files(dir, ".pack");
}

/* Number of objects git finds in the index files of repo. */
static long git_count_objects(const char *repo)
{
	char out[64];

	cr_assert_eq(run(out, sizeof(out),
			 "for i in '%s'/objects/pack/*.idx; do git show-index < $i; done | wc -l",
			 repo), 0);
	return strtol(out, NULL, 10);
}

static void expect_object(amber_store *s, const uint8_t oid[20], int type, const void *data,
			  size_t len)
{
	amber_buf b;
	int t = 0;

	amber_buf_init(&b, (size_t)16 << 20);
	OK(amber_store_read(&b, &t, s, oid, (size_t)16 << 20));
	cr_assert_eq(t, type);
	cr_assert_eq(b.len, len);
	cr_assert(len == 0 || memcmp(b.data, data, len) == 0, "content differs");
	amber_buf_dispose(&b);
}

static void add_blob(uint8_t oid[20], int *is_new, amber_packw *w, const void *p, size_t n)
{
	OK(amber_packw_add(oid, is_new, w, AMBER_GIT_BLOB, p, n));
}

/* Open and init ------------------------------------------------------------ */

Test(store, init_then_open)
{
	amber_store *s = NULL;
	char out[256];

	OK(amber_store_init(&s, at("a")));
	cr_assert_str_eq(amber_store_path(s), at("a"));
	amber_store_free(s);
	OK(amber_store_open(&s, at("a")));
	amber_store_free(s);
	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' config core.compression", at("a")), 0);
	cr_assert_str_eq(out, "0\n");
	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' config gc.auto", at("a")), 0);
	cr_assert_str_eq(out, "0\n");
}

Test(store, init_in_empty_dir_works)
{
	amber_store *s = NULL;

	cr_assert_eq(mkdir(at("e"), 0755), 0);
	OK(amber_store_init(&s, at("e")));
	amber_store_free(s);
}

Test(store, open_missing_path_is_notfound)
{
	amber_store *s = NULL;

	cr_assert_eq(amber_store_open(&s, at("nope")), AMBER_ENOTFOUND);
	cr_assert_null(s);
	cr_assert(strstr(amber_error_last(), "nope"), "message names the path");
}

Test(store, open_plain_dir_is_notarchive)
{
	amber_store *s = NULL;

	cr_assert_eq(mkdir(at("d"), 0755), 0);
	cr_assert_eq(amber_store_open(&s, at("d")), AMBER_ENOTARCHIVE);
	cr_assert_null(s);
}

Test(store, open_writes_nothing)
{
	static char before[65536], after[65536];
	const char *ls = "find '%s' -printf '%%p %%s %%T@ %%C@\\n' | sort";
	amber_store *s = NULL;

	OK(amber_store_init(&s, at("a")));
	amber_store_free(s);
	cr_assert_eq(run(before, sizeof(before), ls, at("a")), 0);
	usleep(20000);
	OK(amber_store_open(&s, at("a")));
	amber_store_free(s);
	cr_assert_eq(run(after, sizeof(after), ls, at("a")), 0);
	cr_assert_str_eq(before, after);
}

Test(store, init_on_nonempty_dir_or_file_is_eexists)
{
	amber_store *s = NULL;
	int fd;

	cr_assert_eq(mkdir(at("d"), 0755), 0);
	fd = open(at("d/x"), O_CREAT | O_WRONLY, 0644);
	cr_assert(fd >= 0);
	close(fd);
	cr_assert_eq(amber_store_init(&s, at("d")), AMBER_EEXISTS);
	cr_assert_eq(amber_store_init(&s, at("d/x")), AMBER_EEXISTS);
	cr_assert_null(s);
}

/* Objects -------------------------------------------------------------------- */

Test(store, oid_matches_git_hash_object)
{
	uint8_t *data = random_bytes(100000), oid[20];
	char hex[41], out[128];
	FILE *f = fopen(at("sample"), "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, 100000, f), 100000);
	fclose(f);
	amber_store_hash(oid, AMBER_GIT_BLOB, data, 100000);
	amber_oid_tohex(hex, oid);
	cr_assert_eq(run(out, sizeof(out), "git hash-object --no-filters '%s'", at("sample")), 0);
	cr_assert_eq(strncmp(out, hex, 40), 0, "git says %s, we say %s", out, hex);
	amber_store_hash(oid, AMBER_GIT_BLOB, "", 0);
	amber_oid_tohex(hex, oid);
	cr_assert_str_eq(hex, "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
	free(data);
}

/* Append a tree entry "100644 name\0<oid>" to b. */
static void tree_entry(amber_buf *b, const char *name, const uint8_t oid[20])
{
	OK(amber_buf_put(b, "100644 ", 7));
	OK(amber_buf_put(b, name, strlen(name) + 1));
	OK(amber_buf_put(b, oid, 20));
}

static void commit_text(char *out, size_t cap, const uint8_t tree[20])
{
	char hex[41];

	amber_oid_tohex(hex, tree);
	snprintf(out, cap,
		 "tree %s\nauthor A U Thor <a@example.com> 1700000000 +0000\n"
		 "committer A U Thor <a@example.com> 1700000000 +0000\n\ntest snapshot\n",
		 hex);
}

#define NBLOBS 1000

struct corpus {
	uint8_t *data[NBLOBS];
	size_t len[NBLOBS];
	uint8_t oid[NBLOBS][20];
	uint8_t tree[20], commit[20];
	amber_buf tree_buf;
	char commit_buf[512];
};

static void corpus_write(struct corpus *c, amber_packw *w)
{
	char name[16];

	amber_buf_init(&c->tree_buf, 0);
	for (int i = 0; i < NBLOBS; i++) {
		c->len[i] = i == 0 ? 0 : i == 1 ? (size_t)3 << 20 : rnd() % 70000;
		c->data[i] = random_bytes(c->len[i]);
		add_blob(c->oid[i], NULL, w, c->data[i], c->len[i]);
		snprintf(name, sizeof(name), "f%04d", i);
		tree_entry(&c->tree_buf, name, c->oid[i]);
	}
	OK(amber_packw_add(c->tree, NULL, w, AMBER_GIT_TREE, c->tree_buf.data, c->tree_buf.len));
	commit_text(c->commit_buf, sizeof(c->commit_buf), c->tree);
	OK(amber_packw_add(c->commit, NULL, w, AMBER_GIT_COMMIT, c->commit_buf,
			   strlen(c->commit_buf)));
}

static void corpus_check(struct corpus *c, amber_store *s)
{
	for (int i = 0; i < NBLOBS; i++)
		expect_object(s, c->oid[i], AMBER_GIT_BLOB, c->data[i], c->len[i]);
	expect_object(s, c->tree, AMBER_GIT_TREE, c->tree_buf.data, c->tree_buf.len);
	expect_object(s, c->commit, AMBER_GIT_COMMIT, c->commit_buf, strlen(c->commit_buf));
}

static void corpus_free(struct corpus *c)
{
	for (int i = 0; i < NBLOBS; i++)
		free(c->data[i]);
	amber_buf_dispose(&c->tree_buf);
}

static void assert_fsck_clean(const char *repo)
{
	char out[8192];

	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' fsck --full --strict --no-dangling 2>&1",
			 repo), 0, "git fsck failed: %s", out);
	cr_assert_null(strstr(out, "warning"), "git fsck warned: %s", out);
	cr_assert_null(strstr(out, "error"), "git fsck: %s", out);
}

Test(store, written_pack_reads_back_and_passes_git_fsck, .timeout = 120)
{
	static struct corpus c;
	amber_store *s = NULL;
	amber_packw *w = NULL;
	char hex[41], out[4096];

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	corpus_write(&c, w);
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	corpus_check(&c, s);
	OK(amber_store_ref_update(s, "refs/heads/main", c.commit, NULL, "test"));
	assert_fsck_clean(at("a"));
	amber_oid_tohex(hex, c.commit);
	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' cat-file -p %s", at("a"), hex), 0);
	cr_assert_str_eq(out, c.commit_buf);
	cr_assert_eq(count_files(at("a/amberfs-tmp"), ""), 0, "temporary files left behind");
	amber_store_free(s);
	/* A fresh handle (another process's view) reads the same. */
	OK(amber_store_open(&s, at("a")));
	corpus_check(&c, s);
	amber_store_free(s);
	corpus_free(&c);
}

Test(store, read_of_missing_object_is_notfound)
{
	amber_store *s = NULL;
	amber_buf b = AMBER_BUF_INIT;
	uint8_t oid[20] = {0xab, 0xcd};

	OK(amber_store_init(&s, at("a")));
	cr_assert_eq(amber_store_read(&b, NULL, s, oid, 1 << 20), AMBER_ENOTFOUND);
	cr_assert(strstr(amber_error_last(), "abcd000000"), "names the id: %s",
		  amber_error_last());
	cr_assert_eq(amber_store_exists(s, oid), 0);
	amber_store_free(s);
}

Test(store, read_larger_than_max_is_corrupt)
{
	amber_store *s = NULL;
	amber_packw *w = NULL;
	amber_buf b;
	uint8_t *data = random_bytes(5000), oid[20];

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	add_blob(oid, NULL, w, data, 5000);
	OK(amber_packw_commit(w));
	amber_buf_init(&b, 1 << 20);
	cr_assert_eq(amber_store_read(&b, NULL, s, oid, 4999), AMBER_ECORRUPT);
	amber_buf_dispose(&b);
	amber_buf_init(&b, 4000);
	cr_assert_eq(amber_store_read(&b, NULL, s, oid, 1 << 20), AMBER_ECORRUPT);
	cr_assert_eq(b.len, 0);
	amber_buf_dispose(&b);
	amber_packw_free(w);
	amber_store_free(s);
	free(data);
}

Test(store, same_object_twice_is_written_once)
{
	amber_store *s = NULL;
	amber_packw *w = NULL;
	uint8_t *data = random_bytes(4096), a[20], b[20];
	int n1 = -1, n2 = -1;
	uint64_t bytes;

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	add_blob(a, &n1, w, data, 4096);
	bytes = amber_packw_bytes(w);
	add_blob(b, &n2, w, data, 4096);
	cr_assert_eq(n1, 1);
	cr_assert_eq(n2, 0);
	cr_assert_eq(memcmp(a, b, 20), 0);
	cr_assert_eq(amber_packw_bytes(w), bytes);
	OK(amber_packw_commit(w));
	cr_assert_eq(git_count_objects(at("a")), 1);
	amber_packw_free(w);
	amber_store_free(s);
	free(data);
}

Test(store, objects_in_an_earlier_pack_are_not_rewritten)
{
	amber_store *s = NULL;
	amber_packw *w = NULL;
	uint8_t *data = random_bytes(4096), oid[20];
	int is_new = -1;

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	add_blob(oid, &is_new, w, data, 4096);
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	OK(amber_packw_new(&w, s));
	add_blob(oid, &is_new, w, data, 4096);
	cr_assert_eq(is_new, 0);
	cr_assert_eq(amber_packw_bytes(w), 0);
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	cr_assert_eq(npacks(at("a")), 1);
	amber_store_free(s);
	free(data);
}

Test(store, empty_commit_writes_nothing)
{
	amber_store *s = NULL;
	amber_packw *w = NULL;

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	cr_assert_eq(npacks(at("a")), 0);
	amber_store_free(s);
}

Test(store, rollover_splits_into_several_valid_packs, .timeout = 60)
{
	amber_store *s = NULL;
	amber_packw *w = NULL;
	uint8_t *data[60], oid[60][20], again[20];
	int is_new;

	OK(amber_store_init(&s, at("a")));
	amber_store_set_rollover(s, 100000);
	OK(amber_packw_new(&w, s));
	for (int i = 0; i < 60; i++) {
		data[i] = random_bytes(10000);
		add_blob(oid[i], NULL, w, data[i], 10000);
	}
	/* The first pack is committed by now: re-adding must not rewrite. */
	cr_assert_gt(npacks(at("a")), 0);
	add_blob(again, &is_new, w, data[0], 10000);
	cr_assert_eq(is_new, 0);
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	cr_assert_eq(npacks(at("a")), 6, "%d packs", npacks(at("a")));
	for (int i = 0; i < 60; i++) {
		expect_object(s, oid[i], AMBER_GIT_BLOB, data[i], 10000);
		free(data[i]);
	}
	assert_fsck_clean(at("a"));
	amber_store_free(s);
}

Test(store, uncommitted_writer_leaves_no_files)
{
	amber_store *s = NULL;
	amber_packw *w = NULL;
	uint8_t *data = random_bytes(100000), oid[20];

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	add_blob(oid, NULL, w, data, 100000);
	cr_assert_eq(count_files(at("a/amberfs-tmp"), ""), 1);
	amber_packw_free(w);
	cr_assert_eq(count_files(at("a/objects/pack"), ""), 0);
	cr_assert_eq(count_files(at("a/amberfs-tmp"), ""), 0);
	cr_assert_eq(amber_store_exists(s, oid), 0);
	amber_store_free(s);
	free(data);
}

Test(store, another_handle_sees_a_new_pack)
{
	amber_store *s = NULL, *r = NULL;
	amber_packw *w = NULL;
	uint8_t *data = random_bytes(1000), oid[20];

	OK(amber_store_init(&s, at("a")));
	OK(amber_store_open(&r, at("a")));
	OK(amber_packw_new(&w, s));
	add_blob(oid, NULL, w, data, 1000);
	OK(amber_packw_commit(w));
	OK(amber_store_refresh(r));
	expect_object(r, oid, AMBER_GIT_BLOB, data, 1000);
	amber_packw_free(w);
	amber_store_free(r);
	amber_store_free(s);
	free(data);
}

/* Packs that appear or go while a reader runs ---------------------------------- */

/* One blob in a pack of its own; *idx receives that pack's index path. */
static void pack_of_one(uint8_t oid[20], char idx[4200], amber_store *s, const void *p, size_t n)
{
	amber_packw *w = NULL;
	char before[8192], after[8192];

	cr_assert_eq(run(before, sizeof(before), "ls '%s'/objects/pack", amber_store_path(s)), 0);
	OK(amber_packw_new(&w, s));
	add_blob(oid, NULL, w, p, n);
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	cr_assert_eq(run(after, sizeof(after), "ls '%s'/objects/pack", amber_store_path(s)), 0);
	idx[0] = '\0';
	for (char *save = NULL, *t = strtok_r(after, "\n", &save); t; t = strtok_r(NULL, "\n", &save))
		if (strstr(t, ".idx") && !strstr(before, t))
			snprintf(idx, 4200, "%s/objects/pack/%s", amber_store_path(s), t);
	cr_assert(idx[0], "no new pack index");
}

/* Point every offset of a version-2 index past its pack (the bit-flip
 * sweep's SIGBUS) and rewrite its checksum, as a forger would. */
static void forge_idx(const char *idx)
{
	char cmd[9000], sum[64];
	FILE *f = fopen(idx, "rb");
	uint8_t *b = malloc(1 << 20);
	size_t len = fread(b, 1, 1 << 20, f);

	fclose(f);
	uint32_t n = (uint32_t)b[1028] << 24 | (uint32_t)b[1029] << 16 | b[1030] << 8 | b[1031];
	cr_assert(n > 0 && 1032 + 28 * (size_t)n + 40 <= len);
	for (uint32_t i = 0; i < n; i++)
		b[1032 + 24 * (size_t)n + 4 * i + 2] ^= 0xFF;
	chmod(idx, 0644);
	f = fopen(idx, "wb");
	cr_assert_eq(fwrite(b, 1, len - 20, f), len - 20);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "sha1sum < '%s'", idx);
	cr_assert_eq(run(sum, sizeof(sum), "%s", cmd), 0);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(sscanf(sum + 2 * i, "%2hhx", &b[len - 20 + i]), 1);
	f = fopen(idx, "wb");
	cr_assert_eq(fwrite(b, 1, len, f), len);
	fclose(f);
	free(b);
}

/* A pack index written after a reader opened the archive used to be loaded
 * by libgit2's own rescan, unchecked, and the read died of SIGBUS. */
Test(store, a_damaged_index_that_appears_later_is_refused_not_read)
{
	amber_store *s = NULL, *r = NULL;
	uint8_t *good = random_bytes(3000), *bad = random_bytes(3000), goid[20], boid[20];
	char gidx[4200], bidx[4200];
	amber_buf b;

	OK(amber_store_init(&s, at("a")));
	pack_of_one(goid, gidx, s, good, 3000);
	OK(amber_store_open(&r, at("a")));
	pack_of_one(boid, bidx, s, bad, 3000);
	forge_idx(bidx);
	amber_buf_init(&b, (size_t)1 << 20);
	int rc = amber_store_read(&b, NULL, r, boid, (size_t)1 << 20);
	cr_assert_eq(rc, AMBER_ECORRUPT, "read through a forged index: %d %s", rc,
		     amber_error_last());
	cr_assert(strstr(amber_error_last(), strrchr(bidx, '/') + 1) &&
		  strstr(amber_error_last(), "git index-pack"), "%s", amber_error_last());
	cr_assert_eq(amber_store_refresh(r), AMBER_ECORRUPT);
	expect_object(r, goid, AMBER_GIT_BLOB, good, 3000);
	amber_buf_dispose(&b);
	amber_store_free(r);
	amber_store_free(s);
	free(bad);
	free(good);
}

/* Set the 32-bit offset of entry i of the index (read whole into b, len bytes) to v. */
static void idx_poke(const char *idx, const uint8_t *b, size_t len, uint32_t n, uint32_t i,
		     uint32_t v)
{
	uint8_t *c = malloc(len);
	size_t at = 1032 + 24 * (size_t)n + 4 * (size_t)i;
	FILE *f;

	memcpy(c, b, len);
	c[at] = (uint8_t)(v >> 24);
	c[at + 1] = (uint8_t)(v >> 16);
	c[at + 2] = (uint8_t)(v >> 8);
	c[at + 3] = (uint8_t)v;
	cr_assert(f = fopen(idx, "wb"));
	cr_assert_eq(fwrite(c, 1, len, f), len);
	fclose(f);
	free(c);
}

/*
 * Every offset of an index is checked by amber_idx_sane (verify), a batch
 * at a time by its least and greatest (a vector loop): one bad offset is
 * found wherever it sits (first, inside a run, the end of a run, the tail
 * after the runs, last), below the pack's header or inside its trailing
 * checksum, and so is a large offset naming no entry of the 64-bit table.
 */
Test(store, one_bad_offset_anywhere_in_an_index_is_found)
{
	amber_store *s = NULL;
	amber_packw *w = NULL;
	uint8_t oid[20], *b = malloc(1 << 20);
	char idx[4400], dir[4200];
	const char *name;
	struct stat pst;
	size_t len;
	FILE *f;

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	for (int i = 0; i < 150; i++) {
		char blob[32];
		int k = snprintf(blob, sizeof(blob), "blob %d", i);

		add_blob(oid, NULL, w, blob, (size_t)k);
	}
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	snprintf(dir, sizeof(dir), "%s/objects/pack", amber_store_path(s));
	{
		char after[8192];

		cr_assert_eq(run(after, sizeof(after), "ls '%s'", dir), 0);
		idx[0] = '\0';
		for (char *save = NULL, *t = strtok_r(after, "\n", &save); t;
		     t = strtok_r(NULL, "\n", &save)) {
			char path[4400];
			struct stat st;

			snprintf(path, sizeof(path), "%s/%s", dir, t);
			if (strstr(t, ".idx") && stat(path, &st) == 0 && st.st_size > 4000)
				snprintf(idx, sizeof(idx), "%s", path);
		}
	}
	cr_assert(idx[0], "no index of 150 objects");
	name = strrchr(idx, '/') + 1;
	cr_assert(f = fopen(idx, "rb"));
	len = fread(b, 1, 1 << 20, f);
	fclose(f);
	uint32_t n = (uint32_t)b[1028] << 24 | (uint32_t)b[1029] << 16 | b[1030] << 8 | b[1031];
	char pack[4400];

	cr_assert_eq(n, 150);
	snprintf(pack, sizeof(pack), "%.*s.pack", (int)(strlen(idx) - 4), idx);
	cr_assert_eq(stat(pack, &pst), 0);
	chmod(idx, 0644);
	cr_assert_eq(amber_idx_sane(dir, name), 1, "the index as written is refused");
	const uint32_t where[] = {0, 1, 63, 64, 127, 128, 140, 149};
	for (size_t k = 0; k < sizeof(where) / sizeof(where[0]); k++) {
		idx_poke(idx, b, len, n, where[k], 11);
		cr_assert_eq(amber_idx_sane(dir, name), 0, "entry %u at offset 11 (inside the "
			     "header) was not found", where[k]);
		idx_poke(idx, b, len, n, where[k], (uint32_t)pst.st_size - 20);
		cr_assert_eq(amber_idx_sane(dir, name), 0, "entry %u inside the trailing checksum "
			     "was not found", where[k]);
		idx_poke(idx, b, len, n, where[k], 0x80000000u);
		cr_assert_eq(amber_idx_sane(dir, name), 0, "entry %u naming a large offset of an "
			     "empty table was not found", where[k]);
		idx_poke(idx, b, len, n, where[k], 12);
		cr_assert_eq(amber_idx_sane(dir, name), 1, "entry %u at the first byte an entry may "
			     "start was refused", where[k]);
	}
	cr_assert(f = fopen(idx, "wb"));
	cr_assert_eq(fwrite(b, 1, len, f), len);
	fclose(f);
	cr_assert_eq(amber_idx_sane(dir, name), 1, "the index put back is refused");
	amber_store_free(s);
	free(b);
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Write b[0..len) to path with the SHA-1 of its first len - 20 bytes in its last 20. */
static void write_summed(const char *path, uint8_t *b, size_t len)
{
	char sum[128];
	FILE *f;

	cr_assert(f = fopen(path, "wb"));
	cr_assert_eq(fwrite(b, 1, len - 20, f), len - 20);
	fclose(f);
	cr_assert_eq(run(sum, sizeof(sum), "sha1sum < '%s'", path), 0);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(sscanf(sum + 2 * i, "%2hhx", &b[len - 20 + i]), 1);
	cr_assert(f = fopen(path, "wb"));
	cr_assert_eq(fwrite(b, 1, len, f), len);
	fclose(f);
}

/* Bytes this process has read (/proc/self/io rchar: read, pread, ...). */
static unsigned long long bytes_read(void)
{
	char line[128];
	unsigned long long v = 0;
	FILE *f = fopen("/proc/self/io", "r");

	cr_assert(f, "cannot read /proc/self/io: %s", strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "rchar: %llu", &v) == 1)
			break;
	fclose(f);
	return v;
}

#define BIG_N 200000u

/* verify's pack check: one call per bad pack, naming the index's offsets and the fix */
static void count_pack_problem(const char *file, const char *message, void *payload)
{
	cr_assert(strstr(file, "pack-0000") && strstr(message, "offset") &&
		  strstr(message, "git index-pack"), "%s: %s", file, message);
	++*(int *)payload;
}

/*
 * Opening an archive read every offset of every index (O(objects) for each
 * CLI command: 7.4 MB at half a million snapshots).  Now a lookup checks
 * the offset it uses: opening an archive whose index has damaged offsets
 * for objects nobody reads reads none of its offset table (800 KB here)
 * and serves the rest; reading a damaged object is AMBER_ECORRUPT naming
 * the index and the fix (an offset in the pack's header, in its trailing
 * checksum, or a large offset naming no 64-bit entry); verify's pack check
 * reads the whole table and reports it.  An object whose entry is damaged
 * in one pack is still read from another that holds it.  The index and
 * pack are well formed otherwise (sorted names, both checksums right), as
 * a forger's are.
 */
Test(store, an_index_is_not_read_whole_at_open_and_a_bad_offset_fails_its_lookup)
{
	amber_store *s = NULL, *r = NULL;
	uint8_t *good = random_bytes(3000), goid[20];
	const size_t psize = 4096, ilen = 1032 + 28 * (size_t)BIG_N + 40;
	const size_t offs = 1032 + 24 * (size_t)BIG_N;
	/* objects never read at open: one in the pack's header, one in its
	 * trailing checksum, one a large offset of an empty 64-bit table */
	const uint32_t bad[3] = {0, BIG_N / 2, BIG_N - 1};
	const uint32_t badv[3] = {11, (uint32_t)psize - 20, 0x80000000u};
	uint8_t *pk = calloc(1, psize), *ix = calloc(1, ilen);
	uint32_t count[256] = {0}, total = 0;
	char gidx[4200], dir[4200], pack[4400], idx[4400], name[64];
	int calls = 0;

	cr_assert(pk && ix);
	OK(amber_store_init(&s, at("a")));
	pack_of_one(goid, gidx, s, good, 3000);
	snprintf(dir, sizeof(dir), "%s/objects/pack", amber_store_path(s));
	snprintf(name, sizeof(name), "pack-%040d.idx", 7);
	snprintf(idx, sizeof(idx), "%s/%s", dir, name);
	snprintf(pack, sizeof(pack), "%s/pack-%040d.pack", dir, 7);
	memcpy(pk, "PACK\0\0\0\2", 8);
	put_be32(pk + 8, BIG_N);
	write_summed(pack, pk, psize);
	memcpy(ix, "\377tOc\0\0\0\2", 8);
	for (uint32_t i = 0; i < BIG_N; i++) {	/* sorted, spread over every first byte */
		uint8_t *id = ix + 1032 + 20 * (size_t)i;

		put_be32(id, (uint32_t)(((uint64_t)i << 32) / BIG_N));
		put_be32(id + 4, i);
		put_be32(ix + offs + 4 * (size_t)i, 12);
	}
	for (int k = 0; k < 3; k++)
		put_be32(ix + offs + 4 * (size_t)bad[k], badv[k]);
	/* the good blob too, at its sorted place, its offset past the pack: the
	 * damaged entry must not hide the good copy in the other pack */
	uint32_t j = 0;

	while (j < BIG_N - 1 && memcmp(ix + 1032 + 20 * (size_t)j, goid, 20) < 0)
		j++;
	cr_assert(j != bad[0] && j != bad[1] && j != bad[2]);
	memcpy(ix + 1032 + 20 * (size_t)j, goid, 20);
	put_be32(ix + offs + 4 * (size_t)j, (uint32_t)psize + 100);
	for (uint32_t i = 0; i < BIG_N; i++)
		count[ix[1032 + 20 * (size_t)i]]++;
	for (int b = 0; b < 256; b++)
		put_be32(ix + 8 + 4 * b, total += count[b]);
	memcpy(ix + ilen - 40, pk + psize - 20, 20);	/* the pack's checksum, then its own */
	write_summed(idx, ix, ilen);
	amber_store_free(s);

	unsigned long long before = bytes_read();

	OK(amber_store_open(&r, at("a")));
	unsigned long long used = bytes_read() - before;

	cr_assert_lt(used, 4 * BIG_N / 8, "opening the archive read %llu bytes (its offset table "
		     "is %u)", used, 4 * BIG_N);
	expect_object(r, goid, AMBER_GIT_BLOB, good, 3000);
	for (int k = 0; k < 3; k++) {
		amber_buf b;
		int rc;

		amber_buf_init(&b, (size_t)1 << 20);
		rc = amber_store_read(&b, NULL, r, ix + 1032 + 20 * (size_t)bad[k], (size_t)1 << 20);
		cr_assert_eq(rc, AMBER_ECORRUPT, "read through bad offset %#x: %d %s", badv[k], rc,
			     amber_error_last());
		cr_assert(strstr(amber_error_last(), name) &&
			  strstr(amber_error_last(), "git index-pack"), "%s", amber_error_last());
		amber_buf_dispose(&b);
	}
	expect_object(r, goid, AMBER_GIT_BLOB, good, 3000);
	/* verify: both checksums hold, and the offsets are read whole */
	cr_assert_eq(amber_idx_sane(dir, name), 0);
	cr_assert_eq(amber_store_check_packs(r, count_pack_problem, &calls), 2);
	cr_assert_eq(calls, 1, "verify's pack check reported %d packs", calls);
	amber_store_free(r);
	free(pk);
	free(ix);
	free(good);
}

/* Lines of /proc/self/maps and links in /proc/self/fd naming `file` (deleted). */
static int holds_deleted(const char *file)
{
	char out[4096];

	run(out, sizeof(out), "{ cat /proc/%d/maps; for f in /proc/%d/fd/*; do readlink $f; done; }"
	    " | grep -c '%s (deleted)'", (int)getpid(), (int)getpid(), file);
	return (int)strtol(out, NULL, 10);
}

/* A long-running reader kept every pack it had seen mapped and open. */
Test(store, a_removed_pack_is_let_go_at_the_next_refresh)
{
	amber_store *s = NULL, *r = NULL;
	uint8_t *one = random_bytes(3000), *two = random_bytes(3000), oid1[20], oid2[20];
	char idx1[4200], idx2[4200], pack1[4200];

	OK(amber_store_init(&s, at("a")));
	pack_of_one(oid1, idx1, s, one, 3000);
	pack_of_one(oid2, idx2, s, two, 3000);
	amber_store_free(s);	/* (packs are shared in a process, by path) */
	OK(amber_store_open(&r, at("a")));
	expect_object(r, oid1, AMBER_GIT_BLOB, one, 3000);
	expect_object(r, oid2, AMBER_GIT_BLOB, two, 3000);
	snprintf(pack1, sizeof(pack1), "%.*s.pack", (int)(strlen(idx1) - 4), idx1);
	cr_assert_eq(run(NULL, 0, "for f in /proc/%d/fd/*; do readlink $f; done | grep -q '%s'",
			 (int)getpid(), strrchr(pack1, '/') + 1), 0,
		     "the reader never opened the pack");
	cr_assert_eq(unlink(idx1), 0);
	cr_assert_eq(unlink(pack1), 0);
	cr_assert_gt(holds_deleted(strrchr(idx1, '/') + 1) + holds_deleted(strrchr(pack1, '/') + 1),
		     0);
	OK(amber_store_refresh(r));
	cr_assert_eq(holds_deleted(strrchr(idx1, '/') + 1), 0);
	cr_assert_eq(holds_deleted(strrchr(pack1, '/') + 1), 0);
	expect_object(r, oid2, AMBER_GIT_BLOB, two, 3000);
	amber_store_free(r);
	free(two);
	free(one);
}

/* Merge every pack of s into one, as `amberfs repack --all` does. */
static void consolidate(amber_store *s)
{
	amber_repack_stats st = AMBER_REPACK_STATS_INIT;

	OK(amber_store_lock(s));
	OK(amber_repack_locked(&st, s, AMBER_REPACK_ALL));
	amber_store_unlock(s);
	cr_assert_eq(npacks(amber_store_path(s)), 1, "repack --all left %d packs",
		     npacks(amber_store_path(s)));
}

/* A writer's store, a reader's, and blobs in packs of their own. */
struct pair {
	amber_store *s, *r;
	uint8_t *data[2], oid[2][20];
	char idx[2][4200];
};

static void pair_init(struct pair *p)
{
	*p = (struct pair){.data = {random_bytes(3000), random_bytes(3000)}};
	OK(amber_store_init(&p->s, at("a")));
}

/* Blob i in a pack of its own, written by the writer. */
static void pair_pack(struct pair *p, int i)
{
	pack_of_one(p->oid[i], p->idx[i], p->s, p->data[i], 3000);
}

/* The reader reads blob i back. */
static void pair_expect(struct pair *p, int i)
{
	expect_object(p->r, p->oid[i], AMBER_GIT_BLOB, p->data[i], 3000);
}

static void pair_dispose(struct pair *p)
{
	amber_store_free(p->r);
	amber_store_free(p->s);
	free(p->data[1]);
	free(p->data[0]);
}

/* A long-running reader (a mount) asked for an object whose pack it never
 * saw: a writer added the pack, a consolidation merged it away. */
Test(store, an_object_consolidated_before_a_reader_saw_its_pack_is_found)
{
	struct pair p;

	pair_init(&p);
	pair_pack(&p, 0);
	OK(amber_store_open(&p.r, at("a")));
	pair_expect(&p, 0);
	pair_pack(&p, 1);
	consolidate(p.s);
	cr_assert(access(p.idx[0], F_OK) != 0 && access(p.idx[1], F_OK) != 0,
		  "the packs were not merged");
	pair_expect(&p, 1);
	pair_expect(&p, 0);
	pair_dispose(&p);
}

/* Removed packs of p.idx the process still holds open. */
static int pair_held(const struct pair *p)
{
	return holds_deleted(strrchr(p->idx[0], '/') + 1) +
	       holds_deleted(strrchr(p->idx[1], '/') + 1);
}

/* A reader that keeps reading, never missing, lets go of the packs a
 * consolidation removed a second later, with no refresh asked for (the
 * read path looks at the clock only every few dozen lookups). */
Test(store, a_reader_that_keeps_reading_lets_go_of_removed_packs_a_second_later)
{
	struct pair p;

	pair_init(&p);
	pair_pack(&p, 0);
	pair_pack(&p, 1);
	OK(amber_store_open(&p.r, at("a")));
	pair_expect(&p, 0);
	pair_expect(&p, 1);
	consolidate(p.s);
	cr_assert_gt(pair_held(&p), 0, "the reader holds no removed pack: this test could not tell");
	usleep(1100 * 1000);
	for (int i = 0; i < 200; i++)
		pair_expect(&p, i % 2);
	cr_assert_eq(pair_held(&p), 0,
		     "200 reads a second after a consolidation still hold its removed packs");
	pair_dispose(&p);
}

#define NTHREADS 4
#define PER_THREAD 300

struct worker {
	amber_packw *w;
	int id;
	int nnew;
	uint8_t oid[PER_THREAD][20];
};

/* Half the objects are shared by all threads, half are private. */
static void *worker_run(void *arg)
{
	struct worker *k = arg;
	uint8_t buf[3000];

	for (int i = 0; i < PER_THREAD; i++) {
		int shared = i % 2 == 0, is_new = 0;

		memset(buf, shared ? 0 : k->id + 1, sizeof(buf));
		memcpy(buf, &i, sizeof(i));
		if (amber_packw_add(k->oid[i], &is_new, k->w, AMBER_GIT_BLOB, buf,
				    100 + (size_t)i * 9) < 0)
			return (void *)1;
		k->nnew += is_new;
	}
	return NULL;
}

Test(store, concurrent_adds_write_each_object_once, .timeout = 60)
{
	static struct worker k[NTHREADS];
	pthread_t t[NTHREADS];
	amber_store *s = NULL;
	amber_packw *w = NULL;
	int total = 0;

	OK(amber_store_init(&s, at("a")));
	amber_store_set_rollover(s, 200000);
	OK(amber_packw_new(&w, s));
	for (int i = 0; i < NTHREADS; i++) {
		k[i] = (struct worker){.w = w, .id = i};
		cr_assert_eq(pthread_create(&t[i], NULL, worker_run, &k[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		void *r;

		pthread_join(t[i], &r);
		cr_assert_null(r, "an add failed");
		total += k[i].nnew;
	}
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	cr_assert_eq(total, PER_THREAD / 2 + NTHREADS * PER_THREAD / 2);
	cr_assert_eq(git_count_objects(at("a")), total);
	for (int i = 0; i < NTHREADS; i++)
		for (int j = 0; j < PER_THREAD; j++)
			cr_assert_eq(amber_store_exists(s, k[i].oid[j]), 1);
	assert_fsck_clean(at("a"));
	amber_store_free(s);
}

/* Refs ---------------------------------------------------------------------- */

/* Commit two small blobs and return their ids. */
static void two_objects(amber_store *s, uint8_t a[20], uint8_t b[20])
{
	amber_packw *w = NULL;

	OK(amber_packw_new(&w, s));
	add_blob(a, NULL, w, "first", 5);
	add_blob(b, NULL, w, "second", 6);
	OK(amber_packw_commit(w));
	amber_packw_free(w);
}

Test(store, ref_update_is_compare_and_swap)
{
	amber_store *s = NULL;
	uint8_t a[20], b[20], got[20];

	OK(amber_store_init(&s, at("a")));
	two_objects(s, a, b);
	cr_assert_eq(amber_store_ref_read(got, s, "refs/tags/x"), AMBER_ENOTFOUND);
	OK(amber_store_ref_update(s, "refs/tags/x", a, NULL, "create"));
	cr_assert_eq(amber_store_ref_update(s, "refs/tags/x", b, NULL, "again"), AMBER_ELOCKED);
	cr_assert(strstr(amber_error_last(), "refs/tags/x"), "%s", amber_error_last());
	cr_assert_eq(amber_store_ref_update(s, "refs/tags/x", b, b, "wrong"), AMBER_ELOCKED);
	cr_assert_eq(amber_store_ref_update(s, "refs/tags/y", b, a, "absent"), AMBER_ELOCKED);
	OK(amber_store_ref_read(got, s, "refs/tags/x"));
	cr_assert_eq(memcmp(got, a, 20), 0);
	OK(amber_store_ref_update(s, "refs/tags/x", b, a, "move"));
	OK(amber_store_ref_read(got, s, "refs/tags/x"));
	cr_assert_eq(memcmp(got, b, 20), 0);
	amber_store_free(s);
}

struct seen {
	int n;
	char names[8][64];
};

static int collect(const char *name, const uint8_t oid[20], void *payload)
{
	struct seen *v = payload;

	snprintf(v->names[v->n++], 64, "%s", name);
	return v->n == 8;
}

Test(store, ref_foreach_visits_matching_refs)
{
	amber_store *s = NULL;
	uint8_t a[20], b[20];
	struct seen v = {0};

	OK(amber_store_init(&s, at("a")));
	two_objects(s, a, b);
	OK(amber_store_ref_update(s, "refs/heads/main", a, NULL, NULL));
	OK(amber_store_ref_update(s, "refs/tags/t1", a, NULL, NULL));
	OK(amber_store_ref_update(s, "refs/tags/t2", b, NULL, NULL));
	OK(amber_store_ref_foreach(s, "refs/tags/*", collect, &v));
	cr_assert_eq(v.n, 2);
	cr_assert_str_eq(v.names[0], "refs/tags/t1");
	cr_assert_str_eq(v.names[1], "refs/tags/t2");
	amber_store_free(s);
}

Test(store, expand_prefix_finds_unique_and_flags_ambiguous, .timeout = 60)
{
	static uint8_t oid[2000][20];
	amber_store *s = NULL;
	amber_packw *w = NULL;
	uint8_t got[20];
	char hex[41], pre[5] = {0};
	int i, j = -1, k;

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	for (i = 0; i < 2000; i++)
		add_blob(oid[i], NULL, w, &i, sizeof(i));
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	amber_oid_tohex(hex, oid[7]);
	hex[12] = '\0';
	OK(amber_store_expand_prefix(got, s, hex));
	cr_assert_eq(memcmp(got, oid[7], 20), 0);
	/* 2000 ids over 65536 four-digit prefixes: some pair shares one. */
	for (i = 0; i < 2000 && j < 0; i++)
		for (k = i + 1; k < 2000 && j < 0; k++)
			if (oid[i][0] == oid[k][0] && oid[i][1] == oid[k][1])
				j = i;
	cr_assert_geq(j, 0);
	amber_oid_tohex(hex, oid[j]);
	memcpy(pre, hex, 4);
	cr_assert_eq(amber_store_expand_prefix(got, s, pre), AMBER_EAMBIGUOUS);
	cr_assert_eq(amber_store_expand_prefix(got, s, "abc"), AMBER_EINVAL);
	cr_assert_eq(amber_store_expand_prefix(got, s, "zzzz"), AMBER_EINVAL);
	amber_store_free(s);
}

Test(store, expand_prefix_of_nothing_is_notfound)
{
	amber_store *s = NULL;
	uint8_t got[20];

	OK(amber_store_init(&s, at("a")));
	cr_assert_eq(amber_store_expand_prefix(got, s, "deadbeef"), AMBER_ENOTFOUND);
	amber_store_free(s);
}

/* Lock ------------------------------------------------------------------------ */

Test(store, second_lock_is_elocked_until_unlock)
{
	amber_store *s = NULL, *t = NULL;
	char pid[32];

	OK(amber_store_init(&s, at("a")));
	OK(amber_store_open(&t, at("a")));
	OK(amber_store_lock(s));
	cr_assert_eq(amber_store_lock(t), AMBER_ELOCKED);
	snprintf(pid, sizeof(pid), "pid %ld", (long)getpid());
	cr_assert(strstr(amber_error_last(), pid), "%s", amber_error_last());
	amber_store_unlock(s);
	OK(amber_store_lock(t));
	amber_store_free(t);
	amber_store_free(s);
}

Test(store, lock_held_by_another_process_is_elocked_and_dies_with_it)
{
	amber_store *s = NULL;
	int go[2], ready[2];
	char c;
	pid_t pid;

	OK(amber_store_init(&s, at("a")));
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(ready), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		amber_store *c2 = NULL;

		/* Read EOF, and so exit, if the test process dies. */
		close(go[1]);
		close(ready[0]);
		if (amber_store_open(&c2, at("a")) < 0 || amber_store_lock(c2) < 0)
			_exit(1);
		(void)!write(ready[1], "r", 1);
		(void)!read(go[0], &c, 1);
		_exit(0);	/* dies holding the lock */
	}
	close(go[0]);
	close(ready[1]);
	cr_assert_eq(read(ready[0], &c, 1), 1);
	cr_assert_eq(amber_store_lock(s), AMBER_ELOCKED);
	cr_assert_eq(write(go[1], "g", 1), 1);
	waitpid(pid, NULL, 0);
	OK(amber_store_lock(s));
	amber_store_free(s);
}

Test(store, lock_clears_a_dead_writers_temp_files)
{
	amber_store *s = NULL;
	int fd;

	OK(amber_store_init(&s, at("a")));
	cr_assert_eq(mkdir(at("a/amberfs-tmp"), 0755), 0);
	fd = open(at("a/amberfs-tmp/pack-stale"), O_CREAT | O_WRONLY, 0644);
	cr_assert(fd >= 0);
	close(fd);
	OK(amber_store_lock(s));
	cr_assert_eq(count_files(at("a/amberfs-tmp"), ""), 0);
	amber_store_free(s);
}

/* Hex ---------------------------------------------------------------------------- */

Test(store, hex_roundtrips_and_rejects_junk)
{
	uint8_t oid[20], back[20];
	char hex[41];

	for (int i = 0; i < 20; i++)
		oid[i] = (uint8_t)(i * 13 + 7);
	amber_oid_tohex(hex, oid);
	OK(amber_oid_fromhex(back, hex));
	cr_assert_eq(memcmp(oid, back, 20), 0);
	cr_assert_eq(amber_oid_fromhex(back, "abc"), AMBER_EINVAL);
	hex[5] = 'g';
	cr_assert_eq(amber_oid_fromhex(back, hex), AMBER_EINVAL);
	cr_assert_eq(amber_oid_fromhex(back, "00000000000000000000000000000000000000000"),
		     AMBER_EINVAL);
}

/* Packed refs ------------------------------------------------------------------------- */

static int count_ref(const char *name, const uint8_t oid[20], void *payload)
{
	(void)name;
	(void)oid;
	(*(int *)payload)++;
	return 0;
}

/* libgit2 refuses all of packed-refs for one bad line; we skip the line. */
Test(store, malformed_packed_refs_line_spares_the_other_refs)
{
	amber_store *s = NULL;
	amber_packw *w = NULL;
	uint8_t a[20], b[20], got[20];
	size_t line = 0;
	char out[256];
	int n = 0;
	FILE *f;

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	add_blob(a, NULL, w, "first", 5);
	add_blob(b, NULL, w, "second", 6);
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	OK(amber_store_ref_update(s, "refs/heads/main", a, NULL, "test"));
	OK(amber_store_ref_update(s, "refs/amberfs/meta", b, NULL, "test"));
	cr_assert_eq(run(out, sizeof(out), "git --git-dir=%s pack-refs --all", at("a")), 0);
	cr_assert_not_null(f = fopen(at("a/packed-refs"), "a"));
	fputs("0123 not a ref line\n", f);
	fclose(f);
	amber_store_free(s);
	OK(amber_store_open(&s, at("a")));
	OK(amber_store_ref_read(got, s, "refs/heads/main"));
	cr_assert_eq(memcmp(got, a, 20), 0);
	OK(amber_store_ref_read(got, s, "refs/amberfs/meta"));
	cr_assert_eq(memcmp(got, b, 20), 0);
	cr_assert_eq(amber_store_ref_read(got, s, "refs/heads/other"), AMBER_ENOTFOUND);
	OK(amber_store_ref_foreach(s, "refs/*", count_ref, &n));
	cr_assert_eq(n, 2, "refs listed: %d", n);
	cr_assert_eq(amber_store_packed_refs_bad(s, &line), 1);
	cr_assert_eq(line, 4, "the bad line is line %zu", line);
	amber_store_free(s);
}

/* A store with main and tags/t1 packed, then a malformed line appended. */
static amber_store *packed_with_bad_line(uint8_t a[20], uint8_t b[20])
{
	amber_store *s = NULL;
	amber_packw *w = NULL;
	char out[256];
	FILE *f;

	OK(amber_store_init(&s, at("a")));
	OK(amber_packw_new(&w, s));
	add_blob(a, NULL, w, "first", 5);
	add_blob(b, NULL, w, "second", 6);
	OK(amber_packw_commit(w));
	amber_packw_free(w);
	OK(amber_store_ref_update(s, "refs/heads/main", a, NULL, "test"));
	OK(amber_store_ref_update(s, "refs/tags/t1", a, NULL, "test"));
	cr_assert_eq(run(out, sizeof(out), "git --git-dir=%s pack-refs --all", at("a")), 0);
	cr_assert_not_null(f = fopen(at("a/packed-refs"), "a"));
	fputs("this is not a ref\n", f);
	fclose(f);
	amber_store_free(s);
	OK(amber_store_open(&s, at("a")));
	return s;
}

/* libgit2 reads the file once, fails, and then sees no packed refs at all. */
Test(store, malformed_packed_refs_line_spares_the_other_refs_every_time)
{
	uint8_t a[20], b[20], got[20];
	amber_store *s = packed_with_bad_line(a, b);

	for (int i = 0; i < 3; i++) {
		int n = 0;

		OK(amber_store_ref_foreach(s, "refs/tags/*", count_ref, &n));
		cr_assert_eq(n, 1, "listing %d saw %d tags", i, n);
		OK(amber_store_ref_read(got, s, "refs/heads/main"));
		cr_assert_eq(memcmp(got, a, 20), 0);
	}
	amber_store_free(s);
}

/* Writes refuse, naming the file and what to do, and change nothing. */
Test(store, malformed_packed_refs_line_refuses_ref_updates)
{
	uint8_t a[20], b[20], got[20];
	amber_store *s = packed_with_bad_line(a, b);
	char out[256];

	cr_assert_eq(amber_store_ref_update(s, "refs/heads/main", b, a, "test"), AMBER_ECORRUPT);
	cr_assert(strstr(amber_error_last(), "packed-refs: line 4 is malformed") &&
		  strstr(amber_error_last(), "remove or repair"), "%s", amber_error_last());
	cr_assert_eq(amber_store_ref_update(s, "refs/tags/t1", b, NULL, "test"), AMBER_ECORRUPT);
	cr_assert_eq(amber_store_ref_update(s, "refs/tags/t2", b, NULL, "test"), AMBER_ECORRUPT);
	cr_assert_eq(access(at("a/refs/heads/main"), F_OK), -1, "no loose ref was written");
	cr_assert_eq(access(at("a/refs/tags/t2"), F_OK), -1, "no loose ref was written");
	OK(amber_store_ref_read(got, s, "refs/tags/t1"));
	cr_assert_eq(memcmp(got, a, 20), 0);
	/* repaired (as git's own pack-refs would leave it): writes work again */
	cr_assert_eq(run(out, sizeof(out), "sed -i '/not a ref/d' %s", at("a/packed-refs")), 0);
	OK(amber_store_ref_update(s, "refs/heads/main", b, a, "test"));
	OK(amber_store_ref_read(got, s, "refs/heads/main"));
	cr_assert_eq(memcmp(got, b, 20), 0);
	amber_store_free(s);
}

/* n small random blobs in one new pack of s; their ids into oids. */
static void pack_of_many(uint8_t (*oids)[20], amber_store *s, int n)
{
	amber_packw *w = NULL;

	OK(amber_packw_new(&w, s));
	for (int i = 0; i < n; i++) {
		uint8_t *b = random_bytes(24);

		add_blob(oids[i], NULL, w, b, 24);
		free(b);
	}
	OK(amber_packw_commit(w));
	amber_packw_free(w);
}

/* Ask s for absent ids until each of its packs has a filter; 1 if they all do. */
static int filter_all(amber_store *s)
{
	amber_store_pack *v = NULL;
	size_t n = 0;
	int all = 0;

	for (int k = 0; k < 200 && !all; k++) {
		uint8_t absent[20];

		for (int j = 0; j < 20; j++)
			absent[j] = (uint8_t)rnd();
		cr_assert_eq(amber_store_exists(s, absent), 0);
		OK(amber_store_packs(&v, &n, s));
		all = n > 0;
		for (size_t i = 0; i < n; i++)
			all = all && v[i].filtered && !v[i].copied;
		free(v);
	}
	return all;
}

/*
 * A writer's existence checks of new objects skip large indexes that are
 * not held in memory by their filters; a filter must never hide an object:
 * not in the pack it was built for, not in a pack another handle (another
 * process) wrote after it, not in the pack a consolidation merged them into.
 */
Test(store, a_pack_filter_never_hides_an_object_its_pack_or_a_merged_one_holds, .timeout = 60)
{
	static uint8_t mine[1500][20], theirs[1500][20];
	amber_store *s = NULL, *o = NULL;

	OK(amber_store_init(&s, at("a")));
	amber_store_set_idx_budget(s, 0);	/* no index copied: all read by pread */
	pack_of_many(mine, s, 1500);
	cr_assert(filter_all(s), "no filter after 200 misses");
	for (int i = 0; i < 1500; i++)
		cr_assert_eq(amber_store_exists(s, mine[i]), 1, "object %d of the pack hidden", i);
	OK(amber_store_open(&o, at("a")));
	pack_of_many(theirs, o, 1500);
	amber_store_free(o);
	for (int i = 0; i < 1500; i++)
		cr_assert_eq(amber_store_exists(s, theirs[i]), 1, "object %d of another's pack", i);
	consolidate(s);
	cr_assert(filter_all(s), "the merged pack got no filter");
	for (int i = 0; i < 1500; i++) {
		cr_assert_eq(amber_store_exists(s, mine[i]), 1, "object %d hidden after a merge", i);
		cr_assert_eq(amber_store_exists(s, theirs[i]), 1, "object %d hidden after a merge",
			     i);
	}
	amber_store_free(s);
}
