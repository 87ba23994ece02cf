#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_msg[1024];
static _Thread_local int last_code;

const char *amber_error_last(void)
{
	return last_msg;
}

int amber_error_code(void)
{
	return last_code;
}

void amber_error_clear(void)
{
	last_msg[0] = '\0';
	last_code = AMBER_OK;
}

/*
 * Callers may pass amber_error_last() itself as an argument, to prefix the
 * cause with their own context: format into a scratch buffer first, so the
 * source and the destination of vsnprintf never overlap.
 */
static void set_message(const char *fmt, va_list ap)
{
	char msg[sizeof(last_msg)];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	memcpy(last_msg, msg, sizeof(msg));
}

int amber_fail(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_message(fmt, ap);
	va_end(ap);
	last_code = code;
	return code;
}

int amber_fail_errno(const char *fmt, ...)
{
	int err = errno;
	size_t n;
	va_list ap;

	va_start(ap, fmt);
	set_message(fmt, ap);
	va_end(ap);
	n = strlen(last_msg);
	snprintf(last_msg + n, sizeof(last_msg) - n, ": %s", strerror(err));
	last_code = AMBER_ERROR;
	errno = err;
	return AMBER_ERROR;
}

int amber_opts_check(const void *opts, unsigned int max, const char *type, const char *init)
{
	unsigned int v;

	if (!opts)
		return 0;
	memcpy(&v, opts, sizeof(v));
	if (v >= 1 && v <= max)
		return 0;
	return amber_fail(AMBER_EINVAL, "%s has version %u, which this libamber does not know "
			  "(1 to %u): initialise it with %s", type, v, max, init);
}
