#include "gitobj.h"

#include "error.h"
#include "store.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *amber_tentry_name(const amber_tentry *e)
{
	return e->longname ? e->longname : e->name;
}

/* git sorts tree entries as if directory names ended in '/'. */
static int git_name_cmp(const char *a, uint32_t amode, const char *b, uint32_t bmode)
{
	size_t al = strlen(a), bl = strlen(b), n = al < bl ? al : bl;
	int c = memcmp(a, b, n);
	unsigned char ca, cb;

	if (c)
		return c;
	ca = al > n ? (unsigned char)a[n] : (amode == AMBER_GIT_MODE_TREE ? '/' : 0);
	cb = bl > n ? (unsigned char)b[n] : (bmode == AMBER_GIT_MODE_TREE ? '/' : 0);
	return (int)ca - (int)cb;
}

static int tentry_cmp(const void *pa, const void *pb)
{
	const amber_tentry *a = pa, *b = pb;

	return git_name_cmp(amber_tentry_name(a), a->mode, amber_tentry_name(b), b->mode);
}

int amber_tree_build(amber_buf *out, amber_tentry *e, size_t n)
{
	char mode[16];

	if (n)
		qsort(e, n, sizeof(*e), tentry_cmp);
	for (size_t i = 0; i < n; i++) {
		const char *name = amber_tentry_name(&e[i]);
		int ml = snprintf(mode, sizeof(mode), "%o ", e[i].mode);

		assert(i == 0 || strcmp(amber_tentry_name(&e[i - 1]), name) != 0);
		if (amber_buf_put(out, mode, (size_t)ml) < 0 ||
		    amber_buf_put(out, name, strlen(name) + 1) < 0 ||
		    amber_buf_put(out, e[i].oid, 20) < 0)
			return AMBER_ERROR;
	}
	return 0;
}

static int parse_tree_entry(amber_tparsed *t, const uint8_t **pp, const uint8_t *end)
{
	const uint8_t *p = *pp, *sp, *nul;
	unsigned long mode = 0;

	sp = memchr(p, ' ', (size_t)(end - p));
	if (!sp || sp == p || sp - p > 7)
		return -1;
	/* octal digits only (not strtoul: it takes a sign or white space, and it
	 * cost more than the rest of the entry; a walk parses every tree) */
	for (const uint8_t *d = p; d < sp; d++) {
		if (*d < '0' || *d > '7')
			return -1;
		mode = mode * 8 + (unsigned long)(*d - '0');
	}
	if (mode != AMBER_GIT_MODE_TREE && mode != AMBER_GIT_MODE_BLOB)
		return -1;
	nul = memchr(sp + 1, '\0', (size_t)(end - sp - 1));
	if (!nul || nul == sp + 1 || end - nul - 1 < 20 || nul - sp - 1 > 255)
		return -1;
	t->name = (const char *)sp + 1;
	t->name_len = (size_t)(nul - sp - 1);
	if (memchr(t->name, '/', t->name_len))
		return -1;
	t->mode = (uint32_t)mode;
	t->oid = nul + 1;
	*pp = nul + 21;
	return 0;
}

/*
 * Parsed trees are in git order with no name twice (amber_tree_parse
 * refuses anything else), so an entry is found by binary search for its
 * name as a blob and then as a tree: git sorts a tree as if its name ended
 * in '/', so the two may sit apart.
 */
static const amber_tparsed *tree_search(const amber_tparsed *t, size_t n, const char *name,
					uint32_t mode)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = git_name_cmp(t[mid].name, t[mid].mode, name, mode);

		if (c == 0)
			return &t[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* A name that is both a blob and a tree passes the order check when other
 * names sort between them ("a", "a.b", "a/"); find such pairs. */
static int blob_and_tree_alike(const amber_tparsed *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].mode == AMBER_GIT_MODE_TREE &&
		    tree_search(t, n, t[i].name, AMBER_GIT_MODE_BLOB))
			return 1;
	return 0;
}

int amber_tree_parse(amber_tparsed **out, size_t *n, const uint8_t *data, size_t len,
		     const char *what)
{
	const uint8_t *p = data, *end = data + len;
	size_t cap = len / 23 + 1, cnt = 0;
	amber_tparsed *t = calloc(cap, sizeof(*t));

	if (!t)
		return amber_fail(AMBER_ERROR, "out of memory parsing %s", what);
	while (p < end) {
		if (cnt == cap || parse_tree_entry(&t[cnt], &p, end) < 0)
			goto bad;
		/* names are NUL-terminated inside data, so string compares are safe */
		/* git order, and no name twice (a blob and a tree named alike
		 * pass the order check, as the tree sorts as "name/") */
		if (cnt && (git_name_cmp(t[cnt - 1].name, t[cnt - 1].mode, t[cnt].name,
					 t[cnt].mode) >= 0 ||
			    strcmp(t[cnt - 1].name, t[cnt].name) == 0))
			goto bad;
		cnt++;
	}
	if (blob_and_tree_alike(t, cnt))
		goto bad;
	*out = t;
	*n = cnt;
	return 0;
bad:
	free(t);
	return amber_fail(AMBER_ECORRUPT, "%s: malformed git tree", what);
}

const amber_tparsed *amber_tree_find(const amber_tparsed *t, size_t n, const char *name)
{
	const amber_tparsed *x = tree_search(t, n, name, AMBER_GIT_MODE_BLOB);

	return x ? x : tree_search(t, n, name, AMBER_GIT_MODE_TREE);
}

int amber_commit_build(amber_buf *out, const uint8_t tree[20], const uint8_t *parent,
		       int64_t when_sec, const char *message)
{
	char hex[41], line[160];
	int n;

	amber_oid_tohex(hex, tree);
	n = snprintf(line, sizeof(line), "tree %s\n", hex);
	if (amber_buf_put(out, line, (size_t)n) < 0)
		return AMBER_ERROR;
	if (parent) {
		amber_oid_tohex(hex, parent);
		n = snprintf(line, sizeof(line), "parent %s\n", hex);
		if (amber_buf_put(out, line, (size_t)n) < 0)
			return AMBER_ERROR;
	}
	n = snprintf(line, sizeof(line),
		     "author amberfs <amberfs@localhost> %" PRId64 " +0000\n"
		     "committer amberfs <amberfs@localhost> %" PRId64 " +0000\n\n",
		     when_sec, when_sec);
	if (amber_buf_put(out, line, (size_t)n) < 0)
		return AMBER_ERROR;
	return amber_buf_put(out, message, strlen(message));
}

static int header_oid(uint8_t oid[20], const char *line, size_t len, const char *key)
{
	size_t kl = strlen(key);
	char hex[41];

	if (len != kl + 41 || memcmp(line, key, kl) != 0 || line[kl] != ' ')
		return -1;
	memcpy(hex, line + kl + 1, 40);
	hex[40] = '\0';
	return amber_oid_fromhex(oid, hex) < 0 ? -1 : 0;
}

static int parse_author_time(int64_t *t, const char *line, size_t len)
{
	const char *gt = memchr(line, '>', len);
	char tmp[32];
	size_t n;
	char *end;

	if (!gt || (size_t)(line + len - gt) < 3)
		return -1;
	n = (size_t)(line + len - gt - 2);
	if (n >= sizeof(tmp))
		return -1;
	memcpy(tmp, gt + 2, n);
	tmp[n] = '\0';
	*t = strtoll(tmp, &end, 10);
	return end == tmp ? -1 : 0;
}

static int commit_header(amber_commit *c, const char *line, size_t len, int *seen_tree)
{
	if (!*seen_tree) {
		*seen_tree = 1;
		return header_oid(c->tree, line, len, "tree");
	}
	if (len > 7 && memcmp(line, "parent ", 7) == 0) {
		if (c->nparents++ > 0)
			return -1;
		return header_oid(c->parent, line, len, "parent");
	}
	if (len > 7 && memcmp(line, "author ", 7) == 0)
		return parse_author_time(&c->author_time, line, len);
	return 0;
}

int amber_commit_parse(amber_commit *c, const uint8_t *data, size_t len, const char *what)
{
	const char *p = (const char *)data, *end = p + len;
	int seen_tree = 0;

	memset(c, 0, sizeof(*c));
	if (memchr(data, '\0', len))
		goto bad;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		if (!nl)
			goto bad;
		if (nl == p) {
			p++;
			break;
		}
		if (*p != ' ' && commit_header(c, p, (size_t)(nl - p), &seen_tree) < 0)
			goto bad;
		p = nl + 1;
	}
	if (!seen_tree)
		goto bad;
	c->message = strndup(p, (size_t)(end - p));
	if (!c->message)
		return amber_fail(AMBER_ERROR, "out of memory");
	return 0;
bad:
	return amber_fail(AMBER_ECORRUPT, "%s: malformed commit", what);
}

void amber_commit_dispose(amber_commit *c)
{
	free(c->message);
	free(c->signature);
	c->message = c->signature = NULL;
}

char *amber_trailer_get(const char *message, const char *key)
{
	size_t kl = strlen(key);
	const char *p = message;

	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t ll = nl ? (size_t)(nl - p) : strlen(p);

		if (ll > kl + 1 && memcmp(p, key, kl) == 0 && p[kl] == ':' && p[kl + 1] == ' ')
			return strndup(p + kl + 2, ll - kl - 2);
		p = nl ? nl + 1 : NULL;
	}
	return NULL;
}
