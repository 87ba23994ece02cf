/*
 * Snapshot specs ("latest", ids and prefixes, tags, "@TIME",
 * "STREAM@TIME") resolved against a small plain archive made once per
 * process: three snapshots of one file in stream main, one in stream
 * "other", and a tag.
 */
#include "fuzz.h"

#include "amber.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[] = "/tmp/amberfs-fuzz-spec-XXXXXX";

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static void rm_base(void)
{
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static amber_archive *archive_for_specs(void)
{
	static amber_archive *a;
	static int tried;
	char src[64], path[80], id[AMBER_OID_HEXSZ + 1];
	amber_create_opts co = {.version = AMBER_CREATE_OPTS_VERSION, .plain = 1};
	amber_snapshot_opts so = {.version = AMBER_SNAPSHOT_OPTS_VERSION, .threads = 1};
	FILE *f;

	if (tried)
		return a;
	tried = 1;
	if (!mkdtemp(base))
		return NULL;
	atexit(rm_base);
	snprintf(src, sizeof(src), "%s/src", base);
	snprintf(path, sizeof(path), "%s/archive", base);
	mkdir(src, 0700);
	for (int i = 0; i < 4; i++) {
		char file[96];

		snprintf(file, sizeof(file), "%s/f", src);
		if (!(f = fopen(file, "w")))
			return NULL;
		fprintf(f, "version %d\n", i);
		fclose(f);
		if (i == 0 && amber_archive_create(&a, path, &co) < 0)
			return NULL;
		so.stream = i == 3 ? "other" : "main";
		so.tag = i == 1 ? "t1" : NULL;
		so.time_ns = (int64_t)(1700000000 + i) * 1000000000 + 123456789;
		if (amber_snapshot_create(id, NULL, a, src, &so) < 0)
			return NULL;
	}
	return a;
}

AMBER_FUZZ(snapspec)
{
	char *s, id[AMBER_OID_HEXSZ + 1];
	amber_archive *a;

	fuzz_init();
	if (!(a = archive_for_specs()))
		return 0;
	s = fuzz_cstring(data, size);
	if (s) {
		amber_resolve(id, a, NULL, s);
		amber_resolve(id, a, "other", s);
	}
	free(s);
	return 0;
}
