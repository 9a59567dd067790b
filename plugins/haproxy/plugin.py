"""The HAProxy plugin: keeps HAProxy backends in step with the catalog (docs/haproxy.md).

Each catalog change (coalesced by the feed) is planned per backend (`plan.py`) and applied
through the runtime API (`runtime.py`): addresses, weights and ready/drain/maint states change
in place, with no reload and no dropped connection. Only when a backend needs more slots than
it has, or is missing, does `reload.py` render a bigger config and reload HAProxy seamlessly.
A dead or missing socket is logged and retried on the next change (and after
``retry_interval``); HAProxy is left as it was and the agent carries on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import txaio
from twisted.application.service import Service
from twisted.internet.defer import DeferredLock, inlineCallbacks

from gateway.hookspecs import CatalogView, hookimpl
from plugins.haproxy.plan import Backend, Slot, plan_backend, slot_names, targets_for
from plugins.haproxy.reload import Reloader, ReloadError, SlotRequest, grow
from plugins.haproxy.runtime import Runtime, RuntimeAPI, RuntimeAPIError

txaio.use_twisted()

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "plugin-haproxy.json"


@hookimpl
def waypost_config_schema() -> Mapping[str, Any]:
    """The settings under ``plugins.haproxy`` (schemas/plugin-haproxy.json)."""
    return json.loads(SCHEMA_PATH.read_text())


@hookimpl
def waypost_frontends(reactor, config: Mapping[str, Any], catalog) -> list:
    """One `HAProxyService` when configured; nothing at all without settings."""
    if not config:
        return []
    return [HAProxyService(reactor, config, catalog)]


class HAProxyService(Service):
    """Follows the catalog and drives one HAProxy through its runtime API."""

    name = "haproxy"
    log = txaio.make_logger()

    def __init__(self, reactor, config: Mapping[str, Any], catalog) -> None:
        self.reactor = reactor
        self.catalog = catalog
        self.backends = [Backend.from_config(b) for b in config["backends"]]
        api = RuntimeAPI(config["socket"], timeout=float(config.get("timeout", 2)))
        self.runtime = Runtime(reactor, api, config.get("master_socket"))
        self.reloader: Reloader | None = None
        if config.get("config_path"):
            self.reloader = Reloader(reactor, self.runtime, config["config_path"],
                                     config.get("config_template"),
                                     config.get("haproxy_binary", "haproxy"),
                                     config.get("pidfile"),
                                     float(config.get("reload_timeout", 15)))
        self.retry_interval = float(config.get("retry_interval", 10))
        self._lock = DeferredLock()
        self._latest: CatalogView | None = None
        self._slots: dict[str, list[Slot]] | None = None  # None: read HAProxy's first
        self._owners: dict[str, Mapping[str, str]] = {}
        self._unsubscribe = None
        self._retry = None
        self._failing = False
        self._last_error: str | None = None
        self._failed_reload: frozenset | None = None
        self._skipped: set[str] = set()
        self._short: dict[str, int] = {}

    # --- lifecycle -----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.runtime.start()
        self._unsubscribe = self.catalog.subscribe(self._offer)
        self._offer(self.catalog.view())

    @inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._cancel_retry()
        yield self._lock.acquire()  # let a sync in progress finish first
        self._lock.release()
        self.runtime.stop()

    # --- one sync at a time, always of the latest view -------------------------------------

    def _offer(self, view: CatalogView):
        """Queue `view`; the returned Deferred fires (never fails) once it is applied."""
        self._latest = view
        return self._lock.run(self._sync_latest)

    @inlineCallbacks
    def _sync_latest(self):
        view, self._latest = self._latest, None
        if view is None or not self.running:
            return
        self._cancel_retry()
        try:
            complete = yield self._sync(view)
        except (RuntimeAPIError, ReloadError) as e:
            self._failed(str(e))
        except Exception:
            self.log.failure("haproxy: unexpected error while applying the catalog")
            self._failed("unexpected error (logged above)", logged=True)
        else:
            if complete:
                if self._failing:
                    self.log.warn("haproxy: back in sync with the catalog at index {index}",
                                  index=view.index)
                self._failing = False
                self._last_error = None

    def _failed(self, reason: str, logged: bool = False) -> None:
        self._slots = None  # what HAProxy runs is uncertain now: read it again next time
        self._failing = True
        if not logged and reason != self._last_error:
            self.log.error("haproxy: {reason}; HAProxy left as it was, will retry on the next "
                           "catalog change{timer}", reason=reason,
                           timer=(f" and every {self.retry_interval:g}s"
                                  if self.retry_interval > 0 else ""))
        self._last_error = reason  # the same error again is not logged again
        if self.retry_interval > 0 and self.running:
            self._retry = self.reactor.callLater(
                self.retry_interval, lambda: self._offer(self.catalog.view()))

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    # --- the work --------------------------------------------------------------------------

    @inlineCallbacks
    def _sync(self, view: CatalogView):
        """Bring HAProxy in line with `view`; False if some instances found no slot."""
        if self._slots is None:
            self._slots = yield self.runtime.servers_state()
        requests = yield self._apply(view)
        if not requests:
            return True
        if self.reloader is None or not self.reloader.can_reload():
            self._warn_short(requests)
            return False
        for backend in self.backends:  # a render from a template must not shrink the others
            have = len(slot_names(backend.slot_prefix, self._slots.get(backend.name, [])))
            if backend.name not in requests and have:
                requests[backend.name] = SlotRequest(backend.name, backend.slot_prefix, have)
        key = frozenset(requests.items())
        if key == self._failed_reload:
            return False  # the same reload failed before; the error was logged then
        try:
            yield self.reloader.reload(requests)
        except ReloadError:
            self._failed_reload = key
            raise
        self._failed_reload = None
        self._slots = yield self.runtime.servers_state()
        left = yield self._apply(view)
        if left:
            self._warn_short(left)
        return not left

    @inlineCallbacks
    def _apply(self, view: CatalogView):
        """Plan and apply every backend; the slot requests of those that ran short."""
        requests: dict[str, SlotRequest] = {}
        for backend in self.backends:
            servers = self._slots.get(backend.name, [])
            slots = slot_names(backend.slot_prefix, servers)
            targets, skipped = targets_for(view, backend)
            self._note_skipped(backend, skipped)
            plan = plan_backend(backend.name, slots, targets, self._owners.get(backend.name))
            if plan.commands:
                yield self.runtime.run(plan.commands)
            others = [s for s in servers if s not in slots]
            self._slots[backend.name] = others + list(plan.slots)
            self._owners[backend.name] = plan.owners
            if plan.missing or not slots:
                count = grow(plan.needed, len(slots))
                requests[backend.name] = SlotRequest(backend.name, backend.slot_prefix, count)
        return requests

    def _note_skipped(self, backend: Backend, skipped: list[str]) -> None:
        new = set(skipped) - self._skipped
        if new:
            self.log.warn("haproxy: backend {backend}: instances {keys} have a host name, not "
                          "an IP address, and are left out", backend=backend.name,
                          keys=", ".join(sorted(new)))
        self._skipped |= new

    def _warn_short(self, requests: Mapping[str, SlotRequest]) -> None:
        for name, req in requests.items():
            if self._short.get(name) == req.count:
                continue
            self._short[name] = req.count
            self.log.warn("haproxy: backend {backend} needs {count} slots and HAProxy has fewer; "
                          "set config_path and master_socket (or pidfile) to let the plugin add "
                          "them", backend=name, count=req.count)
