#!/usr/bin/env bash
# seccomp benchmark: `make bench-seccomp` runs this.
# Usage: bench/seccomp/run.sh [calls per repetition]   (default 200000; best of 7 repetitions)
# Times system calls under the VMM's own filters, built by the VMM's code (VmmSyscallPolicy and
# ThreadSyscallPolicy) and stacked as a running VMM stacks them, against the same calls with no
# filter, in one C process per stack (cost.c). Then it says how many filtered calls per vsock round
# trip or 9p request it would take for the filters to cost 2% of what bench/vsock and bench/9p
# measure on this host. No VM, no root.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work="$root/out/bench-seccomp"
mkdir -p "$work"
gcc -O2 -Wall -o "$work/cost" "$root/bench/seccomp/cost.c"
exec dotnet run -c Release --project "$root/bench/seccomp" -- --cost "$work/cost" --work "$work" --calls "${1:-200000}"
