"""What is registered at this agent: its services and checks, each with its sync flags.

The local state is the truth for this node. A change marks the entry out of sync (or deleted)
and triggers a partial sync (`agent.local.sync`), which writes it to the catalog through a
`CatalogClient`; `agent.local.antientropy` runs the full syncs and retries failures. Checks are
run by the runners of `agent.checks`, which report back through `update_check`: a status
change is written at once, an output-only change at most once per `check_update_interval`
(Consul's damping of chatty checks). TTL checks turn critical when their TTL lapses without
an update, and a service whose check stays critical longer than its
`deregister_critical_service_after` is removed.

With a `LocalPersistence`, API registrations and TTL updates are written to disk before they
are applied (a request the disk refuses fails whole) and `restore` takes them back at start.
No store is needed: a client agent builds the same local state over a remote catalog.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred, succeed

from agent import structs
from agent.checks.base import cap_output
from agent.definitions import CheckSpec, ServiceDefinition
from agent.errors import InvalidRequest, NotFound, WaypostError
from agent.local.catalog import as_catalog_client
from agent.local.disk import LocalDisk
from agent.local.entries import (API, CONFIG, DEFAULT_MAINT_REASON, NODE_MAINT_ID,
                                 SCRIPTS_DISABLED, SERVICE_MAINT_PREFIX, LocalCheck, SyncFlags,
                                 with_default_tagged_addresses)
from agent.local.persist import CheckState, LocalPersistence, Saved
from agent.local.restore import restore_saved
from agent.local.runtime import CheckRuntime
from agent.local.sync import CatalogSync
from agent.structs import Check, Node, Service

txaio.use_twisted()

__all__ = ["API", "CONFIG", "NODE_MAINT_ID", "SERVICE_MAINT_PREFIX", "CHECK_UPDATE_INTERVAL",
           "LocalCheck", "LocalState", "with_default_tagged_addresses"]

CHECK_UPDATE_INTERVAL = 300.0  # Consul's check_update_interval default (5 m)


class LocalState:
    log = txaio.make_logger()

    def __init__(self, reactor, node: Callable[[], Node], catalog: Any, *,
                 runner_factory: Callable[[CheckSpec, Any], Any] | None = None,
                 enable_script_checks: bool = False,
                 enable_local_script_checks: bool = False,
                 persistence: LocalPersistence | None = None,
                 check_update_interval: float = CHECK_UPDATE_INTERVAL,
                 keep_services: frozenset[str] = frozenset(),
                 keep_checks: frozenset[str] = frozenset(),
                 rng: random.Random | None = None) -> None:
        """`catalog` is a `CatalogClient` (a bare write callable is the transitional form).
        `keep_*` name rows of this node the agent owns outside its local state (a server's
        consul service, serfHealth): full syncs leave them in the catalog."""
        self._reactor = reactor
        self._node = node
        self.disk = LocalDisk(persistence)
        # TTL check states read back at start, consumed as their checks are installed.
        self._saved_states: dict[str, CheckState] = {}
        self.enable_script_checks = enable_script_checks
        self.enable_local_script_checks = enable_local_script_checks
        self.services: dict[str, Service] = {}
        self.service_sources: dict[str, str] = {}
        self.service_tokens: dict[str, str] = {}
        self.checks: dict[str, LocalCheck] = {}
        # Service ID -> the IDs of its checks, so that a registration does not scan them all.
        self._service_checks: dict[str, dict[str, None]] = {}
        self.service_flags = SyncFlags()
        self.check_flags = SyncFlags()
        self.node_in_sync = False
        self.running = False
        self._watchers: dict[str, dict[object, Callable[[], None]]] = {}
        self.sync = CatalogSync(self, as_catalog_client(catalog), node,
                                keep_services=keep_services, keep_checks=keep_checks)
        self.runtime = CheckRuntime(
            reactor, notifier=self, runner_factory=runner_factory,
            check_update_interval=check_update_interval, rng=rng or random.Random(),
            current=lambda entry: self.checks.get(entry.check.check_id) is entry,
            changed=self._check_changed, background=self.background)

    # --- services ---

    def add_service(self, definition: ServiceDefinition, source: str = API,
                    replace_existing_checks: bool = False, *, persist: bool = True,
                    restoring: bool = False) -> Deferred:
        """Register (or replace) a service and its checks; fires with the index of the sync
        that carried it to the catalog (0 when it could not, it is retried)."""
        for spec in definition.checks:
            self._allow_check(spec, source)
        service = with_default_tagged_addresses(replace(definition.service,
                                                        node=self._node().name))
        old = self.services.get(service.id)
        if persist:
            self.disk.save_service(definition, source, new=old is None)
        self.services[service.id] = service
        self.service_sources[service.id] = source
        self.service_tokens[service.id] = definition.token
        if old != service or not self.service_flags.in_sync(service.id):
            self.service_flags.changed(service.id)
        named = {spec.check_id for spec in definition.checks}
        for spec in definition.checks:
            self._install_check(spec, service, source, restoring)
        # Checks the new definition does not name (maintenance among them) stay with the
        # service unless the caller asks to replace them; they carry its new name and tags.
        for check_id in list(self._service_checks.get(service.id, ())):
            local = self.checks[check_id]
            if check_id in named:
                continue
            if replace_existing_checks and old is not None and local.spec.type != "maintenance":
                self._remove_check_entry(check_id)
                self.disk.forget(lambda p, cid=check_id: p.remove_check(cid))
            else:
                self._refresh_service_fields(local, service)
        self._notify_service(service.id)
        return self.sync.trigger()

    def remove_service(self, service_id: str) -> Deferred:
        if service_id not in self.services:
            return succeed(0)
        check_ids = list(self._service_checks.get(service_id, ()))
        self.disk.remove_service(service_id, check_ids)
        del self.services[service_id]
        self.service_sources.pop(service_id, None)
        self.service_tokens.pop(service_id, None)
        self.service_flags.removed(service_id)
        for check_id in check_ids:
            self._remove_check_entry(check_id)
        self._notify_service(service_id)
        return self.sync.trigger()

    def adopt_tags(self, service_id: str, tags: tuple[str, ...]) -> Service:
        """Take the catalog's tags for a service that allows it (enable_tag_override)."""
        service = replace(self.services[service_id], tags=tags)
        self.services[service_id] = service
        self._notify_service(service_id)
        return service

    def checks_of(self, service_id: str) -> list[Check]:
        """The checks of a local service, in check ID order."""
        return [self.checks[cid].check for cid in sorted(self._service_checks.get(service_id, ()))]

    def watch_service(self, service_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` once, at the next change of the service (or its removal); returns
        the call that cancels it. For reads that block on the service's content hash."""
        token = object()
        self._watchers.setdefault(service_id, {})[token] = callback

        def cancel() -> None:
            found = self._watchers.get(service_id)
            if found is not None:
                found.pop(token, None)
                if not found:
                    del self._watchers[service_id]
        return cancel

    def _notify_service(self, service_id: str) -> None:
        for callback in list(self._watchers.pop(service_id, {}).values()):
            try:
                callback()
            except Exception:  # noqa: BLE001 - one reader's failure must not stop the change
                self.log.failure("a local state watcher failed")

    # --- checks ---

    def add_check(self, spec: CheckSpec, source: str = API, *, persist: bool = True,
                  restoring: bool = False) -> Deferred:
        self._allow_check(spec, source)
        service = None
        if spec.service_id:
            service = self.services.get(spec.service_id)
            if service is None:
                raise InvalidRequest(f'ServiceID "{spec.service_id}" does not exist')
        if persist:
            self.disk.save_check(spec, source)
        self._install_check(spec, service, source, restoring)
        return self.sync.trigger()

    def remove_check(self, check_id: str) -> Deferred:
        if check_id not in self.checks:
            return succeed(0)
        self.disk.remove_check(check_id)
        self._remove_check_entry(check_id)
        return self.sync.trigger()

    def update_ttl(self, check_id: str, status: str, output: str) -> Deferred:
        local = self.checks.get(check_id)
        if local is None or local.spec.ttl <= 0:
            raise WaypostError(f'CheckID "{check_id}" does not have associated TTL')
        if status not in (structs.PASSING, structs.WARNING, structs.CRITICAL):
            raise InvalidRequest(f'Unknown check status: "{status}"')
        output = cap_output(output)
        if self.disk.persistence is not None:
            # Valid until the TTL runs out, as the running check is; kept for every TTL check
            # (a config one's definition comes back from the config, its state from here).
            self.disk.save_ttl_state(CheckState(
                check_id=check_id, status=status, output=output,
                expires=self._reactor.seconds() + local.spec.ttl))
        self.runtime.arm_ttl(local)
        return self.runtime.set_status(local, status, output)

    def update_check(self, check_id: str, status: str, output: str) -> None:
        """The runners' notifier: a check run finished with this result."""
        local = self.checks.get(check_id)
        if local is not None:
            # Runners bound their output already, in Consul's per-type formats.
            self.background(self.runtime.set_status(local, status, output))

    # --- maintenance ---

    def set_node_maintenance(self, enable: bool, reason: str) -> Deferred:
        if not enable:
            return self.remove_check(NODE_MAINT_ID)
        if NODE_MAINT_ID in self.checks:
            return succeed(0)
        spec = CheckSpec(check_id=NODE_MAINT_ID, name="Node Maintenance Mode",
                         notes=reason or DEFAULT_MAINT_REASON.format(what="node"),
                         status=structs.CRITICAL, type="maintenance")
        return self.add_check(spec, source=API)

    def set_service_maintenance(self, service_id: str, enable: bool, reason: str) -> Deferred:
        if service_id not in self.services:
            raise NotFound(f'No service registered with ID "{service_id}"')
        check_id = SERVICE_MAINT_PREFIX + service_id
        if not enable:
            return self.remove_check(check_id)
        if check_id in self.checks:
            return succeed(0)
        spec = CheckSpec(check_id=check_id, name="Service Maintenance Mode",
                         notes=reason or DEFAULT_MAINT_REASON.format(what="service"),
                         service_id=service_id, status=structs.CRITICAL, type="maintenance")
        return self.add_check(spec, source=API)

    def maintenance(self) -> dict[str, str]:
        """What is in maintenance now: "" for the node, service IDs otherwise, with reasons."""
        found = {}
        for check_id, local in sorted(self.checks.items()):
            if check_id == NODE_MAINT_ID:
                found[""] = local.check.notes
            elif check_id.startswith(SERVICE_MAINT_PREFIX):
                found[check_id[len(SERVICE_MAINT_PREFIX):]] = local.check.notes
        return found

    # --- lifecycle ---

    def start(self) -> None:
        self.running = True
        for local in self.checks.values():
            self.runtime.start_runner(local)

    def stop(self) -> None:
        self.running = False
        for local in self.checks.values():
            self.runtime.stop(local)

    def reap_critical(self) -> list[str]:
        """Deregister services whose check has been critical past its limit; returns their IDs."""
        now = self._reactor.seconds()
        doomed = []
        for local in list(self.checks.values()):
            limit = local.spec.definition.deregister_critical_service_after
            service_id = local.check.service_id
            if (limit > 0 and service_id and local.critical_since is not None
                    and now - local.critical_since >= limit and service_id in self.services):
                doomed.append(service_id)
        refused = []
        for service_id in dict.fromkeys(doomed):
            self.log.info("deregistering service {sid}: its check was critical for too long",
                          sid=service_id)
            try:
                self.background(self.remove_service(service_id))
            except WaypostError as exc:  # the disk refused: the service stays until next time
                refused.append(str(exc))
        if refused:
            # Raised after trying every service, so that the reaper's loop logs and counts it.
            raise WaypostError("; ".join(refused))
        return list(dict.fromkeys(doomed))

    # --- persistence ---

    def expect_saved_states(self, states: dict[str, CheckState]) -> None:
        """TTL states read back at start: a TTL check installed before `restore` takes its own."""
        self._saved_states = dict(states)

    def take_saved_states(self) -> dict[str, CheckState]:
        """The saved TTL states no check has taken (restoring is over once asked)."""
        states, self._saved_states = self._saved_states, {}
        return states

    def restore(self, saved: Saved) -> None:
        """Take back the API registrations a previous run persisted (`agent.local.restore`);
        call after the config's registrations."""
        restore_saved(self, saved)

    def background(self, d: Deferred) -> Deferred:
        """A write nobody waits on: its failure is logged, never left unhandled."""
        d.addErrback(lambda f: self.log.failure("a local state write failed", failure=f))
        return d

    # --- internals ---

    def _allow_check(self, spec: CheckSpec, source: str) -> None:
        if spec.type in ("script", "docker"):
            allowed = self.enable_script_checks or (source == CONFIG and self.enable_local_script_checks)
            if not allowed:
                raise InvalidRequest(SCRIPTS_DISABLED)

    def _install_check(self, spec: CheckSpec, service: Service | None, source: str,
                       restoring: bool = False) -> LocalCheck:
        old = self.checks.get(spec.check_id)
        if old is not None:
            self._forget_check(spec.check_id)
        # A damped output whose write-back was pending is written now with the rest.
        pending_output = old is not None and old.deferred is not None
        if old is not None:
            self.runtime.stop(old)
        # A restored check starts critical as in Consul (an unhealthy instance must not join
        # the pool on its old word), unless it is a TTL check whose saved state has not lapsed.
        status, output = (structs.CRITICAL if restoring else spec.status), ""
        ttl_delay = spec.ttl
        saved = self._saved_states.pop(spec.check_id, None) if spec.ttl > 0 else None
        if saved is not None:
            remaining = saved.expires - self._reactor.seconds()
            if remaining > 0:
                status, output, ttl_delay = saved.status, saved.output, min(spec.ttl, remaining)
            else:
                status = structs.CRITICAL
        check = Check(node=self._node().name, check_id=spec.check_id, name=spec.name,
                      status=status, notes=spec.notes, output=output,
                      service_id=service.id if service else "",
                      service_name=service.name if service else "",
                      service_tags=service.tags if service else (),
                      type=spec.type if spec.type != "maintenance" else "",
                      definition=spec.definition)
        same_spec = old is not None and old.spec == spec
        if same_spec and old.check.service_id == check.service_id:
            # An unchanged check keeps its state (a reload must not reset TTLs to critical).
            check = replace(check, status=old.check.status, output=old.check.output)
        local = LocalCheck(check=check, spec=spec, source=source,
                           critical_since=self._reactor.seconds() if check.status == structs.CRITICAL else None)
        if same_spec:
            local.critical_since = old.critical_since
        self.checks[spec.check_id] = local
        if check.service_id:
            self._service_checks.setdefault(check.service_id, {})[spec.check_id] = None
        if (old is None or old.check != check or pending_output
                or not self.check_flags.in_sync(spec.check_id)):
            self.check_flags.changed(spec.check_id)
        if spec.ttl > 0:
            self.runtime.arm_ttl(local, ttl_delay)
        if self.running:
            self.runtime.start_runner(local)
        return local

    def _refresh_service_fields(self, local: LocalCheck, service: Service) -> None:
        check = replace(local.check, service_name=service.name, service_tags=service.tags)
        if check != local.check:
            local.check = check
            self.check_flags.changed(check.check_id)

    def _remove_check_entry(self, check_id: str) -> None:
        local = self.checks[check_id]
        self._drop_check(check_id)
        self.check_flags.removed(check_id, local.check.service_id)

    def _drop_check(self, check_id: str) -> None:
        self.runtime.stop(self._forget_check(check_id))

    def _forget_check(self, check_id: str) -> LocalCheck:
        local = self.checks.pop(check_id)
        found = self._service_checks.get(local.check.service_id)
        if found is not None:
            found.pop(check_id, None)
            if not found:
                del self._service_checks[local.check.service_id]
        return local

    def _check_changed(self, local: LocalCheck) -> Deferred:
        self.check_flags.changed(local.check.check_id)
        return self.sync.trigger()
