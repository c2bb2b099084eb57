/*
 * The byte formats shared by the launcher (launcher.c) and the builder (edgebundle/backends/bundle.py,
 * edgebundle/runtime/payload.py). tests/unit/test_payload_format.py checks that both sides agree.
 *
 * An edgebundle binary is:
 *
 *   [launcher ELF][runner: zstd frames of a runner archive][app payload][trailer]
 *
 * The trailer is the last EB_TRAILER_SIZE bytes, all integers little-endian:
 *
 *   0  u64 runner_offset   where the first zstd frame starts
 *   8  u64 runner_size
 *   16 u64 app_offset      the app payload: model, manifest, self-test files, then a JSON index
 *   24 u64 app_size
 *   32 u64 index_size      the JSON index is the last index_size bytes of the app payload
 *   40 char key[32]        the runner's cache key, lowercase hex
 *   72 u32 version         EB_FORMAT_VERSION
 *   76 u32 trailer_size    EB_TRAILER_SIZE
 *   80 char magic[8]       EB_TRAILER_MAGIC
 *
 * The runner is one zstd frame holding the whole archive, or several whose contents one after the
 * other are the archive cut at record boundaries: the first holds the magic and every directory, the
 * last the end record (after the symlinks, if any), those between only files (the launcher unpacks
 * them in parallel). A runner archive is EB_ARCHIVE_MAGIC, then records, each a fixed
 * EB_RECORD_SIZE-byte header followed by path_len bytes of path and data_len bytes of data:
 *
 *   0  u8  kind            EB_KIND_DIR, EB_KIND_FILE, EB_KIND_SYMLINK (data = target), EB_KIND_END
 *   1  u8  pad[3]
 *   4  u32 mode            permission bits
 *   8  u32 path_len        a relative path, no "." or ".." component, parents before children
 *   12 u32 pad
 *   16 u64 data_len
 *
 * Symlinks come after every directory and file, so that nothing is ever written through one.
 *
 * An unpacked runner directory ends up holding EB_FILES, written by the launcher as it unpacks: the
 * list of what it unpacked, EB_FILES_MAGIC then the archive's records without their data (data_len
 * stays: a file's size, a symlink target's length), the end record last. Every start checks the
 * directory against it (verify() in launcher.c) so that a copy damaged by a tmp cleaner is unpacked
 * again instead of failing at every start.
 */
#ifndef EB_FORMAT_H
#define EB_FORMAT_H

#define EB_TRAILER_MAGIC "EDGEBNDL"
#define EB_TRAILER_SIZE 88
#define EB_FORMAT_VERSION 1
#define EB_KEY_LEN 32

#define EB_ARCHIVE_MAGIC "EBRUNR01"
#define EB_RECORD_SIZE 24
#define EB_KIND_DIR 'D'
#define EB_KIND_FILE 'F'
#define EB_KIND_SYMLINK 'L'
#define EB_KIND_END 'E'

#define EB_FILES ".eb-files"
#define EB_FILES_MAGIC "EBFILE01"

/* The program inside a runner that the launcher executes. */
#define EB_ENTRY "run"

/* A runner that carries its own C library (edgebundle/backends/libc.py): the entry program's PT_INTERP
 * holds this magic, the loader's path inside the runner and ':', padded; at unpack time the launcher
 * writes the loader's absolute path there (fix_interp() in launcher.c). */
#define EB_INTERP_MAGIC "/edgebundle-interp:"

/* The open binary, passed to the runtime (edgebundle/runtime/payload.py reads and removes it). */
#define EB_ENV_PAYLOAD_FD "_EDGEBUNDLE_PAYLOAD_FD"

/* CLOCK_MONOTONIC in ns when the launcher started, for the runtime's start-up split (--eb-bench);
 * the runtime removes it from its environment. */
#define EB_ENV_T0 "_EDGEBUNDLE_T0"

/* How many unpacked runners a cache keeps besides those in use (see prune() in launcher.c). */
#define EB_KEEP_RUNNERS 2

#endif
