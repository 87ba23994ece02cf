/*
 * LD_PRELOAD shim for the read-back test: when a process renames a .pack
 * into place, flip one byte in the middle of it first.  The pack's checksum
 * was computed before, so only reading the objects back notices; amberfs
 * must refuse to move the ref.  Acts on the first .pack of the process.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int done;

static void flip_middle_byte(const char *path)
{
	struct stat st;
	unsigned char c;
	int fd;

	if (stat(path, &st) < 0 || st.st_size < 64)
		return;
	chmod(path, 0600); /* the writer made it read-only */
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0 && pread(fd, &c, 1, st.st_size / 2) == 1) {
		c ^= 0x5a;
		if (pwrite(fd, &c, 1, st.st_size / 2) == 1)
			done = 1;
	}
	if (fd >= 0)
		close(fd);
	chmod(path, st.st_mode & 07777);
}

int rename(const char *from, const char *to)
{
	static int (*real)(const char *, const char *);
	size_t n = strlen(to);

	if (!real)
		real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
	if (!done && n > 5 && strcmp(to + n - 5, ".pack") == 0)
		flip_middle_byte(from);
	return real(from, to);
}
