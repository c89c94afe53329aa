#!/usr/bin/env bash
# Builds the benchmark image: a ~TARGET_BYTES, LAYERS-layer OCI image layout (gzip layers, ref name
# "bench") at WORK/oci from the files of installed Debian packages under /usr/lib, /usr/share and
# /usr/bin, picked deterministically (dpkg's file lists, sorted). Shared by bench/images and bench/fetch.
# Usage: bench/images/make-layout.sh WORK LAYERS TARGET_BYTES
set -euo pipefail
work=$1 layers=$2 target_bytes=$3

for tool in tar gzip sha256sum dpkg-query; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing: run \`make deps\`" >&2; exit 1; }
done

rm -rf "$work" && mkdir -p "$work"
# Regular files of installed packages in a fixed pseudo-random order (sort -R with a constant
# random source: the same order on every run, a realistic mix of small and large files across
# packages), until ~100 MB; split into LAYERS layers of about equal size. awk stops the pipe early: no pipefail.
set +o pipefail
dpkg-query -W -f='${Package}\n' | sort | xargs dpkg-query -L 2>/dev/null \
  | grep -E '^/usr/(lib|share|bin)/' | LC_ALL=C sort -u \
  | xargs -d '\n' stat --printf '%F\t%s\t%n\n' 2>/dev/null \
  | LC_ALL=C sort -R --random-source=<(yes rkt-kvm) \
  | awk -F'\t' -v max="$target_bytes" -v n="$layers" -v dir="$work" '
      BEGIN { layer = 0 }
      $1 != "regular file" { next }
      # A layer is closed once it holds its share: one large file cannot leave a layer empty.
      { if (sum + $2 > max) exit; if (cur > 0 && cur + $2 > max / n && layer < n - 1) { layer++; cur = 0 }
        sum += $2; cur += $2; print $3 > (dir "/layer-" layer ".list") }
      END { printf "selected %d bytes of package files\n", sum }'
set -o pipefail
[ -s "$work/layer-$((layers - 1)).list" ] || { echo "bench: could not select ~100 MB of package files" >&2; exit 1; }

# The layers are made by GNU tar + gzip (name-sorted, fixed owner; umoci 0.4.7's `insert`
# writes layers whose last file lacks its tar padding, which GNU tar itself rejects), then
# assembled into an OCI layout: blobs named by sha256, config with the diff_ids, manifest, index.
layout="$work/oci"
mkdir -p "$layout/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
blob() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$layout/blobs/sha256/$d"; echo "$d"; }
layer_json=() diff_ids=()
for i in $(seq 0 $((layers - 1))); do
  tar -cf "$work/layer.tar" --files-from="$work/layer-$i.list" --sort=name --owner=0 --group=0 --numeric-owner 2>/dev/null
  diff_ids+=("\"sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)\"")
  gzip -n -6 "$work/layer.tar"
  size=$(stat -c %s "$work/layer.tar.gz")
  layer_json+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$(blob "$work/layer.tar.gz")\",\"size\":$size}")
done
join() { local IFS=,; echo "$*"; }
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
  "$(join "${diff_ids[@]}")" > "$work/config.json"
config_size=$(stat -c %s "$work/config.json"); config=$(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
  "$config" "$config_size" "$(join "${layer_json[@]}")" > "$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json"); manifest=$(blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}' \
  "$manifest" "$manifest_size" > "$layout/index.json"

