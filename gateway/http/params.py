"""Parsing of what every endpoint shares: dc, token, index/wait (blocking), consistency mode,
max_stale, filter, cached, pretty — into the core's `QueryOptions`.

Only parsing and Consul's parse errors live here; what the values mean (default wait, cap,
jitter, the consistency modes) is the core's (agent.rpc).
"""

from __future__ import annotations

from typing import Any

from agent.errors import InvalidRequest
from agent.facade import CONSISTENT, DEFAULT, STALE, QueryOptions, parse_duration
from gateway.http.decode import parse_uint64


class QueryParams:
    __slots__ = ("options", "pretty")

    def __init__(self, options: QueryOptions, pretty: bool) -> None:
        self.options = options
        self.pretty = pretty

    @property
    def dc(self) -> str:
        return self.options.datacenter

    @property
    def consistency(self) -> str:
        return self.options.consistency


def _duration(text: str, message: str) -> float:
    # As Consul's parseWait: Go's duration syntax, where a negative value means "not given".
    negative = text.startswith("-")
    try:
        value = parse_duration(text[1:] if negative else text)
    except InvalidRequest:
        raise InvalidRequest(message) from None
    return 0.0 if negative else value


def token_of(query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """The request's ACL token, as Consul's parseToken finds it: ?token, X-Consul-Token, then
    `Authorization: Bearer`."""
    if query.get("token"):
        return query["token"][0]
    token = headers.get("x-consul-token", "")
    if token:
        return token
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def discovery_max_stale_of(config: Any) -> float:
    """`discovery_max_stale` in seconds (0: off, Consul's default)."""
    raw = (getattr(config, "settings", None) or {}).get("discovery_max_stale")
    if not raw:
        return 0.0
    try:
        return float(parse_duration(raw))
    except (InvalidRequest, ValueError, TypeError):
        return 0.0


# Consul's discovery endpoints: with `discovery_max_stale`, a read there that names no
# consistency mode is served stale within it.
DISCOVERY_PREFIXES = ("/v1/catalog", "/v1/health")


def parse_query_params(query: dict[str, list[str]], headers: dict[str, str],
                       pretty_default: bool, *, path: str = "",
                       discovery_max_stale: float = 0.0) -> QueryParams:
    dc = query["dc"][0] if "dc" in query else ""
    # An empty value counts as not given; `index` is a uint64.
    text = query["wait"][0] if "wait" in query else ""
    wait = _duration(text, "Invalid wait time") if text else 0.0
    min_index = 0
    text = query["index"][0] if "index" in query else ""
    if text:
        parsed = parse_uint64(text)
        if parsed is None:
            raise InvalidRequest("Invalid index")
        min_index = parsed
    stale = "stale" in query
    consistent = "consistent" in query
    if stale and consistent:
        raise InvalidRequest("Cannot specify ?stale with ?consistent, conflicting semantics.")
    consistency = STALE if stale else CONSISTENT if consistent else DEFAULT
    text = query["max_stale"][0] if "max_stale" in query else ""
    max_stale = _duration(text, "Invalid max_stale value") if text else 0.0
    if max_stale > 0:
        if consistent:  # Consul: a max_stale allows stale reads, which ?consistent forbids
            raise InvalidRequest("Cannot specify ?stale with ?consistent, conflicting "
                                 "semantics.")
        consistency = STALE
    chosen = stale or consistent or "leader" in query or "cached" in query or max_stale > 0
    if (not chosen and discovery_max_stale > 0 and path.startswith(DISCOVERY_PREFIXES)):
        consistency, max_stale = STALE, discovery_max_stale
    cached = "cached" in query
    max_age = 0.0
    if cached:
        for directive in headers.get("cache-control", "").split(","):
            name, _, value = directive.strip().partition("=")
            if name.lower() == "max-age" and value:
                if not value.isdigit():
                    raise InvalidRequest("Invalid max-age value in Cache-Control header")
                max_age = float(value[:12])
    if cached and consistent:
        raise InvalidRequest("Cannot specify ?cached with ?consistent, conflicting semantics.")
    options = QueryOptions(datacenter=dc, token=token_of(query, headers),
                           consistency=consistency, max_stale=max_stale, min_index=min_index,
                           wait=wait, filter=query["filter"][0] if "filter" in query else "",
                           use_cache=cached, max_age=max_age)
    return QueryParams(options, pretty_default or "pretty" in query)
