/*
 * Shared by the hostile guest's parts (tests/guest/hostile.c: 9p and main; hostile-vsock.c;
 * hostile-net.c): result lines, small file helpers, and a raw virtio-mmio driver's pieces
 * (hostile-virtio.c): registers through /dev/mem, split virtqueues in locked pages whose physical
 * addresses come from /proc/self/pagemap.
 */
#ifndef RKT_KVM_HOSTILE_H
#define RKT_KVM_HOSTILE_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ results (hostile.c) */

extern char why[512];
#define WHY(...) snprintf(why, sizeof why, __VA_ARGS__)
double now(void);
void info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "hostile ok NAME" or "hostile FAIL NAME: why"; returns ok. */
int check(const char *name, int ok);
/* A line the host waits for: "rkt-kvm-guest: hostile MARKER". */
void marker(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int read_text(const char *p, char *buf, size_t size);
int sysfs_write(const char *path, const char *text);
/* The value of `key=` on the kernel command line (empty when absent). */
void cmdline_value(const char *key, char *out, size_t size);

void vsock_phase(void);
void net_phase(void);

/* ------------------------------------------------------------------ virtio-mmio (hostile-virtio.c) */

/* virtio-mmio version 2 registers and the bits used here (virtio 1.x, 4.2.2). */
enum {
    MMIO_MAGIC = 0x000, MMIO_VERSION = 0x004, MMIO_DEVICE_ID = 0x008, MMIO_DEVICE_FEATURES = 0x010,
    MMIO_DEVICE_FEATURES_SEL = 0x014, MMIO_DRIVER_FEATURES = 0x020, MMIO_DRIVER_FEATURES_SEL = 0x024,
    MMIO_QUEUE_SEL = 0x030, MMIO_QUEUE_NUM_MAX = 0x034, MMIO_QUEUE_NUM = 0x038, MMIO_QUEUE_READY = 0x044,
    MMIO_QUEUE_NOTIFY = 0x050, MMIO_INTERRUPT_STATUS = 0x060, MMIO_INTERRUPT_ACK = 0x064, MMIO_STATUS = 0x070,
    MMIO_QUEUE_DESC_LOW = 0x080, MMIO_QUEUE_DESC_HIGH = 0x084, MMIO_QUEUE_DRIVER_LOW = 0x090,
    MMIO_QUEUE_DRIVER_HIGH = 0x094, MMIO_QUEUE_DEVICE_LOW = 0x0a0, MMIO_QUEUE_DEVICE_HIGH = 0x0a4,
    MMIO_CONFIG = 0x100,
};
enum { ST_ACK = 1, ST_DRIVER = 2, ST_DRIVER_OK = 4, ST_FEATURES_OK = 8, ST_NEEDS_RESET = 64 };
enum { DESC_NEXT = 1, DESC_WRITE = 2, DESC_INDIRECT = 4 };
#define PAGE 4096
#define F_VERSION_1 (1ULL << 32)
#define F_INDIRECT_DESC (1ULL << 28)

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

uint32_t mmio_read(volatile uint32_t *p);
void mmio_write(volatile uint32_t *p, uint32_t v);

void put16(uint8_t *p, uint16_t v);
void put32(uint8_t *p, uint32_t v);
void put64(uint8_t *p, uint64_t v);
uint16_t get16(const volatile uint8_t *p);
uint32_t get32(const volatile uint8_t *p);
uint64_t get64(const volatile uint8_t *p);

/* Locked, pre-touched pages and their physical addresses (each page on its own: not contiguous). */
struct dma { uint8_t *va; uint64_t pa[256]; size_t pages; };
int dma_alloc(struct dma *d, size_t pages);
static inline uint8_t *dma_page(struct dma *d, size_t i) { return d->va + i * PAGE; }

/* A device taken from its kernel driver. */
struct rawdev {
    volatile uint32_t *regs;
    uint64_t base;
    char name[64];          /* virtioN in sysfs */
    char driver[64];        /* its driver's name in /sys/bus/virtio/drivers */
    int unbound;
};
static inline uint32_t dev_rd(struct rawdev *d, unsigned off) { return mmio_read(d->regs + off / 4); }
static inline void dev_wr(struct rawdev *d, unsigned off, uint32_t v) { mmio_write(d->regs + off / 4, v); }

/* Finds the device with `device_id` among the command line's virtio_mmio.device= entries and maps its window. */
int rawdev_find(struct rawdev *d, uint32_t device_id, const char *driver, int memfd);
/* Unbinds the kernel's driver (0, or -1 with `why`). */
int rawdev_take(struct rawdev *d);
/* Resets the device and binds the kernel's driver again (1 when bound). */
int rawdev_give_back(struct rawdev *d);
/* Reset, ACK|DRIVER, offer `features`: returns the status after FEATURES_OK was asked for. */
uint32_t rawdev_negotiate(struct rawdev *d, uint64_t features);
uint64_t rawdev_device_features(struct rawdev *d);
void rawdev_reset(struct rawdev *d);

/* A split virtqueue in one page: descriptors, available ring, used ring (size <= 128). */
struct vq {
    unsigned index, size;
    struct desc *desc;
    volatile uint16_t *avail;   /* flags, idx, ring[size], used_event */
    volatile uint8_t *used;     /* flags[2], idx[2], ring[size] of {id[4], len[4]}, avail_event[2] */
    uint64_t pa, used_off;
    uint16_t avail_idx, used_seen;
};
/* Lays the queue out in `page` (physical `pa`) and makes it ready; returns QueueReady as read back. */
int vq_setup(struct rawdev *d, struct vq *q, unsigned index, unsigned size, uint8_t *page, uint64_t pa);
/* Puts `head` on the available ring (published at once). */
void vq_add(struct vq *q, uint16_t head);
void vq_kick(struct rawdev *d, struct vq *q);
/* The next used element: 1 with *id and *len, or 0 when none is new. */
int vq_next_used(struct vq *q, uint32_t *id, uint32_t *len);
/* Waits until every chain made available came back: 1, or 0 after `seconds`. */
int vq_drain(struct vq *q, double seconds, int *returned);
static inline void set_desc(struct vq *q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    q->desc[i] = (struct desc){ addr, len, flags, next };
}
/* The next descriptor of a burst, round the table from *next: its index. */
static inline unsigned vq_put(struct vq *q, unsigned *next, uint64_t addr, uint32_t len, uint16_t flags)
{
    unsigned i = (*next)++ % q->size;
    set_desc(q, i, addr, len, flags, 0);
    return i;
}
/* Chains descriptor b after a. */
static inline void vq_link(struct vq *q, unsigned a, unsigned b)
{
    q->desc[a].flags |= DESC_NEXT;
    q->desc[a].next = (uint16_t)b;
}

#endif
