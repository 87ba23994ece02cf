/*
 * Hostile archives against layout 2 of the format (amberfs-format(5)): the
 * tree of fan-out nodes of a large directory and the paged chunk index of
 * a large file.  One real plain archive is made by amberfs (small chunker
 * sizes in its config, so that a 1.5 MiB file has three index pages); each
 * case rewrites some of its layout-2 objects as a forger who can write the
 * archive would, commits the result as a snapshot, and drives it through
 * `verify --read-data`, `restore` and a real mount: the damage is named,
 * and nothing but the source's bytes is ever served or restored.
 *
 * The forger speaks the format through libamber's encoders, as in
 * test_hostile.c, and writes its objects into a pack of its own.
 */
#include "forge.h"
#include "helpers.h"

#include "amber.h"
#include "buf.h"
#include "codec.h"
#include "gitobj.h"
#include "manifest.h"
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(hostile_layout, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

#define NFILES 1100                 /* > 1024: fans out, 8 bits, two levels of nodes */
#define LEDGER_SIZE ((size_t)3 << 19) /* 1.5 MiB: about 170 chunks, three pages */
#define OTHER_SIZE ((size_t)1 << 20)

/* ------------------------------------------------------------------ */
/* The forger (as in test_hostile.c, reading and writing in-process)   */

static amber_store *ST; /* the archive, opened once its snapshot exists */

/* The object `a2` (hex) of type a1, read in-process: what `git cat-file a1
 * a2` prints, without a process per object.  (a0 is "cat-file".) */
char *git_bytes(const char *arch, size_t *len, const char *a0, const char *a1,
		       const char *a2)
{
	amber_buf b = AMBER_BUF_INIT;
	uint8_t oid[20];
	int type = 0, want = strcmp(a1, "blob") == 0 ? AMBER_GIT_BLOB
			     : strcmp(a1, "tree") == 0 ? AMBER_GIT_TREE : AMBER_GIT_COMMIT;

	(void)arch;
	(void)a0;
	cr_assert(ST);
	cr_assert_eq(amber_oid_fromhex(oid, a2), 0);
	cr_assert_eq(amber_store_read(&b, &type, ST, oid, (size_t)64 << 20), 0, "read %s: %s", a2,
		     amber_error_last());
	cr_assert_eq(type, want, "%s is not a %s", a2, a1);
	char *data = malloc(b.len + 1);
	memcpy(data, b.data, b.len);
	data[b.len] = '\0';
	*len = b.len;
	amber_buf_dispose(&b);
	return data;
}

/* The forged objects go into one pack, written in-process (a `git
 * hash-object` run per object would cost seconds); a forger with write
 * access can write any pack.  WRITTEN: the ids a case wrote. */
static amber_packw *W;
#define MAX_WRITTEN 64
static char WRITTEN[MAX_WRITTEN][41];
static size_t NWRITTEN;

void put_obj(uint8_t oid[20], const char *arch, const char *type, const void *data,
		    size_t len)
{
	int t = strcmp(type, "blob") == 0 ? AMBER_GIT_BLOB
		: strcmp(type, "tree") == 0 ? AMBER_GIT_TREE : AMBER_GIT_COMMIT;

	(void)arch;
	cr_assert(W, "no pack writer");
	cr_assert_eq(amber_packw_add(oid, NULL, W, t, data, len), 0, "%s", amber_error_last());
	if (NWRITTEN < MAX_WRITTEN)
		amber_oid_tohex(WRITTEN[NWRITTEN++], oid);
}

static void pack_begin(const char *arch)
{
	if (!ST) {
		cr_assert_eq(amber_global_init(), 0);
		cr_assert_eq(amber_store_open(&ST, arch), 0, "%s", amber_error_last());
	}
	cr_assert_eq(amber_packw_new(&W, ST), 0, "%s", amber_error_last());
	NWRITTEN = 0;
}

static void pack_end(void)
{
	cr_assert_eq(amber_packw_commit(W), 0, "%s", amber_error_last());
	amber_packw_free(W);
	W = NULL;
}


/* ------------------------------------------------------------------ */
/* Editing git trees and layout-2 objects                              */

/* A tree's entries, to edit and store again. */
typedef struct tedit {
	amber_tentry *t;
	size_t n;
} tedit;

static void tree_load(tedit *te, const char *arch, const uint8_t oid[20])
{
	char hex[41];
	size_t len = 0, n = 0;
	amber_tparsed *p = NULL;

	amber_oid_tohex(hex, oid);
	char *raw = git_bytes(arch, &len, "cat-file", "tree", hex);
	cr_assert_eq(amber_tree_parse(&p, &n, (uint8_t *)raw, len, hex), 0);
	te->t = calloc(n + 1, sizeof(*te->t));
	te->n = n;
	for (size_t i = 0; i < n; i++) {
		if (p[i].name_len < sizeof(te->t[i].name))
			memcpy(te->t[i].name, p[i].name, p[i].name_len);
		else
			te->t[i].longname = strndup(p[i].name, p[i].name_len);
		te->t[i].mode = p[i].mode;
		memcpy(te->t[i].oid, p[i].oid, 20);
	}
	free(p);
	free(raw);
}

static amber_tentry *tree_entry(tedit *te, const char *name)
{
	for (size_t i = 0; i < te->n; i++)
		if (strcmp(amber_tentry_name(&te->t[i]), name) == 0)
			return &te->t[i];
	cr_assert(0, "no tree entry %s", name);
	return NULL;
}

static void tree_store(uint8_t oid[20], const char *arch, tedit *te)
{
	amber_buf b = AMBER_BUF_INIT;

	cr_assert_eq(amber_tree_build(&b, te->t, te->n), 0);
	put_obj(oid, arch, "tree", b.data, b.len);
	amber_buf_dispose(&b);
	for (size_t i = 0; i < te->n; i++)
		free((char *)te->t[i].longname);
	free(te->t);
}

static void get_node(amber_fanout_node *nd, const char *arch, const amber_link *m)
{
	amber_buf b = AMBER_BUF_INIT;

	get_framed(&b, arch, AMBER_OBJ_FANOUT, m);
	cr_assert_eq(amber_fanout_node_decode(nd, b.data, b.len), 0, "%s", amber_error_last());
	amber_buf_dispose(&b);
}

/* Store nd (its payload cut short by `cut` bytes) as the "m" of a tree
 * holding its children under their names; *m and tree get the new ids. */
static void put_node(amber_link *m, uint8_t tree[20], const char *arch,
		     const amber_fanout_node *nd, size_t cut)
{
	amber_buf b = AMBER_BUF_INIT;
	amber_tentry t[AMBER_FANOUT_NODE_MAX + 1];
	unsigned w = amber_fanout_width(nd->bits, nd->level);
	int last = nd->level + 1 == amber_fanout_levels(nd->bits);

	memset(t, 0, sizeof(t));
	cr_assert_eq(amber_fanout_node_encode(&b, nd), 0);
	cr_assert(b.len > cut);
	put_framed(m, arch, AMBER_OBJ_FANOUT, b.data, b.len - cut);
	snprintf(t[0].name, sizeof(t[0].name), "m");
	t[0].mode = AMBER_GIT_MODE_BLOB;
	memcpy(t[0].oid, m->oid, 20);
	for (size_t i = 0; i < nd->n; i++) {
		if (last)
			snprintf(t[i + 1].name, sizeof(t[i + 1].name), "b%04x",
				 (nd->prefix << w) | nd->c[i].id);
		else
			snprintf(t[i + 1].name, sizeof(t[i + 1].name), "f%x", nd->c[i].id);
		t[i + 1].mode = AMBER_GIT_MODE_TREE;
		memcpy(t[i + 1].oid, nd->c[i].tree_oid, 20);
	}
	amber_buf_reset(&b);
	cr_assert_eq(amber_tree_build(&b, t, nd->n + 1), 0);
	put_obj(tree, arch, "tree", b.data, b.len);
	amber_buf_dispose(&b);
}

#define CHUNK_MAX 16384 /* the archive's chunker maximum (see make_archive) */

static size_t get_root(amber_indexpage **p, const char *arch, const amber_entry *e)
{
	amber_buf b = AMBER_BUF_INIT;
	size_t n = 0;

	get_framed(&b, arch, AMBER_OBJ_INDEX, &e->link);
	cr_assert_eq(amber_index_layout(b.data, b.len), 2, "%s should have a paged index", e->name);
	cr_assert_eq(amber_index_root_decode(p, &n, b.data, b.len, e->size, CHUNK_MAX), 0, "%s",
		     amber_error_last());
	amber_buf_dispose(&b);
	return n;
}

/* Store a paged index root and its tree (i, p00000..) for e. */
static void put_root(const char *arch, amber_entry *e, const amber_indexpage *p, size_t n)
{
	amber_buf b = AMBER_BUF_INIT;
	amber_tentry *t = calloc(n + 1, sizeof(*t));

	cr_assert_eq(amber_index_root_encode(&b, p, n), 0);
	put_framed(&e->link, arch, AMBER_OBJ_INDEX, b.data, b.len);
	snprintf(t[0].name, sizeof(t[0].name), "i");
	t[0].mode = AMBER_GIT_MODE_BLOB;
	memcpy(t[0].oid, e->link.oid, 20);
	for (size_t i = 0; i < n; i++) {
		snprintf(t[i + 1].name, sizeof(t[i + 1].name), "p%05zu", i);
		t[i + 1].mode = AMBER_GIT_MODE_TREE;
		memcpy(t[i + 1].oid, p[i].tree_oid, 20);
	}
	amber_buf_reset(&b);
	cr_assert_eq(amber_tree_build(&b, t, n + 1), 0);
	put_obj(e->tree_oid, arch, "tree", b.data, b.len);
	amber_buf_dispose(&b);
	free(t);
}

static size_t get_page(amber_chunkref **c, const char *arch, const amber_indexpage *p)
{
	amber_buf b = AMBER_BUF_INIT;
	size_t n = 0;

	get_framed(&b, arch, AMBER_OBJ_INDEX, &p->link);
	cr_assert_eq(amber_index_decode(c, &n, b.data, b.len, p->bytes, CHUNK_MAX), 0, "%s",
		     amber_error_last());
	amber_buf_dispose(&b);
	return n;
}

/* Store a page's layout-1 index (cut short by `cut` bytes) and its chunk
 * tree; p's link and tree_oid get the new ids. */
static void put_page(amber_indexpage *p, const char *arch, const amber_chunkref *c, size_t n,
		     size_t cut)
{
	amber_buf b = AMBER_BUF_INIT;
	amber_tentry *t = calloc(n + 1, sizeof(*t));

	cr_assert_eq(amber_index_encode(&b, c, n), 0);
	put_framed(&p->link, arch, AMBER_OBJ_INDEX, b.data, b.len - cut);
	for (size_t i = 0; i < n; i++) {
		snprintf(t[i].name, sizeof(t[i].name), "c%08zu", i);
		t[i].mode = AMBER_GIT_MODE_BLOB;
		memcpy(t[i].oid, c[i].link.oid, 20);
	}
	snprintf(t[n].name, sizeof(t[n].name), "i");
	t[n].mode = AMBER_GIT_MODE_BLOB;
	memcpy(t[n].oid, p->link.oid, 20);
	amber_buf_reset(&b);
	cr_assert_eq(amber_tree_build(&b, t, n + 1), 0);
	put_obj(p->tree_oid, arch, "tree", b.data, b.len);
	amber_buf_dispose(&b);
	free(t);
}

/* ------------------------------------------------------------------ */
/* The cases: each edits the root of a forged snapshot                 */

static amber_entry *fanned_dir(forge *f, amber_fanout_node *n0)
{
	amber_entry *d = forge_find(f, "d");

	get_node(n0, f->arch, &d->link);
	cr_assert(n0->level == 0 && amber_fanout_levels(n0->bits) == 2 && n0->n >= 2,
		  "d should fan out in two levels of nodes (bits %u, %zu children)", n0->bits,
		  n0->n);
	return d;
}

/* (a) child 0 of the top node is child 1's node, a valid node of the archive */
static void fanout_node_swapped(forge *f)
{
	amber_fanout_node n0;
	amber_entry *d = fanned_dir(f, &n0);

	n0.c[0].count = n0.c[1].count;
	memcpy(n0.c[0].tree_oid, n0.c[1].tree_oid, 20);
	n0.c[0].link = n0.c[1].link;
	put_node(&d->link, d->tree_oid, f->arch, &n0, 0);
}

/* (b) child 0 of the top node refers back to the top node itself (as the
 * genuine snapshot stores it: a tree cannot name its own id) */
static void fanout_node_refers_back(forge *f)
{
	amber_fanout_node n0;
	amber_entry *d = fanned_dir(f, &n0);

	memcpy(n0.c[0].tree_oid, d->tree_oid, 20);
	n0.c[0].link = d->link;
	put_node(&d->link, d->tree_oid, f->arch, &n0, 0);
}

/* (b) a bucket's entry count forged, and its parents' sums made to agree */
static void fanout_count_forged(forge *f)
{
	amber_fanout_node n0, n1;
	amber_entry *d = fanned_dir(f, &n0);

	get_node(&n1, f->arch, &n0.c[0].link);
	n1.c[0].count++;
	n0.c[0].count++;
	put_node(&n0.c[0].link, n0.c[0].tree_oid, f->arch, &n1, 0);
	put_node(&d->link, d->tree_oid, f->arch, &n0, 0);
}

/* (b) a bucket outside the node's range: node 0's first bucket is node 1's
 * first bucket (entries whose tokens belong elsewhere), counts agreeing */
static void fanout_bucket_out_of_range(forge *f)
{
	amber_fanout_node n0, n1, n1b;
	amber_entry *d = fanned_dir(f, &n0);

	get_node(&n1, f->arch, &n0.c[0].link);
	get_node(&n1b, f->arch, &n0.c[1].link);
	n0.c[0].count += n1b.c[0].count - n1.c[0].count;
	n1.c[0].count = n1b.c[0].count;
	memcpy(n1.c[0].tree_oid, n1b.c[0].tree_oid, 20);
	n1.c[0].link = n1b.c[0].link;
	put_node(&n0.c[0].link, n0.c[0].tree_oid, f->arch, &n1, 0);
	put_node(&d->link, d->tree_oid, f->arch, &n0, 0);
}

/* (e) a level-1 node whose payload is cut short (well framed) */
static void fanout_node_truncated(forge *f)
{
	amber_fanout_node n0, n1;
	amber_entry *d = fanned_dir(f, &n0);

	get_node(&n1, f->arch, &n0.c[1].link);
	put_node(&n0.c[1].link, n0.c[1].tree_oid, f->arch, &n1, 30);
	put_node(&d->link, d->tree_oid, f->arch, &n0, 0);
}

static amber_entry *paged_file(forge *f, const char *name, amber_indexpage **p, size_t *n)
{
	amber_entry *e = forge_find(f, name);

	cr_assert_eq(e->content, AMBER_C_CHUNKED);
	*n = get_root(p, f->arch, e);
	cr_assert(*n >= 3 || strcmp(name, "ledger") != 0, "ledger should have 3 pages, has %zu",
		  *n);
	return e;
}

/* (c) the chunk tree's p00000 and p00001 swapped, the root index unchanged */
static void index_tree_pages_swapped(forge *f)
{
	amber_entry *e = forge_find(f, "ledger");
	tedit te;
	uint8_t tmp[20];

	tree_load(&te, f->arch, e->tree_oid);
	amber_tentry *a = tree_entry(&te, "p00000"), *b = tree_entry(&te, "p00001");
	memcpy(tmp, a->oid, 20);
	memcpy(a->oid, b->oid, 20);
	memcpy(b->oid, tmp, 20);
	tree_store(e->tree_oid, f->arch, &te);
}

/* (c) the root's page 0 is page 1 (same chunk count, other bytes) */
static void index_page_from_another_position(forge *f)
{
	amber_indexpage *p = NULL;
	size_t n = 0;
	amber_entry *e = paged_file(f, "ledger", &p, &n);

	memcpy(p[0].tree_oid, p[1].tree_oid, 20);
	p[0].link = p[1].link;
	put_root(f->arch, e, p, n);
	free(p);
}

/* (c) the root's page 1 is another file's page 0 */
static void index_page_of_another_file(forge *f)
{
	amber_indexpage *p = NULL, *o = NULL;
	size_t n = 0, on = 0;
	amber_entry *e = paged_file(f, "ledger", &p, &n);

	paged_file(f, "other", &o, &on);
	memcpy(p[1].tree_oid, o[0].tree_oid, 20);
	p[1].link = o[0].link;
	put_root(f->arch, e, p, n);
	free(o);
	free(p);
}

/* (d) page 0's index moves one byte from chunk 1 to chunk 0 (same total) */
static void index_page_lengths_forged(forge *f)
{
	amber_indexpage *p = NULL;
	amber_chunkref *c = NULL;
	size_t n = 0;
	amber_entry *e = paged_file(f, "ledger", &p, &n);
	size_t cn = get_page(&c, f->arch, &p[0]);

	cr_assert(cn == AMBER_INDEX_PAGE && c[1].len > 1);
	c[0].len++;
	c[1].len--;
	put_page(&p[0], f->arch, c, cn, 0);
	put_root(f->arch, e, p, n);
	free(c);
	free(p);
}

/* (d) the root says the last page holds one chunk fewer than it does */
static void index_page_count_forged(forge *f)
{
	amber_indexpage *p = NULL;
	size_t n = 0;
	amber_entry *e = paged_file(f, "ledger", &p, &n);

	p[n - 1].chunks--;
	put_root(f->arch, e, p, n);
	free(p);
}

/* (d) page 0 is the file's own root index (pages do not nest) */
static void index_page_is_the_root(forge *f)
{
	amber_indexpage *p = NULL;
	size_t n = 0;
	amber_entry *e = paged_file(f, "ledger", &p, &n);

	memcpy(p[0].tree_oid, e->tree_oid, 20);
	p[0].link = e->link;
	put_root(f->arch, e, p, n);
	free(p);
}

/* (e) page 1's index payload cut short (well framed) */
static void index_page_truncated(forge *f)
{
	amber_indexpage *p = NULL;
	amber_chunkref *c = NULL;
	size_t n = 0;
	amber_entry *e = paged_file(f, "ledger", &p, &n);
	size_t cn = get_page(&c, f->arch, &p[1]);

	put_page(&p[1], f->arch, c, cn, 20);
	put_root(f->arch, e, p, n);
	free(c);
	free(p);
}

/* (e) page 1's index object cut short (its frame truncated, link's mac kept) */
static void index_page_object_truncated(forge *f)
{
	amber_indexpage *p = NULL;
	size_t n = 0, len = 0;
	amber_entry *e = paged_file(f, "ledger", &p, &n);
	char hex[41];
	tedit te;

	amber_oid_tohex(hex, p[1].link.oid);
	char *raw = git_bytes(f->arch, &len, "cat-file", "blob", hex);
	cr_assert(len > 40);
	put_obj(p[1].link.oid, f->arch, "blob", raw, len - 40);
	tree_load(&te, f->arch, p[1].tree_oid);
	memcpy(tree_entry(&te, "i")->oid, p[1].link.oid, 20);
	tree_store(p[1].tree_oid, f->arch, &te);
	put_root(f->arch, e, p, n);
	free(raw);
	free(p);
}

typedef struct hcase {
	const char *what;
	void (*make)(forge *f);
	const char *damaged; /* the root entry that depends on the damage */
} hcase;

static const hcase CASES[] = {
	{"fan-out node swapped", fanout_node_swapped, "d"},
	{"fan-out node referring back", fanout_node_refers_back, "d"},
	{"fan-out bucket count forged", fanout_count_forged, "d"},
	{"fan-out bucket out of its node's range", fanout_bucket_out_of_range, "d"},
	{"fan-out node truncated", fanout_node_truncated, "d"},
	{"index pages swapped in the tree", index_tree_pages_swapped, "ledger"},
	{"index page from another position", index_page_from_another_position, "ledger"},
	{"index page of another file", index_page_of_another_file, "ledger"},
	{"index page lengths forged", index_page_lengths_forged, "ledger"},
	{"index page chunk count forged", index_page_count_forged, "ledger"},
	{"index page is the root", index_page_is_the_root, "ledger"},
	{"index page truncated", index_page_truncated, "ledger"},
	{"index page object truncated", index_page_object_truncated, "ledger"},
};
#define NCASES (sizeof(CASES) / sizeof(CASES[0]))

/* ------------------------------------------------------------------ */
/* The archive                                                         */

/* Replace the config's chunker line (a plain archive's config is a blob
 * of refs/amberfs/meta), before the first snapshot. */
static void small_chunker(const char *arch)
{
	char *cfg = git_ok(arch, NULL, "cat-file", "blob", "refs/amberfs/meta:config", NULL);
	char *p = strstr(cfg, "chunker ");
	cr_assert(p, "config has no chunker line: %s", cfg);
	char *nl = strchr(p, '\n');
	char *text = xasprintf("%.*schunker fastcdc-gear 4096 8192 %d%s\n", (int)(p - cfg), cfg,
			       CHUNK_MAX, nl ? nl : "");
	char *in0 = pjoin(IT.tmp, "config.in");
	write_str(in0, text);
	char *hex = git_ok(arch, NULL, "hash-object", "-w", in0, NULL);
	free(in0);

	meta_replace(arch, "config", hex);
	free(hex);
	free(text);
	free(cfg);
}

static char *file_text(int i)
{
	return xasprintf("entry %d of the fanned-out directory\n", i);
}

/* src: top.txt, d/ (NFILES files), ledger and other (paged indexes). */
static char *make_archive(char *src, char id[41])
{
	char *d = pjoin(src, "d");
	mkdir_p(d, 0755);
	write_str(pjoin(src, "top.txt"), "top\n");
	write_random_file(pjoin(src, "ledger"), LEDGER_SIZE, 91, 0);
	write_random_file(pjoin(src, "other"), OTHER_SIZE, 92, 0);
	for (int i = 0; i < NFILES; i++) {
		char name[32], *t = file_text(i);
		snprintf(name, sizeof(name), "f%04d", i);
		char *p = pjoin(d, name);
		write_str(p, t);
		free(p);
		free(t);
	}
	free(d);
	char *arch = pjoin(IT.tmp, "archive");
	amber_init_archive(arch, 1);
	small_chunker(arch);
	amber_snapshot_ok(id, arch, src, NULL);
	return arch;
}

/* ------------------------------------------------------------------ */
/* Checks                                                              */

/* verify's problem line for snapshot id names the damaged path and an
 * object the forger wrote for that case (objs). */
static void expect_verify_line(const hcase *c, const char *out, const char *id,
			       char (*objs)[41], size_t nobjs)
{
	char *key = xasprintf("; snapshot %s; ", id);
	const char *at = strstr(out, key);
	cr_assert(at, "%s: verify does not report snapshot %s:\n%s", c->what, id, out);
	const char *bol = at, *eol = strchr(at, '\n');
	while (bol > out && bol[-1] != '\n')
		bol--;
	char *line = strndup(bol, (size_t)(eol ? eol - bol : (long)strlen(bol)));
	char *path = xasprintf("; path /%s", c->damaged);
	cr_assert(strstr(line, path), "%s: verify should name %s: %s", c->what, path, line);
	int named = 0;
	for (const char *o = line; (o = strstr(o, "object ")); o += 7)
		for (size_t i = 0; i < nobjs; i++)
			named |= strncmp(o + 7, objs[i], 40) == 0;
	cr_assert(named, "%s: verify should name a damaged object: %s", c->what, line);
	cr_log_info("%s: %s", c->what, line);
	free(path);
	free(line);
	free(key);
}

/* Bytes of the file at rel in dest, if restored, are a prefix of src's. */
static void restored_prefix(const char *dest, const char *src, const char *rel, const char *what)
{
	char *d = pjoin(dest, rel), *s = pjoin(src, rel);
	struct stat st;
	if (lstat(d, &st) == 0) {
		size_t dl = 0, sl = 0;
		char *db = read_file(d, &dl), *sb = read_file(s, &sl);
		cr_assert(S_ISREG(st.st_mode) && dl <= sl && memcmp(db, sb, dl) == 0,
			  "%s: restore wrote %s with %zu bytes that are not the source's", what, rel,
			  dl);
		free(db);
		free(sb);
	}
	free(s);
	free(d);
}

static void expect_restore_refused(const hcase *c, const char *arch, const char *id,
				   const char *src)
{
	char *dest = pjoin(IT.tmp, "restored");
	run_result r;

	amber(&r, "restore", arch, id, dest, NULL);
	cr_assert(r.status == 1, "%s: restore: exit %d: %s", c->what, r.status, r.err);
	cr_assert(strncmp(r.err, "amberfs: ", 9) == 0, "%s: restore: %s", c->what, r.err);
	cr_assert(strstr(r.err, c->damaged), "%s: restore should name %s: %s", c->what,
		  c->damaged, r.err);
	run_result_dispose(&r);
	restored_prefix(dest, src, "top.txt", c->what);
	restored_prefix(dest, src, "ledger", c->what);
	restored_prefix(dest, src, "other", c->what);
	for (int i = 0; i < NFILES; i++) {
		char rel[32];
		snprintf(rel, sizeof(rel), "d/f%04d", i);
		restored_prefix(dest, src, rel, c->what);
	}
	rm_rf(dest);
	free(dest);
}

/* Read path through the mount: *err the errno that stopped it, 0 at EOF. */
static char *read_mounted(const char *path, size_t *len, int *err)
{
	size_t cap = LEDGER_SIZE + 65536, n = 0;
	char *buf = malloc(cap);
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*err = 0;
	if (fd < 0) {
		*err = errno;
		*len = 0;
		return buf;
	}
	for (;;) {
		ssize_t k = read(fd, buf + n, cap - n < 65536 ? cap - n : 65536);
		if (k < 0)
			*err = errno;
		if (k <= 0 || (n += (size_t)k) == cap)
			break;
	}
	close(fd);
	*len = n;
	return buf;
}

/* path reads back exactly as src (eio_ok: or fails with EIO, having read
 * only the source's bytes); returns 1 if it was EIO. */
static int expect_served(const char *path, const char *src, int eio_ok, const char *what)
{
	size_t len = 0, sl = 0;
	int err = 0;
	char *got = read_mounted(path, &len, &err), *want = read_file(src, &sl);

	cr_assert(err == 0 || (eio_ok && err == EIO), "%s: %s: %s (want the file%s)", what, path,
		  strerror(err), eio_ok ? " or EIO" : "");
	cr_assert(len <= sl && memcmp(got, want, len) == 0,
		  "%s: the mount served %zu bytes of %s that are not the source's", what, len, path);
	cr_assert(err != 0 || len == sl, "%s: %s read %zu bytes of %zu", what, path, len, sl);
	free(got);
	free(want);
	return err == EIO;
}

static void expect_mount(const hcase *c, const char *mnt, const char *id, const char *src)
{
	char *root = xasprintf("%s/ids/%s", mnt, id);
	int dir_damaged = strcmp(c->damaged, "d") == 0, eio = 0;
	static const char *const plain[] = {"top.txt", "other"};

	for (size_t i = 0; i < 2; i++) {
		char *p = pjoin(root, plain[i]), *s = pjoin(src, plain[i]);
		expect_served(p, s, 0, c->what);
		free(p);
		free(s);
	}
	char *p = pjoin(root, "ledger"), *s = pjoin(src, "ledger");
	cr_assert_eq(expect_served(p, s, !dir_damaged, c->what), !dir_damaged,
		     "%s: ledger should be %s", c->what, dir_damaged ? "served" : "EIO");
	free(p);
	free(s);

	/* d: listed and read exactly, or EIO, never a wrong or missing entry */
	char *d = pjoin(root, "d");
	DIR *dd = opendir(d);
	if (!dd) {
		cr_assert_eq(errno, EIO, "%s: opendir d: %s", c->what, strerror(errno));
		eio = 1;
	} else {
		size_t n = 0;
		struct dirent *de;
		errno = 0;
		while ((de = readdir(dd)))
			n += de->d_name[0] != '.';
		if (errno) {
			cr_assert_eq(errno, EIO, "%s: readdir d: %s", c->what, strerror(errno));
			eio = 1;
		} else {
			cr_assert_eq(n, NFILES, "%s: d lists %zu entries", c->what, n);
		}
		closedir(dd);
	}
	/* a sample of the files, and the last (each lookup in a damaged
	 * directory decodes it again: all 1,100 would cost seconds a case) */
	int step = dir_damaged ? 53 : 11;
	for (int i = 0; i < NFILES; i = i + step < NFILES || i == NFILES - 1 ? i + step : NFILES - 1) {
		char rel[32];
		snprintf(rel, sizeof(rel), "d/f%04d", i);
		char *mp = pjoin(root, rel), *sp = pjoin(src, rel);
		eio |= expect_served(mp, sp, dir_damaged, c->what);
		free(mp);
		free(sp);
	}
	cr_assert_eq(eio, dir_damaged, "%s: d should be %s", c->what,
		     dir_damaged ? "EIO" : "served");
	free(d);
	free(root);
}

/*
 * Every case on one archive: each forged snapshot is tagged (verify walks
 * tags), one verify reports them all, restore takes each by id, and one
 * mount serves them all under ids/.
 */
Test(hostile_layout, forged_layout_2_objects_are_named_refused_and_never_served)
{
	char *src = pjoin(IT.tmp, "src"), base[41];
	double t0 = now_s();
	char *arch = make_archive(src, base);
	char *ids[NCASES];
	char objs[NCASES][MAX_WRITTEN][41];
	size_t nobjs[NCASES];
	run_result r;

	pack_begin(arch); /* the cases read only the genuine snapshot's objects */
	for (size_t i = 0; i < NCASES; i++) {
		forge f;
		NWRITTEN = 0;
		forge_open(&f, arch, base);
		CASES[i].make(&f);
		/* verify may name the damaged entry's own object (its index whose
		 * tree was swapped) as well as one the case wrote */
		if (NWRITTEN < MAX_WRITTEN)
			amber_oid_tohex(WRITTEN[NWRITTEN++],
					forge_find(&f, CASES[i].damaged)->link.oid);
		ids[i] = forge_commit(&f);
		forge_dispose(&f);
		memcpy(objs[i], WRITTEN, sizeof(WRITTEN));
		nobjs[i] = NWRITTEN;
	}
	pack_end();
	for (size_t i = 0; i < NCASES; i++) {
		char *tag = xasprintf("%s/refs/tags/case-%02zu", arch, i);
		char *line = xasprintf("%s\n", ids[i]);
		write_str(tag, line);
		free(line);
		free(tag);
	}
	amber_store_free(ST);
	ST = NULL;
	double t1 = now_s();

	amber(&r, "verify", arch, "--read-data", NULL);
	cr_assert_eq(r.status, 1, "verify --read-data: exit %d: %s%s", r.status, r.out, r.err);
	char *summary = xasprintf("verify: %zu problems;", NCASES);
	cr_assert(strstr(r.out, summary), "one problem a case: %s", r.out);
	cr_assert(!strstr(r.out, base), "the genuine snapshot is reported: %s", r.out);
	for (size_t i = 0; i < NCASES; i++)
		expect_verify_line(&CASES[i], r.out, ids[i], objs[i], nobjs[i]);
	free(summary);
	run_result_dispose(&r);
	double t2 = now_s();
	for (size_t i = 0; i < NCASES; i++)
		expect_restore_refused(&CASES[i], arch, ids[i], src);
	double t3 = now_s();

	const char *mnt = fg_mount(arch);
	for (size_t i = 0; i < NCASES; i++) {
		expect_mount(&CASES[i], mnt, ids[i], src);
		cr_assert(fg_alive(), "%s: the daemon died", CASES[i].what);
	}
	/* the genuine snapshot is served whole after all that */
	char *g = xasprintf("%s/ids/%s", mnt, base);
	assert_trees_equal(src, g, TD_SKIP_ROOT_META, "the genuine snapshot through the mount");
	cr_assert(fg_alive());
	fg_unmount();
	cr_log_info("archive and forgeries %.2f s, verify %.2f s, restores %.2f s, mount %.2f s",
		    t1 - t0, t2 - t1, t3 - t2, now_s() - t3);
	for (size_t i = 0; i < NCASES; i++)
		free(ids[i]);
	free(g);
	free(arch);
	free(src);
}

/* A bucket of node 1 of d: its entry count forged, its parents' sums made
 * to agree; *before: the entries of the nodes before node 1. */
static void damage_bucket_midway(forge *f, size_t *before)
{
	amber_fanout_node n0, n1;
	amber_entry *d = fanned_dir(f, &n0);

	get_node(&n1, f->arch, &n0.c[1].link);
	cr_assert(n1.n >= 2, "node 1 has %zu buckets", n1.n);
	*before = n0.c[0].count;
	n1.c[n1.n / 2].count++;
	n0.c[1].count++;
	put_node(&n0.c[1].link, n0.c[1].tree_oid, f->arch, &n1, 0);
	put_node(&d->link, d->tree_oid, f->arch, &n0, 0);
}

/* The last node of d's last level: its payload cut short (well framed);
 * *before: the entries of every node before it. */
static void damage_last_node(forge *f, size_t *before)
{
	amber_fanout_node n0, nl;
	amber_entry *d = fanned_dir(f, &n0);
	size_t last = n0.n - 1;

	*before = 0;
	for (size_t i = 0; i < last; i++)
		*before += n0.c[i].count;
	get_node(&nl, f->arch, &n0.c[last].link);
	put_node(&n0.c[last].link, n0.c[last].tree_oid, f->arch, &nl, 30);
	put_node(&d->link, d->tree_oid, f->arch, &n0, 0);
}

/*
 * The mount lists a large directory node by node of the last level of its
 * fan-out while they are decoded: with the damage `make` does, every entry
 * of the nodes before it is listed and served exactly, then readdir fails
 * with EIO; a name the listing did not reach is EIO or its source's bytes,
 * never anything else.  Before listings were streamed the whole directory
 * was EIO.
 */
static void expect_listed_up_to_the_damage(void (*make)(forge *, size_t *), const char *what)
{
	char *src = pjoin(IT.tmp, "src"), base[41];
	char *arch = make_archive(src, base);
	size_t before = 0;
	forge f;

	pack_begin(arch);
	forge_open(&f, arch, base);
	make(&f, &before);
	char *id = forge_commit(&f);
	forge_dispose(&f);
	pack_end();
	amber_store_free(ST);
	ST = NULL;

	const char *mnt = fg_mount(arch);
	char *dir = xasprintf("%s/ids/%s/d", mnt, id);
	char listed[NFILES] = {0};
	size_t n = 0;
	DIR *dd = opendir(dir);
	struct dirent *de;
	cr_assert(dd, "%s: opendir %s: %s", what, dir, strerror(errno));
	errno = 0;
	while ((de = readdir(dd))) {
		unsigned i;
		char tail;
		if (de->d_name[0] == '.')
			continue;
		cr_assert(sscanf(de->d_name, "f%4u%c", &i, &tail) == 1 && i < NFILES,
			  "%s: readdir listed a name that is not the source's: %s", what, de->d_name);
		cr_assert(!listed[i], "%s: readdir listed %s twice", what, de->d_name);
		listed[i] = 1;
		n++;
		errno = 0;
	}
	cr_assert_eq(errno, EIO, "%s: readdir should stop at the damage with EIO: %s", what,
		     strerror(errno));
	closedir(dd);
	cr_assert_eq(n, before, "%s: readdir listed %zu entries; the nodes before the damage "
		     "hold %zu", what, n, before);

	size_t eio = 0;
	for (int i = 0; i < NFILES; i++) {
		char rel[32];
		snprintf(rel, sizeof(rel), "d/f%04d", i);
		char *mp = xasprintf("%s/ids/%s/%s", mnt, id, rel), *sp = pjoin(src, rel);
		int e = expect_served(mp, sp, !listed[i], what);
		cr_assert(!listed[i] || !e, "%s: %s was listed but not served", what, rel);
		eio += (size_t)e;
		free(mp);
		free(sp);
	}
	cr_assert(eio > 0, "%s: no name past the damage failed", what);
	cr_assert(fg_alive(), "%s: the daemon died", what);
	char *g = xasprintf("%s/ids/%s", mnt, base);
	assert_trees_equal(src, g, TD_SKIP_ROOT_META, "the genuine snapshot through the mount");
	fg_unmount();
	free(g);
	free(dir);
	free(id);
	free(arch);
	free(src);
}

Test(hostile_layout, a_bucket_damaged_midway_lists_the_nodes_before_it_then_eio)
{
	expect_listed_up_to_the_damage(damage_bucket_midway, "a bucket damaged midway");
}

Test(hostile_layout, a_last_node_damaged_lists_every_node_before_it_then_eio)
{
	expect_listed_up_to_the_damage(damage_last_node, "the last node truncated");
}
