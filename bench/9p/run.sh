#!/usr/bin/env bash
# 9p benchmark: `make bench-9p` builds everything first, then runs this.
# Usage: [P9BENCH_STAT_FILES=N] bench/9p/run.sh [boots per VMM] [runs per boot] [--confinement-only]
#   (defaults 2,000 files, 1 boot and 3 runs; on nested PVM hosts one lstat through 9p costs ~160 ms
#   of guest kernel time, so each run of 2,000 takes about 5 minutes; --confinement-only boots ours
#   confined and unconfined alternately and skips QEMU)
# Reference: QEMU's virtio-9p-device on the same directory, same kernel, same mount options. Both
# boot the benchmark-only "qemu-reference" kernel variant (stock QEMU cannot boot the product
# kernel on nested PVM hosts: see bench/boot/run.sh and kernel-config/README.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work="$root/out/bench-9p"
mkdir -p "$work"
kdir=$("$root/kernel-config/build-kernel.sh" --variant qemu-reference)
gcc -O2 -static -Wall -DRUNS="${2:-3}" -DSTAT_FILES="${P9BENCH_STAT_FILES:-2000}" -o "$work/p9bench" "$root/bench/9p/p9bench.c"
cat > "$work/p9bench.spec" <<SPEC
dir  /dev 0755 0 0
nod  /dev/console 0600 0 0 c 5 1
dir  /mnt 0755 0 0
file /init p9bench 0755 0 0
SPEC
"$root/out/tools/rkt-kvm-mkinitramfs" --spec "$work/p9bench.spec" -o "$work/p9bench.cpio"
exec dotnet run -c Release --project "$root/bench/9p" -- \
    --vmm "$root/out/vmm/rkt-kvm-vmm" --kernel "$kdir/vmlinux" --initrd "$work/p9bench.cpio" \
    --work "$work" --boots "${1:-1}" --stat-files "${P9BENCH_STAT_FILES:-2000}" ${3:+"$3"}
