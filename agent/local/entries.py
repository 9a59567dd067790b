"""The entries of the local state and their sync flags.

Owns what one registered check carries at this agent (`LocalCheck`), where a registration came
from (API or config), Consul's maintenance IDs, and `SyncFlags`: which entries the catalog has
not caught up with yet — Consul's `InSync` false (an entry to (re)register) and `Deleted` (an
entry removed here but still in the catalog). A flag carries the generation of the change that
set it, so that a write answering for an older version of an entry never clears a newer change.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Iterator

from agent import structs
from agent.definitions import CheckSpec
from agent.structs import Check, Service, ServiceAddress

API, CONFIG = "api", "config"  # where a registration came from; reload replaces CONFIG ones
NODE_MAINT_ID = structs.NODE_MAINT
SERVICE_MAINT_PREFIX = structs.SERVICE_MAINT_PREFIX
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


@dataclass(eq=False)
class LocalCheck:
    """One check registered here: its row as the catalog should hold it, how it is run, and
    its timers. `deferred` is the pending write-back of an output-only change (Consul's
    DeferCheck): while it is set, the catalog may hold an older output on purpose."""

    check: Check
    spec: CheckSpec
    source: str = API
    timer: Any = None  # IDelayedCall of the TTL expiry
    runner: Any = None  # the agent.checks runner, if the check is run here
    critical_since: float | None = None
    deferred: Any = None  # IDelayedCall of the damped output write-back


class SyncFlags:
    """Out-of-sync and deleted marks for one kind of entry (services, or checks), by ID."""

    def __init__(self) -> None:
        self._generation = 0
        self._dirty: dict[str, int] = {}  # ID -> generation of the change to register
        self._deleted: dict[str, tuple[int, str]] = {}  # ID -> (generation, owning service)

    def _next(self) -> int:
        self._generation += 1
        return self._generation

    def changed(self, key: str) -> None:
        """The entry differs from the catalog's (InSync = false)."""
        self._deleted.pop(key, None)
        self._dirty[key] = self._next()

    def removed(self, key: str, owner: str = "") -> None:
        """The entry is gone here but may still be in the catalog (Deleted = true); `owner` is
        the service a check belonged to (deregistering the service takes the check with it)."""
        self._dirty.pop(key, None)
        self._deleted[key] = (self._next(), owner)

    def in_sync(self, key: str) -> bool:
        return key not in self._dirty and key not in self._deleted

    def is_deleted(self, key: str) -> bool:
        return key in self._deleted

    def set_in_sync(self, key: str, same: bool) -> None:
        """What a full sync found: the catalog's row equals ours (or not)."""
        if same:
            self._dirty.pop(key, None)
        elif key not in self._dirty:
            self.changed(key)

    def dirty(self) -> Iterator[tuple[str, int]]:
        """(ID, generation) of every entry to register, as of now."""
        return iter(list(self._dirty.items()))

    def deleted(self) -> Iterator[tuple[str, int, str]]:
        """(ID, generation, owner) of every entry to deregister, as of now."""
        return iter([(key, gen, owner) for key, (gen, owner) in self._deleted.items()])

    def synced(self, key: str, generation: int) -> bool:
        """The catalog took the change of `generation`; False when a newer one came since."""
        if self._dirty.get(key) == generation:
            del self._dirty[key]
            return True
        return False

    def purged(self, key: str, generation: int) -> None:
        """The catalog dropped the entry deleted at `generation`."""
        found = self._deleted.get(key)
        if found is not None and found[0] == generation:
            del self._deleted[key]

    def forget(self, key: str) -> None:
        self._dirty.pop(key, None)
        self._deleted.pop(key, None)

    @property
    def pending(self) -> int:
        return len(self._dirty) + len(self._deleted)
