"""What handlers return: a blocking-capable read, or a plain value for writes."""

from __future__ import annotations

from typing import Any, Callable, Iterable


class Raw:
    """A body that is not JSON (e.g. `?raw` KV values)."""
    __slots__ = ("body", "content_type", "headers")

    def __init__(self, body: bytes, content_type: bytes | None, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.body = body
        self.content_type = content_type
        self.headers = tuple(headers)


class Missing:
    """A read that found nothing: 404 with an empty body, index headers still set."""


MISSING = Missing()


class Read:
    """A read of the state store that may block.

    `run(store)` returns `(index, payload)`; payload is JSON-able, `Raw` or `MISSING`. The
    wrapper re-runs it when one of `tables` or `kv_prefixes` changes, for blocking queries.
    """
    __slots__ = ("run", "tables", "kv_prefixes", "consistency_header", "index_headers")

    def __init__(self, run: Callable[[Any], tuple[int, Any]], tables: Iterable[str] = (),
                 kv_prefixes: Iterable[str] = (), consistency_header: bool = False,
                 index_headers: bool = True) -> None:
        self.run = run
        self.tables = tuple(tables)
        self.kv_prefixes = tuple(kv_prefixes)
        self.consistency_header = consistency_header
        self.index_headers = index_headers


class Empty:
    """A write that answers 200 with no body and no Content-Type (agent endpoints)."""


EMPTY = Empty()
