"""Lifeguard's local health score (memberlist's awareness).

A node that misses acks it should have got, or has to refute accusations, is probably the slow
one itself; it then stretches its probe interval so it accuses others less eagerly. The score
lives in [0, max - 1]; 0 is healthy.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError("max_multiplier must be >= 1")
        self._max = max_multiplier
        self._score = 0

    @property
    def score(self) -> int:
        return self._score

    def apply_delta(self, delta: int) -> None:
        """Move the score by `delta`, clamped to [0, max - 1]."""
        self._score = min(max(self._score + delta, 0), self._max - 1)

    def scale(self, timeout: float) -> float:
        """`timeout` stretched by the current score: timeout * (score + 1)."""
        return timeout * (self._score + 1)
