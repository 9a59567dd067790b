"""The sessions table, and what creating and destroying a session does to the other tables.

A session belongs to a node and may name checks of that node (node checks, service checks and
the legacy "Checks" alike: `Session.check_ids`). It is destroyed on request, when its TTL lapses
(the leader's timers in `agent.sessions` write the destroy), and, inside the same log entry that
caused it, when its node is deregistered or any of its checks turns critical or goes away. Destroying a session releases the locks it holds (behavior "release": Session
cleared, LockIndex kept) or deletes their keys (behavior "delete"), and asks the store to
remember a lock-delay for each of those keys, which the leader enforces in memory.

Pure code: no reactor, no clock. Only the FSM calls the writers here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from agent import structs
from agent.errors import WaypostError
from agent.structs import Session

if TYPE_CHECKING:  # pragma: no cover
    from agent.state.store import StateStore

SESSIONS = "sessions"


class SessionTable:
    """Sessions by ID, with the IDs of each node's sessions; one index for the whole table,
    as Consul reports it for every session read."""

    def __init__(self, touch: Callable[[str], None]) -> None:
        self._touch = touch
        self.sessions: dict[str, Session] = {}
        self.by_node: dict[str, set[str]] = {}
        self.index = 0

    # --- raw writes ---

    def insert(self, session: Session, index: int) -> None:
        self.restore(session)
        self.index = index
        self._touch(SESSIONS)

    def remove(self, session_id: str, index: int) -> Session | None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return None
        ids = self.by_node.get(session.node)
        if ids is not None:
            ids.discard(session_id)
            if not ids:
                del self.by_node[session.node]
        self.index = index
        self._touch(SESSIONS)
        return session

    def restore(self, session: Session) -> None:
        """Load a row from a snapshot (no index change, no watch)."""
        self.sessions[session.id] = session
        self.by_node.setdefault(session.node, set()).add(session.id)

    # --- reads: (table index, rows) ---

    def get(self, session_id: str) -> tuple[int, Session | None]:
        return self.index, self.sessions.get(session_id)

    def list(self) -> tuple[int, list[Session]]:
        return self.index, [s for _, s in sorted(self.sessions.items())]

    def node_sessions(self, node: str) -> tuple[int, list[Session]]:
        ids = sorted(self.by_node.get(node, ()))
        return self.index, [self.sessions[i] for i in ids]


def create_session(store: StateStore, session: Session, index: int) -> str:
    """Insert a new session at `index` after Consul's checks; returns its ID.

    The node must be registered and every named check must exist on it and not be critical.
    Raises `WaypostError` (the entry's result) and changes nothing otherwise.
    """
    if not session.id:
        raise WaypostError("Missing session ID")
    if session.id in store.sessions.sessions:
        raise WaypostError(f"Session ID {session.id!r} already exists")
    behavior = session.behavior or structs.SESSION_RELEASE
    if behavior not in structs.SESSION_BEHAVIORS:
        raise WaypostError(f"Invalid session behavior: {behavior}")
    if session.node not in store.catalog.nodes:
        raise WaypostError("Missing node registration")
    node_checks = store.catalog.checks.get(session.node, {})
    for check_id in session.check_ids():
        check = node_checks.get(check_id)
        if check is None:
            raise WaypostError(f"Missing check '{check_id}' registration")
        if check.status == structs.CRITICAL:
            raise WaypostError(f"Check '{check_id}' is in {check.status} state")
    store.sessions.insert(replace(session, behavior=behavior, create_index=index,
                                  modify_index=index), index)
    return session.id


def destroy_session(store: StateStore, session_id: str, index: int) -> bool:
    """Remove a session and let go of its locks; False when there was no such session."""
    session = store.sessions.remove(session_id, index)
    if session is None:
        return False
    delay = min(session.lock_delay, structs.MAX_LOCK_DELAY)
    kv = store.kv
    for key in kv.held_by(session_id):
        entry = kv.lookup(key)
        if entry is None:
            continue
        if session.behavior == structs.SESSION_DELETE:
            kv.remove(key, index)
        else:
            kv.put(replace(entry, session="", modify_index=index), index)
        if delay > 0:
            store.note_lock_delay(key, delay)
    return True


def broken_sessions(store: StateStore, node: str) -> list[str]:
    """IDs of `node`'s sessions that must go: the node is gone, or a check they name is
    missing or critical."""
    ids = sorted(store.sessions.by_node.get(node, ()))
    if not ids:
        return []
    if node not in store.catalog.nodes:
        return ids
    node_checks = store.catalog.checks.get(node, {})
    broken = []
    for session_id in ids:
        for check_id in store.sessions.sessions[session_id].check_ids():
            check = node_checks.get(check_id)
            if check is None or check.status == structs.CRITICAL:
                broken.append(session_id)
                break
    return broken


def invalidate_broken_sessions(store: StateStore, node: str, index: int) -> list[str]:
    """Destroy, at `index`, every session of `node` that a catalog change just broke."""
    doomed = broken_sessions(store, node)
    for session_id in doomed:
        destroy_session(store, session_id, index)
    return doomed
