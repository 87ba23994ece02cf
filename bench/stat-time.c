/*
 * stat-time [--cmd] PATH...: how long a stat of each PATH takes, in ms, one
 * line each.  Without --cmd, the stat(2) call alone, in this process: what
 * the file system costs.  With --cmd, the user's `stat PATH` command, from
 * just before it is spawned to just after it has been reaped: what someone
 * who types it waits, its own start included, and nothing else (timing a
 * command between two `date` processes in a shell adds their starts too,
 * about 12 ms here, more than a stat through the mount costs).
 * Exits 1 if a stat fails.
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* The stat command on path, its output to /dev/null. @return its exit status or -1. */
static int run_stat(const char *path)
{
	char *argv[] = {"stat", (char *)path, NULL};
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int st = -1, rc;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	rc = posix_spawnp(&pid, "stat", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0 || waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(int argc, char **argv)
{
	int cmd = argc > 1 && strcmp(argv[1], "--cmd") == 0, bad = 0;

	if (argc < 2 + cmd)
		return fprintf(stderr, "usage: stat-time [--cmd] PATH...\n"), 2;
	for (int i = 1 + cmd; i < argc; i++) {
		struct stat s;
		double t0 = now_ms();
		int rc = cmd ? run_stat(argv[i]) : stat(argv[i], &s);
		double t1 = now_ms();

		if (rc != 0) {
			fprintf(stderr, "stat-time: stat %s failed\n", argv[i]);
			bad = 1;
		}
		printf("%.3f\n", t1 - t0);
	}
	return bad;
}
