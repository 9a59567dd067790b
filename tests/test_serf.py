"""The Serf state machine (agent.gossip.serf) with simulated time and a fake SWIM below it."""

from __future__ import annotations

import base64
import random

import pytest

from agent.gossip.delegate import NodeInfo
from agent.gossip.messages import NodeState
from agent.gossip.serf import Serf, SerfConfig, SerfError, SerfState
from agent.gossip.serf.codec import decode_message, encode_message
from agent.gossip.serf.consul_tags import (
    consul_agent_tags, is_consul_server, waypost_agent_tags, waypost_server_port)
from agent.gossip.serf.events import (
    BroadcastDone, MemberEvent, MemberEventType, MemberStatus, Query, QueryAck, QueryDone,
    QueryReply, ReconnectTo, SendTo, UserEvent)
from agent.gossip.serf.internal import KeyringSummary, start_key_query
from agent.gossip.serf.lamport import LamportClock
from agent.gossip.serf.messages import (
    ConflictResponse, Join, Leave, PushPull, QueryMessage, Relay, UserEventMessage)
from agent.gossip.serf.queries import QueryParams, default_query_timeout
from agent.gossip.serf.tags import encode_tags

VSN = (1, 5, 2, 2, 5, 4)  # what Consul 1.8.7 advertises


def info(name: str, i: int = 1, tags: dict[str, str] | None = None,
         state: NodeState = NodeState.ALIVE) -> NodeInfo:
    return NodeInfo(name, bytes([10, 0, 0, i]), 8301, encode_tags(tags or {"role": "node"}),
                    state, VSN)


def make(name: str = "a", i: int = 1, tags: dict[str, str] | None = None, **cfg) -> Serf:
    serf = Serf(SerfConfig(node_name=name, tags=tags or {"role": "node"}, **cfg),
                random.Random(7))
    serf.notify_join(info(name, i, tags))
    serf.drain()
    return serf


def of(outputs, kind):
    return [o for o in outputs if isinstance(o, kind)]


def gossip(src: Serf, *dst: Serf) -> None:
    """Hand every queued broadcast of src to each dst, as piggybacked SWIM messages."""
    for msg in src.broadcasts(2, 1 << 20):
        for d in dst:
            d.notify_message(msg)


# --- Lamport and the broadcast queue ------------------------------------------------------------

def test_lamport_witness_moves_past_and_never_back() -> None:
    clock = LamportClock()
    assert clock.increment() == 1
    clock.witness(5)
    assert clock.time() == 6
    clock.witness(3)
    assert clock.time() == 6
    clock.witness(6)  # equal counts as behind: our next message must sort after it
    assert clock.time() == 7


# --- membership, intents, reaping ---------------------------------------------------------------

def test_member_that_disappears_without_intent_is_failed_and_with_intent_left() -> None:
    a = make()
    a.notify_join(info("b", 2))
    a.notify_join(info("c", 3))
    a.notify_message(encode_message(Leave(10, "c")))
    a.notify_leave(info("b", 2, state=NodeState.DEAD))
    a.notify_leave(info("c", 3, state=NodeState.LEFT))
    events = [(e.type, e.member.name, e.member.status) for e in of(a.drain(), MemberEvent)]
    assert events == [
        (MemberEventType.JOIN, "b", MemberStatus.ALIVE),
        (MemberEventType.JOIN, "c", MemberStatus.ALIVE),
        (MemberEventType.FAILED, "b", MemberStatus.FAILED),
        (MemberEventType.LEAVE, "c", MemberStatus.LEFT)]
    assert a.members.failed == ["b"] and a.members.left == ["c"]


def test_leave_intent_before_swim_knows_the_node_is_buffered() -> None:
    a = make()
    a.notify_message(encode_message(Leave(5, "b")))
    a.notify_join(info("b", 2))
    assert a.members.members["b"].member.status is MemberStatus.LEAVING
    # A join stamped later than the leave wins: the leave was from an earlier life.
    a.notify_message(encode_message(Join(6, "b")))
    assert a.members.members["b"].member.status is MemberStatus.ALIVE


def test_join_then_older_leave_is_ignored_and_not_regossiped() -> None:
    a = make()
    a.notify_join(info("b", 2))
    a.notify_message(encode_message(Join(9, "b")))
    queued = len(a._intents)
    a.notify_message(encode_message(Leave(8, "b")))
    assert a.members.members["b"].member.status is MemberStatus.ALIVE
    assert a.clock.time() == 10
    a.notify_message(encode_message(Join(9, "b")))  # a repeat is not news either
    assert len(a._intents) == queued  # neither was queued for re-gossip


def test_leave_about_ourselves_is_refuted_with_a_newer_join() -> None:
    a = make()
    a.notify_join(info("b", 2))
    a.notify_message(encode_message(Leave(20, "a")))
    assert a.local_member().status is MemberStatus.ALIVE
    sent = [decode_message(m) for m in a.broadcasts(0, 10_000)]
    joins = [m for m in sent if isinstance(m, Join)]
    assert joins and joins[0].node == "a" and joins[0].ltime > 20


def test_failed_members_reaped_after_reconnect_timeout_left_after_tombstone() -> None:
    a = make(reconnect_timeout=100.0, tombstone_timeout=50.0, reap_interval=1.0)
    a.notify_join(info("b", 2))
    a.notify_join(info("c", 3))
    a.notify_message(encode_message(Leave(3, "c")))
    a.tick(10.0)
    a.notify_leave(info("b", 2))
    a.notify_leave(info("c", 3))
    a.drain()
    a.tick(55.0)
    assert [e.member.name for e in of(a.drain(), MemberEvent)] == []
    a.tick(61.0)
    assert [(e.type, e.member.name) for e in of(a.drain(), MemberEvent)] == [
        (MemberEventType.REAP, "c")]
    a.tick(111.0)
    assert [(e.type, e.member.name) for e in of(a.drain(), MemberEvent)] == [
        (MemberEventType.REAP, "b")]
    assert set(a.members.members) == {"a"}


def test_buffered_intents_expire() -> None:
    a = make(recent_intent_timeout=300.0, reap_interval=1.0)
    a.notify_message(encode_message(Join(4, "ghost")))
    a.tick(200.0)
    assert "ghost" in a.members.intents
    a.tick(301.0)
    assert "ghost" not in a.members.intents


def test_force_leave_turns_failed_into_left_and_prune_reaps() -> None:
    a = make()
    for i, n in enumerate(("b", "c", "d"), 2):
        a.notify_join(info(n, i))
    a.notify_leave(info("b", 2))
    a.notify_leave(info("c", 3))
    a.drain()
    token = a.force_leave("b")
    assert token is not None  # d is alive: the intent must be gossiped
    a.force_leave("c", prune=True)
    events = [(e.type, e.member.name) for e in of(a.drain(), MemberEvent)]
    assert events == [(MemberEventType.LEAVE, "b"), (MemberEventType.LEAVE, "c"),
                      (MemberEventType.REAP, "c")]
    for _ in range(20):
        a.broadcasts(0, 10_000)
    assert BroadcastDone(token) in a.drain()


def test_graceful_leave_waits_for_its_broadcast() -> None:
    a = make()
    assert a.leave() is None  # alone: nobody to tell
    assert a.state is SerfState.LEAVING
    b = make("b", 2)
    b.notify_join(info("a"))
    token = b.leave()
    assert b.local_member().status is MemberStatus.LEAVING
    with pytest.raises(SerfError):
        b.leave()
    while BroadcastDone(token) not in b.drain():
        b.broadcasts(0, 10_000)
    b.finish_leave()
    assert b.state is SerfState.LEFT


def test_reconnect_picks_a_failed_member() -> None:
    a = make(reconnect_interval=30.0)
    a.notify_join(info("b", 2))
    a.notify_leave(info("b", 2))
    a.drain()
    a.tick(30.0)
    assert of(a.drain(), ReconnectTo) == [ReconnectTo("b", bytes([10, 0, 0, 2]), 8301)]


def test_rejoin_after_failure_is_a_join_and_clears_failed_list() -> None:
    a = make()
    a.notify_join(info("b", 2))
    a.notify_leave(info("b", 2))
    a.notify_join(info("b", 2, tags={"role": "node", "x": "1"}))
    assert a.members.failed == []
    assert a.members.members["b"].member.tags == {"role": "node", "x": "1"}
    a.notify_update(info("b", 2, tags={"role": "node", "x": "2"}))
    last = of(a.drain(), MemberEvent)[-1]
    assert last.type is MemberEventType.UPDATE and last.member.tags["x"] == "2"


# --- user events --------------------------------------------------------------------------------

def test_user_event_delivered_once_and_regossiped_once() -> None:
    a, b = make(), make("b", 2)
    a.user_event("deploy", b"v1")
    assert of(a.drain(), UserEvent) == [UserEvent(1, "deploy", b"v1", False)]
    msgs = a.broadcasts(0, 10_000)
    for m in msgs + msgs:
        b.notify_message(m)
    assert of(b.drain(), UserEvent) == [UserEvent(1, "deploy", b"v1", False)]
    assert len(b._event_queue) == 1
    a.user_event("deploy", b"v1")  # same name and payload at a new time is a new event
    assert len(of(a.drain(), UserEvent)) == 1


def test_old_events_and_events_before_min_time_are_dropped() -> None:
    b = make("b", 2, event_buffer=4)
    b.notify_message(encode_message(UserEventMessage(100, "new")))
    b.notify_message(encode_message(UserEventMessage(50, "ancient")))
    b.event_buffer.min_time = 200
    b.notify_message(encode_message(UserEventMessage(150, "before-join")))
    assert [e.name for e in of(b.drain(), UserEvent)] == ["new"]


def test_user_event_size_limits() -> None:
    a = make()
    with pytest.raises(SerfError):
        a.user_event("x", b"y" * 600)
    with pytest.raises(ValueError):
        SerfConfig(node_name="a", user_event_size_limit=10_000)


# --- queries ------------------------------------------------------------------------------------

def _query_pair(**params):
    a = make("a", 1, tags={"role": "node", "dc": "dc1"})
    b = make("b", 2, tags={"role": "node", "dc": "dc2"})
    for s, other in ((a, info("b", 2)), (b, info("a", 1))):
        s.notify_join(other)
        s.drain()
    handle = a.query("deploy", b"?", QueryParams(**params))
    return a, b, handle


def test_query_ack_and_response_reach_the_querier() -> None:
    a, b, handle = _query_pair(request_ack=True, timeout=5.0)
    out_a = a.drain()
    assert of(out_a, QueryAck) == [QueryAck(handle.ltime, handle.id, "a")]  # we ack ourselves
    gossip(a, b)
    out_b = b.drain()
    (query,) = of(out_b, Query)
    assert query.name == "deploy" and query.source_node == "a" and query.deadline == 5.0
    (ack,) = of(out_b, SendTo)
    assert (ack.node, ack.addr, ack.port) == ("a", bytes([10, 0, 0, 1]), 8301)
    a.notify_message(ack.payload)
    b.respond(query, b"done")
    with pytest.raises(SerfError):
        b.respond(query, b"again")
    (reply,) = of(b.drain(), SendTo)
    a.notify_message(reply.payload)
    a.notify_message(reply.payload)  # duplicates are dropped
    out = a.drain()
    assert of(out, QueryAck) == [QueryAck(handle.ltime, handle.id, "b")]
    assert of(out, QueryReply) == [QueryReply(handle.ltime, handle.id, "b", b"done")]
    a.tick(5.1)
    assert of(a.drain(), QueryDone) == [QueryDone(handle.ltime, handle.id)]
    a.notify_message(reply.payload)
    assert a.drain() == []


def test_query_filters_by_node_and_tag_regex_but_still_regossips() -> None:
    a, b, _ = _query_pair(filter_tags={"dc": "^dc1$"})
    gossip(a, b)
    assert of(b.drain(), Query) == [] and len(b._query_queue) == 1
    a.query("q2", b"", QueryParams(filter_nodes=("b",), filter_tags={"dc": "2"}))
    gossip(a, b)
    assert [q.name for q in of(b.drain(), Query)] == ["q2"]
    a.query("q3", b"", QueryParams(filter_tags={"dc": "(unclosed"}))
    gossip(a, b)
    assert of(b.drain(), Query) == []


def test_duplicate_and_no_broadcast_queries() -> None:
    b = make("b", 2)
    q = QueryMessage(ltime=3, id=9, addr=bytes([10, 0, 0, 1]), port=8301, source_node="a",
                     flags=2, timeout_ns=10**9, name="x")
    raw = encode_message(q)
    b.notify_message(raw)
    b.notify_message(raw)
    assert len(of(b.drain(), Query)) == 1
    assert len(b._query_queue) == 0  # NoBroadcast


def test_response_relayed_through_other_members() -> None:
    a, b, handle = _query_pair(relay_factor=2)
    b.notify_join(info("c", 3))
    gossip(a, b)
    (query,) = of(b.drain(), Query)
    b.respond(query, b"r")
    sends = of(b.drain(), SendTo)
    assert [s.node for s in sends][0] == "a"
    # two other alive members carry a copy (Serf may pick the querier itself as one)
    relays = {s.node: s for s in sends[1:]}
    assert set(relays) == {"a", "c"}
    relay = decode_message(relays["c"].payload)
    assert isinstance(relay, Relay) and relay.dest_name == "a"
    c = make("c", 3)  # the relaying member forwards the inner message to the querier
    c.notify_message(relays["c"].payload)
    (fwd,) = of(c.drain(), SendTo)
    assert (fwd.node, fwd.payload) == ("a", sends[0].payload)


def test_default_query_timeout_matches_serf() -> None:
    assert default_query_timeout(1, 0.2, 16) == pytest.approx(3.2)
    assert default_query_timeout(10, 0.2, 16) == pytest.approx(3.2 * 2)
    assert default_query_timeout(100, 0.2, 16) == pytest.approx(3.2 * 3)
    assert default_query_timeout(0, 0.2, 16) == 0


# --- push-pull ----------------------------------------------------------------------------------

def test_push_pull_merges_clocks_intents_and_events() -> None:
    a, b = make(), make("b", 2)
    for n, i in (("b", 2), ("c", 3), ("d", 4)):
        a.notify_join(info(n, i))
    a.notify_message(encode_message(Join(40, "c")))
    a.notify_message(encode_message(Leave(41, "d")))
    a.notify_leave(info("d", 4))
    a.user_event("e1", b"p")
    a.user_event("e2")
    state = a.local_state(join=False)
    pp = decode_message(state)
    assert isinstance(pp, PushPull) and len(pp.events) == 512 and pp.left_members == ("d",)
    b.merge_remote_state(state, join=False)
    assert b.clock.time() >= a.clock.time()
    assert [e.name for e in of(b.drain(), UserEvent)] == ["e1", "e2"]
    b.merge_remote_state(state, join=False)
    assert of(b.drain(), UserEvent) == []
    # c and d are not known to b's SWIM yet: their intents wait for it
    b.notify_join(info("c", 3))
    b.notify_join(info("d", 4))
    assert b.members.members["c"].status_ltime == 40
    assert b.members.members["d"].member.status is MemberStatus.LEAVING


def test_join_ignoring_old_events() -> None:
    a, b = make(), make("b", 2)
    a.user_event("old")
    b.ignore_old_events = True
    b.merge_remote_state(a.local_state(join=True), join=True)
    assert of(b.drain(), UserEvent) == []


def test_junk_from_the_network_is_dropped() -> None:
    a = make()
    rnd = random.Random(3)
    seeds = [encode_message(m) for m in (Join(1, "x"), Leave(2, "y", True),
                                         UserEventMessage(3, "e", b"p"))]
    seeds.append(a.local_state(False))
    for _ in range(2000):
        data = bytearray(rnd.choice(seeds))
        data[rnd.randrange(len(data))] = rnd.randrange(256)
        a.notify_message(bytes(data[:rnd.randrange(1, len(data) + 1)]))
        a.merge_remote_state(bytes(data), join=bool(rnd.getrandbits(1)))
    assert a.dropped_messages > 0


# --- internal queries ---------------------------------------------------------------------------

class FakeKeyring:
    def __init__(self, *keys: bytes) -> None:
        self.keys = list(keys)

    def add_key(self, key: bytes) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("key size must be 16, 24 or 32 bytes")
        if key not in self.keys:
            self.keys.append(key)

    def use_key(self, key: bytes) -> None:
        if key not in self.keys:
            raise ValueError("Requested key is not in the keyring")
        self.keys.remove(key)
        self.keys.insert(0, key)

    def remove_key(self, key: bytes) -> None:
        if self.keys and key == self.keys[0]:
            raise ValueError("Removing the primary key is not allowed")
        if key in self.keys:
            self.keys.remove(key)

    @property
    def primary_key(self) -> bytes | None:
        return self.keys[0] if self.keys else None


def _ring_pair(ring_a, ring_b):
    a, b = make(), make("b", 2)
    a.keyring, b.keyring = ring_a, ring_b
    a.notify_join(info("b", 2))
    b.notify_join(info("a"))
    a.drain(), b.drain()
    return a, b


def _run_key_query(a: Serf, b: Serf, op: str, key: bytes = b"") -> KeyringSummary:
    handle = start_key_query(a, op, key)
    summary = KeyringSummary(num_nodes=a.num_nodes())
    gossip(a, b)
    for send in of(b.drain(), SendTo):
        a.notify_message(send.payload)
    for reply in of(a.drain(), QueryReply):
        summary.add(reply.source, reply.payload)
    assert handle.responses
    return summary


def test_keyring_rotation_queries() -> None:
    k1, k2 = bytes([1]) * 32, bytes([2]) * 16
    a, b = _ring_pair(FakeKeyring(k1), FakeKeyring(k1))
    assert _run_key_query(a, b, "install-key", k2).error() is None
    assert b.keyring.keys == [k1, k2] and a.keyring.keys == [k1, k2]
    assert _run_key_query(a, b, "use-key", k2).error() is None
    summary = _run_key_query(a, b, "list-keys")
    assert summary.keys == {base64.b64encode(k2).decode(): 2, base64.b64encode(k1).decode(): 2}
    assert summary.primary_keys == {base64.b64encode(k2).decode(): 2}
    bad = _run_key_query(a, b, "remove-key", k2)
    assert bad.error() == "2/2 nodes reported failure"
    assert bad.messages["b"] == "Removing the primary key is not allowed"


def test_key_queries_without_encryption_report_it() -> None:
    a, b = _ring_pair(None, None)
    summary = _run_key_query(a, b, "list-keys")
    assert summary.messages == {"a": "Keyring is empty (encryption not enabled)",
                                "b": "Keyring is empty (encryption not enabled)"}


def test_conflict_query_answers_with_the_member_we_know() -> None:
    a, b = _ring_pair(None, None)
    b.notify_join(info("c", 3))
    a.query("_serf_conflict", b"c")
    gossip(a, b)
    (send,) = of(b.drain(), SendTo)
    reply = decode_message(send.payload)
    conflict = decode_message(reply.payload)
    assert isinstance(conflict, ConflictResponse)
    assert conflict.member.name == "c" and conflict.member.addr == bytes([10, 0, 0, 3])


# --- tags ---------------------------------------------------------------------------------------

def test_waypost_never_advertises_role_consul() -> None:
    server = waypost_agent_tags(node_id="id", datacenter="dc1", server=True, server_port=8300)
    client = waypost_agent_tags(node_id="id", datacenter="dc1", server=False)
    assert server["role"] == client["role"] == "node"
    assert not is_consul_server(server)
    assert waypost_server_port(server, "dc1") == 8300
    assert waypost_server_port(server, "dc2") is None
    assert waypost_server_port(client) is None
    consul = consul_agent_tags(node_id="id", datacenter="dc1", server=True, expect=3)
    assert is_consul_server(consul) and waypost_server_port(consul) is None
    uuid = "9da67dc9-5085-08cc-89b0-a02ee12b7592"
    assert len(encode_tags(consul_agent_tags(node_id=uuid, datacenter="dc1", server=True))) < 512
    a = make(tags=server)
    assert a.node_meta(512) == encode_tags(server)


# --- a small pool -------------------------------------------------------------------------------

def test_event_reaches_every_member_of_a_lossy_pool_exactly_once() -> None:
    rnd = random.Random(5)
    nodes = [make(f"n{i}", i) for i in range(1, 31)]
    for s in nodes:
        for i, other in enumerate(nodes, 1):
            if other is not s:
                s.notify_join(info(other.name, i))
        s.drain()
    nodes[0].user_event("deploy", b"x")
    seen = {s.name: 0 for s in nodes}
    for _ in range(60):  # gossip rounds: each node piggybacks on probes to 3 random peers
        for s in nodes:
            msgs = s.broadcasts(2, 1400)
            for peer in rnd.sample(nodes, 3):
                for m in msgs:
                    if rnd.random() > 0.05:  # 5% packet loss
                        peer.notify_message(m)
        for s in nodes:
            seen[s.name] += len(of(s.drain(), UserEvent))
    assert set(seen.values()) == {1}
