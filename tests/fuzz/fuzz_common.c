/* Helpers shared by the fuzz targets. */
#include "fuzz.h"

#include "amber.h"

#include <stdlib.h>
#include <string.h>

char *fuzz_cstring(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s) {
		memcpy(s, data, size);
		s[size] = '\0';
	}
	return s;
}

void fuzz_init(void)
{
	static int done;

	if (!done && amber_global_init() == 0)
		done = 1;
}
