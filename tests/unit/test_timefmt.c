/*
 * Time specs.  Expected values were computed with `date -u -d TIME +%s`,
 * e.g. 2026-11-20T14:03:07Z = 1795183387.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include "amber.h"

#define S 1000000000LL
#define T0 1795183387LL /* 2026-11-20T14:03:07Z */

static int64_t parse_ok(const char *text)
{
	int64_t ns = -1;
	int rc = amber_time_parse(&ns, text);

	cr_assert_eq(rc, 0, "parse \"%s\" failed: %s", text, amber_error_last());
	return ns;
}

static void expect(const char *text, int64_t ns)
{
	int64_t got = parse_ok(text);

	cr_expect_eq(got, ns, "\"%s\": got %lld, want %lld", text, (long long)got,
		     (long long)ns);
}

static void refused(const char *text)
{
	int64_t ns = 12345;
	int rc = amber_time_parse(&ns, text);

	cr_expect_eq(rc, AMBER_EINVAL, "\"%s\" was accepted as %lld", text, (long long)ns);
	cr_expect_eq(ns, 12345, "\"%s\": output written on failure", text);
	if (rc == AMBER_EINVAL && text[0])
		cr_expect(strstr(amber_error_last(), text) != NULL,
			  "message does not quote \"%s\": %s", text, amber_error_last());
}

Test(timefmt, epoch_forms)
{
	expect("@0", 0);
	expect("@1795183387", T0 * S);
	expect("@1795183387.5", T0 * S + 500000000);
	expect("@1795183387.123456789", T0 * S + 123456789);
	expect("@1795183387.1234567891999", T0 * S + 123456789);
	expect("@1795183387.000000001", T0 * S + 1);
	expect("@9223372036.854775807", INT64_MAX);
}

Test(timefmt, extended_forms)
{
	expect("2026-11-20", 1795132800LL * S);
	expect("2026-11-20T14:03", 1795183380LL * S);
	expect("2026-11-20T14:03Z", 1795183380LL * S);
	expect("2026-11-20T14:03:07", T0 * S);
	expect("2026-11-20T14:03:07Z", T0 * S);
	expect("2026-11-20 14:03:07Z", T0 * S);
	expect("2026-11-20T14:03:07.123456789Z", T0 * S + 123456789);
	expect("2026-11-20T14:03:07.1Z", T0 * S + 100000000);
	expect("2026-11-20T14:03:07,25Z", T0 * S + 250000000);
	expect("2026-11-20T14:03:07.9999999999Z", T0 * S + 999999999);
}

Test(timefmt, basic_forms)
{
	expect("20261120", 1795132800LL * S);
	expect("20261120T1403", 1795183380LL * S);
	expect("20261120T140307Z", T0 * S);
	expect("20261120T140307.123456Z", T0 * S + 123456000);
	expect("20261120T140307", T0 * S);
}

Test(timefmt, offsets)
{
	expect("2026-11-20T14:03:07+02:00", (T0 - 7200) * S);
	expect("2026-11-20T14:03:07+0200", (T0 - 7200) * S);
	expect("2026-11-20T14:03:07+02", (T0 - 7200) * S);
	expect("2026-11-20T14:03:07-0530", (T0 + 5 * 3600 + 1800) * S);
	expect("2026-11-20T14:03:07-05:30", (T0 + 5 * 3600 + 1800) * S);
	expect("2026-11-20T14:03:07.5+00:00", T0 * S + 500000000);
	expect("20261120T140307-0530", (T0 + 5 * 3600 + 1800) * S);
	/* Crossing midnight backwards with an offset. */
	expect("2026-11-21T01:00:00+02:00", (1795132800LL + 23 * 3600) * S);
}

Test(timefmt, leap_days)
{
	expect("2024-02-29", 1709164800LL * S);
	expect("2024-02-29T23:59:59Z", 1709251199LL * S);
	expect("2000-02-29", 951782400LL * S);
	refused("2026-02-29");
	refused("1900-02-29");
	refused("2026-04-31");
	expect("2026-12-31T23:59:59Z", 1798761599LL * S);
}

Test(timefmt, leap_second_clamps)
{
	expect("2026-12-31T23:59:60Z", 1798761599LL * S + 999999999);
	expect("2026-12-31T23:59:60.5Z", 1798761599LL * S + 999999999);
}

Test(timefmt, garbage_is_refused)
{
	static const char *bad[] = {
		"", "@", "@-5", "@12x", "@1.", "@1.2.3", "@ 1", "now", "2026", "2026-11",
		"2026-1-20", "2026-13-01", "2026-00-10", "2026-11-00", "2026-11-31",
		"2026-11-20T", "2026-11-20T14", "2026-11-20T24:00", "2026-11-20T14:60",
		"2026-11-20T14:03:61", "2026-11-20T14:03:07.", "2026-11-20T14:03:07ZZ",
		"2026-11-20T14:03:07 ", "2026-11-20T14:03:07+2", "2026-11-20T14:03:07+24:00",
		"2026-11-20T14:03:07+02:60", "2026-11-20T14:03:07 UTC", "2026-11-20x",
		"2026-11-20Z", "2026-1120", "202611-20", "2026-11-20T14:0307",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		refused(bad[i]);
}

Test(timefmt, times_past_the_nanosecond_range_saturate)
{
	/* "@TIME" past 2262 means "the newest snapshot", not an error */
	expect("@99999999999999999999", INT64_MAX);
	expect("@9223372036.854775808", INT64_MAX);
	expect("9999-12-31T23:59:59Z", INT64_MAX);
	expect("2262-04-12T00:00:00Z", INT64_MAX);
	expect("1600-01-01T00:00:00Z", INT64_MIN);
}

static void fmt(int64_t ns, int digits, const char *want)
{
	char out[40];

	memset(out, 'x', sizeof(out));
	amber_time_format(out, ns, digits);
	cr_expect_str_eq(out, want);
}

Test(timefmt, format)
{
	int64_t ns = T0 * S + 123456789;

	fmt(ns, 0, "2026-11-20T14:03:07Z");
	fmt(ns, 1, "2026-11-20T14:03:07.1Z");
	fmt(ns, 6, "2026-11-20T14:03:07.123456Z");
	fmt(ns, 9, "2026-11-20T14:03:07.123456789Z");
	fmt(T0 * S + 999999999, 3, "2026-11-20T14:03:07.999Z");
	fmt(T0 * S + 5, 9, "2026-11-20T14:03:07.000000005Z");
	fmt(0, 0, "1970-01-01T00:00:00Z");
	fmt(1709251199LL * S, 0, "2024-02-29T23:59:59Z");
	fmt(INT64_MAX, 9, "2262-04-11T23:47:16.854775807Z");
	fmt(-1, 9, "1969-12-31T23:59:59.999999999Z");
}

Test(timefmt, format_round_trips)
{
	/* A spread of instants, including leap days and year ends. */
	int64_t samples[] = {
		0, 1, T0 * S + 123456789, 951782400LL * S + 42, 1709164800LL * S - 1,
		1798761599LL * S + 999999999, 4102444800LL * S, 9223372036LL * S,
	};
	char out[40];

	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		amber_time_format(out, samples[i], 9);
		cr_expect_eq(parse_ok(out), samples[i], "%s", out);
	}
	/* Every day of a leap year and a common year. */
	for (int64_t d = 19358; d < 19358 + 731; d++) {
		amber_time_format(out, d * 86400 * S + 3723 * S, 0);
		cr_expect_eq(parse_ok(out), d * 86400 * S + 3723 * S, "%s", out);
	}
}

/* The span a time denotes: every instant that prints as that text. */
static void expect_span(const char *text, int64_t start, int64_t len)
{
	int64_t s = -1, e = -1;
	int rc = amber_time_parse_span(&s, &e, text);

	cr_assert_eq(rc, 0, "parse \"%s\" failed: %s", text, amber_error_last());
	cr_expect_eq(s, start, "\"%s\": start %lld, want %lld", text, (long long)s,
		     (long long)start);
	cr_expect_eq(e - s, len, "\"%s\": spans %lld ns, want %lld", text, (long long)(e - s),
		     (long long)len);
}

Test(timefmt, span_of_each_precision)
{
	expect_span("2026-11-20", 1795132800LL * S, 86400 * S);
	expect_span("20261120", 1795132800LL * S, 86400 * S);
	expect_span("2026-11-20T14:03Z", 1795183380LL * S, 60 * S);
	expect_span("20261120T1403", 1795183380LL * S, 60 * S);
	expect_span("2026-11-20T14:03:07Z", T0 * S, S);
	expect_span("2026-11-20T14:03:07.1Z", T0 * S + 100000000, 100000000);
	expect_span("2026-11-20T14:03:07.120Z", T0 * S + 120000000, 1000000);
	expect_span("2026-11-20T14:03:07.123456Z", T0 * S + 123456000, 1000);
	expect_span("20261120T140307.123456Z", T0 * S + 123456000, 1000);
	expect_span("2026-11-20T14:03:07.123456789Z", T0 * S + 123456789, 1);
	expect_span("2026-11-20T14:03:07.1234567891Z", T0 * S + 123456789, 1);
	expect_span("2026-11-20T16:03:07.5+02:00", T0 * S + 500000000, 100000000);
}

Test(timefmt, span_of_epoch_forms)
{
	expect_span("@1795183387", T0 * S, S);
	expect_span("@1795183387.5", T0 * S + 500000000, 100000000);
	expect_span("@1795183387.000001", T0 * S + 1000, 1000);
	expect_span("@1795183387.123456789", T0 * S + 123456789, 1);
}

Test(timefmt, span_of_a_leap_second_ends_at_the_next_minute)
{
	expect_span("2016-12-31T23:59:60Z", 1483228800LL * S - 1, 1);
	expect_span("2016-12-31T23:59:60.5Z", 1483228800LL * S - 1, 1);
}

Test(timefmt, span_saturates_at_the_end_of_the_range)
{
	int64_t s = 0, e = 0;

	cr_assert_eq(amber_time_parse_span(&s, &e, "2999-01-01"), 0);
	cr_expect_eq(s, INT64_MAX);
	cr_expect_eq(e, INT64_MAX);
}

Test(timefmt, formatted_times_span_exactly_their_digits)
{
	const int64_t t = T0 * S + 123456789;

	for (int digits = 0; digits <= 9; digits++) {
		char out[40];
		int64_t unit = S, s = 0, e = 0;

		for (int i = 0; i < digits; i++)
			unit /= 10;
		amber_time_format(out, t, digits);
		cr_assert_eq(amber_time_parse_span(&s, &e, out), 0, "%s", out);
		cr_expect(s <= t && t < e, "%s: [%lld, %lld) misses %lld", out, (long long)s,
			  (long long)e, (long long)t);
		cr_expect_eq(e - s, unit, "%s spans %lld ns", out, (long long)(e - s));
	}
}
