"""The agent-local endpoints with a fake clock: hash blocking of Agent.Service, ?filter= on the
local lists, health aggregation, and the typed local writes through the facade."""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred

from agent.definitions import CheckSpec, ServiceDefinition
from agent.errors import InvalidRequest, NotFound
from agent.filter import FilterError
from agent.local import commands
from agent.local.endpoints import LocalEndpoints
from agent.local.state import LocalState
from agent.rpc import queries as q
from agent.rpc.options import QueryOptions, ReadResult
from agent.structs import Node, Service
from tests.test_local_sync import FakeCatalog, Fixed, fired

NODE = Node(name="me", address="10.0.0.1")


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def endpoints(clock):
    local = LocalState(clock, lambda: NODE, FakeCatalog(), rng=Fixed(0.0))
    return LocalEndpoints(clock, local, rng=Fixed(0.0))


def register(endpoints, sid="web1", name="web", port=80, checks=()):
    definition = ServiceDefinition(service=Service(node="", id=sid, name=name, port=port),
                                   checks=tuple(checks))
    return fired(endpoints.write(commands.RegisterService(definition)))


def ttl(sid: str, suffix: str = "") -> CheckSpec:
    return CheckSpec(check_id=f"service:{sid}{suffix}", name="ttl", ttl=60, type="ttl",
                     service_id=sid)


# --- hash blocking ---------------------------------------------------------------------------


def test_a_read_without_a_hash_or_with_another_hash_answers_at_once(endpoints):
    register(endpoints)
    now = endpoints.read(q.AgentService("web1"), QueryOptions())
    assert isinstance(now, ReadResult) and now.value.port == 80 and len(now.meta.hash) == 16
    other = endpoints.read(q.AgentService("web1"), QueryOptions(hash="nope", wait=5))
    assert isinstance(other, ReadResult)
    # ?index does not block here (Consul ignores it on this endpoint).
    assert isinstance(endpoints.read(q.AgentService("web1"), QueryOptions(min_index=10 ** 6)),
                      ReadResult)
    with pytest.raises(NotFound, match="unknown service ID: nope"):
        endpoints.read(q.AgentService("nope"), QueryOptions())


def test_a_hash_read_parks_until_the_service_changes(endpoints, clock):
    register(endpoints)
    digest = endpoints.read(q.AgentService("web1"), QueryOptions()).meta.hash
    parked = endpoints.read(q.AgentService("web1"), QueryOptions(hash=digest, wait=60))
    assert isinstance(parked, Deferred) and not parked.called and endpoints.parked == 1
    register(endpoints)  # re-registered as it was: the hash is the same, it keeps waiting
    register(endpoints, sid="other")  # another service does not wake it
    assert not parked.called
    assert endpoints.read(q.AgentService("web1"), QueryOptions()).meta.hash == digest
    register(endpoints, port=81)
    result = fired(parked)
    assert result.value.port == 81 and result.meta.hash != digest
    assert endpoints.parked == 0 and not clock.getDelayedCalls()


def test_a_hash_read_answers_the_same_service_when_the_wait_runs_out(endpoints, clock):
    register(endpoints)
    digest = endpoints.read(q.AgentService("web1"), QueryOptions()).meta.hash
    parked = endpoints.read(q.AgentService("web1"), QueryOptions(hash=digest, wait=10))
    clock.advance(10)  # the wait (its jitter is 0 with this rng)
    assert fired(parked).meta.hash == digest and endpoints.parked == 0


def test_a_hash_read_fails_not_found_when_the_service_goes(endpoints):
    register(endpoints)
    digest = endpoints.read(q.AgentService("web1"), QueryOptions()).meta.hash
    parked = endpoints.read(q.AgentService("web1"), QueryOptions(hash=digest))
    fired(endpoints.write(commands.DeregisterService("web1")))
    failure = fired(parked)
    assert failure.check(NotFound) and "unknown service ID: web1" in str(failure.value)


def test_a_cancelled_hash_read_lets_go_of_its_watch_and_timer(endpoints, clock):
    register(endpoints)
    digest = endpoints.read(q.AgentService("web1"), QueryOptions()).meta.hash
    parked = endpoints.read(q.AgentService("web1"), QueryOptions(hash=digest))
    parked.addErrback(lambda f: None)
    parked.cancel()  # the client hung up
    assert endpoints.parked == 0 and not clock.getDelayedCalls()
    assert endpoints.local._watchers == {}


# --- lists, filters, health ------------------------------------------------------------------


def test_filters_select_local_services_and_checks(endpoints):
    register(endpoints, "web1", port=80, checks=[ttl("web1")])
    register(endpoints, "web2", port=81)
    found = endpoints.read(q.AgentServices(), QueryOptions(filter="Port == 81")).value
    assert list(found) == ["web2"]
    with pytest.raises(FilterError):
        endpoints.read(q.AgentServices(), QueryOptions(filter="Nope == 1"))
    found = endpoints.read(q.AgentChecks(), QueryOptions(filter='ServiceID == "web1"')).value
    assert list(found) == ["service:web1"]


def test_health_aggregates_the_worst_status_and_maintenance(endpoints):
    register(endpoints, "web1", checks=[ttl("web1", ":a"), ttl("web1", ":b")])
    register(endpoints, "web2")
    fired(endpoints.write(commands.UpdateTTL("service:web1:a", "passing")))
    fired(endpoints.write(commands.UpdateTTL("service:web1:b", "warning")))
    health = endpoints.read(q.AgentHealthServiceByID("web1"), QueryOptions()).value
    assert health.status == "warning" and len(health.checks) == 2
    by_name = endpoints.read(q.AgentHealthServiceByName("web"), QueryOptions()).value
    assert [(h.service.id, h.status) for h in by_name] == [("web1", "warning"),
                                                           ("web2", "passing")]
    fired(endpoints.write(commands.ServiceMaintenance("web2", True)))
    health = endpoints.read(q.AgentHealthServiceByID("web2"), QueryOptions()).value
    assert health.status == "maintenance"
    assert endpoints.read(q.AgentHealthServiceByID("nope"), QueryOptions()).value is None


def test_local_writes_fail_as_deferreds_and_change_nothing(endpoints):
    failure = fired(endpoints.write(commands.ServiceMaintenance("nope", True)))
    assert failure.check(NotFound)
    failure = fired(endpoints.write(commands.RegisterCheck(ttl("nope"))))
    assert failure.check(InvalidRequest) and endpoints.local.checks == {}
    with pytest.raises(InvalidRequest):
        endpoints.read(q.KVGet("k"), QueryOptions())
