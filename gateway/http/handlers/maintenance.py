"""/v1/agent/maintenance, /v1/agent/service/maintenance/<id> and /v1/agent/reload."""

from __future__ import annotations

from agent.errors import InvalidRequest, WaypostError
from agent.facade import WriteRequest, local_commands
from gateway.http.results import EMPTY

_BOOLS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


def _enable(request) -> bool:
    values = request.query.get("enable")
    if not values or values[0] == "":
        raise InvalidRequest("Missing value for enable")
    value = _BOOLS.get(values[0].lower())
    if value is None:
        raise InvalidRequest(f"Invalid value for enable: {values[0]!r}")
    return value


def _applied(facade, command, params):
    return facade.write(command, WriteRequest(token=params.options.token)).addCallback(
        lambda _: EMPTY)


def node(facade, request, params, arg):
    enable = _enable(request)
    reason = request.query.get("reason", [""])[0]
    return _applied(facade, local_commands.NodeMaintenance(enable, reason), params)


def service(facade, request, params, service_id: str):
    if not service_id:
        raise InvalidRequest("Missing service ID")
    enable = _enable(request)
    reason = request.query.get("reason", [""])[0]
    return _applied(facade, local_commands.ServiceMaintenance(service_id, enable, reason),
                    params)


def reload(facade, request, params, arg):
    if facade.reload is None:
        raise WaypostError("This agent was not started from configuration files it can re-read")
    return facade.reload().addCallback(lambda _: EMPTY)
