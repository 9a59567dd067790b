"""What frontends may ask of this agent's gossip (`facade.gossip`): join, leave, force-leave.

A narrow object over `agent.gossip.lan.LanGossip`, so the HTTP API and the CLI never reach
the pool, Serf or SWIM. `facade.gossip` is None on an agent without gossip (in-process tests);
frontends answer such requests with a clear error. User events and the keyring add their own
methods here (see `agent.events` and the keyring module) as they land.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed

from agent.errors import InvalidRequest, WaypostError
from agent.facade import Member
from agent.gossip.keyring_ops import KeyringOps
from agent.gossip.lan import LanGossip
from agent.gossip.network import host_of
from agent.gossip.serf.errors import SerfError
from agent.gossip.vivaldi import Coordinate


class GossipControl:
    def __init__(self, lan: LanGossip, events: Any = None, wan: Any = None) -> None:
        self._lan = lan
        self._wan = wan  # a server's agent.gossip.wan.WanGossip; None on a client
        self._events = events  # agent.events.UserEvents (None: user events not wired)
        self._keyring = KeyringOps(lan.pool, lan.query_listeners, lan.config.datacenter)
        # Called (a Deferred) before leaving: a server steps aside as Raft leader.
        self.before_leave: Any = None

    def join(self, addresses: list[str], wan: bool = False) -> Deferred:
        """Join the LAN pool (with `wan`, a server's WAN pool) through `addresses`; fires with
        how many answered (0 is a failure the caller reports, as Consul's "Failed to join
        ..."). A client has no WAN pool: Consul's "Must be a server to join WAN cluster"."""
        if wan:
            if self._wan is None:
                return fail(WaypostError("Must be a server to join WAN cluster"))
            return self._wan.join(addresses)
        return self._lan.join(addresses)

    def wan_members(self) -> list[Member] | None:
        """The WAN pool's members (named "<node>.<dc>") as the facade's `Member` rows; None
        on a client, which has no WAN pool (Consul answers `null`)."""
        if self._wan is None:
            return None
        return [Member(m.name, host_of(m.addr), m.port, dict(m.tags), int(m.status))
                for m in self._wan.members()]

    def lan_coordinates(self) -> dict[str, Coordinate]:
        """The network coordinates this agent's LAN pool holds, by node name (its own and
        each member's from its last ack; see `agent.gossip.vivaldi`)."""
        return self._lan.cached_coordinates()

    def wan_coordinates(self) -> dict[str, list[tuple[str, Coordinate]]] | None:
        """A server's view of every datacenter's servers' WAN coordinates; None on a client."""
        return None if self._wan is None else self._wan.datacenter_coordinates()

    def leave(self) -> Deferred:
        """Leave the pool gracefully (the agent then shuts down, as Consul's does). A leave
        already under way is refused ("Leave called in state leaving")."""
        if self.before_leave is not None:
            # A leading server hands leadership over first, so the cluster keeps a leader.
            d = maybeDeferred(self.before_leave)
            d.addErrback(lambda _: None)
            return d.addCallback(lambda _: self._leave())
        return self._leave()

    def _leave(self) -> Deferred:
        try:
            if self._wan is not None:
                # A server leaves the WAN pool first, then the LAN pool, as Consul's.
                wan = self._wan.leave()
                return wan.addBoth(lambda _: self._lan.leave())
            return self._lan.leave()
        except SerfError as exc:
            return fail(InvalidRequest(str(exc)))

    def force_leave(self, node: str, prune: bool = False) -> Deferred:
        """Mark a failed member as left (with `prune`, forget it at once). Consul answers an
        unknown node with an error."""
        if not any(m.name == node for m in self._lan.members()):
            return fail(InvalidRequest(f"agent: No node found with name '{node}'"))
        try:
            self._lan.pool.force_leave(node, prune)
        except SerfError as exc:
            return fail(InvalidRequest(str(exc)))
        return succeed(None)

    def keyring(self, op: str, key: str = "", relay_factor: int = 0) -> Deferred:
        """A keyring operation on the LAN pool (`list-keys`, `install-key`, `use-key`,
        `remove-key`, key in base64); fires with a `KeyringOutcome`. Only servers run them,
        as in Consul."""
        if not self._lan.config.server:
            return fail(WaypostError("keyring operations must run against a server node"))
        return self._keyring.run(op, key, relay_factor)

    # --- user events (agent.events) ---------------------------------------------------

    def fire_event(self, name: str, payload: bytes = b"", node: str = "", service: str = "",
                   tag: str = "") -> Any:
        """Fire Consul's user event `name` (filters are regexps); returns the `Event` with its
        new ID. Raises InvalidRequest for bad parameters or a payload too large."""
        if self._events is None:
            raise WaypostError("user events are not available on this agent")
        return self._events.fire(name, payload, node, service, tag)

    def events(self, name: str = "", min_index: int = 0, wait: float = 0.0) -> Deferred:
        """The recent user events as /v1/event/list blocks for them: fires with (index,
        events); see `agent.events.UserEvents.wait_list`."""
        if self._events is None:
            return succeed((1, []))
        return self._events.wait_list(name, min_index, wait)
