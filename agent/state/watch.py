"""Watches on the state store: who to wake when a table or a KV prefix changes.

Blocking queries, the DNS answer cache and plugins' change feeds park here instead of polling.
A watch fires once and is then forgotten; the waiter re-reads and registers again if it still
needs to wait. Firing is deferred to the end of the write that caused it, so a waiter never sees
half of a multi-row change.
"""

from __future__ import annotations

from typing import Callable, Iterable


class WatchHandle:
    """One registration; `cancel()` drops it without firing."""

    __slots__ = ("callback", "_registry", "_tables", "_prefixes", "active")

    def __init__(self, registry: "WatchRegistry", callback: Callable[[], None],
                 tables: tuple[str, ...], prefixes: tuple[str, ...]) -> None:
        self.callback = callback
        self._registry = registry
        self._tables = tables
        self._prefixes = prefixes
        self.active = True

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._registry._remove(self)


class WatchRegistry:
    """Watches keyed by table name and by KV key prefix."""

    def __init__(self) -> None:
        self._by_table: dict[str, set[WatchHandle]] = {}
        self._by_prefix: dict[str, set[WatchHandle]] = {}

    def watch(self, callback: Callable[[], None], tables: Iterable[str] = (),
              kv_prefixes: Iterable[str] = ()) -> WatchHandle:
        """Call `callback()` once, the next time any named table or KV prefix changes."""
        handle = WatchHandle(self, callback, tuple(tables), tuple(kv_prefixes))
        for table in handle._tables:
            self._by_table.setdefault(table, set()).add(handle)
        for prefix in handle._prefixes:
            self._by_prefix.setdefault(prefix, set()).add(handle)
        return handle

    def _remove(self, handle: WatchHandle) -> None:
        for table in handle._tables:
            group = self._by_table.get(table)
            if group is not None:
                group.discard(handle)
                if not group:
                    del self._by_table[table]
        for prefix in handle._prefixes:
            group = self._by_prefix.get(prefix)
            if group is not None:
                group.discard(handle)
                if not group:
                    del self._by_prefix[prefix]

    def collect(self, tables: Iterable[str], kv_keys: Iterable[str]) -> list[WatchHandle]:
        """The handles a change to these tables and keys wakes (not yet fired)."""
        found: dict[int, WatchHandle] = {}
        for table in tables:
            for handle in self._by_table.get(table, ()):
                found[id(handle)] = handle
        if self._by_prefix:
            for key in kv_keys:
                # Every prefix of the key, the empty one included, may be watched.
                for end in range(len(key) + 1):
                    group = self._by_prefix.get(key[:end])
                    if group:
                        for handle in group:
                            found[id(handle)] = handle
        return list(found.values())

    def all_handles(self) -> list[WatchHandle]:
        found = {id(h): h for g in self._by_table.values() for h in g}
        found.update({id(h): h for g in self._by_prefix.values() for h in g})
        return list(found.values())

    @staticmethod
    def fire(handles: list[WatchHandle]) -> list[BaseException]:
        """Fire each handle once; one failing waiter must not starve the others, so errors are
        collected and returned for the caller to log."""
        errors: list[BaseException] = []
        for handle in handles:
            if handle.active:
                handle.cancel()
                try:
                    handle.callback()
                except Exception as exc:  # noqa: BLE001 - reported by the caller
                    errors.append(exc)
        return errors

    def __len__(self) -> int:
        return len(self.all_handles())
