"""What an agent keeps in data_dir: API registrations, TTL states and the state file.

End to end with real agent processes (SIGTERM, kill -9, damaged files), then the rules in
process with a fake clock (expiry of a saved TTL state, config wins, a refusing disk).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet import task

from agent.agent import make_agent
from agent.config.model import AgentConfig
from agent.definitions import CheckSpec, ServiceDefinition
from agent.errors import WaypostError
from agent.local.persist import LocalPersistence, file_name
from agent.structs import Service
from tests.agentproc import ROOT, AgentProcess, free_ports

WEB = {"Name": "web", "Port": 80, "Check": {"TTL": "300s"}}


def start(data_dir: Path, *args: str) -> AgentProcess:
    return AgentProcess("-data-dir", str(data_dir), *args).start()


def check_of(agent: AgentProcess, check_id: str) -> dict | None:
    status, _, checks = agent.json("GET", "/v1/agent/checks")
    assert status == 200
    return checks.get(check_id)


def catalog_status(agent: AgentProcess, check_id: str) -> str | None:
    _, _, rows = agent.json("GET", "/v1/health/node/oracle")
    return next((r["Status"] for r in rows if r["CheckID"] == check_id), None)


def register_and_pass(agent: AgentProcess) -> None:
    assert agent.request("PUT", "/v1/agent/service/register", json.dumps(WEB))[0] == 200
    assert agent.request("PUT", "/v1/agent/check/pass/service:web?note=fine")[0] == 200


@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
def test_registrations_and_ttl_state_survive_a_restart(tmp_path, how):
    agent = start(tmp_path)
    try:
        register_and_pass(agent)
        if how == "sigterm":
            assert agent.stop() == 0
        else:
            agent.proc.kill()  # what was acknowledged must already be on disk
            agent.proc.wait(10)
    finally:
        agent.stop()
    agent = start(tmp_path)
    try:
        status, _, services = agent.json("GET", "/v1/agent/services")
        assert services["web"]["Port"] == 80
        check = check_of(agent, "service:web")
        assert (check["Status"], check["Output"]) == ("passing", "fine")  # within its TTL
        assert catalog_status(agent, "service:web") == "passing"
        assert agent.request("PUT", "/v1/agent/check/warn/service:web?note=hmm")[0] == 200
        assert check_of(agent, "service:web")["Status"] == "warning"
        assert catalog_status(agent, "service:web") == "warning"
    finally:
        agent.stop()


def test_deregistration_removes_the_files(tmp_path):
    agent = start(tmp_path)
    try:
        register_and_pass(agent)
        standalone = {"Name": "solo", "TTL": "60s"}
        assert agent.request("PUT", "/v1/agent/check/register", json.dumps(standalone))[0] == 200
        assert (tmp_path / "services" / file_name("web")).is_file()
        assert (tmp_path / "checks" / "state" / file_name("service:web")).is_file()
        assert agent.request("PUT", "/v1/agent/service/deregister/web")[0] == 200
        assert agent.request("PUT", "/v1/agent/check/deregister/solo")[0] == 200
        for directory in ("services", "checks", "checks/state"):
            assert [p for p in (tmp_path / directory).iterdir() if p.is_file()] == []
    finally:
        agent.stop()
    agent = start(tmp_path)
    try:
        assert agent.json("GET", "/v1/agent/services")[2] == {}
        assert agent.json("GET", "/v1/agent/checks")[2] == {}
    finally:
        agent.stop()


def test_a_damaged_file_is_logged_by_name_and_skipped(tmp_path):
    agent = start(tmp_path)
    try:
        register_and_pass(agent)
        db = {"Name": "db", "Port": 5432}
        assert agent.request("PUT", "/v1/agent/service/register", json.dumps(db))[0] == 200
    finally:
        agent.stop()
    damaged = tmp_path / "services" / file_name("db")
    damaged.write_text('{"version": 1, "service": {"id": "db", "na')  # torn in the middle
    agent = AgentProcess("-data-dir", str(tmp_path), "-log-level", "info").start()
    try:
        services = agent.json("GET", "/v1/agent/services")[2]
        assert set(services) == {"web"}
        log = agent.log_so_far()
        assert str(damaged) in log and "Traceback" not in log
    finally:
        agent.stop()


def agent_command(data_dir: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    http, dns = free_ports(2)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "agent", "-server", "-bootstrap", "-node", "n1",
         "-data-dir", str(data_dir), "-bind", "127.0.0.1", "-client", "127.0.0.1",
         "-http-port", str(http), "-dns-port", str(dns), "-log-level", "warn"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=timeout)


@pytest.mark.parametrize("content, problem", [
    ('{"version": 1, "index": 3, "nod', "not valid JSON"),
    ("", "empty"),
    ("[1, 2]", "not a snapshot"),
    ('{"version": 99}', "unsupported snapshot version 99"),
    ('{"version": 1, "index": 3}', "missing"),
    ('{"version": 1, "index": "x", "table_index": {}, "service_index": {}, "kv_index": 0, '
     '"nodes": [], "services": [], "checks": [], "kv": [], "tombstones": {}}', "index"),
])
def test_a_damaged_state_file_stops_start_up_in_one_line(tmp_path, content, problem):
    state = tmp_path / "state" / "snapshot.json"
    state.parent.mkdir()
    state.write_text(content)
    out = agent_command(tmp_path)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(state) in lines[0] and problem in lines[0]
    assert "Traceback" not in out.stderr and "Unhandled" not in out.stderr


# -- in process ----------------------------------------------------------------------------


def web_definition(ttl: float = 30.0) -> ServiceDefinition:
    spec = CheckSpec(check_id="service:web", name="web ttl", service_id="web", ttl=ttl,
                     type="ttl")
    return ServiceDefinition(service=Service(node="", id="web", name="web", port=80),
                             checks=(spec,), token="secret-token")


def in_process(data_dir: Path, clock: task.Clock, **config) -> object:
    agent = make_agent(AgentConfig(node_name="me", node_id="00000000-0000-0000-0000-000000000001",
                                   data_dir=str(data_dir), dev=True, **config), clock)
    agent.startService()
    return agent


def test_a_saved_ttl_state_holds_until_its_ttl_runs_out(tmp_path):
    first = task.Clock()
    agent = in_process(tmp_path, first)
    agent.local.add_service(web_definition(ttl=30))
    agent.local.update_ttl("service:web", "passing", "ok")
    agent.stopService()
    # Back 10 s later: still passing, and critical once the remaining 20 s have passed.
    clock = task.Clock()
    clock.advance(first.seconds() + 10)
    agent = in_process(tmp_path, clock)
    assert agent.local.checks["service:web"].check.status == "passing"
    clock.advance(20)
    assert agent.local.checks["service:web"].check.status == "critical"
    agent.stopService()
    # Back after the TTL ran out: the check starts critical.
    later = task.Clock()
    later.advance(first.seconds() + 31)
    agent = in_process(tmp_path, later)
    assert agent.local.checks["service:web"].check.status == "critical"
    agent.stopService()


def test_the_token_is_kept_privately(tmp_path):
    agent = in_process(tmp_path, task.Clock())
    agent.local.add_service(web_definition())
    path = tmp_path / "services" / file_name("web")
    assert json.loads(path.read_text())["token"] == "secret-token"
    assert path.stat().st_mode & 0o077 == 0
    agent.stopService()
    restored = LocalPersistence(tmp_path).load()
    assert restored.services[0][1] == "secret-token"


def test_config_registrations_are_not_persisted_and_win_over_saved_ones(tmp_path):
    config_web = ServiceDefinition(service=Service(node="", id="web", name="web", port=9999),
                                   checks=())
    agent = in_process(tmp_path, task.Clock())
    agent.local.add_service(web_definition())  # through the API: persisted
    agent.stopService()
    agent = in_process(tmp_path, task.Clock(), services=(config_web,))
    assert agent.local.services["web"].port == 9999
    assert not (tmp_path / "services" / file_name("web")).exists()
    agent.stopService()


def test_dev_without_data_dir_keeps_nothing():
    agent = make_agent(AgentConfig(node_name="me", node_id="", dev=True), task.Clock())
    assert agent.persistence is None and agent.server.legacy_state_path() is None
    assert not agent.server.durable


def test_a_registration_the_disk_refuses_fails_whole(tmp_path):
    agent = in_process(tmp_path, task.Clock())
    (tmp_path / "services").write_text("not a directory")  # every write there fails
    with pytest.raises(WaypostError, match="persist"):
        agent.local.add_service(web_definition())
    assert "web" not in agent.local.services
    assert "web" not in agent.store.catalog.services.get("me", {})
    assert not (tmp_path / "checks" / file_name("service:web")).exists()
    agent.stopService()


def test_sigterm_and_sigint_leave_the_state_consistent(tmp_path):
    # A clean stop writes nothing half: every file left in data_dir parses.
    agent = start(tmp_path)
    try:
        register_and_pass(agent)
        agent.proc.send_signal(signal.SIGINT)
        assert agent.proc.wait(10) == 0
    finally:
        agent.stop()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.parent.name in ("services", "checks", "state"):
            json.loads(path.read_text())
        assert not path.name.endswith(".tmp")


# -- the state of a version before the write-ahead log ----------------------------------------


def durable_agent(data_dir: Path):
    from tests.inline import InlinePool, ThreadedClock
    clock = ThreadedClock()
    agent = make_agent(AgentConfig(node_name="me", node_id="00000000-0000-0000-0000-000000000001",
                                   data_dir=str(data_dir)), clock, pool=InlinePool())
    return agent, clock


def test_an_old_state_file_is_restored_once_then_the_log_takes_over(tmp_path):
    from agent.fsm.apply import FSM
    from agent.fsm.commands import KVOperation
    from agent.state import snapshot
    from agent.state.store import StateStore
    from agent.structs import KVEntry
    old = StateStore()
    FSM(old).apply(57, KVOperation("set", KVEntry("from-old", b"1")))
    legacy = tmp_path / "state" / "snapshot.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps(snapshot.dump(old)))
    agent, clock = durable_agent(tmp_path)
    agent.startService()
    for _ in range(100):
        clock.advance(0)  # the first snapshot of the log is written a chunk per turn
    assert agent.store.kv.get("from-old")[1].value == b"1"
    assert not legacy.exists() and list((tmp_path / "raft" / "snapshots").glob("*.snap"))
    agent.facade.write(KVOperation("set", KVEntry("new", b"2")))
    agent.stopService()
    again, _ = durable_agent(tmp_path)
    again.startService()
    assert again.store.kv.get("from-old")[1].modify_index == 57
    assert again.store.kv.get("new")[1].value == b"2"
    again.stopService()


def test_a_data_dir_in_use_by_another_agent_is_refused(tmp_path):
    from agent.agent import DataDirError
    first, _ = durable_agent(tmp_path)
    first.load_state()
    second, _ = durable_agent(tmp_path)
    with pytest.raises(DataDirError, match="in use by another process"):
        second.load_state()
    first.stopService()
