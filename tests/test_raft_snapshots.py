"""The snapshot store (agent/raft/snapshots.py): real files in tmp_path, a fake clock for
the reactor turns, and a pool the test runs by hand (tests/test_wal.py's ManualPool)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.threadpool import ThreadPool

from agent.raft.disk import default_fsync
from agent.raft.snapshots import (
    HEADER_SIZE,
    SnapshotError,
    SnapshotFormatError,
    SnapshotMeta,
    SnapshotStore,
)
from tests.test_wal import ManualPool, result_of


class ClockReactor(Clock):
    """A fake clock whose callFromThread runs at once (the pool is run by the test)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class TurnReactor(ClockReactor):
    """Each callLater is one reactor turn, run by the test with `next_turn`."""

    def __init__(self) -> None:
        super().__init__()
        self.turns: list = []

    def callLater(self, delay, f, *args, **kwargs):
        self.turns.append((f, args, kwargs))

    def next_turn(self) -> None:
        f, args, kwargs = self.turns.pop(0)
        f(*args, **kwargs)


def make_store(tmp_path, clock=None, pool=None, **kwargs) -> SnapshotStore:
    clock = clock or ClockReactor()
    pool = pool or ManualPool()
    return result_of(SnapshotStore.prepare(clock, pool, tmp_path, **kwargs))


def snap_dir(tmp_path) -> Path:
    return Path(tmp_path) / "raft" / "snapshots"


def save(store, index, term, body: bytes, pieces: int = 4) -> SnapshotMeta:
    step = max(1, len(body) // pieces)
    return result_of(store.save(index, term, (body[i:i + step]
                                              for i in range(0, len(body), step))))


def test_save_then_latest_gives_it_back(tmp_path):
    store = make_store(tmp_path)
    assert result_of(store.latest()) is None
    body = b"the whole state " * 1000
    meta = save(store, 10, 2, body)
    assert (meta.index, meta.term, meta.size) == (10, 2, len(body))
    assert meta.sha256 == hashlib.sha256(body).hexdigest()
    assert os.path.basename(meta.path).startswith("2-10-") and meta.path.endswith(".snap")
    assert os.path.getsize(meta.path) == HEADER_SIZE + len(body)
    assert [p.name for p in snap_dir(tmp_path).iterdir()] == [os.path.basename(meta.path)]
    fresh = make_store(tmp_path)  # verifies from the file, not from memory
    assert result_of(fresh.latest()) == meta
    with fresh.open(meta) as f:
        assert f.read() == body


def test_an_empty_body_is_a_snapshot_too(tmp_path):
    store = make_store(tmp_path)
    meta = result_of(store.save(1, 1, []))
    assert result_of(make_store(tmp_path).latest()) == meta and meta.size == 0


def test_a_big_state_is_written_a_slice_per_reactor_turn(tmp_path):
    """10,000 services as 10,000 chunks from a generator: never one big string, and the
    reactor gets control back after every ~64 KiB."""
    reactor = TurnReactor()
    store = make_store(tmp_path, reactor, turn_bytes=64 * 1024)
    produced = []
    expected = hashlib.sha256()

    def services():
        for i in range(10_000):
            chunk = b'{"ID":"web-%05d","Service":"web","Port":%d,"Tags":["a","b"]},' % (i, i)
            chunk = chunk.ljust(200, b" ")
            expected.update(chunk)
            produced.append(i)
            yield chunk

    d = store.save(7, 3, services())
    fired = []
    d.addCallback(fired.append)
    per_turn = [len(produced)]
    while not fired:
        reactor.next_turn()
        per_turn.append(len(produced) - sum(per_turn))
    assert fired and reactor.turns == []
    assert len(per_turn) == -(-2_000_000 // (64 * 1024))  # 31 turns of <= 328 chunks
    assert max(per_turn) == -(-64 * 1024 // 200)
    meta = fired[0]
    assert meta.size == 2_000_000 and meta.sha256 == expected.hexdigest()
    assert result_of(make_store(tmp_path).latest()) == meta


def test_a_damaged_newest_snapshot_falls_back_to_the_older_one(tmp_path):
    store = make_store(tmp_path)
    older = save(store, 5, 1, b"older state" * 100)
    newer = save(store, 9, 2, b"newer state" * 100)
    raw = bytearray(Path(newer.path).read_bytes())
    raw[HEADER_SIZE + 50] ^= 0x20
    Path(newer.path).write_bytes(bytes(raw))
    with capturedLogs() as events:
        found = result_of(make_store(tmp_path).latest())
    assert found == older
    [problem] = [ev["problem"] for ev in events if "problem" in ev]
    assert newer.path in problem and "sha256" in problem


@pytest.mark.parametrize("damage", ["cut short", "header flipped", "renamed index"])
def test_other_damage_is_skipped_too(tmp_path, damage):
    store = make_store(tmp_path)
    older = save(store, 5, 1, b"older" * 100)
    newer = save(store, 9, 2, b"newer" * 100)
    path = Path(newer.path)
    if damage == "cut short":
        os.truncate(path, path.stat().st_size - 1)
    elif damage == "header flipped":
        raw = bytearray(path.read_bytes())
        raw[20] ^= 1
        path.write_bytes(bytes(raw))
    else:
        path.rename(path.with_name(path.name.replace("2-9-", "2-11-")))
    with capturedLogs():
        assert result_of(make_store(tmp_path).latest()) == older


def test_a_snapshot_of_a_newer_format_is_refused(tmp_path):
    store = make_store(tmp_path)
    meta = save(store, 5, 1, b"state")
    raw = bytearray(Path(meta.path).read_bytes())
    raw[8] = 2  # format version 2
    Path(meta.path).write_bytes(bytes(raw))
    with pytest.raises(SnapshotFormatError, match=r"newer Waypost \(format 2\); this one "
                                                  r"reads up to 1"):
        result_of(make_store(tmp_path).latest())


def test_only_the_two_newest_are_kept(tmp_path):
    store = make_store(tmp_path)
    metas = [save(store, index, 1, b"state %d" % index) for index in (3, 6, 9, 12)]
    assert store.names() == [os.path.basename(m.path) for m in (metas[3], metas[2])]
    assert result_of(store.latest()) == metas[3]


def test_an_older_snapshot_written_last_is_not_deleted_under_its_writer(tmp_path):
    store = make_store(tmp_path)
    save(store, 10, 1, b"a")
    save(store, 20, 1, b"b")
    late = save(store, 5, 1, b"c")
    assert os.path.exists(late.path)


def test_a_snapshot_received_in_chunks(tmp_path):
    store = make_store(tmp_path)
    writer = store.begin(20, 3)
    for i in range(50):
        writer.write(b"chunk %d;" % i)
    meta = result_of(writer.commit())
    body = b"".join(b"chunk %d;" % i for i in range(50))
    assert (meta.index, meta.term, meta.size) == (20, 3, len(body))
    assert result_of(make_store(tmp_path).latest()) == meta
    with store.open(meta) as f:
        assert f.read() == body
    with pytest.raises(SnapshotError):
        writer.write(b"more")


def test_an_aborted_transfer_leaves_nothing(tmp_path):
    store = make_store(tmp_path)
    writer = store.begin(20, 3)
    writer.write(b"partial")
    writer.abort()
    writer.abort()
    assert list(snap_dir(tmp_path).iterdir()) == []
    assert result_of(store.latest()) is None


def test_a_failing_producer_leaves_nothing(tmp_path):
    store = make_store(tmp_path)

    def broken():
        yield b"some state"
        raise RuntimeError("the state changed under the iterator")

    with pytest.raises(RuntimeError, match="changed under"):
        result_of(store.save(4, 1, broken()))
    assert list(snap_dir(tmp_path).iterdir()) == []


def test_a_crash_before_the_rename_leaves_no_snapshot_and_is_cleaned_up(tmp_path):
    store = make_store(tmp_path)
    older = save(store, 3, 1, b"older")
    writer = store.begin(8, 2)
    writer.write(b"never committed")  # the process dies here
    leftover = [p.name for p in snap_dir(tmp_path).iterdir() if p.name.endswith(".tmp")]
    assert leftover
    with capturedLogs() as events:
        fresh = make_store(tmp_path)
    assert result_of(fresh.latest()) == older
    assert not any(p.name.endswith(".tmp") for p in snap_dir(tmp_path).iterdir())
    assert [ev["name"] for ev in events if "name" in ev] == leftover
    os.close(writer._fd)


def test_the_body_is_durable_before_the_snapshot_gets_its_name(tmp_path):
    seen = []
    final = []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.endswith(".snap.tmp"):
            seen.append((os.path.getsize(target), any(Path(p).exists() for p in final)))
        default_fsync(fd)

    store = make_store(tmp_path, fsync=fsync)
    writer = store.begin(2, 1)
    final.append(writer._final)
    writer.write(b"x" * 1000)
    result_of(writer.commit())
    assert seen == [(HEADER_SIZE + 1000, False)]


@pytest_twisted.inlineCallbacks
def test_with_the_real_reactor_and_a_real_thread_pool(tmp_path):
    from twisted.internet import reactor

    pool = ThreadPool(minthreads=1, maxthreads=1, name="snapshot-test")
    pool.start()
    try:
        store = yield SnapshotStore.prepare(reactor, pool, tmp_path, turn_bytes=4096)
        meta = yield store.save(100, 4, (b"%05d," % i for i in range(20_000)))
        again = yield (yield SnapshotStore.prepare(reactor, pool, tmp_path)).latest()
        assert again == meta and meta.size == 6 * 20_000
    finally:
        pool.stop()
