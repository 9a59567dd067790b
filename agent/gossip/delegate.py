"""What the SWIM layer asks of the layer above it (Serf), and tells it: memberlist's Delegate,
EventDelegate and PingDelegate, as one protocol each. The SWIM state machine calls these
synchronously; they must not block and must not call back into SWIM re-entrantly except
through the methods SWIM documents as safe (queueing a broadcast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent.gossip.messages import NodeState


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A member as SWIM knows it (memberlist's Node)."""

    name: str
    addr: bytes  # 4 or 16 raw bytes
    port: int
    meta: bytes
    state: NodeState
    vsn: tuple[int, ...]  # pmin, pmax, pcur, dmin, dmax, dcur


class Delegate(Protocol):
    def node_meta(self, limit: int) -> bytes:
        """This node's metadata (Serf's encoded tags), at most `limit` bytes."""

    def notify_message(self, payload: bytes) -> None:
        """A user message (memberlist userMsg) arrived, by packet or stream."""

    def broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """User broadcasts to piggyback: each costs len + `overhead`; total at most `limit`."""

    def local_state(self, join: bool) -> bytes:
        """The user state sent in a push-pull."""

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        """The user state received in a push-pull."""


class EventDelegate(Protocol):
    def notify_join(self, node: NodeInfo) -> None: ...

    def notify_leave(self, node: NodeInfo) -> None:
        """The node is dead or left (`node.state` says which)."""

    def notify_update(self, node: NodeInfo) -> None:
        """The node's metadata changed."""


class PingDelegate(Protocol):
    def ack_payload(self) -> bytes:
        """The payload this node puts in its acks (Serf: its network coordinate)."""

    def notify_ping_complete(self, node: NodeInfo, rtt: float, payload: bytes) -> None: ...
