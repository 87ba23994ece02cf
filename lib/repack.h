/*
 * Pack consolidation (see repack.c): the writer's half, called with the
 * writer lock held; amber_archive_repack() in amber.h takes the lock.
 */
#ifndef AMBER_REPACK_H
#define AMBER_REPACK_H

#include "amber.h"
#include "store.h"

/** Flag: wait until several small packs can be merged (after a snapshot). */
#define AMBER_REPACK_LAZY (1u << 8)

/**
 * Merge packs geometrically (or all of them, with AMBER_REPACK_ALL), the
 * caller holding the writer lock.  @return 0, AMBER_ECORRUPT (a pack does
 * not match its index; nothing was removed), AMBER_ERROR.
 */
int amber_repack_locked(amber_repack_stats *st, amber_store *s, unsigned flags);

#endif
