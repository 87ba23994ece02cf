/*
 * Listing tags.  Tag refs come from the store as anyone who can write it
 * left them (loose files or hand-written packed-refs lines), so a name is
 * only passed on if it is a valid amberfs ref name (amber_refname_valid:
 * one path component of [A-Za-z0-9._-], no leading '.' or '-', no "..",
 * no ".lock" suffix, at most AMBER_STREAM_MAX bytes): the same rule the
 * writer applies when it makes a tag, so every tag amberfs made is listed
 * and nothing else is.  What a tag points to is not checked here; readers
 * resolve and authenticate it (amber_resolve, amber_snapshot_open).
 */
#include "amber.h"
#include "archive.h"
#include "manifest.h"
#include "store.h"

#include <string.h>

#define TAG_PREFIX "refs/tags/"

typedef struct tagscan {
	int (*cb)(const char *tag, void *payload);
	void *payload;
} tagscan;

static int tag_cb(const char *name, const uint8_t oid[20], void *payload)
{
	tagscan *t = payload;
	const char *tag = name + strlen(TAG_PREFIX);

	(void)oid;
	if (strncmp(name, TAG_PREFIX, strlen(TAG_PREFIX)) != 0 || !amber_refname_valid(tag))
		return 0;
	return t->cb(tag, t->payload);
}

int amber_tag_list(amber_archive *a, int (*cb)(const char *tag, void *payload), void *payload)
{
	tagscan t = {cb, payload};

	return amber_store_ref_foreach(a->store, TAG_PREFIX "*", tag_cb, &t);
}
