#!/usr/bin/env python3
"""A 3-server Raft cluster on 127.0.0.1: committed writes and leader failover, Waypost beside
a real Consul 1.8.7.

Starts three non-dev servers (tests/servercluster.py: `agent -server -bootstrap-expect 3
-retry-join ...`, each with its own data dir, default settings, so fsync on for both: Waypost's
write-ahead log, Consul's BoltDB Raft log) and measures:

1. committed `PUT /v1/kv/bench/w/<n>` per second with 1 and with 64 concurrent clients, with
   p50/p99 latency. wrk (keep-alive, a new key each request, pinned to core 1 as in
   bench/kv_write_bench.py; the servers are not pinned) sends every write to the LEADER, so
   no forwarding hop is measured; each figure is after a 2 s warm-up.
2. failover: writer threads write continuously to the two followers; the leader is killed
   (SIGKILL); the time from the kill to the first acknowledged write among those sent after
   it. The killed server is restarted and the cluster left to settle (all three voters, the
   same leader seen by all for 2 s) between runs; the median of --runs runs. Default timing
   on both: Consul's raft_multiplier 5 puts its failover near 15 s.

    python bench/raft_bench.py                  # Waypost (this checkout)
    python bench/raft_bench.py --consul         # and a real Consul beside it, a table at the end
    python bench/raft_bench.py --only-consul --runs 3 --duration 5
    python bench/raft_bench.py --consul --rounds 5   # more interleaved write rounds

The Consul binary is found as tests/consulproc.py finds it (WAYPOST_CONSUL_BIN or
/tmp/oracle/bin/consul). Needs wrk. The write phase and the failover phase each start a fresh
cluster in a fresh directory under /tmp (`--dir` elsewhere: the disk decides the fsync cost).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.kv_write_bench import PUT_SCRIPT, wrk  # noqa: E402
from tests.consulproc import NO_CONSUL, consul_binary  # noqa: E402
from tests.servercluster import ClusterError, ServerCluster  # noqa: E402

SERVERS = 3


def settle(cluster: ServerCluster, timeout: float = 120.0) -> int:
    """Until all servers are voters, all agree on one leader, it stays for 2 s and takes a
    write; the leader's index."""
    deadline = time.monotonic() + timeout
    while True:
        leader = cluster.wait_voters(SERVERS, max(1.0, deadline - time.monotonic()))
        steady_until = time.monotonic() + 2.0
        while time.monotonic() < steady_until:
            if set(cluster.leader_views().values()) != {
                    f"127.0.0.1:{cluster.servers[leader].server_port}"}:
                break
            time.sleep(0.1)
        else:
            status, _, body = cluster.request(leader, "PUT", "/v1/kv/bench/settled", "1")
            if status == 200 and body.strip() == b"true":
                return leader
        if time.monotonic() > deadline:
            raise ClusterError(f"no steady leader in {timeout} s" + cluster.tails())


def write_phase(binary: str, base_dir: str, duration: int) -> dict:
    home = tempfile.mkdtemp(prefix=f"raftbench-{binary}-", dir=base_dir)
    cluster = ServerCluster(SERVERS, home, binary=binary)
    try:
        cluster.start(timeout=60)
        leader = settle(cluster)
        url = cluster.servers[leader].base + "/v1/kv/bench/w"
        out = {}
        for clients in (1, 64):
            wrk(url, clients, 2, PUT_SCRIPT)  # warm up
            out[clients] = wrk(url, clients, duration, PUT_SCRIPT)
            if cluster.wait_leader() != leader:
                raise ClusterError(f"the leader changed during the {clients}-client run")
        return out
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


class FollowerWriters:
    """Threads writing new keys to the given servers in turn; every acknowledged write's
    (sent, acknowledged) perf_counter times."""

    def __init__(self, cluster: ServerCluster, targets: list[int], threads: int = 4) -> None:
        self.cluster, self.targets = cluster, targets
        self.acks: list[tuple[float, float]] = []
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                         for t in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, t: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            target = self.targets[(t + n) % len(self.targets)]
            sent = time.perf_counter()
            try:
                status, _, body = self.cluster.request(target, "PUT",
                                                       f"/v1/kv/bench/f/{t}-{n}", str(n),
                                                       timeout=60)
            except OSError:
                status, body = 0, b""
            if status == 200 and body.strip() == b"true":
                with self._lock:
                    self.acks.append((sent, time.perf_counter()))
            else:
                self.last_error = f"s{target}: {status} {body[:120]!r}"
                self._stop.wait(0.01)  # no leader yet: do not spin on quick errors

    def first_ack_after(self, moment: float) -> float | None:
        with self._lock:
            after = [acked for sent, acked in self.acks if sent >= moment]
        return min(after) if after else None

    def count(self) -> int:
        with self._lock:
            return len(self.acks)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)


def failover_phase(binary: str, base_dir: str, runs: int) -> list[float]:
    """Seconds from SIGKILL of the leader to the first write acknowledged after it, per run."""
    home = tempfile.mkdtemp(prefix=f"raftbench-{binary}-", dir=base_dir)
    cluster = ServerCluster(SERVERS, home, binary=binary)
    times = []
    try:
        cluster.start(timeout=60)
        for run in range(runs):
            leader = settle(cluster)
            writers = FollowerWriters(cluster, [i for i in range(SERVERS) if i != leader])
            try:
                deadline = time.monotonic() + 30
                while writers.count() < 10:  # the writers are under way
                    if time.monotonic() > deadline:
                        raise ClusterError("writes to the followers do not go through"
                                           + cluster.tails())
                    time.sleep(0.01)
                killed_at = time.perf_counter()
                cluster.kill(leader)
                deadline = time.monotonic() + 120
                while (first := writers.first_ack_after(killed_at)) is None:
                    if time.monotonic() > deadline:
                        raise ClusterError(
                            f"no write acknowledged in 120 s after killing s{leader}; last "
                            f"error {writers.last_error}; leaders seen "
                            f"{cluster.leader_views()}; logs in {home}" + cluster.tails())
                    time.sleep(0.005)
            finally:
                writers.stop()
            times.append(first - killed_at)
            print(f"  {binary} failover run {run + 1}/{runs}: {times[-1] * 1000:.0f} ms "
                  f"(killed s{leader})", flush=True)
            cluster.restart(leader, timeout=60)
        settle(cluster)
    except BaseException:
        cluster.stop()
        print(f"  {binary}: failover phase failed; its logs are kept in {home}", flush=True)
        raise
    cluster.stop()
    shutil.rmtree(home, ignore_errors=True)
    return times


def median_writes(rounds: list[dict]) -> dict:
    """Per client count, the median of each figure over the rounds."""
    return {clients: {key: statistics.median(r[clients][key] for r in rounds)
                      for key in ("rps", "p50", "p99")}
            for clients in (1, 64)}


def measure_writes(targets: list[str], args) -> dict[str, dict]:
    """The write phase of every target, `--rounds` times, interleaved (W, C, W, C, ...): this
    VM's fsync latency drifts over minutes, so a side-by-side comparison must share it."""
    rounds: dict[str, list[dict]] = {name: [] for name in targets}
    results: dict[str, dict] = {name: {} for name in targets}
    for n in range(args.rounds):
        for name in targets:
            if "error" in results[name]:
                continue
            try:
                out = write_phase(name, args.dir, args.duration)
            except (ClusterError, SystemExit) as exc:
                results[name]["error"] = str(exc).splitlines()[0] if str(exc) else \
                    type(exc).__name__
                print(f"{name}: FAILED: {exc}", flush=True)
                continue
            rounds[name].append(out)
            for clients, r in out.items():
                print(f"{name} round {n + 1}: PUT /v1/kv to the leader, {clients:2d} "
                      f"client(s): {r['rps']:8.0f} writes/s  p50 {r['p50']:6.2f} ms  "
                      f"p99 {r['p99']:6.2f} ms", flush=True)
    for name in targets:
        if rounds[name]:
            results[name]["writes"] = median_writes(rounds[name])
    return results


def measure_failover(binary: str, args, result: dict) -> None:
    try:
        result["failover"] = failover_phase(binary, args.dir, args.runs)
        f = result["failover"]
        print(f"{binary}: failover (median of {len(f)}): {statistics.median(f) * 1000:.0f}"
              f" ms (min {min(f) * 1000:.0f}, max {max(f) * 1000:.0f})", flush=True)
    except (ClusterError, SystemExit) as exc:
        result["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{binary}: FAILED: {exc}", flush=True)


def table(results: dict[str, dict]) -> str:
    names = list(results)
    rows: list[tuple[str, list[str]]] = []
    for clients in (1, 64):
        for label, key, fmt in (("writes/s", "rps", "{:.0f}"), ("p50 ms", "p50", "{:.2f}"),
                                ("p99 ms", "p99", "{:.2f}")):
            cells = []
            for name in names:
                r = results[name].get("writes", {}).get(clients)
                cells.append(fmt.format(r[key]) if r else "-")
            rows.append((f"PUT, {clients} client(s), {label}", cells))
    cells = []
    for name in names:
        f = results[name].get("failover")
        cells.append(f"{statistics.median(f) * 1000:.0f} ({min(f) * 1000:.0f}-"
                     f"{max(f) * 1000:.0f})" if f else "-")
    rows.append(("failover ms, median (min-max)", cells))
    width = max(len(label) for label, _ in rows) + 2
    lines = [" " * width + "".join(f"{n:>20}" for n in names)]
    lines += [label.ljust(width) + "".join(f"{c:>20}" for c in cells) for label, cells in rows]
    for name in names:
        if "error" in results[name]:
            lines.append(f"{name}: {results[name]['error']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of each write run")
    parser.add_argument("--runs", type=int, default=10, help="failover runs (0: none)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="write phases per target, interleaved; medians are shown")
    parser.add_argument("--consul", action="store_true", help="also measure a real Consul")
    parser.add_argument("--only-consul", action="store_true", help="measure only Consul")
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="where the data dirs go (default /tmp)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    targets = [] if args.only_consul else ["waypost"]
    if args.consul or args.only_consul:
        if consul_binary() is None:
            raise SystemExit(NO_CONSUL)
        targets.append("consul")
    print(f"{SERVERS} servers on 127.0.0.1, fsync on, default settings; "
          f"load {open('/proc/loadavg').read().strip()}", flush=True)
    results = measure_writes(targets, args)
    if args.runs:
        for name in targets:
            if "error" not in results[name]:
                measure_failover(name, args, results[name])
    print()
    print(f"write figures: medians of {args.rounds} interleaved rounds")
    print(table(results))


if __name__ == "__main__":
    main()
