"""/v1/kv/<key>: get (raw, recurse, keys with separator), put (flags, cas, acquire, release),
delete (recurse, cas)."""

from __future__ import annotations

from dataclasses import replace

from agent.errors import InvalidRequest, WaypostError
from agent.facade import KVOperation, queries
from agent.structs import KVEntry
from gateway.http.api import TEXT, VARY
from gateway.http.decode import flag, parse_uint64
from gateway.http.encode import kv as encode_kv
from gateway.http.request import Response
from gateway.http.results import MISSING, Raw, Read

RAW_HEADERS = ((b"Content-Security-Policy", b"sandbox"), (b"X-Content-Type-Options", b"nosniff"))


def kv(facade, request, params, key: str):
    if request.method in ("GET", "HEAD"):
        return _get(request, key)
    if request.method == "PUT":
        return _put(facade, request, key)
    return _delete(facade, request, key)


def _get(request, key: str) -> Read:
    if "keys" in request.query:
        separator = request.query.get("separator", [""])[0]
        return Read(queries.KVKeys(key, separator), lambda keys: keys if keys else MISSING)
    if "recurse" in request.query:
        return Read(queries.KVList(key),
                    lambda entries: [encode_kv(e) for e in entries] if entries else MISSING)
    if not key:
        raise InvalidRequest("Missing key name")
    if flag(request, "raw"):
        return Read(queries.KVGet(key), lambda entry: MISSING if entry is None else
                    Raw(entry.value or b"", b"text/plain", RAW_HEADERS))
    return Read(queries.KVGet(key),
                lambda entry: MISSING if entry is None else [encode_kv(entry)])


def _go_uint(request, name: str) -> int | None:
    """Consul parses ?flags and ?cas with strconv.ParseUint and returns its error as a 500."""
    values = request.query.get(name)
    if values is None:
        return None
    text = values[0]
    if not text.isascii() or not text.isdigit():
        raise WaypostError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = parse_uint64(text)  # never int() on the raw text: past 4,300 digits it raises
    if value is None:
        raise WaypostError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def _check_key(key: str) -> None:
    if not key:
        raise InvalidRequest("Missing key name")


def _put(facade, request, key: str):
    _check_key(key)
    flags = _go_uint(request, "flags") or 0
    cas = _go_uint(request, "cas")
    limit = facade.config.kv_max_value_size
    if len(request.body) > limit:
        text = (f"Request body({len(request.body)} bytes) too large, max size: {limit} bytes. "
                "See https://www.consul.io/docs/agent/options.html#kv_max_value_size.")
        return Response(413, text.encode(), [VARY], content_type=TEXT)
    entry = KVEntry(key=key, value=request.body or None, flags=flags)
    # As Consul: ?release wins over ?acquire, which wins over ?cas.
    if "release" in request.query:
        session = request.query["release"][0]
        return facade.write(KVOperation("unlock", replace(entry, session=session)))
    if "acquire" in request.query:
        session = request.query["acquire"][0]
        return facade.write(KVOperation("lock", replace(entry, session=session)))
    if cas is not None:
        return facade.write(KVOperation("cas", entry, cas))
    return facade.write(KVOperation("set", entry))


def _delete(facade, request, key: str):
    cas = _go_uint(request, "cas")
    if "recurse" in request.query:
        return facade.write(KVOperation("delete-tree", KVEntry(key=key)))
    _check_key(key)
    if cas is not None:
        return facade.write(KVOperation("delete-cas", KVEntry(key=key), cas))
    return facade.write(KVOperation("delete", KVEntry(key=key)))
