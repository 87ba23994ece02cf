#include "kvmap.h"

#include "cachedir.h"

#include "amber.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Open addressing, linear probing; slot = key[32] | used u8 | padding |
 * value at VOFF, slots a multiple of 8 bytes, so values are 8-byte aligned
 * (callers read them as structs).
 */
#define VOFF 40
struct amber_kvmap {
	size_t vsize, slot, cap, count;
	uint8_t *slots;
};

amber_kvmap *amber_kvmap_new(size_t vsize)
{
	amber_kvmap *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->vsize = vsize;
	m->slot = VOFF + ((vsize + 7) & ~(size_t)7);
	m->cap = 1024;
	m->slots = calloc(m->cap, m->slot);
	if (!m->slots) {
		free(m);
		return NULL;
	}
	return m;
}

void amber_kvmap_free(amber_kvmap *m)
{
	if (!m)
		return;
	free(m->slots);
	free(m);
}

static uint8_t *find(const amber_kvmap *m, const uint8_t key[32])
{
	uint64_t h;
	size_t i;

	memcpy(&h, key, sizeof(h));
	for (i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		uint8_t *s = m->slots + i * m->slot;

		if (!s[32] || memcmp(s, key, 32) == 0)
			return s;
	}
}

const void *amber_kvmap_get(const amber_kvmap *m, const uint8_t key[32])
{
	const uint8_t *s = find(m, key);

	return s[32] ? s + VOFF : NULL;
}

static int grow(amber_kvmap *m)
{
	amber_kvmap big = *m;

	big.cap = m->cap * 2;
	big.count = 0;
	big.slots = calloc(big.cap, big.slot);
	if (!big.slots)
		return amber_fail(AMBER_ERROR, "out of memory growing a cache map");
	for (size_t i = 0; i < m->cap; i++) {
		uint8_t *s = m->slots + i * m->slot;

		if (s[32])
			memcpy(find(&big, s), s, m->slot);
	}
	big.count = m->count;
	free(m->slots);
	*m = big;
	return 0;
}

int amber_kvmap_put(amber_kvmap *m, const uint8_t key[32], const void *value)
{
	uint8_t *s;

	if ((m->count + 1) * 4 > m->cap * 3 && grow(m) < 0)
		return AMBER_ERROR;
	s = find(m, key);
	if (!s[32]) {
		memcpy(s, key, 32);
		s[32] = 1;
		m->count++;
	}
	memcpy(s + VOFF, value, m->vsize);
	return 0;
}

size_t amber_kvmap_count(const amber_kvmap *m)
{
	return m->count;
}

void amber_kvmap_each(amber_kvmap *m, void (*fn)(void *value, void *arg), void *arg)
{
	for (size_t i = 0; i < m->cap; i++) {
		uint8_t *slot = m->slots + i * m->slot;

		if (slot[32])
			fn(slot + VOFF, arg);
	}
}

size_t amber_kvmap_prune(amber_kvmap *m, int (*keep)(const void *value, void *arg), void *arg)
{
	amber_kvmap small = *m;
	size_t kept = 0;

	for (size_t i = 0; i < m->cap; i++) {
		const uint8_t *s = m->slots + i * m->slot;

		kept += s[32] && keep(s + VOFF, arg);
	}
	if (kept == m->count)
		return 0;
	small.cap = 1024;
	while (kept * 4 > small.cap * 3 / 2) /* at most half full, as after a grow */
		small.cap *= 2;
	small.count = kept;
	small.slots = calloc(small.cap, small.slot);
	if (!small.slots)
		return 0; /* only a cache: kept whole until there is memory */
	for (size_t i = 0; i < m->cap; i++) {
		const uint8_t *s = m->slots + i * m->slot;

		if (s[32] && keep(s + VOFF, arg))
			memcpy(find(&small, s), s, m->slot);
	}
	free(m->slots);
	kept = m->count - small.count;
	*m = small;
	return kept;
}

void amber_kvmap_load(amber_kvmap *m, const char *path, const char magic[8],
		      const uint8_t tag[32])
{
	uint8_t hdr[40], *rec = malloc(32 + m->vsize);
	FILE *f = fopen(path, "rb");

	if (!f || !rec)
		goto done;
	if (fread(hdr, 1, sizeof(hdr), f) != sizeof(hdr) || memcmp(hdr, magic, 8) != 0 ||
	    memcmp(hdr + 8, tag, 32) != 0)
		goto done;
	while (fread(rec, 1, 32 + m->vsize, f) == 32 + m->vsize)
		if (amber_kvmap_put(m, rec, rec + 32) < 0)
			break;
done:
	free(rec);
	if (f)
		fclose(f);
}

static int write_all(FILE *f, const amber_kvmap *m, const char magic[8], const uint8_t tag[32])
{
	if (fwrite(magic, 1, 8, f) != 8 || fwrite(tag, 1, 32, f) != 32)
		return -1;
	for (size_t i = 0; i < m->cap; i++) {
		const uint8_t *s = m->slots + i * m->slot;

		if (!s[32])
			continue;
		if (fwrite(s, 1, 32, f) != 32 || fwrite(s + VOFF, 1, m->vsize, f) != m->vsize)
			return -1;
	}
	return 0;
}

int amber_kvmap_save(const amber_kvmap *m, const char *path, const char magic[8],
		     const uint8_t tag[32])
{
	char *tmp = NULL;
	FILE *f = amber_tmpfile_new(&tmp, path); /* unique, O_EXCL: never a planted file */

	if (!f)
		return AMBER_ERROR;
	return amber_tmpfile_commit(f, tmp, path, write_all(f, m, magic, tag) == 0);
}

int amber_mkdirs(const char *path, int mode)
{
	char tmp[4096];
	struct stat st;
	size_t n = strlen(path);

	if (n >= sizeof(tmp))
		return amber_fail(AMBER_ERROR, "path too long: %s", path);
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, (mode_t)mode) < 0 && errno != EEXIST)
			return amber_fail_errno("cannot create directory %s", tmp);
		*p = '/';
	}
	if (mkdir(tmp, (mode_t)mode) < 0 && errno != EEXIST)
		return amber_fail_errno("cannot create directory %s", tmp);
	if (stat(tmp, &st) < 0 || !S_ISDIR(st.st_mode))
		return amber_fail(AMBER_ERROR, "%s exists and is not a directory", tmp);
	return 0;
}
