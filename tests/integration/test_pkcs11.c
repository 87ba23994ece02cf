/*
 * Keys in a real PKCS#11 token: SoftHSM2, set up by each test in its own
 * scratch directory (a softhsm2.conf there, SOFTHSM2_CONF pointing at it,
 * softhsm2-util to make the token, pkcs11-tool to make the keys).  amberfs
 * finds the token through p11-kit, where SoftHSM2 registers itself, or
 * through a URI's module-path.
 *
 * Signatures the token makes must pass `git verify-commit`/`verify-tag`
 * with the allowed-signers file and `amberfs verify`, exactly as a key
 * file's do, and the archive's public key must be the token's.  A wrong
 * PIN, a missing token, a missing key, a PIN inside the URI and a token
 * that goes away while `watch` runs each give one clear line naming the
 * token, and leave the refs and the pack files as they were.
 *
 * SoftHSM2 missing is a failure, never a skip: scripts/install-deps
 * installs it.
 */
#include "helpers.h"

#include "sign.h"

#include <dirent.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN_LABEL "amberfs-test"
#define USER_PIN "48151623"
#define SO_PIN "99887766"
#define KEY_URI "pkcs11:token=" TOKEN_LABEL ";object=snapsign"
#define PRINCIPAL "amberfs@localhost"

static void setup(void)
{
	unsetenv("AMBERFS_SIGNING_KEY");
	cr_assert_eq(amber_global_init(), 0);
	itest_setup();
}

TestSuite(pkcs11, .init = setup, .fini = itest_teardown, .timeout = 300);

typedef struct token {
	char *dir;              /* the token store */
	char *pinfile, *badpin;
} token;

static void must_run(const char *what, const char *arg0, ...) ITEST_SENTINEL;

static void must_run(const char *what, const char *arg0, ...)
{
	const char *argv[32];
	size_t n = 0;
	va_list ap;
	run_result r;

	va_start(ap, arg0);
	for (const char *a = arg0; a && n < 31; a = va_arg(ap, const char *))
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	run_argv(&r, NULL, argv);
	cr_assert_eq(r.status, 0, "%s failed (exit %d): is SoftHSM2/OpenSC installed? "
		     "(scripts/install-deps)\n%s%s", what, r.status, r.out, r.err);
	run_result_dispose(&r);
}

/* A fresh SoftHSM2 token with an Ed25519 key pair "snapsign" (id 01). */
static void token_setup(token *t)
{
	char *conf = pjoin(IT.tmp, "softhsm2.conf");

	cr_assert_eq(access(SOFTHSM_MODULE, R_OK), 0,
		     "SoftHSM2 is not installed (%s missing): scripts/install-deps installs "
		     "softhsm2", SOFTHSM_MODULE);
	t->dir = pjoin(IT.tmp, "tokens");
	mkdir_p(t->dir, 0700);
	write_str(conf, xasprintf("directories.tokendir = %s\nobjectstore.backend = file\n"
				  "log.level = ERROR\nslots.removable = false\n", t->dir));
	setenv("SOFTHSM2_CONF", conf, 1);
	must_run("softhsm2-util --init-token", "softhsm2-util", "--init-token", "--free",
		 "--label", TOKEN_LABEL, "--so-pin", SO_PIN, "--pin", USER_PIN, NULL);
	must_run("pkcs11-tool --keypairgen", "pkcs11-tool", "--module", SOFTHSM_MODULE,
		 "--token-label", TOKEN_LABEL, "--login", "--pin", USER_PIN, "--keypairgen",
		 "--key-type", "EC:edwards25519", "--label", "snapsign", "--id", "01", NULL);
	t->pinfile = pjoin(IT.tmp, "pin");
	write_passfile(t->pinfile, USER_PIN "\n");
	t->badpin = pjoin(IT.tmp, "badpin");
	write_passfile(t->badpin, "11112222\n");
	free(conf);
}

/* The token's Ed25519 public key as pkcs11-tool lists it (64 hex digits). */
static char *token_pubkey_hex(void)
{
	run_result r;
	char *p, *hex;

	run_cmd(&r, NULL, "pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", TOKEN_LABEL,
		"--list-objects", "--type", "pubkey", NULL);
	cr_assert_eq(r.status, 0, "pkcs11-tool --list-objects: %s", r.err);
	p = strstr(r.out, "EC_POINT:");
	cr_assert_not_null(p, "no EC_POINT in %s", r.out);
	p += strspn(p + 9, " ") + 9;
	cr_assert(strncmp(p, "0420", 4) == 0, "an OCTET STRING of 32 bytes: %.70s", p);
	hex = strndup(p + 4, 64);
	run_result_dispose(&r);
	return hex;
}

static char *show_public(const char *arc)
{
	run_result r;

	amber(&r, "key", "show-public", arc, NULL);
	assert_ok(&r, "key show-public");
	r.out[strcspn(r.out, "\n")] = '\0';
	free(r.err);
	return r.out;
}

static char *allowed_signers(const char *arc)
{
	char *path = pjoin(IT.tmp, "allowed_signers"), *pub = show_public(arc);

	write_str(path, xasprintf("%s %s\n", PRINCIPAL, pub));
	free(pub);
	return path;
}

static int git_verify(const char *arc, const char *allowed, const char *how, const char *rev)
{
	char *gd = xasprintf("--git-dir=%s", arc), *cfg =
		xasprintf("gpg.ssh.allowedSignersFile=%s", allowed);
	const char *const env[] = {"GIT_CONFIG_NOSYSTEM=1", NULL};
	run_opts o = {.env = env};
	run_result r;
	int st = run_cmd(&r, &o, "git", gd, "-c", "gpg.format=ssh", "-c", cfg, how, rev, NULL);

	if (st == 0)
		cr_expect(strstr(r.err, "Good \"git\" signature for " PRINCIPAL) != NULL,
			  "git %s %s: %s", how, rev, r.err);
	run_result_dispose(&r);
	free(gd);
	free(cfg);
	return st;
}

/* Refs and pack files of an archive, to show that nothing was written. */
static char *store_state(const char *arc)
{
	char *refs = git_ok(arc, NULL, "for-each-ref", "--format=%(refname) %(objectname)", NULL);
	char *packs = pjoin(arc, "objects/pack"), *out;
	char *list = strdup("");
	DIR *d = opendir(packs);
	struct dirent *e;

	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		char *n = xasprintf("%s%s\n", list, e->d_name);

		free(list);
		list = n;
	}
	closedir(d);
	/* readdir order is stable for an unchanged directory; sort anyway */
	out = xasprintf("%s\n--\n%s", refs, list);
	free(refs);
	free(list);
	free(packs);
	return out;
}

static void mk_src(const char *src)
{
	mkdir_p(src, 0755);
	write_str(pjoin(src, "book"), "bid 100 ask 101\n");
}

static void init_with_token(const char *arc, const token *t)
{
	run_result r;

	amber(&r, "init", arc, "--signing-key", KEY_URI, "--pin-file", t->pinfile, NULL);
	assert_ok(&r, "init --signing-key pkcs11:");
	cr_expect(strstr(r.out, "never leaves the token") != NULL, "%s", r.out);
	assert_not_contains(r.out, r.out_len, USER_PIN, "init stdout");
	assert_not_contains(r.err, r.err_len, USER_PIN, "init stderr");
	run_result_dispose(&r);
}

static void snapshot_token(char id[41], const char *arc, const char *src, const token *t)
{
	const char *extra[] = {"--signing-key", KEY_URI, "--pin-file", t->pinfile, NULL};

	amber_snapshot_ok(id, arc, src, extra);
}

/* ------------------------------------------------------------------ */

Test(pkcs11, token_signatures_pass_git_and_amberfs_verify)
{
	token t;
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src"), id[3][41];
	run_result r;

	token_setup(&t);
	mk_src(src);
	init_with_token(arc, &t);

	/* the archive's public key is the token's, and no key file appeared */
	uint8_t pk[32];
	char hex[65], *pub = show_public(arc), *want = token_pubkey_hex();
	cr_assert_eq(amber_pubkey_parse(pk, pub), 0, "%s", pub);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", pk[i]);
	cr_expect_str_eq(hex, want, "the archive's signing key is the token's public key");
	cr_expect_neq(access(KEY_URI, F_OK), 0, "no file named after the URI");

	for (int i = 0; i < 3; i++) {
		write_str(pjoin(src, "tick"), xasprintf("tick %d\n", i));
		snapshot_token(id[i], arc, src, &t);
	}
	amber(&r, "tag", arc, "latest", "incident-7", "-m", "frozen", "--signing-key", KEY_URI,
	      "--pin-file", t.pinfile, NULL);
	assert_ok(&r, "tag with the token key");
	run_result_dispose(&r);

	char *allowed = allowed_signers(arc);
	for (int i = 0; i < 3; i++)
		cr_expect_eq(git_verify(arc, allowed, "verify-commit", id[i]), 0,
			     "git verify-commit %s", id[i]);
	cr_expect_eq(git_verify(arc, allowed, "verify-tag", "incident-7"), 0, "git verify-tag");

	amber(&r, "verify", arc, NULL);
	assert_ok(&r, "amberfs verify");
	cr_expect(strstr(r.out, "3 signed and verified") != NULL, "%s", r.out);
	run_result_dispose(&r);
	assert_fsck(arc);

	/* a token signature over edited bytes fails like a file key's */
	char *raw = git_ok(arc, NULL, "cat-file", "commit", id[2], NULL);
	char *edited = xasprintf("%s\n", raw), *hit = strstr(edited, "amberfs snapshot");
	cr_assert_not_null(hit);
	hit[0] = 'A';
	char *path = pjoin(IT.tmp, "edited");
	write_str(path, edited);
	char *bad = git_ok(arc, path, "hash-object", "-w", "-t", "commit", "--stdin", NULL);
	cr_expect_neq(git_verify(arc, allowed, "verify-commit", bad), 0, "an edited commit");
	free(bad);
	free(path);
	free(edited);
	free(raw);
	free(allowed);
	free(pub);
	free(want);
}

Test(pkcs11, module_path_and_module_name_pick_the_module)
{
	token t;
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src"), id[41];
	run_result r;
	const char *uris[] = {
		KEY_URI "?module-path=" SOFTHSM_MODULE,
		KEY_URI "?module-name=softhsm2",
		"pkcs11:token=" TOKEN_LABEL ";id=%01",
	};

	token_setup(&t);
	mk_src(src);
	init_with_token(arc, &t);
	for (size_t i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
		const char *extra[] = {"--signing-key", uris[i], "--pin-file", t.pinfile, NULL};

		write_str(pjoin(src, "tick"), xasprintf("tick %zu\n", i));
		amber_snapshot_ok(id, arc, src, extra);
	}
	char *before = store_state(arc);
	amber(&r, "snapshot", arc, src, "--signing-key", KEY_URI "?module-name=nosuchmodule",
	      "--pin-file", t.pinfile, NULL);
	assert_exit(&r, 1, "an unknown module-name");
	assert_one_error_line(&r, "an unknown module-name");
	cr_expect(strstr(r.err, "nosuchmodule") != NULL, "%s", r.err);
	run_result_dispose(&r);
	char *after = store_state(arc);
	cr_expect_str_eq(after, before, "nothing written");
	free(before);
	free(after);
}

/* Run a snapshot that must fail with one line containing each needle. */
static void expect_refused(const char *arc, const char *src, const char *what,
			   const char *const *args, const char *n1, const char *n2)
{
	char *before = store_state(arc), *after;
	const char *argv[16] = {"snapshot", arc, src};
	size_t k = 3;
	run_result r;

	for (; *args && k < 15; args++)
		argv[k++] = *args;
	argv[k] = NULL;
	amber_a(&r, NULL, argv);
	assert_exit(&r, 1, what);
	assert_one_error_line(&r, what);
	cr_expect(strstr(r.err, n1) != NULL, "%s: '%s' not in: %s", what, n1, r.err);
	cr_expect(!n2 || strstr(r.err, n2) != NULL, "%s: '%s' not in: %s", what, n2, r.err);
	assert_not_contains(r.err, r.err_len, USER_PIN, what);
	run_result_dispose(&r);
	after = store_state(arc);
	cr_expect_str_eq(after, before, "%s: refs and packs unchanged", what);
	free(before);
	free(after);
}

Test(pkcs11, token_errors_are_one_line_and_write_nothing)
{
	token t;
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src"), id[41];

	token_setup(&t);
	mk_src(src);
	init_with_token(arc, &t);
	snapshot_token(id, arc, src, &t);
	write_str(pjoin(src, "book"), "bid 99 ask 102\n");

	const char *wrong_pin[] = {"--signing-key", KEY_URI, "--pin-file", t.badpin, NULL};
	expect_refused(arc, src, "a wrong PIN", wrong_pin, "wrong PIN", "token '" TOKEN_LABEL);
	const char *no_token[] = {"--signing-key", "pkcs11:token=absent-token;object=snapsign",
				  "--pin-file", t.pinfile, NULL};
	expect_refused(arc, src, "a missing token", no_token, "no token matches",
		       "absent-token");
	const char *no_key[] = {"--signing-key", "pkcs11:token=" TOKEN_LABEL ";object=nokey",
				"--pin-file", t.pinfile, NULL};
	expect_refused(arc, src, "a missing key", no_key, "no Ed25519 private key", "nokey");
	const char *in_uri[] = {"--signing-key", KEY_URI "?pin-value=" USER_PIN, NULL};
	expect_refused(arc, src, "a PIN in the URI", in_uri, "--pin-file", "pin-value");
	const char *no_pin[] = {"--signing-key", KEY_URI, NULL};
	expect_refused(arc, src, "no PIN and no terminal", no_pin, "--pin-file", KEY_URI);
	run_result r;
	const char *argv[] = {"snapshot", arc, src, "--pin-file", t.pinfile, "--unsigned", NULL};
	amber_a(&r, NULL, argv);
	assert_exit(&r, 2, "--pin-file without a token key");
	run_result_dispose(&r);

	/* init with a wrong PIN creates no archive */
	char *arc2 = pjoin(IT.tmp, "arc2");
	amber(&r, "init", arc2, "--signing-key", KEY_URI, "--pin-file", t.badpin, NULL);
	assert_exit(&r, 1, "init with a wrong PIN");
	assert_one_error_line(&r, "init with a wrong PIN");
	cr_expect(strstr(r.err, "wrong PIN") != NULL, "%s", r.err);
	run_result_dispose(&r);
	cr_expect_neq(access(pjoin(arc2, "objects"), F_OK), 0, "no archive was created");

	/* the same token key still works after all that */
	snapshot_token(id, arc, src, &t);
}

Test(pkcs11, key_new_signing_takes_a_token_key)
{
	token t;
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src"), id[41];
	run_result r;

	token_setup(&t);
	mk_src(src);
	amber_init_archive(arc, 0);
	amber(&r, "key", "new-signing", arc, "--signing-key", KEY_URI, "--pin-file", t.pinfile,
	      NULL);
	assert_ok(&r, "key new-signing pkcs11:");
	run_result_dispose(&r);
	snapshot_token(id, arc, src, &t);
	char *allowed = allowed_signers(arc);
	cr_expect_eq(git_verify(arc, allowed, "verify-commit", id), 0);
	free(allowed);
}

/* Wait until `file` contains `needle`; assert within `timeout` seconds. */
static void wait_for(const char *file, const char *needle, double timeout, const char *errf)
{
	double t0 = now_s();

	for (;;) {
		char *text = access(file, F_OK) == 0 ? read_file(file, NULL) : strdup("");
		int hit = strstr(text, needle) != NULL;

		free(text);
		if (hit)
			return;
		cr_assert(now_s() - t0 < timeout, "no '%s' in %s after %.0f s; stderr: %s", needle,
			  file, timeout, read_file(errf, NULL));
		sleep_s(0.02);
	}
}

/*
 * The token goes away while a command holds it: `watch` logs in and signs
 * its first snapshot; then the token's store is removed (SoftHSM2 then
 * fails every operation on the key, as a pulled device does) and the
 * source changes.  The next capture must fail with one line naming the
 * token, and leave the refs and packs as they were.
 */
Test(pkcs11, token_gone_mid_watch_writes_nothing)
{
	token t;
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src");
	char *json = pjoin(IT.tmp, "watch.json"), *err = pjoin(IT.tmp, "watch.err");

	token_setup(&t);
	mk_src(src);
	init_with_token(arc, &t);
	const char *argv[] = {"watch", arc, src, "--interval", "100ms", "--json",
			      "--signing-key", KEY_URI, "--pin-file", t.pinfile, NULL};
	run_opts o = {.stdout_path = json, .stderr_path = err};
	pid_t pid = amber_spawn(&o, argv);

	wait_for(json, "\"ready\"", 30, err);
	/* the logged-in writer's command line and environment hold no PIN */
	for (int i = 0; i < 2; i++) {
		char *pf = xasprintf("/proc/%d/%s", (int)pid, i ? "environ" : "cmdline");
		size_t n = 0;
		char *text = read_file(pf, &n);

		cr_assert(n > 0, "%s is empty", pf);
		assert_not_contains(text, n, USER_PIN, pf);
		free(text);
		free(pf);
	}
	char *before = store_state(arc);
	cr_assert_eq(rm_rf(t.dir), 0);
	write_str(pjoin(src, "book"), "bid 1 ask 2\n");
	wait_for(err, "went away", 30, err);
	char *after = store_state(arc);
	cr_expect_str_eq(after, before, "refs and packs unchanged");
	kill(pid, SIGTERM);
	wait_exit(pid);

	char *e = read_file(err, NULL);
	char *line = strstr(e, "amberfs: watch: snapshot failed");
	cr_expect_not_null(line, "%s", e);
	cr_expect(strstr(e, "token '" TOKEN_LABEL "' (" KEY_URI ")") != NULL, "%s", e);
	assert_not_contains(e, strlen(e), USER_PIN, "watch stderr");
	free(after);
	free(before);
	free(e);
}

/* ------------------------------------------------------------------ */
/* Key slots held by the token (kind 4)                                */

#define WRAP_URI "pkcs11:token=" TOKEN_LABEL ";object=vault"
#define OTHER_URI "pkcs11:token=" TOKEN_LABEL ";object=other"

static const char *const no_pass_env[] = {"AMBERFS_PASSPHRASE_FILE", NULL};

/* Two AES-256 keys on the token: "vault" (id 02) and "other" (id 03). */
static void token_aes_keys(void)
{
	must_run("pkcs11-tool --keygen vault", "pkcs11-tool", "--module", SOFTHSM_MODULE,
		 "--token-label", TOKEN_LABEL, "--login", "--pin", USER_PIN, "--keygen",
		 "--key-type", "AES:32", "--label", "vault", "--id", "02", "--sensitive", NULL);
	must_run("pkcs11-tool --keygen other", "pkcs11-tool", "--module", SOFTHSM_MODULE,
		 "--token-label", TOKEN_LABEL, "--login", "--pin", USER_PIN, "--keygen",
		 "--key-type", "AES:32", "--label", "other", "--id", "03", "--sensitive", NULL);
}

/* amberfs with the words given and no passphrase in the environment. */
static int amber_np(run_result *r, const char *arg0, ...) ITEST_SENTINEL;

static int amber_np(run_result *r, const char *arg0, ...)
{
	const char *args[32];
	size_t n = 0;
	va_list ap;
	run_opts o = {.env = no_pass_env, .timeout = 120};

	va_start(ap, arg0);
	for (const char *a = arg0; a && n < 31; a = va_arg(ap, const char *))
		args[n++] = a;
	va_end(ap);
	args[n] = NULL;
	return amber_a(r, &o, args);
}

static void add_slot(const char *arc, const token *t)
{
	run_result r;

	amber(&r, "key", "add-pkcs11", arc, "--token-uri", WRAP_URI, "--pin-file", t->pinfile,
	      "--label", "vault", NULL);
	assert_ok(&r, "key add-pkcs11");
	assert_not_contains(r.err, r.err_len, USER_PIN, "add-pkcs11 stderr");
	run_result_dispose(&r);
}

Test(pkcs11, a_token_slot_opens_the_archive_for_reads_and_writes)
{
	token t;
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src"), id[41];
	run_result r;

	token_setup(&t);
	token_aes_keys();
	mk_src(src);
	amber_init_archive(arc, 0);
	amber_snapshot_ok(id, arc, src, NULL);
	add_slot(arc, &t);

	/* the slot records the token and key, never the key's value */
	char *tree = git_ok(arc, NULL, "ls-tree", "refs/amberfs/meta:keys", NULL);
	cr_expect(strstr(tree, "slot-01") != NULL, "a second slot: %s", tree);
	char *gd = xasprintf("--git-dir=%s", arc);
	run_cmd(&r, NULL, "git", gd, "cat-file", "blob", "refs/amberfs/meta:keys/slot-01", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect(memmem(r.out, r.out_len, "AMBSLOT2\x04", 9) != NULL, "a kind-4 slot");
	cr_expect(memmem(r.out, r.out_len, WRAP_URI, strlen(WRAP_URI)) != NULL,
		  "the slot names its URI");
	cr_expect(memmem(r.out, r.out_len, "vault", 5) != NULL, "and the key's label");
	run_result_dispose(&r);
	free(gd);
	free(tree);

	amber_np(&r, "cat", arc, "latest:book", "--token-uri", WRAP_URI, "--pin-file", t.pinfile,
		 NULL);
	assert_ok(&r, "cat with --token-uri");
	cr_expect_str_eq(r.out, "bid 100 ask 101\n");
	run_result_dispose(&r);
	amber_np(&r, "ls", arc, "latest", "--token-uri", WRAP_URI "?module-name=softhsm2",
		 "--pin-file", t.pinfile, NULL);
	assert_ok(&r, "ls with --token-uri and module-name");
	cr_expect_str_eq(r.out, "book\n");
	run_result_dispose(&r);
	amber_np(&r, "log", arc, "--token-uri", WRAP_URI, "--pin-file", t.pinfile, NULL);
	assert_ok(&r, "log with --token-uri");
	run_result_dispose(&r);

	write_str(pjoin(src, "book"), "bid 101 ask 102\n");
	amber_np(&r, "snapshot", arc, src, "--token-uri", WRAP_URI, "--pin-file", t.pinfile, NULL);
	assert_ok(&r, "snapshot with --token-uri");
	run_result_dispose(&r);
	amber_np(&r, "cat", arc, "latest:book", "--token-uri", WRAP_URI, "--pin-file", t.pinfile,
		 NULL);
	assert_ok(&r, "cat of the new snapshot");
	cr_expect_str_eq(r.out, "bid 101 ask 102\n");
	run_result_dispose(&r);

	/* key list shows the token and key the slot names */
	amber(&r, "key", "list", arc, "--json", NULL);
	assert_ok(&r, "key list --json");
	cr_expect(strstr(r.out, "\"kind\":\"pkcs11\"") != NULL, "%s", r.out);
	cr_expect(strstr(r.out, "\"label\":\"" TOKEN_LABEL "\"") != NULL, "%s", r.out);
	cr_expect(strstr(r.out, "\"key\":\"vault\"") != NULL, "%s", r.out);
	run_result_dispose(&r);

	/* the PIN from systemd's credentials directory (LoadCredential=pin:...) */
	char *creds = pjoin(IT.tmp, "creds");
	mkdir_p(creds, 0700);
	write_passfile(pjoin(creds, "pin"), USER_PIN "\n");
	char *cd = xasprintf("CREDENTIALS_DIRECTORY=%s", creds);
	const char *const cenv[] = {"AMBERFS_PASSPHRASE_FILE", cd, NULL};
	run_opts co = {.env = cenv};
	amber_o(&r, &co, "cat", arc, "latest:book", "--token-uri", WRAP_URI, NULL);
	assert_ok(&r, "cat with the PIN from $CREDENTIALS_DIRECTORY/pin");
	run_result_dispose(&r);
	free(cd);
	free(creds);

	/* verify unlocks with the token too and runs its keyed checks */
	amber_np(&r, "verify", arc, "--read-data", "--token-uri", WRAP_URI, "--pin-file",
		 t.pinfile, NULL);
	assert_ok(&r, "verify --read-data --token-uri");
	cr_expect(!strstr(r.out, "no key"), "verify with the token skipped keyed checks: %s", r.out);
	run_result_dispose(&r);

	/* the passphrase still opens it, and verify finds nothing wrong */
	amber(&r, "verify", arc, NULL);
	assert_ok(&r, "verify");
	run_result_dispose(&r);
	assert_fsck(arc);
}

/* A read that must fail with one line holding each needle; nothing changes. */
static void expect_unlock_refused(const char *arc, const char *what, const char *uri,
				  const char *pinfile, const char *n1, const char *n2)
{
	char *before = store_state(arc), *after;
	run_result r;

	amber_np(&r, "snapshot", arc, pjoin(IT.tmp, "src"), "--token-uri", uri, "--pin-file",
		 pinfile, NULL);
	assert_exit(&r, 1, what);
	assert_one_error_line(&r, what);
	cr_expect(strstr(r.err, n1) != NULL, "%s: '%s' not in: %s", what, n1, r.err);
	cr_expect(strstr(r.err, n2) != NULL, "%s: '%s' not in: %s", what, n2, r.err);
	cr_expect(strstr(r.err, "wrong passphrase") == NULL, "%s: %s", what, r.err);
	assert_not_contains(r.err, r.err_len, USER_PIN, what);
	run_result_dispose(&r);
	after = store_state(arc);
	cr_expect_str_eq(after, before, "%s: refs and packs unchanged", what);
	free(before);
	free(after);
}

Test(pkcs11, token_slot_errors_are_one_line_and_write_nothing)
{
	token t;
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src"), id[41];

	token_setup(&t);
	token_aes_keys();
	mk_src(src);
	amber_init_archive(arc, 0);
	amber_snapshot_ok(id, arc, src, NULL);
	write_str(pjoin(src, "book"), "changed\n");

	expect_unlock_refused(arc, "no pkcs11 slot yet", WRAP_URI, t.pinfile, "no pkcs11 key slot",
			      "key list");
	add_slot(arc, &t);
	expect_unlock_refused(arc, "a wrong PIN", WRAP_URI, t.badpin, "wrong PIN",
			      "token '" TOKEN_LABEL "'");
	expect_unlock_refused(arc, "another AES key", OTHER_URI, t.pinfile,
			      "opens no pkcs11 key slot", OTHER_URI);
	expect_unlock_refused(arc, "a missing key", "pkcs11:token=" TOKEN_LABEL ";object=gone",
			      t.pinfile, "no AES key", "object=gone");
	expect_unlock_refused(arc, "a missing token", "pkcs11:token=elsewhere;object=vault",
			      t.pinfile, "no token matches", "elsewhere");

	/* the token went away: its store removed */
	char *moved = pjoin(IT.tmp, "tokens.away");
	cr_assert_eq(rename(t.dir, moved), 0);
	mkdir_p(t.dir, 0700);
	expect_unlock_refused(arc, "the token gone", WRAP_URI, t.pinfile, "no token matches",
			      TOKEN_LABEL);
	free(moved);
}

Test(pkcs11, mount_takes_the_token_as_o_options)
{
	token t;
	char *arc = pjoin(IT.tmp, "arc"), *src = pjoin(IT.tmp, "src"), id[41];
	char *mnt = pjoin(IT.tmp, "mnt");
	run_result r;

	token_setup(&t);
	token_aes_keys();
	mk_src(src);
	mkdir_p(mnt, 0755);
	amber_init_archive(arc, 0);
	amber_snapshot_ok(id, arc, src, NULL);
	add_slot(arc, &t);
	/* as an fstab line gives them: fstab-only words around ours */
	char *opts = xasprintf("noauto,_netdev,token_uri=%s,pin_file=%s,ro", WRAP_URI, t.pinfile);
	amber_np(&r, "mount", arc, mnt, "-o", opts, NULL);
	assert_ok(&r, "mount -o token_uri=,pin_file=");
	cr_expect_eq(r.err_len, 0, "%s", r.err);
	run_result_dispose(&r);
	char *book = read_file(pjoin(mnt, "latest/book"), NULL);
	run_cmd(&r, NULL, "fusermount3", "-u", mnt, NULL);
	cr_expect_eq(r.status, 0, "fusermount3 -u: %s", r.err);
	run_result_dispose(&r);
	cr_expect_str_eq(book, "bid 100 ask 101\n");

	/* a wrong PIN: one line, no mount */
	char *bad = xasprintf("token_uri=%s,pin_file=%s", WRAP_URI, t.badpin);
	amber_np(&r, "mount", arc, mnt, "-o", bad, NULL);
	assert_exit(&r, 1, "mount with a wrong PIN");
	assert_one_error_line(&r, "mount with a wrong PIN");
	cr_expect(strstr(r.err, "wrong PIN") != NULL, "%s", r.err);
	run_result_dispose(&r);
	free(bad);
	free(book);
	free(opts);
}
