"""SWIM's failure detector (memberlist 0.2.2 probeNode and its handlers): the probe round
over a shuffled member order, a direct ping, then indirect pings through `indirect_checks`
peers (with nacks from protocol 4 on) and the TCP fallback ping, Lifeguard's awareness deltas,
and suspicion when nothing answered; plus the other side, answering pings and relaying
indirect ones. `Prober` sits between `MemberTable` and `Swim`, which owns the timers, the
sending and the attributes declared below.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.gossip.delegate import PingDelegate
from agent.gossip.membership import DEAD_OR_LEFT, Address, Member, MemberTable
from agent.gossip.messages import Ack, IndirectPing, Message, Nack, NodeState, Ping, Suspect
from agent.gossip.outputs import Output, SendPacket, TcpPing


class _Probe:
    __slots__ = ("seq", "target", "sent", "timeout_at", "end_at", "indirect",
                 "expected_nacks", "nacks", "tcp_ok")

    def __init__(self, seq: int, target: Member, sent: float, timeout_at: float,
                 end_at: float) -> None:
        self.seq = seq
        self.target = target
        self.sent = sent
        self.timeout_at = timeout_at
        self.end_at = end_at
        self.indirect = False
        self.expected_nacks = 0
        self.nacks = 0
        self.tcp_ok = False


class _Relay:
    """An indirect ping we forward: relay the target's ack, or nack when it stays silent."""

    __slots__ = ("expires", "to", "seq", "nack")

    def __init__(self, expires: float, to: Address, seq: int, nack: bool) -> None:
        self.expires = expires
        self.to = to
        self.seq = seq
        self.nack = nack


class Prober(MemberTable):
    """Probing for `Swim`, which provides `_send`, `_random_members` and `_next_seq` and calls
    `_probe_round` on each probe tick."""

    addr: bytes
    port: int
    _outbox: list[Output]
    _ping_delegate: PingDelegate | None
    _probe_index: int
    _probe: _Probe | None
    _probe_tick_pending: bool
    _relays: dict[int, _Relay]

    def _send(self, to: Address, message: Message) -> None:
        raise NotImplementedError

    def _random_members(self, k: int, skip: Callable[[Member], bool]) -> list[Member]:
        raise NotImplementedError

    def _next_seq(self) -> int:
        raise NotImplementedError

    def tcp_ping_result(self, now: float, seq_no: int, contacted: bool) -> None:
        """The outcome of a `TcpPing` output."""
        probe = self._probe
        if contacted and probe is not None and probe.seq == seq_no and now <= probe.end_at:
            probe.tcp_ok = True

    def _probe_timer_live(self, when: float, kind: str, key: object) -> bool:
        """Whether a "probe" or "relay" timer is still current."""
        if kind == "probe":
            probe = self._probe
            return probe is not None and probe.seq == key and when == (
                probe.end_at if probe.indirect else probe.timeout_at)
        relay = self._relays.get(key)  # type: ignore[arg-type]
        return relay is not None and relay.expires == when

    def _fire_probe_timer(self, when: float, kind: str, key: object) -> None:
        if kind == "probe":
            self._probe_stage(when)
            return
        relay = self._relays.pop(key)  # type: ignore[call-overload]
        if relay.nack:
            self._send(relay.to, Nack(relay.seq))

    def _probe_round(self, now: float) -> None:
        target = self._next_probe_target(now)
        if target is None:
            return
        cfg = self.config
        interval = self._awareness.scale(cfg.probe_interval)
        seq = self._next_seq()
        ping = Ping(seq, target.name, self.addr, self.port, self.name)
        end = now + interval
        self._probe = probe = _Probe(seq, target, now, min(now + cfg.probe_timeout, end), end)
        if target.state == NodeState.ALIVE:
            self._send(target.address, ping)
        else:
            # A suspect gets the accusation along with the ping, so it can refute at once.
            suspect = Suspect(target.incarnation, target.name, self.name)
            self._outbox.append(SendPacket(target.address, (ping, suspect), target.pmax >= 5))
        self._schedule(probe.timeout_at, "probe", seq)

    def _next_probe_target(self, now: float) -> Member | None:
        checked = 0
        while checked < len(self._order):
            if self._probe_index >= len(self._order):
                self._reset_nodes(now)
                self._probe_index = 0
                checked += 1
                continue
            member = self._members[self._order[self._probe_index]]
            self._probe_index += 1
            if member.name == self.name or member.state in DEAD_OR_LEFT:
                checked += 1
                continue
            return member
        return None

    def _probe_stage(self, now: float) -> None:
        probe = self._probe
        assert probe is not None
        if not probe.indirect:
            probe.indirect = True
            self._indirect_probe(probe)
            self._schedule(probe.end_at, "probe", probe.seq)
            return
        if probe.tcp_ok:
            self.log.warn("gossip: reached {node} over TCP but not over UDP; the network may be "
                          "misconfigured", node=probe.target.name)
            self._end_probe(now, -1)
            return
        delta = (max(probe.expected_nacks - probe.nacks, 0) if probe.expected_nacks else 1)
        self.log.info("gossip: suspect {node} has failed, no acks received",
                      node=probe.target.name)
        target = probe.target
        self._end_probe(now, delta, then_probe=False)
        self._suspect_node(Suspect(target.incarnation, target.name, self.name), now)
        self._resume_probing(now)

    def _indirect_probe(self, probe: _Probe) -> None:
        target = probe.target
        peers = self._random_members(self.config.indirect_checks, lambda m: (
            m.name == self.name or m.name == target.name or m.state != NodeState.ALIVE))
        for peer in peers:
            nack = peer.pmax >= 4  # nacks exist from protocol 4 on
            probe.expected_nacks += nack
            self._send(peer.address, IndirectPing(probe.seq, target.addr, target.port,
                                                  target.name, nack, self.addr, self.port,
                                                  self.name))
        if not self.config.disable_tcp_pings and target.pmax >= 3:
            ping = Ping(probe.seq, target.name, self.addr, self.port, self.name)
            self._outbox.append(TcpPing(target.address, ping, probe.end_at))

    def _end_probe(self, now: float, awareness_delta: int, then_probe: bool = True) -> None:
        self._awareness.apply_delta(awareness_delta)
        self._probe = None
        if then_probe:
            self._resume_probing(now)

    def _resume_probing(self, now: float) -> None:
        if self._probe_tick_pending and self._probe is None:
            self._probe_tick_pending = False
            self._probe_round(now)

    def _on_ping(self, now: float, source: Address, ping: Ping) -> None:
        if ping.node and ping.node != self.name:
            return  # meant for a node that used to live at this address
        payload = self._ping_delegate.ack_payload() if self._ping_delegate else b""
        to = (ping.source_addr, ping.source_port) if (
            ping.source_addr and ping.source_port > 0) else source
        self._send(to, Ack(ping.seq_no, payload))

    def _on_indirect_ping(self, now: float, source: Address, ind: IndirectPing) -> None:
        seq = self._next_seq()
        requester = (ind.source_addr, ind.source_port) if (
            ind.source_addr and ind.source_port > 0) else source
        expires = now + self.config.probe_timeout
        self._relays[seq] = _Relay(expires, requester, ind.seq_no, ind.nack)
        self._schedule(expires, "relay", seq)
        port = ind.port or self.port
        self._send((ind.target, port),
                   Ping(seq, ind.node, self.addr, self.port, self.name))

    def _on_ack(self, now: float, ack: Ack) -> None:
        relay = self._relays.pop(ack.seq_no, None)
        if relay is not None:
            self._send(relay.to, Ack(relay.seq))
            return
        probe = self._probe
        if probe is None or probe.seq != ack.seq_no:
            return
        if not probe.indirect and self._ping_delegate is not None:
            self._ping_delegate.notify_ping_complete(probe.target.info(), now - probe.sent,
                                                     ack.payload)
        self._end_probe(now, -1)

    def _on_nack(self, nack: Nack) -> None:
        probe = self._probe
        if probe is not None and probe.seq == nack.seq_no:
            probe.nacks = min(probe.nacks + 1, self.config.indirect_checks + 1)
