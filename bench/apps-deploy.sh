#!/usr/bin/env bash
# Deploying apps through the supervisor's API, against the peer "tabbify-runner started by hand"
# (the same runner with no supervisor, measured in the same run by bench/wasm_runner_probe.py):
#
#  1. deploy -> first 200: from the start of `POST /v1/apps` (multipart: manifest + hello-wasm) to
#     the first HTTP 200 from the app's address, with a warm compile cache (aim < 100 ms); the peer
#     is spawn -> first 200 of a bare runner with a warm cache.
#  2. memory of N idle deployed apps (default 200): the sum of every runner's RSS plus the
#     supervisor's; the peer is N bare runners.
#
#   bench/apps-deploy.sh [deploys=20] [idle_apps=200]
#
# Needs python3 and curl. Figures go to stdout and to bench/out/apps-deploy.txt.
set -euo pipefail

deploys="${1:-20}"
idle="${2:-200}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$here/out"
report="$here/out/apps-deploy.txt"
say() { echo "$*" | tee -a "$report"; }
: > "$report"

(cd "$root" && cargo build --quiet --release -p tabbify-supervisor -p tabbify-runner)
supervisor="$target/release/tabbify-supervisor"
runner="$target/release/tabbify-runner"
wasm="$("$root/examples/build.sh" hello-wasm | tail -1)"

work="$(mktemp -d /tmp/tabbify-apps-bench.XXXXXX)"
sup_pid=""
cleanup() {
    if [ -n "$sup_pid" ]; then kill "$sup_pid" 2>/dev/null || true; wait "$sup_pid" 2>/dev/null || true; fi
    # Runners outlive their supervisor by design: stop whatever this run left.
    for pid in $(pgrep -f -- "--app-dir $work/" || true); do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
RUST_LOG=warn "$supervisor" --no-mesh --bind "127.0.0.1:$port" --data-dir "$work/node" \
    --control-socket off --runner-bin "$runner" > "$work/supervisor.out" 2> "$work/supervisor.err" &
sup_pid=$!
for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.05
done
api="127.0.0.1:$port"
# The API needs the operator token the --no-mesh node wrote for itself.
export TABBIFY_CONTROL_TOKEN="$(cat "$work/node/control-token")"

say "apps-deploy: hello-wasm through tabbify-supervisor --no-mesh, $(nproc) cores, $(date -u +%FT%TZ)"

# --- 1. deploy -> first 200 ----------------------------------------------------------------------
python3 "$here/apps-deploy-probe.py" deploy "$api" "$wasm" "$deploys" | tee "$work/deploy.txt"
grep -v '^MEDIAN_WARM_MS' "$work/deploy.txt" >> "$report"
ours_ms="$(awk '/^MEDIAN_WARM_MS/ {print $2}' "$work/deploy.txt")"

python3 "$here/wasm_runner_probe.py" startup "$runner" "$wasm" "$work/peer" "$deploys" | tee "$work/peer-startup.txt"
peer_ms="$(sed -n 's/.*warm cache: median \([0-9.]*\) ms.*/\1/p' "$work/peer-startup.txt")"
say "peer, bare tabbify-runner spawn -> first 200, warm cache: median $peer_ms ms"
say "ratio deploy through the supervisor / bare runner start: $(awk -v a="$ours_ms" -v b="$peer_ms" 'BEGIN {printf "%.2f", a/b}')x"

# --- 2. memory of idle deployed apps ------------------------------------------------------------
python3 "$here/apps-deploy-probe.py" density "$api" "$wasm" "$idle" "$sup_pid" "$work/node" | tee "$work/density.txt"
grep -v '^TOTAL_RSS_KIB' "$work/density.txt" >> "$report"
ours_kib="$(awk '/^TOTAL_RSS_KIB/ {print $2}' "$work/density.txt")"

python3 "$here/wasm_runner_probe.py" density "$runner" "$wasm" "$work/peer" "$idle" | tee "$work/peer-density.txt"
peer_mib="$(sed -n 's/.*RSS total \([0-9.]*\) MiB.*/\1/p' "$work/peer-density.txt")"
say "peer, $idle bare tabbify-runner processes: RSS total $peer_mib MiB"
say "ratio $idle deployed apps (runners + supervisor) / $idle bare runners, RSS: $(awk -v a="$ours_kib" -v b="$peer_mib" 'BEGIN {printf "%.2f", a/1024/b}')x"
echo "report: $report"
