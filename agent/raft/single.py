"""The one-member `ReplicatedLog`: a `-dev` or `-bootstrap` server's log, on a `LogStore` (the
durable `WriteAheadLog`, or `MemoryLog` for `-dev`) and, when durable, a `SnapshotStore`.

Commands take the path Raft gives them: encoded by the command table into an entry, appended to
the log store, applied by the FSM once the store says the entry is durable (with one member,
durable is committed), in index order, and only then answered. With `MemoryLog` all of that
happens before `apply` returns; with the WAL the answer comes after the group commit's fsync,
and concurrent commands share it.

Leadership: `start()` wins the one-member election at once, so commands are accepted from then
on; the leadership listeners hear True once everything in the log is applied (the leader duties
start then) and False on `stop()`. `recover()` (start-up, before anything is served) restores
the newest snapshot through the FSM and applies the log after it. Snapshots are taken in the
background once `snapshot_threshold` entries were applied since the last one (checked after
each apply and every `snapshot_interval`), encoded a chunk at a time between reactor turns from
an immutable image of the state, and the log is compacted behind them.
"""

from __future__ import annotations

import io
import json
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.python.failure import Failure

from agent.errors import NoLeader, UnknownCommand
from agent.fsm.apply import FSM
from agent.fsm.table import encode_command
from agent.raft.interface import notify
from agent.raft.log import LogStore, MemoryLog
from agent.raft.records import COMMAND, CONFIGURATION, RESTORE, Entry, LogError
from agent.raft.snapshots import SnapshotStore
from agent.rpc.options import WriteResult
from agent.state.snapshot import (Capture, StoreImage, encode_capture, encode_chunks,
                                  read_image, restore_entry)

txaio.use_twisted()

SNAPSHOT_THRESHOLD = 8192  # raft_snapshot_threshold (hashicorp/raft's default)
SNAPSHOT_INTERVAL = 30.0  # raft_snapshot_interval (Consul's check interval)
REPLAY_BATCH_BYTES = 8 * 1024 * 1024
MEMORY_RETAIN = 4096  # applied entries an in-memory log without snapshots keeps


class RecoveryError(LogError):
    """The log and snapshots on disk cannot be brought back; the message says why."""


class SnapshotStopped(Exception):
    """A snapshot in progress when the log stopped (it is dropped, never half-written)."""


class SingleServerLog:
    """Always the leader, of itself. See the module docstring."""

    log = txaio.make_logger()

    def __init__(self, reactor, fsm: FSM, *, address: str = "", server_id: str = "",
                 log_store: LogStore | None = None, snapshots: SnapshotStore | None = None,
                 snapshot_threshold: int = SNAPSHOT_THRESHOLD,
                 snapshot_interval: float = SNAPSHOT_INTERVAL, trailing_logs: int = 0,
                 configuration: dict | None = None,
                 retain_entries: int | None = MEMORY_RETAIN) -> None:
        """`configuration` is the cluster's membership when known without a log entry (test
        cores); otherwise `start()` writes it as a fresh log's first entry, as Raft does.
        Without a snapshot store nothing outlives the process, so applied entries beyond the
        last `retain_entries` are dropped (None keeps them all)."""
        self._reactor = reactor
        self._fsm = fsm
        self._store: LogStore = log_store if log_store is not None else MemoryLog()
        self._snapshots = snapshots
        self._address = address
        self._server_id = server_id or address
        self._threshold = max(1, snapshot_threshold)
        self._interval = snapshot_interval
        self._trailing = max(0, trailing_logs)
        self._term = max(1, self._store.hard_state().term, self._store.last_term)
        self.last_index = self._store.last_index  # the last entry appended
        self._commit = self.last_index  # durable (with one member: committed)
        self._applied = 0
        self._applied_term = 0
        self._applying = False
        self._pending: dict[int, tuple[Entry, Deferred | None]] = {}
        self._leader = False  # accepting commands
        self._ready = False  # listeners were told: everything before our term is applied
        self._ready_at = 0
        self._listeners: list[Callable[[bool], None]] = []
        self.configuration: dict | None = configuration  # the last configuration's servers
        self.snapshot_index = self.snapshot_term = 0
        self._snapshotting: Deferred | None = None
        self._capture: Capture | None = None
        self._snapshot_timer = None
        self._stopped = False
        self.snapshots_taken = 0
        self._retain = retain_entries
        self._recovered = False

    # --- ReplicatedLog ----------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def leader_address(self) -> str:
        return self._address if self._leader else ""

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def term(self) -> int:
        return self._term

    def last_contact(self) -> float:
        return 0.0

    def verify_leader(self) -> Deferred:
        return succeed(True) if self._leader else fail(NoLeader())

    def add_leadership_listener(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def remove_leadership_listener(self, listener: Callable[[bool], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def apply(self, command: Any) -> Deferred:
        """Commit `command`; fires with a WriteResult once it is durable and applied, or fails
        with the command's error (`NoLeader` when not leading, the log's error if it broke)."""
        if not self._leader:
            return fail(NoLeader())
        try:
            data = encode_command(command)
        except Exception:  # noqa: BLE001 - the caller gets it as a failed Deferred
            return fail()
        waiter: Deferred = Deferred()
        self._append(COMMAND, data, waiter)
        return waiter

    def apply_restore(self, state: bytes) -> Deferred:
        """Replace the state with `state` (a snapshot body) through the log."""
        if not self._leader:
            return fail(NoLeader())
        try:
            read_image(io.BytesIO(state), "the snapshot to restore")
        except Exception:  # noqa: BLE001 - SnapshotError names the problem
            return fail()
        waiter: Deferred = Deferred()
        self._append(RESTORE, state, waiter)
        return waiter

    def capture_state(self) -> Deferred:
        """The state as of now, as a snapshot body (an operator's snapshot)."""
        image = self._fsm.capture()
        return succeed(b"".join(encode_chunks(image, {"configuration": self.configuration})))

    # --- lifecycle --------------------------------------------------------------------------

    def recover(self, log_store: LogStore | None = None, snapshots: SnapshotStore | None = None,
                legacy: StoreImage | None = None) -> None:
        """Bring the state back: from `log_store` and `snapshots` when given (opened by the
        caller; they replace the in-memory log), the newest snapshot (else `legacy`, the state
        file of a version before the log) restored through the FSM, then every entry after it
        applied. Runs on the calling thread, before anything is served; raises
        `RecoveryError` (or the log's and the snapshot store's errors) when the disk cannot
        be trusted."""
        if log_store is not None:
            self._store = log_store
            self._term = max(1, log_store.hard_state().term, log_store.last_term)
        if snapshots is not None:
            self._snapshots = snapshots
        base_index = base_term = 0
        meta = self._snapshots.latest_now() if self._snapshots is not None else None
        if meta is not None:
            with self._snapshots.open(meta) as f:
                image, header = read_image(f, meta.path)
            self._fsm.restore(image)
            base_index, base_term = meta.index, meta.term
            self.configuration = header.get("configuration")
            self.snapshot_index, self.snapshot_term = meta.index, meta.term
            self.log.info("restored the snapshot of index {index} ({path})", index=meta.index,
                          path=meta.path)
        elif legacy is not None:
            self._fsm.restore(legacy)
            base_index = legacy.index
        store = self._store
        if meta is None and legacy is None and store.last_index < store.first_index:
            # Nothing on disk: a state the FSM already holds (a test core's) is the base.
            base_index = self._fsm.store.index
        self._applied, self._applied_term = base_index, base_term
        if store.last_index >= store.first_index:  # the log holds entries
            if store.first_index > base_index + 1:
                raise RecoveryError(
                    f"the write-ahead log starts at entry {store.first_index} but the state "
                    f"before it ends at index {base_index}: entries are missing (a newer "
                    "snapshot damaged or removed?)")
            if store.last_index <= base_index:
                store.compact_through(base_index)  # all behind the snapshot
            else:
                self._replay(base_index + 1, store.last_index)
        self.last_index = self._commit = max(store.last_index, base_index)
        self._term = max(self._term, base_term)
        self._recovered = True

    def _replay(self, lo: int, hi: int) -> None:
        index = lo
        while index <= hi:
            batch = self._store.entries(index, hi, max_bytes=REPLAY_BATCH_BYTES)
            for entry in batch:
                try:
                    self._apply_entry(entry)
                except UnknownCommand as exc:
                    raise RecoveryError(f"write-ahead log entry {entry.index}: {exc}") from None
            index += len(batch)
        self.log.info("applied {n} log entries after index {base}", n=hi - lo + 1, base=lo - 1)

    def start(self) -> None:
        """Win the one-member election: commands are accepted from now on; the leadership
        listeners hear True once the log is applied to its end (at once, unless a fresh log's
        first entry, the configuration, is still being made durable)."""
        if self._leader:
            return
        if not self._recovered:
            self.recover()
        self._stopped = False
        self._leader = True
        if self.configuration is None:
            # Raft's bootstrap: a fresh log's first entry names its members; the FSM never sees
            # it, so the first command commits at index 2 (as in Consul, whose clients wait for
            # an index past 1).
            servers = {"servers": [{"id": self._server_id, "address": self._address,
                                    "suffrage": "voter"}]}
            self._append(CONFIGURATION, json.dumps(servers, separators=(",", ":")).encode(), None)
        self._ready_at = self.last_index
        self._check_ready()
        if self._snapshots is not None and self._interval > 0:
            self._snapshot_timer = self._reactor.callLater(self._interval, self._snapshot_tick)

    def stop(self) -> Deferred:
        """Step down (listeners hear False), drop a snapshot in progress, and close the log
        store once what was appended is durable; fires when it is closed."""
        self._stopped = True
        self._leader = False
        if self._snapshot_timer is not None and self._snapshot_timer.active():
            self._snapshot_timer.cancel()
        self._snapshot_timer = None
        if self._ready:
            self._ready = False
            self._tell(False)
        return self._store.close()

    # --- the write path ---------------------------------------------------------------------

    def _append(self, kind: int, data: bytes, waiter: Deferred | None) -> None:
        entry = Entry(self.last_index + 1, self._term, kind, data)
        try:
            durable = self._store.append([entry])
        except Exception:  # noqa: BLE001 - a closed or broken log
            if waiter is not None:
                waiter.errback()
            return
        self.last_index = entry.index
        self._pending[entry.index] = (entry, waiter)
        durable.addCallbacks(self._durable, self._append_failed)

    def _durable(self, last: int) -> None:
        if last > self._commit:
            self._commit = last
        if self._applying:  # a command applied below appended another: the loop takes it
            return
        self._applying = True
        try:
            while self._applied < self._commit and self._applied + 1 in self._pending:
                entry, waiter = self._pending.pop(self._applied + 1)
                try:
                    result = self._apply_entry(entry)
                except Exception as exc:  # noqa: BLE001 - an entry this server cannot apply
                    self.log.failure("log entry {index} could not be applied", index=entry.index)
                    result = exc
                if waiter is not None:
                    if isinstance(result, BaseException):
                        waiter.errback(result)
                    else:
                        waiter.callback(WriteResult(entry.index, result))
        finally:
            self._applying = False
        self._check_ready()
        if self._snapshots is None:
            self._drop_applied()
        else:
            self._maybe_snapshot()

    def _drop_applied(self) -> None:
        # In batches: dropping from the front of the in-memory log is a copy of what stays.
        if self._retain is not None and \
                self._applied - self._store.first_index >= 2 * self._retain:
            self._store.compact_through(self._applied - self._retain)

    def _apply_entry(self, entry: Entry) -> Any:
        if self._capture is not None:
            if not self._capture.done:
                self._capture.finish()  # the store is about to change
            self._capture = None
        result = None
        if entry.kind == COMMAND:
            result = self._fsm.apply_entry(entry.index, entry.data)
        elif entry.kind == CONFIGURATION:
            self.configuration = json.loads(entry.data)
        elif entry.kind == RESTORE:
            restore_entry(self._fsm, entry)
        self._applied, self._applied_term = entry.index, entry.term
        return result

    def _append_failed(self, failure) -> None:
        # The log store broke (a failed write or fsync): nothing appended is known durable.
        # Step down: no command may be acknowledged any more; reads go on from the state.
        pending, self._pending = self._pending, {}
        if self._leader:
            self.log.failure("the log failed; this server stops accepting writes", failure)
            self._leader = False
            if self._ready:
                self._ready = False
                self._tell(False)
        for _, waiter in pending.values():
            if waiter is not None and not waiter.called:
                waiter.errback(failure)
        self.last_index = self._commit = self._applied

    def _check_ready(self) -> None:
        if self._leader and not self._ready and self._applied >= self._ready_at:
            self._ready = True
            self._tell(True)

    def _tell(self, leading: bool) -> None:
        notify(self._listeners, leading, self.log, "leadership")

    # --- snapshots --------------------------------------------------------------------------

    def _snapshot_tick(self) -> None:
        self._snapshot_timer = None
        if self._stopped:
            return
        self._maybe_snapshot()
        self._snapshot_timer = self._reactor.callLater(self._interval, self._snapshot_tick)

    def _maybe_snapshot(self) -> None:
        if (self._snapshots is not None and self._snapshotting is None and not self._stopped
                and self._applied - self.snapshot_index >= self._threshold):
            self.take_snapshot().addErrback(lambda _: None)  # logged; the next check retries

    def take_snapshot(self) -> Deferred:
        """Snapshot the state at the applied index in the background; fires with the
        snapshot's meta once it is durable and the log compacted behind it."""
        if self._snapshots is None:
            return fail(RuntimeError("this log keeps no snapshots"))
        if self._snapshotting is not None:
            return fail(RuntimeError("a snapshot is already being taken"))
        index, term = self._applied, self._applied_term
        # The image is taken in slices between turns; the next entry applied completes it
        # first (see _apply_entry), so it is the state at `index` exactly.
        self._capture = self._fsm.begin_capture()
        chunks = self._until_stopped(encode_capture(self._capture,
                                                    {"configuration": self.configuration}))
        d = maybeDeferred(self._snapshots.save, index, term, chunks)
        self._snapshotting = d
        return d.addBoth(self._snapshot_done, index)

    def _until_stopped(self, chunks):
        for chunk in chunks:
            if self._stopped:
                raise SnapshotStopped()
            yield chunk

    def _snapshot_done(self, result, index: int):
        self._snapshotting = None
        if isinstance(result, Failure):
            if not result.check(SnapshotStopped):
                self.log.failure("taking a snapshot at index {index} failed; the next check "
                                 "retries", result, index=index)
            return result
        self.snapshot_index, self.snapshot_term = index, result.term
        self.snapshots_taken += 1
        through = index - self._trailing
        if through > 0 and not self._stopped:
            try:
                self._store.compact_through(through)
            except LogError as exc:
                self.log.error("compacting the log through {index} failed: {exc}",
                               index=through, exc=exc)
        self.log.info("snapshot at index {index} saved ({size} bytes); log compacted",
                      index=index, size=result.size)
        return result
