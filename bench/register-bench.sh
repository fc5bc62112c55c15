#!/usr/bin/env bash
# Registration throughput of the coordinator.
#
# Starts a release-built tabbify-coordinator on loopback with a fresh data dir, then
# tabbify-register-bench measures in the same run:
#   - GET /health round trips at the same concurrency (the peer: what bare HTTP costs here),
#   - PEERS registrations of fresh keys at CONCURRENCY (registrations/s, p50/p99 latency),
#   - GET /v1/mesh/peers at PEERS peers (p50/p99 over LIST_REQUESTS requests),
# and reads the coordinator's RSS from /proc. Targets: >= 2000 reg/s, listing < 50 ms.
#
# Usage: bench/register-bench.sh            (env: PEERS=10000 CONCURRENCY=64 LIST_REQUESTS=50)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEERS="${PEERS:-10000}"
CONCURRENCY="${CONCURRENCY:-64}"
LIST_REQUESTS="${LIST_REQUESTS:-50}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

cargo build --release --manifest-path "$ROOT/Cargo.toml" -p tabbify-coordinator \
  --bin tabbify-coordinator --bin tabbify-register-bench >&2
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

mkfifo "$WORK/ready"
RUST_LOG=warn "$BIN/tabbify-coordinator" --listen 127.0.0.1:0 --data-dir "$WORK/data" \
  >"$WORK/ready" 2>"$WORK/coordinator.log" &
COORD_PID=$!
read -r -t 30 READY_LINE <"$WORK/ready" || { echo "coordinator did not start" >&2; cat "$WORK/coordinator.log" >&2; exit 1; }
URL="${READY_LINE#tabbify-coordinator listening on }"

rss_kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$COORD_PID/status"; }
RSS_IDLE="$(rss_kib VmRSS)"

RESULTS="$("$BIN/tabbify-register-bench" --url "$URL" --admin-token-file "$WORK/data/admin-token" \
  --peers "$PEERS" --concurrency "$CONCURRENCY" --list-requests "$LIST_REQUESTS")"
RSS_AFTER="$(rss_kib VmRSS)"
RSS_PEAK="$(rss_kib VmHWM)"
DB_BYTES="$(du -cb "$WORK/data"/coordinator.db* | awk 'END {print $1}')"

get() { awk -v k="$1" '$1 == k {print $2}' <<<"$RESULTS"; }
REG_RPS="$(get registrations_per_sec)"
LIST_P99="$(get list_p99_ms)"

echo "== coordinator register bench: $PEERS peers, concurrency $CONCURRENCY, $(nproc) cores =="
echo "$RESULTS"
echo "rss_idle_kib $RSS_IDLE"
echo "rss_after_kib $RSS_AFTER"
echo "rss_peak_kib $RSS_PEAK"
echo "db_bytes $DB_BYTES"
awk -v r="$REG_RPS" -v l="$LIST_P99" 'BEGIN {
  printf "registrations_vs_target_ratio %.2f (target 2000/s)\n", r / 2000
  printf "list_p99_vs_target_ratio %.2f (target < 50 ms; below 1 is good)\n", l / 50
}'
