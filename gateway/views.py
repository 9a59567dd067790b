"""Builds the frozen `CatalogView` plugins receive from the state store."""

from __future__ import annotations

from agent import structs
from gateway.hookspecs import CatalogView, ServiceInstance


def build_catalog_view(store, datacenter: str) -> CatalogView:
    catalog = store.catalog
    services: dict[str, list[ServiceInstance]] = {}
    for node_name, by_id in sorted(catalog.services.items()):
        node = catalog.nodes.get(node_name)
        if node is None:
            continue
        for _, svc in sorted(by_id.items()):
            status = structs.worst_status(c.status for c in catalog.instance_checks(svc))
            services.setdefault(svc.name, []).append(ServiceInstance(
                node=node.name, node_address=node.address, service_id=svc.id, name=svc.name,
                address=svc.address or node.address, port=svc.port, tags=svc.tags,
                meta=dict(svc.meta), status=status))
    return CatalogView(index=store.index, datacenter=datacenter,
                       nodes={n.name: n.address for n in catalog.nodes.values()},
                       services={k: tuple(v) for k, v in services.items()})
