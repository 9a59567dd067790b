"""The leader's side of sessions: TTL timers, renewals and lock-delays.

Sessions are created and destroyed by the server endpoints (`Session.Apply`) through the log;
what must not be replicated stays here, in memory, as on Consul's leader:

- TTL timers. A session with a TTL is destroyed when TTL x 2 (Consul's grace) passes without a
  renewal. Timers run on the injected reactor; any TTL session in the store without a timer
  (created through the log directly, restored from a snapshot) gets one, and the timer of a
  session destroyed for another reason (its check went critical, its node left) is dropped.
- Lock-delays are read from the store: every replica records them when it applies the entry
  that released the key (`StateStore.lock_delays`, at the FSM's apply-time clock), so a new
  leader knows them too; `lock_delayed(key)` is checked before a lock reaches the log.

The leader duties (`agent.leader`) start and stop the timers with leadership.

Invalidation by a critical check or node deregistration happens inside the FSM (in the entry
that caused it); see `agent.state.sessions`.
"""

from __future__ import annotations

from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred, fail, succeed

from agent import structs
from agent.fsm.commands import SessionDestroy
from agent.state.sessions import SESSIONS
from agent.state.store import StateStore
from agent.structs import Session

txaio.use_twisted()

# Consul's leader retries a failed TTL invalidation (maxInvalidateAttempts, invalidateRetryBase).
MAX_INVALIDATE_ATTEMPTS = 6
INVALIDATE_RETRY = 10.0


class SessionManager:
    """Sessions for frontends: create, renew, destroy, read; TTL timers and lock-delays."""

    log = txaio.make_logger()

    def __init__(self, reactor, store: StateStore, write: Callable[[Any], Deferred]) -> None:
        self._reactor = reactor
        self._store = store
        self._write = write
        self._timers: dict[str, Any] = {}  # session id -> IDelayedCall
        self.running = False

    # --- lifecycle ---

    def start(self) -> None:
        """Become the session leader: arm every TTL timer afresh, at the full TTL (Consul's new
        leader does the same: it cannot know how long the old one had left)."""
        if self.running:
            return
        self.running = True
        self._store.on_commit.append(self._committed)
        self._sync_timers()

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        if self._committed in self._store.on_commit:
            self._store.on_commit.remove(self._committed)
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()

    # --- what the server endpoints ask ---

    def renew(self, session_id: str) -> Deferred:
        """Restart a session's TTL; fires with the session, or None when there is none."""
        session = self._store.sessions.sessions.get(session_id)
        if session is None:
            return succeed(None)
        if session.ttl > 0:
            self._arm(session)
        return succeed(session)

    def expires_at(self, session_id: str) -> float | None:
        """When the session's TTL timer fires (reactor time), or None without a TTL."""
        timer = self._timers.get(session_id)
        return timer.getTime() if timer is not None and timer.active() else None

    def lock_delayed(self, key: str) -> bool:
        """Whether `key` is inside a lock-delay (an acquire must be refused)."""
        return self.lock_delay_remaining(key) > 0

    def lock_delay_remaining(self, key: str) -> float:
        """Seconds until `key` may be locked again, from the store's lock-delays."""
        return self._store.lock_delay_remaining(key, self._reactor.seconds())

    # --- internals ---

    def _committed(self, index: int, tables: frozenset[str]) -> None:
        if SESSIONS in tables:
            self._sync_timers()

    def _sync_timers(self) -> None:
        sessions = self._store.sessions.sessions
        for session_id in [i for i in self._timers if i not in sessions]:
            timer = self._timers.pop(session_id)
            if timer.active():
                timer.cancel()
        for session in sessions.values():
            if session.ttl > 0 and session.id not in self._timers:
                self._arm(session)

    def _arm(self, session: Session) -> None:
        delay = session.ttl * structs.SESSION_TTL_MULTIPLIER
        timer = self._timers.get(session.id)
        if timer is not None and timer.active():
            timer.reset(delay)
            return
        self._timers[session.id] = self._reactor.callLater(delay, self._expired, session.id)

    def _expired(self, session_id: str, attempt: int = 1) -> None:
        self._timers.pop(session_id, None)
        if not self.running or session_id not in self._store.sessions.sessions:
            return
        if attempt == 1:
            self.log.info("session {sid} expired: its TTL passed without a renewal",
                          sid=session_id)
        try:
            d = self._write(SessionDestroy(session_id))
        except Exception:  # noqa: BLE001 - handled like a failed write below
            d = fail()
        d.addErrback(self._invalidation_failed, session_id, attempt)

    def _invalidation_failed(self, failure, session_id: str, attempt: int) -> None:
        """As Consul's leader: retry a failed invalidation a few times, then give up loudly."""
        if attempt >= MAX_INVALIDATE_ATTEMPTS:
            self.log.failure("invalidating session {sid} failed {n} times; giving up",
                             failure, sid=session_id, n=attempt)
            return
        self.log.failure("invalidating session {sid} failed; retrying in {delay}s", failure,
                         sid=session_id, delay=INVALIDATE_RETRY)
        if self.running and session_id not in self._timers:
            self._timers[session_id] = self._reactor.callLater(
                INVALIDATE_RETRY, self._expired, session_id, attempt + 1)
