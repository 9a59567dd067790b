"""Issue 9, configuration: unsafe settings refuse to start, every Consul 1.8.7 key is accepted,
errors are clear, addresses and templates are checked at load, /v1/agent/self tells the truth.

Pure tests build configs from files in pytest's tmp_path; the start-up tests run the real
`waypost agent` command line in a subprocess, and one runs a real agent on free ports.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.config.load import ConfigError, load_agent_config
from agent.config.interfaces import IfAddr, make_ifaddr
from agent.config.sockaddr import TemplateError, evaluate
from agent.schemas import SchemaSet
from tests.agentproc import ROOT, free_ports

NODE_ID = "8c4f2b1e-0d3a-4e5f-9a6b-7c8d9e0f1a2b"
ORACLE = Path("/tmp/oracle/bin/consul")

# A machine with a loopback, a private LAN address on the default-route interface, a public
# address on a second interface and a ULA IPv6 address.
FAKE_IFS = [
    make_ifaddr("lo", "127.0.0.1", "255.0.0.0", frozenset({"up", "loopback"})),
    make_ifaddr("lo", "::1", "128", frozenset({"up", "loopback"})),
    make_ifaddr("eth0", "10.1.2.3", "255.255.0.0", frozenset({"up", "broadcast"}), True),
    make_ifaddr("eth0", "fd00::5", "64", frozenset({"up", "broadcast"}), True),
    make_ifaddr("eth1", "8.8.4.4", "255.255.255.0", frozenset({"up", "broadcast"})),
    make_ifaddr("eth2", "10.9.9.9", "255.255.255.0", frozenset({"broadcast"})),  # down
]


def fake_interfaces() -> list[IfAddr]:
    return list(FAKE_IFS)


def write(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def load(files=(), flags=None, dev=False, **kwargs):
    return load_agent_config([str(f) for f in files], [], {"node_id": NODE_ID, **(flags or {})},
                             dev, interfaces=kwargs.pop("interfaces", fake_interfaces), **kwargs)


def error(files=(), **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(files, **kwargs)
    return str(info.value)


def waypost_agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "agent", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def assert_one_line_refusal(out: subprocess.CompletedProcess, *parts: str) -> str:
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    assert lines[0].startswith("Error: ")
    return lines[0]


# -- item 5: settings that promise protection refuse to start ---------------------------------


REFUSED = [
    ({"acl": {"enabled": True, "default_policy": "deny"}},
     "acl.enabled = true: ACLs are not supported yet; refusing to start without the "
     "protection they promise"),
    ({"acl_datacenter": "dc1"}, 'acl_datacenter = "dc1" (it turns ACLs on): ACLs are not '
                                "supported yet"),
    ({"verify_incoming": True}, "verify_incoming = true: TLS is not supported yet"),
    ({"verify_incoming_https": True}, "verify_incoming_https = true: TLS"),
    ({"verify_outgoing": True}, "verify_outgoing = true: TLS"),
    ({"verify_server_hostname": True}, "verify_server_hostname = true: TLS"),
    ({"cert_file": "/c.pem", "key_file": "/k.pem", "ports": {"https": 8501}},
     "cert_file and key_file (they turn TLS on): TLS is not supported yet"),
    ({"auto_encrypt": {"tls": True}}, "auto_encrypt.tls = true: TLS"),
    ({"auto_config": {"enabled": True}}, "auto_config.enabled = true"),
    ({"http_config": {"allow_write_http_from": ["10.0.0.0/8"]}},
     "http_config.allow_write_http_from: limiting HTTP writes"),
    ({"server": False, "retry_join_wan": ["10.0.0.1"]},
     "retry_join_wan = \"10.0.0.1\": Must be a server to join WAN cluster"),
    ({"segments": [{"name": "a", "port": 8303}]},
     "Network segments are not supported in this version of Consul"),
]


@pytest.mark.parametrize("doc,message", REFUSED, ids=[str(list(d)[0]) for d, _ in REFUSED])
def test_unsafe_settings_refuse_through_the_real_cli(tmp_path, doc, message):
    path = write(tmp_path / "unsafe.json", {"data_dir": str(tmp_path / "data"), **doc})
    out = waypost_agent("-config-file", str(path), "-log-level", "error")
    line = assert_one_line_refusal(out, message)
    assert line.startswith(f"Error: {path}: ")  # names the file that set it


@pytest.mark.parametrize("flags,message", [
    (["-join-wan", "10.0.0.1"], "command line: start_join_wan"),
    (["-retry-join-wan", "10.0.0.1"], "command line: retry_join_wan"),
])
def test_wan_joins_on_a_client_refuse_through_the_real_cli(tmp_path, flags, message):
    # Consul's client logs "Must be a server to join WAN cluster" and exits 1; a server
    # (-dev is one) joins the WAN pool instead (tests/test_wan.py).
    path = write(tmp_path / "client.json", {"server": False, "data_dir": str(tmp_path / "d")})
    assert_one_line_refusal(waypost_agent("-config-file", str(path), *flags), message,
                            "Must be a server to join WAN cluster")


def test_wan_joins_on_a_server_are_accepted():
    config = load(flags={"start_join_wan": ["10.0.0.1"], "retry_join_wan": ["10.0.0.2"]},
                  dev=True)
    assert config.server and config.settings["start_join_wan"] == ["10.0.0.1"]


def test_a_client_agent_is_accepted_even_without_a_join(tmp_path):
    # As Consul, a client starts without servers and answers "No known Consul servers" until
    # it joins a pool that has one (tests/test_client_agents.py runs it).
    config = load([write(tmp_path / "c.json", {"server": False})])
    assert config.server is False


def test_explicitly_off_protections_and_plain_files_are_accepted(tmp_path):
    config = load([write(tmp_path / "a.json", {
        "acl": {"enabled": False, "default_policy": "deny"}, "acl_datacenter": "dc1",
        "encrypt_verify_incoming": False, "verify_incoming": False, "ca_file": "/ca.pem",
        "bootstrap_expect": 1, "retry_join": [], "http_config": {"block_endpoints": []},
        "server": True})])
    assert config.bootstrap and config.bootstrap_expect == 0
    assert "acl" in config.unsupported and "ca_file" in config.unsupported


# -- item 18: every key of Consul 1.8.7 is accepted -------------------------------------------


def _sample(node, defs, path=()):
    """A value of the type the schema gives, for every declared key below ``node``."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if name == "duration":
            return "1s"
        node = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
    if "enum" in node:
        return node["enum"][0]
    if "anyOf" in node:
        return _sample(node["anyOf"][0], defs, path)
    kind = node.get("type")
    if kind == "object":
        if "properties" in node:
            return {k: _sample(v, defs, path + (k,)) for k, v in node["properties"].items()}
        extra = node.get("additionalProperties")
        return {"k": _sample(extra, defs, path + ("k",))} if isinstance(extra, dict) else {}
    if kind == "array":
        return [_sample(node.get("items", {"type": "string"}), defs, path + (0,))]
    return {"string": "x", "boolean": False, "integer": 1, "number": 1.5}[kind]


def every_key_document(data_dir: str) -> dict:
    """A config setting every key of the schema, safe values where they matter."""
    schema = SchemaSet().schema("agent-config")
    doc = _sample(schema, schema["$defs"])
    for key in ("service", "services", "check", "checks", "watches", "plugins", "segment",
                "segments", "config_entries", "addresses", "unix_sockets", "tagged_addresses"):
        doc.pop(key)
    for key in ("start_join", "retry_join", "start_join_wan", "retry_join_wan",
                "serf_lan_allowed_cidrs", "serf_wan_allowed_cidrs", "primary_gateways"):
        doc[key] = []
    ips = ("bind_addr", "client_addr", "advertise_addr", "advertise_addr_ipv4",
           "advertise_addr_wan", "advertise_addr_wan_ipv4", "serf_lan", "serf_wan")
    doc.update({key: "127.0.0.1" for key in ips})
    doc.update({
        "advertise_addr_ipv6": "::1", "recursors": ["1.1.1.1"], "node_id": NODE_ID,
        "data_dir": data_dir, "datacenter": "dc1", "primary_datacenter": "dc1",
        "acl_datacenter": "dc1", "log_level": "info", "encrypt": "", "server": True,
        "bootstrap_expect": 0, "ca_file": "", "cert_file": "", "key_file": "", "ca_path": "",
        "tls_cipher_suites": "", "tls_min_version": "tls12", "server_name": "",
        "ui_dir": "", "ui_content_path": "/ui/", "log_file": "", "pid_file": "",
        "syslog_facility": "LOCAL0", "revision": "", "version": "", "version_prerelease": "",
        "check_output_max_size": 4096, "protocol": 2, "raft_protocol": 3,
        "segment_limit": 64, "segment_name_limit": 64, "sync_coordinate_rate_target": 64,
        "retry_max": 0, "retry_max_wan": 0, "log_rotate_bytes": 0, "log_rotate_max_files": 0,
    })
    doc["ports"] = {key: 20000 + i for i, key in enumerate(doc["ports"])}
    doc["dns_config"]["udp_answer_limit"] = 3
    doc["limits"]["rpc_rate"] = -1
    doc["performance"]["raft_multiplier"] = 1
    doc["cache"]["entry_fetch_max_burst"] = 2
    doc["autopilot"]["min_quorum"] = 0
    doc["acl"].update(enabled=False, down_policy="extend-cache")
    doc["acl_down_policy"] = "extend-cache"
    doc["acl"]["tokens"].pop("managed_service_provider")
    doc["auto_config"].update(enabled=False, ip_sans=["127.0.0.1"])
    doc["auto_config"]["authorization"]["static"] = {}
    doc["auto_encrypt"] = {"tls": False, "allow_tls": False, "ip_san": ["127.0.0.1"],
                           "dns_san": ["x"]}
    doc["connect"].update(enabled=False, ca_provider="consul", ca_config={})
    doc["http_config"].update(block_endpoints=[], allow_write_http_from=[])
    doc["telemetry"] = {"disable_hostname": True, "prefix_filter": ["+consul.raft"]}
    for key in ("encrypt_verify_incoming", "encrypt_verify_outgoing", "verify_incoming",
                "verify_incoming_rpc", "verify_incoming_https", "verify_outgoing",
                "verify_server_hostname"):
        doc[key] = False
    doc["consul"] = {"coordinate": {"update_batch_size": 128}, "raft": {"election_timeout": "1s"},
                     "server": {"health_interval": "2s"}}
    doc["audit"] = {"enabled": False}
    return doc


def test_every_consul_key_is_accepted_with_warnings(tmp_path):
    doc = every_key_document(str(tmp_path / "data"))
    config = load([write(tmp_path / "all.json", doc)])
    assert "telemetry" in config.unsupported and "ports.https" in config.unsupported
    assert "'audit' is a Consul Enterprise setting and has no effect" in config.warnings
    assert "'acl_token' is deprecated; use 'acl.tokens.default'" in config.warnings
    assert config.settings["acl"]["tokens"]["default"] == "x"  # moved from acl_token


@pytest.mark.skipif(not ORACLE.exists(), reason="no Consul 1.8.7 binary")
def test_the_every_key_document_is_valid_for_consul_1_8_7(tmp_path):
    # Both ways: our schema accepts it (above), and real Consul knows every one of its keys.
    path = write(tmp_path / "all.json", every_key_document(str(tmp_path / "data")))
    out = subprocess.run([str(ORACLE), "validate", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert "Configuration is valid!" in out.stdout, out.stdout + out.stderr


def test_unknown_keys_still_fail_and_keys_match_case_insensitively(tmp_path):
    bad = write(tmp_path / "bad.json", {"nonsense": 1})
    assert error([bad]) == f"{bad}: unknown key 'nonsense'"
    # advertise_addr_wan_ipv6 is refused by Consul 1.8.7 itself (its struct tag is wrong)
    assert "unknown key 'advertise_addr_wan_ipv6'" in error([write(bad, {
        "advertise_addr_wan_ipv6": "::1"})])
    config = load([write(tmp_path / "a.json", {"DataCenter": "dc2", "Ports": {"HTTP": 8555}})])
    assert config.datacenter == "dc2" and config.ports.http == 8555


GO_HARNESS = {  # what sdk/testutil (Consul 1.8) writes for a test server, ports aside
    "node_name": "node-" + NODE_ID, "node_id": NODE_ID, "performance": {"raft_multiplier": 1},
    "bootstrap": True, "server": True, "segments": None, "disable_update_check": True,
    "log_level": "debug", "bind_addr": "127.0.0.1", "addresses": {},
    "acl_enforce_version_8": False, "acl": {"tokens": {}}, "enable_debug": False,
    "connect": {"ca_config": {"cluster_id": "11111111-2222-3333-4444-555555555555"},
                "enabled": True},
    "skip_leave_on_interrupt": True,
}


def test_the_go_test_harness_config_starts_an_agent(tmp_path):
    http, dns, https, lan, wan_port, server, grpc = free_ports(7)
    doc = {**GO_HARNESS, "data_dir": str(tmp_path / "data"), "datacenter": "dc7",
           "ports": {"dns": dns, "http": http, "https": https, "serf_lan": lan,
                     "serf_wan": wan_port, "server": server, "grpc": grpc},
           "dns_config": {"node_ttl": "10s", "udp_answer_limit": 5},
           "recursors": ["127.0.0.1:5353"], "limits": {"kv_max_value_size": 1000},
           "enable_local_script_checks": True, "node_meta": {"rack": "r1"},
           "telemetry": {"statsd_address": "127.0.0.1:8125"}}
    path = write(tmp_path / "config.json", doc)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "agent", "-config-file",
                             str(path)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(base + "/v1/agent/self", timeout=2) as r:
                    info = json.loads(r.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "agent did not come up"
                time.sleep(0.05)
        with urllib.request.urlopen(base + "/v1/agent/members?wan=1", timeout=5) as r:
            wan = json.loads(r.read())
        with urllib.request.urlopen(base + "/v1/agent/members", timeout=5) as r:
            lan_members = json.loads(r.read())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    # item 25: the real configuration, as Consul 1.8.7 shows it for the same file
    debug = info["DebugConfig"]
    assert info["Config"]["Datacenter"] == "dc7" and info["Config"]["NodeID"] == NODE_ID
    assert (debug["HTTPPort"], debug["DNSPort"], debug["HTTPSPort"], debug["GRPCPort"]) == \
        (http, dns, https, grpc)
    assert debug["HTTPSAddrs"] == [f"tcp://127.0.0.1:{https}"]
    assert debug["ConnectEnabled"] is True
    assert debug["ConnectCAConfig"] == {"cluster_id": "11111111-2222-3333-4444-555555555555"}
    assert debug["ConsulRaftElectionTimeout"] == "1s"  # raft_multiplier 1
    assert debug["DisableUpdateCheck"] is True and debug["EnableDebug"] is False
    assert debug["DNSNodeTTL"] == "10s" and debug["DNSUDPAnswerLimit"] == 5
    assert debug["DNSRecursors"] == ["127.0.0.1:5353"] and debug["KVMaxValueSize"] == 1000
    assert debug["EnableLocalScriptChecks"] is True and debug["EnableRemoteScriptChecks"] is False
    assert debug["Logging"]["LogLevel"] == "debug" and debug["NodeMeta"] == {"rack": "r1"}
    assert debug["Telemetry"]["StatsdAddr"] == "127.0.0.1:8125"
    assert debug["Bootstrap"] is True and debug["DevMode"] is False
    assert debug["DataDir"] == str(tmp_path / "data")
    # item 25: the WAN pool names servers node.dc on the WAN port
    assert [(m["Name"], m["Port"]) for m in wan] == [(f"node-{NODE_ID}.dc7", wan_port)]
    assert "wan_join_port" not in wan[0]["Tags"] and wan[0]["Tags"]["dc"] == "dc7"
    assert [(m["Name"], m["Port"]) for m in lan_members] == [(f"node-{NODE_ID}", lan)]
    # accepted with warnings, not refused
    assert "'acl_enforce_version_8' is deprecated" in err
    assert "'connect.enabled' is accepted but not supported yet" in err
    assert "'enable_debug'" not in err and "'acl'" not in err  # no effect asked for


# -- item 12: clear errors --------------------------------------------------------------------


@pytest.mark.parametrize("text,where,words", [
    ('{"datacenter": "dc1", // no\n"node_name": "a"}', "1:23", "comments are not allowed in JSON"),
    ('{"datacenter": "dc1" /* no */}', "1:22", "comments are not allowed in JSON"),
    ('{"ports": {"http": 1,}}', "1:21", "trailing comma before '}'"),
    ('{"recursors": ["1.1.1.1",]}', "1:25", "trailing comma before ']'"),
    ('{"node_name": "a\tb"}', "1:17", "control character U+0009 inside a string"),
    ('{datacenter: "dc1"}', "1:2", "object keys must be in double quotes (found 'datacenter')"),
    ("{'datacenter': 'dc1'}", "1:2", "strings must be in double quotes, not single quotes"),
    ('{"datacenter": "dc1"', "1:21", "unexpected end of file"),
    ('{"server": True}', "1:12", "'True' is not a JSON value"),
    ('{"dns_config": {"a_record_limit": NaN}}', "1:35", "NaN is not a JSON value"),
    ('{"a": 1}\n{"b": 2}', "2:1", "unexpected text after the end of the top-level value"),
])
def test_json_mistakes_are_named_in_words_with_line_and_column(tmp_path, text, where, words):
    path = write(tmp_path / "bad.json", text)
    assert error([path]).startswith(f"{path}:{where}: invalid JSON: {words}")


def test_mistakes_are_printed_once_by_the_cli(tmp_path):
    path = write(tmp_path / "bad.json", '{"datacenter": "dc1", // comment\n}')
    assert_one_line_refusal(waypost_agent("-dev", "-config-file", str(path)),
                            f"{path}:1:23: invalid JSON: comments are not allowed in JSON")


def test_empty_whitespace_deep_and_non_object_files(tmp_path):
    empty = write(tmp_path / "empty.json", "")
    config = load([empty])  # Consul skips a 0-byte file; we say so
    assert config.warnings == (f"{empty}: the file is empty; skipped",)
    blank = write(tmp_path / "blank.json", " \n")
    assert error([blank]).startswith(f"{blank}: the file holds only whitespace")
    assert load([write(tmp_path / "null.json", "null")]).datacenter == "dc1"
    deep = write(tmp_path / "deep.json", "[" * 100_000 + "]" * 100_000)
    assert error([deep]) == f"{deep}:1:101: nested more than 100 levels deep"
    deep_hcl = write(tmp_path / "deep.hcl", "a = " + "{" * 100_000)
    assert error([deep_hcl]).startswith(f"{deep_hcl}:1:")
    for text, kind in (("[1]", "a list"), ('"x"', "a string"), ("3", "a number")):
        path = write(tmp_path / "top.json", text)
        assert error([path]) == f"{path}:1:1: the top level must be an object, not {kind}"


def test_nesting_up_to_the_limit_passes_every_later_step(tmp_path):
    deep: dict = {}
    node = deep
    for _ in range(97):
        node["x"] = {}
        node = node["x"]
    node["leaf"] = 1
    config = load([write(tmp_path / "deep.json", {"snapshot_agent": deep,
                                                   "connect": {"ca_config": deep}})])
    assert "connect.ca_config" in config.unsupported


def test_unknown_or_bad_plugin_settings_name_the_file(tmp_path):
    path = write(tmp_path / "plugins.json", {"plugins": {"nope": {}}})
    assert_one_line_refusal(waypost_agent("-dev", "-config-file", str(path)),
                            f"Error: {path}: plugins.nope: no plugin of that name is loaded")
    path = write(tmp_path / "plugins.json", {"plugins": {"template": {"x": 1}}})
    assert_one_line_refusal(waypost_agent("-dev", "-config-file", str(path)),
                            f"Error: {path}: plugins.template")


def test_hcl_files_are_read_with_errors_at_line_and_column(tmp_path):
    good = write(tmp_path / "agent.hcl", '''
datacenter = "dc3"
ports { http = 8600 }
services { name = "web" port = 80 checks { ttl = "10s" } }
acl { tokens { agent = "t" } }
node_meta { rack = "r1" }
''')
    config = load([good])
    assert config.datacenter == "dc3" and config.ports.http == 8600
    assert [d.service.name for d in config.services] == ["web"]  # one block: a list of one
    assert [c.ttl for c in config.services[0].checks] == [10.0]
    assert config.node_meta == {"rack": "r1"} and "acl" in config.unsupported
    bad = write(tmp_path / "bad.hcl", 'datacenter = "dc3"\nports = @\n')
    assert error([bad]) == f"{bad}:2:9: invalid HCL: Illegal character '@'"
    assert error([write(tmp_path / "bad.hcl", 'ports { http = 1 }\nnonsense = 1\n')]) == \
        f"{tmp_path / 'bad.hcl'}: unknown key 'nonsense'"
    other = write(tmp_path / "agent.conf", 'datacenter = "dc4"')
    config = load_agent_config([str(other)], [], {"node_id": NODE_ID}, False,
                               config_format="hcl", interfaces=fake_interfaces)
    assert config.datacenter == "dc4"


# -- item 12: addresses and go-sockaddr templates ---------------------------------------------


@pytest.mark.parametrize("template,result", [
    ("{{ GetPrivateIP }}", "10.1.2.3"),
    ("{{ GetPublicIP }}", "8.8.4.4"),
    ('{{ GetInterfaceIP "eth0" }}', "10.1.2.3"),
    ('{{ GetInterfaceIPs "eth0" }}', "10.1.2.3 fd00::5"),
    ("{{ GetPrivateIPs }}", "10.1.2.3 10.9.9.9 fd00::5"),
    ('{{ GetAllInterfaces | include "network" "10.0.0.0/8" | attr "address" }}', "10.1.2.3"),
    ('{{ GetAllInterfaces | include "flags" "loopback" | join "address" " " }}', "127.0.0.1 ::1"),
    ('{{ GetAllInterfaces | include "type" "IPv6" | exclude "name" "lo" | attr "address" }}',
     "fd00::5"),
    ('{{ GetPrivateInterfaces | sort "-address" | limit 1 | attr "address" }}', "fd00::5"),
    ('{{ GetDefaultInterfaces | include "type" "ipv4" | attr "name" }}', "eth0"),
    ('{{ GetInterfaceIP "nope" }}', ""),
])
def test_sockaddr_templates(template, result):
    assert evaluate(template, fake_interfaces) == result


@pytest.mark.parametrize("template,words", [
    ("{{ GetBestIP }}", "go-sockaddr function 'GetBestIP' is not supported by Waypost"),
    ('{{ GetAllInterfaces | math "address" "+1" | attr "address" }}', "'math' is not supported"),
    ("{{ GetAllInterfaces }}", "gives a list of interfaces"),
    ('{{ GetAllInterfaces | include "rfc" "1918" | attr "address" }}', "selector 'rfc'"),
    ("{{ GetPrivateIP ", "unbalanced"),
])
def test_unsupported_templates_are_refused_by_name(template, words):
    with pytest.raises(TemplateError, match=words):
        evaluate(template, fake_interfaces)


def test_addresses_are_checked_and_templates_evaluated_at_load(tmp_path):
    config = load(flags={"bind_addr": "{{ GetPrivateIP }}",
                         "client_addr": '127.0.0.1 {{ GetInterfaceIP "eth1" }}',
                         "addresses": {"http": "unix:///tmp/w.sock", "dns": "::1"},
                         "recursors": ["8.8.8.8", "[2001:db8::1]:5353 1.1.1.1:53"]})
    assert config.bind_addr == "10.1.2.3" and config.advertise == "10.1.2.3"
    assert config.client_addrs == ("127.0.0.1", "8.8.4.4") and config.client_addr == "127.0.0.1"
    assert config.http_addr == "unix:///tmp/w.sock" and config.dns_addr == "::1"
    assert config.recursors == ("8.8.8.8", "[2001:db8::1]:5353", "1.1.1.1:53")
    assert "client_addr lists 2 addresses; Waypost listens on the first one only " \
           "(127.0.0.1) for now" in config.warnings
    # bind 0.0.0.0: Consul advertises the one private IPv4 address of an interface that is up
    assert load(flags={"bind_addr": "0.0.0.0"}).advertise == "10.1.2.3"


@pytest.mark.parametrize("flags,message", [
    ({"recursors": ["dns.example.com"]}, "command line: recursors: 'dns.example.com' is not an "
                                         "IP address or IP:port (host names are not supported)"),
    ({"recursors": ["0.0.0.0"]}, "recursors: a DNS recursor address cannot be 0.0.0.0 or ::"),
    ({"recursors": ["1.1.1.1:99999"]}, "recursors: '1.1.1.1:99999' has a bad port"),
    ({"bind_addr": "localhost"}, "command line: bind_addr: 'localhost' is not an IP address"),
    ({"bind_addr": "10.0.0.1 10.0.0.2"}, "bind_addr cannot contain multiple addresses"),
    ({"bind_addr": '{{ GetInterfaceIP "nope" }}'}, "bind_addr: '{{ GetInterfaceIP \"nope\" }}' "
                                                   "gives no address on this machine"),
    ({"bind_addr": "{{ GetBestIP }}"}, "'GetBestIP' is not supported by Waypost"),
    ({"advertise_addr": "0.0.0.0"}, "the advertise address cannot be 0.0.0.0 or ::"),
    ({"client_addr": "unix:///tmp/x.sock"}, "client_addr cannot be a unix socket"),
    ({"client_addr": "127.0.0.1 nope"}, "client_addr: 'nope' is not an IP address"),
    ({"addresses": {"dns": "unix:///tmp/x.sock"}}, "DNS address cannot be a unix socket"),
    ({"addresses": {"https": "not-an-ip"}}, "addresses.https: 'not-an-ip' is not an IP"),
    ({"advertise_addr_wan": "x"}, "advertise_addr_wan: 'x' is not an IP address"),
])
def test_bad_addresses_fail_at_load(flags, message):
    assert message in error(flags=flags)


def test_bind_any_without_one_private_address_asks_for_advertise():
    two = FAKE_IFS + [make_ifaddr("eth3", "192.168.1.1", "24", frozenset({"up"}))]
    assert "several private IPv4 addresses were found (10.1.2.3 192.168.1.1)" in \
        error(flags={"bind_addr": "0.0.0.0"}, interfaces=lambda: two)
    assert "no private IPv4 address was found" in \
        error(flags={"bind_addr": "0.0.0.0"}, interfaces=lambda: FAKE_IFS[:2])


def test_the_machine_interfaces_are_read():
    from agent.config.interfaces import system_interfaces
    found = system_interfaces()
    assert any(i.address == ipaddress.ip_address("127.0.0.1") and "up" in i.flags
               for i in found)


# -- item 13: checks that could only fail later ------------------------------------------------


def test_docker_checks_need_script_checks_through_the_real_cli(tmp_path):
    path = write(tmp_path / "docker.json", {"checks": [
        {"id": "d", "name": "d", "docker_container_id": "abc", "shell": "/bin/sh",
         "script": "true", "interval": "10s"}]})
    assert_one_line_refusal(waypost_agent("-dev", "-config-file", str(path)),
                            f"Error: {path}: checks[0]: Scripts are disabled on this agent")
    path = write(tmp_path / "docker.json", {"services": [{"name": "web", "check": {
        "docker_container_id": "abc", "args": ["/bin/true"], "interval": "10s"}}]})
    assert_one_line_refusal(waypost_agent("-dev", "-config-file", str(path)),
                            f"Error: {path}: services[0]: Scripts are disabled")


def test_a_check_of_a_missing_service_fails_at_load_through_the_real_cli(tmp_path):
    path = write(tmp_path / "check.json", {"services": [{"name": "web"}], "checks": [
        {"id": "c", "name": "c", "service_id": "db", "ttl": "10s"}]})
    assert_one_line_refusal(waypost_agent("-dev", "-config-file", str(path)),
                            f'Error: {path}: checks[0]: ServiceID "db" does not exist')
    ok = write(tmp_path / "ok.json", {"services": [{"name": "web"}], "checks": [
        {"id": "c", "name": "c", "service_id": "web", "ttl": "10s"}]})
    assert load([ok]).checks[0].service_id == "web"


# -- item 25 (pure): the DebugConfig comes from the config -------------------------------------


def test_debug_config_reports_settings_and_hides_secrets(tmp_path):
    from gateway.http.debug_config import debug_config
    config = load([write(tmp_path / "a.json", {
        "log_level": "WARN", "acl": {"tokens": {"agent": "secret-token"}},
        "check_update_interval": "1m", "session_ttl_min": "5s", "ui_content_path": "myui",
        "performance": {"raft_multiplier": 2}, "http_config": {"response_headers": {"X-A": "b"}},
        "unix_sockets": {"mode": "0770"}, "watches": [{"type": "nodes", "args": ["/bin/true"]}],
        "telemetry": {"prefix_filter": ["+a", "-b"], "circonus_api_token": "secret-token"},
        "services": [{"name": "web", "port": 80, "check": {"ttl": "10s"}}],
        "checks": [{"id": "mem", "name": "Memory", "ttl": "30s", "token": "secret-token"}],
        "enable_script_checks": True, "disable_remote_exec": False})])
    debug = debug_config(config, "1.8.7")
    assert "secret-token" not in json.dumps(debug)
    assert debug["Logging"]["LogLevel"] == "WARN"  # as spelled, like Consul
    assert (debug["CheckUpdateInterval"], debug["SessionTTLMin"]) == ("1m0s", "5s")
    assert debug["UIContentPath"] == "/myui/" and debug["UnixSocketMode"] == "0770"
    assert debug["ConsulRaftElectionTimeout"] == "2s"
    assert debug["ConsulRaftLeaderLeaseTimeout"] == "1s"
    assert debug["HTTPResponseHeaders"] == {"X-A": "b"} and debug["Watches"] == [{}]
    assert debug["Telemetry"]["AllowedPrefixes"] == ["a"]
    assert debug["Telemetry"]["BlockedPrefixes"] == ["b"]
    assert debug["EnableRemoteScriptChecks"] is True and debug["DisableRemoteExec"] is False
    assert [s["Name"] for s in debug["Services"]] == ["web"]
    assert debug["Services"][0]["Checks"][0]["TTL"] == "10s"
    assert [(c["ID"], c["TTL"], c["Token"]) for c in debug["Checks"]] == \
        [("mem", "30s", "hidden")]


def test_reference_dev_debug_config_keys_are_kept():
    from gateway.http.debug_config import debug_config
    reference = Path("/work/shared/reference/consul-1.8.7/08_agent_self.txt")
    if not reference.exists():
        pytest.skip("no recorded Consul answer")
    body = reference.read_text().split("\n\n", 1)[1]
    expected = json.loads(body)["DebugConfig"]
    config = load(dev=True, flags={"node_name": "oracle", "ports": {"http": 8500}})
    debug = debug_config(config, "1.8.7")
    assert sorted(debug) == sorted(expected)


def test_new_agent_flags_map_to_config_keys():
    from gateway.cli.agent_command import flag_set, flag_values
    values, _ = flag_set().parse(["-node-meta", "rack:r1", "-node-meta", "url:http://x",
                                  "-grpc-port", "8502", "-retry-interval", "5s",
                                  "-join-wan", "10.0.0.1", "-config-format", "hcl"])
    flags = flag_values(values)
    assert flags["node_meta"] == {"rack": "r1", "url": "http://x"}
    assert flags["ports"] == {"grpc": 8502} and flags["retry_interval"] == "5s"
    assert flags["start_join_wan"] == ["10.0.0.1"] and values.config_format == "hcl"
    out = waypost_agent("-dev", "-node-meta", "novalue")
    assert_one_line_refusal(out, "-node-meta: 'novalue' is not key:value")


def test_the_node_id_is_kept_in_the_data_dir(tmp_path):
    """Without node_id, the first start writes data_dir/node-id and later starts reuse it."""
    from agent.config.load import build_config
    from agent.config.validate import ConfigError

    first = build_config([], {"data_dir": str(tmp_path)}, dev=False)
    assert (tmp_path / "node-id").read_text() == first.node_id
    assert build_config([], {"data_dir": str(tmp_path)}, dev=False).node_id == first.node_id
    configured = "00000000-0000-0000-0000-00000000000a"
    assert build_config([], {"data_dir": str(tmp_path), "node_id": configured},
                        dev=False).node_id == configured
    (tmp_path / "node-id").write_text("not-a-uuid")
    with pytest.raises(ConfigError, match="node-id.*not a UUID"):
        build_config([], {"data_dir": str(tmp_path)}, dev=False)
