"""The HTTP API against Consul 1.8.7's recorded answers (shared/reference/consul-1.8.7, files
01-68, 79, 80): status codes, the X-Consul-* headers, Content-Type, error texts and the exact key
order of every object a client decodes.

One real `waypost agent -dev -node oracle` serves the whole module, so every test registers its
own services, checks and KV prefixes and asserts only on what it made.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from agent.gossip.serf.consul_tags import consul_agent_tags

# A copy of the recordings in shared/reference that these tests use.
REF = Path(__file__).resolve().parent / "data" / "consul-1.8.7"

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
INDEX_HEADERS = ("X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact")

pytestmark = pytest.mark.skipif(not REF.is_dir(), reason="Consul reference recordings not found")


# --- reference recordings ---------------------------------------------------------------------

def ref(number: int):
    """(status, lower-cased headers, body text) of reference file NN_*.txt."""
    path = next(REF.glob(f"{number:02d}_*.txt"))
    response = path.read_bytes().decode("utf-8", "replace").partition("### RESPONSE:\n")[2]
    head, _, body = response.partition("\r\n\r\n")
    body = body[:-1] if body.endswith("\n") else body  # record.sh echoes a newline after each
    lines = head.split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return int(lines[0].split()[1]), headers, body


def ref_json(number: int):
    return json.loads(ref(number)[2])


def keys(obj) -> list[str]:
    return list(obj)


# --- helpers ----------------------------------------------------------------------------------

def index_of(headers) -> int:
    return int(headers["X-Consul-Index"])


def assert_index_headers(headers, consistency: str | None = "leader") -> None:
    for name in INDEX_HEADERS:
        assert headers.get(name) is not None, name
    assert index_of(headers) > 0
    assert headers["X-Consul-KnownLeader"] == "true"
    assert headers["X-Consul-LastContact"] == "0"
    assert headers.get("X-Consul-Effective-Consistency") == consistency


def assert_no_index_headers(headers) -> None:
    for name in INDEX_HEADERS + ("X-Consul-Effective-Consistency",):
        assert headers.get(name) is None, name


def assert_empty_ok(status, headers, body) -> None:
    """An agent write: 200, no body, no Content-Type, no index (reference 09, 29, 37)."""
    assert (status, body) == (200, b"")
    assert headers.get("Content-Type") is None
    assert headers["Vary"] == "Accept-Encoding"
    assert_no_index_headers(headers)


def assert_text_error(answer, status: int, text: str) -> None:
    got_status, headers, body = answer
    assert got_status == status
    assert headers["Content-Type"] == TEXT
    assert body.decode() == text


def register_service(agent, definition: dict) -> None:
    assert_empty_ok(*agent.request("PUT", "/v1/agent/service/register", json.dumps(definition)))


def put_kv(agent, key: str, value: bytes | str, query: str = ""):
    status, headers, body = agent.request("PUT", f"/v1/kv/{key}{query}", value)
    assert headers["Content-Type"] == JSON
    assert_no_index_headers(headers)
    return status, json.loads(body)


def later(delay: float, fn, *args) -> threading.Thread:
    def run():
        time.sleep(delay)
        fn(*args)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# --- status, datacenters, nodes, members, self (01-08) ----------------------------------------

@pytest.mark.parametrize("number,path", [(1, "/v1/status/leader"), (2, "/v1/status/peers"),
                                         (3, "/v1/catalog/datacenters")])
def test_static_answers_match_consul(agent, number, path):
    ref_status, ref_headers, ref_body = ref(number)
    status, headers, body = agent.request("GET", path)
    assert status == ref_status == 200
    assert headers["Content-Type"] == ref_headers["content-type"] == JSON
    # dev mode: 4-space indent and a trailing newline; the server port is the test's own.
    assert body.decode() == ref_body.replace(":8300", f":{agent.server_port}")
    assert_no_index_headers(headers)


@pytest.mark.parametrize("query,consistency", [("", "leader"), ("?stale", "stale"),
                                               ("?consistent", "consistent")])
def test_catalog_nodes_headers_and_shape(agent, query, consistency):
    ref_node = ref_json(4)[0]
    status, headers, nodes = agent.json("GET", "/v1/catalog/nodes" + query)
    assert status == 200 and headers["Content-Type"] == JSON
    assert_index_headers(headers, consistency)
    oracle = next(n for n in nodes if n["Node"] == "oracle")
    assert keys(oracle) == keys(ref_node)
    assert oracle["TaggedAddresses"] == ref_node["TaggedAddresses"]
    assert oracle["Meta"] == ref_node["Meta"]


def test_agent_members(agent):
    ref_member = ref_json(7)[0]
    status, headers, members = agent.json("GET", "/v1/agent/members")
    assert status == 200
    assert_no_index_headers(headers)
    assert keys(members[0]) == keys(ref_member)
    # A Waypost server hides behind Consul's client tags (a Consul server must never take
    # it for a Raft peer) and names itself with its own: see agent/gossip/serf/consul_tags.py.
    client_keys = set(consul_agent_tags(node_id="", datacenter="dc1", server=False))
    assert keys(members[0]["Tags"]) == sorted(client_keys | {"wp", "wp_port"})
    assert members[0]["Tags"]["role"] == "node" and members[0]["Tags"]["wp"] == "server"
    assert members[0]["Name"] == "oracle" and members[0]["Status"] == 1


def test_agent_self(agent):
    want = ref_json(8)
    status, headers, got = agent.json("GET", "/v1/agent/self")
    assert status == 200 and headers["Content-Type"] == JSON
    assert_no_index_headers(headers)
    # Consul sends "xDS" only while its gRPC server runs; we have none. Nothing of ours is
    # added: clients compare the key set (py-consul's test_agent_self does).
    assert list(got) == [k for k in want if k != "xDS"]
    assert got["Config"] == {**want["Config"], "NodeID": got["Config"]["NodeID"]}
    assert keys(got["DebugConfig"]) == keys(want["DebugConfig"])
    assert keys(got["DebugConfig"]["Logging"]) == keys(want["DebugConfig"]["Logging"])
    assert got["DebugConfig"]["NodeName"] == "oracle" and got["DebugConfig"]["DevMode"] is True
    assert got["DebugConfig"]["HTTPPort"] == agent.port
    assert keys(got["Member"]) == keys(want["Member"])
    assert keys(got["Stats"]) == keys(want["Stats"])
    for section, values in want["Stats"].items():
        assert keys(got["Stats"][section]) == keys(values), section
    assert got["Coord"] == want["Coord"] and got["Meta"] == want["Meta"]


# --- agent services and checks (09-17, 29-32, 35-39) -------------------------------------------

def test_agent_service_register_and_read(agent):
    register_service(agent, {"ID": "shape1", "Name": "shape", "Tags": ["primary", "v1"],
                             "Address": "127.0.0.1", "Port": 8080, "Meta": {"version": "1.0"},
                             "Check": {"TTL": "30s"}})
    register_service(agent, {"Name": "shapeless", "Port": 5432, "Tags": ["pg"]})
    status, headers, services = agent.json("GET", "/v1/agent/services")
    assert status == 200 and headers["Content-Type"] == JSON
    assert_no_index_headers(headers)
    want = ref_json(14)
    assert keys(services["shape1"]) == keys(want["web1"])
    assert services["shape1"]["TaggedAddresses"] == want["web1"]["TaggedAddresses"]
    assert services["shapeless"] == {**want["db"], "ID": "shapeless", "Service": "shapeless"}

    status, headers, one = agent.json("GET", "/v1/agent/service/shape1")
    assert status == 200
    assert keys(one) == keys(ref_json(15))
    assert headers["X-Consul-ContentHash"] == one["ContentHash"]
    assert_no_index_headers(headers)


def test_agent_service_missing(agent):
    assert_text_error(agent.request("GET", "/v1/agent/service/nope"), *_ref_error(16))


def _ref_error(number: int):
    status, headers, body = ref(number)
    assert headers["content-type"] == TEXT
    return status, body


def test_agent_service_register_without_name(agent):
    answer = agent.request("PUT", "/v1/agent/service/register", '{"Port":1}')
    assert_text_error(answer, *_ref_error(13))


def test_agent_service_register_bad_json_is_400(agent):
    status, headers, body = agent.request("PUT", "/v1/agent/service/register", '{"Name":')
    assert status == 400 and headers["Content-Type"] == TEXT
    assert body.startswith(b"Request decode failed: ")


def test_agent_service_register_bad_json_text(agent):
    answer = agent.request("PUT", "/v1/agent/service/register", '{"Name":')
    assert_text_error(answer, *_ref_error(12))


def test_agent_service_register_wrong_method(agent):
    status, headers, body = agent.request("GET", "/v1/agent/service/register")
    ref_status, ref_headers, ref_body = ref(39)
    assert (status, body.decode()) == (ref_status, ref_body)
    assert headers["Allow"] == ref_headers["allow"] == "OPTIONS,PUT"
    assert headers["Content-Type"] == TEXT


def test_agent_checks_shape(agent):
    register_service(agent, {"ID": "chk1", "Name": "chk", "Port": 1, "Tags": ["a"],
                             "Check": {"TTL": "30s"}})
    status, headers, checks = agent.json("GET", "/v1/agent/checks")
    assert status == 200
    assert_no_index_headers(headers)
    want = ref_json(17)["service:web1"]
    got = checks["service:chk1"]
    assert keys(got) == keys(want)
    assert got == {**want, "Name": "Service 'chk' check", "CheckID": "service:chk1",
                   "ServiceID": "chk1", "ServiceName": "chk", "ServiceTags": ["a"]}


def test_agent_check_ttl_updates(agent):
    register_service(agent, {"ID": "ttl1", "Name": "ttl", "Port": 1,
                             "Checks": [{"CheckID": "ttl1-c", "Name": "ttl1 c", "TTL": "60s"}]})

    def check():
        return agent.json("GET", "/v1/agent/checks")[2]["ttl1-c"]

    assert_empty_ok(*agent.request("PUT", "/v1/agent/check/pass/ttl1-c?note=all%20good"))
    assert (check()["Status"], check()["Output"]) == ("passing", "all good")
    assert_empty_ok(*agent.request("PUT", "/v1/agent/check/warn/ttl1-c?note=meh"))
    assert (check()["Status"], check()["Output"]) == ("warning", "meh")
    assert_empty_ok(*agent.request("PUT", "/v1/agent/check/fail/ttl1-c?note=down"))
    assert (check()["Status"], check()["Output"]) == ("critical", "down")
    body = '{"Status":"passing","Output":"fine now"}'
    assert_empty_ok(*agent.request("PUT", "/v1/agent/check/update/ttl1-c", body))
    assert (check()["Status"], check()["Output"]) == ("passing", "fine now")
    # Go's decoder ignores unknown fields and matches names case-insensitively.
    body = '{"status":"warning","output":"lower","Extra":1}'
    assert_empty_ok(*agent.request("PUT", "/v1/agent/check/update/ttl1-c", body))
    assert (check()["Status"], check()["Output"]) == ("warning", "lower")

    answer = agent.request("PUT", "/v1/agent/check/update/ttl1-c", '{"Status":"bogus"}')
    assert_text_error(answer, 400, "Invalid check status: 'bogus'")
    assert_text_error(agent.request("PUT", "/v1/agent/check/pass/nope"), *_ref_error(32))


def test_agent_check_register_and_deregister(agent):
    body = {"ID": "solo-ttl", "Name": "solo", "TTL": "30s", "Notes": "standalone"}
    assert_empty_ok(*agent.request("PUT", "/v1/agent/check/register", json.dumps(body)))
    got = agent.json("GET", "/v1/agent/checks")[2]["solo-ttl"]
    assert keys(got) == keys(ref_json(17)["web2-ttl"])
    assert (got["Name"], got["Notes"], got["ServiceID"], got["Type"]) == \
        ("solo", "standalone", "", "ttl")
    status, headers, node_checks = agent.json("GET", "/v1/health/node/oracle")
    assert "solo-ttl" in [c["CheckID"] for c in node_checks]

    assert_empty_ok(*agent.request("PUT", "/v1/agent/check/deregister/solo-ttl"))
    assert "solo-ttl" not in agent.json("GET", "/v1/agent/checks")[2]
    node_checks = agent.json("GET", "/v1/health/node/oracle")[2]
    assert "solo-ttl" not in [c["CheckID"] for c in node_checks]
    # Consul 1.8 ignores a missing check here.
    assert_empty_ok(*agent.request("PUT", "/v1/agent/check/deregister/solo-ttl"))


def test_agent_service_deregister(agent):
    register_service(agent, {"Name": "gone", "Port": 1})
    assert_empty_ok(*agent.request("PUT", "/v1/agent/service/deregister/gone"))
    assert "gone" not in agent.json("GET", "/v1/agent/services")[2]
    assert agent.json("GET", "/v1/catalog/service/gone")[2] == []
    assert_empty_ok(*agent.request("PUT", "/v1/agent/service/deregister/gone"))  # reference 38


def test_agent_health_service_by_id(agent):
    register_service(agent, {"ID": "ah1", "Name": "ah", "Port": 1, "Address": "127.0.0.1",
                             "Check": {"TTL": "30s"}})
    path = "/v1/agent/health/service/id/ah1"
    agent.request("PUT", "/v1/agent/check/pass/service:ah1?note=ok")
    status, headers, got = agent.json("GET", path)
    want = ref_json(36)
    assert (status, headers["X-Consul-Reason"]) == (200, "passing")
    assert keys(got) == keys(want) and keys(got["Service"]) == keys(want["Service"])
    assert keys(got["Checks"][0]) == keys(want["Checks"][0])
    assert got["Checks"][0]["Definition"] == want["Checks"][0]["Definition"]
    assert_no_index_headers(headers)
    for verb, code, status_text in (("warn", 429, "warning"), ("fail", 503, "critical")):
        agent.request("PUT", f"/v1/agent/check/{verb}/service:ah1")
        status, headers, got = agent.json("GET", path)
        assert (status, headers["X-Consul-Reason"], got["AggregatedStatus"]) == \
            (code, status_text, status_text)
    status, headers, body = agent.request("GET", path + "?format=text")
    assert (status, body, headers["Content-Type"]) == (503, b"critical", "text/plain")
    status, headers, got = agent.json("GET", "/v1/agent/health/service/id/nope")
    assert status == 404 and headers["X-Consul-Reason"] == "ServiceId nope not found"
    assert got == {"AggregatedStatus": "critical", "Service": None, "Checks": None}


def test_agent_health_service_by_name(agent):
    for sid in ("ahn1", "ahn2"):
        register_service(agent, {"ID": sid, "Name": "ahn", "Port": 1, "Check": {"TTL": "30s"}})
        agent.request("PUT", f"/v1/agent/check/pass/service:{sid}")
    status, headers, got = agent.json("GET", "/v1/agent/health/service/name/ahn")
    assert (status, headers["X-Consul-Reason"]) == (200, "passing")
    assert keys(got[0]) == keys(ref_json(35)[0])
    assert [e["Service"]["ID"] for e in got] == ["ahn1", "ahn2"]
    agent.request("PUT", "/v1/agent/check/warn/service:ahn2")
    status, headers, got = agent.json("GET", "/v1/agent/health/service/name/ahn")
    assert (status, headers["X-Consul-Reason"]) == (429, "warning")  # the worst instance wins
    status, headers, got = agent.json("GET", "/v1/agent/health/service/name/nope")
    assert (status, got, headers["X-Consul-Reason"]) == (404, [], "ServiceName nope Not Found")


# --- catalog (18-22, 40-42) ------------------------------------------------------------------

def test_catalog_services(agent):
    register_service(agent, {"ID": "cs1", "Name": "cs", "Port": 1, "Tags": ["primary", "v1"]})
    register_service(agent, {"ID": "cs2", "Name": "cs", "Port": 2, "Tags": ["secondary", "v1"]})
    status, headers, services = agent.json("GET", "/v1/catalog/services")
    assert status == 200 and headers["Content-Type"] == JSON
    assert_index_headers(headers)
    assert services["consul"] == ref_json(18)["consul"] == []
    assert services["cs"] == ["primary", "v1", "secondary"]  # tags unique, in first-seen order


def test_catalog_service_shape_and_tags(agent):
    register_service(agent, {"ID": "ct1", "Name": "ct", "Tags": ["primary", "v1"],
                             "Address": "127.0.0.1", "Port": 8080, "Meta": {"version": "1.0"}})
    register_service(agent, {"ID": "ct2", "Name": "ct", "Tags": ["secondary", "v1"],
                             "Port": 8081})
    status, headers, rows = agent.json("GET", "/v1/catalog/service/ct")
    assert status == 200
    assert_index_headers(headers)
    want = ref_json(19)
    by_id = {r["ServiceID"]: r for r in rows}
    assert keys(by_id["ct1"]) == keys(next(r for r in want if r["ServiceID"] == "web1"))
    assert keys(by_id["ct2"]) == keys(next(r for r in want if r["ServiceID"] == "web2"))

    def ids(query):
        rows = agent.json("GET", "/v1/catalog/service/ct" + query)[2]
        return sorted(r["ServiceID"] for r in rows)

    assert ids("?tag=primary") == ["ct1"]
    assert ids("?tag=v1") == ["ct1", "ct2"]
    assert ids("?tag=primary&tag=v1") == ["ct1"]  # every tag must match
    assert ids("?tag=primary&tag=secondary") == []


def test_catalog_service_missing(agent):
    status, headers, body = agent.request("GET", "/v1/catalog/service/nope")
    assert (status, body.decode()) == (200, ref(21)[2])
    assert_index_headers(headers)


def test_catalog_node(agent):
    register_service(agent, {"ID": "cn1", "Name": "cn", "Port": 1, "Address": "127.0.0.1"})
    status, headers, got = agent.json("GET", "/v1/catalog/node/oracle")
    assert status == 200
    assert_index_headers(headers)
    want = ref_json(22)
    assert keys(got) == keys(want) and keys(got["Node"]) == keys(want["Node"])
    assert keys(got["Services"]["consul"]) == keys(want["Services"]["consul"])
    assert keys(got["Services"]["cn1"]) == keys(want["Services"]["web1"])
    assert got["Services"]["consul"]["Meta"] == want["Services"]["consul"]["Meta"]


def test_catalog_register_external_node(agent):
    body = {"Node": "ext9", "Address": "10.9.9.9",
            "Service": {"Service": "redis9", "Port": 6379, "Tags": ["cache"]},
            "Check": {"CheckID": "redis9-alive", "Name": "redis alive", "Status": "passing",
                      "ServiceID": "redis9"}}
    status, headers, got = agent.json("PUT", "/v1/catalog/register", body)
    assert (status, got, headers["Content-Type"]) == (200, True, JSON)  # reference 40
    assert_no_index_headers(headers)
    status, headers, rows = agent.json("GET", "/v1/catalog/service/redis9")
    want = ref_json(41)[0]
    assert keys(rows[0]) == keys(want)
    volatile = ("ServiceID", "ServiceName", "Node", "CreateIndex", "ModifyIndex")
    assert {k: v for k, v in rows[0].items() if k not in volatile} == \
        {k: v for k, v in want.items() if k not in volatile}
    assert (rows[0]["Node"], rows[0]["ServiceID"]) == ("ext9", "redis9")
    checks = agent.json("GET", "/v1/health/checks/redis9")[2]
    assert [(c["CheckID"], c["Status"], c["ServiceName"]) for c in checks] == \
        [("redis9-alive", "passing", "redis9")]

    status, headers, got = agent.json("PUT", "/v1/catalog/deregister", {"Node": "ext9"})
    assert (status, got) == (200, True)  # reference 42
    assert agent.json("GET", "/v1/catalog/service/redis9")[2] == []
    assert "ext9" not in [n["Node"] for n in agent.json("GET", "/v1/catalog/nodes")[2]]


def test_node_meta_filters(agent):
    body = {"Node": "meta1", "Address": "10.1.1.1", "NodeMeta": {"rack": "r1", "env": "prod"},
            "Service": {"ID": "mf1", "Service": "mf", "Port": 1, "Tags": ["m"]}}
    assert agent.json("PUT", "/v1/catalog/register", body)[2] is True
    body = {"Node": "meta2", "Address": "10.1.1.2", "NodeMeta": {"rack": "r2", "env": "prod"},
            "Service": {"ID": "mf2", "Service": "mf", "Port": 2, "Tags": ["n"]}}
    assert agent.json("PUT", "/v1/catalog/register", body)[2] is True

    def nodes(query):
        status, headers, got = agent.json("GET", "/v1/catalog/nodes" + query)
        assert_index_headers(headers)
        return sorted(n["Node"] for n in got)

    assert nodes("?node-meta=rack:r1") == ["meta1"]
    assert nodes("?node-meta=env:prod") == ["meta1", "meta2"]
    assert nodes("?node-meta=env:prod&node-meta=rack:r2") == ["meta2"]  # all must match
    assert nodes("?node-meta=rack:r3") == []

    services = agent.json("GET", "/v1/catalog/services?node-meta=rack:r1")[2]
    assert services == {"mf": ["m"]}
    rows = agent.json("GET", "/v1/catalog/service/mf?node-meta=rack:r2")[2]
    assert [(r["Node"], r["NodeMeta"]) for r in rows] == [("meta2", {"rack": "r2", "env": "prod"})]
    assert keys(rows[0]["NodeMeta"]) == ["env", "rack"]  # Go writes map keys sorted
    rows = agent.json("GET", "/v1/health/service/mf?node-meta=rack:r1")[2]
    assert [r["Node"]["Node"] for r in rows] == ["meta1"]


# --- health (23-28, 33, 34, 67) ----------------------------------------------------------------

def test_health_service_shape_passing_and_tags(agent):
    register_service(agent, {"ID": "hs1", "Name": "hs", "Tags": ["primary", "v1"],
                             "Address": "127.0.0.1", "Port": 8080, "Check": {"TTL": "30s"}})
    register_service(agent, {"ID": "hs2", "Name": "hs", "Tags": ["secondary", "v1"], "Port": 8081,
                             "Checks": [{"CheckID": "hs2-ttl", "Name": "hs2", "TTL": "60s"}]})
    status, headers, entries = agent.json("GET", "/v1/health/service/hs")
    assert status == 200 and headers["Content-Type"] == JSON
    assert_index_headers(headers)
    want = ref_json(23)
    by_id = {e["Service"]["ID"]: e for e in entries}
    assert keys(by_id["hs1"]) == keys(want[0]) == ["Node", "Service", "Checks"]
    assert keys(by_id["hs1"]["Node"]) == keys(want[0]["Node"])
    want_web1 = next(e for e in want if e["Service"]["ID"] == "web1")
    want_web2 = next(e for e in want if e["Service"]["ID"] == "web2")
    assert keys(by_id["hs1"]["Service"]) == keys(want_web1["Service"])
    assert keys(by_id["hs2"]["Service"]) == keys(want_web2["Service"])
    for got_check, want_check in zip(by_id["hs1"]["Checks"], want_web1["Checks"]):
        assert keys(got_check) == keys(want_check)
        assert got_check["Definition"] == want_check["Definition"]
    assert [c["CheckID"] for c in by_id["hs1"]["Checks"]] == ["serfHealth", "service:hs1"]

    def ids(query):
        entries = agent.json("GET", "/v1/health/service/hs" + query)[2]
        return sorted(e["Service"]["ID"] for e in entries)

    assert ids("?passing") == []  # TTL checks start critical (reference 24)
    agent.request("PUT", "/v1/agent/check/pass/service:hs1")
    assert ids("?passing") == ["hs1"]
    assert ids("?passing=false") == ["hs1", "hs2"]
    assert ids("?tag=v1") == ["hs1", "hs2"]
    assert ids("?tag=v1&tag=secondary") == ["hs2"]  # every tag must match
    assert ids("?tag=v1&tag=secondary&passing") == []
    assert_text_error(agent.request("GET", "/v1/health/service/hs?passing=maybe"), 400,
                      "Invalid value for ?passing")


def test_health_checks_and_node(agent):
    register_service(agent, {"ID": "hc1", "Name": "hc", "Port": 1,
                             "Checks": [{"CheckID": "hc1-ttl", "Name": "hc ttl", "TTL": "60s",
                                         "Notes": "second"}]})
    status, headers, checks = agent.json("GET", "/v1/health/checks/hc")
    assert status == 200
    assert_index_headers(headers)
    want = ref_json(25)[1]
    assert keys(checks[0]) == keys(want)
    assert {k: v for k, v in checks[0].items() if k not in ("CreateIndex", "ModifyIndex")} == {
        **{k: v for k, v in want.items() if k not in ("CreateIndex", "ModifyIndex")},
        "CheckID": "hc1-ttl", "Name": "hc ttl", "ServiceID": "hc1", "ServiceName": "hc",
        "ServiceTags": []}

    status, headers, checks = agent.json("GET", "/v1/health/node/oracle")
    assert status == 200
    assert_index_headers(headers)
    serf = ref_json(26)[0]
    got_serf = next(c for c in checks if c["CheckID"] == "serfHealth")
    assert keys(got_serf) == keys(serf)
    assert {k: v for k, v in got_serf.items() if k not in ("CreateIndex", "ModifyIndex")} == \
        {k: v for k, v in serf.items() if k not in ("CreateIndex", "ModifyIndex")}


@pytest.mark.parametrize("state", ["any", "passing", "warning", "critical", "bogus"])
def test_health_state(agent, state):
    register_service(agent, {"ID": f"st-{state}", "Name": "st", "Port": 1,
                             "Check": {"TTL": "30s"}})
    verb = {"passing": "pass", "warning": "warn"}.get(state, "fail")
    agent.request("PUT", f"/v1/agent/check/{verb}/service:st-{state}")
    status, headers, checks = agent.json("GET", f"/v1/health/state/{state}")
    assert status == 200 and headers["Content-Type"] == JSON
    assert_index_headers(headers)
    if state == "bogus":  # Consul does not validate the state: nothing matches
        assert checks == []
        return
    assert f"service:st-{state}" in [c["CheckID"] for c in checks]
    assert keys(checks[0]) == keys(ref_json(28)[0])
    if state != "any":
        assert {c["Status"] for c in checks} == {state}
    else:
        assert "serfHealth" in [c["CheckID"] for c in checks]


def test_health_state_missing(agent):
    assert_text_error(agent.request("GET", "/v1/health/state/"), 400, "Missing check state")


@pytest.mark.parametrize("path,text", [("/v1/catalog/service/", "Missing service name"),
                                       ("/v1/catalog/node/", "Missing node name"),
                                       ("/v1/health/service/", "Missing service name"),
                                       ("/v1/health/checks/", "Missing service name"),
                                       ("/v1/health/node/", "Missing node name")])
def test_missing_names(agent, path, text):
    assert_text_error(agent.request("GET", path), 400, text)


# --- KV (43-64) --------------------------------------------------------------------------------

def test_kv_put_get_and_shape(agent):
    assert put_kv(agent, "t1/config/db", "postgres://localhost:5432/app") == (200, True)
    assert put_kv(agent, "t1/config/port", "8080", "?flags=42") == (200, True)
    status, headers, entries = agent.json("GET", "/v1/kv/t1/config/db")
    assert status == 200 and headers["Content-Type"] == JSON
    assert_index_headers(headers, consistency=None)  # KV sends no Effective-Consistency
    want = ref_json(48)[0]
    assert keys(entries[0]) == keys(want)
    assert {k: v for k, v in entries[0].items() if k not in ("CreateIndex", "ModifyIndex",
                                                             "Key")} == \
        {k: v for k, v in want.items() if k not in ("CreateIndex", "ModifyIndex", "Key")}
    assert entries[0]["CreateIndex"] == entries[0]["ModifyIndex"] == index_of(headers)
    assert agent.json("GET", "/v1/kv/t1/config/port")[2][0]["Flags"] == 42


def test_kv_raw(agent):
    put_kv(agent, "t2/db", "postgres://localhost:5432/app")
    status, headers, body = agent.request("GET", "/v1/kv/t2/db?raw")
    ref_status, ref_headers, ref_body = ref(49)
    assert (status, body.decode()) == (ref_status, ref_body)
    for name in ("content-type", "content-security-policy", "x-content-type-options"):
        assert headers[name] == ref_headers[name]
    assert_index_headers(headers, consistency=None)


def test_kv_missing_is_bare_404_with_index(agent):
    for path in ("/v1/kv/t3/nope", "/v1/kv/t3-zzz?recurse", "/v1/kv/t3-zzz/?keys"):
        status, headers, body = agent.request("GET", path)
        assert (status, body) == (404, b"")
        assert headers.get("Content-Type") is None
        assert_index_headers(headers, consistency=None)  # references 50, 56


def test_kv_recurse_and_keys(agent):
    for key, value in (("t4/config/db", "a"), ("t4/config/port", "b"), ("t4/other/x", "c"),
                       ("t4/emptyfolder/", ""), ("t4ple", "fruit")):
        put_kv(agent, key, value)

    def get(path):
        status, headers, got = agent.json("GET", path)
        assert status == 200
        assert_index_headers(headers, consistency=None)
        return got

    assert [e["Key"] for e in get("/v1/kv/t4?recurse")] == [
        "t4/config/db", "t4/config/port", "t4/emptyfolder/", "t4/other/x", "t4ple"]
    slash = get("/v1/kv/t4/?recurse")
    assert [e["Key"] for e in slash] == [
        "t4/config/db", "t4/config/port", "t4/emptyfolder/", "t4/other/x"]
    assert slash[2]["Value"] is None  # an empty value is null, as in reference 51
    assert get("/v1/kv/t4/?keys") == [
        "t4/config/db", "t4/config/port", "t4/emptyfolder/", "t4/other/x"]
    assert get("/v1/kv/t4/?keys&separator=/") == ["t4/config/", "t4/emptyfolder/", "t4/other/"]
    root = get("/v1/kv/?keys&separator=/")
    assert "t4/" in root and "t4ple" in root


def test_kv_cas(agent):
    put_kv(agent, "t5/db", "v1")
    modify = agent.json("GET", "/v1/kv/t5/db")[2][0]["ModifyIndex"]
    assert put_kv(agent, "t5/db", "no", "?cas=1") == (200, False)  # reference 57
    assert put_kv(agent, "t5/db", "v2", f"?cas={modify}") == (200, True)  # reference 58
    assert put_kv(agent, "t5/db", "no", "?cas=0") == (200, False)  # reference 59
    assert put_kv(agent, "t5/new", "v", "?cas=0") == (200, True)
    entry = agent.json("GET", "/v1/kv/t5/db")[2][0]
    assert entry["Value"] == "djI=" and entry["ModifyIndex"] > modify


def test_kv_bad_flags_is_go_parse_error(agent):
    answer = agent.request("PUT", "/v1/kv/t5b?flags=abc", "v")
    assert_text_error(answer, 500, 'strconv.ParseUint: parsing "abc": invalid syntax')
    answer = agent.request("PUT", "/v1/kv/t5b?cas=-1", "v")
    assert_text_error(answer, 500, 'strconv.ParseUint: parsing "-1": invalid syntax')


def test_kv_delete(agent):
    put_kv(agent, "t6/one", "1")
    for _ in range(2):  # deleting a missing key is still true (references 61, 62)
        status, headers, got = agent.json("DELETE", "/v1/kv/t6/one")
        assert (status, got, headers["Content-Type"]) == (200, True, JSON)
    assert agent.request("GET", "/v1/kv/t6/one")[0] == 404

    put_kv(agent, "t6/cas", "1")
    modify = agent.json("GET", "/v1/kv/t6/cas")[2][0]["ModifyIndex"]
    assert agent.json("DELETE", "/v1/kv/t6/cas?cas=1")[2] is False
    assert agent.json("DELETE", f"/v1/kv/t6/cas?cas={modify}")[2] is True
    assert agent.request("GET", "/v1/kv/t6/cas")[0] == 404

    for key in ("t6/tree/a", "t6/tree/b/c", "t6/treeless"):
        put_kv(agent, key, "x")
    assert agent.json("DELETE", "/v1/kv/t6/tree/?recurse")[2] is True
    assert agent.json("GET", "/v1/kv/t6/?keys")[2] == ["t6/treeless"]


def test_kv_binary_round_trip(agent):
    value = bytes(range(256)) + b"\x01\x02hello"
    assert put_kv(agent, "t7/bin/blob", value) == (200, True)  # reference 63
    entry = agent.json("GET", "/v1/kv/t7/bin/blob")[2][0]
    assert keys(entry) == keys(ref_json(64)[0])
    assert base64.b64decode(entry["Value"]) == value
    assert agent.request("GET", "/v1/kv/t7/bin/blob?raw")[2] == value


def test_kv_value_too_large(agent):
    limit = ref_json(8)["DebugConfig"]["KVMaxValueSize"]
    status, headers, body = agent.request("PUT", "/v1/kv/t7/big", b"x" * (limit + 1))
    assert (status, headers["Content-Type"], headers["Vary"]) == (413, TEXT, "Accept-Encoding")
    assert body.startswith(f"Request body({limit + 1} bytes) too large, max size: {limit} "
                           "bytes.".encode())
    assert agent.request("GET", "/v1/kv/t7/big")[0] == 404


def test_kv_missing_key_name(agent):
    assert_text_error(agent.request("GET", "/v1/kv/"), 400, "Missing key name")
    assert_text_error(agent.request("PUT", "/v1/kv/", "v"), 400, "Missing key name")


def test_index_moves_on_write(agent):
    put_kv(agent, "t8/k", "1")
    first = index_of(agent.request("GET", "/v1/kv/t8/k")[1])
    put_kv(agent, "t8/k", "2")
    second = index_of(agent.request("GET", "/v1/kv/t8/k")[1])
    assert second > first
    nodes_index = index_of(agent.request("GET", "/v1/catalog/nodes")[1])
    agent.json("PUT", "/v1/catalog/register", {"Node": "idx1", "Address": "10.8.8.8"})
    assert index_of(agent.request("GET", "/v1/catalog/nodes")[1]) > nodes_index


# --- blocking queries (65-68) ------------------------------------------------------------------

def test_blocking_kv_woken_by_write(agent):
    put_kv(agent, "t9/k", "before")
    index = index_of(agent.request("GET", "/v1/kv/t9/k")[1])
    start = time.monotonic()
    writer = later(0.3, put_kv, agent, "t9/k", "after")
    status, headers, entries = agent.json("GET", f"/v1/kv/t9/k?index={index}&wait=10s")
    writer.join()
    assert status == 200 and time.monotonic() - start < 5
    assert index_of(headers) > index
    assert entries[0]["Value"] == "YWZ0ZXI="
    assert_index_headers(headers, consistency=None)


def test_blocking_kv_times_out_with_same_index(agent):
    put_kv(agent, "t10/k", "v")
    index = index_of(agent.request("GET", "/v1/kv/t10/k")[1])
    start = time.monotonic()
    status, headers, _ = agent.json("GET", f"/v1/kv/t10/k?index={index}&wait=1s")
    elapsed = time.monotonic() - start
    assert status == 200 and index_of(headers) == index
    assert 0.9 < elapsed < 1.5  # the wait plus at most wait/16 of jitter


def test_blocking_health_woken_by_check_change(agent):
    register_service(agent, {"ID": "bh1", "Name": "bh", "Port": 1, "Check": {"TTL": "30s"}})
    agent.request("PUT", "/v1/agent/check/pass/service:bh1")
    index = index_of(agent.request("GET", "/v1/health/service/bh")[1])
    writer = later(0.3, agent.request, "PUT", "/v1/agent/check/fail/service:bh1?note=down")
    status, headers, entries = agent.json("GET", f"/v1/health/service/bh?index={index}&wait=10s")
    writer.join()
    assert status == 200 and index_of(headers) > index
    assert_index_headers(headers)
    check = next(c for c in entries[0]["Checks"] if c["CheckID"] == "service:bh1")
    assert (check["Status"], check["Output"]) == ("critical", "down")


def test_blocking_kv_recurse_woken_by_new_key(agent):
    put_kv(agent, "t11/a", "1")
    index = index_of(agent.request("GET", "/v1/kv/t11?recurse")[1])
    writer = later(0.3, put_kv, agent, "t11/new/key", "nv")
    status, headers, entries = agent.json("GET", f"/v1/kv/t11?recurse&index={index}&wait=10s")
    writer.join()
    assert status == 200 and index_of(headers) > index
    assert [e["Key"] for e in entries] == ["t11/a", "t11/new/key"]


# --- errors and protocol edges (79, 80) --------------------------------------------------------

def test_unknown_endpoint_is_bare_404(agent):
    status, headers, body = agent.request("GET", "/v1/does/not/exist")
    assert (status, body) == (ref(79)[0], b"")
    assert headers.get("Content-Type") is None
    assert headers.get("Vary") is None


def test_bad_index(agent):
    answer = agent.request("GET", "/v1/catalog/nodes?index=abc")
    assert_text_error(answer, *_ref_error(80))
    assert answer[1]["Vary"] == "Accept-Encoding"


@pytest.mark.parametrize("query,text", [
    ("?wait=xyz", "Invalid wait time"),
    ("?index=1&wait=xyz", "Invalid wait time"),
    ("?stale&consistent", "Cannot specify ?stale with ?consistent, conflicting semantics."),
])
def test_bad_query_parameters(agent, query, text):
    assert_text_error(agent.request("GET", "/v1/catalog/nodes" + query), 400, text)


@pytest.mark.parametrize("path", ["/v1/catalog/nodes", "/v1/kv/anything", "/v1/health/state/any"])
def test_unknown_datacenter(agent, path):
    assert_text_error(agent.request("GET", path + "?dc=dc2"), 500, "No path to datacenter")


def test_agent_endpoints_ignore_datacenter(agent):
    assert agent.request("GET", "/v1/agent/self?dc=dc2")[0] == 200


def test_wrong_method_on_read_endpoint(agent):
    status, headers, body = agent.request("PUT", "/v1/catalog/nodes", "")
    assert (status, body) == (405, b"method PUT not allowed")
    assert headers["Content-Type"] == TEXT and headers["Vary"] == "Accept-Encoding"
    assert "GET" in headers["Allow"].split(",") and "OPTIONS" in headers["Allow"].split(",")


def test_allow_header_order(agent):
    assert agent.request("PUT", "/v1/catalog/nodes", "")[1]["Allow"] == "OPTIONS,GET"
    assert agent.request("POST", "/v1/kv/x", "")[1]["Allow"] == "OPTIONS,GET,PUT,DELETE"


def test_head_answers_like_get_without_body(agent):
    get_status, get_headers, _ = agent.request("GET", "/v1/catalog/nodes")
    status, headers, body = agent.request("HEAD", "/v1/catalog/nodes")
    assert (status, body) == (get_status, b"")
    assert headers["X-Consul-Index"] == get_headers["X-Consul-Index"]
    assert headers["Content-Type"] == JSON


def test_dev_mode_pretty_prints(agent):
    body = agent.request("GET", "/v1/catalog/datacenters")[2]
    assert body == b'[\n    "dc1"\n]\n'
    assert agent.request("GET", "/v1/catalog/datacenters?pretty")[2] == body


def test_key_with_escaped_characters(agent):
    key = "t12/with space/and%percent"
    assert put_kv(agent, quote(key), "v") == (200, True)
    assert agent.json("GET", "/v1/kv/" + quote(key))[2][0]["Key"] == key


def test_waypost_self_names_the_loaded_plugins(agent):
    status, _, got = agent.json("GET", "/v1/waypost/self")
    assert status == 200 and got["ConsulVersion"] == "1.8.7"
    assert {"http", "dns"} <= set(got["Plugins"]) and got["Version"]


def test_catalog_node_services_lists_the_services(agent):
    """/v1/catalog/node-services/<node> (Consul 1.7+): the node, and its services as a list
    sorted by ID; an unknown node is 200 with nulls, a missing name 400."""
    for name in ("ns-b", "ns-a"):
        assert agent.request("PUT", "/v1/agent/service/register",
                             json.dumps({"Name": name}))[0] == 200
    status, headers, got = agent.json("GET", "/v1/catalog/node-services/oracle")
    assert status == 200 and int(headers["X-Consul-Index"]) >= 2
    assert got["Node"]["Node"] == "oracle"
    ids = [s["ID"] for s in got["Services"]]
    assert ids == sorted(ids) and {"ns-a", "ns-b", "consul"} <= set(ids)
    assert set(got["Services"][0]) >= {"ID", "Service", "Tags", "Proxy", "Connect", "CreateIndex"}
    status, _, got = agent.json("GET", '/v1/catalog/node-services/oracle?filter=Service%20==%20"ns-a"')
    assert status == 200 and [s["ID"] for s in got["Services"]] == ["ns-a"]
    assert agent.json("GET", "/v1/catalog/node-services/nope")[2] == {"Node": None,
                                                                       "Services": None}
    assert agent.request("GET", "/v1/catalog/node-services/")[:3:2] == (400, b"Missing node name")


def test_cached_reads_carry_consuls_cache_headers(agent):
    """?cached on the reads Consul 1.8.7 caches: X-Cache MISS, then HIT with Age."""
    for path in ("/v1/catalog/services", "/v1/catalog/service/consul",
                 "/v1/health/service/consul", "/v1/catalog/datacenters"):
        status, headers, _ = agent.request("GET", path + "?cached")
        assert status == 200 and headers["X-Cache"] == "MISS" and "Age" not in headers
        status, headers, _ = agent.request("GET", path + "?cached")
        assert status == 200 and headers["X-Cache"] == "HIT" and headers["Age"].isdigit()
    status, headers, _ = agent.request("GET", "/v1/catalog/nodes?cached")
    assert status == 200 and "X-Cache" not in headers  # not a cached read in Consul 1.8.7
    status, _, body = agent.request("GET", "/v1/catalog/service/consul?cached&consistent")
    assert (status, body) == (400, b"Cannot specify ?cached with ?consistent, "
                                   b"conflicting semantics.")
