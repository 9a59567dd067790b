"""The server endpoints over the server RPC: `RemoteEndpoints` (a client agent's side) and
`EndpointsHandler` (what a server's listener answers calls with).

A client agent has no replica: every read and write is a call to a server. Servers are the
gossip members tagged wp=server in this datacenter (`agent.gossip.serf.consul_tags`), asked
each time, so a server that joins is used at once. Calls go to one preferred server; a call
that fails on a connection error moves on to the next (a write only when it was never sent,
so it is never applied twice). With no server known every call fails with Consul's "No known
Consul servers".

Stale reads that are not blocking (DNS, alias checks, ?stale) are answered from a *mirror*: the
first such read of a query starts a background blocking query that keeps its answer current,
so later reads are answered at once (a DNS answer cannot wait) and `on_change` listeners hear
when it changes. An unused mirror entry is dropped after `MIRROR_IDLE`; one whose refresh
fails is dropped at once (its next read asks a server again).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import txaio
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.python.failure import Failure

from agent import errors
from agent.errors import InvalidRequest, NoLeader, NoServers, WaypostError
from agent.rpc import queries as q
from agent.rpc import wire
from agent.rpc.options import (DEFAULT_WAIT, JITTER_FRACTION, MAX_WAIT, STALE, QueryOptions,
                               ReadResult, WriteRequest, WriteResult)
from agent.rpc.transport import ConnectionPool, RemoteError, RPCConnectionError

txaio.use_twisted()

CALL_TIMEOUT = 30.0  # a call that is not a blocking query
BLOCKING_MARGIN = 10.0  # beyond the longest wait a server may take (with its jitter)
MIRROR_WAIT = 60.0  # each refresh of a mirrored answer parks this long on the server
MIRROR_IDLE = 600.0  # a mirrored answer nobody read for this long stops being refreshed
MIRROR_LIMIT = 512
ALL_TABLES = frozenset({"nodes", "services", "checks", "kvs", "sessions"})
_MIRRORED = frozenset({q.CatalogNodes, q.CatalogServices, q.CatalogServiceNodes,
                       q.CatalogNodeServices, q.HealthNodeChecks, q.HealthServiceChecks,
                       q.HealthServiceNodes, q.HealthChecksInState, q.ServiceDump})

# The server's exception kinds the client raises again, so frontends answer as on a server.
_KINDS: dict[str, Callable[[str], Exception]] = {
    "InvalidRequest": InvalidRequest, "WireError": InvalidRequest,
    "NotFound": errors.NotFound, "PermissionDenied": errors.PermissionDenied,
    "NoLeader": lambda text: NoLeader(), "UnknownDatacenter": lambda text: _unknown_dc(),
}


def _unknown_dc() -> Exception:
    exc = errors.UnknownDatacenter("")
    return exc


def _local_error(failure: Failure) -> Failure:
    if failure.check(RemoteError):
        exc = failure.value
        return Failure(_KINDS.get(exc.kind, WaypostError)(str(exc)))
    return failure


def call_timeout(options: QueryOptions) -> float:
    """How long to wait for an answer: a blocking query parks on the server up to its wait
    (Consul's default and cap) plus jitter, so the client waits longer than that."""
    if not options.blocking:
        return CALL_TIMEOUT
    wait = min(options.wait if options.wait > 0 else DEFAULT_WAIT, MAX_WAIT)
    return wait + wait / JITTER_FRACTION + BLOCKING_MARGIN


class RemoteEndpoints:
    """The server endpoints' interface (`read`, `write`, `on_change`, `local_index`, `leader`,
    `peers`, `last_contact`) answered by the servers `servers()` names ("host:port")."""

    log = txaio.make_logger()

    def __init__(self, reactor, servers: Callable[[], list[str]], *,
                 pool: ConnectionPool | None = None, rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self._servers = servers
        self._pool = pool or ConnectionPool(reactor)
        self._rng = rng or random.Random()
        self._preferred: str | None = None
        self._listeners: list[Callable[[int, frozenset[str]], None]] = []
        self._mirror: dict[Any, _Watch] = {}
        self._stopped = False

    # --- what frontends learn of the servers ----------------------------------------------------

    def on_change(self, listener: Callable[[int, frozenset[str]], None]) -> Callable[[], None]:
        """Listeners hear when a mirrored answer changes (or is dropped); no replica here."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
        return unsubscribe

    def local_index(self, consistency: str, max_stale: float = 0.0) -> int | None:
        return None  # nothing is answered here without a round trip

    def leader(self) -> str:
        """The server this agent talks to (today's servers each lead their own log)."""
        servers = self._servers()
        if not servers:
            return ""
        return self._preferred if self._preferred in servers else servers[0]

    def peers(self) -> list[str]:
        return list(self._servers())

    def last_contact(self) -> float:
        return 0.0

    # --- calls ----------------------------------------------------------------------------------

    def read(self, query: Any, options: QueryOptions) -> ReadResult | Deferred:
        if (options.consistency == STALE and not options.blocking and not options.filter
                and type(query) in _MIRRORED):
            return self._mirrored(query, options)
        return self._read(query, options)

    def _read(self, query: Any, options: QueryOptions) -> Deferred:
        try:
            endpoint, args = wire.encode_read(query, options)
        except WaypostError:
            return fail()
        d = self._call(endpoint, args, call_timeout(options), resend=True)
        d.addCallback(lambda body: ReadResult(*wire.decode_read_result(query, body)))
        return d

    def write(self, command: Any, request: WriteRequest) -> Deferred:
        try:
            endpoint, args = wire.encode_write(command, request.datacenter, request.token)
        except WaypostError:
            return fail()
        d = self._call(endpoint, args, CALL_TIMEOUT, resend=False)
        d.addCallback(lambda body: WriteResult(*wire.decode_write_result(command, body)))
        return d

    def call(self, method: str, body: Any, timeout: float = CALL_TIMEOUT) -> Deferred:
        """Any other server RPC method (the operator's); never sent twice."""
        return self._call(method, body, timeout, resend=False)

    def _call(self, endpoint: str, args: dict, timeout: float, *, resend: bool) -> Deferred:
        servers = self._servers()
        if not servers:
            return fail(NoServers())
        if self._preferred not in servers:
            self._preferred = self._rng.choice(servers)
        start = servers.index(self._preferred)
        order = servers[start:] + servers[:start]
        result = Deferred(lambda d: attempt[0].cancel() if attempt else None)
        attempt: list[Deferred] = []

        def try_server(i: int) -> None:
            address = order[i]
            d = self._pool.call(address, endpoint, args, timeout)
            attempt[:] = [d]

            def failed(f: Failure) -> None:
                if f.check(CancelledError):
                    return
                retry = f.check(RPCConnectionError) and (resend or not f.value.sent)
                if retry and i + 1 < len(order):
                    self.log.debug("{endpoint} to {address} failed ({why}); trying {next}",
                                   endpoint=endpoint, address=address, why=f.getErrorMessage(),
                                   next=order[i + 1])
                    self._preferred = order[i + 1]
                    try_server(i + 1)
                    return
                result.errback(_local_error(f))
            d.addCallbacks(result.callback, failed)
        try_server(0)
        return result

    # --- the mirror of stale reads --------------------------------------------------------------

    def _mirrored(self, query: Any, options: QueryOptions) -> ReadResult | Deferred:
        key = (query, options.datacenter, options.token)
        watch = self._mirror.get(key)
        now = self._reactor.seconds()
        if watch is not None:
            watch.last_read = now
            if watch.result is not None:
                return watch.result
            waiter = Deferred()
            watch.waiters.append(waiter)
            return waiter
        if len(self._mirror) >= MIRROR_LIMIT or self._stopped:
            return self._read(query, options)
        watch = _Watch(last_read=now)
        self._mirror[key] = watch
        waiter = Deferred()
        watch.waiters.append(waiter)
        self._refresh(key, watch, QueryOptions(datacenter=options.datacenter, token=options.token,
                                               consistency=STALE))
        return waiter

    def _refresh(self, key, watch: "_Watch", options: QueryOptions) -> None:
        d = self._read(key[0], options)
        watch.running = d

        def answered(result: ReadResult) -> None:
            if self._mirror.get(key) is not watch:
                return
            changed = watch.result is not None and result.index != watch.result.index
            first = watch.result is None
            watch.result = result if first or changed else watch.result
            for waiter in watch.waiters:
                waiter.callback(result)
            watch.waiters.clear()
            if changed:
                self._changed(result.index)
            if self._reactor.seconds() - watch.last_read > MIRROR_IDLE:
                del self._mirror[key]
                return
            self._refresh(key, watch, QueryOptions(
                datacenter=options.datacenter, token=options.token, consistency=STALE,
                min_index=watch.result.index, wait=MIRROR_WAIT))

        def failed(f: Failure) -> None:
            if self._mirror.get(key) is watch:
                del self._mirror[key]
                if watch.result is not None:
                    self._changed(watch.result.index)  # what was served may be gone now
            for waiter in watch.waiters:
                waiter.errback(f)
            watch.waiters.clear()
        d.addCallbacks(answered, failed)
        d.addErrback(lambda f: None if f.check(CancelledError) else
                     self.log.failure("refreshing a mirrored read failed", f))

    def _changed(self, index: int) -> None:
        for listener in list(self._listeners):
            try:
                listener(index, ALL_TABLES)
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                self.log.failure("an on_change listener failed")

    def stop(self) -> None:
        """Stop refreshing and close the connections (the agent is stopping)."""
        self._stopped = True
        mirror, self._mirror = self._mirror, {}
        for watch in mirror.values():
            if watch.running is not None:
                watch.running.cancel()
        self._pool.close()


@dataclass(eq=False)
class _Watch:
    last_read: float
    result: ReadResult | None = None
    running: Deferred | None = None
    waiters: list[Deferred] = field(default_factory=list)


class EndpointsHandler:
    """A server's answer to each call on its server port: the wire codec around its
    `ServerEndpoints` (net/rpc's error texts for a method nobody serves)."""

    def __init__(self, endpoints: Any, operator: Any = None) -> None:
        """`operator` (an `agent.cluster_operator.ServerOperator`) answers the operator's
        methods; None: they are unknown here."""
        self._endpoints = endpoints
        self._operator = operator

    def __call__(self, method: str, body: Any) -> Any:
        if method == "Status.Ping":
            return {}
        if self._operator is not None:
            from agent.cluster_operator import operator_rpc
            answer = operator_rpc(self._operator, method, body)
            if answer is not None:
                return answer
        if method == "Status.Peers":
            return list(self._endpoints.peers())
        if method == "Status.Leader":
            return self._endpoints.leader()
        if method in wire.READ_SPECS:
            query, options = wire.decode_read(method, body)
            d = maybeDeferred(self._endpoints.read, query, options)
            return d.addCallback(lambda r: wire.encode_read_result(method, r.value, r.meta))
        if method in wire.WRITE_ENDPOINTS:
            command, dc, token = wire.decode_write(method, body)
            d = self._endpoints.write(command, WriteRequest(datacenter=dc, token=token))
            return d.addCallback(lambda r: wire.encode_write_result(command, r.index, r.value))
        service = method.partition(".")[0]
        known = {name.partition(".")[0] for name in (*wire.READ_SPECS, *wire.WRITE_ENDPOINTS,
                                                     "Status.Ping", "Status.Peers")}
        if service in known:
            raise WaypostError(f"rpc: can't find method {method}")
        raise WaypostError(f"rpc: can't find service {method}")
