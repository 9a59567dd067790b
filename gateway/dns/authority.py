"""The `consul.` authority: turns one DNS question and the state store into answer records.

Follows Consul 1.8.7's agent/dns.go (handleQuery, dispatch, nodeLookup, serviceLookup,
nameservers, handlePtr) record for record, so the answers have the shapes real Consul gives:
section order, owner names, SRV targets (`<node>.node.<dc>.<domain>`, or
`<hex>.addr.<dc>.<domain>` for a service with an IP address), node meta TXT records, and the
SOA in the authority section of negative answers. Size limits are applied later, by `fit`.

Pure: reads the `DNSCatalog` it is handed (typed reads through the facade), takes randomness from the caller's `rng` and the
SOA serial from `clock`; no reactor, no sockets.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from agent import structs
from agent.config.model import DNSConfig
from agent.errors import UnknownDatacenter
from gateway.dns import names, wire
from gateway.dns.names import Lookup

AXFR = 252
# Consul skips servers whose node name cannot be a DNS label when it lists nameservers.
_INVALID_LABEL = re.compile(r"[^A-Za-z0-9\-]")
# Query types an address record is built for (Consul's makeARecord).
_V4_TYPES = frozenset((wire.SRV, wire.A, wire.ANY, wire.NS, wire.TXT))
_V6_TYPES = frozenset((wire.SRV, wire.AAAA, wire.ANY, wire.NS, wire.TXT))
_NODE_TYPES = frozenset((wire.ANY, wire.A, wire.AAAA, wire.TXT))


class Answer(NamedTuple):
    rcode: int
    answers: list[wire.Record]
    authority: list[wire.Record]
    additional: list[wire.Record]
    # Consul 1.8 trims only service lookups to the UDP/TCP limits; `fit` reads this.
    trim: bool = False
    # From another datacenter's servers: not valid while our own state stands (never cached).
    remote: bool = False


class _Instance(NamedTuple):
    node: structs.Node
    service: structs.Service
    checks: list[structs.Check]


class ConsulAuthority:
    def __init__(self, *, domain: str, alt_domain: str, datacenter: str,
                 dns_config: DNSConfig, clock: Callable[[], float]) -> None:
        self.domain = names.normalize_domain(domain)
        self.alt_domain = names.normalize_domain(alt_domain)
        self._domains = tuple(d for d in (self.domain, self.alt_domain) if d)
        self.datacenter = datacenter
        self.config = dns_config
        self._clock = clock

    # --- the contract with the server ---

    def handles(self, qname_lower: str) -> bool:
        """Names in our domains (and the domains themselves), and reverse names: Consul routes
        all of `arpa.` to its PTR handler."""
        name = qname_lower.rstrip(".")
        return (name == "arpa" or name.endswith(".arpa")
                or names.split_domain(name, self._domains) is not None)

    def resolve(self, question: wire.Question, catalog: Any, rng: random.Random) -> Answer | None:
        """The answer to `question` from `catalog` (a `gateway.dns.catalog.DNSCatalog`); None
        when we are not authoritative (names outside our domains, reverse names no node or
        service has)."""
        qname = question.lower.rstrip(".")
        if qname == "arpa" or qname.endswith(".arpa"):
            return self._ptr(question, qname, catalog)
        split = names.split_domain(qname, self._domains)
        if split is None:
            return None
        labels, domain = split
        qtype = question.qtype
        # Consul answers SOA and NS for every name in the domain, before looking at the name.
        if qtype == wire.SOA:
            ns, glue = self._nameservers(catalog, domain, rng)
            return Answer(wire.NOERROR, [self._soa(domain)], ns, glue)
        if qtype == wire.NS:
            ns, glue = self._nameservers(catalog, domain, rng)
            return Answer(wire.NOERROR, ns, [], glue)
        if qtype == AXFR:
            return Answer(wire.NOTIMP, [], [], [])
        lookup = names.parse(labels, qtype)
        if lookup.kind == "invalid":
            return self._nxdomain(domain)
        if lookup.kind == "addr":  # the datacenter label is not checked for addr names
            return self._addr(question, lookup, domain)
        if lookup.datacenter and lookup.datacenter != self.datacenter.lower():
            return self._elsewhere(question, lookup, domain, catalog, rng)
        return self._lookup(question, lookup, domain, catalog, rng)

    def _elsewhere(self, question: wire.Question, lookup: Lookup, domain: str, catalog: Any,
                   rng: random.Random) -> Answer:
        """A name of another datacenter, answered by its servers (forwarded by ours), with
        that datacenter in owner names and SRV targets, as Consul's."""
        remote = copy.copy(self)
        remote.datacenter = lookup.datacenter
        try:
            answer = remote._lookup(question, lookup, domain,
                                    catalog.in_datacenter(lookup.datacenter), rng)
        except UnknownDatacenter:
            # Consul 1.8.1+ (hashicorp/consul#8103): "No path to datacenter" is NXDOMAIN.
            return self._nxdomain(domain)
        return answer._replace(remote=True)

    def no_path(self, question: wire.Question) -> Answer:
        """NXDOMAIN for a name of a datacenter there is no path to, when that was learned
        only after waiting (a client agent's server said so)."""
        split = names.split_domain(question.lower.rstrip("."), self._domains)
        return self._nxdomain(split[1] if split is not None else self.domain)

    def _lookup(self, question: wire.Question, lookup: Lookup, domain: str, catalog: Any,
                rng: random.Random) -> Answer:
        if lookup.kind == "node":
            return self._node(question, lookup, domain, catalog)
        if lookup.kind == "service":
            return self._service(question, lookup, domain, catalog, rng)
        # Prepared queries, Connect and ingress services: none exist here, so nothing matches.
        return self._nxdomain(domain)

    # --- negative answers ---

    def _soa(self, domain: str) -> wire.Record:
        soa = self.config.soa
        serial = int(self._clock()) & 0xFFFFFFFF  # Consul: the current unix time
        data = wire.SOAData(f"ns.{domain}", f"hostmaster.{domain}", serial, soa.refresh,
                            soa.retry, soa.expire, soa.min_ttl)
        # The record's own TTL follows min_ttl so negative caching stays consistent.
        return wire.Record(domain, wire.SOA, soa.min_ttl, data)

    def _nxdomain(self, domain: str) -> Answer:
        return Answer(wire.NXDOMAIN, [], [self._soa(domain)], [])

    # --- nodes ---

    def _node(self, q: wire.Question, lookup: Lookup, domain: str, catalog: Any) -> Answer:
        qtype = q.qtype
        if qtype not in _NODE_TYPES:
            # Consul returns before looking the node up: NOERROR, empty, and no SOA.
            return Answer(wire.NOERROR, [], [], [])
        node = catalog.node(lookup.name)
        if node is None:
            return self._nxdomain(domain)
        ttl = _seconds(self.config.node_ttl)
        answers: list[wire.Record] = []
        additional: list[wire.Record] = []
        if qtype != wire.TXT:
            answers += _node_records(node, qtype, q.name, ttl)
        if qtype in (wire.TXT, wire.ANY):
            answers += _meta_records(q.name, node, ttl)
        elif self.config.enable_additional_node_meta_txt:
            additional += _meta_records(q.name, node, ttl)
        return Answer(wire.NOERROR, answers, [], additional)

    # --- services ---

    def _service(self, q: wire.Question, lookup: Lookup, domain: str, catalog: Any,
                 rng: random.Random) -> Answer:
        instances = self._healthy_instances(catalog, lookup.name, lookup.tag)
        if not instances:
            return self._nxdomain(domain)
        rng.shuffle(instances)
        ttl = _seconds(self.config.ttl_for_service(lookup.name))
        additional: list[wire.Record] = []
        if q.qtype == wire.SRV:
            answers, additional = self._srv_records(q, instances, ttl, domain)
        else:
            answers = self._address_records(q, instances, ttl, domain)
        if not answers:  # the service exists but has nothing of this type: NODATA
            return Answer(wire.NOERROR, [], [self._soa(domain)], [], trim=True)
        return Answer(wire.NOERROR, answers, [], additional, trim=True)

    def _healthy_instances(self, catalog: Any, name: str, tag: str) -> list[_Instance]:
        """Instances of `name` (case-insensitive, as Consul's index) carrying `tag`, without
        those Consul's health filter drops: any critical check (maintenance is critical too),
        and with only_passing any check that is not passing."""
        found = []
        only_passing = self.config.only_passing
        for row in catalog.instances(name):
            node, service, checks = row.node, row.service, list(row.checks)
            if tag and tag not in (t.lower() for t in service.tags):
                continue
            if any(c.status in (structs.CRITICAL, structs.MAINTENANCE)
                   or (only_passing and c.status != structs.PASSING) for c in checks):
                continue
            found.append(_Instance(node, service, checks))
        return found

    def _address_records(self, q: wire.Question, instances: list[_Instance], ttl: int,
                         domain: str) -> list[wire.Record]:
        """A/AAAA (or CNAME) answers, one per distinct record; a CNAME only when no instance
        gave an address (Consul's serviceNodeRecords)."""
        answers: list[wire.Record] = []
        seen: set[wire.Record] = set()
        cname: list[wire.Record] = []
        for instance in instances:
            records, _ = self._instance_records(q, instance, ttl, domain)
            if not records or records[0] in seen:
                continue
            seen.add(records[0])
            if records[0].rtype == wire.CNAME:
                cname = cname or records
            else:
                answers += records
        return answers or cname

    def _srv_records(self, q: wire.Question, instances: list[_Instance], ttl: int,
                     domain: str) -> tuple[list[wire.Record], list[wire.Record]]:
        """SRV answers; in additional, each target's address then its node's meta TXT records
        (the order of reference dig output 84)."""
        answers: list[wire.Record] = []
        additional: list[wire.Record] = []
        seen: set[tuple[str, str, int]] = set()
        for instance in instances:
            node, service = instance.node, instance.service
            key = (node.name, _service_address(service, wire.ANY), service.port)
            if key in seen:  # the same service twice on a node, same address and port
                continue
            seen.add(key)
            srv, extra = self._instance_records(q, instance, ttl, domain)
            answers += srv
            additional += extra
            if self.config.enable_additional_node_meta_txt:
                owner = names.node_fqdn(node.name, self.datacenter, domain)
                additional += _meta_records(owner, node, ttl)
        return answers, additional

    def _instance_records(self, q: wire.Question, instance: _Instance, ttl: int,
                          domain: str) -> tuple[list[wire.Record], list[wire.Record]]:
        """Answer and additional records for one instance (Consul's nodeServiceRecords)."""
        node, service = instance.node, instance.service
        service_addr = _service_address(service, q.qtype)
        node_addr = _node_address(node, q.qtype)
        if not service_addr and not node_addr:
            return [], []
        node_ip = names.parse_ip(node_addr)
        if not service_addr:
            if node_ip is None:  # the node's address is a host name (external service)
                return self._host_records(q, instance, node_addr, ttl)
            if node.address != node_addr:  # a translated address is never the node's name
                return self._ip_records(q, instance, node_ip, ttl, domain)
            return self._node_target_records(q, instance, node_ip, ttl, domain)
        service_ip = names.parse_ip(service_addr)
        if service_ip is not None:
            return self._ip_records(q, instance, service_ip, ttl, domain)
        if service_addr.rstrip(".").lower() == q.lower.rstrip(".") and node_ip is not None:
            # The service address names the service itself: use the node's address.
            return self._node_target_records(q, instance, node_ip, ttl, domain)
        return self._host_records(q, instance, service_addr, ttl)

    def _srv(self, q: wire.Question, instance: _Instance, ttl: int, target: str) -> wire.Record:
        data = wire.SRVData(1, _weight(instance), instance.service.port, target)
        return wire.Record(q.name, wire.SRV, ttl, data)

    def _node_target_records(self, q, instance, ip, ttl, domain):
        record = _address_record(q.qtype, ip, ttl)
        if record is None:
            return [], []
        if q.qtype == wire.SRV:
            target = names.node_fqdn(instance.node.name, self.datacenter, domain)
            return [self._srv(q, instance, ttl, target)], [record._replace(name=target)]
        return [record._replace(name=q.name)], []

    def _ip_records(self, q, instance, ip, ttl, domain):
        record = _address_record(q.qtype, ip, ttl)
        if record is None:
            return [], []
        if q.qtype == wire.SRV:
            target = f"{names.addr_label(ip)}.addr.{self.datacenter}.{domain}"
            return [self._srv(q, instance, ttl, target)], [record._replace(name=target)]
        return [record._replace(name=q.name)], []

    def _host_records(self, q, instance, host, ttl):
        # Consul would also resolve the host name through its recursors and add what they
        # answer; this authority has no recursors, so the CNAME / SRV target stands alone.
        host = host.rstrip(".")
        if q.qtype == wire.SRV:
            return [self._srv(q, instance, ttl, host)], []
        return [wire.Record(q.name, wire.CNAME, ttl, host)], []

    # --- addr, nameservers, PTR ---

    def _addr(self, q: wire.Question, lookup: Lookup, domain: str) -> Answer:
        packed = names.decode_addr_label(lookup.name)
        if packed is None:
            return self._nxdomain(domain)
        if not packed:
            return Answer(wire.NOERROR, [], [], [])
        # Consul 1.8 answers the address whatever the query type (fixed only in 1.10).
        rtype = wire.A if len(packed) == 4 else wire.AAAA
        ttl = _seconds(self.config.node_ttl)
        return Answer(wire.NOERROR, [wire.Record(q.lower.rstrip("."), rtype, ttl, packed)], [], [])

    def _nameservers(self, catalog: Any, domain: str,
                     rng: random.Random) -> tuple[list[wire.Record], list[wire.Record]]:
        """Up to three healthy servers (the "consul" service) as NS records, with their
        addresses as glue."""
        instances = self._healthy_instances(catalog, "consul", "")
        rng.shuffle(instances)
        ttl = _seconds(self.config.node_ttl)
        ns: list[wire.Record] = []
        glue: list[wire.Record] = []
        for instance in instances:
            if _INVALID_LABEL.search(instance.node.name):
                continue
            fqdn = names.node_fqdn(instance.node.name, self.datacenter, domain).lower()
            ns.append(wire.Record(domain, wire.NS, ttl, fqdn))
            glue += _node_records(instance.node, wire.ANY, fqdn, ttl)
            if len(ns) >= 3:
                break
        return ns, glue

    def _ptr(self, q: wire.Question, qname: str, catalog: Any) -> Answer | None:
        """Nodes by address first, then services by service address; the first match only,
        TTL 0 (both as Consul). Consul answers PTR whatever the query type, and adds the SOA
        to the authority section when SOA was asked."""
        target = None
        for node in catalog.nodes():
            if names.reverse_name(node.address) == qname:
                target = names.node_fqdn(node.name, self.datacenter, self.domain)
                break
        address = None if target else names.address_from_reverse(qname)
        if address:
            for row in catalog.instances_everywhere():
                if row.service.address == address:
                    target = names.service_fqdn(row.service.name, self.datacenter, self.domain)
                    break
        if target is None:
            return None  # Consul hands these to its recursors
        authority = [self._soa(self.domain)] if q.qtype == wire.SOA else []
        return Answer(wire.NOERROR, [wire.Record(q.name, wire.PTR, 0, target)], authority, [])


# --- helpers on catalog rows ---

def _seconds(ttl: float) -> int:
    return max(0, int(ttl))  # Go: uint32(ttl / time.Second), truncating


def _node_address(node: structs.Node, qtype: int) -> str:
    """Consul's TranslateAddress in the local datacenter: the tagged lan_ipv4 / lan_ipv6
    address the query type accepts, else the node's address."""
    tagged = node.tagged_addresses
    v4 = tagged.get("lan_ipv4", "") if qtype != wire.AAAA else ""
    v6 = tagged.get("lan_ipv6", "") if qtype != wire.A else ""
    return v4 or v6 or node.address


def _service_address(service: structs.Service, qtype: int) -> str:
    tagged = service.tagged_addresses
    v4 = tagged["lan_ipv4"].address if qtype != wire.AAAA and "lan_ipv4" in tagged else ""
    v6 = tagged["lan_ipv6"].address if qtype != wire.A and "lan_ipv6" in tagged else ""
    return v4 or v6 or service.address


def _address_record(qtype: int, ip, ttl: int) -> wire.Record | None:
    """An A or AAAA record (owner name filled in by the caller) if the query type wants it."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # Go's To4() treats mapped addresses as IPv4
    if ip.version == 4:
        return wire.Record("", wire.A, ttl, ip.packed) if qtype in _V4_TYPES else None
    return wire.Record("", wire.AAAA, ttl, ip.packed) if qtype in _V6_TYPES else None


def _node_records(node: structs.Node, qtype: int, owner: str, ttl: int) -> list[wire.Record]:
    """A node's address as `owner` (Consul's makeRecordFromNode); a CNAME for a host name."""
    address = _node_address(node, qtype)
    ip = names.parse_ip(address)
    if ip is None:
        return [wire.Record(owner, wire.CNAME, ttl, address.rstrip("."))] if address else []
    record = _address_record(qtype, ip, ttl)
    return [] if record is None else [record._replace(name=owner)]


def _meta_records(owner: str, node: structs.Node, ttl: int) -> list[wire.Record]:
    # Go iterates the meta map in random order; sorted keys keep cached answers stable.
    return [wire.Record(owner, wire.TXT, ttl, names.txt_strings(names.rfc1464(key, node.meta[key])))
            for key in sorted(node.meta)]


def _weight(instance: _Instance) -> int:
    """The SRV weight: Weights.Warning if a check of the instance warns, else Weights.Passing
    (critical instances never get here); 1 for an unknown status, as Consul's findWeight."""
    status = structs.PASSING
    for check in instance.checks:
        if check.status == structs.WARNING:
            status = structs.WARNING
        elif check.status != structs.PASSING:
            return 1
    weights = instance.service.weights
    return weights.warning if status == structs.WARNING else weights.passing
