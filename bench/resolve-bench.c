/*
 * resolve-bench ARCHIVE [QUERIES]: in one process with the cache directory
 * it is given (use an empty one), time resolving QUERIES random @TIME specs
 * between the first and the last snapshot of stream main through the
 * records' skip links, then the walk that builds the time line.  Prints
 * the mean and worst time per lookup and the walk's time.  Plain archives or
 * AMBERFS_PASSPHRASE_FILE.
 */
#include "amber.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int unlock(amber_archive *a)
{
	const char *pf = getenv("AMBERFS_PASSPHRASE_FILE");
	char pass[1024];
	size_t n;
	FILE *f;

	if (!amber_archive_needs_key(a))
		return 0;
	if (!pf || !(f = fopen(pf, "r")))
		return -1;
	n = fread(pass, 1, sizeof(pass), f);
	fclose(f);
	while (n && (pass[n - 1] == '\n' || pass[n - 1] == '\r'))
		n--;
	return amber_archive_unlock(a, (unsigned char *)pass, n);
}

static int first_last(int64_t *first, int64_t *last, amber_archive *a)
{
	char id[AMBER_OID_HEXSZ + 1];
	amber_snapshot *s = NULL;

	if (amber_resolve(id, a, NULL, "latest") || amber_snapshot_open(&s, a, id))
		return -1;
	*last = amber_snapshot_info(s)->time_ns;
	amber_snapshot_free(s);
	if (amber_resolve(id, a, NULL, "@1") == 0)
		return -1;
	/* the first: the newest before the earliest representable instant + 1 day
	 * is none, so search down by halving from the last */
	*first = *last;
	for (int64_t step = (int64_t)1 << 52; step > 0; step /= 2)
		if (*first - step > 0) {
			char spec[64];

			snprintf(spec, sizeof(spec), "@%lld.%09lld",
				 (long long)((*first - step) / 1000000000),
				 (long long)((*first - step) % 1000000000));
			if (amber_resolve(id, a, NULL, spec) == 0)
				*first -= step;
		}
	return 0;
}

int main(int argc, char **argv)
{
	amber_archive *a = NULL;
	amber_timeline *t = NULL;
	int q = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 200;
	int64_t first, last;
	double worst = 0, total = 0, t0;
	unsigned seed = 1;

	if (argc < 2 || q <= 0)
		return fprintf(stderr, "usage: resolve-bench ARCHIVE [QUERIES]\n"), 2;
	if (amber_global_init() || amber_archive_open(&a, argv[1]) || unlock(a) ||
	    first_last(&first, &last, a))
		return fprintf(stderr, "resolve-bench: %s\n", amber_error_last()), 1;
	for (int i = 0; i < q; i++) {
		char spec[64], id[AMBER_OID_HEXSZ + 1];
		int64_t when = first + (int64_t)((double)rand_r(&seed) / RAND_MAX *
						 (double)(last - first));
		double d;

		snprintf(spec, sizeof(spec), "@%lld.%09lld", (long long)(when / 1000000000),
			 (long long)(when % 1000000000));
		t0 = now();
		if (amber_resolve(id, a, NULL, spec))
			return fprintf(stderr, "resolve-bench: %s\n", amber_error_last()), 1;
		d = now() - t0;
		total += d;
		worst = d > worst ? d : worst;
	}
	t0 = now();
	if (amber_timeline_open(&t, a, NULL))
		return fprintf(stderr, "resolve-bench: %s\n", amber_error_last()), 1;
	printf("snapshots %zu  skip-link lookup mean %.3f ms worst %.3f ms  walk %.1f ms\n",
	       amber_timeline_count(t), total / q * 1e3, worst * 1e3, (now() - t0) * 1e3);
	amber_timeline_free(t);
	amber_archive_free(a);
	return 0;
}
