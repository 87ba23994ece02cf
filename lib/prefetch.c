/*
 * Read-ahead: which chunks a read at an offset of a file will want next,
 * and the archive's one worker thread that decodes them into the shared
 * cache before they are asked for.  The worker is started on first use
 * (after any fork) and stopped by amber_archive_free (archive.c); its
 * queue lives in the archive (pf_* fields, under pf_lock).
 */
#include "prefetch.h"

#include "error.h"
#include "file.h"
#include "record.h"

#include <pthread.h>
#include <string.h>

static void *prefetch_main(void *arg)
{
	amber_archive *a = arg;

	pthread_mutex_lock(&a->pf_lock);
	while (!a->pf_stop) {
		amber_link l;
		size_t len;
		amber_cobj *o = NULL;

		if (a->pf_n == 0) {
			pthread_cond_wait(&a->pf_cond, &a->pf_lock);
			continue;
		}
		l = a->pf_queue[0];
		len = a->pf_len[0];
		a->pf_n--;
		memmove(a->pf_queue, a->pf_queue + 1, a->pf_n * sizeof(a->pf_queue[0]));
		memmove(a->pf_len, a->pf_len + 1, a->pf_n * sizeof(a->pf_len[0]));
		pthread_mutex_unlock(&a->pf_lock);
		if (amber_chunk_get(&o, a, &l, len, "read-ahead") < 0)
			amber_error_clear(); /* the real read reports it */
		amber_cache_release(a->cache, o);
		pthread_mutex_lock(&a->pf_lock);
	}
	pthread_mutex_unlock(&a->pf_lock);
	return NULL;
}

void amber_archive_prefetch(amber_archive *a, const amber_link *l, size_t len)
{
	pthread_mutex_lock(&a->pf_lock);
	for (size_t i = 0; i < a->pf_n; i++)
		if (memcmp(&a->pf_queue[i], l, sizeof(*l)) == 0 && a->pf_len[i] == len)
			goto done;
	if (!a->pf_started && !a->pf_stop)
		a->pf_started = pthread_create(&a->pf_thread, NULL, prefetch_main, a) == 0;
	if (!a->pf_started || a->pf_n == sizeof(a->pf_len) / sizeof(a->pf_len[0]))
		goto done;
	a->pf_queue[a->pf_n] = *l;
	a->pf_len[a->pf_n++] = len;
	pthread_cond_signal(&a->pf_cond);
done:
	pthread_mutex_unlock(&a->pf_lock);
}

#define PREFETCH_AHEAD ((uint64_t)4 << 20)

static void prefetch_link(amber_archive *a, const amber_link *l, size_t len)
{
	uint8_t key[AMBER_CKEY];

	amber_link_key(key, l, 'c', len, NULL);
	if (!amber_cache_has(a->cache, key))
		amber_archive_prefetch(a, l, len);
}

void amber_file_prefetch(amber_snapshot *s, const amber_entry *e, uint64_t off)
{
	amber_archive *a = s->a;
	amber_cobj *o = NULL;
	const file_index *x;

	if (e->type != AMBER_T_REG || off >= e->size)
		return;
	if (e->content == AMBER_C_BLOB) {
		prefetch_link(a, &e->link, (size_t)e->size);
		return;
	}
	if (e->content != AMBER_C_CHUNKED || amber_file_index(&o, a, e, "read-ahead") < 0) {
		amber_error_clear();
		return;
	}
	x = o->data;
	for (size_t i = amber_file_chunk_at(x, off); i < x->n && x->off[i] < off + PREFETCH_AHEAD;
	     i++)
		prefetch_link(a, &x->c[i].link, x->c[i].len);
	amber_cache_release(a->cache, o);
}
