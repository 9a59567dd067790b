"""One gossip pool of this agent (the LAN pool, or a server's WAN pool) on the reactor.

Owns: driving the pure state machines with real time and real sockets. `Swim` (memberlist's
SWIM) and `Serf` above it decide; this module feeds them packets and stream messages, runs
their timers with one `callLater` at the earliest deadline, and performs what they output
(UDP packets through the codec and the keyring's envelope, push-pulls and fallback pings over
TCP streams, Serf's direct messages, reconnects). What Serf reports (member joins, failures,
leaves, user events, queries) goes to `on_event`, which the agent turns into the catalog's
`serfHealth` checks, the event list and so on; the pool itself knows nothing of the catalog.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import txaio
from twisted.internet.defer import Deferred, DeferredList, succeed

from agent.gossip import codec
from agent.gossip.codec import GossipDecodeError, StreamDecoder
from agent.gossip.delegate import NodeInfo
from agent.gossip.messages import Ack, Ping, PushPull, User
from agent.gossip.network import (
    HostPort, PacketSocket, Stream, StreamFactory, addr_bytes, host_of, open_stream,
    stream_encoder)
from agent.gossip.security import Envelope, Keyring, encryption_version
from agent.gossip.serf.events import (
    BroadcastDone, Member, MemberEvent, MemberEventType, ReconnectTo, SendTo, SerfOutput)
from agent.gossip.serf.config import SerfConfig
from agent.gossip.serf.state import Serf
from agent.gossip.swim import SendPacket, StartPushPull, Swim, SwimError, TcpPing
from agent.gossip.swim_config import SwimConfig
from agent.gossip.vivaldi import CoordinateTracker, VivaldiClient

txaio.use_twisted()

STREAM_TIMEOUT = 10.0  # memberlist's TCPTimeout on a LAN
# The longest Serf's own timers (reap, reconnect, query deadlines) wait for a check. Every SWIM
# timer firing (gossip every 200 ms on the LAN) checks them too, so this only bounds the quiet
# case; a shorter one would add wake-ups to an idle agent for nothing.
SERF_TICK = 1.0
LEAVE_TIMEOUT = 5.0  # Serf's BroadcastTimeout: how long a leave waits for its intent to go out


@dataclass(frozen=True)
class PoolSettings:
    """Where a pool listens and what it says about itself."""

    name: str  # this node's name
    bind: HostPort  # where the sockets listen
    advertise: HostPort  # what other members are told
    tags: dict[str, str]
    swim: SwimConfig
    serf: SerfConfig
    keyring: Keyring | None = None  # gossip encryption, when set
    verify_incoming: bool = True
    verify_outgoing: bool = True
    compress: bool = True  # memberlist's EnableCompression: LZW when it makes a message smaller
    # memberlist's AliveDelegate and MergeDelegate: a reason to refuse a member, or None.
    alive_filter: Callable[[NodeInfo], str | None] | None = None
    merge_filter: Callable[[list[NodeInfo]], str | None] | None = None


class GossipPool:
    """A member of one pool: `start()`, `join(addresses)`, `members()`, `user_event()`,
    `force_leave()`, `leave()`, `stop()`."""

    log = txaio.make_logger()

    def __init__(self, reactor, settings: PoolSettings, on_event: Callable[[SerfOutput], None],
                 rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self.settings = settings
        self._on_event = on_event
        self._rng = rng or random.Random()
        self.keyring = settings.keyring
        version = encryption_version(settings.swim.protocol_version)
        self._envelope = Envelope(settings.keyring, version) if settings.keyring else None
        self.serf = Serf(settings.serf, self._rng, reactor.seconds(), keyring=settings.keyring)
        # Serf's network coordinates: carried in every ack, updated from every direct probe.
        self.coordinates = CoordinateTracker(settings.name, VivaldiClient(rng=self._rng))
        self.swim = Swim(settings.swim, name=settings.name,
                         addr=addr_bytes(settings.advertise[0]), port=settings.advertise[1],
                         rng=self._rng, size_of=lambda m: len(codec.encode_message(m)),
                         delegate=self.serf, events=self.serf,
                         ping_delegate=self.coordinates,
                         alive_filter=settings.alive_filter, merge_filter=settings.merge_filter)
        self._udp = PacketSocket(self._packet)
        self._udp_port = None
        self._tcp_port = None
        self._timer = None
        self._next_serf_tick = 0.0
        self._leave_waiters: dict[object, Deferred] = {}
        self._tcp_pings: dict[int, Stream] = {}
        self.stats = {"packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0,
                      "dropped": 0, "decrypt_failed": 0}
        self.running = False

    # --- lifecycle --------------------------------------------------------------------------

    def listen(self) -> None:
        """Bind the UDP and TCP sockets (raises CannotListenError when taken)."""
        host, port = self.settings.bind
        self._udp_port = self._reactor.listenUDP(port, self._udp, interface=host)
        self._tcp_port = self._reactor.listenTCP(port, StreamFactory(self._incoming),
                                                 interface=host)

    def start(self) -> None:
        """Become alive in the pool (alone until `join`)."""
        if self._udp_port is None:
            self.listen()
        self.running = True
        now = self._reactor.seconds()
        self.serf.tick(now)
        self.swim.start(now)
        self._pump()

    def stop(self) -> Deferred:
        """Stop at once, without telling anyone (a crash looks the same to the others)."""
        self.running = False
        self.serf.shutdown()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        ports = [p for p in (self._udp_port, self._tcp_port) if p is not None]
        self._udp_port = self._tcp_port = None
        return DeferredList([succeed(p.stopListening()) for p in ports])

    def leave(self) -> Deferred:
        """Leave gracefully: Serf's leave intent, then SWIM's dead-about-self, then wait for
        them to go out (at most LEAVE_TIMEOUT each); fires when done."""
        token = self.serf.leave()
        done: Deferred = Deferred()
        if token is not None:
            self._leave_waiters[token] = done
            self._reactor.callLater(LEAVE_TIMEOUT, self._leave_timeout, token)
        else:
            done.callback(None)
        self._pump()

        def swim_leave(_):
            self.swim.leave(self._reactor.seconds())
            self._pump()
            return self._wait_swim_leave(self._reactor.seconds() + LEAVE_TIMEOUT)

        def finished(_):
            self.serf.finish_leave()
            return None
        return done.addCallback(swim_leave).addCallback(finished)

    def _leave_timeout(self, token) -> None:
        waiter = self._leave_waiters.pop(token, None)
        if waiter is not None:
            waiter.callback(None)

    def _wait_swim_leave(self, deadline: float) -> Deferred:
        d: Deferred = Deferred()

        def check() -> None:
            if self.swim.leave_complete or self._reactor.seconds() >= deadline:
                d.callback(None)
            else:
                self._reactor.callLater(0.05, check)
        check()
        return d

    # --- what the agent asks ----------------------------------------------------------------

    def join(self, addresses: Iterable[HostPort]) -> Deferred:
        """Push-pull with each address (join=True); fires with how many answered."""
        attempts = [self._push_pull(address, join=True) for address in addresses]
        if not attempts:
            return succeed(0)

        def count(results) -> int:
            joined = sum(1 for ok, value in results if ok and value)
            if joined:
                self.serf.joined()
            return joined
        return DeferredList(attempts, consumeErrors=True).addCallback(count)

    def members(self) -> list[Member]:
        return self.serf.member_list()

    def local_member(self) -> Member | None:
        return self.serf.local_member()

    def user_event(self, name: str, payload: bytes, coalesce: bool = False) -> None:
        """Fire a user event (raises SerfError when too large)."""
        self.serf.user_event(name, payload, coalesce)
        self._pump()

    def force_leave(self, node: str, prune: bool = False) -> None:
        self.serf.force_leave(node, prune)
        self._pump()

    def set_tags(self, tags: dict[str, str]) -> None:
        self.serf.set_tags(tags)
        self.swim.update_node(self._reactor.seconds())
        self._pump()

    # --- the machines' timers and outputs -----------------------------------------------------

    def _pump(self) -> None:
        """Perform everything the machines want done, and arm the next timer."""
        if not self.running:
            return
        now = self._reactor.seconds()
        if now >= self._next_serf_tick:
            self.serf.tick(now)
            self._next_serf_tick = now + SERF_TICK
        for _ in range(16):  # outputs may cause more outputs; bounded per turn
            swim_out = self.swim.take_outputs()
            serf_out = self.serf.drain()
            if not swim_out and not serf_out:
                break
            for item in swim_out:
                self._perform_swim(item)
            for item in serf_out:
                self._perform_serf(item, now)
        deadline = self.swim.next_deadline()
        when = self._next_serf_tick if deadline is None else min(deadline, self._next_serf_tick)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._reactor.callLater(max(0.0, when - now), self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self.running:
            return
        now = self._reactor.seconds()
        self.serf.tick(now)
        self._next_serf_tick = now + SERF_TICK
        self.swim.advance(now)
        self._pump()

    def _perform_swim(self, item) -> None:
        if isinstance(item, SendPacket):
            self._send_packet((host_of(item.to[0]), item.to[1]), item.messages, item.crc)
        elif isinstance(item, StartPushPull):
            self._push_pull((host_of(item.to[0]), item.to[1]), item.join)
        elif isinstance(item, TcpPing):
            self._tcp_ping(item)

    def _perform_serf(self, item: SerfOutput, now: float) -> None:
        if isinstance(item, SendTo):
            self.swim.send_user(now, (item.addr, item.port), item.payload)
        elif isinstance(item, ReconnectTo):
            self._push_pull((host_of(item.addr), item.port), join=True)
        elif isinstance(item, BroadcastDone):
            waiter = self._leave_waiters.pop(item.token, None)
            if waiter is not None:
                waiter.callback(None)
        else:
            if isinstance(item, MemberEvent) and item.type is MemberEventType.REAP:
                self.coordinates.forget(item.member.name)
            try:
                self._on_event(item)
            except Exception:  # noqa: BLE001 - the agent's trouble must not stop gossip
                self.log.failure("gossip: handling {item} failed", item=type(item).__name__)

    # --- packets ----------------------------------------------------------------------------

    def _outgoing_envelope(self):
        return self._envelope if self.settings.verify_outgoing else None

    def _send_packet(self, to: HostPort, messages, crc: bool) -> None:
        try:
            data = codec.encode_packet(list(messages), crc=crc,
                                       compress=self.settings.compress,
                                       envelope=self._outgoing_envelope())
        except Exception:  # noqa: BLE001
            self.log.failure("gossip: a packet to {to} could not be encoded", to=to)
            return
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(data)
        self._udp.send(to, data)

    def _packet(self, source: HostPort, data: bytes) -> None:
        self.stats["packets_in"] += 1
        self.stats["bytes_in"] += len(data)
        if not self.running:
            return
        try:
            packet = codec.decode_packet(data, envelope=self._envelope,
                                         verify_incoming=self.settings.verify_incoming)
        except GossipDecodeError as exc:
            # Wrong key, junk, a non-member: dropped and counted, as memberlist does.
            key = "decrypt_failed" if "decrypt" in str(exc).lower() else "dropped"
            self.stats[key] += 1
            self.log.debug("gossip: dropped a packet from {source}: {exc}", source=source,
                           exc=exc)
            return
        now = self._reactor.seconds()
        address = (addr_bytes(source[0]), source[1])
        self.serf.tick(now)
        for message in packet.messages:
            self.swim.handle_packet(now, address, message)
        self._pump()

    # --- streams ----------------------------------------------------------------------------

    def _stream(self, on_message) -> Stream:
        return Stream(self._reactor,
                      lambda: StreamDecoder(envelope=self._envelope,
                                            verify_incoming=self.settings.verify_incoming),
                      stream_encoder(self._outgoing_envelope(), compress=self.settings.compress),
                      STREAM_TIMEOUT, on_message)

    def _incoming(self) -> Stream:
        return self._stream(self._incoming_message)

    def _incoming_message(self, stream: Stream, message) -> None:
        now = self._reactor.seconds()
        self.serf.tick(now)
        if isinstance(message, PushPull):
            stream.send(self.swim.local_push_pull(message.join))
            try:
                self.swim.merge_push_pull(now, message)
            except SwimError as exc:
                self.log.warn("gossip: refused the state of {peer}: {exc}", peer=stream.peer,
                              exc=exc)
            stream.close()
        elif isinstance(message, User):
            self.serf.notify_message(message.payload)
            stream.close()
        elif isinstance(message, Ping):
            if message.node in ("", self.settings.name):
                stream.send(Ack(message.seq_no, b""))
            stream.close()
        else:
            stream.abort()
        self._pump()

    def _push_pull(self, to: HostPort, join: bool) -> Deferred:
        """Exchange full state with `to`; fires True when its state was merged."""
        result: Deferred = Deferred()

        def answered(stream: Stream, message) -> None:
            if not isinstance(message, PushPull):
                stream.abort()
                return
            try:
                self.swim.merge_push_pull(self._reactor.seconds(), message)
            except SwimError as exc:
                self.log.warn("gossip: refused the state of {to}: {exc}", to=to, exc=exc)
                stream.close()
                if not result.called:
                    result.callback(False)
                return
            stream.close()
            if not result.called:
                result.callback(True)
            self._pump()

        def connected(stream: Stream) -> None:
            stream.send(self.swim.local_push_pull(join))
            stream.closed.addCallback(lambda _: None if result.called else result.callback(False))

        def failed(failure) -> None:
            self.log.debug("gossip: push-pull with {to} failed: {why}", to=to,
                           why=failure.getErrorMessage())
            if not result.called:
                result.callback(False)
        d = open_stream(self._reactor, to, lambda: self._stream(answered), STREAM_TIMEOUT)
        d.addCallbacks(connected, failed)
        return result

    def _tcp_ping(self, item: TcpPing) -> None:
        to = (host_of(item.to[0]), item.to[1])
        timeout = max(0.05, item.deadline - self._reactor.seconds())

        def answered(stream: Stream, message) -> None:
            ok = isinstance(message, Ack) and message.seq_no == item.ping.seq_no
            stream.close()
            if ok:
                self.swim.tcp_ping_result(self._reactor.seconds(), item.ping.seq_no, True)
                self._pump()

        def connected(stream: Stream) -> None:
            stream.send(item.ping)
        d = open_stream(self._reactor, to, lambda: self._stream(answered), timeout)
        d.addCallbacks(connected, lambda failure: None)
