/*
 * Bytes a snapshot adds for a small change to a large directory, and the
 * fan-out layouts: layout 2 (a tree of 16-way nodes over the buckets) must
 * keep a one-entry change to a 3,000-entry directory to a few small nodes,
 * where layout 1 (one list of every bucket) rewrites the whole list; and an
 * archive written in layout 1 still reads, diffs, verifies and takes new
 * snapshots.  Likewise for chunk indexes: an append to a file of hundreds
 * of chunks adds its last index page (layout 2), not an entry per chunk
 * (layout 1).  Real archives and real source trees.
 */
#include "libfix.h"

#include "archive.h"
#include "chunker.h"
#include "dir.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void setup(void)
{
	scratch_make("growth");
}

TestSuite(growth, .init = setup, .fini = scratch_remove);

static void assert_restores(amber_archive *a, const char *id, const char *rel);

/* src/accounts with n small files, and one other file. */
static void make_source(int n)
{
	char name[64], text[64];

	cr_assert_eq(mkdir(at("src"), 0755), 0);
	cr_assert_eq(mkdir(at("src/accounts"), 0755), 0);
	src_put("top", "top\n");
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "accounts/acct-%05d.json", i);
		snprintf(text, sizeof(text), "{\"id\": %d}\n", i);
		src_put(name, text);
	}
}

/* The fan-out layout of src/accounts in snapshot id. */
static int accounts_layout(amber_archive *a, const char *id)
{
	amber_snapshot *s = NULL;
	amber_entry *e = NULL;
	int layout = -1;

	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&e, s, "accounts"));
	OK(amber_dir_fanout_layout(&layout, s, e));
	amber_entry_free(e);
	amber_snapshot_free(s);
	return layout;
}

typedef struct changes {
	int n;
	char path[8][64];
	int kind[8];
} changes;

static int on_change(const amber_change *c, void *payload)
{
	changes *ch = payload;

	if (ch->n < 8) {
		snprintf(ch->path[ch->n], sizeof(ch->path[0]), "%s", c->path);
		ch->kind[ch->n] = c->kind;
	}
	ch->n++;
	return 0;
}

/* A writer session's first snapshot, then one edited entry: its stats. */
static amber_stats one_edit(amber_archive *a, const char *edit, char first[AMBER_OID_HEXSZ + 1],
			    char id[AMBER_OID_HEXSZ + 1])
{
	amber_stats st = AMBER_STATS_INIT;
	amber_writer *w = fix_writer(a);

	OK(amber_writer_snapshot(first, NULL, w, NULL, 0));
	src_put("accounts/acct-01234.json", edit);
	OK(amber_writer_snapshot(id, &st, w, (amber_dirty[]){{"accounts/acct-01234.json", 0}}, 1));
	OK(amber_writer_close(w));
	return st;
}

Test(growth, one_edit_in_a_large_directory_adds_a_few_small_nodes, .timeout = 60)
{
	amber_archive *old = fix_archive_at("old", 0), *cur = fix_archive_at("new", 0);
	char id_old[AMBER_OID_HEXSZ + 1], id_new[AMBER_OID_HEXSZ + 1], first[AMBER_OID_HEXSZ + 1];
	amber_snapshot *s1 = NULL, *s2 = NULL;
	amber_stats so, sn;
	uint64_t fo, fn;
	changes ch = {0};

	make_source(3000); /* 256 buckets of about 12 entries */
	old->fanout_layout = 1;
	so = one_edit(old, "{\"id\": 1234, \"margin\": 7}\n", first, id_old);
	sn = one_edit(cur, "{\"id\": 1234, \"margin\": 8}\n", first, id_new);
	cr_assert_eq(accounts_layout(old, id_old), 1);
	cr_assert_eq(accounts_layout(cur, id_new), 2);
	fo = so.new_fanout + so.new_fanouttrees;
	fn = sn.new_fanout + sn.new_fanouttrees;
	/* layout 1 rewrites the list of 256 buckets (70 bytes each) and its tree */
	cr_assert_gt(fo, 20000, "layout 1 wrote %llu bytes of fan-out", (unsigned long long)fo);
	/* layout 2: the top node and the one below it (16 children each) */
	cr_assert_lt(fn, 5000, "layout 2 wrote %llu bytes of fan-out", (unsigned long long)fn);
	cr_assert_lt(sn.bytes_new, 10000, "one edit added %llu bytes",
		     (unsigned long long)sn.bytes_new);
	cr_assert_eq(sn.bytes_new, sn.new_chunks + sn.new_manifests + sn.new_buckets +
					   sn.new_fanout + sn.new_indexes + sn.new_dirtrees +
					   sn.new_fanouttrees + sn.new_chunktrees +
					   sn.new_commits + sn.new_pages,
		     "the kinds add up to bytes_new");
	cr_assert_gt(sn.pack_bytes, sn.bytes_new);

	/* a diff of two layout-2 snapshots walks the nodes that differ */
	OK(amber_snapshot_open(&s1, cur, first));
	OK(amber_snapshot_open(&s2, cur, id_new));
	OK(amber_diff(s1, s2, "", 0, on_change, &ch));
	cr_assert_eq(ch.n, 1, "%d changes", ch.n);
	cr_assert_str_eq(ch.path[0], "accounts/acct-01234.json");
	cr_assert_eq(ch.kind[0], AMBER_MODIFIED);
	amber_snapshot_free(s1);
	amber_snapshot_free(s2);
	amber_archive_free(old);
	amber_archive_free(cur);
}

static void verify_clean(amber_archive *a)
{
	amber_verify_opts o = AMBER_VERIFY_OPTS_INIT;
	amber_verify_stats vs;

	o.read_data = 1;
	o.no_marks = 1;
	o.threads = 1;
	OK(amber_verify(&vs, a, &o));
	cr_assert_eq(vs.problems, 0, "verify found %llu problems", (unsigned long long)vs.problems);
	o.no_key = 1;
	o.read_data = 0;
	OK(amber_verify(&vs, a, &o));
	cr_assert_eq(vs.problems, 0, "verify --no-key found %llu problems",
		     (unsigned long long)vs.problems);
}

/* Every file of src/accounts reads back from snapshot id as it is on disk. */
static void assert_accounts_read(amber_archive *a, const char *id, int n)
{
	amber_snapshot *s = NULL;
	amber_dir *d = NULL;
	amber_entry *e = NULL;

	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&e, s, "accounts"));
	OK(amber_dir_open(&d, s, e));
	cr_assert_eq(amber_dir_count(d), (size_t)n);
	for (size_t i = 0; i < amber_dir_count(d); i += 97) {
		const amber_entry *x = amber_dir_entry(d, i);
		char path[4200], got[256] = "", want[256] = "";
		size_t len = 0;
		FILE *f;

		OK(amber_file_read(&len, s, x, 0, got, sizeof(got) - 1));
		snprintf(path, sizeof(path), "%s/src/accounts/%s", base, x->name);
		f = fopen(path, "rb");
		cr_assert_not_null(f);
		cr_assert_eq(fread(want, 1, sizeof(want) - 1, f), len);
		fclose(f);
		cr_assert_str_eq(got, want, "%s", x->name);
	}
	amber_dir_free(d);
	amber_entry_free(e);
	amber_snapshot_free(s);
}

Test(growth, an_archive_of_fan_out_layout_1_reads_and_takes_layout_2_snapshots, .timeout = 60)
{
	amber_archive *a = fix_archive_at("arch", 0);
	amber_snapshot_opts so = AMBER_SNAPSHOT_OPTS_INIT;
	amber_snapshot *s1 = NULL, *s2 = NULL;
	amber_writer *w;
	char id1[AMBER_OID_HEXSZ + 1], id2[AMBER_OID_HEXSZ + 1], full[AMBER_OID_HEXSZ + 1];
	changes ch = {0};

	make_source(1500);
	so.threads = 1;
	a->fanout_layout = 1; /* the writer of archives made before layout 2 */
	OK(amber_snapshot_create(id1, NULL, a, at("src"), &so));
	cr_assert_eq(accounts_layout(a, id1), 1);
	a->fanout_layout = 0;
	assert_accounts_read(a, id1, 1500);

	/* a session on top of it: the changed directory moves to layout 2, and
	 * is the very tree a whole walk writes */
	w = fix_writer(a);
	src_put("accounts/acct-00042.json", "{\"id\": 42, \"margin\": 1}\n");
	src_put("accounts/acct-new.json", "{}\n");
	OK(amber_writer_snapshot(id2, NULL, w, (amber_dirty[]){{"accounts/acct-00042.json", 0},
							     {"accounts/acct-new.json", 0}}, 2));
	OK(amber_writer_close(w));
	cr_assert_eq(accounts_layout(a, id2), 2);
	assert_accounts_read(a, id2, 1501);
	assert_restores(a, id2, "accounts");
	so.stream = "check";
	so.no_cache = 1;
	OK(amber_snapshot_create(full, NULL, a, at("src"), &so));
	OK(amber_snapshot_open(&s1, a, id2));
	OK(amber_snapshot_open(&s2, a, full));
	cr_assert_str_eq(amber_snapshot_info(s1)->tree, amber_snapshot_info(s2)->tree);
	amber_snapshot_free(s1);
	amber_snapshot_free(s2);

	/* diff across the layouts names exactly the two changes */
	OK(amber_snapshot_open(&s1, a, id1));
	OK(amber_snapshot_open(&s2, a, id2));
	OK(amber_diff(s1, s2, "", 0, on_change, &ch));
	cr_assert_eq(ch.n, 2, "%d changes", ch.n);
	cr_assert_str_eq(ch.path[0], "accounts/acct-00042.json");
	cr_assert_eq(ch.kind[0], AMBER_MODIFIED);
	cr_assert_str_eq(ch.path[1], "accounts/acct-new.json");
	cr_assert_eq(ch.kind[1], AMBER_ADDED);
	amber_snapshot_free(s1);
	amber_snapshot_free(s2);
	verify_clean(a);
	amber_archive_free(a);
}

/* Small chunks (1..16 KiB), so that a few MiB make hundreds of them. */
static void small_chunks(amber_archive *a)
{
	amber_chunker_init(&a->chunker, NULL, 1024, 4096, 16384);
}

static void write_log(const char *rel, size_t from, size_t len, const char *mode)
{
	char path[4200];
	FILE *f;

	snprintf(path, sizeof(path), "%s/src/%s", base, rel);
	f = fopen(path, mode);
	cr_assert_not_null(f);
	for (size_t i = from; i < from + len; i += 32)
		fprintf(f, "%020zu %010zx\n", i, (i * 2654435761u) & 0xffffffffu);
	cr_assert_eq(fclose(f), 0);
}

/* Snapshot id's copy of src/rel equals the file. */
static void assert_same_file(amber_archive *a, const char *id, const char *rel)
{
	amber_snapshot *s = NULL;
	amber_entry *e = NULL;
	char path[4200];
	size_t got = 0;
	FILE *f;

	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&e, s, rel));
	char *stored = malloc(e->size), *disk = malloc(e->size + 1);

	OK(amber_file_read(&got, s, e, 0, stored, e->size));
	cr_assert_eq(got, e->size);
	snprintf(path, sizeof(path), "%s/src/%s", base, rel);
	f = fopen(path, "rb");
	cr_assert_not_null(f);
	cr_assert_eq(fread(disk, 1, e->size + 1, f), e->size, "sizes differ");
	fclose(f);
	cr_assert(memcmp(stored, disk, e->size) == 0, "%s differs", rel);
	free(stored);
	free(disk);
	amber_entry_free(e);
	amber_snapshot_free(s);
}

/* amber_restore() of src/rel from snapshot id gives the file's bytes. */
static void assert_restores(amber_archive *a, const char *id, const char *rel)
{
	amber_restore_opts o = AMBER_RESTORE_OPTS_INIT;
	amber_snapshot *s = NULL;
	char cmd[8600];

	o.no_owner = 1;
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_restore(NULL, s, rel, at("restored"), &o));
	snprintf(cmd, sizeof(cmd), "diff -r '%s/src/%s' '%s/restored' >/dev/null", base, rel,
		 base);
	cr_assert_eq(system(cmd), 0, "restored %s differs", rel);
	amber_snapshot_free(s);
}

/* A session declaring *.log append-only: a whole snapshot, then an append. */
static amber_stats one_append(amber_archive *a, char id[AMBER_OID_HEXSZ + 1])
{
	static const char *const logs[] = {"*.log", NULL};
	amber_writer_opts o = AMBER_WRITER_OPTS_INIT;
	amber_stats st = AMBER_STATS_INIT;
	amber_writer *w = NULL;

	o.snap.threads = 1;
	o.append_only = logs;
	OK(amber_writer_open(&w, a, at("src"), &o));
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	write_log("ledger.log", 3 << 20, 4096, "ab");
	OK(amber_writer_snapshot(id, &st, w, (amber_dirty[]){{"ledger.log", 0}}, 1));
	OK(amber_writer_close(w));
	return st;
}

Test(growth, an_append_to_a_large_file_adds_its_last_index_page, .timeout = 60)
{
	amber_archive *old = fix_archive_at("old", 0), *cur = fix_archive_at("new", 0);
	char id_old[AMBER_OID_HEXSZ + 1], id_new[AMBER_OID_HEXSZ + 1];
	amber_stats so, sn;
	uint64_t io, in;

	cr_assert_eq(mkdir(at("src"), 0755), 0);
	write_log("ledger.log", 0, 3 << 20, "wb"); /* about 750 chunks */
	small_chunks(old);
	small_chunks(cur);
	old->index_layout = 1;
	so = one_append(old, id_old);
	write_log("ledger.log", 0, 3 << 20, "wb");
	sn = one_append(cur, id_new);
	io = so.new_indexes + so.new_chunktrees;
	in = sn.new_indexes + sn.new_chunktrees;
	/* layout 1: 48 bytes of index and a tree entry per chunk */
	cr_assert_gt(io, 50000, "layout 1 wrote %llu bytes of index", (unsigned long long)io);
	/* layout 2: the last page (at most 64 chunks) and the root */
	cr_assert_lt(in, 8000, "layout 2 wrote %llu bytes of index", (unsigned long long)in);
	assert_same_file(old, id_old, "ledger.log");
	assert_same_file(cur, id_new, "ledger.log");
	assert_restores(cur, id_new, "ledger.log");
	verify_clean(cur);

	/* the old archive's file, appended to by the new writer, becomes paged */
	old->index_layout = 0;
	write_log("ledger.log", (3 << 20) + 4096, 4096, "ab");
	sn = one_append(old, id_old);
	assert_same_file(old, id_old, "ledger.log");
	verify_clean(old);
	amber_archive_free(old);
	amber_archive_free(cur);
}

Test(growth, a_directory_that_outgrows_its_fan_out_width_diffs_and_reads, .timeout = 60)
{
	amber_archive *a = fix_archive_at("arch", 0);
	char first[AMBER_OID_HEXSZ + 1], id[AMBER_OID_HEXSZ + 1];
	amber_snapshot *s1 = NULL, *s2 = NULL;
	amber_writer *w;
	changes ch = {0};

	make_source(4096); /* 8 bits of buckets; one more entry needs 9 */
	w = fix_writer(a);
	OK(amber_writer_snapshot(first, NULL, w, NULL, 0));
	src_put("accounts/acct-new.json", "{}\n");
	OK(amber_writer_snapshot(id, NULL, w, (amber_dirty[]){{"accounts/acct-new.json", 0}}, 1));
	OK(amber_writer_close(w));
	cr_assert_eq(accounts_layout(a, id), 2);
	assert_accounts_read(a, id, 4097);
	OK(amber_snapshot_open(&s1, a, first));
	OK(amber_snapshot_open(&s2, a, id));
	OK(amber_diff(s1, s2, "", 0, on_change, &ch));
	cr_assert_eq(ch.n, 1, "%d changes", ch.n);
	cr_assert_str_eq(ch.path[0], "accounts/acct-new.json");
	cr_assert_eq(ch.kind[0], AMBER_ADDED);
	amber_snapshot_free(s1);
	amber_snapshot_free(s2);
	amber_archive_free(a);
}

/* Where object `oid` starts in archive `name`: its pack, and the offset
 * there (git verify-pack of each index). */
static uint64_t pack_offset(const char *name, const uint8_t oid[20], char *pack, size_t cap)
{
	char cmd[8600], hex[AMBER_OID_HEXSZ + 1], line[4300], idx[4200];
	unsigned long long off = 0;
	FILE *l, *p;

	amber_oid_tohex(hex, oid);
	snprintf(cmd, sizeof(cmd), "ls %s/objects/pack/*.idx", at(name));
	cr_assert_not_null(l = popen(cmd, "r"));
	while (off == 0 && fgets(idx, sizeof(idx), l)) {
		idx[strcspn(idx, "\n")] = '\0';
		snprintf(cmd, sizeof(cmd), "git verify-pack -v %s", idx);
		cr_assert_not_null(p = popen(cmd, "r"));
		while (fgets(line, sizeof(line), p))
			if (strncmp(line, hex, AMBER_OID_HEXSZ) == 0)
				cr_assert_eq(sscanf(line, "%*s %*s %*s %*s %llu", &off), 1, "%s", line);
		cr_assert_eq(pclose(p), 0, "%s failed", cmd);
		snprintf(pack, cap, "%.*spack", (int)(strlen(idx) - 3), idx);
	}
	pclose(l);
	cr_assert_gt(off, 0, "object %s not in %s", hex, at(name));
	return off;
}

/* Flip a byte inside the zlib stream of the object at `off` of `pack`. */
static void damage(const char *pack, uint64_t off)
{
	uint8_t c;
	int fd;

	chmod(pack, 0644);
	cr_assert((fd = open(pack, O_RDWR)) >= 0, "%s: %s", pack, strerror(errno));
	cr_assert_eq(pread(fd, &c, 1, (off_t)off + 8), 1);
	c ^= 0x5a;
	cr_assert_eq(pwrite(fd, &c, 1, (off_t)off + 8), 1);
	close(fd);
}

/*
 * A fanned-out directory's buckets are decoded on several threads.  The
 * listing is whole and in name order; a damaged bucket fails the opening
 * with that bucket's own error, on the caller's thread, whichever thread
 * met it; with two damaged, the first in bucket order is reported.
 */
Test(growth, a_damaged_bucket_of_a_large_directory_fails_it_with_that_bucket_s_error,
     .timeout = 60)
{
	char id[AMBER_OID_HEXSZ + 1], want[1024], pack[2][4200];
	amber_archive *a = fix_archive_at("arch", 0);
	amber_writer *w;
	amber_snapshot *s = NULL;
	amber_entry *e = NULL;
	amber_dir *d = NULL;
	amber_fanout_view v;
	uint64_t off[2];

	make_source(3000); /* 256 buckets: two runs at least */
	w = fix_writer(a);
	OK(amber_writer_snapshot(id, NULL, w, NULL, 0));
	OK(amber_writer_close(w));
	assert_accounts_read(a, id, 3000);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_stat(&e, s, "accounts"));
	OK(amber_dir_open(&d, s, e));
	cr_assert_eq(amber_dir_count(d), 3000);
	for (size_t i = 0; i < 3000; i++) {
		char n[64];

		snprintf(n, sizeof(n), "acct-%05zu.json", i);
		cr_assert_str_eq(amber_dir_entry(d, i)->name, n);
	}
	amber_dir_free(d);
	OK(amber_dir_buckets(&v, s, e));
	cr_assert_eq(v.nb, 256);
	off[0] = pack_offset("arch", v.b[0].tree_oid, pack[0], sizeof(pack[0]));
	off[1] = pack_offset("arch", v.b[v.nb - 1].tree_oid, pack[1], sizeof(pack[1]));
	for (int k = 1; k >= 0; k--) {  /* the last bucket, then the first too */
		size_t bad = k ? v.nb - 1 : 0;

		damage(pack[k], off[k]);
		d = NULL;
		cr_assert_lt(amber_dir_open_bucket(&d, s, e, &v.b[bad], v.bits), 0);
		snprintf(want, sizeof(want), "%s", amber_error_last());
		cr_assert(want[0], "no message for the damaged bucket");
		/* (which thread meets it varies: again and again) */
		for (int round = 0; round < 40; round++) {
			amber_error_clear();
			cr_assert_lt(amber_dir_open(&d, s, e), 0, "a damaged bucket went unnoticed");
			cr_assert_str_eq(amber_error_last(), want, "bucket %zu, round %d: not its "
					 "own error", bad, round);
		}
	}
	free(v.b);
	amber_entry_free(e);
	amber_snapshot_free(s);
	amber_archive_free(a);
}
