/*
 * Object frames: how a payload becomes the content of a git blob.
 *
 *   frame  = magic "amb" | version 0x01 | mode | mac[24] | body
 *   mode   = 'E' (encrypted) or 'P' (plain)
 *   inner  = type u8 | comp u8 (0 raw, 1 zstd) | plain_len u32 LE | data
 *
 * Encrypted ('E'):  mac = nonce = BLAKE2b-192 keyed with nonce_key over
 * `inner`; subkey = BLAKE2b-256 keyed with enc_key over the nonce;
 * body = XChaCha20-Poly1305(subkey, nonce, inner, ad = the first 5 bytes).
 * Identical inner bytes give identical frames (dedup survives encryption),
 * and the nonce is never derived from anything but the bytes encrypted.
 *
 * Plain ('P'): mac = unkeyed BLAKE2b-192 over the first 5 bytes and inner;
 * body = inner.  Detects corruption, authenticates nothing.
 *
 * Parents record each child's (oid, mac) as an amber_link; a reader decodes
 * with the expected mac, which binds the content to the link (no SHA-1
 * needed on the read path).
 */
#ifndef AMBER_CODEC_H
#define AMBER_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "amber.h"
#include "buf.h"
#include "keys.h"

#define AMBER_FRAME_HDR 29  /* magic 3 + version 1 + mode 1 + mac 24 */
#define AMBER_INNER_HDR 6   /* type 1 + comp 1 + plain_len 4 */
#define AMBER_MAC_BYTES 24

enum amber_objtype {
	AMBER_OBJ_CHUNK = 1,     /**< file data */
	AMBER_OBJ_MANIFEST = 2,  /**< directory manifest */
	AMBER_OBJ_FANOUT = 3,    /**< bucket list of a large directory */
	AMBER_OBJ_INDEX = 4,     /**< chunk list of a multi-chunk file */
	AMBER_OBJ_RECORD = 5,    /**< snapshot record (carried in the commit) */
	AMBER_OBJ_PAGE = 6,      /**< time index page of a stream (history.c) */
};

/**
 * Encode `len` bytes of payload of object type `type` into a frame,
 * appended to `out`.  Compresses with zstd at `level` (0 = never compress)
 * and keeps the compressed form only if it is smaller.
 * @param k       keys, or NULL for a plain archive
 * @param mac_out receives the frame's mac (for the parent's amber_link)
 */
int amber_codec_encode(amber_buf *out, uint8_t mac_out[AMBER_MAC_BYTES], const amber_keys *k,
		       int type, const void *data, size_t len, int level);

/**
 * Decode a frame, appending the payload to `out`.
 * @param k          keys, or NULL for a plain archive (an 'E' frame is then
 *                   refused with AMBER_ENEEDKEY, and a 'P' frame in an
 *                   encrypted archive is refused with AMBER_EAUTH)
 * @param type       the expected object type (mismatch: AMBER_EAUTH)
 * @param expect_mac the mac recorded by the parent, or NULL to skip that check
 * @param max_plain  refuse (AMBER_ECORRUPT) a payload declared larger
 * @return 0, AMBER_EAUTH (tag or mac mismatch), AMBER_ECORRUPT (malformed,
 *         truncated, bad zstd, size over limit).
 */
AMBER_MUST_USE int amber_codec_decode(amber_buf *out, const amber_keys *k, int type,
				      const uint8_t *expect_mac, const void *frame, size_t len,
				      size_t max_plain);

/**
 * amber_codec_decode() of a frame the caller gives up: an encrypted one is
 * decrypted where it is (no copy, no allocation), then wiped; its bytes
 * are not the frame afterwards.
 */
AMBER_MUST_USE int amber_codec_decode_in_place(amber_buf *out, const amber_keys *k, int type,
					       const uint8_t *expect_mac, void *frame, size_t len,
					       size_t max_plain);

#endif
