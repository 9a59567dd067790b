"""The server side of one agent: the state store, the FSM, the log, the leader duties and the
server endpoints (`ServerCore`). A server agent has one; a client agent has none and reaches a
server's endpoints instead.

The log is the one-member `agent.raft.single.SingleServerLog`: in memory for `-dev` (and without
a data_dir), else on the write-ahead log and snapshots in `data_dir/raft/`, so every write
acknowledged to a client is on disk first. `load_state()` brings the state back from there (the
newest snapshot, then the log after it) before anything is served; the runner calls it before
the reactor starts, so a damaged data_dir stops the agent in one line. Leader duties
(`agent.leader`) start and stop with the log's leadership events.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from threading import Thread
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.threadpool import ThreadPool

from agent import structs
from agent.config.model import VERSION, AgentConfig
from agent.durations import parse_duration
from agent.fsm.apply import FSM
from agent.fsm.commands import Register
from agent.leader import LeaderDuties
from agent.raft.records import LogError
from agent.raft.single import SNAPSHOT_INTERVAL, SNAPSHOT_THRESHOLD, SingleServerLog
from agent.raft.snapshots import SnapshotError as SnapshotFileError
from agent.raft.snapshots import SnapshotStore
from agent.raft.wal import WriteAheadLog
from agent.autopilot import Autopilot, autopilot_settings
from agent.durations import go_duration
from agent.raft.net import RPC_RAFT, RaftTransport
from agent.raft.replicated import RaftLog
from agent.raft.recovery import RecoveryError as RaftRecoveryError
from agent.raft.storage import DiskStorage
from agent.raft.timing import raft_options, rpc_hold_timeout_of, snapshot_interval_of
from agent.rpc.remote import RemoteEndpoints
from agent.rpc.server import ServerEndpoints
from agent.rpc.transport import ConnectionPool
from agent.servers import ServerDirectory
from agent.membership import MemberFacts
from agent.sessions import SessionManager
from agent.state.snapshot import SnapshotError, read_legacy_file
from agent.state.store import StateStore

__all__ = ["DataDirError", "ServerCore", "SnapshotError"]

txaio.use_twisted()

SNAPSHOT_TURN_BYTES = 8 * 1024  # snapshot bytes encoded per reactor turn (~0.3 ms)


class DataDirError(SnapshotError):
    """data_dir holds a log or snapshots this agent cannot start from (damaged in the middle,
    written by a newer version, in use by another process); the message says which file."""


class _DaemonThreadPool(ThreadPool):
    """The log's pool. Daemon threads: an agent that never got to stop (a failed start) must
    not hang the process's exit on them; a write cut short that way was never acknowledged."""

    threadFactory = staticmethod(lambda *a, **kw: Thread(*a, daemon=True, **kw))


class ServerCore:
    """Store, FSM, log, sessions, leader duties and endpoints of one server."""

    log = txaio.make_logger()

    def __init__(self, config: AgentConfig, reactor, node: Callable[[], structs.Node], *,
                 pool: ThreadPool | None = None,
                 report_error: Callable[[BaseException], None] | None = None,
                 members: Callable[[], list[MemberFacts]] = lambda: [],
                 replicated: bool = False) -> None:
        """`pool` runs the write-ahead log's file work (a pool of the server's own, started by
        `load_state`, when None); only a non-dev server with a data_dir uses it. With
        `replicated` (a real agent in a LAN pool) a durable server runs Raft with its peers;
        otherwise (`-dev`, in-process agents) the one-member log."""
        self.config = config
        self.reactor = reactor
        self._node = node
        report_error = report_error or self._report_error
        # Watchers woken by a write fire on later reactor turns: the writer is answered first.
        self.store = StateStore(defer=lambda f: reactor.callLater(0, f), report_error=report_error)
        self.fsm = FSM(self.store, report_error=report_error, clock=reactor.seconds)
        self.durable = bool(config.data_dir) and not config.dev
        self.rpc_pool = ConnectionPool(reactor)  # calls to other servers
        self.raft_transport: RaftTransport | None = None
        self.directory: ServerDirectory | None = None
        self.autopilot: Autopilot | None = None
        if replicated and self.durable:
            self.raft_transport = RaftTransport(reactor, {}, eager=True)
            self.raft = RaftLog(
                reactor, self.fsm, self.raft_transport, server_id=config.node_id,
                address=config.server_rpc_addr, options=raft_options(config),
                storage_factory=DiskStorage, snapshot_interval=snapshot_interval_of(config),
                address_book=str(Path(config.data_dir) / "raft" / "servers.json"))
            self.directory = ServerDirectory(
                self.raft, server_id=config.node_id, datacenter=config.datacenter,
                bootstrap=config.bootstrap, expect=config.bootstrap_expect,
                call=self.rpc_pool.call)
            self.autopilot = Autopilot(reactor, self.raft, lambda: self.directory.servers,
                                       autopilot_settings(config.settings), version=VERSION,
                                       stored=lambda: self.store.autopilot)
        else:
            threshold, interval, trailing = _raft_settings(config)
            self.raft = SingleServerLog(reactor, self.fsm, address=config.server_rpc_addr,
                                        server_id=config.node_id, snapshot_threshold=threshold,
                                        snapshot_interval=interval, trailing_logs=trailing)
        self._pool = pool
        self._own_pool = pool is None
        self._retire_legacy: Path | None = None
        self._state_loaded = False
        self.sessions = SessionManager(reactor, self.store, self.raft.apply)
        self.leader = LeaderDuties(reactor, self.store, self.raft.apply,
                                   lambda: self.raft.applied_index, sessions=self.sessions,
                                   member=self._member_registration, members=members,
                                   datacenter=lambda: self.config.datacenter)
        self.endpoints = ServerEndpoints(
            reactor, self.store, self.raft, datacenter=lambda: self.config.datacenter,
            lock_delay_remaining=self.sessions.lock_delay_remaining, session_timers=self.sessions,
            hold_timeout=rpc_hold_timeout_of(config),
            forward=(RemoteEndpoints(reactor, self._leader_addresses, pool=self.rpc_pool)
                     if self.directory is not None else None))
        self.raft.add_leadership_listener(self.leader.leadership_changed)
        if self.autopilot is not None:
            self.raft.add_leadership_listener(lambda leading: leading and reactor.callLater(
                0, self.autopilot.reconcile))
            self.raft.add_configuration_listener(lambda _: reactor.callLater(
                0, self.autopilot.reconcile))

    @property
    def replicated(self) -> bool:
        return self.directory is not None

    def _leader_addresses(self) -> list[str]:
        address = self.raft.leader_address
        return [address] if address and address != self.config.server_rpc_addr else []

    def members_changed(self, members: list) -> None:
        """The LAN pool changed (or the periodic look): learn the servers' addresses,
        bootstrap when due, and let autopilot adjust the configuration."""
        if self.directory is None:
            return
        self.directory.update(members)
        self.autopilot.reconcile()

    def step_aside(self) -> Deferred:
        """Before this server leaves: if it leads a cluster of several voters, hand leadership
        to the most up-to-date one and wait (at most two election timeouts) until it has
        taken over, so writes keep a leader while the others remove this server."""
        raft = self.raft
        if not self.replicated or not raft.is_leader or len(raft.configuration.voters) < 2:
            return succeed(None)
        try:
            target = raft.transfer_leadership()
        except Exception as exc:  # noqa: BLE001 - leaving goes on without a transfer
            self.log.warn("could not hand over leadership before leaving: {exc}", exc=exc)
            return succeed(None)
        self.log.info("leaving: handing leadership to {target}", target=target)
        deadline = self.reactor.seconds() + 2 * raft.options.election_timeout
        done: Deferred = Deferred()

        def look() -> None:
            if not raft.is_leader or self.reactor.seconds() > deadline:
                done.callback(None)
            else:
                self.reactor.callLater(0.02, look)
        look()
        return done

    def server_port_protocols(self) -> dict:
        """Other protocols of the server port, by their first byte (Raft's 0x01)."""
        if self.raft_transport is None:
            return {}
        return {RPC_RAFT: lambda: self.raft_transport.protocol(expect_type_byte=False)}

    def _report_error(self, exc: BaseException) -> None:
        self.log.error("error in a state watcher: {exc!r}", exc=exc)

    def _member_registration(self) -> Register:
        """This server in the catalog, as Consul's leader registers a member that joined: the
        node as gossip knows it (no meta, no tagged addresses), its consul service and
        serfHealth. The agent's own sync writes the node's full info."""
        node = self._node()
        c = self.config
        consul = structs.Service(
            node=node.name, id="consul", name="consul", port=c.ports.server,
            meta={"non_voter": "false", "raft_version": "3", "serf_protocol_current": "2",
                  "serf_protocol_max": "5", "serf_protocol_min": "1", "version": VERSION})
        serf = structs.Check(node=node.name, check_id=structs.SERF_CHECK_ID,
                             name=structs.SERF_CHECK_NAME, status=structs.PASSING,
                             output=structs.SERF_ALIVE_OUTPUT)
        member = replace(node, tagged_addresses={}, meta={})
        return Register(node=member, service=consul if c.server else None, checks=(serf,))

    def raft_stats(self) -> dict:
        raft = self.raft
        index = str(raft.last_index)
        if self.replicated:
            node = raft.node
            contact = "0" if raft.is_leader else go_duration(raft.last_contact())
            voters = raft.configuration.voters
            return {"applied_index": str(raft.applied_index),
                    "commit_index": str(raft.commit_index), "fsm_pending": "0",
                    "last_contact": contact, "last_log_index": index,
                    "last_log_term": str(node.log.last_term if node else 0),
                    "last_snapshot_index": str(raft.snapshot_index),
                    "last_snapshot_term": str(raft.snapshot_term),
                    "num_peers": str(len(voters - {raft.server_id})),
                    "state": node.role.name.title().replace("_", "") if node else "Follower",
                    "term": str(raft.term),
                    "latest_configuration": _configuration_text(raft),
                    "latest_configuration_index": str(raft.configuration_index)}
        return {"applied_index": str(raft.applied_index), "commit_index": index,
                "fsm_pending": "0", "last_contact": "0", "last_log_index": index,
                "last_log_term": str(raft.term),
                "last_snapshot_index": str(raft.snapshot_index),
                "last_snapshot_term": str(raft.snapshot_term), "num_peers": "0",
                "state": "Leader" if raft.is_leader else "Follower",
                "term": str(raft.term)}

    def legacy_state_path(self) -> Path | None:
        """Where Waypost versions before the write-ahead log kept the whole state (read once,
        at the first start of a newer version; None for an agent that keeps nothing)."""
        if not self.durable:
            return None
        return Path(self.config.data_dir) / "state" / "snapshot.json"

    def load_state(self) -> None:
        """Bring the state back from data_dir, once: the newest snapshot, then every entry of
        the log after it, through the FSM. Raises `SnapshotError` (a `DataDirError` for the
        log and snapshots) naming the file and what is wrong with it. `startService` calls it;
        the runner calls it earlier, so that a damaged data_dir stops the agent before
        anything starts."""
        if self._state_loaded:
            return
        if self.durable:
            self._recover_from_disk()
        else:
            self.raft.recover()
        self._state_loaded = True

    def _recover_from_disk(self) -> None:
        data_dir = self.config.data_dir
        if self._pool is None:
            self._pool = _DaemonThreadPool(minthreads=0, maxthreads=2, name="waypost-raft")
        try:
            wal = WriteAheadLog.open_now(self.reactor, self._pool, data_dir)
            snapshots = SnapshotStore.prepare_now(self.reactor, self._pool, data_dir,
                                                  turn_bytes=SNAPSHOT_TURN_BYTES)
        except (LogError, SnapshotFileError, OSError) as exc:
            raise DataDirError(str(exc)) from None
        legacy_path = self.legacy_state_path()
        legacy = None
        try:
            if legacy_path.exists():
                if snapshots.latest_now() is None:
                    legacy = read_legacy_file(legacy_path)  # SnapshotError names the file
                self._retire_legacy = legacy_path
            if self.replicated:
                if legacy is not None:
                    raise DataDirError(
                        f"{legacy_path}: a state file of a Waypost before the write-ahead log; "
                        "start this server once with `-bootstrap` alone to convert it")
                self.raft.recover(wal, snapshots,
                                  peers_json=str(Path(data_dir) / "raft" / "peers.json"))
            else:
                self.raft.recover(wal, snapshots, legacy=legacy)
        except SnapshotError:
            raise
        except (LogError, SnapshotFileError, OSError, RaftRecoveryError) as exc:
            raise DataDirError(str(exc)) from None
        if legacy is not None:
            self.log.info("restored state at index {index} from {path} (a state file of an "
                          "older version; the write-ahead log takes over)",
                          index=legacy.index, path=str(legacy_path))
        if self._own_pool and not self._pool.started:
            self._pool.start()

    def start(self) -> None:
        """Load the state if not done yet and start the log: the one server wins its
        election at once; the leader duties start once the log is applied to its end."""
        self.load_state()
        if self.directory is not None:
            self.directory.start()  # `-bootstrap`: this server's own configuration
        self.raft.start()
        if self._retire_legacy is not None:
            self._retire_legacy_state(self._retire_legacy)

    def _retire_legacy_state(self, path: Path) -> None:
        """Once a snapshot of the log holds what the old state file held, remove the file."""
        self._retire_legacy = None

        def remove(_: Any) -> None:
            path.unlink(missing_ok=True)
            self.log.info("removed the old state file {path}: the snapshots of the log hold "
                          "its state", path=str(path))
        if self.raft.snapshot_index > 0:
            remove(None)
            return
        self.raft.take_snapshot().addCallbacks(remove, lambda f: self.log.failure(
            "the first snapshot after restoring {path} failed; the file stays", f,
            path=str(path)))

    def stop(self) -> Deferred:
        """Leadership ends (the leader duties stop), then the log closes once what was
        appended is durable, then its pool."""
        self.rpc_pool.close()
        d = maybeDeferred(self.raft.stop)
        d.addErrback(lambda f: self.log.failure("closing the log failed", f))
        d.addBoth(self._stop_pool)
        return d

    def _stop_pool(self, _: Any) -> None:
        if self._own_pool and self._pool is not None and self._pool.started:
            self._pool.stop()


def _configuration_text(raft: RaftLog) -> str:
    """The configuration as hashicorp/raft prints it in Consul's stats."""
    config = raft.configuration
    parts = [f"{{Suffrage:{'Voter' if sid in config.voters else 'Nonvoter'} ID:{sid} "
             f"Address:{raft.addresses.get(sid, '')}}}" for sid in sorted(config.servers)]
    return "[" + " ".join(parts) + "]"


def _raft_settings(config: Any) -> tuple[int, float, int]:
    """raft_snapshot_threshold, raft_snapshot_interval and raft_trailing_logs (0: default)."""
    settings = getattr(config, "settings", None) or {}
    threshold = settings.get("raft_snapshot_threshold") or SNAPSHOT_THRESHOLD
    interval = settings.get("raft_snapshot_interval")
    interval = parse_duration(interval) if interval else SNAPSHOT_INTERVAL
    trailing = settings.get("raft_trailing_logs") or 0
    return int(threshold), float(interval or SNAPSHOT_INTERVAL), int(trailing)
