"""SWIM's tunables and the one formula that depends only on them (push-pull scaling).

The defaults are memberlist 0.2.2's DefaultLANConfig, which Consul 1.8.7 uses unchanged for its
LAN pool; `wan()` and `local()` are DefaultWANConfig and DefaultLocalConfig. Durations are float
seconds. Nothing here knows about sockets or clocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

# memberlist's protocol range: 3 added TCP pings, 4 nacks, 5 the CRC envelope. Consul speaks 2.
PROTOCOL_VERSION_MIN = 1
PROTOCOL_VERSION_MAX = 5
# Serf's delegate protocol range; Consul 1.8.7 runs Serf protocol 4.
DELEGATE_VERSION_MIN = 2
DELEGATE_VERSION_MAX = 5

COMPOUND_HEADER_OVERHEAD = 2  # memberlist's assumed compound header cost
COMPOUND_OVERHEAD = 2  # per part: its 2-byte length
USER_MSG_OVERHEAD = 1  # the type byte in front of a user payload

# Above this many members the push-pull interval grows (memberlist's pushPullScaleThreshold),
# so full-state exchanges do not saturate the network.
PUSH_PULL_SCALE_THRESHOLD = 32


@dataclass(frozen=True, slots=True)
class SwimConfig:
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    retransmit_mult: int = 4
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    push_pull_interval: float = 30.0
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    awareness_max_multiplier: int = 8
    disable_tcp_pings: bool = False
    udp_buffer_size: int = 1400
    # Bytes the adapter adds to every packet (the encryption envelope when gossip is encrypted);
    # memberlist subtracts it from the room left for piggybacked broadcasts.
    packet_overhead: int = 0
    dead_node_reclaim_time: float = 0.0  # 0: a dead node's name cannot move to a new address
    protocol_version: int = 2
    delegate_version: int = 4
    delegate_min: int = DELEGATE_VERSION_MIN
    delegate_max: int = DELEGATE_VERSION_MAX

    def __post_init__(self) -> None:
        if self.probe_interval <= 0 or self.probe_timeout <= 0 or self.gossip_interval <= 0:
            raise ValueError("probe_interval, probe_timeout and gossip_interval must be > 0")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise ValueError("suspicion multipliers must be >= 1")
        if self.awareness_max_multiplier < 1 or self.retransmit_mult < 1:
            raise ValueError("awareness_max_multiplier and retransmit_mult must be >= 1")
        if not PROTOCOL_VERSION_MIN <= self.protocol_version <= PROTOCOL_VERSION_MAX:
            raise ValueError(f"protocol_version must be in [{PROTOCOL_VERSION_MIN}, "
                             f"{PROTOCOL_VERSION_MAX}]")

    @classmethod
    def lan(cls) -> SwimConfig:
        return cls()

    @classmethod
    def wan(cls) -> SwimConfig:
        return replace(cls(), suspicion_mult=6, push_pull_interval=60.0, probe_timeout=3.0,
                       probe_interval=5.0, gossip_nodes=4, gossip_interval=0.5,
                       gossip_to_the_dead_time=60.0)

    @classmethod
    def local(cls) -> SwimConfig:
        return replace(cls(), indirect_checks=1, retransmit_mult=2, suspicion_mult=3,
                       push_pull_interval=15.0, probe_timeout=0.2, probe_interval=1.0,
                       gossip_interval=0.1, gossip_to_the_dead_time=15.0)

    def vsn(self) -> tuple[int, int, int, int, int, int]:
        """The six version bytes this node advertises in its alive messages."""
        return (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX, self.protocol_version,
                self.delegate_min, self.delegate_max, self.delegate_version)


def push_pull_scale(interval: float, n: int) -> float:
    """The push-pull period for `n` members: one more `interval` per doubling past 32."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1.0
    return multiplier * interval
