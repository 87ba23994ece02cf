/* Creating, opening and unlocking archives through the public API. */
#include "libfix.h"

#include <inttypes.h>

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

/* amber_entry_ino() of e, checked to be a number the mount may report. */
static uint64_t ino_of(const amber_archive *a, const amber_entry *e)
{
	uint64_t v = amber_entry_ino(a, e);

	cr_assert_geq(v, 1024, "inode number %" PRIu64 " is one of the reserved small ones", v);
	cr_assert_eq(v >> 63, 0, "inode number %" PRIu64 " has the virtual directories' bit", v);
	return v;
}

Test(archive, inode_numbers_follow_the_content_and_metadata_but_not_the_name)
{
	amber_archive *a = fix_archive(0), *p = NULL;
	amber_create_opts co = AMBER_CREATE_OPTS_INIT;
	amber_open_opts oo = fix_open_opts();
	uint8_t one[] = "1", two[] = "2";
	amber_xattr x1 = {(char *)"user.k", one, 1}, x2 = {(char *)"user.k", two, 1};
	amber_entry e = {.name = (char *)"a", .name_len = 1, .type = AMBER_T_REG, .mode = 0644,
			 .size = 10, .nlink = 1, .content = AMBER_C_BLOB};
	amber_entry f;
	uint64_t ino0;

	co.passphrase = (const unsigned char *)PASS;
	co.passphrase_len = strlen(PASS);
	co.kdf_profile = AMBER_KDF_TEST;
	co.open = &oo;
	OK(amber_archive_create(&p, at("other"), &co));
	memset(e.link.oid, 7, sizeof(e.link.oid));
	ino0 = ino_of(a, &e);
	f = e;
	f.name = (char *)"another name";
	f.name_len = strlen(f.name);
	cr_assert_eq(ino_of(a, &f), ino0, "the name changed the inode number");
	f = e;
	f.link.oid[19] ^= 1;
	cr_assert_neq(ino_of(a, &f), ino0, "other content, same inode number");
	f = e;
	f.mtime_nsec = 1;
	cr_assert_neq(ino_of(a, &f), ino0, "other mtime, same inode number");
	/* the variable-length parts: a target, xattrs, and which of them */
	f = e;
	f.target = (char *)"x";
	f.target_len = 1;
	uint64_t tx = ino_of(a, &f);
	cr_assert_neq(tx, ino0, "a target did not change the inode number");
	f.target = (char *)"y";
	cr_assert_neq(ino_of(a, &f), tx, "another target, same inode number");
	f = e;
	f.xattrs = &x1;
	f.nxattrs = 1;
	uint64_t xa = ino_of(a, &f);
	cr_assert_neq(xa, ino0, "an xattr did not change the inode number");
	cr_assert_neq(xa, tx);
	f.xattrs = &x2;
	cr_assert_neq(ino_of(a, &f), xa, "another xattr value, same inode number");
	/* keyed: another archive numbers the same entry differently */
	cr_assert_neq(ino_of(p, &e), ino0, "two archives gave the same inode number");
	amber_archive_free(a);
	amber_archive_free(p);
}
