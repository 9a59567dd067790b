"""The server RPC's wire codec: every query and command, and their answers, survive the trip
through msgpack with Consul's field names; bad bodies are clear errors."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest

from agent import structs as s
from agent.errors import InvalidRequest
from agent.fsm.commands import (Deregister, KVOperation, Register, SessionCreate, SessionDestroy,
                                SessionTxn, SessionTxnResult, Txn)
from agent.rpc import queries as q
from agent.rpc import wire
from agent.rpc.options import CONSISTENT, STALE, QueryMeta, QueryOptions
from agent.rpc.requests import SessionRenew


def trip(obj):
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


NODE = s.Node("n1", "10.0.0.1", node_id="00000000-0000-0000-0000-000000000001",
              datacenter="dc1", tagged_addresses={"lan": "10.0.0.1"}, meta={"rack": "a"},
              create_index=3, modify_index=4)
SERVICE = s.Service(node="n1", id="web1", name="web", tags=("a", "b"), address="10.0.0.9",
                    port=80, meta={"v": "1"},
                    tagged_addresses={"lan": s.ServiceAddress("10.0.0.9", 80)},
                    weights=s.Weights(3, 1), enable_tag_override=True, create_index=5,
                    modify_index=6)
CHECK = s.Check(node="n1", check_id="service:web1", name="web check", status="passing",
                notes="n", output="ok", service_id="web1", service_name="web",
                service_tags=("a",), type="http",
                definition=s.CheckDefinition(interval=10.0, timeout=1.5, http="http://x/",
                                             header={"X": ("1", "2")}, method="GET",
                                             deregister_critical_service_after=60.0),
                create_index=7, modify_index=8)
ENTRY = s.KVEntry("k/1", b"\x00\xffvalue", flags=42, lock_index=1, session="sess",
                  create_index=9, modify_index=10)
SESSION = s.Session("sess", name="lock", node="n1", checks=("serfHealth",), lock_delay=15.0,
                    behavior="delete", ttl=30.0, create_index=11, modify_index=12,
                    service_checks=(s.ServiceCheck("service:web1"),), legacy_checks=("c",))
CSN = q.CheckServiceNode(NODE, SERVICE, (CHECK,))

# (query, a sample of its answer)
READS = [
    (q.KVGet("k/1"), ENTRY),
    (q.KVGet("missing"), None),
    (q.KVList("k/"), [ENTRY]),
    (q.KVKeys("k/", "/"), ["k/1", "k/2/"]),
    (q.KVTombstones("k/"), [("k/gone", 5)]),
    (q.CatalogDatacenters(), ["dc1"]),
    (q.CatalogNodes(node_meta=(("rack", "a"),)), [NODE]),
    (q.CatalogServices(), {"web": ["a", "b"], "consul": []}),
    # Consul's flattened ServiceNode carries the service's RaftIndex only.
    (q.CatalogServiceNodes("web", ("a",), (("rack", "a"),)),
     [q.ServiceNode(replace(NODE, create_index=0, modify_index=0), SERVICE)]),
    (q.CatalogNodeServices("n1"), q.NodeServices(NODE, {"web1": SERVICE})),
    (q.CatalogNodeServices("nope"), None),
    (q.HealthNodeChecks("n1"), [CHECK]),
    (q.HealthServiceChecks("web", (("rack", "a"),)), [CHECK]),
    (q.HealthServiceNodes("web", ("a", "b")), [CSN]),
    (q.HealthChecksInState("critical"), [CHECK]),
    (q.ServiceDump(), [CSN]),
    (q.SessionGet("sess"), [SESSION]),
    (q.SessionList(), [SESSION, s.Session("plain", checks=None, ttl=0.0)]),
    (q.SessionNode("n1"), [SESSION]),
    (q.SessionExpiries(("sess",)), {"sess": 12.5}),
]


def test_every_store_query_has_an_endpoint():
    covered = {type(query) for query, _ in READS}
    assert set(q.STORE_QUERIES) | {q.CatalogDatacenters, q.SessionExpiries} <= covered


@pytest.mark.parametrize("query,value", READS, ids=lambda x: type(x).__name__)
def test_read_round_trip(query, value):
    options = QueryOptions(datacenter="dc1", token="t", consistency=STALE, max_stale=5.0,
                           min_index=7, wait=30.0, filter="Node == n1")
    endpoint, args = wire.encode_read(query, options)
    assert endpoint == query.ENDPOINT
    decoded, got_options = wire.decode_read(endpoint, trip(args))
    assert decoded == query and got_options == options
    meta = QueryMeta(index=99, known_leader=True, last_contact=0.25, consistency="stale")
    body = trip(wire.encode_read_result(endpoint, value, meta))
    got, got_meta = wire.decode_read_result(query, body)
    assert got == value and got_meta == meta


def test_consul_field_names_of_a_health_query_and_a_kv_write():
    _, args = wire.encode_read(q.HealthServiceNodes("web", ("a",)),
                               QueryOptions(consistency=CONSISTENT, min_index=3, wait=2.0))
    assert args["ServiceName"] == "web" and args["ServiceTags"] == ["a"] and args["TagFilter"]
    assert args["RequireConsistent"] and not args["AllowStale"]
    assert args["MinQueryIndex"] == 3 and args["MaxQueryTime"] == 2_000_000_000
    endpoint, args = wire.encode_write(KVOperation("cas", ENTRY, expected_index=10), "dc1", "")
    assert endpoint == "KVS.Apply" and args["Op"] == "cas"
    assert set(args["DirEnt"]) == {"LockIndex", "Key", "Flags", "Value", "Session",
                                   "CreateIndex", "ModifyIndex"}
    assert wire.encode_write(SessionCreate(SESSION), "dc1", "")[1]["Session"]["TTL"] == "30s"


def test_passing_is_filtered_by_the_caller_as_consuls_http_handler_does():
    critical = q.CheckServiceNode(NODE, SERVICE, (s.Check("n1", "c", "c", status="critical"),))
    query = q.HealthServiceNodes("web", passing=True)
    endpoint, args = wire.encode_read(query, QueryOptions())
    body = trip(wire.encode_read_result(endpoint, [CSN, critical], QueryMeta(index=1)))
    assert wire.decode_read_result(query, body)[0] == [CSN]


OUTCOME = s.TxnOutcome(results=(ENTRY,))
WRITES = [
    (Register(replace(NODE, create_index=0, modify_index=0), SERVICE, (CHECK,),
              skip_node_update=True), True),
    (Register(s.Node("n2", "10.0.0.2", datacenter="dc1")), True),
    (Deregister("n1", service_id="web1"), True),
    (KVOperation("set", ENTRY), True),
    (KVOperation("cas", ENTRY, expected_index=10), False),
    (Txn((KVOperation("get", s.KVEntry("k")), KVOperation("delete", s.KVEntry("j")))), OUTCOME),
    (Txn((KVOperation("cas", ENTRY, 3),)), s.TxnOutcome(errors=(s.TxnError(0, "bad"),))),
    (SessionCreate(SESSION), "sess"),
    (SessionDestroy("sess"), True),
    (SessionRenew("sess"), SESSION),
    (SessionRenew("gone"), None),
    (SessionTxn((KVOperation("lock", s.KVEntry("k", b"v")),), create=SESSION, destroy=("old",)),
     SessionTxnResult("sess", OUTCOME)),
]


@pytest.mark.parametrize("command,value", WRITES, ids=lambda x: type(x).__name__)
def test_write_round_trip(command, value):
    endpoint, args = wire.encode_write(command, "dc1", "tok")
    got, dc, token = wire.decode_write(endpoint, trip(args))
    assert got == command and dc == "dc1" and token == "tok"
    index, got_value = wire.decode_write_result(
        command, trip(wire.encode_write_result(command, 17, value)))
    assert index == 17 and got_value == value


@pytest.mark.parametrize("endpoint,args", [
    ("KVS.Get", ["not", "a", "map"]),
    ("KVS.Get", {"Key": 5}),
    ("Health.ServiceNodes", {"ServiceName": "web", "ServiceTags": "a"}),
    ("Catalog.ListNodes", {"MinQueryIndex": "x"}),
])
def test_bad_read_args_are_invalid_requests(endpoint, args):
    with pytest.raises(InvalidRequest):
        wire.decode_read(endpoint, args)


@pytest.mark.parametrize("endpoint,args", [
    ("Session.Apply", {"Op": "explode"}),
    ("KVS.Apply", {"Op": "set", "DirEnt": None}),
    ("Catalog.Register", {"Node": "n", "Checks": {"x": 1}}),
    ("Txn.Apply", {"Ops": [{"KV": "x"}]}),
])
def test_bad_write_args_are_invalid_requests(endpoint, args):
    with pytest.raises(InvalidRequest):
        wire.decode_write(endpoint, args)


def test_queries_without_an_endpoint_are_refused():
    with pytest.raises(InvalidRequest):
        wire.encode_read(q.AgentServices(), QueryOptions())
