/*
 * SLIP-0039: Shamir's secret sharing for mnemonic codes, the format hardware
 * wallets use for k-of-n backup shares.  A master secret (16 to 64 bytes,
 * even) is encrypted with a passphrase and split in two levels: a group
 * threshold of groups, each with its own member threshold of shares.  Each
 * share is a mnemonic of 20 or more words from a 1024-word list.
 *
 * The share passphrase cannot be checked: any passphrase decrypts the shares
 * to some secret.  A caller that needs to know (the recovery key slot) learns
 * it was wrong when the resulting key does not open the slot.
 *
 * Errors are AMBER_EINVAL with a one-line message naming the share (1-based,
 * in the order given) and what to do.
 */
#ifndef AMBER_SLIP39_H
#define AMBER_SLIP39_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AMBER_SLIP39_WORDS 1024
#define AMBER_SLIP39_WORD_MAX 8
#define AMBER_SLIP39_MIN_SECRET 16
#define AMBER_SLIP39_MAX_SECRET 64
#define AMBER_SLIP39_MAX_GROUPS 16
#define AMBER_SLIP39_MAX_MEMBERS 16
#define AMBER_SLIP39_MAX_EXPONENT 15

/** The SLIP-0039 English word list, in index order. */
extern const char amber_slip39_words[AMBER_SLIP39_WORDS][AMBER_SLIP39_WORD_MAX + 1];

/** One group of a split: `member_threshold` of its `member_count` shares open it. */
typedef struct {
	uint8_t member_threshold;
	uint8_t member_count;
} amber_slip39_group;

/**
 * Split a master secret into SLIP-0039 mnemonics.
 *
 * @param mnemonics  receives an array of `*count` NUL-terminated mnemonics,
 *                   group by group; free with amber_slip39_free().
 * @param count      receives the number of mnemonics.
 * @param secret     the master secret, `len` bytes: even, 16 to 64.
 * @param passphrase printable ASCII, or NULL for none ("").
 * @param group_threshold how many groups open the secret (1..ngroups).
 * @param groups     `ngroups` (1..16) groups; a member threshold of 1 is only
 *                   allowed with a member count of 1, as the standard says.
 * @param iteration_exponent 0..15: PBKDF2 runs 10000 << e iterations in all.
 * @param extendable set the extendable-backup flag (the identifier is not
 *                   bound into the encryption, so more sets can be made for
 *                   the same secret and passphrase later).
 * @return 0, AMBER_EINVAL for bad parameters, AMBER_ERROR out of memory.
 */
int amber_slip39_split(char ***mnemonics, size_t *count, const uint8_t *secret, size_t len,
		       const char *passphrase, uint8_t group_threshold,
		       const amber_slip39_group *groups, size_t ngroups, uint8_t iteration_exponent,
		       bool extendable) __attribute__((warn_unused_result));

/**
 * Combine SLIP-0039 mnemonics back into the master secret.
 *
 * Words are separated by white space and matched case-insensitively.  Groups
 * and members beyond the thresholds are allowed; the first complete ones are
 * used.
 *
 * @param secret_out receives the secret; `*len` bytes of room on entry
 *                   (AMBER_SLIP39_MAX_SECRET always do), its length on return.
 * @param mnemonics  `n` mnemonics.
 * @param passphrase the passphrase given at split time (NULL for none).  A
 *                   wrong one is not detected: it gives a different secret.
 * @return 0, AMBER_EINVAL naming the share and what to do (unknown word,
 *         bad checksum, share of another set, duplicate, too few shares,
 *         inconsistent parameters, digest mismatch), AMBER_ERROR out of
 *         memory.
 */
int amber_slip39_combine(uint8_t *secret_out, size_t *len, const char *const *mnemonics,
			 size_t n, const char *passphrase) __attribute__((warn_unused_result));

/**
 * The identifier (15 bits) of a mnemonic's share set, from its first two
 * words; nothing else is checked.  @return 0 or AMBER_EINVAL.
 */
int amber_slip39_identifier(uint16_t *id, const char *mnemonic);

/** Wipe and free mnemonics returned by amber_slip39_split() (NULL-safe). */
void amber_slip39_free(char **mnemonics, size_t count);

/** GF(256) product (Rijndael polynomial), constant time; exposed for tests. */
uint8_t amber_slip39_gf_mul(uint8_t a, uint8_t b);

/** GF(256) inverse (0 for 0), constant time; exposed for tests. */
uint8_t amber_slip39_gf_inv(uint8_t a);

#endif
