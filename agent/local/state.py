"""What is registered at this agent: its services and checks, and keeping the catalog in step.

The local state is the truth for this node. Each change is pushed to the catalog at once as a
command; TTL checks turn critical when their TTL lapses without an update.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed

from agent import structs
from agent.definitions import CheckSpec, ServiceDefinition
from agent.errors import InvalidRequest, WaypostError
from agent.fsm.commands import Deregister, Register
from agent.structs import Check, Node, Service, ServiceAddress

OUTPUT_MAX = 4096


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
    timer: Any = None  # IDelayedCall of the TTL expiry


class LocalState:
    def __init__(self, reactor, node: Callable[[], Node], write: Callable[[Any], Deferred]) -> None:
        self._reactor = reactor
        self._node = node
        self._write = write
        self.services: dict[str, Service] = {}
        self.checks: dict[str, LocalCheck] = {}

    # --- services ---

    def add_service(self, definition: ServiceDefinition) -> Deferred:
        node = self._node()
        service = with_default_tagged_addresses(replace(definition.service, node=node.name))
        old = self.services.get(service.id)
        self.services[service.id] = service
        checks = []
        for spec in definition.checks:
            checks.append(self._install_check(spec, service))
        if old is not None:
            # Checks of the old definition that the new one dropped go away (as Consul does).
            keep = {c.check_id for c in checks}
            for check_id in [cid for cid, lc in self.checks.items()
                             if lc.check.service_id == service.id and cid not in keep]:
                self._drop_check(check_id)
        return self._write(Register(node=node, service=service, checks=tuple(checks),
                                    skip_node_update=True))

    def remove_service(self, service_id: str) -> Deferred:
        if self.services.pop(service_id, None) is None:
            return succeed(False)
        for check_id in [cid for cid, lc in self.checks.items() if lc.check.service_id == service_id]:
            self._drop_check(check_id)
        return self._write(Deregister(node=self._node().name, service_id=service_id))

    # --- checks ---

    def add_check(self, spec: CheckSpec) -> Deferred:
        service = None
        if spec.service_id:
            service = self.services.get(spec.service_id)
            if service is None:
                raise InvalidRequest(f'ServiceID "{spec.service_id}" does not exist')
        check = self._install_check(spec, service)
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
        return self._set_status(local, status, output[:OUTPUT_MAX])

    # --- internals ---

    def _install_check(self, spec: CheckSpec, service: Service | None) -> Check:
        old = self.checks.pop(spec.check_id, None)
        if old is not None and old.timer is not None and old.timer.active():
            old.timer.cancel()
        check = Check(node=self._node().name, check_id=spec.check_id, name=spec.name,
                      status=spec.status, notes=spec.notes, output="",
                      service_id=service.id if service else "",
                      service_name=service.name if service else "",
                      service_tags=service.tags if service else (),
                      type=spec.type, definition=spec.definition)
        local = LocalCheck(check=check, spec=spec)
        self.checks[spec.check_id] = local
        if spec.ttl > 0:
            self._arm_ttl(local)
        return check

    def _drop_check(self, check_id: str) -> None:
        local = self.checks.pop(check_id)
        if local.timer is not None and local.timer.active():
            local.timer.cancel()

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
        self._set_status(local, structs.CRITICAL, output[:OUTPUT_MAX])

    def _set_status(self, local: LocalCheck, status: str, output: str) -> Deferred:
        if local.check.status == status and local.check.output == output:
            return succeed(True)
        local.check = replace(local.check, status=status, output=output)
        return self._write(Register(node=self._node(), checks=(local.check,), skip_node_update=True))

    def stop(self) -> None:
        for local in self.checks.values():
            if local.timer is not None and local.timer.active():
                local.timer.cancel()
            local.timer = None
