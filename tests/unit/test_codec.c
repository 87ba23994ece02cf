/* Object frames: round trips, determinism, and refusal of every damaged frame. */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zstd.h>

#include "codec.h"
#include "error.h"

/* Assert that a libamber call succeeds, printing its error message if not. */
#define OK(call)                                                                       \
	do {                                                                           \
		int rc_ = (call);                                                      \
		cr_assert_eq(rc_, 0, "%s -> %d: %s", #call, rc_, amber_error_last());  \
	} while (0)

#define MAX_PLAIN ((size_t)4 << 20)
#define LEVEL 3

static amber_keys *key1, *key2;

static void setup(void)
{
	cr_assert_geq(sodium_init(), 0);
	OK(amber_keys_generate(&key1));
	OK(amber_keys_generate(&key2));
}

static void teardown(void)
{
	amber_keys_free(key1);
	amber_keys_free(key2);
}

TestSuite(codec, .init = setup, .fini = teardown);

static uint8_t *random_bytes(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);

	cr_assert_not_null(p);
	randombytes_buf(p, n);
	return p;
}

/* Text-like data that zstd shrinks a lot. */
static uint8_t *compressible_bytes(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);
	static const char line[] = "BID 101.25 x 300 ASK 101.27 x 120 ts=1732100000123456789\n";

	cr_assert_not_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)line[i % (sizeof(line) - 1)];
	return p;
}

static void encode(amber_buf *frame, uint8_t mac[AMBER_MAC_BYTES], const amber_keys *k, int type,
		   const void *data, size_t len)
{
	amber_buf_init(frame, 0);
	OK(amber_codec_encode(frame, mac, k, type, data, len, LEVEL));
}

/* Encode, decode with the mac as the parent would, compare. */
static void round_trip(const amber_keys *k, const uint8_t *data, size_t len)
{
	amber_buf frame, out;
	uint8_t mac[AMBER_MAC_BYTES];

	encode(&frame, mac, k, AMBER_OBJ_CHUNK, data, len);
	amber_buf_init(&out, 0);
	OK(amber_codec_decode(&out, k, AMBER_OBJ_CHUNK, mac, frame.data, frame.len, MAX_PLAIN));
	cr_assert_eq(out.len, len);
	if (len)
		cr_assert_eq(memcmp(out.data, data, len), 0, "payload differs after round trip");

	/* in place: the same payload from a copy of the frame, whose decrypted
	   body is wiped after */
	uint8_t *copy = malloc(frame.len);

	cr_assert_not_null(copy);
	memcpy(copy, frame.data, frame.len);
	amber_buf_reset(&out);
	OK(amber_codec_decode_in_place(&out, k, AMBER_OBJ_CHUNK, mac, copy, frame.len,
				       MAX_PLAIN));
	cr_assert_eq(out.len, len);
	if (len)
		cr_assert_eq(memcmp(out.data, data, len), 0, "payload differs decoded in place");
	for (size_t i = AMBER_FRAME_HDR; k && i + 16 < frame.len; i++)
		cr_assert_eq(copy[i], 0, "byte %zu of %zu of the body left after decoding in place",
			     i, frame.len);
	free(copy);
	amber_buf_dispose(&frame);
	amber_buf_dispose(&out);
}

static void round_trip_both(const uint8_t *data, size_t len)
{
	round_trip(key1, data, len);
	round_trip(NULL, data, len);
}

Test(codec, empty_payload_round_trips)
{
	round_trip_both((const uint8_t *)"", 0);
}

Test(codec, one_byte_round_trips)
{
	round_trip_both((const uint8_t *)"x", 1);
}

Test(codec, compressible_payload_round_trips_and_shrinks)
{
	size_t n = 256 << 10;
	uint8_t *d = compressible_bytes(n);
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];

	round_trip_both(d, n);
	encode(&frame, mac, key1, AMBER_OBJ_CHUNK, d, n);
	cr_assert_lt(frame.len, n / 4, "compressible data was not compressed (%zu bytes)",
		     frame.len);
	amber_buf_dispose(&frame);
	free(d);
}

Test(codec, incompressible_payload_is_stored_raw)
{
	size_t n = 100000;
	uint8_t *d = random_bytes(n);
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];

	round_trip_both(d, n);
	encode(&frame, mac, key1, AMBER_OBJ_CHUNK, d, n);
	cr_assert_eq(frame.len, AMBER_FRAME_HDR + AMBER_INNER_HDR + n + 16);
	amber_buf_dispose(&frame);
	encode(&frame, mac, NULL, AMBER_OBJ_CHUNK, d, n);
	cr_assert_eq(frame.len, AMBER_FRAME_HDR + AMBER_INNER_HDR + n);
	cr_assert_eq(memcmp(frame.data + AMBER_FRAME_HDR + AMBER_INNER_HDR, d, n), 0);
	amber_buf_dispose(&frame);
	free(d);
}

Test(codec, two_mib_payloads_round_trip)
{
	size_t n = 2 << 20;
	uint8_t *r = random_bytes(n), *c = compressible_bytes(n);

	round_trip_both(r, n);
	round_trip_both(c, n);
	free(r);
	free(c);
}

Test(codec, level_zero_never_compresses)
{
	size_t n = 4096;
	uint8_t *d = compressible_bytes(n);
	amber_buf frame = AMBER_BUF_INIT, out = AMBER_BUF_INIT;
	uint8_t mac[AMBER_MAC_BYTES];

	OK(amber_codec_encode(&frame, mac, NULL, AMBER_OBJ_CHUNK, d, n, 0));
	cr_assert_eq(frame.len, AMBER_FRAME_HDR + AMBER_INNER_HDR + n);
	OK(amber_codec_decode(&out, NULL, AMBER_OBJ_CHUNK, mac, frame.data, frame.len, n));
	cr_assert_eq(out.len, n);
	amber_buf_dispose(&frame);
	amber_buf_dispose(&out);
	free(d);
}

Test(codec, decode_appends_to_existing_buffer)
{
	amber_buf frame, out = AMBER_BUF_INIT;
	uint8_t mac[AMBER_MAC_BYTES];
	uint8_t *d = compressible_bytes(5000);

	encode(&frame, mac, key1, AMBER_OBJ_MANIFEST, d, 5000);
	OK(amber_buf_put(&out, "head", 4));
	OK(amber_codec_decode(&out, key1, AMBER_OBJ_MANIFEST, mac, frame.data, frame.len, 5000));
	cr_assert_eq(out.len, 5004);
	cr_assert_eq(memcmp(out.data, "head", 4), 0);
	cr_assert_eq(memcmp(out.data + 4, d, 5000), 0);
	amber_buf_dispose(&frame);
	amber_buf_dispose(&out);
	free(d);
}

static void assert_deterministic(const amber_keys *k, const uint8_t *d, size_t n)
{
	amber_buf a, b;
	uint8_t mac_a[AMBER_MAC_BYTES], mac_b[AMBER_MAC_BYTES];

	encode(&a, mac_a, k, AMBER_OBJ_CHUNK, d, n);
	encode(&b, mac_b, k, AMBER_OBJ_CHUNK, d, n);
	cr_assert_eq(a.len, b.len);
	cr_assert_eq(memcmp(a.data, b.data, a.len), 0, "same input gave different frames");
	cr_assert_eq(memcmp(mac_a, mac_b, AMBER_MAC_BYTES), 0);
	cr_assert_eq(memcmp(mac_a, a.data + 5, AMBER_MAC_BYTES), 0, "mac_out is not the frame's mac");
	amber_buf_dispose(&a);
	amber_buf_dispose(&b);
}

Test(codec, identical_input_gives_identical_frames)
{
	uint8_t *c = compressible_bytes(70000), *r = random_bytes(70000);

	assert_deterministic(key1, c, 70000);
	assert_deterministic(key1, r, 70000);
	assert_deterministic(NULL, c, 70000);
	assert_deterministic(NULL, r, 70000);
	free(c);
	free(r);
}

Test(codec, different_keys_or_types_give_different_macs)
{
	uint8_t m1[AMBER_MAC_BYTES], m2[AMBER_MAC_BYTES], m3[AMBER_MAC_BYTES];
	amber_buf a, b, c;

	encode(&a, m1, key1, AMBER_OBJ_CHUNK, "same bytes", 10);
	encode(&b, m2, key2, AMBER_OBJ_CHUNK, "same bytes", 10);
	encode(&c, m3, key1, AMBER_OBJ_MANIFEST, "same bytes", 10);
	cr_assert_neq(memcmp(m1, m2, AMBER_MAC_BYTES), 0);
	cr_assert_neq(memcmp(m1, m3, AMBER_MAC_BYTES), 0);
	amber_buf_dispose(&a);
	amber_buf_dispose(&b);
	amber_buf_dispose(&c);
}

static int decode_rc(const amber_keys *k, int type, const uint8_t *mac, const uint8_t *f,
		     size_t len, size_t max_plain)
{
	amber_buf out = AMBER_BUF_INIT;
	int rc = amber_codec_decode(&out, k, type, mac, f, len, max_plain);

	cr_assert(rc != 0 || out.len <= max_plain);
	if (rc != 0)
		cr_assert_eq(out.len, 0, "a failed decode appended %zu bytes", out.len);
	amber_buf_dispose(&out);
	return rc;
}

/* Flip each byte of a frame in turn, with and without the expected mac. */
static void assert_every_flip_rejected(const amber_keys *k, const uint8_t *d, size_t n)
{
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];
	int rc;

	encode(&frame, mac, k, AMBER_OBJ_CHUNK, d, n);
	for (size_t i = 0; i < frame.len; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			frame.data[i] ^= (uint8_t)(1u << bit);
			rc = decode_rc(k, AMBER_OBJ_CHUNK, NULL, frame.data, frame.len, MAX_PLAIN);
			cr_assert(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT,
				  "flip of bit %d at %zu/%zu: rc %d", bit, i, frame.len, rc);
			rc = decode_rc(k, AMBER_OBJ_CHUNK, mac, frame.data, frame.len, MAX_PLAIN);
			cr_assert(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT,
				  "flip of bit %d at %zu/%zu with mac: rc %d", bit, i, frame.len, rc);
			frame.data[i] ^= (uint8_t)(1u << bit);
		}
	}
	OK(decode_rc(k, AMBER_OBJ_CHUNK, mac, frame.data, frame.len, MAX_PLAIN));
	amber_buf_dispose(&frame);
}

Test(codec, flipped_byte_is_rejected)
{
	uint8_t *c = compressible_bytes(600), *r = random_bytes(64);

	assert_every_flip_rejected(key1, c, 600);
	assert_every_flip_rejected(key1, r, 64);
	assert_every_flip_rejected(NULL, c, 600);
	assert_every_flip_rejected(NULL, r, 64);
	assert_every_flip_rejected(key1, r, 0);
	assert_every_flip_rejected(NULL, r, 0);
	free(c);
	free(r);
}

/* Decoding in place refuses every flip as the copying decode does, and
 * appends nothing. */
Test(codec, flipped_byte_is_rejected_in_place)
{
	uint8_t *c = compressible_bytes(600), *copy;
	uint8_t mac[AMBER_MAC_BYTES];
	amber_buf frame, out;

	encode(&frame, mac, key1, AMBER_OBJ_CHUNK, c, 600);
	copy = malloc(frame.len);
	cr_assert_not_null(copy);
	amber_buf_init(&out, 0);
	for (size_t i = 0; i < frame.len; i++) {
		int rc;

		memcpy(copy, frame.data, frame.len);
		copy[i] ^= 0x01;
		rc = amber_codec_decode_in_place(&out, key1, AMBER_OBJ_CHUNK, mac, copy, frame.len,
						 MAX_PLAIN);
		cr_assert(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT, "flip at %zu: rc %d", i, rc);
		cr_assert_eq(out.len, 0, "flip at %zu: %zu bytes appended", i, out.len);
	}
	free(copy);
	free(c);
	amber_buf_dispose(&frame);
	amber_buf_dispose(&out);
}

static void assert_every_truncation_rejected(const amber_keys *k, const uint8_t *d, size_t n)
{
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];
	int rc;

	encode(&frame, mac, k, AMBER_OBJ_CHUNK, d, n);
	for (size_t len = 0; len < frame.len; len++) {
		rc = decode_rc(k, AMBER_OBJ_CHUNK, NULL, frame.data, len, MAX_PLAIN);
		cr_assert(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT, "truncated to %zu: rc %d",
			  len, rc);
		rc = decode_rc(k, AMBER_OBJ_CHUNK, mac, frame.data, len, MAX_PLAIN);
		cr_assert(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT,
			  "truncated to %zu with mac: rc %d", len, rc);
	}
	amber_buf_dispose(&frame);
}

Test(codec, truncated_frame_is_rejected_at_every_length)
{
	uint8_t *c = compressible_bytes(600), *r = random_bytes(64);

	assert_every_truncation_rejected(key1, c, 600);
	assert_every_truncation_rejected(NULL, c, 600);
	assert_every_truncation_rejected(key1, r, 64);
	assert_every_truncation_rejected(NULL, r, 64);
	free(c);
	free(r);
}

Test(codec, trailing_bytes_are_rejected)
{
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];
	int rc;

	for (int enc = 0; enc < 2; enc++) {
		encode(&frame, mac, enc ? key1 : NULL, AMBER_OBJ_CHUNK, "payload", 7);
		OK(amber_buf_put_u8(&frame, 0));
		rc = decode_rc(enc ? key1 : NULL, AMBER_OBJ_CHUNK, mac, frame.data, frame.len,
			       MAX_PLAIN);
		cr_assert(rc == AMBER_EAUTH || rc == AMBER_ECORRUPT, "rc %d", rc);
		amber_buf_dispose(&frame);
	}
}

Test(codec, payload_over_max_plain_is_refused)
{
	size_t n = 100000;
	uint8_t *c = compressible_bytes(n), *r = random_bytes(n);
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];
	const uint8_t *inputs[] = {c, r};

	for (int i = 0; i < 4; i++) {
		const amber_keys *k = i & 1 ? key1 : NULL;

		encode(&frame, mac, k, AMBER_OBJ_CHUNK, inputs[i >> 1], n);
		cr_assert_eq(decode_rc(k, AMBER_OBJ_CHUNK, mac, frame.data, frame.len, n - 1),
			     AMBER_ECORRUPT, "%s", amber_error_last());
		cr_assert_eq(decode_rc(k, AMBER_OBJ_CHUNK, mac, frame.data, frame.len, n), 0,
			     "%s", amber_error_last());
		amber_buf_dispose(&frame);
	}
	free(c);
	free(r);
}

/*
 * Build a 'P' frame by hand around an arbitrary inner (plain frames carry
 * an unkeyed checksum, so a test can forge them; a hostile writer can too).
 */
static void forge_plain(amber_buf *f, int type, int comp, uint32_t plain_len, const void *body,
			size_t body_len)
{
	crypto_generichash_state st;

	amber_buf_init(f, 0);
	OK(amber_buf_put(f, "amb\x01P", 5));
	OK(amber_buf_reserve(f, AMBER_MAC_BYTES));
	f->len += AMBER_MAC_BYTES;
	OK(amber_buf_put_u8(f, (uint8_t)type));
	OK(amber_buf_put_u8(f, (uint8_t)comp));
	OK(amber_buf_put_u32(f, plain_len));
	OK(amber_buf_put(f, body, body_len));
	crypto_generichash_init(&st, NULL, 0, AMBER_MAC_BYTES);
	crypto_generichash_update(&st, f->data, 5);
	crypto_generichash_update(&st, f->data + AMBER_FRAME_HDR, f->len - AMBER_FRAME_HDR);
	crypto_generichash_final(&st, f->data + 5, AMBER_MAC_BYTES);
}

static size_t zstd_frame(uint8_t **z, size_t n, int checksum)
{
	uint8_t *zero = calloc(1, n);
	size_t bound = ZSTD_compressBound(n), zl;
	ZSTD_CCtx *c = ZSTD_createCCtx();

	*z = malloc(bound);
	cr_assert(zero && *z && c);
	ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum);
	zl = ZSTD_compress2(c, *z, bound, zero, n);
	cr_assert(!ZSTD_isError(zl));
	ZSTD_freeCCtx(c);
	free(zero);
	return zl;
}

static size_t zstd_of_zeros(uint8_t **z, size_t n)
{
	return zstd_frame(z, n, 1);
}

Test(codec, zstd_frame_without_content_checksum_is_refused)
{
	uint8_t *z;
	size_t zl = zstd_frame(&z, 1000, 0);
	amber_buf f;

	forge_plain(&f, AMBER_OBJ_CHUNK, 1, 1000, z, zl);
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN),
		     AMBER_ECORRUPT, "%s", amber_error_last());
	amber_buf_dispose(&f);
	free(z);
}

Test(codec, forged_plain_frame_decodes)
{
	amber_buf f, out = AMBER_BUF_INIT;

	forge_plain(&f, AMBER_OBJ_CHUNK, 0, 5, "hello", 5);
	OK(amber_codec_decode(&out, NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, 5));
	cr_assert_eq(out.len, 5);
	amber_buf_dispose(&f);
	amber_buf_dispose(&out);
}

Test(codec, zstd_declared_size_over_limit_is_refused)
{
	uint8_t *z;
	size_t big = 8 << 20, zl = zstd_of_zeros(&z, big);
	amber_buf f;

	/* plain_len claims 100 bytes; the zstd frame declares 8 MiB. */
	forge_plain(&f, AMBER_OBJ_CHUNK, 1, 100, z, zl);
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN),
		     AMBER_ECORRUPT, "%s", amber_error_last());
	amber_buf_dispose(&f);
	/* Honest plain_len, but over max_plain. */
	forge_plain(&f, AMBER_OBJ_CHUNK, 1, (uint32_t)big, z, zl);
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN),
		     AMBER_ECORRUPT, "%s", amber_error_last());
	amber_buf_dispose(&f);
	free(z);
}

Test(codec, zstd_frame_without_content_size_is_refused)
{
	uint8_t z[256];
	ZSTD_CCtx *c = ZSTD_createCCtx();
	size_t zl;
	amber_buf f;

	cr_assert_not_null(c);
	cr_assert(!ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0)));
	zl = ZSTD_compress2(c, z, sizeof(z), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 40);
	cr_assert(!ZSTD_isError(zl));
	cr_assert_eq(ZSTD_getFrameContentSize(z, zl), ZSTD_CONTENTSIZE_UNKNOWN);
	forge_plain(&f, AMBER_OBJ_CHUNK, 1, 40, z, zl);
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN),
		     AMBER_ECORRUPT, "%s", amber_error_last());
	amber_buf_dispose(&f);
	ZSTD_freeCCtx(c);
}

Test(codec, two_zstd_frames_are_refused)
{
	uint8_t *z, *zz;
	size_t zl = zstd_of_zeros(&z, 1000);
	amber_buf f;

	zz = malloc(2 * zl);
	cr_assert_not_null(zz);
	memcpy(zz, z, zl);
	memcpy(zz + zl, z, zl);
	forge_plain(&f, AMBER_OBJ_CHUNK, 1, 1000, zz, 2 * zl);
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN),
		     AMBER_ECORRUPT, "%s", amber_error_last());
	amber_buf_dispose(&f);
	free(z);
	free(zz);
}

/* zstd itself would skip a trailing skippable frame; a frame must be canonical. */
Test(codec, trailing_skippable_zstd_frame_is_refused)
{
	static const uint8_t skippable[12] = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 'j', 'u', 'n', 'k'};
	uint8_t *z, *zz;
	size_t zl = zstd_of_zeros(&z, 1000);
	amber_buf f;

	zz = malloc(zl + sizeof(skippable));
	cr_assert_not_null(zz);
	memcpy(zz, z, zl);
	memcpy(zz + zl, skippable, sizeof(skippable));
	forge_plain(&f, AMBER_OBJ_CHUNK, 1, 1000, zz, zl + sizeof(skippable));
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN),
		     AMBER_ECORRUPT, "%s", amber_error_last());
	amber_buf_dispose(&f);
	forge_plain(&f, AMBER_OBJ_CHUNK, 1, 1000, z, zl);
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN), 0, "%s",
		     amber_error_last());
	amber_buf_dispose(&f);
	free(z);
	free(zz);
}

Test(codec, bad_zstd_data_and_unknown_compression_are_refused)
{
	uint8_t junk[64];
	amber_buf f;

	memset(junk, 0x5a, sizeof(junk));
	forge_plain(&f, AMBER_OBJ_CHUNK, 1, 64, junk, sizeof(junk));
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN),
		     AMBER_ECORRUPT);
	amber_buf_dispose(&f);
	forge_plain(&f, AMBER_OBJ_CHUNK, 2, 64, junk, sizeof(junk));
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN),
		     AMBER_ECORRUPT);
	amber_buf_dispose(&f);
	forge_plain(&f, AMBER_OBJ_CHUNK, 0, 65, junk, sizeof(junk));
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, f.data, f.len, MAX_PLAIN),
		     AMBER_ECORRUPT);
	amber_buf_dispose(&f);
}

Test(codec, wrong_expected_mac_is_auth_failure)
{
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];

	for (int enc = 0; enc < 2; enc++) {
		encode(&frame, mac, enc ? key1 : NULL, AMBER_OBJ_CHUNK, "abc", 3);
		mac[AMBER_MAC_BYTES - 1] ^= 1;
		cr_assert_eq(decode_rc(enc ? key1 : NULL, AMBER_OBJ_CHUNK, mac, frame.data,
				       frame.len, MAX_PLAIN), AMBER_EAUTH);
		amber_buf_dispose(&frame);
	}
}

Test(codec, wrong_key_is_auth_failure)
{
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];

	encode(&frame, mac, key1, AMBER_OBJ_CHUNK, "secret", 6);
	cr_assert_eq(decode_rc(key2, AMBER_OBJ_CHUNK, mac, frame.data, frame.len, MAX_PLAIN),
		     AMBER_EAUTH);
	cr_assert_eq(decode_rc(key2, AMBER_OBJ_CHUNK, NULL, frame.data, frame.len, MAX_PLAIN),
		     AMBER_EAUTH);
	amber_buf_dispose(&frame);
}

Test(codec, wrong_type_is_auth_failure)
{
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];

	for (int enc = 0; enc < 2; enc++) {
		encode(&frame, mac, enc ? key1 : NULL, AMBER_OBJ_MANIFEST, "entries", 7);
		cr_assert_eq(decode_rc(enc ? key1 : NULL, AMBER_OBJ_CHUNK, mac, frame.data,
				       frame.len, MAX_PLAIN), AMBER_EAUTH);
		amber_buf_dispose(&frame);
	}
}

Test(codec, encrypted_frame_without_key_needs_key)
{
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];

	encode(&frame, mac, key1, AMBER_OBJ_CHUNK, "secret", 6);
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, mac, frame.data, frame.len, MAX_PLAIN),
		     AMBER_ENEEDKEY);
	cr_assert_eq(decode_rc(NULL, AMBER_OBJ_CHUNK, NULL, frame.data, frame.len, MAX_PLAIN),
		     AMBER_ENEEDKEY);
	amber_buf_dispose(&frame);
}

Test(codec, plain_frame_in_encrypted_archive_is_auth_failure)
{
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];

	encode(&frame, mac, NULL, AMBER_OBJ_CHUNK, "swapped in", 10);
	cr_assert_eq(decode_rc(key1, AMBER_OBJ_CHUNK, mac, frame.data, frame.len, MAX_PLAIN),
		     AMBER_EAUTH);
	amber_buf_dispose(&frame);
}

Test(codec, ciphertext_hides_the_payload)
{
	amber_buf frame;
	uint8_t mac[AMBER_MAC_BYTES];
	static const char secret[] = "account 4711 balance 1000000";

	encode(&frame, mac, key1, AMBER_OBJ_CHUNK, secret, sizeof(secret) - 1);
	cr_assert_null(memmem(frame.data, frame.len, "4711", 4));
	cr_assert_eq(frame.data[4], 'E');
	amber_buf_dispose(&frame);
}

struct worker {
	const uint8_t *data;
	size_t len;
	const uint8_t *want;  /* the frame encoded on the main thread */
	size_t want_len;
	int failures;
};

static void *codec_worker(void *arg)
{
	struct worker *w = arg;
	amber_buf f = AMBER_BUF_INIT, out = AMBER_BUF_INIT;
	uint8_t mac[AMBER_MAC_BYTES];

	for (int i = 0; i < 20; i++) {
		amber_buf_reset(&f);
		amber_buf_reset(&out);
		if (amber_codec_encode(&f, mac, key1, AMBER_OBJ_CHUNK, w->data, w->len, LEVEL) ||
		    f.len != w->want_len || memcmp(f.data, w->want, f.len) != 0 ||
		    amber_codec_decode(&out, key1, AMBER_OBJ_CHUNK, mac, f.data, f.len, w->len) ||
		    out.len != w->len || memcmp(out.data, w->data, w->len) != 0)
			w->failures++;
	}
	amber_buf_dispose(&f);
	amber_buf_dispose(&out);
	return NULL;
}

Test(codec, concurrent_threads_give_the_same_frames)
{
	size_t n = 300000;
	uint8_t *c = compressible_bytes(n), mac[AMBER_MAC_BYTES];
	amber_buf ref;
	pthread_t tid[4];
	struct worker w[4];

	encode(&ref, mac, key1, AMBER_OBJ_CHUNK, c, n);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){c, n, ref.data, ref.len, 0};
		cr_assert_eq(pthread_create(&tid[i], NULL, codec_worker, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(pthread_join(tid[i], NULL), 0);
		cr_assert_eq(w[i].failures, 0, "thread %d: %d failures", i, w[i].failures);
	}
	amber_buf_dispose(&ref);
	free(c);
}
