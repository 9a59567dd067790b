"""Plumbing shared by the client commands (``members``, ``kv``, ``catalog``, ``services``).

Owns: :class:`Context` (the streams and environment a command runs with, so
tests can hand in their own), :class:`CommandError` (a failure reported as one
line on stderr), :class:`Command`/:class:`Group` (what ``main`` dispatches to),
the HTTP flags every client command accepts and the client built from them, and
the two table layouts Consul's CLI prints (columnize and tabwriter).

Each command module declares its commands as :class:`Command` values whose
``run(ctx, values, args)`` receives parsed flags; :func:`execute` does the
parsing and the help handling for all of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import BinaryIO, TextIO

from gateway.cli.flags import FlagError, FlagSet, HelpRequested
from gateway.cli.http_client import (
    AgentClient,
    resolve_address,
    resolve_tls,
    resolve_token,
)

__all__ = [
    "Command",
    "CommandError",
    "Context",
    "Group",
    "add_http_flags",
    "columnize",
    "execute",
    "expect_no_args",
    "open_client",
    "parse_pairs",
    "server_query",
    "tabulate",
]


class CommandError(Exception):
    """A failure to report: ``str()`` is printed as is on stderr, then exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Context:
    """Where a command reads input and writes output."""

    stdout: TextIO
    stderr: TextIO
    stdin: BinaryIO | TextIO
    env: Mapping[str, str]

    @classmethod
    def from_process(cls) -> Context:
        """The process's streams and environment, looked up now (so capture works)."""
        return cls(stdout=sys.stdout, stderr=sys.stderr,
                   stdin=getattr(sys.stdin, "buffer", sys.stdin), env=os.environ)

    def out(self, text: str = "") -> None:
        """Write ``text`` and a newline to stdout."""
        self.stdout.write(text + "\n")

    def err(self, text: str) -> None:
        """Write ``text`` and a newline to stderr."""
        self.stderr.write(text + "\n")

    def out_bytes(self, data: bytes) -> None:
        """Write raw bytes (KV values need not be text) to stdout."""
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is None:
            self.stdout.write(data.decode("utf-8", "replace"))
            return
        # Text written earlier may still sit in the text layer's buffer.
        self.stdout.flush()
        buffer.write(data)
        buffer.flush()

    def read_stdin(self) -> bytes:
        """All of stdin, as bytes."""
        data = self.stdin.read()
        return data.encode("utf-8") if isinstance(data, str) else data


@dataclass(frozen=True)
class Command:
    """One runnable command, such as ``kv get``."""

    name: str
    synopsis: str
    usage: str
    flags: Callable[[], FlagSet]
    run: Callable[[Context, SimpleNamespace, list[str]], int]

    def help(self) -> str:
        """Usage text followed by the flag descriptions."""
        flag_help = self.flags().help_text()
        text = self.usage.strip("\n")
        return f"{text}\n\n{flag_help}" if flag_help else text


@dataclass(frozen=True)
class Group:
    """A command with subcommands, such as ``kv``."""

    name: str
    synopsis: str
    usage: str
    subcommands: Mapping[str, Command] = field(default_factory=dict)

    def help(self) -> str:
        """Usage text followed by the list of subcommands."""
        width = max(len(name) for name in self.subcommands)
        lines = [f"    {name.ljust(width)}    {cmd.synopsis}"
                 for name, cmd in sorted(self.subcommands.items())]
        return f"{self.usage.strip(chr(10))}\n\nSubcommands:\n" + "\n".join(lines)


def execute(command: Command, ctx: Context, argv: Sequence[str]) -> int:
    """Parse ``argv`` for ``command`` and run it; ``-h`` prints its help."""
    try:
        values, args = command.flags().parse(argv)
    except HelpRequested:
        ctx.out(command.help())
        return 0
    except FlagError as exc:
        raise CommandError(f"Error: {exc} (see 'waypost {command.name} -h')") from None
    return command.run(ctx, values, args)


def is_help(arg: str) -> bool:
    return arg in ("-h", "-help", "--help")


def dispatch_group(ctx: Context, group: Group, argv: Sequence[str]) -> int:
    """Run the subcommand of `group` that `argv` names (a group nested in a group too)."""
    if not argv:
        # Like Consul: a bare group prints its help and fails.
        ctx.err(group.help())
        return 1
    if is_help(argv[0]):
        ctx.out(group.help())
        return 0
    command = group.subcommands.get(argv[0])
    if command is None:
        raise CommandError(f'Error: unknown {group.name} subcommand "{argv[0]}" '
                           f"(run 'waypost {group.name} -h' for usage)")
    return execute(command, ctx, argv[1:])


def add_http_flags(flags: FlagSet, *, server: bool = False) -> FlagSet:
    """Add the flags naming the agent and token (Consul's "HTTP API options").

    ``server=True`` adds ``-datacenter`` and ``-stale`` for commands whose
    requests go to the servers (kv, catalog).
    """
    flags.string("http-addr", help="The address and port of the agent's HTTP API, "
                 "such as 127.0.0.1:8500 or https://host:8501. Defaults to "
                 "CONSUL_HTTP_ADDR, then WAYPOST_HTTP_ADDR, then "
                 "http://127.0.0.1:8500.")
    flags.string("token", help="ACL token for the request (sent as X-Consul-Token). "
                 "Defaults to CONSUL_HTTP_TOKEN.")
    flags.string("token-file", help="File holding the ACL token. Defaults to "
                 "CONSUL_HTTP_TOKEN_FILE.")
    flags.string("ca-file", help="CA certificate file for https addresses. "
                 "Defaults to CONSUL_CACERT.")
    flags.string("client-cert", help="Client certificate file for https addresses. "
                 "Defaults to CONSUL_CLIENT_CERT.")
    flags.string("client-key", help="Client key file for https addresses. "
                 "Defaults to CONSUL_CLIENT_KEY.")
    if server:
        flags.string("datacenter", help="Name of the datacenter to query. Defaults "
                     "to the agent's datacenter.")
        flags.bool("stale", help="Let any server answer, even one that is not the "
                   "leader, which may return stale data.")
    return flags


def open_client(ctx: Context, values: SimpleNamespace) -> AgentClient:
    """An :class:`AgentClient` for the agent the HTTP flags and env point at."""
    address = resolve_address(values.http_addr, ctx.env)
    token = resolve_token(values.token, values.token_file, ctx.env)
    tls = resolve_tls(values.ca_file, values.client_cert, values.client_key, ctx.env)
    return AgentClient(address, token, tls=tls)


def server_query(values: SimpleNamespace) -> list[tuple[str, str | None]]:
    """Query parameters for ``-datacenter`` and ``-stale``."""
    query: list[tuple[str, str | None]] = []
    if getattr(values, "datacenter", None):
        query.append(("dc", values.datacenter))
    if getattr(values, "stale", False):
        query.append(("stale", None))
    return query


def parse_pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    """Turn repeated ``-flag key=value`` values into a dict (later wins)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f'Error: invalid -{flag} "{item}": expected key=value')
        pairs[key] = value
    return pairs


def expect_no_args(args: Sequence[str]) -> None:
    """Fail, as Consul does, when a command taking no arguments got some."""
    if args:
        raise CommandError(f"Too many arguments (expected 0, got {len(args)})")


def columnize(rows: Sequence[Sequence[str]]) -> str:
    """Lay rows out as Consul's ``columnize`` does.

    Cells are trimmed, every column but the last is padded to its widest
    cell, and columns are glued with two spaces.
    """
    cells = [[str(cell).strip() for cell in row] for row in rows]
    widths: list[int] = []
    for row in cells:
        for index, cell in enumerate(row[:-1]):
            if index == len(widths):
                widths.append(0)
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[index]) for index, cell in enumerate(row[:-1])]
        lines.append("  ".join(padded + row[-1:]))
    return "\n".join(lines)


def tabulate(rows: Sequence[Sequence[str]], padding: int = 6) -> list[str]:
    """Lay rows out as Go's ``tabwriter`` with Consul's settings (padding 6).

    Every cell but the last of a row is padded to its column's widest cell
    plus ``padding``; trailing blanks are dropped from each line.
    """
    widths: list[int] = []
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            if index == len(widths):
                widths.append(0)
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in rows:
        head = "".join(cell.ljust(widths[index] + padding)
                       for index, cell in enumerate(row[:-1]))
        lines.append((head + (row[-1] if row else "")).rstrip())
    return lines
