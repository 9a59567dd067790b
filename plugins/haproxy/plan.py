"""What HAProxy should run, and the runtime API commands that get it there (pure code).

A backend has a fixed number of server slots (``server-template web 10 ... disabled``), named
``<prefix>1`` .. ``<prefix>N``. `targets_for` turns a catalog view into the instances a backend
should serve; `plan_backend` assigns them to slots and lists the commands: address and port,
weight, and the administrative state (``ready`` to serve, ``drain`` for an instance in
maintenance, ``maint`` for a free slot). Assignment is stable: an instance keeps its slot for as
long as it is wanted, so a change touches only the slots that changed, and no live slot is ever
repointed to another instance. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.hookspecs import CatalogView, ServiceInstance

READY, DRAIN, MAINT = "ready", "drain", "maint"
MAX_WEIGHT = 256


@dataclass(frozen=True)
class Backend:
    """One ``backends`` entry of the plugin settings."""
    name: str
    service: str
    slot_prefix: str
    tag: str | None = None
    weight_meta: str | None = None
    weight_tag_prefix: str | None = None
    passing_only: bool = False

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> Backend:
        return cls(name=entry["name"], service=entry["service"],
                   slot_prefix=entry.get("slot_prefix") or entry["name"],
                   tag=entry.get("tag"), weight_meta=entry.get("weight_meta"),
                   weight_tag_prefix=entry.get("weight_tag_prefix"),
                   passing_only=bool(entry.get("passing_only", False)))


@dataclass(frozen=True)
class Slot:
    """A server slot of a backend as HAProxy has it (or will have it after a plan)."""
    name: str
    addr: str
    port: int
    weight: int
    state: str  # ready | drain | maint


@dataclass(frozen=True)
class Target:
    """An instance a backend should carry: where it is, its weight and READY or DRAIN."""
    key: str  # "<node>/<service id>", stable across changes
    addr: str
    port: int
    weight: int
    state: str


@dataclass(frozen=True)
class Plan:
    """The outcome of `plan_backend`."""
    commands: tuple[str, ...]  # runtime API commands, in order
    slots: tuple[Slot, ...]  # the slots once the commands ran
    owners: Mapping[str, str]  # slot name -> target key, after the plan
    missing: tuple[Target, ...] = ()  # READY targets that found no free slot
    needed: int = 0  # slots the backend needs to hold every target it should


def instance_weight(instance: ServiceInstance, backend: Backend) -> int:
    """The HAProxy weight: from a meta key, else a tag, else the service's Weights (0-256)."""
    if backend.weight_meta and backend.weight_meta in instance.meta:
        value = _int(instance.meta[backend.weight_meta])
        if value is not None:
            return _clamp(value)
    if backend.weight_tag_prefix:
        for tag in instance.tags:
            if tag.startswith(backend.weight_tag_prefix):
                value = _int(tag[len(backend.weight_tag_prefix):])
                if value is not None:
                    return _clamp(value)
    passing, warning = instance.weights
    return _clamp(warning if instance.status == "warning" else passing)


def targets_for(view: CatalogView, backend: Backend) -> tuple[list[Target], list[str]]:
    """The instances `backend` should carry, and the keys left out (address not an IP).

    Healthy instances (``view.healthy``) are READY; instances in maintenance are DRAIN.
    """
    def wanted(instance: ServiceInstance) -> bool:
        return backend.tag is None or backend.tag in instance.tags

    targets: list[Target] = []
    skipped: list[str] = []
    healthy = [(i, READY) for i in view.healthy(backend.service, backend.passing_only)]
    draining = [(i, DRAIN) for i in view.services.get(backend.service, ())
                if i.status == "maintenance"]
    for instance, state in healthy + draining:
        if not wanted(instance):
            continue
        key = f"{instance.node}/{instance.service_id}"
        if not _is_ip(instance.address):
            skipped.append(key)
            continue
        targets.append(Target(key, instance.address, instance.port,
                              instance_weight(instance, backend), state))
    return targets, skipped


def plan_backend(backend: str, slots: Iterable[Slot], targets: Iterable[Target],
                 owners: Mapping[str, str] | None = None) -> Plan:
    """Assign `targets` to `slots` and list the runtime API commands for `backend`.

    `owners` is the assignment from the previous plan (slot name -> target key); without it
    (at start, after a reload) instances find their slot by address and port. A DRAIN target
    only keeps a slot it already has: an instance entering maintenance with no slot has no
    connections to drain. Commands that enable slots come before those that disable any, so a
    replaced instance never leaves the backend empty.
    """
    slots = list(slots)
    by_key = {t.key: t for t in targets}
    owners = owners or {}
    assigned: dict[str, Target] = {}  # slot name -> target
    taken: set[str] = set()

    def assign(slot: Slot, target: Target) -> None:
        assigned[slot.name] = target
        taken.add(target.key)

    for slot in slots:  # 1. the slot we gave an instance last time
        target = by_key.get(owners.get(slot.name, ""))
        if target is not None and target.key not in taken:
            assign(slot, target)
    for live_first in (True, False):  # 2. the slot already pointing at it
        for slot in slots:
            if slot.name in assigned or (live_first and slot.state == MAINT):
                continue
            target = _match(slot, by_key, taken)
            if target is not None and (target.state == READY or slot.state != MAINT):
                assign(slot, target)
    free = [s for s in slots if s.name not in assigned]
    free.sort(key=lambda s: s.state != MAINT)  # reuse idle slots before live strays
    missing: list[Target] = []
    for target in sorted(by_key.values(), key=lambda t: t.key):  # 3. free slots
        if target.key in taken or target.state != READY:
            continue
        if free:
            assign(free.pop(0), target)
        else:
            missing.append(target)

    enable: list[str] = []
    disable: list[str] = []
    after: list[Slot] = []
    for slot in slots:
        target = assigned.get(slot.name)
        if target is None:
            if slot.state != MAINT:
                disable.append(_cmd(backend, slot.name, "state maint"))
            after.append(replace(slot, state=MAINT))
            continue
        commands, new = _converge(backend, slot, target)
        (disable if target.state == DRAIN else enable).extend(commands)
        after.append(new)
    needed = len(assigned) + len(missing)
    return Plan(commands=tuple(enable + disable), slots=tuple(after),
                owners={name: t.key for name, t in assigned.items()},
                missing=tuple(missing), needed=needed)


def _converge(backend: str, slot: Slot, target: Target) -> tuple[list[str], Slot]:
    commands: list[str] = []
    if (slot.addr, slot.port) != (target.addr, target.port):
        commands.append(_cmd(backend, slot.name, f"addr {target.addr} port {target.port}"))
    if slot.weight != target.weight:
        commands.append(_cmd(backend, slot.name, f"weight {target.weight}"))
    if target.state == READY and slot.state != READY:
        if slot.state == MAINT:
            # The instance passed its Waypost checks: serve it now rather than after
            # HAProxy's own rise count; HAProxy's next check still has its say.
            commands.append(_cmd(backend, slot.name, "health up"))
        commands.append(_cmd(backend, slot.name, "state ready"))
    elif target.state == DRAIN and slot.state == READY:
        commands.append(_cmd(backend, slot.name, "state drain"))
    state = target.state if slot.state != MAINT or target.state == READY else MAINT
    return commands, Slot(slot.name, target.addr, target.port, target.weight, state)


def _match(slot: Slot, by_key: Mapping[str, Target], taken: set[str]) -> Target | None:
    for target in sorted(by_key.values(), key=lambda t: t.key):
        if target.key not in taken and (target.addr, target.port) == (slot.addr, slot.port):
            return target
    return None


def _cmd(backend: str, slot: str, action: str) -> str:
    return f"set server {backend}/{slot} {action}"


def slot_names(prefix: str, slots: Iterable[Slot]) -> list[Slot]:
    """The slots of a server-template `prefix` (``web1``, ``web2``, ...), in number order."""
    picked = [s for s in slots if s.name.startswith(prefix) and s.name[len(prefix):].isdigit()]
    return sorted(picked, key=lambda s: int(s.name[len(prefix):]))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _clamp(value: int) -> int:
    return max(0, min(MAX_WEIGHT, value))
