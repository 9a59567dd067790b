"""Evaluates the go-sockaddr templates Consul accepts in its address settings.

Owns `evaluate`, which runs a template such as ``{{ GetInterfaceIP "eth0" }}`` or
``{{ GetAllInterfaces | include "network" "10.0.0.0/8" | attr "address" }}`` against a list of
interfaces (`agent.config.interfaces`) and returns the resulting text.

The commonly used subset is implemented, with go-sockaddr's meaning (private = in the RFC 6890
special-purpose registry, forwardable = outside its non-forwardable blocks, results sorted
with the default-route interface first, then IPv4 before IPv6, then larger networks first):

- sources: GetAllInterfaces, GetDefaultInterfaces, GetPrivateInterfaces, GetPublicInterfaces;
- shortcuts: GetPrivateIP(s), GetPublicIP(s), GetInterfaceIP(s) "name";
- steps: include/exclude ("address", "name", "network", "type", "flag(s)", "size"), sort,
  unique, limit, offset, attr, join.

Anything else (``math``, ``range``, variables, ...) is refused with a `TemplateError` naming it,
so a template never silently means something else than in Consul.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable

from agent.config.interfaces import IfAddr, within


class TemplateError(ValueError):
    """A template uses something not implemented here, or uses it wrongly."""



# -- the template language -------------------------------------------------------------------

_ACTION = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)
_SOURCES = ("GetAllInterfaces", "GetDefaultInterfaces", "GetPrivateInterfaces",
            "GetPublicInterfaces")
_TYPE_ORDER = {4: 1, 6: 2}  # go-sockaddr: Unix, then IPv4, then IPv6


def is_template(text: str) -> bool:
    return "{{" in text


def evaluate(template: str, interfaces: Callable[[], list[IfAddr]]) -> str:
    """The text ``template`` produces on a machine with ``interfaces``."""
    out, pos = [], 0
    cache: list[list[IfAddr]] = []

    def ifs() -> list[IfAddr]:
        if not cache:
            cache.append(list(interfaces()))
        return cache[0]

    for match in _ACTION.finditer(template):
        out.append(template[pos:match.start()])
        value = _pipeline(match.group(1), ifs, template)
        if isinstance(value, list):
            raise TemplateError(f"{template!r}: the template gives a list of interfaces; end it "
                                "with attr or join to pick the address")
        out.append(str(value))
        pos = match.end()
    rest = template[pos:]
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"{template!r}: unbalanced {{{{ }}}}")
    out.append(rest)
    return "".join(out)


def _pipeline(body: str, ifs: Callable[[], list[IfAddr]], template: str):
    value = None
    for index, command in enumerate(body.split("|")):
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise TemplateError(f"{template!r}: {exc}") from None
        if not words:
            raise TemplateError(f"{template!r}: an empty step in the pipeline")
        name, args = words[0], words[1:]
        if index == 0:
            value = _first(name, args, ifs, template)
        else:
            step = _STEPS.get(name)
            if step is None:
                raise TemplateError(f"{template!r}: go-sockaddr function {name!r} is not "
                                    "supported by Waypost")
            if not isinstance(value, list):
                raise TemplateError(f"{template!r}: {name} needs a list of interfaces")
            value = step(value, args, template)
    return value


def _first(name: str, args: list[str], ifs, template: str):
    if name in _SOURCES:
        _arity(name, args, 0, template)
        return _source(name, ifs())
    shortcut = _SHORTCUTS.get(name)
    if shortcut is None:
        raise TemplateError(f"{template!r}: go-sockaddr function {name!r} is not supported by "
                            "Waypost")
    wants = 1 if name.startswith("GetInterface") else 0
    _arity(name, args, wants, template)
    return shortcut(ifs(), *args)


def _arity(name: str, args: list[str], count: int, template: str) -> None:
    if len(args) != count:
        raise TemplateError(f"{template!r}: {name} takes {count} argument(s), got {len(args)}")


def _ordered(ifs: list[IfAddr]) -> list[IfAddr]:
    # go-sockaddr's order for its Get*Interfaces: default route first, IPv4 first, then the
    # larger networks (shorter prefixes) first; a stable sort keeps the system's order.
    return sorted(ifs, key=lambda i: (not i.default, _TYPE_ORDER[i.address.version],
                                      i.prefixlen))


def _source(name: str, ifs: list[IfAddr]) -> list[IfAddr]:
    if name == "GetAllInterfaces":
        return list(ifs)
    if name == "GetDefaultInterfaces":
        return [i for i in ifs if i.default]
    usable = _ordered([i for i in ifs if i.forwardable and "up" in i.flags])
    want_private = name == "GetPrivateInterfaces"
    return [i for i in usable if i.private == want_private]


def _addresses(ifs: list[IfAddr]) -> list[str]:
    return [str(i.address) for i in ifs]


def _private_ip(ifs: list[IfAddr]) -> str:
    return next(iter(_addresses(_source("GetPrivateInterfaces", ifs))), "")


def _public_ip(ifs: list[IfAddr]) -> str:
    return next(iter(_addresses(_source("GetPublicInterfaces", ifs))), "")


def _all_ips(ifs: list[IfAddr], private: bool) -> str:
    ordered = sorted(ifs, key=lambda i: (_TYPE_ORDER[i.address.version], i.prefixlen))
    return " ".join(str(i.address) for i in ordered if i.private == private and i.forwardable)


def _on_interface(ifs: list[IfAddr], name: str) -> list[IfAddr]:
    pattern = _regex(name, "")
    chosen = [i for i in ifs if pattern.search(i.name)]
    return sorted(chosen, key=lambda i: (_TYPE_ORDER[i.address.version], i.prefixlen))


_SHORTCUTS: dict[str, Callable[..., str]] = {
    "GetPrivateIP": _private_ip,
    "GetPublicIP": _public_ip,
    "GetPrivateIPs": lambda ifs: _all_ips(ifs, True),
    "GetPublicIPs": lambda ifs: _all_ips(ifs, False),
    "GetInterfaceIP": lambda ifs, name: next(
        iter(_addresses([i for i in _on_interface(ifs, name) if i.forwardable])), ""),
    "GetInterfaceIPs": lambda ifs, name: " ".join(_addresses(_on_interface(ifs, name))),
}


def _regex(text: str, template: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as exc:
        raise TemplateError(f"{template!r}: bad regular expression {text!r}: {exc}") from None


def _matches(selector: str, value: str, template: str) -> Callable[[IfAddr], bool]:
    kind = selector.lower()
    if kind == "address":
        pattern = _regex(value, template)
        return lambda i: bool(pattern.search(str(i.address)))
    if kind == "name":
        pattern = _regex(value, template)
        return lambda i: bool(pattern.search(i.name))
    if kind == "network":
        try:
            nets = [ipaddress.ip_network(n.strip(), strict=False) for n in value.split("|")]
        except ValueError as exc:
            raise TemplateError(f"{template!r}: {exc}") from None
        return lambda i: within(i.address, nets)
    if kind == "type":
        kinds = {t.strip().lower() for t in value.split("|")}
        unknown = kinds - {"ip", "ipv4", "ipv6", "unix"}
        if unknown:
            raise TemplateError(f"{template!r}: unknown type {sorted(unknown)[0]!r}")
        return lambda i: "ip" in kinds or f"ipv{i.address.version}" in kinds
    if kind in ("flag", "flags"):
        return _flag_matcher(value, template)
    if kind == "size":
        try:
            size = int(value)
        except ValueError:
            raise TemplateError(f"{template!r}: size must be a number, got {value!r}") from None
        return lambda i: i.prefixlen == size
    raise TemplateError(f"{template!r}: include/exclude selector {selector!r} is not "
                        "supported by Waypost")


def _flag_matcher(value: str, template: str) -> Callable[[IfAddr], bool]:
    tests: dict[str, Callable[[IfAddr], bool]] = {
        "up": lambda i: "up" in i.flags,
        "down": lambda i: "up" not in i.flags,
        "loopback": lambda i: "loopback" in i.flags or i.address.is_loopback,
        "broadcast": lambda i: "broadcast" in i.flags,
        "multicast": lambda i: "multicast" in i.flags,
        "point-to-point": lambda i: "pointopoint" in i.flags or "pointtopoint" in i.flags,
        "forwardable": lambda i: i.forwardable,
        "link-local unicast": lambda i: i.address.is_link_local,
        "global unicast": lambda i: i.address.is_global,
        "unspecified": lambda i: i.address.is_unspecified,
    }
    chosen = []
    for name in value.lower().split("|"):
        test = tests.get(name.strip())
        if test is None:
            raise TemplateError(f"{template!r}: flag {name.strip()!r} is not supported by Waypost")
        chosen.append(test)
    return lambda i: any(t(i) for t in chosen)


def _include(ifs, args, template, keep=True):
    if len(args) != 2:
        raise TemplateError(f"{template!r}: include/exclude take a selector and a value")
    test = _matches(args[0], args[1], template)
    return [i for i in ifs if test(i) == keep]


_SORT_KEYS: dict[str, Callable[[IfAddr], object]] = {
    "address": lambda i: (i.address.version, int(i.address)),
    "default": lambda i: not i.default,
    "name": lambda i: i.name,
    "private": lambda i: not i.private,
    "size": lambda i: i.prefixlen,
    "type": lambda i: _TYPE_ORDER[i.address.version],
}


def _sort(ifs, args, template):
    if len(args) != 1:
        raise TemplateError(f"{template!r}: sort takes one argument")
    out = list(ifs)
    for criterion in reversed([c.strip() for c in args[0].split(",") if c.strip()]):
        reverse = criterion.startswith("-")
        key = _SORT_KEYS.get(criterion.lstrip("+-"))
        if key is None:
            raise TemplateError(f"{template!r}: sort by {criterion!r} is not supported by "
                                "Waypost")
        out.sort(key=key, reverse=reverse)
    return out


def _unique(ifs, args, template):
    if len(args) != 1 or args[0] not in ("address", "name"):
        raise TemplateError(f"{template!r}: unique takes \"address\" or \"name\"")
    seen, out = set(), []
    for i in ifs:
        key = str(i.address) if args[0] == "address" else i.name
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def _number(args, name, template) -> int:
    if len(args) != 1:
        raise TemplateError(f"{template!r}: {name} takes one number")
    try:
        return int(args[0])
    except ValueError:
        raise TemplateError(f"{template!r}: {name} takes a number, got {args[0]!r}") from None


def _offset(ifs, args, template):
    n = _number(args, "offset", template)
    return ifs[n:] if n >= 0 else ifs[len(ifs) + n:]


def _attribute(i: IfAddr, name: str, template: str) -> str:
    values = {
        "address": lambda: str(i.address),
        "name": lambda: i.name,
        "network": lambda: str(ipaddress.ip_network(f"{i.address}/{i.prefixlen}",
                                                    strict=False).network_address),
        "mask_bits": lambda: str(i.prefixlen),
        "type": lambda: f"IPv{i.address.version}",
        "string": lambda: str(i.address) if i.prefixlen == i.address.max_prefixlen
        else f"{i.address}/{i.prefixlen}",
    }
    get = values.get(name.lower())
    if get is None:
        raise TemplateError(f"{template!r}: attribute {name!r} is not supported by Waypost")
    return get()


def _attr(ifs, args, template):
    if len(args) != 1:
        raise TemplateError(f"{template!r}: attr takes one attribute name")
    return _attribute(ifs[0], args[0], template) if ifs else ""


def _join(ifs, args, template):
    if len(args) != 2:
        raise TemplateError(f"{template!r}: join takes an attribute name and a separator")
    return args[1].join(_attribute(i, args[0], template) for i in ifs)


_STEPS = {
    "include": lambda ifs, args, t: _include(ifs, args, t, True),
    "exclude": lambda ifs, args, t: _include(ifs, args, t, False),
    "sort": _sort,
    "unique": _unique,
    "limit": lambda ifs, args, t: ifs[:max(0, _number(args, "limit", t))],
    "offset": _offset,
    "attr": _attr,
    "join": _join,
}
