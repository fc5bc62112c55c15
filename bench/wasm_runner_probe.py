#!/usr/bin/env python3
"""Helpers for bench/wasm-serve.sh: app directories for tabbify-runner, time to first 200 after a
start, and the memory of many idle runners. Standard library only."""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import http.client

READY = "tabbify-runner serving on "


def write_app(app_dir, wasm, cache_dir, port=0, memory_mb=128, deadline_ms=10_000, slots=64):
    os.makedirs(app_dir, exist_ok=True)
    spec = {
        "app_id": "bench-" + os.path.basename(app_dir.rstrip("/")),
        "manifest": {
            "app": {"name": "hello", "replicas": 1},
            "runtime": {"kind": "wasm", "component": os.path.basename(wasm)},
            "http": {"port": 8080},
            "resources": {"memory_mb": memory_mb, "cpus": 1.0},
            "env": {},
            "restart": {"policy": "on-failure", "backoff_initial_ms": 1000, "backoff_max_ms": 60000,
                        "backoff_multiplier": 2.0, "reset_after_ms": 60000},
        },
        "artifact": wasm,
        "listen": f"127.0.0.1:{port}",
        "log_file": os.path.join(app_dir, "app.log"),
        "socket": os.path.join(app_dir, "runner.sock"),
        "cache_dir": cache_dir,
        "request_deadline_ms": deadline_ms,
        "max_concurrent_requests": slots,
    }
    with open(os.path.join(app_dir, "spec.json"), "w") as f:
        json.dump(spec, f)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(runner, app_dir):
    out = open(os.path.join(app_dir, "runner.out"), "ab")
    return subprocess.Popen([runner, "--app-dir", app_dir], stdout=subprocess.PIPE, stderr=out,
                            env={**os.environ, "RUST_LOG": "warn"})


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def first_200(runner, app_dir, port):
    """Seconds from spawn to the first HTTP 200 on `port`."""
    t0 = time.monotonic()
    proc = start(runner, app_dir)
    try:
        while time.monotonic() - t0 < 30:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    return time.monotonic() - t0
            except OSError:
                time.sleep(0.0005)
        raise SystemExit("no 200 within 30 s")
    finally:
        stop(proc)


def cmd_startup(runner, wasm, work, runs):
    cache = os.path.join(work, "startup-cache")
    port = free_port()
    app_dir = os.path.join(work, "startup")
    write_app(app_dir, wasm, cache, port=port)
    cold = first_200(runner, app_dir, port)  # compiles and fills the cache
    warm = [first_200(runner, app_dir, port) for _ in range(runs)]
    print(f"first 200 after start, cold cache (compiles): {cold * 1000:.1f} ms")
    print(f"first 200 after start, warm cache: median {statistics.median(warm) * 1000:.1f} ms, "
          f"max {max(warm) * 1000:.1f} ms over {runs} starts")


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


def cmd_density(runner, wasm, work, n):
    cache = os.path.join(work, "density-cache")
    procs = []
    try:
        # Warm the shared compile cache once, as a node would have.
        first = os.path.join(work, "density", "warm")
        port = free_port()
        write_app(first, wasm, cache, port=port)
        first_200(runner, first, port)
        t0 = time.monotonic()
        for i in range(n):
            d = os.path.join(work, "density", f"app{i}")
            write_app(d, wasm, cache, port=0)
            procs.append(start(runner, d))
        addrs = []
        for p in procs:
            line = p.stdout.readline().decode()
            if READY not in line:
                raise SystemExit(f"a runner did not start: {line!r}")
            addrs.append(line.split(READY, 1)[1].strip())
        started = time.monotonic() - t0
        # Every runner serves once, then all sit idle.
        for a in addrs:
            host, port = a.rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
        time.sleep(3)
        rss = pss = 0
        for p in procs:
            r, s = mem_kib(p.pid)
            rss += r
            pss += s
        print(f"{n} idle wasm runners: started and ready in {started:.1f} s")
        print(f"{n} idle wasm runners: RSS total {rss / 1024:.0f} MiB ({rss / n / 1024:.1f} MiB each), "
              f"PSS total {pss / 1024:.0f} MiB ({pss / n / 1024:.1f} MiB each)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "app":
        write_app(sys.argv[2], sys.argv[3], sys.argv[4], port=int(sys.argv[5]))
    elif cmd == "startup":
        cmd_startup(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif cmd == "density":
        cmd_density(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown command {cmd}")
