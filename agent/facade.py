"""The one narrow door frontends use into the core: read, write, watch, and agent facts.

Frontends (HTTP, DNS, plugins' services) get an `AgentFacade` and nothing else from the core;
they never touch the FSM or the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, succeed

from agent.config.model import VERSION, WAYPOST_VERSION, AgentConfig
from agent.definitions import (CatalogDeregistration, CatalogRegistration, CheckSpec,
                               ServiceDefinition, parse_catalog_deregister,
                               parse_catalog_register, parse_check_definition,
                               parse_service_definition)
from agent.durations import go_duration, parse_duration
from agent.errors import UnknownDatacenter
from agent.filter import (CHECK_SERVICE_NODE, HEALTH_CHECK, NODE, NODE_SERVICE, SERVICE_NODE,
                          Field, Filter, FilterError, compile_filter)
from agent.fsm.commands import (Deregister, KVOperation, Register, SessionCreate, SessionDestroy,
                                Txn)
from agent.local.state import LocalState
from agent.rpc import shapes
from agent.schemas import SchemaSet
from agent.sessions import SessionManager
from agent.state.catalog import is_healthy
from agent.state.sessions import SESSIONS
from agent.state.store import StateStore
from agent.state.txn import MAX_TXN_OPS, precheck, run_txn
from agent.state.txn import WRITE_VERBS as TXN_WRITE_VERBS
from agent.state.watch import WatchHandle
from agent.structs import Session, TxnError, TxnOutcome

# Everything a frontend may use from the core is importable from here; the import-graph test
# keeps frontends from reaching past this module.
__all__ = [
    "go_duration", "shapes",
    "AgentFacade", "Member", "AgentConfig", "VERSION", "WAYPOST_VERSION",
    "Register", "Deregister", "KVOperation", "SessionCreate", "SessionDestroy", "Txn",
    "Session", "SessionManager", "SESSIONS", "TxnError", "TxnOutcome", "MAX_TXN_OPS",
    "TXN_WRITE_VERBS",
    "CatalogRegistration", "CatalogDeregistration", "CheckSpec", "ServiceDefinition",
    "parse_service_definition", "parse_check_definition", "parse_catalog_register",
    "parse_catalog_deregister", "parse_duration", "is_healthy", "WatchHandle",
    "Field", "Filter", "FilterError", "compile_filter", "NODE", "NODE_SERVICE", "SERVICE_NODE",
    "HEALTH_CHECK", "CHECK_SERVICE_NODE",
]


@dataclass(frozen=True)
class Member:
    """A gossip member as Serf reports it (one, ourselves, until gossip lands)."""
    name: str
    addr: str
    port: int
    tags: dict
    status: int = 1  # alive


class AgentFacade:
    def __init__(self, config: AgentConfig, reactor, store: StateStore,
                 write: Callable[[Any], Deferred], local: LocalState, schemas: SchemaSet,
                 members: Callable[[], list[Member]], stats: Callable[[], dict],
                 plugin_names: Callable[[], list[str]] = lambda: [],
                 sessions: SessionManager | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.store = store
        self.local = local
        self.schemas = schemas
        self._write = write
        self._members = members
        self._stats = stats
        self.plugin_names = plugin_names
        # create/renew/destroy/info/list/node_sessions, TTLs and lock-delays (agent.sessions).
        self.sessions = sessions
        # Re-reads the configuration (set by whoever started the agent from files); fires when
        # applied, fails with the reason when the new configuration is bad.
        self.reload: Callable[[], Deferred] | None = None
        self._leader_known = True
        # Called with True/False when a leader is found/lost (DNS drops its fresh answers).
        self.leader_listeners: list[Callable[[bool], None]] = []
        # Called with the new config after a reload was applied (frontends re-read settings).
        self.reload_listeners: list[Callable[[AgentConfig], None]] = []

    def write(self, command: Any) -> Deferred:
        """Commit a command; fires with its result once applied.

        As Consul's leader does before the log: a lock on a key inside its lock-delay answers
        False, and a transaction that fails its pre-checks answers its errors.
        """
        if self.sessions is not None:
            if (isinstance(command, KVOperation) and command.op == "lock"
                    and self.sessions.lock_delayed(command.entry.key)):
                return succeed(False)
            if isinstance(command, Txn):
                errors = precheck(command.ops, self.sessions.lock_delayed)
                if errors:
                    return succeed(TxnOutcome(errors=errors))
        return self._write(command)

    def txn(self, ops: Iterable[KVOperation]) -> Deferred:
        """Run KV operations all or nothing; fires with a `TxnOutcome`.

        Operations with a writing verb go through the log as one `Txn` entry; a read-only
        transaction is answered from the store at once.
        """
        ops = tuple(ops)
        if any(op.op in TXN_WRITE_VERBS for op in ops):
            return self.write(Txn(ops))
        errors = precheck(ops, lambda key: False)
        if errors:
            return succeed(TxnOutcome(errors=errors))
        return succeed(run_txn(self.store, ops, self.store.index))

    def watch(self, callback: Callable[[], None], tables: Iterable[str] = (),
              kv_prefixes: Iterable[str] = ()) -> WatchHandle:
        return self.store.watch(callback, tables, kv_prefixes)

    def check_datacenter(self, dc: str | None) -> None:
        """Only our own datacenter is reachable until WAN federation exists."""
        if dc and dc != self.config.datacenter:
            raise UnknownDatacenter(dc)

    def datacenters(self) -> list[str]:
        return [self.config.datacenter]

    def leader(self) -> str:
        return self.config.server_rpc_addr if self.config.server else ""

    def peers(self) -> list[str]:
        return [self.config.server_rpc_addr] if self.config.server else []

    def known_leader(self) -> bool:
        return bool(self.leader()) and self._leader_known

    def set_leader_known(self, known: bool) -> None:
        """Called by the consensus layer when the leader is lost or found again."""
        if known != self._leader_known:
            self._leader_known = known
            for listener in list(self.leader_listeners):
                listener(known)

    def last_contact_ms(self) -> int:
        return 0  # we are the leader

    def members(self) -> list[Member]:
        return self._members()

    def stats(self) -> dict:
        return self._stats()
