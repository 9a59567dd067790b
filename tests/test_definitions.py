"""Tests for agent.schemas and agent.definitions: spelling, validation, Consul's rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from agent import structs
from agent.definitions import (
    CatalogDeregistration,
    CheckSpec,
    normalize_keys,
    parse_catalog_deregister,
    parse_catalog_register,
    parse_check_definition,
    parse_duration,
    parse_service_definition,
)
from agent.errors import InvalidRequest
from agent.schemas import SCHEMA_DIR, SchemaSet, fold


STATUSES = "['passing', 'warning', 'critical', '']"


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet()


def service(doc, schemas):
    return parse_service_definition(doc, schemas)


def error_of(call, *args) -> str:
    with pytest.raises(InvalidRequest) as info:
        call(*args)
    return str(info.value)


# -- key normalisation -----------------------------------------------------------------------


def test_lower_case_service_definition_is_canonicalised(schemas):
    doc = {"name": "web", "port": 80, "check": {"ttl": "10s"}}
    assert normalize_keys(doc, "service", schemas) == {
        "Name": "web", "Port": 80, "Check": {"TTL": "10s"},
    }


def test_snake_case_aliases(schemas):
    doc = {
        "id": "web1", "name": "web", "enable_tag_override": True,
        "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 80}},
        "checks": [{
            "check_id": "c1", "http": "http://localhost/", "interval": "10s",
            "tls_skip_verify": True, "deregister_critical_service_after": "1m",
            "success_before_passing": 2, "failures_before_critical": 3,
        }, {
            "args": ["true"], "interval": "5s", "docker_container_id": "abc", "shell": "/bin/sh",
        }, {"grpc": "localhost:9000", "grpc_use_tls": True, "interval": "1s"},
            {"alias_node": "n1", "alias_service": "db"}, {"script_args": ["x"], "interval": "1s"}],
    }
    assert normalize_keys(doc, "service", schemas) == {
        "ID": "web1", "Name": "web", "EnableTagOverride": True,
        "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}},
        "Checks": [{
            "CheckID": "c1", "HTTP": "http://localhost/", "Interval": "10s",
            "TLSSkipVerify": True, "DeregisterCriticalServiceAfter": "1m",
            "SuccessBeforePassing": 2, "FailuresBeforeCritical": 3,
        }, {
            "Args": ["true"], "Interval": "5s", "DockerContainerID": "abc", "Shell": "/bin/sh",
        }, {"GRPC": "localhost:9000", "GRPCUseTLS": True, "Interval": "1s"},
            {"AliasNode": "n1", "AliasService": "db"}, {"ScriptArgs": ["x"], "Interval": "1s"}],
    }


def test_catalog_snake_case_aliases(schemas):
    doc = {"node": "n1", "address": "10.0.0.9", "node_meta": {"Rack_ID": "r1"},
           "skip_node_update": True, "tagged_addresses": {"WAN": "1.2.3.4"},
           "check": {"check_id": "c", "service_id": "s", "definition": {"tcp": "x:1"}}}
    assert normalize_keys(doc, "catalog-register", schemas) == {
        "Node": "n1", "Address": "10.0.0.9", "NodeMeta": {"Rack_ID": "r1"},
        "SkipNodeUpdate": True, "TaggedAddresses": {"WAN": "1.2.3.4"},
        "Check": {"CheckID": "c", "ServiceID": "s", "Definition": {"TCP": "x:1"}},
    }


def test_user_map_keys_are_kept_as_written(schemas):
    doc = {"Name": "web", "meta": {"check_id": "1", "NAME": "x"},
           "check": {"ttl": "1s", "header": {"x_request_id": ["a"], "http": ["b"]}}}
    out = normalize_keys(doc, "service", schemas)
    assert out["Meta"] == {"check_id": "1", "NAME": "x"}
    assert out["Check"]["Header"] == {"x_request_id": ["a"], "http": ["b"]}


def test_unknown_keys_are_kept_for_the_schema_to_report(schemas):
    assert normalize_keys({"Name": "a", "bogus_field": 1}, "service", schemas) == {
        "Name": "a", "bogus_field": 1,
    }


def test_null_known_field_means_absent(schemas):
    assert normalize_keys({"Name": "a", "Tags": None, "Check": None}, "service", schemas) == {
        "Name": "a"
    }


def test_normalisation_does_not_touch_the_input(schemas):
    doc = {"name": "web", "checks": [{"ttl": "1s"}], "meta": {"k": "v"}}
    before = copy.deepcopy(doc)
    normalize_keys(doc, "service", schemas)
    parse_service_definition(doc, schemas)
    assert doc == before


def test_two_spellings_of_one_field_are_refused(schemas):
    message = error_of(normalize_keys, {"Name": "a", "name": "b"}, "service", schemas)
    assert message == 'Duplicate field "Service.Name"'


def test_default_schema_set_is_used_without_one():
    assert normalize_keys({"node": "n"}, "catalog-deregister") == {"Node": "n"}


@pytest.mark.parametrize("name", ["service", "check", "catalog-register", "catalog-deregister"])
def test_every_schema_field_is_reachable_by_folded_spelling(schemas, name):
    """The names come from the schema files themselves: each folds back to its canonical form."""
    properties = schemas.schema(name)["properties"]
    doc = {fold(key): "x" for key in properties}
    assert set(normalize_keys(doc, name, schemas)) == set(properties)


# -- schema validation -----------------------------------------------------------------------


@pytest.mark.parametrize("doc, message", [
    ({"Name": "web", "Port": "abc"},
     """Invalid field "Service.Port": 'abc' is not of type 'integer'"""),
    ({"Name": "web", "Bogus": 1}, 'Unknown field "Service.Bogus"'),
    ({"name": "web", "check": {"ttl": "1s", "colour": "red"}},
     'Unknown field "Service.Check.colour"'),
    ({"Name": "web", "Port": 70000},
     'Invalid field "Service.Port": 70000 is greater than the maximum of 65535'),
    ({"Name": "web", "Tags": "a"},
     """Invalid field "Service.Tags": 'a' is not of type 'array'"""),
    ({"Name": "web", "Meta": {"a": 1}},
     """Invalid field "Service.Meta.a": 1 is not of type 'string'"""),
    ({"Name": "web", "Checks": [{"TTL": "1s"}, {"TTL": "1s", "Status": "ok"}]},
     f"""Invalid field "Service.Checks[1].Status": 'ok' is not one of {STATUSES}"""),
    ({"Name": "web", "EnableTagOverride": "yes"},
     """Invalid field "Service.EnableTagOverride": 'yes' is not of type 'boolean'"""),
    ({"Name": "web", "Weights": {"Passing": -1}},
     'Invalid field "Service.Weights.Passing": -1 is less than the minimum of 0'),
    ({"Name": "web", "TaggedAddresses": {"lan": {"Adress": "x"}}},
     'Unknown field "Service.TaggedAddresses.lan.Adress"'),
    ({"Name": "web", "Check": {"TTL": True}},
     """Invalid field "Service.Check.TTL": True is not of type 'string', 'number'"""),
    (["web"], """Invalid field "Service": ['web'] is not of type 'object'"""),
])
def test_schema_errors_name_the_field(schemas, doc, message):
    assert error_of(service, doc, schemas) == message


def test_catalog_schema_errors_name_the_field(schemas):
    assert error_of(parse_catalog_register, {"Node": 1}, schemas, "dc1") == (
        """Invalid field "Node": 1 is not of type 'string'"""
    )
    assert error_of(parse_catalog_register, {"Node": "n", "Nodes": []}, schemas, "dc1") == (
        'Unknown field "Nodes"'
    )
    assert error_of(parse_catalog_register, "x", schemas, "dc1") == (
        "Invalid request body: 'x' is not of type 'object'"
    )
    assert error_of(parse_catalog_deregister, {"Node": "n", "WriteRequest": {"X": 1}},
                    schemas) == 'Unknown field "WriteRequest.X"'


def test_schema_set_compiles_each_schema_once(schemas):
    assert schemas._validator("service") is schemas._validator("service.json")
    assert schemas.schema("check") is schemas.schema("check.json")


def test_schema_set_reads_another_directory(tmp_path: Path):
    (tmp_path / "thing.json").write_text(json.dumps({
        "type": "object", "additionalProperties": False, "x-field-prefix": "Thing",
        "properties": {"Size": {"type": "integer"}},
    }))
    other = SchemaSet(tmp_path)
    assert other.normalize_keys("thing", {"size": 1}) == {"Size": 1}
    assert error_of(other.validate, "thing", {"Size": "big"}) == (
        """Invalid field "Thing.Size": 'big' is not of type 'integer'"""
    )
    with pytest.raises(FileNotFoundError):
        other.validate("service", {})


def test_default_directory_is_the_repositorys_schemas_folder():
    assert SCHEMA_DIR == Path(__file__).resolve().parent.parent / "schemas"


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0), ("-0", 0.0), ("+0", 0.0), ("0s", 0.0), ("10s", 10.0), ("300ms", 0.3),
    ("1.5h", 5400.0), ("2h45m15s", 9915.0), ("1m30s", 90.0), ("1h1h", 7200.0), (".5s", 0.5),
    ("1.s", 1.0), ("+5s", 5.0), ("100ns", 1e-7), ("3us", 3e-6), ("3\u00b5s", 3e-6),
    ("3\u03bcs", 3e-6), ("1.000000001s", 1.000000001), ("2562047h", 2562047 * 3600.0),
    (10_000_000_000, 10.0), (1, 1e-9), (1.9, 1e-9), (0, 0.0), (2.5e9, 2.5),
])
def test_good_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("value, message", [
    ("", 'invalid duration ""'),
    ("abc", 'invalid duration "abc"'),
    ("10", 'invalid duration "10": missing unit'),
    ("0.0", 'invalid duration "0.0": missing unit'),
    ("10x", 'invalid duration "10x": unknown unit "x"'),
    ("10 s", 'invalid duration "10 s": unknown unit " s"'),
    ("1d", 'invalid duration "1d": unknown unit "d"'),
    (".s", 'invalid duration ".s"'),
    ("s", 'invalid duration "s"'),
    ("-", 'invalid duration "-"'),
    ("-1s", 'invalid duration "-1s": must not be negative'),
    ("9999999h", 'invalid duration "9999999h": out of range'),
    (-5, "invalid duration -5: must not be negative"),
    (True, "invalid duration True"),
    (None, "invalid duration None"),
    ([1], "invalid duration [1]"),
    (float("nan"), "invalid duration nan"),
])
def test_bad_durations(value, message):
    assert error_of(parse_duration, value) == message


def test_bad_duration_in_a_definition_names_the_field(schemas):
    doc = {"Name": "web", "Checks": [{"TTL": "1s"}, {"HTTP": "http://x", "Interval": "10"}]}
    assert error_of(service, doc, schemas) == (
        'Invalid field "Service.Checks[1].Interval": invalid duration "10": missing unit'
    )
    assert error_of(parse_check_definition, {"Name": "c", "TTL": "-1s"}, schemas) == (
        'Invalid field "Check.TTL": invalid duration "-1s": must not be negative'
    )
    doc = {"Node": "n", "Address": "a", "Check": {"Name": "c", "Definition": {"Timeout": "x"}}}
    assert error_of(parse_catalog_register, doc, schemas, "dc1") == (
        'Invalid field "Check.Definition.Timeout": invalid duration "x"'
    )


# -- service definitions ---------------------------------------------------------------------


def test_reference_web1_registration(schemas):
    # Body of 09_agent_service_register_web1 against Consul 1.8.7.
    result = service({"ID": "web1", "Name": "web", "Tags": ["primary", "v1"],
                      "Address": "127.0.0.1", "Port": 8080, "Meta": {"version": "1.0"},
                      "Check": {"TTL": "30s"}}, schemas)
    assert result.service == structs.Service(
        node="", id="web1", name="web", tags=("primary", "v1"), address="127.0.0.1",
        port=8080, meta={"version": "1.0"},
    )
    assert result.checks == (CheckSpec(
        check_id="service:web1", name="Service 'web' check", service_id="web1",
        status="critical", ttl=30.0, type="ttl",
    ),)


def test_reference_web2_registration_keeps_id_name_and_notes(schemas):
    result = service({"ID": "web2", "Name": "web", "Tags": ["secondary"], "Port": 8081,
                      "Checks": [{"CheckID": "web2-ttl", "Name": "web2 ttl", "TTL": "60s",
                                  "Notes": "second"}]}, schemas)
    (check,) = result.checks
    assert (check.check_id, check.name, check.notes, check.ttl, check.service_id) == (
        "web2-ttl", "web2 ttl", "second", 60.0, "web2")


def test_service_defaults(schemas):
    result = service({"Name": "db", "Port": 5432, "Tags": ["pg"]}, schemas)
    assert result.service.id == "db"
    assert result.service.weights == structs.Weights(1, 1)
    assert result.service.enable_tag_override is False
    assert result.service.meta == {} and result.service.tagged_addresses == {}
    assert result.checks == () and result.token == ""


def test_service_fields(schemas):
    result = service({
        "name": "web", "port": 80.0, "kind": "", "token": "t", "enable_tag_override": True,
        "weights": {"passing": 3, "warning": 2},
        "tagged_addresses": {"wan": {"address": "1.2.3.4", "port": 8080}},
        "connect": {"native": False}, "proxy": {}, "namespace": "", "socket_path": "",
    }, schemas)
    assert result.service.port == 80 and isinstance(result.service.port, int)
    assert result.service.weights == structs.Weights(3, 2)
    assert result.service.enable_tag_override is True
    assert result.service.tagged_addresses == {"wan": structs.ServiceAddress("1.2.3.4", 8080)}
    assert result.token == "t"


def test_partial_weights_are_zero_filled_as_go_does(schemas):
    assert service({"Name": "w", "Weights": {"Passing": 5}}, schemas).service.weights == (
        structs.Weights(5, 0))


@pytest.mark.parametrize("doc, message", [
    ({"Port": 1}, "Missing service name"),
    ({"Name": ""}, "Missing service name"),
    ({"Name": "w", "Address": "0.0.0.0"}, "Invalid service address"),
    ({"Name": "w", "Address": "::"}, "Invalid service address"),
    ({"Name": "w", "Weights": {"Warning": 1}}, "Invalid Weights: Passing must be greater than 0"),
    ({"Name": "w", "Weights": {"Passing": 70000}},
     "Invalid Weights: DNS Weight must be between 0 and 65535"),
    ({"Name": "w", "Meta": {"a b": "1"}},
     "Invalid Service Meta: Couldn't load metadata pair ('a b', '1'): "
     "Key contains invalid characters"),
    ({"Name": "w", "Meta": {"consul-x": "1"}},
     "Invalid Service Meta: Couldn't load metadata pair ('consul-x', '1'): "
     "Key prefix 'consul-' is reserved for internal use"),
    ({"Name": "w", "Meta": {"k": "v" * 513}},
     f"Invalid Service Meta: Couldn't load metadata pair ('k', '{'v' * 513}'): "
     "Value is too long (limit: 512 characters)"),
    ({"Name": "w", "Meta": {f"k{i}": "v" for i in range(65)}},
     "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"),
])
def test_service_rules_use_consuls_messages(schemas, doc, message):
    assert error_of(service, doc, schemas) == message


def test_check_ids_when_several_are_numbered_by_position(schemas):
    result = service({"ID": "web1", "Name": "web", "Check": {"TTL": "1s"},
                      "Checks": [{"TTL": "2s", "CheckID": "mine"}, {"TTL": "3s"}]}, schemas)
    assert [c.check_id for c in result.checks] == ["service:web1:1", "mine", "service:web1:3"]
    assert [c.ttl for c in result.checks] == [1.0, 2.0, 3.0]
    assert {c.name for c in result.checks} == {"Service 'web' check"}


def test_single_check_in_checks_gets_the_plain_id(schemas):
    result = service({"Name": "web", "Checks": [{"TTL": "2s"}]}, schemas)
    assert [c.check_id for c in result.checks] == ["service:web"]


def test_empty_check_is_ignored_as_consul_does(schemas):
    result = service({"Name": "web", "Check": {"TTL": "0s", "Notes": ""},
                      "Checks": [{"TTL": "2s"}]}, schemas)
    assert [c.check_id for c in result.checks] == ["service:web"]


def test_service_check_belongs_to_the_service_whatever_it_says(schemas):
    result = service({"Name": "web", "Check": {"TTL": "2s", "ServiceID": "other"}}, schemas)
    assert result.checks[0].service_id == "web"


def test_check_id_alias_and_status(schemas):
    result = service({"Name": "web", "Check": {"id": "x", "ttl": "2s", "status": "passing"}},
                     schemas)
    assert (result.checks[0].check_id, result.checks[0].status) == ("x", "passing")


@pytest.mark.parametrize("check, kind", [
    ({"TTL": "10s"}, "ttl"),
    ({"HTTP": "http://x/", "Interval": "10s"}, "http"),
    ({"TCP": "x:1", "Interval": "10s"}, "tcp"),
    ({"Args": ["/bin/true"], "Interval": "10s"}, "script"),
    ({"ScriptArgs": ["/bin/true"], "Interval": "10s"}, "script"),
    ({"Script": "/bin/true", "Interval": "10s"}, "script"),
    ({"Args": ["true"], "DockerContainerID": "c1", "Interval": "10s"}, "docker"),
    ({"GRPC": "x:1/svc", "Interval": "10s"}, "grpc"),
    ({"AliasService": "db"}, "alias"),
    ({"AliasNode": "n1"}, "alias"),
    ({"DockerContainerID": "c1", "TTL": "5s"}, "ttl"),
])
def test_check_type_is_derived(schemas, check, kind):
    assert service({"Name": "web", "Check": check}, schemas).checks[0].type == kind


@pytest.mark.parametrize("check, problem", [
    ({"Notes": "nothing to run"}, "TTL must be > 0 for TTL checks"),
    ({"DockerContainerID": "c1"}, "TTL must be > 0 for TTL checks"),
    ({"HTTP": "http://x/"}, "Interval must be > 0 for Script, HTTP, or TCP checks"),
    ({"TCP": "x:1", "Interval": "0s"}, "Interval must be > 0 for Script, HTTP, or TCP checks"),
    ({"Args": ["true"]}, "Interval must be > 0 for Script, HTTP, or TCP checks"),
    ({"GRPC": "x:1"}, "Interval must be > 0 for Script, HTTP, or TCP checks"),
    ({"TTL": "10s", "Interval": "10s"}, "Interval and TTL cannot both be specified"),
    ({"HTTP": "http://x/", "Interval": "1s", "AliasService": "db"},
     "Interval cannot be set for Alias checks"),
    ({"AliasService": "db", "TTL": "1s"}, "TTL must be not be set for Alias checks"),
    ({"TTL": "1s", "OutputMaxSize": -1}, "MaxOutputMaxSize must be positive"),
])
def test_invalid_checks_use_consuls_messages(schemas, check, problem):
    assert error_of(service, {"Name": "web", "Checks": [check]}, schemas) == (
        f"Invalid check: {problem}")


def test_http_check_definition(schemas):
    (check,) = service({"Name": "web", "Check": {
        "HTTP": "https://x/health", "Method": "POST", "Body": "{}", "TLSSkipVerify": True,
        "Header": {"X-A": ["1", "2"]}, "Interval": "10s", "Timeout": "2s",
        "DeregisterCriticalServiceAfter": "90m", "SuccessBeforePassing": 2,
        "FailuresBeforeCritical": 3, "OutputMaxSize": 1024,
    }}, schemas).checks
    assert check.definition == structs.CheckDefinition(
        interval=10.0, timeout=2.0, deregister_critical_service_after=5400.0,
        http="https://x/health", header={"X-A": ("1", "2")}, method="POST", body="{}",
        tls_skip_verify=True,
    )
    assert (check.success_before_passing, check.failures_before_critical,
            check.output_max_size) == (2, 3, 1024)


def test_py_consul_check_helpers_are_accepted(schemas):
    consul_check = pytest.importorskip("consul.check").Check
    checks = [
        consul_check.ttl("10s"),
        consul_check.http("http://x/", "10s", timeout="1s", deregister="1m",
                          header={"x-foo": ["bar"]}),
        consul_check.tcp("localhost", 80, "10s", timeout="1s"),
        consul_check.script(["/bin/true"], "10s"),
        consul_check.grpc("localhost:9000/svc", "10s", use_tls=True, tls_skip_verify=False),
        consul_check.docker("c1", "/bin/sh", "/check.sh", "10s"),
    ]
    result = service({"name": "web", "checks": checks}, schemas)
    assert [c.type for c in result.checks] == ["ttl", "http", "tcp", "script", "grpc", "docker"]
    assert result.checks[1].definition.header == {"x-foo": ("bar",)}
    assert result.checks[4].grpc_use_tls is True


# -- standalone checks -----------------------------------------------------------------------


def test_standalone_check_id_defaults_to_name(schemas):
    check = parse_check_definition({"name": "mem", "ttl": "1m", "notes": "n",
                                    "serviceid": "web1"}, schemas)
    assert (check.check_id, check.name, check.notes, check.service_id, check.status,
            check.type, check.ttl) == ("mem", "mem", "n", "web1", "critical", "ttl", 60.0)


def test_standalone_check_with_id(schemas):
    assert parse_check_definition({"ID": "m1", "Name": "mem", "TTL": "1s"},
                                  schemas).check_id == "m1"
    assert parse_check_definition({"CheckID": "m2", "Name": "mem", "TTL": "1s"},
                                  schemas).check_id == "m2"


@pytest.mark.parametrize("doc, message", [
    ({"TTL": "1s"}, "Missing check name"),
    ({"Name": "c"}, "Invalid check: TTL must be > 0 for TTL checks"),
    ({"Name": "c", "TTL": "1s", "Status": "bad"},
     f"""Invalid field "Check.Status": 'bad' is not one of {STATUSES}"""),
    ({"Name": "c", "TTL": "1s", "Bogus": 1}, 'Unknown field "Check.Bogus"'),
])
def test_standalone_check_errors(schemas, doc, message):
    assert error_of(parse_check_definition, doc, schemas) == message


# -- catalog ---------------------------------------------------------------------------------


def test_reference_catalog_register(schemas):
    # Body of 40_catalog_register_ext against Consul 1.8.7.
    result = parse_catalog_register({
        "Node": "ext1", "Address": "10.9.9.9",
        "Service": {"Service": "redis", "Port": 6379, "Tags": ["cache"]},
        "Check": {"CheckID": "redis-alive", "Name": "redis alive", "Status": "passing",
                  "ServiceID": "redis"},
    }, schemas, "dc1")
    assert result.node == structs.Node(name="ext1", address="10.9.9.9", datacenter="dc1")
    assert result.service == structs.Service(node="ext1", id="redis", name="redis",
                                             tags=("cache",), port=6379)
    assert result.checks == (structs.Check(
        node="ext1", check_id="redis-alive", name="redis alive", status="passing",
        service_id="redis", service_name="redis", service_tags=("cache",),
    ),)
    assert result.skip_node_update is False


def test_catalog_register_as_py_consul_sends_it(schemas):
    result = parse_catalog_register({
        "node": "n1", "address": "10.0.0.1", "datacenter": "dc2",
        "service": {"service": "web", "id": "web-1", "port": 80},
        "check": {"name": "web up", "serviceid": "web-1", "notes": "n"},
        "WriteRequest": {"Token": "secret"}, "TaggedAddresses": {"wan": "1.2.3.4"},
    }, schemas, "dc1")
    assert result.node.datacenter == "dc2"
    assert result.node.tagged_addresses == {"wan": "1.2.3.4"}
    assert result.service.id == "web-1"
    (check,) = result.checks
    assert (check.check_id, check.status, check.notes, check.service_name) == (
        "web up", "critical", "n", "web")
    assert result.token == "secret"


def test_catalog_register_node_only_and_checks_order(schemas):
    result = parse_catalog_register({
        "Node": "n1", "Address": "a", "ID": "730bbbe0-1e7a-513b-ef2e-9c138e8d2474",
        "NodeMeta": {"rack": "r1"},
        "Checks": [{"CheckID": "c1", "ServiceID": "elsewhere"}, {"CheckID": "c2", "Node": "n2"}],
        "Check": {"CheckID": "c3", "Output": "ok", "Type": "http",
                  "Definition": {"HTTP": "http://a/", "Interval": "10s",
                                 "Header": {"A": ["b"]}}},
    }, schemas, "dc1")
    assert result.service is None
    assert result.node.node_id == "730bbbe0-1e7a-513b-ef2e-9c138e8d2474"
    assert result.node.meta == {"rack": "r1"}
    assert [c.check_id for c in result.checks] == ["c1", "c2", "c3"]
    assert [c.node for c in result.checks] == ["n1", "n2", "n1"]
    assert result.checks[0].service_name == ""  # the store resolves other services
    assert result.checks[2].definition == structs.CheckDefinition(
        interval=10.0, http="http://a/", header={"A": ("b",)})
    assert (result.checks[2].output, result.checks[2].type) == ("ok", "http")


def test_catalog_skip_node_update_allows_no_address(schemas):
    result = parse_catalog_register({"Node": "n1", "SkipNodeUpdate": True,
                                     "Service": {"Service": "s"}}, schemas, "dc1")
    assert result.skip_node_update is True and result.node.address == ""


@pytest.mark.parametrize("doc, message", [
    ({"Address": "a"}, "Must provide node"),
    ({"Node": "n"}, "Must provide address if SkipNodeUpdate is not set"),
    ({"Node": "n", "Address": "a", "ID": "nope"}, "Bad node ID: uuid string is wrong length"),
    ({"Node": "n", "Address": "a", "ID": "730bbbe0x1e7a-513b-ef2e-9c138e8d2474"},
     "Bad node ID: uuid is improperly formatted"),
    ({"Node": "n", "Address": "a", "ID": "730bbbe0-1e7a-513b-ef2e-9c138e8d247g"},
     "Bad node ID: encoding/hex: invalid byte: U+0067 'g'"),
    ({"Node": "n", "Address": "a", "Service": {"ID": "s1"}}, "Must provide service name with ID"),
    ({"Node": "n", "Address": "a", "Service": {"Port": 1}}, "Missing service name"),
    ({"Node": "n", "Address": "a", "Service": {"Service": "s", "Address": "0.0.0.0"}},
     "Invalid service address"),
    ({"Node": "n", "Address": "a", "Checks": [{"Notes": "x"}]},
     'Invalid field "Checks[0].CheckID": must provide CheckID or Name'),
    ({"Node": "n", "Address": "a", "Check": {"Name": "c", "Status": "up"}},
     f"""Invalid field "Check.Status": 'up' is not one of {STATUSES}"""),
])
def test_catalog_register_errors(schemas, doc, message):
    assert error_of(parse_catalog_register, doc, schemas, "dc1") == message


def test_catalog_deregister(schemas):
    assert parse_catalog_deregister({"Node": "ext1"}, schemas) == CatalogDeregistration(
        node="ext1", service_id="", check_id="")
    assert parse_catalog_deregister(
        {"node": "n", "serviceid": "s", "checkid": "c", "datacenter": "dc2", "token": "t"},
        schemas) == CatalogDeregistration("n", "s", "c", "dc2", "t")


def test_catalog_deregister_errors(schemas):
    assert error_of(parse_catalog_deregister, {"ServiceID": "s"}, schemas) == "Must provide node"
    assert error_of(parse_catalog_deregister, {"Node": "n", "Service": "s"}, schemas) == (
        'Unknown field "Service"')


def test_nothing_is_returned_when_a_later_part_is_invalid(schemas):
    """A bad last check fails the whole definition: no partial service escapes."""
    doc = {"Name": "web", "Checks": [{"TTL": "1s"}, {"TTL": "2s"}, {"HTTP": "http://x/"}]}
    with pytest.raises(InvalidRequest):
        service(doc, schemas)
    doc = {"Node": "n", "Address": "a", "Service": {"Service": "s"},
           "Checks": [{"CheckID": "ok"}, {"Name": "c", "Definition": {"Interval": "soon"}}]}
    with pytest.raises(InvalidRequest):
        parse_catalog_register(doc, schemas, "dc1")
