"""This agent's LAN gossip: the pool built from the configuration, and what its members mean
to the rest of the core (`MemberFacts` for the leader's catalog reconcile, the facade's
`Member` rows for /v1/agent/members).

Owns: turning `AgentConfig` into pool settings (Consul's LAN defaults, the Serf LAN port, the
tags of `agent.gossip.serf.consul_tags`, the gossip key), joining the addresses `start_join`
and `retry_join` name (retrying every `retry_interval` up to `retry_max` times, as Consul),
and passing Serf's events on: membership changes to `on_members_changed`, user events to
`on_user_event`. What every pool of the agent shares (`PoolMember`: start, joins and their
retries, members, stats, leave) is here too; `agent.gossip.wan` builds a server's WAN pool on it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import txaio
from twisted.internet.defer import Deferred, succeed

from agent.config.model import AgentConfig
from agent.durations import parse_duration
from agent.gossip.keyring_ops import load_keyring
from agent.gossip.network import HostPort, host_of
from agent.gossip.pool import GossipPool, PoolSettings
from agent.gossip.vivaldi import Coordinate
from agent.gossip.delegate import NodeInfo
from agent.gossip.security import Keyring
from agent.gossip.serf.errors import SerfDecodeError
from agent.gossip.serf.tags import decode_tags
from agent.gossip.serf.config import SerfConfig
from agent.gossip.serf.consul_tags import waypost_agent_tags
from agent.gossip.serf.events import (
    Member, MemberEvent, MemberStatus, QueryDone, QueryReply, UserEvent)
from agent.gossip.swim_config import SwimConfig
from agent.membership import ALIVE, FAILED, LEFT, MemberFacts

txaio.use_twisted()

DEFAULT_RETRY_INTERVAL = 30.0  # Consul's retry_interval


def keyring_of(config: AgentConfig) -> Keyring | None:
    """The gossip keyring: the keyring file in data_dir, else `encrypt` (base64 of 16, 24 or
    32 bytes), or None (Consul's rule, `agent.gossip.keyring_ops.load_keyring`)."""
    return load_keyring(config)


def lan_settings(config: AgentConfig, keyring: Keyring | None) -> PoolSettings:
    port = config.ports.serf_lan
    tags = waypost_agent_tags(node_id=config.node_id, datacenter=config.datacenter,
                              server=config.server, server_port=config.ports.server,
                              expect=config.bootstrap_expect, bootstrap=config.bootstrap)
    settings = config.settings
    datacenter = config.datacenter

    def wrong_datacenter(node: NodeInfo) -> str | None:
        # Consul's LAN pool refuses members of another datacenter (its lanMergeDelegate).
        try:
            dc = decode_tags(node.meta).get("dc", "")
        except SerfDecodeError:
            return f"Member '{node.name}' has undecodable tags"
        if dc and dc != datacenter:
            return f"Member '{node.name}' part of wrong datacenter '{dc}'"
        return None

    def merge(nodes: list[NodeInfo]) -> str | None:
        for node in nodes:
            problem = wrong_datacenter(node)
            if problem:
                return problem
        return None
    return PoolSettings(
        name=config.node_name, bind=(config.bind_addr, port), advertise=(config.advertise, port),
        tags=tags, swim=SwimConfig.lan(), serf=SerfConfig(node_name=config.node_name, tags=tags),
        keyring=keyring,
        verify_incoming=bool(settings.get("encrypt_verify_incoming", True)),
        verify_outgoing=bool(settings.get("encrypt_verify_outgoing", True)),
        alive_filter=wrong_datacenter, merge_filter=merge)


def split_address(address: str, default_port: int) -> HostPort:
    """"host", "host:port", "[v6]:port" as Consul's join takes them."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port)
    return address, default_port


def member_facts(member: Member) -> MemberFacts:
    status = {MemberStatus.ALIVE: ALIVE, MemberStatus.LEAVING: ALIVE,
              MemberStatus.FAILED: FAILED}.get(member.status, LEFT)
    return MemberFacts(member.name, host_of(member.addr), member.tags.get("id", ""), status)


@dataclass(frozen=True)
class JoinPlan:
    """The joins the configuration asks of one pool: `start_join` once at start, `retry_join`
    every `retry_interval` until one answers (at most `retry_max` times; 0: no limit)."""

    default_port: int  # the pool's Serf port, for addresses that name none
    start_join: tuple[str, ...] = ()
    retry_join: tuple[str, ...] = ()
    retry_interval: float = DEFAULT_RETRY_INTERVAL
    retry_max: int = 0


def retry_interval_of(config: AgentConfig, key: str) -> float:
    """`retry_interval` / `retry_interval_wan` in seconds (Consul's default 30s)."""
    value = config.settings.get(key)
    return parse_duration(value) if value else DEFAULT_RETRY_INTERVAL


class PoolMember:
    """One pool of this agent (the LAN pool, or a server's WAN pool) with the joins its
    configuration asks for; subclasses say what its events mean (`_event`)."""

    log = txaio.make_logger()
    # How log lines name the pool beyond the LAN (Consul's "cluster=WAN"); "" for the LAN.
    cluster = ""

    def __init__(self, reactor, settings: PoolSettings, plan: JoinPlan,
                 rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self._plan = plan
        self.pool = GossipPool(reactor, settings, self._event, rng=rng)
        self._retry = None

    def _event(self, event: Any) -> None:
        if isinstance(event, MemberEvent):
            member = event.member
            self.log.info("serf: {kind}: {name} {addr}", kind=_event_word(event),
                          name=member.name, addr=host_of(member.addr))

    def _suffix(self) -> str:
        return f": cluster={self.cluster}" if self.cluster else ""

    def listen(self) -> None:
        self.pool.listen()

    def start(self) -> None:
        self.pool.start()
        host, port = self.pool.settings.bind
        self.log.info("Started Serf {pool}: address={addr}:{port}", pool=self.cluster or "LAN",
                      addr=host, port=port)
        if self._plan.start_join:
            self.join(list(self._plan.start_join)).addCallback(
                lambda n: n or self.log.warn("start_join{suffix}: no agent answered",
                                             suffix=self._suffix()))
        if self._plan.retry_join:
            self._retry_join(1)

    def _retry_join(self, attempt: int) -> None:
        def done(joined: int) -> None:
            if joined:
                self.log.info("Join cluster completed. Synced with {n} initial agents{suffix}",
                              n=joined, suffix=self._suffix())
                return
            limit = self._plan.retry_max
            if limit and attempt >= limit:
                self.log.error("agent: max join retry exhausted, exiting{suffix}",
                               suffix=self._suffix())
                return
            interval = self._plan.retry_interval
            self.log.warn("Join cluster failed, will retry: {cluster}retry_interval={i}",
                          cluster=f"cluster={self.cluster} " if self.cluster else "",
                          i=f"{interval:g}s")
            self._retry = self._reactor.callLater(interval, self._retry_join, attempt + 1)
        self.join(list(self._plan.retry_join)).addCallback(done)

    def join(self, addresses: list[str]) -> Deferred:
        """Join through each address; fires with how many answered."""
        try:
            targets = [split_address(a, self._plan.default_port) for a in addresses]
        except ValueError:
            return succeed(0)
        return self.pool.join(targets)

    def members(self) -> list[Member]:
        return self.pool.members()

    def coordinate(self) -> Coordinate:
        """This node's network coordinate in the pool (Serf's GetCoordinate)."""
        return self.pool.coordinates.coordinate

    def cached_coordinates(self) -> dict[str, Coordinate]:
        """The last coordinate each member sent in an ack, and this node's own, by member
        name (Serf's coordinate cache; a member leaves it when reaped)."""
        return dict(self.pool.coordinates.cache)

    def stats(self) -> dict[str, str]:
        """Serf's figures as /v1/agent/self shows them under Stats.serf_lan / serf_wan."""
        members = self.pool.members()
        serf = self.pool.serf

        def count(status: MemberStatus) -> str:
            return str(sum(1 for m in members if m.status == status))
        return {"encrypted": str(self.pool.keyring is not None).lower(),
                "failed": count(MemberStatus.FAILED), "left": count(MemberStatus.LEFT),
                "members": str(len(members)), "health_score": str(self.pool.swim.health_score),
                "member_time": str(serf.clock.time()), "event_time": str(serf.event_clock.time()),
                "query_time": str(serf.query_clock.time())}

    def leave(self) -> Deferred:
        return self.pool.leave()

    def stop(self) -> Deferred:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        return self.pool.stop()


class LanGossip(PoolMember):
    """The LAN pool of one agent and the joins the configuration asks for."""

    def __init__(self, reactor, config: AgentConfig, *,
                 on_members_changed: Callable[[], None] = lambda: None,
                 on_user_event: Callable[[UserEvent], None] = lambda event: None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._on_members_changed = on_members_changed
        self._on_user_event = on_user_event
        # Who hears the answers to queries this node started (Serf's QueryReply/QueryDone).
        self.query_listeners: list[Callable[[Any], None]] = []
        plan = JoinPlan(default_port=config.ports.serf_lan, start_join=tuple(config.start_join),
                        retry_join=tuple(config.retry_join),
                        retry_interval=retry_interval_of(config, "retry_interval"),
                        retry_max=int(config.settings.get("retry_max", 0) or 0))
        super().__init__(reactor, lan_settings(config, keyring_of(config)), plan, rng=rng)

    def _event(self, event: Any) -> None:
        if isinstance(event, MemberEvent):
            super()._event(event)
            member = event.member
            if (self.config.server and (self.config.dev or not self.config.data_dir)
                    and member.name != self.config.node_name
                    and member.tags.get("wp") == "server"
                    and event.type.value == "member-join"):
                # Not silent: a -dev server runs the one-member log and never replicates.
                self.log.warn("another Waypost server, {name}, is in this pool: this server "
                              "runs in -dev mode (in memory, alone) and does not replicate "
                              "with it", name=member.name)
            self._on_members_changed()
        elif isinstance(event, UserEvent):
            self._on_user_event(event)
        elif isinstance(event, (QueryReply, QueryDone)):
            for listener in list(self.query_listeners):  # e.g. the keyring operations
                listener(event)

    def facts(self) -> list[MemberFacts]:
        return [member_facts(m) for m in self.pool.members()]


def _event_word(event: MemberEvent) -> str:
    return {"member-join": "EventMemberJoin", "member-leave": "EventMemberLeave",
            "member-failed": "EventMemberFailed", "member-update": "EventMemberUpdate",
            "member-reap": "EventMemberReap"}[event.type.value]
