/*
 * The object database behind an amber_store: libgit2's loose backend plus
 * our own pack backend, which gives libgit2 a pack only after its index
 * passed the check, and lets go of packs that were removed (store_odb.c).
 * Private to the store module.
 */
#ifndef AMBER_STORE_ODB_H
#define AMBER_STORE_ODB_H

#include <stddef.h>

#include <git2.h>

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

/** Rescan if the last scan is more than a second old (lookups do this too). */
void amber_packset_rescan_due(amber_packset *ps);

/**
 * How many pack indexes in objects/pack were refused (damaged); the first
 * one's file name goes into name (empty if none).
 */
size_t amber_packset_refused(amber_packset *ps, char *name, size_t cap);

/**
 * 1 if the version-2 index `dir`/`name` is safe to give libgit2 for its
 * pack: its size matches its object count and every offset lies inside
 * the pack; 0 if not; -1 if the pack itself does not exist.
 */
int amber_idx_sane(const char *dir, const char *name);

#endif
