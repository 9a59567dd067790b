"""``waypost event -name=NAME [-node RE] [-service RE] [-tag RE] [payload]``: fire a user event.

Owns: the event command, worded as ``consul event``: the filters are checked locally first,
the agent is asked who it is (so an unreachable agent fails before anything is sent), then
``PUT /v1/event/fire/<name>`` with the payload as the body; prints ``Event ID: <id>``.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from gateway.cli.commands import Command, CommandError, Context, add_http_flags, open_client
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import AgentError, quote_path

__all__ = ["COMMAND", "check_filters", "fire_query"]


def check_filters(node: str, service: str, tag: str) -> None:
    """Consul's CLI checks: each filter compiles, a tag filter needs a service filter."""
    for pattern, what in ((node, "node"), (service, "service"), (tag, "tag")):
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise CommandError(f"Failed to compile {what} filter regexp: {exc}") from None
    if tag and not service:
        raise CommandError("Cannot provide tag filter without service filter.")


def fire_query(node: str, service: str, tag: str) -> list[tuple[str, str | None]]:
    return [(key, value) for key, value in (("node", node), ("service", service), ("tag", tag))
            if value]


def _flags() -> FlagSet:
    flags = FlagSet("event")
    flags.string("name", default="", help="Name of the event.")
    flags.string("node", default="", help="Regular expression to filter on node names.")
    flags.string("service", default="",
                 help="Regular expression to filter on service instances.")
    flags.string("tag", default="", help="Regular expression to filter on service tags. "
                 "Must be used with -service.")
    return add_http_flags(flags)


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    if not values.name:
        raise CommandError("Event name must be specified\n\n" + COMMAND.help())
    check_filters(values.node, values.service, values.tag)
    if len(args) > 1:
        raise CommandError("Too many command line arguments.\n\n" + COMMAND.help())
    payload = args[0].encode("utf-8", "surrogateescape") if args else None
    client = open_client(ctx, values)
    try:
        client.request("GET", "/v1/agent/self")
    except AgentError as exc:
        raise CommandError(f"Error querying Consul agent: {exc}") from None
    response = client.request("PUT", "/v1/event/fire/" + quote_path(values.name, False),
                              query=fire_query(values.node, values.service, values.tag),
                              body=payload, allow=range(400, 600))
    if response.status >= 400:
        body = " ".join(response.body.decode("utf-8", "replace").split())
        raise CommandError(f"Error firing event: Unexpected response code: "
                           f"{response.status} ({body})")
    ctx.out(f"Event ID: {response.json()['ID']}")
    return 0


COMMAND = Command(
    name="event",
    synopsis="Fire a new event",
    usage="""
Usage: waypost event [options] [payload]

  Dispatches a custom user event across a datacenter. An event must provide
  a name, but a payload is optional. Events support filtering using
  regular expressions on node name, service, and tag definitions.
""",
    flags=_flags,
    run=_run,
)
