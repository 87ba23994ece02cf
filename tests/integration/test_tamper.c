/*
 * Confidentiality (invariant 3): nothing planted in the source is readable
 * in the archive's objects.  Authenticity (invariant 5): splices made with
 * ordinary git plumbing by someone who has no key are detected, and no
 * spliced data is ever output; a flipped byte in an object is an error,
 * never data, and leaves the other files readable.
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

TestSuite(tamper, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

typedef struct tent {
	char mode[8];
	char type[8];
	char oid[41];
	char name[80];
} tent;

static size_t ls_tree(const char *repo, const char *treeish, tent *out, size_t max)
{
	char *text = git_ok(repo, NULL, "ls-tree", treeish, NULL);
	size_t n = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line && n < max;
	     line = strtok_r(NULL, "\n", &save)) {
		cr_assert(sscanf(line, "%7s %7s %40s\t%79s", out[n].mode, out[n].type, out[n].oid,
				 out[n].name) == 4, "unexpected ls-tree line: %s", line);
		n++;
	}
	free(text);
	return n;
}

static tent *find_ent(tent *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(v[i].name, name))
			return &v[i];
	}
	return NULL;
}

static char *mktree(const char *repo, const tent *v, size_t n)
{
	char *in = pjoin(IT.tmp, "mktree.in");
	FILE *f = fopen(in, "w");
	cr_assert(f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s %s %s\t%s\n", v[i].mode, v[i].type, v[i].oid, v[i].name);
	fclose(f);
	char *oid = git_ok(repo, in, "mktree", NULL);
	free(in);
	return oid;
}

/* The message of a commit, written to a file; returns the file's path. */
static char *message_file(const char *repo, const char *commit)
{
	char *raw = git_ok(repo, NULL, "cat-file", "commit", commit, NULL);
	char *body = strstr(raw, "\n\n");
	cr_assert(body, "commit %s has no message", commit);
	char *path = xasprintf("%s/msg-%s", IT.tmp, commit);
	write_str(path, body + 2);
	cr_assert(strstr(body, "Amberfs-Record:"), "commit %s lacks the record trailer:\n%s",
		  commit, raw);
	free(raw);
	return path;
}

static char *commit_tree(const char *repo, const char *tree, const char *parent,
			 const char *msgfile)
{
	if (parent && *parent)
		return git_ok(repo, NULL, "commit-tree", tree, "-p", parent, "-F", msgfile, NULL);
	return git_ok(repo, NULL, "commit-tree", tree, "-F", msgfile, NULL);
}

static char *parent_of(const char *repo, const char *commit)
{
	char *spec = xasprintf("%s^", commit);
	char *p = git_ok(repo, NULL, "rev-parse", "--verify", "-q", spec, NULL);
	free(spec);
	return p;
}

static void move_main(const char *repo, const char *commit)
{
	free(git_ok(repo, NULL, "update-ref", "refs/heads/main", commit, NULL));
}

/* Assert that an amberfs read command fails with an authentication error
 * and never outputs `forbidden`. */
static void assert_auth_failure(const run_result *r, const char *forbidden, const char *what)
{
	cr_assert_eq(r->status, 1, "%s: expected exit 1 (authentication failure), got %d; "
		     "stdout: %.300s; stderr: %s", what, r->status, r->out, r->err);
	cr_assert(contains_nocase(r->err, "auth"),
		  "%s: the error should say authentication failed: %s", what, r->err);
	assert_one_error_line(r, what);
	if (forbidden) {
		assert_not_contains(r->out, r->out_len, forbidden, what);
		assert_not_contains(r->err, r->err_len, forbidden, what);
	}
}

static void expect_cat_auth_failure(const char *arch, const char *spec, const char *forbidden)
{
	run_result r;
	amber(&r, "cat", arch, spec, NULL);
	char *what = xasprintf("cat %s after a splice", spec);
	assert_auth_failure(&r, forbidden, what);
	free(what);
	run_result_dispose(&r);
}

static void expect_ls_auth_failure(const char *arch, const char *spec, const char *forbidden)
{
	run_result r;
	amber(&r, "ls", arch, spec, NULL);
	char *what = xasprintf("ls %s after a splice", spec);
	assert_auth_failure(&r, forbidden, what);
	free(what);
	run_result_dispose(&r);
}

static void expect_restore_auth_failure(const char *arch, const char *spec,
					const char *forbidden, const char *forbidden_path)
{
	char *dest = xasprintf("%s/restore-%d", IT.tmp, rand());
	run_result r;
	amber(&r, "restore", arch, spec, dest, NULL);
	char *what = xasprintf("restore %s after a splice", spec);
	assert_auth_failure(&r, forbidden, what);
	if (forbidden)
		cr_assert(!tree_contains_bytes(dest, forbidden, strlen(forbidden)),
			  "%s wrote the spliced data into the destination", what);
	if (forbidden_path) {
		char *p = pjoin(dest, forbidden_path);
		cr_assert(access(p, F_OK) != 0, "%s created %s", what, forbidden_path);
		free(p);
	}
	free(what);
	run_result_dispose(&r);
	rm_rf(dest);
}

static void expect_cat(const char *arch, const char *spec, const char *want)
{
	run_result r;
	amber(&r, "cat", arch, spec, NULL);
	char *what = xasprintf("cat %s", spec);
	assert_ok(&r, what);
	cr_assert_str_eq(r.out, want, "%s: wrong content", what);
	free(what);
	run_result_dispose(&r);
}

/* ------------------------------------------------------------------ */

static void plant(const char *src)
{
	mkdir_p(src, 0755);
	for (int n = 0; n < 4; n++) {
		char *name = xasprintf("%s/SECRETNAME_%d", src, n);
		size_t len = (size_t)(n + 1) * (150u << 10);
		char *body = malloc(len);
		char *line = xasprintf("SECRETCONTENT_%d compressible line\n", n);
		size_t ll = strlen(line);
		for (size_t off = 0; off < len; off += ll)
			memcpy(body + off, line, off + ll <= len ? ll : len - off);
		write_file(name, body, len, 0644);
		free(body);
		free(line);
		free(name);
	}
	/* Incompressible, multi-chunk, with the marker embedded here and there. */
	char *rnd = pjoin(src, "SECRETNAME_random");
	size_t len = 5u << 20;
	char *body = malloc(len);
	uint64_t s = 3;
	fill_random(body, len, &s);
	for (size_t off = 1000; off + 32 < len; off += 300000)
		memcpy(body + off, "SECRETCONTENT_R", 15);
	write_file(rnd, body, len, 0644);
	free(body);
	char *small = pjoin(src, "SECRETNAME_small");
	write_str(small, "SECRETCONTENT_S\n");
	cr_assert(setxattr(small, "user.SECRETXATTRNAME", "SECRETXATTRVALUE", 16, 0) == 0,
		  "setxattr: %s", strerror(errno));
	char *dir = pjoin(src, "SECRETDIR_0");
	mkdir_p(dir, 0755);
	cr_assert(setxattr(dir, "user.SECRETXATTRDIR", "SECRETXATTRDIRVALUE", 19, 0) == 0);
	char *inner = pjoin(dir, "SECRETNAME_inner");
	write_str(inner, "SECRETCONTENT_inner\n");
	char *link = pjoin(src, "SECRETNAME_link");
	cr_assert(symlink("SECRETTARGET_0/with/a/path", link) == 0);
}

Test(tamper, archive_objects_reveal_no_names_contents_xattrs_or_targets)
{
	char *src = pjoin(IT.tmp, "SECRETSRCDIR");
	plant(src);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	const char *extra[] = { "--message", "SECRETMESSAGE in the snapshot message", NULL };
	amber_snapshot_ok(id, arch, src, extra);
	write_str(pjoin(src, "SECRETNAME_small"), "SECRETCONTENT_S2 changed\n");
	amber_snapshot_ok(id, arch, src, extra);

	char *dump = pjoin(IT.tmp, "objects.dump");
	char *gd = xasprintf("--git-dir=%s", arch);
	run_opts o = { .stdout_path = dump };
	run_result r;
	run_cmd(&r, &o, "git", gd, "cat-file", "--batch-all-objects", "--batch", NULL);
	assert_ok(&r, "git cat-file --batch-all-objects --batch");
	run_result_dispose(&r);
	size_t dlen = 0;
	char *all = read_file(dump, &dlen);
	cr_assert(dlen > (5u << 20), "the object dump is suspiciously small (%zu bytes)", dlen);
	static const char *markers[] = { "SECRET", "SECRETNAME", "SECRETCONTENT", "SECRETXATTR",
					 "SECRETTARGET", "SECRETDIR", "SECRETMESSAGE", "SECRETSRCDIR",
					 "compressible line", "with/a/path" };
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		cr_assert(!memmem(all, dlen, markers[i], strlen(markers[i])),
			  "git cat-file output contains the plaintext '%s'", markers[i]);
	free(all);
	unlink(dump);

	/* Nor anything else in the archive directory: packs, refs, config, logs. */
	cr_assert(!tree_contains_bytes(arch, "SECRET", 6),
		  "some file in the archive holds plaintext 'SECRET'");

	/* And it does all come back with the key. */
	char *dest = pjoin(IT.tmp, "restored");
	amber(&r, "restore", arch, "latest", dest, NULL);
	assert_ok(&r, "restore");
	run_result_dispose(&r);
	assert_trees_equal(src, dest, TD_SKIP_ROOT_META, "restore of the planted tree");
}

/* ------------------------------------------------------------------ */
/* Splices                                                             */

typedef struct two {
	char *arch, *src;
	char s1[41], s2[41];
} two;

static void setup_versions(two *t)
{
	t->src = pjoin(IT.tmp, "src");
	mkdir_p(t->src, 0755);
	char *f = pjoin(t->src, "f"), *g = pjoin(t->src, "g");
	write_str(f, "version one: OLDSPLICEDATA\n");
	write_str(g, "unchanged file\n");
	t->arch = pjoin(IT.tmp, "archive");
	amber_init_archive(t->arch, 0);
	amber_snapshot_ok(t->s1, t->arch, t->src, NULL);
	write_str(f, "version two: current\n");
	amber_snapshot_ok(t->s2, t->arch, t->src, NULL);
	free(f);
	free(g);
}

/* The one token (not "m") whose entry differs between two root trees. */
static const char *changed_token(tent *a, size_t na, tent *b, size_t nb)
{
	const char *tok = NULL;
	for (size_t i = 0; i < nb; i++) {
		if (!strcmp(b[i].name, "m"))
			continue;
		tent *o = find_ent(a, na, b[i].name);
		if (!o || strcmp(o->oid, b[i].oid) != 0) {
			cr_assert(tok == NULL, "more than one root entry changed");
			tok = b[i].name;
		}
	}
	cr_assert(tok, "no changed root entry found");
	return tok;
}

Test(tamper, older_blob_spliced_into_newer_snapshot_is_rejected)
{
	two t;
	setup_versions(&t);
	tent a[16], b[16];
	size_t na = ls_tree(t.arch, t.s1, a, 16), nb = ls_tree(t.arch, t.s2, b, 16);
	cr_assert(find_ent(b, nb, "m"), "the root tree should hold a manifest entry 'm'");
	const char *tok = changed_token(a, na, b, nb);
	cr_assert_eq(strlen(tok), 32, "entry names should be 32-hex tokens: %s", tok);
	tent *newer = find_ent(b, nb, tok);
	snprintf(newer->oid, sizeof newer->oid, "%s", find_ent(a, na, tok)->oid);
	char *tree = mktree(t.arch, b, nb);
	char *msg = message_file(t.arch, t.s2);
	char *parent = parent_of(t.arch, t.s2);
	cr_assert_str_eq(parent, t.s1);
	char *forged = commit_tree(t.arch, tree, parent, msg);
	move_main(t.arch, forged);

	expect_cat_auth_failure(t.arch, "latest:f", "OLDSPLICEDATA");
	char *spec = xasprintf("%s:f", forged);
	expect_cat_auth_failure(t.arch, spec, "OLDSPLICEDATA");
	expect_ls_auth_failure(t.arch, "latest", NULL);
	expect_restore_auth_failure(t.arch, "latest", "OLDSPLICEDATA", NULL);
	/* The genuine snapshots still read. */
	char *s1f = xasprintf("%s:f", t.s1), *s2f = xasprintf("%s:f", t.s2);
	expect_cat(t.arch, s1f, "version one: OLDSPLICEDATA\n");
	expect_cat(t.arch, s2f, "version two: current\n");
	assert_fsck(t.arch);
}

Test(tamper, directory_tree_moved_under_a_sibling_token_is_rejected)
{
	char *src = pjoin(IT.tmp, "src");
	char *da = pjoin(src, "A"), *db = pjoin(src, "B");
	mkdir_p(da, 0755);
	write_str(pjoin(da, "a_only.txt"), "AAAA-SPLICED-CONTENT\n");
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char s1[41], s2[41];
	amber_snapshot_ok(s1, arch, src, NULL);
	mkdir_p(db, 0755);
	write_str(pjoin(db, "b_only.txt"), "BBBB\n");
	amber_snapshot_ok(s2, arch, src, NULL);

	tent a[16], b[16];
	size_t na = ls_tree(arch, s1, a, 16), nb = ls_tree(arch, s2, b, 16);
	cr_assert_eq(na, 2, "snapshot 1's root should hold 'm' and A's token");
	const char *tok_a = strcmp(a[0].name, "m") ? a[0].name : a[1].name;
	tent *ea = find_ent(b, nb, tok_a);
	cr_assert(ea && !strcmp(ea->type, "tree"), "A keeps its token and is a tree");
	const char *tok_b = NULL;
	for (size_t i = 0; i < nb; i++) {
		if (strcmp(b[i].name, "m") && strcmp(b[i].name, tok_a))
			tok_b = b[i].name;
	}
	cr_assert(tok_b, "B's token not found");
	tent *eb = find_ent(b, nb, tok_b);
	snprintf(eb->oid, sizeof eb->oid, "%s", ea->oid);
	char *tree = mktree(arch, b, nb);
	char *msg = message_file(arch, s2);
	char *forged = commit_tree(arch, tree, s1, msg);
	move_main(arch, forged);

	expect_ls_auth_failure(arch, "latest:B", "a_only");
	expect_cat_auth_failure(arch, "latest:B/a_only.txt", "AAAA");
	expect_restore_auth_failure(arch, "latest", NULL, "B/a_only.txt");
	char *spec = xasprintf("%s:B", s2);
	run_result r;
	amber(&r, "ls", arch, spec, NULL);
	assert_ok(&r, "ls of the genuine snapshot");
	cr_assert(strstr(r.out, "b_only.txt") && !strstr(r.out, "a_only"), "genuine B:\n%s", r.out);
	run_result_dispose(&r);
	assert_fsck(arch);
}

/* Replace the first line starting with `key ` in a raw commit; key NULL-free. */
static char *raw_commit_with(const char *arch, const char *commit, const char *key,
			     const char *value)
{
	char *raw = git_ok(arch, NULL, "cat-file", "commit", commit, NULL);
	char *pat = xasprintf("%s ", key);
	char *line = strncmp(raw, pat, strlen(pat)) == 0 ? raw : NULL;
	if (!line) {
		char *nlpat = xasprintf("\n%s ", key);
		line = strstr(raw, nlpat);
		cr_assert(line, "commit %s has no '%s' header", commit, key);
		line++;
		free(nlpat);
	}
	char *eol = strchr(line, '\n');
	*line = '\0';
	/* git_ok() cut the message's final newline; put it back. */
	char *text = value ? xasprintf("%s%s %s%s\n", raw, key, value, eol)
			   : xasprintf("%s%s\n", raw, eol + 1);
	char *path = xasprintf("%s/raw-%d", IT.tmp, rand());
	write_str(path, text);
	char *oid = git_ok(arch, NULL, "hash-object", "-t", "commit", "-w", path, NULL);
	free(raw);
	free(pat);
	free(text);
	free(path);
	return oid;
}

Test(tamper, new_commit_pointing_at_an_old_root_is_rejected)
{
	two t;
	setup_versions(&t);
	char *tree1 = git_ok(t.arch, NULL, "rev-parse", xasprintf("%s^{tree}", t.s1), NULL);
	char *msg1 = message_file(t.arch, t.s1), *msg2 = message_file(t.arch, t.s2);
	struct {
		const char *what;
		char *commit;
	} forged[] = {
		{ "old root, parent = s2, message of s2", commit_tree(t.arch, tree1, t.s2, msg2) },
		{ "old root, parent = s2, message of s1", commit_tree(t.arch, tree1, t.s2, msg1) },
		{ "old root, parent of s2, message of s2", commit_tree(t.arch, tree1, t.s1, msg2) },
		{ "s2's raw commit with the tree line replaced",
		  raw_commit_with(t.arch, t.s2, "tree", tree1) },
		{ "s2's raw commit with the parent line dropped",
		  raw_commit_with(t.arch, t.s2, "parent", NULL) },
	};
	for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
		cr_log_info("splice: %s -> %s", forged[i].what, forged[i].commit);
		move_main(t.arch, forged[i].commit);
		expect_ls_auth_failure(t.arch, "latest", NULL);
		if (i < 4)
			expect_cat_auth_failure(t.arch, "latest:f", "OLDSPLICEDATA");
		else
			expect_cat_auth_failure(t.arch, "latest:f", NULL);
		char *spec = xasprintf("%s:f", forged[i].commit);
		expect_cat_auth_failure(t.arch, spec, i < 4 ? "OLDSPLICEDATA" : NULL);
		free(spec);
	}
	move_main(t.arch, t.s2);
	expect_cat(t.arch, "latest:f", "version two: current\n");
	assert_fsck(t.arch);
}

/* ------------------------------------------------------------------ */
/* A flipped byte inside an object                                     */

/* Flip one byte in the middle of object `oid`'s stored data. */
static void flip_object_byte(const char *arch, const char *oid)
{
	char *loose = xasprintf("%s/objects/%.2s/%s", arch, oid, oid + 2);
	char *file = NULL;
	long long off = -1;
	struct stat st;
	if (stat(loose, &st) == 0) {
		file = loose;
		off = st.st_size / 2;
	} else {
		char *packdir = pjoin(arch, "objects/pack");
		char *list = NULL;
		run_result r;
		run_cmd(&r, NULL, "find", packdir, "-name", "*.idx", NULL);
		assert_ok(&r, "find pack indexes");
		list = r.out;
		char *save = NULL;
		for (char *idx = strtok_r(list, "\n", &save); idx && off < 0;
		     idx = strtok_r(NULL, "\n", &save)) {
			run_result v;
			run_cmd(&v, NULL, "git", "verify-pack", "-v", idx, NULL);
			assert_ok(&v, "git verify-pack -v");
			char *hit = strstr(v.out, oid);
			if (hit) {
				char type[16];
				long long size, psize, poff;
				cr_assert(sscanf(hit + 40, " %15s %lld %lld %lld", type, &size, &psize,
						 &poff) == 4, "cannot parse verify-pack line: %.120s", hit);
				off = poff + psize / 2;
				file = xasprintf("%.*s.pack", (int)(strlen(idx) - 4), idx);
			}
			run_result_dispose(&v);
		}
		free(r.err);
	}
	cr_assert(off >= 0, "object %s not found in the archive", oid);
	int fd = open(file, O_RDWR);
	cr_assert(fd >= 0, "open %s: %s", file, strerror(errno));
	unsigned char c;
	cr_assert(pread(fd, &c, 1, off) == 1);
	c ^= 0x20;
	cr_assert(pwrite(fd, &c, 1, off) == 1);
	close(fd);
	cr_log_info("flipped byte %lld of %s (object %s)", off, file, oid);
}

Test(tamper, flipped_byte_in_a_chunk_fails_that_file_only)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	char *bigp = pjoin(src, "big");
	write_random_file(bigp, 5u << 20, 1234, 0);
	write_str(pjoin(src, "small.txt"), "small file content\n");
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);

	tent root[8], chunks[64];
	size_t nr = ls_tree(arch, id, root, 8);
	tent *bigt = NULL;
	for (size_t i = 0; i < nr; i++) {
		if (!strcmp(root[i].type, "tree"))
			bigt = &root[i];
	}
	cr_assert(bigt, "the multi-chunk file should be a tree in the root tree");
	size_t nc = ls_tree(arch, bigt->oid, chunks, 64);
	cr_assert(find_ent(chunks, nc, "i"), "a chunked file's tree holds an index 'i'");
	tent *c1 = find_ent(chunks, nc, "c00000001");
	cr_assert(c1 && find_ent(chunks, nc, "c00000002"),
		  "a 5 MiB file with 2 MiB max chunks has at least 3 chunks");
	flip_object_byte(arch, c1->oid);

	char *out = pjoin(IT.tmp, "cat.out");
	run_opts o = { .stdout_path = out };
	run_result r;
	amber_o(&r, &o, "cat", arch, "latest:big", NULL);
	cr_assert_eq(r.status, 1, "cat of a file with a corrupt chunk should fail, got %d: %s",
		     r.status, r.err);
	cr_assert(r.err_len > 9 && !strncmp(r.err, "amberfs: ", 9) &&
			  strchr(r.err, '\n') == r.err + r.err_len - 1,
		  "one-line error expected: %s", r.err);
	run_result_dispose(&r);
	size_t got_len = 0, orig_len = 0;
	char *got = read_file(out, &got_len), *orig = read_file(bigp, &orig_len);
	cr_assert(got_len < orig_len, "cat output the whole file despite the corrupt chunk");
	cr_assert(memcmp(got, orig, got_len) == 0,
		  "cat output bytes that are not the file's (corrupt data leaked)");

	expect_cat(arch, "latest:small.txt", "small file content\n");
	amber(&r, "ls", arch, "latest", NULL);
	assert_ok(&r, "ls after a corrupt chunk");
	run_result_dispose(&r);
}
