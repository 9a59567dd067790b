"""etcd key TTLs as Consul sessions, and every etcd write as one KV transaction.

Owns: how a ``ttl=N`` key is kept. Each such key is held by its own session: Behavior=delete,
TTL N/2, no checks, no lock-delay, named ``etcd-ttl /key``. The session manager destroys a TTL
session when 2 x TTL (Consul's grace) passes without a renewal, and destroying it deletes the
key, so the key goes N seconds after its last write or refresh, as in etcd. Consul's session
limits (TTL 10 s to 24 h) make the accepted etcd range 20 to 172800 seconds.

A write runs as one transaction: its condition (``check-index`` or ``check-not-exists``), then
letting go of the key's old etcd session (``unlock``, which writes the value) and taking the new
one (``lock``), or a plain ``set``. Nothing is half-applied: a failed condition or a lock held by
somebody else changes nothing, and the new session is destroyed again. A write without a TTL
makes the key permanent (etcd's rule), so the old session is released and then destroyed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed

from agent.facade import KVOperation, Session, Txn
from agent.structs import SESSION_DELETE, SESSION_TTL_MAX, SESSION_TTL_MIN, KVEntry

__all__ = ["MAX_TTL", "MIN_TTL", "SESSION_PREFIX", "TTLKeys"]

SESSION_PREFIX = "etcd-ttl "
GRACE = 2  # a session lives TTL x 2 after its last renewal
MIN_TTL = int(SESSION_TTL_MIN * GRACE)
MAX_TTL = int(SESSION_TTL_MAX * GRACE)
NONE, ABSENT, INDEX = "none", "absent", "index"  # a write's condition


class TTLKeys:
    """TTLs and conditional writes of the etcd API, for one request."""

    def __init__(self, facade, error: Callable[[int, str], Exception]) -> None:
        self.facade = facade
        self.sessions = facade.sessions
        self.error = error  # builds the etcd error to raise (code, cause)

    # --- reading ---

    def session_of(self, entry: KVEntry | None, etcd_only: bool = True) -> Session | None:
        """The session holding ``entry`` (only one made here, with ``etcd_only``)."""
        if entry is None or not entry.session or self.sessions is None:
            return None
        session = self.sessions.info(entry.session)
        if session is None or (etcd_only and not session.name.startswith(SESSION_PREFIX)):
            return None
        return session

    def info(self, entry: KVEntry) -> tuple[int, str] | None:
        """(seconds left, RFC 3339 expiration) of a key that a TTL session will delete."""
        session = self.session_of(entry, etcd_only=False)
        if session is None or session.ttl <= 0 or session.behavior != SESSION_DELETE:
            return None
        now = self.facade.reactor.seconds()
        expires_at = getattr(self.sessions, "expires_at", None)
        deadline = expires_at(session.id) if expires_at is not None else None
        if deadline is None:  # no timer known: the longest it may live
            deadline = now + session.ttl * GRACE
        stamp = datetime.fromtimestamp(deadline, timezone.utc).isoformat()
        return max(0, math.ceil(deadline - now)), stamp.replace("+00:00", "Z")

    def check_range(self, ttl: int | None) -> None:
        if not ttl:
            return
        if self.sessions is None:
            raise self.error(209, "ttl needs sessions, which this agent does not have")
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise self.error(209, f"ttl {ttl} is out of range: keys with a TTL are kept by "
                                  f"Consul sessions, which allows {MIN_TTL} to {MAX_TTL} "
                                  "seconds")

    # --- writing ---

    @inlineCallbacks
    def write(self, new: KVEntry, prev: KVEntry | None, ttl: int | None, condition: str,
              expected: int = 0):
        """Write ``new`` under ``condition``; fires with True or fails with an etcd error."""
        ops = []
        if condition == ABSENT:
            ops.append(KVOperation("check-not-exists", KVEntry(key=new.key)))
        elif condition == INDEX:
            ops.append(KVOperation("check-index", KVEntry(key=new.key), expected))
        old = self.session_of(prev)
        if old is not None:
            ops.append(KVOperation("unlock", replace(new, session=old.id)))
        created = None
        if ttl:
            created = yield self.sessions.create(
                name=SESSION_PREFIX + "/" + new.key.rstrip("/"), checks=(), lock_delay=0.0,
                behavior=SESSION_DELETE, ttl=ttl / GRACE)
            ops.append(KVOperation("lock", replace(new, session=created)))
        elif old is None:
            ops.append(KVOperation("set", new))
        outcome = (yield self.facade.write(Txn(tuple(ops)))).value
        if not outcome.ok:
            if created is not None:
                yield self.sessions.destroy(created)
            raise self._txn_error(new, ops, outcome)
        if old is not None:
            yield self.sessions.destroy(old.id)  # it holds nothing now: nothing is deleted
        return True

    def _txn_error(self, new: KVEntry, ops: list[KVOperation], outcome: Any) -> Exception:
        first = outcome.errors[0]
        verb = ops[first.op_index].op
        key = "/" + new.key.rstrip("/")
        if verb == "check-not-exists":
            return self.error(105, key)
        if verb == "check-index":
            return self.error(101, f"[{ops[first.op_index].expected_index} != current] "
                                   f"({first.what})")
        holder = self.facade.store.kv.entries.get(new.key)
        if verb == "lock" and holder is not None and holder.session:
            return self.error(101, f"{key} is locked by session {holder.session}")
        return self.error(101, first.what)

    def refresh(self, entry: KVEntry, ttl: int) -> Deferred:
        """etcd's ``refresh=true``: keep the value, restart the TTL (watchers stay asleep
        when the TTL is unchanged, because only the session is renewed)."""
        session = self.session_of(entry)
        if session is not None and session.ttl * GRACE == ttl:
            return self.sessions.renew(session.id).addCallback(lambda _: True)
        return self.write(replace(entry, session=""), entry, ttl, INDEX, entry.modify_index)

    def forget(self, entries: list[KVEntry]) -> Deferred:
        """Destroy the etcd sessions of deleted keys (they would only expire later)."""
        ids = {s.id for s in (self.session_of(e) for e in entries) if s is not None}
        if not ids:
            return succeed(None)
        return self._destroy_all(sorted(ids))

    @inlineCallbacks
    def _destroy_all(self, ids: list[str]):
        for session_id in ids:
            yield self.sessions.destroy(session_id)
