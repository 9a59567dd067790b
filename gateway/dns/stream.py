"""DNS over TCP (RFC 7766): length-prefixed messages answered in order on each connection, with
the flow control that keeps any one client from wedging a connection or holding the agent's
memory and sockets.

- A message the controller drops (an empty frame, less than a header, a response) takes no
  place in the answer order: Consul 1.8.7 (miekg/dns) ignores such messages too and goes on
  answering the connection.
- An answer that comes later (from a recursor) keeps its place. While `max_pending` answers
  wait, reading pauses until they complete; nothing is dropped and the connection stays up.
- The connection is a streaming producer for its transport: when the client does not read
  and the send buffer fills, reading pauses too, so buffers stay bounded.
- After `idle` seconds without a message and with no answer outstanding, the connection is
  closed (answers already written go out first); one whose client still does not read them
  after another `idle` seconds is aborted.
- The factory keeps at most `max_connections`; one more evicts the connection that has been
  quiet longest, so a client opening connections and never reading cannot use up the
  agent's file descriptors.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Protocol as TypingProtocol

import txaio
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from gateway.dns import wire

txaio.use_twisted()

TCP_IDLE = 10.0  # seconds without a query before a connection is closed
TCP_MAX_PENDING = 64  # answers waiting per connection before reading pauses
# Half the usual soft limit of 1024 open files, leaving the rest to the HTTP API, RPC and
# gossip; still far more than DNS over TCP sees in practice.
TCP_MAX_CONNECTIONS = 512
_LENGTH = struct.Struct("!H")
_HEADER = struct.Struct("!HHHHHH")


class Answerer(TypingProtocol):
    """What the connections need of the controller: answer bytes, later, or None to drop."""

    def answer(self, packet: bytes, udp: bool) -> bytes | defer.Deferred | None: ...


class _Slot:
    """One answer's place in the order: None while it is outstanding, b"" for no answer."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | None) -> None:
        self.data = data


@implementer(IPushProducer)
class DNSStreamProtocol(Protocol):
    """One connection; see the module docstring for the rules it keeps."""

    log = txaio.make_logger()

    def __init__(self, factory: "DNSStreamFactory") -> None:
        self.factory = factory
        self.reactor = factory.reactor
        self.buffer = b""
        self.queue: deque[_Slot] = deque()
        self.timer = None
        self.abort_timer = None
        self.reading = True  # whether the transport reads for us
        self.blocked = False  # the send buffer is full: the client is not reading
        self.processing = False
        self.closing = False
        self.lost = False

    # --- the connection ---

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.timer = self.reactor.callLater(self.factory.idle, self._idle)
        self.factory.opened(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self.factory.touched(self)
        if self.timer is not None and self.timer.active():
            self.timer.reset(self.factory.idle)
        self._process()

    def connectionLost(self, reason) -> None:
        self.lost = True
        self.queue.clear()
        self.buffer = b""
        for timer in (self.timer, self.abort_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.timer = self.abort_timer = None
        self.factory.closed(self)

    # --- IPushProducer: the transport's send buffer filled up or drained ---

    def pauseProducing(self) -> None:
        self.blocked = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self.blocked = False
        self._process()

    def stopProducing(self) -> None:
        pass  # connectionLost follows

    # --- messages and answers ---

    def _must_wait(self) -> bool:
        return (self.lost or self.closing or self.blocked
                or len(self.queue) >= self.factory.max_pending)

    def _process(self) -> None:
        """Answer the complete messages in the buffer, as far as flow control allows."""
        if self.processing:
            return  # called back from inside the loop below, which goes on by itself
        self.processing = True
        try:
            buffer, pos = self.buffer, 0
            while not self._must_wait() and len(buffer) - pos >= 2:
                end = pos + 2 + _LENGTH.unpack_from(buffer, pos)[0]
                if len(buffer) < end:
                    break
                message = buffer[pos + 2:end]
                pos = end
                self._answer(message)
            if not self.lost:
                self.buffer = buffer[pos:]
        finally:
            self.processing = False
        self._update_reading()

    def _update_reading(self) -> None:
        if self.lost or self.closing:
            return
        reading = not self._must_wait()
        if reading != self.reading:
            self.reading = reading
            if reading:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()

    def _answer(self, message: bytes) -> None:
        try:
            result = self.factory.controller.answer(message, udp=False)
        except Exception:  # noqa: BLE001 - a bug must cost one answer, not the connection
            self.log.failure("DNS TCP query failed")
            result = wire.error_response(message, wire.SERVFAIL)
        if result is None:
            return  # dropped: it holds up nothing behind it
        if isinstance(result, defer.Deferred):
            slot = _Slot(None)
            self.queue.append(slot)
            result.addBoth(self._completed, slot)  # may run at once
        elif self.queue:
            self.queue.append(_Slot(result))
        else:
            self._write(result)

    def _completed(self, result: Any, slot: _Slot) -> None:
        if isinstance(result, bytes):
            slot.data = result
        else:
            if result is not None and not result.check(defer.CancelledError):
                self.log.failure("DNS TCP answer failed", failure=result)
            slot.data = b""
        if self.lost:
            return
        while self.queue and self.queue[0].data is not None:
            data = self.queue.popleft().data
            if data:
                self._write(data)
        self._process()  # a full queue may have paused reading

    def _write(self, data: bytes) -> None:
        if len(data) > wire.MAX_UDP:  # cannot be framed (answers are cut below this): SERVFAIL
            ident, flags = struct.unpack_from("!HH", data)
            data = _HEADER.pack(ident, (flags & ~0xF) | wire.SERVFAIL, 0, 0, 0, 0)
        self.transport.write(_LENGTH.pack(len(data)) + data)

    # --- closing ---

    def _idle(self) -> None:
        self.timer = None
        if self.lost or self.closing:
            return
        if self.queue and not self.blocked:
            # Answers are still on their way (recursor timeouts bound the wait): not idle.
            self.timer = self.reactor.callLater(self.factory.idle, self._idle)
            return
        self.close()

    def close(self) -> None:
        """Close once what was written is sent; abort if the client has not read it in time."""
        if self.closing or self.lost:
            return
        self.closing = True
        # Without a producer registered the transport closes as soon as its buffer drains.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        self.abort_timer = self.reactor.callLater(self.factory.idle, self.abort)

    def abort(self) -> None:
        self.abort_timer = None
        self.closing = True
        if not self.lost:
            self.transport.abortConnection()


class DNSStreamFactory(Factory):
    """Builds the connections and keeps them in order of last activity, for eviction."""

    noisy = False

    def __init__(self, controller: Answerer, reactor, *, idle: float = TCP_IDLE,
                 max_pending: int = TCP_MAX_PENDING,
                 max_connections: int = TCP_MAX_CONNECTIONS) -> None:
        self.controller = controller
        self.reactor = reactor
        self.idle = idle
        self.max_pending = max_pending
        self.max_connections = max_connections
        self.connections: dict[DNSStreamProtocol, None] = {}  # least recently active first

    def buildProtocol(self, addr) -> DNSStreamProtocol:
        return DNSStreamProtocol(self)

    def opened(self, connection: DNSStreamProtocol) -> None:
        self.connections[connection] = None
        while len(self.connections) > self.max_connections:
            quietest = next(iter(self.connections))
            del self.connections[quietest]
            quietest.abort()

    def touched(self, connection: DNSStreamProtocol) -> None:
        if self.connections.pop(connection, False) is None:
            self.connections[connection] = None

    def closed(self, connection: DNSStreamProtocol) -> None:
        self.connections.pop(connection, None)

    def abort_all(self) -> None:
        """The service stops: no connection outlives it."""
        for connection in list(self.connections):
            connection.abort()
        self.connections.clear()
