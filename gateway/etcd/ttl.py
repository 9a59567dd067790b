"""etcd key TTLs as Consul sessions, and every etcd write as one atomic command.

Owns: how a ``ttl=N`` key is kept. Each such key is held by its own session: Behavior=delete,
TTL N/2, no checks, no lock-delay, named ``etcd-ttl /key``. The leader destroys a TTL session
when 2 x TTL (Consul's grace) passes without a renewal, and destroying it deletes the key, so
the key goes N seconds after its last write or refresh, as in etcd. Consul's session limits
(TTL 10 s to 24 h) make the accepted etcd range 20 to 172800 seconds.

A write is ONE log entry (`SessionTxn`): its condition (``check-index`` or
``check-not-exists``), letting go of the key's old etcd session (``unlock``, which writes the
value) and taking a new one (``lock`` by the session the same entry creates), or a plain
``set``, and destroying the old session, which then holds nothing. Nothing is half-applied and
no crash can leave a session behind: a failed condition or a lock held by somebody else changes
nothing, the new session included. A write without a TTL makes the key permanent (etcd's rule).
A delete destroys the deleted keys' sessions in the same entry.

What a write answers (its index, the transaction's resulting entries) is what the etcd answer
shows; how long a TTL key has left comes from the leader's timers (``SessionExpiries``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from agent.facade import (KVOperation, Session, SessionRenew, SessionTxn, SessionTxnResult,
                          WriteResult, queries)
from agent.structs import (SESSION_DELETE, SESSION_TTL_MAX, SESSION_TTL_MIN,
                           SESSION_TTL_MULTIPLIER, KVEntry)
from gateway.etcd.reads import Reader, Snapshot

__all__ = ["ABSENT", "INDEX", "MAX_TTL", "MIN_TTL", "NONE", "SESSION_PREFIX", "TTLKeys"]

SESSION_PREFIX = "etcd-ttl "
GRACE = SESSION_TTL_MULTIPLIER  # a session lives TTL x 2 after its last renewal
MIN_TTL = int(SESSION_TTL_MIN * GRACE)
MAX_TTL = int(SESSION_TTL_MAX * GRACE)
NONE, ABSENT, INDEX = "none", "absent", "index"  # a write's condition


class TTLKeys:
    """TTLs and conditional writes of the etcd API, for one request."""

    def __init__(self, reader: Reader, error: Callable[[int, str], Exception]) -> None:
        self.reader = reader
        self.facade = reader.facade
        self.error = error  # builds the etcd error to raise (code, cause)

    # --- reading ---

    @staticmethod
    def session_of(snapshot: Snapshot, entry: KVEntry | None) -> Session | None:
        """The etcd session (one made here) holding ``entry``, if any."""
        if entry is None or not entry.session:
            return None
        session = snapshot.sessions.get(entry.session)
        if session is None or not session.name.startswith(SESSION_PREFIX):
            return None
        return session

    def check_range(self, ttl: int | None) -> None:
        if ttl and not MIN_TTL <= ttl <= MAX_TTL:
            raise self.error(209, f"ttl {ttl} is out of range: keys with a TTL are kept by "
                                  f"Consul sessions, which allows {MIN_TTL} to {MAX_TTL} "
                                  "seconds")

    # --- writing ---

    @inlineCallbacks
    def write(self, snapshot: Snapshot, new: KVEntry, prev: KVEntry | None, ttl: int | None,
              condition: str, expected: int = 0):
        """Write ``new`` under ``condition``; fires with (index, the entry as written), or
        fails with an etcd error. The new session, if any, joins ``snapshot.sessions``."""
        ops = []
        if condition == ABSENT:
            ops.append(KVOperation("check-not-exists", KVEntry(key=new.key)))
        elif condition == INDEX:
            ops.append(KVOperation("check-index", KVEntry(key=new.key), expected))
        old = self.session_of(snapshot, prev)
        if old is not None:
            ops.append(KVOperation("unlock", replace(new, session=old.id)))
        created = None
        if ttl:
            created = Session(id="", name=SESSION_PREFIX + "/" + new.key.rstrip("/"),
                              node=self.facade.config.node_name, checks=(), lock_delay=0.0,
                              behavior=SESSION_DELETE, ttl=ttl / GRACE)
            ops.append(KVOperation("lock", replace(new, session="")))  # the one created here
        elif old is None:
            ops.append(KVOperation("set", new))
        command = SessionTxn(tuple(ops), create=created,
                             destroy=() if old is None else (old.id,))
        done: WriteResult = yield self.facade.write(command)
        result: SessionTxnResult = done.value
        outcome = result.outcome
        if not outcome.ok:
            error = yield self._txn_error(new, ops, outcome)
            raise error
        if created is not None:
            snapshot.track(replace(created, id=result.session), float(ttl))
        # The transaction's last result is the key as it now is (indexes, session).
        return done.index, replace(outcome.results[-1], value=new.value)

    @inlineCallbacks
    def _txn_error(self, new: KVEntry, ops: list[KVOperation], outcome: Any):
        first = outcome.errors[0]
        verb = ops[first.op_index].op
        key = "/" + new.key.rstrip("/")
        if verb == "check-not-exists":
            return self.error(105, key)
        if verb == "check-index":
            return self.error(101, f"[{ops[first.op_index].expected_index} != current] "
                                   f"({first.what})")
        if verb == "lock":
            holder = (yield self.reader.read(queries.KVGet(new.key))).value
            if holder is not None and holder.session:
                return self.error(101, f"{key} is locked by session {holder.session}")
        return self.error(101, first.what)

    def refresh(self, snapshot: Snapshot, entry: KVEntry, ttl: int) -> Deferred:
        """etcd's ``refresh=true``: keep the value, restart the TTL (watchers stay asleep
        when the TTL is unchanged, because only the session is renewed). Fires with (index,
        the entry as it now is)."""
        session = self.session_of(snapshot, entry)
        if session is not None and session.ttl * GRACE == ttl:
            def renewed(done: WriteResult) -> tuple[int, KVEntry]:
                if done.value is not None:
                    snapshot.track(session, float(ttl))
                return done.index, entry
            return self.facade.write(SessionRenew(session.id)).addCallback(renewed)
        return self.write(snapshot, replace(entry, session=""), entry, ttl, INDEX,
                          entry.modify_index)

    def delete(self, snapshot: Snapshot, op: KVOperation, gone: list[KVEntry]) -> Deferred:
        """Apply the delete ``op`` and destroy the etcd sessions of the ``gone`` keys in the
        same entry; fires with (index, whether the delete's condition held)."""
        ids = tuple(sorted({s.id for s in (self.session_of(snapshot, e) for e in gone)
                            if s is not None}))
        if not ids:
            return self.facade.write(op).addCallback(
                lambda done: (done.index, done.value is not False))
        return self.facade.write(SessionTxn((op,), destroy=ids)).addCallback(
            lambda done: (done.index, done.value.outcome.ok))
