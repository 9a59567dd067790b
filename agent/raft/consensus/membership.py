"""Cluster membership: which servers vote, which only replicate, and what a quorum is.

Changes are single-server (Raft thesis 4.1): each configuration entry differs from the one
before it by one server, so any majority of the old voters overlaps any majority of the new
ones and no joint consensus is needed. A server uses the newest configuration in its log,
committed or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import msgpack


class ChangeKind(Enum):
    ADD_NONVOTER = "add_nonvoter"   # a new server catches up without affecting quorums
    PROMOTE = "promote"             # a caught-up non-voter becomes a voter
    DEMOTE = "demote"               # a voter keeps replicating but stops voting
    REMOVE = "remove"               # the server leaves the configuration


class InvalidChange(ValueError):
    """The change does not apply to the current configuration."""


@dataclass(frozen=True, slots=True)
class Configuration:
    """The servers of the cluster. A server is in at most one of the two sets."""

    voters: frozenset[str] = frozenset()
    nonvoters: frozenset[str] = frozenset()

    @classmethod
    def of(cls, voters: list[str] | tuple[str, ...], nonvoters: tuple[str, ...] = ()) -> Configuration:
        return cls(frozenset(voters), frozenset(nonvoters))

    @property
    def servers(self) -> frozenset[str]:
        return self.voters | self.nonvoters

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def has_quorum(self, ids: set[str] | frozenset[str]) -> bool:
        """True when `ids` holds a majority of the voters (an empty configuration has none)."""
        return bool(self.voters) and len(self.voters & ids) >= self.quorum()

    def quorum_value(self, values: dict[str, int]) -> int:
        """The largest v such that a majority of voters have a value >= v (0 for missing)."""
        ranked = sorted((values.get(v, 0) for v in self.voters), reverse=True)
        if not ranked:
            return 0
        return ranked[self.quorum() - 1]

    def apply(self, kind: ChangeKind, server: str) -> Configuration:
        if kind is ChangeKind.ADD_NONVOTER:
            if server in self.servers:
                raise InvalidChange(f"{server} is already a member")
            return Configuration(self.voters, self.nonvoters | {server})
        if kind is ChangeKind.PROMOTE:
            if server not in self.nonvoters:
                raise InvalidChange(f"{server} is not a non-voter")
            return Configuration(self.voters | {server}, self.nonvoters - {server})
        if kind is ChangeKind.DEMOTE:
            if server not in self.voters:
                raise InvalidChange(f"{server} is not a voter")
            return Configuration(self.voters - {server}, self.nonvoters | {server})
        if server not in self.servers:
            raise InvalidChange(f"{server} is not a member")
        return Configuration(self.voters - {server}, self.nonvoters - {server})

    def encode(self) -> bytes:
        return msgpack.packb([sorted(self.voters), sorted(self.nonvoters)])

    @classmethod
    def decode(cls, data: bytes) -> Configuration:
        voters, nonvoters = msgpack.unpackb(data)
        if not all(isinstance(s, str) for s in [*voters, *nonvoters]):
            raise ValueError("configuration members must be strings")
        return cls(frozenset(voters), frozenset(nonvoters))
