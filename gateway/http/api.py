"""The one wrapper every endpoint goes through: route, parse shared params, map errors, encode.

Reads go to the core (`facade.read`) as typed queries with `QueryOptions`; blocking, the
consistency mode and `?filter=` are decided there. Answers are encoded once per index and
shared: the encoded response is cached by request (path and query, minus index/wait) and
reused while `facade.local_index(mode)` says a read in that mode would still be answered at
the same index here, so a hot key or a thousand woken blocking queries cost one encoding.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import txaio
from twisted.internet.defer import Deferred

from agent.facade import ReadResult, WriteRequest, WriteResult, queries
from agent.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    UnknownDatacenter,
    WaypostError,
)
from gateway.http import encode
from gateway.http.params import discovery_max_stale_of, parse_query_params
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


class InDatacenter:
    """The facade as a handler of a request naming another datacenter (?dc=) sees it: its
    writes go there, as Consul's WriteRequest takes its Datacenter from ?dc. Everything else
    is the facade's own (reads carry the datacenter in their QueryOptions already)."""

    def __init__(self, facade, datacenter: str) -> None:
        self._facade = facade
        self._datacenter = datacenter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._facade, name)

    def write(self, command: Any, request: WriteRequest = WriteRequest()) -> Deferred:
        if not request.datacenter:
            request = WriteRequest(datacenter=self._datacenter, token=request.token)
        return self._facade.write(command, request)


class Cached:
    """An encoded answer, valid while `facade.local_index(mode)` is still `token`."""

    __slots__ = ("token", "mode", "result", "response")

    def __init__(self, token: int | None, mode: str, result: ReadResult,
                 response: Response) -> None:
        self.token = token
        self.mode = mode
        self.result = result  # the core hands the same object to every reader at one index
        self.response = response


class HTTPAPI:
    log = txaio.make_logger()

    def __init__(self, facade, reactor, routes: RouteTable) -> None:
        self.facade = facade
        self.reactor = reactor
        self.routes = routes
        self.pretty = facade.config.pretty_json
        self.discovery_max_stale = discovery_max_stale_of(facade.config)
        facade.reload_listeners.append(self._reloaded)
        self._cache: dict[tuple, Cached] = {}


    def _reloaded(self, config) -> None:
        self.discovery_max_stale = discovery_max_stale_of(config)
    def __call__(self, request: Request) -> Response | Deferred:
        if request.method == "GET" and b"index=" not in request.raw_query:
            # Hot path: the same read at the same state index is answered from its bytes.
            cached = self._cache.get((request.path, request.raw_query))
            if (cached is not None and cached.token is not None
                    and cached.token == self.facade.local_index(cached.mode)):
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
            params = parse_query_params({} if own else request.query, request.headers,
                                        self.pretty, path=request.path,
                                        discovery_max_stale=self.discovery_max_stale)
            facade = self.facade
            if not route.local:
                facade.check_datacenter(params.dc)
                if params.dc and params.dc != facade.config.datacenter:
                    facade = InDatacenter(facade, params.dc)
            result = route.handler(facade, request, params, arg)
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

    def _read(self, request: Request, params, read: Read) -> Response | Deferred:
        key = self._cache_key(request)
        options = params.options
        if options.min_index <= 0:
            cached = self._cache.get(key)
            if (cached is not None and cached.token is not None
                    and cached.token == self.facade.local_index(cached.mode)):
                return cached.response
        try:
            result = self.facade.read(read.query, options)
        except WaypostError as exc:
            return error_response(exc)
        if isinstance(result, Deferred):
            return result.addCallbacks(self._encode, self._write_error,
                                       callbackArgs=(key, read, params))
        return self._encode(result, key, read, params)

    def _encode(self, result: ReadResult, key: tuple, read: Read, params) -> Response:
        """The response for `result`, encoded once per index and shared by every reader."""
        mode = params.options.consistency
        cached = self._cache.get(key)
        if cached is not None and cached.result is result:
            return cached.response
        token = self.facade.local_index(mode)
        dc = params.options.datacenter
        if (dc and dc != self.facade.config.datacenter) or isinstance(
                read.query, queries.CatalogDatacenters):
            # Not valid while our own index stands: another datacenter's state, or the WAN
            # pool's view. Encoded again for every request.
            token = None
        meta = result.meta
        headers = [VARY]
        if read.index_headers:
            if read.consistency_header:
                headers.append((b"X-Consul-Effective-Consistency", meta.consistency.encode()))
            headers.append((b"X-Consul-Index", str(meta.index).encode()))
            headers.append((b"X-Consul-KnownLeader", b"true" if meta.known_leader else b"false"))
            headers.append((b"X-Consul-LastContact",
                            str(int(meta.last_contact * 1000)).encode()))
        if meta.cache_hit is not None:
            headers.append((b"X-Cache", b"HIT" if meta.cache_hit else b"MISS"))
            if meta.cache_hit:
                headers.append((b"Age", b"%d" % round(meta.cache_age)))
            token = None  # an answer with cache headers is never served from the fast path
        payload = read.encode(result.value)
        if payload is MISSING:
            response = Response(404, b"", headers, content_type=None)
        elif isinstance(payload, Raw):
            response = Response(200, payload.body, headers + list(payload.headers),
                                content_type=payload.content_type)
        else:
            response = Response(200, encode.dumps(payload, params.pretty), headers)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = Cached(token, mode, result, response)
        return response
