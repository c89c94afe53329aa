#!/usr/bin/env bash
# Boot benchmark: `make bench` builds everything first, then runs this.
# Usage: bench/boot/run.sh [runs]   (default 3 boots per VMM)
#
# Both VMMs boot the benchmark-only "qemu-reference" kernel variant: the product kernel plus
# two patches (kernel-config/patches-qemu-reference/) without which stock QEMU cannot boot on
# nested PVM-based KVM hosts.  The first run after a kernel change builds it (~6 min, cached).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
kdir=$("$root/kernel-config/build-kernel.sh" --variant qemu-reference)
exec dotnet run -c Release --project "$root/bench/boot" -- \
    --vmm "$root/out/vmm/rkt-kvm-vmm" \
    --kernel "$kdir/vmlinux" \
    --initrd "$root/out/busybox-initrd.cpio" \
    --runs "${1:-3}"
