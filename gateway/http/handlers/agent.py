"""/v1/agent/*: this agent's own facts and its local services and checks."""

from __future__ import annotations

import hashlib

from agent import structs
from agent.errors import InvalidRequest, NotFound
from agent.facade import (
    HEALTH_CHECK,
    NODE_SERVICE,
    VERSION,
    WAYPOST_VERSION,
    parse_check_definition,
    parse_service_definition,
)
from gateway.http import encode, encode_self
from gateway.http.api import VARY
from gateway.http.decode import flag, json_body
from gateway.http.handlers.catalog import expression
from gateway.http.request import Response
from gateway.http.results import EMPTY

# Consul's maintenance-mode check IDs: such a check makes the aggregate "maintenance".
NODE_MAINT = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
# /v1/agent/health/service/* answers a load balancer: the status code is the verdict.
HEALTH_CODES = {structs.PASSING: 200, structs.WARNING: 429, structs.CRITICAL: 503}



def self_info(facade, request, params, arg):
    # Exactly Consul's keys: clients compare the key set, so Waypost's own facts live apart.
    return encode_self.agent_self(facade.config, VERSION, facade.members(), facade.stats(), {})


def waypost_self(facade, request, params, arg):
    """/v1/waypost/self: what only Waypost has (its version, the plugins it loaded)."""
    return {"Version": WAYPOST_VERSION, "ConsulVersion": VERSION,
            "Plugins": facade.plugin_names()}


def members(facade, request, params, arg):
    # Consul takes any non-empty ?wan value (even "0" or "false") as "the WAN pool".
    if request.query.get("wan", [""])[0]:
        config = facade.config
        return [encode_self.wan_member(m, config) for m in facade.members()[:1]] \
            if config.server else []
    return [encode_self.member(m) for m in facade.members()]


def services(facade, request, params, arg):
    services_filter = expression(request, NODE_SERVICE)  # api.AgentService: the same fields
    found = {sid: encode.agent_service(s) for sid, s in sorted(facade.local.services.items())}
    return found if services_filter is None else services_filter.select_values(found)


def service(facade, request, params, service_id: str):
    found = facade.local.services.get(service_id)
    if found is None:
        raise NotFound(f"unknown service ID: {service_id}")
    body = encode.agent_service(found)
    # Consul's hash is of its Go struct; ours need only change when the service does.
    digest = hashlib.sha256(encode.dumps(body, False)).hexdigest()[:16]
    body["ContentHash"] = digest
    return Response(200, encode.dumps(body, params.pretty),
                    [VARY, (b"X-Consul-ContentHash", digest.encode())])


def _aggregate(facade, service_id: str) -> tuple[str, list]:
    """The service's local checks and their worst status, as Consul aggregates them."""
    found = [lc.check for cid, lc in sorted(facade.local.checks.items())
             if lc.check.service_id == service_id]
    statuses = {c.status for c in found}
    if any(c.check_id == NODE_MAINT or c.check_id.startswith(SERVICE_MAINT_PREFIX) for c in found):
        return structs.MAINTENANCE, found
    for status in (structs.CRITICAL, structs.WARNING):
        if status in statuses:
            return status, found
    return structs.PASSING, found


def _health_answer(request, params, code: int, reason: str, payload) -> Response:
    headers = [VARY, (b"X-Consul-Reason", reason.encode())]
    if _wants_text(request):
        return Response(code, reason.encode(), headers, content_type=b"text/plain")
    return Response(code, encode.dumps(payload, params.pretty), headers)


def _wants_text(request) -> bool:
    if request.headers.get("accept", "").startswith("text/plain"):
        return True
    return request.query.get("format", [""])[0] == "text"


def health_service_by_id(facade, request, params, service_id: str):
    found = facade.local.services.get(service_id)
    if found is None:
        payload = encode.agent_service_health(structs.CRITICAL, None, None)
        return _health_answer(request, params, 404, f"ServiceId {service_id} not found", payload)
    status, checks = _aggregate(facade, service_id)
    payload = encode.agent_service_health(status, found, checks)
    return _health_answer(request, params, HEALTH_CODES.get(status, 503), status, payload)


def health_service_by_name(facade, request, params, name: str):
    code, reason, payload = 404, f"ServiceName {name} Not Found", []
    for sid, svc in sorted(facade.local.services.items()):
        if svc.name != name:
            continue
        status, checks = _aggregate(facade, sid)
        payload.append(encode.agent_service_health(status, svc, checks))
        scode = HEALTH_CODES.get(status, 503)
        # The worst instance decides: passing 200 < warning 429 < critical 503.
        if code == 404 or scode > code:
            code, reason = scode, status
    return _health_answer(request, params, code, reason, payload)


def checks(facade, request, params, arg):
    # As Consul: selectors and values are checked only once there is a check to filter.
    checks_filter = expression(request, HEALTH_CHECK, lazy=True)
    found = {cid: encode.check(lc.check, with_indexes=False)
             for cid, lc in sorted(facade.local.checks.items())}
    return found if checks_filter is None else checks_filter.select_values(found)


def register_service(facade, request, params, arg):
    definition = parse_service_definition(json_body(request), facade.schemas)
    replace = flag(request, "replace-existing-checks")
    return facade.local.add_service(definition, replace_existing_checks=replace).addCallback(
        lambda _: EMPTY)


def deregister_service(facade, request, params, service_id: str):
    return facade.local.remove_service(service_id).addCallback(lambda _: EMPTY)


def register_check(facade, request, params, arg):
    spec = parse_check_definition(json_body(request), facade.schemas)
    return facade.local.add_check(spec).addCallback(lambda _: EMPTY)


def deregister_check(facade, request, params, check_id: str):
    return facade.local.remove_check(check_id).addCallback(lambda _: EMPTY)


def _ttl(status: str):
    def handler(facade, request, params, check_id: str):
        note = request.query.get("note", [""])[0]
        return facade.local.update_ttl(check_id, status, note).addCallback(lambda _: EMPTY)
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
    return facade.local.update_ttl(check_id, status, output).addCallback(lambda _: EMPTY)


def _json_kind(value) -> str:
    """Go's name for a JSON value's type, as its decode errors spell it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")
