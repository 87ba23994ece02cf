/*
 * Fault injection (tests/fault/sweep.py): a sample of the injection points
 * of a small snapshot -- every K-th mutating system call killed at, or
 * failed with ENOSPC or EIO -- each followed by git fsck, restores of the
 * earlier snapshots, a check of the error message and a next snapshot.
 * The full sweep (every point) runs outside the suite: scripts/fault-sweep.
 */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(faults, .init = itest_setup, .fini = itest_teardown, .timeout = 900);

static void sweep(const char *sample, const char *mode)
{
	run_result r;
	const char *bin = getenv("AMBERFS_BIN");
	const char *argv[] = {"python3", AMBER_SOURCE_DIR "/tests/fault/sweep.py", bin,
			      "--sample", sample, mode, NULL};
	unsigned points = 0, runs = 0, failures = 1;

	cr_assert_not_null(bin, "AMBERFS_BIN is not set");
	run_argv(&r, &(run_opts){.timeout = 850}, argv);
	cr_assert_eq(r.status, 0, "fault sweep failed:\n%s\n%s", r.out, r.err);
	cr_assert_not_null(strstr(r.out, " points, "), "no summary:\n%s\n%s", r.out, r.err);
	{
		/* The summary is the last line: "N points, N runs, N failures". */
		const char *line = strstr(r.out, " points, "), *p;

		while ((p = strstr(line + 1, " points, ")))
			line = p;
		while (line > r.out && line[-1] != '\n')
			line--;
		cr_assert_eq(sscanf(line, "%u points, %u runs, %u failures", &points, &runs,
				    &failures), 3, "summary: %s", line);
	}
	cr_assert_gt(points, 50, "too few injection points counted (%u)", points);
	cr_assert_gt(runs, 5, "too few runs (%u)", runs);
	cr_assert_eq(failures, 0);
	run_result_dispose(&r);
}

Test(faults, plain_snapshot_survives_a_sample_of_kills_and_write_errors)
{
	sweep("13", "--cmd=snapshot");
}

Test(faults, encrypted_snapshot_survives_a_sample_of_kills_and_write_errors)
{
	sweep("17", "--encrypted");
}

/* tests/fault/bitflip.py with every K-th byte of the packs and indexes. */
static void bitflip(const char *sample, const char *mode)
{
	run_result r;
	const char *bin = getenv("AMBERFS_BIN");
	const char *argv[] = {"python3", AMBER_SOURCE_DIR "/tests/fault/bitflip.py", bin,
			      "--sample", sample, mode, NULL};
	unsigned flips = 0, checked = 0, mounted = 0, failures = 1;
	const char *line;

	cr_assert_not_null(bin, "AMBERFS_BIN is not set");
	run_argv(&r, &(run_opts){.timeout = 850}, argv);
	cr_assert_eq(r.status, 0, "bit-flip sweep failed:\n%s\n%s", r.out, r.err);
	line = strstr(r.out, " checked, "); /* the summary, not the "N flips, N picked" header */
	cr_assert_not_null(line, "no summary:\n%s\n%s", r.out, r.err);
	while (line > r.out && line[-1] != '\n')
		line--;
	cr_assert_eq(sscanf(line, "%u flips, %u checked, %u mounted, %u failures", &flips,
			    &checked, &mounted, &failures), 4, "summary: %s", line);
	cr_assert_gt(flips, 1000, "the archive has too few pack bytes (%u)", flips);
	cr_assert_gt(checked, 20);
	cr_assert_gt(mounted, 5, "too few flips got as far as a mount (%u)", mounted);
	cr_assert_eq(failures, 0);
	run_result_dispose(&r);
}

Test(faults, plain_archive_serves_no_wrong_byte_after_a_bit_flip)
{
	bitflip("97", "--mount-every=1");
}

Test(faults, encrypted_archive_serves_no_wrong_byte_after_a_bit_flip)
{
	bitflip("101", "--encrypted");
}
