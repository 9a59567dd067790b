"""Runs a real `waypost agent -dev` subprocess on free 127.0.0.1 ports for end-to-end tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free for both TCP and UDP on 127.0.0.1 right now (DNS needs
    both). All are held until every one is chosen, so the kernel cannot hand one out twice."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(50 * count):
            if len(ports) == count:
                break
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
    if len(ports) < count:
        raise RuntimeError("no ports free for both TCP and UDP")
    return ports


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http_request(url: str, method: str, body: bytes | str | None = None,
                 headers: dict | None = None, timeout: float = 30.0):
    """(status, headers, body bytes): HTTP errors are answers; a refused connection or a
    timeout raises OSError."""
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def free_port() -> int:
    return free_ports(1)[0]


class AgentProcess:
    def __init__(self, *args: str, node: str = "oracle") -> None:
        self.port, self.dns_port, self.serf_lan, self.serf_wan, self.server_port = free_ports(5)
        self.node = node
        self.args = ["agent", "-dev", "-node", node, "-http-port", str(self.port),
                     "-dns-port", str(self.dns_port), "-serf-lan-port", str(self.serf_lan),
                     "-serf-wan-port", str(self.serf_wan), "-server-port", str(self.server_port),
                     "-log-level", "warn", *args]
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "AgentProcess":
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", *self.args],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("agent exited: " + self.proc.stderr.read().decode())
            try:
                with urllib.request.urlopen(self.base + "/v1/status/leader", timeout=1) as r:
                    if json.loads(r.read()):
                        return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("agent did not come up in time")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode

    def log_so_far(self) -> str:
        """What the agent wrote to stderr so far, read without blocking."""
        fd = self.proc.stderr.fileno()
        os.set_blocking(fd, False)
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict | None = None, timeout: float = 30.0):
        """(status, headers, body bytes) — errors are answers, not exceptions."""
        return http_request(self.base + path, method, body, headers, timeout)

    def json(self, method: str, path: str, body=None):
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        status, headers, data = self.request(method, path, body)
        return status, headers, (json.loads(data) if data and headers.get("Content-Type", "").startswith("application/json") else data)
