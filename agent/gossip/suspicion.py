"""Lifeguard's suspicion timer as a value: when a suspected node is declared dead.

The timer starts at `max` and falls towards `min` on a log scale as independent peers confirm
the suspicion, reaching `min` after `k` confirmations. The arithmetic follows memberlist 0.2.2
(suspicionTimeout, remainingSuspicionTime) exactly, including its truncations to whole
milliseconds, so the same cluster size gives the same deadlines as a Go agent. Time is passed in.
"""

from __future__ import annotations

import math

_NS = 1_000_000_000
_MS = 1_000_000


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """The minimum suspicion timeout for `n` members: mult * max(1, log10(n)) * interval."""
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    interval_ns = round(interval * _NS)
    # Go multiplies Durations (int64 ns) and truncates the scale to thousandths first.
    timeout_ns = suspicion_mult * int(node_scale * 1000) * interval_ns // 1000
    return timeout_ns / _NS


def remaining_suspicion_time(n: int, k: int, elapsed: float, min_: float, max_: float) -> float:
    """Seconds left (may be negative) after `n` of `k` wanted confirmations, `elapsed` in."""
    frac = math.log(n + 1.0) / math.log(k + 1.0)
    raw = max_ - frac * (max_ - min_)
    timeout_ns = math.floor(1000.0 * raw) * _MS
    timeout_ns = max(timeout_ns, round(min_ * _NS))
    return timeout_ns / _NS - elapsed


class Suspicion:
    """One suspected node's timer. `deadline` is when it becomes dead unless refuted."""

    __slots__ = ("k", "min", "max", "start", "deadline", "confirmations", "_seen")

    def __init__(self, source: str, k: int, min_: float, max_: float, now: float) -> None:
        self.k = k
        self.min = min_
        self.max = max_
        self.start = now
        self.confirmations = 0
        # The accuser does not count as a confirmation: its own message may come back to us.
        self._seen = {source}
        self.deadline = now + (max_ if k >= 1 else min_)

    def confirm(self, source: str, now: float) -> bool:
        """Count `source`'s independent confirmation; True if it was new (worth re-gossiping)."""
        if self.confirmations >= self.k or source in self._seen:
            return False
        self._seen.add(source)
        self.confirmations += 1
        remaining = remaining_suspicion_time(self.confirmations, self.k, now - self.start,
                                             self.min, self.max)
        # Past-due deadlines fire at the next advance, as Go fires the timer at once.
        self.deadline = now + remaining
        return True
