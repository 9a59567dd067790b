"""Consul's user events: the wire form inside Serf, filters, the ring, /v1/event and the CLI.

Pure tests drive `agent.events` with a `task.Clock`; the rest run real `waypost agent -dev`
processes joined in one pool, and (skipped with the reason shown when there is no binary)
a real Consul 1.8.7 in the same pool, events fired both ways.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import msgpack
import pytest
from twisted.internet import task

from agent.errors import InvalidRequest
from agent.events import (
    BUFFER_SIZE, EVENT_PREFIX, Event, UserEvents, decode_event, encode_event, event_index,
    passes_filters, validate)
from agent.gossip.serf.errors import SerfError
from agent.gossip.serf.events import UserEvent as SerfUserEvent
from tests.agentproc import ROOT, AgentProcess
from tests.polling import eventually
from tests.consulproc import NO_CONSUL, ConsulProcess, consul_binary

ID = "8582fca6-2c1b-641b-834d-3d8d78dabbae"


# --- the wire form ---------------------------------------------------------------------------


def test_encoding_is_go_msgpack_with_sorted_codec_names_and_empty_fields_left_out():
    raw = encode_event(Event(id=ID, name="deploy", payload=b"hi", node_filter="web.*"))
    # fixmap of 5; keys byte-sorted; strings as old-spec raw (0xda raw16 for the 36-byte ID,
    # never str8 0xd9 nor bin); "sf" and "tf" are empty, so absent (omitempty).
    assert raw[0] == 0x85
    assert raw[1:4] == b"\xa2ID" and raw[4] == 0xda
    decoded = msgpack.unpackb(raw, raw=True)
    assert list(decoded) == [b"ID", b"n", b"nf", b"p", b"v"]
    assert decoded == {b"ID": ID.encode(), b"n": b"deploy", b"nf": b"web.*", b"p": b"hi",
                       b"v": 1}


def test_decoding_is_as_lenient_as_go_about_keys_and_strict_about_types():
    raw = msgpack.packb({"n": "x", "zz": [1, 2], "v": 1}, use_bin_type=False)
    assert decode_event(raw, 7) == Event(id="", name="x", ltime=7)
    with pytest.raises(ValueError):
        decode_event(msgpack.packb({"n": 5}), 1)
    with pytest.raises(ValueError):
        decode_event(b"\xc1", 1)
    with pytest.raises(ValueError):
        decode_event(b"", 1)


def test_index_is_consuls_uuid_to_uint64_and_never_fails():
    # The value a real Consul 1.8.7 sent in X-Consul-Index for an event with this ID.
    assert event_index(ID) == 490823276256419765
    assert event_index("not-a-uuid") == event_index("not-a-uuid") > 0


def test_validation_matches_consuls_rules():
    validate(Event(id="", name="a", service_filter="web", tag_filter="v1"))
    for bad, words in ((Event(id="", name=""), "missing name"),
                       (Event(id="", name="a", tag_filter="v1"), "tag filter without"),
                       (Event(id="", name="a", node_filter="("), "Invalid node filter")):
        with pytest.raises(InvalidRequest, match=words):
            validate(bad)


def test_filters_search_node_name_and_local_service_ids_and_tags():
    services = {"web-1": SimpleNamespace(tags=["v1", "blue"]), "db": SimpleNamespace(tags=[])}
    e = lambda **kw: Event(id=ID, name="n", **kw)  # noqa: E731
    assert passes_filters(e(), "node-a", services)
    assert passes_filters(e(node_filter="de-a"), "node-a", services)  # unanchored, as Go
    assert not passes_filters(e(node_filter="^a"), "node-a", services)
    assert passes_filters(e(service_filter="^web"), "x", services)
    assert passes_filters(e(service_filter="web", tag_filter="blu"), "x", services)
    assert not passes_filters(e(service_filter="web", tag_filter="green"), "x", services)
    assert not passes_filters(e(service_filter="cache"), "x", services)
    assert not passes_filters(e(node_filter="("), "x", services)  # a bad filter drops it


# --- the agent's events, on a fake clock -------------------------------------------------------


def _events(clock, sent=None, rexec=None, services=None):
    ids = iter(f"{n:08x}-0000-0000-0000-{n:012x}" for n in range(1, 10_000))
    send = (lambda name, payload: sent.append((name, payload))) if sent is not None else None
    return UserEvents(clock, "node-a", send=send,
                      services=lambda: services or {},
                      remote_exec=(rexec.append if rexec is not None else lambda e: None),
                      new_id=lambda: next(ids))


def _serf(event: Event, ltime: int = 1, name: str | None = None) -> SerfUserEvent:
    return SerfUserEvent(ltime, name or EVENT_PREFIX + event.name, encode_event(event), False)


def test_fire_sends_the_prefixed_serf_event_and_answers_with_ltime_zero():
    sent: list = []
    events = _events(task.Clock(), sent=sent)
    fired = events.fire("deploy", b"v2", node="web")
    assert (fired.ltime, fired.version, fired.node_filter) == (0, 1, "web")
    [(name, payload)] = sent
    assert name == "consul:event:deploy" and decode_event(payload, 0).id == fired.id


def test_fire_refuses_bad_filters_and_oversized_payloads_as_the_callers_fault():
    def too_big(name, payload):
        raise SerfError("user event exceeds limit of 512 bytes before encoding")
    events = UserEvents(task.Clock(), "n", send=too_big, services=dict)
    with pytest.raises(InvalidRequest, match="512 bytes"):
        events.fire("x", b"y" * 600)
    with pytest.raises(InvalidRequest, match="without service filter"):
        events.fire("x", tag="v1")


def test_received_events_are_filtered_listed_and_rexec_goes_elsewhere():
    rexec: list = []
    events = _events(task.Clock(), rexec=rexec)
    events.receive(_serf(Event(id=ID, name="deploy"), 3))
    events.receive(_serf(Event(id=ID, name="other", node_filter="^zzz")))  # not for us
    events.receive(_serf(Event(id=ID, name="_rexec")))
    events.receive(SerfUserEvent(1, "not-consul", b"\x80", False))  # another Serf user
    events.receive(SerfUserEvent(1, EVENT_PREFIX + "junk", b"\xc1", False))  # logged, dropped
    index, listed = events.list()
    assert [(e.name, e.ltime) for e in listed] == [("deploy", 3)]
    assert index == event_index(ID)
    assert [e.name for e in rexec] == ["_rexec"]
    assert events.list("nope") == (1, [])


def test_the_ring_keeps_the_last_256():
    events = _events(task.Clock())
    for n in range(BUFFER_SIZE + 10):
        events.receive(_serf(Event(id=f"{n:08x}-0000-0000-0000-000000000000", name=f"e{n}"), n))
    _, listed = events.list()
    assert len(listed) == BUFFER_SIZE and listed[0].name == "e10" and listed[-1].name == "e265"


def test_blocking_list_wakes_on_a_new_event_of_its_name_only():
    clock = task.Clock()
    events = _events(clock)
    events.receive(_serf(Event(id=ID, name="deploy")))
    index, _ = events.list("deploy")
    d = events.wait_list("deploy", index, 60.0)
    got: list = []
    d.addCallback(got.append)
    other = "11111111-0000-0000-0000-000000000000"
    events.receive(_serf(Event(id=other, name="unrelated")))
    assert not got  # another name leaves this list's index alone
    newer = "22222222-0000-0000-0000-000000000000"
    events.receive(_serf(Event(id=newer, name="deploy")))
    [(new_index, listed)] = got
    assert new_index == event_index(newer) and [e.id for e in listed] == [ID, newer]
    assert not clock.getDelayedCalls()


def test_blocking_list_times_out_caps_its_wait_and_can_be_cancelled():
    clock = task.Clock()
    events = _events(clock)
    got: list = []
    events.wait_list("", 1, 5.0).addCallback(got.append)  # no events: index 1 blocks
    clock.advance(4.9)
    assert not got
    clock.advance(0.2)
    assert got == [(1, [])]
    events.wait_list("", 1, 0).addErrback(lambda f: None)  # default wait: the 600 s cap
    assert [c.getTime() for c in clock.getDelayedCalls()] == [pytest.approx(605.1)]
    cancelled = events.wait_list("", 1, 10_000)
    cancelled.addErrback(lambda f: got.append(f.type.__name__))
    cancelled.cancel()
    assert got[-1] == "CancelledError"
    clock.advance(1000)
    assert not clock.getDelayedCalls()
    assert events.wait_list("", 0, 5).result == (1, [])  # no index: at once


# --- real agents -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    a = AgentProcess(node="ev-a").start()
    b = AgentProcess("-join", f"127.0.0.1:{a.serf_lan}", node="ev-b").start()
    try:
        eventually("b sees a", lambda: {m["Name"] for m in b.json("GET", "/v1/agent/members")[2]}
                   >= {"ev-a", "ev-b"})
        yield a, b
    finally:
        b.stop()
        a.stop()


def listed(agent, name=""):
    query = f"?name={name}" if name else ""
    status, headers, body = agent.request("GET", "/v1/event/list" + query)
    assert status == 200
    return int(headers["X-Consul-Index"]), json.loads(body)


def test_an_event_fired_on_one_agent_is_listed_on_both(pair):
    a, b = pair
    status, headers, body = a.request("PUT", "/v1/event/fire/deploy", b"v1.2")
    assert status == 200 and "X-Consul-Index" not in headers
    fired = json.loads(body)
    assert (fired["Name"], fired["Payload"], fired["LTime"], fired["Version"]) == \
        ("deploy", "djEuMg==", 0, 1)
    for agent in (a, b):
        index, events = eventually(agent.node, lambda: (lambda r: r if r[1] else None)(
            listed(agent, "deploy")))
        assert [e["ID"] for e in events] == [fired["ID"]] and events[0]["LTime"] > 0
        assert index == event_index(fired["ID"])


def test_filters_choose_the_agents_that_take_an_event(pair):
    a, b = pair
    status, _, _ = b.request("PUT", "/v1/agent/service/register",
                             json.dumps({"Name": "web", "Tags": ["blue"]}))
    assert status == 200
    for query in ("node=^ev-b$", "service=web&tag=blu"):
        status, _, body = a.request("PUT", f"/v1/event/fire/only-b?{query}")
        assert status == 200
        wanted = json.loads(body)["ID"]
        eventually("b takes it", lambda: wanted in [e["ID"] for e in listed(b, "only-b")[1]])
    # A marker fired after both, for everyone: once a has it, a has dropped the filtered ones.
    marker = json.loads(a.request("PUT", "/v1/event/fire/only-b-marker")[2])["ID"]
    eventually("a takes the marker",
               lambda: marker in [e["ID"] for e in listed(a, "only-b-marker")[1]])
    assert listed(a, "only-b") == (1, [])


def test_a_blocking_list_wakes_on_a_new_event(pair):
    a, _ = pair
    a.request("PUT", "/v1/event/fire/tick", b"1")
    index, before = eventually("first tick", lambda: (lambda r: r if r[1] else None)(
        listed(a, "tick")))
    answer: list = []
    waiter = threading.Thread(target=lambda: answer.append(
        a.request("GET", f"/v1/event/list?name=tick&index={index}&wait=60s", timeout=90)))
    waiter.start()
    # The waiter may not have reached the agent yet; either way it must end with the new event.
    second = json.loads(a.request("PUT", "/v1/event/fire/tick", b"2")[2])["ID"]
    waiter.join(75)
    [(status, headers, body)] = answer
    events = json.loads(body)
    assert status == 200 and events[-1]["ID"] == second
    assert int(headers["X-Consul-Index"]) == event_index(second) != index


def test_bad_requests_get_clear_4xx(pair):
    a, _ = pair
    for path, words in (("/v1/event/fire/", b"Missing name"),
                        ("/v1/event/fire/x?tag=v1", b"without service filter"),
                        ("/v1/event/fire/x?node=(", b"Invalid node filter"),
                        ("/v1/event/list?index=abc", b"Invalid index"),
                        ("/v1/event/list?wait=soon", b"Invalid wait time")):
        method = "GET" if "list" in path else "PUT"
        status, _, body = a.request(method, path)
        assert status == 400 and words in body, (path, status, body)
    status, _, body = a.request("PUT", "/v1/event/fire/big", b"x" * 600)
    assert status == 400 and b"512 bytes" in body
    assert a.request("GET", "/v1/event/fire/x")[0] == 405
    assert a.request("PUT", "/v1/event/list")[0] == 405


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_the_event_command_fires_and_prints_the_id(pair):
    a, b = pair
    done = _cli("event", "-http-addr", a.base, "-name", "cli-ev", "-node", "ev-", "payload")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Event ID: ")
    event_id = done.stdout.split()[-1]
    eventually("b lists it", lambda: [(e["ID"], e["Payload"]) for e in listed(b, "cli-ev")[1]]
               == [(event_id, "cGF5bG9hZA==")])
    for args, words in ((["-name", "x", "-tag", "v"], "without service filter"),
                        ([], "Event name must be specified"),
                        (["-name", "x", "a", "b"], "Too many command line arguments")):
        failed = _cli("event", "-http-addr", a.base, *args)
        assert failed.returncode == 1 and words in failed.stderr


# --- interop with a real Consul 1.8.7 ----------------------------------------------------------


@pytest.mark.skipif(consul_binary() is None, reason=NO_CONSUL)
def test_events_cross_between_consul_and_waypost_both_ways():
    consul = ConsulProcess(node="ev-consul").start()
    try:
        wp = AgentProcess("-join", f"127.0.0.1:{consul.serf_lan}", node="ev-wp").start()
        try:
            eventually("joined", lambda: consul.members().get("ev-wp") == 1)
            # Consul fires, with a payload and a node filter naming us: Waypost decodes it.
            sent = consul.put("/v1/event/fire/from-consul?node=ev-", b"\x00\xffbin")
            got = eventually("waypost lists it", lambda: listed(wp, "from-consul")[1])
            assert [(e["ID"], e["Payload"], e["NodeFilter"], e["Version"]) for e in got] == \
                [(sent["ID"], "AP9iaW4=", "ev-", 1)]
            assert listed(wp, "from-consul")[0] == event_index(sent["ID"])
            # Waypost fires: Consul decodes every field and takes the same index from the ID.
            fired = json.loads(wp.request("PUT", "/v1/event/fire/from-wp?node=consul",
                                          b"hello")[2])
            theirs = eventually("consul lists it", lambda: [
                e for e in consul.get("/v1/event/list?name=from-wp")])
            assert [(e["ID"], e["Payload"], e["NodeFilter"], e["Version"]) for e in theirs] \
                == [(fired["ID"], "aGVsbG8=", "consul", 1)]
            # The node filter "consul" does not match "ev-wp": Waypost itself dropped it.
            assert listed(wp, "from-wp") == (1, [])
        finally:
            wp.stop()
    finally:
        consul.stop()


# --- watches of type event ---------------------------------------------------------------------


def test_an_event_watch_plans_the_event_list():
    from gateway.watch.plan import make_plan
    plan = make_plan({"type": "event", "name": "deploy"})
    assert plan.target(7) == ("/v1/event/list", b"name=deploy&index=7")
    assert make_plan({"type": "event"}).target() == ("/v1/event/list", b"")


def test_a_configured_event_watch_runs_its_handler_with_the_events(tmp_path):
    out = tmp_path / "seen.json"
    config = tmp_path / "watch.json"
    config.write_text(json.dumps({"watches": [{
        "type": "event", "name": "deploy",
        "args": [sys.executable, "-c",
                 f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read())"]}]}))
    agent = AgentProcess("-config-file", str(config), node="ev-watch").start()
    try:
        fired = json.loads(agent.request("PUT", "/v1/event/fire/deploy", b"go")[2])["ID"]
        eventually("the handler saw it", lambda: out.exists() and fired in out.read_text())
    finally:
        agent.stop()
