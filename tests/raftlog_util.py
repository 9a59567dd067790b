"""In-process `RaftLog` servers for tests: each with its own data dir (WAL, snapshots,
`DiskStorage`), its own StateStore and FSM, and a `RaftTransport` on 127.0.0.1:0, all on the
real reactor with one real thread pool for the file work.

Every wait polls a condition against a deadline (`wait_for`); nothing sleeps and hopes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from agent.fsm.apply import FSM
from agent.fsm.commands import KVOperation
from agent.raft.consensus import Options
from agent.raft.net import RaftTransport
from agent.raft.records import NOOP
from agent.raft.replicated import RaftLog
from agent.raft.snapshots import SnapshotStore
from agent.raft.storage import DiskStorage
from agent.raft.wal import WriteAheadLog
from agent.state.store import StateStore
from agent.structs import KVEntry

DEADLINE = 15.0
FAST = Options(election_timeout=0.3, heartbeat_interval=0.05)


def no_fsync(fd: int) -> None:
    """These tests stop servers, never the machine: the file layout is what they check."""


def put(key: str, value: bytes = b"v") -> KVOperation:
    return KVOperation("set", KVEntry(key, value))


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE):
    end = reactor.seconds() + timeout
    while True:
        value = condition()
        if value:
            return value
        if reactor.seconds() > end:
            raise AssertionError(f"timed out waiting for {what}")
        yield sleep(0.02)


def outcome(d: Deferred) -> list:
    """The Deferred's result (or Failure) once it fires, in a list; consumes its errors."""
    out: list = []

    def keep(result: Any) -> None:
        out.append(result)
    d.addBoth(keep)
    return out


class GatedTransport:
    """A `RaftTransport` that a test can cut off (`cut = True`): nothing is sent or delivered
    until it is reconnected, as if the network between this server and the rest failed."""

    def __init__(self, inner: RaftTransport) -> None:
        self.inner = inner
        self.cut = False
        self.on_message = None
        inner.on_message = self._deliver

    def _deliver(self, msg) -> None:
        if not self.cut and self.on_message is not None:
            self.on_message(msg)

    def send(self, to: str, msg) -> bool:
        return False if self.cut else self.inner.send(to, msg)

    def set_peer(self, server_id: str, address) -> None:
        self.inner.set_peer(server_id, address)

    def stop(self) -> Deferred:
        return self.inner.stop()


class RecordingFSM(FSM):
    """An FSM that notes each whole-state restore (a snapshot installed or recovered)."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, clock=reactor.seconds)
        self.restores: list[int] = []

    def restore(self, image) -> None:
        self.restores.append(image.index)
        super().restore(image)


class Member:
    """One server: `open()` builds it from its data dir (recovering what is there)."""

    def __init__(self, sid: str, data_dir: Path, pool, options: Options, seed: int) -> None:
        self.sid = sid
        self.data_dir = data_dir
        self.pool = pool
        self.options = options
        self.seed = seed
        self.log: RaftLog | None = None
        self.store: StateStore | None = None
        self.fsm: RecordingFSM | None = None
        self.storage: DiskStorage | None = None
        self.wal: WriteAheadLog | None = None
        self.snapshots: SnapshotStore | None = None
        self.transport: GatedTransport | None = None
        self.heard: list[bool] = []
        self.listener_errors: list[str] = []
        self.address = ""
        self.running = False

    @property
    def raft_dir(self) -> Path:
        return self.data_dir / "raft"

    def open(self, peers_json: str | None = None) -> Member:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = StateStore()
        self.fsm = RecordingFSM(self.store)
        inner = RaftTransport(reactor, {}, retry_interval=0.05)
        port = inner.listen(0).getHost().port
        self.transport = GatedTransport(inner)
        self.address = f"127.0.0.1:{port}"
        self.wal = WriteAheadLog.open_now(reactor, self.pool, self.data_dir, fsync=no_fsync)
        self.snapshots = SnapshotStore.prepare_now(reactor, self.pool, self.data_dir,
                                                   fsync=no_fsync, turn_bytes=4096)

        def storage(wal, snaps) -> DiskStorage:
            self.storage = DiskStorage(wal, snaps)
            return self.storage
        self.log = RaftLog(reactor, self.fsm, self.transport, server_id=self.sid,
                           address=self.address, options=self.options,
                           rng=random.Random(self.seed), storage_factory=storage,
                           address_book=str(self.raft_dir / "servers.json"))
        self.heard = []
        self.log.add_leadership_listener(self._leadership)
        self.log.recover(self.wal, self.snapshots, peers_json=peers_json)
        return self

    def _leadership(self, leading: bool) -> None:
        """Notes what it heard, and whether True came too early (before this term's no-op
        was applied here, or while not leading)."""
        self.heard.append(leading)
        log = self.log
        if not leading:
            return
        node = log.node
        if not log.is_leader or node.leader is None:
            self.listener_errors.append("heard True while not leading")
            return
        first = node.leader.first_index
        if log.applied_index < first:
            self.listener_errors.append(
                f"heard True at applied {log.applied_index} before the no-op at {first}")
        elif (first > node.log.offset and node.log.entry(first).kind != NOOP) or \
                node.log.term_at(first) != node.term:
            self.listener_errors.append(f"entry {first} is not this term's no-op")

    def start(self) -> None:
        self.log.start()
        self.running = True

    @inlineCallbacks
    def stop(self):
        if self.log is not None:
            self.running = False
            log, self.log = self.log, None
            yield log.stop()

    # --- reading the state ---------------------------------------------------------------

    def keys(self) -> dict[str, bytes]:
        return {e.key: e.value for e in self.store.kv.list("")[1]}

    @property
    def leads(self) -> bool:
        return self.log is not None and self.log.is_ready_leader


class Cluster:
    """Members sharing one thread pool; `Cluster.stop_all()` stops whatever still runs."""

    def __init__(self, root: Path, pool, options: Options = FAST) -> None:
        self.root = root
        self.pool = pool
        self.options = options
        self.members: dict[str, Member] = {}

    def member(self, sid: str, seed: int | None = None) -> Member:
        if sid not in self.members:
            self.members[sid] = Member(sid, self.root / sid, self.pool, self.options,
                                       seed if seed is not None else len(self.members))
        return self.members[sid]

    def running(self) -> list[Member]:
        return [m for m in self.members.values() if m.log is not None and m.running]

    def connect(self) -> None:
        """Tell every running server where the others are (what gossip does)."""
        for m in self.running():
            for other in self.running():
                if other is not m:
                    m.log.set_address(other.sid, other.address)

    def form(self, sids: list[str]) -> list[Member]:
        """Fresh servers `sids`, each bootstrapped with all of them, started."""
        members = [self.member(s).open() for s in sids]
        servers = {m.sid: m.address for m in members}
        for m in members:
            assert m.log.bootstrap(servers) is True
        for m in members:
            m.start()
        self.connect()
        return members

    def leaders(self, among: list[Member] | None = None) -> list[Member]:
        return [m for m in (among if among is not None else self.running()) if m.leads]

    @inlineCallbacks
    def leader(self, among: list[Member] | None = None):
        """Waits until exactly one of `among` leads and has applied its term's no-op, and
        every other running one knows it; returns it."""
        def one():
            group = among if among is not None else self.running()
            found = self.leaders(group)
            if len(found) != 1:
                return None
            lead = found[0]
            return lead if all(m.log.leader_id == lead.sid for m in group) else None
        return (yield wait_for(one, "one leader known to all"))

    @inlineCallbacks
    def stop_all(self):
        for m in list(self.members.values()):
            if m.log is not None:
                yield m.stop()


@inlineCallbacks
def write_keys(leader: Member, keys: list[str], value: bytes = b"v"):
    """Apply one KV set per key on `leader`, all in flight at once; returns the results."""
    ds = [leader.log.apply(put(k, value)) for k in keys]
    results = []
    for d in ds:
        results.append((yield d))
    return results


def failure_type(out: list) -> type | None:
    return type(out[0].value) if out and isinstance(out[0], Failure) else None


def failures(events) -> list[str]:
    return [f"{ev.get('log_format')}: {ev['log_failure'].getErrorMessage()}"
            for ev in events if "log_failure" in ev]


def balanced(heard: list[bool]) -> bool:
    """A server that is not leading heard True and False in turn, ending on False."""
    return heard == [x for pair in zip([True] * len(heard), [False] * len(heard))
                     for x in pair][:len(heard)] and len(heard) % 2 == 0


def keys_of(names, value=b"v"):
    return {k: value for k in names}


@inlineCallbacks
def written_then_stopped(cluster: Cluster, sids: list[str], names: list[str]):
    """A cluster of `sids` that applied a write of each key in `names` everywhere, then
    stopped (a restart test's starting point); returns its members and the last index."""
    members = cluster.form(sids)
    lead = yield cluster.leader()
    results = yield write_keys(lead, names)
    last = max(r.index for r in results)
    yield wait_for(lambda: all(m.log.applied_index >= last for m in members), "replication")
    for m in members:
        yield m.stop()
    return members, last
