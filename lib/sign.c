/*
 * Ed25519 signatures in OpenSSH's SSH signature format (PROTOCOL.sshsig),
 * as git writes them with gpg.format=ssh.
 *
 * A signature is the armored encoding of
 *
 *   "SSHSIG" u32(1) string(publickey) string(namespace) string(reserved)
 *   string(hash_algorithm) string(signature)
 *
 * where publickey is string("ssh-ed25519") string(pk[32]), signature is
 * string("ssh-ed25519") string(sig[64]), and the Ed25519 signature covers
 *
 *   "SSHSIG" string(namespace) string(reserved) string(hash_algorithm)
 *   string(H(message))
 *
 * (string = u32 big-endian length, then the bytes).  We write "sha512" and
 * read "sha512" or "sha256", as ssh-keygen does.  Git puts the armored block
 * in a commit's "gpgsig" header (continuation lines start with one space;
 * the signed payload is the commit without that header) and at the end of
 * a tag's message (the payload is everything before it).
 *
 * The secret key file (not part of the archive; amberfs-format(5)) is two
 * lines: "AMBERFS SIGNING KEY 1" and the base64 of the 32-byte Ed25519 seed.
 * The seed and the expanded secret key only live in sodium_malloc memory.
 *
 * A signer may instead be a key held in a PKCS#11 token (pkcs11.h), named
 * by a "pkcs11:" URI: the token makes the Ed25519 signature (CKM_EDDSA)
 * over the same signed data, so the SSH signature is byte-compatible with
 * one made from a key file, and the secret key never leaves the token.
 */
#include "sign.h"

#include "error.h"
#include "pkcs11.h"
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEYFILE_MAGIC "AMBERFS SIGNING KEY 1\n"
#define KEYFILE_MAX 4096
#define ARMOR_BEGIN "-----BEGIN SSH SIGNATURE-----"
#define ARMOR_END "-----END SSH SIGNATURE-----"
#define ARMOR_COLS 70
#define SIG_BLOB_MAX 4096
#define KEYTYPE "ssh-ed25519"

struct amber_signer {
	amber_p11 *token;       /* NULL: the key below, from a file */
	uint8_t pk[crypto_sign_ed25519_PUBLICKEYBYTES];
	uint8_t sk[crypto_sign_ed25519_SECRETKEYBYTES];
	uint8_t seed[crypto_sign_ed25519_SEEDBYTES];
};

/* ---- keys ---------------------------------------------------------------- */

static int signer_from_seed(amber_signer **out, const uint8_t *seed)
{
	amber_signer *s = sodium_malloc(sizeof(*s));

	if (!s)
		return amber_fail(AMBER_ERROR, "out of secure memory for a signing key");
	s->token = NULL;
	memcpy(s->seed, seed, sizeof(s->seed));
	crypto_sign_ed25519_seed_keypair(s->pk, s->sk, s->seed);
	*out = s;
	return 0;
}

int amber_signer_generate(amber_signer **out)
{
	uint8_t *seed = sodium_malloc(crypto_sign_ed25519_SEEDBYTES);
	int rc;

	if (!seed)
		return amber_fail(AMBER_ERROR, "out of secure memory for a signing key");
	randombytes_buf(seed, crypto_sign_ed25519_SEEDBYTES);
	rc = signer_from_seed(out, seed);
	sodium_free(seed);
	return rc;
}

void amber_signer_free(amber_signer *s)
{
	if (!s)
		return;
	amber_p11_close(s->token);
	sodium_free(s); /* wipes */
}

int amber_signer_is_token(const amber_signer *s)
{
	return s->token != NULL;
}

/* The token's key, checked by signing a test message with it. */
static int token_signer(amber_signer **out, const char *uri, const unsigned char *pin,
			size_t pin_len)
{
	static const char probe[] = "amberfs: does this token key sign?";
	uint8_t sig[crypto_sign_ed25519_BYTES];
	amber_signer *s = sodium_malloc(sizeof(*s));
	int rc;

	if (!s)
		return amber_fail(AMBER_ERROR, "out of secure memory for a signing key");
	sodium_memzero(s, sizeof(*s));
	rc = amber_p11_open(&s->token, uri, pin, pin_len);
	if (rc == 0)
		rc = amber_p11_ed25519_key(s->pk, s->token);
	if (rc == 0)
		rc = amber_p11_ed25519_sign(sig, s->token, probe, sizeof(probe));
	if (rc == 0 && crypto_sign_ed25519_verify_detached(sig, (const uint8_t *)probe,
							   sizeof(probe), s->pk) != 0)
		rc = amber_fail(AMBER_EBADKEY, "%s: the private key's signature does not match its "
				"public-key object: the token holds a mismatched key pair",
				amber_p11_name(s->token));
	if (rc < 0) {
		amber_signer_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

int amber_signer_open(amber_signer **out, const char *spec, const unsigned char *pin,
		      size_t pin_len)
{
	*out = NULL;
	if (amber_p11_is_uri(spec))
		return token_signer(out, spec, pin, pin_len);
	return amber_signer_load(out, spec);
}

void amber_signer_public(uint8_t pk[AMBER_SIGN_PK_BYTES], const amber_signer *s)
{
	memcpy(pk, s->pk, AMBER_SIGN_PK_BYTES);
}

static int read_keyfile(char *text, size_t *len, const char *path)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0 && errno == ENOENT)
		return amber_fail(AMBER_ENOTFOUND, "signing key file %s does not exist", path);
	if (fd < 0)
		return amber_fail_errno("cannot open signing key file %s", path);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > KEYFILE_MAX) {
		close(fd);
		return amber_fail(AMBER_ECORRUPT, "%s is not an amberfs signing key file", path);
	}
	if (st.st_mode & 077) {
		close(fd);
		return amber_fail(AMBER_EINVAL,
				  "signing key file %s is accessible by others (mode %04o): "
				  "chmod 600 it",
				  path, (unsigned)(st.st_mode & 07777));
	}
	n = read(fd, text, KEYFILE_MAX);
	close(fd);
	if (n < 0)
		return amber_fail_errno("cannot read signing key file %s", path);
	*len = (size_t)n;
	return 0;
}

static int parse_keyfile(amber_signer **out, const char *text, size_t len, const char *path)
{
	size_t ml = strlen(KEYFILE_MAGIC), bl, got = 0;
	const char *b64 = text + ml;
	uint8_t *seed = NULL;
	int rc;

	if (len < ml || memcmp(text, KEYFILE_MAGIC, ml) != 0)
		return amber_fail(AMBER_ECORRUPT, "%s is not an amberfs signing key file", path);
	bl = strcspn(b64, "\n");
	if (!(seed = sodium_malloc(crypto_sign_ed25519_SEEDBYTES)))
		return amber_fail(AMBER_ERROR, "out of secure memory for a signing key");
	if (sodium_base642bin(seed, crypto_sign_ed25519_SEEDBYTES, b64, bl, NULL, &got, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    got != crypto_sign_ed25519_SEEDBYTES || ml + bl + 1 < len ||
	    (ml + bl < len && b64[bl] != '\n'))
		rc = amber_fail(AMBER_ECORRUPT, "signing key file %s is malformed", path);
	else
		rc = signer_from_seed(out, seed);
	sodium_free(seed);
	return rc;
}

int amber_signer_load(amber_signer **out, const char *path)
{
	char *text = sodium_malloc(KEYFILE_MAX + 1);
	size_t len = 0;
	int rc;

	if (!text)
		return amber_fail(AMBER_ERROR, "out of secure memory for a signing key");
	rc = read_keyfile(text, &len, path);
	if (rc == 0) {
		text[len] = '\0';
		rc = parse_keyfile(out, text, len, path);
	}
	sodium_free(text);
	return rc;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The new name must survive a crash as well as the bytes. */
static void fsync_parent(const char *path)
{
	char *copy = strdup(path);
	int fd = copy ? open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(copy);
}

static int keyfile_text(char *text, size_t cap, const amber_signer *s)
{
	size_t ml = strlen(KEYFILE_MAGIC);

	memcpy(text, KEYFILE_MAGIC, ml);
	sodium_bin2base64(text + ml, cap - ml - 1, s->seed, sizeof(s->seed),
			  sodium_base64_VARIANT_ORIGINAL);
	ml += strlen(text + ml);
	text[ml++] = '\n';
	text[ml] = '\0';
	return (int)ml;
}

int amber_signer_save(const amber_signer *s, const char *path)
{
	char *text = NULL;
	int fd = -1, rc = 0, len;

	assert(!s->token); /* a token's key never leaves it */
	if (!(text = sodium_malloc(256)))
		return amber_fail(AMBER_ERROR, "out of secure memory for a signing key");
	len = keyfile_text(text, 256, s);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST)
		rc = amber_fail(AMBER_EEXISTS,
				"signing key file %s already exists: refusing to overwrite it; "
				"choose another path",
				path);
	else if (fd < 0)
		rc = amber_fail_errno("cannot create signing key file %s", path);
	else if (fchmod(fd, 0600) < 0 || write_all(fd, text, (size_t)len) < 0 || fsync(fd) < 0)
		rc = amber_fail_errno("cannot write signing key file %s", path);
	if (fd >= 0 && close(fd) < 0 && rc == 0)
		rc = amber_fail_errno("cannot write signing key file %s", path);
	if (fd >= 0 && rc < 0)
		unlink(path);
	if (rc == 0)
		fsync_parent(path);
	sodium_free(text);
	return rc;
}

/* ---- SSH wire strings ------------------------------------------------------ */

static int put_string(amber_buf *b, const void *data, size_t len)
{
	uint8_t n[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			(uint8_t)len};

	if (amber_buf_put(b, n, 4) < 0)
		return AMBER_ERROR;
	return len ? amber_buf_put(b, data, len) : 0;
}

static int put_cstring(amber_buf *b, const char *s)
{
	return put_string(b, s, strlen(s));
}

/* Read one string; *data points into the reader's bytes. */
static int get_string(amber_rd *r, const uint8_t **data, size_t *len)
{
	uint8_t n[4];
	const uint8_t *p;
	uint32_t v;

	if (amber_rd_bytes(r, &p, 4) < 0)
		return -1;
	memcpy(n, p, 4);
	v = (uint32_t)n[0] << 24 | (uint32_t)n[1] << 16 | (uint32_t)n[2] << 8 | n[3];
	*len = v;
	return amber_rd_bytes(r, data, v);
}

static int string_is(const uint8_t *data, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(data, want, len) == 0;
}

/* The blob string("ssh-ed25519") string(key or signature of `len` bytes). */
static int put_blob(amber_buf *b, const uint8_t *data, size_t len)
{
	return put_cstring(b, KEYTYPE) < 0 ? AMBER_ERROR : put_string(b, data, len);
}

/* The same blob as one string, as an SSH signature holds it. */
static int put_typed(amber_buf *b, const uint8_t *data, size_t len)
{
	amber_buf inner = AMBER_BUF_INIT;
	int rc = put_blob(&inner, data, len);

	if (rc == 0)
		rc = put_string(b, inner.data, inner.len);
	amber_buf_dispose(&inner);
	return rc;
}

/* Parse string("ssh-ed25519") string(<want> bytes) filling a whole blob. */
static int get_typed(const uint8_t **out, size_t want, const uint8_t *blob, size_t len)
{
	amber_rd r;
	const uint8_t *t;
	size_t tl, dl;

	amber_rd_init(&r, blob, len);
	if (get_string(&r, &t, &tl) < 0 || !string_is(t, tl, KEYTYPE) ||
	    get_string(&r, out, &dl) < 0 || dl != want || r.left != 0)
		return -1;
	return 0;
}

/* ---- public keys ------------------------------------------------------------- */

int amber_pubkey_format(char *out, size_t outlen, const uint8_t pk[AMBER_SIGN_PK_BYTES],
			const char *comment)
{
	amber_buf blob = AMBER_BUF_INIT;
	char b64[128];
	int n, rc = put_blob(&blob, pk, AMBER_SIGN_PK_BYTES);

	if (rc < 0) {
		amber_buf_dispose(&blob);
		return rc;
	}
	sodium_bin2base64(b64, sizeof(b64), blob.data, blob.len, sodium_base64_VARIANT_ORIGINAL);
	amber_buf_dispose(&blob);
	n = snprintf(out, outlen, KEYTYPE " %s%s%s", b64, comment && *comment ? " " : "",
		     comment ? comment : "");
	if (n < 0 || (size_t)n >= outlen)
		return amber_fail(AMBER_ERROR, "public key line too long");
	return 0;
}

int amber_pubkey_parse(uint8_t pk[AMBER_SIGN_PK_BYTES], const char *line)
{
	uint8_t blob[128];
	const uint8_t *key;
	size_t tl = strlen(KEYTYPE), bl, got = 0;
	const char *b64 = line + tl + 1;

	if (strncmp(line, KEYTYPE " ", tl + 1) != 0)
		return amber_fail(AMBER_ECORRUPT, "not an ssh-ed25519 public key");
	bl = strcspn(b64, " \t\r\n");
	if (sodium_base642bin(blob, sizeof(blob), b64, bl, NULL, &got, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    get_typed(&key, AMBER_SIGN_PK_BYTES, blob, got) < 0)
		return amber_fail(AMBER_ECORRUPT, "malformed ssh-ed25519 public key");
	memcpy(pk, key, AMBER_SIGN_PK_BYTES);
	return 0;
}

/* ---- signatures ------------------------------------------------------------------- */

/* "SSHSIG" string(ns) string("") string(hash) string(H(msg)) */
static int signed_data(amber_buf *out, const char *ns, const char *hash, const void *msg,
		       size_t len)
{
	uint8_t h[crypto_hash_sha512_BYTES];
	size_t hl = sizeof(h);

	if (strcmp(hash, "sha512") == 0) {
		crypto_hash_sha512(h, msg, len);
	} else {
		crypto_hash_sha256(h, msg, len);
		hl = crypto_hash_sha256_BYTES;
	}
	if (amber_buf_put(out, "SSHSIG", 6) < 0 || put_cstring(out, ns) < 0 ||
	    put_cstring(out, "") < 0 || put_cstring(out, hash) < 0 || put_string(out, h, hl) < 0)
		return AMBER_ERROR;
	return 0;
}

static int sig_blob(amber_buf *blob, const amber_signer *s, const char *ns, const void *msg,
		    size_t len)
{
	amber_buf data = AMBER_BUF_INIT;
	uint8_t sig[crypto_sign_ed25519_BYTES];
	int rc = signed_data(&data, ns, "sha512", msg, len);

	if (rc < 0)
		rc = amber_fail(AMBER_ERROR, "out of memory signing");
	else if (s->token)
		rc = amber_p11_ed25519_sign(sig, s->token, data.data, data.len);
	else
		crypto_sign_ed25519_detached(sig, NULL, data.data, data.len, s->sk);
	amber_buf_dispose(&data);
	if (rc == 0 && (amber_buf_put(blob, "SSHSIG", 6) < 0 ||
			amber_buf_put(blob, "\0\0\0\1", 4) < 0 ||
			put_typed(blob, s->pk, sizeof(s->pk)) < 0 || put_cstring(blob, ns) < 0 ||
			put_cstring(blob, "") < 0 || put_cstring(blob, "sha512") < 0 ||
			put_typed(blob, sig, sizeof(sig)) < 0))
		rc = amber_fail(AMBER_ERROR, "out of memory signing");
	return rc;
}

static int armor(char **out, const uint8_t *blob, size_t len)
{
	size_t bl = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	size_t cap = bl + bl / ARMOR_COLS + sizeof(ARMOR_BEGIN) + sizeof(ARMOR_END) + 4, o = 0;
	char *b64 = malloc(bl), *text = malloc(cap);

	if (!b64 || !text) {
		free(b64);
		free(text);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	sodium_bin2base64(b64, bl, blob, len, sodium_base64_VARIANT_ORIGINAL);
	o += (size_t)snprintf(text, cap, "%s\n", ARMOR_BEGIN);
	for (size_t i = 0, n = strlen(b64); i < n; i += ARMOR_COLS) {
		size_t k = n - i < ARMOR_COLS ? n - i : ARMOR_COLS;

		memcpy(text + o, b64 + i, k);
		o += k;
		text[o++] = '\n';
	}
	snprintf(text + o, cap - o, "%s\n", ARMOR_END);
	free(b64);
	*out = text;
	return 0;
}

int amber_sshsig_sign(char **armored, const amber_signer *s, const char *ns, const void *msg,
		      size_t len)
{
	amber_buf blob = AMBER_BUF_INIT;
	int rc = sig_blob(&blob, s, ns, msg, len);

	if (rc == 0)
		rc = armor(armored, blob.data, blob.len);
	amber_buf_dispose(&blob);
	return rc;
}

/* Base64 between the armor lines into blob. */
static int unarmor(amber_buf *blob, const char *armored)
{
	size_t bl = strlen(ARMOR_BEGIN), got = 0;
	const char *p = armored, *end;

	while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
		p++;
	if (strncmp(p, ARMOR_BEGIN, bl) != 0 || (p[bl] != '\n' && p[bl] != '\r'))
		return -1;
	p += bl;
	end = strstr(p, ARMOR_END);
	if (!end || (size_t)(end - p) > SIG_BLOB_MAX * 2)
		return -1;
	if (amber_buf_reserve(blob, (size_t)(end - p)) < 0)
		return -1;
	if (sodium_base642bin(blob->data, blob->cap, p, (size_t)(end - p), " \r\n\t", &got, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0)
		return -1;
	blob->len = got;
	return 0;
}

typedef struct sshsig {
	const uint8_t *pk, *ns, *hash, *sig;
	size_t ns_len, hash_len;
} sshsig;

static int sshsig_parse(sshsig *g, const uint8_t *blob, size_t len)
{
	amber_rd r;
	const uint8_t *magic, *ver, *pkb, *res, *sigb;
	size_t pkl, rl, sl;

	amber_rd_init(&r, blob, len);
	if (amber_rd_bytes(&r, &magic, 6) < 0 || memcmp(magic, "SSHSIG", 6) != 0 ||
	    amber_rd_bytes(&r, &ver, 4) < 0 || memcmp(ver, "\0\0\0\1", 4) != 0 ||
	    get_string(&r, &pkb, &pkl) < 0 || get_string(&r, &g->ns, &g->ns_len) < 0 ||
	    get_string(&r, &res, &rl) < 0 || get_string(&r, &g->hash, &g->hash_len) < 0 ||
	    get_string(&r, &sigb, &sl) < 0 || r.left != 0)
		return -1;
	if (get_typed(&g->pk, AMBER_SIGN_PK_BYTES, pkb, pkl) < 0 ||
	    get_typed(&g->sig, crypto_sign_ed25519_BYTES, sigb, sl) < 0)
		return -1;
	if (!string_is(g->hash, g->hash_len, "sha512") &&
	    !string_is(g->hash, g->hash_len, "sha256"))
		return -1;
	return 0;
}

static int sshsig_check(const sshsig *g, const uint8_t pk[AMBER_SIGN_PK_BYTES], const char *ns,
			const void *msg, size_t len)
{
	amber_buf data = AMBER_BUF_INIT;
	char hash[8];
	int rc;

	if (sodium_memcmp(g->pk, pk, AMBER_SIGN_PK_BYTES) != 0)
		return amber_fail(AMBER_EAUTH, "signature made by another key");
	if (!string_is(g->ns, g->ns_len, ns))
		return amber_fail(AMBER_EAUTH, "signature is not for namespace '%s'", ns);
	memcpy(hash, g->hash, g->hash_len);
	hash[g->hash_len] = '\0';
	rc = signed_data(&data, ns, hash, msg, len);
	if (rc == 0 && crypto_sign_ed25519_verify_detached(g->sig, data.data, data.len, pk) != 0)
		rc = amber_fail(AMBER_EAUTH, "bad signature: the signed data was changed");
	amber_buf_dispose(&data);
	return rc;
}

int amber_sshsig_verify(const char *armored, const uint8_t pk[AMBER_SIGN_PK_BYTES],
			const char *ns, const void *msg, size_t len)
{
	amber_buf blob = AMBER_BUF_INIT;
	sshsig g;
	int rc = 0;

	amber_buf_init(&blob, SIG_BLOB_MAX * 2);
	if (unarmor(&blob, armored) < 0 || sshsig_parse(&g, blob.data, blob.len) < 0)
		rc = amber_fail(AMBER_ECORRUPT, "malformed SSH signature");
	else
		rc = sshsig_check(&g, pk, ns, msg, len);
	amber_buf_dispose(&blob);
	return rc;
}

/* ---- signatures inside git objects ------------------------------------------------ */

/*
 * Collect the value of the "gpgsig" header at `p` (continuation lines lose
 * their leading space) into sig; returns the end of the header.
 */
static const char *gpgsig_value(amber_buf *sig, const char *p, const char *end)
{
	p += 7; /* "gpgsig " */
	for (;;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		if (!nl || amber_buf_put(sig, p, (size_t)(nl - p + 1)) < 0)
			return NULL;
		p = nl + 1;
		if (p >= end || *p != ' ')
			return p;
		p++;
	}
}

static int split_commit(amber_buf *payload, amber_buf *sig, const char *obj, size_t len)
{
	const char *p = obj, *end = obj + len, *after;
	int found = 0;

	while (p < end && *p != '\n') {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		if (!nl)
			return -1;
		if (!found && (size_t)(end - p) > 7 && memcmp(p, "gpgsig ", 7) == 0) {
			if (!(after = gpgsig_value(sig, p, end)))
				return -1;
			found = 1;
			p = after;
			continue;
		}
		if (amber_buf_put(payload, p, (size_t)(nl - p + 1)) < 0)
			return -1;
		p = nl + 1;
	}
	return amber_buf_put(payload, p, (size_t)(end - p)) < 0 ? -1 : found;
}

/* The last armor block starting a line is the signature (as git's parse_signed_buffer). */
static int split_tag(amber_buf *payload, amber_buf *sig, const char *obj, size_t len)
{
	const char *hit = NULL, *p = obj, *end = obj + len;
	size_t bl = strlen(ARMOR_BEGIN);

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		if ((size_t)(end - p) >= bl && memcmp(p, ARMOR_BEGIN, bl) == 0)
			hit = p;
		p = nl ? nl + 1 : end;
	}
	if (amber_buf_put(payload, obj, hit ? (size_t)(hit - obj) : len) < 0)
		return -1;
	if (!hit)
		return 0;
	return amber_buf_put(sig, hit, (size_t)(end - hit)) < 0 ? -1 : 1;
}

int amber_object_split_signature(amber_buf *payload, char **armored, int gittype,
				 const uint8_t *obj, size_t len)
{
	amber_buf sig = AMBER_BUF_INIT;
	int rc;

	*armored = NULL;
	if (memchr(obj, '\0', len))
		return amber_fail(AMBER_ECORRUPT, "signed object contains a NUL byte");
	if (gittype == AMBER_GIT_COMMIT)
		rc = split_commit(payload, &sig, (const char *)obj, len);
	else if (gittype == AMBER_GIT_TAG)
		rc = split_tag(payload, &sig, (const char *)obj, len);
	else
		return amber_fail(AMBER_EINVAL, "only commits and tags carry signatures");
	if (rc == 1 && amber_buf_put(&sig, "", 1) == 0) {
		*armored = (char *)sig.data;
		return 0;
	}
	amber_buf_dispose(&sig);
	if (rc < 0)
		return amber_fail(AMBER_ECORRUPT, "malformed signed object");
	return 0;
}

int amber_commit_add_signature(amber_buf *out, const uint8_t *commit, size_t len,
			       const char *armored)
{
	const char *p = (const char *)commit, *end = p + len, *body;
	const char *nl;

	body = NULL;
	for (const char *q = p; q < end; q = nl + 1) {
		nl = memchr(q, '\n', (size_t)(end - q));
		if (!nl)
			break;
		if (nl == q) {
			body = q;
			break;
		}
	}
	if (!body || !*armored)
		return amber_fail(AMBER_EINVAL, "cannot sign: malformed commit text");
	if (amber_buf_put(out, p, (size_t)(body - p)) < 0 || amber_buf_put(out, "gpgsig", 6) < 0)
		return AMBER_ERROR;
	for (const char *q = armored; *q; q = nl + 1) {
		nl = strchr(q, '\n');
		if (!nl)
			nl = q + strlen(q); /* last line without newline */
		if (amber_buf_put(out, " ", 1) < 0 || amber_buf_put(out, q, (size_t)(nl - q)) < 0 ||
		    amber_buf_put(out, "\n", 1) < 0)
			return AMBER_ERROR;
		if (!*nl)
			break;
	}
	return amber_buf_put(out, body, (size_t)(end - body));
}
