"""The state store: catalog, KV and session tables under one index, with watches.

Only the FSM writes here, one log entry at a time: it calls the table writers with the entry's
index and then `commit(index)`, which advances the global index, records the lock-delays of
keys the entry released, tells the `on_commit` listeners and wakes the watches the entry
touched. Readers get `(index, rows)` pairs whose index follows Consul's rules per endpoint.

A writer must not wait for the fan-out: with a `defer` hook (the agent gives one that runs a
callable on a later reactor turn) the woken watches fire after the commit returns, a bounded
number per turn, so a write with a thousand blocking queries parked on its key is answered
first. A watch fired later reads the store as it is then: at least the committed state. The
`on_commit` listeners (DNS cache invalidation, plugin feeds) stay synchronous: once a write is
acknowledged no cached answer may predate it. Without a hook (pure tests) watches fire inside
`commit`.
"""

from __future__ import annotations

from itertools import islice
from typing import Callable

from agent import structs
from agent.state.catalog import CHECKS, NODES, SERVICES, CatalogTables
from agent.state.kv import KVS, KVTable
from agent.state.sessions import SESSIONS, SessionTable
from agent.state.watch import WatchHandle, WatchRegistry

CATALOG_TABLES = (NODES, SERVICES, CHECKS)
ALL_TABLES = frozenset(CATALOG_TABLES + (KVS, SESSIONS))
WAKE_BATCH = 128  # watches fired per reactor turn when wake-ups are deferred
_LOCK_DELAY_SWEEP = 1024  # expired lock-delays are swept once there are this many


class StateStore:
    def __init__(self, defer: Callable[[Callable[[], None]], None] | None = None,
                 report_error: Callable[[BaseException], None] | None = None) -> None:
        """`defer(f)` runs `f` on a later reactor turn (None: wake watches synchronously);
        `report_error` is told what a deferred watcher raised."""
        self.index = 0
        self.watches = WatchRegistry()
        self._touched_tables: set[str] = set()
        self._touched_keys: list[str] = []
        self._released: list[tuple[str, float]] = []  # (key, lock-delay) of this entry
        # key -> apply-clock time until which it may not be locked again (not replicated:
        # every replica records it when it applies the entry that let the key go).
        self.lock_delays: dict[str, float] = {}
        self._defer = defer
        self.report_error = report_error or (lambda exc: None)
        self._wake_queue: dict[int, WatchHandle] = {}  # id -> handle, in firing order
        self._wake_scheduled = False
        self.reset_tables()
        # Autopilot's configuration once an operator set one (Consul's AutopilotConfig fields
        # with CreateIndex/ModifyIndex); None: the agent configuration's settings apply.
        self.autopilot: dict | None = None
        self.on_commit: list[Callable[[int, frozenset[str]], None]] = []

    def reset_tables(self) -> None:
        """Empty every table (a restore fills them again); watches are kept."""
        self.catalog = CatalogTables(self._touched_tables.add)
        self.kv = KVTable(self._touched_tables.add, self._touched_keys.append)
        self.sessions = SessionTable(self._touched_tables.add)

    # --- lock-delays ---

    def note_lock_delay(self, key: str, seconds: float) -> None:
        """A session holding `key` was destroyed by the entry being applied."""
        self._released.append((key, seconds))

    def lock_delay_remaining(self, key: str, now: float) -> float:
        """Seconds until `key` may be locked again (0 when it may now)."""
        until = self.lock_delays.get(key)
        if until is None:
            return 0.0
        left = until - now
        if left <= 0:
            del self.lock_delays[key]
            return 0.0
        return left

    def _record_lock_delays(self, now: float) -> None:
        delays, self._released = self._released, []
        if len(self.lock_delays) > _LOCK_DELAY_SWEEP:
            self.lock_delays = {k: t for k, t in self.lock_delays.items() if t > now}
        for key, seconds in delays:
            until = now + min(seconds, structs.MAX_LOCK_DELAY)
            self.lock_delays[key] = max(until, self.lock_delays.get(key, 0.0))

    # --- committing an entry ---

    def commit(self, index: int, clock: Callable[[], float] | None = None) -> list[BaseException]:
        """Finish the entry at `index`: advance the index, record lock-delays at `clock()`
        (none without a clock), tell the change listeners, wake what the entry touched.

        Returns the errors raised by callbacks run here, for the caller to log.
        """
        if index > self.index:
            self.index = index
        tables = frozenset(self._touched_tables)
        if self._released:
            if clock is not None:
                # Before any watcher wakes: one may try to take the released key at once.
                self._record_lock_delays(clock())
            else:
                self._released.clear()
        handles = self.watches.collect(tables, self._touched_keys) if tables else []
        self._touched_tables.clear()
        self._touched_keys.clear()
        errors: list[BaseException] = []
        if tables:
            for listener in self.on_commit:
                try:
                    listener(index, tables)
                except Exception as exc:  # noqa: BLE001 - reported by the caller
                    errors.append(exc)
        if handles:
            errors.extend(self._wake(handles))
        return errors

    def discard_pending(self) -> None:
        """Forget what a failed entry marked as touched (it changed nothing)."""
        self._touched_tables.clear()
        self._touched_keys.clear()
        self._released.clear()

    def wake_all(self) -> list[BaseException]:
        """Tell every change listener and wake every watch, as after a restore."""
        self._touched_keys.clear()
        self._touched_tables.clear()
        errors: list[BaseException] = []
        for listener in self.on_commit:
            try:
                listener(self.index, ALL_TABLES)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        errors.extend(self._wake(self.watches.all_handles()))
        return errors

    # --- waking watches ---

    def _wake(self, handles: list[WatchHandle]) -> list[BaseException]:
        if self._defer is None:
            return self.watches.fire(handles)
        queue = self._wake_queue
        for handle in handles:
            queue.setdefault(id(handle), handle)  # woken twice before it fired: once
        if not self._wake_scheduled:
            self._wake_scheduled = True
            # Two hops: the first runs in the turn that committed (a reactor runs the calls
            # scheduled while it handled threads' results in that same pass), the second after
            # the reactor flushed its sockets, so the writer's answer leaves before any waiter's.
            self._defer(lambda: self._defer(self._drain))
        return []

    def _drain(self) -> None:
        queue = self._wake_queue
        batch = [queue.pop(key) for key in list(islice(queue, WAKE_BATCH))]
        # A handle cancelled while queued (its reader went away) is skipped by `fire`.
        for error in self.watches.fire(batch):
            self.report_error(error)
        if queue:
            self._defer(self._drain)
        else:
            self._wake_scheduled = False

    def pending_wakeups(self) -> int:
        """Watches woken by a commit that have not fired yet."""
        return len(self._wake_queue)

    # --- reads ---

    def watch(self, callback: Callable[[], None], tables=(), kv_prefixes=()) -> WatchHandle:
        return self.watches.watch(callback, tables, kv_prefixes)

    def table_index(self, *tables: str) -> int:
        index = 0
        for table in tables:
            if table == KVS:
                index = max(index, self.kv.index)
            elif table == SESSIONS:
                index = max(index, self.sessions.index)
            else:
                index = max(index, self.catalog.table_index[table])
        return index
