/* Restoring snapshots (or a path of one) into a directory. */
#include "libfix.h"

#include <sys/stat.h>

static void setup(void)
{
	scratch_make("restore");
	mkdir(at("src"), 0755);
	mkdir(at("src/d"), 0750);
	put_file("src/d/f", "restored bytes\n");
	chmod(at("src/d/f"), 0640);
	symlink("d/f", at("src/link"));
}

TestSuite(restore, .init = setup, .fini = scratch_remove);

static char *slurp(const char *rel)
{
	static char buf[256];
	int fd = open(at(rel), O_RDONLY);
	ssize_t n;

	cr_assert_geq(fd, 0, "open %s", rel);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	cr_assert_geq(n, 0);
	buf[n] = '\0';
	return buf;
}

Test(restore, a_snapshot_restores_contents_modes_and_symlinks)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	amber_restore_opts ro = AMBER_RESTORE_OPTS_INIT;
	char id[AMBER_OID_HEXSZ + 1], target[64] = {0};
	struct stat st;

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_restore(NULL, s, "", at("out"), &ro));
	cr_assert_str_eq(slurp("out/d/f"), "restored bytes\n");
	cr_assert_eq(stat(at("out/d/f"), &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0640);
	cr_assert_eq(stat(at("out/d"), &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0750);
	cr_assert_gt(readlink(at("out/link"), target, sizeof(target) - 1), 0);
	cr_assert_str_eq(target, "d/f");
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(restore, a_path_of_a_snapshot_restores_alone)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	char id[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	OK(amber_restore(NULL, s, "d", at("only-d"), NULL));
	cr_assert_str_eq(slurp("only-d/f"), "restored bytes\n");
	cr_assert_eq(access(at("only-d/link"), F_OK), -1);
	cr_assert_eq(amber_restore(NULL, s, "nope", at("none"), NULL), AMBER_ENOTFOUND);
	amber_snapshot_free(s);
	amber_archive_free(a);
}

Test(restore, a_non_empty_destination_is_eexists_and_left_alone)
{
	amber_archive *a = fix_archive(0);
	amber_snapshot *s = NULL;
	char id[AMBER_OID_HEXSZ + 1];

	fix_snapshot(id, a, 1);
	OK(amber_snapshot_open(&s, a, id));
	mkdir(at("busy"), 0755);
	put_file("busy/mine", "keep me\n");
	cr_assert_eq(amber_restore(NULL, s, "", at("busy"), NULL), AMBER_EEXISTS);
	cr_assert_str_eq(slurp("busy/mine"), "keep me\n");
	cr_assert_eq(access(at("busy/d"), F_OK), -1, "restore wrote into a busy destination");
	amber_snapshot_free(s);
	amber_archive_free(a);
}
