"""Consul's hash-based blocking on /v1/agent/service/<id>, against a real agent: `?hash=` with
`?wait=` parks until the service's content hash differs, answers the same service when the
wait runs out, and 404 when the service is deregistered meanwhile (Consul 1.8.7 does each)."""

from __future__ import annotations

import json
import threading

from tests.agentproc import AgentProcess


def register(agent: AgentProcess, port: int, sid: str = "hb1") -> None:
    body = {"Name": "hb", "ID": sid, "Port": port, "Check": {"TTL": "30s"}}
    status, _, text = agent.request("PUT", "/v1/agent/service/register", json.dumps(body))
    assert status == 200, text


def current(agent: AgentProcess, sid: str = "hb1") -> tuple[str, dict]:
    status, headers, body = agent.json("GET", f"/v1/agent/service/{sid}")
    assert status == 200, body
    assert headers["X-Consul-ContentHash"] == body["ContentHash"]
    assert "X-Consul-Index" not in headers  # an agent-local answer carries no catalog index
    return body["ContentHash"], body


class Parked(threading.Thread):
    """One blocking GET, answered on its own thread."""

    def __init__(self, agent: AgentProcess, path: str) -> None:
        super().__init__(daemon=True)
        self.agent, self.path, self.answer = agent, path, None
        self.started = threading.Event()

    def run(self) -> None:
        self.started.set()
        self.answer = self.agent.json("GET", self.path)

    def result(self):
        self.join(60)
        assert not self.is_alive(), "the blocking read never answered"
        return self.answer


def test_a_changed_service_wakes_a_parked_hash_read(agent):
    register(agent, 80)
    digest, _ = current(agent)
    parked = Parked(agent, f"/v1/agent/service/hb1?hash={digest}&wait=60s")
    parked.start()
    parked.started.wait(10)
    register(agent, 81)  # the content changes: the read answers with the new hash
    status, headers, body = parked.result()
    assert status == 200 and body["Port"] == 81
    assert body["ContentHash"] != digest
    assert headers["X-Consul-ContentHash"] == body["ContentHash"] == current(agent)[0]


def test_an_unchanged_service_answers_when_the_wait_runs_out(agent):
    register(agent, 90, sid="hb2")
    digest, before = current(agent, "hb2")
    assert agent.request("PUT", "/v1/agent/check/pass/service:hb2")[0] == 200  # not the service
    register(agent, 90, sid="hb2")  # re-registered as it was: the same hash
    status, _, body = agent.json("GET", f"/v1/agent/service/hb2?hash={digest}&wait=1s")
    assert status == 200 and body == before
    # A different hash, or none, answers at once whatever the wait.
    assert agent.json("GET", "/v1/agent/service/hb2?hash=other&wait=10m")[2] == before


def test_a_deregistered_service_ends_a_parked_hash_read_with_404(agent):
    register(agent, 70, sid="hb3")
    digest, _ = current(agent, "hb3")
    parked = Parked(agent, f"/v1/agent/service/hb3?hash={digest}&wait=60s")
    parked.start()
    parked.started.wait(10)
    assert agent.request("PUT", "/v1/agent/service/deregister/hb3")[0] == 200
    status, _, body = parked.result()
    assert (status, body) == (404, b"unknown service ID: hb3")
    assert agent.request("GET", "/v1/agent/service/hb3?hash=x&wait=1s")[0] == 404
    status, _, body = agent.request("GET", "/v1/agent/service/hb3?hash=x&wait=bad")
    assert (status, body) == (400, b"Invalid wait time")
