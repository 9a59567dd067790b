"""The ``waypost`` console script: dispatch ``waypost <command> [subcommand] ...``.

Owns: the command table, top-level help and version output, and the promise
that every failure ends as one line on stderr with exit code 1 (130 after
Ctrl-C), never a traceback.

``waypost agent`` is delegated to :mod:`gateway.cli.agent_command`, imported
only when that command runs, so client commands never load Twisted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from gateway.cli.commands import (
    Command,
    CommandError,
    Context,
    Group,
    catalog,
    event,
    exec as exec_,
    dispatch_group,
    execute,
    force_leave,
    is_help,
    join,
    keygen,
    keyring,
    kv,
    leave,
    lock,
    maint,
    members,
    operator,
    reload,
    services,
    sidekick,
    snapshot,
    template,
    watch,
)
from gateway.cli.flags import FlagError
from gateway.cli.http_client import AgentError

__all__ = ["main", "run"]

VERSION = "0.1.0"
PROTOCOL_LINE = "Protocol 2 spoken by default"

_AGENT_SYNOPSIS = "Runs a Waypost agent"
_VERSION_SYNOPSIS = "Prints the Waypost version"


def _commands() -> Mapping[str, Command | Group]:
    # Built per call: no module-level mutable registry.
    return {
        "members": members.COMMAND,
        "join": join.COMMAND,
        "leave": leave.COMMAND,
        "force-leave": force_leave.COMMAND,
        "event": event.COMMAND,
        "exec": exec_.COMMAND,
        "keygen": keygen.COMMAND,
        "keyring": keyring.COMMAND,
        "kv": kv.GROUP,
        "catalog": catalog.GROUP,
        "services": services.GROUP,
        "maint": maint.COMMAND,
        "reload": reload.COMMAND,
        "watch": watch.COMMAND,
        "template": template.COMMAND,
        "lock": lock.COMMAND,
        "operator": operator.GROUP,
        "sidekick": sidekick.COMMAND,
        "snapshot": snapshot.GROUP,
    }


def usage() -> str:
    """The top-level help: every command with its one-line synopsis."""
    synopses = {"agent": _AGENT_SYNOPSIS, "version": _VERSION_SYNOPSIS}
    synopses.update({name: entry.synopsis for name, entry in _commands().items()})
    width = max(len(name) for name in synopses)
    lines = [f"    {name.ljust(width)}    {synopses[name]}" for name in sorted(synopses)]
    return ("Usage: waypost [--version] [--help] <command> [<args>]\n\n"
            "Available commands are:\n" + "\n".join(lines) + "\n\n"
            "Run 'waypost <command> -h' for a command's options.")


def _version(ctx: Context) -> int:
    ctx.out(f"Waypost v{VERSION}")
    ctx.out(PROTOCOL_LINE)
    return 0


def _run_agent(argv: Sequence[str]) -> int:
    # Imported here so that client commands never import Twisted's reactor.
    try:
        from gateway.cli import agent_command
    except ModuleNotFoundError as exc:
        if exc.name != "gateway.cli.agent_command":
            raise
        raise CommandError("Error: the agent command is not available in this build") from None
    return agent_command.main(list(argv))


def _help_for(ctx: Context, words: Sequence[str]) -> int:
    """``waypost help [command [subcommand]]``."""
    table = _commands()
    if not words:
        ctx.out(usage())
        return 0
    entry = table.get(words[0])
    if isinstance(entry, Group) and len(words) > 1:
        entry = entry.subcommands.get(words[1])
    if entry is None:
        raise CommandError(f"Error: no help for unknown command \"{' '.join(words)}\"")
    ctx.out(entry.help())
    return 0


def run(argv: Sequence[str], ctx: Context) -> int:
    """Run one command line (without the program name); may raise."""
    if not argv:
        ctx.err(usage())
        return 1
    name, rest = argv[0], argv[1:]
    if is_help(name):
        ctx.out(usage())
        return 0
    if name == "help":
        return _help_for(ctx, rest)
    if name in ("version", "-v", "-version", "--version"):
        return _version(ctx)
    if name == "agent":
        return _run_agent(rest)
    entry = _commands().get(name)
    if entry is None:
        raise CommandError(f"Error: unknown command \"{name}\" (run 'waypost -h' for usage)")
    if isinstance(entry, Group):
        return dispatch_group(ctx, entry, rest)
    return execute(entry, ctx, rest)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.startswith("Error") else f"Error: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``waypost`` script; returns the exit code."""
    ctx = Context.from_process()
    try:
        return run(sys.argv[1:] if argv is None else list(argv), ctx)
    except KeyboardInterrupt:
        return 130
    except (CommandError, AgentError) as exc:
        ctx.err(str(exc))
        return getattr(exc, "exit_code", 1)
    except FlagError as exc:  # raised by agent_command's own parsing
        ctx.err(f"Error: {exc}")
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); stop quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except Exception as exc:  # noqa: BLE001 -- the promise is: never a traceback
        ctx.err(_one_line(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
