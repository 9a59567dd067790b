"""Issue 9, the HTTP wire and its listeners: nothing a client sends loses data, hangs the agent
or gets a 500.

- Paths and query values that are not UTF-8 once percent-decoded are refused (400), so two
  different keys never collapse into one; UTF-8 keys, raw or escaped, round-trip exactly.
- Chunked trailers share the head's byte and field budget; repeated header names, heads
  arriving in tiny pieces and bodies sent as tiny chunks cost linear work.
- `limits.http_max_conns_per_client` is enforced (429) and follows a reload; the listen
  backlog is the system's.
- A client's token never reaches the log.
- `addresses.http = "unix:///path"` serves the API on a UNIX socket with `unix_sockets`.
- `/` answers as Consul's index does.

Pure tiers drive the protocol through a StringTransport; the rest runs real agent processes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs

from agent.errors import InvalidRequest
from gateway.http.listen import (
    FALLBACK_BACKLOG,
    UnixSocketEndpoint,
    UnixSocketError,
    http_endpoint,
    listen_backlog,
)
from gateway.http.protocol import HTTPFactory
from gateway.http.request import Request, Response, redact_query
from tests.agentproc import ROOT, AgentProcess
from tests.test_http_protocol import GET, Harness, HalfCloseTransport

HEADER_LIMIT = 1024 * 1024
DEADLINE = 20.0  # generous bounds for "answered at all", never timing asserts


# --- helpers -----------------------------------------------------------------------------------


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One response from `sock`: (status, lower-cased headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        headers[name.decode().lower()] = value.decode()
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def exchange(address, data: bytes, family=socket.AF_INET) -> tuple[int, dict, bytes]:
    """Send raw bytes on a fresh connection, read one response."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(DEADLINE)
        s.connect(address)
        s.sendall(data)
        return read_response(s)


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


class Agent(AgentProcess):
    """A real agent whose readiness is checked by `ready()`, with extra import paths (a test
    plugin) and arguments; `wait_exit` runs one that is expected to refuse to start."""

    def __init__(self, *args: str, extra_path: str = "", log_level: str = "warn") -> None:
        super().__init__(*args)
        self.args[self.args.index("-log-level") + 1] = log_level
        self.extra_path = extra_path

    def _spawn(self) -> None:
        path = os.pathsep.join(p for p in (str(ROOT), self.extra_path) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", *self.args],
                                     cwd=ROOT, env=dict(os.environ, PYTHONPATH=path),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ready(self) -> bool:
        try:
            status, _, body = exchange(("127.0.0.1", self.port),
                                       b"GET /v1/status/leader HTTP/1.1\r\nHost: a\r\n"
                                       b"Connection: close\r\n\r\n")
        except OSError:
            return False
        return status == 200 and bool(json.loads(body))

    def start(self, timeout: float = 15.0) -> "Agent":
        self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("agent exited: " + self.proc.stderr.read().decode())
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("agent did not come up in time")

    def wait_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        self._spawn()
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return self.proc.returncode, err.decode("utf-8", "replace")


class UnixAgent(Agent):
    def __init__(self, sock_path: str, *args: str) -> None:
        super().__init__(*args)
        self.sock_path = sock_path

    def ready(self) -> bool:
        try:
            status, _, body = exchange(self.sock_path, b"GET /v1/status/leader HTTP/1.1\r\n"
                                       b"Host: a\r\nConnection: close\r\n\r\n", socket.AF_UNIX)
        except OSError:
            return False
        return status == 200 and bool(json.loads(body))


def write_config(tmp_path: Path, name: str, doc: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture(scope="module")
def agent():
    proc = Agent().start()
    yield proc
    proc.stop()


# --- 1. paths and query values that are not UTF-8 ---------------------------------------------


def test_distinct_non_utf8_keys_are_refused_not_merged(agent):
    for raw in ("coll%ff", "coll%fe", "coll%c3%28"):
        status, _, body = agent.request("PUT", f"/v1/kv/h1a/{raw}", b"v")
        assert (status, body) == (400, b"Invalid URL path: not valid UTF-8 (byte 0x%s at offset "
                                       b'15, after "/v1/kv/h1a/coll")' % raw[5:7].encode())
    status, _, body = agent.request("GET", "/v1/kv/h1a/?keys")
    assert status == 404  # nothing was written under another name


def test_raw_non_utf8_byte_in_path_is_400(agent):
    status, _, body = exchange(("127.0.0.1", agent.port),
                               b"PUT /v1/kv/h1b/raw\xff HTTP/1.1\r\nHost: a\r\nContent-Length: 1"
                               b"\r\nConnection: close\r\n\r\nv")
    assert (status, body) == (400, b"Invalid URL path: not valid UTF-8 (byte 0xff at offset 14, "
                                   b'after "/v1/kv/h1b/raw")')
    assert agent.request("GET", "/v1/kv/h1b/?keys")[0] == 404


def test_utf8_keys_round_trip_exactly_raw_or_escaped(agent):
    key = "h1c/ключ/日本/é"
    value = b"\xff\x00binary\xfe"
    # Raw UTF-8 bytes on the wire, as `curl -X PUT http://host/v1/kv/ключ` sends them.
    status, _, body = exchange(("127.0.0.1", agent.port),
                               b"PUT /v1/kv/" + key.encode() + b" HTTP/1.1\r\nHost: a\r\n"
                               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(value)
                               + value)
    assert (status, body.strip()) == (200, b"true")
    status, _, body = agent.request("GET", "/v1/kv/" + quote(key) + "?raw")
    assert (status, body) == (200, value)
    status, _, body = agent.request("GET", "/v1/kv/" + quote(key))
    [entry] = json.loads(body)
    assert entry["Key"] == key
    assert base64.b64decode(entry["Value"]) == value
    status, _, body = agent.request("GET", "/v1/kv/h1c/?keys")
    assert json.loads(body) == [key]
    # Escaped on the way in, raw on the way out: the same key.
    status, _, _ = agent.request("PUT", "/v1/kv/" + quote("h1/ключ2"), b"x")
    assert status == 200
    status, _, body = exchange(("127.0.0.1", agent.port),
                               "GET /v1/kv/h1/ключ2?raw HTTP/1.1\r\nHost: a\r\n"
                               "Connection: close\r\n\r\n".encode())
    assert (status, body) == (200, b"x")


def test_non_utf8_query_values_are_400(agent):
    status, _, body = agent.request("GET", "/v1/kv/h1/x?dc=%ff")
    assert (status, body) == (400, b'Invalid URL query: the value of "dc" is not valid UTF-8 '
                                   b"(byte 0xff at offset 0)")
    status, _, body = agent.request("GET", "/v1/catalog/service/web?tag=a&b%fe=1")
    assert (status, body) == (400, b"Invalid URL query: a field name is not valid UTF-8 "
                                   b'(byte 0xfe at offset 1, after "b")')
    status, _, body = exchange(("127.0.0.1", agent.port),
                               b"GET /v1/kv/h1/x?dc=\xc3 HTTP/1.1\r\nHost: a\r\n"
                               b"Connection: close\r\n\r\n")
    assert (status, body) == (400, b'Invalid URL query: the value of "dc" is not valid UTF-8 '
                                   b"(byte 0xc3 at offset 0)")
    # A UTF-8 value is fine, escaped or not.
    assert agent.request("GET", "/v1/catalog/service/web?tag=%C3%A9")[0] == 200


def test_pure_path_decoding_is_strict_and_exact():
    h = Harness()
    h.send(b"GET /v1/kv/a%20b%C3%A9/%E2%82%AC HTTP/1.1\r\n\r\n"
           b"GET /v1/kv/x%ed%a0%80 HTTP/1.1\r\n\r\n"  # an encoded surrogate is not UTF-8
           b"GET /v1/kv/ok HTTP/1.1\r\n\r\n")
    assert [r.path for r in h.requests] == ["/v1/kv/a bé/€", "/v1/kv/ok"]
    statuses = [(s, b) for s, _, b in h.responses()]
    assert statuses[1] == (400, b"Invalid URL path: not valid UTF-8 (byte 0xed at offset 8, "
                                b'after "/v1/kv/x")')
    assert statuses[0][0] == statuses[2][0] == 200
    assert not h.transport.disconnecting  # a refused path does not end the connection


def test_pure_query_decoding():
    assert Request(raw_query=b"a=%C3%A9&b=+x&c").query == {"a": ["é"], "b": [" x"], "c": [""]}
    with pytest.raises(InvalidRequest, match=r'a field name is not valid UTF-8 \(byte 0x80 at '
                                             r'offset 2, after "é"\)'):
        Request(raw_query=b"ok=1&%C3%A9%80=v").query
    with pytest.raises(InvalidRequest, match=r'the value of "k" is not valid UTF-8 \(byte 0xff at '
                                             r'offset 3, after "abc"\)'):
        Request(raw_query=b"k=abc\xff").query


def test_pure_raw_utf8_request_line_in_one_or_many_reads():
    body = b"\xff\n\xfe\r\n\r\nnot a head\xc3"
    request = ("PUT /v1/kv/ключ?flags=1&v=é HTTP/1.1\r\nX-Name: é\r\n").encode() + \
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    for pieces in ([request], [request[:14], request[14:]], [request[:9], request[9:20],
                                                            request[20:]],
                   [request[i:i + 1] for i in range(len(request))]):
        h = Harness()
        for piece in pieces:
            h.send(piece)
        [req] = h.requests
        assert (req.path, req.query, req.body) == ("/v1/kv/ключ", {"flags": ["1"], "v": ["é"]},
                                                   body)
        assert req.headers["x-name"] == "é".encode().decode("latin-1")  # untouched
        assert [s for s, _, _ in h.responses()] == [200]


def test_pipelined_raw_utf8_target_after_another_in_one_read_is_400():
    # The second request's start cannot be found again in the read: refused, never misparsed.
    h = Harness()
    h.send(GET + "GET /v1/kv/ключ HTTP/1.1\r\n\r\n".encode())
    assert [(s, b) for s, _, b in h.responses()] == [
        (200, b'{"path":"/v1/kv/x"}'), (400, b"Bad request: Invalid char in url path")]
    h = Harness()  # in a read of its own it is fine
    h.send(GET)
    h.send("GET /v1/kv/ключ HTTP/1.1\r\n\r\n".encode())
    assert [r.path for r in h.requests] == ["/v1/kv/x", "/v1/kv/ключ"]


def test_bad_absolute_form_target_is_400_not_500():
    h = Harness()
    with capturedLogs() as events:
        h.send(b"GET http://[bad HTTP/1.1\r\n\r\n" + b"GET /ok HTTP/1.1\r\n\r\n")
    assert [s for s, _, _ in h.responses()] == [400, 200]
    assert not any(e.get("log_failure") for e in events)


# --- 6. trailers, repeated headers and tiny pieces ---------------------------------------------


CHUNKED = b"PUT /v1/kv/t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"


def test_trailers_count_against_the_field_limit():
    h = Harness(max_header_fields=10)
    h.send(CHUNKED + b"0\r\n" + b"X-T: v\r\n" * 11 + b"\r\n")
    [(status, headers, body)] = h.responses()
    assert (status, body) == (431, b"Request header fields too large, max count: 10 fields")
    assert h.requests == []
    assert headers[b"connection"] == b"close"


def test_trailers_count_against_the_byte_limit_across_reads():
    h = Harness(max_header_bytes=1024)
    h.send(CHUNKED + b"0\r\nX-Big: ")
    for _ in range(10):
        h.send(b"a" * 200)  # one unfinished trailer value, never a complete field
    assert [s for s, _, _ in h.responses()] == [431]
    assert h.transport.disconnecting


def test_trailers_are_dropped_and_headers_kept():
    h = Harness()
    h.send(CHUNKED + b"0\r\nX-Consul-Token: from-trailer\r\nX-T: 1\r\nX-T: 2\r\n\r\n" + CHUNKED
           + b"0\r\n\r\n")
    first, second = h.requests
    assert first.body == second.body == b"hello"
    assert "x-consul-token" not in first.headers and "x-t" not in first.headers
    assert [s for s, _, _ in h.responses()] == [200, 200]


def test_repeated_header_names_are_joined_once_and_limited():
    h = Harness(max_header_fields=100)
    h.send(b"GET /a HTTP/1.1\r\n" + b"X-R: v\r\n" * 99 + b"\r\n")
    assert h.requests[0].headers["x-r"] == ", ".join(["v"] * 99)
    h.send(b"GET /b HTTP/1.1\r\n" + b"X-R: v\r\n" * 101 + b"\r\n")
    assert [s for s, _, _ in h.responses()] == [200, 431]


class CountingParser:
    """Wraps the protocol's parser to count how often it is fed."""

    def __init__(self, parser) -> None:
        self._parser = parser
        self.feeds = 0

    def feed_data(self, data: bytes) -> None:
        self.feeds += 1
        self._parser.feed_data(data)

    def __getattr__(self, name: str):
        return getattr(self._parser, name)


def test_head_in_tiny_pieces_is_held_not_fed_piece_by_piece():
    h = Harness()
    counting = h.proto._parser = CountingParser(h.proto._parser)
    value = b"v" * 100_000
    data = b"GET /v1/kv/x HTTP/1.1\r\nX-Big: " + value + b"\r\n\r\n"
    for i in range(0, len(data), 10):
        h.send(data[i:i + 10])
    assert h.requests[0].headers["x-big"] == value.decode()
    assert [s for s, _, _ in h.responses()] == [200]
    # 10,004 reads; the parser saw a few dozen (one per doubling), not 10,004.
    assert counting.feeds < 40


def test_head_split_at_the_blank_line_is_answered_at_once():
    h = Harness()
    for piece in (b"GET /a HTTP/1.1\r\nHost: a\r", b"\n", b"\r", b"\n"):
        h.send(piece)
    assert [r.path for r in h.requests] == ["/a"]
    # A 100-continue head split in two must be answered before the body arrives.
    h.send(b"PUT /b HTTP/1.1\r\nContent-Length: 2\r\n")
    h.send(b"Expect: 100-continue\r\n\r\n")
    assert h.transport.value().endswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    h.send(b"ok")
    assert h.requests[1].body == b"ok"


def test_trailers_in_tiny_pieces_complete():
    h = Harness()
    counting = h.proto._parser = CountingParser(h.proto._parser)
    data = CHUNKED + b"0\r\nX-T: " + b"t" * 50_000 + b"\r\n\r\n"
    for i in range(0, len(data), 7):
        h.send(data[i:i + 7])
    assert h.requests[0].body == b"hello"
    assert counting.feeds < 60


def test_body_in_one_byte_chunks_is_kept_exactly():
    h = Harness()
    body = bytes(range(256)) * 20
    h.send(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"".join(b"1\r\n%s\r\n" % body[i:i + 1] for i in range(len(body))) + b"0\r\n\r\n")
    assert h.requests[0].body == body
    assert isinstance(h.requests[0].body, bytes)


def _flood_and_probe(agent, flood: bytes) -> tuple[int, bytes]:
    """Send `flood` from one client while another asks for the leader; the other must be
    answered (before the fix the flood pinned the reactor for a minute)."""
    result: dict = {}
    started = threading.Event()

    def flooder() -> None:
        with socket.create_connection(("127.0.0.1", agent.port), timeout=60) as s:
            try:
                s.sendall(flood[:len(flood) // 8])
                started.set()
                s.sendall(flood[len(flood) // 8:])
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                started.set()
            try:
                result["answer"] = read_response(s)
            except OSError as exc:
                result["error"] = exc

    thread = threading.Thread(target=flooder)
    thread.start()
    try:
        assert started.wait(DEADLINE)
        status, _, body = exchange(("127.0.0.1", agent.port),
                                   b"GET /v1/status/leader HTTP/1.1\r\nHost: a\r\n"
                                   b"Connection: close\r\n\r\n")
        assert status == 200 and json.loads(body)
    finally:
        thread.join(60)
    assert "answer" in result, result
    status, _, body = result["answer"]
    return status, body


def test_huge_trailers_get_431_and_others_are_served(agent):
    flood = (b"PUT /v1/kv/h1/trailers HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"1\r\nx\r\n0\r\n" + b"X-T: v\r\n" * 600_000 + b"\r\n")
    assert _flood_and_probe(agent, flood)[0] == 431
    assert agent.request("GET", "/v1/kv/h1/trailers")[0] == 404


def test_many_repeated_headers_get_431_and_others_are_served(agent):
    flood = (b"GET /v1/status/leader HTTP/1.1\r\nHost: a\r\n" + b"X-R: v\r\n" * 120_000
             + b"\r\n")
    status, body = _flood_and_probe(agent, flood)
    assert (status, body) == (431, b"Request header fields too large, max count: 1000 fields")


# --- 8. connections per client, backlog --------------------------------------------------------


def _connect(factory: HTTPFactory, host: str, transport=None):
    proto = factory.buildProtocol(IPv4Address("TCP", host, 40000))
    transport = transport or HalfCloseTransport(peerAddress=IPv4Address("TCP", host, 40000))
    proto.makeConnection(transport)
    return proto, transport


def test_connections_over_the_per_client_limit_get_429():
    clock = Clock()
    factory = HTTPFactory(lambda r: Response(200, b"ok"), clock, max_conns_per_client=2)
    (p1, _), (p2, _) = _connect(factory, "10.0.0.1"), _connect(factory, "10.0.0.1")
    p3, t3 = _connect(factory, "10.0.0.1")
    assert t3.value().startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert t3.value().endswith(b"the limit is 2 (limits.http_max_conns_per_client)\n")
    assert t3.write_closed  # half-closed, then closed after a short linger
    clock.advance(2)
    assert t3.disconnecting
    p3.connectionLost(None)
    other, t_other = _connect(factory, "10.0.0.2")  # another client is not affected
    assert t_other.value() == b""
    p1.connectionLost(None)
    assert factory.connections("10.0.0.1") == 1
    p4, t4 = _connect(factory, "10.0.0.1")
    assert t4.value() == b""
    for proto in (p2, p4, other):
        proto.connectionLost(None)
    assert factory.connections("10.0.0.1") == 0
    assert clock.getDelayedCalls() == []


def test_zero_means_no_limit_and_unix_clients_are_not_limited():
    factory = HTTPFactory(lambda r: Response(200), Clock(), max_conns_per_client=0)
    protos = [_connect(factory, "10.0.0.1") for _ in range(300)]
    assert all(t.value() == b"" for _, t in protos)
    factory.max_conns_per_client = 1  # a reload lowers it: the next connection is refused
    assert _connect(factory, "10.0.0.1")[1].value().startswith(b"HTTP/1.1 429")
    proto = factory.buildProtocol(UNIXAddress(b"/tmp/x.sock"))
    proto.makeConnection(StringTransport())
    assert proto.transport.value() == b""


def test_listen_backlog_is_the_systems(tmp_path):
    (tmp_path / "somaxconn").write_text("65535\n")
    assert listen_backlog(tmp_path / "somaxconn") == 65535
    assert listen_backlog(tmp_path / "missing") == FALLBACK_BACKLOG
    system = Path("/proc/sys/net/core/somaxconn")
    if system.exists():
        assert listen_backlog() == int(system.read_text())


def test_per_client_limit_against_a_real_agent_follows_reload(tmp_path):
    config = tmp_path / "limits.json"
    config.write_text(json.dumps({"ui": False, "limits": {"http_max_conns_per_client": 5}}))
    proc = Agent("-config-file", str(config)).start()
    held: list[socket.socket] = []
    try:
        address = ("127.0.0.1", proc.port)

        def fill_to_limit(limit: int) -> socket.socket:
            # Open connections until one is refused; those accepted stay open.
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                s = socket.create_connection(address, timeout=DEADLINE)
                s.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: a\r\n\r\n")
                status, _, body = read_response(s)
                if status == 429:
                    return s, body
                assert status == 200
                held.append(s)
            raise AssertionError("never refused")

        refused, body = fill_to_limit(5)
        assert len(held) == 5
        assert body == (b"Too many concurrent connections from this client: the limit is 5 "
                        b"(limits.http_max_conns_per_client)\n")
        assert closed_by_peer(refused)
        refused.close()
        # Raise the limit and reload through a connection already held.
        config.write_text(json.dumps({"ui": False, "limits": {"http_max_conns_per_client": 7}}))
        held[0].sendall(b"PUT /v1/agent/reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        assert read_response(held[0])[0] == 200
        refused, _ = fill_to_limit(7)
        assert len(held) == 7
        refused.close()
        # A closed connection frees its place.
        held.pop().close()
        deadline = time.monotonic() + DEADLINE
        while True:
            with socket.create_connection(address, timeout=DEADLINE) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                status, headers, body = read_response(s)
            if status != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        # ui is false: the index answers as Consul's does, so a check on the agent passes.
        assert (status, body, headers["content-type"]) == (200, b"Consul Agent",
                                                           "text/plain; charset=utf-8")
    finally:
        for s in held:
            s.close()
        proc.stop()


# --- 14. tokens never reach the log ------------------------------------------------------------


def test_redact_query():
    assert redact_query(b"") == b""
    assert redact_query(b"recurse&keys") == b"recurse&keys"
    assert redact_query(b"token=s3cret&x=%ff") == b"token=<hidden>&x=%ff"
    assert redact_query(b"a=1&%74oken=s3cret&token=two") == b"a=1&%74oken=<hidden>&token=<hidden>"
    assert redact_query(b"mytoken=visible") == b"mytoken=visible"
    assert "s3cret" not in repr(Request(raw_path=b"/v1/kv/x", raw_query=b"token=s3cret"))


FAULTY_PLUGIN = '''
from gateway.hookspecs import hookimpl


@hookimpl
def waypost_frontends(facade):
    """Test fault: every read of the core fails inside the HTTP handler."""
    def broken(*args, **kwargs):
        raise RuntimeError("injected fault")
    facade.read = broken
    return []
'''


def test_token_never_reaches_the_log_when_a_handler_fails(tmp_path):
    (tmp_path / "waypost_faulty.py").write_text(FAULTY_PLUGIN)
    dist = tmp_path / "waypost_faulty-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: waypost-faulty\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[waypost]\nfaulty = waypost_faulty\n")
    proc = Agent(extra_path=str(tmp_path), log_level="debug").start()
    try:
        secret = "f00dfeed-5ec2-e7aa-aaaa-000000000001"
        status, _, body = proc.request(
            "GET", f"/v1/kv/h1/x?token={secret}&stale",
            headers={"X-Consul-Token": secret + "h", "Authorization": f"Bearer {secret}b"})
        assert (status, body) == (500, b"injected fault")  # the fault really happened
        status, _, _ = proc.request("GET", f"/v1/catalog/nodes?%74oken={secret}")
        assert status == 500
        deadline = time.monotonic() + DEADLINE
        log = ""
        while log.count("HTTP handler failed") < 2 and time.monotonic() < deadline:
            log += proc.log_so_far()
            time.sleep(0.05)
        assert log.count("HTTP handler failed") == 2, log
        assert "token=<hidden>" in log
        assert secret not in log
    finally:
        proc.stop()


# --- 21. a UNIX socket for the HTTP API --------------------------------------------------------


@pytest.fixture
def sock_dir():
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path may be too deep.
    import tempfile
    with tempfile.TemporaryDirectory(prefix="wp-") as name:
        yield Path(name)


def test_http_on_a_unix_socket_with_mode_and_owner(tmp_path, sock_dir):
    import grp
    path = sock_dir / "http.sock"
    # A stale socket left by a dead agent is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    group = grp.getgrgid(os.getgid()).gr_name
    config = write_config(tmp_path, "unix.json", {
        "addresses": {"http": f"unix://{path}"},
        "unix_sockets": {"mode": "0660", "user": str(os.getuid()), "group": group}})
    proc = UnixAgent(str(path), "-config-file", config).start()
    try:
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
        put = exchange(str(path), b"PUT /v1/kv/h1/unix HTTP/1.1\r\nHost: a\r\n"
                       b"Content-Length: 5\r\nConnection: close\r\n\r\nhello", socket.AF_UNIX)
        assert put[0] == 200
        got = exchange(str(path), b"GET /v1/kv/h1/unix?raw HTTP/1.1\r\nHost: a\r\n"
                       b"Connection: close\r\n\r\n", socket.AF_UNIX)
        assert (got[0], got[2]) == (200, b"hello")
        # Many connections from the socket: there is no client IP to limit.
        conns = [socket.socket(socket.AF_UNIX) for _ in range(210)]
        for s in conns:
            s.settimeout(DEADLINE)
            s.connect(str(path))
        conns[-1].sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(conns[-1])[0] == 200
        for s in conns:
            s.close()
    finally:
        proc.stop()
    assert not path.exists()  # removed on the way out


def test_unix_socket_refusals(tmp_path, sock_dir):
    # Not a socket: left alone, and the agent says why it will not start.
    path = sock_dir / "data.txt"
    path.write_text("precious")
    config = write_config(tmp_path, "a.json", {"addresses": {"http": f"unix://{path}"}})
    code, err = Agent("-config-file", config).wait_exit()
    assert code != 0
    assert f"cannot listen on unix socket {path}: the path exists and is not a socket" in err
    assert path.read_text() == "precious"
    # Settings are checked with clear words.
    for settings, words in (({"mode": "rw-rw----"}, "/unix_sockets/mode: 'rw-rw----' does not "
                                                    "match"),  # the schema's words
                            ({"user": "no-such-user-h1"}, "invalid user specified for unix "
                                                          "socket: no-such-user-h1"),
                            ({"group": "no-such-group-h1"}, "invalid group specified for unix "
                                                            "socket: no-such-group-h1")):
        config = write_config(tmp_path, "b.json", {
            "addresses": {"http": f"unix://{sock_dir / 'x.sock'}"}, "unix_sockets": settings})
        code, err = Agent("-config-file", config).wait_exit()
        assert code != 0 and words in err, err
        assert not (sock_dir / "x.sock").exists()


def test_dns_on_a_unix_socket_is_refused_at_start(tmp_path, sock_dir):
    config = write_config(tmp_path, "dns.json",
                          {"addresses": {"dns": f"unix://{sock_dir / 'dns.sock'}"}})
    code, err = Agent("-config-file", config).wait_exit()
    assert code != 0
    assert "DNS address cannot be a unix socket" in err


def test_unix_endpoint_in_process_refuses_a_live_socket(sock_dir):
    from twisted.internet.testing import MemoryReactor
    path = sock_dir / "live.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen(1)
    try:
        endpoint = UnixSocketEndpoint(MemoryReactor(), str(path), {}, 128)
        failure = endpoint.listen(object())
        errors = []
        failure.addErrback(errors.append)
        assert errors[0].check(UnixSocketError)
        assert "another process is listening on it" in str(errors[0].value)
        assert path.exists()
    finally:
        live.close()


def test_tcp_endpoint_gets_the_backlog():
    from twisted.internet.testing import MemoryReactor

    class Config:
        http_addr, client_addr, unix_sockets = "", "127.0.0.1", {}

        class ports:
            http = 0

    reactor = MemoryReactor()
    http_endpoint(reactor, Config, 1234).listen(object())
    assert reactor.tcpServers[0][2] == 1234  # (port, factory, backlog, interface)


# --- 22. the index --------------------------------------------------------------------------


def test_index_redirects_to_the_ui_when_it_is_enabled(agent):
    address = ("127.0.0.1", agent.port)
    status, headers, body = exchange(address, b"GET /?index=abc HTTP/1.1\r\nHost: a\r\n"
                                     b"Connection: close\r\n\r\n")
    assert (status, headers["location"], headers["content-type"], body) == (
        301, "/ui/", "text/html; charset=utf-8", b'<a href="/ui/">Moved Permanently</a>.\n\n')
    status, headers, body = exchange(address, b"PUT / HTTP/1.1\r\nHost: a\r\n"
                                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    assert (status, headers["location"], body) == (301, "/ui/", b"")
    assert exchange(address, b"GET /ui HTTP/1.1\r\nConnection: close\r\n\r\n")[0] == 301
    # Following the redirect, as an HTTP check does, ends in a 200 that says what is missing.
    status, _, body = agent.request("GET", "/")
    assert status == 200 and b"not built" in body
