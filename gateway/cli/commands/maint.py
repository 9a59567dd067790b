"""``waypost maint``: put the node or a service into maintenance, take it out, or show it.

Plain ``waypost maint`` prints what is in maintenance now and nothing when nothing is, so a run
script can refuse to start a service under maintenance (``[ -z "$(waypost maint)" ]``).
"""

from __future__ import annotations

from types import SimpleNamespace

from agent.structs import NODE_MAINT, SERVICE_MAINT_PREFIX
from gateway.cli.commands import (Command, CommandError, Context, add_http_flags,
                                  expect_no_args, open_client)
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import quote_path

NODE_CHECK = NODE_MAINT
SERVICE_PREFIX = SERVICE_MAINT_PREFIX


def _flags() -> FlagSet:
    flags = FlagSet("maint")
    flags.bool("enable", help="Enable maintenance mode.")
    flags.bool("disable", help="Disable maintenance mode.")
    flags.string("reason", default="", help="A text saying why; shown in the check's notes.")
    flags.string("service", default="", help="The ID of a service to act on instead of the node.")
    return add_http_flags(flags)


def format_maintenance(checks: dict) -> str:
    """The listing of plain ``waypost maint``: a block for the node and one per service."""
    blocks = []
    for check_id, check in sorted(checks.items()):
        if check_id == NODE_CHECK:
            blocks.append(f"Node:\n  Name:   {check.get('Node', '')}\n  Reason: {check.get('Notes', '')}")
    for check_id, check in sorted(checks.items()):
        if check_id.startswith(SERVICE_PREFIX):
            blocks.append(f"Service:\n  ID:     {check.get('ServiceID', '')}\n"
                          f"  Reason: {check.get('Notes', '')}")
    return "\n\n".join(blocks)


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    expect_no_args(args)
    if values.enable and values.disable:
        raise CommandError("Only one of -enable or -disable may be provided")
    client = open_client(ctx, values)
    if not values.enable and not values.disable:
        if values.reason or values.service:
            raise CommandError("Error: -reason and -service need -enable or -disable")
        text = format_maintenance(client.get_json("/v1/agent/checks", missing={}) or {})
        if text:
            ctx.out(text)
        return 0
    query = [("enable", "true" if values.enable else "false")]
    if values.reason:
        query.append(("reason", values.reason))
    if values.service:
        client.request("PUT", "/v1/agent/service/maintenance/" + quote_path(values.service, False),
                       query=query)
        verb = "entered" if values.enable else "left"
        ctx.out(f"Service {verb} maintenance mode: {values.service}")
    else:
        client.request("PUT", "/v1/agent/maintenance", query=query)
        ctx.out("Node entered maintenance mode" if values.enable else "Node left maintenance mode")
    return 0


COMMAND = Command(
    name="maint",
    synopsis="Controls node or service maintenance mode",
    usage="""
Usage: waypost maint [options]

  Places a node or service into maintenance mode, where it is reported as critical and left
  out of DNS and healthy-service answers. With no flags, prints what is in maintenance now
  (nothing when nothing is).

      $ waypost maint -enable -reason "kernel upgrade"
      $ waypost maint -enable -service web
      $ waypost maint -disable
""",
    flags=_flags,
    run=_run,
)
