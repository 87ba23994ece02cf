/*
 * Reading a passphrase: from a file (--passphrase-file or
 * $AMBERFS_PASSPHRASE_FILE) or from the terminal with echo off.  Never
 * from argv or the environment itself: both are visible to other users.
 *
 * The passphrase only ever lives in one sodium_malloc buffer (guarded,
 * locked, wiped on free); it is read into that buffer directly, byte by
 * byte from the terminal, so no stdio buffer or stack copy holds it.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

/* Room for CLI_SECRET_MAX bytes plus "\r\n" plus one byte to see overflow. */
#define SECRET_CAP (CLI_SECRET_MAX + 3)

static volatile sig_atomic_t tty_signal;

static const int tty_signals[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP};
#define NSIGNALS (sizeof(tty_signals) / sizeof(tty_signals[0]))

static void on_signal(int sig)
{
	tty_signal = sig;
}

static size_t strip_newline(const unsigned char *buf, size_t n)
{
	if (n && buf[n - 1] == '\n') {
		n--;
		if (n && buf[n - 1] == '\r')
			n--;
	}
	return n;
}

static int file_read(unsigned char *buf, size_t *len, const char *file)
{
	size_t n = 0;
	ssize_t r = 1;
	char *path = cli_secret_path(file);
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) : -1;

	if (fd < 0) {
		cli_error("cannot open passphrase file %s: %s", file,
			  strerror(path ? errno : ENOMEM));
		free(path);
		return CLI_EXIT_ERROR;
	}
	free(path);
	while (n < SECRET_CAP && r > 0) {
		r = read(fd, buf + n, SECRET_CAP - n);
		if (r < 0 && errno == EINTR)
			r = 1;
		else if (r > 0)
			n += (size_t)r;
	}
	if (r < 0) {
		cli_error("cannot read passphrase file %s: %s", file, strerror(errno));
		close(fd);
		return CLI_EXIT_ERROR;
	}
	close(fd);
	n = strip_newline(buf, n);
	if (n > CLI_SECRET_MAX)
		return cli_error("passphrase file %s is too long (the limit is %d bytes)", file,
				 CLI_SECRET_MAX);
	if (n == 0)
		return cli_error("passphrase file %s is empty", file);
	buf[n] = '\0'; /* for the shares' passphrase, a C string */
	*len = n;
	return 0;
}

static void signals_catch(struct sigaction saved[NSIGNALS])
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;     /* no SA_RESTART: read() must return */
	sigemptyset(&sa.sa_mask);
	tty_signal = 0;
	for (size_t i = 0; i < NSIGNALS; i++)
		sigaction(tty_signals[i], &sa, &saved[i]);
}

static void signals_restore(const struct sigaction saved[NSIGNALS])
{
	for (size_t i = 0; i < NSIGNALS; i++)
		sigaction(tty_signals[i], &saved[i], NULL);
}

/* One line into buf; -1 on EOF, error or signal; -2 if too long. */
static int tty_read_line(int fd, unsigned char *buf, size_t *len)
{
	size_t n = 0;
	int too_long = 0;
	ssize_t r;

	for (;;) {
		r = read(fd, buf + n, 1);
		if (r < 0 && errno == EINTR && !tty_signal)
			continue;
		if (r <= 0)
			return -1;
		if (buf[n] == '\n' || buf[n] == '\r')
			break;
		if (n + 1 < SECRET_CAP)
			n++;
		else
			too_long = 1;
	}
	buf[n] = '\0';
	*len = n;
	return too_long || n > CLI_SECRET_MAX ? -2 : 0;
}

static int tty_prompt(unsigned char *buf, size_t *len, const char *prompt)
{
	struct sigaction saved[NSIGNALS];
	struct termios old, quiet;
	int fd, rc;

	fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || tcgetattr(fd, &old)) {
		rc = cli_error("cannot use the terminal for the passphrase: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
	signals_catch(saved);
	tcsetattr(fd, TCSAFLUSH, &quiet);
	rc = write(fd, prompt, strlen(prompt)) < 0 ? -1 : tty_read_line(fd, buf, len);
	tcsetattr(fd, TCSAFLUSH, &old);
	if (write(fd, "\n", 1) < 0)
		rc = -1;
	close(fd);
	signals_restore(saved);
	if (tty_signal)
		raise(tty_signal);
	if (rc == -2)
		return cli_error("passphrase too long (the limit is %d bytes)", CLI_SECRET_MAX);
	if (rc)
		return cli_error("no passphrase read from the terminal");
	if (*len == 0)
		return cli_error("empty passphrase refused");
	return 0;
}

static int ask(unsigned char *buf, size_t *len, const char *archive, int confirm)
{
	char prompt[PATH_MAX + 64];
	unsigned char *again = NULL;
	size_t len2 = 0;
	int rc;

	snprintf(prompt, sizeof(prompt), "Passphrase for %s: ", archive);
	if (tty_prompt(buf, len, prompt))
		return CLI_EXIT_ERROR;
	if (!confirm)
		return 0;
	again = sodium_malloc(SECRET_CAP);
	if (!again)
		return cli_error("out of secure memory for the passphrase");
	snprintf(prompt, sizeof(prompt), "Repeat passphrase for %s: ", archive);
	rc = tty_prompt(again, &len2, prompt);
	if (!rc && (len2 != *len || sodium_memcmp(buf, again, len2) != 0))
		rc = cli_error("the passphrases do not match");
	sodium_free(again);
	return rc;
}

static int no_source(const char *archive, int confirm)
{
	if (confirm)
		return cli_error("%s: an encrypted archive needs a passphrase: give "
				 "--passphrase-file FILE, set AMBERFS_PASSPHRASE_FILE, or use "
				 "--plain", archive);
	return cli_error("%s is encrypted: give --passphrase-file FILE or set "
			 "AMBERFS_PASSPHRASE_FILE (or --keyfile FILE, or --share FILE)", archive);
}

static int secret_get(unsigned char **out, size_t *len, const char *archive, const char *file,
		      int confirm, int use_env)
{
	unsigned char *buf = NULL;
	const char *env = use_env ? getenv("AMBERFS_PASSPHRASE_FILE") : NULL;
	int rc;

	if (!file && env && *env)
		file = env;
	if (!file && !isatty(STDIN_FILENO))
		return no_source(archive, confirm);
	buf = sodium_malloc(SECRET_CAP);
	if (!buf)
		return cli_error("out of secure memory for the passphrase");
	rc = file ? file_read(buf, len, file) : ask(buf, len, archive, confirm);
	if (rc) {
		sodium_free(buf);
		return CLI_EXIT_ERROR;
	}
	*out = buf;
	return 0;
}

int cli_secret_get(unsigned char **out, size_t *len, const char *archive, const char *file,
		   int confirm)
{
	return secret_get(out, len, archive, file, confirm, 1);
}

void cli_secret_free(unsigned char *secret, size_t len)
{
	if (!secret)
		return;
	sodium_memzero(secret, len);
	sodium_free(secret);
}

/* Characters, not bytes: UTF-8 continuation bytes do not count. */
static size_t utf8_chars(const unsigned char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += (s[i] & 0xc0) != 0x80;
	return n;
}

int cli_passphrase_strong(unsigned char **pass, size_t *len, int weak_ok, int tty)
{
	size_t chars = utf8_chars(*pass, *len);

	if (chars >= CLI_PASSPHRASE_MIN || weak_ok)
		return 0;
	if (tty) {
		fprintf(stderr, "amberfs: warning: the new passphrase has only %zu characters: "
			"anyone with a copy of the archive can guess a short one; %d or more are "
			"recommended\n", chars, CLI_PASSPHRASE_MIN);
		return 0;
	}
	cli_secret_free(*pass, *len);
	*pass = NULL;
	*len = 0;
	return cli_error("the new passphrase has only %zu characters: under %d, anyone with a "
			 "copy of the archive can guess it; choose a longer one, or give "
			 "--weak-ok to keep it", chars, CLI_PASSPHRASE_MIN);
}

int cli_new_passphrase(unsigned char **out, size_t *len, const char *archive, const char *file,
		       int weak_ok)
{
	int tty = !file && isatty(STDIN_FILENO);

	if (!file && !tty)
		return cli_error("%s: a new passphrase comes from --new-passphrase-file FILE or the "
				 "terminal", archive);
	if (secret_get(out, len, archive, file, 1, 0))
		return CLI_EXIT_ERROR;
	return cli_passphrase_strong(out, len, weak_ok, tty);
}
