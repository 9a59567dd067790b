"""agent.raft.consensus: unit tests of `RaftNode` with a fake clock and hand-delivered
messages, the message codec, and seeded simulations (tests/raft_sim.py) checking election
safety, log matching, leader completeness, state machine safety, that no acknowledged write
is lost, and that client histories are linearizable.

A failing simulation names its seed; `Sim(seed, ...).run()` replays it exactly.
"""

from __future__ import annotations

import random

import pytest

from agent.raft.consensus import (ChangeKind, Configuration, InvalidChange, NotLeader, Options,
                                  RaftNode, Role, Snapshot)
from agent.raft.consensus.messages import (AppendEntries, AppendResponse, InstallSnapshot,
                                           MessageError, SnapshotResponse, TimeoutNow,
                                           VoteRequest, VoteResponse, decode, encode)
from agent.raft.records import COMMAND, CONFIGURATION, NOOP, Entry, HardState
from tests.raft_sim import Sim

OPTS = Options(election_timeout=10, heartbeat_interval=2, max_batch=8, max_inflight=4,
               snapshot_threshold=1000, trailing_logs=0)


def boot_entry(ids):
    return Entry(1, 1, CONFIGURATION, Configuration.of(ids).encode())


class Cluster:
    """Nodes with a fake clock. Messages queue until `deliver`; disks acknowledge at once
    unless a server's disk is held."""

    def __init__(self, n=3, options=OPTS, logs=None, terms=None):
        self.ids = [f"s{i}" for i in range(n)]
        self.now = 0.0
        self.options = options
        self.nodes = {}
        self.applied = {sid: [] for sid in self.ids}
        self.reads = {sid: [] for sid in self.ids}
        self.held_disk: dict[str, list] = {}
        self.queue: list = []
        self.cut: set = set()
        self.delivered: list = []
        for i, sid in enumerate(self.ids):
            entries = logs[sid] if logs else [boot_entry(self.ids)]
            term = terms[sid] if terms else 1
            self.nodes[sid] = RaftNode(sid, options, random.Random(i), self.now,
                                       hard_state=HardState(term, None), entries=entries)

    def add(self, sid):
        self.ids.append(sid)
        self.applied[sid], self.reads[sid] = [], []
        self.nodes[sid] = RaftNode(sid, self.options, random.Random(99), self.now)

    def drain(self, sid):
        node = self.nodes[sid]
        while True:
            ready = node.ready()
            if not ready:
                return
            for p in ready.persist:
                if sid in self.held_disk:
                    self.held_disk[sid].append(p.seq)
                else:
                    node.persisted(self.now, p.seq)
            for s in ready.messages:
                if frozenset((sid, s.to)) not in self.cut:
                    self.queue.append((s.to, decode(encode(s.message))))  # via the codec
            self.applied[sid].extend(ready.committed)
            self.reads[sid].extend(ready.reads)
            if ready.snapshot_wanted is not None:
                node.snapshot_taken(self.now, ready.snapshot_wanted, b"state")

    def release_disk(self, sid):
        for seq in self.held_disk.pop(sid, []):
            self.nodes[sid].persisted(self.now, seq)
        self.drain(sid)

    def deliver(self, keep=lambda to, msg: True, rounds=100):
        for _ in range(rounds):
            for sid in self.ids:
                self.drain(sid)
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for to, msg in batch:
                if to in self.nodes and keep(to, msg):
                    self.delivered.append(msg)
                    self.nodes[to].receive(self.now, msg)

    def advance(self, dt, deliver=True):
        """Move the clock in steps of one heartbeat, ticking every node."""
        end = self.now + dt
        while self.now < end:
            self.now = min(end, self.now + self.options.heartbeat_interval / 2)
            for sid in self.ids:
                self.nodes[sid].tick(self.now)
            if deliver:
                self.deliver()
            else:
                for sid in self.ids:
                    self.drain(sid)

    def isolate(self, sid):
        self.cut |= {frozenset((sid, o)) for o in self.ids if o != sid}

    def elect(self, sid, keep=lambda to, msg: True):
        """Make `sid` time out first and win."""
        node = self.nodes[sid]
        self.now = node._election_deadline
        node.tick(self.now)
        self.deliver(keep)
        assert node.role is Role.LEADER, node.role
        return node

    def leader(self):
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        assert len(leaders) == 1
        return leaders[0]

    def commands(self, sid):
        return [e.data for e in self.applied[sid] if isinstance(e, Entry) and e.kind == COMMAND]


# --- elections ----------------------------------------------------------------------------

def test_single_voter_elects_itself_and_commits_once_durable():
    c = Cluster(1)
    node = c.elect("s0")
    c.held_disk["s0"] = []
    index = node.propose(c.now, b"a")
    c.drain("s0")
    assert node.commit_index < index, "committed before its own write was durable"
    c.release_disk("s0")
    assert node.commit_index == index and c.commands("s0") == [b"a"]


def test_three_servers_elect_one_leader_and_replicate():
    c = Cluster(3)
    leader = c.elect("s1")
    assert leader.term == 2
    assert all(c.nodes[s].leader_id == "s1" for s in c.ids)
    leader.propose(c.now, b"x")
    c.deliver()
    c.advance(2)
    assert [c.commands(s) for s in c.ids] == [[b"x"]] * 3


def test_election_timeouts_are_randomized_from_the_injected_rng():
    a = RaftNode("a", OPTS, random.Random(1), 0.0)
    b = RaftNode("a", OPTS, random.Random(1), 0.0)
    d = RaftNode("a", OPTS, random.Random(2), 0.0)
    assert a._election_deadline == b._election_deadline != d._election_deadline
    assert OPTS.election_timeout <= a._election_deadline < 2 * OPTS.election_timeout


def test_vote_is_sent_only_after_it_is_durable():
    c = Cluster(3)
    c.held_disk["s0"] = []
    candidate = c.nodes["s1"]
    c.now = candidate._election_deadline
    candidate.tick(c.now)
    c.deliver()  # pre-votes are granted, the real vote request reaches s0
    assert not any(isinstance(m, VoteResponse) and not m.pre for to, m in c.queue if to == "s1")
    assert c.nodes["s0"].voted_for == "s1"
    c.release_disk("s0")
    assert any(isinstance(m, VoteResponse) and m.granted for to, m in c.queue if to == "s1")


def test_vote_denied_to_a_candidate_with_an_older_log():
    logs = {"s0": [boot_entry(["s0", "s1", "s2"]), Entry(2, 2, COMMAND, b"a")],
            "s1": [boot_entry(["s0", "s1", "s2"])],
            "s2": [boot_entry(["s0", "s1", "s2"]), Entry(2, 2, COMMAND, b"a")]}
    c = Cluster(3, logs=logs, terms={"s0": 2, "s1": 2, "s2": 2})
    node = c.nodes["s1"]
    for _ in range(3):
        c.now = node._election_deadline
        node.tick(c.now)
        c.deliver()
    assert node.role is not Role.LEADER and node.term == 2  # pre-vote never passed


# --- pre-vote, stickiness, check-quorum --------------------------------------------------

def test_partitioned_server_rejoining_does_not_depose_the_leader():
    c = Cluster(3)
    leader = c.elect("s0")
    c.isolate("s2")
    c.advance(100)
    assert c.nodes["s2"].term == leader.term, "pre-vote must keep the term from growing"
    c.cut = set()
    c.advance(20)
    assert c.leader() is leader and leader.term == 2


def test_without_pre_vote_a_rejoining_server_forces_an_election():
    c = Cluster(3, options=Options(election_timeout=10, heartbeat_interval=2, pre_vote=False))
    c.elect("s0")
    c.isolate("s2")
    c.advance(100)
    assert c.nodes["s2"].term > 2  # the contrast with the test above


def test_followers_refuse_votes_while_their_leader_is_alive():
    c = Cluster(3)
    leader = c.elect("s0")
    c.nodes["s1"].receive(c.now, VoteRequest("s2", leader.term + 1, 10, 10))
    assert c.nodes["s1"].term == leader.term and c.nodes["s1"].voted_for == "s0"
    assert not [m for to, m in c.queue if isinstance(m, VoteResponse)]


def test_leader_that_cannot_reach_a_quorum_steps_down():
    c = Cluster(3)
    leader = c.elect("s0")
    c.isolate("s0")
    c.advance(OPTS.election_timeout * 2 + 1)
    assert leader.role is Role.FOLLOWER
    assert c.leader().id in ("s1", "s2")


# --- replication and commit rules ----------------------------------------------------------

def test_only_entries_of_the_current_term_commit_by_counting():
    ids = ["s0", "s1", "s2"]
    # s0 holds an entry of term 2 that never reached a quorum; it now leads term 4.
    logs = {"s0": [boot_entry(ids), Entry(2, 2, COMMAND, b"old")],
            "s1": [boot_entry(ids)], "s2": [boot_entry(ids)]}
    c = Cluster(3, options=Options(election_timeout=10, heartbeat_interval=2, max_batch=1),
                logs=logs, terms={"s0": 3, "s1": 3, "s2": 3})

    # Deliver until s1 holds index 2 (term 2) but not yet the no-op at 3 (appends of the no-op
    # reach followers only while they lack index 2, and are then refused).
    def only_up_to_2(to, msg):
        return not (isinstance(msg, AppendEntries) and msg.entries
                    and msg.entries[-1].index >= 3 and c.nodes[to].log.last_index >= 2)
    leader = c.elect("s0", only_up_to_2)
    assert leader.term == 4 and leader.log.last_index == 3  # the no-op of term 4
    c.advance(4, deliver=False)
    c.deliver(keep=only_up_to_2)
    assert c.nodes["s1"].log.last_index == 2 and leader.leader.peers["s1"].match_index == 2
    assert leader.commit_index < 2, "an old-term entry committed by counting replicas"
    c.advance(4)
    assert leader.commit_index == 3 and c.commands("s0") == [b"old"]


def test_leader_counts_itself_only_for_what_it_has_persisted():
    c = Cluster(3)
    leader = c.elect("s0")
    c.advance(2)
    c.held_disk["s0"] = []
    c.isolate("s2")
    index = leader.propose(c.now, b"a")
    c.deliver()
    assert leader.leader.peers["s1"].match_index == index
    assert leader.commit_index < index, "one durable copy out of three committed"
    c.release_disk("s0")
    assert leader.commit_index == index


def test_follower_with_a_divergent_suffix_is_repaired():
    ids = ["s0", "s1", "s2"]
    logs = {"s0": [boot_entry(ids), Entry(2, 2, COMMAND, b"a"), Entry(3, 3, COMMAND, b"b")],
            "s1": [boot_entry(ids), Entry(2, 2, COMMAND, b"a"), Entry(3, 3, COMMAND, b"b")],
            "s2": [boot_entry(ids), Entry(2, 2, COMMAND, b"a"), Entry(3, 2, COMMAND, b"x"),
                   Entry(4, 2, COMMAND, b"y"), Entry(5, 2, COMMAND, b"z")]}
    c = Cluster(3, logs=logs, terms={s: 3 for s in ids})
    leader = c.elect("s0")
    leader.propose(c.now, b"c")
    c.deliver()
    c.advance(2)
    s2 = c.nodes["s2"]
    assert [e.data for e in s2.log.slice(2, s2.log.last_index)][:2] == [b"a", b"b"]
    assert s2.log.last_index == leader.log.last_index
    assert c.commands("s2") == [b"a", b"b", b"c"]


def test_pipelining_sends_batches_without_waiting():
    c = Cluster(3)
    leader = c.elect("s0")
    c.advance(2)
    for i in range(50):
        leader.propose(c.now, b"%d" % i)
    c.drain("s0")
    appends = [m for to, m in c.queue if to == "s1" and isinstance(m, AppendEntries)]
    assert len(appends) == OPTS.max_inflight  # the window, before any answer came back
    assert all(len(m.entries) == OPTS.max_batch for m in appends[:2])
    c.deliver()
    c.advance(2)
    assert len(c.commands("s1")) == 50


def test_lost_batches_are_resent():
    c = Cluster(3)
    leader = c.elect("s0")
    c.advance(2)
    for i in range(10):
        leader.propose(c.now, b"%d" % i)
    c.drain("s0")
    c.queue = [(to, m) for to, m in c.queue if to != "s2"]  # every batch to s2 is lost
    c.advance(10)
    assert len(c.commands("s2")) == 10


# --- leadership transfer -------------------------------------------------------------------

def test_leadership_transfer_with_timeout_now():
    c = Cluster(3)
    leader = c.elect("s0")
    c.advance(2)
    assert leader.transfer_leadership(c.now, "s2") == "s2"
    assert isinstance(leader.propose(c.now, b"x"), NotLeader)  # paused during the transfer
    c.deliver()
    assert c.leader().id == "s2" and c.nodes["s2"].term == 3
    assert leader.role is Role.FOLLOWER


def test_transfer_that_does_not_complete_is_abandoned():
    c = Cluster(3)
    leader = c.elect("s0")
    c.advance(2)
    leader.transfer_leadership(c.now, "s2")
    c.queue = [(to, m) for to, m in c.queue if not isinstance(m, TimeoutNow)]
    c.cut = {frozenset(("s0", "s2"))}
    c.advance(OPTS.election_timeout + 1)
    assert leader.role is Role.LEADER
    assert isinstance(leader.propose(c.now, b"x"), int)


# --- snapshots ------------------------------------------------------------------------------

def test_lagging_follower_is_caught_up_by_install_snapshot():
    opts = Options(election_timeout=10, heartbeat_interval=2, snapshot_threshold=5,
                   trailing_logs=0)
    c = Cluster(3, options=opts)
    leader = c.elect("s0")
    c.isolate("s2")
    for i in range(12):
        leader.propose(c.now, b"%d" % i)
        c.deliver()
    c.advance(2)
    assert leader.snapshot is not None and leader.log.offset > 1
    c.cut = set()
    c.advance(4 * OPTS.election_timeout)
    assert any(isinstance(m, InstallSnapshot) for m in c.delivered)
    s2 = c.nodes["s2"]
    assert any(isinstance(x, Snapshot) for x in c.applied["s2"])
    assert s2.commit_index == leader.commit_index and s2.log.offset == leader.snapshot.index


def test_restart_from_snapshot_and_trailing_entries():
    ids = ["s0"]
    snap = Snapshot(5, 2, Configuration.of(ids), b"state")
    node = RaftNode("s0", OPTS, random.Random(0), 0.0, hard_state=HardState(2, "s0"),
                    snapshot=snap, entries=[Entry(i, 2, COMMAND, b"") for i in range(3, 8)])
    assert (node.log.offset, node.log.last_index, node.commit_index) == (5, 7, 5)
    assert node.config == Configuration.of(ids)


# --- membership -----------------------------------------------------------------------------

def test_add_nonvoter_promote_then_remove_the_leader():
    c = Cluster(3)
    leader = c.elect("s0")
    c.advance(2)
    c.add("s3")
    leader.change_membership(c.now, ChangeKind.ADD_NONVOTER, "s3")
    with pytest.raises(InvalidChange):
        leader.change_membership(c.now, ChangeKind.PROMOTE, "s3")  # one change at a time
    c.deliver()
    c.advance(4)
    s3 = c.nodes["s3"]
    assert s3.config.nonvoters == {"s3"} and s3.log.last_index == leader.log.last_index
    c.advance(100)
    assert s3.role is Role.FOLLOWER and s3.term == leader.term  # non-voters never campaign
    leader.change_membership(c.now, ChangeKind.PROMOTE, "s3")
    c.deliver()
    assert leader.config.voters == {"s0", "s1", "s2", "s3"} and leader.config.quorum() == 3
    leader.change_membership(c.now, ChangeKind.REMOVE, "s0")
    c.deliver()
    c.advance(2)
    assert leader.role is Role.FOLLOWER  # it stepped down once its removal committed
    c.advance(50)
    assert c.leader().id in ("s1", "s2", "s3")
    c.leader().propose(c.now, b"after")
    c.advance(4)
    assert c.commands("s3")[-1:] == [b"after"]


def test_new_leader_changes_membership_only_after_committing_in_its_term():
    c = Cluster(3)
    leader = c.elect("s0", keep=lambda to, m: not isinstance(m, AppendEntries))
    with pytest.raises(InvalidChange):
        leader.change_membership(c.now, ChangeKind.ADD_NONVOTER, "s9")
    c.advance(2)
    assert isinstance(leader.change_membership(c.now, ChangeKind.ADD_NONVOTER, "s9"), int)


# --- read index -------------------------------------------------------------------------------

def test_read_index_confirms_leadership_with_a_quorum_round():
    c = Cluster(3)
    leader = c.elect("s0")
    c.advance(2)
    token = leader.read_index(c.now)
    c.drain("s0")
    assert c.reads["s0"] == []
    c.deliver()
    assert [(r.token, r.ok, r.index) for r in c.reads["s0"]] == [(token, True,
                                                                leader.commit_index)]


def test_read_index_waits_for_the_first_commit_of_the_term():
    c = Cluster(1)
    c.held_disk["s0"] = []
    leader = c.elect("s0")
    leader.read_index(c.now)
    c.drain("s0")
    assert leader.commit_index < leader.leader.first_index and c.reads["s0"] == []
    c.release_disk("s0")
    assert [(r.ok, r.index) for r in c.reads["s0"]] == [(True, leader.leader.first_index)]


def test_isolated_leader_never_confirms_a_read_and_fails_it_on_stepping_down():
    c = Cluster(3)
    leader = c.elect("s0")
    c.advance(2)
    c.isolate("s0")
    token = leader.read_index(c.now)
    c.advance(OPTS.election_timeout * 2 + 1)
    assert [(r.token, r.ok) for r in c.reads["s0"]] == [(token, False)]


def test_not_leader_answers_name_the_leader():
    c = Cluster(3)
    c.elect("s1")
    assert c.nodes["s0"].propose(c.now, b"x") == NotLeader("s1")
    assert c.nodes["s0"].read_index(c.now) == NotLeader("s1")


# --- codec --------------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [
    VoteRequest("a", 3, 10, 2, True, False),
    VoteResponse("b", 3, True, False),
    AppendEntries("a", 3, 9, 2, (Entry(10, 3, NOOP, b""), Entry(11, 3, COMMAND, b"\x00x")), 8, 5),
    AppendResponse("b", 3, False, 9, 0, 4, 5),
    InstallSnapshot("a", 3, Snapshot(40, 2, Configuration.of(["a", "b"], ("c",)), b"kv"), 6),
    SnapshotResponse("b", 3, 40, 6),
    TimeoutNow("a", 4),
])
def test_messages_round_trip_through_msgpack(message):
    assert decode(encode(message)) == message


@pytest.mark.parametrize("frame", [b"", b"\xc1", b"\x93\x01\xa1a\x03", b"\x92\x63\x01",
                                   encode(TimeoutNow("a", 4))[:-1],
                                   b"\x93\x07\xa1a\xff"])
def test_malformed_frames_are_refused(frame):
    with pytest.raises(MessageError):
        decode(frame)


# --- simulation ---------------------------------------------------------------------------------

def run_seeds(seeds, **kw):
    for seed in seeds:
        Sim(seed, **kw).run()  # raises SafetyError naming the seed and how to replay it


@pytest.mark.parametrize("first", range(0, 160, 20))
def test_simulation_three_servers(first):
    run_seeds(range(first, first + 20))


@pytest.mark.parametrize("first", range(0, 60, 20))
def test_simulation_five_servers(first):
    run_seeds(range(first, first + 20), servers=5)


@pytest.mark.parametrize("first", range(0, 60, 20))
def test_simulation_membership_changes(first):
    run_seeds(range(first, first + 20), membership=True)


def test_a_seed_replays_exactly():
    a, b = Sim(7), Sim(7)
    a.run()
    b.run()
    assert a.history == b.history and a.log == b.log and a.stats == b.stats


@pytest.mark.slow
@pytest.mark.parametrize("servers,membership,first", [
    (s, m, f) for s in (3, 5) for m in (False, True) for f in range(1000, 3500, 250)])
def test_simulation_many_seeds(servers, membership, first):
    run_seeds(range(first, first + 250), servers=servers, membership=membership)
