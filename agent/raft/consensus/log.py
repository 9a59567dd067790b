"""The in-memory view of a server's log: a compacted prefix (index and term only) followed by
the entries still held. The node changes it and describes each change in a `Persist` output;
the disk is the driver's business."""

from __future__ import annotations

from agent.raft.records import Entry


class MemoryLog:
    """Entries `offset+1 .. last_index`; `offset`/`offset_term` describe the compacted prefix."""

    def __init__(self, offset: int = 0, offset_term: int = 0, entries: list[Entry] | None = None):
        self.offset = offset
        self.offset_term = offset_term
        self._entries: list[Entry] = []
        for e in entries or []:
            if e.index <= offset:
                continue  # a driver may hand back entries a snapshot already covers
            if e.index != self.last_index + 1:
                raise ValueError(f"log gap: {e.index} after {self.last_index}")
            self._entries.append(e)

    @property
    def last_index(self) -> int:
        return self.offset + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.offset_term

    def term_at(self, index: int) -> int | None:
        """The term of `index`, or None when it is compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        if index < self.offset or index > self.last_index:
            return None
        return self._entries[index - self.offset - 1].term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.offset - 1]

    def slice(self, first: int, last: int) -> list[Entry]:
        """Entries `first..last` inclusive; both must be held."""
        return self._entries[first - self.offset - 1:last - self.offset]

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def append(self, entries: list[Entry]) -> None:
        for e in entries:
            assert e.index == self.last_index + 1, (e.index, self.last_index)
            self._entries.append(e)

    def truncate_from(self, index: int) -> None:
        """Drop `index` and everything after it."""
        assert index > self.offset
        del self._entries[index - self.offset - 1:]

    def compact_through(self, index: int, term: int) -> None:
        """Forget entries up to `index`; if they are not held, the log restarts after it."""
        if index <= self.offset:
            return
        if index >= self.last_index or self.term_at(index) != term:
            self._entries = []
        else:
            del self._entries[:index - self.offset]
        self.offset, self.offset_term = index, term

    def first_index_of_term(self, index: int) -> int:
        """The first held index whose term equals the term at `index` (a conflict hint)."""
        term = self.term_at(index)
        while index - 1 > self.offset and self.term_at(index - 1) == term:
            index -= 1
        return index
