#!/usr/bin/env bash
# Network benchmark: `make bench-net` builds everything first, then runs this.
# Usage: bench/net/run.sh [boots per VMM] [MiB per direction] [round trips] [pod runs of each kind]
#   (defaults 1, 8, 1000 and 2; on nested PVM hosts the guest's TCP stack runs interpreted, so a
#   few MiB/s is what to expect: more MiB takes minutes per boot)
# Part 1, the data path: TCP host->guest, guest->host and a 1-byte round trip through our
# virtio-net against QEMU's virtio-net-device (vhost=off) on the same host tap, same kernel; the
# same figures over our vsock. Both VMMs boot the benchmark-only "qemu-reference" kernel variant
# (stock QEMU cannot boot the product kernel on nested PVM hosts: see kernel-config/README.md).
# The tap (rknb0, 10.213.0.1/24) is created in the host's namespace and deleted at the end: root.
# Part 2: `rkt-kvm run busybox --exec=/bin/true` with the default network against --net=none.
# Environment: NET_BENCH_OURS_NET=off skips our virtio-net (vsock and QEMU only).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work="$root/out/bench-net"
mkdir -p "$work"
kdir=$("$root/kernel-config/build-kernel.sh" --variant qemu-reference)
gcc -O2 -static -Wall -o "$work/netbench" "$root/bench/net/netbench.c"
cat > "$work/netbench.spec" <<SPEC
dir  /dev 0755 0 0
nod  /dev/console 0600 0 0 c 5 1
file /init netbench 0755 0 0
SPEC
"$root/out/tools/rkt-kvm-mkinitramfs" --spec "$work/netbench.spec" -o "$work/netbench.cpio"
exec dotnet run -c Release --project "$root/bench/net" -- \
    --vmm "$root/out/vmm/rkt-kvm-vmm" --kernel "$kdir/vmlinux" --initrd "$work/netbench.cpio" \
    --work "$work" --boots "${1:-1}" --mib "${2:-8}" --round-trips "${3:-1000}" \
    --cli "$root/out/cli/rkt-kvm" --stage1 "$root/out/stage1/stage1-kvm.aci" --busybox "$root/out/images/busybox.aci" \
    --pod-runs "${4:-2}" --ours-net "${NET_BENCH_OURS_NET:-on}"
