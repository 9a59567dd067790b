"""`RaftDriver`: runs one `RaftNode` on the Twisted reactor (issue 12).

The node is pure and has no deadline API, so the driver ticks it at a fixed interval (half
the heartbeat interval by default: fine-grained enough for heartbeats and randomized election
timeouts). After every input it drains `ready()` in the order `consensus.outputs` documents:

1. hand each `Persist` to `storage.write`, in order; writes finish asynchronously and the node
   hears `persisted(seq)` only for the finished prefix (acknowledgements are cumulative, so an
   out-of-order completion must not claim an earlier write durable);
2. send the messages (the node already held back any that wait for a write);
3. give committed entries (or a snapshot to restore) to `apply`, in order;
4. answer reads, report leadership changes, and take a snapshot when asked.

Storage is anything with `write(persist) -> Deferred` that applies writes in call order.
`MemoryStorage` is the in-memory one for tests; the WAL-backed one comes with integration.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import txaio
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from agent.raft.records import Entry, HardState

from .consensus import LeaderChange, NotLeader, Persist, RaftNode, ReadState, Snapshot
from .consensus.messages import Message

txaio.use_twisted()


class Storage(Protocol):
    def write(self, persist: Persist) -> Deferred: ...


class Transport(Protocol):
    on_message: Callable[[Message], None] | None

    def send(self, to: str, msg: Message) -> Any: ...


class MemoryStorage:
    """Applies each `Persist` at once and reports it durable on a later reactor turn, so the
    driver sees the asynchronous completion a disk would give."""

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self._pending: list[Deferred] = []

    def write(self, p: Persist) -> Deferred:
        if p.snapshot is not None:
            self.snapshot = p.snapshot
        if p.truncate_from is not None:
            self.entries = [e for e in self.entries if e.index < p.truncate_from]
        if p.compact_through is not None:
            self.entries = [e for e in self.entries if e.index > p.compact_through]
        self.entries.extend(p.entries)
        if p.hard_state is not None:
            self.hard_state = p.hard_state
        d: Deferred = Deferred()
        self._pending.append(d)
        self._reactor.callLater(0, self._complete)
        return d

    def _complete(self) -> None:
        if self._pending:
            self._pending.pop(0).callback(None)


class RaftDriver:
    """Feeds the reactor's time, the transport's messages and the caller's proposals to
    `node`, and carries out what it asks. `start()` begins ticking; `stop()` ends it (any
    write still in flight completes into nothing: the node is not consulted again)."""

    log = txaio.make_logger()

    def __init__(self, reactor: IReactorTime, node: RaftNode, storage: Storage,
                 transport: Transport, *,
                 apply: Callable[[Entry | Snapshot], None] | None = None,
                 take_snapshot: Callable[[int], bytes | Deferred | None] | None = None,
                 tick_interval: float | None = None) -> None:
        self.reactor = reactor
        self.node = node
        self.storage = storage
        self.transport = transport
        self.apply = apply
        # applied index -> the state machine's bytes, a Deferred of them, or None (skip)
        self.take_snapshot = take_snapshot
        self.tick_interval = tick_interval or node.options.heartbeat_interval / 2
        self._leader_listeners: list[Callable[[LeaderChange], None]] = []
        self._read_listeners: list[Callable[[ReadState], None]] = []
        self._call = None
        self._running = False
        self._draining = False
        self._again = False
        self._inflight: list[list] = []  # [seq, done] per write, in issue order
        self._soon = None  # the pending `_drain_later` call
        transport.on_message = self.receive

    # --- listeners ------------------------------------------------------------------------

    def on_leader_change(self, listener: Callable[[LeaderChange], None]) -> None:
        self._leader_listeners.append(listener)

    def on_read(self, listener: Callable[[ReadState], None]) -> None:
        self._read_listeners.append(listener)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._schedule()

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None

    @property
    def running(self) -> bool:
        return self._running

    # --- inputs ---------------------------------------------------------------------------

    def receive(self, msg: Message) -> None:
        if not self._running:
            return
        self.node.receive(self.reactor.seconds(), msg)
        self._drain_soon()

    def propose(self, command: bytes) -> int | NotLeader:
        if not self._running:
            return NotLeader(None, "stopped")
        result = self.node.propose(self.reactor.seconds(), command)
        self._drain_soon()
        return result

    def propose_entry(self, data: bytes, kind: int) -> int | NotLeader:
        """`propose` of an entry of another kind for the state machine."""
        if not self._running:
            return NotLeader(None, "stopped")
        result = self.node.propose(self.reactor.seconds(), data, kind)
        self._drain_soon()
        return result

    def kick(self) -> None:
        """Act on what a direct call on the node (a membership change, a transfer) produced."""
        if self._running:
            self._drain()

    def read_index(self) -> int | NotLeader:
        if not self._running:
            return NotLeader(None, "stopped")
        result = self.node.read_index(self.reactor.seconds())
        # Later, like proposals: the caller registers the token before its answer can come
        # (a lone voter confirms at once), and the reads of one turn share one round.
        self._drain_soon()
        return result

    def _tick(self) -> None:
        self._call = None
        if not self._running:
            return
        self.node.tick(self.reactor.seconds())
        self._drain()
        self._schedule()

    def _schedule(self) -> None:
        if self._running and self._call is None:
            self._call = self.reactor.callLater(self.tick_interval, self._tick)

    # --- outputs --------------------------------------------------------------------------

    def _drain_soon(self) -> None:
        """Drain once the reactor has handed over everything already received: the
        proposals and messages of one turn leave as one write, one fsync and one
        AppendEntries per follower instead of one each."""
        if self._soon is None:
            self._soon = self.reactor.callLater(0, self._drain_later)

    def _drain_later(self) -> None:
        self._soon = None
        self._drain()

    def _drain(self) -> None:
        """Act on `ready()` until it is empty. Re-entrant calls (a storage write that fires
        synchronously, a listener that proposes) only ask the running loop to go again."""
        if self._draining:
            self._again = True
            return
        self._draining = True
        try:
            while self._running:
                self._again = False
                ready = self.node.ready()
                if ready:
                    self._handle(ready)
                elif not self._again:
                    break
        finally:
            self._draining = False

    def _handle(self, ready) -> None:
        for p in ready.persist:
            slot = [p.seq, False]
            self._inflight.append(slot)
            d = self.storage.write(p)
            d.addCallbacks(self._written, self._write_failed, callbackArgs=(slot,))
        for send in ready.messages:
            self.transport.send(send.to, send.message)
        for item in ready.committed:
            if self.apply is not None:
                self.apply(item)
        for read in ready.reads:
            for listener in list(self._read_listeners):
                listener(read)
        for change in ready.leader_changes:
            for listener in list(self._leader_listeners):
                listener(change)
        if ready.snapshot_wanted is not None and self.take_snapshot is not None:
            index = ready.snapshot_wanted
            data = self.take_snapshot(index)
            if isinstance(data, Deferred):  # encoded over several reactor turns
                data.addCallback(self.snapshot_encoded, index)
                data.addErrback(lambda f: self.log.failure(
                    "taking a Raft snapshot at {index} failed", f, index=index))
            elif data is not None:  # None: one is being taken already
                self.node.snapshot_taken(self.reactor.seconds(), index, data)

    def snapshot_encoded(self, data: bytes | None, index: int) -> None:
        """The state machine's bytes as of applied `index`: the node keeps them as its
        snapshot and compacts its log behind them."""
        if data is not None and self._running:
            self.node.snapshot_taken(self.reactor.seconds(), index, data)
            self._drain()

    def _written(self, _: Any, slot: list) -> None:
        slot[1] = True
        seq = None
        while self._inflight and self._inflight[0][1]:
            seq = self._inflight.pop(0)[0]
        if seq is not None and self._running:
            self.node.persisted(self.reactor.seconds(), seq)
            self._drain()

    def _write_failed(self, failure: Failure) -> None:
        # A write that may or may not be on disk: the node cannot go on safely (its
        # promises to peers depend on it), so this server stops taking part.
        self.log.failure("Raft storage write failed; stopping this server's Raft",
                         failure=failure)
        self.stop()
