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

from agent.facade import QueryOptions, ReadResult, Session, queries
from agent.structs import SESSION_DELETE, SESSION_TTL_MULTIPLIER, KVEntry
from gateway.etcd.tree import Rows, Tree, parents

__all__ = ["Expiries", "Reader", "Snapshot", "read"]

_PRUNE_AT = 1024


def read(facade, query: Any, options: QueryOptions) -> Deferred:
    """``facade.read`` as a Deferred (it fires at once when the core answered at once)."""
    return maybeDeferred(facade.read, query, options)


class Expiries:
    """When the TTL sessions of etcd keys expire, in reactor time, as far as this frontend
    knows: it notes each session it creates or renews.

    The leader's session timers are the truth, and no read hands their deadline out yet (a
    follow-up for the read seam), so a session renewed elsewhere (Consul's API, another agent)
    or not noted here shows the longest it may still live: TTL x 2 from now.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._deadlines: dict[str, float] = {}

    def note(self, session_id: str, ttl: float) -> None:
        """``session_id`` (of ``ttl`` seconds) was created or renewed just now."""
        now = self._reactor.seconds()
        if len(self._deadlines) >= _PRUNE_AT:
            self._deadlines = {s: t for s, t in self._deadlines.items() if t > now}
        self._deadlines[session_id] = now + ttl * SESSION_TTL_MULTIPLIER

    def forget(self, session_id: str) -> None:
        self._deadlines.pop(session_id, None)

    def info(self, session: Session) -> tuple[int, str]:
        """(whole seconds left, RFC 3339 expiration) of a key held by ``session``."""
        now = self._reactor.seconds()
        deadline = self._deadlines.get(session.id)
        if deadline is None or deadline < now:  # renewed elsewhere, or never seen here
            deadline = now + session.ttl * SESSION_TTL_MULTIPLIER
        stamp = datetime.fromtimestamp(deadline, timezone.utc).isoformat()
        return max(0, math.ceil(deadline - now)), stamp.replace("+00:00", "Z")


@dataclass
class Snapshot:
    """The rows a request read, the sessions holding any of them, and the index of the prefix
    read (what a blocking read of it waits past)."""

    rows: Rows
    sessions: dict[str, Session]
    index: int
    expiries: Expiries
    tree: Tree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = Tree(self.rows, self.ttl_info)

    def ttl_info(self, entry: KVEntry) -> tuple[int, str] | None:
        """(seconds left, expiration) of a key its session will delete, else None."""
        session = self.sessions.get(entry.session)
        if session is None or session.ttl <= 0 or session.behavior != SESSION_DELETE:
            return None
        return self.expiries.info(session)


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
        if any(entry.session for entry in entries):
            listing: ReadResult = yield self.read(queries.SessionList())
            sessions = {session.id: session for session in listing.value}
        return Snapshot(Rows(entries, deleted), sessions, listed.index, self.expiries)
