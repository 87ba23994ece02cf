/* Git tree objects as stored (names, modes, order), and lookups in them. */
#include "fuzz.h"

#include "gitobj.h"

#include <stdlib.h>

AMBER_FUZZ(tree)
{
	amber_tparsed *t = NULL;
	size_t n = 0;

	if (amber_tree_parse(&t, &n, data, size, "fuzz") < 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char name[256];

		if (t[i].name_len >= sizeof(name))
			__builtin_trap();
		for (size_t j = 0; j < t[i].name_len; j++)
			name[j] = t[i].name[j];
		name[t[i].name_len] = '\0';
		if (amber_tree_find(t, n, name) == NULL)
			__builtin_trap();
	}
	amber_tree_find(t, n, "m");
	free(t);
	return 0;
}
