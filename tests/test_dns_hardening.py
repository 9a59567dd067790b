"""Issue 9 for DNS: nothing a client, a recursor or an odd catalog entry does may crash the
agent, wedge a connection or produce bytes that are not DNS.

What runs here:
- a real agent (`agent`) for DNS over TCP with dropped messages, EDNS versions, answers that
  cannot be encoded, and the hypothesis fuzz tests on UDP and TCP;
- a real agent with tight TCP limits (`tight`) for clients that open connections and never read;
- a real agent whose recursors are fake ones in this process (`recursing`), for bad answers,
  hung TCP recursors and pipelined forwarded queries;
- in-process tests of the TCP protocol (StringTransport, Clock), the forwarder and the
  controller for what is hard to provoke from outside.

Consul 1.8.7 (its miekg/dns server), observed on the real binary over TCP: an empty frame, a
frame shorter than a header and a response (QR=1) get no answer, the connection stays open and
later queries are answered; a header-only query gets FORMERR. Over EDNS it ignores the version
and answers as for version 0; we answer BADVERS as RFC 6891 requires (dig retries with version
0 by itself). An answer that cannot be encoded (an empty label, a name over 255 octets) gets no
reply at all from Consul ("failed to respond: dns: bad rdata"); we answer SERVFAIL.
"""

from __future__ import annotations

import select
import selectors
import socket
import struct
import subprocess
import threading
import time
from types import SimpleNamespace

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from agent.config.model import DNSConfig
from gateway.dns import wire
from gateway.dns.authority import Answer
from gateway.dns.recursor import Forwarder
from gateway.dns.server import DNSController
from gateway.dns.stream import DNSStreamFactory
from tests.agentproc import free_ports
from tests.test_dns_e2e import DNSAgent, addresses, ask

OUTSIDE = "10.20.30.40"  # what the good fake recursor answers for every name


# --- helpers ---------------------------------------------------------------------------------

def query(name: str, rdtype: str = "A", ident: int = 1, **kw) -> bytes:
    message = dns.message.make_query(name, rdtype, **kw)
    message.id = ident
    return message.to_wire()


def frame(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def read_frame(sock: socket.socket) -> bytes:
    """One length-prefixed message; AssertionError if the connection closes first."""
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            assert chunk, "the agent closed the connection"
            data += chunk
        return data
    return exactly(struct.unpack("!H", exactly(2))[0])


def read_until(sock: socket.socket, ident: int) -> list[bytes]:
    """Frames up to and including the one with `ident`."""
    frames = []
    while True:
        data = read_frame(sock)
        frames.append(data)
        if data[:2] == struct.pack("!H", ident):
            return frames


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the agent closed or reset this connection, without reading what it sent."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def poll_until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def alive(agent: DNSAgent) -> None:
    assert agent.proc.poll() is None, agent.proc.stderr.read().decode()


def udp_good(port: int) -> None:
    assert addresses(ask(port, "web.service.consul")) == {"10.0.1.1"}


# --- agents ----------------------------------------------------------------------------------

def register_web(proc: DNSAgent) -> None:
    proc.put("/v1/catalog/register", {"Node": "n1", "Address": "10.0.1.1",
                                      "Service": {"ID": "web1", "Service": "web", "Port": 80}})


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    proc = DNSAgent(tmp_path_factory.mktemp("hardening")).start()
    try:
        register_web(proc)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    config = {"plugins": {"dns": {"tcp_idle_timeout": 0.5, "tcp_max_connections": 8}}}
    proc = DNSAgent(tmp_path_factory.mktemp("tight"), config).start()
    try:
        register_web(proc)
        # An answer of about 33 KB: a few of them fill any socket buffer.
        meta = {f"k{i}": "v" * 500 for i in range(64)}
        proc.put("/v1/catalog/register", {"Node": "fat", "Address": "10.0.0.9",
                                          "NodeMeta": meta})
        yield proc
    finally:
        proc.stop()


# --- DNS over TCP: dropped messages hold up nothing (item 7) ---------------------------------

DROPPED = {
    "empty frame": b"",
    "5 bytes": b"\x12\x34\x01\x00\x00",
    "11 bytes": b"\x12\x34\x01\x00" + b"\x00" * 7,
    "a response": dns.message.make_response(
        dns.message.make_query("web.service.consul", "A")).to_wire(),
}


@pytest.mark.parametrize("bad", list(DROPPED), ids=list(DROPPED))
def test_tcp_dropped_message_does_not_hold_up_later_answers(agent, bad):
    with socket.create_connection(("127.0.0.1", agent.dns_port), timeout=5) as s:
        # Bad, good, bad, good, good in one write: three answers, in order, nothing else.
        good = [query("web.service.consul", ident=i) for i in (101, 102, 103)]
        s.sendall(frame(DROPPED[bad]) + frame(good[0]) + frame(DROPPED[bad]) + frame(good[1])
                  + frame(good[2]))
        for ident in (101, 102, 103):
            reply = dns.message.from_wire(read_frame(s))
            assert reply.id == ident and addresses(reply) == {"10.0.1.1"}
        # Other connections too.
        assert addresses(ask(agent.dns_port, "web.service.consul", tcp=True)) == {"10.0.1.1"}


def test_tcp_malformed_query_gets_formerr_in_its_place(agent):
    header_only = struct.pack("!HHHHHH", 7, 0x0100, 0, 0, 0, 0)
    with socket.create_connection(("127.0.0.1", agent.dns_port), timeout=5) as s:
        s.sendall(frame(b"") + frame(header_only) + frame(query("web.service.consul", ident=8)))
        formerr = read_frame(s)
        assert struct.unpack("!HH", formerr[:4]) == (7, 0x8101)  # as Consul: FORMERR, RD kept
        assert dns.message.from_wire(read_frame(s)).id == 8


# --- EDNS versions (item 16) -----------------------------------------------------------------

@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name", ["web.service.consul", "nope.service.consul", "outside.example"])
def test_edns_version_other_than_0_gets_badvers(agent, tcp, name):
    packet = query(name, ident=77, use_edns=1, payload=1232)
    if tcp:
        with socket.create_connection(("127.0.0.1", agent.dns_port), timeout=5) as s:
            s.sendall(frame(packet))
            raw = read_frame(s)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(packet, ("127.0.0.1", agent.dns_port))
            raw = s.recv(65535)
    reply = dns.message.from_wire(raw)
    assert reply.id == 77 and reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0 and reply.payload == 1232  # our OPT: version 0
    assert not reply.answer and not reply.authority
    assert not reply.flags & dns.flags.AA
    assert str(reply.question[0].name) == name + "."
    # On the wire: header RCODE 0; the upper bits (1) in the OPT record's TTL, no options.
    assert raw[3] & 0xF == 0
    assert raw[-11:] == b"\x00" + struct.pack("!HHIH", 41, 1232, 1 << 24, 0)


def test_edns_version_0_still_answers(agent):
    reply = ask(agent.dns_port, "web.service.consul", use_edns=0, payload=1232)
    assert reply.rcode() == dns.rcode.NOERROR and reply.edns == 0
    assert addresses(reply) == {"10.0.1.1"}


def test_dig_negotiates_down_from_edns_1(agent):
    """dig sends version 1, gets BADVERS and asks again with version 0: the user sees the answer."""
    out = subprocess.run(["dig", "+edns=1", "+tries=1", "+time=3", "@127.0.0.1", "-p",
                          str(agent.dns_port), "web.service.consul"],
                         capture_output=True, text=True, timeout=20).stdout
    assert "status: NOERROR" in out and "10.0.1.1" in out, out
    out = subprocess.run(["dig", "+edns=1", "+noednsnegotiation", "+tries=1", "+time=3",
                          "@127.0.0.1", "-p", str(agent.dns_port), "web.service.consul"],
                         capture_output=True, text=True, timeout=20).stdout
    assert "status: BADVERS" in out and "EDNS: version: 0" in out, out


# --- answers that cannot be encoded ----------------------------------------------------------

def test_unencodable_answers_get_servfail_and_nothing_wedges(agent):
    # A service address with an empty label (a CNAME target nobody can encode), and a node
    # name that makes the SRV target longer than 255 octets.
    agent.put("/v1/catalog/register", {"Node": "n5", "Address": "10.0.0.5",
                                       "Service": {"Service": "emptylabel", "Port": 1,
                                                   "Address": "a..b"}})
    agent.put("/v1/catalog/register", {"Node": ("x" * 60 + ".") * 4 + "y", "Address": "10.0.0.8",
                                       "Service": {"Service": "deep", "Port": 1}})
    for name, rdtype in (("emptylabel.service.consul", "A"), ("deep.service.consul", "SRV")):
        for tcp in (False, True):
            reply = ask(agent.dns_port, name, rdtype, tcp=tcp)  # parses: a valid message
            assert reply.rcode() == dns.rcode.SERVFAIL and not reply.answer
    with socket.create_connection(("127.0.0.1", agent.dns_port), timeout=5) as s:
        s.sendall(frame(query("deep.service.consul", "SRV", ident=1))
                  + frame(query("web.service.consul", ident=2)))
        assert dns.message.from_wire(read_frame(s)).rcode() == dns.rcode.SERVFAIL
        assert addresses(dns.message.from_wire(read_frame(s))) == {"10.0.1.1"}
    alive(agent)


def test_name_encoder_refuses_names_over_255_octets():
    q = wire.parse_query(query("deep.service.consul", "SRV"))
    target = ("x" * 60 + ".") * 4 + "y.node.dc1.consul"  # 261 octets on the wire
    record = wire.Record(q.name, wire.SRV, 0, wire.SRVData(1, 1, 1, target))
    with pytest.raises(ValueError):
        wire.encode_response(q, wire.NOERROR, [record])
    # 255 octets exactly is allowed.
    name = ("x" * 63 + ".") * 3 + "x" * 61
    assert len(name) + 2 == 255
    packet = wire.encode_response(q, wire.NOERROR, [wire.Record(q.name, wire.CNAME, 0, name)])
    assert str(dns.message.from_wire(packet).answer[0][0].target) == name + "."


def test_query_names_that_cannot_be_echoed_get_formerr():
    # A name of 256 wire octets, and a label with a dot in it (echoed, it would become two).
    long_name = b"".join(bytes([63]) + b"a" * 63 for _ in range(4)) + b"\x00"
    dotted = b"\x03a.b\x06consul\x00"
    for qname in (long_name, dotted):
        packet = struct.pack("!HHHHHH", 5, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01"
        with pytest.raises(wire.FormatError):
            wire.parse_query(packet)


class _FakeFacade:
    def __init__(self) -> None:
        self.config = SimpleNamespace(dns_config=DNSConfig())
        self.leader_listeners: list = []

    def on_change(self, listener):
        return lambda: None

    def known_leader(self) -> bool:
        return True


class _FlakyAuthority:
    """Two addresses first (so the answer is cached with shuffled variants), then an answer
    whose encoding raises."""

    def __init__(self) -> None:
        self.calls = 0

    def handles(self, name: str) -> bool:
        return True

    def resolve(self, question, catalog, rng):
        self.calls += 1
        if self.calls == 1:
            return Answer(wire.NOERROR, [wire.Record(question.name, wire.A, 0, bytes([10, 0, 0, i]))
                                         for i in (1, 2)], [], [])
        return Answer(wire.NOERROR, [wire.Record(question.name, wire.CNAME, 0, "a..b")], [], [])


def test_a_variant_that_fails_to_encode_keeps_the_cached_answer():
    controller = DNSController(_FakeFacade(), Clock(), _FlakyAuthority(), None)
    first = controller.answer(query("web.service.consul", ident=1), udp=False)
    second = controller.answer(query("web.service.consul", ident=2), udp=False)
    assert dns.message.from_wire(second).id == 2
    assert addresses(dns.message.from_wire(second)) == addresses(dns.message.from_wire(first))


# --- DNS over TCP in process: ordering and flow control --------------------------------------

class _ScriptedController:
    """Answers by the query name's first label: `slow` a Deferred the test fires, `drop`
    nothing, `boom` raises, anything else at once."""

    def __init__(self) -> None:
        self.waiting: list[tuple[defer.Deferred, bytes]] = []

    def answer(self, packet: bytes, udp: bool):
        message = dns.message.from_wire(packet)
        label = message.question[0].name.labels[0]
        reply = dns.message.make_response(message).to_wire()
        if label == b"slow":
            d = defer.Deferred()
            self.waiting.append((d, reply))
            return d
        if label == b"drop":
            return None
        if label == b"boom":
            raise RuntimeError("a bug")
        return reply

    def fire_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d, reply in waiting:
            d.callback(reply)


class _Harness:
    def __init__(self, **limits) -> None:
        self.clock = Clock()
        self.controller = _ScriptedController()
        self.factory = DNSStreamFactory(self.controller, self.clock, **limits)
        self.transports: list[StringTransport] = []
        self.protos = [self.connect() for _ in range(1)]

    def connect(self):
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 53))
        transport = StringTransport()
        proto.makeConnection(transport)
        self.transports.append(transport)
        return proto

    def send(self, *names_and_ids, proto=0) -> None:
        data = b"".join(frame(query(name, ident=ident)) for name, ident in names_and_ids)
        self.protos[proto].dataReceived(data)

    def answers(self, index: int = 0) -> list[tuple[int, int]]:
        data = self.transports[index].value()
        self.transports[index].clear()
        out = []
        while data:
            size = struct.unpack_from("!H", data)[0]
            message = dns.message.from_wire(data[2:2 + size])
            out.append((message.id, message.rcode()))
            data = data[2 + size:]
        return out


def test_stream_dropped_message_between_slow_and_fast_keeps_the_order():
    h = _Harness()
    h.send(("slow.test", 1), ("drop.test", 2), ("fast.test", 3))
    assert h.answers() == []  # the fast answer waits behind the slow one
    h.controller.fire_all()
    assert h.answers() == [(1, 0), (3, 0)]
    h.send(("drop.test", 4), ("fast.test", 5))
    assert h.answers() == [(5, 0)]


def test_stream_answer_that_raises_gets_servfail_in_its_place():
    h = _Harness()
    h.send(("boom.test", 1), ("fast.test", 2))
    assert h.answers() == [(1, dns.rcode.SERVFAIL), (2, 0)]


def test_stream_pipelining_past_max_pending_pauses_reading_and_loses_nothing():
    h = _Harness(max_pending=4)
    transport = h.transports[0]
    h.send(*[("slow.test", i) for i in range(10)], ("fast.test", 10))
    assert len(h.controller.waiting) == 4
    assert transport.producerState == "paused" and not transport.disconnecting
    while h.controller.waiting:
        h.controller.fire_all()  # each round frees the queue; the next messages come in
    assert [ident for ident, _ in h.answers()] == list(range(11))
    assert transport.producerState == "producing" and not transport.disconnecting


def test_stream_client_not_reading_pauses_then_is_closed_then_aborted():
    h = _Harness(idle=5.0)
    proto, transport = h.protos[0], h.transports[0]
    assert transport.producer is proto and transport.streaming
    proto.pauseProducing()  # as the transport does when its send buffer is full
    h.send(("fast.test", 1), ("fast.test", 2))
    assert h.answers() == [] and transport.producerState == "paused"
    proto.resumeProducing()  # the client read: the buffered queries are answered
    assert h.answers() == [(1, 0), (2, 0)] and transport.producerState == "producing"
    proto.pauseProducing()
    h.clock.advance(5.0)  # idle, and the client is not reading: close
    assert transport.disconnecting and transport.producer is None and not transport.disconnected
    h.clock.advance(5.0)  # it still has not read what we sent: abort
    assert transport.disconnected
    proto.connectionLost(None)
    assert h.clock.getDelayedCalls() == [] and not h.factory.connections


def test_stream_idle_waits_for_outstanding_answers():
    h = _Harness(idle=5.0)
    h.send(("slow.test", 1))
    h.clock.advance(12.0)
    assert not h.transports[0].disconnecting  # an answer is still on its way
    h.controller.fire_all()
    assert h.answers() == [(1, 0)]
    h.clock.advance(5.0)
    assert h.transports[0].disconnecting


def test_stream_connection_cap_evicts_the_quietest():
    h = _Harness(max_connections=3)
    h.protos += [h.connect(), h.connect()]
    h.send(("fast.test", 1), proto=0)  # connection 0 is now the most recently active
    h.protos.append(h.connect())  # a fourth: connection 1 goes
    assert [t.disconnected for t in h.transports] == [False, True, False, False]
    assert len(h.factory.connections) == 3
    h.send(("fast.test", 2), proto=3)
    assert h.answers(3) == [(2, 0)]


# --- DNS over TCP for real: clients that never read ------------------------------------------

def test_tcp_clients_that_never_read_are_cut_off_and_others_are_served(tight):
    port = tight.dns_port
    hogs = []
    txt = frame(query("fat.node.consul", "TXT", ident=9))
    try:
        for _ in range(20):  # more than tcp_max_connections
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            try:
                s.send(txt * 300)  # ~10 MB of answers asked for; never read
            except BlockingIOError:
                pass
            hogs.append(s)
        # Others are served meanwhile, on TCP and UDP.
        assert addresses(ask(port, "web.service.consul", tcp=True)) == {"10.0.1.1"}
        udp_good(port)
        # Every hog is closed: evicted, or idle and aborted when it did not read.
        poll_until(lambda: all(closed_by_peer(s) for s in hogs), what="the hogs to be cut off")
        assert addresses(ask(port, "web.service.consul", tcp=True)) == {"10.0.1.1"}
        alive(tight)
    finally:
        for s in hogs:
            s.close()


def test_tcp_idle_connection_is_closed(tight):
    with socket.create_connection(("127.0.0.1", tight.dns_port), timeout=5) as s:
        s.sendall(frame(query("web.service.consul", ident=3)))
        assert dns.message.from_wire(read_frame(s)).id == 3
        poll_until(lambda: closed_by_peer(s), what="the idle connection to close")
        assert s.recv(1) == b""  # a clean close: everything sent was delivered


# --- recursors -------------------------------------------------------------------------------

class FakeRecursor:
    """A recursor on a free 127.0.0.1 port (UDP and TCP), served by a thread of this process.

    `mode` says what it answers: "good" (OUTSIDE for any A question), "silent" (nothing; TCP
    connections are kept open unanswered), or one of the bad answers in `_bad`.
    """

    def __init__(self, mode: str = "good") -> None:
        self.mode = mode
        self.port = free_ports(1)[0]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(64)
        self.hung_up = 0  # TCP connections the agent closed without an answer from us
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.udp, selectors.EVENT_READ, self._on_udp)
        self.selector.register(self.tcp, selectors.EVENT_READ, self._on_accept)
        self.buffers: dict[socket.socket, bytes] = {}
        self.answered: dict[socket.socket, bool] = {}
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        for sock in [self.udp, self.tcp, *self.buffers]:
            sock.close()

    def _run(self) -> None:
        while self.running:
            for key, _ in self.selector.select(0.05):
                try:
                    key.data(key.fileobj)
                except Exception as exc:  # noqa: BLE001 - keep serving; the test sees no answer
                    print("fake recursor:", repr(exc))

    def _on_udp(self, sock) -> None:
        packet, addr = sock.recvfrom(65535)
        for reply in self.replies(packet, tcp=False):
            sock.sendto(reply, addr)

    def _on_accept(self, sock) -> None:
        conn, _ = sock.accept()
        self.buffers[conn] = b""
        self.answered[conn] = False
        self.selector.register(conn, selectors.EVENT_READ, self._on_tcp)

    def _on_tcp(self, conn) -> None:
        try:
            data = conn.recv(65535)
        except OSError:
            data = b""
        if not data:
            if not self.answered.pop(conn):
                self.hung_up += 1
            self.selector.unregister(conn)
            del self.buffers[conn]
            conn.close()
            return
        buffer = self.buffers[conn] + data
        while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack_from("!H", buffer)[0]:
            size = struct.unpack_from("!H", buffer)[0]
            packet, buffer = buffer[2:2 + size], buffer[2 + size:]
            for reply in self.replies(packet, tcp=True):
                self.answered[conn] = True
                conn.sendall(frame(reply))
        self.buffers[conn] = buffer

    def replies(self, packet: bytes, tcp: bool) -> list[bytes]:
        q = dns.message.from_wire(packet)
        if self.mode == "silent":
            return []
        if self.mode == "good":
            return [good_answer(q)]
        return [self._bad(q, packet, tcp)]

    @staticmethod
    def _bad(q: dns.message.Message, packet: bytes, tcp: bool) -> bytes:
        make = BAD_ANSWERS.get(q.question[0].name.labels[0].decode(), None)
        return make(q, packet) if make is not None else good_answer(q)


def good_answer(q: dns.message.Message) -> bytes:
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", OUTSIDE))
    return r.to_wire()


def _header(q, flags=0x8180, counts=(1, 0, 0, 0)) -> bytes:
    return struct.pack("!HHHHHH", q.id, flags, *counts)


def _other_question(q, packet):
    other = dns.message.make_query("elsewhere.example", "A")
    other.id = q.id
    return good_answer(other)


def _refused(q, packet):
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.REFUSED)
    return r.to_wire()


def _rdata_loop(q, packet):
    # An answer whose CNAME target is a compression pointer to itself.
    question = q.question[0].name.to_wire() + b"\x00\x01\x00\x01"
    start = 12 + len(question) + 12
    record = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) + struct.pack("!H", 0xC000 | start)
    return _header(q, counts=(1, 1, 0, 0)) + question + record


# Selected by the query's first label, so one fake recursor can give any of them.
BAD_ANSWERS = {
    "echo": lambda q, packet: packet,  # the query itself: QR=0
    "short": lambda q, packet: packet[:2] + b"\x81",
    "empty": lambda q, packet: b"",
    "otherquestion": _other_question,
    "questionloop": lambda q, packet: _header(q) + b"\xc0\x0c\x00\x01\x00\x01",
    "truncatedrecord": lambda q, packet: good_answer(q)[:-3],
    "rdataloop": _rdata_loop,
    "refused": _refused,
    "trailing": lambda q, packet: good_answer(q) + b"junk after the last record",
}


@pytest.fixture(scope="module")
def recursors():
    bad, good = FakeRecursor("bad"), FakeRecursor("good")
    yield bad, good
    bad.stop()
    good.stop()


@pytest.fixture(scope="module")
def recursing(tmp_path_factory, recursors):
    bad, good = recursors
    config = {"recursors": [f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}"],
              "dns_config": {"recursor_timeout": "300ms"}}
    proc = DNSAgent(tmp_path_factory.mktemp("recursing"), config).start()
    try:
        register_web(proc)
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("kind", list(BAD_ANSWERS))
def test_bad_recursor_answers_are_never_passed_on(recursing, recursors, kind, tcp):
    """Whatever the first recursor sends back, the client gets a clean answer from the second
    (or the first's, cut at its last record), never the junk."""
    bad, _ = recursors
    bad.mode = "bad"
    reply = ask(recursing.dns_port, f"{kind}.example", tcp=tcp)  # parses strictly: no junk
    assert reply.rcode() == dns.rcode.NOERROR and addresses(reply) == {OUTSIDE}
    assert str(reply.question[0].name) == f"{kind}.example."


def test_servfail_when_no_recursor_answers_well(recursing, recursors):
    bad, good = recursors
    bad.mode = "bad"
    good.mode = "bad"
    try:
        for tcp in (False, True):
            reply = ask(recursing.dns_port, "echo.example", tcp=tcp)
            assert reply.rcode() == dns.rcode.SERVFAIL and not reply.answer
    finally:
        good.mode = "good"


def test_tcp_recursor_that_never_answers_is_hung_up_on(recursing, recursors):
    bad, _ = recursors
    bad.mode = "silent"
    before = bad.hung_up
    reply = ask(recursing.dns_port, "quiet.example", tcp=True)
    assert addresses(reply) == {OUTSIDE}  # from the second recursor, after the timeout
    poll_until(lambda: bad.hung_up > before, what="the agent to drop the silent recursor")


def test_pipelined_forwarded_queries_past_the_pending_limit_are_all_answered(recursing,
                                                                             recursors):
    """150 queries on one connection, each waiting on a silent recursor (more than the 64 the
    connection lets wait at once): all answered, in order, and the connection stays open."""
    bad, _ = recursors
    bad.mode = "silent"
    count = 150
    with socket.create_connection(("127.0.0.1", recursing.dns_port), timeout=10) as s:
        s.sendall(b"".join(frame(query(f"q{i}.example", ident=i)) for i in range(count)))
        for i in range(count):
            reply = dns.message.from_wire(read_frame(s))
            assert reply.id == i and addresses(reply) == {OUTSIDE}
        s.sendall(frame(query("web.service.consul", ident=999)))
        assert addresses(dns.message.from_wire(read_frame(s))) == {"10.0.1.1"}


class _UDPClock(Clock):
    """A Clock that can also listen on UDP, handing out a transport that records writes."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, tuple]] = []

    def listenUDP(self, port, protocol, interface=""):
        clock = self

        class Transport:
            def write(self, data, addr):
                clock.sent.append((data, addr))

        protocol.makeConnection(Transport())
        return SimpleNamespace(stopListening=protocol.doStop)  # as the port's connectionLost


def test_forwarder_refuses_more_waiting_queries_than_its_limit():
    clock = _UDPClock()
    forwarder = Forwarder(clock, ["127.0.0.1:5300"], 2.0, max_pending=3)
    waiting = [forwarder.forward(query(f"q{i}.example", ident=i), tcp=False) for i in range(3)]
    assert len(forwarder.pending) == 3 and not any(d.called for d in waiting)
    over = forwarder.forward(query("q3.example", ident=3), tcp=False)
    assert over.called and over.result is None  # at once: SERVFAIL for the client, no spin
    # An answer that does not match its question is ignored; the right one is taken.
    data, _ = clock.sent[0]
    sent = dns.message.from_wire(data)
    wrong = dns.message.make_query("elsewhere.example", "A")
    wrong.id = sent.id
    forwarder.datagramReceived(good_answer(wrong), ("127.0.0.1", 5300))
    assert not waiting[0].called
    forwarder.datagramReceived(good_answer(sent), ("127.0.0.1", 5300))
    assert addresses(dns.message.from_wire(waiting[0].result)) == {OUTSIDE}
    assert dns.message.from_wire(waiting[0].result).id == 0  # the client's ID, not ours
    clock.advance(2.0)
    assert all(d.called and d.result is None for d in waiting[1:])
    assert forwarder.pending == {}


def test_forwarder_stopped_mid_query_asks_nobody_else():
    clock = _UDPClock()
    forwarder = Forwarder(clock, ["127.0.0.1:5300", "127.0.0.1:5301"], 2.0)
    d = forwarder.forward(query("q.example"), tcp=False)
    d.addErrback(lambda f: f.trap(defer.CancelledError))
    forwarder.stop()
    assert d.called and len(clock.sent) == 1 and forwarder.port is None


# --- fuzz: generated packets at a real agent -------------------------------------------------

LABELS = st.one_of(
    st.sampled_from([b"web", b"service", b"consul", b"node", b"n1", b"addr", b"_web", b"_tcp",
                     b"0a000101", b"1", b"127", b"in-addr", b"arpa", b"WeB", b"query", b"dc1",
                     b"x" * 63]),
    st.binary(min_size=1, max_size=63))


@st.composite
def names(draw) -> bytes:
    labels = draw(st.lists(LABELS, max_size=6))
    out = b"".join(bytes([len(label)]) + label for label in labels)
    end = draw(st.sampled_from(["root", "root", "pointer", "self", "badlabel", "none"]))
    if end == "root":
        return out + b"\x00"
    if end == "pointer":  # anywhere: backwards, forwards, into itself
        return out + struct.pack("!H", 0xC000 | draw(st.integers(0, 400)))
    if end == "self":
        return b"\xc0\x0c"  # the question name pointing at itself: a loop
    if end == "badlabel":  # label types 01 and 10 are reserved
        return out + bytes([draw(st.sampled_from([0x40, 0x80, 0x7F, 0xBF]))])
    return out


TYPES = st.one_of(st.sampled_from([1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 250, 251, 252, 255, 0,
                                   65535]), st.integers(0, 65535))
CLASSES = st.one_of(st.sampled_from([1, 3, 254, 255, 0]), st.integers(0, 65535))


@st.composite
def opt_records(draw) -> bytes:
    options = b"".join(
        struct.pack("!HH", code, len(data)) + data
        for code, data in draw(st.lists(st.tuples(st.sampled_from([8, 10, 12, 15, 65001]),
                                                  st.binary(max_size=20)), max_size=3)))
    version = draw(st.sampled_from([0, 0, 1, 255]))
    ttl = (draw(st.integers(0, 255)) << 24) | (version << 16) | draw(st.integers(0, 0xFFFF))
    rdlen = draw(st.one_of(st.just(len(options)), st.integers(0, 65535)))
    owner = draw(st.one_of(st.just(b"\x00"), names()))
    return owner + struct.pack("!HHIH", 41, draw(st.integers(0, 65535)), ttl, rdlen) + options


@st.composite
def records(draw) -> bytes:
    data = draw(st.binary(max_size=30))
    rdlen = draw(st.one_of(st.just(len(data)), st.integers(0, 65535)))
    return draw(names()) + struct.pack("!HHIH", draw(TYPES), draw(CLASSES),
                                       draw(st.integers(0, 2**32 - 1)), rdlen) + data


@st.composite
def dns_packets(draw) -> bytes:
    """Structurally DNS: a header with random flags and counts, questions, records and OPT
    records; the counts may lie, and the packet may be cut anywhere."""
    questions = draw(st.lists(st.tuples(names(), TYPES, CLASSES), min_size=0, max_size=2))
    answers = draw(st.lists(records(), max_size=2))
    additional = draw(st.lists(st.one_of(opt_records(), records()), max_size=3))
    flags = draw(st.integers(0, 0xFFFF))
    if draw(st.booleans()):
        flags &= 0x7FFF  # mostly queries: they get further
    if draw(st.booleans()):
        flags &= ~0x7800  # and mostly opcode QUERY
    counts = [len(questions), len(answers), 0, len(additional)]
    if draw(st.integers(0, 4)) == 0:
        counts = draw(st.lists(st.sampled_from([0, 1, 2, 3, 255, 65535]), min_size=4,
                               max_size=4))
    packet = struct.pack("!HHHHHH", draw(st.integers(0, 65535)), flags, *counts)
    packet += b"".join(name + struct.pack("!HH", t, c) for name, t, c in questions)
    packet += b"".join(answers) + b"".join(additional)
    if draw(st.integers(0, 3)) == 0:
        packet = packet[:draw(st.integers(0, len(packet)))]
    return packet


QNAMES = st.sampled_from([
    "web.service.consul", "WEB.Service.Consul", "v1.web.service.consul", "_web._tcp.service.consul",
    "n1.node.consul", "n1.node.dc1.consul", "n1.node.dc2.consul", "0a000101.addr.dc1.consul",
    "zz.addr.consul", "nope.service.consul", "x.query.consul", "consul", "dc1.consul",
    "1.1.0.10.in-addr.arpa", "arpa", "outside.example", ".", "service.consul",
    "web.service.dc1.extra.consul", "a.b.c.d.e.f.node.consul"])


@st.composite
def plausible_queries(draw) -> bytes:
    """A well-formed query for names we know, with random type, class, flags and EDNS: these
    get past the parser to the authority, the encoder and the cache. Sometimes one byte is
    changed."""
    header = struct.pack("!HHHHHH", draw(st.integers(0, 65535)),
                         draw(st.integers(0, 0xFFFF)) & 0x7FFF & ~0x7800
                         if draw(st.integers(0, 3)) else draw(st.integers(0, 0xFFFF)),
                         1, 0, 0, 0)
    name = dns.name.from_text(draw(QNAMES)).to_wire()
    packet = bytearray(header + name + struct.pack("!HH", draw(TYPES), draw(CLASSES)))
    if draw(st.booleans()):
        packet[11] = 1
        packet += draw(opt_records())
    if draw(st.integers(0, 4)) == 0:
        packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
    return bytes(packet)


FUZZ_PACKETS = st.one_of(st.binary(max_size=600), dns_packets(), plausible_queries())


def _check_fuzz_reply(reply: bytes, sent: bytes) -> None:
    """An answer to a generated packet: DNS (dnspython parses it), with that packet's ID."""
    assert reply[:2] == sent[:2], (sent, reply)
    message = dns.message.from_wire(reply)
    assert message.flags & dns.flags.QR


def _good_id(packet: bytes) -> int:
    return 0x4242 if packet[:2] != b"\x42\x42" else 0x2424


def _udp_round(port: int, packet: bytes) -> None:
    """Send `packet`, then a good query; read until the good answer comes."""
    ident = _good_id(packet)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.send(packet)
        s.send(query("web.service.consul", ident=ident))
        others = 0
        while True:
            reply = s.recv(65535)
            if reply[:2] == struct.pack("!H", ident) and dns.message.from_wire(reply).question \
                    and str(dns.message.from_wire(reply).question[0].name) == "web.service.consul.":
                assert addresses(dns.message.from_wire(reply)) == {"10.0.1.1"}
                break
            _check_fuzz_reply(reply, packet)
            others += 1
            assert others == 1, "more than one answer to one packet"


def _tcp_round(port: int, frames: list[bytes], tail: bytes) -> None:
    """Each generated message on one connection, each followed by a good query whose answer
    must come; then `tail` (a frame cut short) and close. A good query on a new connection
    is answered afterwards."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for packet in frames:
            ident = _good_id(packet)
            s.sendall(frame(packet) + frame(query("web.service.consul", ident=ident)))
            got = read_until(s, ident)
            for reply in got[:-1]:
                _check_fuzz_reply(reply, packet)
            assert len(got) <= 2
            assert addresses(dns.message.from_wire(got[-1])) == {"10.0.1.1"}
        if tail:
            s.sendall(tail)


TCP_FRAMES = st.lists(st.one_of(st.just(b""), FUZZ_PACKETS), min_size=1, max_size=4)
TCP_TAILS = st.one_of(st.just(b""), st.just(b"\x00"),
                      st.binary(min_size=1, max_size=40).map(lambda b: struct.pack("!H", 200) + b))


def _fuzz_udp(agent, packet):
    _udp_round(agent.dns_port, packet)
    alive(agent)


def _fuzz_tcp(agent, frames, tail):
    _tcp_round(agent.dns_port, frames, tail)
    udp_good(agent.dns_port)
    alive(agent)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(packet=FUZZ_PACKETS)
def test_fuzz_udp(agent, packet):
    _fuzz_udp(agent, packet)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=TCP_FRAMES, tail=TCP_TAILS)
def test_fuzz_tcp(agent, frames, tail):
    _fuzz_tcp(agent, frames, tail)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(packet=FUZZ_PACKETS)
def test_fuzz_udp_long(agent, packet):
    _fuzz_udp(agent, packet)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=TCP_FRAMES, tail=TCP_TAILS)
def test_fuzz_tcp_long(agent, frames, tail):
    _fuzz_tcp(agent, frames, tail)
