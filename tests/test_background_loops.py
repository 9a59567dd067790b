"""No background loop of the agent dies on an error: a failing tick is logged and counted,
and the next tick runs on schedule and succeeds. Driven by a fake clock, failures injected
through each loop's collaborator."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import LogLevel, capturedLogs

from agent.agent import CHECK_REAP_INTERVAL, make_agent
from agent.config.model import AgentConfig
from agent.definitions import CheckSpec, ServiceDefinition
from agent.fsm.commands import Deregister, KVOperation
from agent.local.antientropy import RETRY_INTERVAL, AntiEntropy
from agent.local.catalog import InProcessCatalog
from agent.local.persist import LocalPersistence
from agent.local.state import LocalState
from agent.loops import LoopSet, ResilientLoop
from agent.structs import CheckDefinition, KVEntry, Node, Service
from tests.inline import InlinePool, ThreadedClock

NODE_ID = "00000000-0000-0000-0000-000000000001"


def emfile() -> OSError:
    return OSError(errno.EMFILE, "Too many open files")


class Flaky:
    """Raises `error` on the first `failures` calls, then calls `real`."""

    def __init__(self, real, failures: int = 1, error=emfile) -> None:
        self.real, self.failures, self.error, self.calls = real, failures, error, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return self.real(*args, **kwargs)


# -- the loop itself -------------------------------------------------------------------------


def test_a_raising_tick_is_counted_and_the_next_tick_runs():
    clock = task.Clock()
    done = []
    loop = ResilientLoop(clock, "t", Flaky(lambda: done.append(clock.seconds())), 5.0)
    with capturedLogs() as events:
        loop.start()
        clock.advance(5)
    assert (loop.failures, loop.ticks, done) == (1, 0, [])
    assert "Too many open files" in loop.last_error
    assert any(e["log_level"] == LogLevel.error and e.get("loop") == "t" for e in events)
    clock.advance(5)
    assert (loop.failures, loop.ticks, done) == (1, 1, [10.0])


def test_a_failing_deferred_counts_too_and_ticks_never_overlap():
    clock = task.Clock()
    pending: list[Deferred] = []

    def tick():
        d = Deferred()
        pending.append(d)
        return d
    loop = ResilientLoop(clock, "slow", tick, 1.0)
    loop.start(now=True)
    clock.advance(10)  # still in flight: no second tick
    assert len(pending) == 1
    with capturedLogs():
        pending[0].errback(emfile())
    assert loop.failures == 1
    clock.advance(1)
    assert len(pending) == 2
    pending[1].callback(None)
    assert loop.ticks == 1


def test_a_broken_interval_does_not_end_the_loop_and_stop_stops():
    clock = task.Clock()
    calls = []
    delays = iter([ValueError("bad"), 2.0, 2.0])

    def interval():
        value = next(delays)
        if isinstance(value, Exception):
            raise value
        return value
    loop = ResilientLoop(clock, "i", lambda: calls.append(1), interval)
    with capturedLogs():
        loop.start()
    assert loop.failures == 1
    clock.advance(1)  # the fallback delay
    assert calls == [1]
    loop.stop()
    clock.advance(100)
    assert calls == [1] and not clock.getDelayedCalls()


def test_loop_names_are_unique():
    loops = LoopSet()
    loops.add(ResilientLoop(task.Clock(), "x", lambda: None, 1))
    with pytest.raises(ValueError):
        loops.add(ResilientLoop(task.Clock(), "x", lambda: None, 1))


# -- every loop of the agent -----------------------------------------------------------------


def agent_with(tmp_path: Path, clock: task.Clock, **collaborators):
    """A non-dev agent on a data_dir, its log's file work run inline (see tests.inline)."""
    config = AgentConfig(node_name="me", node_id=NODE_ID, data_dir=str(tmp_path),
                         settings={"raft_snapshot_threshold": 5})
    if not hasattr(clock, "callFromThread"):
        clock.callFromThread = lambda f, *a, **kw: f(*a, **kw)
    agent = make_agent(config, clock, pool=InlinePool(), **collaborators)
    agent.startService()
    return agent


def test_the_agent_runs_every_loop_through_the_resilient_wrapper(tmp_path):
    agent = agent_with(tmp_path, task.Clock())
    try:
        # A new loop must join this list, and get a survival test below.
        assert {loop.name for loop in agent.loops} == {"anti-entropy", "check-reaper"}
        assert all(isinstance(loop, ResilientLoop) and loop.running for loop in agent.loops)
        assert agent.loops.failures() == {"anti-entropy": 0, "check-reaper": 0}
        # The leader's own loop runs while it leads.
        assert agent.leader.reconciler.running
    finally:
        agent.stopService()
    assert not any(loop.running for loop in agent.loops)
    assert not agent.leader.reconciler.running


def test_a_snapshot_that_fails_is_logged_and_the_next_check_takes_it(tmp_path, monkeypatch):
    """Snapshots of the log are taken in the background; one that fails (EMFILE opening the
    file) is logged, and the next check succeeds."""
    clock = ThreadedClock()
    agent = agent_with(tmp_path, clock)
    try:
        snapshots = agent.raft._snapshots
        monkeypatch.setattr(snapshots, "begin", Flaky(snapshots.begin))
        with capturedLogs() as events:
            for i in range(10):
                agent.facade.write(KVOperation("set", KVEntry(f"k{i}", b"v")))
                if snapshots.begin.calls:
                    break
        assert any("taking a snapshot" in (e.get("log_format") or "") for e in events)
        assert agent.raft.snapshots_taken == 0
        agent.facade.write(KVOperation("set", KVEntry("one-more", b"v")))  # checks again
        for _ in range(5):
            clock.advance(0)  # the chunks are written a few per reactor turn
        assert agent.raft.snapshots_taken == 1
        assert list((tmp_path / "raft" / "snapshots").glob("*.snap"))
    finally:
        agent.stopService()


class RefusingRemoval(LocalPersistence):
    """A disk that refuses the first removal of a service file."""

    def __init__(self, data_dir) -> None:
        super().__init__(data_dir)
        self.remove_service = Flaky(super().remove_service)


def test_check_reaper_survives_a_refusing_disk(tmp_path):
    clock = task.Clock()
    agent = agent_with(tmp_path, clock, persistence=RefusingRemoval(tmp_path))
    try:
        spec = CheckSpec(check_id="service:web", name="ttl", service_id="web", ttl=5,
                         type="ttl",
                         definition=CheckDefinition(deregister_critical_service_after=60))
        agent.local.add_service(ServiceDefinition(
            service=Service(node="", id="web", name="web"), checks=(spec,)))
        with capturedLogs():
            clock.advance(5 + 60 + CHECK_REAP_INTERVAL)  # critical for long enough; reap fails
        reaper = agent.loops["check-reaper"]
        assert reaper.failures == 1 and "web" in agent.local.services
        clock.advance(CHECK_REAP_INTERVAL)
        assert "web" not in agent.local.services
        assert "web" not in agent.store.catalog.services["me"]
        assert reaper.failures == 1
    finally:
        agent.stopService()


def anti_entropy_with(agent, write) -> AntiEntropy:
    """The agent's anti-entropy, rebuilt around another catalog write (its collaborator)."""
    agent.antientropy.stop()
    agent.local.sync.catalog = InProcessCatalog(lambda command, request: write(command),
                                                agent.facade.read)
    return AntiEntropy(agent.reactor, agent.local)


def test_anti_entropy_survives_a_raising_write(tmp_path):
    clock = task.Clock()
    agent = agent_with(tmp_path, clock)
    try:
        agent.local.add_service(ServiceDefinition(
            service=Service(node="", id="web", name="web"), checks=()))
        agent.raft.apply(Deregister(node="me", service_id="web"))  # drift to repair
        antientropy = anti_entropy_with(agent, Flaky(agent.raft.apply))
        with capturedLogs():
            antientropy.start(now=True)  # the first sync's write raises
        assert antientropy.loop.failures == 1
        assert "web" not in agent.store.catalog.services["me"]
        clock.advance(2 * RETRY_INTERVAL)  # retried with backoff, before the next interval
        assert "web" in agent.store.catalog.services["me"]
        assert antientropy.loop.failures == 1
        antientropy.stop()
    finally:
        agent.stopService()


def test_anti_entropy_counts_a_refused_write_and_retries(tmp_path):
    clock = task.Clock()
    agent = agent_with(tmp_path, clock)
    try:
        agent.local.add_service(ServiceDefinition(
            service=Service(node="", id="web", name="web"), checks=()))
        agent.raft.apply(Deregister(node="me", service_id="web"))
        refused = iter([True])
        antientropy = anti_entropy_with(agent, lambda c: (
            fail(emfile()) if next(refused, False) else agent.raft.apply(c)))
        antientropy.start()
        with capturedLogs():
            clock.advance(60 * 1.5 + 1)
        assert antientropy.loop.failures == 1
        clock.advance(60 * 1.5 + 1)
        assert "web" in agent.store.catalog.services["me"]
        antientropy.stop()
    finally:
        agent.stopService()


def test_a_failed_write_after_a_ttl_expiry_is_logged_not_left_unhandled():
    clock = task.Clock()
    writes = iter([succeed(None), succeed(None)])  # the registration and the pass succeed
    local = LocalState(clock, lambda: Node(name="me", address="127.0.0.1"), InProcessCatalog(
        lambda command, request: next(writes, None) or fail(emfile()), read=None))
    local.add_check(CheckSpec(check_id="t", name="t", ttl=5, type="ttl"))
    local.update_ttl("t", "passing", "")
    with capturedLogs() as events:
        clock.advance(5)
    assert local.checks["t"].check.status == "critical"
    assert any("local state write failed" in (e.get("log_format") or "") for e in events)


def test_a_configured_watch_survives_an_answer_it_cannot_read():
    """A watch whose answer does not parse (or carries a bad index) waits and asks again."""
    from gateway.http.request import Response
    from gateway.watch.runner import RETRY, Watch

    clock = task.Clock()
    answers = [Response(200, b"not json", [(b"X-Consul-Index", b"5")]),
               Response(200, b"[]", [(b"X-Consul-Index", b"not a number")])]
    asked = []

    def api(request):
        asked.append(request)
        return answers.pop(0) if answers else Deferred()

    watch = Watch({"type": "keyprefix", "prefix": "app/", "handler": "true"}, api, clock)
    with capturedLogs():
        watch.start()
        assert len(asked) == 1 and watch.failures == 1
        clock.advance(RETRY)
        assert len(asked) == 2 and watch.failures == 2
        clock.advance(RETRY)
    assert len(asked) == 3 and watch.running
    watch.stop()


def test_a_session_ttl_invalidation_that_fails_is_retried():
    """The TTL timer of a session survives a write that raises: Consul's leader retries."""
    from agent.fsm.apply import FSM
    from agent.fsm.commands import Register, SessionCreate, SessionDestroy
    from agent.raft.single import SingleServerLog
    from agent.sessions import INVALIDATE_RETRY, SessionManager
    from agent.state.store import StateStore
    from agent.structs import Check, Node, Session

    clock = task.Clock()
    store = StateStore()
    log = SingleServerLog(clock, FSM(store))
    log.start()
    log.apply(Register(node=Node("n1", "10.0.0.1"),
                       checks=(Check(node="n1", check_id="serfHealth", name="serf",
                                     status="passing"),)))
    destroys = Flaky(log.apply, failures=2, error=emfile)

    def write(command):
        return destroys(command) if isinstance(command, SessionDestroy) else log.apply(command)
    sessions = SessionManager(clock, store, write)
    sessions.start()
    session_id = "s1"
    log.apply(SessionCreate(Session(id=session_id, node="n1", ttl=10.0)))
    with capturedLogs():
        clock.advance(20.0)  # TTL x 2: the first invalidation raises
        assert session_id in store.sessions.sessions
        clock.advance(INVALIDATE_RETRY)  # the second fails too
        assert session_id in store.sessions.sessions
        clock.advance(INVALIDATE_RETRY)  # the third goes through
    assert session_id not in store.sessions.sessions
    sessions.stop()


def test_a_plugin_view_that_fails_to_build_does_not_stop_later_deliveries():
    from gateway.feed import _Subscriber

    clock = task.Clock()
    got = []
    views = Flaky(lambda: (len(got),), failures=1, error=lambda: ValueError("broken view"))
    sub = _Subscriber(clock, got.append, views)
    with capturedLogs() as events:
        sub.poke()
        clock.advance(0)
    assert got == [] and any("plugin callback failed" in str(e.get("log_format")) for e in events)
    sub.poke()
    clock.advance(0)
    assert got == [0]
