"""A real Consul 1.8.7 agent on free 127.0.0.1 ports, the partner of interop tests.

Found through WAYPOST_CONSUL_BIN (or /tmp/oracle/bin/consul, where
../shared/tools/get-consul.sh installs it); `consul_binary()` is None when there is none, and
tests skip with `NO_CONSUL`, a visible reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.agentproc import free_ports, http_request, stop_process

NO_CONSUL = ("no Consul binary: set WAYPOST_CONSUL_BIN or install one with "
             "../shared/tools/get-consul.sh (ORACLE=/tmp/oracle)")


def consul_binary() -> str | None:
    for candidate in (os.environ.get("WAYPOST_CONSUL_BIN"), "/tmp/oracle/bin/consul",
                      shutil.which("consul")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


class ConsulProcess:
    """`consul agent` (-dev unless `dev=False`) with its own ports and data dir."""

    def __init__(self, *args: str, node: str = "consul1", dev: bool = True) -> None:
        binary = consul_binary()
        if binary is None:
            raise RuntimeError(NO_CONSUL)
        (self.http, self.dns, self.serf_lan, self.serf_wan, self.server_port) = free_ports(5)
        self.node = node
        self.data_dir = tempfile.mkdtemp(prefix="consul-interop-")
        self.args = [binary, "agent", *(["-dev"] if dev else ["-data-dir", self.data_dir]),
                     "-node", node, "-bind", "127.0.0.1", "-client", "127.0.0.1",
                     "-http-port", str(self.http), "-dns-port", str(self.dns),
                     "-serf-lan-port", str(self.serf_lan), "-serf-wan-port", str(self.serf_wan),
                     "-server-port", str(self.server_port), "-grpc-port", "-1",
                     "-log-level", "debug", *args]
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(self.data_dir) / "consul.log"

    def start(self, timeout: float = 20.0, wait_leader: bool = True) -> "ConsulProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("consul exited: " + self.log())
            try:
                leader = self.get("/v1/status/leader")
                if leader or not wait_leader:
                    return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("consul did not come up in time: " + self.log())

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict | None = None, timeout: float = 30.0):
        """(status, headers, body bytes), as `AgentProcess.request`."""
        return http_request(self.base + path, method, body, headers, timeout)

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5) as r:
            return json.loads(r.read())

    def put(self, path: str, body: bytes = b""):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=body,
                                     method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
            return json.loads(data) if data else None

    def members(self) -> dict[str, int]:
        """Member name -> Serf status number, as /v1/agent/members reports."""
        return {m["Name"]: m["Status"] for m in self.get("/v1/agent/members")}

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def running_consul(node: str):
    """A generator for a module-scoped fixture: a started `ConsulProcess` (the test is
    skipped with NO_CONSUL when there is no binary), stopped afterwards."""
    import pytest
    if consul_binary() is None:
        pytest.skip(NO_CONSUL)
    agent = ConsulProcess(node=node).start()
    try:
        yield agent
    finally:
        agent.stop()
