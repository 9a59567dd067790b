"""The member tags Consul 1.8.7 agents advertise, and the ones Waypost advertises instead.

Observed from a real Consul 1.8.7 (`consul members -detailed`, /v1/agent/members):
  client: role=node dc segment id vsn=2 vsn_min=2 vsn_max=3 build=1.8.7: acls=0
  server: role=consul dc segment id vsn vsn_min vsn_max build acls port=<server RPC port>
          raft_vsn=3 wan_join_port=<serf WAN port> ft_fs=1 [bootstrap=1] [expect=N]
          [nonvoter=1] [use_tls=1]
and the Serf vsn bytes (1, 5, 2, 2, 5, 4): memberlist protocol 2, Serf protocol 4.

Waypost's choice: every Waypost agent, server or not, advertises `role=node`. A Consul server
adds any `role=consul` member to its Raft configuration and Consul clients send it RPCs, and a
Waypost server speaks neither Consul's Raft nor all of its RPC surface. So Waypost servers
hide behind the client role and announce themselves with their own tags, which Consul ignores:
`wp=server` (or `wp=client`) and `wp_port=<server RPC port>`. Waypost clients pick their
servers from `wp=server` members of their datacenter; Consul agents see Waypost servers as
plain client nodes. A pool mixing Consul servers with Waypost servers therefore has two server
sets that do not share state (see docs/ for the mixed-pool limits).
"""

from __future__ import annotations

from typing import Mapping

CONSUL_BUILD = "1.8.7:"
WAYPOST_BUILD = "1.8.7:waypost"  # `consul members` shows the part before ':' as Build
CONSUL_VSN = {"vsn": "2", "vsn_min": "2", "vsn_max": "3"}
WAYPOST_ROLE_TAG = "wp"
WAYPOST_PORT_TAG = "wp_port"


def consul_agent_tags(*, node_id: str, datacenter: str, server: bool, segment: str = "",
                      build: str = CONSUL_BUILD, acls: str = "0", server_port: int = 8300,
                      wan_join_port: int | None = 8302, bootstrap: bool = False,
                      expect: int = 0, nonvoter: bool = False, use_tls: bool = False
                      ) -> dict[str, str]:
    """The tags a Consul 1.8.7 agent would advertise (for tests and interop reasoning)."""
    tags = {"role": "consul" if server else "node", "dc": datacenter, "segment": segment,
            "id": node_id, "build": build, "acls": acls, **CONSUL_VSN}
    if server:
        tags.update({"port": str(server_port), "raft_vsn": "3", "ft_fs": "1"})
        if wan_join_port is not None:
            tags["wan_join_port"] = str(wan_join_port)
        if bootstrap:
            tags["bootstrap"] = "1"
        if expect:
            tags["expect"] = str(expect)
        if nonvoter:
            tags["nonvoter"] = "1"
        if use_tls:
            tags["use_tls"] = "1"
    return tags


WAYPOST_EXPECT_TAG = "wp_expect"
WAYPOST_BOOTSTRAP_TAG = "wp_bootstrap"


def waypost_agent_tags(*, node_id: str, datacenter: str, server: bool,
                       server_port: int | None = None, segment: str = "",
                       acls: str = "0", expect: int = 0,
                       bootstrap: bool = False) -> dict[str, str]:
    """What a Waypost agent advertises: Consul's client tags plus Waypost's own."""
    tags = consul_agent_tags(node_id=node_id, datacenter=datacenter, server=False,
                             segment=segment, build=WAYPOST_BUILD, acls=acls)
    tags[WAYPOST_ROLE_TAG] = "server" if server else "client"
    if server:
        if server_port is None:
            raise ValueError("a Waypost server must advertise its server port")
        tags[WAYPOST_PORT_TAG] = str(server_port)
        # Consul's `expect` and `bootstrap` tags, under Waypost's names: servers count the
        # servers expecting the same cluster size before bootstrapping it.
        if expect:
            tags[WAYPOST_EXPECT_TAG] = str(expect)
        if bootstrap:
            tags[WAYPOST_BOOTSTRAP_TAG] = "1"
    return tags


def waypost_server_port(tags: Mapping[str, str], datacenter: str | None = None) -> int | None:
    """The server RPC port a member's tags advertise if it is a Waypost server (of
    `datacenter`, when given); None for anything else, including every Consul agent."""
    if tags.get(WAYPOST_ROLE_TAG) != "server" or tags.get("role") == "consul":
        return None
    if datacenter is not None and tags.get("dc") != datacenter:
        return None
    try:
        port = int(tags.get(WAYPOST_PORT_TAG, ""))
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


def is_consul_server(tags: Mapping[str, str]) -> bool:
    """Consul's own test (role=consul): such members are Raft peers to Consul servers."""
    return tags.get("role") == "consul"
