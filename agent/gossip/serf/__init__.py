"""Serf above SWIM: Lamport-ordered membership intents, member tags, user events and queries,
on serf 0.9.x's wire format (as Consul 1.8.7 uses it).

Modules: `messages`/`codec` (the bytes, on the shared `agent.gossip.gomsgpack` rules),
`tags`/`consul_tags` (node meta), `lamport`, `buffers` (de-duplication rings), `members`
(status table and intents), `queries`, `internal` (`_serf_*` queries, keyring rotation),
`events` (what comes out), `errors`, `state` (the `Serf` state machine tying them together;
its broadcasts wait in memberlist's queue, `agent.gossip.broadcasts`).
"""

from agent.gossip.serf.config import SerfConfig
from agent.gossip.serf.errors import SerfDecodeError, SerfError
from agent.gossip.serf.state import Serf, SerfState

__all__ = ["Serf", "SerfConfig", "SerfDecodeError", "SerfError", "SerfState"]
