/* Resolving specs, listing directories and reading files of snapshots. */
#include "libfix.h"

#include <dirent.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <sys/stat.h>

static void setup(void)
{
	scratch_make("reader");
	mkdir(at("src"), 0755);
	put_file("src/b", "second\n");
	put_file("src/a", "first\n");
	put_file("src/c", "third\n");
}

TestSuite(reader, .init = setup, .fini = scratch_remove);

Test(reader, specs_resolve_to_the_snapshot_in_force)
{
	amber_archive *a = fix_archive(0);
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1], got[AMBER_OID_HEXSZ + 1];
	char prefix[8], spec[64];

	fix_snapshot(id1, a, 10);
	put_file("src/a", "changed\n");
	fix_snapshot(id2, a, 20);
	OK(amber_resolve(got, a, NULL, "latest"));
	cr_assert_str_eq(got, id2);
	snprintf(spec, sizeof(spec), "@%lld", (long long)(T0 / 1000000000 + 15));
	OK(amber_resolve(got, a, NULL, spec));
	cr_assert_str_eq(got, id1, "@T between the two must give the earlier");
	snprintf(spec, sizeof(spec), "@%lld", (long long)(T0 / 1000000000 + 5));
	cr_assert_eq(amber_resolve(got, a, NULL, spec), AMBER_ENOTFOUND);
	memcpy(prefix, id1, 7);
	prefix[7] = '\0';
	OK(amber_resolve(got, a, NULL, prefix));
	cr_assert_str_eq(got, id1);
	cr_assert_eq(amber_resolve(got, a, NULL, "no-such-tag"), AMBER_ENOTFOUND);
	amber_archive_free(a);
}

Test(reader, a_directory_lists_in_name_order)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_entry *root = NULL;
	amber_dir *d = NULL;
	char id[AMBER_OID_HEXSZ + 1];
	const char *want[] = {"a", "b", "c"};

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&root, s, ""));
	OK(amber_dir_open(&d, s, root));
	cr_assert_eq(amber_dir_count(d), 3);
	for (size_t i = 0; i < 3; i++)
		cr_assert_str_eq(amber_dir_entry(d, i)->name, want[i]);
	cr_assert_not_null(amber_dir_lookup(d, "b", 1));
	cr_assert_null(amber_dir_lookup(d, "z", 1));
	amber_dir_free(d);
	amber_entry_free(root);
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(reader, reads_at_and_past_the_end_return_what_is_there)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_entry *e = NULL;
	char id[AMBER_OID_HEXSZ + 1];
	uint8_t buf[64];
	size_t n = 99;

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&e, s, "c"));
	OK(amber_file_read(&n, s, e, 3, buf, sizeof(buf)));
	cr_assert_eq(n, 3);
	cr_assert_eq(memcmp(buf, "rd\n", 3), 0);
	OK(amber_file_read(&n, s, e, 6, buf, sizeof(buf)));
	cr_assert_eq(n, 0, "a read at EOF returned %zu bytes", n);
	OK(amber_file_read(&n, s, e, (uint64_t)1 << 40, buf, sizeof(buf)));
	cr_assert_eq(n, 0);
	amber_entry_free(e);
	cr_assert_eq(amber_stat(&e, s, "missing"), AMBER_ENOTFOUND);
	cr_assert_eq(amber_stat(&e, s, "a/under-a-file"), AMBER_ENOTDIR);
	amber_snapshot_free(s);
	amber_archive_free(a);
}

/* ---- amber_file_pieces: reads without a copy ---------------------------------------- */

#define PIECES_SIZE (((size_t)6 << 20) + 4321)

static uint8_t *pieces_source(void)
{
	uint8_t *data = malloc(PIECES_SIZE);
	int fd = open(at("src/big"), O_WRONLY | O_CREAT | O_TRUNC, 0644);

	cr_assert_not_null(data);
	cr_assert_geq(fd, 0);
	randombytes_buf(data, PIECES_SIZE);
	cr_assert_eq(write(fd, data, PIECES_SIZE), (ssize_t)PIECES_SIZE);
	close(fd);
	return data;
}

/* Check the pieces of [off, off + len) against src; @return the bytes read. */
static size_t check_pieces(amber_snapshot *s, const amber_entry *e, const uint8_t *src,
			   uint64_t off, size_t len)
{
	amber_piece p[16];
	size_t n = 0, got = 0, at_ = 0;

	OK(amber_file_pieces(p, 16, &n, &got, s, e, off, len));
	for (size_t i = 0; i < n; i++) {
		cr_assert(memcmp(p[i].data, src + off + at_, p[i].len) == 0,
			  "piece %zu of a read at %llu differs", i, (unsigned long long)off);
		at_ += p[i].len;
	}
	cr_assert_eq(at_, got);
	amber_file_pieces_release(s, p, n);
	return got;
}

struct pieces_job {
	amber_snapshot *s;
	const amber_entry *e;
	const uint8_t *src;
	unsigned seed;
};

static void *pieces_reader(void *arg)
{
	struct pieces_job *j = arg;

	for (int k = 0; k < 200; k++) {
		uint64_t off = (uint64_t)rand_r(&j->seed) % PIECES_SIZE;
		size_t len = (size_t)rand_r(&j->seed) % ((size_t)1 << 20) + 1;

		amber_file_prefetch(j->s, j->e, off + len);
		check_pieces(j->s, j->e, j->src, off, len);
	}
	return NULL;
}

Test(reader, pieces_of_a_multi_chunk_file_are_its_bytes_under_concurrent_read_ahead)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_entry *e = NULL;
	char id[AMBER_OID_HEXSZ + 1];
	uint8_t *src = pieces_source();
	struct pieces_job jobs[3];
	pthread_t t[3];

	fix_snapshot(id, a, 1);
	OK(amber_archive_set_cache(a, (size_t)4 << 20)); /* smaller than the file: evictions */
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&e, s, "big"));
	cr_assert_eq(check_pieces(s, e, src, 0, (size_t)1 << 20), (size_t)1 << 20);
	cr_assert_eq(check_pieces(s, e, src, PIECES_SIZE - 10, 100), 10, "short only at the end");
	cr_assert_eq(check_pieces(s, e, src, PIECES_SIZE, 100), 0);
	for (int i = 0; i < 3; i++) {
		jobs[i] = (struct pieces_job){s, e, src, (unsigned)i + 1};
		cr_assert_eq(pthread_create(&t[i], NULL, pieces_reader, &jobs[i]), 0);
	}
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	amber_entry_free(e);
	amber_snapshot_free(s);
	amber_archive_free(a);
	free(src);
}

Test(reader, a_corrupt_chunk_gives_no_pieces)
{
	amber_archive *a = fix_archive(0), *b = NULL;
	amber_open_opts oo = fix_open_opts();
	amber_snapshot *s = NULL;
	amber_entry *e = NULL;
	amber_piece p[16];
	char id[AMBER_OID_HEXSZ + 1], path[8192] = {0};
	uint8_t *src = pieces_source(), x;
	size_t n = 7, got = 7;
	int rc = 0, fd;
	DIR *d;
	struct dirent *de;
	struct stat st;
	off_t best = -1;

	fix_snapshot(id, a, 1);
	amber_archive_free(a);
	d = opendir(at("archive/objects/pack"));
	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		char q[8192];

		snprintf(q, sizeof(q), "%s/archive/objects/pack/%s", base, de->d_name);
		if (strstr(de->d_name, ".pack") && stat(q, &st) == 0 && st.st_size > best) {
			best = st.st_size;
			memcpy(path, q, sizeof(path));
		}
	}
	closedir(d);
	chmod(path, 0644);
	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &x, 1, best / 2), 1);
	x ^= 0x20;
	cr_assert_eq(pwrite(fd, &x, 1, best / 2), 1);
	close(fd);
	OK(amber_archive_open_ext(&b, at("archive"), &oo));
	OK(amber_archive_unlock(b, (const unsigned char *)PASS, strlen(PASS)));
	OK(amber_snapshot_open(&s, b, id));
	OK(amber_stat(&e, s, "big"));
	/* read the whole file with read-ahead: some piece must fail, none may differ */
	for (uint64_t off = 0; off < PIECES_SIZE && rc == 0; off += got) {
		amber_file_prefetch(s, e, off + ((size_t)1 << 20));
		rc = amber_file_pieces(p, 16, &n, &got, s, e, off, (size_t)1 << 20);
		for (size_t i = 0, at_ = 0; rc == 0 && i < n; at_ += p[i].len, i++)
			cr_assert(memcmp(p[i].data, src + off + at_, p[i].len) == 0,
				  "a wrong byte was served");
		if (rc == 0)
			amber_file_pieces_release(s, p, n);
	}
	cr_assert(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT, "rc %d: %s", rc, amber_error_last());
	cr_assert_eq(n, 0, "pieces held after an error");
	cr_assert_eq(got, 0);
	amber_entry_free(e);
	amber_snapshot_free(s);
	amber_archive_free(b);
	free(src);
}

#define STREAM_FILES 3000

static int name_ptr_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A streamed listing's entries from the last, from the first, and every
 * one, on two threads, while the helpers decode. */
struct stream_reader {
	const amber_dir *d;
	int backwards;
	size_t seen;
};

static void *stream_reader_main(void *arg)
{
	struct stream_reader *r = arg;
	size_t n = amber_dir_count(r->d);

	for (size_t k = 0; k < n; k++) {
		const amber_entry *e = NULL;

		if (amber_dir_entry_get(r->d, r->backwards ? n - 1 - k : k, &e) == 0 && e)
			r->seen++;
	}
	return NULL;
}

/*
 * A large fanned-out directory opened with AMBER_DIR_STREAM lists the same
 * entries as amber_dir_open, each bucket in name order; lookups find every
 * name and no other; two readers walking it from both ends while it is
 * decoded see every entry; a listing freed while its helpers still run
 * leaves nothing behind (ASan).
 */
Test(reader, a_streamed_listing_has_every_entry_and_finds_each_by_name)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_entry *root = NULL, *big = NULL;
	amber_dir *sorted = NULL, *d = NULL;
	char id[AMBER_OID_HEXSZ + 1], name[32];

	mkdir(at("src/big"), 0755);
	for (int i = 0; i < STREAM_FILES; i++) {
		snprintf(name, sizeof(name), "src/big/f%05d", i * 7919 % 100000);
		put_file(name, "x\n");
	}
	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&big, s, "big"));

	/* freed at once, while the helpers decode */
	OK(amber_dir_open_ext(&d, s, big, AMBER_DIR_STREAM));
	amber_dir_free(d);

	OK(amber_dir_open(&sorted, s, big));
	OK(amber_dir_open_ext(&d, s, big, AMBER_DIR_STREAM));
	cr_assert_eq(amber_dir_count(d), STREAM_FILES);
	struct stream_reader r[2] = {{d, 1, 0}, {d, 0, 0}};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, stream_reader_main, &r[0]), 0);
	stream_reader_main(&r[1]);
	pthread_join(t, NULL);
	cr_assert_eq(r[0].seen, STREAM_FILES);
	cr_assert_eq(r[1].seen, STREAM_FILES);
	cr_assert(amber_dir_complete(d));

	const char **got = calloc(STREAM_FILES, sizeof(*got));
	size_t runs = 1;
	for (size_t i = 0; i < STREAM_FILES; i++) {
		got[i] = amber_dir_entry(d, i)->name;
		if (i && strcmp(got[i - 1], got[i]) > 0)
			runs++;         /* a new bucket */
	}
	cr_assert(runs > 1 && runs <= 256, "%zu name-ordered runs (buckets)", runs);
	qsort(got, STREAM_FILES, sizeof(*got), name_ptr_cmp);
	for (size_t i = 0; i < STREAM_FILES; i++) {
		const amber_entry *e = NULL;

		cr_assert_str_eq(got[i], amber_dir_entry(sorted, i)->name);
		OK(amber_dir_find(d, got[i], strlen(got[i]), &e));
		cr_assert(e && !strcmp(e->name, got[i]), "%s not found", got[i]);
	}
	const amber_entry *none = NULL;
	OK(amber_dir_find(d, "f-none", 6, &none));
	cr_assert_null(none);

	/* the name order, from the entry of the first name on, visits every entry */
	size_t at = 0, next = 0, steps = 0;
	const amber_entry *first = amber_dir_entry(d, 0), *e0 = NULL;
	OK(amber_dir_find(d, got[0], strlen(got[0]), &e0));
	at = (size_t)(e0 - first);
	for (; at < STREAM_FILES; at = next, steps++) {
		cr_assert_lt(steps, STREAM_FILES, "the name order has a cycle");
		cr_assert_str_eq(amber_dir_entry(d, at)->name, got[steps], "name %zu", steps);
		OK(amber_dir_name_next(d, at, &next));
	}
	cr_assert_eq(steps, STREAM_FILES);
	OK(amber_dir_name_next(sorted, 5, &next));
	cr_assert_eq(next, 6, "a listing in name order: the next entry is the next index");
	free(got);
	amber_dir_free(d);
	amber_dir_free(sorted);
	amber_entry_free(big);
	amber_entry_free(root);
	amber_snapshot_free(s);
	amber_archive_free(a);
}
