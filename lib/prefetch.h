/* Read-ahead into the archive's shared cache (prefetch.c). */
#ifndef AMBER_PREFETCH_H
#define AMBER_PREFETCH_H

#include <stddef.h>

#include "archive.h"

/** Queue a chunk for background decoding into the cache. */
void amber_archive_prefetch(amber_archive *a, const amber_link *l, size_t len);

#endif
