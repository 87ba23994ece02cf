/*
 * Restoring a snapshot (or a path in it) into a new or empty directory.
 *
 * Everything is created relative to directory descriptors, never through
 * a path that a symlink written earlier in the same restore could redirect.
 * Metadata goes on in the order that keeps it: data, owner (chown clears
 * setuid), mode, xattrs, times; directories get theirs after their
 * children, so their mtimes and restrictive modes survive (but for ACLs,
 * their xattrs go on when they are made; see restore_tree).  Metadata is
 * set through a descriptor of the node itself, opened without following
 * symlinks and checked to be the node just made, never through a name.
 * Runs of zeros become holes, so sparse files stay sparse.
 *
 * Data is written by a few worker threads, several files (and, for a large
 * file, several ranges of it) in flight: the walking thread creates each
 * file (so every name is still made relative to a checked directory
 * descriptor), sets its size and hands the descriptor to the workers, which
 * decode and write ranges with pwrite and, when the last range of a file is
 * done, set its metadata and close it (small files go to them in batches,
 * see batch_add).  Each file job owns a copy of its
 * entry, so the walk never waits for the workers: it goes on to the next
 * directory while the files of the last ones are still being written, and
 * the workers also read ahead the listings of the next few directories to
 * be entered (restore_tree).  A directory's own metadata (mode, owner,
 * times, ACLs) may so go on while its files are still being written: that
 * changes nothing of it, since the workers write through descriptors the
 * walk opened and no name in it is made or removed after its children are
 * created.  Nothing is synced per file; one syncfs at the end makes the
 * whole restore durable before amber_restore returns (a thread starts the
 * disk earlier, see struct flusher).
 */
#include "amber.h"
#include "error.h"
#include "manifest.h"
#include "pool.h"
#include "stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define BLOCK ((size_t)4 << 20)
/* Workers and the bytes in flight: a file holds a descriptor until it is
 * done, so each counts FILE_COST besides its data, which bounds the open
 * descriptors (IN_FLIGHT / FILE_COST) as well as the memory. */
#define WORKERS_MAX 8
#define IN_FLIGHT ((size_t)48 << 20)
#define FILE_COST ((size_t)256 << 10)

typedef struct linkmap {
	uint64_t group;
	int dfd;          /* dup of the directory holding the first member */
	char *name;
} linkmap;

typedef struct rest {
	amber_snapshot *s;
	const amber_restore_opts *o;
	amber_stats st;        /* under lock once the workers run */
	amber_restore_skipped skipped;
	int owner;
	amber_pool *pool;
	amber_group group;     /* every range handed to the pool */
	pthread_mutex_t lock;  /* st, skipped, the callbacks, bufs, failure */
	uint8_t *bufs[WORKERS_MAX + 1]; /* free BLOCK-sized buffers */
	size_t nbufs;
	int fail_rc;           /* first failure of a worker, and its message */
	atomic_int failing;    /* fail_rc is set: read without the lock */
	atomic_uint_fast64_t bytes; /* written by the workers; st.bytes at the end */
	struct batchjob *batch; /* small files not yet handed out (walker only) */
	char *fail_msg;
	linkmap *links;
	size_t nlinks, caplinks;
	char *path;            /* the entry being restored, for messages */
	size_t pathcap;
	size_t pending;        /* bytes held for directories not finished */
	struct timespec last;
	amber_group lgroup;    /* listing read-ahead jobs */
	pthread_cond_t ldone;  /* a listing job finished (with lock) */
	size_t lout;           /* listing jobs asked for and not taken (walker only) */
	struct flusher *flusher; /* starts the disk early (flusher_start), or NULL */
} rest;

/*
 * The disk starts on the data while the workers still decode: each time
 * the bytes written pass another FLUSH_STEP, the worker that wrote them
 * wakes a thread that syncs the destination's file system.  The final
 * syncfs then waits only for what came after the last one, instead of for
 * the whole restore with the cores idle (about a fifth of the time of a
 * 400 MiB restore).  syncfs from its own thread, not sync_file_range from
 * the workers: that put the writeback's block allocation and I/O
 * submission on the workers, whose cores are the restore's limit.
 */
#define FLUSH_STEP ((uint64_t)64 << 20)

struct flusher {
	pthread_t t;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int fd, stop;
	unsigned asked, done;   /* steps passed, and synced for */
};

static void *flusher_main(void *arg)
{
	struct flusher *f = arg;

	pthread_mutex_lock(&f->lock);
	while (!f->stop) {
		if (f->done == f->asked) {
			pthread_cond_wait(&f->wake, &f->lock);
			continue;
		}
		f->done = f->asked;
		pthread_mutex_unlock(&f->lock);
		(void)syncfs(f->fd); /* early, and only that: errors show in the last */
		pthread_mutex_lock(&f->lock);
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

/* n more bytes written: wake the flusher if they pass a step. */
static void written(rest *r, size_t n)
{
	uint64_t before = atomic_fetch_add(&r->bytes, n);
	struct flusher *f = r->flusher;

	if (f && before / FLUSH_STEP != (before + n) / FLUSH_STEP) {
		pthread_mutex_lock(&f->lock);
		f->asked++;
		pthread_cond_signal(&f->wake);
		pthread_mutex_unlock(&f->lock);
	}
}

/* A flusher whose thread is not running (never started, or joined). */
static void flusher_free(struct flusher *f)
{
	pthread_cond_destroy(&f->wake);
	pthread_mutex_destroy(&f->lock);
	close(f->fd);
	free(f);
}

/* Started on dfd (its own descriptor), before any file is handed to the
 * workers; none if it cannot be: the final syncfs does it all. */
static void flusher_start(rest *r, int dfd)
{
	struct flusher *f = calloc(1, sizeof(*f));

	if (!f || (f->fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0)) < 0) {
		free(f);
		return;
	}
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->wake, NULL);
	if (pthread_create(&f->t, NULL, flusher_main, f) != 0)
		flusher_free(f);
	else
		r->flusher = f;
}

/* After the workers are done. */
static void flusher_stop(rest *r)
{
	struct flusher *f = r->flusher;

	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->stop = 1;
	pthread_cond_signal(&f->wake);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->t, NULL);
	flusher_free(f);
	r->flusher = NULL;
}

/* Metadata of `path` that could not be set: counted and reported, not fatal. */
static void warn_at(rest *r, const char *path, const char *what)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
	pthread_mutex_lock(&r->lock);
	r->st.errors++;
	if (r->o->warn)
		r->o->warn(path, msg, r->o->payload);
	pthread_mutex_unlock(&r->lock);
}

static void progress(rest *r, int force)
{
	struct timespec now;

	if (!r->o->progress || !r->path)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!force && (now.tv_sec - r->last.tv_sec) * 1000000000L + (now.tv_nsec - r->last.tv_nsec) <
			      100000000L)
		return;
	r->last = now;
	pthread_mutex_lock(&r->lock);
	r->st.bytes = atomic_load(&r->bytes);
	r->o->progress(&r->st, r->path, r->o->payload);
	pthread_mutex_unlock(&r->lock);
}

/* ---- the workers --------------------------------------------------------------------- */

/* A regular file being written: made by the walking thread, finished by the worker
 * that completes its last range. */
typedef struct rangejob rangejob;
typedef struct filejob {
	rest *r;
	amber_entry e;         /* its own copy: the walk does not wait for the file */
	int fd;
	char *path;            /* for messages */
	size_t left;           /* ranges not finished, under r->lock */
	int failed;            /* under r->lock */
	rangejob *jobs;
} filejob;

struct rangejob {
	amber_task t;          /* first: the pool hands back &t */
	filejob *f;
	uint64_t off, len;
};

static int stopped(rest *r)
{
	return atomic_load(&r->failing);
}

/* Keep the first failure of a worker (the thread-local message goes with it). */
static void fail_keep(rest *r, int rc)
{
	pthread_mutex_lock(&r->lock);
	if (r->fail_rc == 0) {
		r->fail_rc = rc;
		atomic_store(&r->failing, 1);
		r->fail_msg = strdup(amber_error_last());
	}
	pthread_mutex_unlock(&r->lock);
}

/* The first failure of a worker as this thread's error (0 if none). */
static int fail_report(rest *r)
{
	int rc;

	pthread_mutex_lock(&r->lock);
	rc = r->fail_rc;
	pthread_mutex_unlock(&r->lock);
	if (rc == 0)
		return 0;
	return amber_fail(rc, "%s", r->fail_msg ? r->fail_msg : "out of memory");
}

static uint8_t *buf_get(rest *r)
{
	uint8_t *b = NULL;

	pthread_mutex_lock(&r->lock);
	if (r->nbufs)
		b = r->bufs[--r->nbufs];
	pthread_mutex_unlock(&r->lock);
	return b ? b : malloc(BLOCK);
}

static void buf_put(rest *r, uint8_t *b)
{
	pthread_mutex_lock(&r->lock);
	if (r->nbufs < sizeof(r->bufs) / sizeof(r->bufs[0])) {
		r->bufs[r->nbufs++] = b;
		b = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	free(b);
}

static int all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* buf[0, n) at off of f, but for aligned HOLE_GRAIN runs of zeros, left as holes. */
#define HOLE_GRAIN ((size_t)64 << 10)
static int write_nonzero(filejob *f, const uint8_t *buf, size_t n, uint64_t off)
{
	size_t i = 0;

	while (i < n) {
		size_t j, g = n - i < HOLE_GRAIN ? n - i : HOLE_GRAIN;

		if (all_zero(buf + i, g)) {
			i += g;
			continue;
		}
		for (j = i + g; j < n; j += g) { /* the run of grains to write */
			g = n - j < HOLE_GRAIN ? n - j : HOLE_GRAIN;
			if (all_zero(buf + j, g))
				break;
		}
		while (i < j) {
			ssize_t w = pwrite(f->fd, buf + i, j - i, (off_t)(off + i));

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return amber_fail_errno("cannot write %s", f->path);
			i += (size_t)w;
		}
	}
	return 0;
}

/* Bytes [off, off + len) of f: runs of zeros are left as holes (the size is set). */
static int write_range(rest *r, filejob *f, uint64_t off, uint64_t len, uint8_t *buf)
{
	uint64_t end = off + len;

	while (off < end) {
		size_t n = 0, want = end - off < BLOCK ? (size_t)(end - off) : BLOCK;
		int rc;

		rc = amber_file_read(&n, r->s, &f->e, off, buf, want);
		if (rc < 0)
			return amber_fail(rc, "%s: %s", f->path, amber_error_last());
		if (n == 0)
			return amber_fail(AMBER_ECORRUPT, "%s: shorter than its size", f->path);
		if ((rc = write_nonzero(f, buf, n, off)) < 0)
			return rc;
		off += n;
		written(r, n);
	}
	return 0;
}

static void apply_meta(rest *r, const char *path, const amber_entry *e, int fd, int opath);

/*
 * The last range of f is done.  A file whose data failed (or that the
 * restore gave up on) is cut to nothing: its size was set up front and its
 * ranges are written in any order, so what is there is not a prefix of the
 * file, and nothing that is not the file's may be left behind.
 */
static void file_finish(rest *r, filejob *f, int failed)
{
	if (failed && ftruncate(f->fd, 0) < 0)
		warn_at(r, f->path, "cannot empty the file after its data failed");
	if (!failed)
		apply_meta(r, f->path, &f->e, f->fd, 0);
	close(f->fd);
	amber_entry_dispose(&f->e);
	free(f->path);
	free(f->jobs);
	free(f);
}

/*
 * A file of one range up to SMALL bytes is read into the worker's stack,
 * not a shared BLOCK buffer, and, being its file's only range, finishes it
 * without taking the lock: a small file costs the workers no lock at all
 * (the pool's lock is taken once per batch of them, see restore_file).
 */
#define SMALL ((size_t)64 << 10)

static void range_run(amber_task *t)
{
	rangejob *j = (rangejob *)t;
	filejob *f = j->f;
	rest *r = f->r;
	uint8_t *buf = NULL, small[SMALL];
	int rc = 0, last, failed, only = f->e.size <= BLOCK; /* the file's only range */

	if (j->len && !stopped(r)) {
		if (j->len <= SMALL)
			buf = small;
		else if (!(buf = buf_get(r)))
			rc = amber_fail(AMBER_ERROR, "out of memory");
		if (rc == 0)
			rc = write_range(r, f, j->off, j->len, buf);
		if (buf && buf != small)
			buf_put(r, buf);
		if (rc < 0)
			fail_keep(r, rc);
	}
	if (only) {
		failed = rc < 0 || stopped(r);
		last = 1;
	} else {
		pthread_mutex_lock(&r->lock);
		f->failed |= rc < 0 || r->fail_rc != 0;
		failed = f->failed;
		last = --f->left == 0;
		pthread_mutex_unlock(&r->lock);
	}
	if (last)
		file_finish(r, f, failed); /* frees j */
}

/*
 * Small files go to the workers in batches of up to BATCH_FILES (or
 * BATCH_BYTES of data): one pool task each, run one after the other, so
 * that the walk and the workers do not hand each other every file.
 */
#define BATCH_FILES 32
#define BATCH_BYTES ((size_t)1 << 20)

typedef struct batchjob {
	amber_task t;          /* first: the pool hands back &t */
	rangejob *jobs[BATCH_FILES];
	size_t n, bytes;
} batchjob;

static void batch_run(amber_task *t)
{
	batchjob *b = (batchjob *)t;

	for (size_t i = 0; i < b->n; i++)
		range_run(&b->jobs[i]->t); /* may free the job's file */
	free(b);
}

/* Hand the pending batch to the workers (there may be none). */
static void batch_flush(rest *r)
{
	batchjob *b = r->batch;

	if (!b)
		return;
	r->batch = NULL;
	b->t.run = batch_run;
	amber_pool_submit(r->pool, &b->t, &r->group);
}

/* Queue the one range of a small file in the batch; @return 0, or -1 if it must go alone. */
static int batch_add(rest *r, rangejob *j)
{
	batchjob *b = r->batch;

	if (!b && !(b = r->batch = calloc(1, sizeof(*b))))
		return -1; /* out of memory: the file goes alone */
	b->jobs[b->n++] = j;
	b->bytes += j->len;
	b->t.cost += j->t.cost;
	if (b->n == BATCH_FILES || b->bytes >= BATCH_BYTES)
		batch_flush(r);
	return 0;
}

/* e's mode, without setuid and setgid on non-directories in safe mode. */
static mode_t safe_mode(rest *r, const amber_entry *e)
{
	if (!r->o->safe || e->type == AMBER_T_DIR || !(e->mode & (S_ISUID | S_ISGID)))
		return e->mode;
	pthread_mutex_lock(&r->lock);
	r->skipped.setid++;
	pthread_mutex_unlock(&r->lock);
	return e->mode & ~(mode_t)(S_ISUID | S_ISGID);
}

/* In safe mode, attributes that grant privileges or steer the system are left out. */
static int xattr_allowed(rest *r, const char *name)
{
	if (!r->o->safe || (strncmp(name, "security.", 9) != 0 && strncmp(name, "trusted.", 8) != 0))
		return 1;
	pthread_mutex_lock(&r->lock);
	r->skipped.xattrs++;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/*
 * Owner, mode, xattrs and times of e on fd.  fd is open on the node itself:
 * a real descriptor for files and directories, an O_PATH one (opath) for
 * the rest, reached through /proc/self/fd, which lands on the node even
 * when it is a symlink and never follows what it points to.
 */
static void apply_meta(rest *r, const char *path, const amber_entry *e, int fd, int opath)
{
	struct timespec ts[2];
	char proc[64];
	int is_link = e->type == AMBER_T_SYMLINK;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (r->owner && fchownat(fd, "", e->uid, e->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		warn_at(r, path, "cannot set owner");
	if (!is_link && (opath ? chmod(proc, safe_mode(r, e)) : fchmod(fd, safe_mode(r, e))) < 0)
		warn_at(r, path, "cannot set mode");
	for (size_t i = 0; i < e->nxattrs; i++) {
		const amber_xattr *x = &e->xattrs[i];

		if (!xattr_allowed(r, x->name))
			continue;
		if ((opath ? setxattr(proc, x->name, x->value, x->value_len, 0) :
			     fsetxattr(fd, x->name, x->value, x->value_len, 0)) < 0)
			warn_at(r, path, "cannot set extended attribute");
	}
	ts[0].tv_sec = ts[1].tv_sec = e->mtime_sec;
	ts[0].tv_nsec = ts[1].tv_nsec = e->mtime_nsec;
	if ((opath ? utimensat(AT_FDCWD, proc, ts, 0) : futimens(fd, ts)) < 0)
		warn_at(r, path, "cannot set times");
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

/*
 * Create regular file e in dfd and hand its data (and a copy of e) to the
 * workers.  Its size is set at once, so the ranges can be written in any
 * order and runs of zeros stay holes.
 */
static int restore_file(rest *r, const amber_entry *e, int dfd)
{
	linkmap *l = e->hardlink ? link_find(r, e->hardlink) : NULL;
	filejob *f = NULL;
	uint64_t nr;
	int fd, rc = 0;

	if (l) {
		if (linkat(l->dfd, l->name, dfd, e->name, 0) < 0)
			return amber_fail_errno("cannot create hard link %s", r->path);
		return 0;
	}
	fd = openat(dfd, e->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return amber_fail_errno("cannot create %s", r->path);
	pthread_mutex_lock(&r->lock);
	r->st.files++;
	pthread_mutex_unlock(&r->lock);
	nr = e->size ? (e->size - 1) / BLOCK + 1 : 1;
	if (e->size > (uint64_t)INT64_MAX)
		rc = amber_fail(AMBER_ECORRUPT, "%s: size out of range", r->path);
	else if (ftruncate(fd, (off_t)e->size) < 0)
		rc = amber_fail_errno("cannot write %s", r->path);
	if (rc == 0 && e->hardlink)
		rc = link_add(r, e->hardlink, dfd, e->name);
	if (rc == 0 && (!(f = calloc(1, sizeof(*f))) || !(f->path = strdup(r->path)) ||
			!(f->jobs = calloc((size_t)nr, sizeof(*f->jobs)))))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (rc == 0 && amber_entry_copy(&f->e, e) < 0)
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (rc < 0) {
		if (f) {
			free(f->jobs);
			free(f->path);
			free(f);
		}
		if (ftruncate(fd, 0) < 0) /* leave no zeros that are not the file's */
			warn_at(r, r->path, "cannot empty the file after it failed");
		close(fd);
		return rc;
	}
	f->r = r;
	f->fd = fd;
	f->left = (size_t)nr;
	for (uint64_t i = 0; i < nr; i++) {
		rangejob *j = &f->jobs[i];

		j->f = f;
		j->off = i * BLOCK;
		j->len = e->size - j->off < BLOCK ? e->size - j->off : BLOCK;
		j->t.run = range_run;
		j->t.cost = (size_t)j->len + (i == 0 ? FILE_COST : 0);
		if (nr == 1 && j->len <= SMALL && batch_add(r, j) == 0)
			continue;
		amber_pool_submit(r->pool, &j->t, &r->group); /* f may be gone after the last */
	}
	return 0;
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
	apply_meta(r, r->path, e, fd, 1);
	close(fd);
	return 0;
}

/* A non-directory entry into the open directory dfd. */
static int restore_leaf(rest *r, const amber_entry *e, int dfd)
{
	size_t l = strlen(r->path);
	int rc;

	snprintf(r->path + l, r->pathcap - l, "/%s", e->name);
	if (e->type == AMBER_T_REG) {
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

/*
 * restore_tree: directories are restored without recursion and without keeping any
 * listing open while descending: a level reads its directory's listing,
 * restores the other entries, makes the subdirectories and keeps a small
 * record of each, then drops the listing.  A directory's xattrs go on
 * when it is made, except its ACLs (a default ACL would be inherited by
 * the children made after it), which the record keeps with the owner,
 * mode and mtime that go on after the children.  So memory is bounded by
 * the records (PENDING_MAX in all) and one listing, and nesting by
 * AMBER_RESTORE_MAX_DEPTH.
 */
#define PENDING_MAX ((size_t)256 << 20)

/*
 * Listing read-ahead: when a subdirectory is made, a worker is asked to
 * read its listing (fetch, decrypt, decode) if it is among the first
 * LIST_AHEAD subdirectories of its parent not yet entered, and fewer than
 * LIST_MAX listings are asked for and not yet taken in all.  The job is
 * queued behind the file ranges handed out before it, so it runs while the
 * walk creates the next files.  The walk takes the listing when it enters
 * the directory: done, it is used; being read, the walk waits; still
 * queued, the walk reads it itself and the job, when its turn comes, does
 * nothing.  So memory stays bounded (LIST_MAX listings) and the walk never
 * waits behind a queue.
 */
#define LIST_AHEAD 4
#define LIST_MAX 16
#define LIST_COST ((size_t)64 << 10)

enum { LJ_QUEUED, LJ_RUNNING, LJ_DONE, LJ_TAKEN };

typedef struct listjob {
	amber_task t;      /* first: the pool hands back &t */
	rest *r;
	amber_entry e;     /* its own copy of the directory's entry */
	amber_dir *d;      /* the listing, once read */
	int state;         /* LJ_*, under r->lock */
	int refs;          /* the walk's and the pool's, under r->lock: the last frees */
	int rc;            /* of the read, and its message */
	char *msg;
} listjob;

typedef struct dirrec {
	amber_entry e;     /* owns name and the deferred ACLs; no target, no other xattrs */
	dev_t dev;         /* of the directory made, to know it again */
	ino_t ino;
	size_t cost;       /* bytes counted in rest.pending */
	listjob *list;     /* its listing being read ahead, or NULL */
} dirrec;

typedef struct level {
	int fd;            /* the directory, open */
	dirrec self;
	dirrec *subs;      /* its subdirectories, made, entered in order */
	size_t cap, nsubs, next;
	size_t pathlen;    /* r->path's length without this directory's name */
} level;

static int deferred_xattr(const amber_xattr *x)
{
	return strncmp(x->name, "system.posix_acl_", 17) == 0;
}

static void listjob_free(listjob *j)
{
	amber_dir_free(j->d);
	amber_entry_dispose(&j->e);
	free(j->msg);
	free(j);
}

/* Drop one reference (r->lock held); @return whether j is to be freed. */
static int listjob_unref(listjob *j)
{
	return --j->refs == 0;
}

static void listjob_run(amber_task *t)
{
	listjob *j = (listjob *)t;
	rest *r = j->r;
	amber_dir *d = NULL;
	int rc, last;

	pthread_mutex_lock(&r->lock);
	if (j->state == LJ_TAKEN) {
		last = listjob_unref(j);
		pthread_mutex_unlock(&r->lock);
		if (last)
			listjob_free(j);
		return;
	}
	j->state = LJ_RUNNING;
	pthread_mutex_unlock(&r->lock);
	rc = amber_dir_open(&d, r->s, &j->e);
	pthread_mutex_lock(&r->lock);
	j->d = d;
	j->rc = rc;
	if (rc < 0)
		j->msg = strdup(amber_error_last());
	j->state = LJ_DONE;
	last = listjob_unref(j);
	pthread_cond_broadcast(&r->ldone);
	pthread_mutex_unlock(&r->lock);
	if (last)
		listjob_free(j);
}

/* Ask a worker to read the listing of directory d (made, not yet entered). */
static void list_ahead(rest *r, dirrec *d, const amber_entry *e)
{
	listjob *j;

	if (d->list || r->lout >= LIST_MAX || !(j = calloc(1, sizeof(*j))))
		return; /* only read-ahead: the walk reads it when it gets there */
	if (amber_entry_copy(&j->e, e) < 0) {
		free(j);
		amber_error_clear();
		return;
	}
	j->r = r;
	j->refs = 2;
	j->state = LJ_QUEUED;
	j->t.run = listjob_run;
	j->t.cost = LIST_COST;
	d->list = j;
	r->lout++;
	amber_pool_submit(r->pool, &j->t, &r->lgroup);
}

/*
 * The listing of directory `e`, read ahead by j if it was, else read now.
 * Releases the walk's reference to j (NULL-safe).
 */
static int list_take(amber_dir **out, rest *r, listjob *j, const amber_entry *e)
{
	int rc = 0, last, mine = 1;

	*out = NULL;
	if (j) {
		pthread_mutex_lock(&r->lock);
		if (j->state == LJ_QUEUED) {
			j->state = LJ_TAKEN;
		} else {
			mine = 0;
			while (j->state != LJ_DONE)
				pthread_cond_wait(&r->ldone, &r->lock);
			*out = j->d;
			j->d = NULL;
			rc = j->rc;
			if (rc < 0)
				rc = amber_fail(rc, "%s", j->msg ? j->msg : "out of memory");
		}
		last = listjob_unref(j);
		pthread_mutex_unlock(&r->lock);
		r->lout--;
		if (last)
			listjob_free(j);
	}
	return mine ? amber_dir_open(out, r->s, e) : rc;
}

/* Give up a listing read ahead and never taken (NULL-safe). */
static void list_drop(rest *r, listjob *j)
{
	int last;

	if (!j)
		return;
	pthread_mutex_lock(&r->lock);
	if (j->state == LJ_QUEUED)
		j->state = LJ_TAKEN;
	last = listjob_unref(j);
	pthread_mutex_unlock(&r->lock);
	r->lout--;
	if (last)
		listjob_free(j);
}

static void dirrec_dispose(rest *r, dirrec *d)
{
	list_drop(r, d->list);
	r->pending -= d->cost;
	amber_entry_dispose(&d->e);
	memset(d, 0, sizeof(*d));
}

static int charge(rest *r, size_t bytes)
{
	r->pending += bytes;
	if (r->pending <= PENDING_MAX)
		return 0;
	return amber_fail(AMBER_ERROR, "%s: more than %zu MiB of directories wait to be finished: "
			  "restore the snapshot a part (SNAPSHOT:PATH) at a time", r->path,
			  PENDING_MAX >> 20);
}

/* Copy e's ACLs into d (whose xattrs are empty). */
static int keep_acls(rest *r, dirrec *d, const amber_entry *e)
{
	size_t n = 0;

	for (size_t i = 0; i < e->nxattrs; i++)
		n += deferred_xattr(&e->xattrs[i]);
	if (n && !(d->e.xattrs = calloc(n, sizeof(*d->e.xattrs))))
		return amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; i < e->nxattrs; i++) {
		const amber_xattr *x = &e->xattrs[i];
		amber_xattr *y = &d->e.xattrs[d->e.nxattrs];

		if (!deferred_xattr(x))
			continue;
		y->name = strdup(x->name);
		y->value = malloc(x->value_len ? x->value_len : 1);
		if (!y->name || !y->value) {
			free(y->name);
			free(y->value);
			return amber_fail(AMBER_ERROR, "out of memory");
		}
		memcpy(y->value, x->value, x->value_len);
		y->value_len = x->value_len;
		d->e.nxattrs++;
		d->cost += strlen(x->name) + x->value_len;
	}
	return 0;
}

/* The record of directory e, made and open as fd; its other xattrs go on now. */
static int dirrec_make(rest *r, dirrec *d, const amber_entry *e, int fd)
{
	struct stat st;

	*d = (dirrec){.e = *e};
	d->e.name = NULL;
	d->e.target = NULL;
	d->e.target_len = 0;
	d->e.xattrs = NULL;
	d->e.nxattrs = 0;
	if (fstat(fd, &st) < 0)
		return amber_fail_errno("cannot stat %s", r->path);
	d->dev = st.st_dev;
	d->ino = st.st_ino;
	for (size_t i = 0; i < e->nxattrs; i++) {
		const amber_xattr *x = &e->xattrs[i];

		if (!deferred_xattr(x) && xattr_allowed(r, x->name) &&
		    fsetxattr(fd, x->name, x->value, x->value_len, 0) < 0)
			warn_at(r, r->path, "cannot set extended attribute");
	}
	if (!(d->e.name = strdup(e->name ? e->name : "")))
		return amber_fail(AMBER_ERROR, "out of memory");
	d->cost = e->name_len + 1;
	if (keep_acls(r, d, e) < 0) {
		d->cost = 0; /* nothing charged yet */
		return AMBER_ERROR;
	}
	return charge(r, d->cost);
}

/* Make subdirectory e of lv's directory and record it in lv->subs. */
static int make_subdir(rest *r, level *lv, const amber_entry *e)
{
	size_t l = strlen(r->path);
	int fd = -1, rc;

	snprintf(r->path + l, r->pathcap - l, "/%s", e->name);
	rc = mkdirat(lv->fd, e->name, 0700) < 0 ? amber_fail_errno("cannot create %s", r->path)
						: 0;
	if (rc == 0 && (fd = open_created(r, lv->fd, e->name, S_IFDIR,
					  O_RDONLY | O_DIRECTORY)) < 0)
		rc = fd;
	if (rc == 0)
		rc = dirrec_make(r, &lv->subs[lv->nsubs++], e, fd);
	if (rc == 0 && lv->nsubs <= LIST_AHEAD)
		list_ahead(r, &lv->subs[lv->nsubs - 1], e);
	if (fd >= 0)
		close(fd);
	progress(r, 0);
	r->path[l] = '\0';
	return rc;
}

/*
 * Read lv's listing, restore its entries and make its subdirectories.  The
 * workers may still be writing its files when it returns (they hold copies
 * of their entries).
 */
static int fill(rest *r, level *lv)
{
	amber_dir *d = NULL;
	int rc = list_take(&d, r, lv->self.list, &lv->self.e);
	size_t n = rc == 0 ? amber_dir_count(d) : 0, ndirs = 0;

	lv->self.list = NULL;
	for (size_t i = 0; i < n; i++)
		ndirs += amber_dir_entry(d, i)->type == AMBER_T_DIR;
	lv->cap = ndirs;
	if (ndirs && (rc = charge(r, ndirs * sizeof(dirrec))) == 0 &&
	    !(lv->subs = calloc(ndirs, sizeof(dirrec))))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	for (size_t i = 0; rc == 0 && i < n && !stopped(r); i++) {
		const amber_entry *e = amber_dir_entry(d, i);

		/* no read-ahead: the workers are already decoding the files and
		 * ranges queued ahead of them, and a read-ahead thread would decode
		 * some of the same chunks a second time */
		rc = e->type == AMBER_T_DIR ? make_subdir(r, lv, e) : restore_leaf(r, e, lv->fd);
	}
	if (rc == 0)
		rc = fail_report(r);
	amber_dir_free(d);
	return rc;
}

static void level_dispose(rest *r, level *lv)
{
	for (size_t i = 0; i < lv->nsubs; i++)
		dirrec_dispose(r, &lv->subs[i]);
	free(lv->subs);
	r->pending -= lv->cap * sizeof(dirrec);
	dirrec_dispose(r, &lv->self);
	if (lv->fd >= 0)
		close(lv->fd);
	r->path[lv->pathlen] = '\0';
	memset(lv, 0, sizeof(*lv));
	lv->fd = -1;
}

/* Open the recorded subdirectory sub of up, checking it is the one made. */
static int open_recorded(rest *r, const level *up, const dirrec *sub)
{
	struct stat st;
	int fd = open_created(r, up->fd, sub->e.name, S_IFDIR, O_RDONLY | O_DIRECTORY);

	if (fd < 0)
		return fd;
	if (fstat(fd, &st) == 0 && st.st_dev == sub->dev && st.st_ino == sub->ino)
		return fd;
	close(fd);
	return amber_fail(AMBER_ERROR, "%s was replaced by something else while being restored: "
			  "restore into a directory that nobody else can write", r->path);
}

/* The error for a directory nested too deep, naming the end of its path. */
static int too_deep(rest *r)
{
	size_t len = strlen(r->path);
	const char *tail = len > 200 ? r->path + len - 200 : r->path;

	return amber_fail(AMBER_ERROR, "%s%s: directories nested more than %d levels deep: "
			  "restore the deeper part on its own (SNAPSHOT:PATH)",
			  tail == r->path ? "" : "...", tail, AMBER_RESTORE_MAX_DEPTH);
}

/* Enter the next subdirectory of stack[*depth - 1] as a new level. */
static int enter_next(rest *r, level *stack, size_t *depth)
{
	level *up = &stack[*depth - 1], *lv = &stack[*depth];
	dirrec *sub = &up->subs[up->next++];
	size_t l = strlen(r->path);
	int rc = 0;

	snprintf(r->path + l, r->pathcap - l, "/%s", sub->e.name);
	if (*depth > AMBER_RESTORE_MAX_DEPTH)
		return too_deep(r);
	*lv = (level){.fd = -1, .self = *sub, .pathlen = l};
	memset(sub, 0, sizeof(*sub));
	(*depth)++;
	if (up->next - 1 + LIST_AHEAD < up->nsubs) { /* keep the read-ahead window full */
		dirrec *ahead = &up->subs[up->next - 1 + LIST_AHEAD];

		list_ahead(r, ahead, &ahead->e);
	}
	lv->fd = open_recorded(r, up, &lv->self);
	rc = lv->fd < 0 ? lv->fd : fill(r, lv);
	return rc;
}

/* Children of `root` into the open directory dfd, then root's own metadata. */
static int restore_tree(rest *r, const amber_entry *root, int dfd)
{
	level *stack = calloc(AMBER_RESTORE_MAX_DEPTH + 1, sizeof(*stack));
	size_t depth = 0;
	int rc = stack ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	if (rc == 0) {
		stack[0] = (level){.fd = dup(dfd), .pathlen = strlen(r->path)};
		depth = 1;
		rc = stack[0].fd < 0 ? amber_fail_errno("cannot open %s", r->path)
				     : dirrec_make(r, &stack[0].self, root, stack[0].fd);
	}
	if (rc == 0)
		rc = fill(r, &stack[0]);
	while (rc == 0 && depth > 0) {
		level *top = &stack[depth - 1];

		if (top->next < top->nsubs) {
			rc = enter_next(r, stack, &depth);
			continue;
		}
		apply_meta(r, r->path, &top->self.e, top->fd, 0);
		r->st.dirs++;
		level_dispose(r, top);
		depth--;
	}
	while (depth > 0)
		level_dispose(r, &stack[--depth]);
	free(stack);
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
	for (size_t i = 0; i < r->nbufs; i++)
		free(r->bufs[i]);
	free(r->fail_msg);
	free(r->path);
	pthread_cond_destroy(&r->ldone);
	pthread_mutex_destroy(&r->lock);
}

static int workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 2 ? 2 : n > WORKERS_MAX ? WORKERS_MAX : (int)n;
}

int amber_restore(amber_stats *stats, amber_snapshot *s, const char *path, const char *dest,
		  const amber_restore_opts *opts)
{
	static const amber_restore_opts defaults;
	rest r = {.s = s, .o = opts ? opts : &defaults};
	amber_entry *e = NULL;
	int fd = -1;
	int rc = amber_stats_check(stats, "amber_stats", "AMBER_STATS_INIT");

	if (rc == 0)
		rc = amber_opts_check(opts, AMBER_RESTORE_OPTS_VERSION, "amber_restore_opts",
				      "AMBER_RESTORE_OPTS_INIT");
	r.st.version = AMBER_STATS_VERSION; /* as progress callbacks see it */

	if (rc == 0)
		rc = amber_stat(&e, s, path ? path : "");

	pthread_mutex_init(&r.lock, NULL);
	pthread_cond_init(&r.ldone, NULL);
	r.owner = geteuid() == 0 && !r.o->no_owner && !r.o->safe;
	if (rc == 0)
		rc = dest_ready(dest);
	if (rc == 0)
		rc = amber_pool_new(&r.pool, workers(), IN_FLIGHT);
	if (rc == 0 && (fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		rc = amber_fail_errno("cannot open %s", dest);
	r.pathcap = strlen(dest) + (size_t)(AMBER_RESTORE_MAX_DEPTH + 2) * (NAME_MAX + 1) + 1;
	if (rc == 0 && !(r.path = malloc(r.pathcap)))
		rc = amber_fail(AMBER_ERROR, "out of memory");
	if (r.path)
		snprintf(r.path, r.pathcap, "%s", dest);
	if (rc == 0)
		flusher_start(&r, fd);
	if (rc == 0 && e->type == AMBER_T_DIR)
		rc = restore_tree(&r, e, fd);
	else if (rc == 0)
		rc = restore_leaf(&r, e, fd);
	if (r.pool) {
		batch_flush(&r); /* also after a failure: the workers close its files */
		amber_pool_wait(r.pool, &r.group);
		amber_pool_wait(r.pool, &r.lgroup); /* listing jobs given up, still queued */
	}
	flusher_stop(&r);
	if (rc == 0)
		rc = fail_report(&r);
	/* one sync of the whole filesystem instead of one per file */
	if (rc == 0 && syncfs(fd) < 0)
		rc = amber_fail_errno("cannot sync %s", dest);
	amber_pool_free(r.pool);
	if (fd >= 0)
		close(fd);
	progress(&r, 1);
	r.st.bytes = atomic_load(&r.bytes);
	if (stats && amber_stats_version(stats) >= 1)
		amber_stats_put(stats, &r.st, amber_stats_size(amber_stats_version(stats)));
	if (r.o->skipped)
		*r.o->skipped = r.skipped;
	rest_dispose(&r);
	amber_entry_free(e);
	return rc;
}
