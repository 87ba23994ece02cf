/*
 * Key slots through the library: every subset of a share set opens the
 * archive exactly when it should (exhaustive for up to 6 shares, and for a
 * two-level set), shares made by another conforming implementation (the
 * published SLIP-0039 vectors of 256-bit secrets) open a share slot of
 * that secret, and slot changes keep the authenticator right.
 */
#include "libfix.h"

#include "archive.h"
#include "keys.h"
#include "slip39_vectors.h"

#include <sodium.h>

static void setup(void)
{
	scratch_make("slots");
}

TestSuite(slots, .init = setup, .fini = scratch_remove, .timeout = 240);

static amber_archive *reopen(void)
{
	amber_archive *a = NULL;
	amber_open_opts o = fix_open_opts();

	OK(amber_archive_open_ext(&a, at("archive"), &o));
	return a;
}

/* A share set of `ngroups` groups (k[g]-of-n[g]), gt needed, added to the archive. */
static char **add_groups(amber_archive *a, size_t *count, uint8_t gt, size_t ngroups,
			 const uint8_t *k, const uint8_t *n)
{
	amber_shares_new sn = {.group_threshold = gt, .ngroups = ngroups};
	amber_slot_change c = {.unsigned_ok = 1};
	uint8_t *blob = NULL;
	size_t len = 0;
	char **m = NULL;

	for (size_t g = 0; g < ngroups; g++) {
		sn.groups[g].member_threshold = k[g];
		sn.groups[g].member_count = n[g];
	}
	OK(amber_archive_seal_shares(&blob, &len, &m, count, a, &sn));
	c.add = blob;
	c.add_len = len;
	OK(amber_archive_change_slots(a, &c));
	free(blob);
	return m;
}

static char **add_set(amber_archive *a, size_t *count, uint8_t k, uint8_t n)
{
	return add_groups(a, count, 1, 1, &k, &n);
}

/*
 * Unlock a locked handle with the shares of `mask`; 0 or the error.  The
 * handle is locked again after, so one handle serves every subset.
 */
static int try_subset(amber_archive *a, char **m, size_t count, unsigned mask, int reverse)
{
	const char *pick[16];
	size_t n = 0;
	int rc;

	for (size_t i = 0; i < count; i++) {
		size_t j = reverse ? count - 1 - i : i;

		if (mask & (1u << j))
			pick[n++] = m[j];
	}
	rc = amber_archive_unlock_shares(a, pick, n, NULL);
	cr_assert_eq(rc == 0, !amber_archive_needs_key(a));
	amber_keys_free(a->keys);
	a->keys = NULL;
	return rc;
}

static int popcount(unsigned v)
{
	int n = 0;

	for (; v; v &= v - 1)
		n++;
	return n;
}

Test(slots, every_k_subset_of_n_shares_opens_and_no_smaller_one_does)
{
	amber_archive *a = fix_archive(0), *b;
	unsigned tried = 0, opened = 0;
	char **sets[7][7] = {{0}};
	size_t counts[7][7] = {{0}};

	for (uint8_t n = 1; n <= 6; n++)
		for (uint8_t k = n == 1 ? 1 : 2; k <= n; k++)
			sets[n][k] = add_set(a, &counts[n][k], k, n);
	b = reopen();
	for (uint8_t n = 1; n <= 6; n++) {
		for (uint8_t k = n == 1 ? 1 : 2; k <= n; k++) {
			cr_assert_eq(counts[n][k], n);
			for (unsigned mask = 1; mask < (1u << n); mask++) {
				int rc, c = popcount(mask);

				/* every K-subset, every (K-1)-subset, and all N */
				if (c != k && c != k - 1 && c != n)
					continue;
				rc = try_subset(b, sets[n][k], n, mask, mask & 1);

				tried++;
				if (popcount(mask) >= k) {
					cr_assert_eq(rc, 0, "%u-of-%u, shares %#x: %s", k, n, mask,
						     amber_error_last());
					opened++;
				} else {
					cr_assert_eq(rc, AMBER_EINVAL, "%u-of-%u, shares %#x", k, n,
						     mask);
					cr_assert(strstr(amber_error_last(), "not enough shares"),
						  "%s", amber_error_last());
				}
			}
			amber_slip39_free(sets[n][k], n);
		}
	}
	cr_log_info("%u subsets tried, %u opened", tried, opened);
	amber_archive_free(b);
	amber_archive_free(a);
}

/*
 * 2 of 3 groups: 1-of-1, 2-of-2 and 2-of-3 members (6 shares); every
 * subset opens iff it completes 2 groups.
 */
Test(slots, every_subset_of_a_two_level_set_opens_exactly_when_it_should)
{
	static const uint8_t k[3] = {1, 2, 2}, n[3] = {1, 2, 3}, first[3] = {0, 1, 3};
	amber_archive *a = fix_archive(0), *b;
	size_t count = 0;
	char **m = add_groups(a, &count, 2, 3, k, n);

	cr_assert_eq(count, 6);
	b = reopen();
	for (unsigned mask = 1; mask < (1u << 6); mask++) {
		int complete = 0, rc;

		for (int g = 0; g < 3; g++)
			complete += popcount((mask >> first[g]) & ((1u << n[g]) - 1)) >= k[g];
		rc = try_subset(b, m, count, mask, 0);
		if (complete >= 2)
			cr_assert_eq(rc, 0, "shares %#x: %s", mask, amber_error_last());
		else
			cr_assert_neq(rc, 0, "shares %#x opened with %d complete groups", mask,
				      complete);
	}
	amber_slip39_free(m, count);
	amber_archive_free(b);
	amber_archive_free(a);
}

static void hex_to(uint8_t *out, const char *hex)
{
	size_t len = 0;

	cr_assert_eq(sodium_hex2bin(out, 32, hex, strlen(hex), NULL, &len, NULL), 0);
	cr_assert_eq(len, 32);
}

/*
 * Shares another conforming implementation made (the published vectors,
 * passphrase TREZOR) open a share slot whose recovery secret is their
 * master secret: the slot holds nothing SLIP-0039 does not.
 */
Test(slots, published_vector_shares_open_a_slot_of_their_secret)
{
	size_t used = 0;

	for (size_t v = 0; v < sizeof(slip39_vectors) / sizeof(slip39_vectors[0]); v++) {
		const slip39_vector *t = &slip39_vectors[v];
		amber_slip39_group g = {1, 1};
		amber_slot_change c = {.unsigned_ok = 1};
		uint8_t secret[32], *blob = NULL;
		size_t len = 0, n = 0;
		uint16_t id = 0;
		amber_archive *a, *b;

		if (strlen(t->secret_hex) != 64)
			continue;
		scratch_remove();
		scratch_make("slots");
		a = fix_archive(0);
		hex_to(secret, t->secret_hex);
		OK(amber_slip39_identifier(&id, t->mnemonics[0]));
		OK(amber_slot_seal_shares(&blob, &len, a->keys, secret, "vector", id, 0, 1, &g, 1));
		c.add = blob;
		c.add_len = len;
		OK(amber_archive_change_slots(a, &c));
		while (t->mnemonics[n])
			n++;
		b = reopen();
		cr_assert_eq(amber_archive_unlock_shares(b, t->mnemonics, n, "TREZOR"), 0,
			     "%s: %s", t->desc, amber_error_last());
		amber_archive_free(b);
		b = reopen();
		cr_assert_neq(amber_archive_unlock_shares(b, t->mnemonics, n, "TREZOX"), 0,
			      "%s opened with the wrong passphrase", t->desc);
		amber_archive_free(b);
		free(blob);
		amber_archive_free(a);
		used++;
	}
	cr_assert_geq(used, 4, "only %zu 256-bit vectors", used);
}

/* The authenticator follows every change, and catches one made without it. */
Test(slots, the_authenticator_follows_changes_and_catches_others)
{
	amber_archive *a = fix_archive(0), *b;
	amber_slot_new n = {.kind = AMBER_SLOT_PASSPHRASE, .label = "two",
			    .secret = "second passphrase", .secret_len = 17,
			    .kdf_profile = AMBER_KDF_TEST};
	amber_slot_change c = {.unsigned_ok = 1};
	uint8_t *blob = NULL;
	size_t len = 0;

	OK(amber_archive_seal_slot(&blob, &len, a, &n));
	c.add = blob;
	c.add_len = len;
	OK(amber_archive_change_slots(a, &c));
	b = reopen();
	OK(amber_archive_unlock_with(b, AMBER_SLOT_PASSPHRASE, "second passphrase", 17));
	/* the same set with one byte of the config changed, as a reader sees it */
	b->config_raw[b->config_len - 2] ^= 1;
	amber_keys_free(b->keys);
	b->keys = NULL;
	cr_assert_eq(amber_archive_unlock_with(b, AMBER_SLOT_PASSPHRASE, "second passphrase", 17),
		     AMBER_EAUTH);
	cr_assert(strstr(amber_error_last(), "changed by someone without the key"));
	amber_archive_free(b);
	/* removing by label, then the last one is refused */
	c.add = NULL;
	c.remove_id = "two";
	OK(amber_archive_change_slots(a, &c));
	c.remove_id = "initial";
	cr_assert_eq(amber_archive_change_slots(a, &c), AMBER_EINVAL);
	cr_assert_eq(amber_archive_slot_count(a), 1);
	free(blob);
	amber_archive_free(a);
}

/*
 * An archive from before slot kinds (one version-1 slot, no auth) opens as
 * before; an archive with version-2 slots whose auth is gone does not.
 */
Test(slots, a_version_1_archive_opens_and_a_stripped_authenticator_is_refused)
{
	amber_archive *a = fix_archive(0), *b;
	amber_slot_info s1, s2;
	uint8_t *v1 = NULL;
	size_t len = 0;

	OK(amber_keyslot_seal(&v1, &len, a->keys, (const uint8_t *)PASS, strlen(PASS),
			      AMBER_KDF_TEST));
	cr_assert_eq(len, 106);
	OK(amber_slot_describe(&s1, v1, len));
	cr_assert_eq(s1.version, 1);
	cr_assert_eq(s1.kind, AMBER_SLOT_PASSPHRASE);
	cr_assert_eq(s1.created, 0);
	OK(amber_slot_describe(&s2, v1, len));
	cr_assert_str_eq(s1.id, s2.id, "a version-1 slot's id is the hash of its blob");

	b = reopen(); /* as an old archive: its one slot version 1, no auth */
	free(b->slots[0]);
	b->slots[0] = v1;
	b->slot_len[0] = len;
	b->has_auth = 0;
	OK(amber_archive_unlock(b, (const unsigned char *)PASS, strlen(PASS)));
	cr_assert_eq(memcmp(b->keys->master, a->keys->master, 32), 0);
	amber_archive_free(b);

	b = reopen(); /* version-2 slots, auth stripped */
	b->has_auth = 0;
	cr_assert_eq(amber_archive_unlock(b, (const unsigned char *)PASS, strlen(PASS)),
		     AMBER_EAUTH);
	cr_assert(strstr(amber_error_last(), "its metadata authenticator was removed"), "%s",
		  amber_error_last());
	cr_assert(amber_archive_needs_key(b));
	amber_archive_free(b);
	amber_archive_free(a);
}
