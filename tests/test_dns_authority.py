"""The `consul.` authority and the UDP/TCP size rules, pure: a catalog built through the FSM,
questions parsed by our wire codec, answers decoded by dnspython.

Several tests compare whole answers with `dig` output recorded from a real Consul 1.8.7
(shared/reference/consul-1.8.7/84..95), whose catalog `build_store` reproduces.
"""

import random
import re
from dataclasses import replace
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from agent.config.model import DNSConfig, SOAConfig
from agent.fsm.apply import FSM
from agent.fsm.commands import Register
from agent.state.store import StateStore
from tests.coreutil import dns_catalog
from agent.structs import Check, Node, Service, ServiceAddress, Weights
from gateway.dns import fit, names, wire
from gateway.dns.authority import Answer, ConsulAuthority

REFERENCE = Path("/work/shared/reference/consul-1.8.7")
SERIAL = 1795310655  # the SOA serial in the reference answers


def build_store() -> StateStore:
    store = StateStore()
    fsm = FSM(store)
    index = 0

    def register(node, service=None, *checks):
        nonlocal index
        index += 1
        result = fsm.apply(index, Register(node=node, service=service, checks=tuple(checks)))
        assert result is True, result

    def check(node, cid, status, service_id="", **kw):
        return Check(node=node.name, check_id=cid, name=cid, status=status,
                     service_id=service_id, **kw)

    oracle = Node("oracle", "127.0.0.1", meta={"consul-network-segment": ""},
                  tagged_addresses={"lan": "127.0.0.1", "lan_ipv4": "127.0.0.1"})
    register(oracle, None, check(oracle, "serfHealth", "passing"))
    register(oracle, Service("oracle", "consul", "consul", port=8300))
    # The reference's web instances: web1 has an address and passes, web2 warns.
    register(oracle, Service("oracle", "web1", "web", ("primary", "v1"), "127.0.0.1", 8080),
             check(oracle, "service:web1", "passing", "web1"))
    register(oracle, Service("oracle", "web2", "web", ("secondary",), port=8081),
             check(oracle, "web2-ttl", "warning", "web2"))
    register(oracle, Service("oracle", "cache", "cache", address="10.9.9.9", port=6379))
    register(oracle, Service("oracle", "v6svc", "v6svc", address="2001:db8::53", port=53))
    register(oracle, Service("oracle", "redis", "redis", address="redis.example.com", port=6379))
    # A node with an IPv6 address and meta; api1 passes, api2 (elsewhere) warns.
    six = Node("six", "2001:db8::10", meta={"zone": "b", "rfc1035-raw": "hello"})
    register(six, Service("six", "api1", "api", port=9000, weights=Weights(10, 2)),
             check(six, "service:api1", "passing", "api1"))
    register(six, Service("six", "broken", "broken", port=1),
             check(six, "service:broken", "critical", "broken"))
    warm = Node("warm", "10.0.0.5")
    register(warm, Service("warm", "api2", "api", port=9001, weights=Weights(10, 2)),
             check(warm, "service:api2", "warning", "api2"))
    # Instances that must never be answered: a critical node, a service in maintenance.
    sick = Node("sick", "10.0.0.3")
    register(sick, Service("sick", "web3", "web", port=8082), check(sick, "serfHealth", "critical"))
    maint = Node("maint", "10.0.0.6")
    register(maint, Service("maint", "web4", "web", port=8083),
             check(maint, "_service_maintenance:web4", "critical", "web4", type="maintenance"))
    ext = Node("ext", "ext.example.com")
    register(ext, Service("ext", "legacy", "legacy", port=80))
    # Twenty instances of one service, each on its own node.
    for i in range(20):
        pool = Node(f"pool-{i:02d}", f"10.1.0.{i + 1}", meta={"pool": "yes"})
        register(pool, Service(pool.name, "pool", "pool", port=7000))
    return store


STORE = build_store()


def authority(config=None, **kw):
    args = {"domain": "consul.", "alt_domain": "", "datacenter": "dc1",
            "dns_config": config or DNSConfig(), "clock": lambda: SERIAL + 0.4}
    args.update(kw)
    return ConsulAuthority(**args)


def ask(name, rdtype="A", *, config=None, payload=None, udp=True, seed=0, auth=None,
        store=STORE, ra=False):
    """Query `name`, returning the decoded response (one RR per RRset, order kept)."""
    config = config or DNSConfig()
    auth = auth or authority(config)
    query = dns.message.make_query(name, rdtype, use_edns=0 if payload else False,
                                   payload=payload or 512)
    question = wire.parse_query(query.to_wire())
    answer = auth.resolve(question, dns_catalog(store), random.Random(seed))
    assert answer is not None, f"{name} not answered"
    packet = fit.encode_answer(question, answer, config, udp=udp, recursion_available=ra)
    response = dns.message.from_wire(packet, one_rr_per_rrset=True)
    response.size = len(packet)
    return response


def lines(section):
    return [rrset.to_text().split() for rrset in section]


def types(section):
    return [dns.rdatatype.to_text(rrset.rdtype) for rrset in section]


def rcode(response):
    return dns.rcode.to_text(response.rcode())


# --- the reference answers of Consul 1.8.7 ---

def reference(number):
    text = next(REFERENCE.glob(f"{number}_*.txt")).read_text()
    sections = {"ANSWER": [], "AUTHORITY": [], "ADDITIONAL": []}
    current = None
    for line in text.splitlines():
        header = re.match(r";; (ANSWER|AUTHORITY|ADDITIONAL) SECTION:", line)
        if header:
            current = header.group(1)
        elif not line.strip() or line.startswith(";"):
            current = None
        elif current:
            sections[current].append(line.split())
    query = re.search(r"dig @\S+ -p \d+ (.*)", text).group(1).split()
    return {"query": query, "sections": sections,
            "status": re.search(r"status: (\w+)", text).group(1),
            "flags": re.search(r";; flags: ([^;]*);", text).group(1).split(),
            "size": int(re.search(r"MSG SIZE\s+rcvd: (\d+)", text).group(1))}


def flag_names(response):
    return dns.flags.to_text(response.flags).lower().split()


@pytest.mark.parametrize("number", [84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95])
def test_answers_match_consul_1_8_7(number):
    ref = reference(number)
    words = ref["query"]
    tcp = "+tcp" in words
    words = [w for w in words if w != "+tcp"]
    if words[0] == "-x":
        name, rdtype = names.reverse_name(words[1]) + ".", "PTR"
    else:
        name, rdtype = words[0], words[1]
    # The instance order is random; find a shuffle that gives the recorded one.
    for seed in range(64):
        response = ask(name, rdtype, payload=1232, udp=not tcp, seed=seed)
        if lines(response.answer) == ref["sections"]["ANSWER"]:
            break
    assert lines(response.answer) == ref["sections"]["ANSWER"]
    assert lines(response.authority) == ref["sections"]["AUTHORITY"]
    assert lines(response.additional) == ref["sections"]["ADDITIONAL"]
    assert rcode(response) == ref["status"]
    assert sorted(flag_names(response)) == sorted(ref["flags"])
    assert response.size == ref["size"]  # same records, same compression


def test_srv_answer_shape_is_reference_84():
    """Sections, counts and record order: SRV answers, then per target its address and its
    node's meta TXT record."""
    response = ask("web.service.consul", "SRV", payload=1232, seed=1)
    assert types(response.answer) == ["SRV", "SRV"]
    assert types(response.additional) == ["A", "TXT", "A", "TXT"]
    targets = [rr[0].target.to_text() for rr in response.answer]
    owners = [rr.name.to_text() for rr in response.additional]
    assert owners[0::2] == targets
    assert owners[1::2] == ["oracle.node.dc1.consul."] * 2
    assert response.edns == 0 and response.payload == 1232


# --- lookup forms ---

def test_names_are_case_insensitive_and_owners_keep_the_question_spelling():
    response = ask("PRIMARY.Web.SERVICE.Consul", "SRV")
    assert [rr.name.to_text() for rr in response.answer] == ["PRIMARY.Web.SERVICE.Consul."]
    assert response.answer[0][0].target.to_text() == "7f000001.addr.dc1.consul."
    response = ask("Oracle.NODE.consul")
    assert lines(response.answer) == [["Oracle.NODE.consul.", "0", "IN", "A", "127.0.0.1"]]


def test_service_forms():
    assert len(ask("web.service.consul", "SRV").answer) == 2
    assert len(ask("web.service.dc1.consul", "SRV").answer) == 2
    assert [rr[0].port for rr in ask("v1.web.service.consul", "SRV").answer] == [8080]
    assert [rr[0].port for rr in ask("secondary.web.service.consul", "SRV").answer] == [8081]
    assert [rr[0].port for rr in ask("_web._primary.service.consul", "SRV").answer] == [8080]
    # RFC 2782 without the "service" label, and with a datacenter.
    assert len(ask("_web._tcp.consul", "SRV").answer) == 2
    assert len(ask("_web._tcp.dc1.consul", "SRV").answer) == 2
    # Consul only treats _tcp as "no tag": _udp filters on a tag called "udp".
    assert rcode(ask("_web._udp.service.consul", "SRV")) == "NXDOMAIN"


def test_service_a_aaaa_and_any():
    assert lines(ask("api.service.consul", "A").answer) == [
        ["api.service.consul.", "0", "IN", "A", "10.0.0.5"]]
    assert lines(ask("api.service.consul", "AAAA").answer) == [
        ["api.service.consul.", "0", "IN", "AAAA", "2001:db8::10"]]
    assert sorted(types(ask("api.service.consul", "ANY").answer)) == ["A", "AAAA"]
    # Two web instances share 127.0.0.1: one A record (reference 85).
    assert len(ask("web.service.consul").answer) == 1


def test_srv_weights_follow_health_and_ipv6_targets():
    response = ask("api.service.consul", "SRV")
    weights = {rr[0].port: rr[0].weight for rr in response.answer}
    assert weights == {9000: 10, 9001: 2}
    extra = {(rr.name.to_text(), types([rr])[0]) for rr in response.additional}
    assert ("six.node.dc1.consul.", "AAAA") in extra
    assert ("warm.node.dc1.consul.", "A") in extra
    txt = [rr[0].strings for rr in response.additional if rr.rdtype == dns.rdatatype.TXT]
    assert sorted(txt) == [(b"hello",), (b"zone=b",)]  # rfc1035- keys carry the raw value
    response = ask("v6svc.service.consul", "SRV")
    target = "20010db8000000000000000000000053.addr.dc1.consul."
    assert response.answer[0][0].target.to_text() == target
    assert lines(response.additional)[0] == [target, "0", "IN", "AAAA", "2001:db8::53"]


def test_host_name_addresses_give_cnames():
    assert lines(ask("redis.service.consul").answer) == [
        ["redis.service.consul.", "0", "IN", "CNAME", "redis.example.com."]]
    response = ask("redis.service.consul", "SRV")
    assert response.answer[0][0].target.to_text() == "redis.example.com."
    assert types(response.additional) == ["TXT"]
    assert lines(ask("legacy.service.consul").answer)[0][3:] == ["CNAME", "ext.example.com."]
    assert lines(ask("ext.node.consul").answer)[0][3:] == ["CNAME", "ext.example.com."]


def test_unhealthy_instances_are_never_answered():
    ports = {rr[0].port for rr in ask("web.service.consul", "SRV").answer}
    assert ports == {8080, 8081}  # not web3 (critical node) nor web4 (maintenance)
    response = ask("broken.service.consul", "SRV")
    assert rcode(response) == "NXDOMAIN" and types(response.authority) == ["SOA"]


def test_only_passing_drops_warning_instances():
    config = DNSConfig(only_passing=True)
    assert [rr[0].port for rr in ask("web.service.consul", "SRV", config=config).answer] == [8080]
    assert [rr[0].port for rr in ask("api.service.consul", "SRV", config=config).answer] == [9000]


def test_node_lookups():
    response = ask("oracle.node.consul", "ANY")
    assert types(response.answer) == ["A", "TXT"] and not response.additional
    assert types(ask("oracle.node.consul", "TXT").answer) == ["TXT"]
    assert lines(ask("six.node.consul", "AAAA").answer)[0][3:] == ["AAAA", "2001:db8::10"]
    response = ask("six.node.consul", "A")  # IPv6 node, A query: nothing but the meta
    assert rcode(response) == "NOERROR" and not response.answer
    assert types(response.additional) == ["TXT", "TXT"]
    # Meta TXT records in the additional section are optional ...
    response = ask("oracle.node.consul", config=DNSConfig(enable_additional_node_meta_txt=False))
    assert types(response.answer) == ["A"] and not response.additional
    # ... but a TXT query always answers them.
    response = ask("oracle.node.consul", "TXT",
                   config=DNSConfig(enable_additional_node_meta_txt=False))
    assert lines(response.answer) == [["oracle.node.consul.", "0", "IN", "TXT",
                                       '"consul-network-segment="']]
    response = ask("nope.node.consul")
    assert rcode(response) == "NXDOMAIN" and types(response.authority) == ["SOA"]


def test_nodata():
    # A service with nothing of the type: NOERROR, no answers, the SOA (Consul's NODATA).
    response = ask("web.service.consul", "MX")
    assert rcode(response) == "NOERROR" and not response.answer
    assert types(response.authority) == ["SOA"]
    response = ask("cache.service.consul", "AAAA")
    assert rcode(response) == "NOERROR" and types(response.authority) == ["SOA"]
    # Consul answers node queries of other types before looking: empty, and no SOA.
    response = ask("oracle.node.consul", "MX")
    assert rcode(response) == "NOERROR" and not response.answer and not response.authority


def test_ttls_from_node_ttl_and_service_ttl_wildcards():
    config = DNSConfig(node_ttl=30.0, service_ttl={"web": 10.0, "po*": 20.0, "*": 5.0},
                       soa=SOAConfig(min_ttl=7))
    response = ask("web.service.consul", "SRV", config=config)
    assert {rr.ttl for rr in response.answer + response.additional} == {10}
    assert {rr.ttl for rr in ask("pool.service.consul", config=config).answer} == {20}
    assert {rr.ttl for rr in ask("api.service.consul", config=config).answer} == {5}
    response = ask("oracle.node.consul", config=config)
    assert {rr.ttl for rr in response.answer + response.additional} == {30}
    assert ask("7f000001.addr.dc1.consul", config=config).answer[0].ttl == 30
    response = ask("nope.service.consul", config=config)
    soa = response.authority[0]
    assert (soa.ttl, soa[0].minimum, soa[0].serial) == (7, 7, SERIAL)
    assert ask("1.0.0.127.in-addr.arpa", "PTR", config=config).answer[0].ttl == 0


def test_instances_are_shuffled_per_rng():
    orders = set()
    for seed in range(8):
        response = ask("pool.service.consul", "SRV", udp=False, seed=seed)
        order = tuple(rr[0].target.to_text() for rr in response.answer)
        assert sorted(order) == sorted(f"pool-{i:02d}.node.dc1.consul." for i in range(20))
        orders.add(order)
    assert len(orders) > 1
    # The same seed gives the same answer (callers can compute variants).
    first = ask("pool.service.consul", seed=3)
    assert lines(ask("pool.service.consul", seed=3).answer) == lines(first.answer)


# --- sizes ---

def test_udp_without_edns_keeps_udp_answer_limit_answers():
    response = ask("pool.service.consul")
    assert len(response.answer) == 3 and not response.flags & dns.flags.TC
    response = ask("pool.service.consul", config=DNSConfig(enable_truncate=True))
    assert len(response.answer) == 3 and response.flags & dns.flags.TC
    # Trimmed SRV answers keep one address per target and lose the meta TXT records.
    response = ask("pool.service.consul", "SRV", config=DNSConfig(enable_truncate=True))
    assert types(response.answer) == ["SRV"] * 3 and types(response.additional) == ["A"] * 3
    assert response.flags & dns.flags.TC and response.size <= 512
    # An EDNS buffer of 512 is the same as none.
    assert len(ask("pool.service.consul", payload=512).answer) == 3


def test_udp_answer_limit_is_capped_at_8_and_measured_uncompressed():
    config = DNSConfig(udp_answer_limit=20)
    assert len(ask("pool.service.consul", config=config).answer) == 8
    # Eight SRV answers would fit compressed; Consul measures uncompressed at 512 bytes.
    response = ask("pool.service.consul", "SRV", config=config)
    assert len(response.answer) == 4 and len(response.additional) == 4


def test_edns_4096_fits_everything():
    response = ask("pool.service.consul", "SRV", payload=4096)
    assert len(response.answer) == 20 and len(response.additional) == 40
    assert response.size <= 4096 and not response.flags & dns.flags.TC
    assert len(ask("pool.service.consul", payload=4096).answer) == 20


def test_edns_buffer_smaller_than_the_answer_trims_to_size():
    config = DNSConfig(enable_truncate=True)
    response = ask("pool.service.consul", "SRV", payload=1000, config=config)
    assert 3 < len(response.answer) < 20 and response.size <= 1000
    assert response.flags & dns.flags.TC
    assert types(response.additional) == ["A"] * len(response.answer)
    # 1648 bytes in full; Consul's binary search finds that all 20 answers fit in 1232 once
    # the meta TXT records are gone, keeps them all, and so does not flag truncation.
    response = ask("pool.service.consul", "SRV", payload=1232, config=config)
    assert len(response.answer) == 20 and types(response.additional) == ["A"] * 20
    assert response.size <= 1232 and not response.flags & dns.flags.TC


def test_tcp_answers_are_complete():
    config = DNSConfig(enable_truncate=True)
    response = ask("pool.service.consul", "SRV", udp=False, config=config)
    assert len(response.answer) == 20 and len(response.additional) == 40
    assert not response.flags & dns.flags.TC
    assert len(ask("pool.service.consul", udp=False, config=config).answer) == 20


def test_a_record_limit():
    config = DNSConfig(a_record_limit=2, enable_truncate=True)
    for udp, payload in ((True, None), (True, 4096), (False, None)):
        response = ask("pool.service.consul", config=config, udp=udp, payload=payload)
        assert len(response.answer) == 2 and not response.flags & dns.flags.TC
    # Not an A/AAAA answer: SRV is not limited.
    assert len(ask("pool.service.consul", "SRV", config=config, udp=False).answer) == 20


def test_other_answers_are_not_trimmed():
    # Only service lookups are trimmed (as Consul); a one-record answer never is anyway.
    response = ask("oracle.node.consul", config=DNSConfig(udp_answer_limit=1))
    assert types(response.answer) == ["A"] and types(response.additional) == ["TXT"]


def test_recursion_available_flag():
    assert ask("web.service.consul", ra=True).flags & dns.flags.RA
    assert not ask("web.service.consul").flags & dns.flags.RA


# --- negative answers, datacenters ---

def test_nxdomain_carries_the_soa():
    response = ask("nope.service.consul")
    assert rcode(response) == "NXDOMAIN" and not response.answer
    assert lines(response.authority) == [["consul.", "0", "IN", "SOA", "ns.consul.",
                                          "hostmaster.consul.", str(SERIAL), "3600", "600",
                                          "86400", "0"]]
    for name in ("consul.", "service.consul", "web.service.dc1.extra.consul", "x.y.consul",
                 "node.consul"):
        assert rcode(ask(name)) == "NXDOMAIN", name
    # Prepared queries, Connect and ingress: nothing registered here.
    for name in ("q.query.consul", "web.connect.consul", "web.ingress.consul"):
        assert rcode(ask(name)) == "NXDOMAIN", name


def test_other_datacenter_is_nxdomain():
    # Consul 1.8.1+ answers "No path to datacenter" with NXDOMAIN and the SOA (#8103).
    for name in ("web.service.dc2.consul", "oracle.node.dc2.consul", "WEB.service.DC1.consul"):
        response = ask(name)
        expected = "NOERROR" if "DC1" in name else "NXDOMAIN"
        assert rcode(response) == expected, name
    assert types(ask("web.service.dc2.consul").authority) == ["SOA"]


def test_addr_lookups():
    assert lines(ask("7f000001.addr.dc1.consul").answer) == [
        ["7f000001.addr.dc1.consul.", "0", "IN", "A", "127.0.0.1"]]
    # The datacenter label is not checked for addr names (as Consul).
    assert lines(ask("0A000005.ADDR.dc9.consul").answer)[0][3:] == ["A", "10.0.0.5"]
    v6 = "20010db8000000000000000000000053.addr.consul"
    assert lines(ask(v6, "AAAA").answer)[0][3:] == ["AAAA", "2001:db8::53"]
    # Consul 1.8 answers the address whatever the type asked.
    assert types(ask("7f000001.addr.consul", "MX").answer) == ["A"]
    assert rcode(ask("zz000001.addr.consul")) == "NXDOMAIN"
    response = ask("7f00.addr.consul")
    assert rcode(response) == "NOERROR" and not response.answer


def test_soa_ns_and_axfr():
    response = ask("consul", "SOA")
    assert lines(response.answer)[0][:4] == ["consul.", "0", "IN", "SOA"]
    assert lines(response.authority) == [["consul.", "0", "IN", "NS", "oracle.node.dc1.consul."]]
    assert lines(response.additional) == [["oracle.node.dc1.consul.", "0", "IN", "A",
                                           "127.0.0.1"]]
    response = ask("consul", "NS", config=DNSConfig(node_ttl=9.0))
    assert lines(response.answer) == [["consul.", "9", "IN", "NS", "oracle.node.dc1.consul."]]
    assert lines(response.additional)[0][3:] == ["A", "127.0.0.1"]
    # Consul answers SOA and NS for any name in the domain.
    assert types(ask("nope.service.consul", "SOA").answer) == ["SOA"]
    assert rcode(ask("consul", "AXFR")) == "NOTIMP"
    assert rcode(ask("consul", "A")) == "NXDOMAIN"


def test_ptr_v4_and_v6():
    assert lines(ask("1.0.0.127.in-addr.arpa", "PTR").answer) == [
        ["1.0.0.127.in-addr.arpa.", "0", "IN", "PTR", "oracle.node.dc1.consul."]]
    assert lines(ask("9.9.9.10.IN-ADDR.arpa", "PTR").answer) == [
        ["9.9.9.10.IN-ADDR.arpa.", "0", "IN", "PTR", "cache.service.dc1.consul."]]
    six = names.reverse_name("2001:db8::10") + "."
    assert lines(ask(six, "PTR").answer)[0][4] == "six.node.dc1.consul."
    svc = names.reverse_name("2001:db8::53") + "."
    assert lines(ask(svc, "PTR").answer)[0][4] == "v6svc.service.dc1.consul."
    # No match: not ours to answer (the server tries its recursors).
    auth = authority()
    for name in ("1.0.200.10.in-addr.arpa", "foo.arpa", "1.2.in-addr.arpa"):
        question = wire.parse_query(dns.message.make_query(name, "PTR").to_wire())
        assert auth.resolve(question, dns_catalog(STORE), random.Random(0)) is None


def test_handles_and_outside_names():
    auth = authority(alt_domain="waypost.")
    for name in ("consul", "web.service.consul", "1.0.0.127.in-addr.arpa", "x.ip6.arpa",
                 "waypost", "web.service.waypost", "consul."):
        assert auth.handles(name), name
    for name in ("example.com", "notconsul", "consul.com", ""):
        assert not auth.handles(name), name
    question = wire.parse_query(dns.message.make_query("example.com", "A").to_wire())
    assert auth.resolve(question, dns_catalog(STORE), random.Random(0)) is None


def test_alt_domain_answers_in_the_domain_asked():
    auth = authority(alt_domain="waypost")
    response = ask("web.service.waypost", "SRV", auth=auth)
    assert {rr[0].target.to_text().split(".", 1)[1] for rr in response.answer} == {
        "node.dc1.waypost.", "addr.dc1.waypost."}
    response = ask("nope.service.waypost", auth=auth)
    assert lines(response.authority)[0][:5] == ["waypost.", "0", "IN", "SOA", "ns.waypost."]


def test_answer_default_is_untrimmed():
    answer = Answer(0, [], [], [])
    assert answer.trim is False


def test_oversized_node_meta_never_exceeds_a_datagram():
    store = StateStore()
    fsm = FSM(store)
    meta = {f"k{i:02d}": "v" * 250 for i in range(64)}
    node = replace(Node("fat", "10.0.0.9"), meta=meta)
    fsm.apply(1, Register(node=node))
    response = ask("fat.node.consul", "TXT", store=store, payload=4096)
    assert len(response.answer) == 64  # Consul sends it whole (no trimming of node answers)
    tiny = wire.parse_query(dns.message.make_query("fat.node.consul", "TXT").to_wire())
    answer = authority().resolve(tiny, dns_catalog(store), random.Random(0))
    big = answer._replace(answers=answer.answers * 5)
    packet = fit.encode_answer(tiny, big, DNSConfig(), udp=True, recursion_available=False)
    assert len(packet) <= fit.MAX_UDP_DATAGRAM
    assert dns.message.from_wire(packet).flags & dns.flags.TC


def test_service_address_tagged_lan_ipv4_is_preferred():
    store = StateStore()
    fsm = FSM(store)
    node = Node("n", "10.0.0.1")
    svc = Service("n", "s", "s", address="2001:db8::1", port=1,
                  tagged_addresses={"lan_ipv4": ServiceAddress("10.0.0.2", 1)})
    fsm.apply(1, Register(node=node, service=svc))
    assert lines(ask("s.service.consul", store=store).answer)[0][4] == "10.0.0.2"
    assert lines(ask("s.service.consul", "AAAA", store=store).answer)[0][4] == "2001:db8::1"


def test_long_meta_values_are_split_into_txt_strings():
    store = StateStore()
    FSM(store).apply(1, Register(node=Node("long", "10.0.0.8", meta={"k": "é" * 300})))
    (record,) = ask("long.node.consul", "TXT", store=store, payload=4096).answer
    strings = record[0].strings
    assert len(strings) == 3 and all(len(part) <= 255 for part in strings)
    assert b"".join(strings).decode("utf-8") == "k=" + "é" * 300


def test_name_parsing_and_meta_quoting():
    # A tag may contain dots: everything before the service name is the tag.
    assert names.parse(["a", "b", "web", "service"], wire.A) == names.Lookup("service", "web", "a.b")
    assert names.parse(["x", "node", "dc2"], wire.A) == names.Lookup("node", "x", "", "dc2")
    assert names.parse(["x", "node", "dc2", "more"], wire.A) == names.INVALID
    assert names.parse(["_db", "_tcp"], wire.A) == names.INVALID  # "service" optional for SRV only
    assert names.parse(["_db", "_tcp"], wire.SRV) == names.Lookup("service", "db")
    assert names.rfc1464("a=b", "c`d") == "a`=b=c``d"
    assert names.rfc1464(" k ", "v") == "` k` =v"
    assert names.rfc1464("rfc1035-x", "raw") == "raw"
    assert names.address_from_reverse("1.0.0.127.in-addr.arpa") == "127.0.0.1"
    assert names.address_from_reverse("x.0.0.127.in-addr.arpa") is None
