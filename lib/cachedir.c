/*
 * The local cache directory: where it is, whether it can be trusted, and
 * how files in it are replaced (see cachedir.h).
 */
#include "cachedir.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_PATH_MAX 4096

/* ~/.cache/amberfs of the effective user, from the password database. */
static int default_base(char *out, size_t len)
{
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &res) != 0 || !res || !pw.pw_dir ||
	    pw.pw_dir[0] != '/')
		return amber_fail(AMBER_ERROR, "no home directory for uid %ld, so no cache "
				  "directory: set XDG_CACHE_HOME or AMBERFS_CACHE_DIR "
				  "(mount: -o cache_dir=DIR)", (long)geteuid());
	if ((size_t)snprintf(out, len, "%s/.cache/amberfs", pw.pw_dir) >= len)
		return amber_fail(AMBER_ERROR, "cache directory path too long");
	return 0;
}

/* mkdir -p; components created here are 0700 and ours. */
static int mkdirs(const char *path)
{
	char tmp[CACHE_PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(tmp))
		return amber_fail(AMBER_ERROR, "path too long: %s", path);
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1;; p++) {
		if (*p && *p != '/')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return amber_fail_errno("cannot create directory %s", tmp);
		if (!c)
			return 0;
		*p = c;
	}
}

/* A directory we may keep caches in: ours, and nobody else may write it. */
static int dir_trusted(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return amber_fail_errno("cache directory %s", path);
	if (!S_ISDIR(st.st_mode))
		return amber_fail(AMBER_ERROR, "cache directory %s is not a directory", path);
	if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)))
		return amber_fail(AMBER_ERROR, "cache directory %s is not safe (owned by uid %ld, "
				  "mode %04o; it must be yours and writable only by you): not "
				  "using it; fix it or choose another with AMBERFS_CACHE_DIR",
				  path, (long)st.st_uid, (unsigned)(st.st_mode & 07777));
	return 0;
}

/* BASE (def holds the default) and BASE/<id>; -1 with the error set. */
static int cache_paths(const char **base, char *def, char *path, const char *id)
{
	if (!*base && default_base(def, CACHE_PATH_MAX) < 0)
		return -1;
	if (!*base)
		*base = def;
	if ((size_t)snprintf(path, CACHE_PATH_MAX, "%s/%s", *base, id) >= CACHE_PATH_MAX)
		return amber_fail(AMBER_ERROR, "cache directory path too long: %s", *base);
	return 0;
}

char *amber_cachedir_get(const char *base, const char *id)
{
	char def[CACHE_PATH_MAX], path[CACHE_PATH_MAX];

	if (base && !*base) {
		amber_fail(AMBER_ERROR, "no cache directory");
		return NULL;
	}
	if (cache_paths(&base, def, path, id) < 0)
		return NULL;
	if (mkdirs(base) < 0 || dir_trusted(base) < 0 || mkdirs(path) < 0 || dir_trusted(path) < 0)
		return NULL;
	return strdup(path);
}

int amber_cachedir_check(const char *base, const char *id)
{
	char def[CACHE_PATH_MAX], path[CACHE_PATH_MAX];

	if (base && !*base)
		return 0;
	if (cache_paths(&base, def, path, id) < 0)
		return AMBER_ERROR;
	if ((access(base, F_OK) == 0 || errno != ENOENT) && dir_trusted(base) < 0)
		return AMBER_ERROR;
	if ((access(path, F_OK) == 0 || errno != ENOENT) && dir_trusted(path) < 0)
		return AMBER_ERROR;
	return 0;
}

FILE *amber_tmpfile_new(char **tmp, const char *path)
{
	size_t len = strlen(path) + 12;
	FILE *f = NULL;
	int fd;

	*tmp = malloc(len);
	if (!*tmp) {
		amber_fail(AMBER_ERROR, "out of memory");
		return NULL;
	}
	snprintf(*tmp, len, "%s.tmp.XXXXXX", path);
	fd = mkostemp(*tmp, O_CLOEXEC); /* O_CREAT|O_EXCL, mode 0600 */
	if (fd < 0 || !(f = fdopen(fd, "wb"))) {
		amber_fail_errno("cannot create a temporary file next to %s", path);
		if (fd >= 0) {
			close(fd);
			unlink(*tmp);
		}
		free(*tmp);
		*tmp = NULL;
	}
	return f;
}

int amber_tmpfile_commit(FILE *f, char *tmp, const char *path, int ok)
{
	int rc = 0;

	ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
	ok = fclose(f) == 0 && ok;
	if (!ok || rename(tmp, path) < 0) {
		rc = amber_fail_errno("cannot write %s", path);
		unlink(tmp);
	}
	free(tmp);
	return rc;
}

int amber_file_replace(const char *path, const void *data, size_t len)
{
	char *tmp = NULL;
	FILE *f = amber_tmpfile_new(&tmp, path);

	if (!f)
		return AMBER_ERROR;
	return amber_tmpfile_commit(f, tmp, path, fwrite(data, 1, len, f) == len);
}
