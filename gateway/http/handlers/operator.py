"""/v1/operator/raft/* and /v1/operator/autopilot/*: the cluster's consensus, for operators.

Thin handlers over `facade.operator` (`agent.operator.OperatorControl`), answering with Consul
1.8.7's shapes, status codes and texts (agent/operator_endpoint.go):

- raft/configuration (GET, ?stale): the Raft configuration, 200 JSON without index headers;
- raft/peer (DELETE, ?id= or ?address=): 200 with no body; Consul's 400 texts when neither or
  both are given, and its 500 text when the peer is not in the configuration;
- raft/transfer-leader (POST, ?id=): not in 1.8.7; later Consul's shape, {"Success": true};
- autopilot/health (GET): 200 when healthy, else 429 with the same body;
- autopilot/configuration (GET, PUT with ?cas).

An agent without consensus to ask (`facade.operator` is None) answers as a Consul agent that
knows no server does: 500 "No known Consul servers".
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from agent.errors import InvalidRequest, NoServers, NotFound, WaypostError
from agent.facade import STALE, go_quote
from gateway.http.decode import json_body, uint
from gateway.http.encode import dumps
from gateway.http.request import Request, Response
from gateway.http.results import EMPTY

_TEXT = b"text/plain; charset=utf-8"
_VARY = (b"Vary", b"Accept-Encoding")


def _operator(facade, params) -> Any:
    """`facade.operator`, refusing what it cannot do: no consensus here, or another DC."""
    operator = getattr(facade, "operator", None)
    if operator is None:
        raise NoServers()
    dc = params.dc
    if dc and dc != facade.config.datacenter:
        # OperatorControl speaks for this datacenter's servers only; saying so beats
        # answering with the local cluster's view under another datacenter's name.
        raise WaypostError(f"Operator requests to another datacenter ({dc}) are not "
                           "supported by this agent")
    return operator


def _param(request: Request, name: str) -> str | None:
    """The first value of `name` (present but empty is ""); None when absent, as Go's
    `_, ok := params[name]` tells."""
    values = request.query.get(name)
    return None if values is None else (values[0] if values else "")


# --- raft ---

def _raft_server(server: dict) -> dict:
    return {"ID": server.get("ID", ""), "Node": server.get("Node", ""),
            "Address": server.get("Address", ""), "Leader": bool(server.get("Leader")),
            "ProtocolVersion": server.get("ProtocolVersion", ""),
            "Voter": bool(server.get("Voter"))}


def raft_configuration(facade, request: Request, params, arg: str) -> Deferred:
    """GET /v1/operator/raft/configuration: RaftConfigurationResponse."""
    operator = _operator(facade, params)

    def encode(reply: dict) -> dict:
        return {"Servers": [_raft_server(s) for s in reply.get("Servers") or ()],
                "Index": int(reply.get("Index", 0))}
    return operator.raft_configuration(stale=params.consistency == STALE).addCallback(encode)


def raft_peer(facade, request: Request, params, arg: str) -> Deferred | Any:
    """DELETE /v1/operator/raft/peer?id=...|?address=...: remove a server from Raft."""
    server_id, address = _param(request, "id"), _param(request, "address")
    # Consul checks the arguments before it looks at the datacenter (the route is local so
    # that this order holds).
    if server_id is None and address is None:
        raise InvalidRequest("Bad request: Must specify either ?id with the server's ID or "
                             "?address with IP:port of peer to remove")
    if server_id is not None and address is not None:
        raise InvalidRequest("Bad request: Must specify only one of ?id or ?address")
    facade.check_datacenter(params.dc)
    operator = _operator(facade, params)
    what, value = ("id", server_id) if server_id is not None else ("address", address)
    # Consul's Operator.RaftRemovePeerBy* error, whatever words the core chose: scripts
    # match on it, and an empty value can never name a peer.
    missing = WaypostError(f"{what} {go_quote(value)} was not found in the Raft configuration")
    if not value:
        raise missing

    def not_found(failure):
        failure.trap(NotFound)
        raise missing
    if server_id is not None:
        d = operator.remove_peer(server_id=server_id)
    else:
        d = operator.remove_peer(address=address)
    return d.addCallbacks(lambda _: EMPTY, not_found)


def raft_transfer_leader(facade, request: Request, params, arg: str) -> Deferred:
    """POST /v1/operator/raft/transfer-leader[?id=...]: later Consul's endpoint, which
    answers {"Success": true}; without ?id the servers pick the new leader."""
    operator = _operator(facade, params)
    server_id = _param(request, "id") or ""

    def encode(reply: dict) -> dict:
        return {"Success": bool(reply.get("Success"))}
    return operator.transfer_leader(server_id).addCallback(encode)


# --- autopilot ---

def _server_health(server: dict) -> dict:
    return {"ID": server.get("ID", ""), "Name": server.get("Name", ""),
            "Address": server.get("Address", ""), "SerfStatus": server.get("SerfStatus", ""),
            "Version": server.get("Version", ""), "Leader": bool(server.get("Leader")),
            "LastContact": server.get("LastContact", "0s"),
            "LastTerm": int(server.get("LastTerm", 0)),
            "LastIndex": int(server.get("LastIndex", 0)),
            "Healthy": bool(server.get("Healthy")), "Voter": bool(server.get("Voter")),
            "StableSince": server.get("StableSince", "0001-01-01T00:00:00Z")}


def autopilot_health(facade, request: Request, params, arg: str) -> Deferred:
    """GET /v1/operator/autopilot/health: OperatorHealthReply; 429 when not healthy."""
    operator = _operator(facade, params)

    def encode(reply: dict) -> Response | dict:
        servers = [_server_health(s) for s in reply.get("Servers") or ()]
        out = {"Healthy": bool(reply.get("Healthy")),
               "FailureTolerance": int(reply.get("FailureTolerance", 0)),
               # Go's nil slice: no servers known is null, not [].
               "Servers": servers or None}
        if out["Healthy"]:
            return out
        # Consul writes the 429 status before its JSON encoder sets Content-Type, so Go
        # sniffs the body and labels it text/plain; we send the same header.
        return Response(429, dumps(out, params.pretty), [_VARY], content_type=_TEXT)
    return operator.autopilot_health().addCallback(encode)


_AUTOPILOT_DEFAULTS = (("CleanupDeadServers", True), ("LastContactThreshold", "200ms"),
                       ("MaxTrailingLogs", 250), ("MinQuorum", 0),
                       ("ServerStabilizationTime", "10s"), ("RedundancyZoneTag", ""),
                       ("DisableUpgradeMigration", False), ("UpgradeVersionTag", ""),
                       ("CreateIndex", 0), ("ModifyIndex", 0))


def autopilot_configuration(facade, request: Request, params, arg: str) -> Deferred:
    """GET /v1/operator/autopilot/configuration: AutopilotConfiguration, in Consul's field
    order (Consul's defaults for any field the core leaves out). PUT stores an operator's
    (through the log; `?cas=<ModifyIndex>` for check-and-set) and answers true or false."""
    operator = _operator(facade, params)
    if request.method == "PUT":
        body = json_body(request)
        cas = uint(request, "cas", "Error parsing cas value")
        return operator.set_autopilot_configuration(body, cas)

    def encode(reply: dict) -> dict:
        return {name: reply.get(name, default) for name, default in _AUTOPILOT_DEFAULTS}
    return operator.autopilot_configuration().addCallback(encode)
