/*
 * Pack entries and git deltas (lib/packread.c).  The first byte picks:
 *
 * - even: a pack file.  The next two bytes (big-endian) are the offset of
 *   the entry to read, counted from the pack's first entry; the rest is the
 *   pack (header included), read from a memfd by pread as the store reads
 *   its packs.  REF_DELTA bases are "found" at an offset made from their
 *   id, so chains and cycles through REF_DELTA are reachable.
 * - odd: a delta applied to a base.  The next two bytes are the base's
 *   length; the base follows, then the delta.
 *
 * Whatever the input: an error or the object, never a read outside the
 * input, and a returned object has exactly the size its header declared.
 */
#include "fuzz.h"

#include "packread.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_MAX ((size_t)1 << 20)

static int pack_fd = -1;

static int resolve(const amber_pack **pk, uint64_t *off, void *ctx, const uint8_t oid[20])
{
	const amber_pack *p = ctx;
	uint64_t size = (uint64_t)lseek(p->pack_fd, 0, SEEK_END);

	if (oid[0] == 0xff || size <= 12)
		return 0;	/* not found */
	*pk = p;
	*off = 12 + ((uint64_t)oid[1] << 8 | oid[2]) % (size - 12);
	return 1;
}

static void *room(void *ctx, size_t len)
{
	void **p = ctx;

	return *p = malloc(len ? len : 1);
}

AMBER_FUZZ(pack)
{
	if (size < 3)
		return 0;
	size_t arg = (size_t)data[1] << 8 | data[2];
	const uint8_t *rest = data + 3;
	size_t left = size - 3;

	if (data[0] & 1) {
		size_t blen = arg < left ? arg : left;
		uint64_t src, dst;
		size_t ops;

		if (amber_delta_sizes(&src, &dst, &ops, rest + blen, left - blen) == 0 &&
		    dst <= FUZZ_MAX) {
			uint8_t *out = malloc(dst ? (size_t)dst : 1);

			if (out)
				(void)amber_delta_apply(out, (size_t)dst, rest, blen, rest + blen,
							left - blen, "fuzz");
			free(out);
		}
		return 0;
	}
	if (pack_fd < 0 && (pack_fd = memfd_create("fuzz-pack", MFD_CLOEXEC)) < 0)
		return 0;
	if (ftruncate(pack_fd, 0) < 0 || (left && pwrite(pack_fd, rest, left, 0) != (ssize_t)left))
		return 0;
	amber_pack p = {.idx_fd = -1, .pack_fd = pack_fd, .name = "fuzz.pack"};
	void *obj = NULL;
	size_t len = 0, hlen = 0;
	int type = 0, htype = 0;

	if (amber_pack_read(&type, &len, &p, 12 + arg, FUZZ_MAX, "fuzz", NULL, room, &obj,
			    resolve, &p) == 0) {
		if (type < 1 || type > 4 || len > FUZZ_MAX)
			__builtin_trap();
		/* the header agrees with what was read */
		if (amber_pack_header(&htype, &hlen, &p, 12 + arg, "fuzz", resolve, &p) != 0 ||
		    htype != type || hlen != len)
			__builtin_trap();
	}
	free(obj);
	return 0;
}
