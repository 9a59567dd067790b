"""The member table and memberlist's rules for changing it: aliveNode, suspectNode, deadNode,
refutation, mergeState and reaping (memberlist 0.2.2 state.go), plus the checks on values that
arrive from the network. `Swim` (agent.gossip.swim) builds on `MemberTable`, through
`Prober` (agent.gossip.probes), and adds probing, gossip and timers; this module never sends
anything itself, it queues broadcasts.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import txaio

from agent.gossip.awareness import Awareness
from agent.gossip.broadcasts import TransmitLimitedQueue
from agent.gossip.delegate import EventDelegate, NodeInfo
from agent.gossip.messages import (
    Ack, Alive, Dead, Err, IndirectPing, Message, Nack, NodeState, Ping, PushNodeState, Suspect,
    User)
from agent.gossip.suspicion import Suspicion, suspicion_timeout
from agent.gossip.swim_config import SwimConfig

txaio.use_twisted()

Address = tuple[bytes, int]
DEAD_OR_LEFT = (NodeState.DEAD, NodeState.LEFT)


@dataclass(frozen=True, slots=True)
class Member:
    """One row of the member table (memberlist's nodeState). Immutable: updates replace it,
    so simulations may share rows between many tables."""

    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: NodeState
    state_change: float
    vsn: tuple[int, ...] = ()
    # This row as push-pull carries it, made on first use: rows are immutable, and a push-pull
    # of a big pool would otherwise rebuild thousands of them (replace() does not copy it).
    _push: PushNodeState | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def address(self) -> Address:
        return (self.addr, self.port)

    @property
    def pmax(self) -> int:
        return self.vsn[1] if len(self.vsn) > 1 else 0

    def info(self) -> NodeInfo:
        return NodeInfo(self.name, self.addr, self.port, self.meta, self.state, self.vsn)

    def push_state(self) -> PushNodeState:
        push = self._push
        if push is None:
            push = PushNodeState(self.name, self.addr, self.port, self.meta, self.incarnation,
                                 self.state, self.vsn)
            object.__setattr__(self, "_push", push)
        return push


class MemberTable:
    """The table and its rules. The subclass (Swim) owns the attributes declared below and
    provides `_schedule(when, kind, key)`, which turns a suspicion deadline into a timer.

    Deliberate differences from memberlist 0.2.2: members that left are reaped like dead ones
    (0.2.2 keeps them forever); a refutation's alive is queued under the node's name, so it
    replaces a queued accusation (0.2.2 names it by address)."""

    log = txaio.make_logger()

    config: SwimConfig
    name: str
    _members: dict[str, Member]
    _order: list[str]  # probe order, reshuffled at each wrap-around
    _rng: random.Random
    _queue: TransmitLimitedQueue
    _awareness: Awareness
    _suspicions: dict[str, Suspicion]
    _events: EventDelegate | None
    _on_conflict: Callable[[NodeInfo, NodeInfo], None] | None
    _alive_filter: Callable[[NodeInfo], str | None] | None
    _incarnation: int
    _left: bool
    _leave_sent: bool

    def _schedule(self, when: float, kind: str, key: object) -> None:
        raise NotImplementedError

    @property
    def incarnation(self) -> int:
        return self._incarnation

    def estimated_nodes(self) -> int:
        """Members in the table, dead ones not yet reaped included (memberlist's estNumNodes)."""
        return len(self._order)

    def member(self, name: str) -> Member | None:
        return self._members.get(name)

    def all_members(self) -> list[Member]:
        return [self._members[n] for n in self._order]

    def members(self) -> list[NodeInfo]:
        """Alive and suspect members, this node included."""
        return [m.info() for m in self.all_members() if m.state not in DEAD_OR_LEFT]

    def num_members(self) -> int:
        return sum(1 for m in self._members.values() if m.state not in DEAD_OR_LEFT)

    # ---- the member table: memberlist's aliveNode, suspectNode, deadNode, mergeState -------

    def _alive_node(self, a: Alive, now: float, bootstrap: bool = False,
                    on_finished: Callable[[], None] | None = None) -> None:
        if self._left and a.node == self.name:
            return  # an alive about us still in flight must not undo our leave
        if len(a.vsn) >= 3 and (a.vsn[0] == 0 or a.vsn[1] == 0 or a.vsn[0] > a.vsn[1]):
            return
        if self._alive_filter is not None:
            if len(a.vsn) < 6:
                return  # a filter needs the versions to judge
            reason = self._alive_filter(NodeInfo(a.node, a.addr, a.port, a.meta,
                                                 NodeState.ALIVE, tuple(a.vsn)))
            if reason:
                self.log.warn("gossip: ignoring alive message for {node}: {reason}",
                              node=a.node, reason=reason)
                return
        member = self._members.get(a.node)
        moved = False
        if member is None:
            member = Member(a.node, a.addr, a.port, a.meta, 0, NodeState.DEAD, now,
                            tuple(a.vsn[:6]) if len(a.vsn) > 5 else ())
            self._members[a.node] = member
            # A random slot, not the end: otherwise a new node waits a full round to be probed.
            n = len(self._order)
            offset = self._rng.randrange(n) if n else 0
            self._order.append(a.node)
            self._order[offset], self._order[n] = self._order[n], self._order[offset]
        elif member.addr != a.addr or member.port != a.port:
            reclaim = (self.config.dead_node_reclaim_time > 0 and
                       now - member.state_change > self.config.dead_node_reclaim_time)
            if member.state == NodeState.LEFT or (member.state == NodeState.DEAD and reclaim):
                self.log.info("gossip: updating address of {node}", node=a.node)
                moved = True
            else:
                self._conflict(member, a)
                return
        is_local = a.node == self.name
        if a.incarnation <= member.incarnation and not is_local and not moved:
            return
        if a.incarnation < member.incarnation and is_local:
            return
        self._suspicions.pop(a.node, None)
        old_state, old_meta = member.state, member.meta
        if is_local and not bootstrap:
            # The same incarnation may come from our previous life with other meta: refute
            # unless it is exactly what we advertise.
            if (a.incarnation == member.incarnation and a.meta == member.meta
                    and tuple(a.vsn) == member.vsn):
                return
            self._refute(member, a.incarnation)
            self.log.warn("gossip: refuting an alive message about us")
            return
        self._broadcast(a.node, a, on_finished)
        member = replace(member, incarnation=a.incarnation, meta=a.meta, addr=a.addr,
                         port=a.port, vsn=tuple(a.vsn[:6]) if a.vsn else member.vsn,
                         state=NodeState.ALIVE,
                         state_change=member.state_change if member.state == NodeState.ALIVE
                         else now)
        self._members[a.node] = member
        if old_state in DEAD_OR_LEFT:
            self._notify_join(member)
        elif old_meta != member.meta:
            self._notify_update(member)

    def _suspect_node(self, s: Suspect, now: float) -> None:
        member = self._members.get(s.node)
        if member is None or s.incarnation < member.incarnation:
            return
        suspicion = self._suspicions.get(s.node)
        if suspicion is not None:
            # New confirmations are re-gossiped, so they keep flowing even when the node is
            # probed by members that already suspect it.
            if suspicion.confirm(s.source, now):
                self._broadcast(s.node, s)
                self._schedule(suspicion.deadline, "suspect", s.node)
            return
        if member.state != NodeState.ALIVE:
            return
        if s.node == self.name:
            self._refute(member, s.incarnation)
            self.log.warn("gossip: refuting a suspect message from {source}", source=s.source)
            return
        self._broadcast(s.node, s)
        self._members[s.node] = replace(member, incarnation=s.incarnation,
                                        state=NodeState.SUSPECT, state_change=now)
        cfg = self.config
        # Aim for the nominal timeout two probe rounds short of suspicion_mult; expect no
        # confirmations when there are not enough other members to give them.
        k = cfg.suspicion_mult - 2
        n = self.estimated_nodes()
        if n - 2 < k:
            k = 0
        low = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        suspicion = Suspicion(s.source, k, low, cfg.suspicion_max_timeout_mult * low, now)
        self._suspicions[s.node] = suspicion
        self._schedule(suspicion.deadline, "suspect", s.node)

    def _suspicion_expired(self, name: str, now: float) -> None:
        suspicion = self._suspicions.pop(name)
        member = self._members.get(name)
        if (member is not None and member.state == NodeState.SUSPECT
                and member.state_change == suspicion.start):
            self.log.info("gossip: marking {node} as failed, suspect timeout reached "
                          "({n} peer confirmations)", node=name, n=suspicion.confirmations)
            self._dead_node(Dead(member.incarnation, name, self.name), now)

    def _dead_node(self, d: Dead, now: float) -> None:
        member = self._members.get(d.node)
        if member is None or d.incarnation < member.incarnation:
            return
        self._suspicions.pop(d.node, None)
        if member.state in DEAD_OR_LEFT:
            return
        if d.node == self.name:
            if not self._left:
                self._refute(member, d.incarnation)
                self.log.warn("gossip: refuting a dead message from {source}", source=d.source)
                return
            self._broadcast(d.node, d, self._leave_broadcast_done)
        else:
            self._broadcast(d.node, d)
        # A dead message from the node itself is a graceful leave.
        state = NodeState.LEFT if d.node == d.source else NodeState.DEAD
        member = replace(member, incarnation=d.incarnation, state=state, state_change=now)
        self._members[d.node] = member
        self._notify_leave(member)

    def _refute(self, me: Member, accused: int) -> None:
        inc = self._next_incarnation()
        if accused >= inc:
            inc = self._incarnation = (accused + 1) & 0xFFFFFFFF
        me = replace(me, incarnation=inc)
        self._members[me.name] = me
        self._awareness.apply_delta(1)  # being accused hints that we are the slow one
        self._broadcast(me.name, Alive(inc, me.name, me.addr, me.port, me.meta, me.vsn))

    def _merge_state(self, nodes: Iterable[PushNodeState], now: float) -> None:
        for r in nodes:
            if r.state == NodeState.ALIVE:
                self._alive_node(Alive(r.incarnation, r.name, r.addr, r.port, r.meta, r.vsn),
                                 now)
            elif r.state == NodeState.LEFT:
                self._dead_node(Dead(r.incarnation, r.name, r.name), now)
            else:
                # A peer's dead is only our suspicion: we give the node its chance to refute.
                self._suspect_node(Suspect(r.incarnation, r.name, self.name), now)

    def _reset_nodes(self, now: float) -> None:
        """At each probe wrap-around: forget members dead (or left) for longer than
        gossip_to_the_dead_time, and reshuffle the probe order."""
        limit = self.config.gossip_to_the_dead_time
        keep: list[str] = []
        for name in self._order:
            m = self._members[name]
            if (m.state in DEAD_OR_LEFT and name != self.name
                    and now - m.state_change > limit):
                del self._members[name]
            else:
                keep.append(name)
        self._rng.shuffle(keep)
        self._order = keep

    def _any_alive(self) -> bool:
        return any(m.state not in DEAD_OR_LEFT and m.name != self.name
                   for m in self._members.values())

    def _next_incarnation(self) -> int:
        self._incarnation = (self._incarnation + 1) & 0xFFFFFFFF
        return self._incarnation

    def _broadcast(self, name: str, message: Message,
                   on_finished: Callable[[], None] | None = None) -> None:
        self._queue.queue(message, name, on_finished)

    def _leave_broadcast_done(self) -> None:
        self._leave_sent = True

    def _notify_join(self, member: Member) -> None:
        if self._events is not None:
            self._events.notify_join(member.info())

    def _notify_leave(self, member: Member) -> None:
        if self._events is not None:
            self._events.notify_leave(member.info())

    def _notify_update(self, member: Member) -> None:
        if self._events is not None:
            self._events.notify_update(member.info())

    def _conflict(self, existing: Member, other: Alive) -> None:
        self.log.error("gossip: conflicting address for {node}: mine {mine}:{mport}, theirs "
                       "{theirs}:{tport}, old state {state}", node=existing.name,
                       mine=existing.addr.hex(), mport=existing.port, theirs=other.addr.hex(),
                       tport=other.port, state=existing.state.name)
        if self._on_conflict is not None:
            self._on_conflict(existing.info(), NodeInfo(other.node, other.addr, other.port,
                                                        other.meta, NodeState.ALIVE, other.vsn))


# ---- validation of values from the network ------------------------------------------------

_U32 = 0xFFFFFFFF


def _u32(v: object) -> bool:
    return type(v) is int and 0 <= v <= _U32


def _port(v: object) -> bool:
    return type(v) is int and 0 <= v <= 0xFFFF


def _ip(v: object) -> bool:
    return isinstance(v, bytes) and len(v) in (4, 16)


def _vsn(v: object) -> bool:
    if type(v) is not tuple:
        return False
    if not v:
        return True
    try:
        bytes(v)  # every element an int in [0, 255], checked in C: push-pulls carry thousands
    except (TypeError, ValueError):
        return False
    return len(v) >= 6


def valid_message(m: object) -> bool:
    """The fields SWIM relies on have the types and ranges memberlist's encoding allows."""
    match m:
        case Ping():
            return (_u32(m.seq_no) and isinstance(m.node, str) and isinstance(m.source_addr, bytes)
                    and _port(m.source_port) and isinstance(m.source_node, str)
                    and (not m.source_addr or _ip(m.source_addr)))
        case IndirectPing():
            return (_u32(m.seq_no) and _ip(m.target) and _port(m.port)
                    and isinstance(m.node, str) and isinstance(m.source_addr, bytes)
                    and (not m.source_addr or _ip(m.source_addr)) and _port(m.source_port))
        case Ack():
            return _u32(m.seq_no) and isinstance(m.payload, bytes)
        case Nack():
            return _u32(m.seq_no)
        case Suspect() | Dead():
            return (_u32(m.incarnation) and isinstance(m.node, str) and bool(m.node)
                    and isinstance(m.source, str))
        case Alive():
            return (_u32(m.incarnation) and isinstance(m.node, str) and bool(m.node)
                    and _ip(m.addr) and _port(m.port) and isinstance(m.meta, bytes)
                    and _vsn(m.vsn))
        case User():
            return isinstance(m.payload, bytes)
        case Err():
            return isinstance(m.error, str)
    return False


def valid_push_node(n: object) -> bool:
    if type(n) is not PushNodeState:
        return False
    addr, state = n.addr, n.state
    return (type(addr) is bytes and (len(addr) == 4 or len(addr) == 16)
            and type(n.name) is str and n.name != "" and _port(n.port)
            and type(n.meta) is bytes and _u32(n.incarnation)
            and type(state) in (int, NodeState) and 0 <= state <= NodeState.LEFT
            and _vsn(n.vsn))


def verify_protocol(remote: list[PushNodeState], local: Iterable[Member]) -> str:
    """memberlist's verifyProtocol: every alive member's current versions must lie within the
    range that all of them understand. Returns the problem, or "" when compatible."""
    zero = (0,) * 6
    local = list(local)
    # Pools share a handful of version vectors: work on the distinct ones.
    ranges = {n.vsn for n in remote if n.state == NodeState.ALIVE and n.vsn}
    ranges |= {m.vsn or zero for m in local if m.state == NodeState.ALIVE}
    max_pmin = max((v[0] for v in ranges), default=0)
    min_pmax = min((v[1] for v in ranges), default=255)
    max_dmin = max((v[3] for v in ranges), default=0)
    min_dmax = min((v[4] for v in ranges), default=255)
    everyone = {n.vsn or zero for n in remote} | {m.vsn or zero for m in local}
    for v in everyone:
        if max_pmin <= v[2] <= min_pmax and max_dmin <= v[5] <= min_dmax:
            continue
        name = next(x.name for x in [*remote, *local] if (x.vsn or zero) == v)
        if not max_pmin <= v[2] <= min_pmax:
            return (f"Node '{name}' protocol version ({v[2]}) is incompatible: "
                    f"[{max_pmin}, {min_pmax}]")
        return (f"Node '{name}' delegate protocol version ({v[5]}) is incompatible: "
                f"[{max_dmin}, {min_dmax}]")
    return ""
