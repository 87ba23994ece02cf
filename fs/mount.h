/*
 * amberfs mount: the read-only time-travel FUSE daemon (private header).
 *
 * mount.c        options, setup, daemonizing, the session loop, teardown,
 *                logging and the one map from our error codes to errno
 * mount_inode.c  the node table (FUSE node ids), the snapshot LRU and the
 *                bounded cache of decoded directory listings
 * mount_layout.c the virtual tree: latest, snapshots/, at/, streams/,
 *                tags/, ids/, and the per-stream time lines
 * mount_ops.c    the FUSE low-level handlers
 * mount_slab.c   the memory of nodes: blocks in 2 MiB chunks
 * mount_store.c  small files stored in the kernel's page cache ahead of reads
 */
#ifndef AMBERFS_MOUNT_H
#define AMBERFS_MOUNT_H

#define FUSE_USE_VERSION 314

#include "amber.h"

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

/* Immutable things (inside snapshots) are cached by the kernel for a day;
 * moving names for less than the ~0.5 s refresh period plus a margin. */
#define MNT_TIMEOUT_IMMUTABLE 86400.0
#define MNT_TIMEOUT_MOVING 0.5
#define MNT_REFRESH_NS 500000000LL

#define MNT_READ_MAX (1u << 20)         /* largest read request we serve */
#define MNT_READAHEAD_KB 8192u          /* kernel read-ahead asked for the mount */
#define MNT_BLKSIZE (128u * 1024)
#define MNT_SNAP_IDLE_MAX 32            /* unreferenced snapshots kept open */
#define MNT_DIRCACHE_SLOTS 64           /* decoded listings kept for lookups */
#define MNT_DIRCACHE_BYTES ((size_t)16 << 20) /* ... and their memory, idle ones
                                                 (default -o dir_cache) */
#define MNT_NODE_BYTES ((size_t)32 << 20)   /* default node table bound (-o node_cache) */
#define MNT_MAX_THREADS 10              /* FUSE worker threads, each with a request buffer */

/* Fixed st_ino of the virtual directories (node ids are separate). */
enum {
	MNT_INO_ROOT = 1,
	MNT_INO_LATEST = 2,
	MNT_INO_SNAPSHOTS = 3,
	MNT_INO_AT = 4,
	MNT_INO_STREAMS = 5,
	MNT_INO_TAGS = 6,
	MNT_INO_IDS = 7,
};

/** What a node is; the layout decides what each kind contains. */
enum mnt_kind {
	MK_ROOT,
	MK_LATEST,      /* symlink to snapshots/<day>/<name> of node->stream */
	MK_SNAPSHOTS,   /* days of node->stream */
	MK_DAY,         /* snapshots of node->stream in the day at node->day_ns */
	MK_AT,          /* time travel in node->stream; lists nothing */
	MK_STREAMS,
	MK_STREAM,      /* latest, snapshots, at of node->stream */
	MK_TAGS,
	MK_IDS,
	MK_SNAPROOT,    /* root directory of node->snap */
	MK_ENTRY,       /* anything below a snapshot root */
};

/** An open snapshot shared by the nodes that show it. */
struct mnt_snap {
	char id[AMBER_OID_HEXSZ + 1];
	amber_snapshot *s;
	amber_entry *root;              /* the record's root entry, owned */
	unsigned refs;                  /* nodes and requests using it */
	struct mnt_snap *prev, *next;   /* all snapshots, most recent first */
};

/**
 * One FUSE node.  Fields other than nlookup/children/hash links are set
 * at creation and never change, so handlers read them without a lock: the
 * kernel does not forget a node while a request on it is in flight.
 */
struct mnt_node {
	uint64_t id;                    /* fuse_ino_t, never reused */
	uint64_t nlookup;               /* kernel references (table lock) */
	uint64_t children;              /* live children pointing here (table lock) */
	int hashed;                     /* findable by (parent, name) (table lock) */
	struct mnt_node *parent;
	char *name;
	size_t name_len;
	uint64_t hash;                  /* of (parent id, name): the name table's key */
	struct mnt_node *id_next, *name_next;
	struct mnt_node *lru_prev, *lru_next; /* least recently looked up first (table lock) */
	size_t bytes;                   /* memory of the node and what it owns */

	enum mnt_kind kind;
	uint64_t st_ino;
	char *stream;                   /* per-stream virtual nodes, owned */
	int64_t day_ns;                 /* MK_DAY */
	double entry_timeout;
	struct mnt_snap *snap;          /* MK_SNAPROOT, MK_ENTRY: one reference */
	amber_entry *e;                 /* MK_SNAPROOT, MK_ENTRY: owned copy */
	int e_inline;                   /* e (and name) sit in the node's own block */
	atomic_uchar stored;            /* queued to be stored in the kernel's cache */
	unsigned slab_cls;              /* the block's class in mnt.slab, 0: malloc'd */
	/* directories: 1 + the listing index of the child file last read from
	 * its start, to tell a reader of file after file (READ_RUN in
	 * mount_ops.c: that read continued a run) */
	atomic_uint_fast64_t read_end;
};

/** What a new node will be; ownership of stream, snap and e moves in. */
struct mnt_nodeinfo {
	enum mnt_kind kind;
	uint64_t st_ino;
	char *stream;
	int64_t day_ns;
	double entry_timeout;
	struct mnt_snap *snap;
	amber_entry *e;
	/* instead of e: an entry of a listing the caller holds, copied in */
	const amber_entry *src;
};

/* Node memory (mount_slab.c): size classes of MNT_SLAB_GRAIN bytes up to
 * MNT_SLAB_CLASSES of them, in chunks of MNT_SLAB_CHUNK. */
#define MNT_SLAB_GRAIN 64u
#define MNT_SLAB_CLASSES 12u
#define MNT_SLAB_CHUNK ((size_t)2 << 20)

struct mnt_slab {
	pthread_mutex_t lock;           /* everything below */
	char *cur;                      /* the newest chunk's unused part */
	size_t left;
	void *free[MNT_SLAB_CLASSES];   /* freed blocks of each class, linked through them */
	char *chunks;                   /* every chunk, linked through its first word */
	size_t chunk_bytes;
};

/** One stream's time line, opened lazily (guarded by mnt.tl_lock). */
struct mnt_tl {
	char *stream;
	amber_timeline *t;
	int64_t refreshed_ns;           /* CLOCK_MONOTONIC of the last refresh */
	struct mnt_tl *next;
};

/*
 * What a listing is of: the directory's tree and manifest (which fix every
 * entry) and a hash of its name (which its messages name).  Not the node:
 * a listing outlives the kernel's names (drop_caches, the trimmer) and
 * serves every snapshot that holds the same directory.
 */
struct mnt_dirkey {
	uint8_t tree[20];
	amber_link link;
	uint64_t name;
};

struct mnt_dirslot {
	struct mnt_dirkey key;
	amber_dir *d;                   /* NULL = empty */
	struct mnt_snap *snap;          /* held: d decodes and looks names up through it */
	unsigned refs;
	uint64_t used;
	size_t bytes;                   /* estimated memory of d */
	int estimated;                  /* bytes is a guess: d was still being decoded */
};

/** Options, filled by fuse_opt_parse (see mount.c's table). */
struct mnt_opts {
	char *passfile;
	char *token_uri;                /* unlock with this token's key (pkcs11 slot) */
	char *pin_file;                 /* the token's PIN */
	char *cache_size_text;
	char *node_cache_text;
	char *dir_cache_text;
	char *cache_dir;
	char *log;
	char *stream;
	int allow_other;
	int allow_root;
	int default_permissions;
	int debug;
	int ro;
	int rw;
	int foreground;
	int single_thread;
	int show_provenance;
	int help;
	size_t cache_size;
	size_t node_cache;              /* bound on the node table's memory */
	size_t dir_cache;               /* bound on idle decoded listings */
	const char *pos[2];             /* ARCHIVE, MOUNTPOINT */
	int npos;
};

struct mnt_counters {
	atomic_uint_fast64_t lookups;
	atomic_uint_fast64_t opens;
	atomic_uint_fast64_t reads;
	atomic_uint_fast64_t read_bytes;
	atomic_uint_fast64_t nodes_dropped;     /* names the kernel was asked to forget */
	atomic_uint_fast64_t readdir_ahead;     /* readdir replies made ahead and taken */
	atomic_uint_fast64_t stored;            /* files stored in the kernel's cache ahead */
};

/* The most pieces of decoded chunks a read is answered with (chunks are at
 * least 128 KiB, so only a corrupt index needs more). */
#define MNT_READ_PIECES 16

/* Files waiting to be stored in the kernel's page cache (mount_store.c). */
#define MNT_STORE_QUEUE 64u
struct mnt_store {
	pthread_mutex_t lock;           /* everything below */
	pthread_cond_t cond;            /* a file was queued, or stop */
	struct mnt_node *ring[MNT_STORE_QUEUE]; /* each holding one lookup */
	size_t head, tail;
	int started;                    /* 1 running, -1 could not start */
	int stop;
	pthread_t thread;
};

/** The daemon's state; fuse_req_userdata() of every request. */
struct mnt {
	amber_archive *a;
	struct mnt_opts o;
	char *archive_abs;
	char *mountpoint_abs;
	uid_t uid;
	gid_t gid;
	int64_t start_sec;
	int daemonized;
	FILE *logf;

	pthread_mutex_t table_lock;     /* nodes: both hash tables and counts */
	struct mnt_node **by_id, **by_name;
	size_t nbuckets, nnodes;
	uint64_t next_id;
	struct mnt_node *root;
	struct mnt_node *lru_head, *lru_tail;
	size_t node_bytes;              /* sum of the nodes' bytes (table lock) */
	struct mnt_slab slab;           /* where the nodes' blocks come from */

	/* the trimmer: asks the kernel to forget names while node_bytes > o.node_cache */
	struct fuse_session *se;
	pthread_cond_t trim_cond;       /* with table_lock */
	pthread_t trim_thread;
	int trim_running, trim_stop, trim_failed; /* (table lock) */

	pthread_mutex_t snap_lock;      /* snapshot list and refs */
	struct mnt_snap *snaps;
	size_t nidle;

	pthread_mutex_t dir_lock;       /* dircache */
	struct mnt_dirslot dircache[MNT_DIRCACHE_SLOTS];
	uint64_t dir_clock;
	size_t dir_bytes;               /* sum of the slots' bytes (dir_lock) */

	pthread_mutex_t tl_lock;        /* timelines (not thread-safe), and `day` */
	struct mnt_tl *tls;
	struct mnt_day {                /* the last day listed from the archive's index */
		char *stream;           /* NULL: none */
		int64_t day_ns;
		amber_snapref *v;
		size_t n;
		int64_t built_ns;       /* CLOCK_MONOTONIC */
	} day;

	struct mnt_counters n;
	struct mnt_store store;
	atomic_int readahead_set;       /* the bdi read-ahead was raised (or tried) */
	int no_open;                    /* the kernel opens files without asking */
};

/* mount.c (cmd_mount is declared in cli.h) */
/** Map a libamber code to an errno; EIO is logged with `what` and the message. */
int mnt_errno(struct mnt *m, int code, const char *what);
void mnt_log(struct mnt *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int64_t mnt_now_ns(void);

/* mount_inode.c */
int mnt_table_init(struct mnt *m);
void mnt_table_destroy(struct mnt *m);
struct mnt_node *mnt_node_by_id(struct mnt *m, fuse_ino_t ino);
/** The hashed child `name` of `parent` with one more lookup, or NULL. */
struct mnt_node *mnt_node_find(struct mnt *m, struct mnt_node *parent, const char *name);
/**
 * The child `name` of `parent` described by `info`, with one more lookup:
 * the existing node if it shows the same thing, else a new one (which
 * replaces the old in the name table).  `info`'s resources are consumed.
 * @return the node or NULL (out of memory).
 */
struct mnt_node *mnt_node_get(struct mnt *m, struct mnt_node *parent, const char *name,
			      struct mnt_nodeinfo *info);
void mnt_node_forget(struct mnt *m, fuse_ino_t ino, uint64_t n);
void mnt_nodeinfo_dispose(struct mnt *m, struct mnt_nodeinfo *info);
/**
 * Let the trimmer of the node table run (after the fork; its thread starts
 * when the table first goes over its bound); stop it before teardown.
 */
void mnt_trim_start(struct mnt *m, struct fuse_session *se);
void mnt_trim_stop(struct mnt *m);

/* mount_store.c */
void mnt_store_init(struct mnt *m);
/** Queue file node n (holding one lookup, given back once stored); 0 if not queued. */
int mnt_store_queue(struct mnt *m, struct mnt_node *n);
/** Stop the thread, giving back the lookups of the files still queued. */
void mnt_store_stop(struct mnt *m);
/** Node count and bytes, and the listing cache's bytes (all, held ones included). */
void mnt_table_usage(struct mnt *m, size_t *nodes, size_t *node_bytes, size_t *dir_bytes);

/* mount_slab.c */
void mnt_slab_init(struct mnt_slab *s);
/** Release every chunk (the blocks in them are gone). */
void mnt_slab_destroy(struct mnt_slab *s);
/**
 * A zeroed block of at least `size` bytes, and in *cls what mnt_slab_free
 * needs to take it back (0: it came from calloc).  NULL: out of memory.
 */
void *mnt_slab_alloc(struct mnt_slab *s, size_t size, unsigned *cls);
void mnt_slab_free(struct mnt_slab *s, void *p, unsigned cls);
/** Bytes of chunks mapped (what the blocks in use or free may occupy). */
size_t mnt_slab_bytes(struct mnt_slab *s);

/** Take a reference on snapshot `id`, opening it if needed. @return errno. */
int mnt_snap_get(struct mnt *m, const char *id, struct mnt_snap **out);
void mnt_snap_put(struct mnt *m, struct mnt_snap *s);
/** Take one more reference on a snapshot already held. */
void mnt_snap_hold(struct mnt *m, struct mnt_snap *s);

/** The listing of directory node n, held until mnt_dir_put. @return errno. */
int mnt_dir_get(struct mnt *m, struct mnt_node *n, amber_dir **out);
/** The listing of n if it is decoded already (held, as mnt_dir_get), else NULL. */
amber_dir *mnt_dir_peek(struct mnt *m, struct mnt_node *n);
void mnt_dir_put(struct mnt *m, amber_dir *d);


/* mount_layout.c */
typedef int (*mnt_emit_fn)(void *ctx, const char *name, uint64_t st_ino, mode_t type,
			   off_t next);
/** Look up `name` in virtual directory `parent`. @return errno (0 = found). */
int mnt_layout_lookup(struct mnt *m, struct mnt_node *parent, const char *name,
		      struct mnt_nodeinfo *out);
/** Emit the entries of virtual directory n from cookie `off` until emit != 0. */
int mnt_layout_list(struct mnt *m, struct mnt_node *n, off_t off, mnt_emit_fn emit,
		    void *ctx);
/** The target of a MK_LATEST node. @return errno. */
int mnt_layout_readlink(struct mnt *m, struct mnt_node *n, char *out, size_t cap);
int mnt_layout_is_virtual_dir(const struct mnt_node *n);
void mnt_tl_destroy(struct mnt *m);

/* mount_ops.c */
extern const struct fuse_lowlevel_ops mnt_ops;
void mnt_fill_stat(struct mnt *m, const struct mnt_node *n, struct stat *st);

#endif
