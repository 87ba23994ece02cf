/* The time index in the records (history.c). */
#ifndef AMBER_HISTORY_H
#define AMBER_HISTORY_H

#include "amber.h"
#include "archive.h"
#include "buf.h"
#include "manifest.h"

/** amber_history_find(): the records carry no index; walk instead. */
#define AMBER_HISTORY_NO_INDEX 1

/**
 * The newest snapshot of `stream` (tip `tip`) taken before `end`, by the
 * skip links of the records: O(log n) authenticated record reads.
 * @return 0 with *out set, AMBER_ENOTFOUND if every snapshot is at or after
 *         end, AMBER_HISTORY_NO_INDEX for records without an index (written
 *         before it existed), or an error (AMBER_EAUTH for a link that does
 *         not match the record it names).
 */
int amber_history_find(uint8_t out[20], amber_archive *a, const char *stream,
		       const uint8_t tip[20], int64_t end);

/**
 * Fill in r->height, r->skip and the page fields of a new record from its
 * parent (r->parent, r->has_parent, r->stream set).  When the record is due
 * to write an index page, its payload is appended to `page`: the caller
 * stores it as an AMBER_OBJ_PAGE frame and calls
 * amber_history_page_written() with its link.  `page` stays empty otherwise.
 */
int amber_history_links(amber_record *r, amber_archive *a, amber_buf *page);

/** Name the page amber_history_links() asked for in r. */
void amber_history_page_written(amber_record *r, const amber_link *page);

/**
 * The snapshots of `stream` (tip `tip`) taken in [start, end), oldest
 * first, from the index pages: a few page reads and at most span - 1
 * record reads, each authenticated and checked against the chain.
 * @param max  keep only the newest max (0: all)
 * @return 0 with *out (free()) and *n set (possibly none),
 *         AMBER_HISTORY_NO_INDEX when the records in the way have no pages
 *         (written before them: walk instead), AMBER_EAUTH/AMBER_ECORRUPT
 *         for a page that does not match the chain.
 */
int amber_history_span(amber_page_ent **out, size_t *n, amber_archive *a, const char *stream,
		       const uint8_t tip[20], int64_t start, int64_t end, size_t max);

/** A defect found by amber_history_check() in the record of snapshot `oid`. */
typedef void (*amber_history_problem_fn)(const uint8_t oid[20], const char *msg, void *payload);

/**
 * Check the index of every record of the stream whose tip is `tip`: heights
 * count down to 1 and each skip link names the ancestor at its distance,
 * with its time.  Each defect goes to `fn`.
 * @return 0 when the walk finished (defects or not), or the error that
 *         stopped it (an unreadable record).
 */
int amber_history_check(amber_archive *a, const char *stream, const uint8_t tip[20],
			amber_history_problem_fn fn, void *payload);

#endif
