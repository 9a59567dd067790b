"""Forwarding of names outside our domains to the configured recursors.

Recursors are tried in order, each with the recursor timeout. Queries go out with a fresh
random ID from one UDP port; an answer is matched by ID and source address. A truncated UDP
answer is asked again over TCP.
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
    def __init__(self, packet: bytes, done: defer.Deferred) -> None:
        self.packet = packet
        self.done = done
        self.buffer = b""

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
                 rng: random.Random | None = None) -> None:
        self.reactor = reactor
        self.recursors = [parse_recursor(r) for r in recursors]
        self.timeout = timeout
        self.rng = rng or random.SystemRandom()
        self.pending: dict[tuple[int, str, int], defer.Deferred] = {}
        self.port = None

    def start(self) -> None:
        if self.recursors and self.port is None:
            self.port = self.reactor.listenUDP(0, self, interface="0.0.0.0")

    def stop(self):
        port, self.port = self.port, None
        for d in list(self.pending.values()):
            if not d.called:
                d.cancel()
        return port.stopListening() if port is not None else None

    def datagramReceived(self, data: bytes, addr) -> None:
        if len(data) < 12:
            return
        key = (struct.unpack_from("!H", data)[0], addr[0], addr[1])
        d = self.pending.pop(key, None)
        if d is not None and not d.called:
            d.callback(data)

    @defer.inlineCallbacks
    def forward(self, packet: bytes, tcp: bool):
        """The answer to `packet` from the first recursor that gives one (ID as the client's)."""
        client_id = packet[:2]
        for host, port in self.recursors:
            try:
                if tcp:
                    reply = yield self._ask_tcp(packet, host, port)
                else:
                    reply = yield self._ask_udp(packet, host, port)
                    if len(reply) >= 4 and reply[2] & 0x02:  # TC: ask again over TCP
                        try:
                            full = yield self._ask_tcp(packet, host, port)
                            if len(full) <= max(wire.MIN_UDP, _client_udp_size(packet)):
                                reply = full
                        except Exception:  # noqa: BLE001 - the truncated answer still stands
                            pass
            except Exception as exc:  # noqa: BLE001 - try the next recursor
                self.log.debug("recursor {host}:{port} failed: {exc}", host=host, port=port, exc=exc)
                continue
            return client_id + reply[2:]
        return None

    def _ask_udp(self, packet: bytes, host: str, port: int) -> defer.Deferred:
        if self.port is None:
            self.start()
        ident = self.rng.randrange(65536)
        key = (ident, host, port)
        while key in self.pending:
            ident = self.rng.randrange(65536)
            key = (ident, host, port)
        d = defer.Deferred()
        self.pending[key] = d
        self.transport.write(struct.pack("!H", ident) + packet[2:], (host, port))
        d.addTimeout(self.timeout, self.reactor)
        d.addBoth(self._forget, key)
        return d

    def _forget(self, result: Any, key) -> Any:
        self.pending.pop(key, None)
        return result

    def _ask_tcp(self, packet: bytes, host: str, port: int) -> defer.Deferred:
        done = defer.Deferred()
        endpoint = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(
            self.reactor, host, port, timeout=self.timeout)
        factory = Factory.forProtocol(lambda: _TCPQuery(packet, done))
        connecting = endpoint.connect(factory)
        connecting.addErrback(lambda f: done.errback(f) if not done.called else None)
        done.addTimeout(self.timeout, self.reactor)
        return done


def _client_udp_size(packet: bytes) -> int:
    try:
        return wire.parse_query(packet).udp_size
    except wire.FormatError:
        return wire.MIN_UDP
