#include "config_parse.h"

#include "error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/*
 * The config is a few "key value..." lines, words separated by one space.
 * Every number is checked for its full range and trailing garbage, and a
 * key given twice makes the config corrupt: with "last line wins" a line
 * appended by someone without the key could turn encryption off.
 */
#define CFG_FORMAT 1
#define CFG_ID 2
#define CFG_ENCRYPTION 4
#define CFG_CHUNKER 8
#define CFG_COMPRESSION 16
#define CFG_ALL 31
#define CFG_MAX_WORDS 6

/* A decimal number in [0, max]: digits only (no sign, no space). */
static int parse_num(uint64_t *out, const char *text, uint64_t max)
{
	char *end = NULL;
	unsigned long long v;

	if (!*text || strspn(text, "0123456789") != strlen(text))
		return -1;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_size(size_t *out, const char *text)
{
	uint64_t v;

	if (parse_num(&v, text, AMBER_CHUNK_MAX) < 0)
		return -1;
	*out = (size_t)v;
	return 0;
}

/* Split at single spaces; -1 for an empty word or too many words. */
static int split_words(char *line, char **w)
{
	int n = 0;

	for (char *p = line; p; n++) {
		if (n == CFG_MAX_WORDS)
			return -1;
		w[n] = p;
		if ((p = strchr(p, ' ')))
			*p++ = '\0';
		if (!*w[n])
			return -1;
	}
	return n;
}

static int config_format_line(amber_archive *a, char **w, int n)
{
	uint64_t fmt;

	if (n != 2 || parse_num(&fmt, w[1], UINT32_MAX) < 0)
		return -1;
	if (fmt != AMBER_FORMAT_VERSION)
		return amber_fail(AMBER_ECORRUPT,
				  "archive %s has format %" PRIu64 "; this amberfs reads format %d: "
				  "use a matching amberfs version",
				  a->path, fmt, AMBER_FORMAT_VERSION);
	return CFG_FORMAT;
}

static int config_id_line(amber_archive *a, char **w, int n)
{
	if (n != 2 || strlen(w[1]) != 32 || strspn(w[1], "0123456789abcdef") != 32)
		return -1;
	memcpy(a->id, w[1], 33);
	return CFG_ID;
}

static int config_encryption_line(amber_archive *a, char **w, int n)
{
	if (n == 2 && strcmp(w[1], "none") == 0)
		a->encrypted = 0;
	else if (n == 2 && strcmp(w[1], "xchacha20poly1305-blake2b") == 0)
		a->encrypted = 1;
	else
		return -1;
	return CFG_ENCRYPTION;
}

static int config_chunker_line(amber_archive *a, char **w, int n)
{
	if (n != 5 || strcmp(w[1], "fastcdc-gear") != 0 || parse_size(&a->chunk_min, w[2]) < 0 ||
	    parse_size(&a->chunk_avg, w[3]) < 0 || parse_size(&a->chunk_max, w[4]) < 0)
		return -1;
	return CFG_CHUNKER;
}

static int config_compression_line(amber_archive *a, char **w, int n)
{
	uint64_t lvl;

	if (n != 3 || strcmp(w[1], "zstd") != 0 || parse_num(&lvl, w[2], 19) < 0)
		return -1;
	a->zstd_level = (int)lvl;
	return CFG_COMPRESSION;
}

/* The CFG_ bit of a known line, 0 for an unknown key, or < 0. */
static int config_line(amber_archive *a, char **w, int n)
{
	static const struct {
		const char *key;
		int (*parse)(amber_archive *a, char **w, int n);
	} keys[] = {
		{"format", config_format_line},
		{"id", config_id_line},
		{"encryption", config_encryption_line},
		{"chunker", config_chunker_line},
		{"compression", config_compression_line},
	};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcmp(w[0], keys[i].key) == 0)
			return keys[i].parse(a, w, n);
	return 0;
}

/* Each key at most once, known or not. */
static int key_repeated(const char *text, const char *line, const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = text; p < line; p += strlen(p) + 1)
		if (strncmp(p, key, klen) == 0 && (p[klen] == ' ' || p[klen] == '\0'))
			return 1;
	return 0;
}

static int chunker_params_valid(const amber_archive *a)
{
	return a->chunk_min >= 4096 && a->chunk_min < a->chunk_avg &&
	       a->chunk_avg < a->chunk_max && a->chunk_max <= AMBER_CHUNK_MAX &&
	       (a->chunk_avg & (a->chunk_avg - 1)) == 0;
}

static int config_bad(const amber_archive *a, const char *why, const char *line)
{
	return amber_fail(AMBER_ECORRUPT, "archive %s: malformed config in %s (%s%s%.40s%s)",
			  a->path, AMBER_META_REF, why, line ? ": '" : "", line ? line : "",
			  line ? "'" : "");
}

/* Lines are cut in place (NUL for '\n') so key_repeated() can look back. */
static int config_lines(amber_archive *a, char *text, size_t len, int *seen)
{
	char *w[CFG_MAX_WORDS], copy[256];
	int n, bit;

	for (char *line = text; line < text + len; line += strlen(line) + 1) {
		char *nl = strchr(line, '\n');

		if (nl)
			*nl = '\0';
		if (strlen(line) >= sizeof(copy))
			return config_bad(a, "line too long", line);
		memcpy(copy, line, strlen(line) + 1);
		if ((n = split_words(copy, w)) < 0)
			return config_bad(a, "bad spacing", line);
		if (key_repeated(text, line, w[0]))
			return config_bad(a, "a key given twice", line);
		if ((bit = config_line(a, w, n)) < 0)
			return bit == -1 ? config_bad(a, "bad value", line) : bit;
		*seen |= bit;
	}
	return 0;
}

int amber_config_parse(amber_archive *a, const uint8_t *data, size_t len)
{
	char *text;
	int seen = 0, rc;

	if (memchr(data, '\0', len) || len == 0 || data[len - 1] != '\n')
		return config_bad(a, "not lines of text", NULL);
	if (!(text = malloc(len + 1)))
		return amber_fail(AMBER_ERROR, "out of memory");
	memcpy(text, data, len);
	text[len - 1] = '\0';
	text[len] = '\0';
	rc = config_lines(a, text, len - 1, &seen);
	free(text);
	if (rc < 0)
		return rc;
	if (seen != CFG_ALL)
		return config_bad(a, "a line is missing", NULL);
	if (!chunker_params_valid(a))
		return config_bad(a, "chunker sizes out of range", NULL);
	return 0;
}
