/*
 * Git object texts that amberfs writes and reads itself: trees and commits.
 * Writing them here (rather than through libgit2's tree builder) lets every
 * object of a snapshot go into one pack with one fsync.  Parsing them here
 * lets the reader validate names, which libgit2 does not do when reading.
 */
#ifndef AMBER_GITOBJ_H
#define AMBER_GITOBJ_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define AMBER_GIT_MODE_TREE 040000
#define AMBER_GIT_MODE_BLOB 0100644

typedef struct amber_tentry {
	char name[24];        /* our tree names are short: "m", "i", "bXX", "c%08u" */
	const char *longname; /* or a token (32 hex); used when non-NULL */
	uint32_t mode;        /* AMBER_GIT_MODE_TREE or _BLOB */
	uint8_t oid[20];
} amber_tentry;

/** Name of a tree entry (longname if set). */
const char *amber_tentry_name(const amber_tentry *e);

/**
 * Serialise a tree.  Sorts `e` in place (git order); asserts that names are
 * unique.
 */
int amber_tree_build(amber_buf *out, amber_tentry *e, size_t n);

/** A parsed tree entry; name points into the parsed buffer. */
typedef struct amber_tparsed {
	const char *name;
	size_t name_len;
	uint32_t mode;
	const uint8_t *oid;
} amber_tparsed;

/**
 * Parse a tree, validating every entry (mode, name bytes, strict git order,
 * no name twice, not even as a blob and a tree).
 * *out is malloc'd (free()); names and oids point into data.
 * @return 0 or AMBER_ECORRUPT naming `what`.
 */
int amber_tree_parse(amber_tparsed **out, size_t *n, const uint8_t *data, size_t len,
		     const char *what);

/** Find an entry by name in a tree from amber_tree_parse(), in O(log n); NULL if absent. */
const amber_tparsed *amber_tree_find(const amber_tparsed *t, size_t n, const char *name);

typedef struct amber_commit {
	uint8_t tree[20];
	uint8_t parent[20];
	int nparents;
	int64_t author_time;
	char *message;          /* malloc'd, NUL-terminated */
	char *signature;        /* gpgsig header value or NULL (later formats) */
} amber_commit;

/** Serialise a commit with at most one parent (parent NULL = none). */
int amber_commit_build(amber_buf *out, const uint8_t tree[20], const uint8_t *parent,
		       int64_t when_sec, const char *message);

/** Parse a commit.  @return 0 or AMBER_ECORRUPT. */
int amber_commit_parse(amber_commit *c, const uint8_t *data, size_t len, const char *what);
void amber_commit_dispose(amber_commit *c);

/**
 * Find trailer `key` ("Amberfs-Time") in a commit message; returns a
 * malloc'd copy of its value (to the end of the line), or NULL.
 */
char *amber_trailer_get(const char *message, const char *key);

#endif
