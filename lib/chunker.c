/*
 * FastCDC (Xia et al., USENIX ATC 2016) with normalised chunking.
 *
 * Rolling hash: h = 2h + gear[byte] (mod 2^64).  Bit k of h depends only on
 * the last k + 1 bytes, so the masks are made of the *top* bits of h: every
 * cut decision is then a function of the 64 bytes ending at the candidate
 * position and of nothing else (not of where the chunk began).
 *
 * Normalised chunking: a candidate length below avg must clear a mask of
 * log2(avg) + 2 bits (cuts are rarer), from avg on a mask of log2(avg) - 2
 * bits (cuts come sooner).  This narrows the size distribution around avg.
 *
 * Cut-point skipping: no cut may fall before min, so nothing before
 * min - 64 is hashed.  Those 64 bytes of warm-up fill the window before the
 * first candidate (length min) is tested, which keeps the first decisions
 * as content-defined as the rest.  A chunk reaching max is cut there.
 *
 * Gear table: the ChaCha20 keystream of the 32-byte seed (zero nonce),
 * read as 256 little-endian 64-bit words.  Plain archives use the fixed
 * public seed below, the 32 ASCII bytes "amberfs format 1 plain gear seed";
 * changing it changes every chunk boundary of every plain archive.
 */
#include "chunker.h"

#include <assert.h>
#include <string.h>

#include <sodium.h>

#define WINDOW 64

static const uint8_t public_seed[32] = "amberfs format 1 plain gear seed";

static uint64_t load_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* The top `bits` bits of a 64-bit word (1 <= bits <= 64). */
static uint64_t top_mask(unsigned bits)
{
	if (bits < 1)
		bits = 1;
	if (bits > 64)
		bits = 64;
	return ~(uint64_t)0 << (64 - bits);
}

static unsigned log2_exact(size_t v)
{
	unsigned n = 0;

	while (((size_t)1 << n) < v)
		n++;
	return n;
}

void amber_chunker_init(amber_chunker *c, const uint8_t seed[32], size_t min, size_t avg,
			size_t max)
{
	static const uint8_t zero_nonce[crypto_stream_chacha20_NONCEBYTES];
	uint8_t stream[256 * 8];
	unsigned bits;

	assert(min >= 1 && min < avg && avg < max);
	assert((avg & (avg - 1)) == 0);
	crypto_stream_chacha20(stream, sizeof(stream), zero_nonce, seed ? seed : public_seed);
	for (size_t i = 0; i < 256; i++)
		c->gear[i] = load_le64(stream + 8 * i);
	/* Derived from chunk_key: as secret as the key itself. */
	sodium_memzero(stream, sizeof(stream));
	bits = log2_exact(avg);
	c->min = min;
	c->avg = avg;
	c->max = max;
	c->mask_small = top_mask(bits + 2);
	c->mask_large = bits > 2 ? top_mask(bits - 2) : top_mask(1);
}

/*
 * Hash bytes from..to-1; return the length (index + 1) of the first
 * position whose hash clears `mask`, or 0.  The hot loop: the compiler
 * turns 2h + g into one lea, about a cycle per byte.
 */
static size_t scan(const uint64_t *gear, const uint8_t *d, size_t from, size_t to,
		   uint64_t mask, uint64_t *hp)
{
	uint64_t h = *hp;

	for (size_t i = from; i < to; i++) {
		h = (h << 1) + gear[d[i]];
		if (!(h & mask))
			return i + 1;
	}
	*hp = h;
	return 0;
}

size_t amber_chunker_next(const amber_chunker *c, const uint8_t *data, size_t len, int at_eof)
{
	size_t n, normal, i, cut;
	uint64_t h = 0;

	assert(at_eof || len >= c->max);
	if (len <= c->min)
		return len;
	n = len < c->max ? len : c->max;
	/* n > min and avg > min, so normal - 1 >= min - 1. */
	normal = c->avg < n ? c->avg : n;
	/* Bytes up to min - 2 only warm the window; min - 1 is the first candidate. */
	for (i = c->min > WINDOW ? c->min - WINDOW : 0; i + 1 < c->min; i++)
		h = (h << 1) + c->gear[data[i]];
	cut = scan(c->gear, data, c->min - 1, normal - 1, c->mask_small, &h);
	if (!cut)
		cut = scan(c->gear, data, normal - 1, n, c->mask_large, &h);
	return cut ? cut : n;
}
