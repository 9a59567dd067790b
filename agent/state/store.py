"""The state store: catalog and KV tables under one index, with watches.

Only the FSM writes here, one log entry at a time: it calls the table writers with the entry's
index and then `commit(index)`, which advances the global index and wakes the watches the entry
touched. Readers get `(index, rows)` pairs whose index follows Consul's rules per endpoint.
"""

from __future__ import annotations

from typing import Callable

from agent.state.catalog import CHECKS, NODES, SERVICES, CatalogTables
from agent.state.kv import KVS, KVTable
from agent.state.watch import WatchHandle, WatchRegistry

CATALOG_TABLES = (NODES, SERVICES, CHECKS)


class StateStore:
    def __init__(self) -> None:
        self.index = 0
        self.watches = WatchRegistry()
        self._touched_tables: set[str] = set()
        self._touched_keys: list[str] = []
        self.reset_tables()
        self.on_commit: list[Callable[[int, frozenset[str]], None]] = []

    def reset_tables(self) -> None:
        """Empty every table (a restore fills them again); watches are kept."""
        self.catalog = CatalogTables(self._touched_tables.add)
        self.kv = KVTable(self._touched_tables.add, self._touched_keys.append)

    def wake_all(self) -> list[BaseException]:
        """Fire every watch and change listener, as after a restore."""
        self._touched_tables.update(CATALOG_TABLES + (KVS,))
        handles = self.watches.all_handles()
        self._touched_keys.clear()
        self._touched_tables.clear()
        errors = self.watches.fire(handles)
        for listener in self.on_commit:
            try:
                listener(self.index, frozenset(CATALOG_TABLES + (KVS,)))
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

    def watch(self, callback: Callable[[], None], tables=(), kv_prefixes=()) -> WatchHandle:
        return self.watches.watch(callback, tables, kv_prefixes)

    def table_index(self, *tables: str) -> int:
        index = 0
        for table in tables:
            index = max(index, self.kv.index if table == KVS else self.catalog.table_index[table])
        return index
