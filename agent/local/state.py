"""What is registered at this agent: its services and checks, and pushing them to the catalog.

The local state is the truth for this node. Each change is written to the catalog at once (a
partial sync); `agent.local.antientropy` repairs whatever drifts later. Checks are run by the
runners of `agent.checks`, which report back through `update_check`; TTL checks turn critical
when their TTL lapses without an update, and a service whose check stays critical longer than
its `deregister_critical_service_after` is removed.
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
                 enable_local_script_checks: bool = False) -> None:
        self._reactor = reactor
        self._node = node
        self._write = write
        self._runner_factory = runner_factory
        self.enable_script_checks = enable_script_checks
        self.enable_local_script_checks = enable_local_script_checks
        self.services: dict[str, Service] = {}
        self.service_sources: dict[str, str] = {}
        self.checks: dict[str, LocalCheck] = {}
        self.running = False

    # --- services ---

    def add_service(self, definition: ServiceDefinition, source: str = API,
                    replace_existing_checks: bool = False) -> Deferred:
        for spec in definition.checks:
            self._allow_check(spec, source)
        node = self._node()
        service = with_default_tagged_addresses(replace(definition.service, node=node.name))
        old = self.services.get(service.id)
        self.services[service.id] = service
        self.service_sources[service.id] = source
        checks = [self._install_check(spec, service, source) for spec in definition.checks]
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
                self._write(Deregister(node=node.name, check_id=check_id))
        return self._write(Register(node=node, service=service, checks=tuple(checks),
                                    skip_node_update=True))

    def remove_service(self, service_id: str) -> Deferred:
        if self.services.pop(service_id, None) is None:
            return succeed(False)
        self.service_sources.pop(service_id, None)
        for check_id in [cid for cid, lc in self.checks.items() if lc.check.service_id == service_id]:
            self._drop_check(check_id)
        return self._write(Deregister(node=self._node().name, service_id=service_id))

    # --- checks ---

    def add_check(self, spec: CheckSpec, source: str = API) -> Deferred:
        self._allow_check(spec, source)
        service = None
        if spec.service_id:
            service = self.services.get(spec.service_id)
            if service is None:
                raise InvalidRequest(f'ServiceID "{spec.service_id}" does not exist')
        check = self._install_check(spec, service, source)
        return self._write(Register(node=self._node(), checks=(check,), skip_node_update=True))

    def remove_check(self, check_id: str) -> Deferred:
        if check_id not in self.checks:
            return succeed(False)
        self._drop_check(check_id)
        return self._write(Deregister(node=self._node().name, check_id=check_id))

    def update_ttl(self, check_id: str, status: str, output: str) -> Deferred:
        local = self.checks.get(check_id)
        if local is None or local.spec.ttl <= 0:
            raise WaypostError(f'CheckID "{check_id}" does not have associated TTL')
        if status not in (structs.PASSING, structs.WARNING, structs.CRITICAL):
            raise InvalidRequest(f'Unknown check status: "{status}"')
        self._arm_ttl(local)
        return self._set_status(local, status, cap_output(output))

    def update_check(self, check_id: str, status: str, output: str) -> None:
        """The runners' notifier: a check run finished with this result."""
        local = self.checks.get(check_id)
        if local is not None:
            # Runners bound their output already, in Consul's per-type formats.
            self._set_status(local, status, output)

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
        for service_id in dict.fromkeys(doomed):
            self.log.info("deregistering service {sid}: its check was critical for too long",
                          sid=service_id)
            self.remove_service(service_id)
        return list(dict.fromkeys(doomed))

    # --- internals ---

    def _allow_check(self, spec: CheckSpec, source: str) -> None:
        if spec.type in ("script", "docker"):
            allowed = self.enable_script_checks or (source == CONFIG and self.enable_local_script_checks)
            if not allowed:
                raise InvalidRequest(SCRIPTS_DISABLED)

    def _install_check(self, spec: CheckSpec, service: Service | None, source: str) -> Check:
        old = self.checks.pop(spec.check_id, None)
        if old is not None:
            self._stop_check(old)
        check = Check(node=self._node().name, check_id=spec.check_id, name=spec.name,
                      status=spec.status, notes=spec.notes, output="",
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
            self._arm_ttl(local)
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

    def _arm_ttl(self, local: LocalCheck) -> None:
        if local.timer is not None and local.timer.active():
            local.timer.reset(local.spec.ttl)
            return
        local.timer = self._reactor.callLater(local.spec.ttl, self._ttl_expired, local.spec.check_id)

    def _ttl_expired(self, check_id: str) -> None:
        local = self.checks.get(check_id)
        if local is None:
            return
        local.timer = None
        output = f"TTL expired (last output before timeout follows): {local.check.output}"
        self._set_status(local, structs.CRITICAL, cap_output(output))

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
