"""memberlist's messages as values, with the type numbers its wire format gives them.

Field meanings are memberlist's (hashicorp/memberlist 0.2.x as used by Consul 1.8.7): a node is
named by a string, addressed by its IP as 4 or 16 raw bytes and a port, and carries an
incarnation number that only the node itself raises (to refute a suspicion). `vsn` is the six
protocol/delegate version bytes (pmin, pmax, pcur, dmin, dmax, dcur). `meta` is the delegate's
opaque node metadata (Serf's encoded tags), at most `META_MAX_SIZE` bytes.

The codec (`agent.gossip.codec`) owns the byte layout; the state machines only see these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

META_MAX_SIZE = 512


class MessageType(IntEnum):
    """The first byte of every memberlist message (memberlist's messageType)."""

    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERR = 13


class NodeState(IntEnum):
    """A member's state as memberlist keeps it and push-pull carries it."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3  # memberlist 0.2: a dead message sent by the node itself


@dataclass(frozen=True, slots=True)
class Ping:
    seq_no: int
    node: str  # the intended target's name, so a restarted node under another name ignores it
    source_addr: bytes = b""  # where to answer (empty: the packet's source)
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class IndirectPing:
    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool = False  # the requester wants a nack if the target stays silent
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    seq_no: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Nack:
    seq_no: int


@dataclass(frozen=True, slots=True)
class Err:
    error: str


@dataclass(frozen=True, slots=True)
class Suspect:
    incarnation: int
    node: str
    source: str  # memberlist's `From`: who suspects


@dataclass(frozen=True, slots=True)
class Alive:
    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes = b""
    vsn: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Dead:
    incarnation: int
    node: str
    source: str  # memberlist's `From`; equal to `node` when the node leaves by itself


@dataclass(frozen=True, slots=True)
class User:
    """A delegate (Serf) message riding in a packet or a stream."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PushNodeState:
    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: NodeState
    vsn: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PushPull:
    """A full-state exchange over a stream: every member memberlist knows, and the delegate's
    own state (Serf's `messagePushPull`, encoded by Serf)."""

    nodes: tuple[PushNodeState, ...]
    user_state: bytes = b""
    join: bool = False


Message = (Ping | IndirectPing | Ack | Nack | Err | Suspect | Alive | Dead | User | PushPull)

BROADCASTS = (Suspect, Alive, Dead)  # what rides piggybacked on probes, retransmitted


@dataclass(frozen=True, slots=True)
class Compound:
    """Several messages in one packet (memberlist's compoundMsg)."""

    parts: tuple[bytes, ...] = field(default_factory=tuple)
