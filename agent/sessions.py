"""The leader's side of sessions: creating them, TTL timers, renewals and lock-delays.

`SessionManager` is what `facade.sessions` is. Every change goes through the log as a command
(`SessionCreate`, `SessionDestroy`); what must not be replicated stays here, in memory, as on
Consul's leader:

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

import uuid
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred, fail, succeed

from agent import structs
from agent.durations import go_duration
from agent.errors import WaypostError
from agent.fsm.commands import SessionCreate, SessionDestroy
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

    def __init__(self, reactor, store: StateStore, write: Callable[[Any], Deferred],
                 node_name: Callable[[], str],
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self._reactor = reactor
        self._store = store
        self._write = write
        self._node_name = node_name
        self._new_id = new_id
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

    # --- the facade API ---

    def create(self, name: str = "", node: str | None = None,
               checks: tuple[str, ...] | list[str] | None = (structs.SERF_CHECK_ID,),
               lock_delay: float = structs.DEFAULT_LOCK_DELAY,
               behavior: str = structs.SESSION_RELEASE, ttl: float = 0.0,
               service_checks: tuple[structs.ServiceCheck, ...] | None = None,
               legacy_checks: tuple[str, ...] = ()) -> Deferred:
        """Create a session; fires with its ID, fails with `WaypostError` (Consul's texts).

        `checks` are its node checks (None: shown as null), `service_checks` its service
        checks and `legacy_checks` the pre-1.7 "Checks", all kept as given (Consul keeps
        duplicates too); the session goes when any of them turns critical."""
        behavior = behavior or structs.SESSION_RELEASE
        if behavior not in structs.SESSION_BEHAVIORS:
            return fail(WaypostError(f"Invalid Behavior setting '{behavior}'"))
        if ttl and not structs.SESSION_TTL_MIN <= ttl <= structs.SESSION_TTL_MAX:
            return fail(WaypostError(
                f"Invalid Session TTL '{round(ttl * 1e9)}', must be between "
                f"[{go_duration(structs.SESSION_TTL_MIN)}={go_duration(structs.SESSION_TTL_MAX)}]"))
        node = self._node_name() if node is None else node
        if not node:
            return fail(WaypostError("Must provide Node"))
        session_id = self._new_id()
        while session_id in self._store.sessions.sessions:
            session_id = self._new_id()
        # A negative lock-delay is kept to be shown as given, and counts as none.
        session = Session(id=session_id, name=name, node=node,
                          checks=None if checks is None else tuple(checks),
                          lock_delay=lock_delay, behavior=behavior, ttl=ttl,
                          service_checks=None if service_checks is None else
                          tuple(service_checks), legacy_checks=tuple(legacy_checks))
        return self._write(SessionCreate(session)).addCallback(lambda result: result.value)

    def renew(self, session_id: str) -> Deferred:
        """Restart a session's TTL; fires with the session, or None when there is none."""
        session = self._store.sessions.sessions.get(session_id)
        if session is None:
            return succeed(None)
        if session.ttl > 0:
            self._arm(session)
        return succeed(session)

    def destroy(self, session_id: str) -> Deferred:
        """Destroy a session (releasing or deleting its keys); fires with True."""
        return self._write(SessionDestroy(session_id)).addCallback(lambda _: True)

    def info(self, session_id: str) -> Session | None:
        return self._store.sessions.sessions.get(session_id)

    def list(self) -> list[Session]:
        return self._store.sessions.list()[1]

    def node_sessions(self, node: str) -> list[Session]:
        return self._store.sessions.node_sessions(node)[1]

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
