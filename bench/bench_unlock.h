/*
 * Unlocking for the in-process bench programs: the passphrase from the file
 * named by $AMBERFS_PASSPHRASE_FILE (never from argv).
 */
#ifndef AMBER_BENCH_UNLOCK_H
#define AMBER_BENCH_UNLOCK_H

#include "amber.h"

/** 0 if a needs no key or opened; -1 (said on stderr, naming `prog`) or an error. */
int bench_unlock(amber_archive *a, const char *prog);

#endif
