"""The typed reads of the core: one frozen query per kind of read, named as Consul's endpoints.

Frontends build these and hand them to `facade.read(query, QueryOptions)`; the server
endpoints (`agent.rpc.reads`) answer them from the state store, the client agent (a later
issue) sends them to a server. Results are typed values from `agent.structs` and the small
result types below — never JSON: the Consul spelling of a field lives in the encoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from agent.structs import Check, Node, Service

# --- result types ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceNode:
    """A service instance with its node (Consul's ServiceNode, flattened by the encoder)."""

    node: Node
    service: Service


@dataclass(frozen=True, slots=True)
class CheckServiceNode:
    """A service instance, its node, and the checks of both (Consul's CheckServiceNode)."""

    node: Node
    service: Service
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class NodeServices:
    """A node and its services by ID (Consul's NodeServices)."""

    node: Node
    services: Mapping[str, Service]


# --- KV --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KVGet:
    """One key: a KVEntry, or None."""

    ENDPOINT = "KVS.Get"
    key: str


@dataclass(frozen=True, slots=True)
class KVList:
    """Every entry under a prefix, in key order."""

    ENDPOINT = "KVS.List"
    prefix: str


@dataclass(frozen=True, slots=True)
class KVKeys:
    """The keys under a prefix, rolled up at `separator` (Consul's ?keys&separator=)."""

    ENDPOINT = "KVS.ListKeys"
    prefix: str
    separator: str = ""


@dataclass(frozen=True, slots=True)
class KVTombstones:
    """The keys deleted under a prefix that the store still remembers (until tombstone GC),
    with the index each was deleted at: list[tuple[str, int]] in key order. Not a Consul
    endpoint: the etcd v2 API reports past deletions to its watches from it."""

    ENDPOINT = "KVS.Tombstones"
    prefix: str


# --- catalog ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogDatacenters:
    """Known datacenters, nearest first: list[str]. Answered without the store."""

    ENDPOINT = "Catalog.ListDatacenters"


@dataclass(frozen=True, slots=True)
class CatalogNodes:
    """Every node (with `node_meta`, only those carrying all of it): list[Node].

    Queries are hashable (the endpoints memoize answers by query): maps are sorted pairs."""

    ENDPOINT = "Catalog.ListNodes"
    node_meta: tuple[tuple[str, str], ...] = ()  # (key, value) pairs a node must carry


@dataclass(frozen=True, slots=True)
class CatalogServices:
    """Service name -> its tags (union over instances), sorted: dict[str, list[str]]."""

    ENDPOINT = "Catalog.ListServices"
    node_meta: tuple[tuple[str, str], ...] = ()  # (key, value) pairs a node must carry


@dataclass(frozen=True, slots=True)
class CatalogServiceNodes:
    """The instances of a service carrying every tag in `tags`: list[ServiceNode]."""

    ENDPOINT = "Catalog.ServiceNodes"
    service: str
    tags: tuple[str, ...] = ()
    node_meta: tuple[tuple[str, str], ...] = ()  # (key, value) pairs a node must carry


@dataclass(frozen=True, slots=True)
class CatalogNodeServices:
    """A node and its services: NodeServices, or None for an unknown node."""

    ENDPOINT = "Catalog.NodeServices"
    node: str


# --- health ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthNodeChecks:
    """The checks of a node: list[Check]."""

    ENDPOINT = "Health.NodeChecks"
    node: str


@dataclass(frozen=True, slots=True)
class HealthServiceChecks:
    """The checks of every instance of a service: list[Check]."""

    ENDPOINT = "Health.ServiceChecks"
    service: str
    node_meta: tuple[tuple[str, str], ...] = ()  # (key, value) pairs a node must carry


@dataclass(frozen=True, slots=True)
class HealthServiceNodes:
    """Instances of a service with their checks: list[CheckServiceNode]. With `passing`,
    only instances whose every check passes (warning counts as failing there)."""

    ENDPOINT = "Health.ServiceNodes"
    service: str
    tags: tuple[str, ...] = ()
    passing: bool = False
    node_meta: tuple[tuple[str, str], ...] = ()  # (key, value) pairs a node must carry


@dataclass(frozen=True, slots=True)
class HealthChecksInState:
    """Checks in a state ("any" for all): list[Check]."""

    ENDPOINT = "Health.ChecksInState"
    state: str
    node_meta: tuple[tuple[str, str], ...] = ()  # (key, value) pairs a node must carry


@dataclass(frozen=True, slots=True)
class ServiceDump:
    """Every service instance with its node and checks, by service name then node: list[
    CheckServiceNode]. What plugin views and reverse DNS lookups are built from."""

    ENDPOINT = "Internal.ServiceDump"


# --- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionGet:
    """One session: list[Session] of zero or one, as Consul answers."""

    ENDPOINT = "Session.Get"
    id: str


@dataclass(frozen=True, slots=True)
class SessionList:
    """Every session: list[Session]."""

    ENDPOINT = "Session.List"


@dataclass(frozen=True, slots=True)
class SessionNode:
    """The sessions of a node: list[Session]."""

    ENDPOINT = "Session.NodeSessions"
    node: str


@dataclass(frozen=True, slots=True)
class SessionExpiries:
    """How long each TTL session of `ids` has left, as the leader's timers say:
    dict[id, seconds] (sessions without a TTL timer are absent). Waypost's own read: the etcd
    API shows a TTL'd key's expiration from it. Answered by the leader only."""

    ENDPOINT = "Session.Expiries"
    ids: tuple[str, ...]


# --- this agent (answered by the agent itself, never forwarded) ------------------------------


@dataclass(frozen=True, slots=True)
class AgentServices:
    """The services registered at this agent, by ID: dict[str, Service]."""

    ENDPOINT = "Agent.Services"
    LOCAL = True


@dataclass(frozen=True, slots=True)
class AgentChecks:
    """The checks registered at this agent, by ID: dict[str, Check]."""

    ENDPOINT = "Agent.Checks"
    LOCAL = True


@dataclass(frozen=True, slots=True)
class AgentService:
    """One service registered at this agent: a Service (NotFound when there is none). The
    answer's `meta.hash` is its content hash; `QueryOptions.hash` blocks until it differs
    (Consul's hash-based blocking on /v1/agent/service/<id>)."""

    ENDPOINT = "Agent.Service"
    LOCAL = True
    id: str


@dataclass(frozen=True, slots=True)
class AgentServiceHealth:
    """A local service instance, its local checks, and their aggregated status (Consul's
    AgentServiceChecksInfo): "maintenance" when a maintenance check is among them, else
    the worst status of the checks."""

    status: str
    service: Service
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class AgentHealthServiceByID:
    """The health of the local service `id`: AgentServiceHealth, or None."""

    ENDPOINT = "Agent.HealthServiceByID"
    LOCAL = True
    id: str


@dataclass(frozen=True, slots=True)
class AgentHealthServiceByName:
    """The health of every local instance of service `name`, by ID: list[AgentServiceHealth]
    (empty when there is none)."""

    ENDPOINT = "Agent.HealthServiceByName"
    LOCAL = True
    name: str


@dataclass(frozen=True, slots=True)
class AgentMembers:
    """The gossip members this agent sees (LAN, or the WAN pool): list[Member]."""

    ENDPOINT = "Agent.Members"
    LOCAL = True
    wan: bool = False


STORE_QUERIES = (KVGet, KVList, KVKeys, KVTombstones, CatalogNodes, CatalogServices, CatalogServiceNodes,
                 CatalogNodeServices, HealthNodeChecks, HealthServiceChecks,
                 HealthServiceNodes, HealthChecksInState, ServiceDump, SessionGet, SessionList,
                 SessionNode)

# Answered by this agent's local state (`agent.local.endpoints`), whatever kind of agent it is.
LOCAL_QUERIES = (AgentServices, AgentChecks, AgentService, AgentHealthServiceByID,
                 AgentHealthServiceByName)
