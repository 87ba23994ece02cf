/*
 * amber_verify: check an archive end to end.
 *
 * Three passes, each reporting problems through the caller's callback and
 * going on after them, so one run names everything that is wrong:
 *
 * 1. Structure (no key).  Every pack's checksum (on a thread of its own
 *    from the start, as is the passphrase's key derivation for pass 2;
 *    the checksums' problems are still reported first); every object
 *    reachable from refs/heads/, refs/tags/ and refs/amberfs/meta is read
 *    through the store and hashed (the read path itself does not check
 *    SHA-1: frames authenticate reads; here we want to know about damage
 *    before anyone reads).  Objects are visited once (`seen`, which keeps
 *    whether each was good), so shared subtrees cost nothing the second
 *    time.  The blobs of snapshot trees, nearly all of the archive's
 *    bytes, are only listed during the walk and then read and hashed on
 *    worker threads in pack order (verify_data.c); the walk's problems are
 *    held meanwhile and merged with the blobs' in the order a walk that
 *    read each blob on the spot would give.  Along the way: trees parse,
 *    each stream is a first-parent chain with strictly decreasing
 *    Amberfs-Time going back, snapshot commits have amberfs's
 *    author/committer lines, blobs under snapshot
 *    trees are frames whose mode ('E'/'P') agrees with the config, the
 *    config and the key slots are well-formed, and signatures verify
 *    against the pinned public key.
 *
 * 2. Keys.  With a passphrase each slot is tried; a slot that opens must
 *    also authenticate a snapshot record, otherwise it holds some other
 *    archive's master key (a replaced slot that happens to share the
 *    passphrase).  The archive is unlocked with a slot that passes.
 *
 * 3. Contents (key).  Each snapshot is opened and walked through the
 *    ordinary reader API (amber_snapshot_open, amber_dir_open, the chunk
 *    index, amber_chunk_get with read_data), so exactly what a reader
 *    would serve is what gets checked, with the paths that use each bad
 *    object.  Directories and files already checked are skipped by id.
 *
 *    With read_data the walk does not decode chunks as it meets them: it
 *    collects each distinct chunk once (keyed by all the reader checks),
 *    and verify_data.c decodes them all on worker threads in pack order.
 *    The walk's problems are held meanwhile.  If every chunk decodes,
 *    the walk went exactly as a decoding walk would have, and the held
 *    problems are passed on; if one fails, they are dropped and the walk
 *    runs again, decoding inline what did not pass (with the path in the
 *    message), so a damaged chunk is reported in the same words, for the
 *    same snapshots and paths, as when every walk decoded on its own.
 *
 * High-water marks: CACHE/<archive id>/verified-<stream> holds the tip the
 * last clean run saw.  A tip that does not descend from it is a rollback
 * (the tip is an ancestor of the mark) or rewritten history (neither).
 * verified-.keyslots holds the slot blob ids, so a slot swapped behind our
 * back is noticed even without the key; a stream name never starts with
 * '.', so no stream's mark can be that file (older versions called it
 * verified-keyslots, which a stream named "keyslots" shared).  Marks move
 * only after a run that found nothing.
 */
#include "amber_verify.h"

#include "archive.h"
#include "cachedir.h"
#include "chunker.h"
#include "codec.h"
#include "error.h"
#include "gitobj.h"
#include "keys.h"
#include "manifest.h"
#include "file.h"
#include "history.h"
#include "record.h"
#include "sign.h"
#include "stats.h"
#include "store.h"
#include "verify_data.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_OBJECT ((size_t)1 << 30)
#define MAX_RECORD_B64 ((size_t)1 << 20)
/* git trees nest, per directory level, the directory's tree, the trees of
 * its fan-out nodes below the first and its buckets' (amberfs-format(5)) */
#define MAX_DEPTH ((AMBER_FANOUT_LEVELS_MAX + 1) * AMBER_MAX_DEPTH + 2)

/* ---- a set of object ids, each with a flag ------------------------------------ */

/*
 * A walk of a long history meets millions of objects, and the set of them
 * is most of what verify holds (`seen`: 20 bytes and a flag per slot).  So
 * it is 256 open-addressing tables, chosen by an id's last byte: growing
 * one copies 1/256 of the set, where one table would hold the old and the
 * new copy of everything at once (at 300,000 snapshots, 1.1 million
 * objects: 126 MiB for a moment, against 44 MiB after).  Each is kept
 * between 53% and 80% full (grown by half), not a power of two: about 30
 * bytes an object.
 */
#define OIDSET_PARTS 256
#define OIDSET_MIN 16

typedef struct oidpart {
	uint8_t *keys;     /* cap * 20 bytes */
	uint8_t *flags;    /* 0 = empty slot, else the object's flag (1 = used; 2 = bad...) */
	size_t cap, n;
} oidpart;

typedef struct oidset {
	oidpart *part;     /* OIDSET_PARTS of them, from the first insert */
} oidset;

/* Where oid's probe starts in a table of cap slots (ids are uniform). */
static size_t oidpart_slot(size_t cap, const uint8_t oid[20])
{
	uint64_t h;

	memcpy(&h, oid, sizeof(h));
	return (size_t)(((unsigned __int128)h * cap) >> 64);
}

static uint8_t *oidpart_find(oidpart *p, const uint8_t oid[20], int insert);

static int oidpart_grow(oidpart *p)
{
	oidpart t = {0};

	t.cap = p->cap ? p->cap + p->cap / 2 : OIDSET_MIN;
	t.keys = calloc(t.cap, 20);
	t.flags = calloc(t.cap, 1);
	if (!t.keys || !t.flags) {
		free(t.keys);
		free(t.flags);
		return amber_fail(AMBER_ERROR, "out of memory");
	}
	for (size_t i = 0; i < p->cap; i++)
		if (p->flags[i])
			*oidpart_find(&t, p->keys + i * 20, 1) = p->flags[i];
	free(p->keys);
	free(p->flags);
	*p = t;
	return 0;
}

static uint8_t *oidpart_find(oidpart *p, const uint8_t oid[20], int insert)
{
	size_t i;

	if (insert && (p->n + 1) * 5 > p->cap * 4 && oidpart_grow(p) < 0)
		return NULL;
	if (!p->cap)
		return NULL;
	for (i = oidpart_slot(p->cap, oid); p->flags[i]; i = i + 1 < p->cap ? i + 1 : 0)
		if (memcmp(p->keys + i * 20, oid, 20) == 0)
			return &p->flags[i];
	if (!insert)
		return NULL;
	memcpy(p->keys + i * 20, oid, 20);
	p->flags[i] = 1;
	p->n++;
	return &p->flags[i];
}

/* The flag byte of oid (NULL if absent and not inserting, or out of memory). */
static uint8_t *oidset_find(oidset *s, const uint8_t oid[20], int insert)
{
	if (!s->part && !insert)
		return NULL;
	if (!s->part && !(s->part = calloc(OIDSET_PARTS, sizeof(*s->part)))) {
		amber_fail(AMBER_ERROR, "out of memory");
		return NULL;
	}
	return oidpart_find(&s->part[oid[19]], oid, insert);
}

static void oidset_dispose(oidset *s)
{
	for (size_t i = 0; s->part && i < OIDSET_PARTS; i++) {
		free(s->part[i].keys);
		free(s->part[i].flags);
	}
	free(s->part);
	memset(s, 0, sizeof(*s));
}

/* ---- the run's state -------------------------------------------------------------- */

struct stream {
	char name[AMBER_STREAM_MAX + 1];
	uint8_t tip[20];
	int mark_ok;            /* the chain walk passed the last verified tip */
	int have_mark;
	uint8_t mark[20];
	int peeled;             /* tags: tip is now the commit the tag names */
};

typedef struct vctx {
	amber_archive *a;
	const amber_verify_opts *o;
	amber_verify_stats st;
	oidset seen;            /* objects read and hashed: flag 2 = bad, 3 = listed */
	oidset dirs_ok, files_ok;
	oidset chunks_ok;       /* chunks decoded and authenticated (--read-data) */
	struct stream *streams;
	size_t nstreams;
	struct stream *tags;    /* name: the ref; tip: what it names */
	size_t ntags;
	uint8_t pk[32];
	int have_pk;
	int cfg_encrypted;      /* what the config text says; -1 unknown */
	uint64_t frames_e, frames_p;
	int config_bad;
	char *sample_record;    /* base64 record of one snapshot, to test keys */
	char slot_oid[AMBER_MAX_SLOTS][41];
	size_t nslot_oids;
	size_t slots_v2;        /* version-2 slots in the metadata */
	int meta_auth;          /* the metadata has an `auth` blob */
	int64_t last_progress;
	char *mark_dir;
	/* unsigned snapshots above signed history, judged once the key is known */
	struct unsigned_above { uint8_t oid[20]; char stream[AMBER_STREAM_MAX + 1]; } *ua;
	size_t nua;
	/* blobs of snapshot trees, listed by the structure walk */
	int defer;
	amber_store *rd;        /* the history walk reads through this twin (NULL: a->store) */
	size_t rd_snaps;        /* snapshots walked through rd */
	uint64_t rd_bytes;      /* bytes read through rd */
	int small_blobs;        /* the last blobs read mid-walk were small (< SMALL_BLOB) */
	amber_vblob *blobs;
	size_t nblobs, blobs_cap;
	/* read_data: the chunks to decode (see the top of the file) */
	int collect;            /* the walk queues chunks instead of decoding them */
	oidset chunks_queued;   /* link ids of jobs[] */
	amber_vjob *jobs;
	size_t njobs, jobs_cap;
	uint64_t data_base;     /* data_bytes before the decoding run */
	/* problems held while the walk only collects */
	int hold;
	struct held { int kind; char object[41]; char *snap, *path, *msg; } *held;
	size_t nheld, held_cap;
	/* Started at once on threads of their own (amber_verify): the pack
	 * checksums, whose problems come first, and the passphrase's key
	 * derivation for each slot.  Each thread writes only its own fields
	 * until it is joined. */
	pthread_t packs_tid, kdf_tid;
	int packs_started, kdf_started, packs_done;
	int packs_rc;
	char *packs_err;        /* the message of a packs_rc < 0 */
	struct packmsg { char *file, *msg; } *pm;
	size_t npm;
	amber_keys *slot_keys[AMBER_MAX_SLOTS];
	int slot_rc[AMBER_MAX_SLOTS];
} vctx;

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void progress(vctx *v)
{
	int64_t now;

	if (!v->o->progress)
		return;
	now = mono_ns();
	if (now - v->last_progress < 100000000)
		return;
	v->last_progress = now;
	v->o->progress(&v->st, v->o->payload);
}

static void problem(vctx *v, int kind, const uint8_t *oid, const char *snap, const char *path,
		    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Keep a copy of p to pass on later; 0, or -1 (out of memory: pass it on now). */
static int hold(vctx *v, const amber_verify_problem *p)
{
	struct held *h;

	if (v->nheld == v->held_cap) {
		size_t cap = v->held_cap ? v->held_cap * 2 : 16;
		struct held *n = realloc(v->held, cap * sizeof(*n));

		if (!n)
			return -1;
		v->held = n;
		v->held_cap = cap;
	}
	h = &v->held[v->nheld];
	h->kind = p->kind;
	snprintf(h->object, sizeof(h->object), "%s", p->object);
	h->snap = strdup(p->snapshot);
	h->path = strdup(p->path);
	h->msg = strdup(p->message);
	if (!h->snap || !h->path || !h->msg) {
		free(h->snap);
		free(h->path);
		free(h->msg);
		return -1;
	}
	v->nheld++;
	return 0;
}

/* Pass a held problem on (give = 1) or drop it (it was counted when held). */
static void give_held(vctx *v, struct held *h, int give)
{
	amber_verify_problem p = {h->kind, h->object, h->snap, h->path, h->msg};

	if (give && v->o->problem)
		v->o->problem(&p, v->o->payload);
	free(h->snap);
	free(h->path);
	free(h->msg);
}

/* Take the held problems out of v (*n of them); stop holding. */
static struct held *take_held(vctx *v, size_t *n)
{
	struct held *h = v->held;

	*n = v->nheld;
	v->held = NULL;
	v->nheld = v->held_cap = 0;
	v->hold = 0;
	return h;
}

/* Pass the held problems on (give = 1) or drop them; stop holding. */
static void release_held(vctx *v, int give)
{
	size_t n;
	struct held *h = take_held(v, &n);

	for (size_t i = 0; i < n; i++)
		give_held(v, &h[i], give);
	free(h);
}

static void problem(vctx *v, int kind, const uint8_t *oid, const char *snap, const char *path,
		    const char *fmt, ...)
{
	amber_verify_problem p;
	char hex[41] = "", msg[1024];
	va_list ap;

	if (oid)
		amber_oid_tohex(hex, oid);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	p.kind = kind;
	p.object = hex;
	p.snapshot = snap ? snap : "";
	p.path = path ? path : "";
	p.message = msg;
	v->st.problems++;
	if (v->hold && hold(v, &p) == 0)
		return;
	if (v->o->problem)
		v->o->problem(&p, v->o->payload);
}

const char *amber_verify_kind_name(int kind)
{
	static const char *const names[] = {
		"?", "missing", "corrupt", "malformed", "authentication", "history",
		"signature", "rollback", "rewritten", "config", "keyslot",
	};

	return kind > 0 && kind <= AMBER_VERIFY_KEYSLOT ? names[kind] : "?";
}

/* ---- objects ---------------------------------------------------------------------- */

static const char *gittype_name(int t)
{
	static const char *const n[] = {"?", "commit", "tree", "blob", "tag"};

	return t >= 1 && t <= 4 ? n[t] : "?";
}

/*
 * Read and hash object oid, expecting `want` (0: any).  @return 1 if it is
 * good and was read now (out filled, *type set), 0 if seen before (out not
 * filled; *bad says how it went), -1 after reporting a problem.
 */
static int obj_get(vctx *v, amber_buf *out, int *type, const uint8_t oid[20], int want,
		   const char *snap, const char *what)
{
	uint8_t *flag = oidset_find(&v->seen, oid, 0), sum[20];
	int rc;

	if (flag)
		return *flag == 2 ? -1 : 0;
	if (!(flag = oidset_find(&v->seen, oid, 1)))
		return -2;  /* out of memory, already recorded */
	*flag = 2;
	rc = amber_store_read(out, type, v->rd ? v->rd : v->a->store, oid, MAX_OBJECT);
	if (rc == AMBER_ENOTFOUND) {
		problem(v, AMBER_VERIFY_MISSING, oid, snap, NULL, "%s: object is missing", what);
		return -1;
	}
	if (rc < 0) {
		problem(v, AMBER_VERIFY_CORRUPT, oid, snap, NULL, "%s: object is corrupt (%s)",
			what, amber_error_last());
		return -1;
	}
	v->st.objects++;
	v->st.bytes += out->len;
	v->rd_bytes += out->len;
	progress(v);
	amber_store_hash(sum, *type, out->data, out->len);
	if (memcmp(sum, oid, 20) != 0) {
		problem(v, AMBER_VERIFY_CORRUPT, oid, snap, NULL,
			"%s: object is corrupt: its content does not hash to its id", what);
		return -1;
	}
	if (want && *type != want) {
		problem(v, AMBER_VERIFY_MALFORMED, oid, snap, NULL, "%s: a %s where a %s belongs",
			what, gittype_name(*type), gittype_name(want));
		return -1;
	}
	*flag = 1;
	return 1;
}

/* An amberfs frame header, and count its mode against the config. */
static void check_frame(vctx *v, const uint8_t *d, size_t len, const uint8_t oid[20],
			const char *snap, const char *what)
{
	if (len < AMBER_FRAME_HDR + AMBER_INNER_HDR || memcmp(d, "amb", 3) != 0 || d[3] != 1 ||
	    (d[4] != 'E' && d[4] != 'P')) {
		problem(v, AMBER_VERIFY_MALFORMED, oid, snap, NULL,
			"%s: not an amberfs format 1 object frame", what);
		return;
	}
	if (d[4] == 'E')
		v->frames_e++;
	else
		v->frames_p++;
}

/* List blob oid for the threads (flag 3 until then); 0, or -2 out of memory. */
static int defer_blob(vctx *v, const uint8_t oid[20], const char *snap)
{
	amber_vblob *b;
	uint8_t *flag;

	if (oidset_find(&v->seen, oid, 0))
		return 0;
	if (v->nblobs == v->blobs_cap) {
		size_t cap = v->blobs_cap ? v->blobs_cap * 2 : 1024;

		if (!(b = realloc(v->blobs, cap * sizeof(*b)))) {
			amber_fail(AMBER_ERROR, "out of memory");
			return -2;
		}
		v->blobs = b;
		v->blobs_cap = cap;
	}
	if (!(flag = oidset_find(&v->seen, oid, 1)))
		return -2;
	*flag = 3;
	b = &v->blobs[v->nblobs];
	memset(b, 0, sizeof(*b));
	memcpy(b->at.oid, oid, 20);
	snprintf(b->snap, sizeof(b->snap), "%s", snap ? snap : "");
	b->seq = v->nblobs++;
	b->held_at = v->nheld;
	return 0;
}

static int walk_tree(vctx *v, const uint8_t oid[20], const char *snap, int frames, int depth);

static int walk_entries(vctx *v, const amber_tparsed *t, size_t n, const char *snap,
			int frames, int depth)
{
	amber_buf b = AMBER_BUF_INIT;
	int type = 0, rc = 0;

	for (size_t i = 0; rc >= 0 && i < n; i++) {
		if (t[i].mode == AMBER_GIT_MODE_TREE) {
			rc = walk_tree(v, t[i].oid, snap, frames, depth + 1);
			continue;
		}
		if (frames && v->defer) {
			rc = defer_blob(v, t[i].oid, snap);
			continue;
		}
		amber_buf_init(&b, MAX_OBJECT);
		if (obj_get(v, &b, &type, t[i].oid, AMBER_GIT_BLOB, snap, "blob") == 1 && frames)
			check_frame(v, b.data, b.len, t[i].oid, snap, "blob");
		amber_buf_dispose(&b);
	}
	return rc;
}

/* Every object under tree oid; `frames`: its blobs are amberfs frames. */
static int walk_tree(vctx *v, const uint8_t oid[20], const char *snap, int frames, int depth)
{
	amber_buf b = AMBER_BUF_INIT;
	amber_tparsed *t = NULL;
	size_t n = 0;
	int type = 0, rc;

	amber_buf_init(&b, MAX_OBJECT);
	if (depth > MAX_DEPTH) {
		problem(v, AMBER_VERIFY_MALFORMED, oid, snap, NULL, "trees nested too deep");
		return 0;
	}
	rc = obj_get(v, &b, &type, oid, AMBER_GIT_TREE, snap, "tree");
	if (rc == 1 && amber_tree_parse(&t, &n, b.data, b.len, "tree") < 0)
		problem(v, AMBER_VERIFY_MALFORMED, oid, snap, NULL, "%s", amber_error_last());
	else if (rc == 1)
		rc = walk_entries(v, t, n, snap, frames, depth);
	free(t);
	amber_buf_dispose(&b);
	return rc < -1 ? rc : 0;
}

/* ---- snapshot commits ---------------------------------------------------------------- */

static int count_parents(const uint8_t *d, size_t len)
{
	const char *p = (const char *)d, *end = p + len;
	int n = 0;

	while (p < end && *p != '\n') {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		if (!nl)
			break;
		if (nl - p > 7 && memcmp(p, "parent ", 7) == 0)
			n++;
		p = nl + 1;
	}
	return n;
}

/* The header line starting with key (e.g. "author "), NUL-terminated copy. */
static int header_line(char *out, size_t cap, const uint8_t *d, size_t len, const char *key)
{
	const char *p = (const char *)d, *end = p + len;
	size_t kl = strlen(key);

	while (p < end && *p != '\n') {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);

		if (ll > kl && memcmp(p, key, kl) == 0 && ll - kl < cap) {
			memcpy(out, p + kl, ll - kl);
			out[ll - kl] = '\0';
			return 0;
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	return -1;
}

static int64_t floor_sec(int64_t ns)
{
	return ns >= 0 ? ns / 1000000000 : -((-ns + 999999999) / 1000000000);
}

/* amberfs writes author and committer as "amberfs <amberfs@localhost> SEC +0000". */
static void check_idents(vctx *v, const amber_buf *b, int64_t t, const uint8_t oid[20],
			 const char *hex)
{
	static const char *const keys[] = {"author ", "committer "};
	char line[256], want[128];

	snprintf(want, sizeof(want), "amberfs <amberfs@localhost> %" PRId64 " +0000",
		 floor_sec(t));
	for (int i = 0; i < 2; i++)
		if (header_line(line, sizeof(line), b->data, b->len, keys[i]) < 0 ||
		    strcmp(line, want) != 0)
			problem(v, AMBER_VERIFY_MALFORMED, oid, hex, NULL,
				"snapshot commit's %sline is not the one amberfs writes "
				"(a commit made by other tools?)", keys[i]);
}

static void check_record_frame(vctx *v, const char *b64, const uint8_t oid[20], const char *hex)
{
	size_t cap = strlen(b64), len = 0;
	uint8_t *bin = cap < MAX_RECORD_B64 ? malloc(cap + 1) : NULL;

	if (!bin || amber_base64_decode(bin, &len, b64, cap) != 0)
		problem(v, AMBER_VERIFY_MALFORMED, oid, hex, NULL,
			"snapshot record is not valid base64");
	else
		check_frame(v, bin, len, oid, hex, "snapshot record");
	free(bin);
	if (!v->sample_record)
		v->sample_record = strdup(b64);
}

/* ---- signatures ----------------------------------------------------------------------- */

/*
 * Signed state of one stream, newest first: once an older snapshot is
 * signed, every newer one must be too (a missing signature above signed
 * history means it was stripped by a rewrite).
 */
static int check_signature(vctx *v, const amber_buf *b, int gittype, const uint8_t oid[20],
			   const char *hex, const char *what)
{
	amber_buf payload = AMBER_BUF_INIT;
	char *armored = NULL;
	int rc, signed_ = 0;

	amber_buf_init(&payload, MAX_OBJECT);
	rc = amber_object_split_signature(&payload, &armored, gittype, b->data, b->len);
	if (rc < 0) {
		problem(v, AMBER_VERIFY_SIGNATURE, oid, hex, NULL, "%s: malformed signature (%s)",
			what, amber_error_last());
	} else if (!armored) {
		if (gittype == AMBER_GIT_COMMIT) {
			v->st.unsigned_snapshots++;
			if (v->o->unsigned_snapshot)
				v->o->unsigned_snapshot(hex, v->o->payload);
		}
	} else if (!v->have_pk) {
		signed_ = 1;
		v->st.unchecked++;
	} else {
		signed_ = 1;
		rc = amber_sshsig_verify(armored, v->pk, "git", payload.data, payload.len);
		if (rc < 0)
			problem(v, AMBER_VERIFY_SIGNATURE, oid, hex, NULL,
				"%s: bad signature: not made by the archive's signing key over "
				"this %s (%s)", what, gittype_name(gittype), amber_error_last());
		else if (gittype == AMBER_GIT_COMMIT)
			v->st.signed_ok++;
	}
	free(armored);
	amber_buf_dispose(&payload);
	return signed_;
}

/* ---- streams ---------------------------------------------------------------------------- */

/* One snapshot commit of a stream; sets *next to its parent. */
static int check_snapshot(vctx *v, struct stream *s, const uint8_t oid[20], int64_t *newer,
			  int *is_signed, uint8_t next[20], int *has_next)
{
	amber_buf b = AMBER_BUF_INIT;
	amber_commit c = {0};
	char hex[41], *tt = NULL, *rec = NULL;
	int64_t t = 0;
	int type = 0, rc, np;

	*has_next = 0;
	*is_signed = -1;
	amber_oid_tohex(hex, oid);
	amber_buf_init(&b, MAX_OBJECT);
	rc = obj_get(v, &b, &type, oid, AMBER_GIT_COMMIT, hex, "snapshot commit");
	if (rc != 1)
		goto done;
	v->st.snapshots++;
	if ((np = count_parents(b.data, b.len)) > 1) {
		problem(v, AMBER_VERIFY_HISTORY, oid, hex, NULL,
			"merge commit with %d parents on stream '%s': history is not linear", np,
			s->name);
		goto done;
	}
	if (amber_commit_parse(&c, b.data, b.len, hex) < 0) {
		problem(v, AMBER_VERIFY_MALFORMED, oid, hex, NULL, "%s", amber_error_last());
		goto done;
	}
	tt = amber_trailer_get(c.message, "Amberfs-Time");
	if (!tt || amber_time_parse(&t, tt) < 0) {
		problem(v, AMBER_VERIFY_MALFORMED, oid, hex, NULL,
			"snapshot commit has no valid Amberfs-Time trailer");
	} else {
		if (t >= *newer)
			problem(v, AMBER_VERIFY_HISTORY, oid, hex, NULL,
				"snapshot on stream '%s' is not older than its child: times must "
				"strictly increase along a stream", s->name);
		*newer = t;
		check_idents(v, &b, t, oid, hex);
	}
	if (!(rec = amber_trailer_get(c.message, "Amberfs-Record")))
		problem(v, AMBER_VERIFY_MALFORMED, oid, hex, NULL,
			"snapshot commit has no Amberfs-Record trailer");
	else
		check_record_frame(v, rec, oid, hex);
	*is_signed = check_signature(v, &b, AMBER_GIT_COMMIT, oid, hex, "snapshot");
	walk_tree(v, c.tree, hex, 1, 0);
	if (c.nparents == 1) {
		memcpy(next, c.parent, 20);
		*has_next = 1;
	}
done:
	free(tt);
	free(rec);
	amber_commit_dispose(&c);
	amber_buf_dispose(&b);
	return rc < -1 ? rc : 0;
}

/* Remember an unsigned snapshot above signed history (judged by judge_unsigned). */
static void unsigned_above(vctx *v, const char *hex, const char *stream)
{
	struct unsigned_above *n = realloc(v->ua, (v->nua + 1) * sizeof(*n));

	if (!n) {
		problem(v, AMBER_VERIFY_SIGNATURE, NULL, hex, NULL,
			"snapshot %s is unsigned but older snapshots of stream '%s' are signed "
			"(out of memory to judge it further)", hex, stream);
		return;
	}
	v->ua = n;
	amber_oid_fromhex(n[v->nua].oid, hex);
	snprintf(n[v->nua].stream, sizeof(n[v->nua].stream), "%s", stream);
	v->nua++;
}

static void warning(vctx *v, const char *snap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void warning(vctx *v, const char *snap, const char *fmt, ...)
{
	amber_verify_problem p = {0};
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	p.kind = AMBER_VERIFY_SIGNATURE;
	p.object = "";
	p.snapshot = snap;
	p.path = "";
	p.message = msg;
	v->st.warnings++;
	if (v->o->warning)
		v->o->warning(&p, v->o->payload);
}

/*
 * An unsigned snapshot above signed ones is a stripped signature unless its
 * record, authenticated with the archive's key, says a key holder wrote it
 * unsigned on purpose (--unsigned).  A plain archive's record is not
 * authenticated, and without the key it cannot be read: both stay problems.
 */
static void judge_unsigned(vctx *v, const struct unsigned_above *u)
{
	amber_record rec;
	char hex[41];
	int deliberate = 0, readable = v->st.keyed && v->a->encrypted;

	amber_oid_tohex(hex, u->oid);
	if (readable && amber_record_read(&rec, v->a, u->oid) == 0) {
		deliberate = rec.unsigned_on_purpose;
		amber_record_dispose(&rec);
	} else if (readable) {
		amber_error_clear(); /* an unreadable record is reported by the keyed walk */
	}
	if (deliberate) {
		warning(v, hex, "snapshot %s of stream '%s' is unsigned: its authenticated record "
			"says a key holder wrote it unsigned on purpose (--unsigned)", hex, u->stream);
		return;
	}
	problem(v, AMBER_VERIFY_SIGNATURE, NULL, hex, NULL,
		"snapshot %s is unsigned but older snapshots of stream '%s' are signed: %s", hex,
		u->stream, readable ? "its signature was stripped (rewritten commit)" :
		!v->a->encrypted ? "a stripped signature, or --unsigned (a plain archive's "
		"record cannot prove which)" : "a stripped signature unless it was written "
		"with --unsigned (verify with the key to tell)");
}

/*
 * What the history walk holds must not grow with the history (as log's
 * walk, resolve.c): libgit2 keeps what a store read (its object cache, up
 * to 16 MiB; pack windows, up to 32 MiB; each pack index mapped whole,
 * with the pages a lookup touched resident, and the kernel maps 64 KiB
 * around each page faulted in), and the blobs listed for the threads took
 * about 130 bytes each.  So the walk reads through a twin of the archive's
 * store, replaced once WALK_BYTES have been read through it or WALK_BATCH
 * snapshots walked, and the blobs are read and judged BLOB_SEGMENT at a
 * time, between two snapshots, through the twin that read their trees,
 * their problems held in the walk's order as before.  At 100,000
 * snapshots: 134 MiB peak before, 46 MiB after (with `seen` in parts); a
 * twin costs a few ms (the pack indexes are checked and mapped again),
 * which the batches keep to a few percent at that length.  What is left
 * growing is `seen`, about 30 bytes an object: it is what lets the walk
 * skip every subtree it met before, and the keyed pass finds the snapshots
 * it may walk in it.
 */
#define WALK_BATCH 1024
#define WALK_BYTES ((uint64_t)4 << 20)
#define BLOB_SEGMENT 64
#define ORDER_MIN 4096  /* fewer listed blobs are read in the order listed */
#define SMALL_BLOB 16384 /* blobs this small are read mid-walk on the walk's thread */

/* Append a problem taken out of the held list (moved, not copied). */
static void hold_again(vctx *v, struct held *h)
{
	if (v->nheld == v->held_cap) {
		size_t cap = v->held_cap ? v->held_cap * 2 : 16;
		struct held *n = realloc(v->held, cap * sizeof(*n));

		if (!n) {
			give_held(v, h, 1);     /* as hold() does: pass it on now */
			return;
		}
		v->held = n;
		v->held_cap = cap;
	}
	v->held[v->nheld++] = *h;
}

static void blob_result(vctx *v, const amber_vblob *b);
static void blob_progress(const amber_vdata_stats *d, void *payload);
static int by_seq(const void *x, const void *y);

/*
 * Read and judge the blobs listed so far, in the middle of the walk: their
 * problems join the held ones where check_blobs would have put them (the
 * pack checksums' still come first: check_blobs gives them all at the end).
 */
static int flush_blobs(vctx *v)
{
	amber_vdata_stats d = {0};
	int threads = v->small_blobs ? 1 : v->o->version >= 2 ? v->o->threads : 0;
	struct held *h;
	size_t n, k = 0;
	int rc = amber_vblob_run(&d, v->a, v->rd, v->nblobs < ORDER_MIN, v->blobs, v->nblobs,
				 MAX_OBJECT, threads > 0 ? (unsigned)threads : 0, blob_progress, v);

	if (rc < 0)
		return rc;
	v->rd_bytes += d.raw_bytes;
	/* starting threads for a few dozen small blobs costs more than it saves */
	v->small_blobs = v->nblobs && d.raw_bytes / v->nblobs < SMALL_BLOB;
	h = v->held;
	n = v->nheld;
	v->held = NULL;
	v->nheld = v->held_cap = 0;
	qsort(v->blobs, v->nblobs, sizeof(*v->blobs), by_seq);
	for (size_t i = 0; i < v->nblobs; i++) {
		while (k < n && k < v->blobs[i].held_at)
			hold_again(v, &h[k++]);
		blob_result(v, &v->blobs[i]);
		free(v->blobs[i].msg);
	}
	while (k < n)
		hold_again(v, &h[k++]);
	free(h);
	v->nblobs = 0;
	return 0;
}

/*
 * After each snapshot of the walk: the blobs if there are enough, and a
 * new twin if this one has read enough.  The old twin goes first: libgit2
 * hands a pack's handle (its windows, its index map) to any odb that opens
 * the same path while the handle is still open.  If no twin can be opened
 * the walk reads on through the archive's store: what that holds is
 * bounded by libgit2's limits, only larger.
 */
static int batch_end(vctx *v)
{
	int rc = v->nblobs >= BLOB_SEGMENT ? flush_blobs(v) : 0;

	if (++v->rd_snaps < WALK_BATCH && v->rd_bytes < WALK_BYTES)
		return rc;
	amber_store_free(v->rd);
	if (amber_store_open_twin(&v->rd, v->a->store) < 0)
		amber_error_clear();
	v->rd_snaps = 0;
	v->rd_bytes = 0;
	return rc;
}

/*
 * Walk a stream from its tip along first parents.  Signatures: walking
 * back, a signed snapshot below an unsigned one means the newer one lost
 * its signature (snapshots from before the archive had a signing key are
 * unsigned, but nothing after a signed one is).
 */
static int walk_stream(vctx *v, struct stream *s)
{
	uint8_t cur[20], next[20];
	int64_t newer = INT64_MAX;
	char unsigned_hex[41] = "";
	int has = 1, rc = 0, is_signed;

	memcpy(cur, s->tip, 20);
	while (has && rc == 0) {
		char hex[41];

		amber_oid_tohex(hex, cur);
		if (s->have_mark && memcmp(cur, s->mark, 20) == 0)
			s->mark_ok = 1;
		if (oidset_find(&v->seen, cur, 0))
			break;  /* shared with a stream already walked */
		rc = check_snapshot(v, s, cur, &newer, &is_signed, next, &has);
		if (is_signed == 0 && !unsigned_hex[0])
			memcpy(unsigned_hex, hex, 41);
		if (is_signed == 1 && unsigned_hex[0]) {
			unsigned_above(v, unsigned_hex, s->name);
			unsigned_hex[0] = '\0';
		}
		memcpy(cur, next, 20);
		if (rc == 0)
			rc = batch_end(v);
	}
	return rc;
}

/* ---- high-water marks -------------------------------------------------------------------- */

/* Not a stream name (those never start with '.'), so no stream's mark. */
#define SLOT_MARK ".keyslots"

static char *mark_path(vctx *v, const char *name)
{
	size_t len;
	char *p;

	if (!v->mark_dir)
		return NULL;
	len = strlen(v->mark_dir) + strlen(name) + 16;
	if ((p = malloc(len)))
		snprintf(p, len, "%s/verified-%s", v->mark_dir, name);
	return p;
}

static int mark_read(uint8_t oid[20], vctx *v, const char *name)
{
	char *p = mark_path(v, name), text[64] = "";
	FILE *f = p ? fopen(p, "r") : NULL;
	int rc = -1;

	if (f && fgets(text, sizeof(text), f) && strlen(text) >= 40) {
		text[40] = '\0';
		rc = amber_oid_fromhex(oid, text) < 0 ? -1 : 0;
	}
	if (f)
		fclose(f);
	free(p);
	return rc;
}

/* Replace the mark file atomically (a new temporary file, fsync, rename). */
static int mark_write(vctx *v, const char *name, const char *text)
{
	char *p = mark_path(v, name);
	int rc = p ? amber_file_replace(p, text, strlen(text)) : AMBER_ERROR;

	if (rc < 0)
		amber_fail(AMBER_ERROR, "cannot write verify mark %s: %s", p ? p : name,
			   amber_error_last());
	free(p);
	return rc < 0 ? AMBER_ERROR : 0;
}

/* Is `anc` on the first-parent chain of `from`? 1 yes, 0 no, -1 `from` unreadable. */
static int on_chain(vctx *v, const uint8_t from[20], const uint8_t anc[20])
{
	uint8_t cur[20], parent[20];
	int64_t t;
	int has = 1;

	memcpy(cur, from, 20);
	for (uint64_t n = 0; has && n < ((uint64_t)1 << 32); n++) {
		if (memcmp(cur, anc, 20) == 0)
			return 1;
		if (amber_commit_time(&t, parent, &has, v->a, cur) < 0)
			return n == 0 ? -1 : 0;
		memcpy(cur, parent, 20);
	}
	return 0;
}

static void check_mark(vctx *v, struct stream *s)
{
	char tip[41], mark[41];
	int r;

	if (!s->have_mark || s->mark_ok)
		return;
	amber_oid_tohex(tip, s->tip);
	amber_oid_tohex(mark, s->mark);
	r = on_chain(v, s->mark, s->tip);
	amber_error_clear();
	if (r == 1)
		problem(v, AMBER_VERIFY_ROLLBACK, s->tip, tip, NULL,
			"stream '%s' was moved back: it points at %s, an ancestor of %s which "
			"an earlier verify saw as its tip", s->name, tip, mark);
	else
		problem(v, AMBER_VERIFY_REWRITTEN, s->tip, tip, NULL,
			"stream '%s' has other history: its tip %s does not descend from %s, "
			"the tip an earlier verify saw%s", s->name, tip, mark,
			r < 0 ? " (which is no longer in the archive)" : "");
}

static int marks_save(vctx *v)
{
	char text[64 * AMBER_MAX_SLOTS], line[64];
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < v->nstreams; i++) {
		char hex[41];

		amber_oid_tohex(hex, v->streams[i].tip);
		snprintf(line, sizeof(line), "%s\n", hex);
		rc = mark_write(v, v->streams[i].name, line);
	}
	text[0] = '\0';
	for (size_t i = 0; i < v->nslot_oids; i++) {
		snprintf(line, sizeof(line), "%s\n", v->slot_oid[i]);
		strncat(text, line, sizeof(text) - strlen(text) - 1);
	}
	if (rc == 0)
		rc = mark_write(v, SLOT_MARK, text);
	return rc;
}

/*
 * The slot mark, or an older version's verified-keyslots when there is no
 * new one yet and no stream could have written that file.
 */
static FILE *slot_mark_open(vctx *v)
{
	char *p = mark_path(v, SLOT_MARK);
	FILE *f = p ? fopen(p, "r") : NULL;

	free(p);
	for (size_t i = 0; i < v->nstreams; i++)
		if (strcmp(v->streams[i].name, "keyslots") == 0)
			return f;
	if (!f && (p = mark_path(v, "keyslots"))) {
		f = fopen(p, "r");
		free(p);
	}
	return f;
}

static int slot_listed(char list[][41], size_t n, const char *hex)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], hex) == 0)
			return 1;
	return 0;
}

/*
 * Slots added, removed or replaced since the last clean verify.  Without
 * the key nobody can tell an owner's change from an intruder's, so each is
 * a problem; with the key the authenticator (check_auth) decides.
 */
static void check_slot_marks(vctx *v, int keyed_ok)
{
	char line[64], old[AMBER_MAX_SLOTS][41];
	size_t n = 0;
	FILE *f = slot_mark_open(v);

	if (!f)
		return;
	while (n < AMBER_MAX_SLOTS && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		snprintf(old[n++], sizeof(old[0]), "%.40s", line);
	}
	fclose(f);
	if (keyed_ok)
		return;
	for (size_t i = 0; i < v->nslot_oids; i++)
		if (!slot_listed(old, n, v->slot_oid[i]))
			problem(v, AMBER_VERIFY_KEYSLOT, NULL, NULL, NULL,
				"key slot %zu (blob %s) was added or replaced since the last verify; "
				"if an owner changed the slots, run verify with the key to accept it",
				i, v->slot_oid[i]);
	for (size_t i = 0; i < n; i++)
		if (!slot_listed(v->slot_oid, v->nslot_oids, old[i]))
			problem(v, AMBER_VERIFY_KEYSLOT, NULL, NULL, NULL,
				"a key slot (blob %s) was removed since the last verify; if an owner "
				"removed it, run verify with the key to accept it", old[i]);
}

/* ---- refs and the metadata ------------------------------------------------------------------ */

static int add_stream(struct stream **list, size_t *n, const char *name, const uint8_t oid[20])
{
	struct stream *s = realloc(*list, (*n + 1) * sizeof(*s));

	if (!s)
		return amber_fail(AMBER_ERROR, "out of memory");
	*list = s;
	s = &s[(*n)++];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	memcpy(s->tip, oid, 20);
	return 0;
}

static int ref_cb(const char *name, const uint8_t oid[20], void *payload)
{
	vctx *v = payload;
	const char *rest;

	if (strncmp(name, "refs/heads/", 11) == 0) {
		rest = name + 11;
		if (!amber_refname_valid(rest)) {
			problem(v, AMBER_VERIFY_MALFORMED, oid, NULL, NULL,
				"ref %s: not a valid stream name", name);
			return 0;
		}
		if (add_stream(&v->streams, &v->nstreams, rest, oid) < 0)
			return AMBER_ERROR;
		v->streams[v->nstreams - 1].have_mark =
			mark_read(v->streams[v->nstreams - 1].mark, v, rest) == 0;
		return 0;
	}
	if (strncmp(name, "refs/tags/", 10) == 0) {
		if (!amber_refname_valid(name + 10))
			problem(v, AMBER_VERIFY_MALFORMED, oid, NULL, NULL,
				"ref %s: not a valid tag name", name);
		else
			return add_stream(&v->tags, &v->ntags, name + 10, oid);
	}
	return 0;
}

/* The commit a tag ref names (peeling an annotated tag); 0 or -1. */
static int tag_target(vctx *v, uint8_t target[20], const struct stream *t)
{
	amber_buf b = AMBER_BUF_INIT;
	char hex[41] = "", what[96];
	int type = 0, rc;

	snprintf(what, sizeof(what), "tag %s", t->name);
	memcpy(target, t->tip, 20);
	if (oidset_find(&v->seen, t->tip, 0))
		return 0;
	amber_buf_init(&b, MAX_OBJECT);
	rc = amber_store_read(&b, &type, v->a->store, t->tip, MAX_OBJECT);
	amber_buf_dispose(&b);
	amber_error_clear();
	if (rc < 0 || type == AMBER_GIT_COMMIT)
		return 0;  /* a lightweight tag, or reported by the walk below */
	amber_buf_init(&b, MAX_OBJECT);
	rc = obj_get(v, &b, &type, t->tip, AMBER_GIT_TAG, NULL, what) == 1 ? 0 : -1;
	if (rc == 0 && b.len > 47 && memcmp(b.data, "object ", 7) == 0)
		memcpy(hex, b.data + 7, 40);
	if (rc == 0 && amber_oid_fromhex(target, hex) < 0) {
		problem(v, AMBER_VERIFY_MALFORMED, t->tip, NULL, NULL, "%s: malformed tag", what);
		rc = -1;
	}
	if (rc == 0)
		check_signature(v, &b, AMBER_GIT_TAG, t->tip, NULL, what);
	amber_error_clear();
	amber_buf_dispose(&b);
	return rc;
}

/* Tags name snapshots; one outside every stream is walked on its own. */
static int check_tags(vctx *v)
{
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < v->ntags; i++) {
		struct stream t = v->tags[i];

		if (tag_target(v, t.tip, &v->tags[i]) < 0)
			continue;
		memcpy(v->tags[i].tip, t.tip, 20);
		v->tags[i].peeled = 1;
		rc = walk_stream(v, &t);
	}
	return rc;
}

/* A passphrase slot's public part (amberfs-format(5) KEY SLOTS). */
static void check_slot(vctx *v, const uint8_t *d, size_t len, const uint8_t oid[20], size_t i)
{
	if (len >= 8 && memcmp(d, "AMBSLOT2", 8) == 0)
		v->slots_v2++;
	if (amber_keyslot_check(d, len) < 0)
		problem(v, AMBER_VERIFY_KEYSLOT, oid, NULL, NULL, "key slot %zu: %s", i,
			amber_error_last());
	else if (amber_keyslot_weak(d, len))
		v->st.weak_slots++;
}

static void check_slots(vctx *v, const uint8_t tree[20])
{
	amber_buf t = AMBER_BUF_INIT;
	amber_tparsed *e = NULL;
	size_t n = 0;
	int type = 0;

	amber_buf_init(&t, MAX_OBJECT);
	if (obj_get(v, &t, &type, tree, AMBER_GIT_TREE, NULL, "key slot tree") == 1 &&
	    amber_tree_parse(&e, &n, t.data, t.len, "key slot tree") < 0)
		problem(v, AMBER_VERIFY_MALFORMED, tree, NULL, NULL, "%s", amber_error_last());
	for (size_t i = 0; i < n && i < AMBER_MAX_SLOTS; i++) {
		amber_buf s = AMBER_BUF_INIT;

		amber_buf_init(&s, MAX_OBJECT);
		amber_oid_tohex(v->slot_oid[v->nslot_oids++], e[i].oid);
		if (e[i].mode != AMBER_GIT_MODE_BLOB)
			problem(v, AMBER_VERIFY_KEYSLOT, e[i].oid, NULL, NULL,
				"key slot %zu is not a blob", i);
		else if (obj_get(v, &s, &type, e[i].oid, AMBER_GIT_BLOB, NULL, "key slot") == 1)
			check_slot(v, s.data, s.len, e[i].oid, i);
		amber_buf_dispose(&s);
	}
	free(e);
	amber_buf_dispose(&t);
}

static void check_config_text(vctx *v, const amber_buf *b, const uint8_t oid[20])
{
	char *text = strndup((const char *)b->data, b->len);

	v->cfg_encrypted = -1;
	if (text && strstr(text, "\nencryption none\n"))
		v->cfg_encrypted = 0;
	else if (text && strstr(text, "\nencryption xchacha20poly1305-blake2b\n"))
		v->cfg_encrypted = 1;
	if (!text || strncmp(text, "format 1\nid ", 12) != 0 || v->cfg_encrypted < 0 ||
	    !strstr(text, "\nchunker fastcdc-gear ") || !strstr(text, "\ncompression zstd "))
		problem(v, AMBER_VERIFY_CONFIG, oid, NULL, NULL,
			"the archive config is malformed (amberfs-format(5) THE METADATA COMMIT)");
	free(text);
}

static void check_meta_tree(vctx *v, const uint8_t tree[20])
{
	amber_buf t = AMBER_BUF_INIT, cfg = AMBER_BUF_INIT;
	amber_tparsed *e = NULL;
	const amber_tparsed *x;
	size_t n = 0;
	int type = 0;

	amber_buf_init(&t, MAX_OBJECT);
	amber_buf_init(&cfg, MAX_OBJECT);
	if (obj_get(v, &t, &type, tree, AMBER_GIT_TREE, NULL, "metadata tree") != 1)
		goto done;
	if (amber_tree_parse(&e, &n, t.data, t.len, "metadata tree") < 0) {
		problem(v, AMBER_VERIFY_MALFORMED, tree, NULL, NULL, "%s", amber_error_last());
		goto done;
	}
	if (!(x = amber_tree_find(e, n, "config")))
		problem(v, AMBER_VERIFY_CONFIG, tree, NULL, NULL, "the archive has no config");
	else if (obj_get(v, &cfg, &type, x->oid, AMBER_GIT_BLOB, NULL, "config") == 1)
		check_config_text(v, &cfg, x->oid);
	if ((x = amber_tree_find(e, n, "keys")))
		check_slots(v, x->oid);
	v->meta_auth = amber_tree_find(e, n, "auth") != NULL;
	if (v->slots_v2 && !v->meta_auth)
		problem(v, AMBER_VERIFY_KEYSLOT, tree, NULL, NULL,
			"the archive has version-2 key slots but no metadata authenticator: it "
			"was removed, so the key slots or config were changed by someone without "
			"the key (tampering)");
	if (v->cfg_encrypted == 0 && x)
		problem(v, AMBER_VERIFY_CONFIG, tree, NULL, NULL,
			"the config says encryption none, yet the archive has key slots: the "
			"config is inconsistent (edited?)");
	if (v->cfg_encrypted == 1 && !x)
		problem(v, AMBER_VERIFY_CONFIG, tree, NULL, NULL,
			"the config says the archive is encrypted, yet it has no key slots");
	if (v->cfg_encrypted == 0 && amber_archive_seen_encrypted(v->a))
		problem(v, AMBER_VERIFY_CONFIG, tree, NULL, NULL,
			"the config says encryption none, but this machine saw the archive "
			"encrypted: the config was rewritten (a downgrade)");
done:
	free(e);
	amber_buf_dispose(&cfg);
	amber_buf_dispose(&t);
}

/* What a metadata commit's tree holds, to compare it with its parent's. */
struct meta_ids {
	uint8_t keys[20], auth[20], config[20];
	int has_keys, has_auth, has_config, has_signing;
	int sig;                /* 1 signed and good, 0 unsigned, -1 bad or unchecked */
};

static void meta_ids_of(vctx *v, const uint8_t tree[20], struct meta_ids *m)
{
	amber_buf t = AMBER_BUF_INIT;
	amber_tparsed *e = NULL;
	const amber_tparsed *x;
	size_t n = 0;
	int type = 0;

	(void)type;
	if (amber_archive_read_meta(&t, v->a, tree, AMBER_GIT_TREE) == 0 &&
	    amber_tree_parse(&e, &n, t.data, t.len, "metadata tree") == 0) {
		if ((m->has_keys = (x = amber_tree_find(e, n, "keys")) != NULL))
			memcpy(m->keys, x->oid, 20);
		if ((m->has_auth = (x = amber_tree_find(e, n, "auth")) != NULL))
			memcpy(m->auth, x->oid, 20);
		if ((m->has_config = (x = amber_tree_find(e, n, "config")) != NULL))
			memcpy(m->config, x->oid, 20);
		m->has_signing = amber_tree_find(e, n, "signing") != NULL;
	}
	amber_error_clear();
	free(e);
	amber_buf_dispose(&t);
}

static int meta_signature(vctx *v, const amber_buf *b)
{
	amber_buf payload = AMBER_BUF_INIT;
	char *armored = NULL;
	int sig = -1;

	amber_buf_init(&payload, MAX_OBJECT);
	if (amber_object_split_signature(&payload, &armored, AMBER_GIT_COMMIT, b->data,
					 b->len) == 0)
		sig = !armored ? 0 : (v->have_pk && amber_sshsig_verify(armored, v->pk, "git",
							payload.data, payload.len) == 0) ? 1 : -1;
	amber_error_clear();
	free(armored);
	amber_buf_dispose(&payload);
	return sig;
}

static int id_changed(int had, const uint8_t *a, int has, const uint8_t *b)
{
	return had != has || (has && memcmp(a, b, 20) != 0);
}

/*
 * A change of keys/, auth or config in an archive that already had a
 * signing key must be signed with it: amberfs signs every slot change of a
 * signed archive, so an unsigned one was made by someone without the
 * signing key.
 */
static void check_meta_change(vctx *v, const uint8_t oid[20], const struct meta_ids *child,
			      const struct meta_ids *parent)
{
	if (!parent->has_signing || !v->have_pk || child->sig == 1)
		return;
	if (!id_changed(parent->has_keys, parent->keys, child->has_keys, child->keys) &&
	    !id_changed(parent->has_auth, parent->auth, child->has_auth, child->auth) &&
	    !id_changed(parent->has_config, parent->config, child->has_config, child->config))
		return;
	problem(v, AMBER_VERIFY_SIGNATURE, oid, NULL, NULL,
		"the key slots or config were changed by a metadata commit %s by the archive's "
		"signing key: made by someone without it (tampering?)",
		child->sig == 0 ? "not signed" : "with a bad signature, not");
}

/* The metadata commit and its history (objects only). */
static void check_meta(vctx *v)
{
	uint8_t oid[20], next[20], child_oid[20];
	struct meta_ids child = {0}, cur;
	int first = 1, has = 1, type = 0;

	if (amber_store_ref_read(oid, v->a->store, AMBER_META_REF) < 0) {
		problem(v, AMBER_VERIFY_MISSING, NULL, NULL, NULL, "%s is missing", AMBER_META_REF);
		return;
	}
	while (has) {
		amber_buf b = AMBER_BUF_INIT;
		amber_commit c = {0};

		has = 0;
		memset(&cur, 0, sizeof(cur));
		amber_buf_init(&b, MAX_OBJECT);
		if (obj_get(v, &b, &type, oid, AMBER_GIT_COMMIT, NULL, "metadata commit") == 1) {
			if (amber_commit_parse(&c, b.data, b.len, AMBER_META_REF) < 0) {
				problem(v, AMBER_VERIFY_MALFORMED, oid, NULL, NULL, "%s",
					amber_error_last());
			} else {
				if (first)
					check_meta_tree(v, c.tree);
				else
					walk_tree(v, c.tree, NULL, 0, 0);
				meta_ids_of(v, c.tree, &cur);
				cur.sig = meta_signature(v, &b);
				if (!first)
					check_meta_change(v, child_oid, &child, &cur);
			}
			has = c.nparents == 1;
			memcpy(next, c.parent, 20);
		}
		amber_commit_dispose(&c);
		amber_buf_dispose(&b);
		child = cur;
		memcpy(child_oid, oid, 20);
		memcpy(oid, next, 20);
		first = 0;
	}
}

/* ---- keys ----------------------------------------------------------------------------- */

/* 1 if k authenticates the sample snapshot record (or there is none). */
static int key_authenticates(vctx *v, const amber_keys *k)
{
	size_t cap, len = 0;
	uint8_t *bin;
	amber_buf plain = AMBER_BUF_INIT;
	int ok;

	if (!v->sample_record)
		return 1;
	cap = strlen(v->sample_record);
	if (!(bin = malloc(cap + 1)))
		return 0;
	ok = amber_base64_decode(bin, &len, v->sample_record, cap) == 0 &&
	     amber_codec_decode(&plain, k, AMBER_OBJ_RECORD, NULL, bin, len, MAX_RECORD_B64) == 0;
	amber_buf_dispose(&plain);
	free(bin);
	amber_error_clear();
	return ok;
}

/* With the key: the metadata authenticator (slots.c) matches the slots and config. */
static void check_auth(vctx *v)
{
	if (!v->a->has_auth && !v->slots_v2) {
		v->st.meta_unauthenticated = 1;
		return;
	}
	if (amber_archive_check_auth(v->a) < 0)
		problem(v, AMBER_VERIFY_KEYSLOT, NULL, NULL, NULL,
			"the key slots or config were changed by someone without the key: the "
			"metadata authenticator does not match them (tampering)");
	amber_error_clear();
}

/* Try every slot with the passphrase; unlock with one that authenticates. */
static int unlock_checked(vctx *v)
{
	amber_archive *a = v->a;
	amber_keys *good = NULL;
	int opened = 0;

	if (v->kdf_started) {
		pthread_join(v->kdf_tid, NULL);
		v->kdf_started = 0;
	}
	for (size_t i = 0; i < a->nslots; i++) {
		amber_keys *k = v->slot_keys[i];

		v->slot_keys[i] = NULL;
		if (v->slot_rc[i] < 0)
			continue;
		opened++;
		if (!key_authenticates(v, k)) {
			problem(v, AMBER_VERIFY_KEYSLOT, NULL, NULL, NULL,
				"key slot %zu opens with this passphrase but its master key does "
				"not authenticate the archive's snapshots (a replaced key slot)", i);
			amber_keys_free(k);
		} else if (!good) {
			good = k;
		} else {
			amber_keys_free(k);
		}
	}
	amber_error_clear();
	if (!opened)
		problem(v, AMBER_VERIFY_KEYSLOT, NULL, NULL, NULL,
			"no key slot opens with this passphrase: a wrong passphrase, or the key "
			"slots were replaced; checks that need the key were skipped");
	if (!good)
		return 0;
	amber_keys_free(a->keys);
	a->keys = good;
	check_auth(v);
	amber_chunker_init(&a->chunker, a->keys->chunk_key, a->chunk_min, a->chunk_avg,
			   a->chunk_max);
	return 1;
}

/* ---- contents (key) -------------------------------------------------------------------- */

static int path_join(char **out, const char *dir, const amber_entry *e)
{
	size_t dl = strlen(dir);

	*out = malloc(dl + e->name_len + 2);
	if (!*out)
		return amber_fail(AMBER_ERROR, "out of memory");
	memcpy(*out, dir, dl);
	(*out)[dl] = '/';
	memcpy(*out + dl + 1, e->name, e->name_len);
	(*out)[dl + 1 + e->name_len] = '\0';
	return 0;
}

static int content_kind(int rc)
{
	if (rc == AMBER_ENOTFOUND)
		return AMBER_VERIFY_MISSING;
	return AMBER_VERIFY_AUTH;
}

/* The files_ok/chunks_ok/dirs_ok key of a link: a digest of everything the
 * reader checks when it decodes it, so one good read vouches only for links
 * that would read the same (not for the same object under another size). */
static const uint8_t *link_id(uint8_t id[20], const amber_link *l, uint8_t kind, uint64_t size,
			      const uint8_t *tree)
{
	uint8_t key[AMBER_CKEY];

	amber_link_key(key, l, kind, size, tree);
	crypto_generichash(id, 20, key, sizeof(key), NULL, 0);
	return id;
}

/* A job for chunk c (link id `id`), unless one is queued already. */
static int queue_chunk(vctx *v, const amber_chunkref *c, const uint8_t id[20])
{
	uint8_t *flag = oidset_find(&v->chunks_queued, id, 0);

	if (flag)
		return 0;
	if (v->njobs == v->jobs_cap) {
		size_t cap = v->jobs_cap ? v->jobs_cap * 2 : 1024;
		amber_vjob *j = realloc(v->jobs, cap * sizeof(*j));

		if (!j)
			return amber_fail(AMBER_ERROR, "out of memory");
		v->jobs = j;
		v->jobs_cap = cap;
	}
	if (!oidset_find(&v->chunks_queued, id, 1))
		return AMBER_ERROR;
	memset(&v->jobs[v->njobs], 0, sizeof(v->jobs[0]));
	v->jobs[v->njobs].link = c->link;
	v->jobs[v->njobs].len = c->len;
	v->njobs++;
	return 0;
}

/*
 * Every chunk of a file, each distinct chunk once in the whole run (a
 * ledger that grew in every snapshot shares all but its last chunks with
 * its earlier versions): queued for the decoding run while collecting,
 * else decoded here.
 */
static int read_chunks(vctx *v, const amber_chunkref *c, size_t n, const char *path)
{
	uint8_t id[20];
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < n; i++) {
		amber_cobj *o = NULL;

		if (oidset_find(&v->chunks_ok, link_id(id, &c[i].link, 'c', c[i].len, NULL), 0))
			continue;
		if (v->collect) {
			rc = queue_chunk(v, &c[i], id);
			continue;
		}
		if (!oidset_find(&v->chunks_queued, id, 0))
			v->st.chunks++;
		rc = amber_chunk_get(&o, v->a, &c[i].link, c[i].len, path);
		amber_cache_release(v->a->cache, o);
		if (rc == 0 && !oidset_find(&v->chunks_ok, id, 1))
			rc = amber_fail(AMBER_ERROR, "out of memory");
		if (rc == 0)
			v->st.data_bytes += c[i].len;
		progress(v);
	}
	return rc;
}

static void read_file_data(vctx *v, amber_snapshot *s, const amber_entry *e, const char *path)
{
	amber_chunkref one = {.link = e->link, .len = (uint32_t)e->size};
	amber_cobj *o = NULL;
	int rc;

	if (e->content == AMBER_C_CHUNKED) {
		rc = amber_file_index(&o, v->a, e, path);
		if (rc == 0)
			rc = read_chunks(v, ((const file_index *)o->data)->c,
					 ((const file_index *)o->data)->n, path);
		amber_cache_release(v->a->cache, o);
	} else {
		rc = read_chunks(v, &one, 1, path);
	}
	if (rc < 0)
		problem(v, content_kind(rc), e->link.oid, s->info.id, path,
			"file data fails: %s", amber_error_last());
}

/* 1 if the structure pass found object oid bad. */
static int is_bad(vctx *v, const uint8_t oid[20])
{
	uint8_t *f = oidset_find(&v->seen, oid, 0);

	return f && *f == 2;
}

/* Name the path of a file whose chunks the structure pass found bad. */
static int chunks_bad(vctx *v, amber_snapshot *s, const amber_entry *e, const amber_cobj *o,
		      const char *path)
{
	const file_index *x = o->data;
	int bad = 0;

	for (size_t i = 0; i < x->n; i++)
		if (is_bad(v, x->c[i].link.oid)) {
			problem(v, AMBER_VERIFY_CORRUPT, x->c[i].link.oid, s->info.id, path,
				"chunk %zu of this file is missing or corrupt", i);
			bad = 1;
		}
	return bad;
}

static void check_file(vctx *v, amber_snapshot *s, const amber_entry *e, const char *path)
{
	amber_cobj *o = NULL;
	uint8_t *flag, id[20];
	int rc = 0;

	v->st.files++;
	if (e->type != AMBER_T_REG || e->content == AMBER_C_NONE)
		return;
	if ((flag = oidset_find(&v->files_ok, link_id(id, &e->link, 'f', e->size, e->tree_oid), 0)))
		return;
	if (e->content == AMBER_C_BLOB && is_bad(v, e->link.oid)) {
		problem(v, AMBER_VERIFY_CORRUPT, e->link.oid, s->info.id, path,
			"the file's data object is missing or corrupt");
		return;
	}
	if (e->content == AMBER_C_CHUNKED) {
		rc = amber_file_index(&o, v->a, e, path);
		if (rc < 0) {
			problem(v, content_kind(rc), e->link.oid, s->info.id, path,
				"chunk index fails: %s", amber_error_last());
			return;
		}
		rc = chunks_bad(v, s, e, o, path);
		amber_cache_release(v->a->cache, o);
		if (rc)
			return;
	}
	if (v->o->read_data) {
		uint64_t before = v->st.problems;

		read_file_data(v, s, e, path);
		if (v->st.problems != before)
			return;
	}
	oidset_find(&v->files_ok, id, 1);
}

static void walk_dir(vctx *v, amber_snapshot *s, const amber_entry *dir, const char *path,
		     int depth)
{
	amber_dir *d = NULL;
	uint64_t before = v->st.problems;
	int rc;

	v->st.dirs++;
	if (oidset_find(&v->dirs_ok, dir->tree_oid, 0))
		return;
	if (depth > AMBER_MAX_DEPTH) {
		problem(v, AMBER_VERIFY_MALFORMED, dir->link.oid, s->info.id, path,
			"directories nested more than %d levels deep", AMBER_MAX_DEPTH);
		return;
	}
	rc = amber_dir_open(&d, s, dir);
	if (rc < 0) {
		problem(v, content_kind(rc), dir->link.oid, s->info.id, path[0] ? path : "/",
			"directory fails: %s", amber_error_last());
		return;
	}
	for (size_t i = 0; i < amber_dir_count(d); i++) {
		const amber_entry *e = amber_dir_entry(d, i);
		char *sub = NULL;

		if (path_join(&sub, path, e) < 0)
			break;
		if (e->type == AMBER_T_DIR)
			walk_dir(v, s, e, sub, depth + 1);
		else
			check_file(v, s, e, sub);
		free(sub);
		progress(v);
	}
	amber_dir_free(d);
	if (v->st.problems == before)
		oidset_find(&v->dirs_ok, dir->tree_oid, 1);
}

static void check_contents(vctx *v, const char *stream, const uint8_t oid[20])
{
	amber_snapshot *s = NULL;
	char hex[41];
	int rc;

	amber_oid_tohex(hex, oid);
	rc = amber_snapshot_open(&s, v->a, hex);
	if (rc < 0) {
		problem(v, content_kind(rc), oid, hex, NULL, "%s", amber_error_last());
		return;
	}
	if (stream && strcmp(s->info.stream, stream) != 0)
		problem(v, AMBER_VERIFY_HISTORY, oid, hex, NULL,
			"snapshot belongs to stream '%s' (authenticated record), found on '%s'",
			s->info.stream, stream);
	walk_dir(v, s, &s->root, "", 0);
	amber_snapshot_free(s);
}

static void index_problem(const uint8_t oid[20], const char *msg, void *payload)
{
	char hex[41];

	amber_oid_tohex(hex, oid);
	problem(payload, AMBER_VERIFY_HISTORY, oid, hex, NULL, "%s", msg);
}

/* The time index in the records: a forged skip link is tampering. */
static void check_index(vctx *v, const struct stream *st)
{
	if (amber_history_check(v->a, st->name, st->tip, index_problem, v) < 0)
		amber_error_clear();    /* unreadable records: reported by the walk */
}

/* Walk the contents of st's snapshots back to the first one, or to one
 * already walked (`walked`); a tag's (stream NULL) belong to no stream. */
static void walk_contents(vctx *v, const struct stream *st, const char *stream, oidset *walked)
{
	uint8_t cur[20], parent[20];
	int64_t t;
	int has = 1;

	memcpy(cur, st->tip, 20);
	for (uint64_t n = 0; has && n < v->st.snapshots; n++) {
		uint8_t *f = oidset_find(&v->seen, cur, 0);

		if (!f || *f == 2)
			break;  /* missing or corrupt: reported already */
		if (oidset_find(walked, cur, 0))
			break;  /* shared with a stream or tag already walked */
		oidset_find(walked, cur, 1);
		check_contents(v, stream, cur);
		if (amber_commit_time(&t, parent, &has, v->a, cur) < 0)
			break;
		memcpy(cur, parent, 20);
	}
	amber_error_clear();
}

/* ---- the keyed pass ------------------------------------------------------------------------ */

/* Every stream, then the snapshots that only tags name (a tag of a
 * snapshot outside every stream was hashed by the structure pass but never
 * opened, so a forged one passed). */
static void keyed_walks(vctx *v)
{
	oidset walked = {0};

	for (size_t i = 0; i < v->nstreams; i++) {
		check_index(v, &v->streams[i]);
		walk_contents(v, &v->streams[i], v->streams[i].name, &walked);
	}
	for (size_t i = 0; i < v->ntags; i++)
		if (v->tags[i].peeled)
			walk_contents(v, &v->tags[i], NULL, &walked);
	oidset_dispose(&walked);
}

static void data_progress(const amber_vdata_stats *d, void *payload)
{
	vctx *v = payload;

	v->st.chunks = d->done;
	v->st.chunk_bytes = d->raw_bytes;
	v->st.data_bytes = v->data_base + d->plain_bytes;
	progress(v);
}

/* Decode the queued chunks; 1 if every one passed (they join chunks_ok). */
static int decode_queued(vctx *v)
{
	amber_vdata_stats d = {0};
	int threads = v->o->version >= 2 ? v->o->threads : 0;

	v->data_base = v->st.data_bytes;
	if (amber_vdata_run(&d, v->a, v->jobs, v->njobs, threads > 0 ? (unsigned)threads : 0,
			    data_progress, v) < 0) {
		amber_error_clear();
		oidset_dispose(&v->chunks_queued); /* the walk below decodes (and counts) */
		return 0;
	}
	v->st.threads = d.threads;
	for (size_t i = 0; i < v->njobs; i++) {
		uint8_t id[20];

		if (v->jobs[i].rc == 0 &&
		    !oidset_find(&v->chunks_ok, link_id(id, &v->jobs[i].link, 'c', v->jobs[i].len,
							NULL), 1))
			return 0;
	}
	return d.failed == 0;
}

/*
 * With read_data: walk collecting chunks (problems held), decode them all,
 * then either pass the problems on or, if a chunk failed, walk again
 * decoding inline (see the top of the file).
 */
static void keyed_pass(vctx *v)
{
	uint64_t problems = v->st.problems, files = v->st.files, dirs = v->st.dirs;

	v->st.keyed = 1;
	if (!v->o->read_data) {
		keyed_walks(v);
		return;
	}
	v->collect = v->hold = 1;
	keyed_walks(v);
	v->collect = 0;
	if (decode_queued(v)) {
		release_held(v, 1);
		return;
	}
	release_held(v, 0);
	v->st.problems = problems;
	v->st.files = files;
	v->st.dirs = dirs;
	oidset_dispose(&v->dirs_ok);
	oidset_dispose(&v->files_ok);
	keyed_walks(v);
}

/* ---- work started at once --------------------------------------------------------------- */

static void pack_problem(const char *file, const char *message, void *payload)
{
	vctx *v = payload;
	struct packmsg *m = realloc(v->pm, (v->npm + 1) * sizeof(*m));

	if (!m)
		return;
	v->pm = m;
	m[v->npm].file = strdup(file);
	m[v->npm].msg = strdup(message);
	v->npm++;
}

static void *packs_main(void *p)
{
	vctx *v = p;

	v->packs_rc = amber_store_check_packs(v->a->store, pack_problem, v);
	if (v->packs_rc < 0)
		v->packs_err = strdup(amber_error_last());
	amber_error_clear();
	return NULL;
}

/* The slots opened with the passphrase; unlock_checked judges them. */
static void *kdf_main(void *p)
{
	vctx *v = p;
	amber_archive *a = v->a;

	for (size_t i = 0; i < a->nslots; i++)
		v->slot_rc[i] = amber_slot_open(&v->slot_keys[i], a->slots[i], a->slot_len[i],
						AMBER_SLOT_PASSPHRASE, v->o->passphrase,
						v->o->passphrase_len, a->weak_kdf_ok);
	amber_error_clear();
	return NULL;
}

/* Start them (or, if no thread can be had, do them now). */
static void start_early(vctx *v)
{
	v->packs_started = pthread_create(&v->packs_tid, NULL, packs_main, v) == 0;
	if (!v->packs_started)
		packs_main(v);
	if (v->o->no_key || !v->o->passphrase || !amber_archive_needs_key(v->a))
		return;
	v->kdf_started = pthread_create(&v->kdf_tid, NULL, kdf_main, v) == 0;
	if (!v->kdf_started)
		kdf_main(v);
}

/* Wait for the pack checksums and report (give = 1) or drop their problems. */
static int packs_join(vctx *v, int give)
{
	if (v->packs_started)
		pthread_join(v->packs_tid, NULL);
	v->packs_started = 0;
	v->packs_done = 1;
	for (size_t i = 0; i < v->npm; i++) {
		if (give)
			problem(v, AMBER_VERIFY_CORRUPT, NULL, NULL, NULL, "%s: %s",
				v->pm[i].file ? v->pm[i].file : "?",
				v->pm[i].msg ? v->pm[i].msg : "out of memory");
		free(v->pm[i].file);
		free(v->pm[i].msg);
	}
	free(v->pm);
	v->pm = NULL;
	v->npm = 0;
	if (v->packs_rc < 0)
		return amber_fail(v->packs_rc, "%s", v->packs_err ? v->packs_err : "out of memory");
	return 0;
}

/* packs_join, once: the pack checksums' problems and rc. */
static int finish_packs(vctx *v)
{
	return v->packs_done ? 0 : packs_join(v, 1);
}

/* Join whatever is still running (an early return) and free what is left. */
static void stop_early(vctx *v)
{
	if (!v->packs_done)
		packs_join(v, 0);
	free(v->packs_err);
	if (v->kdf_started)
		pthread_join(v->kdf_tid, NULL);
	v->kdf_started = 0;
	for (size_t i = 0; i < AMBER_MAX_SLOTS; i++)
		amber_keys_free(v->slot_keys[i]);
}

/* What obj_get and check_frame would have said of blob b, read on the spot. */
static void blob_result(vctx *v, const amber_vblob *b)
{
	uint8_t *flag = oidset_find(&v->seen, b->at.oid, 0);
	const uint8_t *oid = b->at.oid;

	*flag = 2;
	if (b->rc == AMBER_ENOTFOUND) {
		problem(v, AMBER_VERIFY_MISSING, oid, b->snap, NULL, "blob: object is missing");
		return;
	}
	if (b->rc < 0) {
		problem(v, AMBER_VERIFY_CORRUPT, oid, b->snap, NULL, "blob: object is corrupt (%s)",
			b->msg ? b->msg : "out of memory");
		return;
	}
	v->st.objects++;
	v->st.bytes += b->len;
	if (!b->hash_ok) {
		problem(v, AMBER_VERIFY_CORRUPT, oid, b->snap, NULL,
			"blob: object is corrupt: its content does not hash to its id");
		return;
	}
	if (b->type != AMBER_GIT_BLOB) {
		problem(v, AMBER_VERIFY_MALFORMED, oid, b->snap, NULL,
			"blob: a %s where a %s belongs", gittype_name(b->type),
			gittype_name(AMBER_GIT_BLOB));
		return;
	}
	*flag = 1;
	if (!b->frame)
		problem(v, AMBER_VERIFY_MALFORMED, oid, b->snap, NULL,
			"blob: not an amberfs format 1 object frame");
	else if (b->frame == 'E')
		v->frames_e++;
	else
		v->frames_p++;
}

static void blob_progress(const amber_vdata_stats *d, void *payload)
{
	vctx *v = payload;
	amber_verify_stats keep = v->st;

	v->st.objects += d->done;
	v->st.bytes += d->raw_bytes;
	progress(v);
	v->st = keep;
}

static int by_seq(const void *x, const void *y)
{
	const amber_vblob *a = x, *b = y;

	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/*
 * Read and hash the listed blobs on the threads, then report them and the
 * held problems in the order of the walk.  @return 0, or an error if the
 * threads could not be set up (out of memory).
 */
static int check_blobs(vctx *v)
{
	amber_vdata_stats d = {0};
	int threads = v->o->version >= 2 ? v->o->threads : 0;
	size_t n, k = 0;
	struct held *h;
	int rc = amber_vblob_run(&d, v->a, v->rd, v->nblobs < ORDER_MIN, v->blobs, v->nblobs,
				 MAX_OBJECT, threads > 0 ? (unsigned)threads : 0, blob_progress, v);
	int packs, give = 1;

	/* The pack checksums' problems come first, as when they were checked
	 * first; if the packs could not be checked at all, nothing else would
	 * have been: the walk's problems are dropped. */
	h = take_held(v, &n);
	if ((packs = finish_packs(v)) < 0) {
		rc = packs;
		give = 0;
	}
	if (v->nblobs)
		qsort(v->blobs, v->nblobs, sizeof(*v->blobs), by_seq);
	for (size_t i = 0; i < v->nblobs; i++) {
		while (k < n && k < v->blobs[i].held_at)
			give_held(v, &h[k++], give);
		if (rc == 0)
			blob_result(v, &v->blobs[i]);
		free(v->blobs[i].msg);
	}
	while (k < n)
		give_held(v, &h[k++], give);
	free(h);
	free(v->blobs);
	v->blobs = NULL;
	v->nblobs = v->blobs_cap = 0;
	progress(v);
	return rc;
}

/* ---- the run ---------------------------------------------------------------------------- */

static void check_config_vs_objects(vctx *v)
{
	if (v->cfg_encrypted == 0 && v->frames_e)
		problem(v, AMBER_VERIFY_CONFIG, NULL, NULL, NULL,
			"the config says encryption none, but %" PRIu64 " objects are encrypted "
			"('E' frames): the config is inconsistent with the objects (edited?)",
			v->frames_e);
	if (v->cfg_encrypted == 1 && v->frames_p)
		problem(v, AMBER_VERIFY_CONFIG, NULL, NULL, NULL,
			"the config says the archive is encrypted, but %" PRIu64 " objects are "
			"plain ('P' frames): the config is inconsistent with the objects",
			v->frames_p);
}

/* The pack checksums run on their own thread meanwhile (start_early). */
static int structure_pass(vctx *v)
{
	size_t line = 0;
	int rc, bad;

	v->hold = 1;    /* until check_blobs, which puts the packs' problems first */
	rc = amber_store_ref_foreach(v->a->store, "refs/*", ref_cb, v);
	if (rc < 0) {
		bad = finish_packs(v);
		release_held(v, bad == 0);
		return bad < 0 ? bad : rc;
	}
	if ((bad = amber_store_packed_refs_bad(v->a->store, &line)) > 0)
		problem(v, AMBER_VERIFY_MALFORMED, NULL, NULL, NULL,
			"packed-refs has %d malformed line%s (the first is line %zu), skipped: the "
			"other refs were checked; remove or repair the line", bad,
			bad == 1 ? "" : "s", line);
	check_meta(v);
	v->st.streams = v->nstreams;
	v->defer = 1;
	if (amber_store_open_twin(&v->rd, v->a->store) < 0)
		amber_error_clear();    /* read through the archive's store */
	for (size_t i = 0; rc == 0 && i < v->nstreams; i++)
		rc = walk_stream(v, &v->streams[i]);
	if (rc == 0)
		rc = check_tags(v);
	v->defer = 0;
	bad = check_blobs(v);
	amber_store_free(v->rd);
	v->rd = NULL;
	if (rc == 0)
		rc = bad;
	for (size_t i = 0; i < v->nstreams; i++)
		check_mark(v, &v->streams[i]);
	check_config_vs_objects(v);
	v->config_bad = v->cfg_encrypted != (v->a->encrypted ? 1 : 0) ||
			(v->cfg_encrypted == 0 && v->frames_e) ||
			(v->cfg_encrypted == 1 && v->frames_p);
	return rc;
}

/* Whether the keyed pass can run; unlocks with a checked slot when asked. */
static int want_keyed(vctx *v)
{
	if (v->o->no_key || v->config_bad)
		return 0;
	if (!amber_archive_needs_key(v->a)) {
		if (v->a->encrypted)
			check_auth(v);
		return 1;
	}
	return v->o->passphrase ? unlock_checked(v) : 0;
}

static void pin_public_key(vctx *v)
{
	if (v->o->public_key) {
		memcpy(v->pk, v->o->public_key, 32);
		v->have_pk = 1;
	} else {
		v->have_pk = amber_archive_signing_pubkey(v->pk, v->a) == 0;
		amber_error_clear();
	}
}

int amber_verify(amber_verify_stats *stats, amber_archive *a, const amber_verify_opts *opts)
{
	static const amber_verify_opts none = {0};
	vctx v = {0};
	int rc;

	if (amber_opts_check(opts, AMBER_VERIFY_OPTS_VERSION, "amber_verify_opts",
			     "AMBER_VERIFY_OPTS_INIT") < 0 ||
	    amber_stats_check(stats, "amber_verify_stats", "AMBER_VERIFY_STATS_INIT") < 0)
		return AMBER_EINVAL;
	if (opts && opts->version >= 2 && opts->threads < 0)
		return amber_fail(AMBER_EINVAL, "amber_verify_opts.threads is %d: give 0 (one "
				  "per online CPU) or a positive count", opts->threads);
	v.st.version = AMBER_VERIFY_STATS_VERSION; /* as progress callbacks see it */
	v.a = a;
	v.o = opts ? opts : &none;
	v.cfg_encrypted = -1;
	pin_public_key(&v);
	if (!v.o->no_marks && !(v.mark_dir = amber_archive_cache_dir(a)))
		return AMBER_ERROR;
	start_early(&v);
	rc = structure_pass(&v);
	if (rc == 0 && want_keyed(&v))
		keyed_pass(&v);
	for (size_t i = 0; rc == 0 && i < v.nua; i++)
		judge_unsigned(&v, &v.ua[i]);
	if (rc == 0)
		check_slot_marks(&v, v.st.keyed && a->encrypted);
	if (rc == 0 && v.st.problems == 0 && !v.o->no_marks) {
		rc = marks_save(&v);
		v.st.marks_updated = rc == 0;
	}
	stop_early(&v);
	if (v.o->progress)
		v.o->progress(&v.st, v.o->payload);
	amber_stats_put(stats, &v.st, sizeof(v.st)); /* version 1 is the whole struct */
	oidset_dispose(&v.seen);
	oidset_dispose(&v.dirs_ok);
	oidset_dispose(&v.files_ok);
	oidset_dispose(&v.chunks_ok);
	oidset_dispose(&v.chunks_queued);
	free(v.jobs);
	free(v.ua);
	free(v.streams);
	free(v.tags);
	free(v.sample_record);
	free(v.mark_dir);
	return rc;
}

/* ---- push ---------------------------------------------------------------------------------- */

struct names {
	char **v;
	size_t n;
};

static int name_cb(const char *name, const uint8_t oid[20], void *payload)
{
	struct names *l = payload;
	char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

	(void)oid;
	if (!v)
		return amber_fail(AMBER_ERROR, "out of memory");
	l->v = v;
	if (!(v[l->n] = strdup(name)))
		return amber_fail(AMBER_ERROR, "out of memory");
	l->n++;
	return 0;
}

int amber_push(amber_push_stats *stats, amber_archive *a, const char *remote)
{
	static const char *const globs[] = {"refs/heads/*", "refs/tags/*", "refs/amberfs/*"};
	struct names l = {0};
	amber_push_stats st = AMBER_PUSH_STATS_INIT;
	int rc = 0;

	if (amber_stats_check(stats, "amber_push_stats", "AMBER_PUSH_STATS_INIT") < 0)
		return AMBER_EINVAL;
	for (size_t i = 0; rc == 0 && i < 3; i++)
		rc = amber_store_ref_foreach(a->store, globs[i], name_cb, &l);
	st.refs = l.n;
	if (rc == 0)
		rc = amber_store_push(&st.updated, &st.created, a->store, remote,
				      (const char *const *)l.v, l.n);
	for (size_t i = 0; i < l.n; i++)
		free(l.v[i]);
	free(l.v);
	amber_stats_put(stats, &st, sizeof(st)); /* version 1 is the whole struct */
	return rc;
}
