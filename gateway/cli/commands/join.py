"""``waypost join [-wan] ADDRESS...``: ask the agent to join a pool through existing members.

Owns: the join command and `put_for_consul_error`, the one PUT shape the membership commands
share: success, or Consul's API client wording of a failure ("Unexpected response code: 500
(...)"), which ``consul join``/``leave``/``force-leave`` print after their own prefix.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

from gateway.cli.commands import Command, CommandError, Context, add_http_flags, open_client
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import quote_path

__all__ = ["COMMAND", "put_for_consul_error"]


def put_for_consul_error(ctx: Context, values: SimpleNamespace, path: str,
                         query: Iterable[tuple[str, str | None]] = ()) -> str | None:
    """PUT ``path``; None when it worked, else the error as Consul's API client words it.
    The agent's body is kept on one line (join errors are Go multierror text)."""
    response = open_client(ctx, values).request("PUT", path, query=list(query),
                                                allow=range(400, 600))
    if response.status < 400:
        return None
    body = " ".join(response.body.decode("utf-8", "replace").split())
    return f"Unexpected response code: {response.status} ({body})"


def _flags() -> FlagSet:
    flags = FlagSet("join")
    flags.bool("wan", help="Joins a server to another server in the WAN pool.")
    return add_http_flags(flags)


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    if not args:
        raise CommandError("At least one address to join must be specified.")
    query = [("wan", "1")] if values.wan else []
    joined = 0
    # As Consul: one request per address, each failure reported, success if any answered.
    for address in args:
        error = put_for_consul_error(ctx, values, "/v1/agent/join/" + quote_path(address, False),
                                     query)
        if error is None:
            joined += 1
        else:
            ctx.err(f"Error joining address '{address}': {error}")
    if not joined:
        raise CommandError("Failed to join any nodes.")
    ctx.out(f"Successfully joined cluster by contacting {joined} nodes.")
    return 0


COMMAND = Command(
    name="join",
    synopsis="Tell Waypost agent to join cluster",
    usage="""
Usage: waypost join [options] address ...

  Tells a running Waypost agent to join the cluster by specifying at least one existing
  member (host, host:port or [ipv6]:port; the port defaults to the Serf LAN port).
""",
    flags=_flags,
    run=_run,
)
