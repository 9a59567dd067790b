"""The leader's side of Raft: one `Progress` per follower (probe, pipelined replicate, or
snapshot), the commit rule, read-index rounds, check-quorum and leadership transfer.

A `Leader` lives exactly as long as its node leads one term; everything it sends goes out
through the node, held back only until the term and vote are durable.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from agent.raft.records import CONFIGURATION, NOOP, Entry

from .membership import ChangeKind, InvalidChange
from .messages import (AppendEntries, AppendResponse, InstallSnapshot, Message,
                       SnapshotResponse, TimeoutNow)
from .outputs import NotLeader, ReadState

if TYPE_CHECKING:
    from .node import RaftNode


class Mode(Enum):
    PROBE = "probe"          # one AppendEntries at a time until the follower's log matches
    REPLICATE = "replicate"  # matched: stream batches, up to max_inflight unacknowledged
    SNAPSHOT = "snapshot"    # behind the compacted log: an InstallSnapshot is on its way


@dataclass
class Progress:
    next_index: int
    match_index: int = 0
    mode: Mode = Mode.PROBE
    paused: bool = False     # PROBE: an append is out; wait for its answer or a heartbeat
    inflight: deque = field(default_factory=deque)  # last index of each pipelined batch
    last_ack: float = 0.0    # when this follower last answered in this term
    last_progress: float = 0.0
    acked_seq: int = 0       # newest round this follower answered (read-index)
    snapshot_sent: float = 0.0

    def probe(self, next_index: int) -> None:
        self.mode, self.paused, self.next_index = Mode.PROBE, False, next_index
        self.inflight.clear()


@dataclass
class _Read:
    token: int
    seq: int
    index: int | None  # commit index once this term has committed an entry


class Leader:
    def __init__(self, node: RaftNode, now: float) -> None:
        self.node = node
        self.seq = 0
        self._round_wanted = True
        self._reads: list[_Read] = []
        self._next_token = 1
        self.transfer_target: str | None = None
        self._transfer_deadline = 0.0
        self._timeout_sent = False
        self.peers: dict[str, Progress] = {}
        self._sync_peers(now)
        self._heartbeat_due = now + node.options.heartbeat_interval
        self._check_due = now + node.options.election_timeout
        # The no-op makes entries of earlier terms committable (they only commit by counting
        # replicas of an entry of the leader's own term) and marks when reads may be served.
        self.first_index = node.log.last_index + 1
        self._append(now, NOOP, b"")

    # --- membership of the replication set ---------------------------------------------

    def _sync_peers(self, now: float) -> None:
        servers = self.node.config.servers - {self.node.id}
        for peer in servers - self.peers.keys():
            self.peers[peer] = Progress(self.node.log.last_index + 1, last_ack=now,
                                        last_progress=now)
        for peer in self.peers.keys() - servers:
            del self.peers[peer]

    # --- inputs from the node ------------------------------------------------------------

    def propose(self, now: float, kind: int, data: bytes) -> int | NotLeader:
        if self.transfer_target is not None:
            return NotLeader(self.node.leader_id, "leadership transfer in progress")
        return self._append(now, kind, data)

    def change_membership(self, now: float, kind: ChangeKind, server: str) -> int | NotLeader:
        node = self.node
        if node.config_index > node.commit_index:
            raise InvalidChange("a configuration change is still uncommitted")
        if node.commit_index < self.first_index:
            # Raft thesis errata: a new leader must commit in its own term before changing
            # membership, or an old leader's uncommitted change can conflict with this one.
            raise InvalidChange("this leader has not yet committed an entry of its term")
        config = node.config.apply(kind, server)
        return self.propose(now, CONFIGURATION, config.encode())

    def read_index(self, now: float) -> int:
        token = self._next_token
        self._next_token += 1
        committed = self.node.commit_index >= self.first_index
        self._reads.append(_Read(token, self.seq + 1,
                                 self.node.commit_index if committed else None))
        self._round_wanted = True
        return token

    def transfer(self, now: float, target: str | None) -> str | NotLeader:
        voters = self.node.config.voters - {self.node.id}
        if target is None:
            if not voters:
                return NotLeader(self.node.id, "no other voter to transfer to")
            target = max(sorted(voters), key=lambda p: self.peers[p].match_index)
        if target not in voters:
            raise InvalidChange(f"{target} is not a voter")
        self.transfer_target, self._timeout_sent = target, False
        self._transfer_deadline = now + self.node.options.election_timeout
        self._maybe_timeout_now()
        self._send_more(target)
        return target

    def tick(self, now: float) -> None:
        opts = self.node.options
        if self.transfer_target is not None and now >= self._transfer_deadline:
            self.transfer_target = None  # the target did not take over: lead on
        if now >= self._check_due:
            self._check_due = now + opts.election_timeout
            recent = {p for p, pr in self.peers.items() if pr.last_ack > now - opts.election_timeout}
            if opts.check_quorum and not self.node.config.has_quorum(recent | {self.node.id}):
                self.node.step_down(now)
                return
        if now >= self._heartbeat_due:
            self._heartbeat_due = now + opts.heartbeat_interval
            for peer, pr in self.peers.items():
                stalled = now - pr.last_progress >= 2 * opts.heartbeat_interval
                if pr.mode is Mode.REPLICATE and pr.inflight and stalled:
                    pr.probe(pr.match_index + 1)  # a batch was lost: find the gap again
                elif pr.mode is Mode.SNAPSHOT and now - pr.snapshot_sent >= opts.election_timeout:
                    pr.probe(pr.next_index)  # the snapshot was lost: send it again
                elif pr.mode is Mode.PROBE:
                    pr.paused = False
            self._round_wanted = True

    def flush(self) -> None:
        """Called as the node drains its output: start a heartbeat round if one is due (a
        heartbeat tick or reads waiting for confirmation), then send what followers lack."""
        if self._round_wanted:
            self._round_wanted = False
            self.seq += 1
            for peer in sorted(self.peers):
                pr = self.peers[peer]
                if pr.mode is Mode.PROBE and not pr.paused:
                    self._send_append(peer)
                elif pr.mode is Mode.REPLICATE:
                    self._send_heartbeat(peer)
        self._check_reads()
        for peer in sorted(self.peers):
            self._send_more(peer)

    def receive(self, now: float, msg: Message) -> None:
        pr = self.peers.get(msg.src)
        if pr is None:
            return  # a server that has left the configuration
        pr.last_ack = now
        pr.acked_seq = max(pr.acked_seq, msg.seq)
        if isinstance(msg, SnapshotResponse):
            if msg.index > pr.match_index:
                pr.match_index, pr.last_progress = msg.index, now
            if pr.mode is Mode.SNAPSHOT:
                pr.probe(pr.match_index + 1)
        elif isinstance(msg, AppendResponse):
            self._on_append_response(now, pr, msg)
        self.maybe_commit(now)
        if self.node.leader is not self:
            return  # committing this server's removal ended its leadership
        self._check_reads()
        self._maybe_timeout_now()
        self._send_more(msg.src)

    def _on_append_response(self, now: float, pr: Progress, msg: AppendResponse) -> None:
        if msg.success:
            if msg.match_index > pr.match_index:
                pr.match_index, pr.last_progress = msg.match_index, now
            while pr.inflight and pr.inflight[0] <= pr.match_index:
                pr.inflight.popleft()
            if pr.mode is Mode.PROBE:
                pr.mode, pr.next_index, pr.paused = Mode.REPLICATE, pr.match_index + 1, False
                pr.inflight.clear()
            pr.next_index = max(pr.next_index, pr.match_index + 1)
        elif msg.prev_log_index > pr.match_index and pr.mode is not Mode.SNAPSHOT:
            # Retry from the follower's hint, never below what is known to match.
            pr.probe(max(pr.match_index + 1, min(msg.hint + 1, msg.prev_log_index)))
        elif pr.mode is Mode.PROBE:
            pr.paused = False

    # --- sending ---------------------------------------------------------------------------

    def _send_more(self, peer: str) -> None:
        pr = self.peers.get(peer)
        if pr is None:
            return
        last = self.node.log.last_index
        if pr.mode is Mode.PROBE and not pr.paused and pr.next_index <= last:
            self._send_append(peer)
        while (pr.mode is Mode.REPLICATE and pr.next_index <= last
               and len(pr.inflight) < self.node.options.max_inflight):
            self._send_append(peer)

    def _send_append(self, peer: str) -> None:
        node, pr = self.node, self.peers[peer]
        prev = pr.next_index - 1
        if prev < node.log.offset:
            self._send_snapshot(peer)
            return
        last = min(node.log.last_index, prev + node.options.max_batch)
        entries = tuple(node.log.slice(prev + 1, last)) if last > prev else ()
        node._send(peer, AppendEntries(node.id, node.term, prev, node.log.term_at(prev), entries,
                                       node.commit_index, self.seq), leader_append=True)
        if pr.mode is Mode.PROBE:
            pr.paused = True
        elif entries:
            if not pr.inflight:
                pr.last_progress = node.now  # the stall clock starts with the first batch out
            pr.next_index = last + 1
            pr.inflight.append(last)

    def _send_heartbeat(self, peer: str) -> None:
        """An empty append at the known match point: always accepted, carries the commit
        index and the round number for read-index."""
        node, pr = self.node, self.peers[peer]
        prev = max(pr.match_index, node.log.offset)
        node._send(peer, AppendEntries(node.id, node.term, prev, node.log.term_at(prev), (),
                                       node.commit_index, self.seq), leader_append=True)

    def _send_snapshot(self, peer: str) -> None:
        node, pr = self.node, self.peers[peer]
        pr.mode, pr.snapshot_sent = Mode.SNAPSHOT, node.now
        node._send(peer, InstallSnapshot(node.id, node.term, node.snapshot, self.seq),
                   leader_append=True)

    # --- commit, reads, transfer ------------------------------------------------------------

    def _append(self, now: float, kind: int, data: bytes) -> int:
        node = self.node
        index = node.log.last_index + 1
        node._append([Entry(index, node.term, kind, data)])
        if kind == CONFIGURATION:
            self._sync_peers(now)
        self.maybe_commit(now)  # a single voter commits on its own durability alone
        return index

    def maybe_commit(self, now: float) -> None:
        node = self.node
        matches = {p: pr.match_index for p, pr in self.peers.items()}
        matches[node.id] = node.stable_index
        n = node.config.quorum_value(matches)
        # Only an entry of the leader's own term commits by counting replicas (Raft 5.4.2).
        if n > node.commit_index and node.log.term_at(n) == node.term:
            node.commit_index = n
            for read in self._reads:
                if read.index is None and n >= self.first_index:
                    read.index = n
            if node.id not in node.config.voters and node.config_index <= n:
                node.step_down(now)  # this server's removal is committed: stop leading

    def _check_reads(self) -> None:
        if not self._reads:
            return
        node, done = self.node, []
        for read in self._reads:
            acked = {p for p, pr in self.peers.items() if pr.acked_seq >= read.seq}
            if read.index is not None and node.config.has_quorum(acked | {node.id}):
                done.append(read)
                node._reads.append(ReadState(read.token, read.index, True))
        self._reads = [r for r in self._reads if r not in done]

    def _maybe_timeout_now(self) -> None:
        target = self.transfer_target
        if (target is not None and not self._timeout_sent and target in self.peers
                and self.peers[target].match_index == self.node.log.last_index):
            self._timeout_sent = True
            self.node._send(target, TimeoutNow(self.node.id, self.node.term), leader_append=True)

    def stop(self) -> None:
        """Leadership ended: reads still waiting must be retried elsewhere."""
        for read in self._reads:
            self.node._reads.append(ReadState(read.token, read.index or 0, False))
        self._reads = []
