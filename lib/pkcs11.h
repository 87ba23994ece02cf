/*
 * Keys held in a PKCS#11 token (a hardware security module, a smart card,
 * SoftHSM2), addressed by RFC 7512 "pkcs11:" URIs.  This module is the one
 * place that speaks PKCS#11: it loads the modules p11-kit has registered
 * (or the one a URI's module-path names), finds the one token the URI
 * matches, logs in with the PIN and uses keys that never leave the token.
 *
 * Every error names the token and the URI and says what to do; a URI that
 * carries a pin-value or pin-source is refused (a PIN never goes in argv).
 */
#ifndef AMBER_PKCS11_H
#define AMBER_PKCS11_H

#include <stddef.h>
#include <stdint.h>

#include "amber.h"

/** A logged-in session on one token. */
typedef struct amber_p11 amber_p11;

/** 1 if `spec` is a pkcs11: URI (case-insensitive scheme), else 0. */
int amber_p11_is_uri(const char *spec);

/**
 * Find the one token that `uri` names, open a session on it and log in as
 * the user with `pin` (pin NULL: no login).
 * @return 0, AMBER_EINVAL (not a usable URI, a PIN in it, several tokens
 *         match), AMBER_ENOTFOUND (no module, no token matches),
 *         AMBER_EBADKEY (wrong or locked PIN), AMBER_ERROR.
 *         Close with amber_p11_close().
 */
int amber_p11_open(amber_p11 **out, const char *uri, const unsigned char *pin, size_t pin_len);

/** Log out, close the session, finalise the modules.  NULL-safe. */
void amber_p11_close(amber_p11 *t);

/** "token 'LABEL' (URI)", for messages; owned by t. */
const char *amber_p11_name(const amber_p11 *t);

/**
 * Select the Ed25519 private key the URI names (its id= and object=, if
 * any) and read its public half from the matching public-key object.
 * @return 0, AMBER_ENOTFOUND (no such key, or no public-key object for
 *         it), AMBER_EINVAL (several keys match, not Ed25519), AMBER_ERROR.
 */
int amber_p11_ed25519_key(uint8_t pk[32], amber_p11 *t);

/**
 * Sign msg with the selected key (CKM_EDDSA, pure Ed25519).
 * @return 0, or AMBER_ERROR naming the token when it failed or went away.
 */
int amber_p11_ed25519_sign(uint8_t sig[64], amber_p11 *t, const void *msg, size_t len);

/* ---- key slots: a token AES key wraps a slot's key-encryption key ---------------- */

/** What identifies a token and its key in a key slot (no secrets). */
typedef struct amber_p11_ident {
	char serial[33], label[33];   /**< CK_TOKEN_INFO serialNumber and label, trimmed */
	uint8_t key_id[64];           /**< the key's CKA_ID */
	size_t key_id_len;
	char key_label[65];           /**< the key's CKA_LABEL (truncated) */
} amber_p11_ident;

/**
 * Select the AES secret key the URI names, which must be allowed to wrap
 * and unwrap, and describe it and its token.
 * @return 0, AMBER_ENOTFOUND, AMBER_EINVAL (several match), AMBER_ERROR.
 */
int amber_p11_aes_key(amber_p11_ident *id, amber_p11 *t);

/**
 * Wrap `len` secret bytes (a multiple of 8) with the selected AES key
 * (CKM_AES_KEY_WRAP, RFC 3394): the bytes go into the token as a
 * temporary session object, which is destroyed.  out gets len + 8 bytes.
 * @return 0 or AMBER_ERROR.
 */
int amber_p11_wrap(uint8_t *out, amber_p11 *t, const uint8_t *secret, size_t len);

/**
 * Unwrap `wlen` bytes made by amber_p11_wrap() into secret (wlen - 8
 * bytes, caller's locked memory).
 * @return 0, AMBER_EBADKEY (not wrapped by this key: the integrity check
 *         failed), AMBER_ERROR (the token failed or went away).
 */
AMBER_MUST_USE int amber_p11_unwrap(uint8_t *secret, amber_p11 *t, const uint8_t *wrapped,
				    size_t wlen);

#endif
