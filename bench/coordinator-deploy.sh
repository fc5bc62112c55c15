#!/usr/bin/env bash
# The whole deploy path and the time to re-place after a node loss, on this machine:
#
#  1. deploy -> first 200: from the start of `tcli deploy -f tabbify.toml` (stage the artifact on
#     the appsrv, create the app at the coordinator, the node pulls its assignment, fetches and
#     verifies the artifact, starts a runner, reports it running; tcli waits for that) to the
#     first HTTP 200 from the printed address. N runs (default 10), each a new app with its own
#     artifact (hello-wasm with a custom section naming the run appended, so its digest differs):
#     every run uploads, fetches and compiles afresh, none hits the appsrv, the node's artifact
#     cache or the compile cache. Also printed: the same through the coordinator's
#     ingress, and the peer "tabbify-runner started by hand", measured by the supervisor's own
#     deploy API in the same run (POST /v1/apps -> first 200), so the cost of the coordinator hop
#     is visible as a ratio.
#  2. re-place after a node loss: an app with one replica on one node; that node's supervisor
#     and runners are SIGKILLed; measured until the replica runs on the other node and answers
#     200; the killed node is started again for the next round (REPLACE_RUNS rounds, default 3).
#     The figure is bounded below by the liveness settings (offline after 3 missed heartbeats of
#     HEARTBEAT, then --node-lost-grace GRACE), which are printed with it.
#
# Every figure says how many samples it is the median of.
#
# Two nodes run on loopback with the control plane only (`--dataplane off`, apps on 127.0.0.1):
# the figures are about placement and the deploy path, not the WireGuard data plane
# (bench/mesh-throughput.sh measures that).
#
#   bench/coordinator-deploy.sh [N=10]      env: HEARTBEAT=1s GRACE=2s REPLACE_RUNS=3
#
# Builds what it needs (release binaries, examples/hello-wasm). Needs curl and python3. Figures
# go to stdout and to bench/out/coordinator-deploy.txt.
set -euo pipefail

n="${1:-10}"
heartbeat="${HEARTBEAT:-1s}"
grace="${GRACE:-2s}"
replace_runs="${REPLACE_RUNS:-3}"
[ "$n" -ge 2 ] && [ "$replace_runs" -ge 2 ] || { echo "take at least 2 samples of each figure" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$here/out"
report="$here/out/coordinator-deploy.txt"
say() { echo "$*" | tee -a "$report"; }
: > "$report"

(cd "$root" && cargo build --quiet --release -p tabbify-coordinator -p tabbify-appsrv \
    -p tabbify-supervisor -p tabbify-runner -p tcli)
bin="$target/release"
wasm="$(bash "$root/examples/build.sh" hello-wasm | tail -1)"

work="$(mktemp -d /tmp/tabbify-coord-bench.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    # Runners outlive their supervisor by design: end the ones this run started.
    pkill -9 -f -- "--app-dir $work/" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
wait_200() { # url [timeout_s]: polls until 200, every 2 ms
    local deadline=$(( $(now_ms) + ${2:-60} * 1000 ))
    until [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1")" = 200 ]; do
        [ "$(now_ms)" -lt "$deadline" ] || { echo "no 200 from $1" >&2; return 1; }
        sleep 0.002
    done
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# "median M ms of K runs (min..max)" for the numbers on stdin.
summary() { sort -n | awk '{a[NR]=$1} END {m = (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2);
    printf "median %s ms of %d runs (%s..%s)", m, NR, a[1], a[NR]}'; }
# A copy of the component with a custom section naming $2 appended: valid, and a new digest.
distinct_wasm() { # src tag -> path
    local out="$work/wasm/$2.wasm"
    mkdir -p "$work/wasm"
    python3 - "$1" "$out" "$2" <<'PY'
import sys
src, out, tag = sys.argv[1], sys.argv[2], sys.argv[3]
def leb(n):
    b = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        b.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(b)
name, payload = b"tabbify-bench-run", tag.encode()
body = leb(len(name)) + name + payload
open(out, "wb").write(open(src, "rb").read() + b"\x00" + leb(len(body)) + body)
PY
    echo "$out"
}

cport="$(free_port)"; aport="$(free_port)"
RUST_LOG=warn "$bin/tabbify-coordinator" --listen "127.0.0.1:$cport" --data-dir "$work/coord" \
    --heartbeat-interval "$heartbeat" --node-lost-grace "$grace" >/dev/null 2>"$work/coord.err" &
pids+=($!)
coord="http://127.0.0.1:$cport"
for _ in $(seq 1 200); do curl -sf "$coord/health" >/dev/null 2>&1 && break; sleep 0.05; done
admin="$work/coord/admin-token"
RUST_LOG=warn "$bin/tabbify-appsrv" --listen "127.0.0.1:$aport" --data-dir "$work/appsrv" \
    --token-key-file "$work/coord/signing-key.pub" >/dev/null 2>"$work/appsrv.err" &
pids+=($!)
appsrv="http://127.0.0.1:$aport"
for _ in $(seq 1 200); do curl -s -o /dev/null "$appsrv/" 2>/dev/null && break; sleep 0.05; done
tcli() { XDG_CACHE_HOME="$work/cache" "$bin/tcli" --coordinator "$coord" --admin-token-file "$admin" "$@"; }
token="$(tcli token create --reusable)"

declare -A node_pid node_port
start_node() { # name
    local port; port="$(free_port)"
    RUST_LOG=warn "$bin/tabbify-supervisor" --coordinator "$coord" --join-token "$token" \
        --name "$1" --data-dir "$work/$1" --dataplane off --bind "127.0.0.1:$port" \
        --runner-bin "$bin/tabbify-runner" --probe-interval 1h --control-socket off \
        >/dev/null 2>"$work/$1.err" &
    node_pid[$1]=$!
    node_port[$1]=$port
    pids+=($!)
    for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/health" | grep -q '"joined"' && return; sleep 0.05; done
    echo "node $1 did not join" >&2; cat "$work/$1.err" >&2; exit 1
}
start_node n1
optoken="$(tcli login --print 2>/dev/null)"

manifest() { # name replicas component
    # The smallest reservation, so that every app of the run fits on one 2-core node.
    printf '[app]\nname = "%s"\nreplicas = %s\n\n[runtime]\nkind = "wasm"\ncomponent = "%s"\n\n[resources]\ncpus = 0.05\nmemory_mb = 32\n' \
        "$1" "$2" "$3" > "$work/$1.toml"
    echo "$work/$1.toml"
}

say "coordinator-deploy: hello-wasm, $n deploys, $(nproc) cores, heartbeat $heartbeat, grace $grace, $(date -u +%FT%TZ)"
totals=(); tclis=(); ingress=(); direct=()
for i in $(seq 1 "$n"); do
    component="$(distinct_wasm "$wasm" "bench-$i")"
    m="$(manifest "bench-$i" 1 "$component")"
    t0="$(now_ms)"
    url="$(tcli deploy -q -f "$m" --appsrv "$appsrv")"
    t1="$(now_ms)"
    wait_200 "$url"
    t2="$(now_ms)"
    wait_200 "$coord/app/bench-$i/"
    t3="$(now_ms)"
    tclis+=($((t1 - t0))); totals+=($((t2 - t0))); ingress+=($((t3 - t0)))
    # The peer: the same component deployed on the node's own API (no coordinator, no appsrv).
    d0="$(now_ms)"
    resp="$(sed "s/name = \"bench-$i\"/name = \"direct-$i\"/" "$m" > "$work/direct.toml" && \
        curl -s -H "Authorization: Bearer $optoken" -F "manifest=@$work/direct.toml" \
            -F "artifact=@$(distinct_wasm "$wasm" "direct-$i")" "http://127.0.0.1:${node_port[n1]}/v1/apps")"
    durl="$(echo "$resp" | grep -o '"url":"[^"]*"' | cut -d'"' -f4)"
    wait_200 "$durl"
    d1="$(now_ms)"
    direct+=($((d1 - d0)))
done
m_total="$(printf '%s\n' "${totals[@]}" | median)"
m_tcli="$(printf '%s\n' "${tclis[@]}" | median)"
m_ingress="$(printf '%s\n' "${ingress[@]}" | median)"
m_direct="$(printf '%s\n' "${direct[@]}" | median)"
say "each run a distinct artifact: nothing cached on the appsrv, the node or the compile cache"
say "tcli deploy -> first 200 at the printed address: $(printf '%s\n' "${totals[@]}" | summary) (tcli returned after a median ${m_tcli} ms)"
say "tcli deploy -> first 200 through the coordinator's ingress: $(printf '%s\n' "${ingress[@]}" | summary)"
say "peer, POST /v1/apps on the node -> first 200: $(printf '%s\n' "${direct[@]}" | summary)"
say "ratio whole path / node API (medians): $(python3 -c "print(f'{$m_total/$m_direct:.2f}x')")"

# Re-place after a node loss, REPLACE_RUNS rounds: kill the node holding the replica, time the
# move, start the killed node again for the next round.
start_node n2
replaced=()
for r in $(seq 1 "$replace_runs"); do
    m="$(manifest "moving-$r" 1 "$(distinct_wasm "$wasm" "moving-$r")")"
    url="$(tcli deploy -q -f "$m" --appsrv "$appsrv")"
    wait_200 "$url"
    victim="$(tcli app "moving-$r" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["replicas"][0]["node_name"])')"
    kill -9 "${node_pid[$victim]}"
    pkill -9 -f -- "--app-dir $work/$victim/" 2>/dev/null || true
    k0="$(now_ms)"
    while :; do
        new="$(tcli app "moving-$r" --json | python3 -c '
import json,sys
r = json.load(sys.stdin)["replicas"][0]
print(r.get("node_name","-") if r.get("state") == "running" else "-", r.get("url",""))')"
        node="${new%% *}"; nurl="${new#* }"
        if [ "$node" != "-" ] && [ "$node" != "$victim" ]; then break; fi
        [ $(( $(now_ms) - k0 )) -lt 120000 ] || { echo "not re-placed within 120 s" >&2; exit 1; }
        sleep 0.02
    done
    wait_200 "$nurl"
    k1="$(now_ms)"
    replaced+=($((k1 - k0)))
    say "re-place round $r: $victim killed -> serving on $node after $((k1 - k0)) ms"
    start_node "$victim"
done
say "re-place after node loss: $(printf '%s\n' "${replaced[@]}" | summary) (floor: 3 missed heartbeats of $heartbeat + grace $grace)"
say "report: $report"
