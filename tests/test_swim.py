"""SWIM (agent.gossip.swim and its helpers): formulas against memberlist 0.2.2, single-node
behaviour with a fake clock, and whole pools in the deterministic simulator (tests/gossip_sim).

Golden numbers marked "Go" were printed by memberlist 0.2.2's own functions (suspicionTimeout,
remainingSuspicionTime, retransmitLimit, pushPullScale, TransmitLimitedQueue) built from
/usr/share/gocode with go1.19. Simulated failures name their seed; `Simulation(seed=...)`
replays them exactly.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from agent.gossip.awareness import Awareness
from agent.gossip.broadcasts import TransmitLimitedQueue, retransmit_limit
from agent.gossip.messages import (
    Ack, Alive, Dead, IndirectPing, Nack, NodeState, Ping, PushNodeState, PushPull, Suspect, User)
from agent.gossip.suspicion import Suspicion, remaining_suspicion_time, suspicion_timeout
from agent.gossip.swim import Member, SendPacket, Swim, SwimError, TcpPing
from agent.gossip.swim_config import SwimConfig, push_pull_scale
from tests.gossip_sim import NetConfig, Recorder, Simulation, address_of, estimate_size

LAN = SwimConfig.lan()

# ---- formulas against memberlist (Go) ---------------------------------------------------------

GO_SUSPICION_TIMEOUT_NS = {  # suspicionTimeout(4, n, 1s) and suspicionTimeout(6, n, 5s)
    0: (4000000000, 30000000000), 1: (4000000000, 30000000000), 2: (4000000000, 30000000000),
    5: (4000000000, 30000000000), 10: (4000000000, 30000000000), 11: (4164000000, 31230000000),
    33: (6072000000, 45540000000), 100: (8000000000, 60000000000),
    999: (11996000000, 89970000000), 1000: (12000000000, 90000000000),
    1001: (12000000000, 90000000000), 5000: (14792000000, 110940000000),
    10000: (16000000000, 120000000000),
}
GO_RETRANSMIT_LIMIT = {0: 0, 1: 4, 2: 4, 5: 4, 10: 8, 11: 8, 33: 8, 100: 12, 999: 12, 1000: 16,
                       1001: 16, 5000: 16, 10000: 20}  # retransmitLimit(4, n)
GO_PUSH_PULL_SCALE_S = {0: 30, 1: 30, 2: 30, 5: 30, 10: 30, 11: 30, 33: 60, 100: 90, 999: 180,
                        1000: 180, 1001: 180, 5000: 270, 10000: 300}  # pushPullScale(30s, n)
GO_REMAINING_NS = {  # remainingSuspicionTime(n, k, elapsed, 5.2s, 31.2s)
    (0, 2, 0.0): 31200000000, (0, 2, 1.5): 29700000000, (1, 2, 0.0): 14795000000,
    (1, 2, 1.5): 13295000000, (2, 2, 0.0): 5200000000, (2, 2, 1.5): 3700000000,
    (1, 3, 0.0): 18200000000, (1, 3, 1.5): 16700000000, (2, 3, 0.0): 10595000000,
    (2, 3, 1.5): 9095000000, (1, 1, 0.0): 5200000000, (1, 1, 1.5): 3700000000,
}


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


@pytest.mark.parametrize("n", sorted(GO_SUSPICION_TIMEOUT_NS))
def test_suspicion_timeout_matches_memberlist(n: int) -> None:
    lan, wan = GO_SUSPICION_TIMEOUT_NS[n]
    assert _ns(suspicion_timeout(4, n, 1.0)) == lan
    assert _ns(suspicion_timeout(6, n, 5.0)) == wan


def test_retransmit_limit_and_push_pull_scale_match_memberlist() -> None:
    for n, limit in GO_RETRANSMIT_LIMIT.items():
        assert retransmit_limit(4, n) == limit, n
    for n, seconds in GO_PUSH_PULL_SCALE_S.items():
        assert push_pull_scale(30.0, n) == seconds, n


def test_remaining_suspicion_time_matches_memberlist() -> None:
    for (n, k, elapsed), want in GO_REMAINING_NS.items():
        assert _ns(remaining_suspicion_time(n, k, elapsed, 5.2, 31.2)) == want, (n, k, elapsed)


def test_suspicion_deadline_shrinks_with_independent_confirmations() -> None:
    s = Suspicion("accuser", k=2, min_=5.2, max_=31.2, now=100.0)
    assert s.deadline == pytest.approx(131.2)
    assert not s.confirm("accuser", 100.5)  # the accuser's own message coming back
    assert s.confirm("b", 101.5)
    assert s.deadline == pytest.approx(101.5 + 13.295)
    assert not s.confirm("b", 101.6)  # one vote per peer
    assert s.confirm("c", 102.0)
    assert s.deadline == pytest.approx(105.2)  # k reached: the minimum, from the start
    assert not s.confirm("d", 102.1)  # enough confirmations: stop re-gossiping
    assert Suspicion("a", k=0, min_=4.0, max_=24.0, now=0.0).deadline == 4.0


def test_config_defaults_are_memberlists() -> None:
    assert (LAN.probe_interval, LAN.probe_timeout, LAN.indirect_checks, LAN.retransmit_mult,
            LAN.suspicion_mult, LAN.suspicion_max_timeout_mult, LAN.push_pull_interval,
            LAN.gossip_interval, LAN.gossip_nodes, LAN.gossip_to_the_dead_time,
            LAN.awareness_max_multiplier, LAN.udp_buffer_size) == (
        1.0, 0.5, 3, 4, 4, 6, 30.0, 0.2, 3, 30.0, 8, 1400)
    wan = SwimConfig.wan()
    assert (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult, wan.gossip_nodes,
            wan.gossip_interval, wan.push_pull_interval, wan.gossip_to_the_dead_time) == (
        5.0, 3.0, 6, 4, 0.5, 60.0, 60.0)
    local = SwimConfig.local()
    assert (local.indirect_checks, local.retransmit_mult, local.suspicion_mult,
            local.probe_timeout, local.gossip_interval) == (1, 2, 3, 0.2, 0.1)
    assert LAN.vsn() == (1, 5, 2, 2, 5, 4)


# ---- the broadcast queue ----------------------------------------------------------------------

def _sized(n: int) -> bytes:
    return bytes(n)


def test_queue_order_and_packing_match_memberlist() -> None:
    """Go: sizes 10,30,20,30,5,40 named n0..n5, then n2 again at 25; RetransmitMult 1, 10
    nodes (limit 2); four GetBroadcasts(2, 80) gave [40 30] [30 25 10 5] [40 30] [30 25 10 5]."""
    q = TransmitLimitedQueue(1, lambda: 10, len)
    for i, size in enumerate([10, 30, 20, 30, 5, 40]):
        q.queue(_sized(size), f"n{i}")
    q.queue(_sized(25), "n2")
    rounds = [[len(m) for m in q.get(2, 80)] for _ in range(4)]
    assert rounds == [[40, 30], [30, 25, 10, 5], [40, 30], [30, 25, 10, 5]]
    assert len(q) == 0


def test_queue_newer_broadcast_about_a_node_replaces_the_older() -> None:
    finished: list[str] = []
    q = TransmitLimitedQueue(4, lambda: 3, estimate_size)
    q.queue(Suspect(1, "x", "a"), "x", lambda: finished.append("suspect"))
    q.queue(Alive(2, "x", b"\x0a\0\0\1", 8301), "x", lambda: finished.append("alive"))
    assert finished == ["suspect"] and len(q) == 1
    assert q.get(2, 1400) == [Alive(2, "x", b"\x0a\0\0\1", 8301)]


def test_queue_sends_each_broadcast_retransmit_limit_times() -> None:
    finished: list[int] = []
    q = TransmitLimitedQueue(4, lambda: 10, estimate_size)  # limit 4 * ceil(log10(11)) = 8
    q.queue(Dead(1, "x", "a"), "x", lambda: finished.append(1))
    sends = 0
    while len(q):
        sends += len(q.get(2, 1400))
    assert sends == 8 == retransmit_limit(4, 10) and finished == [1]
    assert q.get(2, 10) == []  # nothing fits / nothing left


def test_queue_respects_the_byte_limit() -> None:
    q = TransmitLimitedQueue(4, lambda: 10, len)
    q.queue(_sized(100), "a")
    assert q.get(2, 101) == []  # 100 + 2 overhead does not fit in 101
    assert len(q.get(2, 102)) == 1


def test_queue_prune_drops_the_most_sent_then_smallest_and_finishes_them() -> None:
    """Serf trims its queues this way; each dropped broadcast reports that it is done."""
    done: list[int] = []
    q = TransmitLimitedQueue(4, lambda: 100, len)
    for size in (2, 4, 3):
        q.queue(_sized(size), on_finished=lambda size=size: done.append(size))
    assert [len(m) for m in q.get(1, 9)] == [4, 3]  # 5 + 4 bytes; the 2 would need 3 more
    q.queue(_sized(1), on_finished=lambda: done.append(1))
    q.prune(2)
    assert done == [3, 4] and len(q) == 2


# ---- awareness --------------------------------------------------------------------------------

def test_awareness_clamps_and_scales() -> None:
    a = Awareness(8)
    a.apply_delta(-1)
    assert a.score == 0 and a.scale(1.0) == 1.0
    a.apply_delta(3)
    assert a.score == 3 and a.scale(0.5) == 2.0
    a.apply_delta(100)
    assert a.score == 7 and a.scale(1.0) == 8.0  # at most awareness_max_multiplier


# ---- one node, fake clock ---------------------------------------------------------------------

def _member(i: int, state: NodeState = NodeState.ALIVE, inc: int = 1,
            vsn: tuple[int, ...] = LAN.vsn()) -> Member:
    return Member(f"n{i}", address_of(i), 8301, b"", inc, state, 0.0, vsn)


def _swim(peers: int = 4, config: SwimConfig = LAN, seed: int = 0) -> tuple[Swim, Recorder]:
    recorder = Recorder(Simulation(0))
    swim = Swim(config, name="n0", addr=address_of(0), port=8301, rng=random.Random(seed),
                size_of=estimate_size, events=recorder, ping_delegate=recorder)
    swim.start(0.0)
    swim.preload(0.0, [_member(i) for i in range(1, peers + 1)])
    swim.take_outputs()
    assert [e[1:3] for e in recorder.events] == [("join", "n0")]  # memberlist announces us too
    recorder.events.clear()
    return swim, recorder


def _packets(swim: Swim) -> list[SendPacket]:
    return [o for o in swim.take_outputs() if isinstance(o, SendPacket)]


def _advance_to_probe(swim: Swim) -> tuple[float, SendPacket]:
    """Advance timer by timer until the node sends a ping; (time, packet)."""
    for _ in range(100):
        now = swim.next_deadline()
        assert now is not None
        swim.advance(now)
        for packet in _packets(swim):
            if isinstance(packet.messages[0], Ping):
                return now, packet
    raise AssertionError("no probe")


def test_probe_direct_then_indirect_with_nacks_then_suspect() -> None:
    swim, _ = _swim(peers=4, config=replace(LAN, disable_tcp_pings=True))
    start, packet = _advance_to_probe(swim)
    ping = packet.messages[0]
    target = ping.node
    swim.advance(start + LAN.probe_timeout)  # no ack: ask three others, wanting nacks
    indirect = [p for p in _packets(swim) if isinstance(p.messages[0], IndirectPing)]
    # Up to indirect_checks peers, drawn at random as memberlist does (3n draws at most).
    assert 1 <= len(indirect) <= LAN.indirect_checks
    assert all(p.messages[0].nack and p.messages[0].node == target for p in indirect)
    swim.handle_packet(start + 0.7, indirect[0].to, Nack(ping.seq_no))  # one peer is healthy
    swim.advance(start + LAN.probe_interval)
    assert swim.member(target).state == NodeState.SUSPECT
    assert swim.health_score == len(indirect) - 1  # one missing nack per silent peer
    assert any(isinstance(m, Suspect) for m in swim.queue.get(2, 1400))


def test_missed_probes_stretch_the_probe_interval() -> None:
    swim, _ = _swim(peers=1, config=replace(LAN, disable_tcp_pings=True))
    start, _ = _advance_to_probe(swim)
    swim.advance(start + LAN.probe_interval)  # nobody to ask for nacks: +1
    assert swim.health_score == 1
    # The next probe waits twice as long before giving up.
    start2, packet = _advance_to_probe(swim)
    assert isinstance(packet.messages[1], Suspect)  # a suspect gets the accusation with its ping
    swim.advance(start2 + LAN.probe_interval)
    assert swim.member("n1").state == NodeState.SUSPECT  # still probing, not failed yet
    swim.handle_packet(start2 + 1.5, ("", 0), Ack(packet.messages[0].seq_no))
    assert swim.health_score == 0  # the ack came within 2 s, so the probe succeeded


def test_ack_in_time_reports_rtt_and_tcp_fallback_is_offered() -> None:
    swim, _ = _swim(peers=4)
    pings: list[float] = []
    swim._ping_delegate = type("P", (), {  # a tiny PingDelegate
        "ack_payload": lambda self: b"coord",
        "notify_ping_complete": lambda self, node, rtt, payload: pings.append(rtt)})()
    start, packet = _advance_to_probe(swim)
    swim.handle_packet(start + 0.01, packet.to, Ack(packet.messages[0].seq_no, b"c"))
    assert pings == [pytest.approx(0.01)]
    start, packet = _advance_to_probe(swim)
    swim.advance(start + LAN.probe_timeout)
    tcp = [o for o in swim.take_outputs() if isinstance(o, TcpPing)]
    assert len(tcp) == 1 and tcp[0].deadline == start + LAN.probe_interval
    swim.tcp_ping_result(start + 0.6, tcp[0].ping.seq_no, True)
    swim.advance(start + LAN.probe_interval)
    assert all(m.state == NodeState.ALIVE for m in swim.all_members())


def test_answers_pings_only_for_its_own_name_at_the_source_address() -> None:
    swim, _ = _swim()
    swim.handle_packet(1.0, (b"\1\2\3\4", 9), Ping(7, "someone-else"))
    assert _packets(swim) == []
    swim.handle_packet(1.0, (b"\1\2\3\4", 9), Ping(8, "n0", address_of(3), 8301, "n3"))
    [packet] = _packets(swim)
    assert packet.to == (address_of(3), 8301) and packet.messages[0] == Ack(8, b"")


def test_indirect_ping_relays_the_ack_or_sends_a_nack() -> None:
    swim, _ = _swim()
    requester = (address_of(2), 8301)
    swim.handle_packet(1.0, requester, IndirectPing(41, address_of(3), 8301, "n3", True))
    [ping] = _packets(swim)
    assert ping.to == (address_of(3), 8301) and ping.messages[0].node == "n3"
    swim.handle_packet(1.1, ping.to, Ack(ping.messages[0].seq_no))
    assert _packets(swim)[0].messages[0] == Ack(41)
    swim.handle_packet(2.0, requester, IndirectPing(42, address_of(4), 8301, "n4", True))
    _packets(swim)
    swim.advance(2.0 + LAN.probe_timeout)
    sent = [m for p in _packets(swim) for m in p.messages]
    assert Nack(42) in sent


def test_refutes_suspicion_about_itself() -> None:
    swim, _ = _swim()
    swim.handle_packet(1.0, ("", 0), Suspect(1, "n0", "n2"))
    assert swim.incarnation == 2 and swim.health_score == 1
    assert swim.member("n0").state == NodeState.ALIVE
    alive = [m for m in swim.queue.get(2, 1400) if isinstance(m, Alive)]
    assert alive and alive[0].incarnation == 2 and alive[0].node == "n0"
    swim.handle_packet(1.0, ("", 0), Dead(7, "n0", "n2"))  # beats any accused incarnation
    assert swim.incarnation == 8


def test_dead_message_from_the_node_itself_means_left() -> None:
    swim, rec = _swim()
    swim.handle_packet(1.0, ("", 0), Dead(1, "n1", "n1"))
    swim.handle_packet(1.0, ("", 0), Dead(1, "n2", "n3"))
    assert swim.member("n1").state == NodeState.LEFT
    assert swim.member("n2").state == NodeState.DEAD
    assert [(e[1], e[2], e[3]) for e in rec.events] == [
        ("leave", "n1", NodeState.LEFT), ("leave", "n2", NodeState.DEAD)]


def test_conflicting_address_for_a_live_name_is_refused() -> None:
    conflicts = []
    swim, rec = _swim()
    swim._on_conflict = lambda mine, theirs: conflicts.append((mine.addr, theirs.addr))
    swim.handle_packet(1.0, ("", 0), Alive(5, "n1", b"\x7f\0\0\1", 8301, b"", LAN.vsn()))
    assert swim.member("n1").addr == address_of(1) and swim.member("n1").incarnation == 1
    assert conflicts == [(address_of(1), b"\x7f\0\0\1")]
    swim.handle_packet(1.0, ("", 0), Dead(1, "n1", "n1"))  # once left, the name may move
    swim.handle_packet(2.0, ("", 0), Alive(2, "n1", b"\x7f\0\0\1", 8301, b"", LAN.vsn()))
    assert swim.member("n1").addr == b"\x7f\0\0\1"
    assert rec.events[-1][1:3] == ("join", "n1")


def test_alive_with_new_meta_is_an_update() -> None:
    swim, rec = _swim()
    swim.handle_packet(1.0, ("", 0), Alive(2, "n1", address_of(1), 8301, b"tags", LAN.vsn()))
    assert rec.events[-1][1:3] == ("update", "n1")
    swim.handle_packet(1.0, ("", 0), Alive(2, "n1", address_of(1), 8301, b"x", LAN.vsn()))
    assert swim.member("n1").meta == b"tags"  # same incarnation: old news


def test_merge_push_pull_prefers_suspicion_to_a_peers_dead() -> None:
    swim, _ = _swim()
    remote = PushPull((PushNodeState("n1", address_of(1), 8301, b"", 1, NodeState.DEAD,
                                     LAN.vsn()),
                       PushNodeState("n9", address_of(9), 8301, b"", 3, NodeState.ALIVE,
                                     LAN.vsn())))
    swim.merge_push_pull(1.0, remote)
    assert swim.member("n1").state == NodeState.SUSPECT
    assert swim.member("n9").state == NodeState.ALIVE
    assert len(swim.local_push_pull(False).nodes) == 6


def test_merge_refuses_incompatible_protocol_versions() -> None:
    swim, _ = _swim()
    bad = PushPull((PushNodeState("n9", address_of(9), 8301, b"", 1, NodeState.ALIVE,
                                  (1, 5, 2, 2, 5, 1)),))  # delegate version 1 below Serf's min
    with pytest.raises(SwimError, match="delegate protocol version"):
        swim.merge_push_pull(1.0, bad)
    assert swim.member("n9") is None


@pytest.mark.parametrize("message", [
    Alive(1, "x", b"\1\2\3", 8301),  # address of 3 bytes
    Alive(1, "x", address_of(1), 8301, b"", (1, 5)),  # short vsn
    Alive(-1, "x", address_of(1), 8301),
    Alive(1, "", address_of(1), 8301),
    Suspect(2 ** 32, "n1", "n2"),
    Dead(1, None, "n2"),  # type: ignore[arg-type]
    Ping("1", "n0"),  # type: ignore[arg-type]
    IndirectPing(1, b"", 8301, "n1"),
    Ack(1, "text"),  # type: ignore[arg-type]
    User("text"),  # type: ignore[arg-type]
    PushPull(()),  # push-pull never arrives as a packet part
    "garbage",
])
def test_malformed_messages_are_dropped_and_counted(message: object) -> None:
    swim, _ = _swim()
    swim.handle_packet(1.0, ("", 0), message)  # type: ignore[arg-type]
    assert swim.dropped == 1 and swim.take_outputs() == []
    bad_node = PushNodeState("x", b"\1", 1, b"", 1, NodeState.ALIVE, LAN.vsn())
    swim.merge_push_pull(1.0, PushPull((bad_node,)))
    assert swim.dropped == 2 and swim.member("x") is None


# ---- whole pools in the simulator ---------------------------------------------------------------

def _detection_bound(n: int, config: SwimConfig) -> float:
    """The worst case from the config for every member to mark a crashed one dead: it is probed
    by some member within two rounds of the round-robin (a reshuffle may push it to the end),
    the probe takes one probe interval, and every member's suspicion timer runs at most
    suspicion_max_timeout_mult * suspicion_timeout(n); allow a second for gossip."""
    low = suspicion_timeout(config.suspicion_mult, n, config.probe_interval)
    return (2 * (n - 1) * config.probe_interval + config.probe_interval
            + config.suspicion_max_timeout_mult * low + 1.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_detects_a_failed_member_within_the_bound(seed: int) -> None:
    sim = Simulation(seed)
    n = 20
    nodes = sim.add_converged_pool(n)
    sim.run_for(5.0)
    crashed = nodes[7].name
    sim.crash(crashed)
    t0 = sim.now
    low = suspicion_timeout(LAN.suspicion_mult, n, LAN.probe_interval)
    assert sim.run_for(_detection_bound(n, LAN), lambda: sim.all_see(crashed, NodeState.DEAD)), sim
    took = sim.now - t0
    assert took >= low, sim  # nobody declared it dead before the minimum suspicion timeout
    # With confirmations from other probers the timers fall towards the minimum: in a healthy
    # pool it takes the first probe, one probe interval and about the minimum timeout.
    assert took < low + n * LAN.probe_interval / 2, (sim, took)
    for node in sim.live_nodes():
        assert [e[3] for e in node.recorder.events if e[2] == crashed] == [NodeState.DEAD], sim


def test_no_false_positives_at_5_percent_packet_loss() -> None:
    config = replace(LAN, disable_tcp_pings=True)  # UDP only: the hard case
    sim = Simulation(seed=5, config=config, net=NetConfig(loss=0.05, duplicate=0.01))
    sim.add_converged_pool(30)
    sim.run_for(300.0)
    deaths = [(n.name, e) for n in sim.nodes.values() for e in n.recorder.events
              if e[1] == "leave"]
    assert deaths == [], sim
    assert sim.stats.sent_by_type["Suspect"] > 0  # suspicions happened, and were refuted
    assert max(n.swim.incarnation for n in sim.nodes.values()) > 1
    assert sim.converged(), sim


def test_refutation_of_a_false_suspicion() -> None:
    sim = Simulation(seed=7)
    sim.add_converged_pool(10)
    sim.run_for(2.0)
    sim.inject("node-3", Suspect(1, "node-6", "node-3"))  # node-3 wrongly suspects node-6
    assert sim.state_of("node-3", "node-6") == NodeState.SUSPECT
    assert sim.run_for(10.0, lambda: all(
        (m := n.swim.member("node-6")) is not None and m.state == NodeState.ALIVE
        and m.incarnation >= 2 for n in sim.live_nodes())), sim
    assert sim.nodes["node-6"].swim.incarnation == 2
    sim.run_for(60.0)
    assert sim.all_see("node-6", NodeState.ALIVE), sim
    assert not any(e[1] == "leave" for n in sim.nodes.values() for e in n.recorder.events), sim


def test_leave_is_seen_as_left_not_failed() -> None:
    sim = Simulation(seed=8)
    sim.add_converged_pool(12)
    sim.run_for(2.0)
    leaver = sim.nodes["node-4"]
    leaver.swim.leave(sim.now)
    sim._flush(leaver)
    assert sim.run_for(10.0, lambda: leaver.swim.leave_complete), sim
    sim.crash("node-4")  # shut down once the leave went out
    assert sim.run_for(5.0, lambda: sim.all_see("node-4", NodeState.LEFT)), sim
    sim.run_for(30.0)
    assert sim.all_see("node-4", NodeState.LEFT), sim
    for node in sim.live_nodes():
        assert [e[3] for e in node.recorder.events if e[2] == "node-4"] == [NodeState.LEFT]


def test_join_via_push_pull_converges_on_a_lossy_reordering_network() -> None:
    sim = Simulation(seed=9, net=NetConfig(loss=0.02, max_delay=0.05, duplicate=0.05))
    seed_node = sim.add_node()
    for i in range(15):
        sim.add_node(join=[seed_node.name])
        sim.run_for(0.3)
    assert sim.run_for(30.0, sim.converged), sim
    for node in sim.nodes.values():
        assert {e[2] for e in node.recorder.events if e[1] == "join"} == set(sim.nodes)


def test_crashed_member_restarts_and_rejoins() -> None:
    sim = Simulation(seed=10)
    sim.add_converged_pool(8)
    sim.crash("node-2")
    assert sim.run_for(60.0, lambda: sim.all_see("node-2", NodeState.DEAD)), sim
    restarted = sim.restart("node-2", join=["node-0"])
    # It learns it was declared dead at incarnation 1 and refutes with a higher one.
    assert sim.run_for(10.0, sim.converged), sim
    assert restarted.swim.incarnation >= 2


def test_dead_members_are_reaped_after_gossip_to_the_dead_time() -> None:
    config = replace(LAN, gossip_to_the_dead_time=10.0)
    sim = Simulation(seed=11, config=config)
    sim.add_converged_pool(6)
    sim.crash("node-1")
    assert sim.run_for(60.0, lambda: sim.all_see("node-1", NodeState.DEAD)), sim
    dead_at = sim.now
    sim.run_for(config.gossip_to_the_dead_time - 1.0)
    assert all(n.swim.member("node-1") is not None for n in sim.live_nodes())
    # Reaped at the next probe wrap-around after the time is up (one round: n probe intervals).
    assert sim.run_for(2.0 + 6 * config.probe_interval,
                       lambda: sim.all_see("node-1", None)), sim
    assert sim.now - dead_at > config.gossip_to_the_dead_time


def test_partitioned_members_are_declared_dead_on_both_sides() -> None:
    sim = Simulation(seed=12)
    nodes = sim.add_converged_pool(8)
    names = [n.name for n in nodes]
    sim.partition(names[:4], names[4:])
    assert sim.run_for(60.0, lambda: all(
        sim.state_of(a, b) == NodeState.DEAD and sim.state_of(b, a) == NodeState.DEAD
        for a in names[:4] for b in names[4:])), sim
    assert all(sim.state_of(a, b) == NodeState.ALIVE for a in names[:4] for b in names[:4])


def test_same_seed_replays_exactly() -> None:
    def run() -> tuple[object, ...]:
        sim = Simulation(seed=13, net=NetConfig(loss=0.1, duplicate=0.1))
        sim.add_converged_pool(10)
        sim.crash("node-3")
        sim.run_for(30.0)
        return (sim.stats.packets, sim.stats.bytes,
                tuple(tuple(n.recorder.events) for n in sim.nodes.values()))
    assert run() == run()


def test_convergence_in_a_1000_member_pool() -> None:
    """A new member joins a converged pool of 1,000 through one push-pull; its alive
    broadcast must reach everyone, then a crash must be seen by everyone."""
    sim = Simulation(seed=14)
    pool = sim.add_converged_pool(1000)
    new = sim.add_node(join=[pool[0].name])
    t0 = sim.now
    assert sim.run_for(30.0, lambda: sim.all_see(new.name, NodeState.ALIVE)), sim
    join_rounds = (sim.now - t0) / LAN.gossip_interval
    crashed = pool[500].name
    sim.crash(crashed)
    t1 = sim.now
    bound = _detection_bound(1001, LAN)
    assert sim.run_for(bound, lambda: sim.all_see(crashed, NodeState.DEAD)), sim
    print(f"\n1000 members: join seen by all in {join_rounds:.0f} gossip rounds; "
          f"failure seen by all in {sim.now - t1:.1f} s "
          f"(min suspicion {suspicion_timeout(4, 1001, 1.0):.1f} s)")
    assert join_rounds <= 20


def test_alive_and_merge_filters_can_veto() -> None:
    """Serf installs memberlist's Alive and Merge delegates when Consul gives it a merge
    delegate (it refuses members of another datacenter); a veto leaves the table alone."""
    swim, _ = _swim()
    swim._alive_filter = lambda node: "other dc" if node.meta == b"dc2" else None
    swim._merge_filter = lambda nodes: "other dc" if any(n.meta == b"dc2" for n in nodes) else None
    swim.handle_packet(1.0, ("", 0), Alive(1, "x", address_of(9), 8301, b"dc2", LAN.vsn()))
    swim.handle_packet(1.0, ("", 0), Alive(1, "y", address_of(8), 8301, b"", ()))  # no vsn
    assert swim.member("x") is None and swim.member("y") is None
    joining = PushPull((PushNodeState("z", address_of(7), 8301, b"dc2", 1, NodeState.ALIVE,
                                      LAN.vsn()),), join=True)
    with pytest.raises(SwimError, match="other dc"):
        swim.merge_push_pull(1.0, joining)
    swim.handle_packet(1.0, ("", 0), Alive(1, "w", address_of(6), 8301, b"dc1", LAN.vsn()))
    assert swim.member("w").state == NodeState.ALIVE
