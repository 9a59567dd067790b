"""Tests for agent.raft.driver and agent.raft.net: three RaftDrivers on real 127.0.0.1 TCP
sockets with in-memory storage, and the transport's handling of junk.

Timing is real, so every wait polls a condition against a generous deadline instead of
sleeping a fixed time; the assertions are about outcomes (one leader, same log everywhere),
never about which server wins.
"""

from __future__ import annotations

import random
import socket
import struct

import msgpack
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import deferLater

from agent.raft.consensus import Configuration, LeaderChange, Options, RaftNode, Role
from agent.raft.consensus.messages import TimeoutNow, VoteRequest, encode
from agent.raft.driver import MemoryStorage, RaftDriver
from agent.raft.net import RPC_RAFT, RaftTransport
from agent.raft.records import COMMAND, CONFIGURATION, Entry, HardState
from tests.reactor_hygiene import clean_reactor  # noqa: F401 - autouse fixture

OPTS = Options(election_timeout=0.3, heartbeat_interval=0.05)
DEADLINE = 10.0


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def wait_for(condition, what: str, timeout: float = DEADLINE):
    end = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > end:
            raise AssertionError(f"timed out waiting for {what}")
        yield sleep(0.02)


class Server:
    def __init__(self, sid: str, ids: list[str], seed: int) -> None:
        boot = Entry(1, 1, CONFIGURATION, Configuration.of(ids).encode())
        node = RaftNode(sid, OPTS, random.Random(seed), reactor.seconds(),
                        hard_state=HardState(1, None), entries=[boot])
        self.sid = sid
        self.applied: list[bytes] = []
        self.changes: list[LeaderChange] = []
        self.storage = MemoryStorage(reactor)
        self.transport = RaftTransport(reactor, {})
        self.driver = RaftDriver(reactor, node, self.storage, self.transport, apply=self._apply)
        self.driver.on_leader_change(self.changes.append)
        self.port = self.transport.listen(0).getHost().port

    def _apply(self, item) -> None:
        if isinstance(item, Entry) and item.kind == COMMAND:
            self.applied.append(item.data)

    @property
    def leads(self) -> bool:
        return self.driver.running and self.driver.node.role is Role.LEADER


@inlineCallbacks
def cluster(n: int = 3):
    ids = [f"s{i}" for i in range(n)]
    servers = [Server(sid, ids, i) for i, sid in enumerate(ids)]
    for s in servers:
        for t in servers:
            if t is not s:
                s.transport.set_peer(t.sid, ("127.0.0.1", t.port))
    for s in servers:
        s.driver.start()
    yield sleep(0)
    return servers


@inlineCallbacks
def shutdown(servers):
    for s in servers:
        s.driver.stop()
    for s in servers:
        yield s.transport.stop()


def leaders(servers):
    return [s for s in servers if s.leads]


@pytest_twisted.inlineCallbacks
def test_three_drivers_elect_replicate_and_fail_over():
    servers = yield cluster()
    try:
        yield wait_for(lambda: len(leaders(servers)) == 1, "a leader")
        # Exactly one leader per term, and every server learns who it is.
        [leader] = leaders(servers)
        term = leader.driver.node.term
        yield wait_for(lambda: all(s.driver.node.leader_id == leader.sid for s in servers),
                       "followers to know the leader")
        assert any(c.is_self and c.term == term for c in leader.changes)

        commands = [b"cmd-%d" % i for i in range(20)]
        for c in commands:
            assert isinstance(leader.driver.propose(c), int)
        yield wait_for(lambda: all(s.applied == commands for s in servers), "replication")
        # Storage saw what was applied (persist happened before the commit could count it).
        for s in servers:
            assert [e.data for e in s.storage.entries if e.kind == COMMAND] == commands
            assert s.storage.hard_state.term == s.driver.node.term

        # Stop the leader's driver and its sockets: the other two elect a new leader.
        leader.driver.stop()
        yield leader.transport.stop()
        rest = [s for s in servers if s is not leader]
        yield wait_for(lambda: len(leaders(rest)) == 1, "a new leader")
        [new] = leaders(rest)
        assert new.driver.node.term > term
        more = [b"after-%d" % i for i in range(5)]
        for c in more:
            assert isinstance(new.driver.propose(c), int)
        yield wait_for(lambda: all(s.applied == commands + more for s in rest),
                       "replication after failover")
        assert leader.applied == commands
    finally:
        yield shutdown(servers)


class _Raw(Protocol):
    def connectionMade(self):  # noqa: N802
        self.factory.connected.callback(self)

    def connectionLost(self, reason=None):  # noqa: N802
        self.factory.lost.callback(None)


@inlineCallbacks
def raw_connection(port: int):
    f = ClientFactory.forProtocol(_Raw)
    f.connected, f.lost = Deferred(), Deferred()
    reactor.connectTCP("127.0.0.1", port, f)
    proto = yield f.connected
    return proto, f.lost


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@inlineCallbacks
def check_junk_closes_only_that_connection(junk: bytes):
    got = []
    t = RaftTransport(reactor, {}, on_message=got.append)
    port = t.listen(0).getHost().port
    try:
        good, good_lost = yield raw_connection(port)
        bad, bad_lost = yield raw_connection(port)
        good.transport.write(bytes([RPC_RAFT]))
        bad.transport.write(junk)
        yield bad_lost  # the server closed the junk connection
        msg = TimeoutNow("s9", 4)
        good.transport.write(frame(encode(msg)))  # the other one still works
        yield wait_for(lambda: got == [msg], "the good frame")
        good.transport.loseConnection()
        yield good_lost
    finally:
        yield t.stop()


@pytest_twisted.inlineCallbacks
def test_wrong_protocol_byte_closes_connection():
    yield check_junk_closes_only_that_connection(b"\x00" + frame(encode(TimeoutNow("x", 1))))


@pytest_twisted.inlineCallbacks
def test_undecodable_frame_closes_connection():
    yield check_junk_closes_only_that_connection(bytes([RPC_RAFT]) + frame(b"\xc1\xc1junk"))


@pytest_twisted.inlineCallbacks
def test_wrong_shape_frame_closes_connection():
    bad = msgpack.packb([1, "s1", "not-a-term", 0, 0, False, False])
    yield check_junk_closes_only_that_connection(bytes([RPC_RAFT]) + frame(bad))


@pytest_twisted.inlineCallbacks
def test_oversized_length_closes_connection():
    yield check_junk_closes_only_that_connection(bytes([RPC_RAFT]) + b"\xff\xff\xff\xff")


@pytest_twisted.inlineCallbacks
def test_frames_split_across_reads_and_dispatcher_handoff():
    """A protocol handed the connection after the 0x01 byte (as the server port's dispatcher
    will) reads frames however the bytes are cut."""
    got = []
    t = RaftTransport(reactor, {}, on_message=got.append)
    proto = t.protocol(expect_type_byte=False)
    msgs = [VoteRequest("s1", 3, 7, 2, pre=True), TimeoutNow("s2", 5)]
    data = b"".join(frame(encode(m)) for m in msgs)
    for i in range(len(data)):
        proto.dataReceived(data[i:i + 1])
    assert got == msgs
    yield t.stop()


@pytest_twisted.inlineCallbacks
def test_send_to_unreachable_peer_drops_then_reconnects():
    # A port nobody listens on (bound then closed), then a real listener at a new port.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    got = []
    receiver = RaftTransport(reactor, {}, on_message=got.append)
    sender = RaftTransport(reactor, {"dead": ("127.0.0.1", dead)}, retry_interval=0.05)
    try:
        # Held while the dial runs, dropped when it fails (Raft retries on its own).
        assert sender.send("dead", TimeoutNow("a", 1)) is True
        yield wait_for(lambda: sender._peers["dead"].connector is None, "the failed dial")
        assert sender._peers["dead"].waiting == []
        assert sender.send("nobody", TimeoutNow("a", 1)) is False
        port = receiver.listen(0).getHost().port
        sender.set_peer("live", ("127.0.0.1", port))
        msg = TimeoutNow("a", 2)
        # The first frame to a peer not yet connected goes out once the connection is up.
        assert sender.send("live", msg) is True
        yield wait_for(lambda: bool(got), "delivery once connected")
        assert got == [msg]
    finally:
        yield sender.stop()
        yield receiver.stop()


class HeldStorage:
    """Writes complete only when the test says so, in any order."""

    def __init__(self) -> None:
        self.writes: list = []

    def write(self, p):
        d = Deferred()
        self.writes.append((p, d))
        return d


class Recorder:
    on_message = None

    def __init__(self) -> None:
        self.sent: list = []

    def send(self, to, msg):
        self.sent.append((to, msg))


def test_vote_waits_for_its_write_and_acks_only_a_finished_prefix():
    from twisted.internet.task import Clock
    clock = Clock()
    ids = ["s0", "s1", "s2"]
    boot = Entry(1, 1, CONFIGURATION, Configuration.of(ids).encode())
    node = RaftNode("s0", Options(election_timeout=1.0, heartbeat_interval=0.1, pre_vote=False),
                    random.Random(0), 0.0, hard_state=HardState(1, None), entries=[boot])
    storage, net = HeldStorage(), Recorder()
    driver = RaftDriver(clock, node, storage, net)
    assert net.on_message == driver.receive
    driver.start()
    clock.advance(1.0)
    driver.receive(VoteRequest("s1", 2, 1, 1))
    clock.advance(0)  # the driver drains once the turn's messages are in
    # The vote (term 2, s1) is handed to storage, and the answer is not sent before it is durable.
    assert [p.hard_state for p, _ in storage.writes] == [HardState(2, "s1")]
    assert net.sent == []
    storage.writes[0][1].callback(None)
    [(to, resp)] = net.sent
    assert to == "s1" and resp.granted and resp.term == 2
    # Two more writes finishing out of order: nothing is acknowledged until the first is.
    driver.receive(VoteRequest("s2", 3, 1, 1))
    clock.advance(0)
    driver.receive(VoteRequest("s1", 4, 1, 1))
    clock.advance(0)
    (p1, d1), (p2, d2) = storage.writes[1:]
    d2.callback(None)
    assert len(net.sent) == 1
    d1.callback(None)
    assert [m.term for _, m in net.sent[1:]] == [3, 4]
    driver.stop()
    assert clock.getDelayedCalls() == []
