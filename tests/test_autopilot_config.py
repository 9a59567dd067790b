"""PUT /v1/operator/autopilot/configuration (and `waypost operator autopilot set-config`): an
operator's autopilot settings stored through the log, with check-and-set, answered as a real
Consul 1.8.7 answers them (compared side by side when the binary is present)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.agentproc import ROOT, AgentProcess
from tests.consulproc import running_consul


@pytest.fixture(scope="module")
def waypost_agent():
    agent = AgentProcess(node="ap1").start()
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def consul():
    yield from running_consul("ap-consul")


def exchange(agent) -> list:
    """The same conversation with either agent: what each step answered."""
    out = []

    def step(method: str, path: str, body=None):
        status, _, data = agent.request(method, path, None if body is None else json.dumps(body))
        # Indexes differ between the two agents; what matters is which index was sent.
        shown = path.split("?")[0] + ("?cas" if "cas=" in path else "")
        out.append((method, shown, status, data.strip()))
        return data

    current = json.loads(step("GET", "/v1/operator/autopilot/configuration"))
    first = current["ModifyIndex"]
    step("PUT", "/v1/operator/autopilot/configuration",
         {**current, "CleanupDeadServers": False, "MaxTrailingLogs": 99})
    stored = json.loads(step("GET", "/v1/operator/autopilot/configuration"))
    out.append(("stored", stored["CleanupDeadServers"], stored["MaxTrailingLogs"],
                stored["ModifyIndex"] > first))
    # Check-and-set: a stale index is refused, the current one taken.
    step("PUT", f"/v1/operator/autopilot/configuration?cas={first}", {"MinQuorum": 2})
    step("PUT", f"/v1/operator/autopilot/configuration?cas={stored['ModifyIndex']}",
         {**stored, "MinQuorum": 3})
    after = json.loads(step("GET", "/v1/operator/autopilot/configuration"))
    out.append(("after", after["MinQuorum"], after["CleanupDeadServers"]))
    step("PUT", "/v1/operator/autopilot/configuration?cas=abc", {})
    return [row if row[0] != "GET" else row[:3] for row in out]


def test_setting_the_autopilot_configuration_as_consul_does(waypost_agent):
    rows = exchange(waypost_agent)
    assert ("stored", False, 99, True) in rows
    assert ("after", 3, False) in rows
    puts = [row[2:] for row in rows if row[0] == "PUT"]
    assert puts[:3] == [(200, b"true"), (200, b"false"), (200, b"true")]
    assert puts[3][0] == 400


def test_the_same_conversation_with_a_real_consul(waypost_agent, consul):
    ours, theirs = exchange(waypost_agent), exchange(consul)
    assert [r for r in ours if r[0] != "PUT" or r[2] != 400] == \
        [r for r in theirs if r[0] != "PUT" or r[2] != 400]
    assert [r[2] for r in ours] == [r[2] for r in theirs]


def test_set_config_on_the_command_line(waypost_agent):
    def waypost(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway.cli.main", "operator",
                               "autopilot", *args, f"-http-addr={waypost_agent.base[7:]}"],
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              capture_output=True, text=True, timeout=60)
    done = waypost("set-config", "-server-stabilization-time=3s", "-min-quorum=1")
    assert (done.returncode, done.stdout) == (0, "Configuration updated!\n"), done.stderr
    shown = waypost("get-config")
    assert "ServerStabilizationTime = 3s" in shown.stdout
    assert "MinQuorum = 1" in shown.stdout
    bad = waypost("set-config", "-cleanup-dead-servers=maybe")
    assert bad.returncode == 1 and "true or false" in bad.stderr


@pytest.mark.parametrize("body,field", [
    ([], "not an object"), ({"MaxTrailingLogs": "a"}, "MaxTrailingLogs must be an integer"),
    ({"MinQuorum": True}, "MinQuorum must be an integer"),
    ({"CleanupDeadServers": 1}, "CleanupDeadServers must be true or false"),
    ({"LastContactThreshold": "-1s"}, "LastContactThreshold"),
    ({"ServerStabilizationTime": "soon"}, "ServerStabilizationTime")])
def test_a_bad_autopilot_configuration_is_a_400_naming_the_field(waypost_agent, body, field):
    status, _, data = waypost_agent.request("PUT", "/v1/operator/autopilot/configuration",
                                            json.dumps(body))
    assert status == 400 and field in data.decode(), data
    status, _, data = waypost_agent.request("GET", "/v1/operator/autopilot/configuration")
    assert status == 200  # nothing was stored, the agent still answers
