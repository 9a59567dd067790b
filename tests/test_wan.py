"""The WAN pool and other datacenters (issue 11 item 7): servers of several datacenters in one
WAN pool, /v1/catalog/datacenters, `members -wan`, and requests with `?dc=` (HTTP and DNS)
forwarded to a server of the datacenter they name.

The pieces are checked alone first (the WAN pool's settings, `Datacenters`, the server
endpoints' forwarding with a fake other datacenter), then with real `waypost agent` processes:
dc1 and dc2 each a -dev server, dc2 started with -join-wan to dc1's WAN port; a client agent
of dc1 whose `?dc=dc2` goes through its server. Waiting is polling against a deadline.
Behaviour compared by hand with Consul 1.8.7 (two -dev servers in two datacenters): the
order of the datacenter list, `members -wan`, the SRV target `<node>.node.dc2.consul`, and
a client's "Must be a server to join WAN cluster".
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from agent.config.model import AgentConfig
from agent.errors import UnknownDatacenter
from agent.gossip.delegate import NodeInfo
from agent.gossip.serf.consul_tags import consul_agent_tags, waypost_agent_tags
from agent.gossip.serf.tags import encode_tags
from agent.gossip.swim_config import SwimConfig
from agent.gossip.wan import (Datacenters, WanGossip, wan_member_name, wan_settings,
                              wan_swim_config)
from agent import structs
from agent.agent import make_agent
from agent.fsm.commands import KVOperation, Register
from agent.rpc import queries as q
from agent.rpc.options import QueryMeta, QueryOptions, ReadResult, WriteRequest
from tests import polling
from tests.agentproc import ROOT, AgentProcess
from tests.consulproc import NO_CONSUL, ConsulProcess, consul_binary

DEADLINE = 30.0


def eventually(check, what: str, timeout: float = DEADLINE):
    return polling.eventually(what, check, timeout, interval=0.1,
                              tolerate=(OSError, ValueError, dns.exception.DNSException))


def config(**kw) -> AgentConfig:
    return AgentConfig(node_name="a1", node_id="11111111-2222-3333-4444-555555555555",
                       **kw)


# --- the pool's settings -----------------------------------------------------------------------

def test_wan_members_are_named_node_dot_datacenter_with_waypost_server_tags():
    c = config(datacenter="east")
    settings = wan_settings(c, None)
    assert wan_member_name(c) == settings.name == "a1.east"
    assert settings.bind[1] == c.ports.serf_wan
    assert settings.tags["role"] == "node" and settings.tags["wp"] == "server"
    assert settings.tags["wp_port"] == str(c.ports.server) and settings.tags["dc"] == "east"


def test_wan_timing_is_consuls_then_dev_then_gossip_wan():
    base = wan_swim_config(config())
    assert base == replace(SwimConfig.wan(), gossip_nodes=3)  # Consul's gossip_wan default
    assert (base.probe_interval, base.suspicion_mult) == (5.0, 6)
    dev = wan_swim_config(config(dev=True))
    assert (dev.probe_interval, dev.probe_timeout, dev.suspicion_mult) == (0.1, 0.1, 3)
    tuned = wan_swim_config(config(settings={"gossip_wan": {"probe_interval": "2s",
                                                            "suspicion_mult": 5}}))
    assert (tuned.probe_interval, tuned.suspicion_mult) == (2.0, 5)


def _node(name: str, tags: dict) -> NodeInfo:
    return NodeInfo(name, b"\x7f\x00\x00\x01", 8302, encode_tags(tags), 0, (1, 5, 2, 2, 5, 4))


def test_the_wan_pool_merges_with_waypost_servers_only():
    merge = wan_settings(config(), None).merge_filter
    server = waypost_agent_tags(node_id="x", datacenter="dc2", server=True, server_port=8300)
    client = waypost_agent_tags(node_id="y", datacenter="dc2", server=False)
    consul = consul_agent_tags(node_id="z", datacenter="dc3", server=True)
    assert merge([_node("b1.dc2", server)]) is None
    assert merge([_node("c1.dc2", client)]) == "Member 'c1.dc2' is not a server"
    assert "is a Consul server" in merge([_node("s.dc3", consul)])


def test_a_client_has_no_wan_pool():
    with pytest.raises(ValueError, match="Must be a server to join WAN cluster"):
        WanGossip(Clock(), config(server=False))


# --- Datacenters and the endpoints' forwarding (in process) --------------------------------------

class _FakeWan:
    def __init__(self, servers: dict[str, list[str]]) -> None:
        self.servers = servers

    def servers_of(self, dc: str) -> list[str]:
        return self.servers.get(dc, [])

    def datacenters(self) -> list[str]:
        return ["dc1", *sorted(dc for dc, s in self.servers.items() if s and dc != "dc1")]


def test_datacenters_know_only_those_with_an_alive_server():
    wan = _FakeWan({"dc1": ["127.0.0.1:1"], "dc2": ["127.0.0.1:2"], "dc0": []})
    found = Datacenters(Clock(), wan)
    assert found.names() == ["dc1", "dc2"]
    assert found.endpoints("dc2") is found.endpoints("dc2")  # one connection set per dc
    with pytest.raises(UnknownDatacenter, match="No path to datacenter"):
        found.endpoints("dc0")
    with pytest.raises(UnknownDatacenter):
        found.endpoints("nowhere")
    found.stop()


class _Recorder:
    """Another datacenter's endpoints: records what was forwarded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def read(self, query, options):
        self.calls.append(("read", query, options.datacenter))
        return ReadResult(["forwarded"], QueryMeta(index=7))

    def write(self, command, request):
        self.calls.append(("write", type(command).__name__, request.datacenter))
        return succeed("forwarded")


class _Others:
    def __init__(self) -> None:
        self.dc2 = _Recorder()

    def names(self) -> list[str]:
        return ["dc1", "dc2"]

    def endpoints(self, dc: str):
        if dc != "dc2":
            raise UnknownDatacenter(dc)
        return self.dc2


@pytest.fixture
def server_endpoints():
    agent = make_agent(config(dev=True), Clock())
    endpoints = agent.server.endpoints
    others = _Others()
    endpoints.other_datacenters = others
    return endpoints, others.dc2


def test_reads_and_writes_for_another_datacenter_are_forwarded(server_endpoints):
    endpoints, dc2 = server_endpoints
    assert endpoints.read(q.CatalogDatacenters(), QueryOptions()).value == ["dc1", "dc2"]
    assert endpoints.read(q.CatalogNodes(), QueryOptions(datacenter="dc2")).value == ["forwarded"]
    endpoints.write(KVOperation(op="set", entry=structs.KVEntry(key="k", value=b"v")),
                    WriteRequest(datacenter="dc2"))
    # A registration goes where its node says (Consul's Catalog.Register ignores ?dc).
    node = structs.Node(name="n", address="10.0.0.1", datacenter="dc2")
    endpoints.write(Register(node=node), WriteRequest())
    assert ("read", q.CatalogNodes(), "dc2") in dc2.calls
    assert ("write", "KVOperation", "dc2") in dc2.calls
    assert ("write", "Register", "dc2") in dc2.calls
    local = QueryOptions(datacenter="dc1", consistency="stale")
    assert endpoints.read(q.CatalogNodes(), local).value == []  # our own: not forwarded


def test_an_unknown_datacenter_is_no_path(server_endpoints):
    endpoints, _ = server_endpoints
    with pytest.raises(UnknownDatacenter, match="No path to datacenter"):
        endpoints.read(q.CatalogNodes(), QueryOptions(datacenter="dc9"))
    failure = []
    endpoints.write(None, WriteRequest(datacenter="dc9")).addErrback(failure.append)
    assert failure and failure[0].check(UnknownDatacenter)


# --- real agents in two datacenters ------------------------------------------------------------------

def waypost(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def datacenters(agent: AgentProcess) -> list[str]:
    status, _, body = agent.json("GET", "/v1/catalog/datacenters")
    return body if status == 200 else [f"status {status}: {body!r}"]


def dns_reply(agent: AgentProcess, name: str, rdtype: str = "A"):
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1",
                         port=agent.dns_port, timeout=3)


def start_pair():
    dc1 = AgentProcess(node="a1").start()
    try:
        dc2 = AgentProcess("-datacenter", "dc2", "-join-wan", f"127.0.0.1:{dc1.serf_wan}",
                           node="b1").start()
    except Exception:
        dc1.stop()
        raise
    return dc1, dc2


@pytest.fixture(scope="module")
def two_dcs():
    dc1, dc2 = start_pair()
    try:
        eventually(lambda: datacenters(dc1) == ["dc1", "dc2"], "dc1 sees dc2")
        yield SimpleNamespace(dc1=dc1, dc2=dc2)
    finally:
        dc1.stop()
        dc2.stop()


def test_both_list_both_datacenters_ours_first(two_dcs):
    assert datacenters(two_dcs.dc1) == ["dc1", "dc2"]
    eventually(lambda: datacenters(two_dcs.dc2) == ["dc2", "dc1"], "dc2 sees dc1")


def test_members_wan_lists_the_servers_of_both(two_dcs):
    dc1 = two_dcs.dc1
    status, _, body = dc1.json("GET", "/v1/agent/members?wan=1")
    assert status == 200
    by_name = {m["Name"]: m for m in body}
    assert set(by_name) == {"a1.dc1", "b1.dc2"}
    assert by_name["b1.dc2"]["Port"] == two_dcs.dc2.serf_wan
    assert by_name["b1.dc2"]["Tags"]["dc"] == "dc2" and by_name["b1.dc2"]["Status"] == 1
    out = waypost("members", "-wan", "-http-addr", f"127.0.0.1:{dc1.port}")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [(r[0], r[2], r[3], r[6]) for r in rows] == [
        ("a1.dc1", "alive", "server", "dc1"), ("b1.dc2", "alive", "server", "dc2")]
    lan = {m["Name"] for m in dc1.json("GET", "/v1/agent/members")[2]}
    assert lan == {"a1"}  # the LAN pool is another pool


def test_a_service_of_dc2_is_answered_through_dc1_http_and_dns(two_dcs):
    dc1, dc2 = two_dcs.dc1, two_dcs.dc2
    status, _, _ = dc2.json("PUT", "/v1/agent/service/register", {"Name": "web", "Port": 80})
    assert status == 200

    def through_dc1():
        status, _, body = dc1.json("GET", "/v1/catalog/service/web?dc=dc2")
        return status == 200 and [(r["Node"], r["Datacenter"], r["ServicePort"]) for r in body]
    assert eventually(through_dc1, "web in dc2 via dc1") == [("b1", "dc2", 80)]
    assert dc1.json("GET", "/v1/catalog/service/web")[2] == []  # not in dc1 itself

    def srv():
        reply = dns_reply(dc1, "web.service.dc2.consul", "SRV")
        return reply.rcode() == dns.rcode.NOERROR and [
            (r.port, r.target.to_text()) for rrset in reply.answer for r in rrset]
    assert eventually(srv, "SRV via dc1") == [(80, "b1.node.dc2.consul.")]

    def node():
        reply = dns_reply(dc1, "b1.node.dc2.consul")
        return [r.address for rrset in reply.answer for r in rrset]
    assert eventually(node, "node via dc1") == ["127.0.0.1"]
    assert dns_reply(dc1, "web.service.dc9.consul").rcode() == dns.rcode.NXDOMAIN


def test_kv_of_dc2_is_written_and_read_through_dc1(two_dcs):
    dc1, dc2 = two_dcs.dc1, two_dcs.dc2
    status, _, body = dc1.request("PUT", "/v1/kv/fed/key?dc=dc2", b"hello")
    assert (status, body.strip()) == (200, b"true")
    status, _, body = dc2.json("GET", "/v1/kv/fed/key?raw")
    assert (status, body) == (200, b"hello")
    assert dc1.request("GET", "/v1/kv/fed/key?dc=dc2&raw")[::2] == (200, b"hello")
    assert dc1.request("GET", "/v1/kv/fed/key")[0] == 404  # dc1's own store has no such key
    dc2.request("PUT", "/v1/kv/fed/key", b"changed")
    # Answers of another datacenter are never served from dc1's response cache.
    assert dc1.request("GET", "/v1/kv/fed/key?dc=dc2&raw")[::2] == (200, b"changed")


def test_an_unknown_datacenter_is_consuls_error(two_dcs):
    status, _, body = two_dcs.dc1.request("GET", "/v1/catalog/nodes?dc=dc9")
    assert (status, body) == (500, b"No path to datacenter")
    status, _, body = two_dcs.dc1.request("PUT", "/v1/kv/x?dc=dc9", b"v")
    assert (status, body) == (500, b"No path to datacenter")


def test_a_client_agent_asks_its_server_which_forwards(two_dcs, tmp_path):
    dc1 = two_dcs.dc1
    client = AgentProcess("-server=false", "-join", f"127.0.0.1:{dc1.serf_lan}",
                          "-data-dir", str(tmp_path / "c1"), node="c1").start()
    try:
        def kv():
            status, _, body = client.request("GET", "/v1/kv/fed/key?dc=dc2&raw")
            return status == 200 and body
        assert eventually(kv, "dc2's KV via a dc1 client") in (b"hello", b"changed")
        assert eventually(lambda: datacenters(client) == ["dc1", "dc2"], "client's list")
        status, _, body = client.request("PUT", "/v1/agent/join/127.0.0.1?wan=1")
        assert (status, body) == (500, b"Must be a server to join WAN cluster")
        assert client.request("GET", "/v1/agent/members?wan=1")[2].strip() == b"null"
    finally:
        client.stop()


def test_join_wan_through_the_cli_and_a_dead_datacenter_is_no_path():
    dc1 = AgentProcess(node="x1").start()
    dc3 = AgentProcess("-datacenter", "dc3", node="z1").start()
    try:
        out = waypost("join", "-wan", "-http-addr", f"127.0.0.1:{dc3.port}",
                      f"127.0.0.1:{dc1.serf_wan}")
        assert out.returncode == 0, out.stderr
        eventually(lambda: datacenters(dc1) == ["dc1", "dc3"], "dc1 sees dc3")
        assert dc3.request("PUT", "/v1/kv/k", b"v")[0] == 200
        assert dc1.request("GET", "/v1/kv/k?dc=dc3&raw")[::2] == (200, b"v")
        dc3.proc.kill()
        dc3.proc.wait()

        # -dev uses Consul's fast WAN timing: the failure is noticed within a second or so;
        # until then a call may fail on the connection (its own 500), never hang.
        def no_path():
            status, _, body = dc1.request("GET", "/v1/kv/k?dc=dc3", timeout=40)
            assert status == 500, body
            return body == b"No path to datacenter"
        eventually(no_path, "dc3 is no path")
        assert datacenters(dc1) == ["dc1"]
        assert dns_reply(dc1, "k.service.dc3.consul").rcode() == dns.rcode.NXDOMAIN
        status, _, body = dc1.json("GET", "/v1/agent/members?wan=1")
        assert {m["Name"]: m["Status"] for m in body}["z1.dc3"] == 4  # failed
    finally:
        dc1.stop()
        dc3.stop()


@pytest.mark.skipif(consul_binary() is None, reason=NO_CONSUL)
def test_consul_and_waypost_wan_pools_refuse_each_other():
    # Consul's WAN pool takes role=consul members only; Waypost servers advertise role=node,
    # so Consul refuses them, and Waypost refuses Consul servers in turn (one-sided otherwise).
    consul = ConsulProcess(node="c1").start()
    waypost_dc2 = AgentProcess("-datacenter", "dc2", node="w1").start()
    try:
        status, _, body = waypost_dc2.request(
            "PUT", f"/v1/agent/join/127.0.0.1:{consul.serf_wan}?wan=1")
        assert status == 500 and b"Failed to join 127.0.0.1" in body
        seen: list[str] = []

        def logged() -> bool:
            seen.append(waypost_dc2.log_so_far())  # each call hands over what is new
            return "Member 'c1.dc1' is a Consul server" in "".join(seen)
        eventually(logged, "Waypost logs why")
        out = subprocess.run([consul_binary(), "join", "-wan",
                              f"-http-addr=127.0.0.1:{consul.http}",
                              f"127.0.0.1:{waypost_dc2.serf_wan}"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and "Member 'w1.dc2' is not a server" in out.stderr
        assert [m["Name"] for m in consul.get("/v1/agent/members?wan=1")] == ["c1.dc1"]
        assert datacenters(waypost_dc2) == ["dc2"]
    finally:
        consul.stop()
        waypost_dc2.stop()
