"""The core's read seam: typed queries through `facade.read` with QueryOptions — blocking
queries, consistency modes, max_stale, ?filter= — on a fake clock, no sockets."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from agent.errors import InvalidRequest, NoLeader
from agent.facade import CONSISTENT, STALE, QueryOptions, queries
from agent.fsm.commands import KVOperation, Register
from agent.rpc.options import DEFAULT_WAIT, JITTER_FRACTION
from agent.structs import Check, KVEntry, Node, Service
from tests.coreutil import Core


def put(core: Core, key: str, value: bytes = b"v") -> int:
    return core.apply(KVOperation("set", KVEntry(key, value))).index


def fired(d: Deferred):
    """What `d` fired with so far (None if it has not), leaving its result in place."""
    out = []

    def keep(value):
        out.append(value)
        return value
    d.addBoth(keep)
    if out and hasattr(out[0], "trap"):
        d.addErrback(lambda f: None)
    return out[0] if out else None


def test_a_read_answers_with_consuls_index_and_meta():
    core = Core()
    index = put(core, "app/a")
    result = core.facade.read(queries.KVGet("app/a"))
    assert result.index == index and result.value.value == b"v"
    assert result.meta.known_leader and result.meta.consistency == "leader"
    # A missing key reports the table's index, never below 1 (a client would never block).
    assert Core().facade.read(queries.KVGet("nope")).index == 1


def test_readers_at_one_index_share_one_answer():
    core = Core()
    put(core, "app/a")
    first = core.facade.read(queries.KVList("app/"))
    assert core.facade.read(queries.KVList("app/")) is first
    put(core, "app/b")
    assert core.facade.read(queries.KVList("app/")) is not first


def test_a_blocking_read_waits_for_a_change_past_its_index():
    core = Core()
    index = put(core, "app/a")
    d = core.facade.read(queries.KVGet("app/a"), QueryOptions(min_index=index, wait=30))
    assert isinstance(d, Deferred) and fired(d) is None
    put(core, "other/x")  # another prefix: still parked
    assert fired(d) is None
    newer = put(core, "app/a", b"w")
    result = fired(d)
    assert result.index == newer and result.value.value == b"w"


def test_a_blocking_read_returns_at_once_when_the_index_already_moved():
    core = Core()
    index = put(core, "app/a")
    put(core, "app/a")
    result = core.facade.read(queries.KVGet("app/a"), QueryOptions(min_index=index))
    assert not isinstance(result, Deferred) and result.index > index


def test_the_wait_runs_out_with_consuls_default_and_jitter():
    core = Core()
    index = put(core, "app/a")
    d = core.facade.read(queries.KVGet("app/a"), QueryOptions(min_index=index))
    core.clock.advance(DEFAULT_WAIT - 0.01)
    assert fired(d) is None
    core.clock.advance(DEFAULT_WAIT / JITTER_FRACTION + 0.02)
    assert fired(d).index == index  # the unchanged answer when the wait is over


def test_a_cancelled_blocking_read_drops_its_watch_and_timer():
    core = Core()
    index = put(core, "app/a")
    d = core.facade.read(queries.KVGet("app/a"), QueryOptions(min_index=index, wait=5))
    d.addErrback(lambda f: None)
    assert len(core.store.watches) == 1 and core.clock.getDelayedCalls()
    d.cancel()
    assert len(core.store.watches) == 0 and not core.clock.getDelayedCalls()


def test_default_reads_need_a_leader_and_stale_reads_a_recent_enough_replica():
    core = Core()
    put(core, "app/a")
    core.lose_leader(contact=5.0)
    with pytest.raises(NoLeader):
        core.facade.read(queries.KVGet("app/a"))
    stale = core.facade.read(queries.KVGet("app/a"), QueryOptions(consistency=STALE))
    assert stale.value.value == b"v" and stale.meta.consistency == "stale"
    assert not stale.meta.known_leader and stale.meta.last_contact == 5.0
    assert core.facade.read(queries.KVGet("app/a"),
                            QueryOptions(consistency=STALE, max_stale=10)).index
    with pytest.raises(NoLeader):  # older than the client takes, and no leader to ask
        core.facade.read(queries.KVGet("app/a"), QueryOptions(consistency=STALE, max_stale=1))


def test_a_consistent_read_waits_for_the_leader_to_confirm_its_leadership():
    core = Core()
    put(core, "app/a")
    confirmations = []
    core.log.verify_leader = lambda: confirmations.append(Deferred()) or confirmations[-1]
    d = core.facade.read(queries.KVGet("app/a"), QueryOptions(consistency=CONSISTENT))
    assert fired(d) is None and len(confirmations) == 1
    confirmations[0].callback(True)
    assert fired(d).meta.consistency == "consistent"


def test_filters_are_applied_in_the_core_and_refused_at_once_when_bad():
    core = Core()
    for name, tags in (("web", ("a",)), ("api", ("b",))):
        core.apply(Register(node=Node("n1", "10.0.0.1"),
                            service=Service(node="n1", id=name, name=name, tags=tags),
                            checks=(Check(node="n1", check_id=f"c-{name}", name="c",
                                          status="passing", service_id=name),)))
    rows = core.facade.read(queries.HealthServiceNodes("web"),
                            QueryOptions(filter='"a" in Service.Tags')).value
    assert [r.service.id for r in rows] == ["web"]
    assert core.facade.read(queries.HealthServiceNodes("web"),
                            QueryOptions(filter='"b" in Service.Tags')).value == []
    with pytest.raises(InvalidRequest):
        core.facade.read(queries.HealthServiceNodes("web"), QueryOptions(filter="garbage (("))


def test_writes_answer_the_index_they_were_applied_at():
    core = Core()
    first = fired(core.facade.write(KVOperation("set", KVEntry("k", b"1"))))
    second = fired(core.facade.write(KVOperation("cas", KVEntry("k", b"2"), first.index)))
    assert (first.value, second.value) == (True, True) and second.index == first.index + 1
    assert core.facade.read(queries.KVGet("k")).index == second.index


def test_writes_without_a_leader_fail():
    core = Core()
    core.lose_leader()
    failure = fired(core.facade.write(KVOperation("set", KVEntry("k", b"1"))))
    assert failure.check(NoLeader)




# --- the agent's cache (?cached) -------------------------------------------------------------

def _web(core: Core, node: str, port: int) -> int:
    return core.apply(Register(node=Node(node, "10.0.0.1"),
                               service=Service(node=node, id="web", name="web", port=port))).index


def test_cached_reads_miss_then_hit_and_follow_changes_in_the_background():
    core = Core()
    _web(core, "n1", 80)
    cached = QueryOptions(use_cache=True)
    first = core.facade.read(queries.CatalogServiceNodes("web"), cached)
    assert first.meta.cache_hit is False
    second = core.facade.read(queries.CatalogServiceNodes("web"), cached)
    assert second.meta.cache_hit is True and second.meta.cache_age == 0.0
    assert [r.node.name for r in second.value] == ["n1"]
    _web(core, "n2", 81)  # the background refresh (a blocking read) picks the change up
    core.clock.advance(0)
    third = core.facade.read(queries.CatalogServiceNodes("web"), cached)
    assert third.meta.cache_hit is True and [r.node.name for r in third.value] == ["n1", "n2"]


def test_a_cached_blocking_read_waits_for_the_entry_to_pass_its_index():
    core = Core()
    _web(core, "n1", 80)
    first = core.facade.read(queries.HealthServiceNodes("web"), QueryOptions(use_cache=True))
    d = core.facade.read(queries.HealthServiceNodes("web"),
                         QueryOptions(use_cache=True, min_index=first.index, wait=60))
    assert fired(d) is None
    newer = _web(core, "n2", 81)
    result = fired(d)
    assert result.meta.cache_hit is True and result.index == newer


def test_uncached_queries_and_reads_without_cached_bypass_the_cache():
    core = Core()
    put(core, "k")
    assert core.facade.read(queries.KVGet("k"), QueryOptions(use_cache=True)).meta.cache_hit is None
    assert core.facade.read(queries.CatalogServices()).meta.cache_hit is None


def test_max_age_refetches_an_answer_older_than_the_client_takes():
    core = Core()
    cached = QueryOptions(use_cache=True)
    core.facade.read(queries.CatalogDatacenters(), cached)  # a read the cache cannot refresh
    core.clock.advance(30)
    hit = core.facade.read(queries.CatalogDatacenters(), cached)
    assert hit.meta.cache_hit is True and hit.meta.cache_age == 30
    young = QueryOptions(use_cache=True, max_age=10)
    assert core.facade.read(queries.CatalogDatacenters(), young).meta.cache_hit is False


def test_max_stale_and_discovery_max_stale_choose_stale_reads_as_consul():
    from gateway.http.params import parse_query_params

    def mode(query: dict, path: str = "/v1/kv/a", discovery: float = 0.0):
        params = parse_query_params(query, {}, False, path=path,
                                    discovery_max_stale=discovery)
        return params.options.consistency, params.options.max_stale
    assert mode({"max_stale": ["5s"]}) == (STALE, 5.0)  # a max_stale alone allows stale
    assert mode({}, "/v1/catalog/nodes", 30.0) == (STALE, 30.0)
    assert mode({}, "/v1/health/service/web", 30.0) == (STALE, 30.0)
    assert mode({}, "/v1/kv/a", 30.0)[0] != STALE  # not a discovery endpoint
    assert mode({"leader": [""]}, "/v1/catalog/nodes", 30.0)[0] != STALE
    assert mode({"consistent": [""]}, "/v1/catalog/nodes", 30.0)[0] != STALE
    with pytest.raises(InvalidRequest):
        mode({"consistent": [""], "max_stale": ["5s"]})
