"""The DNS interface end to end: real agent processes, a real dnsmasq in front and behind, dig.

What runs here:
- two agents on free ports: `agent` (enable_truncate, recursors: a dead one first, then a
  dnsmasq serving `outside.example`) and `plain` (Consul's defaults, no recursors);
- dnsmasq as the local resolver in front of the agent, configured from
  contrib/dnsmasq/10-consul.conf, so the fragment we ship is the one tested;
- the controller in-process (no sockets) for stale answers and a hypothesis fuzz test.

The expected answers are Consul 1.8.7's, observed on the real binary with the same catalog
(SRV targets `<node>.node.<dc>.<domain>` or `<hex ip>.addr.<dc>.<domain>`, 3 answers over UDP
without EDNS, TC only with enable_truncate, NXDOMAIN with the SOA, REFUSED without recursors).
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.agentproc import free_ports, ROOT, AgentProcess

FRAGMENT = ROOT / "contrib" / "dnsmasq" / "10-consul.conf"
API_INSTANCES = 20


# --- processes -------------------------------------------------------------------------------

def free_udp_port() -> int:
    """A port free for UDP now (and so, with nobody listening, one that never answers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 3.0,
        **make_query_args) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **make_query_args)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=port, timeout=timeout)


def wait_for_dns(port: int, name: str = "probe.invalid", timeout: float = 10.0) -> None:
    """Until something answers `name` on `port` (any rcode): the listener is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ask(port, name, timeout=0.2)
            return
        except (dns.exception.Timeout, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers DNS on port {port}")


class DNSAgent(AgentProcess):
    """An agent with an optional config file; knows its DNS port."""

    def __init__(self, tmp: Path, config: dict | None = None) -> None:
        extra: list[str] = []
        if config is not None:
            path = tmp / f"dns-{id(self)}.json"
            path.write_text(json.dumps(config))
            extra = ["-config-file", str(path)]
        super().__init__(*extra)
        self.dns_port = int(self.args[self.args.index("-dns-port") + 1])

    def start(self, timeout: float = 15.0) -> "DNSAgent":
        super().start(timeout)
        try:
            # A name of our own domain: others may go to a slow recursor.
            wait_for_dns(self.dns_port, "probe.node.consul")
        except RuntimeError:
            self.stop()
            raise
        return self

    def put(self, path: str, body) -> None:
        status, _, data = self.request("PUT", path, json.dumps(body) if body is not None else None)
        assert status == 200, (path, status, data)


class Dnsmasq:
    """A dnsmasq in the foreground on a free port of 127.0.0.1, reading no system files."""

    def __init__(self, tmp: Path, *options: str) -> None:
        self.tmp = tmp
        self.options = options
        self.proc: subprocess.Popen | None = None
        self._choose_port()

    def _choose_port(self) -> None:
        # Free for TCP too: dnsmasq listens on both and stops when either is taken.
        self.port = free_ports(1)[0]
        self.pid_file = self.tmp / f"dnsmasq-{self.port}.pid"
        self.log_file = self.tmp / f"dnsmasq-{self.port}.log"
        self.cmd = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--port={self.port}",
                    "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                    "--no-hosts", "--log-facility=-", f"--pid-file={self.pid_file}",
                    *self.options]

    def start(self, attempts: int = 3) -> "Dnsmasq":
        for attempt in range(attempts):
            # Its log goes to a file: a pipe nobody reads could fill up and stall it.
            with open(self.log_file, "wb") as log:
                self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=log)
            try:
                wait_for_dns(self.port)
                return self
            except RuntimeError as exc:
                self.stop()
                if attempt == attempts - 1:
                    raise RuntimeError(f"{exc}: {self.log_file.read_text()}") from None
                self._choose_port()  # the port was taken under us: another one
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def fragment_options(dns_port: int) -> list[str]:
    """The contrib fragment's active lines as dnsmasq options, pointed at `dns_port`."""
    options = []
    for line in FRAGMENT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            options.append("--" + line.replace("127.0.0.1#8600", f"127.0.0.1#{dns_port}"))
    return options


def seed(agent: DNSAgent) -> None:
    """The catalog every test reads (names are per test where a test changes them)."""
    for i in range(API_INSTANCES):
        agent.put("/v1/catalog/register", {
            "Node": f"node{i}", "Address": f"10.1.0.{i + 1}",
            "Service": {"ID": f"api{i}", "Service": "api", "Port": 8000 + i, "Tags": ["v1"]}})
    agent.put("/v1/catalog/register", {
        "Node": "n1", "Address": "10.0.1.1",
        "Service": {"ID": "web1", "Service": "web", "Port": 80, "Tags": ["v1"]}})
    # A service address of its own: the SRV target becomes `<hex>.addr.<dc>.<domain>`.
    agent.put("/v1/catalog/register", {
        "Node": "n2", "Address": "10.0.1.2",
        "Service": {"ID": "web2", "Service": "web", "Port": 81, "Address": "10.9.9.9",
                    "Tags": ["v2"]}})


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The recursor: a dnsmasq that knows one outside name."""
    tmp = tmp_path_factory.mktemp("upstream")
    hosts = tmp / "hosts"
    hosts.write_text("10.20.30.40 outside.example\n")
    server = Dnsmasq(tmp, f"--addn-hosts={hosts}").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dead_recursor():
    return free_udp_port()


@pytest.fixture(scope="module")
def agent(tmp_path_factory, upstream, dead_recursor):
    config = {"recursors": [f"127.0.0.1:{dead_recursor}", f"127.0.0.1:{upstream.port}"],
              "dns_config": {"enable_truncate": True, "recursor_timeout": "1s"}}
    proc = DNSAgent(tmp_path_factory.mktemp("agent"), config).start()
    try:
        seed(proc)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    proc = DNSAgent(tmp_path_factory.mktemp("plain")).start()
    try:
        seed(proc)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory, agent):
    """dnsmasq as the local resolver, configured by the contrib fragment."""
    server = Dnsmasq(tmp_path_factory.mktemp("front"), *fragment_options(agent.dns_port)).start()
    yield server
    server.stop()


def addresses(response: dns.message.Message) -> set[str]:
    return {rr.address for rrset in response.answer if rrset.rdtype == dns.rdatatype.A
            for rr in rrset}


def answer_count(response: dns.message.Message) -> int:
    return sum(len(rrset) for rrset in response.answer)


# --- lookups ---------------------------------------------------------------------------------

def test_service_a(agent):
    r = ask(agent.dns_port, "web.service.consul")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA and r.flags & dns.flags.QR
    assert addresses(r) == {"10.0.1.1", "10.9.9.9"}
    assert all(rrset.ttl == 0 for rrset in r.answer)  # Consul's default node/service TTL


def test_service_srv_with_additional_records(agent):
    r = ask(agent.dns_port, "web.service.consul", "SRV")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    srv = {(rr.port, rr.target.to_text()) for rrset in r.answer for rr in rrset}
    assert srv == {(80, "n1.node.dc1.consul."), (81, "0a090909.addr.dc1.consul.")}
    assert all(rr.priority == 1 and rr.weight == 1 for rrset in r.answer for rr in rrset)
    extra = {(rrset.name.to_text(), rr.address) for rrset in r.additional
             if rrset.rdtype == dns.rdatatype.A for rr in rrset}
    assert extra == {("n1.node.dc1.consul.", "10.0.1.1"),
                     ("0a090909.addr.dc1.consul.", "10.9.9.9")}


def test_tag_lookup(agent):
    assert addresses(ask(agent.dns_port, "v1.web.service.consul")) == {"10.0.1.1"}
    assert addresses(ask(agent.dns_port, "v2.web.service.dc1.consul")) == {"10.9.9.9"}
    r = ask(agent.dns_port, "v3.web.service.consul")
    assert r.rcode() == dns.rcode.NXDOMAIN


def test_rfc2782_lookup(agent):
    r = ask(agent.dns_port, "_web._v1.service.consul", "SRV")
    assert [(rr.port, rr.target.to_text()) for rrset in r.answer for rr in rrset] == [
        (80, "n1.node.dc1.consul.")]
    # `_tcp` is the protocol, not a tag: every instance.
    r = ask(agent.dns_port, "_web._tcp.service.consul", "SRV")
    assert {rr.port for rrset in r.answer for rr in rrset} == {80, 81}


def test_node_lookup(agent):
    r = ask(agent.dns_port, "oracle.node.consul")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert addresses(r) == {"127.0.0.1"}
    assert addresses(ask(agent.dns_port, "n1.node.dc1.consul")) == {"10.0.1.1"}


def test_nxdomain_carries_the_soa(agent):
    r = ask(agent.dns_port, "nope.service.consul")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    assert not r.answer
    [soa] = r.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "consul."
    assert soa[0].mname.to_text() == "ns.consul."
    assert soa[0].rname.to_text() == "hostmaster.consul."
    assert (soa[0].refresh, soa[0].retry, soa[0].expire, soa[0].minimum) == (3600, 600, 86400, 0)


def test_case_insensitive_and_question_echoed_as_sent(agent):
    r = ask(agent.dns_port, "WeB.SeRvIcE.CoNsUl")
    assert addresses(r) == {"10.0.1.1", "10.9.9.9"}
    # Resolvers using 0x20 mixed case (unbound's use-caps-for-id) need the exact echo.
    assert r.question[0].name.to_text() == "WeB.SeRvIcE.CoNsUl."


def test_edns_is_echoed(agent):
    r = ask(agent.dns_port, "web.service.consul", use_edns=0, payload=1232)
    assert r.edns == 0 and r.payload == 1232
    assert addresses(r) == {"10.0.1.1", "10.9.9.9"}
    # Without EDNS in the query there is none in the answer.
    assert ask(agent.dns_port, "web.service.consul").edns == -1


# --- truncation ------------------------------------------------------------------------------

def test_udp_truncation_with_enable_truncate(agent):
    r = ask(agent.dns_port, "api.service.consul")
    assert r.flags & dns.flags.TC
    assert answer_count(r) == 3  # udp_answer_limit
    r = ask(agent.dns_port, "api.service.consul", "SRV")
    assert r.flags & dns.flags.TC and answer_count(r) == 3
    targets = {rr.target for rrset in r.answer for rr in rrset}
    assert {rrset.name for rrset in r.additional if rrset.rdtype == dns.rdatatype.A} == targets


def test_udp_without_enable_truncate_trims_silently(plain):
    r = ask(plain.dns_port, "api.service.consul")
    assert not r.flags & dns.flags.TC
    assert answer_count(r) == 3


def test_tcp_gives_the_complete_answer(agent):
    r = ask(agent.dns_port, "api.service.consul", tcp=True)
    assert not r.flags & dns.flags.TC
    assert addresses(r) == {f"10.1.0.{i + 1}" for i in range(API_INSTANCES)}
    r = ask(agent.dns_port, "api.service.consul", "SRV", tcp=True)
    assert answer_count(r) == API_INSTANCES
    assert sum(len(s) for s in r.additional if s.rdtype == dns.rdatatype.A) == API_INSTANCES


def test_large_edns_buffer_lifts_the_answer_limit(agent):
    # As Consul: udp_answer_limit only binds 512-byte clients; EDNS ones get what fits.
    r = ask(agent.dns_port, "api.service.consul", use_edns=0, payload=4096)
    assert not r.flags & dns.flags.TC and answer_count(r) == API_INSTANCES
    # SRV with additional records: as much as fits in the client's buffer, TC when cut.
    # Consul 1.8.7 sends 20 answers in 1197 bytes at 1232, and 9 in about 563 at 600 (the
    # size moves with the shuffled targets: node1 or node12).
    for payload, counts, truncated in ((1232, {20}, False), (600, {8, 9, 10}, True)):
        query = dns.message.make_query("api.service.consul", "SRV", use_edns=0, payload=payload)
        raw = _exchange(agent.dns_port, query.to_wire())
        r = dns.message.from_wire(raw)
        assert len(raw) <= payload and bool(r.flags & dns.flags.TC) == truncated
        assert answer_count(r) in counts
        assert sum(len(s) for s in r.additional if s.rdtype == dns.rdatatype.A) == answer_count(r)


# --- changes through the HTTP API ------------------------------------------------------------

def test_deregistration_is_in_the_next_answer(agent):
    for i in (1, 2):
        agent.put("/v1/catalog/register", {
            "Node": f"gone{i}", "Address": f"10.3.0.{i}",
            "Service": {"ID": f"gone{i}", "Service": "gone", "Port": 80}})
    # Twice: the second answer comes from the cache, which the deregistration must drop.
    for _ in range(2):
        assert addresses(ask(agent.dns_port, "gone.service.consul")) == {"10.3.0.1", "10.3.0.2"}
    agent.put("/v1/catalog/deregister", {"Node": "gone2", "ServiceID": "gone2"})
    assert addresses(ask(agent.dns_port, "gone.service.consul")) == {"10.3.0.1"}
    agent.put("/v1/catalog/deregister", {"Node": "gone1"})
    assert ask(agent.dns_port, "gone.service.consul").rcode() == dns.rcode.NXDOMAIN


def test_failing_ttl_check_is_in_the_next_answer(agent):
    agent.put("/v1/agent/service/register", {"Name": "ttlsvc", "ID": "ttlsvc", "Port": 9000,
                                              "Check": {"TTL": "30s"}})
    try:
        agent.put("/v1/agent/check/pass/service:ttlsvc", None)
        for _ in range(2):
            assert addresses(ask(agent.dns_port, "ttlsvc.service.consul")) == {"127.0.0.1"}
        agent.put("/v1/agent/check/fail/service:ttlsvc", None)
        r = ask(agent.dns_port, "ttlsvc.service.consul")
        assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer
        agent.put("/v1/agent/check/pass/service:ttlsvc", None)
        assert addresses(ask(agent.dns_port, "ttlsvc.service.consul")) == {"127.0.0.1"}
    finally:
        agent.put("/v1/agent/service/deregister/ttlsvc", None)


# --- malformed input -------------------------------------------------------------------------

def _exchange(port: int, packet: bytes) -> bytes:
    """One UDP exchange, the answer's bytes as sent (dnspython would re-encode them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(packet, ("127.0.0.1", port))
        return s.recv(65535)


def _send_raw(port: int, packet: bytes, wait: float = 0.3) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(packet, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def _assert_formerr_or_silence(packet: bytes, reply: bytes | None) -> None:
    if reply is None:
        return
    ident, flags = struct.unpack_from("!HH", reply)
    assert ident == struct.unpack_from("!H", packet)[0]
    assert flags & 0x8000 and flags & 0xF == dns.rcode.FORMERR, reply


def test_malformed_packets_get_formerr_or_nothing(agent):
    port = agent.dns_port
    valid = dns.message.make_query("web.service.consul", "A")
    loop = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    response = dns.message.make_response(valid).to_wire()
    # The same cases real Consul answers: FORMERR for a parsable header, silence otherwise.
    assert _send_raw(port, loop) == struct.pack("!HHHHHH", 0x1234, 0x8101, 0, 0, 0, 0)
    assert _send_raw(port, b"\x12\x34\x01") is None  # a truncated header
    assert _send_raw(port, response) is None  # never answer an answer (reflection loops)
    rng = random.Random(2782)
    for size in (0, 1, 11, 12, 13, 40, 300, 512, 1500):
        packet = rng.randbytes(size)
        reply = _send_raw(port, packet, wait=0.1)
        if size < 12:
            assert reply is None
        else:
            _assert_formerr_or_silence(packet, reply)
    # A name running past the packet, and a label longer than the rest of it.
    wire = valid.to_wire()
    for packet in (wire[:20], wire[:12] + b"\x3f" + wire[13:]):
        _assert_formerr_or_silence(packet, _send_raw(port, packet))
    # Over TCP too: garbage in a frame, then a frame that never completes.
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(struct.pack("!H", len(loop)) + loop)
        size = struct.unpack("!H", s.recv(2))[0]
        assert struct.unpack_from("!HH", s.recv(size))[1] & 0xF == dns.rcode.FORMERR
        s.sendall(b"\x01\x00garbage")
    # And it still answers.
    assert addresses(ask(port, "web.service.consul")) == {"10.0.1.1", "10.9.9.9"}
    assert addresses(ask(port, "web.service.consul", tcp=True)) == {"10.0.1.1", "10.9.9.9"}


# --- dnsmasq in front, dig -------------------------------------------------------------------

def test_through_dnsmasq(front):
    r = ask(front.port, "web.service.consul")
    assert r.rcode() == dns.rcode.NOERROR
    assert addresses(r) == {"10.0.1.1", "10.9.9.9"}
    r = ask(front.port, "web.service.consul", "SRV")
    assert {rr.port for rrset in r.answer for rr in rrset} == {80, 81}


def test_bare_name_through_dnsmasq_and_search_domains(front):
    # What glibc does with `search service.consul node.consul` in resolv.conf.
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = front.port
    resolver.search = [dns.name.from_text("service.consul"), dns.name.from_text("node.consul")]
    resolver.use_search_by_default = True
    resolver.lifetime = 5
    answer = resolver.resolve("web", "A")
    assert answer.qname.to_text() == "web.service.consul."
    assert {rr.address for rr in answer} == {"10.0.1.1", "10.9.9.9"}
    # Node names come through the second search domain.
    answer = resolver.resolve("n1", "A")
    assert answer.qname.to_text() == "n1.node.consul."
    assert [rr.address for rr in answer] == ["10.0.1.1"]


def test_dig_end_to_end(agent):
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(agent.dns_port), "web.service.consul",
                          "SRV", "+time=2", "+tries=1"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    assert re.search(r"status: NOERROR\b", out), out
    flags = re.search(r";; flags: ([a-z ]+);", out).group(1).split()
    assert "qr" in flags and "aa" in flags, out
    section = out.split(";; ANSWER SECTION:\n", 1)[1].split("\n\n", 1)[0]
    rows = sorted(line.split() for line in section.splitlines())
    assert rows == [
        ["web.service.consul.", "0", "IN", "SRV", "1", "1", "80", "n1.node.dc1.consul."],
        ["web.service.consul.", "0", "IN", "SRV", "1", "1", "81", "0a090909.addr.dc1.consul."],
    ], out


# --- recursors -------------------------------------------------------------------------------

def test_recursor_answers_after_a_dead_one_times_out(agent):
    started = time.monotonic()
    r = ask(agent.dns_port, "outside.example", timeout=5)
    elapsed = time.monotonic() - started
    assert r.rcode() == dns.rcode.NOERROR
    assert addresses(r) == {"10.20.30.40"}
    assert r.flags & dns.flags.RA  # recursion is available once recursors are configured
    # The dead recursor comes first and costs one recursor_timeout (1s), not more.
    assert 0.9 <= elapsed < 3.0, elapsed
    # Over TCP the dead one refuses the connection at once.
    assert addresses(ask(agent.dns_port, "outside.example", tcp=True, timeout=5)) == {
        "10.20.30.40"}


def test_no_recursors_refuses_other_domains(plain):
    r = ask(plain.dns_port, "outside.example")
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.flags & dns.flags.AA and not r.flags & dns.flags.RA
    assert not r.answer


# --- in-process: stale answers, fuzz ---------------------------------------------------------

class LeaderSwitch:
    """The in-process core's facade, with a leader the test can take away (as the consensus
    layer would) and a log it can write to."""

    def __init__(self, core) -> None:
        self.core = core
        self.facade = core.facade

    @property
    def leader(self) -> bool:
        return self.core.log.leader

    @leader.setter
    def leader(self, known: bool) -> None:
        # The state feed stopped: without a leader the replica is older than any max_stale.
        if known:
            self.core.find_leader()
        else:
            self.core.lose_leader(self.core.log.contact if self.recent else float("inf"))

    recent = False  # set: the replica heard from a leader a second ago

    def apply(self, index: int, command) -> None:
        self.core.apply(command)


def make_controller(dns_config=None):
    """A controller as gateway/dns/plugin.py builds it, over a store filled through the FSM."""
    from twisted.internet.task import Clock

    from agent.config.model import AgentConfig, DNSConfig
    from agent.fsm.commands import Register
    from agent.structs import Check, Node, Service
    from gateway.dns.authority import ConsulAuthority
    from tests.coreutil import Core
    from gateway.dns.recursor import Forwarder
    from gateway.dns.server import DNSController

    dns_config = dns_config or DNSConfig(service_ttl={"web": 600.0})
    config = AgentConfig(node_name="oracle", node_id="00000000-0000-0000-0000-000000000001",
                         dns_config=dns_config)
    core = Core(config=config)
    for index, (node, address) in enumerate([("n1", "10.0.1.1"), ("n2", "10.0.1.2")], 1):
        service = Service(node=node, id=f"web{index}", name="web", tags=("v1",), port=80)
        check = Check(node=node, check_id=f"service:web{index}", name="alive",
                      status="passing", service_id=f"web{index}")
        core.apply(Register(node=Node(name=node, address=address), service=service,
                            checks=(check,)))
    switch = LeaderSwitch(core)
    facade = core.facade
    clock = Clock()
    clock.advance(1_700_000_000)
    authority = ConsulAuthority(domain=config.domain, alt_domain=config.alt_domain,
                                datacenter=config.datacenter, dns_config=dns_config,
                                clock=clock.seconds)
    forwarder = Forwarder(clock, [], dns_config.recursor_timeout)
    controller = DNSController(facade, clock, authority, forwarder, rng=random.Random(1))
    return controller, switch, switch


def _query(name: str, rdtype: str = "A", ident: int = 1, **kw) -> bytes:
    query = dns.message.make_query(name, rdtype, **kw)
    query.id = ident
    return query.to_wire()


def test_stale_answer_when_the_leader_is_gone():
    controller, facade, _ = make_controller()
    fresh = dns.message.from_wire(controller.answer(_query("web.service.consul", ident=7), True))
    assert fresh.id == 7 and {rrset.ttl for rrset in fresh.answer} == {600}
    facade.leader = False
    stale = dns.message.from_wire(controller.answer(_query("web.service.consul", ident=8), True))
    assert stale.id == 8 and stale.rcode() == dns.rcode.NOERROR
    assert addresses(stale) == addresses(fresh) == {"10.0.1.1", "10.0.1.2"}
    assert {rrset.ttl for rrset in stale.answer} == {30}


def test_servfail_without_a_leader_for_a_question_never_answered():
    controller, facade, _ = make_controller()
    controller.answer(_query("web.service.consul"), True)
    facade.leader = False
    for udp in (True, False):
        never = dns.message.from_wire(
            controller.answer(_query("v1.web.service.consul", ident=9), udp))
        assert never.id == 9 and never.rcode() == dns.rcode.SERVFAIL and not never.answer


def test_stale_answer_after_a_change_when_the_leader_is_gone():
    from agent.fsm.commands import Deregister

    controller, facade, fsm = make_controller()
    controller.answer(_query("web.service.consul"), True)
    fsm.apply(3, Deregister(node="n2"))  # the cached answer is now of an old index
    facade.leader = False
    stale = dns.message.from_wire(controller.answer(_query("web.service.consul", ident=5), True))
    assert stale.id == 5 and stale.rcode() == dns.rcode.NOERROR
    assert {rrset.ttl for rrset in stale.answer} == {30}
    assert addresses(stale) == {"10.0.1.1", "10.0.1.2"}  # the last answer we had
    facade.leader = True
    fresh = dns.message.from_wire(controller.answer(_query("web.service.consul", ident=6), True))
    assert addresses(fresh) == {"10.0.1.1"} and {rrset.ttl for rrset in fresh.answer} == {600}


@lru_cache(maxsize=None)
def _fuzz_controller():
    return make_controller()


VALID_QUERIES = [
    _query("web.service.consul"),
    _query("web.service.consul", "SRV", use_edns=0, payload=4096),
    _query("_web._v1.service.dc1.consul", "SRV"),
    _query("n1.node.consul", "AAAA", use_edns=0, payload=1232),
    _query("0a000101.addr.dc1.consul", "A"),
    _query("1.1.0.10.in-addr.arpa", "PTR"),
    _query("consul", "SOA"),
    _query("consul", "NS"),
    _query("nope.service.consul", "ANY"),
    _query("outside.example", "A"),
]


@st.composite
def mutated_queries(draw):
    packet = bytearray(draw(st.sampled_from(VALID_QUERIES)))
    for _ in range(draw(st.integers(1, 4))):
        if not packet:
            break
        where = draw(st.integers(0, len(packet) - 1))
        op = draw(st.sampled_from(["set", "cut", "insert", "delete"]))
        if op == "set":
            packet[where] = draw(st.integers(0, 255))
        elif op == "cut":
            del packet[where:]
        elif op == "insert":
            packet[where:where] = draw(st.binary(min_size=1, max_size=8))
        else:
            del packet[where:where + draw(st.integers(1, 8))]
    return bytes(packet)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(packet=st.one_of(st.binary(max_size=600), mutated_queries()), udp=st.booleans(),
       leader=st.booleans())
def test_fuzz_answer_never_raises(packet, udp, leader):
    controller, facade, _ = _fuzz_controller()
    facade.leader = leader
    result = controller.answer(packet, udp=udp)
    assert result is None or isinstance(result, bytes)
    if result is not None:
        # An answer to this query: its ID, QR set, at least a header.
        assert len(result) >= 12 and result[:2] == packet[:2]
        assert result[2] & 0x80


def test_without_leader_a_recent_replica_still_answers_fresh():
    controller, facade, _ = make_controller()
    facade.core.log.contact = 1.0  # heard from a leader a second ago
    facade.recent = True
    facade.leader = False
    answer = dns.message.from_wire(controller.answer(_query("web.service.consul", ident=3), True))
    assert {rrset.ttl for rrset in answer.answer} == {600}  # fresh, not the stale TTL
