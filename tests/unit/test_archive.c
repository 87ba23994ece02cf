/* Creating, opening and unlocking archives through the public API. */
#include "libfix.h"

static void setup(void)
{
	scratch_make("archive");
}

TestSuite(archive, .init = setup, .fini = scratch_remove);

Test(archive, a_new_encrypted_archive_reopens_locked_and_unlocks_with_its_passphrase)
{
	amber_archive *a = fix_archive(0), *b = NULL;
	amber_open_opts o = fix_open_opts();
	char id[33];

	snprintf(id, sizeof(id), "%s", amber_archive_id(a));
	amber_archive_free(a);
	OK(amber_archive_open_ext(&b, at("archive"), &o));
	cr_assert_str_eq(amber_archive_id(b), id);
	cr_assert(amber_archive_is_encrypted(b));
	cr_assert(amber_archive_needs_key(b));
	OK(amber_archive_unlock(b, (const unsigned char *)PASS, strlen(PASS)));
	cr_assert_not(amber_archive_needs_key(b));
	amber_archive_free(b);
}

Test(archive, a_wrong_passphrase_is_ebadkey_and_leaves_the_archive_locked)
{
	amber_archive *b = NULL;
	amber_open_opts o = fix_open_opts();

	amber_archive_free(fix_archive(0));
	OK(amber_archive_open_ext(&b, at("archive"), &o));
	cr_assert_eq(amber_archive_unlock(b, (const unsigned char *)"wrong", 5), AMBER_EBADKEY);
	cr_assert_neq(strlen(amber_error_last()), 0, "no message for a wrong passphrase");
	cr_assert(amber_archive_needs_key(b));
	amber_archive_free(b);
}

Test(archive, the_test_kdf_slot_opens_only_when_the_caller_accepts_weak_slots)
{
	amber_archive *b = NULL;
	amber_open_opts o = fix_open_opts();

	amber_archive_free(fix_archive(0));
	o.weak_kdf_ok = 0;
	OK(amber_archive_open_ext(&b, at("archive"), &o));
	cr_assert_neq(amber_archive_unlock(b, (const unsigned char *)PASS, strlen(PASS)), 0,
		      "a test-profile slot opened without weak_kdf_ok");
	cr_assert(amber_archive_needs_key(b));
	amber_archive_free(b);
}

Test(archive, a_directory_that_is_not_an_archive_is_enotarchive)
{
	amber_archive *b = NULL;
	amber_open_opts o = fix_open_opts();

	mkdir(at("empty"), 0755);
	cr_assert_eq(amber_archive_open_ext(&b, at("empty"), &o), AMBER_ENOTARCHIVE);
	cr_assert_null(b);
	cr_assert_eq(amber_archive_open_ext(&b, at("missing"), &o), AMBER_ENOTFOUND);
}

Test(archive, creating_into_a_non_empty_directory_is_eexists_and_writes_nothing)
{
	amber_archive *a = NULL;
	amber_create_opts co = {.version = AMBER_CREATE_OPTS_VERSION, .plain = 1};

	mkdir(at("busy"), 0755);
	put_file("busy/keep", "mine\n");
	cr_assert_eq(amber_archive_create(&a, at("busy"), &co), AMBER_EEXISTS);
	cr_assert_eq(access(at("busy/objects"), F_OK), -1, "objects/ written into a busy dir");
}

Test(archive, a_plain_archive_opened_by_a_caller_holding_a_key_is_eplain)
{
	amber_archive *b = NULL;
	amber_open_opts o = fix_open_opts();

	amber_archive_free(fix_archive(1));
	o.expect_encrypted = 1;
	cr_assert_eq(amber_archive_open_ext(&b, at("archive"), &o), AMBER_EPLAIN);
	o.expect_encrypted = 0;
	OK(amber_archive_open_ext(&b, at("archive"), &o));
	cr_assert_not(amber_archive_is_encrypted(b));
	amber_archive_free(b);
}
