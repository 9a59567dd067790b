"""What the Serf state machine hands to the layer above and to its adapter, as values.

The state machine appends these to its outbox; `Serf.drain()` returns them in order. Events
(`MemberEvent`, `UserEvent`, `Query`, and the `Query*` results of our own queries) are for the
agent (catalog serfHealth, /v1/event/list, exec, keyring). Actions (`SendTo`, `ReconnectTo`,
`BroadcastDone`) are for the adapter, which owns the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Hashable


class MemberStatus(IntEnum):
    """serf's MemberStatus (the numbers /v1/agent/members shows as `Status`)."""

    NONE = 0
    ALIVE = 1
    LEAVING = 2
    LEFT = 3
    FAILED = 4

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Member:
    """A member as Serf reports it."""

    name: str
    addr: bytes  # 4 or 16 raw bytes
    port: int
    tags: dict[str, str] = field(default_factory=dict)
    status: MemberStatus = MemberStatus.ALIVE
    vsn: tuple[int, ...] = (0, 0, 0, 0, 0, 0)  # protocol min/max/cur, delegate min/max/cur


class MemberEventType(Enum):
    JOIN = "member-join"
    LEAVE = "member-leave"
    FAILED = "member-failed"
    UPDATE = "member-update"
    REAP = "member-reap"


@dataclass(frozen=True, slots=True)
class MemberEvent:
    type: MemberEventType
    member: Member


@dataclass(frozen=True, slots=True)
class UserEvent:
    ltime: int
    name: str
    payload: bytes
    coalesce: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A query that passed our filters; answer it with `Serf.respond(query, payload, now)`."""

    ltime: int
    name: str
    payload: bytes
    id: int
    addr: bytes  # where the querier listens (responses go there directly)
    port: int
    source_node: str
    deadline: float  # `now` units: no response after this
    relay_factor: int


@dataclass(frozen=True, slots=True)
class QueryAck:
    """A delivery ack for a query we started."""

    ltime: int
    id: int
    source: str


@dataclass(frozen=True, slots=True)
class QueryReply:
    """A response to a query we started."""

    ltime: int
    id: int
    source: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryDone:
    """A query we started reached its deadline: no more acks or replies will be reported."""

    ltime: int
    id: int


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send `payload` (a whole Serf message) to one node by UDP, as memberlist's
    SendToAddress does: wrapped as a memberlist user message (type 8) in one packet."""

    addr: bytes
    port: int
    node: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class ReconnectTo:
    """Try a memberlist join to this failed member (Serf's periodic reconnect)."""

    name: str
    addr: bytes
    port: int


@dataclass(frozen=True, slots=True)
class BroadcastDone:
    """A broadcast queued with a notify token has been sent for the last time (or dropped)."""

    token: Hashable


SerfOutput = (MemberEvent | UserEvent | Query | QueryAck | QueryReply | QueryDone | SendTo
              | ReconnectTo | BroadcastDone)
