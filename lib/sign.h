/*
 * Signatures: Ed25519 keys and the SSH signature format (OpenSSH's
 * PROTOCOL.sshsig, namespace "git"), so that plain `git verify-commit`
 * (gpg.format=ssh) and `ssh-keygen -Y verify` accept amberfs snapshots.
 * The secret key lives in sodium_malloc memory and in a file the operator
 * keeps apart from the archive; the archive holds only the public key.
 */
#ifndef AMBER_SIGN_H
#define AMBER_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "amber.h"
#include "buf.h"

#define AMBER_SIGN_PK_BYTES 32

typedef struct amber_signer amber_signer;

/** A new random key pair.  Free with amber_signer_free(). */
int amber_signer_generate(amber_signer **out);

/**
 * Load a secret key file written by amber_signer_save().
 * @return 0, AMBER_ENOTFOUND, AMBER_ECORRUPT (not a key file), AMBER_EINVAL
 *         (the file is accessible by group or others), AMBER_ERROR.
 */
int amber_signer_load(amber_signer **out, const char *path);

/**
 * The signer `spec` names: a "pkcs11:" URI of an Ed25519 key in a token
 * (logged in with pin, which may be NULL; checked by signing a test
 * message) or a key file as for amber_signer_load().
 * @return 0, the errors of amber_signer_load() or amber_p11_open() and
 *         amber_p11_ed25519_key(), AMBER_EBADKEY for a token whose private
 *         and public key objects do not match.
 */
int amber_signer_open(amber_signer **out, const char *spec, const unsigned char *pin,
		      size_t pin_len);

/** 1 if the key is held by a token (it cannot be saved to a file). */
int amber_signer_is_token(const amber_signer *s);

/** Write the secret key to a new file, mode 0600.  @return 0 or AMBER_EEXISTS. */
int amber_signer_save(const amber_signer *s, const char *path);

void amber_signer_free(amber_signer *s);

/** The public half. */
void amber_signer_public(uint8_t pk[AMBER_SIGN_PK_BYTES], const amber_signer *s);

/** One OpenSSH public-key line: "ssh-ed25519 AAAA... comment" (no newline). */
int amber_pubkey_format(char *out, size_t outlen, const uint8_t pk[AMBER_SIGN_PK_BYTES],
			const char *comment);

/** Parse an "ssh-ed25519 AAAA... [comment]" line.  @return 0 or AMBER_ECORRUPT. */
int amber_pubkey_parse(uint8_t pk[AMBER_SIGN_PK_BYTES], const char *line);

/**
 * Sign msg in namespace ns; *armored is a malloc'd "-----BEGIN SSH
 * SIGNATURE-----" block ending in a newline.
 */
int amber_sshsig_sign(char **armored, const amber_signer *s, const char *ns, const void *msg,
		      size_t len);

/**
 * Verify an armored SSH signature of msg in namespace ns made by pk.
 * @return 0, AMBER_EAUTH (wrong key or bad signature), AMBER_ECORRUPT
 *         (malformed signature).
 */
AMBER_MUST_USE int amber_sshsig_verify(const char *armored, const uint8_t pk[AMBER_SIGN_PK_BYTES],
				       const char *ns, const void *msg, size_t len);

/**
 * Split a raw commit (or tag) object into the payload git signs and the
 * armored signature: for commits the "gpgsig" header (with its continuation
 * lines) is removed from the payload; for tags the signature is the
 * trailing "-----BEGIN SSH SIGNATURE-----" block of the message.  *armored
 * is NULL (and the payload the whole object) when it is unsigned.
 */
int amber_object_split_signature(amber_buf *payload, char **armored, int gittype,
				 const uint8_t *obj, size_t len);

/**
 * Insert a "gpgsig" header, holding `armored` with continuation lines
 * prefixed by one space, after the last header of a commit text (the
 * committer line in amberfs commits), where git puts it.
 */
int amber_commit_add_signature(amber_buf *out, const uint8_t *commit, size_t len,
			       const char *armored);

#endif
