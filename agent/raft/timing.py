"""Raft's timing from Consul's `performance` block: `raft_multiplier` and `rpc_hold_timeout`.

Consul scales hashicorp/raft's timeouts (1 s heartbeat timeout, 1 s election timeout, 500 ms
lease) by `raft_multiplier` (default 5), so a failed leader is replaced after 5-10 s plus
Serf's detection; measured here, Consul 1.8.7 takes about 15 s. Waypost scales smaller units:
per multiplier step an election timeout of 150 ms and a heartbeat every 30 ms, so the default
(5) waits 0.75-1.5 s (randomized) before a follower stands for election, and heartbeats every
150 ms: five heartbeats per election timeout, so a follower whose reactor stalls for a few
hundred milliseconds (a GC pause, a big snapshot) does not call an election, and pre-vote
keeps a stalled follower from deposing a healthy leader anyway. `raft_multiplier = 1` is for
tight LANs (0.15-0.3 s); 10 for slow or shared machines.
"""

from __future__ import annotations

from typing import Any

from agent.durations import parse_duration
from agent.raft.consensus import Options

ELECTION_UNIT = 0.15
HEARTBEAT_UNIT = 0.03
DEFAULT_MULTIPLIER = 5
MAX_MULTIPLIER = 10
RPC_HOLD_TIMEOUT = 7.0  # Consul's default: how long a request waits for a leader
TRAILING_LOGS = 10240  # Consul's raft_trailing_logs default
# Consul's raft_snapshot_threshold and raft_snapshot_interval defaults: every 30 s a server
# looks whether 16384 entries were applied since its last snapshot, and only then takes one.
SNAPSHOT_THRESHOLD = 16384
SNAPSHOT_INTERVAL = 30.0


def multiplier_of(config: Any) -> int:
    perf = getattr(config, "performance", None) or {}
    value = perf.get("raft_multiplier") or DEFAULT_MULTIPLIER
    return max(1, min(MAX_MULTIPLIER, int(value)))


def rpc_hold_timeout_of(config: Any) -> float:
    perf = getattr(config, "performance", None) or {}
    value = perf.get("rpc_hold_timeout")
    if value is None:
        return RPC_HOLD_TIMEOUT
    return float(parse_duration(value)) if isinstance(value, str) else float(value)


def raft_options(config: Any) -> Options:
    m = multiplier_of(config)
    settings = getattr(config, "settings", None) or {}
    threshold = int(settings.get("raft_snapshot_threshold") or SNAPSHOT_THRESHOLD)
    trailing = int(settings.get("raft_trailing_logs") or TRAILING_LOGS)
    return Options(election_timeout=ELECTION_UNIT * m, heartbeat_interval=HEARTBEAT_UNIT * m,
                   max_batch=256, max_inflight=16, snapshot_threshold=max(1, threshold),
                   trailing_logs=max(0, trailing))


def snapshot_interval_of(config: Any) -> float:
    settings = getattr(config, "settings", None) or {}
    value = settings.get("raft_snapshot_interval")
    if not value:
        return SNAPSHOT_INTERVAL
    return float(parse_duration(value)) if isinstance(value, str) else float(value)
