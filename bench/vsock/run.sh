#!/usr/bin/env bash
# vsock benchmark: `make bench-vsock` builds everything first, then runs this.
# Usage: bench/vsock/run.sh [MiB per direction] [unary calls]   (defaults 64 and 500)
# The reference is the same agent binary serving on a host Unix socket: gRPC with no VM in the path.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec dotnet run -c Release --project "$root/bench/vsock" -- \
    --vmm "$root/out/vmm/rkt-kvm-vmm" \
    --kernel "$(cat "$root/out/kernel-dir")/vmlinux" \
    --initrd "$root/out/agent-initrd.cpio" \
    --agent "$root/out/agent/rkt-kvm-agent" \
    --mib "${1:-64}" --calls "${2:-500}"
