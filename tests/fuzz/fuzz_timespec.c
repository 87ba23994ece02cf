/* Time specs (@EPOCH, ISO 8601 in every accepted form). */
#include "fuzz.h"

#include "amber.h"

#include <stdlib.h>

AMBER_FUZZ(timespec)
{
	char *s = fuzz_cstring(data, size);
	int64_t t;

	if (s && amber_time_parse(&t, s) == 0) {
		char out[40];

		for (int digits = 0; digits <= 9; digits += 3)
			amber_time_format(out, t, digits);
	}
	free(s);
	return 0;
}
