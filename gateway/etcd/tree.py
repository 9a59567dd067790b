"""The etcd v2 view of the KV store: keys, directories, nodes and watch events.

Owns: the mapping between etcd keys and KV keys, and reading etcd-shaped nodes out of the KV
rows a request read (`Rows`, filled by :mod:`gateway.etcd.reads`). Pure functions of those
rows; no Twisted, no reads, no writes.

Mapping: the etcd key ``/services/redis/redis@1`` is the KV key ``services/redis/redis@1``.
Directories are implied by prefixes: ``/services`` is a directory while any KV key starts with
``services/``. ``mkdir /services`` writes the KV key ``services/`` with no value (a Consul
"folder"), so an empty directory exists too. Names starting with ``_`` are hidden from listings,
as in etcd.

Watches are answered from the current state, not from an event log: the event for
``waitIndex=N`` is the change with the smallest index >= N that is still visible (a key's
``modifiedIndex``, or the tombstone of a deleted key). Intermediate values a key had between
two of its changes are not replayed, only its latest.
"""

from __future__ import annotations

import posixpath
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from agent.structs import KVEntry

__all__ = ["Rows", "TTLInfo", "Tree", "clean_key", "etcd_key", "kv_key", "parents", "shown"]

# A node's (ttl seconds, RFC 3339 expiration) when it expires, from its session.
TTLInfo = Callable[[KVEntry], "tuple[int, str] | None"]


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def shown(value: bytes) -> str:
    """A stored value as etcd's JSON shows it: Go's encoder writes U+FFFD for each byte that is
    not part of valid UTF-8. Display only: the stored bytes are never changed."""
    text = value.decode("utf-8", "surrogateescape")
    if text.isascii():
        return text
    return _ESCAPED_BYTE.sub("\ufffd", text)


def clean_key(raw: str) -> str:
    """etcd's canonical key: rooted, no duplicate or trailing slashes, no dot segments."""
    return posixpath.normpath("/" + raw).replace("//", "/")


def kv_key(key: str) -> str:
    """``/a/b`` -> ``a/b``; the root is the empty key."""
    return key.lstrip("/")


def etcd_key(kv: str) -> str:
    """``a/b`` or ``a/b/`` -> ``/a/b``."""
    return "/" + kv.rstrip("/")


def parents(kv: str) -> list[str]:
    """The KV keys of the files that would make ``kv`` unreachable: ``a/b/c`` -> a, a/b."""
    parts = kv.split("/")
    return ["/".join(parts[:end]) for end in range(1, len(parts))]


def _hidden(kv: str, parent: str) -> bool:
    return kv[len(parent):].startswith("_")


def _with_prefix(keys: list[str], prefix: str) -> list[str]:
    start = bisect_left(keys, prefix)
    end = start
    while end < len(keys) and keys[end].startswith(prefix):
        end += 1
    return keys[start:end]


class Rows:
    """The KV rows one request read: live entries by key (and in key order), and the
    tombstones of deleted keys (key -> the index it was deleted at)."""

    def __init__(self, entries: Iterable[KVEntry],
                 tombstones: Iterable[tuple[str, int]] = ()) -> None:
        self.entries = {entry.key: entry for entry in entries}
        self.order = sorted(self.entries)
        self.tombstones = dict(tombstones)
        self.tomb_order = sorted(self.tombstones)

    def with_prefix(self, prefix: str) -> list[str]:
        return _with_prefix(self.order, prefix)

    def tombs_with_prefix(self, prefix: str) -> list[str]:
        return _with_prefix(self.tomb_order, prefix)


class Tree:
    """Reads etcd nodes from the `Rows` a request read."""

    def __init__(self, table: Rows, ttl_info: TTLInfo | None = None) -> None:
        self.table = table
        self.ttl_info = ttl_info or (lambda entry: None)

    # --- what is at a key ---

    def file(self, kv: str) -> KVEntry | None:
        """The entry at a key that is a file (a KV key not ending in "/")."""
        if not kv or kv.endswith("/"):
            return None
        return self.table.entries.get(kv)

    def dir_keys(self, kv: str) -> list[str]:
        """Every KV key inside the directory ``kv`` (its marker included)."""
        return self.table.with_prefix(kv + "/" if kv else "")

    def is_dir(self, kv: str) -> bool:
        return not kv or bool(self.dir_keys(kv))

    def file_ancestor(self, kv: str) -> str | None:
        """The first ancestor of ``kv`` that is a file (etcd: "Not a directory"), if any."""
        for parent in parents(kv):
            if parent in self.table.entries:
                return parent
        return None

    # --- nodes ---

    def file_node(self, entry: KVEntry) -> dict[str, Any]:
        node: dict[str, Any] = {"key": etcd_key(entry.key), "value": shown(entry.value or b"")}
        self.add_ttl(node, entry)
        node["modifiedIndex"] = entry.modify_index
        node["createdIndex"] = entry.create_index
        return node

    def dir_node(self, kv: str, recursive: bool = False, children: bool = True) -> dict[str, Any]:
        """The directory ``kv``: its children (all levels if ``recursive``), sorted by key."""
        node: dict[str, Any] = {"dir": True} if not kv else {"key": etcd_key(kv), "dir": True}
        keys = self.dir_keys(kv)
        if children:
            nodes = self._children(kv + "/" if kv else "", keys, recursive)
            if nodes:
                node["nodes"] = nodes
        if kv:
            marker = self.table.entries.get(kv + "/")
            if marker is not None:
                self.add_ttl(node, marker)
                node["modifiedIndex"] = marker.modify_index
                node["createdIndex"] = marker.create_index
            else:
                created = min(self.table.entries[k].create_index for k in keys)
                node["modifiedIndex"] = node["createdIndex"] = created
        return node

    def _children(self, prefix: str, keys: list[str], recursive: bool) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        start = len(prefix)
        seen_dirs: set[str] = set()
        for key in keys:
            if key == prefix or _hidden(key, prefix):
                continue
            cut = key.find("/", start)
            if cut < 0:
                nodes.append(self.file_node(self.table.entries[key]))
                continue
            child = key[:cut]
            if child in seen_dirs:
                continue
            seen_dirs.add(child)
            nodes.append(self.dir_node(child, recursive, children=recursive))
        return nodes

    def node(self, kv: str, recursive: bool = False) -> dict[str, Any] | None:
        """What GET shows for ``kv``: its file, else its directory, else None."""
        entry = self.file(kv)
        if entry is not None:
            return self.file_node(entry)
        if self.is_dir(kv):
            return self.dir_node(kv, recursive)
        return None

    def add_ttl(self, node: dict[str, Any], entry: KVEntry) -> None:
        if entry.session:
            info = self.ttl_info(entry)
            if info is not None:
                node["expiration"], node["ttl"] = info[1], info[0]

    # --- watches ---

    def first_event(self, kv: str, recursive: bool, wait_index: int) -> dict[str, Any] | None:
        """The first visible change at or after ``wait_index`` under the watched key."""
        table = self.table
        best: tuple[int, str, bool] | None = None  # (index, kv key, deleted)

        def consider(key: str, index: int, deleted: bool) -> None:
            nonlocal best
            if index >= wait_index and (best is None or index < best[0]):
                best = (index, key, deleted)

        own = [kv, kv + "/"] if kv else []
        for key in own:
            entry = table.entries.get(key)
            if entry is not None:
                consider(key, entry.modify_index, False)
            if key in table.tombstones:
                consider(key, table.tombstones[key], True)
        if recursive:
            prefix = kv + "/" if kv else ""
            for key in table.with_prefix(prefix):
                consider(key, table.entries[key].modify_index, False)
            for key in table.tombs_with_prefix(prefix):
                consider(key, table.tombstones[key], True)
        if best is None:
            return None
        index, key, deleted = best
        if deleted:
            node: dict[str, Any] = {"key": etcd_key(key), "modifiedIndex": index}
            if key.endswith("/"):
                node["dir"] = True
            return {"action": "delete", "node": node}
        entry = table.entries[key]
        if key.endswith("/"):
            node = {"key": etcd_key(key), "dir": True, "modifiedIndex": entry.modify_index,
                    "createdIndex": entry.create_index}
        else:
            node = self.file_node(entry)
        # The original action (set, create, update, compareAndSwap) is not recorded.
        return {"action": "set", "node": node}
