"""/v1/coordinate/datacenters, /v1/coordinate/nodes and /v1/coordinate/node/<node>: network
coordinates in Consul's JSON.

Consul's agents send their LAN coordinate to the servers, which keep it in the catalog; Waypost
serves the gossip view of the agent asked instead (`facade.gossip`, see docs/gossip.md): the
coordinate its LAN pool holds for each node it probed (and its own), for the nodes the catalog
has (Consul refuses coordinates of unregistered nodes), under the catalog's index. The WAN
coordinates come from a server's own WAN pool, as in Consul. An agent without gossip
(in-process tests) knows no coordinates: it lists none, and its own datacenter empty.
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred

from agent.facade import queries
from gateway.http import encode
from gateway.http.api import VARY
from gateway.http.request import Response

__all__ = ["datacenters", "node", "nodes"]


def datacenters(facade, request, params, arg):
    wan = facade.gossip.wan_coordinates() if facade.gossip is not None else None
    if wan is None:
        wan = {facade.config.datacenter: []}
    return [{"Datacenter": dc, "AreaID": "wan",
             "Coordinates": [{"Node": name, "Segment": "", "Coord": coord.to_json()}
                             for name, coord in sorted(found, key=lambda item: item[0])]}
            for dc, found in sorted(wan.items())]


def _lan(facade) -> dict:
    return facade.gossip.lan_coordinates() if facade.gossip is not None else {}


def _listing(facade, params, only: str | None):
    """Fires with the Response: the coordinate rows of the catalog's nodes (`only` one)."""
    coords = _lan(facade)

    def answer(result) -> Response:
        rows = [{"Node": n.name, "Segment": "", "Coord": coords[n.name].to_json()}
                for n in result.value
                if n.name in coords and (only is None or n.name == only)]
        meta = result.meta
        headers = [VARY, (b"X-Consul-Index", str(meta.index).encode()),
                   (b"X-Consul-KnownLeader", b"true" if meta.known_leader else b"false"),
                   (b"X-Consul-LastContact", str(int(meta.last_contact * 1000)).encode())]
        if only is not None and not rows:
            return Response(404, b"", headers, content_type=None)  # Consul: an empty 404
        return Response(200, encode.dumps(rows, params.pretty), headers)
    return maybeDeferred(facade.read, queries.CatalogNodes()).addCallback(answer)


def nodes(facade, request, params, arg):
    return _listing(facade, params, None)


def node(facade, request, params, name: str):
    return _listing(facade, params, name)
