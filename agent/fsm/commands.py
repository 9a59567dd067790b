"""The typed commands carried by log entries, and each one's JSON codec.

A command is a frozen value. Its type number, codec and FSM handler are registered together,
once, in `agent.fsm.table` (numbers are append-only: logs and snapshots written by one version
are read by the next); `agent.fsm.table.encode_command`/`decode_command` give the versioned
form the log stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.state import codec
from agent.structs import Check, KVEntry, Node, Service, Session

@dataclass(frozen=True, slots=True)
class Register:
    """Catalog register: a node, optionally one service, and checks."""
    node: Node
    service: Service | None = None
    checks: tuple[Check, ...] = ()
    skip_node_update: bool = False


@dataclass(frozen=True, slots=True)
class Deregister:
    """Remove a whole node, or one of its services, or one of its checks."""
    node: str
    service_id: str = ""
    check_id: str = ""


KV_OPS = ("set", "cas", "delete", "delete-cas", "delete-tree", "lock", "unlock")


@dataclass(frozen=True, slots=True)
class KVOperation:
    """One KV write (`op` in KV_OPS; "lock"/"unlock" name the session in `entry.session`), or,
    inside a `Txn`, any of Consul's transaction verbs (`expected_index` is its Index)."""
    op: str
    entry: KVEntry
    expected_index: int = 0


@dataclass(frozen=True, slots=True)
class SessionCreate:
    """Create a session (its ID is chosen by the leader before the entry is written)."""
    session: Session


@dataclass(frozen=True, slots=True)
class SessionDestroy:
    """Destroy a session, releasing or deleting the keys it holds."""
    id: str


@dataclass(frozen=True, slots=True)
class Txn:
    """KV operations applied at one index, all or nothing."""
    ops: tuple[KVOperation, ...]


@dataclass(frozen=True, slots=True)
class TombstoneReap:
    """Drop the KV tombstones left at or below `reap_index` (Consul's TombstoneRequest with
    op "reap"): the leader's tombstone GC issues it once they are older than the TTL."""
    reap_index: int


@dataclass(frozen=True, slots=True)
class AutopilotSetConfig:
    """Replace autopilot's configuration (Consul's AutopilotSetConfigRequest): `config` holds
    Consul's AutopilotConfig fields (durations as Go strings); with `cas`, only if the stored
    one's ModifyIndex is `cas` (0: only if none is stored yet)."""
    config: tuple[tuple[str, Any], ...]
    cas: int | None = None


@dataclass(frozen=True, slots=True)
class SessionTxn:
    """Create a session, run a KV transaction and destroy sessions, all at one index, all or
    nothing: what an etcd key with a TTL needs (its own session, taken in the same entry that
    writes the key, and the previous one let go), so no crash can leave a session holding
    nothing or a key without its session. Waypost's own command (Consul has no such entry)."""
    ops: tuple[KVOperation, ...]
    # Its ID is chosen by the leader before the entry is written; a "lock" op sent with an
    # empty session takes this one (the leader fills the ID in).
    create: Session | None = None
    destroy: tuple[str, ...] = ()  # destroyed after the transaction succeeded


@dataclass(frozen=True, slots=True)
class SessionTxnResult:
    """What a `SessionTxn` did: the session it created ("" if none) and the transaction's
    outcome (a failed one changed nothing, the session included)."""
    session: str
    outcome: Any


Command = (Register | Deregister | KVOperation | SessionCreate | SessionDestroy | Txn
           | TombstoneReap | SessionTxn)


def encode_register(c: Register) -> dict[str, Any]:
    return {"node": codec.encode_node(c.node),
            "service": None if c.service is None else codec.encode_service(c.service),
            "checks": [codec.encode_check(x) for x in c.checks],
            "skip_node_update": c.skip_node_update}


def decode_register(d: dict[str, Any]) -> Register:
    return Register(node=codec.decode_node(d["node"]),
                    service=None if d.get("service") is None else codec.decode_service(d["service"]),
                    checks=tuple(codec.decode_check(x) for x in d.get("checks", ())),
                    skip_node_update=d.get("skip_node_update", False))


def encode_deregister(c: Deregister) -> dict[str, Any]:
    return {"node": c.node, "service_id": c.service_id, "check_id": c.check_id}


def decode_deregister(d: dict[str, Any]) -> Deregister:
    return Deregister(node=d["node"], service_id=d.get("service_id", ""), check_id=d.get("check_id", ""))


def encode_kv(c: KVOperation) -> dict[str, Any]:
    return {"op": c.op, "entry": codec.encode_kv(c.entry), "expected_index": c.expected_index}


def decode_kv(d: dict[str, Any]) -> KVOperation:
    return KVOperation(op=d["op"], entry=codec.decode_kv(d["entry"]),
                       expected_index=d.get("expected_index", 0))


def encode_session_create(c: SessionCreate) -> dict[str, Any]:
    return {"session": codec.encode_session(c.session)}


def decode_session_create(d: dict[str, Any]) -> SessionCreate:
    return SessionCreate(session=codec.decode_session(d["session"]))


def encode_session_destroy(c: SessionDestroy) -> dict[str, Any]:
    return {"id": c.id}


def decode_session_destroy(d: dict[str, Any]) -> SessionDestroy:
    return SessionDestroy(id=d["id"])


def encode_txn(c: Txn) -> dict[str, Any]:
    return {"ops": [encode_kv(op) for op in c.ops]}


def decode_txn(d: dict[str, Any]) -> Txn:
    return Txn(ops=tuple(decode_kv(op) for op in d.get("ops", ())))


AUTOPILOT_FIELDS = ("CleanupDeadServers", "LastContactThreshold", "MaxTrailingLogs",
                   "MinQuorum", "ServerStabilizationTime", "RedundancyZoneTag",
                   "DisableUpgradeMigration", "UpgradeVersionTag")


def encode_autopilot(c: AutopilotSetConfig) -> dict[str, Any]:
    return {"config": dict(c.config), "cas": c.cas}


def decode_autopilot(d: dict[str, Any]) -> AutopilotSetConfig:
    config = d["config"]
    if not isinstance(config, dict) or set(config) - set(AUTOPILOT_FIELDS):
        raise ValueError("an autopilot configuration holds AutopilotConfig's fields only")
    cas = d.get("cas")
    if cas is not None and (not isinstance(cas, int) or isinstance(cas, bool) or cas < 0):
        raise ValueError(f"cas {cas!r} is not an index")
    return AutopilotSetConfig(tuple(sorted(config.items())), cas)


def encode_reap(c: TombstoneReap) -> dict[str, Any]:
    return {"reap_index": c.reap_index}


def decode_reap(d: dict[str, Any]) -> TombstoneReap:
    index = d["reap_index"]
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"reap_index {index!r} is not an index")
    return TombstoneReap(reap_index=index)



def encode_session_txn(c: SessionTxn) -> dict[str, Any]:
    return {"ops": [encode_kv(op) for op in c.ops],
            "create": None if c.create is None else codec.encode_session(c.create),
            "destroy": list(c.destroy)}


def decode_session_txn(d: dict[str, Any]) -> SessionTxn:
    create = d.get("create")
    destroy = d.get("destroy", ())
    if not all(isinstance(x, str) for x in destroy):
        raise ValueError("destroy must list session IDs")
    return SessionTxn(ops=tuple(decode_kv(op) for op in d.get("ops", ())),
                      create=None if create is None else codec.decode_session(create),
                      destroy=tuple(destroy))
