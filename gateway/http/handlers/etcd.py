"""The etcd v2 API on the HTTP port: the key space and what etcd clients ask before using it.

Owns: `add_routes(table)`, which registers ``/v2/keys/`` (see
:mod:`gateway.http.handlers.etcd_keys`), and the cluster endpoints answered here:
``/version``, ``/health``, ``/v2/members`` (and ``/v2/members/leader``) and ``/v2/machines``.
``etcdctl`` (API 2) first asks ``/v2/members`` and then talks to the ``clientURLs`` listed
there, so those are the address the client used.

These handlers read etcd's own query fields (``wait=true``, ``recursive``, ...), so they are
marked ``own_query_params`` and the API wrapper does not parse Consul's shared ones for them.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.http.handlers.etcd_keys import headers, keys, member_id
from gateway.http.request import Response
from gateway.http.routes import RouteTable

__all__ = ["CLUSTER_VERSION", "SERVER_VERSION", "add_routes"]

SERVER_VERSION = "2.3.8"
CLUSTER_VERSION = "2.3.0"
GET = ("GET", "HEAD")
KEY_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")


def _own_params(handler):
    handler.own_query_params = True
    return handler


def _json(facade, doc: Any, status: int = 200) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, headers(facade))


def _client_url(facade, request) -> str:
    host = request.headers.get("host")
    if not host:
        config = facade.config
        host = f"{config.http_addr or config.client_addr}:{config.ports.http}"
    return f"http://{host}"


@_own_params
def version(facade, request, params, arg):
    return Response(200, json.dumps({"etcdserver": SERVER_VERSION,
                                     "etcdcluster": CLUSTER_VERSION}).encode())


@_own_params
def health(facade, request, params, arg):
    return Response(200, b'{"health":"true"}')


@_own_params
def members(facade, request, params, arg):
    """The one member, this agent; ``/v2/members/leader`` is that member too."""
    config = facade.config
    member = {"id": member_id(facade), "name": config.node_name,
              "peerURLs": [f"http://{config.advertise}:{config.ports.server}"],
              "clientURLs": [_client_url(facade, request)]}
    if arg == "leader":
        return _json(facade, member)
    if arg:
        return _json(facade, {"message": "Not found"}, 404)
    return _json(facade, {"members": [member]})


@_own_params
def machines(facade, request, params, arg):
    return Response(200, _client_url(facade, request).encode(), headers(facade),
                    content_type=b"text/plain; charset=utf-8")


keys_handler = _own_params(keys)


def add_routes(table: RouteTable) -> None:
    """Register the etcd v2 endpoints on the HTTP API's route table."""
    table.add("/v2/keys/", KEY_METHODS, keys_handler, local=True)
    table.add("/v2/keys", KEY_METHODS, keys_handler, local=True)
    table.add("/version", GET, version, local=True)
    table.add("/health", GET, health, local=True)
    table.add("/v2/members", GET, members, local=True)
    table.add("/v2/members/", GET, members, local=True)
    table.add("/v2/machines", GET, machines, local=True)
