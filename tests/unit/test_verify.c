/* amber_verify() on a clean archive and on damaged ones. */
#include "libfix.h"

#include "archive.h"
#include "store.h"

#include <dirent.h>
#include <inttypes.h>
#include <sodium.h>

static void setup(void)
{
	scratch_make("verify");
	mkdir(at("src"), 0755);
	put_file("src/f", "verify me\n");
}

TestSuite(verify, .init = setup, .fini = scratch_remove);

struct problems {
	int n;
	int kinds[8];
	char first[512];
};

static void on_problem(const amber_verify_problem *p, void *payload)
{
	struct problems *pr = payload;

	if (pr->n < 8)
		pr->kinds[pr->n] = p->kind;
	if (pr->n++ == 0)
		snprintf(pr->first, sizeof(pr->first), "%s", p->message);
}

static void run_verify(struct problems *pr, amber_archive *a, int read_data)
{
	amber_verify_opts o = AMBER_VERIFY_OPTS_INIT;
	amber_verify_stats st = AMBER_VERIFY_STATS_INIT;

	o.read_data = read_data;
	o.no_marks = 1;
	o.problem = on_problem;
	o.payload = pr;
	OK(amber_verify(&st, a, &o));
	cr_assert_eq(st.problems, (uint64_t)pr->n);
}

Test(verify, a_clean_archive_has_no_problem_and_counts_what_it_read)
{
	amber_archive *a = fix_archive(0);
	amber_verify_opts o = AMBER_VERIFY_OPTS_INIT;
	amber_verify_stats st = AMBER_VERIFY_STATS_INIT;
	struct problems pr = {0};
	char id[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id, a, 1);
	put_file("src/f", "changed\n");
	fix_snapshot(id, a, 2);
	o.read_data = 1;
	o.no_marks = 1;
	o.problem = on_problem;
	o.payload = &pr;
	OK(amber_verify(&st, a, &o));
	cr_assert_eq(pr.n, 0, "problem on a clean archive: %s", pr.first);
	cr_assert_eq(st.snapshots, 2);
	cr_assert(st.keyed);
	cr_assert_gt(st.objects, 4);
	cr_assert_eq(st.data_bytes, strlen("verify me\n") + strlen("changed\n"));
}

/* The largest pack file with extension ext: the snapshot's, not the one
 * archive creation wrote. */
static void largest(char path[8192], const char *ext)
{
	DIR *d = opendir(at("archive/objects/pack"));
	struct dirent *de;
	struct stat st;
	off_t best = -1;

	cr_assert_not_null(d);
	path[0] = '\0';
	while ((de = readdir(d))) {
		char p[8192];

		snprintf(p, sizeof(p), "%s/archive/objects/pack/%s", base, de->d_name);
		if (strstr(de->d_name, ext) && stat(p, &st) == 0 && st.st_size > best) {
			best = st.st_size;
			memcpy(path, p, 8192);
		}
	}
	closedir(d);
	cr_assert_neq(path[0], 0, "no %s file", ext);
}

/* Flip one byte of the largest pack or index, at off (< 0: the middle). */
static void flip_byte(const char *ext, long off)
{
	char path[8192];
	struct stat st;
	unsigned char b;
	int fd;

	largest(path, ext);
	chmod(path, 0644);
	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	fstat(fd, &st);
	if (off < 0)
		off = st.st_size / 2;
	cr_assert_eq(pread(fd, &b, 1, off), 1);
	b ^= 0xff;
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

Test(verify, a_flipped_pack_byte_is_reported_as_corruption)
{
	amber_archive *a = fix_archive(0), *b = NULL;
	amber_open_opts oo = fix_open_opts();
	struct problems pr = {0};
	char id[AMBER_OID_HEXSZ + 1];

	/* Incompressible data fills most of the pack, so its middle byte is
	 * file data (not the metadata every open reads). */
	{
		int fd = open(at("src/big"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
		uint8_t buf[4096];

		cr_assert_geq(fd, 0);
		for (int i = 0; i < 64; i++) {
			randombytes_buf(buf, sizeof(buf));
			cr_assert_eq(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
		}
		close(fd);
	}
	fix_snapshot(id, a, 1);
	amber_archive_free(a);
	flip_byte(".pack", -1);
	OK(amber_archive_open_ext(&b, at("archive"), &oo));
	OK(amber_archive_unlock(b, (const unsigned char *)PASS, strlen(PASS)));
	run_verify(&pr, b, 1);
	cr_assert_gt(pr.n, 0, "a flipped byte went unnoticed");
	cr_assert_eq(pr.kinds[0], AMBER_VERIFY_CORRUPT, "first problem: %s", pr.first);
	amber_archive_free(b);
}

Test(verify, every_kind_has_a_name)
{
	for (int k = AMBER_VERIFY_MISSING; k <= AMBER_VERIFY_KEYSLOT; k++) {
		const char *n = amber_verify_kind_name(k);

		cr_assert_not_null(n);
		cr_assert_neq(strlen(n), 0);
	}
}

/* The first byte of the index's CRC table (after the header, the fan-out
 * and the object ids): no read uses it, only its checksum covers it. */
static long idx_crc_offset(void)
{
	char path[8192];
	uint8_t n[4];
	int fd;

	largest(path, ".idx");
	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, n, 4, 8 + 255 * 4), 4);
	close(fd);
	return 8 + 1024 + 20L * ((long)n[0] << 24 | n[1] << 16 | n[2] << 8 | n[3]);
}

Test(verify, a_flipped_byte_no_read_uses_is_still_found_in_the_index)
{
	amber_archive *a = fix_archive(0), *b = NULL;
	amber_open_opts oo = fix_open_opts();
	struct problems pr = {0};
	char id[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id, a, 1);
	amber_archive_free(a);
	flip_byte(".idx", idx_crc_offset());
	OK(amber_archive_open_ext(&b, at("archive"), &oo));
	OK(amber_archive_unlock(b, (const unsigned char *)PASS, strlen(PASS)));
	run_verify(&pr, b, 1);
	cr_assert_eq(pr.n, 1, "a damaged index CRC gave %d problems", pr.n);
	cr_assert_eq(pr.kinds[0], AMBER_VERIFY_CORRUPT);
	cr_assert_not_null(strstr(pr.first, "pack index"), "message: %s", pr.first);
	amber_archive_free(b);
}

/* Six snapshots of nine small files, one of which changes each time: 14
 * distinct chunks, each decoded once whatever the thread count. */
Test(verify, read_data_decodes_each_distinct_chunk_once_on_any_number_of_threads)
{
	amber_archive *a = fix_archive(0);
	char id[AMBER_OID_HEXSZ + 1], name[32], text[64];
	uint64_t bytes = strlen("verify me\n");
	static const int threads[] = {1, 4, 0};

	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "src/f%d", i);
		snprintf(text, sizeof(text), "file %d, first version\n", i);
		put_file(name, text);
		bytes += strlen(text);
	}
	fix_snapshot(id, a, 1);
	for (int s = 2; s <= 6; s++) {
		snprintf(text, sizeof(text), "file 0, version %d\n", s);
		put_file("src/f0", text);
		bytes += strlen(text);
		fix_snapshot(id, a, s);
	}
	for (size_t t = 0; t < sizeof(threads) / sizeof(threads[0]); t++) {
		amber_verify_opts o = AMBER_VERIFY_OPTS_INIT;
		amber_verify_stats st = AMBER_VERIFY_STATS_INIT;
		amber_counters before, after;
		struct problems pr = {0};

		o.read_data = 1;
		o.no_marks = 1;
		o.threads = threads[t];
		o.problem = on_problem;
		o.payload = &pr;
		amber_archive_counters(a, &before);
		OK(amber_verify(&st, a, &o));
		amber_archive_counters(a, &after);
		cr_assert_eq(pr.n, 0, "problem on a clean archive: %s", pr.first);
		cr_assert_eq(st.snapshots, 6);
		cr_assert_eq(st.chunks, 14, "%d threads: %" PRIu64 " chunks checked, not 14",
			     threads[t], st.chunks);
		cr_assert_eq(after.chunks_decoded - before.chunks_decoded, 14,
			     "%d threads: %" PRIu64 " decodes for 14 distinct chunks", threads[t],
			     after.chunks_decoded - before.chunks_decoded);
		cr_assert_eq(st.data_bytes, bytes);
		cr_assert_gt(st.chunk_bytes, bytes, "a frame is larger than its plaintext");
		cr_assert_eq(st.threads, threads[t] ? (unsigned)threads[t] :
			     (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
	}
	amber_archive_free(a);
}

/* The stats carry their own version: options of version 1 (no threads
 * field) still get every counter of the stats' version filled. */
Test(verify, the_stats_version_not_the_options_says_what_is_filled)
{
	amber_archive *a = fix_archive(0);
	amber_verify_opts o = AMBER_VERIFY_OPTS_INIT;
	amber_verify_stats st = AMBER_VERIFY_STATS_INIT;
	char id[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id, a, 1);
	o.version = 1;
	o.read_data = 1;
	o.no_marks = 1;
	memset(&st, 0xa5, sizeof(st));
	st.version = AMBER_VERIFY_STATS_VERSION;
	OK(amber_verify(&st, a, &o));
	cr_assert_eq(st.version, AMBER_VERIFY_STATS_VERSION);
	cr_assert_eq(st.data_bytes, strlen("verify me\n"));
	cr_assert_eq(st.chunks, 1, "chunks: %llu", (unsigned long long)st.chunks);
	cr_assert_geq(st.threads, 1);
	o.version = 2;
	o.threads = -1;
	cr_assert_eq(amber_verify(&st, a, &o), AMBER_EINVAL);
	amber_archive_free(a);
}

/* verify reads in pack order: a commit's position is its entry in the pack
 * (a type-1 entry header at that offset); an unknown id has none. */
Test(verify, pack_positions_point_at_the_objects_entries)
{
	amber_archive *a = fix_archive(0);
	char id[AMBER_OID_HEXSZ + 1], path[8192];
	uint8_t oids[40], head;
	amber_packpos pos[2];
	uint8_t buf[4096];
	int fd = open(at("src/big"), O_WRONLY | O_CREAT | O_TRUNC, 0644);

	/* incompressible data: the snapshot's pack is the largest */
	cr_assert_geq(fd, 0);
	for (int i = 0; i < 64; i++) {
		randombytes_buf(buf, sizeof(buf));
		cr_assert_eq(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	}
	close(fd);
	fix_snapshot(id, a, 1);
	cr_assert_eq(amber_oid_fromhex(oids, id), 0);
	memset(oids + 20, 0x5a, 20);
	OK(amber_store_pack_positions(pos, a->store, oids, 2));
	cr_assert_gt(pos[0].pack, 0, "the snapshot commit is in a pack");
	cr_assert_geq(pos[0].off, 12, "after the pack header");
	cr_assert_eq(pos[1].pack, 0, "an id in no pack has no position");
	cr_assert_eq(pos[1].off, 0);
	largest(path, ".pack");
	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &head, 1, (off_t)pos[0].off), 1);
	close(fd);
	cr_assert_eq((head >> 4) & 7, 1, "a commit entry starts at the position (0x%02x)", head);
	amber_archive_free(a);
}
