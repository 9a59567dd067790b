"""/v1/session/*: create, destroy, renew, info/<id>, node/<node>, list.

Bodies are decoded as Consul's (field names in any case, LockDelay as "15s" or nanoseconds,
small numbers meaning seconds); validation happens in the agent's session manager, whose
errors (500, as Consul answers them) carry Consul's texts. Reads block on the sessions table.
"""

from __future__ import annotations

from typing import Any

from agent.errors import InvalidRequest, WaypostError
from agent.facade import SESSIONS, Session, parse_duration
from agent.structs import SERF_CHECK_ID
from gateway.http.api import TEXT, VARY
from gateway.http.decode import json_body
from gateway.http.encode import go_duration
from gateway.http.protocol import Response
from gateway.http.results import Read

LOCK_DELAY_MIN_THRESHOLD = 1000  # Consul: a LockDelay below 1000ns is taken as seconds
DECODE_FAILED = "Request decode failed: "


def encode_session(s: Session) -> dict[str, Any]:
    """A session as Consul 1.8 shows it (checks are listed as NodeChecks)."""
    return {"ID": s.id, "Name": s.name, "Node": s.node,
            "LockDelay": round(s.lock_delay * 1e9), "Behavior": s.behavior,
            "TTL": go_duration(s.ttl) if s.ttl else "",
            "NodeChecks": list(s.checks) or None, "ServiceChecks": None,
            "CreateIndex": s.create_index, "ModifyIndex": s.modify_index}


def _type_error(field: str, value: Any, want: str) -> InvalidRequest:
    kind = {bool: "bool", str: "string", list: "array", dict: "object"}.get(type(value), "number")
    return InvalidRequest(f"{DECODE_FAILED}json: cannot unmarshal {kind} into Go struct field "
                          f"Session.{field} of type {want}")


def _string(fields: dict[str, Any], name: str, field: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _type_error(field, value, "string")
    return value


def _check_ids(fields: dict[str, Any]) -> list[str]:
    ids = [SERF_CHECK_ID] if "checks" not in fields else []
    for name, field in (("checks", "Checks"), ("nodechecks", "NodeChecks")):
        value = fields.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _type_error(field, value, "[]string")
        ids.extend(value)
    for item in fields.get("servicechecks") or []:
        if not isinstance(item, dict):
            raise _type_error("ServiceChecks", item, "structs.ServiceCheck")
        check_id = {k.lower(): v for k, v in item.items()}.get("id")
        if isinstance(check_id, str) and check_id:
            ids.append(check_id)
    return ids


def _lock_delay(value: Any) -> float:
    """Seconds, from a duration string or a number of nanoseconds (Consul's FixupLockDelay)."""
    if isinstance(value, str):
        try:
            nanos = round(parse_duration(value) * 1e9)
        except InvalidRequest:
            raise InvalidRequest(f"{DECODE_FAILED}time: invalid duration {value}") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        nanos = int(value)
    else:
        raise _type_error("LockDelay", value, "time.Duration")
    if nanos < LOCK_DELAY_MIN_THRESHOLD:
        nanos *= 1_000_000_000
    return nanos / 1e9


def _ttl(text: str) -> float:
    if not text:
        return 0.0
    try:
        return parse_duration(text)
    except InvalidRequest:
        raise WaypostError(f"Session TTL '{text}' invalid: time: invalid duration {text}") from None


def create(facade, request, params, arg):
    body = json_body(request, required=False)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidRequest(f"{DECODE_FAILED}json: cannot unmarshal array into Go value of type "
                             "structs.Session")
    fields = {k.lower(): v for k, v in body.items()}
    node = _string(fields, "node", "Node")
    if node == "":
        raise WaypostError("Must provide Node")
    behavior = _string(fields, "behavior", "Behavior") or ""
    lock_delay = _lock_delay(fields["lockdelay"]) if fields.get("lockdelay") is not None else 15.0
    d = facade.sessions.create(name=_string(fields, "name", "Name") or "", node=node,
                               checks=tuple(_check_ids(fields)), lock_delay=lock_delay,
                               behavior=behavior, ttl=_ttl(_string(fields, "ttl", "TTL") or ""))
    return d.addCallback(lambda session_id: {"ID": session_id})


def _require(value: str, message: str) -> None:
    if not value:
        raise InvalidRequest(message)


def destroy(facade, request, params, session_id: str):
    _require(session_id, "Missing session")
    return facade.sessions.destroy(session_id)


def renew(facade, request, params, session_id: str):
    _require(session_id, "Missing session")

    def answer(session: Session | None):
        if session is None:
            return Response(404, f"Session id '{session_id}' not found".encode(), [VARY],
                            content_type=TEXT)
        return [encode_session(session)]
    return facade.sessions.renew(session_id).addCallback(answer)


def info(facade, request, params, session_id: str):
    _require(session_id, "Missing session")

    def run(store):
        index, session = store.sessions.get(session_id)
        return index, [] if session is None else [encode_session(session)]
    return Read(run, tables=(SESSIONS,))


def node(facade, request, params, node_name: str):
    _require(node_name, "Missing node name")

    def run(store):
        index, sessions = store.sessions.node_sessions(node_name)
        return index, [encode_session(s) for s in sessions]
    return Read(run, tables=(SESSIONS,))


def list_all(facade, request, params, arg):
    def run(store):
        index, sessions = store.sessions.list()
        return index, [encode_session(s) for s in sessions]
    return Read(run, tables=(SESSIONS,))
