#!/usr/bin/env bash
# Pod benchmark: `make bench-pod` builds everything first, then runs this.
# Usage: bench/pod/run.sh [runs]   (default 3 pods, and 3 bare VMs as the reference)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec dotnet run -c Release --project "$root/bench/pod" -- \
    --cli "$root/out/cli/rkt-kvm" --stage1 "$root/out/stage1/stage1-kvm.aci" --busybox "$root/out/images/busybox.aci" \
    --vmm "$root/out/vmm/rkt-kvm-vmm" --kernel "$(cat "$root/out/kernel-dir")/vmlinux" --initrd "$root/out/agent-initrd.cpio" \
    --work "$root/out/bench-pod" --runs "${1:-3}"
