"""A client agent: no store of its own, the same facade, its services synced into a server's
catalog through the server endpoints (in process here; the gossip issue adds RPC)."""

from __future__ import annotations

import pytest
from twisted.internet import task

from agent.agent import make_agent
from agent.config.model import AgentConfig
from agent.definitions import CheckSpec, ServiceDefinition
from agent.facade import KVOperation, QueryOptions, queries
from agent.local.commands import RegisterService
from agent.structs import CheckDefinition, KVEntry, Service


def fired(d):
    out = []
    d.addBoth(out.append)
    return out[0]


@pytest.fixture
def pair():
    clock = task.Clock()
    server = make_agent(AgentConfig(node_name="srv", node_id="00000000-0000-0000-0000-00000000000a",
                                    dev=True), clock)
    server.startService()
    client = make_agent(AgentConfig(node_name="cli", node_id="00000000-0000-0000-0000-00000000000b",
                                    server=False, bind_addr="127.0.0.2"), clock,
                        endpoints=server.endpoints)
    client.startService()
    clock.advance(0)
    yield clock, server, client
    client.stopService()
    server.stopService()


def test_a_client_agent_has_no_store_and_needs_a_server():
    with pytest.raises(ValueError, match="endpoints of a server"):
        make_agent(AgentConfig(node_name="c", node_id="", server=False), task.Clock())


def test_a_client_agents_services_reach_the_servers_catalog(pair):
    clock, server, client = pair
    assert client.server is None and not hasattr(client, "store")
    definition = ServiceDefinition(
        service=Service(node="", id="web", name="web", port=80),
        checks=(CheckSpec(check_id="service:web", name="ttl", ttl=30.0, type="ttl",
                          definition=CheckDefinition()),))
    assert fired(client.facade.write(RegisterService(definition))).index >= 0
    clock.advance(0)
    rows = server.facade.read(queries.HealthServiceNodes("web")).value
    assert [(r.node.name, r.node.address) for r in rows] == [("cli", "127.0.0.2")]
    # The client's reads of server state go through the same endpoints.
    assert [r.node.name for r in client.facade.read(queries.CatalogServiceNodes("web")).value] \
        == ["cli"]
    assert client.facade.stats()["consul"]["server"] == "false"
    assert "raft" not in client.facade.stats()


def test_a_client_agent_writes_and_blocks_through_the_server(pair):
    clock, server, client = pair
    first = fired(client.facade.write(KVOperation("set", KVEntry("k", b"1"))))
    d = client.facade.read(queries.KVGet("k"), QueryOptions(min_index=first.index, wait=10))
    fired_value = []
    d.addCallback(fired_value.append)
    fired(server.facade.write(KVOperation("set", KVEntry("k", b"2"))))
    clock.advance(0)
    assert fired_value and fired_value[0].value.value == b"2"
