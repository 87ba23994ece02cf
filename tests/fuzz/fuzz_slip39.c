/*
 * SLIP-0039 mnemonics as a user types them: one share per line, combined
 * with the passphrase "TREZOR".  A set that combines must survive a split
 * and combine of its secret.  Sets with an iteration exponent above 2 are
 * skipped: they are valid but cost seconds of PBKDF2 each, not parsing.
 */
#include "fuzz.h"

#include "amber_slip39.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINES 32

/* The iteration exponent from the second word of m, or 0 if unreadable. */
static unsigned exponent_of(const char *m)
{
	static const char space[] = " \t\r\f\v";
	char w[AMBER_SLIP39_WORD_MAX + 2] = {0};
	size_t skip = strspn(m, space), len;

	m += skip + strcspn(m + skip, space);
	m += strspn(m, space);
	len = strcspn(m, space);
	if (len > AMBER_SLIP39_WORD_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		w[i] = (char)tolower((unsigned char)m[i]);
	for (unsigned i = 0; i < AMBER_SLIP39_WORDS; i++)
		if (strcmp(w, amber_slip39_words[i]) == 0)
			return i & 15;
	return 0;
}

static void round_trip(const uint8_t *secret, size_t len)
{
	amber_slip39_group g = {2, 3};
	uint8_t again[AMBER_SLIP39_MAX_SECRET];
	size_t alen = sizeof(again), n = 0;
	char **m = NULL;

	if (amber_slip39_split(&m, &n, secret, len, "TREZOR", 1, &g, 1, 0, true) != 0 ||
	    amber_slip39_combine(again, &alen, (const char *const *)m + 1, 2, "TREZOR") != 0 ||
	    alen != len || memcmp(again, secret, len) != 0)
		__builtin_trap();
	amber_slip39_free(m, n);
}

AMBER_FUZZ(slip39)
{
	char *s = fuzz_cstring(data, size), *save = NULL, *line;
	const char *lines[MAX_LINES];
	uint8_t secret[AMBER_SLIP39_MAX_SECRET];
	size_t n = 0, len = sizeof(secret);

	fuzz_init();
	if (!s)
		return 0;
	for (line = strtok_r(s, "\n", &save); line && n < MAX_LINES;
	     line = strtok_r(NULL, "\n", &save)) {
		if (exponent_of(line) > 2)
			goto done;
		lines[n++] = line;
	}
	if (n && amber_slip39_combine(secret, &len, lines, n, "TREZOR") == 0)
		round_trip(secret, len);
done:
	free(s);
	return 0;
}
