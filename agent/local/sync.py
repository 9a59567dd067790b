"""Syncing the local state to the catalog: partial syncs of what changed, full syncs that read
the catalog back, one at a time.

Owns Consul's `SyncChanges` and `SyncFull` (agent/local/state.go) over a `CatalogClient`:
- a partial sync writes every entry marked out of sync (a service carries its out-of-sync
  checks in the same registration, as Consul's does), deregisters every entry marked deleted,
  and writes the node's info when it drifted; the writes of one pass go out together, so a
  log with group commit makes them durable with one fsync. A write that succeeds marks its
  entry in sync — unless the entry changed again meanwhile (generations, `SyncFlags`);
- a full sync reads what the catalog holds for this node, marks what differs (or is missing,
  or is in the catalog only) and then runs a partial sync;
- `trigger()` coalesces changes: a change made while a pass is running is carried by the
  next one, and the caller learns when its change was carried. Passes and full syncs never
  overlap (the catalog sees an entry's writes in the order they were made).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterable

import txaio
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, maybeDeferred, succeed
from twisted.python.failure import Failure

from agent import structs
from agent.fsm.commands import Deregister, Register

if TYPE_CHECKING:
    from agent.local.entries import LocalCheck
    from agent.local.state import LocalState

txaio.use_twisted()


def _plain(row: Any) -> Any:
    return replace(row, create_index=0, modify_index=0)


def _index(result: Any) -> int:
    return getattr(result, "index", 0) or 0


class CatalogSync:
    """Writes `local`'s out-of-sync entries through `catalog` (a `CatalogClient`)."""

    log = txaio.make_logger()

    def __init__(self, local: "LocalState", catalog: Any, node: Callable[[], structs.Node], *,
                 keep_services: frozenset[str] = frozenset(),
                 keep_checks: frozenset[str] = frozenset()) -> None:
        self.local = local
        self.catalog = catalog
        self.node = node
        # Rows the agent owns outside local state (a server's consul service, serfHealth):
        # a full sync leaves them in the catalog.
        self.keep_services = keep_services
        self.keep_checks = keep_checks
        # Told when a pass fails (anti-entropy retries with backoff).
        self.on_failure: Callable[[Failure], None] | None = None
        self._lock = DeferredLock()
        self._waiters: list[Deferred] | None = None  # changes the next pass will carry
        self.passes = 0

    # --- scheduling -------------------------------------------------------------------------

    def trigger(self) -> Deferred:
        """A partial sync now (or right after the one running); fires with the highest index
        that pass wrote at (0: nothing written, or it failed). Never fails: a failed pass is
        logged, reported to `on_failure`, and its entries stay out of sync."""
        waiter: Deferred = Deferred()
        if self._waiters is None:
            self._waiters = [waiter]
            self._lock.run(self._partial_pass).addErrback(self._failed)
        else:
            self._waiters.append(waiter)
        return waiter

    def exclusive(self, work: Callable[[], Deferred]) -> Deferred:
        """Run `work` (a full sync) when no pass is running; fires with its result."""
        return self._lock.run(work)

    def _partial_pass(self) -> Deferred:
        waiters, self._waiters = self._waiters or [], None
        d = maybeDeferred(self.sync_changes)

        def answer(result: Any) -> Any:
            index = result if isinstance(result, int) else 0
            for waiter in waiters:
                if not waiter.called:  # a caller that went away cancelled its own
                    waiter.callback(index)
            return result
        return d.addBoth(answer)

    def _failed(self, failure: Failure) -> None:
        if self.on_failure is not None:
            self.on_failure(failure)
        else:  # no anti-entropy to retry it: the entries stay out of sync until the next change
            self.log.error("a local state sync failed: {error}", error=failure.getErrorMessage())

    # --- the partial sync -------------------------------------------------------------------

    def sync_changes(self) -> Deferred:
        """Write every out-of-sync entry; fires with the highest index written, or fails with
        the first write's error once every write has answered (the others stand)."""
        self.passes += 1
        local = self.local
        node = self.node()
        writes: list[Deferred] = []
        if not local.node_in_sync:
            writes.append(self._register_node(node))
        services, checks = local.service_flags, local.check_flags
        deleted_services = {sid: gen for sid, gen, _ in services.deleted()}
        taken_along: dict[str, list[tuple[str, int]]] = {}
        lone_deleted = []
        for cid, gen, owner in checks.deleted():
            if owner in deleted_services:  # deregistering the service removes it
                taken_along.setdefault(owner, []).append((cid, gen))
            else:
                lone_deleted.append((cid, gen))
        dirty_services = dict(services.dirty())
        riders: dict[str, list[tuple["LocalCheck", int]]] = {}
        lone: list[tuple["LocalCheck", int]] = []
        for cid, gen in checks.dirty():
            entry = local.checks.get(cid)
            if entry is None:
                checks.forget(cid)
                continue
            sid = entry.check.service_id
            # As Consul, a check rides with its service only under the service's token.
            if sid in dirty_services and entry.spec.token == local.service_tokens.get(sid, ""):
                riders.setdefault(sid, []).append((entry, gen))
            else:
                lone.append((entry, gen))
        for sid, gen in deleted_services.items():
            writes.append(self._deregister_service(node.name, sid, gen, taken_along.get(sid, ())))
        for sid, gen in dirty_services.items():
            service = local.services.get(sid)
            if service is None:
                services.forget(sid)
                continue
            writes.append(self._register_service(node, service, gen, riders.get(sid, ())))
        for entry, gen in lone:
            writes.append(self._register_check(node, entry, gen))
        for cid, gen in lone_deleted:
            writes.append(self._deregister_check(node.name, cid, gen))
        if not writes:
            return succeed(0)
        return DeferredList(writes, consumeErrors=True).addCallback(_outcome)

    def _register_node(self, node: structs.Node) -> Deferred:
        def done(result: Any) -> int:
            self.local.node_in_sync = True
            self._synced("Synced node info")
            return _index(result)
        return self.catalog.register(Register(node=node)).addCallbacks(
            done, self._write_failed, errbackArgs=("node info", node.name))

    def _register_service(self, node: structs.Node, service: structs.Service, gen: int,
                          riders: Iterable[tuple["LocalCheck", int]]) -> Deferred:
        riders = list(riders)
        for entry, _ in riders:
            _cancel_deferred(entry)  # this write carries its latest output
        command = Register(node=node, service=service, skip_node_update=True,
                           checks=tuple(entry.check for entry, _ in riders))

        def done(result: Any) -> int:
            self.local.service_flags.synced(service.id, gen)
            self._synced("Synced service: service={service}", service=service.id)
            for entry, check_gen in riders:
                self.local.check_flags.synced(entry.check.check_id, check_gen)
                self._synced("Synced check: check={check}", check=entry.check.check_id)
            return _index(result)
        token = self.local.service_tokens.get(service.id, "")
        return self.catalog.register(command, token).addCallbacks(
            done, self._write_failed, errbackArgs=("service", service.id))

    def _register_check(self, node: structs.Node, entry: "LocalCheck", gen: int) -> Deferred:
        _cancel_deferred(entry)
        check = entry.check

        def done(result: Any) -> int:
            self.local.check_flags.synced(check.check_id, gen)
            self._synced("Synced check: check={check}", check=check.check_id)
            return _index(result)
        command = Register(node=node, checks=(check,), skip_node_update=True)
        return self.catalog.register(command, entry.spec.token).addCallbacks(
            done, self._write_failed, errbackArgs=("check", check.check_id))

    def _deregister_service(self, node: str, service_id: str, gen: int,
                            checks: Iterable[tuple[str, int]]) -> Deferred:
        checks = list(checks)

        def done(result: Any) -> int:
            self.local.service_flags.purged(service_id, gen)
            for check_id, check_gen in checks:
                self.local.check_flags.purged(check_id, check_gen)
            self._synced("Deregistered service: service={service}", service=service_id)
            return _index(result)
        return self.catalog.deregister(Deregister(node=node, service_id=service_id)).addCallbacks(
            done, self._write_failed, errbackArgs=("service", service_id))

    def _deregister_check(self, node: str, check_id: str, gen: int) -> Deferred:
        def done(result: Any) -> int:
            self.local.check_flags.purged(check_id, gen)
            self._synced("Deregistered check: check={check}", check=check_id)
            return _index(result)
        return self.catalog.deregister(Deregister(node=node, check_id=check_id)).addCallbacks(
            done, self._write_failed, errbackArgs=("check", check_id))

    def _synced(self, message: str, **fields: str) -> None:
        # Consul's lines ("Synced service: service=web").
        self.log.info(message, **fields)

    def _write_failed(self, failure: Failure, kind: str, key: str) -> Failure:
        self.log.warn("a local state write failed (syncing {kind} {key}): {error}; it stays "
                      "out of sync and is retried", kind=kind, key=key,
                      error=failure.getErrorMessage())
        return failure

    # --- the full sync ----------------------------------------------------------------------

    def sync_full(self) -> Deferred:
        """Read what the catalog holds for this node, mark what differs, then sync it."""
        node = self.node()
        d = self.catalog.node_services(node.name)
        d.addCallback(lambda found: self.catalog.node_checks(node.name).addCallback(
            lambda checks: self._compare(node, found, checks)))
        return d.addCallback(lambda _: self.sync_changes())

    def _compare(self, node: structs.Node, found: Any, remote_checks: list) -> None:
        local = self.local
        if found is None or _plain(found.node) != _plain(node):
            local.node_in_sync = False
        remote_services = dict(found.services) if found is not None else {}
        services, checks = local.service_flags, local.check_flags
        for sid in list(local.services):
            if sid not in remote_services:
                services.set_in_sync(sid, False)
        for sid, remote in remote_services.items():
            mine = local.services.get(sid)
            if mine is None:
                if sid not in self.keep_services and not services.is_deleted(sid):
                    services.removed(sid)  # someone else's row for this node: it goes
                continue
            if mine.enable_tag_override and remote.tags != mine.tags:
                mine = local.adopt_tags(sid, remote.tags)  # tags edited in the catalog win
            services.set_in_sync(sid, _plain(remote) == _plain(mine))
        by_id = {check.check_id: check for check in remote_checks}
        for cid in list(local.checks):
            if cid not in by_id:
                checks.set_in_sync(cid, False)
        for cid, remote in by_id.items():
            entry = local.checks.get(cid)
            if entry is None:
                if cid not in self.keep_checks and not checks.is_deleted(cid):
                    checks.removed(cid, remote.service_id)
                continue
            mine = self._expected(entry.check)
            if entry.deferred is not None:
                # An output-only change waits for its write-back (Consul's DeferCheck): the
                # full sync does not push it early.
                mine, remote = replace(mine, output=""), replace(remote, output="")
            checks.set_in_sync(cid, _plain(remote) == _plain(mine))

    def _expected(self, check: structs.Check) -> structs.Check:
        """The row the catalog would hold for a local check (it fills in service fields)."""
        service = self.local.services.get(check.service_id)
        if service is None:
            return check
        return replace(check, service_name=service.name, service_tags=service.tags)


def _cancel_deferred(entry: "LocalCheck") -> None:
    if entry.deferred is not None:
        if entry.deferred.active():
            entry.deferred.cancel()
        entry.deferred = None


def _outcome(results: list) -> int:
    """The highest index written; the first failure, once every write has answered."""
    index = 0
    for ok, result in results:
        if not ok:
            result.raiseException()
        index = max(index, result)
    return index
