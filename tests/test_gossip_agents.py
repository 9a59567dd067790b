"""Gossip between real Waypost agents on 127.0.0.1: joining, failure detection into the catalog,
graceful leave, force-leave, retry-join.

Every agent is a real `waypost agent -dev` process (see tests/agentproc.py) on its own free
ports. Two -dev agents are both servers, each with its own catalog (Raft is a later issue), and
each reflects the pool into its own catalog, so every check below asks one agent about the
others. Waiting is always polling against a deadline; the failure-detection deadline is the
bound SWIM's LAN settings give (probe round + suspicion at its longest), not a guess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator


import dns.message
import dns.query
import dns.rcode
import pytest

from agent.gossip.suspicion import suspicion_timeout
from agent.gossip.swim_config import SwimConfig
from tests.polling import eventually as wait_for
from tests.agentproc import ROOT, AgentProcess

ALIVE, LEFT, FAILED = 1, 3, 4
JOIN_DEADLINE = 20.0  # push-pull on join, then gossip of the join to everyone
SLACK = 5.0  # process scheduling on a shared, busy test machine


def detection_bound(members: int) -> float:
    """The longest SWIM may take to declare a dead member failed in a pool of `members`: one
    probe of each member in turn, the probe timeout, and the suspicion timeout at its maximum
    (no confirmations arrive), as memberlist's LAN settings give them."""
    lan = SwimConfig.lan()
    longest = suspicion_timeout(lan.suspicion_mult, members, lan.probe_interval) \
        * lan.suspicion_max_timeout_mult
    return members * lan.probe_interval + lan.probe_timeout + longest + SLACK


def members(agent: AgentProcess) -> dict[str, int]:
    status, _, body = agent.request("GET", "/v1/agent/members")
    assert status == 200, body
    return {m["Name"]: m["Status"] for m in json.loads(body)}


def sees(agent: AgentProcess, expected: dict[str, int]) -> Callable[[], bool]:
    return lambda: all(members(agent).get(name) == status for name, status in expected.items())


def serf_health(agent: AgentProcess, node: str) -> str | None:
    """The status of `node`'s serfHealth check in `agent`'s catalog (None: no such node)."""
    status, _, body = agent.request("GET", f"/v1/health/node/{node}")
    assert status == 200, body
    for check in json.loads(body):
        if check["CheckID"] == "serfHealth":
            return check["Status"]
    return None


def catalog_nodes(agent: AgentProcess) -> set[str]:
    status, _, body = agent.request("GET", "/v1/catalog/nodes")
    assert status == 200, body
    return {n["Node"] for n in json.loads(body)}


def dns_port(agent: AgentProcess) -> int:
    return int(agent.args[agent.args.index("-dns-port") + 1])


def dns_answers(agent: AgentProcess, name: str) -> list[str]:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=dns_port(agent),
                          timeout=3.0)
    return [item.address for rrset in reply.answer for item in rrset]


def waypost(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def join_flag(agent: AgentProcess) -> str:
    return f"127.0.0.1:{agent.serf_lan}"


@pytest.fixture
def started() -> Iterator[Callable[..., AgentProcess]]:
    """Start agents; every one still running is stopped at the end."""
    agents: list[AgentProcess] = []

    def start(*flags: str, node: str, wait: bool = True) -> AgentProcess:
        agent = AgentProcess(*flags, node=node)
        agents.append(agent)
        return agent.start() if wait else agent
    yield start
    for agent in agents:
        agent.stop()


@pytest.fixture
def pool(started) -> tuple[AgentProcess, AgentProcess, AgentProcess]:
    """Three agents in one pool: `b` joined `a` with -join, `c` through `waypost join`."""
    a = started(node="a")
    b = started("-join", join_flag(a), node="b")
    c = started(node="c")
    out = waypost("join", "-http-addr", f"127.0.0.1:{c.port}", join_flag(a))
    assert (out.returncode, out.stdout) == (
        0, "Successfully joined cluster by contacting 1 nodes.\n"), out.stderr
    everyone = {"a": ALIVE, "b": ALIVE, "c": ALIVE}
    for agent in (a, b, c):
        wait_for(f"{agent.node} to see every member alive", sees(agent, everyone), JOIN_DEADLINE)
    return a, b, c


def register_web(agent: AgentProcess, node: str, address: str) -> None:
    """A `web` service on `node` in `agent`'s catalog (each -dev server has its own)."""
    status, _, body = agent.request("PUT", "/v1/catalog/register", json.dumps({
        "Node": node, "Address": address, "SkipNodeUpdate": True,
        "Service": {"Service": "web", "Port": 80}}))
    assert status == 200, body


def passing_web(agent: AgentProcess) -> list[str]:
    status, _, body = agent.request("GET", "/v1/health/service/web?passing")
    assert status == 200, body
    return sorted(entry["Node"]["Node"] for entry in json.loads(body))


def test_every_agent_lists_every_member_alive_with_serf_health_passing(pool):
    a, b, c = pool
    for agent in pool:
        for node in ("a", "b", "c"):
            wait_for(f"serfHealth of {node} passing on {agent.node}",
                     lambda: serf_health(agent, node) == "passing", JOIN_DEADLINE)
    out = waypost("members", "-http-addr", f"127.0.0.1:{b.port}")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert rows[0] == ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Segment"]
    assert sorted((r[0], r[1], r[2], r[3]) for r in rows[1:]) == [
        ("a", join_flag(a), "alive", "server"), ("b", join_flag(b), "alive", "server"),
        ("c", join_flag(c), "alive", "server")]
    failed = waypost("members", "-http-addr", f"127.0.0.1:{b.port}", "-status=failed")
    assert (failed.returncode, failed.stdout) == (2, "")


def test_killed_agent_fails_leaves_health_and_dns_then_force_leave_makes_it_left(pool):
    a, b, c = pool
    register_web(a, "c", "127.0.0.1")
    wait_for("c's web passing on a", lambda: passing_web(a) == ["c"], JOIN_DEADLINE)
    assert dns_answers(a, "web.service.consul") == ["127.0.0.1"]  # c's gossip address

    c.proc.kill()  # SIGKILL: no leave, nothing said
    c.proc.wait()
    bound = detection_bound(3)
    for agent in (a, b):
        wait_for(f"c failed on {agent.node}", sees(agent, {"c": FAILED, "a": ALIVE, "b": ALIVE}),
                 bound)
    wait_for("c's serfHealth critical on a", lambda: serf_health(a, "c") == "critical",
             JOIN_DEADLINE)
    assert passing_web(a) == []
    assert dns_answers(a, "web.service.consul") == []
    assert "c" in catalog_nodes(a)  # a failed node keeps its registration

    out = waypost("force-leave", "-http-addr", f"127.0.0.1:{a.port}", "c")
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    for agent in (a, b):
        wait_for(f"c left on {agent.node}", sees(agent, {"c": LEFT}), JOIN_DEADLINE)
    wait_for("c deregistered from a's catalog", lambda: "c" not in catalog_nodes(a),
             JOIN_DEADLINE)


def test_force_leave_prune_forgets_a_failed_member(pool):
    a, b, c = pool
    c.proc.kill()
    c.proc.wait()
    wait_for("c failed on a", sees(a, {"c": FAILED}), detection_bound(3))
    status, _, body = a.request("PUT", "/v1/agent/force-leave/c?prune")
    assert (status, body) == (200, b"")
    wait_for("c gone from a's members", lambda: "c" not in members(a), JOIN_DEADLINE)


def test_graceful_leave_is_left_everywhere_and_deregistered_then_the_agent_exits(pool):
    a, b, c = pool
    wait_for("b registered on a", lambda: serf_health(a, "b") == "passing", JOIN_DEADLINE)
    out = waypost("leave", "-http-addr", f"127.0.0.1:{b.port}")
    assert (out.returncode, out.stdout) == (0, "Graceful leave complete\n"), out.stderr
    assert b.proc.wait(timeout=30) == 0  # as Consul: the agent shuts down after leaving
    for agent in (a, c):
        wait_for(f"b left on {agent.node}", sees(agent, {"b": LEFT, "a": ALIVE, "c": ALIVE}),
                 JOIN_DEADLINE)
    wait_for("b deregistered from a's catalog", lambda: "b" not in catalog_nodes(a),
             JOIN_DEADLINE)


def test_retry_join_reaches_an_agent_started_later(started):
    later = AgentProcess(node="later")  # its ports are chosen now; it starts below
    early = started("-retry-join", join_flag(later), "-retry-interval", "1s", node="early")
    assert members(early) == {"early": ALIVE}
    try:
        later.start()
        for agent in (early, later):
            wait_for(f"{agent.node} to see both alive",
                     sees(agent, {"early": ALIVE, "later": ALIVE}), JOIN_DEADLINE)
    finally:
        later.stop()


def test_join_endpoint_reports_consul_errors(started):
    a = started(node="a")
    status, _, body = a.request("PUT", "/v1/agent/join/127.0.0.1:1")
    assert status == 500
    assert body.startswith(b"1 error occurred:\n\t* Failed to join 127.0.0.1: ")
    status, _, body = a.request("PUT", "/v1/agent/join/127.0.0.1:99999")
    assert status == 400 and b"Failed to resolve 127.0.0.1:99999" in body
    status, _, body = a.request("PUT", "/v1/agent/join/")
    assert status == 400 and b"Failed to resolve" in body
    status, _, _ = a.request("GET", "/v1/agent/join/127.0.0.1:1")
    assert status == 405
    status, _, body = a.request("PUT", "/v1/agent/force-leave/nobody")
    assert status == 400 and body == b"agent: No node found with name 'nobody'"
    status, _, body = a.request("GET", "/v1/agent/members?segment=alpha")
    assert status == 400 and b"Network segments are not supported" in body
    assert members(a) == {"a": ALIVE}
