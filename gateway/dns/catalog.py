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


_MEMO_LIMIT = 1024


class DNSCatalog:
    """One DNS question's view of the catalog; reads go through `facade.read`.

    `memo` (one per DNS server) keeps each read's result with the index the core would answer
    it at (`facade.local_index`): while that index stands, the same question of our own
    datacenter is answered without walking the read seam again — the uncached DNS path does
    a few thousand of these a second."""

    def __init__(self, facade, dns_config, datacenter: str = "",
                 memo: dict | None = None) -> None:
        self._facade = facade
        self._dns_config = dns_config
        self._memo = memo if memo is not None and not datacenter else None
        if dns_config.allow_stale:
            self._options = QueryOptions(datacenter=datacenter, consistency=STALE,
                                         max_stale=dns_config.max_stale)
        else:
            self._options = QueryOptions(datacenter=datacenter, consistency=DEFAULT)

    def in_datacenter(self, datacenter: str) -> "DNSCatalog":
        """The same questions, asked of another datacenter (through our servers)."""
        return DNSCatalog(self._facade, self._dns_config, datacenter)

    def _read(self, query: Any) -> Any:
        memo = self._memo
        index = None
        if memo is not None:
            index = self._facade.local_index(self._options.consistency, self._options.max_stale)
            if index is not None:
                kept = memo.get(query)
                if kept is not None and kept[0] == index:
                    return kept[1]
        result = self._facade.read(query, self._options)
        if not hasattr(result, "value"):
            raise Pending(result)
        if index is not None:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[query] = (index, result.value)
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
