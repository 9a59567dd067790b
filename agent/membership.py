"""The catalog as gossip sees the pool: what the leader writes so that every member's node has
a `serfHealth` check telling whether it is alive (Consul's leader reconcile of Serf members).

Pure: `reconcile_commands(store, own, members)` compares the catalog with the members and
returns the commands that make it agree, nothing when it already does. Consul's rules:
- an alive member is registered (its node with the address gossip knows, `serfHealth` passing,
  "Agent alive and reachable"); its own agent's anti-entropy adds its services and node meta,
  so an existing node keeps what that sync wrote (`skip_node_update`);
- a failed member keeps its node and services, with `serfHealth` critical ("Agent not live or
  unreachable"), so its services drop out of health queries and DNS;
- a member that left (or was reaped, or force-left) is deregistered, node and all;
- a node in the catalog with a `serfHealth` check that is no member any more is deregistered
  (nodes registered through /v1/catalog/register have no such check and are left alone).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from agent import structs
from agent.fsm.commands import Deregister, Register

ALIVE, FAILED, LEFT = "alive", "failed", "left"


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """What the leader needs of a gossip member."""

    name: str
    address: str
    node_id: str
    status: str  # ALIVE, FAILED or LEFT (leaving counts as alive until it has left)


def _serf_check(node: str, status: str) -> structs.Check:
    output = structs.SERF_ALIVE_OUTPUT if status == structs.PASSING else structs.SERF_FAILED_OUTPUT
    return structs.Check(node=node, check_id=structs.SERF_CHECK_ID, name=structs.SERF_CHECK_NAME,
                         status=status, output=output)


def reconcile_commands(store: Any, own: Register, members: list[MemberFacts],
                       datacenter: str) -> list[Register | Deregister]:
    """The commands that make the catalog agree with `members` (this server's own entry is
    `own`, written as the leader's reconcile always did)."""
    catalog = store.catalog
    commands: list[Register | Deregister] = []
    if _differs(catalog, own):
        node = catalog.nodes.get(own.node.name)
        commands.append(replace(own, skip_node_update=node is not None
                                and node.address == own.node.address))
    known = {own.node.name}
    for member in members:
        if member.name == own.node.name:
            continue
        known.add(member.name)
        if member.status == LEFT:
            if member.name in catalog.nodes and _gossip_managed(catalog, member.name):
                commands.append(Deregister(node=member.name))
            continue
        status = structs.PASSING if member.status == ALIVE else structs.CRITICAL
        want = Register(node=structs.Node(name=member.name, address=member.address,
                                          node_id=member.node_id, datacenter=datacenter),
                        checks=(_serf_check(member.name, status),))
        if _differs(catalog, want):
            node = catalog.nodes.get(member.name)
            commands.append(replace(want, skip_node_update=node is not None
                                    and node.address == member.address))
    for name in sorted(catalog.nodes):
        if name not in known and _gossip_managed(catalog, name):
            commands.append(Deregister(node=name))
    return commands


def _gossip_managed(catalog: Any, node: str) -> bool:
    return structs.SERF_CHECK_ID in catalog.checks.get(node, {})


def _differs(catalog: Any, want: Register) -> bool:
    node = catalog.nodes.get(want.node.name)
    if node is None or node.address != want.node.address:
        return True
    if want.service is not None and not _same(
            catalog.services.get(node.name, {}).get(want.service.id), want.service):
        return True
    return not all(_same(catalog.checks.get(node.name, {}).get(c.check_id), c)
                   for c in want.checks)


def _same(row: Any, want: Any) -> bool:
    if row is None:
        return False
    return replace(row, create_index=0, modify_index=0) == replace(
        want, create_index=0, modify_index=0)
