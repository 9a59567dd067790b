"""``waypost keyring``: list, install, use and remove gossip encryption keys across the pool.

As Consul's ``keyring`` command: exactly one action; its output (``==> Gathering installed
encryption keys...`` then, per pool, ``dc1 (LAN):`` and ``  KEY [n/N]`` lines) and its errors
(``error: Unexpected response code: 500 (...)`` with the agent's multierror text) are Consul's,
and the exit code is 1 unless every node answered without error.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from gateway.cli.commands import Command, CommandError, Context, add_http_flags, open_client
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import AgentError

__all__ = ["COMMAND"]

_PATH = "/v1/operator/keyring"


def _flags() -> FlagSet:
    flags = FlagSet("keyring")
    flags.string("install", help="Install a new encryption key. This will broadcast the new "
                 "key to all members in the cluster.")
    flags.bool("list", help="List all keys currently in use within the cluster.")
    flags.bool("list-primary", help="List all primary keys currently in use within the "
               "cluster.")
    flags.bool("local-only", help="Setting this to true will force the keyring query to only "
               "hit local servers (no WAN traffic). This flag can only be set for list queries.")
    flags.int("relay-factor", help="Setting this to a non-zero value will cause nodes to relay "
              "their response to the operation through this many randomly-chosen other nodes "
              "in the cluster. The maximum allowed value is 5.")
    flags.string("remove", help="Remove the given key from the cluster. This operation may "
                  "only be performed on keys which are not currently the primary key.")
    flags.string("use", help="Change the primary encryption key, which is used to encrypt "
                 "messages. The key must already be installed before this operation can "
                 "succeed.")
    return add_http_flags(flags)


def _action(values: SimpleNamespace) -> tuple[str, str] | None:
    found = None
    if values.list or values.list_primary:
        found = ("list-primary", "") if values.list_primary and not values.list else ("list", "")
        if values.list and values.list_primary:
            raise CommandError("Only a single action is allowed")
    for name in ("install", "use", "remove"):
        key = getattr(values, name) or ""
        if key:
            if found is not None:
                raise CommandError("Only a single action is allowed")
            found = (name, key)
    return found


def _call(ctx: Context, values: SimpleNamespace, method: str, key: str | None,
          query: list[tuple[str, str | None]]):
    body = None if key is None else json.dumps({"Key": key}).encode()
    try:
        response = open_client(ctx, values).request(method, _PATH, query=query, body=body,
                                                    allow=range(400, 600))
    except AgentError as exc:
        raise CommandError(f"error: {exc}") from None
    if response.status >= 400:
        text = response.body.decode("utf-8", "replace")
        raise CommandError(f"error: Unexpected response code: {response.status} ({text})")
    return response


def _pool(entry: dict) -> str:
    name = "WAN" if entry.get("WAN") else f"{entry.get('Datacenter', '')} (LAN)"
    segment = entry.get("Segment") or ""
    return f"{name}{f' [{segment}]' if segment else ''}:"


def _show(ctx: Context, entries: list, field: str) -> None:
    for entry in entries:
        lines = ["", _pool(entry)]
        lines += [f"  ===> {node}: {msg}" for node, msg in sorted((entry.get("Messages") or
                                                                  {}).items())]
        total = entry.get("NumNodes", 0)
        lines += [f"  {key} [{n}/{total}]" for key, n in sorted((entry.get(field) or
                                                                  {}).items())]
        ctx.out("\n".join(lines))


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    action = _action(values)
    if action is None:
        raise CommandError(COMMAND.help())
    if not 0 <= values.relay_factor <= 5:
        raise CommandError("Error parsing relay factor: Relay factor must be in range: [0, 5]")
    name, key = action
    if values.local_only and name != "list":  # Consul's CLI: not even -list-primary
        raise CommandError("Error validating local-only: local-only can only be set for list "
                           "requests")
    query: list[tuple[str, str | None]] = []
    if values.relay_factor:
        query.append(("relay-factor", str(values.relay_factor)))
    if name.startswith("list"):
        primary = name == "list-primary"
        ctx.out(f"==> Gathering installed {'primary ' if primary else ''}encryption keys...")
        if values.local_only:
            query.append(("local-only", "1"))
        response = _call(ctx, values, "GET", None, query)
        _show(ctx, response.json() or [], "PrimaryKeys" if primary else "Keys")
        return 0
    method, banner = {"install": ("POST", "Installing new gossip encryption key..."),
                      "use": ("PUT", "Changing primary gossip encryption key..."),
                      "remove": ("DELETE", "Removing gossip encryption key...")}[name]
    ctx.out(f"==> {banner}")
    _call(ctx, values, method, key, query)
    return 0


COMMAND = Command(
    name="keyring",
    synopsis="Manages gossip layer encryption keys",
    usage="""
Usage: waypost keyring [options]

  Manages encryption keys used for gossip messages. Gossip encryption is
  optional. When enabled, this command may be used to examine active encryption
  keys in the cluster, add new keys, and remove old ones. When combined, this
  functionality provides the ability to perform key rotation cluster-wide,
  without disrupting the cluster.

  All operations performed by this command can only be run against server nodes.
  Waypost has no WAN pool yet: they affect the LAN keyring.

  All variations of the keyring command return 0 if all nodes reply and there
  are no errors. If any node fails to reply or reports failure, the exit code
  will be 1.
""",
    flags=_flags,
    run=_run,
)
