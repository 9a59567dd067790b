"""The route table: exact paths and path prefixes to handlers, with their methods; and the
view of it plugins get through the `waypost_http_routes` hook (`PluginRoutes`)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

from twisted.internet.defer import ensureDeferred


class Route:
    __slots__ = ("path", "methods", "handler", "allow", "prefix", "local")

    def __init__(self, path: str, methods: Iterable[str], handler: Callable[..., Any], prefix: bool,
                 local: bool = False) -> None:
        self.local = local  # answered by this agent itself, so ?dc does not apply
        self.path = path
        methods = tuple(methods)
        self.methods = frozenset(methods)
        self.handler = handler
        self.prefix = prefix
        # Consul lists OPTIONS first, then the methods in the order the route declares them.
        self.allow = ",".join(["OPTIONS", *(m for m in methods if m != "HEAD")]).encode()


class RouteTable:
    def __init__(self) -> None:
        self._exact: dict[str, Route] = {}
        self._prefixes: list[Route] = []

    def add(self, path: str, methods: Iterable[str], handler: Callable[..., Any], *,
            local: bool = False, prefix: bool | None = None) -> None:
        """`path` ending in "/" matches everything below it; the rest is the handler's `arg`.
        `prefix=False` makes such a path exact (`/` itself)."""
        if prefix is None:
            prefix = path.endswith("/")
        route = Route(path, methods, handler, prefix, local)
        if prefix:
            self._prefixes.append(route)
            self._prefixes.sort(key=lambda r: len(r.path), reverse=True)
        else:
            self._exact[path] = route

    def taken(self, path: str, prefix: bool) -> bool:
        """Whether a route is already registered at exactly this path and kind."""
        if prefix:
            return any(route.path == path for route in self._prefixes)
        return path in self._exact

    def match(self, path: str) -> tuple[Route | None, str]:
        route = self._exact.get(path)
        if route is not None:
            return route, ""
        for route in self._prefixes:
            if path.startswith(route.path):
                return route, path[len(route.path):]
        return None, ""


class PluginRoutes:
    """`hookspecs.HTTPRoutes`: what `waypost_http_routes` implementations add routes through.

    A plugin's handler takes ``(request, arg)``, not the HTTP API's own handler arguments, so
    the API's internals can change without breaking plugins. Its routes are answered by this
    agent (``local``) and read their own query fields: the wrapper parses none of Consul's.
    """

    def __init__(self, table: RouteTable) -> None:
        self._table = table

    def add(self, path: str, methods: Iterable[str], handler: Callable[..., Any], *,
            prefix: bool | None = None) -> None:
        """Serve ``methods`` on ``path`` with ``handler(request, arg)``; see HTTPRoutes."""
        if not path.startswith("/"):
            raise ValueError(f"route {path!r}: a path starts with /")
        methods = tuple(dict.fromkeys(m.upper() for m in methods))
        if "GET" in methods and "HEAD" not in methods:
            methods += ("HEAD",)  # as Go's net/http and the API's own GET routes answer it
        kind = path.endswith("/") if prefix is None else prefix
        if self._table.taken(path, kind):
            raise ValueError(f"route {path!r} is already served")

        def serve(facade: Any, request: Any, params: Any, arg: str) -> Any:
            result = handler(request, arg)
            if inspect.iscoroutine(result):
                return ensureDeferred(result)
            return result

        serve.own_query_params = True  # type: ignore[attr-defined]
        self._table.add(path, methods, serve, local=True, prefix=kind)
