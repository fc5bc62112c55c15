#!/usr/bin/env bash
# Cost of peers in the mesh data plane: memory per configured peer (RSS delta of `tabbify-mesh up`
# going from 0 to N peers) and the time `set_peers` takes to apply a roster of N peers (creating
# them, re-applying the same set, and moving every endpoint).
#
# Runs in a fresh network namespace with only loopback: no peer endpoint is reachable, and
# without traffic or keepalives nothing is sent anyway. Needs root.
# Env: PEERS (default 1000), CARGO_TARGET_DIR (default target/).
set -euo pipefail

PEERS=${PEERS:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/tabbify-mesh
[ "$(id -u)" = 0 ] || { echo "needs root (network namespace)" >&2; exit 1; }

echo "building tabbify-mesh (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p tabbify-mesh --bin tabbify-mesh)

NS=tbfbench-$$-peers
WORK=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  sleep 0.2
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up

KEY=$("$BIN" genkey)
# write_config N PORT_BASE: N peers with distinct keys, /64s and endpoints. The mesh prefix is a
# /32 so that more than the 65,535 /64s of a /48 fit (the data plane takes any mesh prefix).
write_config() {
  local n=$1 port=$2
  {
    printf '{"private_key":"%s","ula":"fd7a:be0c::1","subnet":"fd7a:be0c::/64","mesh_prefix":"fd7a:be0c::/32","peers":[' "$KEY"
    for ((i = 1; i <= n; i++)); do
      [ "$i" -gt 1 ] && printf ','
      # Distinct 32-byte keys without a process per key: 42 base64 digits (the index, zero
      # padded), then "A=" (the last symbol of a 32-byte key carries 2 bits, here zero).
      printf -v key '%042dA=' "$i"
      printf '{"public_key":"%s","allowed":"fd7a:be0c:%x:%x::/64","endpoint":"10.%d.%d.%d:%d"}' \
        "$key" $((i >> 16)) $((i & 65535)) $((200 + i / 62500)) $((i / 250 % 250)) $((i % 250 + 1)) "$port"
    done
    printf ']}'
  } >"$WORK/cfg.tmp"
  mv "$WORK/cfg.tmp" "$WORK/cfg.json"
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
applied() { grep -c "peer set applied" "$WORK/err" || true; }
wait_applied() { # count
  for _ in $(seq 600); do [ "$(applied)" -ge "$1" ] && return 0; sleep 0.05; done
  echo "set_peers did not finish" >&2; cat "$WORK/err" >&2; exit 1
}
last_us() { grep "peer set applied" "$WORK/err" | tail -1 | sed -E 's/.*elapsed_us=([0-9]+).*/\1/'; }

write_config 0 51820
RUST_LOG=info NO_COLOR=1 ip netns exec "$NS" "$BIN" up --config "$WORK/cfg.json" >"$WORK/out" 2>"$WORK/err" &
PID=$!
for _ in $(seq 100); do grep -q "tabbify-mesh up" "$WORK/out" && break; sleep 0.1; done
grep -q "tabbify-mesh up" "$WORK/out" || { cat "$WORK/err" >&2; exit 1; }
wait_applied 1
sleep 0.5
RSS0=$(rss_kb)

write_config "$PEERS" 51820
kill -HUP "$PID"; wait_applied 2
CREATE_US=$(last_us)
sleep 0.5
RSS1=$(rss_kb)

kill -HUP "$PID"; wait_applied 3
NOOP_US=$(last_us)

write_config "$PEERS" 51821
kill -HUP "$PID"; wait_applied 4
MOVE_US=$(last_us)

kill -TERM "$PID"; wait "$PID" || true; PID=

awk -v n="$PEERS" -v r0="$RSS0" -v r1="$RSS1" -v c="$CREATE_US" -v z="$NOOP_US" -v m="$MOVE_US" 'BEGIN {
  printf "peers:                         %d\n", n;
  printf "RSS with 0 peers:              %d KiB\n", r0;
  printf "RSS with %d peers:           %d KiB\n", n, r1;
  printf "memory per peer:               %.2f KiB\n", (r1 - r0) / n;
  printf "set_peers, %d new peers:     %.2f ms (%.1f us/peer)\n", n, c / 1000, c / n;
  printf "set_peers, same set again:     %.2f ms\n", z / 1000;
  printf "set_peers, every endpoint moved: %.2f ms\n", m / 1000;
}'
