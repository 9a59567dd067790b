"""How the local state reaches the catalog: the `CatalogClient` interface and its in-process
implementation.

Local state and anti-entropy never touch a store or a log: they register and deregister
through a `CatalogClient` (Consul's `Catalog.Register` / `Catalog.Deregister`) and read back
what the catalog holds for this node (`Catalog.NodeServices`, `Health.NodeChecks`). On a server
the client calls the server endpoints in process; a client agent (the gossip issue) gets one
that sends the same requests to a server over RPC.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, maybeDeferred

from agent.fsm.commands import Deregister, Register
from agent.rpc import queries
from agent.rpc.options import QueryOptions, WriteRequest


class CatalogClient(Protocol):
    """The catalog as the local state sees it. Every call answers with a Deferred."""

    def register(self, command: Register, token: str = "") -> Deferred:
        """Catalog.Register; fires with a WriteResult, or fails with the server's error."""

    def deregister(self, command: Deregister, token: str = "") -> Deferred:
        """Catalog.Deregister; fires with a WriteResult."""

    def node_services(self, node: str, token: str = "") -> Deferred:
        """Catalog.NodeServices: fires with a `queries.NodeServices`, or None (no such node)."""

    def node_checks(self, node: str, token: str = "") -> Deferred:
        """Health.NodeChecks: fires with the node's checks (a list of `structs.Check`)."""


Write = Callable[[Any, WriteRequest], Any]  # (command, WriteRequest) -> Deferred[WriteResult]
Read = Callable[[Any, QueryOptions], Any]  # (query, QueryOptions) -> ReadResult | Deferred


class InProcessCatalog:
    """A `CatalogClient` over the server endpoints of this process (their `write` and `read`,
    or the facade's), in the default consistency mode, as Consul's agent asks its servers."""

    def __init__(self, write: Write, read: Read, datacenter: str = "") -> None:
        self._write = write
        self._read = read
        self._datacenter = datacenter

    def register(self, command: Register, token: str = "") -> Deferred:
        return maybeDeferred(self._write, command, WriteRequest(self._datacenter, token))

    def deregister(self, command: Deregister, token: str = "") -> Deferred:
        return maybeDeferred(self._write, command, WriteRequest(self._datacenter, token))

    def node_services(self, node: str, token: str = "") -> Deferred:
        return self._value(queries.CatalogNodeServices(node), token)

    def node_checks(self, node: str, token: str = "") -> Deferred:
        return self._value(queries.HealthNodeChecks(node), token)

    def _value(self, query: Any, token: str) -> Deferred:
        options = QueryOptions(datacenter=self._datacenter, token=token)
        return maybeDeferred(self._read, query, options).addCallback(lambda result: result.value)


def as_catalog_client(catalog: Any) -> Any:
    """`catalog` if it is a `CatalogClient`; a clear error otherwise."""
    if hasattr(catalog, "register") and hasattr(catalog, "node_services"):
        return catalog
    raise TypeError(f"not a CatalogClient: {catalog!r}")
