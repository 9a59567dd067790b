"""Refuses settings that promise a protection (or a cluster) Waypost does not give yet.

Owns the list of such settings. Accepting one of them with a warning would fail open: an agent
with ``acl { enabled = true, default_policy = "deny" }`` would take anonymous writes, one with
``encrypt`` would gossip in the clear. So each of
them stops start-up (and a reload) with one line saying what is not supported yet.

Settings without such a consequence are accepted with a warning instead
(`agent.config.support`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent.config.validate import ConfigError

Origin = Callable[[str], str | None]

_GUARD = "refusing to start without the protection {it} promise{s}"
_TLS = "TLS is not supported yet; " + _GUARD.format(it="it", s="s")
# Consul's text (its client logs it and exits 1): only servers are members of the WAN pool.
_WAN_JOIN = "Must be a server to join WAN cluster"


def _get(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def refusals(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (key, "what: why") the merged, translated ``config`` sets that must refuse."""
    out: list[tuple[str, str]] = []

    def refuse(key: str, label: str, reason: str) -> None:
        out.append((key, f"{label}: {reason}"))

    enabled = _get(config, "acl.enabled")
    acl_reason = "ACLs are not supported yet; " + _GUARD.format(it="they", s="")
    if enabled is True:
        refuse("acl.enabled", "acl.enabled = true", acl_reason)
    elif enabled is None and _get(config, "acl_datacenter"):
        refuse("acl_datacenter", f"acl_datacenter = {_show(config['acl_datacenter'])} (it turns "
               "ACLs on)", acl_reason)
    for key in ("verify_incoming", "verify_incoming_rpc", "verify_incoming_https",
                "verify_outgoing", "verify_server_hostname", "auto_encrypt.tls"):
        if _get(config, key) is True:
            refuse(key, f"{key} = true", _TLS)
    if _get(config, "cert_file") and _get(config, "key_file"):
        refuse("cert_file", "cert_file and key_file (they turn TLS on)", _TLS)
    if _get(config, "auto_config.enabled") is True:
        refuse("auto_config.enabled", "auto_config.enabled = true",
               "auto-config (TLS certificates and ACL tokens from the servers) is not supported "
               "yet; " + _GUARD.format(it="it", s="s"))
    for key, what in (("http_config.allow_write_http_from", "limiting HTTP writes to some "
                       "client addresses"), ("http_config.block_endpoints",
                                             "blocking HTTP endpoints")):
        if _get(config, key):
            refuse(key, key, f"{what} is not supported yet; " + _GUARD.format(it="it", s="s"))
    for key in ("start_join_wan", "retry_join_wan"):
        if _get(config, key) and _get(config, "server") is False:
            refuse(key, f"{key} = {_show(' '.join(config[key]))}", _WAN_JOIN)
    if _get(config, "segment") or _get(config, "segments"):
        key = "segment" if _get(config, "segment") else "segments"
        refuse(key, key, "Network segments are not supported in this version of Consul")
    return out


def check_safety(config: Mapping[str, Any], origin: Origin) -> None:
    """Raise `ConfigError` for the first refused setting, naming the source that set it."""
    for key, problem in refusals(config):
        source = origin(key)
        raise ConfigError(f"{source}: {problem}" if source else problem)
