"""py-consul's *own* test suite against Waypost (and real Consul), through scripts/compat/.

The `compat` tests run scripts/compat/pyconsul.sh: it downloads py-consul's sdist, swaps its
Docker fixtures for local agent processes and runs the whole suite (minutes; needs PyPI).
They pass only when every failure is in scripts/compat/known_failures.json, each entry with
its class, reason and the issue that fixes it. Run them with `pytest -m compat`; docs/compat.md
has the numbers. The other tests check the harness's own logic and run by default.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from scripts.compat.agent_config import drop_keys, fixture_config, to_consul_18
from scripts.compat.summarize import classify

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "compat" / "pyconsul.sh"
KNOWN = json.loads((ROOT / "scripts" / "compat" / "known_failures.json").read_text())
CONSUL = os.environ.get("WAYPOST_ORACLE_CONSUL", "/tmp/oracle/bin/consul")
OUT = Path(os.environ.get("COMPAT_OUT", "/tmp/compat-out"))


def run_harness(*args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(OUT), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    target = "consul" if "--consul" in args else "waypost"
    summary_file = OUT / target / "summary.json"
    assert summary_file.exists(), f"harness produced no summary:\n{proc.stdout}\n{proc.stderr}"
    return proc, json.loads(summary_file.read_text())


def assert_only_known_failures(proc: subprocess.CompletedProcess, summary: dict) -> None:
    # A broken harness (collection error, no agent started) must not look green.
    assert summary["agent_tests"].get("passed", 0) >= 30, proc.stdout
    unexpected = "\n".join(f"{t}: {m}" for t, m in summary["unexpected"].items())
    assert not summary["unexpected"], f"failures not in known_failures.json:\n{unexpected}"
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.compat
def test_pyconsul_suite_against_waypost() -> None:
    proc, summary = run_harness()
    assert_only_known_failures(proc, summary)


@pytest.mark.compat
@pytest.mark.skipif(not os.access(CONSUL, os.X_OK), reason="no Consul 1.8.7 binary")
def test_pyconsul_suite_against_real_consul() -> None:
    """The out-of-scope list stays honest: these tests really fail against Consul 1.8.7."""
    proc, summary = run_harness("--consul", CONSUL)
    assert_only_known_failures(proc, summary)
    assert summary["agent_version"] == "1.8.7"


# --- the harness's own logic (fast, runs by default) -------------------------------------------


def test_fixture_config_is_spelled_for_consul_18() -> None:
    config = to_consul_18(fixture_config("secret"))
    assert config["ports"] == {"https": -1, "dns": -1}
    assert config["acl"]["tokens"] == {"master": "secret"}
    assert "acl" not in to_consul_18(fixture_config(None))
    assert drop_keys(config, ["ports.https", "no.such"])["ports"] == {"dns": -1}


def _results(target: str, **tests: tuple[str, bool]) -> dict:
    return {"target": target, "results": {
        name: {"outcome": outcome, "message": "m", "agent": True, "acl": acl}
        for name, (outcome, acl) in tests.items()}}


def test_classify_separates_known_unexpected_stale_and_acl() -> None:
    known = {"acl_fixture_tests": {"targets": ["waypost"], "issue": "ACLs", "reason": "r"},
             "tests": {"t_known": {"class": "bug", "targets": ["waypost"], "issue": "i", "reason": "r"},
                       "t_fixed": {"class": "bug", "targets": ["waypost"], "issue": "i", "reason": "r"},
                       "t_newer": {"class": "newer-consul", "targets": ["waypost", "consul"],
                                   "issue": "i", "reason": "r"}}}
    summary = classify(_results("waypost", t_known=("failed", False), t_fixed=("passed", False),
                                t_newer=("passed", False), t_new=("error", False),
                                t_acl=("passed", True)), known)
    assert summary["known_by_class"] == {"bug": ["t_known"]}
    assert summary["unexpected"] == {"t_new": "m"}
    assert summary["stale"] == ["t_fixed"]  # newer-consul entries may pass on Waypost
    assert summary["acl_not_built"] == ["t_acl"]  # an ACL test never counts as passing here
    assert summary["total"] == {"failed": 2, "passed": 2}
    # Against Consul the ACL rule does not apply: its ACL tests count like any other.
    assert classify(_results("consul", t_acl=("passed", True)), known)["total"] == {"passed": 1}
