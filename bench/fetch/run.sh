#!/usr/bin/env bash
# Registry fetch benchmark: `make bench-fetch` (or `make bench`) runs this.
# Usage: bench/fetch/run.sh [runs]   (default 3 timed runs of each step; the best is reported)
#
# Pushes a ~100 MB, 5-layer OCI image (bench/images/make-layout.sh) to a local docker-registry on
# 127.0.0.1, then times, in one run: our first pull into an empty store (`rkt-kvm fetch`:
# download, digest and size checks, gunzip and every tar entry checked, fsync, commit) against
# `skopeo copy` of the same image into an OCI layout (download and digest checks only: it neither
# decompresses nor looks inside the layers), and our second pull of the same tag (the registry
# is asked for the manifest; no blob is downloaded).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${RKT_KVM_BENCH_DIR:-${TMPDIR:-/tmp}/rkt-kvm-bench-fetch}
runs=${1:-3}
cli=$root/out/cli/rkt-kvm
for tool in docker-registry skopeo; do
  command -v "$tool" >/dev/null || { echo "bench/fetch: $tool is missing: run \`make deps\`" >&2; exit 1; }
done
[ -x "$cli" ] || { echo "bench/fetch: $cli is missing: run \`make cli\`" >&2; exit 1; }

"$root/bench/images/make-layout.sh" "$work" 5 $((100 * 1000 * 1000))
layout="$work/oci"

# A port nothing listens on (no connection succeeds).
port=$((20000 + RANDOM % 40000))
while (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do port=$((20000 + RANDOM % 40000)); done
mkdir -p "$work/registry"
cat > "$work/registry/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/storage
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$work/registry/config.yml" > "$work/registry/log" 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
image=127.0.0.1:$port/bench/image:1
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:bench" "docker://$image"

now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
best() { printf '%s\n' "$@" | sort -g | head -1; }
ours=() ref=() cached=()
for _ in $(seq "$runs"); do
  rm -rf "$work/data" "$work/ref"
  t0=$(now); "$cli" --dir="$work/data" --insecure-options=image,http fetch --quiet "docker://$image" > /dev/null; t1=$(now)
  ours+=("$(minus "$t1" "$t0")")
  t0=$(now); "$cli" --dir="$work/data" --insecure-options=image,http fetch --quiet "docker://$image" > /dev/null; t1=$(now)
  cached+=("$(minus "$t1" "$t0")")
  t0=$(now); skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$work/ref:bench"; t1=$(now)
  ref+=("$(minus "$t1" "$t0")")
done
o=$(best "${ours[@]}") r=$(best "${ref[@]}") c=$(best "${cached[@]}")
echo "image: $(du -sb "$layout/blobs" | cut -f1) bytes of blobs (5 gzip layers of ~100 MB of files); best of $runs runs"
printf 'RESULT fetch_first_pull ours=%.2fs ref=%.2fs ratio=%.2f\n' "$o" "$r" "$(awk -v a="$o" -v b="$r" 'BEGIN { print a / b }')"
printf 'RESULT fetch_cached_pull ours=%.2fs\n' "$c"
