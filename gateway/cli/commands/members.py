"""``waypost members``: the gossip pool as the agent sees it, laid out like ``consul members``.

Owns: the members command and the pure formatting of ``/v1/agent/members``
entries into Consul's standard and ``-detailed`` tables.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from gateway.cli.commands import (
    Command,
    CommandError,
    Context,
    add_http_flags,
    columnize,
    open_client,
)
from gateway.cli.flags import FlagSet

__all__ = ["COMMAND", "format_members", "is_server", "member_address", "status_name"]

# Serf's member status numbers, as /v1/agent/members reports them.
_STATUS_NAMES = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


def status_name(status: object) -> str:
    """Serf's name for a numeric member status ("unknown" for anything else)."""
    return _STATUS_NAMES.get(status, "unknown") if isinstance(status, int) else "unknown"


def member_address(member: Mapping[str, Any]) -> str:
    """``Addr:Port``, with IPv6 addresses bracketed as Go's net.TCPAddr prints them."""
    addr = str(member.get("Addr", ""))
    port = member.get("Port", 0)
    try:
        if ipaddress.ip_address(addr).version == 6:
            return f"[{addr}]:{port}"
    except ValueError:
        pass
    return f"{addr}:{port}"


def is_server(tags: Mapping[str, str]) -> bool:
    """A Consul server (role=consul), or a Waypost server, which advertises role=node and
    wp=server so Consul servers never take it for a Raft peer (see consul_tags)."""
    return tags.get("role") == "consul" or tags.get("wp") == "server"


def _with_segment_label(member: Mapping[str, Any], all_segments: bool) -> dict[str, str]:
    # Consul rewrites the segment tag before printing: servers belong to every
    # segment ("<all>") when no segment was asked for, and an empty segment
    # is the default one.
    tags = {str(k): str(v) for k, v in (member.get("Tags") or {}).items()}
    if all_segments and is_server(tags):
        tags["segment"] = "<all>"
    elif not tags.get("segment"):
        tags["segment"] = "<default>"
    return tags


def format_members(members: Sequence[Mapping[str, Any]], *, detailed: bool = False,
                   status_filter: str = ".*", all_segments: bool = True) -> str | None:
    """The ``members`` table for agent-members JSON, or None when no member matches.

    ``status_filter`` is a regular expression searched in the status name, as
    Consul's ``-status`` is. Rows are sorted by segment, so servers ("<all>")
    come first, then by node name.
    """
    pattern = re.compile(status_filter)
    chosen = []
    for member in members:
        if pattern.search(status_name(member.get("Status"))):
            chosen.append((member, _with_segment_label(member, all_segments)))
    if not chosen:
        return None
    chosen.sort(key=lambda pair: (pair[1]["segment"], str(pair[0].get("Name", ""))))
    if detailed:
        rows = [["Node", "Address", "Status", "Tags"]]
        for member, tags in chosen:
            rows.append([str(member.get("Name", "")), member_address(member),
                         status_name(member.get("Status")),
                         ",".join(f"{k}={tags[k]}" for k in sorted(tags))])
        return columnize(rows)
    rows = [["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Segment"]]
    for member, tags in chosen:
        build = tags.get("build", "")
        # The build tag is "version:revision"; an empty one means a pre-0.3 agent.
        build = build.split(":", 1)[0] if build else "< 0.3"
        kind = "server" if is_server(tags) else "client"
        rows.append([str(member.get("Name", "")), member_address(member),
                     status_name(member.get("Status")), kind, build,
                     tags.get("vsn", ""), tags.get("dc", ""), tags["segment"]])
    return columnize(rows)


def _flags() -> FlagSet:
    flags = FlagSet("members")
    flags.bool("detailed", help="Show every tag of each member.")
    flags.bool("wan", help="List the WAN pool (servers in every datacenter) "
               "instead of the LAN pool.")
    flags.string("status", default=".*", help="Only show members whose status "
                 "matches this regular expression.")
    flags.string("segment", help="Only show members of this network segment.")
    return add_http_flags(flags)


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    # `consul members` ignores stray arguments (exit 0), so we do too.
    try:
        re.compile(values.status)
    except re.error as exc:
        raise CommandError(f"Failed to compile status regexp: {exc}") from None
    query: list[tuple[str, str | None]] = []
    if values.wan:
        query.append(("wan", "1"))
    if values.segment:
        query.append(("segment", values.segment))
    response = open_client(ctx, values).request("GET", "/v1/agent/members", query=query,
                                                allow=range(400, 600))
    if response.status >= 400:
        body = " ".join(response.body.decode("utf-8", "replace").split())
        raise CommandError(f"Error retrieving members: Unexpected response code: "
                           f"{response.status} ({body})")
    members = response.json() or []
    table = format_members(members, detailed=values.detailed,
                           status_filter=values.status, all_segments=not values.segment)
    if table is None:
        # Consul exits 2, silently, when no member matches.
        return 2
    ctx.out(table)
    return 0


COMMAND = Command(
    name="members",
    synopsis="Lists the members of a Waypost cluster",
    usage="""
Usage: waypost members [options]

  Outputs the members of the cluster as a running agent sees them.
""",
    flags=_flags,
    run=_run,
)
