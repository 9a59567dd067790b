"""The local state's sync with the catalog, with a fake clock and a catalog client the test
controls: in-sync and deleted flags, partial syncs that coalesce, retries with backoff after a
refusing catalog, damped output-only check changes, and a "client" local state (no store of
its own) that syncs into another core's catalog through its server endpoints."""

from __future__ import annotations

from dataclasses import replace

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import capturedLogs

from agent.definitions import CheckSpec, ServiceDefinition
from agent.errors import NoLeader
from agent.fsm.commands import Deregister, Register
from agent.local import commands
from agent.local.antientropy import AntiEntropy, RETRY_INTERVAL
from agent.local.catalog import InProcessCatalog
from agent.local.compose import build_local, check_update_interval_of
from agent.local.state import LocalState
from agent.rpc.options import WriteResult
from agent.rpc.queries import NodeServices
from agent.structs import Node, Service
from tests.coreutil import Core

NODE = Node(name="me", address="10.0.0.1", node_id="00000000-0000-0000-0000-0000000000aa")


class Fixed:
    """An rng whose every draw is `value`: jitter and stagger become exact."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


class FakeCatalog:
    """A `CatalogClient` over plain dicts. `refuse` fails writes (as a server without a
    leader would); `hold` keeps each write's answer until the test calls `release()`."""

    def __init__(self) -> None:
        self.node: Node | None = None
        self.services: dict[str, Service] = {}
        self.checks: dict = {}
        self.writes: list = []
        self.refuse = False
        self.hold = False
        self.held: list[tuple[Deferred, object]] = []

    def register(self, command: Register, token: str = "") -> Deferred:
        return self._write(command)

    def deregister(self, command: Deregister, token: str = "") -> Deferred:
        return self._write(command)

    def _write(self, command) -> Deferred:
        self.writes.append(command)
        if self.refuse:
            return fail(NoLeader())
        if self.hold:
            d: Deferred = Deferred()
            self.held.append((d, command))
            return d
        return succeed(self._apply(command))

    def release(self) -> None:
        held, self.held = self.held, []
        for d, command in held:
            d.callback(self._apply(command))

    def _apply(self, command) -> WriteResult:
        if isinstance(command, Register):
            if not command.skip_node_update or self.node is None:
                self.node = command.node
            if command.service is not None:
                self.services[command.service.id] = command.service
            for check in command.checks:
                self.checks[check.check_id] = check
        elif command.service_id:
            self.services.pop(command.service_id, None)
            for cid in [cid for cid, c in self.checks.items()
                        if c.service_id == command.service_id]:
                del self.checks[cid]
        else:
            self.checks.pop(command.check_id, None)
        return WriteResult(len(self.writes), True)

    def node_services(self, node: str, token: str = "") -> Deferred:
        if self.node is None:
            return succeed(None)
        return succeed(NodeServices(self.node, dict(self.services)))

    def node_checks(self, node: str, token: str = "") -> Deferred:
        return succeed(list(self.checks.values()))


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def catalog():
    return FakeCatalog()


def local_state(clock, catalog, interval: float = 300.0, rng=None) -> LocalState:
    return LocalState(clock, lambda: NODE, catalog, check_update_interval=interval,
                      rng=rng or Fixed(0.5))


def web(sid: str = "web1", tags: tuple[str, ...] = (), ttl: float = 0.0) -> ServiceDefinition:
    checks = (CheckSpec(check_id=f"service:{sid}", name="ttl", ttl=ttl, type="ttl",
                        service_id=sid),) if ttl else ()
    return ServiceDefinition(service=Service(node="", id=sid, name="web", tags=tags),
                             checks=checks)


def fired(d: Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


# --- flags -----------------------------------------------------------------------------------


def test_a_change_is_out_of_sync_until_its_write_is_applied(clock, catalog):
    local = local_state(clock, catalog)
    catalog.hold = True
    answered = local.add_service(web())
    assert not local.service_flags.in_sync("web1") and not local.node_in_sync
    assert not answered.called  # the HTTP answer waits for the sync carrying the change
    catalog.release()
    assert local.service_flags.in_sync("web1") and local.node_in_sync
    assert fired(answered) == 2  # the index of the pass's writes (node info, then service)
    assert catalog.services["web1"].node == "me"


def test_a_change_made_while_its_write_is_in_flight_stays_out_of_sync(clock, catalog):
    local = local_state(clock, catalog)
    local.add_service(web())  # node info and web1 in sync
    catalog.hold = True
    local.add_service(web(tags=("v1",)))
    local.add_service(web(tags=("v2",)))  # carried by the next pass, not the one in flight
    catalog.release()  # the v1 write lands, but v2 is newer: still out of sync
    assert not local.service_flags.in_sync("web1")
    assert [w.service.tags for w in catalog.writes[-2:]] == [("v1",), ("v2",)]
    catalog.release()
    assert local.service_flags.in_sync("web1")
    assert catalog.services["web1"].tags == ("v2",)


def test_changes_during_a_pass_are_coalesced_into_the_next_one(clock, catalog):
    local = local_state(clock, catalog)
    local.add_service(web("a"))
    catalog.hold = True
    first = local.add_service(web("b"))
    waiting = [local.add_service(web(sid)) for sid in ("c", "d", "e")]
    assert len(catalog.held) == 1  # one pass at a time
    catalog.release()
    assert fired(first) and not any(d.called for d in waiting)
    # The three changes made meanwhile go out together, in one pass.
    assert sorted(c.service.id for _, c in catalog.held) == ["c", "d", "e"]
    catalog.release()
    assert all(d.called for d in waiting) and local.service_flags.pending == 0


def test_a_removal_is_marked_deleted_until_the_catalog_drops_it(clock, catalog):
    local = local_state(clock, catalog)
    local.add_service(web(ttl=30))
    catalog.refuse = True
    with capturedLogs():
        fired(local.remove_service("web1"))  # answered: the agent retries, as Consul's does
    assert "web1" not in local.services
    assert local.service_flags.is_deleted("web1") and local.check_flags.is_deleted("service:web1")
    assert "web1" in catalog.services
    catalog.refuse = False
    local.sync.trigger()
    assert "web1" not in catalog.services and "service:web1" not in catalog.checks
    # The service's deregistration took its check along: no write of its own.
    assert [w for w in catalog.writes if isinstance(w, Deregister)][-1].service_id == "web1"
    assert local.service_flags.pending == 0 and local.check_flags.pending == 0


def test_a_full_sync_marks_drift_and_foreign_rows(clock, catalog):
    local = LocalState(clock, lambda: NODE, catalog, keep_services=frozenset({"consul"}))
    antientropy = AntiEntropy(clock, local, rng=Fixed(0.0))
    local.add_service(web())
    catalog.services["web1"] = replace(catalog.services["web1"], port=9)  # edited behind us
    catalog.services["stranger"] = Service(node="me", id="stranger", name="x")
    catalog.services["consul"] = Service(node="me", id="consul", name="consul")
    fired(antientropy.sync())
    assert catalog.services["web1"].port == 0
    assert set(catalog.services) == {"web1", "consul"}
    writes = len(catalog.writes)
    fired(antientropy.sync())  # in sync now: nothing to write
    assert len(catalog.writes) == writes


# --- retries ---------------------------------------------------------------------------------


def test_a_refusing_catalog_is_retried_with_growing_backoff(clock, catalog):
    local = local_state(clock, catalog)
    antientropy = AntiEntropy(clock, local, interval=60.0, rng=Fixed(0.0))
    antientropy.start(now=True)  # the full sync at start: node info written
    catalog.refuse = True
    with capturedLogs():
        local.add_service(web())  # the partial sync fails
        assert antientropy.failures == 1 and not local.service_flags.in_sync("web1")
        attempts = []
        for wait in (RETRY_INTERVAL, 2 * RETRY_INTERVAL, 30.0):  # doubling, capped at 60/2
            before = len(catalog.writes)
            clock.advance(wait - 0.1)
            assert len(catalog.writes) == before, "retried too early"
            clock.advance(0.1)
            attempts.append(len(catalog.writes) - before)
    assert attempts == [1, 1, 1] and antientropy.failures == 4
    assert antientropy.loop.failures == 3  # each failed full sync is logged and counted
    catalog.refuse = False
    clock.advance(30.0)
    assert local.service_flags.in_sync("web1") and "web1" in catalog.services
    assert antientropy.failures == 0  # a good full sync ends the backoff
    before = len(catalog.writes)
    clock.advance(59.9)
    assert len(catalog.writes) == before  # back to the regular interval
    antientropy.stop()


# --- damping of check output -----------------------------------------------------------------


def ttl_check_writes(catalog) -> list[tuple[str, str]]:
    return [(c.status, c.output) for w in catalog.writes if isinstance(w, Register)
            for c in w.checks if c.check_id == "service:web1"]


def test_output_only_changes_are_written_at_most_once_per_interval(clock, catalog):
    local = local_state(clock, catalog, interval=300.0, rng=Fixed(0.5))
    local.add_service(web(ttl=1000))
    local.update_ttl("service:web1", "passing", "a")  # a status change: at once
    assert catalog.checks["service:web1"].output == "a"
    local.update_ttl("service:web1", "passing", "b")
    local.update_ttl("service:web1", "passing", "c")
    assert local.checks["service:web1"].check.output == "c"  # the agent's own view is current
    assert catalog.checks["service:web1"].output == "a"
    clock.advance(299)  # interval/2 + 0.5 * interval
    assert catalog.checks["service:web1"].output == "a"
    clock.advance(1)
    assert catalog.checks["service:web1"].output == "c"
    assert ttl_check_writes(catalog) == [("critical", ""), ("passing", "a"), ("passing", "c")]


def test_a_status_change_is_written_at_once_with_the_latest_output(clock, catalog):
    local = local_state(clock, catalog, interval=300.0)
    local.add_service(web(ttl=1000))
    local.update_ttl("service:web1", "passing", "a")
    local.update_ttl("service:web1", "passing", "b")  # damped
    local.update_ttl("service:web1", "warning", "c")  # status: at once
    assert (catalog.checks["service:web1"].status, catalog.checks["service:web1"].output) == (
        "warning", "c")
    clock.advance(600)  # the damped write-back was folded into that write
    assert ttl_check_writes(catalog) == [("critical", ""), ("passing", "a"), ("warning", "c")]


def test_a_full_sync_does_not_push_a_damped_output_early(clock, catalog):
    local = local_state(clock, catalog, interval=300.0)
    antientropy = AntiEntropy(clock, local, rng=Fixed(0.0))
    local.add_service(web(ttl=1000))
    local.update_ttl("service:web1", "passing", "a")
    local.update_ttl("service:web1", "passing", "b")
    fired(antientropy.sync())
    assert catalog.checks["service:web1"].output == "a"
    clock.advance(300)
    assert catalog.checks["service:web1"].output == "b"


def test_without_an_interval_every_output_is_written(clock, catalog):
    local = local_state(clock, catalog, interval=0.0)
    local.add_service(web(ttl=1000))
    for output in ("a", "b", "c"):
        local.update_ttl("service:web1", "passing", output)
        assert catalog.checks["service:web1"].output == output


def test_check_update_interval_is_read_from_the_settings():
    assert check_update_interval_of({}) == 300.0
    assert check_update_interval_of({"check_update_interval": "1m"}) == 60.0
    assert check_update_interval_of({"check_update_interval": "0s"}) == 0.0


# --- a client agent's local state, without a store -------------------------------------------


def test_a_client_local_state_syncs_into_another_cores_catalog():
    server = Core()
    client_node = Node(name="client-1", address="10.0.0.7",
                       node_id="00000000-0000-0000-0000-0000000000c1", datacenter="dc1")
    facade = server.facade  # the server's endpoints, as the gossip issue's RPC will reach them
    client = build_local(server.clock, InProcessCatalog(facade.write, facade.read),
                         lambda: client_node, rng=Fixed(0.0))
    assert not hasattr(client.state, "store")
    spec = CheckSpec(check_id="service:api", name="api ttl", ttl=30, type="ttl",
                     service_id="api")
    definition = ServiceDefinition(service=Service(node="", id="api", name="api", port=8080),
                                   checks=(spec,))
    with capturedLogs() as events:
        result = fired(client.endpoints.write(commands.RegisterService(definition)))
    assert result.index == server.store.index and result.value is True
    catalog = server.store.catalog
    assert catalog.nodes["client-1"].address == "10.0.0.7"
    assert catalog.services["client-1"]["api"].port == 8080
    assert catalog.checks["client-1"]["service:api"].status == "critical"
    logged = [e["log_format"].format(**e) for e in events if "Synced" in e["log_format"]]
    assert logged == ["Synced node info", "Synced service: service=api",
                      "Synced check: check=service:api"]
    fired(client.endpoints.write(commands.UpdateTTL("service:api", "passing", "up")))
    assert catalog.checks["client-1"]["service:api"].status == "passing"
    server.apply(Deregister(node="client-1", service_id="api"))  # lost on the server side
    fired(client.antientropy.sync())
    assert catalog.services["client-1"]["api"].port == 8080
    assert catalog.checks["client-1"]["service:api"].output == "up"


def test_re_registering_a_check_writes_its_pending_output(clock, catalog):
    local = local_state(clock, catalog, interval=300.0)
    local.add_service(web(ttl=1000))
    local.update_ttl("service:web1", "passing", "a")
    local.update_ttl("service:web1", "passing", "b")  # damped
    local.add_service(web(ttl=1000))  # the same definition again (a reload): state kept
    check = catalog.checks["service:web1"]
    assert (check.status, check.output) == ("passing", "b")
    assert not clock.getDelayedCalls() or all(
        call.func.__name__ != "_write_back" for call in clock.getDelayedCalls())


def test_a_caller_that_went_away_does_not_disturb_the_pass(clock, catalog):
    local = local_state(clock, catalog)
    local.add_service(web("a"))
    catalog.hold = True
    local.add_service(web("b"))
    gone = local.add_service(web("c"))  # waits for the next pass
    stays = local.add_service(web("d"))
    gone.addErrback(lambda f: None)
    gone.cancel()  # its HTTP client hung up
    catalog.release()
    catalog.release()
    assert fired(stays) > 0 and local.service_flags.pending == 0
