"""The KV table: entries kept in key order for prefix scans, plus tombstones of deleted keys.

Tombstones let a blocking query on a prefix see a later index after a key under it was deleted,
as Consul's graveyard does; without them the prefix's index would go backwards.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace
from typing import Callable

from agent.structs import KVEntry

KVS = "kvs"


class SortedKeys:
    """A sorted list of strings with prefix ranges; insertion is a memmove, fine at our sizes."""

    __slots__ = ("keys",)

    def __init__(self) -> None:
        self.keys: list[str] = []

    def add(self, key: str) -> None:
        i = bisect_left(self.keys, key)
        if i == len(self.keys) or self.keys[i] != key:
            self.keys.insert(i, key)

    def remove(self, key: str) -> None:
        i = bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            del self.keys[i]

    def with_prefix(self, prefix: str) -> list[str]:
        keys = self.keys
        start = bisect_left(keys, prefix)
        end = start
        n = len(keys)
        while end < n and keys[end].startswith(prefix):
            end += 1
        return keys[start:end]


class KVTable:
    def __init__(self, touch: Callable[[str], None], touch_key: Callable[[str], None]) -> None:
        self._touch = touch
        self._touch_key = touch_key
        self.entries: dict[str, KVEntry] = {}
        self.order = SortedKeys()
        self.tombstones: dict[str, int] = {}
        self.tomb_order = SortedKeys()
        self.index = 0  # the table's index, deletes included

    def _changed(self, key: str, index: int) -> None:
        self.index = index
        self._touch(KVS)
        self._touch_key(key)

    # --- writes ---

    def set(self, entry: KVEntry, index: int) -> None:
        old = self.entries.get(entry.key)
        if old is None:
            entry = replace(entry, create_index=index, modify_index=index)
            self.order.add(entry.key)
            if self.tombstones.pop(entry.key, None) is not None:
                self.tomb_order.remove(entry.key)
        else:
            # A plain write keeps the lock: only acquire/release change LockIndex and Session.
            entry = replace(entry, create_index=old.create_index, modify_index=index,
                            lock_index=old.lock_index, session=old.session)
        self.entries[entry.key] = entry
        self._changed(entry.key, index)

    def cas(self, entry: KVEntry, expected_index: int, index: int) -> bool:
        """Set only if the entry's ModifyIndex is `expected_index` (0: only if absent)."""
        old = self.entries.get(entry.key)
        if expected_index == 0:
            if old is not None:
                return False
        elif old is None or old.modify_index != expected_index:
            return False
        self.set(entry, index)
        return True

    def delete(self, key: str, index: int) -> None:
        if self.entries.pop(key, None) is None:
            return
        self.order.remove(key)
        self.tombstones[key] = index
        self.tomb_order.add(key)
        self._changed(key, index)

    def delete_cas(self, key: str, expected_index: int, index: int) -> bool:
        old = self.entries.get(key)
        if old is None:
            # Deleting what is not there succeeds only when the caller expected nothing.
            return expected_index == 0
        if old.modify_index != expected_index:
            return False
        self.delete(key, index)
        return True

    def delete_tree(self, prefix: str, index: int) -> None:
        for key in self.order.with_prefix(prefix):
            self.delete(key, index)

    # --- reads ---

    def get(self, key: str) -> tuple[int, KVEntry | None]:
        entry = self.entries.get(key)
        if entry is not None:
            return entry.modify_index, entry
        return self.index, None

    def list(self, prefix: str) -> tuple[int, list[KVEntry]]:
        entries = [self.entries[k] for k in self.order.with_prefix(prefix)]
        return self._prefix_index(prefix, entries), entries

    def keys(self, prefix: str, separator: str = "") -> tuple[int, list[str]]:
        keys = self.order.with_prefix(prefix)
        index = self._prefix_index(prefix, [self.entries[k] for k in keys])
        if not separator:
            return index, list(keys)
        result: list[str] = []
        start = len(prefix)
        for key in keys:
            cut = key.find(separator, start)
            if cut >= 0:
                key = key[:cut + len(separator)]
            if not result or result[-1] != key:
                result.append(key)
        return index, result

    def _prefix_index(self, prefix: str, entries: list[KVEntry]) -> int:
        index = max((e.modify_index for e in entries), default=0)
        for key in self.tomb_order.with_prefix(prefix):
            index = max(index, self.tombstones[key])
        return index or self.index
