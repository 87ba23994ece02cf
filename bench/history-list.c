/*
 * history-list ARCHIVE START END [--ids]: list the snapshots of stream main
 * taken in [START, END) (seconds since the epoch) with amber_history_list(),
 * and print how many there are and how long it took, in wall and CPU time
 * (to stderr).  With
 * --ids, print "time_ns id" lines, oldest first, to compare against a walk
 * of the history.  The passphrase comes from AMBERFS_PASSPHRASE_FILE; a
 * plain archive needs none; the cache directory is left unused.
 */
#include "amber.h"
#include "bench_unlock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t c)
{
	struct timespec t;

	clock_gettime(c, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	amber_open_opts o = AMBER_OPEN_OPTS_INIT;
	amber_archive *a = NULL;
	amber_snapref *v = NULL;
	size_t n = 0;
	double t0, c0;
	int rc, ids = argc == 5 && strcmp(argv[4], "--ids") == 0;

	if (argc != 4 && !ids)
		return fprintf(stderr, "usage: history-list ARCHIVE START END [--ids]\n"), 2;
	o.cache_dir = "";
	if (amber_global_init() || amber_archive_open_ext(&a, argv[1], &o) ||
	    bench_unlock(a, "history-list"))
		return fprintf(stderr, "history-list: %s\n", amber_error_last()), 1;
	t0 = clock_s(CLOCK_MONOTONIC);
	c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
	rc = amber_history_list(&v, &n, a, "main", strtoll(argv[2], NULL, 10) * 1000000000LL,
				strtoll(argv[3], NULL, 10) * 1000000000LL, 0);
	if (rc < 0)
		return fprintf(stderr, "history-list: %s\n", amber_error_last()), 1;
	fprintf(stderr, "%s %zu snapshots in %.4f s wall %.4f s cpu\n",
		rc == 1 ? "no index:" : "listed", n, clock_s(CLOCK_MONOTONIC) - t0,
		clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0);
	for (size_t i = 0; ids && i < n; i++)
		printf("%lld %s\n", (long long)v[i].time_ns, v[i].id);
	free(v);
	amber_archive_free(a);
	return rc == 1 ? 3 : 0;
}
