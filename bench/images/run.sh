#!/usr/bin/env bash
# Image benchmark: `make bench-images` (or `make bench`) runs this.
# Usage: bench/images/run.sh [runs]   (default 5 timed runs of each step; the best is reported)
#
# Builds a ~100 MB, 4-layer OCI image (gzip layers) from the files of installed Debian
# packages under /usr/lib, /usr/share and /usr/bin, picked deterministically (dpkg's file lists,
# sorted), then times, in one run: our import, our first render, GNU `tar -xzf` of the same
# layers in order (the same gzip decompression), and our second (cached) render.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${RKT_KVM_BENCH_DIR:-${TMPDIR:-/tmp}/rkt-kvm-bench-images}
target_bytes=$((100 * 1000 * 1000))
layers=4

"$root/bench/images/make-layout.sh" "$work" "$layers" "$target_bytes"
layout="$work/oci"

exec dotnet run -c Release --project "$root/bench/images" -- --layout "$layout" --ref bench --work "$work" --runs "${1:-5}"
