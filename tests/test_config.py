"""Agent configuration: files, directories and flags merged as Consul 1.8 merges them, and checked.

Pure: no reactor, no agent; files live in pytest's tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config.load import (
    ConfigError,
    build_config,
    config_files,
    load_agent_config,
)
from agent.config.model import DEFAULT_LIMITS, DNSConfig, Ports, SOAConfig
from gateway.cli.agent_command import flag_set, flag_values

NODE_ID = "8c4f2b1e-0d3a-4e5f-9a6b-7c8d9e0f1a2b"


def write(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=1))
    return path


def load(files=(), dirs=(), flags=None, dev=False):
    return load_agent_config([str(f) for f in files], [str(d) for d in dirs],
                             {"node_id": NODE_ID, **(flags or {})}, dev)


def error_of(tmp_path, doc, **kwargs) -> str:
    path = write(tmp_path / "bad.json", doc)
    with pytest.raises(ConfigError) as info:
        load([path], **kwargs)
    return str(info.value)


# -- merging --------------------------------------------------------------------------------


def test_files_then_directory_in_name_order_later_scalars_win(tmp_path):
    first = write(tmp_path / "first.json", {
        "datacenter": "one", "node_name": "n1", "ports": {"http": 1001, "dns": 1002},
        "recursors": ["10.0.0.1"], "node_meta": {"a": "1", "b": "2"},
    })
    conf = tmp_path / "conf.d"
    # "10-..." sorts before "2-..." by name, as in Consul (not numerically).
    write(conf / "2-last.json", {"datacenter": "three", "ports": {"dns": 3002},
                                 "recursors": ["10.0.0.3"], "node_meta": {"c": "3"}})
    write(conf / "10-middle.json", {"datacenter": "two", "node_name": "n2",
                                    "ports": {"serf_lan": 2001}, "recursors": ["10.0.0.2"],
                                    "node_meta": {}})
    write(conf / "notes.txt", "not config")
    (conf / "sub").mkdir()
    write(conf / "sub" / "ignored.json", {"datacenter": "sub"})

    config = load([first], [conf])
    assert config.datacenter == "three"
    assert config.node_name == "n2"
    # ports merge key by key (a struct in Consul)
    assert config.ports == Ports(http=1001, dns=3002, serf_lan=2001)
    # lists append in source order
    assert config.recursors == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    # a user map is replaced by a later non-empty one; an empty one changes nothing
    assert config.node_meta == {"c": "3"}
    assert config.config_sources == (str(first), str(conf / "10-middle.json"),
                                     str(conf / "2-last.json"))


def test_nested_objects_merge_key_by_key(tmp_path):
    a = write(tmp_path / "a.json", {
        "addresses": {"http": "127.0.0.2"},
        "dns_config": {"node_ttl": "10s", "soa": {"refresh": 10}, "service_ttl": {"a": "1s"}},
        "acl": {"enable_key_list_policy": True, "tokens": {"agent": "x"}},
        "plugins": {"haproxy": {"socket": "/a", "backends": {"web": 1}}, "nginx": {"on": True}},
        "limits": {"kv_max_value_size": 100},
    })
    b = write(tmp_path / "b.json", {
        "addresses": {"dns": "127.0.0.3"},
        "dns_config": {"only_passing": True, "soa": {"retry": 20}, "service_ttl": {"b": "2s"}},
        "acl": {"default_policy": "deny", "tokens": {"default": "y"}},
        "plugins": {"haproxy": {"backends": {"db": 2}}},
    })
    config = load([a, b])
    assert (config.http_addr, config.dns_addr) == ("127.0.0.2", "127.0.0.3")
    assert config.dns_config.node_ttl == 10.0 and config.dns_config.only_passing
    assert config.dns_config.soa == SOAConfig(refresh=10, retry=20)
    assert config.dns_config.service_ttl == {"b": 2.0}  # a map: replaced
    assert config.acl == {"enable_key_list_policy": True, "default_policy": "deny",
                          "tokens": {"agent": "x", "default": "y"}}
    assert config.plugins == {"haproxy": {"socket": "/a", "backends": {"web": 1, "db": 2}},
                              "nginx": {"on": True}}
    assert config.kv_max_value_size == 100 and config.limits["kv_max_value_size"] == 100


def test_services_checks_and_watches_accumulate_across_files(tmp_path):
    a = write(tmp_path / "a.json", {
        "service": {"name": "single-a"},
        "services": [{"name": "web"}, {"name": "db"}],
        "check": {"name": "disk", "ttl": "30s"},
        "watches": [{"type": "services", "args": ["/bin/true"]}],
    })
    b = write(tmp_path / "b.json", {
        "services": [{"name": "cache"}],
        "checks": [{"name": "mem", "ttl": "1m"}],
        "watches": [{"type": "nodes", "handler": "/bin/true"}],
    })
    config = load([a, b])
    # Consul appends a file's single `service` after its `services`.
    assert [d.service.name for d in config.services] == ["web", "db", "single-a", "cache"]
    assert [c.check_id for c in config.checks] == ["disk", "mem"]
    assert [w["type"] for w in config.watches] == ["services", "nodes"]


def test_flags_win_over_files_and_list_flags_come_first(tmp_path):
    path = write(tmp_path / "a.json", {"datacenter": "file", "log_level": "warn",
                                       "ports": {"http": 1, "dns": 2},
                                       "recursors": ["10.0.0.1"],
                                       "serf_lan_allowed_cidrs": ["10.0.0.0/8"]})
    config = load([path], flags={"datacenter": "flag", "ports": {"http": 9},
                                 "recursors": ["10.0.0.9"],
                                 "serf_lan_allowed_cidrs": ["10.1.0.0/16"],
                                 "log_level": None, "start_join": []})
    assert config.datacenter == "flag"
    assert config.log_level == "warn"  # None: not given
    assert config.ports.http == 9 and config.ports.dns == 2
    # Consul merges list flags before the files, so they come first.
    assert config.recursors == ("10.0.0.9", "10.0.0.1")
    assert config.settings["serf_lan_allowed_cidrs"] == ["10.1.0.0/16", "10.0.0.0/8"]
    assert config.start_join == ()


def test_recursors_are_split_and_deduplicated(tmp_path):
    path = write(tmp_path / "a.json", {"recursors": ["1.1.1.1 8.8.8.8", "1.1.1.1"]})
    assert load([path]).recursors == ("1.1.1.1", "8.8.8.8")


def test_null_settings_are_not_given_and_an_empty_file_is_empty(tmp_path):
    a = write(tmp_path / "a.json", {"datacenter": "dcx", "ports": {"http": 7}})
    b = write(tmp_path / "b.json", {"datacenter": None, "ports": {"http": None}})
    empty = write(tmp_path / "empty.json", "")  # 0 bytes: skipped with a warning, as Consul
    config = load([a, b, empty])
    assert config.datacenter == "dcx" and config.ports.http == 7
    assert config.warnings == (f"{empty}: the file is empty; skipped",)


def test_a_directory_given_as_config_file_is_read_like_config_dir(tmp_path):
    write(tmp_path / "d" / "a.json", {"domain": "example."})
    assert load([tmp_path / "d"]).domain == "example."


def test_build_config_and_config_files_still_work(tmp_path):
    write(tmp_path / "d" / "b.json", {"node_name": "from-dir"})
    a = write(tmp_path / "a.json", {"node_name": "from-file", "datacenter": "DC9"})
    files = config_files([str(a)], [str(tmp_path / "d")])
    assert files == [a, tmp_path / "d" / "b.json"]
    config = build_config(files, {"node_id": NODE_ID}, dev=False)
    assert config.node_name == "from-dir" and config.datacenter == "dc9"


def test_reload_reads_the_files_again(tmp_path):
    path = write(tmp_path / "a.json", {"services": [{"name": "web"}]})
    first = load([path])
    assert load([path]) == first  # the same inputs give the same config
    write(path, {"services": [{"name": "web"}, {"name": "db"}], "log_level": "error"})
    second = load([path])
    assert [d.service.name for d in second.services] == ["web", "db"]
    assert second.log_level == "error"


# -- defaults -------------------------------------------------------------------------------


def test_defaults_without_files():
    config = load()
    assert config.datacenter == "dc1" and config.domain == "consul."
    assert config.ports == Ports() and config.ports.grpc == -1
    assert config.log_level == "info" and not config.dev and not config.ui
    assert config.dns_config == DNSConfig()
    assert config.limits == DEFAULT_LIMITS
    assert (config.services, config.checks, config.watches) == ((), (), ())
    assert config.unsupported == () and config.config_sources == ()
    assert config.node_id == NODE_ID and config.node_name
    # Consul: servers stay in the cluster on SIGTERM and skip leaving on SIGINT.
    assert config.server and not config.leave_on_terminate and config.skip_leave_on_interrupt


def test_dns_config_defaults_are_consuls():
    dns = DNSConfig()
    assert dns.allow_stale is True
    assert dns.max_stale == 87600 * 3600
    assert dns.node_ttl == 0 and dict(dns.service_ttl) == {}
    assert not dns.only_passing and not dns.enable_truncate
    assert dns.udp_answer_limit == 3 and dns.a_record_limit == 0
    assert dns.recursor_timeout == 2.0
    assert not dns.disable_compression and not dns.use_cache and dns.cache_max_age == 0
    assert dns.soa == SOAConfig(refresh=3600, retry=600, expire=86400, min_ttl=0)
    assert dns.enable_additional_node_meta_txt is True


def test_dns_config_from_a_file_and_service_ttl_wildcards(tmp_path):
    path = write(tmp_path / "a.json", {"dns_config": {
        "allow_stale": False, "max_stale": "5s", "node_ttl": "1m", "udp_answer_limit": 5,
        "a_record_limit": 2, "recursor_timeout": "500ms", "enable_truncate": True,
        "use_cache": True, "cache_max_age": "1h", "soa": {"min_ttl": 60},
        "enable_additional_node_meta_txt": False,
        "service_ttl": {"*": "5s", "web*": "30s", "web-api": "1s"},
    }})
    dns = load([path]).dns_config
    assert (dns.allow_stale, dns.max_stale, dns.node_ttl) == (False, 5.0, 60.0)
    assert (dns.udp_answer_limit, dns.a_record_limit, dns.recursor_timeout) == (5, 2, 0.5)
    assert dns.enable_truncate and dns.use_cache and dns.cache_max_age == 3600.0
    assert dns.soa == SOAConfig(min_ttl=60) and not dns.enable_additional_node_meta_txt
    assert dns.ttl_for_service("web-api") == 1.0  # exact
    assert dns.ttl_for_service("web-ui") == 30.0  # longest prefix
    assert dns.ttl_for_service("db") == 5.0  # "*"
    assert DNSConfig().ttl_for_service("db") == 0.0


def test_dev_defaults_and_files_override_them(tmp_path):
    config = load(dev=True)
    assert config.dev and config.server and config.ui and config.pretty_json
    assert config.bind_addr == "127.0.0.1" and config.log_level == "debug"
    assert config.ports.grpc == 8502 and config.ports.http == 8500
    assert config.unsupported == ()  # dev's own `ui` is not the user's
    path = write(tmp_path / "a.json", {"log_level": "INFO", "ui": False, "ports": {"http": 1}})
    config = load([path], dev=True)
    assert config.log_level == "info" and not config.ui
    assert config.ports.grpc == 8502 and config.ports.http == 1


def test_model_values_from_keys(tmp_path):
    path = write(tmp_path / "a.json", {
        "node_id": NODE_ID.upper(), "alt_domain": "alt.",
        "pid_file": "/run/w.pid", "ui_dir": "/ui",
        "leave_on_terminate": True, "disable_update_check": True, "enable_syslog": True,
        "telemetry": {"statsd_address": "127.0.0.1:8125"},
        "performance": {"raft_multiplier": 1},
        "limits": {"http_max_conns_per_client": 5, "https_handshake_timeout": "2s"},
    })
    config = load([path], flags={"node_id": None})
    assert config.node_id == NODE_ID  # lower-cased, as Consul does
    assert (config.alt_domain, config.pid_file, config.ui_dir) == ("alt.", "/run/w.pid", "/ui")
    assert config.leave_on_terminate and config.disable_update_check and config.enable_syslog
    assert config.telemetry == {"statsd_address": "127.0.0.1:8125"}
    assert config.performance == {"raft_multiplier": 1}
    assert config.limits["http_max_conns_per_client"] == 5
    assert config.limits["https_handshake_timeout"] == 2.0


def test_log_level_spellings(tmp_path):
    assert load(flags={"log_level": "ERR"}).log_level == "error"
    assert load(flags={"log_level": "Warn"}).log_level == "warn"
    with pytest.raises(ConfigError, match=r"^command line: /log_level: invalid log level 'loud'"):
        load(flags={"log_level": "loud"})


def test_bootstrap_rules_are_consuls():
    assert load(flags={"bootstrap_expect": 1}).bootstrap  # the same as bootstrap mode
    assert load(flags={"bootstrap_expect": 1}).bootstrap_expect == 0
    cases = [
        ({"bootstrap": True, "bootstrap_expect": 3}, False,
         "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive"),
        ({"bootstrap": True, "server": False}, False, "'bootstrap = true' requires server mode"),
        ({"bootstrap_expect": 3, "server": False}, False,
         "'bootstrap_expect > 0' requires server mode"),
        ({"bootstrap_expect": 3}, True, "'bootstrap_expect > 0' not allowed in dev mode"),
    ]
    for flags, dev, message in cases:
        with pytest.raises(ConfigError) as info:
            load(flags=flags, dev=dev)
        assert str(info.value) == message


# -- services and checks --------------------------------------------------------------------


def test_services_and_checks_with_snake_case_keys(tmp_path):
    path = write(tmp_path / "a.json", {
        "service": {
            "id": "web1", "name": "web", "tags": ["v1"], "port": 8080, "address": "10.0.0.5",
            "enable_tag_override": True, "meta": {"Owner_Key": "me"},
            "tagged_addresses": {"lan": {"address": "10.0.0.5", "port": 8080}},
            "checks": [
                {"http": "http://localhost:8080/health", "interval": "10s", "timeout": "1s",
                 "tls_skip_verify": True, "deregister_critical_service_after": "1m",
                 "method": "HEAD", "header": {"X-A": ["b"]}},
                {"tcp": "localhost:8080", "interval": "5s", "name": "port open"},
            ],
        },
        "checks": [{"check_id": "mem", "name": "Memory", "ttl": "30s", "service_id": "web1",
                    "status": "passing", "notes": "n"}],
    })
    config = load([path])
    (definition,) = config.services
    service = definition.service
    assert (service.id, service.name, service.tags, service.port) == ("web1", "web", ("v1",), 8080)
    assert service.enable_tag_override and service.meta == {"Owner_Key": "me"}
    assert service.tagged_addresses["lan"].port == 8080
    http, tcp = definition.checks
    assert (http.check_id, http.type) == ("service:web1:1", "http")
    assert http.definition.interval == 10.0 and http.definition.tls_skip_verify
    assert http.definition.deregister_critical_service_after == 60.0
    assert http.definition.header == {"X-A": ("b",)} and http.definition.method == "HEAD"
    assert (tcp.check_id, tcp.name, tcp.type) == ("service:web1:2", "port open", "tcp")
    (check,) = config.checks
    assert (check.check_id, check.name, check.ttl, check.service_id, check.status) == (
        "mem", "Memory", 30.0, "web1", "passing")


def test_script_checks_need_enable_local_script_checks(tmp_path):
    doc = {"services": [{"name": "web", "check": {"args": ["/bin/true"], "interval": "5s"}}]}
    message = error_of(tmp_path, doc)
    assert message == (f"{tmp_path / 'bad.json'}: services[0]: Scripts are disabled on this "
                       "agent; to enable, configure 'enable_script_checks' or "
                       "'enable_local_script_checks' to true")
    assert load([tmp_path / "bad.json"], flags={"enable_local_script_checks": True}).services
    # enable_local_script_checks defaults to enable_script_checks, as in Consul.
    config = load([tmp_path / "bad.json"], flags={"enable_script_checks": True})
    assert config.enable_local_script_checks
    write(tmp_path / "c.json", {"check": {"name": "s", "args": ["x"], "interval": "1s"}})
    with pytest.raises(ConfigError, match=r"c\.json: check: Scripts are disabled"):
        load([tmp_path / "c.json"])


# -- errors ---------------------------------------------------------------------------------


def test_bad_json_names_file_line_and_column(tmp_path):
    message = error_of(tmp_path, '{"datacenter": "dc1",\n  "ports": {"http": 1,}}')
    assert message == f"{tmp_path / 'bad.json'}:2:22: invalid JSON: trailing comma before '}}'"
    assert error_of(tmp_path, "[1, 2]") == \
        f"{tmp_path / 'bad.json'}:1:1: the top level must be an object, not a list"


def test_wrong_type_names_the_json_pointer(tmp_path):
    bad = tmp_path / "bad.json"
    assert error_of(tmp_path, {"ports": {"http": "abc"}}) == \
        f"{bad}: /ports/http: 'abc' is not of type 'integer'"
    assert error_of(tmp_path, {"server": "yes"}) == f"{bad}: /server: 'yes' is not of type 'boolean'"
    assert error_of(tmp_path, {"recursors": "8.8.8.8"}) == \
        f"{bad}: /recursors: '8.8.8.8' is not of type 'array'"
    assert error_of(tmp_path, {"ports": {"http": 70000}}) == \
        f"{bad}: /ports/http: 70000 is greater than the maximum of 65535"
    assert error_of(tmp_path, {"plugins": {"haproxy": 1}}) == \
        f"{bad}: /plugins/haproxy: 1 is not of type 'object'"


def test_unknown_keys_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    assert error_of(tmp_path, {"datacenter": "a", "nonsense": 1}) == \
        f"{bad}: unknown key 'nonsense'"
    assert error_of(tmp_path, {"ports": {"http": 1, "htttp": 2}}) == \
        f"{bad}: /ports: unknown key 'htttp'"
    assert error_of(tmp_path, {"dns_config": {"allow_stale": True, "max_stael": "1s"}}) == \
        f"{bad}: /dns_config: unknown key 'max_stael'"
    assert error_of(tmp_path, {"dns_config": {"soa": {"ttl": 1}}}) == \
        f"{bad}: /dns_config/soa: unknown key 'ttl'"


def test_bad_durations_name_the_pointer(tmp_path):
    bad = tmp_path / "bad.json"
    assert error_of(tmp_path, {"dns_config": {"node_ttl": "10x"}}) == \
        f'{bad}: /dns_config/node_ttl: invalid duration "10x": unknown unit "x"'
    assert error_of(tmp_path, {"dns_config": {"service_ttl": {"web": "soon"}}}) == \
        f'{bad}: /dns_config/service_ttl/web: invalid duration "soon"'
    assert error_of(tmp_path, {"dns_config": {"max_stale": 10}}) == \
        f"{bad}: /dns_config/max_stale: 10 is not of type 'string'"
    assert error_of(tmp_path, {"limits": {"rpc_handshake_timeout": "-1s"}}) == \
        f'{bad}: /limits/rpc_handshake_timeout: invalid duration "-1s": must not be negative'


def test_invalid_service_or_check_names_its_position(tmp_path):
    bad = tmp_path / "bad.json"
    assert error_of(tmp_path, {"services": [{"name": "ok"}, {"port": 80}]}) == \
        f"{bad}: services[1]: Missing service name"
    assert error_of(tmp_path, {"services": [{"name": "a"}, {"name": "b", "port": "x"}]}) == \
        f"{bad}: services[1]: Invalid field \"Service.Port\": 'x' is not of type 'integer'"
    assert error_of(tmp_path, {"service": {"name": "a", "bogus": 1}}) == \
        f'{bad}: service: Unknown field "Service.bogus"'
    assert error_of(tmp_path, {"checks": [{"name": "c"}]}) == \
        f"{bad}: checks[0]: Invalid check: TTL must be > 0 for TTL checks"
    assert error_of(tmp_path, {"services": {"name": "x"}}) == \
        f"{bad}: /services: an object is not of type 'array'"


def test_invalid_watches(tmp_path):
    bad = tmp_path / "bad.json"
    assert error_of(tmp_path, {"watches": [{"type": "nope", "args": ["x"]}]}) == (
        f"{bad}: /watches/0/type: 'nope' is not one of "
        "['key', 'keyprefix', 'services', 'nodes', 'service', 'checks', 'event']")
    cases = [
        ({"type": "key", "args": ["x"]}, "/watches/0: 'key' is a required property"),
        ({"type": "keyprefix", "args": ["x"]}, "/watches/0: 'prefix' is a required property"),
        ({"type": "service", "args": ["x"]}, "/watches/0: 'service' is a required property"),
        ({"args": ["x"]}, "/watches/0: 'type' is a required property"),
        ({"type": "key", "key": "k"}, "/watches/0: Must define a watch handler"),
        ({"type": "key", "key": "k", "args": ["x"], "handler": "y"},
         "/watches/0: Only one watch handler allowed"),
        ({"type": "nodes", "handler_type": "http"},
         "/watches/0: Handler type 'http' requires 'http_handler_config' to be set"),
        ({"type": "nodes", "handler_type": "http", "http_handler_config": {}},
         "/watches/0/http_handler_config: 'path' is a required property"),
        ({"type": "nodes", "handler_type": "http",
          "http_handler_config": {"path": "http://x", "timeout": "1y"}},
         '/watches/0/http_handler_config/timeout: invalid duration "1y": unknown unit "y"'),
        ({"type": "nodes", "key": "k", "args": ["x"]}, "/watches/0: Invalid parameters: [key]"),
        ({"type": "event", "stale": True, "args": ["x"]},
         "/watches/0: Invalid parameters: [stale]"),
        ({"type": "checks", "service": "a", "state": "passing", "args": ["x"]},
         "/watches/0: Cannot specify service and state"),
        ({"type": "nodes", "handler_type": "ftp", "args": ["x"]},
         "/watches/0/handler_type: 'ftp' is not one of ['script', 'http']"),
    ]
    for watch, expected in cases:
        assert error_of(tmp_path, {"watches": [watch]}) == f"{bad}: {expected}"
    ok = {"type": "nodes", "handler_type": "http",
          "http_handler_config": {"path": "http://x", "method": "PUT", "timeout": "5s"}}
    assert load([write(bad, {"watches": [ok]})]).watches == (ok,)


def test_other_value_checks(tmp_path):
    bad = tmp_path / "bad.json"
    assert error_of(tmp_path, {"datacenter": "dc 1"}) == (
        f"{bad}: /datacenter: datacenter can only contain lowercase alphanumeric, - or _ "
        "characters. received: 'dc 1'")
    assert error_of(tmp_path, {"node_id": "abc"}) == f"{bad}: /node_id: 'abc' is not a UUID"
    assert error_of(tmp_path, {"encrypt": "c2hvcnQ="}) == \
        f"{bad}: /encrypt: encrypt has invalid key: key size must be 16, 24 or 32 bytes"
    assert error_of(tmp_path, {"node_meta": {"consul-x": "1"}}) == \
        f"{bad}: /node_meta: invalid key 'consul-x'"
    assert error_of(tmp_path, {"acl": {"default_policy": "maybe"}}) == \
        f"{bad}: /acl/default_policy: 'maybe' is not one of ['allow', 'deny']"


def test_missing_files_and_directories(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.json: No such file or directory$"):
        load([tmp_path / "missing.json"])
    with pytest.raises(ConfigError, match=r"nodir: not a directory$"):
        load(dirs=[tmp_path / "nodir"])
    write(tmp_path / "d" / "a.hcl", 'datacenter = "x"')
    assert load(dirs=[tmp_path / "d"]).datacenter == "x"  # HCL is read (pyhcl)


# -- unsupported keys -----------------------------------------------------------------------


def test_unsupported_keys_are_kept_and_listed(tmp_path):
    path = write(tmp_path / "a.json", {
        "acl": {"enabled": False, "tokens": {"agent": "t"}}, "ui": False,
        "limits": {"kv_max_value_size": 10, "rpc_rate": 5.0, "http_max_conns_per_client": 3},
        "dns_config": {"only_passing": True, "use_cache": True}, "recursors": ["1.1.1.1"],
        "alt_domain": "x.", "telemetry": {"statsd_address": "127.0.0.1:8125"},
    })
    config = load([path], flags={"retry_interval": "5s", "bootstrap_expect": 1})
    assert config.unsupported == ("acl", "dns_config.use_cache", "limits.rpc_rate",
                                  "retry_interval", "telemetry")  # ui = false: no UI anyway
    assert config.acl == {"enabled": False, "tokens": {"agent": "t"}}
    assert config.settings["retry_interval"] == "5s" and config.limits["rpc_rate"] == 5.0


# -- the agent command's flags --------------------------------------------------------------


def test_agent_flags_map_to_config_keys(tmp_path):
    values, _ = flag_set().parse([
        "-node", "n", "-datacenter", "DC2", "-alt-domain", "alt.", "-recursor", "1.1.1.1",
        "-recursor", "8.8.8.8", "-bootstrap", "-enable-script-checks",
        "-enable-local-script-checks=false", "-ui", "-pid-file", "/run/w.pid",
        "-http-port", "8501", "-log-level", "DEBUG", "-node-id", NODE_ID,
    ])
    config = load_agent_config([], [], flag_values(values), dev=False)
    assert (config.node_name, config.datacenter, config.alt_domain) == ("n", "dc2", "alt.")
    assert config.recursors == ("1.1.1.1", "8.8.8.8")
    assert config.bootstrap and config.ui and config.pid_file == "/run/w.pid"
    assert config.enable_script_checks and not config.enable_local_script_checks
    assert config.ports.http == 8501 and config.log_level == "debug"
    assert config.unsupported == ("ui",)


def test_agent_flags_not_given_leave_files_alone(tmp_path):
    values, _ = flag_set().parse(["-node-id", NODE_ID])
    path = write(tmp_path / "a.json", {"server": True, "ui": True, "log_level": "warn"})
    config = load_agent_config([str(path)], [], flag_values(values), dev=False)
    assert config.server and config.ui and config.log_level == "warn"
    # Consul's defaults for a server agent
    assert not config.leave_on_terminate and config.skip_leave_on_interrupt
