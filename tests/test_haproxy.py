"""The HAProxy plugin: pure planning and rendering, then a real agent driving a real HAProxy.

The end-to-end tests run `haproxy -W` (master-worker) with contrib/haproxy/haproxy.cfg (paths,
ports and check timings rewritten for 127.0.0.1), small HTTP servers that answer their own name,
and a `waypost agent -dev` subprocess whose config is contrib/haproxy/waypost-haproxy.json
pointed at that HAProxy. Membership changes go through the HTTP API; what HAProxy serves is
sampled through its frontend until it matches, against a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_twisted

from gateway.hookspecs import CatalogView, ServiceInstance
from plugins.haproxy import plugin as haproxy_plugin
from plugins.haproxy.plan import (
    DRAIN,
    MAINT,
    READY,
    Backend,
    Slot,
    Target,
    plan_backend,
    targets_for,
)
from plugins.haproxy.reload import (
    Reloader,
    ReloadError,
    SlotRequest,
    grow,
    render,
    state_file_path,
    template_slots,
)
from plugins.haproxy.runtime import (
    Runtime,
    RuntimeAPI,
    RuntimeAPIError,
    master_command,
    parse_servers_state,
)
from tests.agentproc import ROOT, AgentProcess, free_port

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
CONTRIB = ROOT / "contrib" / "haproxy"
HAPROXY = shutil.which("haproxy") or "haproxy"


# --- the environment (bench/proxy_bench.py uses it too) ----------------------------------------

class Backends:
    """HTTP servers on 127.0.0.1, each answering every GET with its own name."""

    def __init__(self) -> None:
        self.servers: dict[str, ThreadingHTTPServer] = {}

    def get(self, name: str) -> int:
        """The port of the server called `name`, started on first use."""
        if name not in self.servers:
            body = name.encode()

            class Handler(BaseHTTPRequestHandler):
                def do_GET(self) -> None:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args: Any) -> None:
                    pass

            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            self.servers[name] = server
        return self.servers[name].server_address[1]

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


class HAProxyProcess:
    """contrib/haproxy/haproxy.cfg run by `haproxy -W -S` in `directory`, on free ports."""

    def __init__(self, directory: Path, dns_port: int, inter: str = "200ms") -> None:
        self.dir = Path(directory)
        self.port = free_port()
        self.config = self.dir / "haproxy.cfg"
        self.admin = self.dir / "admin.sock"
        self.master = self.dir / "master.sock"
        self.pidfile = self.dir / "haproxy.pid"
        text = (CONTRIB / "haproxy.cfg").read_text()
        for old, new in (("/run/haproxy/", f"{self.dir}/"),
                         ("bind :8080", f"bind 127.0.0.1:{self.port}"),
                         ("127.0.0.1:8600", f"127.0.0.1:{dns_port}"),
                         ("default-server inter 2s", f"default-server inter {inter}"),
                         ("timeout resolve 1s", "timeout resolve 100ms"),
                         ("timeout retry 1s", "timeout retry 100ms")):
            assert old in text, f"contrib/haproxy/haproxy.cfg no longer has {old!r}"
            text = text.replace(old, new)
        self.config.write_text(text)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> HAProxyProcess:
        with open(self.dir / "haproxy.log", "ab") as log:
            self.proc = subprocess.Popen([HAPROXY, "-W", "-S", str(self.master), "-p",
                                          str(self.pidfile), "-f", str(self.config)],
                                         stdout=log, stderr=log)
        wait_for(lambda: self.proc.poll() is not None or self.ready(), timeout)
        assert self.proc.poll() is None, (self.dir / "haproxy.log").read_text()
        return self

    def ready(self) -> bool:
        try:
            return "Pid:" in self.command("show info")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def plugin_paths(self) -> dict[str, str]:
        return {"socket": str(self.admin), "master_socket": str(self.master),
                "config_path": str(self.config), "haproxy_binary": HAPROXY}

    def command(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(self.admin))
            sock.sendall(cmd.encode() + b"\n")
            return b"".join(iter(lambda: sock.recv(65536), b"")).decode()

    def slots(self, backend: str) -> list[Slot]:
        return parse_servers_state(self.command(f"show servers state {backend}").splitlines()
                                   ).get(backend, [])

    def reloads(self) -> int:
        """How often the master reloaded (``show proc`` on the master CLI)."""
        # The master CLI refuses connections for a moment while the master re-executes.
        text = wait_for(lambda: _try(master_command, str(self.master), "show proc"), 5)
        for line in text.splitlines():
            words = line.split()
            if len(words) > 2 and words[1] == "master":
                return int(words[2])
        raise AssertionError("no master in show proc")


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except RuntimeAPIError:
        return None


class LoggedAgent(AgentProcess):
    """An agent subprocess whose log goes to a file (a pipe nobody reads could fill up)."""

    def __init__(self, log: Path, *args: str) -> None:
        super().__init__(*args)
        self.log = Path(log)
        self.dns_port = int(self.args[self.args.index("-dns-port") + 1])

    def start(self, timeout: float = 15.0) -> LoggedAgent:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", *self.args],
                                         cwd=ROOT, env=env, stdout=log, stderr=log)
        wait_for(lambda: self.proc.poll() is not None or self._leader(), timeout)
        assert self.proc.poll() is None, self.log_text()
        return self

    def _leader(self) -> bool:
        try:
            status, _, body = self.request("GET", "/v1/status/leader", timeout=1)
        except OSError:
            return False
        return status == 200 and bool(json.loads(body))

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return None if self.proc is None else self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def register(agent: AgentProcess, name: str, sid: str, port: int, ttl: bool = False,
             **fields: Any) -> None:
    body: dict[str, Any] = {"Name": name, "ID": sid, "Address": "127.0.0.1", "Port": port,
                            **fields}
    if ttl:
        body["Check"] = {"TTL": "60s", "Status": "passing"}
    status, _, data = agent.request("PUT", "/v1/agent/service/register", json.dumps(body))
    assert status == 200, data


def get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, str]:
    """One GET through a fresh connection (no keep-alive): (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def sample(port: int, path: str = "/", n: int = 10) -> set[str]:
    """The names that answered `n` requests (a 503 from an empty backend adds none)."""
    names = set()
    for _ in range(n):
        status, body = get(port, path)
        if status == 200:
            names.add(body)
    return names


def wait_for(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        time.sleep(interval)


def wait_served(haproxy: HAProxyProcess, expected: set[str], path: str = "/",
                timeout: float = 10.0) -> float:
    """Wait until HAProxy spreads requests over exactly `expected`; the seconds it took."""
    start = time.monotonic()
    n = 2 * len(expected) + 4
    seen: list[set[str]] = []

    def matches() -> bool:
        seen.append(sample(haproxy.port, path, n))
        return seen[-1] == expected
    try:
        wait_for(matches, timeout, interval=0.01)
    except AssertionError:
        raise AssertionError(f"HAProxy serves {seen[-1]}, not {expected}") from None
    return time.monotonic() - start


class LoadLoop:
    """A thread doing GETs without keep-alive through HAProxy until the block ends."""

    def __init__(self, port: int, path: str = "/") -> None:
        self.port, self.path = port, path
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(self.port, self.path)
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                continue
            if status == 200:
                self.ok += 1
            else:
                self.failures.append(f"HTTP {status}: {body[:80]}")

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


# --- plan.py ---------------------------------------------------------------------------------

def slots(n: int, **states) -> list[Slot]:
    return [Slot(f"web{i}", "127.0.0.1", 80, 1, states.get(f"web{i}", MAINT))
            for i in range(1, n + 1)]


def target(key: str, port: int, weight: int = 1, state: str = READY) -> Target:
    return Target(key, "10.0.0.1", port, weight, state)


def test_plan_enables_free_slots_in_order():
    plan = plan_backend("web", slots(3), [target("n/b", 2), target("n/a", 1, weight=5)])
    assert plan.commands == (
        "set server web/web1 addr 10.0.0.1 port 1", "set server web/web1 weight 5",
        "set server web/web1 health up", "set server web/web1 state ready",
        "set server web/web2 addr 10.0.0.1 port 2",
        "set server web/web2 health up", "set server web/web2 state ready")
    assert plan.owners == {"web1": "n/a", "web2": "n/b"}
    assert [s.state for s in plan.slots] == [READY, READY, MAINT]
    assert plan.missing == () and plan.needed == 2


def test_plan_is_stable_and_touches_only_changes():
    first = plan_backend("web", slots(3), [target("n/a", 1), target("n/b", 2)])
    # a goes away, c comes: b keeps web2; c takes an idle slot rather than repointing the
    # live one a leaves, which is disabled last
    second = plan_backend("web", first.slots, [target("n/b", 2), target("n/c", 3)], first.owners)
    assert second.owners == {"web2": "n/b", "web3": "n/c"}
    assert second.commands == ("set server web/web3 addr 10.0.0.1 port 3",
                               "set server web/web3 health up", "set server web/web3 state ready",
                               "set server web/web1 state maint")
    third = plan_backend("web", second.slots, [target("n/b", 2), target("n/c", 3)], second.owners)
    assert third.commands == ()


def test_plan_enables_before_it_disables():
    first = plan_backend("web", slots(2), [target("n/a", 1)])
    plan = plan_backend("web", first.slots, [target("n/b", 2)], first.owners)
    assert plan.commands[-1] == "set server web/web1 state maint"
    assert plan.commands[0].startswith("set server web/web2 addr")


def test_plan_drains_instances_in_maintenance_and_never_gives_them_a_slot():
    first = plan_backend("web", slots(3), [target("n/a", 1), target("n/b", 2)])
    plan = plan_backend("web", first.slots, [target("n/a", 1),
                                             target("n/b", 2, state=DRAIN),
                                             target("n/c", 3, state=DRAIN)], first.owners)
    assert plan.commands == ("set server web/web2 state drain",)
    assert [s.state for s in plan.slots] == [READY, DRAIN, MAINT]
    back = plan_backend("web", plan.slots, [target("n/a", 1), target("n/b", 2)], plan.owners)
    assert back.commands == ("set server web/web2 state ready",)


def test_plan_weights_and_addresses_follow_the_instance():
    first = plan_backend("web", slots(1), [target("n/a", 1)])
    plan = plan_backend("web", first.slots, [Target("n/a", "10.0.0.9", 7, 30, READY)],
                        first.owners)
    assert plan.commands == ("set server web/web1 addr 10.0.0.9 port 7",
                             "set server web/web1 weight 30")


def test_plan_without_a_record_matches_slots_by_address():
    live = [Slot("web1", "10.0.0.1", 2, 1, READY), Slot("web2", "10.0.0.1", 1, 1, READY),
            Slot("web3", "10.0.0.1", 9, 1, READY)]
    plan = plan_backend("web", live, [target("n/a", 1), target("n/b", 2)])
    assert plan.owners == {"web1": "n/b", "web2": "n/a"}
    assert plan.commands == ("set server web/web3 state maint",)


def test_plan_reports_missing_slots():
    plan = plan_backend("web", slots(2), [target(f"n/{i}", i) for i in range(5)])
    assert len(plan.missing) == 3 and plan.needed == 5
    assert all(s.state == READY for s in plan.slots)


def instance(sid: str, status: str = "passing", **kw) -> ServiceInstance:
    fields = {"node": "n", "node_address": "10.0.0.1", "service_id": sid, "name": "web",
                  "address": "10.0.0.1", "port": 80, "tags": (), "meta": {}, "status": status}
    fields.update(kw)
    return ServiceInstance(**fields)


def test_targets_take_health_maintenance_tags_and_weights():
    view = CatalogView(index=1, datacenter="dc1", nodes={}, services={"web": (
        instance("ok", meta={"w": "300"}), instance("warn", "warning", weights=(5, 2)),
        instance("bad", "critical"), instance("maint", "maintenance"),
        instance("tagged", tags=("weight=7",)), instance("named", address="web.example"),
        instance("canary", tags=("canary",)))})
    backend = Backend("web", "web", "web", weight_meta="w", weight_tag_prefix="weight=")
    targets, skipped = targets_for(view, backend)
    got = {t.key: (t.weight, t.state) for t in targets}
    assert got == {"n/ok": (256, READY), "n/warn": (2, READY), "n/tagged": (7, READY),
                   "n/canary": (1, READY), "n/maint": (1, DRAIN)}
    assert skipped == ["n/named"]
    strict = Backend("web", "web", "web", tag="canary", passing_only=True)
    assert [t.key for t in targets_for(view, strict)[0]] == ["n/canary"]


# --- runtime.py / reload.py, pure parts ---------------------------------------------------------

COLUMNS = ("be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
           "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
           "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
           "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
           "srv_agent_addr srv_agent_port")
STATE = ["1", "# " + COLUMNS,  # as HAProxy 2.6 prints it
         "3 web 1 web1 127.0.0.1 2 4 1 1 9 6 3 4 6 0 0 0 - 19001 - 0 0 - - 0",
         "3 web 2 web2 127.0.0.1 2 12 7 1 1 6 3 4 6 0 0 0 - 19002 - 0 0 - - 0",
         "3 web 3 web3 127.0.0.1 0 5 1 1 10 1 0 0 14 0 0 0 - 80 - 0 0 - - 0", ""]


def test_servers_state_is_parsed():
    assert parse_servers_state(STATE) == {"web": [
        Slot("web1", "127.0.0.1", 19001, 1, READY), Slot("web2", "127.0.0.1", 19002, 7, DRAIN),
        Slot("web3", "127.0.0.1", 80, 1, MAINT)]}


def test_render_grows_slots_and_adds_missing_backends():
    template = (CONTRIB / "haproxy.cfg").read_text()
    text = render(template, {"web": SlotRequest("web", "web", 16),
                             "new": SlotRequest("new", "n", 4)})
    assert template_slots(text, "web", "web") == 16
    assert template_slots(text, "api", "api") == 5  # untouched
    assert "backend new\n    balance roundrobin\n    server-template n 4 127.0.0.1:80" in text
    assert template_slots(render(template, {"web": SlotRequest("web", "web", 4)}),
                          "web", "web") == 10  # never shrinks
    placeholder = "backend b\n    server-template x ${slots_b} 127.0.0.1:80\n"
    assert "server-template x 8 " in render(placeholder, {"b": SlotRequest("b", "x", 8)})
    added = render("backend b\n    balance first\n\nfrontend f\n", {"b": SlotRequest("b", "s", 2)})
    assert added.startswith("backend b\n    balance first\n    server-template s 2 ")
    assert state_file_path(template) == "/run/haproxy/server-state"
    assert grow(12, 10) == 16 and grow(3, 10) == 10 and grow(0, 0) == 1


@pytest_twisted.inlineCallbacks
def test_a_config_haproxy_rejects_is_never_installed(tmp_path):
    from twisted.internet import reactor
    config = tmp_path / "haproxy.cfg"
    original = "global\n    no-such-keyword\nbackend web\n    server-template web 2 127.0.0.1:80\n"
    config.write_text(original)
    runtime = Runtime(reactor, RuntimeAPI(str(tmp_path / "admin.sock")), str(tmp_path / "m.sock"))
    runtime.start()
    try:
        reloader = Reloader(reactor, runtime, str(config), binary=HAPROXY)
        with pytest.raises(ReloadError, match="rejected the rendered config"):
            yield reloader.reload({"web": SlotRequest("web", "web", 4)})
    finally:
        runtime.stop()
    assert config.read_text() == original
    assert list(tmp_path.iterdir()) == [config]


def test_contrib_agent_config_matches_the_schema():
    schema = haproxy_plugin.waypost_config_schema()
    config = json.loads((CONTRIB / "waypost-haproxy.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(config["plugins"]["haproxy"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"socket": "/x", "backends": [{"name": "web"}]}, schema)


def test_without_settings_the_plugin_does_nothing():
    assert haproxy_plugin.waypost_frontends(reactor=None, config={}, catalog=None) == []


# --- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A backend pool, a master-worker HAProxy and an agent driving it through the plugin."""
    d = tmp_path_factory.mktemp("haproxy")
    backends = Backends()
    agent = LoggedAgent(d / "agent.log")
    haproxy = HAProxyProcess(d, dns_port=agent.dns_port).start()
    config = json.loads((CONTRIB / "waypost-haproxy.json").read_text())
    config["plugins"]["haproxy"].update(haproxy.plugin_paths(), retry_interval=1)
    (d / "agent.json").write_text(json.dumps(config))
    agent.args += ["-config-file", str(d / "agent.json")]
    agent.start()
    yield agent, haproxy, backends
    agent.stop()
    haproxy.stop()
    backends.close()


def test_served_set_follows_register_fail_recover_deregister(env):
    agent, haproxy, backends = env
    a, b, c = (backends.get(n) for n in ("a", "b", "c"))
    try:
        register(agent, "web", "a", a, ttl=True)
        register(agent, "web", "b", b, ttl=True)
        wait_served(haproxy, {"a", "b"})
        register(agent, "web", "c", c, ttl=True, Meta={"haproxy_weight": "5"})
        wait_served(haproxy, {"a", "b", "c"})
        assert {s.port: s.weight for s in haproxy.slots("web")}[c] == 5
        assert agent.request("PUT", "/v1/agent/check/fail/service:b")[0] == 200
        wait_served(haproxy, {"a", "c"})
        assert agent.request("PUT", "/v1/agent/check/pass/service:b")[0] == 200
        wait_served(haproxy, {"a", "b", "c"})
        agent.request("PUT", "/v1/agent/service/deregister/a")
        wait_served(haproxy, {"b", "c"})
    finally:
        for sid in ("a", "b", "c"):
            agent.request("PUT", f"/v1/agent/service/deregister/{sid}")
    wait_served(haproxy, set())


def test_fifty_changes_under_load_fail_no_request(env):
    agent, haproxy, backends = env
    pool = ["c0", "c1", "c2", "c3", "c4", "c5"]
    ports = {sid: backends.get(sid) for sid in pool}
    reloads = haproxy.reloads()
    up = {"c0", "c1"}
    for sid in up:
        register(agent, "web", sid, ports[sid])
    wait_served(haproxy, up)
    try:
        with LoadLoop(haproxy.port) as load:
            for i in range(50):
                sid = pool[2 + i % 4]
                if sid in up:
                    agent.request("PUT", f"/v1/agent/service/deregister/{sid}")
                    up.discard(sid)
                else:
                    register(agent, "web", sid, ports[sid])
                    up.add(sid)
                time.sleep(0.02)
            wait_served(haproxy, up)
        assert load.failures == [], load.failures[:5]
        assert load.ok > 100
        assert haproxy.reloads() == reloads  # all of it through the runtime API
    finally:
        for sid in pool:
            agent.request("PUT", f"/v1/agent/service/deregister/{sid}")
    wait_served(haproxy, set())


def test_maintenance_drains_the_instance(env):
    agent, haproxy, backends = env
    ports = {sid: backends.get(sid) for sid in ("m1", "m2")}
    try:
        for sid, port in ports.items():
            register(agent, "web", sid, port)
        wait_served(haproxy, {"m1", "m2"})
        agent.request("PUT", "/v1/agent/service/maintenance/m2?enable=true&reason=deploy")
        wait_served(haproxy, {"m1"})
        slot = wait_for(lambda: next((s for s in haproxy.slots("web")
                                      if s.port == ports["m2"] and s.state == DRAIN), None))
        assert slot.state == DRAIN
        agent.request("PUT", "/v1/agent/service/maintenance/m2?enable=false")
        wait_served(haproxy, {"m1", "m2"})
    finally:
        for sid in ports:
            agent.request("PUT", f"/v1/agent/service/deregister/{sid}")
    wait_served(haproxy, set())


def test_dns_srv_discovery_through_the_resolvers_section(env):
    agent, haproxy, backends = env
    ports = {sid: backends.get(sid) for sid in ("x", "y")}
    try:
        for sid, port in ports.items():
            register(agent, "api", sid, port)
        wait_served(haproxy, {"x", "y"}, path="/api/", timeout=15)
        agent.request("PUT", "/v1/agent/service/deregister/x")
        wait_served(haproxy, {"y"}, path="/api/", timeout=15)
    finally:
        for sid in ports:
            agent.request("PUT", f"/v1/agent/service/deregister/{sid}")


def test_more_instances_than_slots_reload_seamlessly(env):
    agent, haproxy, backends = env
    names = [f"r{i}" for i in range(12)]
    ports = {sid: backends.get(sid) for sid in names}
    before = haproxy.reloads()
    try:
        register(agent, "web", names[0], ports[names[0]])
        wait_served(haproxy, {names[0]})
        with LoadLoop(haproxy.port) as load:
            for sid in names[1:]:
                register(agent, "web", sid, ports[sid])
            wait_served(haproxy, set(names), timeout=20)
        assert load.failures == [], load.failures[:5]
        assert haproxy.reloads() > before
        assert len(haproxy.slots("web")) == 16
        assert template_slots(haproxy.config.read_text(), "web", "web") == 16
    finally:
        for sid in names:
            agent.request("PUT", f"/v1/agent/service/deregister/{sid}")
    wait_served(haproxy, set())


def test_reload_by_signal_renders_from_the_template(tmp_path):
    """Without a master CLI: SIGUSR2 to the pid in ``pidfile``; the config comes from a template."""
    backends = Backends()
    agent = LoggedAgent(tmp_path / "agent.log")
    haproxy = HAProxyProcess(tmp_path, dns_port=agent.dns_port)
    template = tmp_path / "template.cfg"
    template.write_text(haproxy.config.read_text().replace("server-template web 10",
                                                           "server-template web ${slots_web}"))
    haproxy.config.write_text(render(template.read_text(), {"web": SlotRequest("web", "web", 2)}))
    haproxy.start()
    settings = {"socket": str(haproxy.admin), "pidfile": str(haproxy.pidfile),
                "config_path": str(haproxy.config), "config_template": str(template),
                "haproxy_binary": HAPROXY, "backends": [{"name": "web", "service": "web"}]}
    (tmp_path / "agent.json").write_text(json.dumps({"plugins": {"haproxy": settings}}))
    agent.args += ["-config-file", str(tmp_path / "agent.json")]
    agent.start()
    names = {"s1", "s2", "s3"}
    try:
        for sid in sorted(names):
            register(agent, "web", sid, backends.get(sid))
        wait_served(haproxy, names)
        assert haproxy.reloads() == 1 and len(haproxy.slots("web")) == 4
        assert template_slots(haproxy.config.read_text(), "web", "web") == 4
    finally:
        agent.stop()
        haproxy.stop()
        backends.close()


def test_dead_socket_is_logged_the_agent_runs_on_and_catches_up(tmp_path):
    backends = Backends()
    agent = LoggedAgent(tmp_path / "agent.log")
    haproxy = HAProxyProcess(tmp_path, dns_port=agent.dns_port)  # not started yet
    settings = dict(haproxy.plugin_paths(), retry_interval=0.2,
                    backends=[{"name": "web", "service": "web"}])
    (tmp_path / "agent.json").write_text(json.dumps({"plugins": {"haproxy": settings}}))
    agent.args += ["-config-file", str(tmp_path / "agent.json")]
    agent.start()
    try:
        register(agent, "web", "w1", backends.get("w1"))
        wait_for(lambda: "does not exist" in agent.log_text())
        line = next(l for l in agent.log_text().splitlines() if "does not exist" in l)
        assert str(haproxy.admin) in line and "HAProxy left as it was" in line
        assert line.count("does not exist") == 1 and agent.log_text().count("does not exist") == 1
        # a socket file nobody listens on: refused, said so, and the agent answers on
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(str(haproxy.admin))
        register(agent, "web", "w2", backends.get("w2"))
        wait_for(lambda: "Connection refused" in agent.log_text())
        assert agent.request("GET", "/v1/status/leader")[0] == 200
        assert agent.proc.poll() is None
        # HAProxy comes up: the next retry brings it in line with the catalog
        haproxy.start()
        wait_served(haproxy, {"w1", "w2"})
        wait_for(lambda: "back in sync" in agent.log_text())
    finally:
        agent.stop()
        haproxy.stop()
        backends.close()
