"""`RaftLog`: the core's `ReplicatedLog` across servers — a `RaftNode` on the reactor
(`RaftDriver`), its writes on the WAL and snapshot store (`DiskStorage`), its messages on the
server port (`RaftTransport`), committed entries applied to the FSM.

What the rest of the server sees:
- `apply(command)` proposes on the leader and fires with a `WriteResult` once the entry is
  committed and applied here; it fails with `NoLeader` on a follower (the endpoints forward
  before that) and with `LeadershipLost` when leadership ends first (the write may or may not
  commit later, as in Consul).
- Leadership listeners hear True once this server leads *and* applied its no-op of the term,
  which commits everything earlier: a new leader never serves a state missing a write
  acknowledged before it was elected. They hear False as soon as it stops leading.
- `verify_leader()` is Raft's read index: a quorum confirms this server still leads after the
  read began, then the read waits until that commit index is applied here.
- Servers are known by their node ID; their server-port addresses come from gossip
  (`set_address`) and, for a restart before gossip has spoken, from the last snapshot and the
  address book kept beside the log.

Recovery: the newest snapshot is restored into the FSM and the log after it handed to the
node; those entries are applied only once a leader's commit index covers them. A log written by
a one-member log of an older Waypost (configuration entries in JSON) is read as well.
"""

from __future__ import annotations

import io
import os
import random
from typing import Any, Callable, Iterator

import txaio
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.python.failure import Failure

from agent.errors import NoLeader, UnknownCommand, WaypostError
from agent.fsm.apply import FSM
from agent.fsm.table import encode_command
from agent.raft.consensus import (ChangeKind, Configuration, InvalidChange, LeaderChange,
                                  NotLeader, Options, RaftNode, ReadState, Role, Snapshot)
from agent.raft.driver import RaftDriver
from agent.raft.interface import notify
from agent.raft.log import LogStore
from agent.raft.records import COMMAND, CONFIGURATION, RESTORE, Entry, HardState
from agent.raft.address_book import AddressBook
from agent.raft.recovery import (configuration_doc, configuration_from_header, entries_after,
                                 read_peers_json)
from agent.raft.snapshots import SnapshotStore
from agent.rpc.options import WriteResult
from agent.state.snapshot import Capture, encode_capture, read_image, restore_entry

txaio.use_twisted()

SNAPSHOT_TURN_CHUNKS = 8  # encoded chunks per reactor turn while taking a snapshot


class LeadershipLost(WaypostError):
    """This server stopped leading before the write committed (it may still commit)."""

    def __init__(self) -> None:
        super().__init__("leadership lost while committing log")


class RaftLog:
    """See the module docstring. Build it, `recover(...)`, then `start()`."""

    log = txaio.make_logger()

    def __init__(self, reactor, fsm: FSM, transport, *, server_id: str, address: str,
                 options: Options, rng: random.Random | None = None,
                 storage_factory: Callable[[LogStore, SnapshotStore | None], Any] | None = None,
                 address_book: str | None = None, snapshot_interval: float = 0.0) -> None:
        """`snapshot_interval` (Consul's raft_snapshot_interval): snapshots are taken at most
        that often, when a check every interval finds `options.snapshot_threshold` entries
        applied since the last one; 0 takes one as soon as the threshold is crossed."""
        self._reactor = reactor
        self._fsm = fsm
        self._transport = transport
        self.server_id = server_id
        self.address = address
        self.options = options
        self._rng = rng or random.SystemRandom()
        self._storage_factory = storage_factory
        self.book = AddressBook(server_id, address, address_book, transport.set_peer)
        self.node: RaftNode | None = None
        self.driver: RaftDriver | None = None
        self._wal: LogStore | None = None
        self._snapshots: SnapshotStore | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self._config_listeners: list[Callable[[], None]] = []
        self._pending: dict[int, tuple[int, Deferred | None]] = {}
        self._reads: dict[int, Deferred] = {}
        self._applied_waits: list[tuple[int, Deferred]] = []
        self._ready = False
        self._ready_at: int | None = None
        self._applied = 0
        self._applied_term = 0
        self._captures: list[Capture] = []  # state images being taken (snapshots)
        self._halted = False
        self._snapshotting = False
        self._started_at = reactor.seconds()
        self._stopped = False
        self._snapshot_interval = snapshot_interval
        self._snapshot_timer = None
        self._recovered_peers: str | None = None  # peers.json consumed at recovery
        self._pending_recovery_entry: Entry | None = None
        self._known_listeners: list[Callable[[bool], None]] = []
        self._leader_known = True  # as the facade starts: frontends serve until told otherwise

    # --- ReplicatedLog ------------------------------------------------------------------------

    @property
    def addresses(self) -> dict[str, str]:
        """Server ID -> its server port's "host:port" (the address book's)."""
        return self.book.addresses

    @property
    def names(self) -> dict[str, str]:
        return self.book.names

    @property
    def serf_addresses(self) -> list[str]:
        return self.book.serf_addresses

    @property
    def is_leader(self) -> bool:
        return (self.node is not None and self.node.role is Role.LEADER
                and not self._stopped and not self._halted)

    @property
    def is_ready_leader(self) -> bool:
        """Leading, with everything committed before this term applied."""
        return self.is_leader and self._ready

    @property
    def leader_id(self) -> str | None:
        return None if self.node is None or self._stopped else self.node.leader_id

    @property
    def leader_address(self) -> str:
        leader = self.leader_id
        return self.addresses.get(leader, "") if leader else ""

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def term(self) -> int:
        return self.node.term if self.node is not None else 0

    @property
    def last_index(self) -> int:
        return self.node.log.last_index if self.node is not None else 0

    @property
    def commit_index(self) -> int:
        return self.node.commit_index if self.node is not None else 0

    @property
    def snapshot_index(self) -> int:
        snap = self.node.snapshot if self.node is not None else None
        return snap.index if snap else 0

    @property
    def snapshot_term(self) -> int:
        snap = self.node.snapshot if self.node is not None else None
        return snap.term if snap else 0

    @property
    def configuration(self) -> Configuration:
        return self.node.config if self.node is not None else Configuration()

    @property
    def configuration_index(self) -> int:
        return self.node.config_index if self.node is not None else 0

    @property
    def bootstrapped(self) -> bool:
        """True once this server has a configuration (its own, or from a leader)."""
        node = self.node
        return node is not None and (bool(node.config.servers) or node.log.last_index > 0
                                     or node.term > 0)

    def last_contact(self) -> float:
        node = self.node
        if node is None or self.is_leader:
            return 0.0
        contact = node.leader_contact
        now = self._reactor.seconds()
        if contact == float("-inf"):
            return now - self._started_at
        return max(0.0, now - contact)

    def add_leadership_listener(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def remove_leadership_listener(self, listener: Callable[[bool], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_configuration_listener(self, listener: Callable[[None], None]) -> None:
        """Called after a configuration entry is applied (autopilot re-examines the servers)."""
        self._config_listeners.append(listener)

    def apply(self, command: Any) -> Deferred:
        try:
            data = encode_command(command)
        except Exception:  # noqa: BLE001 - the caller gets it as a failed Deferred
            return fail()
        return self._propose(data, COMMAND)

    def apply_restore(self, state: bytes) -> Deferred:
        """Replace every server's state with `state` (a snapshot body), through the log."""
        try:
            read_image(io.BytesIO(state), "the snapshot to restore")
        except Exception:  # noqa: BLE001 - SnapshotError names the problem
            return fail()
        return self._propose(state, RESTORE)

    def _propose(self, data: bytes, kind: int) -> Deferred:
        if self.driver is None or not self.is_leader:
            return fail(NoLeader())
        result = self.driver.propose_entry(data, kind)
        if isinstance(result, NotLeader):
            return fail(NoLeader())
        waiter: Deferred = Deferred()
        self._pending[result] = (self.node.term, waiter)
        return waiter

    def verify_leader(self) -> Deferred:
        if self.driver is None or not self.is_leader:
            return fail(NoLeader())
        token = self.driver.read_index()
        if isinstance(token, NotLeader):
            return fail(NoLeader())
        d: Deferred = Deferred()
        self._reads[token] = d
        return d

    def wait_applied(self, index: int) -> Deferred:
        """Fires once this server applied through `index`."""
        if self._applied >= index:
            return succeed(self._applied)
        d: Deferred = Deferred()
        self._applied_waits.append((index, d))
        return d

    # --- membership and leadership --------------------------------------------------------------

    def change(self, kind: ChangeKind, server_id: str) -> Deferred:
        """Propose one membership change; fires once it is applied here (committed)."""
        if self.driver is None or not self.is_leader:
            return fail(NoLeader())
        try:
            result = self.node.change_membership(self._reactor.seconds(), kind, server_id)
        except InvalidChange as exc:
            return fail(exc)
        self.driver.kick()
        if isinstance(result, NotLeader):
            return fail(NoLeader())
        waiter: Deferred = Deferred()
        self._pending[result] = (self.node.term, waiter)
        return waiter

    def transfer_leadership(self, target: str | None = None) -> str:
        """Start handing leadership to `target` (the most up-to-date voter when None); returns
        the target. Raises NoLeader here on a follower, InvalidChange for a bad target."""
        if self.driver is None or not self.is_leader:
            raise NoLeader()
        result = self.node.transfer_leadership(self._reactor.seconds(), target)
        self.driver.kick()
        if isinstance(result, NotLeader):
            raise InvalidChange(result.reason)
        return result

    def set_address(self, server_id: str, address: str, name: str = "") -> None:
        """Where `server_id`'s server port is (learned from gossip)."""
        self.book.set(server_id, address, name)

    def remember_serf(self, server_id: str, serf_address: str) -> None:
        """Where `server_id` gossips: a restarted server rejoins through it."""
        self.book.set_serf(server_id, serf_address)

    def peer_progress(self) -> dict[str, tuple[int, float]]:
        """On the leader: each follower's (match index, seconds since it last answered)."""
        node = self.node
        if node is None or node.leader is None:
            return {}
        now = self._reactor.seconds()
        return {peer: (pr.match_index, max(0.0, now - pr.last_ack))
                for peer, pr in node.leader.peers.items()}

    # --- lifecycle ------------------------------------------------------------------------------

    def recover(self, wal: LogStore, snapshots: SnapshotStore | None,
                peers_json: str | None = None) -> None:
        """Bring back the newest snapshot (restored into the FSM) and the log after it (handed
        to the node, applied once committed). `peers_json` is Consul's outage recovery file:
        when it exists, its servers become the configuration and the file is removed."""
        self._wal, self._snapshots = wal, snapshots
        self.book.load()
        snapshot = None
        meta = snapshots.latest_now() if snapshots is not None else None
        if meta is not None:
            with snapshots.open(meta) as f:
                data = f.read(meta.size)
            image, header = read_image(io.BytesIO(data), meta.path)
            self._fsm.restore(image)
            snapshot = Snapshot(meta.index, meta.term, configuration_from_header(header), data)
            for sid, address in (header.get("addresses") or {}).items():
                if sid not in self.addresses:
                    self.book.set(sid, address)
            self._applied, self._applied_term = meta.index, meta.term
        base = snapshot.index if snapshot else 0
        entries = entries_after(wal, base)
        hard = wal.hard_state()
        last_term = entries[-1].term if entries else (snapshot.term if snapshot else 0)
        if hard.term < last_term:
            # A log written before Raft (a one-member log keeps no hard state): its terms
            # are the floor of any new one.
            hard = HardState(last_term, None)
        if peers_json is not None and os.path.exists(peers_json):
            entries = self._recover_peers(peers_json, entries, base, snapshot, hard)
            hard = HardState(max(hard.term, entries[-1].term), None)
        self.node = RaftNode(self.server_id, self.options, self._rng, self._reactor.seconds(),
                             hard_state=hard, snapshot=snapshot, entries=entries)
        self._make_driver()

    def _recover_peers(self, path: str, entries: list[Entry], base: int,
                       snapshot: Snapshot | None, hard: HardState) -> list[Entry]:
        """peers.json's servers replace the configuration with a new entry at the end of this
        server's log."""
        config, addresses = read_peers_json(path)
        for sid, address in addresses.items():
            self.book.set(sid, address)
        last_index = entries[-1].index if entries else base
        term = max(hard.term, entries[-1].term if entries else (snapshot.term if snapshot else 0),
                   1)
        entry = Entry(last_index + 1, term, CONFIGURATION, config.encode())
        self._recovered_peers = path
        self.log.warn("recovering the Raft configuration from {path}: voters {voters}",
                      path=path, voters=",".join(sorted(config.voters)))
        self._pending_recovery_entry = entry
        return [*entries, entry]

    def _make_driver(self) -> None:
        storage = self._storage_factory(self._wal, self._snapshots)
        self.driver = RaftDriver(self._reactor, self.node, storage, self._transport,
                                 apply=self._apply_committed, take_snapshot=self._take_snapshot)
        self.driver.on_leader_change(self._leader_changed)
        self.driver.on_read(self._read_settled)

    def bootstrap(self, servers: dict[str, str]) -> bool:
        """Write the first configuration (`servers`: ID -> address), once: only a server with
        no configuration, term or log does it. Returns whether it did."""
        if self.bootstrapped:
            return False
        for sid, address in servers.items():
            if sid != self.server_id:
                self.set_address(sid, address)
        entry = Entry(1, 1, CONFIGURATION, Configuration.of(sorted(servers)).encode())
        running = self.driver is not None and self.driver.running
        if running:
            self.driver.stop()
        self.node = RaftNode(self.server_id, self.options, self._rng, self._reactor.seconds(),
                             hard_state=HardState(1, None), entries=[entry])
        # The entry and term are written before the node may act on them (it sends nothing
        # until the driver starts; a crash before they are durable leaves an empty server,
        # which bootstraps again).
        # Both queued at once: an election this server wins at once (a lone voter) saves a
        # later term after them, never before them.
        written = DeferredList([self._wal.append([entry]), self._wal.save_hard_state(1, None)],
                               fireOnOneErrback=True, consumeErrors=True)
        self._make_driver()
        self.log.info("bootstrapped the Raft configuration with {n} server(s): {ids}",
                      n=len(servers), ids=",".join(sorted(servers)))

        def go(_: Any) -> None:
            if running and not self._stopped:
                self.start()
        written.addCallbacks(go, lambda f: self.log.failure("bootstrapping failed", f))
        return True

    def start(self) -> None:
        self._stopped = False
        self.driver.start()
        if self._snapshot_interval > 0 and self._snapshot_timer is None:
            self._snapshot_timer = self._reactor.callLater(self._next_check(),
                                                          self._snapshot_check)
        if self._recovered_peers is not None:
            self._finish_peer_recovery()
        if self.node.campaign_now(self._reactor.seconds()):
            self.driver.kick()

    def _finish_peer_recovery(self) -> None:
        path, self._recovered_peers = self._recovered_peers, None
        entry = self._pending_recovery_entry
        written = self._wal.append([entry])

        def remove(_: Any) -> None:
            os.unlink(path)
            self.log.info("removed {path}: the recovered configuration is in the log", path=path)
        written.addCallbacks(remove, lambda f: self.log.failure(
            "writing the configuration recovered from {path} failed", f, path=path))

    def stop(self) -> Deferred:
        self._stopped = True
        if self._snapshot_timer is not None and self._snapshot_timer.active():
            self._snapshot_timer.cancel()
        self._snapshot_timer = None
        if self.driver is not None:
            self.driver.stop()
        if self._ready:
            self._ready = False
            self._tell(False)
        for term, waiter in list(self._pending.values()):
            if waiter is not None and not waiter.called:
                waiter.errback(NoLeader())
        self._pending.clear()
        for d in list(self._reads.values()):
            if not d.called:
                d.errback(NoLeader())
        self._reads.clear()
        closing = [self._transport.stop()] if hasattr(self._transport, "stop") else []
        d = closing[0] if closing else succeed(None)
        return d.addBoth(lambda _: self._wal.close() if self._wal is not None else None)

    # --- what the driver reports ------------------------------------------------------------------

    def _apply_committed(self, item: Entry | Snapshot) -> None:
        if self._halted:
            return
        if isinstance(item, Snapshot):
            try:
                image, header = read_image(io.BytesIO(item.data), "the leader's snapshot")
            except Exception as exc:  # noqa: BLE001 - SnapshotError names the problem
                self._halt(f"the snapshot of index {item.index} cannot be read: {exc}")
                return
            self._finish_capture()
            self._fsm.restore(image)
            self._applied, self._applied_term = item.index, item.term
            for sid, address in (header.get("addresses") or {}).items():
                if sid not in self.addresses:
                    self.set_address(sid, address)
            for index in [i for i in self._pending if i <= item.index]:
                _, waiter = self._pending.pop(index)
                if waiter is not None and not waiter.called:
                    waiter.errback(LeadershipLost())
            self._wake_applied()
            return
        self._finish_capture()
        result: Any = None
        error: BaseException | None = None
        try:
            if item.kind == COMMAND:
                result = self._fsm.apply_entry(item.index, item.data)
            elif item.kind == RESTORE:
                self._restore(item)
            elif item.kind == CONFIGURATION:
                self._configuration_applied()
        except UnknownCommand as exc:
            # Skipping an entry the other servers apply would make this replica diverge:
            # this server stops taking part instead (a newer Waypost wrote it).
            self._halt(f"log entry {item.index}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a command's own error goes to its writer
            error = exc
            if item.kind != COMMAND:
                self.log.failure("log entry {index} could not be applied", index=item.index)
        self._applied, self._applied_term = item.index, item.term
        pending = self._pending.pop(item.index, None)
        if pending is not None:
            term, waiter = pending
            if waiter is not None and not waiter.called:
                if term != item.term:
                    waiter.errback(LeadershipLost())
                elif error is not None:
                    waiter.errback(error)
                else:
                    waiter.callback(WriteResult(item.index, result))
        self._check_ready()
        self._wake_applied()

    def _halt(self, why: str) -> None:
        """Stop taking part in Raft: this server cannot apply what the cluster committed."""
        self.log.critical("this server stops taking part in Raft: {why}; upgrade it or "
                          "restore its data_dir from another server", why=why)
        self._halted = True
        if self.driver is not None:
            self.driver.stop()
        self._leader_changed(LeaderChange(self.term, None, False))

    def _restore(self, entry: Entry) -> None:
        restore_entry(self._fsm, entry)
        self.log.info("restored a snapshot at log index {index}", index=entry.index)

    def _configuration_applied(self) -> None:
        notify(self._config_listeners, None, self.log, "configuration")

    def _wake_applied(self) -> None:
        if not self._applied_waits:
            return
        ready = [(i, d) for i, d in self._applied_waits if i <= self._applied]
        self._applied_waits = [(i, d) for i, d in self._applied_waits if i > self._applied]
        for _, d in ready:
            d.callback(self._applied)

    def add_leader_known_listener(self, listener: Callable[[bool], None]) -> None:
        """Called with True when a leader (any server) becomes known, False when none is."""
        self._known_listeners.append(listener)

    def _leader_changed(self, change: LeaderChange) -> None:
        known = change.leader is not None
        if known != self._leader_known:
            self._leader_known = known
            notify(self._known_listeners, known, self.log, "leader-known")
        if change.is_self and self.node.leader is not None:
            self._ready_at = self.node.leader.first_index
            self._check_ready()
            return
        self._ready_at = None
        if self._ready:
            self._ready = False
            self._tell(False)
        for index, (term, waiter) in list(self._pending.items()):
            self._pending.pop(index)
            if waiter is not None and not waiter.called:
                waiter.errback(LeadershipLost())

    def _check_ready(self) -> None:
        if (not self._ready and self._ready_at is not None and self.is_leader
                and self._applied >= self._ready_at):
            self._ready = True
            self._tell(True)

    def _tell(self, leading: bool) -> None:
        notify(self._listeners, leading, self.log, "leadership")

    def _read_settled(self, read: ReadState) -> None:
        d = self._reads.pop(read.token, None)
        if d is None or d.called:
            return
        if not read.ok:
            d.errback(NoLeader())
            return
        self.wait_applied(read.index).addCallback(lambda _: True).chainDeferred(d)

    # --- snapshots ------------------------------------------------------------------------------

    def _finish_capture(self) -> None:
        if self._captures:
            for capture in self._captures:
                if not capture.done:
                    capture.finish()  # the store is about to change
            self._captures = []

    def _snapshot_header(self, index: int) -> dict:
        config = self.node.config_at(index)
        return {"configuration": configuration_doc(config),
                "addresses": {sid: a for sid, a in self.addresses.items()
                              if sid in config.servers}}

    def _next_check(self) -> float:
        # hashicorp/raft's jitter: somewhere in [interval, 2 * interval).
        return self._snapshot_interval * (1 + self._rng.random())

    def _snapshot_check(self) -> None:
        """Every interval: take the snapshot the node asked for since the last check."""
        self._snapshot_timer = None
        if self._stopped:
            return
        node = self.node
        base = node.snapshot.index if node.snapshot else 0
        if (not self._halted and self._applied - base >= self.options.snapshot_threshold
                and not self._snapshotting):
            index = self._applied
            taken = self._take_snapshot(index, checked=True)
            if taken is not None:
                taken.addCallback(self.driver.snapshot_encoded, index)
                taken.addErrback(lambda f: self.log.failure(
                    "taking a Raft snapshot at {index} failed", f, index=index))
        self._snapshot_timer = self._reactor.callLater(self._next_check(), self._snapshot_check)

    def _take_snapshot(self, index: int, checked: bool = False) -> Deferred | None:
        if self._snapshotting or self._stopped:
            return None
        if self._snapshot_interval > 0 and not checked:
            return None  # the periodic check takes it
        self._snapshotting = True
        d = self.capture_state(self._snapshot_header(index))

        def done(result: Any) -> Any:
            self._snapshotting = False
            return result
        return d.addBoth(done)

    def capture_state(self, header: dict | None = None) -> Deferred:
        """The state as of the index applied now, encoded over reactor turns; fires with the
        snapshot body (bytes)."""
        capture = self._fsm.begin_capture()
        self._captures.append(capture)
        chunks = encode_capture(capture, header if header is not None else
                                self._snapshot_header(self._applied))
        out: list[bytes] = []
        done: Deferred = Deferred()
        self._encode_turn(chunks, out, done)
        return done

    def _encode_turn(self, chunks: Iterator[bytes], out: list[bytes], done: Deferred) -> None:
        try:
            for _ in range(SNAPSHOT_TURN_CHUNKS):
                chunk = next(chunks, None)
                if chunk is None:
                    done.callback(b"".join(out))
                    return
                out.append(chunk)
        except Exception:  # noqa: BLE001
            done.errback(Failure())
            return
        self._reactor.callLater(0, self._encode_turn, chunks, out, done)
