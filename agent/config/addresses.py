"""Checks and resolves the address settings at load time, with Consul's rules.

Owns the meaning of ``bind_addr``, ``advertise_addr``, ``client_addr``, ``addresses.*`` and
``recursors``: each may hold IPs or go-sockaddr templates (evaluated here by
`agent.config.sockaddr` against this machine's interfaces, handed in by the caller), and the
lists may be space-separated. A bad value stops start-up with a `ConfigError` naming the key,
instead of a listener failing later (or binding somewhere else) in silence.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from agent.config.interfaces import IfAddr
from agent.config.sockaddr import TemplateError, evaluate, is_template
from agent.config.validate import ConfigError

Interfaces = Callable[[], list[IfAddr]]
UNIX = "unix://"


def _words(key: str, text: str, interfaces: Interfaces) -> list[str]:
    """The whitespace-separated words of ``text``, templates evaluated first."""
    if is_template(text):
        try:
            text = evaluate(text, interfaces)
        except TemplateError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    return text.split()


def _ip(key: str, word: str) -> str:
    try:
        return str(ipaddress.ip_address(word.strip("[]")))
    except ValueError:
        raise ConfigError(f"{key}: {word!r} is not an IP address") from None


def listen_addresses(key: str, text: str, interfaces: Interfaces, *,
                     unix: str | None) -> tuple[str, ...]:
    """The addresses of ``client_addr`` or ``addresses.<x>``: IPs, and ``unix:///path``
    where ``unix`` is None (allowed); otherwise ``unix`` is the message refusing a socket."""
    out: list[str] = []
    for word in _words(key, text, interfaces):
        if word.startswith(UNIX):
            if unix is not None:
                raise ConfigError(unix)
            if len(word) == len(UNIX):
                raise ConfigError(f"{key}: {word!r} names no socket path")
            address = word
        else:
            address = _ip(key, word)
        if address not in out:
            out.append(address)
    if not out:
        raise ConfigError(f"{key}: {text!r} gives no address on this machine")
    return tuple(out)


def single_address(key: str, text: str, interfaces: Interfaces) -> str:
    """The one IP of ``bind_addr`` or ``advertise_addr``."""
    words = _words(key, text, interfaces)
    if not words:
        raise ConfigError(f"{key}: {text!r} gives no address on this machine" if text.strip()
                          else f"{key} cannot be empty")
    if len(words) > 1:
        raise ConfigError(f"{key} cannot contain multiple addresses ({' '.join(words)}); "
                          "use 'addresses.{dns,http}' for more than one")
    if words[0].startswith(UNIX):
        raise ConfigError(f"{key} cannot be a unix socket")
    return _ip(key, words[0])


def advertise_address(bind: str, advertise: str, interfaces: Interfaces) -> str:
    """The address other nodes and the catalog see, as Consul picks it.

    An explicit ``advertise_addr`` wins (it may not be 0.0.0.0 or ::). Otherwise it is the bind
    address, unless that is 0.0.0.0 (the machine's one private IPv4 address) or :: (its one
    public IPv6 address).
    """
    if advertise:
        address = single_address("advertise_addr", advertise, interfaces)
        if ipaddress.ip_address(address).is_unspecified:
            raise ConfigError("advertise_addr: the advertise address cannot be 0.0.0.0 or ::")
        return address
    if not ipaddress.ip_address(bind).is_unspecified:
        return bind
    v4 = ipaddress.ip_address(bind).version == 4
    kind = "private IPv4" if v4 else "public IPv6"
    found = []
    for i in interfaces():
        if i.address.version != (4 if v4 else 6) or "up" not in i.flags:
            continue
        if i.address.is_loopback or i.address.is_link_local:
            continue
        if i.private == v4 and str(i.address) not in found:
            found.append(str(i.address))
    if not found:
        raise ConfigError(f"bind_addr is {bind} and no {kind} address was found to advertise; "
                          "set advertise_addr")
    if len(found) > 1:
        raise ConfigError(f"bind_addr is {bind} and several {kind} addresses were found "
                          f"({' '.join(found)}); set bind_addr or advertise_addr to one")
    return found[0]


def recursors(entries: list[str], interfaces: Interfaces) -> tuple[str, ...]:
    """``recursors`` as ``ip`` or ``ip:port`` (IPv6 as ``[ip]:port``), de-duplicated.

    Consul adds port 53 when it sends a query; a host name is refused (Consul would resolve it
    once at start, which silently pins whatever the name meant then).
    """
    out: list[str] = []
    for entry in entries:
        for word in _words("recursors", entry, interfaces):
            address = _recursor(word)
            if address not in out:
                out.append(address)
    return tuple(out)


def _recursor(word: str) -> str:
    host, port = word, ""
    if word.startswith("["):
        host, _, rest = word[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ConfigError(f"recursors: {word!r} is not an IP address or IP:port")
        port = rest[1:]
    elif word.count(":") == 1:
        host, port = word.split(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"recursors: {word!r} is not an IP address or IP:port (host names "
                          "are not supported)") from None
    if ip.is_unspecified:
        raise ConfigError("recursors: a DNS recursor address cannot be 0.0.0.0 or ::")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"recursors: {word!r} has a bad port")
        return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    return str(ip)


def resolve(c: Mapping[str, Any], interfaces: Interfaces,
            origin: Callable[[str], str | None]) -> dict[str, Any]:
    """The address fields of `AgentConfig` from the merged settings ``c``.

    Every address setting is checked, also those without an effect yet (``addresses.https``,
    ``advertise_addr_wan``, ...), so a typo is found now. Errors name the source that set
    the key.
    """
    def at(key: str, check: Callable[[], Any]) -> Any:
        try:
            return check()
        except ConfigError as exc:
            source = origin(key)
            raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None

    addresses = c.get("addresses", {})
    bind = at("bind_addr", lambda: single_address("bind_addr", c.get("bind_addr", "127.0.0.1"),
                                                  interfaces))
    advertise = at("advertise_addr", lambda: advertise_address(
        bind, c.get("advertise_addr", ""), interfaces))
    for key in ("advertise_addr_wan", "advertise_addr_ipv4", "advertise_addr_ipv6",
                "advertise_addr_wan_ipv4", "serf_lan", "serf_wan"):
        if c.get(key):
            at(key, lambda key=key: single_address(key, c[key], interfaces))
    client = at("client_addr", lambda: listen_addresses(
        "client_addr", c.get("client_addr", "127.0.0.1"), interfaces,
        unix="client_addr cannot be a unix socket"))
    found: dict[str, tuple[str, ...]] = {}
    for kind in ("http", "https", "dns", "grpc"):
        if addresses.get(kind):
            unix = "DNS address cannot be a unix socket" if kind == "dns" else None
            found[kind] = at(f"addresses.{kind}", lambda kind=kind, unix=unix: listen_addresses(
                f"addresses.{kind}", addresses[kind], interfaces, unix=unix))
    return {
        "bind_addr": bind,
        "advertise_addr": "" if advertise == bind else advertise,
        "client_addrs": client,
        "client_addr": client[0],
        "http_addrs": found.get("http", ()),
        "http_addr": found.get("http", ("",))[0],
        "dns_addrs": found.get("dns", ()),
        "dns_addr": found.get("dns", ("",))[0],
        "recursors": at("recursors", lambda: recursors(list(c.get("recursors", ())),
                                                       interfaces)),
    }
