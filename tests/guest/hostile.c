/*
 * rkt-kvm-hostile: the hostile guest of tests/Rkt.Kvm.Integration.Tests/HostileGuestTests.cs.
 * Root in the VM with its own code attacks the VMM's 9p server; tests/guest/init.sh runs it for
 * `rkt.init=hostile`. The VMM serves exports "a" and "b" (read-write) and "ro" (read-only) from
 * one host directory that also holds a secret file and a sibling directory outside the exports.
 *
 * It prints "rkt-kvm-guest: hostile ok <name>" when the server refused or defused an attack and
 * "rkt-kvm-guest: hostile FAIL <name>: <why>" when it did not. The host checks the rest: that
 * nothing outside the exports changed and that the VMM still serves.
 *
 * Phase 1, through the guest kernel: one mount of the export-listing root (aname "/"), so that a
 * rename or link between two exports reaches the server (two mounts would make the guest kernel
 * answer EXDEV itself). Plain system calls, no busybox: `mv` would copy when rename fails.
 *
 * Phase 2, around the guest kernel: it unbinds the kernel's 9p driver and drives the virtio-9p
 * device itself (registers through /dev/mem, its own rings in locked pages whose physical
 * addresses come from /proc/self/pagemap). That sends what the kernel never would (".." walks,
 * names with '/', set-id modes, cross-export requests) and makes fids fast enough to exhaust the
 * server's limit: through the kernel's client a round trip costs tens of milliseconds of
 * interpreted guest kernel code on nested PVM hosts (an lstat ~160 ms, bench/9p/run.sh), so
 * 16,384 fids would take a quarter of an hour; here a batch of 64 requests costs one exit and
 * no guest kernel code at all. While every fid is taken and every fid the server allows is open,
 * it prints "hostile holding" and waits until the host writes "go" into b/signal.txt (the host
 * meanwhile opens a new control-socket connection: the VMM must still have file descriptors for
 * it). Then it releases the fids, checks that the server serves, resets the device and gives it
 * back to the kernel.
 *
 * Phase 3: a new kernel mount reads what phase 2 wrote and writes again.
 *
 * `rkt-kvm-hostile DIR` runs only phase 1 against DIR (already holding a/, b/ and ro/), which is
 * how the checks themselves can be tried on any machine; most then fail, as a plain directory
 * allows what an export must not.
 *
 * Phases 4 and 5 (hostile-vsock.c, hostile-net.c) take the vsock and net devices the same way.
 *
 * Build: make initramfs (out/guest/rkt-kvm-hostile from tests/guest/hostile*.c; see the Makefile)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "hostile.h"

#define SECRET_MARK "HOSTILE-SECRET"
#define MOUNT_OPTS "trans=virtio,version=9p2000.L,msize=524288"

static const char *root = "/mnt/all"; /* the export-listing root as the guest sees it */
static char host_tree[1024] = "/nonexistent-host-tree"; /* where the exports live on the host */
char why[512];

double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("rkt-kvm-guest: hostile info ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

int check(const char *name, int ok)
{
    if (ok) printf("rkt-kvm-guest: hostile ok %s\n", name);
    else printf("rkt-kvm-guest: hostile FAIL %s: %s\n", name, why[0] ? why : "(no reason recorded)");
    why[0] = 0;
    return ok;
}

void marker(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("rkt-kvm-guest: hostile ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

/* A few paths under the listing root at once (one call's arguments), each in its own buffer. */
static const char *at(const char *rel)
{
    static char bufs[8][1200];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", root, rel);
    return b;
}

/* Predicates: 1 when the server behaved; else 0 with the reason in `why`. */

/* A step of a check that was already refused or failed; `why` says so when the check reports. */
static int set_up(int ok, const char *what)
{
    if (!ok && !why[0]) WHY("%s failed", what);
    return ok;
}

static int refused(int rc, const char *what)
{
    if (rc < 0) return 1;
    WHY("%s succeeded", what);
    return 0;
}

static int allowed(int rc, const char *what)
{
    if (rc >= 0) return 1;
    WHY("%s: %s", what, strerror(errno));
    return 0;
}

static int refused_fd(int fd, const char *what)
{
    if (fd < 0) return 1;
    close(fd);
    WHY("%s succeeded", what);
    return 0;
}

static int present(const char *p)
{
    struct stat st;
    if (lstat(p, &st) == 0) return 1;
    WHY("%s: %s", p, strerror(errno));
    return 0;
}

static int absent(const char *p)
{
    struct stat st;
    if (lstat(p, &st) != 0 && errno == ENOENT) return 1;
    WHY("%s exists", p);
    return 0;
}

static int mode_is(const char *p, unsigned want)
{
    struct stat st;
    if (lstat(p, &st) != 0) { WHY("%s: %s", p, strerror(errno)); return 0; }
    if ((st.st_mode & 07777) == want) return 1;
    WHY("%s has mode %04o, not %04o", p, st.st_mode & 07777, want);
    return 0;
}

/* For files the server creates: the VMM's own umask may clear permission bits, but no set-id bit may be there. */
static int no_setid(const char *p)
{
    struct stat st;
    if (lstat(p, &st) != 0) { WHY("%s: %s", p, strerror(errno)); return 0; }
    if (!(st.st_mode & 06000)) return 1;
    WHY("%s has mode %04o", p, st.st_mode & 07777);
    return 0;
}

static int owner_is(const char *p, unsigned uid, unsigned gid)
{
    struct stat st;
    if (lstat(p, &st) != 0) { WHY("%s: %s", p, strerror(errno)); return 0; }
    if (st.st_uid == uid && st.st_gid == gid) return 1;
    WHY("%s is owned by %u:%u, not %u:%u", p, st.st_uid, st.st_gid, uid, gid);
    return 0;
}

int read_text(const char *p, char *buf, size_t size)
{
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    int e = errno;
    close(fd);
    if (n < 0) { errno = e; return -1; }
    buf[n] = 0;
    return (int)n;
}

static int content_is(const char *p, const char *want)
{
    char buf[256];
    if (read_text(p, buf, sizeof buf) < 0) { WHY("read %s: %s", p, strerror(errno)); return 0; }
    if (strcmp(buf, want) == 0) return 1;
    WHY("%s holds '%.60s', not '%s'", p, buf, want);
    return 0;
}

static int write_text(const char *p, const char *text, mode_t mode)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    if (n != (ssize_t)strlen(text)) { errno = n < 0 ? e : EIO; return -1; }
    return 0;
}

/* Whatever the guest reaches by this path must not be the host's secret; what it got is shown. */
static int no_secret(const char *p)
{
    char buf[256];
    int n = read_text(p, buf, sizeof buf);
    if (n < 0) {
        printf("rkt-kvm-guest: hostile escape %s: %s\n", p, strerror(errno));
        return 1;
    }
    for (int i = 0; i < n; i++) if (buf[i] == '\n') buf[i] = ' ';
    printf("rkt-kvm-guest: hostile escape %s: read '%.60s'\n", p, buf);
    if (strstr(buf, SECRET_MARK) == NULL) return 1;
    WHY("%s showed the host's secret", p);
    return 0;
}

/* ------------------------------------------------------------------ phase 1: through the kernel */

static void cross_export_checks(void)
{
    check("rename-file-a-to-b", refused(rename(at("a/victim.txt"), at("b/victim.txt")), "rename")
        && present(at("a/victim.txt")) && absent(at("b/victim.txt")));
    check("link-file-a-to-b", refused(link(at("a/link-src.txt"), at("b/link-src.txt")), "link")
        && absent(at("b/link-src.txt")));
    check("rename-file-a-to-ro", refused(rename(at("a/victim.txt"), at("ro/victim.txt")), "rename")
        && present(at("a/victim.txt")) && absent(at("ro/victim.txt")));
    check("link-file-a-to-ro", refused(link(at("a/link-src.txt"), at("ro/link-src.txt")), "link")
        && absent(at("ro/link-src.txt")));
    check("rename-dir-a-to-b", refused(rename(at("a/dir"), at("b/dir")), "rename")
        && present(at("a/dir/inner.txt")) && absent(at("b/dir")));
    check("rename-dir-a-to-ro", refused(rename(at("a/dir"), at("ro/dir2")), "rename")
        && present(at("a/dir/inner.txt")) && absent(at("ro/dir2")));
    check("rename-ro-to-a", refused(rename(at("ro/file.txt"), at("a/file.txt")), "rename")
        && present(at("ro/file.txt")) && absent(at("a/file.txt")));
    check("link-ro-to-a", refused(link(at("ro/file.txt"), at("a/ro-link.txt")), "link")
        && absent(at("a/ro-link.txt")));
    check("rename-within-ro", refused(rename(at("ro/file.txt"), at("ro/moved.txt")), "rename")
        && present(at("ro/file.txt")) && absent(at("ro/moved.txt")));
    check("link-within-ro", refused(link(at("ro/file.txt"), at("ro/link.txt")), "link")
        && absent(at("ro/link.txt")));
    /* The listing root itself: its entries are the exports, and it is read-only. */
    check("rename-export-root", refused(rename(at("a"), at("renamed")), "rename")
        && present(at("a/victim.txt")) && absent(at("renamed")));
    check("move-export-into-export", refused(rename(at("b"), at("a/b")), "rename")
        && present(at("b")) && absent(at("a/b")));
    check("rmdir-export-root", refused(rmdir(at("b")), "rmdir") && present(at("b")));
    check("mkdir-in-listing", refused(mkdir(at("new"), 0755), "mkdir") && absent(at("new")));
    check("create-in-listing", refused_fd(open(at("new.txt"), O_WRONLY | O_CREAT, 0644), "create")
        && absent(at("new.txt")));
    check("symlink-in-listing", refused(symlink("a", at("alias")), "symlink") && absent(at("alias")));
}

static void read_only_checks(void)
{
    char f[1200];
    snprintf(f, sizeof f, "%s", at("ro/file.txt")); /* at()'s buffers get reused */
    check("ro-open-write", refused_fd(open(f, O_WRONLY), "open for writing"));
    check("ro-open-append", refused_fd(open(f, O_WRONLY | O_APPEND), "open for appending"));
    check("ro-open-truncate", refused_fd(open(f, O_RDONLY | O_TRUNC), "open with O_TRUNC"));
    check("ro-create", refused_fd(open(at("ro/new.txt"), O_WRONLY | O_CREAT, 0644), "create")
        && absent(at("ro/new.txt")));
    check("ro-truncate", refused(truncate(f, 0), "truncate"));
    check("ro-chmod", refused(chmod(f, 0777), "chmod"));
    check("ro-chown", refused(chown(f, 1234, 1234), "chown"));
    check("ro-utimes", refused(utimensat(AT_FDCWD, f, NULL, 0), "utimensat"));
    check("ro-setxattr", refused(setxattr(f, "user.hostile", "1", 1, 0), "setxattr"));
    check("ro-unlink", refused(unlink(f), "unlink") && present(f));
    check("ro-mkdir", refused(mkdir(at("ro/newdir"), 0755), "mkdir") && absent(at("ro/newdir")));
    check("ro-rmdir", refused(rmdir(at("ro/empty")), "rmdir") && present(at("ro/empty")));
    check("ro-symlink", refused(symlink("file.txt", at("ro/sym")), "symlink") && absent(at("ro/sym")));
    check("ro-mknod", refused(mknod(at("ro/node"), S_IFREG | 0644, 0), "mknod") && absent(at("ro/node")));
    check("ro-unchanged", content_is(f, "read-only\n") && mode_is(f, 0644) && present(at("ro/dir/keep.txt")));
}

static void device_checks(void)
{
    check("mknod-char-refused", refused(mknod(at("a/null"), S_IFCHR | 0666, makedev(1, 3)), "mknod c 1 3")
        && absent(at("a/null")));
    check("mknod-block-refused", refused(mknod(at("a/sda"), S_IFBLK | 0660, makedev(8, 0)), "mknod b 8 0")
        && absent(at("a/sda")));
    check("mknod-fifo-refused", refused(mknod(at("a/fifo"), S_IFIFO | 0666, 0), "mkfifo") && absent(at("a/fifo")));
    check("mknod-socket-refused", refused(mknod(at("a/sock"), S_IFSOCK | 0666, 0), "mknod socket")
        && absent(at("a/sock")));
    /* bind(2) makes its socket inode with mknod: a guest program listening in an export. */
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", at("a/bound.sock"));
    int rc = s < 0 ? 0 : bind(s, (struct sockaddr *)&addr, sizeof addr);
    if (s >= 0) close(s);
    check("bind-socket-refused", s >= 0 && refused(rc, "bind") && absent(at("a/bound.sock")));
    /* A regular file by mknod is fine, but never with a set-id bit. */
    rc = mknod(at("a/mknod-su"), S_IFREG | 06755, 0);
    check("mknod-regular-setid-stripped", rc < 0 || no_setid(at("a/mknod-su")));
}

static void set_id_checks(void)
{
    int fd = open(at("a/create-su"), O_WRONLY | O_CREAT | O_EXCL, 06755);
    if (fd >= 0) close(fd);
    check("create-setid-stripped", allowed(fd, "create") && no_setid(at("a/create-su")));

    /* chmod may succeed (the bits are dropped silently) or fail: either way no set-id bit lands.
     * chmod, unlike a create, is exact: the VMM's umask does not apply. */
    fd = open(at("a/su"), O_WRONLY | O_CREAT | O_EXCL, 0755);
    if (fd >= 0) close(fd);
    if (fd >= 0) chmod(at("a/su"), 04755);
    check("chmod-file-setuid-stripped", allowed(fd, "create") && mode_is(at("a/su"), 0755));
    if (fd >= 0) chmod(at("a/su"), 02755);
    check("chmod-file-setgid-stripped", allowed(fd, "create") && mode_is(at("a/su"), 0755));

    /* Directories keep setgid (group inheritance) and sticky, never setuid (docs/THREAT-MODEL.md). */
    int ok = allowed(mkdir(at("a/sgid"), 0755), "mkdir") && allowed(chmod(at("a/sgid"), 02775), "chmod 2775");
    check("chmod-dir-setgid-kept", ok && mode_is(at("a/sgid"), 02775));
    ok = allowed(mkdir(at("a/sticky"), 0755), "mkdir") && allowed(chmod(at("a/sticky"), 01777), "chmod 1777");
    check("chmod-dir-sticky-kept", ok && mode_is(at("a/sticky"), 01777));
    ok = allowed(mkdir(at("a/sudir"), 0755), "mkdir");
    if (ok) chmod(at("a/sudir"), 04777);
    check("chmod-dir-setuid-stripped", ok && mode_is(at("a/sudir"), 0777));
    ok = allowed(mkdir(at("a/alldir"), 0755), "mkdir");
    if (ok) chmod(at("a/alldir"), 07777);
    check("chmod-dir-all-bits", ok && mode_is(at("a/alldir"), 03777));
    /* A file made in a setgid directory takes its group, not its set-id bit. */
    fd = open(at("a/sgid/inherit"), O_WRONLY | O_CREAT | O_EXCL, 02755);
    if (fd >= 0) close(fd);
    check("create-in-setgid-dir-stripped", allowed(fd, "create") && no_setid(at("a/sgid/inherit")));

    /* Owners pass through (the VMM keeps CAP_CHOWN for that); set-id bits still never land. */
    fd = open(at("a/owned"), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) close(fd);
    check("chown-file", allowed(fd, "create") && allowed(chown(at("a/owned"), 1234, 5678), "chown")
        && owner_is(at("a/owned"), 1234, 5678));
    fd = open(at("a/root-su"), O_WRONLY | O_CREAT | O_EXCL, 0755);
    if (fd >= 0) close(fd);
    ok = allowed(fd, "create") && allowed(chown(at("a/root-su"), 0, 0), "chown 0:0");
    if (ok) chmod(at("a/root-su"), 06755);
    check("chown-root-then-setid-stripped", ok && mode_is(at("a/root-su"), 0755));
}

static void escape_checks(void)
{
    char p[2400];
    /* ".." is resolved by the guest's own VFS: it never leaves the mount, let alone the export. */
    check("dotdot-from-export", no_secret(at("a/../secret.txt")) && no_secret(at("a/../../secret.txt"))
        && no_secret(at("a/dir/../../../secret.txt")) && no_secret(at("../secret.txt")));
    int ok = allowed(chdir(at("a")), "chdir") && allowed(chdir(".."), "chdir ..") && allowed(chdir(".."), "chdir ../..");
    ok = ok && no_secret("secret.txt") && no_secret("all/secret.txt") && no_secret("../secret.txt");
    if (chdir("/") != 0) ok = 0;
    check("cd-up-from-export", ok);

    /* Symlinks are text for the guest to resolve: the server must never follow them on the host. */
    ok = allowed(symlink("..", at("a/up")), "symlink ..");
    check("symlink-dotdot", ok && no_secret(at("a/up/secret.txt")) && no_secret(at("a/up/up/secret.txt")));
    snprintf(p, sizeof p, "%s%s/secret.txt", at("a/up4"), host_tree);
    ok = allowed(symlink("../../../..", at("a/up4")), "symlink ../../../..");
    check("symlink-dotdot-deep", ok && no_secret(at("a/up4/secret.txt")) && no_secret(p));
    snprintf(p, sizeof p, "%s/secret.txt", host_tree);
    ok = allowed(symlink(p, at("a/abs")), "symlink to the host's secret");
    check("symlink-host-path-read", ok && no_secret(at("a/abs")));
    check("symlink-host-path-write", set_up(ok, "symlink to the host's secret") && refused_fd(open(at("a/abs"), O_WRONLY | O_CREAT | O_TRUNC, 0666), "open for writing"));
    char target[1200] = "";
    ssize_t n = readlink(at("a/abs"), target, sizeof target - 1);
    if (n >= 0) target[n] = 0;
    check("symlink-text-kept", set_up(ok, "symlink to the host's secret") && (n >= 0 && strcmp(target, p) == 0 ? 1 : (WHY("readlink gave '%s'", target), 0)));
    ok = allowed(symlink(host_tree, at("a/tree")), "symlink to the host's tree");
    check("symlink-host-dir-create", ok && refused_fd(open(at("a/tree/evil.txt"), O_WRONLY | O_CREAT, 0644), "create through it")
        && refused(mkdir(at("a/tree/evil-dir"), 0755), "mkdir through it"));
    ok = allowed(symlink("../sibling", at("a/sib")), "symlink ../sibling");
    check("symlink-sibling", ok && no_secret(at("a/sib/notes.txt"))
        && refused_fd(open(at("a/sib/notes.txt"), O_WRONLY | O_TRUNC), "open for writing"));
    /* Hard links go to regular files only: the server refuses the symlink itself. */
    check("hardlink-symlink-refused", refused(linkat(AT_FDCWD, at("a/abs"), AT_FDCWD, at("a/abs-hard"), 0), "link")
        && absent(at("a/abs-hard")));
}

static void xattr_checks(void)
{
    /* VFS_CAP_REVISION_2: a file capability would be a privilege on the host, like a setuid bit. */
    static const uint32_t cap[5] = { 0x02000001, 0xffffffff, 0, 0xffffffff, 0 };
    check("setxattr-refused", refused(setxattr(at("a/victim.txt"), "user.hostile", "1", 1, 0), "setxattr user.*"));
    check("setxattr-capability-refused", refused(setxattr(at("a/victim.txt"), "security.capability", cap, sizeof cap, 0),
        "setxattr security.capability"));
}

static void phase1(void)
{
    double t = now();
    cross_export_checks();
    read_only_checks();
    device_checks();
    set_id_checks();
    escape_checks();
    xattr_checks();
    info("phase 1 (kernel client) took %.1f s", now() - t);
}

/* ------------------------------------------------------------------ phase 2: a raw virtio-9p client */

#define MAX_QUEUE 128
#define MAX_SLOTS (MAX_QUEUE / 2) /* a request and its reply buffer: two descriptors */
#define MSIZE PAGE

/* 9P2000.L message types (what the server's P9Protocol.cs names). */
enum {
    RLERROR = 7, TLOPEN = 12, RLOPEN = 13, TLCREATE = 14, RLCREATE = 15, TSYMLINK = 16, RSYMLINK = 17,
    TMKNOD = 18, RMKNOD = 19, TRENAME = 20, RRENAME = 21, TGETATTR = 24, RGETATTR = 25, TSETATTR = 26,
    RSETATTR = 27, TXATTRCREATE = 32, RXATTRCREATE = 33, TLINK = 70, RLINK = 71, TMKDIR = 72, RMKDIR = 73,
    TRENAMEAT = 74, RRENAMEAT = 75, TUNLINKAT = 76, RUNLINKAT = 77, TVERSION = 100, RVERSION = 101,
    TATTACH = 104, RATTACH = 105, TWALK = 110, RWALK = 111, TREAD = 116, RREAD = 117, TWRITE = 118,
    RWRITE = 119, TCLUNK = 120, RCLUNK = 121, TREMOVE = 122, RREMOVE = 123,
};
enum { ATTR_MODE = 1, ATTR_UID = 2, ATTR_GID = 4, ATTR_SIZE = 8 };
#define NOFID 0xffffffffu


static struct desc *descs;
static volatile uint16_t *avail; /* flags, idx, ring[qsize], used_event */
static volatile uint8_t *used;   /* flags[2], idx[2], ring[qsize] of {id[4], len[4]}, avail_event[2] */
static unsigned qsize, nslots;
static uint16_t avail_idx, used_seen;
static uint8_t *req[MAX_SLOTS], *rep[MAX_SLOTS];
static uint64_t req_pa[MAX_SLOTS], rep_pa[MAX_SLOTS];
static uint32_t rep_len[MAX_SLOTS];
static int raw_broken; /* a request never came back: the queue cannot be trusted any more */

static struct rawdev dev9p;
static uint32_t rd(unsigned off) { return dev_rd(&dev9p, off); }
static void wr(unsigned off, uint32_t v) { dev_wr(&dev9p, off, v); }

/* One request being written into a slot's page. */
struct msg { uint8_t *p; uint32_t n; int slot; };

static struct msg begin(int slot, uint8_t type)
{
    struct msg m = { req[slot], 7, slot };
    m.p[4] = type;
    put16(m.p + 5, (uint16_t)slot); /* the tag: one per slot, so replies in flight never share one */
    return m;
}
static void m16(struct msg *m, uint16_t v) { put16(m->p + m->n, v); m->n += 2; }
static void m32(struct msg *m, uint32_t v) { put32(m->p + m->n, v); m->n += 4; }
static void m64(struct msg *m, uint64_t v) { put64(m->p + m->n, v); m->n += 8; }
static void mstr(struct msg *m, const char *s)
{
    size_t l = strlen(s);
    m16(m, (uint16_t)l);
    memcpy(m->p + m->n, s, l);
    m->n += l;
}

/* Puts the finished request on the available ring; the device hears of it at the next kick. */
static void submit(struct msg *m)
{
    int s = m->slot;
    put32(m->p, m->n);
    descs[2 * s] = (struct desc){ req_pa[s], m->n, DESC_NEXT, (uint16_t)(2 * s + 1) };
    descs[2 * s + 1] = (struct desc){ rep_pa[s], PAGE, DESC_WRITE, 0 };
    rep_len[s] = 0;
    avail[2 + avail_idx % qsize] = (uint16_t)(2 * s);
    __sync_synchronize();
    avail[1] = ++avail_idx;
    __sync_synchronize();
}

static void kick(void) { wr(MMIO_QUEUE_NOTIFY, 0); }

/* Waits for `n` chains to come back (any order); 0, or -1 after 30 s without progress. */
static int reap(int n)
{
    double deadline = now() + 30;
    while (n > 0) {
        __sync_synchronize();
        uint16_t idx = get16(used + 2);
        if (idx == used_seen) {
            if (now() > deadline) {
                info("raw: no reply for 30 s (used idx %u, avail idx %u, status 0x%x)", idx, avail_idx, rd(MMIO_STATUS));
                raw_broken = 1;
                return -1;
            }
            continue;
        }
        __sync_synchronize();
        while (used_seen != idx && n > 0) {
            const volatile uint8_t *e = used + 4 + 8 * (used_seen % qsize);
            uint32_t id = get32(e);
            if (id / 2 < nslots) rep_len[id / 2] = get32(e + 4);
            used_seen++;
            n--;
        }
    }
    return 0;
}

/* The reply in a slot: its type, -errno for Rlerror, -EPROTO when malformed. */
static int reply(int slot)
{
    uint8_t *r = rep[slot];
    if (rep_len[slot] < 7 || get32(r) < 7 || get32(r) > rep_len[slot]) return -EPROTO;
    if (r[4] == RLERROR) return get32(r) >= 11 ? -(int)get32(r + 7) : -EPROTO;
    return r[4];
}

/* One request in slot 0, waited for: 0 when the reply has type `want`, else -errno. */
static int rpc(struct msg *m, int want)
{
    if (raw_broken) return -EIO;
    submit(m);
    kick();
    if (reap(1) < 0) return -ETIMEDOUT;
    int t = reply(m->slot);
    return t == want ? 0 : t < 0 ? t : -EPROTO;
}

static int t_version(void)
{
    struct msg m = begin(0, TVERSION);
    m32(&m, MSIZE);
    mstr(&m, "9P2000.L");
    return rpc(&m, RVERSION);
}

static uint64_t attach_qid_path;

static int t_attach(uint32_t fid, const char *aname)
{
    struct msg m = begin(0, TATTACH);
    m32(&m, fid);
    m32(&m, NOFID);
    mstr(&m, "root");
    mstr(&m, aname);
    m32(&m, 0);
    int rc = rpc(&m, RATTACH);
    if (rc == 0) attach_qid_path = get64(rep[0] + 7 + 5);
    return rc;
}

/* Twalk of up to 16 names; *nqid gets how many were walked (a partial walk makes no fid). */
static int t_walk(uint32_t fid, uint32_t newfid, int nwname, const char *const *names, int *nqid, uint64_t *last_path)
{
    struct msg m = begin(0, TWALK);
    m32(&m, fid);
    m32(&m, newfid);
    m16(&m, (uint16_t)nwname);
    for (int i = 0; i < nwname; i++) mstr(&m, names[i]);
    int rc = rpc(&m, RWALK);
    if (rc == 0) {
        int n = get16(rep[0] + 7);
        if (nqid) *nqid = n;
        if (last_path && n > 0) *last_path = get64(rep[0] + 9 + 13 * (n - 1) + 5);
    }
    return rc;
}

static int walk1(uint32_t fid, uint32_t newfid, const char *name)
{
    int n = 0;
    const char *names[1] = { name };
    int rc = t_walk(fid, newfid, name ? 1 : 0, names, &n, NULL);
    return rc < 0 ? rc : n == (name ? 1 : 0) ? 0 : -ENOENT;
}

static int t_fid(uint8_t type, uint8_t want, uint32_t fid)
{
    struct msg m = begin(0, type);
    m32(&m, fid);
    return rpc(&m, want);
}
static int t_clunk(uint32_t fid) { return t_fid(TCLUNK, RCLUNK, fid); }
static int t_remove(uint32_t fid) { return t_fid(TREMOVE, RREMOVE, fid); }

static int t_lopen(uint32_t fid, uint32_t flags)
{
    struct msg m = begin(0, TLOPEN);
    m32(&m, fid);
    m32(&m, flags);
    return rpc(&m, RLOPEN);
}

static int t_lcreate(uint32_t fid, const char *name, uint32_t flags, uint32_t mode)
{
    struct msg m = begin(0, TLCREATE);
    m32(&m, fid);
    mstr(&m, name);
    m32(&m, flags);
    m32(&m, mode);
    m32(&m, 0);
    return rpc(&m, RLCREATE);
}

static int t_getattr_mode(uint32_t fid, uint32_t *mode)
{
    struct msg m = begin(0, TGETATTR);
    m32(&m, fid);
    m64(&m, 0x7ff);
    int rc = rpc(&m, RGETATTR);
    if (rc == 0) *mode = get32(rep[0] + 7 + 8 + 13);
    return rc;
}

static int t_setattr(uint32_t fid, uint32_t valid, uint32_t mode, uint32_t uid, uint32_t gid, uint64_t size)
{
    struct msg m = begin(0, TSETATTR);
    m32(&m, fid);
    m32(&m, valid);
    m32(&m, mode);
    m32(&m, uid);
    m32(&m, gid);
    m64(&m, size);
    for (int i = 0; i < 4; i++) m64(&m, 0);
    return rpc(&m, RSETATTR);
}

static int t_mkdir(uint32_t dfid, const char *name, uint32_t mode)
{
    struct msg m = begin(0, TMKDIR);
    m32(&m, dfid);
    mstr(&m, name);
    m32(&m, mode);
    m32(&m, 0);
    return rpc(&m, RMKDIR);
}

static int t_mknod(uint32_t dfid, const char *name, uint32_t mode, uint32_t major, uint32_t minor)
{
    struct msg m = begin(0, TMKNOD);
    m32(&m, dfid);
    mstr(&m, name);
    m32(&m, mode);
    m32(&m, major);
    m32(&m, minor);
    m32(&m, 0);
    return rpc(&m, RMKNOD);
}

static int t_symlink(uint32_t dfid, const char *name, const char *target)
{
    struct msg m = begin(0, TSYMLINK);
    m32(&m, dfid);
    mstr(&m, name);
    mstr(&m, target);
    m32(&m, 0);
    return rpc(&m, RSYMLINK);
}

static int t_link(uint32_t dfid, uint32_t fid, const char *name)
{
    struct msg m = begin(0, TLINK);
    m32(&m, dfid);
    m32(&m, fid);
    mstr(&m, name);
    return rpc(&m, RLINK);
}

static int t_rename(uint32_t fid, uint32_t dfid, const char *name)
{
    struct msg m = begin(0, TRENAME);
    m32(&m, fid);
    m32(&m, dfid);
    mstr(&m, name);
    return rpc(&m, RRENAME);
}

static int t_renameat(uint32_t olddir, const char *oldname, uint32_t newdir, const char *newname)
{
    struct msg m = begin(0, TRENAMEAT);
    m32(&m, olddir);
    mstr(&m, oldname);
    m32(&m, newdir);
    mstr(&m, newname);
    return rpc(&m, RRENAMEAT);
}

static int t_unlinkat(uint32_t dfid, const char *name, uint32_t flags)
{
    struct msg m = begin(0, TUNLINKAT);
    m32(&m, dfid);
    mstr(&m, name);
    m32(&m, flags);
    return rpc(&m, RUNLINKAT);
}

static int t_xattrcreate(uint32_t fid, const char *name, uint64_t size)
{
    struct msg m = begin(0, TXATTRCREATE);
    m32(&m, fid);
    mstr(&m, name);
    m64(&m, size);
    m32(&m, 0);
    return rpc(&m, RXATTRCREATE);
}

static int t_read(uint32_t fid, char *out, uint32_t size)
{
    struct msg m = begin(0, TREAD);
    m32(&m, fid);
    m64(&m, 0);
    m32(&m, size - 1);
    int rc = rpc(&m, RREAD);
    if (rc < 0) return rc;
    uint32_t n = get32(rep[0] + 7);
    if (n > size - 1 || 11 + n > rep_len[0]) return -EPROTO;
    memcpy(out, rep[0] + 11, n);
    out[n] = 0;
    return (int)n;
}

static int t_write(uint32_t fid, const char *data)
{
    struct msg m = begin(0, TWRITE);
    uint32_t n = (uint32_t)strlen(data);
    m32(&m, fid);
    m64(&m, 0);
    m32(&m, n);
    memcpy(m.p + m.n, data, n);
    m.n += n;
    int rc = rpc(&m, RWRITE);
    return rc < 0 ? rc : (int)get32(rep[0] + 7);
}

/* Raw predicates, like the phase 1 ones. */
static int raw_refused(int rc, const char *what)
{
    if (rc < 0 && rc != -ETIMEDOUT && rc != -EPROTO && rc != -EIO) return 1;
    if (rc >= 0) WHY("%s succeeded", what);
    else WHY("%s: no proper reply (%s)", what, strerror(-rc));
    return 0;
}

static int raw_allowed(int rc, const char *what)
{
    if (rc >= 0) return 1;
    WHY("%s: %s", what, strerror(-rc));
    return 0;
}

/* Bits `have` set and `lack` clear, whatever else the VMM's umask left of a new file's mode. */
static int raw_bits(uint32_t fid, uint32_t have, uint32_t lack, const char *what)
{
    uint32_t mode = 0;
    int rc = t_getattr_mode(fid, &mode);
    if (rc < 0) { WHY("getattr %s: %s", what, strerror(-rc)); return 0; }
    if ((mode & have) == have && !(mode & lack)) return 1;
    WHY("%s has mode %04o", what, mode & 07777);
    return 0;
}

static int raw_mode_is(uint32_t fid, uint32_t want, const char *what)
{
    uint32_t mode = 0;
    int rc = t_getattr_mode(fid, &mode);
    if (rc < 0) { WHY("getattr %s: %s", what, strerror(-rc)); return 0; }
    if ((mode & 07777) == want) return 1;
    WHY("%s has mode %04o, not %04o", what, mode & 07777, want);
    return 0;
}

/* fids: the exports' roots, then a few for single checks, then the exhaustion range. */
enum { FA = 1, FB = 2, FRO = 3, FL = 4, FSIGNAL = 30, FIRST_BULK = 1000, MAX_BULK = 40000 };

/* A fid that must not exist after a refused walk: clunking it must fail. */
static int no_fid(uint32_t fid)
{
    int rc = t_clunk(fid);
    if (rc < 0) return 1;
    WHY("fid %u exists after a refused walk", fid);
    return 0;
}

static void raw_walk_checks(uint64_t a_root)
{
    const char *up3[] = { "..", "..", ".." };
    int n = 0;
    uint64_t path = 0;
    int rc = t_walk(FA, 10, 3, up3, &n, &path);
    check("raw-walk-dotdot-stays-in-export", raw_allowed(rc, "walk ../../..")
        && (n == 3 && path == a_root ? 1 : (WHY("walked %d names to qid path %llu, the root is %llu", n, (unsigned long long)path, (unsigned long long)a_root), 0)));
    t_clunk(10);

    const char *out[] = { "..", "secret.txt" };
    n = 0;
    rc = t_walk(FA, 11, 2, out, &n, NULL);
    check("raw-walk-dotdot-secret", (rc < 0 || n < 2 ? 1 : (WHY("walked ../secret.txt"), 0)) && no_fid(11));

    const char *bad1[] = { "../secret.txt" }, *bad2[] = { "dir/inner.txt" }, *bad3[] = { "" };
    int ok = raw_refused(t_walk(FA, 12, 1, bad1, NULL, NULL), "walk '../secret.txt'")
        && raw_refused(t_walk(FA, 12, 1, bad2, NULL, NULL), "walk 'dir/inner.txt'")
        && raw_refused(t_walk(FA, 12, 1, bad3, NULL, NULL), "walk ''");
    check("raw-walk-bad-names", ok && no_fid(12));

    /* From the listing root into one export and out again by "..": ".." stops at the export root. */
    const char *hop[] = { "a", "..", "b" }, *hop2[] = { "..", "..", "tree", "secret.txt" }, *hop3[] = { "ro", "..", "..", "secret.txt" };
    int n1 = 0, n2 = 0, n3 = 0;
    int r1 = t_walk(FL, 13, 3, hop, &n1, NULL);
    if (r1 == 0 && n1 == 3) t_clunk(13);
    int r2 = t_walk(FL, 14, 4, hop2, &n2, NULL);
    if (r2 == 0 && n2 == 4) t_clunk(14);
    int r3 = t_walk(FL, 15, 4, hop3, &n3, NULL);
    if (r3 == 0 && n3 == 4) t_clunk(15);
    check("raw-walk-listing-escape", (r1 < 0 || n1 < 3 ? 1 : (WHY("a/../b walked"), 0))
        && (r2 < 0 || n2 < 4 ? 1 : (WHY("../../tree/secret.txt walked"), 0))
        && (r3 < 0 || n3 < 4 ? 1 : (WHY("ro/../../secret.txt walked"), 0)));

    char tree[1100];
    snprintf(tree, sizeof tree, "%s", host_tree);
    ok = raw_refused(t_attach(16, ".."), "attach '..'") && raw_refused(t_attach(16, "a/.."), "attach 'a/..'")
        && raw_refused(t_attach(16, "../tree"), "attach '../tree'") && raw_refused(t_attach(16, "/a"), "attach '/a'")
        && raw_refused(t_attach(16, tree), "attach the host path");
    check("raw-attach-bad-aname", ok);
}

static void raw_cross_export_checks(void)
{
    check("raw-renameat-a-to-b", raw_refused(t_renameat(FA, "victim.txt", FB, "victim.txt"), "renameat a -> b")
        && raw_allowed(walk1(FA, 17, "victim.txt"), "walk to victim.txt after it"));
    t_clunk(17);
    int ok = raw_allowed(walk1(FA, 17, "victim.txt"), "walk to victim.txt");
    check("raw-rename-a-to-b", ok && raw_refused(t_rename(17, FB, "victim.txt"), "rename a -> b"));
    t_clunk(17);
    ok = raw_allowed(walk1(FA, 17, "link-src.txt"), "walk to link-src.txt");
    check("raw-link-a-to-b", ok && raw_refused(t_link(FB, 17, "hard.txt"), "link a -> b"));
    check("raw-link-a-to-ro", set_up(ok, "walk to link-src.txt") && raw_refused(t_link(FRO, 17, "hard.txt"), "link a -> ro"));
    t_clunk(17);
    check("raw-rename-into-ro", raw_refused(t_renameat(FA, "victim.txt", FRO, "victim.txt"), "renameat a -> ro"));
    check("raw-listing-changes", raw_refused(t_renameat(FL, "a", FL, "z"), "renameat in the listing")
        && raw_refused(t_renameat(FL, "b", FA, "b"), "renameat of export b into a")
        && raw_refused(t_unlinkat(FL, "b", AT_REMOVEDIR), "unlinkat of an export")
        && raw_refused(t_mkdir(FL, "new", 0755), "mkdir in the listing")
        && raw_refused(t_symlink(FL, "alias", "a"), "symlink in the listing"));
}

static void raw_mode_checks(void)
{
    check("raw-mknod-special", raw_refused(t_mknod(FA, "rawnull", S_IFCHR | 0666, 1, 3), "mknod c 1 3")
        && raw_refused(t_mknod(FA, "rawsda", S_IFBLK | 0660, 8, 0), "mknod b 8 0")
        && raw_refused(t_mknod(FA, "rawfifo", S_IFIFO | 0666, 0, 0), "mknod fifo")
        && raw_refused(t_mknod(FA, "rawsock", S_IFSOCK | 0666, 0, 0), "mknod socket")
        && raw_refused(t_mknod(FA, "rawbad", 0xf000 | 0666, 0, 0), "mknod of an unknown type"));

    int ok = raw_allowed(t_mknod(FA, "rawreg", S_IFREG | 06755, 0, 0), "mknod regular 6755")
        && raw_allowed(walk1(FA, 18, "rawreg"), "walk to it");
    check("raw-mknod-setid-stripped", ok && raw_bits(18, 0, 06000, "rawreg"));
    check("raw-setattr-file-setid-stripped", set_up(ok, "mknod rawreg") && raw_allowed(t_setattr(18, ATTR_MODE, 06777, 0, 0, 0), "setattr 6777")
        && raw_mode_is(18, 0777, "rawreg"));
    check("raw-setattr-chown-setid-stripped", set_up(ok, "mknod rawreg") && raw_allowed(t_setattr(18, ATTR_MODE | ATTR_UID | ATTR_GID, 04755, 0, 0, 0), "setattr 4755 0:0")
        && raw_mode_is(18, 0755, "rawreg"));
    t_clunk(18);

    ok = raw_allowed(walk1(FA, 19, NULL), "clone a's root");
    check("raw-lcreate-setid-stripped", ok && raw_allowed(t_lcreate(19, "rawsu", O_RDWR, 06777), "lcreate 6777")
        && raw_bits(19, 0, 06000, "rawsu"));
    t_clunk(19);

    ok = raw_allowed(t_mkdir(FA, "rawdir", 07777), "mkdir 7777") && raw_allowed(walk1(FA, 20, "rawdir"), "walk to it");
    /* mkdir(2) itself keeps only the sticky bit of a new directory's set-id and sticky bits. */
    check("raw-mkdir-setuid-stripped", ok && raw_bits(20, 01000, 04000, "rawdir"));
    check("raw-setattr-dir-setuid-stripped", set_up(ok, "mkdir rawdir") && raw_allowed(t_setattr(20, ATTR_MODE, 07777, 0, 0, 0), "setattr 7777")
        && raw_mode_is(20, 03777, "rawdir") && raw_allowed(t_setattr(20, ATTR_MODE, 05755, 0, 0, 0), "setattr 5755")
        && raw_mode_is(20, 01755, "rawdir"));
    t_clunk(20);
}

static void raw_name_and_symlink_checks(void)
{
    int ok = raw_allowed(walk1(FA, 21, NULL), "clone a's root");
    check("raw-bad-names", ok && raw_refused(t_lcreate(21, "..", O_RDWR, 0644), "lcreate '..'")
        && raw_refused(t_lcreate(21, "../evil", O_RDWR, 0644), "lcreate '../evil'")
        && raw_refused(t_mkdir(FA, "../evil", 0755), "mkdir '../evil'")
        && raw_refused(t_mkdir(FA, ".", 0755), "mkdir '.'")
        && raw_refused(t_symlink(FA, "x/y", "t"), "symlink 'x/y'")
        && raw_refused(t_renameat(FA, "victim.txt", FA, ".."), "renameat to '..'")
        && raw_refused(t_renameat(FA, "../secret.txt", FA, "stolen.txt"), "renameat from '../secret.txt'")
        && raw_refused(t_unlinkat(FA, "..", AT_REMOVEDIR), "unlinkat '..'")
        && raw_refused(t_mknod(FA, "", S_IFREG | 0644, 0, 0), "mknod ''"));
    t_clunk(21);

    char target[1100];
    snprintf(target, sizeof target, "%s/secret.txt", host_tree);
    ok = raw_allowed(t_symlink(FA, "rawabs", target), "symlink to the host's secret")
        && raw_allowed(t_symlink(FA, "rawtree", host_tree), "symlink to the host's tree")
        && raw_allowed(walk1(FA, 22, "rawabs"), "walk to the symlink");
    const char *through[] = { "rawtree", "secret.txt" };
    int n = 0;
    int rc = ok ? t_walk(FA, 23, 2, through, &n, NULL) : -EIO;
    if (rc == 0 && n == 2) t_clunk(23);
    check("raw-symlink-not-followed", ok && raw_refused(t_lopen(22, O_RDONLY), "open the symlink")
        && raw_refused(t_lcreate(22, "x", O_RDWR, 0644), "create under the symlink")
        && (rc < 0 || n < 2 ? 1 : (WHY("walked through rawtree/secret.txt"), 0)));
    t_clunk(22);
}

static void raw_read_only_checks(void)
{
    int ok = raw_allowed(walk1(FRO, 24, "file.txt"), "walk to ro/file.txt");
    check("raw-readonly", ok && raw_refused(t_lopen(24, O_WRONLY), "open for writing")
        && raw_refused(t_lopen(24, O_RDWR), "open read-write")
        && raw_refused(t_lopen(24, O_RDONLY | O_TRUNC), "open with O_TRUNC")
        && raw_refused(t_setattr(24, ATTR_SIZE, 0, 0, 0, 0), "setattr size 0")
        && raw_refused(t_setattr(24, ATTR_MODE, 04777, 0, 0, 0), "setattr mode")
        && raw_refused(t_setattr(24, ATTR_UID | ATTR_GID, 0, 1234, 1234, 0), "setattr owner")
        && raw_refused(t_xattrcreate(24, "user.hostile", 1), "xattrcreate")
        && raw_refused(t_unlinkat(FRO, "file.txt", 0), "unlinkat")
        && raw_refused(t_mkdir(FRO, "d", 0755), "mkdir")
        && raw_refused(t_mknod(FRO, "n", S_IFREG | 0644, 0, 0), "mknod")
        && raw_refused(t_symlink(FRO, "s", "file.txt"), "symlink")
        && raw_refused(t_renameat(FRO, "file.txt", FRO, "moved.txt"), "renameat")
        && raw_refused(t_link(FRO, 24, "l"), "link")
        && raw_refused(t_remove(24), "remove")); /* Tremove clunks fid 24 either way */
    char text[64] = "";
    ok = raw_allowed(walk1(FRO, 25, "file.txt"), "walk to ro/file.txt") && raw_allowed(t_lopen(25, O_RDONLY), "open for reading");
    int n = ok ? t_read(25, text, sizeof text) : -EIO;
    check("raw-readonly-unchanged", ok && raw_allowed(n, "read") && (strcmp(text, "read-only\n") == 0 ? 1 : (WHY("ro/file.txt holds '%s'", text), 0)));
    t_clunk(25);
}

static void raw_xattr_checks(void)
{
    int ok = raw_allowed(walk1(FA, 26, "victim.txt"), "walk to victim.txt");
    check("raw-xattrcreate-refused", ok && raw_refused(t_xattrcreate(26, "user.hostile", 1), "xattrcreate user.*")
        && raw_refused(t_xattrcreate(26, "security.capability", 20), "xattrcreate security.capability")
        && raw_refused(t_xattrcreate(26, "trusted.overlay.opaque", 1), "xattrcreate trusted.*"));
    t_clunk(26);
}

static uint8_t held[MAX_BULK];

/*
 * One request per bulk fid whose state is `want`, `nslots` at a time behind one notify each:
 * TWALK clones a's root into the bulk fid, TLOPEN opens it, TCLUNK clunks it. A fid whose reply
 * is `ok_type` moves to state `next`. Returns how many did; *first_error is the first refusal's
 * errno and *other_errors counts refusals with a different one.
 */
static int bulk(uint8_t type, uint8_t ok_type, uint8_t want, uint8_t next, int stop_on_error, int *first_error, int *other_errors)
{
    int ok = 0, i = 0;
    *first_error = 0;
    *other_errors = 0;
    while (i < MAX_BULK && !raw_broken) {
        int sent = 0, which[MAX_SLOTS];
        for (; i < MAX_BULK && sent < (int)nslots; i++) {
            if (held[i] != want) continue;
            struct msg m = begin(sent, type);
            if (type == TWALK) {
                m32(&m, FA);
                m32(&m, FIRST_BULK + i);
                m16(&m, 0);
            } else {
                m32(&m, FIRST_BULK + i);
                if (type == TLOPEN) m32(&m, O_RDONLY);
            }
            which[sent] = i;
            submit(&m);
            sent++;
        }
        if (sent == 0) break;
        kick();
        if (reap(sent) < 0) break;
        int stop = 0;
        for (int s = 0; s < sent; s++) {
            int t = reply(s);
            if (t == ok_type) { ok++; held[which[s]] = next; continue; }
            int e = t < 0 ? -t : EPROTO;
            if (*first_error == 0) *first_error = e;
            else if (e != *first_error) {
                if (*other_errors == 0) info("first error other than %s: %s (reply type %d)", strerror(*first_error), strerror(e), t);
                (*other_errors)++;
            }
            if (stop_on_error) stop = 1;
        }
        if (stop) break;
    }
    return ok;
}

static void raw_exhaustion_checks(void)
{
    /* A fid the host can talk to us through while the server has no fid left to give. */
    int ok = raw_allowed(walk1(FB, FSIGNAL, "signal.txt"), "walk to b/signal.txt") && raw_allowed(t_lopen(FSIGNAL, O_RDONLY), "open it");

    double t = now();
    int err = 0, other = 0;
    memset(held, 0, sizeof held);
    int walked = bulk(TWALK, RWALK, 0, 1, 1, &err, &other);
    info("fid exhaustion: %d walks until %s in %.2f s", walked, err ? strerror(err) : "no refusal", now() - t);
    check("raw-fid-limit", walked > 0 && (err == EMFILE ? 1 : (WHY("the walk after %d fids got %s", walked, err ? strerror(err) : "no refusal"), 0)));

    /* Each open fid holds a second host fd: the server must bound those too. */
    t = now();
    int opened = bulk(TLOPEN, RLOPEN, 1, 2, 0, &err, &other);
    info("fid exhaustion: %d of %d fids opened, first refusal %s, %d other errors, in %.2f s", opened, walked,
        err ? strerror(err) : "none", other, now() - t);
    check("raw-open-refused-cleanly", walked > 0 && (err == 0 || err == EMFILE || err == ENFILE) && other == 0
        ? 1 : (WHY("opens failed with %s and %d other errors", err ? strerror(err) : "none", other), 0));

    /* Hold everything until the host has checked that the VMM still answers it. */
    printf("rkt-kvm-guest: hostile holding\n");
    fflush(stdout);
    char text[64] = "";
    int reads = 0, go = 0;
    for (int i = 0; ok && i < 3000 && !go; i++) {
        int n = t_read(FSIGNAL, text, sizeof text);
        if (n < 0) { WHY("read b/signal.txt while exhausted: %s", strerror(-n)); ok = 0; break; }
        reads++;
        go = strncmp(text, "go", 2) == 0;
        if (!go) usleep(100000);
    }
    check("raw-held-fid-serves", ok && reads > 0);
    check("raw-host-handshake", set_up(ok, "reading b/signal.txt") && (go ? 1 : (WHY("the host never wrote go (last read '%s')", text), 0)));

    t = now();
    int total = walked;
    int clunked = 0;
    for (uint8_t state = 1; state <= 2; state++) clunked += bulk(TCLUNK, RCLUNK, state, 0, 0, &err, &other);
    info("fid exhaustion: %d of %d fids clunked in %.2f s", clunked, total, now() - t);
    check("raw-release", clunked == total ? 1 : (WHY("%d of %d clunks worked (%s)", clunked, total, err ? strerror(err) : "-"), 0));
    t_clunk(FSIGNAL);

    char back[64] = "";
    ok = raw_allowed(walk1(FA, 40, NULL), "walk after the release")
        && raw_allowed(t_lcreate(40, "after-exhaustion.txt", O_RDWR | O_TRUNC, 0644), "create after the release")
        && (t_write(40, "alive\n") == 6 ? 1 : (WHY("write after the release failed"), 0))
        && raw_allowed(t_clunk(40), "clunk")
        && raw_allowed(walk1(FA, 41, "after-exhaustion.txt"), "walk to it")
        && raw_allowed(t_lopen(41, O_RDONLY), "open it")
        && raw_allowed(t_read(41, back, sizeof back), "read it");
    check("raw-serves-after-exhaustion", ok && (strcmp(back, "alive\n") == 0 ? 1 : (WHY("read back '%s'", back), 0)));
    t_clunk(41);
}

int sysfs_write(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    if (n < 0) { errno = e; return -1; }
    return 0;
}

void cmdline_value(const char *key, char *out, size_t size)
{
    char cmdline[4096], pat[128];
    out[0] = 0;
    if (read_text("/proc/cmdline", cmdline, sizeof cmdline) < 0) return;
    snprintf(pat, sizeof pat, "%s=", key);
    char *p = strstr(cmdline, pat);
    if (!p) return;
    p += strlen(pat);
    size_t n = strcspn(p, " \n");
    if (n >= size) n = size - 1;
    memcpy(out, p, n);
    out[n] = 0;
}

/* Takes the device from the kernel and sets it up with one queue of our own; 0 or -1 with `why`. */
static int raw_setup(void)
{
    if (rawdev_take(&dev9p) < 0) return -1;
    static struct dma mem;
    if (dma_alloc(&mem, 1 + 2 * MAX_SLOTS) < 0) return -1;
    uint64_t ring_pa = mem.pa[0];
    for (int s = 0; s < MAX_SLOTS; s++) {
        req[s] = dma_page(&mem, 1 + 2 * s);
        rep[s] = dma_page(&mem, 2 + 2 * s);
        req_pa[s] = mem.pa[1 + 2 * s];
        rep_pa[s] = mem.pa[2 + 2 * s];
    }

    if (!(rawdev_device_features(&dev9p) & F_VERSION_1)) { WHY("the device does not offer VIRTIO_F_VERSION_1"); return -1; }
    if (!(rawdev_negotiate(&dev9p, F_VERSION_1) & ST_FEATURES_OK)) { WHY("FEATURES_OK refused"); return -1; }
    wr(MMIO_QUEUE_SEL, 0);
    uint32_t max = rd(MMIO_QUEUE_NUM_MAX);
    for (qsize = MAX_QUEUE; qsize > max && qsize > 2; qsize /= 2) {}
    if (qsize > max || qsize < 2) { WHY("queue size %u is too small", max); return -1; }
    nslots = qsize / 2;
    static struct vq q;
    if (vq_setup(&dev9p, &q, 0, qsize, dma_page(&mem, 0), ring_pa) != 1) { WHY("the queue did not become ready (status 0x%x)", rd(MMIO_STATUS)); return -1; }
    descs = q.desc;
    avail = q.avail;
    used = q.used;
    avail_idx = used_seen = 0;
    wr(MMIO_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    if (rd(MMIO_STATUS) & ST_NEEDS_RESET) { WHY("the device needs a reset after DRIVER_OK"); return -1; }
    return 0;
}

static void phase2(void)
{
    double t = now();
    int memfd = open("/dev/mem", O_RDWR | O_SYNC);
    int ok = memfd >= 0 ? 1 : (WHY("/dev/mem: %s", strerror(errno)), 0);
    ok = ok && rawdev_find(&dev9p, 9, "9pnet_virtio", memfd) == 0;
    ok = ok && raw_setup() == 0;
    if (ok) info("raw: device %s at 0x%llx, queue size %u", dev9p.name, (unsigned long long)dev9p.base, qsize);
    check("raw-setup", ok);
    if (ok) {
        int rc = t_version();
        ok = raw_allowed(rc, "version") && raw_allowed(t_attach(FA, "a"), "attach a");
        uint64_t a_root = attach_qid_path;
        ok = ok && raw_allowed(t_attach(FB, "b"), "attach b") && raw_allowed(t_attach(FRO, "ro"), "attach ro")
            && raw_allowed(t_attach(FL, "/"), "attach the listing root");
        check("raw-attach", ok);
        if (ok) {
            raw_walk_checks(a_root);
            raw_cross_export_checks();
            raw_mode_checks();
            raw_name_and_symlink_checks();
            raw_read_only_checks();
            raw_xattr_checks();
            raw_exhaustion_checks();
        }
    }
    if (dev9p.unbound) check("raw-give-back", rawdev_give_back(&dev9p));
    if (memfd >= 0) close(memfd);
    info("phase 2 (raw client) took %.1f s", now() - t);
}

/* ------------------------------------------------------------------ phase 3 and main */

static void phase3(void)
{
    mkdir("/mnt/a", 0755);
    int ok = allowed(mount("rkt", "/mnt/a", "9p", 0, MOUNT_OPTS ",aname=a"), "mount a again");
    check("serves-after-attack", ok && content_is("/mnt/a/after-exhaustion.txt", "alive\n")
        && allowed(write_text("/mnt/a/after-rebind.txt", "kernel\n", 0644), "write after-rebind.txt")
        && content_is("/mnt/a/after-rebind.txt", "kernel\n"));
    if (ok) umount("/mnt/a");
}

static void read_host_tree(void)
{
    char cmdline[4096];
    if (read_text("/proc/cmdline", cmdline, sizeof cmdline) < 0) return;
    char *p = strstr(cmdline, "rkt.hostile.tree=");
    if (!p) return;
    p += strlen("rkt.hostile.tree=");
    size_t n = strcspn(p, " \n");
    if (n >= sizeof host_tree) n = sizeof host_tree - 1;
    memcpy(host_tree, p, n);
    host_tree[n] = 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    umask(0);
    read_host_tree();
    if (argc > 1) {
        root = argv[1];
        phase1();
        return 0;
    }
    info("host tree %s", host_tree);
    mkdir("/mnt", 0755);
    mkdir("/mnt/all", 0755);
    check("mount-listing", allowed(mount("rkt", "/mnt/all", "9p", 0, MOUNT_OPTS ",aname=/"), "mount aname=/")
        && present(at("a/victim.txt")) && present(at("b")) && present(at("ro/file.txt")));
    phase1();
    /* Linux gives a virtio-9p device one mount at a time, and the driver can only let go when none is left. */
    if (umount("/mnt/all") != 0) info("umount /mnt/all: %s", strerror(errno));
    phase2();
    phase3();
    vsock_phase();
    net_phase();
    return 0;
}
