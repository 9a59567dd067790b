"""The sockets of one gossip pool: UDP packets and TCP streams on the Serf port, on Twisted.

Owns: moving bytes. `PacketSocket` hands every datagram to a callback and sends datagrams;
`StreamServer` accepts memberlist streams and hands each decoded message to a callback with a
`Stream` to answer on; `open_stream` dials a peer. Nothing here knows SWIM or Serf: the pool
(`agent.gossip.pool`) decides what a message means. A stream lives at most `timeout` seconds
(memberlist's TCPTimeout, 10 s on a LAN) so a silent peer holds nothing for long, and a stream
that sends junk is closed at the first undecodable byte.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

import txaio
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from agent.gossip.codec import GossipDecodeError, StreamDecoder, encode_stream
from agent.gossip.messages import Message

txaio.use_twisted()

HostPort = tuple[str, int]


def host_of(addr: bytes) -> str:
    """The text form of memberlist's 4 or 16 raw address bytes."""
    return str(ip_address(addr))


def addr_bytes(host: str) -> bytes:
    """memberlist's raw address bytes of an IP in text form (4 bytes for IPv4)."""
    return ip_address(host).packed


class PacketSocket(DatagramProtocol):
    """The UDP side: `receive(source, data)` for each datagram."""

    log = txaio.make_logger()

    def __init__(self, receive: Callable[[HostPort, bytes], None]) -> None:
        self._receive = receive

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 - Twisted's name
        try:
            self._receive((addr[0], addr[1]), data)
        except Exception:  # noqa: BLE001 - one bad packet must not stop the pool
            self.log.failure("gossip: a packet from {addr} could not be handled", addr=addr)

    def send(self, to: HostPort, data: bytes) -> None:
        if self.transport is None:
            return
        try:
            self.transport.write(data, to)
        except OSError as exc:  # unreachable, buffer full: gossip tolerates loss
            self.log.debug("gossip: sending to {to} failed: {exc}", to=to, exc=exc)


class Stream(Protocol):
    """One memberlist stream, either direction. Each decoded message goes to `on_message(self,
    message)`; `send(message)` writes one. Closed on junk, on `close()`, or after `timeout`."""

    log = txaio.make_logger()

    def __init__(self, reactor, make_decoder: Callable[[], StreamDecoder],
                 encode: Callable[[Message], bytes], timeout: float,
                 on_message: Callable[["Stream", Message], None]) -> None:
        self._reactor = reactor
        self._decoder = make_decoder()
        self._encode = encode
        self._timeout = timeout
        self.on_message = on_message
        self.closed: Deferred = Deferred()
        self._timer = None
        self.peer: HostPort = ("", 0)

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.transport.getPeer()
        self.peer = (peer.host, peer.port)
        self._timer = self._reactor.callLater(self._timeout, self.abort)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        try:
            messages = self._decoder.feed(data)
        except GossipDecodeError as exc:
            self.log.warn("gossip: closing the stream from {peer}: {exc}", peer=self.peer,
                          exc=exc)
            self.abort()
            return
        for message in messages:
            try:
                self.on_message(self, message)
            except Exception:  # noqa: BLE001
                self.log.failure("gossip: a stream message from {peer} could not be handled",
                                 peer=self.peer)
                self.abort()
                return

    def send(self, message: Message) -> None:
        if self.transport is not None:
            self.transport.write(self._encode(message))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if not self.closed.called:
            self.closed.callback(None)


class StreamFactory(Factory):
    """Builds a `Stream` for every connection, in or out."""

    noisy = False  # no "Starting factory" line per gossip stream

    def __init__(self, build: Callable[[], Stream]) -> None:
        self._build = build

    def buildProtocol(self, addr: Any) -> Stream:  # noqa: N802
        return self._build()


def open_stream(reactor, to: HostPort, build: Callable[[], Stream],
                timeout: float) -> Deferred:
    """Dial `to`; fires with the connected `Stream` (fails after `timeout`)."""
    host, port = to
    endpoint_type = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
    endpoint = endpoint_type(reactor, host, port, timeout=timeout)
    return endpoint.connect(StreamFactory(build))


def stream_encoder(envelope, compress: bool) -> Callable[[Message], bytes]:
    """How a pool writes stream messages: compressed and sealed as its settings say."""
    return lambda message: encode_stream(message, compress=compress, envelope=envelope)
