"""The nginx plugin: keeps an nginx upstreams file in step with the catalog and reloads nginx.

Configured under ``plugins.nginx`` in the agent config (``schemas/plugin-nginx.json``, and
docs/nginx.md for the nginx side). Without settings it contributes nothing. With them it adds
one service that subscribes to catalog changes, renders the upstream blocks (`render.py`) and
hands the text to an `NginxApplier` (`apply.py`), one apply at a time; changes that arrive
meanwhile collapse into the latest view, applied next.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import txaio
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed

from gateway.hookspecs import CatalogFeed, CatalogView, Quiescence, hookimpl, parse_duration
from plugins.nginx.apply import NginxApplier
from plugins.nginx.render import render_upstreams

txaio.use_twisted()

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "plugin-nginx.json"


class NginxService(Service):
    """Follows the catalog and applies each new render, serialized, latest view first.

    With a ``wait`` of ``min``/``max`` seconds, a change is applied once the catalog has been
    quiet for ``min``, and no later than ``max`` after the first change of the burst (the
    shared `Quiescence` timer; ``max`` defaults to four times ``min``).
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
        self.quiescence = Quiescence(reactor, wait_min, wait_max, self._kick)
        self.renders = 0  # views rendered (and handed to the applier)
        self._latest: CatalogView | None = None
        self._running: Deferred | None = None
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
        self.quiescence.poke()  # calls _kick at once without a wait

    def _cancel_timers(self) -> None:
        self.quiescence.cancel()
        if self._spacing_timer is not None and self._spacing_timer.active():
            self._spacing_timer.cancel()
        self._spacing_timer = None

    def _kick(self) -> None:
        if self._running is not None or self._latest is None or self.quiescence.pending:
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
