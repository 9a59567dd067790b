"""Malformed input against a real `waypost agent -dev`: every bad request gets a 4xx naming the
problem (or one of Consul's own 500s, listed below), nothing is half-written, and the agent keeps
serving afterwards.

Tests use their own service, check, node and key names; the hypothesis fuzz test runs last
because it registers whatever it generates.
"""

from __future__ import annotations

import json
import re
import socket
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import InvalidRequest
from gateway.http.decode import MAX_DEPTH, json_body, parse_uint64
from gateway.http.request import Request

REGISTER = "/v1/agent/service/register"
CHECK_REGISTER = "/v1/agent/check/register"
CATALOG_REGISTER = "/v1/catalog/register"
KV_LIMIT = 512 * 1024
BODY_LIMIT = 8 * 1024 * 1024
HEADER_LIMIT = 1024 * 1024

# The 500s Consul itself answers, with its words; anything else >= 500 is a bug.
DOCUMENTED_500 = re.compile(
    rb'^(No path to datacenter'
    rb'|CheckID ".*" does not have associated TTL'
    rb'|strconv\.ParseUint: parsing ".*": (invalid syntax|value out of range)'
    rb'|ServiceID ".*" does not exist'
    rb"|Missing service registration for check .*"
    # Session.Apply's rule errors (Consul 1.8.7 answers them with 500):
    rb"|Missing node registration|Must provide Node|Missing check '.*' registration"
    rb"|Check '.*' is in critical state|Invalid Behavior setting '.*'"
    rb"|Invalid Session TTL '-?[0-9]+', must be between \[10s=24h0m0s\]"
    rb"|Session TTL '.*' invalid: time: .*"
    # KVS.Apply's lock errors (?acquire= / ?release= naming no session):
    rb'|invalid session ".*"|missing session'
    # /v1/operator/keyring: the key query's per-node failures, as Consul's multi-error
    rb"|[0-9]+ errors? occurred:\n.*)$", re.S)


def text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def put(agent, path, body=None, headers=None):
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return agent.request("PUT", path, body, headers)


def services(agent) -> dict:
    status, _, body = agent.request("GET", "/v1/agent/services")
    assert status == 200
    return json.loads(body)


def checks(agent) -> dict:
    status, _, body = agent.request("GET", "/v1/agent/checks")
    assert status == 200
    return json.loads(body)


def catalog_service(agent, name: str) -> list:
    status, _, body = agent.request("GET", f"/v1/catalog/service/{name}")
    assert status == 200
    return json.loads(body)


def assert_serving(agent) -> None:
    status, _, body = agent.request("GET", "/v1/status/leader", timeout=5)
    assert status == 200 and json.loads(body)


def raw_exchange(agent, data: bytes, shutdown: bool = False, timeout: float = 10) -> bytes:
    """Send raw bytes on a fresh connection and read until the agent closes it."""
    with socket.create_connection(("127.0.0.1", agent.port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if shutdown:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered and closed before it read everything
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:100]
    return int(response.split(b" ", 2)[1])


# --- bodies that are not JSON, or not the right JSON ---------------------------------------


@pytest.mark.parametrize("body, fragment", [
    ("{bad json", "Request decode failed: "),
    ('{"Name": "bi-x",}', "Request decode failed: "),
    ("", "Request decode failed: unexpected EOF"),
    ("   \n", "Request decode failed: unexpected EOF"),
])
def test_malformed_json_is_decode_failure(agent, body, fragment):
    before = services(agent)
    status, _, data = put(agent, REGISTER, body)
    assert status == 400
    assert text(data).startswith(fragment)
    assert services(agent) == before


@pytest.mark.parametrize("path", [REGISTER, CHECK_REGISTER, CATALOG_REGISTER,
                                  "/v1/catalog/deregister"])
def test_malformed_json_on_every_register_endpoint(agent, path):
    status, _, data = put(agent, path, "{nope")
    assert status == 400
    assert text(data).startswith("Request decode failed: ")


def test_unknown_field_is_named(agent):
    status, _, data = put(agent, REGISTER, {"Name": "bi-unknown", "Bogus": 1})
    assert status == 400
    assert "Bogus" in text(data)
    status, _, data = put(agent, REGISTER, {"Name": "bi-unknown",
                                           "Check": {"TTL": "5s", "Frobnicate": True}})
    assert status == 400
    assert "Frobnicate" in text(data)
    assert "bi-unknown" not in services(agent)


@pytest.mark.parametrize("doc, field", [
    ({"Name": "bi-types", "Port": "abc"}, "Port"),
    ({"Name": "bi-types", "Port": 1.5}, "Port"),
    ({"Name": "bi-types", "Port": True}, "Port"),
    ({"Name": "bi-types", "Tags": "abc"}, "Tags"),
    ({"Name": "bi-types", "Tags": [1, 2]}, "Tags"),
    ({"Name": "bi-types", "Meta": ["a"]}, "Meta"),
    ({"Name": "bi-types", "Meta": {"k": 1}}, "Meta"),
    ({"Name": "bi-types", "Check": {"TTL": True}}, "TTL"),
    ({"Name": "bi-types", "Check": {"TTL": [5]}}, "TTL"),
    ({"Name": "bi-types", "Check": {"TTL": "abc"}}, "TTL"),
    ({"Name": "bi-types", "Check": {"TTL": -5}}, "TTL"),
    ({"Name": "bi-types", "Check": {"TTL": "-5s"}}, "TTL"),
    ({"Name": "bi-types", "Weights": {"Passing": -1}}, "Weights"),
    ({"Name": "bi-types", "Weights": {"Passing": 1, "Warning": -1}}, "Weights"),
    ({"Name": 5}, "Name"),
    ({"Name": "bi-types", "Address": ["10.0.0.1"]}, "Address"),
])
def test_wrong_types_name_the_field(agent, doc, field):
    status, _, data = put(agent, REGISTER, doc)
    assert status == 400, data
    assert field in text(data)
    assert "bi-types" not in services(agent)


def test_numeric_ttl_is_nanoseconds_as_in_consul(agent):
    # Consul decodes a JSON number as a Go time.Duration: "TTL": 5 is 5ns, not 5s, and valid.
    status, _, data = put(agent, REGISTER, {"Name": "bi-ns-ttl", "Check": {"TTL": 5}})
    assert status == 200, data
    assert checks(agent)["service:bi-ns-ttl"]["Status"] == "critical"
    put(agent, "/v1/agent/service/deregister/bi-ns-ttl")


@pytest.mark.parametrize("body", ["[]", '[{"Name": "bi-list"}]', '"bi-list"', "42", "null",
                                  "true"])
def test_non_object_body_is_rejected(agent, body):
    for path in (REGISTER, CHECK_REGISTER, CATALOG_REGISTER, "/v1/catalog/deregister"):
        status, _, data = put(agent, path, body)
        assert status == 400, (path, body, data)
    assert "bi-list" not in services(agent)


def test_missing_service_name(agent):
    status, _, data = put(agent, REGISTER, {"Port": 80, "Tags": ["a"]})
    assert status == 400
    assert text(data) == "Missing service name"
    status, _, data = put(agent, REGISTER, {"Name": "", "Port": 80})
    assert (status, text(data)) == (400, "Missing service name")


def test_nothing_half_registered_when_second_check_is_bad(agent):
    services_before, checks_before = services(agent), checks(agent)
    for bad in ({"TTL": "abc"}, {"Interval": "abc", "HTTP": "http://127.0.0.1:1/"},
                {"HTTP": "http://127.0.0.1:1/"}, {"TTL": "5s", "Bogus": 1}):
        doc = {"Name": "bi-half", "ID": "bi-half-1", "Port": 1,
               "Checks": [{"CheckID": "bi-half-good", "TTL": "10s"}, bad]}
        status, _, data = put(agent, REGISTER, doc)
        assert status == 400, (bad, data)
    assert services(agent) == services_before
    after = checks(agent)
    assert "bi-half-good" not in after
    assert set(after) == set(checks_before)
    assert catalog_service(agent, "bi-half") == []


def test_nothing_half_registered_in_catalog(agent):
    doc = {"Node": "bi-cat-node", "Address": "10.7.0.1",
           "Service": {"Service": "bi-cat", "Port": 1},
           "Checks": [{"CheckID": "bi-cat-ok", "Name": "ok", "Status": "passing"},
                      {"CheckID": "bi-cat-bad", "Name": "bad", "Status": "bogus"}]}
    status, _, data = put(agent, CATALOG_REGISTER, doc)
    assert status == 400
    assert "Status" in text(data)
    assert catalog_service(agent, "bi-cat") == []
    status, _, body = agent.request("GET", "/v1/catalog/node/bi-cat-node")
    assert status == 404 or json.loads(body) is None


def test_replacing_a_service_with_a_bad_definition_keeps_the_old(agent):
    status, _, _ = put(agent, REGISTER, {"Name": "bi-keep", "Port": 10, "Check": {"TTL": "30s"}})
    assert status == 200
    old = services(agent)["bi-keep"]
    status, _, _ = put(agent, REGISTER, {"Name": "bi-keep", "Port": "eleven"})
    assert status == 400
    assert services(agent)["bi-keep"] == old
    assert "service:bi-keep" in checks(agent)
    put(agent, "/v1/agent/service/deregister/bi-keep")


def test_check_register_errors(agent):
    status, _, data = put(agent, CHECK_REGISTER, {"TTL": "5s"})
    assert (status, text(data)) == (400, "Missing check name")
    status, _, data = put(agent, CHECK_REGISTER, {"Name": "bi-chk"})
    assert status == 400 and "TTL" in text(data)
    status, _, data = put(agent, CHECK_REGISTER, {"Name": "bi-chk", "TTL": "5s", "Status": "bogus"})
    assert status == 400 and "Status" in text(data)
    status, _, data = put(agent, CHECK_REGISTER,
                          {"Name": "bi-chk", "TTL": "5s", "ServiceID": "bi-no-such-service"})
    assert status in (400, 500)  # Consul: 500
    assert 'ServiceID "bi-no-such-service" does not exist' in text(data)
    assert "bi-chk" not in checks(agent)


# --- decoding edge cases --------------------------------------------------------------------


def test_deeply_nested_json_is_400_not_a_crash(agent):
    for depth in (10_000, 2_000, 990, 300):
        for body in ("[" * depth + "]" * depth,
                     '{"Name": "bi-deep", "Tags": ' + "[" * depth + "]" * depth + "}",
                     '{"Name": "bi-deep", "Meta": ' + '{"a": ' * depth + "1" + "}" * depth + "}"):
            status, _, data = put(agent, REGISTER, body)
            assert status == 400, (depth, data[:200])
        status, _, data = put(agent, CATALOG_REGISTER, "[" * depth + "]" * depth)
        assert status == 400, (depth, data[:200])
    status, _, data = put(agent, REGISTER, "[" * 10_000 + "]" * 10_000)
    assert text(data) == "Request decode failed: exceeded max depth"
    assert "bi-deep" not in services(agent)
    assert_serving(agent)


@pytest.mark.parametrize("body", [
    b'{"Name": "bi-utf\xff"}',
    b'{"Name": "bi-utf\xc3"}',
    b'\xff\xfe{\x00}\x00',
    '{"Name": "bi-utf16"}'.encode("utf-16"),
    '{"Name": "bi-utf16"}'.encode("utf-16-le"),
    b'{"Name": "bi-utf\xed\xa0\x80"}',  # an encoded surrogate is not UTF-8 either
])
def test_non_utf8_body_is_400(agent, body):
    status, _, data = put(agent, REGISTER, body)
    assert status == 400
    assert text(data).startswith("Request decode failed: ")
    assert not any(name.startswith("bi-utf") for name in services(agent))


def test_lone_surrogate_escape_does_not_poison_reads(agent):
    # Go's decoder turns "\ud800" into U+FFFD; storing the raw surrogate made every later read
    # of /v1/agent/services and /v1/catalog/services fail to encode (500).
    status, _, data = put(agent, REGISTER, '{"Name": "bi-sur\\ud800", "Tags": ["\\udfff"], '
                                           '"Meta": {"k": "v\\ud83d"}}')
    assert status == 200, data
    registered = services(agent)
    assert registered["bi-sur\ufffd"]["Tags"] == ["\ufffd"]
    assert registered["bi-sur\ufffd"]["Meta"] == {"k": "v\ufffd"}
    status, _, body = agent.request("GET", "/v1/catalog/services")
    assert status == 200 and "bi-sur\ufffd" in json.loads(body)
    # A valid pair is one character and stays as it is.
    status, _, _ = put(agent, REGISTER, '{"Name": "bi-pair-\\ud83d\\ude00"}')
    assert status == 200
    assert "bi-pair-\U0001F600" in services(agent)
    put(agent, "/v1/agent/service/deregister/bi-sur%EF%BF%BD")
    put(agent, "/v1/agent/service/deregister/bi-pair-%F0%9F%98%80")


# --- the decoder itself (unit level) -------------------------------------------------------


def test_json_body_depth_limit_is_exact():
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert json_body(Request(body=ok.encode())) is not None
    too_deep = "[" + ok + "]"
    with pytest.raises(InvalidRequest, match="^Request decode failed: exceeded max depth$"):
        json_body(Request(body=too_deep.encode()))
    # Many siblings are not depth.
    wide = json.dumps({"Tags": [[] for _ in range(5 * MAX_DEPTH)]})
    assert len(json_body(Request(body=wide.encode()))["Tags"]) == 5 * MAX_DEPTH


def test_json_body_replaces_lone_surrogates_everywhere():
    body = b'{"a\\ud800": ["\\uDFFF", {"k": "x\\udbff"}], "pair": "\\ud83d\\ude00"}'
    assert json_body(Request(body=body)) == {
        "a\ufffd": ["\ufffd", {"k": "x\ufffd"}], "pair": "\U0001F600"}
    # An escaped backslash before "u" is not an escape: left alone.
    assert json_body(Request(body=b'{"a": "\\\\ud800"}')) == {"a": "\\ud800"}


def test_json_body_empty_and_optional():
    assert json_body(Request(body=b"  "), required=False) is None
    with pytest.raises(InvalidRequest, match="unexpected EOF"):
        json_body(Request(body=b""))


@pytest.mark.parametrize("text, value", [("0", 0), ("42", 42), (str(2**64 - 1), 2**64 - 1),
                                         (str(2**64), None), ("-1", None), ("+1", None),
                                         (" 1", None), ("1 ", None), ("1_0", None), ("", None),
                                         ("\u0661", None), ("0x10", None)])
def test_parse_uint64_is_go_strict(text, value):
    assert parse_uint64(text) == value


# --- size limits ----------------------------------------------------------------------------


def test_kv_value_over_limit_is_413_and_not_written(agent):
    status, _, data = put(agent, "/v1/kv/bi/big", b"x" * (KV_LIMIT + 1))
    assert status == 413
    assert "too large" in text(data)
    status, _, _ = agent.request("GET", "/v1/kv/bi/big")
    assert status == 404
    status, _, data = put(agent, "/v1/kv/bi/big", b"x" * KV_LIMIT)
    assert (status, data.strip()) == (200, b"true")


def test_body_over_request_limit_is_413(agent):
    status, _, data = put(agent, "/v1/kv/bi/huge", b"x" * (BODY_LIMIT + 1))
    assert status == 413
    assert "too large" in text(data)
    status, _, _ = agent.request("GET", "/v1/kv/bi/huge")
    assert status == 404
    assert_serving(agent)


def test_declared_length_over_limit_is_413_before_the_body(agent):
    head = (f"PUT /v1/kv/bi/declared HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {BODY_LIMIT + 1}\r\n\r\n").encode()
    response = raw_exchange(agent, head, shutdown=True)
    assert status_of(response) == 413
    assert_serving(agent)


def test_chunked_body_over_limit_is_413(agent):
    chunk = b"x" * (1024 * 1024)
    data = b"PUT /v1/kv/bi/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 9 + b"0\r\n\r\n"
    response = raw_exchange(agent, data)
    assert status_of(response) == 413
    status, _, _ = agent.request("GET", "/v1/kv/bi/chunked")
    assert status == 404


def test_huge_headers_are_431(agent):
    data = (b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (HEADER_LIMIT + 10)
            + b"\r\n\r\n")
    assert status_of(raw_exchange(agent, data)) == 431
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(1200))
    data = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    assert status_of(raw_exchange(agent, data)) == 431
    assert_serving(agent)


# --- the wire and the path ------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [
    b"\x00\x01\x02\x03garbage\r\n\r\n",
    b"HELLO\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /v1/status/leader HTTP/1.1\r\nBad Header Line\r\n\r\n",
    b"PUT /v1/kv/bi/g HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"PUT /v1/kv/bi/g HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    bytes(range(256)) * 4,
])
def test_garbage_on_the_socket_is_400(agent, garbage):
    response = raw_exchange(agent, garbage, shutdown=True)
    assert status_of(response) == 400
    assert_serving(agent)


def test_bad_paths(agent):
    status, _, _ = agent.request("GET", "/v1/kv")
    assert status in (301, 400, 404)  # Go's mux redirects to /v1/kv/; a 404 is as good
    status, _, _ = agent.request("PUT", "/v1/kv", "x")
    assert status in (301, 400, 404, 405)
    assert agent.request("GET", "/v1/does/not/exist")[0] == 404
    assert agent.request("GET", "/v2/kv/a")[0] == 404
    assert agent.request("GET", "/")[0] == 200  # 301 to /ui/, followed by urllib
    status, _, data = agent.request("PUT", "/v1/kv/", "x")
    assert (status, text(data)) == (400, "Missing key name")
    status, _, data = agent.request("GET", "/v1/kv/")
    assert (status, text(data)) == (400, "Missing key name")
    assert agent.request("POST", "/v1/kv/bi/post", "x")[0] == 405
    assert agent.request("DELETE", "/v1/status/leader")[0] == 405


@pytest.mark.parametrize("path", ["/v1/kv/%zz", "/v1/kv/a%zzb", "/v1/kv/a%", "/v1/kv/a%4",
                                  "/v1/catalog/service/%g0", "/v1/does/not/%zz"])
def test_percent_garbage_in_path_is_400(agent, path):
    # Go's URL parser refuses these ("invalid URL escape"); they must not name a key "%zz".
    for method in ("GET", "PUT", "DELETE"):
        status, _, _ = agent.request(method, path, "x" if method == "PUT" else None)
        assert status == 400, (method, path)
    status, _, _ = agent.request("GET", "/v1/kv/%25zz")
    assert status == 404  # nothing was written under the literal name


def test_percent_encoded_key_roundtrip(agent):
    status, _, _ = put(agent, "/v1/kv/bi/pct/a%20b%2Fc", "v")
    assert status == 200
    status, _, body = agent.request("GET", "/v1/kv/bi/pct/a%20b/c?raw")
    assert (status, body) == (200, b"v")


@pytest.mark.parametrize("query, message", [
    ("index=abc", "Invalid index"),
    ("index=-1", "Invalid index"),
    ("index=1.5", "Invalid index"),
    ("index=%2B5", "Invalid index"),
    ("index=1_0", "Invalid index"),
    ("index=18446744073709551616", "Invalid index"),
    ("index=1&wait=abc", "Invalid wait time"),
    ("index=1&wait=10", "Invalid wait time"),
    ("stale&consistent", "Cannot specify ?stale with ?consistent, conflicting semantics."),
])
def test_bad_query_parameters_are_400(agent, query, message):
    put(agent, "/v1/kv/bi/q", "v")
    status, _, data = agent.request("GET", f"/v1/kv/bi/q?{query}", timeout=5)
    assert (status, text(data)) == (400, message)


def test_empty_index_and_wait_are_ignored_as_in_consul(agent):
    put(agent, "/v1/kv/bi/q-empty", "v")
    t0 = time.monotonic()
    status, _, _ = agent.request("GET", "/v1/kv/bi/q-empty?index=&wait=", timeout=5)
    assert status == 200 and time.monotonic() - t0 < 1


@pytest.mark.parametrize("query, value", [("flags=abc", "abc"), ("flags=-1", "-1"),
                                          ("flags=1.5", "1.5"), ("cas=-1", "-1"),
                                          ("cas=abc", "abc"), ("cas=", "")])
def test_bad_flags_and_cas_are_refused_and_write_nothing(agent, query, value):
    # Consul parses these with strconv.ParseUint and returns the error as a 500 with Go's text.
    key = f"bi/flags/{abs(hash(query))}"
    status, _, data = put(agent, f"/v1/kv/{key}?{query}", "x")
    assert status == 500
    assert text(data) == f'strconv.ParseUint: parsing "{value}": invalid syntax'
    assert agent.request("GET", f"/v1/kv/{key}")[0] == 404


def test_flags_out_of_range(agent):
    status, _, data = put(agent, "/v1/kv/bi/flags-big?flags=18446744073709551616", "x")
    assert status == 500
    assert "value out of range" in text(data)
    status, _, _ = put(agent, "/v1/kv/bi/flags-big?flags=18446744073709551615", "x")
    assert status == 200


def test_unknown_datacenter_is_consuls_500(agent):
    status, _, data = agent.request("GET", "/v1/kv/bi/q?dc=nowhere")
    assert (status, text(data)) == (500, "No path to datacenter")


# --- agent check endpoints ------------------------------------------------------------------


def test_check_update_with_bogus_status_is_400(agent):
    put(agent, CHECK_REGISTER, {"Name": "bi-upd", "TTL": "30s"})
    status, _, data = put(agent, "/v1/agent/check/update/bi-upd", {"Status": "bogus"})
    assert status == 400
    assert "bogus" in text(data)
    assert checks(agent)["bi-upd"]["Status"] == "critical"
    for body in ("[]", '"passing"', "{bad", '{"Status": 5}', '{"Output": ["x"]}'):
        status, _, data = put(agent, "/v1/agent/check/update/bi-upd", body)
        assert status == 400, (body, data)
    status, _, _ = put(agent, "/v1/agent/check/update/bi-upd", {"Status": "passing", "Output": "ok"})
    assert status == 200
    assert checks(agent)["bi-upd"]["Status"] == "passing"
    put(agent, "/v1/agent/check/deregister/bi-upd")


@pytest.mark.parametrize("verb", ["pass", "warn", "fail"])
def test_ttl_update_on_unknown_check_is_consuls_500(agent, verb):
    status, _, data = put(agent, f"/v1/agent/check/{verb}/nope")
    assert (status, text(data)) == (500, 'CheckID "nope" does not have associated TTL')


def test_ttl_update_on_non_ttl_check_is_500(agent):
    put(agent, CATALOG_REGISTER, {"Node": "bi-catnode", "Address": "10.7.0.9",
                                  "Check": {"CheckID": "bi-catcheck", "Name": "c"}})
    status, _, data = put(agent, "/v1/agent/check/pass/bi-catcheck")
    assert (status, text(data)) == (500, 'CheckID "bi-catcheck" does not have associated TTL')


# --- fuzzing --------------------------------------------------------------------------------

WRITE_PATHS = [REGISTER, CHECK_REGISTER, CATALOG_REGISTER, "/v1/catalog/deregister",
               "/v1/agent/check/update/bi-fuzz"]
READ_PREFIXES = ["/v1/kv/", "/v1/catalog/service/", "/v1/catalog/node/", "/v1/health/service/",
                 "/v1/health/checks/", "/v1/health/node/", "/v1/health/state/",
                 "/v1/agent/service/", "/v1/catalog/nodes", "/v1/catalog/services",
                 "/v1/agent/self", "/v1/agent/members", "/v1/status/peers", "/v1/", "/"]
FIELD_NAMES = ["Name", "name", "ID", "Port", "Tags", "Meta", "Check", "Checks", "TTL", "Address",
               "Node", "Service", "Status", "Output", "CheckID", "ServiceID", "Weights",
               "Interval", "HTTP", "Args", "Datacenter", "NodeMeta", "SkipNodeUpdate",
               "TaggedAddresses", "EnableTagOverride", "Kind", "Definition", "Notes"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(["5s", "10ms", "-1s", "passing", "critical", "",
                                               "127.0.0.1", "bi-fuzz"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
bodies = (st.binary(max_size=200)
          | json_values.map(lambda v: json.dumps(v).encode())
          | st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6)
          .map(lambda v: json.dumps(v).encode()))
path_chars = st.text(alphabet=string.ascii_letters + string.digits + "-_./%~:@!$&'()*+,;=",
                     max_size=30)
query_strings = st.lists(
    st.tuples(st.sampled_from(["index", "wait", "dc", "flags", "cas", "recurse", "keys",
                               "separator", "raw", "passing", "tag", "node-meta", "stale",
                               "consistent", "pretty", "note", "x"]),
              st.text(alphabet=string.printable.strip() + "%", max_size=12)),
    max_size=4).map(lambda pairs: "&".join(f"{k}={v}".replace(" ", "%20").replace("#", "%23")
                                           for k, v in pairs))


def assert_acceptable(status: int, data: bytes, what) -> None:
    if status >= 500:
        assert DOCUMENTED_500.match(data), (what, status, data[:300])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(WRITE_PATHS), body=bodies)
def test_fuzz_register_bodies(agent, path, body):
    status, _, data = agent.request("PUT", path, body, timeout=10)
    assert_acceptable(status, data, (path, body))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "HEAD", "OPTIONS"]),
       prefix=st.sampled_from(READ_PREFIXES), rest=path_chars, query=query_strings)
def test_fuzz_paths_and_queries(agent, method, prefix, rest, query):
    # A random `index` may block: the first `wait` wins, so keep it to a millisecond.
    path = (prefix + rest).replace("?", "%3F").replace("#", "%23") + "?wait=1ms"
    if query:
        path += "&" + query
    body = b"x" if method == "PUT" else None
    status, _, data = agent.request(method, path, body, timeout=10)
    if method == "HEAD" and status >= 500:  # no body to read the reason from: ask again
        status, _, data = agent.request("GET", path, timeout=10)
    assert_acceptable(status, data, (method, path))


def test_agent_still_answers_after_the_fuzzing(agent):
    assert_serving(agent)
    status, _, _ = agent.request("GET", "/v1/agent/services")
    assert status == 200
    status, _, _ = agent.request("GET", "/v1/catalog/services")
    assert status == 200
    status, _, _ = agent.request("GET", "/v1/health/state/any")
    assert status == 200


def test_agent_logged_no_handler_failure(agent):
    log = agent.log_so_far()
    assert "Traceback" not in log, log[-3000:]


def test_trailing_data_after_the_body_is_ignored_as_go_does(agent):
    # Consul decodes with json.Decoder, which reads one value and leaves the rest unread.
    status, _, _ = agent.request("PUT", "/v1/agent/service/register", '{"Name": "bi-trail"} junk')
    assert status == 200
    assert "bi-trail" in agent.json("GET", "/v1/agent/services")[2]
    agent.request("PUT", "/v1/agent/service/deregister/bi-trail")
