"""consul-template's helper functions (no data needed), shared by both template syntaxes.

Owns: ``toLower``, ``join``, ``split``, ``replaceAll``, ``contains``, ``byTag``, ``parseJSON``,
``toJSON`` and friends, with consul-template's argument order, which puts the piped value last
(``{{ .Tags | join "," }}``); and `go_time_format`, Go's reference-time layouts for
``timestamp``.
"""

from __future__ import annotations

import base64
import calendar
import dataclasses
import hashlib
import json
import re
import time as time_module
from collections.abc import Callable
from typing import Any

from plugins.template.gotemplate_funcs import (
    TemplateFuncError,
    category,
    go_sprintf,
    go_str,
)

# --- consul-template helpers ------------------------------------------------------------

def _text(value: Any) -> str:
    return go_str(value) if not isinstance(value, str) else value


def to_title(s: str) -> str:
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), s)


def join(sep: str, items: Any) -> str:
    return sep.join(_text(i) for i in items)


def split(sep: str, s: str) -> list[str]:
    s = s.strip()
    if not s:
        return []
    return list(s) if sep == "" else s.split(sep)


def replace_all(old: str, new: str, s: str) -> str:
    return s.replace(old, new)


def contained_in(items: Any, value: Any) -> bool:
    """consul-template's ``in``: is ``value`` an element of a list, or a substring?"""
    if isinstance(items, str):
        return isinstance(value, str) and value in items
    if isinstance(items, (list, tuple)):
        return any(category(i) == category(value) and i == value for i in items)
    return False


def contains(value: Any, items: Any) -> bool:
    return contained_in(items, value)


def _contains_some(want_all: bool, invert: bool) -> Callable[[Any, Any], bool]:
    def check(values: Any, items: Any) -> bool:
        hits = [contained_in(items, v) != invert for v in values]
        return all(hits) if want_all else any(hits)
    return check


def parse_json(s: str) -> Any:
    if s == "":
        return {}
    try:
        return json.loads(s)
    except ValueError as exc:
        raise TemplateFuncError(f"parseJSON: {exc}") from None


def plain(value: Any) -> Any:
    """Values as Go's JSON encoder orders them: records keep their field order, map keys
    are sorted; tuples become lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _go_json(text: str) -> str:
    # Go's encoder escapes <, > and & for safe embedding in HTML.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def to_json(value: Any) -> str:
    return _go_json(json.dumps(plain(value), separators=(",", ":"), ensure_ascii=False))


def to_json_pretty(value: Any) -> str:
    return _go_json(json.dumps(plain(value), indent=2, ensure_ascii=False))


def by_tag(services: Any) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for service in services or ():
        tags = getattr(service, "Tags", None)
        if tags is None:
            raise TemplateFuncError(f"byTag: wrong argument type {type(service).__name__}")
        for tag in tags:
            grouped.setdefault(tag, []).append(service)
    return grouped


def by_key(pairs: Any) -> dict[str, dict[str, Any]]:
    """KV pairs grouped by their first path segment, keyed by the rest (``tree`` + ``byKey``)."""
    grouped: dict[str, dict[str, Any]] = {}
    for pair in pairs or ():
        top, _, rest = pair.Key.partition("/")
        if rest:
            grouped.setdefault(top, {})[rest] = dataclasses.replace(pair, Key=rest)
    return grouped


def parse_int(s: str) -> int:
    if s == "":
        return 0
    if not re.fullmatch(r"[+-]?[0-9]+", s):  # Go takes no blanks or underscores here
        raise TemplateFuncError(f'parseInt: invalid syntax: "{s}"')
    return int(s, 10)


def parse_float(s: str) -> float:
    try:
        return float(s) if s else 0.0
    except ValueError:
        raise TemplateFuncError(f'parseFloat: invalid syntax: "{s}"') from None


def parse_bool(s: str) -> bool:
    if s in ("", "0", "f", "F", "false", "FALSE", "False"):
        return False
    if s in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    raise TemplateFuncError(f'parseBool: invalid syntax: "{s}"')


def _go_replacement(repl: str) -> str:
    # Go writes $1 / ${1} / ${name}; Python wants \g<1> / \g<name>.
    repl = repl.replace("\\", "\\\\")
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: f"\\g<{m.group(1) or m.group(2)}>", repl)


def regex_replace_all(pattern: str, repl: str, s: str) -> str:
    return re.sub(pattern, _go_replacement(repl), s)


def regex_match(pattern: str, s: str) -> bool:
    return re.search(pattern, s) is not None


def _arith(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    # consul-template's math helpers take the piped value last: {{ 10 | subtract 3 }} is 7.
    def apply(b: Any, a: Any) -> Any:
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
            raise TemplateFuncError(f"unknown type for arithmetic: {category(a)}, {category(b)}")
        return op(a, b)
    return apply


def _divide(a: Any, b: Any) -> Any:
    if b == 0:
        raise TemplateFuncError("division by zero")
    if isinstance(a, int) and isinstance(b, int):
        return int(a / b)  # Go truncates toward zero
    return a / b


def _modulo(a: Any, b: Any) -> Any:
    if not (isinstance(a, int) and isinstance(b, int)) or b == 0:
        raise TemplateFuncError("modulo needs two integers, the second non-zero")
    return abs(a) % abs(b) * (1 if a >= 0 else -1)


def loop(*args: Any) -> list[int]:
    if len(args) == 1:
        return list(range(int(args[0])))
    if len(args) == 2:
        return list(range(int(args[0]), int(args[1])))
    raise TemplateFuncError(f"loop: wrong number of arguments, expected 1 or 2, but got {len(args)}")


def indent(spaces: int, s: str) -> str:
    if spaces < 0:
        raise TemplateFuncError("indent value must be a positive integer")
    pad = " " * spaces
    return "".join(pad + line if line not in ("\n", "") else line
                   for line in s.splitlines(keepends=True))


def explode(pairs: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for pair in pairs:
        node = tree
        *parents, last = pair.Key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TemplateFuncError(f"explode: not a map: {pair.Key!r}")
        if last:
            node[last] = pair.Value
    return tree


def _b64decode(s: str, urlsafe: bool = False) -> str:
    try:
        data = base64.urlsafe_b64decode(s) if urlsafe else base64.b64decode(s, validate=True)
    except ValueError as exc:
        raise TemplateFuncError(f"base64Decode: {exc}") from None
    return data.decode("utf-8", "surrogateescape")


def _bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


HELPERS: dict[str, Callable[..., Any]] = {
    "toLower": str.lower, "toUpper": str.upper, "toTitle": to_title,
    "join": join, "split": split, "replaceAll": replace_all,
    "contains": contains, "in": contained_in,
    "containsAll": _contains_some(True, False), "containsAny": _contains_some(False, False),
    "containsNone": _contains_some(True, True), "containsNotAll": _contains_some(False, True),
    "trimSpace": str.strip,
    "trim": lambda cutset, s: s.strip(cutset),
    "trimPrefix": lambda prefix, s: s[len(prefix):] if prefix and s.startswith(prefix) else s,
    "trimSuffix": lambda suffix, s: s[:-len(suffix)] if suffix and s.endswith(suffix) else s,
    "parseJSON": parse_json, "toJSON": to_json, "toJSONPretty": to_json_pretty,
    "byTag": by_tag, "byKey": by_key, "sprintf": go_sprintf,
    "parseInt": parse_int, "parseFloat": parse_float, "parseBool": parse_bool,
    "regexMatch": regex_match, "regexReplaceAll": regex_replace_all,
    "add": _arith(lambda a, b: a + b), "subtract": _arith(lambda a, b: a - b),
    "multiply": _arith(lambda a, b: a * b), "divide": _arith(_divide),
    "modulo": _arith(_modulo),
    "loop": loop, "indent": indent, "explode": explode,
    "base64Encode": lambda s: base64.b64encode(_bytes(s)).decode(),
    "base64Decode": _b64decode,
    "base64URLEncode": lambda s: base64.urlsafe_b64encode(_bytes(s)).decode(),
    "base64URLDecode": lambda s: _b64decode(s, urlsafe=True),
    "sha256Hex": lambda s: hashlib.sha256(_bytes(s)).hexdigest(),
}


# --- Go time layouts (timestamp) --------------------------------------------------------

def _pad(n: int, width: int = 2) -> str:
    return str(n).zfill(width)


_LAYOUT: list[tuple[str, Callable[[time_module.struct_time], str]]] = [
    ("January", lambda t: calendar.month_name[t.tm_mon]),
    ("Jan", lambda t: calendar.month_abbr[t.tm_mon]),
    ("Monday", lambda t: calendar.day_name[t.tm_wday]),
    ("Mon", lambda t: calendar.day_abbr[t.tm_wday]),
    ("MST", lambda t: "UTC"), ("2006", lambda t: _pad(t.tm_year, 4)),
    ("002", lambda t: _pad(t.tm_yday, 3)), ("01", lambda t: _pad(t.tm_mon)),
    ("02", lambda t: _pad(t.tm_mday)), ("03", lambda t: _pad((t.tm_hour + 11) % 12 + 1)),
    ("04", lambda t: _pad(t.tm_min)), ("05", lambda t: _pad(t.tm_sec)),
    ("06", lambda t: _pad(t.tm_year % 100)), ("_2", lambda t: str(t.tm_mday).rjust(2)),
    ("15", lambda t: _pad(t.tm_hour)), ("1", lambda t: str(t.tm_mon)),
    ("2", lambda t: str(t.tm_mday)), ("3", lambda t: str((t.tm_hour + 11) % 12 + 1)),
    ("4", lambda t: str(t.tm_min)), ("5", lambda t: str(t.tm_sec)),
    ("PM", lambda t: "PM" if t.tm_hour >= 12 else "AM"),
    ("pm", lambda t: "pm" if t.tm_hour >= 12 else "am"),
    # Times are UTC, so every zone form is the zero offset.
    ("Z07:00:00", lambda t: "Z"), ("Z070000", lambda t: "Z"), ("Z07:00", lambda t: "Z"),
    ("Z0700", lambda t: "Z"), ("Z07", lambda t: "Z"), ("-07:00:00", lambda t: "+00:00:00"),
    ("-070000", lambda t: "+000000"), ("-07:00", lambda t: "+00:00"),
    ("-0700", lambda t: "+0000"), ("-07", lambda t: "+00"),
]
_FRACTION = re.compile(r"[.,](0+|9+)(?![0-9])")


def go_time_format(layout: str, seconds: float) -> str:
    """Format UTC ``seconds`` with a Go reference layout (``2006-01-02 15:04:05``)."""
    moment = time_module.gmtime(seconds)
    fraction = f"{seconds % 1:.9f}"[2:]
    out: list[str] = []
    i = 0
    while i < len(layout):
        frac = _FRACTION.match(layout, i)
        if frac:
            digits = fraction[:len(frac.group(1))]
            if frac.group(1)[0] == "9":
                digits = digits.rstrip("0")
            out.append(layout[i] + digits if digits else "")
            i = frac.end()
            continue
        for token, render in _LAYOUT:
            if layout.startswith(token, i):
                out.append(render(moment))
                i += len(token)
                break
        else:
            out.append(layout[i])
            i += 1
    return "".join(out)
