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
    """A typed read for the core (`facade.read`), and how its value is encoded.

    `encode(value)` returns a JSON-able payload, `Raw` or `MISSING`. Blocking, consistency
    modes and `?filter=` are the core's; the wrapper caches the encoded answer per index.
    """
    __slots__ = ("query", "encode", "consistency_header", "index_headers")

    def __init__(self, query: Any, encode: Callable[[Any], Any],
                 consistency_header: bool = False, index_headers: bool = True) -> None:
        self.query = query
        self.encode = encode
        self.consistency_header = consistency_header
        self.index_headers = index_headers


class Empty:
    """A write that answers 200 with no body and no Content-Type (agent endpoints)."""


EMPTY = Empty()
