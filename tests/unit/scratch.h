/*
 * A scratch directory per unit test: scratch_make() in the suite's .init,
 * scratch_remove() as its .fini, at() for paths inside it.
 */
#ifndef AMBER_TEST_SCRATCH_H
#define AMBER_TEST_SCRATCH_H

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char base[4096];

static inline void scratch_make(const char *tag)
{
	const char *t = getenv("TMPDIR");

	snprintf(base, sizeof(base), "%s/amberfs-%s-XXXXXX", t && *t ? t : "/tmp", tag);
	cr_assert_not_null(mkdtemp(base));
}

static inline int scratch_rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static inline void scratch_remove(void)
{
	nftw(base, scratch_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* base/name in one of four rotating buffers. */
static inline char *at(const char *name)
{
	static char bufs[4][4200];
	static int k;
	char *p = bufs[k++ & 3];
	int n = snprintf(p, 4200, "%s/%s", base, name);

	cr_assert(n > 0 && n < 4200, "path too long");
	return p;
}

#endif
