"""``waypost catalog services|nodes``: read the catalog, laid out like ``consul catalog``.

Owns: the catalog commands and the pure formatting of catalog JSON
(``/v1/catalog/services``, ``/v1/catalog/node/<n>``, ``/v1/catalog/nodes``,
``/v1/catalog/service/<s>``) into Consul's lists and tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from gateway.cli.commands import (
    Command,
    Context,
    Group,
    add_http_flags,
    columnize,
    expect_no_args,
    open_client,
    parse_pairs,
    server_query,
    tabulate,
)
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import quote_path

__all__ = ["GROUP", "format_nodes", "format_services", "nodes_from_service_entries",
           "services_of_node"]

_NO_SERVICES = "No services match the given query - try expanding your search."
_NO_NODES = "No nodes match the given query - try expanding your search."


def services_of_node(node_info: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """``{service name: tags}`` from a ``/v1/catalog/node/<name>`` answer."""
    services: dict[str, list[str]] = {}
    for entry in ((node_info or {}).get("Services") or {}).values():
        name = str(entry.get("Service", ""))
        services.setdefault(name, []).extend(entry.get("Tags") or [])
    return services


def format_services(services: Mapping[str, Sequence[str] | None], tags: bool = False) -> str:
    """Service names sorted, one a line; ``tags`` adds their sorted tags."""
    names = sorted(services)
    if not tags:
        return "\n".join(names)
    rows = [[name, ",".join(sorted(services[name] or []))] for name in names]
    return "\n".join(tabulate(rows))


def nodes_from_service_entries(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Node records for the nodes providing a service (``/v1/catalog/service/<s>``).

    A node running several instances appears once.
    """
    nodes: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name = str(entry.get("Node", ""))
        nodes.setdefault(name, {
            "ID": entry.get("ID", ""), "Node": name, "Address": entry.get("Address", ""),
            "Datacenter": entry.get("Datacenter", ""),
            "TaggedAddresses": entry.get("TaggedAddresses") or {},
            "Meta": entry.get("NodeMeta") or {},
        })
    return list(nodes.values())


def _key_values(mapping: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((mapping or {}).items()))


def format_nodes(nodes: Sequence[Mapping[str, Any]], detailed: bool = False,
                 keep_order: bool = False) -> str:
    """The ``catalog nodes`` table, sorted by node name unless ``keep_order``.

    The short form shows a node ID up to its first dash (the first 8 hex
    digits of a UUID), as Consul does; ``detailed`` shows the whole ID, the
    tagged addresses and the node meta.
    """
    if not keep_order:
        nodes = sorted(nodes, key=lambda n: str(n.get("Node", "")))
    if detailed:
        rows = [["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]]
        for node in nodes:
            rows.append([str(node.get("Node", "")), str(node.get("ID", "")),
                         str(node.get("Address", "")), str(node.get("Datacenter", "")),
                         _key_values(node.get("TaggedAddresses")),
                         _key_values(node.get("Meta"))])
        return columnize(rows)
    rows = [["Node", "ID", "Address", "DC"]]
    for node in nodes:
        node_id = str(node.get("ID", ""))
        dash = node_id.find("-")
        rows.append([str(node.get("Node", "")), node_id[:dash] if dash > 0 else node_id,
                     str(node.get("Address", "")), str(node.get("Datacenter", ""))])
    return columnize(rows)


def _node_meta_query(values: SimpleNamespace) -> list[tuple[str, str | None]]:
    # The HTTP API spells a node-meta filter "key:value", the flag "key=value".
    meta = parse_pairs(values.node_meta, "node-meta")
    return [("node-meta", f"{k}:{v}") for k, v in meta.items()]


def _services_flags() -> FlagSet:
    flags = FlagSet("catalog services")
    flags.string("node", help="List the services of this node (name or ID).")
    flags.strings("node-meta", help="Only services on nodes with this key=value "
                  "metadata. Repeatable.")
    flags.bool("tags", help="Show each service's tags beside it.")
    return add_http_flags(flags, server=True)


def _services(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    expect_no_args(args)
    query = server_query(values) + _node_meta_query(values)
    client = open_client(ctx, values)
    if values.node:
        path = "/v1/catalog/node/" + quote_path(values.node, keep_slashes=False)
        services = services_of_node(client.get_json(path, query=query))
    else:
        services = client.get_json("/v1/catalog/services", query=query, missing={}) or {}
    if not services:
        ctx.err(_NO_SERVICES)
        return 0
    ctx.out(format_services(services, tags=values.tags))
    return 0


def _nodes_flags() -> FlagSet:
    flags = FlagSet("catalog nodes")
    flags.bool("detailed", help="Show full node IDs, tagged addresses and node meta.")
    flags.string("near", help="Sort nodes by estimated round-trip time from this "
                 'node ("_agent" for the queried agent\'s node).')
    flags.strings("node-meta", help="Only nodes with this key=value metadata. "
                  "Repeatable.")
    flags.string("service", help="Only nodes providing this service (name).")
    return add_http_flags(flags, server=True)


def _nodes(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    expect_no_args(args)
    query = server_query(values) + _node_meta_query(values)
    if values.near:
        query.append(("near", values.near))
    client = open_client(ctx, values)
    if values.service:
        path = "/v1/catalog/service/" + quote_path(values.service, keep_slashes=False)
        nodes = nodes_from_service_entries(client.get_json(path, query=query, missing=[])
                                           or [])
    else:
        nodes = client.get_json("/v1/catalog/nodes", query=query, missing=[]) or []
    if not nodes:
        ctx.err(_NO_NODES)
        return 0
    # With -near the agent's order (by round-trip time) is the point.
    ctx.out(format_nodes(nodes, detailed=values.detailed, keep_order=bool(values.near)))
    return 0


GROUP = Group(
    name="catalog",
    synopsis="Interact with the catalog",
    usage="""
Usage: waypost catalog <subcommand> [options] [args]

  Reads the catalog of nodes and services.

      $ waypost catalog nodes
      $ waypost catalog nodes -service=web
      $ waypost catalog services -tags
""",
    subcommands={
        "services": Command(
            name="catalog services",
            synopsis="Lists all registered services in a datacenter",
            usage="""
Usage: waypost catalog services [options]

  Lists the services registered in a datacenter (by default the agent's), or
  on one node with -node.
""",
            flags=_services_flags, run=_services),
        "nodes": Command(
            name="catalog nodes",
            synopsis="Lists all nodes in the given datacenter",
            usage="""
Usage: waypost catalog nodes [options]

  Lists the nodes registered in a datacenter (by default the agent's), or
  those providing one service with -service.
""",
            flags=_nodes_flags, run=_nodes),
    },
)
