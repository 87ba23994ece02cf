#include "buf.h"

#include "error.h"

#include <endian.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define BUF_NO_PAGES 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BUF_NO_PAGES 1
#endif
#endif

void amber_buf_init(amber_buf *b, size_t max)
{
	b->data = NULL;
	b->len = b->cap = 0;
	b->max = max ? max : AMBER_BUF_DEFAULT_MAX;
	b->pages = 0;
}

void amber_buf_init_pages(amber_buf *b, size_t max)
{
	amber_buf_init(b, max);
#ifndef BUF_NO_PAGES
	b->pages = AMBER_BUF_PAGES_OK;
#endif
}

/*
 * The reuse pool of mapped buffers: the most recently freed first.  A
 * region of another size is resized with mremap, which keeps the pages it
 * already has, so only the difference is faulted in (or given back).  Its
 * bounds keep what it holds small beside the caches: a reader frees one
 * buffer for each it takes, so a few are enough.
 */
#define POOL_REGIONS 16
#define POOL_BYTES ((size_t)16 << 20)

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	void *p;
	size_t len;
} pool[POOL_REGIONS];
static size_t pool_n, pool_bytes;

void amber_buf_pages_pooled(size_t *bytes, size_t *max)
{
	pthread_mutex_lock(&pool_lock);
	*bytes = pool_bytes;
	pthread_mutex_unlock(&pool_lock);
	*max = POOL_BYTES;
}

static size_t page_round(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return (n + pg - 1) / pg * pg;
}

/* Fault in [p, p + len) in one call; the pages fault on first use otherwise. */
static void populate(void *p, size_t len)
{
#ifdef MADV_POPULATE_WRITE
	(void)madvise(p, len, MADV_POPULATE_WRITE);
#else
	(void)p;
	(void)len;
#endif
}

/*
 * At least len bytes (a multiple of the page size) of mapped memory, or
 * NULL; *got is its size.  The most recently pooled region that is big
 * enough by at most a quarter (and 64 KiB) is taken as it is: chunks
 * differ in size, and resizing a region with mremap costs a TLB flush
 * (shrinking) or fresh zeroed pages (growing) each time.  Otherwise the
 * region closest in size is resized.
 */
static void *pages_get(size_t len, size_t *got)
{
	void *p = NULL, *q;
	size_t have = 0, best = 0, bd = SIZE_MAX, slack = len / 4 + ((size_t)64 << 10);

	pthread_mutex_lock(&pool_lock);
	for (size_t i = pool_n; i-- > 0;) {
		size_t l = pool[i].len, d = l >= len ? l - len : len - l;

		if (l >= len && d <= slack) {
			best = i;
			break;
		}
		if (d < bd) {
			best = i;
			bd = d;
		}
	}
	if (pool_n > 0) {
		p = pool[best].p;
		have = pool[best].len;
		pool_bytes -= have;
		memmove(&pool[best], &pool[best + 1], (pool_n - best - 1) * sizeof(pool[0]));
		pool_n--;
	}
	pthread_mutex_unlock(&pool_lock);
	if (p && have >= len && have - len <= slack) {
		*got = have;
		return p;
	}
	if (p) {
		q = mremap(p, have, len, MREMAP_MAYMOVE);
		if (q == MAP_FAILED) {
			munmap(p, have);
			p = NULL;
		} else {
			p = q;
			if (len > have)
				populate((char *)p + have, len - have);
		}
	}
	if (!p) {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
	}
	*got = len;
	return p;
}

static void pages_put(void *p, size_t len)
{
	pthread_mutex_lock(&pool_lock);
	if (pool_n < POOL_REGIONS && pool_bytes + len <= POOL_BYTES) {
		pool[pool_n].p = p;
		pool[pool_n++].len = len;
		pool_bytes += len;
		p = NULL;
	}
	pthread_mutex_unlock(&pool_lock);
	if (p)
		munmap(p, len);
}

static void data_free(amber_buf *b)
{
	if (b->pages & AMBER_BUF_PAGES_MAPPED)
		pages_put(b->data, b->cap);
	else
		free(b->data);
	b->pages &= ~AMBER_BUF_PAGES_MAPPED;
}

/* Move b's data to cap bytes of mapped memory. */
static int pages_grow(amber_buf *b, size_t cap)
{
	uint8_t *p;

	if (!(p = pages_get(page_round(cap), &cap)))
		return amber_fail(AMBER_ERROR, "out of memory (%zu bytes)", cap);
	if (b->len)
		memcpy(p, b->data, b->len);
	data_free(b);
	b->data = p;
	b->cap = cap;
	b->pages |= AMBER_BUF_PAGES_MAPPED;
	return 0;
}

int amber_buf_reserve(amber_buf *b, size_t extra)
{
	size_t max = b->max ? b->max : AMBER_BUF_DEFAULT_MAX;
	size_t need, cap;
	uint8_t *p;

	if (extra > max || b->len > max - extra)
		return amber_fail(AMBER_ERROR, "buffer would exceed its limit of %zu bytes", max);
	need = b->len + extra;
	if (need <= b->cap)
		return 0;
	/* double, but a large first reservation (a decoded chunk) gets exactly
	 * what it asks for: cached buffers would otherwise hold up to twice
	 * their size */
	cap = b->cap > max / 2 ? max : b->cap * 2;
	if (cap < 256)
		cap = 256;
	if (cap < need)
		cap = need;
	if ((b->pages & AMBER_BUF_PAGES_OK) && cap >= AMBER_BUF_PAGES_MIN)
		return pages_grow(b, cap);
	p = realloc(b->data, cap);
	if (!p)
		return amber_fail(AMBER_ERROR, "out of memory (%zu bytes)", cap);
	b->data = p;
	b->cap = cap;
	return 0;
}

int amber_buf_put(amber_buf *b, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	if (amber_buf_reserve(b, len) < 0)
		return AMBER_ERROR;
	memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

static int put_le(amber_buf *b, uint64_t v, size_t n)
{
	uint8_t tmp[8];

	for (size_t i = 0; i < n; i++)
		tmp[i] = (uint8_t)(v >> (8 * i));
	return amber_buf_put(b, tmp, n);
}

int amber_buf_put_u8(amber_buf *b, uint8_t v)
{
	return put_le(b, v, 1);
}

int amber_buf_put_u16(amber_buf *b, uint16_t v)
{
	return put_le(b, v, 2);
}

int amber_buf_put_u32(amber_buf *b, uint32_t v)
{
	return put_le(b, v, 4);
}

int amber_buf_put_u64(amber_buf *b, uint64_t v)
{
	return put_le(b, v, 8);
}

void amber_buf_reset(amber_buf *b)
{
	b->len = 0;
}

void amber_buf_dispose(amber_buf *b)
{
	data_free(b);
	b->data = NULL;
	b->len = b->cap = 0;
}

void amber_buf_free(void *b)
{
	if (!b)
		return;
	amber_buf_dispose(b);
	free(b);
}

void amber_rd_init(amber_rd *r, const void *data, size_t len)
{
	r->p = data;
	r->left = len;
	r->bad = 0;
}

int amber_rd_bytes(amber_rd *r, const uint8_t **out, size_t len)
{
	if (r->bad || len > r->left) {
		r->bad = 1;
		*out = NULL;
		return -1;
	}
	*out = r->p;
	r->p += len;
	r->left -= len;
	return 0;
}

static int get_le(amber_rd *r, uint64_t *v, size_t n)
{
	const uint8_t *p;

	*v = 0;
	if (amber_rd_bytes(r, &p, n) < 0)
		return -1;
#if __BYTE_ORDER == __LITTLE_ENDIAN
	memcpy(v, p, n);        /* one load: a listing decodes ten fields an entry */
#else
	for (size_t i = 0; i < n; i++)
		*v |= (uint64_t)p[i] << (8 * i);
#endif
	return 0;
}

int amber_rd_u8(amber_rd *r, uint8_t *v)
{
	uint64_t x;
	int rc = get_le(r, &x, 1);

	*v = (uint8_t)x;
	return rc;
}

int amber_rd_u16(amber_rd *r, uint16_t *v)
{
	uint64_t x;
	int rc = get_le(r, &x, 2);

	*v = (uint16_t)x;
	return rc;
}

int amber_rd_u32(amber_rd *r, uint32_t *v)
{
	uint64_t x;
	int rc = get_le(r, &x, 4);

	*v = (uint32_t)x;
	return rc;
}

int amber_rd_u64(amber_rd *r, uint64_t *v)
{
	return get_le(r, v, 8);
}

/* ---- base64 ---------------------------------------------------------------------------- */

/* The value of each character of the alphabet; 255 (bit 7 set) for the rest,
 * '=' included. */
static const uint8_t b64_value[256] = {
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 62, 255, 255, 255, 63,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 255, 255, 255, 255, 255, 255,
	255, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 255, 255, 255, 255, 255,
	255, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};

/* Group of 4 characters at s to 3 bytes at out. @return -1 if one is not in the alphabet. */
static int b64_group(uint8_t *out, const unsigned char *s)
{
	uint32_t a = b64_value[s[0]], b = b64_value[s[1]], c = b64_value[s[2]],
		 d = b64_value[s[3]];

	if ((a | b | c | d) & 0x80)
		return -1;
	a = a << 18 | b << 12 | c << 6 | d;
	out[0] = (uint8_t)(a >> 16);
	out[1] = (uint8_t)(a >> 8);
	out[2] = (uint8_t)a;
	return 0;
}

int amber_base64_decode(uint8_t *out, size_t *out_len, const char *in, size_t len)
{
	const unsigned char *s = (const unsigned char *)in;
	unsigned char last[4];
	uint8_t tail[3];
	size_t i = 0, n = 0, pad;

	if (len % 4)
		return -1;
	if (len == 0) {
		*out_len = 0;
		return 0;
	}
	for (; i + 4 < len; i += 4, n += 3)
		if (b64_group(out + n, s + i) < 0)
			return -1;
	memcpy(last, s + len - 4, 4);
	pad = last[3] != '=' ? 0 : last[2] != '=' ? 1 : 2;
	memset(last + 4 - pad, 'A', pad);       /* 'A' is 0: the pads carry no bits */
	if (b64_group(tail, last) < 0)
		return -1;
	/* the bits below the last byte must be zero, or two spellings would
	 * give the same bytes (sodium refuses them too) */
	if ((pad == 2 && tail[1]) || (pad >= 1 && tail[2]))
		return -1;
	memcpy(out + n, tail, 3 - pad);
	*out_len = n + 3 - pad;
	return 0;
}
