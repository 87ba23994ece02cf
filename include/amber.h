/*
 * libamber: encrypted, deduplicated, time-indexed snapshots of directory
 * trees in a git object store.
 *
 * This header and the ones beside it (<amber_verify.h>, <amber_keys.h>,
 * <amber_slip39.h>) are the library's whole public contract.  The `amberfs`
 * program (CLI and FUSE daemon) is a thin client of it.  Every fallible function returns
 * 0 or a negative AMBER_E* code; the one-line message describing the failure
 * (naming the object or path involved) is available from
 * amber_error_last() on the same thread until the next failing call.
 *
 * Thread safety: an amber_archive may be shared by several threads for
 * reading (amber_snapshot_open, amber_file_read, ...).  Writing a snapshot
 * takes the archive's writer lock; only one writer per archive at a time.
 */
#ifndef AMBER_H
#define AMBER_H

/* The contract in parts, each of which can be included on its own: */
#include "amber_archive.h"   /* errors, start-up, archives */
#include "amber_snapshot.h"  /* writing snapshots, writer sessions, packs */
#include "amber_read.h"      /* reading snapshots */
#include "amber_restore.h"   /* diff and restore */

#endif
