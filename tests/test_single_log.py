"""The one-member log (agent/raft/single.py): apply through the FSM, leadership events,
durability before the answer, group commit, snapshots in the background with compaction, and
recovery from disk. A fake clock; the WAL on real files with a pool the test runs by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from agent.errors import InvalidRequest, NoLeader
from agent.fsm.apply import FSM
from agent.fsm.commands import KVOperation, Register
from agent.raft.log import MemoryLog
from agent.raft.records import COMMAND, CONFIGURATION, Entry
from agent.raft.single import RecoveryError, SingleServerLog
from agent.raft.snapshots import SnapshotStore
from agent.raft.wal import WALClosed, WriteAheadLog
from agent.rpc.options import WriteResult
from agent.state import snapshot
from agent.state.store import StateStore
from agent.structs import KVEntry, Node, Service
from tests.inline import InlinePool, ThreadedClock, TurnClock
from tests.test_wal import CountingFsync, ManualPool


def fired(d):
    out = []
    d.addBoth(out.append)
    return out


def value_of(d):
    out = fired(d)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def snapshot_now(log, clock):
    """Take a snapshot, turning the fake reactor until it is saved."""
    d = fired(log.take_snapshot())
    for _ in range(10000):
        if d:
            break
        clock.advance(0)
    return value_of_fired(d)


def value_of_fired(out):
    assert out, "the snapshot never finished"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def put(key: str, value: bytes = b"v") -> KVOperation:
    return KVOperation("set", KVEntry(key, value))


# --- in memory ----------------------------------------------------------------------------------


def test_commands_are_refused_until_it_leads_then_applied_in_order():
    clock = Clock()
    store = StateStore()
    log = SingleServerLog(clock, FSM(store), address="10.0.0.1:8300")
    with pytest.raises(NoLeader):
        value_of(log.apply(put("a")))
    heard = []
    log.add_leadership_listener(heard.append)
    log.start()
    assert heard == [True] and log.is_leader and log.leader_address == "10.0.0.1:8300"
    # A fresh log's first entry is its configuration; the first command lands at index 2.
    assert log._store.entry(1).kind == CONFIGURATION
    assert value_of(log.apply(put("a"))) == WriteResult(2, True)
    assert value_of(log.apply(KVOperation("cas", KVEntry("a", b"x"), 0))) == WriteResult(3, False)
    with pytest.raises(InvalidRequest):
        value_of(log.apply(Register(node=Node("n", "1.2.3.4"),
                                    service=Service(node="other", id="s", name="s"))))
    assert store.index == 4 and log.applied_index == 4
    log.stop()
    assert heard == [True, False] and not log.is_leader
    with pytest.raises(NoLeader):
        value_of(log.verify_leader())


def test_a_command_applied_from_a_listener_or_callback_keeps_the_order():
    clock = Clock()
    store = StateStore()
    log = SingleServerLog(clock, FSM(store))
    log.start()
    order = []

    def chain(result):
        order.append(result.index)
        if result.index < 6:
            log.apply(put(f"k{result.index}")).addCallback(chain)
    log.apply(put("first")).addCallback(chain)
    assert order == [2, 3, 4, 5, 6]
    assert [store.kv.get(f"k{i}")[1].modify_index for i in (2, 3, 4, 5)] == [3, 4, 5, 6]


def test_an_in_memory_log_keeps_only_recent_applied_entries():
    log = SingleServerLog(Clock(), FSM(StateStore()), retain_entries=10)
    log.start()
    for i in range(100):
        log.apply(put(f"k{i}"))
    store = log._store
    assert store.last_index == 101 and store.last_index - store.first_index < 30


# --- on the write-ahead log ---------------------------------------------------------------------


def no_fsync(fd: int) -> None:
    """Tests that do not crash the machine need no real fsync (and run faster without)."""


def open_durable(data_dir: Path, clock, pool, *, fsync=no_fsync, **kwargs):
    wal = WriteAheadLog.open_now(clock, pool, data_dir, segment_bytes=2048, fsync=fsync)
    snaps = SnapshotStore.prepare_now(clock, pool, data_dir, turn_bytes=256)
    store = StateStore()
    log = SingleServerLog(clock, FSM(store), address="a:1", **kwargs)
    log.recover(wal, snaps)
    return log, store


def test_a_write_is_answered_only_once_durable_and_concurrent_ones_share_an_fsync(tmp_path):
    clock, pool = ThreadedClock(), ManualPool(auto=False)
    log, store = open_durable(tmp_path, clock, pool)
    heard = []
    log.add_leadership_listener(heard.append)
    log.start()
    assert log.is_leader and heard == []  # accepting; its first entry is not durable yet
    first = fired(log.apply(put("a")))
    pool.run_all()
    assert heard == [True] and first[0].index == 2 and store.kv.get("a")[1] is not None
    before = pool.submitted
    pool.auto = False
    answers = [fired(log.apply(put(f"k{i}"))) for i in range(10)]
    assert not any(answers) and store.kv.get("k0")[1] is None  # not durable: not applied
    pool.run_all()
    assert [a[0].index for a in answers] == list(range(3, 13))
    assert pool.submitted - before <= 2  # one group commit, plus the one already in flight
    log.stop()
    pool.run_all()


def test_a_failed_fsync_fails_the_waiting_writes_and_ends_leadership(tmp_path):
    clock, pool = ThreadedClock(), InlinePool()
    log, store = open_durable(tmp_path, clock, pool, fsync=CountingFsync(fail_after=3))
    heard = []
    log.add_leadership_listener(heard.append)
    log.start()
    results = [fired(log.apply(put(f"k{i}"))) for i in range(4)]
    failed = [r[0] for r in results if isinstance(r[0], Failure)]
    assert failed and heard[-1] is False and not log.is_leader
    with pytest.raises(NoLeader):
        value_of(log.apply(put("later")))
    assert all(isinstance(r[0], Failure) for r in results[len(results) - len(failed):])
    assert failed[0].check(WALClosed, OSError)
    log.stop()


def test_snapshots_at_the_threshold_compact_the_log_and_a_restart_restores_them(tmp_path):
    clock, pool = ThreadedClock(), InlinePool()
    log, store = open_durable(tmp_path, clock, pool, snapshot_threshold=20)
    log.start()
    for i in range(60):
        log.apply(put(f"key/{i:03d}", b"x" * 40))
        clock.advance(0)  # snapshot chunks go a few per reactor turn
    for _ in range(50):
        clock.advance(0)
    assert log.snapshots_taken >= 2
    wal_dir = tmp_path / "raft" / "wal"
    assert min(int(p.name[:20]) for p in wal_dir.glob("*.wal")) > 1  # compacted
    expected = snapshot.capture(store)
    value_of(log.stop())

    again, restored = open_durable(tmp_path, ThreadedClock(), InlinePool())
    assert again.snapshot_index > 0 and again.applied_index == 61
    assert snapshot.capture(restored) == expected
    assert again.configuration["servers"][0]["address"] == "a:1"
    again.start()
    assert value_of(again.apply(put("next"))).index == 62
    value_of(again.stop())


def test_a_snapshot_is_encoded_across_reactor_turns_from_the_state_at_its_start(tmp_path):
    clock, pool = TurnClock(), InlinePool()
    log, store = open_durable(tmp_path, clock, pool, snapshot_threshold=10**9)
    log.start()
    for i in range(1000):
        log.apply(put(f"k{i:03d}", b"y" * 30))
    d = fired(log.take_snapshot())
    turns = 0
    while not d:
        # Between turns the store keeps serving and changing: the snapshot is of its start.
        log.apply(put(f"late{turns}"))
        clock.turn()
        turns += 1
    assert turns >= 4
    meta = d[0]
    with open(meta.path, "rb") as f:
        f.seek(72)
        image, header = snapshot.read_image(f)
    keys = {e.key for e in image.kv}
    assert "k999" in keys and not any(k.startswith("late") for k in keys)
    assert meta.index == 1001 and header["configuration"]["servers"]
    value_of(log.stop())


def test_recovery_replays_the_log_after_the_newest_snapshot(tmp_path):
    clock, pool = ThreadedClock(), InlinePool()
    log, store = open_durable(tmp_path, clock, pool, snapshot_threshold=10**9)
    log.start()
    for i in range(5):
        log.apply(put(f"a{i}"))
    snapshot_now(log, clock)
    for i in range(5):
        log.apply(put(f"b{i}"))
    expected = snapshot.capture(store)
    value_of(log.stop())
    again, restored = open_durable(tmp_path, ThreadedClock(), InlinePool())
    assert (again.snapshot_index, again.applied_index) == (6, 11)
    assert snapshot.capture(restored) == expected
    value_of(again.stop())


def write_entries(data_dir: Path, entries: list[Entry]) -> None:
    wal = WriteAheadLog.open_now(ThreadedClock(), InlinePool(), data_dir)
    value_of(wal.append(entries))
    value_of(wal.close())


def config_entry() -> Entry:
    return Entry(1, 1, CONFIGURATION, json.dumps({"servers": []}).encode())


def test_an_unknown_command_in_the_log_stops_recovery_with_its_index(tmp_path):
    unknown = json.dumps({"v": 1, "t": 99, "d": {}}).encode()
    write_entries(tmp_path, [config_entry(), Entry(2, 1, COMMAND, unknown)])
    with pytest.raises(RecoveryError, match="entry 2: command type 99 is unknown"):
        open_durable(tmp_path, ThreadedClock(), InlinePool())


def test_an_ignorable_unknown_command_is_skipped_on_recovery(tmp_path):
    skip = json.dumps({"v": 1, "t": 99 | 128, "d": {}}).encode()
    from agent.fsm.table import encode_command
    write_entries(tmp_path, [config_entry(), Entry(2, 1, COMMAND, skip),
                             Entry(3, 1, COMMAND, encode_command(put("after")))])
    log, store = open_durable(tmp_path, ThreadedClock(), InlinePool())
    assert log.applied_index == 3 and store.kv.get("after")[1].modify_index == 3


def test_a_log_that_starts_after_its_snapshot_is_refused(tmp_path):
    clock, pool = ThreadedClock(), InlinePool()
    log, store = open_durable(tmp_path, clock, pool, snapshot_threshold=10**9)
    log.start()
    for i in range(80):
        log.apply(put(f"k{i}", b"z" * 40))
    snapshot_now(log, clock)
    log.apply(put("after"))
    value_of(log.stop())
    for path in (tmp_path / "raft" / "snapshots").glob("*.snap"):
        os.unlink(path)  # the snapshot the log was compacted behind is gone
    with pytest.raises(RecoveryError, match="entries are missing"):
        open_durable(tmp_path, ThreadedClock(), InlinePool())


def test_the_state_file_of_an_older_version_is_the_base_the_log_continues(tmp_path):
    old = StateStore()
    FSM(old).apply(41, put("from-old"))
    legacy = snapshot.legacy_image(json.loads(json.dumps(snapshot.dump(old))))
    clock, pool = ThreadedClock(), InlinePool()
    wal = WriteAheadLog.open_now(clock, pool, tmp_path)
    store = StateStore()
    log = SingleServerLog(clock, FSM(store))
    log.recover(wal, SnapshotStore.prepare_now(clock, pool, tmp_path), legacy=legacy)
    log.start()  # writes the configuration entry at 42
    assert value_of(log.apply(put("new"))).index == 43
    assert store.kv.get("from-old")[1].modify_index == 41
    value_of(log.stop())
    # Until a snapshot of the log holds it, the old file stays the base of every recovery...
    again_clock = ThreadedClock()
    again = SingleServerLog(again_clock, FSM(restored := StateStore()))
    again.recover(WriteAheadLog.open_now(again_clock, pool, tmp_path),
                  SnapshotStore.prepare_now(again_clock, pool, tmp_path), legacy=legacy)
    assert restored.kv.get("new")[1].modify_index == 43 and again.applied_index == 43
    value_of(again.stop())
    # ...and without it the log alone cannot rebuild the state: recovery says so.
    with pytest.raises(RecoveryError, match="starts at entry 42"):
        open_durable(tmp_path, ThreadedClock(), InlinePool())


def test_a_memory_log_recovers_nothing():
    log = SingleServerLog(Clock(), FSM(StateStore()), log_store=MemoryLog())
    log.recover()
    log.start()
    assert value_of(log.apply(put("a"))).index == 2


def test_a_capture_still_in_slices_is_completed_before_the_next_write(tmp_path):
    clock, pool = TurnClock(), InlinePool()
    log, store = open_durable(tmp_path, clock, pool, snapshot_threshold=10**9)
    log.start()
    for i in range(3000):
        log.apply(Register(node=Node(f"n{i:04d}", "10.0.0.1"),
                           service=Service(node=f"n{i:04d}", id="web", name="web", port=1)))
    d = fired(log.take_snapshot())
    assert not log._capture.done  # 3000 groups: more than one slice
    log.apply(Register(node=Node("n2999", "10.0.0.1"),
                       service=Service(node="n2999", id="web", name="web", port=2)))
    while not d:
        clock.turn()
    with open(d[0].path, "rb") as f:
        f.seek(72)
        image, _ = snapshot.read_image(f)
    [last] = [s for s in image.services if s.node == "n2999"]
    assert last.port == 1 and d[0].index == 3001
    value_of(log.stop())
