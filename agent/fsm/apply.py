"""The FSM: applies committed commands to the state store, one index at a time.

Every change to the store goes through `FSM.apply`; this is the path Raft feeds. A command that
fails validation changes nothing and its error is the entry's result, so replicas stay equal.
"""

from __future__ import annotations

from typing import Any, Callable

from agent.errors import InvalidRequest, UnknownCommand, WaypostError
from agent.fsm.commands import (
    Deregister,
    KVOperation,
    Register,
    SessionCreate,
    SessionDestroy,
    Txn,
)
from agent.state.sessions import (
    create_session,
    destroy_session,
    invalidate_broken_sessions,
)
from agent.state.store import StateStore
from agent.state.txn import go_quote, run_txn
from agent.structs import TxnOutcome


class FSM:
    def __init__(self, store: StateStore, report_error: Callable[[BaseException], None] | None = None) -> None:
        self.store = store
        self._report = report_error or (lambda exc: None)
        self._dispatch: dict[type, Callable[[Any, int], Any]] = {
            Register: self._register,
            Deregister: self._deregister,
            KVOperation: self._kv,
            SessionCreate: self._session_create,
            SessionDestroy: self._session_destroy,
            Txn: self._txn,
        }

    def apply(self, index: int, command: Any) -> Any:
        """Apply `command` at `index`; return its result or the exception it failed with."""
        handler = self._dispatch.get(type(command))
        if handler is None:
            raise UnknownCommand(f"no FSM handler for {type(command).__name__}")
        try:
            result = handler(command, index)
        except WaypostError as exc:
            self.store.discard_pending()
            self.store.commit(index)
            return exc
        for error in self.store.commit(index):
            self._report(error)
        return result

    def _register(self, c: Register, index: int) -> bool:
        catalog = self.store.catalog
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
        invalidate_broken_sessions(self.store, c.node.name, index)
        return True

    def _deregister(self, c: Deregister, index: int) -> bool:
        catalog = self.store.catalog
        if c.service_id:
            catalog.delete_service(c.node, c.service_id, index)
        elif c.check_id:
            catalog.delete_check(c.node, c.check_id, index)
        else:
            catalog.delete_node(c.node, index)
        # Sessions of a deregistered node, or naming a removed check, go with them.
        invalidate_broken_sessions(self.store, c.node, index)
        return True

    def _kv(self, c: KVOperation, index: int) -> bool:
        kv = self.store.kv
        if c.op == "set":
            kv.set(c.entry, index)
            return True
        if c.op == "cas":
            return kv.cas(c.entry, c.expected_index, index)
        if c.op == "delete":
            kv.delete(c.entry.key, index)
            return True
        if c.op == "delete-cas":
            return kv.delete_cas(c.entry.key, c.expected_index, index)
        if c.op == "delete-tree":
            kv.delete_tree(c.entry.key, index)
            return True
        if c.op == "lock":
            session = c.entry.session
            if not session:
                raise WaypostError("missing session")
            if session not in self.store.sessions.sessions:
                raise WaypostError(f"invalid session {go_quote(session)}")
            return kv.lock(c.entry, index)
        if c.op == "unlock":
            if not c.entry.session:
                raise WaypostError("missing session")
            return kv.unlock(c.entry, index)
        raise InvalidRequest(f"Invalid KV operation {c.op!r}")

    def _session_create(self, c: SessionCreate, index: int) -> str:
        return create_session(self.store, c.session, index)

    def _session_destroy(self, c: SessionDestroy, index: int) -> bool:
        destroy_session(self.store, c.id, index)
        return True

    def _txn(self, c: Txn, index: int) -> TxnOutcome:
        # A failed transaction changed nothing: its outcome carries the errors.
        return run_txn(self.store, c.ops, index)
