/*
 * Key custody through the real CLI: key slots of every kind, recovery
 * shares, their errors, slot changes made without the key, systemd
 * credentials, and what a running command shows of its secrets.
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(keys, .init = itest_setup, .fini = itest_teardown, .timeout = 300);

#define GOOD "GOOD-DATA-51c0 of the owner\n"

/* Unset the default passphrase file so only the given secret can open. */
static const char *const no_pass[] = {"AMBERFS_PASSPHRASE_FILE", NULL};

static char *archive_with_data(void)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive"), id[41];

	mkdir_p(src, 0755);
	write_str(pjoin(src, "file"), GOOD);
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	free(src);
	return arch;
}

/* `amberfs ARGS... cat ARCH latest:file` with no passphrase file; asserts GOOD. */
static void assert_cat_with(const char *arch, const char *what, const char *const *secret_args)
{
	const char *args[24] = {"cat", arch, "latest:file"};
	size_t n = 3;
	run_opts o = {.env = no_pass};
	run_result r;

	for (size_t i = 0; secret_args[i]; i++)
		args[n++] = secret_args[i];
	args[n] = NULL;
	amber_a(&r, &o, args);
	assert_ok(&r, what);
	cr_assert_str_eq(r.out, GOOD, "%s", what);
	run_result_dispose(&r);
}

/* The same, expecting exactly `line` (plus newline) on stderr and exit 1. */
static void assert_cat_fails(const char *arch, const char *what, const char *line,
			     const char *const *secret_args)
{
	const char *args[24] = {"cat", arch, "latest:file"};
	size_t n = 3;
	run_opts o = {.env = no_pass};
	run_result r;
	char *want = xasprintf("amberfs: %s\n", line);

	for (size_t i = 0; secret_args[i]; i++)
		args[n++] = secret_args[i];
	args[n] = NULL;
	amber_a(&r, &o, args);
	assert_exit(&r, 1, what);
	assert_one_error_line(&r, what);
	cr_assert_str_eq(r.err, want, "%s", what);
	run_result_dispose(&r);
	free(want);
}

static char *key_ok(const char *what, const char *const *args)
{
	run_result r;
	char *out;

	amber_a(&r, &(run_opts){0}, args);
	assert_ok(&r, what);
	out = strdup(r.out);
	run_result_dispose(&r);
	return out;
}

/* The id of the slot labelled `label` in `key list` output. */
static char *slot_id(const char *arch, const char *label)
{
	const char *args[] = {"key", "list", arch, NULL};
	char *out = key_ok("key list", args), *id = NULL, *save = NULL;

	for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char i[17], kind[16], lab[80];

		if (sscanf(l, "%16s %15s %79s", i, kind, lab) == 3 && strcmp(lab, label) == 0)
			id = strdup(i);
	}
	cr_assert(id, "no slot labelled %s", label);
	free(out);
	return id;
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

Test(keys, passphrase_slots_add_passwd_remove_round_trip)
{
	char *arch = archive_with_data();
	char *p2 = pjoin(IT.tmp, "p2"), *p3 = pjoin(IT.tmp, "p3");
	run_result r;

	write_passfile(p2, "second passphrase of ops 42");
	write_passfile(p3, "third passphrase, after passwd");
	const char *add[] = {"key", "add-passphrase", arch, "--label", "ops",
			     "--new-passphrase-file", p2, NULL};
	free(key_ok("add-passphrase", add));
	const char *list[] = {"key", "list", arch, NULL};
	char *out = key_ok("key list", list);
	cr_assert_eq(count_lines(out), 3, "header and two slots: %s", out);
	cr_assert(strstr(out, " passphrase  initial ") && strstr(out, " passphrase  ops "), "%s",
		  out);
	free(out);
	const char *use2[] = {"--passphrase-file", p2, NULL};
	assert_cat_with(arch, "cat with the added passphrase", use2);

	char *id = slot_id(arch, "ops");
	const char *pw[] = {"key", "passwd", arch, "ops", "--new-passphrase-file", p3, NULL};
	free(key_ok("passwd", pw));
	char *id2 = slot_id(arch, "ops");
	cr_assert_str_eq(id, id2, "passwd kept the slot's id");
	char *wrong = xasprintf("wrong passphrase for %s: no key slot opens with it", arch);
	assert_cat_fails(arch, "the old passphrase after passwd", wrong, use2);
	const char *use3[] = {"--passphrase-file", p3, NULL};
	assert_cat_with(arch, "cat with the changed passphrase", use3);

	const char *rm[] = {"key", "remove", arch, id, NULL};
	free(key_ok("remove", rm));
	assert_cat_fails(arch, "a removed passphrase", wrong, use3);
	const char *use1[] = {"--passphrase-file", IT.passfile, NULL};
	assert_cat_with(arch, "cat with the initial passphrase", use1);

	/* the last slot stays */
	amber(&r, "key", "remove", arch, "initial", NULL);
	assert_exit(&r, 1, "removing the last slot");
	assert_one_error_line(&r, "removing the last slot");
	char *last = xasprintf("amberfs: refusing to remove the last key slot of archive %s: "
			       "nobody could open it again (add another slot first)\n", arch);
	cr_assert_str_eq(r.err, last);
	run_result_dispose(&r);
	assert_cat_with(arch, "cat after the refused removal", use1);
	free(last);
	free(wrong);
	free(id2);
	free(id);
}

Test(keys, key_file_slot_round_trip_and_never_overwritten)
{
	char *arch = archive_with_data(), *kf = pjoin(IT.tmp, "venue.key");
	struct stat st;
	run_result r;

	const char *add[] = {"key", "add-keyfile", arch, kf, "--label", "machine", NULL};
	free(key_ok("add-keyfile", add));
	cr_assert(stat(kf, &st) == 0 && st.st_size == 32 && (st.st_mode & 0777) == 0600,
		  "key file %lld bytes mode %o", (long long)st.st_size, st.st_mode & 0777);
	const char *use[] = {"--keyfile", kf, NULL};
	assert_cat_with(arch, "cat --keyfile", use);
	const char *use_eq[] = {NULL, NULL};
	char *eq = xasprintf("--keyfile=%s", kf);
	use_eq[0] = eq;
	assert_cat_with(arch, "cat --keyfile=F", use_eq);

	size_t len;
	char *before = read_file(kf, &len);
	amber(&r, "key", "add-keyfile", arch, kf, NULL);
	assert_exit(&r, 1, "add-keyfile onto an existing file");
	char *want = xasprintf("amberfs: key file %s exists: never overwritten; choose another "
			       "name\n", kf);
	cr_assert_str_eq(r.err, want);
	run_result_dispose(&r);
	char *after = read_file(kf, &len);
	cr_assert_eq(memcmp(before, after, 32), 0, "the key file changed");

	/* a file that is not a key file, and a key file whose slot is gone */
	char *other = pjoin(IT.tmp, "notakey");
	write_str(other, "hello\n");
	const char *bad[] = {"--keyfile", other, NULL};
	char *msg = xasprintf("key file %s is not an amberfs key file (those are exactly 32 "
			      "bytes): give the file 'amberfs key add-keyfile' wrote", other);
	assert_cat_fails(arch, "a 6-byte key file", msg, bad);
	const char *rm[] = {"key", "remove", arch, "machine", NULL};
	free(key_ok("remove the key file slot", rm));
	char *gone = xasprintf("archive %s has no keyfile key slot: unlock it with another kind "
			       "('amberfs key list %s' shows its slots)", arch, arch);
	assert_cat_fails(arch, "a key file whose slot was removed", gone, use);
	free(gone);
	free(msg);
	free(other);
	free(after);
	free(before);
	free(want);
	free(eq);
}

/* ---- shares -------------------------------------------------------------------------- */

static char **split_files(const char *arch, const char *dir, int k, int n, const char *pass)
{
	const char *args[20] = {"key", "split", arch, "--threshold", NULL, "--shares", NULL,
				"--iteration-exponent", "0", "--out-dir", dir};
	size_t a = 11;
	char ks[8], ns[8];
	char **files = calloc((size_t)n + 1, sizeof(*files));

	snprintf(ks, sizeof(ks), "%d", k);
	snprintf(ns, sizeof(ns), "%d", n);
	args[4] = ks;
	args[6] = ns;
	if (pass) {
		args[a++] = "--share-passphrase-file";
		args[a++] = pass;
	}
	args[a] = NULL;
	free(key_ok("key split", args));
	for (int i = 0; i < n; i++) {
		char *pat = xasprintf("ls %s/share-*-g1-%d.txt", dir, i + 1);
		FILE *p = popen(pat, "r");
		char line[512] = "";

		cr_assert(p && fgets(line, sizeof(line), p), "%s", pat);
		pclose(p);
		line[strcspn(line, "\n")] = '\0';
		files[i] = strdup(line);
		struct stat st;
		cr_assert(stat(files[i], &st) == 0 && (st.st_mode & 0777) == 0600, "%s mode %o",
			  files[i], st.st_mode & 0777);
		free(pat);
	}
	return files;
}

Test(keys, shares_open_the_archive_through_the_cli)
{
	char *arch = archive_with_data(), *dir = pjoin(IT.tmp, "shares");
	char **f = split_files(arch, dir, 3, 5, NULL);
	const int subsets[][3] = {{0, 1, 2}, {2, 3, 4}, {0, 2, 4}, {4, 1, 3}};

	for (size_t i = 0; i < sizeof(subsets) / sizeof(subsets[0]); i++) {
		const char *use[] = {"--share", f[subsets[i][0]], "--share", f[subsets[i][1]],
				     "--share", f[subsets[i][2]], NULL};
		assert_cat_with(arch, "cat with 3 of 5 shares", use);
	}
	const char *all[] = {"--share", dir, NULL};
	assert_cat_with(arch, "cat with the directory of all 5 shares", all);
	/* several shares in one file, one per line */
	char *both = pjoin(IT.tmp, "two-and-one");
	size_t l0, l1;
	char *s0 = read_file(f[0], &l0), *s1 = read_file(f[1], &l1);
	char *text = xasprintf("# two shares\n%s\n%s", s0, s1);
	write_str(both, text);
	const char *mixed[] = {"--share", both, "--share", f[3], NULL};
	assert_cat_with(arch, "cat with a file of two shares and one more", mixed);
	const char *list[] = {"key", "list", arch, NULL};
	char *out = key_ok("key list", list);
	cr_assert(strstr(out, " shares ") && strstr(out, ": 3 of 5 shares (iteration exponent 0)"),
		  "%s", out);
	free(out);
	free(text);
	free(s1);
	free(s0);
	free(both);
}

/* Word `pos` (0-based) of a mnemonic replaced by `word`: a new string. */
static char *with_word(const char *m, size_t pos, const char *word)
{
	size_t cap = strlen(m) + 32, len = 0, i = 0;
	char *copy = strdup(m), *out = calloc(1, cap), *save = NULL;

	for (char *w = strtok_r(copy, " \n", &save); w; w = strtok_r(NULL, " \n", &save), i++)
		len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? " " : "",
					i == pos ? word : w);
	snprintf(out + len, cap - len, "\n");
	free(copy);
	return out;
}

static char *word_at(const char *m, size_t pos)
{
	char *copy = strdup(m), *save = NULL, *w = strtok_r(copy, " \n", &save), *r;

	for (size_t i = 0; i < pos; i++)
		w = strtok_r(NULL, " \n", &save);
	r = strdup(w);
	free(copy);
	return r;
}

static char *file_with(const char *name, const char *text)
{
	char *p = pjoin(IT.tmp, name);

	write_str(p, text);
	return p;
}

/*
 * Each way a set of shares can be wrong gives its own one-line message that
 * says what to do.
 */
Test(keys, each_share_mistake_has_its_own_message)
{
	char *arch = archive_with_data(), *dir = pjoin(IT.tmp, "shares"),
	     *dir2 = pjoin(IT.tmp, "other");
	char *sp = pjoin(IT.tmp, "share-pass");
	write_passfile(sp, "TREZOR");
	char **f = split_files(arch, dir, 2, 3, sp);
	char **g = split_files(arch, dir2, 2, 3, NULL);
	size_t len;
	char *m1 = read_file(f[1], &len);

	const char *one[] = {"--share", f[0], "--share-passphrase-file", sp, NULL};
	assert_cat_fails(arch, "K-1 shares", "not enough shares: add 1 more share(s) of group 1 "
			 "(it has 1 of the 2 needed)", one);

	const char *other[] = {"--share", f[0], "--share", g[1], "--share-passphrase-file", sp,
			       NULL};
	char *id1 = word_at(m1, 0);
	(void)id1;
	run_result r;
	run_opts o = {.env = no_pass};
	amber_o(&r, &o, "cat", arch, "latest:file", "--share", f[0], "--share", g[1],
		"--share-passphrase-file", sp, NULL);
	assert_exit(&r, 1, "a share of another set");
	assert_one_error_line(&r, "a share of another set");
	cr_assert(strstr(r.err, "amberfs: share 2 is from another share set than share 1 ("),
		  "%s", r.err);
	cr_assert(strstr(r.err, "): use only shares made together (share 2 is "), "%s", r.err);
	run_result_dispose(&r);
	(void)other;

	const char *dup[] = {"--share", f[0], "--share", f[0], "--share-passphrase-file", sp,
			     NULL};
	char *b0 = strrchr(f[0], '/') + 1;
	char *msg = xasprintf("share 2 is a duplicate of share 1: give each share once, and "
			      "another share of group 1 instead (share 2 is %s line 1)", b0);
	assert_cat_fails(arch, "a duplicated share", msg, dup);
	free(msg);

	/* a mistyped word: another word of the list in its place */
	char *w = word_at(m1, 8);
	char *typo = file_with("typo", with_word(m1, 8, strcmp(w, "academic") ? "academic" :
								      "acid"));
	const char *mistyped[] = {"--share", f[0], "--share", typo, "--share-passphrase-file",
				  sp, NULL};
	assert_cat_fails(arch, "a mistyped word", "share 2 fails its checksum: a word is mistyped "
			 "(a valid word, but not the one written): check each word against the "
			 "share (share 2 is typo line 1)", mistyped);

	/* two neighbouring words swapped */
	size_t pos = 6;
	char *a = word_at(m1, pos), *b = word_at(m1, pos + 1);
	while (strcmp(a, b) == 0) {
		free(a);
		free(b);
		pos++;
		a = word_at(m1, pos);
		b = word_at(m1, pos + 1);
	}
	char *t = with_word(m1, pos, b), *t2 = with_word(t, pos + 1, a);
	char *swapped = file_with("swapped", t2);
	const char *sw[] = {"--share", f[0], "--share", swapped, "--share-passphrase-file", sp,
			    NULL};
	msg = xasprintf("share 2 fails its checksum: words %zu and %zu look swapped: put them "
			"back in order (share 2 is swapped line 1)", pos + 1, pos + 2);
	assert_cat_fails(arch, "swapped words", msg, sw);
	free(msg);

	/* a word that is not on the list */
	char *nw = file_with("notaword", with_word(m1, 3, "zzzzq"));
	const char *unknown[] = {"--share", f[0], "--share", nw, "--share-passphrase-file", sp,
				 NULL};
	assert_cat_fails(arch, "a word not on the list", "share 2, word 4 \"zzzzq\" is not a "
			 "SLIP-0039 word: check its spelling (share 2 is notaword line 1)",
			 unknown);

	/* the right shares, the wrong share passphrase (or none) */
	char *wp = pjoin(IT.tmp, "wrong-share-pass");
	write_passfile(wp, "TREZOX");
	const char *wrongp[] = {"--share", f[0], "--share", f[2], "--share-passphrase-file", wp,
				NULL};
	amber_o(&r, &o, "cat", arch, "latest:file", "--share", f[0], "--share", f[2],
		"--share-passphrase-file", wp, NULL);
	assert_exit(&r, 1, "a wrong share passphrase");
	assert_one_error_line(&r, "a wrong share passphrase");
	cr_assert(strstr(r.err, "amberfs: the shares combine, but not to the key of archive ") &&
		  strstr(r.err, "wrong share passphrase (give the one used at 'key split' with "
			 "--share-passphrase-file)\n"), "%s", r.err);
	run_result_dispose(&r);
	(void)wrongp;
	const char *right[] = {"--share", f[0], "--share", f[2], "--share-passphrase-file", sp,
			       NULL};
	assert_cat_with(arch, "the right shares and passphrase", right);
	free(wp);
	free(nw);
	free(swapped);
	free(t2);
	free(t);
	free(b);
	free(a);
	free(typo);
	free(w);
	free(id1);
	free(m1);
}

/* Removing the share slot revokes the whole set: its shares open nothing. */
Test(keys, removing_the_share_slot_revokes_the_set)
{
	char *arch = archive_with_data(), *dir = pjoin(IT.tmp, "shares");
	char **f = split_files(arch, dir, 2, 2, NULL);
	const char *use[] = {"--share", f[0], "--share", f[1], NULL};
	const char *list[] = {"key", "list", arch, "--json", NULL};
	char *json = key_ok("key list --json", list);
	char *p = strstr(json, "\"kind\":\"shares\"");
	cr_assert(p, "%s", json);
	char *idp = strstr(json, "},{\"id\":\"");
	cr_assert(idp, "%s", json);
	char id[17];
	memcpy(id, idp + 9, 16);
	id[16] = '\0';
	assert_cat_with(arch, "cat with both shares", use);
	const char *rm[] = {"key", "remove", arch, id, NULL};
	free(key_ok("remove the share slot", rm));
	run_result r;
	run_opts o = {.env = no_pass};
	amber_o(&r, &o, "cat", arch, "latest:file", "--share", f[0], "--share", f[1], NULL);
	assert_exit(&r, 1, "shares of a removed slot");
	assert_one_error_line(&r, "shares of a removed slot");
	cr_assert(strstr(r.err, ") belong to no key slot of archive "), "%s", r.err);
	run_result_dispose(&r);
	free(json);
}

/* A split that cannot add its slot leaves no share file behind. */
Test(keys, failed_split_leaves_no_share_files)
{
	char *arch = archive_with_data(), *dir = pjoin(IT.tmp, "shares");
	char *lock = pjoin(arch, "amberfs.lock");
	int fd = open(lock, O_CREAT | O_RDWR, 0644);
	run_result r;

	cr_assert(fd >= 0 && flock(fd, LOCK_EX) == 0, "cannot take the writer lock");
	amber(&r, "key", "split", arch, "--threshold", "2", "--shares", "3",
	      "--iteration-exponent", "0", "--out-dir", dir, NULL);
	assert_exit(&r, 1, "split while another writer holds the lock");
	cr_assert(strstr(r.err, "is locked by another writer; wait for it"), "%s", r.err);
	cr_assert(!strstr(r.err, "pid"),
		  "the last writer's pid went with its lock; none may be named: %s", r.err);
	run_result_dispose(&r);
	/* A holder that wrote its pid is named; a pid of a process gone is not. */
	pid_t gone = fork();
	if (gone == 0)
		_exit(0);
	cr_assert(gone > 0 && waitpid(gone, NULL, 0) == gone);
	pid_t pids[] = {getpid(), gone};
	for (int i = 0; i < 2; i++) {
		char line[32], named[64];
		int n = snprintf(line, sizeof(line), "%ld\n", (long)pids[i]);
		cr_assert(ftruncate(fd, 0) == 0 && pwrite(fd, line, (size_t)n, 0) == n);
		amber(&r, "key", "split", arch, "--threshold", "2", "--shares", "3",
		      "--iteration-exponent", "0", "--out-dir", dir, NULL);
		assert_exit(&r, 1, "split while another writer holds the lock");
		snprintf(named, sizeof(named), "(pid %ld)", (long)pids[i]);
		cr_assert(i == 0 ? strstr(r.err, named) != NULL : strstr(r.err, "pid") == NULL,
			  "pid %ld %s: %s", (long)pids[i], i == 0 ? "should be named" : "is gone",
			  r.err);
		run_result_dispose(&r);
	}
	close(fd);
	FILE *p = popen(xasprintf("ls -A %s", dir), "r");
	char line[256] = "";
	cr_assert(p);
	cr_assert(!fgets(line, sizeof(line), p), "a share file was left: %s", line);
	pclose(p);
	const char *list[] = {"key", "list", arch, NULL};
	char *out = key_ok("key list", list);
	cr_assert(!strstr(out, " shares "), "a share slot was added: %s", out);
	free(out);
}

Test(keys, weak_new_passphrase_needs_weak_ok_off_a_terminal)
{
	char *arch = archive_with_data(), *weak = pjoin(IT.tmp, "weak");
	run_result r;

	write_passfile(weak, "short1");
	amber(&r, "key", "add-passphrase", arch, "--new-passphrase-file", weak, NULL);
	assert_exit(&r, 1, "a 6-character passphrase");
	cr_assert_str_eq(r.err, "amberfs: the new passphrase has only 6 characters: under 12, "
			 "anyone with a copy of the archive can guess it; choose a longer one, "
			 "or give --weak-ok to keep it\n");
	run_result_dispose(&r);
	amber(&r, "key", "add-passphrase", arch, "--new-passphrase-file", weak, "--weak-ok", NULL);
	assert_ok(&r, "the same with --weak-ok");
	run_result_dispose(&r);
	/* init too */
	char *a2 = pjoin(IT.tmp, "a2");
	run_opts o = {.env = no_pass};
	amber_o(&r, &o, "init", a2, "--passphrase-file", weak, NULL);
	assert_exit(&r, 1, "init with a 6-character passphrase");
	cr_assert(strstr(r.err, "the new passphrase has only 6 characters"), "%s", r.err);
	run_result_dispose(&r);
	struct stat st;
	cr_assert(stat(a2, &st) != 0, "init created the archive anyway");
}

/* ---- slot changes made without the key ------------------------------------------------- */

static char *blob_of(const char *arch, const char *file)
{
	return git_ok(arch, NULL, "hash-object", "-w", file, NULL);
}

/* keys/ replaced by `lines` (mktree input); a new unsigned metadata commit. */
static void set_keys_tree(const char *arch, const char *lines)
{
	char *in = pjoin(IT.tmp, "keys.in"), *in2 = pjoin(IT.tmp, "top.in");
	write_str(in, lines);
	char *keys = git_ok(arch, in, "mktree", NULL);
	char *ls = git_ok(arch, NULL, "ls-tree", "refs/amberfs/meta^{tree}", NULL);
	FILE *f = fopen(in2, "w");

	for (char *sv = NULL, *l = strtok_r(ls, "\n", &sv); l; l = strtok_r(NULL, "\n", &sv)) {
		char mode[8], type[8], o[41], name[80];

		cr_assert(sscanf(l, "%7s %7s %40s\t%79s", mode, type, o, name) == 4);
		fprintf(f, "%s %s %s\t%s\n", mode, type, strcmp(name, "keys") ? o : keys, name);
	}
	fclose(f);
	char *tree = git_ok(arch, in2, "mktree", NULL);
	char *msg = pjoin(IT.tmp, "msg");
	write_str(msg, "amberfs archive metadata\n");
	char *c = git_ok(arch, NULL, "commit-tree", tree, "-p", "refs/amberfs/meta", "-F", msg,
			 NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/amberfs/meta", c, NULL));
	free(c);
	free(msg);
	free(tree);
	free(ls);
	free(keys);
	free(in2);
	free(in);
}

/* The attacker's own archive with the same passphrase: a slot of theirs. */
static char *foreign_slot_file(void)
{
	char *other = pjoin(IT.tmp, "attacker"), *out = pjoin(IT.tmp, "foreign-slot");
	amber_init_archive(other, 0);
	char *blob = git_ok(other, NULL, "rev-parse", "refs/amberfs/meta:keys/slot-00", NULL);
	run_result r;
	run_opts o = {.stdout_path = out};
	const char *argv[] = {"git", xasprintf("--git-dir=%s", other), "cat-file", "blob", blob,
			      NULL};
	run_argv(&r, &o, argv);
	assert_ok(&r, "git cat-file");
	run_result_dispose(&r);
	free(blob);
	return out;
}

static void assert_refused_tampered(const char *arch, const char *what)
{
	run_result r;

	amber(&r, "cat", arch, "latest:file", NULL);
	assert_exit(&r, 1, what);
	assert_one_error_line(&r, what);
	char *want = xasprintf("amberfs: archive %s: its key slots or config were changed by "
			       "someone without the key (the metadata authenticator does not "
			       "match): refusing; run 'amberfs verify' on it\n", arch);
	cr_assert_str_eq(r.err, want, "%s", what);
	free(want);
	run_result_dispose(&r);
}

static void assert_verify_reports(const char *arch, const char *needle, int keyed,
				  const char *what)
{
	run_result r;

	if (keyed)
		amber(&r, "verify", arch, NULL);
	else
		amber(&r, "verify", arch, "--no-key", NULL);
	assert_exit(&r, 1, what);
	cr_assert(strstr(r.out, needle), "%s: verify said: %s / %s", what, r.out, r.err);
	run_result_dispose(&r);
}

Test(keys, slot_added_without_the_key_is_tampering)
{
	char *arch = archive_with_data();
	run_result r;

	amber(&r, "verify", arch, NULL);
	assert_ok(&r, "a clean verify first (it records the slots)");
	run_result_dispose(&r);
	char *mine = git_ok(arch, NULL, "rev-parse", "refs/amberfs/meta:keys/slot-00", NULL);
	char *slot = foreign_slot_file(), *theirs = blob_of(arch, slot);
	char *lines = xasprintf("100644 blob %s\tslot-00\n100644 blob %s\tslot-01\n", mine, theirs);
	set_keys_tree(arch, lines);
	assert_refused_tampered(arch, "cat after a slot was added without the key");
	assert_verify_reports(arch, "the key slots or config were changed by someone without the "
			      "key: the metadata authenticator does not match them (tampering)", 1,
			      "verify with the key");
	assert_verify_reports(arch, "was added or replaced since the last verify", 0,
			      "verify without the key");
	free(lines);
	free(theirs);
	free(slot);
	free(mine);
}

Test(keys, slot_swapped_without_the_key_is_tampering)
{
	char *arch = archive_with_data();
	run_result r;

	amber(&r, "verify", arch, NULL);
	assert_ok(&r, "a clean verify first");
	run_result_dispose(&r);
	char *slot = foreign_slot_file(), *theirs = blob_of(arch, slot);
	char *lines = xasprintf("100644 blob %s\tslot-00\n", theirs);
	set_keys_tree(arch, lines);
	/* the attacker's slot opens with the same passphrase but holds their key */
	run_opts o = {0};
	amber_o(&r, &o, "cat", arch, "latest:file", NULL);
	assert_exit(&r, 1, "cat after the slot was swapped");
	assert_not_contains(r.out, r.out_len, "GOOD", "cat after the slot was swapped");
	run_result_dispose(&r);
	assert_verify_reports(arch, "was added or replaced since the last verify", 0,
			      "verify without the key");
	free(lines);
	free(theirs);
	free(slot);
}

Test(keys, config_rewritten_without_the_key_is_refused)
{
	char *arch = archive_with_data();
	char *cfg = git_ok(arch, NULL, "cat-file", "blob", "refs/amberfs/meta:config", NULL);
	char *id = strstr(cfg, "\nid ");
	cr_assert(id);
	id[4] = id[4] == 'a' ? 'b' : 'a'; /* another archive id: other local marks */
	char *in = pjoin(IT.tmp, "cfg");
	char *text = xasprintf("%s\n", cfg);
	write_str(in, text);
	char *blob = git_ok(arch, NULL, "hash-object", "-w", in, NULL);
	char *ls = git_ok(arch, NULL, "ls-tree", "refs/amberfs/meta^{tree}", NULL);
	char *top = pjoin(IT.tmp, "top");
	FILE *f = fopen(top, "w");
	for (char *sv = NULL, *l = strtok_r(ls, "\n", &sv); l; l = strtok_r(NULL, "\n", &sv)) {
		char mode[8], type[8], o[41], name[80];

		cr_assert(sscanf(l, "%7s %7s %40s\t%79s", mode, type, o, name) == 4);
		fprintf(f, "%s %s %s\t%s\n", mode, type, strcmp(name, "config") ? o : blob, name);
	}
	fclose(f);
	char *tree = git_ok(arch, top, "mktree", NULL);
	char *msg = pjoin(IT.tmp, "msg");
	write_str(msg, "amberfs archive metadata\n");
	char *c = git_ok(arch, NULL, "commit-tree", tree, "-p", "refs/amberfs/meta", "-F", msg,
			 NULL);
	free(git_ok(arch, NULL, "update-ref", "refs/amberfs/meta", c, NULL));
	assert_refused_tampered(arch, "cat after the config's id was rewritten");
	free(c);
	free(msg);
	free(tree);
	free(top);
	free(ls);
	free(blob);
	free(text);
	free(in);
	free(cfg);
}

/* An archive with a signing key: slot changes are signed, and need the key. */
Test(keys, slot_changes_of_a_signed_archive_are_signed)
{
	char *arch = pjoin(IT.tmp, "archive"), *sk = pjoin(IT.tmp, "sign.key");
	char *p2 = pjoin(IT.tmp, "p2");
	run_result r;

	write_passfile(p2, "second passphrase of ops 42");
	amber(&r, "init", arch, "--signing-key", sk, NULL);
	assert_ok(&r, "init --signing-key");
	run_result_dispose(&r);
	amber(&r, "key", "add-passphrase", arch, "--new-passphrase-file", p2, NULL);
	assert_exit(&r, 1, "a slot change without the signing key");
	assert_one_error_line(&r, "a slot change without the signing key");
	cr_assert(strstr(r.err, "is signed: give its secret signing key (--signing-key FILE or "
			 "AMBERFS_SIGNING_KEY), or --unsigned"), "%s", r.err);
	run_result_dispose(&r);
	amber(&r, "key", "add-passphrase", arch, "--new-passphrase-file", p2, "--signing-key", sk,
	      NULL);
	assert_ok(&r, "add-passphrase --signing-key");
	run_result_dispose(&r);
	char *c = git_ok(arch, NULL, "cat-file", "commit", "refs/amberfs/meta", NULL);
	cr_assert(strstr(c, "\ngpgsig -----BEGIN SSH SIGNATURE-----"), "unsigned: %s", c);
	amber(&r, "verify", arch, NULL);
	assert_ok(&r, "verify after a signed slot change");
	run_result_dispose(&r);
	/* --unsigned writes it anyway, and verify reports it */
	amber(&r, "key", "remove", arch, "initial", "--unsigned", NULL);
	assert_ok(&r, "remove --unsigned");
	run_result_dispose(&r);
	assert_verify_reports(arch, "the key slots or config were changed by a metadata commit not "
			      "signed by the archive's signing key", 0, "verify after --unsigned");
	free(c);
}

/* ---- systemd credentials ---------------------------------------------------------------- */

Test(keys, credentials_directory_gives_passphrase_keyfile_and_shares)
{
	char *arch = archive_with_data(), *cred = pjoin(IT.tmp, "credentials");
	char *kf = pjoin(IT.tmp, "k"), *dir = pjoin(IT.tmp, "shares");
	size_t len;

	mkdir_p(cred, 0700);
	const char *add[] = {"key", "add-keyfile", arch, kf, NULL};
	free(key_ok("add-keyfile", add));
	char **f = split_files(arch, dir, 2, 3, NULL);
	char *envc = xasprintf("CREDENTIALS_DIRECTORY=%s", cred);
	const char *env[] = {"AMBERFS_PASSPHRASE_FILE", envc, NULL};
	run_opts o = {.env = env};
	run_result r;

	/* well-known names, one at a time */
	char *pass = read_file(IT.passfile, &len);
	write_file(pjoin(cred, "passphrase"), pass, len, 0600);
	amber_o(&r, &o, "cat", arch, "latest:file", NULL);
	assert_ok(&r, "credential 'passphrase'");
	cr_assert_str_eq(r.out, GOOD);
	run_result_dispose(&r);
	unlink(pjoin(cred, "passphrase"));
	char *key = read_file(kf, &len);
	write_file(pjoin(cred, "keyfile"), key, len, 0600);
	amber_o(&r, &o, "cat", arch, "latest:file", NULL);
	assert_ok(&r, "credential 'keyfile'");
	cr_assert_str_eq(r.out, GOOD);
	run_result_dispose(&r);
	unlink(pjoin(cred, "keyfile"));
	char *s0 = read_file(f[0], &len), *s2 = read_file(f[2], &len);
	char *both = xasprintf("%s%s", s0, s2);
	write_file(pjoin(cred, "shares"), both, strlen(both), 0600);
	amber_o(&r, &o, "cat", arch, "latest:file", NULL);
	assert_ok(&r, "credential 'shares'");
	cr_assert_str_eq(r.out, GOOD);
	run_result_dispose(&r);
	/* a relative secret file name is looked up there */
	unlink(pjoin(cred, "shares"));
	write_file(pjoin(cred, "venue.key"), key, 32, 0600);
	amber_o(&r, &o, "cat", arch, "latest:file", "--keyfile", "venue.key", NULL);
	assert_ok(&r, "--keyfile venue.key from the credentials directory");
	cr_assert_str_eq(r.out, GOOD);
	run_result_dispose(&r);
	free(both);
	free(s2);
	free(s0);
	free(key);
	free(pass);
	free(envc);
}

/* ---- what a running command shows ------------------------------------------------------- */

static int proc_has(pid_t pid, const char *file, const void *needle, size_t n)
{
	char *path = xasprintf("/proc/%d/%s", (int)pid, file);
	size_t len = 0;
	char *data = read_file(path, &len);
	int found = 0;

	for (size_t i = 0; data && n <= len && i + n <= len && !found; i++)
		found = memcmp(data + i, needle, n) == 0;
	free(data);
	free(path);
	return found;
}

/*
 * A command blocked writing its output: its argv and environment hold file
 * names, never the passphrase, the shares or the key file's bytes.
 */
Test(keys, a_running_command_shows_no_secret_in_cmdline_or_environ)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "archive"), id[41];
	char *kf = pjoin(IT.tmp, "k"), *dir = pjoin(IT.tmp, "shares");
	char *fifo = pjoin(IT.tmp, "fifo");
	size_t len;

	mkdir_p(src, 0755);
	write_random_file(pjoin(src, "big"), 1 << 20, 7, 0);
	amber_init_archive(arch, 0);
	amber_snapshot_ok(id, arch, src, NULL);
	const char *add[] = {"key", "add-keyfile", arch, kf, NULL};
	free(key_ok("add-keyfile", add));
	char **f = split_files(arch, dir, 2, 2, NULL);
	char *m0 = read_file(f[0], &len), *key = read_file(kf, &len);
	char *words = word_at(m0, 5);
	cr_assert(mkfifo(fifo, 0600) == 0);
	const char *modes[][5] = {{"--share", f[0], "--share", f[1], NULL},
				  {"--keyfile", kf, NULL},
				  {"--passphrase-file", IT.passfile, NULL}};

	for (size_t m = 0; m < 3; m++) {
		const char *args[12] = {"cat", arch, "latest:big"};
		size_t n = 3;
		for (size_t i = 0; modes[m][i]; i++)
			args[n++] = modes[m][i];
		args[n] = NULL;
		run_opts o = {.stdout_path = fifo, .env = no_pass};
		/* the reader first: the spawn opens the FIFO for writing itself */
		int rd = open(fifo, O_RDONLY | O_NONBLOCK);
		cr_assert(rd >= 0);
		pid_t pid = amber_spawn(&o, args);
		char buf[4096];
		fcntl(rd, F_SETFL, 0);
		cr_assert(read(rd, buf, sizeof(buf)) > 0, "the command wrote nothing");
		usleep(200000); /* it now blocks on the full pipe, secrets used */
		cr_assert(!proc_has(pid, "cmdline", IT_PASSPHRASE, strlen(IT_PASSPHRASE)));
		cr_assert(!proc_has(pid, "environ", IT_PASSPHRASE, strlen(IT_PASSPHRASE)));
		cr_assert(!proc_has(pid, "cmdline", m0, 40), "a share in cmdline");
		cr_assert(!proc_has(pid, "environ", m0, 40), "a share in environ");
		cr_assert(!proc_has(pid, "cmdline", key, 32), "the key file in cmdline");
		cr_assert(!proc_has(pid, "environ", key, 32), "the key file in environ");
		cr_assert(proc_has(pid, "cmdline", "latest:big", 10), "not the command's cmdline");
		kill(pid, SIGTERM);
		close(rd);
		wait_exit(pid);
	}
	free(words);
	free(key);
	free(m0);
}

/*
 * Key memory that cannot be locked (RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK)
 * is said once, not ignored: libsodium alone would go on silently.
 */
Test(keys, key_memory_that_cannot_be_locked_is_reported_once)
{
	char *arch = archive_with_data();
	static const char *const no_lock[] = { "prlimit", "--memlock=0:0", "setpriv",
					       "--bounding-set=-ipc_lock", NULL };
	const char *args[] = { "cat", arch, "latest:file", NULL };
	run_result r;

	amber_a(&r, &(run_opts){ .prefix = no_lock }, args);
	assert_ok(&r, "cat without lockable memory");
	cr_assert_str_eq(r.out, GOOD);
#ifndef __SANITIZE_ADDRESS__
	cr_assert_eq(count_lines(r.err), 1, "one warning line expected: %s", r.err);
	cr_assert(strstr(r.err, "amberfs: warning: the archive key could not be locked in memory") &&
		  strstr(r.err, "RLIMIT_MEMLOCK"), "%s", r.err);
#else
	/* ASan intercepts mlock() and makes it a no-op that succeeds, so under
	 * it the failure cannot happen; the plain pass checks the warning. */
	cr_assert_str_eq(r.err, "", "%s", r.err);
#endif
	run_result_dispose(&r);

	amber_a(&r, &(run_opts){0}, args);
	assert_ok(&r, "cat with lockable memory");
	cr_assert_str_eq(r.err, "", "no warning when the key is locked: %s", r.err);
	run_result_dispose(&r);
	free(arch);
}
