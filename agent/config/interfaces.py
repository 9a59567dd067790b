"""This machine's network interfaces, one address at a time, as go-sockaddr sees them.

Owns `IfAddr` (an address with its interface's name, prefix length and flags, and whether the
interface holds the default route), the RFC 6890 tables that decide "private" and
"forwardable", and `system_interfaces`, which reads them with psutil (the default route from
Linux's /proc/net/route). `agent.config.sockaddr` evaluates templates against such lists.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 6890's special-purpose blocks, as go-sockaddr lists them: its "private" addresses.
RFC6890 = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
    "::1/128", "::/128", "64:ff9b::/96", "::ffff:0:0/96", "100::/64", "2001::/16",
    "2001:2::/48", "2001:db8::/32", "2001:10::/28", "2002::/16", "fc00::/7", "fe80::/10"))
# The blocks a router never forwards (go-sockaddr's "forwarding blacklist").
NOT_FORWARDABLE = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "192.0.0.0/24", "192.0.2.0/24",
    "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32", "::1/128",
    "::/128", "::ffff:0:0/96", "2001::/23", "2001:db8::/32", "2001:10::/28", "fe80::/10"))


@dataclass(frozen=True)
class IfAddr:
    """One IP address of one interface."""

    name: str
    address: Address
    prefixlen: int  # of the interface's network, e.g. 24 for 10.0.0.5/24
    flags: frozenset[str] = field(default_factory=frozenset)  # "up", "loopback", ...
    default: bool = False  # the interface holds the default route

    @property
    def network(self) -> Network:
        return ipaddress.ip_network(f"{self.address}/{self.prefixlen}", strict=False)

    @property
    def private(self) -> bool:
        return within(self.address, RFC6890)

    @property
    def forwardable(self) -> bool:
        return not within(self.address, NOT_FORWARDABLE)


def within(address: Address, blocks: Sequence[Network]) -> bool:
    return any(address.version == b.version and address in b for b in blocks)


def make_ifaddr(name: str, address: str, netmask: str | None = None,
                flags: frozenset[str] = frozenset(), default: bool = False) -> IfAddr:
    """An `IfAddr` from the strings the system reports (netmask dotted or a prefix length)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("%eth0")
    prefixlen = ip.max_prefixlen
    if netmask:
        try:
            prefixlen = ipaddress.ip_interface(f"{ip}/{netmask}").network.prefixlen
        except ValueError:
            pass
    return IfAddr(name, ip, prefixlen, flags, default)


def default_route_interfaces(route_table: Path = Path("/proc/net/route")) -> frozenset[str]:
    """The interfaces holding an IPv4 default route (Linux); empty where unknown."""
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return frozenset()
    names = set()
    for line in lines:
        parts = line.split()
        if len(parts) > 2 and parts[1] == "00000000":
            names.add(parts[0])
    return frozenset(names)


def system_interfaces() -> list[IfAddr]:
    """This machine's IP addresses, one `IfAddr` each."""
    import socket

    import psutil

    stats = psutil.net_if_stats()
    defaults = default_route_interfaces()
    out = []
    for name, addrs in psutil.net_if_addrs().items():
        st = stats.get(name)
        flags = set(st.flags.split(",")) if st is not None and getattr(st, "flags", "") else set()
        if st is not None and st.isup:
            flags.add("up")
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                out.append(make_ifaddr(name, a.address, a.netmask, frozenset(flags),
                                        name in defaults))
            except ValueError:
                continue
    return out
