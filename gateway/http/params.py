"""Parsing of the query parameters every endpoint shares: dc, index, wait, consistency, pretty."""

from __future__ import annotations

import random
import re

from agent.errors import InvalidRequest

DEFAULT_WAIT = 300.0  # Consul's default query time (5m)
MAX_WAIT = 600.0  # and its cap (10m)
JITTER_FRACTION = 16  # Consul adds up to wait/16 so parked queries do not all return together

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration: "10s", "1m30s", "300ms", "0"; raises ValueError."""
    if text in ("0", "+0", "-0"):
        return 0.0
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


class QueryParams:
    __slots__ = ("dc", "min_index", "wait", "consistency", "pretty")

    def __init__(self, dc: str, min_index: int, wait: float, consistency: str, pretty: bool) -> None:
        self.dc = dc
        self.min_index = min_index
        self.wait = wait
        self.consistency = consistency
        self.pretty = pretty


def parse_query_params(query: dict[str, list[str]], pretty_default: bool, rng: random.Random) -> QueryParams:
    dc = query["dc"][0] if "dc" in query else ""
    min_index = 0
    wait = 0.0
    if "index" in query:
        try:
            min_index = int(query["index"][0])
            if min_index < 0:
                raise ValueError
        except ValueError:
            raise InvalidRequest("Invalid index") from None
        wait = DEFAULT_WAIT
    if "wait" in query:
        try:
            wait = parse_go_duration(query["wait"][0])
            if wait < 0:
                raise ValueError
        except ValueError:
            raise InvalidRequest("Invalid wait time") from None
    if min_index:
        wait = min(wait or DEFAULT_WAIT, MAX_WAIT)
        wait += rng.random() * wait / JITTER_FRACTION
    stale = "stale" in query
    consistent = "consistent" in query
    if stale and consistent:
        raise InvalidRequest("Cannot specify ?stale with ?consistent, conflicting semantics.")
    consistency = "stale" if stale else "consistent" if consistent else "leader"
    pretty = pretty_default or "pretty" in query
    return QueryParams(dc, min_index, wait, consistency, pretty)
