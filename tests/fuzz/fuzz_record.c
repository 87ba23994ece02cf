/* Snapshot records (the authenticated part of a snapshot commit). */
#include "fuzz.h"

#include "manifest.h"

#include <string.h>

AMBER_FUZZ(record)
{
	amber_record r;

	memset(&r, 0, sizeof(r));
	if (amber_record_decode(&r, data, size) == 0)
		amber_record_dispose(&r);
	return 0;
}
