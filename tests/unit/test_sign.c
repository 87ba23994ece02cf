/*
 * Ed25519 keys and SSH signatures (lib/sign.c): round trips, tampering,
 * wrong keys, the public-key line, the secret key file, and signatures
 * inside commit and tag texts.  A signature made by OpenSSH's ssh-keygen
 * is checked as a known answer, so the format is the real one.
 */
#include "amber.h"
#include "buf.h"
#include "gitobj.h"
#include "sign.h"
#include "store.h"

#include <criterion/criterion.h>

#include "scratch.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OK(expr)                                                                     \
	do {                                                                         \
		int rc_ = (expr);                                                    \
		cr_assert_eq(rc_, 0, "%s = %d: %s", #expr, rc_, amber_error_last()); \
	} while (0)

static void setup(void)
{
	cr_assert_eq(amber_global_init(), 0);
	scratch_make("sign");
}

TestSuite(sign, .init = setup, .fini = scratch_remove);

static const char msg[] = "tree 0123\n\nthe message\n";

static char *sign_msg(amber_signer *s)
{
	char *armored = NULL;

	OK(amber_sshsig_sign(&armored, s, "git", msg, strlen(msg)));
	return armored;
}

/* Known answer: `ssh-keygen -Y sign -f k -n git msg` of "amberfs known answer\n". */
static const char kat_pub[] =
	"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDbf6IE8/h/YR2DUFnCV6VaKUl8Xg0/YtveGGrTirB1m kat";
static const char kat_msg[] = "amberfs known answer\n";
static const char kat_sig[] =
	"-----BEGIN SSH SIGNATURE-----\n"
	"U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgNt/ogTz+H9hHYNQWcJXpVopSXx\n"
	"eDT9i294YatOKsHWYAAAADZ2l0AAAAAAAAAAZzaGE1MTIAAABTAAAAC3NzaC1lZDI1NTE5\n"
	"AAAAQEtX4jI4ZqotMw+G8MtAES+wrOA3dSRuBQjJm8g1Ohls7tPaDexqAzmb7lPybkQbE0\n"
	"qPiXuvyVSMei7Eq8kXIwM=\n"
	"-----END SSH SIGNATURE-----\n";

Test(sign, ssh_keygen_signature_verifies)
{
	uint8_t pk[32];

	OK(amber_pubkey_parse(pk, kat_pub));
	OK(amber_sshsig_verify(kat_sig, pk, "git", kat_msg, strlen(kat_msg)));
	cr_expect_eq(amber_sshsig_verify(kat_sig, pk, "file", kat_msg, strlen(kat_msg)),
		     AMBER_EAUTH, "another namespace must not verify");
}

Test(sign, signature_round_trips)
{
	amber_signer *s = NULL;
	uint8_t pk[32];
	char *armored;

	OK(amber_signer_generate(&s));
	amber_signer_public(pk, s);
	armored = sign_msg(s);
	cr_assert(strncmp(armored, "-----BEGIN SSH SIGNATURE-----\n", 30) == 0);
	cr_assert(strstr(armored, "\n-----END SSH SIGNATURE-----\n") != NULL);
	for (const char *l = strchr(armored, '\n') + 1; *l; l = strchr(l, '\n') + 1)
		cr_assert_leq(strcspn(l, "\n"), 70, "armor lines are at most 70 columns");
	OK(amber_sshsig_verify(armored, pk, "git", msg, strlen(msg)));
	free(armored);
	amber_signer_free(s);
}

Test(sign, flipped_message_byte_is_rejected)
{
	amber_signer *s = NULL;
	uint8_t pk[32];
	char *armored, copy[sizeof(msg)];

	OK(amber_signer_generate(&s));
	amber_signer_public(pk, s);
	armored = sign_msg(s);
	for (size_t i = 0; i < strlen(msg); i++) {
		memcpy(copy, msg, sizeof(msg));
		copy[i] ^= 0x01;
		cr_expect_eq(amber_sshsig_verify(armored, pk, "git", copy, strlen(msg)),
			     AMBER_EAUTH, "flip at %zu", i);
	}
	cr_expect_eq(amber_sshsig_verify(armored, pk, "git", msg, strlen(msg) - 1), AMBER_EAUTH);
	free(armored);
	amber_signer_free(s);
}

Test(sign, flipped_signature_byte_is_rejected)
{
	amber_signer *s = NULL;
	uint8_t pk[32];
	char *armored;
	size_t start, end, tried = 0;

	OK(amber_signer_generate(&s));
	amber_signer_public(pk, s);
	armored = sign_msg(s);
	start = (size_t)(strchr(armored, '\n') - armored) + 1;
	end = (size_t)(strstr(armored, "-----END") - armored);
	for (size_t i = start; i < end; i++) {
		int rc;

		/* swapping a letter's case changes high bits of its 6-bit value */
		if (!isalpha((unsigned char)armored[i]))
			continue;
		armored[i] ^= 0x20;
		rc = amber_sshsig_verify(armored, pk, "git", msg, strlen(msg));
		cr_expect(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT, "flip at %zu: rc %d", i, rc);
		armored[i] ^= 0x20;
		tried++;
	}
	cr_assert_gt(tried, 100);
	OK(amber_sshsig_verify(armored, pk, "git", msg, strlen(msg)));
	cr_expect_eq(amber_sshsig_verify("-----BEGIN SSH SIGNATURE-----\nAAAA\n"
					 "-----END SSH SIGNATURE-----\n",
					 pk, "git", msg, strlen(msg)),
		     AMBER_ECORRUPT);
	cr_expect_eq(amber_sshsig_verify("not a signature", pk, "git", msg, strlen(msg)),
		     AMBER_ECORRUPT);
	free(armored);
	amber_signer_free(s);
}

Test(sign, wrong_key_is_rejected)
{
	amber_signer *s = NULL, *other = NULL;
	uint8_t pk[32];
	char *armored;

	OK(amber_signer_generate(&s));
	OK(amber_signer_generate(&other));
	amber_signer_public(pk, other);
	armored = sign_msg(s);
	cr_expect_eq(amber_sshsig_verify(armored, pk, "git", msg, strlen(msg)), AMBER_EAUTH);
	free(armored);
	amber_signer_free(s);
	amber_signer_free(other);
}

Test(sign, pubkey_line_round_trips)
{
	amber_signer *s = NULL;
	uint8_t pk[32], back[32];
	char line[160];

	OK(amber_signer_generate(&s));
	amber_signer_public(pk, s);
	OK(amber_pubkey_format(line, sizeof(line), pk, "amberfs"));
	cr_assert(strncmp(line, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", 37) == 0, "%s", line);
	cr_assert(strcmp(line + strlen(line) - 8, " amberfs") == 0, "%s", line);
	OK(amber_pubkey_parse(back, line));
	cr_assert(memcmp(pk, back, 32) == 0);
	OK(amber_pubkey_format(line, sizeof(line), pk, NULL));
	cr_assert_null(strchr(line + 12, ' '), "no comment: %s", line);
	OK(amber_pubkey_parse(back, line));
	cr_assert(memcmp(pk, back, 32) == 0);
	cr_expect_eq(amber_pubkey_format(line, 40, pk, "amberfs"), AMBER_ERROR);
	cr_expect_eq(amber_pubkey_parse(back, "ssh-rsa AAAAB3NzaC1yc2E= x"), AMBER_ECORRUPT);
	cr_expect_eq(amber_pubkey_parse(back, "ssh-ed25519 AAAA"), AMBER_ECORRUPT);
	cr_expect_eq(amber_pubkey_parse(back, "ssh-ed25519 !!!"), AMBER_ECORRUPT);
	amber_signer_free(s);
}

Test(sign, key_file_saves_and_loads)
{
	amber_signer *s = NULL, *back = NULL;
	uint8_t pk[32], pk2[32];
	struct stat st;

	OK(amber_signer_generate(&s));
	OK(amber_signer_save(s, at("key")));
	cr_assert_eq(stat(at("key"), &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0600);
	OK(amber_signer_load(&back, at("key")));
	amber_signer_public(pk, s);
	amber_signer_public(pk2, back);
	cr_assert(memcmp(pk, pk2, 32) == 0);
	amber_signer_free(s);
	amber_signer_free(back);
}

Test(sign, save_refuses_to_overwrite)
{
	amber_signer *s = NULL, *back = NULL;
	uint8_t pk[32], pk2[32];
	FILE *f = fopen(at("taken"), "w");

	cr_assert_not_null(f);
	fputs("precious\n", f);
	fclose(f);
	OK(amber_signer_generate(&s));
	cr_expect_eq(amber_signer_save(s, at("taken")), AMBER_EEXISTS);
	f = fopen(at("taken"), "r");
	cr_assert_not_null(f);
	char line[32] = "";
	cr_expect_not_null(fgets(line, sizeof(line), f));
	fclose(f);
	cr_expect_str_eq(line, "precious\n", "the existing file is untouched");

	/* a second save of a real key file refuses too and keeps the first key */
	OK(amber_signer_save(s, at("key")));
	amber_signer_free(s);
	OK(amber_signer_generate(&s));
	cr_expect_eq(amber_signer_save(s, at("key")), AMBER_EEXISTS);
	OK(amber_signer_load(&back, at("key")));
	amber_signer_public(pk, s);
	amber_signer_public(pk2, back);
	cr_expect(memcmp(pk, pk2, 32) != 0);
	amber_signer_free(s);
	amber_signer_free(back);
}

Test(sign, bad_key_files_are_refused)
{
	amber_signer *s = NULL;
	FILE *f;

	cr_expect_eq(amber_signer_load(&s, at("missing")), AMBER_ENOTFOUND);
	f = fopen(at("junk"), "w");
	cr_assert_not_null(f);
	fputs("AMBERFS SIGNING KEY 1\nnot base64\n", f);
	fclose(f);
	chmod(at("junk"), 0600);
	cr_expect_eq(amber_signer_load(&s, at("junk")), AMBER_ECORRUPT);
	f = fopen(at("short"), "w");
	cr_assert_not_null(f);
	fputs("AMBERFS SIGNING KEY 1\nAAAA\n", f);
	fclose(f);
	chmod(at("short"), 0600);
	cr_expect_eq(amber_signer_load(&s, at("short")), AMBER_ECORRUPT);

	OK(amber_signer_generate(&s));
	OK(amber_signer_save(s, at("key")));
	amber_signer_free(s);
	s = NULL;
	chmod(at("key"), 0644);
	cr_expect_eq(amber_signer_load(&s, at("key")), AMBER_EINVAL,
		     "a key readable by others is refused");
	cr_expect_null(s);
}

static void build_commit(amber_buf *c)
{
	uint8_t tree[20], parent[20];

	memset(tree, 0x11, 20);
	memset(parent, 0x22, 20);
	OK(amber_commit_build(c, tree, parent, 1700000000, "amberfs snapshot\n\nbody\n"));
}

Test(sign, commit_signature_splits_back)
{
	amber_buf c = AMBER_BUF_INIT, signed_c = AMBER_BUF_INIT, payload = AMBER_BUF_INIT;
	amber_signer *s = NULL;
	amber_commit parsed;
	uint8_t pk[32];
	char *armored = NULL, *back = NULL;

	build_commit(&c);
	OK(amber_signer_generate(&s));
	amber_signer_public(pk, s);
	OK(amber_sshsig_sign(&armored, s, "git", c.data, c.len));
	OK(amber_commit_add_signature(&signed_c, c.data, c.len, armored));
	amber_buf_put(&signed_c, "", 1);
	cr_assert(strstr((char *)signed_c.data,
			 "committer amberfs <amberfs@localhost> 1700000000 +0000\n"
			 "gpgsig -----BEGIN SSH SIGNATURE-----\n ") != NULL,
		  "%s", signed_c.data);
	cr_assert(strstr((char *)signed_c.data, "\n -----END SSH SIGNATURE-----\n\namberfs") !=
		  NULL);
	signed_c.len--;

	OK(amber_object_split_signature(&payload, &back, AMBER_GIT_COMMIT, signed_c.data,
					signed_c.len));
	cr_assert_not_null(back);
	cr_assert_eq(payload.len, c.len);
	cr_assert(memcmp(payload.data, c.data, c.len) == 0, "payload is the unsigned commit");
	cr_assert_str_eq(back, armored);
	OK(amber_sshsig_verify(back, pk, "git", payload.data, payload.len));

	/* the reader still parses the signed commit */
	OK(amber_commit_parse(&parsed, signed_c.data, signed_c.len, "signed"));
	cr_expect_str_eq(parsed.message, "amberfs snapshot\n\nbody\n");
	cr_expect_eq(parsed.nparents, 1);
	cr_expect_eq(parsed.author_time, 1700000000);
	amber_commit_dispose(&parsed);

	free(back);
	free(armored);
	amber_signer_free(s);
	amber_buf_dispose(&payload);
	amber_buf_dispose(&signed_c);
	amber_buf_dispose(&c);
}

Test(sign, unsigned_objects_split_to_themselves)
{
	amber_buf c = AMBER_BUF_INIT, payload = AMBER_BUF_INIT;
	char *armored = (char *)"x";

	build_commit(&c);
	OK(amber_object_split_signature(&payload, &armored, AMBER_GIT_COMMIT, c.data, c.len));
	cr_expect_null(armored);
	cr_assert_eq(payload.len, c.len);
	cr_assert(memcmp(payload.data, c.data, c.len) == 0);
	amber_buf_dispose(&payload);
	amber_buf_dispose(&c);
}

Test(sign, tag_signature_splits_back)
{
	static const char tag[] = "object 1111111111111111111111111111111111111111\n"
				  "type commit\ntag t\ntagger amberfs <amberfs@localhost> 1 +0000\n"
				  "\nmessage\n";
	amber_buf t = AMBER_BUF_INIT, payload = AMBER_BUF_INIT;
	amber_signer *s = NULL;
	uint8_t pk[32];
	char *armored = NULL, *back = NULL;

	OK(amber_signer_generate(&s));
	amber_signer_public(pk, s);
	OK(amber_sshsig_sign(&armored, s, "git", tag, strlen(tag)));
	amber_buf_put(&t, tag, strlen(tag));
	amber_buf_put(&t, armored, strlen(armored));
	OK(amber_object_split_signature(&payload, &back, AMBER_GIT_TAG, t.data, t.len));
	cr_assert_not_null(back);
	cr_assert_eq(payload.len, strlen(tag));
	cr_assert(memcmp(payload.data, tag, payload.len) == 0);
	cr_assert_str_eq(back, armored);
	OK(amber_sshsig_verify(back, pk, "git", payload.data, payload.len));
	free(back);
	free(armored);
	amber_signer_free(s);
	amber_buf_dispose(&payload);
	amber_buf_dispose(&t);
}
