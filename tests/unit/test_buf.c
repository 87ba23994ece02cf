/* Growable buffers with a ceiling, and the bounds-checked reader. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "error.h"

/* Assert that a libamber call succeeds, printing its error message if not. */
#define OK(call)                                                                       \
	do {                                                                           \
		int rc_ = (call);                                                      \
		cr_assert_eq(rc_, 0, "%s -> %d: %s", #call, rc_, amber_error_last());  \
	} while (0)

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
