/* Commit (and tag) objects: headers, trailers, signatures split off. */
#include "fuzz.h"

#include "gitobj.h"
#include "sign.h"
#include "store.h"

#include <stdlib.h>

AMBER_FUZZ(commit)
{
	amber_commit c = {0};
	amber_buf payload = AMBER_BUF_INIT;
	char *armored = NULL;

	if (amber_commit_parse(&c, data, size, "fuzz") == 0)
		amber_commit_dispose(&c);
	amber_buf_init(&payload, (size_t)1 << 20);
	if (amber_object_split_signature(&payload, &armored, AMBER_GIT_COMMIT, data, size) == 0)
		free(armored);
	amber_buf_dispose(&payload);
	amber_buf_init(&payload, (size_t)1 << 20);
	armored = NULL;
	if (amber_object_split_signature(&payload, &armored, AMBER_GIT_TAG, data, size) == 0)
		free(armored);
	amber_buf_dispose(&payload);
	return 0;
}
