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


class Pending(NoLeader):
    """A read must wait (a client agent's first read of a query asks a server): the DNS
    server waits for `deferred`, then answers again (its answer is then at hand)."""

    def __init__(self, deferred) -> None:
        super().__init__()
        self.deferred = deferred


class DNSCatalog:
    """One DNS question's view of the catalog; reads go through `facade.read`."""

    def __init__(self, facade, dns_config, datacenter: str = "") -> None:
        self._facade = facade
        self._dns_config = dns_config
        if dns_config.allow_stale:
            self._options = QueryOptions(datacenter=datacenter, consistency=STALE,
                                         max_stale=dns_config.max_stale)
        else:
            self._options = QueryOptions(datacenter=datacenter, consistency=DEFAULT)

    def in_datacenter(self, datacenter: str) -> "DNSCatalog":
        """The same questions, asked of another datacenter (through our servers)."""
        return DNSCatalog(self._facade, self._dns_config, datacenter)

    def _read(self, query: Any) -> Any:
        result = self._facade.read(query, self._options)
        if not hasattr(result, "value"):
            raise Pending(result)
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
