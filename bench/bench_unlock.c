#include "bench_unlock.h"

#include <stdio.h>
#include <stdlib.h>

int bench_unlock(amber_archive *a, const char *prog)
{
	const char *pf = getenv("AMBERFS_PASSPHRASE_FILE");
	char pass[1024];
	size_t n = 0;
	FILE *f;

	if (!amber_archive_needs_key(a))
		return 0;
	if (!pf || !(f = fopen(pf, "r")))
		return fprintf(stderr, "%s: set AMBERFS_PASSPHRASE_FILE\n", prog), -1;
	n = fread(pass, 1, sizeof(pass), f);
	fclose(f);
	while (n && (pass[n - 1] == '\n' || pass[n - 1] == '\r'))
		n--;
	return amber_archive_unlock(a, (unsigned char *)pass, n);
}
