"""/v1/operator/raft/* and /v1/operator/autopilot/*: shapes, codes and texts, beside Consul 1.8.7.

Until the consensus layer lands in the agent, the handlers are served by an in-process agent
(the test core's facade behind the real HTTP listener, on a private reactor in a thread) whose
`facade.operator` is `StandInOperator`: canned Deferreds, and a record of what it was asked.
Where a real Consul -dev agent can answer the same request, the stand-in is fed Consul's own
answer (or asked to fail as Consul's servers do) and the two responses are compared.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import selectreactor
from twisted.internet.defer import fail, succeed
from twisted.internet.threads import blockingCallFromThread

from agent.errors import NoLeader, NotFound
from gateway.http.api import HTTPAPI
from gateway.http.plugin import build_routes
from gateway.http.protocol import HTTPFactory
from tests.consulproc import ConsulProcess, running_consul
from tests.coreutil import Core

SERVERS = [
    {"ID": "0a1b2c3d-0000-0000-0000-000000000001", "Node": "s1", "Address": "10.0.0.1:8300",
     "Leader": True, "ProtocolVersion": "3", "Voter": True},
    {"ID": "0a1b2c3d-0000-0000-0000-000000000002", "Node": "server-two",
     "Address": "10.0.0.2:8300", "Leader": False, "ProtocolVersion": "3", "Voter": True},
    {"ID": "0a1b2c3d-0000-0000-0000-000000000003", "Node": "s3", "Address": "10.0.0.3:8300",
     "Leader": False, "ProtocolVersion": "", "Voter": False},
]
HEALTH_SERVER = {"ID": SERVERS[0]["ID"], "Name": "s1", "Address": "10.0.0.1:8300",
                 "SerfStatus": "alive", "Version": "1.8.7", "Leader": True,
                 "LastContact": "0s", "LastTerm": 2, "LastIndex": 41, "Healthy": True,
                 "Voter": True, "StableSince": "2026-01-02T03:04:05Z"}
AUTOPILOT = {"CleanupDeadServers": True, "LastContactThreshold": "200ms",
             "MaxTrailingLogs": 250, "MinQuorum": 0, "ServerStabilizationTime": "10s",
             "RedundancyZoneTag": "", "DisableUpgradeMigration": False,
             "UpgradeVersionTag": "", "CreateIndex": 4, "ModifyIndex": 4}


class StandInOperator:
    """A stand-in for `facade.operator` (agent.operator.OperatorControl), NOT the real
    consensus: it answers with the canned values below, or fails with `errors[method]`."""

    def __init__(self) -> None:
        self.configuration: dict = {"Servers": copy.deepcopy(SERVERS), "Index": 7}
        self.health: dict = {"Healthy": True, "FailureTolerance": 1,
                             "Servers": [dict(HEALTH_SERVER)]}
        self.autopilot: dict = dict(AUTOPILOT)
        self.transfer: dict = {"Success": True,
                               "NewLeader": {"ID": SERVERS[1]["ID"],
                                             "Address": SERVERS[1]["Address"]}}
        self.errors: dict[str, Exception] = {}
        self.calls: list[tuple] = []

    def _answer(self, name: str, value: Any, *args: Any):
        self.calls.append((name, *args))
        if name in self.errors:
            return fail(self.errors[name])
        return succeed(copy.deepcopy(value))

    def raft_configuration(self, stale: bool = False):
        return self._answer("raft_configuration", self.configuration, stale)

    def remove_peer(self, *, server_id: str = "", address: str = ""):
        return self._answer("remove_peer", None, server_id, address)

    def transfer_leader(self, server_id: str = ""):
        return self._answer("transfer_leader", self.transfer, server_id)

    def autopilot_health(self):
        return self._answer("autopilot_health", self.health)

    def autopilot_configuration(self):
        return self._answer("autopilot_configuration", self.autopilot)


class InProcessAgent:
    """The HTTP API over the test core's facade, listening on 127.0.0.1 from a private
    reactor run in a thread (so blocking clients, the CLI included, can talk to it)."""

    def __init__(self) -> None:
        self.core = Core()
        self.operator: StandInOperator | None = StandInOperator()
        self.core.facade.operator = self.operator
        self.reactor = selectreactor.SelectReactor()
        self._thread = threading.Thread(target=self.reactor.run,
                                        kwargs={"installSignalHandlers": False}, daemon=True)
        self.port = 0

    def start(self) -> "InProcessAgent":
        self._thread.start()
        api = HTTPAPI(self.core.facade, self.reactor, build_routes())
        factory = HTTPFactory(api, self.reactor)
        listening = blockingCallFromThread(self.reactor, self.reactor.listenTCP, 0, factory,
                                           interface="127.0.0.1")
        self.port = listening.getHost().port
        return self

    def stop(self) -> None:
        self.reactor.callFromThread(self.reactor.stop)
        self._thread.join(10)

    def set_operator(self, operator: StandInOperator | None) -> None:
        self.operator = operator
        self.core.facade.operator = operator

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def http(port: int, method: str, path: str) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; error statuses are answers too."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def served() -> Iterator[InProcessAgent]:
    agent = InProcessAgent().start()
    yield agent
    agent.stop()


@pytest.fixture
def wp(served: InProcessAgent) -> InProcessAgent:
    """The in-process agent with a fresh stand-in for each test."""
    served.set_operator(StandInOperator())
    return served


@pytest.fixture(scope="module")
def consul() -> Iterator[ConsulProcess]:
    yield from running_consul("op-consul")


def keys(value: Any) -> Any:
    """The field names of a JSON value, recursively, in order (values left out)."""
    if isinstance(value, dict):
        return [(k, keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [keys(v) for v in value[:1]]
    return None


# --- raft configuration ---

def test_raft_configuration_has_consuls_shape_and_no_index_headers(wp):
    status, headers, body = http(wp.port, "GET", "/v1/operator/raft/configuration")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"Servers": SERVERS, "Index": 7}
    assert "X-Consul-Index" not in headers  # Consul's reply carries no QueryMeta
    assert wp.operator.calls == [("raft_configuration", False)]


def test_raft_configuration_stale_is_passed_and_conflicts_are_refused(wp):
    assert http(wp.port, "GET", "/v1/operator/raft/configuration?stale")[0] == 200
    assert wp.operator.calls == [("raft_configuration", True)]
    status, _, body = http(wp.port, "GET", "/v1/operator/raft/configuration?stale&consistent")
    assert (status, body) == (400, b"Cannot specify ?stale with ?consistent, conflicting "
                                   b"semantics.")


def test_no_leader_and_no_operator_are_consuls_500s(wp):
    wp.operator.errors["raft_configuration"] = NoLeader()
    assert http(wp.port, "GET", "/v1/operator/raft/configuration")[::2] == (
        500, b"No cluster leader")
    wp.set_operator(None)
    for method, path in (("GET", "/v1/operator/raft/configuration"),
                         ("DELETE", "/v1/operator/raft/peer?id=x"),
                         ("POST", "/v1/operator/raft/transfer-leader"),
                         ("GET", "/v1/operator/autopilot/health"),
                         ("GET", "/v1/operator/autopilot/configuration")):
        assert http(wp.port, method, path)[::2] == (500, b"No known Consul servers"), path


def test_unknown_datacenter_is_refused_before_asking(wp):
    status, _, body = http(wp.port, "GET", "/v1/operator/raft/configuration?dc=nope")
    assert (status, body) == (500, b"No path to datacenter")
    assert wp.operator.calls == []


# --- raft peer ---

@pytest.mark.parametrize("query, text", [
    ("", b"Bad request: Must specify either ?id with the server's ID or ?address with "
         b"IP:port of peer to remove"),
    ("?id=a&address=b", b"Bad request: Must specify only one of ?id or ?address"),
    ("?dc=nope", b"Bad request: Must specify either ?id with the server's ID or ?address "
                 b"with IP:port of peer to remove"),  # the arguments are checked first
])
def test_remove_peer_needs_exactly_one_of_id_and_address(wp, query, text):
    status, headers, body = http(wp.port, "DELETE", "/v1/operator/raft/peer" + query)
    assert (status, body) == (400, text)
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert wp.operator.calls == []


def test_remove_peer_by_id_or_address_answers_200_without_a_body(wp):
    status, headers, body = http(wp.port, "DELETE", "/v1/operator/raft/peer?id=abc")
    assert (status, body) == (200, b"") and "Content-Type" not in headers
    status, _, _ = http(wp.port, "DELETE", "/v1/operator/raft/peer?address=10.0.0.3:8300")
    assert status == 200
    assert wp.operator.calls == [("remove_peer", "abc", ""),
                                 ("remove_peer", "", "10.0.0.3:8300")]


def test_remove_peer_unknown_is_consuls_500_text(wp):
    wp.operator.errors["remove_peer"] = NotFound("no such peer")
    assert http(wp.port, "DELETE", "/v1/operator/raft/peer?id=nope")[::2] == (
        500, b'id "nope" was not found in the Raft configuration')
    assert http(wp.port, "DELETE", "/v1/operator/raft/peer?address=1.2.3.4:8300")[::2] == (
        500, b'address "1.2.3.4:8300" was not found in the Raft configuration')
    # An empty value names no peer: answered without asking.
    assert http(wp.port, "DELETE", "/v1/operator/raft/peer?id=")[::2] == (
        500, b'id "" was not found in the Raft configuration')
    assert len(wp.operator.calls) == 2
    assert http(wp.port, "DELETE", "/v1/operator/raft/peer?id=x&dc=nope")[::2] == (
        500, b"No path to datacenter")


def test_methods_and_allow_headers_are_consuls(wp):
    for method, path, allow in (("GET", "/v1/operator/raft/peer", "OPTIONS,DELETE"),
                                ("POST", "/v1/operator/raft/configuration", "OPTIONS,GET"),
                                ("DELETE", "/v1/operator/autopilot/health", "OPTIONS,GET"),
                                ("GET", "/v1/operator/raft/transfer-leader", "OPTIONS,POST")):
        status, headers, body = http(wp.port, method, path)
        assert (status, headers["Allow"], body) == (
            405, allow, f"method {method} not allowed".encode()), path
    assert wp.operator.calls == []


# --- transfer-leader ---

def test_transfer_leader_answers_later_consuls_shape(wp):
    status, _, body = http(wp.port, "POST", "/v1/operator/raft/transfer-leader")
    assert (status, json.loads(body)) == (200, {"Success": True})
    http(wp.port, "POST", "/v1/operator/raft/transfer-leader?id=" + SERVERS[2]["ID"])
    assert wp.operator.calls == [("transfer_leader", ""), ("transfer_leader", SERVERS[2]["ID"])]
    wp.operator.errors["transfer_leader"] = NoLeader()
    assert http(wp.port, "POST", "/v1/operator/raft/transfer-leader")[::2] == (
        500, b"No cluster leader")


# --- autopilot ---

def test_autopilot_health_is_200_when_healthy_and_429_when_not(wp):
    status, headers, body = http(wp.port, "GET", "/v1/operator/autopilot/health")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert json.loads(body) == wp.operator.health
    wp.operator.health = {"Healthy": False, "FailureTolerance": 0, "Servers": []}
    status, headers, body = http(wp.port, "GET", "/v1/operator/autopilot/health")
    # Consul writes 429 before its JSON header, so Go labels the body text/plain.
    assert (status, headers["Content-Type"]) == (429, "text/plain; charset=utf-8")
    assert json.loads(body) == {"Healthy": False, "FailureTolerance": 0, "Servers": None}


def test_autopilot_configuration_in_consuls_field_order(wp):
    wp.operator.autopilot = {"MaxTrailingLogs": 9, "CleanupDeadServers": False}
    status, _, body = http(wp.port, "GET", "/v1/operator/autopilot/configuration")
    reply = json.loads(body)
    assert status == 200 and list(reply) == list(AUTOPILOT)
    assert reply == {**AUTOPILOT, "MaxTrailingLogs": 9, "CleanupDeadServers": False,
                     "CreateIndex": 0, "ModifyIndex": 0}


# --- beside a real Consul 1.8.7 ---

def test_same_answers_as_consul_fed_consuls_own_state(wp, consul):
    """The stand-in gets Consul's own configuration, health and autopilot settings; the
    responses must then be the same: status, content type, fields and values."""
    wp.operator.configuration = consul.get("/v1/operator/raft/configuration")
    wp.operator.autopilot = consul.get("/v1/operator/autopilot/configuration")
    c_status, c_headers, c_body = http(consul.http, "GET", "/v1/operator/autopilot/health")
    wp.operator.health = json.loads(c_body)  # a -dev Consul: 429, no servers known
    for path in ("/v1/operator/raft/configuration", "/v1/operator/raft/configuration?stale",
                 "/v1/operator/autopilot/configuration", "/v1/operator/autopilot/health"):
        c_status, c_headers, c_body = http(consul.http, "GET", path)
        w_status, w_headers, w_body = http(wp.port, "GET", path)
        assert (w_status, w_headers["Content-Type"]) == (c_status, c_headers["Content-Type"])
        c_json, w_json = json.loads(c_body), json.loads(w_body)
        assert keys(w_json) == keys(c_json), path
        assert w_json == c_json, path


def test_shapes_match_consul_with_servers_known(wp, consul):
    """With servers known (which a -dev Consul does not report), the fields are still
    Consul's: its api.ServerHealth field list, in order."""
    consul_fields = ["ID", "Name", "Address", "SerfStatus", "Version", "Leader",
                     "LastContact", "LastTerm", "LastIndex", "Healthy", "Voter", "StableSince"]
    reply = json.loads(http(wp.port, "GET", "/v1/operator/autopilot/health")[2])
    assert list(reply) == list(json.loads(http(consul.http, "GET",
                                               "/v1/operator/autopilot/health")[2]))
    assert list(reply["Servers"][0]) == consul_fields


@pytest.mark.parametrize("method, path", [
    ("DELETE", "/v1/operator/raft/peer"),
    ("DELETE", "/v1/operator/raft/peer?id=a&address=b"),
    ("DELETE", "/v1/operator/raft/peer?id=nope"),
    ("DELETE", "/v1/operator/raft/peer?id="),
    ("DELETE", "/v1/operator/raft/peer?address=1.2.3.4:8300"),
    ("DELETE", "/v1/operator/raft/peer?dc=nope"),
    ("DELETE", "/v1/operator/raft/peer?id=x&dc=nope"),
    ("GET", "/v1/operator/raft/configuration?dc=nope"),
    ("GET", "/v1/operator/raft/configuration?stale&consistent"),
    ("GET", "/v1/operator/raft/peer"),
    ("POST", "/v1/operator/raft/configuration"),
    ("OPTIONS", "/v1/operator/raft/configuration"),
    ("OPTIONS", "/v1/operator/raft/peer"),
    ("OPTIONS", "/v1/operator/autopilot/health"),
])
def test_errors_and_methods_match_consul(wp, consul, method, path):
    # The stand-in fails as Consul's servers do for a peer that is not in the configuration.
    wp.operator.errors["remove_peer"] = NotFound("not here")
    c_status, c_headers, c_body = http(consul.http, method, path)
    w_status, w_headers, w_body = http(wp.port, method, path)
    assert (w_status, w_body) == (c_status, c_body)
    for name in ("Allow", "Content-Type"):
        assert w_headers.get(name) == c_headers.get(name), name


# --- a real agent ---

def test_a_real_agent_serves_the_routes(agent):
    """A real -dev agent: Consul's shapes once it has `facade.operator`; until the consensus
    layer gives it one, Consul's answer for an agent without servers (never a crash)."""
    expected = {"/v1/operator/raft/configuration": ["Servers", "Index"],
                "/v1/operator/autopilot/configuration": list(AUTOPILOT),
                "/v1/operator/autopilot/health": ["Healthy", "FailureTolerance", "Servers"]}
    for path, fields in expected.items():
        status, _, body = http(agent.port, "GET", path)
        if status == 500:
            assert body == b"No known Consul servers", path
        else:
            assert status in (200, 429) and list(json.loads(body)) == fields, (path, body)
    status, _, body = http(agent.port, "DELETE", "/v1/operator/raft/peer")
    assert status == 400 and body.startswith(b"Bad request: Must specify either ?id")
