// Guest side of bench/net: PID 1 of a tiny initramfs, booted by our VMM and by QEMU with the same
// kernel. It brings lo up and configures eth0 itself (ioctls: no ip tool, no DHCP) as
// 10.213.0.2/24, listens on TCP port 5001 (the NIC: our virtio-net or QEMU's virtio-net-device on
// the same host tap) and on vsock port 5002 (ours only: QEMU has no vhost-vsock here), prints
// "NETBENCH ready tcp=0|1 vsock=0|1", and serves one connection at a time, either kind, with the
// same commands. The host is the client and times everything on its own clock.
//
// A command is 16 bytes: a 32-bit op, 32 bits of padding, a 64-bit argument (little endian):
//   'S' n  sink: read n bytes, then reply with the 8-byte count read
//   'O' n  source: write n bytes
//   'E' n  echo: n times read 1 byte and write it back (the round-trip test)
//   'Q' 0  print "NETBENCH done" and reboot (our VMM exits 0; QEMU microvm has no i8042, so the
//          harness stops it once the line arrived)
// Reboot rather than RB_POWER_OFF: the kernel has no ACPI, so power-off would only halt (and end
// in a panic when init returns); reboot=k through the i8042 is how our guests end cleanly.
//
// A syscall costs ~250 µs and a fresh guest page ~1.7 ms on nested PVM hosts: the I/O buffer is
// static, touched once before "ready", and large, so that each read/write moves as much as the
// socket has.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/vm_sockets.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <unistd.h>

#define TCP_PORT 5001
#define VSOCK_PORT 5002
#define GUEST_ADDR "10.213.0.2"
#define NETMASK "255.255.255.0"
#define BUF_SIZE (256 * 1024)

static unsigned char buf[BUF_SIZE];

struct command {
    uint32_t op;
    uint32_t pad;
    uint64_t arg;
};

static void finish(void) {
    printf("NETBENCH done\n");
    fflush(stdout);
    sync();
    reboot(RB_AUTOBOOT);
    _exit(0);
}

static void fail(const char *what) {
    printf("NETBENCH error %s: %s\n", what, strerror(errno));
    fflush(stdout);
    sync();
    reboot(RB_AUTOBOOT);
    _exit(1);
}

static int set_addr(int s, const char *ifname, unsigned long request, const char *addr) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, addr, &sin->sin_addr);
    return ioctl(s, request, &ifr);
}

static int set_up(int s, const char *ifname) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &ifr);
}

/// 1 when eth0 exists and is configured; 0 (with a note) when the VM has no NIC.
static int configure_network(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) fail("socket(AF_INET)");
    if (set_up(s, "lo") != 0) fail("lo up");
    if (if_nametoindex("eth0") == 0) {
        printf("NETBENCH note no eth0\n");
        close(s);
        return 0;
    }
    if (set_addr(s, "eth0", SIOCSIFADDR, GUEST_ADDR) != 0) fail("eth0 address");
    if (set_addr(s, "eth0", SIOCSIFNETMASK, NETMASK) != 0) fail("eth0 netmask");
    if (set_up(s, "eth0") != 0) fail("eth0 up");
    close(s);
    return 1;
}

static int listen_tcp(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) fail("socket(tcp)");
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(TCP_PORT);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 4) != 0) fail("tcp listen");
    return s;
}

static int listen_vsock(void) {
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0) return -1;
    struct sockaddr_vm a;
    memset(&a, 0, sizeof a);
    a.svm_family = AF_VSOCK;
    a.svm_port = VSOCK_PORT;
    a.svm_cid = VMADDR_CID_ANY;
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 4) != 0) {
        printf("NETBENCH note no vsock listener: %s\n", strerror(errno));
        close(s);
        return -1;
    }
    return s;
}

/// Reads exactly len bytes; 0 at a clean end of stream before the first byte, 1 when done.
static int read_exact(int c, void *p, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(c, (char *)p + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail("read");
        if (n == 0) {
            if (got == 0) return 0;
            errno = EPIPE;
            fail("read (end of stream inside a message)");
        }
        got += (size_t)n;
    }
    return 1;
}

static void write_all(int c, const void *p, size_t len) {
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = write(c, (const char *)p + sent, len - sent);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("write");
        sent += (size_t)n;
    }
}

static void serve(int c) {
    struct command cmd;
    while (read_exact(c, &cmd, sizeof cmd)) {
        switch (cmd.op) {
        case 'S': {
            uint64_t total = 0;
            while (total < cmd.arg) {
                uint64_t want = cmd.arg - total < BUF_SIZE ? cmd.arg - total : BUF_SIZE;
                ssize_t n = read(c, buf, want);
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) fail("sink read");
                if (n == 0) break;
                total += (uint64_t)n;
            }
            write_all(c, &total, sizeof total);
            break;
        }
        case 'O':
            for (uint64_t sent = 0; sent < cmd.arg;) {
                uint64_t want = cmd.arg - sent < BUF_SIZE ? cmd.arg - sent : BUF_SIZE;
                write_all(c, buf, want);
                sent += want;
            }
            break;
        case 'E':
            for (uint64_t i = 0; i < cmd.arg; i++) {
                unsigned char b;
                if (!read_exact(c, &b, 1)) return;
                write_all(c, &b, 1);
            }
            break;
        case 'Q':
            finish();
            break;
        default:
            printf("NETBENCH error unknown command %u\n", cmd.op);
            fflush(stdout);
            return;
        }
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i % 251);

    int have_net = configure_network();
    int tcp = have_net ? listen_tcp() : -1;
    int vsock = listen_vsock();
    if (tcp < 0 && vsock < 0) {
        errno = ENODEV;
        fail("neither a NIC nor vsock");
    }
    printf("NETBENCH ready tcp=%d vsock=%d\n", tcp >= 0, vsock >= 0);

    struct pollfd fds[2] = {{.fd = tcp, .events = POLLIN}, {.fd = vsock, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            fail("poll");
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & POLLIN)) continue;
            int c = accept(fds[i].fd, NULL, NULL);
            if (c < 0) continue;
            if (i == 0) {
                int one = 1;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            }
            serve(c);
            close(c);
        }
    }
}
