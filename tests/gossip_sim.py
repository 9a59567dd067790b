"""A deterministic simulator for the SWIM state machine: many `Swim`s in one process.

One seeded `random.Random` drives everything (each node's own rng is drawn from it), time is a
simulated clock, and messages pass as values (sizes come from `size_of`, for the packet limits).
The network can lose, delay (and so reorder), duplicate and partition packets; nodes can crash
(stop answering, their timers stop) and restart under the same name and address. Push-pull and
TCP pings go over a reliable "stream": delayed, never lost, but cut by crashes and partitions.

A failing run is replayed exactly by constructing the same `Simulation(seed=...)` and repeating
the calls; `Simulation.__repr__` names the seed so test failures print it.
Used by tests/test_swim.py and bench/gossip_bench.py.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.gossip.delegate import NodeInfo
from agent.gossip.messages import (
    Ack, Alive, Dead, Err, IndirectPing, Message, Nack, NodeState, Ping, PushPull, Suspect, User)
from agent.gossip.swim import Member, SendPacket, StartPushPull, Swim, TcpPing
from agent.gossip.swim_config import SwimConfig

PORT = 8301


def estimate_size(message: Message) -> int:
    """A conservative stand-in for the msgpack size of a memberlist message: a type byte, a
    map header, and per field its key name, a header and the value."""
    def s(v: object) -> int:
        if isinstance(v, (bytes, str)):
            return 5 + len(v)
        if isinstance(v, tuple):
            return 5 + 2 * len(v)
        return 9  # ints, bools: at most a type byte and 8 bytes

    fields = {
        Ping: ("SeqNo", "Node", "SourceAddr", "SourcePort", "SourceNode"),
        IndirectPing: ("SeqNo", "Target", "Port", "Node", "Nack", "SourceAddr", "SourcePort",
                       "SourceNode"),
        Ack: ("SeqNo", "Payload"), Nack: ("SeqNo",), Err: ("Error",),
        Suspect: ("Incarnation", "Node", "From"), Dead: ("Incarnation", "Node", "From"),
        Alive: ("Incarnation", "Node", "Addr", "Port", "Meta", "Vsn"),
    }
    if isinstance(message, User):
        return 1 + len(message.payload)
    names = fields[type(message)]
    values = [getattr(message, f) for f in message.__slots__]  # type: ignore[union-attr]
    return 2 + sum(len(n) + 1 + s(v) for n, v in zip(names, values))


def address_of(index: int) -> bytes:
    return bytes([10, (index >> 16) & 0xFF, (index >> 8) & 0xFF, index & 0xFF])


@dataclass
class NetConfig:
    loss: float = 0.0  # probability a packet is dropped
    min_delay: float = 0.0005
    max_delay: float = 0.005  # uniform in [min, max]: packets overtake each other
    duplicate: float = 0.0  # probability a packet is delivered twice


class Recorder:
    """The EventDelegate and PingDelegate of one node: remembers what it was told."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self.events: list[tuple[float, str, str, NodeState]] = []

    def notify_join(self, node: NodeInfo) -> None:
        self.events.append((self._sim.now, "join", node.name, node.state))

    def notify_leave(self, node: NodeInfo) -> None:
        self.events.append((self._sim.now, "leave", node.name, node.state))

    def notify_update(self, node: NodeInfo) -> None:
        self.events.append((self._sim.now, "update", node.name, node.state))

    def ack_payload(self) -> bytes:
        return b""

    def notify_ping_complete(self, node: NodeInfo, rtt: float, payload: bytes) -> None:
        pass


@dataclass(eq=False)
class SimNode:
    name: str
    address: tuple[bytes, int]
    swim: Swim
    recorder: Recorder
    up: bool = True
    group: int = 0  # partition group; packets only flow within a group
    scheduled: float | None = None


@dataclass
class Stats:
    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    push_pulls: int = 0
    sent_by_type: Counter = field(default_factory=Counter)


class Simulation:
    def __init__(self, seed: int, config: SwimConfig | None = None,
                 net: NetConfig | None = None,
                 size_of: Callable[[Message], int] = estimate_size) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or SwimConfig.lan()
        self.net = net or NetConfig()
        self.size_of = size_of
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self._by_addr: dict[tuple[bytes, int], SimNode] = {}
        self._heap: list[tuple[float, int, str, object]] = []
        self._seq = itertools.count()
        self.stats = Stats()

    def __repr__(self) -> str:
        return f"Simulation(seed={self.seed}, now={self.now:.3f})"

    # ---- building the pool ---------------------------------------------------------------

    def add_node(self, name: str | None = None, join: Iterable[str] = (),
                 config: SwimConfig | None = None) -> SimNode:
        index = len(self._by_addr)
        name = name or f"node-{index}"
        address = (address_of(index), PORT)
        node = self._make(name, address, config)
        self._by_addr[address] = node
        self.nodes[name] = node
        self._start(node, join)
        return node

    def add_converged_pool(self, n: int) -> list[SimNode]:
        """`n` nodes that already know each other as alive (incarnation 1), as after a long
        quiet period. Table rows are shared between nodes to keep big pools affordable."""
        nodes = [self.add_node() for _ in range(n)]
        vsn = self.config.vsn()
        rows = [Member(x.name, x.address[0], x.address[1], b"", 1, NodeState.ALIVE, self.now, vsn)
                for x in nodes]
        for x in nodes:
            x.swim.preload(self.now, rows)
            self._reschedule(x)
        return nodes

    def _make(self, name: str, address: tuple[bytes, int], config: SwimConfig | None) -> SimNode:
        recorder = Recorder(self)
        swim = Swim(config or self.config, name=name, addr=address[0], port=address[1],
                    rng=random.Random(self.rng.getrandbits(64)), size_of=self.size_of,
                    events=recorder, ping_delegate=recorder)
        return SimNode(name, address, swim, recorder)

    def _start(self, node: SimNode, join: Iterable[str]) -> None:
        node.swim.start(self.now)
        node.swim.join(self.now, [self.nodes[j].address for j in join])
        self._flush(node)

    # ---- faults ----------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        """The node stops answering and its timers stop (a kill -9)."""
        self.nodes[name].up = False

    def restart(self, name: str, join: Iterable[str] = ()) -> SimNode:
        """A fresh process under the same name and address (incarnation starts over)."""
        old = self.nodes[name]
        node = self._make(name, old.address, None)
        node.group = old.group
        self.nodes[name] = node
        self._by_addr[old.address] = node
        self._start(node, join)
        return node

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: nodes in different groups stop hearing each other."""
        for number, group in enumerate(groups, start=1):
            for name in group:
                self.nodes[name].group = number

    def heal(self) -> None:
        for node in self.nodes.values():
            node.group = 0

    def inject(self, to: str, message: Message, source: str | None = None) -> None:
        """Deliver `message` to `to` now, as if it came from `source` (default: itself)."""
        node = self.nodes[to]
        src = self.nodes[source].address if source else node.address
        node.swim.handle_packet(self.now, src, message)
        self._flush(node)

    # ---- running ---------------------------------------------------------------------------

    def run_until(self, until: float, stop: Callable[[], bool] | None = None,
                  check_every: float = 0.1) -> bool:
        """Run events up to time `until`; with `stop`, end early (True) once it holds, checked
        every `check_every` simulated seconds."""
        next_check = self.now + check_every
        heap = self._heap
        while heap and heap[0][0] <= until:
            when = heap[0][0]
            while stop is not None and next_check <= when:
                self.now = next_check
                if stop():
                    return True
                next_check += check_every
            _, _, kind, data = heapq.heappop(heap)
            self.now = when
            if kind == "timer":
                node = data  # type: ignore[assignment]
                if node.up and node.scheduled == when and self.nodes.get(node.name) is node:
                    node.scheduled = None
                    node.swim.advance(when)
                    self._flush(node)
            else:
                data()  # type: ignore[operator]
        self.now = until
        return stop() if stop is not None else False

    def run_for(self, duration: float, stop: Callable[[], bool] | None = None) -> bool:
        return self.run_until(self.now + duration, stop)

    # ---- views -------------------------------------------------------------------------------

    def state_of(self, observer: str, subject: str) -> NodeState | None:
        member = self.nodes[observer].swim.member(subject)
        return None if member is None else member.state

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]

    def all_see(self, subject: str, state: NodeState | None,
                observers: Iterable[SimNode] | None = None) -> bool:
        """Every live node other than `subject` sees it in `state` (None: forgotten)."""
        return all(self.state_of(n.name, subject) == state
                   for n in (observers if observers is not None else self.live_nodes())
                   if n.name != subject)

    def converged(self) -> bool:
        """Every live node sees exactly the live nodes as alive."""
        live = {n.name for n in self.live_nodes()}
        return all({m.name for m in n.swim.members()
                    if m.state == NodeState.ALIVE} == live for n in self.live_nodes())

    # ---- plumbing ------------------------------------------------------------------------------

    def _at(self, when: float, kind: str, data: object) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, data))

    def _reschedule(self, node: SimNode) -> None:
        deadline = node.swim.next_deadline()
        if deadline is None:
            return
        when = max(deadline, self.now)  # a past-due deadline (a confirmed suspicion) runs now
        if node.scheduled is None or when < node.scheduled:
            node.scheduled = when
            self._at(when, "timer", node)

    def _reachable(self, a: SimNode, b: SimNode | None) -> bool:
        return b is not None and a.up and b.up and a.group == b.group

    def _delay(self) -> float:
        return self.rng.uniform(self.net.min_delay, self.net.max_delay)

    def _flush(self, node: SimNode) -> None:
        for out in node.swim.take_outputs():
            if isinstance(out, SendPacket):
                self._send_packet(node, out)
            elif isinstance(out, StartPushPull):
                self._push_pull(node, out)
            elif isinstance(out, TcpPing):
                self._tcp_ping(node, out)
        self._reschedule(node)

    def _send_packet(self, node: SimNode, packet: SendPacket) -> None:
        stats = self.stats
        stats.packets += 1
        stats.bytes += sum(self.size_of(m) for m in packet.messages) + (
            2 + 2 * len(packet.messages) if len(packet.messages) > 1 else 0)
        for m in packet.messages:
            stats.sent_by_type[type(m).__name__] += 1
        copies = 2 if self.rng.random() < self.net.duplicate else 1
        for _ in range(copies):
            if self.rng.random() < self.net.loss:
                stats.dropped += 1
                continue
            self._at(self.now + self._delay(), "call",
                     lambda p=packet, s=node.address: self._deliver(s, p))

    def _deliver(self, source: tuple[bytes, int], packet: SendPacket) -> None:
        sender = self._by_addr.get(source)
        target = self._by_addr.get(packet.to)
        if sender is None or not self._reachable(sender, target):
            self.stats.dropped += 1
            return
        assert target is not None
        for message in packet.messages:
            target.swim.handle_packet(self.now, source, message)
        self._flush(target)

    def _push_pull(self, node: SimNode, start: StartPushPull) -> None:
        self.stats.push_pulls += 1
        local = node.swim.local_push_pull(start.join)

        def at_target() -> None:
            target = self._by_addr.get(start.to)
            if not self._reachable(node, target):
                return
            assert target is not None
            reply = target.swim.local_push_pull(local.join)
            target.swim.merge_push_pull(self.now, local)
            self._flush(target)
            self._at(self.now + self._delay(), "call", lambda: at_source(reply))

        def at_source(reply: PushPull) -> None:
            if node.up and self.nodes.get(node.name) is node:
                node.swim.merge_push_pull(self.now, reply)
                self._flush(node)

        self._at(self.now + self._delay(), "call", at_target)

    def _tcp_ping(self, node: SimNode, ping: TcpPing) -> None:
        target = self._by_addr.get(ping.to)
        if not self._reachable(node, target):
            return
        assert target is not None
        if ping.ping.node and ping.ping.node != target.name:
            return

        def answered() -> None:
            if node.up and self.nodes.get(node.name) is node:
                node.swim.tcp_ping_result(self.now, ping.ping.seq_no, True)
                self._flush(node)

        self._at(self.now + 2 * self._delay(), "call", answered)
