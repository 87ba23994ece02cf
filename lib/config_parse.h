/*
 * The archive config's parser (the "config" blob of refs/amberfs/meta,
 * amberfs-format(5)), on its own so that it can be fuzzed: the config is
 * read from archives nobody has authenticated yet (verify --no-key reads
 * untrusted replicas).
 */
#ifndef AMBER_CONFIG_PARSE_H
#define AMBER_CONFIG_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "archive.h"

/**
 * Parse config text into a's format fields (encrypted, id, zstd_level,
 * chunk_min/avg/max); a->path names the archive in messages.  Every line
 * is checked: known keys exactly once, numbers in range, chunker sizes
 * consistent.
 * @return 0, or AMBER_ECORRUPT with the error set (a may be partly set).
 */
int amber_config_parse(amber_archive *a, const uint8_t *data, size_t len);

#endif
