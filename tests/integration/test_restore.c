/*
 * `amberfs restore` against hostile archives and hostile destinations.
 *
 * Swapping a node for a symlink between its creation and its metadata is
 * a race; here it is made deterministic by running the real binary under
 * ptrace and doing the swap at the exit of the mknodat that created it.
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

TestSuite(restore, .init = itest_setup, .fini = itest_teardown, .timeout = 600);

/* The user who owns DEST in the attacks: not root, not us. */
#define OTHER_UID 4242

static const char *const no_passphrase_env[] = { "AMBERFS_PASSPHRASE_FILE", NULL };

/* A plain archive holding a snapshot of src; malloc'd path. */
static char *plain_archive_of(const char *src)
{
	char *arch = pjoin(IT.tmp, "archive");
	run_opts o = { .env = no_passphrase_env };
	run_result r;

	amber_init_archive(arch, 1);
	amber_o(&r, &o, "snapshot", arch, src, NULL);
	assert_ok(&r, "snapshot");
	run_result_dispose(&r);
	return arch;
}

/* ---- the ptrace harness --------------------------------------------------- */

typedef struct swap_plan {
	const char *dest;      /* the restore's DEST */
	const char *name;      /* entry of DEST to swap once created */
	const char *target;    /* what the planted symlink points to */
	int swapped;
} swap_plan;

static void read_child_str(char *out, size_t cap, pid_t pid, uint64_t addr)
{
	struct iovec local = { out, cap - 1 }, remote = { (void *)(uintptr_t)addr, cap - 1 };
	ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);

	out[n > 0 ? (size_t)n : 0] = '\0';
	out[cap - 1] = '\0';
}

/* At the exit of a successful mknodat(…, plan->name, …): replace the node. */
static void on_syscall(swap_plan *plan, pid_t pid, uint64_t *nr, uint64_t *path_arg)
{
	struct __ptrace_syscall_info si;
	char path[4096];

	if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof(si), &si) <= 0)
		return;
	if (si.op == PTRACE_SYSCALL_INFO_ENTRY) {
		*nr = si.entry.nr;
		*path_arg = si.entry.args[1];
		return;
	}
	if (si.op != PTRACE_SYSCALL_INFO_EXIT || *nr != SYS_mknodat || si.exit.rval != 0)
		return;
	read_child_str(path, sizeof(path), pid, *path_arg);
	if (strcmp(path, plan->name) != 0 || plan->swapped)
		return;
	char *at = pjoin(plan->dest, plan->name);
	cr_assert(unlink(at) == 0, "unlink %s: %s", at, strerror(errno));
	cr_assert(symlink(plan->target, at) == 0, "symlink %s: %s", at, strerror(errno));
	plan->swapped = 1;
	free(at);
}

/* Run `amberfs restore ARCH latest plan->dest` traced; @return its exit code. */
static int restore_with_swap(const char *arch, swap_plan *plan)
{
	pid_t pid = fork();
	int st, sig = 0;
	uint64_t nr = 0, path_arg = 0;

	cr_assert(pid >= 0);
	if (pid == 0) {
		char *errpath = pjoin(IT.tmp, "restore.err");
		int null = open("/dev/null", O_RDWR);
		int err = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(null, 0);
		dup2(err, 2);
		unsetenv("AMBERFS_PASSPHRASE_FILE");
		ptrace(PTRACE_TRACEME, 0, NULL, NULL);
		execl(IT.bin, IT.bin, "restore", arch, "latest", plan->dest, (char *)NULL);
		_exit(127);
	}
	cr_assert(waitpid(pid, &st, 0) == pid && WIFSTOPPED(st), "tracee did not stop at exec");
	cr_assert(ptrace(PTRACE_SETOPTIONS, pid, NULL,
			 (void *)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) == 0);
	for (;;) {
		cr_assert(ptrace(PTRACE_SYSCALL, pid, NULL, (void *)(uintptr_t)sig) == 0);
		cr_assert(waitpid(pid, &st, 0) == pid);
		if (WIFEXITED(st))
			return WEXITSTATUS(st);
		if (WIFSIGNALED(st))
			return 128 + WTERMSIG(st);
		sig = 0;
		if (WSTOPSIG(st) == (SIGTRAP | 0x80))
			on_syscall(plan, pid, &nr, &path_arg);
		else if (WSTOPSIG(st) != SIGTRAP)
			sig = WSTOPSIG(st);
	}
}

/*
 * Restore, as root, a tree whose entry `name` is a node of mode 0666 into a
 * DEST that another user owns, who swaps the node for a symlink to a
 * root-owned 0600 file outside DEST right after it is created.  The file
 * keeps its mode, owner and content, and restore says what happened.
 */
static void swapped_node_is_left_alone(const char *name, mode_t type)
{
	char *src = pjoin(IT.tmp, "src"), *node = pjoin(src, name);
	char *secret = pjoin(IT.tmp, "secret"), *dest = pjoin(IT.tmp, "dest");
	struct stat st;

	mkdir_p(src, 0755);
	cr_assert(mknod(node, type | 0666, type == S_IFIFO ? 0 : makedev(1, 3)) == 0,
		  "mknod %s: %s", node, strerror(errno));
	cr_assert(chmod(node, 0666) == 0);
	write_str(secret, "root only\n");
	cr_assert(chmod(secret, 0600) == 0);
	char *arch = plain_archive_of(src);
	mkdir_p(dest, 0755);
	cr_assert(chown(dest, OTHER_UID, OTHER_UID) == 0);

	swap_plan plan = { .dest = dest, .name = name, .target = secret };
	int status = restore_with_swap(arch, &plan);

	cr_assert(plan.swapped, "restore never created %s with mknodat", name);
	cr_assert(stat(secret, &st) == 0);
	cr_expect_eq(st.st_mode & 07777, 0600, "the outside file's mode became %o",
		     st.st_mode & 07777);
	cr_expect_eq(st.st_uid, 0, "the outside file's owner became %u", st.st_uid);
	char *text = read_file(secret, NULL);
	cr_expect_str_eq(text, "root only\n");
	char *errpath = pjoin(IT.tmp, "restore.err"), *err = read_file(errpath, NULL);
	cr_expect_eq(status, 1, "restore should fail on the swapped node, exit %d: %s", status,
		     err);
	cr_expect(strstr(err, "was replaced"), "restore should name the swap: %s", err);
	free(err);
	free(errpath);
	free(text);
	free(arch);
	free(node);
	free(src);
	free(secret);
	free(dest);
}

Test(restore, fifo_swapped_for_symlink_does_not_chmod_its_target)
{
	swapped_node_is_left_alone("pipe", S_IFIFO);
}

Test(restore, device_swapped_for_symlink_does_not_chmod_its_target)
{
	swapped_node_is_left_alone("null", S_IFCHR);
}

/* ---- --safe ------------------------------------------------------------------ */

/* A valid VFS_CAP_REVISION_2 security.capability value granting cap_net_raw. */
static const unsigned char cap_net_raw[20] = { 0x01, 0, 0, 0x02, 0, 0x20, 0, 0 };

static void setx(const char *dir, const char *name, const char *attr, const void *v,
		 size_t len)
{
	char *p = pjoin(dir, name);
	cr_assert(lsetxattr(p, attr, v, len, 0) == 0, "setxattr %s %s: %s", attr, p,
		  strerror(errno));
	free(p);
}

static void make_at(const char *dir, const char *name, mode_t mode, dev_t rdev, uid_t uid)
{
	char *p = pjoin(dir, name);
	if (S_ISREG(mode))
		write_str(p, "#!/bin/sh\n");
	else
		cr_assert(mknod(p, mode, rdev) == 0, "mknod %s: %s", p, strerror(errno));
	cr_assert(lchown(p, uid, uid) == 0 && chmod(p, mode & 07777) == 0);
	free(p);
}

/* Devices, setuid/setgid files and privileged xattrs, as an attacker would ship them. */
static char *privileged_archive(void)
{
	char *src = pjoin(IT.tmp, "src");
	mkdir_p(src, 0755);
	make_at(src, "null", S_IFCHR | 0666, makedev(1, 3), 0);
	make_at(src, "loop", S_IFBLK | 0660, makedev(7, 200), 0);
	make_at(src, "su", S_IFREG | 04755, 0, 0);
	make_at(src, "sg", S_IFREG | 02755, 0, 0);
	make_at(src, "cap", S_IFREG | 0755, 0, 0);
	make_at(src, "theirs", S_IFREG | 0644, 0, 1234);
	setx(src, "cap", "security.capability", cap_net_raw, sizeof(cap_net_raw));
	setx(src, "cap", "trusted.overlay.opaque", "y", 1);
	setx(src, "cap", "user.note", "kept", 4);
	char *arch = plain_archive_of(src);
	free(src);
	return arch;
}

static struct stat lstat_in(const char *dir, const char *name)
{
	struct stat st;
	char *p = pjoin(dir, name);
	cr_assert(lstat(p, &st) == 0, "lstat %s: %s", p, strerror(errno));
	free(p);
	return st;
}

static ssize_t getx(const char *dir, const char *name, const char *attr)
{
	char buf[256], *p = pjoin(dir, name);
	ssize_t n = lgetxattr(p, attr, buf, sizeof(buf));
	free(p);
	return n;
}

Test(restore, default_restore_as_root_keeps_devices_setid_and_capabilities)
{
	char *arch = privileged_archive(), *dest = pjoin(IT.tmp, "dest");
	run_opts o = { .env = no_passphrase_env };
	run_result r;

	amber_o(&r, &o, "restore", arch, "latest", dest, NULL);
	assert_ok(&r, "restore");
	cr_expect_str_eq(r.err, "");
	cr_expect(S_ISCHR(lstat_in(dest, "null").st_mode));
	cr_expect_eq(lstat_in(dest, "null").st_rdev, makedev(1, 3));
	cr_expect(S_ISBLK(lstat_in(dest, "loop").st_mode));
	cr_expect_eq(lstat_in(dest, "su").st_mode & 07777, 04755);
	cr_expect_eq(lstat_in(dest, "sg").st_mode & 07777, 02755);
	cr_expect_eq(getx(dest, "cap", "security.capability"), (ssize_t)sizeof(cap_net_raw));
	cr_expect_eq(getx(dest, "cap", "trusted.overlay.opaque"), 1);
	cr_expect_eq(lstat_in(dest, "theirs").st_uid, 1234);
	run_result_dispose(&r);
	free(arch);
	free(dest);
}

Test(restore, safe_restore_drops_devices_setid_privileged_xattrs_and_owners)
{
	char *arch = privileged_archive(), *dest = pjoin(IT.tmp, "dest"), *p;
	run_opts o = { .env = no_passphrase_env };
	run_result r;

	amber_o(&r, &o, "restore", "--safe", arch, "latest", dest, NULL);
	assert_ok(&r, "restore --safe");
	p = pjoin(dest, "null");
	cr_expect(access(p, F_OK) != 0, "--safe created the device node %s", p);
	free(p);
	p = pjoin(dest, "loop");
	cr_expect(access(p, F_OK) != 0, "--safe created the device node %s", p);
	free(p);
	cr_expect_eq(lstat_in(dest, "su").st_mode & 07777, 0755);
	cr_expect_eq(lstat_in(dest, "sg").st_mode & 07777, 0755);
	cr_expect_eq(getx(dest, "cap", "security.capability"), -1);
	cr_expect_eq(getx(dest, "cap", "trusted.overlay.opaque"), -1);
	cr_expect_eq(getx(dest, "cap", "user.note"), 4, "--safe dropped an ordinary xattr");
	cr_expect_eq(lstat_in(dest, "theirs").st_uid, getuid(), "--safe restored an owner");
	cr_expect(strstr(r.err, "amberfs: --safe: 2 device node(s) not created\n"), "%s", r.err);
	cr_expect(strstr(r.err, "amberfs: --safe: setuid/setgid bits cleared on 2 file(s)\n"),
		  "%s", r.err);
	cr_expect(strstr(r.err, "amberfs: --safe: 2 security.*/trusted.* xattr(s) not set\n"),
		  "%s", r.err);
	run_result_dispose(&r);
	free(arch);
	free(dest);
}

/* ---- deep and heavy trees ------------------------------------------------ */

/* Make dir/d/d/.../d, `levels` directories, each holding `xattrs` 64 KiB values. */
static void make_chain(const char *dir, int levels, int xattrs)
{
	static unsigned char value[65536];
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	cr_assert(fd >= 0, "open %s: %s", dir, strerror(errno));
	for (int i = 0; i < levels; i++) {
		cr_assert(mkdirat(fd, "d", 0755) == 0, "mkdir level %d: %s", i, strerror(errno));
		int sub = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		cr_assert(sub >= 0);
		close(fd);
		fd = sub;
		for (int k = 0; k < xattrs; k++) {
			char name[32];
			snprintf(name, sizeof(name), "user.big%02d", k);
			memset(value, 'a' + k % 26, sizeof(value));
			cr_assert(fsetxattr(fd, name, value, sizeof(value), 0) == 0,
				  "setxattr at level %d: %s", i, strerror(errno));
		}
	}
	close(fd);
}

/*
 * The deep and heavy trees live in a tmpfs: it holds 2 MiB of xattrs per
 * inode, makes thousands of directories quickly, and is removed by
 * unmounting, whatever the depth.
 */
static char *test_tmpfs(void)
{
	char *t = pjoin(IT.tmp, "tmpfs");

	mkdir_p(t, 0700);
	cr_assert(mount("amberfs-test", t, "tmpfs", 0, "size=1g") == 0, "mount tmpfs: %s",
		  strerror(errno));
	return t;
}

static void unmount_tmpfs(void)
{
	char *t = IT.tmp ? pjoin(IT.tmp, "tmpfs") : NULL;
	if (t)
		umount2(t, MNT_DETACH);
	free(t);
	itest_teardown();
}

/* A plain archive of src snapshotted with a stack deep enough for its nesting. */
static char *deep_archive_of(const char *src)
{
	char *arch = pjoin(IT.tmp, "archive");
	static const char *const big_stack[] = { "prlimit", "--stack=1073741824", NULL };
	run_opts o = { .env = no_passphrase_env, .prefix = big_stack };
	run_result r;

	amber_init_archive(arch, 1);
	amber_o(&r, &o, "snapshot", arch, src, NULL);
	assert_ok(&r, "snapshot of a deep tree");
	run_result_dispose(&r);
	return arch;
}

/* As deep as an archive holds (amberfs-format(5)): restored whole.  Deeper
 * archives only a hostile or old writer makes: see the hostile tests. */
Test(restore, nesting_as_deep_as_an_archive_holds_restores, .fini = unmount_tmpfs)
{
	char *t = test_tmpfs(), *src = pjoin(t, "src"), *dest = pjoin(t, "dest");
	run_opts o = { .env = no_passphrase_env };
	run_result r;

	mkdir_p(src, 0755);
	make_chain(src, 1024, 0);
	char *arch = deep_archive_of(src);
	amber_o(&r, &o, "restore", arch, "latest", dest, NULL);
	assert_ok(&r, "restore of 1024 nested directories");
	int fd = open(dest, O_RDONLY | O_DIRECTORY), levels = 0, sub;
	while ((sub = openat(fd, "d", O_RDONLY | O_DIRECTORY)) >= 0) {
		close(fd);
		fd = sub;
		levels++;
	}
	close(fd);
	cr_expect_eq(levels, 1024);
	run_result_dispose(&r);
	free(arch);
	free(t);
	free(src);
	free(dest);
}

/* Run amberfs restore ARCH latest DEST; @return its peak RSS in KiB, *status its exit. */
static long restore_peak_kib(const char *arch, const char *dest, int *status)
{
	struct rusage ru;
	int st;
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		const char *asan = getenv("ASAN_OPTIONS");
		char *opts = xasprintf("%s%squarantine_size_mb=0", asan ? asan : "",
				       asan ? ":" : "");
		setenv("ASAN_OPTIONS", opts, 1);
		unsetenv("AMBERFS_PASSPHRASE_FILE");
		execl(IT.bin, IT.bin, "restore", arch, "latest", dest, (char *)NULL);
		_exit(127);
	}
	cr_assert(wait4(pid, &st, 0, &ru) == pid);
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	return ru.ru_maxrss;
}

Test(restore, nested_directories_with_big_xattrs_restore_in_bounded_memory,
     .fini = unmount_tmpfs)
{
	char *t = test_tmpfs(), *src = pjoin(t, "src"), *dest = pjoin(t, "dest");
	int status;

	mkdir_p(src, 0755);
	/* 100 levels of 32 64 KiB xattrs: 200 MiB of metadata in a 200 KiB archive */
	make_chain(src, 100, 32);
	char *arch = plain_archive_of(src);
	long kib = restore_peak_kib(arch, dest, &status);
	cr_assert_eq(status, 0, "restore exited %d", status);
	cr_expect_lt(kib, 64L << 10, "restore peaked at %ld MiB", kib >> 10);
	char *deepest = xasprintf("%s%s", dest, "/d/d/d/d/d/d/d/d/d/d");
	cr_expect_eq(getxattr(deepest, "user.big31", NULL, 0), 65536,
		     "the xattrs were not restored");
	free(deepest);
	free(arch);
	free(t);
	free(src);
	free(dest);
}
