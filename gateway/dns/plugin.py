"""The DNS interface as a frontend plugin, loaded through the `waypost` entry points."""

from __future__ import annotations

from gateway.dns.authority import ConsulAuthority
from gateway.dns.recursor import Forwarder
from gateway.dns.server import DNSController, DNSService
from gateway.dns.stream import TCP_IDLE, TCP_MAX_CONNECTIONS
from gateway.hookspecs import hookimpl


def make_dns_service(facade, reactor, settings=None) -> DNSService | None:
    config = facade.config
    if config.ports.dns < 0:
        return None
    settings = settings or {}
    dns = config.dns_config
    authority = ConsulAuthority(domain=config.domain, alt_domain=config.alt_domain,
                                datacenter=config.datacenter, dns_config=dns,
                                # The SOA serial is wall-clock time, as Consul's is.
                                clock=reactor.seconds)
    forwarder = Forwarder(reactor, list(config.recursors), dns.recursor_timeout)
    controller = DNSController(facade, reactor, authority, forwarder,
                               cache_answers=settings.get("answer_cache", True))
    host = config.dns_addr or config.client_addr
    return DNSService(controller, reactor, host, config.ports.dns,
                      tcp_idle=settings.get("tcp_idle_timeout", TCP_IDLE),
                      tcp_max_connections=settings.get("tcp_max_connections",
                                                       TCP_MAX_CONNECTIONS))


@hookimpl
def waypost_config_schema():
    return {"type": "object", "additionalProperties": False,
            "properties": {
                "answer_cache": {"type": "boolean"},
                # Seconds a TCP connection may sit without a query before it is closed.
                "tcp_idle_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
                # TCP connections kept open at once; one more evicts the quietest.
                "tcp_max_connections": {"type": "integer", "minimum": 1, "maximum": 100000},
            }}


@hookimpl
def waypost_frontends(facade, reactor, config):
    service = make_dns_service(facade, reactor, config)
    return [service] if service is not None else []
