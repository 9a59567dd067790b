"""Client agents over the server RPC, as real processes: one Waypost server (-dev) and three
`waypost agent -server=false -join ...` clients. Every agent answers HTTP and DNS through the
servers; a killed client's services go critical and leave DNS; with no server a client answers
Consul's "No known Consul servers" (500) and recovers when a server appears."""

from __future__ import annotations

import json
import time

import dns.message
import dns.query
import dns.rcode
import pytest

from tests import polling
from tests.agentproc import AgentProcess

DEADLINE = 60.0


def eventually(check, what: str, timeout: float = DEADLINE):
    return polling.eventually(what, check, timeout, interval=0.2,
                              tolerate=(OSError, ValueError, dns.exception.DNSException))


def client(server: AgentProcess, name: str, tmp_path) -> AgentProcess:
    return AgentProcess("-server=false", "-join", f"127.0.0.1:{server.serf_lan}",
                        "-data-dir", str(tmp_path / name), node=name)


def dns_addresses(agent: AgentProcess, name: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=agent.dns_port, timeout=2)
    if reply.rcode() != dns.rcode.NOERROR:
        return [f"rcode {dns.rcode.to_text(reply.rcode())}"]
    return sorted(r.address for rrset in reply.answer for r in rrset)


def nodes_of(agent: AgentProcess, service: str) -> list[str]:
    status, _, body = agent.json("GET", f"/v1/health/service/{service}")
    if status != 200:
        return [f"status {status}: {body!r}"]
    return sorted(row["Node"]["Node"] for row in body)


@pytest.fixture
def cluster(tmp_path):
    server = AgentProcess(node="srv").start()
    agents = [server]
    try:
        for name in ("c1", "c2", "c3"):
            agents.append(client(server, name, tmp_path).start(timeout=30))
        yield agents
    finally:
        for agent in reversed(agents):
            agent.stop()


def register(agent: AgentProcess, name: str, address: str) -> None:
    status, _, body = agent.json("PUT", "/v1/agent/service/register",
                                 {"Name": name, "Address": address, "Port": 80})
    assert status == 200, body


def test_a_clients_service_is_seen_through_every_agents_http_and_dns(cluster):
    server, c1, c2, c3 = cluster
    register(c1, "web", "10.1.0.1")
    for agent in cluster:
        eventually(lambda: nodes_of(agent, "web") == ["c1"], f"web on {agent.node} HTTP")
        eventually(lambda: dns_addresses(agent, "web.service.consul") == ["10.1.0.1"],
                   f"web on {agent.node} DNS")
    # The clients' own nodes are in the catalog, with serfHealth from the server's leader.
    status, _, nodes = c2.json("GET", "/v1/catalog/nodes")
    assert status == 200 and sorted(n["Node"] for n in nodes) == ["c1", "c2", "c3", "srv"]
    assert c1.json("GET", "/v1/agent/self")[2]["Config"]["Server"] is False


def test_kv_written_on_a_client_is_read_on_another_and_blocks(cluster):
    server, c1, c2, c3 = cluster
    status, _, ok = c1.json("PUT", "/v1/kv/shared/key", "from-c1")
    assert status == 200 and ok is True
    status, headers, body = c2.json("GET", "/v1/kv/shared/key?raw")
    assert status == 200 and body == b"from-c1"
    index = int(headers["X-Consul-Index"])
    # A blocking read on c3 returns once c1 writes again.
    import threading
    got = {}
    t = threading.Thread(target=lambda: got.update(
        r=c3.request("GET", f"/v1/kv/shared/key?raw&index={index}&wait=30s")))
    t.start()
    time.sleep(0.5)  # let the read park first; correctness does not depend on it
    assert c1.json("PUT", "/v1/kv/shared/key", "again")[0] == 200
    t.join(40)
    assert got["r"][0] == 200 and got["r"][2] == b"again"
    assert int(got["r"][1]["X-Consul-Index"]) > index
    # A CAS through the client keeps Consul's semantics (false on a stale index).
    assert c2.json("PUT", f"/v1/kv/shared/key?cas={index}", "stale")[2] is False


def test_a_killed_clients_services_go_critical_and_leave_dns(cluster):
    server, c1, c2, c3 = cluster
    register(c2, "api", "10.2.0.2")
    register(c3, "api", "10.2.0.3")
    for agent in (server, c1):
        eventually(lambda: dns_addresses(agent, "api.service.consul") == ["10.2.0.2", "10.2.0.3"],
                   f"both api on {agent.node}")
    c3.proc.kill()
    c3.proc.wait()

    def serf_critical():
        status, _, checks = c1.json("GET", "/v1/health/node/c3")
        return any(c["CheckID"] == "serfHealth" and c["Status"] == "critical" for c in checks)
    eventually(serf_critical, "c3's serfHealth critical")
    for agent in (server, c1, c2):
        eventually(lambda: dns_addresses(agent, "api.service.consul") == ["10.2.0.2"],
                   f"c3 out of DNS on {agent.node}")
    status, _, rows = c1.json("GET", "/v1/health/service/api?passing")
    assert [r["Node"]["Node"] for r in rows] == ["c2"]


def test_without_a_server_a_client_says_no_known_servers_then_recovers(cluster, tmp_path):
    server, c1, c2, c3 = cluster
    register(c1, "db", "10.3.0.1")
    eventually(lambda: nodes_of(c1, "db") == ["c1"], "db registered")
    server.stop()

    def no_servers():
        status, _, body = c1.request("GET", "/v1/catalog/nodes")
        return status == 500 and body == b"No known Consul servers"
    eventually(no_servers, "No known Consul servers")
    status, _, body = c2.request("PUT", "/v1/kv/x", b"1")
    assert (status, body) == (500, b"No known Consul servers")
    # A new server joins the clients' pool: they use it, and c1's anti-entropy puts its
    # service into the new (empty, -dev) catalog again.
    replacement = AgentProcess("-join", f"127.0.0.1:{c1.serf_lan}", node="srv2").start()
    try:
        eventually(lambda: c1.request("GET", "/v1/catalog/nodes")[0] == 200, "c1 recovers")
        eventually(lambda: nodes_of(c2, "db") == ["c1"], "c1's service back in the catalog",
                   timeout=90)
        assert json.loads(c3.request("GET", "/v1/status/leader")[2]) != ""
    finally:
        replacement.stop()
