"""Autopilot: the leader keeps the Raft configuration in line with the servers gossip knows,
one change at a time, with Consul's defaults (`autopilot` block).

- An alive server of this datacenter that is not in the configuration joins as a non-voter,
  replicates, and is promoted to voter once it has been healthy (heard from within
  `last_contact_threshold`, no more than `max_trailing_logs` behind) for
  `server_stabilization_time`.
- A server that left the pool (or was reaped) is removed.
- With `cleanup_dead_servers` (the default), failed servers are removed too, as long as they
  are fewer than half of the voters (Consul's rule: never remove a majority on a hunch).

`health()` is the view `/v1/operator/autopilot/health` answers with.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred

from agent.durations import go_duration, parse_duration
from agent.gossip.serf.events import MemberStatus
from agent.raft.consensus import ChangeKind

txaio.use_twisted()

DEFAULTS = {"cleanup_dead_servers": True, "last_contact_threshold": 0.2,
            "max_trailing_logs": 250, "min_quorum": 0, "server_stabilization_time": 10.0}


def stored_settings(stored: dict, fallback: dict) -> dict:
    """An operator's configuration (Consul's AutopilotConfig fields) as settings."""
    out = dict(fallback)
    for key, field in (("cleanup_dead_servers", "CleanupDeadServers"),
                       ("max_trailing_logs", "MaxTrailingLogs"), ("min_quorum", "MinQuorum"),
                       ("last_contact_threshold", "LastContactThreshold"),
                       ("server_stabilization_time", "ServerStabilizationTime")):
        value = stored.get(field)
        if value is None:
            continue
        out[key] = parse_duration(value) if isinstance(value, str) else value
    return out


def autopilot_settings(settings: dict) -> dict:
    """Consul's autopilot block with its defaults; durations in seconds."""
    raw = dict(settings.get("autopilot") or {})
    out = dict(DEFAULTS)
    for key in DEFAULTS:
        if key in raw and raw[key] is not None:
            value = raw[key]
            if key in ("last_contact_threshold", "server_stabilization_time") \
                    and isinstance(value, str):
                value = parse_duration(value)
            out[key] = value
    return out


class Autopilot:
    log = txaio.make_logger()

    def __init__(self, reactor, raft: Any, servers: Callable[[], dict], settings: dict,
                 *, version: str = "", stored: Callable[[], dict | None] = lambda: None
                 ) -> None:
        """`servers()` is the `ServerDirectory.servers` map (ID -> ServerMember);
        `settings` the agent configuration's, overridden by `stored()` (an operator's, from
        the replicated state) once there is one."""
        self._reactor = reactor
        self._raft = raft
        self._servers = servers
        self._configured = settings
        self._stored = stored
        self._version = version
        self._healthy_since: dict[str, float] = {}
        self._changing: Deferred | None = None

    @property
    def settings(self) -> dict:
        stored = self._stored()
        return stored_settings(stored, self._configured) if stored else self._configured

    # --- health -------------------------------------------------------------------------------

    def _server_health(self, now: float) -> dict[str, dict]:
        raft = self._raft
        progress = raft.peer_progress()
        members = self._servers()
        leader_index = raft.last_index
        out = {}
        config = raft.configuration
        for sid in sorted(config.servers):
            member = members.get(sid)
            status = member.status if member is not None else MemberStatus.NONE
            if sid == raft.server_id:
                match, contact = raft.last_index, 0.0
            else:
                match, contact = progress.get(sid, (0, float("inf")))
            healthy = (status == MemberStatus.ALIVE
                       and contact <= self.settings["last_contact_threshold"]
                       and leader_index - match <= self.settings["max_trailing_logs"])
            if healthy:
                self._healthy_since.setdefault(sid, now)
            else:
                self._healthy_since.pop(sid, None)
            out[sid] = {"member": member, "status": status, "match": match,
                        "contact": contact, "healthy": healthy,
                        "voter": sid in config.voters}
        return out

    def health(self) -> dict:
        now = self._reactor.seconds()
        raft = self._raft
        rows = self._server_health(now)
        servers = []
        for sid, h in rows.items():
            member = h["member"]
            since = self._healthy_since.get(sid)
            # The reactor's clock is the wall clock (epoch seconds) on a real reactor.
            stable = since if since is not None else now
            contact = h["contact"]
            servers.append({
                "ID": sid, "Name": member.name if member else raft.names.get(sid, ""),
                "Address": raft.addresses.get(sid, ""),
                "SerfStatus": str(h["status"]) if member else "none",
                "Version": self._version, "Leader": sid == raft.leader_id,
                "LastContact": go_duration(0 if contact == float("inf") and sid == raft.server_id
                                           else (contact if contact != float("inf") else 0)),
                "LastTerm": raft.term, "LastIndex": h["match"], "Healthy": h["healthy"],
                "Voter": h["voter"],
                "StableSince": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stable))})
        voters = [h for h in rows.values() if h["voter"]]
        healthy_voters = sum(1 for h in voters if h["healthy"])
        quorum = len(voters) // 2 + 1
        return {"Healthy": all(h["healthy"] for h in rows.values()),
                "FailureTolerance": max(0, healthy_voters - quorum), "Servers": servers}

    # --- reconcile ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        """One step toward the configuration the pool implies (the leader calls it on every
        change of the pool and periodically)."""
        raft = self._raft
        if self._changing is not None or not raft.is_ready_leader:
            return
        now = self._reactor.seconds()
        rows = self._server_health(now)
        members = self._servers()
        config = raft.configuration
        for sid, member in sorted(members.items()):
            if sid not in config.servers and member.status == MemberStatus.ALIVE:
                return self._change(ChangeKind.ADD_NONVOTER, sid, f"adding server {member.name}")
        for sid in sorted(config.servers - {raft.server_id}):
            member = members.get(sid)
            if member is None or member.status == MemberStatus.LEFT:
                name = member.name if member else raft.names.get(sid, sid)
                return self._change(ChangeKind.REMOVE, sid, f"removing server {name} (left)")
        if self.settings["cleanup_dead_servers"]:
            failed = [sid for sid in sorted(config.servers - {raft.server_id})
                      if members[sid].status == MemberStatus.FAILED]
            failed_voters = [sid for sid in failed if sid in config.voters]
            if failed and len(failed_voters) < len(config.voters) / 2:
                remaining = len(config.voters) - len(failed_voters)
                if remaining >= max(self.settings["min_quorum"], 1):
                    sid = failed[0]
                    return self._change(ChangeKind.REMOVE, sid,
                                        f"removing dead server {members[sid].name}")
        stabilization = self.settings["server_stabilization_time"]
        for sid in sorted(config.nonvoters):
            since = self._healthy_since.get(sid)
            if rows.get(sid, {}).get("healthy") and since is not None \
                    and now - since >= stabilization:
                return self._change(ChangeKind.PROMOTE, sid,
                                    f"promoting server {raft.names.get(sid, sid)} to voter")
        return None

    def _change(self, kind: ChangeKind, sid: str, what: str) -> None:
        self.log.info("autopilot: {what}", what=what)
        d = self._raft.change(kind, sid)
        self._changing = d

        def done(result: Any) -> None:
            self._changing = None
            if hasattr(result, "getErrorMessage"):
                self.log.info("autopilot: {what} did not happen: {why}", what=what,
                              why=result.getErrorMessage())
            else:
                self._reactor.callLater(0, self.reconcile)
        d.addBoth(done)
