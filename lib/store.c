/*
 * The git object store.
 *
 * Handles and locking.  An amber_store owns one git_repository and its
 * git_odb.  libgit2 objects are not thread-safe except git_odb, so
 * existence checks and refreshes go straight to the odb from any thread,
 * and object reads go to the odb's pack set (store_odb.c), which reads
 * packs itself with pread, from any number of threads at once; everything
 * that touches the repository (refs, config) holds store->mu.
 *
 * Pack writer.  Every object becomes one undeltified pack entry:
 *
 *	type/size varint | 78 01 | stored deflate blocks (<= 65535 B) | adler32
 *
 * An entry's bytes do not depend on where it lands in the pack (no
 * OFS_DELTA), so its id, adler32 and crc32 are computed outside the
 * writer's lock, in parallel on the caller's threads; only the write
 * itself is serialised.  The object count in the pack header is known
 * only at the end, and SHA-1 cannot be resumed after editing a prefix, so
 * commit patches the count and then hashes the file back from the page
 * cache (cheap next to writing it).  The writer's oid set only covers the
 * pack being written: once a pack is committed its objects are found by
 * git_odb_exists, and a rollover bumps `gen` so that an add that checked
 * the odb before the rollover checks again.
 *
 * Durability: pack and index are fsynced under temporary names in
 * ARCHIVE/amberfs-tmp/, the .pack is renamed into objects/pack/ and the
 * directory fsynced, then the .idx (git only sees a pack once its index
 * exists, so a crash never exposes an index without its pack).
 */
#include "store.h"

#include "error.h"
#include "store_odb.h"

#include <assert.h>
#include <dirent.h>
#include <fnmatch.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <git2.h>
#include <git2/sys/repository.h>
#include <openssl/evp.h>
#include <zlib.h>

#define TMPDIR_NAME "amberfs-tmp"
#define LOCK_NAME "amberfs.lock"
#define PACK_ROLLOVER ((uint64_t)512 << 20)
#define STORED_BLOCK 65535u
#define IOV_BATCH 128
#define HASH_BLOCK ((size_t)1 << 20)
#define WRITEBACK_STEP ((uint64_t)32 << 20)

struct amber_store {
	char *path;
	pthread_mutex_t mu;	/* protects repo (refs, config) */
	git_repository *repo;
	git_odb *odb;		/* thread-safe; used without mu */
	pthread_mutex_t lock_mu; /* protects lock_fd, lock_refs */
	int lock_fd;		/* writer lock, -1 if not held */
	int lock_refs;		/* holders in this process (threads of one writer) */
	uint64_t rollover;	/* pack size that starts a new pack; 0: PACK_ROLLOVER */
	amber_packset *packs;	/* the odb's pack backend, owned by odb */
	atomic_ullong listings;	/* of objects/pack by others than the pack set (repack) */
};

/* Errors ----------------------------------------------------------------- */

static const char *git_msg(void)
{
	const git_error *e = git_error_last();

	return e && e->message ? e->message : "unknown libgit2 error";
}

/* Record `code` with a message naming the object and libgit2's reason. */
static int git_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int git_fail(int code, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return amber_fail(code, "%s: %s", what, git_msg());
}

/* Global setup ------------------------------------------------------------ */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_rc;
static EVP_MD *sha1_md;

static void global_init_once(void)
{
	/* Fetch once: EVP_sha1() would look the provider up on every digest. */
	sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL);
	if (!sha1_md || git_libgit2_init() < 0) {
		global_rc = AMBER_ERROR;
		return;
	}
	/* Invariant 2 needs fsync; the AEAD authenticates reads (DESIGN). */
	if (git_libgit2_opts(GIT_OPT_ENABLE_FSYNC_GITDIR, 1) < 0 ||
	    git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 0) < 0 ||
	    git_libgit2_opts(GIT_OPT_SET_MWINDOW_FILE_LIMIT, (size_t)128) < 0 ||
	    /* pack windows are mmapped and count in a reader's resident size:
	     * keep them small so a mount's memory stays near its cache cap */
	    git_libgit2_opts(GIT_OPT_SET_MWINDOW_SIZE, (size_t)8 << 20) < 0 ||
	    git_libgit2_opts(GIT_OPT_SET_MWINDOW_MAPPED_LIMIT, (size_t)32 << 20) < 0 ||
	    /* libgit2's object cache keeps small trees; our own cache bounds
	     * what matters, so keep this one small too */
	    git_libgit2_opts(GIT_OPT_SET_CACHE_MAX_SIZE, (ssize_t)16 << 20) < 0 ||
	    /* archives on WORM media or copies owned by another user must open */
	    git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0) < 0)
		global_rc = AMBER_ERROR;
}

int amber_store_global_init(void)
{
	pthread_once(&global_once, global_init_once);
	if (global_rc < 0)
		return amber_fail(AMBER_ERROR, "cannot initialise libgit2 or OpenSSL SHA-1");
	return 0;
}

void amber_store_memory(size_t *objects, size_t *objects_max, size_t *mapped_max)
{
	ssize_t now = 0, max = 0;

	*mapped_max = 0;
	if (git_libgit2_opts(GIT_OPT_GET_CACHED_MEMORY, &now, &max) < 0 || now < 0 || max < 0)
		now = max = 0;
	*objects = (size_t)now;
	*objects_max = (size_t)max;
	if (git_libgit2_opts(GIT_OPT_GET_MWINDOW_MAPPED_LIMIT, mapped_max) < 0)
		*mapped_max = 0;
}

/* Small file helpers ------------------------------------------------------ */

static char *path_join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 2);

	if (!p)
		return NULL;
	memcpy(p, a, la);
	p[la] = '/';
	memcpy(p + la + 1, b, lb + 1);
	return p;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return amber_fail_errno("open %s", dir);
	if (fsync(fd) < 0)
		rc = amber_fail_errno("fsync %s", dir);
	close(fd);
	return rc;
}

/* Write all of iov[0..n), retrying short writes. */
static int writev_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t r = writev(fd, iov, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

static int pwrite_all(int fd, const void *p, size_t n, off_t off)
{
	while (n > 0) {
		ssize_t r = pwrite(fd, p, n, off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		p = (const uint8_t *)p + r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Open, init, free -------------------------------------------------------- */

static int refused_fail(amber_store *s, const char *missing);

/*
 * The repository reads objects through our odb (store_odb.c), whose pack
 * backend checks every pack index before libgit2 is given its pack, at
 * open and whenever a pack appears later.  A damaged index found at open
 * refuses the archive.
 */
static int store_new(amber_store **out, const char *path, git_repository *repo)
{
	amber_store *s = calloc(1, sizeof(*s));
	int rc;

	if (!s || !(s->path = strdup(path))) {
		free(s);
		git_repository_free(repo);
		return amber_fail(AMBER_ERROR, "out of memory opening %s", path);
	}
	s->repo = repo;
	s->lock_fd = -1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->lock_mu, NULL);
	rc = amber_odb_open(&s->odb, &s->packs, git_repository_path(repo));
	if (rc == 0 && git_repository_set_odb(repo, s->odb) < 0)
		rc = git_fail(AMBER_ERROR, "%s: cannot open object database", path);
	if (rc == 0)
		rc = refused_fail(s, NULL);
	if (rc < 0) {
		amber_store_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* 0 if `path` may become an archive: missing, or an empty directory. */
static int check_init_target(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	int rc = 0;

	if (stat(path, &st) < 0)
		return errno == ENOENT ? 0 : amber_fail_errno("%s", path);
	if (!S_ISDIR(st.st_mode))
		return amber_fail(AMBER_EEXISTS, "%s exists and is not a directory", path);
	d = opendir(path);
	if (!d)
		return amber_fail_errno("%s", path);
	while ((de = readdir(d)) && rc == 0) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			rc = amber_fail(AMBER_EEXISTS, "%s exists and is not empty", path);
	}
	closedir(d);
	return rc;
}

/*
 * Archive config: ciphertext does not compress, so git and libgit2 should
 * not try; gc must not repack behind our back; core.fsync (not the
 * deprecated core.fsyncObjectFiles, which makes git warn on every command)
 * makes git itself durable too.
 */
static int set_config(git_repository *repo, const char *path)
{
	git_config *cfg = NULL, *local = NULL;
	int rc = -1;

	if (git_repository_config(&cfg, repo) < 0 ||
	    git_config_open_level(&local, cfg, GIT_CONFIG_LEVEL_LOCAL) < 0)
		goto done;
	if (git_config_set_int32(local, "core.compression", 0) < 0 ||
	    git_config_set_int32(local, "pack.compression", 0) < 0 ||
	    git_config_set_int32(local, "gc.auto", 0) < 0 ||
	    git_config_set_bool(local, "receive.denyNonFastForwards", 1) < 0 ||
	    git_config_set_string(local, "core.fsync", "committed") < 0)
		goto done;
	rc = 0;
done:
	if (rc < 0)
		rc = git_fail(AMBER_ERROR, "%s: cannot write git config", path);
	git_config_free(local);
	git_config_free(cfg);
	return rc;
}

int amber_store_init(amber_store **out, const char *path)
{
	git_repository *repo = NULL;
	int rc;

	*out = NULL;
	rc = check_init_target(path);
	if (rc < 0)
		return rc;
	if (git_repository_init(&repo, path, 1) < 0)
		return git_fail(AMBER_ERROR, "%s: cannot create repository", path);
	rc = set_config(repo, path);
	/* HEAD names the default stream, so plain git tools find it */
	if (rc == 0 && git_repository_set_head(repo, "refs/heads/main") < 0)
		rc = git_fail(AMBER_ERROR, "%s: cannot set HEAD", path);
	if (rc < 0) {
		git_repository_free(repo);
		return rc;
	}
	return store_new(out, path, repo);
}

int amber_store_open(amber_store **out, const char *path)
{
	const unsigned flags = GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE;
	git_repository *repo = NULL;
	struct stat st;
	int err;

	*out = NULL;
	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return amber_fail(AMBER_ENOTFOUND, "%s: no such archive", path);
		return amber_fail_errno("%s", path);
	}
	err = git_repository_open_ext(&repo, path, flags, NULL);
	if (err == GIT_ENOTFOUND)
		return amber_fail(AMBER_ENOTARCHIVE, "%s is not an amberfs archive (not a git repository)",
				  path);
	if (err < 0)
		return git_fail(AMBER_ERROR, "%s: cannot open repository", path);
	return store_new(out, path, repo);
}

/*
 * libgit2 shares one pack handle (its index map and its windows) between
 * every object database that names the pack by the same path, and keeps
 * it while any of them is open: a twin naming objects/ as the archive's
 * store does would hand the walk the store's own handles, whose pages
 * stay mapped as long as the archive is open.  "ARCHIVE/./objects" names the
 * same directory by another path, so the twin's packs are its own and are
 * unmapped when it is freed.  (Were libgit2 to share them anyway, reads
 * would still be correct; only the walk's memory would grow again, which
 * itest_history_scale catches.)
 */
int amber_store_open_twin(amber_store **out, amber_store *s)
{
	char *gitdir = path_join(s->path, ".");
	amber_store *t = calloc(1, sizeof(*t));
	int rc;

	*out = NULL;
	if (!gitdir || !t || !(t->path = strdup(s->path))) {
		free(gitdir);
		free(t);
		return amber_fail(AMBER_ERROR, "out of memory opening %s", s->path);
	}
	t->lock_fd = -1;
	pthread_mutex_init(&t->mu, NULL);
	pthread_mutex_init(&t->lock_mu, NULL);
	/* the same checked pack backend as the store's, under the other path */
	rc = amber_odb_open(&t->odb, &t->packs, gitdir);
	if (rc == 0)
		rc = refused_fail(t, NULL);
	free(gitdir);
	if (rc < 0) {
		amber_store_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

void amber_store_free(amber_store *s)
{
	if (!s)
		return;
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	git_odb_free(s->odb);
	git_repository_free(s->repo);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->lock_mu);
	free(s->path);
	free(s);
}

const char *amber_store_path(const amber_store *s)
{
	return s->path;
}

/* Objects ------------------------------------------------------------------ */

static const char *type_name(int type)
{
	switch (type) {
	case AMBER_GIT_COMMIT: return "commit";
	case AMBER_GIT_TREE: return "tree";
	case AMBER_GIT_BLOB: return "blob";
	case AMBER_GIT_TAG: return "tag";
	}
	assert(!"bad object type");
	return "blob";
}

static int from_git_type(git_object_t t)
{
	switch (t) {
	case GIT_OBJECT_COMMIT: return AMBER_GIT_COMMIT;
	case GIT_OBJECT_TREE: return AMBER_GIT_TREE;
	case GIT_OBJECT_BLOB: return AMBER_GIT_BLOB;
	case GIT_OBJECT_TAG: return AMBER_GIT_TAG;
	default: return 0;
	}
}

/*
 * A failed read is corruption unless the object is missing or we are.  A
 * missing object may be in a pack that was refused: then say which, and
 * the archive is corrupt rather than the object merely absent.
 */
static int read_fail(amber_store *s, int err, const char *hex)
{
	const git_error *e = git_error_last();

	if (err == GIT_ENOTFOUND)
		return refused_fail(s, hex) < 0 ? amber_error_code()
			: amber_fail(AMBER_ENOTFOUND, "object %s not found", hex);
	if (e && (e->klass == GIT_ERROR_NOMEMORY || e->klass == GIT_ERROR_OS))
		return git_fail(AMBER_ERROR, "object %s", hex);
	return git_fail(AMBER_ECORRUPT, "object %s is unreadable", hex);
}

/* Bound the size from the entry header before libgit2 inflates the object. */
static int read_check_size(amber_store *s, const git_oid *id, const char *hex, size_t max)
{
	size_t len;
	git_object_t t;
	int err = git_odb_read_header(&len, &t, s->odb, id);

	if (err < 0)
		return read_fail(s, err, hex);
	if (len > max)
		return amber_fail(AMBER_ECORRUPT, "object %s: %zu bytes, more than the %zu allowed",
				  hex, len, max);
	return 0;
}

static int read_once(amber_buf *out, int *type_out, amber_store *s, const git_oid *id,
		     const char *hex, size_t max)
{
	git_odb_object *obj = NULL;
	size_t len;
	int err, type;

	err = read_check_size(s, id, hex, max);
	if (err < 0)
		return err;
	err = git_odb_read(&obj, s->odb, id);
	if (err < 0)
		return read_fail(s, err, hex);
	len = git_odb_object_size(obj);
	type = from_git_type(git_odb_object_type(obj));
	if (!type || len > max)
		err = amber_fail(AMBER_ECORRUPT, "object %s: bad type or size", hex);
	else if (amber_buf_reserve(out, len) < 0)
		err = amber_fail(AMBER_ECORRUPT, "object %s: %zu bytes exceed the buffer limit",
				 hex, len);
	else
		amber_buf_put(out, git_odb_object_data(obj), len);
	git_odb_object_free(obj);
	if (err == 0 && type_out)
		*type_out = type;
	return err;
}

struct into_buf {
	amber_buf *out;
	size_t at;		/* where the object starts in out */
};

static void *buf_room(void *ctx, size_t len)
{
	struct into_buf *ib = ctx;

	if (amber_buf_reserve(ib->out, len) < 0)
		return NULL;
	ib->at = ib->out->len;
	return len ? ib->out->data + ib->out->len : (void *)ib; /* nothing is written */
}

/*
 * The hot path: the packs are read by pread and zlib with no lock but the
 * pack set's shared one, so the mount's threads decode objects at once
 * (git_odb_read holds the odb's mutex across every backend call).
 */
static int read_packed(amber_buf *out, int *type_out, amber_store *s, const uint8_t oid[20],
		       const char *hex, size_t max)
{
	struct into_buf ib = {out, out->len};
	size_t len = 0, room = out->max ? out->max : AMBER_BUF_DEFAULT_MAX;
	int type = 0, rc;

	room = room > out->len ? room - out->len : 0;
	if (max > room)		/* what the buffer can take is a bound as well */
		max = room;
	rc = amber_packset_read(&type, &len, s->packs, oid, max, hex, buf_room, &ib);
	if (rc < 0)
		return rc;
	type = from_git_type((git_object_t)type);
	if (!type)
		return amber_fail(AMBER_ECORRUPT, "object %s: bad type", hex);
	out->len = ib.at + len;
	if (type_out)
		*type_out = type;
	return 0;
}

/*
 * A repack (lib/repack.c) may delete the pack that held the object after
 * the odb last scanned objects/pack.  Rescan once and look again before
 * reporting the object missing or corrupt.  Objects in no pack (loose
 * ones, or a pack that appeared since the last scan) go through the odb,
 * which rescans on a miss.
 */
int amber_store_read(amber_buf *out, int *type_out, amber_store *s, const uint8_t oid[20],
		     size_t max)
{
	git_oid id;
	char hex[41];
	int err;

	amber_oid_tohex(hex, oid);
	err = read_packed(out, type_out, s, oid, hex, max);
	if (err != AMBER_ENOTFOUND)
		return err;
	git_oid_fromraw(&id, oid);
	err = read_once(out, type_out, s, &id, hex, max);
	if (err < 0 && git_odb_refresh(s->odb) == 0)
		err = read_once(out, type_out, s, &id, hex, max);
	return err;
}

int amber_store_exists(amber_store *s, const uint8_t oid[20])
{
	git_oid id;

	git_oid_fromraw(&id, oid);
	return git_odb_exists(s->odb, &id) ? 1 : 0;
}

/*
 * The odb's refresh is our pack backend's scan: new packs are checked
 * before they are loaded, removed ones let go.  A writer does not build on
 * an archive with a damaged pack, so a refused one fails the refresh.
 */
int amber_store_refresh(amber_store *s)
{
	if (git_odb_refresh(s->odb) < 0)
		return git_fail(AMBER_ERROR, "%s: cannot rescan pack files", s->path);
	return refused_fail(s, NULL);
}

/*
 * 0 if no pack index was refused, else AMBER_ECORRUPT naming the first one
 * and the fix; `missing` is the object a read did not find (NULL: open or
 * refresh).
 */
static int refused_fail(amber_store *s, const char *missing)
{
	static const char fix[] = "rebuild it with 'git index-pack' from its .pack, or copy it "
				  "from a replica";
	char name[256];

	if (!amber_packset_refused(s->packs, name, sizeof(name)))
		return 0;
	if (missing)
		return amber_fail(AMBER_ECORRUPT, "object %s not found: %s/objects/pack/%s was not "
				  "read, it is damaged (an object's offset lies outside its pack, "
				  "or its size, header or fan-out table is wrong): %s",
				  missing, s->path, name, fix);
	return amber_fail(AMBER_ECORRUPT, "%s/objects/pack/%s is damaged (an object's offset lies "
			  "outside its pack, or its size, header or fan-out table is wrong), and "
			  "reading through it would crash: %s", s->path, name, fix);
}

void amber_store_hash(uint8_t oid[20], int type, const void *data, size_t len)
{
	char hdr[32];
	int n = snprintf(hdr, sizeof(hdr), "%s %zu", type_name(type), len);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	assert(sha1_md && "amber_store_global_init not called");
	ok = ctx && EVP_DigestInit_ex(ctx, sha1_md, NULL) &&
	     EVP_DigestUpdate(ctx, hdr, (size_t)n + 1) &&
	     EVP_DigestUpdate(ctx, data, len) && EVP_DigestFinal_ex(ctx, oid, NULL);
	EVP_MD_CTX_free(ctx);
	/* Only allocation can fail here; there is no error path to report it. */
	if (!ok)
		abort();
}

/* Pack entries ------------------------------------------------------------ */

/* What is known of one entry before it is written (position-independent). */
struct enc {
	uint8_t head[16];	/* type/size varint, zlib header */
	size_t head_len;
	uint8_t trailer[4];	/* adler32, big-endian */
	uint32_t crc;		/* crc32 of the whole entry, for the .idx */
	uint64_t size;		/* entry bytes in the pack */
};

/* Visit the entry's bytes in order; `small` pieces live on the stack. */
typedef int (*piece_fn)(void *ctx, const uint8_t *p, size_t n, int small);

static int entry_walk(const struct enc *e, const uint8_t *data, size_t len, piece_fn fn,
		      void *ctx)
{
	uint8_t bh[5];
	size_t done = 0;

	if (fn(ctx, e->head, e->head_len, 1) < 0)
		return -1;
	do {
		size_t n = len - done < STORED_BLOCK ? len - done : STORED_BLOCK;

		bh[0] = done + n == len;	/* BFINAL, BTYPE 00 (stored) */
		bh[1] = (uint8_t)n;
		bh[2] = (uint8_t)(n >> 8);
		bh[3] = (uint8_t)~n;
		bh[4] = (uint8_t)(~n >> 8);
		if (fn(ctx, bh, 5, 1) < 0 || (n && fn(ctx, data + done, n, 0) < 0))
			return -1;
		done += n;
	} while (done < len);
	return fn(ctx, e->trailer, 4, 1);
}

static int crc_piece(void *ctx, const uint8_t *p, size_t n, int small)
{
	uLong *crc = ctx;

	*crc = crc32_z(*crc, p, n);
	return 0;
}

static void entry_encode(struct enc *e, int type, const uint8_t *data, size_t len)
{
	uint64_t sz = len;
	uint8_t c = (uint8_t)(type << 4 | (sz & 15));
	uLong crc = crc32_z(0, NULL, 0);
	size_t nblocks = len ? (len + STORED_BLOCK - 1) / STORED_BLOCK : 1;

	e->head_len = 0;
	for (sz >>= 4; sz; sz >>= 7) {
		e->head[e->head_len++] = c | 0x80;
		c = sz & 0x7f;
	}
	e->head[e->head_len++] = c;
	e->head[e->head_len++] = 0x78;	/* deflate, 32K window */
	e->head[e->head_len++] = 0x01;	/* FLEVEL 0, no dict; 0x7801 % 31 == 0 */
	put_be32(e->trailer, (uint32_t)adler32_z(adler32_z(0, NULL, 0), data, len));
	entry_walk(e, data, len, crc_piece, &crc);
	e->crc = (uint32_t)crc;
	e->size = e->head_len + 5 * (uint64_t)nblocks + len + 4;
}

/* Gathers pieces into iovecs; small pieces are copied into `scratch`. */
struct gather {
	int fd;
	int n;
	size_t used;
	struct iovec iov[IOV_BATCH];
	uint8_t scratch[IOV_BATCH * 8];
};

static int gather_flush(struct gather *g)
{
	int rc = writev_all(g->fd, g->iov, g->n);

	g->n = 0;
	g->used = 0;
	return rc;
}

static int gather_piece(void *ctx, const uint8_t *p, size_t n, int small)
{
	struct gather *g = ctx;
	struct iovec *last = g->n ? &g->iov[g->n - 1] : NULL;

	if (g->n == IOV_BATCH || (small && g->used + n > sizeof(g->scratch))) {
		if (gather_flush(g) < 0)
			return -1;
		last = NULL;
	}
	if (!small) {
		g->iov[g->n++] = (struct iovec){(void *)p, n};
		return 0;
	}
	memcpy(g->scratch + g->used, p, n);
	if (last && (uint8_t *)last->iov_base + last->iov_len == g->scratch + g->used)
		last->iov_len += n;
	else
		g->iov[g->n++] = (struct iovec){g->scratch + g->used, n};
	g->used += n;
	return 0;
}

/* Pack writer -------------------------------------------------------------- */

struct entry {
	uint8_t oid[20];
	uint32_t crc;
	uint64_t off;
};

struct amber_packw {
	amber_store *s;
	char *tmpdir;
	uint64_t rollover;
	pthread_mutex_t mu;	/* protects everything below */
	int fd;			/* current temporary pack, -1 if none */
	char *tmp;		/* its path */
	uint64_t off;		/* its length */
	struct entry *ents;	/* its entries, in pack order */
	size_t nents, cap;
	uint32_t *slots;	/* open-addressing set over ents: index + 1, 0 = empty */
	size_t nslots;		/* power of two, >= 2 * nents */
	uint64_t gen;		/* packs committed by this writer */
	uint64_t bytes;		/* total entry bytes written; read atomically */
	int broken;		/* the temporary pack holds a partial entry */
	uint8_t (*installed)[20]; /* checksums of the packs committed, [gen] */
};

static size_t slot_of(const uint8_t oid[20], size_t nslots)
{
	uint64_t h;

	memcpy(&h, oid, sizeof(h));	/* SHA-1 bytes are already uniform */
	return (size_t)h & (nslots - 1);
}

static int set_contains(const struct amber_packw *w, const uint8_t oid[20])
{
	size_t i;

	if (!w->nslots)
		return 0;
	for (i = slot_of(oid, w->nslots); w->slots[i]; i = (i + 1) & (w->nslots - 1)) {
		if (!memcmp(w->ents[w->slots[i] - 1].oid, oid, 20))
			return 1;
	}
	return 0;
}

static void set_insert(struct amber_packw *w, size_t idx)
{
	size_t i = slot_of(w->ents[idx].oid, w->nslots);

	while (w->slots[i])
		i = (i + 1) & (w->nslots - 1);
	w->slots[i] = (uint32_t)(idx + 1);
}

/* Room for one more entry in ents and the set. */
static int ents_grow(struct amber_packw *w)
{
	if (w->nents == UINT32_MAX - 1)
		return amber_fail(AMBER_ERROR, "pack has too many objects");
	if (w->nents == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 1024;
		struct entry *e = realloc(w->ents, cap * sizeof(*e));

		if (!e)
			return amber_fail(AMBER_ERROR, "out of memory (pack index)");
		w->ents = e;
		w->cap = cap;
	}
	if (2 * (w->nents + 1) > w->nslots) {
		size_t n = w->nslots ? w->nslots * 2 : 2048;
		uint32_t *sl = calloc(n, sizeof(*sl));

		if (!sl)
			return amber_fail(AMBER_ERROR, "out of memory (pack index)");
		free(w->slots);
		w->slots = sl;
		w->nslots = n;
		for (size_t i = 0; i < w->nents; i++)
			set_insert(w, i);
	}
	return 0;
}

void amber_store_set_rollover(amber_store *s, uint64_t bytes)
{
	s->rollover = bytes;
}

int amber_store_packs(amber_store_pack **out, size_t *n, amber_store *s)
{
	return amber_packset_list(out, n, s->packs);
}

void amber_store_pack_removed(amber_store *s, const char *base)
{
	char name[96];

	snprintf(name, sizeof(name), "%s.idx", base);
	amber_packset_drop(s->packs, name);
}

uint64_t amber_store_pack_listings(amber_store *s)
{
	return amber_packset_listings(s->packs) + atomic_load(&s->listings);
}

void amber_store_note_listing(amber_store *s)
{
	atomic_fetch_add(&s->listings, 1);
}

void amber_store_set_idx_budget(amber_store *s, size_t bytes)
{
	amber_packset_set_budget(s->packs, bytes);
}

uint64_t amber_store_rollover(const amber_store *s)
{
	return s->rollover ? s->rollover : PACK_ROLLOVER;
}

static int packw_new(amber_packw **out, amber_store *s, int scan)
{
	amber_packw *w = calloc(1, sizeof(*w));

	*out = NULL;
	if (!w || !(w->tmpdir = path_join(s->path, TMPDIR_NAME))) {
		free(w);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	w->s = s;
	w->fd = -1;
	w->rollover = amber_store_rollover(s);
	pthread_mutex_init(&w->mu, NULL);
	/* Adds skip the odb's refresh-on-miss; see what others wrote once here. */
	if (scan && amber_store_refresh(s) < 0) {
		amber_packw_free(w);
		return AMBER_ERROR;
	}
	*out = w;
	return 0;
}

int amber_packw_new(amber_packw **out, amber_store *s)
{
	return packw_new(out, s, 1);
}

int amber_packw_new_noscan(amber_packw **out, amber_store *s)
{
	return packw_new(out, s, 0);
}

static void pack_discard(struct amber_packw *w);

/* Start a temporary pack; the object count is patched in at commit. */
static int pack_open(struct amber_packw *w)
{
	static const uint8_t hdr[12] = {'P', 'A', 'C', 'K', 0, 0, 0, 2, 0, 0, 0, 0};

	if (mkdir(w->tmpdir, 0755) < 0 && errno != EEXIST)
		return amber_fail_errno("mkdir %s", w->tmpdir);
	w->tmp = path_join(w->tmpdir, "pack-XXXXXX");
	if (!w->tmp)
		return amber_fail(AMBER_ERROR, "out of memory");
	w->fd = mkostemp(w->tmp, O_CLOEXEC);
	if (w->fd < 0) {
		int rc = amber_fail_errno("create %s", w->tmp);

		free(w->tmp);
		w->tmp = NULL;
		return rc;
	}
	if (pwrite_all(w->fd, hdr, sizeof(hdr), 0) < 0 ||
	    lseek(w->fd, sizeof(hdr), SEEK_SET) < 0) {
		int rc = amber_fail_errno("write %s", w->tmp);

		pack_discard(w);
		return rc;
	}
	w->off = sizeof(hdr);
	return 0;
}

static void pack_discard(struct amber_packw *w)
{
	if (w->fd >= 0) {
		close(w->fd);
		unlink(w->tmp);
	}
	free(w->tmp);
	w->tmp = NULL;
	w->fd = -1;
	w->nents = 0;
	w->broken = 0;
	if (w->slots)
		memset(w->slots, 0, w->nslots * sizeof(*w->slots));
}

/* Append one entry (lock held).  A failed write is cut off again. */
static int pack_append(struct amber_packw *w, const uint8_t oid[20], const struct enc *e,
		       const uint8_t *data, size_t len)
{
	struct gather g = {.fd = w->fd};
	struct entry *ent;

	if (w->broken)
		return amber_fail(AMBER_ERROR, "%s: earlier write failed", w->tmp);
	if (ents_grow(w) < 0)
		return AMBER_ERROR;
	if (entry_walk(e, data, len, gather_piece, &g) < 0 || gather_flush(&g) < 0) {
		int rc = amber_fail_errno("write %s", w->tmp);

		if (ftruncate(w->fd, (off_t)w->off) < 0 ||
		    lseek(w->fd, (off_t)w->off, SEEK_SET) < 0)
			w->broken = 1;
		return rc;
	}
	/* Start writeback early so that the fsync at commit has little left. */
	if ((w->off + e->size) / WRITEBACK_STEP != w->off / WRITEBACK_STEP)
		sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	ent = &w->ents[w->nents];
	memcpy(ent->oid, oid, 20);
	ent->crc = e->crc;
	ent->off = w->off;
	set_insert(w, w->nents++);
	w->off += e->size;
	__atomic_add_fetch(&w->bytes, e->size, __ATOMIC_RELAXED);
	return 0;
}

static int pack_finish(struct amber_packw *w);

int amber_packw_add(uint8_t oid_out[20], int *is_new, amber_packw *w, int type,
		    const void *data, size_t len)
{
	git_oid id;
	struct enc e;
	uint64_t gen;
	int rc = 0, dup;

	if (is_new)
		*is_new = 0;
	amber_store_hash(oid_out, type, data, len);
	pthread_mutex_lock(&w->mu);
	dup = set_contains(w, oid_out);
	gen = w->gen;
	pthread_mutex_unlock(&w->mu);
	git_oid_fromraw(&id, oid_out);
	if (dup || git_odb_exists_ext(w->s->odb, &id, GIT_ODB_LOOKUP_NO_REFRESH))
		return 0;
	entry_encode(&e, type, data, len);
	pthread_mutex_lock(&w->mu);
	/* Another thread may have added it, or committed a pack holding it. */
	dup = set_contains(w, oid_out) ||
	      (gen != w->gen && git_odb_exists_ext(w->s->odb, &id, GIT_ODB_LOOKUP_NO_REFRESH));
	if (!dup && w->fd < 0)
		rc = pack_open(w);
	if (!dup && rc == 0)
		rc = pack_append(w, oid_out, &e, data, len);
	if (!dup && rc == 0 && is_new)
		*is_new = 1;
	if (!dup && rc == 0 && w->off >= w->rollover)
		rc = pack_finish(w);
	pthread_mutex_unlock(&w->mu);
	return rc;
}

uint64_t amber_packw_bytes(const amber_packw *w)
{
	return __atomic_load_n(&w->bytes, __ATOMIC_RELAXED);
}

/* Append an already-encoded entry (lock held); cut off again on failure. */
static int pack_append_raw(struct amber_packw *w, const uint8_t oid[20], uint32_t crc,
			   const uint8_t *entry, size_t len)
{
	struct iovec v = {(void *)entry, len};
	struct entry *ent;

	if (w->broken)
		return amber_fail(AMBER_ERROR, "%s: earlier write failed", w->tmp);
	if (ents_grow(w) < 0)
		return AMBER_ERROR;
	if (writev_all(w->fd, &v, 1) < 0) {
		int rc = amber_fail_errno("write %s", w->tmp);

		if (ftruncate(w->fd, (off_t)w->off) < 0 ||
		    lseek(w->fd, (off_t)w->off, SEEK_SET) < 0)
			w->broken = 1;
		return rc;
	}
	if ((w->off + len) / WRITEBACK_STEP != w->off / WRITEBACK_STEP)
		sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	ent = &w->ents[w->nents];
	memcpy(ent->oid, oid, 20);
	ent->crc = crc;
	ent->off = w->off;
	set_insert(w, w->nents++);
	w->off += len;
	__atomic_add_fetch(&w->bytes, len, __ATOMIC_RELAXED);
	return 0;
}

int amber_packw_add_raw(amber_packw *w, const uint8_t oid[20], uint32_t crc,
			const void *entry, size_t len)
{
	int rc = 0;

	pthread_mutex_lock(&w->mu);
	if (!set_contains(w, oid)) {
		if (w->fd < 0)
			rc = pack_open(w);
		if (rc == 0)
			rc = pack_append_raw(w, oid, crc, entry, len);
		if (rc == 0 && w->off >= w->rollover)
			rc = pack_finish(w);
	}
	pthread_mutex_unlock(&w->mu);
	return rc;
}

uint64_t amber_packw_rollover(const amber_packw *w)
{
	return w->rollover;
}

int amber_packw_installed(const amber_packw *w, const uint8_t sum[20])
{
	for (uint64_t i = 0; i < w->gen; i++) {
		if (!memcmp(w->installed[i], sum, 20))
			return 1;
	}
	return 0;
}

/* Pack commit --------------------------------------------------------------- */

static int sha1_init(EVP_MD_CTX **ctx)
{
	*ctx = EVP_MD_CTX_new();
	if (!*ctx || !EVP_DigestInit_ex(*ctx, sha1_md, NULL))
		return amber_fail(AMBER_ERROR, "cannot start SHA-1");
	return 0;
}

/* SHA-1 of the first `len` bytes of fd, read back from the page cache. */
static int hash_file(uint8_t out[20], int fd, uint64_t len, const char *path)
{
	EVP_MD_CTX *ctx = NULL;
	uint8_t *buf = malloc(HASH_BLOCK);
	uint64_t off = 0;
	int rc = buf ? sha1_init(&ctx) : amber_fail(AMBER_ERROR, "out of memory");

	while (rc == 0 && off < len) {
		size_t want = len - off < HASH_BLOCK ? (size_t)(len - off) : HASH_BLOCK;
		ssize_t r = pread(fd, buf, want, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			rc = r < 0 ? amber_fail_errno("read %s", path)
				   : amber_fail(AMBER_ERROR, "%s: unexpected end of file", path);
		else if (!EVP_DigestUpdate(ctx, buf, (size_t)r))
			rc = amber_fail(AMBER_ERROR, "SHA-1 failed");
		off += r > 0 ? (uint64_t)r : 0;
	}
	if (rc == 0 && !EVP_DigestFinal_ex(ctx, out, NULL))
		rc = amber_fail(AMBER_ERROR, "SHA-1 failed");
	EVP_MD_CTX_free(ctx);
	free(buf);
	return rc;
}

/* Patch the count, append the checksum, make the pack durable. */
static int pack_seal(struct amber_packw *w, uint8_t sum[20])
{
	uint8_t cnt[4];

	put_be32(cnt, (uint32_t)w->nents);
	if (pwrite_all(w->fd, cnt, 4, 8) < 0)
		return amber_fail_errno("write %s", w->tmp);
	if (hash_file(sum, w->fd, w->off, w->tmp) < 0)
		return AMBER_ERROR;
	/* Read-only like git's own packs (mkstemp made it 0600). */
	if (pwrite_all(w->fd, sum, 20, (off_t)w->off) < 0 || fchmod(w->fd, 0444) < 0 ||
	    fsync(w->fd) < 0)
		return amber_fail_errno("write %s", w->tmp);
	return 0;
}

/* Buffered, hashed writer for the .idx. */
struct hfile {
	int fd;
	size_t n;
	EVP_MD_CTX *ctx;
	uint8_t buf[1 << 16];
};

static int hf_flush(struct hfile *f)
{
	struct iovec v = {f->buf, f->n};
	int rc = writev_all(f->fd, &v, 1);

	f->n = 0;
	return rc;
}

static int hf_put(struct hfile *f, const void *p, size_t n)
{
	if (!EVP_DigestUpdate(f->ctx, p, n))
		return -1;
	if (f->n + n > sizeof(f->buf) && hf_flush(f) < 0)
		return -1;
	memcpy(f->buf + f->n, p, n);
	f->n += n;
	return 0;
}

static int hf_put32(struct hfile *f, uint32_t v)
{
	uint8_t b[4];

	put_be32(b, v);
	return hf_put(f, b, 4);
}

static int cmp_entry(const void *a, const void *b)
{
	return memcmp(((const struct entry *)a)->oid, ((const struct entry *)b)->oid, 20);
}

/* Offsets >= 2^31 go to the 8-byte table, flagged by the high bit. */
static int idx_offsets(struct hfile *f, const struct entry *ents, size_t n)
{
	uint32_t nlarge = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		int large = ents[i].off >= (1u << 31);

		if (hf_put32(f, large ? 0x80000000u | nlarge++ : (uint32_t)ents[i].off) < 0)
			return -1;
	}
	for (i = 0; i < n; i++) {
		if (ents[i].off >= (1u << 31) && (hf_put32(f, (uint32_t)(ents[i].off >> 32)) < 0 ||
						  hf_put32(f, (uint32_t)ents[i].off) < 0))
			return -1;
	}
	return 0;
}

/* The version-2 index body: fanout, ids, crc32s, offsets, pack checksum. */
static int idx_body(struct hfile *f, const struct entry *ents, size_t n,
		    const uint8_t packsum[20])
{
	static const uint8_t magic[8] = {0xff, 't', 'O', 'c', 0, 0, 0, 2};
	size_t i, k = 0;

	if (hf_put(f, magic, 8) < 0)
		return -1;
	for (int b = 0; b < 256; b++) {
		while (k < n && ents[k].oid[0] <= b)
			k++;
		if (hf_put32(f, (uint32_t)k) < 0)
			return -1;
	}
	for (i = 0; i < n; i++) {
		if (hf_put(f, ents[i].oid, 20) < 0)
			return -1;
	}
	for (i = 0; i < n; i++) {
		if (hf_put32(f, ents[i].crc) < 0)
			return -1;
	}
	if (idx_offsets(f, ents, n) < 0)
		return -1;
	return hf_put(f, packsum, 20);
}

/* Write the index to a durable temporary file; *path_out receives its name. */
static int idx_write(char **path_out, struct amber_packw *w, const uint8_t packsum[20])
{
	struct hfile *f = calloc(1, sizeof(*f));
	char *path = path_join(w->tmpdir, "idx-XXXXXX");
	uint8_t sum[20];
	int rc = AMBER_ERROR;

	*path_out = NULL;
	if (!f || !path || sha1_init(&f->ctx) < 0 ||
	    (f->fd = mkostemp(path, O_CLOEXEC)) < 0) {
		rc = amber_fail(AMBER_ERROR, "cannot create a temporary index in %s", w->tmpdir);
		goto done;
	}
	qsort(w->ents, w->nents, sizeof(*w->ents), cmp_entry);
	if (idx_body(f, w->ents, w->nents, packsum) < 0 || !EVP_DigestFinal_ex(f->ctx, sum, NULL) ||
	    hf_put(f, sum, 20) < 0 || hf_flush(f) < 0 || fchmod(f->fd, 0444) < 0 ||
	    fsync(f->fd) < 0)
		rc = amber_fail_errno("write %s", path);
	else
		rc = 0;
	close(f->fd);
	if (rc < 0)
		unlink(path);
done:
	if (f)
		EVP_MD_CTX_free(f->ctx);
	free(f);
	if (rc == 0)
		*path_out = path;
	else
		free(path);
	return rc;
}

/* Move pack then index into objects/pack/, each rename made durable. */
static int pack_install(struct amber_packw *w, const char *idx_tmp, const uint8_t sum[20])
{
	char hex[41], name[64];
	char *dir = path_join(w->s->path, "objects/pack"), *dst = NULL;
	int rc = AMBER_ERROR;

	amber_oid_tohex(hex, sum);
	snprintf(name, sizeof(name), "pack-%s.pack", hex);
	if (!dir || !(dst = path_join(dir, name)))
		goto done;
	if (rename(w->tmp, dst) < 0) {
		rc = amber_fail_errno("rename %s to %s", w->tmp, dst);
		goto done;
	}
	if (fsync_dir(dir) < 0)
		goto done;
	memcpy(dst + strlen(dst) - 4, "idx", 4);
	if (rename(idx_tmp, dst) < 0) {
		rc = amber_fail_errno("rename %s to %s", idx_tmp, dst);
		memcpy(dst + strlen(dst) - 3, "pack", 5);
		unlink(dst);	/* a pack without its index is only garbage to git */
	} else {
		rc = fsync_dir(dir);
	}
done:
	if (!dst)
		rc = amber_fail(AMBER_ERROR, "out of memory");
	free(dst);
	free(dir);
	return rc;
}

/*
 * Let the odb see the pack just installed.  Only this pack: the writer
 * lock keeps other writers out, and what others wrote before it was taken
 * was seen when the writer started (amber_packw_new), so a rescan here
 * would only list objects/pack again, once per snapshot.
 */
static int pack_load(amber_store *s, const uint8_t sum[20])
{
	char hex[41], name[64];
	int rc;

	amber_oid_tohex(hex, sum);
	snprintf(name, sizeof(name), "pack-%s.idx", hex);
	rc = amber_packset_add(s->packs, name);
	if (rc < 0)
		return AMBER_ERROR;
	/* Only this pack is judged here: another one refused by an earlier
	 * listing is judged again by the next. */
	if (rc > 0)
		return amber_fail(AMBER_ECORRUPT, "%s/objects/pack/%s, just written, does not "
				  "read back as a sane index (size, header or fan-out table)",
				  s->path, name);
	return 0;
}

/* Seal, index and install the current pack, then let the odb see it. */
static int pack_finish(struct amber_packw *w)
{
	uint8_t sum[20], (*inst)[20];
	char *idx_tmp = NULL;
	int rc;

	if (w->broken)
		return amber_fail(AMBER_ERROR, "%s: earlier write failed", w->tmp);
	inst = realloc(w->installed, (w->gen + 1) * sizeof(*inst));
	if (!inst)
		return amber_fail(AMBER_ERROR, "out of memory");
	w->installed = inst;
	rc = pack_seal(w, sum);
	if (rc == 0)
		rc = idx_write(&idx_tmp, w, sum);
	if (rc == 0)
		rc = pack_install(w, idx_tmp, sum);
	if (idx_tmp && rc < 0)
		unlink(idx_tmp);
	free(idx_tmp);
	/* Half-finished (count patched, maybe renamed): this writer is done for. */
	if (rc < 0) {
		w->broken = 1;
		return rc;
	}
	close(w->fd);
	w->fd = -1;	/* installed: pack_discard must not unlink it */
	pack_discard(w);
	memcpy(w->installed[w->gen++], sum, 20);
	return pack_load(w->s, sum);
}

int amber_packw_commit(amber_packw *w)
{
	int rc = 0;

	pthread_mutex_lock(&w->mu);
	if (w->fd >= 0)
		rc = pack_finish(w);
	pthread_mutex_unlock(&w->mu);
	return rc;
}

void amber_packw_free(amber_packw *w)
{
	if (!w)
		return;
	pack_discard(w);
	pthread_mutex_destroy(&w->mu);
	free(w->ents);
	free(w->slots);
	free(w->installed);
	free(w->tmpdir);
	free(w);
}

/* Refs ------------------------------------------------------------------------- */

static int ref_code(int err)
{
	switch (err) {
	case GIT_ENOTFOUND: return AMBER_ENOTFOUND;
	case GIT_EEXISTS:
	case GIT_EMODIFIED:
	case GIT_ELOCKED: return AMBER_ELOCKED;
	case GIT_EINVALIDSPEC: return AMBER_EINVAL;
	default: return AMBER_ERROR;
	}
}

static int packed_refs_broken(amber_store *s, size_t *first_bad);
static int packed_refs_refused(amber_store *s, const char *what, size_t line);
static int packed_lookup(uint8_t oid[20], amber_store *s, const char *name);

int amber_store_ref_read(uint8_t oid[20], amber_store *s, const char *name)
{
	git_oid id;
	size_t line;
	int err;

	/* a reader polls its refs: let go of packs a consolidation removed */
	amber_packset_rescan_due(s->packs);
	pthread_mutex_lock(&s->mu);
	err = git_reference_name_to_id(&id, s->repo, name);
	if (err < 0 && packed_refs_broken(s, &line))
		err = packed_lookup(id.id, s, name); /* no loose ref: libgit2 looked first */
	pthread_mutex_unlock(&s->mu);
	if (err == GIT_ENOTFOUND)
		return amber_fail(AMBER_ENOTFOUND, "ref %s not found", name);
	if (err < 0)
		return git_fail(ref_code(err), "ref %s", name);
	memcpy(oid, id.id, 20);
	return 0;
}

int amber_store_ref_update(amber_store *s, const char *name, const uint8_t oid[20],
			   const uint8_t *expect, const char *log_message)
{
	git_reference *ref = NULL;
	git_oid id, cur;
	size_t line;
	int err;

	git_oid_fromraw(&id, oid);
	if (expect)
		git_oid_fromraw(&cur, expect);
	pthread_mutex_lock(&s->mu);
	if (packed_refs_broken(s, &line)) {
		pthread_mutex_unlock(&s->mu);
		return packed_refs_refused(s, name, line);
	}
	/* With an expected value libgit2 needs force, or it refuses to replace. */
	err = git_reference_create_matching(&ref, s->repo, name, &id, expect != NULL,
					    expect ? &cur : NULL, log_message);
	pthread_mutex_unlock(&s->mu);
	git_reference_free(ref);
	if (err == GIT_EEXISTS)
		return amber_fail(AMBER_ELOCKED, "ref %s already exists", name);
	if (err == GIT_EMODIFIED || (err == GIT_ENOTFOUND && expect))
		return amber_fail(AMBER_ELOCKED, "ref %s moved meanwhile", name);
	if (err < 0)
		return git_fail(ref_code(err) == AMBER_ENOTFOUND ? AMBER_ERROR : ref_code(err),
				"cannot update ref %s", name);
	return 0;
}

struct refent {
	char *name;
	uint8_t oid[20];
};

struct reflist {
	struct refent *v;
	size_t n, cap;
};

static int reflist_push(struct reflist *l, const char *name, const git_oid *id)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct refent *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	if (!(l->v[l->n].name = strdup(name)))
		return -1;
	memcpy(l->v[l->n++].oid, id->id, 20);
	return 0;
}

/*
 * Snapshot the matching refs (lock held).  Symbolic refs are resolved; a
 * dangling one names nothing and is skipped.  A direct ref is taken as it
 * is: looking it up again by name would fail the whole listing on one
 * name git would not write (anyone can plant one); callers judge names.
 */
static int reflist_collect(struct reflist *l, amber_store *s, const char *glob)
{
	git_reference_iterator *it = NULL;
	git_reference *ref = NULL, *res = NULL;
	int err, rc = 0;

	if (git_reference_iterator_glob_new(&it, s->repo, glob) < 0)
		return git_fail(AMBER_ERROR, "cannot list refs %s", glob);
	while (rc == 0 && (err = git_reference_next(&ref, it)) == 0) {
		err = git_reference_type(ref) == GIT_REFERENCE_DIRECT ? git_reference_dup(&res, ref)
								       : git_reference_resolve(&res, ref);
		if (err < 0 && err != GIT_ENOTFOUND)
			rc = git_fail(AMBER_ERROR, "ref %s", git_reference_name(ref));
		else if (err == 0 &&
			 reflist_push(l, git_reference_name(ref), git_reference_target(res)) < 0)
			rc = amber_fail(AMBER_ERROR, "out of memory listing refs");
		git_reference_free(res);
		git_reference_free(ref);
		res = ref = NULL;
	}
	if (rc == 0 && err != GIT_ITEROVER)
		rc = git_fail(AMBER_ERROR, "cannot list refs %s", glob);
	git_reference_iterator_free(it);
	return rc;
}

static void reflist_clear(struct reflist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/*
 * packed-refs, read tolerantly.  libgit2 refuses the whole file for one
 * malformed line, and after that first refusal it goes on as if the file
 * held no refs at all (it remembers the file as read): the second listing
 * in a process silently lost every packed tag.  So whenever the file has a
 * malformed line, refs are read here instead: the line is skipped (verify
 * reports it, see amber_store_packed_refs_bad()) and the other refs stay
 * readable.  Writes are refused until the line is repaired, as git does:
 * libgit2 would check "the ref still has its expected value" and "the tag
 * does not exist yet" against that empty view.  Lock held.
 */
#define PACKED_LINE_MAX 4096

static int packed_scan(amber_store *s, size_t *bad, size_t *first_bad,
		       int (*cb)(const char *name, const uint8_t oid[20], void *payload),
		       void *payload);

static int packed_none_cb(const char *name, const uint8_t oid[20], void *payload)
{
	(void)name, (void)oid, (void)payload;
	return 0;
}

/* 1 if packed-refs has a malformed line (the first one's number in *first_bad). */
static int packed_refs_broken(amber_store *s, size_t *first_bad)
{
	size_t bad = 0;

	packed_scan(s, &bad, first_bad, packed_none_cb, NULL);
	return bad > 0;
}

/* `what`: the ref that was not updated, or NULL when nothing was written. */
static int packed_refs_refused(amber_store *s, const char *what, size_t line)
{
	return amber_fail(AMBER_ECORRUPT,
			  "%spacked-refs: line %zu is malformed, so %s%s (git refuses the file "
			  "too): remove or repair the line (amberfs verify lists it), then retry",
			  git_repository_path(s->repo), line, what ? "this did not update " :
			  "nothing was written", what ? what : "");
}

static int hex_oid(uint8_t oid[20], const char *hex)
{
	git_oid id;

	if (strspn(hex, "0123456789abcdef") < 40 || git_oid_fromstrn(&id, hex, 40) < 0)
		return -1;
	memcpy(oid, id.id, 20);
	return 0;
}

/* "<40 hex> <refname>\n"; a name with control bytes or spaces is malformed. */
static int packed_line(uint8_t oid[20], char **name, char *line)
{
	size_t len = strcspn(line, "\n");

	line[len] = '\0';
	*name = line + 41;
	if (len < 46 || line[40] != ' ' || hex_oid(oid, line) < 0 ||
	    strncmp(*name, "refs/", 5) != 0)
		return -1;
	for (const char *p = *name; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return -1;
	return 0;
}

/* Visit the well-formed lines; count the others (peeled "^" lines and the header aside). */
static int packed_scan(amber_store *s, size_t *bad, size_t *first_bad,
		       int (*cb)(const char *name, const uint8_t oid[20], void *payload),
		       void *payload)
{
	char *path = path_join(git_repository_path(s->repo), "packed-refs"), *name;
	char line[PACKED_LINE_MAX];
	uint8_t oid[20];
	FILE *f = path ? fopen(path, "re") : NULL;
	size_t n = 0;
	int rc = 0;

	*bad = *first_bad = 0;
	free(path);
	while (f && rc == 0 && fgets(line, sizeof(line), f)) {
		n++;
		if (line[0] == '#' || line[0] == '^')
			continue;
		if (packed_line(oid, &name, line) < 0 || strchr(line, '\0') == line + sizeof(line) - 1) {
			if ((*bad)++ == 0)
				*first_bad = n;
			continue;
		}
		rc = cb(name, oid, payload);
	}
	if (f)
		fclose(f);
	return rc;
}

struct packed_find {
	const char *name;
	uint8_t *oid;
	int found;
};

static int packed_find_cb(const char *name, const uint8_t oid[20], void *payload)
{
	struct packed_find *p = payload;

	if (strcmp(name, p->name) == 0) {
		memcpy(p->oid, oid, 20);
		p->found = 1;
	}
	return 0;
}

static int packed_lookup(uint8_t oid[20], amber_store *s, const char *name)
{
	struct packed_find p = {name, oid, 0};
	size_t bad, first;

	packed_scan(s, &bad, &first, packed_find_cb, &p);
	return p.found ? 0 : GIT_ENOTFOUND;
}

int amber_store_packed_refs_bad(amber_store *s, size_t *first_line)
{
	struct packed_find p = {"", NULL, 0};
	size_t bad = 0;

	pthread_mutex_lock(&s->mu);
	packed_scan(s, &bad, first_line, packed_find_cb, &p);
	pthread_mutex_unlock(&s->mu);
	return bad > SIZE_MAX / 2 ? INT_MAX : (int)bad;
}

struct tolerant {
	struct reflist *l;
	const char *glob;
	amber_store *s;
};

/* A packed ref, unless a loose ref of that name (which wins) exists. */
static int tolerant_cb(const char *name, const uint8_t oid[20], void *payload)
{
	struct tolerant *t = payload;
	git_reference *ref = NULL;
	git_oid id;

	if (fnmatch(t->glob, name, 0) != 0)
		return 0;
	git_oid_fromraw(&id, oid);
	if (git_reference_lookup(&ref, t->s->repo, name) == 0 &&
	    git_reference_type(ref) == GIT_REFERENCE_DIRECT)
		git_oid_cpy(&id, git_reference_target(ref));
	git_reference_free(ref);
	return reflist_push(t->l, name, &id) < 0 ? amber_fail(AMBER_ERROR, "out of memory") : 0;
}

/* Loose refs under dir (relative to the git dir) that no packed line named. */
static int loose_collect(struct tolerant *t, const char *rel, int depth)
{
	char *dir = path_join(git_repository_path(t->s->repo), rel);
	DIR *d = dir ? opendir(dir) : NULL;
	struct dirent *e;
	int rc = 0;

	while (d && rc == 0 && (e = readdir(d))) {
		char *sub = e->d_name[0] == '.' ? NULL : path_join(rel, e->d_name);
		git_reference *ref = NULL;
		size_t i;

		if (!sub)
			continue;
		for (i = 0; i < t->l->n && strcmp(t->l->v[i].name, sub) != 0; i++)
			;
		if (e->d_type == DT_DIR && depth < 32)
			rc = loose_collect(t, sub, depth + 1);
		else if (i == t->l->n && fnmatch(t->glob, sub, 0) == 0 &&
			 git_reference_lookup(&ref, t->s->repo, sub) == 0 &&
			 git_reference_type(ref) == GIT_REFERENCE_DIRECT &&
			 reflist_push(t->l, sub, git_reference_target(ref)) < 0)
			rc = amber_fail(AMBER_ERROR, "out of memory");
		git_reference_free(ref);
		free(sub);
	}
	if (d)
		closedir(d);
	free(dir);
	return rc;
}

static int tolerant_collect(struct reflist *l, amber_store *s, const char *glob)
{
	struct tolerant t = {l, glob, s};
	size_t bad, first;
	int rc = packed_scan(s, &bad, &first, tolerant_cb, &t);

	git_error_clear();
	return rc == 0 ? loose_collect(&t, "refs", 0) : rc;
}

int amber_store_ref_foreach(amber_store *s, const char *glob,
			    int (*cb)(const char *name, const uint8_t oid[20], void *payload),
			    void *payload)
{
	struct reflist l = {0};
	size_t i, line;
	int rc;

	pthread_mutex_lock(&s->mu);
	if (packed_refs_broken(s, &line))
		rc = tolerant_collect(&l, s, glob);
	else
		rc = reflist_collect(&l, s, glob);
	pthread_mutex_unlock(&s->mu);
	/* Callbacks run unlocked so they may use the store themselves. */
	for (i = 0; rc == 0 && i < l.n; i++)
		rc = cb(l.v[i].name, l.v[i].oid, payload);
	reflist_clear(&l);
	return rc;
}

int amber_store_expand_prefix(uint8_t oid[20], amber_store *s, const char *prefix)
{
	size_t len = strnlen(prefix, 41);
	git_oid shrt, full;
	int err;

	if (len < 4 || len > 40 || strspn(prefix, "0123456789abcdefABCDEF") != len)
		return amber_fail(AMBER_EINVAL, "'%.41s' is not an object id prefix", prefix);
	if (git_oid_fromstrn(&shrt, prefix, len) < 0)
		return git_fail(AMBER_EINVAL, "'%s'", prefix);
	err = git_odb_exists_prefix(&full, s->odb, &shrt, len);
	if (err == GIT_ENOTFOUND)
		return amber_fail(AMBER_ENOTFOUND, "no object id starts with %s", prefix);
	if (err == GIT_EAMBIGUOUS)
		return amber_fail(AMBER_EAMBIGUOUS, "several objects ids start with %s", prefix);
	if (err < 0)
		return git_fail(AMBER_ERROR, "looking up %s", prefix);
	memcpy(oid, full.id, 20);
	return 0;
}

/* Writer lock ---------------------------------------------------------------- */

/* The holder writes its pid into the lock file; read it for the message. */
static long lock_holder(int fd)
{
	char buf[24];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	char *end;
	long pid;

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	errno = 0;
	pid = strtol(buf, &end, 10);
	if (errno || end == buf || pid <= 0 || pid > INT_MAX)
		return 0;
	/* A holder killed -9 leaves its pid; the next one may not have written
	 * its own yet.  Name only a process that exists. */
	return kill((pid_t)pid, 0) == 0 || errno == EPERM ? pid : 0;
}

static void lock_note_pid(int fd)
{
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	/* Only informational: a failure here does not weaken the lock. */
	if (ftruncate(fd, 0) == 0)
		(void)pwrite_all(fd, buf, (size_t)n, 0);
}

/* Remove what a dead writer left in amberfs-tmp (we hold the lock). */
static void clear_stale_tmp(amber_store *s)
{
	char *dir = path_join(s->path, TMPDIR_NAME);
	DIR *d = dir ? opendir(dir) : NULL;
	struct dirent *de;

	while (d && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dirfd(d), de->d_name, 0);
	}
	if (d)
		closedir(d);
	free(dir);
}

static int lock_take(amber_store *s)
{
	char *path;
	size_t line;
	int fd, broken;

	path = path_join(s->path, LOCK_NAME);
	if (!path)
		return amber_fail(AMBER_ERROR, "out of memory");
	fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0) {
		int rc = amber_fail_errno("open %s", path);

		free(path);
		return rc;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		/* The holder may not have written its pid yet: then name none. */
		int busy = errno == EWOULDBLOCK;
		long pid = busy ? lock_holder(fd) : 0;
		int rc = !busy ? amber_fail_errno("flock %s", path)
			: pid ? amber_fail(AMBER_ELOCKED, "%s is locked by another writer (pid %ld); "
					   "wait for it to finish or stop it", s->path, pid)
			: amber_fail(AMBER_ELOCKED, "%s is locked by another writer; "
				     "wait for it to finish or stop it", s->path);

		close(fd);
		free(path);
		return rc;
	}
	free(path);
	/* Refused before any work: the write would fail at its ref update. */
	pthread_mutex_lock(&s->mu);
	broken = packed_refs_broken(s, &line);
	pthread_mutex_unlock(&s->mu);
	if (broken) {
		close(fd);
		return packed_refs_refused(s, NULL, line);
	}
	lock_note_pid(fd);
	clear_stale_tmp(s);	/* no holder in this process: nothing of ours is there */
	s->lock_fd = fd;
	return 0;
}

/*
 * Counted: a writer session's snapshot and its consolidation thread may
 * hold the lock at once; the file lock goes with the last of them.
 */
int amber_store_lock(amber_store *s)
{
	int rc = 0;

	pthread_mutex_lock(&s->lock_mu);
	if (s->lock_fd < 0)
		rc = lock_take(s);
	if (rc == 0)
		s->lock_refs++;
	pthread_mutex_unlock(&s->lock_mu);
	return rc;
}

void amber_store_unlock(amber_store *s)
{
	pthread_mutex_lock(&s->lock_mu);
	if (s->lock_fd >= 0 && --s->lock_refs <= 0) {
		if (ftruncate(s->lock_fd, 0) != 0) {
			/* only informational: the pid left names a process that is gone */
		}
		close(s->lock_fd);
		s->lock_fd = -1;
		s->lock_refs = 0;
	}
	pthread_mutex_unlock(&s->lock_mu);
}

/* Hex ---------------------------------------------------------------------------- */

void amber_oid_tohex(char out[41], const uint8_t oid[20])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < 20; i++) {
		out[2 * i] = digits[oid[i] >> 4];
		out[2 * i + 1] = digits[oid[i] & 15];
	}
	out[40] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int amber_oid_fromhex(uint8_t oid[20], const char *hex)
{
	if (strnlen(hex, 41) != 40)
		return amber_fail(AMBER_EINVAL, "'%.41s' is not a 40-digit object id", hex);
	for (int i = 0; i < 20; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return amber_fail(AMBER_EINVAL, "'%s' is not a 40-digit object id", hex);
		oid[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* Pack checks -------------------------------------------------------------------- */

/*
 * A pack ends with the SHA-1 of everything before it, and its .idx ends
 * with that same checksum followed by its own.  Rehashing the pack finds a
 * flipped byte anywhere in it, including bytes no object id covers (entry
 * headers, zlib framing).
 */
static int pack_check_one(amber_store *s, const char *dir, const char *name,
			  void (*cb)(const char *, const char *, void *), void *payload)
{
	char *pack = path_join(dir, name), rel[512], msg[512], *idx = NULL;
	uint8_t sum[20], tail[20], itail[40], head[8];
	struct stat st;
	int fd = -1, ifd = -1, rc = 0;

	snprintf(rel, sizeof(rel), "objects/pack/%s", name);
	msg[0] = '\0';
	if (!pack)
		return amber_fail(AMBER_ERROR, "out of memory");
	fd = open(pack, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(msg, sizeof(msg), "cannot read pack file: %s", strerror(errno));
		goto done;
	}
	if (st.st_size < 32 || pread(fd, head, 8, 0) != 8 || memcmp(head, "PACK\0\0\0\2", 8) ||
	    pread(fd, tail, 20, st.st_size - 20) != 20) {
		snprintf(msg, sizeof(msg), "corrupt pack file: not a version 2 pack");
		goto done;
	}
	rc = hash_file(sum, fd, (uint64_t)st.st_size - 20, pack);
	if (rc < 0)
		goto done;
	if (memcmp(sum, tail, 20) != 0) {
		snprintf(msg, sizeof(msg), "corrupt pack file: its checksum does not match its "
			 "contents (damaged bytes)");
		goto done;
	}
	idx = strdup(pack);
	if (!idx) {
		rc = amber_fail(AMBER_ERROR, "out of memory");
		goto done;
	}
	memcpy(idx + strlen(idx) - 4, "idx", 4);
	ifd = open(idx, O_RDONLY | O_CLOEXEC);
	if (ifd < 0 || fstat(ifd, &st) < 0 || st.st_size < 48 ||
	    pread(ifd, itail, 40, st.st_size - 40) != 40 || memcmp(itail, tail, 20) != 0) {
		snprintf(msg, sizeof(msg), "pack index is missing or does not match its pack");
		goto done;
	}
	/* The index ends with its own checksum: a flipped byte in its fan-out,
	 * ids, CRCs or offsets is found here, not only when a read fails. */
	rc = hash_file(sum, ifd, (uint64_t)st.st_size - 20, idx);
	if (rc == 0 && memcmp(sum, itail + 20, 20) != 0)
		snprintf(msg, sizeof(msg), "corrupt pack index %.*s: its checksum does not match "
			 "its contents (damaged bytes)", (int)(strlen(name) - 5), name);
	/* A forger rewrites the checksum too.  Readers check an offset only
	 * when a lookup uses it: here every one is, used or not. */
	if (rc == 0 && !msg[0] && amber_idx_sane(dir, strrchr(idx, '/') + 1) == 0)
		snprintf(msg, sizeof(msg), "corrupt pack index %.*s.idx: an object's offset lies "
			 "outside its pack (or its size or fan-out table is wrong): rebuild it "
			 "with 'git index-pack' from its .pack, or copy it from a replica",
			 (int)(strlen(name) - 5), name);
done:
	if (rc == 0 && msg[0] && cb)
		cb(rel, msg, payload);
	if (ifd >= 0)
		close(ifd);
	if (fd >= 0)
		close(fd);
	free(idx);
	free(pack);
	(void)s;
	return rc;
}

int amber_store_check_packs(amber_store *s,
			    void (*cb)(const char *file, const char *message, void *payload),
			    void *payload)
{
	char *dir = path_join(s->path, "objects/pack");
	DIR *d;
	struct dirent *de;
	int rc = 0, n = 0;

	if (!dir)
		return amber_fail(AMBER_ERROR, "out of memory");
	d = opendir(dir);
	if (!d) {
		rc = errno == ENOENT ? 0 : amber_fail_errno("%s", dir);
		free(dir);
		return rc;
	}
	while (rc == 0 && (de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (len > 5 && strcmp(de->d_name + len - 5, ".pack") == 0 &&
		    strncmp(de->d_name, "pack-", 5) == 0) {
			rc = pack_check_one(s, dir, de->d_name, cb, payload);
			n++;
		}
	}
	closedir(d);
	free(dir);
	return rc < 0 ? rc : n;
}

/* Pack positions (verify reads objects in file order) --------------------------------- */

/* Through the pack set's checked index copies: no index is mapped or read
 * again here, and a file changed under us is an error of the read, not a
 * SIGBUS. */
int amber_store_pack_positions(amber_packpos *pos, amber_store *s, const uint8_t *oids,
			       size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!amber_packset_position(&pos[i].pack, &pos[i].off, s->packs, oids + 20 * i))
			pos[i] = (amber_packpos){0, 0};
	return 0;
}

/* Push ------------------------------------------------------------------------------ */

struct push_state {
	uint64_t updated;
	char rejected[512];     /* first ref the remote refused, with its reason */
};

static int push_negotiation_cb(const git_push_update **u, size_t len, void *payload)
{
	struct push_state *p = payload;

	for (size_t i = 0; i < len; i++)
		if (!git_oid_equal(&u[i]->src, &u[i]->dst))
			p->updated++;
	return 0;
}

static int push_ref_cb(const char *refname, const char *status, void *payload)
{
	struct push_state *p = payload;

	if (status && !p->rejected[0])
		snprintf(p->rejected, sizeof(p->rejected), "%s (%s)", refname, status);
	return 0;
}

static int push_cred_cb(git_credential **out, const char *url, const char *user,
			unsigned int allowed, void *payload)
{
	(void)url;
	(void)payload;
	if (allowed & GIT_CREDENTIAL_SSH_KEY)
		return git_credential_ssh_key_from_agent(out, user ? user : "git");
	if (allowed & GIT_CREDENTIAL_USERNAME)
		return git_credential_username_new(out, user ? user : "git");
	return GIT_PASSTHROUGH;
}

/* A local destination: a plain path or file:// URL (not host:path). */
static const char *local_path(const char *url)
{
	const char *colon = strchr(url, ':'), *slash = strchr(url, '/');

	if (strncmp(url, "file://", 7) == 0)
		return url + 7;
	if (strstr(url, "://") || (colon && (!slash || colon < slash)))
		return NULL;
	return url;
}

static int push_prepare(int *created, const char *url)
{
	const char *path = local_path(url);
	git_repository *repo = NULL;
	struct stat st;
	int rc;

	*created = 0;
	if (!path || stat(path, &st) == 0)
		return 0;
	if (errno != ENOENT)
		return amber_fail_errno("%s", path);
	if (git_repository_init(&repo, path, 1) < 0)
		return git_fail(AMBER_ERROR, "%s: cannot create repository", path);
	rc = set_config(repo, path);
	if (rc == 0 && git_repository_set_head(repo, "refs/heads/main") < 0)
		rc = git_fail(AMBER_ERROR, "%s: cannot set HEAD", path);
	git_repository_free(repo);
	*created = rc == 0;
	return rc;
}

static int push_run(struct push_state *p, amber_store *s, const char *url, char **specs,
		    size_t n)
{
	git_remote *remote = NULL;
	git_push_options opts;
	git_strarray arr = {specs, n};
	int err;

	git_push_options_init(&opts, GIT_PUSH_OPTIONS_VERSION);
	opts.pb_parallelism = 0;
	opts.callbacks.push_negotiation = push_negotiation_cb;
	opts.callbacks.push_update_reference = push_ref_cb;
	opts.callbacks.credentials = push_cred_cb;
	opts.callbacks.payload = p;
	pthread_mutex_lock(&s->mu);
	err = git_remote_create_anonymous(&remote, s->repo, url);
	if (err == 0)
		err = git_remote_push(remote, &arr, &opts);
	pthread_mutex_unlock(&s->mu);
	git_remote_free(remote);
	if (err == GIT_ENONFASTFORWARD)
		return git_fail(AMBER_EEXISTS, "push to %s refused: a ref there is not an ancestor "
				"of ours (non-fast-forward; the replica has other history)", url);
	if (err < 0)
		return git_fail(AMBER_ERROR, "push to %s failed", url);
	if (p->rejected[0])
		return amber_fail(AMBER_EEXISTS, "push to %s: the remote refused ref %s", url,
				  p->rejected);
	return 0;
}

/*
 * Seeding a new local replica: the archive's objects are already final
 * (packs of encrypted objects, no deltas), so instead of letting libgit2
 * enumerate, re-pack and re-index every object, the finished packs (and any
 * loose objects) are copied as they are, each copied pack is checked on the
 * receiving side (its SHA-1 trailer over its bytes, and its index's), and
 * the refs are created there without force once their objects are present.
 * Refs are read before the copy, so a snapshot written meanwhile is either
 * wholly in the copy or not named.  One syncfs at the end.
 */
static int copy_file(const char *src, const char *dst)
{
	int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;
	struct stat st;
	off_t left;

	if (in < 0 || fstat(in, &st) < 0) {
		rc = amber_fail_errno("cannot read %s", src);
		goto done;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (out < 0) {
		rc = amber_fail_errno("cannot create %s", dst);
		goto done;
	}
	for (left = st.st_size; left > 0;) {
		ssize_t k = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) { /* no copy_file_range between these filesystems: plain copy */
			char buf[1 << 16];

			k = read(in, buf, sizeof(buf));
			if (k > 0 && write(out, buf, (size_t)k) != k)
				k = -1;
			if (k <= 0) {
				rc = amber_fail_errno("cannot copy %s", src);
				break;
			}
		}
		left -= k;
	}
done:
	if (out >= 0 && close(out) < 0 && rc == 0)
		rc = amber_fail_errno("cannot write %s", dst);
	if (in >= 0)
		close(in);
	return rc;
}

struct seed_check {
	char msg[600];
};

static void seed_problem(const char *file, const char *message, void *payload)
{
	struct seed_check *c = payload;

	if (!c->msg[0])
		snprintf(c->msg, sizeof(c->msg), "%s: %s", file, message);
}

/* Copy the finished packs (.idx after its .pack) and check each copy. */
static int seed_packs(amber_store *s, const char *dst)
{
	char *from = path_join(s->path, "objects/pack"), *to = path_join(dst, "objects/pack");
	struct seed_check c = {{0}};
	DIR *d = from ? opendir(from) : NULL;
	struct dirent *de;
	int rc = 0;

	if (!from || !to)
		rc = amber_fail(AMBER_ERROR, "out of memory");
	else if (!d)
		rc = amber_fail_errno("cannot read %s", from);
	while (rc == 0 && d && (de = readdir(d))) {
		size_t len = strlen(de->d_name);
		char name[512], *a = NULL, *b = NULL;

		if (len < 10 || len > 400 || strncmp(de->d_name, "pack-", 5) != 0 ||
		    strcmp(de->d_name + len - 5, ".pack") != 0)
			continue;
		snprintf(name, sizeof(name), "%.*s.idx", (int)(len - 5), de->d_name);
		if (!(a = path_join(from, name)) || access(a, F_OK) != 0) {
			free(a);
			continue; /* not finished */
		}
		free(a);
		a = path_join(from, de->d_name);
		b = path_join(to, de->d_name);
		rc = a && b ? copy_file(a, b) : amber_fail(AMBER_ERROR, "out of memory");
		free(a);
		free(b);
		a = path_join(from, name);
		b = path_join(to, name);
		if (rc == 0)
			rc = a && b ? copy_file(a, b) : amber_fail(AMBER_ERROR, "out of memory");
		free(a);
		free(b);
		if (rc == 0)
			rc = pack_check_one(s, to, de->d_name, seed_problem, &c);
		if (rc == 0 && c.msg[0])
			rc = amber_fail(AMBER_ECORRUPT, "push to %s: the copy of %s", dst, c.msg);
	}
	if (d)
		closedir(d);
	free(from);
	free(to);
	return rc;
}

/* Copy the loose objects (objects/xx/...), if any. */
static int seed_loose(amber_store *s, const char *dst)
{
	static const char hex[] = "0123456789abcdef";
	int rc = 0;

	for (int i = 0; rc == 0 && i < 256; i++) {
		char sub[16], *from, *to;
		struct dirent *de;
		DIR *d;

		snprintf(sub, sizeof(sub), "objects/%c%c", hex[i >> 4], hex[i & 15]);
		from = path_join(s->path, sub);
		to = path_join(dst, sub);
		d = from ? opendir(from) : NULL;
		if (!from || !to)
			rc = amber_fail(AMBER_ERROR, "out of memory");
		else if (d && mkdir(to, 0755) < 0 && errno != EEXIST)
			rc = amber_fail_errno("cannot create %s", to);
		while (rc == 0 && d && (de = readdir(d))) {
			char *a, *b;

			if (strlen(de->d_name) != 38 || strspn(de->d_name, hex) != 38)
				continue;
			a = path_join(from, de->d_name);
			b = path_join(to, de->d_name);
			rc = a && b ? copy_file(a, b) : amber_fail(AMBER_ERROR, "out of memory");
			free(a);
			free(b);
		}
		if (d)
			closedir(d);
		free(from);
		free(to);
	}
	return rc;
}

static int seed_replica(uint64_t *updated, amber_store *s, const char *dst,
			const char *const *names, size_t n)
{
	git_oid *oids = calloc(n ? n : 1, sizeof(*oids));
	git_repository *r = NULL;
	git_odb *odb = NULL;
	int rc = oids ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; rc == 0 && i < n; i++)
		if (git_reference_name_to_id(&oids[i], s->repo, names[i]) < 0)
			rc = git_fail(AMBER_ERROR, "cannot read ref %s", names[i]);
	pthread_mutex_unlock(&s->mu);
	if (rc == 0)
		rc = seed_packs(s, dst);
	if (rc == 0)
		rc = seed_loose(s, dst);
	if (rc == 0 && (git_repository_open_bare(&r, dst) < 0 || git_repository_odb(&odb, r) < 0))
		rc = git_fail(AMBER_ERROR, "%s: cannot open the new replica", dst);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		git_reference *ref = NULL;

		if (!git_odb_exists(odb, &oids[i]))
			rc = amber_fail(AMBER_ECORRUPT, "push to %s: the object of %s is missing "
					"from the copy", dst, names[i]);
		else if (git_reference_create(&ref, r, names[i], &oids[i], 0, "amberfs push") < 0)
			rc = git_fail(AMBER_ERROR, "push to %s: cannot create ref %s", dst, names[i]);
		else
			(*updated)++;
		git_reference_free(ref);
	}
	git_odb_free(odb);
	git_repository_free(r);
	if (rc == 0) {
		int fd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (fd < 0 || syncfs(fd) < 0)
			rc = amber_fail_errno("cannot sync %s", dst);
		if (fd >= 0)
			close(fd);
	}
	free(oids);
	return rc;
}

int amber_store_push(uint64_t *updated, int *created, amber_store *s, const char *url,
		     const char *const *names, size_t n)
{
	struct push_state p = {0};
	char **specs = calloc(n ? n : 1, sizeof(*specs));
	int rc = specs ? 0 : amber_fail(AMBER_ERROR, "out of memory");

	for (size_t i = 0; rc == 0 && i < n; i++) {
		size_t len = strlen(names[i]) * 2 + 2;

		if (!(specs[i] = malloc(len)))
			rc = amber_fail(AMBER_ERROR, "out of memory");
		else
			snprintf(specs[i], len, "%s:%s", names[i], names[i]);
	}
	if (rc == 0)
		rc = push_prepare(created, url);
	if (rc == 0 && *created)
		rc = seed_replica(&p.updated, s, local_path(url), names, n);
	else if (rc == 0 && n > 0)
		rc = push_run(&p, s, url, specs, n);
	for (size_t i = 0; specs && i < n; i++)
		free(specs[i]);
	free(specs);
	*updated = p.updated;
	return rc;
}
