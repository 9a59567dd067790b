"""The server side of every typed read: how each query is answered from the state store,
which index Consul reports with it, and what a blocking query on it waits for.

`READS[type(query)]` is a `ReadSpec`: `run(store, query) -> (index, value)` and
`watch(query) -> (tables, kv_prefixes)`. The index rules are Consul's per endpoint (a KV get
reports the entry's ModifyIndex, a prefix the highest index under it including deletions, a
service read its own service index, ...). Pure functions of the store: no reactor, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from agent.rpc import queries as q
from agent.state.catalog import CHECKS, NODES, SERVICES, is_healthy
from agent.state.sessions import SESSIONS

CATALOG = (NODES, SERVICES, CHECKS)


@dataclass(frozen=True, slots=True)
class ReadSpec:
    run: Callable[[Any, Any], tuple[int, Any]]
    watch: Callable[[Any], tuple[tuple[str, ...], tuple[str, ...]]]


def _tables(*tables: str) -> Callable[[Any], tuple[tuple[str, ...], tuple[str, ...]]]:
    return lambda query: (tables, ())


def _prefix(attribute: str) -> Callable[[Any], tuple[tuple[str, ...], tuple[str, ...]]]:
    return lambda query: ((), (getattr(query, attribute),))


# --- KV ----------------------------------------------------------------------------------------

def _kv_get(store, query: q.KVGet):
    return store.kv.get(query.key)


def _kv_list(store, query: q.KVList):
    return store.kv.list(query.prefix)


def _kv_keys(store, query: q.KVKeys):
    return store.kv.keys(query.prefix, query.separator)


def _kv_tombstones(store, query: q.KVTombstones):
    kv = store.kv
    found = [(key, kv.tombstones[key]) for key in kv.tomb_order.with_prefix(query.prefix)]
    return max((index for _, index in found), default=kv.index), found


# --- catalog -----------------------------------------------------------------------------------

def _catalog_nodes(store, query: q.CatalogNodes):
    catalog = store.catalog
    return catalog.table_index[NODES], catalog.node_list(dict(query.node_meta))


def _catalog_services(store, query: q.CatalogServices):
    catalog = store.catalog
    if query.node_meta:
        tags: dict[str, dict[str, None]] = {}
        for node in catalog.node_list(dict(query.node_meta)):
            for _, service in sorted(catalog.services.get(node.name, {}).items()):
                tags.setdefault(service.name, {}).update(dict.fromkeys(service.tags))
        result = {name: list(found) for name, found in sorted(tags.items())}
    else:
        result = catalog.service_tags()
    return catalog.table_index[SERVICES], result


def _catalog_service_nodes(store, query: q.CatalogServiceNodes):
    catalog = store.catalog
    rows = [q.ServiceNode(node, service) for node, service in
            catalog.service_instances(query.service, query.tags, dict(query.node_meta))]
    return catalog.max_service_index(query.service), rows


def _catalog_node_services(store, query: q.CatalogNodeServices):
    catalog = store.catalog
    index = max(catalog.table_index[NODES], catalog.table_index[SERVICES])
    node = catalog.nodes.get(query.node)
    if node is None:
        return index, None
    return index, q.NodeServices(node, dict(sorted(catalog.services.get(query.node, {}).items())))


# --- health ------------------------------------------------------------------------------------

def _health_node(store, query: q.HealthNodeChecks):
    catalog = store.catalog
    return catalog.table_index[CHECKS], catalog.node_checks(query.node)


def _health_service_checks(store, query: q.HealthServiceChecks):
    catalog = store.catalog
    found = catalog.service_checks(query.service)
    if query.node_meta:
        names = {n.name for n in catalog.node_list(dict(query.node_meta))}
        found = [c for c in found if c.node in names]
    return catalog.max_service_index(query.service), found


def _health_service_nodes(store, query: q.HealthServiceNodes):
    catalog = store.catalog
    rows = []
    instances = catalog.service_instances(query.service, query.tags, dict(query.node_meta))
    for node, service in instances:
        checks = catalog.instance_checks(service)
        if is_healthy(checks, query.passing):
            rows.append(q.CheckServiceNode(node, service, tuple(checks)))
    return catalog.max_service_index(query.service), rows


def _health_state(store, query: q.HealthChecksInState):
    catalog = store.catalog
    found = catalog.checks_in_state(query.state)
    if query.node_meta:
        names = {n.name for n in catalog.node_list(dict(query.node_meta))}
        found = [c for c in found if c.node in names]
    return catalog.table_index[CHECKS], found


def _service_dump(store, query: q.ServiceDump):
    catalog = store.catalog
    rows = []
    for node_name, by_id in sorted(catalog.services.items()):
        node = catalog.nodes.get(node_name)
        if node is None:
            continue
        for _, service in sorted(by_id.items()):
            rows.append(q.CheckServiceNode(node, service,
                                           tuple(catalog.instance_checks(service))))
    return max(catalog.table_index.values()), rows


# --- sessions ----------------------------------------------------------------------------------

def _session_get(store, query: q.SessionGet):
    index, session = store.sessions.get(query.id)
    return index, [] if session is None else [session]


def _session_list(store, query: q.SessionList):
    return store.sessions.list()


def _session_node(store, query: q.SessionNode):
    return store.sessions.node_sessions(query.node)


READS: dict[type, ReadSpec] = {
    q.KVGet: ReadSpec(_kv_get, _prefix("key")),
    q.KVList: ReadSpec(_kv_list, _prefix("prefix")),
    q.KVKeys: ReadSpec(_kv_keys, _prefix("prefix")),
    q.KVTombstones: ReadSpec(_kv_tombstones, _prefix("prefix")),
    q.CatalogNodes: ReadSpec(_catalog_nodes, _tables(NODES)),
    q.CatalogServices: ReadSpec(_catalog_services, _tables(SERVICES, NODES)),
    q.CatalogServiceNodes: ReadSpec(_catalog_service_nodes, _tables(*CATALOG)),
    q.CatalogNodeServices: ReadSpec(_catalog_node_services, _tables(NODES, SERVICES)),
    q.HealthNodeChecks: ReadSpec(_health_node, _tables(CHECKS)),
    q.HealthServiceChecks: ReadSpec(_health_service_checks, _tables(CHECKS, SERVICES, NODES)),
    q.HealthServiceNodes: ReadSpec(_health_service_nodes, _tables(*CATALOG)),
    q.HealthChecksInState: ReadSpec(
        _health_state, lambda query: ((CHECKS, NODES) if query.node_meta else (CHECKS,), ())),
    q.ServiceDump: ReadSpec(_service_dump, _tables(*CATALOG)),
    q.SessionGet: ReadSpec(_session_get, _tables(SESSIONS)),
    q.SessionList: ReadSpec(_session_list, _tables(SESSIONS)),
    q.SessionNode: ReadSpec(_session_node, _tables(SESSIONS)),
}

assert set(READS) == set(q.STORE_QUERIES), "every store query needs a ReadSpec"
