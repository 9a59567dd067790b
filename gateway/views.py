"""Builds the frozen `CatalogView` plugins receive from the state store."""

from __future__ import annotations

from agent import structs
from gateway.hookspecs import CatalogView, NodeInfo, ServiceInstance

MAINTENANCE_CHECKS = ("_node_maintenance", "_service_maintenance:")


def build_catalog_view(store, datacenter: str) -> CatalogView:
    catalog = store.catalog
    services: dict[str, list[ServiceInstance]] = {}
    for node_name, by_id in sorted(catalog.services.items()):
        node = catalog.nodes.get(node_name)
        if node is None:
            continue
        for _, svc in sorted(by_id.items()):
            checks = catalog.instance_checks(svc)
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
    return CatalogView(index=store.index, datacenter=datacenter,
                       nodes={n.name: n.address for n in catalog.nodes.values()},
                       services={k: tuple(v) for k, v in services.items()},
                       node_info={n.name: NodeInfo(n.name, n.address, dict(n.meta),
                                                   n.datacenter or datacenter)
                                  for n in catalog.nodes.values()})
