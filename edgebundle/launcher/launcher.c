/*
 * The first bytes of every edgebundle binary: find the runner in a per-user cache, unpacking it
 * there once per content hash, and exec it with the binary itself open for the runtime.
 *
 * Why not PyInstaller's own one-file mode: it unpacks ~100 MB to /tmp on EVERY start (most of its
 * start-up time) and a SIGKILLed run leaves that copy behind for good. Here the runner (a PyInstaller
 * one-folder program, see edgebundle/backends/pyinstaller.py) is unpacked once per content hash into
 *
 *     $EDGEBUNDLE_CACHE_DIR/run/KEY, else $XDG_CACHE_HOME/edgebundle/run/KEY,
 *     else $HOME/.cache/edgebundle/run/KEY, else ${TMPDIR:-/tmp}/edgebundle-UID/run/KEY
 *
 * (the first that works: a directory that cannot be created or written, or is on a noexec mount, is
 * skipped), and every later start is an open, a flock and an exec. The model is never unpacked: it
 * stays in the binary and the runtime reads it from the descriptor passed in $_EDGEBUNDLE_PAYLOAD_FD.
 *
 * Unpacking happens under an exclusive lock on RUN/.lock (two first starts at once: the second waits,
 * then runs what the first unpacked) into RUN/.KEY.tmp.PID, which is renamed to RUN/KEY only
 * when complete and synced. The runner's files come in several zstd frames (eb_format.h), unpacked
 * on as many threads as the process may use CPUs: zstd decompresses a frame on one core, and that is
 * most of a first start's extra time. Each file's writeback starts as soon as it is written.
 * Whoever holds the lock first removes every .*.tmp.* entry: only a killed run can have left one.
 * It then removes all but the EB_KEEP_RUNNERS newest runners that no running program uses (each
 * running program holds a shared flock on its runner directory, inherited across exec). So a cache
 * holds at most a few runners, and nothing is written per run.
 *
 * Damage: a tmp cleaner (or a user) may delete or truncate files of an unpacked runner, which would
 * otherwise make every start fail inside Python. The unpacker writes the list of what it unpacked with
 * their sizes (EB_FILES), and every start compares the directory with it: an lstat per entry, from the
 * dentry cache (0.4 ms for the 252 entries of a PyInstaller runner, against a warm start of ~170 ms;
 * README, "damaged cache"). A damaged runner is moved aside and unpacked again under the lock, with
 * one line on stderr. Bytes changed in place (same size) are not detected: reading them all at every
 * start would cost more than the start itself.
 *
 * C library: the launcher is static (musl), so it starts on a device with any C library or none. A
 * runner that carries its own glibc (edgebundle/backends/libc.py) has a placeholder as its entry
 * program's loader (PT_INTERP); unpacking writes the absolute path of the runner's own ld.so there,
 * in RUN/KEY, before the rename makes the runner visible (fix_interp()). The file keeps its size, so
 * the damage check below is unchanged, and nothing is written at later starts. A cache path too
 * long for the reserved bytes (1 kB) skips that cache directory for the next one.
 *
 * Trust: a runner directory is used only when owned by the effective user (or root) and not writable
 * by group or others; the /tmp fallback directory must be private (0700) and ours.
 *
 * Formats: eb_format.h. Exit code 70 with a one-line message when no runner can be started.
 * EDGEBUNDLE_DEBUG=1 prints what the launcher does on stderr.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "eb_format.h"

#define EXIT_LAUNCHER 70
#define CHUNK (1 << 17)
#define MAX_RUNNERS 64
#define MAX_FRAMES 64  /* of a runner */
#define MAX_THREADS 8  /* unpacking it */

static const char *prog = "edgebundle";
static char t0[24]; /* EB_ENV_T0: when this process started, for the runtime */
static int debug;
static char reasons[2048];
static char damage[PATH_MAX + 64]; /* what verify() found wrong, for the one line saying so */

struct trailer {
    uint64_t runner_offset, runner_size, app_offset, app_size, index_size;
    char key[EB_KEY_LEN + 1];
};

static void die(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: error: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_LAUNCHER);
}

static void say(const char *fmt, ...) {
    va_list ap;
    if (!debug) return;
    fprintf(stderr, "%s: launcher: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Remember why a cache directory was not used, for the message when none works. */
static void note(const char *dir, const char *what, int err) {
    size_t used = strlen(reasons);
    snprintf(reasons + used, sizeof reasons - used, "%s%s: %s: %s", used ? "; " : "", dir, what,
             strerror(err));
    say("skipping %s: %s: %s", dir, what, strerror(err));
}

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = pread(fd, p, n, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        p += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t put = write(fd, p, n);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) return -1;
        p += put;
        n -= (size_t)put;
    }
    return 0;
}

/* ------------------------------------------------------------------ the binary itself */

static int open_self(const char *argv0) {
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd >= 0 || !argv0) return fd;
    if (strchr(argv0, '/')) return open(argv0, O_RDONLY | O_CLOEXEC);
    /* No /proc: look argv[0] up on PATH as the shell did. */
    const char *path = getenv("PATH");
    char buf[PATH_MAX];
    while (path && *path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        if (snprintf(buf, sizeof buf, "%.*s/%s", (int)len, len ? path : ".", argv0) < (int)sizeof buf &&
            access(buf, X_OK) == 0)
            return open(buf, O_RDONLY | O_CLOEXEC);
        path = end ? end + 1 : NULL;
    }
    errno = ENOENT;
    return -1;
}

static const char *read_trailer(int fd, struct trailer *t) {
    struct stat st;
    unsigned char b[EB_TRAILER_SIZE];
    if (fstat(fd, &st) != 0) return strerror(errno);
    if ((uint64_t)st.st_size < EB_TRAILER_SIZE ||
        pread_full(fd, b, EB_TRAILER_SIZE, (uint64_t)st.st_size - EB_TRAILER_SIZE) != 0 ||
        memcmp(b + 80, EB_TRAILER_MAGIC, 8) != 0)
        return "no edgebundle payload at its end (truncated, or not an edgebundle binary)";
    if (le32(b + 72) != EB_FORMAT_VERSION || le32(b + 76) != EB_TRAILER_SIZE)
        return "payload format version unknown to this launcher";
    t->runner_offset = le64(b);
    t->runner_size = le64(b + 8);
    t->app_offset = le64(b + 16);
    t->app_size = le64(b + 24);
    t->index_size = le64(b + 32);
    memcpy(t->key, b + 40, EB_KEY_LEN);
    t->key[EB_KEY_LEN] = '\0';
    uint64_t body = (uint64_t)st.st_size - EB_TRAILER_SIZE;
    if (t->runner_offset > body || t->runner_size > body - t->runner_offset || t->app_offset > body ||
        t->app_size > body - t->app_offset || t->index_size > t->app_size)
        return "payload offsets point outside the file (truncated?)";
    for (int i = 0; i < EB_KEY_LEN; i++)
        if (!strchr("0123456789abcdef", t->key[i]) || !t->key[i]) return "malformed runner key";
    return NULL;
}

/* ------------------------------------------------------------------ directories */

static int private_enough(const struct stat *st) {
    return S_ISDIR(st->st_mode) && (st->st_uid == geteuid() || st->st_uid == 0) && !(st->st_mode & 022);
}

/* mkdir -p with mode 0700 for what it creates. */
static int mkdir_p(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
            *p = saved;
            if (saved == '\0') return 0;
        }
    }
}

static int is_tmp_name(const char *name) {
    return name[0] == '.' && strstr(name, ".tmp.") != NULL;
}

static int is_key_name(const char *name) {
    size_t n = strlen(name);
    return n == EB_KEY_LEN && strspn(name, "0123456789abcdef") == n;
}

/* rm -r NAME in DIRFD without following symlinks. */
static int rm_rf_at(int dirfd, const char *name) {
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlinkat(dirfd, name, 0);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    int removed;
    do { /* again until empty: entries removed while reading may hide others */
        removed = 0;
        rewinddir(d);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            if (rm_rf_at(fd, e->d_name) == 0) removed++;
        }
    } while (removed);
    closedir(d);
    return unlinkat(dirfd, name, AT_REMOVEDIR);
}

/* Move NAME aside under a .tmp. name (then remove it): it disappears from its place atomically. */
static void discard(int runfd, const char *name) {
    char aside[NAME_MAX];
    snprintf(aside, sizeof aside, ".%s.tmp.%ld.old", name, (long)getpid());
    if (renameat(runfd, name, runfd, aside) == 0) rm_rf_at(runfd, aside);
}

/* Under the lock: every .tmp. entry is a leftover of a killed run. */
static void clean_leftovers(int runfd) {
    DIR *d = fdopendir(dup(runfd));
    if (!d) return;
    rewinddir(d); /* the duplicate shares runfd's offset, which an earlier listing left at the end */
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (is_tmp_name(e->d_name)) {
            say("removing %s (left by a killed run)", e->d_name);
            rm_rf_at(runfd, e->d_name);
        }
    }
    closedir(d);
}

struct runner_entry {
    char name[EB_KEY_LEN + 1];
    struct timespec mtime;
};

static int newer_first(const void *a, const void *b) {
    const struct timespec *x = &((const struct runner_entry *)a)->mtime;
    const struct timespec *y = &((const struct runner_entry *)b)->mtime;
    if (x->tv_sec != y->tv_sec) return x->tv_sec < y->tv_sec ? 1 : -1;
    return (x->tv_nsec < y->tv_nsec) - (x->tv_nsec > y->tv_nsec);
}

/* Under the lock: keep KEEP and the newest others up to EB_KEEP_RUNNERS; keep any in use. */
static void prune(int runfd, const char *keep) {
    struct runner_entry found[MAX_RUNNERS];
    int n = 0;
    DIR *d = fdopendir(dup(runfd));
    if (!d) return;
    rewinddir(d); /* the duplicate shares runfd's offset, which an earlier listing left at the end */
    struct dirent *e;
    struct stat st;
    while ((e = readdir(d)) != NULL && n < MAX_RUNNERS) {
        if (!is_key_name(e->d_name) || !strcmp(e->d_name, keep)) continue;
        if (fstatat(runfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) continue;
        memcpy(found[n].name, e->d_name, sizeof found[n].name); /* is_key_name: EB_KEY_LEN + NUL */
        found[n++].mtime = st.st_mtim;
    }
    closedir(d);
    qsort(found, (size_t)n, sizeof found[0], newer_first);
    for (int i = EB_KEEP_RUNNERS - 1; i < n; i++) {
        int fd = openat(runfd, found[i].name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            say("removing runner %s (older than the %d newest)", found[i].name, EB_KEEP_RUNNERS);
            discard(runfd, found[i].name);
        }
        close(fd);
    }
}

/* ------------------------------------------------------------------ unpacking */

/* One zstd frame of the runner, decompressed from memory a CHUNK at a time. */
struct zsrc {
    ZSTD_DStream *ds;
    ZSTD_inBuffer in;
    unsigned char *out;
    size_t opos, olen;
    size_t last; /* what ZSTD_decompressStream returned last: 0 when the frame ended (checksum ok) */
};

/* More decompressed bytes into z->out; 0 at the end of the frame, -1 on an error. */
static int zfill(struct zsrc *z) {
    z->opos = z->olen = 0;
    for (;;) {
        if (z->in.pos == z->in.size && z->last == 0) return 0;
        ZSTD_outBuffer ob = {z->out, CHUNK, 0};
        size_t before = z->in.pos;
        size_t r = ZSTD_decompressStream(z->ds, &ob, &z->in);
        if (ZSTD_isError(r)) {
            say("zstd: %s", ZSTD_getErrorName(r));
            return -1;
        }
        z->last = r;
        if (ob.pos > 0) {
            z->olen = ob.pos;
            return 1;
        }
        if (z->in.pos == before && z->in.pos == z->in.size) return r == 0 ? 0 : -1; /* ended inside */
    }
}

static int zread(struct zsrc *z, void *dst, size_t n) {
    unsigned char *p = dst;
    while (n > 0) {
        if (z->opos == z->olen && zfill(z) <= 0) return -1;
        size_t take = z->olen - z->opos < n ? z->olen - z->opos : n;
        memcpy(p, z->out + z->opos, take);
        z->opos += take;
        p += take;
        n -= take;
    }
    return 0;
}

/* 1 when the frame has ended exactly here (checksum verified), 0 when more follows, -1 on an error. */
static int zend(struct zsrc *z) {
    if (z->opos < z->olen) return 0;
    int r = zfill(z);
    return r < 0 ? -1 : r == 0;
}

/* A relative path of normal components. */
static int safe_path(const char *p) {
    if (!*p || *p == '/') return 0;
    for (const char *c = p; *c;) {
        const char *end = strchr(c, '/');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) return 0;
        if (!end) break;
        c = end + 1;
    }
    return 1;
}

/* The EB_FILES list, built while unpacking. */
struct list {
    unsigned char *data;
    size_t len, cap;
};

static int append(struct list *l, const void *p, size_t n) {
    if (l->len + n > l->cap) {
        size_t cap = l->cap ? l->cap : 1 << 16;
        while (cap < l->len + n) cap *= 2;
        unsigned char *grown = realloc(l->data, cap);
        if (!grown) return -1;
        l->data = grown;
        l->cap = cap;
    }
    memcpy(l->data + l->len, p, n);
    l->len += n;
    return 0;
}

/* A runner is one zstd frame holding the whole archive (ONLY), or several whose contents, one after
 * the other, are the archive cut at record boundaries: the FIRST holds the magic and every directory,
 * the MIDDLE ones only files, unpacked in parallel, the LAST the rest of the files, the symlinks and
 * the end record, after all the others. */
enum role { ONLY, FIRST, MIDDLE, LAST };

struct part {
    const unsigned char *src; /* the compressed frame */
    size_t size;
    enum role role;
    struct list files; /* its records without their data, for EB_FILES */
    int err;           /* errno of its failure, or 0 */
};

static int unpack_records(struct zsrc *z, int dirfd, struct part *part, unsigned char *buf) {
    unsigned char h[EB_RECORD_SIZE];
    char path[PATH_MAX], target[PATH_MAX], magic[8];
    enum role role = part->role;
    int ends = role == ONLY || role == LAST, symlinks_started = 0;
    if (role == ONLY || role == FIRST) {
        if (zread(z, magic, 8) != 0 || memcmp(magic, EB_ARCHIVE_MAGIC, 8) != 0) return -1;
    }
    for (;;) {
        int end = zend(z);
        if (end < 0) return -1;
        if (end) return ends ? -1 : 0; /* cut at a record boundary; the last frame has the end record */
        if (zread(z, h, sizeof h) != 0) return -1;
        int kind = h[0];
        uint32_t mode = le32(h + 4), plen = le32(h + 8);
        uint64_t dlen = le64(h + 16);
        if (append(&part->files, h, sizeof h) != 0) return -1;
        if (kind == EB_KIND_END) {
            if (!ends) return -1;
            break;
        }
        if (plen == 0 || plen >= sizeof path || zread(z, path, plen) != 0) return -1;
        path[plen] = '\0';
        if (strlen(path) != plen || !safe_path(path) || append(&part->files, path, plen) != 0) return -1;
        if (kind == EB_KIND_DIR) {
            if ((role != ONLY && role != FIRST) || symlinks_started || dlen != 0 ||
                mkdirat(dirfd, path, 0700) != 0)
                return -1;
        } else if (kind == EB_KIND_FILE) {
            if (symlinks_started) return -1;
            /* Read-only for its owner only (nobody edits a runner in place); writing through the
             * descriptor that created it is still allowed. */
            mode_t perm = (mode & 0100) ? 0500 : 0400;
            int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, perm);
            if (fd < 0) return -1;
            while (dlen > 0) {
                size_t n = dlen < CHUNK ? (size_t)dlen : CHUNK;
                if (zread(z, buf, n) != 0 || write_full(fd, buf, n) != 0) {
                    close(fd);
                    return -1;
                }
                dlen -= n;
            }
            /* Its writeback starts now, while the rest is decompressed: the syncfs() before the
             * rename then has less left to wait for. */
            sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
            if (close(fd) != 0) return -1;
        } else if (kind == EB_KIND_SYMLINK) {
            if (!ends) return -1;
            symlinks_started = 1;
            if (dlen == 0 || dlen >= sizeof target || zread(z, target, (size_t)dlen) != 0) return -1;
            target[dlen] = '\0';
            if (strlen(target) != dlen || target[0] == '/' || symlinkat(target, dirfd, path) != 0)
                return -1;
        } else {
            return -1;
        }
    }
    /* Nothing may follow the end record, and the frame must have ended (its checksum verified). */
    return zend(z) == 1 ? 0 : -1;
}

/* Unpack one frame into DIRFD; its errno in part->err on failure. */
static int unpack_part(struct part *part, int dirfd) {
    struct zsrc z = {0};
    unsigned char *buf = malloc(CHUNK);
    z.out = malloc(CHUNK);
    z.ds = ZSTD_createDStream();
    z.in.src = part->src;
    z.in.size = part->size;
    z.last = 1;
    errno = 0;
    int ready = buf && z.out && z.ds && !ZSTD_isError(ZSTD_initDStream(z.ds));
    int rc = ready ? unpack_records(&z, dirfd, part, buf) : -1;
    part->err = rc == 0 ? 0 : errno ? errno : EBADMSG;
    ZSTD_freeDStream(z.ds);
    free(z.out);
    free(buf);
    return rc;
}

/* The MIDDLE frames, taken in turn by this thread and its helpers. */
struct pool {
    struct part *parts;
    size_t count, next;
    int dirfd, failed;
    pthread_mutex_t lock;
};

static void *unpack_some(void *arg) {
    struct pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        size_t i = p->next++;
        int stop = p->failed || i >= p->count;
        pthread_mutex_unlock(&p->lock);
        if (stop) return NULL;
        if (unpack_part(&p->parts[i], p->dirfd) != 0) {
            pthread_mutex_lock(&p->lock);
            p->failed = 1;
            pthread_mutex_unlock(&p->lock);
        }
    }
}

/* 0, or -1 when a frame failed (its errno in its part). */
static int unpack_parallel(struct part *parts, size_t count, int dirfd) {
    struct pool pool = {.parts = parts, .count = count, .dirfd = dirfd};
    pthread_mutex_init(&pool.lock, NULL);
    cpu_set_t cpus;
    size_t threads = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? (size_t)CPU_COUNT(&cpus) : 1;
    if (threads > count) threads = count;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    pthread_t helpers[MAX_THREADS];
    size_t started = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    while (started + 1 < threads && pthread_create(&helpers[started], &attr, unpack_some, &pool) == 0)
        started++;
    pthread_attr_destroy(&attr);
    say("unpacking %zu frames on %zu threads", count, started + 1);
    unpack_some(&pool);
    for (size_t i = 0; i < started; i++) pthread_join(helpers[i], NULL);
    pthread_mutex_destroy(&pool.lock);
    return pool.failed ? -1 : 0;
}

/* Unpack the runner into DIRFD, then write EB_FILES there. */
static int unpack(int self, const struct trailer *t, int dirfd) {
    long page = sysconf(_SC_PAGESIZE);
    uint64_t skip = t->runner_offset % (uint64_t)(page > 0 ? page : 4096);
    size_t span = (size_t)(skip + t->runner_size);
    unsigned char *map = mmap(NULL, span, PROT_READ, MAP_PRIVATE, self, (off_t)(t->runner_offset - skip));
    unsigned char *copy = NULL; /* a file system that cannot map files: read it */
    if (map == MAP_FAILED) {
        copy = malloc((size_t)t->runner_size);
        if (!copy || pread_full(self, copy, (size_t)t->runner_size, t->runner_offset) != 0) {
            free(copy);
            return -1;
        }
    }
    const unsigned char *src = copy ? copy : map + skip;
    static struct part parts[MAX_FRAMES];
    size_t n = 0;
    int rc = 0;
    for (uint64_t off = 0; off < t->runner_size && rc == 0; n++) {
        size_t len = ZSTD_findFrameCompressedSize(src + off, (size_t)(t->runner_size - off));
        if (n == MAX_FRAMES || ZSTD_isError(len)) {
            errno = EBADMSG;
            rc = -1;
            break;
        }
        parts[n] = (struct part){.src = src + off, .size = len, .role = MIDDLE};
        off += len;
    }
    if (rc == 0 && n == 0) errno = EBADMSG, rc = -1;
    if (rc == 0) {
        parts[0].role = n == 1 ? ONLY : FIRST;
        parts[n - 1].role = n == 1 ? ONLY : LAST;
        rc = unpack_part(&parts[0], dirfd); /* the directories, before anything goes into them */
        if (rc == 0 && n > 2) rc = unpack_parallel(parts + 1, n - 2, dirfd);
        if (rc == 0 && n > 1) rc = unpack_part(&parts[n - 1], dirfd); /* symlinks after every file */
        int err = 0; /* the first failed frame's, for the one line saying so */
        for (size_t i = 0; i < n && !err; i++) err = parts[i].err;
        errno = err;
    }
    if (rc == 0) {
        /* The records in archive order; O_EXCL: an archive that holds a file of that name is refused
         * rather than trusted. */
        struct list files = {0};
        if (append(&files, EB_FILES_MAGIC, 8) != 0) rc = -1;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = append(&files, parts[i].files.data, parts[i].files.len);
        int fd = rc == 0 ? openat(dirfd, EB_FILES, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400)
                         : -1;
        if (fd < 0 || write_full(fd, files.data, files.len) != 0) rc = -1;
        if (fd >= 0 && close(fd) != 0) rc = -1;
        free(files.data);
    }
    for (size_t i = 0; i < n; i++) free(parts[i].files.data);
    if (copy)
        free(copy);
    else
        munmap(map, span);
    if (rc != 0 && errno == 0) errno = EBADMSG;
    return rc;
}

/* If the entry program of the runner unpacked in DIRFD has the EB_INTERP_MAGIC placeholder as its
 * loader, write FINAL (RUN/KEY, where the runner will be) + the loader's path in the runner there.
 * 0, or -1 with errno (ENAMETOOLONG: the path does not fit in the placeholder). */
static int fix_interp(int dirfd, const char *final) {
    struct stat st;
    if (fstatat(dirfd, EB_ENTRY, &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
    if (!S_ISREG(st.st_mode)) return errno = ENOEXEC, -1;
    /* Writable by its owner only while it is patched: the archive's mode comes back after. */
    if (fchmodat(dirfd, EB_ENTRY, (st.st_mode & 07777) | S_IWUSR, 0) != 0) return -1;
    int fd = openat(dirfd, EB_ENTRY, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    int rc = -1;
    Elf64_Ehdr eh;
    if (fd < 0) goto out;
    ssize_t got = pread(fd, &eh, sizeof eh, 0);
    if (got < 0) goto out;
    if ((size_t)got < sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_phentsize != sizeof(Elf64_Phdr)) {
        rc = 0; /* not a 64-bit ELF program: nothing of ours to patch */
        goto out;
    }
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        if (pread_full(fd, &ph, sizeof ph, eh.e_phoff + (uint64_t)i * sizeof ph) != 0) goto out;
        if (ph.p_type != PT_INTERP) continue;
        char old[1024], new[1024];
        size_t magic = sizeof EB_INTERP_MAGIC - 1;
        if (ph.p_filesz > sizeof old || ph.p_filesz <= magic || pread_full(fd, old, ph.p_filesz, ph.p_offset) != 0) {
            rc = 0; /* a loader path of its own (--system-libc): the device's */
            goto out;
        }
        old[ph.p_filesz - 1] = '\0';
        if (memcmp(old, EB_INTERP_MAGIC, magic) != 0) {
            rc = 0;
            goto out;
        }
        char *rel = old + magic, *colon = strchr(rel, ':');
        if (colon) *colon = '\0';
        if (!colon || !safe_path(rel)) {
            errno = EBADMSG;
            goto out;
        }
        memset(new, 0, sizeof new);
        int n = snprintf(new, sizeof new, "%s/%s", final, rel);
        if (n < 0 || (size_t)n >= ph.p_filesz) {
            errno = ENAMETOOLONG;
            goto out;
        }
        if (pwrite(fd, new, ph.p_filesz, (off_t)ph.p_offset) != (ssize_t)ph.p_filesz) goto out;
        say("loader of %s: %s", EB_ENTRY, new);
        rc = 0;
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) close(fd);
    int err = errno;
    fchmodat(dirfd, EB_ENTRY, st.st_mode & 07777, 0);
    errno = err;
    return rc;
}

/* ------------------------------------------------------------------ checking an unpacked runner */

static int verify_failed(const char *path, const char *fmt, ...) {
    va_list ap;
    int used = snprintf(damage, sizeof damage, "%s: ", path);
    va_start(ap, fmt);
    if (used >= 0 && (size_t)used < sizeof damage) vsnprintf(damage + used, sizeof damage - used, fmt, ap);
    va_end(ap);
    return -1;
}

static int verify_entries(int kfd, const unsigned char *data, size_t size) {
    struct stat st;
    char path[PATH_MAX];
    for (size_t pos = 8;;) {
        if (size - pos < EB_RECORD_SIZE) return verify_failed(EB_FILES, "truncated");
        const unsigned char *h = data + pos;
        uint32_t plen = le32(h + 8);
        uint64_t dlen = le64(h + 16);
        pos += EB_RECORD_SIZE;
        if (h[0] == EB_KIND_END)
            return pos == size ? 0 : verify_failed(EB_FILES, "data after its end");
        if (plen == 0 || plen >= sizeof path || size - pos < plen) return verify_failed(EB_FILES, "truncated");
        memcpy(path, data + pos, plen);
        path[plen] = '\0';
        pos += plen;
        if (fstatat(kfd, path, &st, AT_SYMLINK_NOFOLLOW) != 0) return verify_failed(path, "%s", strerror(errno));
        int kind_ok = h[0] == EB_KIND_DIR ? S_ISDIR(st.st_mode)
                      : h[0] == EB_KIND_FILE ? S_ISREG(st.st_mode)
                                             : S_ISLNK(st.st_mode);
        if (!kind_ok) return verify_failed(path, "replaced by another kind of file");
        if (h[0] != EB_KIND_DIR && (uint64_t)st.st_size != dlen)
            return verify_failed(path, "%llu bytes instead of %llu", (unsigned long long)st.st_size,
                                 (unsigned long long)dlen);
    }
}

/* 0 when the runner directory KFD holds every entry of its EB_FILES list, of the listed type and size;
 * else -1 with the first difference in `damage`. One lstat per entry and no reads but the list's. */
static int verify(int kfd) {
    damage[0] = '\0';
    int fd = openat(kfd, EB_FILES, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return verify_failed(EB_FILES, "%s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 8 + EB_RECORD_SIZE ||
        st.st_size > (64 << 20)) {
        close(fd);
        return verify_failed(EB_FILES, "not a list of files");
    }
    size_t size = (size_t)st.st_size;
    unsigned char *data = malloc(size);
    int got = data ? pread_full(fd, data, size, 0) : -1;
    close(fd);
    int rc = got != 0 || memcmp(data, EB_FILES_MAGIC, 8) != 0 ? verify_failed(EB_FILES, "unreadable")
                                                              : verify_entries(kfd, data, size);
    free(data);
    return rc;
}

/* ------------------------------------------------------------------ running */

/* Exec RUN/KEY/run if it is there. Returns only when it cannot: ENOENT (not unpacked), EAGAIN (being
 * removed right now), ENOEXEC (damaged: unpack it again) or exec's own errno. */
static int try_exec(const char *run, int runfd, const struct trailer *t, int self, char **argv) {
    int kfd = openat(runfd, t->key, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (kfd < 0) return errno;
    struct stat st;
    if (fstat(kfd, &st) != 0 || !private_enough(&st)) {
        close(kfd);
        return EPERM;
    }
    /* Shared lock, held across exec for the program's life: prune() leaves a runner in use alone. */
    if (flock(kfd, LOCK_SH | LOCK_NB) != 0) {
        close(kfd);
        return EAGAIN;
    }
    if (verify(kfd) != 0 || faccessat(kfd, EB_ENTRY, X_OK, 0) != 0) {
        say("runner %s is damaged (%s)", t->key, damage[0] ? damage : EB_ENTRY ": not executable");
        close(kfd);
        return ENOEXEC;
    }
    char path[PATH_MAX], fdtext[16];
    snprintf(path, sizeof path, "%s/%s/%s", run, t->key, EB_ENTRY);
    snprintf(fdtext, sizeof fdtext, "%d", self);
    setenv(EB_ENV_PAYLOAD_FD, fdtext, 1);
    setenv(EB_ENV_T0, t0, 1);
    fcntl(kfd, F_SETFD, 0);
    fcntl(self, F_SETFD, 0);
    say("exec %s", path);
    execv(path, argv);
    int err = errno;
    fcntl(self, F_SETFD, FD_CLOEXEC);
    close(kfd);
    return err;
}

/* Unpack the runner into RUN (locked), unless a concurrent start did. 0 or an errno. */
static int install(const char *run, int runfd, const struct trailer *t, int self) {
    int lock = openat(runfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock < 0) return errno;
    if (flock(lock, LOCK_EX) != 0) {
        int err = errno;
        close(lock);
        return err;
    }
    int err = 0, replaced = 0;
    clean_leftovers(runfd);
    int kfd = openat(runfd, t->key, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (kfd >= 0 || errno != ENOENT) {
        /* Unpacked while we waited, or there but damaged (try_exec said so): replace the latter. Under
         * the lock nothing else changes it, so this check decides; only the one replacing it says so. */
        int intact = kfd >= 0 && verify(kfd) == 0 && faccessat(kfd, EB_ENTRY, X_OK, 0) == 0;
        if (kfd >= 0) close(kfd);
        if (intact) goto out;
        if (!damage[0]) snprintf(damage, sizeof damage, "%s", EB_ENTRY ": not executable");
        say("replacing damaged runner %s (%s)", t->key, damage);
        discard(runfd, t->key);
        replaced = 1;
    }
    char tmp[NAME_MAX + 1];
    snprintf(tmp, sizeof tmp, ".%s.tmp.%ld", t->key, (long)getpid());
    say("unpacking runner %s (%llu bytes compressed)", t->key, (unsigned long long)t->runner_size);
    if (mkdirat(runfd, tmp, 0700) != 0) {
        err = errno;
        goto out;
    }
    int tfd = openat(runfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int unpacked = -1;
    if (tfd >= 0) {
        errno = 0;
        mode_t umask_was = umask(077); /* the archive's modes, or less: never more open */
        unpacked = unpack(self, t, tfd);
        umask(umask_was);
        char final[PATH_MAX];
        if (unpacked == 0 && snprintf(final, sizeof final, "%s/%s", run, t->key) >= (int)sizeof final) {
            errno = ENAMETOOLONG;
            unpacked = -1;
        }
        if (unpacked == 0) unpacked = fix_interp(tfd, final);
    }
    if (unpacked != 0) {
        err = errno ? errno : EBADMSG;
        if (tfd >= 0) close(tfd);
        rm_rf_at(runfd, tmp);
        goto out;
    }
    /* Renamed into place only when its bytes are on disk: a power cut must not leave a runner that
     * looks complete but holds empty files. */
    syncfs(tfd);
    close(tfd);
    if (renameat(runfd, tmp, runfd, t->key) != 0) {
        err = errno;
        rm_rf_at(runfd, tmp);
        goto out;
    }
    if (replaced)
        fprintf(stderr, "%s: warning: the unpacked runtime in %s/%s was damaged (%s); unpacked it again\n",
                prog, run, t->key, damage);
    prune(runfd, t->key);
out:
    close(lock);
    return err;
}

/* Open RUN (creating it), checking that it may be trusted. -1 with errno otherwise. */
static int open_run_dir(const char *run, const char *private_parent) {
    int fd = open(run, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (mkdir_p(run) != 0) return -1;
        fd = open(run, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !private_enough(&st)) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    if (private_parent) {
        /* A shared /tmp: the per-user directory must be ours and closed to everybody else. */
        if (lstat(private_parent, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
            (st.st_mode & 077)) {
            close(fd);
            errno = EPERM;
            return -1;
        }
    }
    return fd;
}

static void run_from(const char *run, const char *private_parent, const struct trailer *t, int self,
                     char **argv) {
    int runfd = open_run_dir(run, private_parent);
    if (runfd < 0) {
        note(run, "cannot use the directory", errno);
        return;
    }
    int err = try_exec(run, runfd, t, self, argv);
    if (err == ENOENT || err == EAGAIN || err == ENOEXEC) {
        err = install(run, runfd, t, self);
        if (err == 0) err = try_exec(run, runfd, t, self, argv);
        if (err) note(run, "cannot unpack or start the runner", err);
    } else {
        note(run, "cannot start the runner", err);
    }
    close(runfd);
}

/* OUT = A + B; 0 (and a note) when that does not fit in PATH_MAX. */
static int path_of(char *out, const char *a, const char *b) {
    if (snprintf(out, PATH_MAX, "%s%s", a, b) < PATH_MAX) return 1;
    note(a, "path too long", ENAMETOOLONG);
    return 0;
}

int main(int argc, char **argv) {
    (void)argc;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    snprintf(t0, sizeof t0, "%lld", (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
    if (argv[0] && argv[0][0]) {
        const char *slash = strrchr(argv[0], '/');
        prog = slash ? slash + 1 : argv[0];
    }
    const char *dbg = getenv("EDGEBUNDLE_DEBUG");
    debug = dbg && *dbg && strcmp(dbg, "0") != 0;
    /* Standard descriptors closed by the caller would be taken by our own opens, then by Python's. */
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) < 0) return EXIT_LAUNCHER;

    int self = open_self(argv[0]);
    if (self < 0) die("cannot open the program's own file: %s", strerror(errno));
    struct trailer t;
    const char *bad = read_trailer(self, &t);
    if (bad) die("%s", bad);

    char run[PATH_MAX], parent[PATH_MAX];
    const char *v;
    if ((v = getenv("EDGEBUNDLE_CACHE_DIR")) && *v && path_of(run, v, "/run"))
        run_from(run, NULL, &t, self, argv);
    if ((v = getenv("XDG_CACHE_HOME")) && v[0] == '/' && path_of(run, v, "/edgebundle/run"))
        run_from(run, NULL, &t, self, argv);
    if ((v = getenv("HOME")) && v[0] == '/' && v[1] && path_of(run, v, "/.cache/edgebundle/run"))
        run_from(run, NULL, &t, self, argv);
    char user[32];
    snprintf(user, sizeof user, "/edgebundle-%lu", (unsigned long)geteuid());
    v = getenv("TMPDIR");
    if (path_of(parent, v && v[0] == '/' ? v : "/tmp", user) && path_of(run, parent, "/run")) {
        if (mkdir(parent, 0700) != 0 && errno != EEXIST)
            note(parent, "cannot create", errno);
        else
            run_from(run, parent, &t, self, argv);
    }
    die("cannot start: no usable cache directory for the runtime (%s); set EDGEBUNDLE_CACHE_DIR to a "
        "writable directory on a filesystem that allows executables",
        reasons);
}
