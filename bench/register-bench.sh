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

# One coordinator per mode, each on a fresh data dir: plaintext (--insecure-no-mtls, bearer
# credentials) and the default (TLS from the mesh CA, every registration a new TLS connection
# that gets a node certificate issued for its CSR).
run_mode() { # $1: mode name, then coordinator flags
  local mode="$1"; shift
  local dir="$WORK/$mode"
  mkdir -p "$dir"
  mkfifo "$dir/ready"
  RUST_LOG=warn "$BIN/tabbify-coordinator" --listen 127.0.0.1:0 --data-dir "$dir/data" "$@" \
    >"$dir/ready" 2>"$dir/coordinator.log" &
  COORD_PID=$!
  read -r -t 30 READY_LINE <"$dir/ready" || { echo "coordinator did not start" >&2; cat "$dir/coordinator.log" >&2; exit 1; }
  local url="${READY_LINE#tabbify-coordinator listening on }"
  local ca=()
  [[ -f "$dir/data/ca.crt" ]] && ca=(--ca-file "$dir/data/ca.crt")
  "$BIN/tabbify-register-bench" --url "$url" --admin-token-file "$dir/data/admin-token" "${ca[@]}" \
    --peers "$PEERS" --concurrency "$CONCURRENCY" --list-requests "$LIST_REQUESTS" >"$dir/results"
  echo "rss_peak_kib $(awk '$1 == "VmHWM:" {print $2}' "/proc/$COORD_PID/status")" >>"$dir/results"
  kill -TERM "$COORD_PID" 2>/dev/null || true
  wait "$COORD_PID" 2>/dev/null || true
  COORD_PID=""
}

run_mode plain --insecure-no-mtls
run_mode mtls

get() { awk -v k="$2" '$1 == k {print $2}' "$WORK/$1/results"; }
echo "== coordinator register bench: $PEERS peers, concurrency $CONCURRENCY, $(nproc) cores, one run each =="
for mode in plain mtls; do
  echo "-- $mode"
  cat "$WORK/$mode/results"
done
awk -v p="$(get plain registrations_per_sec)" -v m="$(get mtls registrations_per_sec)" \
    -v lp="$(get plain list_p99_ms)" -v lm="$(get mtls list_p99_ms)" 'BEGIN {
  if (p > 0 && m > 0) printf "mtls_registration_slowdown %.2fx (aim <= 1.5x)\n", p / m
  else print "mtls_registration_slowdown n/a"
  printf "mtls_list_p99_ms %s (aim < 50 ms at 10,000 peers); plaintext %s\n", lm, lp
}'
