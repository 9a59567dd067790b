"""Raft consensus as a pure state machine, one `RaftNode` per server (issue 12).

`node` holds elections and the follower's side, `replication` the leader's side, `log` the
in-memory log, `membership` configurations and quorums, `persistence` the ordering of
durable writes before the messages that depend on them, `messages` the wire messages and
their msgpack codec, and `outputs` what a driver receives from `RaftNode.ready()`. The
Twisted adapter, the WAL and the core's `ReplicatedLog` interface sit on top of this.
"""

from .membership import ChangeKind, Configuration, InvalidChange
from .messages import Snapshot
from .node import RaftNode, Role, SafetyViolation
from .outputs import LeaderChange, NotLeader, Options, Persist, ReadState, Ready, Send

__all__ = ["ChangeKind", "Configuration", "InvalidChange", "LeaderChange", "NotLeader",
           "Options", "Persist", "RaftNode", "ReadState", "Ready", "Role", "SafetyViolation",
           "Send", "Snapshot"]
