/*
 * PKCS#11 tokens through p11-kit.
 *
 * Which modules: a URI with module-path loads that one library (the user
 * named it on the command line; a path read from an archive is never
 * loaded); otherwise the modules p11-kit has registered
 * (/usr/share/p11-kit/modules/, ~/.config/pkcs11/modules/), restricted to
 * the one whose p11-kit name or library file name (without "lib" and ".so")
 * is the URI's module-name, if it has one.  Modules that fail to
 * initialise are skipped: a smart-card driver without its daemon must not
 * hide a working SoftHSM2.
 *
 * Which token: exactly one token, across those modules, must match the
 * URI's library, slot and token attributes (p11-kit's matchers); none is
 * "no token", several is an ambiguous URI.  Which key: the URI's id= and
 * object= (CKA_ID, CKA_LABEL) select among the keys of the needed class
 * and type; again exactly one.
 *
 * Errors that mean the token went away (device removed, token not
 * present, a session or object handle no longer valid, a device error)
 * are reported as such, so a caller can say "nothing was written; try
 * again when the token is back".
 */
#include "pkcs11.h"

#include "amber.h"
#include "error.h"

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_SLOTS 64
#define NAME_MAX_LEN 600

struct amber_p11 {
	CK_FUNCTION_LIST **mods;   /* p11_kit_modules_load(), or NULL */
	CK_FUNCTION_LIST *own;     /* p11_kit_module_load() of module-path, or NULL */
	unsigned char *inited;     /* per entry of mods (or 1 for own): initialised */
	size_t nmods;
	CK_FUNCTION_LIST *m;       /* the module of the token */
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE sess;
	int has_sess, logged_in;
	CK_OBJECT_HANDLE key;
	P11KitUri *uri;
	char name[NAME_MAX_LEN];   /* "token 'LABEL' (URI)" */
};

int amber_p11_is_uri(const char *spec)
{
	return spec && strncasecmp(spec, "pkcs11:", 7) == 0;
}

const char *amber_p11_name(const amber_p11 *t)
{
	return t->name;
}

/* Blank-padded CK_UTF8CHAR fields to a C string. */
static void padded(char *out, size_t cap, const CK_UTF8CHAR *f, size_t flen)
{
	size_t n = flen;

	while (n > 0 && (f[n - 1] == ' ' || f[n - 1] == '\0'))
		n--;
	if (n >= cap)
		n = cap - 1;
	memcpy(out, f, n);
	out[n] = '\0';
}

/* The token went away (or broke) under us. */
static int is_gone(CK_RV rv)
{
	return rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT ||
	       rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
	       rv == CKR_DEVICE_ERROR || rv == CKR_OBJECT_HANDLE_INVALID ||
	       rv == CKR_KEY_HANDLE_INVALID || rv == CKR_TOKEN_NOT_RECOGNIZED ||
	       rv == CKR_SLOT_ID_INVALID || rv == CKR_GENERAL_ERROR ||
	       rv == CKR_DEVICE_MEMORY || rv == CKR_FUNCTION_FAILED;
}

static int fail_rv(const amber_p11 *t, CK_RV rv, const char *doing)
{
	if (is_gone(rv))
		return amber_fail(AMBER_ERROR,
				  "%s went away or failed while %s (%s): check that it is present "
				  "and readable, then run the command again",
				  t->name, doing, p11_kit_strerror(rv));
	return amber_fail(AMBER_ERROR, "%s: %s failed: %s", t->name, doing, p11_kit_strerror(rv));
}

/* ---- the URI ---------------------------------------------------------------------- */

static int parse_uri(amber_p11 *t, const char *text)
{
	int rc;

	if (!amber_p11_is_uri(text))
		return amber_fail(AMBER_EINVAL, "'%.40s' is not a pkcs11: URI", text);
	if (strstr(text, "pin-value=") || strstr(text, "pin-source="))
		return amber_fail(AMBER_EINVAL,
				  "a pkcs11: URI must not carry its PIN (pin-value or pin-source): "
				  "anyone can read a command line; put the PIN in a file and give "
				  "--pin-file FILE");
	snprintf(t->name, sizeof(t->name), "token (%.500s)", text);
	if (!(t->uri = p11_kit_uri_new()))
		return amber_fail(AMBER_ERROR, "out of memory");
	rc = p11_kit_uri_parse(text, P11_KIT_URI_FOR_ANY, t->uri);
	if (rc != P11_KIT_URI_OK)
		return amber_fail(AMBER_EINVAL, "%.500s is not a valid pkcs11: URI (RFC 7512): %s",
				  text, p11_kit_uri_message(rc));
	if (p11_kit_uri_get_pin_value(t->uri) || p11_kit_uri_get_pin_source(t->uri))
		return amber_fail(AMBER_EINVAL, "a pkcs11: URI must not carry its PIN: put the PIN "
				  "in a file and give --pin-file FILE");
	if (p11_kit_uri_any_unrecognized(t->uri))
		return amber_fail(AMBER_EINVAL,
				  "%.500s has attributes amberfs does not know: use token=, "
				  "manufacturer=, serial=, model=, slot-id=, id=, object=, type=, "
				  "module-name= or module-path=", text);
	return 0;
}

/* ---- modules ------------------------------------------------------------------------ */

/* "libsofthsm2.so" or ".../libsofthsm2.so" is module-name "softhsm2". */
static int file_is_named(const char *file, const char *want)
{
	const char *base = file ? strrchr(file, '/') : NULL;
	size_t n;

	base = base ? base + 1 : file;
	if (!base)
		return 0;
	if (strncmp(base, "lib", 3) == 0)
		base += 3;
	n = strcspn(base, ".");
	return strlen(want) == n && strncmp(base, want, n) == 0;
}

static int module_wanted(CK_FUNCTION_LIST *m, const char *want)
{
	char *name, *file;
	int yes;

	if (!want)
		return 1;
	name = p11_kit_module_get_name(m);
	file = p11_kit_module_get_filename(m);
	yes = (name && strcmp(name, want) == 0) || file_is_named(file, want);
	free(name);
	free(file);
	return yes;
}

static int load_path(amber_p11 *t, const char *path)
{
	if (!(t->inited = calloc(1, 1)))
		return amber_fail(AMBER_ERROR, "out of memory");
	t->own = p11_kit_module_load(path, 0);
	if (!t->own)
		return amber_fail(AMBER_ENOTFOUND,
				  "cannot load PKCS#11 module %s (%s): check the URI's module-path",
				  path, p11_kit_message() ? p11_kit_message() : "not loadable");
	if (p11_kit_module_initialize(t->own) != CKR_OK)
		return amber_fail(AMBER_ERROR, "PKCS#11 module %s failed to initialise: %s", path,
				  p11_kit_message() ? p11_kit_message() : "no reason given");
	t->inited[0] = 1;
	return 0;
}

static int load_registered(amber_p11 *t, const char *want)
{
	size_t n = 0, ok = 0;

	t->mods = p11_kit_modules_load(NULL, 0);
	while (t->mods && t->mods[n])
		n++;
	t->nmods = n;
	if (n && !(t->inited = calloc(n, 1)))
		return amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (!module_wanted(t->mods[i], want))
			continue;
		if (p11_kit_module_initialize(t->mods[i]) == CKR_OK)
			t->inited[i] = 1, ok++;
	}
	if (ok)
		return 0;
	if (want)
		return amber_fail(AMBER_ENOTFOUND,
				  "no usable PKCS#11 module named '%s' is registered with p11-kit: "
				  "check the URI's module-name, or give module-path=", want);
	return amber_fail(AMBER_ENOTFOUND,
			  "no usable PKCS#11 module is registered with p11-kit: install the "
			  "token's module, or name it with module-path= in the URI");
}

static int load_modules(amber_p11 *t)
{
	const char *path = p11_kit_uri_get_module_path(t->uri);

	if (path)
		return load_path(t, path);
	return load_registered(t, p11_kit_uri_get_module_name(t->uri));
}

static void unload_modules(amber_p11 *t)
{
	if (t->own) {
		if (t->inited && t->inited[0])
			p11_kit_module_finalize(t->own);
		p11_kit_module_release(t->own);
	}
	for (size_t i = 0; t->mods && i < t->nmods; i++)
		if (t->inited[i])
			p11_kit_module_finalize(t->mods[i]);
	if (t->mods)
		p11_kit_modules_release(t->mods);
	free(t->inited);
}

/* ---- the token ---------------------------------------------------------------------- */

struct found {
	CK_FUNCTION_LIST *m;
	CK_SLOT_ID slot;
	char label[33];
	size_t n;               /* tokens matched so far */
	char seen[256];         /* labels of the tokens present, for messages */
};

static void note_seen(struct found *f, const char *label)
{
	size_t l = strlen(f->seen);

	if (l + strlen(label) + 4 < sizeof(f->seen))
		snprintf(f->seen + l, sizeof(f->seen) - l, "%s'%s'", l ? ", " : "", label);
}

static int slot_matches(const amber_p11 *t, CK_FUNCTION_LIST *m, CK_SLOT_ID id,
			CK_TOKEN_INFO *ti)
{
	CK_SLOT_INFO si;
	CK_SLOT_ID want = p11_kit_uri_get_slot_id(t->uri);

	if (m->C_GetSlotInfo(id, &si) != CKR_OK || !p11_kit_uri_match_slot_info(t->uri, &si))
		return 0;
	if (want != (CK_SLOT_ID)-1 && want != id)
		return 0;
	return m->C_GetTokenInfo(id, ti) == CKR_OK && p11_kit_uri_match_token_info(t->uri, ti);
}

static void scan_module(struct found *f, const amber_p11 *t, CK_FUNCTION_LIST *m)
{
	CK_SLOT_ID slots[MAX_SLOTS];
	CK_ULONG n = MAX_SLOTS;
	CK_INFO info;
	CK_TOKEN_INFO ti;
	char label[33];

	if (m->C_GetInfo(&info) != CKR_OK || !p11_kit_uri_match_module_info(t->uri, &info) ||
	    m->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return;
	for (CK_ULONG i = 0; i < n && i < MAX_SLOTS; i++) {
		if (m->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    (ti.flags & CKF_TOKEN_INITIALIZED)) {
			padded(label, sizeof(label), ti.label, sizeof(ti.label));
			note_seen(f, label);
		}
		if (!slot_matches(t, m, slots[i], &ti))
			continue;
		if (f->n++ == 0) {
			f->m = m;
			f->slot = slots[i];
			padded(f->label, sizeof(f->label), ti.label, sizeof(ti.label));
		}
	}
}

static int find_token(amber_p11 *t, const char *text)
{
	struct found f = {0};

	if (t->own)
		scan_module(&f, t, t->own);
	for (size_t i = 0; t->mods && i < t->nmods; i++)
		if (t->inited[i])
			scan_module(&f, t, t->mods[i]);
	if (f.n == 0)
		return amber_fail(AMBER_ENOTFOUND,
				  "no token matches %.500s (tokens present: %s): check the URI "
				  "and that the token is plugged in",
				  text, f.seen[0] ? f.seen : "none");
	if (f.n > 1)
		return amber_fail(AMBER_EINVAL,
				  "%zu tokens match %.500s (%s): add token= or serial= to the URI",
				  f.n, text, f.seen);
	t->m = f.m;
	t->slot = f.slot;
	snprintf(t->name, sizeof(t->name), "token '%s' (%.500s)", f.label, text);
	return 0;
}

static int login(amber_p11 *t, const unsigned char *pin, size_t len)
{
	CK_RV rv = t->m->C_OpenSession(t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
				       &t->sess);

	if (rv != CKR_OK)
		return fail_rv(t, rv, "opening a session");
	t->has_sess = 1;
	if (!pin)
		return 0;
	rv = t->m->C_Login(t->sess, CKU_USER, (CK_UTF8CHAR_PTR)pin, (CK_ULONG)len);
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		return 0;
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE)
		return amber_fail(AMBER_EBADKEY, "wrong PIN for %s: check the file given with "
				  "--pin-file", t->name);
	if (rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED)
		return amber_fail(AMBER_EBADKEY, "the user PIN of %s is %s: reset it with the "
				  "token's security officer PIN", t->name,
				  rv == CKR_PIN_LOCKED ? "locked" : "expired");
	if (rv != CKR_OK)
		return fail_rv(t, rv, "logging in");
	t->logged_in = 1;
	return 0;
}

int amber_p11_open(amber_p11 **out, const char *uri, const unsigned char *pin, size_t pin_len)
{
	amber_p11 *t = calloc(1, sizeof(*t));
	int rc;

	*out = NULL;
	if (!t)
		return amber_fail(AMBER_ERROR, "out of memory");
	rc = parse_uri(t, uri);
	if (rc == 0)
		rc = load_modules(t);
	if (rc == 0)
		rc = find_token(t, uri);
	if (rc == 0)
		rc = login(t, pin, pin_len);
	if (rc < 0) {
		amber_p11_close(t);
		return rc;
	}
	*out = t;
	return 0;
}

void amber_p11_close(amber_p11 *t)
{
	if (!t)
		return;
	if (t->logged_in)
		t->m->C_Logout(t->sess);
	if (t->has_sess)
		t->m->C_CloseSession(t->sess);
	unload_modules(t);
	if (t->uri)
		p11_kit_uri_free(t->uri);
	free(t);
}

/* ---- objects ------------------------------------------------------------------------ */

/*
 * Find the objects of class `cls` and type `kt` that also have the URI's
 * id and label (or, when `id` is given, that CKA_ID instead).  *n is the
 * count found (at most 2).
 */
static int find_objects(CK_OBJECT_HANDLE *found, CK_ULONG *n, amber_p11 *t, CK_OBJECT_CLASS cls,
			CK_KEY_TYPE kt, const CK_ATTRIBUTE *id)
{
	CK_ATTRIBUTE tmpl[4] = {
		{CKA_CLASS, &cls, sizeof(cls)},
		{CKA_KEY_TYPE, &kt, sizeof(kt)},
	};
	CK_ATTRIBUTE *a;
	CK_ULONG k = 2;
	CK_RV rv;

	if (id)
		tmpl[k++] = *id;
	else if ((a = p11_kit_uri_get_attribute(t->uri, CKA_ID)))
		tmpl[k++] = *a;
	if (!id && (a = p11_kit_uri_get_attribute(t->uri, CKA_LABEL)))
		tmpl[k++] = *a;
	rv = t->m->C_FindObjectsInit(t->sess, tmpl, k);
	if (rv == CKR_OK) {
		rv = t->m->C_FindObjects(t->sess, found, 2, n);
		t->m->C_FindObjectsFinal(t->sess);
	}
	return rv == CKR_OK ? 0 : fail_rv(t, rv, "looking for the key");
}

/* Ed25519 by its curve: the OID 1.3.101.112 or the name "edwards25519". */
static int params_ed25519(const uint8_t *p, CK_ULONG n)
{
	static const uint8_t oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
	static const uint8_t name[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r', 'd', 's',
				       '2', '5', '5', '1', '9'};

	return (n == sizeof(oid) && memcmp(p, oid, n) == 0) ||
	       (n == sizeof(name) && memcmp(p, name, n) == 0);
}

/* CKA_EC_POINT: the 32 bytes, raw or as a DER OCTET STRING. */
static int point_ed25519(uint8_t pk[32], const uint8_t *p, CK_ULONG n)
{
	if (n == 34 && p[0] == 0x04 && p[1] == 32)
		p += 2, n -= 2;
	if (n != 32)
		return -1;
	memcpy(pk, p, 32);
	return 0;
}

static int read_public(uint8_t pk[32], amber_p11 *t, CK_OBJECT_HANDLE pub)
{
	uint8_t params[64], point[64];
	CK_ATTRIBUTE a[2] = {
		{CKA_EC_PARAMS, params, sizeof(params)},
		{CKA_EC_POINT, point, sizeof(point)},
	};
	CK_RV rv = t->m->C_GetAttributeValue(t->sess, pub, a, 2);

	if (rv != CKR_OK)
		return fail_rv(t, rv, "reading the public key");
	if (!params_ed25519(params, a[0].ulValueLen) ||
	    point_ed25519(pk, point, a[1].ulValueLen) < 0)
		return amber_fail(AMBER_EINVAL,
				  "the key on %s is not an Ed25519 key: make one with pkcs11-tool "
				  "--keypairgen --key-type EC:edwards25519", t->name);
	return 0;
}

/* The public-key object with the private key's CKA_ID (or the URI's). */
static int find_public(uint8_t pk[32], amber_p11 *t)
{
	uint8_t idbuf[256];
	CK_ATTRIBUTE id = {CKA_ID, idbuf, sizeof(idbuf)};
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;
	int rc, by_id = t->m->C_GetAttributeValue(t->sess, t->key, &id, 1) == CKR_OK &&
			id.ulValueLen > 0 && id.ulValueLen != CK_UNAVAILABLE_INFORMATION;

	rc = find_objects(h, &n, t, CKO_PUBLIC_KEY, CKK_EC_EDWARDS, by_id ? &id : NULL);
	if (rc < 0)
		return rc;
	if (n != 1)
		return amber_fail(AMBER_ENOTFOUND,
				  "%s has %s public-key object for its Ed25519 key: amberfs reads "
				  "the public key from it; store one with the same id", t->name,
				  n ? "more than one" : "no");
	return read_public(pk, t, h[0]);
}

/*
 * The one key of class cls and type kt the URI names becomes t->key.
 * `key` names it in messages ("no <key>", "several <kind> keys"), `hint`
 * says how to see or make one.
 */
static int find_one_key(amber_p11 *t, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt, const char *key,
			const char *kind, const char *hint)
{
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;
	int rc = find_objects(h, &n, t, cls, kt, NULL);

	if (rc < 0)
		return rc;
	if (n == 0)
		return amber_fail(AMBER_ENOTFOUND, "%s holds no %s that matches the URI: check its "
				  "id= and object= (%s)", t->name, key, hint);
	if (n > 1)
		return amber_fail(AMBER_EINVAL, "several %s keys on %s match the URI: add id= or "
				  "object= to it", kind, t->name);
	t->key = h[0];
	return 0;
}

int amber_p11_ed25519_key(uint8_t pk[32], amber_p11 *t)
{
	int rc = find_one_key(t, CKO_PRIVATE_KEY, CKK_EC_EDWARDS, "Ed25519 private key",
			      "Ed25519", "pkcs11-tool --list-objects shows the keys");

	return rc < 0 ? rc : find_public(pk, t);
}

int amber_p11_ed25519_sign(uint8_t sig[64], amber_p11 *t, const void *msg, size_t len)
{
	CK_MECHANISM mech = {CKM_EDDSA, NULL, 0};
	CK_ULONG siglen = 64;
	CK_RV rv = t->m->C_SignInit(t->sess, &mech, t->key);

	if (rv == CKR_OK)
		rv = t->m->C_Sign(t->sess, (CK_BYTE_PTR)msg, (CK_ULONG)len, sig, &siglen);
	if (rv != CKR_OK)
		return fail_rv(t, rv, "signing");
	if (siglen != 64)
		return amber_fail(AMBER_ERROR, "%s returned a %lu-byte Ed25519 signature", t->name,
				  (unsigned long)siglen);
	return 0;
}

/* ---- AES key wrap --------------------------------------------------------------------- */

static void describe(amber_p11_ident *id, amber_p11 *t)
{
	CK_TOKEN_INFO ti;
	char label[65] = "";
	CK_ATTRIBUTE a[2] = {
		{CKA_ID, id->key_id, sizeof(id->key_id)},
		{CKA_LABEL, label, sizeof(label) - 1},
	};

	memset(id, 0, sizeof(*id));
	if (t->m->C_GetTokenInfo(t->slot, &ti) == CKR_OK) {
		padded(id->serial, sizeof(id->serial), ti.serialNumber, sizeof(ti.serialNumber));
		padded(id->label, sizeof(id->label), ti.label, sizeof(ti.label));
	}
	if (t->m->C_GetAttributeValue(t->sess, t->key, a, 2) != CKR_OK) {
		/* one of them may be absent or too long: ask separately */
		a[0].ulValueLen = a[1].ulValueLen = 0;
		a[0].ulValueLen = sizeof(id->key_id);
		if (t->m->C_GetAttributeValue(t->sess, t->key, &a[0], 1) != CKR_OK)
			a[0].ulValueLen = 0;
		a[1].ulValueLen = sizeof(label) - 1;
		if (t->m->C_GetAttributeValue(t->sess, t->key, &a[1], 1) != CKR_OK)
			a[1].ulValueLen = 0;
	}
	id->key_id_len = a[0].ulValueLen <= sizeof(id->key_id) ? a[0].ulValueLen : 0;
	if (a[1].ulValueLen < sizeof(label))
		label[a[1].ulValueLen] = '\0';
	snprintf(id->key_label, sizeof(id->key_label), "%s", label);
}

int amber_p11_aes_key(amber_p11_ident *id, amber_p11 *t)
{
	int rc = find_one_key(t, CKO_SECRET_KEY, CKK_AES, "AES key", "AES",
			      "make one with pkcs11-tool --keygen --key-type AES:32");

	if (rc == 0)
		describe(id, t);
	return rc;
}

int amber_p11_wrap(uint8_t *out, amber_p11 *t, const uint8_t *secret, size_t len)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
		{CKA_CLASS, &cls, sizeof(cls)},         {CKA_KEY_TYPE, &kt, sizeof(kt)},
		{CKA_TOKEN, &no, sizeof(no)},           {CKA_EXTRACTABLE, &yes, sizeof(yes)},
		{CKA_VALUE, (void *)secret, len},
	};
	CK_MECHANISM mech = {CKM_AES_KEY_WRAP, NULL, 0};
	CK_OBJECT_HANDLE obj;
	CK_ULONG outlen = len + 8;
	CK_RV rv = t->m->C_CreateObject(t->sess, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &obj);

	if (rv != CKR_OK)
		return fail_rv(t, rv, "taking in the key to wrap");
	rv = t->m->C_WrapKey(t->sess, &mech, t->key, obj, out, &outlen);
	t->m->C_DestroyObject(t->sess, obj);
	if (rv == CKR_KEY_FUNCTION_NOT_PERMITTED || rv == CKR_WRAPPING_KEY_TYPE_INCONSISTENT)
		return amber_fail(AMBER_EINVAL, "the AES key on %s may not wrap keys (%s): make it "
				  "with wrap and unwrap allowed", t->name, p11_kit_strerror(rv));
	if (rv != CKR_OK)
		return fail_rv(t, rv, "wrapping");
	if (outlen != len + 8)
		return amber_fail(AMBER_ERROR, "%s wrapped %zu bytes into %lu", t->name, len,
				  (unsigned long)outlen);
	return 0;
}

/* Read the unwrapped object's value into secret, then destroy the object. */
static int take_value(uint8_t *secret, size_t len, amber_p11 *t, CK_OBJECT_HANDLE obj)
{
	CK_ATTRIBUTE v = {CKA_VALUE, secret, len};
	CK_RV rv = t->m->C_GetAttributeValue(t->sess, obj, &v, 1);

	t->m->C_DestroyObject(t->sess, obj);
	if (rv != CKR_OK)
		return fail_rv(t, rv, "reading the unwrapped key");
	if (v.ulValueLen != len)
		return amber_fail(AMBER_ERROR, "%s unwrapped %lu bytes, not %zu", t->name,
				  (unsigned long)v.ulValueLen, len);
	return 0;
}

static int key_present(amber_p11 *t)
{
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};

	return t->m->C_GetAttributeValue(t->sess, t->key, &a, 1) == CKR_OK;
}

int amber_p11_unwrap(uint8_t *secret, amber_p11 *t, const uint8_t *wrapped, size_t wlen)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
		{CKA_CLASS, &cls, sizeof(cls)},         {CKA_KEY_TYPE, &kt, sizeof(kt)},
		{CKA_TOKEN, &no, sizeof(no)},           {CKA_EXTRACTABLE, &yes, sizeof(yes)},
		{CKA_SENSITIVE, &no, sizeof(no)},
	};
	CK_MECHANISM mech = {CKM_AES_KEY_WRAP, NULL, 0};
	CK_OBJECT_HANDLE obj;
	CK_RV rv;

	if (wlen < 16 || wlen % 8)
		return amber_fail(AMBER_EBADKEY, "a wrapped key of %zu bytes", wlen);
	rv = t->m->C_UnwrapKey(t->sess, &mech, t->key, (CK_BYTE_PTR)wrapped, wlen, tmpl,
			       sizeof(tmpl) / sizeof(tmpl[0]), &obj);
	/* SoftHSM2 says CKR_GENERAL_ERROR for a failed integrity check: it is
	 * one if the key is still there to ask */
	if ((rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED) && key_present(t))
		rv = CKR_WRAPPED_KEY_INVALID;
	if (rv == CKR_WRAPPED_KEY_INVALID || rv == CKR_ENCRYPTED_DATA_INVALID ||
	    rv == CKR_WRAPPED_KEY_LEN_RANGE || rv == CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT)
		return amber_fail(AMBER_EBADKEY, "the AES key on %s did not wrap this key (%s)",
				  t->name, p11_kit_strerror(rv));
	if (rv != CKR_OK)
		return fail_rv(t, rv, "unwrapping");
	return take_value(secret, wlen - 8, t, obj);
}
