/*
 * The node table: FUSE node ids, open snapshots and decoded listings.
 *
 * Node ids versus st_ino.  Two numbers name a file in this mount, and they
 * answer different questions.
 *
 * The FUSE node id (fuse_ino_t) is the kernel's handle on a *path*: it is
 * what the kernel sends back in every request, so it must tell us which
 * snapshot, which directory and which name it means.  We hand out node ids
 * from a counter that only grows (the root is 1), so an id is never reused
 * for another path, even after the kernel forgot it.  The table maps
 * (parent node, name) to the node so that looking a name up twice gives the
 * same id, and id to node for every request.  Each reply that gives the
 * kernel an id (lookup, readdirplus entries other than "." and "..") counts
 * one lookup; FORGET takes them back; a node lives while the kernel holds
 * a lookup on it or one of its children is alive (the child points to its
 * parent).  So the table is bounded by what the kernel caches, and the
 * kernel frees it under memory pressure (libfuse's passthrough_ll.c keeps
 * the same discipline).
 *
 * st_ino is what stat() reports: content identity.  Inside a snapshot it is
 * amber_entry_ino(), the same number for an unchanged file or directory in
 * every snapshot, so GNU diff -r, which skips pairs with the same (st_dev,
 * st_ino), compares two snapshots in time proportional to what changed.
 * Two distinct but identical files in one snapshot share the number too;
 * that invents no hard links because their nlink is the stored one (1),
 * and cp, tar, rsync -H and du only pair up files with nlink > 1.  The
 * virtual directories get small fixed numbers or a hash with the top bit
 * set, which amber_entry_ino() never returns.
 *
 * A node may be replaced: at/<time> shows another snapshot once a newer
 * one is written before <time>.  The lookup then makes a new node with a
 * new id and unhashes the old one, which lives on, unreachable by name,
 * until the kernel forgets it.
 *
 * Locks: table_lock guards the hash tables, nlookup, children and hashed;
 * snap_lock the snapshot list; dir_lock the listing cache.  Order: table
 * before dir and snap; nothing slow (decoding, opening) runs under any.
 */
#include "mount.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void snap_destroy(struct mnt_snap *s);
static struct mnt_node *node_alloc(struct mnt *m, const char *name, size_t len,
				   const amber_entry *src);
static size_t entry_bytes(const amber_entry *e);
static void trim_wake_locked(struct mnt *m);

/* Heap bytes of one separate allocation of n bytes, with malloc's overhead. */
#define MNT_ALLOC(n) ((size_t)(n) + 16)

/* Hash tables ------------------------------------------------------------- */

static uint64_t hash_name(uint64_t parent, const char *name)
{
	uint64_t h = 1469598103934665603ULL ^ parent;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return h ^ (h >> 29);
}

static uint64_t hash_id(uint64_t id)
{
	return id * 0x9e3779b97f4a7c15ULL >> 7;
}

static void link_id(struct mnt *m, struct mnt_node *n)
{
	size_t b = hash_id(n->id) & (m->nbuckets - 1);

	n->id_next = m->by_id[b];
	m->by_id[b] = n;
}

static void link_name(struct mnt *m, struct mnt_node *n)
{
	size_t b = n->hash & (m->nbuckets - 1);

	n->name_next = m->by_name[b];
	m->by_name[b] = n;
	n->hashed = 1;
}

static void unlink_id(struct mnt *m, struct mnt_node *n)
{
	struct mnt_node **p = &m->by_id[hash_id(n->id) & (m->nbuckets - 1)];

	while (*p != n)
		p = &(*p)->id_next;
	*p = n->id_next;
}

static void unlink_name(struct mnt *m, struct mnt_node *n)
{
	struct mnt_node **p = &m->by_name[n->hash & (m->nbuckets - 1)];

	if (!n->hashed)
		return;
	while (*p != n)
		p = &(*p)->name_next;
	*p = n->name_next;
	n->hashed = 0;
}

/*
 * Doubling at one node per bucket keeps chains short (a directory walk
 * looks every entry up); a failed allocation only makes them longer.
 */
static void maybe_grow(struct mnt *m)
{
	struct mnt_node **old_id = m->by_id, **old_name = m->by_name;
	size_t old_n = m->nbuckets;

	if (m->nnodes < m->nbuckets)
		return;
	m->by_id = calloc(old_n * 2, sizeof(*m->by_id));
	m->by_name = calloc(old_n * 2, sizeof(*m->by_name));
	if (!m->by_id || !m->by_name) {
		free(m->by_id);
		free(m->by_name);
		m->by_id = old_id;
		m->by_name = old_name;
		return;
	}
	m->nbuckets = old_n * 2;
	for (size_t b = 0; b < old_n; b++) {
		for (struct mnt_node *n = old_id[b], *next; n; n = next) {
			next = n->id_next;
			link_id(m, n);
			if (n->hashed)
				link_name(m, n);
		}
	}
	free(old_id);
	free(old_name);
}

/*
 * The LRU list of nodes (all but the root), least recently looked up
 * first: the trimmer asks the kernel to forget from its head.  Caller
 * holds table_lock.
 */
static void lru_unlink(struct mnt *m, struct mnt_node *n)
{
	if (n->lru_prev)
		n->lru_prev->lru_next = n->lru_next;
	else
		m->lru_head = n->lru_next;
	if (n->lru_next)
		n->lru_next->lru_prev = n->lru_prev;
	else
		m->lru_tail = n->lru_prev;
	n->lru_prev = n->lru_next = NULL;
}

static void lru_append(struct mnt *m, struct mnt_node *n)
{
	n->lru_prev = m->lru_tail;
	n->lru_next = NULL;
	if (m->lru_tail)
		m->lru_tail->lru_next = n;
	else
		m->lru_head = n;
	m->lru_tail = n;
}

static void lru_touch(struct mnt *m, struct mnt_node *n)
{
	if (n == m->root || m->lru_tail == n)
		return;
	lru_unlink(m, n);
	lru_append(m, n);
}

/* Nodes -------------------------------------------------------------------- */

int mnt_table_init(struct mnt *m)
{
	struct mnt_node *root;

	/* (the root from malloc: the chunks are mapped after the fork) */
	mnt_slab_init(&m->slab);
	mnt_store_init(m);
	root = node_alloc(NULL, "", 0, NULL);
	/* room for a walk of a 20k-entry directory without a rehash (each one
	 * relinks every node under table_lock, stalling every request); the
	 * pages of the two 256 KiB arrays are only touched as nodes come */
	m->nbuckets = (size_t)1 << 15;
	m->by_id = calloc(m->nbuckets, sizeof(*m->by_id));
	m->by_name = calloc(m->nbuckets, sizeof(*m->by_name));
	if (!root || !m->by_id || !m->by_name) {
		free(root);
		return -1;
	}
	pthread_mutex_init(&m->table_lock, NULL);
	pthread_mutex_init(&m->snap_lock, NULL);
	pthread_mutex_init(&m->dir_lock, NULL);
	pthread_mutex_init(&m->tl_lock, NULL);
	pthread_cond_init(&m->trim_cond, NULL);
	root->id = FUSE_ROOT_ID;
	root->nlookup = 1;
	root->kind = MK_ROOT;
	root->st_ino = MNT_INO_ROOT;
	m->next_id = FUSE_ROOT_ID + 1;
	m->root = root;
	link_id(m, root);
	m->nnodes = 1;
	return 0;
}

struct mnt_node *mnt_node_by_id(struct mnt *m, fuse_ino_t ino)
{
	struct mnt_node *n;

	pthread_mutex_lock(&m->table_lock);
	n = m->by_id[hash_id(ino) & (m->nbuckets - 1)];
	while (n && n->id != ino)
		n = n->id_next;
	pthread_mutex_unlock(&m->table_lock);
	return n;
}

/* Caller holds table_lock. */
static struct mnt_node *find_locked(struct mnt *m, struct mnt_node *parent, const char *name,
				    uint64_t h)
{
	struct mnt_node *n = m->by_name[h & (m->nbuckets - 1)];

	/* the stored hash first: most misses then touch no name */
	while (n && !(n->hash == h && n->parent == parent && strcmp(n->name, name) == 0))
		n = n->name_next;
	return n;
}

struct mnt_node *mnt_node_find(struct mnt *m, struct mnt_node *parent, const char *name)
{
	struct mnt_node *n;

	uint64_t h = hash_name(parent->id, name);

	pthread_mutex_lock(&m->table_lock);
	n = find_locked(m, parent, name, h);
	if (n) {
		n->nlookup++;
		lru_touch(m, n);
	}
	pthread_mutex_unlock(&m->table_lock);
	return n;
}

void mnt_nodeinfo_dispose(struct mnt *m, struct mnt_nodeinfo *info)
{
	free(info->stream);
	amber_entry_free(info->e);
	if (info->snap)
		mnt_snap_put(m, info->snap);
	info->stream = NULL;
	info->e = NULL;
	info->snap = NULL;
}

/* Whether an existing node already shows what a fresh lookup found. */
static int same_thing(const struct mnt_node *n, const struct mnt_node *f)
{
	if (n->kind != f->kind || n->snap != f->snap || n->st_ino != f->st_ino ||
	    n->day_ns != f->day_ns)
		return 0;
	if (!n->stream || !f->stream)
		return n->stream == f->stream;
	return strcmp(n->stream, f->stream) == 0;
}

/*
 * A node and its name in one block (from m's slab; m NULL: from malloc).  A
 * listing's entry without target or xattrs (nearly all of them) is copied
 * into the block too, its name shared with the node's: a walk makes a node
 * for every entry it lists.
 */
static struct mnt_node *node_alloc(struct mnt *m, const char *name, size_t len,
				   const amber_entry *src)
{
	int embed = src && !src->target && src->nxattrs == 0;
	size_t size = sizeof(struct mnt_node) + (embed ? sizeof(amber_entry) : 0) + len + 1;
	unsigned cls = 0;
	struct mnt_node *n = m ? mnt_slab_alloc(&m->slab, size, &cls) : calloc(1, size);
	char *p;

	if (!n)
		return NULL;
	n->slab_cls = cls;
	p = (char *)(n + 1);
	if (embed) {
		n->e = (amber_entry *)(void *)p;
		*n->e = *src;
		n->e->xattrs = NULL;
		n->e_inline = 1;
		p += sizeof(amber_entry);
	}
	memcpy(p, name, len);
	p[len] = '\0';
	n->name = p;
	n->name_len = len;
	n->bytes = cls ? (size_t)cls * MNT_SLAB_GRAIN : MNT_ALLOC(size);
	if (embed) {
		n->e->name = p;
		n->e->name_len = len;
	}
	return n;
}

/* What the node owns besides its block: an entry copy that is not inline. */
static amber_entry *own_entry(const struct mnt_node *n)
{
	return n->e_inline ? NULL : n->e;
}

static struct mnt_node *new_node(struct mnt *m, struct mnt_node *parent, const char *name,
				 struct mnt_nodeinfo *info)
{
	struct mnt_node *n = node_alloc(m, name, strlen(name), info->src);

	if (n && info->src && !n->e && amber_entry_dup(&n->e, info->src) < 0) {
		mnt_slab_free(&m->slab, n, n->slab_cls);
		return NULL;
	}
	if (!n)
		return NULL;
	if (!info->src) {
		n->e = info->e;
		info->e = NULL;
	}
	n->hash = hash_name(parent->id, name);
	n->bytes += (own_entry(n) ? entry_bytes(n->e) : 0) +
		    (info->stream ? MNT_ALLOC(strlen(info->stream) + 1) : 0);
	n->parent = parent;
	n->kind = info->kind;
	n->st_ino = info->st_ino;
	n->stream = info->stream;
	n->day_ns = info->day_ns;
	n->entry_timeout = info->entry_timeout;
	n->snap = info->snap;
	info->stream = NULL;
	info->snap = NULL;
	info->src = NULL;
	return n;
}

struct mnt_node *mnt_node_get(struct mnt *m, struct mnt_node *parent, const char *name,
			      struct mnt_nodeinfo *info)
{
	struct mnt_node *n, *fresh = new_node(m, parent, name, info);

	pthread_mutex_lock(&m->table_lock);
	n = fresh ? find_locked(m, parent, name, fresh->hash)
		  : find_locked(m, parent, name, hash_name(parent->id, name));
	if (n && fresh && !same_thing(n, fresh)) {
		unlink_name(m, n);
		n = NULL;
	}
	if (!n && fresh) {
		n = fresh;
		fresh = NULL;
		n->id = m->next_id++;
		parent->children++;
		link_id(m, n);
		link_name(m, n);
		lru_append(m, n);
		m->nnodes++;
		m->node_bytes += n->bytes;
		if (m->node_bytes > m->o.node_cache)
			trim_wake_locked(m);
		maybe_grow(m);
	} else if (n) {
		lru_touch(m, n);
	}
	if (n)
		n->nlookup++;
	pthread_mutex_unlock(&m->table_lock);
	if (fresh) {
		struct mnt_nodeinfo back = {.stream = fresh->stream, .snap = fresh->snap,
					    .e = own_entry(fresh)};

		mnt_nodeinfo_dispose(m, &back);
		mnt_slab_free(&m->slab, fresh, fresh->slab_cls);
	}
	mnt_nodeinfo_dispose(m, info);
	return n;
}

static void free_node(struct mnt *m, struct mnt_node *n)
{
	struct mnt_nodeinfo res = {.stream = n->stream, .snap = n->snap, .e = own_entry(n)};

	mnt_nodeinfo_dispose(m, &res);
	mnt_slab_free(&m->slab, n, n->slab_cls);
}

/*
 * Drop `n` lookups; free the node and then every ancestor that was only
 * kept alive for it.  Freed nodes are chained through id_next and released
 * after the lock is dropped (freeing a snapshot waits for its read-ahead).
 */
void mnt_node_forget(struct mnt *m, fuse_ino_t ino, uint64_t nl)
{
	struct mnt_node *n, *dead = NULL;

	pthread_mutex_lock(&m->table_lock);
	n = m->by_id[hash_id(ino) & (m->nbuckets - 1)];
	while (n && n->id != ino)
		n = n->id_next;
	if (n)
		n->nlookup -= nl < n->nlookup ? nl : n->nlookup;
	while (n && n != m->root && n->nlookup == 0 && n->children == 0) {
		struct mnt_node *parent = n->parent;

		unlink_name(m, n);
		unlink_id(m, n);
		lru_unlink(m, n);
		m->nnodes--;
		m->node_bytes -= n->bytes;
		n->id_next = dead;
		dead = n;
		parent->children--;
		n = parent;
	}
	pthread_mutex_unlock(&m->table_lock);
	while (dead) {
		n = dead;
		dead = n->id_next;
		free_node(m, n);
	}
}

static void dir_cache_destroy(struct mnt *m);

void mnt_table_destroy(struct mnt *m)
{
	dir_cache_destroy(m);
	for (size_t b = 0; m->by_id && b < m->nbuckets; b++) {
		for (struct mnt_node *n = m->by_id[b], *next; n; n = next) {
			next = n->id_next;
			free_node(m, n);
		}
	}
	free(m->by_id);
	free(m->by_name);
	m->by_id = m->by_name = NULL;
	mnt_slab_destroy(&m->slab);
	for (struct mnt_snap *s = m->snaps, *next; s; s = next) {
		next = s->next;
		snap_destroy(s);
	}
	m->snaps = NULL;
}

/* The trimmer ----------------------------------------------------------------- */

/*
 * The kernel keeps a node while it caches the name (dentry) or the inode,
 * and it frees them only under memory pressure: on a large machine a find
 * over millions of entries would keep every node, each with its entry
 * (xattrs included).  So while the table is over its bound, this thread
 * asks the kernel to forget the least recently looked-up names
 * (notify_inval_entry; a directory takes its cached subtree with it).
 * The kernel then sends FORGET for each inode nobody uses, which frees the
 * node; a name in use (an open file, a working directory) stays, and goes
 * to the back of the list.  It runs in its own thread because libfuse
 * forbids notifications from a request handler (the kernel may hold the
 * directory's lock the notification needs).
 */
#define MNT_TRIM_BATCH 256

struct trim_victim {
	uint64_t parent;
	char *name;
};

/* Caller holds table_lock: pick names worth `goal` bytes from the LRU head. */
static size_t trim_pick(struct mnt *m, struct trim_victim *v, size_t goal)
{
	size_t nv = 0, got = 0, seen = 0, total = m->nnodes;
	struct mnt_node *n = m->lru_head, *next;

	for (; n && nv < MNT_TRIM_BATCH && got < goal && seen < total; n = next, seen++) {
		next = n->lru_next;
		lru_touch(m, n);        /* whatever happens, not again at once */
		if (!n->hashed || !(v[nv].name = strdup(n->name)))
			continue;
		v[nv++].parent = n->parent->id;
		got += n->bytes;
	}
	return nv;
}

static void *trim_main(void *arg)
{
	struct mnt *m = arg;
	struct trim_victim v[MNT_TRIM_BATCH];
	struct timespec until;
	int64_t trimmed_ns = 0;
	size_t nv;

	pthread_mutex_lock(&m->table_lock);
	while (!m->trim_stop) {
		if (m->node_bytes <= m->o.node_cache) {
			pthread_cond_wait(&m->trim_cond, &m->table_lock);
			continue;
		}
		/* shed down to 3/4 of the bound, so that trimming runs in rounds */
		nv = trim_pick(m, v, m->node_bytes - m->o.node_cache / 4 * 3);
		pthread_mutex_unlock(&m->table_lock);
		for (size_t i = 0; i < nv; i++) {
			fuse_lowlevel_notify_inval_entry(m->se, v[i].parent, v[i].name,
							 strlen(v[i].name));
			free(v[i].name);
		}
		atomic_fetch_add(&m->n.nodes_dropped, nv);
		/* return what the freed nodes and listings leave in malloc's
		 * arenas (it walks them all: at most once a second) */
		if (mnt_now_ns() - trimmed_ns > 1000000000LL) {
			malloc_trim(0);
			trimmed_ns = mnt_now_ns();
		}
		pthread_mutex_lock(&m->table_lock);
		/* let the FORGETs arrive before looking again (briefly if a whole
		 * batch went: a fast walk may still be ahead); poll slowly if the
		 * kernel keeps everything (all in use) */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += nv == MNT_TRIM_BATCH ? 2000000L : nv ? 20000000L : 500000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (!m->trim_stop)
			pthread_cond_timedwait(&m->trim_cond, &m->table_lock, &until);
	}
	pthread_mutex_unlock(&m->table_lock);
	return NULL;
}

/*
 * Caller holds table_lock: the table is over its bound.  The thread starts
 * the first time that happens, not at mount: nothing that the first answer
 * does not need runs before it.
 */
static void trim_wake_locked(struct mnt *m)
{
	if (m->trim_running) {
		pthread_cond_signal(&m->trim_cond);
		return;
	}
	if (!m->se || m->trim_stop || m->trim_failed)
		return;
	m->trim_running = pthread_create(&m->trim_thread, NULL, trim_main, m) == 0;
	if (!m->trim_running) {
		m->trim_failed = 1;
		mnt_log(m, "%s: cannot start the node trimmer: the node table is not bounded",
			m->mountpoint_abs);
	}
}

void mnt_trim_start(struct mnt *m, struct fuse_session *se)
{
	pthread_mutex_lock(&m->table_lock);
	m->se = se;
	m->trim_stop = 0;
	pthread_mutex_unlock(&m->table_lock);
}

void mnt_trim_stop(struct mnt *m)
{
	int running;

	pthread_mutex_lock(&m->table_lock);
	running = m->trim_running;
	m->trim_stop = 1;
	m->trim_running = 0;
	pthread_cond_signal(&m->trim_cond);
	pthread_mutex_unlock(&m->table_lock);
	if (running)
		pthread_join(m->trim_thread, NULL);
}

void mnt_table_usage(struct mnt *m, size_t *nodes, size_t *node_bytes, size_t *dir_bytes)
{
	pthread_mutex_lock(&m->table_lock);
	*nodes = m->nnodes;
	*node_bytes = m->node_bytes;
	pthread_mutex_unlock(&m->table_lock);
	pthread_mutex_lock(&m->dir_lock);
	*dir_bytes = m->dir_bytes;
	pthread_mutex_unlock(&m->dir_lock);
}

/* Snapshots ------------------------------------------------------------------- */

/* Caller holds snap_lock. */
static void snap_to_front(struct mnt *m, struct mnt_snap *s)
{
	if (m->snaps == s)
		return;
	if (s->prev)
		s->prev->next = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->prev = NULL;
	s->next = m->snaps;
	if (m->snaps)
		m->snaps->prev = s;
	m->snaps = s;
}

static struct mnt_snap *snap_find(struct mnt *m, const char *id)
{
	for (struct mnt_snap *s = m->snaps; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

static int snap_open(struct mnt *m, const char *id, struct mnt_snap **out)
{
	struct mnt_snap *s = calloc(1, sizeof(*s));
	int rc;

	if (!s)
		return ENOMEM;
	snprintf(s->id, sizeof(s->id), "%s", id);
	/* Its tags are listed only for the tags xattr: the list reads every tag ref. */
	rc = amber_snapshot_open_ext(&s->s, m->a, id, AMBER_SNAP_NO_TAGS);
	if (rc == 0)
		rc = amber_stat(&s->root, s->s, "");
	if (rc) {
		rc = mnt_errno(m, rc, id);
		amber_snapshot_free(s->s);
		free(s);
		return rc;
	}
	s->refs = 1;
	*out = s;
	return 0;
}

/* Caller holds snap_lock: the snapshot `id` with one more reference, or NULL. */
static struct mnt_snap *snap_ref_locked(struct mnt *m, const char *id)
{
	struct mnt_snap *s = snap_find(m, id);

	if (s) {
		m->nidle -= s->refs == 0;
		s->refs++;
		snap_to_front(m, s);
	}
	return s;
}

static void snap_destroy(struct mnt_snap *s)
{
	amber_snapshot_free(s->s);
	amber_entry_free(s->root);
	free(s);
}

/*
 * Referenced snapshots are as many as the nodes that use them; the list is
 * searched linearly, which is cheap next to the lookup that needs it.  The
 * snapshot is opened (authenticated) outside the lock; if another thread
 * opened the same one meanwhile, ours is dropped.
 */
int mnt_snap_get(struct mnt *m, const char *id, struct mnt_snap **out)
{
	struct mnt_snap *s, *mine = NULL;
	int rc;

	pthread_mutex_lock(&m->snap_lock);
	s = snap_ref_locked(m, id);
	pthread_mutex_unlock(&m->snap_lock);
	if (!s && (rc = snap_open(m, id, &mine)))
		return rc;
	if (mine) {
		pthread_mutex_lock(&m->snap_lock);
		s = snap_ref_locked(m, id);
		if (!s) {
			s = mine;
			mine = NULL;
			s->next = m->snaps;
			if (m->snaps)
				m->snaps->prev = s;
			m->snaps = s;
		}
		pthread_mutex_unlock(&m->snap_lock);
	}
	if (mine)
		snap_destroy(mine);
	*out = s;
	return 0;
}

void mnt_snap_hold(struct mnt *m, struct mnt_snap *s)
{
	pthread_mutex_lock(&m->snap_lock);
	m->nidle -= s->refs == 0;
	s->refs++;
	pthread_mutex_unlock(&m->snap_lock);
}

/* Caller holds snap_lock: unchain the least recently used idle snapshot. */
static struct mnt_snap *snap_evict(struct mnt *m)
{
	struct mnt_snap *s = m->snaps, *victim = NULL;

	for (; s; s = s->next)
		if (s->refs == 0)
			victim = s;
	if (!victim)
		return NULL;
	if (victim->prev)
		victim->prev->next = victim->next;
	else
		m->snaps = victim->next;
	if (victim->next)
		victim->next->prev = victim->prev;
	m->nidle--;
	return victim;
}

void mnt_snap_put(struct mnt *m, struct mnt_snap *s)
{
	struct mnt_snap *victim = NULL;

	pthread_mutex_lock(&m->snap_lock);
	if (--s->refs == 0) {
		m->nidle++;
		if (m->nidle > MNT_SNAP_IDLE_MAX)
			victim = snap_evict(m);
	}
	pthread_mutex_unlock(&m->snap_lock);
	if (victim)
		snap_destroy(victim);
}

/* Listings ---------------------------------------------------------------- */

static void dir_key(struct mnt_dirkey *k, const struct mnt_node *n)
{
	uint64_t h = 14695981039346656037ULL;   /* FNV-1a: the name only picks messages */

	memset(k, 0, sizeof(*k));
	memcpy(k->tree, n->e->tree_oid, sizeof(k->tree));
	k->link = n->e->link;
	for (size_t i = 0; i < n->e->name_len; i++)
		h = (h ^ (uint8_t)n->e->name[i]) * 1099511628211ULL;
	k->name = h;
}

/* Caller holds dir_lock: the slot of the listing keyed k, or NULL. */
static struct mnt_dirslot *dir_slot(struct mnt *m, const struct mnt_dirkey *k)
{
	for (int i = 0; i < MNT_DIRCACHE_SLOTS; i++)
		if (m->dircache[i].d && memcmp(&m->dircache[i].key, k, sizeof(*k)) == 0)
			return &m->dircache[i];
	return NULL;
}

/* Caller holds dir_lock: an empty slot or the least recently used idle one. */
static struct mnt_dirslot *dir_victim(struct mnt *m)
{
	struct mnt_dirslot *v = NULL;

	for (int i = 0; i < MNT_DIRCACHE_SLOTS; i++) {
		struct mnt_dirslot *s = &m->dircache[i];

		if (s->refs == 0 && (!v || !s->d || s->used < v->used))
			v = s;
		if (v && !v->d)
			break;
	}
	return v;
}

/* A listing dropped from the cache, freed once dir_lock is released. */
struct dir_gone {
	amber_dir *d;
	struct mnt_snap *snap;
};

/* Caller holds dir_lock: empty slot s into *g. */
static void dir_evict(struct mnt *m, struct mnt_dirslot *s, struct dir_gone *g)
{
	g->d = s->d;
	g->snap = s->snap;
	m->dir_bytes -= s->bytes;
	memset(s, 0, sizeof(*s));
}

static void dir_release(struct mnt *m, struct dir_gone *g, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		amber_dir_free(g[i].d);
		if (g[i].snap)
			mnt_snap_put(m, g[i].snap);
	}
}

/*
 * An entry's memory: the struct, its name, symlink target and xattrs
 * (names and values), each a separate allocation.  Names and xattrs come
 * from the archive and can be large (a 20k-entry directory with 4 KiB of
 * xattrs each is 80 MiB), so they are counted, not guessed.
 */
static size_t entry_bytes(const amber_entry *e)
{
	size_t n = sizeof(*e) + MNT_ALLOC(e->name_len + 1);

	if (e->target)
		n += MNT_ALLOC(e->target_len + 1);
	if (e->nxattrs)
		n += MNT_ALLOC(e->nxattrs * sizeof(*e->xattrs));
	for (size_t i = 0; i < e->nxattrs; i++)
		n += MNT_ALLOC(strlen(e->xattrs[i].name) + 1) +
		     MNT_ALLOC(e->xattrs[i].value_len + 1);
	return n;
}

/*
 * A listing's memory: its entries and their names, targets and xattrs.  A
 * streamed listing still being decoded is counted at its entries and
 * short names for now (*exact 0), and counted again once it is complete
 * (mnt_dir_put).
 */
static size_t dir_bytes(const amber_dir *d, int *exact)
{
	size_t n = MNT_ALLOC(64), count = amber_dir_count(d);

	*exact = amber_dir_complete(d);
	if (!*exact)
		return n + count * (sizeof(amber_entry) + MNT_ALLOC(32));
	for (size_t i = 0; i < count; i++)
		n += entry_bytes(amber_dir_entry(d, i));
	return n;
}

/*
 * Caller holds dir_lock.  Keep idle listings under o.dir_cache by
 * dropping the least recently used (a 20k-entry directory decodes to
 * several MiB, so a slot count alone does not bound memory).  Returns the
 * listings to free outside the lock, chained through a scratch array.
 */
static size_t dir_trim(struct mnt *m, const struct mnt_dirslot *keep, struct dir_gone *gone,
		       size_t max)
{
	const struct mnt_dirslot *mru[2] = {NULL, NULL};
	size_t n = 0;

	/*
	 * The two listings used last stay whatever their size: a walk of two
	 * trees side by side (diff -r, rsync --compare-dest) alternates between
	 * two directories, and two huge ones over the bound would otherwise be
	 * decoded again at every lookup.
	 */
	for (int i = 0; i < MNT_DIRCACHE_SLOTS; i++) {
		const struct mnt_dirslot *s = &m->dircache[i];

		if (!s->d)
			continue;
		if (!mru[0] || s->used > mru[0]->used) {
			mru[1] = mru[0];
			mru[0] = s;
		} else if (!mru[1] || s->used > mru[1]->used) {
			mru[1] = s;
		}
	}
	while (m->dir_bytes > m->o.dir_cache && n < max) {
		struct mnt_dirslot *v = NULL;

		for (int i = 0; i < MNT_DIRCACHE_SLOTS; i++) {
			struct mnt_dirslot *s = &m->dircache[i];

			if (s != keep && s != mru[0] && s != mru[1] && s->d && s->refs == 0 &&
			    (!v || s->used < v->used))
				v = s;
		}
		if (!v)
			break;
		dir_evict(m, v, &gone[n++]);
	}
	return n;
}

/* Cache listing d of node n (decoded just now), or the one another thread
 * cached meanwhile; held.  Uncached (every slot busy), d is returned as it is. */
static amber_dir *dir_insert(struct mnt *m, struct mnt_node *n, amber_dir *d)
{
	struct mnt_dirkey k;
	struct mnt_dirslot *s;
	struct dir_gone gone[MNT_DIRCACHE_SLOTS + 1];
	int exact;
	size_t ngone = 0, bytes = dir_bytes(d, &exact);

	dir_key(&k, n);
	mnt_snap_hold(m, n->snap);      /* for the slot (not under dir_lock) */
	pthread_mutex_lock(&m->dir_lock);
	s = dir_slot(m, &k);
	if (s) {
		gone[ngone++] = (struct dir_gone){d, n->snap};  /* another thread's won */
		d = s->d;
	} else if ((s = dir_victim(m))) {
		if (s->d)
			dir_evict(m, s, &gone[ngone++]);
		s->key = k;
		s->d = d;
		s->snap = n->snap;
		s->bytes = bytes;
		s->estimated = !exact;
		m->dir_bytes += s->bytes;
		ngone += dir_trim(m, s, gone + ngone, MNT_DIRCACHE_SLOTS);
	} else {
		gone[ngone++] = (struct dir_gone){NULL, n->snap};
	}
	if (s) {
		s->refs++;
		s->used = ++m->dir_clock;
	}
	pthread_mutex_unlock(&m->dir_lock);
	dir_release(m, gone, ngone);
	return d;
}

/* n's cached listing with a reference taken (touch: as used now), or NULL. */
static amber_dir *dir_take(struct mnt *m, struct mnt_node *n, int touch)
{
	struct mnt_dirkey k;
	struct mnt_dirslot *s;
	amber_dir *d = NULL;

	dir_key(&k, n);
	pthread_mutex_lock(&m->dir_lock);
	s = dir_slot(m, &k);
	if (s) {
		s->refs++;
		if (touch)
			s->used = ++m->dir_clock;
		d = s->d;
	}
	pthread_mutex_unlock(&m->dir_lock);
	return d;
}

amber_dir *mnt_dir_peek(struct mnt *m, struct mnt_node *n)
{
	return dir_take(m, n, 0);
}

int mnt_dir_get(struct mnt *m, struct mnt_node *n, amber_dir **out)
{
	amber_dir *d;
	int rc;

	if ((*out = dir_take(m, n, 1)) != NULL)
		return 0;
	rc = amber_dir_open_ext(&d, n->snap->s, n->e, AMBER_DIR_STREAM);
	if (rc)
		return mnt_errno(m, rc, n->snap->id);
	*out = dir_insert(m, n, d);
	return 0;
}

/*
 * Release a listing from mnt_dir_get.  It stays cached when idle, until the
 * cache is over its bound (one huge directory, or several in use at once):
 * then the least recently used idle ones go, itself included.
 */
void mnt_dir_put(struct mnt *m, amber_dir *d)
{
	struct mnt_dirslot *s = NULL;
	struct dir_gone gone[MNT_DIRCACHE_SLOTS + 1];
	size_t ngone = 0;

	pthread_mutex_lock(&m->dir_lock);
	for (int i = 0; i < MNT_DIRCACHE_SLOTS && !s; i++)
		if (m->dircache[i].d == d)
			s = &m->dircache[i];
	if (s) {
		s->refs--;
		if (s->estimated && amber_dir_complete(d)) {    /* count it exactly now */
			int exact;
			size_t bytes = dir_bytes(d, &exact);

			m->dir_bytes = m->dir_bytes - s->bytes + bytes;
			s->bytes = bytes;
			s->estimated = 0;
		}
		ngone = dir_trim(m, NULL, gone, MNT_DIRCACHE_SLOTS);
	} else {
		gone[ngone++] = (struct dir_gone){d, NULL};     /* never cached: all slots were busy */
	}
	pthread_mutex_unlock(&m->dir_lock);
	dir_release(m, gone, ngone);
}

/* At unmount, before the snapshots go: every cached listing. */
static void dir_cache_destroy(struct mnt *m)
{
	for (int i = 0; i < MNT_DIRCACHE_SLOTS; i++) {
		struct mnt_dirslot *s = &m->dircache[i];
		struct dir_gone g;

		if (!s->d)
			continue;
		dir_evict(m, s, &g);
		dir_release(m, &g, 1);
	}
}
