"""Consul's JSON for /v1/agent/self and /v1/agent/members: Config, Stats, Member.

The DebugConfig section comes from `gateway.http.debug_config`.
"""

from __future__ import annotations

from typing import Any

from gateway.http.debug_config import debug_config
from gateway.http.encode import go_map


def member(m) -> dict[str, Any]:
    """A Serf member as /v1/agent/members and /v1/agent/self show it."""
    return {"Name": m.name, "Addr": m.addr, "Port": m.port, "Tags": dict(sorted(m.tags.items())),
            "Status": m.status, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
            "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}


def wan_member(m, c) -> dict[str, Any]:
    """This server as the WAN pool shows it: ``node.dc`` on the Serf WAN port and address,
    without the LAN-only ``wan_join_port`` tag (Consul 1.8.7)."""
    tags = {k: v for k, v in m.tags.items() if k != "wan_join_port"}
    settings = getattr(c, "settings", {}) or {}
    addr = settings.get("advertise_addr_wan") or m.addr
    return {**member(m), "Name": f"{m.name}.{c.datacenter}", "Addr": addr,
            "Port": c.ports.serf_wan, "Tags": dict(sorted(tags.items()))}


def _serf_stats(members: int) -> dict[str, str]:
    return {"coordinate_resets": "0", "encrypted": "false", "event_queue": "0",
            "event_time": "1", "failed": "0", "health_score": "0", "intent_queue": "0",
            "left": "0", "member_time": "1", "members": str(members), "query_queue": "0",
            "query_time": "1"}


def agent_stats(stats: dict, c, members: int) -> dict[str, dict[str, str]]:
    """Consul's Stats sections with every key it always sends; the agent's own figures win."""
    raft = {"last_snapshot_index": "0", "last_snapshot_term": "0",
            "latest_configuration":
                f"[{{Suffrage:Voter ID:{c.node_id} Address:{c.server_rpc_addr}}}]",
            "latest_configuration_index": "0", "protocol_version": "3",
            "protocol_version_max": "3", "protocol_version_min": "0",
            "snapshot_version_max": "1", "snapshot_version_min": "0"}
    # One reactor thread runs everything: that is our GOMAXPROCS and our goroutine count.
    runtime = {"goroutines": "1", "max_procs": "1"}
    defaults = {"raft": raft, "runtime": runtime, "serf_lan": _serf_stats(members),
                "serf_wan": _serf_stats(1)}
    out = {}
    for section in sorted(set(stats) | set(defaults)):
        merged = {**defaults.get(section, {}), **stats.get(section, {})}
        out[section] = dict(sorted(merged.items()))
    return out


def agent_self(c, version: str, members: list, stats: dict,
               extra: dict[str, Any]) -> dict[str, Any]:
    """/v1/agent/self. No "xDS" section: Consul sends it only when its gRPC server runs."""
    settings = getattr(c, "settings", {}) or {}
    return {
        "Config": {"Datacenter": c.datacenter, "NodeName": c.node_name, "NodeID": c.node_id,
                   "Revision": settings.get("revision", ""), "Server": c.server,
                   "Version": version},
        "DebugConfig": debug_config(c, version),
        "Coord": {"Vec": [0] * 8, "Error": 1.5, "Adjustment": 0, "Height": 0.00001},
        "Member": member(members[0]),
        "Stats": agent_stats(stats, c, len(members)),
        "Meta": go_map({"consul-network-segment": "", **c.node_meta}),
        **extra,
    }
