/*
 * The forger shared by the hostile-archive tests (forge.c).
 */
#ifndef AMBER_TEST_FORGE_H
#define AMBER_TEST_FORGE_H

#include "amber.h"
#include "buf.h"
#include "manifest.h"
#include "record.h"

#include <stddef.h>
#include <stdint.h>

/* Each test program that links forge.c defines these two: how its forger
 * writes an object of git type `type` ("blob", "tree", "commit") into
 * arch, and reads one back (what `git cat-file a1 a2` prints; a0 is
 * "cat-file"), malloc'd, its length in *len. */
void put_obj(uint8_t oid[20], const char *arch, const char *type, const void *data, size_t len);
char *git_bytes(const char *arch, size_t *len, const char *a0, const char *a1, const char *a2);

/* A snapshot's record and root directory, to edit and commit again. */
typedef struct forge {
	const char *arch;
	char *time;         /* the Amberfs-Time trailer */
	amber_record r;
	amber_entry *e;     /* root manifest */
	size_t n;
} forge;

/* Frame `data` as an object of `type` (plain) and store it; fills l. */
void put_framed(amber_link *l, const char *arch, int type, const void *data, size_t len);
/* Read and decode the framed blob `l` (plain). */
void get_framed(amber_buf *out, const char *arch, int type, const amber_link *l);
/* Read commit's record and root directory into f. */
void forge_open(forge *f, const char *arch, const char *commit);
/* The root entry named name (the test fails if there is none). */
amber_entry *forge_find(forge *f, const char *name);
/* Add a copy of entry `from` named `name`; returns it. */
amber_entry *forge_copy(forge *f, const char *from, const char *name);
/* Commit the edited root as a snapshot with the original's parent and
 * time; returns the new commit id (malloc'd hex). */
char *forge_commit(forge *f);
void forge_dispose(forge *f);

#endif
