#!/usr/bin/env bash
# Builds Tabbify's container images from this repository without any registry: static musl
# binaries are compiled on the host, and every image starts FROM scratch (tabbify-base holds
# Debian's static busybox) or from one built here.
#
#   deploy/docker/build-images.sh [options] [IMAGE...]
#
# IMAGE is any of: base supervisor fc coordinator appsrv (default: all but fc; fc needs QEMU).
#
#   --profile P          cargo profile for the binaries (default: release; tests use dev)
#   --target-dir DIR     cargo target directory (default: $CARGO_TARGET_DIR or <repo>/target)
#   --tag T              tag the images get besides their default (supervisor: latest, fc: fc)
#   --firecracker PATH   put this firecracker binary into the :fc image
#   --guest-kernel PATH  put this guest kernel into the :fc image (/usr/local/share/tabbify/vmlinux)
#   --no-build           reuse the binaries already in the target directory
#   --host               build for the host instead of static musl: dynamically linked binaries
#                        go in with their shared libraries. Reuses an existing host build (the
#                        tests use it); releases use the default.
#
# Images: tabbify-base, tabbify-supervisor (wasm; docker with the host socket), tabbify-supervisor:fc
# (adds QEMU and optional firecracker + kernel), tabbify-coordinator (with tcli), tabbify-appsrv.
# Needs: docker, rustup target x86_64-unknown-linux-musl, Debian's busybox-static and musl-tools;
# for fc: qemu-system-x86.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
triple=x86_64-unknown-linux-musl
profile=release
target_dir="${CARGO_TARGET_DIR:-$root/target}"
extra_tag=""
firecracker=""
guest_kernel=""
build=1
images=()

die() { echo "build-images.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
        --target-dir) target_dir="${2:?--target-dir needs a value}"; shift 2 ;;
        --tag) extra_tag="${2:?--tag needs a value}"; shift 2 ;;
        --firecracker) firecracker="${2:?--firecracker needs a path}"; shift 2 ;;
        --guest-kernel) guest_kernel="${2:?--guest-kernel needs a path}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --host) triple=""; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        base|supervisor|fc|coordinator|appsrv) images+=("$1"); shift ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
if [ ${#images[@]} -eq 0 ]; then
    images=(base supervisor coordinator appsrv)
fi
want() { local i; for i in "${images[@]}"; do [ "$i" = "$1" ] && return 0; done; return 1; }
# Every image but base is built on base; fc is built on supervisor.
if want fc && ! want supervisor; then images+=(supervisor); fi
if ! want base; then images+=(base); fi

command -v docker >/dev/null || die "docker is not installed"
# True when the ELF file asks for no program interpreter (static or static-pie).
is_static() { ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q "program interpreter"; }
command -v readelf >/dev/null || die "readelf is missing: apt-get install binutils"
busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && is_static "$(readlink -f "$candidate")"; then
        busybox="$(readlink -f "$candidate")"; break
    fi
done
[ -n "$busybox" ] || die "no static busybox found: apt-get install busybox-static"

# Binaries each image carries; a package that is not in the workspace yet is left out.
has_package() { grep -qs "^name = \"$1\"" "$root"/crates/*/Cargo.toml; }
supervisor_bins=(tabbify-supervisor)
has_package tabbify-runner && supervisor_bins+=(tabbify-runner)
# The guest init every microVM rootfs gets; runners look for it beside themselves.
has_package tabbify-vm-init && supervisor_bins+=(tabbify-vm-init)
coordinator_bins=(tabbify-coordinator tcli)
appsrv_bins=()
if has_package tabbify-appsrv; then
    appsrv_bins=(tabbify-appsrv)
elif want appsrv; then
    echo "build-images.sh: no tabbify-appsrv package yet; skipping the appsrv image" >&2
    images=("${images[@]/appsrv/}")
fi

bins=()
want supervisor && bins+=("${supervisor_bins[@]}")
want coordinator && bins+=("${coordinator_bins[@]}")
want appsrv && bins+=("${appsrv_bins[@]}")
profile_dir="$profile"
[ "$profile" = dev ] && profile_dir=debug
if [ -n "$triple" ]; then
    out_dir="$target_dir/$triple/$profile_dir"
else
    out_dir="$target_dir/$profile_dir"
fi

if [ "$build" = 1 ] && [ ${#bins[@]} -gt 0 ]; then
    target_args=()
    if [ -n "$triple" ]; then
        if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
            rustup target add "$triple" >&2
        fi
        # C code (ring, SQLite) is compiled for musl by musl-gcc when there is one.
        if command -v musl-gcc >/dev/null; then
            export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
        fi
        target_args=(--target "$triple")
    fi
    bin_args=()
    for b in "${bins[@]}"; do bin_args+=(--bin "$b"); done
    echo "== cargo build --profile $profile ${target_args[*]} ${bins[*]}" >&2
    (cd "$root" && env -u CARGO_BUILD_TARGET \
        cargo build --quiet --profile "$profile" "${target_args[@]}" \
        --target-dir "$target_dir" "${bin_args[@]}")
fi

ctx_root="$target_dir/docker-context"
rm -rf "$ctx_root"
mkdir -p "$ctx_root"

# Copies a host program and the shared libraries it loads (and their loader) into a rootfs, at
# the same paths. For the few tools the node shells out to that are not static.
stage_dynamic() { # rootfs program dest
    local rootfs="$1" program="$2" dest="$3"
    mkdir -p "$rootfs$(dirname "$dest")"
    cp -L "$program" "$rootfs$dest"
    stage_libs "$rootfs" "$program"
}

stage_libs() { # rootfs program
    local rootfs="$1" program lib
    program="$(readlink -f "$2")"
    ldd "$program" | awk '/=>/ && $3 ~ /^\// {print $3} /^[[:space:]]*\/[^ ]*ld-linux/ {print $1}' \
        | sort -u | while read -r lib; do
            mkdir -p "$rootfs$(dirname "$lib")"
            cp -L "$lib" "$rootfs$lib"
        done
}

# Copies stripped binaries into <context>/bin; with --host, their shared libraries go into
# <context>/rootfs (static musl binaries need none).
stage_bins() {
    local ctx="$1"; shift
    mkdir -p "$ctx/bin" "$ctx/rootfs"
    local b
    for b in "$@"; do
        [ -x "$out_dir/$b" ] || die "$out_dir/$b is missing (build it, or drop --no-build)"
        strip -o "$ctx/bin/$b" "$out_dir/$b" 2>/dev/null || cp "$out_dir/$b" "$ctx/bin/$b"
        if ! is_static "$ctx/bin/$b"; then
            [ -z "$triple" ] || die "$b is not statically linked"
            stage_libs "$ctx/rootfs" "$out_dir/$b"
        fi
    done
}

docker_build() { # name dockerfile context [build-arg...]
    local name="$1" dockerfile="$2" ctx="$3"; shift 3
    local tags=(-t "$name")
    if [ -n "$extra_tag" ]; then
        case "$name" in
            *:*) tags+=(-t "${name%%:*}:$extra_tag-${name#*:}") ;;
            *) tags+=(-t "$name:$extra_tag") ;;
        esac
    fi
    echo "== docker build $name" >&2
    # A cached layer the daemon lost (after an image prune) fails the build once; a second try
    # without the cache does not depend on it.
    DOCKER_BUILDKIT=0 docker build --quiet --force-rm "${tags[@]}" "$@" \
        -f "$here/$dockerfile" "$ctx" >/dev/null \
        || DOCKER_BUILDKIT=0 docker build --quiet --force-rm --no-cache "${tags[@]}" "$@" \
            -f "$here/$dockerfile" "$ctx" >/dev/null
}

if want base; then
    ctx="$ctx_root/base"
    mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/root" "$ctx/rootfs/var/lib/tabbify"
    cp -a "$here/rootfs/." "$ctx/rootfs/"
    cp "$busybox" "$ctx/rootfs/bin/busybox"
    chmod 1777 "$ctx/rootfs/tmp"
    chmod 700 "$ctx/rootfs/var/lib/tabbify"
    docker_build tabbify-base base.Dockerfile "$ctx"
fi

if want supervisor; then
    ctx="$ctx_root/supervisor"
    stage_bins "$ctx" "${supervisor_bins[@]}"
    # The supervisor asks iproute2's `ip` for JSON (`ip -j`), which busybox's ip cannot give.
    ip_bin="$(command -v ip || true)"
    { [ -n "$ip_bin" ] && "$ip_bin" -V 2>&1 | grep -q iproute2; } \
        || die "the supervisor image needs iproute2's ip: apt-get install iproute2"
    stage_dynamic "$ctx/rootfs" "$ip_bin" /usr/local/sbin/ip
    docker_build tabbify-supervisor supervisor.Dockerfile "$ctx"
fi

if want coordinator; then
    ctx="$ctx_root/coordinator"
    stage_bins "$ctx" "${coordinator_bins[@]}"
    docker_build tabbify-coordinator coordinator.Dockerfile "$ctx"
fi

if want appsrv && [ ${#appsrv_bins[@]} -gt 0 ]; then
    ctx="$ctx_root/appsrv"
    stage_bins "$ctx" "${appsrv_bins[@]}"
    docker_build tabbify-appsrv appsrv.Dockerfile "$ctx"
fi

if want fc; then
    qemu="$(command -v qemu-system-x86_64 || true)"
    [ -n "$qemu" ] || die "the fc image needs QEMU on the build host: apt-get install qemu-system-x86"
    ctx="$ctx_root/fc"
    rootfs="$ctx/rootfs"
    mkdir -p "$rootfs/usr/bin" "$rootfs/usr/local/bin" "$rootfs/usr/local/share/tabbify"
    # QEMU and mkfs.ext4 (guest root file systems) are dynamically linked: their loader and
    # libraries go in at the same paths.
    stage_dynamic "$rootfs" "$qemu" /usr/bin/qemu-system-x86_64
    mkfs="$(command -v mkfs.ext4 || true)"
    [ -n "$mkfs" ] || die "the fc image needs mkfs.ext4: apt-get install e2fsprogs"
    stage_dynamic "$rootfs" "$mkfs" /usr/local/sbin/mkfs.ext4
    for dir in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
        if [ -d "$dir" ]; then
            mkdir -p "$rootfs$dir"
            cp -rL "$dir/." "$rootfs$dir/"
        fi
    done
    if [ -n "$firecracker" ]; then
        [ -x "$firecracker" ] || die "--firecracker $firecracker is not an executable"
        cp -L "$firecracker" "$rootfs/usr/local/bin/firecracker"
    fi
    if [ -n "$guest_kernel" ]; then
        [ -f "$guest_kernel" ] || die "--guest-kernel $guest_kernel is not a file"
        cp -L "$guest_kernel" "$rootfs/usr/local/share/tabbify/vmlinux"
    fi
    docker_build tabbify-supervisor:fc supervisor-fc.Dockerfile "$ctx"
fi

echo "built: ${images[*]}" | tr -s ' ' >&2
