"""The one table of commands: each command's type number, codec and FSM handler, together.

A log entry carrying a command is the JSON document `{"v": format, "t": type, "d": body}`.
Type numbers are append-only (logs and snapshots outlive the version that wrote them): a new
command takes the next number, a retired one keeps its number forever. Registering a number or
a class twice fails when this module is imported, so a clash never reaches a running server.

An entry whose type this server does not know stops it (`UnknownCommandType`): replicas that
skip an entry the others apply diverge. Unless the writer flagged it ignorable (Consul's
`IgnoreUnknownTypeFlag`, the 128 bit of the type): for a command an older server may safely
skip, `CommandSpec.ignorable` sets that flag on every entry written for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from agent.errors import UnknownCommand
from agent.fsm import commands as c
from agent.fsm import handlers as h

FORMAT_VERSION = 1
IGNORE_UNKNOWN_FLAG = 128  # Consul's structs.IgnoreUnknownTypeFlag
MAX_TYPE = IGNORE_UNKNOWN_FLAG - 1


class UnknownCommandType(UnknownCommand):
    """A log entry of a command type this server does not know, not flagged ignorable."""


class CommandFormatError(UnknownCommand):
    """A log entry in a form this server cannot read (a newer format, damaged JSON)."""


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its number in the log, its class, codec and handler."""

    number: int
    cls: type
    encode: Callable[[Any], dict]
    decode: Callable[[dict], Any]
    handler: Callable[[Any, Any, int], Any]  # (store, command, index) -> result
    ignorable: bool = False  # entries written for it carry IGNORE_UNKNOWN_FLAG


@dataclass(frozen=True)
class CommandTable:
    """The registered commands by number and by class (read-only mappings)."""

    by_number: Mapping[int, CommandSpec]
    by_class: Mapping[type, CommandSpec]

    @classmethod
    def build(cls, specs: Iterable[CommandSpec]) -> "CommandTable":
        """The table of `specs`; raises ValueError on a number or class registered twice."""
        by_number: dict[int, CommandSpec] = {}
        by_class: dict[type, CommandSpec] = {}
        for spec in specs:
            if not 0 < spec.number <= MAX_TYPE:
                raise ValueError(f"command type {spec.number} of {spec.cls.__name__} is not in "
                                 f"1..{MAX_TYPE}")
            if spec.number in by_number:
                raise ValueError(f"command type {spec.number} registered twice "
                                 f"({by_number[spec.number].cls.__name__} and "
                                 f"{spec.cls.__name__})")
            if spec.cls in by_class:
                raise ValueError(f"command {spec.cls.__name__} registered twice")
            by_number[spec.number] = by_class[spec.cls] = spec
        return cls(MappingProxyType(by_number), MappingProxyType(by_class))

    def spec_for(self, command: Any) -> CommandSpec:
        spec = self.by_class.get(type(command))
        if spec is None:
            raise UnknownCommand(f"no command type is registered for {type(command).__name__}")
        return spec

    def encode(self, command: Any) -> bytes:
        """The bytes of a log entry carrying `command`."""
        spec = self.spec_for(command)
        number = spec.number | (IGNORE_UNKNOWN_FLAG if spec.ignorable else 0)
        return json.dumps({"v": FORMAT_VERSION, "t": number, "d": spec.encode(command)},
                          separators=(",", ":")).encode()

    def decode(self, data: bytes) -> Any | None:
        """The command in a log entry, or None for an unknown type flagged ignorable.
        Raises `UnknownCommandType` or `CommandFormatError` (the server must stop)."""
        try:
            doc = json.loads(data)
            version, number, body = doc["v"], doc["t"], doc["d"]
        except (ValueError, TypeError, KeyError) as exc:
            raise CommandFormatError(f"not a command: {exc}") from None
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise CommandFormatError(f"command format {version!r}, written by a newer Waypost "
                                     f"(this one reads up to {FORMAT_VERSION})")
        if not isinstance(number, int) or isinstance(number, bool):
            raise CommandFormatError(f"command type {number!r} is not a number")
        spec = self.by_number.get(number & ~IGNORE_UNKNOWN_FLAG)
        if spec is None:
            if number & IGNORE_UNKNOWN_FLAG:
                return None
            raise UnknownCommandType(f"command type {number} is unknown to this Waypost "
                                     "(written by a newer version?)")
        try:
            return spec.decode(body)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CommandFormatError(f"a {spec.cls.__name__} command that does not decode: "
                                     f"{exc!r}") from None


# The numbers below are append-only. Never renumber or reuse one.
COMMANDS = CommandTable.build([
    CommandSpec(1, c.Register, c.encode_register, c.decode_register, h.register),
    CommandSpec(2, c.Deregister, c.encode_deregister, c.decode_deregister, h.deregister),
    CommandSpec(3, c.KVOperation, c.encode_kv, c.decode_kv, h.kv),
    CommandSpec(4, c.SessionCreate, c.encode_session_create, c.decode_session_create,
                h.session_create),
    CommandSpec(5, c.SessionDestroy, c.encode_session_destroy, c.decode_session_destroy,
                h.session_destroy),
    CommandSpec(6, c.Txn, c.encode_txn, c.decode_txn, h.txn),
    CommandSpec(7, c.TombstoneReap, c.encode_reap, c.decode_reap, h.tombstone_reap),
    CommandSpec(8, c.SessionTxn, c.encode_session_txn, c.decode_session_txn, h.session_txn),
    CommandSpec(9, c.AutopilotSetConfig, c.encode_autopilot, c.decode_autopilot,
                h.autopilot_set),
])


def encode_command(command: Any) -> bytes:
    return COMMANDS.encode(command)


def decode_command(data: bytes) -> Any | None:
    return COMMANDS.decode(data)
