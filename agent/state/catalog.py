"""The catalog tables: nodes, their services and their checks, with Consul's index rules.

Written only through the FSM (by way of `StateStore`); readers get immutable rows. Besides the
table indexes, each service name keeps its own index, bumped when an instance, one of its checks
or a check of its node changes, so a blocking query on one service wakes only for that service.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Mapping

from agent import structs
from agent.errors import InvalidRequest
from agent.structs import Check, Node, Service

NODES, SERVICES, CHECKS = "nodes", "services", "checks"


class CatalogTables:
    def __init__(self, touch: Callable[[str], None]) -> None:
        self._touch = touch  # marks a table changed at the write's index
        self.nodes: dict[str, Node] = {}
        self.services: dict[str, dict[str, Service]] = {}  # node -> id -> service
        self.checks: dict[str, dict[str, Check]] = {}  # node -> check id -> check
        self.table_index: dict[str, int] = {NODES: 0, SERVICES: 0, CHECKS: 0}
        self.service_index: dict[str, int] = {}
        # Lower-cased service name -> {(node, service id)}: lookups by name (DNS, health)
        # must not scan every service of every node.
        self.by_name: dict[str, set[tuple[str, str]]] = {}

    def rebuild_name_index(self) -> None:
        """Recompute `by_name` from the rows (after a restore filled them directly)."""
        self.by_name = {}
        for node, by_id in self.services.items():
            for service in by_id.values():
                self.by_name.setdefault(service.name.lower(), set()).add((node, service.id))

    def _index_name(self, service: Service, add: bool) -> None:
        key = service.name.lower()
        if add:
            self.by_name.setdefault(key, set()).add((service.node, service.id))
            return
        group = self.by_name.get(key)
        if group is not None:
            group.discard((service.node, service.id))
            if not group:
                del self.by_name[key]

    # --- writes (index is the Raft index of the entry being applied) ---

    def _bump(self, table: str, index: int) -> None:
        self.table_index[table] = index
        self._touch(table)

    def _bump_service(self, name: str, index: int) -> None:
        self.service_index[name] = index

    def _bump_node_services(self, node: str, index: int) -> None:
        for service in self.services.get(node, {}).values():
            self._bump_service(service.name, index)

    def ensure_node(self, node: Node, index: int) -> None:
        old = self.nodes.get(node.name)
        if old is not None:
            node = replace(node, create_index=old.create_index, modify_index=old.modify_index)
            if node == old:
                return
            node = replace(node, modify_index=index)
        else:
            node = replace(node, create_index=index, modify_index=index)
        self.nodes[node.name] = node
        self._bump(NODES, index)
        self._bump_node_services(node.name, index)

    def ensure_service(self, service: Service, index: int) -> None:
        by_id = self.services.setdefault(service.node, {})
        old = by_id.get(service.id)
        if old is not None:
            service = replace(service, create_index=old.create_index, modify_index=old.modify_index)
            if service == old:
                return
            service = replace(service, modify_index=index)
            if old.name != service.name:
                self._bump_service(old.name, index)
                self._index_name(old, add=False)
        else:
            service = replace(service, create_index=index, modify_index=index)
        by_id[service.id] = service
        self._index_name(service, add=True)
        self._bump(SERVICES, index)
        self._bump_service(service.name, index)
        # Checks of this service carry its name and tags. A new service has none yet (its
        # checks are deleted with it), so bulk registration does not scan the node's checks.
        if old is None or (old.name == service.name and old.tags == service.tags):
            return
        for check in list(self.checks.get(service.node, {}).values()):
            if check.service_id == service.id and (
                    check.service_name != service.name or check.service_tags != service.tags):
                self.ensure_check(check, index)

    def ensure_check(self, check: Check, index: int) -> None:
        if check.service_id:
            service = self.services.get(check.node, {}).get(check.service_id)
            if service is None:
                raise InvalidRequest(f"Missing service registration for check {check.check_id!r}")
            check = replace(check, service_name=service.name, service_tags=service.tags)
        by_id = self.checks.setdefault(check.node, {})
        old = by_id.get(check.check_id)
        if old is not None:
            check = replace(check, create_index=old.create_index, modify_index=old.modify_index)
            if check == old:
                return
            check = replace(check, modify_index=index)
        else:
            check = replace(check, create_index=index, modify_index=index)
        by_id[check.check_id] = check
        self._bump(CHECKS, index)
        if check.service_id:
            self._bump_service(check.service_name, index)
        else:
            self._bump_node_services(check.node, index)

    def delete_check(self, node: str, check_id: str, index: int) -> None:
        check = self.checks.get(node, {}).pop(check_id, None)
        if check is None:
            return
        self._bump(CHECKS, index)
        if check.service_id:
            self._bump_service(check.service_name, index)
        else:
            self._bump_node_services(node, index)

    def delete_service(self, node: str, service_id: str, index: int) -> None:
        service = self.services.get(node, {}).pop(service_id, None)
        if service is None:
            return
        self._index_name(service, add=False)
        for check in list(self.checks.get(node, {}).values()):
            if check.service_id == service_id:
                self.delete_check(node, check.check_id, index)
        self._bump(SERVICES, index)
        self._bump_service(service.name, index)

    def delete_node(self, node: str, index: int) -> None:
        if node not in self.nodes:
            return
        for service_id in list(self.services.get(node, {})):
            self.delete_service(node, service_id, index)
        for check_id in list(self.checks.get(node, {})):
            self.delete_check(node, check_id, index)
        self.services.pop(node, None)
        self.checks.pop(node, None)
        del self.nodes[node]
        self._bump(NODES, index)

    # --- reads ---

    def node_list(self, meta: Mapping[str, str] | None = None) -> list[Node]:
        return [n for _, n in sorted(self.nodes.items()) if _meta_matches(n.meta, meta)]

    def service_tags(self) -> dict[str, list[str]]:
        """Every service name with the union of its tags, in first-seen order."""
        found: dict[str, dict[str, None]] = {}
        for node in sorted(self.services):
            for _, service in sorted(self.services[node].items()):
                tags = found.setdefault(service.name, {})
                for tag in service.tags:
                    tags[tag] = None
        return {name: list(tags) for name, tags in sorted(found.items())}

    def named(self, name_lower: str) -> list[Service]:
        """Services whose lower-cased name is `name_lower`, in (node, id) order."""
        return [self.services[node][sid]
                for node, sid in sorted(self.by_name.get(name_lower, ()))]

    def service_instances(self, name: str, tags: Iterable[str] = (),
                          node_meta: Mapping[str, str] | None = None) -> list[tuple[Node, Service]]:
        """Instances of `name` carrying every tag in `tags`, both compared case-insensitively
        as Consul's lower-cased indexes do (`/v1/catalog/service/WEB` finds "web")."""
        wanted = [t.lower() for t in tags]
        result = []
        for service in self.named(name.lower()):
            node = self.nodes.get(service.node)
            if node is None or not _meta_matches(node.meta, node_meta):
                continue
            if wanted:
                have = {t.lower() for t in service.tags}
                if not all(t in have for t in wanted):
                    continue
            result.append((node, service))
        return result

    def instance_checks(self, service: Service) -> list[Check]:
        """The checks that decide an instance's health: its node's and its own."""
        return [c for _, c in sorted(self.checks.get(service.node, {}).items())
                if not c.service_id or c.service_id == service.id]

    def node_checks(self, node: str) -> list[Check]:
        return [c for _, c in sorted(self.checks.get(node, {}).items())]

    def service_checks(self, name: str) -> list[Check]:
        return [c for node in sorted(self.checks) for _, c in sorted(self.checks[node].items())
                if c.service_id and c.service_name == name]

    def checks_in_state(self, state: str) -> list[Check]:
        return [c for node in sorted(self.checks) for _, c in sorted(self.checks[node].items())
                if state == "any" or c.status == state]

    def max_service_index(self, name: str) -> int:
        index = self.service_index.get(name)
        return self.table_index[SERVICES] if index is None else index


def _meta_matches(meta: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    if not wanted:
        return True
    return all(meta.get(k) == v for k, v in wanted.items())


def is_healthy(checks: Iterable[Check], passing_only: bool) -> bool:
    """Whether an instance survives the `?passing` filter (warning counts as failing there)."""
    if not passing_only:
        return True
    return all(c.status == structs.PASSING for c in checks)
