"""Sessions: the table and its invalidation rules, the leader's TTL timers and lock-delays on a
fake clock, and the /v1/session endpoints and KV acquire/release against a real agent."""

from __future__ import annotations

import io
import json
import re
import threading

import consul
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from agent import structs
from agent.errors import WaypostError
from agent.facade import AgentFacade, QueryOptions, queries
from agent.fsm.apply import FSM
from agent.fsm.commands import (
    Deregister,
    KVOperation,
    Register,
    SessionCreate,
    SessionDestroy,
)
from agent.raft.single import SingleServerLog
from agent.rpc.server import ServerEndpoints
from agent.sessions import SessionManager
from agent.state import codec, snapshot
from agent.state.store import StateStore
from agent.structs import Check, KVEntry, Node, Service, ServiceCheck, Session

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Core:
    """Store, FSM, one-member log, session manager and facade on a fake clock."""

    def __init__(self, store: StateStore | None = None) -> None:
        self.clock = Clock()
        self.store = store or StateStore()
        self.fsm = FSM(self.store, clock=self.clock.seconds)
        self.log = SingleServerLog(self.clock, self.fsm)
        self.log.start()
        ids = iter(f"s{i}" for i in range(1, 1000))
        self.sessions = SessionManager(self.clock, self.store, self.log.apply)
        self.endpoints = ServerEndpoints(self.clock, self.store, self.log,
                                         datacenter=lambda: "dc1",
                                         lock_delay_remaining=self.sessions.lock_delay_remaining,
                                         session_timers=self.sessions, new_id=lambda: next(ids))
        self.facade = AgentFacade(None, self.clock, self.endpoints, None, None, list, dict)
        if store is None:
            self.register(Check(node="n1", check_id="serfHealth", name="serf",
                                status=structs.PASSING))
        self.sessions.start()

    def register(self, *checks: Check, service: Service | None = None):
        return self.result(self.log.apply(Register(node=Node("n1", "10.0.0.1"), service=service,
                                                   checks=checks)))

    def result(self, d):
        out = []
        d.addBoth(out.append)
        assert out, "the Deferred did not fire"
        if hasattr(out[0], "value") and isinstance(out[0].value, BaseException):
            raise out[0].value
        return out[0]

    def create(self, node: str = "n1", checks=(structs.SERF_CHECK_ID,), **kw) -> str:
        """Session.Apply create through the endpoints, as the HTTP API does."""
        session = Session(id="", node=node, checks=checks, **kw)
        return self.result(self.facade.write(SessionCreate(session))).value

    def info(self, session_id: str) -> Session | None:
        found = self.facade.read(queries.SessionGet(session_id), QueryOptions()).value
        return found[0] if found else None

    def list(self) -> list[Session]:
        return self.facade.read(queries.SessionList(), QueryOptions()).value

    def node_sessions(self, node: str) -> list[Session]:
        return self.facade.read(queries.SessionNode(node), QueryOptions()).value

    def destroy(self, session_id: str) -> Deferred:
        """Session.Apply destroy; fires with True, as Consul answers."""
        return self.facade.write(SessionDestroy(session_id)).addCallback(lambda _: True)

    def lock(self, key: str, session: str, value: bytes = b"v"):
        return self.result(self.facade.write(
            KVOperation("lock", KVEntry(key, value, session=session)))).value

    def unlock(self, key: str, session: str):
        return self.result(self.facade.write(
            KVOperation("unlock", KVEntry(key, b"v", session=session)))).value

    def entry(self, key: str) -> KVEntry | None:
        return self.store.kv.get(key)[1]


# --- KV locks ---------------------------------------------------------------------------------


def test_lock_index_and_holder_rules():
    core = Core()
    a, b = core.create(), core.create()
    assert core.lock("k", a) is True
    first = core.entry("k")
    assert (first.lock_index, first.session) == (1, a)
    assert core.lock("k", a, b"again") is True  # the holder again: value changes, LockIndex not
    assert (core.entry("k").lock_index, core.entry("k").value) == (1, b"again")
    assert core.lock("k", b) is False
    assert core.unlock("k", b) is False
    # A plain write keeps the lock.
    core.result(core.facade.write(KVOperation("set", KVEntry("k", b"plain"))))
    assert core.entry("k").session == a
    assert core.unlock("k", a) is True
    released = core.entry("k")
    assert (released.session, released.lock_index, released.value) == ("", 1, b"v")
    assert core.lock("k", b) is True and core.entry("k").lock_index == 2


def test_lock_with_unknown_or_missing_session_fails():
    core = Core()
    with pytest.raises(WaypostError, match='invalid session "nope"'):
        core.lock("k", "nope")
    with pytest.raises(WaypostError, match="missing session"):
        core.lock("k", "")
    assert core.entry("k") is None


# --- create and its checks ---------------------------------------------------------------------


def test_create_defaults_and_validation():
    core = Core()
    sid = core.create(name="web-lock")
    session = core.info(sid)
    assert session == Session(id=sid, name="web-lock", node="n1", checks=("serfHealth",),
                              lock_delay=15.0, behavior="release", ttl=0.0,
                              create_index=session.create_index,
                              modify_index=session.create_index)
    assert [s.id for s in core.node_sessions("n1")] == [sid]
    with pytest.raises(WaypostError, match="Invalid Behavior setting 'sometimes'"):
        core.create(behavior="sometimes")
    with pytest.raises(WaypostError) as err:
        core.create(ttl=5.0)
    assert str(err.value) == "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"
    with pytest.raises(WaypostError, match="Missing node registration"):
        core.create(node="ghost")
    with pytest.raises(WaypostError, match="Missing check 'db' registration"):
        core.create(checks=("db",))
    core.register(Check(node="n1", check_id="db", name="db", status=structs.CRITICAL))
    with pytest.raises(WaypostError, match="Check 'db' is in critical state"):
        core.create(checks=("serfHealth", "db"))
    assert len(core.list()) == 1


# --- TTL timers --------------------------------------------------------------------------------


def test_ttl_expiry_after_twice_the_ttl_releases_keys():
    core = Core()
    sid = core.create(ttl=10.0)
    core.lock("app/leader", sid)
    core.clock.advance(19.9)
    assert core.info(sid) is not None
    core.clock.advance(0.1)
    assert core.info(sid) is None
    entry = core.entry("app/leader")
    assert (entry.session, entry.lock_index, entry.value) == ("", 1, b"v")
    assert entry.modify_index == core.store.index > entry.create_index


def test_ttl_expiry_with_delete_behavior_deletes_keys():
    core = Core()
    sid = core.create(ttl=10.0, behavior="delete")
    core.lock("app/ephemeral", sid)
    core.result(core.facade.write(KVOperation("set", KVEntry("app/other", b"x"))))
    core.clock.advance(20)
    assert core.entry("app/ephemeral") is None
    assert core.entry("app/other") is not None


def test_renew_extends_and_unknown_renew_is_none():
    core = Core()
    sid = core.create(ttl=10.0)
    core.clock.advance(15)
    assert core.result(core.sessions.renew(sid)).id == sid
    core.clock.advance(15)
    assert core.info(sid) is not None
    core.clock.advance(5)
    assert core.info(sid) is None
    assert core.result(core.sessions.renew(sid)) is None


def test_destroy_drops_the_timer_and_no_ttl_never_expires():
    core = Core()
    sid, forever = core.create(ttl=10.0), core.create()
    assert core.result(core.destroy(sid)) is True
    assert core.clock.getDelayedCalls() == []
    core.clock.advance(100000)
    assert [s.id for s in core.list()] == [forever]
    assert core.result(core.destroy("missing")) is True


# --- invalidation by the catalog ---------------------------------------------------------------


def test_linked_check_turning_critical_invalidates():
    core = Core()
    core.register(Check(node="n1", check_id="disk", name="disk", status=structs.WARNING))
    linked = core.create(checks=("serfHealth", "disk"))
    other = core.create()
    core.lock("a", linked)
    core.register(Check(node="n1", check_id="disk", name="disk", status=structs.CRITICAL))
    assert core.info(linked) is None and core.info(other) is not None
    assert core.entry("a").session == ""


def test_check_or_node_deregistration_invalidates():
    core = Core()
    core.register(Check(node="n1", check_id="disk", name="disk", status=structs.PASSING))
    on_disk = core.create(checks=("disk",))
    core.log.apply(Deregister(node="n1", check_id="disk"))
    assert core.info(on_disk) is None
    a, b = core.create(ttl=30.0), core.create(checks=())
    core.lock("x", a)
    core.log.apply(Deregister(node="n1"))
    assert core.list() == [] and core.entry("x").session == ""
    assert core.clock.getDelayedCalls() == []  # the TTL timer went with the session
    assert b not in core.store.sessions.sessions


def test_service_and_legacy_checks_are_kept_apart_and_each_invalidates():
    core = Core()
    core.register(Check(node="n1", check_id="web-chk", name="web", status=structs.PASSING,
                        service_id="web"),
                  Check(node="n1", check_id="disk", name="disk", status=structs.PASSING),
                  service=Service(node="n1", id="web", name="web"))
    by_service = core.create(service_checks=(ServiceCheck("web-chk"),))
    by_legacy = core.create(checks=(), legacy_checks=("disk",))
    plain = core.create()
    session = core.info(by_service)
    assert (session.checks, session.service_checks) == (("serfHealth",), (ServiceCheck("web-chk"),))
    assert session.check_ids() == ("serfHealth", "web-chk")
    with pytest.raises(WaypostError, match="Missing check 'gone' registration"):
        core.create(service_checks=(ServiceCheck("gone"),))
    core.register(Check(node="n1", check_id="web-chk", name="web", status=structs.CRITICAL,
                        service_id="web"), service=Service(node="n1", id="web", name="web"))
    assert core.info(by_service) is None
    assert core.info(by_legacy) is not None and core.info(plain) is not None
    core.register(Check(node="n1", check_id="disk", name="disk", status=structs.CRITICAL))
    assert core.info(by_legacy) is None and core.info(plain) is not None


def test_session_rows_round_trip_and_old_rows_still_read():
    full = Session(id="s", node="n1", checks=None, lock_delay=-5.0,
                   service_checks=(ServiceCheck("a", "ns"),), legacy_checks=("b",))
    assert codec.decode_session(json.loads(json.dumps(codec.encode_session(full)))) == full
    empty = Session(id="e", node="n1", checks=(), service_checks=())
    assert codec.decode_session(json.loads(json.dumps(codec.encode_session(empty)))) == empty
    # A row written before service and legacy checks were kept apart.
    old = {"id": "o", "name": "x", "node": "n1", "checks": ["serfHealth", "web-chk"],
           "lock_delay": 15.0, "behavior": "release", "ttl": 0.0, "create_index": 3,
           "modify_index": 3}
    assert codec.decode_session(old) == Session(
        id="o", name="x", node="n1", checks=("serfHealth", "web-chk"), create_index=3,
        modify_index=3)


# --- lock-delay --------------------------------------------------------------------------------


def test_lock_delay_blocks_reacquire_until_it_passes():
    core = Core()
    a, b = core.create(lock_delay=15.0), core.create()
    core.lock("k", a)
    core.result(core.destroy(a))
    assert core.lock("k", b) is False
    core.clock.advance(14.9)
    assert core.lock("k", b) is False
    core.clock.advance(0.2)
    assert core.lock("k", b) is True


def test_release_before_destroy_leaves_no_lock_delay_and_delay_is_capped():
    core = Core()
    a, b = core.create(), core.create()
    core.lock("k", a)
    core.unlock("k", a)
    core.result(core.destroy(a))
    assert core.lock("k", b) is True
    long = core.create(lock_delay=600.0)
    core.lock("k2", long)
    core.result(core.destroy(long))
    assert core.sessions.lock_delay_remaining("k2") == pytest.approx(60.0)
    none = core.create(lock_delay=0.0)
    core.lock("k3", none)
    core.result(core.destroy(none))
    assert core.lock("k3", b) is True


def test_every_replica_records_the_lock_delay_when_it_applies_the_release():
    """A follower applying the same entries at its own clock knows the lock-delay too, so a
    new leader enforces it; the store keeps it, not the leader's session manager."""
    core = Core()
    a = core.create(lock_delay=15.0)
    core.lock("k", a)
    follower_clock = Clock()
    follower_clock.advance(100.0)
    follower = FSM(StateStore(), clock=follower_clock.seconds)
    entries = core.log._store.entries(1, core.log.last_index)
    core.result(core.destroy(a))
    entries += core.log._store.entries(entries[-1].index + 1, core.log.last_index)
    for entry in entries:
        if entry.kind == 0:
            follower.apply_entry(entry.index, entry.data)
    assert core.store.lock_delay_remaining("k", core.clock.seconds()) == pytest.approx(15.0)
    assert follower.store.lock_delay_remaining("k", 110.0) == pytest.approx(5.0)
    assert follower.store.lock_delay_remaining("k", 115.0) == 0.0


# --- commands and snapshots --------------------------------------------------------------------


def test_session_commands_round_trip_and_snapshot_restores_sessions_and_timers():
    core = Core()
    sid = core.create(name="keep", ttl=10.0, lock_delay=5.0, checks=())
    core.lock("held", sid)
    core.result(core.log.apply(SessionCreate(Session(id="direct", node="n1", ttl=20.0))))
    body = b"".join(snapshot.encode_chunks(core.fsm.capture()))
    image, _ = snapshot.read_image(io.BytesIO(body))
    store = StateStore()
    snapshot.install(store, image)
    restored = Core(store)
    assert restored.store.sessions.sessions == core.store.sessions.sessions
    assert restored.store.kv.held_by(sid) == ["held"]
    # The restored server leads: TTL timers are armed again from the store.
    restored.clock.advance(20)
    assert list(restored.store.sessions.sessions) == ["direct"]
    assert restored.entry("held").session == ""
    restored.clock.advance(20)
    assert restored.store.sessions.sessions == {}
    restored.result(restored.log.apply(SessionDestroy("gone-already")))


# --- HTTP and py-consul ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def c(agent):
    return consul.Consul(host="127.0.0.1", port=agent.port)


def test_http_create_info_list_node_shapes(agent):
    status, _, body = agent.json("PUT", "/v1/session/create", {"Name": "lock-test", "TTL": "30s"})
    assert status == 200 and list(body) == ["ID"] and UUID.fullmatch(body["ID"])
    sid = body["ID"]
    status, headers, info = agent.json("GET", f"/v1/session/info/{sid}")
    assert status == 200 and int(headers["X-Consul-Index"]) == info[0]["CreateIndex"]
    assert headers["X-Consul-KnownLeader"] == "true"
    assert info == [{"ID": sid, "Name": "lock-test", "Node": "oracle", "LockDelay": 15000000000,
                     "Behavior": "release", "TTL": "30s", "NodeChecks": ["serfHealth"],
                     "ServiceChecks": None, "CreateIndex": info[0]["CreateIndex"],
                     "ModifyIndex": info[0]["CreateIndex"]}]
    _, _, other = agent.json("PUT", "/v1/session/create", {"Name": "other", "Behavior": "delete"})
    _, _, listed = agent.json("GET", "/v1/session/list")
    ids = [s["ID"] for s in listed]
    assert ids == sorted(ids) and {sid, other["ID"]} <= set(ids)
    assert next(s for s in listed if s["ID"] == other["ID"])["TTL"] == ""
    _, _, on_node = agent.json("GET", "/v1/session/node/oracle")
    assert {sid, other["ID"]} <= {s["ID"] for s in on_node}
    assert agent.json("GET", "/v1/session/node/nobody")[2] == []
    assert agent.json("GET", "/v1/session/info/not-a-session")[2] == []
    for path in (f"/v1/session/destroy/{sid}", f"/v1/session/destroy/{other['ID']}"):
        assert agent.json("PUT", path)[2] is True


def test_http_renew_and_errors(agent):
    _, _, body = agent.json("PUT", "/v1/session/create",
                            {"name": "x", "ttl": "10s", "lockdelay": 5, "checks": []})
    sid = body["ID"]
    status, _, renewed = agent.json("PUT", f"/v1/session/renew/{sid}")
    # Consul 1.8.7: an explicit empty legacy "Checks" empties NodeChecks, shown as [].
    assert status == 200 and renewed[0]["ID"] == sid and renewed[0]["NodeChecks"] == []
    assert renewed[0]["LockDelay"] == 5_000_000_000 and renewed[0]["TTL"] == "10s"
    agent.json("PUT", f"/v1/session/destroy/{sid}")
    status, _, text = agent.request("PUT", f"/v1/session/renew/{sid}")
    assert (status, text.decode()) == (404, f"Session id '{sid}' not found")
    cases = [({"TTL": "5s"}, "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"),
             ({"TTL": "25h"}, ("Invalid Session TTL '90000000000000', must be between "
                               "[10s=24h0m0s]")),
             ({"Behavior": "keep"}, "Invalid Behavior setting 'keep'"),
             ({"Checks": ["nope"]}, "Missing check 'nope' registration"),
             ({"Node": "ghost"}, "Missing node registration")]
    for body, text in cases:
        status, _, answer = agent.request("PUT", "/v1/session/create", json.dumps(body))
        assert (status, answer.decode()) == (500, text)
    assert agent.request("PUT", "/v1/session/create", "[1]")[0] == 400
    assert agent.request("PUT", "/v1/session/destroy/")[0] == 400
    assert agent.request("GET", "/v1/session/create")[0] == 405


def test_http_acquire_release_and_locked_entry(agent):
    _, _, body = agent.json("PUT", "/v1/session/create", {"Name": "holder"})
    sid = body["ID"]
    _, _, other = agent.json("PUT", "/v1/session/create", {})
    assert agent.json("PUT", f"/v1/kv/locks/leader?acquire={sid}", "me")[2] is True
    status, _, entry = agent.json("GET", "/v1/kv/locks/leader")
    assert list(entry[0]) == ["LockIndex", "Key", "Flags", "Value", "Session", "CreateIndex",
                              "ModifyIndex"]
    assert (entry[0]["LockIndex"], entry[0]["Session"], entry[0]["Value"]) == (1, sid, "bWU=")
    assert agent.json("PUT", f"/v1/kv/locks/leader?acquire={other['ID']}", "x")[2] is False
    assert agent.json("PUT", f"/v1/kv/locks/leader?release={other['ID']}", "x")[2] is False
    status, _, text = agent.request("PUT", "/v1/kv/locks/leader?acquire=nope", "x")
    assert (status, text.decode()) == (500, 'invalid session "nope"')
    assert agent.json("PUT", f"/v1/kv/locks/leader?release={sid}&flags=3", "me")[2] is True
    _, _, entry = agent.json("GET", "/v1/kv/locks/leader")
    assert "Session" not in entry[0] and (entry[0]["LockIndex"], entry[0]["Flags"]) == (1, 3)
    for s in (sid, other["ID"]):
        agent.json("PUT", f"/v1/session/destroy/{s}")


def test_http_destroy_releases_and_blocking_list_wakes(agent):
    _, headers, _ = agent.json("GET", "/v1/session/list")
    index = int(headers["X-Consul-Index"])
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(
        agent.json("GET", f"/v1/session/list?index={index}&wait=10s")))
    waiter.start()
    _, _, body = agent.json("PUT", "/v1/session/create", {"Name": "gone", "Behavior": "delete"})
    waiter.join(10)
    assert answers and int(answers[0][1]["X-Consul-Index"]) > index
    assert body["ID"] in {s["ID"] for s in answers[0][2]}
    assert agent.json("PUT", f"/v1/kv/eph/key?acquire={body['ID']}", "v")[2] is True
    agent.json("PUT", f"/v1/session/destroy/{body['ID']}")
    assert agent.request("GET", "/v1/kv/eph/key")[0] == 404


def test_pyconsul_sessions_and_acquire(c):
    sid = c.session.create(name="pc", ttl=20, lock_delay=0, behavior="release")
    _, info = c.session.info(sid)
    assert info["Name"] == "pc" and info["TTL"] == "20s" and info["LockDelay"] == 0
    assert sid in [s["ID"] for s in c.session.list()[1]]
    assert sid in [s["ID"] for s in c.session.node("oracle")[1]]
    assert c.session.renew(sid)["ID"] == sid
    assert c.kv.put("pc/lock", "held", acquire=sid) is True
    assert c.kv.get("pc/lock")[1]["Session"] == sid
    other = c.session.create()
    assert c.kv.put("pc/lock", "mine", acquire=other) is False
    assert c.kv.put("pc/lock", "free", release=sid) is True
    assert c.kv.put("pc/lock", "mine", acquire=other) is True
    assert c.session.destroy(sid) is True and c.session.destroy(other) is True
    assert c.session.info(sid)[1] is None
    assert c.kv.get("pc/lock")[1].get("Session") is None
