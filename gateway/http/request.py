"""A request and a response of the HTTP API, and the URL rules they follow.

Owns: `Request` (the query parsed on first use, strictly UTF-8, tokens redacted from its
repr), `Response`, and the decoding of the request target — percent-decoding that never lets
two different byte strings become one key, and the escaping of raw UTF-8 in a request line
that llhttp would refuse but Go (and so Consul) accepts. `gateway.http.protocol` frames
requests on the wire and builds these.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, unquote_to_bytes

from agent.errors import InvalidRequest

__all__ = ["TEXT", "Request", "Response", "decode_path", "escape_request_line", "redact_query",
           "text_response"]

TEXT = b"text/plain; charset=utf-8"
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")


def decode_path(raw_path: bytes) -> tuple[str, str | None]:
    """(path, None), or ("", the 400 message) when the decoded path is not UTF-8.

    Strictly UTF-8: two different keys must never decode to one string."""
    try:
        return (unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path).decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", _not_utf8("path:", exc)


def _not_utf8(what: str, exc: UnicodeDecodeError) -> str:
    """A 400 message naming the first byte that is not UTF-8 once percent-decoded, by its
    offset in the decoded bytes and the text before it (the same however it was escaped)."""
    at = exc.start
    detail = f"byte 0x{exc.object[at]:02x} at offset {at}"
    if at:
        before = exc.object[:at].decode("utf-8")  # valid up to the bad byte by definition
        if len(before) > 40:
            before = "..." + before[-40:]
        detail += f', after "{before}"'
    return f"Invalid URL {what} not valid UTF-8 ({detail})"


def _query_error(raw: bytes) -> InvalidRequest:
    """The 400 for a query some field of which is not UTF-8: finds that field again."""
    for field in raw.split(b"&"):
        name, _, value = field.partition(b"=")
        try:
            name_text = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError as exc:
            return InvalidRequest(_not_utf8("query: a field name is", exc))
        try:
            unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError as exc:
            return InvalidRequest(_not_utf8(f'query: the value of "{name_text}" is', exc))
    return InvalidRequest("Invalid URL query: not valid UTF-8")


def escape_request_line(data: bytes, at_start: bool) -> bytes:
    """`data` with the bytes >= 0x80 of its first line percent-encoded.

    llhttp refuses them in a request target, Go (and so Consul) takes raw UTF-8 there: this
    makes `PUT /v1/kv/ключ` sent unencoded the same request as its %-encoded form, whose
    decoded path is byte for byte the same. Only the request line is touched, never a header
    or the body. `at_start`: the request line starts in `data` (after optional blank lines)."""
    start = 0
    if at_start:
        while start < len(data) and data[start] in b"\r\n":
            start += 1
    end = data.find(b"\n", start)
    if end < 0:
        end = len(data)
    if data[:end].isascii():
        return data
    return _HIGH_BYTE.sub(_percent_encode, data[:end]) + data[end:]


def _percent_encode(match: re.Match) -> bytes:
    return b"%%%02X" % match.group()[0]


def redact_query(raw_query: bytes) -> bytes:
    """`raw_query` with the value of every `token` field replaced by `<hidden>`, as Consul
    logs it. The field name is compared after percent-decoding (`%74oken` is `token` too)."""
    if b"oken" not in raw_query and b"%" not in raw_query:
        return raw_query
    fields = raw_query.split(b"&")
    for i, field in enumerate(fields):
        name = field.split(b"=", 1)[0]
        if unquote_to_bytes(name.replace(b"+", b" ")) == b"token":
            fields[i] = name + b"=<hidden>"
    return b"&".join(fields)


class Request:
    """One parsed HTTP request, as the protocol hands it to the handler."""

    __slots__ = ("method", "path", "raw_path", "raw_query", "headers", "body",
                 "client", "http_version", "_query")

    def __init__(self, method: str = "GET", path: str = "/", raw_path: bytes | None = None,
                 raw_query: bytes = b"", headers: dict[str, str] | None = None,
                 body: bytes = b"", client: tuple[str, int] | None = None,
                 http_version: str = "1.1",
                 query: dict[str, list[str]] | None = None) -> None:
        self.method = method
        self.path = path
        self.raw_path = quote(path).encode("ascii") if raw_path is None else raw_path
        self.raw_query = raw_query
        self.headers = {} if headers is None else headers
        self.body = body
        self.client = client
        self.http_version = http_version
        self._query = query

    @property
    def query(self) -> dict[str, list[str]]:
        """The query fields. Parsed on first use (most cached reads never look at it);
        raises InvalidRequest (a 400) if a field is not UTF-8 once percent-decoded."""
        query = self._query
        if query is None:
            raw = self.raw_query
            if raw:
                try:
                    query = parse_qs(raw.decode("utf-8"), keep_blank_values=True,
                                     errors="strict")
                except UnicodeDecodeError:
                    raise _query_error(raw) from None
            else:
                query = {}
            self._query = query
        return query

    @query.setter
    def query(self, value: dict[str, list[str]]) -> None:
        self._query = value

    def __repr__(self) -> str:
        # Reaches the log when a handler fails: never with the client's token.
        return f"<Request {self.method} {self.raw_path!r} {redact_query(self.raw_query)!r}>"


class Response:
    """What a handler returns. `headers` are extra (name, value) byte pairs;
    the protocol adds the status line, Date, Content-Length and Connection.
    A Response is never mutated by the protocol, so one can be shared by many
    requests."""

    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(self, status: int = 200, body: bytes = b"",
                 headers: list[tuple[bytes, bytes]] | None = None,
                 content_type: bytes | None = b"application/json") -> None:
        self.status = status
        self.body = body
        self.headers = [] if headers is None else headers
        self.content_type = content_type

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


def text_response(status: int, message: str) -> Response:
    return Response(status, message.encode("utf-8", "replace"), content_type=TEXT)
