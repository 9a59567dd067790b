"""/v1/agent/members, join, leave and force-leave: the gossip pool as Consul's agent API shows it.

Everything goes through `facade.gossip` (`agent.gossip.control.GossipControl`); an agent
without gossip (in-process tests) answers the writes with a clear error. Consul 1.8.7 reports
a join that nobody answered as a 500 whose body is Go's multierror text ("1 error occurred:
... Failed to join <ip>: ..."); we keep that shape, since clients print it as is, but a
malformed address is the caller's fault and gets a 400.
"""

from __future__ import annotations

from agent.errors import InvalidRequest, WaypostError
from gateway.http import encode_self
from gateway.http.results import EMPTY

# Consul's `members -segment` sends "_all" by default; OSS has no other segment.
_ALL_SEGMENTS = ("", "_all")
_NO_GOSSIP = "This agent is not a member of a gossip pool"


def _multierror(line: str) -> str:
    # Go's hashicorp/go-multierror text, which Consul's join answers with.
    return f"1 error occurred:\n\t* {line}\n\n"


def _split(address: str) -> tuple[str, int]:
    """"host", "host:port", "[v6]:port" or a bare IPv6 address, as Consul's join takes them
    (port 0: none named). Raises ValueError saying what is wrong."""
    host, port = address, "0"
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("missing port after the address")
            port = rest[1:]
    elif address.count(":") == 1:
        host, port = address.split(":")
    if not host:
        raise ValueError("no host")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid port {port!r}")
    return host, int(port)


def _wan(request) -> bool:
    # Consul takes any non-empty ?wan value (even "0" or "false") as "the WAN pool".
    return bool(request.query.get("wan", [""])[0])


def _gossip(facade):
    if facade.gossip is None:
        raise WaypostError(_NO_GOSSIP)
    return facade.gossip


def members(facade, request, params, arg):
    segment = request.query.get("segment", [""])[0]
    if segment not in _ALL_SEGMENTS:
        raise InvalidRequest("Network segments are not supported in this version of Consul")
    found = facade.members()
    if _wan(request):
        config = facade.config
        if facade.gossip is not None:
            # A server's WAN pool (names "<node>.<dc>"); a client has none: Consul's null.
            wan = facade.gossip.wan_members()
            return None if wan is None else [encode_self.member(m) for m in wan]
        if not config.server:
            return []
        # An agent without gossip (in-process tests): the server alone in its WAN pool.
        own = [m for m in found if m.name == config.node_name] or found[:1]
        return [encode_self.wan_member(m, config) for m in own]
    return [encode_self.member(m) for m in found]


def join(facade, request, params, address: str):
    """PUT /v1/agent/join/<address>: one push-pull with that address (Consul's handler joins
    exactly the one address in the path)."""
    gossip = _gossip(facade)
    wan = _wan(request)
    try:
        host, port = _split(address)
    except ValueError as exc:
        raise InvalidRequest(_multierror(f"Failed to resolve {address}: {exc}")) from None
    if not port:
        # No port named: the pool's own Serf port, as Consul assumes.
        port = facade.config.ports.serf_wan if wan else facade.config.ports.serf_lan
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def joined(count: int):
        if not count:
            raise WaypostError(_multierror(
                f"Failed to join {host}: no gossip agent answered at {target}"))
        return EMPTY
    return gossip.join([target], wan=wan).addCallback(joined)


def leave(facade, request, params, arg):
    """PUT /v1/agent/leave: leave the pool gracefully, then shut the agent down (Consul 1.8.7
    answers 200 once it has left, and its process then exits 0)."""
    gossip = _gossip(facade)

    def left(_):
        if facade.shutdown is not None:
            facade.shutdown()
        return EMPTY
    return gossip.leave().addCallback(left)


def force_leave(facade, request, params, node: str):
    """PUT /v1/agent/force-leave/<node>[?prune]: a failed member becomes left (with prune,
    forgotten at once). Consul looks only at whether `prune` is present."""
    gossip = _gossip(facade)
    prune = "prune" in request.query
    return gossip.force_leave(node, prune).addCallback(lambda _: EMPTY)
