"""What every read and write carries through the core, and what comes back.

Owns the request/response envelope of the facade and of the server endpoints, shaped as
Consul's `QueryOptions`, `QueryMeta` and `WriteRequest`: the datacenter, the token, the
consistency mode of a read (decided in one place, `agent.rpc.server`), blocking parameters,
and the meta Consul reports (`X-Consul-Index`, `-KnownLeader`, `-LastContact`,
`-Effective-Consistency`, `-Results-Filtered-By-ACLs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT = "default"  # served by the leader under its lease (forwarded to it if needed)
STALE = "stale"  # served by any server from its replica
CONSISTENT = "consistent"  # the leader confirms its leadership with a quorum round first
CONSISTENCY_MODES = (DEFAULT, STALE, CONSISTENT)

# Consul's blocking-query bounds: the default wait, its cap, and the jitter fraction (up to
# wait/16 is added so that parked queries do not all return at the same moment).
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
JITTER_FRACTION = 16


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """How to answer one read. Times are seconds.

    `use_cache` lets the agent's cache answer (Consul's ?cached, for the reads it caches).
    `min_index` > 0 makes the read blocking: it answers once the result's index passes it, or
    when `wait` (0: Consul's default) runs out. `hash` does the same for agent-local reads
    that block on a content hash. `filter` is a go-bexpr expression over the result rows.
    """

    datacenter: str = ""
    token: str = ""
    consistency: str = DEFAULT
    max_stale: float = 0.0
    min_index: int = 0
    wait: float = 0.0
    hash: str = ""
    filter: str = ""
    use_cache: bool = False  # ?cached: may be answered from the agent's cache
    max_age: float = 0.0  # with use_cache: the oldest cached answer the client takes (0: any)

    @property
    def blocking(self) -> bool:
        return self.min_index > 0 or bool(self.hash)


@dataclass(frozen=True, slots=True)
class QueryMeta:
    """What Consul reports with a read besides the result."""

    index: int
    known_leader: bool = True
    last_contact: float = 0.0  # seconds since the serving server heard from the leader
    consistency: str = DEFAULT
    results_filtered: bool = False  # rows dropped by ACLs
    hash: str = ""  # agent-local hash-blocking reads
    cache_hit: bool | None = None  # ?cached reads: whether the agent's cache answered
    cache_age: float = 0.0  # and how old its answer was (0 while refreshed in the background)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A read's answer. `value` is typed (structs from `agent.structs`), never JSON; the same
    object is handed to every reader woken at one index, so a frontend may cache its encoding
    by identity or by `meta.index`."""

    value: Any
    meta: QueryMeta

    @property
    def index(self) -> int:
        return self.meta.index


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Who writes, where: Consul's WriteRequest."""

    datacenter: str = ""
    token: str = ""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A write's answer: the log index the command was applied at, and what it returned."""

    index: int
    value: Any
