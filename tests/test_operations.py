"""Operating an agent: maintenance, reload from config files, watches (CLI and configured)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.agentproc import ROOT, AgentProcess
from tests.test_cli_agent import waypost


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_maintenance_over_http_and_cli(agent):
    addr = ["-http-addr", agent.base]
    assert waypost("maint", *addr).stdout == ""  # nothing in maintenance: empty output
    out = waypost("maint", *addr, "-enable", "-reason", "kernel upgrade")
    assert out.returncode == 0 and out.stdout.strip() == "Node entered maintenance mode"
    listing = waypost("maint", *addr).stdout
    assert "Node:" in listing and "Reason: kernel upgrade" in listing
    checks = agent.json("GET", "/v1/health/state/critical")[2]
    maint = [c for c in checks if c["CheckID"] == "_node_maintenance"]
    assert maint and maint[0]["Notes"] == "kernel upgrade" and maint[0]["Name"] == "Node Maintenance Mode"
    assert waypost("maint", *addr, "-disable").stdout.strip() == "Node left maintenance mode"
    assert waypost("maint", *addr).stdout == ""

    agent.request("PUT", "/v1/agent/service/register", json.dumps({"Name": "mweb", "Port": 1}))
    out = waypost("maint", *addr, "-enable", "-service", "mweb")
    assert out.stdout.strip() == "Service entered maintenance mode: mweb"
    listing = waypost("maint", *addr).stdout
    assert "Service:" in listing and "ID:     mweb" in listing
    assert agent.json("GET", "/v1/health/service/mweb?passing")[2] == []
    waypost("maint", *addr, "-disable", "-service", "mweb")
    assert len(agent.json("GET", "/v1/health/service/mweb?passing")[2]) == 1
    missing = waypost("maint", *addr, "-enable", "-service", "nope")
    assert missing.returncode == 1 and "No service registered" in missing.stderr


def test_maintenance_endpoint_errors(agent):
    status, _, body = agent.request("PUT", "/v1/agent/maintenance")
    assert (status, body) == (400, b"Missing value for enable")
    status, _, body = agent.request("PUT", "/v1/agent/maintenance?enable=maybe")
    assert status == 400 and body.startswith(b"Invalid value for enable")
    status, _, body = agent.request("PUT", "/v1/agent/service/maintenance/nope?enable=true")
    assert status == 404


@pytest.fixture
def config_agent(tmp_path):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "10-web.json").write_text(json.dumps({"service": {
        "name": "cweb", "port": 80, "check": {"id": "cweb-ttl", "ttl": "60s"}}}))
    (conf / "20-db.json").write_text(json.dumps({"services": [{"name": "cdb", "port": 5432}]}))
    proc = AgentProcess("-config-dir", str(conf)).start()
    proc.conf = conf
    yield proc
    proc.stop()


def services(agent) -> set:
    return set(agent.json("GET", "/v1/agent/services")[2])


def test_reload_adds_changes_and_removes_config_services(config_agent):
    agent = config_agent
    assert services(agent) == {"cweb", "cdb"}
    agent.request("PUT", "/v1/agent/check/pass/cweb-ttl?note=up")
    agent.request("PUT", "/v1/agent/service/register", json.dumps({"Name": "apisvc"}))
    (agent.conf / "20-db.json").unlink()
    (agent.conf / "30-cache.json").write_text(json.dumps({"service": {"name": "ccache"}}))
    out = waypost("reload", "-http-addr", agent.base)
    assert out.returncode == 0 and "reload triggered" in out.stdout
    # The API registration stays; config ones follow the files.
    assert services(agent) == {"cweb", "ccache", "apisvc"}
    # The unchanged TTL check kept its state across the reload.
    check = agent.json("GET", "/v1/agent/checks")[2]["cweb-ttl"]
    assert (check["Status"], check["Output"]) == ("passing", "up")
    # SIGHUP does the same.
    (agent.conf / "30-cache.json").unlink()
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: services(agent) == {"cweb", "apisvc"}, what="the SIGHUP reload")


def test_reload_with_a_bad_file_keeps_the_running_config(config_agent):
    agent = config_agent
    (agent.conf / "40-bad.json").write_text('{"service": {"name": 12}}')
    out = waypost("reload", "-http-addr", agent.base)
    assert out.returncode == 1 and "40-bad.json" in out.stderr
    assert services(agent) == {"cweb", "cdb"}
    status, _, body = agent.request("PUT", "/v1/agent/reload")
    assert status == 500 and b"40-bad.json" in body


def test_watch_cli_prints_once_without_handler(agent):
    agent.request("PUT", "/v1/kv/watch/once", "v1")
    out = waypost("watch", "-http-addr", agent.base, "-type", "key", "-key", "watch/once")
    assert out.returncode == 0
    assert json.loads(out.stdout)["Key"] == "watch/once"


def test_watch_cli_runs_handler_once_per_change(agent, tmp_path):
    log = tmp_path / "calls"
    handler = f"cat >> {log}; echo >> {log}"
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "watch",
                             "-http-addr", agent.base, "-type", "keyprefix", "-prefix", "wprefix/",
                             handler], cwd=ROOT)
    try:
        wait_until(lambda: log.exists() and log.read_text().count("\n\n") >= 1, what="first call")
        agent.request("PUT", "/v1/kv/wprefix/a", "1")
        wait_until(lambda: log.read_text().count("\n\n") >= 2, what="second call")
        agent.request("PUT", "/v1/kv/other/x", "1")  # a different prefix: no call
        agent.request("PUT", "/v1/kv/wprefix/a", "1")  # same value, new index: still a change
        wait_until(lambda: log.read_text().count("\n\n") >= 3, what="third call")
        time.sleep(0.5)
        calls = [json.loads(c) for c in log.read_text().split("\n\n") if c.strip()]
        assert len(calls) == 3
        assert calls[0] == []
        assert [e["Key"] for e in calls[1]] == ["wprefix/a"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_configured_watch_runs_its_handler(tmp_path):
    log = tmp_path / "calls"
    conf = tmp_path / "watch.json"
    conf.write_text(json.dumps({"watches": [{"type": "service", "service": "wsvc",
                                             "handler": f"cat >> {log}; echo >> {log}"}]}))
    agent = AgentProcess("-config-file", str(conf)).start()
    try:
        wait_until(lambda: log.exists(), what="the first handler call")
        agent.request("PUT", "/v1/agent/service/register", json.dumps({"Name": "wsvc", "Port": 9}))
        wait_until(lambda: log.read_text().count("\n\n") >= 2, what="the change")
        calls = [json.loads(c) for c in log.read_text().split("\n\n") if c.strip()]
        assert calls[0] == [] and calls[1][0]["Service"]["Service"] == "wsvc"
    finally:
        agent.stop()
