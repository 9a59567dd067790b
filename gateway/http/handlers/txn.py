"""/v1/txn: KV operations applied atomically, with Consul's request and response shapes.

The body is a JSON list of `{"KV": {"Verb", "Key", "Value" (base64), "Flags", "Index",
"Session"}}`. 200 answers `{"Results": [...], "Errors": null}`; a transaction that failed
answers 409 with `{"Results": null, "Errors": [{"OpIndex", "What"}]}` and changed nothing.
Node, Service and Check operations are not supported yet (400). A body longer than
`limits.txn_max_req_len` (512 KiB) is refused with 413 before it is decoded, as in Consul.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from agent.errors import InvalidRequest
from agent.facade import MAX_TXN_OPS, TXN_WRITE_VERBS, KVOperation, Txn, TxnOutcome
from agent.structs import KVEntry
from gateway.http import encode
from gateway.http.api import TEXT, VARY
from gateway.http.decode import UINT64_LIMIT, json_body
from gateway.http.request import Response

PARSE_FAILED = "Failed to parse body: "
TXN_MAX_REQ_LEN = 512 * 1024  # Consul's default limits.txn_max_req_len
TXN_LIMIT_DOC = "https://www.consul.io/docs/agent/options.html#txn_max_req_len"
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class _TooLarge(Exception):
    """The request is refused with 413 and this text."""


def _kind(value: Any) -> str:
    return {bool: "bool", str: "string", list: "array", dict: "object"}.get(type(value), "number")


def _field(kv: dict[str, Any], name: str, want: type, go_type: str, default: Any) -> Any:
    value = kv.get(name.lower())
    if value is None:
        return default
    where = f"into Go struct field KVTxnOp.KV.{name} of type {go_type}"
    if want is int and isinstance(value, (int, float)) and not isinstance(value, bool):
        # A number that is no uint64 (negative, fractional, too big): Go names it.
        if isinstance(value, float) or not 0 <= value < UINT64_LIMIT:
            raise InvalidRequest(f"{PARSE_FAILED}json: cannot unmarshal number {value} {where}")
        return value
    if not isinstance(value, want) or isinstance(value, bool):
        raise InvalidRequest(f"{PARSE_FAILED}json: cannot unmarshal {_kind(value)} {where}")
    return value


def _value(kv: dict[str, Any]) -> bytes | None:
    text = _field(kv, "Value", str, "[]uint8", None)
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        good = _BASE64.match(text).end()
        raise InvalidRequest(f"{PARSE_FAILED}illegal base64 data at input byte {good}") from None


def parse_ops(request, max_value_size: int) -> list[KVOperation]:
    """The body as KV operations; raises InvalidRequest (400) or _TooLarge (413)."""
    try:
        body = json_body(request)
    except InvalidRequest as exc:
        raise InvalidRequest(PARSE_FAILED + str(exc).removeprefix("Request decode failed: "))
    if not isinstance(body, list):
        raise InvalidRequest(f"{PARSE_FAILED}json: cannot unmarshal {_kind(body)} into Go value "
                             "of type api.TxnOps")
    if len(body) > MAX_TXN_OPS:
        raise _TooLarge(f"Transaction contains too many operations ({len(body)} > {MAX_TXN_OPS})")
    ops = []
    for item in body:
        if not isinstance(item, dict):
            raise InvalidRequest(f"{PARSE_FAILED}json: cannot unmarshal {_kind(item)} into Go "
                                 "value of type api.TxnOp")
        op = {k.lower(): v for k, v in item.items()}
        if any(op.get(k) is not None for k in ("node", "service", "check")):
            raise InvalidRequest("Transactions support only KV operations in this agent")
        kv = op.get("kv")
        if kv is None:
            continue  # Consul skips an operation naming nothing
        if not isinstance(kv, dict):
            raise InvalidRequest(f"{PARSE_FAILED}json: cannot unmarshal {_kind(kv)} into Go "
                                 "struct field TxnOp.KV of type api.KVTxnOp")
        kv = {k.lower(): v for k, v in kv.items()}
        key = _field(kv, "Key", str, "string", "")
        value = _value(kv)
        if value is not None and len(value) > max_value_size:
            raise _TooLarge(f'Value for key "{key}" is too large '
                            f"({len(value)} > {max_value_size} bytes)")
        entry = KVEntry(key=key, value=value, flags=_field(kv, "Flags", int, "uint64", 0),
                        session=_field(kv, "Session", str, "string", ""))
        ops.append(KVOperation(_field(kv, "Verb", str, "api.KVOp", ""), entry,
                               _field(kv, "Index", int, "uint64", 0)))
    return ops


def _check_length(request, limit: int) -> None:
    """Consul's limits.txn_max_req_len, with its texts: a declared Content-Length is named;
    a chunked body is not. (Consul stops reading a chunked body after its first JSON value,
    so trailing bytes past the limit pass there; here the whole body counts.)"""
    size = len(request.body)
    if size <= limit:
        return
    if "content-length" in request.headers:
        raise _TooLarge(f"Request body({size} bytes) too large, max size: {limit} bytes. "
                        f"See {TXN_LIMIT_DOC}.")
    raise _TooLarge(f"Request body too large, max size: {limit} bytes. See {TXN_LIMIT_DOC}.")


def txn(facade, request, params, arg):
    limits = getattr(facade.config, "limits", None) or {}
    try:
        _check_length(request, limits.get("txn_max_req_len", TXN_MAX_REQ_LEN))
        ops = parse_ops(request, facade.config.kv_max_value_size)
    except _TooLarge as exc:
        return Response(413, str(exc).encode(), [VARY], content_type=TEXT)
    headers = [VARY]
    if not any(op.op in TXN_WRITE_VERBS for op in ops):
        # A read-only transaction is answered by the server without the log, as a read.
        headers.append((b"X-Consul-KnownLeader", b"true" if facade.known_leader() else b"false"))
        headers.append((b"X-Consul-LastContact", str(facade.last_contact_ms()).encode()))

    def answer(outcome: TxnOutcome) -> Response:
        if outcome.errors:
            body = {"Results": None,
                    "Errors": [{"OpIndex": e.op_index, "What": e.what} for e in outcome.errors]}
            return Response(409, encode.dumps(body, params.pretty), headers)
        body = {"Results": [{"KV": encode.kv(e)} for e in outcome.results or ()], "Errors": None}
        return Response(200, encode.dumps(body, params.pretty), headers)
    return facade.write(Txn(tuple(ops))).addCallback(lambda r: answer(r.value))
