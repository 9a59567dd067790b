"""The write-ahead log (agent/raft/wal.py): real files in tmp_path, the pool replaced by one
the test runs by hand (so "an fsync in flight" is a job not yet run), the reactor by one whose
callFromThread runs at once. One test uses the real reactor and a real thread pool.

Crashes are simulated by copying the data directory as it is (what completed batches wrote)
and opening the copy; torn writes by cutting or damaging the copy's bytes.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections import deque
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from agent.raft.records import HEADER_SIZE, MIN_RECORD, decode_hard_state
from agent.raft.wal import (
    Entry,
    EntryNotFound,
    HardState,
    InvalidAppend,
    InvalidHardState,
    LogCompacted,
    MemoryLog,
    WALClosed,
    WALCorrupt,
    WALFormatError,
    WALLocked,
    WriteAheadLog,
    default_fsync,
)

ROOT = Path(__file__).resolve().parent.parent


class ThreadlessReactor:
    """Results come back from the pool on the caller's thread, at once."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class ManualPool:
    """A thread pool whose jobs run when the test says (or at once, with `auto`)."""

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self.jobs: deque = deque()
        self.submitted = 0
        self._running = False

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        self.jobs.append((on_result, f, args, kwargs))
        self.submitted += 1
        if self.auto:
            self.run_all()

    def run_one(self) -> None:
        on_result, f, args, kwargs = self.jobs.popleft()
        try:
            result = f(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)

    def run_all(self) -> None:
        if self._running:  # a job's callback submitted another: the loop below runs it
            return
        self._running = True
        try:
            while self.jobs:
                self.run_one()
        finally:
            self._running = False


class CountingFsync:
    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise OSError(5, "Input/output error")
        default_fsync(fd)


REACTOR = ThreadlessReactor()


def result_of(d):
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def open_wal(path, pool=None, **kwargs) -> WriteAheadLog:
    pool = pool or ManualPool()
    d = WriteAheadLog.open(REACTOR, pool, path, **kwargs)
    pool.run_all()
    return result_of(d)


def close(wal) -> None:
    result_of(wal.close())


def e(index: int, term: int = 1, data: bytes | None = None, kind: int = 0) -> Entry:
    return Entry(index, term, kind, data if data is not None else b"entry %d" % index)


def append_each(wal, entries) -> None:
    """One append, and one group commit, per entry."""
    for entry in entries:
        result_of(wal.append([entry]))


def segment_files(data_dir) -> list[Path]:
    return sorted((Path(data_dir) / "raft" / "wal").glob("*.wal"))


def crash_copy(data_dir, tmp_path, name="copy") -> Path:
    """The data directory as a crash right now would leave it (minus the page cache risk)."""
    dest = tmp_path / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(data_dir, dest)
    return dest


def all_entries(wal) -> list[Entry]:
    return wal.entries(wal.first_index, wal.last_index)


# --- basics -----------------------------------------------------------------------------------


def test_append_read_reopen(tmp_path):
    wal = open_wal(tmp_path)
    assert (wal.first_index, wal.last_index, wal.last_term) == (1, 0, 0)
    entries = [e(1), e(2, kind=1, data=b""), e(3, 2, b"\x00\xff" * 500, kind=2), e(4, 3)]
    assert result_of(wal.append(entries[:2])) == 2
    assert result_of(wal.append(entries[2:])) == 4
    assert all_entries(wal) == entries
    assert (wal.last_index, wal.last_term, wal.term_at(3), wal.term_at(0)) == (4, 3, 2, 0)
    close(wal)

    wal = open_wal(tmp_path)
    assert all_entries(wal) == entries
    assert (wal.first_index, wal.last_index, wal.last_term) == (1, 4, 3)
    assert result_of(wal.append([e(5, 3)])) == 5
    assert wal.entry(5) == e(5, 3)
    close(wal)
    assert [p.name for p in segment_files(tmp_path)] == ["00000000000000000001.wal"]


def test_reads_outside_the_log_and_bad_appends_are_refused(tmp_path):
    wal = open_wal(tmp_path)
    append_each(wal, [e(1), e(2, 2)])
    with pytest.raises(EntryNotFound):
        wal.entry(3)
    with pytest.raises(InvalidAppend, match="does not follow"):
        wal.append([e(4, 2)])
    with pytest.raises(InvalidAppend, match="below"):
        wal.append([e(3, 1)])
    with pytest.raises(InvalidAppend, match="kind"):
        wal.append([e(3, 2, kind=256)])
    with pytest.raises(InvalidAppend, match="bytes"):
        wal.append([Entry(3, 2, 0, "text")])
    with pytest.raises(InvalidAppend, match="nothing"):
        wal.append([])
    with pytest.raises(InvalidAppend, match="above"):
        wal.append([e(3, 2**48)])
    assert wal.last_index == 2  # nothing refused was half-applied
    assert wal.entries(3, 10) == []
    wal.compact_through(1)
    with pytest.raises(LogCompacted):
        wal.entry(1)
    with pytest.raises(LogCompacted):
        wal.truncate_after(0)
    close(wal)


def test_entries_respect_max_bytes_but_always_return_one(tmp_path):
    wal = open_wal(tmp_path, segment_bytes=200)
    append_each(wal, [e(i, data=bytes(40)) for i in range(1, 11)])
    assert len(segment_files(tmp_path)) > 2
    assert [x.index for x in wal.entries(2, 10, max_bytes=100)] == [2, 3]
    assert [x.index for x in wal.entries(2, 10, max_bytes=10)] == [2]
    assert [x.index for x in wal.entries(1, 99)] == list(range(1, 11))
    close(wal)


def test_entries_are_visible_before_they_are_durable(tmp_path):
    pool = ManualPool()
    wal = open_wal(tmp_path, pool)
    pool.auto = False
    d = wal.append([e(1), e(2)])
    fired = []
    d.addCallback(fired.append)
    assert wal.entry(2) == e(2) and wal.last_index == 2 and fired == []
    assert segment_files(tmp_path) == []  # not even written yet: the job has not run
    pool.run_all()
    assert fired == [2]
    assert wal.entries(1, 2) == [e(1), e(2)]  # now read back from the file
    pool.auto = True
    close(wal)


def test_an_empty_log_takes_its_first_entry_at_any_index(tmp_path):
    """After a snapshot install the log restarts just past the snapshot."""
    wal = open_wal(tmp_path)
    with pytest.raises(InvalidAppend, match="from 1"):
        wal.append([Entry(0, 1, 0, b"")])
    append_each(wal, [e(1), e(2)])
    wal.compact_through(50)
    assert (wal.first_index, wal.last_index, wal.last_term) == (51, 50, 0)
    result_of(wal.append([e(51, 4)]))
    result_of(wal.append([e(52, 4)]))
    close(wal)
    wal = open_wal(tmp_path)
    assert (wal.first_index, all_entries(wal)) == (51, [e(51, 4), e(52, 4)])
    close(wal)


def test_an_emptied_log_restarting_elsewhere_drops_the_compacted_files(tmp_path):
    wal = open_wal(tmp_path)
    append_each(wal, [e(i) for i in range(1, 9)])
    wal.compact_through(5)  # entries 1..5 stay in the file: it also holds 6..8
    wal.truncate_after(5)  # now the log is empty, but the file still holds 1..5
    assert (wal.first_index, wal.last_index) == (6, 5)
    result_of(wal.append([e(20, 3)]))
    assert all_entries(wal) == [e(20, 3)]
    assert [p.name for p in segment_files(tmp_path)] == ["00000000000000000020.wal"]
    close(wal)
    wal = open_wal(tmp_path)
    assert all_entries(wal) == [e(20, 3)] and wal.first_index == 20
    close(wal)


def test_an_entry_bigger_than_a_segment_gets_a_segment_of_its_own(tmp_path):
    wal = open_wal(tmp_path, segment_bytes=100)
    big = [e(1, data=bytes(300)), e(2, data=bytes(300)), e(3)]
    append_each(wal, big)
    assert [int(p.stem) for p in segment_files(tmp_path)] == [1, 2, 3]
    close(wal)
    wal = open_wal(tmp_path, segment_bytes=100)
    assert all_entries(wal) == big
    close(wal)


def test_a_second_open_of_the_same_log_is_refused(tmp_path):
    wal = open_wal(tmp_path)
    with pytest.raises(WALLocked, match="in use"):
        open_wal(tmp_path)
    close(wal)
    close(open_wal(tmp_path))  # the lock went with the close


# --- group commit -----------------------------------------------------------------------------


def test_appends_during_an_fsync_share_the_next_one(tmp_path):
    fsync = CountingFsync()
    pool = ManualPool()
    wal = open_wal(tmp_path, pool, fsync=fsync)
    result_of(wal.append([e(1)]))  # creates the segment
    pool.auto = False
    first = wal.append([e(2)])  # its batch is now "in the pool", fsync pending
    acks = []
    for i in range(3, 53):
        wal.append([e(i)]).addCallback(acks.append)
    assert len(pool.jobs) == 1  # at most one batch in flight
    before, submitted = fsync.calls, pool.submitted
    pool.run_one()  # the blocked fsync completes
    assert result_of(first) == 2 and acks == []
    assert fsync.calls == before + 1
    assert len(pool.jobs) == 1  # the fifty queued appends went to the pool as one batch
    pool.run_one()
    assert fsync.calls == before + 2  # exactly one more fsync covered all fifty
    assert acks == list(range(3, 53))
    assert pool.submitted == submitted + 1
    pool.auto = True
    close(wal)
    wal = open_wal(tmp_path)
    assert wal.last_index == 52
    close(wal)


def test_what_the_waiters_append_on_their_acks_goes_out_as_one_batch(tmp_path):
    pool = ManualPool()
    wal = open_wal(tmp_path, pool)
    pool.auto = False
    follow_ups = []

    def again(_):
        index = wal.last_index + 1
        follow_ups.append(index)
        wal.append([e(index)])

    for i in range(1, 11):
        wal.append([e(i)]).addCallback(again)  # 1 goes to the pool, 2..10 queue behind it
    pool.run_one()
    assert follow_ups == [11] and len(pool.jobs) == 1  # 2..10 and 11 together
    pool.run_one()
    assert follow_ups == list(range(11, 21)) and len(pool.jobs) == 1  # 12..20 together
    pool.run_all()
    assert wal.last_index == 20
    assert wal.batches == 3  # [1], [2..11], [12..20]
    pool.auto = True
    close(wal)


@pytest_twisted.inlineCallbacks
def test_with_the_real_reactor_and_a_real_thread_pool(tmp_path):
    from twisted.internet import reactor

    pool = ThreadPool(minthreads=1, maxthreads=2, name="wal-test")
    pool.start()
    try:
        wal = yield WriteAheadLog.open(reactor, pool, tmp_path)
        acks = yield _many(wal)
        assert acks == list(range(1, 101))
        assert wal.batches < 100  # concurrent appends shared fsyncs
        yield wal.save_hard_state(2, "node-a")
        yield wal.close()
        wal = yield WriteAheadLog.open(reactor, pool, tmp_path)
        assert [x.index for x in all_entries(wal)] == list(range(1, 101))
        assert wal.hard_state() == HardState(2, "node-a")
        yield wal.close()
    finally:
        pool.stop()


def _many(wal):
    from twisted.internet.defer import gatherResults
    return gatherResults([wal.append([e(i)]) for i in range(1, 101)])


# --- torn tails and damage --------------------------------------------------------------------


def test_a_torn_last_record_is_cut_at_every_offset(tmp_path):
    data_dir = tmp_path / "data"
    wal = open_wal(data_dir)
    entries = [e(1), e(2, 2, b"second"), e(3, 2, b"the last record, torn")]
    append_each(wal, entries)
    close(wal)
    [segment] = segment_files(data_dir)
    size = segment.stat().st_size
    last_start = size - (MIN_RECORD + len(entries[2].data))
    for cut in range(last_start + 1, size):
        copy = crash_copy(data_dir, tmp_path)
        [damaged] = segment_files(copy)
        os.truncate(damaged, cut)
        with capturedLogs() as events:
            wal = open_wal(copy)
        assert all_entries(wal) == entries[:2], cut
        assert damaged.stat().st_size == last_start
        [note] = [ev["note"] for ev in events if "note" in ev]
        assert str(damaged) in note and f"offset {last_start}" in note
        assert f"dropping {cut - last_start} bytes" in note
        result_of(wal.append([e(3, 3, b"new third")]))
        close(wal)
        wal = open_wal(copy)
        assert all_entries(wal) == entries[:2] + [e(3, 3, b"new third")]
        close(wal)


@pytest.mark.parametrize("damage", ["zeros appended", "last record zeroed",
                                    "last record garbled", "half a header"])
def test_trailing_zeros_and_garbage_after_the_last_write_are_cut(tmp_path, damage):
    wal = open_wal(tmp_path)
    entries = [e(1), e(2), e(3, data=b"x" * 100)]
    append_each(wal, entries)
    close(wal)
    [segment] = segment_files(tmp_path)
    raw = bytearray(segment.read_bytes())
    last_start = len(raw) - (MIN_RECORD + 100)
    if damage == "zeros appended":
        raw += bytes(4096)
        expected = entries
    elif damage == "last record zeroed":
        raw[last_start:] = bytes(len(raw) - last_start)
        expected = entries[:2]
    elif damage == "last record garbled":
        raw[last_start + 30] ^= 0x40
        expected = entries[:2]
    else:
        raw += b"\x11\x00"
        expected = entries
    segment.write_bytes(bytes(raw))
    wal = open_wal(tmp_path)
    assert all_entries(wal) == expected
    result_of(wal.append([e(len(expected) + 1, 2)]))
    close(wal)


def test_a_segment_whose_only_record_was_torn_takes_the_next_entry(tmp_path):
    wal = open_wal(tmp_path, segment_bytes=100)
    append_each(wal, [e(1, data=bytes(80)), e(2, data=bytes(80))])
    close(wal)
    last = segment_files(tmp_path)[-1]
    os.truncate(last, last.stat().st_size - 1)
    wal = open_wal(tmp_path, segment_bytes=100)
    assert wal.last_index == 1 and last.stat().st_size == HEADER_SIZE
    result_of(wal.append([e(2, 2, bytes(200))]))  # too big for any segment: still goes here
    close(wal)
    wal = open_wal(tmp_path)
    assert wal.entry(2) == e(2, 2, bytes(200))
    assert [p.name for p in segment_files(tmp_path)][-1] == last.name
    close(wal)


def test_a_flipped_byte_in_a_middle_record_is_refused_naming_file_and_offset(tmp_path):
    data_dir = tmp_path / "data"
    wal = open_wal(data_dir)
    append_each(wal, [e(1), e(2, data=b"middle"), e(3)])  # three writes, three fsyncs
    close(wal)
    [segment] = segment_files(data_dir)
    middle_start = HEADER_SIZE + MIN_RECORD + len(b"entry 1")
    middle_end = middle_start + MIN_RECORD + len(b"middle")
    for offset in range(middle_start, middle_end):
        copy = crash_copy(data_dir, tmp_path)
        [damaged] = segment_files(copy)
        raw = bytearray(damaged.read_bytes())
        raw[offset] ^= 0x01
        damaged.write_bytes(bytes(raw))
        with pytest.raises(WALCorrupt) as info:
            open_wal(copy)
        assert info.value.path == str(damaged) and info.value.offset == middle_start, offset
        assert str(damaged) in str(info.value) and f"offset {middle_start}" in str(info.value)
        close(open_wal(data_dir))  # the failed open released its lock and files


def test_damage_inside_the_newest_write_is_a_torn_write_even_if_later_pages_landed(tmp_path):
    """A crash can persist a later page of the last (unacknowledged) write but not an earlier
    one. Records of that same write after the damage do not make it "middle" damage."""
    wal = open_wal(tmp_path)
    append_each(wal, [e(1), e(2)])
    result_of(wal.append([e(i, data=bytes([i]) * 30) for i in range(3, 9)]))  # one write
    close(wal)
    [segment] = segment_files(tmp_path)
    raw = bytearray(segment.read_bytes())
    third = HEADER_SIZE + 2 * MIN_RECORD + 2 * len(b"entry 1") + MIN_RECORD + 30  # entry 4
    raw[third + MIN_RECORD: third + MIN_RECORD + 30] = bytes(30)
    segment.write_bytes(bytes(raw))
    wal = open_wal(tmp_path)
    assert [x.index for x in all_entries(wal)] == [1, 2, 3]
    close(wal)


def test_damage_in_a_segment_that_is_not_the_newest_is_refused(tmp_path):
    wal = open_wal(tmp_path, segment_bytes=150)
    append_each(wal, [e(i, data=bytes(50)) for i in range(1, 9)])
    close(wal)
    files = segment_files(tmp_path)
    assert len(files) >= 3
    raw = bytearray(files[0].read_bytes())
    del raw[-5:]  # the end of a segment that was whole before the next one existed
    files[0].write_bytes(bytes(raw))
    with pytest.raises(WALCorrupt, match="newest segment") as info:
        open_wal(tmp_path)
    assert info.value.path == str(files[0])


def test_an_intact_record_out_of_order_is_refused(tmp_path):
    """Checksums pass, but the log cannot go back in term (or skip an index)."""
    wal = open_wal(tmp_path)
    append_each(wal, [e(1, 2), e(2, 2)])
    close(wal)
    [segment] = segment_files(tmp_path)
    raw = segment.read_bytes()
    second = HEADER_SIZE + MIN_RECORD + len(b"entry 1")
    body = struct.pack("<QQIB", 2, 1, 0, 0) + b"entry 2"  # entry 2, term 1 < 2
    length = struct.pack("<I", len(body))
    record = length + struct.pack("<I", zlib.crc32(body, zlib.crc32(length))) + body
    segment.write_bytes(raw[:second] + record)
    with pytest.raises(WALCorrupt, match="entry 2 of term 1") as info:
        open_wal(tmp_path)
    assert info.value.offset == second


def test_a_missing_segment_is_a_gap(tmp_path):
    wal = open_wal(tmp_path, segment_bytes=150)
    append_each(wal, [e(i, data=bytes(50)) for i in range(1, 9)])
    close(wal)
    files = segment_files(tmp_path)
    files[1].unlink()
    with pytest.raises(WALCorrupt, match="gap") as info:
        open_wal(tmp_path)
    assert info.value.path == str(files[2])


@pytest.mark.parametrize("content", ["empty", "short", "half zeroed", "zeros"])
def test_a_segment_created_just_before_a_crash_is_removed(tmp_path, content):
    wal = open_wal(tmp_path)
    append_each(wal, [e(1), e(2)])
    close(wal)
    header = segment_files(tmp_path)[0].read_bytes()[:HEADER_SIZE]
    header = header.replace((1).to_bytes(8, "little"), (3).to_bytes(8, "little"))
    raw = {"empty": b"", "short": header[:5], "half zeroed": header[:12] + bytes(12),
           "zeros": bytes(HEADER_SIZE + 100)}[content]
    wal_dir = tmp_path / "raft" / "wal"
    (wal_dir / "00000000000000000003.wal").write_bytes(raw)
    wal = open_wal(tmp_path)
    assert wal.last_index == 2 and len(segment_files(tmp_path)) == 1
    append_each(wal, [e(3)])
    close(wal)


def _rewrite_header(segment: Path, version: int | None = None, magic: bytes | None = None):
    raw = bytearray(segment.read_bytes())
    if magic is not None:
        raw[:8] = magic
    if version is not None:
        struct.pack_into("<H", raw, 8, version)
    struct.pack_into("<I", raw, 20, zlib.crc32(bytes(raw[:20])))
    segment.write_bytes(bytes(raw))


def test_a_segment_from_a_newer_format_is_refused(tmp_path):
    wal = open_wal(tmp_path)
    append_each(wal, [e(1)])
    close(wal)
    [segment] = segment_files(tmp_path)
    _rewrite_header(segment, version=2)
    with pytest.raises(WALFormatError) as info:
        open_wal(tmp_path)
    assert str(segment) in str(info.value)
    assert "written by a newer Waypost (format 2); this one reads up to 1" in str(info.value)


def test_a_file_with_an_unknown_magic_is_refused(tmp_path):
    wal = open_wal(tmp_path)
    append_each(wal, [e(1)])
    close(wal)
    [segment] = segment_files(tmp_path)
    _rewrite_header(segment, magic=b"SQLite f")
    with pytest.raises(WALFormatError, match="unknown magic"):
        open_wal(tmp_path)


# --- ordering on disk -------------------------------------------------------------------------


class DiskWatcher:
    """An fsync that notes, at each call, what file it syncs and the state of the log
    directory: which segments exist and how big they are."""

    def __init__(self, wal_dir: Path) -> None:
        self.wal_dir, self.calls = wal_dir, []

    def __call__(self, fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        sizes = {p.name: p.stat().st_size for p in sorted(self.wal_dir.glob("*.wal"))}
        self.calls.append((os.path.basename(target), sizes))
        default_fsync(fd)


def test_a_full_segment_is_durable_before_the_next_one_exists(tmp_path):
    watch = DiskWatcher(tmp_path / "raft" / "wal")
    wal = open_wal(tmp_path, fsync=watch, segment_bytes=170)
    append_each(wal, [e(1, data=bytes(40))])
    watch.calls.clear()
    # One batch that fills the first segment and starts the next.
    result_of(wal.append([e(2, data=bytes(40)), e(3, data=bytes(40))]))
    first, second = "00000000000000000001.wal", "00000000000000000003.wal"
    assert watch.calls[0] == (first, {first: 24 + 2 * 69})  # synced while still alone
    assert (second, {first: 162, second: 24 + 69}) in watch.calls
    close(wal)


def test_a_truncation_is_durable_before_new_records_reuse_its_space(tmp_path):
    watch = DiskWatcher(tmp_path / "raft" / "wal")
    wal = open_wal(tmp_path, fsync=watch)
    append_each(wal, [e(i, data=bytes(40)) for i in range(1, 6)])
    watch.calls.clear()
    wal.truncate_after(2)
    result_of(wal.append([e(3, 2, bytes(10))]))
    name = "00000000000000000001.wal"
    cut = 24 + 2 * 69
    assert watch.calls[0] == (name, {name: cut})  # the cut, synced before the new record
    assert watch.calls[-1] == (name, {name: cut + MIN_RECORD + 10})
    close(wal)


# --- truncation and compaction ----------------------------------------------------------------


def test_truncate_after_then_append(tmp_path):
    wal = open_wal(tmp_path, segment_bytes=150)
    append_each(wal, [e(i, data=bytes(40)) for i in range(1, 11)])
    before = len(segment_files(tmp_path))
    wal.truncate_after(4)
    assert (wal.last_index, wal.last_term) == (4, 1)
    with pytest.raises(EntryNotFound):
        wal.entry(5)
    result_of(wal.append([e(5, 2, b"new five"), e(6, 2, b"new six")]))
    assert len(segment_files(tmp_path)) < before
    close(wal)
    wal = open_wal(tmp_path)
    assert [(x.index, x.term) for x in all_entries(wal)] == [(1, 1), (2, 1), (3, 1), (4, 1),
                                                           (5, 2), (6, 2)]
    assert wal.entry(6).data == b"new six"
    close(wal)


def test_a_truncation_is_on_disk_before_the_next_append_is_acknowledged(tmp_path):
    pool = ManualPool()
    wal = open_wal(tmp_path, pool)
    append_each(wal, [e(i) for i in range(1, 9)])
    pool.auto = False
    wal.truncate_after(3)
    d = wal.append([e(4, 5, b"replacement")])
    assert wal.entry(4) == e(4, 5, b"replacement")
    on_disk_at_ack = []
    d.addCallback(lambda _: on_disk_at_ack.append(crash_copy(tmp_path, tmp_path.parent,
                                                             tmp_path.name + "-at-ack")))
    pool.run_all()
    [copy] = on_disk_at_ack
    seen = open_wal(copy)
    assert [(x.index, x.term) for x in all_entries(seen)] == [(1, 1), (2, 1), (3, 1), (4, 5)]
    close(seen)
    pool.auto = True
    close(wal)


def test_truncating_entries_not_yet_written(tmp_path):
    pool = ManualPool()
    wal = open_wal(tmp_path, pool)
    append_each(wal, [e(1)])
    pool.auto = False
    first = wal.append([e(2), e(3)])  # in the pool
    second = wal.append([e(4)])  # queued
    wal.truncate_after(2)
    third = wal.append([e(3, 2, b"other three")])
    assert wal.entries(1, 9) == [e(1), e(2), e(3, 2, b"other three")]
    pool.run_one()  # the old 3 is in the file now, its replacement not yet
    assert wal.entries(1, 9) == [e(1), e(2), e(3, 2, b"other three")]
    pool.run_all()
    assert [result_of(d) for d in (first, second, third)] == [3, 4, 3]
    assert wal.entries(1, 9) == [e(1), e(2), e(3, 2, b"other three")]
    pool.auto = True
    close(wal)
    wal = open_wal(tmp_path)
    assert all_entries(wal) == [e(1), e(2), e(3, 2, b"other three")]
    close(wal)


def test_compaction_deletes_only_whole_covered_segments(tmp_path):
    wal = open_wal(tmp_path, segment_bytes=170)  # header 24 + two records of 69
    append_each(wal, [e(i, data=bytes(40)) for i in range(1, 21)])
    firsts = [int(p.stem) for p in segment_files(tmp_path)]
    assert firsts == list(range(1, 21, 2))
    wal.compact_through(10)
    assert wal.first_index == 11
    with pytest.raises(LogCompacted):
        wal.entry(10)
    result_of(wal.append([e(21)]))  # the deletions ride the next batch
    assert [int(p.stem) for p in segment_files(tmp_path)] == [11, 13, 15, 17, 19, 21]
    wal.compact_through(13)  # 13 shares a segment with 14: that file stays
    result_of(wal.append([e(22)]))
    assert [int(p.stem) for p in segment_files(tmp_path)] == [13, 15, 17, 19, 21]
    close(wal)
    wal = open_wal(tmp_path)
    assert wal.first_index == 13  # lazily kept, still intact
    assert [x.index for x in all_entries(wal)] == list(range(13, 23))
    close(wal)


def test_compacting_past_the_end_empties_the_log(tmp_path):
    wal = open_wal(tmp_path, segment_bytes=150)
    append_each(wal, [e(i, data=bytes(40)) for i in range(1, 6)])
    wal.compact_through(5)
    result_of(wal.save_hard_state(1, None))  # any batch carries the deletions
    assert segment_files(tmp_path) == []
    close(wal)
    wal = open_wal(tmp_path)
    assert (wal.first_index, wal.last_index) == (1, 0)
    result_of(wal.append([e(6, 2)]))
    close(wal)


# --- hard state -------------------------------------------------------------------------------


def test_hard_state_round_trip(tmp_path):
    wal = open_wal(tmp_path)
    assert wal.hard_state() == HardState(0, None)
    result_of(wal.save_hard_state(3, "node-b"))
    result_of(wal.save_hard_state(4, None))
    assert wal.hard_state() == HardState(4, None)
    with pytest.raises(InvalidHardState):
        wal.save_hard_state(3, "node-c")
    with pytest.raises(InvalidHardState):
        wal.save_hard_state(5, 7)
    close(wal)
    wal = open_wal(tmp_path)
    assert wal.hard_state() == HardState(4, None)
    close(wal)


def test_hard_state_is_replaced_atomically(tmp_path):
    path = tmp_path / "raft" / "hardstate"
    seen_while_writing = []

    def fsync(fd):
        # While the new state is being synced to its temporary file, the old one is whole.
        if path.exists() and (tmp_path / "raft" / "hardstate.tmp").exists():
            seen_while_writing.append(decode_hard_state(path.read_bytes(), str(path)))
        default_fsync(fd)

    wal = open_wal(tmp_path, fsync=fsync)
    result_of(wal.save_hard_state(1, "a"))
    result_of(wal.save_hard_state(2, "b"))
    assert seen_while_writing == [HardState(1, "a")]
    close(wal)
    # A crash mid-write leaves a stray temporary file: ignored, then overwritten.
    (tmp_path / "raft" / "hardstate.tmp").write_bytes(b"{\"format\": 1, \"te")
    wal = open_wal(tmp_path)
    assert wal.hard_state() == HardState(2, "b")
    close(wal)


def test_a_damaged_or_newer_hard_state_is_refused(tmp_path):
    close(open_wal(tmp_path))
    path = tmp_path / "raft" / "hardstate"
    path.write_bytes(b"garbage")
    with pytest.raises(WALCorrupt, match="hard state"):
        open_wal(tmp_path)
    raw = b'{"format":2,"term":1,"voted_for":null}'
    path.write_bytes(raw + b"\n%08x\n" % zlib.crc32(raw))
    with pytest.raises(WALFormatError, match="newer Waypost"):
        open_wal(tmp_path)


# --- failures ---------------------------------------------------------------------------------


def test_a_failed_fsync_fails_the_waiters_and_the_log_until_reopened(tmp_path):
    fsync = CountingFsync()
    wal = open_wal(tmp_path, fsync=fsync)
    append_each(wal, [e(1)])
    fsync.fail_after = fsync.calls
    with capturedLogs() as events:
        d = wal.append([e(2)])
        with pytest.raises(WALClosed, match="Input/output error"):
            result_of(d)
    assert any("fsync failed" in ev.get("log_format", "") for ev in events)
    with pytest.raises(WALClosed):
        result_of(wal.append([e(3)]))
    close(wal)  # releases the files even so
    wal = open_wal(tmp_path)
    assert wal.last_index in (1, 2)  # entry 2 was written; whether it reached disk is moot
    close(wal)


def test_a_closed_log_refuses_work(tmp_path):
    wal = open_wal(tmp_path)
    append_each(wal, [e(1)])
    close(wal)
    with pytest.raises(WALClosed):
        result_of(wal.append([e(2)]))
    with pytest.raises(WALClosed):
        wal.entry(1)
    close(wal)  # twice is fine


# --- the file log behaves like the model --------------------------------------------------------


def _abandon(wal) -> None:
    """A crash: the process is gone with its queued work; only its descriptors are ours."""
    for seg in wal._segments:
        if seg.fd is not None:
            os.close(seg.fd)
    os.close(wal._lock_fd)


# (count, data size, new term?, jump: how far past the end an empty log restarts)
_append = st.tuples(st.just("append"), st.integers(1, 4), st.integers(0, 60), st.booleans(),
                    st.integers(0, 3))
# Truncation and compaction points are a fraction of the way through the log (past its end
# now and then), so they land inside it as often as not.
_point = st.floats(0, 1.2)
operation = st.one_of(
    _append, _append, _append,
    st.tuples(st.just("truncate"), _point),
    st.tuples(st.just("compact"), _point),
    st.tuples(st.just("vote"), st.booleans()),
    st.tuples(st.just("step")),
    st.tuples(st.just("flush")),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("crash")),
)


def _within(log, fraction: float) -> int:
    """The index `fraction` of the way from just before the log's first entry to its end."""
    before = log.first_index - 1
    return before + round(fraction * (log.last_index - before))


def _copy_model(source: MemoryLog) -> MemoryLog:
    copy = MemoryLog()
    copy.compact_through(source.first_index - 1)
    if source.last_index >= source.first_index:
        copy.append(source.entries(source.first_index, source.last_index))
    if source.hard_state() != HardState():
        copy.save_hard_state(*[getattr(source.hard_state(), f) for f in ("term", "voted_for")])
    return copy


def _same(log, model, exact_first: bool = True) -> None:
    """`log` holds what `model` holds. After a reopen it may hold more at the front
    (compaction deletes whole files only), and an empty model then allows a log of older,
    compacted entries."""
    if exact_first:
        assert (log.first_index, log.last_index) == (model.first_index, model.last_index)
    if model.last_index < model.first_index:
        assert log.last_index < model.first_index
    else:
        assert (log.last_index, log.last_term) == (model.last_index, model.last_term)
        assert log.first_index <= model.first_index
        lo, hi = model.first_index, model.last_index
        assert log.entries(lo, hi) == model.entries(lo, hi)
        assert [log.term_at(i) for i in range(lo, hi + 1)] == \
            [model.term_at(i) for i in range(lo, hi + 1)]
    assert log.hard_state() == model.hard_state()


class _Harness:
    """The log under test on a manual pool, and the model as each of its batches will
    leave the disk: a batch holds everything queued before it went to the pool, so the
    model at that moment is what the disk holds once the batch has run."""

    def __init__(self, base: Path) -> None:
        self.base, self.generation = base, 0
        self.pool = ManualPool(auto=False)
        self.model = MemoryLog()
        self.durable = MemoryLog()  # the model as of the last batch that ran
        self.in_pool: deque = deque()  # the model as each queued batch will leave the disk
        self.data_dir = base / "0"
        self.wal = self.open()

    def open(self) -> WriteAheadLog:
        with capturedLogs() as events:
            wal = open_wal(self.data_dir, self.pool, segment_bytes=160)
        self.repairs = [ev["note"] for ev in events if "note" in ev]
        self.seen = self.pool.submitted
        self.exact_first = False  # until the log's first index is seen to match the model's
        return wal

    def note_dispatch(self) -> None:
        assert self.pool.submitted - self.seen <= 1
        if self.pool.submitted > self.seen:
            self.in_pool.append(_copy_model(self.model))
            self.seen = self.pool.submitted

    def step(self) -> None:
        if self.pool.jobs:
            self.pool.run_one()
            self.durable = self.in_pool.popleft()
            self.note_dispatch()

    def flush(self) -> None:
        while self.pool.jobs:
            self.step()

    def reopen(self) -> None:
        d = self.wal.close()
        self.note_dispatch()
        self.flush()
        result_of(d)
        self.wal = self.open()
        assert self.repairs == []  # a clean close never leaves anything to repair

    def crash(self) -> None:
        self.generation += 1
        copy = self.base / str(self.generation)
        shutil.copytree(self.data_dir, copy)
        _abandon(self.wal)
        self.pool.jobs.clear()
        self.in_pool.clear()
        self.data_dir = copy
        self.wal = self.open()
        self.model = _copy_model(self.durable)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(operation, max_size=50))
def test_the_file_log_always_equals_the_model(tmp_path_factory, ops):
    """Random appends, truncations, compactions and votes against `MemoryLog`; batches run
    one at a time, all at once, at a clean reopen, or are lost in a crash. After every step
    the file log equals the model; after a crash, the model as the batches that ran left it."""
    h = _Harness(tmp_path_factory.mktemp("wal"))
    term = serial = 1
    for op in ops:
        kind, wal, model = op[0], h.wal, h.model
        if kind == "append":
            _, count, size, new_term, jump = op
            term += new_term
            start = max(wal.last_index, model.last_index) + 1
            if wal.last_index < wal.first_index and model.last_index < model.first_index:
                start += jump  # an empty log restarts anywhere (after a snapshot install)
            serial += 1  # no two appends write the same bytes
            batch = [Entry(i, term, i % 3, b"%d/%d:" % (serial, i) + bytes([i % 251]) * size)
                     for i in range(start, start + count)]
            model.append(batch)
            wal.append(batch)
        elif kind == "truncate":
            point = max(_within(model, min(op[1], 1.0)), wal.first_index - 1)
            model.truncate_after(point)
            wal.truncate_after(point)
        elif kind == "compact":
            point = _within(model, op[1])
            model.compact_through(point)
            wal.compact_through(point)
        elif kind == "vote":
            term += 1
            model.save_hard_state(term, "me" if op[1] else None)
            wal.save_hard_state(term, "me" if op[1] else None)
        elif kind == "step":
            h.step()
        elif kind == "flush":
            h.flush()
        elif kind == "reopen":
            h.reopen()
        else:
            h.crash()
        h.note_dispatch()
        h.exact_first = h.exact_first or h.wal.first_index == h.model.first_index
        _same(h.wal, h.model, h.exact_first)
    d = h.wal.close()
    h.note_dispatch()
    h.flush()
    result_of(d)


# --- a real process killed with SIGKILL ---------------------------------------------------------


WRITER = r"""
import sys
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from agent.raft.wal import WriteAheadLog, Entry

pool = ThreadPool(1, 2)
pool.start()

def run(wal):
    state = {"next": wal.last_index + 1}
    def one(_=None):
        i = state["next"]
        state["next"] += 1
        d = wal.append([Entry(i, 1, 0, b"payload %d " % i * 20)])
        d.addCallback(lambda last: (sys.stdout.write("%d\n" % last), sys.stdout.flush()))
        d.addCallback(one)
    for _ in range(8):
        one()

WriteAheadLog.open(reactor, pool, sys.argv[1]).addCallback(run)
reactor.run()
"""


def test_every_acknowledged_entry_survives_sigkill(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    acked = 0
    try:
        for line in proc.stdout:
            acked = max(acked, int(line))
            if acked >= 300:
                break
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert acked >= 300
    wal = open_wal(tmp_path)
    assert wal.last_index >= acked
    assert [x.index for x in all_entries(wal)] == list(range(1, wal.last_index + 1))
    assert wal.entry(acked).data == b"payload %d " % acked * 20
    close(wal)
