/*
 * The progress line of snapshot and restore: one line on stderr, redrawn in
 * place with '\r' at most ten times a second, erased at the end, and only
 * when stderr is a terminal (logs and pipes get nothing but warnings).
 * Erasing is done by overwriting with spaces, which works on any terminal
 * (no escape sequences).
 */
#include "cli.h"

#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define REDRAW_NS 100000000LL

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int term_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

void cli_progress_init(struct cli_progress *p)
{
	memset(p, 0, sizeof(*p));
	p->enabled = isatty(STDERR_FILENO);
	p->width = p->enabled ? term_width() : 80;
	p->start_ns = now_ns();
	p->noun = "file";
}

/* One column per code point, and per invalid byte (shown as '?'). */
static size_t step(const char *s, size_t n)
{
	size_t k = cli_utf8_seq((const unsigned char *)s, n);

	return k ? k : 1;
}

static size_t columns(const char *s, size_t n)
{
	size_t cols = 0;

	for (size_t i = 0; i < n; i += step(s + i, n - i))
		cols++;
	return cols;
}

/* Print the tail of `path` that fits `avail` columns; return columns used. */
static int put_path(const char *path, int avail)
{
	size_t n = strlen(path), cols = columns(path, n), off = 0;

	if (avail < 4)
		return 0;
	if (cols <= (size_t)avail) {
		cli_print_name(stderr, path, n, 0);
		return (int)cols;
	}
	for (size_t skip = cols - (size_t)(avail - 3); skip; skip--)
		off += step(path + off, n - off);
	fputs("...", stderr);
	cli_print_name(stderr, path + off, n - off, 0);
	return avail;
}

/*
 * Bytes read of the entry being shown, so that the line moves while one
 * large file is read (the totals count a file once it is done).
 */
static uint64_t within_entry(struct cli_progress *p, const amber_stats *s, const char *path)
{
	if (strncmp(p->path, path, sizeof(p->path) - 1) != 0 || s->files != p->path_files) {
		snprintf(p->path, sizeof(p->path), "%s", path);
		p->path_base = s->bytes_read;
		p->path_files = s->files;
	}
	return s->bytes_read > p->path_base ? s->bytes_read - p->path_base : 0;
}

static void draw(struct cli_progress *p, const amber_stats *s, const char *path, int64_t now)
{
	char size[32], part[32], head[160];
	uint64_t in = within_entry(p, s, path), done = s->bytes + in;
	double secs = (double)(now - p->start_ns) / 1e9;
	double rate = secs > 0 ? (double)done / 1048576.0 / secs : 0;
	const char *noun = p->noun ? p->noun : "file";
	int cols;

	cli_human_size(size, done);
	cli_human_size(part, in);
	snprintf(head, sizeof(head), "%llu %s%s  %s  %.1f MiB/s  %s%s%s",
		 (unsigned long long)s->files, noun, s->files == 1 ? "" : "s", size, rate,
		 in ? "(" : "", in ? part : "", in ? " of this one) " : "");
	p->width = term_width();
	cols = (int)strlen(head);
	if (cols >= p->width)
		cols = p->width - 1;
	fprintf(stderr, "\r%.*s", cols, head);
	cols += put_path(path ? path : "", p->width - 1 - cols);
	if (p->shown > cols)
		fprintf(stderr, "%*s", p->shown - cols, "");
	p->shown = cols;
}

void cli_progress_cb(const amber_stats *sofar, const char *path, void *payload)
{
	struct cli_progress *p = payload;
	int64_t now;

	if (!p->enabled)
		return;
	now = now_ns();
	if (p->last_ns && now - p->last_ns < REDRAW_NS)
		return;
	p->last_ns = now;
	draw(p, sofar, path, now);
}

void cli_progress_warn(const char *path, const char *message, void *payload)
{
	struct cli_progress *p = payload;

	cli_progress_end(p);
	fputs("amberfs: warning: ", stderr);
	if (path)
		cli_print_name(stderr, path, strlen(path), 0);
	fprintf(stderr, ": %s\n", message ? message : "unreadable");
	p->warnings++;
}

void cli_progress_end(struct cli_progress *p)
{
	if (!p->shown)
		return;
	fprintf(stderr, "\r%*s\r", p->shown, "");
	p->shown = 0;
}
