"""`?filter=`: go-bexpr 0.1.2 as Consul 1.8.7 uses it.

The parser's and the checker's texts below are what a real Consul 1.8.7 answered for the same
expressions (with status 500; we answer 400). The HTTP tests mirror py-consul's own filter tests
against a real `waypost agent -dev`, one per filtering endpoint.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.filter import (CHECK_SERVICE_NODE, HEALTH_CHECK, NODE, NODE_SERVICE, PREFIX,
                          SERVICE_NODE, FilterError, coerce_int, compile_filter, go_quote)

# --- rows in the JSON shape the handlers encode -------------------------------------------

WEB1 = {"ID": "web1", "Service": "web", "Tags": ["keep-me", "v1"], "Meta": {"env": "prod"},
        "Port": 80, "Address": "", "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": True}
WEB2 = {"ID": "web2", "Service": "web", "Tags": ["v2"], "Meta": {"env": "dev"}, "Port": 81,
        "Address": "", "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False}
DB = {"ID": "db", "Service": "db", "Tags": [], "Meta": {}, "Port": 5432, "Address": "",
      "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 5432}},
      "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False}
SERVICES = {"db": DB, "web1": WEB1, "web2": WEB2}


def kept(expression: str, rows=SERVICES, schema=NODE_SERVICE) -> list[str]:
    found = compile_filter(expression, schema).select_values(rows)
    return sorted(found)


def error_of(expression: str, schema=NODE_SERVICE) -> str:
    with pytest.raises(FilterError) as caught:
        compile_filter(expression, schema)
    return str(caught.value)


# --- the parser: Consul 1.8.7's own error texts -------------------------------------------

PARSE_ERRORS = [
    ("=", '1:1 (0): no match found, expected: "(", "-", "0", "\\"", "`", "not", [ \\t\\r\\n], '
          '[1-9] or [a-zA-Z]'),
    ("(", '1:2 (1): no match found, expected: "(", "-", "0", "\\"", "`", "not", [ \\t\\r\\n], '
          '[1-9] or [a-zA-Z]'),
    ("   ", '1:4 (3): no match found, expected: "(", "-", "0", "\\"", "`", "not", [ \\t\\r\\n], '
            '[1-9] or [a-zA-Z]'),
    ("a", '1:2 (1): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or [a-zA-Z0-9_]'),
    ("garbage ((", '1:9 (8): no match found, expected: "!=", "==", "contains", "in", "is", '
                   '"matches", "not" or [ \\t\\r\\n]'),
    ("Service ==", '1:11 (10): no match found, expected: "-", "0", "\\"", "`", [ \\t\\r\\n], '
                   '[1-9] or [a-zA-Z]'),
    ("Service == 'web'", '1:12 (11): no match found, expected: "-", "0", "\\"", "`", '
                         '[ \\t\\r\\n], [1-9] or [a-zA-Z]'),
    ("Service == web)", '1:15 (14): no match found, expected: ".", "[", [ \\t\\r\\n], '
                        '[a-zA-Z0-9_] or EOF'),
    ("Service == 5)", '1:13 (12): no match found, expected: ".", [ \\t\\r\\n], [0-9] or EOF'),
    ("Service == web AND Port == 80", '1:16 (15): no match found, expected: "and", "or", '
                                      '[ \\t\\r\\n] or EOF'),
    ('Service == "web" and', "1:21 (20): no match found, expected: [ \\t\\r\\n]"),
    ("Service == -", '1:13 (12): no match found, expected: "0" or [1-9]'),
    ("(Service == web", '1:16 (15): rule "grouping": Unmatched parentheses'),
    ("(Service == web or (Port == 1)", '1:31 (30): rule "grouping": Unmatched parentheses'),
    ("Meta[env] == prod", '1:6 (5): rule "index": Invalid index'),
    ('Meta["env" == "prod"', '1:12 (11): rule "index": Unclosed index expression'),
    ('Meta["abc', '1:10 (9): rule "string": Unterminated string literal\n'
                 '1:6 (5): rule "index": Invalid index'),
    ('"x" in 5', '1:8 (7): rule "match": Invalid selector'),
    ("Port == 0x50", '1:10 (9): rule "number": Invalid number literal'),
    ("Service==5and", '1:11 (10): rule "number": Invalid number literal'),
    ('Service == "web', '1:16 (15): rule "string": Unterminated string literal'),
    ('Service == "\\q"', '1:12 (11): rule "string": invalid syntax'),
    ('Service == "a\\"b"', '1:12 (11): rule "string": invalid syntax'),  # "a\" ends the string
    ('Service == "\\q" and Port == "\\z" or Meta[x] == 1',
     '1:12 (11): rule "string": invalid syntax\n1:29 (28): rule "string": invalid syntax\n'
     '1:42 (41): rule "index": Invalid index'),
    ("Service == web\n and x", '2:7 (21): no match found, expected: "!=", ".", "==", "[", '
                               '[ \\t\\r\\n] or [a-zA-Z0-9_]'),
    ('Service == "日本" x', '1:17 (20): no match found, expected: "and", "or", [ \\t\\r\\n] '
                          'or EOF'),  # columns count runes, offsets bytes
]


@pytest.mark.parametrize("expression,message", PARSE_ERRORS)
def test_parse_errors_are_bexprs(expression, message):
    assert error_of(expression) == PREFIX + message


CHECK_ERRORS = [
    ("Bogus == 1", 'Selector "Bogus" is not valid'),
    ("Port == 1 and Bogus == 2", 'Selector "Bogus" is not valid'),
    ("Proxy.Config == 1", 'Selector "Proxy.Config" is not valid'),
    ("Meta.a.b == 1", 'Selector "Meta.a.b" is not valid'),
    ("Tags == 1", 'Invalid match operator "Equal" for selector "Tags"'),
    ("Weights is empty", 'Invalid match operator "Is Empty" for selector "Weights"'),
    ("Meta.missing is empty", 'Invalid match operator "Is Empty" for selector "Meta.missing"'),
    ('Port == "abc"', 'Failed to coerce value "abc" for selector "Port": strconv.ParseInt: '
                      'parsing "abc": invalid syntax'),
    ("Port == 99999999999999999999", 'Failed to coerce value "99999999999999999999" for '
     'selector "Port": strconv.ParseInt: parsing "99999999999999999999": value out of range'),
    ("EnableTagOverride == yes", 'Failed to coerce value "yes" for selector '
     '"EnableTagOverride": strconv.ParseBool: parsing "yes": invalid syntax'),
    ('Port == "\u007f\u0080"', 'Failed to coerce value "\\u007f\\u0080" for selector "Port": '
     'strconv.ParseInt: parsing "\\u007f\\u0080": invalid syntax'),
    ('Service matches "("', 'Failed to compile regular expression "(": error parsing regexp: '
                            'missing closing ): `(`'),
    ('Service matches "(?=x)"', 'Failed to compile regular expression "(?=x)": error parsing '
                                'regexp: invalid or unsupported Perl syntax: `(?=`'),
    ('Service matches "(?<n>a)"', 'Failed to compile regular expression "(?<n>a)": error '
                                  'parsing regexp: invalid or unsupported Perl syntax: `(?<`'),
    ('Service matches "a**"', 'Failed to compile regular expression "a**": error parsing '
                              'regexp: invalid nested repetition operator: `**`'),
    ('Service matches "\\\\"', 'Failed to compile regular expression "\\\\": error parsing '
                               'regexp: trailing backslash at end of expression: ``'),
    ('Service matches "\\\\C"', 'Failed to compile regular expression "\\\\C": error parsing '
                                'regexp: invalid escape sequence: `\\C`'),
    ('Service matches "[[:foo:]]"', 'Failed to compile regular expression "[[:foo:]]": error '
                                    'parsing regexp: invalid character class range: `[:foo:]`'),
    ('Service matches "x{1001}"', 'Failed to compile regular expression "x{1001}": error '
                                  'parsing regexp: invalid repeat count: `{1001}`'),
]


@pytest.mark.parametrize("expression,message", CHECK_ERRORS)
def test_selector_operator_value_and_regex_errors_are_bexprs(expression, message):
    assert error_of(expression) == PREFIX + message


def test_an_empty_expression_is_no_filter():
    assert compile_filter("", NODE_SERVICE) is None


def test_lazy_filters_check_only_when_there_is_a_row_and_say_so_without_the_prefix():
    # /v1/agent/checks: Consul builds the filter untyped and checks it on the first check.
    lazy = compile_filter("Bogus == 1", HEALTH_CHECK, lazy=True)
    assert lazy.select_values({}) == {}
    with pytest.raises(FilterError) as caught:
        lazy.select_values({"c": {"CheckID": "c"}})
    assert str(caught.value) == 'Selector "Bogus" is not valid'
    with pytest.raises(FilterError) as caught:  # a parse error still comes at once
        compile_filter("Bogus ==", HEALTH_CHECK, lazy=True)
    assert str(caught.value).startswith(PREFIX + "1:9 (8): no match found")


def test_pathological_input_is_refused_not_hung():
    assert "nests too deeply" in error_of("(" * 5000 + "ID == a" + ")" * 5000)
    assert "longer than" in error_of("ID == a or " * 10000 + "ID == b")
    # A long flat chain is fine: it does not nest.
    assert kept(" or ".join(f'ID == "x{i}"' for i in range(2000)) + " or ID == db") == ["db"]


# --- evaluation ----------------------------------------------------------------------------

@pytest.mark.parametrize("expression,expected", [
    ('"keep-me" in Tags', ["web1"]),
    ('Tags contains "v2"', ["web2"]),
    ('"v1" not in Tags', ["db", "web2"]),
    ('Tags not contains "v1"', ["db", "web2"]),
    ("Tags is empty", ["db"]),
    ("Tags is not empty", ["web1", "web2"]),
    ("Service == web", ["web1", "web2"]),
    ('Service != "web"', ["db"]),
    ('"e" in Service', ["web1", "web2"]),  # a substring of a string field
    ('Service matches "^w.b$"', ["web1", "web2"]),
    ('Service not matches "^w"', ["db"]),
    ("Port == 80", ["web1"]),
    ('Port == "+80"', ["web1"]),
    ('Port == "0x50"', ["web1"]),  # ParseInt with base 0: prefixes and separators
    ('Port == "0b101_0000"', ["web1"]),
    ("Port != 80", ["db", "web2"]),
    ("EnableTagOverride == true", ["web1"]),
    ("EnableTagOverride == T", ["web1"]),
    ("EnableTagOverride != 1", ["db", "web2"]),
    ("Meta.env == prod", ["web1"]),
    ('Meta["env"] == `dev`', ["web2"]),
    ('"env" in Meta', ["web1", "web2"]),
    ("Meta is empty", ["db"]),
    # A key a map lacks: ==, in and `is not empty` are false, every other operator true.
    ("Meta.missing == x", []),
    ("Meta.missing != x", ["db", "web1", "web2"]),
    ('Meta.missing matches "x"', ["db", "web1", "web2"]),
    ('"x" not in Meta.missing', ["db", "web1", "web2"]),
    ('TaggedAddresses.lan.Address == "10.0.0.1"', ["db"]),
    ("TaggedAddresses.lan.Port == 5432", ["db"]),
    ('"lan" in TaggedAddresses', ["db"]),
    # Fields the JSON leaves out have Go's zero values.
    ('Kind == ""', ["db", "web1", "web2"]),
    ("Connect.Native == false", ["db", "web1", "web2"]),
    ("Proxy.Upstreams is empty", ["db", "web1", "web2"]),
    ('Proxy.Upstreams.DestinationName != "x"', []),  # any element of no elements
    ("Weights.Passing == 1", ["db", "web1", "web2"]),
    # Precedence: not, then and, then or; parentheses group.
    ("Service == web and Port == 80 or Port == 5432", ["db", "web1"]),
    ("Service == web and (Port == 80 or Port == 5432)", ["web1"]),
    ("not Service == web", ["db"]),
    ("not not Service == web", ["web1", "web2"]),
    ("not (Service == web) or Port == 81", ["db", "web2"]),
    ("(Service == web)", ["web1", "web2"]),
    ('Service == "w\\u0065b"', ["web1", "web2"]),
    ('Service == "\\x77\\145b"', ["web1", "web2"]),
    ("Service == `web`", ["web1", "web2"]),
    ("Service == web.x", []),  # a bare value is a selector's text
])
def test_operators_on_agent_services(expression, expected):
    assert kept(expression) == expected


CHECKS = [
    {"Node": "n1", "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
     "Notes": "", "Output": "", "ServiceID": "", "ServiceName": "", "ServiceTags": [],
     "Type": "", "Definition": {}, "CreateIndex": 1, "ModifyIndex": 1},
    {"Node": "n1", "CheckID": "c-web1", "Name": "web", "Status": "critical", "Notes": "",
     "Output": "", "ServiceID": "web1", "ServiceName": "web", "ServiceTags": ["v1"],
     "Type": "ttl", "Definition": {}, "CreateIndex": 2, "ModifyIndex": 2},
]
NODE_ROW = {"ID": "", "Node": "n1", "Address": "10.1.1.1", "Datacenter": "dc1",
            "TaggedAddresses": None, "Meta": {"env": "prod"}, "CreateIndex": 1}


def test_health_service_rows_select_into_lists_as_any_element():
    rows = [{"Node": NODE_ROW, "Service": WEB1, "Checks": CHECKS},
            {"Node": NODE_ROW, "Service": WEB2, "Checks": CHECKS[:1]}]

    def ids(expression):
        found = compile_filter(expression, CHECK_SERVICE_NODE).select(rows)
        return [row["Service"]["ID"] for row in found]
    assert ids("Checks.Status == critical") == ["web1"]
    assert ids("Checks.Status != critical") == ["web1", "web2"]  # any, not all
    assert ids("Checks.Status == passing") == ["web1", "web2"]
    assert ids('"v1" in Checks.ServiceTags') == ["web1"]
    assert ids('"keep-me" in Service.Tags and Node.Meta.env == prod') == ["web1"]
    assert ids("Node.TaggedAddresses is empty") == ["web1", "web2"]  # null is an empty map
    assert error_of("Checks == 1", CHECK_SERVICE_NODE) == (
        PREFIX + 'Invalid match operator "Equal" for selector "Checks"')
    assert error_of("Checks.CreateIndex == 1", CHECK_SERVICE_NODE) == (
        PREFIX + 'Selector "Checks.CreateIndex" is not valid')


def test_checks_and_nodes_and_service_nodes():
    f = compile_filter('Type == ttl and ServiceName matches "^w"', HEALTH_CHECK)
    assert [c["CheckID"] for c in f.select(CHECKS)] == ["c-web1"]
    assert compile_filter("Meta.env == prod and TaggedAddresses is empty", NODE).select(
        [NODE_ROW]) == [NODE_ROW]
    assert "Definition" in error_of("Definition == 1", HEALTH_CHECK)
    row = {"Node": "n1", "ServiceID": "web1", "ServiceTags": ["v1"], "NodeMeta": None,
           "ServiceMeta": {"a": "b"}, "ServicePort": 80, "ServiceWeights": {"Passing": 1}}
    f = compile_filter('ServiceMeta.a == b and ServicePort == 80 and NodeMeta is empty '
                       'and ServiceWeights.Warning == 0', SERVICE_NODE)
    assert f.select([row]) == [row]


def test_go_spellings():
    assert go_quote('a"\\\n\x01\x7f\u00a0é😀') == '"a\\"\\\\\\n\\x01\\u007f\\u00a0é😀"'
    assert coerce_int("-9223372036854775808") == -(1 << 63)
    assert coerce_int("0o17") == 15 and coerce_int("017") == 15 and coerce_int("0") == 0
    for bad, reason in (("9223372036854775808", "value out of range"), ("08", "invalid syntax"),
                        ("_1", "invalid syntax"), ("0x", "invalid syntax"), ("", "invalid syntax"),
                        ("1__0", "invalid syntax"), ("99999999999999999999x", "value out of range")):
        with pytest.raises(ValueError) as caught:
            coerce_int(bad)
        assert str(caught.value) == f'strconv.ParseInt: parsing "{bad}": {reason}'


# --- random input never raises anything but FilterError -----------------------------------

TOKENS = ["Service", "Tags", "Meta", "Meta.env", "Port", "Checks.Status", "Proxy.Upstreams",
          "TaggedAddresses.lan.Port", "Weights", "ID", "==", "!=", "in", "not", "contains",
          "matches", "is", "empty", "and", "or", "(", ")", "[", "]", '"', "`", '"web"',
          '"(a+)+$"', "`x`", "-", "0", "80", "1.5", "0x1", "true", ".", "\\", "\n", " ", "é"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=3)), max_size=14)
       .map(" ".join),
       st.sampled_from([NODE_SERVICE, CHECK_SERVICE_NODE, HEALTH_CHECK, NODE, SERVICE_NODE]),
       st.booleans())
def test_random_expressions_raise_only_filter_errors(expression, schema, lazy):
    try:
        found = compile_filter(expression, schema, lazy)
        if found is not None:
            found.select([{}, WEB1, DB, {"Node": NODE_ROW, "Service": WEB1, "Checks": CHECKS},
                          CHECKS[1], {"Meta": None, "Tags": None, "Checks": None}])
            found.select_values(SERVICES)
    except FilterError as exc:
        str(exc).encode("utf-8")  # the HTTP layer sends it as UTF-8


# --- over HTTP against a real agent (py-consul's filter tests) -----------------------------

def get(agent, path: str, expression: str, extra: str = ""):
    status, headers, body = agent.request("GET", f"{path}?filter={quote(expression)}{extra}")
    data = json.loads(body) if headers.get("Content-Type", "").startswith("application/json") \
        else body.decode()
    return status, headers, data


def register(agent, body: dict) -> None:
    status, _, data = agent.request("PUT", "/v1/agent/service/register", json.dumps(body))
    assert status == 200, data


def test_http_agent_checks_filter_is_lazy_like_consuls(agent):
    # Run first: the agent has no local check yet, so nothing is checked (Consul: 200 {}).
    assert get(agent, "/v1/agent/checks", "Bogus == 1")[::2] == (200, {})
    assert get(agent, "/v1/agent/checks", "Bogus ==")[0] == 400


def test_http_agent_services_and_checks(agent):
    register(agent, {"Name": "filtered-foo", "Tags": ["keep-me"],
                     "Check": {"TTL": "1h", "CheckID": "foo-ttl", "Status": "passing"}})
    register(agent, {"Name": "filtered-bar", "Tags": ["skip-me"]})
    status, _, found = get(agent, "/v1/agent/services", '"keep-me" in Tags')
    assert status == 200 and set(found) == {"filtered-foo"}
    status, _, found = get(agent, "/v1/agent/checks", "Status == `passing`")
    assert status == 200 and set(found) == {"foo-ttl"}
    assert get(agent, "/v1/agent/checks", "Status == critical")[::2] == (200, {})
    status, _, text = get(agent, "/v1/agent/checks", "Bogus == 1")
    assert (status, text) == (400, 'Selector "Bogus" is not valid')  # no prefix, as Consul
    status, _, text = get(agent, "/v1/agent/services", "Bogus == 1")
    assert (status, text) == (400, PREFIX + 'Selector "Bogus" is not valid')


def test_http_health_endpoints(agent):
    for sid, tag in (("foo:1", "tag:foo:1"), ("foo:2", "tag:foo:2")):
        register(agent, {"Name": "foo", "ID": sid, "Tags": [tag],
                         "Check": {"TTL": "1h", "CheckID": f"service:{sid}"}})
    assert agent.request("PUT", "/v1/agent/check/pass/service:foo:1")[0] == 200

    status, _, rows = get(agent, "/v1/health/service/foo", '"tag:foo:1" in Service.Tags')
    assert status == 200 and [r["Service"]["ID"] for r in rows] == ["foo:1"]
    assert get(agent, "/v1/health/service/foo", '"tag:nope" in Service.Tags')[::2] == (200, [])
    status, _, rows = get(agent, "/v1/health/service/foo", "Checks.Status == critical")
    assert [r["Service"]["ID"] for r in rows] == ["foo:2"]

    status, _, rows = get(agent, "/v1/health/state/passing", 'ServiceID == "foo:1"')
    assert status == 200 and [r["ServiceID"] for r in rows] == ["foo:1"]
    assert get(agent, "/v1/health/state/passing", 'ServiceID == "nope"')[::2] == (200, [])

    status, _, rows = get(agent, "/v1/health/checks/foo", 'CheckID == "service:foo:2"')
    assert status == 200 and [r["CheckID"] for r in rows] == ["service:foo:2"]
    assert get(agent, "/v1/health/checks/foo", 'CheckID == "nope"')[::2] == (200, [])

    status, _, rows = get(agent, f"/v1/health/node/{agent.node}", 'Node == "does-not-exist"')
    assert (status, rows) == (200, [])
    status, _, rows = get(agent, f"/v1/health/node/{agent.node}", f'Node == "{agent.node}"')
    assert status == 200 and rows and {r["Node"] for r in rows} == {agent.node}


def test_http_catalog_endpoints(agent):
    body = {"Node": "filter-ext", "Address": "10.9.9.9", "NodeMeta": {"rack": "r9"},
            "Service": {"Service": "filter-svc", "ID": "fs1", "Port": 6379, "Tags": ["a"]}}
    assert agent.request("PUT", "/v1/catalog/register", json.dumps(body))[0] == 200
    body["Service"] = {"Service": "filter-svc", "ID": "fs2", "Port": 6380, "Tags": ["b"]}
    assert agent.request("PUT", "/v1/catalog/register", json.dumps(body))[0] == 200

    status, _, rows = get(agent, "/v1/catalog/nodes", "Meta.rack == r9")
    assert status == 200 and [r["Node"] for r in rows] == ["filter-ext"]
    status, _, rows = get(agent, "/v1/catalog/service/filter-svc", "ServicePort == 6380")
    assert status == 200 and [r["ServiceID"] for r in rows] == ["fs2"]
    status, _, found = get(agent, "/v1/catalog/node/filter-ext", '"a" in Tags')
    assert status == 200 and list(found["Services"]) == ["fs1"]
    assert found["Node"]["Node"] == "filter-ext"
    assert get(agent, "/v1/catalog/node/nope", "Port == 1")[::2] == (200, None)
    # 1.8.7 does not filter /v1/catalog/services: the parameter is ignored there.
    status, _, found = get(agent, "/v1/catalog/services", "garbage ((")
    assert status == 200 and "filter-svc" in found


@pytest.mark.parametrize("path", ["/v1/catalog/nodes", "/v1/catalog/service/x",
                                  "/v1/catalog/node/x", "/v1/health/node/x",
                                  "/v1/health/checks/x", "/v1/health/service/x",
                                  "/v1/health/state/any", "/v1/agent/services"])
def test_http_bad_expressions_are_400_with_bexprs_text(agent, path):
    status, headers, text = get(agent, path, "garbage ((")
    assert status == 400 and headers["Content-Type"].startswith("text/plain")
    assert text == PREFIX + ('1:9 (8): no match found, expected: "!=", "==", "contains", "in", '
                             '"is", "matches", "not" or [ \\t\\r\\n]')
    status, _, text = get(agent, path, 'Bogus matches "("')
    assert (status, text) == (400, PREFIX + 'Selector "Bogus" is not valid')


def test_http_filtered_reads_report_the_whole_results_index_and_block_on_it(agent):
    register(agent, {"Name": "blockf", "ID": "blockf-1", "Tags": ["keep"]})
    path = "/v1/catalog/service/blockf"
    _, plain, _ = agent.request("GET", path)
    status, headers, rows = get(agent, path, '"keep" in ServiceTags')
    assert status == 200 and headers["X-Consul-Index"] == plain["X-Consul-Index"]
    index = headers["X-Consul-Index"]
    # A change the filter hides still moves the index; the blocked read answers with it.
    register(agent, {"Name": "blockf", "ID": "blockf-2", "Tags": ["drop"]})
    status, headers, rows = get(agent, path, '"keep" in ServiceTags', f"&index={index}&wait=5s")
    assert status == 200 and int(headers["X-Consul-Index"]) > int(index)
    assert [r["ServiceID"] for r in rows] == ["blockf-1"]
    # And the same read without a filter is not answered from the filtered one's cache.
    _, _, body = agent.request("GET", path)
    assert sorted(r["ServiceID"] for r in json.loads(body)) == ["blockf-1", "blockf-2"]
