"""The state store: catalog, KV and session tables under one index, with watches.

Only the FSM writes here, one log entry at a time: it calls the table writers with the entry's
index and then `commit(index)`, which advances the global index and wakes the watches the entry
touched. Readers get `(index, rows)` pairs whose index follows Consul's rules per endpoint.
"""

from __future__ import annotations

from typing import Callable

from agent.state.catalog import CHECKS, NODES, SERVICES, CatalogTables
from agent.state.kv import KVS, KVTable
from agent.state.sessions import SESSIONS, SessionTable
from agent.state.watch import WatchHandle, WatchRegistry

CATALOG_TABLES = (NODES, SERVICES, CHECKS)


class StateStore:
    def __init__(self) -> None:
        self.index = 0
        self.watches = WatchRegistry()
        self._touched_tables: set[str] = set()
        self._touched_keys: list[str] = []
        self._lock_delays: list[tuple[str, float]] = []
        self.reset_tables()
        self.on_commit: list[Callable[[int, frozenset[str]], None]] = []
        # Told (key, seconds) when a destroyed session lets go of a key, once the entry commits;
        # the leader keeps lock-delays in memory, as Consul does (they are not replicated).
        self.lock_delay_listener: Callable[[str, float], None] | None = None

    def reset_tables(self) -> None:
        """Empty every table (a restore fills them again); watches are kept."""
        self.catalog = CatalogTables(self._touched_tables.add)
        self.kv = KVTable(self._touched_tables.add, self._touched_keys.append)
        self.sessions = SessionTable(self._touched_tables.add)

    def note_lock_delay(self, key: str, seconds: float) -> None:
        """A session holding `key` was destroyed by the entry being applied."""
        self._lock_delays.append((key, seconds))

    def wake_all(self) -> list[BaseException]:
        """Fire every watch and change listener, as after a restore."""
        self._touched_tables.update(CATALOG_TABLES + (KVS, SESSIONS))
        handles = self.watches.all_handles()
        self._touched_keys.clear()
        self._touched_tables.clear()
        errors = self.watches.fire(handles)
        for listener in self.on_commit:
            try:
                listener(self.index, frozenset(CATALOG_TABLES + (KVS, SESSIONS)))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        return errors

    def commit(self, index: int) -> list[BaseException]:
        """Finish the entry at `index`: advance the index and wake what it touched.

        Returns the errors raised by woken callbacks, for the caller to log.
        """
        if index > self.index:
            self.index = index
        tables = frozenset(self._touched_tables)
        if self._lock_delays:
            # Before any watcher wakes: one may try to take the released key at once.
            delays, self._lock_delays = self._lock_delays, []
            if self.lock_delay_listener is not None:
                for key, seconds in delays:
                    self.lock_delay_listener(key, seconds)
        handles = self.watches.collect(tables, self._touched_keys)
        self._touched_tables.clear()
        self._touched_keys.clear()
        errors = self.watches.fire(handles)
        if tables:
            for listener in self.on_commit:
                try:
                    listener(index, tables)
                except Exception as exc:  # noqa: BLE001 - reported by the caller
                    errors.append(exc)
        return errors

    def discard_pending(self) -> None:
        """Forget what a failed entry marked as touched (it changed nothing)."""
        self._touched_tables.clear()
        self._touched_keys.clear()
        self._lock_delays.clear()

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
