"""Remote exec: `waypost exec` and the agent's `_rexec` handling, as Consul 1.8.7 does them.

Real `waypost agent -dev` processes (remote exec is refused by default, run when
`disable_remote_exec = false`), and, skipped with the reason shown when there is no binary,
Consul's own CLI against a Waypost agent and ours against a Consul agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent.exec import go_path_join, job_key, parse_event, parse_spec
from gateway.cli.commands.exec import job_spec, prefix_lines
from tests.agentproc import ROOT, AgentProcess
from tests.consulproc import NO_CONSUL, ConsulProcess, consul_binary


def waypost(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=90)


# --- pure --------------------------------------------------------------------------------------


def test_the_spec_round_trips_between_the_cli_and_the_agent():
    spec = parse_spec(job_spec("", ["printf", "%s"], b"#!/bin/sh\necho", 1.5))
    assert (spec.command, spec.args, spec.script, spec.wait) == \
        ("", ["printf", "%s"], b"#!/bin/sh\necho", 1.5)
    # Go's encoding/json of Consul's rExecSpec: omitempty fields absent, Wait in nanoseconds.
    assert job_spec("uptime", [], b"", 2.0) == b'{"Command":"uptime","Wait":2000000000}'
    assert parse_spec(b'{"Command":"x","Wait":0}').wait == 2.0  # never a busy heartbeat


@pytest.mark.parametrize("bad", [b"[]", b"{", b'{"Args":"ls"}', b'{"Script":"%%%"}',
                                 b'{"Wait":"2s"}', b'{"Command":7}'])
def test_a_malformed_spec_is_refused(bad):
    with pytest.raises(ValueError):
        parse_spec(bad)


def test_keys_are_joined_as_gos_path_join():
    assert job_key("_rexec", "abc") == "_rexec/abc/job"
    assert go_path_join("_rexec/", "", "s", "node", "out/00001") == "_rexec/s/node/out/00001"
    assert go_path_join("a//b", "../c") == "a/c"
    assert parse_event(b'{"Prefix":"_rexec","Session":"s"}') == ("_rexec", "s")
    for bad in (b"1", b'{"Prefix":"p"}', b'{"Session":5}'):
        with pytest.raises(ValueError):
            parse_event(bad)


def test_output_is_prefixed_as_consuls_targeted_ui():
    assert prefix_lines("n1", "a\nb\n", False) == "    n1: a\n    n1: b\n    n1:"
    assert prefix_lines("n1", "finished with exit code 0", True) == \
        "==> n1: finished with exit code 0"


# --- real agents -------------------------------------------------------------------------------


def _config(tmp_path_factory, body: dict) -> str:
    path = tmp_path_factory.mktemp("exec") / "exec.json"
    path.write_text(json.dumps(body))
    return str(path)


@pytest.fixture(scope="module")
def enabled(tmp_path_factory):
    agent = AgentProcess("-config-file", _config(tmp_path_factory,
                                                 {"disable_remote_exec": False}),
                         node="rx-on").start()
    yield agent
    agent.stop()


def test_remote_exec_is_refused_by_default():
    agent = AgentProcess(node="rx-off").start()
    try:
        done = waypost("exec", "-http-addr", agent.base, "-wait=500ms", "touch /nonexistent")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "0 / 0 node(s) completed / acknowledged\n"
        # The CLI cleaned up after itself: nothing left under the prefix.
        assert agent.request("GET", "/v1/kv/_rexec?recurse")[0] == 404
    finally:
        agent.stop()


def test_a_command_runs_and_its_output_and_exit_code_come_back(enabled):
    done = waypost("exec", "-http-addr", enabled.base, "-wait=1s", "echo out; echo err >&2")
    assert done.returncode == 0, done.stderr
    assert "    rx-on: out\n    rx-on: err" in done.stdout
    assert "==> rx-on: finished with exit code 0" in done.stdout
    assert done.stdout.endswith("1 / 1 node(s) completed / acknowledged\n")
    assert enabled.request("GET", "/v1/kv/_rexec?recurse")[0] == 404


def test_a_failing_command_makes_the_cli_exit_2(enabled):
    done = waypost("exec", "-http-addr", enabled.base, "-wait=1s", "-verbose", "exit 3")
    assert done.returncode == 2
    assert "==> rx-on: acknowledged" in done.stdout
    assert "==> rx-on: finished with exit code 3" in done.stdout


def test_args_without_a_shell_and_a_script_from_stdin(enabled):
    done = waypost("exec", "-http-addr", enabled.base, "-wait=1s", "-shell=false",
                   "printf", "<%s>", "a b")
    assert done.returncode == 0 and "    rx-on: <a b>" in done.stdout, done.stderr
    done = waypost("exec", "-http-addr", enabled.base, "-wait=1s", "-", stdin="echo script\n")
    assert done.returncode == 0 and "    rx-on: script" in done.stdout, done.stderr


def test_filters_that_match_no_node_leave_the_job_unacknowledged(enabled):
    done = waypost("exec", "-http-addr", enabled.base, "-wait=500ms", "-node", "^nobody$",
                   "echo never")
    assert done.returncode == 0 and "never" not in done.stdout
    assert done.stdout.endswith("0 / 0 node(s) completed / acknowledged\n")


def test_bad_invocations_fail_with_consuls_words(enabled):
    for args, words in ((["-wait=1s"], "Must specify a command to execute"),
                        (["-tag", "v1", "ls"], "Cannot provide tag filter without service"),
                        (["-shell=false", "-"], "Cannot configure -shell=false"),
                        (["-node", "(", "ls"], "Failed to compile node filter regexp")):
        done = waypost("exec", "-http-addr", enabled.base, *args)
        assert done.returncode == 1 and words in done.stderr, (args, done.stderr)


# --- interop with a real Consul 1.8.7 ----------------------------------------------------------


@pytest.mark.skipif(consul_binary() is None, reason=NO_CONSUL)
def test_consuls_exec_cli_runs_a_job_on_a_waypost_agent(enabled):
    done = subprocess.run([consul_binary(), "exec", "-http-addr", enabled.base, "-wait=1s",
                           "echo via consul"], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "    rx-on: via consul" in done.stdout
    assert "1 / 1 node(s) completed / acknowledged" in done.stdout


@pytest.mark.skipif(consul_binary() is None, reason=NO_CONSUL)
def test_our_exec_cli_runs_a_job_on_a_consul_agent():
    consul = ConsulProcess("-hcl", "disable_remote_exec = false", node="rx-consul").start()
    try:
        done = waypost("exec", "-http-addr", f"http://127.0.0.1:{consul.http}", "-wait=1s",
                       "echo via waypost")
        assert done.returncode == 0, done.stderr
        assert "    rx-consul: via waypost" in done.stdout
        assert "==> rx-consul: finished with exit code 0" in done.stdout
        assert done.stdout.endswith("1 / 1 node(s) completed / acknowledged\n")
    finally:
        consul.stop()
