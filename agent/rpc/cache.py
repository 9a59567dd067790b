"""The agent's cache (Consul's `?cached`): answers kept per query and refreshed in the
background with blocking reads, so a client asking again is answered without a round trip.

Consul 1.8.7 caches these reads: catalog datacenters, catalog services, catalog service
nodes, health service nodes. An answer from the cache reports a hit and its age; the first ask
(or one older than the client's `Cache-Control: max-age`) is a miss that fetches. An entry is
refreshed by a blocking read on its index for as long as it is used, and dropped after
`LAST_GET_TTL` without a request (Consul's 72 h), or when the cache is full.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import txaio
from twisted.internet.defer import Deferred

from agent.rpc import queries as q
from agent.rpc.options import MAX_WAIT, QueryOptions, ReadResult

txaio.use_twisted()

CACHEABLE = (q.CatalogDatacenters, q.CatalogServices, q.CatalogServiceNodes,
             q.HealthServiceNodes)
LAST_GET_TTL = 72 * 3600.0
MAX_ENTRIES = 1024
REFRESH_RETRY = 1.0  # seconds after a failed background refresh


class _Entry:
    __slots__ = ("result", "fetched_at", "used_at", "refreshing", "healthy", "waiters", "timer")

    def __init__(self, result: ReadResult, now: float) -> None:
        self.result = result
        self.fetched_at = now
        self.used_at = now
        self.refreshing: Deferred | None = None
        self.healthy = True  # the last background refresh succeeded
        self.waiters: list[Deferred] = []  # blocking ?cached reads waiting for a newer index
        self.timer: Any = None


class AgentCache:
    """Cached reads over `read(query, options)` (the endpoints' read)."""

    log = txaio.make_logger()

    def __init__(self, reactor, read: Callable[[Any, QueryOptions], Any]) -> None:
        self._reactor = reactor
        self._read = read
        self._entries: dict[tuple, _Entry] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def caches(query: Any) -> bool:
        return isinstance(query, CACHEABLE)

    def read(self, query: Any, options: QueryOptions) -> ReadResult | Deferred:
        """The cached answer (a hit), or a fetch (a miss); blocking when `options.min_index`
        asks for an index the entry has not reached yet."""
        key = (query, options.datacenter, options.token, options.filter, options.consistency)
        now = self._reactor.seconds()
        entry = self._entries.get(key)
        max_age = options.max_age
        if entry is not None and max_age > 0 and self._age(entry, now) > max_age:
            entry = None  # too old for this client: fetch afresh
        if entry is None:
            return self._fetch(key, query, options)
        entry.used_at = now
        if options.min_index and entry.result.index <= options.min_index:
            waiter = Deferred()
            entry.waiters.append(waiter)
            timeout = self._reactor.callLater(min(options.wait or MAX_WAIT, MAX_WAIT),
                                              self._give_up, entry, waiter)
            waiter.addBoth(self._cancel_timer, timeout)
            return waiter
        self.hits += 1
        return self._hit(entry, now)

    # --- internals ------------------------------------------------------------------------

    def _age(self, entry: _Entry, now: float) -> float:
        # A refresher parked on the entry's index keeps it current: Consul reports age 0.
        if entry.refreshing is not None and entry.healthy:
            return 0.0
        return now - entry.fetched_at

    def _hit(self, entry: _Entry, now: float) -> ReadResult:
        meta = replace(entry.result.meta, cache_hit=True,
                       cache_age=self._age(entry, now))
        return ReadResult(entry.result.value, meta)

    def _fetch(self, key: tuple, query: Any, options: QueryOptions) -> ReadResult | Deferred:
        self.misses += 1
        fresh = replace(options, min_index=0, wait=0.0, use_cache=False, max_age=0.0)
        result = self._read(query, fresh)
        if isinstance(result, Deferred):
            return result.addCallback(self._store, key, query, fresh)
        return self._store(result, key, query, fresh)

    def _store(self, result: ReadResult, key: tuple, query: Any, options: QueryOptions) -> ReadResult:
        if len(self._entries) >= MAX_ENTRIES:
            self._evict()
        now = self._reactor.seconds()
        old = self._entries.pop(key, None)
        if old is not None:
            self._drop(old)
        entry = _Entry(result, now)
        self._entries[key] = entry
        self._refresh(key, entry, query, options)
        return ReadResult(result.value, replace(result.meta, cache_hit=False))

    def _refresh(self, key: tuple, entry: _Entry, query: Any, options: QueryOptions) -> None:
        """Park a blocking read on the entry's index; on an answer, update and park again."""
        if self._entries.get(key) is not entry or isinstance(query, q.CatalogDatacenters):
            return  # gone; or a read that cannot block (its age then grows)
        if self._reactor.seconds() - entry.used_at > LAST_GET_TTL:
            del self._entries[key]
            self._drop(entry)
            return
        try:
            d = self._read(query, replace(options, min_index=entry.result.index, wait=MAX_WAIT))
        except Exception:  # noqa: BLE001 - e.g. no leader: retry later, keep the old answer
            self._failed(key, entry, query, options)
            return
        if not isinstance(d, Deferred):
            self._updated(d, key, entry, query, options)
            return
        entry.refreshing = d
        d.addCallbacks(self._updated, self._refresh_failed,
                       callbackArgs=(key, entry, query, options),
                       errbackArgs=(key, entry, query, options))

    def _updated(self, result: ReadResult, key, entry: _Entry, query, options) -> None:
        entry.refreshing = None
        entry.healthy = True
        entry.fetched_at = self._reactor.seconds()
        if result.index != entry.result.index:
            entry.result = result
            waiters, entry.waiters = entry.waiters, []
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(self._hit(entry, self._reactor.seconds()))
        # The next refresh starts on a later turn: a read answered at once (an index that
        # moved meanwhile) must not recurse without bound.
        entry.timer = self._reactor.callLater(0, self._refresh, key, entry, query, options)

    def _refresh_failed(self, failure, key, entry: _Entry, query, options) -> None:
        entry.refreshing = None
        if failure.check(Exception):
            self._failed(key, entry, query, options)

    def _failed(self, key, entry: _Entry, query, options) -> None:
        entry.healthy = False
        entry.timer = self._reactor.callLater(REFRESH_RETRY, self._refresh, key, entry, query,
                                              options)

    def _give_up(self, entry: _Entry, waiter: Deferred) -> None:
        if waiter in entry.waiters:
            entry.waiters.remove(waiter)
        if not waiter.called:
            waiter.callback(self._hit(entry, self._reactor.seconds()))

    @staticmethod
    def _cancel_timer(value: Any, timer: Any) -> Any:
        if timer.active():
            timer.cancel()
        return value

    def _drop(self, entry: _Entry) -> None:
        if entry.refreshing is not None and not entry.refreshing.called:
            entry.refreshing.addErrback(lambda f: None)
            entry.refreshing.cancel()
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        for waiter in entry.waiters:
            if not waiter.called:
                waiter.callback(ReadResult(entry.result.value,
                                           replace(entry.result.meta, cache_hit=True)))

    def _evict(self) -> None:
        """Drop the least recently used entry."""
        key = min(self._entries, key=lambda k: self._entries[k].used_at)
        self._drop(self._entries.pop(key))

    def stop(self) -> None:
        for entry in self._entries.values():
            self._drop(entry)
        self._entries.clear()
