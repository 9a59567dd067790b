"""Waiting for real processes to get somewhere: poll against a deadline, never sleep-and-hope."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(what: str, check: Callable[[], Any], timeout: float = 30.0, *,
               interval: float = 0.1, tolerate: tuple[type[BaseException], ...] = ()) -> Any:
    """Call `check` until it returns something truthy and return that; fail naming `what` and
    the last value (or the last tolerated exception) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except tolerate as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: still {last!r} after {timeout:g} s")
        time.sleep(interval)
