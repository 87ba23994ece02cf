/*
 * Packs read by amberfs itself (lib/packread.c), through the real binary
 * and a real mount:
 *
 * - a pack rewritten or truncated in place under a running mount: reads
 *   that need it are EIO (libgit2's mmap'ed reader died of SIGBUS), the
 *   daemon lives on, its log names the pack; restore and verify fail with
 *   a message naming it;
 * - an archive repacked by git itself (`git repack -adf --window=250
 *   --depth=50`, as a mirror's `git gc` does), whose packs hold OFS_DELTA
 *   entries, mounts, restores byte-identical and verifies.
 */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NFILES 6
#define FILE_SIZE ((size_t)1 << 20)

TestSuite(packread, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

/* The bytes of path up to the first error (*err: its errno, 0 at EOF). */
static char *read_until_error(const char *path, size_t *len, int *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = FILE_SIZE + 65536, n = 0;
	char *buf = malloc(cap);

	*err = 0;
	*len = 0;
	if (fd < 0) {		/* open reads the file's index: EIO there too */
		*err = errno;
		return buf;
	}
	while (n + 65536 <= cap) {
		ssize_t k = read(fd, buf + n, 65536);

		if (k < 0) {
			*err = errno;
			break;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	*len = n;
	return buf;
}

/* The largest pack of arch (malloc'd path); *n counts them. */
static char *the_pack(const char *arch, int *n)
{
	char *dir = pjoin(arch, "objects/pack"), *found = NULL;
	DIR *d = opendir(dir);
	struct dirent *de;
	off_t best = -1;

	cr_assert_not_null(d);
	*n = 0;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		struct stat st;
		char *p;

		if (l <= 5 || strcmp(de->d_name + l - 5, ".pack") != 0)
			continue;
		p = pjoin(dir, de->d_name);
		(*n)++;
		if (stat(p, &st) == 0 && st.st_size > best) {
			best = st.st_size;
			free(found);
			found = p;
		} else {
			free(p);
		}
	}
	closedir(d);
	free(dir);
	cr_assert_not_null(found, "no pack in %s", arch);
	return found;
}

static void expect_file_or_eio(const char *mnt, const char *src, int i, int want_eio)
{
	char *name = xasprintf("f%d", i), *p = xasprintf("%s/latest/%s", mnt, name);
	char *want = read_file(pjoin(src, name), NULL), *got;
	size_t len;
	int err;

	got = read_until_error(p, &len, &err);
	cr_assert(len <= FILE_SIZE && memcmp(got, want, len) == 0,
		  "%s: the mount returned bytes that are not the file's", name);
	if (want_eio)
		cr_assert_eq(err, EIO, "%s: expected EIO, got %s after %zu bytes", name,
			     strerror(err), len);
	else
		cr_assert(err == 0 || err == EIO, "%s: %s", name, strerror(err));
	cr_assert(fg_alive(), "the daemon died reading %s", name);
	free(got);
	free(want);
	free(p);
	free(name);
}

Test(packread, a_pack_rewritten_and_truncated_under_a_mount_is_eio_not_a_crash)
{
	char *arch = pjoin(IT.tmp, "archive"), *src = pjoin(IT.tmp, "src"), id[41];
	char *log = pjoin(IT.tmp, "daemon.log");

	mkdir_p(src, 0755);
	for (int i = 0; i < NFILES; i++) {
		char *f = xasprintf("%s/f%d", src, i);

		write_random_file(f, FILE_SIZE, (uint64_t)i + 1, 0);
		free(f);
	}
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	int npacks;
	char *pack = the_pack(arch, &npacks), *pack_name = strrchr(pack, '/') + 1;
	struct stat st;

	cr_assert_eq(stat(pack, &st), 0);
	const char *mnt = fg_mount(arch);

	expect_file_or_eio(mnt, src, 0, 0);
	/* rewritten in place: zeros over the middle of the pack */
	int fd = open(pack, O_WRONLY);
	char *zeros = calloc(1, 1 << 20);

	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, zeros, 1 << 20, st.st_size / 2), 1 << 20);
	/* truncated in place: the last quarter goes */
	cr_assert_eq(ftruncate(fd, st.st_size * 3 / 4), 0);
	close(fd);
	free(zeros);
	/* every file: its own bytes or EIO, never others, and the daemon lives */
	for (int i = 1; i < NFILES; i++)
		expect_file_or_eio(mnt, src, i, i == NFILES - 1);
	run_result r;

	run_cmd(&r, NULL, "ls", "-ld", mnt, NULL);	/* the daemon still answers */
	assert_ok(&r, "ls through the mount after the damage");
	run_result_dispose(&r);
	cr_assert(fg_alive(), "the daemon died");
	char *logged = read_file(log, NULL);

	cr_assert(strstr(logged, pack_name), "the daemon's log does not name %s: %s", pack_name,
		  logged);
	char *line = strstr(logged, pack_name);

	while (line > logged && line[-1] != '\n')
		line--;
	cr_log_info("the daemon logged: %.*s", (int)strcspn(line, "\n"), line);
	free(logged);
	fg_unmount();

	/* restore and verify say what is wrong, naming the pack (its index is
	 * refused now: offsets past the end of the truncated pack) */
	char *dest = pjoin(IT.tmp, "dest");

	*strrchr(pack_name, '.') = 0;	/* pack-<hex> */

	amber(&r, "restore", arch, "latest", dest, NULL);
	cr_assert(r.status == 1 || r.status == 3, "restore of a damaged archive: exit %d: %s",
		  r.status, r.err);
	cr_assert(strstr(r.err, pack_name), "restore does not name %s: %s", pack_name, r.err);
	run_result_dispose(&r);
	amber(&r, "verify", arch, "--read-data", NULL);
	cr_assert_neq(r.status, 0, "verify --read-data passed a damaged pack");
	cr_assert(strstr(r.err, pack_name) || strstr(r.out, pack_name),
		  "verify does not name %s: %s%s", pack_name, r.out, r.err);
	run_result_dispose(&r);
	free(dest);
	free(pack);
	free(log);
	free(src);
	free(arch);
}

/* Lines of `git verify-pack -v` that are deltas (they end with a chain depth and base). */
static int count_deltas(const char *idx, int *max_depth)
{
	run_result r;
	int n = 0;

	run_cmd(&r, NULL, "git", "verify-pack", "-v", idx, NULL);
	assert_ok(&r, "git verify-pack -v");
	*max_depth = 0;
	char *save = NULL;

	for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char sha[64], type[16], base[64];
		unsigned long size, psize, off;
		int depth;

		if (sscanf(line, "%63s %15s %lu %lu %lu %d %63s", sha, type, &size, &psize, &off,
			   &depth, base) == 7) {
			n++;
			if (depth > *max_depth)
				*max_depth = depth;
		}
	}
	run_result_dispose(&r);
	return n;
}

/* Text files that change a little between snapshots: git finds deltas. */
static void write_step(const char *src, int step)
{
	for (int f = 0; f < 12; f++) {
		char *p = xasprintf("%s/book%02d.txt", src, f);
		size_t cap = 200000, n = 0;
		char *t = malloc(cap);

		for (int line = 0; line < 3000 && n + 80 < cap; line++)
			n += (size_t)snprintf(t + n, cap - n, "book %d order %d px %d qty %d\n", f,
					      line, (line * 7 + f) % 1000,
					      line % 50 == step % 50 ? step : line % 13);
		write_file(p, t, n, 0644);
		free(t);
		free(p);
	}
	char *sub = pjoin(src, "desk");

	mkdir_p(sub, 0755);
	for (int f = 0; f < 30; f++) {
		char *p = xasprintf("%s/trader%02d", sub, f);
		char *t = xasprintf("trader %d limit %d step %d\n", f, f * 1000, f < step ? step : 0);

		write_str(p, t);
		free(t);
		free(p);
	}
	free(sub);
}

Test(packread, an_archive_repacked_by_git_with_deltas_mounts_restores_and_verifies)
{
	char *arch = pjoin(IT.tmp, "archive"), *src = pjoin(IT.tmp, "src"), id[41];
	char *log = pjoin(IT.tmp, "daemon.log");
	run_result r;

	mkdir_p(src, 0755);
	amber_init_archive(arch, 1);
	for (int step = 0; step < 4; step++) {
		write_step(src, step);
		amber_snapshot_ok(id, arch, src, NULL);
	}
	free(git_ok(arch, NULL, "repack", "-adf", "--window=250", "--depth=50", NULL));
	int npacks, depth = 0;
	char *pack = the_pack(arch, &npacks), *idx = strdup(pack);

	cr_assert_eq(npacks, 1, "git repack -a left %d packs", npacks);
	memcpy(idx + strlen(idx) - 4, "idx", 4);
	int deltas = count_deltas(idx, &depth);

	cr_assert_gt(deltas, 0, "git repack made no deltas: this test could not tell");
	cr_log_info("%d deltas, chains up to %d", deltas, depth);

	const char *mnt = fg_mount(arch);
	char *latest = xasprintf("%s/latest/.", mnt);

	assert_trees_equal(src, latest, TD_SKIP_ROOT_META, "the latest snapshot through the mount");
	cr_assert(fg_alive(), "the daemon died");
	fg_unmount();

	char *dest = pjoin(IT.tmp, "dest");

	amber(&r, "restore", arch, "latest", dest, NULL);
	assert_ok(&r, "restore of a git-repacked archive");
	run_result_dispose(&r);
	assert_trees_equal(src, dest, TD_SKIP_ROOT_META, "restore of a git-repacked archive");
	amber(&r, "verify", arch, "--read-data", NULL);
	assert_ok(&r, "verify --read-data of a git-repacked archive");
	run_result_dispose(&r);
	free(dest);
	free(latest);
	free(idx);
	free(pack);
	free(log);
	free(src);
	free(arch);
}
