"""Serf's Lamport clock: a counter that only moves forward, and jumps past anything it sees."""

from __future__ import annotations


class LamportClock:
    """One of Serf's three clocks (membership, user events, queries)."""

    __slots__ = ("_counter",)

    def __init__(self, start: int = 0) -> None:
        self._counter = start

    def time(self) -> int:
        return self._counter

    def increment(self) -> int:
        """Advance and return the new time."""
        self._counter += 1
        return self._counter

    def witness(self, other: int) -> None:
        """Seeing `other` means our next message must sort after it: move to other + 1
        unless we are already past it (equal counts as behind, as in Serf)."""
        if other >= self._counter:
            self._counter = other + 1
