#!/usr/bin/env python3
"""One agent with 5,000 sidekick-style registrations heartbeating every 10 s.

Each registration is what `waypost sidekick` sends: a service with a TTL check
(`sidekick:<id>`, TTL 30 s = 3 x the heartbeat interval), passed every interval with
`PUT /v1/agent/check/pass/<id>?note=`. A few client threads (keep-alive connections, phases
spread evenly over the interval) stand in for 5,000 sidekick processes.

Prints: registration rate; the agent's CPU (% of one core) and RSS while the heartbeats run;
the heartbeat latency; then, after the heartbeats of `--stop` services stop, how late their
checks turn critical compared with last heartbeat + TTL (seen through a blocking query on
/v1/health/state/critical, so the figure includes the wake-up of a blocked reader).

The agent runs pinned to core 0 (as in the other benches); this script on the rest.

    python bench/sidekick_bench.py
    python bench/sidekick_bench.py --services 1000 --duration 20 --stop 50
    python bench/sidekick_bench.py --consul PATH   # a consul binary doing the same work
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks_bench import cpu_seconds, rss_mb  # noqa: E402
from http_bench import free_port, start_agent  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


class Client:
    """One keep-alive connection to the agent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes,
                                                                                  dict]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body)
                response = self.conn.getresponse()
                return response.status, response.read(), dict(response.getheaders())
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


class Fleet:
    """The heartbeats of `count` services, spread over the interval, on a few threads."""

    def __init__(self, port: int, count: int, interval: float, threads: int) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.threads = threads
        self.stopped: set[int] = set()
        self.last_beat: dict[int, float] = {}  # service -> monotonic time its last beat was sent
        self.latencies: list[float] = []
        self.behind: list[float] = []  # how late the client sent beats (client saturation)
        self.errors = 0
        self.done = threading.Event()
        self.lock = threading.Lock()

    def start(self, epoch: float) -> list[threading.Thread]:
        workers = [threading.Thread(target=self._run, args=(k, epoch), daemon=True)
                   for k in range(self.threads)]
        for worker in workers:
            worker.start()
        return workers

    def _run(self, k: int, epoch: float) -> None:
        client = Client(self.port)
        mine = list(range(k, self.count, self.threads))
        step = self.interval / len(mine)
        round_no = 0
        while not self.done.is_set():
            for slot, i in enumerate(mine):
                due = epoch + round_no * self.interval + slot * step
                delay = due - time.monotonic()
                if delay > 0:
                    if self.done.wait(delay):
                        return
                if i in self.stopped:
                    continue
                sent = time.monotonic()
                status, _, _ = client.request("PUT", f"/v1/agent/check/pass/sidekick:bench-{i}"
                                              f"?note=alive")
                finished = time.monotonic()
                with self.lock:
                    self.last_beat[i] = sent
                    self.latencies.append(finished - sent)
                    self.behind.append(max(0.0, sent - due))
                    if status != 200:
                        self.errors += 1
            round_no += 1


def register(port: int, count: int, ttl: float, threads: int) -> float:
    started = time.monotonic()

    def work(k: int) -> None:
        client = Client(port)
        for i in range(k, count, threads):
            body = json.dumps({"ID": f"bench-{i}", "Name": "bench", "Port": 10000 + i,
                               "Tags": ["sidekick"], "Check": {
                                   "CheckID": f"sidekick:bench-{i}", "TTL": f"{ttl:g}s",
                                   "DeregisterCriticalServiceAfter": "1h"}}).encode()
            status, text, _ = client.request("PUT", "/v1/agent/service/register", body)
            if status != 200:
                raise SystemExit(f"register failed: {status} {text!r}")
    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.monotonic() - started


def watch_critical(port: int, wanted: set[str], seen: dict[str, float],
                   stop: threading.Event) -> None:
    """Record when each wanted check ID first shows up critical (blocking queries)."""
    client = Client(port)
    index = 0
    while not stop.is_set() and not wanted <= seen.keys():
        status, body, headers = client.request(
            "GET", f"/v1/health/state/critical?index={index}&wait=30s")
        now = time.monotonic()
        index = int(headers.get("X-Consul-Index", index))
        if status == 200:
            for check in json.loads(body):
                check_id = check["CheckID"]
                if check_id in wanted and check_id not in seen:
                    seen[check_id] = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=10.0, help="heartbeat interval (s)")
    parser.add_argument("--duration", type=float, default=60.0, help="measuring window (s)")
    parser.add_argument("--stop", type=int, default=200, help="services whose beats stop")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--consul", help="path of a consul binary to measure instead")
    args = parser.parse_args()
    ttl = 3 * args.interval
    port = free_port()
    proc = start_agent(args.consul, port)
    try:
        rss_idle = rss_mb(proc.pid)
        took = register(port, args.services, ttl, args.threads)
        print(f"registered {args.services} services with TTL checks in {took:.1f}s "
              f"({args.services / took:.0f}/s); RSS {rss_idle:.0f} -> {rss_mb(proc.pid):.0f} MB")
        fleet = Fleet(port, args.services, args.interval, args.threads)
        fleet.start(time.monotonic())
        time.sleep(args.interval)  # warm-up: one full round
        with fleet.lock:
            fleet.latencies.clear()
            fleet.behind.clear()
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        peak = 0.0
        while time.monotonic() - t0 < args.duration:
            time.sleep(1.0)
            peak = max(peak, rss_mb(proc.pid))
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        with fleet.lock:
            lat = [x * 1000 for x in fleet.latencies]
            behind = max(fleet.behind, default=0.0)
        print(f"heartbeats: {len(lat)} in {args.duration:.0f}s ({len(lat) / args.duration:.0f}/s),"
              f" errors {fleet.errors}; latency p50 {percentile(lat, 0.5):.2f} ms, "
              f"p99 {percentile(lat, 0.99):.2f} ms, max {max(lat, default=0):.1f} ms; "
              f"client behind schedule at most {behind * 1000:.0f} ms")
        print(f"agent: CPU {cpu:.1f}% of one core, RSS {rss_mb(proc.pid):.0f} MB "
              f"(peak {peak:.0f} MB)")

        stride = max(1, args.services // args.stop)
        victims = list(range(0, args.services, stride))[:args.stop]
        wanted = {f"sidekick:bench-{i}" for i in victims}
        seen: dict[str, float] = {}
        stop_watch = threading.Event()
        watcher = threading.Thread(target=watch_critical, args=(port, wanted, seen, stop_watch),
                                   daemon=True)
        watcher.start()
        time.sleep(0.5)
        fleet.stopped.update(victims)
        watcher.join(ttl + args.interval + 30)
        stop_watch.set()
        fleet.done.set()
        late = [seen[f"sidekick:bench-{i}"] - (fleet.last_beat[i] + ttl)
                for i in victims if f"sidekick:bench-{i}" in seen]
        late_ms = [x * 1000 for x in late]
        print(f"TTL expiry ({len(victims)} services stopped, TTL {ttl:g}s): {len(late)} seen "
              f"critical; late by min {min(late_ms, default=0):.0f} ms, "
              f"p50 {percentile(late_ms, 0.5):.0f} ms, p99 {percentile(late_ms, 0.99):.0f} ms, "
              f"max {max(late_ms, default=0):.0f} ms"
              + (f" (mean {statistics.mean(late_ms):.0f} ms)" if late_ms else ""))
        if len(late) < len(victims):
            print(f"  {len(victims) - len(late)} never turned critical in time!")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
