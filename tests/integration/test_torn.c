/*
 * A file that changes while a snapshot reads it is never stored torn: the
 * writer notices (size, mtime or ctime moved between the start and the end
 * of the read), reads it again, and names it on stderr (exit 3) if it never
 * holds still.
 */
#include "helpers.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(torn, .init = itest_setup, .fini = itest_teardown);

#define FILE_SIZE (48u << 20)

/* Rewrite `path` in place, alternating all-'A' and all-'B', until killed. */
static pid_t start_rewriter(const char *path)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid == 0) {
		char *buf = malloc(1 << 20);
		FILE *f = fopen(path, "r+");

		for (unsigned round = 0; f && buf; round++) {
			memset(buf, round % 2 ? 'B' : 'A', 1 << 20);
			rewind(f);
			for (unsigned i = 0; i < FILE_SIZE >> 20; i++)
				fwrite(buf, 1, 1 << 20, f);
			fflush(f);
		}
		_exit(1);
	}
	return pid;
}

/* 1 if the file is one byte value throughout. */
static int uniform(const char *path)
{
	size_t len = 0;
	char *d = read_file(path, &len);
	int ok = len == FILE_SIZE && memchr(d, d[0] == 'A' ? 'B' : 'A', len) == NULL;

	free(d);
	return ok;
}

Test(torn, a_file_rewritten_during_the_snapshot_is_never_stored_torn, .timeout = 300)
{
	char *src = pjoin(IT.tmp, "src"), *arch = pjoin(IT.tmp, "a");
	char *hot = pjoin(src, "hot.bin"), *calm = pjoin(src, "calm.txt");
	int stored = 0, reported = 0;

	mkdir_p(src, 0755);
	char *fill = malloc(FILE_SIZE);

	memset(fill, 'A', FILE_SIZE);
	write_file(hot, fill, FILE_SIZE, 0644);
	free(fill);
	write_str(calm, "I do not change\n");
	amber_init_archive(arch, 0);
	for (int round = 0; round < 4; round++) {
		pid_t w = start_rewriter(hot);
		run_result r;

		amber(&r, "snapshot", arch, src, "--no-cache", NULL);
		kill(w, SIGKILL);
		waitpid(w, NULL, 0);
		cr_assert(r.status == 0 || r.status == 3, "snapshot: exit %d: %s", r.status, r.err);
		if (r.status == 3) {
			cr_expect(strstr(r.err, "hot.bin") && strstr(r.err, "changed"),
				  "exit 3 must name the file that kept changing: %s", r.err);
			reported++;
		}
		char *dest = pjoin(IT.tmp, "restore");
		run_result rr;

		rm_rf(dest);
		amber(&rr, "restore", arch, "latest", dest, NULL);
		assert_ok(&rr, "restore");
		char *got = pjoin(dest, "hot.bin"), *gotcalm = pjoin(dest, "calm.txt");

		if (access(got, F_OK) == 0) {
			cr_expect(uniform(got), "round %d: hot.bin was stored torn (mixed A and B)",
				  round);
			stored++;
		}
		cr_expect_eq(access(gotcalm, F_OK), 0, "the file that held still was stored");
		free(got);
		free(gotcalm);
		free(dest);
		run_result_dispose(&rr);
		run_result_dispose(&r);
	}
	/* each round either stored a whole version or named the file */
	cr_expect_eq(stored + reported, 4, "stored %d, reported %d", stored, reported);
	assert_fsck(arch);
	free(hot);
	free(calm);
	free(arch);
	free(src);
}
