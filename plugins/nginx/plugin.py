"""The nginx plugin: keeps an nginx upstreams file in step with the catalog and reloads nginx.

Configured under ``plugins.nginx`` in the agent config (``schemas/plugin-nginx.json``, and
docs/nginx.md for the nginx side). Without settings it contributes nothing. With them it adds
one service that subscribes to catalog changes, renders the upstream blocks (`render.py`) and
hands the text to an `NginxApplier` (`apply.py`), one apply at a time; changes that arrive
meanwhile collapse into the latest view, applied next.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import txaio
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed

from gateway.hookspecs import CatalogFeed, CatalogView, hookimpl
from plugins.nginx.apply import NginxApplier
from plugins.nginx.render import render_upstreams

txaio.use_twisted()

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "plugin-nginx.json"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``0``, ``250ms``, ``1m30s``); ValueError otherwise."""
    if text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


class NginxService(Service):
    """Follows the catalog and applies each new render, serialized, latest view first.

    With a ``wait`` of ``min``/``max`` seconds, a change is applied once the catalog has been
    quiet for ``min``, and no later than ``max`` after the first change of the burst.
    """

    name = "nginx"
    log = txaio.make_logger()

    def __init__(self, reactor: Any, catalog: CatalogFeed, applier: NginxApplier, *,
                 services: Sequence[str] = (), passing_only: bool = False,
                 wait_min: float = 0.0, wait_max: float = 0.0) -> None:
        self.reactor = reactor
        self.catalog = catalog
        self.applier = applier
        self.services = tuple(services)
        self.passing_only = passing_only
        self.wait_min = wait_min
        self.wait_max = max(wait_max, wait_min) if wait_max else 4 * wait_min
        self.renders = 0  # views rendered (and handed to the applier)
        self._latest: CatalogView | None = None
        self._running: Deferred | None = None
        self._min_timer: Any = None
        self._max_timer: Any = None
        self._spacing_timer: Any = None
        self._unsubscribe: Callable[[], None] | None = None
        self._last_skipped: tuple[str, ...] = ()

    def startService(self) -> None:
        super().startService()
        self._unsubscribe = self.catalog.subscribe(self.changed)
        self.changed(self.catalog.view())

    def stopService(self) -> Deferred:
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._cancel_timers()
        self._latest = None
        if self._running is None:
            return succeed(None)
        idle: Deferred = Deferred()
        self._running.addBoth(lambda result: idle.callback(None) or result)
        return idle

    def changed(self, view: CatalogView) -> None:
        """Note a new catalog view; it is applied when quiet enough and nothing else runs."""
        if not self.running:
            return
        self._latest = view
        if self.wait_min <= 0:
            self._kick()
            return
        if self._min_timer is not None and self._min_timer.active():
            self._min_timer.reset(self.wait_min)
        else:
            self._min_timer = self.reactor.callLater(self.wait_min, self._quiet)
        if self._max_timer is None or not self._max_timer.active():
            self._max_timer = self.reactor.callLater(self.wait_max, self._quiet)

    def _cancel_timers(self) -> None:
        for timer in (self._min_timer, self._max_timer, self._spacing_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._min_timer = self._max_timer = self._spacing_timer = None

    def _quiet(self) -> None:
        for timer in (self._min_timer, self._max_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._min_timer = self._max_timer = None
        self._kick()

    def _waiting(self) -> bool:
        return self._min_timer is not None and self._min_timer.active()

    def _kick(self) -> None:
        if self._running is not None or self._latest is None or self._waiting():
            return
        if self._spacing_timer is not None and self._spacing_timer.active():
            return
        delay = self.applier.ready_in()
        if delay > 0:  # too soon after the last reload; the latest view goes when it is over
            self._spacing_timer = self.reactor.callLater(delay, self._kick)
            return
        view, self._latest = self._latest, None
        # A render that raises is logged like a failed apply; the next change tries again.
        d = maybeDeferred(self._render_and_apply, view)
        d.addErrback(lambda f: self.log.failure("nginx apply failed", failure=f))
        d.addBoth(self._done)
        if self._running is None and not d.called:
            self._running = d

    def _render_and_apply(self, view: Any) -> Deferred:
        rendered = render_upstreams(view, self.services, self.passing_only)
        self.renders += 1
        if rendered.skipped != self._last_skipped:
            self._last_skipped = rendered.skipped
            for reason in rendered.skipped:
                self.log.warn("nginx upstreams: left out {reason}", reason=reason)
        return self.applier.apply(rendered.text)

    def _done(self, _: Any) -> None:
        self._running = None
        if self.running:
            self.reactor.callLater(0, self._kick)


def make_service(reactor: Any, config: Mapping[str, Any], catalog: CatalogFeed) -> NginxService:
    """Build the service from validated settings (see ``schemas/plugin-nginx.json``)."""
    wait = config.get("wait", {})
    applier = NginxApplier(reactor, config["upstreams_file"],
                           nginx_binary=config.get("nginx_binary", "nginx"),
                           nginx_args=config.get("nginx_args", ()),
                           reload_command=config.get("reload_command"),
                           timeout=parse_duration(config.get("timeout", "30s")),
                           reload_spacing=parse_duration(config.get("reload_spacing", "250ms")))
    return NginxService(reactor, catalog, applier, services=config.get("services", ()),
                        passing_only=config.get("passing_only", False),
                        wait_min=parse_duration(wait.get("min", "0s")),
                        wait_max=parse_duration(wait.get("max", "0s")))


@hookimpl
def waypost_config_schema() -> Mapping[str, Any]:
    """The settings under ``plugins.nginx``: ``schemas/plugin-nginx.json``."""
    return json.loads(SCHEMA_PATH.read_text())


@hookimpl
def waypost_frontends(reactor: Any, config: Mapping[str, Any], catalog: CatalogFeed) -> list:
    """One `NginxService` when ``plugins.nginx`` is configured, else nothing."""
    if not config:
        return []
    return [make_service(reactor, config, catalog)]
