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


class SnapshotError(ValueError):
    """A snapshot that cannot be restored; the message names the file and what is wrong."""


def load(data: dict, store: StateStore | None = None) -> StateStore:
    """Fill `store` (or a new one) from `dump` output, replacing all it held, and wake every
    watcher: after a restore nothing a waiter saw can be assumed unchanged.

    Everything is decoded before the store is touched, so a damaged snapshot (`SnapshotError`)
    leaves the store as it was.
    """
    if not isinstance(data, dict):
        raise SnapshotError(f"not a snapshot: the document is a JSON {type(data).__name__}, "
                            "not an object")
    version = data.get("version")
    if version != SNAPSHOT_VERSION:
        raise SnapshotError(f"unsupported snapshot version {version!r} (this agent reads "
                            f"version {SNAPSHOT_VERSION})")
    try:
        decoded = _decode(data)
    except KeyError as exc:
        raise SnapshotError(f"unexpected content: a required field {exc} is missing") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"unexpected content: {exc}") from None
    store = store if store is not None else StateStore()
    store.reset_tables()
    catalog = store.catalog
    for node in decoded["nodes"]:
        catalog.nodes[node.name] = node
    for service in decoded["services"]:
        catalog.services.setdefault(service.node, {})[service.id] = service
    for check in decoded["checks"]:
        catalog.checks.setdefault(check.node, {})[check.check_id] = check
    catalog.rebuild_name_index()
    catalog.table_index.update(decoded["table_index"])
    catalog.service_index.update(decoded["service_index"])
    for entry in decoded["kv"]:
        store.kv.restore(entry)
    for key, index in decoded["tombstones"].items():
        store.kv.tombstones[key] = index
        store.kv.tomb_order.add(key)
    store.kv.index = decoded["kv_index"]
    for session in decoded["sessions"]:
        store.sessions.restore(session)
    store.sessions.index = decoded["sessions_index"]
    store.index = decoded["index"]
    store.wake_all()
    return store


def _indexes(raw, what: str) -> dict[str, int]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and _is_index(v)
                                            for k, v in raw.items()):
        raise ValueError(f"{what} is not a map of names to indexes")
    return dict(raw)


def _index(raw, what: str) -> int:
    if not _is_index(raw):
        raise ValueError(f"{what} is not an index")
    return raw


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rows(data: dict, key: str, decode) -> list:
    raw = data[key]
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ValueError(f"{key} is not a list of objects")
    return [decode(r) for r in raw]


def _decode(data: dict) -> dict:
    return {
        "index": _index(data["index"], "index"),
        "table_index": _indexes(data["table_index"], "table_index"),
        "service_index": _indexes(data["service_index"], "service_index"),
        "kv_index": _index(data["kv_index"], "kv_index"),
        "nodes": _rows(data, "nodes", codec.decode_node),
        "services": _rows(data, "services", codec.decode_service),
        "checks": _rows(data, "checks", codec.decode_check),
        "kv": _rows(data, "kv", codec.decode_kv),
        "tombstones": _indexes(data["tombstones"], "tombstones"),
        # Snapshots written before sessions existed have none.
        "sessions": _rows({"sessions": data.get("sessions", [])}, "sessions",
                          codec.decode_session),
        "sessions_index": _index(data.get("sessions_index", 0), "sessions_index"),
    }


def save_file(store: StateStore, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dump(store), f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_file(path: str | os.PathLike, store: StateStore | None = None) -> StateStore:
    """Restore from the file at `path`; any problem is a `SnapshotError` naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise SnapshotError(f"state file {path}: cannot be read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise SnapshotError(f"state file {path} is empty (truncated?)")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"state file {path} is not UTF-8 text: {exc.reason} at byte "
                            f"{exc.start}") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"state file {path} is not valid JSON (truncated or damaged?): "
                            f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise SnapshotError(f"state file {path} is not a snapshot: JSON nested too deeply") from None
    try:
        return load(data, store)
    except SnapshotError as exc:
        raise SnapshotError(f"state file {path}: {exc}") from None
