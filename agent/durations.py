"""Durations as Consul's JSON takes them: Go's syntax in strings, nanoseconds in numbers."""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from typing import Any

from agent.errors import InvalidRequest

_UNIT_NANOS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, as Go accepts
    "\u03bcs": 1_000,  # Greek mu, as Go accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_NANOS = 2**63 - 1  # Go's time.Duration is an int64 count of nanoseconds
_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def parse_duration(value: Any) -> float:
    """Seconds in a duration written as Consul's JSON API takes it.

    A string uses Go's syntax ("300ms", "1.5h", "2h45m15s", "0"); a number counts nanoseconds.
    Negative, malformed and out-of-range values raise `InvalidRequest` naming the value.
    """
    if isinstance(value, str):
        nanos: int | Fraction = _go_duration_nanos(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > _MAX_NANOS:
            raise InvalidRequest(f"invalid duration {value!r}")
        nanos = int(value)  # Go truncates the float toward zero
    else:
        raise InvalidRequest(f"invalid duration {show(value)}")
    if nanos < 0:
        raise InvalidRequest(f"invalid duration {show(value)}: must not be negative")
    return nanos / 1_000_000_000


def _go_duration_nanos(text: str) -> int:
    def invalid(reason: str = "") -> InvalidRequest:
        return InvalidRequest(f"invalid duration {show(text)}" + (f": {reason}" if reason else ""))

    body, sign = text, 1
    if body[:1] in ("+", "-") and body:
        sign, body = (-1 if body[0] == "-" else 1), body[1:]
    if body == "0":
        return 0
    if not body:
        raise invalid()
    total = Fraction(0)
    position = 0
    while position < len(body):
        match = _COMPONENT.match(body, position)
        whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
        if not whole and not fraction:
            raise invalid()
        if not unit:
            raise invalid("missing unit")
        if unit not in _UNIT_NANOS:
            raise invalid(f"unknown unit {show(unit)}")
        # int() raises ValueError past 4,300 digits (a 500): more than 20 whole digits is out
        # of range anyway, and digits of a fraction past the 30th cannot change a nanosecond.
        if len(whole.lstrip("0")) > 20:
            raise invalid("out of range")
        fraction = fraction[:30]
        number = Fraction(int(whole or "0"))
        if fraction:
            number += Fraction(int(fraction), 10 ** len(fraction))
        total += number * _UNIT_NANOS[unit]
        if total > _MAX_NANOS:
            raise invalid("out of range")
        position = match.end()
    return sign * math.floor(total)


def show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def go_duration(seconds: float) -> str:
    """`seconds` as Go's ``time.Duration.String()`` prints it ("500ms", "30s", "1m30s")."""
    nanos = round(seconds * 1_000_000_000)
    if nanos == 0:
        return "0s"
    sign, nanos = ("-" if nanos < 0 else ""), abs(nanos)
    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return f"{sign}{_decimal(nanos, 1_000)}\u00b5s"
    if nanos < 1_000_000_000:
        return f"{sign}{_decimal(nanos, 1_000_000)}ms"
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{_decimal(rest, 1_000_000_000)}s"
    if hours:
        text = f"{hours}h{minutes}m{text}"
    elif minutes:
        text = f"{minutes}m{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, fraction = divmod(value, unit)
    digits = str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)
