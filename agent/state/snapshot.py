"""Snapshots of the whole state store: an immutable image, its encoding in chunks, and back.

`Capture(store)` takes a `StoreImage`: the rows (immutable values) and indexes as they are at
one index, in lists that later writes do not touch, so it can be encoded a chunk at a time
between reactor turns while the store moves on (the capture itself is taken in slices too, and
completed before the store's next write). `encode_chunks(image)` yields the body of a Raft
snapshot as JSON lines: a header object, `[kind, [row, ...]]` lines of a few rows each, and an
end line with the row count. `read_image(file)` decodes such a body and `install(store, image)` replaces the
store's tables with it and wakes every watcher (the FSM's restore).

`read_legacy_file` reads the one-document `data_dir/state/snapshot.json` that Waypost versions
before the write-ahead log kept (format 1); `dump` still writes that form for tests.
Everything is decoded before the store is touched, so a damaged snapshot (`SnapshotError`)
leaves the store as it was.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field, replace
from typing import IO, Any, Iterator

from agent.state import codec
from agent.state.store import StateStore

SNAPSHOT_VERSION = 1  # the legacy one-document state file
BODY_FORMAT = 2  # the JSON-lines body of a Raft snapshot
ROWS_PER_CHUNK = 32  # rows encoded per chunk: a fraction of a millisecond
CAPTURE_GROUPS_PER_STEP = 2000  # per-node groups of rows copied per capture step


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # stateless: safe to share


class SnapshotError(ValueError):
    """A snapshot that cannot be restored; the message names the file and what is wrong."""


@dataclass
class StoreImage:
    """The state at `index`: rows and indexes. Built by `capture` or a decoder; the lists are
    its own (rows are frozen values shared with the store)."""

    index: int = 0
    table_index: dict[str, int] = field(default_factory=dict)
    service_index: dict[str, int] = field(default_factory=dict)
    kv_index: int = 0
    sessions_index: int = 0
    reaped_index: int = 0
    nodes: list = field(default_factory=list)
    services: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    kv: list = field(default_factory=list)
    tombstones: list = field(default_factory=list)  # (key, index)
    sessions: list = field(default_factory=list)
    autopilot: dict | None = None  # an operator's autopilot configuration


class Capture:
    """An image of the store taken in slices, so no reactor turn pays for all of it.

    At creation the flat tables are copied (a C-speed copy each: nodes, KV, tombstones,
    sessions, the indexes) and the per-node groups of services and checks are listed; `step()`
    copies the rows of some more groups into the image. The groups change in place when the
    store is written, so the capture must be `finish()`ed before the next entry is applied
    (the log does that): until then the store is exactly as it was at the image's index."""

    def __init__(self, store: StateStore) -> None:
        catalog = store.catalog
        self.image = StoreImage(
            index=store.index, table_index=dict(catalog.table_index),
            service_index=dict(catalog.service_index), kv_index=store.kv.index,
            sessions_index=store.sessions.index, reaped_index=store.kv.reaped_index,
            nodes=list(catalog.nodes.values()), kv=list(store.kv.entries.values()),
            tombstones=list(store.kv.tombstones.items()),
            sessions=list(store.sessions.sessions.values()), autopilot=store.autopilot)
        # (rows of the image, the groups still to copy into them, how far it got)
        self._todo = [[self.image.services, list(catalog.services.values()), 0],
                      [self.image.checks, list(catalog.checks.values()), 0]]

    @property
    def done(self) -> bool:
        return not self._todo

    def step(self, groups: int = CAPTURE_GROUPS_PER_STEP) -> bool:
        """Copy up to `groups` more per-node groups; True once the image is whole."""
        while self._todo and groups > 0:
            work = self._todo[0]
            rows, pending, at = work
            stop = min(len(pending), at + groups)
            for group in pending[at:stop]:
                rows.extend(group.values())  # into one flat list: no container per node
            groups -= stop - at
            work[2] = stop
            if stop == len(pending):
                self._todo.pop(0)
        return not self._todo

    def finish(self) -> StoreImage:
        while not self.step(1 << 30):
            pass
        return self.image


def capture(store: StateStore) -> StoreImage:
    """The store as it is now, whole."""
    return Capture(store).finish()


def encode_capture(capture: Capture, extra: dict[str, Any] | None = None,
                   rows_per_chunk: int = ROWS_PER_CHUNK) -> Iterator[bytes]:
    """`encode_chunks` of a capture still being taken: its steps come first, an empty chunk
    after each (a writer takes it as the end of a reactor turn)."""
    while not capture.step():
        yield b""
    yield from encode_chunks(capture.image, extra, rows_per_chunk)


def encode_chunks(image: StoreImage, extra: dict[str, Any] | None = None,
                  rows_per_chunk: int = ROWS_PER_CHUNK) -> Iterator[bytes]:
    """The snapshot body of `image`, a few rows per chunk, each chunk one line
    `[kind, [row, ...]]`. Rows come in the store's order: two stores that applied the same
    log give the same bytes. `extra` joins the header (the log's configuration, say)."""
    header = {"format": BODY_FORMAT, "index": image.index, "table_index": image.table_index,
              "service_index": image.service_index, "kv_index": image.kv_index,
              "sessions_index": image.sessions_index, "reaped_index": image.reaped_index,
              **({"autopilot": image.autopilot} if image.autopilot is not None else {}),
              **(extra or {})}
    yield _line(header)
    encode = _ENCODER.encode
    rows = 0
    sources = (("node", image.nodes, codec.encode_node),
               ("service", image.services, codec.encode_service),
               ("check", image.checks, codec.encode_check),
               ("kv", image.kv, codec.encode_kv),
               ("tombstone", image.tombstones, list),
               ("session", image.sessions, codec.encode_session))
    for kind, source, encode_row in sources:
        for start in range(0, len(source), rows_per_chunk):
            batch = source[start:start + rows_per_chunk]
            rows += len(batch)
            # One encoder call per chunk: the per-call cost would otherwise rival the rows'.
            yield (encode([kind, [encode_row(row) for row in batch]]) + "\n").encode()
    yield _line({"end": rows})


def _line(doc: dict) -> bytes:
    return _ENCODER.encode(doc).encode() + b"\n"


def read_image(f: IO[bytes], where: str = "snapshot") -> tuple[StoreImage, dict[str, Any]]:
    """Decode a body written by `encode_chunks`; returns the image and the whole header.
    Raises `SnapshotError` naming `where`."""
    try:
        header = json.loads(f.readline())
        if not isinstance(header, dict):
            raise ValueError("the first line is not a header object")
        version = header.get("format")
        if not isinstance(version, int) or version > BODY_FORMAT:
            raise SnapshotError(f"{where} was written by a newer Waypost (state format "
                                f"{version!r}); this one reads up to {BODY_FORMAT}")
        image = _header_image(header)
        decoders = {"node": (codec.decode_node, image.nodes),
                    "service": (codec.decode_service, image.services),
                    "check": (codec.decode_check, image.checks),
                    "kv": (codec.decode_kv, image.kv),
                    "tombstone": (_tombstone, image.tombstones),
                    "session": (codec.decode_session, image.sessions)}
        rows = 0
        for raw in f:
            doc = json.loads(raw)
            if isinstance(doc, dict):
                if doc.get("end") != rows:
                    raise ValueError(f"the end line counts {doc.get('end')!r} rows, not {rows}")
                return image, header
            kind, batch = doc
            decode, into = decoders[kind]
            into.extend(decode(row) for row in batch)
            rows += len(batch)
        raise ValueError("it ends before its end line (truncated)")
    except SnapshotError:
        raise
    except KeyError as exc:
        raise SnapshotError(f"{where}: unexpected content: {exc} is missing or unknown") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"{where}: unexpected content: {exc}") from None


def _header_image(header: dict) -> StoreImage:
    return StoreImage(index=_index(header["index"], "index"),
                      table_index=_indexes(header["table_index"], "table_index"),
                      service_index=_indexes(header["service_index"], "service_index"),
                      kv_index=_index(header["kv_index"], "kv_index"),
                      sessions_index=_index(header["sessions_index"], "sessions_index"),
                      reaped_index=_index(header.get("reaped_index", 0), "reaped_index"),
                      autopilot=_autopilot(header.get("autopilot")))


def _autopilot(raw: Any) -> dict | None:
    if raw is not None and not isinstance(raw, dict):
        raise ValueError("the autopilot configuration is not an object")
    return raw


def _tombstone(row) -> tuple[str, int]:
    key, index = row
    if not isinstance(key, str):
        raise ValueError("a tombstone's key is not a string")
    return key, _index(index, "a tombstone's index")


def install(store: StateStore, image: StoreImage) -> list[BaseException]:
    """Replace everything `store` holds with `image` and wake every watcher and change
    listener (after a restore nothing a waiter saw can be assumed unchanged). Returns what the
    woken callbacks raised."""
    store.reset_tables()
    catalog = store.catalog
    for node in image.nodes:
        catalog.nodes[node.name] = node
    for service in image.services:
        catalog.services.setdefault(service.node, {})[service.id] = service
    for check in image.checks:
        catalog.checks.setdefault(check.node, {})[check.check_id] = check
    catalog.rebuild_name_index()
    catalog.table_index.update(image.table_index)
    catalog.service_index.update(image.service_index)
    kv = store.kv
    for entry in image.kv:
        kv.restore(entry)
    for key, index in image.tombstones:
        kv.tombstones[key] = index
        kv.tomb_order.add(key)
    kv.index = image.kv_index
    kv.reaped_index = image.reaped_index
    for session in image.sessions:
        store.sessions.restore(session)
    store.sessions.index = image.sessions_index
    store.index = image.index
    store.autopilot = image.autopilot
    store.lock_delays.clear()  # Consul's restore starts without lock-delays too
    return store.wake_all()


# --- the legacy state file (format 1) -----------------------------------------------------------


def dump(store: StateStore) -> dict:
    """The format-1 document Waypost kept in `data_dir/state/snapshot.json` before the
    write-ahead log (tests build such data dirs with it)."""
    image = capture(store)
    return {
        "version": SNAPSHOT_VERSION, "index": image.index, "table_index": image.table_index,
        "service_index": image.service_index, "kv_index": image.kv_index,
        "nodes": [codec.encode_node(n) for n in image.nodes],
        "services": [codec.encode_service(s) for s in image.services],
        "checks": [codec.encode_check(c) for c in image.checks],
        "kv": [codec.encode_kv(e) for e in image.kv],
        "tombstones": dict(image.tombstones),
        "sessions": [codec.encode_session(x) for x in image.sessions],
        "sessions_index": image.sessions_index,
    }


def legacy_image(data: Any) -> StoreImage:
    """The image in a format-1 document; raises `SnapshotError` saying what is wrong."""
    if not isinstance(data, dict):
        raise SnapshotError(f"not a snapshot: the document is a JSON {type(data).__name__}, "
                            "not an object")
    version = data.get("version")
    if version != SNAPSHOT_VERSION:
        raise SnapshotError(f"unsupported snapshot version {version!r} (this agent reads "
                            f"version {SNAPSHOT_VERSION})")
    try:
        return StoreImage(
            index=_index(data["index"], "index"),
            table_index=_indexes(data["table_index"], "table_index"),
            service_index=_indexes(data["service_index"], "service_index"),
            kv_index=_index(data["kv_index"], "kv_index"),
            nodes=_rows(data, "nodes", codec.decode_node),
            services=_rows(data, "services", codec.decode_service),
            checks=_rows(data, "checks", codec.decode_check),
            kv=_rows(data, "kv", codec.decode_kv),
            tombstones=list(_indexes(data["tombstones"], "tombstones").items()),
            # Snapshots written before sessions existed have none.
            sessions=_rows({"sessions": data.get("sessions", [])}, "sessions",
                           codec.decode_session),
            sessions_index=_index(data.get("sessions_index", 0), "sessions_index"))
    except KeyError as exc:
        raise SnapshotError(f"unexpected content: a required field {exc} is missing") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"unexpected content: {exc}") from None


def read_legacy_file(path: str | os.PathLike) -> StoreImage:
    """The image in a format-1 state file; any problem is a `SnapshotError` naming it."""
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
        return legacy_image(data)
    except SnapshotError as exc:
        raise SnapshotError(f"state file {path}: {exc}") from None


# --- validation -----------------------------------------------------------------------------


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


def restore_entry(fsm: Any, entry: Any) -> None:
    """Apply an operator's snapshot restore (a log entry whose data is a snapshot body): the
    state is replaced, and every table moves to the entry's index, so every blocking query
    wakes and no index goes backwards."""
    image, _ = read_image(io.BytesIO(entry.data), f"the snapshot restored at {entry.index}")
    at = entry.index
    image = replace(image, index=at, table_index={k: at for k in image.table_index},
                    kv_index=at, sessions_index=at)
    fsm.restore(image)
