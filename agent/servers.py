"""The servers of this datacenter as gossip shows them, and cluster formation from them.

`ServerDirectory.update(members)` runs on every change of the LAN pool: it tells the Raft log
where each server's port is (servers are Raft peers by node ID; their addresses come from
gossip, as Consul's server lookup), and bootstraps the cluster when the configuration asks:

- `bootstrap = true`: this server alone, at its first start (`RaftLog.bootstrap` does nothing
  for a server that already has a configuration, a term or a log).
- `bootstrap_expect = N`: once N alive servers of this datacenter expecting N are seen, every
  one of them is asked for its Raft peers (`Status.Peers` over the server RPC); if none has any,
  the configuration of those servers is written. Each of the N servers does the same with the
  same servers and writes the same first entry, so the cluster is bootstrapped exactly once
  even when they all start together. A server that finds peers elsewhere stops trying: an
  existing cluster's leader adds it (Consul's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import txaio
from twisted.internet.defer import DeferredList

from agent.gossip.network import host_of
from agent.gossip.serf.consul_tags import WAYPOST_EXPECT_TAG, waypost_server_port
from agent.gossip.serf.events import MemberStatus

txaio.use_twisted()

PEERS_CALL_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ServerMember:
    """A Waypost server of this datacenter, as the LAN pool knows it."""

    server_id: str
    name: str
    address: str  # its server port, "host:port"
    serf_address: str  # its Serf LAN "host:port"
    status: MemberStatus
    expect: int


def server_members(members: list, datacenter: str) -> list[ServerMember]:
    out = []
    for m in members:
        port = waypost_server_port(m.tags, datacenter)
        sid = m.tags.get("id", "")
        if port is None or not sid:
            continue
        try:
            expect = int(m.tags.get(WAYPOST_EXPECT_TAG, "0"))
        except ValueError:
            expect = 0
        host = host_of(m.addr)
        out.append(ServerMember(sid, m.name, f"{host}:{port}", f"{host}:{m.port}",
                                MemberStatus(m.status), expect))
    return out


class ServerDirectory:
    log = txaio.make_logger()

    def __init__(self, raft: Any, *, server_id: str, datacenter: str, bootstrap: bool,
                 expect: int, call: Callable[[str, str, Any, float], Any]) -> None:
        """`call(address, method, body, timeout)` is an RPC to another server (a Deferred)."""
        self._raft = raft
        self._id = server_id
        self._datacenter = datacenter
        self._bootstrap = bootstrap
        self._expect = expect
        self._call = call
        self._asking = False
        self._gave_up = False
        self.servers: dict[str, ServerMember] = {}

    def start(self) -> None:
        if self._bootstrap and not self._raft.bootstrapped:
            self._raft.bootstrap({self._id: self._raft.address})

    def update(self, members: list) -> None:
        found = {s.server_id: s for s in server_members(members, self._datacenter)}
        self.servers = found
        for s in found.values():
            self._raft.set_address(s.server_id, s.address, s.name)
            self._raft.remember_serf(s.server_id, s.serf_address)
        self._maybe_bootstrap()

    def _maybe_bootstrap(self) -> None:
        if (self._expect <= 0 or self._asking or self._gave_up or self._raft.bootstrapped):
            return
        ready = sorted((s for s in self.servers.values()
                        if s.status == MemberStatus.ALIVE and s.expect == self._expect),
                       key=lambda s: s.server_id)
        if len(ready) < self._expect or self._id not in {s.server_id for s in ready}:
            return
        others = [s for s in ready if s.server_id != self._id]
        self._asking = True
        asks = [self._call(s.address, "Status.Peers", {}, PEERS_CALL_TIMEOUT) for s in others]
        DeferredList(asks, consumeErrors=True).addCallback(self._peers_answered, ready, others)

    def _peers_answered(self, results: list, ready: list[ServerMember],
                        others: list[ServerMember]) -> None:
        self._asking = False
        if self._raft.bootstrapped:
            return
        for (ok, value), server in zip(results, others):
            if not ok:
                self.log.info("bootstrap: could not ask {name} for its Raft peers ({why}); "
                              "retrying", name=server.name, why=value.getErrorMessage())
                return  # the next change of the pool (or the periodic update) retries
            if value:
                self.log.warn("Existing Raft peers reported by server {name}, disabling "
                              "bootstrap mode", name=server.name)
                self._gave_up = True
                return
        self._raft.bootstrap({s.server_id: s.address for s in ready})
