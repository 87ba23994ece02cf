/*
 * Replays every fuzz target's seed corpus (tests/fuzz/corpus/<target>/)
 * and every saved crash (tests/fuzz/crashes/<target>/) through the target,
 * so the ordinary test run (and its ASan+UBSan pass) keeps them fixed.
 * A corpus directory that is missing or empty fails: a target nobody
 * feeds is not tested.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define TARGETS(X)                                                                         \
	X(frame) X(manifest) X(fanout) X(index) X(record) X(tree) X(commit) X(timespec)    \
	X(pubkey) X(sshsig) X(keyslot) X(snapspec) X(slip39) X(config) X(pack) X(base64)

#define DECLARE(name) int fuzz_##name(const uint8_t *data, size_t size);
TARGETS(DECLARE)

typedef int (*target_fn)(const uint8_t *, size_t);

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	cr_assert_not_null(f, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n, "short read of %s", path);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Run every file of DIR through fn; how many there were. */
static size_t replay_dir(const char *dir, target_fn fn)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t count = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char path[4096];
		uint8_t *buf;
		size_t len;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		buf = slurp(path, &len);
		fn(buf, len);
		free(buf);
		count++;
	}
	closedir(d);
	return count;
}

static void replay(const char *name, target_fn fn)
{
	char dir[4096];
	size_t seeds;

	snprintf(dir, sizeof(dir), "%s/corpus/%s", AMBER_FUZZ_DIR, name);
	seeds = replay_dir(dir, fn);
	cr_assert_gt(seeds, 0, "no seed corpus in %s", dir);
	snprintf(dir, sizeof(dir), "%s/crashes/%s", AMBER_FUZZ_DIR, name);
	replay_dir(dir, fn);
}

#define REPLAY_TEST(name)                                                                  \
	Test(fuzz_replay, name, .timeout = 300)                                            \
	{                                                                                  \
		replay(#name, fuzz_##name);                                                \
	}
TARGETS(REPLAY_TEST)
