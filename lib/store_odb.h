/*
 * The object database behind an amber_store: libgit2's loose backend plus
 * our own pack set, which reads a pack (with pread, packread.c) only after
 * its index passed the check, and lets go of packs that were removed
 * (store_odb.c).  Private to the store module.
 */
#ifndef AMBER_STORE_ODB_H
#define AMBER_STORE_ODB_H

#include <stddef.h>

#include <git2.h>

#include "packread.h"
#include "store.h"

typedef struct amber_packset amber_packset;

/**
 * A new object database for the repository whose git directory is
 * `gitdir`, with its packs scanned once.  A pack whose index fails the
 * check is not loaded (see amber_packset_refused()).
 * @param set_out receives the pack backend, owned by the odb (valid until
 *                git_odb_free() of the last reference)
 * @return 0 or a negative amber code (message set).
 */
int amber_odb_open(git_odb **out, amber_packset **set_out, const char *gitdir);

/**
 * Rescan objects/pack now: check and load new packs, drop removed ones.
 * The odb also does this by itself when a lookup misses.
 * @return 0 or a negative amber code.
 */
int amber_packset_scan(amber_packset *ps);

/** Listings of objects/pack the set made so far (scans: each is one listing). */
unsigned long long amber_packset_listings(amber_packset *ps);

/**
 * Load the pack whose index is objects/pack/`name` (pack-<hex>.idx) as a
 * scan would (checked, or refused), without listing the directory: for a
 * pack this process just installed.  Nothing happens if it is known.
 * @return 0 (loaded, or gone already: a consolidation beside the writer
 *         merged it, and a miss rescans), 1 if its index was refused, or a
 *         negative amber code.
 */
int amber_packset_add(amber_packset *ps, const char *name);

/** Let go of the pack `name` (pack-<hex>.idx), which this process removed. */
void amber_packset_drop(amber_packset *ps, const char *name);

/** The loaded packs (see amber_store_packs()); *out is freed by the caller. */
int amber_packset_list(amber_store_pack **out, size_t *n_out, amber_packset *ps);

/** Bytes of index copies the set may hold, for packs loaded from now on. */
void amber_packset_set_budget(amber_packset *ps, size_t bytes);

/** Rescan if the last scan is more than a second old (lookups do this too). */
void amber_packset_rescan_due(amber_packset *ps);

/**
 * How many pack indexes in objects/pack were refused (damaged); the first
 * one's file name goes into name (empty if none).
 */
size_t amber_packset_refused(amber_packset *ps, char *name, size_t cap);

/**
 * Read the object `oid` from the packs, by pread (no libgit2, no odb
 * mutex: any number of threads at once).  Its bytes go where alloc says.
 * @param max   larger objects are AMBER_ECORRUPT, found before allocating
 * @param what  names the object in messages (its hex id)
 * @return 0, AMBER_ENOTFOUND if no loaded pack holds it (loose objects are
 *         not looked at; no rescan beyond the once-a-second one), or the
 *         code and message of amber_pack_read().
 */
int amber_packset_read(int *type_out, size_t *len_out, amber_packset *ps, const uint8_t oid[20],
		       size_t max, const char *what, amber_pack_alloc_fn alloc, void *ctx);

/**
 * Where `oid` lies among the loaded packs, through the same checked index
 * copies and reads as amber_packset_read(): *pack is 1 + the pack's place in
 * the set (stable until the next scan), *off its offset there.
 * @return 1 if found, 0 if not (or the lookup failed: a read then says why).
 */
int amber_packset_position(uint32_t *pack, uint64_t *off, amber_packset *ps,
			   const uint8_t oid[20]);

/** Type and size of `oid` from the packs; codes as amber_packset_read(). */
int amber_packset_header(int *type_out, size_t *len_out, amber_packset *ps,
			 const uint8_t oid[20], const char *what);

/**
 * 1 if the version-2 index `dir`/`name` is safe to read for its pack:
 * its size matches its object count, its fan-out never falls, every offset
 * lies inside the pack, whose header names as many objects; 0 if not; -1
 * if the pack itself does not exist; -2 if no descriptor could be had.
 * Reads the whole offset table (verify): a scan checks all but the
 * offsets, which each lookup checks as it uses one.
 */
int amber_idx_sane(const char *dir, const char *name);

#endif
