"""The HTTP/1.1 wire protocol for the whole HTTP API.

This module owns framing only: it parses requests with httptools (llhttp),
hands each one to a handler as a `Request`, and writes the handler's
`Response` back, in request order, with keep-alive, pipelining, request size
limits (head and chunked trailers share one byte and field budget), a concurrent
connection limit per client address, `Expect: 100-continue` and an idle timeout.
Routing, JSON and the `X-Consul-*` headers live above it.

Work per received byte is bounded: repeated header names are joined once, many
small body pieces spill into one buffer, and a head (or trailer block) arriving
in many small reads is held back until it is complete or has doubled, so the
parser never re-copies a growing field once per read.

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

import txaio
from httptools import (
    HttpParserError,
    HttpParserInvalidURLError,
    HttpParserUpgrade,
    HttpRequestParser,
    parse_url,
)
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.http.request import (
    TEXT,
    Request,
    Response,
    decode_path,
    escape_request_line,
    text_response,
)

txaio.use_twisted()

__all__ = ["HTTPFactory", "HTTPProtocol"]

# Constant tables, built once.
_STATUS_LINES = {
    int(s): b"HTTP/1.1 %d %s\r\n" % (s, s.phrase.encode("ascii")) for s in HTTPStatus
}
_METHODS = {m.encode(): m for m in ("GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH")}
# These statuses never carry a body, so they get no Content-Length either (RFC 9110 8.6).
_NO_BODY_STATUSES = frozenset({100, 101, 102, 103, 204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BODY_TOO_LARGE = "Request body too large, max size: {} bytes"
_HEAD_TOO_LARGE = "Request header fields too large, max size: {} bytes"
_TOO_MANY_FIELDS = "Request header fields too large, max count: {} fields"
_TOO_MANY_CONNS = ("Too many concurrent connections from this client: the limit is {} "
                   "(limits.http_max_conns_per_client)\n")
# Go's net/http has no count limit (only its 1 MiB of header bytes); Node's is 2000.
# Real clients send a dozen; 1000 keeps a flood of tiny fields cheap to refuse.
DEFAULT_MAX_HEADER_FIELDS = 1000
# More responses than this waiting behind a slow one: stop reading from the client.
_MAX_PENDING = 32
# Time given to a client to read an error response before the socket is closed
# while it is still sending (closing with unread input would send an RST).
_LINGER_SECONDS = 2.0
# A head arriving in pieces is held until it is complete or the held bytes reach
# this (or what was already fed, whichever is more): the parser's growing field
# buffer is then copied O(log n) times, not once per read.
_HOLD_MIN = 4096
# Up to this many body pieces are kept as a list (no copy for the usual single
# piece); beyond it, say a body sent as 1-byte chunks, they spill into one buffer.
_MAX_BODY_PARTS = 32
# The header names clients send most, as they spell them, to their lower-case key: one
# dict lookup instead of a decode and a lower() per field. Others are decoded.
_HEADER_NAMES = {spelling.encode(): spelling.lower() for name in (
    "Host", "User-Agent", "Accept", "Accept-Encoding", "Content-Type", "Content-Length",
    "Connection", "X-Consul-Token", "Authorization", "Expect", "Transfer-Encoding",
    "X-Forwarded-For", "Keep-Alive", "Cache-Control") for spelling in (name, name.lower())}


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
    # Slots: attribute access on the hot path stays fast however many there are (a plain
    # instance dict stops sharing keys past 30 and every lookup gets slower).
    __slots__ = ("_reactor", "_handler", "_max_body", "_max_head", "_max_fields",
                 "_idle_timeout", "_parser", "_queue", "_closing", "_lost", "_paused", "_error",
                 "_linger_call", "_in_head", "_head_read", "_chunk_open", "_held", "_line_open",
                 "_held_len", "_held_tail", "_headers", "_url", "_repeated", "_body", "_spill",
                 "_body_len", "_head_size", "_fields", "_request_headers", "_client",
                 "_last_active", "_idle_call", "_peer_key", "_body_cap")

    def __init__(self) -> None:
        self._peer_key: str | None = None  # the client IP its factory counts it under

    def connectionMade(self) -> None:
        factory = self.factory
        self._reactor = factory.reactor
        self._handler = factory.handler
        self._max_body = factory.max_body
        self._max_head = factory.max_header_bytes
        self._max_fields = factory.max_header_fields
        self._idle_timeout = factory.idle_timeout
        self._parser = HttpRequestParser(self)
        self._queue: deque[_Slot] = deque()
        self._closing = False   # no more requests are read
        self._lost = False
        self._paused = False
        self._error: tuple[int, str] | None = None
        self._linger_call = None
        self._in_head = True
        # Bytes received while a head, or a trailer block, is incomplete.
        self._head_read = 0
        # A chunk header was parsed and no chunk data followed yet: input that now
        # brings no body is the trailer block.
        self._chunk_open = False
        self._held: list[bytes] | None = None  # pieces of a head held back, see _hold
        # While a head is held: is its request line still coming (see _escape_request_line)?
        self._line_open = False
        self._held_len = 0
        self._held_tail = b""
        self._headers: dict[str, str] = {}
        self._repeated: dict[str, list[str]] | None = None
        self._spill: bytearray | None = None
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
        # (`_headers` is handed to the request at the end of each head and replaced, and
        # `_repeated` and `_spill` are None again once used.)
        self._url = b""  # few pieces: a head arriving in many reads is held, see _hold
        self._body: list[bytes] = []
        self._body_len = self._head_size = self._fields = 0

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return  # bounded: we drop what we will never answer
        self._last_active = self._reactor.seconds()
        fresh = False  # a new head starts in `data`
        if self._in_head or self._chunk_open:
            if not self._head_read:
                fresh = self._in_head
                self._head_read = len(data)
            elif self._held is not None:
                data = self._hold(data)
                if data is None:
                    return
            else:
                self._head_read += len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            # We speak no other protocol; the upgrade request itself is answered
            # with Connection: close and the rest of the stream is ignored.
            self._closing = True
            return
        except HttpParserInvalidURLError as exc:
            # Raw bytes >= 0x80 in a request target: llhttp refuses them, Go takes them.
            # Escaped and parsed again from the start, if this request began the read (a
            # pipelined one after another in the same read cannot be found again: 400).
            escaped = data
            if fresh and self._head_read == len(data):
                escaped = escape_request_line(data, True)
            if escaped is not data:
                self._restart_parser()
                self.dataReceived(escaped)
            else:
                self._fail(400, f"Bad request: {exc}")
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
        if self._head_read and (self._in_head or self._chunk_open):
            # Still inside a head or trailer block: refuse it once too large, else hold
            # the next pieces back (the common single-read request never gets here).
            if self._head_read > self._max_head:
                self._fail(431, _HEAD_TOO_LARGE.format(self._max_head))
            elif not self._closing:
                if fresh:  # is the request line still coming? Its later pieces get escaped too
                    self._line_open = data.lstrip(b"\r\n").find(b"\n") < 0
                elif self._line_open:
                    self._line_open = data.find(b"\n") < 0
                self._held = []
                self._held_tail = data[-2:]  # a blank line may straddle two reads

    def _restart_parser(self) -> None:
        """Forget the request whose first bytes the parser refused: it is fed again."""
        self._parser = HttpRequestParser(self)
        self._headers = {}
        self._repeated = self._spill = None
        self._reset_message()
        self._head_read = 0

    def _hold(self, data: bytes) -> bytes | None:
        """Keep a piece of an unfinished head (or trailer block); give back everything held
        once it may complete it (a blank line arrived) or has doubled what was fed."""
        held = self._held
        held.append(data)
        size = self._held_len = self._held_len + len(data)
        self._head_read += len(data)
        if self._head_read > self._max_head:
            self._held = None
            self._fail(431, _HEAD_TOO_LARGE.format(self._max_head))
            return None
        probe = self._held_tail + data
        if (b"\n\r\n" not in probe and b"\n\n" not in probe
                and size < max(_HOLD_MIN, self._head_read - size)):
            self._held_tail = probe[-2:]
            return None
        self._held = None
        self._held_len = 0
        data = held[0] if len(held) == 1 else b"".join(held)
        if self._in_head and self._line_open and not data.isascii():
            data = escape_request_line(data, False)
            self._line_open = data.find(b"\n") < 0
        return data

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._closing:
            raise _Reject()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Header fields and trailer fields share one budget of bytes and of fields. The bytes
        # are checked at the end of the head (or trailers) and after each read; the fields
        # here, so a flood of tiny ones stops early. (Trailers land in a dict nobody reads:
        # handlers see headers only, as Go's do.)
        self._head_size += len(name) + len(value) + 4
        self._fields += 1  # counting up: small ints are cached, no allocation
        if self._fields > self._max_fields:
            self._reject(431, _TOO_MANY_FIELDS.format(self._max_fields))
        key = _HEADER_NAMES.get(name) or name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        if key in headers:
            # Joined once at the end of the head: joining per field is quadratic.
            repeated = self._repeated
            if repeated is None:
                repeated = self._repeated = {}
            values = repeated.get(key)
            if values is None:
                repeated[key] = [headers[key], text]
            else:
                values.append(text)
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_read = 0
        if self._head_size > self._max_head:
            self._reject(431, _HEAD_TOO_LARGE.format(self._max_head))
        headers = self._request_headers = self._headers
        self._headers = {}  # the next head's; trailers, if any, land here first and are dropped
        if self._repeated is not None:
            for key, values in self._repeated.items():
                headers[key] = ", ".join(values)
            self._repeated = None
        cap = self._max_body
        if self.factory.body_limits:  # a few paths (/v1/snapshot) take larger bodies
            cap = self.factory.body_limits.get(self._url.partition(b"?")[0], cap)
        self._body_cap = cap
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            self._reject(413, _BODY_TOO_LARGE.format(cap))
        expect = headers.get("expect")
        if (expect is not None and expect.lower() == "100-continue"
                and self._parser.get_http_version() == "1.1"):
            self._emit(_CONTINUE, close=False)

    def on_chunk_header(self) -> None:
        self._chunk_open = True

    def on_chunk_complete(self) -> None:
        self._chunk_open = False
        self._head_read = 0
        if self._head_size > self._max_head:  # the trailers, after the last chunk
            self._reject(431, _HEAD_TOO_LARGE.format(self._max_head))

    def on_body(self, body: bytes) -> None:
        size = self._body_len + len(body)
        if size > self._body_cap:
            self._reject(413, _BODY_TOO_LARGE.format(self._body_cap))
        self._body_len = size
        if self._chunk_open:
            self._chunk_open = False
            self._head_read = 0
        spill = self._spill
        if spill is not None:
            spill += body
        elif len(self._body) < _MAX_BODY_PARTS:
            self._body.append(body)
        else:
            # Many tiny pieces (1-byte chunks): one growing buffer, not a list of
            # small objects each costing ~40 bytes of memory per body byte.
            self._spill = bytearray().join(self._body)
            self._spill += body
            self._body = []

    def on_message_complete(self) -> None:
        parser = self._parser
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        version = parser.get_http_version()
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii", "replace")
        url = self._url
        refusal = None
        if url[:1] == b"/" or url == b"*":
            raw_path, _, raw_query = url.partition(b"?")
        else:  # absolute-form, as sent to proxies: `GET http://host/p?q HTTP/1.1`
            try:
                parsed = parse_url(url)
                raw_path, raw_query = parsed.path or b"/", parsed.query or b""
            except HttpParserError:
                raw_path = raw_query = b""
                refusal = "Bad request: malformed request target"
        # Strictly UTF-8: two different keys must never decode to one string.
        path, problem = decode_path(raw_path)
        if problem is not None:
            refusal = problem
        if self._spill is None:
            body = self._body
            body = body[0] if len(body) == 1 else b"".join(body)
        else:
            body = bytes(self._spill)
            self._spill = None
        request = Request(method, path, raw_path, raw_query, self._request_headers, body,
                          self._client, version)
        # (_head_read and _chunk_open are back to 0/False: set at the end of the head or
        # of the last chunk.)
        if self._headers:  # trailers came
            self._headers = {}
            self._repeated = None
        self._reset_message()
        self._in_head = True
        if not keep_alive:
            self._closing = True
        head = method == "HEAD"
        http10 = version == "1.0"
        data = None
        try:
            if refusal is not None:  # answered here: no handler sees an undecodable path
                result = text_response(400, refusal)
            else:
                result = self._handler(request)
            if iscoroutine(result):
                result = Deferred.fromCoroutine(result)
            if not isinstance(result, Deferred):
                data = self._encode(result, head, keep_alive, http10)
        except Exception as exc:
            self.log.failure("HTTP handler failed for {request}", request=request)
            data = self._encode(text_response(500, str(exc)), head, keep_alive, http10)
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
            slot.data = self._encode(text_response(500, str(exc)), *slot.shape)
        self._flush()

    def _on_failure(self, failure: Failure, slot: _Slot, request: Request) -> None:
        slot.deferred = None
        if self._lost:
            if not failure.check(CancelledError):
                self.log.failure("HTTP handler failed for {request} after disconnect",
                                 failure=failure, request=request)
            return
        self.log.failure("HTTP handler failed for {request}", failure=failure, request=request)
        slot.data = self._encode(text_response(500, str(failure.value)), *slot.shape)
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
        self._emit(self._encode(text_response(status, message), False, False, False), True)

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
        if self._peer_key is not None:
            self.factory.release(self._peer_key)
            self._peer_key = None


@implementer(IHalfCloseableProtocol)
class _TooManyConnections(Protocol):
    """Answers a connection over its client's limit with 429, then closes it.

    (Consul 1.8.7 closes such a connection without a word; later versions answer 429,
    which tells the client what happened.) The client's input is read and dropped for
    a moment so the close does not turn into a reset that discards the answer."""

    def __init__(self, reactor: Any, answer: bytes) -> None:
        self._reactor = reactor
        self._answer = answer
        self._linger_call = None

    def connectionMade(self) -> None:
        self.transport.write(self._answer)
        lose_write = getattr(self.transport, "loseWriteConnection", None)
        if lose_write is None:
            self.transport.loseConnection()
            return
        lose_write()
        self._linger_call = self._reactor.callLater(_LINGER_SECONDS, self.transport.loseConnection)

    def dataReceived(self, data: bytes) -> None:
        pass

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None


class HTTPFactory(Factory):
    """Builds an `HTTPProtocol` per connection and holds what they share:
    the handler, the limits, the connection count per client and the cached Date header."""

    protocol = HTTPProtocol
    noisy = False  # one log line per listening port is enough

    def __init__(self, handler: Callable[[Request], Response | Deferred],
                 reactor: Any, *, max_body: int = 8 * 1024 * 1024,
                 max_header_bytes: int = 1024 * 1024,
                 max_header_fields: int = DEFAULT_MAX_HEADER_FIELDS,
                 max_conns_per_client: int = 0, idle_timeout: float = 600.0,
                 body_limits: dict[bytes, int] | None = None) -> None:
        self.handler = handler
        # Raw request paths whose bodies may exceed `max_body`, with their own cap.
        self.body_limits = dict(body_limits or {})
        self.reactor = reactor
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self.max_header_fields = max_header_fields
        # Concurrent connections per client IP; 0 means no limit, as in Consul. May be
        # changed at any time (a config reload): it applies to the next connection.
        self.max_conns_per_client = max_conns_per_client
        self.idle_timeout = idle_timeout
        self._conns: dict[str, int] = {}
        self._date_second = -1
        self._date_line = b""

    def buildProtocol(self, addr: Any) -> Protocol:
        host = getattr(addr, "host", None)  # None on a UNIX socket: no client IP to limit
        if host is not None:
            count = self._conns.get(host, 0)
            limit = self.max_conns_per_client
            if 0 < limit <= count:
                answer = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: " + TEXT
                          + b"\r\nConnection: close\r\n")
                body = _TOO_MANY_CONNS.format(limit).encode()
                answer += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                return _TooManyConnections(self.reactor, answer)
            self._conns[host] = count + 1
        protocol = self.protocol()
        protocol.factory = self
        protocol._peer_key = host
        return protocol

    def release(self, host: str) -> None:
        """A connection from `host` counted by buildProtocol has closed."""
        count = self._conns.get(host, 0) - 1
        if count > 0:
            self._conns[host] = count
        else:
            self._conns.pop(host, None)

    def connections(self, host: str) -> int:
        """How many connections from `host` are open now."""
        return self._conns.get(host, 0)

    def date_line(self) -> bytes:
        """The `Date: ...\\r\\n` header line, formatted at most once a second."""
        second = int(self.reactor.seconds())
        if second != self._date_second:
            self._date_second = second
            self._date_line = b"Date: %s\r\n" % formatdate(second, usegmt=True).encode("ascii")
        return self._date_line
