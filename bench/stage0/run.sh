#!/usr/bin/env bash
# stage0 benchmark: `make bench-stage0` builds rkt-kvm first, then runs this.
# Usage: bench/stage0/run.sh [runs]   (default 10 pods per layout)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec dotnet run -c Release --project "$root/bench/stage0" -- \
    --cli "$root/out/cli/rkt-kvm" --busybox "$root/out/images/busybox.aci" --work "$root/out/bench-stage0" --runs "${1:-10}"
