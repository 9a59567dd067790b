"""Local state with a fake clock: TTL expiry, anti-entropy repairs, maintenance, reaping."""

from __future__ import annotations

import pytest
from twisted.internet import task

from agent.agent import make_agent
from agent.config.model import AgentConfig
from agent.definitions import CheckSpec, ServiceDefinition
from agent.errors import InvalidRequest, NotFound, WaypostError
from agent.fsm.commands import Deregister, Register
from agent.local.antientropy import scaled_interval
from agent.structs import CheckDefinition, Node, Service


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def agent(clock):
    a = make_agent(AgentConfig(node_name="me", node_id="00000000-0000-0000-0000-000000000001"), clock)
    a.startService()
    yield a
    a.stopService()


def web(sid="web1", ttl=10.0, tags=("a",), override=False, deregister_after=0.0, checks=None):
    svc = Service(node="", id=sid, name="web", tags=tags, port=80, enable_tag_override=override)
    if checks is None:
        checks = (CheckSpec(check_id=f"service:{sid}", name="ttl", ttl=ttl, type="ttl",
                            definition=CheckDefinition(
                                deregister_critical_service_after=deregister_after)),)
    return ServiceDefinition(service=svc, checks=checks)


def catalog_check(agent, check_id):
    return agent.store.catalog.checks.get("me", {}).get(check_id)


def test_ttl_check_expires_to_critical(agent, clock):
    agent.local.add_service(web(ttl=10))
    agent.local.update_ttl("service:web1", "passing", "fine")
    assert catalog_check(agent, "service:web1").status == "passing"
    clock.advance(9)
    agent.local.update_ttl("service:web1", "passing", "still fine")  # resets the TTL
    clock.advance(9)
    assert catalog_check(agent, "service:web1").status == "passing"
    clock.advance(1.5)
    check = catalog_check(agent, "service:web1")
    assert check.status == "critical"
    assert check.output == "TTL expired (last output before timeout follows): still fine"


def test_ttl_update_of_a_non_ttl_check_fails(agent):
    with pytest.raises(WaypostError, match='CheckID "nope" does not have associated TTL'):
        agent.local.update_ttl("nope", "passing", "")


def test_antientropy_restores_what_was_deleted_behind_its_back(agent):
    agent.local.add_service(web())
    agent.raft.apply(Deregister(node="me", service_id="web1"))
    assert "web1" not in agent.store.catalog.services["me"]
    agent.antientropy.sync()
    assert agent.store.catalog.services["me"]["web1"].name == "web"
    assert catalog_check(agent, "service:web1") is not None


def test_antientropy_removes_foreign_rows_but_keeps_the_agents_own(agent):
    stranger = Service(node="me", id="stranger", name="stranger")
    agent.raft.apply(Register(node=agent.node(), service=stranger))
    agent.antientropy.sync()
    services = agent.store.catalog.services["me"]
    assert "stranger" not in services and "consul" in services
    assert catalog_check(agent, "serfHealth") is not None


def test_antientropy_repairs_node_and_check_drift(agent):
    agent.local.add_service(web())
    agent.local.update_ttl("service:web1", "passing", "ok")
    # Someone rewrote our node's address and our check's status in the catalog.
    agent.raft.apply(Register(node=Node(name="me", address="10.9.9.9"), skip_node_update=False))
    bad = agent.store.catalog.checks["me"]["service:web1"]
    from dataclasses import replace
    agent.raft.apply(Register(node=agent.node(), checks=(replace(bad, status="critical"),),
                              skip_node_update=True))
    agent.antientropy.sync()
    assert agent.store.catalog.nodes["me"].address == "127.0.0.1"
    assert catalog_check(agent, "service:web1").status == "passing"
    # In sync now: another pass writes nothing.
    index = agent.store.index
    agent.antientropy.sync()
    assert agent.store.index == index


def test_enable_tag_override_keeps_catalog_tags(agent):
    agent.local.add_service(web(sid="ov", tags=("local",), override=True))
    agent.local.add_service(web(sid="plain", tags=("local",)))
    for sid in ("ov", "plain"):
        svc = agent.store.catalog.services["me"][sid]
        from dataclasses import replace
        agent.raft.apply(Register(node=agent.node(), service=replace(svc, tags=("edited",)),
                                  skip_node_update=True))
    agent.antientropy.sync()
    assert agent.store.catalog.services["me"]["ov"].tags == ("edited",)
    assert agent.local.services["ov"].tags == ("edited",)
    assert agent.store.catalog.services["me"]["plain"].tags == ("local",)


def test_antientropy_runs_periodically(agent, clock):
    agent.local.add_service(web())
    agent.raft.apply(Deregister(node="me", service_id="web1"))
    clock.advance(60 * 1.5 + 1)  # the interval plus the largest stagger
    assert "web1" in agent.store.catalog.services["me"]


def test_interval_scales_with_cluster_size():
    assert scaled_interval(60, 1) == 60
    assert scaled_interval(60, 128) == 60
    assert scaled_interval(60, 129) == 120
    assert scaled_interval(60, 256) == 120
    assert scaled_interval(60, 257) == 180


def test_node_maintenance(agent):
    agent.local.set_node_maintenance(True, "")
    check = catalog_check(agent, "_node_maintenance")
    assert (check.name, check.status) == ("Node Maintenance Mode", "critical")
    assert check.notes.startswith("Maintenance mode is enabled for this node")
    assert agent.local.maintenance() == {"": check.notes}
    agent.local.set_node_maintenance(False, "")
    assert catalog_check(agent, "_node_maintenance") is None
    assert agent.local.maintenance() == {}


def test_service_maintenance(agent):
    agent.local.add_service(web())
    agent.local.set_service_maintenance("web1", True, "deploying")
    check = catalog_check(agent, "_service_maintenance:web1")
    assert (check.service_id, check.notes, check.status) == ("web1", "deploying", "critical")
    with pytest.raises(NotFound):
        agent.local.set_service_maintenance("nope", True, "")
    agent.local.set_service_maintenance("web1", False, "")
    assert catalog_check(agent, "_service_maintenance:web1") is None


def test_critical_service_is_deregistered_after_its_limit(agent, clock):
    agent.local.add_service(web(ttl=5, deregister_after=60))
    clock.advance(5)  # the TTL lapses: critical from now
    clock.advance(30)
    assert "web1" in agent.local.services
    clock.advance(60)  # the next reap after 60 s of critical
    assert "web1" not in agent.local.services
    assert "web1" not in agent.store.catalog.services["me"]


def test_script_checks_refused_unless_enabled(agent):
    spec = CheckSpec(check_id="s", name="s", args=("true",), type="script",
                     definition=CheckDefinition(interval=10))
    with pytest.raises(InvalidRequest, match="Scripts are disabled"):
        agent.local.add_check(spec)
    agent.local.enable_local_script_checks = True
    with pytest.raises(InvalidRequest):
        agent.local.add_check(spec)  # an API registration is not a local one
    agent.local.add_check(spec, source="config")
    assert "s" in agent.local.checks
