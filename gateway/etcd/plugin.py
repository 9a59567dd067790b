"""The etcd v2 API's hooks: its routes join the HTTP API's through `waypost_http_routes`,
exactly as a third-party frontend's would (entry point ``etcd`` in the ``waypost`` group)."""

from __future__ import annotations

from typing import Any

from gateway.etcd.cluster import Cluster
from gateway.etcd.keys import Keys
from gateway.etcd.reads import Expiries
from gateway.hookspecs import HTTPRoutes, hookimpl

GET = ("GET",)
KEY_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")


@hookimpl
def waypost_http_routes(routes: HTTPRoutes, facade: Any, reactor: Any) -> None:
    """``/v2/keys`` and the cluster endpoints, with this agent's state (the TTL deadlines it
    noted) held by the handlers, not by the module."""
    keys = Keys(facade, Expiries(reactor))
    cluster = Cluster(facade)
    routes.add("/v2/keys/", KEY_METHODS, keys)
    routes.add("/v2/keys", KEY_METHODS, keys)
    routes.add("/version", GET, cluster.version)
    routes.add("/health", GET, cluster.health)
    routes.add("/v2/members", GET, cluster.members)
    routes.add("/v2/members/", GET, cluster.members)
    routes.add("/v2/machines", GET, cluster.machines)
