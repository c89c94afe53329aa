/*
 * The raw virtio-mmio driver pieces the hostile guest's attacks share (see hostile.h): the device
 * is driven from user space through /dev/mem, with rings and buffers in locked pages.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hostile.h"

/* Plain 32-bit moves: KVM emulates each access to the window, and a compiler's fused
 * compare-with-memory is one more instruction for its emulator to know. */
uint32_t mmio_read(volatile uint32_t *p)
{
    uint32_t v;
    __asm__ volatile("movl %1, %0" : "=r"(v) : "m"(*p) : "memory");
    return v;
}
void mmio_write(volatile uint32_t *p, uint32_t v) { __asm__ volatile("movl %0, %1" : : "r"(v), "m"(*p) : "memory"); }

void put16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
void put32(uint8_t *p, uint32_t v) { put16(p, v); put16(p + 2, v >> 16); }
void put64(uint8_t *p, uint64_t v) { put32(p, v); put32(p + 4, v >> 32); }
uint16_t get16(const volatile uint8_t *p) { return p[0] | p[1] << 8; }
uint32_t get32(const volatile uint8_t *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }
uint64_t get64(const volatile uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

static uint64_t phys(int pagemap, void *va)
{
    uint64_t e;
    if (pread(pagemap, &e, 8, (off_t)((uintptr_t)va / PAGE) * 8) != 8) return 0;
    if (!(e >> 63)) return 0;
    uint64_t pfn = e & ((1ULL << 55) - 1);
    return pfn ? pfn * PAGE + ((uintptr_t)va & (PAGE - 1)) : 0;
}

int dma_alloc(struct dma *d, size_t pages)
{
    if (pages > sizeof d->pa / sizeof d->pa[0]) { WHY("%zu pages are too many", pages); return -1; }
    /* The device reads our rings by physical address: locked pages must not be moved by compaction either. */
    sysfs_write("/proc/sys/vm/compact_unevictable_allowed", "0");
    d->va = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);
    if (d->va == MAP_FAILED) { d->va = NULL; WHY("mmap of %zu pages: %s", pages, strerror(errno)); return -1; }
    memset(d->va, 0, pages * PAGE);
    d->pages = pages;
    int pagemap = open("/proc/self/pagemap", O_RDONLY);
    if (pagemap < 0) { WHY("/proc/self/pagemap: %s", strerror(errno)); return -1; }
    int ok = 1;
    for (size_t i = 0; i < pages; i++) if (!(d->pa[i] = phys(pagemap, dma_page(d, i)))) ok = 0;
    close(pagemap);
    if (!ok) { WHY("pagemap gave no physical address"); return -1; }
    return 0;
}

int rawdev_find(struct rawdev *d, uint32_t device_id, const char *driver, int memfd)
{
    char cmdline[4096];
    memset(d, 0, sizeof *d);
    snprintf(d->driver, sizeof d->driver, "%s", driver);
    if (read_text("/proc/cmdline", cmdline, sizeof cmdline) < 0) { WHY("/proc/cmdline: %s", strerror(errno)); return -1; }
    for (char *p = strstr(cmdline, "virtio_mmio.device="); p && !d->base; p = strstr(p + 1, "virtio_mmio.device=")) {
        char *atsign = strchr(p, '@');
        if (!atsign) continue;
        uint64_t addr = strtoull(atsign + 1, NULL, 0);
        volatile uint32_t *r = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, (off_t)addr);
        if (r == MAP_FAILED) continue;
        if (mmio_read(r + MMIO_MAGIC / 4) == 0x74726976 && mmio_read(r + MMIO_VERSION / 4) == 2
            && mmio_read(r + MMIO_DEVICE_ID / 4) == device_id) {
            d->base = addr;
            d->regs = r;
        } else munmap((void *)r, PAGE);
    }
    if (!d->base) { WHY("no virtio device %u among the command line's virtio_mmio.device= entries", device_id); return -1; }
    char path[256];
    snprintf(path, sizeof path, "/sys/bus/virtio/drivers/%s", driver);
    DIR *dir = opendir(path);
    if (!dir) { WHY("%s: %s", path, strerror(errno)); return -1; }
    for (struct dirent *e; (e = readdir(dir));)
        if (strncmp(e->d_name, "virtio", 6) == 0) snprintf(d->name, sizeof d->name, "%.60s", e->d_name);
    closedir(dir);
    if (!d->name[0]) { WHY("the %s driver has no device bound", driver); return -1; }
    return 0;
}

int rawdev_take(struct rawdev *d)
{
    char path[256];
    snprintf(path, sizeof path, "/sys/bus/virtio/drivers/%s/unbind", d->driver);
    if (sysfs_write(path, d->name) < 0) { WHY("unbind %s from %s: %s", d->name, d->driver, strerror(errno)); return -1; }
    d->unbound = 1;
    return 0;
}

void rawdev_reset(struct rawdev *d)
{
    dev_wr(d, MMIO_STATUS, 0);
    dev_wr(d, MMIO_INTERRUPT_ACK, 3);
}

int rawdev_give_back(struct rawdev *d)
{
    if (!d->unbound) return 1;
    rawdev_reset(d);
    dev_wr(d, MMIO_STATUS, ST_ACK);
    char path[256];
    snprintf(path, sizeof path, "/sys/bus/virtio/drivers/%s/bind", d->driver);
    if (sysfs_write(path, d->name) < 0) { WHY("bind %s to %s: %s", d->name, d->driver, strerror(errno)); return 0; }
    d->unbound = 0;
    return 1;
}

uint64_t rawdev_device_features(struct rawdev *d)
{
    dev_wr(d, MMIO_DEVICE_FEATURES_SEL, 0);
    uint64_t lo = dev_rd(d, MMIO_DEVICE_FEATURES);
    dev_wr(d, MMIO_DEVICE_FEATURES_SEL, 1);
    return lo | (uint64_t)dev_rd(d, MMIO_DEVICE_FEATURES) << 32;
}

uint32_t rawdev_negotiate(struct rawdev *d, uint64_t features)
{
    rawdev_reset(d);
    dev_wr(d, MMIO_STATUS, ST_ACK);
    dev_wr(d, MMIO_STATUS, ST_ACK | ST_DRIVER);
    dev_wr(d, MMIO_DRIVER_FEATURES_SEL, 0);
    dev_wr(d, MMIO_DRIVER_FEATURES, (uint32_t)features);
    dev_wr(d, MMIO_DRIVER_FEATURES_SEL, 1);
    dev_wr(d, MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
    dev_wr(d, MMIO_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
    return dev_rd(d, MMIO_STATUS);
}

int vq_setup(struct rawdev *d, struct vq *q, unsigned index, unsigned size, uint8_t *page, uint64_t pa)
{
    memset(page, 0, PAGE);
    q->index = index;
    q->size = size;
    q->desc = (struct desc *)page;
    q->avail = (volatile uint16_t *)(page + 16 * size);
    q->used_off = (16 * size + 6 + 2 * size + 3) & ~(size_t)3;
    q->used = page + q->used_off;
    q->pa = pa;
    q->avail[0] = 1; /* VIRTQ_AVAIL_F_NO_INTERRUPT: we poll, and the kernel has no handler now */
    q->avail_idx = q->used_seen = 0;
    dev_wr(d, MMIO_QUEUE_SEL, index);
    dev_wr(d, MMIO_QUEUE_NUM, size);
    dev_wr(d, MMIO_QUEUE_DESC_LOW, (uint32_t)pa);
    dev_wr(d, MMIO_QUEUE_DESC_HIGH, (uint32_t)(pa >> 32));
    dev_wr(d, MMIO_QUEUE_DRIVER_LOW, (uint32_t)(pa + 16 * size));
    dev_wr(d, MMIO_QUEUE_DRIVER_HIGH, (uint32_t)((pa + 16 * size) >> 32));
    dev_wr(d, MMIO_QUEUE_DEVICE_LOW, (uint32_t)(pa + q->used_off));
    dev_wr(d, MMIO_QUEUE_DEVICE_HIGH, (uint32_t)((pa + q->used_off) >> 32));
    dev_wr(d, MMIO_QUEUE_READY, 1);
    return (int)dev_rd(d, MMIO_QUEUE_READY);
}

void vq_add(struct vq *q, uint16_t head)
{
    q->avail[2 + q->avail_idx % q->size] = head;
    __sync_synchronize();
    q->avail[1] = ++q->avail_idx;
    __sync_synchronize();
}

void vq_kick(struct rawdev *d, struct vq *q) { dev_wr(d, MMIO_QUEUE_NOTIFY, q->index); }

int vq_next_used(struct vq *q, uint32_t *id, uint32_t *len)
{
    __sync_synchronize();
    if (get16(q->used + 2) == q->used_seen) return 0;
    __sync_synchronize();
    const volatile uint8_t *e = q->used + 4 + 8 * (q->used_seen % q->size);
    *id = get32(e);
    *len = get32(e + 4);
    q->used_seen++;
    return 1;
}

int vq_drain(struct vq *q, double seconds, int *returned)
{
    double deadline = now() + seconds;
    uint32_t id, len;
    int n = 0;
    while (q->used_seen != q->avail_idx) {
        if (vq_next_used(q, &id, &len)) { n++; continue; }
        if (now() > deadline) break;
        usleep(200);
    }
    if (returned) *returned = n;
    return q->used_seen == q->avail_idx;
}
