"""/v1/catalog/*: register, deregister, datacenters, nodes, services, service/<name>,
node/<node>."""

from __future__ import annotations

from agent.errors import InvalidRequest
from agent.facade import (
    NODE,
    NODE_SERVICE,
    SERVICE_NODE,
    Deregister,
    Field,
    Filter,
    Register,
    compile_filter,
    parse_catalog_deregister,
    parse_catalog_register,
)
from gateway.http import encode
from gateway.http.decode import json_body
from gateway.http.results import Read

CATALOG = ("nodes", "services", "checks")


def node_meta_filter(request) -> dict[str, str]:
    """`?node-meta=key:value`, repeatable; all must match."""
    wanted = {}
    for item in request.query.get("node-meta", ()):
        key, _, value = item.partition(":")
        wanted[key] = value
    return wanted


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
    return facade.write(Deregister(node=dereg.node, service_id=dereg.service_id,
                                   check_id=dereg.check_id))


def datacenters(facade, request, params, arg):
    dcs = facade.datacenters()
    return Read(lambda store: (0, dcs), index_headers=False)


def nodes(facade, request, params, arg):
    meta = node_meta_filter(request)
    rows_filter = expression(request, NODE)

    def run(store):
        rows = [encode.node(n) for n in store.catalog.node_list(meta)]
        return store.catalog.table_index["nodes"], filtered(rows_filter, rows)
    return Read(run, tables=("nodes",), consistency_header=True)


def services(facade, request, params, arg):
    meta = node_meta_filter(request)

    def run(store):
        catalog = store.catalog
        if meta:
            tags: dict[str, dict[str, None]] = {}
            for node in catalog.node_list(meta):
                for _, svc in sorted(catalog.services.get(node.name, {}).items()):
                    bucket = tags.setdefault(svc.name, {})
                    bucket.update(dict.fromkeys(svc.tags))
            result = {k: list(v) for k, v in sorted(tags.items())}
        else:
            result = catalog.service_tags()
        return catalog.table_index["services"], result
    return Read(run, tables=("services", "nodes"), consistency_header=True)


def service(facade, request, params, name: str):
    require(name, "Missing service name")
    tags = request.query.get("tag", ())
    meta = node_meta_filter(request)
    rows_filter = expression(request, SERVICE_NODE)

    def run(store):
        catalog = store.catalog
        rows = [encode.catalog_service(n, s)
                for n, s in catalog.service_instances(name, tags, meta)]
        return catalog.max_service_index(name), filtered(rows_filter, rows)
    return Read(run, tables=CATALOG, consistency_header=True)


def node(facade, request, params, name: str):
    require(name, "Missing node name")
    services_filter = expression(request, NODE_SERVICE)

    def run(store):
        catalog = store.catalog
        index = max(catalog.table_index["nodes"], catalog.table_index["services"])
        found = catalog.nodes.get(name)
        if found is None:
            return index, None
        services = {sid: encode.service(s) for sid, s in
                    sorted(catalog.services.get(name, {}).items())}
        if services_filter is not None:
            services = services_filter.select_values(services)
        return index, {"Node": encode.node(found), "Services": services}
    return Read(run, tables=("nodes", "services"), consistency_header=True)


def node_services(facade, request, params, name: str):
    """/v1/catalog/node-services/<node>: the node and its services as a list (Consul 1.7+)."""
    require(name, "Missing node name")
    services_filter = expression(request, NODE_SERVICE)

    def run(store):
        catalog = store.catalog
        index = max(catalog.table_index["nodes"], catalog.table_index["services"])
        found = catalog.nodes.get(name)
        if found is None:
            return index, {"Node": None, "Services": None}
        services = [encode.service(s) for _, s in sorted(catalog.services.get(name, {}).items())]
        return index, {"Node": encode.node(found), "Services": filtered(services_filter, services)}
    return Read(run, tables=("nodes", "services"), consistency_header=True)
