"""Values the Go way, and Go text/template's builtin functions.

Owns: how values print (`go_str`: ``[a b]`` lists, ``map[k:v]`` maps, ``1e+06`` floats,
``true``/``false``, ``<no value>``), Go truthiness (`truth`), a ``printf`` with Go's verbs,
and the builtins (``eq``, ``lt``, ``len``, ``index``, ``and``, ``or``, ``not``, ``print`` ...).
"""

from __future__ import annotations

import dataclasses
import decimal
import html as html_lib
import json
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus


class TemplateFuncError(Exception):
    """A builtin or helper was called with values it cannot work on."""


# --- printing ---------------------------------------------------------------------------

def go_float(value: float) -> str:
    """Format a float as Go's ``%v`` does: shortest digits, exponent from 1e+06 and below 1e-4."""
    if math.isnan(value):
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits_t, exponent = decimal.Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digits_t)).rstrip("0") or "0"
    point = len(digits_t) + int(exponent)  # where the decimal point falls in `digits`
    exp10 = point - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def go_str(value: Any, top: bool = False) -> str:
    """The text Go prints for ``value`` (``top``: in an action, where nil is ``<no value>``)."""
    if value is None:
        return "<no value>" if top else "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: _sort_key(kv[0]))
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v)}" for k, v in items) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        # Go prints a pointer to a struct as &{field field ...}.
        return "&{" + " ".join(go_str(getattr(value, f.name)) for f in dataclasses.fields(value)) + "}"
    return str(value)


def _sort_key(key: Any) -> tuple:
    return (0, key, "") if isinstance(key, (int, float)) else (1, 0, str(key))


def truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings/lists/maps are false; anything else true."""
    if value is None:
        return False
    if isinstance(value, (bool, int, float)):
        return bool(value)
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return len(value) > 0
    return True


def category(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


# --- Go's builtins ----------------------------------------------------------------------

def _same_kind(a: Any, b: Any) -> None:
    if a is None or b is None:
        return
    if category(a) != category(b):
        raise TemplateFuncError(f"incompatible types for comparison: "
                                f"{category(a)} and {category(b)}")


def go_eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateFuncError("missing argument for comparison")
    for other in others:
        _same_kind(a, other)
        if a == other:
            return True
    return False


def go_ne(a: Any, b: Any) -> bool:
    return not go_eq(a, b)


def _ordered(a: Any, b: Any) -> None:
    _same_kind(a, b)
    if category(a) not in ("int", "float", "string"):
        raise TemplateFuncError(f"invalid type for comparison: {category(a)}")


def go_lt(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a < b


def go_le(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a <= b


def go_gt(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a > b


def go_ge(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a >= b


def go_len(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogateescape"))  # Go counts bytes
    if isinstance(value, (bytes, list, tuple, dict)):
        return len(value)
    raise TemplateFuncError(f"len of type {category(value)}")


def go_index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if value is None:
            raise TemplateFuncError("index of untyped nil")
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, (list, tuple, str)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise TemplateFuncError(f"cannot index slice/array with type {category(key)}")
            data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            if not 0 <= key < len(data):
                raise TemplateFuncError(f"index out of range: {key}")
            value = data[key]
        else:
            raise TemplateFuncError(f"can't index item of type {category(value)}")
    return value


def go_print(*args: Any) -> str:
    # fmt.Sprint puts a space between operands when neither side is a string.
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(arg)
    return out


def go_println(*args: Any) -> str:
    return " ".join(go_str(a) for a in args) + "\n"


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def go_sprintf(fmt: str, *args: Any) -> str:
    """``printf`` with Go's common verbs (%v %s %d %q %t %f %e %g %x %X %o %b %c %%)."""
    out: list[str] = []
    last = 0
    next_arg = 0
    for match in _VERB.finditer(fmt):
        out.append(fmt[last:match.start()])
        last = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if next_arg >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[next_arg]
        next_arg += 1
        out.append(_format_one(arg, flags, width, precision, verb))
    out.append(fmt[last:])
    if next_arg < len(args):
        extra = ", ".join(f"{category(a)}={go_str(a)}" for a in args[next_arg:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _format_one(arg: Any, flags: str, width: str | None, precision: str | None, verb: str) -> str:
    align = "<" if "-" in flags else ""
    zero = "0" if "0" in flags and not align and verb not in "sqvt" else ""
    sign = "+" if "+" in flags else (" " if " " in flags else "")
    size = width or ""
    prec = f".{precision}" if precision is not None else ""
    try:
        if verb in "vs":
            text = go_str(arg)
            text = text[:int(precision)] if precision is not None and verb == "s" else text
            return format(text, f"{align or '>'}{size}")
        if verb == "q":
            return format(json.dumps(go_str(arg), ensure_ascii=False), f"{align or '>'}{size}")
        if verb == "t":
            return format(go_str(arg) if isinstance(arg, bool) else f"%!t({category(arg)}={arg})",
                          f"{align or '>'}{size}")
        if verb == "c":
            return chr(int(arg))
        if verb in "dxXob":
            if isinstance(arg, str) and verb in "xX":
                text = arg.encode("utf-8", "surrogateescape").hex()
                return text.upper() if verb == "X" else text
            if not isinstance(arg, int) or isinstance(arg, bool):
                return f"%!{verb}({category(arg)}={go_str(arg)})"
            return format(arg, f"{align}{sign}{zero}{size}{'d' if verb == 'd' else verb}")
        if verb in "feEgGF":
            if not isinstance(arg, (int, float)) or isinstance(arg, bool):
                return f"%!{verb}({category(arg)}={go_str(arg)})"
            if verb in "gG" and precision is None:
                return format(go_float(float(arg)), f"{align or '>'}{size}")
            spec_prec = prec or ".6"
            return format(float(arg), f"{align}{sign}{zero}{size}{spec_prec}{verb.lower() if verb == 'F' else verb}")
    except (ValueError, TypeError) as exc:
        return f"%!{verb}({exc})"
    return f"%!{verb}({category(arg)}={go_str(arg)})"


BUILTINS: dict[str, Callable[..., Any]] = {
    "and": lambda *a: next((x for x in a if not truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if truth(x)), a[-1]),
    "not": lambda x: not truth(x),
    "len": go_len, "index": go_index,
    "eq": go_eq, "ne": go_ne, "lt": go_lt, "le": go_le, "gt": go_gt, "ge": go_ge,
    "print": go_print, "println": go_println, "printf": go_sprintf,
    "html": lambda *a: html_lib.escape(go_print(*a)).replace("&#x27;", "&#39;"),
    "js": lambda *a: json.dumps(go_print(*a))[1:-1].replace("'", "\\'"),
    "urlquery": lambda *a: quote_plus(go_print(*a)),
}
