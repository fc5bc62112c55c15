#!/usr/bin/env bash
# Boot-to-first-200 of hello-http in a microVM (tabbify-vm: QEMU -M microvm, Debian's cloud
# kernel, our initramfs + init, the rootfs from the cache, the tap and the userspace proxy), from
# launching `tabbify-vm run` to the first HTTP 200 through the proxied address. Peers measured in
# the same run on the same binary: the same hello-http as a Docker container (`docker run`, when a
# daemon answers) and as a plain process.
#
#   bench/vm-boot.sh [runs=5] [accel=tcg|kvm|auto]
#
# TCG emulates the CPU: it is the path for machines without usable KVM (this project's CI, where
# /dev/kvm exists but masks CPU features; see `tabbify-vm kvm-check`). Needs root (taps and
# network namespaces), qemu-system-x86, e2fsprogs, curl. Figures go to stdout and to
# bench/out/vm-boot.txt.
set -euo pipefail

runs="${1:-5}"
accel="${2:-tcg}"
[ "$runs" -ge 2 ] || { echo "vm-boot.sh: take at least 2 runs" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$here/out"
report="$here/out/vm-boot.txt"
: > "$report"
say() { echo "$*" | tee -a "$report"; }

[ "$(id -u)" = 0 ] || { echo "vm-boot.sh: needs root (taps, network namespaces)" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "vm-boot.sh: install qemu-system-x86" >&2; exit 2; }

# --- build ------------------------------------------------------------------------------------
(cd "$root" && cargo build --quiet --release -p tabbify-vm)
(cd "$root" && env -u CARGO_TARGET_DIR cargo build --quiet --release --target x86_64-unknown-linux-musl \
    -p tabbify-vm-init --target-dir "$root/target/guest")
init="$root/target/guest/x86_64-unknown-linux-musl/release/tabbify-vm-init"
hello="$("$root/examples/build.sh" hello-http | tail -1)"
[ -f "$root/target/vm/vmlinuz" ] || "$root/scripts/fetch-vm-kernel.sh" >&2
kernel="$root/target/vm/vmlinuz"
vm="$target/release/tabbify-vm"

work="$(mktemp -d /tmp/tabbify-vm-bench.XXXXXX)"
ns=""
pids=()
container=""
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true
    [ -n "$container" ] && docker rm -f "$container" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/image/bin"
cp "$hello" "$work/image/bin/hello-http"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Polls $2 (a command prefix, may be empty) curl $1 until 200; prints the ms since $3.
first_200() {
    local url="$1" prefix="$2" start="$3"
    for _ in $(seq 1 6000); do
        if [ "$($prefix curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null || true)" = 200 ]; then
            echo $(( $(now_ms) - start ))
            return 0
        fi
        sleep 0.02
    done
    echo "no 200 from $url" >&2
    return 1
}
median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -n | awk '{a[NR]=$1} END {if (NR) print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
count() { tr ' ' '\n' | grep -vc '^$' || true; }
# a / b to one decimal, or n/a when either side has no figure (it failed or did not run).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.1fx", a / b; else printf "n/a" }'; }

say "== hello-http boot to first 200 ($runs runs, accel=$accel)"
say "kernel: $(cat "$root/target/vm/release" 2>/dev/null || echo "$kernel"), host: $(nproc) cpus, $(uname -r)"
say "kvm: $("$vm" kvm-check 2>&1 || true)"

# --- the microVM --------------------------------------------------------------------------------
vm_once() { # $1: run number; prints ms
    ns="tbfbench-$$-$1"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    local start; start="$(now_ms)"
    ip netns exec "$ns" "$vm" run --image "$work/image" --init "$init" --cache "$work/cache" \
        --kernel "$kernel" --listen 127.0.0.1:18080 --run-dir "$work/run-$1" --accel "$accel" \
        --cmd /bin/hello-http --env PORT=8080 --boot-timeout-secs 300 \
        > "$work/vm-$1.out" 2> "$work/vm-$1.err" &
    local pid=$!
    pids+=("$pid")
    local ms
    ms="$(first_200 http://127.0.0.1:18080/ "ip netns exec $ns" "$start")" || {
        cat "$work/vm-$1.err" "$work/run-$1/console.log" >&2; exit 1; }
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    pids=()
    ip netns del "$ns"
    ns=""
    echo "$ms"
}
cold="$(vm_once 0)"
say "microVM, cold (rootfs built, 1 run): ${cold} ms   [$(sed -n 's/.*(\(rootfs.*\))/\1/p' "$work/vm-0.out")]"
vm_ms=()
for i in $(seq 1 "$runs"); do
    ms="$(vm_once "$i")"
    vm_ms+=("$ms")
    say "microVM, run $i (rootfs cached): ${ms} ms   [$(sed -n 's/.*(\(rootfs.*\))/\1/p' "$work/vm-$i.out")]"
done
vm_med="$(echo "${vm_ms[*]}" | median)"

# --- peers ----------------------------------------------------------------------------------------
# A peer run that fails leaves no figure (and says why on stderr); the peer's median is over the
# runs that answered, and its ratio is n/a when none did.
proc_ms=()
for i in $(seq 1 "$runs"); do
    start="$(now_ms)"
    PORT=18081 "$hello" > /dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    ms="$(first_200 http://127.0.0.1:18081/ "" "$start")" && proc_ms+=("$ms")
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    pids=()
done
proc_med="$(echo "${proc_ms[*]}" | median)"

docker_med=""
docker_note="no Docker daemon"
docker_ms=()
if docker info >/dev/null 2>&1; then
    mkdir -p "$work/ctx"
    cp "$hello" "$work/ctx/hello-http"
    printf 'FROM scratch\nCOPY hello-http /hello-http\nENV PORT=8080\nENTRYPOINT ["/hello-http"]\n' > "$work/ctx/Dockerfile"
    tag="tabbify-bench-hello:$$"
    if docker build -q -t "$tag" "$work/ctx" >/dev/null 2>"$work/docker-build.err"; then
        for i in $(seq 1 "$runs"); do
            container="tabbify-bench-$$-$i"
            start="$(now_ms)"
            if docker run -d --rm --name "$container" -p 127.0.0.1:18082:8080 "$tag" >/dev/null; then
                ms="$(first_200 http://127.0.0.1:18082/ "" "$start")" && docker_ms+=("$ms")
            fi
            docker rm -f "$container" >/dev/null 2>&1 || true
            container=""
        done
        docker rmi -f "$tag" >/dev/null 2>&1 || true
        docker_med="$(echo "${docker_ms[*]}" | median)"
        docker_note="failed"
    else
        docker_note="docker build failed: $(tail -1 "$work/docker-build.err")"
    fi
fi

say ""
say "median boot-to-first-200 (runs that answered / runs):"
say "  microVM ($accel, cached rootfs)   ${vm_med} ms   ($(echo "${vm_ms[*]}" | count)/$runs)"
say "  docker run (peer)               ${docker_med:-n/a ($docker_note)}${docker_med:+ ms}   ($(echo "${docker_ms[*]}" | count)/$runs)"
say "  plain process (peer)            ${proc_med:-n/a (failed)}${proc_med:+ ms}   ($(echo "${proc_ms[*]}" | count)/$runs)"
say "ratio microVM/docker: $(ratio "$vm_med" "$docker_med")"
say "ratio microVM/process: $(ratio "$vm_med" "$proc_med")"
say "(design figure, not measured here: Firecracker with KVM boots a minimal guest to init in ~125 ms)"
