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

/** A tag: the commit it names, and its name (without refs/tags/). */
typedef struct amber_tagent {
	uint8_t oid[20];
	char *name;
} amber_tagent;

/** The archive's tags, read once for a walk, sorted by commit. */
typedef struct amber_tagtab {
	amber_archive *a;
	amber_tagent *v;
	size_t n, cap;
} amber_tagtab;

/** Read every tag of the archive (an unreadable one names nothing, as
 *  amber_snapshot_open's own scan has it).  Dispose with
 *  amber_tagtab_dispose(). */
int amber_tagtab_load(amber_tagtab *t, amber_archive *a);
void amber_tagtab_dispose(amber_tagtab *t);

/**
 * amber_snapshot_open() reading the commit through store `st` (a->store,
 * or a twin of it: amber_store_open_twin()), with its tags from `tags`
 * (read once for a whole walk) instead of a scan of refs/tags for each
 * snapshot (NULL: scan).
 */
int amber_snapshot_open_in(amber_snapshot **out, amber_archive *a, amber_store *st,
			   const amber_tagtab *tags, const char *id);

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
