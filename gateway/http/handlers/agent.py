"""/v1/agent/*: this agent's own facts and its local services and checks."""

from __future__ import annotations

import hashlib

from agent import structs
from agent.config.model import VERSION, WAYPOST_VERSION
from agent.definitions import parse_check_definition, parse_service_definition
from agent.errors import InvalidRequest, NotFound
from gateway.http import encode
from gateway.http.decode import json_body
from gateway.http.results import EMPTY

SCRIPTS_DISABLED = ("Scripts are disabled on this agent; to enable, configure "
                    "'enable_script_checks' to true")


def _member(m) -> dict:
    return {"Name": m.name, "Addr": m.addr, "Port": m.port, "Tags": dict(sorted(m.tags.items())),
            "Status": m.status, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
            "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}


def self_info(facade, request, params, arg):
    c = facade.config
    addr = c.advertise
    return {
        "Config": {"Datacenter": c.datacenter, "NodeName": c.node_name, "NodeID": c.node_id,
                   "Revision": "", "Server": c.server, "Version": VERSION},
        "DebugConfig": {
            "Datacenter": c.datacenter, "NodeName": c.node_name, "NodeID": c.node_id,
            "DevMode": c.dev, "ServerMode": c.server, "BindAddr": c.bind_addr,
            "AdvertiseAddrLAN": addr, "AdvertiseAddrWAN": addr, "ClientAddrs": [c.client_addr],
            "DataDir": c.data_dir, "DNSDomain": c.domain, "DNSPort": c.ports.dns,
            "HTTPPort": c.ports.http, "ServerPort": c.ports.server,
            "SerfPortLAN": c.ports.serf_lan, "SerfPortWAN": c.ports.serf_wan,
            "KVMaxValueSize": c.kv_max_value_size, "Version": VERSION,
            "Logging": {"LogLevel": c.log_level.upper(), "EnableSyslog": c.enable_syslog}},
        "Coord": {"Vec": [0] * 8, "Error": 1.5, "Adjustment": 0, "Height": 0.00001},
        "Member": _member(facade.members()[0]),
        "Stats": facade.stats(),
        "Meta": {"consul-network-segment": "", **c.node_meta},
        "Waypost": {"Version": WAYPOST_VERSION, "Plugins": facade.plugin_names()},
    }


def members(facade, request, params, arg):
    return [_member(m) for m in facade.members()]


def services(facade, request, params, arg):
    return {sid: encode.agent_service(s) for sid, s in sorted(facade.local.services.items())}


def service(facade, request, params, service_id: str):
    found = facade.local.services.get(service_id)
    if found is None:
        raise NotFound(f"unknown service ID: {service_id}")
    body = encode.agent_service(found)
    digest = hashlib.sha256(encode.dumps(body, False)).hexdigest()[:16]
    body["ContentHash"] = digest
    return body


def checks(facade, request, params, arg):
    return {cid: encode.check(lc.check, with_indexes=False)
            for cid, lc in sorted(facade.local.checks.items())}


def _refuse_scripts(specs) -> None:
    for spec in specs:
        if spec.type == "script":
            raise InvalidRequest(SCRIPTS_DISABLED)


def register_service(facade, request, params, arg):
    definition = parse_service_definition(json_body(request), facade.schemas)
    _refuse_scripts(definition.checks)
    return facade.local.add_service(definition).addCallback(lambda _: EMPTY)


def deregister_service(facade, request, params, service_id: str):
    return facade.local.remove_service(service_id).addCallback(lambda _: EMPTY)


def register_check(facade, request, params, arg):
    spec = parse_check_definition(json_body(request), facade.schemas)
    _refuse_scripts([spec])
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
    if not isinstance(body, dict):
        raise InvalidRequest("Request decode failed: body must be a JSON object")
    fields = {k.lower(): v for k, v in body.items()}
    unknown = set(fields) - {"status", "output"}
    if unknown:
        raise InvalidRequest(f'Unknown field "{sorted(unknown)[0]}"')
    status = fields.get("status", "")
    output = fields.get("output", "")
    if not isinstance(status, str) or status not in (structs.PASSING, structs.WARNING, structs.CRITICAL):
        raise InvalidRequest(f'Invalid check status: "{status}"')
    if not isinstance(output, str):
        raise InvalidRequest('Invalid field "Output": must be a string')
    return facade.local.update_ttl(check_id, status, output).addCallback(lambda _: EMPTY)
