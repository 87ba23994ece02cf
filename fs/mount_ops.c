/*
 * The FUSE low-level handlers.  Each amberfs_op_<op> finds its node, calls
 * a do_<op> helper that returns an errno, and replies exactly once.
 *
 * Requests carry FUSE node ids (see mount_inode.c); the kernel does not
 * forget a node while a request on it runs, so handlers use the node's
 * immutable fields without a lock.
 */
#include "mount.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define XATTR_PREFIX "user.amberfs."

static struct mnt *M(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static int in_snapshot(const struct mnt_node *n)
{
	return n->kind == MK_SNAPROOT || n->kind == MK_ENTRY;
}

static int is_snapdir(const struct mnt_node *n)
{
	return in_snapshot(n) && n->e->type == AMBER_T_DIR;
}

/* "snapshot <id>: <path>" for log lines. */
static void describe(const struct mnt_node *n, char *out, size_t cap)
{
	char path[1024] = "";
	size_t len = 0;

	for (const struct mnt_node *p = n; p && p->kind == MK_ENTRY; p = p->parent) {
		size_t k = p->name_len + 1;

		if (len + k >= sizeof(path))
			break;
		memmove(path + k, path, len + 1);
		path[0] = '/';
		memcpy(path + 1, p->name, p->name_len);
		len += k;
	}
	snprintf(out, cap, "snapshot %s: %s", n->snap ? n->snap->id : "?",
		 len ? path : "/");
}

static int node_errno(struct mnt *m, const struct mnt_node *n, int code)
{
	char what[1200];

	describe(n, what, sizeof(what));
	return mnt_errno(m, code, what);
}

/* Attributes --------------------------------------------------------------- */

static mode_t type_bits(uint8_t type)
{
	switch (type) {
	case AMBER_T_DIR: return S_IFDIR;
	case AMBER_T_SYMLINK: return S_IFLNK;
	case AMBER_T_FIFO: return S_IFIFO;
	case AMBER_T_CHR: return S_IFCHR;
	case AMBER_T_BLK: return S_IFBLK;
	default: return S_IFREG;
	}
}

static void fill_entry_stat(const amber_entry *e, struct stat *st)
{
	st->st_mode = type_bits(e->type) | (e->mode & 07777);
	st->st_nlink = e->nlink ? e->nlink : 1;
	st->st_uid = e->uid;
	st->st_gid = e->gid;
	st->st_size = (off_t)e->size;
	if (e->type == AMBER_T_CHR || e->type == AMBER_T_BLK)
		st->st_rdev = (dev_t)e->rdev;
	st->st_blocks = (blkcnt_t)((e->size + 511) / 512);
	st->st_mtim.tv_sec = (time_t)e->mtime_sec;
	st->st_mtim.tv_nsec = e->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

void mnt_fill_stat(struct mnt *m, const struct mnt_node *n, struct stat *st)
{
	char target[256];

	memset(st, 0, sizeof(*st));
	st->st_ino = n->st_ino;
	st->st_blksize = MNT_BLKSIZE;
	if (in_snapshot(n)) {
		fill_entry_stat(n->e, st);
		if (n->kind == MK_SNAPROOT) {
			/* a snapshot directory is dated by its snapshot */
			int64_t t = amber_snapshot_info(n->snap->s)->time_ns;
			int64_t ns = t % 1000000000;    /* negative before 1970 */

			st->st_mtim.tv_sec = (time_t)(t / 1000000000 - (ns < 0));
			st->st_mtim.tv_nsec = (long)(ns < 0 ? ns + 1000000000 : ns);
			st->st_atim = st->st_ctim = st->st_mtim;
		}
		return;
	}
	st->st_uid = m->uid;
	st->st_gid = m->gid;
	st->st_nlink = 1;
	st->st_mtim.tv_sec = st->st_atim.tv_sec = st->st_ctim.tv_sec = m->start_sec;
	st->st_mode = S_IFDIR | 0555;
	if (n->kind == MK_LATEST) {
		st->st_mode = S_IFLNK | 0777;
		if (mnt_layout_readlink(m, (struct mnt_node *)n, target, sizeof(target)) == 0)
			st->st_size = (off_t)strlen(target);
	}
}

static double attr_timeout(const struct mnt_node *n)
{
	return in_snapshot(n) ? MNT_TIMEOUT_IMMUTABLE : MNT_TIMEOUT_MOVING;
}

static void fill_param(struct mnt *m, const struct mnt_node *n, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = n->id;
	e->generation = 1;
	e->entry_timeout = n->entry_timeout;
	e->attr_timeout = attr_timeout(n);
	mnt_fill_stat(m, n, &e->attr);
}

/* Lookup and forget ---------------------------------------------------------- */

/*
 * The format nests directories at most 1024 levels deep; older writers went
 * deeper, and restore follows them down to AMBER_RESTORE_MAX_DEPTH.  The
 * mount serves what restore restores: a directory deeper than that is EIO
 * (a hostile archive can nest without end), and the rest is served.
 */
#define MNT_DEPTH_MAX AMBER_RESTORE_MAX_DEPTH

/* Whether child `ce` of directory `p` (a root's children are at level 1) is
 * a directory nested deeper than MNT_DEPTH_MAX. */
static int too_deep(const struct mnt_node *p, const amber_entry *ce)
{
	size_t level = 1;

	if (ce->type != AMBER_T_DIR)
		return 0;
	for (; p->kind == MK_ENTRY && level <= MNT_DEPTH_MAX; p = p->parent)
		level++;
	return level > MNT_DEPTH_MAX;
}

/* (The path would not fit a log line: name the snapshot and the level.) */
static int deep_errno(struct mnt *m, const struct mnt_node *p, const char *name)
{
	mnt_log(m, "snapshot %s: directory '%s' at level %d: directories nested more than %d "
		"levels deep (malformed or forged archive), not followed", p->snap->id, name,
		MNT_DEPTH_MAX + 1, MNT_DEPTH_MAX);
	return EIO;
}

/* A child of a snapshot directory, from its (cached) listing. */
static int lookup_entry(struct mnt *m, struct mnt_node *p, const char *name,
			struct mnt_node **out)
{
	struct mnt_nodeinfo info = {MK_ENTRY, 0, NULL, 0, MNT_TIMEOUT_IMMUTABLE, NULL, NULL, NULL};
	const amber_entry *ce;
	amber_dir *d;
	int err, deep = 0;

	if ((*out = mnt_node_find(m, p, name)))
		return 0;
	err = mnt_dir_get(m, p, &d);
	if (err)
		return err;
	if ((err = amber_dir_find(d, name, strlen(name), &ce)) < 0) {
		mnt_dir_put(m, d);
		return mnt_errno(m, err, p->snap->id);
	}
	if (ce && (deep = too_deep(p, ce)) == 0) {
		/* copied into the node while the listing is still held */
		info.src = ce;
		info.st_ino = amber_entry_ino(m->a, ce);
		info.snap = p->snap;
		mnt_snap_hold(m, p->snap);
		*out = mnt_node_get(m, p, name, &info);
	}
	mnt_dir_put(m, d);
	if (!ce)
		return ENOENT;
	if (deep)
		return deep_errno(m, p, name);
	return *out ? 0 : ENOMEM;
}

static int do_lookup(struct mnt *m, fuse_ino_t parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct mnt_nodeinfo info = {0};
	struct mnt_node *p = mnt_node_by_id(m, parent), *n = NULL;
	int err;

	atomic_fetch_add(&m->n.lookups, 1);
	if (!p)
		return ESTALE;
	if (strlen(name) > AMBER_NAME_MAX)
		return ENAMETOOLONG;
	if (in_snapshot(p)) {
		err = is_snapdir(p) ? lookup_entry(m, p, name, &n) : ENOTDIR;
	} else if (mnt_layout_is_virtual_dir(p)) {
		err = mnt_layout_lookup(m, p, name, &info);
		if (!err && !(n = mnt_node_get(m, p, name, &info)))
			err = ENOMEM;
		mnt_nodeinfo_dispose(m, &info);
	} else {
		err = ENOTDIR;
	}
	if (!err)
		fill_param(m, n, e);
	return err;
}

static void raise_readahead(struct mnt *m);

static void amberfs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int err;

	struct mnt *m = M(req);         /* the reply frees req */

	err = do_lookup(m, parent, name, &e);
	if (err)
		fuse_reply_err(req, err);
	else if (fuse_reply_entry(req, &e) == -ENOENT)
		mnt_node_forget(m, e.ino, 1);      /* the request was interrupted */
	raise_readahead(m);     /* once, and after the answer: not on its path */
}

static void amberfs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	mnt_node_forget(M(req), ino, nlookup);
	fuse_reply_none(req);
}

static void amberfs_op_forget_multi(fuse_req_t req, size_t count,
				    struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		mnt_node_forget(M(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

/* Attributes and links ------------------------------------------------------ */

static void amberfs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mnt *m = M(req);         /* the reply frees req */
	struct mnt_node *n = mnt_node_by_id(m, ino);
	struct stat st;

	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	mnt_fill_stat(m, n, &st);
	fuse_reply_attr(req, &st, attr_timeout(n));
	raise_readahead(m);
}

static int do_readlink(struct mnt *m, fuse_ino_t ino, char *buf, size_t cap)
{
	struct mnt_node *n = mnt_node_by_id(m, ino);

	if (!n)
		return ESTALE;
	if (n->kind == MK_LATEST)
		return mnt_layout_readlink(m, n, buf, cap);
	if (!in_snapshot(n) || n->e->type != AMBER_T_SYMLINK || !n->e->target)
		return EINVAL;
	if (n->e->target_len >= cap)
		return ENAMETOOLONG;
	memcpy(buf, n->e->target, n->e->target_len);
	buf[n->e->target_len] = '\0';
	return 0;
}

static void amberfs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[4096];
	int err = do_readlink(M(req), ino, buf, sizeof(buf));

	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_readlink(req, buf);
}

/* Directories ------------------------------------------------------------------ */

/*
 * An open directory of a snapshot: its listing, and the reply to the next
 * request of a walk, made ahead.
 *
 * A walk (find, du, rsync) reads a large directory in batches, a request
 * each.  Between two of them the kernel turns the last reply into dentries
 * and inodes and the walker takes its entries, while the daemon sat idle;
 * then the daemon made the next batch's nodes while they sat idle.  So the
 * thread that answered a batch with entries still to come goes on to make
 * the next one, and the request for it (the same offset, size and kind) is
 * answered as soon as it comes: the two halves of the work overlap.  A
 * request for anything else (seekdir, another buffer size) drops the batch
 * made ahead and gives back the lookups its entries hold; so does
 * releasedir, and an interrupted reply gives back its own.
 */
struct rd_batch {
	char *buf;
	size_t cap, used;
	fuse_ino_t *ids;                /* the nodes whose lookups it hands over */
	size_t nids, cap_ids;
	off_t off;                      /* the request it answers: offset, size, kind */
	size_t size;
	int plus;
	int more;                       /* entries follow it */
	off_t next;                     /* the offset after its last entry */
	int ready;                      /* made ahead, not sent yet */
};

struct dirh {
	amber_dir *d;
	pthread_mutex_t lock;           /* one request at a time, and the batches */
	struct rd_batch b[2];           /* the reply being sent, the one made ahead */
	unsigned ahead;                 /* the index in b of the one made ahead */
};

/* Give back the lookups a batch holds (it was not sent, or not taken), and empty it. */
static void batch_drop(struct mnt *m, struct rd_batch *b)
{
	for (size_t i = 0; i < b->nids; i++)
		mnt_node_forget(m, b->ids[i], 1);
	b->nids = 0;
	b->used = 0;
	b->ready = 0;
}

static void dirh_free(struct mnt *m, struct dirh *h)
{
	for (size_t i = 0; i < 2; i++) {
		batch_drop(m, &h->b[i]);
		free(h->b[i].buf);
		free(h->b[i].ids);
	}
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static int do_opendir(struct mnt *m, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mnt_node *n = mnt_node_by_id(m, ino);
	struct dirh *h;
	int rc;

	if (!n)
		return ESTALE;
	fi->fh = 0;
	if (!in_snapshot(n))
		return mnt_layout_is_virtual_dir(n) ? 0 : ENOTDIR;
	if (n->e->type != AMBER_T_DIR)
		return ENOTDIR;
	if (!(h = calloc(1, sizeof(*h))))
		return ENOMEM;
	/* the cached listing lookups use, held (and counted) until releasedir */
	rc = mnt_dir_get(m, n, &h->d);
	if (rc) {
		free(h);
		return rc;
	}
	pthread_mutex_init(&h->lock, NULL);
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	return 0;
}

/* Give back the listing an open directory holds (the kernel keeps its node). */
static void put_dir(struct mnt *m, struct fuse_file_info *fi)
{
	struct dirh *h = (struct dirh *)(uintptr_t)fi->fh;

	if (h) {
		/* the last request on h: wait for a batch still being made ahead */
		pthread_mutex_lock(&h->lock);
		pthread_mutex_unlock(&h->lock);
		mnt_dir_put(m, h->d);
		dirh_free(m, h);
	}
	fi->fh = 0;
}

static void amberfs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int err = do_opendir(M(req), ino, fi);

	if (err)
		fuse_reply_err(req, err);
	else if (fuse_reply_open(req, fi) == -ENOENT)
		put_dir(M(req), fi);
}

static void amberfs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	put_dir(M(req), fi);
	fuse_reply_err(req, 0);
}

/* One readdir reply being filled. */
struct rd {
	fuse_req_t req;                 /* libfuse's entry encoders do not use it */
	struct mnt *m;
	struct mnt_node *dir;
	char *buf;
	size_t size, used;
	int plus;
	/* a snapshot directory's reply (rd_snapdir) */
	fuse_ino_t *ids;                /* the nodes whose lookups it hands over */
	size_t nids;
	int more;                       /* it stopped for room: entries follow */
	off_t next;                     /* the offset after its last entry */
};

/* Add one entry; `node` (readdirplus) already carries the lookup it hands over. */
static int rd_add(struct rd *r, const char *name, const struct stat *st,
		  const struct mnt_node *node, off_t next)
{
	struct fuse_entry_param e = {0};
	size_t need;

	if (!r->plus) {
		need = fuse_add_direntry(r->req, r->buf + r->used, r->size - r->used, name,
					 st, next);
	} else {
		if (node)
			fill_param(r->m, node, &e);
		else
			e.attr = *st;   /* ino 0: the kernel makes no dentry of it */
		need = fuse_add_direntry_plus(r->req, r->buf + r->used, r->size - r->used,
					      name, &e, next);
	}
	if (need > r->size - r->used)
		return 1;
	r->used += need;
	return 0;
}

/*
 * The room an entry of a name of len bytes takes in a reply: the FUSE
 * protocol's fixed header (struct fuse_dirent, or fuse_entry_out before it
 * for readdirplus), the name, padding to 8 bytes.  Counted here because
 * libfuse counts with strlen, twice per entry (the fit, then the add), a
 * few percent of a walk.  The init checks this against libfuse's count
 * (rd_room_checked); a mismatch falls back to it, as an entry that fits by
 * one count and not by the other would lose the lookup handed with it.
 */
static int rd_room_exact;

static size_t rd_room(int plus, const char *name, size_t len)
{
	if (!rd_room_exact)
		return plus ? fuse_add_direntry_plus(NULL, NULL, 0, name, NULL, 0)
			    : fuse_add_direntry(NULL, NULL, 0, name, NULL, 0);
	return ((plus ? 152u : 24u) + len + 7) & ~(size_t)7;
}

static void rd_room_check(void)
{
	static const char *const names[] = {"a", "ab", "abcdefg", "abcdefgh", "abcdefghi",
					    "abcdefghijklmnopq"};

	rd_room_exact = 1;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		size_t len = strlen(names[i]);

		if (rd_room(1, names[i], len) !=
		    fuse_add_direntry_plus(NULL, NULL, 0, names[i], NULL, 0) ||
		    rd_room(0, names[i], len) != fuse_add_direntry(NULL, NULL, 0, names[i], NULL, 0))
			rd_room_exact = 0;
	}
}

static int rd_fits(struct rd *r, const char *name, size_t len)
{
	return rd_room(r->plus, name, len) <= r->size - r->used;
}

static int rd_emit(void *ctx, const char *name, uint64_t st_ino, mode_t type, off_t next)
{
	struct stat st = {.st_ino = st_ino, .st_mode = type};

	if (!rd_fits(ctx, name, strlen(name)))
		return 1;
	return rd_add(ctx, name, &st, NULL, next);
}

static int rd_dots(struct rd *r, off_t off)
{
	struct stat st = {.st_mode = S_IFDIR, .st_ino = r->dir->st_ino};

	if (off < 1 && rd_add(r, ".", &st, NULL, 1))
		return 1;
	st.st_ino = r->dir->parent ? r->dir->parent->st_ino : r->dir->st_ino;
	if (off < 2 && rd_add(r, "..", &st, NULL, 2))
		return 1;
	return 0;
}

/*
 * The node of child `ce` (st_ino `ino`) for readdirplus, with one lookup, or
 * NULL.  One trip to the table: a listing nearly always reaches us for
 * names without nodes (the kernel caches listings), and mnt_node_get
 * returns the existing node if there is one.
 */
static struct mnt_node *rd_child(struct rd *r, const amber_entry *ce, uint64_t ino)
{
	struct mnt_nodeinfo info = {MK_ENTRY, 0, NULL, 0, MNT_TIMEOUT_IMMUTABLE, NULL, NULL, NULL};

	info.src = ce;
	info.st_ino = ino;
	info.snap = r->dir->snap;
	mnt_snap_hold(r->m, r->dir->snap);
	return mnt_node_get(r->m, r->dir, ce->name, &info);
}

static int rd_snapdir(struct rd *r, amber_dir *d, off_t off)
{
	size_t count = amber_dir_count(d);

	r->next = off > 2 ? off : 2;

	for (size_t i = off > 2 ? (size_t)off - 2 : 0; i < count; i++) {
		const amber_entry *ce;
		struct stat st = {0};
		struct mnt_node *n = NULL;
		int rc = amber_dir_entry_get(d, i, &ce);

		if (rc < 0)     /* a bucket of a streamed listing: what came before it first */
			return r->used ? 0 : mnt_errno(r->m, rc, r->dir->snap->id);
		if (!rd_fits(r, ce->name, ce->name_len))
			break;
		st.st_mode = type_bits(ce->type);
		st.st_ino = amber_entry_ino(r->m->a, ce);
		/* a too deep directory is listed, but only a lookup (EIO) tells */
		if (r->plus && !too_deep(r->dir, ce)) {
			if (!(n = rd_child(r, ce, st.st_ino)))
				return r->used ? 0 : ENOMEM;
			r->ids[r->nids++] = n->id;
		}
		rd_add(r, ce->name, &st, n, (off_t)(i + 3));
		r->next = (off_t)(i + 3);
	}
	r->more = r->next < (off_t)count + 2;
	return 0;
}

/*
 * A reply buffer per worker thread, kept: a directory walk sends thousands
 * of readdir requests, and a fresh buffer each (up to max_pages) would be
 * mapped and unmapped every time.  Freed when the thread ends.
 */
static pthread_key_t rd_key;
static pthread_once_t rd_once = PTHREAD_ONCE_INIT;

struct rd_buf {
	char *p;
	size_t cap;
};

static void rd_buf_free(void *v)
{
	struct rd_buf *b = v;

	free(b->p);
	free(b);
}

static void rd_key_init(void)
{
	if (pthread_key_create(&rd_key, rd_buf_free))
		abort();        /* only at the first readdir: no keys left at all */
}

static char *rd_buffer(size_t size)
{
	struct rd_buf *b;
	char *p;

	pthread_once(&rd_once, rd_key_init);
	b = pthread_getspecific(rd_key);
	if (!b) {
		if (!(b = calloc(1, sizeof(*b))))
			return NULL;
		if (pthread_setspecific(rd_key, b)) {
			free(b);
			return NULL;
		}
	}
	if (b->cap < size) {
		if (!(p = realloc(b->p, size)))
			return NULL;
		b->p = p;
		b->cap = size;
	}
	return b->p;
}

/* A virtual directory's reply (no lookups handed over), into a per-thread buffer. */
static void readdir_virtual(fuse_req_t req, struct mnt *m, struct mnt_node *dir, size_t size,
			    off_t off, int plus)
{
	struct rd r = {NULL, m, dir, rd_buffer(size), size, 0, plus, NULL, 0, 0, 0};
	int err = 0;

	if (!r.buf)
		err = ENOMEM;
	else if (!rd_dots(&r, off))
		err = mnt_layout_list(m, dir, off < 2 ? 2 : off, rd_emit, &r);
	if (err && r.used == 0)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, r.buf, r.used);
}

/* Room in b for a reply of size bytes and the ids of its entries. */
static int batch_room(struct rd_batch *b, size_t size, int plus)
{
	size_t ids = plus ? size / rd_room(1, "", 0) + 1 : 0;   /* no entry is smaller */
	void *p;

	if (b->cap < size) {
		if (!(p = realloc(b->buf, size)))
			return ENOMEM;
		b->buf = p;
		b->cap = size;
	}
	if (b->cap_ids < ids) {
		if (!(p = realloc(b->ids, ids * sizeof(*b->ids))))
			return ENOMEM;
		b->ids = p;
		b->cap_ids = ids;
	}
	return 0;
}

/* The reply to a request (off, size, plus) of directory dir into b. */
static int batch_fill(struct mnt *m, struct mnt_node *dir, amber_dir *d, struct rd_batch *b,
		      off_t off, size_t size, int plus)
{
	struct rd r = {NULL, m, dir, NULL, size, 0, plus, NULL, 0, 0, 0};
	int err = batch_room(b, size, plus);

	b->used = b->nids = 0;
	b->more = 0;
	if (err)
		return err;
	r.buf = b->buf;
	r.ids = b->ids;
	if (!rd_dots(&r, off))
		err = rd_snapdir(&r, d, off);
	b->used = r.used;
	b->nids = r.nids;
	b->off = off;
	b->size = size;
	b->plus = plus;
	b->more = r.more;       /* (0 after an error) */
	b->next = r.next;
	return err;
}

static void readdir_snap(fuse_req_t req, struct mnt *m, struct mnt_node *dir, struct dirh *h,
			 size_t size, off_t off, int plus)
{
	struct rd_batch *b;
	int err = 0;

	pthread_mutex_lock(&h->lock);
	b = &h->b[h->ahead];
	if (b->ready && b->off == off && b->size == size && b->plus == plus) {
		h->ahead ^= 1;  /* answered by the batch made ahead */
		atomic_fetch_add(&m->n.readdir_ahead, 1);
	} else {
		batch_drop(m, b);
		b = &h->b[h->ahead ^ 1];
		err = batch_fill(m, dir, h->d, b, off, size, plus);
	}
	b->ready = 0;
	if (err && b->used == 0)
		fuse_reply_err(req, err);
	else if (fuse_reply_buf(req, b->buf, b->used) == -ENOENT)
		batch_drop(m, b);       /* interrupted: the kernel took none of its lookups */
	b->nids = 0;
	if (b->more) {                  /* the next batch, while the kernel takes this one */
		struct rd_batch *a = &h->b[h->ahead];

		if (batch_fill(m, dir, h->d, a, b->next, size, plus) == 0 && a->used)
			a->ready = 1;
		else
			batch_drop(m, a);
	}
	pthread_mutex_unlock(&h->lock);
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi, int plus)
{
	struct mnt *m = M(req);         /* the reply frees req */
	struct mnt_node *dir = mnt_node_by_id(m, ino);

	if (!dir)
		fuse_reply_err(req, ESTALE);
	else if (fi->fh)
		readdir_snap(req, m, dir, (struct dirh *)(uintptr_t)fi->fh, size, off, plus);
	else
		readdir_virtual(req, m, dir, size, off, plus);
}

static void amberfs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			       struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, 0);
}

static void amberfs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
				   struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, 1);
}

/* Files -------------------------------------------------------------------------- */

/*
 * A file needs nothing of an open: the mount is read-only (the kernel
 * refuses writes and truncation before asking) and a read finds everything
 * from the inode.  So when the kernel can open files by itself, the first
 * open answers ENOSYS and the kernel stops asking, keeping the page cache
 * of files between opens (its default then): a small file costs one
 * request (its read) instead of three (open, read, release).
 */
static int do_open(struct mnt *m, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mnt_node *n = mnt_node_by_id(m, ino);

	if (!n)
		return ESTALE;
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_CREAT)))
		return EROFS;
	if (!in_snapshot(n) || n->e->type == AMBER_T_DIR)
		return EISDIR;
	if (n->e->type != AMBER_T_REG)
		return EINVAL;
	atomic_fetch_add(&m->n.opens, 1);
	if (m->no_open)
		return ENOSYS;
	fi->fh = 0;
	fi->keep_cache = 1;
	return 0;
}

static void amberfs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int err = do_open(M(req), ino, fi);

	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_open(req, fi);
}

/*
 * A read is answered straight from the decoded chunks (writev of pieces
 * pinned in the cache): no buffer to allocate and fill per request.  A
 * request spanning more pieces than MNT_READ_PIECES (mount.h) is copied
 * instead, because a short reply would read as the end of the file.
 */

struct mnt_read {
	amber_piece p[MNT_READ_PIECES];
	size_t n;
	amber_snapshot *s;      /* of the pieces */
	char *buf;              /* the copy, when the pieces were not enough */
	size_t got;
};

/*
 * Read-ahead across files: a tool that copies a tree reads its files one
 * after the other, in the order of the listing (cp -r, tar) or in name
 * order (rsync sorts its file list; a large directory lists bucket by
 * bucket), and a small file is one read.  So when the first read of a
 * small file (one object) comes right after the one of the file before it
 * in either order, the next MNT_SIBLINGS_AHEAD small files in that order
 * are decoded in the background, if the listing is at hand: their reads
 * find them in the cache, and the decoding runs on another core while the
 * tool works on the file before.  A reader that picks files (diff -r reads
 * only the changed ones) does not set it off.
 */
#define MNT_SIBLINGS_AHEAD 8
/* In a directory's read_end: the last file read continued a run (its
 * MNT_SIBLINGS_AHEAD successors are queued). */
#define READ_RUN ((uint64_t)1 << 63)

/* Sibling e of file n decoded ahead: stored in the kernel's page cache if
 * the kernel holds its inode (mount_store.c), else into the chunk cache. */
static void prefetch_one(struct mnt *m, struct mnt_node *n, const amber_entry *e)
{
	struct mnt_node *s;

	if (e->type != AMBER_T_REG || e->content != AMBER_C_BLOB || e->size == 0)
		return;
	if ((s = mnt_node_find(m, n->parent, e->name)) != NULL) {
		int file = s->kind == MK_ENTRY && s->e && s->e->type == AMBER_T_REG;
		int queued_before = file && atomic_exchange(&s->stored, 1);

		if (file && !queued_before && mnt_store_queue(m, s))
			return;         /* the store thread gives the lookup back */
		mnt_node_forget(m, s->id, 1);
		if (queued_before)
			return;
	}
	amber_file_prefetch(n->snap->s, e, 0);
}

static void prefetch_siblings(struct mnt *m, struct mnt_node *n)
{
	struct mnt_node *parent = n->parent;
	const amber_entry *self, *first;
	amber_dir *d;
	size_t count, i, k, last;
	uint64_t prev;

	if (!parent || !in_snapshot(parent) || !(d = mnt_dir_peek(m, parent)))
		return;
	if (!amber_dir_complete(d))     /* a read never waits for a listing's decoding */
		goto done;
	count = amber_dir_count(d);
	self = amber_dir_lookup(d, n->e->name, n->e->name_len);
	first = count ? amber_dir_entry(d, 0) : NULL;
	if (!self || !first)
		goto done;
	i = (size_t)(self - first);     /* a listing's entries are one array */
	prev = atomic_exchange(&parent->read_end, i + 1);
	last = (size_t)(prev & ~READ_RUN);
	/* in a run the files before the last one are queued already: only the
	 * one that comes into reach is new */
	if (last == i) {                /* the next in the listing */
		for (k = prev & READ_RUN ? i + MNT_SIBLINGS_AHEAD : i + 1;
		     k < count && k <= i + MNT_SIBLINGS_AHEAD; k++)
			prefetch_one(m, n, amber_dir_entry(d, k));
	} else if (last && amber_dir_name_next(d, last - 1, &k) == 0 && k == i) {
		for (size_t j = 1; j <= MNT_SIBLINGS_AHEAD && amber_dir_name_next(d, k, &k) == 0 &&
				   k < count; j++)
			if (!(prev & READ_RUN) || j == MNT_SIBLINGS_AHEAD)
				prefetch_one(m, n, amber_dir_entry(d, k));
	} else {
		goto done;
	}
	atomic_store(&parent->read_end, (i + 1) | READ_RUN);
done:
	mnt_dir_put(m, d);
}

static int do_read(struct mnt *m, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi, struct mnt_read *r)
{
	struct mnt_node *n = mnt_node_by_id(m, ino);
	int rc;

	if (!n || !in_snapshot(n))
		return n ? EISDIR : ESTALE;
	if (off < 0 || (uint64_t)off >= n->e->size)
		return 0;
	size = size < MNT_READ_MAX ? size : MNT_READ_MAX;
	if ((uint64_t)off + size > n->e->size)
		size = (size_t)(n->e->size - (uint64_t)off);
	r->s = n->snap->s;
	rc = amber_file_pieces(r->p, MNT_READ_PIECES, &r->n, &r->got, r->s, n->e, (uint64_t)off,
			       size);
	if (rc == 0 && r->got < size) {
		amber_file_pieces_release(n->snap->s, r->p, r->n);
		r->n = r->got = 0;
		if (!(r->buf = malloc(size ? size : 1)))
			return ENOMEM;
		rc = amber_file_read(&r->got, n->snap->s, n->e, (uint64_t)off, r->buf, size);
	}
	if (rc)
		return node_errno(m, n, rc);
	atomic_fetch_add(&m->n.reads, 1);
	atomic_fetch_add(&m->n.read_bytes, r->got);
	/* no read-ahead of a file's next chunks here: the kernel reads ahead
	 * (MNT_READAHEAD_KB, several requests in flight on the worker threads),
	 * and a decoder of its own fell behind it, decoding chunks already
	 * read, which then stayed in the cache */
	if (off == 0 && n->e->content == AMBER_C_BLOB)
		prefetch_siblings(m, n);
	return 0;
}

static void amberfs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			    struct fuse_file_info *fi)
{
	struct mnt_read r = {.n = 0};
	struct iovec iov[MNT_READ_PIECES];
	int err = do_read(M(req), ino, size, off, fi, &r);

	if (err) {
		fuse_reply_err(req, err);
	} else if (r.buf || r.n == 0) {
		fuse_reply_buf(req, r.buf, r.got);
	} else {
		for (size_t i = 0; i < r.n; i++)
			iov[i] = (struct iovec){(void *)(uintptr_t)r.p[i].data, r.p[i].len};
		fuse_reply_iov(req, iov, (int)r.n);
	}
	/* (the node, so its snapshot, outlives the request).  The chunks read
	 * to their end leave the cache: the kernel's page cache has their bytes
	 * now (reads come in order, the kernel reading ahead), and their memory
	 * decodes the next ones while it is still in the processor's caches */
	if (r.n)
		amber_file_pieces_consumed(r.s, r.p, r.n);
	free(r.buf);
}

/* Extended attributes ------------------------------------------------------------ */

/* One attribute name/value pair being offered; values point into the node. */
struct xa {
	const char *name;
	const void *value;
	size_t len;
	int hidden;             /* provenance: gettable, listed only on request */
	const char *want;       /* the name asked for; NULL: names only (a listing) */
	char scratch[1536];
};

typedef int (*xa_fn)(void *ctx, struct xa *x);

static int xa_text(xa_fn fn, void *ctx, struct xa *x, const char *name, int hidden)
{
	x->name = name;
	x->value = x->scratch;
	x->len = strlen(x->scratch);
	x->hidden = hidden;
	return fn(ctx, x);
}

static void hex20(char out[41], const uint8_t oid[20])
{
	for (int i = 0; i < 20; i++)
		snprintf(out + 2 * i, 3, "%02x", oid[i]);
}

/* Tags joined with ',' into a buffer, as much of them as fits. */
struct tagjoin {
	char *out;
	size_t cap, len;
};

static int join_tag(const char *tag, void *payload)
{
	struct tagjoin *j = payload;

	if (j->len < j->cap)
		j->len += (size_t)snprintf(j->out + j->len, j->cap - j->len, "%s%s",
					   j->len ? "," : "", tag);
	return 0;
}

static int xa_snaproot(struct mnt *m, const struct mnt_node *n, xa_fn fn, void *ctx,
		       struct xa *x)
{
	const amber_snapinfo *info = amber_snapshot_info(n->snap->s);
	int r;

	amber_time_format(x->scratch, info->time_ns, 9);
	r = xa_text(fn, ctx, x, XATTR_PREFIX "time", 1);
	snprintf(x->scratch, sizeof(x->scratch), "%s", info->stream);
	if (!r)
		r = xa_text(fn, ctx, x, XATTR_PREFIX "stream", 1);
	if (!r) {       /* listing the tags reads every tag ref: only when asked */
		struct tagjoin j = {x->scratch, sizeof(x->scratch), 0};

		x->scratch[0] = '\0';
		if (x->want && strcmp(x->want, XATTR_PREFIX "tags") == 0 &&
		    amber_snapshot_tags(n->snap->s, join_tag, &j) < 0)
			return mnt_errno(m, AMBER_ERROR, "tags");
		r = xa_text(fn, ctx, x, XATTR_PREFIX "tags", 1);
	}
	return r;
}

/*
 * The daemon's resident size, and the part of it that is libgit2's pack
 * mappings (windows of .pack files, whole .idx files), from the kernel's
 * own accounting.
 */
static void proc_memory(size_t *rss, size_t *pack, size_t *idx)
{
	char line[4352];
	size_t kb, *cur = NULL;
	FILE *f = fopen("/proc/self/smaps", "re");

	*rss = *pack = *idx = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		size_t len = strcspn(line, "\n");

		line[len] = '\0';
		if (strchr("0123456789abcdef", line[0]) && strchr(line, '-') &&
		    strchr(line, ' ')) {      /* a mapping's header: its file last */
			cur = NULL;
			if (len > 5 && strcmp(line + len - 5, ".pack") == 0)
				cur = pack;
			else if (len > 4 && strcmp(line + len - 4, ".idx") == 0)
				cur = idx;
		} else if (sscanf(line, "Rss: %zu kB", &kb) == 1) {
			*rss += kb << 10;
			if (cur)
				*cur += kb << 10;
		}
	}
	fclose(f);
}

/*
 * user.amberfs.stats: counters, then each part of the daemon's memory with
 * its bound (amberfs(1), STATISTICS).  bound_bytes is the sum of the
 * bounds: what the parts may hold together, beyond the program itself.
 */
static void stats_line(struct mnt *m, char *out, size_t cap)
{
	amber_counters c;
	amber_memory mem;
	struct mallinfo2 mi = mallinfo2();
	size_t nodes, node_bytes, dir_bytes, rss, pack, idx;
	size_t buffers = (size_t)MNT_MAX_THREADS * (MNT_READ_MAX + 4096 + AMBER_READER_THREAD_BYTES);
	uint64_t pool, pool_max;
	unsigned long long bound;

	amber_archive_counters(m->a, &c);
	amber_archive_memory(m->a, &mem);
	mnt_table_usage(m, &nodes, &node_bytes, &dir_bytes);
	proc_memory(&rss, &pack, &idx);
	amber_decode_pool_usage(&pool, &pool_max);
	bound = (unsigned long long)mem.cache_max + m->o.dir_cache + m->o.node_cache +
		mem.pack_map_max + mem.git_objects_max + buffers + pool_max;
	snprintf(out, cap,
		 "lookups=%llu opens=%llu reads=%llu read_bytes=%llu chunks_decoded=%llu "
		 "dirs_decoded=%llu cache_hits=%llu readdir_ahead=%llu stored=%llu "
		 "rss_bytes=%zu bound_bytes=%llu "
		 "chunk_cache_bytes=%llu chunk_cache_max=%llu "
		 "dir_cache_bytes=%zu dir_cache_max=%zu "
		 "nodes=%zu node_bytes=%zu node_max=%zu nodes_dropped=%llu node_arena_bytes=%zu "
		 "pack_map_bytes=%zu pack_map_max=%llu idx_map_bytes=%zu "
		 "git_cache_bytes=%llu git_cache_max=%llu "
		 "decode_pool_bytes=%llu decode_pool_max=%llu "
		 "request_buffers_max=%zu heap_bytes=%zu heap_free_bytes=%zu",
		 (unsigned long long)atomic_load(&m->n.lookups),
		 (unsigned long long)atomic_load(&m->n.opens),
		 (unsigned long long)atomic_load(&m->n.reads),
		 (unsigned long long)atomic_load(&m->n.read_bytes),
		 (unsigned long long)c.chunks_decoded, (unsigned long long)c.dirs_decoded,
		 (unsigned long long)c.cache_hits,
		 (unsigned long long)atomic_load(&m->n.readdir_ahead),
		 (unsigned long long)atomic_load(&m->n.stored), rss, bound,
		 (unsigned long long)mem.cache_bytes, (unsigned long long)mem.cache_max,
		 dir_bytes, m->o.dir_cache, nodes, node_bytes, m->o.node_cache,
		 (unsigned long long)atomic_load(&m->n.nodes_dropped), mnt_slab_bytes(&m->slab),
		 pack, (unsigned long long)mem.pack_map_max, idx,
		 (unsigned long long)mem.git_objects, (unsigned long long)mem.git_objects_max,
		 (unsigned long long)pool, (unsigned long long)pool_max,
		 buffers, mi.arena + mi.hblkhd, mi.fordblks);
}

static int xa_stored(const amber_entry *e, xa_fn fn, void *ctx, struct xa *x)
{
	for (size_t i = 0; i < e->nxattrs; i++) {
		x->name = e->xattrs[i].name;
		x->value = e->xattrs[i].value;
		x->len = e->xattrs[i].value_len;
		x->hidden = 0;
		if (fn(ctx, x))
			return 1;
	}
	return 0;
}

/* Offer every attribute of n to fn until it returns non-zero. */
/* Each attribute of n to fn; `want` as struct xa's. */
static int xa_each(struct mnt *m, const struct mnt_node *n, const char *want, xa_fn fn,
		   void *ctx)
{
	const amber_entry *e = n->e;
	struct xa x;
	int r = 0;

	x.want = want;
	if (n->kind == MK_ROOT) {
		stats_line(m, x.scratch, sizeof(x.scratch));
		return xa_text(fn, ctx, &x, XATTR_PREFIX "stats", 0);
	}
	if (!in_snapshot(n))
		return 0;
	snprintf(x.scratch, sizeof(x.scratch), "%s", n->snap->id);
	r = xa_text(fn, ctx, &x, XATTR_PREFIX "snapshot", 1);
	if (!r && n->kind == MK_SNAPROOT)
		r = xa_snaproot(m, n, fn, ctx, &x);
	if (!r && e->content != AMBER_C_NONE) {
		hex20(x.scratch, e->content == AMBER_C_BLOB ? e->link.oid : e->tree_oid);
		r = xa_text(fn, ctx, &x, XATTR_PREFIX "oid", 1);
	}
	return r ? r : xa_stored(e, fn, ctx, &x);
}

struct xa_get {
	const char *name;
	size_t size;
	char *out;
	size_t len;
	int found;
};

static int xa_get_cb(void *ctx, struct xa *x)
{
	struct xa_get *g = ctx;

	if (strcmp(x->name, g->name) != 0)
		return 0;
	g->found = 1;
	g->len = x->len;
	if (g->size && g->len <= g->size && (g->out = malloc(g->len ? g->len : 1)))
		memcpy(g->out, x->value, x->len);
	return 1;
}

static int do_getxattr(struct mnt *m, fuse_ino_t ino, struct xa_get *g)
{
	struct mnt_node *n = mnt_node_by_id(m, ino);

	if (!n)
		return ESTALE;
	xa_each(m, n, g->name, xa_get_cb, g);
	if (!g->found)
		return ENODATA;
	if (g->size && g->len > g->size)
		return ERANGE;
	if (g->size && !g->out)
		return ENOMEM;
	return 0;
}

static void amberfs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct xa_get g = {name, size, NULL, 0, 0};
	int err = do_getxattr(M(req), ino, &g);

	if (err)
		fuse_reply_err(req, err);
	else if (size == 0)   /* the stats move: room for them to grow before the read */
		fuse_reply_xattr(req, g.len + (strcmp(name, XATTR_PREFIX "stats") ? 0 : 256));
	else
		fuse_reply_buf(req, g.out, g.len);
	free(g.out);
}

struct xa_list {
	char *buf;
	size_t cap, len;
	int show_hidden;
};

static int xa_list_cb(void *ctx, struct xa *x)
{
	struct xa_list *l = ctx;
	size_t k = strlen(x->name) + 1;

	if (x->hidden && !l->show_hidden)
		return 0;
	if (l->buf && l->len + k <= l->cap)
		memcpy(l->buf + l->len, x->name, k);
	l->len += k;
	return 0;
}

/*
 * The provenance attributes are not listed unless -o show_provenance: cp -a
 * and rsync -X copy what listxattr shows, and would stamp every copy with
 * user.amberfs.* names the source never had (CephFS hides its virtual
 * xattrs for the same reason).  getxattr by name always works.
 */
static int do_listxattr(struct mnt *m, fuse_ino_t ino, size_t size, struct xa_list *l)
{
	struct mnt_node *n = mnt_node_by_id(m, ino);

	if (!n)
		return ESTALE;
	xa_each(m, n, NULL, xa_list_cb, l);
	if (size == 0)
		return 0;
	if (l->len > size)
		return ERANGE;
	if (!(l->buf = malloc(l->len ? l->len : 1)))
		return ENOMEM;
	l->cap = l->len;
	l->len = 0;
	xa_each(m, n, NULL, xa_list_cb, l);
	return 0;
}

static void amberfs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct xa_list l = {NULL, 0, 0, M(req)->o.show_provenance};
	int err = do_listxattr(M(req), ino, size, &l);

	if (err)
		fuse_reply_err(req, err);
	else if (size == 0)
		fuse_reply_xattr(req, l.len);
	else
		fuse_reply_buf(req, l.buf, l.len);
	free(l.buf);
}

/* The file system ---------------------------------------------------------------- */

static void amberfs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv = {0};

	sv.f_bsize = MNT_BLKSIZE;
	sv.f_frsize = 512;
	sv.f_namemax = AMBER_NAME_MAX;
	sv.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
	fuse_reply_statfs(req, &sv);
}

/*
 * Stored system.posix_acl_* attributes are served as they were, so when
 * the kernel checks permissions (default_permissions, always on for a
 * shared mount) it must also enforce them: FUSE_CAP_POSIX_ACL.  Without it
 * the kernel checks the mode bits alone, and a user whom an ACL denied at
 * the source could read the file through the mount.  A single-user mount
 * without default_permissions checks nothing, as before: its user holds
 * the key.
 */
static void want_acls(struct mnt *m, struct fuse_conn_info *conn)
{
	if (!m->o.default_permissions)
		return;
	if (conn->capable & FUSE_CAP_POSIX_ACL)
		conn->want |= FUSE_CAP_POSIX_ACL;
	else
		mnt_log(m, "%s: the kernel cannot enforce POSIX ACLs: access is checked by "
			"the mode bits alone", m->mountpoint_abs);
}

/*
 * The kernel reads ahead of a sequential reader by the read-ahead of the
 * mount's backing device (bdi), 128 KiB by default, in requests of at most
 * max_pages.  A larger window keeps several requests of 1 MiB in flight,
 * which the worker threads decode on all cores while the reader consumes
 * the previous ones.  FUSE offers no way to ask for it at INIT (the reply's
 * max_readahead can only lower the bdi's value), so the daemon raises
 * /sys/class/bdi/MAJ:MIN/read_ahead_kb itself, once, on the first request
 * after INIT (a file opened later starts with the new window).  Writing it
 * needs root; without it the default stays, and nothing else changes.
 */
static void raise_readahead(struct mnt *m)
{
	char line[8192], path[128], dev[32] = "", mp[4096], want[32];
	FILE *f;
	int fd, n, cur = 0;

	if (atomic_load(&m->readahead_set) || atomic_exchange(&m->readahead_set, 1))
		return;
	if (!(f = fopen("/proc/self/mountinfo", "re")))
		return;
	while (fgets(line, sizeof(line), f)) {
		char d[32], *sep = strstr(line, " - ");

		/* id parent MAJ:MIN root mountpoint ... - fstype; the newest mount wins */
		if (sep && strncmp(sep + 3, "fuse", 4) == 0 &&
		    sscanf(line, "%*u %*u %31s %*s %4095s", d, mp) == 2 &&
		    strcmp(mp, m->mountpoint_abs) == 0) /* (no octal escapes: no space in it) */
			memcpy(dev, d, sizeof(dev));
	}
	fclose(f);
	if (!dev[0] || strchr(dev, '/'))
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = (int)read(fd, line, sizeof(line) - 1);
		line[n > 0 ? n : 0] = '\0';
		cur = (int)strtol(line, NULL, 10); /* garbage reads as 0: raise it */
		close(fd);
	}
	if (cur >= (int)MNT_READAHEAD_KB || (fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
		return;
	n = snprintf(want, sizeof(want), "%u\n", MNT_READAHEAD_KB);
	if (write(fd, want, (size_t)n) != n && m->o.debug)
		mnt_log(m, "%s: cannot raise the read-ahead to %u KiB: %s", path, MNT_READAHEAD_KB,
			strerror(errno));
	close(fd);
}

/* max_write sets max_pages (libfuse 3.14), which bounds every read request. */
static void amberfs_op_init(void *userdata, struct fuse_conn_info *conn)
{
	want_acls(userdata, conn);
	rd_room_check();
	conn->max_write = MNT_READ_MAX;
	if (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)
		((struct mnt *)userdata)->no_open = 1;
	conn->max_readahead = MNT_READAHEAD_KB * 1024; /* lowered to the kernel's offer */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/*
	 * Always readdirplus, not "auto": with auto the kernel asks for plus
	 * only on the first batch of a directory, and du, ls -l or rsync then
	 * look every other entry up, one request each (20k lookups in a
	 * 20k-entry directory).  The node each entry costs is made anyway by
	 * the lookup that follows.
	 */
	if (conn->capable & FUSE_CAP_READDIRPLUS) {
		conn->want |= FUSE_CAP_READDIRPLUS;
		conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	}
	conn->want &= ~(unsigned)FUSE_CAP_CACHE_SYMLINKS;   /* latest moves */
	conn->time_gran = 1;
}

/* Everything that would change the tree ------------------------------------------- */

static void amberfs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			       struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			     dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
			       const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
			      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
			    const char *newname)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			      struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
			     off_t off, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
				const char *value, size_t size, int flags)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
				 off_t length, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void amberfs_op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
				       struct fuse_file_info *fi_in, fuse_ino_t ino_out,
				       off_t off_out, struct fuse_file_info *fi_out,
				       size_t len, int flags)
{
	fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops mnt_ops = {
	.init = amberfs_op_init,
	.lookup = amberfs_op_lookup,
	.forget = amberfs_op_forget,
	.forget_multi = amberfs_op_forget_multi,
	.getattr = amberfs_op_getattr,
	.readlink = amberfs_op_readlink,
	.opendir = amberfs_op_opendir,
	.readdir = amberfs_op_readdir,
	.readdirplus = amberfs_op_readdirplus,
	.releasedir = amberfs_op_releasedir,
	.open = amberfs_op_open,
	.read = amberfs_op_read,
	.getxattr = amberfs_op_getxattr,
	.listxattr = amberfs_op_listxattr,
	.statfs = amberfs_op_statfs,
	.setattr = amberfs_op_setattr,
	.mknod = amberfs_op_mknod,
	.mkdir = amberfs_op_mkdir,
	.unlink = amberfs_op_unlink,
	.rmdir = amberfs_op_unlink,
	.symlink = amberfs_op_symlink,
	.rename = amberfs_op_rename,
	.link = amberfs_op_link,
	.create = amberfs_op_create,
	.write = amberfs_op_write,
	.setxattr = amberfs_op_setxattr,
	.removexattr = amberfs_op_removexattr,
	.fallocate = amberfs_op_fallocate,
	.copy_file_range = amberfs_op_copy_file_range,
};
