"""``waypost force-leave [-prune] NODE``: a failed member becomes "left" across the pool."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.cli.commands import Command, CommandError, Context, add_http_flags
from gateway.cli.commands.join import put_for_consul_error
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import quote_path

__all__ = ["COMMAND"]


def _flags() -> FlagSet:
    flags = FlagSet("force-leave")
    flags.bool("prune", help="Remove agent completely from list of members")
    return add_http_flags(flags)


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    if len(args) != 1:
        raise CommandError("A single node name must be specified to force leave.")
    query = [("prune", None)] if values.prune else []
    error = put_for_consul_error(ctx, values,
                                 "/v1/agent/force-leave/" + quote_path(args[0], False), query)
    if error is not None:
        raise CommandError(f"Error force leaving: {error}")
    return 0  # Consul prints nothing on success


COMMAND = Command(
    name="force-leave",
    synopsis="Forces a member of the cluster to enter the \"left\" state",
    usage="""
Usage: waypost force-leave [options] name

  Forces a member of a Waypost cluster to enter the "left" state. Note that if the member
  is still actually alive, it will eventually rejoin the cluster. This command is most
  useful for cleaning out "failed" nodes that are never coming back.
""",
    flags=_flags,
    run=_run,
)
