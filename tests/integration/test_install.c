/*
 * What `meson install` leaves, used the way a new user uses it: the build
 * is installed into a scratch DESTDIR (nothing on the system changes), and
 * the installed amberfs, mount helper, bash completion and man pages are
 * run and read from there.  The layout is checked against where the system
 * looks: mount(8) for helpers in /sbin, bash-completion in its
 * completionsdir (or PREFIX/share, which it searches through
 * XDG_DATA_DIRS), man(1) in PREFIX/share/man.
 */
#include "helpers.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *mnt_to_unmount;

static void inst_fini(void)
{
	if (mnt_to_unmount) {
		run_result r;
		run_opts o = { .timeout = 30 };
		run_cmd(&r, &o, "fusermount3", "-u", "-z", mnt_to_unmount, NULL);
		run_result_dispose(&r);
	}
	itest_teardown();
}

TestSuite(install, .init = itest_setup, .fini = inst_fini, .timeout = 300);

/* The installed tree. */
typedef struct inst {
	char *dest;     /* DESTDIR */
	char *prefix;   /* the build's prefix, e.g. /usr/local */
	char *root;     /* dest + prefix */
	char *bin;      /* the installed amberfs, inside dest */
	char *build;    /* the build directory */
} inst;

static char *build_dir(void)
{
	char *b = strdup(IT.bin);
	char *s = strrchr(b, '/');
	cr_assert(s, "AMBERFS_BIN %s is not a path", IT.bin);
	*s = '\0';
	s = strrchr(b, '/'); /* BUILD/fs/amberfs */
	cr_assert(s);
	*s = '\0';
	return b;
}

static char *build_prefix(const char *build)
{
	char *p = xasprintf("%s/meson-info/intro-buildoptions.json", build);
	char *j = read_file(p, NULL);
	const char *k = strstr(j, "\"name\": \"prefix\", \"value\": \"");
	cr_assert(k, "no prefix in %s", p);
	k += strlen("\"name\": \"prefix\", \"value\": \"");
	char *v = strndup(k, strcspn(k, "\""));
	free(j);
	free(p);
	return v;
}

/* meson install --destdir IT.tmp/dest. */
static void install(inst *in)
{
	in->build = build_dir();
	in->prefix = build_prefix(in->build);
	in->dest = pjoin(IT.tmp, "dest");
	in->root = xasprintf("%s%s", in->dest, in->prefix);
	in->bin = xasprintf("%s/bin/amberfs", in->root);
	run_result r;
	run_opts o = { .timeout = 120 };
	run_cmd(&r, &o, "meson", "install", "-C", in->build, "--no-rebuild", "--quiet",
		"--destdir", in->dest, NULL);
	cr_assert_eq(r.status, 0, "meson install --destdir %s: exit %d: %s%s", in->dest, r.status,
		     r.out, r.err);
	run_result_dispose(&r);
}

static void assert_file(const char *path, int exec, const char *what)
{
	struct stat st;
	cr_assert(stat(path, &st) == 0, "%s: %s is not installed: %s", what, path, strerror(errno));
	cr_assert(S_ISREG(st.st_mode), "%s: %s is not a file", what, path);
	if (exec)
		cr_assert(st.st_mode & 0111, "%s: %s is not executable", what, path);
}

/* The helper as mount(8) finds it: /sbin (= /usr/sbin on merged /usr). */
static char *installed_helper(const inst *in, const char *name)
{
	const char *dirs[] = { "/sbin", "/usr/sbin" };
	for (size_t i = 0; i < 2; i++) {
		char *p = xasprintf("%s%s/%s", in->dest, dirs[i], name);
		if (access(p, F_OK) == 0)
			return p;
		free(p);
	}
	cr_assert(0, "%s is installed neither in /sbin nor in /usr/sbin (under %s): mount(8) "
		  "looks only there", name, in->dest);
	return NULL;
}

/*
 * bash-completion's completionsdir (from its pkg-config file, which derives
 * it from datadir) for our prefix, inside DESTDIR.
 */
static char *completion_file(const inst *in)
{
	run_result r;
	run_cmd(&r, NULL, "pkg-config", "--define-variable=datadir=/D", "--variable=completionsdir",
		"bash-completion", NULL);
	assert_ok(&r, "pkg-config bash-completion");
	r.out[strcspn(r.out, "\n")] = '\0';
	cr_assert(!strncmp(r.out, "/D/", 3), "completionsdir %s is not under datadir", r.out);
	char *comp = xasprintf("%s/share/%s/amberfs", in->root, r.out + 3);
	run_result_dispose(&r);
	return comp;
}

static void inst_dispose(inst *in)
{
	free(in->dest);
	free(in->prefix);
	free(in->root);
	free(in->bin);
	free(in->build);
}

Test(install, amberfs_helpers_man_pages_and_completion_go_where_they_are_found)
{
	inst in;
	install(&in);
	assert_file(in.bin, 1, "amberfs on PATH");
	char *cold = xasprintf("%s/bin/amberfs-coldsync", in.root);
	assert_file(cold, 1, "amberfs-coldsync next to amberfs (it runs bare 'amberfs')");
	run_result r;
	run_cmd(&r, NULL, in.bin, "--version", NULL);
	assert_ok(&r, "the installed amberfs --version");
	cr_assert(strstr(r.out, "amberfs "), "%s", r.out);
	run_result_dispose(&r);

	char *helper = installed_helper(&in, "mount.fuse.amberfs");
	assert_file(helper, 1, "mount.fuse.amberfs");
	char *alias = installed_helper(&in, "mount.amberfs");
	char target[PATH_MAX];
	ssize_t n = readlink(alias, target, sizeof(target) - 1);
	cr_assert(n > 0, "mount.amberfs should be a symlink to mount.fuse.amberfs");
	target[n] = '\0';
	cr_assert_str_eq(target, "mount.fuse.amberfs");
	/* the helper runs the amberfs installed with it: mount(8) passes no PATH */
	char *text = read_file(helper, NULL);
	char *final = xasprintf("'%s/bin/amberfs'", in.prefix);
	cr_assert(strstr(text, final), "the installed helper should run %s:\n%s", final, text);

	const char *pages[] = { "man1/amberfs.1", "man5/amberfs-format.5", "man8/mount.amberfs.8",
				"man3/libamber.3", NULL };
	for (const char *const *p = pages; *p; p++) {
		char *m = xasprintf("%s/share/man/%s", in.root, *p);
		assert_file(m, 0, "man page");
		free(m);
	}

	/* the new page renders cleanly (the others have their own checks) */
	char *lib3 = xasprintf("%s/share/man/man3/libamber.3", in.root);
	run_cmd(&r, NULL, "man", "--warnings", "-l", lib3, NULL);
	assert_ok(&r, lib3);
	cr_assert(r.out_len > 2000, "man -l %s printed almost nothing", lib3);
	cr_assert(!strstr(r.err, "warning"), "man -l %s: %s", lib3, r.err);
	run_result_dispose(&r);
	free(lib3);

	/* the example systemd unit, with its Documentation= pages found */
	char *unit_src = xasprintf("%s/share/doc/amberfs/examples/amberfs-vault.mount", in.root);
	char *unit = pjoin(IT.tmp, "mnt-vault.mount"); /* the name its Where= needs */
	char *utext = read_file(unit_src, NULL);
	write_str(unit, utext);
	char *manpath = xasprintf("MANPATH=%s/share/man", in.root);
	const char *menv[] = { manpath, NULL };
	run_opts mo = { .env = menv, .timeout = 60 };
	run_cmd(&r, &mo, "systemd-analyze", "verify", unit, NULL);
	cr_assert_eq(r.status, 0, "systemd-analyze verify of the installed example unit: %s%s",
		     r.out, r.err);
	run_result_dispose(&r);
	free(manpath);
	free(utext);
	free(unit);
	free(unit_src);

	/* bash-completion's completionsdir, relative to our prefix */
	char *comp = completion_file(&in);
	assert_file(comp, 0, "bash completion");
	free(comp);
	free(final);
	free(text);
	free(alias);
	free(helper);
	free(cold);
	inst_dispose(&in);
}

Test(install, installed_amberfs_and_mount_helper_mount_an_archive)
{
	inst in;
	install(&in);
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	char *f = pjoin(src, "a.txt");
	write_str(f, "alpha\n");
	char *arch = pjoin(IT.tmp, "archive");
	char *cache = xasprintf("AMBERFS_CACHE_DIR=%s", IT.cache);
	char *home = xasprintf("HOME=%s", IT.home);
	char *path = xasprintf("PATH=%s/bin:/usr/bin:/bin", in.root);
	char *prog = xasprintf("AMBERFS=%s", in.bin);
	const char *env[] = { cache, home, path, prog, "AMBERFS_PASSPHRASE_FILE", NULL };
	run_opts o = { .env = env, .timeout = 60 };
	run_result r;
	/* bare `amberfs`, as the README and amberfs-coldsync call it */
	const char *bare = "exec amberfs \"$@\"";
	run_cmd(&r, &o, "sh", "-c", bare, "sh", "init", "--plain", arch, NULL);
	assert_ok(&r, "amberfs init from the installed PATH");
	run_result_dispose(&r);
	run_cmd(&r, &o, "sh", "-c", bare, "sh", "snapshot", arch, src, "-m", "first", NULL);
	assert_ok(&r, "amberfs snapshot from the installed PATH");
	run_result_dispose(&r);

	char *helper = installed_helper(&in, "mount.fuse.amberfs");
	char *mnt = pjoin(IT.tmp, "mnt");
	mkdir_p(mnt, 0755);
	mnt_to_unmount = mnt;
	run_cmd(&r, &o, helper, arch, mnt, "-o", "rw,noauto,nofail", NULL);
	cr_assert_eq(r.status, 0, "installed %s %s %s: exit %d: %s", helper, arch, mnt, r.status,
		     r.err);
	run_result_dispose(&r);
	char *a = pjoin(mnt, "latest/a.txt");
	char *got = read_file(a, NULL);
	cr_assert_str_eq(got, "alpha\n");

	/* amberfs-coldsync finds the amberfs installed next to it, whatever PATH says */
	char *cold = xasprintf("%s/bin/amberfs-coldsync", in.root);
	char *copy = pjoin(IT.tmp, "copy");
	const char *bare_env[] = { cache, home, "PATH=/usr/bin:/bin", "AMBERFS_BIN", NULL };
	run_opts co = { .env = bare_env, .timeout = 120 };
	run_cmd(&r, &co, cold, arch, copy, NULL);
	cr_assert_eq(r.status, 0, "installed amberfs-coldsync without amberfs on PATH: exit %d: %s",
		     r.status, r.err);
	run_result_dispose(&r);
	free(copy);
	free(cold);
	run_cmd(&r, &o, "fusermount3", "-u", mnt, NULL);
	assert_ok(&r, "fusermount3 -u");
	run_result_dispose(&r);
	mnt_to_unmount = NULL;
	free(got);
	free(a);
	free(mnt);
	free(helper);
	free(prog);
	free(path);
	free(home);
	free(cache);
	free(arch);
	free(f);
	free(src);
	inst_dispose(&in);
}

/*
 * Complete each of lines[] (NULL-terminated) with the installed completion,
 * in one bash; out[i] gets the candidates of lines[i], one a line.
 */
static void complete(char **out, const inst *in, const char *cwd, const char *const *lines)
{
	char *comp = completion_file(in);
	static const char script[] =
		"source /usr/share/bash-completion/bash_completion || exit 9\n"
		"source \"$1\" || exit 9\n"
		"complete -p amberfs >/dev/null || exit 8\n"
		"shift\n"
		"for line; do\n"
		"  COMP_LINE=$line; COMP_POINT=${#line}\n"
		"  read -ra COMP_WORDS <<<\"$line\"\n"
		"  [[ $line == *' ' ]] && COMP_WORDS+=('')\n"
		"  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
		"  COMPREPLY=()\n"
		"  _amberfs amberfs \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"\n"
		"  printf '%s\\n' \"${COMPREPLY[@]}\"\n"
		"  printf '%%%%\\n'\n"
		"done\n";
	char *path = xasprintf("PATH=%s/bin:/usr/bin:/bin", in->root);
	char *cache = xasprintf("AMBERFS_CACHE_DIR=%s", IT.cache);
	const char *env[] = { path, cache, NULL };
	run_opts o = { .env = env, .cwd = cwd, .timeout = 60 };
	const char *argv[32] = { "bash", "-c", script, "complete", comp };
	size_t n = 5, k = 0;
	for (const char *const *l = lines; *l; l++)
		argv[n++] = *l;
	argv[n] = NULL;
	run_result r;
	run_argv(&r, &o, argv);
	cr_assert_eq(r.status, 0, "completing: exit %d: %s", r.status, r.err);
	char *s = r.out;
	for (char *e = strstr(s, "%%\n"); e && lines[k]; e = strstr(s, "%%\n")) {
		out[k++] = strndup(s, (size_t)(e - s));
		s = e + 3;
	}
	cr_assert(lines[k] == NULL, "completion printed %zu answers: %s", k, r.out);
	run_result_dispose(&r);
	free(cache);
	free(path);
	free(comp);
}

static void assert_candidate(const char *got, const char *want, const char *line)
{
	char *w = xasprintf("%s\n", want);
	int found = !strncmp(got, w, strlen(w));
	char *n = xasprintf("\n%s\n", want);
	found = found || strstr(got, n);
	cr_assert(found, "completing '%s' should offer '%s'; got:\n%s", line, want, got);
	free(n);
	free(w);
}

Test(install, bash_completion_offers_commands_options_archives_snapshots_and_tags)
{
	inst in;
	install(&in);
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	char *f = pjoin(src, "a.txt");
	write_str(f, "alpha\n");
	char *arch = pjoin(IT.tmp, "vault");
	amber_init_archive(arch, 1); /* plain: `log` needs no passphrase */
	char id[41];
	amber_snapshot_ok(id, arch, src, NULL);
	run_result r;
	amber(&r, "tag", arch, "latest", "halt-2026", NULL);
	assert_ok(&r, "amberfs tag");
	run_result_dispose(&r);

	const char *lines[] = { "amberfs sn", "amberfs snapshot --me", "amberfs verify --",
				"amberfs log va", "amberfs ls vault ", "amberfs diff vault latest ha",
				"amberfs key ", NULL };
	char *got[8] = { NULL };
	complete(got, &in, IT.tmp, lines);
	assert_candidate(got[0], "snapshot", lines[0]);
	assert_candidate(got[1], "--message", lines[1]);
	assert_candidate(got[2], "--read-data", lines[2]);
	assert_candidate(got[3], "vault", lines[3]);
	assert_candidate(got[4], "latest", lines[4]);
	assert_candidate(got[4], "halt-2026", lines[4]);
	assert_candidate(got[4], id, lines[4]);
	assert_candidate(got[5], "halt-2026", lines[5]);
	assert_candidate(got[6], "show-public", lines[6]);
	for (size_t i = 0; i < 8; i++)
		free(got[i]);
	free(arch);
	free(f);
	free(src);
	inst_dispose(&in);
}

/* Every function of the public header(s) is named in libamber(3). */
Test(install, libamber_3_names_every_public_function)
{
	const char *headers[] = { "include/amber.h", "include/amber_archive.h",
				  "include/amber_snapshot.h", "include/amber_read.h",
				  "include/amber_restore.h", "include/amber_keys.h",
				  "include/amber_slip39.h", "include/amber_verify.h", NULL };
	char *page = read_file(AMBER_SOURCE_DIR "/man/libamber.3", NULL);
	int seen = 0;
	for (const char *const *h = headers; *h; h++) {
		char *p = xasprintf("%s/%s", AMBER_SOURCE_DIR, *h);
		cr_assert(access(p, R_OK) == 0, "%s is gone: update this list", *h);
		char *text = read_file(p, NULL);
		for (char *s = strstr(text, " amber_"); s; s = strstr(s + 1, " amber_")) {
			size_t n = strspn(s + 1, "abcdefghijklmnopqrstuvwxyz_0123456789");
			if (s[1 + n] != '(')
				continue;
			char *name = strndup(s + 1, n);
			char *as_ref = xasprintf("%s ()", name);
			char *as_b = xasprintf("%s \"()", name);
			cr_assert(strstr(page, as_ref) || strstr(page, as_b),
				  "libamber(3) does not describe %s (declared in %s)", name, *h);
			seen++;
			free(as_b);
			free(as_ref);
			free(name);
		}
		free(text);
		free(p);
	}
	cr_assert(seen > 40, "only %d public functions found in the headers", seen);
	free(page);
}
