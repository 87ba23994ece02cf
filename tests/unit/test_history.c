/*
 * The time index in the snapshot records (lib/history.c): resolution by
 * skip links against a linear scan, no walk with an empty cache, layout 1
 * records still readable, and verify catching a forged link.
 *
 * Archives live on /dev/shm when it exists: a long history is hundreds of
 * fsynced snapshots, and on a disk the fsyncs alone take minutes.
 */
#include "amber.h"
#include "amber_verify.h"
#include "codec.h"
#include "gitobj.h"
#include "manifest.h"
#include "history.h"
#include "record.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scratch.h"

#define OK(expr)                                                                     \
	do {                                                                         \
		int rc_ = (expr);                                                    \
		cr_assert_eq(rc_, 0, "%s = %d: %s", #expr, rc_, amber_error_last()); \
	} while (0)

#define T0 ((int64_t)1700000000 * 1000000000 + 123456789)
#define LONG 700

static void setup(void)
{
	struct stat st;

	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode))
		setenv("TMPDIR", "/dev/shm", 1);
	scratch_make("history");
	mkdir(at("cache"), 0700);
	OK(amber_global_init());
}

TestSuite(history, .init = setup, .fini = scratch_remove, .timeout = 600);

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fwrite(data, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

/* Open options with the caches in `dir` of the scratch directory. */
static amber_open_opts caches_in(const char *dir)
{
	amber_open_opts o = AMBER_OPEN_OPTS_INIT;

	mkdir(at(dir), 0700);
	o.cache_dir = strdup(at(dir)); /* at() reuses its buffers */
	return o;
}

static amber_archive *new_archive_span(uint32_t span)
{
	static amber_open_opts oo;
	amber_create_opts o = {.version = AMBER_CREATE_OPTS_VERSION, .plain = 1};
	amber_archive *a = NULL;

	oo = caches_in("cache");
	oo.index_span = span;
	o.open = &oo;
	cr_assert_eq(mkdir(at("src"), 0755), 0);
	OK(amber_archive_create(&a, at("arch"), &o));
	return a;
}

static amber_archive *new_archive(void)
{
	return new_archive_span(0);
}

static void snap(char id[AMBER_OID_HEXSZ + 1], amber_archive *a, int64_t t)
{
	amber_snapshot_opts o = AMBER_SNAPSHOT_OPTS_INIT;
	char text[64];
	int n = snprintf(text, sizeof(text), "state at %lld\n", (long long)t);

	write_file(at("src/file"), text, (size_t)n);
	o.threads = 1;
	o.time_ns = t;
	OK(amber_snapshot_create(id, NULL, a, at("src"), &o));
}

/* Irregular gaps: a few µs to an hour, so spans of every size occur. */
static int64_t gap(uint64_t *s)
{
	static const int64_t scale[] = {1000, 1000000, 1000000000, 3600000000000LL};

	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return scale[(*s >> 33) % 4] * (int64_t)(1 + (*s >> 40) % 5) + (int64_t)(*s >> 50) % 1000;
}

static void history(amber_archive *a, char (*ids)[AMBER_OID_HEXSZ + 1], int64_t *t, int n)
{
	uint64_t s = 42;

	for (int i = 0; i < n; i++) {
		t[i] = i ? t[i - 1] + gap(&s) : T0;
		snap(ids[i], a, t[i]);
	}
}

/* The newest i with t[i] <= q, by a linear scan; -1 if none. */
static int linear(const int64_t *t, int n, int64_t q)
{
	int k = -1;

	for (int i = 0; i < n && t[i] <= q; i++)
		k = i;
	return k;
}

static int resolve_ns(char id[AMBER_OID_HEXSZ + 1], amber_archive *a, int64_t q)
{
	char spec[64];

	snprintf(spec, sizeof(spec), "@%lld.%09lld", (long long)(q / 1000000000),
		 (long long)(q % 1000000000));
	return amber_resolve(id, a, NULL, spec);
}

Test(history, skip_links_resolve_like_a_linear_scan)
{
	static char ids[LONG][AMBER_OID_HEXSZ + 1];
	static int64_t t[LONG];
	amber_archive *a = new_archive();
	uint64_t s = 7;

	history(a, ids, t, LONG);
	for (int q = 0; q < 1500; q++) {
		char got[AMBER_OID_HEXSZ + 1];
		int64_t when;
		int want, rc;

		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		if (q % 3 == 0)   /* exactly at a snapshot, or 1 ns before one */
			when = t[(s >> 33) % LONG] - (int64_t)((s >> 20) & 1);
		else
			when = T0 - 5000 + (int64_t)((s >> 11) % (uint64_t)(t[LONG - 1] - T0 + 10000));
		want = linear(t, LONG, when);
		rc = resolve_ns(got, a, when);
		if (want < 0) {
			cr_assert_eq(rc, AMBER_ENOTFOUND, "@%lld: before the first, got rc %d",
				     (long long)when, rc);
			continue;
		}
		cr_assert_eq(rc, 0, "@%lld: %s", (long long)when, amber_error_last());
		cr_assert_str_eq(got, ids[want], "@%lld: got a snapshot other than #%d",
				 (long long)when, want);
	}
	amber_archive_free(a);
}

/* The record of a snapshot. */
static void record_of(amber_record *r, amber_archive *a, const char *id)
{
	uint8_t oid[20];

	cr_assert_eq(amber_oid_fromhex(oid, id), 0);
	OK(amber_record_read(r, a, oid));
}

Test(history, records_carry_height_and_links_to_ancestors_at_powers_of_two)
{
	char ids[12][AMBER_OID_HEXSZ + 1];
	int64_t t[12];
	amber_archive *a = new_archive();
	amber_record r;

	history(a, ids, t, 12);
	for (int i = 0; i < 12; i++) {
		uint64_t h = (uint64_t)i + 1;

		record_of(&r, a, ids[i]);
		cr_assert_eq(r.height, h, "snapshot #%d has height %llu", i,
			     (unsigned long long)r.height);
		cr_assert_eq(r.nskip, amber_skip_count(h));
		for (size_t k = 0; k < r.nskip; k++) {
			int anc = (int)(h - (1ULL << k)) - 1;
			char hex[41];

			amber_oid_tohex(hex, r.skip[k].oid);
			cr_assert_str_eq(hex, ids[anc], "#%d link %zu", i, k);
			cr_assert_eq(r.skip[k].time_ns, t[anc], "#%d link %zu time", i, k);
		}
		amber_record_dispose(&r);
	}
	cr_assert_eq(amber_skip_count(1), 0);
	cr_assert_eq(amber_skip_count(8), 3);
	cr_assert_eq(amber_skip_count(12), 3);
	cr_assert_eq(amber_skip_count(7), 1);
	amber_archive_free(a);
}

Test(history, an_empty_cache_resolves_without_walking_the_history)
{
	static char ids[200][AMBER_OID_HEXSZ + 1];
	static int64_t t[200];
	amber_archive *a = new_archive(), *b = NULL;
	amber_timeline *tl = NULL;
	char got[AMBER_OID_HEXSZ + 1], tlfile[4400];
	struct stat st;

	history(a, ids, t, 200);
	amber_archive_free(a);
	amber_open_opts fresh = caches_in("fresh-cache");

	OK(amber_archive_open_ext(&b, at("arch"), &fresh));
	snprintf(tlfile, sizeof(tlfile), "%s/fresh-cache/%s/timeline-main", base,
		 amber_archive_id(b));
	OK(resolve_ns(got, b, t[77] + 1));
	cr_assert_str_eq(got, ids[77]);
	OK(resolve_ns(got, b, t[150]));
	cr_assert_str_eq(got, ids[150]);
	cr_assert_neq(stat(tlfile, &st), 0, "resolving @TIME walked the history into %s",
		      tlfile);
	/* the walk it no longer needs does leave that file */
	OK(amber_timeline_open(&tl, b, NULL));
	amber_timeline_free(tl);
	cr_assert_eq(stat(tlfile, &st), 0, "%s: the walk left no time line", tlfile);
	amber_archive_free(b);
}

/* A record with the fields a real one has, at `height` (0: layout 1). */
static void sample_record(amber_record *r, amber_buf *meta, uint64_t height)
{
	amber_entry root = {0};

	memset(r, 0, sizeof(*r));
	root.name = "root";
	root.name_len = 4;
	root.type = AMBER_T_DIR;
	root.mode = 0755;
	root.nlink = 2;
	root.content = AMBER_C_DIR;
	memset(root.tree_oid, 0x11, 20);
	memset(root.link.oid, 0x22, 20);
	OK(amber_manifest_encode(meta, &root, 1));
	memcpy(r->tree, root.tree_oid, 20);
	r->root = root.link;
	r->root_content = AMBER_C_DIR;
	r->root_meta = meta->data;
	r->root_meta_len = meta->len;
	snprintf(r->stream, sizeof(r->stream), "main");
	r->time_ns = T0;
	r->height = height;
	r->has_parent = height != 1;
	memset(r->parent, 0x33, 20);
	r->nskip = height ? amber_skip_count(height) : 0;
	for (size_t k = 0; k < r->nskip; k++) {
		memset(r->skip[k].oid, 0x40 + (int)k, 20);
		r->skip[k].time_ns = T0 - 1000 * (int64_t)(k + 1);
	}
	if (r->nskip)
		memset(r->skip[0].oid, 0x33, 20);
}

Test(history, layout_1_records_still_decode_without_an_index)
{
	amber_buf meta = AMBER_BUF_INIT, enc = AMBER_BUF_INIT;
	amber_record r, d;

	sample_record(&r, &meta, 0);
	OK(amber_record_encode(&enc, &r));
	cr_assert_eq(enc.data[0], 1, "a record without height is written as layout 1");
	OK(amber_record_decode(&d, enc.data, enc.len));
	cr_assert_eq(d.height, 0);
	cr_assert_eq(d.nskip, 0);
	cr_assert_eq(d.time_ns, T0);
	amber_record_dispose(&d);
	amber_buf_dispose(&enc);
	amber_buf_dispose(&meta);
}

Test(history, layout_2_round_trips_and_rejects_a_wrong_link_count)
{
	amber_buf meta = AMBER_BUF_INIT, enc = AMBER_BUF_INIT;
	amber_record r, d;

	sample_record(&r, &meta, 24);
	OK(amber_record_encode(&enc, &r));
	cr_assert_eq(enc.data[0], 2);
	OK(amber_record_decode(&d, enc.data, enc.len));
	cr_assert_eq(d.height, 24);
	cr_assert_eq(d.nskip, 4);
	cr_assert_eq(memcmp(d.skip, r.skip, 4 * sizeof(r.skip[0])), 0);
	amber_record_dispose(&d);
	/* one link too many: the count byte is the last but 4 * 28 bytes */
	enc.data[enc.len - 4 * 28 - 1] = 5;
	cr_assert_eq(amber_record_decode(&d, enc.data, enc.len), AMBER_ECORRUPT);
	r.nskip = 3;
	amber_buf_dispose(&enc);
	cr_assert_eq(amber_record_encode(&enc, &r), AMBER_EINVAL);
	amber_buf_dispose(&enc);
	amber_buf_dispose(&meta);
}

/* ---- a forged skip link --------------------------------------------------------------- */

static int run(const char *cmd)
{
	int st = system(cmd);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Re-encrypt record r into a new commit for the tip; move the ref to it. */
static void rewrite_tip(amber_archive *a, const amber_record *r, const uint8_t parent[20])
{
	amber_buf rec = AMBER_BUF_INIT, frame = AMBER_BUF_INIT, c = AMBER_BUF_INIT;
	uint8_t mac[AMBER_MAC_BYTES];
	char t9[40], cmd[9000], b64[4096], *msg;
	size_t ml;

	OK(amber_record_encode(&rec, r));
	OK(amber_codec_encode(&frame, mac, amber_archive_keys(a), AMBER_OBJ_RECORD, rec.data,
			      rec.len, 0));
	cr_assert_lt(sodium_base64_ENCODED_LEN(frame.len, sodium_base64_VARIANT_ORIGINAL),
		     sizeof(b64));
	sodium_bin2base64(b64, sizeof(b64), frame.data, frame.len, sodium_base64_VARIANT_ORIGINAL);
	amber_time_format(t9, r->time_ns, 9);
	ml = strlen(b64) + 200;
	msg = malloc(ml);
	snprintf(msg, ml, "amberfs snapshot %s\n\nAmberfs-Time: %s\nAmberfs-Record: %s\n", t9, t9,
		 b64);
	OK(amber_commit_build(&c, r->tree, parent, r->time_ns / 1000000000, msg));
	write_file(at("forged"), c.data, c.len);
	snprintf(cmd, sizeof(cmd),
		 "id=$(git --git-dir='%s' hash-object -w -t commit '%s') && "
		 "git --git-dir='%s' update-ref refs/heads/main $id",
		 at("arch"), at("forged"), at("arch"));
	cr_assert_eq(run(cmd), 0, "writing the forged commit");
	free(msg);
	amber_buf_dispose(&c);
	amber_buf_dispose(&frame);
	amber_buf_dispose(&rec);
}

typedef struct seen {
	int history, total;
} seen;

static void on_problem(const amber_verify_problem *p, void *payload)
{
	seen *s = payload;

	s->total++;
	s->history += p->kind == AMBER_VERIFY_HISTORY && strstr(p->message, "skip link");
}

static void count_history(const amber_verify_problem *p, void *payload)
{
	*(int *)payload += p->kind == AMBER_VERIFY_HISTORY;
}

static seen verify_run(amber_archive *a)
{
	amber_verify_opts o = AMBER_VERIFY_OPTS_INIT;
	amber_verify_stats st = AMBER_VERIFY_STATS_INIT;
	seen s = {0, 0};

	o.no_marks = 1;
	o.problem = on_problem;
	o.payload = &s;
	OK(amber_verify(&st, a, &o));
	return s;
}

Test(history, verify_reports_a_forged_skip_link)
{
	char ids[8][AMBER_OID_HEXSZ + 1];
	int64_t t[8];
	amber_archive *a = new_archive();
	amber_record r;
	seen s;

	history(a, ids, t, 8);
	s = verify_run(a);
	cr_assert_eq(s.total, 0, "the untouched archive has %d problems", s.total);
	/* height 8 links to 7, 6 and 4; point the last at #3 (height 3) instead */
	record_of(&r, a, ids[7]);
	cr_assert_eq(r.nskip, 3);
	cr_assert_eq(amber_oid_fromhex(r.skip[2].oid, ids[2]), 0);
	r.skip[2].time_ns = t[2];
	rewrite_tip(a, &r, r.parent);
	amber_record_dispose(&r);
	amber_archive_free(a);
	amber_open_opts oo = caches_in("cache");

	OK(amber_archive_open_ext(&a, at("arch"), &oo));
	s = verify_run(a);
	cr_assert_geq(s.history, 1, "verify did not report the forged skip link (%d problems)",
		      s.total);
	amber_archive_free(a);
}

/* ---- index pages ---------------------------------------------------------------------- */

#define PAGED 23        /* span 4: pages at heights 5, 9, .., 21, and a tail of 2 */
#define SPAN 4

/* amber_history_list over [start, end) against a linear scan of t. */
static void expect_span(amber_archive *a, char (*ids)[AMBER_OID_HEXSZ + 1], const int64_t *t,
			int n, int64_t start, int64_t end)
{
	amber_snapref *v = NULL;
	size_t got = 0;
	int k = 0;

	OK(amber_history_list(&v, &got, a, NULL, start, end, 0));
	for (int i = 0; i < n; i++) {
		if (t[i] < start || t[i] >= end)
			continue;
		cr_assert_lt((size_t)k, got, "[%lld, %lld): #%d is missing", (long long)start,
			     (long long)end, i);
		cr_assert_eq(v[k].time_ns, t[i], "[%lld, %lld): entry %d", (long long)start,
			     (long long)end, k);
		cr_assert_str_eq(v[k].id, ids[i], "[%lld, %lld): entry %d", (long long)start,
				 (long long)end, k);
		k++;
	}
	cr_assert_eq(got, (size_t)k, "[%lld, %lld): %zu listed, %d expected", (long long)start,
		     (long long)end, got, k);
	free(v);
}

Test(history, index_pages_list_every_span_like_a_walk_of_the_chain)
{
	static char ids[PAGED][AMBER_OID_HEXSZ + 1];
	static int64_t t[PAGED];
	amber_archive *a = new_archive_span(SPAN);
	amber_record r;
	uint64_t s = 11;

	history(a, ids, t, PAGED);
	for (int i = 0; i < PAGED; i++) {
		uint64_t h = (uint64_t)i + 1;

		record_of(&r, a, ids[i]);
		cr_assert_eq(r.page_span, SPAN, "#%d: span %u", i, r.page_span);
		cr_assert_eq(r.page_height, (h - 1) / SPAN * SPAN, "#%d names the page ending at "
			     "%llu", i, (unsigned long long)r.page_height);
		amber_record_dispose(&r);
	}
	expect_span(a, ids, t, PAGED, INT64_MIN, INT64_MAX);
	for (int i = 0; i < PAGED; i++)         /* each one alone, by its exact time */
		expect_span(a, ids, t, PAGED, t[i], t[i] + 1);
	for (int q = 0; q < 300; q++) {
		int i, j;

		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		i = (int)((s >> 33) % PAGED);
		j = (int)((s >> 45) % PAGED);
		expect_span(a, ids, t, PAGED, t[i < j ? i : j] - (int64_t)(s & 1),
			    t[i < j ? j : i] + (int64_t)((s >> 1) & 1));
	}
	amber_archive_free(a);
}

Test(history, a_stream_without_pages_asks_for_a_walk_and_keeps_working)
{
	char ids[6][AMBER_OID_HEXSZ + 1];
	int64_t t[6];
	amber_archive *a = new_archive_span(SPAN);
	amber_snapref *v = NULL;
	amber_record r;
	size_t n = 9;

	OK(amber_history_list(&v, &n, a, NULL, INT64_MIN, INT64_MAX, 0));
	cr_assert_eq(n, 0, "an empty stream lists nothing");
	history(a, ids, t, 6);
	/* the tip rewritten as a layout 2 record: written before pages */
	record_of(&r, a, ids[5]);
	r.page_span = 0;
	r.page_height = 0;
	memset(&r.page, 0, sizeof(r.page));
	rewrite_tip(a, &r, r.parent);
	amber_record_dispose(&r);
	cr_assert_eq(amber_history_list(&v, &n, a, NULL, INT64_MIN, INT64_MAX, 0), 1,
		     "records without pages must ask for a walk");
	amber_archive_free(a);
}

/* Store a page payload as a frame; its link. */
static amber_link put_page(amber_archive *a, const amber_page *pg)
{
	amber_buf enc = AMBER_BUF_INIT, frame = AMBER_BUF_INIT;
	amber_link l;
	char cmd[9000], hex[41];
	FILE *p;

	OK(amber_page_encode(&enc, pg));
	OK(amber_codec_encode(&frame, l.mac, amber_archive_keys(a), AMBER_OBJ_PAGE, enc.data,
			      enc.len, 0));
	write_file(at("page"), frame.data, frame.len);
	snprintf(cmd, sizeof(cmd), "git --git-dir='%s' hash-object -w -t blob '%s'", at("arch"),
		 at("page"));
	p = popen(cmd, "r");
	cr_assert(p && fgets(hex, sizeof(hex), p), "hash-object of the page");
	pclose(p);
	cr_assert_eq(amber_oid_fromhex(l.oid, hex), 0);
	amber_buf_dispose(&frame);
	amber_buf_dispose(&enc);
	return l;
}

/* #8 (height 9 with span 4, the record that writes the page of heights 5..8)
 * rewritten to name a page built by `edit`, and made the tip. */
static void forge_page(amber_archive *a, char (*ids)[AMBER_OID_HEXSZ + 1], const int64_t *t,
		       void (*edit)(amber_page *pg, char (*ids)[AMBER_OID_HEXSZ + 1]))
{
	amber_page pg = {0};
	amber_page_ent v[SPAN];
	amber_record r;

	pg.first = 5;
	pg.n = SPAN;
	pg.v = v;
	for (int i = 0; i < SPAN; i++) {
		v[i].time_ns = t[4 + i];
		cr_assert_eq(amber_oid_fromhex(v[i].oid, ids[4 + i]), 0);
	}
	record_of(&r, a, ids[4]);               /* height 5 names page 1 (heights 1..4) */
	pg.prev_height = r.page_height;
	pg.prev = r.page;
	amber_record_dispose(&r);
	edit(&pg, ids);
	record_of(&r, a, ids[8]);
	cr_assert_eq(r.page_height, 8);
	r.page = put_page(a, &pg);
	rewrite_tip(a, &r, r.parent);
	amber_record_dispose(&r);
}

static void swap_middle(amber_page *pg, char (*ids)[AMBER_OID_HEXSZ + 1])
{
	cr_assert_eq(amber_oid_fromhex(pg->v[1].oid, ids[0]), 0);     /* #5 listed as #0 */
}

static void swap_last(amber_page *pg, char (*ids)[AMBER_OID_HEXSZ + 1])
{
	cr_assert_eq(amber_oid_fromhex(pg->v[SPAN - 1].oid, ids[0]), 0);
}

static void shift_first(amber_page *pg, char (*ids)[AMBER_OID_HEXSZ + 1])
{
	pg->v[0].time_ns -= 1;
}

static int history_problems(amber_archive *a)
{
	amber_verify_opts o = AMBER_VERIFY_OPTS_INIT;
	amber_verify_stats st = AMBER_VERIFY_STATS_INIT;
	int n = 0;

	o.no_marks = 1;
	o.problem = count_history;
	o.payload = &n;
	OK(amber_verify(&st, a, &o));
	return n;
}

Test(history, a_forged_index_page_is_an_error_or_a_verify_problem_never_a_wrong_name)
{
	static void (*const edits[])(amber_page *, char (*)[AMBER_OID_HEXSZ + 1]) = {
		swap_last, shift_first, swap_middle,
	};
	char ids[10][AMBER_OID_HEXSZ + 1];
	int64_t t[10];
	amber_archive *a = new_archive_span(SPAN);
	amber_snapref *v = NULL;
	size_t n = 0;

	history(a, ids, t, 10);
	cr_assert_eq(history_problems(a), 0, "the untouched archive has index problems");
	for (size_t e = 0; e < 3; e++) {
		char cmd[4400];
		int rc;

		forge_page(a, ids, t, edits[e]);
		rc = amber_history_list(&v, &n, a, NULL, t[4], t[8] + 1, 0);
		/* the ends of a page are checked against the chain by every reader; an
		 * entry inside it by verify (and the mount checks the time of a snapshot
		 * it opens by name against its record) */
		if (e < 2)
			cr_assert(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT,
				  "forgery %zu: listing gave %d, not an error", e, rc);
		else
			free(v);
		cr_assert_geq(history_problems(a), 1, "verify missed forged page %zu", e);
		snprintf(cmd, sizeof(cmd), "git --git-dir='%s' update-ref refs/heads/main %s",
			 at("arch"), ids[9]);
		cr_assert_eq(run(cmd), 0, "back to the real tip");
	}
	amber_archive_free(a);
}

/* Output of a shell command (at most 8 KiB). */
static char *output_of(const char *cmd)
{
	static char buf[8192];
	FILE *p = popen(cmd, "r");
	size_t n;

	cr_assert_not_null(p, "%s", cmd);
	n = fread(buf, 1, sizeof(buf) - 1, p);
	buf[n] = '\0';
	pclose(p);
	return buf;
}

Test(history, index_pages_are_reachable_so_gc_keeps_them_and_clones_carry_them)
{
	char ids[11][AMBER_OID_HEXSZ + 1], cmd[9000];
	int64_t t[11];
	amber_archive *a = new_archive_span(SPAN), *b = NULL;
	amber_open_opts oo = AMBER_OPEN_OPTS_INIT;
	const char *out;

	history(a, ids, t, 11);
	amber_archive_free(a);
	snprintf(cmd, sizeof(cmd), "git --git-dir='%s' fsck --full --unreachable --no-progress "
		 "2>&1; echo status $?", at("arch"));
	out = output_of(cmd);
	cr_assert(strstr(out, "status 0") && !strstr(out, "unreachable"),
		  "git fsck finds unreachable objects (pages git gc would delete):\n%s", out);
	snprintf(cmd, sizeof(cmd), "git clone -q --mirror '%s' '%s' 2>&1; echo status $?",
		 at("arch"), at("clone"));
	out = output_of(cmd);
	cr_assert(strstr(out, "status 0"), "clone --mirror: %s", out);
	oo.cache_dir = "";
	OK(amber_archive_open_ext(&b, at("clone"), &oo));
	expect_span(b, ids, t, 11, INT64_MIN, INT64_MAX);
	amber_archive_free(b);
}

Test(history, writer_session_snapshots_carry_the_index)
{
	char ids[6][AMBER_OID_HEXSZ + 1];
	amber_archive *a = new_archive_span(SPAN);
	amber_writer_opts o = AMBER_WRITER_OPTS_INIT;
	amber_writer *w = NULL;
	amber_snapref *v = NULL;
	amber_record r;
	size_t n = 0;

	o.snap.threads = 1;
	OK(amber_writer_open(&w, a, at("src"), &o));
	for (int i = 0; i < 6; i++) {
		char text[32];
		int len = snprintf(text, sizeof(text), "session %d\n", i);

		write_file(at("src/file"), text, (size_t)len);
		cr_assert_eq(amber_writer_snapshot(ids[i], NULL, w, NULL, 0), 0, "snapshot %d: %s",
			     i, amber_error_last());
	}
	OK(amber_writer_close(w));
	for (int i = 0; i < 6; i++) {
		record_of(&r, a, ids[i]);
		cr_assert_eq(r.height, (uint64_t)i + 1, "session snapshot %d has height %llu", i,
			     (unsigned long long)r.height);
		cr_assert_eq(r.page_height, i >= SPAN ? SPAN : 0, "session snapshot %d", i);
		amber_record_dispose(&r);
	}
	OK(amber_history_list(&v, &n, a, NULL, INT64_MIN, INT64_MAX, 0));
	cr_assert_eq(n, 6, "the index lists %zu of 6 session snapshots", n);
	for (size_t i = 0; i < n; i++)
		cr_assert_str_eq(v[i].id, ids[i]);
	free(v);
	amber_archive_free(a);
}
