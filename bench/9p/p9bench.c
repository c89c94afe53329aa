// Guest side of bench/9p: PID 1 of a tiny initramfs, booted by our VMM and by QEMU with the same
// kernel, the same host directory and the same mount options. It mounts the 9p export, times
//   write  64 MiB into a new file (1 MiB writes, then fsync),
//   read   the file back (1 MiB reads, content checked),
//   stat   2,000 files the host created (lstat by name: walk + getattr + clunk each),
// three times each. It prints a marker line as each phase begins and ends
// ("P9BENCH mark <phase> <run> begin|end"): the harness times the phases by when those lines reach
// the host, on the host's clock, the same way for both VMMs (the guest's clock is not trustworthy
// on nested PVM hosts: it was seen running minutes fast during the stat loop). The guest's own
// figures follow as "P9BENCH guest <name> <run> <value>" for comparison. Then a done marker, and
// a reboot (our VMM exits; QEMU microvm has no i8042, so the harness stops it).
// Buffers are touched before timing: a guest page fault costs ~1.7 ms on nested PVM hosts and
// would otherwise be measured as file-system time.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)
#define FILE_MIB 64
#ifndef STAT_FILES
#define STAT_FILES 2000 // bench/9p/run.sh passes -DSTAT_FILES=N
#endif
#ifndef RUNS
#define RUNS 3 // per boot; bench/9p/run.sh passes -DRUNS=N
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void mark(const char *phase, int run, const char *edge) {
    printf("P9BENCH mark %s %d %s\n", phase, run, edge);
    fflush(stdout);
}

static void fail(const char *what) {
    printf("P9BENCH error %s: %s\n", what, strerror(errno));
    fflush(stdout);
    sync();
    reboot(RB_AUTOBOOT);
    _exit(1);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
#ifndef ANAME
#define ANAME "bench"
#endif
    const char *opts = "trans=virtio,version=9p2000.L,aname=" ANAME ",msize=512000,cache=none";
    mkdir("/mnt", 0755);
    if (mount("rkt", "/mnt", "9p", 0, opts) != 0) fail("mount");
    printf("P9BENCH mounted %s\n", opts);

    unsigned char *buf = malloc(CHUNK);
    if (!buf) fail("malloc");
    for (int i = 0; i < CHUNK; i++) buf[i] = (unsigned char)(i % 251);

    for (int run = 1; run <= RUNS; run++) {
        int fd = open("/mnt/big", O_CREAT | O_TRUNC | O_WRONLY, 0644);
        if (fd < 0) fail("open for write");
        mark("write", run, "begin");
        double t0 = now();
        for (int i = 0; i < FILE_MIB; i++) {
            for (size_t done = 0; done < CHUNK;) {
                ssize_t n = write(fd, buf + done, CHUNK - done);
                if (n <= 0) fail("write");
                done += (size_t)n;
            }
        }
        if (fsync(fd) != 0) fail("fsync");
        double t1 = now();
        mark("write", run, "end");
        close(fd);
        printf("P9BENCH guest write_mib_s %d %.2f\n", run, FILE_MIB / (t1 - t0));

        fd = open("/mnt/big", O_RDONLY);
        if (fd < 0) fail("open for read");
        long long total = 0;
        int bad = 0;
        mark("read", run, "begin");
        t0 = now();
        for (;;) {
            ssize_t n = read(fd, buf, CHUNK);
            if (n < 0) fail("read");
            if (n == 0) break;
            // Spot-check the content: the byte at file offset o is (o % CHUNK) % 251.
            if (buf[0] != (unsigned char)((total % CHUNK) % 251)) bad++;
            total += n;
        }
        t1 = now();
        mark("read", run, "end");
        close(fd);
        if (total != (long long)FILE_MIB * CHUNK || bad) {
            printf("P9BENCH error read back %lld bytes, %d bad chunks\n", total, bad);
            fflush(stdout);
            reboot(RB_AUTOBOOT);
        }
        printf("P9BENCH guest read_mib_s %d %.2f\n", run, FILE_MIB / (t1 - t0));

        char path[64];
        struct stat st;
        mark("stat", run, "begin");
        t0 = now();
        for (int i = 0; i < STAT_FILES; i++) {
            snprintf(path, sizeof path, "/mnt/files/f%04d", i);
            if (lstat(path, &st) != 0) fail("lstat");
        }
        t1 = now();
        mark("stat", run, "end");
        printf("P9BENCH guest stat_per_s %d %.1f\n", run, STAT_FILES / (t1 - t0));
    }
    unlink("/mnt/big");
    printf("P9BENCH done\n");
    sync();
    reboot(RB_AUTOBOOT);
    return 0;
}
