"""``waypost operator raft|autopilot ...``: the cluster's consensus, as ``consul operator``.

Owns: the ``operator`` command tree (``raft list-peers``, ``raft remove-peer``, ``raft
transfer-leader``, ``autopilot get-config``) and the pure formatting of the operator
endpoints' JSON into Consul 1.8.7's output: the list-peers table, the remove-peer lines, the
get-config ``Name = value`` lines, and its error texts ("Error getting peers: Failed to
retrieve raft configuration: Unexpected response code: 500 (No cluster leader)").

``raft transfer-leader`` is not in Consul 1.8.7; it follows later Consul's command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from gateway.cli.commands import (
    Command,
    CommandError,
    Context,
    Group,
    add_http_flags,
    columnize,
    dispatch_group,
    open_client,
    server_query,
)
from gateway.cli.flags import FlagSet

__all__ = ["GROUP", "format_autopilot_config", "format_peers"]


def _go_quote(text: str) -> str:
    # Go's %q for the printable text IDs and addresses are; kept here so the CLI does not
    # import the agent's modules.
    return json.dumps(text, ensure_ascii=False)


def _go_bool(value: Any) -> str:
    return "true" if value else "false"


def _request(ctx: Context, values: SimpleNamespace, method: str, path: str,
             query: list[tuple[str, str | None]]) -> tuple[Any, str | None]:
    """(decoded JSON or None, None) on success, else (None, Consul's API client error)."""
    response = open_client(ctx, values).request(method, path, query=query,
                                                allow=range(400, 600))
    if response.status >= 400:
        # One line, as the other commands print agents' (possibly multi-line) errors.
        body = " ".join(response.body.decode("utf-8", "replace").split())
        return None, f"Unexpected response code: {response.status} ({body})"
    return (response.json() if response.body.strip() else None), None


def _dc_query(values: SimpleNamespace) -> list[tuple[str, str | None]]:
    # Writes carry the -datacenter flag too; -stale only means something to reads.
    return [("dc", values.datacenter)] if values.datacenter else []


# --- raft list-peers ---

def format_peers(configuration: Mapping[str, Any]) -> str:
    """Consul 1.8.7's list-peers table for a RaftConfigurationResponse."""
    rows = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]]
    for server in configuration.get("Servers") or ():
        # Servers on Raft protocol 0 or 1 do not report their version.
        protocol = str(server.get("ProtocolVersion") or "") or "<=1"
        rows.append([str(server.get("Node", "")), str(server.get("ID", "")),
                     str(server.get("Address", "")),
                     "leader" if server.get("Leader") else "follower",
                     _go_bool(server.get("Voter")), protocol])
    return columnize(rows)


def _server_flags(name: str) -> FlagSet:
    return add_http_flags(FlagSet(name), server=True)


def _list_peers(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    # Consul ignores stray arguments here (exit 0), so we do too.
    reply, error = _request(ctx, values, "GET", "/v1/operator/raft/configuration",
                            server_query(values))
    if error is not None:
        raise CommandError(f"Error getting peers: Failed to retrieve raft configuration: "
                           f"{error}")
    ctx.out(format_peers(reply or {}))
    return 0


# --- raft remove-peer ---

def _remove_peer_flags() -> FlagSet:
    flags = FlagSet("operator raft remove-peer")
    flags.string("address", default="", help="The address to remove from the Raft "
                 "configuration.")
    flags.string("id", default="", help="The ID to remove from the Raft configuration.")
    return add_http_flags(flags, server=True)


def _remove_peer(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    # As Consul, an empty -id= or -address= counts as not given.
    if not values.address and not values.id:
        raise CommandError("Error removing peer: an address or id is required for the peer "
                           "to remove")
    if values.address and values.id:
        raise CommandError("Error removing peer: cannot give both an address and id")
    which, value = ("address", values.address) if values.address else ("id", values.id)
    _, error = _request(ctx, values, "DELETE", "/v1/operator/raft/peer",
                        [(which, value), *_dc_query(values)])
    if error is not None:
        raise CommandError(f"Error removing peer: {error}")
    ctx.out(f"Removed peer with {which} {_go_quote(value)}")
    return 0


# --- raft transfer-leader ---

def _transfer_flags() -> FlagSet:
    flags = FlagSet("operator raft transfer-leader")
    flags.string("id", default="", help="The ID of the node to transfer leadership to. "
                 "Without it, the servers pick the most up-to-date voter.")
    return add_http_flags(flags, server=True)


def _transfer_leader(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    query = [("id", values.id)] if values.id else []
    reply, error = _request(ctx, values, "POST", "/v1/operator/raft/transfer-leader", query)
    # Later Consul's words, its spelling included.
    if error is not None:
        raise CommandError(f"Error transfering leadership: Failed to transfer leadership "
                           f"{error}")
    if not isinstance(reply, Mapping) or not reply.get("Success"):
        raise CommandError("Error transfering leadership: Failed to transfer leadership")
    ctx.out("Success")
    return 0


# --- autopilot get-config ---

def format_autopilot_config(config: Mapping[str, Any]) -> list[str]:
    """Consul's get-config lines for an AutopilotConfiguration."""
    return [
        f"CleanupDeadServers = {_go_bool(config.get('CleanupDeadServers'))}",
        f"LastContactThreshold = {config.get('LastContactThreshold', '0s')}",
        f"MaxTrailingLogs = {config.get('MaxTrailingLogs', 0)}",
        f"MinQuorum = {config.get('MinQuorum', 0)}",
        f"ServerStabilizationTime = {config.get('ServerStabilizationTime', '0s')}",
        f"RedundancyZoneTag = {_go_quote(str(config.get('RedundancyZoneTag', '')))}",
        f"DisableUpgradeMigration = {_go_bool(config.get('DisableUpgradeMigration'))}",
        f"UpgradeVersionTag = {_go_quote(str(config.get('UpgradeVersionTag', '')))}",
    ]


def _get_config(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    reply, error = _request(ctx, values, "GET", "/v1/operator/autopilot/configuration",
                            server_query(values))
    if error is not None:
        raise CommandError(f"Error querying Autopilot configuration: {error}")
    for line in format_autopilot_config(reply or {}):
        ctx.out(line)
    return 0


# --- autopilot set-config ---

_SET_FLAGS = (  # flag, field, kind
    ("cleanup-dead-servers", "CleanupDeadServers", "bool"),
    ("disable-upgrade-migration", "DisableUpgradeMigration", "bool"),
    ("max-trailing-logs", "MaxTrailingLogs", "int"),
    ("min-quorum", "MinQuorum", "int"),
    ("last-contact-threshold", "LastContactThreshold", "string"),
    ("server-stabilization-time", "ServerStabilizationTime", "string"),
    ("redundancy-zone-tag", "RedundancyZoneTag", "string"),
    ("upgrade-version-tag", "UpgradeVersionTag", "string"))


def _set_config_flags() -> FlagSet:
    flags = FlagSet("operator autopilot set-config")
    for name, field, kind in _SET_FLAGS:
        # Unset flags leave the stored value alone (None: not given).
        if kind == "bool":
            flags.string(name, default=None, help=f"{field}: true or false.")
        elif kind == "int":
            flags.string(name, default=None, help=f"{field}, a whole number.")
        else:
            flags.string(name, default=None, help=f"{field}.")
    return add_http_flags(flags, server=True)


def _set_config(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    """Consul's set-config: read the configuration, change the fields whose flags were
    given, write it back with ?cas=<its ModifyIndex>."""
    reply, error = _request(ctx, values, "GET", "/v1/operator/autopilot/configuration",
                            _dc_query(values))
    if error is not None:
        raise CommandError(f"Error querying Autopilot configuration: {error}")
    config = dict(reply or {})
    for name, field, kind in _SET_FLAGS:
        raw = getattr(values, name.replace("-", "_"))
        if raw is None:
            continue
        if kind == "bool":
            if raw not in ("true", "false"):
                raise CommandError(f"Error parsing -{name}: {raw!r} is not true or false")
            config[field] = raw == "true"
        elif kind == "int":
            try:
                config[field] = int(raw)
            except ValueError:
                raise CommandError(f"Error parsing -{name}: {raw!r} is not a number") from None
        else:
            config[field] = raw
    cas = str(config.pop("ModifyIndex", 0))
    config.pop("CreateIndex", None)
    response = open_client(ctx, values).request(
        "PUT", "/v1/operator/autopilot/configuration", query=[*_dc_query(values),
                                                              ("cas", cas)],
        body=json.dumps(config).encode(), allow=range(400, 600))
    if response.status >= 400:
        body = " ".join(response.body.decode("utf-8", "replace").split())
        raise CommandError(f"Error setting Autopilot configuration: Unexpected response "
                           f"code: {response.status} ({body})")
    if response.body.strip() == b"true":
        ctx.out("Configuration updated!")
        return 0
    ctx.out("Configuration could not be atomically updated, please try again")
    return 1


# --- the tree ---

RAFT = Group(
    name="operator raft",
    synopsis="Provides cluster-level tools for Waypost operators",
    usage="""
Usage: waypost operator raft <subcommand> [options]

The Raft operator command is used to interact with Waypost's Raft subsystem. The
command can be used to verify Raft peers or in rare cases to recover quorum by
removing invalid peers.
""",
    subcommands={
        "list-peers": Command(
            name="operator raft list-peers",
            synopsis="Display the current Raft peer configuration",
            usage="""
Usage: waypost operator raft list-peers [options]

  Displays the current Raft peer configuration.
""",
            flags=lambda: _server_flags("operator raft list-peers"),
            run=_list_peers),
        "remove-peer": Command(
            name="operator raft remove-peer",
            synopsis="Remove a Waypost server from the Raft configuration",
            usage="""
Usage: waypost operator raft remove-peer [options]

  Remove the server with given -address (or -id) from the Raft configuration.

  There are rare cases where a peer may be left behind in the Raft quorum even
  though the server is no longer present and known to the cluster. This command
  can be used to remove the failed server so that it no longer affects the Raft
  quorum. If the server still shows in the output of the "waypost members" command,
  it is preferable to clean up by simply running "waypost force-leave" instead of
  this command.
""",
            flags=_remove_peer_flags,
            run=_remove_peer),
        "transfer-leader": Command(
            name="operator raft transfer-leader",
            synopsis="Transfer raft leadership to another node",
            usage="""
Usage: waypost operator raft transfer-leader [options]

  Transfer raft leadership to another node (-id), or to the most up-to-date voter.
""",
            flags=_transfer_flags,
            run=_transfer_leader),
    },
)

AUTOPILOT = Group(
    name="operator autopilot",
    synopsis="Provides tools for modifying Autopilot configuration",
    usage="""
Usage: waypost operator autopilot <subcommand> [options]

  The Autopilot operator command is used to interact with Waypost's Autopilot
  subsystem. The command can be used to view the current configuration.
""",
    subcommands={
        "get-config": Command(
            name="operator autopilot get-config",
            synopsis="Display the current Autopilot configuration",
            usage="""
Usage: waypost operator autopilot get-config [options]

  Displays the current Autopilot configuration.
""",
            flags=lambda: _server_flags("operator autopilot get-config"),
            run=_get_config),
        "set-config": Command(
            name="operator autopilot set-config",
            synopsis="Modify the current Autopilot configuration",
            usage="""
Usage: waypost operator autopilot set-config [options]

  Modifies the current Autopilot configuration (only the fields whose flags are given),
  atomically: it fails if the configuration changed since it was read.
""",
            flags=_set_config_flags,
            run=_set_config),
    },
)


def _nested(group: Group) -> Command:
    """`group` as a subcommand of another group: its flag set is empty, so parsing stops
    at the subcommand's name and the rest is dispatched here (main dispatches one level)."""

    def run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
        return dispatch_group(ctx, group, args)

    return Command(name=group.name, synopsis=group.synopsis, usage=group.help(),
                   flags=lambda: FlagSet(group.name), run=run)


GROUP = Group(
    name="operator",
    synopsis="Provides cluster-level tools for Waypost operators",
    usage="""
Usage: waypost operator <subcommand> [options]

  Provides cluster-level tools for Waypost operators, such as interacting with
  the Raft subsystem. NOTE: Use this command with extreme caution, as improper
  use could lead to a cluster outage and even loss of data.

  Requests are forwarded internally to the leader if required, so this can be
  run from any node in a cluster.

  Run waypost operator <subcommand> with no arguments for help on that
  subcommand.
""",
    subcommands={"raft": _nested(RAFT), "autopilot": _nested(AUTOPILOT)},
)

