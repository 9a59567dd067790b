"""Tests for agent.checks.docker.

There is no Docker engine on the test machines, so these tests run a small fake Engine API: a
twisted.web site on a Unix socket in the test's temporary directory (and once on 127.0.0.1:0
for ``tcp://`` hosts). It implements the three endpoints a Docker check uses --
``POST /containers/<id>/exec``, ``POST /exec/<id>/start`` answering in Docker's multiplexed
stream framing (8-byte headers: stream type, three zero bytes, big-endian uint32 size), and
``GET /exec/<id>/json`` with the exit code -- and runs no commands: each fake container maps
the last word of a command to canned output frames and an exit code.
"""

from __future__ import annotations

import json
import struct

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from agent import structs
from agent.checks.base import TailBuffer
from agent.checks.docker import Demultiplexer, DockerRunner, parse_docker_host

STDOUT, STDERR = 1, 2

# The last word of a command -> (exit code, frames).
SCRIPTS = {
    "check-ok": (0, [(STDOUT, b"all good\n")]),
    "check-warn": (1, [(STDOUT, b"load high\n"), (STDERR, b"disk 91%\n")]),
    "check-fail": (2, [(STDERR, b"down\n")]),
    "check-big": (0, [(STDOUT, b"a" * 3000), (STDERR, b"b" * 3000), (STDOUT, b"END")]),
    "check-split": (0, [(STDOUT, b"one "), (STDERR, b""), (STDOUT, b"two")]),
    "check-hang": (None, [(STDOUT, b"working...\n")]),  # the stream never ends
}


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


class FakeEngine(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.containers = {"web"}
        self.execs: dict[str, dict] = {}
        self.calls: list[tuple[str, str, object]] = []

    def render(self, request):
        method, path = request.method.decode(), request.path.decode()
        raw = request.content.read()
        body = json.loads(raw) if raw else None
        self.calls.append((method, path, body))
        parts = path.strip("/").split("/")
        request.setHeader("Content-Type", "application/json")
        if method == "POST" and len(parts) == 3 and parts[0] == "containers" and parts[2] == "exec":
            if parts[1] not in self.containers:
                request.setResponseCode(404)
                return json.dumps({"message": f"No such container: {parts[1]}"}).encode()
            exec_id = f"exec{len(self.execs) + 1}"
            self.execs[exec_id] = {"cmd": body["Cmd"], "exit": None}
            request.setResponseCode(201)
            return json.dumps({"Id": exec_id}).encode()
        if len(parts) == 3 and parts[0] == "exec" and parts[1] in self.execs:
            record = self.execs[parts[1]]
            if method == "POST" and parts[2] == "start":
                code, frames = SCRIPTS[record["cmd"][-1]]
                record["exit"] = code
                request.setHeader("Content-Type", "application/vnd.docker.raw-stream")
                stream = b"".join(frame(kind, data) for kind, data in frames)
                # Uneven writes, so a frame header arrives in two pieces.
                request.write(stream[:5])
                request.write(stream[5:13])
                request.write(stream[13:])
                if code is None:
                    return NOT_DONE_YET
                return b""
            if method == "GET" and parts[2] == "json":
                return json.dumps({"ExitCode": record["exit"], "Running": False}).encode()
        request.setResponseCode(404)
        return json.dumps({"message": "page not found"}).encode()


class Engine:
    """The fake engine listening on a Unix socket or TCP port; stop() waits for its sockets."""

    def __init__(self, tmp_path, tcp: bool = False) -> None:
        self.resource = FakeEngine()
        self.factory = WrappingFactory(Site(self.resource))
        if tcp:
            self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
            self.host = f"tcp://127.0.0.1:{self.port.getHost().port}"
        else:
            path = str(tmp_path / "docker.sock")
            self.port = reactor.listenUNIX(path, self.factory)
            self.host = f"unix://{path}"

    async def stop(self) -> None:
        await self.port.stopListening()
        for proto in list(self.factory.protocols):
            proto.transport.abortConnection()
        for _ in range(200):
            if not self.factory.protocols:
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("engine connections did not close")


from tests.reactor_hygiene import clean_reactor  # noqa: E402,F401 - autouse fixture


@pytest.fixture
def engine(tmp_path):
    fake = Engine(tmp_path)
    yield fake
    pytest_twisted.blockon(Deferred.fromCoroutine(fake.stop()))


class Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[str, str, str]] = []

    def update_check(self, check_id: str, status: str, output: str) -> None:
        self.updates.append((check_id, status, output))


def docker(host: str, container: str = "web", **kw) -> DockerRunner:
    return DockerRunner(reactor, "dock", 10.0, kw.pop("timeout", 5.0), Recorder(),
                        container_id=container, docker_host=host, **kw)


# --- pure parts -----------------------------------------------------------------------------


def test_demultiplexer_reassembles_frames_fed_a_byte_at_a_time():
    out = TailBuffer()
    demux = Demultiplexer(out)
    stream = frame(STDOUT, b"hello ") + frame(STDERR, b"") + frame(STDERR, b"world")
    for i in range(len(stream)):
        demux.feed(stream[i:i + 1])
    assert out.text() == "hello world"


def test_demultiplexer_keeps_only_the_tail_of_a_long_stream():
    out = TailBuffer(limit=10)
    Demultiplexer(out).feed(frame(STDOUT, b"x" * 100) + frame(STDERR, b"0123456789"))
    assert out.text() == "Captured 10 of 110 bytes\n...\n0123456789"


def test_parse_docker_host():
    assert parse_docker_host("unix:///var/run/docker.sock") == ("unix", "/var/run/docker.sock")
    assert parse_docker_host("tcp://10.0.0.5:2375") == ("tcp", "10.0.0.5:2375")
    with pytest.raises(ValueError, match="unable to parse docker host `docker.sock`"):
        parse_docker_host("docker.sock")


# --- against the fake engine ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_exit_codes_and_multiplexed_output(engine):
    assert await docker(engine.host, args=["/health", "check-ok"]).run_once() == (
        structs.PASSING, "all good\n")
    assert await docker(engine.host, args=["/health", "check-warn"]).run_once() == (
        structs.WARNING, "load high\ndisk 91%\n")
    assert await docker(engine.host, args=["/health", "check-fail"]).run_once() == (
        structs.CRITICAL, "down\n")
    assert await docker(engine.host, args=["check-split"]).run_once() == (
        structs.PASSING, "one two")


@pytest_twisted.ensureDeferred
async def test_api_calls_are_consuls(engine):
    await docker(engine.host, script="check-ok").run_once()
    (create, start, inspect) = engine.resource.calls
    assert create == ("POST", "/containers/web/exec", {
        "AttachStdin": False, "AttachStdout": True, "AttachStderr": True, "Tty": False,
        "Cmd": ["/bin/sh", "-c", "check-ok"]})
    assert start == ("POST", "/exec/exec1/start", {"Detach": False, "Tty": False})
    assert inspect == ("GET", "/exec/exec1/json", None)

    await docker(engine.host, script="check-ok", shell="/bin/bash").run_once()
    assert engine.resource.calls[3][2]["Cmd"] == ["/bin/bash", "-c", "check-ok"]


@pytest_twisted.ensureDeferred
async def test_large_output_keeps_the_last_4k(engine):
    status, output = await docker(engine.host, args=["check-big"]).run_once()
    assert status == structs.PASSING
    assert output == "Captured 4096 of 6003 bytes\n...\n" + "a" * 1093 + "b" * 3000 + "END"


@pytest_twisted.ensureDeferred
async def test_unknown_container_is_critical(engine):
    assert await docker(engine.host, container="nope", args=["check-ok"]).run_once() == (
        structs.CRITICAL, "create exec failed for unknown container nope")


@pytest_twisted.ensureDeferred
async def test_absent_socket_is_critical(tmp_path):
    path = tmp_path / "missing.sock"
    assert await docker(f"unix://{path}", args=["check-ok"]).run_once() == (
        structs.CRITICAL,
        ('create exec failed for container web: Post "http://docker/containers/web/exec": '
         f"dial unix {path}: connect: no such file or directory"))


@pytest_twisted.ensureDeferred
async def test_engine_over_tcp(tmp_path):
    fake = Engine(tmp_path, tcp=True)
    try:
        assert await docker(fake.host, args=["check-warn"]).run_once() == (
            structs.WARNING, "load high\ndisk 91%\n")
    finally:
        await fake.stop()
    address = fake.host.removeprefix("tcp://")
    assert await docker(fake.host, args=["check-ok"]).run_once() == (
        structs.CRITICAL,
        (f'create exec failed for container web: Post "http://{address}/containers/web/exec": '
         f"dial tcp {address}: connect: connection refused"))


@pytest_twisted.ensureDeferred
async def test_a_hanging_exec_times_out(engine):
    assert await docker(engine.host, args=["check-hang"], timeout=0.3).run_once() == (
        structs.CRITICAL, "Timed out (300ms) running check")


@pytest_twisted.ensureDeferred
async def test_bad_docker_host_is_critical_each_run():
    assert await docker("docker.sock", args=["check-ok"]).run_once() == (
        structs.CRITICAL, "unable to parse docker host `docker.sock`")


@pytest_twisted.ensureDeferred
async def test_runner_schedule_reports_to_the_notifier(engine):
    import random

    class Zero(random.Random):
        def random(self):
            return 0.0

    notifier = Recorder()
    runner = DockerRunner(reactor, "dock", 60.0, 5.0, notifier, Zero(), container_id="web",
                          args=["check-warn"], docker_host=engine.host)
    runner.start()
    for _ in range(300):
        if notifier.updates:
            break
        await deferLater(reactor, 0.01, lambda: None)
    runner.stop()
    assert notifier.updates == [("dock", structs.WARNING, "load high\ndisk 91%\n")]
