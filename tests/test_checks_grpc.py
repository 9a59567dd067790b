"""Tests for agent.checks.grpc_check against real gRPC health servers started here.

The servers are grpcio's own, serving grpcio-health-checking's HealthServicer on 127.0.0.1
(port 0), in plaintext or TLS with a throwaway self-signed certificate. The runner runs on the
real reactor (pytest_twisted). The expected texts are what Consul 1.8.7 reported for the same
situations. The last test registers gRPC checks at a real agent process.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent import futures

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.portforward import ProxyFactory

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_health.v1.health")

from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402

from agent import structs  # noqa: E402
from agent.checks.factory import make_runner  # noqa: E402
from agent.checks.grpc_check import (  # noqa: E402
    UNHEALTHY,
    GRPCRunner,
    certificate_name,
    load_grpc,
    rpc_error,
    split_target,
)
from agent.definitions import CheckSpec  # noqa: E402
from tests.agentproc import AgentProcess  # noqa: E402
from tests.reactor_hygiene import clean_reactor  # noqa: E402,F401 - autouse fixture
from tests.test_checks_runners import (  # noqa: E402
    FixedRandom,
    Recorder,
    closed_port,
    self_signed_pem,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class RecordingHealth(health.HealthServicer):
    """grpcio's servicer, remembering which service each Check asked about.

    A Check of "slow.Service" hangs until the server stops, noting when its caller gives up.
    """

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.abandoned: list[str] = []
        self.release = threading.Event()

    def Check(self, request, context):
        self.asked.append(request.service)
        if request.service == "slow.Service":
            context.add_callback(lambda: self.abandoned.append(request.service))
            self.release.wait(30)
        return super().Check(request, context)


class HealthServer:
    def __init__(self, tls: bool = False) -> None:
        self.health = RecordingHealth()
        self.health.set("", SERVING)
        self.health.set("my.Service", SERVING)
        self.health.set("down.Service", NOT_SERVING)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if tls:
            pem = self_signed_pem()
            split = pem.index(b"-----BEGIN CERTIFICATE-----")
            credentials = grpc.ssl_server_credentials([(pem[:split], pem[split:])])
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.health.release.set()
        self.server.stop(None).wait()


@pytest.fixture
def plain():
    server = HealthServer()
    yield server
    server.stop()


@pytest.fixture
def tls():
    pytest.importorskip("OpenSSL")
    server = HealthServer(tls=True)
    yield server
    server.stop()


def runner(target: str, timeout: float = 5.0, notifier=None, **kw) -> GRPCRunner:
    return GRPCRunner(reactor, "g", 60.0, timeout, notifier or Recorder(), FixedRandom(0.0),
                      target=target, **kw)


async def wait_for(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await deferLater(reactor, 0.01, lambda: None)


# --- pure helpers ---------------------------------------------------------------------------


def test_target_splits_at_the_first_slash_like_consul():
    assert split_target("127.0.0.1:50051") == ("127.0.0.1:50051", "")
    assert split_target("127.0.0.1:50051/my.Service") == ("127.0.0.1:50051", "my.Service")
    assert split_target("h:1/a/b") == ("h:1", "a/b")


def test_rpc_errors_use_gos_code_names():
    assert rpc_error("NOT_FOUND", "") == "rpc error: code = NotFound desc = "
    assert rpc_error("CANCELLED", "x") == "rpc error: code = Canceled desc = x"
    assert rpc_error("DEADLINE_EXCEEDED", "context deadline exceeded") == (
        "rpc error: code = DeadlineExceeded desc = context deadline exceeded")


def test_loading_grpc_leaves_the_environment_alone():
    before = os.environ.get("GRPC_VERBOSITY")
    load_grpc()
    assert os.environ.get("GRPC_VERBOSITY") == before


def test_the_trusted_name_is_one_the_certificate_carries():
    from cryptography import x509

    pem = self_signed_pem()
    certificate = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE"):])
    assert certificate_name(certificate, "127.0.0.1") == "127.0.0.1"
    assert certificate_name(certificate, "svc.example") == "127.0.0.1"  # its only name


def test_factory_builds_a_grpc_runner_with_consuls_defaults():
    spec = CheckSpec(check_id="g1", name="g", type="grpc", grpc="127.0.0.1:1/svc",
                     grpc_use_tls=True,
                     definition=structs.CheckDefinition(interval=0.5, tls_skip_verify=True))
    built = make_runner(spec, reactor, Recorder())
    assert isinstance(built, GRPCRunner)
    assert (built.server, built.service, built.interval, built.timeout) == (
        "127.0.0.1:1", "svc", 1.0, 10.0)
    assert built.use_tls and built.tls_skip_verify


# --- plaintext ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_serving_server_is_passing_with_consuls_words(plain):
    assert await runner(plain.address).run_once() == (
        structs.PASSING, f"gRPC check {plain.address}: success")
    assert plain.health.asked == [""]  # no service named: the whole server


@pytest_twisted.ensureDeferred
async def test_the_part_after_the_slash_is_the_service_asked_about(plain):
    target = f"{plain.address}/my.Service"
    assert await runner(target).run_once() == (structs.PASSING, f"gRPC check {target}: success")
    assert plain.health.asked == ["my.Service"]


@pytest_twisted.ensureDeferred
async def test_not_serving_is_critical(plain):
    assert await runner(f"{plain.address}/down.Service").run_once() == (
        structs.CRITICAL, UNHEALTHY)


@pytest_twisted.ensureDeferred
async def test_unknown_service_is_critical_with_the_status_error(plain):
    assert await runner(f"{plain.address}/no.Such").run_once() == (
        structs.CRITICAL, "rpc error: code = NotFound desc = ")


@pytest_twisted.ensureDeferred
async def test_server_down_is_critical():
    status, output = await runner(f"127.0.0.1:{closed_port()}").run_once()
    assert status == structs.CRITICAL
    assert output.startswith("rpc error: code = Unavailable desc = ")
    assert "refused" in output.lower()


@pytest_twisted.ensureDeferred
async def test_an_address_without_port_is_critical_with_gos_words():
    assert await runner("127.0.0.1/svc").run_once() == (
        structs.CRITICAL,
        'rpc error: code = Unavailable desc = connection error: desc = "transport: Error '
        'while dialing dial tcp: address 127.0.0.1: missing port in address"')


class Silent(Protocol):
    """Accepts a connection and never says a word."""


@pytest.fixture
def silent():
    factory = WrappingFactory(Factory.forProtocol(Silent))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield factory, f"127.0.0.1:{port.getHost().port}"
    pytest_twisted.blockon(port.stopListening())
    for proto in list(factory.protocols):
        proto.transport.abortConnection()
    pytest_twisted.blockon(deferLater(reactor, 0, lambda: None))


@pytest_twisted.ensureDeferred
async def test_a_silent_server_times_out_like_consul_and_is_let_go(silent):
    factory, address = silent
    assert await runner(address, timeout=0.5).run_once() == (
        structs.CRITICAL, "rpc error: code = DeadlineExceeded desc = context deadline exceeded")
    # grpc would keep trying its handshake for 20 s; the check's timeout bounds that too.
    await wait_for(lambda: not factory.protocols)


@pytest.fixture
def proxied(plain):
    """`plain` behind a TCP relay, whose open connections show what the client holds open."""
    factory = WrappingFactory(ProxyFactory("127.0.0.1", plain.port))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield factory, f"127.0.0.1:{port.getHost().port}"
    pytest_twisted.blockon(port.stopListening())
    for proto in list(factory.protocols):
        proto.transport.abortConnection()
    pytest_twisted.blockon(deferLater(reactor, 0.05, lambda: None))


@pytest_twisted.ensureDeferred
async def test_stop_cancels_the_call_and_closes_the_channel(plain, proxied):
    factory, address = proxied
    notifier = Recorder()
    check = runner(f"{address}/slow.Service", timeout=30.0, notifier=notifier)
    check.start()
    await wait_for(lambda: plain.health.asked)  # the call is waiting on the server
    assert check.running
    check.stop()
    await wait_for(lambda: not factory.protocols)  # the client hung up at once
    await wait_for(lambda: plain.health.abandoned)  # and the server saw the call cancelled
    assert notifier.updates == []


@pytest_twisted.ensureDeferred
async def test_on_its_schedule_it_follows_the_server(plain):
    notifier = Recorder()
    check = runner(plain.address, notifier=notifier)
    check.interval = 0.05
    check.start()
    try:
        await wait_for(lambda: notifier.updates)
        plain.health.set("", NOT_SERVING)
        await wait_for(lambda: notifier.updates[-1][1] == structs.CRITICAL)
    finally:
        check.stop()
    assert notifier.updates[0] == ("g", structs.PASSING, f"gRPC check {plain.address}: success")
    assert notifier.updates[-1] == ("g", structs.CRITICAL, UNHEALTHY)


# --- TLS ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_skip_verify_accepts_a_self_signed_certificate(tls):
    target = f"{tls.address}/my.Service"
    assert await runner(target, use_tls=True, tls_skip_verify=True).run_once() == (
        structs.PASSING, f"gRPC check {target}: success")
    assert tls.health.asked == ["my.Service"]


@pytest_twisted.ensureDeferred
async def test_tls_without_skip_verify_refuses_a_self_signed_certificate(tls):
    status, output = await runner(tls.address, use_tls=True).run_once()
    assert status == structs.CRITICAL
    assert output.startswith("rpc error: code = Unavailable desc = ")
    assert tls.health.asked == []


@pytest_twisted.ensureDeferred
async def test_tls_against_a_plaintext_server_is_a_handshake_failure(plain):
    status, output = await runner(plain.address, use_tls=True, tls_skip_verify=True).run_once()
    assert status == structs.CRITICAL
    assert output.startswith('rpc error: code = Unavailable desc = connection error: desc = '
                             '"transport: authentication handshake failed: ')


@pytest_twisted.ensureDeferred
async def test_tls_skip_verify_to_a_closed_port_has_gos_dial_error():
    port = closed_port()
    assert await runner(f"127.0.0.1:{port}", use_tls=True, tls_skip_verify=True).run_once() == (
        structs.CRITICAL,
        'rpc error: code = Unavailable desc = connection error: desc = "transport: Error '
        f'while dialing dial tcp 127.0.0.1:{port}: connect: connection refused"')


# --- a real agent ---------------------------------------------------------------------------


def check_of(agent, check_id):
    return agent.json("GET", "/v1/agent/checks")[2].get(check_id, {})


def wait_check(agent, check_id, status, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check = check_of(agent, check_id)
        if check.get("Status") == status:
            return check
        time.sleep(0.05)
    raise AssertionError(f"{check_id} never became {status}: {check_of(agent, check_id)}")


def test_agent_runs_grpc_checks(plain, tls):
    agent = AgentProcess().start()
    try:
        for body in (
            {"Name": "gsvc", "Check": {"CheckID": "gsvc-grpc",
                                       "GRPC": f"{plain.address}/my.Service", "Interval": "1s"}},
            {"Name": "gtls", "Check": {"CheckID": "gtls-grpc", "GRPC": tls.address,
                                       "GRPCUseTLS": True, "TLSSkipVerify": True,
                                       "Interval": "1s", "Timeout": "5s"}},
        ):
            status, _, text = agent.request("PUT", "/v1/agent/service/register",
                                            json.dumps(body))
            assert status == 200, text
        check = wait_check(agent, "gsvc-grpc", "passing")
        assert (check["Type"], check["Output"]) == (
            "grpc", f"gRPC check {plain.address}/my.Service: success")
        assert wait_check(agent, "gtls-grpc", "passing")["Output"] == (
            f"gRPC check {tls.address}: success")
        plain.health.set("my.Service", NOT_SERVING)
        assert wait_check(agent, "gsvc-grpc", "critical")["Output"] == UNHEALTHY
        status, _, _ = agent.request("PUT", "/v1/agent/service/deregister/gsvc")
        assert status == 200
    finally:
        assert agent.stop() == 0
