/*
 * Restoring a snapshot (or a path in it) into a new or empty directory.
 *
 * Everything is created relative to directory descriptors, never through
 * a path that a symlink written earlier in the same restore could redirect.
 * Metadata goes on in the order that keeps it: data, owner (chown clears
 * setuid), mode, xattrs, times; directories get theirs after their
 * children, so their mtimes and restrictive modes survive.  Runs of zeros
 * become holes, so sparse files stay sparse.
 */
#include "amber.h"
#include "error.h"
#include "manifest.h"
#include "reader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define BLOCK ((size_t)4 << 20)

typedef struct linkmap {
	uint64_t group;
	int dfd;          /* dup of the directory holding the first member */
	char *name;
} linkmap;

typedef struct rest {
	amber_snapshot *s;
	const amber_restore_opts *o;
	amber_stats st;
	amber_restore_skipped skipped;
	int owner;
	uint8_t *buf;
	linkmap *links;
	size_t nlinks, caplinks;
	char path[8192];
	struct timespec last;
} rest;

static void warn(rest *r, const char *what)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
	r->st.errors++;
	if (r->o->warn)
		r->o->warn(r->path, msg, r->o->payload);
}

static void progress(rest *r, int force)
{
	struct timespec now;

	if (!r->o->progress)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!force && (now.tv_sec - r->last.tv_sec) * 1000000000L + (now.tv_nsec - r->last.tv_nsec) <
			      100000000L)
		return;
	r->last = now;
	r->o->progress(&r->st, r->path, r->o->payload);
}

static int all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int write_data(rest *r, int fd, const amber_entry *e)
{
	uint64_t off = 0;

	while (off < e->size) {
		size_t n = 0;
		int rc;

		amber_file_prefetch(r->s, e, off + BLOCK);
		rc = amber_file_read(&n, r->s, e, off, r->buf, BLOCK);

		if (rc < 0)
			return amber_fail(rc, "%s: %s", r->path, amber_error_last());
		if (n == 0)
			return amber_fail(AMBER_ECORRUPT, "%s: shorter than its size", r->path);
		if (all_zero(r->buf, n)) {
			if (lseek(fd, (off_t)n, SEEK_CUR) < 0)
				return amber_fail_errno("%s: seek failed", r->path);
		} else {
			for (size_t done = 0; done < n;) {
				ssize_t w = write(fd, r->buf + done, n - done);

				if (w < 0 && errno == EINTR)
					continue;
				if (w < 0)
					return amber_fail_errno("cannot write %s", r->path);
				done += (size_t)w;
			}
		}
		off += n;
		r->st.bytes += n;
		progress(r, 0);
	}
	if (ftruncate(fd, (off_t)e->size) < 0)
		return amber_fail_errno("cannot write %s", r->path);
	return 0;
}

/* e's mode, without setuid and setgid on non-directories in safe mode. */
static mode_t safe_mode(rest *r, const amber_entry *e)
{
	if (!r->o->safe || e->type == AMBER_T_DIR || !(e->mode & (S_ISUID | S_ISGID)))
		return e->mode;
	r->skipped.setid++;
	return e->mode & ~(mode_t)(S_ISUID | S_ISGID);
}

/* In safe mode, attributes that grant privileges or steer the system are left out. */
static int xattr_allowed(rest *r, const char *name)
{
	if (!r->o->safe || (strncmp(name, "security.", 9) != 0 && strncmp(name, "trusted.", 8) != 0))
		return 1;
	r->skipped.xattrs++;
	return 0;
}

/*
 * Owner, mode, xattrs and times of e on fd.  fd is open on the node itself:
 * a real descriptor for files and directories, an O_PATH one (opath) for
 * the rest, reached through /proc/self/fd, which lands on the node even
 * when it is a symlink and never follows what it points to.
 */
static void apply_meta(rest *r, const amber_entry *e, int fd, int opath)
{
	struct timespec ts[2];
	char proc[64];
	int is_link = e->type == AMBER_T_SYMLINK;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (r->owner && fchownat(fd, "", e->uid, e->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		warn(r, "cannot set owner");
	if (!is_link && (opath ? chmod(proc, safe_mode(r, e)) : fchmod(fd, safe_mode(r, e))) < 0)
		warn(r, "cannot set mode");
	for (size_t i = 0; i < e->nxattrs; i++) {
		const amber_xattr *x = &e->xattrs[i];

		if (!xattr_allowed(r, x->name))
			continue;
		if ((opath ? setxattr(proc, x->name, x->value, x->value_len, 0) :
			     fsetxattr(fd, x->name, x->value, x->value_len, 0)) < 0)
			warn(r, "cannot set extended attribute");
	}
	ts[0].tv_sec = ts[1].tv_sec = e->mtime_sec;
	ts[0].tv_nsec = ts[1].tv_nsec = e->mtime_nsec;
	if ((opath ? utimensat(AT_FDCWD, proc, ts, 0) : futimens(fd, ts)) < 0)
		warn(r, "cannot set times");
}

/*
 * Open the node just made at dfd/name without following a symlink and
 * check it is still the one made: whoever can write that directory (DEST
 * itself may belong to another user) can swap it for a symlink, a link to
 * another node or a node of their own between its creation and here.
 * @return the descriptor or a negative error.
 */
static int open_created(rest *r, int dfd, const char *name, mode_t type, int flags)
{
	struct stat st;
	int fd = openat(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return amber_fail_errno("cannot open %s", r->path);
	if (fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == type && st.st_uid == geteuid() &&
	    (type == S_IFDIR || st.st_nlink == 1))
		return fd;
	close(fd);
	return amber_fail(AMBER_ERROR, "%s was replaced by something else while being restored: "
			  "restore into a directory that nobody else can write", r->path);
}

static linkmap *link_find(rest *r, uint64_t group)
{
	for (size_t i = 0; i < r->nlinks; i++)
		if (r->links[i].group == group)
			return &r->links[i];
	return NULL;
}

static int link_add(rest *r, uint64_t group, int dfd, const char *name)
{
	if (r->nlinks == r->caplinks) {
		size_t cap = r->caplinks ? r->caplinks * 2 : 16;
		linkmap *n = realloc(r->links, cap * sizeof(*n));

		if (!n)
			return amber_fail(AMBER_ERROR, "out of memory");
		r->links = n;
		r->caplinks = cap;
	}
	r->links[r->nlinks].group = group;
	r->links[r->nlinks].dfd = dup(dfd);
	r->links[r->nlinks].name = strdup(name);
	r->nlinks++;
	return 0;
}

static int restore_file(rest *r, const amber_entry *e, int dfd)
{
	linkmap *l = e->hardlink ? link_find(r, e->hardlink) : NULL;
	int fd, rc;

	if (l) {
		if (linkat(l->dfd, l->name, dfd, e->name, 0) < 0)
			return amber_fail_errno("cannot create hard link %s", r->path);
		return 0;
	}
	fd = openat(dfd, e->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return amber_fail_errno("cannot create %s", r->path);
	rc = write_data(r, fd, e);
	if (rc == 0)
		apply_meta(r, e, fd, 0);
	close(fd);
	if (rc == 0 && e->hardlink)
		rc = link_add(r, e->hardlink, dfd, e->name);
	r->st.files++;
	return rc;
}

static const mode_t special_type[] = {
	[AMBER_T_SYMLINK] = S_IFLNK, [AMBER_T_FIFO] = S_IFIFO,
	[AMBER_T_CHR] = S_IFCHR, [AMBER_T_BLK] = S_IFBLK,
};

static int restore_special(rest *r, const amber_entry *e, int dfd)
{
	int rc = 0, fd;

	if (e->type == AMBER_T_SYMLINK)
		rc = symlinkat(e->target, dfd, e->name);
	else if (e->type == AMBER_T_FIFO)
		rc = mkfifoat(dfd, e->name, 0600);
	else
		rc = mknodat(dfd, e->name, (e->type == AMBER_T_CHR ? S_IFCHR : S_IFBLK) | 0600,
			     (dev_t)e->rdev);
	if (rc < 0)
		return amber_fail_errno("cannot create %s", r->path);
	r->st.files++;
	fd = open_created(r, dfd, e->name, special_type[e->type], O_PATH);
	if (fd < 0)
		return fd;
	apply_meta(r, e, fd, 1);
	close(fd);
	return 0;
}

static int restore_tree(rest *r, const amber_entry *dir, int dfd);

static int restore_entry(rest *r, const amber_entry *e, int dfd)
{
	size_t l = strlen(r->path);
	int rc;

	snprintf(r->path + l, sizeof(r->path) - l, "/%s", e->name);
	if (e->type == AMBER_T_DIR) {
		int fd = -1;

		rc = mkdirat(dfd, e->name, 0700) < 0 ? amber_fail_errno("cannot create %s", r->path)
						     : 0;
		if (rc == 0 && (fd = open_created(r, dfd, e->name, S_IFDIR,
						      O_RDONLY | O_DIRECTORY)) < 0)
			rc = fd;
		if (rc == 0)
			rc = restore_tree(r, e, fd);
		if (fd >= 0)
			close(fd);
	} else if (e->type == AMBER_T_REG) {
		rc = restore_file(r, e, dfd);
	} else if (r->o->safe && (e->type == AMBER_T_CHR || e->type == AMBER_T_BLK)) {
		r->skipped.devices++;
		rc = 0;
	} else {
		rc = restore_special(r, e, dfd);
	}
	progress(r, 0);
	r->path[l] = '\0';
	return rc;
}

/* Children of `dir` into the open directory dfd, then dir's own metadata. */
static int restore_tree(rest *r, const amber_entry *dir, int dfd)
{
	amber_dir *d = NULL;
	int rc = amber_dir_open(&d, r->s, dir);

	for (size_t i = 0; rc == 0 && i < amber_dir_count(d); i++) {
		/* decode the next small files while this one is written */
		for (size_t j = i + 1; j < i + 4 && j < amber_dir_count(d); j++)
			amber_file_prefetch(r->s, amber_dir_entry(d, j), 0);
		rc = restore_entry(r, amber_dir_entry(d, i), dfd);
	}
	amber_dir_free(d);
	if (rc == 0)
		apply_meta(r, dir, dfd, 0);
	r->st.dirs++;
	return rc;
}

static int dest_ready(const char *dest)
{
	DIR *d;
	struct dirent *de;
	int empty = 1;

	if (mkdir(dest, 0700) == 0)
		return 0;
	if (errno != EEXIST)
		return amber_fail_errno("cannot create %s", dest);
	d = opendir(dest);
	if (!d)
		return amber_fail(AMBER_EEXISTS, "%s exists and is not a directory: restore needs "
				  "a new or empty directory", dest);
	while (empty && (de = readdir(d)))
		empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
	closedir(d);
	if (!empty)
		return amber_fail(AMBER_EEXISTS, "%s is not empty: restore needs a new or empty "
				  "directory", dest);
	return 0;
}

static void rest_dispose(rest *r)
{
	for (size_t i = 0; i < r->nlinks; i++) {
		close(r->links[i].dfd);
		free(r->links[i].name);
	}
	free(r->links);
	free(r->buf);
}

int amber_restore(amber_stats *stats, amber_snapshot *s, const char *path, const char *dest,
		  const amber_restore_opts *opts)
{
	static const amber_restore_opts defaults;
	rest r = {.s = s, .o = opts ? opts : &defaults};
	amber_entry *e = NULL;
	int fd = -1;
	int rc = amber_stat(&e, s, path ? path : "");

	r.owner = geteuid() == 0 && !r.o->no_owner && !r.o->safe;
	if (rc == 0)
		rc = dest_ready(dest);
	if (rc == 0 && !(r.buf = malloc(BLOCK)))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (rc == 0 && (fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		rc = amber_fail_errno("cannot open %s", dest);
	snprintf(r.path, sizeof(r.path), "%s", dest);
	if (rc == 0 && e->type == AMBER_T_DIR)
		rc = restore_tree(&r, e, fd);
	else if (rc == 0)
		rc = restore_entry(&r, e, fd);
	if (fd >= 0)
		close(fd);
	progress(&r, 1);
	if (stats)
		*stats = r.st;
	if (r.o->skipped)
		*r.o->skipped = r.skipped;
	rest_dispose(&r);
	amber_entry_free(e);
	return rc;
}
