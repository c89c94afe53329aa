#!/usr/bin/env bash
# Coverage-guided fuzzing: `make fuzz` runs this (fuzz/README.md).
# Usage: fuzz/run.sh [TARGET...]   (default: every target; FUZZ_SECONDS each, default 90)
#
# Publishes the harness (fuzz/Rkt.Kvm.Fuzz), instruments our assemblies in the published copy
# with sharpfuzz, then runs each target under afl-fuzz, one after another at nice 19, seeded
# with fuzz/corpus/<target>/ and the regression inputs in fuzz/crashes/<target>/. Everything goes
# to out/fuzz/: the build (bin/), per target the afl-fuzz output (<target>/findings/default/:
# crashes/, hangs/, queue/, fuzzer_stats) and its log. Prints one RESULT line per target (edges
# found, execs per second) and fails, naming the inputs, if any target found a crash or a hang.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/out/fuzz
seconds=${FUZZ_SECONDS:-90}
dotnet=${DOTNET:-dotnet}
# Only our own code is instrumented, so "edges" count our code. In the VMM, the code the targets
# drive (the devices assembly's Rkt.Kvm.Vmm.Devices.* namespaces, and boot in Rkt.Kvm.Vmm), not the
# event loop (Rkt.Kvm.Vmm.Host), guest memory's accessors (Rkt.Kvm.Vmm.Memory) or the KVM layer: the
# loop thread's wake-ups, fd finalizers and the harness's own guest-memory writes (on its thread,
# while the device threads finish) would add edges that vary from run to run.
instrument=(
  "Rkt.Kvm.Vmm.Devices.dll Rkt.Kvm.Vmm.Devices"
  "Rkt.Kvm.Vmm.dll Rkt.Kvm.Vmm.Boot"
  "Rkt.Kvm.Images.dll"
  "Rkt.Kvm.Stage1.dll"
)

for tool in afl-fuzz "$dotnet"; do
  command -v "$tool" >/dev/null || { echo "fuzz: $tool is missing: run \`make fuzz\` (it installs afl++)" >&2; exit 1; }
done

cd "$root"
echo "== building and instrumenting the harness (out/fuzz/bin)"
rm -rf "$out/bin" "$out/tmp"
mkdir -p "$out/tmp"
"$dotnet" publish fuzz/Rkt.Kvm.Fuzz -c Release -o "$out/bin" --nologo -v quiet
"$dotnet" tool restore >/dev/null

all=$("$dotnet" "$out/bin/Rkt.Kvm.Fuzz.dll" list | awk '{print $1}')
targets=("$@")
[ ${#targets[@]} -gt 0 ] || read -r -d '' -a targets <<< "$all" || true
for t in "${targets[@]}"; do
  grep -qx -- "$t" <<< "$all" || { echo "fuzz: unknown target $t (targets: $(echo $all))" >&2; exit 1; }
done
for spec in "${instrument[@]}"; do
  read -r dll prefixes <<< "$spec"
  # shellcheck disable=SC2086 # the prefixes are words
  "$dotnet" tool run sharpfuzz "$out/bin/$dll" $prefixes >/dev/null
done

# afl-fuzz runs `dotnet` (not instrumented itself: the .NET code reports coverage through
# SharpFuzz's fork-server protocol), with the 64 KiB map SharpFuzz writes.
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_MAP_SIZE=65536
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_FAST_CAL=1 AFL_HANG_TMOUT=10000
# The targets' scratch directories (their absolute paths go into the tar-extract dictionary).
export RKT_KVM_FUZZ_DIR=$out/tmp TMPDIR=$out/tmp
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

stat_of() { awk -F' *: *' -v k="$1" '$1 == k {print $2}' "$2"; }

results=()
failed=()
for t in "${targets[@]}"; do
  work=$out/$t
  rm -rf "$work" && mkdir -p "$work/in"
  for f in fuzz/corpus/"$t"/* fuzz/crashes/"$t"/*; do
    [ -f "$f" ] && cp "$f" "$work/in/$(basename "$(dirname "$(dirname "$f")")")-$(basename "$f")"
  done
  dict=()
  if [ -f "fuzz/dict/$t.dict" ]; then cp "fuzz/dict/$t.dict" "$work/dict"; dict=(-x "$work/dict"); fi
  if [ "$t" = tar-extract ]; then
    # Absolute paths outside the extraction target, for symlinks and hard links to aim at.
    n=0
    for p in "$RKT_KVM_FUZZ_DIR/tar-extract/secret" "$RKT_KVM_FUZZ_DIR/tar-extract" "$RKT_KVM_FUZZ_DIR/tar-extract/x"; do
      printf 'outside_%d="%s"\n' $((n += 1)) "$p" >> "$work/dict"
    done
    dict=(-x "$work/dict")
  fi
  echo "== fuzz-$t: ${seconds}s (log: out/fuzz/$t/afl.log)"
  status=0
  timeout $((seconds + 300)) nice -n 19 afl-fuzz -V "$seconds" -i "$work/in" -o "$work/findings" -t 5000 -m none "${dict[@]}" \
    -- "$dotnet" "$out/bin/Rkt.Kvm.Fuzz.dll" "$t" > "$work/afl.log" 2>&1 || status=$?
  stats=$work/findings/default/fuzzer_stats
  if [ $status -ne 0 ] || [ ! -f "$stats" ]; then
    echo "fuzz-$t: afl-fuzz failed (exit $status); the end of out/fuzz/$t/afl.log:" >&2
    tail -n 25 "$work/afl.log" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' >&2
    failed+=("$t: afl-fuzz failed, see out/fuzz/$t/afl.log")
    continue
  fi
  edges=$(stat_of edges_found "$stats")
  execs=$(stat_of execs_done "$stats")
  runtime=$(stat_of run_time "$stats")
  eps=$(( execs / (runtime > 0 ? runtime : 1) ))
  crashes=$(find "$work/findings/default/crashes" -name 'id:*' | wc -l)
  hangs=$(find "$work/findings/default/hangs" -name 'id:*' | wc -l)
  line="RESULT fuzz-$t ours=${edges}edges execs_per_sec=$eps execs=$execs corpus=$(stat_of corpus_count "$stats") stability=$(stat_of stability "$stats") crashes=$crashes hangs=$hangs"
  echo "$line"
  results+=("$line")
  if [ "$crashes" -gt 0 ] || [ "$hangs" -gt 0 ]; then
    failed+=("$t: $crashes crashes in out/fuzz/$t/findings/default/crashes/, $hangs hangs in out/fuzz/$t/findings/default/hangs/")
    # The first crash, replayed, says what was thrown.
    first=$(find "$work/findings/default/crashes" -name 'id:*' | sort | head -n 1)
    if [ -n "$first" ]; then
      echo "fuzz-$t: replaying $first" >&2
      "$dotnet" "$out/bin/Rkt.Kvm.Fuzz.dll" run "$t" "$first" 2>&1 | head -n 30 >&2 || true
    fi
  fi
done
rm -rf "$out/tmp"

echo "== summary"
printf '%s\n' "${results[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED %s\n' "${failed[@]}" >&2
  echo "Reproduce one with: dotnet run --project fuzz/Rkt.Kvm.Fuzz -- run TARGET FILE; once fixed, keep it as fuzz/crashes/TARGET/<name>." >&2
  exit 1
fi
