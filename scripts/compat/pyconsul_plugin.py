"""pytest plugin: py-consul's own suite against a local agent instead of a Docker container.

pyconsul.sh moves the sdist's root conftest.py aside (it imports `docker`, starts containers)
and loads this plugin with `-p pyconsul_plugin`. The plugin provides the fixtures that conftest
defined, with the same names and shapes:

- ``consul_instance``: a ConsulInstance(container, port, version) of a fresh agent per test;
  ``container`` is our LocalAgent (no test reads it).
- ``acl_consul_instance``: (ConsulInstance, token) of a fresh agent with ACLs enabled.
- ``consul_port``: (port, version).
- ``_unset_consul_token``: the same session-wide autouse clean-up.

It also writes results.json (one outcome per test id, and whether the test used an agent and
an ACL-enabled one), which summarize.py classifies.
"""

from __future__ import annotations

import collections
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from agent_config import drop_keys, fixture_config, to_consul_18
from local_agent import LocalAgent, Target

ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])

AGENT_FIXTURES = {"consul_instance", "acl_consul_instance", "consul_port", "consul_obj",
                  "acl_consul", "fixture_config_agent"}
ACL_FIXTURES = {"acl_consul_instance", "acl_consul"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pyconsul-compat")
    group.addoption("--compat-target", choices=["consul", "waypost"], required=True)
    group.addoption("--compat-consul", default="", help="consul binary (target consul)")
    group.addoption("--compat-waypost-root", default="", help="Waypost checkout (target waypost)")
    group.addoption("--compat-waypost-python", default="", help="python with Waypost's deps")
    group.addoption("--compat-drop-key", action="append", default=[],
                    help="dotted config key to leave out of the fixture config (repeatable)")
    group.addoption("--compat-out", required=True, help="directory for results.json and logs")


class _Compat:
    """Per-session state: what to start, where to log, and the outcomes seen so far."""

    def __init__(self, config: pytest.Config) -> None:
        opt = config.option
        self.target = Target(kind=opt.compat_target, consul_binary=opt.compat_consul,
                             waypost_root=opt.compat_waypost_root,
                             waypost_python=opt.compat_waypost_python)
        self.drop = list(opt.compat_drop_key)
        self.out = Path(opt.compat_out)
        self.results: dict[str, dict[str, Any]] = {}
        self.agent_version = ""

    def agent_config(self, acl_token: str | None, *, verbatim: bool = False) -> dict[str, Any]:
        config = to_consul_18(fixture_config(acl_token))
        return config if verbatim else drop_keys(config, self.drop)

    def log_path(self, nodeid: str) -> Path:
        return self.out / "logs" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid) + ".log")

    def start(self, request: pytest.FixtureRequest, acl_token: str | None = None,
              verbatim: bool = False) -> LocalAgent:
        agent = LocalAgent(self.target, self.agent_config(acl_token, verbatim=verbatim),
                           self.log_path(request.node.nodeid))
        agent.start()
        self.agent_version = agent.version
        return agent

    # --- result collection (pytest hooks) ---------------------------------------------------

    def _entry(self, nodeid: str) -> dict[str, Any]:
        return self.results.setdefault(nodeid, {"outcome": "passed", "message": "", "agent": False,
                                                "acl": False})

    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> None:
        # Tell client-only unit tests (test_base.py, ...) from tests that talk to an agent, and
        # those that need an agent with ACLs enabled.
        if call.when == "setup":
            names = set(getattr(item, "fixturenames", ()))
            entry = self._entry(item.nodeid)
            entry["agent"], entry["acl"] = bool(AGENT_FIXTURES & names), bool(ACL_FIXTURES & names)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # One outcome per test: a failure in setup or teardown is an "error" of that test.
        entry = self._entry(report.nodeid)
        if report.skipped and entry["outcome"] == "passed":
            entry["outcome"], entry["message"] = "skipped", _message(report)
        elif report.failed and entry["outcome"] in ("passed", "skipped"):
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["message"] = _message(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        doc = {"target": self.target.kind, "agent_version": self.agent_version,
               "dropped_config_keys": self.drop,
               "results": dict(sorted(self.results.items()))}
        (self.out / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")


_KEY = pytest.StashKey[_Compat]()


def pytest_configure(config: pytest.Config) -> None:
    # The state object is also registered as a plugin so its report hooks see every test.
    state = _Compat(config)
    config.stash[_KEY] = state
    config.pluginmanager.register(state, "pyconsul-compat-state")


@pytest.fixture(scope="session", autouse=True)
def _unset_consul_token() -> None:
    os.environ.pop("CONSUL_HTTP_TOKEN", None)


@pytest.fixture
def consul_instance(request: pytest.FixtureRequest) -> Iterator[ConsulInstance]:
    agent = request.config.stash[_KEY].start(request)
    yield ConsulInstance(agent, agent.port, agent.version)
    agent.stop()


@pytest.fixture
def acl_consul_instance(request: pytest.FixtureRequest) -> Iterator[tuple[ConsulInstance, str]]:
    token = uuid.uuid4().hex
    agent = request.config.stash[_KEY].start(request, acl_token=token)
    yield ConsulInstance(agent, agent.port, agent.version), token
    agent.stop()


@pytest.fixture
def consul_port(consul_instance: ConsulInstance) -> tuple[int, str]:
    return consul_instance.port, consul_instance.version


@pytest.fixture
def fixture_config_agent(request: pytest.FixtureRequest) -> Iterator[LocalAgent]:
    """An agent started with the fixture's config exactly (no --compat-drop-key applied)."""
    agent = request.config.stash[_KEY].start(request, verbatim=True)
    yield agent
    agent.stop()


def _message(report: pytest.TestReport) -> str:
    """The first line of why a test failed or was skipped."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        lines = crash.message.strip().splitlines()
        return lines[0][:400] if lines else ""
    if isinstance(report.longrepr, tuple):  # a skip: (file, line, reason)
        return str(report.longrepr[2])[:400]
    lines = str(report.longrepr or "").strip().splitlines()
    return lines[-1][:400] if lines else ""
