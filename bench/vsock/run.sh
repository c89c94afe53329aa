#!/usr/bin/env bash
# vsock benchmark: `make bench-vsock` builds everything first, then runs this.
# Usage: bench/vsock/run.sh [MiB per direction] [unary calls] [boots: confined/unconfined pairs]   (defaults 8 and 200: streaming into
# the guest runs well under 1 MiB/s on nested PVM hosts, so more takes many minutes there)
# References: the same agent binary serving on a host Unix socket (gRPC with no VM in the path),
# and a static C echo server as the guest's init (our vsock and the guest kernel without .NET).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work="$root/out/bench-vsock"
mkdir -p "$work"
gcc -O2 -static -o "$work/raw-echo" "$root/bench/vsock/raw-echo.c"
cat > "$work/raw-echo.spec" <<SPEC
dir  /dev 0755 0 0
nod  /dev/console 0600 0 0 c 5 1
file /init raw-echo 0755 0 0
SPEC
"$root/out/tools/rkt-kvm-mkinitramfs" --spec "$work/raw-echo.spec" -o "$work/raw-echo.cpio"
exec dotnet run -c Release --project "$root/bench/vsock" -- \
    --vmm "$root/out/vmm/rkt-kvm-vmm" \
    --kernel "$(cat "$root/out/kernel-dir")/vmlinux" \
    --initrd "$root/out/agent-initrd.cpio" \
    --raw-initrd "$work/raw-echo.cpio" \
    --agent "$root/out/agent/rkt-kvm-agent" \
    --mib "${1:-8}" --calls "${2:-200}" --boots "${3:-1}"
