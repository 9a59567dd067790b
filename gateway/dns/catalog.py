"""What the DNS authority reads, through the core's read seam.

`DNSCatalog` answers the four questions `ConsulAuthority` asks (a service's instances with
their checks, a node by name, every node, every service instance) with typed reads in the mode
`dns_config` allows (stale by default, as Consul's DNS): NoLeader when no fresh enough state
can be had, which the server turns into last-known (stale) answers.
"""

from __future__ import annotations

from typing import Any

from agent.errors import NoLeader
from agent.facade import DEFAULT, STALE, QueryOptions, queries
from agent.structs import Node


class DNSCatalog:
    """One DNS question's view of the catalog; reads go through `facade.read`."""

    def __init__(self, facade, dns_config) -> None:
        self._facade = facade
        if dns_config.allow_stale:
            self._options = QueryOptions(consistency=STALE, max_stale=dns_config.max_stale)
        else:
            self._options = QueryOptions(consistency=DEFAULT)

    def _read(self, query: Any) -> Any:
        result = self._facade.read(query, self._options)
        if not hasattr(result, "value"):
            # Waiting (a forwarded read) is not something a DNS answer can do: refuse it like
            # a missing leader, so the last known answer is served instead.
            result.cancel()
            raise NoLeader()
        return result.value

    def instances(self, name_lower: str) -> list[queries.CheckServiceNode]:
        """Every instance of a service (names compare case-insensitively), with its checks."""
        return self._read(queries.HealthServiceNodes(name_lower))

    def node(self, name_lower: str) -> Node | None:
        found = self._read(queries.CatalogNodeServices(name_lower))
        if found is not None:
            return found.node
        for node in self.nodes():  # node names are case-insensitive in Consul's index
            if node.name.lower() == name_lower:
                return node
        return None

    def nodes(self) -> list[Node]:
        """Every node, by name."""
        return self._read(queries.CatalogNodes())

    def instances_everywhere(self) -> list[queries.CheckServiceNode]:
        """Every service instance, by node then service ID."""
        return self._read(queries.ServiceDump())
