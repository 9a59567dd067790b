#!/usr/bin/env python3
"""Gossip with real processes: a 20-agent pool on 127.0.0.1, Waypost beside a real Consul.

Starts one server and N-1 client agents (`waypost agent -server=false -retry-join <server's
Serf LAN>`; with --consul: `consul agent -server -bootstrap` and `consul agent -retry-join`),
waits until the server lists every member alive and has them in its catalog, lets the pool
settle, then measures:

1. Idle cost. CPU seconds per second of each agent process, from utime+stime in
   /proc/<pid>/stat (all threads) over the window. Gossip traffic from a packet socket
   (AF_PACKET) on the loopback interface: every IPv4 UDP/TCP packet with a Serf LAN port of
   the pool at either end is counted once (the outgoing copy; the looped-back incoming copy is
   skipped), payload bytes and IP bytes (headers included). This needs no help from the agents
   and counts the TCP push-pull connections too. Traffic on the server RPC port (clients ->
   server) is counted apart. The kernel's drop count for the packet socket is printed.
2. Requests per second of GET /v1/kv/<key> and GET /v1/health/service/<name> (20 instances)
   through a CLIENT agent (which asks the server over the RPC port), with wrk (32 keep-alive
   connections) on core 1; the server and that client run pinned to core 0 (`taskset`), as
   bench/http_bench.py pins its single agent. The other clients are not pinned (they are idle).
3. Failure detection: SIGKILL a client, poll the server every 50 ms, time until its
   /v1/agent/members shows the node failed (Status 4) and until the node's serfHealth check is
   critical in its catalog; the median over --kills kills, one after another.

    python bench/gossip_cluster_bench.py                       # Waypost (this checkout)
    python bench/gossip_cluster_bench.py --consul /tmp/oracle/bin/consul   # and Consul beside it
    python bench/gossip_cluster_bench.py --agents 10 --seconds 5 --idle 20

Needs root (the packet socket), wrk and taskset. The default run takes about 2 minutes per
target. On a shared machine the figures move with the neighbours' load; /proc/loadavg is
printed with each target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.agentproc import free_ports  # noqa: E402  (ports free for TCP and UDP)

CLK_TCK = os.sysconf("SC_CLK_TCK")
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6


# ---------------------------------------------------------------------------------------------
# Agents


@dataclass
class Agent:
    name: str
    server: bool
    http: int
    dns: int
    serf_lan: int
    serf_wan: int
    rpc: int
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def get(self, path: str, timeout: float = 5.0):
        with urllib.request.urlopen(self.base + path, timeout=timeout) as r:
            return json.loads(r.read())

    def put(self, path: str, body: str) -> None:
        req = urllib.request.Request(self.base + path, data=body.encode(), method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def cpu_seconds(self) -> float:
        # Fields after the ")" that closes the command name: utime and stime are 14 and 15.
        text = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Pool:
    target: str
    workdir: Path
    agents: list[Agent] = field(default_factory=list)

    @property
    def server(self) -> Agent:
        return self.agents[0]

    @property
    def clients(self) -> list[Agent]:
        return self.agents[1:]

    def stop(self) -> None:
        for agent in self.agents:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.proc.send_signal(signal.SIGTERM)
        for agent in self.agents:
            if agent.proc is None:
                continue
            try:
                agent.proc.wait(15)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def command(consul: str | None, agent: Agent, data: Path, join: int | None) -> list[str]:
    ports = ["-http-port", str(agent.http), "-dns-port", str(agent.dns),
             "-serf-lan-port", str(agent.serf_lan), "-serf-wan-port", str(agent.serf_wan),
             "-server-port", str(agent.rpc)]
    joining = ["-retry-join", f"127.0.0.1:{join}", "-retry-interval", "1s"] if join else []
    if consul:
        role = ["-server", "-bootstrap"] if agent.server else []
        return [consul, "agent", *role, "-node", agent.name, "-bind", "127.0.0.1",
                "-client", "127.0.0.1", "-data-dir", str(data), *ports, "-grpc-port", "-1",
                "-log-level", "warn", *joining]
    # The Waypost server is -dev (in-memory state; -bootstrap is not supported yet).
    role = ["-dev"] if agent.server else ["-server=false", "-data-dir", str(data)]
    return [sys.executable, "-m", "gateway.cli.main", "agent", *role, "-node", agent.name,
            *ports, "-log-level", "warn", *joining]


def launch(consul: str | None, agent: Agent, workdir: Path, join: int | None, pin: bool) -> None:
    data = workdir / agent.name
    data.mkdir()
    agent.log = workdir / f"{agent.name}.log"
    cmd = command(consul, agent, data, join)
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]  # taskset execs: the pid is the agent's own
    with open(agent.log, "wb") as log:
        agent.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                      env=dict(os.environ, PYTHONPATH=str(ROOT)))


def eventually(check, what: str, pool: Pool, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for agent in pool.agents:
            if agent.proc is not None and agent.proc.poll() is not None:
                raise SystemExit(f"{agent.name} exited: {tail(agent.log)}")
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise SystemExit(f"{pool.target}: {what} not within {timeout}s (last: {last!r})")


def tail(path: Path | None) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except (OSError, AttributeError):
        return ""


def start_pool(consul: str | None, n: int) -> Pool:
    pool = Pool("consul" if consul else "waypost",
                Path(tempfile.mkdtemp(prefix="gossip-cluster-bench-")))
    ports = free_ports(5 * n)
    for i in range(n):
        name = "srv" if i == 0 else f"c{i}"
        pool.agents.append(Agent(name, i == 0, *ports[5 * i:5 * i + 5]))
    try:
        # The server and the client that wrk loads share core 0; wrk gets core 1.
        launch(consul, pool.server, pool.workdir, None, pin=True)
        eventually(lambda: pool.server.get("/v1/status/leader"), "server leader", pool)
        for i, agent in enumerate(pool.clients):
            launch(consul, agent, pool.workdir, pool.server.serf_lan, pin=(i == 0))
        names = {a.name for a in pool.agents}
        eventually(lambda: {m["Name"] for m in pool.server.get("/v1/agent/members")
                            if m["Status"] == 1} >= names, "every member alive", pool)
        eventually(lambda: {n["Node"] for n in pool.server.get("/v1/catalog/nodes")} >= names,
                   "every node in the catalog", pool)
        for agent in pool.clients:
            eventually(lambda: agent.get("/v1/status/leader"), f"{agent.name} knows a server",
                       pool)
    except BaseException:
        pool.stop()
        raise
    return pool


# ---------------------------------------------------------------------------------------------
# Idle cost


class LoopbackCounter:
    """Counts IPv4 TCP/UDP packets on `lo` whose source or destination port is in a set."""

    def __init__(self, groups: dict[str, set[int]]) -> None:
        self.groups = groups
        self.counts = {g: {"udp": [0, 0, 0], "tcp": [0, 0, 0]} for g in groups}  # pkts, payload, ip
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("lo", ETH_P_ALL))
        self.sock.settimeout(0.2)
        self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reading resets the counters
        self.drops = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        _, self.drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            if addr[2] != PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
                continue  # count each loopback packet once; IPv4 only
            ip = frame[14:]
            proto = ip[9]
            if proto not in (6, 17):
                continue
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack_from("!H", ip, 2)[0]
            sport, dport = struct.unpack_from("!HH", ip, ihl)
            if proto == 17:
                kind, header = "udp", ihl + 8
            else:
                kind, header = "tcp", ihl + (ip[ihl + 12] >> 4) * 4
            for group, ports in self.groups.items():
                if sport in ports or dport in ports:
                    c = self.counts[group][kind]
                    c[0] += 1
                    c[1] += total - header
                    c[2] += total
                    break


def measure_idle(pool: Pool, seconds: float) -> dict[str, float]:
    n = len(pool.agents)
    counter = LoopbackCounter({"gossip": {a.serf_lan for a in pool.agents},
                               "rpc": {pool.server.rpc}})
    counter.start()
    cpu0 = [a.cpu_seconds() for a in pool.agents]
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1 = [a.cpu_seconds() for a in pool.agents]
    elapsed = time.monotonic() - t0
    counter.stop()
    rates = [(b - a) / elapsed for a, b in zip(cpu0, cpu1)]
    g, r = counter.counts["gossip"], counter.counts["rpc"]
    return {
        "cpu_server": rates[0],
        "cpu_client_mean": statistics.mean(rates[1:]),
        "cpu_client_max": max(rates[1:]),
        "cpu_pool": sum(rates),
        "udp_pkts": g["udp"][0] / elapsed / n,
        "udp_bytes": g["udp"][1] / elapsed / n,
        "tcp_bytes": g["tcp"][1] / elapsed / n,
        "gossip_bytes": (g["udp"][1] + g["tcp"][1]) / elapsed / n,
        "gossip_ip_bytes": (g["udp"][2] + g["tcp"][2]) / elapsed / n,
        "rpc_bytes": (r["tcp"][2] + r["udp"][2]) / elapsed,
        "drops": counter.drops,
    }


# ---------------------------------------------------------------------------------------------
# Requests through a client


def seed(client: Agent) -> None:
    client.put("/v1/kv/bench/key", "x" * 64)
    for i in range(20):
        client.put("/v1/catalog/register", json.dumps({
            "Node": f"node{i}", "Address": f"10.1.0.{i + 1}",
            "Service": {"ID": f"api{i}", "Service": "api", "Port": 8000 + i,
                        "Tags": ["v1", "prod"]},
            "Check": {"CheckID": f"api{i}", "Name": "api alive", "Status": "passing",
                      "ServiceID": f"api{i}"}}))


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s", url],
                         capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx answers\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def measure_http(pool: Pool, seconds: int) -> dict[str, float]:
    client = pool.clients[0]
    seed(client)
    rows = client.get("/v1/health/service/api")
    if len(rows) != 20:
        raise SystemExit(f"{pool.target}: health/service/api gave {len(rows)} rows, not 20")
    out = {}
    for key, path in (("kv_rps", "/v1/kv/bench/key"), ("health_rps", "/v1/health/service/api")):
        wrk(client.base + path, 2)  # warm up
        out[key] = wrk(client.base + path, seconds)
    return out


# ---------------------------------------------------------------------------------------------
# Failure detection


def measure_kills(pool: Pool, kills: int) -> dict[str, float]:
    failed, critical = [], []
    server = pool.server
    for victim in pool.clients[-kills:]:
        victim.proc.kill()
        t0 = time.monotonic()
        victim.proc.wait()
        seen_failed = seen_critical = None
        deadline = t0 + 90
        while (seen_failed is None or seen_critical is None) and time.monotonic() < deadline:
            try:
                if seen_failed is None and any(
                        m["Name"] == victim.name and m["Status"] == 4
                        for m in server.get("/v1/agent/members")):
                    seen_failed = time.monotonic() - t0
                if seen_critical is None and any(
                        c["CheckID"] == "serfHealth" and c["Status"] == "critical"
                        for c in server.get(f"/v1/health/node/{victim.name}")):
                    seen_critical = time.monotonic() - t0
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        if seen_failed is None or seen_critical is None:
            raise SystemExit(f"{pool.target}: {victim.name} not seen failed within 90 s")
        failed.append(seen_failed)
        critical.append(seen_critical)
        time.sleep(2)  # let the dead member's news spread before the next kill
    return {"failed_median": statistics.median(failed), "failed_all": failed,
            "critical_median": statistics.median(critical)}


# ---------------------------------------------------------------------------------------------


def run(consul: str | None, args: argparse.Namespace) -> dict:
    label = f"consul ({consul})" if consul else "waypost"
    print(f"[{label}] loadavg {Path('/proc/loadavg').read_text().split()[:3]}; "
          f"starting {args.agents} agents", file=sys.stderr, flush=True)
    t = time.monotonic()
    pool = start_pool(consul, args.agents)
    try:
        print(f"[{label}] pool up in {time.monotonic() - t:.1f}s; settling {args.settle}s, "
              f"then {args.idle}s idle", file=sys.stderr, flush=True)
        time.sleep(args.settle)
        result = measure_idle(pool, args.idle)
        print(f"[{label}] wrk through client c1", file=sys.stderr, flush=True)
        result.update(measure_http(pool, args.seconds))
        print(f"[{label}] killing {args.kills} clients", file=sys.stderr, flush=True)
        result.update(measure_kills(pool, args.kills))
    finally:
        pool.stop()
    return result


ROWS = [
    ("CPU s/s, server", "cpu_server", "{:.4f}"),
    ("CPU s/s, client (mean)", "cpu_client_mean", "{:.4f}"),
    ("CPU s/s, client (max)", "cpu_client_max", "{:.4f}"),
    ("CPU s/s, whole pool", "cpu_pool", "{:.3f}"),
    ("gossip payload B/s per agent", "gossip_bytes", "{:.0f}"),
    ("  of which UDP", "udp_bytes", "{:.0f}"),
    ("  of which TCP (push-pull)", "tcp_bytes", "{:.0f}"),
    ("gossip IP B/s per agent (w/ headers)", "gossip_ip_bytes", "{:.0f}"),
    ("gossip UDP packets/s per agent", "udp_pkts", "{:.1f}"),
    ("RPC port B/s, all clients (IP)", "rpc_bytes", "{:.0f}"),
    ("packet-socket drops", "drops", "{}"),
    ("GET /v1/kv/<key> via client, req/s", "kv_rps", "{:.0f}"),
    ("GET /v1/health/service (20) via client", "health_rps", "{:.0f}"),
    ("kill -> failed on server, median s", "failed_median", "{:.2f}"),
    ("kill -> serfHealth critical, median s", "critical_median", "{:.2f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--consul", help="a consul binary: measure it too, beside Waypost")
    parser.add_argument("--only-consul", action="store_true", help="skip Waypost")
    parser.add_argument("--agents", type=int, default=20, help="pool size, server included")
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run")
    parser.add_argument("--idle", type=float, default=30.0, help="idle measurement window")
    parser.add_argument("--settle", type=float, default=10.0, help="wait before measuring")
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    if args.agents < args.kills + 2:
        raise SystemExit("--agents must be at least --kills + 2")
    if os.geteuid() != 0:
        raise SystemExit("needs root for the packet socket that counts gossip bytes")
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing")
    targets = ([] if args.only_consul else [None]) + ([args.consul] if args.consul else [])
    results = {("consul" if c else "waypost"): run(c, args) for c in targets}
    names = list(results)
    print(f"{args.agents} agents (1 server + {args.agents - 1} clients) on 127.0.0.1; "
          f"idle window {args.idle:.0f}s after {args.settle:.0f}s settling; wrk -c32 "
          f"{args.seconds}s; {args.kills} kills")
    print(f"{'':40s}" + "".join(f"{n:>12s}" for n in names))
    for title, key, fmt in ROWS:
        print(f"{title:40s}" + "".join(f"{fmt.format(results[n][key]):>12s}" for n in names))
    for n in names:
        print(f"{n}: kill -> failed, each: " +
              ", ".join(f"{x:.2f}" for x in results[n]["failed_all"]))


if __name__ == "__main__":
    main()
