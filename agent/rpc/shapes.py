"""Consul's shapes for the core's rows: the Go structs' field names and JSON forms.

The one place the core spells Consul's field names (`ServiceName`, `ModifyIndex`, ...). The
HTTP API encodes its answers with these; `?filter=` expressions select fields of these shapes;
the server RPC of a later issue sends them in msgpack frames.
"""

from __future__ import annotations

import base64
from typing import Any

from agent.durations import go_duration
from agent.structs import Check, CheckDefinition, KVEntry, Node, Service


def go_map(m) -> dict:
    """Go's encoding/json writes a map with its keys sorted; so do we, to answer byte for byte."""
    return dict(sorted(m.items()))


def node(n: Node) -> dict[str, Any]:
    return {"ID": n.node_id, "Node": n.name, "Address": n.address, "Datacenter": n.datacenter,
            "TaggedAddresses": go_map(n.tagged_addresses) or None,
            "Meta": go_map(n.meta) or None,
            "CreateIndex": n.create_index, "ModifyIndex": n.modify_index}


def _tagged(s: Service) -> dict[str, Any] | None:
    if not s.tagged_addresses:
        return None
    return {k: {"Address": v.address, "Port": v.port}
            for k, v in sorted(s.tagged_addresses.items())}


def service(s: Service) -> dict[str, Any]:
    """A service as /v1/catalog/node and /v1/health/service show it (NodeService)."""
    out: dict[str, Any] = {"ID": s.id, "Service": s.name, "Tags": list(s.tags),
                           "Address": s.address}
    tagged = _tagged(s)
    if tagged:
        out["TaggedAddresses"] = tagged
    out.update({"Meta": go_map(s.meta) or None, "Port": s.port,
                "Weights": {"Passing": s.weights.passing, "Warning": s.weights.warning},
                "EnableTagOverride": s.enable_tag_override,
                "Proxy": {"MeshGateway": {}, "Expose": {}}, "Connect": {},
                "CreateIndex": s.create_index, "ModifyIndex": s.modify_index})
    if s.kind:
        out = {"Kind": s.kind, **out}
    return out


def agent_service(s: Service) -> dict[str, Any]:
    """A service as /v1/agent/services shows it (no indexes, Meta always a map)."""
    out: dict[str, Any] = {"ID": s.id, "Service": s.name, "Tags": list(s.tags),
                           "Meta": go_map(s.meta), "Port": s.port, "Address": s.address}
    tagged = _tagged(s)
    if tagged:
        out["TaggedAddresses"] = tagged
    out["Weights"] = {"Passing": s.weights.passing, "Warning": s.weights.warning}
    out["EnableTagOverride"] = s.enable_tag_override
    if s.kind:
        out = {"Kind": s.kind, **out}
    return out


def catalog_service(n: Node, s: Service) -> dict[str, Any]:
    """One row of /v1/catalog/service/<name> (ServiceNode)."""
    out: dict[str, Any] = {
        "ID": n.node_id, "Node": n.name, "Address": n.address, "Datacenter": n.datacenter,
        "TaggedAddresses": go_map(n.tagged_addresses) or None,
        "NodeMeta": go_map(n.meta) or None,
        "ServiceKind": s.kind, "ServiceID": s.id, "ServiceName": s.name,
        "ServiceTags": list(s.tags), "ServiceAddress": s.address}
    tagged = _tagged(s)
    if tagged:
        out["ServiceTaggedAddresses"] = tagged
    out.update({
        "ServiceWeights": {"Passing": s.weights.passing, "Warning": s.weights.warning},
        "ServiceMeta": go_map(s.meta), "ServicePort": s.port,
        "ServiceEnableTagOverride": s.enable_tag_override,
        "ServiceProxy": {"MeshGateway": {}, "Expose": {}}, "ServiceConnect": {},
        "CreateIndex": s.create_index, "ModifyIndex": s.modify_index})
    return out


def definition(d: CheckDefinition) -> dict[str, Any]:
    if d == CheckDefinition():
        return {}
    return _full_definition(d)


def _full_definition(d: CheckDefinition) -> dict[str, Any]:
    return {"Interval": go_duration(d.interval), "Timeout": go_duration(d.timeout),
            "DeregisterCriticalServiceAfter": go_duration(d.deregister_critical_service_after),
            "HTTP": d.http, "Header": None if d.header is None else
            {k: list(v) for k, v in sorted(d.header.items())},
            "Method": d.method, "Body": d.body, "TLSSkipVerify": d.tls_skip_verify, "TCP": d.tcp}


def check(c: Check, with_indexes: bool = True) -> dict[str, Any]:
    return {"Node": c.node, "CheckID": c.check_id, "Name": c.name, "Status": c.status,
            "Notes": c.notes, "Output": c.output, "ServiceID": c.service_id,
            "ServiceName": c.service_name, "ServiceTags": list(c.service_tags), "Type": c.type,
            "Definition": definition(c.definition),
            "CreateIndex": c.create_index if with_indexes else 0,
            "ModifyIndex": c.modify_index if with_indexes else 0}


def agent_health_check(c: Check) -> dict[str, Any]:
    """A check as /v1/agent/health/service/* shows it: Consul copies only the status fields into
    its API struct there, so Type is empty and Definition is the zero value."""
    return {"Node": c.node, "CheckID": c.check_id, "Name": c.name, "Status": c.status,
            "Notes": c.notes, "Output": c.output, "ServiceID": c.service_id,
            "ServiceName": c.service_name, "ServiceTags": list(c.service_tags), "Type": "",
            "Definition": _full_definition(CheckDefinition()), "CreateIndex": 0, "ModifyIndex": 0}


def agent_service_health(status: str, s: Service | None,
                         checks: list[Check] | None) -> dict[str, Any]:
    """One entry of /v1/agent/health/service/* (AgentServiceChecksInfo)."""
    return {"AggregatedStatus": status,
            "Service": None if s is None else agent_service(s),
            "Checks": None if checks is None else [agent_health_check(c) for c in checks]}


def kv(e: KVEntry) -> dict[str, Any]:
    value = None if not e.value else base64.b64encode(e.value).decode("ascii")
    out: dict[str, Any] = {"LockIndex": e.lock_index, "Key": e.key, "Flags": e.flags,
                           "Value": value}
    if e.session:
        out["Session"] = e.session
    out["CreateIndex"] = e.create_index
    out["ModifyIndex"] = e.modify_index
    return out
