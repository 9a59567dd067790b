"""What the SWIM state machine (`agent.gossip.swim.Swim`) asks its adapter to do: values
taken with `take_outputs()`, sent by agent.gossip.pool (or a simulation)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.gossip.membership import Address
from agent.gossip.messages import Message, Ping


@dataclass(frozen=True, slots=True)
class SendPacket:
    """Send `messages` in one UDP packet to `to`."""

    to: Address
    messages: tuple[Message, ...]
    crc: bool = False  # the recipient speaks protocol 5: wrap in memberlist's CRC envelope


@dataclass(frozen=True, slots=True)
class StartPushPull:
    """Open a stream to `to` and exchange full state (push-pull)."""

    to: Address
    join: bool
    node: str = ""  # the peer's name when known


@dataclass(frozen=True, slots=True)
class TcpPing:
    """memberlist's fallback probe: ping `to` over a stream; report by `deadline`."""

    to: Address
    ping: Ping
    deadline: float


Output = SendPacket | StartPushPull | TcpPing
