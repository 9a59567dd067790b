"""`DiskStorage`: carries out a `RaftNode`'s durable writes (`Persist`) on the write-ahead log
and the snapshot store of `data_dir/raft/`, for the `RaftDriver`.

Each write completes (its Deferred fires) once everything in it is durable. Writes are carried
out in call order. The WAL queues its own operations in order, so plain writes go straight to
it; a write carrying a snapshot holds back every later write until the snapshot file is
durable, because the log may only be compacted (and an installed snapshot's successors
appended) once the snapshot covering the compacted entries survives a crash.

A snapshot write's order on disk: a conflicting suffix is truncated first (those entries were
never committed, dropping them early is always safe), then the snapshot file is made durable,
then the log is compacted behind it and the write's entries and hard state follow.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import txaio
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.python.failure import Failure

from agent.raft.consensus import Persist
from agent.raft.log import LogStore
from agent.raft.records import LogError
from agent.raft.snapshots import SnapshotStore

txaio.use_twisted()


class DiskStorage:
    log = txaio.make_logger()

    def __init__(self, wal: LogStore, snapshots: SnapshotStore | None) -> None:
        self.wal = wal
        self.snapshots = snapshots
        self._queue: deque[tuple[Persist, Deferred]] = deque()
        self._saving = False
        self.snapshots_saved = 0

    def write(self, p: Persist) -> Deferred:
        if not self._queue and p.snapshot is None:
            return self._write_now(p)
        d: Deferred = Deferred()
        self._queue.append((p, d))
        self._pump()
        return d

    def _write_now(self, p: Persist) -> Deferred:
        wal = self.wal
        try:
            if p.truncate_from is not None:
                wal.truncate_after(p.truncate_from - 1)
            if p.compact_through is not None:
                wal.compact_through(p.compact_through)
            waits = []
            if p.entries:
                waits.append(wal.append(p.entries))
            if p.hard_state is not None:
                waits.append(wal.save_hard_state(p.hard_state.term, p.hard_state.voted_for))
        except LogError:
            return fail()
        if not waits:
            return succeed(None)
        if len(waits) == 1:
            return waits[0]
        return DeferredList(waits, fireOnOneErrback=True, consumeErrors=True).addErrback(
            lambda f: f.value.subFailure)

    def _pump(self) -> None:
        while self._queue and not self._saving:
            p, d = self._queue[0]
            if p.snapshot is None:
                self._queue.popleft()
                self._write_now(p).chainDeferred(d)
                continue
            self._saving = True
            snap = p.snapshot
            try:
                if p.truncate_from is not None:
                    self.wal.truncate_after(p.truncate_from - 1)
            except LogError:
                self._fail_all(Failure())
                return
            if self.snapshots is None:
                saved = succeed(None)
            else:
                saved = self.snapshots.save(snap.index, snap.term, [snap.data])
            saved.addCallbacks(self._saved, self._fail_all)
            return

    def _saved(self, _meta) -> None:
        p, d = self._queue.popleft()
        self._saving = False
        self.snapshots_saved += 1
        self._write_now(replace(p, snapshot=None, truncate_from=None)).chainDeferred(d)
        self._pump()

    def _fail_all(self, failure: Failure) -> None:
        # A snapshot that may not be durable: nothing after it may claim to be either.
        self._saving = False
        queued, self._queue = self._queue, deque()
        for _, d in queued:
            d.errback(failure)
