"""`waypost lock` against a real agent: mutual exclusion, exit codes, release, timeouts, a lost
session, signal forwarding and the -n semaphore."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agentproc import ROOT


def lock(agent, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "lock", "-http-addr",
                             agent.base, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 20) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(path: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def holder(agent, prefix: str):
    """The session holding `<prefix>/.lock`, or "" when it is free or absent."""
    status, _, body = agent.json("GET", f"/v1/kv/{prefix}/.lock")
    return body[0].get("Session", "") if status == 200 else ""


def test_two_holders_never_overlap_and_exit_codes_propagate(agent, tmp_path):
    log = tmp_path / "log"
    script = f"echo start-{{n}} >> {log}; sleep 0.4; echo end-{{n}} >> {log}; exit {{code}}"
    first = lock(agent, "jobs/a", script.format(n=1, code=3))
    wait_for(log)
    second = lock(agent, "jobs/a", "sh", "-c", script.format(n=2, code=0))
    assert finish(first)[0] == 3
    assert finish(second)[0] == 0
    lines = log.read_text().split()
    assert lines == ["start-1", "end-1", "start-2", "end-2"]
    # Released and cleaned up: no lock key, no session left behind.
    assert agent.request("GET", "/v1/kv/jobs/a/.lock")[0] == 404
    assert agent.json("GET", "/v1/session/list")[2] == []


def test_child_sees_lock_held_and_timeout_gives_up(agent, tmp_path):
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    first = lock(agent, "jobs/b",
                 f'echo "$CONSUL_LOCK_HELD" > {ready}; while [ ! -e {stop} ]; do sleep 0.05; done')
    wait_for(ready)
    assert ready.read_text().strip() == "true"
    assert holder(agent, "jobs/b")
    code, _, err = finish(lock(agent, "-timeout", "300ms", "jobs/b", "true"))
    assert code == 1 and "timeout during lock acquisition" in err
    stop.touch()
    assert finish(first)[0] == 0


def test_lost_session_terminates_the_child(agent, tmp_path):
    ready = tmp_path / "ready"
    proc = lock(agent, "jobs/c", f"touch {ready}; exec sleep 30")
    wait_for(ready)
    session = holder(agent, "jobs/c")
    assert agent.json("PUT", f"/v1/session/destroy/{session}")[2] is True
    code, _, err = finish(proc)
    assert code == 1 and "Lock lost" in err
    assert holder(agent, "jobs/c") == ""


def test_sigterm_is_forwarded_to_the_child(agent, tmp_path):
    ready = tmp_path / "ready"
    proc = lock(agent, "jobs/d",
                f'trap "exit 7" TERM; touch {ready}; while :; do sleep 0.05; done')
    wait_for(ready)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == 7
    assert holder(agent, "jobs/d") == ""


def test_semaphore_admits_n_holders(agent, tmp_path):
    log = tmp_path / "log"
    script = f"echo + >> {log}; sleep 0.5; echo - >> {log}"
    procs = [lock(agent, "-n", "2", "jobs/sem", script) for _ in range(3)]
    assert [finish(p)[0] for p in procs] == [0, 0, 0]
    depth, deepest = 0, 0
    for mark in log.read_text().split():
        depth += 1 if mark == "+" else -1
        deepest = max(deepest, depth)
    assert deepest == 2
    assert agent.json("GET", "/v1/kv/jobs/sem/?keys")[0] == 404


@pytest.mark.parametrize("args, message", [
    (["jobs/x"], "Key prefix and child command must be specified"),
    (["-n", "0", "jobs/x", "true"], "Lock holder limit must be positive"),
])
def test_usage_errors(agent, args, message):
    code, _, err = finish(lock(agent, *args))
    assert code == 1 and message in err
