"""The lexer of the Go text/template engine: template text to a flat list of tokens.

Owns: delimiters (custom ones too), trim markers (``{{- `` and `` -}}``), comments, and the
tokens inside actions. Every token carries its offset in the source so errors can name a line
and column (`Source.where`).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

SPACE = " \t\r\n"
KEYWORDS = frozenset({"if", "else", "end", "range", "with", "define", "template", "block",
                      "break", "continue"})

# Token kinds.
TEXT, LEFT, RIGHT, EOF = "text", "left", "right", "eof"
IDENT, KEYWORD, FIELD, VARIABLE, DOT = "ident", "keyword", "field", "variable", "dot"
STRING, NUMBER, BOOL, NIL = "string", "number", "bool", "nil"
LPAREN, RPAREN, PIPE, DECLARE, ASSIGN, COMMA = "(", ")", "|", ":=", "=", ","

_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+"
                     r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "'": "'"}


class TemplateSyntaxError(Exception):
    """A template that cannot be parsed; ``str()`` is ``name:line:col: message``."""

    def __init__(self, message: str, name: str = "", line: int = 0, col: int = 0) -> None:
        self.message, self.name, self.line, self.col = message, name, line, col
        super().__init__(f"{name}:{line}:{col}: {message}")


class Source:
    """The template text, its name, and offset -> (line, column) for messages."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]

    def where(self, pos: int) -> tuple[int, int]:
        """1-based line and column of offset ``pos``."""
        line = bisect.bisect_left(self._newlines, pos)
        start = self._newlines[line - 1] + 1 if line else 0
        return line + 1, pos - start + 1

    def error(self, message: str, pos: int) -> TemplateSyntaxError:
        line, col = self.where(pos)
        return TemplateSyntaxError(message, self.name, line, col)


@dataclass
class Token:
    kind: str
    value: object
    pos: int
    space_before: bool = False  # whitespace came right before it (fields chain only without)


def lex(source: Source, left: str = "{{", right: str = "}}") -> list[Token]:
    """Split the template into tokens; raises `TemplateSyntaxError`."""
    return _Lexer(source, left or "{{", right or "}}").run()


class _Lexer:
    def __init__(self, source: Source, left: str, right: str) -> None:
        self.src = source
        self.text = source.text
        self.left, self.right = left, right
        self.tokens: list[Token] = []
        self.trim_next = False  # the last action ended with " -}}"

    def run(self) -> list[Token]:
        pos = 0
        while True:
            start = self.text.find(self.left, pos)
            end = len(self.text) if start < 0 else start
            body = self.text[pos:end]
            trim_left = start >= 0 and self._left_trim(start + len(self.left))
            if self.trim_next:
                body = body.lstrip(SPACE)
            if trim_left:
                body = body.rstrip(SPACE)
            if body:
                self.tokens.append(Token(TEXT, body, pos))
            if start < 0:
                self.tokens.append(Token(EOF, None, len(self.text)))
                return self.tokens
            pos = self._action(start, trim_left)

    def _left_trim(self, pos: int) -> bool:
        return self.text.startswith("-", pos) and pos + 1 < len(self.text) \
            and self.text[pos + 1] in SPACE

    def _right_delim_at(self, pos: int) -> tuple[bool, int]:
        """(found, length) of a right delimiter at ``pos``, counting a " -" trim marker."""
        text = self.text
        if text.startswith(self.right, pos):
            self.trim_next = False
            return True, len(self.right)
        if pos + 1 < len(text) and text[pos] in SPACE and text[pos + 1] == "-" \
                and text.startswith(self.right, pos + 2):
            self.trim_next = True
            return True, 2 + len(self.right)
        return False, 0

    def _action(self, start: int, trim_left: bool) -> int:
        pos = start + len(self.left) + (2 if trim_left else 0)
        if self.text.startswith("/*", pos):
            return self._comment(start, pos)
        self.tokens.append(Token(LEFT, None, start))
        space = False
        while True:
            found, length = self._right_delim_at(pos)
            if found:
                self.tokens.append(Token(RIGHT, None, pos))
                return pos + length
            if pos >= len(self.text):
                raise self.src.error("unclosed action", start)
            char = self.text[pos]
            if char in SPACE:
                space = True
                pos += 1
                continue
            token, pos = self._token(pos)
            token.space_before = space
            self.tokens.append(token)
            space = False

    def _comment(self, start: int, pos: int) -> int:
        end = self.text.find("*/", pos + 2)
        if end < 0:
            raise self.src.error("unclosed comment", start)
        found, length = self._right_delim_at(end + 2)
        if not found:
            raise self.src.error("comment ends before closing delimiter", end)
        return end + 2 + length

    def _token(self, pos: int) -> tuple[Token, int]:
        text, char = self.text, self.text[pos]
        if char == '"':
            return self._quoted(pos)
        if char == "`":
            end = text.find("`", pos + 1)
            if end < 0:
                raise self.src.error("unterminated raw quoted string", pos)
            return Token(STRING, text[pos + 1:end], pos), end + 1
        if char == "'":
            return self._char(pos)
        if char == "$":
            match = _WORD.match(text, pos + 1)
            name = "$" + (match.group() if match else "")
            return Token(VARIABLE, name, pos), pos + len(name)
        if char == "." and pos + 1 < len(text) and (text[pos + 1].isalpha() or text[pos + 1] == "_"):
            match = _WORD.match(text, pos + 1)
            return Token(FIELD, match.group(), pos), match.end()
        number = _NUMBER.match(text, pos)
        if number and number.group() not in ("+", "-", ".") and (char.isdigit() or char in "+-."):
            return Token(NUMBER, self._number(number.group(), pos), pos), number.end()
        if char == ".":
            return Token(DOT, None, pos), pos + 1
        if char.isalpha() or char == "_":
            word = _WORD.match(text, pos).group()
            if word in KEYWORDS:
                return Token(KEYWORD, word, pos), pos + len(word)
            if word in ("true", "false"):
                return Token(BOOL, word == "true", pos), pos + len(word)
            if word == "nil":
                return Token(NIL, None, pos), pos + 3
            return Token(IDENT, word, pos), pos + len(word)
        if text.startswith(":=", pos):
            return Token(DECLARE, None, pos), pos + 2
        if char in "()|=,":
            return Token(char, None, pos), pos + 1
        raise self.src.error(f"unexpected {char!r} in action", pos)

    def _number(self, literal: str, pos: int) -> int | float:
        digits = literal.replace("_", "")
        try:
            if re.fullmatch(r"[+-]?0[0-7]+", digits):  # Go's legacy octal: 017 == 15
                return int(digits.replace("0", "0o", 1), 0)
            if re.fullmatch(r"[+-]?(0[xXbBoO][0-9a-fA-F]+|[0-9]+)", digits):
                return int(digits, 0)
            return float(digits)
        except ValueError:
            raise self.src.error(f"bad number syntax: {literal!r}", pos) from None

    def _quoted(self, pos: int) -> tuple[Token, int]:
        out: list[str] = []
        i = pos + 1
        text = self.text
        while True:
            if i >= len(text) or text[i] == "\n":
                raise self.src.error("unterminated quoted string", pos)
            char = text[i]
            if char == '"':
                return Token(STRING, "".join(out), pos), i + 1
            if char != "\\":
                out.append(char)
                i += 1
                continue
            decoded, i = self._escape(i, pos)
            out.append(decoded)

    def _escape(self, i: int, start: int) -> tuple[str, int]:
        text = self.text
        kind = text[i + 1] if i + 1 < len(text) else ""
        if kind in _ESCAPES:
            return _ESCAPES[kind], i + 2
        widths = {"x": 2, "u": 4, "U": 8}
        if kind in widths:
            digits = text[i + 2:i + 2 + widths[kind]]
            if len(digits) == widths[kind] and all(c in "0123456789abcdefABCDEF" for c in digits):
                return chr(int(digits, 16)), i + 2 + widths[kind]
        elif kind in "01234567" and kind:
            digits = text[i + 1:i + 4]
            if len(digits) == 3 and all(c in "01234567" for c in digits):
                return chr(int(digits, 8)), i + 4
        raise self.src.error("invalid escape sequence in string", start)

    def _char(self, pos: int) -> tuple[Token, int]:
        # A Go rune constant is a number: 'a' is 97.
        text = self.text
        if text.startswith("\\", pos + 1):
            value, end = self._escape(pos + 1, pos)
        else:
            value, end = text[pos + 1:pos + 2], pos + 2
        if not value or not text.startswith("'", end):
            raise self.src.error("unterminated character constant", pos)
        return Token(NUMBER, ord(value), pos), end + 1
