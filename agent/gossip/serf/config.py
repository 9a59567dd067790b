"""Serf's settings, with the values Consul 1.8.7 runs its LAN pool with.

Serf's own defaults (serf/config.go) except where Consul overrides them: reconnect timeout 72 h
(Consul's `reconnect_timeout` default), a dynamic queue limit (MinQueueDepth 4096), gossip every
200 ms on the LAN (500 ms on the WAN; `wan()` gives those). Times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

PROTOCOL_VERSION_MIN = 2
PROTOCOL_VERSION_MAX = 5
USER_EVENT_SIZE_LIMIT = 9 * 1024  # Serf's hard ceiling for one event (name + payload)


@dataclass(frozen=True, slots=True)
class SerfConfig:
    node_name: str
    tags: dict[str, str] = field(default_factory=dict)
    protocol_version: int = 4  # what Consul 1.8.7 speaks (its vsn bytes end ... 2, 5, 4)
    event_buffer: int = 512
    query_buffer: int = 512
    recent_intent_timeout: float = 300.0
    reap_interval: float = 15.0
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 72 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    queue_check_interval: float = 30.0
    max_queue_depth: int = 4096
    min_queue_depth: int = 4096  # > 0: the limit is max(this, 2 * members)
    broadcast_timeout: float = 5.0
    leave_propagate_delay: float = 1.0
    gossip_interval: float = 0.2
    retransmit_mult: int = 4
    query_timeout_mult: int = 16
    query_size_limit: int = 1024
    query_response_size_limit: int = 1024
    user_event_size_limit: int = 512

    def wan(self) -> "SerfConfig":
        return replace(self, gossip_interval=0.5)

    def __post_init__(self) -> None:
        if not PROTOCOL_VERSION_MIN <= self.protocol_version <= PROTOCOL_VERSION_MAX:
            raise ValueError(f"Serf protocol version {self.protocol_version} not in "
                             f"[{PROTOCOL_VERSION_MIN}, {PROTOCOL_VERSION_MAX}]")
        if self.user_event_size_limit > USER_EVENT_SIZE_LIMIT:
            raise ValueError(f"user event size limit exceeds {USER_EVENT_SIZE_LIMIT} bytes")
