/*
 * writer-bench [-p] [-t TRACE] ARCHIVE SRC SECONDS [SEED [LEDGER]]: the in-process capture figure of
 * bench/rpo-bench.  One writer session on SRC (a gen-exchange tree, ledger
 * declared append-only); then, SECONDS times, one second's worth of the
 * rpo-bench change stream is applied (ledger +100 KiB in 100 appends, 5 order
 * books rewritten in place, 20 margin accounts edited, a new account every
 * 20 seconds) and one amber_writer_snapshot() is taken with the list of the
 * paths that changed.  Prints the snapshot times (p50, p99, max) and the mean
 * bytes written per snapshot.  LEDGER: a file of ledger lines to append (about
 * 1 KiB of whole lines at a time; bench/rpo-bench makes it with gen-exchange's
 * generator), else synthetic lines.  The passphrase comes from
 * AMBERFS_PASSPHRASE_FILE; a plain archive needs none.
 * -p: paced, one snapshot a second of wall time, as an engine capturing
 * every second would (the session's pack merges run in the gaps); without
 * it the snapshots run back to back, the worst case.
 * -t TRACE: one line per snapshot in TRACE: its number, milliseconds, paths
 * named, bytes added, then those bytes by kind of object (the columns of the
 * "by kind" line), then the CPU milliseconds the process used meanwhile (all
 * its threads: on a loaded machine, wall time far above it is time spent
 * waiting for a core), then the number of pack files after it (a drop: the
 * session's consolidation merged packs meanwhile).
 * The summary also gives p50/p99/max of that CPU time.
 * The summary ends with the mean bytes added per snapshot by kind of object
 * (amber_stats version 2): file chunks, directory manifests, bucket
 * manifests, fan-out lists/nodes, chunk indexes, directory and bucket
 * trees, fan-out trees, chunk trees, commits (of which the record), index
 * pages, and the pack overhead (pack bytes less the objects).
 */
#include "amber.h"
#include "bench_unlock.h"

#include <dirent.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KIB 1024

typedef struct names {
	char **v;
	size_t n;
} names;

static int name_cmp(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

static int list(names *out, const char *src, const char *dir)
{
	char path[4096];
	DIR *d;
	struct dirent *de;

	snprintf(path, sizeof(path), "%s/%s", src, dir);
	if (!(d = opendir(path)))
		return -1;
	while ((de = readdir(d))) {
		char rel[1024];
		char **v;

		if (de->d_name[0] == '.')
			continue;
		snprintf(rel, sizeof(rel), "%s/%s", dir, de->d_name);
		if (!(v = realloc(out->v, (out->n + 1) * sizeof(*v))))
			return -1;
		out->v = v;
		out->v[out->n++] = strdup(rel);
	}
	closedir(d);
	qsort(out->v, out->n, sizeof(*out->v), name_cmp);
	return out->n ? 0 : -1;
}

/* Ledger lines to append (bench/rpo-bench writes them as gen-exchange does). */
static char *stream;
static size_t stream_len, stream_at;

static int load_stream(const char *path)
{
	FILE *f = fopen(path, "rb");
	long n;

	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0)
		return f ? fclose(f), -1 : -1;
	rewind(f);
	stream = malloc((size_t)n);
	if (!stream || fread(stream, 1, (size_t)n, f) != (size_t)n)
		return fclose(f), -1;
	stream_len = (size_t)n;
	return fclose(f);
}

/* About 1 KiB of whole lines from the stream; 0 when it is used up. */
static size_t stream_next(const char **p)
{
	char *nl;
	size_t start = stream_at;

	if (stream_at + KIB > stream_len)
		return 0;
	nl = memchr(stream + stream_at + KIB - 1, '\n', stream_len - stream_at - KIB + 1);
	if (!nl)
		return 0;
	stream_at = (size_t)(nl - stream) + 1;
	*p = stream + start;
	return stream_at - start;
}

static int ledger_append(const char *src, unsigned long *seq)
{
	char path[4096], line[KIB];
	FILE *f;

	snprintf(path, sizeof(path), "%s/ledger/ledger.log", src);
	if (!(f = fopen(path, "ab")))
		return -1;
	for (int i = 0; i < 100; i++) {
		const char *p;
		size_t n = stream_next(&p);

		if (n) {
			if (fwrite(p, 1, n, f) != n || fflush(f) != 0)
				return fclose(f), -1;
			continue;
		}
		memset(line, ' ', sizeof(line));
		int k = snprintf(line, sizeof(line), "%020lu %016lx", ++*seq,
				 (unsigned long)random() * 2654435761UL);
		line[k] = ' ';
		line[sizeof(line) - 1] = '\n';
		if (fwrite(line, 1, sizeof(line), f) != sizeof(line) || fflush(f) != 0)
			return fclose(f), -1;
	}
	return fclose(f);
}

/* Rewrite a file in place with some digits changed (books) or a field added. */
static int rewrite(const char *src, const char *rel, int book)
{
	char path[4096];
	FILE *f;
	long n;
	char *b;

	snprintf(path, sizeof(path), "%s/%s", src, rel);
	if (!(f = fopen(path, "r+b")) || fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0)
		return f ? fclose(f), -1 : -1;
	b = malloc((size_t)n + 64);
	rewind(f);
	if (!b || fread(b, 1, (size_t)n, f) != (size_t)n)
		return free(b), fclose(f), -1;
	if (book) {
		for (int i = 0; i < 64; i++) {
			long k = random() % n;

			if (b[k] >= '0' && b[k] <= '9')
				b[k] = (char)('0' + random() % 10);
		}
	} else {
		while (n > 2 && (b[n - 1] == '\n' || b[n - 1] == '}' || b[n - 1] == ' '))
			n--;
		n += snprintf(b + n, 64, ",\"t\":%ld}\n", (long)time(NULL) + random() % 1000);
	}
	rewind(f);
	int rc = fwrite(b, 1, (size_t)n, f) == (size_t)n ? 0 : -1;

	if (rc == 0 && ftruncate(fileno(f), n) != 0)
		rc = -1;
	free(b);
	return fclose(f) || rc ? -1 : 0;
}

static unsigned seed = 1;

static int new_account(const char *src, int k, char *rel, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(rel, len, "accounts/B%05u%07d.json", seed % 100000, k);
	snprintf(path, sizeof(path), "%s/%s", src, rel);
	if (!(f = fopen(path, "wx")))
		return -1;
	fprintf(f, "{\"id\":%d,\"balances\":{\"USD\":\"%ld.00\"},\"positions\":[]}\n", k,
		random() % 1000000);
	return fclose(f);
}

/* CPU milliseconds used by the process so far (all threads). */
static double cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/* Pack files in the archive (the consolidation thread merges them). */
static int packs(const char *archive)
{
	char path[4096];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(path, sizeof(path), "%s/objects/pack", archive);
	if (!(d = opendir(path)))
		return -1;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		n += l > 5 && strcmp(de->d_name + l - 5, ".pack") == 0;
	}
	closedir(d);
	return n;
}

static const char *archive_path;

static double ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static int dbl_cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return a < b ? -1 : a > b;
}

/* One second of changes: *d gets the changed paths (strings static or in ext). */
static int one_second(amber_dirty *d, size_t *nd, char ext[][64], const char *src,
		      const names *books, const names *accts, long sec, unsigned long *seq)
{
	size_t n = 0;

	if (ledger_append(src, seq) < 0)
		return -1;
	d[n++].path = "ledger/ledger.log";
	for (int i = 0; i < 5; i++) {
		const char *b = books->v[random() % (long)books->n];

		if (rewrite(src, b, 1) < 0)
			return -1;
		d[n++].path = b;
	}
	for (int i = 0; i < 20; i++) {
		const char *a = accts->v[random() % (long)accts->n];

		if (rewrite(src, a, 0) < 0)
			return -1;
		d[n++].path = a;
	}
	if (sec % 20 == 0) {
		if (new_account(src, (int)sec, ext[0], sizeof(ext[0])) < 0)
			return -1;
		d[n++].path = ext[0];
	}
	*nd = n;
	return 0;
}

static int paced;
static FILE *trace;

/* Bytes added by kind, summed over the snapshots. */
enum { B_CHUNK, B_MANI, B_BUCKET, B_FANOUT, B_INDEX, B_DIRTREE, B_FANTREE, B_CHUNKTREE,
       B_COMMIT, B_RECORD, B_PAGE, B_PACK, B_N };
static const char *const kind_names[B_N] = {"chunk", "manifest", "bucket-m", "fanout", "index",
	"dirtree", "fanouttree", "chunktree", "commit", "(record)", "page", "pack-overhead"};
static double kind_sum[B_N];

static void kinds(uint64_t k[B_N], const amber_stats *st)
{
	k[B_CHUNK] = st->new_chunks;
	k[B_MANI] = st->new_manifests;
	k[B_BUCKET] = st->new_buckets;
	k[B_FANOUT] = st->new_fanout;
	k[B_INDEX] = st->new_indexes;
	k[B_DIRTREE] = st->new_dirtrees;
	k[B_FANTREE] = st->new_fanouttrees;
	k[B_CHUNKTREE] = st->new_chunktrees;
	k[B_COMMIT] = st->new_commits;
	k[B_RECORD] = st->new_record;
	k[B_PAGE] = st->new_pages;
	k[B_PACK] = st->pack_bytes > st->bytes_new ? st->pack_bytes - st->bytes_new : 0;
}

/* Sleep until `s` seconds after t0 (paced runs). */
static void pace(const struct timespec *t0, long s)
{
	struct timespec t = {.tv_sec = t0->tv_sec + s, .tv_nsec = t0->tv_nsec};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) != 0)
		;
}

static int run(amber_writer *w, const char *src, long seconds, double *ms, double *cpu,
	       uint64_t *bytes)
{
	struct timespec start;

	names books = {0}, accts = {0};
	amber_dirty d[32];
	char ext[1][64], id[AMBER_OID_HEXSZ + 1];
	unsigned long seq = 0;

	if (list(&books, src, "books/csv") < 0 || list(&accts, src, "accounts") < 0)
		return fprintf(stderr, "writer-bench: %s is not a gen-exchange tree\n", src), -1;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long s = 0; s < seconds; s++) {
		amber_stats st = AMBER_STATS_INIT;
		struct timespec t0;
		size_t nd = 0;

		if (paced)
			pace(&start, s + 1);
		memset(d, 0, sizeof(d));
		if (one_second(d, &nd, ext, src, &books, &accts, s, &seq) < 0)
			return perror("writer-bench: changing the tree"), -1;
		double c0 = cpu_ms();

		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (amber_writer_snapshot(id, &st, w, d, nd) < 0)
			return fprintf(stderr, "writer-bench: %s\n", amber_error_last()), -1;
		ms[s] = ms_since(&t0);
		cpu[s] = cpu_ms() - c0;
		*bytes += st.bytes_new;
		uint64_t k[B_N];

		kinds(k, &st);
		for (int i = 0; i < B_N; i++)
			kind_sum[i] += (double)k[i];
		if (trace) {
			fprintf(trace, "%ld %.1f %zu %llu", s, ms[s], nd,
				(unsigned long long)st.bytes_new);
			for (int i = 0; i < B_N; i++)
				fprintf(trace, " %llu", (unsigned long long)k[i]);
			fprintf(trace, " %.1f %d\n", cpu[s], packs(archive_path));
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const char *const append[] = {"ledger/*.log", NULL};
	amber_writer_opts o = AMBER_WRITER_OPTS_INIT;
	amber_archive *a = NULL;
	amber_writer *w = NULL;
	char id[AMBER_OID_HEXSZ + 1];
	long seconds;
	double *ms, *cpu;
	uint64_t bytes = 0;
	struct timespec t0;
	int opt;

	while ((opt = getopt(argc, argv, "pt:")) != -1) {
		if (opt == 'p')
			paced = 1;
		else if (opt == 't' && !(trace = fopen(optarg, "w")))
			return perror(optarg), 1;
		else if (opt != 't')
			return 2;
	}
	argc -= optind - 1;
	argv += optind - 1;
	seconds = argc >= 4 ? strtol(argv[3], NULL, 10) : 0;
	ms = seconds > 0 ? calloc((size_t)seconds, sizeof(*ms)) : NULL;
	cpu = seconds > 0 ? calloc((size_t)seconds, sizeof(*cpu)) : NULL;
	if (argc < 4 || argc > 6 || !ms || !cpu)
		return fprintf(stderr, "usage: writer-bench [-p] [-t TRACE] ARCHIVE SRC SECONDS "
			       "[SEED [LEDGER]]\n"), 2;
	if (argc == 6 && load_stream(argv[5]) < 0)
		return perror(argv[5]), 1;
	seed = argc >= 5 ? (unsigned)strtoul(argv[4], NULL, 10) : 1;
	archive_path = argv[1];
	srandom(seed);
	o.append_only = append;
	if (amber_global_init() || amber_archive_open(&a, argv[1]) || bench_unlock(a, "writer-bench") ||
	    amber_writer_open(&w, a, argv[2], &o))
		return fprintf(stderr, "writer-bench: %s\n", amber_error_last()), 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (amber_writer_snapshot(id, NULL, w, NULL, 0) < 0)
		return fprintf(stderr, "writer-bench: %s\n", amber_error_last()), 1;
	printf("writer-bench: first (whole) snapshot %.0f ms\n", ms_since(&t0));
	if (run(w, argv[2], seconds, ms, cpu, &bytes) < 0)
		return 1;
	qsort(ms, (size_t)seconds, sizeof(*ms), dbl_cmp);
	qsort(cpu, (size_t)seconds, sizeof(*cpu), dbl_cmp);
	printf("writer-bench: %ld snapshots (%s), one per second of changes: p50 %.1f ms  p99 %.1f ms  "
	       "max %.1f ms  mean %.0f bytes added\n", seconds, paced ? "paced" : "back to back",
	       ms[seconds / 2],
	       ms[(seconds * 99 + 99) / 100 - 1], ms[seconds - 1], (double)bytes / (double)seconds);
	printf("writer-bench: CPU time of the process per snapshot: p50 %.1f ms  p99 %.1f ms  max "
	       "%.1f ms\n", cpu[seconds / 2], cpu[(seconds * 99 + 99) / 100 - 1], cpu[seconds - 1]);
	printf("writer-bench: mean bytes added per snapshot by kind:");
	for (int i = 0; i < B_N; i++)
		printf(" %s %.0f", kind_names[i], kind_sum[i] / (double)seconds);
	printf("\n");
	amber_writer_close(w);
	amber_archive_free(a);
	if (trace)
		fclose(trace);
	free(ms);
	free(cpu);
	return 0;
}
