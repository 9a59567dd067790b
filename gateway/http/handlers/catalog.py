"""/v1/catalog/*: register, deregister, datacenters, nodes, services, service/<name>,
node/<node>."""

from __future__ import annotations

from agent.errors import InvalidRequest
from agent.facade import (
    Deregister,
    Field,
    Filter,
    Register,
    WriteRequest,
    compile_filter,
    parse_catalog_deregister,
    parse_catalog_register,
    queries,
)
from gateway.http import encode
from gateway.http.decode import json_body
from gateway.http.results import Read

def node_meta_filter(request) -> tuple[tuple[str, str], ...]:
    """`?node-meta=key:value`, repeatable; all must match (sorted pairs, as queries take)."""
    wanted = {}
    for item in request.query.get("node-meta", ()):
        key, _, value = item.partition(":")
        wanted[key] = value
    return tuple(sorted(wanted.items()))


def expression(request, schema: Field, lazy: bool = False) -> Filter | None:
    """`?filter=`: Consul's bexpr expression over the result's rows; None without one.
    A bad expression is a FilterError (400) here, before any read runs."""
    values = request.query.get("filter")
    return compile_filter(values[0], schema, lazy) if values else None


def filtered(rows_filter: Filter | None, rows: list) -> list:
    return rows if rows_filter is None else rows_filter.select(rows)


def require(name: str, message: str) -> None:
    """Consul answers 400 with `message` when the path names no node/service/state."""
    if not name:
        raise InvalidRequest(message)


def register(facade, request, params, arg):
    reg = parse_catalog_register(json_body(request), facade.schemas, facade.config.datacenter)
    facade.check_datacenter(reg.node.datacenter)
    return facade.write(Register(node=reg.node, service=reg.service, checks=reg.checks,
                                 skip_node_update=reg.skip_node_update))


def deregister(facade, request, params, arg):
    dereg = parse_catalog_deregister(json_body(request), facade.schemas)
    facade.check_datacenter(dereg.datacenter)  # as register: Consul's "No path to datacenter"
    # The body's Datacenter says where (another one: forwarded there by its servers).
    return facade.write(Deregister(node=dereg.node, service_id=dereg.service_id,
                                   check_id=dereg.check_id),
                        WriteRequest(datacenter=dereg.datacenter))


def datacenters(facade, request, params, arg):
    return Read(queries.CatalogDatacenters(), list, index_headers=False)


def nodes(facade, request, params, arg):
    query = queries.CatalogNodes(node_meta_filter(request))
    return Read(query, lambda rows: [encode.node(n) for n in rows], consistency_header=True)


def services(facade, request, params, arg):
    # Consul 1.8.7 ignores ?filter here (a map of names to tags); so does the core.
    return Read(queries.CatalogServices(node_meta_filter(request)), dict,
                consistency_header=True)


def service(facade, request, params, name: str):
    require(name, "Missing service name")
    query = queries.CatalogServiceNodes(name, tuple(request.query.get("tag", ())),
                                        node_meta_filter(request))
    return Read(query, lambda rows: [encode.catalog_service(r.node, r.service) for r in rows],
                consistency_header=True)


def node(facade, request, params, name: str):
    require(name, "Missing node name")

    def shape(found):
        if found is None:
            return None
        return {"Node": encode.node(found.node),
                "Services": {sid: encode.service(s) for sid, s in found.services.items()}}
    return Read(queries.CatalogNodeServices(name), shape, consistency_header=True)


def node_services(facade, request, params, name: str):
    """/v1/catalog/node-services/<node>: the node and its services as a list (Consul 1.7+)."""
    require(name, "Missing node name")

    def shape(found):
        if found is None:
            return {"Node": None, "Services": None}
        return {"Node": encode.node(found.node),
                "Services": [encode.service(s) for s in found.services.values()]}
    return Read(queries.CatalogNodeServices(name), shape, consistency_header=True)
