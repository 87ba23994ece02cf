/* The snapshot handle shared by the reader and restore modules. */
#ifndef AMBER_READER_H
#define AMBER_READER_H

#include <pthread.h>

#include "amber.h"
#include "archive.h"
#include "buf.h"
#include "manifest.h"

struct amber_snapshot {
	amber_archive *a;
	amber_snapinfo info;
	amber_entry root;       /* the root directory, from the record */
};

/**
 * Time (from the Amberfs-Time trailer) and first parent of commit `oid`,
 * without authenticating the record.  *has_parent set to 0 or 1.
 */
int amber_commit_time(int64_t *time_ns, uint8_t parent[20], int *has_parent, amber_archive *a,
		      const uint8_t oid[20]);

#endif
