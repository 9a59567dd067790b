"""/v1/session/*: create, destroy, renew, info/<id>, node/<node>, list.

Bodies are decoded as Consul 1.8.7 decodes them: field names in any case, unknown ones ignored,
its type-error texts (400), LockDelay as "15s" or nanoseconds (small numbers meaning seconds),
and its defaults and backwards-compatible fix-up of the check lists (`_check_lists`). The rules
(a known node, checks that exist and are not critical, TTL range, behavior) are the session
manager's, whose errors (500, as Consul answers them) carry Consul's texts. Reads block on the
sessions table.
"""

from __future__ import annotations

from typing import Any

from agent.errors import InvalidRequest, WaypostError
from agent.facade import (Session, queries, SessionCreate, SessionDestroy, SessionRenew,
                          parse_duration)
from agent.structs import SERF_CHECK_ID, ServiceCheck
from gateway.http.api import TEXT, VARY
from gateway.http.decode import UINT64_LIMIT, json_body
from gateway.http.encode import go_duration
from gateway.http.request import Response
from gateway.http.results import Read

LOCK_DELAY_MIN_THRESHOLD = 1000  # Consul: a LockDelay below 1000ns is taken as seconds
DECODE_FAILED = "Request decode failed: "
# Go's name for the value Consul decodes a session body into, as its errors spell it.
BODY_TYPE = "struct { LockDelay interface {}; *structs.Alias }"
_INT64 = 1 << 63
_NANOS = 1_000_000_000
_KINDS = {bool: "bool", str: "string", list: "array", dict: "object"}


def encode_session(s: Session) -> dict[str, Any]:
    """A session as Consul 1.8.7 shows it: null lists where none were given, and the legacy
    Checks only when it holds any."""
    out: dict[str, Any] = {
        "ID": s.id, "Name": s.name, "Node": s.node,
        "LockDelay": round(s.lock_delay * _NANOS), "Behavior": s.behavior,
        "TTL": go_duration(s.ttl) if s.ttl else "",
        "NodeChecks": None if s.checks is None else list(s.checks),
        "ServiceChecks": None if s.service_checks is None else
        [{"ID": c.id, "Namespace": c.namespace} for c in s.service_checks]}
    if s.legacy_checks:
        out["Checks"] = list(s.legacy_checks)
    out["CreateIndex"] = s.create_index
    out["ModifyIndex"] = s.modify_index
    return out


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), "number")


def _type_error(field: str, value: Any, want: str) -> InvalidRequest:
    return InvalidRequest(f"{DECODE_FAILED}json: cannot unmarshal {_kind(value)} into Go struct "
                          f"field {field} of type {want}")


def _string(fields: dict[str, Any], name: str, field: str, want: str = "string") -> str | None:
    """A string field; `field` is Go's path to it (".Name", "ServiceCheck.ServiceChecks.ID")."""
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _type_error(field, value, want)
    return value


def _strings(value: Any, field: str, item_type: str, default: tuple[str, ...]) -> list[str]:
    """A list of IDs decoded over Consul's default list, as Go does: a null item keeps the
    default's item at its position (or is "")."""
    if not isinstance(value, list):
        raise _type_error(f".{field}", value, f"[]{item_type}")
    out = []
    for position, item in enumerate(value):
        if item is None:
            item = default[position] if position < len(default) else ""
        elif not isinstance(item, str):
            raise _type_error(f".{field}", item, item_type)
        out.append(item)
    return out


def _service_checks(value: Any) -> tuple[ServiceCheck, ...]:
    if not isinstance(value, list):
        raise _type_error(".ServiceChecks", value, "[]structs.ServiceCheck")
    out = []
    for item in value:
        if item is None:
            out.append(ServiceCheck(""))
            continue
        if not isinstance(item, dict):
            raise _type_error(".ServiceChecks", item, "structs.ServiceCheck")
        fields = {k.lower(): v for k, v in item.items()}
        check_id = _string(fields, "id", "ServiceCheck.ServiceChecks.ID")
        namespace = _string(fields, "namespace", "ServiceCheck.ServiceChecks.Namespace")
        out.append(ServiceCheck(check_id or "", namespace or ""))
    return tuple(out)


def _check_lists(fields: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...] | None,
                                                  tuple[ServiceCheck, ...] | None]:
    """(legacy Checks, NodeChecks, ServiceChecks) as Consul 1.8.7 keeps them.

    Both Checks and NodeChecks default to serfHealth, then its fixupEmptySessionChecks runs:
    an empty (or null) Checks empties NodeChecks, a Checks of just serfHealth is dropped in
    favour of NodeChecks, and an empty NodeChecks drops Checks. ServiceChecks has no default.
    """
    default = (SERF_CHECK_ID,)
    legacy: list[str] | None = list(default)
    node: list[str] | None = list(default)
    if "checks" in fields:
        value = fields["checks"]
        legacy = None if value is None else _strings(value, "Checks", "types.CheckID", default)
    if "nodechecks" in fields:
        value = fields["nodechecks"]
        node = None if value is None else _strings(value, "NodeChecks", "string", default)
    service = fields.get("servicechecks")
    service_checks = None if service is None else _service_checks(service)
    if not legacy:
        node = []
    elif legacy == [SERF_CHECK_ID] or not node:
        legacy = None
    return (tuple(legacy or ()), None if node is None else tuple(node), service_checks)


def _go_int64(value: int) -> int:
    """`value` wrapped to Go's int64, as Go's arithmetic on time.Duration wraps."""
    return (value + _INT64) % (2 * _INT64) - _INT64


def _go_duration_error(text: str, exc: InvalidRequest) -> str:
    """Go's time.ParseDuration wording for why `text` is not a duration."""
    reason = str(exc).rpartition(": ")[2] if ": " in str(exc) else ""
    if reason == "missing unit":
        return f'time: missing unit in duration "{text}"'
    if reason.startswith("unknown unit "):
        return f'time: unknown unit {reason.removeprefix("unknown unit ")} in duration "{text}"'
    return f'time: invalid duration "{text}"'


def _signed_duration_nanos(text: str) -> int:
    """Nanoseconds in a Go duration string, which may be negative."""
    negative = text.startswith("-")
    body = text[1:] if text[:1] in "+-" and text else text
    try:
        nanos = round(parse_duration(body) * _NANOS)
    except InvalidRequest as exc:
        raise InvalidRequest(DECODE_FAILED + _go_duration_error(text, exc)) from None
    return -nanos if negative else nanos


def _lock_delay(value: Any) -> float:
    """Seconds, as Consul's FixupLockDelay reads the value: a duration string or nanoseconds,
    and below 1000ns a count of seconds. Go's int64 conversions are kept (a number out of its
    range becomes math.MinInt64, times a second wraps to 0), and any other JSON type is 0."""
    if isinstance(value, str):
        nanos = _signed_duration_nanos(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        # Numbers out of float64's range never get here: json_body refuses them (400).
        nanos = int(value) if -_INT64 <= value < _INT64 else -_INT64
    else:
        return 0.0
    if nanos < LOCK_DELAY_MIN_THRESHOLD:
        nanos = _go_int64(nanos * _NANOS)
    return nanos / _NANOS


def _ttl(text: str) -> float:
    if not text:
        return 0.0
    try:
        return _signed_duration_nanos(text) / _NANOS
    except InvalidRequest as exc:
        reason = str(exc).removeprefix(DECODE_FAILED)
        raise WaypostError(f"Session TTL '{text}' invalid: {reason}") from None


def _index(fields: dict[str, Any], name: str, field: str) -> None:
    """CreateIndex/ModifyIndex are decoded (and then ignored) as Consul decodes them."""
    value = fields.get(name)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _type_error(f".{field}", value, "uint64")
    if value != int(value) or not 0 <= value < UINT64_LIMIT:
        raise InvalidRequest(f"{DECODE_FAILED}json: cannot unmarshal number {value} into Go "
                             f"struct field .{field} of type uint64")


def create(facade, request, params, arg):
    body = json_body(request, required=False)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidRequest(f"{DECODE_FAILED}json: cannot unmarshal {_kind(body)} into Go value "
                             f"of type {BODY_TYPE}")
    fields = {k.lower(): v for k, v in body.items()}
    node = _string(fields, "node", ".Node")
    if node == "":
        raise WaypostError("Must provide Node")
    name = _string(fields, "name", ".Name") or ""
    behavior = _string(fields, "behavior", ".Behavior", "structs.SessionBehavior") or ""
    ttl_text = _string(fields, "ttl", ".TTL") or ""
    _string(fields, "id", ".ID")
    _index(fields, "createindex", "CreateIndex")
    _index(fields, "modifyindex", "ModifyIndex")
    legacy, node_checks, service_checks = _check_lists(fields)
    lock_delay = _lock_delay(fields["lockdelay"]) if fields.get("lockdelay") is not None else 15.0
    node = facade.config.node_name if node is None else node
    session = Session(id="", name=name, node=node, checks=node_checks, lock_delay=lock_delay,
                      behavior=behavior, ttl=_ttl(ttl_text), service_checks=service_checks,
                      legacy_checks=legacy)
    return facade.write(SessionCreate(session)).addCallback(lambda r: {"ID": r.value})


def _require(value: str, message: str) -> None:
    if not value:
        raise InvalidRequest(message)


def destroy(facade, request, params, session_id: str):
    _require(session_id, "Missing session")
    return facade.write(SessionDestroy(session_id)).addCallback(lambda r: True)


def renew(facade, request, params, session_id: str):
    _require(session_id, "Missing session")

    def answer(session: Session | None):
        if session is None:
            return Response(404, f"Session id '{session_id}' not found".encode(), [VARY],
                            content_type=TEXT)
        return [encode_session(session)]
    return facade.write(SessionRenew(session_id)).addCallback(lambda r: answer(r.value))


def _sessions(rows) -> list:
    return [encode_session(s) for s in rows]


def info(facade, request, params, session_id: str):
    _require(session_id, "Missing session")
    return Read(queries.SessionGet(session_id), _sessions)


def node(facade, request, params, node_name: str):
    _require(node_name, "Missing node name")
    return Read(queries.SessionNode(node_name), _sessions)


def list_all(facade, request, params, arg):
    return Read(queries.SessionList(), _sessions)
