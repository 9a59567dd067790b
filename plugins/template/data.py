"""The data functions templates call (``service``, ``key``, ``ls`` ...) and where data comes from.

Owns: dependencies (`Dep`: what one function call reads, e.g. ``health.service(web)``), the
records templates see, with consul-template's field names (``.Address``, ``.Port``, ``.Tags``
...), the query syntax (``tag.name@dc|filter``), and `DataFunctions`, which answers calls from a
`Source` and records every dependency a render used and which ones had no data yet.

A source has one method, ``fetch(dep)``, returning the dependency's value or raising
`MissingData`. `FeedSource` reads the agent's `CatalogFeed` in-process; `HTTPSource` (in
`plugin`, next to the standalone runner that uses it) reads an agent's HTTP API. Both return
the same values, so a template renders the same through either.

Semantics follow consul-template 0.20: ``service`` lists passing instances unless a filter says
otherwise (``"web|any"``, ``"web|passing,warning"``, or a second argument), sorted by node then
ID, tags sorted; ``key`` of a missing key holds the template back until the key exists;
``keyOrDefault`` does not; ``ls`` lists the direct children of a prefix, ``tree`` everything
below it, both without folder entries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from plugins.template.gotemplate_funcs import BUILTINS
from plugins.template.gotemplate_helpers import HELPERS, go_time_format

HEALTH_STATES = ("any", "passing", "warning", "critical", "maintenance")


class MissingData(Exception):
    """The source has no value for a dependency yet (it is being fetched)."""


class DataError(Exception):
    """A data function was called with a query it cannot answer."""


@dataclass(frozen=True)
class Dep:
    """One dependency: what a data function reads. Hashable, comparable, printable."""

    kind: str  # catalog.services | health.service | catalog.nodes | catalog.node | kv.get | kv.list
    name: str = ""  # service or node name, key, or prefix
    dc: str = ""
    tag: str = ""
    filter: tuple[str, ...] = ()  # health states; () means passing only, consul-template's default

    @property
    def is_kv(self) -> bool:
        return self.kind.startswith("kv.")

    def __str__(self) -> str:
        text = ".".join(p for p in (self.tag, self.name) if p) + (f"@{self.dc}" if self.dc else "")
        if self.kind == "health.service":
            text += "|" + ",".join(self.filter or ("passing",))
        return f"{self.kind}({text})"


# --- records (consul-template's field names) -------------------------------------------

class GoList(tuple):
    """A list that prints as Go does (``[a b]``), in either syntax."""

    def __str__(self) -> str:
        return "[" + " ".join(str(v) for v in self) + "]"


@dataclass(frozen=True)
class Weights:
    Passing: int = 1
    Warning: int = 1


@dataclass(frozen=True)
class HealthService:
    Node: str
    NodeID: str
    NodeAddress: str
    NodeDatacenter: str
    NodeTaggedAddresses: Mapping[str, str]
    NodeMeta: Mapping[str, str]
    ServiceMeta: Mapping[str, str]
    Address: str
    ID: str
    Name: str
    Tags: GoList
    Status: str
    Port: int
    Weights: Weights = field(default_factory=Weights)

    @property
    def Meta(self) -> Mapping[str, str]:
        return self.ServiceMeta


@dataclass(frozen=True)
class CatalogSnippet:
    Name: str
    Tags: GoList


@dataclass(frozen=True)
class Node:
    ID: str
    Node: str
    Address: str
    Datacenter: str
    TaggedAddresses: Mapping[str, str]
    Meta: Mapping[str, str]


@dataclass(frozen=True)
class CatalogNodeService:
    ID: str
    Service: str
    Tags: GoList
    Meta: Mapping[str, str]
    Port: int
    Address: str


@dataclass(frozen=True)
class CatalogNode:
    Node: Node
    Services: tuple[CatalogNodeService, ...]


@dataclass(frozen=True)
class KeyPair:
    Path: str
    Key: str
    Value: str
    Flags: int = 0
    CreateIndex: int = 0
    ModifyIndex: int = 0
    LockIndex: int = 0
    Session: str = ""


def sorted_tags(tags: Any) -> GoList:
    return GoList(sorted(set(tags)))


def accepts(dep: Dep, status: str) -> bool:
    """Does an instance in ``status`` pass the dependency's health filter?"""
    if dep.filter == ("any",):
        return True
    return status in (dep.filter or ("passing",))


def relative_pairs(prefix: str, pairs: list[KeyPair]) -> tuple[KeyPair, ...]:
    """Keys made relative to ``prefix`` the way consul-template does (``app`` + ``app/x`` -> ``x``)."""
    out = []
    for pair in pairs:
        key = pair.Path.removeprefix(prefix)
        out.append(KeyPair(pair.Path, key.lstrip("/"), pair.Value, pair.Flags, pair.CreateIndex,
                           pair.ModifyIndex, pair.LockIndex, pair.Session))
    return tuple(out)


def text(value: bytes | None) -> str:
    # Keys hold bytes; surrogateescape lets any bytes through the text template and back.
    return "" if value is None else value.decode("utf-8", "surrogateescape")


# --- query syntax -----------------------------------------------------------------------

_DC = r"(?:@(?P<dc>[\w.\-]+))?"
_SERVICE = re.compile(r"\A(?:(?P<tag>[\w=:.\-]+)\.)?(?P<name>[\w\-]+)" + _DC
                      + r"(?:~(?P<near>[\w.\-]+))?(?:\|(?P<filter>[\w,\s]+))?\Z")
_NODE = re.compile(r"\A(?P<name>[\w.\-]+)?" + _DC + r"\Z")
_DC_ONLY = re.compile(r"\A" + _DC + r"\Z")
_KEY = re.compile(r"\A/?(?P<name>[^@]*)" + _DC + r"\Z")


def service_dep(args: tuple[str, ...]) -> Dep:
    query = "|".join(args)
    match = _SERVICE.match(query)
    if not match:
        raise DataError(f"health.service: invalid format: {query!r}")
    if match.group("near"):
        raise DataError(f"health.service: sorting by distance (~near) is not supported: {query!r}")
    states = tuple(s.strip() for s in (match.group("filter") or "").split(",") if s.strip())
    for state in states:
        if state not in HEALTH_STATES:
            raise DataError(f"service filter: invalid filter {state!r}")
    if "any" in states and len(states) > 1:
        raise DataError('service filter: cannot specify extra keys when using "any"')
    return Dep("health.service", match.group("name"), match.group("dc") or "",
               match.group("tag") or "", states)


def _match(regex: re.Pattern, kind: str, query: str) -> re.Match:
    match = regex.match(query)
    if not match:
        raise DataError(f"{kind}: invalid format: {query!r}")
    return match


def simple_dep(kind: str, query: str) -> Dep:
    regex = {"catalog.node": _NODE, "kv.get": _KEY, "kv.list": _KEY}.get(kind, _DC_ONLY)
    match = _match(regex, kind, query)
    groups = match.groupdict()
    return Dep(kind, groups.get("name") or "", groups.get("dc") or "")


# --- sources ----------------------------------------------------------------------------

class Source(Protocol):
    def fetch(self, dep: Dep) -> Any:
        """The dependency's current value; raises `MissingData` or `DataError`."""


class FeedSource:
    """Answers from the agent's `CatalogFeed` (in-process, always up to date)."""

    def __init__(self, feed: Any, node_name: str = "") -> None:
        self.feed = feed
        self.node_name = node_name  # for ``node`` without a name: the agent's own node

    def fetch(self, dep: Dep) -> Any:
        if dep.is_kv:
            return self._kv(dep)
        view = self.feed.view()
        if dep.dc and dep.dc != view.datacenter:
            raise DataError(f"{dep}: only the agent's own datacenter ({view.datacenter}) "
                            "is available to the template plugin")
        if dep.kind == "catalog.services":
            return tuple(CatalogSnippet(name, sorted_tags(view.tags(name)))
                         for name in sorted(view.services) if view.services[name])
        if dep.kind == "health.service":
            found = [i for i in view.services.get(dep.name, ())
                     if (not dep.tag or dep.tag in i.tags) and accepts(dep, i.status)]
            return tuple(sorted((_health(i, view.datacenter) for i in found),
                                key=lambda s: (s.Node, s.ID)))
        if dep.kind == "catalog.nodes":
            return tuple(Node("", n.name, n.address, n.datacenter or view.datacenter, {},
                              dict(n.meta)) for _, n in sorted(view.node_info.items()))
        if dep.kind == "catalog.node":
            return self._node(view, dep.name or self.node_name)
        raise DataError(f"unknown dependency {dep}")

    def _node(self, view: Any, name: str) -> CatalogNode | None:
        info = view.node_info.get(name)
        if info is None:
            return None
        services = [CatalogNodeService(i.service_id, i.name, sorted_tags(i.tags), dict(i.meta),
                                       i.port, i.address)
                    for instances in view.services.values() for i in instances if i.node == name]
        services.sort(key=lambda s: (s.Service, s.ID))
        return CatalogNode(Node("", info.name, info.address, info.datacenter or view.datacenter,
                                {}, dict(info.meta)), tuple(services))

    def _kv(self, dep: Dep) -> Any:
        if dep.dc:
            raise DataError(f"{dep}: only the agent's own datacenter is available to the "
                            "template plugin")
        if dep.kind == "kv.get":
            item = self.feed.kv_get(dep.name)
            return None if item is None else (item.value or b"")
        pairs = [KeyPair(i.key, "", text(i.value), i.flags, 0, i.modify_index)
                 for i in sorted(self.feed.kv_list(dep.name), key=lambda i: i.key)]
        return relative_pairs(dep.name, pairs)


def _health(i: Any, datacenter: str) -> HealthService:
    return HealthService(
        Node=i.node, NodeID="", NodeAddress=i.node_address,
        NodeDatacenter=i.datacenter or datacenter, NodeTaggedAddresses={},
        NodeMeta=dict(i.node_meta), ServiceMeta=dict(i.meta), Address=i.address,
        ID=i.service_id, Name=i.name, Tags=sorted_tags(i.tags), Status=i.status, Port=i.port,
        Weights=Weights(*i.weights))


# --- the functions ----------------------------------------------------------------------

MISSING = object()  # a dependency the source had no value for

DATA_FUNCTION_NAMES = ("service", "services", "nodes", "node", "key", "keyOrDefault",
                       "keyExists", "ls", "tree", "env", "timestamp")
FUNCTION_NAMES = frozenset(BUILTINS) | frozenset(HELPERS) | frozenset(DATA_FUNCTION_NAMES)


class DataFunctions:
    """The functions for one render, reading through ``source`` and remembering what they read.

    After rendering, ``used`` maps each dependency to the value the render saw (`MISSING` when
    there was none) and ``missing`` lists those the render still waits for: when it is not
    empty, the output is incomplete and must not be written.
    """

    def __init__(self, source: Source, env: Mapping[str, str] | None = None,
                 now: Callable[[], float] | None = None) -> None:
        self.source = source
        self.env = env or {}
        self.now = now or (lambda: 0.0)
        self.used: dict[Dep, Any] = {}
        self.missing: list[Dep] = []

    def functions(self) -> dict[str, Callable[..., Any]]:
        funcs: dict[str, Callable[..., Any]] = {**BUILTINS, **HELPERS}
        funcs.update({
            "service": self.service, "services": self.services, "nodes": self.nodes,
            "node": self.node, "key": self.key, "keyOrDefault": self.key_or_default,
            "keyExists": self.key_exists, "ls": self.ls, "tree": self.tree,
            "env": lambda name: self.env.get(name, ""), "timestamp": self.timestamp,
        })
        return funcs

    def recall(self, dep: Dep) -> tuple[bool, Any]:
        """(found, value) for ``dep``, read once per render so a render is consistent."""
        if dep not in self.used:
            try:
                self.used[dep] = self.source.fetch(dep)
            except MissingData:
                self.used[dep] = MISSING
                self.missing.append(dep)
        value = self.used[dep]
        return value is not MISSING, (None if value is MISSING else value)

    def service(self, *args: str) -> tuple[HealthService, ...]:
        if not args or not args[0]:
            return ()
        found, value = self.recall(service_dep(tuple(args)))
        return value if found else ()

    def services(self, *args: str) -> tuple[CatalogSnippet, ...]:
        found, value = self.recall(simple_dep("catalog.services", "".join(args)))
        return value if found else ()

    def nodes(self, *args: str) -> tuple[Node, ...]:
        found, value = self.recall(simple_dep("catalog.nodes", "".join(args)))
        return value if found else ()

    def node(self, *args: str) -> CatalogNode | None:
        return self.recall(simple_dep("catalog.node", "".join(args)))[1]

    def key(self, name: str) -> str:
        if not name:
            return ""
        dep = simple_dep("kv.get", name)
        found, value = self.recall(dep)
        if found and value is None and dep not in self.missing:
            # consul-template's key blocks until the key exists: hold the render back.
            self.missing.append(dep)
        return text(value)

    def key_or_default(self, name: str, default: str) -> str:
        if not name:
            return default
        found, value = self.recall(simple_dep("kv.get", name))
        return text(value) if found and value else default

    def key_exists(self, name: str) -> bool:
        if not name:
            return False
        found, value = self.recall(simple_dep("kv.get", name))
        return found and value is not None

    def ls(self, prefix: str) -> list[KeyPair]:
        found, pairs = self.recall(simple_dep("kv.list", prefix))
        return [p for p in pairs if p.Key and "/" not in p.Key] if found else []

    def tree(self, prefix: str) -> list[KeyPair]:
        found, pairs = self.recall(simple_dep("kv.list", prefix))
        return [p for p in pairs if not p.Key.endswith("/") and p.Key] if found else []

    def timestamp(self, *layout: str) -> str:
        if len(layout) > 1:
            raise DataError(f"timestamp: wrong number of arguments, expected 0 or 1, "
                            f"but got {len(layout)}")
        seconds = self.now()
        if layout and layout[0] == "unix":
            return str(int(seconds))
        return go_time_format(layout[0] if layout else "2006-01-02T15:04:05Z07:00", seconds)
