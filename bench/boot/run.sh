#!/usr/bin/env bash
# Boot benchmark: `make bench` builds everything first, then runs this.
# Usage: bench/boot/run.sh [runs]   (default 3 boots per VMM)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec dotnet run -c Release --project "$root/bench/boot" -- \
    --vmm "$root/out/vmm/rkt-kvm-vmm" \
    --kernel "$(cat "$root/out/kernel-dir")/vmlinux" \
    --initrd "$root/out/busybox-initrd.cpio" \
    --runs "${1:-3}"
