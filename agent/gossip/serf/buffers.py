"""Serf's de-duplication rings for user events and queries.

Both are indexed by `ltime % size`: a slot remembers what was seen at one Lamport time. A
message older than the clock minus the ring size can no longer be checked, so it is dropped;
one whose slot already lists it is a duplicate. Only news is delivered and re-gossiped.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from agent.gossip.serf.lamport import LamportClock
from agent.gossip.serf.messages import UserEventRecord, UserEvents

_Item = TypeVar("_Item")


class _Ring(Generic[_Item]):
    """Slots indexed by `ltime % size`, each the Lamport time it holds and what was seen then."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.min_time = 0  # older items are ignored (a join that asked to skip history)
        self._slots: list[tuple[int, list[_Item]] | None] = [None] * size

    def add(self, ltime: int, item: _Item, clock: LamportClock) -> bool:
        """Remember `item`; True if it is new (deliver and re-gossip it)."""
        now = clock.time()
        if ltime < self.min_time or (now > self.size and ltime < now - self.size):
            return False  # too old to tell whether it is a duplicate
        idx = ltime % self.size
        slot = self._slots[idx]
        if slot is not None and slot[0] == ltime:
            if item in slot[1]:
                return False
            slot[1].append(item)
        else:
            self._slots[idx] = (ltime, [item])
        return True


class EventBuffer(_Ring[UserEventRecord]):
    def snapshot(self) -> tuple[UserEvents | None, ...]:
        """The ring as push-pull carries it (every slot, None where empty)."""
        return tuple(None if s is None else UserEvents(s[0], tuple(s[1])) for s in self._slots)


class QueryBuffer(_Ring[int]):
    """Query ids seen, by Lamport time."""
