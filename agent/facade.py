"""The one narrow door frontends use into the core: read, write, watch, and agent facts.

Frontends (HTTP, DNS, plugins' services) get an `AgentFacade` and nothing else from the core;
they never touch the FSM or the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred

from agent.config.model import VERSION, WAYPOST_VERSION, AgentConfig
from agent.definitions import (CatalogDeregistration, CatalogRegistration, CheckSpec,
                               ServiceDefinition, parse_catalog_deregister,
                               parse_catalog_register, parse_check_definition,
                               parse_service_definition)
from agent.durations import go_duration, parse_duration
from agent.errors import UnknownDatacenter
from agent.filter import (CHECK_SERVICE_NODE, HEALTH_CHECK, NODE, NODE_SERVICE, SERVICE_NODE,
                          Field, Filter, FilterError, compile_filter, go_quote)
from agent.fsm.commands import (Deregister, KVOperation, Register, SessionCreate, SessionDestroy,
                                SessionTxn, SessionTxnResult, Txn)
from agent.local import commands as local_commands
from agent.local.endpoints import LocalEndpoints
from agent.rpc import queries
from agent.rpc.cache import AgentCache
from agent.rpc.options import (CONSISTENT, DEFAULT, STALE, QueryMeta, QueryOptions,
                               ReadResult, WriteRequest, WriteResult)
from agent.rpc.requests import SessionRenew
from agent.rpc.server import ServerEndpoints
from agent.rpc import shapes
from agent.schemas import SchemaSet
from agent.state.catalog import is_healthy
from agent.state.sessions import SESSIONS
from agent.state.store import CATALOG_TABLES as _CATALOG_TABLES
from agent.state.kv import KVS as KV_TABLE
from agent.state.sessions import SESSIONS as SESSIONS_TABLE
from agent.state.txn import MAX_TXN_OPS
from agent.state.txn import WRITE_VERBS as TXN_WRITE_VERBS
from agent.structs import Session, TxnError, TxnOutcome

# Everything a frontend may use from the core is importable from here; the import-graph test
# keeps frontends from reaching past this module.
__all__ = [
    "CATALOG_TABLES", "KV_TABLE", "SESSIONS_TABLE",
    "go_duration", "shapes", "queries", "QueryOptions", "QueryMeta", "ReadResult",
    "local_commands",
    "WriteRequest", "WriteResult", "DEFAULT", "STALE", "CONSISTENT", "SessionRenew",
    "AgentFacade", "Member", "AgentConfig", "VERSION", "WAYPOST_VERSION",
    "Register", "Deregister", "KVOperation", "SessionCreate", "SessionDestroy", "Txn",
    "SessionTxn", "SessionTxnResult",
    "Session", "SESSIONS", "TxnError", "TxnOutcome", "MAX_TXN_OPS",
    "TXN_WRITE_VERBS",
    "CatalogRegistration", "CatalogDeregistration", "CheckSpec", "ServiceDefinition",
    "parse_service_definition", "parse_check_definition", "parse_catalog_register",
    "parse_catalog_deregister", "parse_duration", "is_healthy", 
    "Field", "Filter", "FilterError", "compile_filter", "NODE", "NODE_SERVICE", "SERVICE_NODE",
    "HEALTH_CHECK", "CHECK_SERVICE_NODE", "go_quote",
]


# Agent-local reads and writes: answered by this agent's local state, whatever kind of agent.
_LOCAL_QUERIES = frozenset(queries.LOCAL_QUERIES)
_LOCAL_COMMANDS = frozenset(local_commands.LOCAL_COMMANDS)

# Table names `on_change` listeners are told about.
CATALOG_TABLES = frozenset(_CATALOG_TABLES)


@dataclass(frozen=True)
class Member:
    """A gossip member as Serf reports it (one, ourselves, until gossip lands)."""
    name: str
    addr: str
    port: int
    tags: dict
    status: int = 1  # alive


class AgentFacade:
    """What frontends get of the core: the read and write seams, a change feed, agent facts.

    `endpoints` answers reads and writes that need server state: a server agent's own
    `ServerEndpoints`, or (a client agent) something with the same methods that reaches a
    server. `local` answers what concerns this agent itself (its services and checks).
    """

    def __init__(self, config: AgentConfig, reactor, endpoints: ServerEndpoints,
                 local: LocalEndpoints, schemas: SchemaSet,
                 members: Callable[[], list[Member]], stats: Callable[[], dict],
                 plugin_names: Callable[[], list[str]] = lambda: []) -> None:
        self.config = config
        self.reactor = reactor
        self._local = local  # this agent's own services and checks
        self.schemas = schemas
        self._endpoints = endpoints
        self._cache = AgentCache(reactor, endpoints.read)
        self._members = members
        self._stats = stats
        self.plugin_names = plugin_names
        # Re-reads the configuration (set by whoever started the agent from files); fires when
        # applied, fails with the reason when the new configuration is bad.
        self.reload: Callable[[], Deferred] | None = None
        # This agent's gossip (join, leave, force-leave, events, keyring): a GossipControl, or
        # None on an agent without gossip (in-process tests).
        self.gossip: Any = None
        # The cluster's consensus (Raft configuration, autopilot, snapshots): an
        # `agent.operator.OperatorControl`, or None on an agent without one.
        self.operator: Any = None
        # True when requests naming another datacenter go to the endpoints, which forward
        # them or answer "No path to datacenter" (agents with gossip); False: only our own.
        self.forwards_datacenters = False
        # Stops the whole agent, as after /v1/agent/leave (set by whoever runs the process).
        self.shutdown: Callable[[], None] | None = None
        self._leader_known = True
        # Called with True/False when a leader is found/lost (DNS drops its fresh answers).
        self.leader_listeners: list[Callable[[bool], None]] = []
        # Called with the new config after a reload was applied (frontends re-read settings).
        self.reload_listeners: list[Callable[[AgentConfig], None]] = []

    # --- the read and write seams ---------------------------------------------------------

    def read(self, query: Any, options: QueryOptions = QueryOptions()) -> ReadResult | Deferred:
        """Answer a typed query (`agent.rpc.queries`) as `options` asks: a ReadResult now, or a
        Deferred firing with one when it must wait (a blocking query, a quorum round)."""
        if type(query) in _LOCAL_QUERIES:
            return self._local.read(query, options)
        if options.use_cache and self._cache.caches(query):
            return self._cache.read(query, options)
        return self._endpoints.read(query, options)

    def write(self, command: Any, request: WriteRequest = WriteRequest()) -> Deferred:
        """Commit a command through the server endpoints; fires with a WriteResult (the index
        it was applied at and its result), or fails with the error the endpoint gave.
        Agent-local commands (`local_commands`) go to this agent's local state instead."""
        if type(command) in _LOCAL_COMMANDS:
            return self._local.write(command, request)
        return self._endpoints.write(command, request)

    def stop(self) -> None:
        """Drop the agent cache's background refreshes (the agent is stopping)."""
        self._cache.stop()

    def on_change(self, listener: Callable[[int, frozenset[str]], None]) -> Callable[[], None]:
        """Call `listener(index, tables)` after every committed change (tables among
        CATALOG_TABLES and KV_TABLE, SESSIONS_TABLE); returns the call that unsubscribes.
        For caches that must drop what a change made stale (DNS answers, plugin views)."""
        return self._endpoints.on_change(listener)

    def local_index(self, consistency: str, max_stale: float = 0.0) -> int | None:
        """The index a read in `consistency` mode (stale: within `max_stale`, 0 for any) would
        be answered at right now without a round trip, or None: frontends validate cached
        answers with it."""
        if max_stale:
            return self._endpoints.local_index(consistency, max_stale)
        return self._endpoints.local_index(consistency)

    def check_datacenter(self, dc: str | None) -> None:
        """Refuse a datacenter this agent has no path to at all (an agent without gossip
        knows only its own); with gossip, the endpoints judge (and forward)."""
        if dc and dc != self.config.datacenter and not self.forwards_datacenters:
            raise UnknownDatacenter(dc)

    def datacenters(self) -> list[str]:
        return [self.config.datacenter]

    def leader(self) -> str:
        """The leader's server address ("" when none is known)."""
        return self._endpoints.leader() if self._leader_known else ""

    def peers(self) -> list[str]:
        return self._endpoints.peers()

    def known_leader(self) -> bool:
        return bool(self.leader())

    def set_leader_known(self, known: bool) -> None:
        """Called by the consensus layer when the leader is lost or found again."""
        if known != self._leader_known:
            self._leader_known = known
            for listener in list(self.leader_listeners):
                listener(known)

    def last_contact_ms(self) -> int:
        """Milliseconds since this agent's server heard from the leader (0 on the leader)."""
        return int(self._endpoints.last_contact() * 1000)

    def members(self) -> list[Member]:
        return self._members()

    def stats(self) -> dict:
        return self._stats()
