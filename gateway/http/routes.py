"""The route table: exact paths and path prefixes to handlers, with their methods."""

from __future__ import annotations

from typing import Any, Callable, Iterable


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

    def match(self, path: str) -> tuple[Route | None, str]:
        route = self._exact.get(path)
        if route is not None:
            return route, ""
        for route in self._prefixes:
            if path.startswith(route.path):
                return route, path[len(route.path):]
        return None, ""
