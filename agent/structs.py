"""Frozen value types of the state store: nodes, services, checks, KV entries, sessions.

Names here are Pythonic; the Consul spellings live only in the frontends' encode/decode modules.
Every row carries the Raft index that created it and the one that last changed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
MAINTENANCE = "maintenance"
HEALTH_STATES = (PASSING, WARNING, CRITICAL, MAINTENANCE)

# The check every server carries for itself, as Consul names it.
SERF_CHECK_ID = "serfHealth"
SERF_CHECK_NAME = "Serf Health Status"
SERF_ALIVE_OUTPUT = "Agent alive and reachable"
SERF_FAILED_OUTPUT = "Agent not live or unreachable"

# The checks that put a node, or one of its services, in maintenance mode, as Consul names
# them (its structs.NodeMaint and structs.ServiceMaintPrefix + the service ID).
NODE_MAINT = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"


@dataclass(frozen=True, slots=True)
class Weights:
    passing: int = 1
    warning: int = 1


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    address: str
    node_id: str = ""
    datacenter: str = "dc1"
    tagged_addresses: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True, slots=True)
class Service:
    node: str
    id: str
    name: str
    tags: tuple[str, ...] = ()
    address: str = ""
    port: int = 0
    meta: Mapping[str, str] = field(default_factory=dict)
    tagged_addresses: Mapping[str, ServiceAddress] = field(default_factory=dict)
    weights: Weights = Weights()
    enable_tag_override: bool = False
    kind: str = ""
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True, slots=True)
class CheckDefinition:
    """How a check is run; kept on catalog checks because Consul reports it."""

    interval: float = 0.0
    timeout: float = 0.0
    deregister_critical_service_after: float = 0.0
    http: str = ""
    header: Mapping[str, tuple[str, ...]] | None = None
    method: str = ""
    body: str = ""
    tls_skip_verify: bool = False
    tcp: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    node: str
    check_id: str
    name: str
    status: str = CRITICAL
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: tuple[str, ...] = ()
    type: str = ""
    definition: CheckDefinition = CheckDefinition()
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True, slots=True)
class KVEntry:
    key: str
    value: bytes | None = None
    flags: int = 0
    lock_index: int = 0
    session: str = ""
    create_index: int = 0
    modify_index: int = 0


# Sessions, with Consul's limits (SessionTTLMin is a server setting there, 10s by default).
SESSION_RELEASE = "release"
SESSION_DELETE = "delete"
SESSION_BEHAVIORS = (SESSION_RELEASE, SESSION_DELETE)
DEFAULT_LOCK_DELAY = 15.0
MAX_LOCK_DELAY = 60.0  # a longer lock-delay is cut to this when the session goes
SESSION_TTL_MIN = 10.0
SESSION_TTL_MAX = 86400.0
SESSION_TTL_MULTIPLIER = 2  # a TTL session lives until TTL x 2 passes without a renewal


@dataclass(frozen=True, slots=True)
class ServiceCheck:
    """One of a session's service checks, as Consul names it (ID and namespace)."""

    id: str
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class Session:
    """A session: locks taken with it are released (or their keys deleted) when it goes.

    `lock_delay` and `ttl` are seconds; a `ttl` of 0 means the session has none. `checks`
    (Consul's NodeChecks), `service_checks` and `legacy_checks` (the pre-1.7 "Checks") all name
    checks of `node`; the session is invalidated when any of them turns critical or goes away,
    or when the node is deregistered. None in `checks` or `service_checks` is what Consul shows
    as null (not given), as opposed to an empty list.
    """

    id: str
    name: str = ""
    node: str = ""
    checks: tuple[str, ...] | None = ()
    lock_delay: float = DEFAULT_LOCK_DELAY
    behavior: str = SESSION_RELEASE
    ttl: float = 0.0
    create_index: int = 0
    modify_index: int = 0
    service_checks: tuple[ServiceCheck, ...] | None = None
    legacy_checks: tuple[str, ...] = ()

    def check_ids(self) -> tuple[str, ...]:
        """Every check the session depends on, in Consul's order (Checks, NodeChecks,
        ServiceChecks)."""
        return (*self.legacy_checks, *(self.checks or ()),
                *(c.id for c in self.service_checks or ()))


@dataclass(frozen=True, slots=True)
class TxnError:
    """Why one operation of a transaction failed (`op_index` counts from 0)."""

    op_index: int
    what: str


@dataclass(frozen=True, slots=True)
class TxnOutcome:
    """A transaction's answer: every result when it applied, else only the errors."""

    results: tuple[KVEntry, ...] | None = None
    errors: tuple[TxnError, ...] | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def worst_status(statuses) -> str:
    """The aggregate of several check states: critical beats maintenance beats warning beats passing."""
    worst = PASSING
    for status in statuses:
        if status == CRITICAL:
            return CRITICAL
        if status == MAINTENANCE or (status == WARNING and worst == PASSING):
            worst = status
    return worst
