"""Raft snapshots on disk, in `data_dir/raft/snapshots/` as `<term>-<index>-<random>.snap`.

A snapshot file is a 72-byte header and the body:

    magic (8) | format version u16 | flags u16 (0) | index u64 | term u64 | body size u64 |
    sha256 of the body (32) | crc32 of the preceding header bytes u32

The body is written under a temporary name, chunk by chunk as the caller produces it (a
state of 10,000 services never has to exist as one string), a few chunks per reactor turn so
the reactor keeps serving; then the header is filled in, and in the thread pool the file is
fsynced, renamed to its final name and the directory fsynced. A crash at any point leaves
either no new snapshot or a whole one. The newest `retain` snapshots are kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator

import txaio
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from agent.raft.disk import O_CLOEXEC, Fsync, default_fsync, fsync_dir

txaio.use_twisted()

MAGIC = b"\x89WPSNAP\n"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sHHQQQ32s")
HEADER_SIZE = _HEADER.size + 4
_NAME_RE = re.compile(r"(\d+)-(\d+)-([0-9a-f]+)\.snap")
_READ_CHUNK = 1024 * 1024


class SnapshotError(Exception):
    """Base of the snapshot store's errors."""


class SnapshotCorrupt(SnapshotError):
    """A snapshot file that fails its checks; names the file and what is wrong."""


class SnapshotFormatError(SnapshotError):
    """A snapshot written by a newer Waypost. Not skipped: the log was compacted through it,
    so falling back to an older one would silently lose what it holds."""


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """A verified snapshot: the last log entry it covers (index, term), the body's size and
    sha256, and its file."""

    index: int
    term: int
    size: int
    sha256: str
    path: str

    @property
    def id(self) -> str:
        return os.path.basename(self.path)[:-len(".snap")]


def _encode_header(index: int, term: int, size: int, digest: bytes) -> bytes:
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, index, term, size, digest)
    return head + struct.pack("<I", zlib.crc32(head))


class SnapshotWriter:
    """One snapshot being written: `write` chunks (on the reactor: each goes to the page
    cache), then `commit` (the fsync and rename run in the pool) or `abort`."""

    def __init__(self, store: SnapshotStore, index: int, term: int, tmp: str, final: str,
                 fd: int) -> None:
        self.index, self.term = index, term
        self._store, self._tmp, self._final, self._fd = store, tmp, final, fd
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    def write(self, chunk: bytes) -> None:
        if self._done:
            raise SnapshotError("this snapshot was already committed or aborted")
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view):]
        self._hash.update(chunk)
        self._size += len(chunk)

    def commit(self) -> Deferred:
        """Make the snapshot durable under its final name; fires with its `SnapshotMeta`."""
        if self._done:
            return fail(SnapshotError("this snapshot was already committed or aborted"))
        self._done = True
        digest = self._hash.digest()
        meta = SnapshotMeta(self.index, self.term, self._size, digest.hex(), self._final)
        header = _encode_header(self.index, self.term, self._size, digest)
        return self._store._finish(self._fd, self._tmp, header, meta)

    def abort(self) -> None:
        """Drop the partial snapshot (an InstallSnapshot that was cut off)."""
        if self._done:
            return
        self._done = True
        os.close(self._fd)
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


class SnapshotStore:
    """The snapshots of one agent. Get one from `SnapshotStore.prepare`; file work beyond
    writing chunks runs in `pool`."""

    log = txaio.make_logger()

    def __init__(self, reactor, pool, directory: str, *, retain: int = 2,
                 fsync: Fsync = default_fsync, turn_bytes: int = 1024 * 1024,
                 random_hex: Callable[[], str] = lambda: os.urandom(4).hex()) -> None:
        if retain < 1:
            raise ValueError("retain at least one snapshot")
        self._reactor, self._pool, self.directory = reactor, pool, directory
        self._retain, self._fsync = retain, fsync
        self._turn_bytes = turn_bytes
        self._random_hex = random_hex
        self._verified: dict[str, SnapshotMeta] = {}  # path -> meta, checked or written here

    @classmethod
    def prepare(cls, reactor, pool, data_dir: str | os.PathLike, **kwargs) -> Deferred:
        """Create the directory if need be, clear what a crash left half-written, and fire
        with a `SnapshotStore`."""
        directory = os.path.join(os.fspath(data_dir), "raft", "snapshots")
        d = deferToThreadPool(reactor, pool, _prepare, directory)

        def ready(removed: list[str]) -> SnapshotStore:
            for name in removed:
                cls.log.info("snapshots: removed {name}, left unfinished by a crash",
                             name=name)
            return cls(reactor, pool, directory, **kwargs)

        return d.addCallback(ready)

    @classmethod
    def prepare_now(cls, reactor, pool, data_dir: str | os.PathLike, **kwargs
                    ) -> "SnapshotStore":
        """`prepare` on the calling thread (start-up, before the reactor serves)."""
        directory = os.path.join(os.fspath(data_dir), "raft", "snapshots")
        for name in _prepare(directory):
            cls.log.info("snapshots: removed {name}, left unfinished by a crash", name=name)
        return cls(reactor, pool, directory, **kwargs)

    # --- writing ---

    def begin(self, index: int, term: int) -> SnapshotWriter:
        """Start a snapshot covering the log through (index, term)."""
        if not (isinstance(index, int) and isinstance(term, int) and index >= 0 and term >= 0):
            raise ValueError(f"a snapshot needs an index and a term >= 0, not {index!r}, "
                             f"{term!r}")
        name = f"{term}-{index}-{self._random_hex()}.snap"
        final = os.path.join(self.directory, name)
        tmp = final + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)
        try:
            os.write(fd, bytes(HEADER_SIZE))  # filled in at commit, once size and hash are known
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        return SnapshotWriter(self, index, term, tmp, final, fd)

    def save(self, index: int, term: int, chunks: Iterable[bytes]) -> Deferred:
        """Write a snapshot from `chunks`, about `turn_bytes` per reactor turn, and fire with
        its `SnapshotMeta` once durable. An empty chunk ends a turn too (a producer with other
        work to spread out). If `chunks` raises, nothing is left behind."""
        writer = self.begin(index, term)
        source: Iterator[bytes] = iter(chunks)
        done: Deferred = Deferred()

        def turn() -> None:
            written = 0
            try:
                for chunk in source:
                    writer.write(chunk)
                    written += len(chunk)
                    if written >= self._turn_bytes or not chunk:
                        self._reactor.callLater(0, turn)  # let the reactor breathe
                        return
            except BaseException:
                failure = Failure()
                writer.abort()
                done.errback(failure)
                return
            writer.commit().chainDeferred(done)

        turn()
        return done

    def _finish(self, fd: int, tmp: str, header: bytes, meta: SnapshotMeta) -> Deferred:
        d = deferToThreadPool(self._reactor, self._pool, self._commit_in_pool, fd, tmp, header,
                              meta)

        def committed(removed: list[str]) -> SnapshotMeta:
            self._verified[meta.path] = meta
            for path in removed:
                self._verified.pop(path, None)
            return meta

        return d.addCallback(committed)

    def _commit_in_pool(self, fd: int, tmp: str, header: bytes, meta: SnapshotMeta) -> list[str]:
        try:
            try:
                os.pwrite(fd, header, 0)
                self._fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, meta.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(self.directory, self._fsync)
        removed = [path for path in _by_age(self.directory)[self._retain:] if path != meta.path]
        for path in removed:
            os.unlink(path)
        if removed:
            fsync_dir(self.directory, self._fsync)
        return removed

    # --- reading ---

    def latest(self) -> Deferred:
        """Fire with the newest snapshot whose checksum verifies (None if there is none).
        A damaged one is logged and skipped; one of a newer format fails the Deferred with
        `SnapshotFormatError`."""
        known = dict(self._verified)
        d = deferToThreadPool(self._reactor, self._pool, _newest_valid, self.directory, known)

        def found(result: tuple[SnapshotMeta | None, list[str]]) -> SnapshotMeta | None:
            meta, damaged = result
            for problem in damaged:
                self.log.warn("snapshots: skipping a damaged snapshot: {problem}",
                              problem=problem)
            if meta is not None:
                self._verified[meta.path] = meta
            return meta

        return d.addCallback(found)

    def latest_now(self) -> SnapshotMeta | None:
        """`latest` on the calling thread (start-up, before the reactor serves)."""
        meta, damaged = _newest_valid(self.directory, dict(self._verified))
        for problem in damaged:
            self.log.warn("snapshots: skipping a damaged snapshot: {problem}", problem=problem)
        if meta is not None:
            self._verified[meta.path] = meta
        return meta

    def open(self, meta: SnapshotMeta) -> BinaryIO:
        """The body of a snapshot, as a file positioned at its start (`meta.size` bytes).
        Reading it blocks: read a large one in a thread pool."""
        f = open(meta.path, "rb")
        f.seek(HEADER_SIZE)
        return f

    def names(self) -> list[str]:
        """The snapshot files, newest first."""
        return [os.path.basename(p) for p in _by_age(self.directory)]


def _prepare(directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    removed = []
    for name in os.listdir(directory):
        if name.endswith(".snap.tmp"):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def _by_age(directory: str) -> list[str]:
    """Snapshot paths, newest (highest index, then term) first."""
    found = []
    for name in os.listdir(directory):
        match = _NAME_RE.fullmatch(name)
        if match:
            found.append((int(match.group(2)), int(match.group(1)), name))
    return [os.path.join(directory, name) for _, _, name in sorted(found, reverse=True)]


def _newest_valid(directory: str, known: dict[str, SnapshotMeta]
                  ) -> tuple[SnapshotMeta | None, list[str]]:
    damaged = []
    for path in _by_age(directory):
        if path in known:
            return known[path], damaged
        try:
            return verify(path), damaged
        except SnapshotCorrupt as exc:
            damaged.append(str(exc))
    return None, damaged


def verify(path: str) -> SnapshotMeta:
    """Check the snapshot at `path` end to end; `SnapshotCorrupt` or `SnapshotFormatError`
    says what is wrong."""
    term, index, _ = _NAME_RE.fullmatch(os.path.basename(path)).groups()
    with open(path, "rb") as f:
        raw = f.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            raise SnapshotCorrupt(f"{path}: {len(raw)} bytes, shorter than a snapshot header")
        magic, version, _flags, h_index, h_term, size, digest = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise SnapshotCorrupt(f"{path}: not a Waypost snapshot (unknown magic {magic!r})")
        if version > FORMAT_VERSION:
            raise SnapshotFormatError(f"{path} was written by a newer Waypost (format "
                                      f"{version}); this one reads up to {FORMAT_VERSION}")
        if struct.unpack_from("<I", raw, _HEADER.size)[0] != zlib.crc32(raw[:_HEADER.size]):
            raise SnapshotCorrupt(f"{path}: header checksum mismatch")
        if (h_index, h_term) != (int(index), int(term)):
            raise SnapshotCorrupt(f"{path}: the header says index {h_index} term {h_term}")
        sha = hashlib.sha256()
        read = 0
        while chunk := f.read(_READ_CHUNK):
            sha.update(chunk)
            read += len(chunk)
    if read != size:
        raise SnapshotCorrupt(f"{path}: the body is {read} bytes, the header says {size}")
    if sha.digest() != digest:
        raise SnapshotCorrupt(f"{path}: the body's sha256 does not match the header")
    return SnapshotMeta(h_index, h_term, size, digest.hex(), path)
