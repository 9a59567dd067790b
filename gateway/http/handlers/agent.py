"""/v1/agent/*: this agent's own facts and its local services and checks.

The services and checks are read and written through the facade's seams (agent-local queries
and `local_commands`); the core answers `?filter=` and the hash blocking of a service."""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.defer import Deferred

from agent import structs
from agent.errors import InvalidRequest
from agent.facade import (
    VERSION,
    WAYPOST_VERSION,
    WriteRequest,
    local_commands,
    parse_check_definition,
    parse_service_definition,
    queries,
)
from gateway.http import encode, encode_self
from gateway.http.api import VARY
from gateway.http.decode import flag, json_body
from gateway.http.request import Response
from gateway.http.results import EMPTY

# /v1/agent/health/service/* answers a load balancer: the status code is the verdict.
HEALTH_CODES = {structs.PASSING: 200, structs.WARNING: 429, structs.CRITICAL: 503}


def self_info(facade, request, params, arg):
    # Exactly Consul's keys: clients compare the key set, so Waypost's own facts live apart.
    extra = {}
    if facade.gossip is not None:  # this agent's LAN coordinate (without gossip: the origin)
        coord = facade.gossip.lan_coordinates().get(facade.config.node_name)
        if coord is not None:
            extra["Coord"] = coord.to_json()
    return encode_self.agent_self(facade.config, VERSION, facade.members(), facade.stats(),
                                  extra)


def waypost_self(facade, request, params, arg):
    """/v1/waypost/self: what only Waypost has (its version, the plugins it loaded)."""
    return {"Version": WAYPOST_VERSION, "ConsulVersion": VERSION,
            "Plugins": facade.plugin_names()}


def services(facade, request, params, arg):
    found = facade.read(queries.AgentServices(), params.options).value  # ?filter= in the core
    return {sid: encode.agent_service(s) for sid, s in found.items()}


def service(facade, request, params, service_id: str):
    options = params.options
    wanted = request.query.get("hash", [""])[0]
    if wanted:  # Consul's hash-based blocking: wait until the content hash differs
        options = replace(options, hash=wanted)
    result = facade.read(queries.AgentService(service_id), options)
    if isinstance(result, Deferred):
        return result.addCallback(_service_answer, params)
    return _service_answer(result, params)


def _service_answer(result, params) -> Response:
    digest = result.meta.hash
    body = encode.agent_service(result.value)
    body["ContentHash"] = digest
    return Response(200, encode.dumps(body, params.pretty),
                    [VARY, (b"X-Consul-ContentHash", digest.encode())])


def _health_answer(request, params, code: int, reason: str, payload) -> Response:
    headers = [VARY, (b"X-Consul-Reason", reason.encode())]
    if _wants_text(request):
        return Response(code, reason.encode(), headers, content_type=b"text/plain")
    return Response(code, encode.dumps(payload, params.pretty), headers)


def _wants_text(request) -> bool:
    if request.headers.get("accept", "").startswith("text/plain"):
        return True
    return request.query.get("format", [""])[0] == "text"


def _health_payload(health) -> dict:
    return encode.agent_service_health(health.status, health.service, list(health.checks))


def health_service_by_id(facade, request, params, service_id: str):
    health = facade.read(queries.AgentHealthServiceByID(service_id), params.options).value
    if health is None:
        payload = encode.agent_service_health(structs.CRITICAL, None, None)
        return _health_answer(request, params, 404, f"ServiceId {service_id} not found", payload)
    return _health_answer(request, params, HEALTH_CODES.get(health.status, 503), health.status,
                          _health_payload(health))


def health_service_by_name(facade, request, params, name: str):
    code, reason, payload = 404, f"ServiceName {name} Not Found", []
    for health in facade.read(queries.AgentHealthServiceByName(name), params.options).value:
        payload.append(_health_payload(health))
        scode = HEALTH_CODES.get(health.status, 503)
        # The worst instance decides: passing 200 < warning 429 < critical 503.
        if code == 404 or scode > code:
            code, reason = scode, health.status
    return _health_answer(request, params, code, reason, payload)


def checks(facade, request, params, arg):
    found = facade.read(queries.AgentChecks(), params.options).value  # ?filter= in the core
    return {cid: encode.check(check, with_indexes=False) for cid, check in found.items()}


def _applied(facade, command, params):
    """An agent-local write; answers 200 with no body once the change is synced (or failed
    to be: the agent retries it, as Consul's does)."""
    return facade.write(command, WriteRequest(token=params.options.token)).addCallback(
        lambda _: EMPTY)


def register_service(facade, request, params, arg):
    definition = parse_service_definition(json_body(request), facade.schemas)
    replace_checks = flag(request, "replace-existing-checks")
    return _applied(facade, local_commands.RegisterService(definition, replace_checks), params)


def deregister_service(facade, request, params, service_id: str):
    return _applied(facade, local_commands.DeregisterService(service_id), params)


def register_check(facade, request, params, arg):
    spec = parse_check_definition(json_body(request), facade.schemas)
    return _applied(facade, local_commands.RegisterCheck(spec), params)


def deregister_check(facade, request, params, check_id: str):
    return _applied(facade, local_commands.DeregisterCheck(check_id), params)


def _ttl(status: str):
    def handler(facade, request, params, check_id: str):
        note = request.query.get("note", [""])[0]
        return _applied(facade, local_commands.UpdateTTL(check_id, status, note), params)
    return handler


check_pass = _ttl(structs.PASSING)
check_warn = _ttl(structs.WARNING)
check_fail = _ttl(structs.CRITICAL)


def check_update(facade, request, params, check_id: str):
    body = json_body(request)
    if body is None:
        body = {}  # Go decodes a null body into the zero value
    if not isinstance(body, dict):
        raise InvalidRequest("Request decode failed: json: cannot unmarshal "
                             f"{_json_kind(body)} into Go value of type agent.checkUpdate")
    # Go's decoder matches field names case-insensitively, ignores unknown ones, and leaves a
    # field given as null at its zero value.
    fields = {k.lower(): v for k, v in body.items()}
    status, output = (fields.get(name) for name in ("status", "output"))
    status = "" if status is None else status
    output = "" if output is None else output
    for name, value in (("Status", status), ("Output", output)):
        if not isinstance(value, str):
            raise InvalidRequest(f"Request decode failed: json: cannot unmarshal "
                                 f"{_json_kind(value)} into Go struct field "
                                 f"checkUpdate.{name} of type string")
    if status not in (structs.PASSING, structs.WARNING, structs.CRITICAL):
        raise InvalidRequest(f"Invalid check status: '{status}'")
    return _applied(facade, local_commands.UpdateTTL(check_id, status, output), params)


def _json_kind(value) -> str:
    """Go's name for a JSON value's type, as its decode errors spell it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")
