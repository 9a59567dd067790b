"""Tests for gateway.http.protocol: a pure tier driven through StringTransport
and a Clock, then a socket tier on 127.0.0.1 with the real reactor."""

from __future__ import annotations

import re

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from gateway.http.protocol import HTTPFactory, HTTPProtocol
from gateway.http.request import Request, Response

DATE_RE = re.compile(rb"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$")


def parse_responses(data: bytes, head: bool = False) -> tuple[list, bytes]:
    """Split `data` into complete responses (status, headers, body) and the rest."""
    responses = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return responses, data
        lines = data[:end].split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers[name.lower()] = value
        length = 0 if head or status == 100 else int(headers.get(b"content-length", 0))
        if len(data) < end + 4 + length:
            return responses, data
        responses.append((status, headers, data[end + 4:end + 4 + length]))
        data = data[end + 4 + length:]


class Harness:
    """One protocol on a StringTransport with a Clock as its reactor."""

    def __init__(self, handler=None, transport=None, **limits) -> None:
        self.requests: list[Request] = []
        self.handler = handler or self.ok
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.factory = HTTPFactory(self._handle, self.clock, **limits)
        self.proto = self.factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 8500))
        self.transport = transport or StringTransport(
            peerAddress=IPv4Address("TCP", "10.0.0.9", 40000))
        self.proto.makeConnection(self.transport)

    def _handle(self, request):
        self.requests.append(request)
        return self.handler(request)

    @staticmethod
    def ok(request):
        return Response(200, b'{"path":"%s"}' % request.raw_path)

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def responses(self, head: bool = False) -> list:
        responses, rest = parse_responses(self.transport.value(), head)
        assert rest == b""
        return responses

    def lose(self) -> None:
        self.proto.connectionLost(Failure(ConnectionError("gone")))


GET = b"GET /v1/kv/x HTTP/1.1\r\nHost: a\r\n\r\n"


# Pure tier


def test_simple_get() -> None:
    h = Harness()
    h.send(b"GET /v1/agent/self HTTP/1.1\r\nHost: localhost\r\nX-Consul-Token: t\r\n\r\n")
    [(status, headers, body)] = h.responses()
    assert status == 200
    assert body == b'{"path":"/v1/agent/self"}'
    assert headers[b"content-length"] == b"%d" % len(body)
    assert headers[b"content-type"] == b"application/json"
    assert DATE_RE.match(headers[b"date"])
    assert b"connection" not in headers
    assert not h.transport.disconnecting
    [req] = h.requests
    assert (req.method, req.path, req.raw_path, req.raw_query) == (
        "GET", "/v1/agent/self", b"/v1/agent/self", b"")
    assert req.query == {}
    assert req.headers == {"host": "localhost", "x-consul-token": "t"}
    assert req.body == b""
    assert req.client == ("10.0.0.9", 40000)
    assert req.http_version == "1.1"


def test_status_line_and_extra_headers() -> None:
    h = Harness(lambda r: Response(404, b"nope", [(b"X-Consul-Index", b"7")], None))
    h.send(GET)
    raw = h.transport.value()
    assert raw.startswith(b"HTTP/1.1 404 Not Found\r\n")
    [(status, headers, body)] = h.responses()
    assert (status, body, headers[b"x-consul-index"]) == (404, b"nope", b"7")
    assert b"content-type" not in headers


def test_query_and_percent_decoded_path() -> None:
    h = Harness()
    h.send(b"GET /v1/kv/a%20b?recurse&separator=/&dc=dc1&dc=dc2 HTTP/1.1\r\nHost: a\r\n\r\n")
    [req] = h.requests
    assert req.path == "/v1/kv/a b"
    assert req.raw_path == b"/v1/kv/a%20b"
    assert req.raw_query == b"recurse&separator=/&dc=dc1&dc=dc2"
    assert req.query == {"recurse": [""], "separator": ["/"], "dc": ["dc1", "dc2"]}


def test_repeated_headers_are_joined() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: a/b\r\nACCEPT: c/d\r\n\r\n")
    assert h.requests[0].headers["accept"] == "a/b, c/d"


def test_request_built_by_hand() -> None:
    req = Request(path="/v1/kv/a b", query={"recurse": [""]})
    assert (req.method, req.raw_path, req.query, req.headers) == (
        "GET", b"/v1/kv/a%20b", {"recurse": [""]}, {})


def test_pipelined_responses_keep_request_order() -> None:
    pending: list[Deferred] = []

    def handler(request):
        if request.path == "/sync":
            return Response(200, b"sync")
        d: Deferred = Deferred()
        pending.append(d)
        return d

    h = Harness(handler)
    h.send(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /sync HTTP/1.1\r\n\r\n"
           b"GET /c HTTP/1.1\r\n\r\n")
    assert [r.path for r in h.requests] == ["/a", "/b", "/sync", "/c"]
    pending[2].callback(Response(200, b"c"))
    pending[1].callback(Response(200, b"b"))
    assert h.transport.value() == b""
    pending[0].callback(Response(200, b"a"))
    assert [body for _, _, body in h.responses()] == [b"a", b"b", b"sync", b"c"]
    assert not h.transport.disconnecting


def test_many_pending_responses_pause_reading() -> None:
    pending: list[Deferred] = []

    def handler(request):
        pending.append(Deferred())
        return pending[-1]

    h = Harness(handler)
    h.send(GET * 40)
    assert h.transport.producerState == "paused"
    for d in pending:
        d.callback(Response(200, b"x"))
    assert h.transport.producerState == "producing"
    assert len(h.responses()) == 40


def test_content_length_body_across_reads() -> None:
    h = Harness()
    h.send(b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello")
    assert h.requests == []
    h.send(b" world")
    assert h.requests[0].method == "PUT"
    assert h.requests[0].body == b"hello world"
    assert h.responses()[0][0] == 200


def test_chunked_body() -> None:
    h = Harness()
    h.send(b"PUT /v1/kv/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n")
    h.send(b"0\r\n\r\n")
    assert h.requests[0].body == b"hello world"
    assert h.responses()[0][0] == 200


def test_declared_body_too_large_is_413_and_closes() -> None:
    h = Harness(max_body=10)
    h.send(b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
    [(status, headers, body)] = h.responses()
    assert status == 413
    assert body == b"Request body too large, max size: 10 bytes"
    assert headers[b"content-type"].startswith(b"text/plain")
    assert headers[b"connection"] == b"close"
    assert h.transport.disconnecting
    assert h.requests == []
    h.send(b"0123456789" * 100)  # the rest of the body is dropped
    assert len(h.responses()) == 1


def test_chunked_body_too_large_is_413() -> None:
    h = Harness(max_body=10)
    h.send(b"PUT /v1/kv/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n")
    h.send(b"6\r\nworld!\r\n0\r\n\r\n")
    assert [r[0] for r in h.responses()] == [413]
    assert h.transport.disconnecting
    assert h.requests == []


def test_headers_too_large_in_one_read_is_431() -> None:
    h = Harness(max_header_bytes=1024)
    h.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n")
    [(status, _, body)] = h.responses()
    assert status == 431
    assert body == b"Request header fields too large, max size: 1024 bytes"
    assert h.transport.disconnecting
    assert h.requests == []


def test_unfinished_headers_too_large_is_431() -> None:
    h = Harness(max_header_bytes=1024)
    h.send(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(10):
        h.send(b"a" * 200)
    assert [r[0] for r in h.responses()] == [431]
    assert h.transport.disconnecting


def test_large_body_in_same_read_as_small_head_is_fine() -> None:
    h = Harness(max_header_bytes=100)
    h.send(b"PUT /k HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000 + GET)
    assert [s for s, _, _ in h.responses()] == [200, 200]
    assert len(h.requests[0].body) == 5000


class HalfCloseTransport(StringTransport):
    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def test_error_mid_body_half_closes_then_lingers() -> None:
    h = Harness(transport=HalfCloseTransport(), max_body=10)
    h.send(b"PUT /k HTTP/1.1\r\nContent-Length: 20\r\n\r\n")
    h.send(b"x" * 20)
    assert h.responses()[0][0] == 413
    assert h.transport.write_closed and not h.transport.disconnecting
    h.send(b"more data the client had in flight")
    assert len(h.responses()) == 1
    h.clock.advance(2)
    assert h.transport.disconnecting
    h.lose()
    assert h.clock.getDelayedCalls() == []


def test_linger_timer_cancelled_when_client_closes() -> None:
    h = Harness(transport=HalfCloseTransport())
    h.send(b"GET / HTTP/1.1\r\nX-Partial: ")
    h.send(b"\x00\r\n\r\n")
    assert h.responses()[0][0] == 400
    h.lose()
    assert h.clock.getDelayedCalls() == []


def test_absolute_form_and_asterisk_targets() -> None:
    h = Harness()
    h.send(b"GET http://example.com:8500/v1/kv/a%2Fb?raw HTTP/1.1\r\n\r\n"
           b"OPTIONS * HTTP/1.1\r\n\r\n")
    first, second = h.requests
    assert (first.raw_path, first.path, first.query) == (b"/v1/kv/a%2Fb", "/v1/kv/a/b", {"raw": [""]})
    assert (second.method, second.path) == ("OPTIONS", "*")


def test_garbage_is_400_and_closes() -> None:
    h = Harness()
    h.send(b"\x00\x01 this is not http\r\n\r\n")
    [(status, headers, body)] = h.responses()
    assert status == 400
    assert body.startswith(b"Bad request")
    assert headers[b"connection"] == b"close"
    assert h.transport.disconnecting


def test_garbage_after_pending_request_is_answered_in_order() -> None:
    d: Deferred = Deferred()
    h = Harness(lambda r: d)
    h.send(GET + b"BOGUS\r\n\r\n")
    assert h.transport.value() == b""
    d.callback(Response(200, b"first"))
    assert [(s, b) for s, _, b in h.responses()][0] == (200, b"first")
    assert [s for s, _, _ in h.responses()] == [200, 400]
    assert h.transport.disconnecting


def test_expect_100_continue() -> None:
    h = Harness()
    h.send(b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert h.transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    h.send(b"data")
    assert [s for s, _, _ in h.responses()] == [100, 200]
    assert h.requests[0].body == b"data"


def test_expect_100_continue_with_too_large_body_gets_413_only() -> None:
    h = Harness(max_body=3)
    h.send(b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert [s for s, _, _ in h.responses()] == [413]


def test_head_has_length_but_no_body() -> None:
    h = Harness(lambda r: Response(200, b"0123456789"))
    h.send(b"HEAD /v1/kv/x HTTP/1.1\r\n\r\n" + GET)
    responses = h.transport.value().split(b"\r\n\r\n")
    assert b"Content-Length: 10" in responses[0]
    assert responses[1].startswith(b"HTTP/1.1 200 OK")  # no body after the HEAD answer
    assert responses[2] == b"0123456789"


def test_no_content_has_no_length() -> None:
    h = Harness(lambda r: Response(204, b"ignored", content_type=None))
    h.send(GET)
    assert b"Content-Length" not in h.transport.value()
    assert h.transport.value().endswith(b"\r\n\r\n")


def test_connection_close_is_honoured() -> None:
    h = Harness()
    h.send(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    [(status, headers, _)] = h.responses()
    assert headers[b"connection"] == b"close"
    assert h.transport.disconnecting
    assert [r.path for r in h.requests] == ["/a"]


def test_http10_closes_by_default() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.0\r\n\r\n")
    [(_, headers, _)] = h.responses()
    assert headers[b"connection"] == b"close"
    assert h.transport.disconnecting
    assert h.requests[0].http_version == "1.0"


def test_http10_keep_alive() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    h.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert [r[1][b"connection"] for r in h.responses()] == [b"keep-alive"] * 2
    assert not h.transport.disconnecting


def test_upgrade_request_is_answered_then_closed() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x01")
    [(status, headers, _)] = h.responses()
    assert (status, headers[b"connection"]) == (200, b"close")
    assert h.transport.disconnecting


def test_handler_exception_is_500_and_connection_survives() -> None:
    def handler(request):
        if request.path == "/boom":
            raise ValueError("kaput")
        return Response(200, b"fine")

    h = Harness(handler)
    with capturedLogs() as events:
        h.send(b"GET /boom HTTP/1.1\r\n\r\n")
    h.send(b"GET /ok HTTP/1.1\r\n\r\n")
    (s1, headers, b1), (s2, _, b2) = h.responses()
    assert (s1, b1, headers[b"content-type"]) == (500, b"kaput", b"text/plain; charset=utf-8")
    assert (s2, b2) == (200, b"fine")
    assert not h.transport.disconnecting
    assert any(e.get("log_failure") is not None for e in events)


def test_failed_deferred_is_500() -> None:
    d: Deferred = Deferred()
    h = Harness(lambda r: d)
    h.send(GET)
    with capturedLogs():
        d.errback(RuntimeError("late failure"))
    assert [(s, b) for s, _, b in h.responses()] == [(500, b"late failure")]
    assert not h.transport.disconnecting


def test_handler_may_return_already_fired_deferred_or_coroutine() -> None:
    async def coro(request):
        return Response(200, b"coro")

    h = Harness(lambda r: succeed(Response(200, b"sync")) if r.path == "/d" else coro(r))
    h.send(b"GET /d HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n")
    assert [b for _, _, b in h.responses()] == [b"sync", b"coro"]


def test_bad_handler_result_is_500() -> None:
    h = Harness(lambda r: "not a response")
    with capturedLogs():
        h.send(GET)
    assert h.responses()[0][0] == 500


def test_unencodable_deferred_result_is_500_and_connection_survives() -> None:
    d: Deferred = Deferred()
    h = Harness(lambda r: d if r.path == "/bad" else Response(200, b"ok"))
    h.send(b"GET /bad HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n")
    with capturedLogs() as events:
        d.callback(Response(200, b"x", [(b"X-Str", "not bytes")]))
    assert [s for s, _, _ in h.responses()] == [500, 200]
    assert any(e.get("log_failure") for e in events)
    assert not h.transport.disconnecting


def test_disconnect_cancels_pending_deferred() -> None:
    cancelled = []
    d: Deferred = Deferred(cancelled.append)
    h = Harness(lambda r: d)
    h.send(GET)
    with capturedLogs() as events:
        h.lose()
    assert cancelled == [d]
    assert h.transport.value() == b""
    assert not any(e.get("log_failure") for e in events)  # CancelledError is swallowed
    assert h.clock.getDelayedCalls() == []


def test_other_failure_after_disconnect_is_logged() -> None:
    d: Deferred = Deferred(lambda d: d.errback(RuntimeError("watch broke")))
    h = Harness(lambda r: d)
    h.send(GET)
    with capturedLogs() as events:
        h.lose()
    assert h.transport.value() == b""
    assert [e["log_failure"].value.args for e in events if e.get("log_failure")] == [
        ("watch broke",)]


def test_end_of_input_closes_after_written_answers() -> None:
    cancelled = []
    h = Harness(lambda r: Deferred(cancelled.append) if r.path == "/park" else Response(200))
    h.send(b"GET /now HTTP/1.1\r\n\r\nGET /park HTTP/1.1\r\n\r\n")
    h.proto.readConnectionLost()
    assert h.transport.disconnecting
    assert [s for s, _, _ in h.responses()] == [200]
    h.lose()
    assert len(cancelled) == 1


def test_idle_connection_is_closed() -> None:
    h = Harness(idle_timeout=60)
    h.clock.advance(30)
    h.send(GET)
    h.clock.advance(59)
    assert not h.transport.disconnecting  # the request reset the timer
    h.clock.advance(1)
    assert h.transport.disconnecting
    h.lose()
    assert h.clock.getDelayedCalls() == []


def test_request_in_flight_is_not_idle() -> None:
    d: Deferred = Deferred()
    h = Harness(lambda r: d, idle_timeout=60)
    h.send(GET)
    h.clock.advance(300)
    assert not h.transport.disconnecting
    d.callback(Response(200, b"late"))
    h.clock.advance(59)
    assert not h.transport.disconnecting
    h.clock.advance(1)
    assert h.transport.disconnecting


def test_connection_lost_cancels_timers() -> None:
    h = Harness()
    assert len(h.clock.getDelayedCalls()) == 1
    h.lose()
    assert h.clock.getDelayedCalls() == []


def test_date_is_cached_per_second() -> None:
    h = Harness()
    first = h.factory.date_line()
    h.clock.advance(0.5)
    assert h.factory.date_line() is first
    h.clock.advance(1)
    assert h.factory.date_line() != first


# Socket tier


class Client(Protocol):
    """Collects response bytes; `wait(n)` fires with n parsed responses."""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed: Deferred = Deferred()
        self._want: tuple[int, Deferred] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def wait(self, count: int) -> Deferred:
        from twisted.internet import reactor

        d: Deferred = Deferred()
        self._want = (count, d)
        self._check()
        return d.addTimeout(10, reactor)

    def _check(self) -> None:
        if self._want is None:
            return
        responses, rest = parse_responses(self.buffer)
        count, d = self._want
        if len(responses) >= count:
            self._want = None
            self.buffer = rest
            d.callback(responses)

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)


class TrackedProtocol(HTTPProtocol):
    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        self.factory.lost.append(self)
        waiters, self.factory.waiters = self.factory.waiters, []
        for d in waiters:
            d.callback(None)


class TrackedFactory(HTTPFactory):
    protocol = TrackedProtocol

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lost: list = []
        self.waiters: list[Deferred] = []

    def all_lost(self, count: int) -> Deferred:
        from twisted.internet import reactor

        if len(self.lost) >= count:
            return succeed(None)
        d: Deferred = Deferred()
        self.waiters.append(d)
        return d.addCallback(lambda _: self.all_lost(count)).addTimeout(10, reactor)


@pytest.fixture
def server():
    """Yields a function starting a server; stops every port at teardown."""
    from twisted.internet import reactor

    ports = []

    def start(handler, **limits):
        factory = TrackedFactory(handler, reactor, **limits)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return factory, port.getHost().port

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


async def connect(port: int) -> Client:
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Client())


async def close(client: Client, factory: TrackedFactory, count: int) -> None:
    client.transport.loseConnection()
    await client.closed
    await factory.all_lost(count)


@pytest_twisted.ensureDeferred
async def test_socket_keep_alive_reuses_one_connection(server) -> None:
    clients = set()

    def handler(request):
        clients.add(request.client)
        return Response(200, b'{"n":"%s"}' % request.raw_query)

    factory, port = server(handler)
    client = await connect(port)
    for i in range(100):
        client.transport.write(b"GET /v1/kv/x?%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        [(status, _, body)] = await client.wait(1)
        assert (status, body) == (200, b'{"n":"%d"}' % i)
    assert len(clients) == 1
    await close(client, factory, 1)


@pytest_twisted.ensureDeferred
async def test_socket_pipelining_and_delayed_answers(server) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    def handler(request):
        n = int(request.query["n"][0])
        return deferLater(reactor, 0.001 * (10 - n), Response, 200, b"%d" % n)

    factory, port = server(handler)
    client = await connect(port)
    client.transport.write(b"".join(b"GET /?n=%d HTTP/1.1\r\n\r\n" % i for i in range(10)))
    responses = await client.wait(10)
    assert [body for _, _, body in responses] == [b"%d" % i for i in range(10)]
    await close(client, factory, 1)


@pytest_twisted.ensureDeferred
async def test_socket_connection_close(server) -> None:
    factory, port = server(lambda r: Response(200, b"bye"))
    client = await connect(port)
    client.transport.write(b"PUT /v1/kv/k HTTP/1.1\r\nConnection: close\r\n"
                           b"Content-Length: 3\r\n\r\nabc")
    [(status, headers, _)] = await client.wait(1)
    assert headers[b"connection"] == b"close"
    await client.closed  # the server closed it
    await factory.all_lost(1)


@pytest_twisted.ensureDeferred
async def test_socket_413_reaches_client_still_sending(server) -> None:
    factory, port = server(lambda r: Response(200), max_body=1000)
    client = await connect(port)
    client.transport.write(b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n")
    client.transport.write(b"x" * 1_000_000)
    [(status, _, body)] = await client.wait(1)
    assert status == 413
    assert body == b"Request body too large, max size: 1000 bytes"
    await close(client, factory, 1)


@pytest_twisted.ensureDeferred
async def test_socket_disconnect_cancels_parked_request(server) -> None:
    parked: Deferred = Deferred()
    cancelled: Deferred = Deferred()

    def handler(request):
        parked.callback(None)
        return Deferred(lambda d: cancelled.callback(request.path))

    factory, port = server(handler)
    client = await connect(port)
    client.transport.write(b"GET /v1/kv/x?index=5&wait=5m HTTP/1.1\r\n\r\n")
    await parked
    await close(client, factory, 1)
    assert await cancelled == "/v1/kv/x"
    assert client.buffer == b""


@pytest_twisted.ensureDeferred
async def test_socket_client_half_close_still_gets_answer(server) -> None:
    factory, port = server(lambda r: Response(200, b"answer"))
    client = await connect(port)
    client.transport.write(b"GET /v1/status/leader HTTP/1.0\r\n\r\n")
    client.transport.loseWriteConnection()
    [(status, _, body)] = await client.wait(1)
    assert (status, body) == (200, b"answer")
    await client.closed
    await factory.all_lost(1)
