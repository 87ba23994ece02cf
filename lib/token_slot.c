/*
 * Key slots held by a PKCS#11 token (slot kind 4): the glue between the
 * token (pkcs11.c), the slot format (keys.c) and the archive's slot set
 * (slots.c).
 *
 * Sealing: a random 32-byte key-encryption key (kek), in locked memory,
 * seals the master key exactly as a key file's kek does; the token's AES
 * key wraps the kek (CKM_AES_KEY_WRAP) and the wrapped form goes into the
 * slot with the token's and key's identification.  The AES key never
 * leaves the token; the kek only passes through it as a session object
 * that is destroyed at once.  Unlocking asks the token to unwrap each
 * pkcs11 slot's kek until one opens its slot.
 */
#include "archive.h"
#include "error.h"
#include "keys.h"
#include "pkcs11.h"

#include <sodium.h>
#include <string.h>

#define WRAPPED (AMBER_KEY_BYTES + 8)
#define PARAMS_MAX 1024

static size_t put_str(uint8_t *p, const void *s, size_t len, int wide)
{
	if (wide) {
		p[0] = (uint8_t)len;
		p[1] = (uint8_t)(len >> 8);
	} else {
		p[0] = (uint8_t)len;
	}
	memcpy(p + 1 + wide, s, len);
	return 1 + (size_t)wide + len;
}

/* alg, wrapped kek, serial, token label, key id, key label, URI (keys.c). */
static int build_params(uint8_t *p, size_t *n, const uint8_t wrapped[WRAPPED],
			const amber_p11_ident *id, const char *uri)
{
	size_t o = 0, ul = strlen(uri);

	if (ul > 512)
		return amber_fail(AMBER_EINVAL, "a pkcs11: URI of more than 512 bytes");
	p[o++] = 1;
	o += put_str(p + o, wrapped, WRAPPED, 0);
	o += put_str(p + o, id->serial, strlen(id->serial), 0);
	o += put_str(p + o, id->label, strlen(id->label), 0);
	o += put_str(p + o, id->key_id, id->key_id_len, 0);
	o += put_str(p + o, id->key_label, strlen(id->key_label), 0);
	o += put_str(p + o, uri, ul, 1);
	*n = o;
	return 0;
}

/* Wrap kek with the token key, and check that the token unwraps it again. */
static int wrap_checked(uint8_t wrapped[WRAPPED], amber_p11 *t, const uint8_t *kek)
{
	uint8_t *again = sodium_malloc(AMBER_KEY_BYTES);
	int rc;

	if (!again)
		return amber_fail(AMBER_ERROR, "out of secure memory");
	rc = amber_p11_wrap(wrapped, t, kek, AMBER_KEY_BYTES);
	if (rc == 0)
		rc = amber_p11_unwrap(again, t, wrapped, WRAPPED);
	if (rc == 0 && sodium_memcmp(again, kek, AMBER_KEY_BYTES) != 0)
		rc = amber_fail(AMBER_ERROR, "%s unwrapped another key than it wrapped",
				amber_p11_name(t));
	sodium_free(again);
	return rc;
}

int amber_archive_seal_pkcs11(uint8_t **blob, size_t *len, const amber_archive *a,
			      const char *uri, const char *label)
{
	uint8_t wrapped[WRAPPED], params[PARAMS_MAX], *kek = NULL;
	amber_p11_ident id;
	amber_p11 *t = NULL;
	size_t plen = 0;
	int rc = amber_archive_check_unlocked(a);

	*blob = NULL;
	if (rc == 0 && !(kek = sodium_malloc(AMBER_KEY_BYTES)))
		rc = amber_fail(AMBER_ERROR, "out of secure memory");
	if (rc == 0)
		rc = amber_p11_open(&t, uri, a->token_pin, a->token_pin_len);
	if (rc == 0)
		rc = amber_p11_aes_key(&id, t);
	if (rc == 0) {
		randombytes_buf(kek, AMBER_KEY_BYTES);
		rc = wrap_checked(wrapped, t, kek);
	}
	if (rc == 0)
		rc = build_params(params, &plen, wrapped, &id, uri);
	if (rc == 0)
		rc = amber_slot_seal_pkcs11(blob, len, a->keys, label, params, plen, kek);
	amber_p11_close(t);
	if (kek)
		sodium_free(kek);
	return rc;
}

/* Try the token's unwrap of slot i's kek; 0 once the archive is unlocked. */
static int try_slot(amber_archive *a, amber_p11 *t, size_t i, uint8_t *kek)
{
	const uint8_t *w;
	size_t wl;
	int rc = amber_slot_pkcs11_wrapped(&w, &wl, a->slots[i], a->slot_len[i]);

	if (rc < 0)
		return AMBER_EBADKEY; /* another kind, or malformed: not ours to open */
	if ((rc = amber_p11_unwrap(kek, t, w, wl)) < 0)
		return rc;
	return amber_archive_unlock_with(a, AMBER_SLOT_PKCS11, kek, AMBER_KEY_BYTES);
}

static int unlock_slots(amber_archive *a, amber_p11 *t, const char *uri)
{
	uint8_t *kek = sodium_malloc(AMBER_KEY_BYTES);
	int rc = AMBER_EBADKEY;

	if (!kek)
		return amber_fail(AMBER_ERROR, "out of secure memory");
	for (size_t i = 0; i < a->nslots && rc == AMBER_EBADKEY; i++)
		rc = try_slot(a, t, i, kek);
	sodium_free(kek);
	if (rc == AMBER_EBADKEY)
		return amber_fail(AMBER_EBADKEY,
				  "the key %s names opens no pkcs11 key slot of archive %s: it is "
				  "another archive's token key, or its slot was removed "
				  "('amberfs key list %s')", uri, a->path, a->path);
	return rc;
}

int amber_archive_unlock_token(amber_archive *a, const char *uri)
{
	amber_p11_ident id;
	amber_p11 *t = NULL;
	size_t n = 0;
	int rc;

	if (!a->encrypted)
		return amber_fail(AMBER_EPLAIN, "archive %s is not encrypted, yet a key was "
				  "given for it: refusing", a->path);
	if (a->keys)
		return 0;
	for (size_t i = 0; i < a->nslots; i++) {
		amber_slot_info s;

		n += amber_slot_describe(&s, a->slots[i], a->slot_len[i]) == 0 &&
		     s.kind == AMBER_SLOT_PKCS11;
	}
	if (n == 0)
		return amber_fail(AMBER_EBADKEY, "archive %s has no pkcs11 key slot: unlock it "
				  "with another kind ('amberfs key list %s' shows its slots)",
				  a->path, a->path);
	rc = amber_p11_open(&t, uri, a->token_pin, a->token_pin_len);
	if (rc == 0)
		rc = amber_p11_aes_key(&id, t);
	if (rc == 0)
		rc = unlock_slots(a, t, uri);
	amber_p11_close(t);
	return rc;
}
