"""Command-line flags with Consul's syntax, shared by every ``waypost`` command.

Owns: :class:`FlagSet` (declare flags, parse an argv list), :class:`FlagError`
(a bad command line, with a one-line message) and :class:`HelpRequested`.

Consul parses flags with Go's ``flag`` package, so we accept exactly that syntax,
which keeps existing scripts and unit files working:

- ``-name`` and ``--name`` are the same flag;
- ``-name=value``, ``-name value`` (the value may start with ``-``);
- booleans are bare (``-recurse``) or ``-recurse=true|false`` (also ``1/0/t/f``);
  ``-recurse false`` does *not* consume ``false``;
- parsing stops at ``--`` or at the first positional argument (``-`` alone is
  positional), so ``waypost kv put key -5`` stores ``-5``;
- a repeatable flag collects every occurrence in order; any other flag given
  twice keeps the last value;
- ``-h``, ``-help`` and ``--help`` raise :class:`HelpRequested` unless declared.

Example::

    fs = (FlagSet("agent")
          .bool("dev", help="Start in development mode.")
          .string("node", default=None, help="Node name.")
          .int("http-port", default=8500, help="HTTP API port.")
          .strings("config-file", help="A config file; repeatable."))
    values, args = fs.parse(["-dev", "--http-port=8501", "-config-file", "a.json"])
    values.dev, values.http_port, values.config_file  # True, 8501, ["a.json"]

Give a flag ``default=None`` to tell "not given" from any given value (the agent
does this to let flags override config files only when present).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

__all__ = ["FlagError", "FlagSet", "HelpRequested"]

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
_HELP_NAMES = frozenset({"h", "help"})


class FlagError(Exception):
    """The command line is wrong; ``str()`` is a one-line message naming the flag."""


class HelpRequested(Exception):
    """``-h``/``-help``/``--help`` was given; ``flag_set`` is the set being parsed."""

    def __init__(self, flag_set: FlagSet) -> None:
        super().__init__(f"help requested for {flag_set.name}")
        self.flag_set = flag_set


@dataclass(frozen=True)
class _Flag:
    name: str
    kind: str  # "bool", "str", "int" or "strings"
    default: object
    help: str

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


class FlagSet:
    """The flags one command accepts.

    Declaring methods return the set itself so declarations can be chained.
    A ``FlagSet`` holds declarations only; :meth:`parse` keeps no state, so
    one set can parse any number of argument lists.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._flags: dict[str, _Flag] = {}

    def bool(self, name: str, default: bool | None = False, help: str = "") -> FlagSet:
        """Declare a boolean flag: bare sets it true, ``=true|false`` sets either."""
        return self._add(_Flag(name, "bool", default, help))

    def string(self, name: str, default: str | None = None, help: str = "") -> FlagSet:
        """Declare a flag taking one string value."""
        return self._add(_Flag(name, "str", default, help))

    def int(self, name: str, default: int | None = 0, help: str = "") -> FlagSet:
        """Declare a flag taking one (decimal, possibly negative) integer."""
        return self._add(_Flag(name, "int", default, help))

    def strings(self, name: str, help: str = "") -> FlagSet:
        """Declare a repeatable string flag; its value is a list, empty if never given."""
        return self._add(_Flag(name, "strings", (), help))

    def parse(self, argv: Sequence[str]) -> tuple[SimpleNamespace, list[str]]:
        """Parse ``argv`` into (values, positional arguments).

        ``values`` has one attribute per declared flag, dashes turned into
        underscores, holding the default when the flag was not given.
        Raises :class:`FlagError` or :class:`HelpRequested`.
        """
        values = {flag.attr: self._initial(flag) for flag in self._flags.values()}
        index = 0
        while index < len(argv):
            arg = argv[index]
            if arg == "--":
                return SimpleNamespace(**values), list(argv[index + 1:])
            if arg == "-" or not arg.startswith("-"):
                break
            body = arg[2:] if arg.startswith("--") else arg[1:]
            if not body or body[0] in "-=":
                raise FlagError(f"bad flag syntax: {arg}")
            name, has_value, raw = body.partition("=")
            flag = self._flags.get(name)
            if flag is None:
                if name in _HELP_NAMES:
                    raise HelpRequested(self)
                raise FlagError(f"flag provided but not defined: -{name}")
            if flag.kind == "bool":
                value: object = _parse_bool(flag, raw) if has_value else True
            else:
                if not has_value:
                    index += 1
                    if index >= len(argv):
                        raise FlagError(f"flag needs an argument: -{name}")
                    raw = argv[index]
                value = _convert(flag, raw)
            if flag.kind == "strings":
                values[flag.attr].append(value)
            else:
                values[flag.attr] = value
            index += 1
        return SimpleNamespace(**values), list(argv[index:])

    def help_text(self) -> str:
        """Describe every flag, sorted by name, in Consul's help layout."""
        blocks = []
        for name in sorted(self._flags):
            flag = self._flags[name]
            if flag.kind == "bool":
                head = f"  -{name}"
            else:
                head = f"  -{name}=<{'int' if flag.kind == 'int' else 'string'}>"
            if flag.kind == "strings":
                head += "  (repeatable)"
            elif flag.kind != "bool" and flag.default not in (None, ""):
                head += f"  (default {flag.default})"
            text = textwrap.fill(flag.help, width=76, initial_indent="     ",
                                 subsequent_indent="     ") if flag.help else ""
            blocks.append(f"{head}\n{text}" if text else head)
        return "\n\n".join(blocks)

    def _add(self, flag: _Flag) -> FlagSet:
        # A clash is a programming error in a command's declarations, not user input.
        if flag.name in self._flags:
            raise ValueError(f"flag -{flag.name} declared twice in {self.name}")
        if not flag.name or flag.name[0] == "-" or "=" in flag.name:
            raise ValueError(f"invalid flag name {flag.name!r}")
        self._flags[flag.name] = flag
        return self

    @staticmethod
    def _initial(flag: _Flag) -> object:
        return list(flag.default) if flag.kind == "strings" else flag.default


def _parse_bool(flag: _Flag, raw: str) -> bool:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise FlagError(f'invalid boolean value "{raw}" for -{flag.name}')


def _convert(flag: _Flag, raw: str) -> object:
    if flag.kind != "int":
        return raw
    try:
        # Base 10 only: Python's int() would also take "1_000" or " 7 ",
        # which Go rejects, so check the shape first.
        digits = raw[1:] if raw[:1] in "+-" else raw
        if not digits.isdigit() or not digits.isascii():
            raise ValueError(raw)
        return int(raw, 10)
    except ValueError:
        raise FlagError(f'invalid value "{raw}" for flag -{flag.name}: '
                        "not an integer") from None
