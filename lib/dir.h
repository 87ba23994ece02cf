/* Directories of a snapshot, as the reader, diff and writer modules see them (dir.c). */
#ifndef AMBER_DIR_H
#define AMBER_DIR_H

#include "amber.h"
#include "archive.h"
#include "buf.h"
#include "gitobj.h"
#include "manifest.h"

/* The bucket list of a fanned-out directory. */
typedef struct amber_fanout_view {
	amber_bucket *b;        /* malloc'd; NULL when the directory has no fan-out */
	size_t nb;
	unsigned bits;
	/* 0: b[] are the buckets.  Else (a streamed listing's view, dir.c) b[]
	 * are the nodes of that last level of a layout-2 fan-out, each id the
	 * node's prefix, each to be read with its buckets when it is needed. */
	unsigned item_level;
} amber_fanout_view;

/**
 * Read directory `dir`'s tree and, if it fans out, its bucket list (checked
 * against the tree); v->b is NULL for an ordinary directory.  Free v->b.
 */
int amber_dir_buckets(amber_fanout_view *v, amber_snapshot *s, const amber_entry *dir);

/**
 * How directory `dir` is stored: *layout 0 (not fanned out), 1 (a flat
 * bucket list) or 2 (a tree of fan-out nodes, amberfs-format(5)).
 */
int amber_dir_fanout_layout(int *layout, amber_snapshot *s, const amber_entry *dir);

/**
 * Read and check one node of a layout-2 fan-out: its "m" is m, its git tree
 * `tree` (holding m and exactly the children it names), at `level` with
 * `prefix`; below level 0, of `bits` and holding the `count` entries its
 * parent said.
 */
int amber_dir_node(amber_fanout_node *nd, amber_snapshot *s, const amber_link *m,
		   const uint8_t tree[20], unsigned level, unsigned prefix, unsigned bits,
		   uint32_t count, const char *what);

/**
 * The buckets of two fanned-out directories o (of snapshot so) and n (of
 * sn) for a diff: when both are layout 2 of the same width, only the
 * buckets whose trees differ (walking only the nodes that differ), else
 * every bucket of each, as amber_dir_buckets() gives them.  Free vo->b and
 * vn->b.
 */
int amber_dir_buckets_pair(amber_fanout_view *vo, amber_fanout_view *vn, amber_snapshot *so,
			   const amber_entry *o, amber_snapshot *sn, const amber_entry *n);

/** An empty listing (NULL on out of memory); free with amber_dir_free(). */
amber_dir *amber_dir_empty(void);

/** The listing of one bucket of fanned-out directory `dir` (checked). */
int amber_dir_open_bucket(amber_dir **out, amber_snapshot *s, const amber_entry *dir,
			  const amber_bucket *b, unsigned bits);

/**
 * Read git tree `oid` into b and parse it into *t (n entries; free *t,
 * dispose b).  `what` names it in messages.
 */
int amber_tree_read(amber_buf *b, amber_tparsed **t, size_t *n, amber_archive *a,
		    const uint8_t oid[20], const char *what);

/** AMBER_EAUTH: the git tree of `what` does not match its authenticated manifest. */
int amber_tree_mismatch(const char *what);

#endif
