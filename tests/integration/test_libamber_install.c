/*
 * The installed library as an outside program uses it (scripts/install-check):
 * `meson install` of this build into a scratch DESTDIR; libamber.so.0 has
 * its soname and exports exactly the functions of the installed headers at
 * version LIBAMBER_0; examples/engine.c builds against it with
 * `pkg-config --cflags --libs libamber`, links it dynamically, runs (a
 * writer session snapshotting with changed-path lists), and this build's
 * amberfs lists, restores and verifies what it wrote.
 */
#include "helpers.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>

TestSuite(libamber_install, .init = itest_setup, .fini = itest_teardown, .timeout = 600);

Test(libamber_install, example_builds_and_runs_against_the_installed_library)
{
	const char *bin = getenv("AMBERFS_BIN");
	char *fs, *build;
	run_result r;

	cr_assert_not_null(bin, "AMBERFS_BIN is not set");
	fs = strdup(bin);
	build = dirname(dirname(fs)); /* BUILD/fs/amberfs */
	{
		/* An instrumented library needs an instrumented program. */
#if defined(__SANITIZE_ADDRESS__)
		const char *argv[] = {AMBER_SOURCE_DIR "/scripts/install-check", build,
				      "-fsanitize=address,undefined", NULL};
#else
		const char *argv[] = {AMBER_SOURCE_DIR "/scripts/install-check", build, NULL};
#endif
		run_argv(&r, &(run_opts){.timeout = 550}, argv);
	}
	cr_assert_eq(r.status, 0, "scripts/install-check %s failed:\n%s\n%s", build, r.out, r.err);
	cr_assert_not_null(strstr(r.out, "install-check: ok"), "no verdict:\n%s", r.out);
	run_result_dispose(&r);
	free(fs);
}
