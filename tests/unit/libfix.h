/*
 * A small encrypted archive for the unit suites of the library's upper
 * half (archive, snapshot, reader, diff, restore, verify, writer sessions
 * and their growth): a scratch
 * directory (scratch.h), a source tree written by the test, and an archive
 * in it whose key slot uses the test KDF profile and whose caches live in
 * the scratch directory.  Everything goes through the public API.
 */
#ifndef AMBER_TEST_LIBFIX_H
#define AMBER_TEST_LIBFIX_H

#include "scratch.h"

#include "amber.h"
#include "amber_verify.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define PASS "unit test passphrase"
#define T0 ((int64_t)1765000000 * 1000000000)

#define OK(call)                                                                       \
	do {                                                                           \
		int rc_ = (call);                                                      \
		cr_assert_eq(rc_, 0, "%s -> %d: %s", #call, rc_, amber_error_last());  \
	} while (0)

static inline void put_file(const char *rel, const char *text)
{
	int fd = open(at(rel), O_WRONLY | O_CREAT | O_TRUNC, 0644);

	cr_assert_geq(fd, 0, "create %s", rel);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static inline amber_open_opts fix_open_opts(void)
{
	amber_open_opts o = AMBER_OPEN_OPTS_INIT;

	o.cache_dir = strdup(at("cache")); /* at() reuses its buffers */
	o.weak_kdf_ok = 1;
	return o;
}

/* Write text to base/src/rel, in the source tree the tests snapshot. */
static inline void src_put(const char *rel, const char *text)
{
	char path[4200];
	int n = snprintf(path, sizeof(path), "src/%s", rel);

	cr_assert(n > 0 && n < (int)sizeof(path), "path too long");
	put_file(path, text);
}

/* A new encrypted (or plain) archive at base/name, unlocked. */
static inline amber_archive *fix_archive_at(const char *name, int plain)
{
	static amber_open_opts oo;
	amber_create_opts co = AMBER_CREATE_OPTS_INIT;
	amber_archive *a = NULL;

	OK(amber_global_init());
	oo = fix_open_opts();
	co.plain = plain;
	co.passphrase = (const unsigned char *)PASS;
	co.passphrase_len = strlen(PASS);
	co.kdf_profile = AMBER_KDF_TEST;
	co.open = &oo;
	mkdir(at("cache"), 0700);
	OK(amber_archive_create(&a, at(name), &co));
	return a;
}

/* A new encrypted (or plain) archive at base/archive, unlocked. */
static inline amber_archive *fix_archive(int plain)
{
	return fix_archive_at("archive", plain);
}

/* A writer session over base/src, snapshotting with one thread. */
static inline amber_writer *fix_writer(amber_archive *a)
{
	amber_writer_opts o = AMBER_WRITER_OPTS_INIT;
	amber_writer *w = NULL;

	o.snap.threads = 1;
	OK(amber_writer_open(&w, a, at("src"), &o));
	return w;
}

/* Snapshot base/src into stream main at T0 + step seconds; id into id. */
static inline void fix_snapshot(char id[AMBER_OID_HEXSZ + 1], amber_archive *a, int step)
{
	amber_snapshot_opts so = AMBER_SNAPSHOT_OPTS_INIT;

	so.threads = 1;
	so.time_ns = T0 + (int64_t)step * 1000000000;
	OK(amber_snapshot_create(id, NULL, a, at("src"), &so));
}

/* The whole content of regular file `path` of snapshot s (malloc'd, NUL-terminated). */
static inline char *fix_read(amber_snapshot *s, const char *path)
{
	amber_entry *e = NULL;
	char *buf;
	size_t n = 0;

	OK(amber_stat(&e, s, path));
	buf = calloc(1, e->size + 1);
	cr_assert_not_null(buf);
	OK(amber_file_read(&n, s, e, 0, (uint8_t *)buf, e->size));
	cr_assert_eq(n, e->size, "short read of %s", path);
	amber_entry_free(e);
	return buf;
}

#endif
