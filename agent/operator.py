"""What frontends may ask of the cluster's consensus: `facade.operator` (an `OperatorControl`).

The Raft configuration, removing a peer, moving leadership, autopilot's view of the servers'
health, and whole-cluster snapshots. A server agent answers from its own Raft (forwarding to
the leader where Consul's endpoint does); a client agent asks a server over the server RPC.
Every call returns a Deferred; errors are `agent.errors` exceptions (`NoLeader`,
`InvalidRequest` for a bad argument, `NotFound` for an unknown peer), which the HTTP layer
turns into Consul's status codes.

The JSON shapes are Consul 1.8.7's (api/operator_raft.go, api/operator_autopilot.go).
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred


class OperatorControl(Protocol):
    def raft_configuration(self, stale: bool = False) -> Deferred:
        """Fires with Consul's RaftConfigurationResponse:
        {"Servers": [{"ID", "Node", "Address", "Leader": bool, "ProtocolVersion": "3",
        "Voter": bool}], "Index": int} (servers ordered as Raft's configuration)."""

    def remove_peer(self, *, server_id: str = "", address: str = "") -> Deferred:
        """Remove one server from the Raft configuration, by ID or by "host:port" address
        (exactly one given). Fires with None; fails `NotFound` when no such peer."""

    def transfer_leader(self, server_id: str = "") -> Deferred:
        """Hand leadership to `server_id` (or to the most up-to-date voter when empty). Fires
        with {"Success": True, "NewLeader": {"ID", "Address"}} once the new leader is known."""

    def autopilot_health(self) -> Deferred:
        """Fires with Consul's OperatorHealthReply: {"Healthy": bool, "FailureTolerance": int,
        "Servers": [{"ID", "Name", "Address", "SerfStatus", "Version", "Leader": bool,
        "LastContact": "<Go duration>", "LastTerm": int, "LastIndex": int, "Healthy": bool,
        "Voter": bool, "StableSince": "<RFC 3339 time>"}]}."""

    def autopilot_configuration(self) -> Deferred:
        """Fires with Consul's AutopilotConfiguration: {"CleanupDeadServers": bool,
        "LastContactThreshold": "200ms", "MaxTrailingLogs": int, "MinQuorum": int,
        "ServerStabilizationTime": "10s", "RedundancyZoneTag": "", "DisableUpgradeMigration":
        bool, "UpgradeVersionTag": "", "CreateIndex": int, "ModifyIndex": int}."""

    def set_autopilot_configuration(self, config: dict, cas: int | None = None) -> Deferred:
        """Store an operator's autopilot configuration (Consul's AutopilotConfig fields; the
        ones given replace the agent configuration's) through the log; with `cas`, only if
        the stored one's ModifyIndex is `cas`. Fires with whether it was stored; fails
        `InvalidRequest` naming a bad field."""

    def snapshot_save(self, stale: bool = False) -> Deferred:
        """Fires with (state bytes, meta) of the whole cluster's state, taken on the leader
        (any server when `stale`): meta is {"index": int, "term": int}. The state bytes are
        opaque to the caller; the HTTP layer wraps them in the snapshot archive."""

    def snapshot_restore(self, state: bytes) -> Deferred:
        """Replace the whole cluster's state with `state` (bytes a `snapshot_save` gave),
        through the log, so every server restores it. Fires with None once committed and
        applied here; fails `InvalidRequest` when the state cannot be read."""
