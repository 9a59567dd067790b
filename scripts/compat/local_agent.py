"""One local `consul agent -dev` or `waypost agent -dev` process for py-consul's test suite.

It replaces the Docker container of py-consul's fixture: same command-line flags (except
-client, which stays on 127.0.0.1), the fixture's config as a -config-file, free ports, and the
same readiness check (a leader, then a registered service visible through /v1/health).
The agent's output goes to a log file, never to a pipe nobody reads, so a chatty agent
(-log-level trace) cannot block on a full pipe.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_config import with_ports

START_TIMEOUT = 60.0  # two shared cores: a -dev agent can take a while to elect itself


class AgentStartError(RuntimeError):
    """The agent exited or did not become ready; the message holds the end of its log."""


@dataclass(frozen=True)
class Target:
    """What to start: real Consul (a binary) or Waypost (a Python checkout)."""

    kind: str  # "consul" or "waypost"
    consul_binary: str = ""
    waypost_root: str = ""
    waypost_python: str = ""

    def command(self, config_file: str) -> tuple[list[str], str | None, dict[str, str]]:
        flags = ["agent", "-dev", "-client=127.0.0.1", "-log-level", "trace",
                 "-config-file", config_file]
        if self.kind == "consul":
            return [self.consul_binary, *flags, "-bind=127.0.0.1"], None, dict(os.environ)
        env = dict(os.environ, PYTHONPATH=self.waypost_root)
        return [self.waypost_python, "-m", "gateway.cli.main", *flags], self.waypost_root, env


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free for TCP and UDP on 127.0.0.1 (serf uses both), all held
    until every one is chosen so none is handed out twice."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket()
            tcp.bind(("127.0.0.1", 0))
            held.append(tcp)
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(udp)
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            data = resp.read()
            return resp.status, (json.loads(data) if data else None)
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class LocalAgent:
    """A started agent: `port` and `version` (from /v1/agent/self, as the fixture reads it)."""

    def __init__(self, target: Target, config: dict[str, Any], log_path: Path) -> None:
        self.target = target
        http, serf_lan, serf_wan, server, grpc = free_ports(5)
        self.port = http
        self.config = with_ports(config, http, serf_lan, serf_wan, server, grpc)
        self.log_path = log_path
        self.version = ""
        self._dir = tempfile.mkdtemp(prefix="pyconsul-agent-")
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/"

    def start(self) -> "LocalAgent":
        config_file = os.path.join(self._dir, "config.json")
        with open(config_file, "w", encoding="utf-8") as f:
            json.dump(self.config, f)
        argv, cwd, env = self.target.command(config_file)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log.write(("$ " + " ".join(argv) + "\n# config: " + json.dumps(self.config) + "\n").encode())
        self._log.flush()
        self._proc = subprocess.Popen(argv, cwd=cwd or self._dir, env=env, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(time.monotonic() + START_TIMEOUT)
            _, body = _http("GET", self.base + "agent/self")
            self.version = body["Config"]["Version"].strip()
        except Exception:
            self.stop()
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        # The fixture's two steps: a leader, then a service that shows up in /v1/health.
        registered = False
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AgentStartError(f"agent exited with {self._proc.returncode}: {self.last_line()}\n"
                                      + self.log_tail())
            try:
                if not registered:
                    status, leader = _http("GET", self.base + "status/leader")
                    if status == 200 and leader:
                        status, _ = _http("PUT", self.base + "agent/service/register",
                                          json.dumps({"name": "test-service"}).encode())
                        registered = status == 200
                else:
                    status, nodes = _http("GET", self.base + "health/service/test-service")
                    if status == 200 and nodes:
                        _http("PUT", self.base + "agent/service/deregister/test-service")
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AgentStartError(f"agent not ready in time: {self.last_line()}\n" + self.log_tail())

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-limit:]
        except OSError:
            return ""

    def last_line(self) -> str:
        lines = [line for line in self.log_tail().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self._dir, ignore_errors=True)
