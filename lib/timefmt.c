/*
 * Snapshot times: parsing "@TIME" specs and formatting ISO 8601 UTC.
 *
 * Accepted forms (amber_time_parse):
 *   @EPOCH  @EPOCH.frac              seconds since 1970-01-01T00:00:00Z
 *   YYYY-MM-DD  YYYYMMDD              midnight UTC of that day
 *   DATE[T| ]hh:mm[:ss[.frac]][ZONE]  extended time
 *   DATE[T| ]hhmm[ss[.frac]][ZONE]    basic time
 *   ZONE = Z | +hh | +hh:mm | +hhmm (or '-')
 * A time without a zone is UTC, never local time: a snapshot spec must mean
 * the same instant on every machine that reads the archive, whatever its TZ.
 * Fractions may have any number of digits and are truncated to ns; a
 * time also names the span its precision covers (amber_time_parse_span); a
 * leap second (ss = 60) clamps to hh:mm:59.999999999 so that it still sorts
 * after every earlier instant and before the next minute.
 *
 * Calendar arithmetic is our own (proleptic Gregorian, days from civil):
 * timegm() is not standard and mktime() depends on TZ.
 */
#include "amber.h"

#include "error.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define NS 1000000000LL
#define SECS_PER_DAY 86400LL

typedef struct tparse {
	const char *p;      /* cursor */
	const char *why;    /* first defect found, NULL if none */
	int64_t unit;       /* ns spanned by the last digit given (the precision) */
} tparse;

typedef struct civil {
	int64_t year;
	int month, day, hour, min, sec;
	int64_t frac_ns;
	int64_t offset;     /* seconds east of UTC */
} civil;

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int days_in_month(int64_t y, int m)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : mdays[m - 1];
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Exactly n digits, or a defect. */
static int64_t read_digits(tparse *t, int n, const char *what)
{
	int64_t v = 0;

	for (int i = 0; i < n; i++) {
		if (!is_digit(t->p[i])) {
			if (!t->why)
				t->why = what;
			return 0;
		}
		v = v * 10 + (t->p[i] - '0');
	}
	t->p += n;
	return v;
}

static int accept(tparse *t, char c)
{
	if (*t->p != c)
		return 0;
	t->p++;
	return 1;
}

static void defect(tparse *t, const char *why)
{
	if (!t->why)
		t->why = why;
}

/* ".digits" or ",digits": any count, truncated to ns (and so is the unit). */
static int64_t fraction(tparse *t)
{
	int64_t ns = 0, scale = NS / 10;

	if (!accept(t, '.') && !accept(t, ','))
		return 0;
	if (!is_digit(*t->p))
		defect(t, "no digits after the decimal point");
	for (; is_digit(*t->p); t->p++, scale /= 10) {
		ns += (*t->p - '0') * scale;
		t->unit = scale ? scale : 1;
	}
	return ns;
}

static void parse_date(tparse *t, civil *c)
{
	int ext;

	c->year = read_digits(t, 4, "expected a 4-digit year");
	ext = accept(t, '-');
	c->month = (int)read_digits(t, 2, "expected a 2-digit month");
	if (ext && !accept(t, '-'))
		defect(t, "expected '-' after the month");
	c->day = (int)read_digits(t, 2, "expected a 2-digit day");
	if (t->why)
		return;
	if (c->month < 1 || c->month > 12)
		defect(t, "month out of range");
	else if (c->day < 1 || c->day > days_in_month(c->year, c->month))
		defect(t, "day out of range for that month");
}

static void parse_clock(tparse *t, civil *c)
{
	int ext;

	c->hour = (int)read_digits(t, 2, "expected a 2-digit hour");
	ext = accept(t, ':');
	c->min = (int)read_digits(t, 2, "expected 2-digit minutes");
	t->unit = 60 * NS;
	if ((ext && accept(t, ':')) || (!ext && is_digit(*t->p))) {
		c->sec = (int)read_digits(t, 2, "expected 2-digit seconds");
		t->unit = NS;
		c->frac_ns = fraction(t);
	}
	if (c->hour > 23 || c->min > 59 || c->sec > 60)
		defect(t, "time of day out of range");
}

static void parse_zone(tparse *t, civil *c)
{
	int sign, hh, mm = 0;

	if (accept(t, 'Z') || accept(t, 'z') || !*t->p)
		return;
	if (*t->p != '+' && *t->p != '-') {
		defect(t, "unexpected text after the time");
		return;
	}
	sign = *t->p++ == '-' ? -1 : 1;
	hh = (int)read_digits(t, 2, "expected a 2-digit zone offset");
	if (accept(t, ':') || is_digit(*t->p))
		mm = (int)read_digits(t, 2, "expected 2-digit zone offset minutes");
	if (hh > 23 || mm > 59)
		defect(t, "zone offset out of range");
	c->offset = sign * (hh * 3600 + mm * 60);
}

/*
 * Times past the int64 nanosecond range (1677..2262) saturate: "@TIME" asks
 * for the newest snapshot at or before TIME, and for any time after 2262
 * that is the newest snapshot of all.
 */
static int to_ns(int64_t *ns_out, int64_t secs, int64_t frac_ns)
{
	int64_t ns;

	if (__builtin_mul_overflow(secs, NS, &ns) || __builtin_add_overflow(ns, frac_ns, &ns))
		ns = secs < 0 ? INT64_MIN : INT64_MAX;
	*ns_out = ns;
	return 0;
}

static int parse_iso(int64_t *ns_out, tparse *t)
{
	civil c = {0};
	int64_t secs;

	parse_date(t, &c);
	t->unit = SECS_PER_DAY * NS;
	if (!t->why && (accept(t, 'T') || accept(t, 't') || accept(t, ' '))) {
		parse_clock(t, &c);
		if (!t->why)
			parse_zone(t, &c);
	}
	if (!t->why && *t->p)
		defect(t, "unexpected text after the time");
	if (t->why)
		return -1;
	if (c.sec == 60) {
		c.sec = 59;
		c.frac_ns = NS - 1;
		t->unit = 1;    /* the leap second ends where the next minute begins */
	}
	secs = days_from_civil(c.year, c.month, c.day) * SECS_PER_DAY + c.hour * 3600 +
	       c.min * 60 + c.sec - c.offset;
	if (to_ns(ns_out, secs, c.frac_ns) < 0)
		defect(t, "out of the representable range");
	return t->why ? -1 : 0;
}

static int parse_epoch(int64_t *ns_out, tparse *t)
{
	int64_t secs = 0, frac;

	t->unit = NS;
	if (!is_digit(*t->p))
		defect(t, "expected seconds since the epoch after '@'");
	for (; is_digit(*t->p) && !t->why; t->p++)
		if (__builtin_mul_overflow(secs, 10, &secs) ||
		    __builtin_add_overflow(secs, *t->p - '0', &secs))
			secs = INT64_MAX; /* saturates, see to_ns() */
	frac = fraction(t);
	if (!t->why && *t->p)
		defect(t, "unexpected text after the seconds");
	if (!t->why && to_ns(ns_out, secs, frac) < 0)
		defect(t, "out of the representable range");
	return t->why ? -1 : 0;
}

int amber_time_parse(int64_t *ns_out, const char *text)
{
	int64_t end;

	return amber_time_parse_span(ns_out, &end, text);
}

/*
 * A time names the span of every instant that prints as that text at the
 * precision it is written in (times are printed truncated, never rounded):
 * "14:03:07" is [14:03:07, 14:03:08), "14:03:07.250" is a millisecond.
 */
int amber_time_parse_span(int64_t *start, int64_t *end, const char *text)
{
	tparse t = {text, NULL, 1};
	int64_t ns = 0;
	int rc;

	if (!text)
		return amber_fail(AMBER_EINVAL, "no time given");
	if (accept(&t, '@'))
		rc = parse_epoch(&ns, &t);
	else
		rc = parse_iso(&ns, &t);
	if (rc < 0)
		return amber_fail(AMBER_EINVAL,
				  "invalid time \"%.80s\": %s (use ISO 8601 such as "
				  "2026-11-20T14:03:07Z, or @EPOCH)", text, t.why);
	*start = ns;
	if (__builtin_add_overflow(ns, t.unit, end))
		*end = INT64_MAX;
	return 0;
}

/*
 * Fractions are truncated, not rounded: rounding up could print a second
 * that has not begun yet (or "60"), and "@TIME" means "at or before".
 */
void amber_time_format(char out[40], int64_t ns, int digits)
{
	int64_t secs = ns / NS, frac = ns % NS, days, sod, year;
	int month, day, n;

	assert(digits >= 0 && digits <= 9);
	if (frac < 0) {
		frac += NS;
		secs--;
	}
	days = secs / SECS_PER_DAY;
	sod = secs % SECS_PER_DAY;
	if (sod < 0) {
		sod += SECS_PER_DAY;
		days--;
	}
	civil_from_days(days, &year, &month, &day);
	n = snprintf(out, 40, "%04lld-%02d-%02dT%02d:%02d:%02d", (long long)year, month, day,
		     (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60));
	if (digits > 0) {
		for (int i = digits; i < 9; i++)
			frac /= 10;
		n += snprintf(out + n, 40 - (size_t)n, ".%0*lld", digits, (long long)frac);
	}
	snprintf(out + n, 40 - (size_t)n, "Z");
}
