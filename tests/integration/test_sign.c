/*
 * Signed snapshots, checked with the real tools: every snapshot commit of an
 * archive with a signing key passes `git verify-commit` (gpg.format=ssh)
 * and `ssh-keygen -Y verify`; a commit edited by hand and re-hashed fails
 * both; tags pass `git verify-tag`.  The key rules: init never overwrites
 * a key file, a signed archive refuses an unsigned snapshot unless asked,
 * a key of another archive is refused, and unsigned archives work as before.
 */
#include "helpers.h"

#include "sign.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void setup(void)
{
	unsetenv("AMBERFS_SIGNING_KEY"); /* each test says which key it uses */
	cr_assert_eq(amber_global_init(), 0);
	itest_setup();
}

TestSuite(sign, .init = setup, .fini = itest_teardown, .timeout = 300);

#define PRINCIPAL "amberfs@localhost"

static const char *const git_env[] = {
	"GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=Mallory",
	"GIT_AUTHOR_EMAIL=mallory@example.invalid", "GIT_COMMITTER_NAME=Mallory",
	"GIT_COMMITTER_EMAIL=mallory@example.invalid", NULL
};

/* Run git on repo (stdin from stdin_path); the caller disposes r. */
static int git_v(run_result *r, const char *repo, const char *stdin_path, const char *arg0,
		 va_list ap)
{
	const char *argv[32];
	size_t n = 0;
	char *gd = xasprintf("--git-dir=%s", repo);

	argv[n++] = "git";
	argv[n++] = gd;
	for (const char *a = arg0; a && n < 31; a = va_arg(ap, const char *))
		argv[n++] = a;
	argv[n] = NULL;
	run_opts o = {.env = git_env, .stdin_path = stdin_path};
	run_argv(r, &o, argv);
	free(gd);
	return r->status;
}

static int git_r(run_result *r, const char *repo, const char *stdin_path, const char *arg0, ...)
	ITEST_SENTINEL;

static int git_r(run_result *r, const char *repo, const char *stdin_path, const char *arg0, ...)
{
	va_list ap;

	va_start(ap, arg0);
	git_v(r, repo, stdin_path, arg0, ap);
	va_end(ap);
	return r->status;
}

/* stdout of a successful git command, trailing newlines cut. */
static char *git_out(const char *repo, const char *stdin_path, const char *arg0, ...)
	ITEST_SENTINEL;

static char *git_out(const char *repo, const char *stdin_path, const char *arg0, ...)
{
	run_result r;
	va_list ap;

	va_start(ap, arg0);
	git_v(&r, repo, stdin_path, arg0, ap);
	va_end(ap);
	cr_assert_eq(r.status, 0, "git %s failed: %s", arg0, r.err);
	while (r.out_len > 0 && r.out[r.out_len - 1] == '\n')
		r.out[--r.out_len] = '\0';
	free(r.err);
	return r.out;
}

/* A fixture: an archive with a signing key, its key file and allowed signers. */
typedef struct signed_arc {
	char *arc, *src, *key, *allowed;
	char pubkey[160];
} signed_arc;

static char *show_public(const char *arc)
{
	run_result r;

	amber(&r, "key", "show-public", arc, NULL);
	assert_ok(&r, "amberfs key show-public");
	cr_assert(r.out_len > 0 && r.out[r.out_len - 1] == '\n', "one line: '%s'", r.out);
	r.out[--r.out_len] = '\0';
	cr_assert_null(strchr(r.out, '\n'), "exactly one line: '%s'", r.out);
	free(r.err);
	return r.out;
}

static void write_allowed(signed_arc *s)
{
	char *line = xasprintf("%s %s\n", PRINCIPAL, s->pubkey);

	s->allowed = pjoin(IT.tmp, "allowed_signers");
	write_str(s->allowed, line);
	free(line);
}

static void signed_setup(signed_arc *s, int plain)
{
	run_result r;
	char *pub;

	s->arc = pjoin(IT.tmp, "arc");
	s->src = pjoin(IT.tmp, "src");
	s->key = pjoin(IT.tmp, "signing.key");
	mkdir_p(s->src, 0755);
	write_str(pjoin(s->src, "book"), "bid 100 ask 101\n");
	if (plain)
		amber(&r, "init", s->arc, "--plain", "--signing-key", s->key, NULL);
	else
		amber(&r, "init", s->arc, "--signing-key", s->key, NULL);
	assert_ok(&r, "amberfs init --signing-key");
	run_result_dispose(&r);
	pub = show_public(s->arc);
	snprintf(s->pubkey, sizeof(s->pubkey), "%s", pub);
	free(pub);
	write_allowed(s);
}

static void snapshot_signed(char id[41], const signed_arc *s)
{
	const char *extra[] = {"--signing-key", s->key, NULL};

	amber_snapshot_ok(id, s->arc, s->src, extra);
}

static int verify_commit(const signed_arc *s, const char *rev)
{
	run_result r;
	char *cfg = xasprintf("gpg.ssh.allowedSignersFile=%s", s->allowed);
	int st = git_r(&r, s->arc, NULL, "-c", "gpg.format=ssh", "-c", cfg, "verify-commit", rev,
		       NULL);

	if (st == 0)
		cr_assert(strstr(r.err, "Good \"git\" signature for " PRINCIPAL) != NULL,
			  "verify-commit: %s", r.err);
	free(cfg);
	run_result_dispose(&r);
	return st;
}

static int verify_tag(const signed_arc *s, const char *rev)
{
	run_result r;
	char *cfg = xasprintf("gpg.ssh.allowedSignersFile=%s", s->allowed);
	int st = git_r(&r, s->arc, NULL, "-c", "gpg.format=ssh", "-c", cfg, "verify-tag", rev,
		       NULL);

	free(cfg);
	run_result_dispose(&r);
	return st;
}

/*
 * Our own split of a raw commit into the signed payload (without the gpgsig
 * header) and the armored signature (continuation lines unindented).
 */
static void split_commit(const char *raw, char **payload, char **sig)
{
	size_t n = strlen(raw);
	char *p = calloc(1, n + 1), *g = calloc(1, n + 1);
	size_t pl = 0, gl = 0;
	const char *line = raw;
	int in_sig = 0, in_head = 1;

	cr_assert(p && g);
	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t ll = nl ? (size_t)(nl - line) + 1 : strlen(line);

		if (in_head && ll == 1)
			in_head = 0;
		if (in_head && strncmp(line, "gpgsig ", 7) == 0) {
			in_sig = 1;
			memcpy(g + gl, line + 7, ll - 7), gl += ll - 7;
		} else if (in_head && in_sig && line[0] == ' ') {
			memcpy(g + gl, line + 1, ll - 1), gl += ll - 1;
		} else {
			in_sig = 0;
			memcpy(p + pl, line, ll), pl += ll;
		}
		line += ll;
	}
	*payload = p;
	*sig = g;
}

static int ssh_verify(const signed_arc *s, const char *id)
{
	char *raw = git_out(s->arc, NULL, "cat-file", "commit", id, NULL);
	char *payload, *sig, *ppath = pjoin(IT.tmp, "payload"), *spath = pjoin(IT.tmp, "sig");
	run_result r;
	run_opts o = {.stdin_path = ppath};
	int st;

	/* git_out cut the message's final newline; the payload needs it back */
	char *full = xasprintf("%s\n", raw);
	split_commit(full, &payload, &sig);
	cr_assert(strncmp(sig, "-----BEGIN SSH SIGNATURE-----\n", 30) == 0, "no signature in %s",
		  id);
	write_str(ppath, payload);
	write_str(spath, sig);
	st = run_cmd(&r, &o, "ssh-keygen", "-Y", "verify", "-f", s->allowed, "-I", PRINCIPAL, "-n",
		     "git", "-s", spath, NULL);
	run_result_dispose(&r);
	free(full);
	free(raw);
	free(payload);
	free(sig);
	free(ppath);
	free(spath);
	return st;
}

static void change_source(const signed_arc *s, int i)
{
	char *name = xasprintf("file-%d", i), *path = pjoin(s->src, name);

	write_random_file(path, 10000 + (uint64_t)i * 777, (uint64_t)i + 1, 0);
	free(path);
	free(name);
}

/* ------------------------------------------------------------------ */

Test(sign, every_snapshot_passes_git_verify_commit_and_ssh_keygen)
{
	signed_arc s;
	char id[4][41];

	signed_setup(&s, 0);
	for (int i = 0; i < 3; i++) {
		change_source(&s, i);
		snapshot_signed(id[i], &s);
	}
	/* the key from the environment signs as well */
	{
		char *env = xasprintf("AMBERFS_SIGNING_KEY=%s", s.key);
		const char *const e[] = {env, NULL};
		run_opts o = {.env = e};
		run_result r;

		change_source(&s, 3);
		amber_o(&r, &o, "snapshot", s.arc, s.src, NULL);
		assert_ok(&r, "snapshot with AMBERFS_SIGNING_KEY");
		memcpy(id[3], r.out, 40);
		id[3][40] = '\0';
		run_result_dispose(&r);
		free(env);
	}
	for (int i = 0; i < 4; i++) {
		cr_expect_eq(verify_commit(&s, id[i]), 0, "git verify-commit %s", id[i]);
		cr_expect_eq(ssh_verify(&s, id[i]), 0, "ssh-keygen -Y verify %s", id[i]);
	}
	assert_fsck(s.arc);

	/* reading never needs the signing key */
	run_result r;
	amber(&r, "cat", s.arc, "latest:book", NULL);
	assert_ok(&r, "cat");
	cr_expect_str_eq(r.out, "bid 100 ask 101\n");
	run_result_dispose(&r);
	amber(&r, "log", s.arc, NULL);
	assert_ok(&r, "log");
	run_result_dispose(&r);
}

Test(sign, plain_archive_snapshots_are_signed_too)
{
	signed_arc s;
	char id[41];

	signed_setup(&s, 1);
	snapshot_signed(id, &s);
	cr_expect_eq(verify_commit(&s, id), 0);
	cr_expect_eq(ssh_verify(&s, id), 0);
}

/* Re-hash an edited commit text with git; returns the new id. */
static char *rehash(const signed_arc *s, const char *text)
{
	char *path = pjoin(IT.tmp, "edited");
	char *id;

	write_str(path, text);
	id = git_out(s->arc, path, "hash-object", "-w", "-t", "commit", "--stdin", NULL);
	free(path);
	return id;
}

static char *replace_once(const char *s, const char *from, const char *to)
{
	const char *hit = strstr(s, from);

	cr_assert_not_null(hit, "'%s' not found", from);
	return xasprintf("%.*s%s%s", (int)(hit - s), s, to, hit + strlen(from));
}

static void expect_both_fail(const signed_arc *s, const char *text, const char *what)
{
	char *id = rehash(s, text);

	cr_expect_neq(verify_commit(s, id), 0, "git verify-commit accepted %s", what);
	cr_expect_neq(ssh_verify(s, id), 0, "ssh-keygen accepted %s", what);
	free(id);
}

Test(sign, edited_commits_fail_both_tools)
{
	signed_arc s;
	char id1[41], id2[41], *raw, *full, *edited, *line;

	signed_setup(&s, 0);
	snapshot_signed(id1, &s);
	change_source(&s, 1);
	snapshot_signed(id2, &s);
	raw = git_out(s.arc, NULL, "cat-file", "commit", id2, NULL);
	full = xasprintf("%s\n", raw);

	/* an unchanged re-hash is the same object and still verifies */
	char *same = rehash(&s, full);
	cr_assert_str_eq(same, id2, "re-hashing the commit unchanged gives its id");
	free(same);

	edited = replace_once(full, "amberfs snapshot ", "amberfs snapshoT ");
	expect_both_fail(&s, edited, "an edited message");
	free(edited);

	char *tree1 = git_out(s.arc, NULL, "rev-parse", xasprintf("%s^{tree}", id1), NULL);
	char *tree2 = git_out(s.arc, NULL, "rev-parse", xasprintf("%s^{tree}", id2), NULL);
	cr_assert_str_neq(tree1, tree2);
	edited = replace_once(full, tree2, tree1);
	expect_both_fail(&s, edited, "another tree");
	free(edited);

	line = xasprintf("parent %s\n", id1);
	edited = replace_once(full, line, "");
	expect_both_fail(&s, edited, "a removed parent");
	free(edited);
	edited = replace_once(full, line, xasprintf("parent %s\n", tree1));
	expect_both_fail(&s, edited, "another parent");
	free(edited);

	free(line);
	free(tree1);
	free(tree2);
	free(full);
	free(raw);
}

Test(sign, show_public_matches_the_key_file)
{
	signed_arc s;
	amber_signer *k = NULL;
	uint8_t pk[32];
	char line[160];

	signed_setup(&s, 0);
	cr_assert_eq(amber_signer_load(&k, s.key), 0, "%s", amber_error_last());
	amber_signer_public(pk, k);
	amber_signer_free(k);
	cr_assert_eq(amber_pubkey_format(line, sizeof(line), pk, "amberfs"), 0);
	cr_expect_str_eq(s.pubkey, line);
	cr_expect(strncmp(s.pubkey, "ssh-ed25519 AAAA", 16) == 0, "%s", s.pubkey);

	struct stat st;
	cr_assert_eq(stat(s.key, &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0600, "the secret key file is 0600");

	/* ssh-keygen reads the line as an ed25519 public key */
	char *pubfile = pjoin(IT.tmp, "key.pub");
	write_str(pubfile, xasprintf("%s\n", s.pubkey));
	run_result r;
	run_cmd(&r, NULL, "ssh-keygen", "-l", "-f", pubfile, NULL);
	assert_ok(&r, "ssh-keygen -l");
	cr_expect(strstr(r.out, "(ED25519)") != NULL, "%s", r.out);
	run_result_dispose(&r);
	free(pubfile);
}

Test(sign, init_refuses_to_overwrite_a_key_file)
{
	char *arc = pjoin(IT.tmp, "arc"), *key = pjoin(IT.tmp, "existing");
	run_result r;

	write_str(key, "precious\n");
	amber(&r, "init", arc, "--signing-key", key, NULL);
	assert_exit(&r, 1, "init over an existing key file");
	assert_one_error_line(&r, "init over an existing key file");
	cr_expect(strstr(r.err, "already exists") != NULL, "%s", r.err);
	run_result_dispose(&r);
	cr_expect_str_eq(read_file(key, NULL), "precious\n", "the file is untouched");
	cr_expect_neq(access(arc, F_OK), 0, "no archive was created");

	/* the same through AMBERFS_SIGNING_KEY */
	char *env = xasprintf("AMBERFS_SIGNING_KEY=%s", key);
	const char *const e[] = {env, NULL};
	run_opts o = {.env = e};
	amber_o(&r, &o, "init", arc, NULL);
	assert_exit(&r, 1, "init with AMBERFS_SIGNING_KEY naming an existing file");
	run_result_dispose(&r);
	cr_expect_str_eq(read_file(key, NULL), "precious\n");
	free(env);
}

Test(sign, signed_archive_refuses_an_unsigned_snapshot)
{
	signed_arc s;
	char id[41], id2[41];
	run_result r;

	signed_setup(&s, 0);
	snapshot_signed(id, &s);
	change_source(&s, 1);
	amber(&r, "snapshot", s.arc, s.src, NULL);
	assert_exit(&r, 1, "snapshot without the signing key");
	assert_one_error_line(&r, "snapshot without the signing key");
	cr_expect(strstr(r.err, "--signing-key") && strstr(r.err, "--unsigned"),
		  "the error says what to do: %s", r.err);
	run_result_dispose(&r);
	char *tip = git_out(s.arc, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_expect_str_eq(tip, id, "no snapshot was written");
	free(tip);

	const char *extra[] = {"--unsigned", NULL};
	amber_snapshot_ok(id2, s.arc, s.src, extra);
	char *raw = git_out(s.arc, NULL, "cat-file", "commit", id2, NULL);
	cr_expect_null(strstr(raw, "gpgsig"), "an --unsigned snapshot has no signature");
	free(raw);
	cr_expect_neq(verify_commit(&s, id2), 0);
	amber(&r, "ls", s.arc, id2, NULL);
	assert_ok(&r, "ls of the unsigned snapshot");
	run_result_dispose(&r);
}

Test(sign, a_key_of_another_archive_is_refused)
{
	signed_arc s;
	char *other = pjoin(IT.tmp, "other"), *okey = pjoin(IT.tmp, "other.key");
	char *junk = pjoin(IT.tmp, "junk.key");
	char id[41];
	run_result r;

	signed_setup(&s, 0);
	snapshot_signed(id, &s);
	amber(&r, "init", other, "--plain", "--signing-key", okey, NULL);
	assert_ok(&r, "init other");
	run_result_dispose(&r);

	change_source(&s, 1);
	amber(&r, "snapshot", s.arc, s.src, "--signing-key", okey, NULL);
	assert_exit(&r, 1, "snapshot with another archive's key");
	assert_one_error_line(&r, "snapshot with another archive's key");
	cr_expect(strstr(r.err, "not the signing key") != NULL, "%s", r.err);
	cr_expect(strstr(r.err, "passphrase") == NULL, "not a passphrase error: %s", r.err);
	run_result_dispose(&r);

	write_file(junk, "not a key\n", 10, 0600);
	amber(&r, "snapshot", s.arc, s.src, "--signing-key", junk, NULL);
	assert_exit(&r, 1, "snapshot with a junk key file");
	assert_one_error_line(&r, "snapshot with a junk key file");
	run_result_dispose(&r);

	char *tip = git_out(s.arc, NULL, "rev-parse", "refs/heads/main", NULL);
	cr_expect_str_eq(tip, id, "no snapshot was written");
	free(tip);
}

Test(sign, tags_pass_git_verify_tag_and_resolve)
{
	signed_arc s;
	char id[41];
	run_result r;

	signed_setup(&s, 0);
	snapshot_signed(id, &s);
	amber(&r, "tag", s.arc, "latest", "incident-1", "-m", "order book frozen",
	      "--signing-key", s.key, NULL);
	assert_ok(&r, "tag");
	run_result_dispose(&r);
	cr_expect_eq(verify_tag(&s, "incident-1"), 0, "git verify-tag");
	char *type = git_out(s.arc, NULL, "cat-file", "-t", "refs/tags/incident-1", NULL);
	cr_expect_str_eq(type, "tag", "an annotated tag");
	free(type);
	char *peeled = git_out(s.arc, NULL, "rev-parse", "incident-1^{commit}", NULL);
	cr_expect_str_eq(peeled, id);
	free(peeled);

	amber(&r, "ls", s.arc, "incident-1", NULL);
	assert_ok(&r, "ls TAG");
	cr_expect_str_eq(r.out, "book\n");
	run_result_dispose(&r);

	/* an edited tag fails */
	char *raw = git_out(s.arc, NULL, "cat-file", "tag", "incident-1", NULL);
	char *full = xasprintf("%s\n", raw);
	char *edited = replace_once(full, "order book frozen", "order book fine");
	char *path = pjoin(IT.tmp, "tag");
	write_str(path, edited);
	char *tid = git_out(s.arc, path, "hash-object", "-w", "-t", "tag", "--stdin", NULL);
	cr_expect_neq(verify_tag(&s, tid), 0, "an edited tag must not verify");
	free(tid);

	/* no key: refused unless --unsigned */
	amber(&r, "tag", s.arc, "latest", "t2", NULL);
	assert_exit(&r, 1, "tag without the signing key");
	assert_one_error_line(&r, "tag without the signing key");
	run_result_dispose(&r);
	amber(&r, "tag", s.arc, "latest", "t2", "--unsigned", NULL);
	assert_ok(&r, "tag --unsigned");
	run_result_dispose(&r);
	amber(&r, "tag", s.arc, "latest", "t2", "--unsigned", NULL);
	assert_exit(&r, 1, "tag over an existing tag");
	run_result_dispose(&r);
	free(raw);
	free(full);
	free(edited);
	free(path);
}

Test(sign, key_new_signing_adds_a_key_to_an_existing_archive)
{
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src");
	char *key = pjoin(IT.tmp, "new.key"), *key2 = pjoin(IT.tmp, "second.key");
	char old[41], id[41];
	run_result r;

	mkdir_p(src, 0755);
	write_str(pjoin(src, "f"), "one\n");
	amber_init_archive(arc, 0);
	amber_snapshot_ok(old, arc, src, NULL);
	amber(&r, "key", "show-public", arc, NULL);
	assert_exit(&r, 1, "show-public without a key");
	assert_one_error_line(&r, "show-public without a key");
	run_result_dispose(&r);

	amber(&r, "key", "new-signing", arc, "--signing-key", key, NULL);
	assert_ok(&r, "key new-signing");
	char *pub = show_public(arc);
	cr_expect(r.out_len > 0 && strncmp(r.out, pub, strlen(pub)) == 0,
		  "new-signing prints the public key: %s", r.out);
	run_result_dispose(&r);

	amber(&r, "key", "new-signing", arc, "--signing-key", key2, NULL);
	assert_exit(&r, 1, "a second signing key");
	run_result_dispose(&r);
	cr_expect_neq(access(key2, F_OK), 0, "no second key file was written");

	/* the metadata commit moved forward, with the old one as parent */
	char *parent = git_out(arc, NULL, "rev-parse", "refs/amberfs/meta^", NULL);
	cr_expect_eq(strlen(parent), 40);
	free(parent);
	assert_fsck(arc);

	amber(&r, "snapshot", arc, src, NULL);
	assert_exit(&r, 1, "unsigned snapshot after new-signing");
	run_result_dispose(&r);
	const char *extra[] = {"--signing-key", key, NULL};
	amber_snapshot_ok(id, arc, src, extra);

	signed_arc s = {.arc = arc, .key = key};
	snprintf(s.pubkey, sizeof(s.pubkey), "%s", pub);
	write_allowed(&s);
	cr_expect_eq(verify_commit(&s, id), 0);
	cr_expect_eq(ssh_verify(&s, id), 0);
	amber(&r, "cat", arc, xasprintf("%s:f", old), NULL);
	assert_ok(&r, "the old unsigned snapshot still reads");
	cr_expect_str_eq(r.out, "one\n");
	run_result_dispose(&r);
	free(pub);
}

Test(sign, unsigned_archives_work_as_before)
{
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src");
	char *key = pjoin(IT.tmp, "k");
	char id[41];
	run_result r;

	mkdir_p(src, 0755);
	write_str(pjoin(src, "f"), "data\n");
	amber_init_archive(arc, 0);
	amber_snapshot_ok(id, arc, src, NULL);
	char *raw = git_out(arc, NULL, "cat-file", "commit", id, NULL);
	cr_expect_null(strstr(raw, "gpgsig"));
	free(raw);
	amber(&r, "cat", arc, "latest:f", NULL);
	assert_ok(&r, "cat");
	cr_expect_str_eq(r.out, "data\n");
	run_result_dispose(&r);

	/* a signing key for an archive without one is refused, not ignored */
	amber(&r, "init", pjoin(IT.tmp, "keyed"), "--plain", "--signing-key", key, NULL);
	assert_ok(&r, "init keyed");
	run_result_dispose(&r);
	amber(&r, "snapshot", arc, src, "--signing-key", key, NULL);
	assert_exit(&r, 1, "a signing key for an unsigned archive");
	assert_one_error_line(&r, "a signing key for an unsigned archive");
	run_result_dispose(&r);

	amber(&r, "tag", arc, "latest", "plain-tag", NULL);
	assert_ok(&r, "unsigned tag");
	run_result_dispose(&r);
	char *body = git_out(arc, NULL, "cat-file", "-p", "plain-tag", NULL);
	cr_expect_null(strstr(body, "SSH SIGNATURE"));
	free(body);
	amber(&r, "ls", arc, "plain-tag", NULL);
	assert_ok(&r, "ls TAG");
	cr_expect_str_eq(r.out, "f\n");
	run_result_dispose(&r);
	assert_fsck(arc);
}

/*
 * A key holder's --unsigned snapshot in a signed archive is told apart from
 * a stripped signature by its authenticated record: verify reports the
 * first as a warning (exit 0) and the second as a problem (exit 1).
 */
Test(sign, deliberate_unsigned_is_a_warning_and_a_stripped_signature_a_problem)
{
	signed_arc s;
	char id[41], id2[41], id3[41];
	run_result r;

	signed_setup(&s, 0);
	snapshot_signed(id, &s);
	change_source(&s, 1);
	amber(&r, "snapshot", s.arc, s.src, "--unsigned", NULL);
	assert_ok(&r, "snapshot --unsigned");
	cr_assert(strstr(r.err, "note:") && strstr(r.err, "--unsigned") &&
		  strstr(r.err, "on purpose"), "snapshot --unsigned should say what it does: %s",
		  r.err);
	memcpy(id2, r.out, 40);
	id2[40] = '\0';
	run_result_dispose(&r);
	amber(&r, "verify", s.arc, NULL);
	cr_assert_eq(r.status, 0, "verify of a deliberate --unsigned snapshot: exit %d:\n%s%s",
		     r.status, r.out, r.err);
	cr_assert(strstr(r.out, "warning: signature:") && strstr(r.out, id2) &&
		  strstr(r.out, "on purpose") && !strstr(r.out, "stripped"),
		  "a deliberate --unsigned snapshot is a warning, not tampering:\n%s", r.out);
	cr_assert(strstr(r.out, "0 problems, 1 warning;"), "%s", r.out);
	run_result_dispose(&r);

	/* a signed snapshot on top, whose signature is then stripped */
	change_source(&s, 2);
	snapshot_signed(id3, &s);
	char *raw = git_out(s.arc, NULL, "cat-file", "commit", id3, NULL);
	char *payload, *sig;
	split_commit(raw, &payload, &sig);
	char *text = xasprintf("%s\n", payload);
	char *stripped = rehash(&s, text);
	free(git_out(s.arc, NULL, "update-ref", "refs/heads/main", stripped, NULL));
	amber(&r, "verify", s.arc, NULL);
	cr_assert_eq(r.status, 1, "verify of a stripped signature: exit %d:\n%s%s", r.status,
		     r.out, r.err);
	cr_assert(strstr(r.out, "signature was stripped") && strstr(r.out, stripped),
		  "a stripped signature is a problem:\n%s", r.out);
	run_result_dispose(&r);
	free(stripped);
	free(text);
	free(payload);
	free(sig);
	free(raw);
}
