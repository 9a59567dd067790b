"""The HTTP API as a frontend plugin: Consul's route table and the listening service.

Loaded through the ``waypost`` entry-point group like any third-party plugin, which keeps the
hook API honest. Other frontends (the etcd v2 API, third-party plugins) add their routes to the
same table through the `waypost_http_routes` hook, called once the table has Consul's.
"""

from __future__ import annotations

from typing import Any

from gateway.hookspecs import hookimpl
from gateway.http import events
from gateway.http.api import HTTPAPI
from gateway.http.handlers import (
    agent, catalog, coordinate, health, keyring, kv, maintenance, members, session, status, txn)
from gateway.http.handlers import operator
from gateway.http.handlers import snapshot
from gateway.http.listen import HTTPListenerService, http_endpoint, listen_backlog
from gateway.http.protocol import HTTPFactory
from gateway.http.request import Request, Response
from gateway.http.routes import PluginRoutes, RouteTable

GET, PUT, DELETE = ("GET", "HEAD"), ("PUT",), ("DELETE",)
# Consul's index and UI handlers answer every method.
ANY = ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH")

_HTML = b"text/html; charset=utf-8"
_TEXT = b"text/plain; charset=utf-8"
_NO_UI = (b"The web UI is not built into this Waypost agent yet.\n"
          b"The HTTP API is served under /v1/.\n")


def _redirect_to_ui(request: Request) -> Response:
    # As Go's http.Redirect: a small HTML body for GET and HEAD only.
    if request.method in ("GET", "HEAD"):
        return Response(301, b'<a href="/ui/">Moved Permanently</a>.\n\n',
                        [(b"Location", b"/ui/")], content_type=_HTML)
    return Response(301, b"", [(b"Location", b"/ui/")], content_type=None)


def index(facade, request: Request, params, arg: str) -> Response:
    """`/`: to the UI when it is enabled, else "Consul Agent" (so an HTTP check pointed at
    the agent itself passes)."""
    if facade.config.ui:
        return _redirect_to_ui(request)
    return Response(200, b"Consul Agent", content_type=_TEXT)


def ui_root(facade, request: Request, params, arg: str) -> Response:
    """`/ui`, as Go's ServeMux answers a subtree without its slash."""
    if facade.config.ui:
        return _redirect_to_ui(request)
    return Response(404, b"", content_type=None)


def ui(facade, request: Request, params, arg: str) -> Response:
    """`/ui/...`: there is no UI to serve yet; say so plainly (200, so checks that follow
    the redirect from `/` still pass, as they do against Consul)."""
    if facade.config.ui:
        return Response(200, _NO_UI, content_type=_TEXT)
    return Response(404, b"", content_type=None)


for _handler in (index, ui_root, ui):
    _handler.own_query_params = True  # Consul's index ignores ?index=abc and friends


def build_routes() -> RouteTable:
    t = RouteTable()
    t.add("/", ANY, index, local=True, prefix=False)
    t.add("/ui", ANY, ui_root, local=True)
    t.add("/ui/", ANY, ui, local=True)
    t.add("/v1/kv/", GET + PUT + DELETE, kv.kv)
    t.add("/v1/catalog/register", PUT, catalog.register)
    t.add("/v1/catalog/deregister", PUT, catalog.deregister)
    t.add("/v1/catalog/datacenters", GET, catalog.datacenters, local=True)
    t.add("/v1/catalog/nodes", GET, catalog.nodes)
    t.add("/v1/catalog/services", GET, catalog.services)
    t.add("/v1/catalog/service/", GET, catalog.service)
    t.add("/v1/catalog/node/", GET, catalog.node)
    t.add("/v1/catalog/node-services/", GET, catalog.node_services)
    t.add("/v1/health/node/", GET, health.node)
    t.add("/v1/health/checks/", GET, health.checks)
    t.add("/v1/health/service/", GET, health.service)
    t.add("/v1/health/state/", GET, health.state)
    t.add("/v1/agent/self", GET, agent.self_info, local=True)
    t.add("/v1/waypost/self", GET, agent.waypost_self, local=True)
    t.add("/v1/agent/members", GET, members.members, local=True)
    t.add("/v1/agent/join/", PUT, members.join, local=True)
    t.add("/v1/agent/leave", PUT, members.leave, local=True)
    t.add("/v1/agent/force-leave/", PUT, members.force_leave, local=True)
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
    t.add("/v1/operator/keyring", GET + ("POST",) + PUT + DELETE, keyring.keyring,
          local=True)
    t.add("/v1/operator/raft/configuration", GET, operator.raft_configuration)
    # Local: Consul checks ?id/?address before the datacenter; the handler does both.
    t.add("/v1/operator/raft/peer", DELETE, operator.raft_peer, local=True)
    t.add("/v1/operator/raft/transfer-leader", ("POST",), operator.raft_transfer_leader,
          local=True)
    t.add("/v1/operator/autopilot/health", GET, operator.autopilot_health)
    t.add("/v1/operator/autopilot/configuration", GET + PUT, operator.autopilot_configuration)
    t.add("/v1/snapshot", ("GET",) + PUT, snapshot.snapshot)
    # Coordinates are this agent's gossip view (see the handlers' module), so ?dc does not apply.
    t.add("/v1/coordinate/datacenters", GET, coordinate.datacenters, local=True)
    t.add("/v1/coordinate/nodes", GET, coordinate.nodes, local=True)
    t.add("/v1/coordinate/node/", GET, coordinate.node, local=True)
    t.add("/v1/status/leader", GET, status.leader, local=True)
    t.add("/v1/status/peers", GET, status.peers, local=True)
    t.add("/v1/session/create", PUT, session.create)
    t.add("/v1/session/destroy/", PUT, session.destroy)
    t.add("/v1/session/renew/", PUT, session.renew)
    t.add("/v1/session/info/", GET, session.info)
    t.add("/v1/session/node/", GET, session.node)
    t.add("/v1/session/list", GET, session.list_all)
    t.add("/v1/txn", PUT, txn.txn)
    t.add("/v1/event/fire/", PUT, events.fire)
    t.add("/v1/event/list", GET, events.list_events, local=True)
    return t


def conns_per_client(config: Any) -> int:
    """`limits.http_max_conns_per_client`: 0 (or less) means no limit, as in Consul."""
    try:
        return max(0, int(config.limits.get("http_max_conns_per_client", 200)))
    except (TypeError, ValueError, AttributeError):
        return 200


def make_http_service(facade, reactor, hooks: Any = None) -> HTTPListenerService:
    """The HTTP listener; with the host's ``hooks``, other plugins' routes join Consul's."""
    config = facade.config
    routes = build_routes()
    if hooks is not None:
        hooks.http_routes(PluginRoutes(routes))
    api = HTTPAPI(facade, reactor, routes)
    factory = HTTPFactory(api, reactor, max_body=config.max_body_bytes,
                          body_limits={b"/v1/snapshot": snapshot.MAX_ARCHIVE},
                          max_conns_per_client=conns_per_client(config))

    def reloaded(new: Any) -> None:
        factory.max_conns_per_client = conns_per_client(new)

    facade.reload_listeners.append(reloaded)
    endpoint = http_endpoint(reactor, config, listen_backlog())
    return HTTPListenerService(endpoint, factory, config)


@hookimpl
def waypost_frontends(facade, reactor, hooks):
    return [make_http_service(facade, reactor, hooks)]
