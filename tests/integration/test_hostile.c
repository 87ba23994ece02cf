/*
 * Hand-made hostile archives, read by the real amberfs binary and a real
 * mount.  A plain archive authenticates nothing, so anyone who can write it
 * can forge manifests, indexes and records that are each well-formed; the
 * reader must still never return bytes that are not the file's, never
 * crash, and never serve what it checked for one link under another.
 *
 * The forger here speaks the format through libamber's encoders (the format
 * is public) and writes objects with `git hash-object -w`, as an attacker
 * with write access would.
 */
#include "forge.h"
#include "helpers.h"

#include "amber.h"
#include "buf.h"
#include "codec.h"
#include "gitobj.h"
#include "keys.h"
#include "manifest.h"
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define BIG_SIZE ((size_t)3 << 20)
#define READ_LIMIT (BIG_SIZE + ((size_t)1 << 20))

TestSuite(hostile, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

/*
 * Read path through the mount; *err gets the errno that stopped it (0 at
 * EOF or after BIG_SIZE + 1 MiB).  Returns the bytes read before that
 * (malloc'd), *len their count.
 */
static char *read_until_error(const char *path, size_t *len, int *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	size_t cap = 1 << 20, n = 0;
	char *buf = malloc(cap);
	*err = 0;
	for (;;) {
		if (n + 65536 > cap)
			buf = realloc(buf, cap *= 2);
		ssize_t k = read(fd, buf + n, 65536);
		if (k < 0) {
			*err = errno;
			break;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > READ_LIMIT)
			break;
	}
	close(fd);
	*len = n;
	return buf;
}

/* ------------------------------------------------------------------ */
/* The forger                                                          */

/* stdout of `git --git-dir=arch ARGS` as bytes (binary-safe). */
char *git_bytes(const char *arch, size_t *len, const char *a0, const char *a1,
		       const char *a2)
{
	char *out = xasprintf("%s/git-out-%d", IT.tmp, rand());
	char *gd = xasprintf("--git-dir=%s", arch);
	run_opts o = { .stdout_path = out };
	run_result r;
	run_cmd(&r, &o, "git", gd, a0, a1, a2, NULL);
	assert_ok(&r, "git cat-file");
	run_result_dispose(&r);
	char *data = read_file(out, len);
	unlink(out);
	free(out);
	free(gd);
	return data;
}

/* Write an object with git; returns its id. */
void put_obj(uint8_t oid[20], const char *arch, const char *type, const void *data,
		    size_t len)
{
	char *in = xasprintf("%s/obj-%d", IT.tmp, rand());
	write_file(in, data, len, 0644);
	char *hex = git_ok(arch, NULL, "hash-object", "-t", type, "-w", in, NULL);
	cr_assert_eq(amber_oid_fromhex(oid, hex), 0, "hash-object printed %s", hex);
	unlink(in);
	free(in);
	free(hex);
}

/* ------------------------------------------------------------------ */
/* Checks                                                              */

static void move_main(const char *arch, const char *commit)
{
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", commit, NULL));
}

/* A plain archive of src with one snapshot on main; returns the archive. */
static char *plain_archive(const char *src, char id[41])
{
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 1);
	amber_snapshot_ok(id, arch, src, NULL);
	return arch;
}

/* `amberfs restore` must fail naming `bad`; whatever it wrote of `bad` is at
 * most `max` bytes and a prefix of `good` (never bytes from elsewhere). */
static void expect_restore_refused(const char *arch, const char *bad, const char *good,
				   size_t max)
{
	char *dest = pjoin(IT.tmp, "restored");
	run_result r;
	amber(&r, "restore", arch, "latest", dest, NULL);
	cr_assert_neq(r.status, 0, "restore of a hostile archive succeeded");
	cr_assert(r.status < 128, "restore was killed by signal %d: %s", r.status - 128, r.err);
	cr_assert(strstr(r.err, bad), "restore's error should name '%s': %s", bad, r.err);
	run_result_dispose(&r);
	char *p = pjoin(dest, bad);
	struct stat st;
	if (stat(p, &st) == 0) {
		size_t len = 0;
		char *got = read_file(p, &len);
		cr_assert(len <= max && memcmp(got, good, len) == 0,
			  "restore wrote %zu bytes of %s that are not the file's", len, bad);
		free(got);
	}
	free(p);
	rm_rf(dest);
	free(dest);
}

static void expect_verify_reports(const char *arch, const char *bad)
{
	run_result r;
	amber(&r, "verify", arch, "--read-data", NULL);
	cr_assert_neq(r.status, 0, "verify --read-data passed a hostile archive: %s%s", r.out,
		      r.err);
	cr_assert(r.status < 128, "verify was killed by signal %d", r.status - 128);
	cr_assert(strstr(r.out, bad) || strstr(r.err, bad),
		  "verify should name '%s':\n%s%s", bad, r.out, r.err);
	run_result_dispose(&r);
}

/* ------------------------------------------------------------------ */
/* One chunk index under two file sizes                                */

/* An archive whose root has "a" (multi-chunk) and "b", a copy of a's entry
 * that declares `extra` more bytes.  *orig receives a's bytes. */
static char *shared_index_archive(char **orig, uint64_t extra)
{
	char *src = pjoin(IT.tmp, "src"), id[41];
	mkdir_p(src, 0755);
	char *a = pjoin(src, "a");
	write_random_file(a, BIG_SIZE, 77, 0);
	*orig = read_file(a, NULL);
	char *arch = plain_archive(src, id);
	forge f;
	forge_open(&f, arch, id);
	cr_assert_eq(forge_find(&f, "a")->content, AMBER_C_CHUNKED, "a should be multi-chunk");
	forge_copy(&f, "a", "b")->size += extra;
	char *forged = forge_commit(&f);
	move_main(arch, forged);
	forge_dispose(&f);
	free(forged);
	free(a);
	free(src);
	return arch;
}

Test(hostile, larger_file_sharing_a_chunk_index_is_refused_by_cat_restore_and_verify)
{
	char *orig = NULL;
	char *arch = shared_index_archive(&orig, 65536);
	run_result r;

	amber(&r, "cat", arch, "latest:a", NULL);
	assert_ok(&r, "cat latest:a");
	cr_assert(r.out_len == BIG_SIZE && memcmp(r.out, orig, BIG_SIZE) == 0);
	run_result_dispose(&r);
	amber(&r, "cat", arch, "latest:b", NULL);
	cr_assert_eq(r.status, 1, "cat latest:b: exit %d: %s", r.status, r.err);
	cr_assert(r.out_len <= BIG_SIZE && memcmp(r.out, orig, r.out_len) == 0,
		  "cat latest:b output %zu bytes that are not the file's", r.out_len);
	run_result_dispose(&r);
	expect_restore_refused(arch, "b", orig, BIG_SIZE);
	expect_verify_reports(arch, "b");
	free(orig);
}

/* Read a, then b, through the mount: b is EIO, never extra bytes. */
static void mount_reads_b_as_eio(const char *mnt, const char *orig)
{
	char *pa = xasprintf("%s/latest/a", mnt), *pb = xasprintf("%s/latest/b", mnt);
	size_t len = 0;
	int err = 0;
	char *got = read_until_error(pa, &len, &err);
	cr_assert(err == 0 && len == BIG_SIZE && memcmp(got, orig, len) == 0, "a reads back");
	free(got);
	got = read_until_error(pb, &len, &err);
	cr_assert_eq(err, EIO, "reading b should end in EIO, got %s after %zu bytes",
		     strerror(err), len);
	cr_assert(len <= BIG_SIZE && memcmp(got, orig, len) == 0,
		  "the mount returned %zu bytes of b that are not the file's", len);
	free(got);
	free(pa);
	free(pb);
}

Test(hostile, larger_file_sharing_a_chunk_index_is_eio_through_the_mount)
{
	char *orig = NULL;
	char *arch = shared_index_archive(&orig, (uint64_t)1 << 36);
	const char *mnt = fg_mount(arch);

	mount_reads_b_as_eio(mnt, orig);
	char *pb = xasprintf("%s/latest/b", mnt);
	int fd = open(pb, O_RDONLY);
	char buf[4096];
	cr_assert(fd >= 0);
	errno = 0;
	cr_assert_eq(pread(fd, buf, sizeof(buf), (off_t)BIG_SIZE + 4096), -1,
		     "a read past a's bytes in b returned data");
	cr_assert_eq(errno, EIO);
	errno = 0;
	cr_assert_eq(pread(fd, buf, sizeof(buf), ((off_t)1 << 36) - 4096), -1,
		     "a read near 2^36 in b returned data");
	cr_assert_eq(errno, EIO);
	close(fd);
	cr_assert(fg_alive(), "the daemon died");
	mount_reads_b_as_eio(mnt, orig);
	free(pb);
	free(orig);
}

/* ------------------------------------------------------------------ */
/* One chunk under two macs                                            */

#define GOOD_TEXT "the one good chunk of a_good\n"

static char *other_mac_archive(void)
{
	char *src = pjoin(IT.tmp, "src"), id[41];
	mkdir_p(src, 0755);
	char *a = pjoin(src, "a_good");
	write_str(a, GOOD_TEXT);
	char *arch = plain_archive(src, id);
	forge f;
	forge_open(&f, arch, id);
	cr_assert_eq(forge_find(&f, "a_good")->content, AMBER_C_BLOB);
	forge_copy(&f, "a_good", "b_badmac")->link.mac[0] ^= 1;
	char *forged = forge_commit(&f);
	move_main(arch, forged);
	forge_dispose(&f);
	free(forged);
	free(a);
	free(src);
	return arch;
}

Test(hostile, chunk_under_another_mac_is_not_served_from_the_cache)
{
	char *arch = other_mac_archive();

	expect_restore_refused(arch, "b_badmac", "", 0);
	expect_verify_reports(arch, "b_badmac");

	const char *mnt = fg_mount(arch);
	char *pa = xasprintf("%s/latest/a_good", mnt), *pb = xasprintf("%s/latest/b_badmac", mnt);
	size_t len = 0;
	int err = 0;
	char *got = read_until_error(pa, &len, &err);
	cr_assert(err == 0 && len == strlen(GOOD_TEXT) && !memcmp(got, GOOD_TEXT, len));
	free(got);
	got = read_until_error(pb, &len, &err);
	cr_assert_eq(err, EIO, "b_badmac should be EIO, got %s with %zu bytes", strerror(err),
		     len);
	cr_assert_eq(len, 0);
	free(got);
	cr_assert(fg_alive());
	free(pa);
	free(pb);
}

/* A chunk that fails to decode (its parent names another mac) goes through
 * verify's decoding threads: the same report with one thread and four. */
Test(hostile, chunk_under_another_mac_is_reported_alike_by_one_and_four_threads)
{
	char *arch = other_mac_archive();
	char *out[2];
	const char *threads[2] = {"1", "4"};

	for (int i = 0; i < 2; i++) {
		run_result r;
		amber(&r, "verify", arch, "--read-data", "--threads", threads[i], NULL);
		cr_assert_eq(r.status, 1, "verify --threads %s: exit %d: %s%s", threads[i], r.status,
			     r.out, r.err);
		char *summary = strstr(r.out, "verify: 1 problem;");
		cr_assert(summary, "one problem, then the summary: %s", r.out);
		out[i] = xasprintf("%.*s", (int)(summary - r.out), r.out);
		run_result_dispose(&r);
	}
	cr_assert_str_eq(out[0], out[1], "the same report with 1 and 4 threads");
	cr_assert(strstr(out[0], "authentication: file data fails: ") &&
		  strstr(out[0], "; path /b_badmac\n"), "names the file: %s", out[0]);
	cr_assert(!strstr(out[0], "a_good"), "the good file is not reported: %s", out[0]);
	free(out[0]);
	free(out[1]);
}

/* ------------------------------------------------------------------ */
/* A snapshot served under another identity                            */

/* cat/ls/restore of spec must all fail naming `id`, never printing `secret`. */
static void expect_cli_refused(const char *arch, const char *spec, const char *id,
			       const char *secret)
{
	static const char *const cmds[] = { "cat", "ls", "restore" };
	for (size_t i = 0; i < 3; i++) {
		char *arg = xasprintf(i == 0 ? "%s:f" : "%s", spec);
		char *dest = pjoin(IT.tmp, "restored");
		run_result r;
		if (i == 2)
			amber(&r, cmds[i], arch, arg, dest, NULL);
		else
			amber(&r, cmds[i], arch, arg, NULL);
		cr_assert_eq(r.status, 1, "%s %s: exit %d (stdout %s): %s", cmds[i], arg,
			     r.status, r.out, r.err);
		assert_one_error_line(&r, cmds[i]);
		cr_assert(strstr(r.err, id), "%s %s: the error should name snapshot %s: %s",
			  cmds[i], arg, id, r.err);
		assert_not_contains(r.out, r.out_len, secret, cmds[i]);
		cr_assert(!tree_contains_bytes(dest, secret, strlen(secret)),
			  "restore %s wrote the other snapshot's data", arg);
		run_result_dispose(&r);
		rm_rf(dest);
		free(dest);
		free(arg);
	}
}

/* Store `len` bytes as a loose commit object under id `hex`, whatever
 * they hash to (as an attacker with write access can). */
static void put_loose_as(const char *arch, const char *hex, const char *body, size_t len)
{
	char *head = xasprintf("commit %zu", len);
	size_t hl = strlen(head) + 1, rawlen = hl + len;
	char *raw = malloc(rawlen);
	memcpy(raw, head, hl);
	memcpy(raw + hl, body, len);
	uLongf zlen = compressBound(rawlen);
	Bytef *z = malloc(zlen);
	cr_assert_eq(compress2(z, &zlen, (Bytef *)raw, rawlen, 1), Z_OK);
	char *dir = xasprintf("%s/objects/%.2s", arch, hex);
	char *path = xasprintf("%s/%s", dir, hex + 2);
	mkdir_p(dir, 0755);
	write_file(path, z, zlen, 0444);
	free(path);
	free(dir);
	free(z);
	free(raw);
	free(head);
}

/* Two snapshots of a one-file tree: s1 holds `one`, s2 holds `two`. */
static char *two_snapshots(char s1[41], const char *one, char s2[41], const char *two,
			   const char *const *extra2)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	char *f = pjoin(src, "f");
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 0);
	write_str(f, one);
	amber_snapshot_ok(s1, arch, src, NULL);
	write_str(f, two);
	amber_snapshot_ok(s2, arch, src, extra2);
	free(f);
	free(src);
	return arch;
}

/* The mount must refuse path with EIO (lookup or read). */
static void expect_mount_eio(const char *path)
{
	size_t len = 0;
	int err = 0;
	struct stat st;
	if (stat(path, &st) < 0) {
		cr_assert_eq(errno, EIO, "stat %s: %s (want EIO)", path, strerror(errno));
		return;
	}
	free(read_until_error(path, &len, &err));
	cr_assert_eq(err, EIO, "reading %s: %s after %zu bytes (want EIO)", path, strerror(err),
		     len);
}

static void expect_mount_reads(const char *path, const char *want)
{
	size_t len = 0;
	int err = 0;
	char *got = read_until_error(path, &len, &err);
	cr_assert(err == 0 && len == strlen(want) && memcmp(got, want, len) == 0,
		  "%s should read back (%s)", path, strerror(err));
	free(got);
}

#define FAKE_ID "0123456789abcdef0123456789abcdef01234567"

Test(hostile, genuine_commit_stored_under_another_id_is_refused)
{
	char s1[41], s2[41];
	char *arch = two_snapshots(s1, "OLD-SNAPSHOT-DATA\n", s2, "current data\n", NULL);
	size_t len = 0;
	char *body = git_bytes(arch, &len, "cat-file", "commit", s1);
	put_loose_as(arch, FAKE_ID, body, len);
	char *loose = xasprintf("%s/objects/01/%s", arch, FAKE_ID + 2);
	cr_assert(access(loose, F_OK) == 0);

	expect_cli_refused(arch, FAKE_ID, FAKE_ID, "OLD-SNAPSHOT-DATA");
	char *ref = pjoin(arch, "refs/tags/looks-fine");
	write_str(ref, FAKE_ID "\n");
	expect_cli_refused(arch, "looks-fine", FAKE_ID, "OLD-SNAPSHOT-DATA");
	unlink(ref);

	const char *mnt = fg_mount(arch);
	char *p = xasprintf("%s/ids/%s/f", mnt, FAKE_ID);
	expect_mount_eio(p);
	free(p);
	p = xasprintf("%s/ids/%s/f", mnt, s1);
	expect_mount_reads(p, "OLD-SNAPSHOT-DATA\n");
	cr_assert(fg_alive());
	free(p);
	free(ref);
	free(loose);
	free(body);
}

Test(hostile, stream_ref_moved_to_another_streams_snapshot_is_refused)
{
	char s1[41], s2[41];
	const char *other[] = { "--stream", "other", NULL };
	char *arch = two_snapshots(s1, "main data\n", s2, "OTHER-STREAM-DATA\n", other);
	free(git_ok(arch, NULL, "update-ref", "refs/heads/main", s2, NULL));

	expect_cli_refused(arch, "latest", s2, "OTHER-STREAM-DATA");
	expect_cli_refused(arch, "@2100-01-01T00:00:00Z", s2, "OTHER-STREAM-DATA");
	expect_cli_refused(arch, "main@4102444800", s2, "OTHER-STREAM-DATA");
	char *spec = xasprintf("%s:f", s2);
	run_result r;
	amber(&r, "cat", arch, spec, NULL);
	assert_ok(&r, "cat of the genuine snapshot by id");
	cr_assert_str_eq(r.out, "OTHER-STREAM-DATA\n");
	run_result_dispose(&r);
	amber(&r, "cat", arch, "--stream", "other", "latest:f", NULL);
	assert_ok(&r, "cat of the other stream's latest");
	run_result_dispose(&r);

	const char *mnt = fg_mount(arch);
	char *p = xasprintf("%s/latest/f", mnt);
	expect_mount_eio(p);
	free(p);
	p = xasprintf("%s/streams/main/latest/f", mnt);
	expect_mount_eio(p);
	free(p);
	p = xasprintf("%s/at/2100-01-01T00:00:00Z/f", mnt);
	expect_mount_eio(p);
	free(p);
	p = xasprintf("%s/streams/other/latest/f", mnt);
	expect_mount_reads(p, "OTHER-STREAM-DATA\n");
	free(p);
	p = xasprintf("%s/ids/%s/f", mnt, s2);
	expect_mount_reads(p, "OTHER-STREAM-DATA\n");
	free(p);
	cr_assert(fg_alive());
	char *log = read_file(pjoin(IT.tmp, "daemon.log"), NULL);
	cr_assert(strstr(log, s2) && strstr(log, "stream"),
		  "the daemon's log should name snapshot %s and its stream: %s", s2, log);
	free(log);
	free(spec);
}

/* ------------------------------------------------------------------ */
/* A file of very many chunks                                          */

#define MANY_CHUNKS 100000

/* Add file `name` (a copy of `from`'s metadata) of n one-byte chunks "x",
 * all the same chunk object: format-legal, and cheap to build.  (Its index,
 * 56 bytes a chunk decoded, must fit the CLI's cache, or every chunk read
 * evicts the one chunk and decodes it again.) */
static void forge_many_chunks(forge *f, const char *from, const char *name, size_t n)
{
	amber_chunkref *c = calloc(n, sizeof(*c));
	amber_tentry *t = calloc(n + 1, sizeof(*t));
	amber_buf b = AMBER_BUF_INIT;
	amber_link chunk;

	put_framed(&chunk, f->arch, AMBER_OBJ_CHUNK, "x", 1);
	for (size_t i = 0; i < n; i++) {
		c[i].link = chunk;
		c[i].len = 1;
		snprintf(t[i].name, sizeof(t[i].name), "c%08zu", i);
		t[i].mode = AMBER_GIT_MODE_BLOB;
		memcpy(t[i].oid, chunk.oid, 20);
	}
	amber_entry *e = forge_copy(f, from, name);
	cr_assert_eq(amber_index_encode(&b, c, n), 0);
	put_framed(&e->link, f->arch, AMBER_OBJ_INDEX, b.data, b.len);
	snprintf(t[n].name, sizeof t[n].name, "i");
	t[n].mode = AMBER_GIT_MODE_BLOB;
	memcpy(t[n].oid, e->link.oid, 20);
	amber_buf_reset(&b);
	cr_assert_eq(amber_tree_build(&b, t, n + 1), 0);
	put_obj(e->tree_oid, f->arch, "tree", b.data, b.len);
	e->content = AMBER_C_CHUNKED;
	e->size = n;
	amber_buf_dispose(&b);
	free(t);
	free(c);
}

/* Checking a chunk tree entry by entry with a linear search was quadratic:
 * this file took over a minute to open, now well under a second. */
Test(hostile, file_of_100k_chunks_opens_and_reads_in_seconds)
{
	char *src = pjoin(IT.tmp, "src"), id[41];
	mkdir_p(src, 0755);
	write_str(pjoin(src, "seed"), "seed\n");
	char *arch = plain_archive(src, id);
	forge f;
	forge_open(&f, arch, id);
	forge_many_chunks(&f, "seed", "many", MANY_CHUNKS);
	char *forged = forge_commit(&f);
	move_main(arch, forged);
	forge_dispose(&f);

	run_opts o = { .timeout = 60 };
	run_result r;
	amber_o(&r, &o, "cat", arch, "latest:many", NULL);
	assert_ok(&r, "cat of a file of many chunks");
	cr_assert_eq(r.out_len, MANY_CHUNKS);
	cr_assert_eq(strspn(r.out, "x"), MANY_CHUNKS, "the file should be all 'x'");
	cr_log_info("cat of %d chunks: %.2f s", MANY_CHUNKS, r.seconds);
	cr_assert(r.seconds < 10, "cat of a %d-chunk file took %.1f s", MANY_CHUNKS, r.seconds);
	run_result_dispose(&r);
	free(forged);
	free(src);
}

/* ------------------------------------------------------------------ */
/* Nesting deeper than an archive may (AMBER_MAX_DEPTH)                */

#define NEST 1500

/* Wrap directory entry *d in `levels` more directories of its name, written
 * in one pack (thousands of `git hash-object` runs would take minutes);
 * *d becomes the outermost. */
static void forge_nest(const char *arch, amber_entry *d, size_t levels)
{
	amber_store *st = NULL;
	amber_packw *w = NULL;
	amber_buf b = AMBER_BUF_INIT, fr = AMBER_BUF_INIT;
	char tok[AMBER_TOKEN_HEXSZ + 1];
	amber_link m;

	cr_assert_eq(amber_global_init(), 0);
	cr_assert_eq(amber_store_open(&st, arch), 0);
	cr_assert_eq(amber_packw_new(&w, st), 0);
	amber_name_token(tok, NULL, d->name, d->name_len);
	for (size_t i = 0; i < levels; i++) {
		amber_tentry t[2] = {{"m", NULL, AMBER_GIT_MODE_BLOB, {0}},
				     {"", tok, AMBER_GIT_MODE_TREE, {0}}};

		amber_buf_reset(&b);
		amber_buf_reset(&fr);
		cr_assert_eq(amber_manifest_encode(&b, d, 1), 0);
		cr_assert_eq(amber_codec_encode(&fr, m.mac, NULL, AMBER_OBJ_MANIFEST, b.data, b.len,
						0), 0);
		cr_assert_eq(amber_packw_add(m.oid, NULL, w, AMBER_GIT_BLOB, fr.data, fr.len), 0);
		memcpy(t[0].oid, m.oid, 20);
		memcpy(t[1].oid, d->tree_oid, 20);
		amber_buf_reset(&b);
		cr_assert_eq(amber_tree_build(&b, t, 2), 0);
		cr_assert_eq(amber_packw_add(d->tree_oid, NULL, w, AMBER_GIT_TREE, b.data, b.len),
			     0);
		d->link = m;
	}
	cr_assert_eq(amber_packw_commit(w), 0, "%s", amber_error_last());
	amber_packw_free(w);
	amber_store_free(st);
	amber_buf_dispose(&fr);
	amber_buf_dispose(&b);
}

/* Snapshot `id` with its directory "d" nested NEST levels deeper; returns the
 * forged commit's id. */
static char *forge_deep_by(const char *arch, const char *id, size_t levels)
{
	forge f;
	forge_open(&f, arch, id);
	forge_nest(arch, forge_find(&f, "d"), levels);
	char *forged = forge_commit(&f);
	forge_dispose(&f);
	return forged;
}

static char *forge_deep(const char *arch, const char *id)
{
	return forge_deep_by(arch, id, NEST);
}

/* A hostile archive nesting 1,501 directories: diff walked it recursively
 * without a bound; now diff and verify say what is wrong, nothing crashes. */
Test(hostile, nesting_deeper_than_an_archive_may_is_reported_not_followed)
{
	char *src = pjoin(IT.tmp, "src"), *sub = pjoin(src, "d"), *leaf = pjoin(sub, "leaf");
	char id1[41], id2[41];
	run_result r;

	mkdir_p(sub, 0755);
	write_str(leaf, "one\n");
	char *arch = plain_archive(src, id1);
	write_str(leaf, "two\n");
	amber_snapshot_ok(id2, arch, src, NULL);
	char *deep1 = forge_deep(arch, id1), *deep2 = forge_deep(arch, id2);

	amber(&r, "diff", arch, deep1, deep2, NULL);
	cr_assert_eq(r.status, 1, "diff: exit %d; stdout %.200s; stderr %.300s", r.status, r.out,
		     r.err);
	cr_assert(strstr(r.err, "nested more than 1024 levels deep") &&
		  strstr(r.err, "malformed"), "diff: %s", r.err);
	run_result_dispose(&r);
	move_main(arch, deep2);
	amber(&r, "verify", arch, NULL);
	cr_assert_eq(r.status, 1, "verify: exit %d: %s %s", r.status, r.out, r.err);
	cr_assert(strstr(r.out, "nested more than 1024 levels deep"), "verify: %s", r.out);
	run_result_dispose(&r);
	/* restore follows an older writer's deeper nesting down to its own
	 * limit, and names the path where a deeper one stops it */
	char *deep3 = forge_deep_by(arch, id2, AMBER_RESTORE_MAX_DEPTH + 10);
	char *dest = pjoin(IT.tmp, "dest");
	amber(&r, "restore", arch, deep3, dest, NULL);
	cr_assert_eq(r.status, 1, "restore: exit %d: %s", r.status, r.err);
	assert_one_error_line(&r, "restore of a tree nested past its limit");
	cr_assert(strstr(r.err, "/d/d/d: directories nested more than 4096 levels deep"),
		  "restore should name the path and its limit: %s", r.err);
	run_result_dispose(&r);
	/* what it wrote, 4,096 levels, goes with the test's scratch directory
	 * (its paths pass PATH_MAX: the suite left such trees behind before) */
	cr_assert_eq(rm_rf(dest), 0, "cannot remove the restored tree %s", dest);
	cr_assert(access(dest, F_OK) != 0, "%s is still there", dest);
	free(dest);
	free(deep3);
	free(deep1);
	free(deep2);
	free(leaf);
	free(sub);
	free(src);
}

/* Make dir/d/d/.../d (levels deep) with a file at the bottom. */
static void deep_tree(const char *dir, int levels)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	cr_assert(fd >= 0);
	for (int i = 0; i < levels; i++) {
		cr_assert(mkdirat(fd, "d", 0755) == 0 || errno == EEXIST);
		int sub = openat(fd, "d", O_RDONLY | O_DIRECTORY);
		cr_assert(sub >= 0);
		close(fd);
		fd = sub;
	}
	int f = openat(fd, "leaf", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	cr_assert(f >= 0 && write(f, "leaf\n", 5) == 5);
	close(f);
	close(fd);
}

/* The writer crashed (stack) on a source ~5,000 levels deep; it now
 * writes up to AMBER_MAX_DEPTH and refuses one level more, publishing
 * nothing. */
Test(hostile, source_deeper_than_an_archive_may_is_refused_by_snapshot)
{
	char *ok = pjoin(IT.tmp, "ok"), *deep = pjoin(IT.tmp, "deep"), id[41];
	run_result r;

	mkdir_p(ok, 0755);
	mkdir_p(deep, 0755);
	deep_tree(ok, 1024);
	deep_tree(deep, 1025);
	char *arch = plain_archive(ok, id);
	amber(&r, "snapshot", arch, deep, NULL);
	cr_assert_eq(r.status, 1, "snapshot: exit %d; stdout %s; stderr %.300s", r.status, r.out,
		     r.err);
	cr_assert(strstr(r.err, "nested more than 1024 levels deep") &&
		  strstr(r.err, "snapshot the deeper part"), "snapshot: %s", r.err);
	run_result_dispose(&r);
	char *tip = git_ok(arch, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_assert_str_eq(tip, id, "a snapshot was published");
	amber(&r, "verify", arch, NULL);
	assert_ok(&r, "verify of a snapshot 1024 levels deep");
	run_result_dispose(&r);
	free(tip);
	free(deep);
	free(ok);
}

/* ------------------------------------------------------------------ */
/* A pack index whose offset points past its pack                      */

/* Flip the third byte of the first offset of the largest pack index
 * (found by the bit-flip sweep): libgit2 read past the end of the
 * mapped pack and every reader died of SIGBUS. */
static char *flip_an_offset(const char *arch)
{
	char *dir = pjoin(arch, "objects/pack"), *best = NULL;
	run_result r;
	size_t best_len = 0, len = 0;

	run_cmd(&r, NULL, "find", dir, "-name", "*.idx", NULL);
	assert_ok(&r, "find pack indexes");
	for (char *save = NULL, *idx = strtok_r(r.out, "\n", &save); idx;
	     idx = strtok_r(NULL, "\n", &save)) {
		free(read_file(idx, &len));
		if (len > best_len) {
			free(best);
			best = strdup(idx);
			best_len = len;
		}
	}
	run_result_dispose(&r);
	cr_assert(best, "no pack index in %s", dir);
	uint8_t *b = (uint8_t *)read_file(best, &len);
	uint32_t n = (uint32_t)b[1028] << 24 | (uint32_t)b[1029] << 16 | b[1030] << 8 | b[1031];
	size_t at = 1032 + 24 * (size_t)n + 2;
	cr_assert(n > 0 && at < len);
	b[at] ^= 0xFF;
	cr_assert_eq(chmod(best, 0644), 0);
	write_file(best, b, len, 0644);
	free(b);
	free(dir);
	return best;
}

static void expect_damaged_index(const char *what, const char *idx, const char *arg0,
				 const char *arg1, const char *arg2, const char *arg3)
{
	run_result r;
	amber(&r, arg0, arg1, arg2, arg3, NULL);
	cr_assert_eq(r.status, 1, "%s: exit %d (a signal is > 128); stderr %.300s", what,
		     r.status, r.err);
	cr_assert(strstr(r.err, strrchr(idx, '/') + 1) && strstr(r.err, "git index-pack"),
		  "%s should name the index and the fix: %s", what, r.err);
	run_result_dispose(&r);
}

Test(hostile, pack_index_offset_past_its_pack_is_refused_not_a_crash)
{
	char *src = pjoin(IT.tmp, "src"), *dest = pjoin(IT.tmp, "dest"), id[41];
	mkdir_p(src, 0755);
	write_str(pjoin(src, "a.txt"), "alpha\n");
	write_str(pjoin(src, "b.txt"), "bravo\n");
	char *arch = plain_archive(src, id);
	char *idx = flip_an_offset(arch);

	expect_damaged_index("verify", idx, "verify", arch, "--read-data", NULL);
	expect_damaged_index("restore", idx, "restore", arch, "latest", dest);
	expect_damaged_index("cat", idx, "cat", arch, "latest:a.txt", NULL);
	cr_assert(access(dest, F_OK) != 0, "restore created %s", dest);
	free(idx);
	free(dest);
	free(src);
}

/* ------------------------------------------------------------------ */
/* A pack that appears while a reader runs                              */

/* The one pack-*.idx in `after` that `before` does not list (ls output). */
static char *new_index(const char *arch, const char *before)
{
	run_result r;
	char *dir = pjoin(arch, "objects/pack"), *found = NULL;

	run_cmd(&r, NULL, "sh", "-c", "cd \"$0\" && ls pack-*.idx", dir, NULL);
	assert_ok(&r, "list pack indexes");
	for (char *save = NULL, *n = strtok_r(r.out, "\n", &save); n;
	     n = strtok_r(NULL, "\n", &save)) {
		if (!strstr(before, n)) {
			cr_assert_null(found, "more than one new pack in %s", dir);
			found = pjoin(dir, n);
		}
	}
	run_result_dispose(&r);
	cr_assert(found, "no new pack in %s", dir);
	free(dir);
	return found;
}

/* Move every offset of a version-2 index by 0xFF00 << 8 (the bit-flip sweep's
 * SIGBUS, applied to all of them) and rewrite its trailing checksum, as a
 * forger would: the index is well-formed and points outside its pack. */
static void forge_offsets(const char *idx)
{
	size_t len = 0;
	uint8_t *b = (uint8_t *)read_file(idx, &len);
	uint32_t n = (uint32_t)b[1028] << 24 | (uint32_t)b[1029] << 16 | b[1030] << 8 | b[1031];
	cr_assert(n > 0 && 1032 + 28 * (size_t)n + 40 <= len);
	for (uint32_t i = 0; i < n; i++)
		b[1032 + 24 * (size_t)n + 4 * i + 2] ^= 0xFF;
	char *body = xasprintf("%s.body", idx);
	write_file(body, b, len - 20, 0644);
	run_result r;
	run_cmd(&r, NULL, "sh", "-c", "sha1sum < \"$0\"", body, NULL);
	assert_ok(&r, "sha1sum");
	for (int i = 0; i < 20; i++)
		cr_assert_eq(sscanf(r.out + 2 * i, "%2hhx", &b[len - 20 + i]), 1);
	run_result_dispose(&r);
	unlink(body);
	free(body);
	cr_assert_eq(chmod(idx, 0644), 0);
	write_file(idx, b, len, 0444);
	free(b);
}

/*
 * A pack written after a reader opened the archive was loaded by libgit2's
 * own rescan (on any missed lookup) without amberfs's index check, so a
 * forged index dropped into a mounted archive killed the daemon (SIGBUS)
 * at the first read of an object in it.  Every pack a reader sees must pass
 * the check first: the forged one gives EIO and a log line naming it, a
 * good one from a concurrent snapshot is still picked up, and everything
 * else keeps being served.
 */
Test(hostile, forged_pack_dropped_into_a_mounted_archive_is_refused_not_a_crash)
{
	char *src = pjoin(IT.tmp, "src"), *evil_src = pjoin(IT.tmp, "evil-src");
	char *twin = pjoin(IT.tmp, "twin"), id1[41], id2[41], evil[41];
	run_result r;

	mkdir_p(src, 0755);
	mkdir_p(evil_src, 0755);
	write_str(pjoin(src, "a.txt"), "alpha\n");
	write_str(pjoin(evil_src, "a.txt"), "alpha\n");
	write_str(pjoin(evil_src, "evil.txt"), "only in the forged pack\n");
	char *arch = plain_archive(src, id1);
	char *cp = xasprintf("cp -a \"$0\" \"$1\"");
	run_cmd(&r, NULL, "sh", "-c", cp, arch, twin, NULL);
	assert_ok(&r, "copy the archive");
	run_result_dispose(&r);
	/* the forged pack: a snapshot written in a copy, its index forged */
	run_cmd(&r, NULL, "sh", "-c", "cd \"$0\"/objects/pack && ls pack-*.idx", twin, NULL);
	assert_ok(&r, "list the copy's packs");
	amber_snapshot_ok(evil, twin, evil_src, NULL);
	char *idx = new_index(twin, r.out);
	run_result_dispose(&r);
	forge_offsets(idx);

	const char *mnt = fg_mount(arch);
	char *a1 = xasprintf("%s/ids/%s/a.txt", mnt, id1);
	expect_mount_reads(a1, "alpha\n");

	/* a concurrent writer's good pack is picked up */
	write_str(pjoin(src, "b.txt"), "bravo\n");
	amber_snapshot_ok(id2, arch, src, NULL);
	char *b2 = xasprintf("%s/ids/%s/b.txt", mnt, id2);
	expect_mount_reads(b2, "bravo\n");

	/* the forged pack appears, and a stream names its snapshot */
	char *pack = xasprintf("%.*s.pack", (int)(strlen(idx) - 4), idx);
	char *dst = pjoin(arch, "objects/pack");
	run_cmd(&r, NULL, "sh", "-c", "cp \"$0\" \"$1\" \"$2\"/", pack, idx, dst, NULL);
	assert_ok(&r, "drop the forged pack in");
	run_result_dispose(&r);
	/* (git update-ref would read the commit first, and refuse) */
	char *ref = pjoin(arch, "refs/heads/evil"), *line = xasprintf("%s\n", evil);
	write_str(ref, line);
	free(line);
	free(ref);
	char *e = xasprintf("%s/streams/evil/latest/evil.txt", mnt);
	expect_mount_eio(e);
	cr_assert(fg_alive(), "the daemon died reading through a forged pack index");
	char *log = pjoin(IT.tmp, "daemon.log");
	char *dlog = read_file(log, NULL);
	cr_assert(strstr(dlog, strrchr(idx, '/') + 1) && strstr(dlog, "git index-pack"),
		  "the daemon should log the refused index and the fix: %s", dlog);
	/* and it keeps serving the rest */
	expect_mount_reads(a1, "alpha\n");
	expect_mount_reads(b2, "bravo\n");
	cr_assert(fg_alive());
	free(dlog);
	free(log);
	free(e);
	free(dst);
	free(pack);
	free(b2);
	free(a1);
	free(idx);
	free(cp);
	free(twin);
	free(evil_src);
	free(src);
}

/* ------------------------------------------------------------------ */
/* Nesting past the limit, through a mount                              */

/* Walk dir/d/d/... one level at a time, at most `max` levels (paths this
 * deep are longer than PATH_MAX); returns the levels walked, *err the errno
 * that stopped it (0: no "d" below, or max reached) and *fd the deepest
 * directory, opened for reading. */
static int descend(const char *dir, int max, int *err, int *fd)
{
	int n = 0;
	*fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	cr_assert(*fd >= 0, "open %s: %s", dir, strerror(errno));
	*err = 0;
	for (; n < max; n++) {
		int sub = openat(*fd, "d", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (sub < 0) {
			*err = errno == ENOENT ? 0 : errno;
			break;
		}
		close(*fd);
		*fd = sub;
	}
	int rd = openat(*fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert(rd >= 0, "open level %d: %s", n, strerror(errno));
	close(*fd);
	*fd = rd;
	return n;
}

/*
 * The forged archive of 4,106 extra levels (restore stops at 4096) through
 * a real mount: find, cat and a level-by-level walk go into it; directories
 * down to level AMBER_RESTORE_MAX_DEPTH are served, a deeper one is EIO with
 * a log line, and the daemon neither crashes nor stops serving.  (find goes
 * first: the walk after it finds the kernel's caches warm.  ls -R stops at
 * PATH_MAX, about level 2000, and would add seconds without reaching the
 * limit.)
 */
Test(hostile, nesting_past_the_limit_is_eio_through_the_mount_and_the_rest_serves)
{
	char *src = pjoin(IT.tmp, "src"), *sub = pjoin(src, "d"), id[41];
	run_result r;

	mkdir_p(sub, 0755);
	write_str(pjoin(sub, "leaf"), "leaf\n");
	write_str(pjoin(src, "top.txt"), "top\n");
	char *arch = plain_archive(src, id);
	char *deep = forge_deep_by(arch, id, AMBER_RESTORE_MAX_DEPTH + 10);
	const char *mnt = fg_mount(arch);
	char *root = xasprintf("%s/ids/%s", mnt, deep);

	/* level by level: down to the limit, then EIO */
	int err = 0, fd = -1;
	int levels = descend(root, INT_MAX, &err, &fd);
	cr_assert_eq(levels, AMBER_RESTORE_MAX_DEPTH, "walked %d levels (stopped by %s)", levels,
		     strerror(err));
	cr_assert_eq(err, EIO, "level %d: %s (want EIO)", levels + 1, strerror(err));
	/* the deepest served directory lists its child; the child stays EIO */
	DIR *dd = fdopendir(dup(fd));
	cr_assert(dd);
	int saw_d = 0;
	for (struct dirent *de; (de = readdir(dd));)
		saw_d |= strcmp(de->d_name, "d") == 0;
	closedir(dd);
	cr_assert(saw_d, "the listing of level %d lost its child", levels);
	struct stat st;
	cr_assert(fstatat(fd, "d", &st, 0) < 0 && errno == EIO, "stat of level %d: %s",
		  levels + 1, strerror(errno));
	close(fd);
	cr_assert(fg_alive(), "the daemon died walking a deep archive");

	/* ordinary tools, started 100 levels above the limit (a find from the
	 * top costs seconds per thousand levels here; the walk above did that) */
	descend(root, AMBER_RESTORE_MAX_DEPTH - 100, &err, &fd);
	char *here = xasprintf("/proc/%d/fd/%d", (int)getpid(), fd);
	run_opts in_deep = { .cwd = here };
	run_cmd(&r, &in_deep, "find", ".", "-name", "leaf", "-o", "-name", "top.txt", "-print",
		NULL);
	cr_assert_eq(r.status, 1, "find: exit %d: %.300s", r.status, r.err);
	cr_assert_str_eq(r.out, "", "find: %s", r.out);
	cr_assert(strstr(r.err, "Input/output error"), "find: %.300s", r.err);
	run_result_dispose(&r);
	char *rel = calloc(1, 2 * 110 + 8);
	for (int i = 0; i < 110; i++)
		memcpy(rel + 2 * i, "d/", 2);
	memcpy(rel + 220, "leaf", 5);
	run_cmd(&r, &in_deep, "cat", rel, NULL);
	cr_assert(r.status == 1 && strstr(r.err, "Input/output error"), "cat: exit %d: %.300s",
		  r.status, r.err);
	run_result_dispose(&r);
	close(fd);
	char *top = pjoin(root, "top.txt");
	run_cmd(&r, NULL, "cat", top, NULL);
	assert_ok(&r, "cat beside the deep tree");
	cr_assert_str_eq(r.out, "top\n");
	run_result_dispose(&r);
	cr_assert(fg_alive(), "the daemon died under find and cat");

	/* the daemon keeps serving other paths, and says what it refused */
	char *other = xasprintf("%s/ids/%s/top.txt", mnt, id);
	expect_mount_reads(other, "top\n");
	char *log = pjoin(IT.tmp, "daemon.log");
	char *dlog = read_file(log, NULL);
	cr_assert(strstr(dlog, "nested more than 4096 levels deep"), "daemon log: %.500s", dlog);
	free(dlog);
	free(log);
	free(other);
	free(top);
	free(rel);
	free(here);
	free(root);
	free(deep);
	free(sub);
	free(src);
}
