/*
 * libamber: comparing two snapshots and restoring one.  Part of <amber.h>;
 * see libamber(3).
 */
#ifndef AMBER_RESTORE_PUBLIC_H
#define AMBER_RESTORE_PUBLIC_H

#include "amber_read.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Diff -------------------------------------------------------------- */

enum amber_change_kind {
	AMBER_ADDED = 'A',
	AMBER_REMOVED = 'D',
	AMBER_MODIFIED = 'M',        /**< content (or symlink target, device) changed */
	AMBER_TYPE_CHANGED = 'T',
	AMBER_META_CHANGED = 'm',    /**< only mode, owner, mtime or xattrs changed */
};

/** A byte range of a file. */
typedef struct amber_range {
	uint64_t off, len;
} amber_range;

/** One difference between two snapshots, as passed to the callback. */
typedef struct amber_change {
	int kind;                    /**< enum amber_change_kind */
	const char *path;            /**< relative to the diffed path; valid during the call */
	const amber_entry *old_e;    /**< NULL when added */
	const amber_entry *new_e;    /**< NULL when removed */
	int meta_changed;            /**< metadata differs too (for AMBER_MODIFIED) */
	/** For modified regular files with ranges asked for: the changed region,
	 *  as [old_range) in the old file replaced by [new_range) in the new. */
	amber_range old_range, new_range;
	uint64_t appended;           /**< > 0: the change is exactly this many bytes
					  appended at offset old size */
} amber_change;

typedef int (*amber_diff_cb)(const amber_change *c, void *payload);

/**
 * Compare `path` ("" = everything) of two snapshots of one archive, calling
 * cb for each difference, depth first in name order (the entries of a
 * directory of more than 1024 entries come one fan-out bucket at a time,
 * in name order within each).  Identical subtrees and buckets are skipped
 * by object id without being decrypted; an added or removed directory is
 * one change (its contents are not listed).  With `ranges`, modified files'
 * changed byte region is found from their chunk lists, decoding at most the
 * two chunks where the region starts.
 * @return 0, the callback's non-zero value, or an error.
 */
int amber_diff(amber_snapshot *a, amber_snapshot *b, const char *path, int ranges,
	       amber_diff_cb cb, void *payload);

/** How deep amber_restore() nests directories below the one it restores. */
#define AMBER_RESTORE_MAX_DEPTH 4096

/** What amber_restore() left out because `safe` was set. */
typedef struct amber_restore_skipped {
	uint64_t devices;      /**< device nodes not created */
	uint64_t setid;        /**< non-directories whose setuid/setgid bits were cleared */
	uint64_t xattrs;       /**< security.* and trusted.* attributes not set */
} amber_restore_skipped;

#define AMBER_RESTORE_OPTS_VERSION 1

/** Options for amber_restore().  Initialise with AMBER_RESTORE_OPTS_INIT. */
typedef struct amber_restore_opts {
	unsigned int version;  /**< AMBER_RESTORE_OPTS_VERSION */
	int no_owner;          /**< do not chown (default when not root) */
	amber_progress_cb progress;
	amber_warn_cb warn;    /**< metadata that could not be applied */
	void *payload;
	/** For untrusted archives: create no device nodes, clear setuid and
	 *  setgid on everything but directories, set no security.* or
	 *  trusted.* attribute, and leave everything owned by the caller. */
	int safe;
	amber_restore_skipped *skipped; /**< if set, receives what `safe` left out */
} amber_restore_opts;

#define AMBER_RESTORE_OPTS_INIT {.version = AMBER_RESTORE_OPTS_VERSION}

/**
 * Restore `path` of snapshot s into `dest`, which must not exist or be an
 * empty directory.  Restores contents, modes, owners (as root), ns mtimes,
 * xattrs, symlinks, hardlink groups, fifos and device nodes (all but
 * the last with opts->safe).  Nothing it sets metadata on is reached
 * through a symlink; a node replaced by someone else while being
 * restored fails the restore.  Directories nested more than
 * AMBER_RESTORE_MAX_DEPTH deep fail it.
 * @param stats receives the counts (may be NULL; else AMBER_STATS_INIT)
 * @param opts  NULL for the defaults
 * @return 0, AMBER_EEXISTS if dest is not empty, AMBER_ENOTFOUND, AMBER_EAUTH,
 *         AMBER_EINVAL for options of an unknown version or stats of
 *         version 0...
 */
int amber_restore(amber_stats *stats, amber_snapshot *s, const char *path, const char *dest,
		  const amber_restore_opts *opts);

#ifdef __cplusplus
}
#endif

#endif
