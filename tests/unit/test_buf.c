/* Growable buffers with a ceiling, the bounds-checked reader, and base64. */
#include <criterion/criterion.h>

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "buf.h"
#include "error.h"

/* Assert that a libamber call succeeds, printing its error message if not. */
#define OK(call)                                                                       \
	do {                                                                           \
		int rc_ = (call);                                                      \
		cr_assert_eq(rc_, 0, "%s -> %d: %s", #call, rc_, amber_error_last());  \
	} while (0)

/* Decode buffers are plain heap memory under AddressSanitizer (buf.h). */
#if defined(__SANITIZE_ADDRESS__)
#define PAGES 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PAGES 0
#endif
#endif
#ifndef PAGES
#define PAGES 1
#endif

static long minor_faults(void)
{
	struct rusage u;

	cr_assert_eq(getrusage(RUSAGE_SELF, &u), 0);
	return u.ru_minflt;
}

Test(buf, ceiling_is_refused)
{
	amber_buf b;
	uint8_t block[16] = {0};

	amber_buf_init(&b, 16);
	OK(amber_buf_put(&b, block, 10));
	OK(amber_buf_put(&b, block, 6));
	cr_assert_eq(amber_buf_put_u8(&b, 1), AMBER_ERROR);
	cr_assert_neq(strstr(amber_error_last(), "limit"), NULL, "message: %s", amber_error_last());
	cr_assert_eq(b.len, 16, "a refused put changed the length");
	amber_buf_dispose(&b);
}

Test(buf, huge_reserve_does_not_overflow)
{
	amber_buf b;

	amber_buf_init(&b, 0);
	OK(amber_buf_put(&b, "x", 1));
	cr_assert_eq(amber_buf_reserve(&b, SIZE_MAX), AMBER_ERROR);
	cr_assert_eq(amber_buf_reserve(&b, AMBER_BUF_DEFAULT_MAX), AMBER_ERROR);
	OK(amber_buf_reserve(&b, AMBER_BUF_DEFAULT_MAX - 1));
	amber_buf_dispose(&b);
}

Test(buf, zero_initialised_buffer_uses_default_ceiling)
{
	amber_buf b = AMBER_BUF_INIT;

	OK(amber_buf_put(&b, "abc", 3));
	OK(amber_buf_put(&b, "", 0));
	cr_assert_eq(b.len, 3);
	cr_assert_eq(amber_buf_reserve(&b, AMBER_BUF_DEFAULT_MAX), AMBER_ERROR);
	amber_buf_reset(&b);
	cr_assert_eq(b.len, 0);
	amber_buf_dispose(&b);
	cr_assert_null(b.data);
}

Test(buf, integers_are_little_endian_and_read_back)
{
	amber_buf b = AMBER_BUF_INIT;
	amber_rd r;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;

	OK(amber_buf_put_u8(&b, 0xab));
	OK(amber_buf_put_u16(&b, 0x1234));
	OK(amber_buf_put_u32(&b, 0xdeadbeef));
	OK(amber_buf_put_u64(&b, 0x0102030405060708ull));
	cr_assert_eq(b.len, 15);
	cr_assert_eq(memcmp(b.data + 1, "\x34\x12\xef\xbe\xad\xde\x08\x07", 8), 0);
	amber_rd_init(&r, b.data, b.len);
	amber_rd_u8(&r, &u8);
	amber_rd_u16(&r, &u16);
	amber_rd_u32(&r, &u32);
	amber_rd_u64(&r, &u64);
	cr_assert_eq(r.bad, 0);
	cr_assert_eq(r.left, 0);
	cr_assert(u8 == 0xab && u16 == 0x1234 && u32 == 0xdeadbeef);
	cr_assert_eq(u64, 0x0102030405060708ull);
	amber_buf_dispose(&b);
}

Test(buf, reader_refuses_to_run_past_the_end)
{
	static const uint8_t d[3] = {1, 2, 3};
	amber_rd r;
	uint32_t u32 = 99;
	uint16_t u16;
	const uint8_t *p = d;

	amber_rd_init(&r, d, sizeof(d));
	cr_assert_eq(amber_rd_u32(&r, &u32), -1);
	cr_assert_eq(r.bad, 1);
	cr_assert_eq(u32, 0, "a failed read must not leave stale data");
	/* Once bad, even a read that would fit fails: one check at the end suffices. */
	cr_assert_eq(amber_rd_u16(&r, &u16), -1);
	cr_assert_eq(amber_rd_bytes(&r, &p, 0), -1);
	cr_assert_null(p);
}

Test(buf, reader_bytes_are_bounded)
{
	static const uint8_t d[4] = {1, 2, 3, 4};
	amber_rd r;
	const uint8_t *p;

	amber_rd_init(&r, d, sizeof(d));
	cr_assert_eq(amber_rd_bytes(&r, &p, 3), 0);
	cr_assert_eq(p, d);
	cr_assert_eq(r.left, 1);
	cr_assert_eq(amber_rd_bytes(&r, &p, SIZE_MAX), -1);
	cr_assert_eq(r.bad, 1);
	amber_rd_init(&r, d, sizeof(d));
	cr_assert_eq(amber_rd_bytes(&r, &p, 5), -1);
	amber_rd_init(&r, d, 0);
	cr_assert_eq(amber_rd_bytes(&r, &p, 0), 0);
	cr_assert_eq(r.bad, 0);
}

/* Decode s (n chars) both ways: amber_base64_decode must accept exactly what
 * libsodium accepts, and give the same bytes; except that libsodium 1.0.18
 * reads every byte above 127 as '/' (a signed char in its constant-time
 * compare), which no encoder writes, and amber refuses. */
static void same_as_sodium(const char *s, size_t n)
{
	uint8_t want[128], got[128];
	size_t wl = 0, gl = 0;
	int w, g, high = 0;

	cr_assert(n < 160);
	for (size_t i = 0; i < n; i++)
		high |= (unsigned char)s[i] > 127;
	w = high ? -1 : sodium_base642bin(want, sizeof(want), s, n, NULL, &wl, NULL,
					  sodium_base64_VARIANT_ORIGINAL);
	g = amber_base64_decode(got, &gl, s, n);
	cr_assert_eq(g, w, "'%.*s': amber says %d, sodium %d", (int)n, s, g, w);
	if (w == 0) {
		cr_assert_eq(gl, wl, "'%.*s': %zu bytes, not %zu", (int)n, s, gl, wl);
		cr_assert(memcmp(got, want, wl) == 0, "'%.*s': other bytes", (int)n, s);
	}
}

Test(buf, base64_decodes_what_sodium_encodes)
{
	uint8_t bin[100];
	char b64[160];

	randombytes_buf(bin, sizeof(bin));
	for (size_t len = 0; len <= sizeof(bin); len++) {
		sodium_bin2base64(b64, sizeof(b64), bin, len, sodium_base64_VARIANT_ORIGINAL);
		same_as_sodium(b64, strlen(b64));
	}
	bin[0] = 0xff, bin[1] = 0xfb, bin[2] = 0xef;    /* the alphabet's last characters */
	sodium_bin2base64(b64, sizeof(b64), bin, 3, sodium_base64_VARIANT_ORIGINAL);
	cr_assert_str_eq(b64, "//vv");
	same_as_sodium(b64, 4);
}

/* Every character replaced by each byte, every prefix, every suffix of valid
 * encodings that end in 0, 1 and 2 pads: the same verdict as sodium's. */
Test(buf, base64_refuses_what_sodium_refuses)
{
	static const uint8_t bin[] = {0x00, 0x10, 0x83, 0xff, 0x7e, 0x21, 0x9c};
	char b64[32], bad[32];

	for (size_t len = 5; len <= 7; len++) {
		size_t n;

		sodium_bin2base64(b64, sizeof(b64), bin, len, sodium_base64_VARIANT_ORIGINAL);
		n = strlen(b64);
		for (size_t i = 0; i < n; i++)
			for (int c = 0; c < 256; c++) {
				memcpy(bad, b64, n);
				bad[i] = (char)c;
				same_as_sodium(bad, n);
			}
		for (size_t k = 0; k <= n; k++) {
			same_as_sodium(b64, k);
			same_as_sodium(b64 + k, n - k);
		}
	}
	same_as_sodium("QQ", 2);    /* unpadded */
	same_as_sodium("QR==", 4);  /* unused bits set */
	same_as_sodium("QUF=", 4);
	same_as_sodium("Q===", 4);
	same_as_sodium("====", 4);
	same_as_sodium("QQ==QUFB", 8);  /* pad in the middle */
	same_as_sodium("QU FB", 5);
}

/*
 * A decode buffer freed goes to a small pool, and the next one takes its
 * pages, resized to what it needs: writing all of it faults nothing in.
 * (Each fresh page would be a fault: 512 for 2 MiB.)
 */
Test(buf, a_freed_decode_buffer_lends_its_pages_to_the_next)
{
	amber_buf a, b;
	size_t pooled, max;

	amber_buf_init_pages(&a, 4 << 20);
	OK(amber_buf_reserve(&a, 2 << 20));
	memset(a.data, 1, 2 << 20);
	a.len = 2 << 20;
	amber_buf_dispose(&a);
	amber_buf_pages_pooled(&pooled, &max);
	cr_assert_eq(max, 16 << 20);
	if (!PAGES) {
		cr_assert_eq(pooled, 0, "heap buffers (AddressSanitizer) are not pooled");
		return;
	}
	cr_assert_geq(pooled, (size_t)2 << 20, "the freed buffer was not kept: %zu", pooled);

	amber_buf_init_pages(&b, 4 << 20);
	long before = minor_faults();
	OK(amber_buf_reserve(&b, (2 << 20) - 40000));
	memset(b.data, 2, b.cap);
	long faults = minor_faults() - before;
	cr_assert_lt(faults, 16, "a reused 2 MiB buffer took %ld page faults", faults);
	amber_buf_pages_pooled(&pooled, &max);
	cr_assert_eq(pooled, 0, "the pool still counts the buffer it lent: %zu", pooled);
	amber_buf_dispose(&b);
}

/* Chunks differ in size: a pooled buffer up to a quarter larger is lent as
 * it is (no mremap: shrinking flushes the TLB, growing faults fresh pages),
 * and a fitting one is taken before a more recent one that would need it. */
Test(buf, a_pooled_buffer_a_little_larger_is_lent_whole)
{
	amber_buf a, s, b;
	uint8_t *big;

	if (!PAGES)
		return; /* heap buffers (AddressSanitizer) are not pooled */
	amber_buf_init_pages(&a, 4 << 20);
	amber_buf_init_pages(&s, 4 << 20);
	OK(amber_buf_reserve(&a, 2 << 20));
	OK(amber_buf_reserve(&s, 512 << 10));
	big = a.data;
	amber_buf_dispose(&a);
	amber_buf_dispose(&s); /* the most recent in the pool, and too small */

	amber_buf_init_pages(&b, 4 << 20);
	OK(amber_buf_reserve(&b, (1700 << 10) + 123));
	cr_assert_eq(b.data, big, "the 2 MiB buffer was not the one lent");
	cr_assert_eq(b.cap, (size_t)2 << 20, "it was resized to %zu bytes", b.cap);
	memset(b.data, 3, b.cap);
	amber_buf_dispose(&b);

	amber_buf_init_pages(&b, 4 << 20); /* 2 MiB is too much for 1 MiB: resized */
	OK(amber_buf_reserve(&b, 1 << 20));
	cr_assert_eq(b.cap, (size_t)1 << 20);
	amber_buf_dispose(&b);
}

/* A buffer that grows past the threshold moves to pages with its bytes. */
Test(buf, a_decode_buffer_keeps_its_bytes_as_it_grows_onto_pages)
{
	amber_buf b;
	uint8_t chunk[4096];

	amber_buf_init_pages(&b, 8 << 20);
	for (size_t i = 0; i < (3u << 20) / sizeof(chunk); i++) {
		memset(chunk, (int)(i & 0xff), sizeof(chunk));
		OK(amber_buf_put(&b, chunk, sizeof(chunk)));
	}
	cr_assert_eq(b.len, (size_t)3 << 20);
	cr_assert_eq(!!(b.pages & AMBER_BUF_PAGES_MAPPED), PAGES);
	for (size_t i = 0; i < b.len; i += sizeof(chunk))
		cr_assert_eq(b.data[i + 17], (uint8_t)((i / sizeof(chunk)) & 0xff),
			     "byte %zu lost in a move", i + 17);
	amber_buf_dispose(&b);
	cr_assert_null(b.data);
}
