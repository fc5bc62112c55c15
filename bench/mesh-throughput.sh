#!/usr/bin/env bash
# Mesh data plane throughput and latency, against raw veth and wireguard-go, in ONE run.
#
# Two network namespaces joined by a veth pair (the underlay). Measured in order, each with
# iperf3 (TCP, one stream, DURATION seconds) and ping (COUNT echoes at 10 ms intervals):
#   1. raw veth (IPv4 underlay addresses)
#   2. this mesh: `tabbify-mesh up` in each namespace, ULAs on TUN devices, MTU 1420
#   3. wireguard-go (Debian package): a TUN per side, same ULAs, same MTU, same routes
# Prints each figure and the ratio mesh / wireguard-go.
#
# Needs root, iproute2, iperf3, iputils-ping, wireguard-go, wireguard-tools.
# Env: DURATION (s, default 10), COUNT (pings, default 200), CARGO_TARGET_DIR (default target/).
set -euo pipefail

DURATION=${DURATION:-10}
COUNT=${COUNT:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/tabbify-mesh

for tool in ip iperf3 ping wireguard-go wg; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y --no-install-recommends iproute2 iperf3 iputils-ping wireguard-go wireguard-tools)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

echo "building tabbify-mesh (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p tabbify-mesh --bin tabbify-mesh)

NA=tbfbench-$$-a
NB=tbfbench-$$-b
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for ns in "$NA" "$NB"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NA"
ip netns add "$NB"
ip -n "$NA" link add eth0 type veth peer name eth0 netns "$NB"
for ns in "$NA" "$NB"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
ip -n "$NA" addr add 10.201.0.1/24 dev eth0
ip -n "$NB" addr add 10.201.0.2/24 dev eth0

ULA_A=fd7a:be0c:1:1::1
ULA_B=fd7a:be0c:1:2::1
MESH=fd7a:be0c:1::/48

# measure LABEL SERVER_ADDR -> sets MBPS and RTT
measure() {
  local label=$1 addr=$2
  ip netns exec "$NB" iperf3 -s -1 -B "$addr" >/dev/null 2>&1 &
  local srv=$!
  sleep 0.5
  # Warm up (handshakes, ARP/ND) before measuring.
  ip netns exec "$NA" ping -c 2 -W 2 "$addr" >/dev/null 2>&1 || true
  MBPS=$(ip netns exec "$NA" iperf3 -c "$addr" -t "$DURATION" -f m 2>&1 | awk '/receiver/ {print $(NF-2)}')
  wait "$srv" 2>/dev/null || true
  RTT=$(ip netns exec "$NA" ping -c "$COUNT" -i 0.01 -q "$addr" | awk -F'/' '/^rtt/ {print $5}')
  printf '%-14s throughput %10s Mbit/s   ping avg %8s ms\n' "$label" "${MBPS:-?}" "${RTT:-?}"
}

# --- 1. raw veth ------------------------------------------------------------------------------
measure "raw veth" 10.201.0.2
RAW_MBPS=$MBPS RAW_RTT=$RTT

# --- 2. this mesh -----------------------------------------------------------------------------
KA=$("$BIN" genkey); KB=$("$BIN" genkey)
PA=$(echo "$KA" | "$BIN" pubkey); PB=$(echo "$KB" | "$BIN" pubkey)
cat >"$WORK/a.json" <<JSON
{"private_key":"$KA","tun_name":"tbf0","listen_port":51820,"ula":"$ULA_A","subnet":"fd7a:be0c:1:1::/64","mesh_prefix":"$MESH","mtu":1420,
 "peers":[{"public_key":"$PB","allowed":"fd7a:be0c:1:2::/64","endpoint":"10.201.0.2:51820"}]}
JSON
cat >"$WORK/b.json" <<JSON
{"private_key":"$KB","tun_name":"tbf0","listen_port":51820,"ula":"$ULA_B","subnet":"fd7a:be0c:1:2::/64","mesh_prefix":"$MESH","mtu":1420,
 "peers":[{"public_key":"$PA","allowed":"fd7a:be0c:1:1::/64","endpoint":"10.201.0.1:51820"}]}
JSON
for side in a b; do
  ns=$NA; [ $side = b ] && ns=$NB
  RUST_LOG=warn ip netns exec "$ns" "$BIN" up --config "$WORK/$side.json" >"$WORK/$side.out" 2>"$WORK/$side.err" &
  PIDS+=($!)
done
for side in a b; do
  for _ in $(seq 100); do grep -q "tabbify-mesh up" "$WORK/$side.out" && break; sleep 0.1; done
  grep -q "tabbify-mesh up" "$WORK/$side.out" || { cat "$WORK/$side.err" >&2; exit 1; }
done
measure "tabbify-mesh" "$ULA_B"
MESH_MBPS=$MBPS MESH_RTT=$RTT
for p in "${PIDS[@]}"; do kill -TERM "$p"; wait "$p" 2>/dev/null || true; done
PIDS=()

# --- 3. wireguard-go --------------------------------------------------------------------------
(umask 077; wg genkey >"$WORK/wa.key"; wg genkey >"$WORK/wb.key")
WPA=$(wg pubkey <"$WORK/wa.key"); WPB=$(wg pubkey <"$WORK/wb.key")
# The control socket (/var/run/wireguard/IFNAME.sock) is shared by all namespaces: one name per
# side, unique to this run.
WG_IF_A=wga$$ WG_IF_B=wgb$$
wg_up() { # ns ifname key ula peer_pub peer_subnet peer_endpoint
  local ns=$1 dev=$2
  WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 ip netns exec "$ns" wireguard-go -f "$dev" >"$WORK/$dev.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do [ -S "/var/run/wireguard/$dev.sock" ] && break; sleep 0.1; done
  ip netns exec "$ns" wg set "$dev" private-key "$3" listen-port 51820 peer "$5" allowed-ips "$6" endpoint "$7"
  ip -n "$ns" link set "$dev" mtu 1420 up
  ip -n "$ns" -6 addr add "$4/64" dev "$dev"
  ip -n "$ns" -6 route add "$MESH" dev "$dev" metric 1
}
wg_up "$NA" "$WG_IF_A" "$WORK/wa.key" "$ULA_A" "$WPB" fd7a:be0c:1:2::/64 10.201.0.2:51820
wg_up "$NB" "$WG_IF_B" "$WORK/wb.key" "$ULA_B" "$WPA" fd7a:be0c:1:1::/64 10.201.0.1:51820
sleep 0.5
measure "wireguard-go" "$ULA_B"
WG_MBPS=$MBPS WG_RTT=$RTT

echo
echo "wireguard-go: $(dpkg-query -W -f '${Version}' wireguard-go 2>/dev/null || echo unknown)   cores: $(nproc)   duration: ${DURATION}s"
# A side that failed (no figure) makes its ratios n/a, never 0.00x.
awk -v m="$MESH_MBPS" -v w="$WG_MBPS" -v r="$RAW_MBPS" -v mr="$MESH_RTT" -v wr="$WG_RTT" -v d="$DURATION" -v c="$COUNT" '
function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%.2fx", a / b) : "n/a" }
BEGIN {
  printf "samples: throughput 1 iperf3 run of %ss per side; latency the mean of %d pings per side\n", d, c;
  printf "throughput ratio mesh / wireguard-go: %s\n", ratio(m, w);
  printf "throughput ratio mesh / raw veth:     %s\n", ratio(m, r);
  printf "latency ratio wireguard-go / mesh:    %s (above 1: mesh is faster)\n", ratio(wr, mr);
}'
