/*
 * Git trees and commits written and parsed by hand, checked against the
 * real git: our trees must hash like `git mktree`'s, our commits must pass
 * `git fsck`, and hostile objects must be refused with AMBER_ECORRUPT.
 */
#include "amber.h"
#include "buf.h"
#include "gitobj.h"
#include "store.h"

#include <criterion/criterion.h>

#include "scratch.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define OK(expr)                                                                     \
	do {                                                                         \
		int rc_ = (expr);                                                    \
		cr_assert_eq(rc_, 0, "%s = %d: %s", #expr, rc_, amber_error_last()); \
	} while (0)

static void setup(void)
{
	scratch_make("gitobj");
}

TestSuite(gitobj, .init = setup, .fini = scratch_remove);

/* Helpers ------------------------------------------------------------------------- */

/* Run a shell command; its stdout (trimmed of the final newline) into out. */
static int run(char *out, size_t outsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int run(char *out, size_t outsz, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	FILE *f;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	cr_assert_lt(vsnprintf(cmd, sizeof(cmd), fmt, ap), (int)sizeof(cmd));
	va_end(ap);
	f = popen(cmd, "r");
	cr_assert_not_null(f, "popen %s", cmd);
	if (out) {
		n = fread(out, 1, outsz - 1, f);
		out[n] = '\0';
		while (n && out[n - 1] == '\n')
			out[--n] = '\0';
	} else {
		char sink[512];

		while (fread(sink, 1, sizeof(sink), f) > 0)
			;
	}
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *repo(void)
{
	static char path[4200];

	snprintf(path, sizeof(path), "%s", at("repo.git"));
	if (access(path, F_OK) != 0)
		cr_assert_eq(run(NULL, 0, "git init -q --bare '%s' 2>&1", path), 0, "git init");
	return path;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

/* `git hash-object -t type` of bytes (written into the repo if `write`). */
static void git_hash(char hex[41], const char *type, const void *data, size_t len, int write)
{
	char out[256];

	write_file(at("obj"), data, len);
	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' hash-object %s -t %s '%s' 2>&1",
			 repo(), write ? "-w" : "", type, at("obj")),
		     0, "git hash-object -t %s: %s", type, out);
	cr_assert_eq(strlen(out), 40, "hash-object said: %s", out);
	memcpy(hex, out, 41);
}

static void fake_oid(uint8_t oid[20], unsigned seed)
{
	for (int i = 0; i < 20; i++)
		oid[i] = (uint8_t)(seed * 31 + (unsigned)i * 7 + 1);
}

static amber_tentry tent(const char *name, uint32_t mode, unsigned seed)
{
	amber_tentry e;

	memset(&e, 0, sizeof(e));
	if (strlen(name) < sizeof(e.name))
		snprintf(e.name, sizeof(e.name), "%s", name);
	else
		e.longname = name;
	e.mode = mode;
	fake_oid(e.oid, seed);
	return e;
}

/* `git mktree --missing` of entries given in any order; returns its id. */
static void git_mktree(char hex[41], const amber_tentry *e, size_t n)
{
	char out[256];
	FILE *f = fopen(at("mktree.in"), "w");

	cr_assert_not_null(f);
	for (size_t i = 0; i < n; i++) {
		char ohex[41];

		amber_oid_tohex(ohex, e[i].oid);
		fprintf(f, "%06o %s %s\t%s\n", e[i].mode,
			e[i].mode == AMBER_GIT_MODE_TREE ? "tree" : "blob", ohex,
			amber_tentry_name(&e[i]));
	}
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' mktree --missing < '%s' 2>&1",
			 repo(), at("mktree.in")),
		     0, "git mktree: %s", out);
	cr_assert_eq(strlen(out), 40, "mktree said: %s", out);
	memcpy(hex, out, 41);
}

static void assert_tree_like_git(amber_tentry *e, size_t n)
{
	amber_tentry *copy = malloc(n * sizeof(*e) + 1);
	amber_buf b = AMBER_BUF_INIT;
	char ours[41], theirs[41];

	cr_assert_not_null(copy);
	memcpy(copy, e, n * sizeof(*e));
	git_mktree(theirs, copy, n);
	OK(amber_tree_build(&b, e, n));
	git_hash(ours, "tree", b.data, b.len, 0);
	cr_assert_str_eq(ours, theirs, "our tree differs from git mktree's");
	amber_buf_dispose(&b);
	free(copy);
}

static int parse_raw(const void *data, size_t len)
{
	amber_tparsed *t = NULL;
	size_t n = 0;
	int rc = amber_tree_parse(&t, &n, data, len, "test tree");

	if (rc == 0)
		free(t);
	return rc;
}

/* Append one raw tree entry "mode name\0oid" (oid of `oidlen` bytes). */
static void raw_entry(amber_buf *b, const char *mode, const char *name, size_t oidlen)
{
	uint8_t oid[20];

	fake_oid(oid, (unsigned)strlen(name));
	cr_assert_eq(amber_buf_put(b, mode, strlen(mode)), 0);
	cr_assert_eq(amber_buf_put(b, " ", 1), 0);
	cr_assert_eq(amber_buf_put(b, name, strlen(name) + 1), 0);
	cr_assert_eq(amber_buf_put(b, oid, oidlen), 0);
}

static void assert_corrupt(amber_buf *b, const char *why)
{
	int rc = parse_raw(b->data ? (const void *)b->data : "", b->len);

	cr_assert_eq(rc, AMBER_ECORRUPT, "%s: got %d", why, rc);
	cr_assert_neq(strstr(amber_error_last(), "test tree"), NULL,
		      "message does not name the object: %s", amber_error_last());
	amber_buf_dispose(b);
}

/* Trees: building ------------------------------------------------------------------------ */

Test(gitobj, tree_sorts_a_directory_name_as_if_it_ended_in_slash)
{
	/* git order: "a.b" < "a/" < "a0"; plain strcmp would put "a" first */
	amber_tentry e[3] = {
		tent("a", AMBER_GIT_MODE_TREE, 1),
		tent("a0", AMBER_GIT_MODE_BLOB, 2),
		tent("a.b", AMBER_GIT_MODE_BLOB, 3),
	};
	assert_tree_like_git(e, 3);
	cr_assert_str_eq(amber_tentry_name(&e[0]), "a.b");
	cr_assert_str_eq(amber_tentry_name(&e[1]), "a");
	cr_assert_str_eq(amber_tentry_name(&e[2]), "a0");
}

Test(gitobj, tree_sorts_a_blob_name_without_slash)
{
	/* the same names with "a" a blob: "a" < "a.b" < "a0" */
	amber_tentry e[3] = {
		tent("a0", AMBER_GIT_MODE_BLOB, 2),
		tent("a.b", AMBER_GIT_MODE_BLOB, 3),
		tent("a", AMBER_GIT_MODE_BLOB, 1),
	};

	assert_tree_like_git(e, 3);
	cr_assert_str_eq(amber_tentry_name(&e[0]), "a");
}

Test(gitobj, generated_trees_hash_like_git_mktree)
{
	static const char *stems[] = {"b", "b-", "b.x", "b0", "bb", "c", "c/", "m", "i",
				      "c00000001", "c00000010", "z"};
	static char longnames[8][40];
	amber_tentry e[40];
	size_t n = 0;
	unsigned x = 7;

	for (size_t i = 0; i < sizeof(stems) / sizeof(stems[0]); i++) {
		if (strchr(stems[i], '/'))
			continue;
		x = x * 1103515245u + 12345u;
		e[n] = tent(stems[i], (x >> 16) & 1 ? AMBER_GIT_MODE_TREE : AMBER_GIT_MODE_BLOB,
			    (unsigned)n);
		n++;
	}
	/* 32-hex tokens, which use longname */
	for (int i = 0; i < 8; i++) {
		for (int j = 0; j < 32; j++) {
			x = x * 1103515245u + 12345u;
			longnames[i][j] = "0123456789abcdef"[(x >> 16) & 15];
		}
		longnames[i][32] = '\0';
		e[n] = tent(longnames[i], i & 1 ? AMBER_GIT_MODE_TREE : AMBER_GIT_MODE_BLOB,
			    100 + (unsigned)i);
		cr_assert_not_null(e[n].longname);
		n++;
	}
	/* prefixes of a token as sibling names, tree and blob */
	e[n++] = tent("0", AMBER_GIT_MODE_TREE, 200);
	e[n++] = tent("0-", AMBER_GIT_MODE_BLOB, 201);
	e[n++] = tent("0.", AMBER_GIT_MODE_BLOB, 202);
	assert_tree_like_git(e, n);
}

Test(gitobj, empty_tree_is_empty)
{
	amber_buf b = AMBER_BUF_INIT;
	char ours[41];

	OK(amber_tree_build(&b, NULL, 0));
	cr_assert_eq(b.len, 0);
	git_hash(ours, "tree", "", 0, 0);
	cr_assert_str_eq(ours, "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
	amber_buf_dispose(&b);
}

/* Trees: parsing ---------------------------------------------------------------------- */

Test(gitobj, tree_parse_round_trips_a_built_tree)
{
	amber_tentry e[5] = {
		tent("m", AMBER_GIT_MODE_BLOB, 1),
		tent("a", AMBER_GIT_MODE_TREE, 2),
		tent("a.b", AMBER_GIT_MODE_BLOB, 3),
		tent("0123456789abcdef0123456789abcdef", AMBER_GIT_MODE_TREE, 4),
		tent("i", AMBER_GIT_MODE_BLOB, 5),
	};
	amber_buf b = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	const amber_tparsed *f;
	size_t n = 0;

	OK(amber_tree_build(&b, e, 5));
	OK(amber_tree_parse(&t, &n, b.data, b.len, "built tree"));
	cr_assert_eq(n, 5);
	for (size_t i = 0; i < n; i++) {
		const char *name = amber_tentry_name(&e[i]);

		cr_assert_eq(t[i].name_len, strlen(name));
		cr_assert_eq(memcmp(t[i].name, name, t[i].name_len), 0, "entry %zu", i);
		cr_assert_eq(t[i].mode, e[i].mode, "entry %zu", i);
		cr_assert_eq(memcmp(t[i].oid, e[i].oid, 20), 0, "entry %zu", i);
	}
	f = amber_tree_find(t, n, "a");
	cr_assert_not_null(f);
	cr_assert_eq(f->mode, AMBER_GIT_MODE_TREE);
	f = amber_tree_find(t, n, "a.b");
	cr_assert_not_null(f);
	cr_assert_eq(f->mode, AMBER_GIT_MODE_BLOB);
	cr_assert_null(amber_tree_find(t, n, "a.")); /* a prefix is not a match */
	cr_assert_null(amber_tree_find(t, n, "mm"));
	cr_assert_null(amber_tree_find(t, n, ""));
	free(t);
	amber_buf_dispose(&b);
}

Test(gitobj, tree_parse_accepts_a_tree_written_by_git)
{
	amber_tentry e[3] = {
		tent("a", AMBER_GIT_MODE_TREE, 1),
		tent("a.b", AMBER_GIT_MODE_BLOB, 2),
		tent("a0", AMBER_GIT_MODE_BLOB, 3),
	};
	char hex[41], raw[512];
	amber_tparsed *t = NULL;
	size_t n = 0, len;
	FILE *f;

	git_mktree(hex, e, 3);
	cr_assert_eq(run(NULL, 0, "git --git-dir='%s' cat-file tree %s > '%s'", repo(), hex,
			 at("raw")), 0);
	f = fopen(at("raw"), "rb");
	cr_assert_not_null(f);
	len = fread(raw, 1, sizeof(raw), f);
	fclose(f);
	OK(amber_tree_parse(&t, &n, (const uint8_t *)raw, len, "git tree"));
	cr_assert_eq(n, 3);
	cr_assert_eq(t[0].name_len, 3);
	cr_assert_eq(memcmp(t[0].name, "a.b", 3), 0);
	cr_assert_eq(t[1].mode, AMBER_GIT_MODE_TREE);
	free(t);
}

Test(gitobj, empty_tree_parses_to_no_entries)
{
	amber_tparsed *t = NULL;
	size_t n = 99;

	OK(amber_tree_parse(&t, &n, (const uint8_t *)"", 0, "empty"));
	cr_assert_eq(n, 0);
	free(t);
}

Test(gitobj, unsorted_tree_is_refused)
{
	amber_buf b = AMBER_BUF_INIT;

	raw_entry(&b, "100644", "b", 20);
	raw_entry(&b, "100644", "a", 20);
	assert_corrupt(&b, "unsorted");
	/* strcmp order is not git order: "a" (tree) must come after "a.b" */
	raw_entry(&b, "40000", "a", 20);
	raw_entry(&b, "100644", "a.b", 20);
	assert_corrupt(&b, "tree sorted without its slash");
}

Test(gitobj, duplicate_name_is_refused)
{
	amber_buf b = AMBER_BUF_INIT;

	raw_entry(&b, "100644", "a", 20);
	raw_entry(&b, "100644", "a", 20);
	assert_corrupt(&b, "duplicate blob");
	raw_entry(&b, "40000", "d", 20);
	raw_entry(&b, "40000", "d", 20);
	assert_corrupt(&b, "duplicate tree");
}

Test(gitobj, same_name_as_blob_and_tree_is_refused)
{
	/* "a" (blob) sorts before "a/" (tree): in order, but one name twice */
	amber_buf b = AMBER_BUF_INIT;

	raw_entry(&b, "100644", "a", 20);
	raw_entry(&b, "40000", "a", 20);
	assert_corrupt(&b, "name both a blob and a tree");
}

Test(gitobj, name_with_slash_is_refused)
{
	amber_buf b = AMBER_BUF_INIT;

	raw_entry(&b, "100644", "a/b", 20);
	assert_corrupt(&b, "slash in name");
	raw_entry(&b, "40000", "x/", 20);
	assert_corrupt(&b, "trailing slash");
}

Test(gitobj, empty_name_is_refused)
{
	amber_buf b = AMBER_BUF_INIT;

	raw_entry(&b, "100644", "", 20);
	assert_corrupt(&b, "empty name");
}

Test(gitobj, overlong_name_is_refused)
{
	amber_buf b = AMBER_BUF_INIT;
	char name[300];

	memset(name, 'n', 256);
	name[256] = '\0';
	raw_entry(&b, "100644", name, 20);
	assert_corrupt(&b, "256-byte name");
	name[255] = '\0';
	raw_entry(&b, "100644", name, 20);
	cr_assert_eq(parse_raw(b.data, b.len), 0, "255-byte name: %s", amber_error_last());
	amber_buf_dispose(&b);
}

Test(gitobj, bad_modes_are_refused)
{
	static const char *modes[] = {"100755", "120000", "160000", "644", "0", "",
				      "4000x", "1006444", "-40000", "10064 "};
	amber_buf b = AMBER_BUF_INIT;

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		raw_entry(&b, modes[i], "a", 20);
		assert_corrupt(&b, modes[i]);
	}
	/* control: the two modes we write */
	raw_entry(&b, "100644", "a", 20);
	raw_entry(&b, "40000", "b", 20);
	cr_assert_eq(parse_raw(b.data, b.len), 0, "%s", amber_error_last());
	amber_buf_dispose(&b);
}

Test(gitobj, truncated_oid_is_refused)
{
	for (size_t len = 0; len < 20; len += 3) {
		amber_buf b = AMBER_BUF_INIT;

		raw_entry(&b, "100644", "a", 20);
		raw_entry(&b, "100644", "b", len);
		assert_corrupt(&b, "short oid");
	}
}

Test(gitobj, every_truncation_of_a_valid_tree_is_refused)
{
	amber_tentry e[3] = {
		tent("a", AMBER_GIT_MODE_TREE, 1),
		tent("bb", AMBER_GIT_MODE_BLOB, 2),
		tent("ccc", AMBER_GIT_MODE_BLOB, 3),
	};
	amber_buf b = AMBER_BUF_INIT;
	size_t ends[4] = {0};

	OK(amber_tree_build(&b, e, 3));
	/* entry boundaries: "40000 a\0"+20, "100644 bb\0"+20, "100644 ccc\0"+20 */
	ends[1] = 8 + 20;
	ends[2] = ends[1] + 10 + 20;
	ends[3] = ends[2] + 11 + 20;
	cr_assert_eq(b.len, ends[3]);
	for (size_t cut = 0; cut <= b.len; cut++) {
		int whole = cut == ends[0] || cut == ends[1] || cut == ends[2] || cut == ends[3];
		uint8_t *copy = malloc(cut + 1);
		int rc;

		memcpy(copy, b.data, cut);
		rc = parse_raw(copy, cut);   /* exact-size copy: ASan sees any overread */
		free(copy);
		if (whole)
			cr_assert_eq(rc, 0, "cut at entry boundary %zu: %s", cut, amber_error_last());
		else
			cr_assert_eq(rc, AMBER_ECORRUPT, "cut at %zu accepted", cut);
	}
	amber_buf_dispose(&b);
}

Test(gitobj, garbage_is_refused)
{
	static const char *junk[] = {
		"hello world",
		"100644",
		"100644 ",
		"100644 a",
		"100644a\0aaaaaaaaaaaaaaaaaaaa",
		" a\0aaaaaaaaaaaaaaaaaaaa",
		"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
	};
	static const size_t lens[] = {11, 6, 7, 8, 28, 23, 24};
	uint8_t rnd[512];
	unsigned x = 99;

	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		uint8_t *copy = malloc(lens[i]);

		memcpy(copy, junk[i], lens[i]);
		cr_assert_eq(parse_raw(copy, lens[i]), AMBER_ECORRUPT, "junk %zu accepted", i);
		free(copy);
	}
	for (int round = 0; round < 200; round++) {
		size_t len = 1 + round * 2;
		uint8_t *copy = malloc(len);

		for (size_t i = 0; i < len; i++) {
			x = x * 1103515245u + 12345u;
			rnd[i] = (uint8_t)(x >> 16);
		}
		memcpy(copy, rnd, len);
		cr_assert_eq(parse_raw(copy, len), AMBER_ECORRUPT, "random bytes %d accepted", round);
		free(copy);
	}
}

Test(gitobj, mode_with_sign_or_leading_whitespace_is_refused)
{
	/* strtoul() accepts these; git's own tree parser (and fsck) does not */
	static const char *modes[] = {"+100644", "+40000", "\t100644", "\n40000"};
	amber_buf b = AMBER_BUF_INIT;

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		raw_entry(&b, modes[i], "a", 20);
		assert_corrupt(&b, modes[i]);
	}
}

/* Commits ------------------------------------------------------------------------------ */

static void write_tree(uint8_t oid[20], char hex[41])
{
	amber_tentry e[1] = {tent("m", AMBER_GIT_MODE_BLOB, 0)};
	amber_buf b = AMBER_BUF_INIT;
	char blob[41];

	git_hash(blob, "blob", "content\n", 8, 1);
	OK(amber_oid_fromhex(e[0].oid, blob));
	OK(amber_tree_build(&b, e, 1));
	git_hash(hex, "tree", b.data, b.len, 1);
	OK(amber_oid_fromhex(oid, hex));
	amber_buf_dispose(&b);
}

static void write_commit(char hex[41], const uint8_t tree[20], const uint8_t *parent,
			 int64_t when, const char *msg)
{
	amber_buf b = AMBER_BUF_INIT;

	OK(amber_commit_build(&b, tree, parent, when, msg));
	git_hash(hex, "commit", b.data, b.len, 1);
	amber_buf_dispose(&b);
}

Test(gitobj, built_commits_pass_git_fsck)
{
	uint8_t tree[20], c1[20];
	char thex[41], h1[41], h2[41], out[4096];

	write_tree(tree, thex);
	write_commit(h1, tree, NULL, 1700000000, "first\n\nAmberfs-Time: 1\n");
	OK(amber_oid_fromhex(c1, h1));
	write_commit(h2, tree, c1, 1700000100, "second\n\nAmberfs-Time: 2\n");
	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' update-ref refs/heads/main %s 2>&1",
			 repo(), h2), 0, "%s", out);
	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' fsck --strict --full --no-dangling 2>&1",
			 repo()), 0, "git fsck failed: %s", out);
	cr_assert_eq(strstr(out, "warning"), NULL, "git fsck warns: %s", out);
	cr_assert_eq(strstr(out, "error"), NULL, "git fsck: %s", out);

	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' cat-file -p %s 2>&1", repo(), h2),
		     0, "%s", out);
	cr_assert_neq(strstr(out, thex), NULL, "cat-file: %s", out);
	cr_assert_neq(strstr(out, h1), NULL, "no parent: %s", out);
	cr_assert_neq(strstr(out, "author amberfs <amberfs@localhost> 1700000100 +0000"), NULL,
		      "cat-file: %s", out);
	cr_assert_neq(strstr(out, "\n\nsecond\n\nAmberfs-Time: 2"), NULL, "cat-file: %s", out);

	cr_assert_eq(run(out, sizeof(out), "git --git-dir='%s' log --format='%%at %%ct %%P %%s' main",
			 repo()), 0);
	char want[256];

	snprintf(want, sizeof(want), "1700000100 1700000100 %s second\n1700000000 1700000000  first",
		 h1);
	cr_assert_str_eq(out, want);
}

Test(gitobj, commit_parse_extracts_tree_parent_time_and_message)
{
	uint8_t tree[20], parent[20];
	amber_buf b = AMBER_BUF_INIT;
	amber_commit c;
	const char *msg = "subject\n\nbody line\nAmberfs-Time: 2023-11-14T22:13:20Z\n";

	fake_oid(tree, 1);
	fake_oid(parent, 2);
	OK(amber_commit_build(&b, tree, parent, 1700000000, msg));
	OK(amber_commit_parse(&c, b.data, b.len, "test commit"));
	cr_assert_eq(memcmp(c.tree, tree, 20), 0);
	cr_assert_eq(c.nparents, 1);
	cr_assert_eq(memcmp(c.parent, parent, 20), 0);
	cr_assert_eq(c.author_time, 1700000000);
	cr_assert_str_eq(c.message, msg);
	amber_commit_dispose(&c);
	amber_buf_dispose(&b);

	/* root commit, negative time */
	OK(amber_commit_build(&b, tree, NULL, -12345, "root"));
	OK(amber_commit_parse(&c, b.data, b.len, "test commit"));
	cr_assert_eq(c.nparents, 0);
	cr_assert_eq(c.author_time, -12345);
	cr_assert_str_eq(c.message, "root");
	amber_commit_dispose(&c);
	amber_commit_dispose(&c);   /* idempotent */
	amber_buf_dispose(&b);
}

Test(gitobj, commit_parse_reads_a_commit_written_by_git)
{
	uint8_t tree[20], c1[20];
	char thex[41], h1[41], h2[41], raw[4096];
	amber_commit c;
	size_t len;
	FILE *f;

	write_tree(tree, thex);
	write_commit(h1, tree, NULL, 1600000000, "base\n");
	OK(amber_oid_fromhex(c1, h1));
	cr_assert_eq(run(h2, sizeof(h2),
			 "GIT_AUTHOR_NAME='A U Thor' GIT_AUTHOR_EMAIL=a@example.org "
			 "GIT_AUTHOR_DATE='1650000000 +0200' GIT_COMMITTER_NAME=C "
			 "GIT_COMMITTER_EMAIL=c@example.org GIT_COMMITTER_DATE='1650000001 -0100' "
			 "git --git-dir='%s' commit-tree %s -p %s -m 'by git' -m 'Amberfs-Time: 7'",
			 repo(), thex, h1), 0);
	cr_assert_eq(run(NULL, 0, "git --git-dir='%s' cat-file commit %s > '%s'", repo(), h2,
			 at("raw")), 0);
	f = fopen(at("raw"), "rb");
	len = fread(raw, 1, sizeof(raw), f);
	fclose(f);
	OK(amber_commit_parse(&c, (const uint8_t *)raw, len, "git commit"));
	cr_assert_eq(memcmp(c.tree, tree, 20), 0);
	cr_assert_eq(c.nparents, 1);
	cr_assert_eq(memcmp(c.parent, c1, 20), 0);
	cr_assert_eq(c.author_time, 1650000000);
	cr_assert_str_eq(c.message, "by git\n\nAmberfs-Time: 7\n");
	amber_commit_dispose(&c);
}

Test(gitobj, commit_with_continuation_header_lines_parses)
{
	const char *text =
		"tree 0123456789abcdef0123456789abcdef01234567\n"
		"author x <y> 42 +0000\n"
		"committer x <y> 42 +0000\n"
		"gpgsig -----BEGIN PGP SIGNATURE-----\n"
		" \n"
		" parent 89abcdef0123456789abcdef0123456789abcdef\n"
		" -----END PGP SIGNATURE-----\n"
		"\n"
		"msg\n";
	amber_commit c;

	OK(amber_commit_parse(&c, (const uint8_t *)text, strlen(text), "signed"));
	cr_assert_eq(c.nparents, 0, "a continuation line was read as a header");
	cr_assert_eq(c.author_time, 42);
	cr_assert_str_eq(c.message, "msg\n");
	amber_commit_dispose(&c);
}

static int parse_commit_text(const char *text, size_t len)
{
	amber_commit c;
	char *copy = malloc(len + 1);
	int rc;

	memcpy(copy, text, len);
	rc = amber_commit_parse(&c, (const uint8_t *)copy, len, "bad commit");
	if (rc == 0)
		amber_commit_dispose(&c);
	free(copy);
	return rc;
}

#define TREE "tree 0123456789abcdef0123456789abcdef01234567\n"
#define PARENT "parent 89abcdef0123456789abcdef0123456789abcdef\n"
#define AUTHOR "author a <b> 5 +0000\ncommitter a <b> 5 +0000\n"

Test(gitobj, malformed_commits_are_refused)
{
	static const char *bad[] = {
		"",
		"\n",
		"\nmessage",
		AUTHOR "\nno tree\n",
		PARENT TREE AUTHOR "\nparent first\n",
		"tree 0123456789abcdef0123456789abcdef0123456\n" AUTHOR "\n39 hex\n",
		"tree 0123456789abcdef0123456789abcdef012345678\n" AUTHOR "\n41 hex\n",
		"tree 0123456789abcdef0123456789abcdef0123456g\n" AUTHOR "\nnot hex\n",
		"tree  0123456789abcdef0123456789abcdef01234567\n" AUTHOR "\ntwo spaces\n",
		"trees 0123456789abcdef0123456789abcdef01234567\n" AUTHOR "\nwrong key\n",
		TREE PARENT PARENT AUTHOR "\nmerge\n",
		TREE "parent 89abcdef\n" AUTHOR "\nshort parent\n",
		TREE "author a b 5 +0000\n\nno angle bracket\n",
		TREE "author a <b> x +0000\n\nno time\n",
		TREE "author a <b>\n\nnothing after the email\n",
		TREE "author a <b> 5 +0000",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(parse_commit_text(bad[i], strlen(bad[i])), AMBER_ECORRUPT,
			     "accepted: \"%s\"", bad[i]);
	/* a NUL anywhere */
	static const char nul[] = TREE AUTHOR "\nmessage\0with nul\n";

	cr_assert_eq(parse_commit_text(nul, sizeof(nul) - 1), AMBER_ECORRUPT);
	static const char nul2[] = TREE "author a <b> 5\0 +0000\n\nm\n";

	cr_assert_eq(parse_commit_text(nul2, sizeof(nul2) - 1), AMBER_ECORRUPT);
	cr_assert_neq(strstr(amber_error_last(), "bad commit"), NULL, "%s", amber_error_last());

	/* control: the same shapes, well formed */
	static const char good[] = TREE PARENT AUTHOR "\nok\n";

	cr_assert_eq(parse_commit_text(good, sizeof(good) - 1), 0, "%s", amber_error_last());
}

Test(gitobj, commit_cut_inside_a_header_line_is_refused)
{
	static const char text[] = TREE PARENT AUTHOR "\nmessage\n";
	size_t hdr_end = strlen(TREE PARENT AUTHOR);

	/* a cut inside a header line (or before the tree line ends) is refused;
	 * git itself accepts headers that end the object at a newline */
	for (size_t cut = 0; cut < hdr_end; cut++)
		if (cut == 0 || text[cut - 1] != '\n')
			cr_assert_eq(parse_commit_text(text, cut), AMBER_ECORRUPT, "cut at %zu", cut);
}

/* Trailers --------------------------------------------------------------------------------- */

Test(gitobj, trailer_is_found_and_copied_to_end_of_line)
{
	const char *msg = "amberfs snapshot x\n\nAmberfs-Time: 2024-01-02T03:04:05.123456789Z\n"
			  "Amberfs-Record: abc\n";
	char *v = amber_trailer_get(msg, "Amberfs-Time");

	cr_assert_not_null(v);
	cr_assert_str_eq(v, "2024-01-02T03:04:05.123456789Z");
	free(v);
	v = amber_trailer_get(msg, "Amberfs-Record");
	cr_assert_not_null(v);
	cr_assert_str_eq(v, "abc");
	free(v);
}

Test(gitobj, trailer_on_last_line_without_newline_is_found)
{
	char *v = amber_trailer_get("s\n\nKey: value", "Key");

	cr_assert_not_null(v);
	cr_assert_str_eq(v, "value");
	free(v);
}

Test(gitobj, absent_trailer_returns_null)
{
	static const char *msgs[] = {
		"",
		"subject only",
		"s\n\nOther: 1\n",
		"s\n\nAmberfs-Timezone: 1\n",     /* longer key with the same prefix */
		"s\n\nAmberfs-Time:1\n",          /* no space */
		"s\n\nAmberfs-Time\n",
		"s\n\n Amberfs-Time: 1\n",        /* not at line start */
		"s\n\nX-Amberfs-Time: 1\n",
		"s\n\nAmberfs-Time:",
	};

	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		char *v = amber_trailer_get(msgs[i], "Amberfs-Time");

		cr_assert_null(v, "found \"%s\" in \"%s\"", v, msgs[i]);
	}
}

Test(gitobj, first_of_repeated_trailers_wins)
{
	char *v = amber_trailer_get("s\n\nK: one\nK: two\n", "K");

	cr_assert_not_null(v);
	cr_assert_str_eq(v, "one");
	free(v);
}

/* Trees: lookups ------------------------------------------------------------------------ */

Test(gitobj, name_as_blob_and_tree_apart_is_refused)
{
	/* in git order ("a" < "a.b" < "a/"), but "a" twice, not side by side */
	amber_buf b = AMBER_BUF_INIT;

	raw_entry(&b, "100644", "a", 20);
	raw_entry(&b, "100644", "a.b", 20);
	raw_entry(&b, "40000", "a", 20);
	assert_corrupt(&b, "a name both a blob and a tree, apart");
}

#define MANY 100000

/* A tree of MANY token-named entries, half trees, and a lookup of each
 * (and of a name that is absent): a linear search makes this quadratic,
 * minutes instead of well under a second. */
Test(gitobj, every_entry_of_a_100k_entry_tree_is_found_quickly, .timeout = 10)
{
	static char names[MANY][33]; /* 32-hex tokens, as in directory trees */
	amber_tentry *e = calloc(MANY, sizeof(*e));
	amber_buf b = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	size_t n = 0;

	cr_assert_not_null(e);
	for (unsigned i = 0; i < MANY; i++) {
		snprintf(names[i], sizeof(names[i]), "%08x%024x", i * 2654435761u, i);
		e[i].longname = names[i];
		e[i].mode = i & 1 ? AMBER_GIT_MODE_TREE : AMBER_GIT_MODE_BLOB;
		fake_oid(e[i].oid, i);
	}
	amber_buf_init(&b, (size_t)16 << 20);
	OK(amber_tree_build(&b, e, MANY));
	OK(amber_tree_parse(&t, &n, b.data, b.len, "big tree"));
	cr_assert_eq(n, MANY);
	for (unsigned i = 0; i < MANY; i++) {
		const amber_tparsed *f = amber_tree_find(t, n, names[i]);
		uint8_t oid[20];

		fake_oid(oid, i);
		cr_assert_not_null(f, "entry %u (%s) not found", i, names[i]);
		cr_assert_eq(memcmp(f->oid, oid, 20), 0, "entry %u has the wrong id", i);
		cr_assert_eq(f->mode, i & 1 ? AMBER_GIT_MODE_TREE : AMBER_GIT_MODE_BLOB);
		names[i][31] = 'x'; /* never a token */
		cr_assert_null(amber_tree_find(t, n, names[i]));
	}
	free(t);
	free(e);
	amber_buf_dispose(&b);
}
