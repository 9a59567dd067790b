"""Puts one agent together: the core's services, then the frontends plugins contribute.

Used by `waypost agent` and by tests that run an agent in-process.
"""

from __future__ import annotations

from typing import Any, Iterable

import txaio
from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks

from agent.agent import Agent, make_agent
from agent.config.model import AgentConfig
from agent.facade import CATALOG_TABLES
from gateway.host import PluginHost
from gateway.views import build_catalog_view

txaio.use_twisted()


class WaypostServer(MultiService):
    log = txaio.make_logger()

    def __init__(self, config: AgentConfig, reactor, *, autoload: bool = True,
                 allow: Iterable[str] | None = None, plugins: Iterable[tuple[str, Any]] = (),
                 gossip: bool = False) -> None:
        super().__init__()
        self.reactor = reactor
        self.agent: Agent = make_agent(config, reactor, gossip=gossip)
        self.agent.setServiceParent(self)
        self.host = PluginHost(reactor, allow=allow, autoload=autoload, plugins=plugins)
        self.agent.plugin_names[:] = self.host.names()
        self.host.validate_config(dict(config.plugins))
        self.frontends = MultiService()
        for service in self.host.frontends(self.agent.facade, dict(config.plugins)):
            service.setServiceParent(self.frontends)
        self.frontends.setServiceParent(self)
        self.agent.facade.on_change(lambda index, tables: self._changed(tables))

    def _changed(self, tables) -> None:
        if tables & CATALOG_TABLES:
            self.host.catalog_changed(self.agent.facade, self.agent.config.datacenter)

    def startService(self) -> None:
        super().startService()
        if self.host.wants_catalog():
            self.host.agent_started(build_catalog_view(self.agent.facade,
                                                       self.agent.config.datacenter))

    @inlineCallbacks
    def stopService(self):
        yield self.host.agent_stopping()
        yield super().stopService()

    def http_port(self) -> int | None:
        """The bound HTTP port (useful with port 0 in tests)."""
        for service in self.frontends:
            if service.name == "http" and getattr(service, "_waitingForPort", None) is not None:
                port = service._waitingForPort.result
                return port.getHost().port
        return None
