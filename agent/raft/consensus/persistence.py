"""Gathers a node's changes to durable state into `Persist` writes, numbers them, and holds
back each outgoing message until the writes it depends on are acknowledged.

Within one write the order is fixed (snapshot, truncate, compact, append, hard state); a
change that must come after entries already gathered (a truncation after an append) closes
the write and starts the next one, so the writes replay the node's changes exactly.
"""

from __future__ import annotations

from agent.raft.records import Entry, HardState

from .messages import Snapshot
from .outputs import Persist, Send


class PersistQueue:
    def __init__(self) -> None:
        self.issued = 0       # seq of the last Persist handed out
        self.acked = 0        # seq of the last one acknowledged durable
        self._hard_state_seq = 0
        self._done: list[Persist] = []
        self._open: dict = {}
        self._held: list[tuple[int, Send]] = []
        self._tails: list[tuple[int, int, int]] = []  # (seq, last index, its term) per write

    # --- gathering ------------------------------------------------------------------------

    @property
    def _open_seq(self) -> int:
        return self.issued + len(self._done) + 1

    def hard_state(self, state: HardState) -> None:
        self._open["hard_state"] = state
        self._hard_state_seq = self._open_seq

    def snapshot(self, snap: Snapshot, truncate_from: int | None, compact_through: int) -> None:
        self._close()
        self._open.update(snapshot=snap, compact_through=compact_through)
        if truncate_from is not None:
            self._open["truncate_from"] = truncate_from

    def compact(self, through: int) -> None:
        if self._open.get("entries"):
            self._close()
        self._open["compact_through"] = max(through, self._open.get("compact_through", 0))

    def truncate(self, index: int) -> None:
        if self._open.get("entries") or "compact_through" in self._open:
            self._close()
        self._open["truncate_from"] = min(index, self._open.get("truncate_from", index))

    def append(self, entries: list[Entry]) -> None:
        self._open.setdefault("entries", []).extend(entries)

    def _close(self) -> None:
        if not self._open:
            return
        fields = dict(self._open)
        entries = tuple(fields.pop("entries", ()))
        self._done.append(Persist(seq=self._open_seq, entries=entries, **fields))
        self._open = {}

    def mark_tail(self, last_index: int, last_term: int) -> None:
        """Record what the log's end will be once the open write is durable."""
        if self._open or self._done:
            self._tails.append((self._open_seq if self._open else self._open_seq - 1,
                                last_index, last_term))

    # --- messages -------------------------------------------------------------------------

    def send(self, send: Send, leader_append: bool = False) -> None:
        """Queue a message behind every write so far, or (a leader's AppendEntries) behind
        the last write of its term and vote only."""
        if leader_append:
            needs = self._hard_state_seq
        else:
            needs = self._open_seq if self._open else self._open_seq - 1
        self._held.append((needs, send))

    # --- draining -------------------------------------------------------------------------

    def take_writes(self) -> tuple[Persist, ...]:
        self._close()
        out = tuple(self._done)
        self._done = []
        if out:
            self.issued = out[-1].seq
        return out

    def acknowledge(self, seq: int) -> list[tuple[int, int]]:
        """Mark writes through `seq` durable; returns the log tails they made durable."""
        if seq > self.issued:
            raise ValueError(f"persisted({seq}) but only {self.issued} issued")
        self.acked = max(self.acked, seq)
        done = [(i, t) for s, i, t in self._tails if s <= self.acked]
        self._tails = [x for x in self._tails if x[0] > self.acked]
        return done

    def take_messages(self) -> tuple[Send, ...]:
        ready = tuple(s for needs, s in self._held if needs <= self.acked)
        self._held = [(n, s) for n, s in self._held if n > self.acked]
        return ready
