"""The template plugin's hooks, its agent-side service, and the standalone runner.

In the agent: configured under ``plugins.template`` (``schemas/plugin-template.json``),
``{"templates": [{"source": ..., "destination": ..., "command": ...}]}``; without templates it
contributes nothing. `TemplateService` renders every template at start, then re-renders a
template only when data it read changed: catalog changes are checked against the catalog
dependencies a template used, KV changes against its KV dependencies.

Standalone (``waypost template``, gateway/cli/commands/template.py loads this module through
the ``waypost`` entry point): `run_cli` renders against an agent's HTTP API through
`HTTPSource`, which keeps one blocking query per dependency, as consul-template does.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import txaio
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from gateway.hookspecs import CatalogFeed, hookimpl
from plugins.template import data as d
from plugins.template.gotemplate import GoTemplate
from plugins.template.render import TemplateJob, TemplateSpec

txaio.use_twisted()

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "plugin-template.json"
MAINTENANCE_CHECKS = ("_node_maintenance", "_service_maintenance:")


class TemplateLoadError(Exception):
    """A template file cannot be read or parsed; ``str()`` names the file (and line)."""


def load_template(spec: TemplateSpec) -> Any:
    """Read and parse ``spec.source`` with the syntax its extension or settings choose."""
    try:
        text = Path(spec.source).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise TemplateLoadError(f"cannot read template {spec.source}: "
                                f"{exc.strerror or exc}") from None
    try:
        if spec.is_jinja:
            from plugins.template.jinja import JinjaTemplate  # Jinja only when used
            return JinjaTemplate(text, spec.source)
        return GoTemplate(text, spec.source, d.FUNCTION_NAMES, spec.left_delimiter,
                          spec.right_delimiter)
    except Exception as exc:  # noqa: BLE001 - every parse error is the user's to read
        raise TemplateLoadError(str(exc)) from None


# --- in the agent -----------------------------------------------------------------------

class TemplateService(Service):
    """Keeps every configured template rendered from the agent's catalog and KV store."""

    name = "template"
    log = txaio.make_logger()

    def __init__(self, reactor: Any, catalog: CatalogFeed, specs: Sequence[TemplateSpec], *,
                 node_name: str = "", env: Mapping[str, str] | None = None) -> None:
        self.reactor = reactor
        self.catalog = catalog
        self.source = d.FeedSource(catalog, node_name)
        self.jobs: list[TemplateJob] = []
        for spec in specs:
            try:
                template = load_template(spec)
            except TemplateLoadError as exc:
                self.log.error("template {source} disabled: {error}; {destination} left "
                               "unchanged", source=spec.source, error=exc,
                               destination=spec.destination)
                continue
            self.jobs.append(TemplateJob(reactor, spec, template, self.source, env=env))
        self._unsubscribe: list[Callable[[], None]] = []

    def startService(self) -> None:
        super().startService()
        if not self.jobs:
            return
        self._unsubscribe = [self.catalog.subscribe(lambda view: self._changed(kv=False)),
                             self.catalog.subscribe_kv("", lambda: self._changed(kv=True))]
        for job in self.jobs:
            job.render()

    def stopService(self) -> Deferred:
        super().stopService()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        for job in self.jobs:
            job.stop()
        return succeed(None)

    def _changed(self, kv: bool) -> None:
        for job in self.jobs:
            if job.affected(kv=kv):
                job.poke()


@hookimpl
def waypost_config_schema() -> Mapping[str, Any]:
    """The settings under ``plugins.template``: ``schemas/plugin-template.json``."""
    return json.loads(SCHEMA_PATH.read_text())


@hookimpl
def waypost_frontends(facade: Any, reactor: Any, config: Mapping[str, Any],
                      catalog: CatalogFeed) -> list:
    """One `TemplateService` when templates are configured, else nothing."""
    templates = (config or {}).get("templates") or []
    if not templates:
        return []
    # ``node`` without a name means this agent's node; the facade's config knows it.
    node_name = getattr(getattr(facade, "config", None), "node_name", "") or ""
    specs = [TemplateSpec.from_config(item) for item in templates]
    return [TemplateService(reactor, catalog, specs, node_name=node_name, env=os.environ)]


# --- over HTTP --------------------------------------------------------------------------

# get(path, query) -> (status, X-Consul-Index, body); raises on transport or HTTP errors.
Getter = Callable[[str, list], tuple[int, int, bytes]]


class HTTPSource:
    """Data from an agent's HTTP API: one blocking-query loop per dependency, in a daemon
    thread (``get`` is a blocking client), handing new values to the reactor thread."""

    def __init__(self, reactor: Any, get: Getter, on_change: Callable[[d.Dep], None],
                 on_fatal: Callable[[d.Dep, Exception], None], *, wait: str = "60s",
                 retries: int = 3, backoff: float = 0.25) -> None:
        self.reactor = reactor
        self.get = get
        self.on_change = on_change
        self.on_fatal = on_fatal
        self.wait = wait
        self.retries = retries
        self.backoff = backoff
        self._values: dict[d.Dep, Any] = {}
        self._watched: set[d.Dep] = set()
        self._stop = threading.Event()
        self._node_name = ""

    def fetch(self, dep: d.Dep) -> Any:
        if dep in self._values:
            return self._values[dep]
        if dep not in self._watched and not self._stop.is_set():
            self._watched.add(dep)
            threading.Thread(target=self._watch, args=(dep,), name=f"watch {dep}",
                             daemon=True).start()
        raise d.MissingData(str(dep))

    def stop(self) -> None:
        self._stop.set()

    def _watch(self, dep: d.Dep) -> None:
        index = 0
        failures = 0
        while not self._stop.is_set():
            try:
                path, query = self._request(dep)
                if index:
                    query += [("index", str(index)), ("wait", self.wait)]
                status, new_index, body = self.get(path, query)
                value = shape(dep, status, body)
            except Exception as exc:  # noqa: BLE001 - retried, then reported
                failures += 1
                if failures > self.retries:
                    self.reactor.callFromThread(self.on_fatal, dep, exc)
                    return
                self._stop.wait(min(self.backoff * 2 ** (failures - 1), 60.0))
                continue
            failures = 0
            # An index that went backwards (a restore) restarts from a plain read; never 0
            # after a read, or the next "blocking" query would return at once, forever.
            index = 0 if new_index < index else max(new_index, 1)
            self.reactor.callFromThread(self._received, dep, value)

    def _request(self, dep: d.Dep) -> tuple[str, list]:
        query: list[tuple[str, str | None]] = [("stale", None)]
        if dep.dc:
            query.append(("dc", dep.dc))
        name = quote(dep.name, safe="")
        if dep.kind == "catalog.services":
            return "/v1/catalog/services", query
        if dep.kind == "health.service":
            query += [("tag", dep.tag)] if dep.tag else []
            query += [("passing", "1")] if not dep.filter else []
            return f"/v1/health/service/{name}", query
        if dep.kind == "catalog.nodes":
            return "/v1/catalog/nodes", query
        if dep.kind == "catalog.node":
            return f"/v1/catalog/node/{name or quote(self._local_node(), safe='')}", query
        if dep.kind == "kv.list":
            query.append(("recurse", None))
        return f"/v1/kv/{quote(dep.name, safe='/')}", query

    def _local_node(self) -> str:
        if not self._node_name:
            _, _, body = self.get("/v1/agent/self", [])
            self._node_name = json.loads(body)["Config"]["NodeName"]
        return self._node_name

    def _received(self, dep: d.Dep, value: Any) -> None:
        old = self._values.get(dep, d.MISSING)
        self._values[dep] = value
        if old is d.MISSING or old != value:
            self.on_change(dep)


def _status(checks: Sequence[Mapping[str, Any]]) -> str:
    """An instance's health the way consul-template's API client aggregates its checks."""
    statuses = [c.get("Status", "") for c in checks]
    if any(str(c.get("CheckID", "")).startswith(MAINTENANCE_CHECKS) for c in checks):
        return "maintenance"
    for status in ("critical", "warning"):
        if status in statuses:
            return status
    return "passing"


def _node(n: Mapping[str, Any]) -> d.Node:
    return d.Node(n.get("ID", ""), n["Node"], n.get("Address", ""), n.get("Datacenter", ""),
                  n.get("TaggedAddresses") or {}, n.get("Meta") or {})


def shape(dep: d.Dep, status: int, body: bytes) -> Any:
    """The value of ``dep`` from the agent's JSON answer (404 means none)."""
    doc = json.loads(body) if status != 404 and body.strip() else None
    if dep.kind == "catalog.services":
        return tuple(d.CatalogSnippet(n, d.sorted_tags(t or ())) for n, t in sorted((doc or {}).items()))
    if dep.kind == "health.service":
        found = []
        for entry in doc or ():
            node, svc = entry["Node"], entry["Service"]
            state = _status(entry.get("Checks") or ())
            if not d.accepts(dep, state):
                continue
            weights = svc.get("Weights") or {}
            found.append(d.HealthService(
                Node=node["Node"], NodeID=node.get("ID", ""), NodeAddress=node.get("Address", ""),
                NodeDatacenter=node.get("Datacenter", ""),
                NodeTaggedAddresses=node.get("TaggedAddresses") or {},
                NodeMeta=node.get("Meta") or {}, ServiceMeta=svc.get("Meta") or {},
                Address=svc.get("Address") or node.get("Address", ""), ID=svc["ID"],
                Name=svc["Service"], Tags=d.sorted_tags(svc.get("Tags") or ()), Status=state,
                Port=svc.get("Port", 0),
                Weights=d.Weights(weights.get("Passing", 1), weights.get("Warning", 1))))
        return tuple(sorted(found, key=lambda s: (s.Node, s.ID)))
    if dep.kind == "catalog.nodes":
        return tuple(sorted((_node(n) for n in doc or ()), key=lambda n: n.Node))
    if dep.kind == "catalog.node":
        if not doc:
            return None
        services = sorted((d.CatalogNodeService(s["ID"], s["Service"],
                                                d.sorted_tags(s.get("Tags") or ()),
                                                s.get("Meta") or {}, s.get("Port", 0),
                                                s.get("Address", ""))
                           for s in (doc.get("Services") or {}).values()),
                          key=lambda s: (s.Service, s.ID))
        return d.CatalogNode(_node(doc["Node"]), tuple(services))
    if dep.kind == "kv.get":
        return None if not doc else base64.b64decode(doc[0].get("Value") or "")
    pairs = [d.KeyPair(e["Key"], "", d.text(base64.b64decode(e.get("Value") or "")),
                       e.get("Flags", 0), e.get("CreateIndex", 0), e.get("ModifyIndex", 0),
                       e.get("LockIndex", 0), e.get("Session", ""))
             for e in sorted(doc or (), key=lambda e: e["Key"])]
    return d.relative_pairs(dep.name, pairs)


# --- standalone (waypost template) ------------------------------------------------------

class StandaloneRunner:
    """Renders templates against an agent over HTTP until stopped, or once (``once``).

    `start` returns a Deferred of the exit code: in once mode it fires when every template has
    rendered and its command has finished (1 if a command failed); a template that cannot
    render, or an agent that stays unreachable, ends the run with 1 in either mode.
    """

    log = txaio.make_logger()

    def __init__(self, reactor: Any, get: Getter, specs: Sequence[TemplateSpec], *,
                 once: bool = False, dry_out: Callable[[str], None] | None = None,
                 env: Mapping[str, str] | None = None, wait: str = "60s") -> None:
        self.once = once
        self.done: Deferred = Deferred()
        # Once: fail fast (about 2s) if the agent is away. Watching: ride out an agent restart
        # or an election as consul-template does (12 tries, backing off up to a minute).
        self.source = HTTPSource(reactor, get, self._changed, self._fatal, wait=wait,
                                 retries=3 if once else 12)
        # Parse everything first: a broken template stops the run before any request.
        templates = [load_template(spec) for spec in specs]
        self.jobs = [TemplateJob(reactor, spec, template, self.source, env=env,
                                 dry_out=dry_out, on_settled=self._settled)
                     for spec, template in zip(specs, templates)]

    def start(self) -> Deferred:
        for job in self.jobs:
            job.render()
        return self.done

    def stop(self) -> None:
        self.source.stop()
        for job in self.jobs:
            job.stop()

    def _changed(self, dep: d.Dep) -> None:
        for job in self.jobs:
            if job.used is not None and dep in job.used and job.affected():
                job.poke()

    def _settled(self, job: TemplateJob) -> None:
        if job.error is not None:
            self._finish(1)
        elif self.once and all(j.rendered and not j.busy for j in self.jobs):
            self._finish(1 if any(j.command_failed for j in self.jobs) else 0)

    def _fatal(self, dep: d.Dep, error: Exception) -> None:
        self.log.error("{dep}: giving up: {error}", dep=str(dep), error=error)
        self._finish(1)

    def _finish(self, code: int) -> None:
        if not self.done.called:
            self.stop()
            self.done.callback(code)


def run_cli(reactor: Any, get: Getter, templates: Sequence[Mapping[str, Any]], *,
            once: bool, dry: bool, out: Callable[[str], None], err: Callable[[str], None],
            env: Mapping[str, str] | None = None) -> int:
    """Run ``waypost template`` on ``reactor`` (which this call runs); the exit code.

    SIGINT and SIGTERM stop the reactor (Twisted's handlers), which ends the run cleanly.
    """
    from twisted.logger import LogLevel, formatEvent, globalLogBeginner

    def observer(event: Mapping[str, Any]) -> None:
        # Our own news from info up; other libraries' (the reactor's) only when they warn.
        level = event.get("log_level")
        ours = str(event.get("log_namespace", "")).startswith("plugins.template")
        if level is not None and level >= (LogLevel.info if ours else LogLevel.warn):
            err(f"[{level.name.upper()}] {formatEvent(event)}")
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    try:
        specs = [TemplateSpec.from_config(item) for item in templates]
        runner = StandaloneRunner(reactor, get, specs, once=once,
                                  dry_out=out if dry else None, env=env)
    except (TemplateLoadError, ValueError) as exc:
        err(f"Error: {exc}")
        return 1
    result = {"code": 0}

    def begin() -> None:
        finished = runner.start()
        finished.addCallback(lambda code: result.update(code=code))
        finished.addBoth(lambda _: reactor.stop() if reactor.running else None)
    reactor.callWhenRunning(begin)
    reactor.run()
    runner.stop()
    return result["code"]
