"""The template plugin in an agent (in-process), its file and command handling, quiescence on
a fake clock, and ``waypost template`` against a real agent subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher

from agent.config.model import AgentConfig, Ports
from agent.fsm.commands import Deregister, KVOperation, Register
from agent.structs import Check, KVEntry, Node, Service
from gateway.hookspecs import Quiescence
from gateway.host import PluginConfigError, PluginHost
from gateway.server import WaypostServer
from plugins.template import plugin as template_plugin
from plugins.template import render as render_mod
from plugins.template.data import FUNCTION_NAMES, Dep, MissingData
from plugins.template.gotemplate import GoTemplate
from plugins.template.render import (
    TemplateJob,
    TemplateSpec,
    run_command,
    write_atomic,
)
from tests.agentproc import ROOT, AgentProcess

UPSTREAM = 'upstream web { {{range service "web"}}server {{.Address}}:{{.Port}};{{end}} }\n'


# --- helpers ----------------------------------------------------------------------------

class Logs:
    """Collects formatted log lines (and failures) while the test runs."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, event):
        self.lines.append(formatEvent(event))

    def has(self, *parts: str) -> bool:
        return any(all(p in line for p in parts) for line in self.lines)


@pytest.fixture
def logs():
    collected = Logs()
    globalLogPublisher.addObserver(collected)
    yield collected
    globalLogPublisher.removeObserver(collected)


def web(node: str, sid: str, port: int, status: str = "passing", meta=None) -> Register:
    return Register(node=Node(name=node, address=f"10.0.0.{port}"),
                    service=Service(node=node, id=sid, name="web", port=port, meta=meta or {}),
                    checks=(Check(node=node, check_id="c" + sid, name="c", status=status,
                                  service_id=sid),))


def kv_set(key: str, value: bytes) -> KVOperation:
    return KVOperation(op="set", entry=KVEntry(key=key, value=value))


def start_agent(templates):
    from twisted.internet import reactor
    config = AgentConfig(node_name="tmpl", node_id="11111111-2222-3333-4444-555555555555",
                         dev=True, ports=Ports(http=0, dns=0),
                         plugins={"template": {"templates": templates}})
    server = WaypostServer(config, reactor, autoload=False,
                           plugins=[("template", template_plugin)])
    server.startService()
    service = next(s for s in server.frontends if s.name == "template")
    return server, service


def settle(seconds: float = 0.0):
    from twisted.internet import reactor
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_for(predicate, timeout: float = 5.0):
    from twisted.internet import reactor
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met in time")
        yield settle(0.01)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# --- in the agent -----------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_registering_and_deregistering_re_renders(tmp_path):
    out = tmp_path / "upstreams.conf"
    server, _ = start_agent([{"source": write(tmp_path / "up.ctmpl", UPSTREAM),
                                    "destination": str(out)}])
    try:
        yield wait_for(out.exists)
        assert out.read_text() == "upstream web {  }\n"
        facade = server.agent.facade
        yield facade.write(web("n1", "w1", 1))
        yield wait_for(lambda: "10.0.0.1:1" in out.read_text())
        yield facade.write(web("n2", "w2", 2, status="critical"))  # not healthy: same output
        yield facade.write(web("n3", "w3", 3))
        yield wait_for(lambda: "10.0.0.3" in out.read_text())
        assert out.read_text() == "upstream web { server 10.0.0.1:1;server 10.0.0.3:3; }\n"
        yield facade.write(Deregister(node="n1", service_id="w1"))
        yield wait_for(lambda: "10.0.0.1" not in out.read_text())
        assert out.read_text() == "upstream web { server 10.0.0.3:3; }\n"
    finally:
        yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_identical_output_is_not_rewritten_and_unrelated_changes_are_not_rendered(tmp_path):
    out = tmp_path / "out"
    server, service = start_agent([{"source": write(tmp_path / "t.ctmpl", UPSTREAM),
                                    "destination": str(out), "command": "true"}])
    job = service.jobs[0]
    try:
        facade = server.agent.facade
        yield facade.write(web("n1", "w1", 1))
        yield wait_for(lambda: "10.0.0.1" in out.read_text() and not job.busy)
        before = (out.stat().st_ino, out.stat().st_mtime_ns, job.writes, job.commands)
        # Used data changed, output did not: rendered, but neither written nor reloaded.
        yield facade.write(web("n1", "w1", 1, meta={"v": "2"}))
        yield wait_for(lambda: job.used[Dep("health.service", "web")][0].Meta == {"v": "2"})
        # Data the template never read: not even rendered.
        used = job.used
        yield facade.write(kv_set("unrelated", b"x"))
        yield facade.write(Register(node=Node(name="n9", address="10.9.9.9"),
                                    service=Service(node="n9", id="db", name="db", port=5)))
        yield settle(0.05)
        assert job.used is used
        assert (out.stat().st_ino, out.stat().st_mtime_ns, job.writes, job.commands) == before
    finally:
        yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_command_runs_after_a_change_and_a_failing_one_is_retried_on_the_next(tmp_path, logs):
    out, runs = tmp_path / "out", tmp_path / "runs"
    ok_out, ok_runs = tmp_path / "ok", tmp_path / "ok-runs"
    server, service = start_agent([
        {"source": write(tmp_path / "t.ctmpl", '{{ key "app/port" }}'),
         "destination": str(out), "command": f"echo run >> {runs}; echo boom >&2; exit 3"},
        {"source": write(tmp_path / "ok.ctmpl", '{{ keyOrDefault "app/port" "none" }}'),
         "destination": str(ok_out), "command": f"cat {ok_out} >> {ok_runs}"}])
    failing, good = service.jobs
    try:
        yield wait_for(lambda: ok_runs.exists() and not good.busy)
        assert not out.exists()  # held back: the key does not exist yet
        assert logs.has("waiting for kv.get(app/port)")
        facade = server.agent.facade
        yield facade.write(kv_set("app/port", b"8080"))
        yield wait_for(lambda: runs.exists() and not failing.busy and not good.busy)
        assert out.read_text() == "8080"
        assert ok_runs.read_text() == "none8080"
        assert logs.has("command", "failed (exit status 3)", "boom")
        yield settle(0.1)
        assert runs.read_text() == "run\n"  # not retried in a loop
        # The next change that reaches the template runs the command again.
        yield facade.write(kv_set("app/port", b"9090"))
        yield wait_for(lambda: runs.read_text() == "run\nrun\n" and not failing.busy)
        assert failing.command_failed and failing.commands == 2
    finally:
        yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_unwritable_destination_and_broken_template_log_and_keep_the_old_file(tmp_path, logs):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    old = tmp_path / "old.conf"
    old.write_text("old contents\n")
    server, service = start_agent([
        {"source": write(tmp_path / "ok.ctmpl", "x"), "destination": str(blocker / "out")},
        {"source": write(tmp_path / "bad.ctmpl", 'line 1\n{{ plugin "x" }}\n'),
         "destination": str(old)},
        {"source": write(tmp_path / "runtime.ctmpl", "{{ index (service \"web\") 3 }}"),
         "destination": str(old)}])
    try:
        yield settle(0.05)
        assert logs.has("cannot write", str(blocker / "out"))
        assert logs.has("bad.ctmpl disabled", 'bad.ctmpl:2:4: function "plugin" not supported')
        assert logs.has("runtime.ctmpl:1:4: error calling index", "left unchanged")
        assert old.read_text() == "old contents\n"
        assert len(service.jobs) == 2  # the unparseable one never runs
    finally:
        yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_kv_changes_re_render_only_templates_reading_them_and_jinja_works(tmp_path):
    kv_out, cat_out = tmp_path / "kv", tmp_path / "cat"
    server, service = start_agent([
        {"source": write(tmp_path / "kv.j2", "{% for p in tree('app') %}{{ p.Key }}="
                         "{{ p.Value }} {% endfor %}\n"), "destination": str(kv_out),
         "perms": "0600", "backup": True},
        {"source": write(tmp_path / "cat.tmpl", "{{ range services }}{{ .Name }} {{ end }}"),
         "destination": str(cat_out), "syntax": "go"}])
    _, cat_job = service.jobs
    try:
        facade = server.agent.facade
        yield wait_for(lambda: kv_out.exists() and cat_out.exists())
        yield facade.write(kv_set("app/a", b"1"))
        yield wait_for(lambda: kv_out.read_text() == "a=1 \n")
        assert oct(kv_out.stat().st_mode & 0o777) == "0o600"
        cat_used = cat_job.used
        yield facade.write(kv_set("app/b", b"2"))
        yield wait_for(lambda: kv_out.read_text() == "a=1 b=2 \n")
        assert (tmp_path / "kv.bak").read_text() == "a=1 \n"
        assert cat_job.used is cat_used  # the catalog template was not rendered for KV news
    finally:
        yield server.stopService()


def test_the_plugin_is_an_entry_point_with_a_validated_schema():
    host = PluginHost(task.Clock())
    assert "template" in host.names()
    host.validate_config({"template": {"templates": [
        {"source": "a.ctmpl", "destination": "a", "wait": {"min": "2s", "max": 10},
         "perms": "0640", "command_timeout": "1m30s", "syntax": "jinja"}]}})
    host.validate_config({"template": {}})
    with pytest.raises(PluginConfigError, match="plugins.template/templates/0"):
        host.validate_config({"template": {"templates": [{"source": "a.ctmpl"}]}})
    with pytest.raises(PluginConfigError, match="plugins.template/templates/0/wait/min"):
        host.validate_config({"template": {"templates": [
            {"source": "a", "destination": "b", "wait": {"min": "soon"}}]}})


def test_no_templates_means_no_service():
    assert template_plugin.waypost_frontends(facade=None, reactor=task.Clock(), config={},
                                             catalog=None) == []


# --- files, commands, quiescence --------------------------------------------------------

def test_write_atomic_replaces_whole_files_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "dir" / "out"
    assert write_atomic(str(path), b"one\n", perms=0o640)
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    inode = path.stat().st_ino
    assert not write_atomic(str(path), b"one\n")  # identical: untouched
    assert path.stat().st_ino == inode
    assert write_atomic(str(path), b"two\n", backup=True)
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert (tmp_path / "dir" / "out.bak").read_text() == "one\n"

    def crash(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(render_mod.os, "fsync", crash)
    with pytest.raises(OSError):
        write_atomic(str(path), b"three, cut short\n")
    assert path.read_text() == "two\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out", "out.bak"]  # no temp left


@pytest_twisted.inlineCallbacks
def test_a_command_that_overruns_its_timeout_is_killed():
    from twisted.internet import reactor
    result = yield run_command(reactor, "echo started; sleep 5", timeout=0.2)
    assert result.timed_out and not result.ok
    assert result.output == b"started\n"
    result = yield run_command(reactor, "exit 4", timeout=5)
    assert (result.exit_code, result.describe()) == (4, "exit status 4")


class DictSource:
    def __init__(self):
        self.values = {Dep("kv.get", "k"): b"0"}

    def fetch(self, dep):
        if dep not in self.values:
            raise MissingData(str(dep))
        return self.values[dep]


def make_job(clock, wait_min, wait_max, out):
    spec = TemplateSpec.from_config({"source": "k.ctmpl", "destination": "k",
                                     "wait": {"min": wait_min, "max": wait_max}})
    template = GoTemplate('{{ key "k" }}', "k.ctmpl", FUNCTION_NAMES)
    source = DictSource()
    job = TemplateJob(clock, spec, template, source, dry_out=out.append)
    return job, source


def test_quiescence_waits_for_quiet_then_renders_once():
    clock, out = task.Clock(), []
    job, source = make_job(clock, "2s", "10s", out)
    job.render()
    assert out == ["> k\n0"]
    for value in (b"1", b"2", b"3"):  # a burst, one second apart
        source.values[Dep("kv.get", "k")] = value
        assert job.affected()
        job.poke()
        clock.advance(1)
    assert out == ["> k\n0"]  # still changing
    clock.advance(1)  # two quiet seconds after the last change
    assert out == ["> k\n0", "> k\n3"]
    assert not job.affected()
    clock.advance(20)
    assert len(out) == 2


def test_quiescence_renders_by_max_even_if_changes_continue():
    clock, out = task.Clock(), []
    job, source = make_job(clock, "2s", "5s", out)
    job.render()
    for second in range(1, 8):
        source.values[Dep("kv.get", "k")] = str(second).encode()
        job.poke()
        clock.advance(1)
    # Changes every second never leave two quiet seconds; max forced a render at t=5.
    assert out[1] == "> k\n5"
    assert TemplateSpec.from_config({"source": "s", "wait": {"min": "3s"}}).wait_max == 12


def test_quiescence_without_wait_fires_at_once():
    fired = []
    Quiescence(task.Clock(), 0, 0, lambda: fired.append(1)).poke()
    assert fired == [1]


def test_a_real_agent_loads_the_plugin_from_its_config_file(tmp_path):
    import time
    source = write(tmp_path / "t.ctmpl", '{{ with node }}{{ .Node.Node }}{{ end }} '
                   '{{ range service "consul" }}{{ .Port }}{{ end }} {{ keyOrDefault "x" "-" }}')
    out = tmp_path / "out"
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"plugins": {"template": {"templates": [
        {"source": source, "destination": str(out), "wait": {"min": "50ms"}}]}}}))
    agent = AgentProcess("-config-file", str(config)).start()
    try:
        port = agent.server_port  # the consul service's port is the server RPC port
        expected = [f"oracle {port} -", f"oracle {port} hello"]
        for step, text in enumerate(expected):
            if step:
                agent.request("PUT", "/v1/kv/x", "hello")
            deadline = time.monotonic() + 10
            while not (out.exists() and out.read_text() == text):
                assert time.monotonic() < deadline, f"never rendered {text!r}"
                time.sleep(0.02)
    finally:
        agent.stop()


@pytest_twisted.inlineCallbacks
def test_http_source_follows_each_dependency_with_blocking_queries():
    import threading

    from twisted.internet import reactor
    dep = Dep("kv.get", "app/k")
    answers = [(200, 5, b'[{"Key": "app/k", "Value": "MQ=="}]'),
               (200, 6, b'[{"Key": "app/k", "Value": "MQ=="}]'),  # woken, same value
               (404, 9, b"")]
    calls, changes, parked = [], [], threading.Event()

    def get(path, query):
        calls.append((path, query))
        if answers:
            return answers.pop(0)
        parked.wait(5)  # a long poll that outlives the test
        raise OSError("stopped")
    source = template_plugin.HTTPSource(reactor, get, changes.append, lambda *a: None)
    with pytest.raises(MissingData):
        source.fetch(dep)
    yield wait_for(lambda: len(changes) == 2)
    source.stop()
    parked.set()
    assert source.fetch(dep) is None  # the key went away
    assert calls[0] == ("/v1/kv/app/k", [("stale", None)])
    assert [q[-2:] for _, q in calls[1:4]] == [[("index", "5"), ("wait", "60s")],
                                                [("index", "6"), ("wait", "60s")],
                                                [("index", "9"), ("wait", "60s")]]


# --- waypost template (CLI) -------------------------------------------------------------

# Through main when it knows the command, else straight to the command (same code path).
LAUNCH = ("import sys; from gateway.cli import main as m; "
          "from gateway.cli.commands import Context, execute, template; "
          "sys.exit(m.main(['template', *sys.argv[1:]]) if 'template' in m._commands() "
          "else execute(template.COMMAND, Context.from_process(), sys.argv[1:]))")


def waypost_template(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", LAUNCH, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def demo_agent():
    """A real agent holding the data the reference demo was recorded with."""
    agent = AgentProcess().start()
    try:
        for body in (
            {"ID": "web1", "Name": "web", "Tags": ["primary", "v1"], "Address": "127.0.0.1",
             "Port": 8080, "Check": {"TTL": "30s", "Status": "passing"}},
            {"ID": "web2", "Name": "web", "Tags": ["secondary"], "Port": 8081,
             "Check": {"TTL": "60s"}},
        ):
            assert agent.request("PUT", "/v1/agent/service/register", json.dumps(body))[0] == 200
        for key, value in (("app/config/db", "changed-while-blocking"),
                           ("app/config/port", "8080"), ("app/emptyfolder/", ""),
                           ("app/new/key", "nv")):
            assert agent.request("PUT", f"/v1/kv/{key}", value)[0] == 200
        yield agent
    finally:
        agent.stop()


def test_cli_once_renders_the_demo_like_consul_template(demo_agent, tmp_path):
    from tests.test_template_engine import DEMO, DEMO_OUT
    source = write(tmp_path / "demo.ctmpl", DEMO)
    out, marker = tmp_path / "demo.out", tmp_path / "marker"
    done = waypost_template("-http-addr", demo_agent.base, "-once",
                            "-template", f"{source}:{out}:echo done > {marker}")
    assert done.returncode == 0, done.stderr
    assert out.read_text() == DEMO_OUT
    assert marker.read_text() == "done\n"
    assert "rendered" in done.stderr


def test_cli_dry_prints_instead_of_writing(demo_agent, tmp_path):
    source = write(tmp_path / "t.ctmpl", UPSTREAM)
    jinja = write(tmp_path / "t.j2", "{{ keyOrDefault('app/config/port', '?') }}\n")
    done = waypost_template("-http-addr", demo_agent.base, "-dry", "-once",
                            "-template", f"{source}:{tmp_path / 'never'}", "-template", jinja)
    assert done.returncode == 0, done.stderr
    assert f"> {tmp_path / 'never'}\nupstream web {{ server 127.0.0.1:8080; }}\n" in done.stdout
    assert "> \n8080\n" in done.stdout
    assert not (tmp_path / "never").exists()


def test_cli_reports_errors(demo_agent, tmp_path):
    bad = write(tmp_path / "bad.ctmpl", "{{ range }}")
    done = waypost_template("-http-addr", demo_agent.base, "-once", "-template", f"{bad}:x")
    assert done.returncode == 1
    assert "bad.ctmpl:1:10: missing value for range" in done.stderr
    done = waypost_template("-once", "-template", "only-source.ctmpl")
    assert done.returncode == 1 and "no destination" in done.stderr


def test_cli_without_once_follows_changes_until_interrupted(demo_agent, tmp_path):
    import signal
    import time
    source = write(tmp_path / "k.ctmpl", '{{ key "live/k" }}')
    out = tmp_path / "k.out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "-http-addr", demo_agent.base,
                             "-template", f"{source}:{out}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for value in ("one", "two"):
            demo_agent.request("PUT", "/v1/kv/live/k", value)
            deadline = time.monotonic() + 10
            while not (out.exists() and out.read_text() == value):
                assert time.monotonic() < deadline, proc.stderr and "no render"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_template_flag_parsing_matches_consul_template():
    from gateway.cli.commands.template import parse_template_flag
    assert parse_template_flag("in.ctmpl:out.conf:nginx -s reload") == \
        {"source": "in.ctmpl", "destination": "out.conf", "command": "nginx -s reload"}
    assert parse_template_flag("a.ctmpl:out:sh -c 'x:y'") == \
        {"source": "a.ctmpl", "destination": "out", "command": "sh -c 'x:y'"}
    assert parse_template_flag("in.ctmpl") == {"source": "in.ctmpl"}
    assert parse_template_flag("C:\\t.ctmpl:D:\\out") == \
        {"source": "C:\\t.ctmpl", "destination": "D:\\out"}
