/*
 * Thread-local last error.  The failing function sets the message where the
 * failure happens, naming the object or path; callers pass the code up
 * unchanged and do not re-wrap it.
 */
#ifndef AMBER_ERROR_H
#define AMBER_ERROR_H

#include "amber.h"

/**
 * Record a failure on this thread and return `code` (so `return
 * amber_fail(AMBER_ECORRUPT, "manifest %s: ...", hex);` reads naturally).
 */
int amber_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Like amber_fail() with ": strerror(errno)" appended; code AMBER_ERROR. */
int amber_fail_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Forget the last failure. */
void amber_error_clear(void);

/**
 * Check the version of a public options struct, whose first member it is
 * (libgit2's GIT_ERROR_CHECK_VERSION): NULL (the defaults) and versions 1
 * to `max` pass; 0 (a zeroed struct, not initialised) and newer versions
 * fail.  `type` and `init` name the struct and its init macro in the message.
 * @return 0 or AMBER_EINVAL.
 */
int amber_opts_check(const void *opts, unsigned int max, const char *type, const char *init);

#endif
