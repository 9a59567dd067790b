"""The composition root of the core: one agent, a server or a client, behind one facade.

`make_agent(config, reactor)` returns an `Agent` (a MultiService) whose `facade` is what the
gateway hands to frontends. A server agent owns a `ServerCore` (store, FSM, log, leader duties,
endpoints, see `agent.server`); a client agent has no store and is given the endpoints of a
server to reach (in this issue only in process; the gossip issue adds RPC). Both keep their own
services and checks in a local state that syncs through a catalog client. Nothing here knows
about frontends.
"""

from __future__ import annotations

import os
import platform
from collections import deque
from typing import Any, Callable

import txaio
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.threadpool import ThreadPool

from agent import structs
from agent.cluster_operator import RemoteOperator, ServerOperator
from agent.config.model import VERSION, AgentConfig
from agent.errors import InvalidRequest
from agent.events import UserEvents
from agent.exec import RemoteExec
from agent.facade import CATALOG_TABLES, STALE, AgentFacade, Member, QueryOptions, queries
from agent.local.catalog import InProcessCatalog
from agent.local.compose import build_local, check_update_interval_of
from agent.local.persist import LocalPersistence, Saved
from agent.local.state import CONFIG
from agent.gossip.control import GossipControl
from agent.gossip.lan import LanGossip
from agent.gossip.wan import Datacenters, WanGossip
from agent.gossip.network import host_of
from agent.gossip.serf.consul_tags import waypost_server_port
from agent.gossip.serf.events import MemberStatus
from agent.loops import LoopSet, ResilientLoop
from agent.membership import MemberFacts
from agent.rpc.remote import EndpointsHandler, RemoteEndpoints
from agent.rpc.transport import RPCServerFactory
from agent.schemas import SchemaSet
from agent.server import DataDirError, ServerCore, SnapshotError

__all__ = ["Agent", "DataDirError", "SnapshotError", "make_agent"]

txaio.use_twisted()

CHECK_REAP_INTERVAL = 30.0  # Consul's CheckReapInterval
SERVER_LOOK_INTERVAL = 1.0  # a server re-examines the pool's servers (bootstrap, autopilot)
USER_EVENT_BUFFER = 256  # Consul's agent keeps the last 256 user events it saw
_LOCAL_READ = QueryOptions(consistency=STALE)


class Agent(MultiService):
    """One agent's core. Its background loops are in `loops` (by name: "anti-entropy",
    "check-reaper"), each counting the ticks that failed; a server's leader duties are in
    `leader`. `server` is None on a client agent."""

    log = txaio.make_logger()

    def __init__(self, config: AgentConfig, reactor, *,
                 persistence: LocalPersistence | None = None, pool: ThreadPool | None = None,
                 endpoints: Any = None, gossip: bool = False) -> None:
        """A server agent when `config.server`; else a client agent reaching `endpoints` (an
        object with the server endpoints' methods). With `gossip`, the agent is a member of
        the LAN pool on the Serf LAN port (real agents); without, it is alone (in-process
        tests)."""
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.gossip: LanGossip | None = None
        self.wan: WanGossip | None = None  # a server's WAN pool (real agents)
        self.datacenters: Datacenters | None = None
        if gossip:
            self.gossip = LanGossip(reactor, config, on_members_changed=self._members_changed,
                                    on_user_event=self._user_event)
            if config.server:
                self.wan = WanGossip(reactor, config)
        if config.server:
            self.server: ServerCore | None = ServerCore(config, reactor, self.node, pool=pool,
                                                        members=self._member_facts,
                                                        replicated=gossip)
            endpoints = self.server.endpoints
            # The server's parts, by the names tests and tools know them.
            self.store, self.fsm, self.raft = self.server.store, self.server.fsm, self.server.raft
            self.sessions, self.leader = self.server.sessions, self.server.leader
            if self.wan is not None:
                # Requests naming another datacenter go to its servers, found in the WAN pool.
                self.datacenters = Datacenters(reactor, self.wan)
                self.server.endpoints.other_datacenters = self.datacenters
        elif endpoints is None and self.gossip is not None:
            # A client agent reaches the servers gossip names, over the server RPC.
            self.server = None
            endpoints = RemoteEndpoints(reactor, self.server_addresses)
        elif endpoints is None:
            raise ValueError("a client agent needs the endpoints of a server to reach")
        else:
            self.server = None
        self.endpoints = endpoints
        self._rpc_port = None  # a server's listener on the server port (real agents)
        # API registrations live in data_dir whenever there is one, -dev or not, as in Consul.
        if persistence is None and config.data_dir:
            persistence = LocalPersistence(config.data_dir)
        self.persistence = persistence
        # This agent's services and checks reach the catalog through the endpoints, as a
        # client agent's reach a server over RPC.
        local = build_local(
            reactor, InProcessCatalog(endpoints.write, endpoints.read), self.node,
            runner_factory=self._make_runner,
            enable_script_checks=getattr(config, "enable_script_checks", False),
            enable_local_script_checks=getattr(config, "enable_local_script_checks", False),
            persistence=self.persistence,
            check_update_interval=check_update_interval_of(config.settings),
            keep_services=frozenset({"consul"} if config.server else ()),
            keep_checks=frozenset({structs.SERF_CHECK_ID}),
            cluster_size=lambda: len(self.members()))
        self.local, self.antientropy = local.state, local.antientropy
        self.plugin_names: list[str] = []
        self.user_events: deque = deque(maxlen=USER_EVENT_BUFFER)
        self.user_event_listeners: list[Callable[[Any], None]] = []
        # Consul's user events (/v1/event) and remote exec, fed by the pool's user events.
        self.remote_exec = RemoteExec(
            reactor, config.node_name, read=endpoints.read, write=endpoints.write,
            enabled=lambda: not self.config.settings.get("disable_remote_exec", True))
        self.events = UserEvents(
            reactor, config.node_name,
            send=self.gossip.pool.user_event if self.gossip is not None else None,
            services=lambda: self.local.services, remote_exec=self.remote_exec.handle)
        self.user_event_listeners.append(self.events.receive)
        self.loops = LoopSet()
        self.loops.add(self.antientropy.loop)
        self.loops.add(ResilientLoop(reactor, "check-reaper", self.local.reap_critical,
                                     CHECK_REAP_INTERVAL))
        self.schemas = SchemaSet()
        self.facade = AgentFacade(config, reactor, endpoints, local.endpoints,
                                  self.schemas, self.members, self.stats,
                                  plugin_names=lambda: list(self.plugin_names))
        if self.server is not None:
            if self.server.replicated:
                self.server.raft.add_leader_known_listener(self.facade.set_leader_known)
            else:
                self.server.raft.add_leadership_listener(self.facade.set_leader_known)
            self.facade.operator = ServerOperator(self.server, config.node_name)
        elif isinstance(endpoints, RemoteEndpoints):
            self.facade.operator = RemoteOperator(endpoints)
        if self.gossip is not None:
            self.facade.gossip = GossipControl(self.gossip, events=self.events, wan=self.wan)
            if self.server is not None:
                self.facade.gossip.before_leave = self.server.step_aside
            # Another datacenter is for the endpoints to judge: a server's WAN pool knows
            # them, a client agent asks its server (both answer "No path to datacenter").
            self.facade.forwards_datacenters = True

    def _make_runner(self, spec, notifier):
        from agent.checks.factory import make_runner
        return make_runner(spec, self.reactor, notifier, store_reader=self._alias_statuses,
                           watch=self._watch_catalog, local_node=self.config.node_name,
                           docker_host=os.environ.get("DOCKER_HOST"))

    def _alias_statuses(self, node: str, service_id: str) -> list[str] | None:
        """Statuses an alias check aggregates; None when what it names does not exist. Read
        through the read seam (a client agent has no store), from the local replica."""
        found = self.facade.read(queries.CatalogNodeServices(node), _LOCAL_READ)
        if isinstance(found, Deferred):  # an answer that must wait: try again on the change
            found.addErrback(lambda f: None)
            return None
        if found.value is None:
            return None
        checks = self.facade.read(queries.HealthNodeChecks(node), _LOCAL_READ).value
        if service_id:
            if service_id not in found.value.services:
                return None
            return [c.status for c in checks if not c.service_id or c.service_id == service_id]
        return [c.status for c in checks]

    def _watch_catalog(self, callback):
        """Call `callback()` once, on the next change of the catalog (alias checks)."""
        fired = []

        def changed(index: int, tables: frozenset[str]) -> None:
            if tables & CATALOG_TABLES and not fired:
                fired.append(True)
                handle.cancel()
                callback()
        handle = _Subscription(self.facade.on_change(changed))
        return handle

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
        if self.gossip is not None:
            return [Member(m.name, host_of(m.addr), m.port, dict(m.tags), int(m.status))
                    for m in self.gossip.members()]
        return [Member(self.config.node_name, self.config.advertise, self.config.ports.serf_lan,
                       self.member_tags())]

    def server_addresses(self) -> list[str]:
        """"host:port" of the server RPC of every alive Waypost server of this datacenter."""
        if self.gossip is None:
            return []
        found = []
        for m in self.gossip.members():
            port = waypost_server_port(m.tags, self.config.datacenter)
            if port is not None and m.status == MemberStatus.ALIVE:
                found.append(f"{host_of(m.addr)}:{port}")
        return sorted(found)

    def _member_facts(self) -> list[MemberFacts]:
        return self.gossip.facts() if self.gossip is not None else []

    def _members_changed(self) -> None:
        if self.server is not None:
            self.server.members_changed(self.gossip.members())
            self.server.leader.reconcile_soon()

    def _look_at_servers(self) -> None:
        # Bootstrapping retries and autopilot's promotions wait on time, not only on changes.
        if self.server is not None and self.gossip is not None:
            self.server.members_changed(self.gossip.members())

    def _user_event(self, event) -> None:
        self.user_events.append(event)
        for listener in list(self.user_event_listeners):
            listener(event)

    def stats(self) -> dict:
        local = self.local
        stats = {
            "agent": {"check_monitors": "0",
                      "check_ttls": str(sum(1 for lc in local.checks.values() if lc.spec.ttl > 0)),
                      "checks": str(len(local.checks)), "services": str(len(local.services))},
            "build": {"prerelease": "", "revision": "", "version": VERSION},
            "consul": {"acl": "disabled",
                       "known_datacenters": str(len(self.wan.datacenters())
                                                if self.wan is not None else 1),
                       "server": str(self.server is not None).lower()},
            "runtime": {"arch": platform.machine(), "cpu_count": str(os.cpu_count()),
                        "os": platform.system().lower(),
                        "version": f"python{platform.python_version()}"},
        }
        if self.server is not None:
            raft = self.server.raft
            stats["consul"].update({"bootstrap": "false",
                                    "leader": str(raft.is_leader).lower(),
                                    "leader_addr": raft.leader_address})
            stats["consul"] = dict(sorted(stats["consul"].items()))
            stats["raft"] = self.server.raft_stats()
        if self.gossip is not None:
            stats["serf_lan"] = self.gossip.stats()
        if self.wan is not None:
            stats["serf_wan"] = self.wan.stats()
        order = ("agent", "build", "consul", "raft", "runtime", "serf_lan", "serf_wan")
        return {key: stats[key] for key in order if key in stats}

    def load_state(self) -> None:
        """A server's state from data_dir (see `ServerCore.load_state`); nothing on a client."""
        if self.server is not None:
            self.server.load_state()

    def startService(self) -> None:
        if self.server is not None:
            self.server.start()
        saved = self.persistence.load() if self.persistence is not None else Saved()
        self.local.expect_saved_states(saved.states)
        self._register_config(self.config)
        self.local.restore(saved)  # API registrations of the last run; the config's win
        self.local.start()
        # Consul's state syncer runs a full sync at once, then on its interval.
        self.antientropy.start(now=True)
        self.loops["check-reaper"].start()
        if self.gossip is not None:
            if self.server is not None:
                # Client agents reach this server's endpoints on the server port.
                self._rpc_port = self.reactor.listenTCP(
                    self.config.ports.server,
                    RPCServerFactory(EndpointsHandler(self.endpoints, self.facade.operator),
                                     self.server.server_port_protocols()),
                    interface=self.config.bind_addr)
                if self.server.replicated:
                    self.loops.add(ResilientLoop(self.reactor, "servers", self._look_at_servers,
                                                 SERVER_LOOK_INTERVAL))
                    self.loops["servers"].start()
            self.gossip.start()
            rejoin = self._rejoin_addresses()
            if rejoin:
                # Consul rejoins the members it knew (its Serf snapshot); Waypost's servers
                # rejoin the servers of their address book.
                self.gossip.join(rejoin).addErrback(lambda f: None)
            if self.wan is not None:
                self.wan.start()
        super().startService()

    def _rejoin_addresses(self) -> list[str]:
        server = self.server
        if server is None or not server.replicated:
            return []
        own = f"{self.config.advertise}:{self.config.ports.serf_lan}"
        return [a for a in server.raft.serf_addresses if a != own]

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
        self.remote_exec.stop()
        if self.gossip is not None:
            gossip, wan = self.gossip, self.wan
            leaving = maybeDeferred(lambda: None)
            if self.config.leave_on_terminate:
                # A server leaves the WAN pool first, then the LAN pool (Consul's order).
                leaving.addCallback(lambda _: self.server.step_aside()
                                    if self.server is not None else None)
                leaving.addErrback(lambda _: None)
                if wan is not None:
                    leaving.addCallback(lambda _: wan.leave())
                leaving.addBoth(lambda _: gossip.leave())
            if wan is not None:
                leaving.addBoth(lambda _: wan.stop())
            leaving.addBoth(lambda _: gossip.stop())
            leaving.addBoth(lambda _: self._stop_core())
            return leaving
        return self._stop_core()

    def _stop_core(self) -> Deferred:
        if self._rpc_port is not None:
            self._rpc_port.stopListening()
            self._rpc_port = None
        if isinstance(self.endpoints, RemoteEndpoints):
            self.endpoints.stop()
        if self.datacenters is not None:
            self.datacenters.stop()
        self.facade.stop()
        self.local.stop()
        self.antientropy.stop()
        self.loops.stop()
        d = self.server.stop() if self.server is not None else maybeDeferred(lambda: None)
        d.addBoth(lambda _: super(Agent, self).stopService())
        return d


class _Subscription:
    """A watch-like handle over an `on_change` subscription (alias checks cancel it)."""

    def __init__(self, unsubscribe) -> None:
        self._unsubscribe = unsubscribe
        self.active = True

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._unsubscribe()


def make_agent(config: AgentConfig, reactor, *, persistence: LocalPersistence | None = None,
               pool: ThreadPool | None = None, endpoints: Any = None,
               gossip: bool = False) -> Agent:
    """The core of one agent; `persistence` defaults to the real disk, `pool` to the log's own
    thread pool; a client agent (`server = false`) needs the `endpoints` of a server; `gossip`
    makes it a member of the LAN pool (real agents)."""
    return Agent(config, reactor, persistence=persistence, pool=pool, endpoints=endpoints,
                 gossip=gossip)
