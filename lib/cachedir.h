/*
 * The local cache directory and the files in it.
 *
 * Caches (time indexes, files cache, verify marks, the record that an
 * archive was seen encrypted) live in BASE/<archive id>/, where BASE is
 * what the caller passed (amber_open_opts.cache_dir) or
 * ~/.cache/amberfs of the user's home directory in the password database.
 * There is no shared fallback such as /tmp.
 *
 * The directory is trusted only if it is ours: a directory (BASE and
 * BASE/<id>) that another user owns, or that group or others may write, is
 * refused, so that no other local user can plant or swap files in it.  Files
 * are replaced through a new uniquely named temporary file in the same
 * directory (O_CREAT|O_EXCL, which never follows a symlink), fsynced, then
 * renamed over the old one.
 */
#ifndef AMBER_CACHEDIR_H
#define AMBER_CACHEDIR_H

#include <stddef.h>
#include <stdio.h>

/**
 * BASE/<id> (malloc'd), created mode 0700 if missing, after checking that
 * it and BASE are directories owned by the effective user and not writable
 * by group or others.  `base` NULL: the default above; "" means no cache.
 * @return the path, or NULL with the error set (callers then run without
 *         the cache, or fail when the cache is what they need).
 */
char *amber_cachedir_get(const char *base, const char *id);

/**
 * Whether amber_cachedir_get() would use the directory, without creating
 * anything: what exists of BASE and BASE/<id> passes its check.
 * @return 0 (also for "" and for directories not made yet), or AMBER_ERROR
 *         with the reason set, naming the directory and what to do.
 */
int amber_cachedir_check(const char *base, const char *id);

/**
 * Create a new temporary file next to `path` (path.tmp.XXXXXX, mode 0600,
 * O_EXCL so a planted file or symlink is never opened).
 * @param tmp  receives the temporary name (malloc'd)
 * @return the open stream, or NULL with the error set.
 */
FILE *amber_tmpfile_new(char **tmp, const char *path);

/**
 * Finish a temporary file from amber_tmpfile_new(): flush, fsync, close and
 * rename it to `path`, or, if `ok` is 0 or any step fails, close and remove
 * it.  Frees tmp.  @return 0 or AMBER_ERROR.
 */
int amber_tmpfile_commit(FILE *f, char *tmp, const char *path, int ok);

/** Replace `path` with data[0..len) through a temporary file.  @return 0 or AMBER_ERROR. */
int amber_file_replace(const char *path, const void *data, size_t len);

#endif
