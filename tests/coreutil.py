"""An in-process core for tests of frontends: state store, FSM, the one-member log, the server
endpoints and the facade, wired as the agent wires them, with a leader tests can take away."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock

from agent.config.model import AgentConfig
from agent.facade import AgentFacade
from agent.fsm.apply import FSM
from agent.rpc.server import ServerEndpoints
from agent.raft.single import SingleServerLog
from agent.state.store import StateStore


class ControlledLog(SingleServerLog):
    """The one-member log, whose leadership and last contact a test can change."""

    def __init__(self, fsm: FSM, clock: Clock) -> None:
        super().__init__(clock, fsm, address="127.0.0.1:8300",
                         configuration={"servers": [{"address": "127.0.0.1:8300"}]})
        self.leader = True
        self.contact = 0.0  # seconds since the leader was heard from
        self.start()

    @property
    def is_leader(self) -> bool:
        return self.leader

    @property
    def leader_address(self) -> str:
        return "127.0.0.1:8300" if self.leader else ""

    def last_contact(self) -> float:
        return self.contact


class Core:
    """`facade` as frontends get it; `apply(command)` commits a command synchronously."""

    def __init__(self, config: Any = None, clock: Clock | None = None,
                 store: StateStore | None = None) -> None:
        self.clock = clock or Clock()
        self.store = store if store is not None else StateStore()
        self.fsm = FSM(self.store)
        self.log = ControlledLog(self.fsm, self.clock)
        self.config = config or AgentConfig(node_name="n0", node_id="")
        self.endpoints = ServerEndpoints(self.clock, self.store, self.log,
                                         datacenter=lambda: self.config.datacenter,
                                         lock_delay_remaining=lambda key: 0.0)
        self.facade = AgentFacade(self.config, self.clock, self.endpoints,
                                  SimpleNamespace(services={}, checks={}), None, list, dict)

    def apply(self, command: Any) -> Any:
        """Commit `command`; its WriteResult (raises the command's error)."""
        out = []
        self.log.apply(command).addBoth(out.append)
        if hasattr(out[0], "raiseException"):
            out[0].raiseException()
        return out[0]

    def lose_leader(self, contact: float = float("inf")) -> None:
        self.log.leader = False
        self.log.contact = contact
        self.facade.set_leader_known(False)

    def find_leader(self) -> None:
        self.log.leader = True
        self.log.contact = 0.0
        self.facade.set_leader_known(True)


def dns_catalog(store: StateStore, dns_config: Any = None):
    """What the DNS authority reads, over `store` (filled by the test through its own FSM)."""
    from agent.config.model import DNSConfig
    from gateway.dns.catalog import DNSCatalog
    return DNSCatalog(Core(store=store).facade, dns_config or DNSConfig())
