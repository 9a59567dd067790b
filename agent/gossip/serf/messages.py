"""Serf's gossip messages as values, with the type numbers of serf 0.9.x's `messageType`.

A Serf message rides inside memberlist as a user message: one type byte, then the go-msgpack
encoding of the struct (`agent.gossip.serf.codec` owns the bytes). Lamport times are unsigned
64-bit integers. Field meanings are Serf's; the comments say why a field exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class SerfMessageType(IntEnum):
    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5
    CONFLICT_RESPONSE = 6
    KEY_REQUEST = 7
    KEY_RESPONSE = 8
    RELAY = 9


QUERY_FLAG_ACK = 1  # the querier wants a delivery ack from every node that passes the filters
QUERY_FLAG_NO_BROADCAST = 2  # do not re-gossip (a query aimed at chosen members only)


class FilterType(IntEnum):
    NODE = 0  # a list of node names
    TAG = 1  # a tag name and a regular expression its value must match


@dataclass(frozen=True, slots=True)
class Join:
    """A join intent: stamps the node's membership with a Lamport time."""

    ltime: int
    node: str


@dataclass(frozen=True, slots=True)
class Leave:
    """A leave intent (graceful leave, or force-leave of another node; `prune` reaps at once)."""

    ltime: int
    node: str
    prune: bool = False


@dataclass(frozen=True, slots=True)
class UserEventRecord:
    """One event remembered in the event buffer (serf's `userEvent`)."""

    name: str
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class UserEvents:
    """All the events seen at one Lamport time (one slot of the event buffer)."""

    ltime: int
    events: tuple[UserEventRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class PushPull:
    """Serf's half of a push-pull: member status times, tombstones and recent events.

    `events` is the event ring buffer as Serf sends it: one slot per buffer entry, `None` for
    an empty slot (Consul sends all 512 slots)."""

    ltime: int
    status_ltimes: dict[str, int] = field(default_factory=dict)
    left_members: tuple[str, ...] = ()
    event_ltime: int = 0
    events: tuple[UserEvents | None, ...] = ()
    query_ltime: int = 0


@dataclass(frozen=True, slots=True)
class UserEventMessage:
    ltime: int
    name: str
    payload: bytes = b""
    cc: bool = False  # "can coalesce"


@dataclass(frozen=True, slots=True)
class QueryMessage:
    ltime: int
    id: int  # random uint32 chosen by the querier; (ltime, id) names the query
    addr: bytes  # the querier's IP, raw bytes: responses go straight there by UDP
    port: int
    source_node: str
    filters: tuple[bytes, ...] = ()  # each: a FilterType byte then its msgpack body
    flags: int = 0
    relay_factor: int = 0  # how many other members also relay each response
    timeout_ns: int = 0  # Go's time.Duration: nanoseconds
    name: str = ""
    payload: bytes = b""

    @property
    def ack(self) -> bool:
        return bool(self.flags & QUERY_FLAG_ACK)

    @property
    def no_broadcast(self) -> bool:
        return bool(self.flags & QUERY_FLAG_NO_BROADCAST)

    @property
    def timeout(self) -> float:
        return self.timeout_ns / 1e9


@dataclass(frozen=True, slots=True)
class QueryResponseMessage:
    ltime: int
    id: int
    source: str  # Serf's `From`: the responding node
    flags: int = 0
    payload: bytes = b""

    @property
    def ack(self) -> bool:
        return bool(self.flags & QUERY_FLAG_ACK)


@dataclass(frozen=True, slots=True)
class NodeFilter:
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TagFilter:
    tag: str
    expr: str  # a Go RE2 regular expression, unanchored


QueryFilter = NodeFilter | TagFilter


@dataclass(frozen=True, slots=True)
class Relay:
    """A message to forward to `dest` (serf's relayHeader + the inner message's bytes)."""

    dest_addr: bytes
    dest_port: int
    dest_name: str
    inner: bytes  # a whole Serf message: type byte + body
    dest_zone: str = ""


@dataclass(frozen=True, slots=True)
class KeyRequest:
    key: bytes


@dataclass(frozen=True, slots=True)
class KeyResponse:
    """One node's answer to a keyring query (serf's nodeKeyResponse)."""

    result: bool
    message: str = ""
    keys: tuple[str, ...] = ()  # base64 keys, list-keys only
    primary_key: str = ""


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """serf's `Member` as the conflict-resolution response carries it."""

    name: str
    addr: bytes
    port: int
    tags: dict[str, str]
    status: int
    vsn: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)  # pmin pmax pcur dmin dmax dcur


@dataclass(frozen=True, slots=True)
class ConflictResponse:
    member: MemberRecord | None  # None: the responder does not know the node
