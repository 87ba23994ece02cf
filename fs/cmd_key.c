/*
 * amberfs key SUBCOMMAND ARCHIVE ...
 *
 * Key slots (list, add-passphrase, add-keyfile, passwd, remove, split,
 * seal) and the archive's Ed25519 signing key (new-signing, show-public).
 *
 * Files this command writes hold secrets (a key file, share mnemonics):
 * they are created with O_EXCL at mode 0600 and never overwrite anything,
 * are written and synced before the slot that they open is added, and are
 * removed again if adding it fails, so no secret is left behind that
 * opens nothing, and no slot is added whose secret was not saved.
 */
#include "cli.h"

#include "amber_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char help[] =
	"Usage: amberfs key list ARCHIVE [--json]\n"
	"       amberfs key add-passphrase ARCHIVE [--label L] [--new-passphrase-file F]\n"
	"       amberfs key add-keyfile ARCHIVE FILE [--label L]\n"
	"       amberfs key passwd ARCHIVE SLOT [--new-passphrase-file F]\n"
	"       amberfs key remove ARCHIVE SLOT\n"
	"       amberfs key split ARCHIVE --threshold K --shares N [--groups G\n"
	"                         --group-threshold T] [--share-passphrase-file F]\n"
	"                         [--iteration-exponent E] [--label L] --out-dir DIR\n"
	"       amberfs key seal ARCHIVE\n"
	"       amberfs key new-signing ARCHIVE [--signing-key FILE]\n"
	"       amberfs key show-public ARCHIVE\n"
	"Manage the archive's key slots (each a way in to its one master key) and its\n"
	"Ed25519 signing key.\n"
	"\n"
	"  list           show the key slots: id, kind, label, creation time, and the\n"
	"                 KDF cost or share thresholds (no key needed)\n"
	"  add-passphrase add a passphrase slot\n"
	"  add-keyfile    write a new random 32-byte key FILE (mode 0600; an existing\n"
	"                 file is never overwritten) and add a slot it opens\n"
	"  passwd         change the passphrase of passphrase slot SLOT (its id and\n"
	"                 label stay; the data is not re-encrypted)\n"
	"  remove         remove slot SLOT (never the last one); copies of the archive\n"
	"                 made before keep it\n"
	"  split          make a fresh recovery secret, write it as SLIP-0039 shares,\n"
	"                 one 0600 file per share in DIR, and add a slot it opens:\n"
	"                 any K of the N shares open the archive (with groups: K of N\n"
	"                 in each of G groups, T groups needed); removing the slot\n"
	"                 revokes the whole set\n"
	"  seal           add the metadata authenticator to an archive made before it\n"
	"  new-signing    create a signing key pair for an archive that has none:\n"
	"                 write the secret key to the new FILE and store the public\n"
	"                 key in the archive; print the public key\n"
	"  show-public    print the archive's public signing key as one OpenSSH\n"
	"                 public-key line (for an allowed-signers file)\n"
	"\n"
	"SLOT is a slot's id (or 4+ leading digits of it) or its label.  Every\n"
	"subcommand that changes slots needs the key: --passphrase-file F (or\n"
	"AMBERFS_PASSPHRASE_FILE, or the terminal), --keyfile F, or --share F\n"
	"(repeatable) with --share-passphrase-file F; in a signed archive also\n"
	"--signing-key F (or AMBERFS_SIGNING_KEY), or --unsigned.\n"
	"\n"
	"      --json                  list: one JSON object\n"
	"      --label L               a label for the new slot (up to 64 bytes)\n"
	"      --new-passphrase-file F the new passphrase (default: the terminal,\n"
	"                              asked twice)\n"
	"      --weak-ok               accept a new passphrase under 12 characters\n"
	"      --threshold K           split: shares needed (of each group)\n"
	"      --shares N              split: shares made (of each group)\n"
	"      --groups G              split: groups (default 1)\n"
	"      --group-threshold T     split: groups needed (default 1)\n"
	"      --iteration-exponent E  split: SLIP-0039 PBKDF2 cost, 10000 << E\n"
	"                              iterations (0..15, default 1)\n"
	"      --share-passphrase-file F  split: the shares' SLIP-0039 passphrase\n"
	"                              (printable ASCII; needed with the shares)\n"
	"      --out-dir DIR           split: where the share files go (created 0700\n"
	"                              if missing)\n"
	"      --passphrase-file F     the passphrase that unlocks the archive\n"
	"      --signing-key FILE      new-signing: where to write the secret key;\n"
	"                              slot changes of a signed archive: the key to\n"
	"                              sign them with (default: $AMBERFS_SIGNING_KEY)\n"
	"      --unsigned              change slots of a signed archive unsigned\n"
	"  -h, --help                  show this help\n";

enum {
	OPT_SIGNING_KEY = CLI_OPT_LONG, OPT_JSON, OPT_LABEL, OPT_NEWPASS, OPT_WEAK_OK,
	OPT_THRESHOLD, OPT_SHARES, OPT_GROUPS, OPT_GROUP_THRESHOLD, OPT_EXPONENT, OPT_OUT_DIR,
	OPT_PASSFILE, OPT_UNSIGNED,
};

struct key_args {
	const char *sub;
	const char *archive;
	const char *arg;         /* FILE of add-keyfile, SLOT of passwd/remove */
	const char *signing_key;
	const char *label, *newpass, *out_dir, *passfile;
	int json, weak_ok, unsigned_ok;
	int threshold, shares, groups, group_threshold, exponent;
};

static const struct {
	const char *name;
	int operand;             /* 1: takes FILE or SLOT after ARCHIVE */
	int changes;             /* 1: a slot change (needs the key, maybe a signer) */
} subs[] = {
	{"list", 0, 0}, {"add-passphrase", 0, 1}, {"add-keyfile", 1, 1}, {"passwd", 1, 1},
	{"remove", 1, 1}, {"split", 0, 1}, {"seal", 0, 1}, {"new-signing", 0, 0},
	{"show-public", 0, 0},
};

#define NSUBS (sizeof(subs) / sizeof(subs[0]))

static int sub_index(const char *name)
{
	for (size_t i = 0; i < NSUBS; i++)
		if (strcmp(subs[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int is(const struct key_args *o, const char *name)
{
	return strcmp(o->sub, name) == 0;
}

static int int_opt(int *out, int c, int min, int max)
{
	static const char *const names[] = {"--threshold", "--shares", "--groups",
					    "--group-threshold", "--iteration-exponent"};

	return cli_parse_int(out, optarg, min, max, "key", names[c - OPT_THRESHOLD]);
}

static int take_option(struct key_args *o, int c)
{
	switch (c) {
	case OPT_SIGNING_KEY: o->signing_key = optarg; return 0;
	case OPT_JSON: o->json = 1; return 0;
	case OPT_LABEL: o->label = optarg; return 0;
	case OPT_NEWPASS: o->newpass = optarg; return 0;
	case OPT_WEAK_OK: o->weak_ok = 1; return 0;
	case OPT_OUT_DIR: o->out_dir = optarg; return 0;
	case OPT_PASSFILE: o->passfile = optarg; return 0;
	case OPT_UNSIGNED: o->unsigned_ok = 1; return 0;
	case OPT_THRESHOLD: return int_opt(&o->threshold, c, 1, 16);
	case OPT_SHARES: return int_opt(&o->shares, c, 1, 16);
	case OPT_GROUPS: return int_opt(&o->groups, c, 1, 16);
	case OPT_GROUP_THRESHOLD: return int_opt(&o->group_threshold, c, 1, 16);
	case OPT_EXPONENT: return int_opt(&o->exponent, c, 0, 15);
	}
	return -1;
}

static int parse_options(struct key_args *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{"signing-key", required_argument, NULL, OPT_SIGNING_KEY},
		{"json", no_argument, NULL, OPT_JSON},
		{"label", required_argument, NULL, OPT_LABEL},
		{"new-passphrase-file", required_argument, NULL, OPT_NEWPASS},
		{"weak-ok", no_argument, NULL, OPT_WEAK_OK},
		{"threshold", required_argument, NULL, OPT_THRESHOLD},
		{"shares", required_argument, NULL, OPT_SHARES},
		{"groups", required_argument, NULL, OPT_GROUPS},
		{"group-threshold", required_argument, NULL, OPT_GROUP_THRESHOLD},
		{"iteration-exponent", required_argument, NULL, OPT_EXPONENT},
		{"out-dir", required_argument, NULL, OPT_OUT_DIR},
		{"passphrase-file", required_argument, NULL, OPT_PASSFILE},
		{"unsigned", no_argument, NULL, OPT_UNSIGNED},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, rc;

	opterr = 0;
	o->exponent = 1;
	while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
		if (c == 'h')
			return cli_help(help);
		if ((rc = take_option(o, c)) < 0)
			return cli_bad_option("key", c, argv);
		if (rc)
			return rc;
	}
	return -1;
}

/* Which options go with which subcommand. @return -1 or CLI_EXIT_USAGE. */
static int check_combinations(struct key_args *o)
{
	int split = is(o, "split");

	if (o->json && !is(o, "list"))
		return cli_usage("key", "--json goes with list only");
	if (o->label && !is(o, "add-passphrase") && !is(o, "add-keyfile") && !split)
		return cli_usage("key", "--label goes with add-passphrase, add-keyfile and split");
	if ((o->newpass || o->weak_ok) && !is(o, "add-passphrase") && !is(o, "passwd"))
		return cli_usage("key", "--new-passphrase-file and --weak-ok go with "
				 "add-passphrase and passwd");
	if ((o->threshold || o->shares || o->groups || o->group_threshold || o->out_dir) &&
	    !split)
		return cli_usage("key", "--threshold, --shares, --groups, --group-threshold and "
				 "--out-dir go with split");
	if (split && (!o->threshold || !o->shares || !o->out_dir))
		return cli_usage("key", "split needs --threshold K, --shares N and --out-dir DIR");
	if (split && o->threshold > o->shares)
		return cli_usage("key", "--threshold %d is more than --shares %d", o->threshold,
				 o->shares);
	if (!o->groups)
		o->groups = 1;
	if (!o->group_threshold)
		o->group_threshold = 1;
	if (o->group_threshold > o->groups)
		return cli_usage("key", "--group-threshold %d is more than --groups %d",
				 o->group_threshold, o->groups);
	if (o->newpass && !*o->newpass)
		return cli_usage("key", "--new-passphrase-file wants a file name");
	return -1;
}

static int check_signing(struct key_args *o, int changes)
{
	const char *env = getenv("AMBERFS_SIGNING_KEY");

	if (is(o, "new-signing")) {
		if (!o->signing_key && env && *env)
			o->signing_key = env;
		if (!o->signing_key)
			return cli_usage("key", "new-signing needs --signing-key FILE (or "
					 "AMBERFS_SIGNING_KEY) to write the secret key to");
		if (!*o->signing_key)
			return cli_usage("key", "--signing-key wants a file name");
		return -1;
	}
	if ((o->signing_key || o->unsigned_ok) && !changes)
		return cli_usage("key", "--signing-key and --unsigned go with new-signing and "
				 "the subcommands that change slots");
	return changes ? cli_signing_key("key", &o->signing_key, o->unsigned_ok) : -1;
}

/* @return -1 to go on, else the exit status. */
static int parse(struct key_args *o, int argc, char **argv)
{
	const char *pos[2];
	int status = parse_options(o, argc, argv), k;

	if (status >= 0)
		return status;
	if (optind == argc)
		return cli_usage("key", "missing subcommand (list, add-passphrase, add-keyfile, "
				 "passwd, remove, split, seal, new-signing or show-public)");
	o->sub = argv[optind++];
	if ((k = sub_index(o->sub)) < 0)
		return cli_usage("key", "unknown subcommand '%s' (expected list, add-passphrase, "
				 "add-keyfile, passwd, remove, split, seal, new-signing or "
				 "show-public)", o->sub);
	if ((status = check_combinations(o)) >= 0)
		return status;
	if ((status = check_signing(o, subs[k].changes)) >= 0)
		return status;
	if ((o->passfile || cli_unlock_given()) && !subs[k].changes)
		return cli_usage("key", "--passphrase-file, --keyfile and --share go with the "
				 "subcommands that change slots");
	if (cli_positionals(pos, 1 + subs[k].operand, argc, argv, optind, "key",
			    subs[k].operand ? (is(o, "add-keyfile") ? "ARCHIVE FILE" :
					       "ARCHIVE SLOT") : "ARCHIVE"))
		return CLI_EXIT_USAGE;
	o->archive = pos[0];
	o->arg = subs[k].operand ? pos[1] : NULL;
	return -1;
}

/* ---- list ------------------------------------------------------------------------------- */

static void kdf_text(char *out, size_t len, const amber_slot_info *s)
{
	char mem[32];

	cli_human_size(mem, (uint64_t)s->kdf_mem_kib << 10);
	snprintf(out, len, "argon2id %u pass%s %s%s%s", s->kdf_ops, s->kdf_ops == 1 ? "" : "es",
		 mem, s->kdf_test ? " (test profile: insecure)" : "",
		 s->weak && !s->kdf_test ? " (weak)" : "");
}

static void shares_text(char *out, size_t len, const amber_slot_info *s)
{
	size_t n;

	if (s->ngroups == 1) {
		snprintf(out, len, "set %u: %u of %u shares (iteration exponent %u)", s->share_set,
			 s->groups[0].member_threshold, s->groups[0].member_count,
			 s->share_exponent);
		return;
	}
	n = (size_t)snprintf(out, len, "set %u: %u of %u groups (", s->share_set,
			     s->group_threshold, s->ngroups);
	for (size_t g = 0; g < s->ngroups && n < len; g++)
		n += (size_t)snprintf(out + n, len - n, "%s%u of %u", g ? ", " : "",
				      s->groups[g].member_threshold, s->groups[g].member_count);
	if (n < len)
		snprintf(out + n, len - n, "), %u shares (iteration exponent %u)", s->nshares,
			 s->share_exponent);
}

static void print_slot(const amber_slot_info *s, int ok)
{
	char when[64] = "-", detail[256] = "";
	size_t n = strlen(s->label);

	if (s->created)
		cli_time_iso(when, s->created, 0, 0);
	if (!ok)
		snprintf(detail, sizeof(detail), "malformed: %s", amber_error_last());
	else if (s->kind == AMBER_SLOT_PASSPHRASE)
		kdf_text(detail, sizeof(detail), s);
	else if (s->kind == AMBER_SLOT_SHARES)
		shares_text(detail, sizeof(detail), s);
	else if (s->kind == AMBER_SLOT_KEYFILE)
		snprintf(detail, sizeof(detail), "32-byte key file");
	printf("%s  %-10s  ", s->id, ok ? amber_slot_kind_name(s->kind) : "?");
	cli_print_name(stdout, n ? s->label : "-", n ? n : 1, 0);
	printf("%*s  %-20s  %s\n", n < 16 ? (int)(16 - (n ? n : 1)) : 0, "", when, detail);
}

static void json_slot(const amber_slot_info *s, int ok, int first)
{
	printf("%s{\"id\":\"%s\",\"kind\":\"%s\",", first ? "" : ",", s->id,
	       ok ? amber_slot_kind_name(s->kind) : "malformed");
	cli_json_bytes(stdout, "label", s->label, strlen(s->label));
	printf(",\"created\":%" PRId64 ",\"version\":%d,\"weak\":%s", s->created, s->version,
	       s->weak ? "true" : "false");
	if (ok && s->kind == AMBER_SLOT_PASSPHRASE)
		printf(",\"kdf\":{\"alg\":\"argon2id\",\"passes\":%u,\"memory_kib\":%u,"
		       "\"test_profile\":%s}", s->kdf_ops, s->kdf_mem_kib,
		       s->kdf_test ? "true" : "false");
	if (ok && s->kind == AMBER_SLOT_SHARES) {
		printf(",\"shares\":{\"set\":%u,\"iteration_exponent\":%u,\"group_threshold\":%u,"
		       "\"count\":%u,\"groups\":[", s->share_set, s->share_exponent,
		       s->group_threshold, s->nshares);
		for (size_t g = 0; g < s->ngroups; g++)
			printf("%s{\"threshold\":%u,\"count\":%u}", g ? "," : "",
			       s->groups[g].member_threshold, s->groups[g].member_count);
		printf("]}");
	}
	printf("}");
}

static int list(const struct key_args *o, amber_archive *a)
{
	size_t n = amber_archive_slot_count(a);
	int authed = amber_archive_meta_authenticated(a);

	if (!amber_archive_is_encrypted(a))
		return cli_error("archive %s is plain: it has no key slots", o->archive);
	if (o->json) {
		printf("{\"archive\":");
		cli_json_string(stdout, o->archive, strlen(o->archive));
		printf(",\"authenticated\":%s,\"slots\":[", authed ? "true" : "false");
	} else {
		printf("%-16s  %-10s  %-16s  %-20s  %s\n", "ID", "KIND", "LABEL", "CREATED",
		       "DETAILS");
	}
	for (size_t i = 0; i < n; i++) {
		amber_slot_info s;
		int ok = amber_archive_slot_info(&s, a, i) == 0;

		if (o->json) {
			json_slot(&s, ok, i == 0);
		} else {
			print_slot(&s, ok);
		}
	}
	if (o->json)
		printf("]}\n");
	else if (!authed)
		printf("(the key slots and config are not authenticated: an archive made before "
		       "slot kinds; 'amberfs key seal %s' adds it)\n", o->archive);
	return CLI_EXIT_OK;
}

/* ---- secret files --------------------------------------------------------------------- */

/* Create `path` with O_EXCL at 0600 and write data; sync it. */
static int write_secret_file(const char *path, const void *data, size_t len, const char *what)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	size_t off = 0;
	ssize_t w;

	if (fd < 0 && errno == EEXIST)
		return cli_error("%s %s exists: never overwritten; choose another name", what, path);
	if (fd < 0)
		return cli_error("cannot create %s %s: %s", what, path, strerror(errno));
	while (off < len) {
		w = write(fd, (const char *)data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	if (off < len || fsync(fd) != 0) {
		int e = errno;

		close(fd);
		unlink(path);
		return cli_error("cannot write %s %s: %s", what, path, strerror(e));
	}
	if (close(fd) != 0) {
		unlink(path);
		return cli_error("cannot write %s %s: %s", what, path, strerror(errno));
	}
	return 0;
}

static void sync_dir_of(const char *path)
{
	char *copy = strdup(path), *slash;
	int fd;

	if (!copy)
		return;
	slash = strrchr(copy, '/');
	if (slash)
		*(slash == copy ? slash + 1 : slash) = '\0';
	fd = open(slash ? copy : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(copy);
}

/* ---- changes -------------------------------------------------------------------------- */

static int change(amber_archive *a, const struct key_args *o, const uint8_t *blob,
		  size_t len, const char *remove_id, const char *message)
{
	amber_slot_change c = {.add = blob, .add_len = len, .remove_id = remove_id,
			       .signing_key_path = o->signing_key,
			       .unsigned_ok = o->unsigned_ok, .message = message};
	int rc = amber_archive_change_slots(a, &c);

	return rc ? cli_fail(rc, o->archive) : 0;
}

static void say_added(const uint8_t *blob, size_t len, const char *what, const char *archive)
{
	amber_slot_info s = {0};

	if (amber_slot_describe(&s, blob, len) == 0)
		fprintf(stderr, "amberfs: added %s slot %s to %s\n", what, s.id, archive);
}

static int add_passphrase(const struct key_args *o, amber_archive *a)
{
	unsigned char *pass = NULL;
	size_t plen = 0;
	uint8_t *blob = NULL;
	size_t blen = 0;
	amber_slot_new n = {.kind = AMBER_SLOT_PASSPHRASE, .label = o->label,
			    .kdf_profile = cli_kdf_test ? AMBER_KDF_TEST : AMBER_KDF_DEFAULT};
	int rc;

	if (cli_new_passphrase(&pass, &plen, o->archive, o->newpass, o->weak_ok))
		return CLI_EXIT_ERROR;
	n.secret = pass;
	n.secret_len = plen;
	rc = amber_archive_seal_slot(&blob, &blen, a, &n);
	cli_secret_free(pass, plen);
	if (rc)
		return cli_fail(rc, o->archive);
	rc = change(a, o, blob, blen, NULL, "amberfs archive metadata: add a passphrase slot\n");
	if (rc == 0)
		say_added(blob, blen, "passphrase", o->archive);
	free(blob);
	return rc;
}

static int passwd(const struct key_args *o, amber_archive *a)
{
	unsigned char *pass = NULL;
	size_t plen = 0, blen = 0;
	uint8_t *blob = NULL;
	amber_slot_info s;
	amber_slot_new n = {.kind = AMBER_SLOT_PASSPHRASE,
			    .kdf_profile = cli_kdf_test ? AMBER_KDF_TEST : AMBER_KDF_DEFAULT};
	int i = amber_archive_slot_find(a, o->arg), rc;

	if (i < 0)
		return cli_fail(i, o->archive);
	if (amber_archive_slot_info(&s, a, (size_t)i) != 0 || s.kind != AMBER_SLOT_PASSPHRASE)
		return cli_error("slot %s of %s is not a passphrase slot: only passphrases are "
				 "changed ('amberfs key list %s')", s.id, o->archive, o->archive);
	if (cli_new_passphrase(&pass, &plen, o->archive, o->newpass, o->weak_ok))
		return CLI_EXIT_ERROR;
	n.secret = pass;
	n.secret_len = plen;
	n.label = s.label;
	n.keep_id = s.id;
	rc = amber_archive_seal_slot(&blob, &blen, a, &n);
	cli_secret_free(pass, plen);
	if (rc)
		return cli_fail(rc, o->archive);
	rc = change(a, o, blob, blen, s.id, "amberfs archive metadata: change a passphrase\n");
	if (rc == 0)
		fprintf(stderr, "amberfs: changed the passphrase of slot %s of %s\n", s.id,
			o->archive);
	free(blob);
	return rc;
}

static int add_keyfile(const struct key_args *o, amber_archive *a)
{
	uint8_t *key = sodium_malloc(AMBER_KEYFILE_BYTES), *blob = NULL;
	amber_slot_new n = {.kind = AMBER_SLOT_KEYFILE, .label = o->label,
			    .secret_len = AMBER_KEYFILE_BYTES};
	size_t blen = 0;
	int rc;

	if (!key)
		return cli_error("out of locked memory for the key file");
	randombytes_buf(key, AMBER_KEYFILE_BYTES);
	n.secret = key;
	rc = amber_archive_seal_slot(&blob, &blen, a, &n);
	if (rc)
		rc = cli_fail(rc, o->archive);
	if (rc == 0)
		rc = write_secret_file(o->arg, key, AMBER_KEYFILE_BYTES, "key file");
	sodium_free(key);
	if (rc == 0) {
		sync_dir_of(o->arg);
		rc = change(a, o, blob, blen, NULL,
			    "amberfs archive metadata: add a key file slot\n");
		if (rc)
			unlink(o->arg); /* ours, and it opens nothing */
	}
	if (rc == 0)
		say_added(blob, blen, "key file", o->archive);
	free(blob);
	return rc;
}

static int remove_slot(const struct key_args *o, amber_archive *a)
{
	amber_slot_info s;
	int i = amber_archive_slot_find(a, o->arg), rc;

	if (i < 0)
		return cli_fail(i, o->archive);
	amber_archive_slot_info(&s, a, (size_t)i);
	rc = change(a, o, NULL, 0, s.id, "amberfs archive metadata: remove a key slot\n");
	if (rc == 0)
		fprintf(stderr, "amberfs: removed %s slot %s from %s (copies of the archive made "
			"before still hold it)\n", amber_slot_kind_name(s.kind), s.id, o->archive);
	return rc;
}

static int seal(const struct key_args *o, amber_archive *a)
{
	int rc;

	if (amber_archive_meta_authenticated(a)) {
		fprintf(stderr, "amberfs: %s: the key slots and config are already "
			"authenticated\n", o->archive);
		return CLI_EXIT_OK;
	}
	rc = change(a, o, NULL, 0, NULL, "amberfs archive metadata: authenticate\n");
	if (rc == 0)
		fprintf(stderr, "amberfs: %s: the key slots and config are now authenticated\n",
			o->archive);
	return rc;
}

/* ---- split ------------------------------------------------------------------------------- */

static int make_out_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) == 0 || (errno == EEXIST && stat(dir, &st) == 0 &&
				      S_ISDIR(st.st_mode)))
		return 0;
	return cli_error("cannot use %s for the share files: %s", dir,
			 errno == EEXIST ? "not a directory" : strerror(errno));
}

static void remove_files(char **paths, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unlink(paths[i]);
		free(paths[i]);
		paths[i] = NULL;
	}
}

/* One file per mnemonic: DIR/share-SET-gG-M.txt (group, member 1-based). */
static int write_shares(char **paths, size_t *written, const struct key_args *o,
			char **m, size_t count, uint16_t set)
{
	size_t per = (size_t)o->shares;
	int rc = 0;

	*written = 0;
	for (size_t i = 0; rc == 0 && i < count; i++) {
		size_t len = strlen(m[i]);
		char *line = sodium_malloc(len + 2);

		if (asprintf(&paths[i], "%s/share-%05u-g%zu-%zu.txt", o->out_dir, set,
			     i / per + 1, i % per + 1) < 0 || !line) {
			paths[i] = NULL;
			rc = cli_error("out of memory");
		}
		if (rc == 0) {
			memcpy(line, m[i], len);
			line[len] = '\n';
			rc = write_secret_file(paths[i], line, len + 1, "share file");
		}
		if (line)
			sodium_free(line);
		if (rc == 0)
			++*written;
		else
			free(paths[i]);
	}
	return rc;
}

static int split_params(amber_shares_new *n, const struct key_args *o)
{
	n->label = o->label;
	n->group_threshold = (uint8_t)o->group_threshold;
	n->ngroups = (size_t)o->groups;
	n->iteration_exponent = (uint8_t)o->exponent;
	for (int g = 0; g < o->groups; g++) {
		n->groups[g].member_threshold = (uint8_t)o->threshold;
		n->groups[g].member_count = (uint8_t)o->shares;
	}
	if (o->threshold == 1 && o->shares > 1)
		return cli_usage("key", "--threshold 1 with --shares %d: SLIP-0039 forbids it (each "
				 "share would be the secret itself); give 1 share, or a threshold "
				 "of 2 or more", o->shares);
	return 0;
}

static int split(const struct key_args *o, amber_archive *a)
{
	amber_shares_new n = {0};
	unsigned char *pass = NULL;
	size_t plen = 0, count = 0, blen = 0, written = 0;
	char **m = NULL, **paths = NULL;
	uint8_t *blob = NULL;
	amber_slot_info s;
	int rc = split_params(&n, o);

	if (rc)
		return rc;
	if (cli_unlock_src.share_passfile &&
	    cli_secret_get(&pass, &plen, o->archive, cli_unlock_src.share_passfile, 0))
		return CLI_EXIT_ERROR;
	n.passphrase = (const char *)pass;
	rc = amber_archive_seal_shares(&blob, &blen, &m, &count, a, &n);
	cli_secret_free(pass, plen);
	if (rc)
		return cli_fail(rc, o->archive);
	amber_slot_describe(&s, blob, blen);
	rc = make_out_dir(o->out_dir);
	if (rc == 0 && !(paths = calloc(count, sizeof(*paths))))
		rc = cli_error("out of memory");
	if (rc == 0)
		rc = write_shares(paths, &written, o, m, count, s.share_set);
	amber_slip39_free(m, count);
	if (rc == 0) {
		sync_dir_of(paths[0]);
		rc = change(a, o, blob, blen, NULL,
			    "amberfs archive metadata: add a recovery share slot\n");
	}
	if (rc == 0)
		fprintf(stderr, "amberfs: wrote %zu shares of set %u to %s; added shares slot %s "
			"to %s\n", count, s.share_set, o->out_dir, s.id, o->archive);
	if (rc && paths)
		remove_files(paths, written); /* they would open nothing */
	for (size_t i = 0; paths && i < written && rc == 0; i++)
		free(paths[i]);
	free(paths);
	free(blob);
	return rc;
}

/* ---- signing key ------------------------------------------------------------------------- */

static int print_public(const amber_archive *a)
{
	uint8_t pk[32];
	char line[160];
	int rc = amber_archive_signing_pubkey(pk, a);

	if (rc == AMBER_ENOTFOUND)
		return cli_error("archive %s has no signing key: create one with 'amberfs key "
				 "new-signing %s --signing-key FILE'",
				 amber_archive_path(a), amber_archive_path(a));
	if (rc == 0)
		rc = amber_pubkey_format(line, sizeof(line), pk, "amberfs");
	if (rc)
		return cli_fail(rc, amber_archive_path(a));
	printf("%s\n", line);
	return CLI_EXIT_OK;
}

static int new_signing(amber_archive *a, const char *path)
{
	int rc = amber_archive_add_signing_key(a, path);

	if (rc)
		return cli_fail(rc, amber_archive_path(a));
	fprintf(stderr, "amberfs: secret signing key written to %s (keep it apart from the "
		"archive); snapshots of %s must now be signed\n", path, amber_archive_path(a));
	return print_public(a);
}

/* ---- main ------------------------------------------------------------------------------- */

/* A signed archive's slot change needs its signer: check before any secret is made. */
static int signer_ok(const struct key_args *o, const amber_archive *a)
{
	int rc = amber_archive_check_signer(a, o->signing_key, o->unsigned_ok);

	return rc ? cli_fail(rc, o->archive) : 0;
}

static int run_change(const struct key_args *o, amber_archive *a)
{
	int rc;

	if (!amber_archive_is_encrypted(a))
		return cli_error("archive %s is plain: it has no key slots", o->archive);
	if ((rc = signer_ok(o, a)) != 0)
		return rc;
	if ((rc = cli_unlock_archive(a, o->archive, o->passfile)) != 0)
		return rc;
	if (is(o, "add-passphrase"))
		return add_passphrase(o, a);
	if (is(o, "add-keyfile"))
		return add_keyfile(o, a);
	if (is(o, "passwd"))
		return passwd(o, a);
	if (is(o, "remove"))
		return remove_slot(o, a);
	if (is(o, "split"))
		return split(o, a);
	return seal(o, a);
}

int cmd_key(int argc, char **argv)
{
	struct key_args o = {0};
	amber_open_opts oo;
	amber_archive *a = NULL;
	int rc, status = parse(&o, argc, argv);

	if (status >= 0)
		return status;
	cli_open_opts(&oo);
	oo.expect_encrypted = o.passfile != NULL || cli_unlock_given();
	rc = amber_archive_open_ext(&a, o.archive, &oo);
	if (rc)
		return cli_fail(rc, o.archive);
	if (is(&o, "new-signing"))
		status = new_signing(a, o.signing_key);
	else if (is(&o, "show-public"))
		status = print_public(a);
	else if (is(&o, "list"))
		status = list(&o, a);
	else
		status = run_change(&o, a);
	amber_archive_free(a);
	return status;
}
