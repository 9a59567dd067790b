"""What a `RaftNode` hands its driver, and the settings it runs with.

The driver loop is: feed inputs (`tick`, `receive`, `propose`, ...), then `ready()` and act on
the result in this order:

1. write every `Persist` in order, durably, and call `persisted(now, seq)` for each once it is;
2. send `messages`: the node releases a message only after everything it depends on has been
   acknowledged as persisted (a vote after the vote, an AppendResponse after the entries it
   acknowledges), so whatever `ready()` returns may go out at once;
3. apply `committed` in order (entries, or a `Snapshot` to restore the state machine from);
4. answer `reads` (their index is already covered by the entries applied in step 3).

A leader's own AppendEntries wait only for its term and vote, not for its own entries:
the leader writes its log in parallel with replication and counts itself toward a quorum
only for what it has persisted (Raft thesis 10.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.raft.records import Entry, HardState

from .messages import Message, Snapshot


@dataclass(frozen=True, slots=True)
class Options:
    """Timing is in the driver's clock units (seconds in the adapter, ticks in tests).

    `election_timeout` is the minimum; each follower waits a random time in [T, 2T). A leader
    heartbeats every `heartbeat_interval` and steps down if it has not heard from a quorum
    within one `election_timeout` (check-quorum). A follower that heard from a leader within
    `election_timeout` refuses pre-votes and votes (so a rejoining server cannot depose it).
    """

    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    max_batch: int = 64            # entries per AppendEntries
    max_inflight: int = 8          # pipelined AppendEntries per follower before waiting
    snapshot_threshold: int = 1024  # applied entries past the last snapshot before asking for one
    trailing_logs: int = 256       # entries kept behind a snapshot for slightly lagging followers
    pre_vote: bool = True
    check_quorum: bool = True


@dataclass(frozen=True, slots=True)
class NotLeader:
    """A proposal or read on a server that cannot serve it; `leader` is the best guess."""

    leader: str | None
    reason: str = "not leader"


@dataclass(frozen=True, slots=True)
class Persist:
    """One durable write, applied in this order: save `snapshot`, drop entries from
    `truncate_from` on, drop entries through `compact_through`, append `entries`, save
    `hard_state`. Acknowledge with `persisted(now, seq)`."""

    seq: int
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    truncate_from: int | None = None
    compact_through: int | None = None
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    message: Message


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read-index request settled: when `ok`, a read served after applying through `index`
    is linearizable; otherwise leadership was lost and the read must be retried."""

    token: int
    index: int
    ok: bool


@dataclass(frozen=True, slots=True)
class LeaderChange:
    """The leader this server knows of changed (`leader` None: none known)."""

    term: int
    leader: str | None
    is_self: bool


@dataclass(frozen=True, slots=True)
class Ready:
    persist: tuple[Persist, ...] = ()
    messages: tuple[Send, ...] = ()
    committed: tuple[Entry | Snapshot, ...] = ()
    reads: tuple[ReadState, ...] = ()
    leader_changes: tuple[LeaderChange, ...] = ()
    snapshot_wanted: int | None = None  # take one at this applied index: `snapshot_taken`

    def __bool__(self) -> bool:
        return bool(self.persist or self.messages or self.committed or self.reads
                    or self.leader_changes or self.snapshot_wanted is not None)
