"""Tests for agent.checks: the run loop, output rules and alias logic on a fake clock, then the
HTTP, TCP and script runners against real servers and processes on 127.0.0.1 (port 0, the
real reactor through pytest_twisted). Docker checks are in test_checks_docker.py."""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from agent import structs
from agent.checks.alias import WATCH_RETRY, AliasRunner, alias_status
from agent.checks.base import OUTPUT_MAX, IntervalRunner, TailBuffer, cap_output
from agent.durations import go_duration
from agent.checks.docker import DockerRunner
from agent.checks.factory import MIN_INTERVAL, make_runner
from agent.checks.http import HTTPRunner
from agent.checks.script import ScriptRunner
from agent.checks.tcp import TCPRunner, split_host_port
from agent.definitions import CheckSpec


from tests.reactor_hygiene import clean_reactor  # noqa: E402,F401 - autouse fixture


class Recorder:
    """A CheckNotifier that remembers every update."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, str, str]] = []

    def update_check(self, check_id: str, status: str, output: str) -> None:
        self.updates.append((check_id, status, output))


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class ManualRunner(IntervalRunner):
    """run_once hands out Deferreds the test fires; records when each run started."""

    def __init__(self, clock, interval=10.0, rng=None, **kw) -> None:
        self.notifier = Recorder()
        super().__init__(clock, "chk", interval, 1.0, self.notifier, rng or FixedRandom(0.25),
                         **kw)
        self.clock = clock
        self.started_at: list[float] = []
        self.runs: list[Deferred] = []
        self.cancelled = 0

    def run_once(self) -> Deferred:
        self.started_at.append(self.clock.seconds())

        def cancel(_):
            self.cancelled += 1

        run = Deferred(cancel)
        self.runs.append(run)
        return run


# --- output rules ---------------------------------------------------------------------------


def test_cap_output_leaves_short_text_alone():
    assert cap_output("fine") == "fine"
    assert cap_output("x" * OUTPUT_MAX) == "x" * OUTPUT_MAX


def test_cap_output_uses_consuls_ttl_wording():
    assert cap_output("x" * 5000) == "x" * 4096 + " ... (captured 4096 of 5000 bytes)"
    assert cap_output("abcdef", limit=4) == "abcd ... (captured 4 of 6 bytes)"


def test_cap_output_counts_bytes_and_never_splits_a_character():
    text = "\u00e9" * 3  # 6 bytes in UTF-8
    assert cap_output(text, limit=3) == "\u00e9 ... (captured 3 of 6 bytes)"


def test_tail_buffer_keeps_the_last_bytes_with_consuls_notice():
    buf = TailBuffer(limit=8)
    buf.write(b"0123")
    assert buf.text() == "0123"
    buf.write(b"456789")
    buf.write(b"AB")
    assert buf.total == 12
    assert buf.text() == "Captured 8 of 12 bytes\n...\n456789AB"
    buf.write(b"z" * 100)  # one write larger than the buffer
    assert buf.text() == "Captured 8 of 112 bytes\n...\nzzzzzzzz"


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.5, "500ms"), (30, "30s"), (1.5, "1.5s"), (90, "1m30s"), (60, "1m0s"),
    (3600, "1h0m0s"), (0.000001, "1\u00b5s"), (0.0000005, "500ns"), (10.25, "10.25s"),
])
def test_go_duration_prints_like_go(seconds, text):
    assert go_duration(seconds) == text


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("[::1]:8080", ("::1", 8080)),
    ("db.service:5432", ("db.service", 5432)),
])
def test_split_host_port(address, expected):
    assert split_host_port(address) == expected


@pytest.mark.parametrize("address, problem", [
    ("127.0.0.1", "missing port in address"),
    ("::1:80", "too many colons in address"),
    ("[::1]", "missing port in address"),
    ("host:http", "invalid port"),
])
def test_split_host_port_refuses_what_go_refuses(address, problem):
    with pytest.raises(ValueError, match=problem):
        split_host_port(address)


# --- the run loop ---------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.999999])
def test_first_run_is_staggered_within_one_interval(fraction):
    clock = Clock()
    runner = ManualRunner(clock, interval=10.0, rng=FixedRandom(fraction))
    runner.start()
    clock.advance(10.0 * fraction)
    assert runner.started_at == [10.0 * fraction]
    runner.stop()


def test_stagger_from_a_seeded_generator_stays_in_range():
    for seed in range(50):
        clock = Clock()
        runner = ManualRunner(clock, interval=7.0, rng=random.Random(seed))
        runner.start()
        (call,) = clock.getDelayedCalls()
        assert 0.0 <= call.getTime() < 7.0
        runner.stop()


def test_a_slow_run_delays_the_next_instead_of_overlapping():
    clock = Clock()
    runner = ManualRunner(clock, interval=10.0, rng=FixedRandom(0.0))
    runner.start()
    clock.advance(0)
    assert runner.started_at == [0.0]
    clock.pump([10.0] * 5)  # the run takes 50 s, five intervals
    assert runner.started_at == [0.0]  # still only one
    assert runner.running
    runner.runs[0].callback((structs.PASSING, "ok"))
    assert runner.notifier.updates == [("chk", structs.PASSING, "ok")]
    clock.advance(9.9)
    assert len(runner.started_at) == 1
    clock.advance(0.1)  # one interval after the run ended
    assert runner.started_at == [0.0, 60.0]
    runner.stop()


def test_stop_cancels_the_timer_and_is_idempotent():
    clock = Clock()
    runner = ManualRunner(clock)
    runner.stop()  # before start: harmless
    runner.start()
    runner.stop()
    runner.stop()
    clock.advance(100)
    assert runner.started_at == []
    assert clock.getDelayedCalls() == []


def test_stop_cancels_a_run_in_flight_and_ignores_its_result():
    clock = Clock()
    runner = ManualRunner(clock, rng=FixedRandom(0.0))
    runner.start()
    clock.advance(0)
    in_flight = runner.runs[0]
    runner.stop()
    assert runner.cancelled == 1
    assert not runner.running
    assert in_flight.called  # errbacked with CancelledError, which the runner swallowed
    assert runner.notifier.updates == []
    clock.advance(100)
    assert len(runner.started_at) == 1
    assert clock.getDelayedCalls() == []


def test_a_run_that_finishes_after_stop_reports_nothing():
    clock = Clock()

    class Stubborn(ManualRunner):
        def run_once(self):
            self.started_at.append(clock.seconds())
            # Like a coroutine that catches the cancellation and still returns a result.
            run = Deferred(lambda d: d.callback((structs.PASSING, "late")))
            self.runs.append(run)
            return run

    runner = Stubborn(clock, rng=FixedRandom(0.0))
    runner.start()
    clock.advance(0)
    runner.stop()
    assert runner.notifier.updates == []
    assert clock.getDelayedCalls() == []


def test_a_crashing_run_is_critical_and_the_schedule_goes_on():
    clock = Clock()

    class Broken(ManualRunner):
        def run_once(self):
            self.started_at.append(clock.seconds())
            raise RuntimeError("boom")

    runner = Broken(clock, interval=5.0, rng=FixedRandom(0.0))
    runner.start()
    clock.advance(0)
    clock.advance(5)
    assert runner.started_at == [0.0, 5.0]
    assert runner.notifier.updates[0] == ("chk", structs.CRITICAL, "Check failed to run: boom")
    runner.stop()


@pytest.mark.parametrize("nonsense", ["passing", None, ("passing",), ("bogus", "x"),
                                      (structs.PASSING, b"bytes")])
def test_a_run_returning_nonsense_is_critical_and_the_schedule_goes_on(nonsense):
    clock = Clock()
    runner = ManualRunner(clock, interval=5.0, rng=FixedRandom(0.0))
    runner.start()
    clock.advance(0)
    runner.runs[0].callback(nonsense)
    clock.advance(5)
    assert runner.started_at == [0.0, 5.0]  # it ran again
    check_id, status, output = runner.notifier.updates[0]
    assert (check_id, status) == ("chk", structs.CRITICAL)
    assert output.startswith("Check failed to run: ")
    runner.stop()


def test_the_same_failure_is_logged_once_until_the_check_recovers():
    clock = Clock()
    errors = ["boom", "boom", "boom", "bang", None, "boom"]

    class Flaky(ManualRunner):
        def run_once(self):
            self.started_at.append(clock.seconds())
            error = errors[len(self.started_at) - 1]
            if error:
                raise RuntimeError(error)
            return (structs.PASSING, "fine")

    runner = Flaky(clock, interval=1.0, rng=FixedRandom(0.0))
    with capturedLogs() as events:
        runner.start()
        clock.advance(0)
        for _ in errors[1:]:
            clock.advance(1)
    runner.stop()
    logged = [event["log_failure"].getErrorMessage() for event in events
              if "log_failure" in event]
    assert logged == ["boom", "bang", "boom"]
    assert len(runner.notifier.updates) == len(errors)  # each run still reported


def test_stop_survives_a_canceller_that_raises():
    clock = Clock()

    class Stuck(ManualRunner):
        def run_once(self):
            def cancel(_):
                raise OSError("cannot kill")
            run = Deferred(cancel)
            self.runs.append(run)
            return run

    runner = Stuck(clock, rng=FixedRandom(0.0))
    runner.start()
    clock.advance(0)
    runner.stop()  # does not raise into the caller (a deregistration, an agent stop)
    assert not runner.running
    assert clock.getDelayedCalls() == []


def test_a_notifier_that_stops_the_runner_leaves_no_timer():
    clock = Clock()
    runner = ManualRunner(clock, rng=FixedRandom(0.0))
    runner.notifier.update_check = lambda *args: runner.stop()
    runner.start()
    clock.advance(0)
    runner.runs[0].callback((structs.PASSING, ""))
    assert clock.getDelayedCalls() == []


def test_thresholds_hold_back_flapping_results_like_consul():
    clock = Clock()
    runner = ManualRunner(clock, interval=1.0, rng=FixedRandom(0.0),
                          success_before_passing=2, failures_before_critical=3)
    runner.start()

    def run(status):
        clock.advance(0 if not runner.runs else 1.0)
        runner.runs[-1].callback((status, status))

    run(structs.PASSING)  # counters start at the thresholds: reported at once
    run(structs.CRITICAL)
    run(structs.CRITICAL)
    run(structs.CRITICAL)  # the third in a row
    run(structs.PASSING)
    run(structs.WARNING)  # the second success in a row
    assert [u[1] for u in runner.notifier.updates] == [
        structs.PASSING, structs.CRITICAL, structs.WARNING]
    runner.stop()


# --- alias ----------------------------------------------------------------------------------


def test_alias_aggregation_with_bare_statuses():
    P, W, C = structs.PASSING, structs.WARNING, structs.CRITICAL
    assert alias_status([P, P], "n1", "web") == (P, "All checks passing.")
    assert alias_status([], "n1", "web") == (P, "No checks found.")
    assert alias_status([P, W, P], "n1", "web") == (W, "At least one check is warning")
    assert alias_status([W, C, P], "n1", "web") == (C, "At least one check is critical")
    assert alias_status(None, "n1", "web") == (C, "Service web could not be found on node n1")
    assert alias_status(None, "n1", "") == (C, "Node n1 could not be found")


def test_alias_aggregation_with_check_rows_uses_consuls_words():
    rows = [structs.Check(node="n1", check_id="a", name="disk", status=structs.WARNING,
                          output="91% full"),
            structs.Check(node="n1", check_id="b", name="ping", status=structs.PASSING),
            structs.Check(node="n1", check_id="c", name="http", status=structs.CRITICAL,
                          output="HTTP GET http://x/: 500 Internal Server Error Output: ")]
    assert alias_status(rows[:2], "n1", "web") == (
        structs.WARNING, 'Aliased check "disk" failing: 91% full')
    assert alias_status(rows, "n1", "web") == (
        structs.CRITICAL,
        'Aliased check "http" failing: HTTP GET http://x/: 500 Internal Server Error Output: ')


class FakeCatalog:
    """A store_reader plus a watch that fires once per change, like the state store's."""

    def __init__(self) -> None:
        self.services: dict[tuple[str, str], list[str]] = {}
        self.node_checks: dict[str, list[str]] = {}
        self.watchers: list = []
        self.reads: list[tuple[str, str]] = []

    def read(self, node: str, service_id: str):
        self.reads.append((node, service_id))
        if node not in self.node_checks:
            return None
        if service_id:
            if (node, service_id) not in self.services:
                return None
            return self.services[(node, service_id)] + self.node_checks[node]
        return list(self.node_checks[node])

    def watch(self, callback):
        catalog = self

        class Handle:
            def cancel(self):
                if self in catalog.watchers:
                    catalog.watchers.remove(self)

        handle = Handle()
        handle.callback = callback
        self.watchers.append(handle)
        return handle

    def change(self) -> None:
        fired, self.watchers = self.watchers, []
        for handle in fired:
            handle.callback()


def test_alias_runner_follows_changes_and_notifies_only_differences():
    clock, catalog, notifier = Clock(), FakeCatalog(), Recorder()
    catalog.node_checks["n1"] = [structs.PASSING]
    catalog.services[("n1", "web")] = [structs.PASSING]
    runner = AliasRunner(clock, "alias", notifier, node="n1", service_id="web",
                         store_reader=catalog.read, watch=catalog.watch)
    runner.start()
    assert notifier.updates == [("alias", structs.PASSING, "All checks passing.")]
    assert len(catalog.watchers) == 1

    catalog.change()  # nothing relevant changed
    assert notifier.updates[-1:] == [("alias", structs.PASSING, "All checks passing.")]
    clock.advance(0)  # the refresh runs in its own reactor turn
    assert len(notifier.updates) == 1
    assert len(catalog.watchers) == 1  # registered again

    catalog.services[("n1", "web")] = [structs.WARNING]
    catalog.change()
    clock.advance(0)
    catalog.node_checks["n1"] = [structs.CRITICAL]
    catalog.change()
    clock.advance(0)
    del catalog.services[("n1", "web")]
    catalog.change()
    clock.advance(0)
    assert [u[1:] for u in notifier.updates[1:]] == [
        (structs.WARNING, "At least one check is warning"),
        (structs.CRITICAL, "At least one check is critical"),
        (structs.CRITICAL, "Service web could not be found on node n1"),
    ]

    runner.stop()
    assert catalog.watchers == []
    catalog.change()
    clock.advance(0)
    assert len(notifier.updates) == 4


def test_alias_runner_coalesces_a_burst_and_stop_drops_a_queued_refresh():
    clock, catalog, notifier = Clock(), FakeCatalog(), Recorder()
    catalog.node_checks["n1"] = []
    runner = AliasRunner(clock, "alias", notifier, node="n1", service_id="",
                         store_reader=catalog.read, watch=catalog.watch)
    runner.start()
    assert notifier.updates == [("alias", structs.PASSING, "No checks found.")]
    catalog.change()
    catalog.change()  # nobody is watching any more until the refresh ran
    clock.advance(0)
    assert len(catalog.reads) == 2
    catalog.change()
    runner.stop()
    clock.advance(0)
    assert len(catalog.reads) == 2
    assert clock.getDelayedCalls() == []


def test_alias_runner_reports_a_failing_reader():
    clock, notifier = Clock(), Recorder()

    def broken(node, service_id):
        raise RuntimeError("no leader")

    runner = AliasRunner(clock, "alias", notifier, node="n1", service_id="web",
                         store_reader=broken, watch=FakeCatalog().watch)
    runner.start()
    assert notifier.updates == [
        ("alias", structs.CRITICAL, "Failure checking aliased node or service: no leader")]


def test_alias_runner_survives_a_failing_watch_and_retries_it():
    clock, catalog, notifier = Clock(), FakeCatalog(), Recorder()
    catalog.node_checks["n1"] = [structs.PASSING]
    failures = [RuntimeError("store closed")]

    def watch(callback):
        if failures:
            raise failures.pop()
        return catalog.watch(callback)

    runner = AliasRunner(clock, "alias", notifier, node="n1", service_id="",
                         store_reader=catalog.read, watch=watch)
    runner.start()  # does not raise into the registration
    assert notifier.updates == [
        ("alias", structs.CRITICAL, "Failure checking aliased node or service: store closed")]
    clock.advance(WATCH_RETRY)
    assert notifier.updates[-1] == ("alias", structs.PASSING, "All checks passing.")
    assert len(catalog.watchers) == 1
    runner.stop()
    assert clock.getDelayedCalls() == []


def test_alias_runner_survives_a_failing_notifier_and_odd_reader_output():
    clock, catalog = Clock(), FakeCatalog()
    catalog.node_checks["n1"] = [structs.PASSING]

    class Broken(Recorder):
        def update_check(self, *args):
            super().update_check(*args)
            raise RuntimeError("notifier down")

    notifier = Broken()
    runner = AliasRunner(clock, "alias", notifier, node="n1", service_id="",
                         store_reader=lambda node, service: 42, watch=catalog.watch)
    runner.start()  # a non-iterable answer and a raising notifier: neither escapes
    assert notifier.updates[0][1] == structs.CRITICAL
    assert len(catalog.watchers) == 1  # still following the catalog
    runner.stop()


# --- factory --------------------------------------------------------------------------------


def spec(**kw) -> CheckSpec:
    definition = kw.pop("definition", structs.CheckDefinition())
    return CheckSpec(check_id=kw.pop("check_id", "c1"), name="c", definition=definition, **kw)


def test_factory_gives_no_runner_to_ttl_and_untyped_checks():
    clock, notifier = Clock(), Recorder()
    assert make_runner(spec(type="ttl", ttl=10.0), clock, notifier) is None
    assert make_runner(spec(type=""), clock, notifier) is None
    # gRPC checks do run now: see test_checks_grpc.py


def test_factory_builds_each_kind_with_consuls_limits():
    clock, notifier = Clock(), Recorder()
    http = make_runner(spec(type="http", output_max_size=100, definition=structs.CheckDefinition(
        interval=0.1, http="http://127.0.0.1:1/", method="POST", body="x")), clock, notifier)
    assert isinstance(http, HTTPRunner)
    assert http.interval == MIN_INTERVAL  # raised to Consul's minimum
    assert (http.timeout, http.method, http.output_max) == (10.0, "POST", 100)

    tcp = make_runner(spec(type="tcp", definition=structs.CheckDefinition(
        interval=5.0, timeout=2.0, tcp="[::1]:22")), clock, notifier)
    assert isinstance(tcp, TCPRunner)
    assert (tcp.interval, tcp.timeout, tcp.address) == (5.0, 2.0, "[::1]:22")

    script = make_runner(spec(type="script", script="exit 0", output_max_size=99999,
                              definition=structs.CheckDefinition(interval=5.0)), clock, notifier)
    assert isinstance(script, ScriptRunner)
    assert script.argv == ["/bin/sh", "-c", "exit 0"]
    assert (script.timeout, script.output_max) == (30.0, OUTPUT_MAX)  # can only be lowered

    docker = make_runner(spec(type="docker", docker_container_id="abc", args=("true",),
                              definition=structs.CheckDefinition(interval=5.0)),
                         clock, notifier, docker_host="tcp://127.0.0.1:2375")
    assert isinstance(docker, DockerRunner)
    assert (docker.container_id, docker.command) == ("abc", ["true"])


def test_factory_alias_defaults_to_the_local_node_and_needs_the_catalog():
    clock, notifier, catalog = Clock(), Recorder(), FakeCatalog()
    alias = make_runner(spec(type="alias", alias_service="web"), clock, notifier,
                        store_reader=catalog.read, watch=catalog.watch, local_node="me")
    assert isinstance(alias, AliasRunner)
    assert (alias.node, alias.service_id) == ("me", "web")
    with pytest.raises(ValueError):
        make_runner(spec(type="alias", alias_service="web"), clock, notifier)


def test_tcp_connect_timeout_is_critical_with_gos_words():
    clock = MemoryReactorClock()
    runner = TCPRunner(clock, "t", 10.0, 2.0, Recorder(), address="10.0.0.1:80")
    result = runner.run_once()
    assert clock.tcpClients  # a connection attempt that never completes
    clock.advance(2.0)
    assert result.result == (structs.CRITICAL, "dial tcp 10.0.0.1:80: i/o timeout")


# --- real servers: HTTP ---------------------------------------------------------------------


class Health(Resource):
    """/ok 200, /busy 429, /fail 500, /slow never answers, /stall sends half a body,
    /endless streams forever, /echo remembers what it got."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []
        self.streams_stopped: list[int] = []

    def render(self, request):
        path = request.path.decode()
        if path == "/ok":
            return b"healthy"
        if path == "/busy":
            request.setResponseCode(429, b"Too Many Requests")  # twisted.web lacks the phrase
            return b"slow down"
        if path == "/fail":
            request.setResponseCode(500)
            return b"broken"
        if path == "/slow":
            return NOT_DONE_YET
        if path == "/stall":
            request.write(b"partial")
            return NOT_DONE_YET
        if path == "/endless":
            self._stream(request)
            return NOT_DONE_YET
        if path == "/moved":
            request.redirect(b"/ok")
            return b""
        if path == "/loop":
            request.redirect(b"/loop")
            return b""
        if path == "/echo":
            self.seen.append({
                "method": request.method.decode(),
                "headers": {k.decode().lower(): [v.decode() for v in vs]
                            for k, vs in request.requestHeaders.getAllRawHeaders()},
                "body": request.content.read().decode(),
            })
            return b"echoed"
        request.setResponseCode(404)
        return b"no"

    def _stream(self, request) -> None:
        sent = [0]
        gone = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))

        def more():
            if gone:
                self.streams_stopped.append(sent[0])
                return
            request.write(b"y" * 65536)
            sent[0] += 65536
            reactor.callLater(0, more)

        more()


class Server:
    """A twisted.web site on 127.0.0.1:0 whose connections are closed and awaited on stop."""

    def __init__(self, resource) -> None:
        self.resource = resource
        self.factory = WrappingFactory(Site(resource))
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def stop(self) -> None:
        await self.port.stopListening()
        for proto in list(self.factory.protocols):
            proto.transport.abortConnection()
        for _ in range(200):
            if not self.factory.protocols:
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("server connections did not close")


@pytest.fixture
def web():
    server = Server(Health())
    yield server
    pytest_twisted.blockon(Deferred.fromCoroutine(server.stop()))


def http_runner(url, **kw):
    return HTTPRunner(reactor, "web", 10.0, kw.pop("timeout", 5.0), Recorder(), url=url, **kw)


@pytest_twisted.ensureDeferred
async def test_http_status_mapping(web):
    assert await http_runner(web.url + "/ok").run_once() == (
        structs.PASSING, f"HTTP GET {web.url}/ok: 200 OK Output: healthy")
    assert await http_runner(web.url + "/busy").run_once() == (
        structs.WARNING, f"HTTP GET {web.url}/busy: 429 Too Many Requests Output: slow down")
    assert await http_runner(web.url + "/fail").run_once() == (
        structs.CRITICAL, f"HTTP GET {web.url}/fail: 500 Internal Server Error Output: broken")


@pytest_twisted.ensureDeferred
async def test_http_sends_consuls_headers_and_the_configured_request(web):
    runner = http_runner(web.url + "/echo", method="PUT", body='{"ping": 1}',
                         header={"X-Token": ("abc", "def"), "Accept": ("application/json",)})
    status, output = await runner.run_once()
    assert (status, output) == (structs.PASSING, f"HTTP PUT {web.url}/echo: 200 OK Output: echoed")
    (seen,) = web.resource.seen
    assert seen["method"] == "PUT"
    assert seen["body"] == '{"ping": 1}'
    assert seen["headers"]["x-token"] == ["abc", "def"]
    assert seen["headers"]["accept"] == ["application/json"]  # ours, not Consul's default
    assert seen["headers"]["user-agent"] == ["Consul Health Check"]

    await http_runner(web.url + "/echo").run_once()
    assert web.resource.seen[1]["method"] == "GET"
    assert web.resource.seen[1]["headers"]["accept"] == ["text/plain, text/*, */*"]


@pytest_twisted.ensureDeferred
async def test_http_follows_redirects_like_gos_client(web):
    assert await http_runner(web.url + "/moved").run_once() == (
        structs.PASSING, f"HTTP GET {web.url}/moved: 200 OK Output: healthy")
    assert await http_runner(web.url + "/loop").run_once() == (
        structs.CRITICAL, f'Get "{web.url}/loop": stopped after 10 redirects')


@pytest_twisted.ensureDeferred
async def test_https_without_pyopenssl_says_what_is_missing():
    if importlib.util.find_spec("OpenSSL") is not None:
        pytest.skip("pyOpenSSL is installed here")
    url = f"https://127.0.0.1:{closed_port()}/"
    expected = f'Get "{url}": tls: HTTPS checks need pyOpenSSL (install twisted[tls])'
    for skip_verify in (False, True):
        assert await http_runner(url, tls_skip_verify=skip_verify).run_once() == (
            structs.CRITICAL, expected)


@pytest_twisted.ensureDeferred
async def test_http_reads_at_most_4k_of_an_endless_body(web):
    started = time.monotonic()
    status, output = await http_runner(web.url + "/endless").run_once()
    assert time.monotonic() - started < 3  # we hung up; the stream never ends by itself
    assert status == structs.PASSING
    prefix = f"HTTP GET {web.url}/endless: 200 OK Output: "
    assert output == prefix + "y" * 4096
    for _ in range(100):
        if web.resource.streams_stopped:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert web.resource.streams_stopped


@pytest_twisted.ensureDeferred
async def test_http_timeout_before_headers_is_critical(web):
    status, output = await http_runner(web.url + "/slow", timeout=0.3).run_once()
    assert status == structs.CRITICAL
    assert output == (f'Get "{web.url}/slow": context deadline exceeded '
                      "(Client.Timeout exceeded while awaiting headers)")


@pytest_twisted.ensureDeferred
async def test_http_timeout_while_reading_the_body_keeps_the_status(web):
    status, output = await http_runner(web.url + "/stall", timeout=0.3).run_once()
    assert (status, output) == (
        structs.PASSING, f"HTTP GET {web.url}/stall: 200 OK Output: partial")


def closed_port() -> int:
    """A port on 127.0.0.1 that was just listening and now refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_http_connection_refused_is_critical_with_the_url():
    port = closed_port()
    url = f"http://127.0.0.1:{port}/health"
    assert await http_runner(url).run_once() == (
        structs.CRITICAL,
        f'Get "{url}": dial tcp 127.0.0.1:{port}: connect: connection refused')


@pytest_twisted.ensureDeferred
async def test_http_runner_on_its_schedule_reports_to_the_notifier(web):
    notifier = Recorder()
    runner = HTTPRunner(reactor, "web", 60.0, 5.0, notifier, FixedRandom(0.0),
                        url=web.url + "/ok")
    runner.start()
    for _ in range(300):
        if notifier.updates:
            break
        await deferLater(reactor, 0.01, lambda: None)
    runner.stop()
    assert notifier.updates == [
        ("web", structs.PASSING, f"HTTP GET {web.url}/ok: 200 OK Output: healthy")]


@pytest_twisted.ensureDeferred
async def test_http_stop_abandons_a_request_in_flight(web):
    notifier = Recorder()
    runner = HTTPRunner(reactor, "web", 60.0, 5.0, notifier, FixedRandom(0.0),
                        url=web.url + "/slow")
    runner.start()
    for _ in range(300):
        if web.factory.protocols:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert runner.running
    runner.stop()
    for _ in range(300):  # the client hung up
        if not web.factory.protocols:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert not web.factory.protocols
    assert notifier.updates == []


@pytest_twisted.ensureDeferred
async def test_check_clients_do_not_log_a_line_per_connection(web):
    port = closed_port()
    with capturedLogs() as events:
        await http_runner(web.url + "/ok").run_once()
        await TCPRunner(reactor, "t", 10.0, 2.0, Recorder(),
                        address=f"127.0.0.1:{web.port.getHost().port}").run_once()
        await DockerRunner(reactor, "d", 10.0, 2.0, Recorder(), container_id="c",
                           args=("true",), docker_host=f"tcp://127.0.0.1:{port}").run_once()
        for _ in range(300):  # let the server see the clients hang up
            if not web.factory.protocols:
                break
            await deferLater(reactor, 0.01, lambda: None)
    noise = [event for event in events
             if event.get("log_format", "").startswith(("Starting factory", "Stopping factory"))]
    assert noise == []


# --- real servers: TCP ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tcp_passing_then_critical_once_the_listener_closes():
    port = reactor.listenTCP(0, WrappingFactory(Factory.forProtocol(Protocol)),
                             interface="127.0.0.1")
    address = f"127.0.0.1:{port.getHost().port}"
    runner = TCPRunner(reactor, "tcp", 10.0, 2.0, Recorder(), address=address)
    try:
        assert await runner.run_once() == (structs.PASSING, f"TCP connect {address}: Success")
    finally:
        await port.stopListening()
        for proto in list(port.factory.protocols):
            proto.transport.abortConnection()
    assert await runner.run_once() == (
        structs.CRITICAL, f"dial tcp {address}: connect: connection refused")


@pytest_twisted.ensureDeferred
async def test_tcp_ipv6_loopback():
    try:
        port = reactor.listenTCP(0, WrappingFactory(Factory.forProtocol(Protocol)),
                                 interface="::1")
    except CannotListenError:
        pytest.skip("no IPv6 loopback here")
    address = f"[::1]:{port.getHost().port}"
    try:
        result = await TCPRunner(reactor, "tcp", 10.0, 2.0, Recorder(), address=address).run_once()
    finally:
        await port.stopListening()
        for proto in list(port.factory.protocols):
            proto.transport.abortConnection()
    assert result == (structs.PASSING, f"TCP connect {address}: Success")


# --- real processes: scripts ----------------------------------------------------------------


def script_runner(timeout=5.0, **kw):
    return ScriptRunner(reactor, "script", 10.0, timeout, kw.pop("notifier", Recorder()),
                        kw.pop("rng", None), **kw)


@pytest_twisted.ensureDeferred
async def test_script_exit_codes():
    assert await script_runner(args=["sh", "-c", "echo fine"]).run_once() == (
        structs.PASSING, "fine\n")
    assert await script_runner(args=["sh", "-c", "echo meh >&2; exit 1"]).run_once() == (
        structs.WARNING, "meh\n")
    assert await script_runner(args=["sh", "-c", "echo out; echo err >&2; exit 2"]).run_once() == (
        structs.CRITICAL, "out\nerr\n")


@pytest_twisted.ensureDeferred
async def test_script_legacy_string_runs_through_the_shell():
    runner = script_runner(script="test -n \"$HOME\" && echo legacy; exit 1")
    assert runner.argv == ["/bin/sh", "-c", "test -n \"$HOME\" && echo legacy; exit 1"]
    assert await runner.run_once() == (structs.WARNING, "legacy\n")


@pytest_twisted.ensureDeferred
async def test_script_huge_output_keeps_the_tail_like_consul():
    runner = script_runner(args=["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; printf END"])
    status, output = await runner.run_once()
    assert status == structs.PASSING
    assert output == "Captured 4096 of 100003 bytes\n...\n" + "x" * 4093 + "END"


@pytest_twisted.ensureDeferred
async def test_script_with_a_nul_byte_is_critical_with_gos_words():
    assert await script_runner(args=["/bin/echo", "a\x00b"]).run_once() == (
        structs.CRITICAL, "fork/exec /bin/echo: invalid argument")


@pytest_twisted.ensureDeferred
async def test_script_missing_program_is_critical_with_gos_words():
    assert await script_runner(args=["no-such-check-program"]).run_once() == (
        structs.CRITICAL, 'exec: "no-such-check-program": executable file not found in $PATH')


async def gone(pid: int) -> bool:
    """Whether `pid` is dead (absent, or a zombie awaiting its reaper), within a deadline."""
    for _ in range(200):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        except OSError:
            pass
        if not os.path.exists(f"/proc/{pid}"):
            return True
        await deferLater(reactor, 0.01, lambda: None)
    return False


@pytest_twisted.ensureDeferred
async def test_script_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    # The shell starts a grandchild and waits; both must die at the timeout.
    runner = script_runner(timeout=0.5, script=f"echo started; sleep 5 & echo $! > {pidfile}; wait")
    started = time.monotonic()
    status, output = await runner.run_once()
    assert time.monotonic() - started < 3
    assert status == structs.CRITICAL
    assert output == "Timed out (500ms) running check\n\nstarted\n"
    assert await gone(int(pidfile.read_text()))


@pytest_twisted.ensureDeferred
async def test_script_stop_kills_a_run_in_flight(tmp_path):
    pidfile = tmp_path / "check.pid"
    notifier = Recorder()
    runner = script_runner(timeout=5.0, notifier=notifier, rng=FixedRandom(0.0),
                           script=f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; "
                                  "exec sleep 5")
    runner.start()
    for _ in range(300):
        if pidfile.exists():
            break
        await deferLater(reactor, 0.01, lambda: None)
    pid = int(pidfile.read_text())
    runner.stop()
    assert await gone(pid)
    await deferLater(reactor, 0.05, lambda: None)  # let the reaped process report, unheard
    assert notifier.updates == []


# --- real servers: HTTPS (needs pyOpenSSL, i.e. twisted[tls]) -------------------------------


def self_signed_pem() -> bytes:
    """A throwaway key and certificate for 127.0.0.1 that no trust store knows."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "waypost-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
            + cert.public_bytes(serialization.Encoding.PEM))


@pytest_twisted.ensureDeferred
async def test_https_skip_verify_accepts_a_self_signed_certificate():
    pytest.importorskip("OpenSSL")
    pytest.importorskip("cryptography")
    from twisted.internet.ssl import PrivateCertificate

    options = PrivateCertificate.loadPEM(self_signed_pem()).options()
    factory = WrappingFactory(Site(Health()))
    port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
    url = f"https://127.0.0.1:{port.getHost().port}/ok"
    try:
        insecure = await http_runner(url, tls_skip_verify=True).run_once()
        strict = await http_runner(url).run_once()
    finally:
        await port.stopListening()
        for proto in list(factory.protocols):
            proto.transport.abortConnection()
    assert insecure == (structs.PASSING, f"HTTP GET {url}: 200 OK Output: healthy")
    assert strict == (structs.CRITICAL, f'Get "{url}": tls: certificate verify failed')
