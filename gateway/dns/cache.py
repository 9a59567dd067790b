"""The answer cache: encoded answers keyed by the query's bytes (less its ID).

An answer is encoded once and reused, the ID patched per query, until the catalog changes
(the epoch moves). Answers listing several instances keep a few shuffled variants and rotate
through them, so clients still see a different order each time. Entries of an old epoch are
kept for serving stale (RFC 8767) when no fresh answer can be had.
"""

from __future__ import annotations

from typing import Any

VARIANTS = 8  # shuffled encodings kept per answer
LIMIT = 50_000  # entries before the cache is emptied (random names must not grow it forever)


class Entry:
    __slots__ = ("epoch", "variants", "turn", "shuffle", "question", "answer")

    def __init__(self, epoch: int, encoded: bytes, shuffle: bool, question: Any, answer: Any) -> None:
        self.epoch = epoch
        self.variants = [encoded]
        self.turn = 0
        self.shuffle = shuffle
        self.question = question
        self.answer = answer

    def next_variant(self) -> bytes:
        variants = self.variants
        self.turn = turn = (self.turn + 1) % len(variants)
        return variants[turn]


class AnswerCache:
    def __init__(self, limit: int = LIMIT) -> None:
        self.epoch = 0
        self.limit = limit
        self.entries: dict[bytes, Entry] = {}

    def invalidate(self) -> None:
        """The catalog changed: every entry is now only good for serving stale."""
        self.epoch += 1

    def store(self, key: bytes, encoded: bytes, shuffle: bool, question: Any, answer: Any) -> Entry:
        if len(self.entries) >= self.limit:
            self.entries.clear()
        entry = Entry(self.epoch, encoded, shuffle, question, answer)
        self.entries[key] = entry
        return entry
