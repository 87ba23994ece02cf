/*
 * make-history ARCHIVE SRC COUNT [START | --now]: write COUNT snapshots of SRC
 * into ARCHIVE from one process, one second apart (ending now, or from
 * START, seconds since the epoch, so that a long history can be built in
 * steps; with --now, each at the time it is taken, so that they can follow
 * snapshots already taken),
 * changing one file of SRC before each.  For benchmarks that need a long history (mount ready time
 * with 10,000 snapshots) without paying a process start and a key
 * derivation per snapshot.  The passphrase comes from
 * AMBERFS_PASSPHRASE_FILE; a plain archive needs none.
 */
#include "amber.h"
#include "bench_unlock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int touch(const char *src, long i)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/make-history.step", src);
	if (!(f = fopen(path, "w")))
		return -1;
	fprintf(f, "%ld\n", i);
	return fclose(f);
}

int main(int argc, char **argv)
{
	amber_archive *a = NULL;
	amber_snapshot_opts o = {.version = AMBER_SNAPSHOT_OPTS_VERSION, .stream = "main"};
	char id[AMBER_OID_HEXSZ + 1];
	struct timespec now;
	int at_now = argc == 5 && strcmp(argv[4], "--now") == 0;
	long count = argc == 4 || argc == 5 ? strtol(argv[3], NULL, 10) : 0;
	long start = argc == 5 && !at_now ? strtol(argv[4], NULL, 10) : 0;

	if (count <= 0)
		return fprintf(stderr, "usage: make-history ARCHIVE SRC COUNT [START | --now]\n"), 2;
	if (amber_global_init() || amber_archive_open(&a, argv[1]) || bench_unlock(a, "make-history"))
		return fprintf(stderr, "make-history: %s\n", amber_error_last()), 1;
	clock_gettime(CLOCK_REALTIME, &now);
	if (start > 0)
		now.tv_sec = start + count;
	for (long i = 0; i < count; i++) {
		o.time_ns = at_now ? 0 : ((int64_t)now.tv_sec - count + i) * 1000000000;
		if (touch(argv[2], i) || amber_snapshot_create(id, NULL, a, argv[2], &o))
			return fprintf(stderr, "make-history: %s\n", amber_error_last()), 1;
		if ((i + 1) % 1000 == 0)
			fprintf(stderr, "%ld snapshots\n", i + 1);
	}
	amber_archive_free(a);
	return 0;
}
