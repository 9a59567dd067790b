"""The HTTP/1.1 wire protocol for the whole HTTP API.

This module owns framing only: it parses requests with httptools (llhttp),
hands each one to a handler as a `Request`, and writes the handler's
`Response` back, in request order, with keep-alive, pipelining, request size
limits, `Expect: 100-continue` and an idle timeout. Routing, JSON and the
`X-Consul-*` headers live above it.

twisted.web's `Site` costs about twice as much per request; this protocol does
one parser per connection, one dict per request and one `transport.write` per
response.
"""

from __future__ import annotations

from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from inspect import iscoroutine
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote

import txaio
from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, parse_url
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

txaio.use_twisted()

__all__ = ["Request", "Response", "HTTPFactory", "HTTPProtocol"]

# Constant tables, built once.
_STATUS_LINES = {
    int(s): b"HTTP/1.1 %d %s\r\n" % (s, s.phrase.encode("ascii")) for s in HTTPStatus
}
_METHODS = {m.encode(): m for m in ("GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH")}
# These statuses never carry a body, so they get no Content-Length either (RFC 9110 8.6).
_NO_BODY_STATUSES = frozenset({100, 101, 102, 103, 204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TEXT = b"text/plain; charset=utf-8"
_BODY_TOO_LARGE = "Request body too large, max size: {} bytes"
_HEAD_TOO_LARGE = "Request header fields too large, max size: {} bytes"
# More responses than this waiting behind a slow one: stop reading from the client.
_MAX_PENDING = 32
# Time given to a client to read an error response before the socket is closed
# while it is still sending (closing with unread input would send an RST).
_LINGER_SECONDS = 2.0


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
        # Parsed on first use: most cached reads never look at it.
        query = self._query
        if query is None:
            raw = self.raw_query
            query = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True) if raw else {}
            self._query = query
        return query

    @query.setter
    def query(self, value: dict[str, list[str]]) -> None:
        self._query = value

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.raw_path!r} {self.raw_query!r}>"


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


def _text_response(status: int, message: str) -> Response:
    return Response(status, message.encode("utf-8", "replace"), content_type=_TEXT)


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing this connection."""


class _Slot:
    """A place in the response queue; `data` is None while the handler works,
    `shape` is what `_encode` needs besides the response."""

    __slots__ = ("data", "close", "shape", "deferred")

    def __init__(self, data: bytes | None, close: bool, shape: tuple = ()) -> None:
        self.data = data
        self.close = close
        self.shape = shape
        self.deferred: Deferred | None = None


@implementer(IHalfCloseableProtocol)
class HTTPProtocol(Protocol):
    """One client connection. Built by `HTTPFactory`."""

    log = txaio.make_logger()
    factory: HTTPFactory

    def connectionMade(self) -> None:
        factory = self.factory
        self._reactor = factory.reactor
        self._handler = factory.handler
        self._max_body = factory.max_body
        self._max_head = factory.max_header_bytes
        self._idle_timeout = factory.idle_timeout
        self._parser = HttpRequestParser(self)
        self._queue: deque[_Slot] = deque()
        self._closing = False   # no more requests are read
        self._lost = False
        self._paused = False
        self._error: tuple[int, str] | None = None
        self._linger_call = None
        self._in_head = True
        self._head_read = 0     # bytes fed while the current head is incomplete
        self._reset_message()
        peer = self.transport.getPeer()
        host = getattr(peer, "host", None)
        self._client = (host, peer.port) if host is not None else None
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass  # not TCP (tests, UNIX sockets)
        self._last_active = self._reactor.seconds()
        self._idle_call = self._reactor.callLater(self._idle_timeout, self._check_idle)

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_len = self._head_size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return  # bounded: we drop what we will never answer
        self._last_active = self._reactor.seconds()
        if self._in_head:
            self._head_read += len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            # We speak no other protocol; the upgrade request itself is answered
            # with Connection: close and the rest of the stream is ignored.
            self._closing = True
            return
        except HttpParserError as exc:
            if self._error is not None:
                self._fail(*self._error)
            elif not self._closing:
                cause = exc.__context__
                if cause is not None and not isinstance(cause, (_Reject, HttpParserError)):
                    self.log.failure("HTTP parser callback failed",
                                     failure=Failure(cause))
                self._fail(400, f"Bad request: {exc}")
            return
        if self._in_head and self._head_read > self._max_head:
            self._fail(431, _HEAD_TOO_LARGE.format(self._max_head))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._closing:
            raise _Reject()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        if key in headers:
            headers[key] = headers[key] + ", " + text
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_read = 0
        if self._head_size > self._max_head:
            self._reject(431, _HEAD_TOO_LARGE.format(self._max_head))
        headers = self._headers
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._reject(413, _BODY_TOO_LARGE.format(self._max_body))
        expect = headers.get("expect")
        if (expect is not None and expect.lower() == "100-continue"
                and self._parser.get_http_version() == "1.1"):
            self._emit(_CONTINUE, close=False)

    def on_body(self, body: bytes) -> None:
        size = self._body_len + len(body)
        if size > self._max_body:
            self._reject(413, _BODY_TOO_LARGE.format(self._max_body))
        self._body_len = size
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        version = parser.get_http_version()
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii", "replace")
        url = self._url
        if url[:1] == b"/" or url == b"*":
            raw_path, _, raw_query = url.partition(b"?")
        else:  # absolute-form, as sent to proxies: `GET http://host/p?q HTTP/1.1`
            parsed = parse_url(url)
            raw_path, raw_query = parsed.path or b"/", parsed.query or b""
        if b"%" in raw_path:
            path = unquote(raw_path)
        else:
            path = raw_path.decode("utf-8", "replace")
        body = self._body
        request = Request(method, path, raw_path, raw_query, self._headers,
                          body[0] if len(body) == 1 else b"".join(body),
                          self._client, version)
        self._reset_message()
        self._in_head = True
        if not keep_alive:
            self._closing = True
        head = method == "HEAD"
        http10 = version == "1.0"
        data = None
        try:
            result = self._handler(request)
            if iscoroutine(result):
                result = Deferred.fromCoroutine(result)
            if not isinstance(result, Deferred):
                data = self._encode(result, head, keep_alive, http10)
        except Exception as exc:
            self.log.failure("HTTP handler failed for {request}", request=request)
            data = self._encode(_text_response(500, str(exc)), head, keep_alive, http10)
        if data is not None:
            if self._queue:
                self._queue.append(_Slot(data, not keep_alive))
            else:  # the fast path: nothing queued ahead of us
                self.transport.write(data)
                if not keep_alive:
                    self._close()
            return
        slot = _Slot(None, not keep_alive, (head, keep_alive, http10))
        slot.deferred = result
        self._queue.append(slot)
        if len(self._queue) >= _MAX_PENDING and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        result.addCallbacks(self._on_result, self._on_failure,
                            callbackArgs=(slot, request), errbackArgs=(slot, request))

    # responses

    def _on_result(self, result: Response, slot: _Slot, request: Request) -> None:
        slot.deferred = None
        if self._lost:
            return
        try:
            slot.data = self._encode(result, *slot.shape)
        except Exception as exc:
            self.log.failure("HTTP handler for {request} gave {result!r}",
                             request=request, result=result)
            slot.data = self._encode(_text_response(500, str(exc)), *slot.shape)
        self._flush()

    def _on_failure(self, failure: Failure, slot: _Slot, request: Request) -> None:
        slot.deferred = None
        if self._lost:
            if not failure.check(CancelledError):
                self.log.failure("HTTP handler failed for {request} after disconnect",
                                 failure=failure, request=request)
            return
        self.log.failure("HTTP handler failed for {request}", failure=failure, request=request)
        slot.data = self._encode(_text_response(500, str(failure.value)), *slot.shape)
        self._flush()

    def _encode(self, response: Response, head: bool, keep_alive: bool, http10: bool) -> bytes:
        status = response.status
        body = response.body
        parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status,
                 self.factory.date_line()]
        if status in _NO_BODY_STATUSES:
            body = b""
        else:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        content_type = response.content_type
        if content_type is not None:
            parts += (b"Content-Type: ", content_type, b"\r\n")
        for name, value in response.headers:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(b"Connection: close\r\n\r\n")
        elif http10:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        if body and not head:
            parts.append(body)
        return b"".join(parts)

    def _emit(self, data: bytes, close: bool) -> None:
        """Write `data` now, or queue it behind responses still being made."""
        if self._queue:
            self._queue.append(_Slot(data, close))
        else:
            self.transport.write(data)
            if close:
                self._close()

    def _flush(self) -> None:
        queue = self._queue
        while queue and queue[0].data is not None:
            slot = queue.popleft()
            self.transport.write(slot.data)
            if slot.close:
                self._close()
                return
        if self._paused and len(queue) < _MAX_PENDING // 2:
            self._paused = False
            self.transport.resumeProducing()
        if not queue:
            self._last_active = self._reactor.seconds()

    def _reject(self, status: int, message: str) -> None:
        """Abort parsing from inside a callback; dataReceived answers."""
        self._error = (status, message)
        raise _Reject()

    def _fail(self, status: int, message: str) -> None:
        """Answer a request we cannot parse or accept, then close."""
        self._closing = True
        self._error = None
        self._emit(self._encode(_text_response(status, message), False, False, False), True)

    def _close(self) -> None:
        self._closing = True
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        if self._in_head and self._head_read == 0:
            self.transport.loseConnection()
            return
        # The client may still be sending: half-close so it can read our answer,
        # drop its input, and close for good a little later.
        lose_write = getattr(self.transport, "loseWriteConnection", None)
        if lose_write is None:
            self.transport.loseConnection()
            return
        lose_write()
        if self._linger_call is None:
            self._linger_call = self._reactor.callLater(_LINGER_SECONDS, self._linger_over)

    def _linger_over(self) -> None:
        self._linger_call = None
        self.transport.loseConnection()

    def _check_idle(self) -> None:
        if self._queue:
            delay = self._idle_timeout  # a request is in flight (maybe a blocking query)
        else:
            delay = self._last_active + self._idle_timeout - self._reactor.seconds()
            if delay <= 0:
                self._idle_call = None
                self._closing = True
                self.transport.loseConnection()
                return
        self._idle_call = self._reactor.callLater(delay, self._check_idle)

    def readConnectionLost(self) -> None:
        # End of input. A client that only shut down its sending side still
        # gets the answers already written; one that went away for good must
        # not keep a blocking query parked, so close now (connectionLost then
        # cancels whatever is pending, as Consul does).
        self._closing = True
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass  # our own half-close while lingering; readConnectionLost follows

    def connectionLost(self, reason: Failure = None) -> None:
        self._lost = self._closing = True
        for call in (self._idle_call, self._linger_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._linger_call = None
        pending = [slot.deferred for slot in self._queue if slot.deferred is not None]
        self._queue.clear()
        # Handlers parked on a watch drop it when their Deferred is cancelled.
        for deferred in pending:
            deferred.cancel()


class HTTPFactory(Factory):
    """Builds an `HTTPProtocol` per connection and holds what they share:
    the handler, the limits and the cached Date header."""

    protocol = HTTPProtocol
    noisy = False  # one log line per listening port is enough

    def __init__(self, handler: Callable[[Request], Response | Deferred],
                 reactor: Any, *, max_body: int = 8 * 1024 * 1024,
                 max_header_bytes: int = 1024 * 1024, idle_timeout: float = 600.0) -> None:
        self.handler = handler
        self.reactor = reactor
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self.idle_timeout = idle_timeout
        self._date_second = -1
        self._date_line = b""

    def date_line(self) -> bytes:
        """The `Date: ...\\r\\n` header line, formatted at most once a second."""
        second = int(self.reactor.seconds())
        if second != self._date_second:
            self._date_second = second
            self._date_line = b"Date: %s\r\n" % formatdate(second, usegmt=True).encode("ascii")
        return self._date_line
