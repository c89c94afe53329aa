/*
 * Phase 5 of the hostile guest: the virtio-net device (slot 3, device 1), driven raw.
 *
 * The kernel's virtio_net driver is unbound; the program sets the device up itself and sends
 * malformed virtio_net_hdr (unknown GSO types, GSO without a segment size, hdr_len, csum_start
 * and csum_offset out of range), frames shorter than the header, giant frames, malformed chains,
 * rx buffers that are bad or too small for a frame with MRG_RXBUF, no rx buffers at all while the
 * host floods the tap, features flipped after FEATURES_OK, resets mid-traffic and an available
 * index that jumps. Good frames must still pass both ways: an ARP request the host answers, a
 * UDP datagram the host receives on 10.124.0.1:7778, datagrams the host sends to 10.124.0.2:7777.
 *
 * The host (HostileGuestTests.cs) starts flooding, then sends "hostile-host-to-guest" every
 * 20 ms, when it sees "hostile net-ready". Junk frames go to a MAC address nobody has, with a
 * local experimental EtherType (0x88b5): the host kernel drops them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hostile.h"

enum { RXQ = 0, TXQ = 1 };
#define QSIZE 64
#define RXN 32
#define RXBUF 2048
#define NETHDR 12
#define TXSLOT 512
#define DATA_PAGES 17
#define F_CSUM (1ULL << 0)
#define F_MAC (1ULL << 5)
#define F_HOST_TSO4 (1ULL << 11)
#define F_HOST_TSO6 (1ULL << 12)
#define F_HOST_ECN (1ULL << 13)
#define F_MRG_RXBUF (1ULL << 15)
#define BASE_FEATURES (F_VERSION_1 | F_CSUM | F_MAC | F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_ECN | F_MRG_RXBUF)

enum { P_RX = 2, P_TX = P_RX + RXN, P_DATA = P_TX + 4, P_SPARE = P_DATA + DATA_PAGES, P_TOTAL = P_SPARE + 1 };

static const uint8_t host_ip[4] = { 10, 124, 0, 1 }, guest_ip[4] = { 10, 124, 0, 2 };
static const uint8_t nobody_mac[6] = { 0x02, 0, 0, 0, 0, 0xee };
static uint8_t guest_mac[6], host_mac[6];
static int have_host_mac;

struct nethdr { uint8_t flags, gso_type; uint16_t hdr_len, gso_size, csum_start, csum_offset, num_buffers; } __attribute__((packed));

static struct rawdev dev;
static struct dma mem;
static struct vq rxq, txq;
static unsigned tx_next;
static long frames_seen, host_datagrams;

static uint64_t slot_pa(unsigned i) { return mem.pa[P_TX + i / (PAGE / TXSLOT)] + (i % (PAGE / TXSLOT)) * TXSLOT; }
static uint8_t *slot_va(unsigned i) { return dma_page(&mem, P_TX + i / (PAGE / TXSLOT)) + (i % (PAGE / TXSLOT)) * TXSLOT; }

/* Receive buffer i: the first or second half of rx page i % RXN (a full ring of small buffers needs 64). */
static uint8_t *rx_va(unsigned i) { return dma_page(&mem, P_RX + i % RXN) + (i / RXN) * RXBUF; }
static void rx_post(unsigned i, uint32_t len)
{
    set_desc(&rxq, i, mem.pa[P_RX + i % RXN] + (i / RXN) * RXBUF, len, DESC_WRITE, 0);
    vq_add(&rxq, (uint16_t)i);
}

/* Negotiates `features`, optionally writes `flip` as the features after FEATURES_OK, sets up both queues. */
static int setup(uint64_t features, int flip, uint64_t flipped)
{
    uint32_t st = rawdev_negotiate(&dev, features);
    if (!(st & ST_FEATURES_OK)) { WHY("FEATURES_OK refused for 0x%llx (status 0x%x)", (unsigned long long)features, st); return -1; }
    if (flip) {
        dev_wr(&dev, MMIO_DRIVER_FEATURES_SEL, 0);
        dev_wr(&dev, MMIO_DRIVER_FEATURES, (uint32_t)flipped);
        dev_wr(&dev, MMIO_DRIVER_FEATURES_SEL, 1);
        dev_wr(&dev, MMIO_DRIVER_FEATURES, (uint32_t)(flipped >> 32));
    }
    if (vq_setup(&dev, &rxq, RXQ, QSIZE, dma_page(&mem, 0), mem.pa[0]) != 1
        || vq_setup(&dev, &txq, TXQ, QSIZE, dma_page(&mem, 1), mem.pa[1]) != 1) {
        WHY("a queue did not become ready (status 0x%x)", dev_rd(&dev, MMIO_STATUS));
        return -1;
    }
    dev_wr(&dev, MMIO_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    if (dev_rd(&dev, MMIO_STATUS) & ST_NEEDS_RESET) { WHY("the device needs a reset after DRIVER_OK"); return -1; }
    return 0;
}

static void rx_post_all(void)
{
    for (unsigned i = 0; i < RXN; i++) rx_post(i, RXBUF);
    vq_kick(&dev, &rxq);
}

/* ------------------------------------------------------------------ tx */

static void tx_begin(void) { tx_next = 0; }
static unsigned tx_desc(uint64_t addr, uint32_t len, uint16_t flags) { return vq_put(&txq, &tx_next, addr, len, flags); }
static void tx_link(unsigned a, unsigned b) { vq_link(&txq, a, b); }
/* Header and frame in one descriptor of their own slot (at most 500 bytes). */
static unsigned tx_frame(const struct nethdr *h, const void *frame, uint32_t n)
{
    unsigned s = tx_next;
    memcpy(slot_va(s), h, NETHDR);
    memcpy(slot_va(s) + NETHDR, frame, n);
    return tx_desc(slot_pa(s), NETHDR + n, 0);
}
static int tx_end(void)
{
    vq_kick(&dev, &txq);
    int back = 0, avail = (uint16_t)(txq.avail_idx - txq.used_seen);
    if (vq_drain(&txq, 3, &back)) return 1;
    WHY("%d of %d tx chains came back", back, avail);
    return 0;
}
static int send_frame(const void *frame, uint32_t n)
{
    struct nethdr h = { 0 };
    tx_begin();
    vq_add(&txq, tx_frame(&h, frame, n));
    return tx_end();
}

static uint16_t ip_checksum(const uint8_t *p, int n)
{
    uint32_t sum = 0;
    for (int i = 0; i < n; i += 2) sum += (uint32_t)p[i] << 8 | p[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static int junk_frame(uint8_t *f, int n)
{
    memset(f, 0xa5, n);
    memcpy(f, nobody_mac, 6);
    memcpy(f + 6, guest_mac, 6);
    f[12] = 0x88;
    f[13] = 0xb5;
    return n;
}

static int arp_request(uint8_t *f)
{
    memset(f, 0, 42);
    memset(f, 0xff, 6);
    memcpy(f + 6, guest_mac, 6);
    f[12] = 0x08; f[13] = 0x06;
    uint8_t *a = f + 14;
    a[1] = 1; a[2] = 0x08; a[4] = 6; a[5] = 4; a[7] = 1;
    memcpy(a + 8, guest_mac, 6);
    memcpy(a + 14, guest_ip, 4);
    memcpy(a + 24, host_ip, 4);
    return 42;
}

static int udp_frame(uint8_t *f, const char *payload)
{
    int pl = (int)strlen(payload), total = 20 + 8 + pl;
    memcpy(f, host_mac, 6);
    memcpy(f + 6, guest_mac, 6);
    f[12] = 0x08; f[13] = 0x00;
    uint8_t *ip = f + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45; ip[2] = total >> 8; ip[3] = total; ip[6] = 0x40; ip[8] = 64; ip[9] = 17;
    memcpy(ip + 12, guest_ip, 4);
    memcpy(ip + 16, host_ip, 4);
    uint16_t c = ip_checksum(ip, 20);
    ip[10] = c >> 8; ip[11] = c;
    uint8_t *u = ip + 20;
    u[0] = 7777 >> 8; u[1] = 7777 & 0xff; u[2] = 7778 >> 8; u[3] = 7778 & 0xff;
    u[4] = (8 + pl) >> 8; u[5] = 8 + pl; u[6] = u[7] = 0;
    memcpy(u + 8, payload, pl);
    return 14 + total;
}

/* ------------------------------------------------------------------ rx */

/* The next frame (after its header; merged buffers put together), its buffers posted again with `len`. 1, or 0 after `seconds`. */
static int rx_frame(uint8_t *out, int *n, double seconds, uint32_t len)
{
    double deadline = now() + seconds;
    uint32_t id, used_len;
    int buffers = 0, want = 1, have = 0;
    *n = 0;
    while (buffers < want) {
        if (!vq_next_used(&rxq, &id, &used_len)) {
            if (now() > deadline) return 0;
            usleep(100);
            continue;
        }
        if (id >= 2 * RXN) continue;
        uint8_t *b = rx_va(id);
        if (used_len > RXBUF) used_len = 0;
        if (buffers == 0) {
            if (used_len < NETHDR) { rx_post(id, len); vq_kick(&dev, &rxq); continue; }
            want = get16(b + 10);
            if (want < 1 || want > QSIZE) want = 1;
            memcpy(out, b + NETHDR, used_len - NETHDR);
            have = used_len - NETHDR;
        } else if (have + used_len < 70000) {
            memcpy(out + have, b, used_len);
            have += used_len;
        }
        buffers++;
        rx_post(id, len);
        vq_kick(&dev, &rxq);
    }
    *n = have;
    frames_seen++;
    return 1;
}

static int is_host_datagram(const uint8_t *f, int n)
{
    static const char want[] = "hostile-host-to-guest";
    return n >= 42 + (int)sizeof want - 1 && f[12] == 0x08 && f[13] == 0 && f[14 + 9] == 17
        && memcmp(f + 14 + 16, guest_ip, 4) == 0 && f[34 + 2] == 7777 >> 8 && f[34 + 3] == (7777 & 0xff)
        && memcmp(f + 42, want, sizeof want - 1) == 0;
}

static int is_arp_reply(const uint8_t *f, int n)
{
    return n >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[14 + 7] == 2 && memcmp(f + 14 + 14, host_ip, 4) == 0;
}

/* Waits for the host's datagram (and learns the host's MAC from an ARP reply on the way). */
static int wait_for(int (*want)(const uint8_t *, int), double seconds, uint32_t len)
{
    static uint8_t f[70000];
    int n;
    double deadline = now() + seconds;
    while (now() < deadline) {
        if (!rx_frame(f, &n, deadline - now(), len)) break;
        if (is_arp_reply(f, n)) { memcpy(host_mac, f + 14 + 8, 6); have_host_mac = 1; }
        if (is_host_datagram(f, n)) host_datagrams++;
        if (want(f, n)) return 1;
    }
    return 0;
}

/* Both ways: an ARP request answered, the host's datagram received, ours sent. */
static int traffic_works(const char *payload)
{
    static uint8_t f[600];
    int ok = send_frame(f, arp_request(f)) && (wait_for(is_arp_reply, 5, RXBUF) ? 1 : (WHY("no ARP reply from the host"), 0));
    ok = ok && (wait_for(is_host_datagram, 5, RXBUF) ? 1 : (WHY("no datagram from the host"), 0));
    ok = ok && send_frame(f, udp_frame(f, payload));
    return ok;
}

/* ------------------------------------------------------------------ the attacks */

static void header_checks(void)
{
    static uint8_t f[100];
    int n = junk_frame(f, 60);
    struct nethdr bad[] = {
        { 0, 0x55, 0, 0, 0, 0, 0 },                 /* unknown GSO type */
        { 0, 1, 54, 0, 0, 0, 0 },                   /* TCPv4 GSO without a segment size */
        { 0, 1, 0xffff, 1, 0, 0, 0 },               /* hdr_len past the frame */
        { 1, 0, 0, 0, 0xfff0, 0xfff0, 0 },          /* NEEDS_CSUM far outside the frame */
        { 1, 0, 0, 0, 0, 58, 0 },                   /* checksum field past the end */
        { 1, 0, 0, 0, 59, 0, 0 },                   /* csum_start at the last byte */
        { 0, 3, 42, 8, 0, 0, 0 },                   /* UDP fragmentation, never negotiated */
        { 1, 4 | 0x80, 54, 1, 34, 16, 0 },          /* TCPv6 + ECN on a 60-byte junk frame, 1-byte segments */
        { 0xff, 0xff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff }, /* every bit */
        { 0, 0, 0, 0, 0, 0, 0xffff },               /* num_buffers on tx */
    };
    tx_begin();
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) vq_add(&txq, tx_frame(&bad[i], f, n));
    check("net-bad-vnet-headers", tx_end());

    tx_begin();
    struct nethdr zero = { 0 };
    vq_add(&txq, tx_desc(slot_pa(0), 0, 0));        /* nothing at all */
    vq_add(&txq, tx_desc(slot_pa(1), 4, 0));        /* part of a header */
    vq_add(&txq, tx_frame(&zero, f, 0));            /* a header, no frame */
    vq_add(&txq, tx_frame(&zero, f, 13));           /* a header and 13 bytes of Ethernet header */
    check("net-short-frames", tx_end());

    /* Giant: 17 pages (past the 64 KiB + headers limit), then 16 pages (at it). */
    uint8_t *d = dma_page(&mem, P_DATA);
    memset(d, 0, NETHDR);
    junk_frame(d + NETHDR, 64);
    int ok = 1;
    for (int pages = DATA_PAGES; pages >= DATA_PAGES - 1 && ok; pages--) {
        tx_begin();
        unsigned head = tx_desc(mem.pa[P_DATA], PAGE, 0), prev = head;
        for (int p = 1; p < pages; p++) {
            unsigned x = tx_desc(mem.pa[P_DATA + p], PAGE, 0);
            tx_link(prev, x);
            prev = x;
        }
        vq_add(&txq, head);
        ok = tx_end();
    }
    /* One descriptor claiming 70,000 bytes (never read: over the limit). */
    tx_begin();
    vq_add(&txq, tx_desc(mem.pa[P_DATA], 70000, 0));
    check("net-giant-frames", ok && tx_end());
}

static void chain_checks(void)
{
    static uint8_t f[100];
    int n = junk_frame(f, 60);
    struct nethdr zero = { 0 };
    uint64_t spare = mem.pa[P_SPARE] + 2048;
    tx_begin();
    unsigned a = tx_frame(&zero, f, n);
    tx_link(a, a);
    vq_add(&txq, a);                                              /* a loop */
    unsigned b = tx_frame(&zero, f, n);
    txq.desc[b].flags |= DESC_NEXT;
    txq.desc[b].next = 300;                                       /* past the table */
    vq_add(&txq, b);
    vq_add(&txq, tx_desc(1ULL << 46, 100, 0));                    /* outside RAM */
    vq_add(&txq, tx_desc(0xffffffffffffff00ULL, 0x200, 0));       /* wrapping */
    vq_add(&txq, tx_desc(spare, 100, DESC_WRITE));                /* writable */
    unsigned c = tx_frame(&zero, f, n), d = tx_desc(spare, 64, DESC_WRITE);
    tx_link(c, d);                                                /* readable, then writable */
    vq_add(&txq, c);
    unsigned e = tx_desc(spare, 64, DESC_WRITE), g = tx_frame(&zero, f, n);
    tx_link(e, g);                                                /* writable before readable */
    vq_add(&txq, e);
    vq_add(&txq, tx_desc(mem.pa[P_SPARE], 64, DESC_INDIRECT));    /* indirect, not negotiated here */
    check("net-malformed-chains", tx_end());
}

/* Indirect tables, once negotiated: nested, ragged, empty, outside RAM, with NEXT. */
static void indirect_checks(void)
{
    static uint8_t f[100];
    int n = junk_frame(f, 60);
    struct nethdr zero = { 0 };
    struct desc *t = (struct desc *)dma_page(&mem, P_SPARE);
    uint64_t tpa = mem.pa[P_SPARE];
    memset(t, 0, PAGE);
    memcpy(dma_page(&mem, P_SPARE) + 3072, &zero, NETHDR);
    memcpy(dma_page(&mem, P_SPARE) + 3072 + NETHDR, f, n);
    t[0] = (struct desc){ tpa + 3072, NETHDR + n, 0, 0 };           /* table A: one good descriptor */
    t[4] = (struct desc){ tpa, 16, DESC_INDIRECT, 0 };              /* table B: nested indirect */
    t[8] = (struct desc){ tpa + 3072, NETHDR + n, DESC_NEXT, 8 };   /* table C: a loop */
    t[12] = (struct desc){ tpa + 3072, NETHDR + n, DESC_NEXT, 40 }; /* table D: next past the table */
    tx_begin();
    vq_add(&txq, tx_desc(tpa, 16, DESC_INDIRECT));                  /* good: must go out */
    vq_add(&txq, tx_desc(tpa + 64, 16, DESC_INDIRECT));
    vq_add(&txq, tx_desc(tpa + 128, 16, DESC_INDIRECT));
    vq_add(&txq, tx_desc(tpa + 192, 16, DESC_INDIRECT));
    vq_add(&txq, tx_desc(tpa, 15, DESC_INDIRECT));                  /* not whole descriptors */
    vq_add(&txq, tx_desc(tpa, 0, DESC_INDIRECT));                   /* empty */
    vq_add(&txq, tx_desc(1ULL << 46, 64, DESC_INDIRECT));           /* outside RAM */
    unsigned x = tx_desc(tpa, 16, DESC_INDIRECT), y = tx_frame(&zero, f, n);
    tx_link(x, y);                                                  /* indirect with NEXT */
    vq_add(&txq, x);
    check("net-indirect-abuse", tx_end());
}

void net_phase(void)
{
    double t = now();
    int memfd = open("/dev/mem", O_RDWR | O_SYNC);
    int ok = memfd >= 0 ? 1 : (WHY("/dev/mem: %s", strerror(errno)), 0);
    if (ok && rawdev_find(&dev, 1, "virtio_net", memfd) < 0) {
        info("net: no virtio-net device (%s); phase 5 skipped", why);
        why[0] = 0;
        close(memfd);
        return;
    }
    ok = ok && dma_alloc(&mem, P_TOTAL) == 0 && rawdev_take(&dev) == 0;
    uint64_t offered = ok ? rawdev_device_features(&dev) : 0;
    if (ok && (offered & BASE_FEATURES) != BASE_FEATURES) { WHY("the device offers 0x%llx", (unsigned long long)offered); ok = 0; }

    /* Transport abuse first: a queue size that is not a power of two, then one over the maximum. */
    if (ok) {
        int refused = 1;
        static const unsigned sizes[] = { 100, 512, 0 };
        for (unsigned i = 0; i < 3; i++) {
            rawdev_negotiate(&dev, BASE_FEATURES);
            dev_wr(&dev, MMIO_QUEUE_SEL, RXQ);
            dev_wr(&dev, MMIO_QUEUE_NUM, sizes[i]);
            dev_wr(&dev, MMIO_QUEUE_READY, 1);
            if (dev_rd(&dev, MMIO_QUEUE_READY) || !(dev_rd(&dev, MMIO_STATUS) & ST_NEEDS_RESET)) { WHY("queue size %u accepted", sizes[i]); refused = 0; }
            rawdev_reset(&dev);
        }
        check("net-bad-queue-setup", refused);
    }
    /* Features flipped to nothing after FEATURES_OK: the accepted ones (MRG_RXBUF among them) must hold. */
    ok = ok && setup(BASE_FEATURES, 1, 0) == 0;
    for (int i = 0; ok && i < 6; i++) guest_mac[i] = ((volatile uint8_t *)dev.regs)[MMIO_CONFIG + i];
    if (ok) info("net: device %s at 0x%llx, mac %02x:%02x:%02x:%02x:%02x:%02x", dev.name, (unsigned long long)dev.base,
        guest_mac[0], guest_mac[1], guest_mac[2], guest_mac[3], guest_mac[4], guest_mac[5]);
    check("net-setup", ok);
    if (!ok) goto out;

    /* The host floods us while we post no rx buffers; meanwhile the tx attacks. */
    marker("net-ready");
    double starve = now() + 1.5;
    header_checks();
    chain_checks();
    while (now() < starve) usleep(50000);

    /* Bad rx buffers, then buffers of 16 bytes: frames too big for all of them together are dropped, small ones merged. */
    set_desc(&rxq, 40, mem.pa[P_RX], RXBUF, 0, 0);                  /* readable */
    set_desc(&rxq, 41, mem.pa[P_RX], 4, DESC_WRITE, 0);             /* smaller than the header */
    set_desc(&rxq, 42, 1ULL << 46, RXBUF, DESC_WRITE, 0);           /* outside RAM */
    set_desc(&rxq, 43, mem.pa[P_RX], RXBUF, DESC_WRITE | DESC_NEXT, 43); /* a loop */
    for (unsigned i = 40; i <= 43; i++) vq_add(&rxq, i);
    vq_kick(&dev, &rxq);
    /* Nothing is due yet (we have no buffers the device can use): a frame from the host makes it look at them. */
    int bad_back = 0;
    uint32_t id, len;
    double deadline = now() + 5;
    while (bad_back < 4 && now() < deadline) {
        if (vq_next_used(&rxq, &id, &len)) { if (id >= 40 && id <= 43 && len == 0) bad_back++; }
        else usleep(1000);
    }
    ok = bad_back == 4 ? 1 : (WHY("%d of 4 bad rx buffers came back empty", bad_back), 0);
    check("net-bad-rx-buffers", ok);
    /* A whole ring of 16-byte buffers: 1 KiB in all, less than the flood's frames, enough for small ones merged. */
    for (unsigned i = 0; i < QSIZE; i++) rx_post(i, 16);
    vq_kick(&dev, &rxq);
    ok = wait_for(is_host_datagram, 8, 16) ? 1 : (WHY("no datagram from the host in 16-byte buffers"), 0);
    check("net-rx-tiny-buffers-after-starving", ok);

    /* A reset while the device holds our buffers, then indirect tables once they are allowed. */
    rawdev_reset(&dev);
    ok = setup(BASE_FEATURES | F_INDIRECT_DESC, 0, 0) == 0;
    if (ok) rx_post_all();
    check("net-reset-mid-traffic", ok && traffic_works("hostile-guest-to-host"));
    if (ok) indirect_checks();

    /* The available index jumps: the device must ignore the queue until a reset, then serve again. */
    txq.avail[1] = (uint16_t)(txq.avail_idx + 5000);
    vq_kick(&dev, &txq);
    rxq.avail[1] = (uint16_t)(rxq.avail_idx + 300);
    vq_kick(&dev, &rxq);
    usleep(100000);
    ok = setup(BASE_FEATURES, 0, 0) == 0;
    if (ok) rx_post_all();
    check("net-avail-index-jump", ok && traffic_works("hostile-guest-to-host-final"));
    info("net: %ld frames seen, %ld datagrams from the host", frames_seen, host_datagrams);
out:
    if (dev.unbound) check("net-give-back", rawdev_give_back(&dev));
    close(memfd);
    info("phase 5 (raw net) took %.1f s", now() - t);
}
