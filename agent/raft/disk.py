"""The write-ahead log's file work, all of it run in a thread pool, never on the reactor:
executing one group commit's operations, and recovering the log directory at open.

The reactor side (`agent.raft.wal`) decides where every record goes and queues operations;
`Disk.run` carries out one batch of them, in order, and ends with one fsync per touched file
(and per directory whose entries changed). `recover` scans the segments, cuts a torn tail
and takes the directory lock.
"""

from __future__ import annotations

import fcntl
import os
import re
from array import array
from dataclasses import dataclass
from typing import Callable

from agent.raft.records import (
    HardState,
    WALCorrupt,
    WALFormatError,
    WALLocked,
    decode_hard_state,
    encode_header,
    scan_segment,
)

Fsync = Callable[[int], None]
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_SEGMENT_RE = re.compile(r"(\d{20})\.wal")


def default_fsync(fd: int) -> None:
    """fdatasync where there is one: it flushes the data and the file size, all a log needs,
    without the inode's timestamps."""
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


class Segment:
    """One segment file: where each of its entries starts, their terms, and the end of its
    data (the size the file will have once queued writes are done). The reactor owns every
    field but `fd`, which the pool thread creating or removing the file sets."""

    __slots__ = ("first_index", "path", "fd", "offsets", "terms", "size")

    def __init__(self, first_index: int, path: str, fd: int | None, size: int,
                 offsets: array | None = None, terms: array | None = None) -> None:
        self.first_index, self.path, self.fd, self.size = first_index, path, fd, size
        self.offsets = offsets if offsets is not None else array("Q")
        self.terms = terms if terms is not None else array("Q")

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.offsets) - 1

    def record_span(self, j: int) -> tuple[int, int]:
        """Start and end offsets of the j-th record."""
        stop = self.offsets[j + 1] if j + 1 < len(self.offsets) else self.size
        return self.offsets[j], stop


class Disk:
    """Runs batches of operations (lists: ["write", seg, offset, bytes], ["create", seg],
    ["truncate", seg, offset], ["remove", seg], ["barrier"], ["hard_state", bytes],
    ["close", segments, lock_fd]), one batch at a time."""

    def __init__(self, raft_dir: str, fsync: Fsync) -> None:
        self.raft_dir, self.wal_dir = raft_dir, os.path.join(raft_dir, "wal")
        self.fsync = fsync

    def run(self, ops: list[list]) -> None:
        touched: dict[int, Segment] = {}
        dirs: set[str] = set()
        for op in ops:
            kind = op[0]
            if kind == "write":
                _, seg, offset, data = op
                _pwrite_all(seg.fd, data, offset)
                touched[id(seg)] = seg
            elif kind == "create":
                seg = op[1]
                seg.fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)
                _pwrite_all(seg.fd, encode_header(seg.first_index), 0)
                touched[id(seg)] = seg
                dirs.add(self.wal_dir)
            elif kind == "barrier":
                # Everything before is durable before anything after is written: a segment is
                # whole before the next one exists, and a truncation is on disk before new
                # records reuse its offsets (so no stale record passes for a new one later).
                self._sync(touched, dirs)
            elif kind == "truncate":
                _, seg, offset = op
                os.ftruncate(seg.fd, offset)
                touched[id(seg)] = seg
            elif kind == "remove":
                seg = op[1]
                touched.pop(id(seg), None)
                if seg.fd is not None:
                    os.close(seg.fd)
                    seg.fd = None
                os.unlink(seg.path)
                dirs.add(self.wal_dir)
            elif kind == "hard_state":
                replace_file(os.path.join(self.raft_dir, "hardstate"), op[1], self.fsync)
                dirs.add(self.raft_dir)
            elif kind == "close":
                try:
                    self._sync(touched, dirs)
                finally:  # even if that sync failed: release the files and the lock
                    for seg in op[1]:
                        if seg.fd is not None:
                            os.close(seg.fd)
                            seg.fd = None
                    os.close(op[2])  # the lock file: closing it releases the lock
            else:
                raise ValueError(f"unknown log operation {kind!r}")
        self._sync(touched, dirs)

    def _sync(self, touched: dict[int, Segment], dirs: set[str]) -> None:
        for seg in touched.values():
            self.fsync(seg.fd)
        for path in sorted(dirs):
            fsync_dir(path, self.fsync)
        touched.clear()
        dirs.clear()


def _pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def fsync_dir(path: str, fsync: Fsync) -> None:
    """Make the directory's entries (files created, renamed, removed) durable."""
    fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str, data: bytes, fsync: Fsync) -> None:
    """Write `data` to `path` atomically: a temporary file, fsynced, renamed over it. The
    caller fsyncs the directory."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_CLOEXEC, 0o644)
    try:
        _pwrite_all(fd, data, 0)
        fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --- recovery -------------------------------------------------------------------------------


@dataclass
class Recovered:
    segments: list[Segment]
    hard: HardState
    lock_fd: int
    notes: list[str]  # what recovery repaired, for the caller to log on the reactor thread


def recover(raft_dir: str, fsync: Fsync) -> Recovered:
    """Lock and read back the log under `raft_dir`; raises `WALLocked`, `WALCorrupt` or
    `WALFormatError` and then holds nothing open."""
    wal_dir = os.path.join(raft_dir, "wal")
    os.makedirs(wal_dir, exist_ok=True)
    lock_fd = os.open(os.path.join(wal_dir, "lock"), os.O_RDWR | os.O_CREAT | O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise WALLocked(f"the write-ahead log in {wal_dir} is in use by another process "
                        "(or another open log)") from None
    segments: list[Segment] = []
    try:
        notes: list[str] = []
        _scan_all(wal_dir, segments, notes, fsync)
        return Recovered(segments, _read_hard_state(raft_dir), lock_fd, notes)
    except BaseException:
        for seg in segments:
            os.close(seg.fd)
        os.close(lock_fd)
        raise


def _segment_files(wal_dir: str) -> list[tuple[int, str]]:
    found = []
    for name in os.listdir(wal_dir):
        if not name.endswith(".wal"):
            continue
        match = _SEGMENT_RE.fullmatch(name)
        if match is None:
            raise WALFormatError(f"{os.path.join(wal_dir, name)}: a segment file's name is its "
                                 "first index in 20 digits, then .wal")
        found.append((int(match.group(1)), os.path.join(wal_dir, name)))
    return sorted(found)


def _scan_all(wal_dir: str, segments: list[Segment], notes: list[str], fsync: Fsync) -> None:
    found = _segment_files(wal_dir)
    prev: Segment | None = None
    for k, (first, path) in enumerate(found):
        if prev is not None and first != prev.last_index + 1:
            raise WALCorrupt(path, 0, f"it starts at entry {first} but {prev.path} ends at "
                                      f"entry {prev.last_index}: the log has a gap or overlap")
        with open(path, "rb") as f:
            data = f.read()
        min_term = prev.terms[-1] if prev is not None and prev.terms else 1
        scan = scan_segment(path, data, first, last=k == len(found) - 1, min_term=min_term)
        if scan.torn_header:
            os.unlink(path)
            fsync_dir(wal_dir, fsync)
            notes.append(f"removed {path}: {scan.torn} ({len(data)} bytes; a crash while it "
                         "was being created)")
            continue
        fd = os.open(path, os.O_RDWR | O_CLOEXEC)
        seg = Segment(first, path, fd, scan.end, scan.offsets, scan.terms)
        segments.append(seg)
        if scan.torn:
            os.ftruncate(fd, scan.end)
            fsync(fd)
            notes.append(f"{path}: cut a torn tail at offset {scan.end}, dropping "
                         f"{len(data) - scan.end} bytes ({scan.torn})")
        prev = seg


def _read_hard_state(raft_dir: str) -> HardState:
    path = os.path.join(raft_dir, "hardstate")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return HardState()
    return decode_hard_state(raw, path)
