"""What each command does to the state store: one pure function per command type.

`handler(store, command, index) -> result` writes the rows of one log entry at `index`; the FSM
commits the entry afterwards. A handler validates everything before it writes anything: a
`WaypostError` it raises is the entry's result and the FSM discards the entry's changes, so
every replica stays equal. No clock, no reactor: the apply-time clock reaches the store through
the FSM's commit (lock-delays), nothing here reads it.
"""

from __future__ import annotations

from agent.errors import InvalidRequest, WaypostError
from agent.fsm.commands import (
    AutopilotSetConfig,
    Deregister,
    KVOperation,
    Register,
    SessionCreate,
    SessionDestroy,
    SessionTxn,
    SessionTxnResult,
    TombstoneReap,
    Txn,
)
from agent.state.sessions import create_session, destroy_session, invalidate_broken_sessions
from agent.state.store import StateStore
from agent.state.txn import go_quote, run_txn
from agent.structs import TxnOutcome


def register(store: StateStore, c: Register, index: int) -> bool:
    catalog = store.catalog
    # Validate everything first: nothing may be half-applied.
    known_services = set(catalog.services.get(c.node.name, {}))
    if c.service is not None:
        if c.service.node != c.node.name:
            raise InvalidRequest("Service node does not match registration node")
        known_services.add(c.service.id)
    for check in c.checks:
        if check.node != c.node.name:
            raise InvalidRequest("Check node does not match registration node")
        if check.service_id and check.service_id not in known_services:
            raise InvalidRequest(f"Missing service registration for check {check.check_id!r}")
    if not c.skip_node_update or c.node.name not in catalog.nodes:
        catalog.ensure_node(c.node, index)
    if c.service is not None:
        catalog.ensure_service(c.service, index)
    for check in c.checks:
        catalog.ensure_check(check, index)
    # A check turning critical invalidates the sessions that name it, in this same entry.
    invalidate_broken_sessions(store, c.node.name, index)
    return True


def deregister(store: StateStore, c: Deregister, index: int) -> bool:
    catalog = store.catalog
    if c.service_id:
        catalog.delete_service(c.node, c.service_id, index)
    elif c.check_id:
        catalog.delete_check(c.node, c.check_id, index)
    else:
        catalog.delete_node(c.node, index)
    # Sessions of a deregistered node, or naming a removed check, go with them.
    invalidate_broken_sessions(store, c.node, index)
    return True


def kv(store: StateStore, c: KVOperation, index: int) -> bool:
    table = store.kv
    if c.op == "set":
        table.set(c.entry, index)
        return True
    if c.op == "cas":
        return table.cas(c.entry, c.expected_index, index)
    if c.op == "delete":
        table.delete(c.entry.key, index)
        return True
    if c.op == "delete-cas":
        return table.delete_cas(c.entry.key, c.expected_index, index)
    if c.op == "delete-tree":
        table.delete_tree(c.entry.key, index)
        return True
    if c.op == "lock":
        session = c.entry.session
        if not session:
            raise WaypostError("missing session")
        if session not in store.sessions.sessions:
            raise WaypostError(f"invalid session {go_quote(session)}")
        return table.lock(c.entry, index)
    if c.op == "unlock":
        if not c.entry.session:
            raise WaypostError("missing session")
        return table.unlock(c.entry, index)
    raise InvalidRequest(f"Invalid KV operation {c.op!r}")


def session_create(store: StateStore, c: SessionCreate, index: int) -> str:
    return create_session(store, c.session, index)


def session_destroy(store: StateStore, c: SessionDestroy, index: int) -> bool:
    destroy_session(store, c.id, index)
    return True


def txn(store: StateStore, c: Txn, index: int) -> TxnOutcome:
    # A failed transaction changed nothing: its outcome carries the errors.
    return run_txn(store, c.ops, index)


def session_txn(store: StateStore, c: SessionTxn, index: int) -> SessionTxnResult:
    created = ""
    table_index = store.sessions.index
    if c.create is not None:
        created = create_session(store, c.create, index)  # raises, changing nothing
    outcome = run_txn(store, c.ops, index)
    if not outcome.ok:
        if created:
            # The session never held anything: take it back as if it had not been created.
            store.sessions.remove(created, index)
            store.sessions.index = table_index
        return SessionTxnResult("", outcome)
    for session_id in c.destroy:
        destroy_session(store, session_id, index)
    return SessionTxnResult(created, outcome)


def tombstone_reap(store: StateStore, c: TombstoneReap, index: int) -> int:
    """Drop the tombstones at or below the reap index; the result is how many went."""
    return store.kv.reap_tombstones(c.reap_index)


def autopilot_set(store: StateStore, c: AutopilotSetConfig, index: int) -> bool:
    """Store autopilot's configuration (compare-and-set on its ModifyIndex with `cas`)."""
    current = store.autopilot
    if c.cas is not None and c.cas != (current["ModifyIndex"] if current else 0):
        return False
    store.autopilot = {**dict(c.config),
                       "CreateIndex": current["CreateIndex"] if current else index,
                       "ModifyIndex": index}
    return True
