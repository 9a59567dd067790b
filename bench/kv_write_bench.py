#!/usr/bin/env python3
"""Committed KV writes on a durable server (fsync on), against Waypost or a real Consul.

Starts a non-dev server pinned to core 0 (`taskset -c 0`): Waypost `agent -server` with a
data dir (its write-ahead log), or with `--consul PATH` a real `consul agent -server
-bootstrap -data-dir ...` (its Raft log in BoltDB). The load runs on core 1. Prints:

1. committed `PUT /v1/kv/<key>` per second with 1 and with 64 concurrent clients (wrk,
   keep-alive, a new key each request), with p50/p99 latency;
2. the latency of one write while 1,000 blocking queries are parked on its key (the writer's
   own answer, then the waiters' wake-up p50/p99; the median of 5 such writes);
3. p99 latency of `GET /v1/kv/<key>` (wrk, 8 connections) with 10,000 services registered,
   first idle, then while snapshots of that state are written back to back (the snapshot
   threshold is 1 entry, and a trickle of writes keeps triggering them).

    python bench/kv_write_bench.py                  # Waypost (this checkout)
    python bench/kv_write_bench.py --consul /tmp/oracle/bin/consul

Needs wrk (Debian package) and two cores. Each phase starts a fresh server in a fresh data
dir under /tmp (`--dir` elsewhere: the disk decides the fsync cost).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.parked import park_waiters  # noqa: E402
from tests.agentproc import free_port, free_ports  # noqa: E402

PUT_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/kv/bench/w/" .. counter .. "-" .. math.random(1, 1000000000),
                    nil, "value-" .. counter)
end
"""


class Server:
    """One durable server in a fresh data dir, on core 0."""

    def __init__(self, consul: str | None, base_dir: str, settings: dict | None = None) -> None:
        self.port = free_port()
        dns, lan, wan, rpc, grpc = [p for p in free_ports(6) if p != self.port][:5]
        self.data = tempfile.mkdtemp(prefix="kvbench-", dir=base_dir)
        config = Path(self.data) / "bench.json"
        cfg = {"limits": {"http_max_conns_per_client": 5000}, **(settings or {})}
        log = open(Path(self.data) / "server.log", "w")
        self.log_path = Path(self.data) / "server.log"
        if consul:
            data_dir = Path(self.data) / "consul"
            cfg_path = Path(self.data) / "consul.json"
            cfg_path.write_text(json.dumps(cfg))
            cmd = [consul, "agent", "-server", "-bootstrap", "-node", "bench",
                   "-data-dir", str(data_dir), "-bind", "127.0.0.1", "-client", "127.0.0.1",
                   "-http-port", str(self.port), "-dns-port", str(dns),
                   "-serf-lan-port", str(lan), "-serf-wan-port", str(wan),
                   "-server-port", str(rpc), "-grpc-port", str(grpc), "-log-level", "info",
                   "-config-file", str(cfg_path)]
        else:
            config.write_text(json.dumps(cfg))
            cmd = [sys.executable, "-m", "gateway.cli.main", "agent", "-server", "-node", "bench",
                   "-data-dir", str(Path(self.data) / "waypost"), "-bind", "127.0.0.1",
                   "-client", "127.0.0.1", "-http-port", str(self.port), "-dns-port", str(dns),
                   "-log-level", "info", "-config-file", str(config)]
        self.proc = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=ROOT, stdout=log,
                                     stderr=log, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/v1/status/leader", timeout=1) as r:
                    if json.loads(r.read()):
                        # A write goes through: the leader is established.
                        put(self.base, "/v1/kv/bench/ready", "1")
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit("server did not start")

    def snapshots_logged(self) -> int:
        text = self.log_path.read_text(errors="replace")
        # Waypost: "snapshot at index N saved"; Consul: "snapshot complete up to".
        return len(re.findall(r"snapshot at index \d+ saved|snapshot complete up to", text))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def put(base: str, path: str, body: bytes | str) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(base + path, data=data, method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def wrk(url: str, connections: int, seconds: int, script: str | None = None) -> dict:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    script_file = None
    if script:
        script_file = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script_file.write(script)
        script_file.close()
        cmd += ["-s", script_file.name]
    try:
        out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    finally:
        if script_file:
            os.unlink(script_file.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx answers\n{out}")
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
            "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parked_write(port: int, waiters: int) -> tuple[float, list[float]]:
    """Park `waiters` blocking queries on one key, write it: the writer's own latency, and
    each waiter's answer time from the write's start (ms)."""
    sel, socks = park_waiters(port, waiters, "waiter")
    writer = socket.create_connection(("127.0.0.1", port))
    writer.setblocking(False)
    sel.register(writer, selectors.EVENT_READ, "writer")
    started = time.perf_counter()
    value = f"new-{time.monotonic_ns()}".encode()  # a value unlike the last: a real change
    writer.sendall(b"PUT /v1/kv/bench/wake HTTP/1.1\r\nHost: x\r\nContent-Length: "
                   + str(len(value)).encode() + b"\r\n\r\n" + value)
    arrived: list[float] = []
    wrote = None
    deadline = started + 30
    while (len(arrived) < waiters or wrote is None) and time.perf_counter() < deadline:
        ready = sel.select(timeout=1)
        now = time.perf_counter()  # when they were seen ready, not when this loop got to each
        for key, _ in ready:
            if key.fileobj.recv(65536):
                if key.data == "writer":
                    wrote = (now - started) * 1000
                else:
                    arrived.append((now - started) * 1000)
                sel.unregister(key.fileobj)
    for s in socks + [writer]:
        s.close()
    if wrote is None or len(arrived) < waiters:
        raise SystemExit(f"only {len(arrived)} of {waiters} waiters answered")
    return wrote, sorted(arrived)


def seed_services(base: str, count: int, connections: int = 32) -> None:
    """Register `count` services (one node each, with a check) over keep-alive connections."""
    bodies = [json.dumps({
        "Node": f"node{i}", "Address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
        "Service": {"ID": f"svc{i}", "Service": f"svc{i % 500}", "Port": 1000 + i % 50000,
                    "Tags": ["bench", f"t{i % 7}"], "Meta": {"n": str(i)}},
        "Check": {"CheckID": f"c{i}", "Name": "alive", "Status": "passing",
                  "ServiceID": f"svc{i}"}}).encode() for i in range(count)]
    port = int(base.rsplit(":", 1)[1])
    lock = threading.Lock()

    def worker() -> None:
        conn = socket.create_connection(("127.0.0.1", port))
        f = conn.makefile("rb")
        while True:
            with lock:
                if not bodies:
                    break
                body = bodies.pop()
            conn.sendall(b"PUT /v1/catalog/register HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            status = f.readline()
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            f.read(length)
            if b" 200 " not in status:
                raise SystemExit(f"register failed: {status!r}")
        conn.close()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def snapshot_phase(consul: str | None, base_dir: str, seconds: int, services: int) -> dict:
    settings = {"raft_snapshot_threshold": 1, "raft_snapshot_interval": "1s"}
    server = Server(consul, base_dir, settings)
    try:
        put(server.base, "/v1/kv/bench/key", "x" * 64)
        seed_services(server.base, services)
        time.sleep(3)  # let the snapshots the seeding triggered settle
        url = server.base + "/v1/kv/bench/key"
        wrk(url, 8, 2)  # warm up
        idle = wrk(url, 8, seconds)
        before = server.snapshots_logged()
        stop = threading.Event()

        def trickle() -> None:  # each write makes the log pass the threshold again
            n = 0
            while not stop.is_set():
                put(server.base, "/v1/kv/bench/trickle", str(n))
                n += 1
                time.sleep(0.05)
        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            busy = wrk(url, 8, seconds)
        finally:
            stop.set()
            thread.join()
        return {"idle": idle, "busy": busy, "snapshots": server.snapshots_logged() - before}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--consul", help="path to a consul binary to measure instead of Waypost")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="parked writes to take the "
                        "median of")
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--dir", default=None, help="where the data dirs go (default /tmp)")
    parser.add_argument("--skip", default="", help="phases to skip: writes,parked,snapshot")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    base_dir = args.dir or tempfile.gettempdir()
    name = "consul " + args.consul if args.consul else "waypost"
    print(f"target: {name} (durable server, fsync on)")
    skip = set(filter(None, args.skip.split(",")))
    if "writes" not in skip:
        for clients in (1, 64):
            server = Server(args.consul, base_dir)
            try:
                url = server.base + "/v1/kv/bench/w"
                wrk(url, clients, 2, PUT_SCRIPT)  # warm up
                r = wrk(url, clients, args.seconds, PUT_SCRIPT)
            finally:
                server.stop()
            print(f"PUT /v1/kv, {clients:2d} client(s): {r['rps']:8.0f} writes/s  "
                  f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms", flush=True)
    if "parked" not in skip:
        server = Server(args.consul, base_dir)
        runs = []
        try:
            put(server.base, "/v1/kv/bench/wake", "old")
            for _ in range(args.rounds):
                runs.append(parked_write(server.port, args.waiters))
        finally:
            server.stop()
        p = lambda lat, q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        wrote = [w for w, _ in runs]
        print(f"one write with {args.waiters} blocking queries parked on its key "
              f"(median of {len(runs)}): {median(wrote):.1f} ms (min {min(wrote):.1f}); "
              f"waiters woken p50 {median([p(lat, 0.5) for _, lat in runs]):.1f} ms  "
              f"p99 {median([p(lat, 0.99) for _, lat in runs]):.1f} ms", flush=True)
    if "snapshot" not in skip:
        r = snapshot_phase(args.consul, base_dir, args.seconds, args.services)
        print(f"GET /v1/kv/<key> with {args.services} services: idle p99 "
              f"{r['idle']['p99']:.2f} ms ({r['idle']['rps']:.0f}/s); while snapshots are "
              f"written p99 {r['busy']['p99']:.2f} ms ({r['busy']['rps']:.0f}/s, "
              f"{r['snapshots']} snapshots)", flush=True)


if __name__ == "__main__":
    main()
