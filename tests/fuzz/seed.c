/*
 * fuzz-seed ARCHIVE OUTDIR: write a seed corpus for the fuzz targets from a
 * real archive.  Every object of the archive's git store is sorted by what
 * it is: trees, commits and tags as they are stored; blobs as raw frames;
 * and, where a frame decodes without a key (plain archives), its payload
 * as a manifest, fan-out list, chunk index or record seed.  Key slots,
 * config and the public key come from the metadata tree by name.  Files
 * are named by a hash of their bytes, so rerunning adds nothing twice.
 */
#include "buf.h"
#include "codec.h"
#include "manifest.h"

#include <git2.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char *outdir;

static void put(const char *target, const void *prefix, size_t plen, const void *data,
		size_t len)
{
	char dir[4096], path[4200], hex[17];
	uint8_t h[8];
	crypto_generichash_state st;
	FILE *f;

	static struct {
		const char *target;
		int n;
	} counts[16];
	size_t k = 0;

	if (len > ((size_t)256 << 10))
		return; /* keep the corpus small: few, small seeds per target */
	while (k < 16 && counts[k].target && strcmp(counts[k].target, target) != 0)
		k++;
	if (k == 16)
		return;
	counts[k].target = target;
	if (++counts[k].n > 48)
		return;
	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, prefix, plen);
	crypto_generichash_update(&st, data, len);
	crypto_generichash_final(&st, h, sizeof(h));
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	snprintf(dir, sizeof(dir), "%s/%s", outdir, target);
	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/%s", dir, hex);
	if (!(f = fopen(path, "wb")))
		return;
	fwrite(prefix, 1, plen, f);
	fwrite(data, 1, len, f);
	fclose(f);
}

/* The declared file size an index seed needs: the sum of its lengths. */
static uint64_t index_sum(const uint8_t *p, size_t len)
{
	uint64_t sum = 0;
	uint32_t n;

	if (len < 5)
		return 0;
	n = (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 24;
	for (size_t i = 0; i < n && 5 + (i + 1) * 48 <= len; i++) {
		const uint8_t *l = p + 5 + i * 48 + 44;

		sum += (uint32_t)l[0] | (uint32_t)l[1] << 8 | (uint32_t)l[2] << 16 |
		       (uint32_t)l[3] << 24;
	}
	return sum;
}

static void seed_blob(const uint8_t *data, size_t len)
{
	static const char *names[] = {NULL, NULL, "manifest", "fanout", "index", "record"};

	for (int type = 1; type <= 5; type++) {
		amber_buf out;
		uint8_t tb = (uint8_t)(type - 1);

		amber_buf_init(&out, (size_t)8 << 20);
		if (amber_codec_decode(&out, NULL, type, NULL, data, len, (size_t)8 << 20) == 0) {
			put("frame", &tb, 1, data, len);
			if (type == AMBER_OBJ_INDEX) {
				uint64_t sum = index_sum(out.data, out.len);

				put("index", &sum, 8, out.data, out.len);
			} else if (names[type]) {
				put(names[type], NULL, 0, out.data, out.len);
			}
			amber_buf_dispose(&out);
			return;
		}
		amber_buf_dispose(&out);
	}
	put("frame", "\0", 1, data, len); /* encrypted: header checks only */
}

/* A record travels base64 in the commit message's "Amberfs-Record:" trailer. */
static void seed_commit_record(const char *msg)
{
	static const char tag[] = "Amberfs-Record: ";
	const char *p;

	for (p = msg; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		size_t n, bl = 0;
		uint8_t bin[8192], tb = AMBER_OBJ_RECORD - 1;
		amber_buf out;

		if (strncmp(p, tag, sizeof(tag) - 1) != 0)
			continue;
		p += sizeof(tag) - 1;
		n = strcspn(p, "\n");
		if (n < 40 || n >= sizeof(bin) ||
		    sodium_base642bin(bin, sizeof(bin), p, n, NULL, &bl, NULL,
				      sodium_base64_VARIANT_ORIGINAL) != 0)
			continue;
		amber_buf_init(&out, (size_t)1 << 20);
		if (amber_codec_decode(&out, NULL, AMBER_OBJ_RECORD, NULL, bin, bl, 1 << 20) == 0)
			put("record", NULL, 0, out.data, out.len);
		amber_buf_dispose(&out);
		put("frame", &tb, 1, bin, bl);
	}
}

static int each(const git_oid *id, void *payload)
{
	git_odb *odb = payload;
	git_odb_object *o = NULL;
	const uint8_t *data;
	size_t len;

	if (git_odb_read(&o, odb, id) < 0)
		return 0;
	data = git_odb_object_data(o);
	len = git_odb_object_size(o);
	switch (git_odb_object_type(o)) {
	case GIT_OBJECT_TREE:
		put("tree", NULL, 0, data, len);
		break;
	case GIT_OBJECT_COMMIT:
	case GIT_OBJECT_TAG:
		put("commit", NULL, 0, data, len);
		if (memmem(data, len, "-----BEGIN SSH SIGNATURE-----", 29)) {
			const char *b = memmem(data, len, "-----BEGIN SSH SIGNATURE-----", 29);
			const char *e = memmem(b, len - (size_t)(b - (const char *)data),
					       "-----END SSH SIGNATURE-----", 27);
			/* In a commit the armor is indented by one space per line. */
			if (e)
				put("sshsig", NULL, 0, b, (size_t)(e - b) + 27);
		}
		break;
	case GIT_OBJECT_BLOB:
		if (len >= 8 && memcmp(data, "AMBSLOT", 7) == 0)
			put("keyslot", NULL, 0, data, len);
		else if (len > 12 && memcmp(data, "ssh-ed25519 ", 12) == 0)
			put("pubkey", NULL, 0, data, len);
		else if (len > 7 && memcmp(data, "format ", 7) == 0)
			put("config", NULL, 0, data, len);
		else
			seed_blob(data, len);
		break;
	default:
		break;
	}
	if (git_odb_object_type(o) == GIT_OBJECT_COMMIT) {
		char *msg = strndup((const char *)data, len);

		if (msg)
			seed_commit_record(msg);
		free(msg);
	}
	git_odb_object_free(o);
	return 0;
}

int main(int argc, char **argv)
{
	git_repository *repo = NULL;
	git_odb *odb = NULL;

	if (argc != 3) {
		fprintf(stderr, "usage: fuzz-seed ARCHIVE OUTDIR\n");
		return 2;
	}
	outdir = argv[2];
	mkdir(outdir, 0755);
	if (sodium_init() < 0 || git_libgit2_init() < 0 ||
	    git_repository_open_bare(&repo, argv[1]) < 0 || git_repository_odb(&odb, repo) < 0) {
		fprintf(stderr, "fuzz-seed: cannot open %s as a git repository\n", argv[1]);
		return 1;
	}
	git_odb_foreach(odb, each, odb);
	git_odb_free(odb);
	git_repository_free(repo);
	git_libgit2_shutdown();
	return 0;
}
