"""The CatalogFeed plugins read through: views, KV, coalesced subscriptions."""

from twisted.internet import defer, task

from agent.agent import make_agent
from agent.config.model import AgentConfig
from agent.definitions import ServiceDefinition
from agent.fsm.commands import KVOperation
from agent.structs import KVEntry, Service, Weights
from gateway.feed import CatalogFeed


def make():
    clock = task.Clock()
    agent = make_agent(AgentConfig(node_name="me", node_id="1"), clock)
    agent.startService()
    return clock, agent, CatalogFeed(agent.facade, clock)


def test_view_carries_weights_node_info_and_maintenance():
    clock, agent, feed = make()
    svc = Service(node="", id="w1", name="web", port=80, weights=Weights(5, 2), tags=("a",))
    agent.local.add_service(ServiceDefinition(service=svc, checks=()))
    view = feed.view()
    (instance,) = view.services["web"]
    assert instance.weights == (5, 2) and instance.status == "passing"
    assert view.node_info["me"].meta == {"consul-network-segment": ""}
    assert view.tags("web") == ("a",)
    agent.local.set_service_maintenance("w1", True, "")
    assert feed.view().services["web"][0].status == "maintenance"
    assert feed.view().healthy("web") == ()
    assert feed.view() is feed.view()  # one view per index


def test_subscriptions_coalesce_and_hold_back_while_busy():
    clock, agent, feed = make()
    seen, pending = [], []

    def callback(view):
        seen.append(view.index)
        pending.append(defer.Deferred())
        return pending[-1]
    feed.subscribe(callback)
    for i in range(3):
        agent.local.add_service(ServiceDefinition(
            service=Service(node="", id=f"s{i}", name="s"), checks=()))
    clock.advance(0)
    assert len(seen) == 1  # three writes, one call
    agent.local.add_service(ServiceDefinition(service=Service(node="", id="t", name="t"), checks=()))
    clock.advance(0)
    assert len(seen) == 1  # busy: held back
    pending[0].callback(None)
    clock.advance(0)
    assert len(seen) == 2 and seen[-1] == agent.store.index


def test_kv_reads_and_kv_subscription():
    clock, agent, feed = make()
    calls = []
    unsubscribe = feed.subscribe_kv("app/", lambda: calls.append(1))
    agent.facade.write(KVOperation("set", KVEntry("app/a", b"1", flags=3)))
    clock.advance(0)
    assert calls == [1]
    assert feed.kv_get("app/a").value == b"1" and feed.kv_get("app/a").flags == 3
    assert [i.key for i in feed.kv_list("app/")] == ["app/a"]
    unsubscribe()
    agent.facade.write(KVOperation("set", KVEntry("app/b", b"1")))
    clock.advance(0)
    assert calls == [1]
