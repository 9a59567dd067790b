"""Forwarding of names outside our domains to the configured recursors.

Recursors are tried in order, each with the recursor timeout. Queries go out with a fresh
random ID from one UDP port; an answer is matched by ID and source address, and must be a
well-formed response to the same question (RFC 5452) or it is ignored. A truncated UDP answer
is asked again over TCP. As in Consul 1.8.7, an answer other than NOERROR or NXDOMAIN moves on
to the next recursor, and when none gives one the client gets SERVFAIL. What is passed on is
cut at the end of the last record, so junk after it never reaches the client.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import txaio
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from gateway.dns import wire

txaio.use_twisted()

# Queries awaiting a UDP answer, over all recursors: the IDs of one recursor must never run
# out (picking a free one would spin), and a flood of outside names must not grow memory.
MAX_PENDING = 8192


class RecursorBusy(Exception):
    """Too many queries are already waiting for the recursors."""


def parse_recursor(text: str) -> tuple[str, int]:
    """"ip", "ip:port", "[v6]:port" or a bare IPv6 address -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return host, int(port.lstrip(":") or 53)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 53


class _TCPQuery(Protocol):
    """One query over one connection; cancelling `done` (the timeout does) drops the
    connection, so a recursor that accepts and never answers holds no socket of ours."""

    def __init__(self, packet: bytes) -> None:
        self.packet = packet
        self.done = defer.Deferred(self._cancel)
        self.buffer = b""

    def _cancel(self, _: defer.Deferred) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self) -> None:
        self.transport.write(struct.pack("!H", len(self.packet)) + self.packet)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= 2:
            size = struct.unpack_from("!H", self.buffer)[0]
            if len(self.buffer) >= 2 + size:
                self.transport.loseConnection()
                if not self.done.called:
                    self.done.callback(self.buffer[2:2 + size])

    def connectionLost(self, reason) -> None:
        if not self.done.called:
            self.done.errback(reason)


class Forwarder(DatagramProtocol):
    log = txaio.make_logger()
    noisy = False

    def __init__(self, reactor, recursors: list[str], timeout: float,
                 rng: random.Random | None = None, max_pending: int = MAX_PENDING) -> None:
        self.reactor = reactor
        self.recursors = [parse_recursor(r) for r in recursors]
        self.timeout = timeout
        self.rng = rng or random.SystemRandom()
        self.max_pending = max_pending
        self.pending: dict[tuple[int, str, int], tuple[defer.Deferred, wire.Question]] = {}
        self.port = None
        self.stopped = False

    def start(self) -> None:
        if self.recursors and self.port is None and not self.stopped:
            self.port = self.reactor.listenUDP(0, self, interface="0.0.0.0")

    def stop(self):
        self.stopped = True
        port, self.port = self.port, None
        for d, _ in list(self.pending.values()):
            if not d.called:
                d.cancel()
        return port.stopListening() if port is not None else None

    def datagramReceived(self, data: bytes, addr) -> None:
        if len(data) < 12:
            return
        key = (struct.unpack_from("!H", data)[0], addr[0], addr[1])
        waiting = self.pending.get(key)
        if waiting is None:
            return
        d, question = waiting
        try:
            wire.check_reply(data, question)
        except wire.FormatError as exc:
            # Not the answer (a spoof, or junk): keep waiting for it until the timeout.
            self.log.debug("ignoring a bad answer from {host}:{port}: {exc}", host=addr[0],
                           port=addr[1], exc=exc)
            return
        del self.pending[key]
        if not d.called:
            d.callback(data)

    @defer.inlineCallbacks
    def forward(self, packet: bytes, tcp: bool):
        """The answer to `packet` from the first recursor that gives one (ID as the client's),
        or None when none does."""
        try:
            question = wire.parse_query(packet)
        except wire.FormatError:
            return None
        client_id = packet[:2]
        for host, port in self.recursors:
            try:
                reply = yield self._ask(packet, question, host, port, tcp)
                end = wire.check_reply(reply, question)
            except defer.CancelledError:
                raise  # the client went away or we are stopping: ask nobody else
            except Exception as exc:  # noqa: BLE001 - try the next recursor
                self.log.debug("recursor {host}:{port} failed: {exc}", host=host, port=port,
                               exc=exc)
                continue
            if reply[3] & 0xF not in (wire.NOERROR, wire.NXDOMAIN):
                self.log.debug("recursor {host}:{port} answered rcode {rcode}", host=host,
                               port=port, rcode=reply[3] & 0xF)
                continue
            return client_id + reply[2:end]
        return None

    @defer.inlineCallbacks
    def _ask(self, packet: bytes, question: wire.Question, host: str, port: int, tcp: bool):
        if tcp:
            reply = yield self._ask_tcp(packet, host, port)
            if reply[:2] != packet[:2]:
                raise wire.FormatError("an answer with another ID")
            return reply
        reply = yield self._ask_udp(packet, question, host, port)
        if reply[2] & 0x02:  # TC: ask again over TCP
            try:
                full = yield self._ask_tcp(packet, host, port)
                end = wire.check_reply(full, question)
                if full[:2] == packet[:2] and end <= max(wire.MIN_UDP, question.udp_size):
                    reply = full
            except defer.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the truncated answer still stands
                pass
        return reply

    def _ask_udp(self, packet: bytes, question: wire.Question, host: str,
                 port: int) -> defer.Deferred:
        if self.port is None:
            self.start()
        if self.port is None:
            return defer.fail(defer.CancelledError())  # stopped
        if len(self.pending) >= self.max_pending:
            return defer.fail(RecursorBusy(f"{len(self.pending)} queries waiting"))
        ident = self.rng.randrange(65536)
        key = (ident, host, port)
        while key in self.pending:
            ident = self.rng.randrange(65536)
            key = (ident, host, port)
        d = defer.Deferred()
        self.pending[key] = (d, question)
        d.addTimeout(self.timeout, self.reactor)
        d.addBoth(self._forget, key, d)
        try:
            self.transport.write(struct.pack("!H", ident) + packet[2:], (host, port))
        except OSError as exc:  # unreachable network and the like: this recursor failed
            d.errback(exc)
        return d

    def _forget(self, result: Any, key, d: defer.Deferred) -> Any:
        waiting = self.pending.get(key)
        if waiting is not None and waiting[0] is d:
            del self.pending[key]
        return result

    def _ask_tcp(self, packet: bytes, host: str, port: int) -> defer.Deferred:
        query = _TCPQuery(packet)
        done = query.done
        endpoint = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(
            self.reactor, host, port, timeout=self.timeout)
        connecting = endpoint.connect(Factory.forProtocol(lambda: query))
        connecting.addErrback(lambda f: done.errback(f) if not done.called else None)
        # A timeout while still connecting stops the attempt; once connected, the query's
        # canceller drops the connection.
        done.addBoth(_passthrough_after, connecting.cancel)
        done.addTimeout(self.timeout, self.reactor)
        return done


def _passthrough_after(result: Any, call) -> Any:
    call()
    return result
