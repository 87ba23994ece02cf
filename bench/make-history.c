/*
 * make-history ARCHIVE SRC COUNT [START | --now | --continue]: write COUNT
 * snapshots of SRC into ARCHIVE from one process, one second apart (ending
 * now, or from START, seconds since the epoch, so that a long history can
 * be built in steps; with --continue, from one second after the archive's
 * latest snapshot, which keeps a history built from START at one snapshot
 * a second; with --now, each at the time it is taken, so that they can
 * follow snapshots already taken), changing one file of SRC before each:
 * make-history.step says the snapshot's second (with START or --continue),
 * so that a history continued in steps never writes the same content
 * twice.
 *
 * For benchmarks that need a long history (mount ready time, day listings
 * and log at 100,000 or 1,000,000 snapshots) without paying a process
 * start and a key derivation per snapshot.  Each snapshot goes through
 * amber_snapshot_create(), the writer every other path uses: the archive is
 * genuine (verify --no-key, git fsck), packs are consolidated as the CLI
 * consolidates them.  Put ARCHIVE and the cache directory on tmpfs: each
 * snapshot fsyncs several times, and on a disk that, not the writer, sets
 * the rate.
 *
 * The passphrase comes from AMBERFS_PASSPHRASE_FILE; a plain archive needs
 * none.  The cache directory is AMBERFS_CACHE_DIR, as for the CLI (else the
 * library's default).  Progress (snapshots, rate) goes to stderr every
 * 10,000 snapshots, and the total rate at the end, with the part of the
 * time spent consolidating packs after the snapshots (amber_stats.repack_ns:
 * its amortised share of the cost of a snapshot) and the process's CPU time:
 *
 *   make-history: N snapshots in S s, R/s; consolidation C s (P packs merged,
 *   B bytes copied); cpu U s
 *
 * The archive is closed and opened again every REOPEN snapshots: an open
 * archive keeps every pack file its process ever saw mapped, including
 * those that consolidation has since removed (libgit2 never forgets a
 * pack), so one handle kept for 10,000 snapshots holds 10,000 dead
 * mappings and each snapshot slows in proportion (13 ms each at 9,000
 * against 3 ms at the start).  Reopening costs one archive open per REOPEN
 * snapshots and changes nothing in what is written.
 */
#include "amber.h"
#include "bench_unlock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#define REOPEN 500

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

/* START for --continue: one second after the latest snapshot of stream main. */
static long after_tip(amber_archive *a)
{
	char id[AMBER_OID_HEXSZ + 1];
	amber_snapshot *s = NULL;
	long t;

	if (amber_resolve(id, a, "main", "latest") || amber_snapshot_open(&s, a, id))
		return -1;
	t = (long)(amber_snapshot_info(s)->time_ns / 1000000000) + 1;
	amber_snapshot_free(s);
	return t;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double mono(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	amber_open_opts oo = AMBER_OPEN_OPTS_INIT;
	amber_archive *a = NULL;
	amber_snapshot_opts o = AMBER_SNAPSHOT_OPTS_INIT;
	char id[AMBER_OID_HEXSZ + 1];
	struct timespec now;
	int at_now = argc == 5 && strcmp(argv[4], "--now") == 0;
	int cont = argc == 5 && strcmp(argv[4], "--continue") == 0;
	long count = argc == 4 || argc == 5 ? strtol(argv[3], NULL, 10) : 0;
	long start = argc == 5 && !at_now && !cont ? strtol(argv[4], NULL, 10) : 0;
	double t0 = mono(), tl = t0, th = 0, ch = 0;
	amber_stats st;
	uint64_t rp_ns = 0, rp_packs = 0, rp_bytes = 0;

	if (count <= 0)
		return fprintf(stderr, "usage: make-history ARCHIVE SRC COUNT "
			       "[START | --now | --continue]\n"), 2;
	oo.cache_dir = getenv("AMBERFS_CACHE_DIR");
	o.stream = "main";
	o.threads = 1;          /* one small file per snapshot: no workers to start */
	if (amber_global_init() || amber_archive_open_ext(&a, argv[1], &oo) ||
	    bench_unlock(a, "make-history"))
		return fprintf(stderr, "make-history: %s\n", amber_error_last()), 1;
	if (cont && (start = after_tip(a)) < 0)
		return fprintf(stderr, "make-history: --continue: %s\n", amber_error_last()), 1;
	clock_gettime(CLOCK_REALTIME, &now);
	if (start > 0)
		now.tv_sec = start + count;
	for (long i = 0; i < count; i++) {
		if (i == count / 2) {   /* the second half: one more snapshot in a running writer */
			th = mono();
			ch = cpu_s();
		}
		if (i && i % REOPEN == 0) {
			amber_archive_free(a);
			a = NULL;
			if (amber_archive_open_ext(&a, argv[1], &oo) || bench_unlock(a, "make-history"))
				return fprintf(stderr, "make-history: %s\n", amber_error_last()), 1;
		}
		o.time_ns = at_now ? 0 : ((int64_t)now.tv_sec - count + i) * 1000000000;
		if (touch(argv[2], start > 0 ? start + i : i) ||
		    (st = (amber_stats)AMBER_STATS_INIT,
		     amber_snapshot_create(id, &st, a, argv[2], &o)))
			return fprintf(stderr, "make-history: %s\n", amber_error_last()), 1;
		rp_ns += st.repack_ns;
		rp_packs += st.repack_packs;
		rp_bytes += st.repack_bytes;
		if ((i + 1) % 10000 == 0) {
			double t = mono();

			fprintf(stderr, "%ld snapshots, %.0f/s\n", i + 1, 10000 / (t - tl));
			tl = t;
		}
	}
	double te = mono(), ce = cpu_s();       /* the loop's end, before the close */

	amber_archive_free(a);
	fprintf(stderr, "make-history: %ld snapshots in %.3f s, %.0f/s; consolidation %.3f s "
		"(%llu packs merged, %llu bytes copied); cpu %.3f s; second half %.3f s cpu %.3f s\n",
		count, mono() - t0, (double)count / (mono() - t0), (double)rp_ns / 1e9,
		(unsigned long long)rp_packs, (unsigned long long)rp_bytes, cpu_s(), te - th, ce - ch);
	return 0;
}
