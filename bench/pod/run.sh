#!/usr/bin/env bash
# Pod benchmark: `make bench-pod` builds everything first, then runs this.
# Usage: bench/pod/run.sh [runs] [idle]   (default 3 warm and 3 cold pods, 10 idle sandboxes of each kind)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec dotnet run -c Release --project "$root/bench/pod" -- \
    --cli "$root/out/cli/rkt-kvm" --stage1 "$root/out/stage1/stage1-kvm.aci" --busybox "$root/out/images/busybox.aci" \
    --work "$root/out/bench-pod" --runs "${1:-3}" --idle "${2:-10}"
