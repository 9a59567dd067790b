"""What is registered at this agent: its services and checks, and pushing them to the catalog.

The local state is the truth for this node. Each change is written to the catalog at once (a
partial sync); `agent.local.antientropy` repairs whatever drifts later. Checks are run by the
runners of `agent.checks`, which report back through `update_check`; TTL checks turn critical
when their TTL lapses without an update, and a service whose check stays critical longer than
its `deregister_critical_service_after` is removed.

With a `LocalPersistence`, API registrations and TTL updates are written to disk before they
are applied (a request the disk refuses fails whole) and `restore` takes them back at start.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred, succeed

from agent import structs
from agent.checks.base import cap_output
from agent.definitions import CheckSpec, ServiceDefinition
from agent.errors import InvalidRequest, NotFound, WaypostError
from agent.fsm.commands import Deregister, Register
from agent.local.persist import CheckState, LocalPersistence, Saved
from agent.structs import Check, Node, Service, ServiceAddress

txaio.use_twisted()

API, CONFIG = "api", "config"  # where a registration came from; reload replaces CONFIG ones
NODE_MAINT_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
DEFAULT_MAINT_REASON = ("Maintenance mode is enabled for this {what}, but no reason was "
                        "provided. This is a default message.")
SCRIPTS_DISABLED = ("Scripts are disabled on this agent; to enable, configure "
                    "'enable_script_checks' to true")


def with_default_tagged_addresses(service: Service) -> Service:
    """Consul's agent tags an IP service address as lan/wan of its family, unless set."""
    try:
        family = ipaddress.ip_address(service.address).version
    except ValueError:
        return service
    suffix = "ipv4" if family == 4 else "ipv6"
    tagged = dict(service.tagged_addresses)
    for scope in ("lan", "wan"):
        tagged.setdefault(f"{scope}_{suffix}", ServiceAddress(service.address, service.port))
    return replace(service, tagged_addresses=tagged)


@dataclass
class LocalCheck:
    check: Check
    spec: CheckSpec
    source: str = API
    timer: Any = None  # IDelayedCall of the TTL expiry
    runner: Any = None  # the agent.checks runner, if the check is run here
    critical_since: float | None = None


class LocalState:
    log = txaio.make_logger()

    def __init__(self, reactor, node: Callable[[], Node], write: Callable[[Any], Deferred], *,
                 runner_factory: Callable[[CheckSpec, Any], Any] | None = None,
                 enable_script_checks: bool = False,
                 enable_local_script_checks: bool = False,
                 persistence: LocalPersistence | None = None) -> None:
        self._reactor = reactor
        self._node = node
        self._write = write
        self._runner_factory = runner_factory
        self._persistence = persistence
        # TTL check states read back at start, consumed as their checks are installed.
        self._saved_states: dict[str, CheckState] = {}
        self.enable_script_checks = enable_script_checks
        self.enable_local_script_checks = enable_local_script_checks
        self.services: dict[str, Service] = {}
        self.service_sources: dict[str, str] = {}
        self.checks: dict[str, LocalCheck] = {}
        self.running = False

    # --- services ---

    def add_service(self, definition: ServiceDefinition, source: str = API,
                    replace_existing_checks: bool = False) -> Deferred:
        return self._add_service(definition, source, replace_existing_checks, persist=True)

    def _add_service(self, definition: ServiceDefinition, source: str,
                     replace_existing_checks: bool, *, persist: bool,
                     restoring: bool = False) -> Deferred:
        for spec in definition.checks:
            self._allow_check(spec, source)
        node = self._node()
        service = with_default_tagged_addresses(replace(definition.service, node=node.name))
        if persist:
            self._persist_service(definition, source)
        old = self.services.get(service.id)
        self.services[service.id] = service
        self.service_sources[service.id] = source
        checks = [self._install_check(spec, service, source, restoring)
                  for spec in definition.checks]
        # Checks the new definition does not name (maintenance among them) stay with the
        # service unless the caller asks to replace them; they carry its new name and tags.
        named = {c.check_id for c in checks}
        for local in list(self.checks.values()):
            if (local.check.service_id == service.id and local.check.check_id not in named
                    and not (replace_existing_checks and local.spec.type != "maintenance")):
                checks.append(self._refresh_service_fields(local, service))
        if old is not None and replace_existing_checks:
            keep = {c.check_id for c in checks}
            for check_id in [cid for cid, lc in self.checks.items()
                             if lc.check.service_id == service.id and cid not in keep]:
                self._drop_check(check_id)
                self._forget_files(lambda p, cid=check_id: p.remove_check(cid))
                self._background(self._write(Deregister(node=node.name, check_id=check_id)))
        return self._write(Register(node=node, service=service, checks=tuple(checks),
                                    skip_node_update=True))

    def remove_service(self, service_id: str) -> Deferred:
        if service_id not in self.services:
            return succeed(False)
        check_ids = [cid for cid, lc in self.checks.items() if lc.check.service_id == service_id]
        if self._persistence is not None:
            # Off the disk first: a deregistration the disk refuses would come back at restart.
            def forget(p: LocalPersistence) -> None:
                for check_id in check_ids:
                    p.remove_check(check_id)
                p.remove_service(service_id)
            self._disk(f'deregistering service "{service_id}"', forget)
        del self.services[service_id]
        self.service_sources.pop(service_id, None)
        for check_id in check_ids:
            self._drop_check(check_id)
        return self._write(Deregister(node=self._node().name, service_id=service_id))

    # --- checks ---

    def add_check(self, spec: CheckSpec, source: str = API) -> Deferred:
        return self._add_check(spec, source, persist=True)

    def _add_check(self, spec: CheckSpec, source: str, *, persist: bool,
                   restoring: bool = False) -> Deferred:
        self._allow_check(spec, source)
        service = None
        if spec.service_id:
            service = self.services.get(spec.service_id)
            if service is None:
                raise InvalidRequest(f'ServiceID "{spec.service_id}" does not exist')
        if persist and self._persistence is not None:
            if source == API:
                self._disk(f'registering check "{spec.check_id}"', lambda p: p.save_check(spec))
            else:
                self._forget_files(lambda p: p.remove_check(spec.check_id, with_state=False))
        check = self._install_check(spec, service, source, restoring)
        return self._write(Register(node=self._node(), checks=(check,), skip_node_update=True))

    def remove_check(self, check_id: str) -> Deferred:
        if check_id not in self.checks:
            return succeed(False)
        if self._persistence is not None:
            self._disk(f'deregistering check "{check_id}"', lambda p: p.remove_check(check_id))
        self._drop_check(check_id)
        return self._write(Deregister(node=self._node().name, check_id=check_id))

    def update_ttl(self, check_id: str, status: str, output: str) -> Deferred:
        local = self.checks.get(check_id)
        if local is None or local.spec.ttl <= 0:
            raise WaypostError(f'CheckID "{check_id}" does not have associated TTL')
        if status not in (structs.PASSING, structs.WARNING, structs.CRITICAL):
            raise InvalidRequest(f'Unknown check status: "{status}"')
        output = cap_output(output)
        if self._persistence is not None:
            # Valid until the TTL runs out, as the running check is; kept for every TTL check
            # (a config one's definition comes back from the config, its state from here).
            state = CheckState(check_id=check_id, status=status, output=output,
                               expires=self._reactor.seconds() + local.spec.ttl)
            self._disk(f'updating check "{check_id}"', lambda p: p.save_check_state(state))
        self._arm_ttl(local)
        return self._set_status(local, status, output)

    def update_check(self, check_id: str, status: str, output: str) -> None:
        """The runners' notifier: a check run finished with this result."""
        local = self.checks.get(check_id)
        if local is not None:
            # Runners bound their output already, in Consul's per-type formats.
            self._background(self._set_status(local, status, output))

    # --- maintenance ---

    def set_node_maintenance(self, enable: bool, reason: str) -> Deferred:
        if not enable:
            return self.remove_check(NODE_MAINT_ID)
        if NODE_MAINT_ID in self.checks:
            return succeed(True)
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
            return succeed(True)
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
            self._start_runner(local)

    def stop(self) -> None:
        self.running = False
        for local in self.checks.values():
            self._stop_check(local)

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
                self._background(self.remove_service(service_id))
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

    def restore(self, saved: Saved) -> None:
        """Take back the API registrations a previous run persisted.

        Call after the config's registrations: a service or check the config defines wins,
        and its persisted file is removed, as Consul does. Anything that cannot be restored
        is logged and skipped; the agent starts regardless.
        """
        services = {service.id for service, _ in saved.services}
        by_service: dict[str, list[CheckSpec]] = {}
        standalone = []
        for spec in saved.checks:
            if spec.check_id in self.checks:
                self.log.debug("check {cid} is defined in the config; not restoring it from file",
                               cid=spec.check_id)
                self._forget_files(lambda p, cid=spec.check_id: p.remove_check(cid, False))
            elif spec.service_id and spec.service_id in services:
                by_service.setdefault(spec.service_id, []).append(spec)
            else:
                standalone.append(spec)
        for service, token in saved.services:
            if service.id in self.services:
                self.log.debug("service {sid} is defined in the config; not restoring it from "
                               "file", sid=service.id)
                self._forget_files(lambda p, sid=service.id: p.remove_service(sid))
                standalone.extend(by_service.pop(service.id, ()))
                continue
            definition = ServiceDefinition(service=service, token=token,
                                           checks=tuple(by_service.pop(service.id, ())))
            self._restore_one(f'service "{service.id}"', lambda d=definition: self._add_service(
                d, API, False, persist=False, restoring=True))
        for spec in standalone:
            if spec.service_id and spec.service_id not in self.services:
                self.log.warn('Not restoring check "{cid}": its service "{sid}" is gone',
                              cid=spec.check_id, sid=spec.service_id)
                self._forget_files(lambda p, cid=spec.check_id: p.remove_check(cid))
                continue
            self._restore_one(f'check "{spec.check_id}"', lambda s=spec: self._add_check(
                s, API, persist=False, restoring=True))
        for check_id in self._saved_states:
            if check_id not in self.checks:
                self._forget_files(lambda p, cid=check_id: p.remove_check_state(cid))
        self._saved_states = {}

    def _restore_one(self, what: str, add: Callable[[], Deferred]) -> None:
        try:
            self._background(add())
        except WaypostError as exc:
            self.log.error("Failed restoring {what} from data_dir: {error}", what=what,
                           error=exc)

    def _persist_service(self, definition: ServiceDefinition, source: str) -> None:
        if self._persistence is None:
            return
        service = definition.service
        if source != API:
            # The config owns it now; a stale API copy must not come back at restart.
            # (A TTL check's saved state stays: it belongs to the check, whoever defines it.)
            self._forget_files(lambda p: [p.remove_service(service.id)] + [
                p.remove_check(s.check_id, with_state=False) for s in definition.checks])
            return
        written: list[Callable[[LocalPersistence], None]] = []

        def save(p: LocalPersistence) -> None:
            p.save_service(service, definition.token)
            written.append(lambda q: q.remove_service(service.id))
            for spec in definition.checks:
                p.save_check(spec)
                written.append(lambda q, cid=spec.check_id: q.remove_check(cid))
        try:
            self._disk(f'registering service "{service.id}"', save)
        except WaypostError:
            if service.id not in self.services:  # a new service: leave no part of it behind
                for undo in written:
                    self._forget_files(undo)
            raise

    def _disk(self, what: str, action: Callable[[LocalPersistence], Any]) -> None:
        """Run a persistence write; a refusal fails the request with a clear message."""
        try:
            action(self._persistence)
        except OSError as exc:
            self.log.error("Failed {what}: could not write to data_dir: {error}", what=what,
                           error=exc)
            raise WaypostError(f"Failed {what}: could not persist it in data_dir: "
                               f"{exc.strerror or exc}") from None

    def _forget_files(self, action: Callable[[LocalPersistence], Any]) -> None:
        """A best-effort removal of files that should no longer exist; failures are logged."""
        if self._persistence is None:
            return
        try:
            action(self._persistence)
        except OSError as exc:
            self.log.error("Failed removing a persisted registration from data_dir: {error}",
                           error=exc)

    def _background(self, d: Deferred) -> Deferred:
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
                       restoring: bool = False) -> Check:
        old = self.checks.pop(spec.check_id, None)
        if old is not None:
            self._stop_check(old)
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
        if old is not None and old.spec == spec and old.check.service_id == check.service_id:
            # An unchanged check keeps its state (a reload must not reset TTLs to critical).
            check = replace(check, status=old.check.status, output=old.check.output)
        local = LocalCheck(check=check, spec=spec, source=source,
                           critical_since=self._reactor.seconds() if check.status == structs.CRITICAL else None)
        if old is not None and old.spec == spec:
            local.critical_since = old.critical_since
        self.checks[spec.check_id] = local
        if spec.ttl > 0:
            self._arm_ttl(local, ttl_delay)
        if self.running:
            self._start_runner(local)
        return check

    def _refresh_service_fields(self, local: LocalCheck, service: Service) -> Check:
        local.check = replace(local.check, service_name=service.name, service_tags=service.tags)
        return local.check

    def _start_runner(self, local: LocalCheck) -> None:
        if self._runner_factory is None or local.runner is not None:
            return
        runner = self._runner_factory(local.spec, self)
        if runner is not None:
            local.runner = runner
            runner.start()

    def _stop_check(self, local: LocalCheck) -> None:
        if local.timer is not None and local.timer.active():
            local.timer.cancel()
        local.timer = None
        if local.runner is not None:
            local.runner.stop()
            local.runner = None

    def _drop_check(self, check_id: str) -> None:
        self._stop_check(self.checks.pop(check_id))

    def _arm_ttl(self, local: LocalCheck, delay: float | None = None) -> None:
        delay = local.spec.ttl if delay is None else delay
        if local.timer is not None and local.timer.active():
            local.timer.reset(delay)
            return
        local.timer = self._reactor.callLater(delay, self._ttl_expired, local.spec.check_id)

    def _ttl_expired(self, check_id: str) -> None:
        local = self.checks.get(check_id)
        if local is None:
            return
        local.timer = None
        output = f"TTL expired (last output before timeout follows): {local.check.output}"
        self._background(self._set_status(local, structs.CRITICAL, cap_output(output)))

    def _set_status(self, local: LocalCheck, status: str, output: str) -> Deferred:
        if status == structs.CRITICAL:
            if local.critical_since is None:
                local.critical_since = self._reactor.seconds()
        else:
            local.critical_since = None
        if local.check.status == status and local.check.output == output:
            return succeed(True)
        local.check = replace(local.check, status=status, output=output)
        if local.check.check_id not in self.checks or self.checks[local.check.check_id] is not local:
            return succeed(False)  # dropped while a run was in flight
        return self._write(Register(node=self._node(), checks=(local.check,), skip_node_update=True))
