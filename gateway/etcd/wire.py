"""etcd v2's HTTP shapes: error codes and bodies, the ``X-Etcd-*`` headers, cluster and member
IDs, and the form and query fields of a request.

Owns how an etcd answer looks, not what it says: every handler of the etcd frontend builds its
responses here. No reads, no writes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl

from agent.facade import STALE
from gateway.http.decode import parse_uint64
from gateway.http.request import Response

__all__ = ["EtcdError", "Fields", "JSON", "answer", "cluster_id", "current_index", "dumps",
           "headers", "member_id"]

JSON = b"application/json"
MESSAGES = {100: "Key not found", 101: "Compare failed", 102: "Not a file",
            104: "Not a directory", 105: "Key already exists", 107: "Root is read only",
            108: "Directory not empty", 201: "PrevValue is Required in POST form",
            202: "The given TTL in POST form is not a number",
            203: "The given index in POST form is not a number", 209: "Invalid field",
            210: "Invalid POST form", 211: "Value provided on refresh",
            212: "A TTL must be provided on refresh", 300: "Raft Internal Error"}
STATUS = {100: 404, 101: 412, 102: 403, 105: 412, 108: 403, 300: 500}  # others: 400
_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def current_index(facade, at_least: int = 0) -> int:
    """The store's index as this agent sees it now (etcd's "etcd index"), never below
    ``at_least`` (an index a read or a write of this request already answered)."""
    index = facade.local_index(STALE)
    return at_least if index is None else max(index, at_least)


def cluster_id(facade) -> str:
    return hashlib.sha256(facade.config.datacenter.encode()).hexdigest()[:16]


def member_id(facade) -> str:
    node_id = getattr(facade.config, "node_id", "") or facade.config.node_name
    return hashlib.sha256(node_id.encode()).hexdigest()[:16]


def headers(facade, index: int | None = None) -> list[tuple[bytes, bytes]]:
    """``X-Etcd-Index`` is ``index`` (a write's, a watch's start) or else the current one;
    ``X-Raft-Index`` is never behind it."""
    raft = current_index(facade, index or 0)
    return [(b"X-Etcd-Cluster-Id", cluster_id(facade).encode()),
            (b"X-Etcd-Index", str(raft if index is None else index).encode()),
            (b"X-Raft-Index", str(raft).encode()), (b"X-Raft-Term", b"1")]


def answer(facade, status: int, doc: dict[str, Any], index: int | None = None) -> Response:
    return Response(status, dumps(doc), headers(facade, index), content_type=JSON)


class EtcdError(Exception):
    """An etcd error: ``{"errorCode", "message", "cause", "index"}`` with its HTTP status."""

    def __init__(self, code: int, cause: str = "", index: int = 0) -> None:
        super().__init__(f"{code} {MESSAGES.get(code, '')} ({cause})")
        self.code, self.cause, self.index = code, cause, index

    def response(self, facade) -> Response:
        body: dict[str, Any] = {"errorCode": self.code, "message": MESSAGES.get(self.code, "")}
        if self.cause:
            body["cause"] = self.cause
        index = self.index or current_index(facade)
        body["index"] = index
        return Response(STATUS.get(self.code, 400), dumps(body), headers(facade, index),
                        content_type=JSON)


class Fields:
    """etcd's request fields: the form body (PUT/POST) first, then the query string.

    Both are split and unescaped byte for byte: read as latin-1, each byte is one character,
    so encoding a value back to latin-1 gives exactly the bytes the client sent (a UTF-8
    reading with "replace" turned every non-UTF-8 value into U+FFFD and lost it).
    """

    def __init__(self, request) -> None:
        self.values: dict[str, list[bytes]] = {}
        content_type = request.headers.get("content-type", "")
        if request.body and "application/x-www-form-urlencoded" in content_type:
            self._add(request.body)
        if request.raw_query:
            self._add(request.raw_query)

    def _add(self, raw: bytes) -> None:
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True,
                                     encoding="latin-1"):
            self.values.setdefault(name, []).append(value.encode("latin-1"))

    def raw(self, name: str) -> bytes | None:
        """A field's bytes, exactly as sent; None when absent."""
        values = self.values.get(name)
        return values[0] if values else None

    def get(self, name: str) -> str | None:
        """A field that must be ASCII (a flag or a number): anything else fails its check."""
        value = self.raw(name)
        return None if value is None else value.decode("latin-1")

    def flag(self, name: str) -> bool | None:
        """A boolean field; None when absent."""
        text = self.get(name)
        if text is None:
            return None
        if text in _TRUE:
            return True
        if text in _FALSE or text == "":
            return False
        raise EtcdError(209, f"invalid value for {name}")

    def uint(self, name: str, code: int) -> int | None:
        text = self.get(name)
        if text is None or text == "":
            return None
        value = parse_uint64(text)  # never int() on client text: 4,301 digits raise
        if value is None:
            raise EtcdError(code, f"invalid value for {name}")
        return value
