/*
 * Node memory: blocks carved out of 2 MiB chunks.
 *
 * The first walk of a fresh mount makes a node for every entry it lists
 * (readdirplus), a few hundred bytes of fresh memory each.  From malloc,
 * one node in ten touched a new page, and a page fault costs more than the
 * rest of making the node (10-30 us each measured on a virtual machine,
 * where a 5,000-entry find then spent a third of the daemon's time in
 * faults).  So nodes come from chunks of 2 MiB, aligned to 2 MiB, for which
 * the kernel is asked for a transparent huge page (madvise: one fault of
 * ~0.1 ms maps the whole chunk where the kernel grants one; 4 KiB pages
 * otherwise, as before).
 *
 * Blocks come in size classes of MNT_SLAB_GRAIN bytes.  A freed block goes
 * onto its class's free list, and the next block of that class reuses it,
 * so the chunks grow with the peak of live nodes, which the trimmer holds
 * to -o node_cache; they are unmapped when the table is destroyed.  Blocks
 * larger than the largest class (nodes with long names) come from malloc.
 *
 * Under AddressSanitizer the chunks are poisoned except for the blocks in
 * use, so a stray access to a freed node is still reported.
 */
#include "mount.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define CHUNK_HEAD MNT_SLAB_GRAIN       /* the chunk list's link, at each chunk's start */

void mnt_slab_init(struct mnt_slab *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
}

/* A new chunk, 2 MiB-aligned (a huge page can only map an aligned one), or NULL. */
static char *chunk_map(void)
{
	size_t len = 2 * MNT_SLAB_CHUNK;
	char *q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p;
	size_t head;

	if (q == MAP_FAILED)
		return NULL;
	p = (char *)(((uintptr_t)q + MNT_SLAB_CHUNK - 1) & ~(uintptr_t)(MNT_SLAB_CHUNK - 1));
	head = (size_t)(p - q);
	if (head)
		munmap(q, head);
	munmap(p + MNT_SLAB_CHUNK, len - head - MNT_SLAB_CHUNK);
	(void)madvise(p, MNT_SLAB_CHUNK, MADV_HUGEPAGE);       /* a hint: 4 KiB pages else */
	POISON(p + CHUNK_HEAD, MNT_SLAB_CHUNK - CHUNK_HEAD);
	return p;
}

/* Caller holds s->lock: a fresh block of class size `size` from the chunks. */
static void *bump(struct mnt_slab *s, size_t size)
{
	char *p;

	if (s->left < size) {
		char *c = chunk_map();

		if (!c)
			return NULL;
		*(char **)(void *)c = s->chunks;
		s->chunks = c;
		s->chunk_bytes += MNT_SLAB_CHUNK;
		s->cur = c + CHUNK_HEAD;
		s->left = MNT_SLAB_CHUNK - CHUNK_HEAD;
	}
	p = s->cur;
	s->cur += size;
	s->left -= size;
	return p;
}

void *mnt_slab_alloc(struct mnt_slab *s, size_t size, unsigned *cls)
{
	unsigned c = (unsigned)((size + MNT_SLAB_GRAIN - 1) / MNT_SLAB_GRAIN);
	size_t csize = (size_t)c * MNT_SLAB_GRAIN;
	void *p = NULL;
	int fresh = 0;

	*cls = 0;
	if (size == 0 || c > MNT_SLAB_CLASSES)
		return calloc(1, size);
	pthread_mutex_lock(&s->lock);
	if ((p = s->free[c - 1])) {
		UNPOISON(p, sizeof(void *));
		s->free[c - 1] = *(void **)p;
	} else if ((p = bump(s, csize))) {
		fresh = 1;      /* never used: still zero from mmap */
	}
	pthread_mutex_unlock(&s->lock);
	if (!p)
		return calloc(1, size);
	UNPOISON(p, csize);
	if (!fresh)
		memset(p, 0, csize);
	*cls = c;
	return p;
}

void mnt_slab_free(struct mnt_slab *s, void *p, unsigned cls)
{
	if (!p)
		return;
	if (cls == 0) {
		free(p);
		return;
	}
	pthread_mutex_lock(&s->lock);
	*(void **)p = s->free[cls - 1];
	s->free[cls - 1] = p;
	POISON(p, (size_t)cls * MNT_SLAB_GRAIN);
	pthread_mutex_unlock(&s->lock);
}

size_t mnt_slab_bytes(struct mnt_slab *s)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	n = s->chunk_bytes;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* Every block must have been freed (or be abandoned with the table). */
void mnt_slab_destroy(struct mnt_slab *s)
{
	while (s->chunks) {
		char *c = s->chunks;

		s->chunks = *(char **)(void *)c;
		UNPOISON(c, MNT_SLAB_CHUNK);
		munmap(c, MNT_SLAB_CHUNK);
	}
	pthread_mutex_destroy(&s->lock);
	memset(s, 0, sizeof(*s));
}
