#!/usr/bin/env python3
"""Helpers for bench/apps-deploy.sh, against a running tabbify-supervisor: time from the start of
a deploy request to the first HTTP 200 from the deployed app, and the memory of many idle
deployed apps. Standard library only."""

import http.client
import json
import os
import statistics
import sys
import time
import uuid


# The node's operator token (its --no-mesh `<data-dir>/control-token`), from the calling script.
AUTH = {"Authorization": "Bearer " + os.environ.get("TABBIFY_CONTROL_TOKEN", "")}


def api_conn(api):
    host, port = api.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=120)


def deploy(api, name, wasm_bytes):
    """POST /v1/apps as multipart/form-data; returns the app (JSON)."""
    boundary = uuid.uuid4().hex
    manifest = f'[app]\nname = "{name}"\n[runtime]\nkind = "wasm"\ncomponent = "app.wasm"\n'
    parts = [
        (f'--{boundary}\r\nContent-Disposition: form-data; name="manifest"; filename="tabbify.toml"\r\n'
         f'Content-Type: text/plain\r\n\r\n').encode() + manifest.encode() + b"\r\n",
        (f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="app.wasm"\r\n'
         f'Content-Type: application/wasm\r\n\r\n').encode() + wasm_bytes + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    body = b"".join(parts)
    c = api_conn(api)
    c.request("POST", "/v1/apps", body=body,
              headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **AUTH})
    r = c.getresponse()
    data = r.read()
    if r.status not in (200, 201):
        raise SystemExit(f"deploy of {name} answered {r.status}: {data!r}")
    return json.loads(data)


def delete(api, app_id):
    c = api_conn(api)
    c.request("DELETE", f"/v1/apps/{app_id}", headers=AUTH)
    r = c.getresponse()
    r.read()
    if r.status != 204:
        raise SystemExit(f"delete {app_id} answered {r.status}")


def get_200(address, timeout=30):
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            time.sleep(0.0005)
    raise SystemExit(f"no 200 from {address}")


def deploy_to_200(api, name, wasm_bytes):
    t0 = time.monotonic()
    app = deploy(api, name, wasm_bytes)
    get_200(app["address"])
    return time.monotonic() - t0, app


def cmd_deploy(api, wasm, runs):
    wasm_bytes = open(wasm, "rb").read()
    cold, app = deploy_to_200(api, "bench-cold", wasm_bytes)  # compiles and fills the cache
    delete(api, app["app_id"])
    warm = []
    for i in range(runs):
        t, app = deploy_to_200(api, f"bench-warm-{i}", wasm_bytes)
        warm.append(t)
        delete(api, app["app_id"])
    warm.sort()
    print(f"deploy -> first 200, cold compile cache: {cold * 1000:.1f} ms")
    print(f"deploy -> first 200, warm compile cache: median {statistics.median(warm) * 1000:.1f} ms, "
          f"p90 {warm[int(len(warm) * 0.9) - 1] * 1000:.1f} ms, max {warm[-1] * 1000:.1f} ms "
          f"over {runs} deploys (aim < 100 ms)")
    print(f"MEDIAN_WARM_MS {statistics.median(warm) * 1000:.3f}")


def mem_kib(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def runners_under(data_dir):
    needle = data_dir.encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        args = cmd.split(b"\0")
        if args and args[0].endswith(b"tabbify-runner") and needle in cmd:
            pids.append(int(entry))
    return pids


def cmd_density(api, wasm, n, supervisor_pid, data_dir):
    wasm_bytes = open(wasm, "rb").read()
    t0 = time.monotonic()
    apps = [deploy(api, f"idle-{i}", wasm_bytes) for i in range(n)]
    took = time.monotonic() - t0
    for app in apps:
        get_200(app["address"])
    time.sleep(3)
    pids = runners_under(data_dir)
    if len(pids) != n:
        raise SystemExit(f"expected {n} runners, found {len(pids)}")
    rss = pss = 0
    for pid in pids:
        r, p = mem_kib(pid)
        rss += r
        pss += p
    sup_rss, sup_pss = mem_kib(supervisor_pid)
    print(f"{n} idle deployed wasm apps: deployed one after another in {took:.1f} s "
          f"({took / n * 1000:.0f} ms each, each answered once)")
    print(f"{n} idle deployed wasm apps: runners RSS {rss / 1024:.0f} MiB ({rss / n / 1024:.1f} MiB each), "
          f"PSS {pss / 1024:.0f} MiB; supervisor RSS {sup_rss / 1024:.1f} MiB; "
          f"total RSS {(rss + sup_rss) / 1024:.0f} MiB")
    print(f"TOTAL_RSS_KIB {rss + sup_rss}")
    for app in apps:
        delete(api, app["app_id"])
    left = runners_under(data_dir)
    if left:
        raise SystemExit(f"{len(left)} runners left after deleting every app")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "deploy":
        cmd_deploy(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "density":
        cmd_density(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        raise SystemExit(f"unknown command {cmd}")
