/*
 * Decoding a set of chunk objects on worker threads, in pack order
 * (verify --read-data; verify_data.c).
 */
#ifndef AMBER_VERIFY_DATA_H
#define AMBER_VERIFY_DATA_H

#include "amber.h"

#include <stddef.h>
#include <stdint.h>

/** One chunk to decode: what its parent recorded, and how it went. */
typedef struct amber_vjob {
	amber_link link;        /* object id and the mac its parent recorded */
	uint32_t len;           /* plaintext bytes its parent declares */
	uint32_t pack;          /* where it lies (amber_store_pack_positions): */
	uint64_t off;           /* the order jobs are run in */
	uint64_t raw;           /* out: the object's bytes in the archive */
	int rc;                 /* out: 0 decoded and of length len, or an error code */
} amber_vjob;

/** Counters of a run, readable from the progress callback. */
typedef struct amber_vdata_stats {
	uint64_t done;          /* jobs run */
	uint64_t failed;        /* of which failed */
	uint64_t raw_bytes;     /* archive bytes read for them */
	uint64_t plain_bytes;   /* plaintext bytes decoded by those that passed */
	unsigned threads;       /* threads that ran them, the caller's included */
} amber_vdata_stats;

/**
 * Decode and authenticate the chunk of every job exactly as the reader does
 * (amber_chunk_get), with no cache: jobs are sorted into pack order and
 * taken in turn by `threads` threads, the calling thread being one of them
 * (0: one per online CPU).  Each job's rc and raw are set; the error
 * messages are not kept (decode a failed job again to get its message).
 * @param progress  called on the calling thread only, about 10 times a
 *                  second, with the counters so far (may be NULL)
 * @return 0 (the jobs' rc say how each went), or AMBER_ERROR if the run
 *         could not be set up (out of memory).
 */
int amber_vdata_run(amber_vdata_stats *st, amber_archive *a, amber_vjob *jobs, size_t n,
		    unsigned threads, void (*progress)(const amber_vdata_stats *st, void *payload),
		    void *payload);

#endif
