"""The `CatalogFeed` plugins read through: views, KV reads and coalesced change callbacks."""

from __future__ import annotations

from typing import Any, Callable

import txaio
from twisted.internet.defer import maybeDeferred

from agent.facade import CATALOG_TABLES, KV_TABLE, STALE, QueryOptions, queries
from gateway.hookspecs import CatalogView, KVItem
from gateway.views import build_catalog_view

txaio.use_twisted()

# Plugins read this agent's replica (stale reads: no round trip to a leader).
_LOCAL = QueryOptions(consistency=STALE)


class _Subscriber:
    """Delivers to one callback at most one call at a time, and only the latest news."""

    log = txaio.make_logger()

    def __init__(self, reactor, callback: Callable[..., Any], make_args: Callable[[], tuple]) -> None:
        self.reactor = reactor
        self.callback = callback
        self.make_args = make_args
        self.busy = False
        self.dirty = False
        self.scheduled = False
        self.active = True

    def poke(self) -> None:
        if not self.active:
            return
        self.dirty = True
        if not self.busy and not self.scheduled:
            self.scheduled = True
            self.reactor.callLater(0, self._run)

    def _run(self) -> None:
        self.scheduled = False
        if not self.active or self.busy or not self.dirty:
            return
        self.dirty = False
        self.busy = True
        # make_args runs inside the Deferred too: a view that fails to build is logged like a
        # failing plugin, and the next change is delivered as usual.
        d = maybeDeferred(lambda: self.callback(*self.make_args()))
        d.addErrback(lambda f: self.log.failure("plugin callback failed", failure=f))
        d.addBoth(self._done)

    def _done(self, _) -> None:
        self.busy = False
        if self.dirty:
            self.poke()


class CatalogFeed:
    def __init__(self, facade, reactor) -> None:
        self.facade = facade
        self.reactor = reactor
        self._view: CatalogView | None = None
        self._view_index = -1
        self._catalog_subs: list[_Subscriber] = []
        self._kv_subs: list[tuple[str, _Subscriber]] = []
        self.unsubscribe = facade.on_change(self._committed)

    def view(self) -> CatalogView:
        index = self.facade.local_index(STALE)
        if self._view is None or self._view_index != index:
            self._view = build_catalog_view(self.facade, self.facade.config.datacenter)
            self._view_index = index
        return self._view

    def kv_get(self, key: str) -> KVItem | None:
        entry = self.facade.read(queries.KVGet(key), _LOCAL).value
        return None if entry is None else _item(entry)

    def kv_list(self, prefix: str) -> list[KVItem]:
        return [_item(e) for e in self.facade.read(queries.KVList(prefix), _LOCAL).value]

    def subscribe(self, callback: Callable[[CatalogView], Any]) -> Callable[[], None]:
        sub = _Subscriber(self.reactor, callback, lambda: (self.view(),))
        self._catalog_subs.append(sub)
        return lambda: self._drop(sub)

    def subscribe_kv(self, prefix: str, callback: Callable[[], Any]) -> Callable[[], None]:
        sub = _Subscriber(self.reactor, callback, lambda: ())
        self._kv_subs.append((prefix, sub))
        return lambda: self._drop(sub)

    def _drop(self, sub: _Subscriber) -> None:
        sub.active = False
        self._catalog_subs = [s for s in self._catalog_subs if s is not sub]
        self._kv_subs = [(p, s) for p, s in self._kv_subs if s is not sub]

    def _committed(self, index: int, tables) -> None:
        if tables & CATALOG_TABLES:
            for sub in self._catalog_subs:
                sub.poke()
        if KV_TABLE in tables and self._kv_subs:
            # The store does not say which keys moved; a KV subscriber re-reads its prefix.
            for _, sub in self._kv_subs:
                sub.poke()


def _item(entry) -> KVItem:
    return KVItem(entry.key, entry.value, entry.flags, entry.modify_index)
