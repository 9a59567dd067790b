"""Query parameters, filters, timeouts and the bookkeeping of queries this node started.

A query's filters decide whether this node handles it: every node-name filter must name us and
every tag filter's regular expression must match our tag (Go's RE2, unanchored; google-re2
gives the same dialect in linear time, so a hostile pattern cannot stall the reactor). A filter
that does not decode or compile means "not for us", as in Serf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from random import Random
from typing import Mapping, Sequence

import re2

from agent.gossip.serf.codec import decode_filter, encode_filter
from agent.gossip.serf.events import Member, MemberStatus
from agent.gossip.serf.errors import SerfDecodeError
from agent.gossip.serf.messages import NodeFilter, QueryFilter, TagFilter

INTERNAL_QUERY_PREFIX = "_serf_"

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern from the network is not worth a log line


@dataclass(frozen=True, slots=True)
class QueryParams:
    filter_nodes: tuple[str, ...] = ()
    filter_tags: Mapping[str, str] = field(default_factory=dict)  # tag -> regular expression
    request_ack: bool = False
    relay_factor: int = 0
    timeout: float = 0.0  # seconds; 0 means Serf's default for the pool size

    def encode_filters(self) -> tuple[bytes, ...]:
        filters: list[QueryFilter] = []
        if self.filter_nodes:
            filters.append(NodeFilter(tuple(self.filter_nodes)))
        filters.extend(TagFilter(tag, expr) for tag, expr in self.filter_tags.items())
        return tuple(encode_filter(f) for f in filters)


def default_query_timeout(num_members: int, gossip_interval: float, timeout_mult: int) -> float:
    """GossipInterval * QueryTimeoutMult * ceil(log10(N + 1)), as Serf computes it."""
    return gossip_interval * timeout_mult * math.ceil(math.log10(num_members + 1))


def should_process(filters: Sequence[bytes], node_name: str, tags: Mapping[str, str]) -> bool:
    for raw in filters:
        try:
            filt = decode_filter(raw)
        except SerfDecodeError:
            return False
        if isinstance(filt, NodeFilter):
            if node_name not in filt.names:
                return False
        elif not _matches(filt.expr, tags.get(filt.tag, "")):
            return False
    return True


def _matches(expr: str, value: str) -> bool:
    try:
        return re2.compile(expr, options=_RE2_OPTIONS).search(value) is not None
    except (re2.error, TypeError, ValueError, UnicodeError):
        return False


def k_random_members(k: int, members: Sequence[Member], local_name: str,
                     rng: Random) -> list[Member]:
    """Up to k distinct relay candidates: alive, not us, speaking memberlist protocol >= 5
    (Serf's test on `ProtocolMax`), probing at most 3n times as Serf does."""
    chosen: list[Member] = []
    n = len(members)
    for _ in range(3 * n):
        if len(chosen) >= k:
            break
        m = members[rng.randrange(n)]
        if m.status is not MemberStatus.ALIVE or m.vsn[1] < 5 or m.name == local_name:
            continue
        if all(c.name != m.name for c in chosen):
            chosen.append(m)
    return chosen


@dataclass(slots=True)
class QueryHandle:
    """A query we started: who acked, who answered, until when answers count."""

    ltime: int
    id: int
    deadline: float
    want_acks: bool
    acks: list[str] = field(default_factory=list)
    responses: dict[str, bytes] = field(default_factory=dict)
    closed: bool = False

    def finished(self, now: float) -> bool:
        return self.closed or now > self.deadline
