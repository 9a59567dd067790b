"""``waypost reload``: ask the agent to re-read its configuration files."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.cli.commands import Command, Context, add_http_flags, expect_no_args, open_client
from gateway.cli.flags import FlagSet


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    expect_no_args(args)
    open_client(ctx, values).request("PUT", "/v1/agent/reload")
    ctx.out("Configuration reload triggered")
    return 0


COMMAND = Command(
    name="reload",
    synopsis="Triggers the agent to reload configuration files",
    usage="""
Usage: waypost reload [options]

  Makes the agent re-read its configuration files, as SIGHUP does. Services and checks from
  the files are added, changed or removed; a bad file leaves the running configuration alone
  and the error is reported here.
""",
    flags=lambda: add_http_flags(FlagSet("reload")),
    run=_run,
)
