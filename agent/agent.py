"""The composition root of the core: builds the store, FSM, log and local state for one agent.

`make_agent(config, reactor)` returns an `Agent` (a MultiService) whose `facade` is what the
gateway hands to frontends. Nothing here knows about frontends.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import txaio
from twisted.application.service import MultiService
from twisted.internet.task import LoopingCall

from agent import structs
from agent.config.model import VERSION, AgentConfig
from agent.errors import InvalidRequest
from agent.facade import AgentFacade, Member
from agent.fsm.apply import FSM
from agent.fsm.commands import Register
from agent.local.antientropy import AntiEntropy
from agent.local.state import CONFIG, LocalState
from agent.schemas import SchemaSet
from agent.sessions import SessionManager
from agent.single_server import SingleServerLog
from agent.state import snapshot
from agent.state.store import StateStore

txaio.use_twisted()

SNAPSHOT_INTERVAL = 5.0  # seconds between snapshots of a changed store (until the Raft log lands)
CHECK_REAP_INTERVAL = 30.0  # Consul's CheckReapInterval


class Agent(MultiService):
    log = txaio.make_logger()

    def __init__(self, config: AgentConfig, reactor) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.store = StateStore()
        self.fsm = FSM(self.store, report_error=self._report_error)
        self.raft = SingleServerLog(self.fsm)
        self.local = LocalState(reactor, self.node, self.raft.apply,
                                runner_factory=self._make_runner,
                                enable_script_checks=getattr(config, "enable_script_checks", False),
                                enable_local_script_checks=getattr(
                                    config, "enable_local_script_checks", False))
        self.antientropy = AntiEntropy(reactor, self.local, self.store, self.node, self.raft.apply,
                                       keep_services=frozenset({"consul"} if config.server else ()),
                                       keep_checks=frozenset({structs.SERF_CHECK_ID}))
        self._reaper: LoopingCall | None = None
        self.sessions = SessionManager(reactor, self.store, self.raft.apply,
                                       lambda: self.config.node_name)
        self.schemas = SchemaSet()
        self.plugin_names: list[str] = []
        self._saved_index = 0
        self._saver: LoopingCall | None = None
        self.facade = AgentFacade(config, reactor, self.store, self.raft.apply, self.local,
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
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_file(self.store, path)
        self._saved_index = self.store.index

    def _restore(self) -> None:
        path = self.snapshot_path()
        if path is None or not path.exists():
            return
        snapshot.load_file(path, self.store)
        self.raft.last_index = self.store.index
        self._saved_index = self.store.index
        self.log.info("restored state at index {index} from {path}", index=self.store.index,
                      path=str(path))

    def startService(self) -> None:
        self._restore()
        # A server shows itself in the catalog the way Consul's leader does.
        node = self.node()
        c = self.config
        consul = structs.Service(
            node=node.name, id="consul", name="consul", port=c.ports.server,
            meta={"non_voter": "false", "raft_version": "3", "serf_protocol_current": "2",
                  "serf_protocol_max": "5", "serf_protocol_min": "1", "version": VERSION})
        serf = structs.Check(node=node.name, check_id=structs.SERF_CHECK_ID,
                             name=structs.SERF_CHECK_NAME, status=structs.PASSING,
                             output=structs.SERF_ALIVE_OUTPUT)
        self.raft.apply(Register(node=node, service=consul if c.server else None, checks=(serf,)))
        self._register_config(self.config)
        self.sessions.start()  # the one server leads: TTL timers run here
        self.local.start()
        self.antientropy.start()
        self._reaper = LoopingCall(self.local.reap_critical)
        self._reaper.clock = self.reactor
        self._reaper.start(CHECK_REAP_INTERVAL, now=False)
        if self.snapshot_path() is not None:
            self._saver = LoopingCall(self.save_snapshot)
            self._saver.clock = self.reactor
            self._saver.start(SNAPSHOT_INTERVAL, now=False)
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
        if self._reaper is not None and self._reaper.running:
            self._reaper.stop()
        if self._saver is not None and self._saver.running:
            self._saver.stop()
        self.save_snapshot()
        return super().stopService()


def make_agent(config: AgentConfig, reactor) -> Agent:
    return Agent(config, reactor)
