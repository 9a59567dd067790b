"""The agent-local endpoints: reads and writes of this agent's own services and checks.

Named as Consul's agent endpoints (`Agent.Services`, `Agent.Service`, `Agent.ServiceRegister`,
...). Answered from the `LocalState`, never from a store, so a client agent serves them the
same way; the facade routes the queries of `queries.LOCAL_QUERIES` and the commands of
`agent.local.commands` here. Owns `?filter=` on the local lists (the rows are matched in the
shapes Consul's agent returns), the health aggregation of a local service, and Consul's
hash-based blocking of `Agent.Service`: with `QueryOptions.hash` equal to the service's
content hash, the read parks until the service changes or is removed, or the wait runs out.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail

from agent import filter as bexpr
from agent import structs
from agent.errors import InvalidRequest, NotFound
from agent.local import commands as c
from agent.local.state import LocalState
from agent.rpc import queries as q
from agent.rpc import shapes
from agent.rpc.blocking import ParkedRead
from agent.rpc.options import QueryMeta, QueryOptions, ReadResult, WriteRequest, WriteResult

_CACHE_LIMIT = 4096
_LOCAL_META = QueryMeta(index=0)  # agent-local answers carry no catalog index


def content_hash(service: structs.Service) -> str:
    """A digest that changes whenever what /v1/agent/service/<id> shows changes (Consul
    hashes its Go struct; clients only compare it)."""
    text = json.dumps(shapes.agent_service(service), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def aggregate_status(checks: list[structs.Check]) -> str:
    """Consul's AggregatedStatus: maintenance, else the worst status (none: passing)."""
    statuses = set()
    for check in checks:
        check_id = check.check_id
        if check_id == structs.NODE_MAINT or check_id.startswith(structs.SERVICE_MAINT_PREFIX):
            return structs.MAINTENANCE
        statuses.add(check.status)
    for status in (structs.CRITICAL, structs.WARNING):
        if status in statuses:
            return status
    return structs.PASSING


class LocalEndpoints:
    """Reads and writes against this agent's `LocalState`; `reactor` times hash waits."""

    def __init__(self, reactor, local: LocalState, rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self.local = local
        self._rng = rng or random.Random()
        self._filters: dict[tuple[str, int, bool], bexpr.Filter] = {}
        self._hashes: dict[str, tuple[structs.Service, str]] = {}
        self.parked = 0

    # --- reads ----------------------------------------------------------------------------------

    def read(self, query: Any, options: QueryOptions = QueryOptions()) -> ReadResult | Deferred:
        """Answer an agent-local query; a Deferred only for a hash-blocking `AgentService`."""
        reader = self._READS.get(type(query))
        if reader is None:
            raise InvalidRequest(f"no agent endpoint answers {type(query).__name__}")
        return reader(self, query, options)

    def _services(self, query: q.AgentServices, options: QueryOptions) -> ReadResult:
        found = dict(sorted(self.local.services.items()))
        if options.filter:
            selected = self._filter(options.filter, bexpr.NODE_SERVICE, lazy=False)
            found = {sid: s for sid, s in found.items()
                     if selected.matches(shapes.agent_service(s))}
        return ReadResult(found, _LOCAL_META)

    def _checks(self, query: q.AgentChecks, options: QueryOptions) -> ReadResult:
        found = {cid: lc.check for cid, lc in sorted(self.local.checks.items())}
        if options.filter:
            # As Consul: selectors and values are checked only once there is a check to filter.
            selected = self._filter(options.filter, bexpr.HEALTH_CHECK, lazy=True)
            found = {cid: check for cid, check in found.items()
                     if selected.matches(shapes.check(check, with_indexes=False))}
        return ReadResult(found, _LOCAL_META)

    def _service(self, query: q.AgentService, options: QueryOptions) -> ReadResult | Deferred:
        result = self.service_now(query.id)
        if not options.hash or options.hash != result.meta.hash:
            return result  # Consul ignores ?index here: only the hash blocks
        return _HashWait(self, query.id, options).deferred

    def service_now(self, service_id: str) -> ReadResult:
        """The service with its content hash in `meta.hash`; NotFound when there is none."""
        service = self.local.services.get(service_id)
        if service is None:
            raise NotFound(f"unknown service ID: {service_id}")
        cached = self._hashes.get(service_id)
        if cached is not None and cached[0] is service:
            digest = cached[1]
        else:
            digest = content_hash(service)
            if len(self._hashes) >= _CACHE_LIMIT:
                self._hashes.clear()
            self._hashes[service_id] = (service, digest)
        return ReadResult(service, QueryMeta(index=0, hash=digest))

    def _health_by_id(self, query: q.AgentHealthServiceByID, options: QueryOptions) -> ReadResult:
        service = self.local.services.get(query.id)
        return ReadResult(None if service is None else self._health(service), _LOCAL_META)

    def _health_by_name(self, query: q.AgentHealthServiceByName,
                        options: QueryOptions) -> ReadResult:
        found = [self._health(service) for _, service in sorted(self.local.services.items())
                 if service.name == query.name]
        return ReadResult(found, _LOCAL_META)

    def _health(self, service: structs.Service) -> q.AgentServiceHealth:
        checks = self.local.checks_of(service.id)
        return q.AgentServiceHealth(aggregate_status(checks), service, tuple(checks))

    def _filter(self, text: str, schema: bexpr.Field, lazy: bool) -> bexpr.Filter:
        key = (text, id(schema), lazy)
        found = self._filters.get(key)
        if found is None:
            found = bexpr.compile_filter(text, schema, lazy)
            if len(self._filters) >= _CACHE_LIMIT:
                self._filters.clear()
            self._filters[key] = found
        return found

    _READS: dict[type, Callable[..., Any]] = {
        q.AgentServices: _services,
        q.AgentChecks: _checks,
        q.AgentService: _service,
        q.AgentHealthServiceByID: _health_by_id,
        q.AgentHealthServiceByName: _health_by_name,
    }

    # --- writes ---------------------------------------------------------------------------------

    def write(self, command: Any, request: WriteRequest = WriteRequest()) -> Deferred:
        """Apply an agent-local command; fires with a WriteResult(index of the sync that
        carried it, True), or fails with the request's error (nothing was changed then)."""
        try:
            handler = self._WRITES.get(type(command))
            if handler is None:
                raise InvalidRequest(f"no agent endpoint takes {type(command).__name__}")
            d = handler(self.local, command)
        except Exception:  # noqa: BLE001 - one failure path for the caller, as a Deferred
            return fail()
        return d.addCallback(lambda index: WriteResult(index or 0, True))

    _WRITES: dict[type, Callable[[LocalState, Any], Deferred]] = {
        c.RegisterService: lambda local, cmd: local.add_service(
            cmd.definition, replace_existing_checks=cmd.replace_existing_checks),
        c.DeregisterService: lambda local, cmd: local.remove_service(cmd.service_id),
        c.RegisterCheck: lambda local, cmd: local.add_check(cmd.spec),
        c.DeregisterCheck: lambda local, cmd: local.remove_check(cmd.check_id),
        c.UpdateTTL: lambda local, cmd: local.update_ttl(cmd.check_id, cmd.status, cmd.output),
        c.NodeMaintenance: lambda local, cmd: local.set_node_maintenance(cmd.enable, cmd.reason),
        c.ServiceMaintenance: lambda local, cmd: local.set_service_maintenance(
            cmd.service_id, cmd.enable, cmd.reason),
    }


class _HashWait(ParkedRead):
    """One read parked on a service's content hash: answers when the hash differs, with
    NotFound when the service goes away, or with the unchanged service when the wait ends."""

    def __init__(self, owner: LocalEndpoints, service_id: str, options: QueryOptions) -> None:
        self._service_id = service_id
        self._hash = options.hash
        self._unwatch: Callable[[], None] | None = None
        super().__init__(owner, options)
        self._park()

    def _park(self) -> None:
        self._unwatch = self._owner.local.watch_service(self._service_id, self._changed)

    def _changed(self) -> None:
        self._unwatch = None
        try:
            result = self._owner.service_now(self._service_id)
        except NotFound as exc:
            self._finish(None, exc)
            return
        if result.meta.hash != self._hash:
            self._finish(result)
        else:
            self._park()  # re-registered as it was: Consul keeps waiting too

    def _timeout(self) -> None:
        self._timer = None
        try:
            result = self._owner.service_now(self._service_id)
        except NotFound as exc:
            self._finish(None, exc)
            return
        self._finish(result)

    def _unpark(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
