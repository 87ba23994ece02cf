/* The thread-local last error: messages that wrap an earlier cause keep it. */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "error.h"

Test(error, wrapping_the_last_message_keeps_the_cause)
{
	cr_assert_eq(amber_fail(AMBER_ECORRUPT, "chunk 3 fails authentication"), AMBER_ECORRUPT);
	cr_assert_eq(amber_fail(AMBER_EAUTH, "object ab12: %s", amber_error_last()), AMBER_EAUTH);
	cr_assert_str_eq(amber_error_last(), "object ab12: chunk 3 fails authentication");
	cr_assert_eq(amber_error_code(), AMBER_EAUTH);
}

Test(error, wrapping_twice_keeps_every_layer)
{
	amber_fail(AMBER_ECORRUPT, "truncated frame");
	amber_fail(AMBER_ECORRUPT, "object X: %s", amber_error_last());
	amber_fail(AMBER_ECORRUPT, "file a/b: %s", amber_error_last());
	cr_assert_str_eq(amber_error_last(), "file a/b: object X: truncated frame");
}

Test(error, errno_variant_wraps_and_appends_strerror)
{
	amber_fail(AMBER_ERROR, "inner");
	errno = ENOSPC;
	cr_assert_eq(amber_fail_errno("write %s", amber_error_last()), AMBER_ERROR);
	cr_assert_str_eq(amber_error_last(), "write inner: No space left on device");
	cr_assert_eq(errno, ENOSPC, "errno must survive the call");
}

Test(error, long_messages_are_cut_not_overrun)
{
	char big[4096];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	amber_fail(AMBER_ERROR, "%s", big);
	amber_fail(AMBER_ERROR, "outer %s", amber_error_last());
	cr_assert_eq(strncmp(amber_error_last(), "outer xxx", 9), 0);
	cr_assert_lt(strlen(amber_error_last()), 1024);
}

Test(error, clear_forgets_the_failure)
{
	amber_fail(AMBER_ENOTFOUND, "gone");
	amber_error_clear();
	cr_assert_str_eq(amber_error_last(), "");
	cr_assert_eq(amber_error_code(), AMBER_OK);
}
