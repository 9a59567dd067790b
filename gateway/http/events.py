"""/v1/event/fire/<name> and /v1/event/list: Consul's user events over HTTP.

Everything goes through `facade.gossip` (`agent.gossip.control.GossipControl`, backed by
`agent.events.UserEvents`). Fire answers the event with its new ID (LTime 0, no index
headers), as Consul. List answers this agent's recent events, oldest first, with only
X-Consul-Index, derived from the last listed event's ID; with ?index it blocks until that
value differs (Consul's own loop, not the catalog's: up to ?wait, default and cap 600 s).

Where Consul answers a bad filter or an oversized payload with 500, we answer 400 with the
same words: the request is at fault. An agent without gossip lists nothing and cannot fire.
"""

from __future__ import annotations

import base64

from twisted.internet.defer import Deferred

from agent.errors import InvalidRequest, WaypostError
from gateway.http import encode
from gateway.http.api import VARY
from gateway.http.request import Response

__all__ = ["event_json", "fire", "list_events"]

_NO_GOSSIP = "This agent is not a member of a gossip pool"


def event_json(event) -> dict:
    """An `agent.events.Event` as Consul shows it (the payload base64, null when empty)."""
    return {"ID": event.id, "Name": event.name,
            "Payload": base64.b64encode(event.payload).decode() if event.payload else None,
            "NodeFilter": event.node_filter, "ServiceFilter": event.service_filter,
            "TagFilter": event.tag_filter, "Version": event.version, "LTime": event.ltime}


def _query(request, name: str) -> str:
    return request.query.get(name, [""])[0]


def fire(facade, request, params, name: str):
    """PUT /v1/event/fire/<name>?node=&service=&tag= with the payload as the body."""
    if not name:
        raise InvalidRequest("Missing name")
    if facade.gossip is None:
        raise WaypostError(_NO_GOSSIP)
    event = facade.gossip.fire_event(name, request.body or b"", _query(request, "node"),
                                     _query(request, "service"), _query(request, "tag"))
    return Response(200, encode.dumps(event_json(event), params.pretty), [VARY])


def list_events(facade, request, params, arg: str) -> Deferred | Response:
    """GET /v1/event/list[?name=] blocking with ?index and ?wait."""
    name = _query(request, "name")
    options = params.options
    if facade.gossip is None:
        return _answer(1, [], params)
    return facade.gossip.events(name, options.min_index, options.wait).addCallback(
        lambda found: _answer(found[0], found[1], params))


def _answer(index: int, events: list, params) -> Response:
    body = encode.dumps([event_json(e) for e in events], params.pretty)
    return Response(200, body, [VARY, (b"X-Consul-Index", str(index).encode())])
