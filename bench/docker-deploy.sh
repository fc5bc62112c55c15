#!/usr/bin/env bash
# A docker app's deploy through the supervisor against `docker run` by hand, same image, same run:
#
#  (a) ours: from the start of `POST /v1/apps` (a docker manifest, the image already on the node)
#      to the first HTTP 200 from the app's address;
#  (b) peer: from the start of `docker run -d -p 127.0.0.1:PORT:8080 IMAGE` to the first HTTP 200
#      from that port, polled by hand.
#
# The image is examples/hello-http (static, musl) in an image built FROM scratch once per run. The
# two are measured in turns, N times each (default 5); the medians and the ratio ours/peer are
# printed (aim: at most 1.2x). Both poll with the same loop (a fresh connection every 2 ms).
#
#   bench/docker-deploy.sh [N=5]
#
# Builds what it needs (release supervisor and runner, hello-http). Needs a Docker daemon, curl
# and python3. Figures go to stdout and to bench/out/docker-deploy.txt.
set -euo pipefail

n="${1:-5}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$here/out"
report="$here/out/docker-deploy.txt"
say() { echo "$*" | tee -a "$report"; }
: > "$report"

docker info >/dev/null 2>&1 || { echo "docker-deploy.sh: no Docker daemon answers" >&2; exit 2; }
(cd "$root" && cargo build --quiet --release -p tabbify-supervisor -p tabbify-runner)
supervisor="$target/release/tabbify-supervisor"
runner="$target/release/tabbify-runner"
hello="$(bash "$root/examples/build.sh" hello-http | tail -1)"

work="$(mktemp -d /tmp/tabbify-docker-bench.XXXXXX)"
image="tabbify-bench/hello-http:$$"
peer_name="tabbify-bench-peer-$$"
sup_pid=""
cleanup() {
    if [ -n "$sup_pid" ]; then kill "$sup_pid" 2>/dev/null || true; wait "$sup_pid" 2>/dev/null || true; fi
    # Runners outlive their supervisor by design: stop the ones this run started, by pid file.
    for f in "$work"/node/apps/*/v*/runner.pid; do
        [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
    done
    # The containers of this run's apps (their app_dir label lies in $work), and the peer's.
    docker ps -a --no-trunc --filter label=tabbify.app_dir --format '{{.ID}} {{.Label "tabbify.app_dir"}}' 2>/dev/null \
        | while read -r id dir; do
            case "$dir" in "$work"/*) docker rm -f "$id" >/dev/null 2>&1 || true ;; esac
        done
    docker rm -f "$peer_name" >/dev/null 2>&1 || true
    docker rmi -f "$image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/ctx"
cp "$hello" "$work/ctx/hello-http"
printf 'FROM scratch\nCOPY hello-http /bin/hello-http\nCMD ["/bin/hello-http"]\n' > "$work/ctx/Dockerfile"
docker build -q -t "$image" "$work/ctx" >/dev/null 2>&1

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
RUST_LOG=warn "$supervisor" --no-mesh --bind "127.0.0.1:$port" --data-dir "$work/node" \
    --control-socket off --runner-bin "$runner" > "$work/supervisor.out" 2> "$work/supervisor.err" &
sup_pid=$!
for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.05
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "the supervisor did not start:" >&2; cat "$work/supervisor.err" >&2; exit 1; }

say "docker-deploy: hello-http FROM scratch, deploy -> first 200, $n runs each, $(nproc) cores, docker $(docker version -f '{{.Server.Version}}'), $(date -u +%FT%TZ)"

# The API needs the operator token the --no-mesh node wrote for itself.
export TABBIFY_CONTROL_TOKEN="$(cat "$work/node/control-token")"
python3 - "127.0.0.1:$port" "$image" "$n" "$peer_name" "$report" <<'PY'
import http.client, json, os, socket, statistics, subprocess, sys, time, uuid

api, image, n, peer_name, report = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
host, port = api.rsplit(":", 1)

def say(line):
    print(line, flush=True)
    with open(report, "a") as f:
        f.write(line + "\n")

def first_200(hostport, deadline_s=60.0):
    """Polls GET / on a fresh connection every 2 ms until it answers 200."""
    h, p = hostport.rsplit(":", 1)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection(h.strip("[]"), int(p), timeout=1)
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.002)
    raise SystemExit(f"no 200 from {hostport} within {deadline_s} s")

def request(method, path, body=None, headers=None):
    c = http.client.HTTPConnection(host, int(port), timeout=120)
    auth = {"Authorization": "Bearer " + os.environ["TABBIFY_CONTROL_TOKEN"]}
    c.request(method, path, body=body, headers={**auth, **(headers or {})})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data

def deploy(name):
    manifest = f'[app]\nname = "{name}"\n[runtime]\nkind = "docker"\nimage = "{image}"\n'
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="manifest"; filename="tabbify.toml"\r\n'
            f'Content-Type: application/toml\r\n\r\n{manifest}\r\n--{boundary}--\r\n').encode()
    status, data = request("POST", "/v1/apps", body,
                           {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    if status not in (200, 201):
        raise SystemExit(f"deploy answered {status}: {data.decode(errors='replace')}")
    return json.loads(data)

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

ours, peer = [], []
for i in range(n):
    t0 = time.monotonic()
    app = deploy("bench-docker")
    first_200(app["address"])
    ours.append((time.monotonic() - t0) * 1000)
    status, data = request("DELETE", f"/v1/apps/{app['app_id']}")
    if status != 204:
        raise SystemExit(f"delete answered {status}: {data!r}")

    hp = free_port()
    t0 = time.monotonic()
    subprocess.run(["docker", "run", "-d", "--name", peer_name, "-p", f"127.0.0.1:{hp}:8080", image],
                   check=True, stdout=subprocess.DEVNULL)
    first_200(f"127.0.0.1:{hp}")
    peer.append((time.monotonic() - t0) * 1000)
    subprocess.run(["docker", "rm", "-f", peer_name], check=True, stdout=subprocess.DEVNULL)
    say(f"run {i + 1}: supervisor {ours[-1]:.0f} ms, docker run {peer[-1]:.0f} ms")

mo, mp = statistics.median(ours), statistics.median(peer)
say(f"deploy through the supervisor -> first 200: median {mo:.0f} ms (min {min(ours):.0f}, max {max(ours):.0f})")
say(f"docker run -d -p -> first 200 by hand:     median {mp:.0f} ms (min {min(peer):.0f}, max {max(peer):.0f})")
say(f"ratio supervisor / docker run: {mo / mp:.2f}x (aim <= 1.2x)")
PY
echo "report: $report"
