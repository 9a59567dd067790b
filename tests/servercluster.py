"""A cluster of n real servers on 127.0.0.1, Waypost or Consul, for tests and benches.

Each server gets its own five ports (HTTP, DNS, Serf LAN, Serf WAN, server RPC), its own data
dir and a config file for extra settings, and starts with the same flags for both programs
(Waypost's flags are Consul's): ``-server -bootstrap-expect n -retry-join 127.0.0.1:<Serf LAN
of every server>``. Servers can be killed (SIGKILL) and restarted on the same ports and data
dir, which is what failover tests need.

Consul's defaults (``raft_multiplier`` 5) make an election after a leader's death take about
15 s; tests pass ``{"performance": {"raft_multiplier": 1}}`` in ``config`` to shorten it.
Consul's autopilot also drops a dead server from the Raft configuration after a while and
brings it back as a non-voter that is promoted after 10 s, so a restarted Consul server is a
voter again only then (`wait_voters`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.agentproc import ROOT, free_ports, http_request, stop_process
from tests.consulproc import NO_CONSUL, consul_binary


class ClusterError(RuntimeError):
    """The cluster did not do what was waited for; the message ends with each server's log."""


@dataclass
class Server:
    """One server slot: its ports and files stay the same across restarts."""

    index: int
    name: str
    http: int
    dns: int
    serf_lan: int
    serf_wan: int
    server_port: int
    data_dir: Path
    config_path: Path
    stdout_path: Path
    stderr_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ServerCluster:
    """`n` servers of `binary` ("waypost" or "consul"), files under `tmp_path`."""

    def __init__(self, n: int, tmp_path: Path | str, binary: str = "waypost",
                 extra_args: tuple[str, ...] | list[str] = (), config: dict | None = None
                 ) -> None:
        if binary not in ("waypost", "consul"):
            raise ValueError(f"binary must be 'waypost' or 'consul', not {binary!r}")
        self.binary = binary
        self.consul = consul_binary() if binary == "consul" else None
        if binary == "consul" and self.consul is None:
            raise RuntimeError(NO_CONSUL)
        self.n = n
        self.extra_args = tuple(extra_args)
        self.tmp_path = Path(tmp_path)
        ports = free_ports(5 * n)  # all at once: distinct across the whole cluster
        self.servers: list[Server] = []
        for i in range(n):
            home = self.tmp_path / f"{binary}-s{i}"
            home.mkdir(parents=True, exist_ok=True)
            config_path = home / "extra.json"
            config_path.write_text(json.dumps(config or {}))
            http, dns, lan, wan, rpc = ports[5 * i:5 * i + 5]
            self.servers.append(Server(i, f"s{i}", http, dns, lan, wan, rpc, home / "data",
                                       config_path, home / "stdout.log", home / "stderr.log"))

    # -- processes ------------------------------------------------------------------------

    def command(self, i: int) -> list[str]:
        s = self.servers[i]
        program = ([self.consul] if self.consul else
                   [sys.executable, "-m", "gateway.cli.main"])
        joins = [arg for other in self.servers
                 for arg in ("-retry-join", f"127.0.0.1:{other.serf_lan}")]
        return [*program, "agent", "-server", "-bootstrap-expect", str(self.n),
                "-node", s.name, "-data-dir", str(s.data_dir),
                "-bind", "127.0.0.1", "-client", "127.0.0.1",
                "-http-port", str(s.http), "-dns-port", str(s.dns),
                "-serf-lan-port", str(s.serf_lan), "-serf-wan-port", str(s.serf_wan),
                "-server-port", str(s.server_port), *joins,
                "-log-level", "warn", "-config-file", str(s.config_path), *self.extra_args]

    def _spawn(self, i: int) -> None:
        s = self.servers[i]
        # Append: a restart's log follows the killed run's, so a failure shows both.
        with open(s.stdout_path, "ab") as out, open(s.stderr_path, "ab") as err:
            s.proc = subprocess.Popen(self.command(i), cwd=ROOT, stdout=out, stderr=err,
                                      env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def _wait_http(self, indices: list[int], timeout: float) -> None:
        """Until each server answers GET /v1/status/leader (with or without a leader)."""
        pending = set(indices)
        deadline = time.monotonic() + timeout
        while pending:
            for i in sorted(pending):
                s = self.servers[i]
                if not s.alive:
                    raise ClusterError(f"server {s.name} exited with {s.proc.returncode}"
                                       + self.tails())
                try:
                    self.request(i, "GET", "/v1/status/leader", timeout=2)
                    pending.discard(i)
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                names = ", ".join(self.servers[i].name for i in sorted(pending))
                raise ClusterError(f"no HTTP answer from {names} in {timeout} s" + self.tails())
            if pending:
                time.sleep(0.05)

    def start(self, timeout: float = 30.0) -> "ServerCluster":
        """Start every server and wait until each answers HTTP (not for a leader)."""
        for i in range(self.n):
            self._spawn(i)
        try:
            self._wait_http(list(range(self.n)), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, i: int) -> None:
        """SIGKILL server `i` and reap it."""
        proc = self.servers[i].proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start server `i` again on its ports and data dir (killing it first if it runs)."""
        self.kill(i)
        self._spawn(i)
        self._wait_http([i], timeout)

    def stop(self) -> None:
        for s in self.servers:
            if s.proc is not None:
                stop_process(s.proc)

    def alive(self) -> list[int]:
        return [s.index for s in self.servers if s.alive]

    # -- HTTP -----------------------------------------------------------------------------

    def request(self, i: int, method: str, path: str, body: bytes | str | None = None,
                headers: dict | None = None, timeout: float = 30.0):
        """(status, headers, body bytes) from server `i`; HTTP errors are answers, a refused
        connection or a timeout raises OSError."""
        return http_request(self.servers[i].base + path, method, body, headers, timeout)

    def get_json(self, i: int, path: str, timeout: float = 10.0):
        status, _, data = self.request(i, "GET", path, timeout=timeout)
        if status != 200:
            raise ClusterError(f"GET {path} on {self.servers[i].name}: {status} {data[:200]!r}")
        return json.loads(data)

    def server_by_address(self, address: str) -> int | None:
        """The index of the server whose server RPC port `address` ("host:port") names."""
        port = address.rpartition(":")[2]
        for s in self.servers:
            if port == str(s.server_port):
                return s.index
        return None

    # -- waiting --------------------------------------------------------------------------

    def leader_views(self) -> dict[int, str | None]:
        """What each live server says GET /v1/status/leader is (None: no answer)."""
        views: dict[int, str | None] = {}
        for i in self.alive():
            try:
                status, _, data = self.request(i, "GET", "/v1/status/leader", timeout=2)
                views[i] = json.loads(data) if status == 200 else None
            except (OSError, ValueError):
                views[i] = None
        return views

    def wait_leader(self, timeout: float = 60.0) -> int:
        """Until every live server names the same live server as leader; its index."""
        deadline = time.monotonic() + timeout
        views: dict[int, str | None] = {}
        while True:
            views = self.leader_views()
            said = set(views.values())
            if len(said) == 1 and views:
                address = said.pop()
                leader = self.server_by_address(address) if address else None
                if leader is not None and self.servers[leader].alive:
                    return leader
            if time.monotonic() > deadline:
                shown = {self.servers[i].name: v for i, v in views.items()}
                raise ClusterError(f"no agreed leader in {timeout} s: {shown}" + self.tails())
            time.sleep(0.05)

    def peers(self, i: int) -> set[str]:
        return set(self.get_json(i, "/v1/status/peers", timeout=5))

    def wait_voters(self, count: int, timeout: float = 60.0) -> int:
        """Until the leader's Raft configuration holds `count` voters (and all live servers
        agree on that leader); the leader's index. Uses /v1/operator/raft/configuration
        where it answers, else /v1/status/peers."""
        deadline = time.monotonic() + timeout
        seen: object = None
        while True:
            leader = self.wait_leader(max(1.0, deadline - time.monotonic()))
            try:
                status, _, data = self.request(leader, "GET", "/v1/operator/raft/configuration",
                                               timeout=5)
                if status == 200:
                    servers = json.loads(data)["Servers"]
                    seen = [(s["Node"], s["Voter"]) for s in servers]
                    voters = sum(1 for s in servers if s["Voter"])
                else:
                    seen = self.peers(leader)
                    voters = len(seen)
                if voters == count:
                    return leader
            except (OSError, ValueError, KeyError, ClusterError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"not {count} voters in {timeout} s: {seen}" + self.tails())
            time.sleep(0.1)

    # -- logs -----------------------------------------------------------------------------

    def tails(self, chars: int = 3000) -> str:
        """The end of every server's stdout and stderr, for failure messages."""
        parts = []
        for s in self.servers:
            for path in (s.stdout_path, s.stderr_path):
                try:
                    text = path.read_text(errors="replace")[-chars:]
                except OSError:
                    continue
                if text.strip():
                    parts.append(f"\n--- {s.name} {path.name} ---\n{text}")
        return "".join(parts)
