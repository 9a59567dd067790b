"""The composition root of the core: builds the store, FSM, log and local state for one agent.

`make_agent(config, reactor)` returns an `Agent` (a MultiService) whose `facade` is what the
gateway hands to frontends. Nothing here knows about frontends.

The log is the one-member `agent.raft.single.SingleServerLog`: in memory for `-dev` (and without
a data_dir), else on the write-ahead log and snapshots in `data_dir/raft/`, so every write
acknowledged to a client is on disk first. `load_state()` brings the state back from there (the
newest snapshot, then the log after it) before anything is served; the runner calls it before
the reactor starts, so a damaged data_dir stops the agent in one line. Leader duties
(`agent.leader`) start and stop with the log's leadership events.
"""

from __future__ import annotations

import os
import platform
from dataclasses import replace
from pathlib import Path
from threading import Thread
from typing import Any

import txaio
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.threadpool import ThreadPool

from agent import structs
from agent.config.model import VERSION, AgentConfig
from agent.durations import parse_duration
from agent.errors import InvalidRequest
from agent.facade import AgentFacade, Member
from agent.fsm.apply import FSM
from agent.fsm.commands import Register
from agent.leader import LeaderDuties
from agent.local.catalog import InProcessCatalog
from agent.local.compose import build_local, check_update_interval_of
from agent.local.persist import LocalPersistence, Saved
from agent.local.state import CONFIG
from agent.loops import LoopSet, ResilientLoop
from agent.raft.records import LogError
from agent.raft.single import SNAPSHOT_INTERVAL, SNAPSHOT_THRESHOLD, SingleServerLog
from agent.raft.snapshots import SnapshotError as SnapshotFileError
from agent.raft.snapshots import SnapshotStore
from agent.raft.wal import WriteAheadLog
from agent.rpc.server import ServerEndpoints
from agent.schemas import SchemaSet
from agent.sessions import SessionManager
from agent.state.snapshot import SnapshotError, read_legacy_file
from agent.state.store import StateStore

__all__ = ["Agent", "DataDirError", "SnapshotError", "make_agent"]

txaio.use_twisted()

CHECK_REAP_INTERVAL = 30.0  # Consul's CheckReapInterval
SNAPSHOT_TURN_BYTES = 8 * 1024  # snapshot bytes encoded per reactor turn (~0.3 ms)


class DataDirError(SnapshotError):
    """data_dir holds a log or snapshots this agent cannot start from (damaged in the middle,
    written by a newer version, in use by another process); the message says which file."""


class _DaemonThreadPool(ThreadPool):
    """The log's pool. Daemon threads: an agent that never got to stop (a failed start) must
    not hang the process's exit on them; a write cut short that way was never acknowledged."""

    threadFactory = staticmethod(lambda *a, **kw: Thread(*a, daemon=True, **kw))


class Agent(MultiService):
    """One agent's core. Its background loops are in `loops` (by name: "anti-entropy",
    "check-reaper"), each counting the ticks that failed; the leader's are in `leader`."""

    log = txaio.make_logger()

    def __init__(self, config: AgentConfig, reactor, *,
                 persistence: LocalPersistence | None = None, pool: ThreadPool | None = None
                 ) -> None:
        """`pool` runs the write-ahead log's file work (a pool of the agent's own, started by
        `load_state`, when None); only a non-dev agent with a data_dir uses it."""
        super().__init__()
        self.config = config
        self.reactor = reactor
        # Watchers woken by a write fire on later reactor turns: the writer is answered first.
        self.store = StateStore(defer=lambda f: reactor.callLater(0, f),
                                report_error=self._report_error)
        self.fsm = FSM(self.store, report_error=self._report_error, clock=reactor.seconds)
        threshold, interval, trailing = _raft_settings(config)
        self.raft = SingleServerLog(reactor, self.fsm, address=config.server_rpc_addr,
                                    server_id=config.node_id, snapshot_threshold=threshold,
                                    snapshot_interval=interval, trailing_logs=trailing)
        self.durable = bool(config.data_dir) and not config.dev
        self._pool = pool
        self._own_pool = pool is None
        self._retire_legacy: Path | None = None
        # API registrations live in data_dir whenever there is one, -dev or not, as in Consul.
        if persistence is None and config.data_dir:
            persistence = LocalPersistence(config.data_dir)
        self.persistence = persistence
        self.sessions = SessionManager(reactor, self.store, self.raft.apply,
                                       lambda: self.config.node_name)
        self.leader = LeaderDuties(reactor, self.store, self.raft.apply,
                                   lambda: self.raft.applied_index, sessions=self.sessions,
                                   member=self._member_registration)
        self.endpoints = ServerEndpoints(
            reactor, self.store, self.raft, datacenter=lambda: self.config.datacenter,
            lock_delay_remaining=self.sessions.lock_delay_remaining, session_timers=self.sessions)
        # This agent's services and checks reach the catalog through the server endpoints, as
        # a client agent's reach a server over RPC.
        local = build_local(
            reactor, InProcessCatalog(self.endpoints.write, self.endpoints.read), self.node,
            runner_factory=self._make_runner,
            enable_script_checks=getattr(config, "enable_script_checks", False),
            enable_local_script_checks=getattr(config, "enable_local_script_checks", False),
            persistence=self.persistence,
            check_update_interval=check_update_interval_of(config.settings),
            keep_services=frozenset({"consul"} if config.server else ()),
            keep_checks=frozenset({structs.SERF_CHECK_ID}),
            cluster_size=lambda: len(self.members()))
        self.local, self.antientropy = local.state, local.antientropy
        self.schemas = SchemaSet()
        self.plugin_names: list[str] = []
        self._state_loaded = False
        self.loops = LoopSet()
        self.loops.add(self.antientropy.loop)
        self.loops.add(ResilientLoop(reactor, "check-reaper", self.local.reap_critical,
                                     CHECK_REAP_INTERVAL))
        self.facade = AgentFacade(config, reactor, self.store, self.endpoints, local.endpoints,
                                  self.schemas, self.members, self.stats,
                                  plugin_names=lambda: list(self.plugin_names),
                                  sessions=self.sessions)
        self.raft.add_leadership_listener(self.leader.leadership_changed)
        self.raft.add_leadership_listener(self.facade.set_leader_known)

    def _make_runner(self, spec, notifier):
        from agent.checks.factory import make_runner
        return make_runner(spec, self.reactor, notifier, store_reader=self._alias_statuses,
                           watch=self._watch_catalog, local_node=self.config.node_name,
                           docker_host=os.environ.get("DOCKER_HOST"))

    def _alias_statuses(self, node: str, service_id: str) -> list[str] | None:
        """Statuses an alias check aggregates; None when what it names does not exist."""
        catalog = self.store.catalog
        if node not in catalog.nodes:
            return None
        if service_id:
            service = catalog.services.get(node, {}).get(service_id)
            if service is None:
                return None
            return [c.status for c in catalog.instance_checks(service)]
        return [c.status for c in catalog.node_checks(node)]

    def _watch_catalog(self, callback):
        return self.store.watch(callback, tables=("nodes", "services", "checks"))

    def _report_error(self, exc: BaseException) -> None:
        self.log.error("error in a state watcher: {exc!r}", exc=exc)

    def node(self) -> structs.Node:
        addr = self.config.advertise
        return structs.Node(
            name=self.config.node_name, address=addr, node_id=self.config.node_id,
            datacenter=self.config.datacenter,
            tagged_addresses={"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr},
            meta={"consul-network-segment": "", **self.config.node_meta})

    def _member_registration(self) -> Register:
        """This server in the catalog, as Consul's leader registers a member that joined: the
        node as gossip knows it (no meta, no tagged addresses), its consul service and
        serfHealth. The agent's own sync writes the node's full info."""
        node = self.node()
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

    def member_tags(self) -> dict:
        c = self.config
        tags = {"acls": "0", "build": f"{VERSION}:", "dc": c.datacenter, "ft_fs": "1",
                "id": c.node_id, "port": str(c.ports.server), "raft_vsn": "3",
                "role": "consul" if c.server else "node", "segment": "", "vsn": "2",
                "vsn_max": "3", "vsn_min": "2", "wan_join_port": str(c.ports.serf_wan)}
        if not c.server:
            for key in ("port", "raft_vsn", "wan_join_port", "ft_fs"):
                tags.pop(key)
        return tags

    def members(self) -> list[Member]:
        return [Member(self.config.node_name, self.config.advertise, self.config.ports.serf_lan,
                       self.member_tags())]

    def stats(self) -> dict:
        raft = self.raft
        index = str(raft.last_index)
        return {
            "agent": {"check_monitors": "0",
                      "check_ttls": str(sum(1 for lc in self.local.checks.values() if lc.spec.ttl > 0)),
                      "checks": str(len(self.local.checks)), "services": str(len(self.local.services))},
            "build": {"prerelease": "", "revision": "", "version": VERSION},
            "consul": {"acl": "disabled", "bootstrap": "false", "known_datacenters": "1",
                       "leader": str(raft.is_leader).lower(), "leader_addr": raft.leader_address,
                       "server": "true"},
            "raft": {"applied_index": str(raft.applied_index), "commit_index": index,
                     "fsm_pending": "0", "last_contact": "0", "last_log_index": index,
                     "last_log_term": str(raft.term),
                     "last_snapshot_index": str(raft.snapshot_index),
                     "last_snapshot_term": str(raft.snapshot_term), "num_peers": "0",
                     "state": "Leader" if raft.is_leader else "Follower",
                     "term": str(raft.term)},
            "runtime": {"arch": platform.machine(), "cpu_count": str(os.cpu_count()),
                        "os": platform.system().lower(),
                        "version": f"python{platform.python_version()}"},
        }

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
            self.raft.recover(wal, snapshots, legacy=legacy)
        except SnapshotError:
            raise
        except (LogError, SnapshotFileError, OSError) as exc:
            raise DataDirError(str(exc)) from None
        if legacy is not None:
            self.log.info("restored state at index {index} from {path} (a state file of an "
                          "older version; the write-ahead log takes over)",
                          index=legacy.index, path=str(legacy_path))
        if self._own_pool and not self._pool.started:
            self._pool.start()

    def startService(self) -> None:
        self.load_state()
        # The one server wins its election at once: commands are accepted from here on, and
        # the leader duties (its own catalog entry, session timers, tombstone GC) start once
        # the log is applied to its end.
        self.raft.start()
        if self._retire_legacy is not None:
            self._retire_legacy_state(self._retire_legacy)
        saved = self.persistence.load() if self.persistence is not None else Saved()
        self.local.expect_saved_states(saved.states)
        self._register_config(self.config)
        self.local.restore(saved)  # API registrations of the last run; the config's win
        self.local.start()
        # Consul's state syncer runs a full sync at once, then on its interval.
        self.antientropy.start(now=True)
        self.loops["check-reaper"].start()
        super().startService()

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

    def _register_config(self, config: AgentConfig) -> None:
        for definition in getattr(config, "services", ()):
            self.local.add_service(definition, source=CONFIG, replace_existing_checks=True)
        for spec in getattr(config, "checks", ()):
            self.local.add_check(spec, source=CONFIG)

    def apply_config(self, new: AgentConfig) -> None:
        """Reload: take the new config's services, checks and settings without a restart.

        Services and checks from the old config that the new one lacks go away, changed ones
        are replaced, unchanged checks keep their state (a TTL that was passing stays passing).
        Everything is validated before anything changes; on error the old config stays.
        """
        local = self.local
        saved = (local.enable_script_checks, local.enable_local_script_checks)
        local.enable_script_checks = getattr(new, "enable_script_checks", False)
        local.enable_local_script_checks = getattr(new, "enable_local_script_checks", False)
        try:
            for definition in getattr(new, "services", ()):
                for spec in definition.checks:
                    local._allow_check(spec, CONFIG)
            for spec in getattr(new, "checks", ()):
                local._allow_check(spec, CONFIG)
                if spec.service_id and spec.service_id not in local.services and not any(
                        d.service.id == spec.service_id for d in getattr(new, "services", ())):
                    raise InvalidRequest(f'ServiceID "{spec.service_id}" does not exist')
        except Exception:
            local.enable_script_checks, local.enable_local_script_checks = saved
            raise
        new_services = {d.service.id for d in getattr(new, "services", ())}
        for service_id, source in list(local.service_sources.items()):
            if source == CONFIG and service_id not in new_services:
                local.remove_service(service_id)
        new_checks = {s.check_id for s in getattr(new, "checks", ())}
        for check_id, lc in list(local.checks.items()):
            if lc.source == CONFIG and not lc.check.service_id and check_id not in new_checks:
                local.remove_check(check_id)
        self._register_config(new)
        self.config = new
        self.facade.config = new
        for listener in list(self.facade.reload_listeners):
            try:
                listener(new)
            except Exception:
                self.log.failure("a reload listener failed")

    def stopService(self) -> Deferred:
        self.local.stop()
        self.antientropy.stop()
        self.loops.stop()
        # Leadership ends (the leader duties stop), then the log closes once what was
        # appended is durable, then its pool.
        d = maybeDeferred(self.raft.stop)
        d.addErrback(lambda f: self.log.failure("closing the log failed", f))
        d.addBoth(self._stop_pool)
        d.addBoth(lambda _: super(Agent, self).stopService())
        return d

    def _stop_pool(self, _: Any) -> None:
        if self._own_pool and self._pool is not None and self._pool.started:
            self._pool.stop()


def _raft_settings(config: Any) -> tuple[int, float, int]:
    """raft_snapshot_threshold, raft_snapshot_interval and raft_trailing_logs (0: default)."""
    settings = getattr(config, "settings", None) or {}
    threshold = settings.get("raft_snapshot_threshold") or SNAPSHOT_THRESHOLD
    interval = settings.get("raft_snapshot_interval")
    interval = parse_duration(interval) if interval else SNAPSHOT_INTERVAL
    trailing = settings.get("raft_trailing_logs") or 0
    return int(threshold), float(interval or SNAPSHOT_INTERVAL), int(trailing)


def make_agent(config: AgentConfig, reactor, *, persistence: LocalPersistence | None = None,
               pool: ThreadPool | None = None) -> Agent:
    """The core of one agent; `persistence` defaults to the real disk, `pool` to the log's own
    thread pool."""
    return Agent(config, reactor, persistence=persistence, pool=pool)
