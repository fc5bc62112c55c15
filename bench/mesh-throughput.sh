#!/usr/bin/env bash
# Mesh data plane throughput, CPU cost and latency, against raw veth and wireguard-go, in ONE run.
#
# Two network namespaces joined by a veth pair (the underlay). Four paths are up at once, each
# with its own addresses, and measured in interleaved rounds (so a busy moment on a shared machine
# hits every path alike):
#   raw        the veth itself (IPv4 underlay addresses)
#   mesh       `tabbify-mesh up` in each namespace (offload as the kernel allows), MTU 1420
#   mesh-nooff the same with "offload": false (plain TUN, one datagram per system call slot)
#   wg-go      wireguard-go (Debian package), same MTU, its own /48
# Each round: COUNT pings at 10 ms intervals over every path, then for every path iperf3 TCP with
# one stream and with four (-P 4), DURATION seconds each. CPU seconds per GiB moved = (iperf3 client + server
# CPU as iperf3 reports it + the tunnel processes' user+system time) / GiB received; softirq work
# done in ksoftirqd is not counted for any path.
# The summary gives the best of ROUNDS for each figure (highest throughput, lowest CPU/GiB,
# lowest ping average) with the number of samples behind it, and ratios; `n/a` where a side has
# no sample.
#
# Needs root, iproute2, iperf3, iputils-ping, jq, wireguard-go, wireguard-tools.
# Env: DURATION (s, default 10), COUNT (pings, default 200), ROUNDS (default 3),
#      CARGO_TARGET_DIR (default target/).
set -euo pipefail

DURATION=${DURATION:-10}
COUNT=${COUNT:-200}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/tabbify-mesh
PATHS="raw mesh mesh-nooff wg-go"

for tool in ip iperf3 ping jq wireguard-go wg; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y --no-install-recommends iproute2 iperf3 iputils-ping jq wireguard-go wireguard-tools)" >&2; exit 1; }
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

# --- the mesh, twice (offload allowed / forced off) ----------------------------------------------
# mesh_up NAME TUN PORT NET OFFLOAD: prefix fd7a:be0c:NET::/48, side a owns :1::/64, b :2::/64.
declare -A TUNNEL_PIDS TARGET_ADDR
TARGET_ADDR[raw]=10.201.0.2
mesh_up() {
  local name=$1 tun=$2 port=$3 net=$4 offload=$5
  local ka kb pa pb side ns
  ka=$("$BIN" genkey); kb=$("$BIN" genkey)
  pa=$(echo "$ka" | "$BIN" pubkey); pb=$(echo "$kb" | "$BIN" pubkey)
  for side in a b; do
    local key=$ka me=1 other=2 peer=$pb endpoint=10.201.0.2
    [ $side = b ] && key=$kb me=2 other=1 peer=$pa endpoint=10.201.0.1
    cat >"$WORK/$name-$side.json" <<JSON
{"private_key":"$key","tun_name":"$tun","listen_port":$port,"ula":"fd7a:be0c:$net:$me::1","subnet":"fd7a:be0c:$net:$me::/64",
 "mesh_prefix":"fd7a:be0c:$net::/48","mtu":1420,"offload":$offload,
 "peers":[{"public_key":"$peer","allowed":"fd7a:be0c:$net:$other::/64","endpoint":"$endpoint:$port"}]}
JSON
    ns=$NA; [ $side = b ] && ns=$NB
    RUST_LOG=warn ip netns exec "$ns" "$BIN" up --config "$WORK/$name-$side.json" \
      --stats-file "$WORK/$name-$side.stats" >"$WORK/$name-$side.out" 2>"$WORK/$name-$side.err" &
    PIDS+=($!)
    TUNNEL_PIDS[$name]="${TUNNEL_PIDS[$name]:-} $!"
  done
  for side in a b; do
    for _ in $(seq 100); do grep -q "tabbify-mesh up" "$WORK/$name-$side.out" && break; sleep 0.1; done
    grep -q "tabbify-mesh up" "$WORK/$name-$side.out" || { cat "$WORK/$name-$side.err" >&2; exit 1; }
  done
  TARGET_ADDR[$name]=fd7a:be0c:$net:2::1
}
mesh_up mesh tbf0 51820 1 true
mesh_up mesh-nooff tbf1 51822 3 false

# --- wireguard-go --------------------------------------------------------------------------------
(umask 077; wg genkey >"$WORK/wa.key"; wg genkey >"$WORK/wb.key")
WPA=$(wg pubkey <"$WORK/wa.key"); WPB=$(wg pubkey <"$WORK/wb.key")
# The control socket (/var/run/wireguard/IFNAME.sock) is shared by all namespaces: one name per
# side, unique to this run.
WG_IF_A=wga$$ WG_IF_B=wgb$$
wg_up() { # ns ifname key ula peer_pub peer_subnet peer_endpoint
  local ns=$1 dev=$2
  WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 ip netns exec "$ns" wireguard-go -f "$dev" >"$WORK/$dev.log" 2>&1 &
  PIDS+=($!)
  TUNNEL_PIDS[wg-go]="${TUNNEL_PIDS[wg-go]:-} $!"
  for _ in $(seq 50); do [ -S "/var/run/wireguard/$dev.sock" ] && break; sleep 0.1; done
  ip netns exec "$ns" wg set "$dev" private-key "$3" listen-port 51821 peer "$5" allowed-ips "$6" endpoint "$7"
  ip -n "$ns" link set "$dev" mtu 1420 up
  ip -n "$ns" -6 addr add "$4/64" dev "$dev"
  ip -n "$ns" -6 route add fd7a:be0c:2::/48 dev "$dev" metric 1
}
wg_up "$NA" "$WG_IF_A" "$WORK/wa.key" fd7a:be0c:2:1::1 "$WPB" fd7a:be0c:2:2::/64 10.201.0.2:51821
wg_up "$NB" "$WG_IF_B" "$WORK/wb.key" fd7a:be0c:2:2::1 "$WPA" fd7a:be0c:2:1::/64 10.201.0.1:51821
TARGET_ADDR[wg-go]=fd7a:be0c:2:2::1

ip netns exec "$NB" iperf3 -s >/dev/null 2>&1 &
PIDS+=($!)
sleep 1
# Warm up every path (handshakes, neighbour discovery).
for p in $PATHS; do ip netns exec "$NA" ping -c 3 -i 0.2 -W 2 "${TARGET_ADDR[$p]}" >/dev/null 2>&1 || true; done

CLK_TCK=$(getconf CLK_TCK)
# CPU ticks (user + system, all threads) of the tunnel processes of path $1.
tunnel_ticks() {
  local total=0 pid t
  for pid in ${TUNNEL_PIDS[$1]:-}; do
    t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}

# run_iperf PATH STREAMS: appends "mbps cpu_s_per_gib" to $WORK/PATH-STREAMS (nothing on failure).
run_iperf() {
  local path=$1 streams=$2 before after json
  before=$(tunnel_ticks "$path")
  if json=$(ip netns exec "$NA" timeout $((DURATION + 30)) iperf3 -c "${TARGET_ADDR[$path]}" \
      -t "$DURATION" -P "$streams" -J 2>/dev/null); then
    after=$(tunnel_ticks "$path")
    echo "$json" | jq -r --argjson ticks "$((after - before))" --argjson hz "$CLK_TCK" '
      .end as $e | ($e.sum_received.seconds) as $s |
      (($e.cpu_utilization_percent.host_total + $e.cpu_utilization_percent.remote_total) / 100 * $s
        + $ticks / $hz) as $cpu |
      select($e.sum_received.bytes > 0) |
      "\($e.sum_received.bits_per_second / 1e6) \($cpu / ($e.sum_received.bytes / 1073741824))"' \
      >>"$WORK/$path-$streams" 2>/dev/null || true
  fi
}

run_ping() {
  local path=$1 avg
  avg=$(ip netns exec "$NA" ping -c "$COUNT" -i 0.01 -q "${TARGET_ADDR[$path]}" 2>/dev/null \
    | awk -F'/' '/^rtt/ {print $5}') || true
  [ -n "$avg" ] && echo "$avg" >>"$WORK/$path-ping"
  return 0
}

# Pings first in each round, after a pause: right after a bulk transfer every path's latency is
# several times its settled value, whichever path carried the transfer.
for round in $(seq "$ROUNDS"); do
  sleep 2
  for p in $PATHS; do
    echo "round $round/$ROUNDS: ping $p" >&2
    run_ping "$p"
  done
  for p in $PATHS; do
    echo "round $round/$ROUNDS: iperf3 $p" >&2
    run_iperf "$p" 1
    run_iperf "$p" 4
  done
done

# best FILE COLUMN max|min FORMAT -> "value n" or "n/a 0"
best() {
  local file=$WORK/$1 col=$2 how=$3 fmt=$4
  [ -s "$file" ] || { echo "n/a 0"; return; }
  awk -v c="$col" -v how="$how" -v fmt="$fmt" '{ v = $c + 0; if (NR == 1 || (how == "max" ? v > b : v < b)) b = v }
    END { printf fmt " %d\n", b, NR }' "$file"
}

declare -A V N
for p in $PATHS; do
  for k in 1 4; do
    read -r V[$p-tp$k] N[$p-tp$k] < <(best "$p-$k" 1 max %.0f)
    read -r V[$p-cpu$k] N[$p-cpu$k] < <(best "$p-$k" 2 min %.2f)
  done
  read -r V[$p-ping] N[$p-ping] < <(best "$p-ping" 1 min %.3f)
done

echo
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end (shared machines skew every figure)"
echo "wireguard-go $(dpkg-query -W -f '${Version}' wireguard-go 2>/dev/null || echo unknown), iperf3 TCP ${DURATION}s per sample, ping ${COUNT} echoes per sample, best of ${ROUNDS} rounds"
offloads=$(jq -c '.offload' "$WORK/mesh-a.stats" 2>/dev/null || echo '?')
echo "mesh offloads in use: $offloads (mesh-nooff: forced off)"
echo
printf '%-11s %18s %18s %18s %18s %16s\n' path "1 stream Mbit/s" "4 streams Mbit/s" "CPU s/GiB (1)" "CPU s/GiB (4)" "ping avg ms"
for p in $PATHS; do
  printf '%-11s %12s (n=%s) %12s (n=%s) %12s (n=%s) %12s (n=%s) %10s (n=%s)\n' "$p" \
    "${V[$p-tp1]}" "${N[$p-tp1]}" "${V[$p-tp4]}" "${N[$p-tp4]}" \
    "${V[$p-cpu1]}" "${N[$p-cpu1]}" "${V[$p-cpu4]}" "${N[$p-cpu4]}" \
    "${V[$p-ping]}" "$((${N[$p-ping]} * COUNT))"
done
echo
# ratio A B: A / B, or n/a when either is missing.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2fx\n", a / b }'
}
printf '%-34s %10s %10s\n' ratio "1 stream" "4 streams"
printf '%-34s %10s %10s\n' "throughput mesh / raw veth" "$(ratio "${V[mesh-tp1]}" "${V[raw-tp1]}")" "$(ratio "${V[mesh-tp4]}" "${V[raw-tp4]}")"
printf '%-34s %10s %10s\n' "throughput mesh / wireguard-go" "$(ratio "${V[mesh-tp1]}" "${V[wg-go-tp1]}")" "$(ratio "${V[mesh-tp4]}" "${V[wg-go-tp4]}")"
printf '%-34s %10s %10s\n' "throughput mesh / mesh-nooff" "$(ratio "${V[mesh-tp1]}" "${V[mesh-nooff-tp1]}")" "$(ratio "${V[mesh-tp4]}" "${V[mesh-nooff-tp4]}")"
printf '%-34s %10s %10s\n' "CPU/GiB wireguard-go / mesh" "$(ratio "${V[wg-go-cpu1]}" "${V[mesh-cpu1]}")" "$(ratio "${V[wg-go-cpu4]}" "${V[mesh-cpu4]}")"
printf '%-34s %10s\n' "ping wireguard-go / mesh" "$(ratio "${V[wg-go-ping]}" "${V[mesh-ping]}") (above 1: mesh is faster)"
printf '%-34s %10s\n' "ping mesh / raw veth" "$(ratio "${V[mesh-ping]}" "${V[raw-ping]}")"
