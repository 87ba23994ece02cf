/*
 * Fuzz targets for every parser of archive or user input.
 *
 * Each fuzz_<name>.c defines its entry point with AMBER_FUZZ(name).  Built
 * with -DAMBER_LIBFUZZER (clang, -fsanitize=fuzzer) the file is a libFuzzer
 * program on its own; otherwise the function is named fuzz_<name> and the
 * Criterion program test_fuzz.c replays the seed corpus and every saved
 * crash through it, so the ordinary test run keeps them fixed.
 */
#ifndef AMBER_FUZZ_H
#define AMBER_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#ifdef AMBER_LIBFUZZER
#define AMBER_FUZZ(name)                                                                   \
	static int fuzz_##name(const uint8_t *data, size_t size);                          \
	int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                      \
	int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                       \
	{                                                                                  \
		return fuzz_##name(data, size);                                            \
	}                                                                                  \
	static int fuzz_##name(const uint8_t *data, size_t size)
#else
#define AMBER_FUZZ(name)                                                                   \
	int fuzz_##name(const uint8_t *data, size_t size);                                 \
	int fuzz_##name(const uint8_t *data, size_t size)
#endif

/* The input as a NUL-terminated string (malloc'd; NULL when out of memory). */
char *fuzz_cstring(const uint8_t *data, size_t size);

/* One-time library setup (sodium, libgit2); idempotent. */
void fuzz_init(void);

#endif
