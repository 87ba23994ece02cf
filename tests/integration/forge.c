/*
 * The forger of the hostile-archive tests: it reads a snapshot's record and
 * root directory, lets a test edit them, and commits the result as a new
 * snapshot through libamber's encoders (plain archives), as someone who
 * can write the archive would.  How objects are written and read back is
 * each test program's own (put_obj and git_bytes, declared in forge.h).
 */
#include "forge.h"

#include "helpers.h"

#include "codec.h"
#include "gitobj.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Frame `data` as an object of `type` (plain) and store it; fills link. */
void put_framed(amber_link *l, const char *arch, int type, const void *data, size_t len)
{
	amber_buf f = AMBER_BUF_INIT;
	cr_assert_eq(amber_codec_encode(&f, l->mac, NULL, type, data, len, 0), 0);
	put_obj(l->oid, arch, "blob", f.data, f.len);
	amber_buf_dispose(&f);
}

/* Read and decode the framed blob `l` (plain). */
void get_framed(amber_buf *out, const char *arch, int type, const amber_link *l)
{
	char hex[41];
	size_t len = 0;
	amber_oid_tohex(hex, l->oid);
	char *raw = git_bytes(arch, &len, "cat-file", "blob", hex);
	amber_buf_init(out, 0);
	cr_assert_eq(amber_codec_decode(out, NULL, type, l->mac, raw, len, (size_t)32 << 20), 0,
		     "decode %s: %s", hex, amber_error_last());
	free(raw);
}


void forge_open(forge *f, const char *arch, const char *commit)
{
	size_t len = 0, cap, blen = 0;
	amber_commit c;
	amber_buf plain = AMBER_BUF_INIT, m = AMBER_BUF_INIT;
	char *raw = git_bytes(arch, &len, "cat-file", "commit", commit);

	memset(f, 0, sizeof(*f));
	f->arch = arch;
	cr_assert_eq(amber_commit_parse(&c, (uint8_t *)raw, len, commit), 0);
	f->time = amber_trailer_get(c.message, "Amberfs-Time");
	char *b64 = amber_trailer_get(c.message, "Amberfs-Record");
	cr_assert(f->time && b64, "commit %s has no amberfs trailers", commit);
	cap = strlen(b64);
	uint8_t *bin = malloc(cap);
	cr_assert_eq(sodium_base642bin(bin, cap, b64, cap, NULL, &blen, NULL,
				       sodium_base64_VARIANT_ORIGINAL), 0);
	cr_assert_eq(amber_codec_decode(&plain, NULL, AMBER_OBJ_RECORD, NULL, bin, blen,
					(size_t)4 << 20), 0, "record: %s", amber_error_last());
	cr_assert_eq(amber_record_decode(&f->r, plain.data, plain.len), 0);
	get_framed(&m, arch, AMBER_OBJ_MANIFEST, &f->r.root);
	cr_assert_eq(amber_manifest_decode(&f->e, &f->n, m.data, m.len), 0);
	amber_buf_dispose(&m);
	amber_buf_dispose(&plain);
	amber_commit_dispose(&c);
	free(bin);
	free(b64);
	free(raw);
}

amber_entry *forge_find(forge *f, const char *name)
{
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->e[i].name, name) == 0)
			return &f->e[i];
	cr_assert(0, "no entry '%s' in the root", name);
	return NULL;
}

/* Add a copy of entry `from` named `name`; returns it. */
amber_entry *forge_copy(forge *f, const char *from, const char *name)
{
	f->e = realloc(f->e, (f->n + 1) * sizeof(*f->e));
	amber_entry *e = &f->e[f->n];
	cr_assert_eq(amber_entry_copy(e, forge_find(f, from)), 0);
	free(e->name);
	e->name = strdup(name);
	e->name_len = strlen(name);
	f->n++;
	return e;
}

static int entry_cmp(const void *a, const void *b)
{
	const amber_entry *x = a, *y = b;
	return amber_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

/* Store the root manifest and the root tree that goes with it. */
static void forge_root(forge *f, amber_link *m, uint8_t tree[20])
{
	amber_buf b = AMBER_BUF_INIT;
	amber_tentry *t = calloc(f->n + 1, sizeof(*t));
	char (*tok)[AMBER_TOKEN_HEXSZ + 1] = calloc(f->n, sizeof(*tok));
	size_t tn = 0;

	qsort(f->e, f->n, sizeof(*f->e), entry_cmp);
	cr_assert_eq(amber_manifest_encode(&b, f->e, f->n), 0);
	put_framed(m, f->arch, AMBER_OBJ_MANIFEST, b.data, b.len);
	amber_buf_reset(&b);
	snprintf(t[tn].name, sizeof t[tn].name, "m");
	t[tn].mode = AMBER_GIT_MODE_BLOB;
	memcpy(t[tn++].oid, m->oid, 20);
	for (size_t i = 0; i < f->n; i++) {
		const amber_entry *e = &f->e[i];
		if (e->content == AMBER_C_NONE)
			continue;
		amber_name_token(tok[i], NULL, e->name, e->name_len);
		t[tn].longname = tok[i];
		t[tn].mode = e->content == AMBER_C_BLOB ? AMBER_GIT_MODE_BLOB : AMBER_GIT_MODE_TREE;
		memcpy(t[tn++].oid, e->content == AMBER_C_BLOB ? e->link.oid : e->tree_oid, 20);
	}
	cr_assert_eq(amber_tree_build(&b, t, tn), 0);
	put_obj(tree, f->arch, "tree", b.data, b.len);
	amber_buf_dispose(&b);
	free(tok);
	free(t);
}

/* The record's copy of the root entry, pointed at the new root. */
static void forge_root_meta(forge *f, const amber_link *m, const uint8_t tree[20])
{
	amber_entry *e = NULL;
	size_t n = 0;
	amber_buf b = AMBER_BUF_INIT;

	cr_assert_eq(amber_manifest_decode(&e, &n, f->r.root_meta, f->r.root_meta_len), 0);
	cr_assert_eq(n, 1);
	memcpy(e[0].tree_oid, tree, 20);
	e[0].link = *m;
	cr_assert_eq(amber_manifest_encode(&b, e, n), 0);
	free(f->r.root_meta);
	f->r.root_meta = b.data;
	f->r.root_meta_len = b.len;
	amber_entries_free(e, n);
}

/* Commit the edited root as a snapshot with the original's parent and
 * time; returns the new commit id (malloc'd hex). */
char *forge_commit(forge *f)
{
	amber_buf rec = AMBER_BUF_INIT, frame = AMBER_BUF_INIT, c = AMBER_BUF_INIT;
	uint8_t mac[AMBER_MAC_BYTES], oid[20];
	amber_link m;
	int64_t tn = 0;

	forge_root(f, &m, f->r.tree);
	f->r.root = m;
	forge_root_meta(f, &m, f->r.tree);
	cr_assert_eq(amber_record_encode(&rec, &f->r), 0);
	cr_assert_eq(amber_codec_encode(&frame, mac, NULL, AMBER_OBJ_RECORD, rec.data, rec.len, 0),
		     0);
	size_t cap = sodium_base64_ENCODED_LEN(frame.len, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(cap);
	sodium_bin2base64(b64, cap, frame.data, frame.len, sodium_base64_VARIANT_ORIGINAL);
	char *msg = xasprintf("amberfs snapshot forged\n\nAmberfs-Time: %s\nAmberfs-Record: %s\n",
			      f->time, b64);
	cr_assert_eq(amber_time_parse(&tn, f->time), 0);
	cr_assert_eq(amber_commit_build(&c, f->r.tree, f->r.has_parent ? f->r.parent : NULL,
					tn / 1000000000, msg), 0);
	put_obj(oid, f->arch, "commit", c.data, c.len);
	char *hex = malloc(41);
	amber_oid_tohex(hex, oid);
	amber_buf_dispose(&c);
	amber_buf_dispose(&frame);
	amber_buf_dispose(&rec);
	free(msg);
	free(b64);
	return hex;
}

void forge_dispose(forge *f)
{
	amber_entries_free(f->e, f->n);
	amber_record_dispose(&f->r);
	free(f->time);
}
