"""SWIM with Lifeguard as a pure state machine: memberlist 0.2.2's behaviour, no sockets, no clock.

`Swim` owns the member table and decides everything memberlist decides: whom to probe and when,
indirect probes with nacks, suspicion and its Lifeguard timeout, refutation by incarnation,
dead and left, reaping, gossip of piggybacked broadcasts, push-pull and the merge of remote state.

The adapter drives it:
- `start(now)` once, then `advance(now)` whenever `next_deadline()` is reached;
- `handle_packet(now, source, message)` for every decoded message of a UDP packet
  (the parts of a compound one by one);
- `join(now, addresses)` to join a pool (push-pulls with `join=True`);
- for each `StartPushPull` output: send `local_push_pull(join)` over a stream and hand the
  answer to `merge_push_pull(now, remote)`; when answering one, reply with
  `local_push_pull(remote.join)` and then merge;
- for each `TcpPing` output (optional; `SwimConfig.disable_tcp_pings`), report the outcome with
  `tcp_ping_result(now, seq_no, contacted)`;
- after each call, `take_outputs()` and send the `SendPacket`s (one message as is, several as a
  compound; `crc` asks for memberlist's CRC envelope).

Every decision that needs randomness uses the injected `random.Random`; every decision that
needs time uses the `now` passed in (seconds), so a seeded run replays exactly.

The member table and memberlist's rules for it live in agent.gossip.membership (`MemberTable`),
probing and its handlers in agent.gossip.probes (`Prober`, which extends it and which `Swim`
extends), the outputs in agent.gossip.outputs; this module adds the timers, gossip, push-pull
and the inputs.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import replace

from agent.errors import WaypostError
from agent.gossip.awareness import Awareness
from agent.gossip.broadcasts import TransmitLimitedQueue
from agent.gossip.delegate import Delegate, EventDelegate, NodeInfo, PingDelegate
from agent.gossip.membership import (
    Address, Member, valid_message, valid_push_node, verify_protocol)
from agent.gossip.messages import (
    META_MAX_SIZE, Ack, Alive, Dead, Err, IndirectPing, Message, Nack, NodeState, Ping,
    PushPull, Suspect, User)
from agent.gossip.outputs import Output, SendPacket, StartPushPull, TcpPing
from agent.gossip.probes import Prober
from agent.gossip.suspicion import Suspicion
from agent.gossip.swim_config import (
    COMPOUND_HEADER_OVERHEAD, COMPOUND_OVERHEAD, USER_MSG_OVERHEAD, SwimConfig, push_pull_scale)


class SwimError(WaypostError):
    """A remote state this node refuses to merge (incompatible protocol versions)."""


class Swim(Prober):
    """One member's SWIM. `alive_filter` (memberlist's AliveDelegate) may veto an alive message
    by returning a reason; `merge_filter` (its MergeDelegate) may veto a joining push-pull;
    `on_conflict` hears of another node claiming a live member's name (ConflictDelegate)."""

    def __init__(self, config: SwimConfig, *, name: str, addr: bytes, port: int,
                 rng: random.Random, size_of: Callable[[Message], int],
                 delegate: Delegate | None = None, events: EventDelegate | None = None,
                 ping_delegate: PingDelegate | None = None,
                 on_conflict: Callable[[NodeInfo, NodeInfo], None] | None = None,
                 alive_filter: Callable[[NodeInfo], str | None] | None = None,
                 merge_filter: Callable[[list[NodeInfo]], str | None] | None = None) -> None:
        self.config = config
        self.name = name
        self.addr = addr
        self.port = port
        self._rng = rng
        self._size_of = size_of
        self._delegate = delegate
        self._events = events
        self._ping_delegate = ping_delegate
        self._on_conflict = on_conflict
        self._alive_filter = alive_filter
        self._merge_filter = merge_filter
        self._members: dict[str, Member] = {}
        self._order: list[str] = []  # probe order, reshuffled at each wrap-around
        self._probe_index = 0
        self._seq = 0
        self._incarnation = 0
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._queue = TransmitLimitedQueue(config.retransmit_mult, self.estimated_nodes, size_of)
        self._suspicions: dict[str, Suspicion] = {}
        self._relays = {}  # (the probe attributes are declared on Prober)
        self._probe = None
        self._probe_tick_pending = False
        self._ticks: dict[str, float] = {}
        self._timers: list[tuple[float, int, str, object]] = []
        self._counter = itertools.count()
        self._outbox: list[Output] = []
        self._left = False
        self._leave_sent = False
        self._started = False
        self.dropped = 0  # messages dropped as malformed

    # ---- driving ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Become alive (incarnation 1) and start the probe, gossip and push-pull timers, each
        at a random offset within its period so that members do not synchronise."""
        if self._started:
            return
        self._started = True
        self._advertise(now, self.addr, self.port)
        cfg = self.config
        for tick, period in (("probe", cfg.probe_interval), ("gossip", cfg.gossip_interval),
                             ("push_pull", cfg.push_pull_interval)):
            if period > 0:
                self._set_tick(tick, now + self._rng.random() * period)

    def next_deadline(self) -> float | None:
        """When `advance` must next be called (None before `start`)."""
        timers = self._timers
        while timers and not self._live(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def advance(self, now: float) -> None:
        """Run every timer due at or before `now`, in time order."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if self._live(entry):
                self._fire(entry[0], entry[2], entry[3])

    def handle_packet(self, now: float, source: Address, message: Message) -> None:
        """One decoded message that arrived by UDP from `source`. Malformed values are dropped
        (and counted in `dropped`), never raised."""
        if not valid_message(message):
            self.dropped += 1
            return
        match message:
            case Ping():
                self._on_ping(now, source, message)
            case IndirectPing():
                self._on_indirect_ping(now, source, message)
            case Ack():
                self._on_ack(now, message)
            case Nack():
                self._on_nack(message)
            case Suspect():
                self._suspect_node(message, now)
            case Alive():
                if message.port == 0:  # pre-protocol-2 senders leave the port out
                    message = replace(message, port=self.port)
                self._alive_node(message, now)
            case Dead():
                self._dead_node(message, now)
            case User():
                if self._delegate is not None:
                    self._delegate.notify_message(message.payload)
            case Err():
                self.log.debug("gossip: error from {source}: {error}", source=source,
                               error=message.error)
            case _:
                self.dropped += 1  # push-pull and envelopes never arrive as packet parts

    def join(self, now: float, addresses: Iterable[Address]) -> None:
        """Ask for a joining push-pull with each address."""
        for address in addresses:
            self._outbox.append(StartPushPull(address, join=True))

    def local_push_pull(self, join: bool) -> PushPull:
        """This node's full state for a push-pull."""
        members = self._members
        nodes = tuple(members[n].push_state() for n in self._order)
        user = self._delegate.local_state(join) if self._delegate else b""
        return PushPull(nodes, user or b"", join)

    def merge_push_pull(self, now: float, remote: PushPull) -> None:
        """Merge a peer's push-pull state; raises SwimError if its versions are incompatible."""
        nodes = [n for n in remote.nodes if valid_push_node(n)]
        self.dropped += len(remote.nodes) - len(nodes)
        problem = verify_protocol(nodes, self._members.values())
        if not problem and remote.join and self._merge_filter is not None:
            problem = self._merge_filter([NodeInfo(n.name, n.addr, n.port, n.meta, n.state, n.vsn)
                                          for n in nodes]) or ""
        if problem:
            raise SwimError(problem)
        self._merge_state(nodes, now)
        if remote.user_state and self._delegate is not None:
            self._delegate.merge_remote_state(remote.user_state, remote.join)

    def take_outputs(self) -> list[Output]:
        """What to send, in order; the list is handed over and cleared."""
        out, self._outbox = self._outbox, []
        return out

    def leave(self, now: float) -> None:
        """Announce that this node leaves: a dead message about itself, from itself. Keep
        driving the machine until `leave_complete` (or a timeout) before shutting down."""
        if self._left:
            return
        self._left = True
        me = self._members.get(self.name)
        if me is not None:
            self._dead_node(Dead(me.incarnation, me.name, me.name), now)

    def update_node(self, now: float) -> None:
        """Re-advertise this node with fresh metadata from the delegate (a higher incarnation)."""
        me = self._members[self.name]
        self._advertise(now, me.addr, me.port)

    def send_user(self, now: float, to: Address, payload: bytes) -> None:
        """Send a user (Serf) message by packet, with broadcasts piggybacked."""
        self._send(to, User(payload))

    def preload(self, now: float, members: Iterable[Member]) -> None:
        """Start from a table as if this node had long been in the pool: no events, no
        broadcasts, the push-pull timer spread over the period for the pool's size. For
        simulations of large pools (rows may be shared between tables); call after `start`."""
        me = self._members[self.name]
        table = {m.name: m for m in members}
        table[self.name] = me
        self._members = table
        self._order = list(table)
        self._rng.shuffle(self._order)
        self._probe_index = 0
        self._queue.reset()
        period = push_pull_scale(self.config.push_pull_interval, len(self._order))
        if self.config.push_pull_interval > 0:
            self._set_tick("push_pull", now + self._rng.random() * period)

    def _advertise(self, now: float, addr: bytes, port: int) -> None:
        """Alive with a new incarnation and the delegate's current meta."""
        meta = self._delegate.node_meta(META_MAX_SIZE) if self._delegate else b""
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node meta is {len(meta)} bytes, more than {META_MAX_SIZE}")
        alive = Alive(self._next_incarnation(), self.name, addr, port, meta, self.config.vsn())
        self._alive_node(alive, now, bootstrap=True)

    # ---- reading ---------------------------------------------------------------------------

    @property
    def has_left(self) -> bool:
        return self._left

    @property
    def leave_complete(self) -> bool:
        """The leave broadcast went out its last time, or nobody is left to hear it."""
        return self._left and (self._leave_sent or not self._any_alive())

    @property
    def health_score(self) -> int:
        return self._awareness.score

    @property
    def queue(self) -> TransmitLimitedQueue:
        return self._queue

    # ---- timers ----------------------------------------------------------------------------

    def _schedule(self, when: float, kind: str, key: object) -> None:
        heapq.heappush(self._timers, (when, next(self._counter), kind, key))

    def _set_tick(self, tick: str, when: float) -> None:
        self._ticks[tick] = when
        self._schedule(when, "tick", tick)

    def _live(self, entry: tuple[float, int, str, object]) -> bool:
        when, _, kind, key = entry
        if kind == "tick":
            return self._ticks.get(key) == when  # type: ignore[arg-type]
        if kind in ("probe", "relay"):
            return self._probe_timer_live(when, kind, key)
        suspicion = self._suspicions.get(key)  # type: ignore[arg-type]
        return suspicion is not None and suspicion.deadline == when

    def _fire(self, when: float, kind: str, key: object) -> None:
        if kind == "tick":
            self._on_tick(when, key)  # type: ignore[arg-type]
        elif kind in ("probe", "relay"):
            self._fire_probe_timer(when, kind, key)
        else:
            self._suspicion_expired(key, when)  # type: ignore[arg-type]

    def _on_tick(self, now: float, tick: str) -> None:
        cfg = self.config
        if tick == "probe":
            self._set_tick(tick, now + cfg.probe_interval)
            if self._probe is not None:
                self._probe_tick_pending = True  # Go's ticker buffers one missed tick
            else:
                self._probe_round(now)
        elif tick == "gossip":
            self._set_tick(tick, now + cfg.gossip_interval)
            self._gossip(now)
        else:
            self._set_tick(tick, now + push_pull_scale(cfg.push_pull_interval,
                                                       self.estimated_nodes()))
            peers = self._random_members(1, lambda m: m.name == self.name
                                         or m.state != NodeState.ALIVE)
            if peers:
                self._outbox.append(StartPushPull(peers[0].address, False, peers[0].name))

    # ---- sending ---------------------------------------------------------------------------

    def _send(self, to: Address, message: Message) -> None:
        """One message to `to`, with as many broadcasts piggybacked as the packet holds."""
        cfg = self.config
        room = (cfg.udp_buffer_size - self._size_of(message) - COMPOUND_HEADER_OVERHEAD
                - cfg.packet_overhead)
        extra = self._broadcasts(COMPOUND_OVERHEAD, room)
        self._outbox.append(SendPacket(to, (message, *extra)))

    def _broadcasts(self, overhead: int, limit: int) -> list[Message]:
        msgs: list[Message] = self._queue.get(overhead, limit) if len(self._queue) else []
        if self._delegate is not None:
            used = sum(self._size_of(m) + overhead for m in msgs)
            room = limit - used
            if room > overhead + USER_MSG_OVERHEAD:
                msgs.extend(User(p) for p in self._delegate.broadcasts(
                    overhead + USER_MSG_OVERHEAD, room))
        return msgs

    def _gossip(self, now: float) -> None:
        if not len(self._queue) and self._delegate is None:
            return  # nothing could be sent; skip choosing peers
        cfg = self.config
        now_dead_limit = now - cfg.gossip_to_the_dead_time

        def skip(m: Member) -> bool:
            if m.name == self.name:
                return True
            if m.state == NodeState.DEAD:
                return m.state_change < now_dead_limit  # the recently dead still hear gossip
            return m.state == NodeState.LEFT

        room = cfg.udp_buffer_size - COMPOUND_HEADER_OVERHEAD - cfg.packet_overhead
        for peer in self._random_members(cfg.gossip_nodes, skip):
            msgs = self._broadcasts(COMPOUND_OVERHEAD, room)
            if not msgs:
                return
            self._outbox.append(SendPacket(peer.address, tuple(msgs), peer.pmax >= 5))

    # ---- helpers ---------------------------------------------------------------------------

    def _random_members(self, k: int, skip: Callable[[Member], bool]) -> list[Member]:
        """Up to `k` distinct random members not skipped, from at most 3n draws."""
        order, members = self._order, self._members
        n = len(order)
        chosen: list[Member] = []
        names: set[str] = set()
        for _ in range(3 * n):
            if len(chosen) >= k:
                break
            name = order[self._rng.randrange(n)]
            member = members[name]
            if name in names or skip(member):
                continue
            names.add(name)
            chosen.append(member)
        return chosen

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq


__all__ = ["Address", "Member", "Output", "SendPacket", "StartPushPull", "Swim", "SwimError",
           "TcpPing"]
