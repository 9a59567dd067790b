"""Checks registered at a real agent run against real targets and move the catalog."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.agentproc import AgentProcess


class Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        body = b"ok"
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def script_agent():
    proc = AgentProcess("-enable-script-checks").start()
    yield proc
    proc.stop()


def status_of(agent, check_id):
    return agent.json("GET", "/v1/agent/checks")[2].get(check_id, {}).get("Status")


def wait_status(agent, check_id, wanted, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status_of(agent, check_id) == wanted:
            return
        time.sleep(0.05)
    raise AssertionError(f"{check_id} never became {wanted}: {status_of(agent, check_id)}")


def register(agent, body):
    status, _, text = agent.request("PUT", "/v1/agent/service/register", json.dumps(body))
    assert status == 200, text


def test_http_check_follows_the_target(script_agent):
    handler = type("H", (Health,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        register(script_agent, {"Name": "hweb", "Check": {"CheckID": "hweb-http", "HTTP": url,
                                                          "Interval": "1s"}})
        wait_status(script_agent, "hweb-http", "passing")
        handler.status = 429
        wait_status(script_agent, "hweb-http", "warning")
        handler.status = 500
        wait_status(script_agent, "hweb-http", "critical")
        output = script_agent.json("GET", "/v1/agent/checks")[2]["hweb-http"]["Output"]
        assert output.startswith(f"HTTP GET {url}: 500")
    finally:
        server.shutdown()
        server.server_close()


def test_tcp_check_follows_the_listener(script_agent):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    register(script_agent, {"Name": "tsvc", "Check": {"CheckID": "tsvc-tcp",
                                                      "TCP": f"127.0.0.1:{port}",
                                                      "Interval": "1s", "Timeout": "1s"}})
    wait_status(script_agent, "tsvc-tcp", "passing")
    listener.close()
    wait_status(script_agent, "tsvc-tcp", "critical")


def test_script_check_exit_codes(script_agent, tmp_path):
    flag = tmp_path / "code"
    flag.write_text("0")
    register(script_agent, {"Name": "ssvc", "Check": {
        "CheckID": "ssvc-script", "Args": ["/bin/sh", "-c", f'exit $(cat {flag})'],
        "Interval": "1s"}})
    wait_status(script_agent, "ssvc-script", "passing")
    flag.write_text("1")
    wait_status(script_agent, "ssvc-script", "warning")
    flag.write_text("2")
    wait_status(script_agent, "ssvc-script", "critical")


def test_alias_check_mirrors_the_aliased_service(script_agent):
    register(script_agent, {"Name": "backend", "ID": "backend1",
                            "Check": {"CheckID": "backend-ttl", "TTL": "60s"}})
    register(script_agent, {"Name": "front", "Check": {"CheckID": "front-alias",
                                                       "AliasService": "backend1"}})
    wait_status(script_agent, "front-alias", "critical")
    script_agent.request("PUT", "/v1/agent/check/pass/backend-ttl")
    wait_status(script_agent, "front-alias", "passing")


def test_script_checks_refused_without_the_flag(agent):
    status, _, body = agent.request("PUT", "/v1/agent/check/register", json.dumps(
        {"Name": "nope", "Args": ["true"], "Interval": "10s"}))
    assert status == 400 and b"Scripts are disabled" in body
