/*
 * Growable byte buffer with a ceiling (after curl's dynbuf): every buffer
 * filled from archive data has a maximum size, so hostile input cannot make
 * us allocate without bound.
 */
#ifndef AMBER_BUF_H
#define AMBER_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct amber_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t max;   /* ceiling; 0 = AMBER_BUF_DEFAULT_MAX */
	unsigned pages; /* AMBER_BUF_PAGES_* */
} amber_buf;

#define AMBER_BUF_DEFAULT_MAX ((size_t)64 << 20)
#define AMBER_BUF_INIT {NULL, 0, 0, 0, 0}

/** Set up an empty buffer with ceiling `max` (0 = default). */
void amber_buf_init(amber_buf *b, size_t max);

/*
 * A buffer for a decoded chunk or a pack object read whole: sized once,
 * freed only with amber_buf_dispose()/amber_buf_free() (never take its data
 * and free() it).  From AMBER_BUF_PAGES_MIN bytes its memory is mapped
 * pages, faulted in all at once and, when freed, kept for the next such
 * buffer (a few, process-wide): a page fault costs microseconds on a
 * virtual machine, and a mount decodes hundreds of MiB into fresh memory.
 * Under AddressSanitizer it is plain heap memory, so overruns are caught.
 */
void amber_buf_init_pages(amber_buf *b, size_t max);
#define AMBER_BUF_PAGES_MIN ((size_t)256 << 10)
#define AMBER_BUF_PAGES_OK 1u     /* may be mapped */
#define AMBER_BUF_PAGES_MAPPED 2u /* data is mapped now */
/** What the reuse pool holds now, and the most it keeps (bytes). */
void amber_buf_pages_pooled(size_t *bytes, size_t *max);
/** Make room for `extra` more bytes; AMBER_ERROR past the ceiling. */
int amber_buf_reserve(amber_buf *b, size_t extra);
/** Append bytes. */
int amber_buf_put(amber_buf *b, const void *data, size_t len);
/** Append little-endian integers. */
int amber_buf_put_u8(amber_buf *b, uint8_t v);
int amber_buf_put_u16(amber_buf *b, uint16_t v);
int amber_buf_put_u32(amber_buf *b, uint32_t v);
int amber_buf_put_u64(amber_buf *b, uint64_t v);
/** Forget the contents, keep the allocation. */
void amber_buf_reset(amber_buf *b);
/** Free the allocation; the struct may be reused after amber_buf_init. */
void amber_buf_dispose(amber_buf *b);
/** Dispose and free a heap-allocated amber_buf (a destructor for caches). */
void amber_buf_free(void *b);

/*
 * Bounds-checked little-endian reader over untrusted bytes.  Every get
 * fails (returns -1 and sets `bad`) instead of reading past the end; check
 * `bad` once at the end of a parse.
 */
typedef struct amber_rd {
	const uint8_t *p;
	size_t left;
	int bad;
} amber_rd;

void amber_rd_init(amber_rd *r, const void *data, size_t len);
int amber_rd_u8(amber_rd *r, uint8_t *v);
int amber_rd_u16(amber_rd *r, uint16_t *v);
int amber_rd_u32(amber_rd *r, uint32_t *v);
int amber_rd_u64(amber_rd *r, uint64_t *v);
/** Point *out at the next `len` bytes (no copy). */
int amber_rd_bytes(amber_rd *r, const uint8_t **out, size_t len);

/**
 * Decode base64 as sodium_bin2base64(..., sodium_base64_VARIANT_ORIGINAL)
 * writes it, and accept what sodium_base642bin accepts in that variant with
 * nothing to ignore: the + and / alphabet, no whitespace, padded with = to
 * a multiple of 4, unused bits zero (but not bytes above 127, which
 * libsodium 1.0.18 reads as '/').  A table lookup a character: libsodium's
 * decoder is constant-time, made for secrets, and much slower, which
 * at/<T> paid on every record its search reads.  For data that is not
 * secret (a record is ciphertext).
 * @param out room for len / 4 * 3 bytes
 * @return 0 with *out_len set, or -1 (nothing to say: callers name the thing).
 */
int amber_base64_decode(uint8_t *out, size_t *out_len, const char *in, size_t len);

#endif
