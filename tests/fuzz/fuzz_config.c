/*
 * The archive config (the "config" blob of refs/amberfs/meta): text read
 * before anything in the archive is authenticated, from replicas nobody
 * vouches for (verify --no-key).
 */
#include "fuzz.h"

#include "config_parse.h"

#include <string.h>

AMBER_FUZZ(config)
{
	amber_archive a;

	fuzz_init();
	memset(&a, 0, sizeof(a));
	a.path = (char *)"fuzz";
	(void)amber_config_parse(&a, data, size);
	return 0;
}
