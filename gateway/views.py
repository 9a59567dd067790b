"""Builds the frozen `CatalogView` plugins receive, from the core's read seam."""

from __future__ import annotations

from agent import structs
from agent.facade import STALE, QueryOptions, queries
from gateway.hookspecs import CatalogView, NodeInfo, ServiceInstance

MAINTENANCE_CHECKS = (structs.NODE_MAINT, structs.SERVICE_MAINT_PREFIX)


# Plugins follow this agent's replica (a stale read: no round trip to a leader).
_LOCAL = QueryOptions(consistency=STALE)


def build_catalog_view(facade, datacenter: str) -> CatalogView:
    """The view of the whole catalog, read through the facade's read seam."""
    dump = facade.read(queries.ServiceDump(), _LOCAL).value
    nodes = facade.read(queries.CatalogNodes(), _LOCAL).value
    services: dict[str, list[ServiceInstance]] = {}
    for row in dump:
        node, svc, checks = row.node, row.service, row.checks
        if any(c.check_id.startswith(MAINTENANCE_CHECKS) for c in checks):
            status = structs.MAINTENANCE
        else:
            status = structs.worst_status(c.status for c in checks)
        services.setdefault(svc.name, []).append(ServiceInstance(
            node=node.name, node_address=node.address, service_id=svc.id, name=svc.name,
            address=svc.address or node.address, port=svc.port, tags=svc.tags,
            meta=dict(svc.meta), status=status,
            weights=(svc.weights.passing, svc.weights.warning), node_meta=dict(node.meta),
            datacenter=node.datacenter or datacenter))
    index = facade.local_index(STALE) or 0
    return CatalogView(index=index, datacenter=datacenter,
                       nodes={n.name: n.address for n in nodes},
                       services={k: tuple(v) for k, v in services.items()},
                       node_info={n.name: NodeInfo(n.name, n.address, dict(n.meta),
                                                   n.datacenter or datacenter)
                                  for n in nodes})
