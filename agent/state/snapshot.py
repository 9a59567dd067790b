"""Snapshot and restore of the whole state store as one JSON document in a file.

Written to a temporary file, fsynced and renamed, so a crash leaves the old snapshot intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.state import codec
from agent.state.store import StateStore

SNAPSHOT_VERSION = 1


def dump(store: StateStore) -> dict:
    catalog = store.catalog
    return {
        "version": SNAPSHOT_VERSION,
        "index": store.index,
        "table_index": dict(catalog.table_index),
        "service_index": dict(catalog.service_index),
        "kv_index": store.kv.index,
        "nodes": [codec.encode_node(n) for n in catalog.nodes.values()],
        "services": [codec.encode_service(s) for by_id in catalog.services.values() for s in by_id.values()],
        "checks": [codec.encode_check(c) for by_id in catalog.checks.values() for c in by_id.values()],
        "kv": [codec.encode_kv(e) for e in store.kv.entries.values()],
        "tombstones": dict(store.kv.tombstones),
        "sessions": [codec.encode_session(x) for x in store.sessions.sessions.values()],
        "sessions_index": store.sessions.index,
    }


def load(data: dict, store: StateStore | None = None) -> StateStore:
    """Fill `store` (or a new one) from `dump` output, replacing all it held, and wake every
    watcher: after a restore nothing a waiter saw can be assumed unchanged."""
    if data.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported snapshot version {data.get('version')!r}")
    store = store if store is not None else StateStore()
    store.reset_tables()
    catalog = store.catalog
    for raw in data["nodes"]:
        node = codec.decode_node(raw)
        catalog.nodes[node.name] = node
    for raw in data["services"]:
        service = codec.decode_service(raw)
        catalog.services.setdefault(service.node, {})[service.id] = service
    for raw in data["checks"]:
        check = codec.decode_check(raw)
        catalog.checks.setdefault(check.node, {})[check.check_id] = check
    catalog.rebuild_name_index()
    catalog.table_index.update(data["table_index"])
    catalog.service_index.update(data["service_index"])
    for raw in data["kv"]:
        store.kv.restore(codec.decode_kv(raw))
    for key, index in data["tombstones"].items():
        store.kv.tombstones[key] = index
        store.kv.tomb_order.add(key)
    store.kv.index = data["kv_index"]
    # Snapshots written before sessions existed have none.
    for raw in data.get("sessions", ()):
        store.sessions.restore(codec.decode_session(raw))
    store.sessions.index = data.get("sessions_index", 0)
    store.index = data["index"]
    store.wake_all()
    return store


def save_file(store: StateStore, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dump(store), f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_file(path: str | os.PathLike, store: StateStore | None = None) -> StateStore:
    with open(path, encoding="utf-8") as f:
        return load(json.load(f), store)
