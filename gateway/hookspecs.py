"""The plugin contract: hook markers, hook specifications and the read-only views plugins get.

This module is everything a third-party plugin author needs (see docs/plugins.md). Plugins are
found through the ``waypost`` entry-point group; the bundled HTTP API is loaded the same way.
Hooks run on the reactor thread and must not block. A hook may return a plain value, a Deferred
or a coroutine; the host normalises them. Arguments are passed by keyword, so an
implementation may declare only the ones it needs, and new arguments can be added later.

Besides the hooks, plugins get here what they would otherwise copy from the core: Go duration
parsing and formatting (`parse_duration`, `go_duration`), Consul's maintenance check IDs
(`NODE_MAINT`, `SERVICE_MAINT_PREFIX`), the wait/quiescence timer (`Quiescence`) and the HTTP
`Request`/`Response` a route handler takes and gives (`waypost_http_routes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pluggy

from agent.errors import InvalidRequest
from agent.facade import go_duration
from agent.facade import parse_duration as _parse_duration
from agent.structs import NODE_MAINT, SERVICE_MAINT_PREFIX
from gateway.http.request import Request, Response
from gateway.quiescence import Quiescence

__all__ = [
    "PROJECT", "hookspec", "hookimpl", "ServiceInstance", "NodeInfo", "KVItem", "CatalogView",
    "CatalogFeed", "FrontendHooks", "HTTPRoutes", "Request", "Response", "Quiescence",
    "parse_duration", "go_duration", "NODE_MAINT", "SERVICE_MAINT_PREFIX",
]

PROJECT = "waypost"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class ServiceInstance:
    """One registered instance of a service, with its aggregated health."""
    node: str
    node_address: str
    service_id: str
    name: str
    address: str  # the service address, or the node's when the service has none
    port: int
    tags: tuple[str, ...]
    meta: Mapping[str, str]
    # passing | warning | critical (worst of its checks), or maintenance when the node or the
    # service is in maintenance mode
    status: str
    weights: tuple[int, int] = (1, 1)  # (passing, warning), Consul's service Weights
    node_meta: Mapping[str, str] = field(default_factory=dict)
    datacenter: str = ""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    address: str
    meta: Mapping[str, str]
    datacenter: str


@dataclass(frozen=True)
class KVItem:
    key: str
    value: bytes | None
    flags: int
    modify_index: int


@dataclass(frozen=True)
class CatalogView:
    """A frozen picture of the catalog at `index`, handed to observer hooks."""
    index: int
    datacenter: str
    nodes: Mapping[str, str]  # node name -> address
    services: Mapping[str, tuple[ServiceInstance, ...]]  # service name -> instances
    node_info: Mapping[str, NodeInfo] = field(default_factory=dict)

    def tags(self, name: str) -> tuple[str, ...]:
        """The union of the tags of a service's instances, in first-seen order."""
        return tuple(dict.fromkeys(t for i in self.services.get(name, ()) for t in i.tags))

    def healthy(self, name: str, passing_only: bool = False) -> tuple[ServiceInstance, ...]:
        """Instances of `name` without a critical check (nor a warning one if `passing_only`)."""
        bad = {"critical", "maintenance"} | ({"warning"} if passing_only else set())
        return tuple(i for i in self.services.get(name, ()) if i.status not in bad)


# --- helpers plugins share with the core -------------------------------------------------

def parse_duration(text: str) -> float:
    """Seconds in a Go duration string ("0", "250ms", "1.5h", "2h45m15s"), as Consul and
    consul-template read them; ValueError (naming the text) for anything else, negatives
    included. `go_duration(seconds)` writes one back as Go prints it ("1m30s")."""
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected a string such as \"250ms\"")
    try:
        return _parse_duration(text)
    except InvalidRequest as exc:
        raise ValueError(str(exc)) from None


# --- start-up ---------------------------------------------------------------------------

@hookspec
def waypost_config_schema() -> Mapping[str, Any] | None:
    """Return a JSON Schema (dict) for this plugin's settings, or None.

    Called once at start-up; the agent validates ``plugins.<name>`` in its config against it
    before anything starts, so a plugin never sees settings it did not declare.
    """


class CatalogFeed:
    """What a plugin reads, handed to `waypost_frontends` as ``catalog`` (the host implements it).

    - ``view() -> CatalogView``: the catalog now (built once per change).
    - ``kv_get(key) -> KVItem | None`` and ``kv_list(prefix) -> list[KVItem]``: KV reads.
    - ``subscribe(callback) -> unsubscribe``: ``callback(view)`` after catalog changes, coalesced
      (a burst gives one call; while the callback's Deferred is pending only the latest view is
      kept for afterwards).
    - ``subscribe_kv(prefix, callback) -> unsubscribe``: ``callback()`` after KV changes under
      ``prefix``, coalesced the same way.
    """


class FrontendHooks:
    """What a frontend may ask of the other plugins while it builds itself, handed to
    `waypost_frontends` as ``hooks`` (the host implements it).

    - ``http_routes(routes)``: calls every plugin's `waypost_http_routes` with ``routes``
      (the HTTP frontend does, once, after adding Consul's routes to its table).
    """


class HTTPRoutes:
    """The HTTP API's route table as `waypost_http_routes` sees it (the HTTP frontend
    implements it).

    - ``add(path, methods, handler, prefix=None)``: answer ``methods`` (``("GET", "PUT")``;
      HEAD comes with GET) on ``path``. A path ending in "/" matches everything below it
      (``prefix=False`` makes it exact). ``handler(request, arg)`` gets the `Request` and the
      part of the path below a prefix ("" on an exact path), and returns a `Response`, or a
      Deferred or coroutine of one; cancelling that Deferred means the client went away. A
      path somebody already serves raises ValueError.
    """


@hookspec
def waypost_frontends(facade: Any, reactor: Any, config: Mapping[str, Any],
                      catalog: CatalogFeed, hooks: FrontendHooks) -> list | None:
    """Return a list of ``twisted.application.service.IService`` to run with the agent.

    ``facade`` is the agent's `AgentFacade` (read, write, watch) for frontends that serve
    clients; ``catalog`` is the read-only `CatalogFeed` most plugins need instead; ``reactor``
    is the reactor to use for every timer and socket (never import the global one); ``config``
    is this plugin's validated settings (``{}`` when none); ``hooks`` lets a frontend call
    other plugins' hooks while it builds itself (`FrontendHooks`). The services are started
    after the core and stopped before it, in reverse order. Called once at start-up.
    """


@hookspec
def waypost_http_routes(routes: HTTPRoutes, facade: Any, reactor: Any,
                        config: Mapping[str, Any]) -> None:
    """Add routes to the agent's HTTP API with ``routes.add(...)`` (`HTTPRoutes`).

    Called once, when the HTTP frontend builds its route table at start-up, before it
    listens: add every route before returning (a Deferred returned is not waited for).
    ``facade``, ``reactor`` and ``config`` are those `waypost_frontends` gets. Consul's routes
    come first and cannot be replaced. These routes are answered by this agent itself
    (``?dc`` does not apply) and read their own query fields (``request.query``): Consul's
    shared ones (``?index``, ``?wait``, ``?stale``, ...) are not parsed for them. A plugin that
    raises is logged; the agent starts with the routes it added before raising.
    """


# --- observers ---------------------------------------------------------------------------

@hookspec
def waypost_agent_started(view: CatalogView) -> None:
    """The agent and every frontend are running; ``view`` is the catalog at that moment."""


@hookspec
def waypost_catalog_changed(view: CatalogView, index: int) -> None:
    """The catalog changed; ``view`` is the whole catalog at ``index``.

    Notifications coalesce: a plugin still busy with an earlier call (its Deferred has not
    fired) gets only the latest view afterwards, never a backlog. The host does not wait for the
    result before answering clients.
    """


@hookspec
def waypost_agent_stopping() -> None:
    """The agent is shutting down; frontends are still up. The host waits for a Deferred."""
