#!/usr/bin/env bash
# Terminal benchmark: `make bench-terminal` builds everything first, then runs this.
# Usage: bench/terminal/run.sh [keystrokes] [KiB of output]   (defaults 50 and 256)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec dotnet run -c Release --project "$root/bench/terminal" -- \
    --cli "$root/out/cli/rkt-kvm" --stage1 "$root/out/stage1/stage1-kvm.aci" --busybox "$root/out/images/busybox.aci" \
    --work "$root/out/bench-terminal" --keys "${1:-50}" --kib "${2:-256}"
