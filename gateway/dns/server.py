"""The DNS frontend's sockets and its controller: cache, authority, recursors, stale answers.

The UDP hot path is one dictionary lookup on the query's bytes and one write with the ID
patched in; everything else (parsing, resolving, encoding) happens once per question and
catalog change. Nothing a client sends can raise out of here: malformed queries get FORMERR
(or are dropped when not even the header makes sense, as Consul does), an EDNS version other
than 0 gets BADVERS, and an answer that fails to encode gets SERVFAIL. DNS over TCP lives in
`gateway.dns.stream`.
"""

from __future__ import annotations

import random

import txaio
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from agent.errors import NoLeader, UnknownDatacenter
from agent.facade import CATALOG_TABLES
from gateway.dns import wire
from gateway.dns.authority import Answer, ConsulAuthority  # noqa: F401 - Answer in annotations
from gateway.dns.cache import VARIANTS, AnswerCache
from gateway.dns.catalog import DNSCatalog, Pending
from gateway.dns.fit import encode_answer
from gateway.dns.recursor import Forwarder
from gateway.dns.stream import TCP_IDLE, TCP_MAX_CONNECTIONS, DNSStreamFactory

txaio.use_twisted()

PENDING_ROUNDS = 4  # reads one answer may wait for (a client agent's first reads of a name)
STALE_TTL = 30  # RFC 8767's recommended TTL for answers served past their freshness


def _with_ttl(records, ttl: int):
    return [r._replace(ttl=ttl) for r in records]


class DNSController:
    """Turns a query packet into answer bytes (or a Deferred of them, or None to drop)."""

    log = txaio.make_logger()

    def __init__(self, facade, reactor, authority: ConsulAuthority, forwarder: Forwarder | None,
                 *, rng: random.Random | None = None, cache_answers: bool = True) -> None:
        self.facade = facade
        self.reactor = reactor
        self.authority = authority
        self.forwarder = forwarder
        self.rng = rng or random.Random()
        self.cache_answers = cache_answers
        self.udp_cache = AnswerCache()
        self._read_memo: dict = {}  # DNSCatalog reads by query, with their index
        self.tcp_cache = AnswerCache()
        self.stale_served = 0
        self.unsubscribe = facade.on_change(self._changed)
        # Losing the leader makes every cached answer stale; finding it again, too old.
        getattr(facade, "leader_listeners", []).append(lambda known: self._invalidate())

    def _changed(self, index: int, tables) -> None:
        if tables & CATALOG_TABLES:
            self._invalidate()

    def _invalidate(self) -> None:
        self.udp_cache.invalidate()
        self.tcp_cache.invalidate()

    @property
    def dns_config(self):
        return self.facade.config.dns_config

    def catalog(self) -> DNSCatalog:
        """What one answer reads, in the mode `dns_config` allows: stale reads within
        `max_stale` by default (reads raise NoLeader when no fresh enough state can be had)."""
        return DNSCatalog(self.facade, self.dns_config, memo=self._read_memo)

    def answer(self, packet: bytes, udp: bool) -> bytes | defer.Deferred | None:
        cache = self.udp_cache if udp else self.tcp_cache
        key = packet[2:]
        entry = cache.entries.get(key)
        if entry is not None and entry.epoch == cache.epoch:
            if entry.shuffle and len(entry.variants) < VARIANTS:
                self._add_variant(entry, udp)
            return packet[:2] + entry.next_variant()
        try:
            question = wire.parse_query(packet)
        except wire.FormatError:
            return wire.error_response(packet, wire.FORMERR)
        try:
            return self._resolve(packet, question, key, cache, entry, udp)
        except Exception:  # noqa: BLE001 - a bug must cost one answer, not the server
            self.log.failure("DNS query for {name!r} failed", name=question.name)
            return wire.error_response(packet, wire.SERVFAIL)

    def _resolve(self, packet: bytes, question: wire.Question, key: bytes, cache: AnswerCache,
                 stale_entry, udp: bool, rounds: int = 0):
        if question.edns_version != 0:
            # RFC 6891 6.1.3. Consul 1.8.7 ignores the version and answers as for version 0;
            # a client that gets BADVERS asks again with version 0 (dig does), so it loses
            # nothing. Never cached: the answer cache holds only version-0 questions.
            return packet[:2] + wire.encode_response(question, wire.BADVERS,
                                                     authoritative=False)[2:]
        if question.opcode != 0:
            return wire.error_response(packet, wire.NOTIMP)
        name = question.lower
        recursion = self.forwarder is not None and bool(self.forwarder.recursors)
        if self.authority.handles(name):
            try:
                answer = self.authority.resolve(question, self.catalog(), self.rng)
            except Pending as pending:
                # A client agent asked a server; once it answered, resolving again finds the
                # answer at hand. Bounded: reads that always wait get the stale answer.
                d = pending.deferred
                if rounds >= PENDING_ROUNDS:
                    d.cancel()
                    d.addErrback(lambda f: None)
                    return self._serve_stale(packet, stale_entry, udp)
                return d.addCallbacks(
                    lambda _: self._resolve(packet, question, key, cache, stale_entry, udp,
                                            rounds + 1),
                    lambda f: self._pending_failed(f, packet, question, stale_entry, udp))
            except NoLeader:
                return self._serve_stale(packet, stale_entry, udp)
            if answer is not None:
                encoded = encode_answer(question, answer, self.dns_config, udp=udp,
                                        recursion_available=recursion)
                if self.cache_answers and not answer.remote:
                    shuffle = len(answer.answers) > 1
                    cache.store(key, encoded[2:], shuffle, question, answer)
                return packet[:2] + encoded[2:]
        if recursion:
            d = self.forwarder.forward(packet, tcp=not udp)
            return d.addCallbacks(lambda reply: reply if reply is not None
                                  else wire.error_response(packet, wire.SERVFAIL),
                                  self._forward_failed, errbackArgs=(packet, question))
        if name.endswith(".arpa"):
            # A reverse name we do not know: say so, rather than refuse the whole zone.
            encoded = wire.encode_response(question, wire.NXDOMAIN, authoritative=False)
        else:
            encoded = wire.encode_response(question, wire.REFUSED, authoritative=False,
                                           echo_edns=False)
        return packet[:2] + encoded[2:]

    def _pending_failed(self, failure: Failure, packet: bytes, question: wire.Question,
                        stale_entry, udp: bool):
        if failure.check(UnknownDatacenter):  # another datacenter nobody has a path to
            recursion = self.forwarder is not None and bool(self.forwarder.recursors)
            encoded = encode_answer(question, self.authority.no_path(question), self.dns_config,
                                    udp=udp, recursion_available=recursion)
            return packet[:2] + encoded[2:]
        return self._serve_stale(packet, stale_entry, udp)

    def _forward_failed(self, failure: Failure, packet: bytes, question: wire.Question):
        if failure.check(defer.CancelledError):
            return None  # the agent is stopping
        self.log.failure("forwarding {name!r} failed", failure=failure, name=question.name)
        return wire.error_response(packet, wire.SERVFAIL)

    def _add_variant(self, entry, udp: bool) -> None:
        recursion = self.forwarder is not None and bool(self.forwarder.recursors)
        try:
            try:
                answer = self.authority.resolve(entry.question, self.catalog(), self.rng)
            except Pending as pending:  # not at hand: keep the variants we have
                pending.deferred.addErrback(lambda f: None)
                entry.shuffle = False
                return
            if answer is None:
                entry.shuffle = False
                return
            encoded = encode_answer(entry.question, answer, self.dns_config, udp=udp,
                                    recursion_available=recursion)
        except Exception:  # noqa: BLE001 - keep serving the variants we have
            self.log.failure("DNS answer variant for {name!r} failed", name=entry.question.name)
            entry.shuffle = False
            return
        entry.variants.append(encoded[2:])

    def _serve_stale(self, packet: bytes, entry, udp: bool):
        """No leader: the last answer we had, with a short TTL, beats SERVFAIL (RFC 8767)."""
        if entry is None:
            return wire.error_response(packet, wire.SERVFAIL)
        self.stale_served += 1
        answer: Answer = entry.answer
        stale = answer._replace(answers=_with_ttl(answer.answers, STALE_TTL),
                                authority=_with_ttl(answer.authority, STALE_TTL),
                                additional=_with_ttl(answer.additional, STALE_TTL))
        encoded = encode_answer(entry.question, stale, self.dns_config, udp=udp,
                                recursion_available=False)
        return packet[:2] + encoded[2:]


class DNSDatagramProtocol(DatagramProtocol):
    log = txaio.make_logger()
    noisy = False  # the port's own open/close lines are enough

    def __init__(self, controller: DNSController) -> None:
        self.controller = controller

    def datagramReceived(self, data: bytes, addr) -> None:
        # The cached hot path is inlined: this runs for every packet.
        controller = self.controller
        cache = controller.udp_cache
        entry = cache.entries.get(data[2:])
        if entry is not None and entry.epoch == cache.epoch and not (
                entry.shuffle and len(entry.variants) < VARIANTS):
            variants = entry.variants
            entry.turn = turn = (entry.turn + 1) % len(variants)
            try:
                self.transport.write(data[:2] + variants[turn], addr)
            except OSError as exc:  # a source address nobody can answer (port 0, say)
                self.log.debug("cannot answer {addr}: {exc}", addr=addr, exc=exc)
            return
        try:
            result = controller.answer(data, udp=True)
        except Exception:  # noqa: BLE001 - never let a packet reach the reactor's error path
            self.log.failure("DNS packet from {addr} failed", addr=addr)
            result = wire.error_response(data, wire.SERVFAIL)
        if isinstance(result, defer.Deferred):
            result.addCallback(self._send, addr)
            result.addErrback(lambda f: self.log.failure("forwarding failed", failure=f))
        elif result is not None:
            self._send(result, addr)

    def _send(self, data: bytes | None, addr) -> None:
        if data is None or self.transport is None:
            return
        try:
            self.transport.write(data, addr)
        except OSError as exc:  # a source address nobody can answer (port 0, say)
            self.log.debug("cannot answer {addr}: {exc}", addr=addr, exc=exc)


class DNSService(Service):
    """Listens on UDP and TCP; the port numbers are known after start (port 0 in tests)."""

    log = txaio.make_logger()

    def __init__(self, controller: DNSController, reactor, host: str, port: int, *,
                 tcp_idle: float = TCP_IDLE,
                 tcp_max_connections: int = TCP_MAX_CONNECTIONS) -> None:
        self.controller = controller
        self.reactor = reactor
        self.host = host
        self.port = port
        self.tcp_idle = tcp_idle
        self.tcp_max_connections = tcp_max_connections
        self.udp_port = None
        self.tcp_port = None
        self.tcp_factory: DNSStreamFactory | None = None
        self.name = "dns"

    def startService(self) -> None:
        factory = DNSStreamFactory(self.controller, self.reactor, idle=self.tcp_idle,
                                   max_connections=self.tcp_max_connections)
        self.tcp_factory = factory
        # With port 0 both sockets must share one number the kernel chose for one of them:
        # the other may find it taken, so try again with a new number a few times.
        attempts = 20 if self.port == 0 else 1
        for attempt in range(attempts):
            self.udp_port = self.reactor.listenUDP(self.port, DNSDatagramProtocol(self.controller),
                                                   interface=self.host)
            port = self.udp_port.getHost().port
            try:
                self.tcp_port = self.reactor.listenTCP(port, factory, interface=self.host)
                break
            except CannotListenError:
                self.udp_port.stopListening()
                self.udp_port = None
                if attempt == attempts - 1:
                    raise
        if self.controller.forwarder is not None:
            self.controller.forwarder.start()
        for network, listening in (("udp", self.udp_port), ("tcp", self.tcp_port)):
            host = listening.getHost()
            self.log.info("Started DNS server: address={host}:{port} network={network}",
                          host=host.host, port=host.port, network=network)
        super().startService()

    def stopService(self):
        super().stopService()
        waits = []
        for port in (self.udp_port, self.tcp_port):
            if port is not None:
                waits.append(defer.maybeDeferred(port.stopListening))
        if self.tcp_factory is not None:
            self.tcp_factory.abort_all()
        if self.controller.forwarder is not None:
            waits.append(defer.maybeDeferred(self.controller.forwarder.stop))
        return defer.DeferredList(waits)

    def bound_port(self) -> int | None:
        return self.udp_port.getHost().port if self.udp_port is not None else None
