"""Reads one config file into a dict: JSON, or HCL (version 1, as Consul 1.8) for ``.hcl``.

Owns the file-level rules: what an empty file means, how deep a document may nest, and errors
that say what is wrong in words with ``file:line:col`` ("comments are not allowed in JSON",
"trailing comma", ...), each reported once, as a `ConfigError`.

An empty file (no bytes at all) is skipped, as Consul skips it, and reported as a warning; a
file of only whitespace is an error, as in Consul. ``null`` at the top level also counts as
empty (Consul decodes it to an empty map).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from agent.config.validate import ConfigError

# Deeper than any real config; keeps every recursive step after the parse (schema checks,
# merging, plugin settings) far from Python's recursion limit.
MAX_DEPTH = 100
FORMATS = ("json", "hcl")


class EmptyFile(Exception):
    """The file has no bytes: skip it (the caller warns)."""


def file_format(path: Path, forced: str | None = None) -> str:
    """``hcl`` for a ``.hcl`` file, else ``forced`` (``-config-format``) or ``json``."""
    if path.suffix == ".hcl":
        return "hcl"
    if path.suffix == ".json":
        return "json"
    return forced or "json"


def read_file(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """The settings in ``path``; raises `ConfigError`, or `EmptyFile` for a 0-byte file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    if not raw:
        raise EmptyFile(str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position(raw[:exc.start].decode("utf-8", "replace"), exc.start)
        raise ConfigError(f"{path}:{line}:{col}: not UTF-8 text: {exc.reason}") from None
    fmt = fmt or file_format(path)
    if not text.strip():
        raise ConfigError(f"{path}: the file holds only whitespace, no settings (a file of "
                          "0 bytes is skipped, as in Consul)")
    _check_depth(path, text, hcl=fmt == "hcl")
    doc = _parse_hcl(path, text) if fmt == "hcl" else _parse_json(path, text)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        kind = {list: "a list", str: "a string", bool: "a boolean"}.get(type(doc), "a number")
        raise ConfigError(f"{path}:1:1: the top level must be an object, not {kind}")
    return doc


def _position(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of character ``pos`` in ``text``."""
    before = text[:pos]
    return before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1


def _check_depth(path: Path, text: str, *, hcl: bool) -> None:
    # One pass over the text, skipping strings (and HCL comments): the deepest bracket.
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif hcl and (c == "#" or text.startswith("//", i)):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif hcl and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 1
        elif c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line, col = _position(text, i)
                raise ConfigError(f"{path}:{line}:{col}: nested more than {MAX_DEPTH} levels "
                                  "deep")
        elif c in "]}":
            depth -= 1
        i += 1


# -- JSON ------------------------------------------------------------------------------------

class _BareConstant(ValueError):
    pass


def _refuse_constant(name: str):
    raise _BareConstant(name)


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        pos, words = _explain(exc, text)
        line, col = _position(text, pos)
        raise ConfigError(f"{path}:{line}:{col}: invalid JSON: {words}") from None
    except _BareConstant as exc:
        match = re.search(rf"(?<![\w\"]){re.escape(str(exc))}(?![\w\"])", text)
        line, col = _position(text, match.start() if match else 0)
        raise ConfigError(f"{path}:{line}:{col}: invalid JSON: {exc} is not a JSON value "
                          "(JSON numbers are finite)") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deep") from None


_WORD = re.compile(r"[A-Za-z_][\w.-]*")


def _previous(text: str, pos: int) -> int:
    """The index of the last non-space character before ``pos`` (-1 if none)."""
    i = pos - 1
    while i >= 0 and text[i] in " \t\r\n":
        i -= 1
    return i


def _explain(exc: json.JSONDecodeError, text: str) -> tuple[int, str]:
    """Where the mistake is and what it is, in words, from Python's decoder error."""
    pos, msg = exc.pos, exc.msg
    rest = text[pos:]
    if rest.startswith("//") or rest.startswith("/*"):
        return pos, "comments are not allowed in JSON"
    if msg.startswith("Unexpected UTF-8 BOM"):
        return 0, "the file starts with a byte-order mark; save it as UTF-8 without one"
    prev = _previous(text, pos)
    if rest[:1] in ("}", "]") and prev >= 0 and text[prev] == ",":
        return prev, f"trailing comma before '{rest[0]}'"
    if rest[:1] == "'":
        return pos, "strings must be in double quotes, not single quotes"
    if msg.startswith("Invalid control character"):
        return pos, (f"control character U+{ord(text[pos]):04X} inside a string; write it "
                     "escaped (\\n, \\t, \\u0000)")
    if msg.startswith("Unterminated string"):
        return pos, "a string is not closed (missing '\"')"
    if msg.startswith("Invalid \\escape") or msg.startswith("Invalid \\u"):
        return pos, "invalid escape sequence in a string"
    if msg.startswith("Expecting property name"):
        word = _WORD.match(rest)
        if word:
            return pos, f"object keys must be in double quotes (found {word.group()!r})"
        return pos, "expected a key in double quotes"
    if msg.startswith("Expecting value"):
        if not rest.strip():
            return pos, "unexpected end of file (the document is cut short)"
        word = _WORD.match(rest)
        if word:
            return pos, (f"{word.group()!r} is not a JSON value (strings need double quotes; "
                         "the literals are true, false and null)")
        return pos, "expected a value"
    if msg.startswith("Expecting ':'"):
        return pos, "expected ':' after the key"
    if msg.startswith("Expecting ','"):
        if not rest.strip():
            return pos, "unexpected end of file (a '}' or ']' is missing)"
        return pos, "expected ',' or a closing bracket"
    if msg.startswith("Extra data"):
        return pos, "unexpected text after the end of the top-level value"
    return pos, msg


# -- HCL -------------------------------------------------------------------------------------

_HCL_AT = re.compile(r"Line (\d+), column (\d+)(?:, index \d+)?: (.*)", re.S)


def _parse_hcl(path: Path, text: str) -> Any:
    import hcl  # pyhcl: a maintained HCL 1 parser, the dialect Consul 1.8 reads

    try:
        return hcl.loads(text)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deep") from None
    except Exception as exc:  # noqa: BLE001 - the parser raises ValueError and others
        message = str(exc).strip()
        match = _HCL_AT.match(message)
        if match:
            line, col, words = int(match.group(1)), int(match.group(2)) + 1, match.group(3)
        elif message.startswith("Unexpected end of file"):
            line, col = _position(text, len(text.rstrip()))
            words = message
        else:
            raise ConfigError(f"{path}: invalid HCL: {message}") from None
        raise ConfigError(f"{path}:{line}:{col}: invalid HCL: {words}") from None
