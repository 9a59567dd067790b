"""Interop with a real Consul 1.8.7 on the gossip wire: one LAN pool holding both kinds of
agent. Skipped, with the reason shown, when no Consul binary is present."""

from __future__ import annotations


import pytest

from tests.agentproc import AgentProcess
from tests.polling import eventually
from tests.consulproc import NO_CONSUL, ConsulProcess, consul_binary

pytestmark = pytest.mark.skipif(consul_binary() is None, reason=NO_CONSUL)

ALIVE, FAILED = 1, 4


def waypost_members(agent: AgentProcess) -> dict[str, int]:
    return {m["Name"]: m["Status"] for m in agent.json("GET", "/v1/agent/members")[2]}


@pytest.fixture
def consul():
    proc = ConsulProcess(node="consul1").start()
    yield proc
    proc.stop()


@pytest.fixture
def waypost():
    agent = AgentProcess(node="wp1").start()
    yield agent
    agent.stop()


def test_waypost_joins_a_consul_pool_and_each_sees_the_other_alive(consul, waypost):
    status, _, _ = waypost.request("PUT", f"/v1/agent/join/127.0.0.1:{consul.serf_lan}")
    if status == 404:  # the join endpoint lands separately; -join at start is the same path
        pytest.fail("PUT /v1/agent/join is missing")
    assert status == 200
    eventually("Consul lists the Waypost agent alive",
               lambda: consul.members().get("wp1") == ALIVE)
    eventually("Waypost lists the Consul agent alive",
               lambda: waypost_members(waypost).get("consul1") == ALIVE)
    # Consul's leader reflected the new member into its catalog with a passing serfHealth.
    checks = eventually("Consul's catalog has the Waypost node",
                        lambda: consul.get("/v1/health/node/wp1"))
    assert {c["CheckID"]: c["Status"] for c in checks}["serfHealth"] == "passing"
    tags = {m["Name"]: m["Tags"] for m in consul.get("/v1/agent/members")}["wp1"]
    assert tags["role"] == "node" and tags["wp"] == "server"  # never a Raft peer of Consul


def test_a_consul_agent_joins_a_waypost_pool(waypost):
    consul = ConsulProcess("-retry-join", f"127.0.0.1:{waypost.serf_lan}", node="consul2")
    consul.start()
    try:
        eventually("Waypost lists the Consul agent alive",
                   lambda: waypost_members(waypost).get("consul2") == ALIVE)
        eventually("Consul lists the Waypost agent alive",
                   lambda: consul.members().get("wp1") == ALIVE)
        checks = eventually("Waypost's catalog has the Consul node",
                            lambda: waypost.json("GET", "/v1/health/node/consul2")[2])
        assert {c["CheckID"]: c["Status"] for c in checks}["serfHealth"] == "passing"
    finally:
        consul.stop()


def test_killing_either_side_marks_it_failed_on_the_other(consul):
    first = AgentProcess("-join", f"127.0.0.1:{consul.serf_lan}", node="wp-doomed").start()
    second = AgentProcess("-join", f"127.0.0.1:{consul.serf_lan}", node="wp-witness").start()
    try:
        eventually("both Waypost agents alive on Consul",
                   lambda: consul.members().get("wp-doomed") == ALIVE
                   and consul.members().get("wp-witness") == ALIVE)
        first.proc.kill()
        eventually("Consul marks the killed Waypost agent failed",
                   lambda: consul.members().get("wp-doomed") == FAILED)
        checks = eventually("Consul's serfHealth of the killed agent is critical",
                            lambda: [c for c in consul.get("/v1/health/node/wp-doomed")
                                     if c["CheckID"] == "serfHealth"
                                     and c["Status"] == "critical"])
        assert checks
        consul.kill()
        eventually("Waypost marks the killed Consul agent failed",
                   lambda: waypost_members(second).get("consul1") == FAILED)
        eventually("Waypost's serfHealth of the Consul node is critical",
                   lambda: [c for c in second.json("GET", "/v1/health/node/consul1")[2]
                            if c["CheckID"] == "serfHealth" and c["Status"] == "critical"])
    finally:
        first.stop()
        second.stop()
