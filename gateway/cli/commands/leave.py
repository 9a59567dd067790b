"""``waypost leave``: the agent leaves its pool gracefully, then shuts down (as Consul's)."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.cli.commands import Command, CommandError, Context, add_http_flags
from gateway.cli.commands.join import put_for_consul_error
from gateway.cli.flags import FlagSet

__all__ = ["COMMAND"]


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    if args:
        raise CommandError(f"Error found unexpected args: [{' '.join(args)}]")
    error = put_for_consul_error(ctx, values, "/v1/agent/leave")
    if error is not None:
        raise CommandError(f"Error leaving: {error}")
    ctx.out("Graceful leave complete")
    return 0


COMMAND = Command(
    name="leave",
    synopsis="Gracefully leaves the Waypost cluster and shuts down",
    usage="""
Usage: waypost leave [options]

  Causes the agent to gracefully leave the cluster and shut down. The other members then
  see it as "left" rather than "failed", and servers deregister its node from the catalog.
""",
    flags=lambda: add_http_flags(FlagSet("leave")),
    run=_run,
)
