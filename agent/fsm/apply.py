"""The FSM: applies committed commands to the state store, one index at a time.

Every change to the store goes through `FSM.apply`; this is the path Raft feeds. A command that
fails validation changes nothing and its error is the entry's result, so replicas stay equal.
"""

from __future__ import annotations

from typing import Any, Callable

from agent.errors import InvalidRequest, UnknownCommand
from agent.fsm.commands import Deregister, KVOperation, Register
from agent.state.store import StateStore


class FSM:
    def __init__(self, store: StateStore, report_error: Callable[[BaseException], None] | None = None) -> None:
        self.store = store
        self._report = report_error or (lambda exc: None)
        self._dispatch: dict[type, Callable[[Any, int], Any]] = {
            Register: self._register,
            Deregister: self._deregister,
            KVOperation: self._kv,
        }

    def apply(self, index: int, command: Any) -> Any:
        """Apply `command` at `index`; return its result or the exception it failed with."""
        handler = self._dispatch.get(type(command))
        if handler is None:
            raise UnknownCommand(f"no FSM handler for {type(command).__name__}")
        try:
            result = handler(command, index)
        except InvalidRequest as exc:
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
        return True

    def _deregister(self, c: Deregister, index: int) -> bool:
        catalog = self.store.catalog
        if c.service_id:
            catalog.delete_service(c.node, c.service_id, index)
        elif c.check_id:
            catalog.delete_check(c.node, c.check_id, index)
        else:
            catalog.delete_node(c.node, index)
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
        raise InvalidRequest(f"Invalid KV operation {c.op!r}")
