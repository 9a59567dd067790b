"""/v1/health/*: node/<node>, checks/<service>, service/<service>, state/<state>."""

from __future__ import annotations

from agent.errors import InvalidRequest
from agent.facade import CHECK_SERVICE_NODE, HEALTH_CHECK, is_healthy
from gateway.http import encode
from gateway.http.handlers.catalog import (CATALOG, expression, filtered, node_meta_filter,
                                           require)
from gateway.http.results import Read


def _passing(request) -> bool:
    """`?passing` is a Go bool: bare means true, and a value must parse like strconv.ParseBool."""
    values = request.query.get("passing")
    if values is None:
        return False
    value = values[0]
    if value in ("", "1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise InvalidRequest("Invalid value for ?passing")


def node(facade, request, params, name: str):
    require(name, "Missing node name")
    rows_filter = expression(request, HEALTH_CHECK)

    def run(store):
        rows = [encode.check(c) for c in store.catalog.node_checks(name)]
        return store.catalog.table_index["checks"], filtered(rows_filter, rows)
    return Read(run, tables=("checks",), consistency_header=True)


def checks(facade, request, params, service_name: str):
    require(service_name, "Missing service name")
    rows_filter = expression(request, HEALTH_CHECK)

    def run(store):
        catalog = store.catalog
        rows = [encode.check(c) for c in catalog.service_checks(service_name)]
        return catalog.max_service_index(service_name), filtered(rows_filter, rows)
    return Read(run, tables=("checks", "services"), consistency_header=True)


def service(facade, request, params, service_name: str):
    require(service_name, "Missing service name")
    tags = request.query.get("tag", ())
    passing = _passing(request)
    meta = node_meta_filter(request)
    rows_filter = expression(request, CHECK_SERVICE_NODE)

    def run(store):
        catalog = store.catalog
        rows = []
        for n, s in catalog.service_instances(service_name, tags, meta):
            instance_checks = catalog.instance_checks(s)
            if not is_healthy(instance_checks, passing):
                continue
            rows.append({"Node": encode.node(n), "Service": encode.service(s),
                         "Checks": [encode.check(c) for c in instance_checks]})
        return catalog.max_service_index(service_name), filtered(rows_filter, rows)
    return Read(run, tables=CATALOG, consistency_header=True)


def state(facade, request, params, wanted: str):
    # Consul does not validate the state: an unknown one simply matches no check.
    require(wanted, "Missing check state")
    meta = node_meta_filter(request)
    rows_filter = expression(request, HEALTH_CHECK)

    def run(store):
        catalog = store.catalog
        found = catalog.checks_in_state(wanted)
        if meta:
            names = {n.name for n in catalog.node_list(meta)}
            found = [c for c in found if c.node in names]
        rows = [encode.check(c) for c in found]
        return catalog.table_index["checks"], filtered(rows_filter, rows)
    return Read(run, tables=("checks", "nodes") if meta else ("checks",), consistency_header=True)
