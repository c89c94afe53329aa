/*
 * Phase 4 of the hostile guest: the virtio-vsock device (slot 1, device 19), driven raw.
 *
 * The kernel's virtio vsock transport is unbound; the program sets the device up itself and sends
 * what a kernel never would: headers whose len disagrees with the buffers, foreign CIDs, unknown
 * types and ops, data before REQUEST, credit violations, garbage SHUTDOWN flags, floods of
 * REQUESTs (to a host port nobody listens on, and past the connection limit on one where the host
 * listens), malformed descriptor chains, bad rx and event buffers, impossible queue set-ups and
 * feature negotiations, a jumping available index, and resets with connections open. After each
 * burst a proper connection to the host's echo listener must still work. Then the host connects
 * into the guest (hybrid `CONNECT <port>`) and this program answers as the guest end; finally the
 * device goes back to the kernel and a kernel AF_VSOCK socket talks to the host.
 *
 * The host (HostileGuestTests.cs) listens on `<vsock>_5000` (echo) and `<vsock>_5002` (accepts,
 * never reads); nobody listens on 5001. It connects to guest port 5005 when it sees
 * "hostile vsock-serving 5005".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "hostile.h"

enum { GUEST_CID = 3, HOST_CID = 2, ECHO_PORT = 5000, NOBODY_PORT = 5001, SINK_PORT = 5002, SERVE_PORT = 5005 };
enum { OP_REQUEST = 1, OP_RESPONSE = 2, OP_RST = 3, OP_SHUTDOWN = 4, OP_RW = 5, OP_CREDIT_UPDATE = 6, OP_CREDIT_REQUEST = 7 };
enum { RXQ = 0, TXQ = 1, EVQ = 2 };
#define QSIZE 64
#define RXN 32           /* rx buffers, one page each */
#define TXSLOT 256       /* a header and a small payload */
#define TXSLOT_PAGES 4   /* 64 slots */
#define DATA_PAGES 16
#define HDR 44

/* Pages: 0-2 rings, then rx buffers, tx slots, data, the event page, a spare page for indirect tables. */
enum { P_RX = 3, P_TX = P_RX + RXN, P_DATA = P_TX + TXSLOT_PAGES, P_EVENT = P_DATA + DATA_PAGES, P_SPARE = P_EVENT + 1, P_TOTAL = P_SPARE + 1 };

struct hdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

struct rxpkt { struct hdr h; uint32_t n; uint8_t data[PAGE]; };

static struct rawdev dev;
static struct dma mem;
static struct vq rxq, txq, evq;
static int up;                 /* the device is set up and DRIVER_OK */
static unsigned tx_next;       /* descriptors (and slots) used by the burst being built */
static uint32_t next_gport = 20000;
/* Packets the waiting loops saw for nobody in particular. */
static long stray_rst, stray_response, stray_other;

static uint64_t slot_pa(unsigned i) { return mem.pa[P_TX + i / (PAGE / TXSLOT)] + (i % (PAGE / TXSLOT)) * TXSLOT; }
static uint8_t *slot_va(unsigned i) { return dma_page(&mem, P_TX + i / (PAGE / TXSLOT)) + (i % (PAGE / TXSLOT)) * TXSLOT; }

static struct hdr mk(uint32_t gport, uint32_t hport, uint16_t op)
{
    return (struct hdr){ GUEST_CID, HOST_CID, gport, hport, 0, 1, op, 0, 65536, 0 };
}

/* ------------------------------------------------------------------ set-up */

static void rx_post_all(void)
{
    for (unsigned i = 0; i < RXN; i++) {
        set_desc(&rxq, i, mem.pa[P_RX + i], PAGE, DESC_WRITE, 0);
        vq_add(&rxq, i);
    }
    vq_kick(&dev, &rxq);
}

static void ev_post(void)
{
    set_desc(&evq, 0, mem.pa[P_EVENT], 8, DESC_WRITE, 0);
    vq_add(&evq, 0);
    vq_kick(&dev, &evq);
}

/* The whole driver set-up; `post_rx` 0 leaves the rx queue empty. 0, or -1 with `why`. */
static int setup(int post_rx)
{
    up = 0;
    uint32_t st = rawdev_negotiate(&dev, F_VERSION_1);
    if (!(st & ST_FEATURES_OK)) { WHY("FEATURES_OK refused (status 0x%x)", st); return -1; }
    if (vq_setup(&dev, &rxq, RXQ, QSIZE, dma_page(&mem, 0), mem.pa[0]) != 1
        || vq_setup(&dev, &txq, TXQ, QSIZE, dma_page(&mem, 1), mem.pa[1]) != 1
        || vq_setup(&dev, &evq, EVQ, QSIZE, dma_page(&mem, 2), mem.pa[2]) != 1) {
        WHY("a queue did not become ready (status 0x%x)", dev_rd(&dev, MMIO_STATUS));
        return -1;
    }
    dev_wr(&dev, MMIO_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    if (dev_rd(&dev, MMIO_STATUS) & ST_NEEDS_RESET) { WHY("the device needs a reset after DRIVER_OK"); return -1; }
    if (post_rx) rx_post_all();
    ev_post();
    up = 1;
    return 0;
}

/* ------------------------------------------------------------------ tx bursts */

static void tx_begin(void) { tx_next = 0; }

static unsigned tx_desc(uint64_t addr, uint32_t len, uint16_t flags) { return vq_put(&txq, &tx_next, addr, len, flags); }
static void tx_link(unsigned a, unsigned b) { vq_link(&txq, a, b); }

/* A packet in one descriptor of its own slot: header and `n` (<= 212) payload bytes; `extra` more bytes declared readable. */
static unsigned tx_pkt(struct hdr h, const void *payload, uint32_t n, uint32_t extra)
{
    unsigned s = tx_next;
    uint8_t *p = slot_va(s);
    memcpy(p, &h, HDR);
    if (n) memcpy(p + HDR, payload, n);
    return tx_desc(slot_pa(s), HDR + n + extra, 0);
}

/* Kicks the burst; 1 when every chain came back (the device gives back even the malformed ones). */
static int tx_end(void)
{
    vq_kick(&dev, &txq);
    int back = 0;
    int avail = (uint16_t)(txq.avail_idx - txq.used_seen);
    if (vq_drain(&txq, 3, &back)) return 1;
    WHY("%d of %d tx chains came back", back, avail);
    return 0;
}

static int send1(struct hdr h, const void *payload, uint32_t n)
{
    tx_begin();
    vq_add(&txq, tx_pkt(h, payload, n, 0));
    return tx_end();
}

/* ------------------------------------------------------------------ rx */

/* The next packet from the device (its buffer goes back at once); 1, or 0 after `seconds`. */
static int rx_get(struct rxpkt *p, double seconds)
{
    double deadline = now() + seconds;
    uint32_t id, len;
    while (!vq_next_used(&rxq, &id, &len)) {
        if (now() > deadline) return 0;
        usleep(100);
    }
    if (id < RXN) {
        uint8_t *b = dma_page(&mem, P_RX + id);
        memset(&p->h, 0, sizeof p->h);
        p->n = 0;
        if (len >= HDR && len <= PAGE) {
            memcpy(&p->h, b, HDR);
            p->n = len - HDR;
            memcpy(p->data, b + HDR, p->n);
        }
        set_desc(&rxq, id, mem.pa[P_RX + id], PAGE, DESC_WRITE, 0);
        vq_add(&rxq, (uint16_t)id);
        vq_kick(&dev, &rxq);
    } else {
        memset(&p->h, 0, sizeof p->h);
        p->n = 0;
    }
    return 1;
}

static void stray(const struct rxpkt *p)
{
    if (p->h.op == OP_RST) stray_rst++;
    else if (p->h.op == OP_RESPONSE) stray_response++;
    else stray_other++;
    /* A host connection we do not serve: refuse it. */
    if (p->h.op == OP_REQUEST) send1(mk(p->h.dst_port, p->h.src_port, OP_RST), NULL, 0);
}

/* Waits for a packet of connection (gport, hport): 1 with it in *p, 0 after `seconds` (others counted as strays). */
static int wait_conn(uint32_t gport, uint32_t hport, struct rxpkt *p, double seconds)
{
    double deadline = now() + seconds;
    while (now() < deadline) {
        if (!rx_get(p, deadline - now())) return 0;
        if (p->h.dst_port == gport && p->h.src_port == hport) return 1;
        stray(p);
    }
    return 0;
}

/* Drains what comes within `seconds`: counts of RST and RESPONSE whose guest port is in [lo, hi). */
static void drain(uint32_t lo, uint32_t hi, double seconds, int *rsts, int *responses, int *others)
{
    static struct rxpkt p;
    double deadline = now() + seconds;
    while (rx_get(&p, deadline - now())) {
        if (p.h.dst_port >= lo && p.h.dst_port < hi && p.h.src_cid == HOST_CID && p.h.dst_cid == GUEST_CID) {
            if (p.h.op == OP_RST) { if (rsts) (*rsts)++; }
            else if (p.h.op == OP_RESPONSE) { if (responses) (*responses)++; }
            else if (others) (*others)++;
        } else stray(&p);
        if (now() > deadline) break;
    }
}

/* ------------------------------------------------------------------ connections */

/* REQUEST to host `hport`: 1 on RESPONSE; 0 on RST or silence (reason in `why`). */
static int vconnect(uint32_t gport, uint32_t hport, uint32_t buf_alloc)
{
    static struct rxpkt p;
    struct hdr h = mk(gport, hport, OP_REQUEST);
    h.buf_alloc = buf_alloc;
    if (!send1(h, NULL, 0)) return 0;
    if (!wait_conn(gport, hport, &p, 5)) { WHY("no answer to REQUEST %u -> %u", gport, hport); return 0; }
    if (p.h.op == OP_RESPONSE) return 1;
    WHY("REQUEST %u -> %u answered with op %u", gport, hport, p.h.op);
    return 0;
}

/* A connection to the host's echo listener that echoes: the device serves. */
static int echo_works(void)
{
    static struct rxpkt p;
    if (!up) { WHY("the device is not set up"); return 0; }
    uint32_t g = next_gport++;
    char msg[64];
    int n = snprintf(msg, sizeof msg, "hostile-echo-%u", g);
    if (!vconnect(g, ECHO_PORT, 65536)) return 0;
    struct hdr h = mk(g, ECHO_PORT, OP_RW);
    h.len = n;
    int ok = send1(h, msg, n);
    char got[128] = "";
    int have = 0;
    while (ok && have < n) {
        if (!wait_conn(g, ECHO_PORT, &p, 5)) { WHY("no echo on port %u (had %d bytes)", g, have); ok = 0; break; }
        if (p.h.op == OP_RW && have + p.n < sizeof got) { memcpy(got + have, p.data, p.n); have += p.n; }
        else if (p.h.op == OP_RST) { WHY("RST instead of the echo"); ok = 0; }
    }
    if (ok && memcmp(got, msg, n) != 0) { WHY("echo was '%.*s', not '%s'", have, got, msg); ok = 0; }
    send1(mk(g, ECHO_PORT, OP_RST), NULL, 0);
    return ok;
}

/* A connection whose next packet must be RST (the device reset it): 1 when it was. */
static int expect_rst(uint32_t g, uint32_t hport, const char *after)
{
    static struct rxpkt p;
    while (wait_conn(g, hport, &p, 3)) {
        if (p.h.op == OP_RST) return 1;
    }
    WHY("no RST after %s", after);
    return 0;
}

/* ------------------------------------------------------------------ the bursts */

static void bad_length_checks(void)
{
    uint32_t live = next_gport++;
    int ok = vconnect(live, ECHO_PORT, 65536);
    tx_begin();
    struct hdr h = mk(live, ECHO_PORT, OP_RW);
    h.len = 1000;                                   /* 1000 declared, 10 there */
    vq_add(&txq, tx_pkt(h, "0123456789", 10, 0));
    h.len = 0xffffffff;                             /* more than any buffer */
    vq_add(&txq, tx_pkt(h, "x", 1, 0));
    h.len = 65537;                                  /* one byte past the largest payload */
    vq_add(&txq, tx_pkt(h, "x", 1, 0));
    h.len = 100;                                    /* beyond the descriptor by 50 */
    vq_add(&txq, tx_pkt(h, "0123456789", 10, 40));
    struct hdr r = mk(next_gport++, ECHO_PORT, OP_REQUEST);
    r.len = 5;                                      /* a REQUEST with a payload */
    vq_add(&txq, tx_pkt(r, "abcde", 5, 0));
    struct hdr s = mk(next_gport++, ECHO_PORT, OP_REQUEST);
    vq_add(&txq, tx_desc(slot_pa(tx_next), 20, 0)); /* a header cut short */
    memcpy(slot_va(tx_next - 1), &s, HDR);
    ok = ok && tx_end();
    ok = ok && expect_rst(live, ECHO_PORT, "RW packets with a bad len on a live connection");
    check("vsock-bad-len", ok && echo_works());

    /* A header split over three descriptors is legal: the device must put it together. */
    uint32_t g = next_gport++;
    static struct rxpkt p;
    struct hdr q = mk(g, ECHO_PORT, OP_REQUEST);
    tx_begin();
    unsigned base = tx_next;
    memcpy(slot_va(base), &q, HDR);
    unsigned a = tx_desc(slot_pa(base), 20, 0), b = tx_desc(slot_pa(base) + 20, 20, 0), c = tx_desc(slot_pa(base) + 40, 4, 0);
    tx_link(a, b);
    tx_link(b, c);
    vq_add(&txq, a);
    ok = tx_end() && wait_conn(g, ECHO_PORT, &p, 5) && (p.h.op == OP_RESPONSE ? 1 : (WHY("op %u", p.h.op), 0));
    send1(mk(g, ECHO_PORT, OP_RST), NULL, 0);
    check("vsock-split-header", ok);
}

static void bad_address_checks(void)
{
    /* Foreign CIDs, unknown types and ops: nothing may connect. */
    uint32_t lo = next_gport;
    static const uint64_t src[] = { HOST_CID, 4, 0xffffffffULL, 0xffffffffffffffffULL, 0 };
    static const uint64_t dst[] = { GUEST_CID, 1, 0, 0xffffffffffffffffULL, 0x100000002ULL };
    tx_begin();
    for (unsigned i = 0; i < 5; i++) {
        struct hdr h = mk(next_gport++, ECHO_PORT, OP_REQUEST);
        h.src_cid = src[i];
        vq_add(&txq, tx_pkt(h, NULL, 0, 0));
        h = mk(next_gport++, ECHO_PORT, OP_REQUEST);
        h.dst_cid = dst[i];
        vq_add(&txq, tx_pkt(h, NULL, 0, 0));
    }
    int ok = tx_end();
    int rsts = 0, responses = 0, others = 0;
    drain(lo, next_gport, 0.3, &rsts, &responses, &others);
    ok = ok && (responses == 0 ? 1 : (WHY("%d REQUESTs with foreign CIDs were answered RESPONSE", responses), 0));
    check("vsock-foreign-cids", ok && echo_works());

    lo = next_gport;
    static const uint16_t types[] = { 0, 2, 3, 0xffff };
    static const uint16_t ops[] = { 0, 8, 0x100, 0xffff };
    tx_begin();
    for (unsigned i = 0; i < 4; i++) {
        struct hdr h = mk(next_gport++, ECHO_PORT, OP_REQUEST);
        h.type = types[i];
        vq_add(&txq, tx_pkt(h, NULL, 0, 0));
        h = mk(next_gport++, ECHO_PORT, ops[i]);
        vq_add(&txq, tx_pkt(h, NULL, 0, 0));
    }
    ok = tx_end();
    rsts = responses = others = 0;
    drain(lo, next_gport, 0.3, &rsts, &responses, &others);
    ok = ok && (responses == 0 ? 1 : (WHY("%d REQUESTs of unknown type or op were answered RESPONSE", responses), 0));
    check("vsock-unknown-type-op", ok && echo_works());

    /* Everything but REQUEST for a connection that does not exist: RST, nothing reaches a host socket. */
    lo = next_gport;
    static const uint16_t orphan_ops[] = { OP_RW, OP_RESPONSE, OP_SHUTDOWN, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST, OP_RST };
    tx_begin();
    for (unsigned i = 0; i < 6; i++) {
        struct hdr h = mk(next_gport++, ECHO_PORT, orphan_ops[i]);
        if (orphan_ops[i] == OP_RW) h.len = 5;
        if (orphan_ops[i] == OP_SHUTDOWN) h.flags = 3;
        vq_add(&txq, tx_pkt(h, "hello", orphan_ops[i] == OP_RW ? 5 : 0, 0));
    }
    ok = tx_end();
    rsts = responses = others = 0;
    drain(lo, next_gport, 0.3, &rsts, &responses, &others);
    ok = ok && (rsts == 5 && responses == 0 && others == 0 ? 1
        : (WHY("%d RSTs, %d RESPONSEs, %d others for 5 orphan packets and an RST", rsts, responses, others), 0));
    check("vsock-packets-before-request", ok && echo_works());
}

static void shutdown_and_credit_checks(void)
{
    uint32_t g = next_gport++;
    int ok = vconnect(g, ECHO_PORT, 65536);
    struct hdr h = mk(g, ECHO_PORT, OP_SHUTDOWN);
    h.flags = 0xfffffff0u;
    ok = ok && send1(h, NULL, 0) && expect_rst(g, ECHO_PORT, "SHUTDOWN with undefined flags");
    check("vsock-shutdown-garbage-flags", ok && echo_works());

    /* More than the 64 KiB we were given, to a host socket that never reads: the device must reset the connection. */
    g = next_gport++;
    ok = vconnect(g, SINK_PORT, 65536);
    uint8_t *data = dma_page(&mem, P_DATA);
    for (int i = 0; i < DATA_PAGES * PAGE; i++) data[i] = (uint8_t)i;
    int bursts = 0, rst = 0;
    static struct rxpkt p;
    for (; ok && bursts < 4 && !rst; bursts++) {
        tx_begin();
        for (int k = 0; k < 4; k++) {
            struct hdr w = mk(g, SINK_PORT, OP_RW);
            w.len = 15 * PAGE;
            unsigned head = tx_pkt(w, NULL, 0, 0), prev = head;
            for (int d = 0; d < 15; d++) {
                unsigned x = tx_desc(mem.pa[P_DATA + d], PAGE, 0);
                tx_link(prev, x);
                prev = x;
            }
            vq_add(&txq, head);
        }
        ok = tx_end();
        while (wait_conn(g, SINK_PORT, &p, 0.2)) if (p.h.op == OP_RST) rst = 1;
    }
    info("vsock: credit violation: %d bursts of 240 KiB until RST", bursts);
    check("vsock-credit-violation", ok && (rst ? 1 : (WHY("no RST after %d KiB to a host socket that never reads", bursts * 240), 0)) && echo_works());

    /* A payload over the 64 KiB limit is refused as such. */
    g = next_gport++;
    ok = vconnect(g, ECHO_PORT, 65536);
    tx_begin();
    struct hdr w = mk(g, ECHO_PORT, OP_RW);
    w.len = 16 * PAGE + 1;
    unsigned head = tx_pkt(w, "x", 1, 0), prev = head;
    for (int d = 0; d < 16; d++) {
        unsigned x = tx_desc(mem.pa[P_DATA + d], PAGE, 0);
        tx_link(prev, x);
        prev = x;
    }
    vq_add(&txq, head);
    ok = ok && tx_end() && expect_rst(g, ECHO_PORT, "an RW payload over 64 KiB");
    check("vsock-oversized-payload", ok && echo_works());

    /* We give no credit: the host's echo must wait until we do. */
    g = next_gport++;
    ok = vconnect(g, ECHO_PORT, 0);
    w = mk(g, ECHO_PORT, OP_RW);
    w.buf_alloc = 0;
    w.len = 5;
    ok = ok && send1(w, "abcde", 5);
    int early = 0;
    while (ok && wait_conn(g, ECHO_PORT, &p, 0.3)) if (p.h.op == OP_RW) early += p.n;
    struct hdr cu = mk(g, ECHO_PORT, OP_CREDIT_UPDATE);
    cu.buf_alloc = 4096;
    ok = ok && send1(cu, NULL, 0);
    int later = 0;
    while (ok && later < 5 && wait_conn(g, ECHO_PORT, &p, 3)) if (p.h.op == OP_RW) later += p.n;
    send1(mk(g, ECHO_PORT, OP_RST), NULL, 0);
    check("vsock-zero-credit-respected", ok && (early == 0 && later == 5 ? 1
        : (WHY("%d bytes came without credit, %d after it", early, later), 0)));
}

static void chain_checks(void)
{
    tx_begin();
    struct hdr h = mk(next_gport++, NOBODY_PORT, OP_REQUEST);
    unsigned a = tx_pkt(h, NULL, 0, 0);
    tx_link(a, a);                                               /* a loop on itself */
    vq_add(&txq, a);
    uint64_t spare = mem.pa[P_SPARE] + 2048;   /* nothing of ours the device could scribble on */
    unsigned b = tx_pkt(h, NULL, 0, 0), c = tx_desc(spare, 8, 0);
    tx_link(b, c);
    tx_link(c, b);                                               /* a loop of two */
    vq_add(&txq, b);
    unsigned d = tx_pkt(h, NULL, 0, 0);
    txq.desc[d].flags |= DESC_NEXT;
    txq.desc[d].next = 200;                                      /* past the table */
    vq_add(&txq, d);
    vq_add(&txq, tx_desc(1ULL << 46, HDR, 0));                   /* outside RAM */
    vq_add(&txq, tx_desc(0xfffffffffffff000ULL, 0x2000, 0));     /* wrapping the address space */
    vq_add(&txq, tx_desc(0xbfff0000ULL, 0x20000, 0));            /* running into the device hole */
    vq_add(&txq, tx_desc(spare, 0, 0));                          /* zero length */
    unsigned e = tx_desc(spare, 0, 0), f = tx_pkt(h, NULL, 0, 0);
    tx_link(e, f);                                               /* a zero-length descriptor, then the header */
    vq_add(&txq, e);
    unsigned g = tx_desc(spare, 64, DESC_WRITE), k = tx_pkt(h, NULL, 0, 0);
    tx_link(g, k);                                               /* writable before readable */
    vq_add(&txq, g);
    vq_add(&txq, tx_desc(spare + 64, 64, DESC_WRITE));           /* writable only */
    vq_add(&txq, tx_desc(mem.pa[P_SPARE], 16 * 4, DESC_INDIRECT)); /* indirect, never negotiated */
    unsigned m = tx_pkt(h, NULL, 0, 0);
    txq.desc[m].flags |= DESC_NEXT | DESC_WRITE | DESC_INDIRECT;  /* every flag */
    txq.desc[m].next = 0xffff;
    vq_add(&txq, m);
    int ok = tx_end();
    drain(0, 0, 0.2, NULL, NULL, NULL);
    check("vsock-malformed-chains", ok && echo_works());
}

/* Bad receive buffers among good ones: the bad come back empty, the good carry the RST. */
static void rx_checks(void)
{
    int ok = setup(0) == 0;
    /* Descriptors past the RXN good ones. */
    set_desc(&rxq, 40, mem.pa[P_RX], PAGE, 0, 0);                     /* readable */
    set_desc(&rxq, 41, mem.pa[P_RX], 10, DESC_WRITE, 0);              /* too small for a header */
    set_desc(&rxq, 42, 1ULL << 46, PAGE, DESC_WRITE, 0);              /* outside RAM */
    set_desc(&rxq, 43, mem.pa[P_RX], PAGE, DESC_WRITE | DESC_NEXT, 43); /* a loop */
    set_desc(&rxq, 44, mem.pa[P_RX], 0, DESC_WRITE, 0);               /* zero length */
    set_desc(&rxq, 45, mem.pa[P_SPARE], 64, DESC_INDIRECT, 0);        /* indirect */
    for (unsigned i = 40; i <= 45; i++) vq_add(&rxq, i);
    rx_post_all();
    uint32_t g = next_gport++;
    ok = ok && send1(mk(g, NOBODY_PORT, OP_REQUEST), NULL, 0);
    int bad_back = 0, got_rst = 0;
    uint32_t id, len;
    double deadline = now() + 3;
    while (now() < deadline && !(got_rst && bad_back == 6)) {
        if (!vq_next_used(&rxq, &id, &len)) { usleep(100); continue; }
        if (id >= 40 && id <= 45) { if (len == 0) bad_back++; continue; }
        if (id < RXN) {
            struct hdr h;
            memcpy(&h, dma_page(&mem, P_RX + id), HDR);
            if (h.dst_port == g && h.op == OP_RST) got_rst = 1;
            set_desc(&rxq, id, mem.pa[P_RX + id], PAGE, DESC_WRITE, 0);
            vq_add(&rxq, (uint16_t)id);
            vq_kick(&dev, &rxq);
        }
    }
    check("vsock-bad-rx-buffers", ok && (bad_back == 6 && got_rst ? 1
        : (WHY("%d of 6 bad rx buffers came back empty, RST %s", bad_back, got_rst ? "seen" : "not seen"), 0)) && echo_works());

    /* The event queue is the device's to write: readable, tiny, looping and indirect buffers there, notified over and over. */
    set_desc(&evq, 1, mem.pa[P_EVENT], 8, 0, 0);
    set_desc(&evq, 2, mem.pa[P_EVENT], 0, DESC_WRITE, 0);
    set_desc(&evq, 3, mem.pa[P_EVENT], 8, DESC_WRITE | DESC_NEXT, 3);
    set_desc(&evq, 4, mem.pa[P_SPARE], 32, DESC_INDIRECT, 0);
    set_desc(&evq, 5, 1ULL << 46, 8, DESC_WRITE, 0);
    for (unsigned i = 1; i <= 5; i++) vq_add(&evq, i);
    for (int i = 0; i < 50; i++) vq_kick(&dev, &evq);
    /* Notifies for queues that do not exist. */
    static const uint32_t bogus[] = { 3, 4, 255, 0xffff, 0x10000, 0xffffffff };
    for (unsigned i = 0; i < 6; i++) dev_wr(&dev, MMIO_QUEUE_NOTIFY, bogus[i]);
    check("vsock-event-queue-and-notify-abuse", echo_works());
}

/* Registers the driver may not change, and set-ups the device must refuse with DEVICE_NEEDS_RESET. */
static void transport_checks(void)
{
    uint32_t cid = dev_rd(&dev, MMIO_CONFIG);
    dev_wr(&dev, MMIO_CONFIG, 7);
    dev_wr(&dev, MMIO_CONFIG + 4, 7);
    volatile uint8_t *b = (volatile uint8_t *)dev.regs;
    uint8_t odd = b[MMIO_STATUS + 1];           /* a byte read of a register */
    b[MMIO_STATUS] = 0;                          /* a byte write: ignored, or the device resets */
    (void)odd;
    uint32_t after = dev_rd(&dev, MMIO_CONFIG);
    int ok = cid == GUEST_CID && after == GUEST_CID ? 1 : (WHY("guest_cid read %u, then %u after writes", cid, after), 0);
    if (!(dev_rd(&dev, MMIO_STATUS) & ST_DRIVER_OK)) ok = ok && setup(1) == 0; /* the byte write counted as a reset */
    check("vsock-config-read-only", ok && echo_works());

    /* Features: one the device does not offer, and no VERSION_1. */
    uint64_t offered = rawdev_device_features(&dev);
    uint32_t st1 = rawdev_negotiate(&dev, F_VERSION_1 | F_INDIRECT_DESC | 1);
    uint32_t st2 = rawdev_negotiate(&dev, 0);
    ok = !(st1 & ST_FEATURES_OK) && !(st2 & ST_FEATURES_OK) ? 1
        : (WHY("FEATURES_OK kept: 0x%x with unoffered bits (offered 0x%llx), 0x%x without VERSION_1", st1, (unsigned long long)offered, st2), 0);
    /* Features written after FEATURES_OK must not count. */
    uint32_t st3 = rawdev_negotiate(&dev, F_VERSION_1);
    dev_wr(&dev, MMIO_DRIVER_FEATURES_SEL, 0);
    dev_wr(&dev, MMIO_DRIVER_FEATURES, 0xffffffff);
    dev_wr(&dev, MMIO_DRIVER_FEATURES_SEL, 1);
    dev_wr(&dev, MMIO_DRIVER_FEATURES, 0);
    ok = ok && (st3 & ST_FEATURES_OK ? 1 : (WHY("VERSION_1 alone refused"), 0));
    check("vsock-bad-features", ok && setup(1) == 0 && echo_works());

    /* Queue set-ups: not a power of two, over the maximum, zero, outside RAM, misaligned; DRIVER_OK without queues. */
    struct { const char *what; unsigned size; uint64_t desc; } bad[] = {
        { "size 100", 100, mem.pa[1] }, { "size 512", 512, mem.pa[1] }, { "size 0", 0, mem.pa[1] },
        { "rings outside RAM", 64, 1ULL << 46 }, { "misaligned rings", 64, mem.pa[1] + 2 },
    };
    ok = 1;
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0] && ok; i++) {
        rawdev_negotiate(&dev, F_VERSION_1);
        dev_wr(&dev, MMIO_QUEUE_SEL, TXQ);
        dev_wr(&dev, MMIO_QUEUE_NUM, bad[i].size);
        dev_wr(&dev, MMIO_QUEUE_DESC_LOW, (uint32_t)bad[i].desc);
        dev_wr(&dev, MMIO_QUEUE_DESC_HIGH, (uint32_t)(bad[i].desc >> 32));
        dev_wr(&dev, MMIO_QUEUE_DRIVER_LOW, (uint32_t)bad[i].desc + 1024);
        dev_wr(&dev, MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(bad[i].desc >> 32));
        dev_wr(&dev, MMIO_QUEUE_DEVICE_LOW, (uint32_t)bad[i].desc + 2048);
        dev_wr(&dev, MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(bad[i].desc >> 32));
        dev_wr(&dev, MMIO_QUEUE_READY, 1);
        uint32_t ready = dev_rd(&dev, MMIO_QUEUE_READY), st = dev_rd(&dev, MMIO_STATUS);
        if (ready || !(st & ST_NEEDS_RESET)) { WHY("%s: ready %u, status 0x%x", bad[i].what, ready, st); ok = 0; }
        rawdev_reset(&dev);
        if (dev_rd(&dev, MMIO_STATUS) != 0) { WHY("status 0x%x after a reset", dev_rd(&dev, MMIO_STATUS)); ok = 0; }
    }
    if (ok) {
        rawdev_negotiate(&dev, F_VERSION_1);
        dev_wr(&dev, MMIO_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
        uint32_t st = dev_rd(&dev, MMIO_STATUS);
        if (!(st & ST_NEEDS_RESET)) { WHY("DRIVER_OK without ready queues: status 0x%x", st); ok = 0; }
        /* Notifies now go nowhere. */
        dev_wr(&dev, MMIO_QUEUE_NOTIFY, TXQ);
    }
    check("vsock-bad-queue-setup", ok && setup(1) == 0 && echo_works());

    /* The available index jumps far ahead; the used index is scribbled over. */
    txq.avail[1] = (uint16_t)(txq.avail_idx + 1000);
    vq_kick(&dev, &txq);
    put16((uint8_t *)rxq.used + 2, 0xbeef);
    vq_kick(&dev, &rxq);
    usleep(100000);
    check("vsock-avail-index-jump", setup(1) == 0 && echo_works());
}

static void flood_checks(void)
{
    /* REQUESTs to a port nobody listens on: each must be answered with RST, and nothing may pile up. */
    int rsts = 0, responses = 0, others = 0, ok = 1;
    uint32_t lo = next_gport;
    double t = now();
    for (int burst = 0; burst < 16 && ok; burst++) {
        tx_begin();
        for (int i = 0; i < 32; i++) vq_add(&txq, tx_pkt(mk(next_gport++, NOBODY_PORT, OP_REQUEST), NULL, 0, 0));
        ok = tx_end();
        drain(lo, next_gport, 0.01, &rsts, &responses, &others);
    }
    drain(lo, next_gport, 0.5, &rsts, &responses, &others);
    info("vsock: %d REQUESTs to a port without listener: %d RST, %d RESPONSE in %.2f s", next_gport - lo, rsts, responses, now() - t);
    check("vsock-request-flood-no-listener", ok && (rsts == (int)(next_gport - lo) && responses == 0 ? 1
        : (WHY("%d RSTs and %d RESPONSEs for %u REQUESTs", rsts, responses, next_gport - lo), 0)) && echo_works());

    /* Past the connection limit on the echo listener: the device answers RST beyond it, never fails. */
    rsts = responses = others = 0;
    lo = next_gport;
    t = now();
    for (int burst = 0; burst < 36 && ok; burst++) {
        tx_begin();
        for (int i = 0; i < 32; i++) vq_add(&txq, tx_pkt(mk(next_gport++, ECHO_PORT, OP_REQUEST), NULL, 0, 0));
        ok = tx_end();
        drain(lo, next_gport, 0.01, &rsts, &responses, &others);
    }
    uint32_t hi = next_gport;
    drain(lo, hi, 1, &rsts, &responses, &others);
    info("vsock: %u REQUESTs to the echo listener: %d RESPONSE, %d RST in %.2f s", hi - lo, responses, rsts, now() - t);
    ok = ok && (responses > 0 && responses <= 1024 && responses + rsts == (int)(hi - lo) ? 1
        : (WHY("%d RESPONSEs and %d RSTs for %u REQUESTs", responses, rsts, hi - lo), 0));
    /* While every connection is taken, one more is refused; then we close them all. */
    for (uint32_t g = lo; g < hi; g += 32) {
        tx_begin();
        for (uint32_t i = g; i < g + 32 && i < hi; i++) vq_add(&txq, tx_pkt(mk(i, ECHO_PORT, OP_RST), NULL, 0, 0));
        if (!tx_end()) ok = 0;
    }
    drain(lo, hi, 0.2, NULL, NULL, NULL);
    check("vsock-connection-limit", ok && echo_works());
}

static void reset_checks(void)
{
    /* Connections open and bytes in flight both ways, then a reset: the host ends must go, the device must come back. */
    int ok = 1;
    for (int i = 0; i < 4 && ok; i++) {
        uint32_t g = next_gport++;
        ok = vconnect(g, i % 2 ? SINK_PORT : ECHO_PORT, 65536);
        struct hdr w = mk(g, i % 2 ? SINK_PORT : ECHO_PORT, OP_RW);
        w.len = 100;
        ok = ok && send1(w, dma_page(&mem, P_DATA), 100);
    }
    rawdev_reset(&dev);
    up = 0;
    check("vsock-reset-mid-traffic", ok && setup(1) == 0 && echo_works());
    /* A reset in the middle of a set-up, twice, and a queue made not ready again. */
    rawdev_negotiate(&dev, F_VERSION_1);
    vq_setup(&dev, &rxq, RXQ, QSIZE, dma_page(&mem, 0), mem.pa[0]);
    rawdev_reset(&dev);
    rawdev_negotiate(&dev, F_VERSION_1);
    vq_setup(&dev, &txq, TXQ, QSIZE, dma_page(&mem, 1), mem.pa[1]);
    dev_wr(&dev, MMIO_QUEUE_READY, 0);
    check("vsock-reset-mid-setup", setup(1) == 0 && echo_works());
}

/* The host connects to us through the hybrid socket; we answer as the guest end: RESPONSE, then echo with a prefix. */
static void serve_host(void)
{
    static struct rxpkt p;
    marker("vsock-serving %d", SERVE_PORT);
    double deadline = now() + 30;
    uint32_t hport = 0;
    int served = 0, closed = 0;
    uint32_t fwd = 0;
    while (now() < deadline && !closed) {
        if (!rx_get(&p, deadline - now())) break;
        if (p.h.dst_port != SERVE_PORT || p.h.src_cid != HOST_CID) { stray(&p); continue; }
        if (p.h.op == OP_REQUEST) {
            if (hport) { send1(mk(SERVE_PORT, p.h.src_port, OP_RST), NULL, 0); continue; }
            hport = p.h.src_port;
            send1(mk(SERVE_PORT, hport, OP_RESPONSE), NULL, 0);
            info("vsock: the host connected from port %u", hport);
        } else if (p.h.src_port != hport) {
            continue;
        } else if (p.h.op == OP_RW) {
            fwd += p.n;
            char reply[200];
            int n = snprintf(reply, sizeof reply, "guest-echo:%.*s", (int)(p.n < 150 ? p.n : 150), (char *)p.data);
            struct hdr w = mk(SERVE_PORT, hport, OP_RW);
            w.len = n;
            w.fwd_cnt = fwd;
            if (send1(w, reply, n)) served++;
        } else if (p.h.op == OP_SHUTDOWN || p.h.op == OP_RST) {
            if (p.h.op == OP_SHUTDOWN) send1(mk(SERVE_PORT, hport, OP_RST), NULL, 0);
            closed = 1;
        }
    }
    check("vsock-host-connects-in", hport && served ? 1 : (WHY(hport ? "no data from the host" : "the host never connected"), 0));
}

/* The kernel's driver again, and a kernel socket to the host's echo listener. */
static void kernel_checks(void)
{
    int ok = check("vsock-give-back", rawdev_give_back(&dev));
    int s = -1;
    for (int attempt = 0; ok && attempt < 50; attempt++) {
        s = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (s < 0) { WHY("socket(AF_VSOCK): %s", strerror(errno)); ok = 0; break; }
        struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = HOST_CID, .svm_port = ECHO_PORT };
        if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) break;
        WHY("connect to the host's port %d: %s", ECHO_PORT, strerror(errno));
        close(s);
        s = -1;
        usleep(100000);
    }
    char got[64] = "";
    if (s >= 0) {
        struct timeval tv = { 5, 0 };
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        const char *msg = "hostile-kernel-echo";
        int n = 0;
        if (write(s, msg, strlen(msg)) == (ssize_t)strlen(msg))
            while (n < (int)strlen(msg)) { ssize_t r = read(s, got + n, sizeof got - 1 - n); if (r <= 0) break; n += r; }
        ok = strcmp(got, msg) == 0 ? 1 : (WHY("echo '%s'", got), 0);
        close(s);
    } else ok = 0;
    check("vsock-kernel-after-attack", ok);
}

void vsock_phase(void)
{
    double t = now();
    int memfd = open("/dev/mem", O_RDWR | O_SYNC);
    int ok = memfd >= 0 ? 1 : (WHY("/dev/mem: %s", strerror(errno)), 0);
    ok = ok && rawdev_find(&dev, 19, "vmw_vsock_virtio_transport", memfd) == 0;
    ok = ok && dma_alloc(&mem, P_TOTAL) == 0;
    ok = ok && rawdev_take(&dev) == 0;
    ok = ok && setup(1) == 0;
    if (ok) info("vsock: device %s at 0x%llx", dev.name, (unsigned long long)dev.base);
    check("vsock-setup", ok && echo_works());
    if (ok) {
        bad_length_checks();
        bad_address_checks();
        shutdown_and_credit_checks();
        chain_checks();
        rx_checks();
        transport_checks();
        flood_checks();
        reset_checks();
        serve_host();
        info("vsock: strays: %ld RST, %ld RESPONSE, %ld other", stray_rst, stray_response, stray_other);
    }
    if (dev.unbound) kernel_checks();
    if (memfd >= 0) close(memfd);
    info("phase 4 (raw vsock) took %.1f s", now() - t);
}
