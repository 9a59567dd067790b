"""Builds this agent's local side — local state, anti-entropy, agent endpoints — for a given
`CatalogClient`.

Nothing here needs a store: a server agent passes an `InProcessCatalog` over its server
endpoints, a client agent (the gossip issue) one that reaches a server over RPC, and both put
the resulting `endpoints` behind the same facade.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from agent.definitions import CheckSpec
from agent.durations import parse_duration
from agent.errors import InvalidRequest
from agent.local.antientropy import BASE_INTERVAL, AntiEntropy
from agent.local.catalog import CatalogClient
from agent.local.endpoints import LocalEndpoints
from agent.local.persist import LocalPersistence
from agent.local.state import CHECK_UPDATE_INTERVAL, LocalState
from agent.structs import Node


@dataclass(frozen=True)
class LocalAgent:
    """The local side of one agent: `state` (the registrations), `antientropy` (its full
    syncs and retries: a MultiService child's start/stop is the caller's) and `endpoints`
    (what the facade answers agent-local reads and writes with)."""

    state: LocalState
    antientropy: AntiEntropy
    endpoints: LocalEndpoints


def build_local(reactor, catalog: CatalogClient, node: Callable[[], Node], *,
                runner_factory: Callable[[CheckSpec, Any], Any] | None = None,
                enable_script_checks: bool = False, enable_local_script_checks: bool = False,
                persistence: LocalPersistence | None = None,
                check_update_interval: float = CHECK_UPDATE_INTERVAL,
                keep_services: frozenset[str] = frozenset(),
                keep_checks: frozenset[str] = frozenset(),
                interval: float = BASE_INTERVAL,
                cluster_size: Callable[[], int] = lambda: 1,
                rng: random.Random | None = None) -> LocalAgent:
    """The local side over `catalog`. `keep_*` name the rows of this node the agent owns
    outside its local state (a server's consul service, serfHealth): anti-entropy leaves them
    in the catalog. `cluster_size` (the LAN members) stretches the full-sync interval."""
    rng = rng or random.Random()
    state = LocalState(reactor, node, catalog, runner_factory=runner_factory,
                       enable_script_checks=enable_script_checks,
                       enable_local_script_checks=enable_local_script_checks,
                       persistence=persistence, check_update_interval=check_update_interval,
                       keep_services=keep_services, keep_checks=keep_checks, rng=rng)
    antientropy = AntiEntropy(reactor, state, interval=interval, cluster_size=cluster_size,
                              rng=rng)
    return LocalAgent(state, antientropy, LocalEndpoints(reactor, state, rng))


def check_update_interval_of(settings: Mapping[str, Any]) -> float:
    """`check_update_interval` from the merged config settings (Consul's 5 m when unset;
    0 writes every output change at once)."""
    value = (settings or {}).get("check_update_interval")
    if value in (None, ""):
        return CHECK_UPDATE_INTERVAL
    try:
        return max(0.0, parse_duration(value))
    except InvalidRequest:
        return CHECK_UPDATE_INTERVAL  # the config loader validated it already
