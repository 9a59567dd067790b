"""The one wrapper every endpoint goes through: route, parse shared params, map errors, encode.

Reads are encoded once per state index and shared: the encoded response is cached by request
(path and query, minus index/wait) and reused while the store's index is unchanged, so a hot key
or a thousand woken blocking queries cost one encoding. Blocking queries park on store watches.
"""

from __future__ import annotations

import random
import re
from typing import Any
from urllib.parse import urlencode

import txaio
from twisted.internet.defer import Deferred

from agent.facade import WriteResult
from agent.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    UnknownDatacenter,
    WaypostError,
)
from gateway.http import encode
from gateway.http.params import parse_query_params
from gateway.http.request import Request, Response
from gateway.http.results import EMPTY, MISSING, Raw, Read
from gateway.http.routes import RouteTable

txaio.use_twisted()

VARY = (b"Vary", b"Accept-Encoding")
TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"
CACHE_LIMIT = 4096
# A "%" not followed by two hex digits: Go's URL parser refuses the request line (400).
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")

_ERROR_STATUS = [(InvalidRequest, 400), (PermissionDenied, 403), (NotFound, 404),
                 (UnknownDatacenter, 500), (WaypostError, 500)]


def error_response(exc: Exception) -> Response:
    for cls, status in _ERROR_STATUS:
        if isinstance(exc, cls):
            return Response(status, str(exc).encode(), [VARY], content_type=TEXT)
    raise exc


class Cached:
    __slots__ = ("store_index", "index", "response")

    def __init__(self, store_index: int, index: int, response: Response) -> None:
        self.store_index = store_index
        self.index = index
        self.response = response


class HTTPAPI:
    log = txaio.make_logger()

    def __init__(self, facade, reactor, routes: RouteTable, rng: random.Random | None = None) -> None:
        self.facade = facade
        self.reactor = reactor
        self.routes = routes
        self.store = facade.store
        self.rng = rng or random.Random()
        self.pretty = facade.config.pretty_json
        self._cache: dict[tuple, Cached] = {}

    def __call__(self, request: Request) -> Response | Deferred:
        if request.method == "GET" and b"index=" not in request.raw_query:
            # Hot path: the same read at the same state index is answered from its bytes.
            cached = self._cache.get((request.path, request.raw_query))
            if cached is not None and cached.store_index == self.store.index:
                return cached.response
        raw_path = request.raw_path
        if b"%" in raw_path:
            bad = _BAD_ESCAPE.search(raw_path)
            if bad is not None:
                escape = raw_path[bad.start():bad.start() + 3].decode("latin-1")
                return Response(400, f'Bad request: invalid URL escape "{escape}"'.encode(),
                                [VARY], content_type=TEXT)
        route, arg = self.routes.match(request.path)
        if route is None:
            return Response(404, b"", content_type=None)
        if request.method not in route.methods:
            if request.method == "OPTIONS":
                return Response(200, b"", [(b"Allow", route.allow), VARY], content_type=None)
            return Response(405, f"method {request.method} not allowed".encode(),
                            [(b"Allow", route.allow), VARY], content_type=TEXT)
        try:
            # Handlers of foreign APIs (etcd's `wait=true`) read their own query fields.
            own = getattr(route.handler, "own_query_params", False)
            params = parse_query_params({} if own else request.query, self.pretty, self.rng)
            if not route.local:
                self.facade.check_datacenter(params.dc)
            result = route.handler(self.facade, request, params, arg)
        except WaypostError as exc:
            return error_response(exc)
        if isinstance(result, Read):
            return self._read(request, params, result)
        if isinstance(result, Deferred):
            return result.addCallbacks(self._write_result, self._write_error, callbackArgs=(params,))
        return self._write_result(result, params)

    # --- writes ---

    def _write_result(self, value: Any, params) -> Response:
        if isinstance(value, WriteResult):  # a command's answer is its result (true, ...)
            value = value.value
        if value is EMPTY:
            return Response(200, b"", [VARY], content_type=None)
        if isinstance(value, Response):
            return value
        return Response(200, encode.dumps(value, params.pretty), [VARY])

    def _write_error(self, failure) -> Response:
        failure.trap(WaypostError)
        return error_response(failure.value)

    # --- reads ---

    def _cache_key(self, request: Request) -> tuple:
        """The same read, whatever index/wait it blocks with: (path, query without them)."""
        query = request.query
        if "index" in query or "wait" in query:
            # Canonically encoded, so it can only equal a raw query that means the same
            # (plain "k=v" joining made `?tag=a%26b&index=5` share `?tag=a&b`'s entry).
            rest = urlencode([(k, v) for k, vs in sorted(query.items())
                              if k not in ("index", "wait") for v in vs])
            return (request.path, rest.encode())
        return (request.path, request.raw_query)

    def _evaluate(self, key: tuple, read: Read, params) -> Cached:
        store_index = self.store.index
        cached = self._cache.get(key)
        if cached is not None and cached.store_index == store_index:
            return cached
        index, payload = read.run(self.store)
        index = max(index, 1)  # Consul never reports index 0: clients treat it as "no blocking"
        headers = [VARY]
        if read.index_headers:
            if read.consistency_header:
                headers.append((b"X-Consul-Effective-Consistency", params.consistency.encode()))
            headers.append((b"X-Consul-Index", str(index).encode()))
            headers.append((b"X-Consul-KnownLeader", b"true" if self.facade.known_leader() else b"false"))
            headers.append((b"X-Consul-LastContact", str(self.facade.last_contact_ms()).encode()))
        if payload is MISSING:
            response = Response(404, b"", headers, content_type=None)
        elif isinstance(payload, Raw):
            response = Response(200, payload.body, headers + list(payload.headers),
                                content_type=payload.content_type)
        else:
            response = Response(200, encode.dumps(payload, params.pretty), headers)
        cached = Cached(store_index, index, response)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = cached
        return cached

    def _read(self, request: Request, params, read: Read) -> Response | Deferred:
        key = self._cache_key(request)
        cached = self._evaluate(key, read, params)
        if not params.min_index or cached.index > params.min_index or params.wait <= 0:
            return cached.response
        return BlockingQuery(self, key, read, params).deferred


class BlockingQuery:
    """One parked query: wakes on a watch, answers when its index moves past the client's."""

    def __init__(self, api: HTTPAPI, key: tuple, read: Read, params) -> None:
        self.api = api
        self.key = key
        self.read = read
        self.params = params
        self.handle = None
        self.deferred = Deferred(self._cancel)
        self.timer = api.reactor.callLater(params.wait, self._timeout)
        self._park()

    def _park(self) -> None:
        self.handle = self.api.store.watch(self._changed, self.read.tables, self.read.kv_prefixes)

    def _changed(self) -> None:
        self.handle = None
        try:
            cached = self.api._evaluate(self.key, self.read, self.params)
        except Exception as exc:  # noqa: BLE001 - the client gets the error, the agent goes on
            self._finish_error(exc)
            return
        if cached.index > self.params.min_index:
            self._finish(cached.response)
        else:
            self._park()

    def _timeout(self) -> None:
        self.timer = None
        try:
            cached = self.api._evaluate(self.key, self.read, self.params)
        except Exception as exc:  # noqa: BLE001
            self._finish_error(exc)
            return
        self._finish(cached.response)

    def _release(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _finish(self, response: Response) -> None:
        self._release()
        if not self.deferred.called:
            self.deferred.callback(response)

    def _finish_error(self, exc: Exception) -> None:
        self._release()
        if not self.deferred.called:
            self.deferred.errback(exc)

    def _cancel(self, _deferred: Deferred) -> None:
        # The client went away: drop the watch and the timer (the Deferred errbacks itself).
        self._release()
