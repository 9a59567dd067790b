"""JSON codecs for the state rows, shared by log entries and snapshots.

Plain dicts of JSON types with our own (snake_case) names; bytes as base64. Never pickle:
snapshots and logs must be readable by other versions.
"""

from __future__ import annotations

import base64
from typing import Any

from agent.structs import (
    Check,
    CheckDefinition,
    KVEntry,
    Node,
    Service,
    ServiceAddress,
    ServiceCheck,
    Session,
    Weights,
)


def encode_node(node: Node) -> dict[str, Any]:
    return {"name": node.name, "address": node.address, "node_id": node.node_id,
            "datacenter": node.datacenter, "tagged_addresses": dict(node.tagged_addresses),
            "meta": dict(node.meta), "create_index": node.create_index,
            "modify_index": node.modify_index}


def decode_node(data: dict[str, Any]) -> Node:
    return Node(name=data["name"], address=data["address"], node_id=data.get("node_id", ""),
                datacenter=data.get("datacenter", "dc1"),
                tagged_addresses=dict(data.get("tagged_addresses") or {}),
                meta=dict(data.get("meta") or {}), create_index=data.get("create_index", 0),
                modify_index=data.get("modify_index", 0))


def encode_service(service: Service) -> dict[str, Any]:
    return {"node": service.node, "id": service.id, "name": service.name,
            "tags": list(service.tags), "address": service.address, "port": service.port,
            "meta": dict(service.meta),
            "tagged_addresses": {k: [v.address, v.port] for k, v in service.tagged_addresses.items()},
            "weights": [service.weights.passing, service.weights.warning],
            "enable_tag_override": service.enable_tag_override, "kind": service.kind,
            "create_index": service.create_index, "modify_index": service.modify_index}


def decode_service(data: dict[str, Any]) -> Service:
    passing, warning = data.get("weights") or (1, 1)
    return Service(node=data["node"], id=data["id"], name=data["name"],
                   tags=tuple(data.get("tags") or ()), address=data.get("address", ""),
                   port=data.get("port", 0), meta=dict(data.get("meta") or {}),
                   tagged_addresses={k: ServiceAddress(a, p) for k, (a, p) in
                                     (data.get("tagged_addresses") or {}).items()},
                   weights=Weights(passing, warning),
                   enable_tag_override=data.get("enable_tag_override", False),
                   kind=data.get("kind", ""), create_index=data.get("create_index", 0),
                   modify_index=data.get("modify_index", 0))


def encode_definition(d: CheckDefinition) -> dict[str, Any]:
    return {"interval": d.interval, "timeout": d.timeout,
            "deregister_critical_service_after": d.deregister_critical_service_after,
            "http": d.http, "header": None if d.header is None else {k: list(v) for k, v in d.header.items()},
            "method": d.method, "body": d.body, "tls_skip_verify": d.tls_skip_verify, "tcp": d.tcp}


def decode_definition(data: dict[str, Any] | None) -> CheckDefinition:
    if not data:
        return CheckDefinition()
    header = data.get("header")
    return CheckDefinition(
        interval=data.get("interval", 0.0), timeout=data.get("timeout", 0.0),
        deregister_critical_service_after=data.get("deregister_critical_service_after", 0.0),
        http=data.get("http", ""), header=None if header is None else {k: tuple(v) for k, v in header.items()},
        method=data.get("method", ""), body=data.get("body", ""),
        tls_skip_verify=data.get("tls_skip_verify", False), tcp=data.get("tcp", ""))


def encode_check(check: Check) -> dict[str, Any]:
    return {"node": check.node, "check_id": check.check_id, "name": check.name,
            "status": check.status, "notes": check.notes, "output": check.output,
            "service_id": check.service_id, "service_name": check.service_name,
            "service_tags": list(check.service_tags), "type": check.type,
            "definition": encode_definition(check.definition),
            "create_index": check.create_index, "modify_index": check.modify_index}


def decode_check(data: dict[str, Any]) -> Check:
    return Check(node=data["node"], check_id=data["check_id"], name=data.get("name", ""),
                 status=data.get("status", "critical"), notes=data.get("notes", ""),
                 output=data.get("output", ""), service_id=data.get("service_id", ""),
                 service_name=data.get("service_name", ""),
                 service_tags=tuple(data.get("service_tags") or ()), type=data.get("type", ""),
                 definition=decode_definition(data.get("definition")),
                 create_index=data.get("create_index", 0), modify_index=data.get("modify_index", 0))


def encode_kv(entry: KVEntry) -> dict[str, Any]:
    return {"key": entry.key,
            "value": None if entry.value is None else base64.b64encode(entry.value).decode("ascii"),
            "flags": entry.flags, "lock_index": entry.lock_index, "session": entry.session,
            "create_index": entry.create_index, "modify_index": entry.modify_index}


def decode_kv(data: dict[str, Any]) -> KVEntry:
    value = data.get("value")
    return KVEntry(key=data["key"], value=None if value is None else base64.b64decode(value),
                   flags=data.get("flags", 0), lock_index=data.get("lock_index", 0),
                   session=data.get("session", ""), create_index=data.get("create_index", 0),
                   modify_index=data.get("modify_index", 0))


def encode_session(session: Session) -> dict[str, Any]:
    # "service_checks" and "legacy_checks" were added later: decode_session reads rows
    # without them, and an older reader ignores them (and reads a null "checks" as none).
    service_checks = session.service_checks
    return {"id": session.id, "name": session.name, "node": session.node,
            "checks": None if session.checks is None else list(session.checks),
            "lock_delay": session.lock_delay,
            "behavior": session.behavior, "ttl": session.ttl,
            "create_index": session.create_index, "modify_index": session.modify_index,
            "service_checks": None if service_checks is None else
            [[c.id, c.namespace] for c in service_checks],
            "legacy_checks": list(session.legacy_checks)}


def decode_session(data: dict[str, Any]) -> Session:
    checks = data.get("checks", ())
    service_checks = data.get("service_checks")
    return Session(id=data["id"], name=data.get("name", ""), node=data.get("node", ""),
                   checks=None if checks is None else tuple(checks),
                   lock_delay=data.get("lock_delay", 15.0),
                   behavior=data.get("behavior", "release"), ttl=data.get("ttl", 0.0),
                   create_index=data.get("create_index", 0),
                   modify_index=data.get("modify_index", 0),
                   service_checks=None if service_checks is None else
                   tuple(ServiceCheck(i, ns) for i, ns in service_checks),
                   legacy_checks=tuple(data.get("legacy_checks") or ()))
