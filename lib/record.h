/*
 * Commits and records, and the snapshot handle opened on them: shared by
 * the modules that read snapshots (directories, files, specs, history).
 */
#ifndef AMBER_RECORD_H
#define AMBER_RECORD_H

#include "amber.h"
#include "archive.h"
#include "gitobj.h"
#include "manifest.h"

struct amber_snapshot {
	amber_archive *a;
	amber_snapinfo info;
	amber_entry root;       /* the root directory, from the record */
};

/**
 * Read commit `oid` (named `hex` in messages), checking that its bytes hash
 * to its id.  Dispose *c with amber_commit_dispose().
 */
int amber_commit_read(amber_commit *c, amber_archive *a, const uint8_t oid[20],
		      const char *hex);

/** amber_commit_read() through store `st` (a twin of a->store). */
int amber_commit_read_in(amber_commit *c, amber_archive *a, amber_store *st,
			 const uint8_t oid[20], const char *hex);

/** amber_snapshot_open() reading the commit through store `st` (a twin of
 *  a->store, amber_store_open_twin()). */
int amber_snapshot_open_in(amber_snapshot **out, amber_archive *a, amber_store *st,
			   const char *id);

/**
 * The authenticated record of commit c, checked against it (tree, parent,
 * time).  Dispose *r with amber_record_dispose().
 */
int amber_record_open(amber_record *r, amber_archive *a, const amber_commit *c,
		      const char *hex);

/**
 * Time (from the Amberfs-Time trailer) and first parent of commit `oid`,
 * without authenticating the record.  *has_parent set to 0 or 1.
 */
int amber_commit_time(int64_t *time_ns, uint8_t parent[20], int *has_parent, amber_archive *a,
		      const uint8_t oid[20]);

/**
 * Read and authenticate the record of snapshot commit `oid`, checked
 * against the commit (tree, parent, time).  Dispose *r with
 * amber_record_dispose().
 */
int amber_record_read(amber_record *r, amber_archive *a, const uint8_t oid[20]);

/** Peel an annotated tag `oid` to the commit it names (out = oid for a commit). */
int amber_tag_peel(uint8_t out[20], amber_archive *a, const uint8_t oid[20]);

/**
 * AMBER_EAUTH for snapshot `hex` of stream `has` reached through the ref of
 * stream `stream` (NULL: main): a moved ref.
 */
int amber_stream_mismatch(const char *hex, const char *has, const char *stream);

#endif
