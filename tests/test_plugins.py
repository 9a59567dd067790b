"""The plugin host: discovery through entry points, observer hooks, failure isolation, docs."""

from __future__ import annotations

import inspect
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
from gateway.server import WaypostServer

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
    server_store = _store_with_writes(1)
    host.catalog_changed(server_store, "dc1")
    clock.advance(0)
    assert slow.seen == [1]
    for n in (2, 3, 4):
        _write(server_store, n)
        host.catalog_changed(server_store, "dc1")
        clock.advance(0)
    assert slow.seen == [1]  # still busy with the first
    slow.pending.callback(None)
    assert slow.seen == [1, 4]  # then only the latest
    slow.pending.callback(None)
    yield defer.succeed(None)


def _store_with_writes(n):
    from agent.fsm.apply import FSM
    from agent.state.store import StateStore
    store = StateStore()
    store._fsm = FSM(store)
    for i in range(1, n + 1):
        _write(store, i)
    return store


def _write(store, index):
    store._fsm.apply(index, web("n%d" % index, "w%d" % index, index))


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
    assert "http" in host.names()


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
