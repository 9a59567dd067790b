"""Parsing of the query parameters every endpoint shares: dc, index, wait, consistency, pretty."""

from __future__ import annotations

import random

from agent.durations import parse_duration
from agent.errors import InvalidRequest

DEFAULT_WAIT = 300.0  # Consul's default query time (5m)
MAX_WAIT = 600.0  # and its cap (10m)
JITTER_FRACTION = 16  # Consul adds up to wait/16 so parked queries do not all return together

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
            wait = parse_duration(query["wait"][0])
        except InvalidRequest:
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
