"""`waypost members/join/leave/force-leave` beside `consul` 1.8.7's own commands.

Each case runs the same command line against a real Waypost -dev agent and (when the binary
is present) against a real Consul -dev agent, and compares exit codes and what is printed.
Where Waypost deliberately differs it is said in the case: bad input is a 400 here where
Consul answers 500, so only the text up to the status code is compared.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.agentproc import ROOT, AgentProcess
from tests.consulproc import NO_CONSUL, ConsulProcess, consul_binary, running_consul

needs_consul = pytest.mark.skipif(consul_binary() is None, reason=NO_CONSUL)


def run(program: list[str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([*program, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


WAYPOST = [sys.executable, "-m", "gateway.cli.main"]


@pytest.fixture(scope="module")
def waypost_agent() -> Iterator[AgentProcess]:
    agent = AgentProcess(node="wp1").start()
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def consul_agent() -> Iterator[ConsulProcess]:
    yield from running_consul("c1")


def on_waypost(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess:
    return run(WAYPOST, args[0], "-http-addr", f"127.0.0.1:{agent.port}", *args[1:])


def on_consul(agent: ConsulProcess, *args: str) -> subprocess.CompletedProcess:
    return run([consul_binary()], args[0], "-http-addr", f"127.0.0.1:{agent.http}", *args[1:])


# (command line, expected exit code, what stdout starts with, what stderr starts with)
CASES = [
    (("members",), 0, "Node  ", ""),
    (("members", "extra-argument"), 0, "Node  ", ""),  # Consul ignores stray arguments
    (("members", "-detailed"), 0, "Node  ", ""),
    (("members", "-status=nomatch"), 2, "", ""),  # nothing matched: exit 2, silently
    (("members", "-status=["), 1, "", "Failed to compile status regexp: "),
    (("members", "-wan"), 0, "Node  ", ""),
    (("members", "-segment=alpha"), 1, "",
     "Error retrieving members: Unexpected response code: "),
    (("join",), 1, "", "At least one address to join must be specified."),
    (("join", "127.0.0.1:1"), 1, "",
     "Error joining address '127.0.0.1:1': Unexpected response code: 500 (1 error occurred:"),
    (("force-leave",), 1, "", "A single node name must be specified to force leave."),
    (("force-leave", "nobody"), 1, "", "Error force leaving: Unexpected response code: "),
    (("leave", "extra-argument"), 1, "", "Error found unexpected args: [extra-argument]"),
]


@pytest.mark.parametrize("argv,code,stdout,stderr", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_waypost_command(waypost_agent, argv, code, stdout, stderr):
    out = on_waypost(waypost_agent, *argv)
    assert out.returncode == code, out.stderr
    assert out.stdout.startswith(stdout)
    assert out.stderr.startswith(stderr)
    assert "Traceback" not in out.stderr


@needs_consul
@pytest.mark.parametrize("argv,code,stdout,stderr", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_consul_command_agrees(consul_agent, argv, code, stdout, stderr):
    """The same expectations hold for the real `consul` binary against a real Consul."""
    out = on_consul(consul_agent, *argv)
    assert out.returncode == code, out.stderr
    assert out.stdout.startswith(stdout)
    assert out.stderr.startswith(stderr)


def test_failed_join_ends_with_consul_summary(waypost_agent):
    out = on_waypost(waypost_agent, "join", "127.0.0.1:1", "127.0.0.1:2")
    lines = out.stderr.splitlines()
    assert out.returncode == 1
    assert [line.split(":")[0] for line in lines[:2]] == [
        "Error joining address '127.0.0.1", "Error joining address '127.0.0.1"]
    assert lines[-1] == "Failed to join any nodes."


@needs_consul
def test_same_columns_for_the_same_kind_of_member(waypost_agent, consul_agent):
    """A -dev server's row: same columns; Build is 1.8.7 on both (Waypost's build tag is
    "1.8.7:waypost"); Type is server on both (a Waypost server advertises wp=server)."""
    wp = on_waypost(waypost_agent, "members").stdout.splitlines()
    cs = on_consul(consul_agent, "members").stdout.splitlines()
    assert wp[0].split() == cs[0].split()
    assert wp[1].split()[2:] == cs[1].split()[2:]  # alive server 1.8.7 2 dc1 <all>
    wide = on_waypost(waypost_agent, "members", "-detailed").stdout.splitlines()
    assert wide[0].split() == ["Node", "Address", "Status", "Tags"]
    assert "segment=<all>" in wide[1] and "build=1.8.7:waypost" in wide[1]


@needs_consul
def test_waypost_joins_consul_and_its_leave_is_left_on_consul(consul_agent):
    """Join and graceful leave on the wire: `waypost join` to a Consul agent, then `waypost
    leave`; Consul lists the Waypost agent as left (status 3), not failed."""
    agent = AgentProcess(node="wp-leaver").start()
    try:
        out = on_waypost(agent, "join", f"127.0.0.1:{consul_agent.serf_lan}")
        assert (out.returncode, out.stdout) == (
            0, "Successfully joined cluster by contacting 1 nodes.\n"), out.stderr
        deadline = time.monotonic() + 20
        while consul_agent.members().get("wp-leaver") != 1:
            assert time.monotonic() < deadline, consul_agent.members()
            time.sleep(0.1)
        listed = on_consul(consul_agent, "members").stdout
        assert "wp-leaver" in listed
        out = on_waypost(agent, "leave")
        assert (out.returncode, out.stdout) == (0, "Graceful leave complete\n"), out.stderr
        assert agent.proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 20
        while consul_agent.members().get("wp-leaver") != 3:
            assert time.monotonic() < deadline, consul_agent.members()
            time.sleep(0.1)
    finally:
        agent.stop()
