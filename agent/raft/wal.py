"""`WriteAheadLog`: Raft's durable `LogStore`, in `data_dir/raft/wal/`. The protocol and
`MemoryLog` live in `agent.raft.log`; this module re-exports them with every error class.

`WriteAheadLog` keeps every file operation off the reactor. The reactor thread encodes the
records, decides where each goes (segment, offset) and queues operations; one batch of them
at a time runs in the injected thread pool (`agent.raft.disk`): the writes, then one fsync
that covers them all. Appends arriving while a batch is in the pool wait for the next one
(group commit), so at most one fsync is in flight and throughput grows with concurrency.
Writes run in the pool too: a batch is one pwrite per file instead of one per entry on the
reactor, and a write stalled by the kernel's dirty-page throttling stalls the pool, not the
reactor (bench/wal_bench.py measures both ways).

Entries are visible to reads as soon as `append` returns (Raft's leader replicates while its
own fsync runs): served from memory until their batch is written, then from the file with
one pread per segment (recent entries come from the page cache).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from typing import Iterable

import txaio
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from agent.raft.disk import Disk, Fsync, Recovered, Segment, default_fsync, recover
from agent.raft.log import LogStore, MemoryLog, ReadBudget, check_hard_state
from agent.raft.records import (
    HEADER_SIZE,
    MIN_RECORD,
    Entry,
    EntryNotFound,
    HardState,
    InvalidAppend,
    InvalidHardState,  # noqa: F401 (re-exported)
    LogCompacted,
    LogError,
    WALClosed,
    WALCorrupt,
    WALFormatError,
    WALLocked,
    check_entries,
    decode_record,
    encode_hard_state,
    encode_record,
    segment_name,
)

txaio.use_twisted()

__all__ = [
    "Entry", "HardState", "LogStore", "MemoryLog", "WriteAheadLog", "SEGMENT_BYTES",
    "default_fsync", "LogError", "WALCorrupt", "WALFormatError", "WALLocked", "WALClosed",
    "InvalidAppend", "InvalidHardState", "EntryNotFound", "LogCompacted",
]

SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass
class _Batch:
    """The operations of one group commit, and whom to tell once they are durable."""

    ops: list[list] = field(default_factory=list)
    waiters: list[tuple[Deferred, object]] = field(default_factory=list)
    written: list[Entry] = field(default_factory=list)


class WriteAheadLog:
    """The durable `LogStore`, in segment files under `data_dir/raft/wal/`. Get one from
    `WriteAheadLog.open`; all its file work runs in `pool`, one batch at a time."""

    log = txaio.make_logger()

    def __init__(self, reactor, pool, raft_dir: str, found: Recovered, *,
                 segment_bytes: int = SEGMENT_BYTES, fsync: Fsync = default_fsync) -> None:
        self._reactor, self._pool = reactor, pool
        self._disk = Disk(raft_dir, fsync)
        self._segments: list[Segment] = found.segments
        self._firsts = [s.first_index for s in self._segments]
        self._first = self._segments[0].first_index if self._segments else 1
        self._hard = found.hard
        self._lock_fd = found.lock_fd
        self._segment_bytes = segment_bytes
        self._pending: dict[int, Entry] = {}  # appended, not yet written by a finished batch
        self._queue = _Batch()
        self._batch_start: int | None = None  # first index queued since the last fsync
        self._busy = False
        self._failed: Failure | None = None
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred] = []
        self.batches = 0  # group commits completed (benchmarks and tests read it)

    @classmethod
    def open(cls, reactor, pool, data_dir: str | os.PathLike, *,
             segment_bytes: int = SEGMENT_BYTES, fsync: Fsync = default_fsync) -> Deferred:
        """Recover the log in `data_dir` (in the pool) and fire with a `WriteAheadLog`, or
        fail with `WALCorrupt`, `WALFormatError` or `WALLocked`."""
        raft_dir = os.path.join(os.fspath(data_dir), "raft")
        d = deferToThreadPool(reactor, pool, recover, raft_dir, fsync)

        def opened(found: Recovered) -> WriteAheadLog:
            for note in found.notes:
                cls.log.warn("write-ahead log: {note}", note=note)
            return cls(reactor, pool, raft_dir, found, segment_bytes=segment_bytes, fsync=fsync)

        return d.addCallback(opened)

    @classmethod
    def open_now(cls, reactor, pool, data_dir: str | os.PathLike, *,
                 segment_bytes: int = SEGMENT_BYTES, fsync: Fsync = default_fsync
                 ) -> "WriteAheadLog":
        """`open`, with the recovery run on the calling thread: for start-up, before the
        reactor serves anything (the log must be whole before the first read is answered)."""
        raft_dir = os.path.join(os.fspath(data_dir), "raft")
        found = recover(raft_dir, fsync)
        for note in found.notes:
            cls.log.warn("write-ahead log: {note}", note=note)
        return cls(reactor, pool, raft_dir, found, segment_bytes=segment_bytes, fsync=fsync)

    # --- reads ---

    @property
    def first_index(self) -> int:
        return self._first

    @property
    def last_index(self) -> int:
        if self._segments:
            return max(self._segments[-1].last_index, self._first - 1)
        return self._first - 1

    @property
    def last_term(self) -> int:
        last = self.last_index
        return self.term_at(last) if last >= self._first else 0

    def term_at(self, index: int) -> int:
        if index == 0:
            return 0
        self._check(index)
        seg = self._segment_for(index)
        return seg.terms[index - seg.first_index]

    def entry(self, index: int) -> Entry:
        self._check(index)
        return self.entries(index, index)[0]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if self._closing:  # the files are being closed in the pool: no pread may race that
            raise self._closed_error()
        hi = min(hi, self.last_index)
        if lo > hi:
            return []
        self._check(lo)
        # Entries not yet written by a finished batch are a suffix of the log, in order.
        in_files_to = min(hi, next(iter(self._pending), hi + 1) - 1)
        budget = ReadBudget(max_bytes)
        out: list[Entry] = []
        index = lo
        while index <= in_files_to:
            seg = self._segment_for(index)
            stop = min(in_files_to, seg.last_index)
            spans = []
            for j in range(index - seg.first_index, stop - seg.first_index + 1):
                a, b = seg.record_span(j)
                if not budget.take(b - a - MIN_RECORD):
                    break
                spans.append((a, b))
            if spans:  # one pread per segment
                base = spans[0][0]
                raw = os.pread(seg.fd, spans[-1][1] - base, base)
                for i, (a, b) in enumerate(spans, index):
                    entry = decode_record(raw[a - base:b - base], seg.path, a)
                    if entry.index != i:
                        raise WALCorrupt(seg.path, a, f"entry {entry.index} where {i} belongs")
                    out.append(entry)
            index += len(spans)
            if index <= stop:
                return out
        while index <= hi and budget.take(len(self._pending[index].data)):
            out.append(self._pending[index])
            index += 1
        return out

    def hard_state(self) -> HardState:
        return self._hard

    def _check(self, index: int) -> None:
        if index < self._first:
            raise LogCompacted(f"entry {index} is compacted (the log starts at {self._first})")
        if index > self.last_index:
            raise EntryNotFound(f"entry {index} is past the end ({self.last_index})")

    def _segment_for(self, index: int) -> Segment:
        return self._segments[bisect.bisect_right(self._firsts, index) - 1]

    # --- writes ---

    def append(self, entries: Iterable[Entry]) -> Deferred:
        """Add `entries`: readable at once; the Deferred fires with the last index once they
        are durable. Raises `InvalidAppend` if they do not continue the log.

        If a `truncate_after` drops them before that, the Deferred still fires once the drop
        is durable too: the log then holds whatever replaced them."""
        if self._closing or self._failed is not None:
            return fail(self._closed_error())
        entries = list(entries)
        empty = self.last_index < self._first
        check_entries(entries, self.last_index, self.last_term, empty)
        if empty:
            segs = self._segments
            if segs and entries[0].index != segs[-1].last_index + 1:
                # Compacted entries still on disk would leave a gap before the new ones.
                self._remove_segments(list(reversed(segs)))
            self._first = entries[0].index
        for entry in entries:
            self._queue_entry(entry)
        d: Deferred = Deferred()
        self._queue.waiters.append((d, entries[-1].index))
        self._queue.written.extend(entries)
        self._kick()
        return d

    def _queue_entry(self, entry: Entry) -> None:
        seg = self._segments[-1] if self._segments else None
        if seg is None or (seg.offsets and seg.size + MIN_RECORD + len(entry.data) >
                           self._segment_bytes):
            if seg is not None:
                self._barrier()
            path = os.path.join(self._disk.wal_dir, segment_name(entry.index))
            seg = Segment(entry.index, path, None, HEADER_SIZE)
            self._segments.append(seg)
            self._firsts.append(seg.first_index)
            self._queue.ops.append(["create", seg])
        if self._batch_start is None:
            self._batch_start = entry.index
        record = encode_record(entry, entry.index - self._batch_start)
        ops = self._queue.ops
        last = ops[-1] if ops else None
        if last and last[0] == "write" and last[1] is seg and last[2] + len(last[3]) == seg.size:
            last[3] += record  # one pwrite per file per batch
        else:
            ops.append(["write", seg, seg.size, bytearray(record)])
        seg.offsets.append(seg.size)
        seg.terms.append(entry.term)
        seg.size += len(record)
        self._pending[entry.index] = entry

    def truncate_after(self, index: int) -> None:
        """Drop every entry after `index` (a suffix that conflicts with the leader's). The
        drop is durable before any later append is acknowledged."""
        self._check_open()
        if index >= self.last_index:
            return
        if index < self._first - 1:
            raise LogCompacted(f"cannot truncate after {index}: the log starts at {self._first}")
        for i in range(index + 1, self.last_index + 1):
            self._pending.pop(i, None)
        self._remove_segments([s for s in reversed(self._segments) if s.first_index > index])
        seg = self._segments[-1] if self._segments else None
        if seg is not None and seg.last_index > index:
            j = index + 1 - seg.first_index
            offset = seg.offsets[j]
            del seg.offsets[j:]
            del seg.terms[j:]
            seg.size = offset
            self._queue.ops.append(["truncate", seg, offset])
            self._barrier()
        self._kick()

    def compact_through(self, index: int) -> None:
        """Forget the entries up to `index` (a snapshot covers them): reads of them fail at
        once, and a segment file is deleted once all its entries are covered, so after a
        restart the log may start a little before `index`."""
        self._check_open()
        if index < self._first:
            return
        for i in range(self._first, min(index, self.last_index) + 1):
            self._pending.pop(i, None)
        self._first = index + 1
        covered = [s for s in self._segments if s.last_index <= index]
        if covered:
            self._remove_segments(covered, barrier=False)  # oldest first: no gap if cut short
            self._kick()

    def save_hard_state(self, term: int, voted_for: str | None) -> Deferred:
        """Record Raft's term and vote (atomically, in their own file); fires once durable."""
        if self._closing or self._failed is not None:
            return fail(self._closed_error())
        self._hard = check_hard_state(self._hard, term, voted_for)
        self._queue.ops.append(["hard_state", encode_hard_state(self._hard)])
        d: Deferred = Deferred()
        self._queue.waiters.append((d, None))
        self._kick()
        return d

    def close(self) -> Deferred:
        """Finish the queued work, close the files and release the lock; fires when done."""
        if self._closed:
            return succeed(None)
        d: Deferred = Deferred()
        self._close_waiters.append(d)
        if not self._closing:
            self._closing = True
            close = ["close", self._segments, self._lock_fd]
            if self._failed is None:
                self._queue.ops.append(close)
                self._kick()
            elif not self._busy:
                self._queue = _Batch(ops=[close])  # a failed log runs nothing else
                self._kick(force=True)
        return d

    def _remove_segments(self, segs: list[Segment], barrier: bool = True) -> None:
        """Drop whole segments in the order given. With `barrier`, the removal is durable
        before anything queued after it is written."""
        for seg in segs:
            self._segments.remove(seg)
            self._queue.ops.append(["remove", seg])
        self._firsts = [s.first_index for s in self._segments]
        if segs and barrier:
            self._barrier()

    def _barrier(self) -> None:
        self._queue.ops.append(["barrier"])
        self._batch_start = None  # what follows is a new write, made durable on its own

    def _check_open(self) -> None:
        if self._closing or self._failed is not None:
            raise self._closed_error()

    def _closed_error(self) -> WALClosed:
        if self._failed is not None:
            return WALClosed("the write-ahead log failed and must be reopened: "
                             f"{self._failed.getErrorMessage()}")
        return WALClosed("the write-ahead log is closed")

    # --- group commit ---

    def _kick(self, force: bool = False) -> None:
        if self._busy or (self._failed is not None and not force) or not self._queue.ops:
            return
        batch, self._queue = self._queue, _Batch()
        self._batch_start = None
        self._busy = True
        d = deferToThreadPool(self._reactor, self._pool, self._disk.run, batch.ops)
        d.addCallbacks(self._done, self._broke, callbackArgs=(batch,), errbackArgs=(batch,))

    def _done(self, _: None, batch: _Batch) -> None:
        self.batches += 1
        for entry in batch.written:
            if self._pending.get(entry.index) is entry:
                del self._pending[entry.index]
        # Still busy while the waiters run: whatever they append joins one next batch.
        for d, value in batch.waiters:
            d.callback(value)
        self._busy = False
        if batch.ops and batch.ops[-1][0] == "close":
            self._finish_close()
        else:
            self._kick()

    def _broke(self, failure: Failure, batch: _Batch) -> None:
        # After a failed write or fsync the file contents are unknown (the kernel may have
        # dropped the dirty pages): accept nothing more; reopening recovers from the disk.
        self._busy = False
        if self._failed is None:
            self._failed = failure
            self.log.failure("write-ahead log: a write or fsync failed; it accepts nothing "
                             "more until it is reopened", failure=failure)
        queued, self._queue = self._queue, _Batch()
        error = self._closed_error()
        for d, _ in batch.waiters + queued.waiters:
            d.errback(error)
        if batch.ops and batch.ops[-1][0] == "close":
            self._finish_close()
        elif self._closing:
            self._queue = _Batch(ops=[["close", self._segments, self._lock_fd]])
            self._kick(force=True)

    def _finish_close(self) -> None:
        self._closed = True
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)
