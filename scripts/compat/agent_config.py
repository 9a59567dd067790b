"""The agent configuration py-consul's Docker fixture uses, in Consul 1.8 spelling.

py-consul 1.8.0's root conftest.py starts `hashicorp/consul:<version>` with
`agent -dev -client=0.0.0.0 -log-level trace` and a CONSUL_LOCAL_CONFIG json. We start a
local process instead, so that json becomes a -config-file. Its keys are written for
Consul 1.20+, so two are renamed or dropped for a 1.8 agent (real Consul 1.8.7 refuses both
spellings with "invalid config key"):

- ``ports.grpc_tls`` appeared in Consul 1.14; 1.8 has no gRPC TLS port, so it is dropped.
- ``acl.tokens.initial_management`` was ``acl.tokens.master`` before Consul 1.11.

Everything else is passed unchanged. The harness adds only the port numbers it needs so that
several agents can run side by side on free ports (the container had its own network).
"""

from __future__ import annotations

import copy
from typing import Any

# CONSUL_LOCAL_CONFIG of the Docker fixture (py-consul 1.8.0, conftest.py), as data.
FIXTURE_BASE_CONFIG: dict[str, Any] = {
    "ports": {"https": -1, "dns": -1, "grpc_tls": -1},
    "performance": {"raft_multiplier": 1},
    "enable_script_checks": True,
}


def fixture_config(acl_token: str | None) -> dict[str, Any]:
    """The fixture's config (1.20+ spelling), with the ACL keys it adds when asked for."""
    config = copy.deepcopy(FIXTURE_BASE_CONFIG)
    if acl_token:
        config["primary_datacenter"] = "dc1"
        config["acl"] = {"enabled": True, "tokens": {"initial_management": acl_token}}
    return config


def to_consul_18(config: dict[str, Any]) -> dict[str, Any]:
    """The same settings spelled the way Consul 1.8 (and so Waypost) reads them."""
    out = copy.deepcopy(config)
    out.get("ports", {}).pop("grpc_tls", None)
    tokens = out.get("acl", {}).get("tokens", {})
    if "initial_management" in tokens:
        tokens["master"] = tokens.pop("initial_management")
    return out


def with_ports(config: dict[str, Any], http: int, serf_lan: int, serf_wan: int,
               server: int, grpc: int) -> dict[str, Any]:
    """`config` plus the listening ports of one local agent; DNS stays as the fixture set it."""
    out = copy.deepcopy(config)
    out.setdefault("ports", {}).update(
        {"http": http, "serf_lan": serf_lan, "serf_wan": serf_wan, "server": server, "grpc": grpc})
    return out


def drop_keys(config: dict[str, Any], dotted: list[str]) -> dict[str, Any]:
    """`config` without the given dotted keys (``ports.https``); missing keys are ignored."""
    out = copy.deepcopy(config)
    for key in dotted:
        *parents, leaf = key.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out
