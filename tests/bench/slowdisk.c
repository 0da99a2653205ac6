/* A slow disk for the benchmark: every fsync/fdatasync of the process waits
 * SLOWDISK_FSYNC_MS milliseconds (default 100) before doing the real one.
 * Loaded with LD_PRELOAD into cryod only (tests/bench/slowdisk.py builds it),
 * so the daemon's storage thread sees a disk whose flushes are slow, as on a
 * worn SD card or a busy shared disk, while nothing else changes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void slow(void) {
    const char *s = getenv("SLOWDISK_FSYNC_MS");
    long ms = s ? atol(s) : 100;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow();
    return real(fd);
}
