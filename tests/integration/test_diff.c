/*
 * amberfs diff: the exact changes between two snapshots, in text and JSON
 * through the real binary, and, through the library, proof that the cost
 * follows the change: unchanged directories and fan-out buckets are not
 * decrypted.
 */
#include "helpers.h"

#include "amber.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

TestSuite(diff, .init = itest_setup, .fini = itest_teardown);

static void set_mtime(const char *path, time_t t)
{
	struct timespec ts[2] = {{t, 0}, {t, 0}};

	cr_assert_eq(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0, "utimensat %s", path);
}

/* A small tree with one of every kind of change between two snapshots. */
static void history(char a[41], char b[41], const char *arch, const char *src)
{
	char *p;

	mkdir_p(src, 0755);
	write_str(p = pjoin(src, "edit.txt"), "hello world, version one\n"), free(p);
	write_str(p = pjoin(src, "gone.txt"), "to be removed\n"), free(p);
	write_str(p = pjoin(src, "mode.txt"), "chmod only\n"), free(p);
	write_str(p = pjoin(src, "touch.txt"), "mtime only\n"), free(p);
	write_str(p = pjoin(src, "becomes-dir"), "a file first\n"), free(p);
	write_random_file(p = pjoin(src, "ledger.log"), 3 << 20, 42, 0), free(p);
	p = pjoin(src, "link");
	cr_assert_eq(symlink("edit.txt", p), 0);
	free(p);
	amber_init_archive(arch, 0);
	amber_snapshot_ok(a, arch, src, NULL);

	write_str(p = pjoin(src, "edit.txt"), "hello WORLD, version one\n"), free(p);
	unlink(p = pjoin(src, "gone.txt")), free(p);
	write_str(p = pjoin(src, "new.txt"), "brand new\n"), free(p);
	chmod(p = pjoin(src, "mode.txt"), 0600), free(p);
	set_mtime(p = pjoin(src, "touch.txt"), 1000000000), free(p);
	unlink(p = pjoin(src, "becomes-dir")), free(p);
	mkdir_p(p = pjoin(src, "becomes-dir"), 0755), free(p);
	write_random_file(p = pjoin(src, "ledger.log"), 1 << 20, 43, 1), free(p);
	unlink(p = pjoin(src, "link")), free(p);
	p = pjoin(src, "link");
	cr_assert_eq(symlink("new.txt", p), 0);
	free(p);
	amber_snapshot_ok(b, arch, src, NULL);
}

/* The status and path columns of the text output, one "S path" per line. */
static char *status_paths(const char *out)
{
	size_t cap = strlen(out) + 1, len = 0;
	char *res = calloc(1, cap);

	for (const char *p = out; *p;) {
		const char *nl = strchr(p, '\n'), *tab2;

		cr_assert(nl, "output line without newline: %s", p);
		tab2 = memchr(p + 2, '\t', (size_t)(nl - p - 2));
		len += (size_t)snprintf(res + len, cap - len, "%c %.*s\n", p[0],
					(int)((tab2 ? tab2 : nl) - p - 2), p + 2);
		p = nl + 1;
	}
	return res;
}

Test(diff, text_output_names_every_kind_of_change_exactly)
{
	char a[41], b[41];
	char *arch = pjoin(IT.tmp, "a"), *src = pjoin(IT.tmp, "src");
	run_result r;

	history(a, b, arch, src);
	amber(&r, "diff", arch, a, b, NULL);
	assert_ok(&r, "diff");
	char *got = status_paths(r.out);
	cr_expect_str_eq(got, "T becomes-dir\n"
			      "M edit.txt\n"
			      "D gone.txt\n"
			      "M ledger.log\n"
			      "M link\n"
			      "m mode.txt\n"
			      "A new.txt\n"
			      "m touch.txt\n",
			 "full output:\n%s", r.out);
	cr_expect(strstr(r.out, "M\tedit.txt\t25 B -> 25 B, bytes 6..11 changed"),
		  "edit range: %s", r.out);
	cr_expect(strstr(r.out, "appended 1.0 MiB at offset 3145728"), "append: %s", r.out);
	cr_expect(strstr(r.out, "m\tmode.txt\tmode 0644 -> 0600"), "chmod: %s", r.out);
	cr_expect(strstr(r.out, "m\ttouch.txt\tmtime -> 2001-09-09T01:46:40"), "mtime: %s", r.out);
	cr_expect(strstr(r.out, "T\tbecomes-dir\tfile -> dir"), "type change: %s", r.out);
	free(got);
	run_result_dispose(&r);
	amber(&r, "diff", arch, a, b, "--name-only", NULL);
	assert_ok(&r, "diff --name-only");
	cr_expect_str_eq(r.out, "becomes-dir\nedit.txt\ngone.txt\nledger.log\nlink\nmode.txt\n"
				"new.txt\ntouch.txt\n");
	run_result_dispose(&r);
	amber(&r, "diff", arch, a, b, "--stat", NULL);
	assert_ok(&r, "diff --stat");
	cr_expect(strstr(r.out, "1 added, 1 removed, 3 modified, 1 type changed, 2 metadata only"),
		  "stat: %s", r.out);
	run_result_dispose(&r);
	assert_fsck(arch);
	free(arch);
	free(src);
}

Test(diff, json_output_is_one_object_per_change_with_ranges)
{
	char a[41], b[41];
	char *arch = pjoin(IT.tmp, "a"), *src = pjoin(IT.tmp, "src");
	char **objs = NULL;
	run_result r;

	history(a, b, arch, src);
	amber(&r, "diff", arch, a, b, "--json", NULL);
	assert_ok(&r, "diff --json");
	size_t n = json_lines(r.out, &objs);
	cr_assert_eq(n, 8, "expected 8 objects, got %zu:\n%s", n, r.out);
	for (size_t i = 0; i < n; i++) {
		cr_expect(json_valid(objs[i]), "not JSON: %s", objs[i]);
		char *path = json_get(objs[i], "path", NULL);

		if (strcmp(path, "ledger.log") == 0) {
			cr_expect_eq(json_get_ll(objs[i], "appended"), 1 << 20, "%s", objs[i]);
			cr_expect_eq(json_get_ll(objs[i], "old_size"), 3 << 20, "%s", objs[i]);
			cr_expect_eq(json_get_ll(objs[i], "new_size"), 4 << 20, "%s", objs[i]);
		}
		if (strcmp(path, "gone.txt") == 0) {
			char *st = json_get(objs[i], "status", NULL);

			cr_expect_str_eq(st, "D");
			free(st);
		}
		free(path);
		free(objs[i]);
	}
	free(objs);
	run_result_dispose(&r);
	free(arch);
	free(src);
}

Test(diff, identical_snapshots_give_an_empty_diff)
{
	char a[41], b[41];
	char *arch = pjoin(IT.tmp, "a"), *src = pjoin(IT.tmp, "src");
	run_result r;

	mkdir_p(src, 0755);
	make_awkward_tree(src);
	amber_init_archive(arch, 0);
	amber_snapshot_ok(a, arch, src, NULL);
	amber_snapshot_ok(b, arch, src, NULL);
	amber(&r, "diff", arch, a, b, NULL);
	assert_ok(&r, "diff");
	cr_expect_str_empty(r.out, "identical snapshots differ:\n%s", r.out);
	run_result_dispose(&r);
	amber(&r, "diff", arch, a, b, "--json", NULL);
	assert_ok(&r, "diff --json");
	cr_expect_str_empty(r.out);
	run_result_dispose(&r);
	free(arch);
	free(src);
}

/* ---- cost: only what changed is decrypted (library level) -------------- */

static int count_change(const amber_change *c, void *payload)
{
	size_t *n = payload;

	cr_expect_eq(c->kind, AMBER_MODIFIED, "unexpected change %c %s", c->kind, c->path);
	(*n)++;
	return 0;
}

static amber_snapshot *open_snap(amber_archive *a, const char *id)
{
	amber_snapshot *s = NULL;

	cr_assert_eq(amber_snapshot_open(&s, a, id), 0, "%s", amber_error_last());
	return s;
}

Test(diff, three_changes_in_twenty_thousand_files_decrypt_only_those, .timeout = 300)
{
	char a[41], b[41], *p;
	char *arch = pjoin(IT.tmp, "a"), *src = pjoin(IT.tmp, "src");
	char *accounts = pjoin(src, "accounts");
	amber_counters before, after;
	amber_archive *ar = NULL;
	size_t changes = 0;

	mkdir_p(accounts, 0755);
	for (int i = 0; i < 20000; i++) {
		char name[32], body[64];

		snprintf(name, sizeof(name), "%d.json", 100000 + i);
		snprintf(body, sizeof(body), "{\"id\":%d,\"balance\":%d}\n", i, i * 7);
		write_str(p = pjoin(accounts, name), body), free(p);
	}
	amber_init_archive(arch, 0);
	amber_snapshot_ok(a, arch, src, NULL);
	for (int i = 0; i < 3; i++) {
		char name[32];

		snprintf(name, sizeof(name), "%d.json", 100000 + 777 * (i + 1));
		write_str(p = pjoin(accounts, name), "{\"changed\":true}\n"), free(p);
	}
	amber_snapshot_ok(b, arch, src, NULL);

	cr_assert_eq(amber_global_init(), 0);
	amber_open_opts oo = AMBER_OPEN_OPTS_INIT;

	oo.cache_dir = IT.cache;
	oo.weak_kdf_ok = 1; /* the helpers' archives have test-profile slots */
	cr_assert_eq(amber_archive_open_ext(&ar, arch, &oo), 0, "%s", amber_error_last());
	cr_assert_eq(amber_archive_unlock(ar, (const unsigned char *)IT_PASSPHRASE,
					  strlen(IT_PASSPHRASE)), 0, "%s", amber_error_last());
	amber_snapshot *sa = open_snap(ar, a), *sb = open_snap(ar, b);
	amber_archive_counters(ar, &before);
	double t0 = now_s();
	cr_assert_eq(amber_diff(sa, sb, "", 1, count_change, &changes), 0, "%s",
		     amber_error_last());
	double secs = now_s() - t0;
	amber_archive_counters(ar, &after);
	cr_expect_eq(changes, 3, "expected the 3 changed files, got %zu", changes);
	/* root and accounts on both sides, plus at most 3 buckets a side */
	cr_expect_leq(after.dirs_decoded - before.dirs_decoded, 2 * (2 + 3),
		      "decoded %llu directory manifests for 3 changed files",
		      (unsigned long long)(after.dirs_decoded - before.dirs_decoded));
	cr_expect_leq(after.chunks_decoded - before.chunks_decoded, 2 * 3,
		      "decoded %llu chunks for 3 changed files",
		      (unsigned long long)(after.chunks_decoded - before.chunks_decoded));
	cr_expect_lt(secs, 2.0, "diff of 3 changes took %.2f s", secs);
	amber_snapshot_free(sb);
	amber_snapshot_free(sa);
	amber_archive_free(ar);
	free(accounts);
	free(arch);
	free(src);
}

/*
 * Metadata changes that leave size, mode and mtime alone: an xattr value
 * rewritten with one of the same length, and a new owner.  Each file's
 * mtime is put back so that nothing but that change remains.
 */
static void meta_only_history(char a[41], char b[41], const char *arch, const char *src)
{
	char *x = pjoin(src, "xattr.txt"), *o = pjoin(src, "owned.txt");

	mkdir_p(src, 0755);
	write_str(x, "xattr value changes\n");
	write_str(o, "owner changes\n");
	set_mtime(x, 1500000000);
	set_mtime(o, 1500000000);
	cr_assert_eq(setxattr(x, "user.note", "aaaa", 4, 0), 0, "setxattr (user xattrs?)");
	amber_init_archive(arch, 0);
	amber_snapshot_ok(a, arch, src, NULL);
	cr_assert_eq(setxattr(x, "user.note", "bbbb", 4, 0), 0);
	cr_assert_eq(lchown(o, 4321, 8765), 0, "lchown (needs root)");
	set_mtime(x, 1500000000);
	set_mtime(o, 1500000000);
	amber_snapshot_ok(b, arch, src, NULL);
	free(x);
	free(o);
}

Test(diff, xattr_value_of_same_length_and_owner_change_are_reported)
{
	char a[41], b[41];
	char *arch = pjoin(IT.tmp, "a"), *src = pjoin(IT.tmp, "src");
	run_result r;

	meta_only_history(a, b, arch, src);
	amber(&r, "diff", arch, a, b, NULL);
	assert_ok(&r, "diff");
	char *got = status_paths(r.out);
	cr_expect_str_eq(got, "m owned.txt\nm xattr.txt\n", "full output:\n%s", r.out);
	cr_expect(strstr(r.out, "m\towned.txt\towner 0:0 -> 4321:8765\n"), "owner: %s", r.out);
	cr_expect(strstr(r.out, "m\txattr.txt\txattrs\n"), "xattr: %s", r.out);
	free(got);
	run_result_dispose(&r);
	amber(&r, "diff", arch, a, b, "--stat", NULL);
	assert_ok(&r, "diff --stat");
	cr_expect(strstr(r.out, "2 metadata only"), "stat: %s", r.out);
	run_result_dispose(&r);
	free(arch);
	free(src);
}

/*
 * A directory of 3,000 entries is fanned out into buckets keyed by the
 * names' tokens, so on an encrypted archive its entries interleave across
 * buckets: diff must still print in name order, as amberfs(1) promises.
 */
Test(diff, fanned_out_directory_of_an_encrypted_archive_diffs_in_name_order, .timeout = 300)
{
	char *src = pjoin(IT.tmp, "src");
	char *acc = pjoin(src, "accounts");
	mkdir_p(acc, 0755);
	for (int i = 0; i < 3000; i++) {
		char *p = xasprintf("%s/A%07d.json", acc, 101000 + i);
		write_str(p, "{\"balance\":0}\n");
		free(p);
	}
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char a[41], b[41];
	amber_snapshot_ok(a, arch, src, NULL);
	for (int i = 0; i < 3000; i += 37) {
		char *p = xasprintf("%s/A%07d.json", acc, 101000 + i);
		write_str(p, "{\"balance\":12}\n");
		free(p);
	}
	for (int i = 5; i < 3000; i += 101) {
		char *p = xasprintf("%s/A%07d.json", acc, 101000 + i);
		cr_assert_eq(unlink(p), 0);
		free(p);
	}
	char *p = pjoin(acc, "B0000001.json");
	write_str(p, "{}\n");
	free(p);
	amber_snapshot_ok(b, arch, src, NULL);
	run_result r;
	amber(&r, "diff", arch, a, b, "--name-only", NULL);
	assert_ok(&r, "diff of a fanned-out directory");
	int n = 0;
	char prev[256] = "";
	for (char *l = r.out, *e; (e = strchr(l, '\n')); l = e + 1) {
		*e = '\0';
		cr_assert(strcmp(prev, l) < 0, "diff is not in name order: '%s' after '%s'", l, prev);
		snprintf(prev, sizeof(prev), "%s", l);
		n++;
	}
	/* 82 rewritten, 30 removed (one of them, 1924, also rewritten), 1 added */
	cr_assert_eq(n, 82 + 30 - 1 + 1, "diff listed %d changes: %s", n, r.out);
	run_result_dispose(&r);
	free(arch);
	free(acc);
	free(src);
}
