/* Fan-out payloads of large directories: layout 1 bucket lists and layout 2 nodes. */
#include "fuzz.h"

#include "manifest.h"

#include <stdlib.h>
#include <string.h>

static void node(const uint8_t *data, size_t size)
{
	amber_fanout_node nd;
	amber_buf re = AMBER_BUF_INIT;

	if (amber_fanout_node_decode(&nd, data, size) < 0)
		return;
	amber_buf_init(&re, 4096);
	if (amber_fanout_node_encode(&re, &nd) != 0 || re.len != size ||
	    memcmp(re.data, data, size))
		__builtin_trap();
	amber_buf_dispose(&re);
}

AMBER_FUZZ(fanout)
{
	amber_bucket *b = NULL;
	unsigned bits = 0;
	size_t n = 0;
	amber_buf re = AMBER_BUF_INIT;

	if (amber_fanout_layout(data, size) == 2)
		node(data, size);
	if (amber_fanout_decode(&b, &bits, &n, data, size) < 0)
		return 0;
	amber_buf_init(&re, (size_t)64 << 20);
	if (amber_fanout_encode(&re, bits, b, n) == 0 && (re.len != size || memcmp(re.data, data, size)))
		__builtin_trap();
	amber_buf_dispose(&re);
	free(b);
	return 0;
}
