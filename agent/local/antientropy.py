"""Anti-entropy: periodically make the catalog's picture of this node equal the local state.

Local changes are pushed at once by `LocalState`; this full sync repairs everything else: a
service or check deleted from the catalog behind the agent's back comes back, one registered for
this node by someone else goes away, and a changed node address is rewritten. The interval
grows with the cluster as Consul's does, with a random stagger so agents do not sync together.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred, DeferredList, succeed

from agent import structs
from agent.fsm.commands import Deregister, Register
from agent.local.state import LocalState
from agent.loops import ResilientLoop
from agent.state.store import StateStore

txaio.use_twisted()

BASE_INTERVAL = 60.0  # Consul's AEInterval
SCALE_THRESHOLD = 128  # nodes before the interval starts to grow


def scaled_interval(base: float, nodes: int) -> float:
    """Consul's aeScale: one base interval up to 128 nodes, then one more per doubling."""
    if nodes <= SCALE_THRESHOLD:
        return base
    return base * (math.ceil(math.log2(nodes) - math.log2(SCALE_THRESHOLD)) + 1)


def _plain(row: Any) -> Any:
    return replace(row, create_index=0, modify_index=0)


class AntiEntropy:
    log = txaio.make_logger()

    def __init__(self, reactor, local: LocalState, store: StateStore,
                 node: Callable[[], structs.Node], write: Callable[[Any], Deferred], *,
                 keep_services: frozenset[str] = frozenset(),
                 keep_checks: frozenset[str] = frozenset(),
                 interval: float = BASE_INTERVAL, rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self._local = local
        self._store = store
        self._node = node
        self._write = write
        # Rows the agent itself owns outside local state (the server's consul service, serfHealth).
        self._keep_services = keep_services
        self._keep_checks = keep_checks
        self._interval = interval
        self._rng = rng or random.Random()
        self.syncs = 0
        # A sync that raises or fails is logged and counted by the loop; the next runs anyway.
        self.loop = ResilientLoop(reactor, "anti-entropy", self.sync, self._next_delay)

    def start(self, now: bool = False) -> None:
        """Sync on the interval; with `now`, once at once first (as Consul does at start)."""
        self.loop.start(now=now)

    def stop(self) -> None:
        self.loop.stop()

    def _next_delay(self) -> float:
        interval = scaled_interval(self._interval, len(self._store.catalog.nodes))
        return interval + self._rng.random() * interval / 2

    def sync(self) -> Deferred:
        """One full sync; fires when every repairing write has been applied."""
        self.syncs += 1
        node = self._node()
        catalog = self._store.catalog
        writes: list[Deferred] = []
        current = catalog.nodes.get(node.name)
        if current is None or _plain(current) != _plain(node):
            writes.append(self._write(Register(node=node)))
        remote_services = catalog.services.get(node.name, {})
        remote_checks = catalog.checks.get(node.name, {})
        for service_id, service in list(self._local.services.items()):
            remote = remote_services.get(service_id)
            if service.enable_tag_override and remote is not None and remote.tags != service.tags:
                # Tags edited in the catalog win for services that allow it.
                service = replace(service, tags=remote.tags)
                self._local.services[service_id] = service
            if remote is None or _plain(remote) != _plain(service):
                checks = tuple(lc.check for lc in self._local.checks.values()
                               if lc.check.service_id == service_id)
                writes.append(self._write(Register(node=node, service=service, checks=checks,
                                                   skip_node_update=True)))
        for service_id in list(remote_services):
            if service_id not in self._local.services and service_id not in self._keep_services:
                writes.append(self._write(Deregister(node=node.name, service_id=service_id)))
        for check_id, local in list(self._local.checks.items()):
            remote = remote_checks.get(check_id)
            if local.check.service_id and local.check.service_id not in self._local.services:
                continue
            if remote is None or _plain(remote) != _plain(self._expected(local.check)):
                writes.append(self._write(Register(node=node, checks=(local.check,),
                                                   skip_node_update=True)))
        for check_id in list(remote_checks):
            if check_id not in self._local.checks and check_id not in self._keep_checks:
                writes.append(self._write(Deregister(node=node.name, check_id=check_id)))
        if not writes:
            return succeed(0)
        return DeferredList(writes, consumeErrors=True).addCallback(self._outcome)

    def _outcome(self, results: list) -> int:
        """The number of repairing writes; a refused one fails the sync, so that the loop
        logs and counts it (the others stand, and the next sync retries what failed)."""
        for ok, result in results:
            if not ok:
                result.raiseException()
        return len(results)

    def _expected(self, check: structs.Check) -> structs.Check:
        """The row the catalog would hold for a local check (it fills in service fields)."""
        service = self._local.services.get(check.service_id)
        if service is None:
            return check
        return replace(check, service_name=service.name, service_tags=service.tags)
