"""The real py-consul client (1.8) against a real `waypost agent -dev`: every call unchanged.

Each test uses its own key prefix, service name or node name, so the tests share one agent
(module scope) without depending on their order.
"""

from __future__ import annotations

import threading
import time

import consul
import pytest


@pytest.fixture(scope="module")
def c(agent):
    return consul.Consul(host="127.0.0.1", port=agent.port)


# --- KV ---------------------------------------------------------------------------------------


def test_kv_put_get_roundtrip(c):
    assert c.kv.put("pc/rt/a", "hello") is True
    index, entry = c.kv.get("pc/rt/a")
    assert entry["Key"] == "pc/rt/a"
    assert entry["Value"] == b"hello"
    assert entry["Flags"] == 0
    # py-consul hands the X-Consul-Index header back as a string.
    assert isinstance(index, str)
    assert entry["CreateIndex"] <= entry["ModifyIndex"] <= int(index)


def test_kv_get_missing_is_none(c):
    index, entry = c.kv.get("pc/missing/nothing-here")
    assert entry is None
    assert int(index) > 0


def test_kv_put_bytes_and_empty_value(c):
    assert c.kv.put("pc/bytes/bin", b"\x00\xff\x10") is True
    assert c.kv.get("pc/bytes/bin")[1]["Value"] == b"\x00\xff\x10"
    assert c.kv.put("pc/bytes/empty", "") is True
    assert c.kv.get("pc/bytes/empty")[1]["Value"] is None


def test_kv_flags(c):
    assert c.kv.put("pc/flags/k", "v", flags=42) is True
    assert c.kv.get("pc/flags/k")[1]["Flags"] == 42
    # A later write without flags resets them, as Consul does.
    assert c.kv.put("pc/flags/k", "v2") is True
    assert c.kv.get("pc/flags/k")[1]["Flags"] == 0


def test_kv_recurse_and_keys(c):
    for key in ("pc/tree/a", "pc/tree/b/1", "pc/tree/b/2", "pc/tree/c/x/y"):
        assert c.kv.put(key, key.upper()) is True
    _, entries = c.kv.get("pc/tree/", recurse=True)
    assert [e["Key"] for e in entries] == ["pc/tree/a", "pc/tree/b/1", "pc/tree/b/2", "pc/tree/c/x/y"]
    assert [e["Value"] for e in entries] == [b"PC/TREE/A", b"PC/TREE/B/1", b"PC/TREE/B/2", b"PC/TREE/C/X/Y"]
    _, keys = c.kv.get("pc/tree/", keys=True)
    assert keys == ["pc/tree/a", "pc/tree/b/1", "pc/tree/b/2", "pc/tree/c/x/y"]
    _, keys = c.kv.get("pc/tree/", keys=True, separator="/")
    assert keys == ["pc/tree/a", "pc/tree/b/", "pc/tree/c/"]
    _, none = c.kv.get("pc/tree-none/", recurse=True)
    assert none is None


def test_kv_delete_and_delete_recurse(c):
    for key in ("pc/del/one", "pc/del/sub/a", "pc/del/sub/b", "pc/delx"):
        c.kv.put(key, "x")
    assert c.kv.delete("pc/del/one") is True
    assert c.kv.get("pc/del/one")[1] is None
    assert c.kv.delete("pc/del/sub/", recurse=True) is True
    assert c.kv.get("pc/del/", recurse=True)[1] is None
    # The recursive delete stopped at its prefix.
    assert c.kv.get("pc/delx")[1]["Value"] == b"x"
    # Deleting a missing key is fine.
    assert c.kv.delete("pc/del/never") is True


def test_kv_cas(c):
    # cas=0 creates only if absent.
    assert c.kv.put("pc/cas/k", "first", cas=0) is True
    assert c.kv.put("pc/cas/k", "second", cas=0) is False
    _, entry = c.kv.get("pc/cas/k")
    assert entry["Value"] == b"first"
    idx = entry["ModifyIndex"]
    assert c.kv.put("pc/cas/k", "third", cas=idx) is True
    assert c.kv.put("pc/cas/k", "stale", cas=idx) is False
    _, entry = c.kv.get("pc/cas/k")
    assert entry["Value"] == b"third"
    assert entry["ModifyIndex"] > idx
    # Delete with cas.
    assert c.kv.delete("pc/cas/k", cas=idx) is False
    assert c.kv.delete("pc/cas/k", cas=entry["ModifyIndex"]) is True
    assert c.kv.get("pc/cas/k")[1] is None


def test_kv_blocking_get_wakes_on_write(c):
    c.kv.put("pc/block/k", "v1")
    index, _ = c.kv.get("pc/block/k")
    result = {}

    def waiter():
        t0 = time.monotonic()
        result["got"] = c.kv.get("pc/block/k", index=index, wait="2s")
        result["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    c.kv.put("pc/block/k", "v2")
    thread.join(5)
    assert not thread.is_alive()
    new_index, entry = result["got"]
    assert entry["Value"] == b"v2"
    assert int(new_index) > int(index)
    assert result["elapsed"] < 1.5


def test_kv_blocking_get_times_out(c):
    c.kv.put("pc/block-to/k", "v")
    index, _ = c.kv.get("pc/block-to/k")
    t0 = time.monotonic()
    new_index, entry = c.kv.get("pc/block-to/k", index=index, wait="1s")
    elapsed = time.monotonic() - t0
    assert new_index == index
    assert entry["Value"] == b"v"
    assert 1.0 <= elapsed <= 1.0 * 17 / 16 + 0.5


def test_kv_consistency_modes(c):
    c.kv.put("pc/cons/k", "v")
    for mode in ("default", "consistent", "stale"):
        _, entry = c.kv.get("pc/cons/k", consistency=mode)
        assert entry["Value"] == b"v"


# --- catalog ----------------------------------------------------------------------------------


def test_catalog_register_and_read(c):
    assert c.catalog.register(
        "pc-node-1", "10.1.0.1",
        service={"Service": "pc-web", "ID": "pc-web-1", "Tags": ["v1", "blue"], "Port": 8080},
        check={"Node": "pc-node-1", "CheckID": "pc-web-1-chk", "Name": "web check",
               "Status": "passing", "ServiceID": "pc-web-1"},
    ) is True

    _, nodes = c.catalog.nodes()
    by_name = {n["Node"]: n for n in nodes}
    assert by_name["pc-node-1"]["Address"] == "10.1.0.1"

    _, services = c.catalog.services()
    assert sorted(services["pc-web"]) == ["blue", "v1"]

    _, instances = c.catalog.service("pc-web")
    assert len(instances) == 1
    inst = instances[0]
    assert inst["Node"] == "pc-node-1"
    assert inst["Address"] == "10.1.0.1"
    assert inst["ServiceID"] == "pc-web-1"
    assert inst["ServiceName"] == "pc-web"
    assert inst["ServicePort"] == 8080
    assert inst["ServiceTags"] == ["v1", "blue"]

    _, tagged = c.catalog.service("pc-web", tag="blue")
    assert [i["ServiceID"] for i in tagged] == ["pc-web-1"]
    _, untagged = c.catalog.service("pc-web", tag="green")
    assert untagged == []

    _, node = c.catalog.node("pc-node-1")
    assert node["Node"]["Node"] == "pc-node-1"
    assert node["Node"]["Address"] == "10.1.0.1"
    assert node["Services"]["pc-web-1"]["Service"] == "pc-web"
    assert node["Services"]["pc-web-1"]["Port"] == 8080

    _, missing = c.catalog.node("pc-node-none")
    assert missing is None


def test_catalog_deregister(c):
    c.catalog.register("pc-node-2", "10.1.0.2",
                       service={"Service": "pc-api", "ID": "pc-api-1", "Port": 9000},
                       check={"CheckID": "pc-api-chk", "Name": "api", "Status": "passing",
                              "ServiceID": "pc-api-1"})
    c.catalog.register("pc-node-2", "10.1.0.2", check={"CheckID": "pc-node-2-chk", "Name": "node",
                                                       "Status": "passing"})
    _, checks = c.health.node("pc-node-2")
    assert {ch["CheckID"] for ch in checks} == {"pc-api-chk", "pc-node-2-chk"}

    assert c.catalog.deregister("pc-node-2", check_id="pc-node-2-chk") is True
    _, checks = c.health.node("pc-node-2")
    assert [ch["CheckID"] for ch in checks] == ["pc-api-chk"]

    assert c.catalog.deregister("pc-node-2", service_id="pc-api-1") is True
    _, instances = c.catalog.service("pc-api")
    assert instances == []
    _, checks = c.health.node("pc-node-2")
    assert checks == []  # the service's check went with it

    assert c.catalog.deregister("pc-node-2") is True
    _, nodes = c.catalog.nodes()
    assert "pc-node-2" not in {n["Node"] for n in nodes}


def test_catalog_datacenters(c):
    assert c.catalog.datacenters() == ["dc1"]


# --- agent ------------------------------------------------------------------------------------


def test_agent_self_and_members(c, agent):
    me = c.agent.self()
    assert me["Config"]["NodeName"] == agent.node
    assert me["Config"]["Datacenter"] == "dc1"
    assert me["Member"]["Name"] == agent.node
    members = c.agent.members()
    assert [m["Name"] for m in members] == [agent.node]
    assert members[0]["Status"] == 1


def test_agent_service_register_and_ttl(c, agent):
    assert c.agent.service.register(
        "pc-svc", service_id="pc-svc-1", address="127.0.0.2", port=7000, tags=["a", "b"],
        check=consul.Check.ttl("10s"),
    ) is True
    services = c.agent.services()
    svc = services["pc-svc-1"]
    assert svc["Service"] == "pc-svc"
    assert svc["ID"] == "pc-svc-1"
    assert svc["Address"] == "127.0.0.2"
    assert svc["Port"] == 7000
    assert svc["Tags"] == ["a", "b"]

    checks = c.agent.checks()
    check_id = "service:pc-svc-1"
    assert checks[check_id]["Status"] == "critical"
    assert checks[check_id]["ServiceID"] == "pc-svc-1"

    # Health reflects each TTL update, and ?passing filters.
    _, rows = c.health.service("pc-svc", passing=True)
    assert rows == []
    assert c.agent.check.ttl_pass(check_id, notes="all good") is True
    assert c.agent.checks()[check_id]["Status"] == "passing"
    assert c.agent.checks()[check_id]["Output"] == "all good"
    _, rows = c.health.service("pc-svc", passing=True)
    assert [r["Service"]["ID"] for r in rows] == ["pc-svc-1"]
    assert rows[0]["Node"]["Node"] == agent.node
    assert rows[0]["Service"]["Port"] == 7000
    assert check_id in [ch["CheckID"] for ch in rows[0]["Checks"]]
    _, rows = c.health.service("pc-svc", passing=True, tag="a")
    assert len(rows) == 1
    _, rows = c.health.service("pc-svc", tag="zzz")
    assert rows == []

    assert c.agent.check.ttl_warn(check_id) is True
    assert c.agent.checks()[check_id]["Status"] == "warning"
    _, rows = c.health.service("pc-svc", passing=True)
    assert rows == []
    _, rows = c.health.service("pc-svc")
    assert len(rows) == 1

    assert c.agent.check.ttl_fail(check_id, notes="broken") is True
    assert c.agent.checks()[check_id]["Status"] == "critical"
    _, checks = c.health.checks("pc-svc")
    assert [(ch["CheckID"], ch["Status"], ch["Output"]) for ch in checks] == [
        (check_id, "critical", "broken")]
    _, critical = c.health.state("critical")
    assert check_id in {ch["CheckID"] for ch in critical}

    assert c.agent.service.deregister("pc-svc-1") is True
    assert "pc-svc-1" not in c.agent.services()
    assert check_id not in c.agent.checks()
    _, rows = c.health.service("pc-svc")
    assert rows == []


def test_agent_check_register_deregister(c):
    assert c.agent.check.register("pc-standalone", check=consul.Check.ttl("5s"),
                                  check_id="pc-standalone-id", notes="n") is True
    checks = c.agent.checks()
    assert checks["pc-standalone-id"]["Name"] == "pc-standalone"
    assert checks["pc-standalone-id"]["Notes"] == "n"
    assert checks["pc-standalone-id"]["Status"] == "critical"

    assert c.agent.check.ttl_pass("pc-standalone-id") is True
    _, passing = c.health.state("passing")
    assert "pc-standalone-id" in {ch["CheckID"] for ch in passing}
    _, any_state = c.health.state("any")
    assert "pc-standalone-id" in {ch["CheckID"] for ch in any_state}

    assert c.agent.check.deregister("pc-standalone-id") is True
    assert "pc-standalone-id" not in c.agent.checks()


def test_agent_check_for_service(c):
    c.agent.service.register("pc-svc2", service_id="pc-svc2-1", port=1)
    assert c.agent.check.register("pc-svc2-extra", check=consul.Check.ttl("5s"),
                                  check_id="pc-svc2-extra", service_id="pc-svc2-1") is True
    assert c.agent.checks()["pc-svc2-extra"]["ServiceID"] == "pc-svc2-1"
    assert c.agent.checks()["pc-svc2-extra"]["ServiceName"] == "pc-svc2"
    c.agent.service.deregister("pc-svc2-1")
    assert "pc-svc2-extra" not in c.agent.checks()


def test_ttl_on_unknown_check_raises(c):
    with pytest.raises(consul.ConsulException):
        c.agent.check.ttl_pass("pc-no-such-check")


def test_health_node(c, agent):
    _, checks = c.health.node(agent.node)
    assert all(ch["Node"] == agent.node for ch in checks)
    _, checks = c.health.node("pc-no-such-node")
    assert checks == []


def test_health_state_each_state(c):
    c.agent.check.register("pc-states", check=consul.Check.ttl("30s"), check_id="pc-states")
    c.agent.check.ttl_warn("pc-states")
    seen = {}
    for state in ("any", "passing", "warning", "critical"):
        _, checks = c.health.state(state)
        seen[state] = {ch["CheckID"] for ch in checks}
        if state != "any":
            assert all(ch["Status"] == state for ch in checks)
    assert "pc-states" in seen["warning"]
    assert "pc-states" in seen["any"]
    assert "pc-states" not in seen["passing"] | seen["critical"]
    c.agent.check.deregister("pc-states")


# --- status -----------------------------------------------------------------------------------


def test_status_leader_and_peers(c):
    leader = c.status.leader()
    assert isinstance(leader, str) and leader
    host, _, port = leader.rpartition(":")
    assert host and port.isdigit()
    assert c.status.peers() == [leader]


def test_agent_service_register_all_options(c):
    assert c.agent.service.register(
        "pc-full", service_id="pc-full-1", address="10.2.0.1", port=8443, tags=["x"],
        meta={"version": "1.2"}, weights={"Passing": 5, "Warning": 2},
        enable_tag_override=True,
        tagged_addresses={"lan": {"address": "10.2.0.1", "port": 8443}},
    ) is True
    svc = c.agent.services()["pc-full-1"]
    assert svc["Meta"] == {"version": "1.2"}
    assert svc["Weights"] == {"Passing": 5, "Warning": 2}
    assert svc["EnableTagOverride"] is True
    assert svc["TaggedAddresses"]["lan"] == {"Address": "10.2.0.1", "Port": 8443}
    _, instances = c.catalog.service("pc-full")
    assert instances[0]["ServiceMeta"] == {"version": "1.2"}
    assert instances[0]["ServiceWeights"] == {"Passing": 5, "Warning": 2}
    c.agent.service.deregister("pc-full-1")


def test_agent_service_reregister_replace_existing_checks(c):
    c.agent.service.register("pc-rr", service_id="pc-rr-1", check=consul.Check.ttl("30s"),
                             extra_checks=[{"CheckID": "pc-rr-extra", "TTL": "30s"}])
    assert {"service:pc-rr-1:1", "pc-rr-extra"} <= set(c.agent.checks())
    c.agent.service.register("pc-rr", service_id="pc-rr-1", check=consul.Check.ttl("30s"),
                             replace_existing_checks=True)
    left = {cid for cid, ch in c.agent.checks().items() if ch["ServiceID"] == "pc-rr-1"}
    assert left == {"service:pc-rr-1"}
    c.agent.service.deregister("pc-rr-1")


def test_agent_service_reregister_keeps_existing_checks(c):
    c.agent.service.register("pc-keep", service_id="pc-keep-1",
                             check={"CheckID": "pc-keep-a", "TTL": "30s"})
    c.agent.service.register("pc-keep", service_id="pc-keep-1",
                             check={"CheckID": "pc-keep-b", "TTL": "30s"})
    try:
        assert {"pc-keep-a", "pc-keep-b"} <= set(c.agent.checks())
    finally:
        c.agent.service.deregister("pc-keep-1")


def _in_thread(fn):
    result = {}

    def run():
        t0 = time.monotonic()
        result["value"] = fn()
        result["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_blocking_catalog_and_health_via_pyconsul(c):
    index, _ = c.catalog.nodes()
    thread, result = _in_thread(lambda: c.catalog.nodes(index=index, wait="5s"))
    time.sleep(0.3)
    c.catalog.register("pc-block-node", "10.3.0.1")
    thread.join(10)
    new_index, nodes = result["value"]
    assert int(new_index) > int(index)
    assert "pc-block-node" in {n["Node"] for n in nodes}
    assert result["elapsed"] < 2

    c.agent.service.register("pc-block-svc", service_id="pc-block-svc-1",
                             check=consul.Check.ttl("30s"))
    index, rows = c.health.service("pc-block-svc", passing=True)
    assert rows == []
    thread, result = _in_thread(
        lambda: c.health.service("pc-block-svc", passing=True, index=index, wait="5s"))
    time.sleep(0.3)
    c.agent.check.ttl_pass("service:pc-block-svc-1")
    thread.join(10)
    new_index, rows = result["value"]
    assert int(new_index) > int(index)
    assert [r["Service"]["ID"] for r in rows] == ["pc-block-svc-1"]
    assert result["elapsed"] < 2
    c.agent.service.deregister("pc-block-svc-1")


def test_blocking_kv_recurse_and_missing_key_via_pyconsul(c):
    index, entries = c.kv.get("pc/brec/", recurse=True)
    assert entries is None
    thread, result = _in_thread(lambda: c.kv.get("pc/brec/", recurse=True, index=index, wait="5s"))
    time.sleep(0.3)
    c.kv.put("pc/brec/new", "1")
    thread.join(10)
    new_index, entries = result["value"]
    assert int(new_index) > int(index)
    assert [e["Key"] for e in entries] == ["pc/brec/new"]
    assert result["elapsed"] < 2


def test_catalog_node_meta_filters(c):
    c.catalog.register("pc-meta-node", "10.4.0.1")
    _, nodes = c.catalog.nodes(node_meta={"pc-rack": "nowhere"})
    assert nodes == []
    _, services = c.catalog.services(node_meta={"pc-rack": "nowhere"})
    assert services == {}
