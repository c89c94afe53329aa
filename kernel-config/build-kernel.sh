#!/usr/bin/env bash
# Build (or fetch from the cache) the Rkt.Kvm guest kernel.
#
#   KDIR=$(kernel-config/build-kernel.sh [--force] [--variant qemu-reference])
#
# Prints exactly one line on stdout: the absolute cache directory holding
# vmlinux, bzImage, config and version.  Everything else goes to stderr.
#
#   --force                    rebuild even on a cache hit
#   --variant qemu-reference   benchmark-only kernel: the same config and patches plus
#                              patches-qemu-reference/* (no int3 self-test, no fwait in
#                              fpu__drop()), so that stock QEMU boots it on nested PVM
#                              hosts.  Never use it as the product kernel.
#
# Cache: ${RKT_KVM_CACHE:-$HOME/.cache/rkt-kvm}/kernel/<key>/ where <key> is a sha256
# over guest.config, patches/*, this script and the installed linux-source-6.1
# package version (a variant adds its name and its own patches).  Entries are built
# in a temporary directory and renamed into place, so an interrupted build never
# leaves a half entry behind.
#
# Environment:
#   RKT_KVM_CACHE        cache root (default $HOME/.cache/rkt-kvm)
#   RKT_KVM_KERNEL_WORK  parent of the temporary source/build tree (default $TMPDIR or /tmp);
#                        must be outside the repository
#   RKT_KVM_KEEP_WORK=1  keep the build tree after a successful build (for experiments)
set -euo pipefail

# All progress goes to stderr; fd 3 is the real stdout for the single result line.
exec 3>&1 1>&2

log() { printf 'build-kernel: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    # The comment block at the top of this file, without the '#'.
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

force=0
variant=""
while (($# > 0)); do
    case "$1" in
        --force) force=1 ;;
        --variant) (($# >= 2)) || die "--variant needs a name (qemu-reference)"; variant=$2; shift ;;
        --variant=*) variant=${1#--variant=} ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (accepted: --force, --variant qemu-reference, --help)" ;;
    esac
    shift
done
case "$variant" in
    "") ;;
    qemu-reference) ;;
    *) die "unknown variant '$variant' (known: qemu-reference)" ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
fragment="$here/guest.config"
src_pkg=linux-source-6.1
src_tar=/usr/src/linux-source-6.1.tar.xz
packages=(linux-source-6.1 bc flex bison libelf-dev gcc libc6-dev make xz-utils patch)

[[ -f "$fragment" ]] || die "missing $fragment"

pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

ensure_packages() {
    local missing=() p
    for p in "${packages[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing missing packages: ${missing[*]}"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "not root and no sudo; install: ${missing[*]}"
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >&2
}

patches_in() {
    # Sorted, so the key and the apply order are stable.
    if [[ -d "$1" ]]; then
        find "$1" -maxdepth 1 -type f -name '*.patch' | LC_ALL=C sort
    fi
}
patch_files() { patches_in "$here/patches"; }
# Extra patches of the variant, applied after patches/*; none without --variant.
variant_patch_files() {
    [[ -z "$variant" ]] || patches_in "$here/patches-$variant"
}
if [[ -n "$variant" ]]; then
    [[ -n "$(variant_patch_files)" ]] || die "variant '$variant' has no patches in $here/patches-$variant"
fi

compute_key() {
    local ver f
    ver=$(dpkg-query -W -f='${Version}' "$src_pkg")
    {
        printf 'linux-source-6.1 %s\n' "$ver"
        for f in "$fragment" "$here/build-kernel.sh" $(patch_files); do
            printf '%s %s\n' "$(basename "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"
        done
        # Only variants add lines, so the default key is computed exactly as before.
        if [[ -n "$variant" ]]; then
            printf 'variant %s\n' "$variant"
            for f in $(variant_patch_files); do
                printf '%s/%s %s\n' "patches-$variant" "$(basename "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"
            done
        fi
    } | sha256sum | cut -d' ' -f1
}

cache_root="${RKT_KVM_CACHE:-$HOME/.cache/rkt-kvm}/kernel"

# Fast path: no package changes, no locking, just look.
if ((force == 0)) && pkg_installed "$src_pkg"; then
    key=$(compute_key)
    if [[ -f "$cache_root/$key/vmlinux" && -f "$cache_root/$key/version" ]]; then
        log "cache hit: $cache_root/$key"
        printf '%s\n' "$cache_root/$key" >&3
        exit 0
    fi
fi

ensure_packages
[[ -f "$src_tar" ]] || die "$src_tar not found after installing $src_pkg"
key=$(compute_key)
mkdir -p "$cache_root"
cache_root=$(cd "$cache_root" && pwd -P)
dest="$cache_root/$key"

# One builder per key at a time; a second caller waits and then takes the cache hit.
exec 9>"$cache_root/.$key.lock"
flock 9
if ((force == 0)) && [[ -f "$dest/vmlinux" && -f "$dest/version" ]]; then
    log "cache hit (built by a concurrent caller): $dest"
    printf '%s\n' "$dest" >&3
    exit 0
fi

work_parent="${RKT_KVM_KERNEL_WORK:-${TMPDIR:-/tmp}}"
mkdir -p "$work_parent"
work=$(mktemp -d "$work_parent/rkt-kvm-kernel.XXXXXX")
stage=$(mktemp -d "$cache_root/.tmp-$key.XXXXXX")
cleanup() {
    rm -rf "$stage"
    if [[ "${RKT_KVM_KEEP_WORK:-0}" == 1 ]]; then
        log "keeping build tree $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

log "key $key${variant:+ (variant $variant)}; building in $work"
start=$SECONDS
tar -xf "$src_tar" -C "$work"
tree="$work/linux-source-6.1"
[[ -d "$tree" ]] || die "unexpected layout of $src_tar (no linux-source-6.1/)"
cd "$tree"

for p in $(patch_files) $(variant_patch_files); do
    log "applying ${p#"$here"/}"
    patch -p1 --forward --batch --quiet < "$p"
done

mk=(make ARCH=x86_64 KBUILD_BUILD_USER=rkt-kvm KBUILD_BUILD_HOST=rkt-kvm)
"${mk[@]}" -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$fragment" >&2
"${mk[@]}" -s olddefconfig

# Every option the fragment asks for must have survived olddefconfig.  Kconfig drops
# options silently when a dependency is missing; fail here instead of in the guest.
bad=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*)
            if ! grep -qxF -- "$line" .config; then
                have=$(grep -E "^(# )?${line%%=*}[= ]" .config || echo "absent")
                log "config check: wanted '$line', got '$have'"
                bad=1
            fi ;;
        "# CONFIG_"*" is not set")
            opt=${line#\# }; opt=${opt%% *}
            if grep -qE "^$opt=" .config; then
                log "config check: wanted '$opt' off, got '$(grep -E "^$opt=" .config)'"
                bad=1
            fi ;;
    esac
done < "$fragment"
((bad == 0)) || die "guest.config requests options that olddefconfig did not keep (see above)"
log "config check passed"

log "compiling with -j$(nproc)"
"${mk[@]}" -j"$(nproc)" vmlinux bzImage >&2

chmod 755 "$stage"
cp vmlinux "$stage/vmlinux"
cp arch/x86/boot/bzImage "$stage/bzImage"
cp .config "$stage/config"
{
    printf 'kernelrelease=%s\n' "$("${mk[@]}" -s kernelrelease)"
    printf 'linux_source_package=%s %s\n' "$src_pkg" "$(dpkg-query -W -f='${Version}' "$src_pkg")"
    printf 'key=%s\n' "$key"
    [[ -z "$variant" ]] || printf 'variant=%s\n' "$variant"
    printf 'vmlinux_entry=%s\n' "$(readelf -h vmlinux | awk '/Entry point/ {print $4}')"
    printf 'gcc=%s\n' "$(gcc -dumpfullversion)"
    printf 'built=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$stage/version"

if ((force == 1)) && [[ -e "$dest" ]]; then
    old="$cache_root/.old-$key.$$"
    mv -T "$dest" "$old"
    rm -rf "$old"
fi
mv -T "$stage" "$dest"
log "built in $((SECONDS - start)) s: $dest"
printf '%s\n' "$dest" >&3
