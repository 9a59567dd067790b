"""/v1/health/*: node/<node>, checks/<service>, service/<service>, state/<state>."""

from __future__ import annotations

from agent import structs
from agent.errors import InvalidRequest
from agent.state.catalog import is_healthy
from gateway.http import encode
from gateway.http.decode import flag
from gateway.http.handlers.catalog import CATALOG, node_meta_filter
from gateway.http.results import Read

STATES = ("any",) + structs.HEALTH_STATES[:3]


def node(facade, request, params, name: str):
    def run(store):
        return (store.catalog.table_index["checks"],
                [encode.check(c) for c in store.catalog.node_checks(name)])
    return Read(run, tables=("checks",), consistency_header=True)


def checks(facade, request, params, service_name: str):
    def run(store):
        catalog = store.catalog
        return (catalog.max_service_index(service_name),
                [encode.check(c) for c in catalog.service_checks(service_name)])
    return Read(run, tables=("checks", "services"), consistency_header=True)


def service(facade, request, params, service_name: str):
    tags = request.query.get("tag", ())
    passing = flag(request, "passing")
    meta = node_meta_filter(request)

    def run(store):
        catalog = store.catalog
        rows = []
        for n, s in catalog.service_instances(service_name, tags, meta):
            instance_checks = catalog.instance_checks(s)
            if not is_healthy(instance_checks, passing):
                continue
            rows.append({"Node": encode.node(n), "Service": encode.service(s),
                         "Checks": [encode.check(c) for c in instance_checks]})
        return catalog.max_service_index(service_name), rows
    return Read(run, tables=CATALOG, consistency_header=True)


def state(facade, request, params, wanted: str):
    if wanted not in STATES:
        raise InvalidRequest("Invalid check state")

    def run(store):
        return (store.catalog.table_index["checks"],
                [encode.check(c) for c in store.catalog.checks_in_state(wanted)])
    return Read(run, tables=("checks",), consistency_header=True)
