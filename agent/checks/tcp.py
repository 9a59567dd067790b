"""TCP checks: connect to ``host:port`` (IPv4, ``[IPv6]:port`` or a name) and close again.

Passing with Consul's ``TCP connect <addr>: Success``; critical with Go's dial error text
("dial tcp 127.0.0.1:9: connect: connection refused", "... i/o timeout"). The timeout (default
10 s) covers name resolution and the connect.
"""

from __future__ import annotations

import random

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from agent import structs
from agent.checks.base import CheckNotifier, IntervalRunner, dial_error

DEFAULT_TIMEOUT = 10.0  # Consul's TCP check timeout


def split_host_port(address: str) -> tuple[str, int]:
    """Go's net.SplitHostPort plus a numeric port; ValueError with Go's wording otherwise."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"address {address}: missing ']' in address")
        host, rest = address[1:end], address[end + 1:]
        if not rest.startswith(":"):
            raise ValueError(f"address {address}: missing port in address")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise ValueError(f"address {address}: missing port in address")
        if ":" in host:
            raise ValueError(f"address {address}: too many colons in address")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"address {address}: invalid port")
    return host, int(port_text)


class _Probe(Protocol):
    """Connected: that is all we wanted. Tells us when the connection is really gone."""

    def __init__(self) -> None:
        self.lost = Deferred()

    def connectionLost(self, reason=None) -> None:
        if not self.lost.called:  # a stopped run may have cancelled the wait already
            self.lost.callback(None)


class _ProbeFactory(Factory):
    protocol = _Probe
    noisy = False  # no "Starting factory" INFO line for every run


def client_endpoint(reactor, host: str, port: int):
    """The endpoint Go's dialer would use for `host`: an IPv4 or IPv6 literal, or a name."""
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port)
    # A name: resolve both families and race them, like Go's dual-stack dialer.
    return HostnameEndpoint(reactor, host, port)


class TCPRunner(IntervalRunner):
    """Consul's TCP check."""

    def __init__(self, reactor, check_id: str, interval: float, timeout: float,
                 notifier: CheckNotifier, rng: random.Random | None = None, *, address: str,
                 **thresholds: int) -> None:
        super().__init__(reactor, check_id, interval, timeout or DEFAULT_TIMEOUT, notifier, rng,
                         **thresholds)
        self.address = address

    def run_once(self) -> Deferred:
        try:
            host, port = split_host_port(self.address)
        except ValueError as exc:
            return succeed((structs.CRITICAL, f"dial tcp {exc}"))
        connecting = client_endpoint(self._reactor, host, port).connect(_ProbeFactory())
        connecting.addTimeout(self.timeout, self._reactor)
        connecting.addCallbacks(self._connected, self._failed)
        return connecting

    def _connected(self, probe: _Probe) -> Deferred:
        probe.transport.loseConnection()
        # Report once the socket is closed, so a finished run leaves nothing open behind it.
        probe.lost.addCallback(
            lambda _: (structs.PASSING, f"TCP connect {self.address}: Success"))
        return probe.lost

    def _failed(self, reason) -> tuple[str, str]:
        return structs.CRITICAL, dial_error(reason, "tcp", self.address)
