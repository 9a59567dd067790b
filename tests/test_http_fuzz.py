"""Property-based fuzzing of every HTTP route that takes a body, against a real agent (issue 9).

Bodies are drawn from the JSON Schemas in ``schemas/`` (and, for the bodies the handlers decode
in code, from the small schemas below, written the same way): documents that are valid or
nearly so, where any value may be replaced by a wrong type, a number no field can hold (5,000
digits, 1e400, NaN, Infinity, beyond int64/uint64, negative, fractional), a huge string, deep
nesting, an unknown key or another spelling of a known one; plus arbitrary JSON and arbitrary
bytes. Every other PUT route, the KV store and the etcd API get arbitrary bodies and fields.

The property: no 5xx except Consul's own documented 500s (``DOCUMENTED_500``), no hang (every
request has a timeout), and the agent keeps serving without logging a traceback.

hypothesis-jsonschema was not used: it draws only valid documents and does not resolve our
cross-file ``$ref``s. The default run is derandomized (the same examples on every run) and
takes well under a minute; ``pytest -m slow`` runs a larger random one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.schemas import SchemaSet
from gateway.http.plugin import build_routes
from tests.test_bad_input import DOCUMENTED_500

TIMEOUT = 10
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
INT64 = 2**63
UINT64 = 2**64


class Raw:
    """A JSON token written as is: numbers Python cannot write (5,000 digits) or JSON lacks."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"Raw({self.token[:30]!r})"


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.token
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return json.dumps(value)


# --- leaves ---------------------------------------------------------------------------------

BAD_NUMBERS = [Raw("9" * 5000), Raw("-" + "9" * 5000), Raw("1e400"), Raw("-1e400"), Raw("NaN"),
               Raw("Infinity"), Raw("-Infinity"), Raw("1" + "0" * 400), Raw("0." + "1" * 500),
               UINT64, UINT64 - 1, INT64, -INT64 - 1, -1, 1.5, -0.5, 1e300, 1e-300, Raw("1E+2")]
NUMBERS = (st.integers(-10, 70000) | st.integers(-UINT64, UINT64)
           | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(BAD_NUMBERS))
# Strings that mean something to some field (durations, statuses, addresses, verbs, base64).
MEANINGFUL = ["", "5s", "10ms", "1h", "1.5h", "-1s", "0", "15", "1e3", "passing", "warning",
              "critical", "bogus", "127.0.0.1", "::", "0.0.0.0", "dc1", "nope", "serfHealth",
              "fuzz", "fuzz-svc", "fuzz-ttl", "release", "delete", "set", "get", "cas", "lock",
              "unlock", "check-index", "get-tree", "delete-tree", "eA==", "!!", "%ff", "\ud800",
              "x" * 300, "9" * 30 + "s", "1." + "5" * 200 + "s"]
DURATION_FIELDS = {"TTL", "Interval", "Timeout", "DeregisterCriticalServiceAfter", "LockDelay"}
# Fields that make the agent reach out (HTTP, TCP, gRPC, Docker, scripts): keep them harmless.
OUTBOUND = {"HTTP": ["http://127.0.0.1:1/", "https://127.0.0.1:1/x", "", "not a url"],
            "TCP": ["127.0.0.1:1", "", "nohost"], "GRPC": ["127.0.0.1:1", ""],
            "DockerContainerID": ["", "abc"], "Script": ["", "true"], "Shell": ["", "/bin/sh"],
            "Args": [[], ["true"]], "ScriptArgs": [[], ["true"]]}
HUGE_STRINGS = st.integers(10_000, 300_000).map(lambda n: "a" * n)
STRINGS = st.sampled_from(MEANINGFUL) | st.text(max_size=20) | HUGE_STRINGS
DEEP = st.integers(200, 2000).map(lambda n: Raw("[" * n + "]" * n))

any_json = st.recursive(
    st.none() | st.booleans() | NUMBERS | st.text(max_size=12) | st.sampled_from(MEANINGFUL),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
WRONG = any_json | st.sampled_from(BAD_NUMBERS) | HUGE_STRINGS | DEEP


# --- schemas -> strategies --------------------------------------------------------------------


def _spellings(key: str) -> list[str]:
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()
    return [key, key, key.lower(), snake, key.upper()]


class SchemaStrategies:
    """Hypothesis strategies for the documents a schema describes: valid-looking ones
    (`mutate=False`: meaningful values of the right types and ranges) or mutated ones, where one
    value in eight is something else entirely."""

    IMPORTANT = {"Name", "Node", "Address", "Service", "Verb", "Key", "Status", "TTL"}

    def __init__(self, schemas: SchemaSet, mutate: bool) -> None:
        self.schemas = schemas
        self.mutate = mutate

    def resolve(self, schema: dict, file: str | None) -> tuple[dict, str | None]:
        while isinstance(schema, dict) and "$ref" in schema:
            target, _, pointer = schema["$ref"].partition("#")
            file = target or file
            schema = self.schemas.schema(file)
            for part in filter(None, pointer.split("/")):
                schema = schema[part]
        return schema, file

    def strategy(self, schema: dict, file: str | None, name: str = "", depth: int = 0):
        good = self.good(schema, file, name, depth)
        if not self.mutate:
            return good
        return st.integers(0, 7).flatmap(lambda n: WRONG if n == 0 else good)

    def good(self, schema: dict, file: str | None, name: str, depth: int):
        schema, file = self.resolve(schema, file)
        if name in OUTBOUND:
            return st.sampled_from(OUTBOUND[name])
        if not self.mutate and name in ("Name", "Service", "Node", "ID", "CheckID", "ServiceID"):
            return st.sampled_from(["fuzz", "fuzz-svc", "fuzz-ttl", "serfHealth", "oracle"])
        if not self.mutate and name in DURATION_FIELDS:
            return st.sampled_from(["5s", "10m", "1h30m", "100ms", 10**10, "0s", "-1s"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        kinds = schema.get("type")
        if kinds is None:
            return any_json
        if isinstance(kinds, list):
            return st.one_of([self.good({**schema, "type": k}, file, name, depth) for k in kinds])
        if kinds == "object":
            if depth > 3:
                return st.dictionaries(st.text(max_size=5), any_json, max_size=2)
            return self.object(schema, file, depth)
        if kinds == "array":
            items = schema.get("items")
            item = self.strategy(items, file, name, depth + 1) if items else any_json
            return st.lists(item, max_size=3)
        if kinds == "string":
            return STRINGS if self.mutate else (st.sampled_from(MEANINGFUL[:-3])
                                                | st.text(max_size=10))
        if kinds == "integer":
            low, high = schema.get("minimum", -UINT64), schema.get("maximum", UINT64)
            if not self.mutate:
                return st.integers(max(low, 0), min(high, 100)) | st.integers(low, high)
            return (st.integers(low, high) | st.sampled_from([low - 1, high + 1])
                    | st.integers(0, 100))
        if kinds == "number":
            return NUMBERS if self.mutate else st.integers(0, 10**10)
        if kinds == "boolean":
            return st.booleans()
        return any_json

    def object(self, schema: dict, file: str | None, depth: int):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")

        @st.composite
        def draw_object(draw):
            out: dict[str, Any] = {}
            for key, sub in properties.items():
                wanted = 0.8 if key in self.IMPORTANT else 0.25 if self.mutate else 0.12
                if draw(st.integers(0, 99)) >= wanted * 100:
                    continue
                spelled = draw(st.sampled_from(_spellings(key)))
                out[spelled] = draw(self.strategy(sub, file, key, depth + 1))
            if isinstance(extra, dict):
                keys = st.text(max_size=8) if self.mutate else st.sampled_from(
                    ["a", "b_c", "x-y", "lan", "wan"])
                for _ in range(draw(st.integers(0, 2))):
                    out[draw(keys)] = draw(self.strategy(extra, file, "", depth + 1))
            if self.mutate and draw(st.integers(0, 9)) == 0:
                out[draw(st.sampled_from(["Bogus", "", "ID ", "\ud800"]))] = draw(any_json)
            return out
        return draw_object()


# The bodies the handlers decode in code, written as schemas so they are fuzzed the same way.
CHECK_UPDATE = {"type": "object", "properties": {
    "Status": {"enum": ["passing", "warning", "critical", "bogus", ""]},
    "Output": {"type": "string"}}}
SESSION_CREATE = {"type": "object", "properties": {
    "Name": {"type": "string"}, "Node": {"type": "string"},
    "LockDelay": {"type": ["string", "number"]},
    "Behavior": {"enum": ["release", "delete", "", "keep"]},
    "TTL": {"enum": ["", "10s", "30s", "5s", "24h", "25h", "abc", "-20s"]},
    "Checks": {"type": "array", "items": {"enum": ["serfHealth", "fuzz-ttl", "nope"]}},
    "NodeChecks": {"type": "array", "items": {"enum": ["serfHealth", "fuzz-ttl", "nope"]}},
    "ServiceChecks": {"type": "array", "items": {"type": "object", "properties": {
        "ID": {"enum": ["fuzz-ttl", "serfHealth", "nope", ""]}, "Namespace": {"type": "string"}}}},
    "CreateIndex": {"type": "integer", "minimum": 0}}}
TXN = {"type": "array", "items": {"type": "object", "properties": {"KV": {
    "type": "object", "properties": {
        "Verb": {"enum": ["set", "get", "get-tree", "cas", "delete", "delete-tree", "delete-cas",
                          "lock", "unlock", "check-index", "check-session", "check-not-exists",
                          "bogus"]},
        "Key": {"type": "string"}, "Value": {"type": "string"},
        "Flags": {"type": "integer", "minimum": 0, "maximum": UINT64 - 1},
        "Index": {"type": "integer", "minimum": 0, "maximum": UINT64 - 1},
        "Session": {"type": "string"}}}}}}

_SCHEMA_SET = SchemaSet()
VALID_LOOKING = SchemaStrategies(_SCHEMA_SET, mutate=False)
MUTATED = SchemaStrategies(_SCHEMA_SET, mutate=True)
JSON_ROUTES = [
    ("/v1/agent/service/register", "service.json", None),
    ("/v1/agent/check/register", "check.json", None),
    ("/v1/catalog/register", "catalog-register.json", None),
    ("/v1/catalog/deregister", "catalog-deregister.json", None),
    ("/v1/agent/check/update/fuzz-ttl", None, CHECK_UPDATE),
    ("/v1/session/create", None, SESSION_CREATE),
    ("/v1/txn", None, TXN),
]


def _document(file: str | None, inline: dict | None):
    schema = inline if inline is not None else {"$ref": file}
    return VALID_LOOKING.strategy(schema, file) | MUTATED.strategy(schema, file)


json_cases = st.one_of([
    st.tuples(st.just(path), _document(file, inline).map(dump) | any_json.map(dump)
              | st.binary(max_size=64))
    for path, file, inline in JSON_ROUTES])

# Every other route that takes PUT, found in the route table (RouteTable has no public
# listing), with arbitrary bodies; the etcd key space is fuzzed below with its form fields.
_SCHEMA_PATHS = {path for path, _, _ in JSON_ROUTES}
_TABLE = build_routes()


def _covered(route) -> bool:
    if route.prefix:
        return any(p.startswith(route.path) for p in _SCHEMA_PATHS)
    return route.path in _SCHEMA_PATHS


# Leaving ends the agent by design, and a join dials whatever address it is given: both have
# their own tests (tests/test_gossip_agents.py).
NOT_FUZZED = ("/v2/keys", "/v1/agent/leave", "/v1/agent/join/")
OTHER_PUT_PATHS = sorted(
    route.path + ("fuzz" if route.prefix else "")
    for route in [*_TABLE._exact.values(), *_TABLE._prefixes]
    if "PUT" in route.methods and not _covered(route) and not route.path.startswith(NOT_FUZZED))
QUERIES = st.lists(st.tuples(
    st.sampled_from(["enable", "reason", "flags", "cas", "acquire", "release", "note",
                     "replace-existing-checks", "dc", "recurse"]),
    st.sampled_from(["true", "false", "", "1", "x", "9" * 5000, "-1", "nope", "%ff", "fuzz"])),
    max_size=3).map(lambda pairs: urlencode(pairs, safe="%"))
other_cases = st.tuples(st.sampled_from(OTHER_PUT_PATHS), QUERIES,
                        any_json.map(dump) | st.binary(max_size=64) | DEEP.map(dump))

ETCD_FIELDS = ["value", "ttl", "prevValue", "prevIndex", "prevExist", "dir", "refresh",
               "recursive", "sorted", "waitIndex"]
ETCD_VALUES = st.sampled_from(["", "1", "30", "20", "172801", "true", "false", "x", "%ff",
                               "9" * 5000, "-1", "18446744073709551616", "\u00e9"]) | st.text(
    max_size=8)
etcd_cases = st.tuples(
    st.sampled_from(["PUT", "POST", "DELETE", "GET"]),
    st.sampled_from(["/v2/keys/fuzz", "/v2/keys/fuzz/dir", "/v2/keys/", "/v2/keys/fuzz/%ff"]),
    st.lists(st.tuples(st.sampled_from(ETCD_FIELDS), ETCD_VALUES), max_size=4),
    st.booleans())


# --- the properties ---------------------------------------------------------------------------


def assert_acceptable(status: int, data: bytes, what) -> None:
    if status >= 500:
        assert DOCUMENTED_500.match(data), (what, status, data[:300])


@pytest.fixture(scope="module")
def prepared(agent):
    """A TTL check the check-update and session cases can name."""
    status, _, _ = agent.request("PUT", "/v1/agent/check/register",
                                 json.dumps({"Name": "fuzz-ttl", "TTL": "600s",
                                             "Status": "passing"}))
    assert status == 200
    return agent


def check_json_body(agent, case) -> None:
    path, body = case
    status, _, data = agent.request("PUT", path, body, timeout=TIMEOUT)
    assert_acceptable(status, data, (path, body[:300]))


def check_other_put(agent, case) -> None:
    path, query, body = case
    full = f"{path}?{query}" if query else path
    status, _, data = agent.request("PUT", full, body, timeout=TIMEOUT)
    assert_acceptable(status, data, (full[:200], body[:200]))


def check_etcd(agent, case) -> None:
    method, path, fields, as_form = case
    encoded = "&".join(f"{quote(k)}={quote(v, safe='%')}" for k, v in fields)
    if as_form and method in ("PUT", "POST"):
        status, _, data = agent.request(method, path, encoded, FORM, timeout=TIMEOUT)
    else:
        status, _, data = agent.request(method, f"{path}?{encoded}" if encoded else path,
                                        timeout=TIMEOUT)
    assert status < 500, (method, path, fields, data[:300])


FAST = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))


@settings(FAST, max_examples=800)
@given(case=json_cases)
def test_fuzz_json_bodies(prepared, case):
    check_json_body(prepared, case)


@FAST
@given(case=other_cases)
def test_fuzz_other_put_routes(prepared, case):
    check_other_put(prepared, case)


@FAST
@given(case=etcd_cases)
def test_fuzz_etcd_fields(prepared, case):
    check_etcd(prepared, case)


@pytest.mark.slow
@LONG
@given(case=json_cases)
def test_fuzz_json_bodies_long(prepared, case):
    check_json_body(prepared, case)


@pytest.mark.slow
@LONG
@given(case=other_cases)
def test_fuzz_other_put_routes_long(prepared, case):
    check_other_put(prepared, case)


@pytest.mark.slow
@LONG
@given(case=etcd_cases)
def test_fuzz_etcd_fields_long(prepared, case):
    check_etcd(prepared, case)


def test_fuzz_reached_every_route_that_takes_a_body():
    paths = _SCHEMA_PATHS | set(OTHER_PUT_PATHS)
    for must in ("/v1/kv/fuzz", "/v1/agent/maintenance", "/v1/session/renew/fuzz",
                 "/v1/agent/service/maintenance/fuzz"):
        assert must in paths


def test_agent_still_serves_and_logged_no_traceback(prepared):
    status, _, body = prepared.request("GET", "/v1/status/leader", timeout=5)
    assert status == 200 and json.loads(body)
    for path in ("/v1/agent/services", "/v1/agent/checks", "/v1/catalog/services",
                 "/v1/session/list", "/v1/kv/?recurse", "/v2/keys/?recursive=true"):
        status, _, _ = prepared.request("GET", path, timeout=5)
        assert status in (200, 404), path
    log = prepared.log_so_far()
    assert "Traceback" not in log, log[-3000:]
