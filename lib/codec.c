/*
 * Object frames (layout in codec.h and amberfs-format(5)).
 *
 * The only place that speaks to zstd and to the AEAD.
 *
 * Determinism: the nonce is a keyed hash of the exact inner bytes, and
 * zstd's one-shot compression at a fixed level is a pure function of its
 * input, so equal payloads give equal frames and dedup survives encryption.
 * The nonce is never derived from anything but the bytes it encrypts, so
 * a nonce repeats only with identical plaintext (which then gives an
 * identical ciphertext and reveals only that equality).
 *
 * Decoding treats the frame as hostile: every length is checked against
 * the frame and against max_plain before anything is allocated, the zstd
 * declared size must equal the authenticated plain_len, and nothing is
 * appended to `out` unless the frame authenticated and decoded completely.
 * Any mismatch between the content and its link (mac, tag, type) is
 * AMBER_EAUTH; malformed structure is AMBER_ECORRUPT.
 *
 * zstd contexts are per thread (the writer compresses on several workers,
 * the FUSE daemon decodes on several); a thread's contexts are freed when
 * it exits.
 */
#include "codec.h"

#include "error.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zstd.h>

#define FRAME_VERSION 0x01
#define MODE_ENC 'E'
#define MODE_PLAIN 'P'
#define AD_BYTES 5  /* magic, version, mode */
#define TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define COMP_RAW 0
#define COMP_ZSTD 1

static const uint8_t frame_magic[3] = {'a', 'm', 'b'};

static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static pthread_key_t cctx_key, dctx_key;

static void free_cctx(void *p)
{
	ZSTD_freeCCtx(p);
}

static void free_dctx(void *p)
{
	ZSTD_freeDCtx(p);
}

static void make_ctx_keys(void)
{
	/* Only fails when the process is out of keys: nothing to recover. */
	if (pthread_key_create(&cctx_key, free_cctx) || pthread_key_create(&dctx_key, free_dctx))
		abort();
}

static ZSTD_CCtx *thread_cctx(void)
{
	ZSTD_CCtx *c;

	pthread_once(&ctx_once, make_ctx_keys);
	c = pthread_getspecific(cctx_key);
	if (!c && (c = ZSTD_createCCtx()) != NULL && pthread_setspecific(cctx_key, c)) {
		ZSTD_freeCCtx(c);
		c = NULL;
	}
	return c;
}

static ZSTD_DCtx *thread_dctx(void)
{
	ZSTD_DCtx *d;

	pthread_once(&ctx_once, make_ctx_keys);
	d = pthread_getspecific(dctx_key);
	if (!d && (d = ZSTD_createDCtx()) != NULL && pthread_setspecific(dctx_key, d)) {
		ZSTD_freeDCtx(d);
		d = NULL;
	}
	return d;
}

static const char *type_name(int type)
{
	switch (type) {
	case AMBER_OBJ_CHUNK: return "chunk";
	case AMBER_OBJ_MANIFEST: return "manifest";
	case AMBER_OBJ_FANOUT: return "fanout";
	case AMBER_OBJ_INDEX: return "index";
	case AMBER_OBJ_RECORD: return "record";
	case AMBER_OBJ_PAGE: return "index page";
	default: return "object";
	}
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Per-object subkey: BLAKE2b-256 keyed with enc_key over the nonce. */
static void object_subkey(uint8_t sub[crypto_aead_xchacha20poly1305_ietf_KEYBYTES],
			  const amber_keys *k, const uint8_t nonce[AMBER_MAC_BYTES])
{
	crypto_generichash(sub, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, nonce,
			   AMBER_MAC_BYTES, k->enc_key, sizeof(k->enc_key));
}

/* Unkeyed BLAKE2b-192 over the first 5 frame bytes and inner ('P' frames). */
static void plain_mac(uint8_t mac[AMBER_MAC_BYTES], const uint8_t *ad, const uint8_t *inner,
		      size_t inner_len)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, AMBER_MAC_BYTES);
	crypto_generichash_update(&st, ad, AD_BYTES);
	crypto_generichash_update(&st, inner, inner_len);
	crypto_generichash_final(&st, mac, AMBER_MAC_BYTES);
}

/*
 * Write type, comp, plain_len and the (maybe compressed) payload at `inner`,
 * which has room for AMBER_INNER_HDR + len bytes.  zstd is given one byte
 * less room than the raw payload, so it fails exactly when compressing
 * would not make the payload smaller.
 */
static int fill_inner(size_t *inner_len, uint8_t *inner, int type, const void *data, size_t len,
		      int level)
{
	size_t csize = 0;
	ZSTD_CCtx *cctx;

	if (level != 0 && len > 1) {
		cctx = thread_cctx();
		if (!cctx)
			return amber_fail(AMBER_ERROR, "out of memory (zstd compression context)");
		if (level > ZSTD_maxCLevel())
			level = ZSTD_maxCLevel();
		/*
		 * The frame carries zstd's content checksum: decoding then proves
		 * the compressor's output expands to exactly what it was given,
		 * which is what the writer's read-back relies on.
		 */
		ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
		ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
		ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
		csize = ZSTD_compress2(cctx, inner + AMBER_INNER_HDR, len - 1, data, len);
		if (ZSTD_isError(csize))
			csize = 0;
	}
	inner[0] = (uint8_t)type;
	inner[1] = csize ? COMP_ZSTD : COMP_RAW;
	put_le32(inner + 2, (uint32_t)len);
	if (!csize && len)
		memcpy(inner + AMBER_INNER_HDR, data, len);
	*inner_len = AMBER_INNER_HDR + (csize ? csize : len);
	return 0;
}

/* Turn the inner bytes at frame + AMBER_FRAME_HDR into an 'E' body in place. */
static void seal_inner(uint8_t *frame, size_t inner_len, const amber_keys *k)
{
	uint8_t sub[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
	uint8_t *mac = frame + AD_BYTES, *inner = frame + AMBER_FRAME_HDR;

	crypto_generichash(mac, AMBER_MAC_BYTES, inner, inner_len, k->nonce_key,
			   sizeof(k->nonce_key));
	object_subkey(sub, k, mac);
	/* libsodium's AEAD encrypts in place (c == m). */
	crypto_aead_xchacha20poly1305_ietf_encrypt(inner, NULL, inner, inner_len, frame, AD_BYTES,
						   NULL, mac, sub);
	sodium_memzero(sub, sizeof(sub));
}

int amber_codec_encode(amber_buf *out, uint8_t mac_out[AMBER_MAC_BYTES], const amber_keys *k,
		       int type, const void *data, size_t len, int level)
{
	size_t inner_len = 0, room;
	uint8_t *frame;

	if (type < 1 || type > 255 || len > UINT32_MAX || len > SIZE_MAX - 64)
		return amber_fail(AMBER_EINVAL, "cannot frame a %s of %zu bytes (type %d)",
				  type_name(type), len, type);
	room = AMBER_FRAME_HDR + AMBER_INNER_HDR + len + TAG_BYTES;
	if (amber_buf_reserve(out, room) < 0)
		return AMBER_ERROR;
	frame = out->data + out->len;
	if (fill_inner(&inner_len, frame + AMBER_FRAME_HDR, type, data, len, level) < 0)
		return AMBER_ERROR;
	memcpy(frame, frame_magic, sizeof(frame_magic));
	frame[3] = FRAME_VERSION;
	frame[4] = k ? MODE_ENC : MODE_PLAIN;
	if (k) {
		seal_inner(frame, inner_len, k);
		inner_len += TAG_BYTES;
	} else {
		plain_mac(frame + AD_BYTES, frame, frame + AMBER_FRAME_HDR, inner_len);
	}
	memcpy(mac_out, frame + AD_BYTES, AMBER_MAC_BYTES);
	out->len += AMBER_FRAME_HDR + inner_len;
	return 0;
}

/* Check magic, version, mode, the expected mac and the key/mode pairing. */
static int check_header(const uint8_t *f, size_t len, const amber_keys *k, int type,
			const uint8_t *expect_mac)
{
	if (len < AMBER_FRAME_HDR)
		return amber_fail(AMBER_ECORRUPT, "%s frame truncated (%zu bytes, header is %d)",
				  type_name(type), len, AMBER_FRAME_HDR);
	if (memcmp(f, frame_magic, sizeof(frame_magic)) != 0)
		return amber_fail(AMBER_ECORRUPT, "%s frame has a bad magic", type_name(type));
	if (f[3] != FRAME_VERSION)
		return amber_fail(AMBER_ECORRUPT, "%s frame has unsupported version %u",
				  type_name(type), f[3]);
	if (f[4] != MODE_ENC && f[4] != MODE_PLAIN)
		return amber_fail(AMBER_ECORRUPT, "%s frame has unknown mode 0x%02x",
				  type_name(type), f[4]);
	if (expect_mac && sodium_memcmp(f + AD_BYTES, expect_mac, AMBER_MAC_BYTES) != 0)
		return amber_fail(AMBER_EAUTH, "%s does not match the mac recorded by its parent",
				  type_name(type));
	if (f[4] == MODE_ENC && !k)
		return amber_fail(AMBER_ENEEDKEY, "%s is encrypted and the archive is locked",
				  type_name(type));
	if (f[4] == MODE_PLAIN && k)
		return amber_fail(AMBER_EAUTH, "unencrypted %s in an encrypted archive",
				  type_name(type));
	return 0;
}

/* The 'E' body of frame f decrypted into *inner: a malloc'd buffer (the
 * caller frees it), or, with mut (f itself, writable), in place, where it
 * is (no allocation, and the bytes stay in the processor's caches for
 * zstd). */
static int open_body(uint8_t **inner, size_t *inner_len, const uint8_t *f, size_t len,
		     const amber_keys *k, int type, uint8_t *mut)
{
	uint8_t sub[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
	size_t blen = len - AMBER_FRAME_HDR;
	int rc;

	if (blen < TAG_BYTES + AMBER_INNER_HDR)
		return amber_fail(AMBER_ECORRUPT, "%s frame truncated (%zu bytes)",
				  type_name(type), len);
	*inner_len = blen - TAG_BYTES;
	*inner = mut ? mut + AMBER_FRAME_HDR : malloc(*inner_len);
	if (!*inner)
		return amber_fail(AMBER_ERROR, "out of memory (%zu bytes)", *inner_len);
	object_subkey(sub, k, f + AD_BYTES);
	/* (libsodium decrypts in place when both point at the same bytes) */
	rc = crypto_aead_xchacha20poly1305_ietf_decrypt(*inner, NULL, NULL, f + AMBER_FRAME_HDR,
							blen, f, AD_BYTES, f + AD_BYTES, sub);
	sodium_memzero(sub, sizeof(sub));
	if (rc != 0) {
		if (!mut)
			free(*inner);
		*inner = NULL;
		return amber_fail(AMBER_EAUTH, "%s failed authentication (wrong key, or "
				  "the object was altered)", type_name(type));
	}
	return 0;
}

static int check_plain(const uint8_t *f, size_t len, int type)
{
	uint8_t mac[AMBER_MAC_BYTES];

	plain_mac(mac, f, f + AMBER_FRAME_HDR, len - AMBER_FRAME_HDR);
	if (sodium_memcmp(mac, f + AD_BYTES, AMBER_MAC_BYTES) != 0)
		return amber_fail(AMBER_EAUTH, "%s checksum mismatch (the object was altered)",
				  type_name(type));
	return 0;
}

static int unzstd(amber_buf *out, const uint8_t *z, size_t zlen, size_t plain_len, int type)
{
	unsigned long long declared = ZSTD_getFrameContentSize(z, zlen);
	ZSTD_DCtx *dctx;
	size_t n;

	if (declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR ||
	    declared != plain_len)
		return amber_fail(AMBER_ECORRUPT, "%s: zstd frame declares a bad size", type_name(type));
	if (ZSTD_findFrameCompressedSize(z, zlen) != zlen)
		return amber_fail(AMBER_ECORRUPT, "%s: zstd data is not exactly one frame",
				  type_name(type));
	/* RFC 8878: the byte after the magic number; bit 2 = content checksum */
	if (zlen < 5 || !(z[4] & 0x04))
		return amber_fail(AMBER_ECORRUPT, "%s: zstd frame has no content checksum",
				  type_name(type));
	dctx = thread_dctx();
	if (!dctx)
		return amber_fail(AMBER_ERROR, "out of memory (zstd decompression context)");
	if (amber_buf_reserve(out, plain_len) < 0)
		return AMBER_ERROR;
	n = ZSTD_decompressDCtx(dctx, out->data + out->len, plain_len, z, zlen);
	if (ZSTD_isError(n) || n != plain_len)
		return amber_fail(AMBER_ECORRUPT, "%s: bad zstd data (%s)", type_name(type),
				  ZSTD_isError(n) ? ZSTD_getErrorName(n) : "size mismatch");
	out->len += n;
	return 0;
}

/* Check the inner header and append the payload to out. */
static int unpack_inner(amber_buf *out, const uint8_t *in, size_t in_len, int type,
			size_t max_plain)
{
	uint32_t plain_len;
	uint8_t comp;

	if (in_len < AMBER_INNER_HDR)
		return amber_fail(AMBER_ECORRUPT, "%s frame truncated (no inner header)",
				  type_name(type));
	if (in[0] != type)
		return amber_fail(AMBER_EAUTH, "object of type %u found where a %s was expected",
				  in[0], type_name(type));
	comp = in[1];
	plain_len = get_le32(in + 2);
	if (plain_len > max_plain)
		return amber_fail(AMBER_ECORRUPT, "%s declares %u bytes, more than the limit %zu",
				  type_name(type), plain_len, max_plain);
	in += AMBER_INNER_HDR;
	in_len -= AMBER_INNER_HDR;
	if (comp == COMP_ZSTD)
		return unzstd(out, in, in_len, plain_len, type);
	if (comp != COMP_RAW)
		return amber_fail(AMBER_ECORRUPT, "%s has unknown compression %u",
				  type_name(type), comp);
	if (in_len != plain_len)
		return amber_fail(AMBER_ECORRUPT, "%s: %zu payload bytes, %u declared",
				  type_name(type), in_len, plain_len);
	return amber_buf_put(out, in, in_len);
}

static int decode(amber_buf *out, const amber_keys *k, int type, const uint8_t *expect_mac,
		  const uint8_t *f, size_t len, size_t max_plain, uint8_t *mut)
{
	uint8_t *inner = NULL;
	size_t inner_len = 0;
	int rc;

	rc = check_header(f, len, k, type, expect_mac);
	if (rc < 0)
		return rc;
	if (k) {
		rc = open_body(&inner, &inner_len, f, len, k, type, mut);
		if (rc < 0)
			return rc;
		rc = unpack_inner(out, inner, inner_len, type, max_plain);
		/* Leave no plaintext (or its compressed form) in freed memory. */
		sodium_memzero(inner, inner_len);
		if (!mut)
			free(inner);
		return rc;
	}
	rc = check_plain(f, len, type);
	if (rc < 0)
		return rc;
	return unpack_inner(out, f + AMBER_FRAME_HDR, len - AMBER_FRAME_HDR, type, max_plain);
}

int amber_codec_decode(amber_buf *out, const amber_keys *k, int type, const uint8_t *expect_mac,
		       const void *frame, size_t len, size_t max_plain)
{
	return decode(out, k, type, expect_mac, frame, len, max_plain, NULL);
}

int amber_codec_decode_in_place(amber_buf *out, const amber_keys *k, int type,
				const uint8_t *expect_mac, void *frame, size_t len,
				size_t max_plain)
{
	return decode(out, k, type, expect_mac, frame, len, max_plain, frame);
}
