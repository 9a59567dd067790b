"""`RaftLog` (agent/raft/replicated.py) with `DiskStorage` (agent/raft/storage.py): three to
four servers in one process, each with its own data dir (WAL, snapshots), StateStore and FSM,
talking over `RaftTransport` on real 127.0.0.1 sockets, file work in a real thread pool.

Timing is real, so every wait polls a condition against a deadline; assertions are about
outcomes (who leads, what every store holds, what is on disk), never about durations or which
server wins an election. Helpers: tests/raftlog_util.py.
"""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from agent.errors import NoLeader
from agent.fsm.apply import FSM
from agent.raft.consensus import ChangeKind, Configuration, Options
from agent.raft.records import COMMAND, CONFIGURATION
from agent.raft.recovery import RecoveryError
from agent.raft.replicated import LeadershipLost
from agent.raft.single import SingleServerLog
from agent.raft.snapshots import SnapshotStore
from agent.raft.wal import WriteAheadLog
from agent.rpc.options import WriteResult
from agent.state.store import StateStore
from tests.raftlog_util import (FAST, Cluster, balanced, failure_type, failures, keys_of,
                                no_fsync, outcome, put, sleep, wait_for, write_keys,
                                written_then_stopped)
from tests.reactor_hygiene import clean_reactor  # noqa: F401 - autouse fixture

ABC = ["a", "b", "c"]


@pytest.fixture
def pool():
    p = ThreadPool(minthreads=1, maxthreads=2, name="raftlog-test")
    p.start()
    yield p
    p.stop()


def make_cluster(tmp_path, pool, options: Options = FAST):
    return Cluster(tmp_path, pool, options)


@pytest.fixture
def cluster(tmp_path, pool):
    c = make_cluster(tmp_path, pool)
    yield c
    pytest_twisted.blockon(c.stop_all())


@pytest.fixture
def snapshotting(tmp_path, pool):
    """Snapshots after 8 applied entries, keeping 4 behind each."""
    c = make_cluster(tmp_path, pool, Options(election_timeout=0.3, heartbeat_interval=0.05,
                                             snapshot_threshold=8, trailing_logs=4))
    yield c
    pytest_twisted.blockon(c.stop_all())


@pytest.fixture(autouse=True)
def logged():
    """Every test: RaftLog, its driver and storage log no failure (an error path taken)."""
    with capturedLogs() as events:
        yield events
    assert failures(events) == []


# --- 1. election, the ready signal, replication ---------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_one_leader_applies_everywhere_and_followers_refuse(cluster):
    members = cluster.form(ABC)
    lead = yield cluster.leader()
    followers = [m for m in members if m is not lead]
    assert lead.heard[-1] is True
    assert all(balanced(m.heard) for m in followers), [m.heard for m in followers]
    assert [e for m in members for e in m.listener_errors] == []  # True only after the no-op

    result = yield lead.log.apply(put("k1", b"x"))
    assert isinstance(result, WriteResult) and result.value is True
    assert result.index > lead.log.node.leader.first_index  # after the no-op of the term
    yield wait_for(lambda: all(m.log.applied_index >= result.index for m in members),
                   "every replica applied the write")
    for m in members:
        assert m.keys() == {"k1": b"x"}
        assert m.store.kv.get("k1")[0] == result.index  # ModifyIndex is the log index
    refused = outcome(followers[0].log.apply(put("k2")))
    assert failure_type(refused) is NoLeader
    assert all("k2" not in m.keys() for m in members)


# --- 2. read index and losing leadership --------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_verify_leader_and_a_cut_off_leader_fails_its_pending_write(cluster):
    members = cluster.form(ABC)
    old = yield cluster.leader()
    assert (yield old.log.verify_leader()) is True
    follower = next(m for m in members if m is not old)
    assert failure_type(outcome(follower.log.verify_leader())) is NoLeader

    # Cut the leader off: its write and its read cannot reach a quorum.
    term = old.log.term
    old.transport.cut = True
    pending = outcome(old.log.apply(put("lost")))
    read = outcome(old.log.verify_leader())
    rest = [m for m in members if m is not old]
    new = yield cluster.leader(rest)
    assert new.log.term > term
    assert new.heard[-1] is True and new.listener_errors == []
    yield wait_for(lambda: pending and read, "the cut-off leader's write and read to fail")
    assert failure_type(pending) in (LeadershipLost, NoLeader)
    assert failure_type(read) is NoLeader
    assert not old.log.is_leader and old.heard[-1] is False

    # Back on the network it follows the new leader, and its unacknowledged write is gone.
    old.transport.cut = False
    done = yield new.log.apply(put("after"))
    yield wait_for(lambda: all(m.log.applied_index >= done.index for m in members),
                   "the old leader to catch up")
    for m in members:
        assert m.keys() == {"after": b"v"}
    assert old.log.leader_id == new.sid

    # Stopping the leader: a pending write fails, and another server takes over.
    last = outcome(new.log.apply(put("maybe")))
    yield new.stop()
    assert failure_type(last) in (LeadershipLost, NoLeader)
    third = yield cluster.leader([m for m in members if m is not new])
    assert third.heard[-1] is True


@pytest_twisted.inlineCallbacks
def test_five_servers_lose_two_leaders_and_keep_every_acknowledged_write(cluster):
    members = cluster.form(["a", "b", "c", "d", "e"])
    acknowledged: list[str] = []
    alive = list(members)
    for round_ in range(3):
        lead = yield cluster.leader(alive)
        names = [f"r{round_}-{i}" for i in range(8)]
        yield write_keys(lead, names)
        acknowledged += names
        if round_ < 2:
            yield lead.stop()
            alive.remove(lead)
    last = lead.log.commit_index
    yield wait_for(lambda: all(m.log.applied_index >= last for m in alive), "replication")
    for m in alive:
        assert m.keys() == keys_of(acknowledged)


# --- 3. restart from disk -------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_all_servers_restart_from_their_data_dirs(cluster):
    names = [f"k{i:02d}" for i in range(25)]
    members, last = yield written_then_stopped(cluster, ABC, names)

    for m in members:
        m.open()
        # Nothing applied yet: the log's entries wait until a leader commits them again.
        assert m.keys() == {} and m.log.applied_index == 0
        assert m.log.last_index >= last
        assert m.log.bootstrap({s: "127.0.0.1:1" for s in ABC}) is False
    for m in members:
        m.start()
    cluster.connect()
    lead = yield cluster.leader()
    yield wait_for(lambda: all(m.log.applied_index >= last for m in members),
                   "the recovered log to be committed and applied")
    for m in members:
        assert m.keys() == keys_of(names)
    more = yield lead.log.apply(put("after-restart"))
    assert more.index > last


# --- 4. snapshots, compaction, InstallSnapshot ----------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_snapshots_compact_and_a_lagging_follower_installs_the_leaders(snapshotting):
    cluster = snapshotting
    members = cluster.form(ABC)
    lead = yield cluster.leader()
    first = [f"a{i:02d}" for i in range(30)]
    for name in first:  # one at a time: many applies, many snapshot chances
        yield lead.log.apply(put(name))
    yield wait_for(lambda: all(m.storage.snapshots_saved > 0 and m.wal.first_index > 1
                               for m in members), "snapshots and compaction everywhere")
    for m in members:
        assert [n for n in os.listdir(m.raft_dir / "snapshots") if not n.startswith(".")]
        assert m.log.snapshot_index > 0

    lagging = next(m for m in members if m is not lead)
    behind = lagging.log.last_index
    yield lagging.stop()
    second = [f"b{i:02d}" for i in range(40)]
    for name in second:
        yield lead.log.apply(put(name))
    yield wait_for(lambda: lead.wal.first_index > behind + 1,
                   "the leader to compact past the stopped follower's log")

    lagging.open()
    restores_at_recovery = len(lagging.fsm.restores)
    assert restores_at_recovery == 1  # its own newest snapshot
    lagging.start()
    cluster.connect()
    everything = keys_of(first + second)
    yield wait_for(lambda: lagging.keys() == everything, "the follower to catch up")
    # It could not be sent the entries it missed: it got the leader's snapshot.
    assert len(lagging.fsm.restores) > restores_at_recovery
    assert lagging.log.snapshot_index > behind
    assert lagging.log.node.snapshot is not None
    yield wait_for(lambda: lagging.log.applied_index >= lead.log.commit_index - 1,
                   "the follower to apply through the leader's commit")


# --- 5. restoring a snapshot through the log ----------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_apply_restore_replaces_every_replicas_state(cluster):
    members = cluster.form(ABC)
    lead = yield cluster.leader()
    a = [f"A{i}" for i in range(5)]
    yield write_keys(lead, a)
    state = yield lead.log.capture_state()
    b = [f"B{i}" for i in range(5)]
    written = yield write_keys(lead, b)
    last = max(r.index for r in written)
    yield wait_for(lambda: all(m.log.applied_index >= last for m in members), "B everywhere")
    before = {m.sid: m.store.index for m in members}

    restored = yield lead.log.apply_restore(state)
    assert restored.index > last
    yield wait_for(lambda: all(m.log.applied_index >= restored.index for m in members),
                   "the restore everywhere")
    for m in members:
        assert m.keys() == keys_of(a)
        assert m.store.index >= before[m.sid]
        assert m.store.index == restored.index

    bad = outcome(lead.log.apply_restore(b"not a snapshot"))
    assert isinstance(bad[0], Failure)
    assert lead.log.applied_index == restored.index


# --- 6. membership changes ----------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_add_promote_and_remove_servers(cluster):
    members = cluster.form(ABC)
    lead = yield cluster.leader()
    names = [f"m{i}" for i in range(10)]
    yield write_keys(lead, names)

    newcomer = cluster.member("d").open()
    assert not newcomer.log.bootstrapped
    newcomer.start()
    cluster.connect()
    yield lead.log.change(ChangeKind.ADD_NONVOTER, "d")
    yield wait_for(lambda: newcomer.keys() == keys_of(names), "the non-voter to get the log")
    assert newcomer.log.configuration == Configuration.of(ABC, ("d",))

    yield lead.log.change(ChangeKind.PROMOTE, "d")
    gone = next(m for m in members if m is not lead)
    yield lead.log.change(ChangeKind.REMOVE, gone.sid)
    yield gone.stop()
    remaining = [m for m in [*members, newcomer] if m is not gone]
    want = Configuration.of(sorted({*ABC, "d"} - {gone.sid}))
    yield wait_for(lambda: all(m.log.configuration == want for m in remaining),
                   "every remaining server to have the new configuration")
    # The promoted server counts toward the quorum now: a write commits and reaches it.
    r = yield lead.log.apply(put("with-d"))
    yield wait_for(lambda: newcomer.log.applied_index >= r.index, "the write on d")
    assert "with-d" in newcomer.keys()


# --- 7. leadership transfer -----------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_transfer_leadership_to_a_chosen_server(cluster):
    members = cluster.form(ABC)
    lead = yield cluster.leader()
    target = next(m for m in members if m is not lead)
    assert lead.log.transfer_leadership(target.sid) == target.sid
    yield wait_for(lambda: target.leads, "the target to lead")
    now = yield cluster.leader()
    assert now is target and target.heard[-1] is True and lead.heard[-1] is False
    r = yield target.log.apply(put("moved"))
    assert isinstance(r, WriteResult)
    with pytest.raises(NoLeader):
        lead.log.transfer_leadership(target.sid)


# --- 8. outage recovery with peers.json ---------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_peers_json_brings_back_one_survivor(cluster):
    names = [f"p{i}" for i in range(10)]
    members, last = yield written_then_stopped(cluster, ABC, names)

    survivor = cluster.members["a"]
    peers = survivor.raft_dir / "peers.json"
    for junk, why in ((b"[]", "names no voter"), (b"{not json", "cannot recover"),
                      (b'[{"id": "a"}]', "cannot recover")):
        peers.write_bytes(junk)
        with pytest.raises(RecoveryError, match=why):
            survivor.open(peers_json=str(peers))
        yield survivor.stop()
        assert peers.read_bytes() == junk  # left for the operator to fix
    peers.write_text(json.dumps([{"id": "a", "address": survivor.address,
                                  "non_voter": False}]))
    survivor.open(peers_json=str(peers))
    survivor.start()
    yield wait_for(lambda: survivor.leads, "the survivor to lead alone")
    assert survivor.log.configuration == Configuration.of(["a"])
    yield wait_for(lambda: survivor.keys() == keys_of(names), "the keys on the survivor")
    yield wait_for(lambda: not peers.exists(), "peers.json to be removed")
    r = yield survivor.log.apply(put("alone"))
    assert r.index > last

    # The recovered configuration is on disk: a plain restart keeps it.
    yield survivor.stop()
    survivor.open()
    survivor.start()
    yield wait_for(lambda: survivor.leads, "the survivor to lead again")
    assert survivor.log.configuration == Configuration.of(["a"])
    yield wait_for(lambda: "alone" in survivor.keys(), "everything after the restart")


# --- 9. bootstrap happens once ------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_bootstrap_only_on_an_empty_server(cluster, logged):
    a = cluster.member("a").open()
    assert a.log.bootstrap({"a": a.address}) is True
    assert a.log.bootstrap({"a": a.address, "b": "127.0.0.1:1"}) is False
    assert a.log.configuration == Configuration.of(["a"])
    a.start()  # as ServerCore.start does: at once, not after the bootstrap write
    yield wait_for(lambda: a.leads, "a to lead alone")
    r = yield a.log.apply(put("one"))
    found = failures(logged)
    logged.clear()  # reported here, not again by the fixture
    assert found == []  # the bootstrap write did not fail
    term, last = a.log.term, a.log.last_index
    assert a.log.bootstrap({"a": a.address, "b": "127.0.0.1:1"}) is False
    assert a.log.is_leader
    assert (a.log.term, a.log.last_index) == (term, last)
    yield a.stop()

    a.open()
    on_disk = a.wal.last_index
    assert a.log.bootstrap({"a": a.address, "b": "127.0.0.1:1", "c": "127.0.0.1:2"}) is False
    assert a.wal.last_index == on_disk and a.log.configuration == Configuration.of(["a"])
    a.start()
    yield wait_for(lambda: a.leads, "a to lead again")
    assert a.log.configuration == Configuration.of(["a"]) and a.keys() == {"one": b"v"}
    assert r.index <= a.log.applied_index


@pytest_twisted.inlineCallbacks
def test_bootstrap_of_a_running_empty_server(cluster):
    """-bootstrap-expect: servers start empty and bootstrap once enough have joined."""
    members = [cluster.member(s).open() for s in ABC]
    for m in members:
        m.start()
    cluster.connect()
    assert cluster.leaders() == [] and all(not m.log.bootstrapped for m in members)
    servers = {m.sid: m.address for m in members}
    for m in members:
        assert m.log.bootstrap(servers) is True
    lead = yield cluster.leader()
    r = yield lead.log.apply(put("formed"))
    yield wait_for(lambda: all(m.log.applied_index >= r.index for m in members), "replication")
    assert all(m.log.configuration == Configuration.of(ABC) for m in members)


# --- 10. a log written by the one-member log ------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_one_member_log_is_taken_over(cluster, pool):
    from twisted.internet import reactor
    member = cluster.member("a")
    data_dir = member.data_dir
    data_dir.mkdir(parents=True)
    wal = WriteAheadLog.open_now(reactor, pool, data_dir, fsync=no_fsync)
    snaps = SnapshotStore.prepare_now(reactor, pool, data_dir, fsync=no_fsync)
    store = StateStore()
    single = SingleServerLog(reactor, FSM(store), address="127.0.0.1:1", server_id="a")
    single.recover(wal, snaps)
    single.start()
    names = [f"old{i}" for i in range(6)]
    for name in names:
        yield single.apply(put(name))
    first = wal.entry(1)
    assert first.kind == CONFIGURATION and first.data[:1] == b"{"  # the JSON configuration
    yield single.stop()

    member.open()
    assert member.log.configuration == Configuration.of(["a"])
    member.start()
    yield wait_for(lambda: member.leads, "the converted server to elect itself")
    yield wait_for(lambda: member.keys() == keys_of(names), "the old log's keys")
    r = yield member.log.apply(put("new"))
    assert r.index > len(names) + 1


# --- 11. an entry no server can apply ----------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_an_entry_of_an_unknown_command_type_stops_the_servers_instead_of_diverging(cluster):
    members = cluster.form(ABC)
    lead = yield cluster.leader()
    yield lead.log.apply(put("before"))
    # A command type from a newer Waypost, not flagged ignorable.
    future = json.dumps({"v": 1, "t": 120, "d": {}}).encode()
    lead.log._propose(future, COMMAND).addErrback(lambda f: None)
    # Every server that learns the entry is committed halts: at least a quorum (a follower
    # the halted leader never told may keep the entry uncommitted, and cannot win a vote).
    yield wait_for(lambda: sum(m.log._halted for m in members) >= 2, "a quorum halted")
    yield sleep(1.0)  # several election timeouts: nobody may take over
    assert not any(m.log.is_leader for m in members)
    assert all(m.keys() == {"before": b"v"} for m in members)
    assert failure_type(outcome(lead.log.apply(put("after")))) is NoLeader


@pytest_twisted.inlineCallbacks
def test_a_lone_voter_confirms_a_consistent_read(cluster):
    [alone] = cluster.form(["a"])
    lead = yield cluster.leader()
    assert lead is alone
    yield alone.log.apply(put("k"))
    yield sleep(0.01)  # called from a reactor turn of its own, as an HTTP request is
    assert (yield alone.log.verify_leader()) is True
