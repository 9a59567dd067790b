"""Docker checks: run a command inside a container through the Docker Engine API.

Three calls, as Consul's minimal Docker client makes them: ``POST /containers/<id>/exec``
creates an exec for ``Args`` (or ``[shell, "-c", script]``), ``POST /exec/<exec>/start`` runs it
attached and streams its output, ``GET /exec/<exec>/json`` gives its ``ExitCode``. Exit codes
are read as for script checks (0 passing, 1 warning, else critical); API failures are critical
with Consul's messages ("create exec failed for unknown container ...").

We start the exec with ``Tty: false``, so stdout and stderr arrive in Docker's multiplexed
framing (an 8-byte header per frame: stream type, three zero bytes, big-endian uint32 size);
`Demultiplexer` strips it and keeps the last 4 KiB of the payload. (Consul asks for a TTY and
so gets the raw bytes, with carriage returns; the payload is otherwise the same.)

The engine is reached at ``DOCKER_HOST`` as the agent passes it (``unix:///path`` or
``tcp://host:port``), else ``unix:///var/run/docker.sock``. The whole check is bounded by its
timeout (default 30 s; Consul has none and can hang on a stuck engine).
"""

from __future__ import annotations

import json
import random
from typing import Any, Callable, Sequence
from urllib.parse import quote, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.web.client import Agent, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from agent import structs
from agent.durations import go_duration
from agent.checks.base import (
    OUTPUT_MAX,
    CheckNotifier,
    IntervalRunner,
    TailBuffer,
    dial_error,
)
from agent.checks.http import BytesProducer, capped_sink, deliver_body, go_url_op, quiet_pool
from agent.checks.script import DEFAULT_SHELL, status_for_exit

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT = 30.0
API_BODY_MAX = 64 * 1024  # JSON answers of create/inspect are tiny; never hold more


class DockerAPIError(Exception):
    """A failed Engine API call, worded as Consul words it."""


class Demultiplexer:
    """Strips Docker's stream framing, writing the payload of every frame to `output`."""

    def __init__(self, output: TailBuffer) -> None:
        self.output = output
        self._header = bytearray()
        self._left = 0  # payload bytes still due in the current frame

    def feed(self, data: bytes) -> bool:
        position = 0
        while position < len(data):
            if self._left:
                chunk = data[position:position + self._left]
                self.output.write(chunk)
                self._left -= len(chunk)
                position += len(chunk)
                continue
            need = 8 - len(self._header)
            self._header += data[position:position + need]
            position += need
            if len(self._header) == 8:
                self._left = int.from_bytes(self._header[4:8], "big")
                self._header.clear()
        return True  # always read on: the tail buffer bounds what we keep


def parse_docker_host(host: str) -> tuple[str, str]:
    """(proto, address) of a DOCKER_HOST value; ValueError with Consul's message otherwise."""
    proto, sep, rest = host.partition("://")
    if not sep:
        raise ValueError(f"unable to parse docker host `{host}`")
    if proto == "tcp":
        rest = urlsplit("tcp://" + rest).netloc
    if proto not in ("unix", "tcp") or not rest:
        raise ValueError(f"unsupported docker host `{host}`")
    return proto, rest


@implementer(IAgentEndpointFactory)
class _EngineEndpoints:
    """Every request goes to the engine's socket, whatever host the URL names."""

    def __init__(self, reactor, proto: str, address: str) -> None:
        self._reactor = reactor
        self._proto = proto
        self._address = address

    def endpointForURI(self, uri):
        if self._proto == "unix":
            return UNIXClientEndpoint(self._reactor, self._address)
        host, _, port = self._address.rpartition(":")
        return HostnameEndpoint(self._reactor, host.strip("[]"), int(port))


class DockerRunner(IntervalRunner):
    """Consul's Docker check."""

    def __init__(self, reactor, check_id: str, interval: float, timeout: float,
                 notifier: CheckNotifier, rng: random.Random | None = None, *,
                 container_id: str, args: Sequence[str] = (), script: str = "",
                 shell: str = DEFAULT_SHELL, docker_host: str | None = None,
                 output_max: int = OUTPUT_MAX, **thresholds: int) -> None:
        super().__init__(reactor, check_id, interval, timeout or DEFAULT_TIMEOUT, notifier, rng,
                         **thresholds)
        self.container_id = container_id
        self.command = list(args) if args else [shell or DEFAULT_SHELL, "-c", script]
        self.output_max = output_max
        self.docker_host = docker_host or DEFAULT_DOCKER_HOST
        try:
            self._proto, self._address = parse_docker_host(self.docker_host)
        except ValueError as exc:
            self._agent = None
            self._host_problem = str(exc)
        else:
            self._host_problem = ""
            # Over a Unix socket the host name only fills the Host header (Consul: "docker").
            self._base = ("http://docker" if self._proto == "unix"
                          else f"http://{self._address}")
            self._agent = Agent.usingEndpointFactory(
                reactor, _EngineEndpoints(reactor, self._proto, self._address),
                pool=quiet_pool(reactor))  # no keep-alive, no log line per call

    def run_once(self) -> Deferred:
        run = Deferred.fromCoroutine(self._check())
        run.addTimeout(self.timeout, self._reactor, onTimeoutCancel=self._timed_out)
        return run

    def _timed_out(self, result: Any, timeout: float) -> tuple[str, str]:
        return structs.CRITICAL, f"Timed out ({go_duration(timeout)}) running check"

    async def _check(self) -> tuple[str, str]:
        if self._agent is None:
            return structs.CRITICAL, self._host_problem
        try:
            exec_id = await self._create_exec()
            output = TailBuffer(self.output_max)
            await self._start_exec(exec_id, output)
            exit_code = await self._inspect_exec(exec_id)
        except DockerAPIError as exc:
            return structs.CRITICAL, str(exc)
        return status_for_exit(exit_code), output.text()

    async def _call(self, method: str, path: str, payload: Any,
                    stream: Callable[[bytes], bool] | None = None) -> tuple[int, bytes]:
        """One API call: (status code, body). A 200 body goes to `stream` instead, if given."""
        url = self._base + path
        headers = Headers()
        body = None
        if payload is not None:
            headers.setRawHeaders("Content-Type", ["application/json"])
            body = BytesProducer(json.dumps(payload).encode("utf-8"))
        try:
            response = await self._agent.request(method.encode("ascii"), url.encode("ascii"),
                                                 headers, body)
        except ResponseNeverReceived:
            raise _CallFailed(f'{go_url_op(method)} "{url}": EOF') from None
        except Exception as exc:  # noqa: BLE001 - connection problems become the message
            network = "unix" if self._proto == "unix" else "tcp"
            raise _CallFailed(
                f'{go_url_op(method)} "{url}": {dial_error(exc, network, self._address)}'
            ) from None
        kept = bytearray()
        sink = stream if stream is not None and response.code == 200 else None
        await deliver_body(response, sink or capped_sink(kept, API_BODY_MAX))
        return response.code, bytes(kept)

    async def _create_exec(self) -> str:
        cid = self.container_id
        payload = {"AttachStdin": False, "AttachStdout": True, "AttachStderr": True,
                   "Tty": False, "Cmd": self.command}
        try:
            code, body = await self._call("POST", f"/containers/{quote(cid, safe='')}/exec",
                                          payload)
        except _CallFailed as exc:
            raise DockerAPIError(f"create exec failed for container {cid}: {exc}") from None
        if code == 201:
            try:
                return json.loads(body)["Id"]
            except (ValueError, KeyError, TypeError) as exc:
                raise DockerAPIError(f"create exec response for container {cid} cannot be "
                                     f"parsed: {exc}") from None
        if code == 404:
            raise DockerAPIError(f"create exec failed for unknown container {cid}")
        if code == 409:
            raise DockerAPIError(f"create exec failed since container {cid} is paused or stopped")
        raise DockerAPIError(f"create exec failed for container {cid} with status {code}: "
                             f"{_text(body)}")

    async def _start_exec(self, exec_id: str, output: TailBuffer) -> None:
        cid = self.container_id
        demux = Demultiplexer(output)
        try:
            code, body = await self._call("POST", f"/exec/{quote(exec_id, safe='')}/start",
                                          {"Detach": False, "Tty": False}, stream=demux.feed)
        except _CallFailed as exc:
            raise DockerAPIError(f"start exec failed for container {cid}: {exc}") from None
        if code == 200:
            return
        if code == 404:
            raise DockerAPIError(f"start exec failed for container {cid}: invalid exec id "
                                 f"{exec_id}")
        if code == 409:
            raise DockerAPIError(f"start exec failed since container {cid} is paused or stopped")
        raise DockerAPIError(f"start exec failed for container {cid} with status {code}: "
                             f"body: {_text(body)}")

    async def _inspect_exec(self, exec_id: str) -> int:
        cid = self.container_id
        try:
            code, body = await self._call("GET", f"/exec/{quote(exec_id, safe='')}/json", None)
        except _CallFailed as exc:
            raise DockerAPIError(f"inspect exec failed for container {cid}: {exc}") from None
        if code == 200:
            try:
                return int(json.loads(body)["ExitCode"])
            except (ValueError, KeyError, TypeError) as exc:
                raise DockerAPIError(f"inspect exec response for container {cid} cannot be "
                                     f"parsed: {exc}") from None
        if code == 404:
            raise DockerAPIError(f"inspect exec failed for container {cid}: invalid exec id "
                                 f"{exec_id}")
        raise DockerAPIError(f"inspect exec failed for container {cid} with status {code}: "
                             f"{_text(body)}")


class _CallFailed(Exception):
    """The engine could not be reached or hung up; the text is Go's url.Error."""


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace").strip()
