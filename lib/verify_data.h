/*
 * Checking many objects on worker threads, in pack order (verify_data.c):
 * the blobs of the snapshot trees (read and hashed), and with --read-data
 * the distinct chunks (decoded).
 */
#ifndef AMBER_VERIFY_DATA_H
#define AMBER_VERIFY_DATA_H

#include "amber.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

/** Where an object lies: set and used by the runs below (the order they read in). */
typedef struct amber_vat {
	uint8_t oid[20];
	uint32_t pack;          /* amber_store_pack_positions */
	uint64_t off;
} amber_vat;

/** One chunk to decode: what its parent recorded, and how it went. */
typedef struct amber_vjob {
	amber_vat at;           /* at.oid: link.oid */
	amber_link link;        /* object id and the mac its parent recorded */
	uint32_t len;           /* plaintext bytes its parent declares */
	uint64_t raw;           /* out: the object's bytes in the archive */
	int rc;                 /* out: 0 decoded and of length len, or an error code */
} amber_vjob;

/** One blob to read and hash, and how it went. */
typedef struct amber_vblob {
	amber_vat at;
	char snap[41];          /* the snapshot that first named it (hex) */
	size_t seq;             /* verify.c: the order it was met in */
	size_t held_at;         /* verify.c: problems held when it was met */
	int rc;                 /* out: 0 read, or the error code of the read */
	char *msg;              /* out: the read's error message (malloc'd), if rc < 0 */
	int type;               /* out: its git type */
	int hash_ok;            /* out: its content hashes to its id */
	int frame;              /* out: 'E' or 'P' for an amberfs format 1 frame, else 0 */
	uint64_t len;           /* out: its bytes */
} amber_vblob;

/** Counters of a run, readable from the progress callback. */
typedef struct amber_vdata_stats {
	uint64_t done;          /* jobs run */
	uint64_t failed;        /* of which failed */
	uint64_t raw_bytes;     /* archive bytes read for them */
	uint64_t plain_bytes;   /* chunks: plaintext bytes decoded by those that passed */
	unsigned threads;       /* threads that ran them, the caller's included */
} amber_vdata_stats;

typedef void (*amber_vdata_progress)(const amber_vdata_stats *st, void *payload);

/**
 * Decode and authenticate the chunk of every job exactly as the reader does
 * (amber_chunk_get), with no cache.  Jobs are sorted into pack order and
 * taken in turn by `threads` threads, the calling thread being one of them
 * (0: one per online CPU).  Each job's rc and raw are set; the error
 * messages are not kept (decode a failed job again to get its message).
 * @param progress  called on the calling thread only, about 10 times a
 *                  second, with the counters so far (may be NULL)
 * @return 0 (the jobs' rc say how each went), or AMBER_ERROR if the run
 *         could not be set up (out of memory).
 */
int amber_vdata_run(amber_vdata_stats *st, amber_archive *a, amber_vjob *jobs, size_t n,
		    unsigned threads, amber_vdata_progress progress, void *payload);

/**
 * Read every blob (at most `max` bytes each), hash it and look at its frame
 * header, the same way as amber_vdata_run (pack order, `threads` threads),
 * through store `via` (a twin of a->store, so that what the reads leave
 * mapped goes with it; NULL: a->store).  With keep_order, in the order
 * given instead: finding each blob's place costs a lookup in every pack
 * index, and the blobs a walk lists from a few hundred consecutive
 * snapshots lie together in their pack already.
 * The blobs are left in the order read; free each one's msg.
 */
int amber_vblob_run(amber_vdata_stats *st, amber_archive *a, amber_store *via, int keep_order,
		    amber_vblob *blobs, size_t n, size_t max, unsigned threads,
		    amber_vdata_progress progress, void *payload);

#endif
