"""Parsing of the query parameters every endpoint shares: dc, index, wait, consistency, pretty."""

from __future__ import annotations

import random

from agent.facade import parse_duration
from agent.errors import InvalidRequest
from gateway.http.decode import parse_uint64

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
    # As Consul's parseWait: an empty value counts as not given, `index` is a uint64 and
    # `wait` is Go's duration syntax, where a negative wait means the default.
    text = query["wait"][0] if "wait" in query else ""
    if text:
        negative = text.startswith("-")
        try:
            wait = parse_duration(text[1:] if negative else text)
        except InvalidRequest:
            raise InvalidRequest("Invalid wait time") from None
        if negative:
            wait = 0.0
    text = query["index"][0] if "index" in query else ""
    if text:
        parsed = parse_uint64(text)
        if parsed is None:
            raise InvalidRequest("Invalid index")
        min_index = parsed
    if min_index:
        if wait <= 0:
            wait = DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
        wait += rng.random() * wait / JITTER_FRACTION
    stale = "stale" in query
    consistent = "consistent" in query
    if stale and consistent:
        raise InvalidRequest("Cannot specify ?stale with ?consistent, conflicting semantics.")
    consistency = "stale" if stale else "consistent" if consistent else "leader"
    pretty = pretty_default or "pretty" in query
    return QueryParams(dc, min_index, wait, consistency, pretty)
