"""`waypost sidekick` against a real agent: announce, heartbeat, probe, wrap, survive, leave.

Each test runs the sidekick as a subprocess. The SIGKILL test waits for the agent's reaper,
which runs every 30 s (Consul's CheckReapInterval): the sidekick is given `-deregister-after
1s`, which Waypost takes as given (Consul would raise it to its 1 m minimum), so the service
goes within TTL + 1 s + one reaper period.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agentproc import ROOT, AgentProcess

TTL = "2s"


def wait_for(predicate: Callable[[], object], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sidekick(agent: AgentProcess, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "sidekick",
                             "-http-addr", agent.base, "-ttl", TTL, *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 10.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"sidekick did not exit: {err}")
    return proc.returncode, err


def check(agent: AgentProcess, service_id: str) -> dict | None:
    status, _, checks = agent.json("GET", "/v1/agent/checks")
    assert status == 200
    return checks.get(f"sidekick:{service_id}")


def services(agent: AgentProcess) -> dict:
    return agent.json("GET", "/v1/agent/services")[2]


@pytest.fixture
def cleanup():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_announces_with_passing_check_and_leaves_on_sigterm(agent, cleanup):
    proc = sidekick(agent, "-name", "redis", "-id", "redis-1", "-port", "6379",
                    "-address", "10.0.0.7", "-tag", "primary", "-tag", "v6", "-meta", "zone=a")
    cleanup.append(proc)
    found = wait_for(lambda: (check(agent, "redis-1") or {}).get("Status") == "passing",
                     10, "a passing heartbeat")
    assert found
    service = services(agent)["redis-1"]
    assert (service["Service"], service["Port"], service["Address"]) == ("redis", 6379,
                                                                         "10.0.0.7")
    assert service["Tags"] == ["primary", "v6"] and service["Meta"] == {"zone": "a"}
    health = agent.json("GET", "/v1/health/service/redis?passing")[2]
    assert [entry["Service"]["ID"] for entry in health] == ["redis-1"]
    definition = check(agent, "redis-1")
    assert definition["Type"] == "ttl" and definition["ServiceID"] == "redis-1"
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 0, err
    # Gone at once: the sidekick deregistered before exiting.
    assert "redis-1" not in services(agent)
    assert check(agent, "redis-1") is None
    assert "deregistered service redis-1" in err


def test_sigint_deregisters_too(agent, cleanup):
    proc = sidekick(agent, "-name", "cache", "-id", "cache-int")
    cleanup.append(proc)
    wait_for(lambda: "cache-int" in services(agent), 10, "registration")
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert code == 0, err
    assert "cache-int" not in services(agent)


def test_sigkill_goes_critical_then_is_reaped():
    agent = AgentProcess().start()
    try:
        proc = sidekick(agent, "-name", "doomed", "-id", "doomed-1", "-deregister-after", "1s")
        wait_for(lambda: (check(agent, "doomed-1") or {}).get("Status") == "passing", 10,
                 "a passing heartbeat")
        assert check(agent, "doomed-1")["Definition"]["DeregisterCriticalServiceAfter"] == "1s"
        killed = time.monotonic()
        proc.kill()
        proc.communicate()
        wait_for(lambda: (check(agent, "doomed-1") or {}).get("Status") == "critical", 5,
                 "the TTL to lapse")
        assert time.monotonic() - killed <= 2.0 + 1.0  # at most one TTL after the last beat
        # Reaped once critical for 1 s, at the reaper's next 30 s tick.
        wait_for(lambda: "doomed-1" not in services(agent), 2 + 1 + 30 + 5, "the reaper")
    finally:
        agent.stop()


def _restarted(old: AgentProcess) -> AgentProcess:
    new = AgentProcess()
    new.port = old.port
    position = new.args.index("-http-port") + 1
    new.args[position] = str(old.port)
    return new.start()


def test_survives_an_agent_restart(cleanup):
    agent = AgentProcess().start()
    try:
        proc = sidekick(agent, "-name", "phoenix", "-id", "phoenix-1")
        cleanup.append(proc)
        wait_for(lambda: "phoenix-1" in services(agent), 10, "registration")
        agent.stop()
        time.sleep(1.0)  # a few heartbeats fail meanwhile
        agent = _restarted(agent)  # a -dev agent starts empty
        wait_for(lambda: (check(agent, "phoenix-1") or {}).get("Status") == "passing", 10,
                 "the sidekick to register again")
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
        assert code == 0, err
        assert "the agent is reachable again" in err and "registering again" in err
        assert "phoenix-1" not in services(agent)
    finally:
        agent.stop()


def test_wrapped_command_exit_deregisters_and_propagates_code(agent, cleanup):
    proc = sidekick(agent, "-name", "job", "-id", "job-1", "--", "sh", "-c", "sleep 2; exit 3")
    cleanup.append(proc)
    wait_for(lambda: "job-1" in services(agent), 10, "registration")
    assert "running" in wait_for(lambda: (check(agent, "job-1") or {}).get("Output"), 5,
                                 "heartbeat output")
    code, err = finish(proc)
    assert code == 3, err
    assert "job-1" not in services(agent)


def test_wrapped_sleep_exit_zero(agent, cleanup):
    proc = sidekick(agent, "-name", "nap", "-id", "nap-1", "--", "sleep", "2")
    cleanup.append(proc)
    wait_for(lambda: "nap-1" in services(agent), 10, "registration")
    code, err = finish(proc)
    assert code == 0, err
    assert "nap-1" not in services(agent)


def test_sigterm_is_forwarded_to_the_wrapped_command(agent, cleanup):
    proc = sidekick(agent, "-name", "svc", "-id", "svc-term", "--", "sleep", "60")
    cleanup.append(proc)
    wait_for(lambda: "svc-term" in services(agent), 10, "registration")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err
    assert time.monotonic() - started < 5
    assert "svc-term" not in services(agent)


class _Target(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = f"status {type(self).status}".encode()
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_http_probe_flips_the_status(agent, cleanup):
    handler = type("Target", (_Target,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    try:
        proc = sidekick(agent, "-name", "web", "-id", "web-probe", "-check-http", url)
        cleanup.append(proc)

        def status_is(wanted: str) -> bool:
            return (check(agent, "web-probe") or {}).get("Status") == wanted

        wait_for(lambda: status_is("passing"), 10, "passing")
        assert "200" in check(agent, "web-probe")["Output"]
        handler.status = 429
        wait_for(lambda: status_is("warning"), 5, "warning")
        handler.status = 503
        wait_for(lambda: status_is("critical"), 5, "critical")
        assert "503" in check(agent, "web-probe")["Output"]
        handler.status = 204
        wait_for(lambda: status_is("passing"), 5, "passing again")
    finally:
        server.shutdown()
        server.server_close()


def test_cmd_probe_maps_exit_codes(agent, cleanup, tmp_path: Path):
    flag = tmp_path / "code"
    flag.write_text("1")
    proc = sidekick(agent, "-name", "cmd", "-id", "cmd-probe", "-check-cmd",
                    f"echo probing; exit $(cat {flag})")
    cleanup.append(proc)
    wait_for(lambda: (check(agent, "cmd-probe") or {}).get("Status") == "warning", 10,
             "warning")
    assert "probing" in check(agent, "cmd-probe")["Output"]
    flag.write_text("0")
    wait_for(lambda: (check(agent, "cmd-probe") or {}).get("Status") == "passing", 5,
             "passing")


def test_service_file_is_registered_with_its_own_checks(agent, cleanup, tmp_path: Path):
    path = tmp_path / "svc.json"
    path.write_text(json.dumps({"service": {"name": "filed", "id": "filed-1", "port": 7000,
                                            "checks": [{"name": "extra", "ttl": "30s"}]}}))
    proc = sidekick(agent, "-service-file", str(path))
    cleanup.append(proc)
    wait_for(lambda: (check(agent, "filed-1") or {}).get("Status") == "passing", 10,
             "a passing heartbeat")
    checks = agent.json("GET", "/v1/agent/checks")[2]
    assert {c["Name"] for c in checks.values() if c["ServiceID"] == "filed-1"} == {
        "extra", "Sidekick heartbeat for filed-1"}
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == 0


def test_bad_service_file_reports_the_agents_400(agent, tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"Name": "bad", "Port": 70000}))
    code, err = finish(sidekick(agent, "-service-file", str(path), "--", "sleep", "30"))
    assert code == 1
    assert err.startswith(f"Error: the agent refused the service definition in {path}: 400 ")
    assert "Port" in err and len(err.strip().splitlines()) == 1
    assert "bad" not in services(agent)


@pytest.mark.parametrize("args, message", [
    ((), "-name (or -service-file) is required"),
    (("-name", "x", "-ttl", "soon"), 'invalid duration "soon" for -ttl'),
    (("-name", "x", "-ttl", "100ms"), "too short"),
    (("-name", "x", "-check-http", "ftp://h/"), "-check-http needs an http"),
    (("-name", "x", "-check-tcp", "nohost"), "-check-tcp needs HOST:PORT"),
    (("-name", "x", "-check-tcp", "h:1", "-check-cmd", "true"), "give only one of"),
    (("-name", "x", "-meta", "novalue"), 'invalid -meta "novalue"'),
])
def test_bad_flags_are_one_line_errors(agent, args, message):
    code, err = finish(sidekick(agent, *args))
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
