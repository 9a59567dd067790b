"""The `waypost` command line against a real agent process, and the agent command itself."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from tests.agentproc import ROOT, AgentProcess, free_port


def waypost(*args: str, stdin: str | None = None, env: dict | None = None, timeout: float = 30):
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))


def test_members(agent):
    out = waypost("members", "-http-addr", f"127.0.0.1:{agent.port}")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()[:2]
    assert header.split()[:4] == ["Node", "Address", "Status", "Type"]
    assert row.split()[:4] == ["oracle", f"127.0.0.1:{agent.serf_lan}", "alive", "server"]


def test_kv_round_trip_and_export_import(agent):
    addr = ["-http-addr", agent.base]
    assert waypost("kv", "put", *addr, "cli/a", "one").stdout.strip() == "Success! Data written to: cli/a"
    assert waypost("kv", "put", *addr, "-flags", "7", "cli/b", "-").returncode == 0
    assert waypost("kv", "put", *addr, "cli/c", "-", stdin="from stdin").returncode == 0
    assert waypost("kv", "get", *addr, "cli/c").stdout == "from stdin\n"
    listing = waypost("kv", "get", *addr, "-recurse", "cli/").stdout.splitlines()
    assert listing == ["cli/a:one", "cli/b:", "cli/c:from stdin"]  # "-" read an empty stdin
    exported = waypost("kv", "export", *addr, "cli/")
    data = json.loads(exported.stdout)
    assert [(d["key"], d["flags"]) for d in data] == [("cli/a", 0), ("cli/b", 7), ("cli/c", 0)]
    assert waypost("kv", "delete", *addr, "-recurse", "cli/").returncode == 0
    missing = waypost("kv", "get", *addr, "cli/a")
    assert missing.returncode == 1 and "No key exists at: cli/a" in missing.stderr
    imported = waypost("kv", "import", *addr, "-", stdin=exported.stdout)
    assert imported.returncode == 0 and "Imported: cli/b" in imported.stdout
    status, _, body = agent.json("GET", "/v1/kv/cli/b")
    assert body[0]["Flags"] == 7


def test_kv_import_rejects_bad_input_whole(agent):
    bad = json.dumps([{"key": "imp/ok", "flags": 0, "value": "b2s="},
                      {"key": "imp/bad", "flags": 0, "value": "%%%not base64"}])
    out = waypost("kv", "import", "-http-addr", agent.base, "-", stdin=bad)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert agent.request("GET", "/v1/kv/imp/ok")[0] == 404  # nothing written


def test_services_register_file_and_catalog(agent, tmp_path):
    definition = tmp_path / "svc.json"
    definition.write_text(json.dumps({"service": {"name": "clisvc", "port": 7000,
                                                  "tags": ["blue"], "check": {"ttl": "30s"}}}))
    out = waypost("services", "register", "-http-addr", agent.base, str(definition))
    assert out.returncode == 0, out.stderr
    services = waypost("catalog", "services", "-http-addr", agent.base, "-tags").stdout
    assert any(line.split()[:2] == ["clisvc", "blue"] for line in services.splitlines())
    nodes = waypost("catalog", "nodes", "-http-addr", agent.base, "-service", "clisvc").stdout
    assert "oracle" in nodes
    out = waypost("services", "deregister", "-http-addr", agent.base, str(definition))
    assert out.returncode == 0, out.stderr
    assert "clisvc" not in waypost("catalog", "services", "-http-addr", agent.base).stdout


def test_address_from_environment(agent):
    out = waypost("kv", "put", "envkey", "v", env={"CONSUL_HTTP_ADDR": agent.base})
    assert out.returncode == 0, out.stderr
    out = waypost("kv", "get", "envkey", env={"WAYPOST_HTTP_ADDR": f"127.0.0.1:{agent.port}"})
    assert out.stdout == "v\n"


def test_unreachable_agent_is_one_clear_line():
    out = waypost("members", "-http-addr", f"127.0.0.1:{free_port()}")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Error connecting to agent" in out.stderr


def test_agent_rejects_bad_flags_and_config(tmp_path):
    out = waypost("agent", "-dev", "-bogus")
    assert out.returncode == 1 and "-bogus" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"datacenter": "dc1",\n "ports": {"http": 1,}}')
    out = waypost("agent", "-dev", "-config-file", str(bad))
    assert out.returncode == 1 and f"{bad}:2:" in out.stderr and "Traceback" not in out.stderr
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"nonsense": 1}')
    out = waypost("agent", "-dev", "-config-dir", str(tmp_path / "missing"))
    assert out.returncode == 1 and "not a directory" in out.stderr
    out = waypost("agent", "-dev", "-config-file", str(unknown))
    assert out.returncode == 1 and "nonsense" in out.stderr


def test_agent_port_in_use_fails_clearly():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = waypost("agent", "-dev", "-http-port", str(port), "-log-level", "error")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "Error starting agent" in out.stderr


def test_agent_flag_spellings_and_clean_shutdown():
    # Double dashes and -flag value forms, as unit files use them.
    proc = AgentProcess("--datacenter=DC7", "--node", "spelled").start()
    try:
        status, _, info = proc.json("GET", "/v1/agent/self")
        assert info["Config"]["Datacenter"] == "dc7"
        assert info["Config"]["NodeName"] == "spelled"
        proc.proc.send_signal(signal.SIGINT)
        assert proc.proc.wait(10) == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", proc.port)) != 0  # the port is closed
    finally:
        proc.stop()


def _wait_ready(agent: AgentProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.proc.poll() is None, agent.proc.stderr.read().decode()
        try:
            status, _, leader = agent.request("GET", "/v1/status/leader", timeout=1)
            if status == 200 and json.loads(leader):
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.05)
    raise AssertionError("agent did not come up in time")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sigint_stops_the_agent_even_if_its_parent_ignored_sigint():
    # As under `nohup ... &`: SIGINT is ignored when the agent starts.
    agent = AgentProcess()
    agent.proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", *agent.args], cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        _wait_ready(agent)
        agent.proc.send_signal(signal.SIGINT)
        assert agent.proc.wait(10) == 0  # stopped, and gracefully
        assert not _listening(agent.port)
    finally:
        agent.stop()


class _Health(http.server.BaseHTTPRequestHandler):
    hits: list = []

    def do_GET(self):
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_check_runs_leave_no_library_chatter_and_syncs_are_logged():
    handler = type("Health", (_Health,), {"hits": []})
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=target.serve_forever, daemon=True)
    thread.start()
    agent = AgentProcess("-log-level", "info").start()
    log = ""
    try:
        url = f"http://127.0.0.1:{target.server_address[1]}/health"
        body = {"Name": "web", "Port": 80, "Check": {"HTTP": url, "Interval": "1s"}}
        assert agent.request("PUT", "/v1/agent/service/register", json.dumps(body))[0] == 200
        deadline = time.monotonic() + 30
        while len(handler.hits) < 4 and time.monotonic() < deadline:
            log += agent.log_so_far()
            time.sleep(0.05)
        assert len(handler.hits) >= 4, "the check did not run"
        assert agent.request("PUT", "/v1/agent/service/deregister/web")[0] == 200
        agent.proc.terminate()
        assert agent.proc.wait(10) == 0
        log += agent.log_so_far()
    finally:
        agent.stop()
        target.shutdown()
        target.server_close()
    # Library internals ("Starting factory", "Main loop terminated") are debug, not info.
    assert "Starting factory" not in log and "Stopping factory" not in log
    assert not re.search(r"\[twisted\.[^\]]*#info\]", log), log
    assert "Synced service: service=web" in log
    assert "Synced check: check=service:web" in log  # it turned passing
    assert "Deregistered service: service=web" in log
    assert re.search(r"Started HTTP server: address=127\.0\.0\.1:\d+ network=tcp", log), log
    assert re.search(r"Started DNS server: address=127\.0\.0\.1:\d+ network=udp", log), log
    assert len(log.splitlines()) < 20, log


def test_library_info_is_debug_but_library_errors_stay():
    from twisted.logger import LogLevel, PredicateResult

    from gateway.runner import level_predicate

    def event(namespace, level):
        return {"log_namespace": namespace, "log_level": level}
    info, debug = level_predicate("info"), level_predicate("debug")
    chatter = event("twisted.internet.protocol.Factory", LogLevel.info)
    assert info(chatter) == PredicateResult.no and debug(chatter) == PredicateResult.maybe
    assert info(event("log_legacy", LogLevel.info)) == PredicateResult.no
    assert info(event("twisted.internet.defer", LogLevel.critical)) == PredicateResult.maybe
    assert info(event("agent.agent.Agent", LogLevel.info)) == PredicateResult.maybe
    assert info(event("myplugin.thing", LogLevel.info)) == PredicateResult.maybe
    assert level_predicate("warn")(event("agent.agent.Agent", LogLevel.info)) == PredicateResult.no


def test_a_fresh_agent_answers_an_index_past_1():
    # As a fresh Consul -dev: the catalog was written (member join, then the agent's node
    # sync) before the first answer, so clients waiting for an index of 2 are served; a KV
    # table nobody wrote answers 1 (Consul: catalog/nodes 12, catalog/services 10, kv 1).
    proc = AgentProcess().start()
    try:
        def index(path):
            return int(proc.request("GET", path)[1]["X-Consul-Index"])
        assert index("/v1/catalog/nodes") >= 2
        assert index("/v1/catalog/services") >= 2
        assert index("/v1/health/state/any") >= 2
        assert index("/v1/catalog/nodes") > index("/v1/catalog/services")
        assert index("/v1/kv/missing") == 1
    finally:
        proc.stop()
