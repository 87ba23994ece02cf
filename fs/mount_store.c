/*
 * Small files stored into the kernel's page cache ahead of their reads.
 *
 * A tool that copies a tree reads its small files one after the other, a
 * read request each, and on a virtual machine the round trip of a request
 * (a wake-up and two context switches on each side) costs more than
 * decoding the file.  When a reader is seen going file after file
 * (prefetch_siblings, mount_ops.c), the next files are handed to this
 * thread, which decodes each (authenticated, as for any read) and stores
 * its bytes in the kernel's cache of that inode (FUSE_NOTIFY_STORE): their
 * reads find them there and never come to the daemon.  The kernel takes a
 * store only for an inode it holds, and a store of a whole file changes
 * nothing but the cached pages.
 *
 * A queued file holds a lookup on its node (so that the node stays) until
 * it is stored.  At most MNT_STORE_QUEUE files wait; more are not queued
 * (their reads come to the daemon as before).  The thread starts with the
 * first file queued, and holds no lock while it stores: a store waits for
 * a page a read of the same file holds, and that read is answered by a
 * worker thread from the decoded chunk.
 */
#include "mount.h"

#include <stdlib.h>

/* n's whole content into the kernel's page cache, now. */
static void store_file(struct mnt *m, struct mnt_node *n)
{
	amber_piece p[MNT_READ_PIECES];
	struct fuse_bufvec *v;
	size_t np = 0, got = 0, size = (size_t)n->e->size;

	if (amber_file_pieces(p, MNT_READ_PIECES, &np, &got, n->snap->s, n->e, 0, size))
		return;         /* its read will find the error and report it */
	if (got == size && np &&
	    (v = calloc(1, sizeof(*v) + (np - 1) * sizeof(v->buf[0]))) != NULL) {
		for (size_t i = 0; i < np; i++) {
			v->buf[i].mem = (void *)p[i].data;
			v->buf[i].size = p[i].len;
		}
		v->count = np;
		if (fuse_lowlevel_notify_store(m->se, n->id, 0, v, 0) == 0)
			atomic_fetch_add(&m->n.stored, 1);
		free(v);
	}
	amber_file_pieces_consumed(n->snap->s, p, np); /* the kernel has the bytes */
}

static void *store_main(void *arg)
{
	struct mnt *m = arg;
	struct mnt_store *q = &m->store;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct mnt_node *n;
		int stop;

		while (!q->stop && q->head == q->tail)
			pthread_cond_wait(&q->cond, &q->lock);
		if (q->head == q->tail)         /* stopping, and nothing left */
			break;
		n = q->ring[q->head++ % MNT_STORE_QUEUE];
		stop = q->stop;
		pthread_mutex_unlock(&q->lock);
		if (!stop)
			store_file(m, n);
		mnt_node_forget(m, n->id, 1);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

int mnt_store_queue(struct mnt *m, struct mnt_node *n)
{
	struct mnt_store *q = &m->store;
	int queued = 0;

	pthread_mutex_lock(&q->lock);
	if (!q->stop && m->se && q->tail - q->head < MNT_STORE_QUEUE) {
		if (!q->started)
			q->started = pthread_create(&q->thread, NULL, store_main, m) == 0 ? 1 : -1;
		if (q->started > 0) {
			q->ring[q->tail++ % MNT_STORE_QUEUE] = n;
			pthread_cond_signal(&q->cond);
			queued = 1;
		}
	}
	pthread_mutex_unlock(&q->lock);
	return queued;
}

void mnt_store_init(struct mnt *m)
{
	pthread_mutex_init(&m->store.lock, NULL);
	pthread_cond_init(&m->store.cond, NULL);
}

void mnt_store_stop(struct mnt *m)
{
	struct mnt_store *q = &m->store;
	int started;

	pthread_mutex_lock(&q->lock);
	q->stop = 1;
	started = q->started;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	if (started > 0)
		pthread_join(q->thread, NULL);  /* it gives back what was queued */
	q->started = 0;
}
