"""A server's WAN pool, and the way from it to the other datacenters.

Owns: turning `AgentConfig` into the WAN pool's settings (memberlist's WAN timing with
Consul's `gossip_wan` defaults, Consul's fast dev values under `-dev`, then the `gossip_wan`
block; the Serf WAN port; the member name "<node>.<dc>" Consul gives its WAN members; Waypost's
server tags; the WAN keyring in data_dir/serf/remote.keyring), the joins `start_join_wan` and
`retry_join_wan` ask for, and `Datacenters`: which datacenters are reachable (each with an
alive Waypost server in the WAN pool) and the server endpoints of each, reached over the server
RPC with `agent.rpc.remote.RemoteEndpoints`.

Only servers are WAN members, as in Consul (a client's WAN join is refused with Consul's "Must
be a server to join WAN cluster"). Like Consul's wanMergeDelegate, the pool refuses to merge
with a member that is not a server. Consul servers refuse Waypost servers (which advertise
role=node, see `agent.gossip.serf.consul_tags`), so Waypost refuses Consul servers in turn: a
WAN pool holds Waypost servers only.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import txaio

from agent.config.model import AgentConfig
from agent.durations import parse_duration
from agent.errors import UnknownDatacenter
from agent.gossip.delegate import NodeInfo
from agent.gossip.keyring_ops import PersistentKeyring, load_keyring
from agent.gossip.lan import JoinPlan, PoolMember, retry_interval_of
from agent.gossip.network import host_of
from agent.gossip.pool import PoolSettings
from agent.gossip.serf.config import SerfConfig
from agent.gossip.serf.consul_tags import is_consul_server, waypost_agent_tags, waypost_server_port
from agent.gossip.serf.errors import SerfDecodeError
from agent.gossip.serf.events import MemberEvent, MemberStatus
from agent.gossip.serf.tags import decode_tags
from agent.gossip.swim_config import SwimConfig
from agent.gossip.vivaldi import Coordinate
from agent.rpc.remote import RemoteEndpoints

txaio.use_twisted()

WAN_KEYRING_FILE = os.path.join("serf", "remote.keyring")  # Consul's SerfWANKeyring
NOT_A_SERVER = "Must be a server to join WAN cluster"  # Consul's text, for clients
# Consul's gossip_wan defaults (memberlist's DefaultWANConfig but 3 gossip nodes), and what
# its -dev mode sets so a dead datacenter is noticed within a second.
_CONSUL_WAN = {"gossip_nodes": 3}
_DEV_WAN = {"gossip_interval": 0.1, "probe_interval": 0.1, "probe_timeout": 0.1,
            "suspicion_mult": 3}
_DURATIONS = ("gossip_interval", "probe_interval", "probe_timeout")
_COUNTS = ("gossip_nodes", "suspicion_mult", "retransmit_mult")


def wan_member_name(config: AgentConfig) -> str:
    """Consul's WAN name of a server: "<node>.<datacenter>"."""
    return f"{config.node_name}.{config.datacenter}"


def wan_swim_config(config: AgentConfig) -> SwimConfig:
    """memberlist's WAN timing with Consul's defaults, its dev values under -dev, then what
    the `gossip_wan` block sets (durations as Go strings or nanoseconds)."""
    tuned: dict[str, Any] = dict(_CONSUL_WAN)
    if config.dev:
        tuned.update(_DEV_WAN)
    block = config.settings.get("gossip_wan") or {}
    if isinstance(block, Mapping):
        for key in _DURATIONS:
            if key in block:
                tuned[key] = parse_duration(block[key])
        for key in _COUNTS:
            if key in block:
                tuned[key] = int(block[key])
    try:
        return replace(SwimConfig.wan(), **tuned)
    except ValueError as exc:
        raise ValueError(f"gossip_wan: {exc}") from None


def wan_keyring(config: AgentConfig) -> PersistentKeyring | None:
    """The WAN pool's keyring by Consul's rule: serf/remote.keyring when there is one, else
    `encrypt` (written to that file), else None; no file under -dev or with
    `disable_keyring_file`, as the LAN's."""
    return load_keyring(config, WAN_KEYRING_FILE, pool="WAN")


def _not_a_server(node: NodeInfo) -> str | None:
    # Consul's wanMergeDelegate: every member of the WAN pool is a server.
    try:
        tags = decode_tags(node.meta)
    except SerfDecodeError:
        return f"Member '{node.name}' has undecodable tags"
    if is_consul_server(tags):
        # Consul's own WAN pool refuses Waypost servers (role=node), so a pool with both
        # would be one-sided: refuse it here too, saying why.
        return (f"Member '{node.name}' is a Consul server: Consul's WAN pool does not take "
                "Waypost servers")
    if waypost_server_port(tags) is None:
        return f"Member '{node.name}' is not a server"
    return None


def wan_settings(config: AgentConfig, keyring: PersistentKeyring | None) -> PoolSettings:
    port = config.ports.serf_wan
    name = wan_member_name(config)
    tags = waypost_agent_tags(node_id=config.node_id, datacenter=config.datacenter,
                              server=True, server_port=config.ports.server)
    swim = wan_swim_config(config)
    serf = replace(SerfConfig(node_name=name, tags=tags).wan(),
                   gossip_interval=swim.gossip_interval)
    settings = config.settings
    advertise = settings.get("advertise_addr_wan") or config.advertise

    def merge(nodes: list[NodeInfo]) -> str | None:
        for node in nodes:
            problem = _not_a_server(node)
            if problem:
                return problem
        return None
    return PoolSettings(
        name=name, bind=(config.bind_addr, port), advertise=(advertise, port), tags=tags,
        swim=swim, serf=serf, keyring=keyring,
        verify_incoming=bool(settings.get("encrypt_verify_incoming", True)),
        verify_outgoing=bool(settings.get("encrypt_verify_outgoing", True)),
        merge_filter=merge)


class WanGossip(PoolMember):
    """A server's WAN pool: the servers of every datacenter, with the joins the configuration
    asks for."""

    cluster = "WAN"

    def __init__(self, reactor, config: AgentConfig, *, rng: random.Random | None = None) -> None:
        if not config.server:
            raise ValueError(NOT_A_SERVER)
        self.config = config
        plan = JoinPlan(default_port=config.ports.serf_wan,
                        start_join=tuple(config.settings.get("start_join_wan") or ()),
                        retry_join=tuple(config.settings.get("retry_join_wan") or ()),
                        retry_interval=retry_interval_of(config, "retry_interval_wan"),
                        retry_max=int(config.settings.get("retry_max_wan", 0) or 0))
        super().__init__(reactor, wan_settings(config, wan_keyring(config)), plan, rng=rng)

    def _event(self, event: Any) -> None:
        if isinstance(event, MemberEvent):
            super()._event(event)

    def servers_of(self, datacenter: str) -> list[str]:
        """"host:port" of the server RPC of every alive Waypost server of `datacenter`."""
        found = []
        for m in self.pool.members():
            port = waypost_server_port(m.tags, datacenter)
            if port is not None and m.status == MemberStatus.ALIVE:
                found.append(f"{host_of(m.addr)}:{port}")
        return sorted(found)

    def _alive_servers(self) -> list[tuple[str, Any]]:
        # (datacenter, member) for every alive Waypost server of the pool.
        return [(m.tags.get("dc", ""), m) for m in self.pool.members()
                if m.status == MemberStatus.ALIVE and waypost_server_port(m.tags) is not None
                and m.tags.get("dc", "")]

    def datacenters(self) -> list[str]:
        """Every datacenter with an alive Waypost server, nearest first as Consul orders them
        (its router's GetDatacentersByDistance): by the median estimated RTT from this server
        to that datacenter's servers, ours counting as 0 and a server without a coordinate
        yet as infinitely far; equal distances by name."""
        own = self.config.datacenter
        mine = self.coordinate()
        cache = self.cached_coordinates()
        rtts: dict[str, list[float]] = {own: [0.0]}
        for dc, m in self._alive_servers():
            other = cache.get(m.name)
            if dc == own:
                rtt = 0.0
            elif other is None or not other.compatible(mine):
                rtt = math.inf
            else:
                rtt = mine.distance(other)
            rtts.setdefault(dc, []).append(rtt)
        median = {dc: sorted(values)[len(values) // 2] for dc, values in rtts.items()}
        return sorted(sorted(median), key=lambda dc: median[dc])  # stable: ties stay by name

    def datacenter_coordinates(self) -> dict[str, list[tuple[str, Coordinate]]]:
        """/v1/coordinate/datacenters: the coordinate this server holds for each alive server
        of each datacenter (node names without the ".<dc>" Consul's WAN names carry), from its
        own WAN pool's view; servers not heard from yet are left out, as in Consul."""
        cache = self.cached_coordinates()
        out: dict[str, list[tuple[str, Coordinate]]] = {self.config.datacenter: []}
        for dc, m in self._alive_servers():
            coord = cache.get(m.name)
            if coord is not None:
                node = m.name[:-len(dc) - 1] if m.name.endswith("." + dc) else m.name
                out.setdefault(dc, []).append((node, coord))
        return out


class Datacenters:
    """The way to other datacenters: `names()` for /v1/catalog/datacenters, `endpoints(dc)`
    for a request that names another one (`agent.rpc.server.ServerEndpoints` forwards it)."""

    def __init__(self, reactor, wan: WanGossip) -> None:
        self._reactor = reactor
        self._wan = wan
        self._remote: dict[str, RemoteEndpoints] = {}

    def names(self) -> list[str]:
        return self._wan.datacenters()

    def endpoints(self, datacenter: str) -> RemoteEndpoints:
        """The server endpoints of `datacenter`; UnknownDatacenter (Consul's "No path to
        datacenter") when the WAN pool has no alive server of it."""
        if not self._wan.servers_of(datacenter):
            raise UnknownDatacenter(datacenter)
        remote = self._remote.get(datacenter)
        if remote is None:
            remote = RemoteEndpoints(self._reactor,
                                     lambda: self._wan.servers_of(datacenter))
            self._remote[datacenter] = remote
        return remote

    def stop(self) -> None:
        remote, self._remote = self._remote, {}
        for endpoints in remote.values():
            endpoints.stop()
