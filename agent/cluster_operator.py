"""The `OperatorControl` implementations (`agent.operator`): `ServerOperator` answers on a
server from its own log (a `RaftLog`, or a `-dev` server's one-member log) and sends what only
the leader may do to the leader over the server RPC; `RemoteOperator` is a client agent's,
asking any server. `OPERATOR_METHODS` are the server RPC methods both use (Consul's names where
Consul has the method, `Waypost.*` where it streams snapshots differently).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed

from agent.errors import InvalidRequest, NoLeader, NotFound, WaypostError
from agent.autopilot import autopilot_settings
from agent.durations import go_duration, parse_duration
from agent.fsm.commands import AutopilotSetConfig
from agent.raft.consensus import ChangeKind, InvalidChange

CALL_TIMEOUT = 30.0


def _servers_rows(log: Any) -> list[dict]:
    """The configuration as Consul's RaftServer rows."""
    config = getattr(log, "configuration", None)
    leader = getattr(log, "leader_id", None)
    if config is None or not hasattr(config, "voters"):  # a -dev server's one-member log
        sid = getattr(log, "_server_id", "")
        return [{"ID": sid, "Node": "", "Address": log.leader_address or "",
                 "Leader": log.is_leader, "ProtocolVersion": "3", "Voter": True}]
    rows = []
    for sid in sorted(config.servers):
        rows.append({"ID": sid, "Node": log.names.get(sid, ""),
                     "Address": log.addresses.get(sid, ""), "Leader": sid == leader,
                     "ProtocolVersion": "3", "Voter": sid in config.voters})
    return rows


class ServerOperator:
    """See the module docstring. `core` is the agent's `ServerCore`."""

    def __init__(self, core: Any, node_name: str) -> None:
        self._core = core
        self._node_name = node_name

    @property
    def _log(self) -> Any:
        return self._core.raft

    def _at_leader(self, here: Callable[[], Any], method: str, body: Any) -> Deferred:
        endpoints = self._core.endpoints
        if not self._core.replicated:
            return maybeDeferred(here)
        pool = self._core.rpc_pool

        def there(_: Any) -> Deferred:
            return pool.call(self._log.leader_address, method, body, CALL_TIMEOUT).addErrback(
                _remote_error)
        return endpoints.at_leader(here, there)

    # --- Raft ---------------------------------------------------------------------------------

    def raft_configuration(self, stale: bool = False) -> Deferred:
        log = self._log
        if not stale and not log.leader_address:
            return fail(NoLeader())
        rows = _servers_rows(log)
        for row in rows:
            if not row["Node"] and row["ID"] == self._core.config.node_id:
                row["Node"] = self._node_name
        # A -dev server's configuration is not a log entry of Raft's: Consul's -dev says 0.
        index = getattr(log, "configuration_index", 0)
        return succeed({"Servers": rows, "Index": index})

    def remove_peer(self, *, server_id: str = "", address: str = "") -> Deferred:
        if bool(server_id) == bool(address):
            return fail(InvalidRequest("Must specify either ?id with the server's ID or "
                                       "?address with IP:port of peer to remove"))

        def here() -> Deferred:
            log = self._log
            if not self._core.replicated:
                raise InvalidRequest("this server runs alone (-dev): it has no peer to remove")
            sid = server_id
            if address:
                found = [s for s in log.configuration.servers if log.addresses.get(s) == address]
                if not found:
                    raise NotFound(f"address \"{address}\" was not found in the Raft "
                                   "configuration")
                sid = found[0]
            elif sid not in log.configuration.servers:
                raise NotFound(f"id \"{sid}\" was not found in the Raft configuration")
            return log.change(ChangeKind.REMOVE, sid).addCallback(lambda _: None)
        return self._at_leader(here, "Operator.RaftRemovePeer",
                               {"ID": server_id, "Address": address}).addErrback(_invalid_change)

    def transfer_leader(self, server_id: str = "") -> Deferred:
        def here() -> Deferred:
            log = self._log
            if not self._core.replicated:
                raise InvalidRequest("this server runs alone (-dev): there is no other server "
                                     "to lead")
            if server_id and server_id not in log.configuration.voters:
                raise NotFound(f"id \"{server_id}\" is not a voter of the Raft configuration")
            target = log.transfer_leadership(server_id or None)
            return self._await_leader(target)
        return self._at_leader(here, "Operator.RaftTransferLeader",
                               {"ID": server_id}).addErrback(_invalid_change)

    def _await_leader(self, target: str) -> Deferred:
        log = self._log
        reactor = self._core.reactor
        deadline = reactor.seconds() + 2 * log.options.election_timeout + 1.0
        done: Deferred = Deferred()

        def look() -> None:
            if log.leader_id == target:
                done.callback({"Success": True, "NewLeader": {
                    "ID": target, "Address": log.addresses.get(target, "")}})
            elif reactor.seconds() > deadline:
                done.errback(WaypostError(f"leadership transfer to {target} did not complete"))
            else:
                reactor.callLater(0.02, look)
        look()
        return done

    # --- autopilot ----------------------------------------------------------------------------

    def autopilot_health(self) -> Deferred:
        def here() -> dict:
            autopilot = self._core.autopilot
            if autopilot is None:  # -dev: the one server is the whole, healthy cluster
                return {"Healthy": True, "FailureTolerance": 0, "Servers": [{
                    "ID": self._core.config.node_id, "Name": self._node_name,
                    "Address": self._core.config.server_rpc_addr, "SerfStatus": "alive",
                    "Version": _version(), "Leader": True, "LastContact": "0s",
                    "LastTerm": self._log.term, "LastIndex": self._log.last_index,
                    "Healthy": True, "Voter": True,
                    "StableSince": "1970-01-01T00:00:00Z"}]}
            return autopilot.health()
        return self._at_leader(here, "Operator.AutopilotServerHealth", {})

    def autopilot_configuration(self) -> Deferred:
        stored = self._core.store.autopilot
        s = autopilot_settings(self._core.config.settings)
        answer = {"CleanupDeadServers": bool(s["cleanup_dead_servers"]),
                  "LastContactThreshold": go_duration(s["last_contact_threshold"]),
                  "MaxTrailingLogs": int(s["max_trailing_logs"]),
                  "MinQuorum": int(s["min_quorum"]),
                  "ServerStabilizationTime": go_duration(s["server_stabilization_time"]),
                  "RedundancyZoneTag": "", "DisableUpgradeMigration": False,
                  "UpgradeVersionTag": "", "CreateIndex": 0, "ModifyIndex": 0}
        if stored:
            answer.update(stored)
        return succeed(answer)

    def set_autopilot_configuration(self, config: dict, cas: int | None = None) -> Deferred:
        try:
            command = _autopilot_command(config, cas)
        except InvalidRequest:
            return fail()

        def here() -> Deferred:
            return self._log.apply(command).addCallback(lambda r: bool(r.value))
        return self._at_leader(here, "Operator.AutopilotSetConfiguration",
                               {"Config": config, "CAS": cas})

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot_save(self, stale: bool = False) -> Deferred:
        def here() -> Deferred:
            log = self._log
            index, term = log.applied_index, log.term
            meta = {"index": index, "term": term,
                    "configuration": [{"Suffrage": "Voter" if r["Voter"] else "Nonvoter",
                                       "ID": r["ID"], "Address": r["Address"]}
                                      for r in _servers_rows(log)]}
            return log.capture_state().addCallback(lambda state: (state, meta))
        if stale:
            return maybeDeferred(here)
        return self._at_leader(here, "Waypost.SnapshotSave", {}).addCallback(_tuple)

    def snapshot_restore(self, state: bytes) -> Deferred:
        def here() -> Deferred:
            return self._log.apply_restore(state).addCallback(lambda _: None)
        return self._at_leader(here, "Waypost.SnapshotRestore", {"State": state}).addErrback(
            _bad_state)


def _autopilot_command(config: Any, cas: Any) -> AutopilotSetConfig:
    """Consul's AutopilotConfig body, checked field by field (400s name the field)."""
    if not isinstance(config, dict):
        raise InvalidRequest("Error parsing autopilot config: the body is not an object")
    kinds = {"CleanupDeadServers": bool, "DisableUpgradeMigration": bool,
             "MaxTrailingLogs": int, "MinQuorum": int, "LastContactThreshold": str,
             "ServerStabilizationTime": str, "RedundancyZoneTag": str,
             "UpgradeVersionTag": str}
    out = {}
    for field, kind in kinds.items():
        if field not in config or config[field] is None:
            continue
        value = config[field]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            what = {bool: "true or false", int: "an integer", str: "a string"}[kind]
            raise InvalidRequest(f"Error parsing autopilot config: {field} must be {what}")
        if kind is str and field.endswith(("Threshold", "Time")):
            try:
                parse_duration(value)
            except InvalidRequest as exc:
                raise InvalidRequest(f"Error parsing autopilot config: {field}: {exc}") \
                    from None
        out[field] = value
    if cas is not None and (not isinstance(cas, int) or isinstance(cas, bool) or cas < 0):
        raise InvalidRequest("cas must be an index")
    return AutopilotSetConfig(tuple(sorted(out.items())), cas)


def _tuple(value: Any) -> Any:
    # Over the RPC a (state, meta) pair arrives as a list.
    return tuple(value) if isinstance(value, list) else value


def _version() -> str:
    from agent.config.model import VERSION
    return VERSION


def _remote_error(failure):
    from agent.rpc.remote import _local_error
    return _local_error(failure)


def _invalid_change(failure):
    if failure.check(InvalidChange):
        raise InvalidRequest(str(failure.value))
    return failure


def _bad_state(failure):
    from agent.state.snapshot import SnapshotError
    if failure.check(SnapshotError):
        raise InvalidRequest(str(failure.value))
    return failure


# --- the server RPC ----------------------------------------------------------------------------

def operator_rpc(operator: ServerOperator, method: str, body: Any) -> Deferred | None:
    """Answer one of the operator methods on a server; None when `method` is not one."""
    body = body if isinstance(body, dict) else {}
    if method == "Operator.RaftGetConfiguration":
        return operator.raft_configuration(stale=bool(body.get("AllowStale")))
    if method == "Operator.RaftRemovePeer":
        return operator.remove_peer(server_id=str(body.get("ID") or ""),
                                    address=str(body.get("Address") or ""))
    if method == "Operator.RaftTransferLeader":
        return operator.transfer_leader(str(body.get("ID") or ""))
    if method == "Operator.AutopilotServerHealth":
        return operator.autopilot_health()
    if method == "Operator.AutopilotGetConfiguration":
        return operator.autopilot_configuration()
    if method == "Operator.AutopilotSetConfiguration":
        return operator.set_autopilot_configuration(body.get("Config"), body.get("CAS"))
    if method == "Waypost.SnapshotSave":
        return operator.snapshot_save(stale=bool(body.get("AllowStale"))).addCallback(list)
    if method == "Waypost.SnapshotRestore":
        state = body.get("State")
        if not isinstance(state, bytes):
            return fail(InvalidRequest("State: expected bytes"))
        return operator.snapshot_restore(state)
    return None


OPERATOR_METHODS = ("Operator.RaftGetConfiguration", "Operator.RaftRemovePeer",
                    "Operator.RaftTransferLeader", "Operator.AutopilotServerHealth",
                    "Operator.AutopilotGetConfiguration", "Operator.AutopilotSetConfiguration",
                    "Waypost.SnapshotSave",
                    "Waypost.SnapshotRestore")


class RemoteOperator:
    """A client agent's `OperatorControl`: each call goes to a server (any; it forwards)."""

    def __init__(self, remote: Any) -> None:
        self._remote = remote  # agent.rpc.remote.RemoteEndpoints

    def _call(self, method: str, body: dict) -> Deferred:
        return self._remote.call(method, body, CALL_TIMEOUT)

    def raft_configuration(self, stale: bool = False) -> Deferred:
        return self._call("Operator.RaftGetConfiguration", {"AllowStale": stale})

    def remove_peer(self, *, server_id: str = "", address: str = "") -> Deferred:
        return self._call("Operator.RaftRemovePeer", {"ID": server_id, "Address": address})

    def transfer_leader(self, server_id: str = "") -> Deferred:
        return self._call("Operator.RaftTransferLeader", {"ID": server_id})

    def autopilot_health(self) -> Deferred:
        return self._call("Operator.AutopilotServerHealth", {})

    def autopilot_configuration(self) -> Deferred:
        return self._call("Operator.AutopilotGetConfiguration", {})

    def set_autopilot_configuration(self, config: dict, cas: int | None = None) -> Deferred:
        return self._call("Operator.AutopilotSetConfiguration", {"Config": config, "CAS": cas})

    def snapshot_save(self, stale: bool = False) -> Deferred:
        return self._call("Waypost.SnapshotSave", {"AllowStale": stale}).addCallback(_tuple)

    def snapshot_restore(self, state: bytes) -> Deferred:
        return self._call("Waypost.SnapshotRestore", {"State": state})
