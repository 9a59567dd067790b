"""Raft's peer transport: one-way message streams between servers over TCP.

A connection starts with the protocol byte 0x01 (Consul's `pool.RPCRaft`), so it can later
share the server port with the RPC's 0x00: the port's dispatcher reads the first byte and
hands the connection to a `RaftStreamProtocol(expect_type_byte=False)`. After that byte the
stream is frames: a 4-byte big-endian length, then one message in `messages`' msgpack codec.

Each server dials every peer it sends to and only writes on that connection; what it receives
arrives on connections its peers dialled. Raft tolerates loss (every message is retried by
the protocol itself: heartbeats, vote rounds, AppendEntries after a rejection), so the
transport never queues: a frame for a peer that is not connected, or whose socket buffer is
full (the transport paused us as its producer), is dropped. Junk on a connection closes that
connection only.
"""

from __future__ import annotations

import struct
from typing import Callable

import txaio
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IPushProducer, IReactorTCP, IReactorTime
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from .consensus.messages import Message, MessageError, decode, encode

txaio.use_twisted()

RPC_RAFT = 0x01
MAX_FRAME = 64 * 1024 * 1024  # a snapshot travels in one frame; anything bigger is junk
_LEN = struct.Struct(">I")
RETRY_INTERVAL = 0.1  # seconds between dials of an unreachable peer
CONNECT_TIMEOUT = 2.0
MAX_WAITING = 64  # frames held for a peer while its connection is being made

Address = tuple[str, int]


class _Tracked(Protocol):
    """A protocol whose end `RaftTransport.stop` can wait for."""

    def __init__(self) -> None:
        self.lost: Deferred = Deferred()

    def connectionLost(self, reason: Failure = None) -> None:  # noqa: N802 - Twisted's name
        if not self.lost.called:
            self.lost.callback(None)


class RaftStreamProtocol(_Tracked):
    """The receiving side: reads frames and hands each decoded message to `on_message`.

    `expect_type_byte` is False when a dispatcher already consumed the 0x01 byte."""

    log = txaio.make_logger()

    def __init__(self, on_message: Callable[[Message], None], expect_type_byte: bool = True,
                 on_lost: Callable[[RaftStreamProtocol], None] | None = None) -> None:
        super().__init__()
        self._on_message = on_message
        self._need_byte = expect_type_byte
        self._buf = bytearray()
        self._closed = False
        self._on_lost = on_lost

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._closed:
            return
        if self._need_byte and data:
            if data[0] != RPC_RAFT:
                self._junk(f"protocol byte {data[0]:#04x} is not Raft (0x01)")
                return
            self._need_byte = False
            data = data[1:]
        self._buf += data
        while len(self._buf) >= _LEN.size and not self._closed:
            (size,) = _LEN.unpack_from(self._buf)
            if size > MAX_FRAME:
                self._junk(f"frame of {size} bytes exceeds {MAX_FRAME}")
                return
            if len(self._buf) < _LEN.size + size:
                return
            frame = bytes(self._buf[_LEN.size:_LEN.size + size])
            del self._buf[:_LEN.size + size]
            try:
                msg = decode(frame)
            except MessageError as exc:
                self._junk(str(exc))
                return
            self._on_message(msg)

    def _junk(self, why: str) -> None:
        self._closed = True
        self._buf.clear()
        self.log.warn("closing the Raft connection from {peer}: {why}", peer=self._peer(),
                      why=why[:200])
        self.transport.abortConnection()

    def _peer(self) -> str:
        try:
            addr = self.transport.getPeer()
            return f"{addr.host}:{addr.port}"
        except Exception:  # noqa: BLE001 - only for a log line
            return "?"

    def connectionLost(self, reason: Failure = None) -> None:  # noqa: N802
        self._closed = True
        if self._on_lost:
            self._on_lost(self)
        super().connectionLost(reason)


@implementer(IPushProducer)
class _PeerConnection(_Tracked):
    """The sending side to one peer: writes frames while the socket keeps up, else drops."""

    def __init__(self, peer: "_Peer") -> None:
        super().__init__()
        self.paused = False
        self.peer = peer

    def connectionMade(self) -> None:  # noqa: N802
        self.transport.registerProducer(self, True)  # streaming: pause/resume on the buffer
        self.transport.write(bytes([RPC_RAFT]))
        waiting, self.peer.waiting = self.peer.waiting, []
        if waiting:
            self.transport.write(b"".join(waiting))

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.transport.abortConnection()  # peers never write on a connection we dialled

    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = True


class _Peer(ClientFactory):
    """The dialler of one peer: at most one connection or attempt at a time, and no new
    attempt within `RETRY_INTERVAL` of the last (dials happen lazily, on a send)."""

    noisy = False

    def __init__(self, transport: RaftTransport, address: Address) -> None:
        self.owner = transport
        self.address = address
        self.conn: _PeerConnection | None = None
        self.connector = None
        self.last_attempt = float("-inf")
        # Frames sent while the connection is being made (a first vote request to a peer
        # never talked to): sent once it is up, so an election does not wait a whole
        # timeout for a dropped request. A dial that fails drops them.
        self.waiting: list[bytes] = []

    def buildProtocol(self, addr) -> _PeerConnection:  # noqa: N802
        self.conn = _PeerConnection(self)
        return self.conn

    def clientConnectionFailed(self, connector, reason: Failure) -> None:  # noqa: N802
        self.connector = None
        self.waiting = []

    def clientConnectionLost(self, connector, reason: Failure) -> None:  # noqa: N802
        self.connector, self.conn = None, None

    def dial(self) -> None:
        now = self.owner.reactor.seconds()
        if self.connector is not None or now - self.last_attempt < self.owner.retry_interval:
            return
        self.last_attempt = now
        host, port = self.address
        self.connector = self.owner.reactor.connectTCP(host, port, self,
                                                       timeout=CONNECT_TIMEOUT)


class RaftTransport:
    """Sends `Message`s to peers by server id and passes received ones to `on_message`
    (set it before `listen`; the driver does). `peers` maps server id -> (host, port)."""

    def __init__(self, reactor: IReactorTCP | IReactorTime, peers: dict[str, Address],
                 on_message: Callable[[Message], None] | None = None,
                 retry_interval: float = RETRY_INTERVAL, eager: bool = False) -> None:
        """`eager`: dial every peer as soon as it is known (servers; tests drive dials)."""
        self.reactor = reactor
        self._eager = eager
        self.on_message = on_message
        self.retry_interval = retry_interval
        self._peers = {sid: _Peer(self, addr) for sid, addr in peers.items()}
        self._inbound: set[RaftStreamProtocol] = set()
        self._port = None
        self.dropped = 0  # frames not sent: peer unreachable or too slow

    def set_peer(self, server_id: str, address: Address) -> None:
        """Where `server_id` listens; a changed address drops the old connection."""
        peer = self._peers.get(server_id)
        if peer is not None and peer.address == address:
            return
        if peer is not None and peer.conn is not None and peer.conn.transport is not None:
            peer.conn.transport.loseConnection()
        self._peers[server_id] = _Peer(self, address)
        if self._eager:
            # Connected before the first message: a follower's first vote request to
            # another follower must not wait for a dial.
            self._peers[server_id].dial()

    def protocol(self, expect_type_byte: bool = True) -> RaftStreamProtocol:
        """A receiving protocol, for our listener or for a server-port dispatcher."""
        proto = RaftStreamProtocol(self._deliver, expect_type_byte, self._inbound.discard)
        self._inbound.add(proto)
        return proto

    def listen(self, port: int, interface: str = "127.0.0.1"):
        factory = Factory.forProtocol(lambda: self.protocol(True))
        self._port = self.reactor.listenTCP(port, factory, interface=interface)
        return self._port

    def _deliver(self, msg: Message) -> None:
        if self.on_message is not None:
            self.on_message(msg)

    def send(self, to: str, msg: Message) -> bool:
        """Send or drop (returns whether the frame was written)."""
        peer = self._peers.get(to)
        if peer is None:
            self.dropped += 1
            return False
        conn = peer.conn
        if conn is None or conn.transport is None or conn.paused:
            if conn is None:
                peer.dial()
                if peer.connector is not None and len(peer.waiting) < MAX_WAITING:
                    body = encode(msg)
                    peer.waiting.append(_LEN.pack(len(body)) + body)
                    return True
            self.dropped += 1
            return False
        body = encode(msg)
        conn.transport.write(_LEN.pack(len(body)) + body)
        return True

    def stop(self) -> Deferred:
        """Close the listener and every connection; fires once all are gone."""
        waits = []
        if self._port is not None:
            waits.append(self._port.stopListening())
            self._port = None
        for peer in self._peers.values():
            if peer.connector is not None and peer.conn is None:
                peer.connector.stopConnecting()
            if peer.conn is not None and peer.conn.transport is not None:
                waits.append(peer.conn.lost)
                peer.conn.transport.abortConnection()
            peer.last_attempt = float("inf")  # never dial again
        for proto in list(self._inbound):
            if proto.transport is not None:
                waits.append(proto.lost)
                proto.transport.abortConnection()
        return DeferredList([d for d in waits if d is not None])
