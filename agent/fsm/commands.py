"""The typed commands carried by log entries, and their JSON form.

Type numbers are append-only: snapshots and logs written by one version are read by the next.
A command is a frozen value; `encode_command`/`decode_command` give the versioned JSON that the
log stores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from agent.errors import UnknownCommand
from agent.state import codec
from agent.structs import Check, KVEntry, Node, Service, Session

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Register:
    """Catalog register: a node, optionally one service, and checks."""
    TYPE = 1
    node: Node
    service: Service | None = None
    checks: tuple[Check, ...] = ()
    skip_node_update: bool = False


@dataclass(frozen=True, slots=True)
class Deregister:
    """Remove a whole node, or one of its services, or one of its checks."""
    TYPE = 2
    node: str
    service_id: str = ""
    check_id: str = ""


KV_OPS = ("set", "cas", "delete", "delete-cas", "delete-tree", "lock", "unlock")


@dataclass(frozen=True, slots=True)
class KVOperation:
    """One KV write (`op` in KV_OPS; "lock"/"unlock" name the session in `entry.session`), or,
    inside a `Txn`, any of Consul's transaction verbs (`expected_index` is its Index)."""
    TYPE = 3
    op: str
    entry: KVEntry
    expected_index: int = 0


@dataclass(frozen=True, slots=True)
class SessionCreate:
    """Create a session (its ID is chosen by the leader before the entry is written)."""
    TYPE = 4
    session: Session


@dataclass(frozen=True, slots=True)
class SessionDestroy:
    """Destroy a session, releasing or deleting the keys it holds."""
    TYPE = 5
    id: str


@dataclass(frozen=True, slots=True)
class Txn:
    """KV operations applied at one index, all or nothing."""
    TYPE = 6
    ops: tuple[KVOperation, ...]


Command = Register | Deregister | KVOperation | SessionCreate | SessionDestroy | Txn


def _encode_register(c: Register) -> dict[str, Any]:
    return {"node": codec.encode_node(c.node),
            "service": None if c.service is None else codec.encode_service(c.service),
            "checks": [codec.encode_check(x) for x in c.checks],
            "skip_node_update": c.skip_node_update}


def _decode_register(d: dict[str, Any]) -> Register:
    return Register(node=codec.decode_node(d["node"]),
                    service=None if d.get("service") is None else codec.decode_service(d["service"]),
                    checks=tuple(codec.decode_check(x) for x in d.get("checks", ())),
                    skip_node_update=d.get("skip_node_update", False))


def _encode_deregister(c: Deregister) -> dict[str, Any]:
    return {"node": c.node, "service_id": c.service_id, "check_id": c.check_id}


def _decode_deregister(d: dict[str, Any]) -> Deregister:
    return Deregister(node=d["node"], service_id=d.get("service_id", ""), check_id=d.get("check_id", ""))


def _encode_kv(c: KVOperation) -> dict[str, Any]:
    return {"op": c.op, "entry": codec.encode_kv(c.entry), "expected_index": c.expected_index}


def _decode_kv(d: dict[str, Any]) -> KVOperation:
    return KVOperation(op=d["op"], entry=codec.decode_kv(d["entry"]),
                       expected_index=d.get("expected_index", 0))


def _encode_session_create(c: SessionCreate) -> dict[str, Any]:
    return {"session": codec.encode_session(c.session)}


def _decode_session_create(d: dict[str, Any]) -> SessionCreate:
    return SessionCreate(session=codec.decode_session(d["session"]))


def _encode_session_destroy(c: SessionDestroy) -> dict[str, Any]:
    return {"id": c.id}


def _decode_session_destroy(d: dict[str, Any]) -> SessionDestroy:
    return SessionDestroy(id=d["id"])


def _encode_txn(c: Txn) -> dict[str, Any]:
    return {"ops": [_encode_kv(op) for op in c.ops]}


def _decode_txn(d: dict[str, Any]) -> Txn:
    return Txn(ops=tuple(_decode_kv(op) for op in d.get("ops", ())))


_CODECS: dict[int, tuple[type, Callable[[Any], dict], Callable[[dict], Any]]] = {}


def _register_codec(cls: type, encode: Callable, decode: Callable) -> None:
    if cls.TYPE in _CODECS:
        raise RuntimeError(f"command type {cls.TYPE} registered twice")
    _CODECS[cls.TYPE] = (cls, encode, decode)


_register_codec(Register, _encode_register, _decode_register)
_register_codec(Deregister, _encode_deregister, _decode_deregister)
_register_codec(KVOperation, _encode_kv, _decode_kv)
_register_codec(SessionCreate, _encode_session_create, _decode_session_create)
_register_codec(SessionDestroy, _encode_session_destroy, _decode_session_destroy)
_register_codec(Txn, _encode_txn, _decode_txn)


def encode_command(command: Command) -> bytes:
    _, encode, _ = _CODECS[command.TYPE]
    return json.dumps({"v": FORMAT_VERSION, "t": command.TYPE, "d": encode(command)},
                      separators=(",", ":")).encode()


def decode_command(data: bytes) -> Command:
    doc = json.loads(data)
    entry = _CODECS.get(doc.get("t"))
    if entry is None:
        raise UnknownCommand(f"unknown command type {doc.get('t')!r}")
    return entry[2](doc["d"])
