/*
 * Writer sessions: a snapshot told which paths changed must be the very
 * snapshot a whole walk writes (same root tree, same totals), while the
 * directories nobody named are neither listed nor decoded.  Checked over a
 * real archive and a real source tree, one change of each kind at a time.
 */
#include "libfix.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/xattr.h>
#include <unistd.h>

static void setup(void)
{
	scratch_make("writer");
}

TestSuite(writer, .init = setup, .fini = scratch_remove);

static void append(const char *rel, const char *text)
{
	char path[4200];
	FILE *f;

	snprintf(path, sizeof(path), "%s/src/%s", base, rel);
	f = fopen(path, "ab");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

static char *src(const char *rel)
{
	static char bufs[4][4200];
	static int k;
	char *p = bufs[k++ & 3];

	snprintf(p, 4200, "%s/src%s%s", base, *rel ? "/" : "", rel);
	return p;
}

/* A new archive and an empty source tree. */
static amber_archive *new_archive(void)
{
	cr_assert_eq(mkdir(src(""), 0755), 0);
	return fix_archive_at("arch", 0);
}

/* Assert the session's snapshot `id` equals a whole walk of the source now. */
static void assert_like_whole_walk(amber_archive *a, const char *id, const char *what)
{
	amber_snapshot_opts o = AMBER_SNAPSHOT_OPTS_INIT;
	amber_snapshot *x = NULL, *y = NULL;
	amber_entry *rx = NULL, *ry = NULL;
	char full[AMBER_OID_HEXSZ + 1];

	o.stream = "check";
	o.threads = 1;
	o.no_cache = 1;
	OK(amber_snapshot_create(full, NULL, a, src(""), &o));
	OK(amber_snapshot_open(&x, a, id));
	OK(amber_snapshot_open(&y, a, full));
	const amber_snapinfo *ix = amber_snapshot_info(x), *iy = amber_snapshot_info(y);

	cr_assert_str_eq(ix->tree, iy->tree, "%s: the session's tree differs from a whole walk",
			 what);
	cr_assert_eq(ix->stats.files, iy->stats.files, "%s: files %llu vs %llu", what,
		     (unsigned long long)ix->stats.files, (unsigned long long)iy->stats.files);
	cr_assert_eq(ix->stats.dirs, iy->stats.dirs, "%s: dirs", what);
	cr_assert_eq(ix->stats.bytes, iy->stats.bytes, "%s: bytes", what);
	OK(amber_stat(&rx, x, ""));
	OK(amber_stat(&ry, y, ""));
	cr_assert_eq(rx->mode, ry->mode, "%s: root mode", what);
	cr_assert_eq(rx->mtime_sec, ry->mtime_sec, "%s: root mtime", what);
	cr_assert_eq(rx->mtime_nsec, ry->mtime_nsec, "%s: root mtime", what);
	cr_assert_eq(rx->nxattrs, ry->nxattrs, "%s: root xattrs", what);
	amber_entry_free(rx);
	amber_entry_free(ry);
	amber_snapshot_free(x);
	amber_snapshot_free(y);
}

/* One step: change the tree, name the changes, compare with a whole walk. */
static void step(amber_archive *a, amber_writer *w, const amber_dirty *d, size_t n,
		 const char *what)
{
	char id[AMBER_OID_HEXSZ + 1];
	int rc = amber_writer_snapshot(id, NULL, w, d, n);

	cr_assert_eq(rc, 0, "%s: %d %s", what, rc, amber_error_last());
	assert_like_whole_walk(a, id, what);
}

static void make_tree(void)
{
	cr_assert_eq(mkdir(src("a"), 0755), 0);
	cr_assert_eq(mkdir(src("a/b"), 0755), 0);
	cr_assert_eq(mkdir(src("c"), 0700), 0);
	cr_assert_eq(mkdir(src("c/sub"), 0755), 0);
	src_put("top", "top file\n");
	src_put("a/x", "x\n");
	src_put("a/b/f", "f\n");
	src_put("a/b/f2", "f2\n");
	src_put("c/y", "y\n");
	src_put("c/sub/z", "z\n");
	cr_assert_eq(symlink("a/x", src("link")), 0);
}

Test(writer, named_changes_give_the_whole_walks_snapshot, .timeout = 120)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	char id[AMBER_OID_HEXSZ + 1];

	make_tree();
	w = fix_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	assert_like_whole_walk(a, id, "first");

	append("a/b/f", "grown\n");
	step(a, w, (amber_dirty[]){{"a/b/f", 0}}, 1, "append");
	src_put("c/new", "new\n");
	cr_assert_eq(unlink(src("a/x")), 0);
	step(a, w, (amber_dirty[]){{"c/new", 0}, {"/a/x", 0}}, 2, "create and delete");
	cr_assert_eq(chmod(src("c/y"), 0600), 0);
	cr_assert_eq(setxattr(src("a"), "user.k", "v", 1, 0), 0);
	step(a, w, (amber_dirty[]){{"c/y", 0}, {"a", 0}}, 2, "mode and xattr");
	cr_assert_eq(rename(src("a/b/f2"), src("c/f2")), 0);
	step(a, w, (amber_dirty[]){{"a/b/f2", 0}, {"c/f2", 0}}, 2, "rename");
	cr_assert_eq(rename(src("c/sub"), src("a/moved")), 0);
	src_put("a/moved/z", "rewritten\n");
	step(a, w, (amber_dirty[]){{"c/sub", 0}, {"a/moved", 1}}, 2, "directory moved");
	cr_assert_eq(truncate(src("top"), 3), 0);
	cr_assert_eq(unlink(src("link")), 0);
	cr_assert_eq(mkdir(src("link"), 0755), 0);
	src_put("link/in", "in\n");
	step(a, w, (amber_dirty[]){{"top", 0}, {"link", 1}, {"link/in", 0}}, 3,
	     "truncate, symlink replaced by a directory");
	cr_assert_eq(chmod(src(""), 0750), 0);
	step(a, w, (amber_dirty[]){{"", 0}}, 1, "root mode");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

Test(writer, nothing_changed_writes_nothing, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	char id[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1];

	make_tree();
	w = fix_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	cr_assert_eq(amber_writer_snapshot(id2, NULL, w, (amber_dirty[]){{"", 0}}, 0), 1);
	cr_assert_str_eq(id, id2);
	/* named, but as it was */
	cr_assert_eq(amber_writer_snapshot(id2, NULL, w, (amber_dirty[]){{"c/y", 0}}, 1), 1);
	cr_assert_eq(amber_writer_snapshot(id2, NULL, w, NULL, 0), 1, "whole walk: %s",
		     amber_error_last());
	cr_assert_str_eq(id, id2);
	OK(amber_resolve(id2, a, NULL, "latest"));
	cr_assert_str_eq(id, id2, "nothing was written");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

Test(writer, directories_nobody_named_are_not_read, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	amber_counters c0, c1;
	amber_snapshot *s = NULL;
	amber_entry *e = NULL;
	char id[AMBER_OID_HEXSZ + 1];

	make_tree();
	w = fix_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	src_put("c/y", "changed behind the session's back\n");
	append("a/b/f", "named\n");
	amber_archive_counters(a, &c0);
	OK(amber_writer_snapshot(id, NULL, w, (amber_dirty[]){{"a/b/f", 0}}, 1));
	amber_archive_counters(a, &c1);
	/* root, a, a/b: nothing of c */
	cr_assert_eq(c1.dirs_decoded - c0.dirs_decoded, 3, "decoded %llu directories",
		     (unsigned long long)(c1.dirs_decoded - c0.dirs_decoded));
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&e, s, "c/y"));
	cr_assert_eq(e->size, 2, "c/y was not looked at, so it keeps its old size");
	amber_entry_free(e);
	amber_snapshot_free(s);
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

Test(writer, hard_links_and_other_writers_make_a_whole_walk, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	amber_snapshot_opts o = AMBER_SNAPSHOT_OPTS_INIT;
	char id[AMBER_OID_HEXSZ + 1], other[AMBER_OID_HEXSZ + 1];

	make_tree();
	w = fix_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	cr_assert_eq(link(src("c/y"), src("a/ylink")), 0);
	step(a, w, (amber_dirty[]){{"a/ylink", 0}}, 1, "hard link made");
	append("a/ylink", "through the link\n");
	step(a, w, (amber_dirty[]){{"a/ylink", 0}}, 1, "hard-linked file written");
	cr_assert_eq(unlink(src("a/ylink")), 0);
	step(a, w, (amber_dirty[]){{"a/ylink", 0}}, 1, "hard link removed");
	/* another writer moves the stream; the session notices and walks */
	o.threads = 1;
	src_put("c/y", "written by someone else\n");
	OK(amber_snapshot_create(other, NULL, a, src(""), &o));
	src_put("top", "and a change the session does not hear of\n");
	step(a, w, (amber_dirty[]){{"a", 0}}, 1, "tip moved by another writer");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

Test(writer, bad_paths_and_options_are_refused, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer_opts o = AMBER_WRITER_OPTS_INIT;
	amber_writer *w = NULL;
	char id[AMBER_OID_HEXSZ + 1];

	make_tree();
	o.snap.tag = "t";
	cr_assert_eq(amber_writer_open(&w, a, src(""), &o), AMBER_EINVAL);
	o.snap.tag = NULL;
	o.version = 99;
	cr_assert_eq(amber_writer_open(&w, a, src(""), &o), AMBER_EINVAL);
	w = fix_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	cr_assert_eq(amber_writer_snapshot(id, NULL, w, (amber_dirty[]){{"a/../c", 0}}, 1),
		     AMBER_EINVAL);
	cr_assert(strstr(amber_error_last(), "a/../c"), "%s", amber_error_last());
	append("a/b/f", "after a refused call\n");
	step(a, w, (amber_dirty[]){{"a/b/f", 0}}, 1, "usable after an error");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

/* ---- append-only files ---------------------------------------------------------------- */

static char warned[8192];

static void on_warn(const char *path, const char *message, void *payload)
{
	size_t l = strlen(warned);

	snprintf(warned + l, sizeof(warned) - l, "%s: %s\n", path, message);
}

static amber_writer *open_append_writer(amber_archive *a)
{
	static const char *const globs[] = {"*.log", NULL};
	amber_writer_opts o = AMBER_WRITER_OPTS_INIT;
	amber_writer *w = NULL;

	o.snap.threads = 1;
	o.snap.warn = on_warn;
	o.append_only = globs;
	warned[0] = '\0';
	OK(amber_writer_open(&w, a, src(""), &o));
	return w;
}

/* Append (or write at off, if off >= 0) n pseudo-random bytes. */
static void scribble(const char *rel, long off, size_t n, uint64_t seed)
{
	char path[4200];
	uint8_t *b = malloc(n);
	int fd;

	snprintf(path, sizeof(path), "%s/src/%s", base, rel);
	for (size_t i = 0; i < n; i++) {
		seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
		b[i] = (uint8_t)seed;
	}
	fd = open(path, O_WRONLY | O_CREAT | (off < 0 ? O_APPEND : 0), 0644);
	cr_assert_geq(fd, 0);
	if (off < 0)
		cr_assert_eq(write(fd, b, n), (ssize_t)n);
	else
		cr_assert_eq(pwrite(fd, b, n, off), (ssize_t)n);
	close(fd);
	free(b);
}

static void assert_stored_prefix(amber_archive *a, const char *id, const char *rel, size_t min);

static off_t file_size(const char *rel)
{
	struct stat st;

	cr_assert_eq(stat(src(rel), &st), 0);
	return st.st_size;
}

Test(writer, an_append_only_file_is_read_from_its_last_chunk, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	amber_stats st = AMBER_STATS_INIT;
	char id[AMBER_OID_HEXSZ + 1];

	make_tree();
	scribble("data.log", -1, 6 << 20, 1);
	w = open_append_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	for (int i = 0; i < 3; i++) {
		scribble("data.log", -1, 100 << 10, (uint64_t)i + 2);
		OK(amber_writer_snapshot(id, &st, w, (amber_dirty[]){{"data.log", 0}}, 1));
		cr_assert_leq(st.bytes_read, (2u << 20) + (100u << 10),
			      "read %llu bytes of a 6 MiB file", (unsigned long long)st.bytes_read);
		assert_stored_prefix(a, id, "data.log", (size_t)file_size("data.log"));
	}
	cr_assert_str_eq(warned, "");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

/*
 * The growing tail is not stored again at every snapshot: 20 appends of
 * 32 KiB add the appended bytes as fragments, plus the chunks the chunker
 * cuts (each byte at most once more, and the 2 MiB at most that were not
 * cut when the session began), plus a little metadata per snapshot.
 * Storing the tail again whole each time adds several MiB more.
 */
Test(writer, a_growing_tail_is_not_stored_again_at_every_snapshot, .timeout = 60)
{
	const size_t step = 32 << 10, steps = 20;
	amber_archive *a = new_archive();
	amber_writer *w;
	amber_stats st = AMBER_STATS_INIT;
	uint64_t added = 0;
	char id[AMBER_OID_HEXSZ + 1];

	make_tree();
	scribble("data.log", -1, 6 << 20, 1);
	w = open_append_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	for (size_t i = 0; i < steps; i++) {
		scribble("data.log", -1, step, (uint64_t)i + 100);
		OK(amber_writer_snapshot(id, &st, w, (amber_dirty[]){{"data.log", 0}}, 1));
		added += st.bytes_new;
		assert_stored_prefix(a, id, "data.log", (size_t)file_size("data.log"));
	}
	cr_assert_leq(added, 2 * steps * step + (2u << 20) + steps * (8u << 10),
		      "%zu appends of %zu bytes added %llu bytes", steps, step,
		      (unsigned long long)added);
	cr_assert_str_eq(warned, "");
	/* a whole walk checks the fragments against the file: the promise held
	 * (1: the last append ended with a cut, so it was stored as a whole
	 * read stores it) */
	int rc = amber_writer_snapshot(id, NULL, w, NULL, 0);

	cr_assert(rc == 0 || rc == 1, "whole walk: %d %s", rc, amber_error_last());
	cr_assert_str_eq(warned, "", "a kept promise was reported broken");
	assert_like_whole_walk(a, id, "whole walk after fragments");
	/* a new session does not know which chunks are fragments: still right */
	OK(amber_writer_close(w));
	w = open_append_writer(a);
	rc = amber_writer_snapshot(id, NULL, w, NULL, 0); /* 1: as the tip has it */
	cr_assert(rc == 0 || rc == 1, "whole walk: %d %s", rc, amber_error_last());
	for (size_t i = 0; i < 3; i++) {
		scribble("data.log", -1, step, (uint64_t)i + 200);
		OK(amber_writer_snapshot(id, &st, w, (amber_dirty[]){{"data.log", 0}}, 1));
		assert_stored_prefix(a, id, "data.log", (size_t)file_size("data.log"));
	}
	cr_assert_str_eq(warned, "");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

/* A fragment of the tail (not the last one) rewritten: caught, read whole. */
Test(writer, a_rewritten_tail_fragment_is_caught_and_read_whole, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	char id[AMBER_OID_HEXSZ + 1];
	off_t end;

	make_tree();
	scribble("data.log", -1, 6 << 20, 1);
	w = open_append_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	scribble("data.log", -1, 4096, 2);
	OK(amber_writer_snapshot(id, NULL, w, (amber_dirty[]){{"data.log", 0}}, 1));
	end = file_size("data.log");
	scribble("data.log", -1, 4096, 3);
	OK(amber_writer_snapshot(id, NULL, w, (amber_dirty[]){{"data.log", 0}}, 1));
	cr_assert_str_eq(warned, "");
	/* bytes of the first appended fragment change, then more is appended */
	scribble("data.log", end - 100, 16, 4);
	scribble("data.log", -1, 4096, 5);
	OK(amber_writer_snapshot(id, NULL, w, (amber_dirty[]){{"data.log", 0}}, 1));
	cr_assert(strstr(warned, "data.log: declared append-only, but it shrank or its stored end"),
		  "warnings: %s", warned);
	assert_stored_prefix(a, id, "data.log", (size_t)file_size("data.log"));
	assert_like_whole_walk(a, id, "read whole");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

Test(writer, a_broken_append_only_promise_is_caught_and_said, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	char id[AMBER_OID_HEXSZ + 1];

	make_tree();
	scribble("data.log", -1, 6 << 20, 1);
	w = open_append_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	/* an early byte rewritten, then an append: the tail still matches */
	scribble("data.log", 100, 16, 7);
	scribble("data.log", -1, 1000, 8);
	OK(amber_writer_snapshot(id, NULL, w, (amber_dirty[]){{"data.log", 0}}, 1));
	cr_assert_str_eq(warned, "");
	/* the next whole walk reads it whole and says so */
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	cr_assert(strstr(warned, "data.log: declared append-only, but bytes before its end"),
		  "warnings: %s", warned);
	assert_like_whole_walk(a, id, "after the whole walk");
	/* truncated and rewritten: the stored end does not match, read whole */
	warned[0] = '\0';
	cr_assert_eq(truncate(src("data.log"), 0), 0);
	scribble("data.log", -1, (6 << 20) + 5, 9);
	OK(amber_writer_snapshot(id, NULL, w, (amber_dirty[]){{"data.log", 0}}, 1));
	cr_assert(strstr(warned, "data.log: declared append-only, but it shrank or its stored end"),
		  "warnings: %s", warned);
	assert_like_whole_walk(a, id, "rewritten");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

/* A child that appends to rel until killed. */
static pid_t start_appender(const char *rel)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid == 0) {
		char path[4200], line[64];
		int fd;

		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
		snprintf(path, sizeof(path), "%s/src/%s", base, rel);
		fd = open(path, O_WRONLY | O_APPEND);
		for (unsigned long i = 0; fd >= 0; i++) {
			int n = snprintf(line, sizeof(line), "appended line %lu\n", i);

			if (write(fd, line, (size_t)n) != n)
				_exit(1);
			usleep(50);
		}
		_exit(1);
	}
	return pid;
}

/* The stored file is a prefix of the file on disk, of at least min bytes. */
static void assert_stored_prefix(amber_archive *a, const char *id, const char *rel, size_t min)
{
	amber_snapshot *s = NULL;
	amber_entry *e = NULL;
	char path[4200];
	size_t got = 0;

	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&e, s, rel));
	cr_assert_geq(e->size, min);
	uint8_t *stored = malloc(e->size), *disk = malloc(e->size);

	OK(amber_file_read(&got, s, e, 0, stored, e->size));
	cr_assert_eq(got, e->size);
	snprintf(path, sizeof(path), "%s/src/%s", base, rel);
	int fd = open(path, O_RDONLY);

	cr_assert_eq(pread(fd, disk, e->size, 0), (ssize_t)e->size);
	close(fd);
	cr_assert(memcmp(stored, disk, e->size) == 0, "the stored %s is not the file's prefix", rel);
	free(stored);
	free(disk);
	amber_entry_free(e);
	amber_snapshot_free(s);
}

Test(writer, an_append_only_file_that_never_holds_still_is_stored, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	amber_stats st = AMBER_STATS_INIT;
	char id[AMBER_OID_HEXSZ + 1];
	pid_t child;

	make_tree();
	scribble("data.log", -1, 6 << 20, 1);
	w = open_append_writer(a);
	child = start_appender("data.log");
	sleep(1);
	OK(amber_writer_snapshot(id, &st, w, NULL, 0)); /* read whole */
	cr_assert_eq(st.errors, 0, "warnings: %s", warned);
	for (int i = 0; i < 3; i++) {
		usleep(200000);
		OK(amber_writer_snapshot(id, &st, w, (amber_dirty[]){{"data.log", 0}}, 1));
		cr_assert_eq(st.errors, 0, "warnings: %s", warned);
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	assert_stored_prefix(a, id, "data.log", 6 << 20);
	cr_assert_str_eq(warned, "");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

/* ---- large directories ------------------------------------------------------------------ */

static void make_big_dir(const char *rel, int n)
{
	char name[4200];

	cr_assert_eq(mkdir(src(rel), 0755), 0);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s/acct-%05d.json", rel, i);
		src_put(name, name);
	}
}

Test(writer, a_large_directory_rewrites_only_the_buckets_that_changed, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	amber_counters c0, c1;
	char id[AMBER_OID_HEXSZ + 1];

	make_tree();
	make_big_dir("accounts", 1500);
	w = fix_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	src_put("accounts/acct-00007.json", "{\"margin\": 1}\n");
	src_put("accounts/acct-new.json", "{}\n");
	cr_assert_eq(unlink(src("accounts/acct-00100.json")), 0);
	amber_archive_counters(a, &c0);
	step(a, w, (amber_dirty[]){{"accounts/acct-00007.json", 0}, {"accounts/acct-new.json", 0},
				   {"accounts/acct-00100.json", 0}}, 3, "three changes in 1500");
	amber_archive_counters(a, &c1);
	/* the session decoded root, the bucket list and at most three buckets;
	 * the whole walk it is compared with decodes its own root only */
	cr_assert_leq(c1.dirs_decoded - c0.dirs_decoded, 1 + 1 + 3 + 4,
		      "decoded %llu manifests", (unsigned long long)(c1.dirs_decoded - c0.dirs_decoded));
	OK(amber_writer_close(w));
	amber_archive_free(a);
}

Test(writer, a_directory_that_shrinks_below_the_fan_out_is_rewritten_whole, .timeout = 60)
{
	amber_archive *a = new_archive();
	amber_writer *w;
	char id[AMBER_OID_HEXSZ + 1], name[64];

	make_tree();
	make_big_dir("accounts", 1026);
	w = fix_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "accounts/acct-%05d.json", i * 300);
		cr_assert_eq(unlink(src(name)), 0);
	}
	step(a, w, (amber_dirty[]){{"accounts/acct-00000.json", 0}, {"accounts/acct-00300.json", 0},
				   {"accounts/acct-00600.json", 0}}, 3, "1026 entries down to 1023");
	src_put("accounts/acct-00000.json", "back\n");
	src_put("accounts/acct-00300.json", "back\n");
	step(a, w, (amber_dirty[]){{"accounts/acct-00000.json", 0}, {"accounts/acct-00300.json", 0}},
	     2, "1023 entries up to 1025");
	OK(amber_writer_close(w));
	amber_archive_free(a);
}
