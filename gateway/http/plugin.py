"""The HTTP API as a frontend plugin: the route table and the listening service.

Loaded through the ``waypost`` entry-point group like any third-party plugin, which keeps the
hook API honest.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

from gateway.hookspecs import hookimpl
from gateway.http.api import HTTPAPI
from gateway.http.handlers import agent, catalog, health, kv, maintenance, status
from gateway.http.handlers import etcd
from gateway.http.handlers import session, txn
from gateway.http.protocol import HTTPFactory
from gateway.http.routes import RouteTable

GET, PUT, DELETE = ("GET", "HEAD"), ("PUT",), ("DELETE",)


def build_routes() -> RouteTable:
    t = RouteTable()
    t.add("/v1/kv/", GET + PUT + DELETE, kv.kv)
    t.add("/v1/catalog/register", PUT, catalog.register)
    t.add("/v1/catalog/deregister", PUT, catalog.deregister)
    t.add("/v1/catalog/datacenters", GET, catalog.datacenters, local=True)
    t.add("/v1/catalog/nodes", GET, catalog.nodes)
    t.add("/v1/catalog/services", GET, catalog.services)
    t.add("/v1/catalog/service/", GET, catalog.service)
    t.add("/v1/catalog/node/", GET, catalog.node)
    t.add("/v1/health/node/", GET, health.node)
    t.add("/v1/health/checks/", GET, health.checks)
    t.add("/v1/health/service/", GET, health.service)
    t.add("/v1/health/state/", GET, health.state)
    t.add("/v1/agent/self", GET, agent.self_info, local=True)
    t.add("/v1/agent/members", GET, agent.members, local=True)
    t.add("/v1/agent/services", GET, agent.services, local=True)
    t.add("/v1/agent/service/register", PUT, agent.register_service, local=True)
    t.add("/v1/agent/service/deregister/", PUT, agent.deregister_service, local=True)
    t.add("/v1/agent/service/", GET, agent.service, local=True)
    t.add("/v1/agent/health/service/id/", GET, agent.health_service_by_id, local=True)
    t.add("/v1/agent/health/service/name/", GET, agent.health_service_by_name, local=True)
    t.add("/v1/agent/checks", GET, agent.checks, local=True)
    t.add("/v1/agent/check/register", PUT, agent.register_check, local=True)
    t.add("/v1/agent/check/deregister/", PUT, agent.deregister_check, local=True)
    t.add("/v1/agent/check/pass/", PUT, agent.check_pass, local=True)
    t.add("/v1/agent/check/warn/", PUT, agent.check_warn, local=True)
    t.add("/v1/agent/check/fail/", PUT, agent.check_fail, local=True)
    t.add("/v1/agent/check/update/", PUT, agent.check_update, local=True)
    t.add("/v1/agent/maintenance", PUT, maintenance.node, local=True)
    t.add("/v1/agent/service/maintenance/", PUT, maintenance.service, local=True)
    t.add("/v1/agent/reload", PUT, maintenance.reload, local=True)
    t.add("/v1/status/leader", GET, status.leader, local=True)
    t.add("/v1/status/peers", GET, status.peers, local=True)
    t.add("/v1/session/create", PUT, session.create)
    t.add("/v1/session/destroy/", PUT, session.destroy)
    t.add("/v1/session/renew/", PUT, session.renew)
    t.add("/v1/session/info/", GET, session.info)
    t.add("/v1/session/node/", GET, session.node)
    t.add("/v1/session/list", GET, session.list_all)
    t.add("/v1/txn", PUT, txn.txn)
    etcd.add_routes(t)
    return t


def make_http_service(facade, reactor):
    config = facade.config
    api = HTTPAPI(facade, reactor, build_routes())
    factory = HTTPFactory(api, reactor, max_body=config.max_body_bytes)
    host = config.http_addr or config.client_addr
    endpoint_cls = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
    endpoint = endpoint_cls(reactor, config.ports.http, interface=host)
    service = StreamServerEndpointService(endpoint, factory)
    service._raiseSynchronously = True  # a port in use must stop start-up, not be logged later
    service.setName("http")
    return service


@hookimpl
def waypost_frontends(facade, reactor):
    return [make_http_service(facade, reactor)]
