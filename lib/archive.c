#include "archive.h"

#include "cachedir.h"
#include "codec.h"
#include "config_parse.h"
#include "error.h"
#include "gitobj.h"
#include "kvmap.h"
#include "manifest.h"
#include "pkcs11.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int amber_global_init(void)
{
	if (sodium_init() < 0)
		return amber_fail(AMBER_ERROR, "libsodium failed to initialise");
	return amber_store_global_init();
}

const char *amber_archive_path(const amber_archive *a)
{
	return a->path;
}

const char *amber_archive_id(const amber_archive *a)
{
	return a->id;
}

int amber_archive_needs_key(const amber_archive *a)
{
	return a->encrypted && !a->keys;
}

int amber_archive_is_encrypted(const amber_archive *a)
{
	return a->encrypted;
}

int amber_archive_check_unlocked(const amber_archive *a)
{
	if (amber_archive_needs_key(a))
		return amber_fail(AMBER_ENEEDKEY, "archive %s is encrypted and needs its passphrase",
				  a->path);
	return 0;
}

void amber_archive_prefetch_stop(amber_archive *a)
{
	int started;

	pthread_mutex_lock(&a->pf_lock);
	a->pf_stop = 1;
	started = a->pf_started;
	pthread_cond_broadcast(&a->pf_cond);
	pthread_mutex_unlock(&a->pf_lock);
	if (started)
		pthread_join(a->pf_thread, NULL);
}

void amber_archive_free(amber_archive *a)
{
	if (!a)
		return;
	amber_archive_prefetch_stop(a);
	pthread_mutex_destroy(&a->pf_lock);
	pthread_cond_destroy(&a->pf_cond);
	amber_cache_free(a->cache);
	for (size_t i = 0; i < a->nslots; i++)
		free(a->slots[i]);
	free(a->config_raw);
	amber_keys_free(a->keys);
	amber_archive_set_token_pin(a, NULL, 0);
	amber_store_free(a->store);
	free(a->cache_base);
	free(a->path);
	free(a);
}

int amber_archive_lock_keys(amber_archive *a)
{
	return amber_keys_lock(a->keys);
}

static void setup_chunker(amber_archive *a)
{
	amber_chunker_init(&a->chunker, a->encrypted ? a->keys->chunk_key : NULL, a->chunk_min,
			   a->chunk_avg, a->chunk_max);
}

void amber_archive_setup_chunker(amber_archive *a)
{
	setup_chunker(a);
}

/* ---- config text ------------------------------------------------------ */

static int config_format(amber_buf *out, const amber_archive *a)
{
	char text[512];
	int n = snprintf(text, sizeof(text),
			 "format %d\nid %s\nencryption %s\nchunker fastcdc-gear %zu %zu %zu\n"
			 "compression zstd %d\n",
			 AMBER_FORMAT_VERSION, a->id,
			 a->encrypted ? "xchacha20poly1305-blake2b" : "none", a->chunk_min,
			 a->chunk_avg, a->chunk_max, a->zstd_level);

	return amber_buf_put(out, text, (size_t)n);
}

/* ---- meta commit -------------------------------------------------------- */

int amber_meta_blob(amber_tentry *e, amber_packw *w, const char *name, const void *data,
		    size_t len)
{
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->longname = NULL;
	e->mode = AMBER_GIT_MODE_BLOB;
	return amber_packw_add(e->oid, NULL, w, AMBER_GIT_BLOB, data, len);
}

int amber_meta_tree(uint8_t oid[20], amber_packw *w, amber_tentry *e, size_t n)
{
	amber_buf b = AMBER_BUF_INIT;
	int rc = amber_tree_build(&b, e, n);

	if (rc == 0)
		rc = amber_packw_add(oid, NULL, w, AMBER_GIT_TREE, b.data, b.len);
	amber_buf_dispose(&b);
	return rc;
}

static void tree_entry(amber_tentry *e, const char *name)
{
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->longname = NULL;
	e->mode = AMBER_GIT_MODE_TREE;
}

/* signing/ed25519.pub: one OpenSSH public-key line */
static int signing_tree(amber_tentry *top, amber_archive *a, amber_packw *w)
{
	amber_tentry pub;
	char line[160];
	size_t len;
	int rc = amber_pubkey_format(line, sizeof(line) - 1, a->sign_pk, "amberfs");

	tree_entry(top, "signing");
	if (rc == 0) {
		len = strlen(line);
		line[len++] = '\n';
		rc = amber_meta_blob(&pub, w, "ed25519.pub", line, len);
	}
	return rc < 0 ? rc : amber_meta_tree(top->oid, w, &pub, 1);
}

/* The config's bytes, kept as the authenticator covers them. */
static int config_keep(amber_archive *a, const uint8_t *data, size_t len)
{
	free(a->config_raw);
	a->config_len = 0;
	if (!(a->config_raw = malloc(len ? len : 1)))
		return amber_fail(AMBER_ERROR, "out of memory");
	memcpy(a->config_raw, data, len);
	a->config_len = len;
	return 0;
}

/* ---- the metadata authenticator ---------------------------------------------- */

#define AUTH_CONTEXT "amberfs metadata authenticator 1\n"

void amber_slot_name(char out[16], size_t i)
{
	snprintf(out, 16, "slot-%02u", (unsigned)i);
}

static void hash_len(crypto_generichash_state *h, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	crypto_generichash_update(h, b, sizeof(b));
}

void amber_meta_auth(uint8_t out[32], const amber_keys *k, const uint8_t *config,
		     size_t config_len, uint8_t *const *slots, const size_t *slot_len,
		     size_t nslots)
{
	crypto_generichash_state h;
	char name[16];

	crypto_generichash_init(&h, k->record_key, sizeof(k->record_key), 32);
	crypto_generichash_update(&h, (const uint8_t *)AUTH_CONTEXT, strlen(AUTH_CONTEXT));
	hash_len(&h, config_len);
	crypto_generichash_update(&h, config, config_len);
	hash_len(&h, nslots);
	for (size_t i = 0; i < nslots; i++) {
		amber_slot_name(name, i);
		hash_len(&h, strlen(name));
		crypto_generichash_update(&h, (const uint8_t *)name, strlen(name));
		hash_len(&h, slot_len[i]);
		crypto_generichash_update(&h, slots[i], slot_len[i]);
	}
	crypto_generichash_final(&h, out, 32);
}

int amber_archive_auth_text(char out[96], const amber_archive *a, uint8_t *const *slots,
			    const size_t *slot_len, size_t nslots)
{
	uint8_t mac[32];
	char hex[65];

	if (!a->keys)
		return amber_fail(AMBER_ENEEDKEY, "archive %s is locked", a->path);
	amber_meta_auth(mac, a->keys, a->config_raw, a->config_len, slots, slot_len, nslots);
	sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
	snprintf(out, 96, "blake2b-256 %s\n", hex);
	return 0;
}

/* ---- the metadata commit ------------------------------------------------------- */

static int meta_tree(uint8_t root[20], amber_archive *a, amber_packw *w)
{
	amber_tentry top[4], slots[AMBER_MAX_SLOTS];
	amber_buf cfg = AMBER_BUF_INIT;
	char name[16], auth[96];
	size_t n = 1;
	int rc = config_format(&cfg, a);

	if (rc == 0)
		rc = config_keep(a, cfg.data, cfg.len);
	if (rc == 0)
		rc = amber_meta_blob(&top[0], w, "config", cfg.data, cfg.len);
	amber_buf_dispose(&cfg);
	for (size_t i = 0; rc == 0 && i < a->nslots; i++) {
		amber_slot_name(name, i);
		rc = amber_meta_blob(&slots[i], w, name, a->slots[i], a->slot_len[i]);
	}
	if (rc == 0 && a->nslots > 0) { /* plain archives have no key slots */
		tree_entry(&top[n], "keys");
		rc = amber_meta_tree(top[n++].oid, w, slots, a->nslots);
	}
	if (rc == 0 && a->nslots > 0)
		rc = amber_archive_auth_text(auth, a, a->slots, a->slot_len, a->nslots);
	if (rc == 0 && a->nslots > 0)
		rc = amber_meta_blob(&top[n++], w, "auth", auth, strlen(auth));
	if (rc == 0 && a->nslots > 0) {
		amber_meta_auth(a->auth, a->keys, a->config_raw, a->config_len, a->slots,
				a->slot_len, a->nslots);
		a->has_auth = 1;
	}
	if (rc == 0 && a->has_sign_pk)
		rc = signing_tree(&top[n++], a, w);
	return rc < 0 ? rc : amber_meta_tree(root, w, top, n);
}

/* Write the metadata commit for `tree` and move the ref from `parent` to it. */
static int meta_commit(amber_archive *a, amber_packw *w, const uint8_t tree[20],
		       const uint8_t *parent, const char *message, const char *log)
{
	amber_buf c = AMBER_BUF_INIT;
	uint8_t commit[20];
	int rc = amber_commit_build(&c, tree, parent, 0, message);

	if (rc == 0)
		rc = amber_packw_add(commit, NULL, w, AMBER_GIT_COMMIT, c.data, c.len);
	if (rc == 0)
		rc = amber_packw_commit(w);
	if (rc == 0)
		rc = amber_store_ref_update(a->store, AMBER_META_REF, commit, parent, log);
	if (rc == 0)
		memcpy(a->meta_oid, commit, 20);
	amber_buf_dispose(&c);
	return rc;
}

static int meta_write(amber_archive *a)
{
	amber_packw *w = NULL;
	uint8_t tree[20];
	int rc = amber_packw_new(&w, a->store);

	if (rc == 0)
		rc = meta_tree(tree, a, w);
	if (rc == 0)
		rc = meta_commit(a, w, tree, NULL, "amberfs archive metadata\n",
				 "amberfs: create archive");
	amber_packw_free(w);
	return rc;
}

/* ---- the local record of encryption ------------------------------------- */

/*
 * The config is not authenticated, so "encryption none" is only believed
 * when nothing says otherwise: a caller holding a key, key slots in the
 * metadata, or a record in this machine's cache that the archive was seen
 * encrypted (written when an encrypted archive is created or opened) make
 * a plain claim an error.
 */
#define SEEN_ENCRYPTED "seen-encrypted"

static char *record_path(const amber_archive *a)
{
	char *dir = amber_archive_cache_dir(a), *p = NULL;
	size_t len;

	if (!dir) {
		amber_error_clear(); /* no cache: no record */
		return NULL;
	}
	len = strlen(dir) + sizeof(SEEN_ENCRYPTED) + 1;
	if ((p = malloc(len)))
		snprintf(p, len, "%s/" SEEN_ENCRYPTED, dir);
	free(dir);
	return p;
}

static void record_encrypted(const amber_archive *a)
{
	char *p = record_path(a), text[64];
	struct stat st;

	if (p && lstat(p, &st) < 0) {
		snprintf(text, sizeof(text), "%s encrypted\n", a->id);
		if (amber_file_replace(p, text, strlen(text)) < 0)
			amber_error_clear(); /* a cache that cannot be written: no record */
	}
	free(p);
}

int amber_archive_seen_encrypted(const amber_archive *a)
{
	char *p = record_path(a);
	struct stat st;
	int seen = p && lstat(p, &st) == 0;

	free(p);
	return seen;
}

static int check_plain_claim(const amber_archive *a, const amber_open_opts *o)
{
	if (a->encrypted) {
		record_encrypted(a);
		return 0;
	}
	if (o && o->expect_encrypted)
		return amber_fail(AMBER_EPLAIN,
				  "archive %s says it is not encrypted, yet a key was given for it: "
				  "its config may have been rewritten to read attacker data as plain; "
				  "refusing (give no passphrase if it really is a plain archive)",
				  a->path);
	if ((!o || !o->plain_claim_ok) && amber_archive_seen_encrypted(a))
		return amber_fail(AMBER_EPLAIN,
				  "archive %s says it is not encrypted, but this machine saw it "
				  "encrypted: its config was rewritten (a downgrade attack?); "
				  "refusing to read it; run 'amberfs verify' on it", a->path);
	if ((!o || !o->plain_claim_ok) && a->nslots > 0)
		return amber_fail(AMBER_EPLAIN,
				  "archive %s says it is not encrypted, yet it has key slots: its "
				  "config was rewritten (a downgrade attack?); refusing to read it; "
				  "run 'amberfs verify' on it", a->path);
	return 0;
}

/* ---- create / open -------------------------------------------------------- */

static int new_keys(amber_archive *a, const amber_create_opts *o)
{
	int rc;

	if (!o->passphrase || o->passphrase_len == 0)
		return amber_fail(AMBER_EINVAL, "an encrypted archive needs a passphrase");
	amber_slot_new n = {.kind = AMBER_SLOT_PASSPHRASE, .label = "initial",
			    .secret = o->passphrase, .secret_len = o->passphrase_len,
			    .kdf_profile = o->kdf_profile};

	rc = amber_keys_generate(&a->keys);
	if (rc == 0)
		rc = amber_slot_seal(&a->slots[0], &a->slot_len[0], a->keys, &n);
	if (rc == 0)
		a->nslots = 1;
	return rc;
}

static amber_archive *archive_alloc(const char *path, const amber_open_opts *o)
{
	amber_archive *a = calloc(1, sizeof(*a));
	const char *base = o ? o->cache_dir : NULL;

	if (!a || !(a->path = strdup(path)) || (base && !(a->cache_base = strdup(base))) ||
	    !(a->cache = amber_cache_new(AMBER_DEFAULT_CACHE))) {
		if (a) {
			free(a->cache_base);
			free(a->path);
		}
		free(a);
		amber_fail(AMBER_ERROR, "out of memory");
		return NULL;
	}
	a->cache_none = base && !*base;
	a->weak_kdf_ok = o && o->weak_kdf_ok;
	a->index_span = o ? o->index_span : 0;
	pthread_mutex_init(&a->pf_lock, NULL);
	pthread_cond_init(&a->pf_cond, NULL);
	return a;
}

int amber_archive_set_token_pin(amber_archive *a, const unsigned char *pin, size_t len)
{
	if (a->token_pin) {
		sodium_memzero(a->token_pin, a->token_pin_len);
		sodium_free(a->token_pin);
	}
	a->token_pin = NULL;
	a->token_pin_len = 0;
	if (!pin)
		return 0;
	if (!(a->token_pin = sodium_malloc(len ? len : 1)))
		return amber_fail(AMBER_ERROR, "out of secure memory for a PIN");
	memcpy(a->token_pin, pin, len);
	a->token_pin_len = len;
	return 0;
}

/*
 * The secret key file is written before the metadata that names its public
 * half, so that no archive ever expects a key that was never saved.  A
 * pkcs11: URI names a key that already exists in a token: only its public
 * half is taken (once it has signed a test message).
 */
static int create_signing_key(amber_archive *a, const char *secret_path)
{
	amber_signer *s = NULL;
	int rc;

	if (!secret_path)
		return 0;
	if (amber_p11_is_uri(secret_path))
		rc = amber_signer_open(&s, secret_path, a->token_pin, a->token_pin_len);
	else
		rc = amber_signer_generate(&s);
	if (rc == 0 && !amber_signer_is_token(s))
		rc = amber_signer_save(s, secret_path);
	if (rc == 0) {
		amber_signer_public(a->sign_pk, s);
		a->has_sign_pk = 1;
	}
	amber_signer_free(s);
	return rc;
}

static int open_opts_check(const amber_open_opts *o)
{
	if (o && o->version != AMBER_OPEN_OPTS_VERSION)
		return amber_fail(AMBER_EINVAL, "amber_open_opts version %u is not %u: initialise it "
				  "with AMBER_OPEN_OPTS_INIT", o->version, AMBER_OPEN_OPTS_VERSION);
	if (o && o->index_span && (o->index_span < 2 || o->index_span > AMBER_PAGE_SPAN_MAX))
		return amber_fail(AMBER_EINVAL, "index_span %u is not within 2..%u", o->index_span,
				  AMBER_PAGE_SPAN_MAX);
	return 0;
}

int amber_archive_create(amber_archive **out, const char *path, const amber_create_opts *opts)
{
	amber_archive *a;
	uint8_t rnd[16];
	int rc;

	if (amber_opts_check(opts, AMBER_CREATE_OPTS_VERSION, "amber_create_opts",
			     "AMBER_CREATE_OPTS_INIT") < 0 || open_opts_check(opts->open) < 0)
		return AMBER_EINVAL;
	if (opts->kdf_profile != AMBER_KDF_DEFAULT && opts->kdf_profile != AMBER_KDF_TEST)
		return amber_fail(AMBER_EINVAL, "unknown KDF profile %d", opts->kdf_profile);
	if (!(a = archive_alloc(path, opts->open)))
		return AMBER_ERROR;
	a->encrypted = !opts->plain;
	a->zstd_level = 1;
	a->chunk_min = AMBER_CHUNK_MIN;
	a->chunk_avg = AMBER_CHUNK_AVG;
	a->chunk_max = AMBER_CHUNK_MAX;
	rc = amber_archive_set_token_pin(a, opts->token_pin, opts->token_pin_len);
	if (rc < 0) {
		amber_archive_free(a);
		return rc;
	}
	amber_random(rnd, sizeof(rnd));
	sodium_bin2hex(a->id, sizeof(a->id), rnd, sizeof(rnd));
	rc = a->encrypted ? new_keys(a, opts) : 0;
	if (rc == 0)
		rc = create_signing_key(a, opts->signing_key_path);
	if (rc == 0)
		rc = amber_store_init(&a->store, path);
	if (rc == 0 && opts->open)
		amber_store_set_rollover(a->store, opts->open->pack_rollover);
	if (rc == 0)
		rc = meta_write(a);
	if (rc < 0 && a->has_sign_pk && !amber_p11_is_uri(opts->signing_key_path))
		unlink(opts->signing_key_path); /* ours, and useless without the archive */
	if (rc < 0) {
		amber_archive_free(a);
		return rc;
	}
	if (a->encrypted)
		record_encrypted(a);
	setup_chunker(a);
	*out = a;
	return 0;
}

static int read_meta_blob(amber_buf *out, amber_archive *a, const uint8_t oid[20],
			  int want_type)
{
	int type = 0;
	int rc = amber_store_read(out, &type, a->store, oid, AMBER_MAX_META);

	if (rc == 0 && type != want_type)
		rc = amber_fail(AMBER_ECORRUPT, "archive %s: unexpected object type in %s", a->path,
				AMBER_META_REF);
	return rc;
}

int amber_archive_read_meta(amber_buf *out, amber_archive *a, const uint8_t oid[20],
			    int want_type)
{
	return read_meta_blob(out, a, oid, want_type);
}

static int load_slots(amber_archive *a, const uint8_t tree_oid[20])
{
	amber_buf t = AMBER_BUF_INIT;
	amber_tparsed *e = NULL;
	size_t n = 0;
	int rc = read_meta_blob(&t, a, tree_oid, AMBER_GIT_TREE);

	if (rc == 0)
		rc = amber_tree_parse(&e, &n, t.data, t.len, "key slot tree");
	for (size_t i = 0; rc == 0 && i < n && a->nslots < AMBER_MAX_SLOTS; i++) {
		amber_buf s = AMBER_BUF_INIT;

		rc = read_meta_blob(&s, a, e[i].oid, AMBER_GIT_BLOB);
		if (rc == 0) {
			a->slots[a->nslots] = s.data;
			a->slot_len[a->nslots++] = s.len;
		}
	}
	free(e);
	amber_buf_dispose(&t);
	return rc;
}

/* auth: "blake2b-256 <64 hex digits>\n" */
static int load_auth(amber_archive *a, const uint8_t oid[20])
{
	amber_buf b = AMBER_BUF_INIT;
	int rc = read_meta_blob(&b, a, oid, AMBER_GIT_BLOB);

	if (rc == 0 && (b.len != 77 || memcmp(b.data, "blake2b-256 ", 12) != 0 ||
			b.data[76] != '\n' ||
			sodium_hex2bin(a->auth, 32, (const char *)b.data + 12, 64, NULL, NULL,
				       NULL) != 0))
		rc = amber_fail(AMBER_ECORRUPT, "archive %s: malformed metadata authenticator in "
				"%s", a->path, AMBER_META_REF);
	a->has_auth = rc == 0;
	amber_buf_dispose(&b);
	return rc;
}

static int load_signing(amber_archive *a, const uint8_t tree_oid[20])
{
	amber_buf t = AMBER_BUF_INIT, pub = AMBER_BUF_INIT;
	amber_tparsed *e = NULL;
	const amber_tparsed *x = NULL;
	size_t n = 0;
	int rc = read_meta_blob(&t, a, tree_oid, AMBER_GIT_TREE);

	if (rc == 0)
		rc = amber_tree_parse(&e, &n, t.data, t.len, "signing key tree");
	if (rc == 0 && !(x = amber_tree_find(e, n, "ed25519.pub")))
		rc = amber_fail(AMBER_ECORRUPT, "archive %s: no signing/ed25519.pub in %s", a->path,
				AMBER_META_REF);
	if (rc == 0)
		rc = read_meta_blob(&pub, a, x->oid, AMBER_GIT_BLOB);
	if (rc == 0 && (amber_buf_put(&pub, "", 1) < 0 ||
			amber_pubkey_parse(a->sign_pk, (const char *)pub.data) < 0))
		rc = amber_fail(AMBER_ECORRUPT, "archive %s: malformed public signing key in %s",
				a->path, AMBER_META_REF);
	a->has_sign_pk = rc == 0;
	free(e);
	amber_buf_dispose(&pub);
	amber_buf_dispose(&t);
	return rc;
}

static int load_meta(amber_archive *a)
{
	amber_buf c = AMBER_BUF_INIT, t = AMBER_BUF_INIT, cfg = AMBER_BUF_INIT;
	amber_commit commit;
	amber_tparsed *e = NULL;
	const amber_tparsed *x;
	uint8_t oid[20];
	size_t n = 0;
	int rc = amber_store_ref_read(oid, a->store, AMBER_META_REF);

	if (rc == AMBER_ENOTFOUND)
		return amber_fail(AMBER_ENOTARCHIVE,
				  "%s is a git repository but not an amberfs archive (no %s)",
				  a->path, AMBER_META_REF);
	if (rc == 0)
		rc = read_meta_blob(&c, a, oid, AMBER_GIT_COMMIT);
	if (rc == 0)
		rc = amber_commit_parse(&commit, c.data, c.len, AMBER_META_REF);
	if (rc < 0)
		goto done;
	amber_commit_dispose(&commit);
	memcpy(a->meta_oid, oid, 20);
	rc = read_meta_blob(&t, a, commit.tree, AMBER_GIT_TREE);
	if (rc == 0)
		rc = amber_tree_parse(&e, &n, t.data, t.len, "archive metadata tree");
	if (rc == 0 && !(x = amber_tree_find(e, n, "config")))
		rc = amber_fail(AMBER_ECORRUPT, "archive %s: no config in %s", a->path,
				AMBER_META_REF);
	if (rc == 0)
		rc = read_meta_blob(&cfg, a, x->oid, AMBER_GIT_BLOB);
	if (rc == 0)
		rc = amber_config_parse(a, cfg.data, cfg.len);
	if (rc == 0)
		rc = config_keep(a, cfg.data, cfg.len);
	if (rc == 0 && (x = amber_tree_find(e, n, "auth")))
		rc = load_auth(a, x->oid);
	if (rc == 0 && (x = amber_tree_find(e, n, "keys")))
		rc = load_slots(a, x->oid);
	if (rc == 0 && (x = amber_tree_find(e, n, "signing")))
		rc = load_signing(a, x->oid);
	if (rc == 0 && a->encrypted && a->nslots == 0)
		rc = amber_fail(AMBER_ECORRUPT, "archive %s is encrypted but has no key slot",
				a->path);
done:
	free(e);
	amber_buf_dispose(&cfg);
	amber_buf_dispose(&t);
	amber_buf_dispose(&c);
	return rc;
}

int amber_archive_open(amber_archive **out, const char *path)
{
	return amber_archive_open_ext(out, path, NULL);
}

int amber_archive_open_ext(amber_archive **out, const char *path, const amber_open_opts *opts)
{
	amber_archive *a;
	int rc;

	if (open_opts_check(opts) < 0)
		return AMBER_EINVAL;
	if (!(a = archive_alloc(path, opts)))
		return AMBER_ERROR;
	rc = amber_store_open(&a->store, path);
	if (rc == 0 && opts)
		amber_store_set_rollover(a->store, opts->pack_rollover);
	if (rc == 0)
		rc = load_meta(a);
	if (rc == 0)
		rc = check_plain_claim(a, opts);
	if (rc < 0) {
		amber_archive_free(a);
		return rc;
	}
	if (!a->encrypted)
		setup_chunker(a);
	*out = a;
	return 0;
}

/* ---- signing keys ------------------------------------------------------------- */

int amber_archive_signing_pubkey(uint8_t pk[32], const amber_archive *a)
{
	if (!a->has_sign_pk)
		return amber_fail(AMBER_ENOTFOUND, "archive %s has no signing key", a->path);
	memcpy(pk, a->sign_pk, 32);
	return 0;
}

int amber_meta_keep_open(amber_meta_keep *m, amber_archive *a, const char *const *drop,
			 size_t extra)
{
	size_t n = 0;
	int rc;

	memset(m, 0, sizeof(*m));
	m->c = (amber_buf)AMBER_BUF_INIT;
	m->t = (amber_buf)AMBER_BUF_INIT;
	rc = read_meta_blob(&m->c, a, a->meta_oid, AMBER_GIT_COMMIT);
	if (rc == 0)
		rc = amber_commit_parse(&m->commit, m->c.data, m->c.len, AMBER_META_REF);
	if (rc == 0)
		rc = read_meta_blob(&m->t, a, m->commit.tree, AMBER_GIT_TREE);
	if (rc == 0)
		rc = amber_tree_parse(&m->e, &n, m->t.data, m->t.len, "archive metadata tree");
	if (rc == 0 && !(m->top = calloc(n + extra, sizeof(*m->top))))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; rc == 0 && i < n; i++) {
		int dropped = 0;

		for (const char *const *d = drop; *d; d++)
			dropped |= strcmp(m->e[i].name, *d) == 0;
		if (dropped)
			continue;
		m->top[m->k].longname = m->e[i].name; /* NUL-terminated inside m->t */
		m->top[m->k].mode = m->e[i].mode;
		memcpy(m->top[m->k++].oid, m->e[i].oid, 20);
	}
	return rc;
}

void amber_meta_keep_dispose(amber_meta_keep *m)
{
	free(m->top);
	free(m->e);
	amber_commit_dispose(&m->commit);
	amber_buf_dispose(&m->t);
	amber_buf_dispose(&m->c);
}

/*
 * The new metadata tree keeps every entry of the old one byte for byte
 * (config, keys/, and anything a later version added) and adds signing/.
 */
static int meta_tree_plus_signing(uint8_t root[20], amber_archive *a, amber_packw *w)
{
	static const char *const drop[] = {"signing", NULL};
	amber_meta_keep m;
	int rc = amber_meta_keep_open(&m, a, drop, 1);

	if (rc == 0)
		rc = signing_tree(&m.top[m.k++], a, w);
	if (rc == 0)
		rc = amber_meta_tree(root, w, m.top, m.k);
	amber_meta_keep_dispose(&m);
	return rc;
}

static int meta_add_signing(amber_archive *a)
{
	amber_packw *w = NULL;
	uint8_t tree[20], parent[20];
	int rc = amber_packw_new(&w, a->store);

	memcpy(parent, a->meta_oid, 20);
	if (rc == 0)
		rc = meta_tree_plus_signing(tree, a, w);
	if (rc == 0)
		rc = meta_commit(a, w, tree, parent, "amberfs archive metadata: signing key\n",
				 "amberfs: add signing key");
	amber_packw_free(w);
	return rc;
}

int amber_archive_add_signing_key(amber_archive *a, const char *secret_path)
{
	uint8_t cur[20];
	int rc;

	if (a->has_sign_pk)
		return amber_fail(AMBER_EEXISTS,
				  "archive %s already has a signing key (keys are not rotated)",
				  a->path);
	if ((rc = amber_store_lock(a->store)) < 0)
		return rc;
	rc = amber_store_ref_read(cur, a->store, AMBER_META_REF);
	if (rc == 0 && memcmp(cur, a->meta_oid, 20) != 0)
		rc = amber_fail(AMBER_ELOCKED,
				"archive %s: its metadata changed since it was opened; try again",
				a->path);
	if (rc == 0)
		rc = create_signing_key(a, secret_path);
	if (rc == 0)
		rc = meta_add_signing(a);
	if (rc < 0 && a->has_sign_pk) {
		if (!amber_p11_is_uri(secret_path))
			unlink(secret_path); /* ours, and matches no archive */
		a->has_sign_pk = 0;
	}
	amber_store_unlock(a->store);
	return rc;
}

static int signer_required(const amber_archive *a, int unsigned_ok)
{
	if (!a->has_sign_pk || unsigned_ok)
		return 0;
	return amber_fail(AMBER_ENEEDKEY,
			  "archive %s is signed: give its secret signing key (--signing-key FILE "
			  "or AMBERFS_SIGNING_KEY), or --unsigned to write without a signature",
			  a->path);
}

int amber_archive_signer(amber_signer **out, const amber_archive *a, const char *path,
			 int unsigned_ok)
{
	uint8_t pk[32];
	amber_signer *s = NULL;
	int rc;

	*out = NULL;
	if (!path)
		return signer_required(a, unsigned_ok);
	if (!a->has_sign_pk)
		return amber_fail(AMBER_EINVAL,
				  "archive %s has no signing key to check a signature made "
				  "with %s: add one with 'amberfs key new-signing', or give no "
				  "signing key (unset AMBERFS_SIGNING_KEY)",
				  a->path, path);
	if ((rc = amber_signer_open(&s, path, a->token_pin, a->token_pin_len)) < 0)
		return rc;
	amber_signer_public(pk, s);
	if (sodium_memcmp(pk, a->sign_pk, 32) != 0) {
		amber_signer_free(s);
		return amber_fail(AMBER_EBADKEY,
				  "signing key %s is not the signing key of archive %s "
				  "('amberfs key show-public' prints the archive's)",
				  path, a->path);
	}
	*out = s;
	return 0;
}

int amber_archive_read_obj(amber_buf *out, amber_archive *a, const amber_link *l, int type,
			   size_t max_plain, const char *what)
{
	amber_buf raw = AMBER_BUF_INIT;
	char hex[41];
	int otype = 0, rc;

	amber_buf_init_pages(&raw, max_plain + AMBER_FRAME_HDR + AMBER_INNER_HDR + 64);
	rc = amber_store_read(&raw, &otype, a->store, l->oid, raw.max);
	if (rc == 0 && otype != AMBER_GIT_BLOB) {
		amber_oid_tohex(hex, l->oid);
		rc = amber_fail(AMBER_EAUTH, "%s: object %s is not a blob", what, hex);
	}
	if (rc == 0) {
		rc = amber_codec_decode_in_place(out, amber_archive_keys(a), type, l->mac, raw.data,
						 raw.len, max_plain);
		if (rc < 0) {
			amber_oid_tohex(hex, l->oid);
			amber_fail(rc, "%s: object %s: %s", what, hex, amber_error_last());
		}
	}
	amber_buf_dispose(&raw);
	return rc;
}

char *amber_archive_cache_dir(const amber_archive *a)
{
	return amber_cachedir_get(a->cache_none ? "" : a->cache_base, a->id);
}

int amber_archive_cache_check(const amber_archive *a)
{
	return amber_cachedir_check(a->cache_none ? "" : a->cache_base, a->id);
}

int amber_archive_set_cache(amber_archive *a, size_t bytes)
{
	amber_cache *c = amber_cache_new(bytes);

	if (!c)
		return amber_fail(AMBER_ERROR, "out of memory");
	amber_cache_free(a->cache);
	a->cache = c;
	return 0;
}

void amber_archive_counters(const amber_archive *a, amber_counters *out)
{
	out->chunks_decoded = atomic_load(&a->counters.chunks_decoded);
	out->chunk_bytes = atomic_load(&a->counters.chunk_bytes);
	out->dirs_decoded = atomic_load(&a->counters.dirs_decoded);
	out->cache_hits = atomic_load(&a->counters.cache_hits);
}

void amber_archive_memory(const amber_archive *a, amber_memory *out)
{
	size_t used = 0, max = 0, objects, objects_max, mapped_max;

	if (a->cache)
		amber_cache_usage(a->cache, &used, &max);
	amber_store_memory(&objects, &objects_max, &mapped_max);
	out->cache_bytes = used;
	out->cache_max = max;
	out->git_objects = objects;
	out->git_objects_max = objects_max;
	out->pack_map_max = mapped_max;
}

void amber_decode_pool_usage(uint64_t *bytes, uint64_t *max)
{
	size_t b, m;

	amber_buf_pages_pooled(&b, &m);
	*bytes = b;
	*max = m;
}

static void hash_u64(crypto_generichash_state *h, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	crypto_generichash_update(h, b, sizeof(b));
}

/* (one store: a walk numbers every entry it lists, ten fields each) */
static size_t put_u64(uint8_t *p, uint64_t v)
{
	uint64_t le = htole64(v);

	memcpy(p, &le, 8);
	return 8;
}

/* BLAKE2b-256 of the entry's variable-length parts: symlink target and xattrs. */
static void hash_tail(uint8_t out[32], const amber_entry *e)
{
	crypto_generichash_state h;

	crypto_generichash_init(&h, NULL, 0, 32);
	hash_u64(&h, e->target_len);
	if (e->target)
		crypto_generichash_update(&h, (const uint8_t *)e->target, e->target_len);
	for (size_t i = 0; i < e->nxattrs; i++) {
		crypto_generichash_update(&h, (const uint8_t *)e->xattrs[i].name,
					  strlen(e->xattrs[i].name) + 1);
		hash_u64(&h, e->xattrs[i].value_len);
		crypto_generichash_update(&h, e->xattrs[i].value, e->xattrs[i].value_len);
	}
	crypto_generichash_final(&h, out, 32);
}

/*
 * SipHash-2-4 (keyed with ino_key) of the fixed fields, then of a BLAKE2b
 * of the target and xattrs when there are any.  A directory walk numbers
 * every entry it lists: SipHash of ~130 bytes costs a tenth of the keyed
 * BLAKE2b this used to be.  The numbers live only in a mount (nothing
 * stored depends on them), so they may change between versions.
 */
uint64_t amber_entry_ino(const amber_archive *a, const amber_entry *e)
{
	static const uint8_t plain_key[AMBER_INO_KEY_BYTES] = "amberfs ino, pl";
	const uint8_t *key = a->keys ? a->keys->ino_key : plain_key;
	uint8_t buf[10 * 8 + 2 * 20 + 32], out[8];
	size_t n = 0;
	uint64_t v = 0;

	_Static_assert(AMBER_INO_KEY_BYTES == crypto_shorthash_KEYBYTES, "SipHash key size");
	n += put_u64(buf + n, e->type);
	n += put_u64(buf + n, e->mode);
	n += put_u64(buf + n, ((uint64_t)e->uid << 32) | e->gid);
	n += put_u64(buf + n, e->size);
	n += put_u64(buf + n, (uint64_t)e->mtime_sec);
	n += put_u64(buf + n, e->mtime_nsec);
	n += put_u64(buf + n, e->rdev);
	n += put_u64(buf + n, e->hardlink);
	n += put_u64(buf + n, e->content);
	if (e->content == AMBER_C_CHUNKED || e->content == AMBER_C_DIR) {
		memcpy(buf + n, e->tree_oid, 20);
		n += 20;
	}
	if (e->content != AMBER_C_NONE) {
		memcpy(buf + n, e->link.oid, 20);
		n += 20;
	}
	/* a flag, then the tail's hash: the layout is unambiguous either way */
	n += put_u64(buf + n, e->target || e->nxattrs);
	if (e->target || e->nxattrs) {
		hash_tail(buf + n, e);
		n += 32;
	}
	crypto_shorthash(out, buf, n, key);
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)out[i] << (8 * i);
	/* top bit clear: the daemon keeps numbers with it set and small ones
	 * for its virtual directories */
	v &= ~((uint64_t)1 << 63);
	return v < 1024 ? v + 1024 : v;
}
