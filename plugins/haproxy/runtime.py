"""HAProxy's runtime API (the stats socket, through haproxyadmin) and its master CLI.

haproxyadmin talks over blocking UNIX sockets, so `RuntimeAPI` is plain blocking code and
`Runtime` runs it on a small thread pool of its own (``deferToThreadPool``), never on the
reactor thread. Failures become `RuntimeAPIError` with a message that names the socket.
`parse_servers_state` reads the ``show servers state`` dump (pure).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import TypeVar

from haproxyadmin import haproxy as hapadmin
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from plugins.haproxy.plan import DRAIN, MAINT, READY, Slot

T = TypeVar("T")

# srv_admin_state bits (management guide, "show servers state"). CMAINT stays set on a slot
# declared "disabled" even once the CLI made it ready, so it does not mean maintenance alone.
_ADMF_FMAINT, _ADMF_IMAINT, _ADMF_CMAINT = 0x01, 0x02, 0x04
_ADMF_FDRAIN, _ADMF_IDRAIN, _ADMF_RMAINT = 0x08, 0x10, 0x20
_MAINT_BITS = _ADMF_FMAINT | _ADMF_IMAINT | _ADMF_RMAINT
_DRAIN_BITS = _ADMF_FDRAIN | _ADMF_IDRAIN
# What a successful "set server" says; anything else is HAProxy refusing the command.
_OK_MARKERS = ("changed", "no need to change", "Done.")


class RuntimeAPIError(Exception):
    """HAProxy could not be reached, or refused a command."""


def parse_servers_state(lines: Iterable[str]) -> dict[str, list[Slot]]:
    """Backend name -> its servers, from ``show servers state`` output (format version 1)."""
    backends: dict[str, list[Slot]] = {}
    columns: list[str] | None = None
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            columns = line.lstrip("# ").split()
            continue
        fields = line.split()
        if columns is None or len(fields) < len(columns):
            continue  # the version line, or a truncated one
        row = dict(zip(columns, fields))
        admin = int(row["srv_admin_state"])
        state = MAINT if admin & _MAINT_BITS else DRAIN if admin & _DRAIN_BITS else READY
        port = int(row.get("srv_port", "0") or 0)
        backends.setdefault(row["be_name"], []).append(
            Slot(row["srv_name"], row["srv_addr"], port, int(row["srv_uweight"]), state))
    return backends


class RuntimeAPI:
    """Blocking calls on the stats socket; run them off the reactor (see `Runtime`)."""

    def __init__(self, socket_path: str, timeout: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._hap: hapadmin.HAProxy | None = None

    def _connect(self) -> hapadmin.HAProxy:
        if self._hap is None:
            if not os.path.exists(self.socket_path):
                raise RuntimeAPIError(f"HAProxy runtime API socket {self.socket_path} does not "
                                      "exist (is HAProxy running with that 'stats socket'?)")
            try:
                self._hap = hapadmin.HAProxy(socket_file=self.socket_path, retry=None,
                                             timeout=self.timeout)
            except (ValueError, OSError) as e:
                raise RuntimeAPIError(f"cannot reach HAProxy's runtime API at "
                                      f"{self.socket_path}: {self._why(e)}") from e
        return self._hap

    def _why(self, error: Exception) -> str:
        """A better reason than haproxyadmin's "UNIX socket file was not set"."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
        except OSError as e:
            return f"{e.strerror or e} (is HAProxy running?)"
        return f"{error} (not an HAProxy stats socket?)"

    def command(self, cmd: str) -> list[str]:
        """Run one command; the output lines (of the one process)."""
        hap = self._connect()
        try:
            results = hap.command(cmd)
        except Exception as e:  # haproxyadmin raises its own types, OSError and ValueError
            self._hap = None
            raise RuntimeAPIError(f"HAProxy runtime API at {self.socket_path} failed on "
                                  f"{cmd!r}: {type(e).__name__}: {e}") from e
        lines: list[str] = []
        for _, output in results:
            lines.extend(output if isinstance(output, list) else [output])
        return lines

    def run(self, commands: Iterable[str]) -> int:
        """Run ``set server`` commands in order; stop at the first one HAProxy refuses."""
        count = 0
        for cmd in commands:
            output = [line for line in self.command(cmd) if line.strip()]
            bad = [line for line in output if not any(m in line for m in _OK_MARKERS)]
            if bad:
                raise RuntimeAPIError(f"HAProxy refused {cmd!r}: {' '.join(bad)}")
            count += 1
        return count

    def servers_state(self) -> dict[str, list[Slot]]:
        return parse_servers_state(self.command("show servers state"))

    def servers_state_text(self) -> str:
        return "\n".join(self.command("show servers state")) + "\n"

    def pid(self) -> int:
        """The worker's pid (``show info``), which a reload changes."""
        for line in self.command("show info"):
            name, _, value = line.partition(":")
            if name.strip() == "Pid":
                return int(value)
        raise RuntimeAPIError(f"no Pid in 'show info' from {self.socket_path}")


def master_command(path: str, command: str, timeout: float = 5.0) -> str:
    """Send one command to the master CLI (``haproxy -W -S path``) and read the answer.

    The master CLI keeps a connection open until the client closes its side, so the write
    side is shut after the command.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except OSError as e:
            raise RuntimeAPIError(f"HAProxy master CLI at {path} failed on {command!r}: "
                                  f"{type(e).__name__}: {e}") from e
    return b"".join(chunks).decode(errors="replace")


class Runtime:
    """The asynchronous face of `RuntimeAPI`: each call runs on this object's thread pool.

    One thread keeps commands in order. `start` and `stop` belong to the owning service;
    `stop` must come after the last call finished.
    """

    def __init__(self, reactor, api: RuntimeAPI, master_socket: str | None = None) -> None:
        self.reactor = reactor
        self.api = api
        self.master_socket = master_socket
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="waypost-haproxy")

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()

    def call(self, fn: Callable[..., T], *args) -> Deferred:
        return deferToThreadPool(self.reactor, self.pool, fn, *args)

    def servers_state(self) -> Deferred:
        return self.call(self.api.servers_state)

    def servers_state_text(self) -> Deferred:
        return self.call(self.api.servers_state_text)

    def run(self, commands: Iterable[str]) -> Deferred:
        return self.call(self.api.run, list(commands))

    def pid(self) -> Deferred:
        return self.call(self.api.pid)

    def master(self, command: str) -> Deferred:
        if self.master_socket is None:
            raise RuntimeAPIError("no master_socket configured")
        return self.call(master_command, self.master_socket, command, self.api.timeout)
