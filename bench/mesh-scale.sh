#!/usr/bin/env bash
# The mesh at scale, in one run: a release-built coordinator on loopback driven by
# tabbify-mesh-load (N simulated nodes in one process, connections spread over 127.0.0.x), then
# a node's data plane holding a 100,000-peer roster (bench/mesh-peers.sh).
#
# Prints:
#   - registrations/s and p99 at 1,000, 10,000 and PEERS peers, plaintext (--insecure-no-mtls)
#     and mTLS (the default: a TLS handshake and a certificate issued per registration), with the
#     ratio of the largest roster to 1,000 (the aim: within 20%, and >= 5,000/s);
#   - heartbeats at HB_RATE/s (100,000 nodes every 5 s is 20,000/s): achieved rate, p50/p99 and
#     the coordinator's CPU (plaintext: one process cannot hold 100,000 client certificates);
#   - event-to-last-watcher latency with WATCHERS open watch streams (aim < 1 s);
#   - the coordinator's RSS at PEERS peers;
#   - a node's RSS and set_peers time with NODE_PEERS peers.
#
# PEERS defaults to 65000: a mesh is a /48 of /64s, so one coordinator holds at most 65,535
# nodes (the watch phase adds a few more); 100,000 do not fit its address plan. The heartbeat rate is set to what 100,000 nodes
# would send. Nodes are registered with --offline-after-missed high so that the ones registered
# first are not marked offline (events) while the rest join; liveness is not what this measures.
#
# Needs root for the node part (network namespace) and a high open-file limit (set here).
# Env: PEERS, WATCHERS, HB_RATE, HB_SECS, SOURCES, NODE_PEERS, CONCURRENCY.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEERS="${PEERS:-65000}"
WATCHERS="${WATCHERS:-10000}"
HB_RATE="${HB_RATE:-20000}"
HB_SECS="${HB_SECS:-20}"
SOURCES="${SOURCES:-32}"
NODE_PEERS="${NODE_PEERS:-100000}"
CONCURRENCY="${CONCURRENCY:-64}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p tabbify-coordinator \
  --bin tabbify-coordinator --bin tabbify-mesh-load >&2
BIN="$TARGET_DIR/release"

WORK="$(mktemp -d)"
COORD_PID=""
cleanup() {
  if [[ -n "$COORD_PID" ]] && kill -0 "$COORD_PID" 2>/dev/null; then
    kill -TERM "$COORD_PID" 2>/dev/null || true
    wait "$COORD_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

run_mode() { # $1: mode name, $2: extra load flags, then coordinator flags
  local mode="$1" load_flags="$2"; shift 2
  local dir="$WORK/$mode"
  mkdir -p "$dir"
  mkfifo "$dir/ready"
  RUST_LOG=warn "$BIN/tabbify-coordinator" --listen 127.0.0.1:0 --data-dir "$dir/data" \
    --offline-after-missed 100000 "$@" >"$dir/ready" 2>"$dir/coordinator.log" &
  COORD_PID=$!
  read -r -t 30 READY_LINE <"$dir/ready" || { echo "coordinator did not start" >&2; cat "$dir/coordinator.log" >&2; exit 1; }
  local url="${READY_LINE#tabbify-coordinator listening on }"
  local ca=()
  [[ -f "$dir/data/ca.crt" ]] && ca=(--ca-file "$dir/data/ca.crt")
  # shellcheck disable=SC2086
  "$BIN/tabbify-mesh-load" --url "$url" --admin-token-file "$dir/data/admin-token" "${ca[@]}" \
    --peers "$PEERS" --checkpoints "1000,10000,$PEERS" --concurrency "$CONCURRENCY" \
    --sources "$SOURCES" --coordinator-pid "$COORD_PID" $load_flags >"$dir/results"
  echo "coordinator_rss_peak_kib $(awk '$1 == "VmHWM:" {print $2}' "/proc/$COORD_PID/status")" >>"$dir/results"
  kill -TERM "$COORD_PID" 2>/dev/null || true
  wait "$COORD_PID" 2>/dev/null || true
  COORD_PID=""
}

echo "plaintext coordinator: registrations, heartbeats, watchers..." >&2
run_mode plain "--heartbeat-rate $HB_RATE --heartbeat-secs $HB_SECS --watchers $WATCHERS" --insecure-no-mtls
echo "mTLS coordinator: registrations..." >&2
run_mode mtls "--heartbeat-secs 0 --watchers 0"
echo "node data plane with $NODE_PEERS peers..." >&2
NODE_OUT="$WORK/node"
if [[ "$(id -u)" == 0 ]]; then
  PEERS="$NODE_PEERS" "$ROOT/bench/mesh-peers.sh" >"$NODE_OUT" 2>"$WORK/node.err" ||
    { echo "node part failed:" >&2; cat "$WORK/node.err" >&2; echo "failed" >"$NODE_OUT"; }
else
  echo "skipped: needs root (network namespace)" >"$NODE_OUT"
fi

get() { awk -v k="$2" '$1 == k {print $2}' "$WORK/$1/results"; }
echo "== mesh scale bench: $PEERS peers, $(nproc) cores, one run =="
for mode in plain mtls; do
  echo "-- coordinator, $mode"
  cat "$WORK/$mode/results"
done
echo "-- node with $NODE_PEERS peers (bench/mesh-peers.sh)"
cat "$NODE_OUT"
echo "-- summary"
for mode in plain mtls; do
  awk -v m="$mode" -v small="$(get "$mode" registrations_per_sec_at_1000)" \
      -v large="$(get "$mode" "registrations_per_sec_at_$PEERS")" -v n="$PEERS" 'BEGIN {
    if (small > 0 && large > 0)
      printf "%s: registrations/s at %d peers vs 1,000: %.0f vs %.0f = %.2f (aim >= 0.80, and >= 5000/s)\n", m, n, large, small, large / small
  }'
done
echo "heartbeats: $(get plain heartbeats_per_sec)/s of $(get plain heartbeat_target_per_sec)/s asked, p99 $(get plain heartbeat_p99_ms) ms, coordinator CPU $(get plain heartbeat_coordinator_cpu_percent)% of one core"
echo "roster change to the last of $(get plain watchers) watchers: p50 $(get plain event_to_last_watcher_p50_ms) ms, max $(get plain event_to_last_watcher_max_ms) ms (aim < 1000 ms)"
echo "coordinator RSS at $PEERS peers: $(get plain "coordinator_rss_kib_at_$PEERS") KiB plaintext, $(get mtls "coordinator_rss_kib_at_$PEERS") KiB mTLS"
