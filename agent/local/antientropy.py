"""Anti-entropy: when the local state is synced in full, and how failed syncs are retried.

Owns Consul's StateSyncer schedule (agent/ae/ae.go): a full sync at start, then one per
interval, which grows with the cluster (one base interval up to 128 nodes, one more per
doubling) plus a random stagger so that agents do not sync together; partial syncs run when
the local state changes (`agent.local.sync`). A failed sync, full or partial, is retried with
a full sync after a jittered delay that starts at Consul's 15 s and doubles with each
consecutive failure, never past the full-sync interval; a full sync that succeeds ends the
backoff.
(Consul retries a failed full sync after 15 s plus jitter every time, and leaves a failed
partial sync to the next full one.)
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from agent.local.state import LocalState
from agent.loops import ResilientLoop

txaio.use_twisted()

BASE_INTERVAL = 60.0  # Consul's AEInterval
SCALE_THRESHOLD = 128  # nodes before the interval starts to grow
RETRY_INTERVAL = 15.0  # Consul's retryFailIntv: the first retry of a failed sync


def scale_factor(nodes: int) -> int:
    """Consul's scaleFactor: 1 up to 128 nodes, then one more per doubling."""
    if nodes <= SCALE_THRESHOLD:
        return 1
    return int(math.ceil(math.log2(nodes) - math.log2(SCALE_THRESHOLD)) + 1)


def scaled_interval(base: float, nodes: int) -> float:
    """Consul's aeScale: one base interval up to 128 nodes, then one more per doubling."""
    return base * scale_factor(nodes)


class AntiEntropy:
    """Runs `local`'s full syncs on the interval and retries failed syncs with backoff.

    `loop` is the full-sync loop (a `ResilientLoop`: a failed full sync is logged and
    counted there); `failures` counts consecutive failed syncs of either kind.
    """

    log = txaio.make_logger()

    def __init__(self, reactor, local: LocalState, *,
                 keep_services: frozenset[str] | None = None,
                 keep_checks: frozenset[str] | None = None,
                 interval: float = BASE_INTERVAL,
                 cluster_size: Callable[[], int] = lambda: 1,
                 rng: random.Random | None = None) -> None:
        """`keep_*`, when given, replace the rows the local state's full sync leaves alone."""
        self._reactor = reactor
        self._local = local
        self._sync = local.sync
        if keep_services is not None:
            self._sync.keep_services = keep_services
        if keep_checks is not None:
            self._sync.keep_checks = keep_checks
        self._sync.on_failure = self._pass_failed
        self._interval = interval
        self._cluster_size = cluster_size
        self._rng = rng or random.Random()
        self.syncs = 0
        self.failures = 0
        self.loop = ResilientLoop(reactor, "anti-entropy", self.sync, self._next_delay)

    def start(self, now: bool = False) -> None:
        """Sync on the interval; with `now`, once at once first (as Consul does at start)."""
        self.loop.start(now=now)

    def stop(self) -> None:
        self.loop.stop()

    def sync(self) -> Deferred:
        """One full sync (after any partial sync running); fires when it is done."""
        self.syncs += 1
        d = self._sync.exclusive(self._sync.sync_full)
        d.addCallbacks(self._succeeded, self._full_failed)
        return d

    def _succeeded(self, result: Any) -> Any:
        self.failures = 0
        return result

    def _full_failed(self, failure: Failure) -> Failure:
        self.failures += 1  # the loop logs it and asks `_next_delay` when to retry
        return failure

    def _pass_failed(self, failure: Failure) -> None:
        self.failures += 1
        delay = self._retry_delay()
        self.log.error("failed to sync changes: {error}; a full sync retries within "
                       "{delay:.0f} s", error=failure.getErrorMessage(), delay=delay)
        self.loop.run_within(delay)

    def _next_delay(self) -> float:
        if self.failures:
            return self._retry_delay()
        interval = scaled_interval(self._interval, self._cluster_size())
        return interval + self._rng.random() * interval / 2

    def _retry_delay(self) -> float:
        # Consul's retry (15 s plus up to as much again, scaled with the cluster), doubled
        # per consecutive failure; its base stops at half the interval, so that a retry
        # never comes later than the regular full sync would.
        scale = scale_factor(self._cluster_size())
        cap = self._interval * scale / 2
        base = min(RETRY_INTERVAL * scale * 2 ** min(self.failures - 1, 16), cap)
        return base + self._rng.random() * base
