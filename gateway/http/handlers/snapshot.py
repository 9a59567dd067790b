"""/v1/snapshot: save (GET) and restore (PUT) the whole cluster's state as Consul's archive.

Goes through `facade.operator` (`agent.operator.OperatorControl`), which hands over and takes
the raw state bytes; the archive around them (`agent.snapshot_archive`) is made and checked
here. As Consul 1.8.7 answers: GET sends the gzip archive (`application/x-gzip`, what Go
sniffs from it) with the X-Consul-Index/KnownLeader/LastContact headers, the index being the
snapshot's Raft index; PUT answers 200 with no body once the state is restored.

A damaged archive is a 400 naming the damage (Consul answers 500 with the same kind of text;
it is the client's fault, so we say so). An agent without consensus (no `facade.operator`)
answers a 500 that says why.

Packing and checking a large archive (gzip, SHA-256) takes seconds: above `INLINE_LIMIT` it
runs in the reactor's thread pool so the agent keeps answering meanwhile.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool

from agent.errors import InvalidRequest, WaypostError
from agent.snapshot_archive import SnapshotArchiveError, pack, unpack
from gateway.http.api import VARY
from gateway.http.request import Response
from gateway.http.results import EMPTY

GZIP = b"application/x-gzip"
# The largest archive /v1/snapshot takes (the HTTP layer's body cap for this path) and the
# largest state it unpacks from one.
MAX_ARCHIVE = 256 * 1024 * 1024
MAX_STATE = 1024 * 1024 * 1024
INLINE_LIMIT = 1024 * 1024
NO_CONSENSUS = ("Snapshots need a server agent taking part in Raft consensus; "
                "this agent has none")


def _off_reactor(reactor: Any, size: int, fn: Callable, *args: Any, **kwargs: Any) -> Deferred:
    """`fn(*args)` as a Deferred: in the reactor's thread pool when the data is large."""
    pool = getattr(reactor, "getThreadPool", None)
    if size <= INLINE_LIMIT or pool is None:
        return maybeDeferred(fn, *args, **kwargs)
    return deferToThreadPool(reactor, pool(), fn, *args, **kwargs)


def _operator(facade) -> Any:
    operator = getattr(facade, "operator", None)
    if operator is None:
        raise WaypostError(NO_CONSENSUS)
    return operator


def snapshot(facade, request, params, arg):
    operator = _operator(facade)
    if request.method == "PUT":
        return _restore(facade, operator, request.body)
    return _save(facade, operator, stale="stale" in request.query)


def _save(facade, operator, stale: bool) -> Deferred:
    taken = operator.snapshot_save(stale=stale)

    def configured(saved):
        state, meta = saved
        if "configuration" in meta:
            return state, meta, meta["configuration"], meta.get("configuration_index", 0)
        # The operator's meta may lack the servers: Raft's current configuration stands in.
        return operator.raft_configuration(stale=True).addCallback(
            lambda conf: (state, meta, conf.get("Servers", []), conf.get("Index", 0)))

    def archived(parts):
        state, meta, servers, conf_index = parts
        index = int(meta["index"])
        packing = _off_reactor(facade.reactor, len(state), pack, state, index=index,
                               term=int(meta["term"]), configuration=servers,
                               configuration_index=int(conf_index),
                               now=facade.reactor.seconds())
        return packing.addCallback(lambda body: Response(200, body, [
            VARY, (b"X-Consul-Index", b"%d" % index), (b"X-Consul-KnownLeader", b"true"),
            (b"X-Consul-LastContact", b"%d" % facade.last_contact_ms())], content_type=GZIP))
    return taken.addCallback(configured).addCallback(archived)


def _restore(facade, operator, body: bytes) -> Deferred:
    def refused(failure):
        failure.trap(SnapshotArchiveError)
        raise InvalidRequest(str(failure.value))

    checking = _off_reactor(facade.reactor, len(body), unpack, body, max_state_size=MAX_STATE)
    checking.addErrback(refused)
    checking.addCallback(lambda unpacked: operator.snapshot_restore(unpacked[1]))
    return checking.addCallback(lambda _: EMPTY)
