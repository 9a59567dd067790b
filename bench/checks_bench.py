#!/usr/bin/env python3
"""CPU and memory of one agent running 2,000 HTTP checks and 2,000 TTL checks at 10 s.

The agent runs pinned to core 0; this script (the HTTP target the checks hit, and the TTL
heartbeats, one per check per interval) runs on core 1. After registering everything and one
interval of warm-up, it samples the agent's CPU time and RSS over a measuring window and
prints them, with the check runs the target saw.

    python bench/checks_bench.py                 # Waypost
    python bench/checks_bench.py --consul PATH   # a consul binary doing the same work
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_bench import free_port, start_agent  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Target(BaseHTTPRequestHandler):
    hits = 0
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def agent_pid(wrapper_pid: int) -> int:
    """taskset execs the agent, so the pid is the agent's own."""
    return wrapper_pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--consul", help="path to a consul binary to measure instead")
    parser.add_argument("--checks", type=int, default=2000, help="HTTP checks, and as many TTL checks")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    args = parser.parse_args()

    target = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{target.server_address[1]}/health"
    port = free_port()
    proc = start_agent(args.consul, port, extra=["-enable-script-checks"] if not args.consul else [])
    pid = proc.pid
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def put(path: str, body: dict | None = None) -> None:
        conn.request("PUT", path, body=json.dumps(body) if body is not None else None)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"PUT {path}: {response.status}")

    interval = f"{int(args.interval)}s"
    started = time.monotonic()
    for i in range(args.checks):
        put("/v1/agent/service/register", {"ID": f"h{i}", "Name": "hsvc", "Port": 1000 + i % 1000,
                                           "Check": {"HTTP": url, "Interval": interval}})
        put("/v1/agent/service/register", {"ID": f"t{i}", "Name": "tsvc", "Port": 1000 + i % 1000,
                                           "Check": {"TTL": f"{int(args.interval * 3)}s"}})
    registered = time.monotonic() - started

    stop = threading.Event()

    def heartbeats():
        beat = http.client.HTTPConnection("127.0.0.1", port)
        while not stop.is_set():
            round_start = time.monotonic()
            for i in range(args.checks):
                if stop.is_set():
                    return
                beat.request("PUT", f"/v1/agent/check/pass/service:t{i}")
                beat.getresponse().read()
                # Spread one round over the interval, as independent sidekicks would.
                lag = round_start + (i + 1) * args.interval / args.checks - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
    beater = threading.Thread(target=heartbeats, daemon=True)
    beater.start()
    time.sleep(args.interval + 2)  # every check has run once

    hits0, cpu0, t0 = Target.hits, cpu_seconds(pid), time.monotonic()
    peak = 0.0
    while time.monotonic() - t0 < args.window:
        time.sleep(1)
        peak = max(peak, rss_mb(pid))
    hits1, cpu1, t1 = Target.hits, cpu_seconds(pid), time.monotonic()
    stop.set()
    beater.join(5)
    status_conn = http.client.HTTPConnection("127.0.0.1", port)
    status_conn.request("GET", "/v1/health/state/critical")
    critical = len(json.loads(status_conn.getresponse().read()))
    proc.terminate()
    proc.wait(10)
    target.shutdown()

    elapsed = t1 - t0
    print(f"target: {'consul ' + args.consul if args.consul else 'waypost'}")
    print(f"registered {args.checks} HTTP + {args.checks} TTL checks in {registered:.1f} s")
    print(f"agent CPU: {100 * (cpu1 - cpu0) / elapsed:.1f}% of one core over {elapsed:.0f} s")
    print(f"agent RSS: {peak:.0f} MiB (peak during the window)")
    print(f"HTTP check runs: {(hits1 - hits0) / elapsed:.0f}/s "
          f"(expected {args.checks / args.interval:.0f}/s)")
    print(f"critical checks at the end: {critical}")


if __name__ == "__main__":
    main()
