"""/v1/health/*: node/<node>, checks/<service>, service/<service>, state/<state>."""

from __future__ import annotations

from agent.errors import InvalidRequest
from agent.facade import queries
from gateway.http import encode
from gateway.http.handlers.catalog import node_meta_filter, require
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


def _checks(rows) -> list:
    return [encode.check(c) for c in rows]


def node(facade, request, params, name: str):
    require(name, "Missing node name")
    return Read(queries.HealthNodeChecks(name), _checks, consistency_header=True)


def checks(facade, request, params, service_name: str):
    require(service_name, "Missing service name")
    return Read(queries.HealthServiceChecks(service_name, node_meta_filter(request)), _checks,
                consistency_header=True)


def service(facade, request, params, service_name: str):
    require(service_name, "Missing service name")
    query = queries.HealthServiceNodes(service_name, tuple(request.query.get("tag", ())),
                                       _passing(request), node_meta_filter(request))

    def shape(rows):
        return [{"Node": encode.node(r.node), "Service": encode.service(r.service),
                 "Checks": _checks(r.checks)} for r in rows]
    return Read(query, shape, consistency_header=True)


def state(facade, request, params, wanted: str):
    # Consul does not validate the state: an unknown one simply matches no check.
    require(wanted, "Missing check state")
    return Read(queries.HealthChecksInState(wanted, node_meta_filter(request)), _checks,
                consistency_header=True)
