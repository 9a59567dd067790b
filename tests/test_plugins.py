"""The plugin host: discovery through entry points, observer hooks, failure isolation, docs."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher

from agent.config.model import AgentConfig, Ports
from agent.fsm.commands import Register
from agent.structs import Check, Node, Service
from gateway import hookspecs
from gateway.hookspecs import hookimpl
from gateway.host import PluginHost
from gateway.http.routes import PluginRoutes, RouteTable
from gateway.server import WaypostServer
from tests.agentproc import ROOT as PROJECT, AgentProcess

ROOT = Path(__file__).resolve().parent.parent


class UpstreamsFile:
    """The example plugin from docs/plugins.md, verbatim in behaviour."""

    def __init__(self, path):
        self.path = Path(path)
        self.calls = 0

    @hookimpl
    def waypost_catalog_changed(self, view, index):
        self.calls += 1
        lines = [f"{name} {i.address}:{i.port}"
                 for name in sorted(view.services) for i in view.healthy(name)]
        self.path.write_text("\n".join(lines) + "\n")


class Broken:
    @hookimpl
    def waypost_catalog_changed(self, view):
        raise RuntimeError("plugin bug")

    @hookimpl
    def waypost_frontends(self, facade, reactor):
        raise RuntimeError("frontend bug")


class Slow:
    """Holds each call open until released, to show coalescing."""

    def __init__(self):
        self.seen = []
        self.pending = None

    @hookimpl
    def waypost_catalog_changed(self, view, index):
        self.seen.append(index)
        self.pending = defer.Deferred()
        return self.pending


def config(**kw) -> AgentConfig:
    return AgentConfig(node_name="plug", node_id="11111111-2222-3333-4444-555555555555",
                       dev=True, ports=Ports(http=0, dns=0), **kw)


def web(node: str, sid: str, port: int, status: str = "passing") -> Register:
    return Register(node=Node(name=node, address="10.0.0.%d" % port),
                    service=Service(node=node, id=sid, name="web", port=port),
                    checks=(Check(node=node, check_id="c" + sid, name="c", status=status, service_id=sid),))


@pytest_twisted.inlineCallbacks
def test_example_plugin_follows_catalog(tmp_path):
    from twisted.internet import reactor
    out = tmp_path / "upstreams"
    plugin = UpstreamsFile(out)
    errors = []

    def observer(event):
        if event.get("log_failure") is not None:
            errors.append(event)
    globalLogPublisher.addObserver(observer)
    server = WaypostServer(config(), reactor, plugins=[("upstreams", plugin), ("broken", Broken())])
    server.startService()
    try:
        # The bundled HTTP API came in through the entry point; the broken frontend did not stop it.
        assert "http" in server.host.names()
        assert server.http_port()
        facade = server.agent.facade
        yield facade.write(web("n1", "w1", 1))
        yield facade.write(web("n2", "w2", 2, status="critical"))
        yield task.deferLater(reactor, 0.01, lambda: None)
        assert out.read_text() == "consul 127.0.0.1:8300\nweb 10.0.0.1:1\n"
        # Two writes in one reactor turn gave one notification.
        assert plugin.calls == 1
        assert any("plugin bug" in repr(e.get("log_failure")) for e in errors)
        assert any("frontend bug" in repr(e.get("log_failure")) for e in errors)
        # Bundled plugins come in through their entry points beside the registered ones.
        assert {"broken", "dns", "http", "upstreams", "watches"} <= set(facade.plugin_names())
    finally:
        globalLogPublisher.removeObserver(observer)
        yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_busy_plugin_gets_only_latest_view():
    clock = task.Clock()
    slow = Slow()
    host = PluginHost(clock, autoload=False, plugins=[("slow", slow)])
    core = _core_with_writes(1)
    host.catalog_changed(core.facade, "dc1")
    clock.advance(0)
    assert slow.seen == [1]
    for n in (2, 3, 4):
        _write(core, n)
        host.catalog_changed(core.facade, "dc1")
        clock.advance(0)
    assert slow.seen == [1]  # still busy with the first
    slow.pending.callback(None)
    assert slow.seen == [1, 4]  # then only the latest
    slow.pending.callback(None)
    yield defer.succeed(None)


def _core_with_writes(n):
    from tests.coreutil import Core
    core = Core()
    for i in range(1, n + 1):
        _write(core, i)
    return core


def _write(core, index):
    core.apply(web("n%d" % index, "w%d" % index, index))


def test_every_hook_is_documented():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    specs = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("waypost_")]
    assert specs
    for name in specs:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### `{name}({params})`" in doc, f"{name} is not documented with its signature"


def test_http_api_is_an_entry_point_plugin():
    host = PluginHost(task.Clock())
    assert {"http", "etcd"} <= set(host.names())


def test_allowlist_limits_plugins():
    host = PluginHost(task.Clock(), allow=[])
    assert host.names() == []


class Configurable:
    @hookimpl
    def waypost_config_schema(self):
        return {"type": "object", "properties": {"size": {"type": "integer"}},
                "additionalProperties": False}


def test_plugin_settings_are_validated_against_their_schema():
    from gateway.host import PluginConfigError
    host = PluginHost(task.Clock(), autoload=False,
                      plugins=[("conf", Configurable()), ("plain", UpstreamsFile("/dev/null"))])
    host.validate_config({"conf": {"size": 3}})
    with pytest.raises(PluginConfigError, match=r"plugins.conf/size: 'x' is not of type 'integer'"):
        host.validate_config({"conf": {"size": "x"}})
    with pytest.raises(PluginConfigError, match="plugins.conf: Additional properties"):
        host.validate_config({"conf": {"bogus": 1}})
    with pytest.raises(PluginConfigError, match="plugins.plain: this plugin takes no settings"):
        host.validate_config({"plain": {}})
    with pytest.raises(PluginConfigError, match="plugins.nope: no plugin of that name"):
        host.validate_config({"nope": {}})


# --- routes through the hook ----------------------------------------------------------------

ROUTES_PLUGIN = """
from gateway.hookspecs import Response, hookimpl


@hookimpl
def waypost_http_routes(routes, facade):
    def hello(request, arg):
        name = request.query.get("name", ["world"])[0]
        text = f"hello {name} from {facade.config.node_name} ({arg})"
        return Response(200, text.encode(), content_type=b"text/plain; charset=utf-8")

    async def echo(request, arg):
        return Response(201, request.body[::-1], content_type=b"application/octet-stream")

    routes.add("/hello/", ["GET"], hello)
    routes.add("/echo", ["PUT"], echo)
    routes.add("/v1/kv/", ["GET"], hello)  # Consul's: refused, and logged with our name
"""


class AgentWithSite(AgentProcess):
    """A real agent that also imports from ``site``, where a test installs a plugin."""

    def __init__(self, site: Path) -> None:
        super().__init__()
        self.site = site

    def start(self, timeout: float = 15.0) -> "AgentWithSite":
        env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(PROJECT), str(self.site))))
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", *self.args],
                                     cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("agent exited: " + self.proc.stderr.read().decode())
            try:
                status, _, body = self.request("GET", "/v1/status/leader", timeout=1)
                if status == 200 and json.loads(body):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("agent did not come up in time")


def test_a_third_party_plugin_serves_routes_it_added_through_the_hook(tmp_path):
    (tmp_path / "waypost_hello.py").write_text(ROUTES_PLUGIN)
    dist = tmp_path / "waypost_hello-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: waypost-hello\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[waypost]\nhello = waypost_hello\n")
    agent = AgentWithSite(tmp_path).start()
    try:
        status, headers, body = agent.request("GET", "/hello/there?name=bob&index=abc")
        assert (status, body) == (200, f"hello bob from {agent.node} (there)".encode())
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert agent.request("HEAD", "/hello/x")[0] == 200  # HEAD comes with GET
        status, _, body = agent.request("PUT", "/echo", b"olleh")  # a coroutine handler
        assert (status, body) == (201, b"hello")
        status, headers, _ = agent.request("POST", "/echo", b"x")
        assert (status, headers["Allow"]) == (405, "OPTIONS,PUT")
        # Consul's routes stay Consul's; the bundled etcd API came in the same way.
        assert agent.request("GET", "/v1/kv/none")[0] == 404
        assert agent.request("GET", "/v2/keys/")[0] == 200
        deadline = time.monotonic() + 10
        log = ""
        while "already served" not in log and time.monotonic() < deadline:
            log += agent.log_so_far()
            time.sleep(0.05)
        assert "plugin hello failed in waypost_http_routes" in log, log[-2000:]
        assert "route '/v1/kv/' is already served" in log
    finally:
        agent.stop()


def test_plugin_routes_take_request_and_arg_and_own_their_query():
    table = RouteTable()
    table.add("/v1/kv/", ("GET",), lambda *a: None)
    routes = PluginRoutes(table)
    seen = []
    routes.add("/p/", ["get", "PUT"], lambda request, arg: seen.append((request, arg)) or "ok")
    routes.add("/exact", ("DELETE",), lambda request, arg: "gone", prefix=False)
    route, arg = table.match("/p/a/b")
    assert route.methods == {"GET", "HEAD", "PUT"} and route.local
    assert route.handler.own_query_params  # Consul's ?index, ?wait are not parsed for it
    assert route.handler(None, "request", None, arg) == "ok" and seen == [("request", "a/b")]
    assert table.match("/exact/x") == (None, "")
    with pytest.raises(ValueError, match="already served"):
        routes.add("/v1/kv/", ("GET",), lambda request, arg: None)
    with pytest.raises(ValueError, match="starts with /"):
        routes.add("v2", ("GET",), lambda request, arg: None)
