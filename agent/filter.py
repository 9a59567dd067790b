"""Consul's `?filter=` expressions: go-bexpr 0.1.2, the version Consul 1.8.7 ships.

`compile_filter(text, schema)` parses an expression, checks it against the fields of one of
Consul's result types (`NODE`, `SERVICE_NODE`, ...) and returns a `Filter` that keeps the rows,
in their JSON shape, that the expression matches. Every problem is a `FilterError` carrying
bexpr's own text (the parser's positions and "expected" lists included), which Consul sends
to the client.

The parser follows bexpr's PEG grammar with the failure bookkeeping of the pigeon runtime it
is generated with: the farthest position any terminal failed at, what was expected there, and
the errors of the grammar's own actions. Rule results are memoized, which bexpr does not do:
its backtracking is exponential in the nesting depth, ours linear, with the same answers.
Regular expressions go through RE2, Go's regexp dialect, so no pattern can stall the agent.
Pure code: no Twisted, no I/O.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import re2

from agent.errors import InvalidRequest

PREFIX = "Failed to create boolean expression evaluator: "
# Far beyond any real filter; parsing is linear but still Python, and the reactor waits.
MAX_FILTER_LENGTH = 64 * 1024

EQ, NE, IN, NOT_IN, EMPTY, NOT_EMPTY, MATCHES, NOT_MATCHES = (
    "Equal", "Not Equal", "In", "Not In", "Is Empty", "Is Not Empty", "Matches", "Not Matches")


class FilterError(InvalidRequest):
    """The expression does not parse, or does not fit the fields of the result it filters."""

    def __init__(self, message: str) -> None:
        # Go would echo undecodable bytes as they are; a str answer cannot carry them.
        super().__init__(_without_surrogates(message, keep_bytes=False))


def _without_surrogates(text: str, keep_bytes: bool = True) -> str:
    """`text` with lone surrogates (no Go string has one) as U+FFFD; `keep_bytes` keeps the
    surrogate escapes that stand for single undecodable bytes (U+DC80..U+DCFF)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF and not
                       (keep_bytes and 0xDC80 <= ord(ch) <= 0xDCFF) else ch for ch in text)


# --- Go's spellings: strconv.Quote, strconv.Unquote, ParseInt, ParseBool ---

_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Go's %q of a string. Undecodable bytes (kept as surrogate escapes) print as \\xNN."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():  # Go's IsPrint: letters, marks, numbers, symbols, ASCII space
            out.append(ch)
        elif code < 0x20:  # (Go 1.14 writes DEL as \u007f)
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _go_unquote(literal: str) -> str | None:
    """strconv.Unquote of a "..." or `...` literal; None where Go answers ErrSyntax."""
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        return body.replace("\r", "")
    if "\n" in body:
        return None
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= len(body):
            return None
        esc = body[i + 1]
        i += 2
        if esc in "abfnrtv":
            out.append(ord({"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                            "v": "\v"}[esc]))
        elif esc in "\\\"":
            out.append(ord(esc))
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i:i + width]
            if len(digits) < width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                return None
            i += width
            value = int(digits, 16)
            if esc == "x":
                out.append(value)  # one byte, possibly not UTF-8
            elif value > 0x10FFFF:
                return None
            else:
                # Go encodes a surrogate half as U+FFFD.
                out += (chr(value) if not 0xD800 <= value <= 0xDFFF else "\ufffd").encode()
        elif esc in "01234567":
            digits = body[i - 1:i + 2]
            if len(digits) < 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                return None
            out.append(int(digits, 8))
            i += 2
        else:
            return None
    return out.decode("utf-8", "surrogateescape")


def _num_error(func: str, text: str, reason: str) -> str:
    return f"strconv.{func}: parsing {go_quote(text)}: {reason}"


def _underscores_ok(text: bytes) -> bool:
    """Go's rule for digit separators: only between digits (a base prefix counts as one)."""
    if text[:1] in (b"+", b"-"):
        text = text[1:]
    saw, i, hexa = "^", 0, False
    if len(text) >= 2 and text[:1] == b"0" and text[1:2].lower() in (b"b", b"o", b"x"):
        saw, i, hexa = "0", 2, text[1:2].lower() == b"x"
    for c in text[i:]:
        if 48 <= c <= 57 or (hexa and 97 <= (c | 0x20) <= 102):
            saw = "0"
        elif c == 95:
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def coerce_int(text: str) -> int:
    """strconv.ParseInt(text, 0, 64), its error text included."""
    raw = text.encode("utf-8", "surrogateescape")
    digits = raw[1:] if raw[:1] in (b"+", b"-") else raw
    if not digits:
        raise ValueError(_num_error("ParseInt", text, "invalid syntax"))
    base, body = 10, digits
    if digits[:1] == b"0":
        prefix = digits[1:2].lower()
        if len(digits) >= 3 and prefix in (b"b", b"o", b"x"):
            base, body = {b"b": 2, b"o": 8, b"x": 16}[prefix], digits[2:]
        else:
            base, body = 8, digits[1:]
    value, underscores = 0, False
    for c in body:
        if c == 95:
            underscores = True
            continue
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= (c | 0x20) <= 122:
            d = (c | 0x20) - 87
        else:
            raise ValueError(_num_error("ParseInt", text, "invalid syntax"))
        if d >= base:
            raise ValueError(_num_error("ParseInt", text, "invalid syntax"))
        value = value * base + d
        if value > 0xFFFFFFFFFFFFFFFF:
            raise ValueError(_num_error("ParseInt", text, "value out of range"))
    if underscores and not _underscores_ok(digits):
        raise ValueError(_num_error("ParseInt", text, "invalid syntax"))
    negative = raw[:1] == b"-"
    if value > (1 << 63) - (0 if negative else 1):
        raise ValueError(_num_error("ParseInt", text, "value out of range"))
    return -value if negative else value


def coerce_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(_num_error("ParseBool", text, "invalid syntax"))


# Go's regexp/syntax wording for each of RE2's error codes (the two are one design).
_RE2_CODES = [("invalid escape sequence", "invalid escape sequence"),
              ("invalid character class range", "invalid character class range"),
              ("invalid character class", "invalid character class"),
              ("missing ]", "missing closing ]"), ("missing )", "missing closing )"),
              ("unexpected )", "unexpected )"),
              ("trailing \\", "trailing backslash at end of expression"),
              ("no argument for repetition operator", "missing argument to repetition operator"),
              ("invalid repetition size", "invalid repeat count"),
              ("bad repetition operator", "invalid nested repetition operator"),
              ("invalid perl operator", "invalid or unsupported Perl syntax"),
              ("invalid UTF-8", "invalid UTF-8"),
              ("invalid named capture group", "invalid named capture")]
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the client gets the error; RE2 must not also print it


def compile_regex(pattern: str) -> Any:
    """A compiled RE2 pattern, or ValueError with Go's `error parsing regexp: ...` text."""
    bad = next((i for i, ch in enumerate(pattern) if 0xD800 <= ord(ch) <= 0xDFFF), None)
    if bad is not None:
        raise ValueError(f"error parsing regexp: invalid UTF-8: `{pattern[bad:]}`")
    try:
        compiled = re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        message = exc.args[0] if exc.args else ""
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        for code, go_code in _RE2_CODES:
            if message == code or message.startswith(code + ": "):
                arg = message[len(code) + 2:]
                if arg.startswith("(?<"):
                    arg = "(?<"  # Go stops at the "<" it does not know; RE2 reads on
                raise ValueError(f"error parsing regexp: {go_code}: `{arg}`") from None
        raise ValueError(f"error parsing regexp: {message}") from None
    _refuse_newer_syntax(pattern)
    return compiled


def _refuse_newer_syntax(pattern: str) -> None:
    """RE2 takes two things Go's regexp (as of Consul 1.8.7) refuses: `\\C` and `(?<name>`."""
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if pattern[i + 1:i + 2] == "C":
                raise ValueError("error parsing regexp: invalid escape sequence: `\\C`")
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class, i = True, i + 1
            i += pattern[i:i + 1] == "^"
            i += pattern[i:i + 1] == "]"  # a "]" first in a class is a literal
            continue
        elif pattern.startswith("(?<", i):
            raise ValueError("error parsing regexp: invalid or unsupported Perl syntax: `(?<`")
        i += 1


# --- field configurations: what bexpr derives from the Go types by reflection ---

class Field:
    """One selectable field: its operators, its value coercion and what lies below it
    (`sub`: the names a selector may go on with; `item`: a list's element type)."""
    __slots__ = ("kind", "ops", "coerce", "sub", "zero", "item")

    def __init__(self, kind: str, ops: tuple, coerce: Callable[[str], Any] | None,
                 sub: dict[str, "Field"] | None, zero: Any, item: "Field | None" = None) -> None:
        self.kind, self.ops, self.coerce, self.sub = kind, ops, coerce, sub or {}
        self.zero, self.item = zero, item


def _str(text: str) -> str:
    return text


STR = Field("str", (EQ, NE, IN, NOT_IN, MATCHES, NOT_MATCHES), _str, None, "")
INT = Field("int", (EQ, NE), coerce_int, None, 0)
BOOL = Field("bool", (EQ, NE), coerce_bool, None, False)
STR_LIST = Field("list", (IN, NOT_IN, EMPTY, NOT_EMPTY), _str, None, ())
ANY = ""  # a map's keys: any name selects a value


def struct(**fields: Field) -> Field:
    return Field("struct", (), None, fields, {})


def list_of(item: Field) -> Field:
    return Field("structs", (EMPTY, NOT_EMPTY), None, item.sub, (), item)


def map_of(value: Field) -> Field:
    return Field("map", (EMPTY, NOT_EMPTY, IN, NOT_IN), _str, {ANY: value}, {})


# Consul 1.8.7's filterable types, field by field as its binary accepts them (RaftIndex,
# Definition, Namespace and the proxy's Config are tagged out of filtering there).
WEIGHTS = struct(Passing=INT, Warning=INT)
SERVICE_ADDRESS = struct(Address=STR, Port=INT)
MESH_GATEWAY = struct(Mode=STR)
PROXY = struct(
    DestinationServiceName=STR, DestinationServiceID=STR, LocalServiceAddress=STR,
    LocalServicePort=INT, MeshGateway=MESH_GATEWAY,
    Upstreams=list_of(struct(DestinationType=STR, DestinationNamespace=STR, DestinationName=STR,
                             Datacenter=STR, LocalBindAddress=STR, LocalBindPort=INT,
                             MeshGateway=MESH_GATEWAY)),
    Expose=struct(Checks=BOOL, Paths=list_of(struct(ListenerPort=INT, Path=STR,
                                                    LocalPathPort=INT, Protocol=STR,
                                                    ParsedFromCheck=BOOL))))
CONNECT = struct(Native=BOOL)
NODE = struct(ID=STR, Node=STR, Address=STR, Datacenter=STR, TaggedAddresses=map_of(STR),
              Meta=map_of(STR))
NODE_SERVICE = struct(Kind=STR, ID=STR, Service=STR, Tags=STR_LIST, Address=STR,
                      TaggedAddresses=map_of(SERVICE_ADDRESS), Meta=map_of(STR), Port=INT,
                      Weights=WEIGHTS, EnableTagOverride=BOOL, Proxy=PROXY, Connect=CONNECT)
SERVICE_NODE = struct(ID=STR, Node=STR, Address=STR, Datacenter=STR,
                      TaggedAddresses=map_of(STR), NodeMeta=map_of(STR), ServiceKind=STR,
                      ServiceID=STR, ServiceName=STR, ServiceTags=STR_LIST, ServiceAddress=STR,
                      ServiceTaggedAddresses=map_of(SERVICE_ADDRESS), ServiceWeights=WEIGHTS,
                      ServiceMeta=map_of(STR), ServicePort=INT, ServiceEnableTagOverride=BOOL,
                      ServiceProxy=PROXY, ServiceConnect=CONNECT)
HEALTH_CHECK = struct(Node=STR, CheckID=STR, Name=STR, Status=STR, Notes=STR, Output=STR,
                      ServiceID=STR, ServiceName=STR, ServiceTags=STR_LIST, Type=STR)
CHECK_SERVICE_NODE = struct(Node=NODE, Service=NODE_SERVICE, Checks=list_of(HEALTH_CHECK))


# --- the syntax tree ---

class Match:
    __slots__ = ("selector", "op", "raw", "field", "value")

    def __init__(self, selector: tuple[str, ...], op: str, raw: str | None) -> None:
        self.selector, self.op, self.raw = selector, op, raw
        self.field: Field | None = None
        self.value: Any = raw


class Not:
    __slots__ = ("operand",)

    def __init__(self, operand) -> None:
        self.operand = operand


class BoolOp:
    """`and`/`or` over two or more operands (bexpr nests them to the right; same meaning)."""
    __slots__ = ("is_and", "operands")

    def __init__(self, is_and: bool, operands: list) -> None:
        self.is_and = is_and
        self.operands = operands


# --- the parser ---

_WS, _ALPHA = " \t\r\n", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_WORD = _ALPHA + "0123456789_"
_OPS_VALUE = ((("_?", "==", "_?"), EQ), (("_?", "!=", "_?"), NE), (("_", "contains", "_"), IN),
              (("_", "not", "_", "contains", "_"), NOT_IN), (("_", "matches", "_"), MATCHES),
              (("_", "not", "_", "matches", "_"), NOT_MATCHES))
_OPS_EMPTY = ((("_", "is", "_", "empty"), EMPTY),
              (("_", "is", "_", "not", "_", "empty"), NOT_EMPTY))
_OPS_IN = ((("_", "in", "_"), IN), (("_", "not", "_", "in", "_"), NOT_IN))


def _memo(rule):
    def run(self, pos):
        key = (rule, pos, self.invert)
        if key not in self.memo:
            self.memo[key] = rule(self, pos)
        return self.memo[key]
    return run


class _Parser:
    """bexpr's grammar; each rule returns (end, value) or None, recording failures as pigeon."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.invert = False
        self.max_fail = 0
        self.expected: list[str] = []
        self.errors: list[str] = []
        self.memo: dict = {}
        # Go's positions: line, column (runes) and byte offset of each rune, and of the end.
        self.where = []
        line, col, off = 1, 0, 0
        for ch in text + "\0":
            col += 1
            if ch == "\n":
                line, col = line + 1, 0
            self.where.append((line, col, off))
            off += len(ch.encode("utf-8", "surrogateescape"))

    def parse(self):
        tree = self.input()
        if tree is None and not self.errors:
            wants = set(self.expected)
            eof = "!." in wants
            wants.discard("!.")
            listed = sorted(wants) + (["EOF"] if eof else [])
            joined = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " or " + listed[-1]
            line, col, off = self.where[self.max_fail] if self.max_fail else (1, 1, 0)
            self.errors.append(f"{line}:{col} ({off}): no match found, expected: {joined}")
        if self.errors:
            raise FilterError(PREFIX + "\n".join(self.errors))
        return tree

    # terminals

    def _fail(self, matched: bool, pos: int, want: str) -> None:
        if matched == self.invert and pos >= self.max_fail:
            if pos > self.max_fail:
                self.max_fail, self.expected = pos, []
            self.expected.append("!" + want if self.invert else want)

    def lit(self, pos: int, word: str) -> int | None:
        ok = self.text.startswith(word, pos)
        self._fail(ok, pos, '"\\""' if word == '"' else f'"{word}"')  # %q of a grammar word
        return pos + len(word) if ok else None

    def cls(self, pos: int, chars: str, want: str) -> int | None:
        ok = pos < len(self.text) and self.text[pos] in chars
        self._fail(ok, pos, want)
        return pos + 1 if ok else None

    def any(self, pos: int) -> int | None:
        ok = pos < len(self.text)
        self._fail(ok, pos, ".")
        return pos + 1 if ok else None

    def absent(self, match: Callable[[int], Any], pos: int) -> bool:
        """A `!` predicate: inside it, successes are what count as failures."""
        self.invert = not self.invert
        found = match(pos)
        self.invert = not self.invert
        return found is None

    def error(self, pos: int, rule: str, message: str) -> None:
        line, col, off = self.where[pos]
        text = f'{line}:{col} ({off}): rule "{rule}": {message}'
        if text not in self.errors:
            self.errors.append(text)

    def ws(self, pos: int) -> int | None:
        end = self.cls(pos, _WS, "[ \\t\\r\\n]")
        if end is None:
            return None
        while (step := self.cls(end, _WS, "[ \\t\\r\\n]")) is not None:
            end = step
        return end

    def opt_ws(self, pos: int) -> int:
        end = self.ws(pos)
        return pos if end is None else end

    def eof(self, pos: int) -> int | None:
        return pos if self.absent(self.any, pos) else None

    def words(self, pos: int, parts: tuple[str, ...]) -> int | None:
        for part in parts:
            if part == "_?":
                pos = self.opt_ws(pos)
                continue
            pos = self.ws(pos) if part == "_" else self.lit(pos, part)
            if pos is None:
                return None
        return pos

    # rules

    def input(self):
        start = self.opt_ws(0)
        end = self.lit(start, "(")
        if end is not None:
            found = self.or_expr(self.opt_ws(end))
            if found is not None:
                end = self.lit(self.opt_ws(found[0]), ")")
                if end is not None and self.eof(self.opt_ws(end)) is not None:
                    return found[1]
        found = self.or_expr(self.opt_ws(0))
        if found is not None and self.eof(self.opt_ws(found[0])) is not None:
            return found[1]
        return None

    def _chain(self, pos, operand, word: str, is_and: bool):
        """`X _ word _ Self / X`: right recursion in bexpr. This loop makes the same attempts
        in the same order, and a long chain does not nest Python calls."""
        found = operand(pos)
        if found is None:
            return None
        end, operands = found[0], [found[1]]
        while (gap := self.words(end, ("_", word, "_"))) is not None:
            more = operand(gap)
            if more is None:
                break
            end = more[0]
            operands.append(more[1])
        return end, operands[0] if len(operands) == 1 else BoolOp(is_and, operands)

    @_memo  # a group parses its inside twice (closed, then unclosed): no more work than that
    def or_expr(self, pos):
        return self._chain(pos, self.and_expr, "or", False)

    def and_expr(self, pos):
        return self._chain(pos, self.not_expr, "and", True)

    def not_expr(self, pos):
        end = self.words(pos, ("not", "_"))
        if end is not None:
            found = self.not_expr(end)
            if found is not None:
                inner = found[1]
                return found[0], inner.operand if isinstance(inner, Not) else Not(inner)
        return self.group(pos)

    def group(self, pos):
        for attempt in (1, 2, 3):
            if attempt == 2:
                found = self.match(pos)
                if found is not None:
                    return found
                continue
            end = self.lit(pos, "(")
            found = None if end is None else self.or_expr(self.opt_ws(end))
            if found is None:
                continue
            end = self.opt_ws(found[0])
            if attempt == 1:
                close = self.lit(end, ")")
                if close is not None:
                    return close, found[1]
            elif self.absent(lambda p: self.lit(p, ")"), end):
                self.error(end, "grouping", "Unmatched parentheses")
        return None

    @_memo
    def match(self, pos):
        return self.selector_op_value(pos) or self.selector_op(pos) or self.value_op_selector(pos)

    def _operator(self, pos, table):
        for parts, op in table:
            end = self.words(pos, parts)
            if end is not None:
                return end, op
        return None

    def selector_op_value(self, pos):
        sel = self.selector(pos)
        op = None if sel is None else self._operator(sel[0], _OPS_VALUE)
        value = None if op is None else self.value(op[0])
        return None if value is None else (value[0], Match(sel[1], op[1], value[1]))

    def selector_op(self, pos):
        sel = self.selector(pos)
        op = None if sel is None else self._operator(sel[0], _OPS_EMPTY)
        return None if op is None else (op[0], Match(sel[1], op[1], None))

    def value_op_selector(self, pos):
        value = self.value(pos)
        op = None if value is None else self._operator(value[0], _OPS_IN)
        sel = None if op is None else self.selector(op[0])
        if sel is not None:
            return sel[0], Match(sel[1], op[1], value[1])
        value = self.value(pos)
        op = None if value is None else self._operator(value[0], _OPS_IN)
        if op is not None and self.absent(self.selector, op[0]):
            self.error(op[0], "match", "Invalid selector")
        return None

    @_memo
    def selector(self, pos):
        found = self.identifier(pos)
        if found is None:
            return None
        end, parts = found[0], [found[1]]
        while True:
            step = self.selector_step(end)
            if step is None:
                return end, tuple(parts)
            end = step[0]
            parts.append(step[1])

    def identifier(self, pos):
        end = self.cls(pos, _ALPHA, "[a-zA-Z]")
        if end is None:
            return None
        while (step := self.cls(end, _WORD, "[a-zA-Z0-9_]")) is not None:
            end = step
        return end, self.text[pos:end]

    def selector_step(self, pos):
        end = self.lit(pos, ".")
        if end is not None:
            found = self.identifier(end)
            if found is not None:
                return found
        return self.index(pos)

    def index(self, pos):
        for attempt in (1, 2, 3):
            end = self.lit(pos, "[")
            if end is None:
                continue
            end = self.opt_ws(end)
            if attempt == 2:
                if self.absent(self.string, end):
                    self.error(end, "index", "Invalid index")
                continue
            found = self.string(end)
            if found is None:
                continue
            end = self.opt_ws(found[0])
            if attempt == 1:
                close = self.lit(end, "]")
                if close is not None:
                    return close, found[1]
            elif self.absent(lambda p: self.lit(p, "]"), end):
                self.error(end, "index", "Unclosed index expression")
        return None

    @_memo
    def value(self, pos):
        found = self.selector(pos)
        if found is not None:
            return found[0], ".".join(found[1])
        return self.number(pos) or self.string(pos)

    def number(self, pos):
        for attempt in (1, 2):
            start = self.lit(pos, "-")
            end = self.int_or_float(pos if start is None else start)
            if end is None:
                continue
            if attempt == 1:
                if self.after_number(end) is not None:
                    return end, self.text[pos:end]
            elif self.absent(self.after_number, end):
                self.error(end, "number", "Invalid number literal")
        return None

    def after_number(self, pos):
        if self.ws(pos) is not None or self.eof(pos) is not None:
            return pos
        return self.lit(pos, ")")

    def int_or_float(self, pos):
        end = self.lit(pos, "0")
        if end is None:
            end = self.cls(pos, "123456789", "[1-9]")
            if end is None:
                return None
            while (step := self.cls(end, "0123456789", "[0-9]")) is not None:
                end = step
        dot = self.lit(end, ".")
        digit = None if dot is None else self.cls(dot, "0123456789", "[0-9]")
        while digit is not None:
            end, digit = digit, self.cls(digit, "0123456789", "[0-9]")
        return end

    def _chars(self, pos, quote: str) -> int:
        while self.absent(lambda p: self.lit(p, quote), pos):
            end = self.any(pos)
            if end is None:
                break
            pos = end
        return pos

    @_memo
    def string(self, pos):
        for quote in ("`", '"'):
            end = self.lit(pos, quote)
            if end is not None:
                end = self.lit(self._chars(end, quote), quote)
                if end is not None:
                    value = _go_unquote(self.text[pos:end])
                    if value is None:
                        self.error(pos, "string", "invalid syntax")
                    return end, value or ""
        for quote in ("`", '"'):
            end = self.lit(pos, quote)
            if end is not None:
                end = self._chars(end, quote)
                if self.eof(end) is not None:
                    self.error(end, "string", "Unterminated string literal")
                return None
        return None


# --- validation and evaluation ---

def _validate(node, fields: dict[str, Field]) -> None:
    """bexpr's checks, left to right: selector, operator, value coercion, regular expression."""
    if isinstance(node, Not):
        return _validate(node.operand, fields)
    if isinstance(node, BoolOp):
        for operand in node.operands:
            _validate(operand, fields)
        return
    configs, field = fields, None
    for idx, name in enumerate(node.selector):
        field = configs.get(name) or configs.get(ANY)
        if field is None:
            prefix = ".".join(node.selector[:idx + 1])
            raise FilterError(f"Selector {go_quote(prefix)} is not valid")
        configs = field.sub
    selector = go_quote(".".join(node.selector))
    if node.op not in field.ops:
        raise FilterError(f"Invalid match operator {go_quote(node.op)} for selector {selector}")
    node.field = field
    if node.raw is None:
        return
    try:
        node.value = field.coerce(node.raw)
    except ValueError as exc:
        raise FilterError(f"Failed to coerce value {go_quote(node.raw)} for selector "
                          f"{selector}: {exc}") from None
    if node.op in (MATCHES, NOT_MATCHES):
        try:
            node.value = compile_regex(node.value)
        except ValueError as exc:
            raise FilterError(f"Failed to compile regular expression {go_quote(node.raw)}: "
                              f"{exc}") from None


def _leaf(node: Match, value: Any) -> bool:
    op, field = node.op, node.field
    if op in (EQ, NE):
        if field.kind == "str":
            equal = isinstance(value, str) and value == node.value
        else:
            equal = type(value) is type(node.value) and value == node.value
        return equal if op == EQ else not equal
    if op in (IN, NOT_IN):
        found = isinstance(value, (str, list, tuple, dict)) and node.value in value
        return found if op == IN else not found
    if op in (EMPTY, NOT_EMPTY):
        return (not value) if op == EMPTY else bool(value)
    found = isinstance(value, str) and node.value.search(value) is not None
    return found if op == MATCHES else not found


def _walk(node: Match, depth: int, value: Any, field: Field) -> bool:
    """bexpr's descent: struct fields by name, any element of a list, a map's key or else
    the answer for a missing key. A field we leave out of the JSON has its Go zero value."""
    if depth == len(node.selector):
        return _leaf(node, value)
    name = node.selector[depth]
    if field.kind == "structs":
        return any(_walk(node, depth, item, field.item) for item in (value or ()))
    if field.kind == "map":
        if not isinstance(value, Mapping) or name not in value:
            return node.op not in (EQ, NOT_EMPTY, IN)
        sub, value = field.sub[ANY], value[name]
    else:
        sub = field.sub[name]
        value = value.get(name) if isinstance(value, Mapping) else None
    if value is None:
        value = sub.zero
    return _walk(node, depth + 1, value, sub)


def _evaluate(node, row: Mapping, schema: Field) -> bool:
    if isinstance(node, Match):
        return _walk(node, 0, row, schema)
    if isinstance(node, Not):
        return not _evaluate(node.operand, row, schema)
    if node.is_and:
        return all(_evaluate(operand, row, schema) for operand in node.operands)
    return any(_evaluate(operand, row, schema) for operand in node.operands)


class Filter:
    """A parsed, checked expression; keeps the rows (JSON-shaped dicts) it matches."""

    def __init__(self, tree, schema: Field, checked: bool) -> None:
        self.tree = tree
        self.schema = schema
        self.checked = checked

    def _check(self) -> None:
        if not self.checked:
            _validate(self.tree, self.schema.sub)  # without the prefix: bexpr's Execute error
            self.checked = True

    def matches(self, row: Mapping) -> bool:
        self._check()
        return _evaluate(self.tree, row, self.schema)

    def select(self, rows: Iterable[Mapping]) -> list:
        return [row for row in rows if self.matches(row)]

    def select_values(self, rows: Mapping[str, Mapping]) -> dict:
        """Filter a map's values (/v1/agent/services, a node's services), keeping its keys."""
        return {key: row for key, row in rows.items() if self.matches(row)}


def parse(text: str):
    """The syntax tree of an expression, or FilterError with bexpr's parse error."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"{PREFIX}filter expression longer than {MAX_FILTER_LENGTH} characters")
    try:
        return _Parser(_without_surrogates(text)).parse()
    except RecursionError:
        raise FilterError(PREFIX + "filter expression nests too deeply") from None


def compile_filter(text: str, schema: Field, lazy: bool = False) -> Filter | None:
    """The filter for `?filter=text` over rows of `schema`; None when there is no expression.

    `lazy` mirrors Consul's /v1/agent/checks, which checks selectors and values only when the
    first row is filtered, and then reports them without bexpr's prefix.
    """
    if not text:
        return None
    tree = parse(text)
    if not lazy:
        try:
            _validate(tree, schema.sub)
        except FilterError as exc:
            raise FilterError(PREFIX + str(exc)) from None
    return Filter(tree, schema, checked=not lazy)
