"""`?filter=` in the core: which Consul shape each query's rows are filtered in.

go-bexpr selects fields of the Go structs Consul returns, so a row is shaped as Consul shows
it (`agent.rpc.shapes`) to be matched, and the typed row is kept. Parsing and evaluation are
`agent.filter`'s. Compiled expressions are kept for reuse (a client polls the same one), per endpoints object.
"""

from __future__ import annotations

from typing import Any, Callable

from agent import filter as bexpr
from agent.rpc import queries as q
from agent.rpc import shapes

_CACHE_LIMIT = 256


def _check_service_node(row: q.CheckServiceNode) -> dict:
    return {"Node": shapes.node(row.node), "Service": shapes.service(row.service),
            "Checks": [shapes.check(c) for c in row.checks]}


# query type -> (the bexpr field schema of its rows, how a row is shaped)
_ROWS: dict[type, tuple[bexpr.Field, Callable[[Any], dict]]] = {
    q.CatalogNodes: (bexpr.NODE, shapes.node),
    q.CatalogServiceNodes: (bexpr.SERVICE_NODE, lambda r: shapes.catalog_service(r.node, r.service)),
    q.CatalogNodeServices: (bexpr.NODE_SERVICE, shapes.service),
    q.HealthNodeChecks: (bexpr.HEALTH_CHECK, shapes.check),
    q.HealthServiceChecks: (bexpr.HEALTH_CHECK, shapes.check),
    q.HealthChecksInState: (bexpr.HEALTH_CHECK, shapes.check),
    q.HealthServiceNodes: (bexpr.CHECK_SERVICE_NODE, _check_service_node),
}

class Filtering:
    """Applies `?filter=` expressions, keeping the compiled ones for reuse."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, int], bexpr.Filter] = {}

    def _compile(self, text: str, schema: bexpr.Field) -> bexpr.Filter:
        key = (text, id(schema))
        found = self._compiled.get(key)
        if found is None:
            found = bexpr.compile_filter(text, schema)
            if len(self._compiled) >= _CACHE_LIMIT:
                self._compiled.clear()
            self._compiled[key] = found
        return found

    def check(self, query: Any, text: str) -> None:
        """Raise FilterError (a 400) now if `text` is not a valid filter for `query`'s rows."""
        rows = _ROWS.get(type(query))
        if text and rows is not None:
            self._compile(text, rows[0])

    def apply(self, query: Any, value: Any, text: str) -> Any:
        """`value` with only the rows `text` selects; queries Consul does not filter are as is."""
        rows = _ROWS.get(type(query))
        if not text or rows is None or value is None:
            return value
        schema, shape = rows
        selected = self._compile(text, schema)
        if isinstance(value, q.NodeServices):
            return q.NodeServices(value.node, {sid: s for sid, s in value.services.items()
                                               if selected.matches(shape(s))})
        return [row for row in value if selected.matches(shape(row))]
