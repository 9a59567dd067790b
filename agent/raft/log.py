"""The Raft log store contract (`LogStore`) and `MemoryLog`, the in-memory implementation:
the model the durable `agent.raft.wal.WriteAheadLog` is tested against, and the log of the
deterministic simulator."""

from __future__ import annotations

from typing import Iterable, Protocol

from twisted.internet.defer import Deferred, succeed

from agent.raft.records import (
    Entry,
    EntryNotFound,
    HardState,
    InvalidHardState,
    LogCompacted,
    check_entries,
)


class LogStore(Protocol):
    """Raft's log. Indexes are contiguous. An empty log reports last_index = first_index - 1
    and last_term 0 (Raft then takes both from its snapshot) and takes its next entry at any
    index. `term_at(0)` is 0. Reading a compacted index raises `LogCompacted`, one past the
    end `EntryNotFound`; `entries(lo, hi)` is inclusive and stops at the end of the log."""

    @property
    def first_index(self) -> int: ...
    @property
    def last_index(self) -> int: ...
    @property
    def last_term(self) -> int: ...
    def term_at(self, index: int) -> int: ...
    def entry(self, index: int) -> Entry: ...
    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]: ...
    def append(self, entries: Iterable[Entry]) -> Deferred: ...
    def truncate_after(self, index: int) -> None: ...
    def compact_through(self, index: int) -> None: ...
    def save_hard_state(self, term: int, voted_for: str | None) -> Deferred: ...
    def hard_state(self) -> HardState: ...
    def close(self) -> Deferred: ...


def check_hard_state(current: HardState, term: int, voted_for: str | None) -> HardState:
    if not isinstance(term, int) or isinstance(term, bool) or term < current.term:
        raise InvalidHardState(f"term {term!r} is below the saved term {current.term}")
    if voted_for is not None and not isinstance(voted_for, str):
        raise InvalidHardState(f"voted_for must be a server id or None, not {voted_for!r}")
    return HardState(term, voted_for)


class ReadBudget:
    """For `entries(max_bytes=)`: data sizes are taken while they fit, but the first always
    is, so a reader always makes progress."""

    def __init__(self, max_bytes: int | None) -> None:
        self.left, self.first = max_bytes, True

    def take(self, size: int) -> bool:
        if self.left is None:
            return True
        if size > self.left and not self.first:
            return False
        self.first = False
        self.left -= size
        return True


class MemoryLog:
    """A `LogStore` in memory whose appends are durable at once: the model `WriteAheadLog`
    is tested against, and the log of the deterministic simulator."""

    def __init__(self) -> None:
        self._first = 1
        self._entries: list[Entry] = []
        self._hard = HardState()

    @property
    def first_index(self) -> int:
        return self._first

    @property
    def last_index(self) -> int:
        return self._first + len(self._entries) - 1

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else 0

    def term_at(self, index: int) -> int:
        return 0 if index == 0 else self.entry(index).term

    def entry(self, index: int) -> Entry:
        if index < self._first:
            raise LogCompacted(f"entry {index} is compacted (the log starts at {self._first})")
        if index > self.last_index:
            raise EntryNotFound(f"entry {index} is past the end ({self.last_index})")
        return self._entries[index - self._first]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        hi = min(hi, self.last_index)
        if lo > hi:
            return []
        self.entry(lo)
        budget = ReadBudget(max_bytes)
        out = []
        for entry in self._entries[lo - self._first:hi - self._first + 1]:
            if not budget.take(len(entry.data)):
                break
            out.append(entry)
        return out

    def append(self, entries: Iterable[Entry]) -> Deferred:
        entries = list(entries)
        check_entries(entries, self.last_index, self.last_term, not self._entries)
        if not self._entries:
            self._first = entries[0].index
        self._entries.extend(entries)
        return succeed(self.last_index)

    def truncate_after(self, index: int) -> None:
        if index < self._first - 1:
            raise LogCompacted(f"cannot truncate after {index}: the log starts at {self._first}")
        del self._entries[max(0, index - self._first + 1):]

    def compact_through(self, index: int) -> None:
        if index >= self._first:
            del self._entries[:index - self._first + 1]
            self._first = index + 1

    def save_hard_state(self, term: int, voted_for: str | None) -> Deferred:
        self._hard = check_hard_state(self._hard, term, voted_for)
        return succeed(None)

    def hard_state(self) -> HardState:
        return self._hard

    def close(self) -> Deferred:
        return succeed(None)
