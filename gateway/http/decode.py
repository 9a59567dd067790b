"""Request body decoding shared by handlers: JSON with Consul's error text."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from agent.errors import InvalidRequest
from gateway.http.request import Request

# Nesting deeper than this is refused. No Consul body comes near it, and it keeps json.loads,
# key normalisation, schema validation and error messages well inside Python's recursion limit.
MAX_DEPTH = 256
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UINT = re.compile(r"[0-9]+")  # Go's strconv.ParseUint: ASCII digits only, no sign or spaces
UINT64_LIMIT = 1 << 64
UINT64_DIGITS = 20  # len(str(UINT64_LIMIT - 1)): a longer number (after leading zeros) is too big
# Go decodes a JSON number into at most a float64, so a number beyond its range fits no field
# of any Consul body. Past this many digits an integer is beyond it without converting it, which
# also keeps clear of Python's int-string limit (4,300 digits raise ValueError).
_MAX_NUMBER_DIGITS = 400
_FLOAT_MAX = sys.float_info.max


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
    numbers = _Numbers()
    try:
        # Like Go's json.Decoder, read the first value and ignore what follows it.
        value, _ = numbers.decoder().raw_decode(text, len(text) - len(text.lstrip()))
    except RecursionError:
        raise InvalidRequest("Request decode failed: exceeded max depth") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"Request decode failed: {go_json_error(text, exc)}") from None
    # Cheap C-speed pre-checks keep the walks off the common path.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
        raise InvalidRequest("Request decode failed: exceeded max depth")
    if _SURROGATE_ESCAPE.search(text):
        value = _replace_surrogates(value)
    if numbers.out_of_range:
        # After the surrogates went: the path may name a key, and the answer must encode.
        raise InvalidRequest(f"Request decode failed: {numbers.describe(value)}")
    return value


class _OutOfRange:
    """Stands in for a number no Go type can hold, until its path is known."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _Numbers:
    """Number parsing for one body: Go's rules, not Python's.

    Python's decoder takes NaN and Infinity, which are not JSON (Go refuses them); it turns
    1e400 into inf; and int() raises ValueError past 4,300 digits, which was a 500. Here such a
    number becomes a marker, and the caller reports the first one with its path.
    """

    def __init__(self) -> None:
        self.out_of_range: list[_OutOfRange] = []

    def decoder(self) -> json.JSONDecoder:
        return json.JSONDecoder(parse_int=self._int, parse_float=self._float,
                                parse_constant=_constant)

    def _mark(self, literal: str) -> _OutOfRange:
        marker = _OutOfRange(literal)
        self.out_of_range.append(marker)
        return marker

    def _int(self, literal: str) -> int | _OutOfRange:
        if len(literal) > _MAX_NUMBER_DIGITS:
            return self._mark(literal)
        value = int(literal)
        if abs(value) > _FLOAT_MAX:
            return self._mark(literal)
        return value

    def _float(self, literal: str) -> float | _OutOfRange:
        value = float(literal)
        return value if math.isfinite(value) else self._mark(literal)

    def describe(self, document: Any) -> str:
        """Go's words for the first out-of-range number, plus where it is."""
        marker = self.out_of_range[0]
        literal = marker.literal
        if len(literal) > 40:
            literal = f"{literal[:20]}... ({len(literal)} characters)"
        path = _path_to(document, marker)
        where = f'field "{path}"' if path else "Go value"
        return f"json: cannot unmarshal number {literal} into {where}: out of range"


def _constant(name: str) -> Any:
    # Python accepts NaN, Infinity and -Infinity; JSON (and Go) has no such values.
    if name.startswith("-"):
        raise InvalidRequest("Request decode failed: invalid character 'I' in numeric literal")
    raise InvalidRequest(f"Request decode failed: invalid character {name[0]!r} looking for "
                         "beginning of value")


def _path_to(document: Any, target: object) -> str:
    """The path (`Checks[0].TTL`) of `target` inside `document`, in document order."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        item, path = stack.pop()
        if item is target:
            return path
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}" if path else k) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(item))))
    return ""


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
    digits = text.lstrip("0")
    if len(digits) > UINT64_DIGITS:
        return None  # out of range, and never handed to int() (its digit limit is a 500)
    value = int(digits or "0")
    return value if value < UINT64_LIMIT else None


def uint(request: Request, name: str, message: str) -> int | None:
    values = request.query.get(name)
    if values is None:
        return None
    value = parse_uint64(values[0])
    if value is None:
        raise InvalidRequest(message)
    return value
