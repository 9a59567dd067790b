"""Query names of the Consul DNS interface: parse a name into a lookup, and build the names
Consul puts into answers (node and service names, `<hex>.addr.` names, reverse names).

Pure string work with no catalog access. Everything here takes and returns names without the
trailing dot, as `gateway.dns.wire` spells them.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple

from gateway.dns import wire

# The label that names the kind of a lookup; Consul scans for it from the right.
KINDS = ("service", "connect", "ingress", "node", "query", "addr")


class Lookup(NamedTuple):
    """What a name inside the domain asks for.

    `kind` is one of KINDS, or "invalid" for names Consul answers with NXDOMAIN; `datacenter`
    is "" when the name has no datacenter label (the local one is meant).
    """
    kind: str
    name: str = ""  # service, node, prepared query or hex address, lower-cased
    tag: str = ""  # service tag filter, lower-cased; "" means no filter
    datacenter: str = ""


INVALID = Lookup("invalid")


def normalize_domain(domain: str) -> str:
    """ "Consul." -> "consul" (Consul lower-cases its domains and compares case-insensitively)."""
    return domain.strip(".").lower()


def split_domain(qname_lower: str, domains: tuple[str, ...]) -> tuple[list[str], str] | None:
    """The labels in front of the longest matching domain, and that domain; None if no match.

    Consul trims the longer of `domain` and `alt_domain` first, so with "consul" and
    "dc.consul" configured, "web.service.dc.consul" belongs to the second.
    """
    best: str | None = None
    for domain in domains:
        matches = domain and (qname_lower == domain or qname_lower.endswith("." + domain))
        if matches and (best is None or len(domain) > len(best)):
            best = domain
    if best is None:
        return None
    front = qname_lower[:len(qname_lower) - len(best)].rstrip(".")
    return (front.split(".") if front else []), best


def parse(labels: list[str], qtype: int) -> Lookup:
    """Consul 1.8's doDispatch: find the kind label from the right, allowing exactly one
    datacenter label between it and the domain."""
    datacenter = ""
    labels = list(labels)
    for attempt in range(2):
        if not labels:
            return INVALID
        # For SRV queries the "service" label is optional (`_web._tcp.consul`).
        if qtype == wire.SRV and labels[-1].startswith("_"):
            labels.append("service")
        kind = labels[-1]
        if kind in KINDS:
            return _parse_kind(kind, labels[:-1], datacenter)
        if attempt == 1:
            break  # a second non-kind label: "web.service.dc1.extra.consul" is invalid
        datacenter = labels.pop()
    return INVALID


def _parse_kind(kind: str, front: list[str], datacenter: str) -> Lookup:
    if not front:
        return INVALID
    if kind == "service":
        # RFC 2782: `_name._tag.service`; Consul only treats `_tcp` as "no tag" (`_udp` filters
        # on a tag called "udp").
        if len(front) == 2 and front[0].startswith("_") and front[1].startswith("_"):
            tag = front[1][1:]
            return Lookup(kind, front[0][1:], "" if tag == "tcp" else tag, datacenter)
        # `tag[.more].name.service`: everything before the name is one tag, dots included.
        return Lookup(kind, front[-1], ".".join(front[:-1]), datacenter)
    if kind in ("connect", "ingress"):
        return Lookup(kind, front[-1], "", datacenter)
    if kind == "addr":
        return Lookup(kind, front[0], "", datacenter) if len(front) == 1 else INVALID
    # Node names and prepared-query names may contain dots.
    return Lookup(kind, ".".join(front), "", datacenter)


def decode_addr_label(label: str) -> bytes | None:
    """The packed address in a `<hex>.addr.` label: 4 bytes (A) or 16 (AAAA).

    Returns None for a label that is not hex (Consul: NXDOMAIN) and b"" for hex of another
    length (Consul answers NOERROR with nothing).
    """
    if len(label) // 2 not in (4, 16):
        return b""
    try:
        return bytes.fromhex(label)
    except ValueError:
        return None


def addr_label(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The hex label Consul puts in SRV targets for service addresses: 8 or 32 hex digits."""
    return ip.packed.hex()


def node_fqdn(node: str, datacenter: str, domain: str) -> str:
    # Consul keeps the node name's case in SRV targets.
    return f"{node}.node.{datacenter}.{domain}"


def service_fqdn(service: str, datacenter: str, domain: str) -> str:
    return f"{service}.service.{datacenter}.{domain}"


def parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # inet_pton does the common IPv4 case in C, several times faster than ipaddress's parser
    # (this runs for every address of every uncached answer).
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, address))
    except (OSError, TypeError):
        pass
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def reverse_name(address: str) -> str | None:
    """"127.0.0.1" -> "1.0.0.127.in-addr.arpa" (full nibbles for IPv6); None if not an IP."""
    ip = parse_ip(address)
    return None if ip is None else ip.reverse_pointer


def address_from_reverse(qname_lower: str) -> str | None:
    """The IP a reverse name stands for, in canonical text form; None if it is not one."""
    labels = qname_lower.split(".")
    try:
        if qname_lower.endswith(".in-addr.arpa") and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if qname_lower.endswith(".ip6.arpa") and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            if all(len(n) == 1 for n in labels[:32]):
                return str(ipaddress.IPv6Address(int(nibbles, 16)))
    except ValueError:
        pass
    return None


def rfc1464(key: str, value: str) -> str:
    """A node meta pair as a TXT string the way Consul writes it (RFC 1464 quoting of the key);
    keys starting with "rfc1035-" carry a raw value."""
    if key.lower().startswith("rfc1035-"):
        return value
    key = key.replace("`", "``").replace("=", "`=")
    stripped = key.lstrip(" ")
    key = "` " * (len(key) - len(stripped)) + stripped
    stripped = key.rstrip(" ")
    key = stripped + "` " * (len(key) - len(stripped))
    return key + "=" + value.replace("`", "``")


def txt_strings(text: str) -> tuple[str, ...]:
    """Split at 255 bytes (meta values may be 512 long). Consul's DNS library refuses such a
    string and the answer is lost; several strings in one record are read as one."""
    if len(text.encode("utf-8")) <= 255:
        return (text,)
    parts, current, size = [], [], 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > 255:
            parts.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    return tuple(parts + ["".join(current)])

