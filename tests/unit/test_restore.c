/* Restoring snapshots (or a path of one) into a directory. */
#include "libfix.h"

#include <dirent.h>
#include <sodium.h>
#include <sys/stat.h>

static void setup(void)
{
	scratch_make("restore");
	mkdir(at("src"), 0755);
	mkdir(at("src/d"), 0750);
	put_file("src/d/f", "restored bytes\n");
	chmod(at("src/d/f"), 0640);
	symlink("d/f", at("src/link"));
}

TestSuite(restore, .init = setup, .fini = scratch_remove);

static char *slurp(const char *rel)
{
	static char buf[256];
	int fd = open(at(rel), O_RDONLY);
	ssize_t n;

	cr_assert_geq(fd, 0, "open %s", rel);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	cr_assert_geq(n, 0);
	buf[n] = '\0';
	return buf;
}

Test(restore, a_snapshot_restores_contents_modes_and_symlinks)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_restore_opts ro = AMBER_RESTORE_OPTS_INIT;
	char id[AMBER_OID_HEXSZ + 1], target[64] = {0};
	struct stat st;

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_restore(NULL, s, "", at("out"), &ro));
	cr_assert_str_eq(slurp("out/d/f"), "restored bytes\n");
	cr_assert_eq(stat(at("out/d/f"), &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0640);
	cr_assert_eq(stat(at("out/d"), &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0750);
	cr_assert_gt(readlink(at("out/link"), target, sizeof(target) - 1), 0);
	cr_assert_str_eq(target, "d/f");
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(restore, a_path_of_a_snapshot_restores_alone)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	char id[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_restore(NULL, s, "d", at("only-d"), NULL));
	cr_assert_str_eq(slurp("only-d/f"), "restored bytes\n");
	cr_assert_eq(access(at("only-d/link"), F_OK), -1);
	cr_assert_eq(amber_restore(NULL, s, "nope", at("none"), NULL), AMBER_ENOTFOUND);
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(restore, a_non_empty_destination_is_eexists_and_left_alone)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	char id[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	mkdir(at("busy"), 0755);
	put_file("busy/mine", "keep me\n");
	cr_assert_eq(amber_restore(NULL, s, "", at("busy"), NULL), AMBER_EEXISTS);
	cr_assert_str_eq(slurp("busy/mine"), "keep me\n");
	cr_assert_eq(access(at("busy/d"), F_OK), -1, "restore wrote into a busy destination");
	amber_snapshot_free(s);
	amber_archive_free(a);
}

/* n random bytes appended to fd. */
static void put_random(int fd, size_t n)
{
	uint8_t buf[65536];

	while (n) {
		size_t k = n < sizeof(buf) ? n : sizeof(buf);

		randombytes_buf(buf, k);
		cr_assert_eq(write(fd, buf, k), (ssize_t)k);
		n -= k;
	}
}

/* Whether files a and b (under base) hold the same bytes. */
static int same_bytes(const char *a, const char *b)
{
	char pa[8192], pb[8192];
	uint8_t x[65536], y[65536];
	int fa, fb, same = 1;

	snprintf(pa, sizeof(pa), "%s", at(a));
	snprintf(pb, sizeof(pb), "%s", at(b));
	fa = open(pa, O_RDONLY);
	fb = open(pb, O_RDONLY);
	cr_assert_geq(fa, 0, "open %s", a);
	cr_assert_geq(fb, 0, "open %s", b);
	for (;;) {
		ssize_t n = read(fa, x, sizeof(x)), m = read(fb, y, sizeof(y));

		if (n != m || (n > 0 && memcmp(x, y, (size_t)n) != 0)) {
			same = 0;
			break;
		}
		if (n <= 0)
			break;
	}
	close(fa);
	close(fb);
	return same;
}

/* A large file of several ranges with a hole, many small files, a hard link pair. */
static void many_files_source(void)
{
	int fd = open(at("src/big"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	char name[64], text[128];

	cr_assert_geq(fd, 0);
	put_random(fd, (size_t)5 << 20);
	cr_assert_eq(lseek(fd, (off_t)4 << 20, SEEK_CUR), (off_t)9 << 20);
	put_random(fd, ((size_t)4 << 20) + 12345);
	close(fd);
	mkdir(at("src/many"), 0755);
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "src/many/f%03d", i);
		snprintf(text, sizeof(text), "small file %d %.*s\n", i, i % 80,
			 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		put_file(name, text);
	}
	cr_assert_eq(link(at("src/many/f007"), at("src/many/hard")), 0);
}

Test(restore, files_in_flight_restore_byte_identical_with_holes_and_links)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_stats st = AMBER_STATS_INIT;
	char id[AMBER_OID_HEXSZ + 1], name[64], out[64];
	struct stat x, y;

	many_files_source();
	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_restore(&st, s, "", at("out"), NULL));
	cr_assert(same_bytes("src/big", "out/big"), "the large file differs after restore");
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "src/many/f%03d", i);
		snprintf(out, sizeof(out), "out/many/f%03d", i);
		cr_assert(same_bytes(name, out), "%s differs after restore", out);
	}
	cr_assert_eq(stat(at("out/big"), &x), 0);
	cr_assert_eq(x.st_size, ((off_t)13 << 20) + 12345);
	cr_assert_lt((off_t)x.st_blocks * 512, ((off_t)10 << 20), "the hole was filled in");
	cr_assert_eq(stat(at("out/many/f007"), &x), 0);
	cr_assert_eq(stat(at("out/many/hard"), &y), 0);
	cr_assert_eq(x.st_ino, y.st_ino, "the hard link pair was split");
	cr_assert_geq(st.bytes, ((uint64_t)13 << 20) + 12345, "bytes written: %llu",
		      (unsigned long long)st.bytes);
	amber_snapshot_free(s);
	amber_archive_free(a);
}

/* Flip the middle byte of the largest pack (random file data fills it). */
static void flip_pack_middle(void)
{
	DIR *d = opendir(at("archive/objects/pack"));
	struct dirent *de;
	char best[8192] = {0}, p[8192];
	off_t size = -1;
	struct stat st;
	unsigned char b;
	int fd;

	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		snprintf(p, sizeof(p), "%s/archive/objects/pack/%s", base, de->d_name);
		if (strstr(de->d_name, ".pack") && stat(p, &st) == 0 && st.st_size > size) {
			size = st.st_size;
			memcpy(best, p, sizeof(best));
		}
	}
	closedir(d);
	cr_assert_gt(size, 0);
	chmod(best, 0644);
	fd = open(best, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &b, 1, size / 2), 1);
	b ^= 0x5a;
	cr_assert_eq(pwrite(fd, &b, 1, size / 2), 1);
	close(fd);
}

Test(restore, a_corrupt_chunk_fails_the_restore_with_files_in_flight)
{
	amber_archive *a = fix_archive(0), *b = NULL;
	amber_open_opts oo = fix_open_opts();
	amber_snapshot *s = NULL;
	char id[AMBER_OID_HEXSZ + 1];
	int rc;

	many_files_source();
	fix_snapshot(id, a, 1);
	amber_archive_free(a);
	flip_pack_middle();
	OK(amber_archive_open_ext(&b, at("archive"), &oo));
	OK(amber_archive_unlock(b, (const unsigned char *)PASS, strlen(PASS)));
	OK(amber_snapshot_open(&s, b, id));
	rc = amber_restore(NULL, s, "", at("out"), NULL);
	cr_assert_lt(rc, 0, "a restore over a corrupt chunk succeeded");
	cr_assert(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT, "rc %d: %s", rc, amber_error_last());
	cr_assert_not_null(strstr(amber_error_last(), "big"), "the error does not name the file: %s",
			   amber_error_last());
	{ /* nothing that is not the file's is left: not even zeros of its size */
		struct stat st;

		cr_assert(stat(at("out/big"), &st) != 0 || st.st_size == 0,
			  "a failed file was left with %lld bytes", (long long)st.st_size);
	}
	amber_snapshot_free(s);
	amber_archive_free(b);
}

/*
 * The walk does not wait for the files of a directory before going on, and
 * the workers read the next directories' listings ahead: a wide, nested
 * tree restores byte for byte, and every directory keeps its mode and
 * mtime although its files may still be written after they were set.
 */
Test(restore, listings_read_ahead_and_files_in_flight_keep_every_directory)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_stats st = AMBER_STATS_INIT;
	char id[AMBER_OID_HEXSZ + 1], p[128], q[128];
	struct timespec old[2] = {{.tv_sec = 1500000000, .tv_nsec = 123456789},
				  {.tv_sec = 1500000000, .tv_nsec = 123456789}};
	static const mode_t modes[3] = {0700, 0750, 0555};
	struct stat x;
	int nfiles = 0;

	mkdir(at("src/w"), 0755);
	for (int i = 0; i < 12; i++) {
		snprintf(p, sizeof(p), "src/w/d%02d", i);
		mkdir(at(p), 0755);
		for (int j = 0; j < 3; j++) {
			snprintf(p, sizeof(p), "src/w/d%02d/s%d", i, j);
			mkdir(at(p), 0700);
			for (int k = 0; k < 5; k++) {
				int fd;

				snprintf(p, sizeof(p), "src/w/d%02d/s%d/f%d", i, j, k);
				fd = open(at(p), O_WRONLY | O_CREAT | O_TRUNC, 0644);
				cr_assert_geq(fd, 0);
				put_random(fd, (size_t)(i * 3 + j + k) * 7919 + 1);
				close(fd);
				nfiles++;
			}
		}
		snprintf(p, sizeof(p), "src/w/d%02d/top", i);
		put_file(p, "a file beside the subdirectories\n");
		nfiles++;
	}
	for (int i = 0; i < 12; i++) /* after their children: modes and mtimes to check */
		for (int j = 0; j < 3; j++) {
			snprintf(p, sizeof(p), "src/w/d%02d/s%d", i, j);
			cr_assert_eq(chmod(at(p), modes[j]), 0);
			cr_assert_eq(utimensat(AT_FDCWD, at(p), old, 0), 0);
		}
	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_restore(&st, s, "w", at("out"), NULL));
	cr_assert_eq(st.files, (uint64_t)nfiles);
	for (int i = 0; i < 12; i++) {
		for (int j = 0; j < 3; j++) {
			for (int k = 0; k < 5; k++) {
				snprintf(p, sizeof(p), "src/w/d%02d/s%d/f%d", i, j, k);
				snprintf(q, sizeof(q), "out/d%02d/s%d/f%d", i, j, k);
				cr_assert(same_bytes(p, q), "%s differs after restore", q);
			}
			snprintf(q, sizeof(q), "out/d%02d/s%d", i, j);
			cr_assert_eq(stat(at(q), &x), 0);
			cr_assert_eq(x.st_mode & 07777, modes[j], "%s: mode %o", q,
				     x.st_mode & 07777);
			cr_assert(x.st_mtim.tv_sec == old[1].tv_sec &&
				  x.st_mtim.tv_nsec == old[1].tv_nsec,
				  "%s: mtime %lld.%09ld, not the snapshot's", q,
				  (long long)x.st_mtim.tv_sec, x.st_mtim.tv_nsec);
		}
		snprintf(p, sizeof(p), "src/w/d%02d/top", i);
		snprintf(q, sizeof(q), "out/d%02d/top", i);
		cr_assert(same_bytes(p, q), "%s differs after restore", q);
	}
	for (int i = 0; i < 12; i++) /* writable again, for the scratch removal */
		for (int j = 0; j < 3; j++) {
			snprintf(p, sizeof(p), "src/w/d%02d/s%d", i, j);
			chmod(at(p), 0755);
			snprintf(q, sizeof(q), "out/d%02d/s%d", i, j);
			chmod(at(q), 0755);
		}
	amber_snapshot_free(s);
	amber_archive_free(a);
}
