#!/usr/bin/env bash
# Pod soak (`make soak`, not part of `make test`): PODS pods started and removed, BATCH at a time,
# through rkt-kvm, with kills sprinkled in (each batch: one stage1 run killed while its agent boots,
# one rkt-kvm killed while its pod runs). After each batch `rkt-kvm gc` runs, and the host is
# measured. The counts come from the host itself, not from rkt-kvm's records: processes, open
# file handles, available memory, mounts under the data dir, runtime directories, pod directories,
# pod cgroups (rkt-kvm-<uuid>, every hierarchy), and what pod networks hold: network namespaces,
# veths, default-network leases, NAT rules.
# Growth from the first batch to the last should be zero.
# Usage: tests/soak/pods.sh [PODS=50] [BATCH=5]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
pods=${1:-50} batch=${2:-5}
cli="$root/out/cli/rkt-kvm"
work=$(mktemp -d /tmp/rkt-kvm-soak.XXXXXX)
data="$work/data"
export RKT_KVM_STAGE1="$root/out/stage1/stage1-kvm.aci"
export RKT_KVM_RUNTIME_DIR="$work/run"
rk() { "$cli" --dir="$data" "$@"; }

measure() {
    local procs fds mem mounts runtime poddirs netns veths leases nat cgroups
    procs=$(ls -d /proc/[0-9]* | wc -l)
    fds=$(cut -f1 /proc/sys/fs/file-nr)
    mem=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
    mounts=$(grep -c " $work/" /proc/self/mountinfo || true)
    runtime=$( (ls -A "$RKT_KVM_RUNTIME_DIR" 2>/dev/null || true) | wc -l)
    poddirs=$( (ls -d "$data"/pods/*/* 2>/dev/null || true) | wc -l)
    netns=$( (ls /var/run/netns 2>/dev/null || true) | grep -c '^cni-' || true)
    veths=$(ip -o link show type veth | wc -l)
    leases=$( (ls /var/lib/cni/networks/default 2>/dev/null || true) | grep -c '^[0-9]' || true)
    nat=$(iptables-save -t nat | grep -c '^-A' || true)
    cgroups=$(find /sys/fs/cgroup -maxdepth 8 -type d -name 'rkt-kvm-*' 2>/dev/null | wc -l)
    echo "$procs $fds $mem $mounts $runtime $poddirs $netns $veths $leases $nat $cgroups"
}

# The pid of the process running program $1 whose command line names pod $2.
pid_of() {
    for p in /proc/[0-9]*; do
        [[ "$(readlink "$p/exe" 2>/dev/null)" == */$1 ]] || continue
        tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q -- "$2" && { basename "$p"; return 0; }
    done
    return 1
}

rk image import "$root/out/images/busybox.aci" >/dev/null
rk gc --grace-period=0s >/dev/null
read -r p0 f0 m0 mo0 r0 d0 n0 v0 l0 x0 c0 < <(measure)
echo "soak: $pods pods, $batch at a time, in $work"
echo "batch procs fds mem_avail_kib mounts runtime_dirs pod_dirs netns veths leases nat_rules pod_cgroups seconds"
started=0 round=0 killed_stage1=0 killed_stage0=0 failures=0
t_all=$SECONDS
while ((started < pods)); do
    round=$((round + 1)); t0=$SECONDS
    uuids=() pids=()
    for ((i = 0; i < batch && started < pods; i++)); do
        f="$work/uuid-$round-$i"
        rk run rkt-kvm.local/busybox --exec=/bin/sh -- -c "echo pod $round.$i; sleep $((5 + i))" --- --uuid-file-save="$f" >/dev/null 2>&1 &
        pids+=($!); uuids+=("$f"); started=$((started + 1))
    done
    # Kill pod 0's stage1 while its agent boots, and pod 1's rkt-kvm once its pod is ready.
    for ((w = 0; w < 600; w++)); do [[ -s "${uuids[0]}" ]] && break; sleep 0.1; done
    if [[ -s "${uuids[0]}" ]]; then
        u=$(cat "${uuids[0]}")
        for ((w = 0; w < 600; w++)); do pid_of rkt-kvm-vmm "$u" >/dev/null && break; sleep 0.1; done
        if s=$(pid_of rkt-kvm-stage1 "$u"); then kill -9 "$s" && killed_stage1=$((killed_stage1 + 1)); fi
    fi
    if ((${#uuids[@]} > 1)); then
        for ((w = 0; w < 600; w++)); do [[ -s "${uuids[1]}" ]] && break; sleep 0.1; done
        if [[ -s "${uuids[1]}" ]] && rk status --wait-ready=5m "$(cat "${uuids[1]}")" >/dev/null 2>&1; then
            kill -9 "${pids[1]}" && killed_stage0=$((killed_stage0 + 1))
        fi
    fi
    for p in "${pids[@]}"; do wait "$p" || true; done
    # Pods whose rkt-kvm was killed go on under their stage1: wait for them to exit too.
    for f in "${uuids[@]}"; do
        [[ -s "$f" ]] || continue
        for ((w = 0; w < 1800; w++)); do
            state=$(rk status "$(cat "$f")" 2>/dev/null | sed -n 's/^state=//p' || true)
            [[ "$state" == running ]] || break; sleep 0.2
        done
    done
    rk gc --grace-period=0s >/dev/null || failures=$((failures + 1))
    echo "$round $(measure) $((SECONDS - t0))"
done
read -r p1 f1 m1 mo1 r1 d1 n1 v1 l1 x1 c1 < <(measure)
# Our programs (rkt-kvm, its stage1, VMMs) still running for this soak's pods.
leftover=0
for p in /proc/[0-9]*; do
    case "$(readlink "$p/exe" 2>/dev/null)" in */rkt-kvm|*/rkt-kvm-vmm|*/rkt-kvm-stage1) ;; *) continue ;; esac
    if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q -- "$work"; then leftover=$((leftover + 1)); fi
done
echo "soak: killed $killed_stage1 stage1 run and $killed_stage0 rkt-kvm processes; $failures gc failures; $((SECONDS - t_all)) s"
echo "RESULT soak_pods ours=${started}pods"
echo "RESULT soak_process_growth ours=$((p1 - p0))procs"
echo "RESULT soak_open_file_growth ours=$((f1 - f0))handles"
echo "RESULT soak_mem_available_change ours=$(((m1 - m0) / 1024))MiB"
echo "RESULT soak_leftover_mounts ours=${mo1}mounts"
echo "RESULT soak_leftover_runtime_dirs ours=${r1}dirs"
echo "RESULT soak_leftover_pod_dirs ours=${d1}dirs"
echo "RESULT soak_leftover_processes ours=${leftover}procs"
echo "RESULT soak_netns_growth ours=$((n1 - n0))netns"
echo "RESULT soak_veth_growth ours=$((v1 - v0))veths"
echo "RESULT soak_lease_growth ours=$((l1 - l0))leases"
echo "RESULT soak_nat_rule_growth ours=$((x1 - x0))rules"
echo "RESULT soak_pod_cgroup_growth ours=$((c1 - c0))cgroups"
"$cli" --dir="$data" gc --grace-period=0s >/dev/null || true
rm -rf "$work"
