"""Request validation against a real `waypost agent -dev` (issue 9): numbers no field can hold,
non-UTF-8 etcd values, session bodies, the txn size limit and catalog deregistration.

Expected answers marked "Consul 1.8.7" were recorded from the real binary with the same
requests. Each test uses its own key, service and check names.
"""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlencode

import pytest

from agent.errors import InvalidRequest
from gateway.http.decode import json_body, parse_uint64
from gateway.http.request import Request

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HUGE = "9" * 5000  # past Python's 4,300-digit int-string limit
TXN_LIMIT = 512 * 1024
TXN_DOC = "https://www.consul.io/docs/agent/options.html#txn_max_req_len"


def text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def put(agent, path: str, body=None, headers=None):
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return agent.request("PUT", path, body, headers)


def assert_serving(agent) -> None:
    status, _, body = agent.request("GET", "/v1/status/leader", timeout=5)
    assert status == 200 and json.loads(body)


def wait_for(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --- numbers no field can hold (item 9) -------------------------------------------------------


def test_json_body_refuses_numbers_out_of_float64_range_naming_the_path():
    cases = [(b'{"Port": ' + HUGE.encode() + b"}", '"Port"'),
             (b'{"Checks": [{"TTL": 1}, {"TTL": -' + HUGE.encode() + b"}]}", '"Checks[1].TTL"'),
             (b'[{"KV": {"Flags": 1e400}}]', '"[0].KV.Flags"'),
             (b"1e999", "Go value")]
    for body, where in cases:
        with pytest.raises(InvalidRequest) as exc:
            json_body(Request(body=body))
        message = str(exc.value)
        assert message.startswith("Request decode failed: json: cannot unmarshal number ")
        assert where in message and message.endswith(": out of range")
        assert len(message) < 200  # the literal is shortened, not echoed whole
    # Big but representable numbers are left to each field's own range check.
    assert json_body(Request(body=b'{"a": 123456789012345678901234567890, "b": 1e300}')) == {
        "a": 123456789012345678901234567890, "b": 1e300}


def test_out_of_range_path_through_a_lone_surrogate_key_can_be_answered():
    # Found by the fuzz test: the path named the raw "\ud800" key, and the 400 failed to encode.
    with pytest.raises(InvalidRequest) as exc:
        json_body(Request(body=b'{"\\ud800": [1e400]}'))
    assert '"\ufffd[0]"' in str(exc.value)
    str(exc.value).encode("utf-8")


@pytest.mark.parametrize("body, char, where", [
    (b'{"LockDelay": NaN}', "N", "looking for beginning of value"),
    (b'{"LockDelay": Infinity}', "I", "looking for beginning of value"),
    (b'{"LockDelay": -Infinity}', "I", "in numeric literal"),
])
def test_json_body_refuses_nan_and_infinity_as_go_does(body, char, where):
    with pytest.raises(InvalidRequest) as exc:
        json_body(Request(body=body))
    assert str(exc.value) == f"Request decode failed: invalid character '{char}' {where}"


def test_parse_uint64_never_converts_huge_text():
    assert parse_uint64(HUGE) is None
    assert parse_uint64("0" * 5000 + "7") == 7  # Go's ParseUint takes leading zeros


@pytest.mark.parametrize("path, body, field", [
    ("/v1/agent/service/register", '{"Name": "val-huge", "Port": %s}', "Port"),
    ("/v1/agent/service/register", '{"Name": "val-huge", "Weights": {"Passing": %s}}',
     "Weights.Passing"),
    ("/v1/agent/service/register", '{"Name": "val-huge", "Check": {"TTL": %s}}', "Check.TTL"),
    ("/v1/agent/check/register", '{"Name": "val-huge", "TTL": "5s", "OutputMaxSize": %s}',
     "OutputMaxSize"),
    ("/v1/catalog/register", '{"Node": "val-n", "Address": "10.9.0.1", '
     '"Service": {"Service": "val-huge", "Port": %s}}', "Service.Port"),
    ("/v1/catalog/deregister", '{"Node": "val-n", "CheckID": %s}', "CheckID"),
    ("/v1/agent/check/update/val-huge", '{"Status": %s}', "Status"),
    ("/v1/session/create", '{"LockDelay": %s}', "LockDelay"),
    ("/v1/txn", '[{"KV": {"Verb": "set", "Key": "val-huge", "Flags": %s}}]', "[0].KV.Flags"),
])
def test_huge_integers_in_any_body_are_400_naming_the_field(agent, path, body, field):
    for number in (HUGE, "-" + HUGE, "1e400"):
        status, _, data = put(agent, path, body % number)
        assert status == 400, (path, number, data[:200])
        assert f'"{field}"' in text(data), data[:300]
    assert "val-huge" not in agent.json("GET", "/v1/agent/services")[2]
    assert agent.request("GET", "/v1/kv/val-huge")[0] == 404
    assert_serving(agent)


@pytest.mark.parametrize("body, field", [
    ({"Name": "val-range", "Weights": {"Passing": 2**63}}, "Weights"),
    ({"Name": "val-range", "Check": {"TTL": "5s", "SuccessBeforePassing": 2**63}},
     "SuccessBeforePassing"),
    ({"Name": "val-range", "Check": {"TTL": "5s", "OutputMaxSize": -(2**63) - 1}},
     "OutputMaxSize"),
    ({"Name": "val-range", "Check": {"TTL": "9" * 30 + "s"}}, "TTL"),
    ({"Name": "val-range", "Check": {"TTL": HUGE + "s"}}, "TTL"),
    ({"Name": "val-range", "Check": {"TTL": "1." + HUGE + "s", "Bogus": 1}}, "Bogus"),
])
def test_numbers_beyond_go_int_are_400_naming_the_field(agent, body, field):
    # Consul 1.8.7: "json: cannot unmarshal number 9223372036854775808 into Go struct field
    # .Port of type int"; ours names the field through the schema.
    status, _, data = put(agent, "/v1/agent/service/register", body)
    assert status == 400 and field in text(data), data[:300]
    assert "val-range" not in agent.json("GET", "/v1/agent/services")[2]


def test_huge_duration_fraction_is_read_not_refused(agent):
    status, _, data = put(agent, "/v1/agent/service/register",
                          {"Name": "val-frac", "Check": {"TTL": "1." + "5" * 5000 + "s"}})
    assert status == 200, data[:300]
    put(agent, "/v1/agent/service/deregister/val-frac")


def test_huge_query_numbers(agent):
    put(agent, "/v1/kv/val/q", "v")
    status, _, data = agent.request("GET", f"/v1/kv/val/q?index={HUGE}", timeout=5)
    assert (status, text(data)) == (400, "Invalid index")  # Consul 1.8.7
    for name in ("flags", "cas"):
        # Consul 1.8.7 answers these with strconv's error as a 500 (DOCUMENTED_500).
        status, _, data = put(agent, f"/v1/kv/val/q?{name}={HUGE}", "x")
        assert (status, text(data)) == (
            500, f'strconv.ParseUint: parsing "{HUGE}": value out of range')
    assert agent.request("GET", "/v1/kv/val/q?raw")[2] == b"v"


@pytest.mark.parametrize("method, fields, code", [
    ("PUT", {"value": "x", "ttl": HUGE}, 202),
    ("PUT", {"value": "x", "prevIndex": HUGE}, 203),
    ("DELETE", {"prevIndex": HUGE}, 203),
    ("GET", {"wait": "true", "waitIndex": HUGE}, 203),
])
def test_huge_etcd_numbers_are_etcd_errors(agent, method, fields, code):
    put(agent, "/v2/keys/val/etcd-num", "value=keep", FORM)
    query = urlencode(fields)
    if method == "PUT":
        status, _, data = agent.request("PUT", "/v2/keys/val/etcd-num", query, FORM)
    else:
        status, _, data = agent.request(method, f"/v2/keys/val/etcd-num?{query}", timeout=5)
    assert status == 400 and json.loads(data)["errorCode"] == code, data[:300]
    assert agent.request("GET", "/v1/kv/val/etcd-num?raw")[2] == b"keep"


# --- etcd values are bytes (item 1, etcd part) --------------------------------------------------


def etcd_get(agent, key: str) -> dict:
    status, _, data = agent.request("GET", "/v2/keys" + key)
    assert status == 200, data
    return json.loads(data)


def test_etcd_form_value_round_trips_its_bytes(agent):
    status, _, data = put(agent, "/v2/keys/val/bin", "value=%ff%fe%00a%C3%A9", FORM)
    assert status == 201, data
    assert agent.request("GET", "/v1/kv/val/bin?raw")[2] == b"\xff\xfe\x00a\xc3\xa9"
    # etcd's JSON carries a string: Go's encoder shows each non-UTF-8 byte as U+FFFD.
    assert etcd_get(agent, "/val/bin")["node"]["value"] == "\ufffd\ufffd\x00a\u00e9"
    # A raw non-UTF-8 byte in the form (not %-escaped) is kept too.
    status, _, _ = put(agent, "/v2/keys/val/raw-byte", b"value=a\xffb", FORM)
    assert status == 201
    assert agent.request("GET", "/v1/kv/val/raw-byte?raw")[2] == b"a\xffb"


def test_etcd_prev_value_compares_bytes(agent):
    put(agent, "/v2/keys/val/cas", "value=%ff", FORM)
    # What the JSON shows (U+FFFD) is not what is stored: the compare must fail...
    status, _, data = put(agent, "/v2/keys/val/cas", "value=new&prevValue=%EF%BF%BD", FORM)
    assert status == 412 and json.loads(data)["errorCode"] == 101
    assert agent.request("GET", "/v1/kv/val/cas?raw")[2] == b"\xff"
    # ...and the stored byte matches.
    status, _, data = put(agent, "/v2/keys/val/cas", "value=%fe&prevValue=%ff", FORM)
    assert status == 200 and json.loads(data)["action"] == "compareAndSwap"
    assert agent.request("GET", "/v1/kv/val/cas?raw")[2] == b"\xfe"
    # A query value is a path-level matter (the HTTP layer may refuse non-UTF-8 there): the
    # delete compares a UTF-8 value.
    put(agent, "/v2/keys/val/cas", "value=%C3%A9&prevValue=%fe", FORM)
    status, _, data = agent.request("DELETE", "/v2/keys/val/cas?prevValue=%C3%A9")
    assert status == 200 and json.loads(data)["action"] == "compareAndDelete"


def test_consul_kv_bytes_survive_an_etcd_read_and_refresh(agent):
    put(agent, "/v1/kv/val/shared", b"\x80\x81")
    assert etcd_get(agent, "/val/shared")["node"]["value"] == "\ufffd\ufffd"
    status, _, _ = put(agent, "/v2/keys/val/shared", "value=%80%81&prevValue=%80%81", FORM)
    assert status == 200
    assert agent.request("GET", "/v1/kv/val/shared?raw")[2] == b"\x80\x81"


# --- sessions (items 10, 24) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def session_checks(agent):
    """A passing node check and a passing service check on the agent's node."""
    status, _, _ = put(agent, "/v1/agent/service/register",
                       {"Name": "val-web", "Check": {"CheckID": "val-svc-chk", "TTL": "600s",
                                                     "Status": "passing"}})
    assert status == 200
    status, _, _ = put(agent, "/v1/agent/check/register",
                       {"Name": "val-node-chk", "TTL": "600s", "Status": "passing"})
    assert status == 200

    def synced():
        checks = {c["CheckID"]: c["Status"]
                  for c in agent.json("GET", f"/v1/health/node/{agent.node}")[2]}
        return checks.get("val-svc-chk") == checks.get("val-node-chk") == "passing"
    wait_for(synced, "the checks in the catalog")
    return "val-node-chk", "val-svc-chk"


SVC = {"ID": "val-svc-chk", "Namespace": ""}
ABSENT = object()


# Consul 1.8.7's session/info for each create body: (NodeChecks, ServiceChecks, Checks).
@pytest.mark.parametrize("body, node_checks, service_checks, legacy", [
    ({}, ["serfHealth"], None, ABSENT),
    ({"Checks": []}, [], None, ABSENT),
    ({"NodeChecks": []}, [], None, ABSENT),
    ({"Checks": [], "NodeChecks": []}, [], None, ABSENT),
    ({"ServiceChecks": [{"ID": "val-svc-chk"}]}, ["serfHealth"], [SVC], ABSENT),
    ({"ServiceChecks": []}, ["serfHealth"], [], ABSENT),
    ({"Checks": ["val-node-chk"]}, ["serfHealth"], None, ["val-node-chk"]),
    ({"NodeChecks": ["val-node-chk"]}, ["val-node-chk"], None, ABSENT),
    ({"Checks": ["val-svc-chk"]}, ["serfHealth"], None, ["val-svc-chk"]),
    ({"Checks": ["val-node-chk"], "NodeChecks": ["serfHealth"]}, ["serfHealth"], None,
     ["val-node-chk"]),
    ({"NodeChecks": ["val-node-chk"], "ServiceChecks": [SVC]}, ["val-node-chk"], [SVC], ABSENT),
    ({"ServiceChecks": [{"ID": "val-node-chk"}]}, ["serfHealth"],
     [{"ID": "val-node-chk", "Namespace": ""}], ABSENT),
    ({"NodeChecks": ["val-svc-chk"]}, ["val-svc-chk"], None, ABSENT),
    ({"Checks": None}, [], None, ABSENT),
    ({"NodeChecks": None}, None, None, ABSENT),
    ({"ServiceChecks": [{"id": "val-svc-chk", "namespace": "x"}]}, ["serfHealth"],
     [{"ID": "val-svc-chk", "Namespace": "x"}], ABSENT),
    ({"NodeChecks": ["serfHealth", "serfHealth"]}, ["serfHealth", "serfHealth"], None, ABSENT),
    ({"Checks": ["serfHealth"], "NodeChecks": ["serfHealth"]}, ["serfHealth"], None, ABSENT),
    ({"Checks": [], "NodeChecks": ["val-node-chk"]}, [], None, ABSENT),
    ({"Checks": ["val-node-chk"], "NodeChecks": []}, [], None, ABSENT),
    ({"NodeChecks": [None]}, ["serfHealth"], None, ABSENT),
    ({"ServiceChecks": [{"ID": "val-svc-chk", "Bogus": 5}], "Bogus": 1}, ["serfHealth"], [SVC],
     ABSENT),
])
def test_session_check_lists_as_consul_keeps_them(agent, session_checks, body, node_checks,
                                                  service_checks, legacy):
    status, _, created = agent.json("PUT", "/v1/session/create", body)
    assert status == 200, created
    sid = created["ID"]
    _, _, info = agent.json("GET", f"/v1/session/info/{sid}")
    session = info[0]
    keys = ["ID", "Name", "Node", "LockDelay", "Behavior", "TTL", "NodeChecks", "ServiceChecks",
            "CreateIndex", "ModifyIndex"]
    if legacy is not ABSENT:
        keys.insert(8, "Checks")
        assert session["Checks"] == legacy
    assert list(session) == keys
    assert (session["NodeChecks"], session["ServiceChecks"]) == (node_checks, service_checks)
    put(agent, f"/v1/session/destroy/{sid}")


@pytest.mark.parametrize("body, message", [
    ({"ServiceChecks": [{"ID": "val-nope"}]}, "Missing check 'val-nope' registration"),
    ({"NodeChecks": ["val-nope"]}, "Missing check 'val-nope' registration"),
    ({"ServiceChecks": [{}]}, "Missing check '' registration"),
    ({"ServiceChecks": [None]}, "Missing check '' registration"),
    ({"Checks": ["serfHealth", None]}, "Missing check '' registration"),
    ({"TTL": "abc"}, "Session TTL 'abc' invalid: time: invalid duration \"abc\""),
    ({"TTL": "15"}, "Session TTL '15' invalid: time: missing unit in duration \"15\""),
    ({"TTL": "-20s"}, "Invalid Session TTL '-20000000000', must be between [10s=24h0m0s]"),
])
def test_session_create_rule_errors_are_consuls_500s(agent, session_checks, body, message):
    status, _, data = put(agent, "/v1/session/create", body)
    assert (status, text(data)) == (500, message)  # Consul 1.8.7


DECODE = "Request decode failed: "


@pytest.mark.parametrize("body, message", [
    ('{"ServiceChecks": true}', "json: cannot unmarshal bool into Go struct field "
     ".ServiceChecks of type []structs.ServiceCheck"),
    ('{"ServiceChecks": {"ID": "x"}}', "json: cannot unmarshal object into Go struct field "
     ".ServiceChecks of type []structs.ServiceCheck"),
    ('{"ServiceChecks": [true]}', "json: cannot unmarshal bool into Go struct field "
     ".ServiceChecks of type structs.ServiceCheck"),
    ('{"ServiceChecks": ["x"]}', "json: cannot unmarshal string into Go struct field "
     ".ServiceChecks of type structs.ServiceCheck"),
    ('{"ServiceChecks": [{"ID": 5}]}', "json: cannot unmarshal number into Go struct field "
     "ServiceCheck.ServiceChecks.ID of type string"),
    ('{"ServiceChecks": [{"ID": "x", "Namespace": 5}]}', "json: cannot unmarshal number into Go "
     "struct field ServiceCheck.ServiceChecks.Namespace of type string"),
    ('{"NodeChecks": true}', "json: cannot unmarshal bool into Go struct field .NodeChecks of "
     "type []string"),
    ('{"NodeChecks": [5]}', "json: cannot unmarshal number into Go struct field .NodeChecks of "
     "type string"),
    ('{"Checks": "a"}', "json: cannot unmarshal string into Go struct field .Checks of type "
     "[]types.CheckID"),
    ('{"Checks": [5]}', "json: cannot unmarshal number into Go struct field .Checks of type "
     "types.CheckID"),
    ('{"Name": 5}', "json: cannot unmarshal number into Go struct field .Name of type string"),
    ('{"Behavior": 5}', "json: cannot unmarshal number into Go struct field .Behavior of type "
     "structs.SessionBehavior"),
    ('{"TTL": 5}', "json: cannot unmarshal number into Go struct field .TTL of type string"),
    ('{"CreateIndex": "x"}', "json: cannot unmarshal string into Go struct field .CreateIndex "
     "of type uint64"),
    ('{"CreateIndex": -1}', "json: cannot unmarshal number -1 into Go struct field "
     ".CreateIndex of type uint64"),
    ('{"LockDelay": NaN}', "invalid character 'N' looking for beginning of value"),
    ('{"LockDelay": Infinity}', "invalid character 'I' looking for beginning of value"),
    ('{"LockDelay": -Infinity}', "invalid character 'I' in numeric literal"),
    ('{"LockDelay": "abc"}', 'time: invalid duration "abc"'),
    ('{"LockDelay": "1e3"}', 'time: unknown unit "e" in duration "1e3"'),
    ('{"LockDelay": "15"}', 'time: missing unit in duration "15"'),
    ('{"LockDelay": "2562048h"}', 'time: invalid duration "2562048h"'),
    ("[1]", "json: cannot unmarshal array into Go value of type "
     "struct { LockDelay interface {}; *structs.Alias }"),
    ("5", "json: cannot unmarshal number into Go value of type "
     "struct { LockDelay interface {}; *structs.Alias }"),
])
def test_session_create_decode_errors_are_400s(agent, body, message):
    before = agent.json("GET", "/v1/session/list")[2]
    status, _, data = put(agent, "/v1/session/create", body)
    assert (status, text(data)) == (400, DECODE + message)  # Consul 1.8.7
    assert agent.json("GET", "/v1/session/list")[2] == before


def test_session_create_lock_delay_out_of_float64_range_is_400(agent):
    status, _, data = put(agent, "/v1/session/create", '{"LockDelay": 1e400}')
    assert status == 400 and '"LockDelay"' in text(data)


@pytest.mark.parametrize("value, nanos", [
    (True, 0), ([1], 0), ({"a": 1}, 0), ("100ns", 100_000_000_000),
    ("-5s", -5_000_000_000_000_000_000), (-1e30, 0), (9.3e18, 0), (1e30, 0),
    (1e15, 1_000_000_000_000_000), (1.5, 1_000_000_000), (-5, -5_000_000_000),
    ("1m30s", 90_000_000_000), (None, 15_000_000_000),
])
def test_session_lock_delay_as_consul_reads_it(agent, value, nanos):
    status, _, created = agent.json("PUT", "/v1/session/create", {"LockDelay": value})
    assert status == 200, created
    info = agent.json("GET", f"/v1/session/info/{created['ID']}")[2]
    assert info[0]["LockDelay"] == nanos  # Consul 1.8.7
    put(agent, f"/v1/session/destroy/{created['ID']}")


def test_session_goes_when_its_service_check_goes_critical(agent):
    put(agent, "/v1/agent/service/register",
        {"Name": "val-inv", "Check": {"CheckID": "val-inv-chk", "TTL": "600s",
                                      "Status": "passing"}})
    wait_for(lambda: any(c["CheckID"] == "val-inv-chk" and c["Status"] == "passing"
                         for c in agent.json("GET", "/v1/health/checks/val-inv")[2]),
             "the service check in the catalog")
    status, _, created = agent.json("PUT", "/v1/session/create",
                                    {"ServiceChecks": [{"ID": "val-inv-chk"}]})
    assert status == 200, created
    sid = created["ID"]
    assert agent.json("PUT", f"/v1/kv/val/inv-lock?acquire={sid}", "me")[2] is True
    assert agent.json("GET", f"/v1/session/info/{sid}")[2][0]["ServiceChecks"] == [
        {"ID": "val-inv-chk", "Namespace": ""}]
    put(agent, "/v1/agent/check/fail/val-inv-chk")
    wait_for(lambda: agent.json("GET", f"/v1/session/info/{sid}")[2] == [],
             "the session to be invalidated")
    assert "Session" not in agent.json("GET", "/v1/kv/val/inv-lock")[2][0]
    put(agent, "/v1/agent/service/deregister/val-inv")


# --- /v1/txn size limit (item 11) ---------------------------------------------------------------


def test_txn_body_over_limit_is_413_with_consuls_text(agent):
    body = b" " * (TXN_LIMIT - 1) + b"[]"
    status, _, data = put(agent, "/v1/txn", body)
    assert (status, text(data)) == (413, f"Request body({TXN_LIMIT + 1} bytes) too large, max "
                                         f"size: {TXN_LIMIT} bytes. See {TXN_DOC}.")
    # 600 KiB of real operations: nothing is written.
    ops = [{"KV": {"Verb": "set", "Key": f"val/txn/{i}", "Value": "eA==" * 2600}}
           for i in range(60)]
    status, _, data = put(agent, "/v1/txn", json.dumps(ops))
    assert status == 413 and text(data).startswith("Request body(")
    assert agent.request("GET", "/v1/kv/val/txn/0")[0] == 404
    # Exactly at the limit is accepted.
    status, _, data = put(agent, "/v1/txn", b" " * (TXN_LIMIT - 2) + b"[]")
    assert status == 200, data[:200]


def test_chunked_txn_body_over_limit_is_413_without_a_size(agent):
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    try:
        chunks = [b" " * 65536] * 9 + [b"[]"]
        conn.request("PUT", "/v1/txn", body=iter(chunks), encode_chunked=True)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    assert (response.status, text(data)) == (
        413, f"Request body too large, max size: {TXN_LIMIT} bytes. See {TXN_DOC}.")


# --- catalog deregistration (item 23) -----------------------------------------------------------


def test_catalog_deregister_takes_the_go_clients_whole_struct(agent):
    status, _, _ = put(agent, "/v1/catalog/register",
                       {"Node": "val-dereg", "Address": "10.9.0.2",
                        "Service": {"Service": "val-dereg-svc", "Port": 1}})
    assert status == 200
    # Consul's Go client marshals all of CatalogDeregistration, Address included.
    status, _, data = put(agent, "/v1/catalog/deregister",
                          {"Node": "val-dereg", "Address": "10.9.0.2", "Datacenter": "dc1",
                           "ServiceID": "val-dereg-svc", "CheckID": ""})
    assert (status, data.strip()) == (200, b"true")
    assert agent.json("GET", "/v1/catalog/service/val-dereg-svc")[2] == []
    status, _, data = put(agent, "/v1/catalog/deregister", {"Node": "val-dereg", "Address": 5})
    assert status == 400 and "Address" in text(data)


def test_catalog_writes_to_an_unknown_datacenter_fail_alike(agent):
    put(agent, "/v1/catalog/register", {"Node": "val-dc", "Address": "10.9.0.3"})
    for path in ("/v1/catalog/register", "/v1/catalog/deregister"):
        status, _, data = put(agent, path, {"Node": "val-dc", "Address": "10.9.0.3",
                                            "Datacenter": "nope"})
        assert (status, text(data)) == (500, "No path to datacenter")  # Consul 1.8.7
    assert agent.json("GET", "/v1/catalog/node/val-dc")[2]["Node"]["Node"] == "val-dc"


@pytest.mark.parametrize("weights", [{"Passing": 70000, "Warning": 3}, {"Passing": 0,
                                     "Warning": 3}, {"Passing": 5, "Warning": -1},
                                     {"Warning": 2}])
def test_catalog_weights_consul_would_refuse_become_the_default(agent, weights):
    status, _, _ = put(agent, "/v1/catalog/register",
                       {"Node": "val-w", "Address": "10.9.0.4",
                        "Service": {"Service": "val-w", "Weights": weights}})
    assert status == 200
    rows = agent.json("GET", "/v1/catalog/service/val-w")[2]
    assert rows[0]["ServiceWeights"] == {"Passing": 1, "Warning": 1}  # Consul 1.8.7
    status, _, _ = put(agent, "/v1/catalog/register",
                       {"Node": "val-w", "Address": "10.9.0.4",
                        "Service": {"Service": "val-w", "Weights": {"Passing": 5, "Warning": 3}}})
    assert agent.json("GET", "/v1/catalog/service/val-w")[2][0]["ServiceWeights"] == {
        "Passing": 5, "Warning": 3}


def test_check_update_null_fields_are_go_zero_values(agent):
    put(agent, "/v1/agent/check/register", {"Name": "val-upd", "TTL": "600s"})
    for body in ('{"Status": null}', "null"):
        status, _, data = put(agent, "/v1/agent/check/update/val-upd", body)
        assert (status, text(data)) == (400, "Invalid check status: ''")  # Consul 1.8.7
    status, _, _ = put(agent, "/v1/agent/check/update/val-upd",
                       '{"Status": "passing", "Output": null}')
    assert status == 200
    status, _, data = put(agent, "/v1/agent/check/update/val-upd", '{"Status": 0}')
    assert status == 400 and "checkUpdate.Status" in text(data)


def test_agent_logged_no_traceback(agent):
    assert_serving(agent)
    log = agent.log_so_far()
    assert "Traceback" not in log, log[-3000:]


CONNECT_BODIES = [
    {"Name": "gw", "Kind": "mesh-gateway", "Port": 8443},
    {"Name": "px", "Kind": "connect-proxy", "Proxy": {"DestinationServiceName": "web"}},
    {"Name": "web", "Proxy": {"Config": {"foo": "bar"}}},
    {"Name": "web", "Connect": {"SidecarService": {}}},
    {"Name": "web", "Connect": {"Native": True}},
]


@pytest.mark.parametrize("body", CONNECT_BODIES)
def test_connect_registrations_are_refused_not_silently_dropped(agent, body):
    """Connect is not built: a registration relying on it gets a 400 saying so, and nothing is
    stored without the parts it asked for (Consul's zero values still pass)."""
    status, _, data = agent.request("PUT", "/v1/agent/service/register", json.dumps(body))
    assert status == 400 and b"Connect (service mesh) is not supported yet" in data
    status, _, data = agent.request("PUT", "/v1/catalog/register", json.dumps(
        {"Node": "cn1", "Address": "10.1.1.1",
         "Service": {**{k: v for k, v in body.items() if k != "Name"}, "Service": body["Name"]}}))
    assert status == 400 and b"Connect (service mesh) is not supported yet" in data
    assert agent.request("GET", f"/v1/agent/service/{body['Name']}")[0] == 404


def test_zero_connect_fields_and_other_kinds_are_accepted(agent):
    body = {"Name": "zc", "Kind": "custom", "Proxy": {"MeshGateway": {}, "Expose": {}},
            "Connect": {}}
    assert agent.request("PUT", "/v1/agent/service/register", json.dumps(body))[0] == 200
    status, _, data = agent.request("GET", "/v1/agent/service/zc")
    assert status == 200 and json.loads(data)["Kind"] == "custom"
