"""The cluster endpoints etcd clients ask before using the key space: ``/version``,
``/health``, ``/v2/members`` (and ``/v2/members/leader``) and ``/v2/machines``.

``etcdctl`` (API 2) first asks ``/v2/members`` and then talks to the ``clientURLs`` listed
there, so those are the address the client used. This agent is the one member.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.etcd.wire import dumps, headers, member_id
from gateway.http.request import Response

__all__ = ["CLUSTER_VERSION", "SERVER_VERSION", "Cluster"]

SERVER_VERSION = "2.3.8"
CLUSTER_VERSION = "2.3.0"


class Cluster:
    """The cluster endpoints of one agent's etcd frontend; handlers take (request, arg)."""

    def __init__(self, facade) -> None:
        self.facade = facade

    def _json(self, doc: Any, status: int = 200) -> Response:
        return Response(status, dumps(doc), headers(self.facade))

    def _client_url(self, request) -> str:
        host = request.headers.get("host")
        if not host:
            config = self.facade.config
            host = f"{config.http_addr or config.client_addr}:{config.ports.http}"
        return f"http://{host}"

    def version(self, request, arg: str) -> Response:
        return Response(200, json.dumps({"etcdserver": SERVER_VERSION,
                                         "etcdcluster": CLUSTER_VERSION}).encode())

    def health(self, request, arg: str) -> Response:
        return Response(200, b'{"health":"true"}')

    def members(self, request, arg: str) -> Response:
        """The one member, this agent; ``/v2/members/leader`` is that member too."""
        config = self.facade.config
        member = {"id": member_id(self.facade), "name": config.node_name,
                  "peerURLs": [f"http://{config.advertise}:{config.ports.server}"],
                  "clientURLs": [self._client_url(request)]}
        if arg == "leader":
            return self._json(member)
        if arg:
            return self._json({"message": "Not found"}, 404)
        return self._json({"members": [member]})

    def machines(self, request, arg: str) -> Response:
        return Response(200, self._client_url(request).encode(), headers(self.facade),
                        content_type=b"text/plain; charset=utf-8")
