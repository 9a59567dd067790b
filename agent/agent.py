"""The composition root of the core: builds the store, FSM, log and local state for one agent.

`make_agent(config, reactor)` returns an `Agent` (a MultiService) whose `facade` is what the
gateway hands to frontends. Nothing here knows about frontends.
"""

from __future__ import annotations

import os
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import txaio
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred

from agent import structs
from agent.config.model import VERSION, AgentConfig
from agent.errors import InvalidRequest
from agent.facade import AgentFacade, Member
from agent.fsm.apply import FSM
from agent.fsm.commands import Deregister, Register
from agent.local.antientropy import AntiEntropy
from agent.local.persist import LocalPersistence, Saved
from agent.local.state import CONFIG, LocalState
from agent.loops import LoopSet, ResilientLoop
from agent.schemas import SchemaSet
from agent.sessions import SessionManager
from agent.rpc.server import ServerEndpoints
from agent.single_server import SingleServerLog
from agent.state import snapshot
from agent.state.snapshot import SnapshotError
from agent.state.store import StateStore

__all__ = ["Agent", "SnapshotError", "make_agent"]

txaio.use_twisted()

SNAPSHOT_INTERVAL = 5.0  # seconds between snapshots of a changed store (until the Raft log lands)
CHECK_REAP_INTERVAL = 30.0  # Consul's CheckReapInterval


SnapshotWriter = Callable[[StateStore, Path], None]


class Agent(MultiService):
    """One agent's core. Its background loops are in `loops` (by name: "anti-entropy",
    "check-reaper", "snapshot"), each counting the ticks that failed."""

    log = txaio.make_logger()

    def __init__(self, config: AgentConfig, reactor, *,
                 snapshot_writer: SnapshotWriter = snapshot.save_file,
                 persistence: LocalPersistence | None = None) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.store = StateStore()
        self.fsm = FSM(self.store, report_error=self._report_error)
        self.raft = SingleServerLog(self.fsm, address=config.server_rpc_addr)
        # API registrations live in data_dir whenever there is one, -dev or not, as in Consul.
        if persistence is None and config.data_dir:
            persistence = LocalPersistence(config.data_dir)
        self.persistence = persistence
        self.local = LocalState(reactor, self.node, self._sync_write,
                                runner_factory=self._make_runner,
                                enable_script_checks=getattr(config, "enable_script_checks", False),
                                enable_local_script_checks=getattr(
                                    config, "enable_local_script_checks", False),
                                persistence=self.persistence)
        self.antientropy = AntiEntropy(reactor, self.local, self.store, self.node, self._sync_write,
                                       keep_services=frozenset({"consul"} if config.server else ()),
                                       keep_checks=frozenset({structs.SERF_CHECK_ID}))
        self.sessions = SessionManager(reactor, self.store, self.raft.apply,
                                       lambda: self.config.node_name)
        self.schemas = SchemaSet()
        self.plugin_names: list[str] = []
        self._snapshot_writer = snapshot_writer
        self._saved_index = 0
        self._state_loaded = False
        self.loops = LoopSet()
        self.loops.add(self.antientropy.loop)
        self.loops.add(ResilientLoop(reactor, "check-reaper", self.local.reap_critical,
                                     CHECK_REAP_INTERVAL))
        if self.snapshot_path() is not None:
            self.loops.add(ResilientLoop(reactor, "snapshot", self.save_snapshot,
                                         SNAPSHOT_INTERVAL))
        self.endpoints = ServerEndpoints(
            reactor, self.store, self.raft, datacenter=lambda: self.config.datacenter,
            lock_delay_remaining=self.sessions.lock_delay_remaining, session_timers=self.sessions)
        self.facade = AgentFacade(config, reactor, self.store, self.endpoints, self.local,
                                  self.schemas, self.members, self.stats,
                                  plugin_names=lambda: list(self.plugin_names),
                                  sessions=self.sessions)

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

    def _sync_write(self, command: Any) -> Deferred:
        """Apply a write of the local state (or anti-entropy) and say so once it is in the
        catalog, in Consul's words ("Synced service: service=web")."""
        return self.raft.apply(command).addCallback(self._log_synced, command)

    def _log_synced(self, result: Any, command: Any) -> Any:
        if isinstance(command, Register):
            if command.service is not None:
                self.log.info("Synced service: service={service}", service=command.service.id)
            for check in command.checks:
                self.log.info("Synced check: check={check}", check=check.check_id)
            if command.service is None and not command.checks:
                self.log.info("Synced node info")
        elif isinstance(command, Deregister):
            if command.service_id:
                self.log.info("Deregistered service: service={service}",
                              service=command.service_id)
            elif command.check_id:
                self.log.info("Deregistered check: check={check}", check=command.check_id)
        return result

    def node(self) -> structs.Node:
        addr = self.config.advertise
        return structs.Node(
            name=self.config.node_name, address=addr, node_id=self.config.node_id,
            datacenter=self.config.datacenter,
            tagged_addresses={"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr},
            meta={"consul-network-segment": "", **self.config.node_meta})

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
        c = self.config
        index = str(self.raft.last_index)
        return {
            "agent": {"check_monitors": "0",
                      "check_ttls": str(sum(1 for lc in self.local.checks.values() if lc.spec.ttl > 0)),
                      "checks": str(len(self.local.checks)), "services": str(len(self.local.services))},
            "build": {"prerelease": "", "revision": "", "version": VERSION},
            "consul": {"acl": "disabled", "bootstrap": "false", "known_datacenters": "1",
                       "leader": "true", "leader_addr": c.server_rpc_addr, "server": "true"},
            "raft": {"applied_index": index, "commit_index": index, "fsm_pending": "0",
                     "last_contact": "0", "last_log_index": index, "last_log_term": "1",
                     "num_peers": "0", "state": "Leader", "term": "1"},
            "runtime": {"arch": platform.machine(), "cpu_count": str(os.cpu_count()),
                        "os": platform.system().lower(),
                        "version": f"python{platform.python_version()}"},
        }

    def snapshot_path(self) -> Path | None:
        """Where a non-dev agent keeps its state between runs (dev mode is in-memory)."""
        if self.config.dev or not self.config.data_dir:
            return None
        return Path(self.config.data_dir) / "state" / "snapshot.json"

    def save_snapshot(self) -> None:
        path = self.snapshot_path()
        if path is None or self.store.index == self._saved_index:
            return
        index = self.store.index
        path.parent.mkdir(parents=True, exist_ok=True)
        self._snapshot_writer(self.store, path)
        self._saved_index = index

    def load_state(self) -> None:
        """Restore the store from the state file, once; raises `SnapshotError` naming the file
        and what is wrong with it. `startService` calls it; the runner calls it earlier, so
        that a damaged file stops the agent before anything starts."""
        if self._state_loaded:
            return
        path = self.snapshot_path()
        if path is not None and path.exists():
            snapshot.load_file(path, self.store)
            self.raft.last_index = self.store.index
            self._saved_index = self.store.index
            self.log.info("restored state at index {index} from {path}", index=self.store.index,
                          path=str(path))
        self._state_loaded = True

    def startService(self) -> None:
        self.load_state()
        self.raft.bootstrap()
        node = self.node()
        c = self.config
        # A server shows itself in the catalog the way Consul's leader does when the member
        # joins: the node as gossip knows it (no meta, no tagged addresses), its consul
        # service and serfHealth. The agent's own sync below then writes the node's full info,
        # so, as in Consul, the first answers carry an index past 1.
        consul = structs.Service(
            node=node.name, id="consul", name="consul", port=c.ports.server,
            meta={"non_voter": "false", "raft_version": "3", "serf_protocol_current": "2",
                  "serf_protocol_max": "5", "serf_protocol_min": "1", "version": VERSION})
        serf = structs.Check(node=node.name, check_id=structs.SERF_CHECK_ID,
                             name=structs.SERF_CHECK_NAME, status=structs.PASSING,
                             output=structs.SERF_ALIVE_OUTPUT)
        member = replace(node, tagged_addresses={}, meta={})
        self.raft.apply(Register(node=member, service=consul if c.server else None,
                                 checks=(serf,)))
        saved = self.persistence.load() if self.persistence is not None else Saved()
        self.local.expect_saved_states(saved.states)
        self._register_config(self.config)
        self.local.restore(saved)  # API registrations of the last run; the config's win
        self.sessions.start()  # the one server leads: TTL timers run here
        self.local.start()
        # Consul's state syncer runs a full sync at once, then on its interval.
        self.antientropy.start(now=True)
        self.loops["check-reaper"].start()
        if "snapshot" in self.loops:
            self.loops["snapshot"].start()
        super().startService()

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

    def stopService(self):
        self.sessions.stop()
        self.local.stop()
        self.antientropy.stop()
        self.loops.stop()
        try:
            self.save_snapshot()
        except OSError as exc:  # the last snapshot tick's file stays; stopping goes on
            self.log.error("Failed saving the state file at shutdown: {error}", error=exc)
        return super().stopService()


def make_agent(config: AgentConfig, reactor, *,
               snapshot_writer: SnapshotWriter = snapshot.save_file,
               persistence: LocalPersistence | None = None) -> Agent:
    """The core of one agent; `snapshot_writer` and `persistence` default to the real disk."""
    return Agent(config, reactor, snapshot_writer=snapshot_writer, persistence=persistence)
