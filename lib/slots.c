/*
 * Key slots of an archive: unlocking with any kind of secret, checking the
 * metadata authenticator (archive.c computes it, as it writes the metadata
 * commit), and changing the slot set.
 *
 * The authenticator.  The config and the slot blobs sit in the clear in
 * the metadata commit, so anyone who can write the repository can change
 * them.  The slots themselves are AEAD-sealed (a forged slot does not open
 * with the owners' secrets), but adding a slot of one's own, removing the
 * owners' slots, or rewriting the config (its id, which keys the local
 * high-water marks, or its encryption line) needs no key.  So every
 * metadata commit written by this version carries `auth`, a keyed
 * BLAKE2b-256 under record_key over the config bytes and every slot blob
 * with its tree name.  A reader that opens a slot checks it before using
 * the key; a mismatch is refused as tampering.  An archive whose slots are
 * version 2 always had an authenticator, so one without is refused too
 * (stripping it is no way around the check); archives made before
 * (version-1 slots only, no `auth`) open as before until their first slot
 * change or `key seal` adds it.
 *
 * Slot changes are one new metadata commit (the tree keeps every other
 * entry byte for byte), signed when the archive has a signing key, moved
 * by compare-and-swap under the writer lock.
 */
#include "archive.h"

#include "error.h"
#include "gitobj.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int any_v2_slot(const amber_archive *a)
{
	for (size_t i = 0; i < a->nslots; i++)
		if (a->slot_len[i] >= 8 && memcmp(a->slots[i], "AMBSLOT2", 8) == 0)
			return 1;
	return 0;
}

int amber_archive_check_auth(const amber_archive *a)
{
	uint8_t mac[32];

	if (!a->has_auth && !any_v2_slot(a))
		return 0; /* an archive from before the authenticator */
	if (!a->has_auth)
		return amber_fail(AMBER_EAUTH,
				  "archive %s: its metadata authenticator was removed (its key "
				  "slots or config were changed by someone without the key): "
				  "refusing; run 'amberfs verify' on it", a->path);
	amber_meta_auth(mac, a->keys, a->config_raw, a->config_len, a->slots, a->slot_len,
			a->nslots);
	if (sodium_memcmp(mac, a->auth, 32) != 0)
		return amber_fail(AMBER_EAUTH,
				  "archive %s: its key slots or config were changed by someone "
				  "without the key (the metadata authenticator does not match): "
				  "refusing; run 'amberfs verify' on it", a->path);
	return 0;
}

int amber_archive_meta_authenticated(const amber_archive *a)
{
	return a->has_auth;
}

/* ---- listing ------------------------------------------------------------------ */

size_t amber_archive_slot_count(const amber_archive *a)
{
	return a->nslots;
}

int amber_archive_slot_info(amber_slot_info *out, const amber_archive *a, size_t i)
{
	memset(out, 0, sizeof(*out));
	if (i >= a->nslots)
		return amber_fail(AMBER_ENOTFOUND, "archive %s has no key slot %zu", a->path, i);
	return amber_slot_describe(out, a->slots[i], a->slot_len[i]);
}

int amber_archive_slot_find(const amber_archive *a, const char *which)
{
	size_t wl = strlen(which);
	int found = -1, hits = 0;

	for (size_t i = 0; i < a->nslots; i++) {
		amber_slot_info s;

		amber_slot_describe(&s, a->slots[i], a->slot_len[i]);
		if (strcmp(s.id, which) == 0 || (wl > 0 && strcmp(s.label, which) == 0) ||
		    (wl >= 4 && strncmp(s.id, which, wl) == 0)) {
			found = (int)i;
			hits++;
		}
	}
	amber_error_clear();
	if (hits > 1)
		return amber_fail(AMBER_EAMBIGUOUS, "'%s' names %d key slots of archive %s: give "
				  "more of the id ('amberfs key list')", which, hits, a->path);
	if (hits == 0)
		return amber_fail(AMBER_ENOTFOUND, "archive %s has no key slot '%s' (ids and "
				  "labels: 'amberfs key list %s')", a->path, which, a->path);
	return found;
}

/* ---- unlocking ---------------------------------------------------------------- */

static int unlocked(amber_archive *a, amber_keys *k)
{
	int rc;

	a->keys = k;
	if ((rc = amber_archive_check_auth(a)) < 0) {
		amber_keys_free(a->keys);
		a->keys = NULL;
		return rc;
	}
	amber_archive_setup_chunker(a);
	return 0;
}

static int no_slot_opens(const amber_archive *a, int kind, int of_kind, const char *first)
{
	const char *kn = amber_slot_kind_name(kind);

	if (of_kind == 0)
		return amber_fail(AMBER_EBADKEY, "archive %s has no %s key slot: unlock it with "
				  "another kind ('amberfs key list %s' shows its slots)", a->path,
				  kn, a->path);
	if (kind == AMBER_SLOT_PASSPHRASE)
		return amber_fail(AMBER_EBADKEY, "wrong passphrase for archive %s: no key slot "
				  "opens with it%s%s%s", a->path, *first ? " (unusable " : "",
				  first, *first ? ")" : "");
	if (kind == AMBER_SLOT_KEYFILE)
		return amber_fail(AMBER_EBADKEY, "the key file opens no key slot of archive %s: "
				  "it is another archive's key file, or its slot was removed "
				  "('amberfs key list %s')", a->path, a->path);
	return amber_fail(AMBER_EBADKEY, "the %s secret opens no key slot of archive %s",
			  kn, a->path);
}

/*
 * Every slot of the kind is tried: one malformed or refused slot must not
 * lock out a valid one after it.  A wrong secret is the answer if any slot
 * said so; otherwise the first slot's own error.
 */
int amber_archive_unlock_with(amber_archive *a, int kind, const void *secret, size_t len)
{
	char first[256] = "";
	int rc = AMBER_EBADKEY, other = 0, badkey = 0, of_kind = 0;
	amber_keys *k = NULL;

	if (!a->encrypted)
		return amber_fail(AMBER_EPLAIN, "archive %s is not encrypted, yet a key was "
				  "given for it: refusing", a->path);
	if (a->keys)
		return 0;
	for (size_t i = 0; i < a->nslots; i++) {
		amber_slot_info s;

		if (amber_slot_describe(&s, a->slots[i], a->slot_len[i]) == 0 && s.kind != kind)
			continue;
		of_kind++;
		rc = amber_slot_open(&k, a->slots[i], a->slot_len[i], kind, secret, len,
				     a->weak_kdf_ok);
		if (rc == 0)
			return unlocked(a, k);
		badkey |= rc == AMBER_EBADKEY;
		if (rc != AMBER_EBADKEY && !other++)
			snprintf(first, sizeof(first), "slot %s: %s", s.id, amber_error_last());
	}
	if (badkey || !other)
		return no_slot_opens(a, kind, of_kind, first);
	return amber_fail(AMBER_ECORRUPT, "archive %s: no usable key slot (%s)", a->path, first);
}

int amber_archive_unlock(amber_archive *a, const unsigned char *pass, size_t len)
{
	return amber_archive_unlock_with(a, AMBER_SLOT_PASSPHRASE, pass, len);
}

/* Share slots of set `id`: how many, and whether one opens with `secret`. */
static int open_share_slots(amber_archive *a, uint16_t id, const uint8_t *secret,
			    amber_keys **k, int *matches)
{
	*matches = 0;
	for (size_t i = 0; i < a->nslots; i++) {
		amber_slot_info s;

		if (amber_slot_describe(&s, a->slots[i], a->slot_len[i]) < 0 ||
		    s.kind != AMBER_SLOT_SHARES || s.share_set != id)
			continue;
		++*matches;
		if (amber_slot_open(k, a->slots[i], a->slot_len[i], AMBER_SLOT_SHARES, secret,
				    AMBER_RECOVERY_BYTES, a->weak_kdf_ok) == 0)
			return 0;
	}
	amber_error_clear();
	return AMBER_EBADKEY;
}

int amber_archive_unlock_shares(amber_archive *a, const char *const *mnemonics, size_t n,
				const char *passphrase)
{
	uint8_t *secret = NULL;
	size_t len = AMBER_SLIP39_MAX_SECRET;
	uint16_t id = 0;
	amber_keys *k = NULL;
	int rc, matches = 0;

	if (!a->encrypted)
		return amber_fail(AMBER_EPLAIN, "archive %s is not encrypted, yet shares were "
				  "given for it: refusing", a->path);
	if (a->keys)
		return 0;
	if (!(secret = sodium_malloc(AMBER_SLIP39_MAX_SECRET)))
		return amber_fail(AMBER_ERROR, "out of locked memory for the shares");
	rc = amber_slip39_combine(secret, &len, mnemonics, n, passphrase);
	if (rc == 0)
		rc = amber_slip39_identifier(&id, mnemonics[0]);
	if (rc == 0 && len != AMBER_RECOVERY_BYTES)
		rc = amber_fail(AMBER_EBADKEY, "the shares hold a %zu-byte secret, not an amberfs "
				"recovery secret (32 bytes): they are not shares of this archive",
				len);
	if (rc == 0)
		rc = open_share_slots(a, id, secret, &k, &matches);
	sodium_free(secret);
	if (rc == 0)
		return unlocked(a, k);
	if (matches == 0 && rc == AMBER_EBADKEY)
		return amber_fail(AMBER_EBADKEY, "the shares (set %u) belong to no key slot of "
				  "archive %s: their slot was removed, or they are shares of "
				  "another archive ('amberfs key list %s')", id, a->path, a->path);
	if (rc == AMBER_EBADKEY)
		return amber_fail(AMBER_EBADKEY, "the shares combine, but not to the key of "
				  "archive %s's share slot for set %u: wrong share passphrase "
				  "(give the one used at 'key split' with --share-passphrase-file)",
				  a->path, id);
	return rc;
}

/* ---- new slots -------------------------------------------------------------------- */

int amber_archive_seal_slot(uint8_t **blob, size_t *len, const amber_archive *a,
			    const amber_slot_new *n)
{
	*blob = NULL;
	if (amber_archive_check_unlocked(a) < 0)
		return AMBER_ENEEDKEY;
	if (!a->encrypted)
		return amber_fail(AMBER_EINVAL, "archive %s is plain: it has no key slots", a->path);
	return amber_slot_seal(blob, len, a->keys, n);
}

static int shares_check(const amber_shares_new *n)
{
	if (n->ngroups < 1 || n->ngroups > AMBER_SLIP39_MAX_GROUPS)
		return amber_fail(AMBER_EINVAL, "%zu groups: give 1 to %d", n->ngroups,
				  AMBER_SLIP39_MAX_GROUPS);
	return 0;
}

int amber_archive_seal_shares(uint8_t **blob, size_t *len, char ***mnemonics, size_t *count,
			      const amber_archive *a, const amber_shares_new *n)
{
	uint8_t *secret = NULL;
	uint16_t id = 0;
	int rc;

	*blob = NULL;
	*mnemonics = NULL;
	*count = 0;
	if (amber_archive_check_unlocked(a) < 0)
		return AMBER_ENEEDKEY;
	if (!a->encrypted)
		return amber_fail(AMBER_EINVAL, "archive %s is plain: it has no key slots", a->path);
	if ((rc = shares_check(n)) < 0)
		return rc;
	if (!(secret = sodium_malloc(AMBER_RECOVERY_BYTES)))
		return amber_fail(AMBER_ERROR, "out of locked memory for the recovery secret");
	randombytes_buf(secret, AMBER_RECOVERY_BYTES);
	rc = amber_slip39_split(mnemonics, count, secret, AMBER_RECOVERY_BYTES, n->passphrase,
				n->group_threshold, n->groups, n->ngroups, n->iteration_exponent,
				false);
	if (rc == 0)
		rc = amber_slip39_identifier(&id, (*mnemonics)[0]);
	if (rc == 0)
		rc = amber_slot_seal_shares(blob, len, a->keys, secret, n->label, id,
					    n->iteration_exponent, n->group_threshold, n->groups,
					    n->ngroups);
	sodium_free(secret);
	if (rc < 0) {
		amber_slip39_free(*mnemonics, *count);
		*mnemonics = NULL;
		*count = 0;
	}
	return rc;
}

/* ---- changing the slot set --------------------------------------------------------- */

typedef struct slot_set {
	uint8_t *slots[AMBER_MAX_SLOTS];
	size_t len[AMBER_MAX_SLOTS];
	size_t n;
} slot_set;

/* The new set: a's slots without `drop` (-1: none), plus `add`. Views, not copies. */
static int next_set(slot_set *s, const amber_archive *a, int drop, const amber_slot_change *c)
{
	amber_slot_info add, cur;

	memset(s, 0, sizeof(*s));
	if (c->add && amber_slot_describe(&add, c->add, c->add_len) < 0)
		return amber_fail(AMBER_EINVAL, "the new key slot is malformed: %s",
				  amber_error_last());
	for (size_t i = 0; i < a->nslots; i++) {
		if ((int)i == drop)
			continue;
		amber_slot_describe(&cur, a->slots[i], a->slot_len[i]);
		if (c->add && strcmp(cur.id, add.id) == 0)
			return amber_fail(AMBER_EEXISTS, "archive %s already has a key slot %s",
					  a->path, add.id);
		s->slots[s->n] = a->slots[i];
		s->len[s->n++] = a->slot_len[i];
	}
	amber_error_clear();
	if (c->add && s->n == AMBER_MAX_SLOTS)
		return amber_fail(AMBER_EINVAL, "archive %s has %d key slots, the most it may have",
				  a->path, AMBER_MAX_SLOTS);
	if (c->add) {
		s->slots[s->n] = (uint8_t *)c->add;
		s->len[s->n++] = c->add_len;
	}
	if (s->n == 0)
		return amber_fail(AMBER_EINVAL, "refusing to remove the last key slot of archive "
				  "%s: nobody could open it again (add another slot first)",
				  a->path);
	return 0;
}

/* keys/ and auth for the set; every other entry of the current tree kept. */
static int new_tree(uint8_t root[20], amber_archive *a, amber_packw *w, const slot_set *s)
{
	static const char *const drop[] = {"keys", "auth", NULL};
	amber_meta_keep m;
	amber_tentry slots[AMBER_MAX_SLOTS], *top;
	char name[16], auth[96];
	int rc = amber_meta_keep_open(&m, a, drop, 2);

	for (size_t i = 0; rc == 0 && i < s->n; i++) {
		amber_slot_name(name, i);
		rc = amber_meta_blob(&slots[i], w, name, s->slots[i], s->len[i]);
	}
	if (rc == 0) {
		top = &m.top[m.k++];
		snprintf(top->name, sizeof(top->name), "keys");
		top->mode = AMBER_GIT_MODE_TREE;
		rc = amber_meta_tree(top->oid, w, slots, s->n);
	}
	if (rc == 0)
		rc = amber_archive_auth_text(auth, a, s->slots, s->len, s->n);
	if (rc == 0)
		rc = amber_meta_blob(&m.top[m.k++], w, "auth", auth, strlen(auth));
	if (rc == 0)
		rc = amber_meta_tree(root, w, m.top, m.k);
	amber_meta_keep_dispose(&m);
	return rc;
}

/* The commit, signed with s when given (git's SSH signature, as snapshots are). */
static int build_commit(amber_buf *out, const uint8_t tree[20], const uint8_t parent[20],
			const char *message, const amber_signer *s)
{
	amber_buf plain = AMBER_BUF_INIT;
	char *armored = NULL;
	int rc = amber_commit_build(s ? &plain : out, tree, parent, 0, message);

	if (rc == 0 && s)
		rc = amber_sshsig_sign(&armored, s, "git", plain.data, plain.len);
	if (rc == 0 && s)
		rc = amber_commit_add_signature(out, plain.data, plain.len, armored);
	free(armored);
	amber_buf_dispose(&plain);
	return rc;
}

static int write_change(amber_archive *a, const slot_set *s, const amber_signer *signer,
			const char *message)
{
	amber_packw *w = NULL;
	amber_buf c = AMBER_BUF_INIT;
	uint8_t tree[20], commit[20], parent[20];
	int rc = amber_packw_new(&w, a->store);

	memcpy(parent, a->meta_oid, 20);
	if (rc == 0)
		rc = new_tree(tree, a, w, s);
	if (rc == 0)
		rc = build_commit(&c, tree, parent, message, signer);
	if (rc == 0)
		rc = amber_packw_add(commit, NULL, w, AMBER_GIT_COMMIT, c.data, c.len);
	if (rc == 0)
		rc = amber_packw_commit(w);
	if (rc == 0)
		rc = amber_store_ref_update(a->store, AMBER_META_REF, commit, parent,
					    "amberfs: change key slots");
	if (rc == 0)
		memcpy(a->meta_oid, commit, 20);
	amber_buf_dispose(&c);
	amber_packw_free(w);
	return rc;
}

/* Take the new set into the handle: copies of kept slots, a copy of the new one. */
static int adopt(amber_archive *a, const slot_set *s)
{
	uint8_t *copy[AMBER_MAX_SLOTS] = {0};

	for (size_t i = 0; i < s->n; i++) {
		if (!(copy[i] = malloc(s->len[i]))) {
			for (size_t j = 0; j < i; j++)
				free(copy[j]);
			return amber_fail(AMBER_ERROR, "out of memory");
		}
		memcpy(copy[i], s->slots[i], s->len[i]);
	}
	for (size_t i = 0; i < a->nslots; i++)
		free(a->slots[i]);
	for (size_t i = 0; i < s->n; i++) {
		a->slots[i] = copy[i];
		a->slot_len[i] = s->len[i];
	}
	a->nslots = s->n;
	a->has_auth = 1;
	amber_meta_auth(a->auth, a->keys, a->config_raw, a->config_len, a->slots, a->slot_len,
			a->nslots);
	return 0;
}

static int change_locked(amber_archive *a, const amber_slot_change *c,
			 const amber_signer *signer)
{
	uint8_t cur[20];
	slot_set s;
	int drop = -1, rc = amber_store_ref_read(cur, a->store, AMBER_META_REF);

	if (rc == 0 && memcmp(cur, a->meta_oid, 20) != 0)
		rc = amber_fail(AMBER_ELOCKED, "archive %s: its metadata changed since it was "
				"opened; try again", a->path);
	if (rc == 0 && c->remove_id && (drop = amber_archive_slot_find(a, c->remove_id)) < 0)
		rc = drop;
	if (rc == 0)
		rc = next_set(&s, a, drop, c);
	if (rc == 0)
		rc = write_change(a, &s, signer, c->message ? c->message :
				  "amberfs archive metadata: key slots\n");
	if (rc == 0)
		rc = adopt(a, &s);
	return rc;
}

int amber_archive_change_slots(amber_archive *a, const amber_slot_change *c)
{
	amber_signer *signer = NULL;
	int rc;

	if (!a->encrypted)
		return amber_fail(AMBER_EINVAL, "archive %s is plain: it has no key slots", a->path);
	if (amber_archive_check_unlocked(a) < 0)
		return AMBER_ENEEDKEY;
	if ((rc = amber_archive_signer(&signer, a, c->signing_key_path, c->unsigned_ok)) < 0)
		return rc;
	if ((rc = amber_store_lock(a->store)) == 0) {
		rc = change_locked(a, c, signer);
		amber_store_unlock(a->store);
	}
	amber_signer_free(signer);
	return rc;
}

int amber_archive_check_signer(const amber_archive *a, const char *signing_key_path,
			       int unsigned_ok)
{
	amber_signer *s = NULL;
	int rc = amber_archive_signer(&s, a, signing_key_path, unsigned_ok);

	amber_signer_free(s);
	return rc;
}
