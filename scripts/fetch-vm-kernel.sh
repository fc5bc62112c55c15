#!/usr/bin/env bash
# Puts a guest kernel for Tabbify microVMs where the tests, benches and `tabbify-vm` look for it:
#
#   <out>/vmlinuz          the kernel (a bzImage, bootable by QEMU microvm and Firecracker)
#   <out>/modules/*.ko     the virtio drivers the kernel has as modules, with their dependencies
#   <out>/modules/order    their file names in load order (dependencies first)
#   <out>/release          the kernel release string
#
# <out> is the first argument, default <repo>/target/vm. The kernel is Debian's
# linux-image-cloud-amd64 (installed with apt-get when missing). Its virtio-mmio, virtio-blk and
# virtio-net drivers are modules, not built in, so the guest needs them in an initramfs: tabbify-vm
# builds that initramfs (with its own init) from <out>/modules at boot time. A kernel with the
# drivers built in (like Firecracker's guest kernels) needs no modules directory.
#
#   scripts/fetch-vm-kernel.sh              # install if needed, copy to target/vm
#   TABBIFY_VM_KERNEL_RELEASE=6.1.0-56-cloud-amd64 scripts/fetch-vm-kernel.sh   # pick a release
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/target/vm}"
wanted_modules=(virtio_mmio virtio_blk virtio_net)

pick_release() {
    if [ -n "${TABBIFY_VM_KERNEL_RELEASE:-}" ]; then
        echo "$TABBIFY_VM_KERNEL_RELEASE"
        return
    fi
    local f
    f="$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$f" ]; then basename "$f" | sed 's/^vmlinuz-//'; fi
}

release="$(pick_release)"
if [ -z "$release" ] || [ ! -f "/boot/vmlinuz-$release" ]; then
    echo "fetch-vm-kernel: installing linux-image-cloud-amd64" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends linux-image-cloud-amd64 >&2 || {
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends linux-image-cloud-amd64 >&2
    }
    release="$(pick_release)"
fi
[ -n "$release" ] && [ -f "/boot/vmlinuz-$release" ] || {
    echo "fetch-vm-kernel: no /boot/vmlinuz-*-cloud-amd64 after installing" >&2
    exit 1
}
moddir="/lib/modules/$release"
[ -f "$moddir/modules.dep" ] || { echo "fetch-vm-kernel: $moddir/modules.dep missing" >&2; exit 1; }

# Path (relative to $moddir) of a module by name, or nothing when it is built in.
module_path() {
    local name="$1" alt="${1//_/-}"
    awk -F: -v a="$name" -v b="$alt" '{
        n = $1; sub(/.*\//, "", n); sub(/\.ko(\.[a-z]+)?$/, "", n);
        if (n == a || n == b) { print $1; exit }
    }' "$moddir/modules.dep"
}
deps_of() {
    awk -F: -v p="$1" '$1 == p { print $2; exit }' "$moddir/modules.dep" | tr ' ' '\n' | grep -v '^$' || true
}

ordered=()
seen=" "
visit() {
    local p="$1" d
    case "$seen" in *" $p "*) return ;; esac
    seen="$seen$p "
    # modules.dep lists every (transitive) dependency; load those first, recursively ordered.
    for d in $(deps_of "$p"); do visit "$d"; done
    ordered+=("$p")
}
for m in "${wanted_modules[@]}"; do
    p="$(module_path "$m")"
    if [ -z "$p" ]; then
        grep -q "/$m.ko" "$moddir/modules.builtin" 2>/dev/null \
            || grep -q "/${m//_/-}.ko" "$moddir/modules.builtin" 2>/dev/null \
            || { echo "fetch-vm-kernel: module $m is neither built in nor in $moddir" >&2; exit 1; }
        continue
    fi
    visit "$p"
done

mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d "${out%/}.tmp.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
cp "/boot/vmlinuz-$release" "$tmp/vmlinuz"
echo "$release" > "$tmp/release"
if [ ${#ordered[@]} -gt 0 ]; then
    mkdir "$tmp/modules"
    for p in "${ordered[@]}"; do
        f="$(basename "$p")"
        case "$f" in
            *.ko) cp "$moddir/$p" "$tmp/modules/$f" ;;
            *.ko.xz) xz -dc "$moddir/$p" > "$tmp/modules/${f%.xz}"; f="${f%.xz}" ;;
            *.ko.zst) zstd -qdc "$moddir/$p" > "$tmp/modules/${f%.zst}"; f="${f%.zst}" ;;
            *.ko.gz) gzip -dc "$moddir/$p" > "$tmp/modules/${f%.gz}"; f="${f%.gz}" ;;
            *) echo "fetch-vm-kernel: unknown module format $f" >&2; exit 1 ;;
        esac
        echo "$f" >> "$tmp/modules/order"
    done
fi
rm -rf "$out.old"
[ -e "$out" ] && mv "$out" "$out.old"
mv "$tmp" "$out"
trap - EXIT
rm -rf "$out.old"
echo "$out/vmlinuz ($release)${ordered:+, modules: $(tr '\n' ' ' < "$out/modules/order")}"
