#!/usr/bin/env python3
"""HTTP API throughput and blocking-query wake-up latency, against Waypost or a real Consul.

Starts the agent pinned to core 0 (`taskset -c 0`), loads it from core 1 with `wrk` (32
keep-alive connections), and prints requests/s for:
  GET /v1/kv/<key>, GET /v1/health/service/<name> (20 instances), GET /v1/catalog/services
then parks 1,000 blocking queries on one key, writes it once, and prints the wake-up latency
(p50/p99/max from the write's response to each waiter's answer).

    python bench/http_bench.py                 # Waypost (this checkout)
    python bench/http_bench.py --consul PATH   # a consul binary, same work (e.g. /tmp/oracle/bin/consul)

Needs wrk (Debian package) and two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.parked import park_waiters  # noqa: E402
from tests.agentproc import free_port, free_ports  # noqa: E402  (ports free for TCP and UDP)


def start_agent(consul: str | None, port: int, extra: list[str] | None = None) -> subprocess.Popen:
    # Distinct ports, all different from `port`: two binds of port 0 in a row may get one number.
    dns, lan, wan, server, grpc = [p for p in free_ports(6) if p != port][:5]
    if consul:
        data = tempfile.mkdtemp(prefix="consul-bench-")
        cmd = [consul, "agent", "-dev", "-node", "bench", "-http-port", str(port),
               "-dns-port", str(dns), "-serf-lan-port", str(lan),
               "-serf-wan-port", str(wan), "-server-port", str(server),
               "-grpc-port", str(grpc), "-log-level", "err", "-data-dir", data,
               # Consul caps connections per client address at 200 by default.
               "-hcl", "limits { http_max_conns_per_client = 5000 }"]
    else:
        # The same per-client connection cap as Consul's above (the waiters share one address).
        limits = Path(tempfile.mkdtemp(prefix="waypost-bench-")) / "limits.json"
        limits.write_text(json.dumps({"limits": {"http_max_conns_per_client": 5000}}))
        cmd = [sys.executable, "-m", "gateway.cli.main", "agent", "-dev", "-node", "bench",
               "-http-port", str(port), "-dns-port", str(dns), "-log-level", "error",
               "-config-file", str(limits)]
    cmd += extra or []
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/leader", timeout=1) as r:
                if json.loads(r.read()):
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("agent did not start")


def put(base: str, path: str, body: bytes | str) -> None:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(base + path, data=data, method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def seed(base: str) -> None:
    put(base, "/v1/kv/bench/key", "x" * 64)
    for i in range(20):
        put(base, "/v1/catalog/register", json.dumps({
            "Node": f"node{i}", "Address": f"10.1.0.{i + 1}",
            "Service": {"ID": f"api{i}", "Service": "api", "Port": 8000 + i, "Tags": ["v1", "prod"]},
            "Check": {"CheckID": f"api{i}", "Name": "api alive", "Status": "passing",
                      "ServiceID": f"api{i}"}}))
    for i in range(30):
        put(base, "/v1/catalog/register", json.dumps({
            "Node": "node0", "Address": "10.1.0.1",
            "Service": {"ID": f"svc{i}", "Service": f"svc{i}", "Port": 9000 + i, "Tags": [f"t{i}"]}}))


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s", url],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx answers\n{out}")
    return float(match.group(1))


def wakeup_latency(port: int, waiters: int) -> list[float]:
    """Park `waiters` queries on one key, write it, time each answer from the write's start.

    A plain selector loop on non-blocking sockets keeps the client's own cost per answer to
    one recv, so the figure is the agent's, not the load generator's.
    """
    sel, socks = park_waiters(port, waiters)
    writer = socket.create_connection(("127.0.0.1", port))
    started = time.perf_counter()
    writer.sendall(b"PUT /v1/kv/bench/wake HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nnew")
    arrived: list[float] = []
    deadline = started + 30
    while len(arrived) < waiters and time.perf_counter() < deadline:
        for key, _ in sel.select(timeout=1):
            now = time.perf_counter()
            if key.fileobj.recv(65536):
                arrived.append(now)
                sel.unregister(key.fileobj)
    for s in socks + [writer]:
        s.close()
    if len(arrived) < waiters:
        raise SystemExit(f"only {len(arrived)} of {waiters} waiters answered")
    return sorted((t - started) * 1000 for t in arrived)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--consul", help="path to a consul binary to measure instead of Waypost")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--waiters", type=int, default=1000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    port = free_port()
    proc = start_agent(args.consul, port)
    name = "consul " + args.consul if args.consul else "waypost"
    try:
        base = f"http://127.0.0.1:{port}"
        put(base, "/v1/kv/bench/wake", "old")
        seed(base)
        results = {}
        for label, path in (("GET /v1/kv/<key>", "/v1/kv/bench/key"),
                            ("GET /v1/health/service/<name> (20)", "/v1/health/service/api"),
                            ("GET /v1/catalog/services", "/v1/catalog/services")):
            wrk(base + path, 2)  # warm up
            results[label] = wrk(base + path, args.seconds)
        lat = wakeup_latency(port, args.waiters)
        print(f"target: {name}")
        for label, rps in results.items():
            print(f"{label:40s} {rps:10.0f} req/s")
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
        print(f"wake {len(lat)} blocking queries after one write: p50 {p(0.50):.1f} ms  "
              f"p99 {p(0.99):.1f} ms  max {lat[-1]:.1f} ms")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
