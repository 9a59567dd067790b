"""Leader duties: what only the leading server does, started when it gains leadership and
stopped when it loses it (Consul's establishLeadership / revokeLeadership).

- Session TTL timers (`agent.sessions.SessionManager`): armed afresh, at the full TTL, on a new
  leader, as Consul's leader does; an expiry writes the session's destroy through the log.
- Tombstone GC (`TombstoneGC`, Consul's): KV tombstones are kept `ttl` (15 min) so blocking
  queries on a deleted prefix see the delete's index; then the leader writes a `TombstoneReap`
  for them. Expiries are bucketed by `granularity` (30 s), so at most one reap per bucket.
- Reconciling the catalog with the gossip pool (`agent.membership`): this server's own entry
  (its node, the `consul` service, `serfHealth`) and every member's node and `serfHealth`
  (passing, critical when failed, deregistered when it left), at once, whenever membership
  changes (`reconcile_soon`) and every `RECONCILE_INTERVAL`, as Consul's leader does.

Every change goes through the log (`write`), so followers, snapshots and restarts see it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred

from agent.fsm.commands import Register, TombstoneReap
from agent.loops import ResilientLoop
from agent.membership import MemberFacts, reconcile_commands
from agent.state.kv import KVS
from agent.state.store import StateStore

txaio.use_twisted()

TOMBSTONE_TTL = 15 * 60.0  # Consul's TombstoneTTL
TOMBSTONE_GRANULARITY = 30.0  # Consul's TombstoneTTLGranularity
RECONCILE_INTERVAL = 60.0  # Consul's ReconcileInterval


class TombstoneGC:
    """Consul's tombstone GC: `hint(index)` says tombstones up to `index` exist now; once
    `ttl` has passed (rounded up to `granularity`), `reap(index)` is called with the highest
    index hinted in that bucket. Does nothing while disabled (not the leader)."""

    log = txaio.make_logger()

    def __init__(self, reactor, reap: Callable[[int], Any], *, ttl: float = TOMBSTONE_TTL,
                 granularity: float = TOMBSTONE_GRANULARITY) -> None:
        self._reactor = reactor
        self._reap = reap
        self._ttl = ttl
        self._granularity = granularity
        self._buckets: dict[float, list] = {}  # expiry time -> [highest index, timer]
        self.enabled = False

    def set_enabled(self, enabled: bool) -> None:
        if not enabled:
            for _, timer in self._buckets.values():
                if timer.active():
                    timer.cancel()
            self._buckets.clear()
        self.enabled = enabled

    def hint(self, index: int) -> None:
        if not self.enabled:
            return
        now = self._reactor.seconds()
        expires = math.ceil((now + self._ttl) / self._granularity) * self._granularity
        bucket = self._buckets.get(expires)
        if bucket is not None:
            bucket[0] = max(bucket[0], index)
            return
        timer = self._reactor.callLater(expires - now, self._expired, expires)
        self._buckets[expires] = [index, timer]

    def pending(self) -> int:
        """How many expiry buckets are waiting."""
        return len(self._buckets)

    def _expired(self, expires: float) -> None:
        index, _ = self._buckets.pop(expires)
        d = maybeDeferred(self._reap, index)
        # Consul's leader logs a failed reap and goes on; a later hint covers these tombstones.
        d.addErrback(lambda f: self.log.failure("reaping KV tombstones up to index {index} "
                                                "failed", f, index=index))


class LeaderDuties:
    """Starts and stops the leader's work with leadership (`leadership_changed` is a listener
    of the log's leadership events)."""

    log = txaio.make_logger()

    def __init__(self, reactor, store: StateStore, write: Callable[[Any], Deferred],
                 applied_index: Callable[[], int], *, sessions,
                 member: Callable[[], Register] | None = None,
                 members: Callable[[], list[MemberFacts]] = lambda: [],
                 datacenter: Callable[[], str] = lambda: "dc1",
                 tombstone_ttl: float = TOMBSTONE_TTL,
                 tombstone_granularity: float = TOMBSTONE_GRANULARITY,
                 reconcile_interval: float = RECONCILE_INTERVAL) -> None:
        """`write(command)` commits through the log; `applied_index()` is the log's; `member()`
        is this server's own catalog registration (None: no catalog entry to reconcile)."""
        self._store = store
        self._write = write
        self._applied_index = applied_index
        self._sessions = sessions
        self._member = member
        self._members = members
        self._datacenter = datacenter
        self._reactor = reactor
        self._soon = None
        self.tombstones = TombstoneGC(reactor, self._reap, ttl=tombstone_ttl,
                                      granularity=tombstone_granularity)
        self.reconciler = ResilientLoop(reactor, "reconcile", self.reconcile, reconcile_interval)
        self.leading = False

    def leadership_changed(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if leading:
            self.log.info("cluster leadership acquired")
            self._start()
        else:
            self.log.info("cluster leadership lost")
            self._stop()

    def _start(self) -> None:
        self._sessions.start()
        self.tombstones.set_enabled(True)
        self._store.on_commit.append(self._committed)
        if self._store.kv.tombstones:
            # As a new leader, start the clock for the tombstones already there.
            self.tombstones.hint(self._applied_index())
        if self._member is not None:
            self.reconciler.start(now=True)

    def _stop(self) -> None:
        if self.reconciler.running:
            self.reconciler.stop()
        if self._committed in self._store.on_commit:
            self._store.on_commit.remove(self._committed)
        self.tombstones.set_enabled(False)
        self._sessions.stop()

    def _committed(self, index: int, tables: frozenset[str]) -> None:
        if KVS in tables and self._store.kv.tombstones:
            self.tombstones.hint(index)

    def _reap(self, index: int) -> Deferred:
        return self._write(TombstoneReap(index))

    def reconcile(self) -> Deferred | None:
        """Write what makes the catalog agree with the pool; None when it already does."""
        if self._member is None or not self.leading:
            return None
        commands = reconcile_commands(self._store, self._member(), self._members(),
                                      self._datacenter())
        if not commands:
            return None
        return self._write_each(commands)

    @inlineCallbacks
    def _write_each(self, commands: list[Any]):
        for command in commands:
            yield self._write(command)

    def reconcile_soon(self) -> None:
        """Membership changed: reconcile on the next reactor turn (events come in bursts)."""
        if self._soon is not None or not self.leading:
            return

        def run() -> None:
            self._soon = None
            d = maybeDeferred(self.reconcile)
            d.addErrback(lambda f: self.log.failure("reconciling members failed", f))
        self._soon = self._reactor.callLater(0, run)
