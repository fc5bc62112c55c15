#!/usr/bin/env bash
# Throughput and latency of hello-wasm served by tabbify-runner versus `wasmtime serve` (the peer,
# wasmtime-cli 48.0.8, the same wasmtime version the runner embeds), measured in the same run with
# the same load generator (wrk); then the time to the first 200 after a start with a warm compile
# cache, and the memory of many idle runners.
#
#   bench/wasm-serve.sh [seconds=10] [connections=32] [idle_runners=200]
#
# Installs what it needs if absent: wasmtime-cli into bench/.tools (cargo install, slow the first
# time), wrk from Debian (apt-get). Figures go to stdout and to bench/out/wasm-serve.txt.
set -euo pipefail

seconds="${1:-10}"
conns="${2:-32}"
idle_runners="${3:-200}"
threads=2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
tools="$here/.tools"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$here/out"
report="$here/out/wasm-serve.txt"

say() { echo "$*" | tee -a "$report"; }
: > "$report"

# --- tools -----------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt)" >&2
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
wasmtime="$tools/bin/wasmtime"
if ! "$wasmtime" --version 2>/dev/null | grep -q "48.0.8"; then
    echo "installing wasmtime-cli 48.0.8 into $tools (takes a while)" >&2
    cargo install --locked wasmtime-cli --version 48.0.8 --root "$tools" >&2
fi
(cd "$root" && cargo build --quiet --release -p tabbify-runner)
runner="$target/release/tabbify-runner"
wasm="$("$root/examples/build.sh" hello-wasm | tail -1)"

work="$(mktemp -d /tmp/tabbify-bench.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_200() {
    for _ in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
        sleep 0.05
    done
    echo "no 200 from $1" >&2
    return 1
}
# wrk against $1 for $seconds; prints "<requests/s> <p99 ms>".
measure() {
    wrk -t"$threads" -c"$conns" -d2s "$1" >/dev/null # warm up
    local out
    out="$(wrk -t"$threads" -c"$conns" -d"${seconds}s" --latency "$1")"
    echo "$out" >> "$work/wrk.log"
    if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx responses from $1" >&2; echo "$out" >&2; return 1; fi
    local rps p99
    rps="$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')"
    p99="$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}')"
    echo "$rps $p99"
}

say "wasm-serve: hello-wasm GET /, wrk -t$threads -c$conns -d${seconds}s, $(nproc) cores, $(date -u +%FT%TZ)"

# --- tabbify-runner ------------------------------------------------------------------------------
port="$(free_port)"
python3 "$here/wasm_runner_probe.py" app "$work/runner" "$wasm" "$work/cache" "$port"
RUST_LOG=warn "$runner" --app-dir "$work/runner" > "$work/runner.out" 2>&1 &
pids+=($!)
wait_200 "http://127.0.0.1:$port/"
read -r runner_rps runner_p99 < <(measure "http://127.0.0.1:$port/")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# --- wasmtime serve (peer) -----------------------------------------------------------------------
port="$(free_port)"
"$wasmtime" serve -Scli --addr "127.0.0.1:$port" "$wasm" > "$work/wasmtime.out" 2>&1 &
pids+=($!)
wait_200 "http://127.0.0.1:$port/"
read -r peer_rps peer_p99 < <(measure "http://127.0.0.1:$port/")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

say "tabbify-runner: $runner_rps req/s, p99 $runner_p99 ms"
say "wasmtime serve: $peer_rps req/s, p99 $peer_p99 ms"
say "ratio tabbify-runner / wasmtime serve: $(awk -v a="$runner_rps" -v b="$peer_rps" 'BEGIN {printf "%.2f", a/b}')x (aim >= 0.9x)"

# --- start-up and density ------------------------------------------------------------------------
python3 "$here/wasm_runner_probe.py" startup "$runner" "$wasm" "$work" 10 | tee -a "$report"
python3 "$here/wasm_runner_probe.py" density "$runner" "$wasm" "$work" "$idle_runners" | tee -a "$report"
echo "report: $report"
