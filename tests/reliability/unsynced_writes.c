/*
 * LD_PRELOAD shim for the crash-durability check: writes to the file whose name (without
 * directory) is $UNSYNCED_FILE are kept in this process's memory until the file is
 * fsync'd or fdatasync'd, then written for real. A SIGKILL then loses exactly what an
 * operating-system crash or a power cut loses: whatever had not been synced.
 *
 * Without it, killing redis-server loses nothing it has written, synced or not (the
 * kernel's page cache survives the process), so `appendfsync everysec` would look as safe
 * as `always`. Built by the test with the system C compiler; test tooling only.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int tracked[MAX_FD];
static char *held[MAX_FD];
static size_t held_len[MAX_FD], held_cap[MAX_FD];

static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);

static void init(void) {
    if (real_write) return;
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_close = dlsym(RTLD_NEXT, "close");
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_write = dlsym(RTLD_NEXT, "write");
}

static int matches(const char *path) {
    const char *name = getenv("UNSYNCED_FILE");
    const char *base = strrchr(path, '/');
    return name != NULL && strcmp(base ? base + 1 : path, name) == 0;
}

static void track(int fd, const char *path) {
    if (fd < 0 || fd >= MAX_FD || !matches(path)) return;
    pthread_mutex_lock(&lock);
    tracked[fd] = 1;
    held_len[fd] = 0;
    pthread_mutex_unlock(&lock);
}

/* Write out what `fd` holds; the caller holds the lock. */
static void flush_held(int fd) {
    size_t done = 0;
    while (done < held_len[fd]) {
        ssize_t n = real_write(fd, held[fd] + done, held_len[fd] - done);
        if (n <= 0) break;
        done += (size_t)n;
    }
    held_len[fd] = 0;
}

int open(const char *path, int flags, ...) {
    init();
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    int fd = real_open(path, flags, mode);
    track(fd, path);
    return fd;
}

int open64(const char *path, int flags, ...) {
    init();
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    int fd = real_open64(path, flags, mode);
    track(fd, path);
    return fd;
}

ssize_t write(int fd, const void *buf, size_t count) {
    init();
    if (fd >= 0 && fd < MAX_FD && tracked[fd]) {
        pthread_mutex_lock(&lock);
        if (held_len[fd] + count > held_cap[fd]) {
            size_t cap = (held_len[fd] + count) * 2;
            char *grown = realloc(held[fd], cap);
            if (grown == NULL) {
                pthread_mutex_unlock(&lock);
                return -1;
            }
            held[fd] = grown;
            held_cap[fd] = cap;
        }
        memcpy(held[fd] + held_len[fd], buf, count);
        held_len[fd] += count;
        pthread_mutex_unlock(&lock);
        return (ssize_t)count;
    }
    return real_write(fd, buf, count);
}

static int sync_with(int (*real)(int), int fd) {
    init();
    if (fd >= 0 && fd < MAX_FD && tracked[fd]) {
        pthread_mutex_lock(&lock);
        flush_held(fd);
        int rc = real(fd);
        pthread_mutex_unlock(&lock);
        return rc;
    }
    return real(fd);
}

int fsync(int fd) { init(); return sync_with(real_fsync, fd); }

int fdatasync(int fd) { init(); return sync_with(real_fdatasync, fd); }

int close(int fd) {
    init();
    if (fd >= 0 && fd < MAX_FD && tracked[fd]) {  /* an orderly close is no crash */
        pthread_mutex_lock(&lock);
        flush_held(fd);
        tracked[fd] = 0;
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}
