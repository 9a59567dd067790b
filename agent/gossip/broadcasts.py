"""memberlist's TransmitLimitedQueue: the broadcasts that ride piggybacked on packets. SWIM
queues its alive/suspect/dead messages here, and Serf its intents, events and queries (Serf
uses memberlist's queue too, with every broadcast unnamed).

Each broadcast is sent retransmit_mult * ceil(log10(n + 1)) times and then dropped. Broadcasts
sent fewer times go first; among equals the largest that still fits goes first, then the newest
(memberlist's btree order). A named broadcast replaces a queued one with the same name: a newer
alive/suspect/dead message about a node makes an older one pointless. Messages are values;
sizes come from the injected `size_of`, so the packet arithmetic matches the real encoding.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Callable
from typing import Any


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times a broadcast is sent in a pool of `n` members."""
    return retransmit_mult * int(math.ceil(math.log10(n + 1)))


class _Entry:
    __slots__ = ("key", "message", "name", "transmits", "on_finished")

    def __init__(self, key: tuple[int, int], message: Any, name: str | None,
                 on_finished: Callable[[], None] | None, transmits: int) -> None:
        self.key = key  # (-size, -id): ascending order is largest first, then newest first
        self.message = message
        self.name = name
        self.on_finished = on_finished
        self.transmits = transmits


class TransmitLimitedQueue:
    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int],
                 size_of: Callable[[Any], int]) -> None:
        self._mult = retransmit_mult
        self._num_nodes = num_nodes
        self._size_of = size_of
        self._levels: dict[int, list[tuple[int, int]]] = {}  # transmits -> sorted keys
        self._entries: dict[tuple[int, int], _Entry] = {}
        self._named: dict[str, _Entry] = {}
        # Ids only grow (memberlist restarts them when the queue drains; a re-inserted entry
        # could then share a key with a new one, so we do not).
        self._id = 0

    def __len__(self) -> int:
        return len(self._entries)

    def queue(self, message: Any, name: str | None = None,
              on_finished: Callable[[], None] | None = None) -> None:
        """Queue `message`; a queued broadcast with the same `name` is finished and replaced.
        `on_finished` runs once the message was sent its last time or was replaced."""
        self._id += 1
        if name is not None and name in self._named:
            old = self._named[name]
            self._remove(old)
            _finish(old)
        entry = _Entry((-self._size_of(message), -self._id), message, name, on_finished, 0)
        self._add(entry)

    def get(self, overhead: int, limit: int) -> list[Any]:
        """Take the broadcasts for one packet: each costs its size + `overhead`, all together at
        most `limit`. Each taken broadcast counts one transmission."""
        if not self._entries:
            return []
        transmit_limit = retransmit_limit(self._mult, self._num_nodes())
        used = 0
        out: list[Any] = []
        reinsert: list[_Entry] = []
        levels = sorted(t for t, keys in self._levels.items() if keys)
        for transmits in levels:
            keys = self._levels[transmits]
            while keys:
                free = limit - used - overhead
                if free <= 0:
                    break
                i = bisect_left(keys, (-free, -(2 ** 63)))
                if i == len(keys):
                    break  # nothing at this level fits
                entry = self._entries[keys[i]]
                self._remove(entry)
                used += overhead - entry.key[0]
                out.append(entry.message)
                if entry.transmits + 1 >= transmit_limit:
                    _finish(entry)
                else:
                    entry.transmits += 1
                    reinsert.append(entry)
            if limit - used - overhead <= 0:
                break
        for entry in reinsert:
            self._add(entry)
        return out

    def reset(self) -> None:
        """Drop everything queued (each counts as finished)."""
        entries = list(self._entries.values())
        self._levels.clear()
        self._entries.clear()
        self._named.clear()
        for entry in entries:
            _finish(entry)

    def prune(self, max_retain: int) -> None:
        """Keep at most `max_retain` broadcasts, dropping the most-sent (then smallest) first."""
        while len(self._entries) > max_retain:
            top = max(t for t, keys in self._levels.items() if keys)
            entry = self._entries[self._levels[top][-1]]
            self._remove(entry)
            _finish(entry)

    def _add(self, entry: _Entry) -> None:
        insort(self._levels.setdefault(entry.transmits, []), entry.key)
        self._entries[entry.key] = entry
        if entry.name is not None:
            self._named[entry.name] = entry

    def _remove(self, entry: _Entry) -> None:
        keys = self._levels[entry.transmits]
        del keys[bisect_left(keys, entry.key)]
        if not keys:
            del self._levels[entry.transmits]
        del self._entries[entry.key]
        if entry.name is not None and self._named.get(entry.name) is entry:
            del self._named[entry.name]


def _finish(entry: _Entry) -> None:
    if entry.on_finished is not None:
        callback, entry.on_finished = entry.on_finished, None
        callback()
