"""What an etcd request reads, through the core's read seam only (``facade.read``).

Owns: gathering the KV rows one request looks at into a `Snapshot` (the entries under a key,
the files above it for writes, the tombstones under it for watches, the sessions holding any of
them), and when the etcd TTL sessions expire (`Expiries`). An etcd key and its directory are
one prefix read: ``KVList("a/b")`` holds ``a/b``, the marker ``a/b/`` and everything below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred

from agent.errors import NoLeader
from agent.facade import QueryOptions, ReadResult, Session, queries
from agent.structs import SESSION_DELETE, SESSION_TTL_MULTIPLIER, KVEntry
from gateway.etcd.tree import Rows, Tree, parents

__all__ = ["Expiries", "Reader", "Snapshot", "is_ttl_session", "read"]

def read(facade, query: Any, options: QueryOptions) -> Deferred:
    """``facade.read`` as a Deferred (it fires at once when the core answered at once)."""
    return maybeDeferred(facade.read, query, options)


class Expiries:
    """Turns the seconds a TTL session has left into what etcd shows: whole seconds and an
    RFC 3339 expiration, on the injected reactor's clock."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def info(self, seconds_left: float) -> tuple[int, str]:
        """(whole seconds left, RFC 3339 expiration)."""
        deadline = self._reactor.seconds() + max(0.0, seconds_left)
        stamp = datetime.fromtimestamp(deadline, timezone.utc).isoformat()
        return max(0, math.ceil(seconds_left)), stamp.replace("+00:00", "Z")


@dataclass
class Snapshot:
    """The rows a request read, the sessions holding any of them, how long the TTL ones have
    left (the leader's timers), and the index of the prefix read (what a blocking read of it
    waits past)."""

    rows: Rows
    sessions: dict[str, Session]
    index: int
    expiries: Expiries
    left: dict[str, float] = field(default_factory=dict)
    tree: Tree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = Tree(self.rows, self.ttl_info)

    def ttl_info(self, entry: KVEntry) -> tuple[int, str] | None:
        """(seconds left, expiration) of a key its session will delete, else None."""
        session = self.sessions.get(entry.session)
        if not is_ttl_session(session):
            return None
        # No timer known (a follower answering, or the leader restarted it just now): the
        # longest the session may still live.
        return self.expiries.info(self.left.get(session.id,
                                                session.ttl * SESSION_TTL_MULTIPLIER))

    def track(self, session: Session, seconds_left: float) -> None:
        """A session this request created or renewed: it has `seconds_left`."""
        self.sessions[session.id] = session
        self.left[session.id] = seconds_left


def is_ttl_session(session: Session | None) -> bool:
    """Whether `session` deletes what it holds when its TTL runs out (an etcd TTL)."""
    return session is not None and session.ttl > 0 and session.behavior == SESSION_DELETE


class Reader:
    """Reads `Snapshot`s for one request, in the consistency mode of ``options``."""

    def __init__(self, facade, expiries: Expiries, options: QueryOptions = QueryOptions()) -> None:
        self.facade = facade
        self.expiries = expiries
        self.options = options

    def read(self, query: Any, options: QueryOptions | None = None) -> Deferred:
        return read(self.facade, query, options or self.options)

    @inlineCallbacks
    def snapshot(self, kv: str, *, ancestors: bool = False, tombstones: bool = False,
                 min_index: int = 0):
        """The rows under ``kv`` (itself included). With ``ancestors``, the files above it
        too (a write refuses a key below a file); with ``tombstones``, the deletions under it
        that the store remembers (a watch reports them). ``min_index`` makes the prefix read
        blocking: it fires once something under ``kv`` changed past that index, or when the
        core's wait runs out. Fires with a `Snapshot`."""
        options = self.options
        if min_index:
            options = QueryOptions(datacenter=options.datacenter, token=options.token,
                                   consistency=options.consistency, min_index=min_index)
        listed: ReadResult = yield self.read(queries.KVList(kv), options)
        entries = list(listed.value)
        if ancestors:
            for parent in parents(kv):
                found: ReadResult = yield self.read(queries.KVGet(parent))
                if found.value is not None:
                    entries.append(found.value)
        deleted: list[tuple[str, int]] = []
        if tombstones:
            deleted = (yield self.read(queries.KVTombstones(kv))).value
        sessions: dict[str, Session] = {}
        left: dict[str, float] = {}
        if any(entry.session for entry in entries):
            listing: ReadResult = yield self.read(queries.SessionList())
            sessions = {session.id: session for session in listing.value}
            held = tuple(sorted({e.session for e in entries
                                 if is_ttl_session(sessions.get(e.session))}))
            if held:
                left = yield self._seconds_left(held)
        return Snapshot(Rows(entries, deleted), sessions, listed.index, self.expiries, left)

    def _seconds_left(self, ids: tuple[str, ...]) -> Deferred:
        """What the leader's timers say of `ids`; {} when no leader answers (then each key
        shows the longest its session may live)."""
        d = self.read(queries.SessionExpiries(ids), QueryOptions(
            datacenter=self.options.datacenter, token=self.options.token))
        d.addCallback(lambda result: result.value)
        d.addErrback(_no_timers)
        return d


def _no_timers(failure) -> dict[str, float]:
    failure.trap(NoLeader)
    return {}
