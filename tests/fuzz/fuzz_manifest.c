/* Directory manifests: every entry field, names, xattrs, targets, order. */
#include "fuzz.h"

#include "manifest.h"

#include <string.h>

AMBER_FUZZ(manifest)
{
	amber_entry *e = NULL;
	size_t n = 0;
	amber_buf re = AMBER_BUF_INIT;

	if (amber_manifest_decode(&e, &n, data, size) < 0)
		return 0;
	/* What decodes must encode again to the same bytes. */
	amber_buf_init(&re, (size_t)64 << 20);
	if (amber_manifest_encode(&re, e, n) == 0 && (re.len != size || memcmp(re.data, data, size)))
		__builtin_trap();
	amber_buf_dispose(&re);
	amber_entries_free(e, n);
	return 0;
}
