/*
 * rkt-kvm-stage2: the guest agent's small, single-threaded helper that puts a pod's apps into
 * their namespaces (the role of runc's nsexec). .NET cannot fork safely and setns(CLONE_NEWNS)
 * needs a single-threaded caller, so the agent posix_spawn()s this static binary, which sets up
 * and clone()s the real process with CLONE_PARENT: every pod process is a direct child of the
 * agent (PID 1 of the VM), which reaps it and keeps its exit status.
 *
 * Build: gcc -static -O2 -Wall -o out/agent/rkt-kvm-stage2 guest-agent/stage2/rkt-kvm-stage2.c
 *
 * Usage (all configuration on argv; no JSON here):
 *   rkt-kvm-stage2 pod-init --status-fd N --hostname NAME
 *   rkt-kvm-stage2 app  --status-fd N --pod-pid P --root DIR [common] -- PROGRAM ARGS...
 *   rkt-kvm-stage2 exec --status-fd N --target-pid P             [common] -- PROGRAM ARGS...
 * common: [--cgroup DIR] [--cwd DIR] [--uid N] [--gid N] [--groups G1,G2,...] [--caps HEXMASK]
 *         [--no-new-privs] [--tty] [--env KEY=VALUE]...
 * --tty: fd 0 is a pseudo-terminal; the process gets a session of its own with it as its
 * controlling terminal (setsid + TIOCSCTTY), so job control, ^C and SIGWINCH reach it.
 *
 * Status protocol on fd N: "PID <pid>\n" once the process exists, then, if set-up or execve
 * failed, "ERR <step>: <strerror>\n" (this helper exits 1), or, for app and exec, "OK\n" once the
 * process's execve succeeded (this helper exits 0 right after; the agent need not wait for that).
 * A failed execve is seen through a CLOEXEC pipe from the child: EOF on it means execve succeeded.
 *
 * Fault points (docs/LIFETIME.md): with RKT_KVM_FAULT=<mode>-setup or <mode>-started in our
 * environment (which is otherwise empty; only the agent sets it, and only when the VM's kernel
 * command line armed it) this helper SIGKILLs itself at that point, as the OOM killer might.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ENV 256
#define MAX_GROUPS 64
#define LAST_CAP 40 /* CAP_CHECKPOINT_RESTORE in 6.1 */

struct config {
    int status_fd;
    const char *hostname, *root, *cgroup, *cwd;
    int pod_pid, target_pid;
    long uid, gid;
    gid_t groups[MAX_GROUPS];
    int ngroups;
    uint64_t caps;
    int have_caps, nnp, tty;
    char *env[MAX_ENV + 1];
    int nenv;
    char **argv;
};

static struct config cfg = {.status_fd = -1, .uid = -1, .gid = -1};
static int err_fd = -1; /* where the current process reports errors */

static void report(int fd, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n >= (int)sizeof line) n = sizeof line - 1;
    while (n > 0) {
        ssize_t w = write(fd, line, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        n -= w;
        memmove(line, line + w, n);
    }
}

/* Reports "ERR <step>: <strerror(errno)>" and exits. */
__attribute__((noreturn)) static void fail(const char *step)
{
    int e = errno;
    report(err_fd, "ERR %s: %s\n", step, strerror(e));
    _exit(1);
}

/* Dies by SIGKILL here when the agent armed this point for this run (RKT_KVM_FAULT=<mode>-<point>). */
static void fault_point(const char *mode, const char *point)
{
    const char *armed = getenv("RKT_KVM_FAULT");
    size_t n = strlen(mode);
    if (armed && !strncmp(armed, mode, n) && armed[n] == '-' && !strcmp(armed + n + 1, point))
        kill(getpid(), SIGKILL);
}

static void usage(const char *why)
{
    fprintf(stderr, "rkt-kvm-stage2: %s\n", why);
    exit(2);
}

static long number(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == 0 || *end) usage("expected a number");
    return v;
}

static void parse(int argc, char **argv, int first)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--")) { cfg.argv = argv + i + 1; break; }
        if (!strcmp(a, "--no-new-privs")) { cfg.nnp = 1; continue; }
        if (!strcmp(a, "--tty")) { cfg.tty = 1; continue; }
        if (!v) usage("option without a value");
        i++;
        if (!strcmp(a, "--status-fd")) cfg.status_fd = number(v);
        else if (!strcmp(a, "--hostname")) cfg.hostname = v;
        else if (!strcmp(a, "--root")) cfg.root = v;
        else if (!strcmp(a, "--cgroup")) cfg.cgroup = v;
        else if (!strcmp(a, "--cwd")) cfg.cwd = v;
        else if (!strcmp(a, "--pod-pid")) cfg.pod_pid = number(v);
        else if (!strcmp(a, "--target-pid")) cfg.target_pid = number(v);
        else if (!strcmp(a, "--uid")) cfg.uid = number(v);
        else if (!strcmp(a, "--gid")) cfg.gid = number(v);
        else if (!strcmp(a, "--caps")) { cfg.caps = strtoull(v, NULL, 16); cfg.have_caps = 1; }
        else if (!strcmp(a, "--env")) {
            if (cfg.nenv == MAX_ENV) usage("too many --env");
            cfg.env[cfg.nenv++] = (char *)v;
        } else if (!strcmp(a, "--groups")) {
            char *copy = strdup(v), *save = NULL;
            for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (cfg.ngroups == MAX_GROUPS) usage("too many --groups");
                cfg.groups[cfg.ngroups++] = (gid_t)number(t);
            }
        } else usage("unknown option");
    }
    cfg.env[cfg.nenv] = NULL;
    if (cfg.status_fd < 0) usage("--status-fd is required");
    err_fd = cfg.status_fd;
    /* Only this helper writes the status line; the app must not hold the pipe open. */
    fcntl(cfg.status_fd, F_SETFD, FD_CLOEXEC);
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail("open cgroup.procs");
    if (write(fd, text, strlen(text)) < 0) fail("join cgroup");
    close(fd);
}

static void join_cgroup(void)
{
    if (!cfg.cgroup) return;
    char path[4096], pid[32];
    snprintf(path, sizeof path, "%s/cgroup.procs", cfg.cgroup);
    snprintf(pid, sizeof pid, "%d", getpid());
    write_file(path, pid);
}

static void join_ns(int pid, const char *name, int type)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/%s", pid, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(name[0] == 'm' ? "open mnt namespace" : "open namespace");
    if (setns(fd, type) < 0) fail("setns");
    close(fd);
}

static int capset_raw(uint64_t effective, uint64_t permitted, uint64_t inheritable)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2] = {
        {(uint32_t)effective, (uint32_t)permitted, (uint32_t)inheritable},
        {(uint32_t)(effective >> 32), (uint32_t)(permitted >> 32), (uint32_t)(inheritable >> 32)},
    };
    return syscall(SYS_capset, &h, d);
}

/* Credentials and capabilities, in the order the kernel allows: the bounding set and the
 * inheritable set shrink while we still hold CAP_SETPCAP; setgroups/setgid/setuid while we hold
 * CAP_SETGID/CAP_SETUID (a non-zero uid then clears the permitted and effective sets). */
static void drop_privileges(void)
{
    if (cfg.have_caps) {
        for (int c = 0; c <= LAST_CAP; c++)
            if (!(cfg.caps & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
                fail("drop capability from the bounding set");
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
        struct __user_cap_data_struct d[2];
        if (syscall(SYS_capget, &h, d) < 0) fail("capget");
        uint64_t eff = d[0].effective | (uint64_t)d[1].effective << 32;
        uint64_t perm = d[0].permitted | (uint64_t)d[1].permitted << 32;
        if (capset_raw(eff, perm, cfg.caps & perm) < 0) fail("capset");
    }
    if (cfg.gid >= 0 || cfg.ngroups > 0)
        if (setgroups(cfg.ngroups, cfg.groups) < 0) fail("setgroups");
    if (cfg.gid >= 0 && setgid(cfg.gid) < 0) fail("setgid");
    if (cfg.uid >= 0 && setuid(cfg.uid) < 0) fail("setuid");
    if (cfg.nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail("no_new_privs");
}

/* execve with a PATH search in the app's own environment (execvpe would use ours). */
static void exec_program(void)
{
    const char *prog = cfg.argv[0];
    if (strchr(prog, '/')) {
        execve(prog, cfg.argv, cfg.env);
        fail("execve");
    }
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (int i = 0; i < cfg.nenv; i++)
        if (!strncmp(cfg.env[i], "PATH=", 5)) path = cfg.env[i] + 5;
    int saved = ENOENT;
    char full[4096];
    for (const char *p = path; ; ) {
        const char *end = strchrnul(p, ':');
        int len = end - p;
        snprintf(full, sizeof full, "%.*s%s%s", len, p, len ? "/" : "", prog);
        execve(full, cfg.argv, cfg.env);
        if (errno == EACCES) saved = EACCES;
        else if (errno != ENOENT && errno != ENOTDIR) { saved = errno; break; }
        if (!*end) break;
        p = end + 1;
    }
    errno = saved;
    fail("execve");
}

/* clone(CLONE_PARENT|SIGCHLD): the child's parent is our parent (the agent), and it is created in
 * the PID namespace we setns()ed into. Returns 0 in the child. */
static pid_t clone_parent(void)
{
    pid_t pid = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, NULL, NULL, 0);
    if (pid < 0) fail("clone");
    return pid;
}

/* Runs child_setup() in a CLONE_PARENT child that reports errors on a CLOEXEC pipe; reports the
 * pid, then the child's error if its execve never happened. */
static int spawn_reported(const char *mode, void (*child_setup)(void))
{
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0) fail("pipe");
    pid_t pid = clone_parent();
    if (pid == 0) {
        close(sync[0]);
        err_fd = sync[1];
        if (cfg.tty) {
            if (setsid() < 0) fail("setsid");
            if (ioctl(0, TIOCSCTTY, 0) < 0) fail("make the terminal the controlling terminal");
        }
        child_setup();
        exec_program();
    }
    close(sync[1]);
    report(cfg.status_fd, "PID %d\n", pid);
    fault_point(mode, "started"); /* the process exists and runs on; we never say OK */
    char buf[512];
    ssize_t n, total = 0;
    while ((n = read(sync[0], buf + total, sizeof buf - 1 - total)) != 0) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        total += n;
        if (total == (ssize_t)sizeof buf - 1) break;
    }
    if (total > 0) {
        if (write(cfg.status_fd, buf, total) < 0) return 1;
        return 1;
    }
    report(cfg.status_fd, "OK\n");
    return 0;
}

/* ---- pod-init ---- */

static void pod_init_loop(void)
{
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    /* Harmless: its own mount namespace rooted in an empty, read-only tmpfs, no capabilities,
     * not dumpable (nobody can ptrace it or read its memory), and it only reaps orphans. */
    if (unshare(CLONE_NEWNS) < 0) fail("unshare mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail("make / private");
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=0555") < 0) fail("mount empty root");
    if (chdir("/tmp") < 0 || chroot(".") < 0 || chdir("/") < 0) fail("chroot");
    for (int c = 0; c <= LAST_CAP; c++) prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
    if (capset_raw(0, 0, 0) < 0) fail("capset");
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    close(cfg.status_fd);
    for (int fd = 0; fd < 3; fd++) close(fd);
    for (;;) {
        if (waitpid(-1, NULL, 0) < 0 && errno == ECHILD) pause();
    }
}

static int pod_init(void)
{
    if (!cfg.hostname) usage("pod-init needs --hostname");
    if (unshare(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) < 0) fail("unshare pid/ipc/uts namespaces");
    if (sethostname(cfg.hostname, strlen(cfg.hostname)) < 0) fail("sethostname");
    pid_t pid = clone_parent();
    if (pid == 0) {
        pod_init_loop();
        _exit(0);
    }
    report(cfg.status_fd, "PID %d\n", pid);
    return 0;
}

/* ---- app ---- */

static void app_child(void)
{
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) fail("mount /proc");
    drop_privileges();
    if (chdir(cfg.cwd ? cfg.cwd : "/") < 0) fail("chdir to the working directory");
}

static int app(void)
{
    if (!cfg.root || cfg.pod_pid <= 0 || !cfg.argv || !cfg.argv[0]) usage("app needs --pod-pid, --root and -- PROGRAM");
    join_ns(cfg.pod_pid, "ipc", CLONE_NEWIPC);
    join_ns(cfg.pod_pid, "uts", CLONE_NEWUTS);
    join_ns(cfg.pod_pid, "pid", CLONE_NEWPID);
    join_cgroup();
    if (unshare(CLONE_NEWNS) < 0) fail("unshare mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail("make / private");
    /* Pivot into the app's root and drop the old one, with every mount of the agent's under it (its
     * /proc, /sys, /dev, cgroups, other apps' roots), in one lazy umount: pivot_root(".", ".")
     * stacks the old root on the new one, and umount2(".") takes it off (pivot_root(2), runc).
     * The agent's root is a bind mount over the initramfs (Pid1.RootOnBindMount): pivot_root
     * refuses rootfs itself. Below the app's root there is then only the initramfs, covered by it:
     * no path, "..", or chroot-escape trick reaches it (".." of a namespace's root stays there). */
    if (chdir(cfg.root) < 0) fail("chdir to the app root");
    if (syscall(SYS_pivot_root, ".", ".") < 0) fail("pivot_root into the app root");
    if (umount2(".", MNT_DETACH) < 0) fail("detach the agent's root");
    if (chdir("/") < 0) fail("chdir /");
    fault_point("app", "setup");
    return spawn_reported("app", app_child);
}

/* ---- exec ---- */

static void exec_child(void)
{
    drop_privileges();
    if (chdir(cfg.cwd ? cfg.cwd : "/") < 0) fail("chdir to the working directory");
}

static int exec_in_app(void)
{
    if (cfg.target_pid <= 0 || !cfg.argv || !cfg.argv[0]) usage("exec needs --target-pid and -- PROGRAM");
    /* Open every namespace before joining any: after setns(mnt) /proc/<pid> is the app's view. */
    join_cgroup();
    join_ns(cfg.target_pid, "ipc", CLONE_NEWIPC);
    join_ns(cfg.target_pid, "uts", CLONE_NEWUTS);
    join_ns(cfg.target_pid, "pid", CLONE_NEWPID);
    join_ns(cfg.target_pid, "mnt", CLONE_NEWNS); /* also sets root and cwd to the app's / */
    fault_point("exec", "setup");
    return spawn_reported("exec", exec_child);
}

int main(int argc, char **argv)
{
    if (argc < 2) usage("usage: rkt-kvm-stage2 pod-init|app|exec --status-fd N ...");
    parse(argc, argv, 2);
    if (!strcmp(argv[1], "pod-init")) return pod_init();
    if (!strcmp(argv[1], "app")) return app();
    if (!strcmp(argv[1], "exec")) return exec_in_app();
    usage("unknown mode");
    return 2;
}
