"""JSON the way Consul writes it. The Consul shapes of rows come from the core
(`agent.rpc.shapes`, through the facade), so the HTTP API, `?filter=` and the server RPC
agree on every field name; they are re-exported here for the handlers."""

from __future__ import annotations

import json
from typing import Any

from agent.facade import go_duration, shapes

go_map = shapes.go_map
node = shapes.node
service = shapes.service
agent_service = shapes.agent_service
catalog_service = shapes.catalog_service
definition = shapes.definition
check = shapes.check
agent_health_check = shapes.agent_health_check
agent_service_health = shapes.agent_service_health
kv = shapes.kv

__all__ = ["dumps", "go_duration", "go_map", "node", "service", "agent_service",
           "catalog_service", "definition", "check", "agent_health_check",
           "agent_service_health", "kv"]


def dumps(obj: Any, pretty: bool) -> bytes:
    """JSON the way Consul writes it: 4-space indent and a newline when pretty, else compact."""
    if pretty:
        return (json.dumps(obj, indent=4, ensure_ascii=False) + "\n").encode("utf-8")
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
