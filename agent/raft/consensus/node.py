"""`RaftNode`: one server's Raft as a pure state machine (terms, votes, elections with
pre-vote and leader stickiness, the follower's side of log replication and snapshots).

The leader's side (progress of each follower, commit, read-index, transfer) lives in
`replication`. Nothing here touches a clock, a socket or a disk: time arrives as `now`,
randomness from the injected `random.Random`, messages through `receive`, and everything
the node wants done comes out of `ready()` (see `outputs` for the order a driver follows).
"""

from __future__ import annotations

import random
from enum import Enum

from agent.raft.records import COMMAND, CONFIGURATION, NOOP, Entry, HardState

from .log import MemoryLog
from .membership import ChangeKind, Configuration
from .messages import (AppendEntries, AppendResponse, InstallSnapshot, Message, Snapshot,
                       SnapshotResponse, TimeoutNow, VoteRequest, VoteResponse)
from .outputs import LeaderChange, NotLeader, Options, ReadState, Ready, Send
from .persistence import PersistQueue
from .replication import Leader


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class SafetyViolation(AssertionError):
    """The node was asked to do something Raft's invariants forbid (a bug, or a lying disk)."""


class RaftNode:
    """One server. Restart it from what its disk holds: `hard_state`, the latest `snapshot`
    and the entries after it. A bootstrapped cluster starts with a configuration entry at
    index 1 on every voter; a server joining later starts empty and waits for a leader."""

    def __init__(self, server_id: str, options: Options, rng: random.Random, now: float, *,
                 hard_state: HardState = HardState(), snapshot: Snapshot | None = None,
                 entries: list[Entry] | tuple[Entry, ...] = ()) -> None:
        self.id = server_id
        self.options = options
        self._rng = rng
        self.term = hard_state.term
        self.voted_for = hard_state.voted_for
        self.snapshot = snapshot
        base = snapshot.index if snapshot else 0
        self.log = MemoryLog(base, snapshot.term if snapshot else 0, list(entries))
        self._configs: list[tuple[int, Configuration]] = [
            (base, snapshot.config if snapshot else Configuration())]
        self._track_configs(self.log.slice(self.log.offset + 1, self.log.last_index))
        self.commit_index = base
        self.applied_index = base   # handed out in `committed` (the driver applies in order)
        self.stable_index = self.log.last_index  # restored entries are durable
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self.leader: Leader | None = None  # the leader's state, while leading
        self._reported: tuple[int, str | None] = (self.term, None)
        self._leader_contact = float("-inf")
        self._votes: set[str] = set()
        self._disk = PersistQueue()
        self._committed: list[Entry | Snapshot] = []
        self._reads: list[ReadState] = []
        self._changes: list[LeaderChange] = []
        self._snapshot_asked = 0
        self.now = now  # the time of the latest input
        self._reset_election_timer(now)

    # --- what the node knows --------------------------------------------------------------

    @property
    def config(self) -> Configuration:
        """The newest configuration in the log, committed or not (single-server changes)."""
        return self._configs[-1][1]

    @property
    def config_index(self) -> int:
        return self._configs[-1][0]

    def config_at(self, index: int) -> Configuration:
        for at, config in reversed(self._configs):
            if at <= index:
                return config
        raise SafetyViolation(f"no configuration known at {index}")

    def in_lease(self, now: float) -> bool:
        """True while a leader is known to be alive: votes that would depose it are refused."""
        if self.role is Role.LEADER:
            return True
        return (self.leader_id is not None
                and now - self._leader_contact < self.options.election_timeout)

    @property
    def leader_contact(self) -> float:
        """When the current leader was last heard from (-inf: never; now, on the leader)."""
        return self.now if self.role is Role.LEADER else self._leader_contact

    # --- inputs ---------------------------------------------------------------------------

    def campaign_now(self, now: float) -> bool:
        """Start an election at once instead of at the election timeout: for a server that is
        the only voter of its configuration (a restarted `-bootstrap` server), whose election
        cannot compete with anyone. Returns whether one was started."""
        self.now = now
        if self.role is Role.LEADER or self.config.voters != frozenset({self.id}):
            return False
        self._start_pre_vote(now) if self.options.pre_vote else self._campaign(now)
        return True

    def tick(self, now: float) -> None:
        self.now = now
        if self.role is Role.LEADER:
            self.leader.tick(now)
        elif now >= self._election_deadline:
            self._reset_election_timer(now)
            if self.id in self.config.voters:
                self._start_pre_vote(now) if self.options.pre_vote else self._campaign(now)

    def persisted(self, now: float, seq: int) -> None:
        self.now = now
        for index, term in self._disk.acknowledge(seq):
            if self.log.term_at(index) == term or index <= self.log.offset:
                self.stable_index = max(self.stable_index, index)
        if self.role is Role.LEADER:
            self.leader.maybe_commit(now)

    def snapshot_taken(self, now: float, index: int, data: bytes) -> None:
        """The driver saved the state machine as of applied `index`: keep it to send to
        lagging followers, and compact the log behind it (minus `trailing_logs`)."""
        if index <= (self.snapshot.index if self.snapshot else 0):
            return
        if index > self.applied_index:
            raise SafetyViolation(f"snapshot at {index} beyond applied {self.applied_index}")
        snap = Snapshot(index, self.log.term_at(index), self.config_at(index), data)
        self.snapshot = snap
        through = max(self.log.offset, index - self.options.trailing_logs)
        self._disk.snapshot(snap, None, through)
        if through > self.log.offset:
            self._compact(through, self.log.term_at(through))

    def receive(self, now: float, msg: Message) -> None:
        self.now = now
        if msg.term > self.term:
            if isinstance(msg, VoteRequest) and (msg.pre or (self.in_lease(now)
                                                             and not msg.transfer)):
                if not msg.pre:
                    return  # leader stickiness: a live leader's followers ignore the vote
            elif isinstance(msg, VoteResponse) and msg.pre and msg.granted:
                pass  # a granted pre-vote carries the prospective term, not a real one
            else:
                leads = isinstance(msg, (AppendEntries, InstallSnapshot, TimeoutNow))
                self._become_follower(now, msg.term, msg.src if leads else None)
        elif msg.term < self.term:
            self._reply_stale(msg)
            return
        handler = _HANDLERS[type(msg)]
        handler(self, now, msg)

    def propose(self, now: float, command: bytes, kind: int = COMMAND) -> int | NotLeader:
        """Append `command` to the log; returns its index (it commits later, or is lost
        if leadership is: watch `committed` for that index and this term). `kind` is the
        entry's kind for the state machine (configurations go through change_membership)."""
        self.now = now
        if kind in (CONFIGURATION, NOOP):
            raise ValueError("configurations and no-ops are Raft's own entries")
        if self.role is not Role.LEADER:
            return NotLeader(self.leader_id)
        return self.leader.propose(now, kind, command)

    def read_index(self, now: float) -> int | NotLeader:
        """Start a linearizable read: returns a token that comes back in `Ready.reads` once a
        quorum confirmed this server still led after the read began."""
        self.now = now
        if self.role is not Role.LEADER:
            return NotLeader(self.leader_id)
        return self.leader.read_index(now)

    def change_membership(self, now: float, kind: ChangeKind, server: str) -> int | NotLeader:
        """Append a configuration entry changing one server; raises `InvalidChange` when the
        change does not apply or another change is not yet committed."""
        self.now = now
        if self.role is not Role.LEADER:
            return NotLeader(self.leader_id)
        return self.leader.change_membership(now, kind, server)

    def transfer_leadership(self, now: float, target: str | None = None) -> str | NotLeader:
        """Hand leadership to `target` (default: the most up-to-date voter); returns it."""
        self.now = now
        if self.role is not Role.LEADER:
            return NotLeader(self.leader_id)
        return self.leader.transfer(now, target)

    # --- output ---------------------------------------------------------------------------

    def ready(self) -> Ready:
        if self.role is Role.LEADER:
            self.leader.flush()
        committed = self._committed
        if self.commit_index > self.applied_index:
            committed.extend(self.log.slice(self.applied_index + 1, self.commit_index))
            self.applied_index = self.commit_index
        wanted = None
        base = self.snapshot.index if self.snapshot else 0
        if (self.applied_index - base >= self.options.snapshot_threshold
                and self._snapshot_asked < self.applied_index):
            wanted = self._snapshot_asked = self.applied_index
        out = Ready(self._disk.take_writes(), self._disk.take_messages(), tuple(committed),
                    tuple(self._reads), tuple(self._changes), wanted)
        self._committed, self._reads, self._changes = [], [], []
        return out

    # --- elections --------------------------------------------------------------------------

    def _reset_election_timer(self, now: float) -> None:
        t = self.options.election_timeout
        self._election_deadline = now + t + self._rng.random() * t

    def _vote_request(self, term: int, pre: bool, transfer: bool) -> VoteRequest:
        return VoteRequest(self.id, term, self.log.last_index, self.log.last_term, pre, transfer)

    def _start_pre_vote(self, now: float) -> None:
        self.role = Role.PRE_CANDIDATE
        self._votes = {self.id}
        self._set_leader(None)
        request = self._vote_request(self.term + 1, True, False)
        for peer in sorted(self.config.voters - {self.id}):
            self._send(peer, request)
        if self.config.has_quorum(self._votes):
            self._campaign(now)

    def _campaign(self, now: float, transfer: bool = False) -> None:
        self.role = Role.CANDIDATE
        self._set_hard_state(self.term + 1, self.id)
        self._votes = {self.id}
        self._set_leader(None)
        self._reset_election_timer(now)
        request = self._vote_request(self.term, False, transfer)
        for peer in sorted(self.config.voters - {self.id}):
            self._send(peer, request)
        if self.config.has_quorum(self._votes):
            self._become_leader(now)

    def _on_vote_request(self, now: float, msg: VoteRequest) -> None:
        up_to_date = (msg.last_log_term, msg.last_log_index) >= (self.log.last_term,
                                                                self.log.last_index)
        if msg.pre:
            granted = msg.term > self.term and up_to_date and not self.in_lease(now)
            self._send(msg.src, VoteResponse(self.id, msg.term if granted else self.term,
                                             granted, True))
            return
        granted = self.voted_for in (None, msg.src) and up_to_date
        if granted:
            if self.role is Role.LEADER:
                raise SafetyViolation("a leader granted a vote in its own term")
            self._set_hard_state(self.term, msg.src)
            self._reset_election_timer(now)
        self._send(msg.src, VoteResponse(self.id, self.term, granted))

    def _on_vote_response(self, now: float, msg: VoteResponse) -> None:
        if msg.pre:
            if self.role is Role.PRE_CANDIDATE and msg.granted and msg.term == self.term + 1:
                self._votes.add(msg.src)
                if self.config.has_quorum(self._votes):
                    self._campaign(now)
        elif self.role is Role.CANDIDATE and msg.granted:
            self._votes.add(msg.src)
            if self.config.has_quorum(self._votes):
                self._become_leader(now)

    def _on_timeout_now(self, now: float, msg: TimeoutNow) -> None:
        if self.role is not Role.LEADER and self.id in self.config.voters:
            self._campaign(now, transfer=True)

    # --- role changes -----------------------------------------------------------------------

    def _become_follower(self, now: float, term: int, leader: str | None) -> None:
        if term > self.term:
            self._set_hard_state(term, None)
        if self.role is Role.LEADER:
            self.leader.stop()
            self.leader = None
        self.role = Role.FOLLOWER
        self._set_leader(leader)
        self._reset_election_timer(now)

    def _become_leader(self, now: float) -> None:
        self.role = Role.LEADER
        self._set_leader(self.id)
        self.leader = Leader(self, now)

    def step_down(self, now: float) -> None:
        """Stop leading (check-quorum failed, or this server left the configuration)."""
        if self.role is Role.LEADER:
            self._become_follower(now, self.term, None)

    def _set_leader(self, leader: str | None) -> None:
        self.leader_id = leader
        if self._reported != (self.term, leader):
            self._reported = (self.term, leader)
            self._changes.append(LeaderChange(self.term, leader, leader == self.id))

    def _set_hard_state(self, term: int, voted_for: str | None) -> None:
        if term < self.term:
            raise SafetyViolation(f"term going back from {self.term} to {term}")
        self.term, self.voted_for = term, voted_for
        self._disk.hard_state(HardState(term, voted_for))

    # --- the follower's side of replication ---------------------------------------------------

    def _heard_from_leader(self, now: float, msg: Message) -> None:
        if self.role is Role.LEADER:
            raise SafetyViolation(f"two leaders in term {self.term}: {self.id}, {msg.src}")
        if self.role is not Role.FOLLOWER or self.leader_id != msg.src:
            self._become_follower(now, self.term, msg.src)
        self._leader_contact = now
        self._reset_election_timer(now)

    def _on_append(self, now: float, msg: AppendEntries) -> None:
        self._heard_from_leader(now, msg)
        prev, prev_term, entries = msg.prev_log_index, msg.prev_log_term, list(msg.entries)
        if prev < self.log.offset:
            # The compacted prefix is committed, so it matches the leader's: skip over it.
            skip = self.log.offset - prev
            if len(entries) <= skip:
                self._send(msg.src, AppendResponse(self.id, self.term, True, prev,
                                                   prev + len(entries), 0, msg.seq))
                return
            entries = entries[skip:]
            prev, prev_term = self.log.offset, self.log.offset_term
        if not self.log.matches(prev, prev_term):
            if prev > self.log.last_index:
                hint = self.log.last_index
            else:
                hint = max(self.log.first_index_of_term(prev) - 1, self.commit_index)
            self._send(msg.src, AppendResponse(self.id, self.term, False, prev, 0, hint, msg.seq))
            return
        for i, entry in enumerate(entries):
            have = self.log.term_at(entry.index)
            if have == entry.term:
                continue
            if have is not None:
                if entry.index <= self.commit_index:
                    raise SafetyViolation(f"leader {msg.src} rewrites committed {entry.index}")
                self._truncate(entry.index)
            self._append(entries[i:])
            break
        match = prev + len(entries)
        if msg.leader_commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(msg.leader_commit, match))
        self._send(msg.src, AppendResponse(self.id, self.term, True, prev, match, 0, msg.seq))

    def _on_install_snapshot(self, now: float, msg: InstallSnapshot) -> None:
        self._heard_from_leader(now, msg)
        snap = msg.snapshot
        if snap.index > self.commit_index:
            keep = self.log.matches(snap.index, snap.term) and snap.index < self.log.last_index
            self.snapshot = snap
            self._disk.snapshot(snap, None if keep else snap.index + 1, snap.index)
            self._configs = [(i, c) for i, c in self._configs if keep and i > snap.index]
            self._configs.insert(0, (snap.index, snap.config))
            if keep:
                self.log.compact_through(snap.index, snap.term)
            else:
                self.log = MemoryLog(snap.index, snap.term)
                self.stable_index = min(self.stable_index, snap.index)
            self._disk.mark_tail(self.log.last_index, self.log.last_term)
            self.commit_index = self.applied_index = snap.index
            self._committed.append(snap)
        self._send(msg.src, SnapshotResponse(self.id, self.term, snap.index, msg.seq))

    def _reply_stale(self, msg: Message) -> None:
        """Tell a sender from an older term about this one (a stale leader steps down)."""
        if isinstance(msg, VoteRequest):
            self._send(msg.src, VoteResponse(self.id, self.term, False, msg.pre))
        elif isinstance(msg, AppendEntries):
            self._send(msg.src, AppendResponse(self.id, self.term, False, msg.prev_log_index,
                                               0, 0, msg.seq))
        elif isinstance(msg, InstallSnapshot):
            self._send(msg.src, SnapshotResponse(self.id, self.term, 0, msg.seq))

    def _on_leader_message(self, now: float, msg: Message) -> None:
        if self.role is Role.LEADER:
            self.leader.receive(now, msg)

    # --- log changes (mirrored to the disk) -------------------------------------------------

    def _append(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._disk.append(entries)
        self._disk.mark_tail(self.log.last_index, self.log.last_term)
        self._track_configs(entries)

    def _truncate(self, index: int) -> None:
        self.log.truncate_from(index)
        self._disk.truncate(index)
        self.stable_index = min(self.stable_index, index - 1)
        self._configs = [(i, c) for i, c in self._configs if i < index] or self._configs[:1]

    def _compact(self, through: int, term: int) -> None:
        self.log.compact_through(through, term)
        # keep the newest configuration at or before the new start as the base
        older = [x for x in self._configs if x[0] <= through]
        self._configs = older[-1:] + [x for x in self._configs if x[0] > through]

    def _track_configs(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.kind == CONFIGURATION:
                self._configs.append((e.index, Configuration.decode(e.data)))

    def _send(self, to: str, msg: Message, leader_append: bool = False) -> None:
        self._disk.send(Send(to, msg), leader_append)


_HANDLERS = {
    VoteRequest: RaftNode._on_vote_request,
    VoteResponse: RaftNode._on_vote_response,
    AppendEntries: RaftNode._on_append,
    InstallSnapshot: RaftNode._on_install_snapshot,
    TimeoutNow: RaftNode._on_timeout_now,
    AppendResponse: RaftNode._on_leader_message,
    SnapshotResponse: RaftNode._on_leader_message,
}
