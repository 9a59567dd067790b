"""The KV table: entries kept in key order for prefix scans, plus tombstones of deleted keys,
and the write rules (set, cas, lock, unlock, deletes) shared with transactions.

Tombstones let a blocking query on a prefix see a later index after a key under it was deleted,
as Consul's graveyard does; without them the prefix's index would go backwards. The leader's
tombstone GC reaps them after a while (a `TombstoneReap` entry); the highest index reaped is
kept, and a prefix never reports less than it, so reaping cannot move an index backwards either.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace
from typing import Callable, Protocol

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
    """Entries by key, the keys in order, tombstones, and which keys each session holds.

    `lookup`/`put`/`remove`/`keys_under` are the raw row operations; the Consul write rules
    (`write_set`, `write_lock`, ...) are module functions over them, so a transaction can run the
    same rules against an overlay and apply its changes only when every operation succeeded.
    """

    def __init__(self, touch: Callable[[str], None], touch_key: Callable[[str], None]) -> None:
        self._touch = touch
        self._touch_key = touch_key
        self.entries: dict[str, KVEntry] = {}
        self.order = SortedKeys()
        self.tombstones: dict[str, int] = {}
        self.tomb_order = SortedKeys()
        self.by_session: dict[str, set[str]] = {}  # session id -> keys it holds
        self.index = 0  # the table's index, deletes included
        self.reaped_index = 0  # the highest tombstone index reaped so far

    def _changed(self, key: str, index: int) -> None:
        self.index = index
        self._touch(KVS)
        self._touch_key(key)

    # --- raw rows ---

    def lookup(self, key: str) -> KVEntry | None:
        return self.entries.get(key)

    def keys_under(self, prefix: str) -> list[str]:
        return self.order.with_prefix(prefix)

    def put(self, entry: KVEntry, index: int) -> None:
        """Store `entry` as given (its indexes already set) and mark it changed at `index`."""
        old = self.entries.get(entry.key)
        if old is None:
            self.order.add(entry.key)
            if self.tombstones.pop(entry.key, None) is not None:
                self.tomb_order.remove(entry.key)
        elif old.session and old.session != entry.session:
            self._unhold(old)
        if entry.session:
            self.by_session.setdefault(entry.session, set()).add(entry.key)
        self.entries[entry.key] = entry
        self._changed(entry.key, index)

    def remove(self, key: str, index: int) -> None:
        """Delete `key`, leaving a tombstone at `index`; a missing key changes nothing."""
        old = self.entries.pop(key, None)
        if old is None:
            return
        if old.session:
            self._unhold(old)
        self.order.remove(key)
        self.tombstones[key] = index
        self.tomb_order.add(key)
        self._changed(key, index)

    def restore(self, entry: KVEntry) -> None:
        """Load a row from a snapshot (no index change, no watch)."""
        self.entries[entry.key] = entry
        self.order.add(entry.key)
        if entry.session:
            self.by_session.setdefault(entry.session, set()).add(entry.key)

    def reap_tombstones(self, upto: int) -> int:
        """Drop the tombstones at or below index `upto`; returns how many went. Nothing a
        reader sees changes (see `_prefix_index`), so no watch is woken."""
        doomed = [key for key, index in self.tombstones.items() if index <= upto]
        for key in doomed:
            self.reaped_index = max(self.reaped_index, self.tombstones.pop(key))
            self.tomb_order.remove(key)
        return len(doomed)

    def _unhold(self, entry: KVEntry) -> None:
        held = self.by_session.get(entry.session)
        if held is not None:
            held.discard(entry.key)
            if not held:
                del self.by_session[entry.session]

    def held_by(self, session_id: str) -> list[str]:
        """The keys `session_id` holds a lock on, in key order."""
        return sorted(self.by_session.get(session_id, ()))

    # --- writes with Consul's rules ---

    def set(self, entry: KVEntry, index: int) -> None:
        write_set(self, entry, index)

    def cas(self, entry: KVEntry, expected_index: int, index: int) -> bool:
        """Set only if the entry's ModifyIndex is `expected_index` (0: only if absent)."""
        return write_cas(self, entry, expected_index, index) is not None

    def delete(self, key: str, index: int) -> None:
        self.remove(key, index)

    def delete_cas(self, key: str, expected_index: int, index: int) -> bool:
        return write_delete_cas(self, key, expected_index, index)

    def delete_tree(self, prefix: str, index: int) -> None:
        for key in list(self.order.with_prefix(prefix)):
            self.remove(key, index)

    def lock(self, entry: KVEntry, index: int) -> bool:
        """Acquire `entry.key` for `entry.session` (the caller checked the session exists)."""
        return write_lock(self, entry, index) is not None

    def unlock(self, entry: KVEntry, index: int) -> bool:
        return write_unlock(self, entry, index) is not None

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
        if not index:
            return self.index
        # A reaped tombstone under the prefix may have given the highest index: never report
        # less than any reaped one (after a reap, a few prefixes jump ahead, none go back).
        return max(index, self.reaped_index)


class Rows(Protocol):
    """What the write rules need: a KV table, or a transaction's overlay on one."""

    def lookup(self, key: str) -> KVEntry | None: ...

    def keys_under(self, prefix: str) -> list[str]: ...

    def put(self, entry: KVEntry, index: int) -> None: ...

    def remove(self, key: str, index: int) -> None: ...


def write_set(rows: Rows, entry: KVEntry, index: int) -> KVEntry:
    """A plain write; it keeps an existing lock (only acquire/release change LockIndex and
    Session)."""
    old = rows.lookup(entry.key)
    if old is None:
        entry = replace(entry, create_index=index, modify_index=index, lock_index=0, session="")
    else:
        entry = replace(entry, create_index=old.create_index, modify_index=index,
                        lock_index=old.lock_index, session=old.session)
    rows.put(entry, index)
    return entry


def write_cas(rows: Rows, entry: KVEntry, expected_index: int, index: int) -> KVEntry | None:
    """Set only if the entry's ModifyIndex is `expected_index` (0: only if absent)."""
    old = rows.lookup(entry.key)
    if expected_index == 0:
        if old is not None:
            return None
    elif old is None or old.modify_index != expected_index:
        return None
    return write_set(rows, entry, index)


def write_delete_cas(rows: Rows, key: str, expected_index: int, index: int) -> bool:
    old = rows.lookup(key)
    if old is None:
        # Deleting what is not there succeeds only when the caller expected nothing.
        return expected_index == 0
    if old.modify_index != expected_index:
        return False
    rows.remove(key, index)
    return True


def write_delete_tree(rows: Rows, prefix: str, index: int) -> None:
    for key in list(rows.keys_under(prefix)):
        rows.remove(key, index)


def write_lock(rows: Rows, entry: KVEntry, index: int) -> KVEntry | None:
    """Acquire: None when another session holds the key. LockIndex counts acquisitions; the
    holder acquiring again only updates the value and flags."""
    old = rows.lookup(entry.key)
    if old is None:
        entry = replace(entry, create_index=index, modify_index=index, lock_index=1)
    elif old.session == entry.session:
        entry = replace(entry, create_index=old.create_index, modify_index=index,
                        lock_index=old.lock_index)
    elif old.session:
        return None
    else:
        entry = replace(entry, create_index=old.create_index, modify_index=index,
                        lock_index=old.lock_index + 1)
    rows.put(entry, index)
    return entry


def write_unlock(rows: Rows, entry: KVEntry, index: int) -> KVEntry | None:
    """Release: None unless `entry.session` holds the key. The value and flags are written too."""
    old = rows.lookup(entry.key)
    if old is None or old.session != entry.session:
        return None
    entry = replace(entry, session="", lock_index=old.lock_index,
                    create_index=old.create_index, modify_index=index)
    rows.put(entry, index)
    return entry
