"""Request body decoding shared by handlers: JSON with Consul's error text."""

from __future__ import annotations

import json
import re
from typing import Any

from agent.errors import InvalidRequest
from gateway.http.protocol import Request

# Nesting deeper than this is refused. No Consul body comes near it, and it keeps json.loads,
# key normalisation, schema validation and error messages well inside Python's recursion limit.
MAX_DEPTH = 256
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UINT = re.compile(r"[0-9]+")  # Go's strconv.ParseUint: ASCII digits only, no sign or spaces
UINT64_LIMIT = 1 << 64


def json_body(request: Request, required: bool = True) -> Any:
    body = request.body
    if not body.strip():
        if required:
            raise InvalidRequest("Request decode failed: unexpected EOF")
        return None
    try:
        # Consul's decoder reads UTF-8 only (no UTF-16/32 detection, no BOM).
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"Request decode failed: invalid UTF-8: {exc.reason} "
                             f"at byte {exc.start}") from None
    try:
        # Like Go's json.Decoder, read the first value and ignore what follows it.
        value, _ = json.JSONDecoder().raw_decode(text, len(text) - len(text.lstrip()))
    except RecursionError:
        raise InvalidRequest("Request decode failed: exceeded max depth") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"Request decode failed: {go_json_error(text, exc)}") from None
    # Cheap C-speed pre-checks keep the walks off the common path.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
        raise InvalidRequest("Request decode failed: exceeded max depth")
    if _SURROGATE_ESCAPE.search(text):
        value = _replace_surrogates(value)
    return value


def go_json_error(text: str, exc: json.JSONDecodeError) -> str:
    """Go's encoding/json wording for the error, which clients and the reference answers show."""
    if exc.pos >= len(text.rstrip()):
        return "unexpected EOF"
    char = text[exc.pos]
    where = {"Expecting value": "looking for beginning of value",
             "Expecting property name enclosed in double quotes":
                 "looking for beginning of object key string",
             "Expecting ':' delimiter": "after object key",
             "Expecting ',' delimiter": "after object key:value pair"
             if _inside_object(text, exc.pos) else "after array element"}.get(exc.msg)
    if where is None:
        return f"invalid character {char!r} in JSON ({exc.msg})"
    return f"invalid character {char!r} {where}"


def _inside_object(text: str, pos: int) -> bool:
    """Whether the innermost open bracket before `pos` is an object's (strings ignored)."""
    stack = []
    in_string = escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return bool(stack) and stack[-1] == "{"


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _replace_surrogates(value: Any) -> Any:
    """Lone surrogates (`"\\ud800"`) become U+FFFD, as Go's decoder does: a str holding one
    cannot be encoded as UTF-8, so storing it would make every later read of it fail."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def flag(request: Request, name: str) -> bool:
    """A bare `?name` or `?name=true` style flag (anything but "false"/"0" counts as set)."""
    values = request.query.get(name)
    if values is None:
        return False
    return values[0].lower() not in ("false", "0")


def parse_uint64(text: str) -> int | None:
    """The value of `text` as Go's strconv.ParseUint(text, 10, 64) reads it, or None."""
    if not _UINT.fullmatch(text):
        return None
    value = int(text)
    return value if value < UINT64_LIMIT else None


def uint(request: Request, name: str, message: str) -> int | None:
    values = request.query.get(name)
    if values is None:
        return None
    value = parse_uint64(values[0])
    if value is None:
        raise InvalidRequest(message)
    return value
