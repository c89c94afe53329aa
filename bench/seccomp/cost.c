// bench/seccomp: what the VMM's seccomp filters cost per system call, on this host's kernel.
// cost N KINDS FILTER...: installs each filter (struct sock_filter[] in FILTER) in turn, stacked as the
// VMM stacks them (the process's, then a thread class's), then times N calls of each kind, best of
// 7 repetitions, and prints "COST <kind> <ns per call>" for each kind in KINDS ("io" or "io,ioctl"):
//   io    - write(2) then read(2) of 8 bytes on an eventfd: calls every filter allows outright,
//           which the kernel's per-syscall cache lets through without running the filter after
//           the first time (what the device thread and the 9p workers mostly make);
//   ioctl - ioctl(eventfd, KVM_RUN): a call with an argument rule (the request number), which runs
//           every stacked filter in full each time; on an eventfd it fails at once (ENOTTY), so
//           what is timed is the syscall's entry and exit and the filters (a vCPU thread makes one
//           such call per VM exit).
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define KVM_RUN 0xAE80

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: cost N io|io,ioctl [FILTER...]\n"); return 2; }
    long n = atol(argv[1]);
    int with_ioctl = strcmp(argv[2], "io,ioctl") == 0;
    int efd = eventfd(0, 0);
    if (efd < 0) { perror("eventfd"); return 2; }
    static struct sock_filter insns[4096];
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("prctl"); return 2; }
    for (int i = 3; i < argc; i++)
    {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { perror(argv[i]); return 2; }
        size_t count = fread(insns, sizeof insns[0], 4096, f);
        fclose(f);
        struct sock_fprog prog = { .len = (unsigned short)count, .filter = insns };
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) { perror("seccomp"); return 2; }
    }
    double best_io = 1e300, best_ioctl = 1e300;
    uint64_t value = 1;
    for (int rep = 0; rep < 7; rep++)
    {
        double t0 = now_ns();
        for (long i = 0; i < n; i++)
        {
            if (write(efd, &value, 8) != 8 || read(efd, &value, 8) != 8) { perror("eventfd io"); return 3; }
        }
        double io = (now_ns() - t0) / (2.0 * n);
        double ctl = 0;
        if (with_ioctl)
        {
            t0 = now_ns();
            for (long i = 0; i < n; i++) ioctl(efd, KVM_RUN, 0);
            ctl = (now_ns() - t0) / n;
        }
        if (io < best_io) best_io = io;
        if (ctl < best_ioctl) best_ioctl = ctl;
    }
    printf("COST io %.1f\n", best_io);
    if (with_ioctl) printf("COST ioctl %.1f\n", best_ioctl);
    return 0;
}
