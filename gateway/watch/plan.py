"""Watch plans: which blocking query a watch of each type makes, and how its answer is shaped.

Shared by `waypost watch` (over HTTP) and the agent's configured watches (in process). Pure:
no I/O, no Twisted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote, urlencode

TYPES = ("key", "keyprefix", "services", "nodes", "service", "checks", "event")
CHECK_STATES = ("any", "passing", "warning", "critical")


class WatchError(ValueError):
    """A watch definition that cannot run; the message names the field."""


@dataclass(frozen=True)
class WatchPlan:
    type: str
    path: str
    query: tuple[tuple[str, str], ...]

    def target(self, index: int = 0) -> tuple[str, bytes]:
        """(path, raw query) for the next blocking request after `index`."""
        query = list(self.query)
        if index:
            query.append(("index", str(index)))
        return self.path, urlencode(query).encode()

    def shape(self, status: int, body: bytes) -> Any:
        """The value handed to a handler, as Consul's watch gives it (404 is "nothing")."""
        if status == 404:
            return None if self.type == "key" else []
        value = json.loads(body) if body else None
        if self.type == "key":
            return value[0] if value else None
        return value


def make_plan(spec: Mapping[str, Any]) -> WatchPlan:
    """Build a plan from a watch definition (config keys or CLI flags, Consul's names)."""
    kind = spec.get("type")
    if kind not in TYPES:
        raise WatchError(f"Unsupported watch type: {kind!r} (one of {', '.join(TYPES)})")
    query: list[tuple[str, str]] = []
    if spec.get("datacenter"):
        query.append(("dc", str(spec["datacenter"])))
    if spec.get("stale"):
        query.append(("stale", ""))
    if kind == "key":
        key = _required(spec, "key")
        return WatchPlan(kind, "/v1/kv/" + quote(key), tuple(query))
    if kind == "keyprefix":
        prefix = _required(spec, "prefix")
        return WatchPlan(kind, "/v1/kv/" + quote(prefix), tuple(query + [("recurse", "")]))
    if kind == "services":
        return WatchPlan(kind, "/v1/catalog/services", tuple(query))
    if kind == "nodes":
        return WatchPlan(kind, "/v1/catalog/nodes", tuple(query))
    if kind == "event":
        # The agent's recent user events (optionally one name's). Their index comes from the
        # last event's ID, so it is not monotonic: a lower one merely costs one extra query.
        if spec.get("name"):
            query.append(("name", str(spec["name"])))
        return WatchPlan(kind, "/v1/event/list", tuple(query))
    if kind == "service":
        name = _required(spec, "service")
        tags = spec.get("tag") or []
        if isinstance(tags, str):
            tags = [tags]
        query += [("tag", t) for t in tags]
        if spec.get("passingonly"):
            query.append(("passing", "1"))
        return WatchPlan(kind, "/v1/health/service/" + quote(name, safe=""), tuple(query))
    service, state = spec.get("service"), spec.get("state")
    if service and state:
        raise WatchError("Cannot specify service and state for a checks watch")
    if service:
        return WatchPlan(kind, "/v1/health/checks/" + quote(service, safe=""), tuple(query))
    state = state or "any"
    if state not in CHECK_STATES:
        raise WatchError(f"Invalid state for a checks watch: {state!r}")
    return WatchPlan(kind, "/v1/health/state/" + state, tuple(query))


def _required(spec: Mapping[str, Any], name: str) -> str:
    value = spec.get(name)
    if not isinstance(value, str) or not value:
        raise WatchError(f"Must specify a single {name} to watch")
    return value


def canonical(value: Any) -> bytes:
    """A stable encoding to tell a changed result from a mere wake-up."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
