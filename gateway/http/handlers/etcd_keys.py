"""/v2/keys/<key>: the etcd v2 key space over the KV store (get, watch, set, create, update,
compare-and-swap, delete, compare-and-delete, in-order keys, directories, TTLs).

Owns: parsing etcd's form and query fields, etcd's error bodies and statuses, its headers, and
turning each request into one KV operation through the facade (``cas`` with the index read
just before, so a racing writer makes the request fail with "Compare failed", never
half-apply it). Reads come from :mod:`gateway.http.handlers.etcd_tree`; TTLs from
:mod:`gateway.http.handlers.etcd_ttl`.

Values are bytes, as etcd keeps them (Go strings): ``value=%ff`` stores the one byte 0xff,
which ``/v1/kv/<key>?raw`` gives back exactly, and ``prevValue`` compares bytes. etcd's JSON
answers carry values as strings, so there a byte that is not UTF-8 shows as U+FFFD, one per
byte, as Go's encoder (and so etcd) shows it; see :func:`etcd_tree.shown`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl

from twisted.internet.defer import Deferred, maybeDeferred

from agent.errors import WaypostError
from agent.facade import KVOperation
from agent.structs import KVEntry
from gateway.http.decode import parse_uint64
from gateway.http.handlers.etcd_tree import Tree, clean_key, etcd_key, kv_key, shown
from gateway.http.handlers.etcd_ttl import ABSENT, INDEX, NONE, TTLKeys
from gateway.http.request import Response

__all__ = ["EtcdError", "cluster_id", "headers", "keys", "member_id"]

JSON = b"application/json"
MESSAGES = {100: "Key not found", 101: "Compare failed", 102: "Not a file",
            104: "Not a directory", 105: "Key already exists", 107: "Root is read only",
            108: "Directory not empty", 201: "PrevValue is Required in POST form",
            202: "The given TTL in POST form is not a number",
            203: "The given index in POST form is not a number", 209: "Invalid field",
            210: "Invalid POST form", 211: "Value provided on refresh",
            212: "A TTL must be provided on refresh", 300: "Raft Internal Error"}
STATUS = {100: 404, 101: 412, 102: 403, 105: 412, 108: 403, 300: 500}  # others: 400
_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class EtcdError(Exception):
    """An etcd error: ``{"errorCode", "message", "cause", "index"}`` with its HTTP status."""

    def __init__(self, code: int, cause: str = "", index: int = 0) -> None:
        super().__init__(f"{code} {MESSAGES.get(code, '')} ({cause})")
        self.code, self.cause, self.index = code, cause, index

    def response(self, facade) -> Response:
        body: dict[str, Any] = {"errorCode": self.code, "message": MESSAGES.get(self.code, "")}
        if self.cause:
            body["cause"] = self.cause
        body["index"] = self.index or facade.store.index
        return Response(STATUS.get(self.code, 400), _dumps(body), headers(facade),
                        content_type=JSON)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def cluster_id(facade) -> str:
    return hashlib.sha256(facade.config.datacenter.encode()).hexdigest()[:16]


def member_id(facade) -> str:
    node_id = getattr(facade.config, "node_id", "") or facade.config.node_name
    return hashlib.sha256(node_id.encode()).hexdigest()[:16]


def headers(facade, index: int | None = None) -> list[tuple[bytes, bytes]]:
    store_index = facade.store.index
    return [(b"X-Etcd-Cluster-Id", cluster_id(facade).encode()),
            (b"X-Etcd-Index", str(store_index if index is None else index).encode()),
            (b"X-Raft-Index", str(store_index).encode()), (b"X-Raft-Term", b"1")]


class Fields:
    """etcd's request fields: the form body (PUT/POST) first, then the query string.

    Both are split and unescaped byte for byte: read as latin-1, each byte is one character,
    so encoding a value back to latin-1 gives exactly the bytes the client sent (a UTF-8
    reading with "replace" turned every non-UTF-8 value into U+FFFD and lost it).
    """

    def __init__(self, request) -> None:
        self.values: dict[str, list[bytes]] = {}
        content_type = request.headers.get("content-type", "")
        if request.body and "application/x-www-form-urlencoded" in content_type:
            self._add(request.body)
        if request.raw_query:
            self._add(request.raw_query)

    def _add(self, raw: bytes) -> None:
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True,
                                     encoding="latin-1"):
            self.values.setdefault(name, []).append(value.encode("latin-1"))

    def raw(self, name: str) -> bytes | None:
        """A field's bytes, exactly as sent; None when absent."""
        values = self.values.get(name)
        return values[0] if values else None

    def get(self, name: str) -> str | None:
        """A field that must be ASCII (a flag or a number): anything else fails its check."""
        value = self.raw(name)
        return None if value is None else value.decode("latin-1")

    def flag(self, name: str) -> bool | None:
        """A boolean field; None when absent."""
        text = self.get(name)
        if text is None:
            return None
        if text in _TRUE:
            return True
        if text in _FALSE or text == "":
            return False
        raise EtcdError(209, f"invalid value for {name}")

    def uint(self, name: str, code: int) -> int | None:
        text = self.get(name)
        if text is None or text == "":
            return None
        value = parse_uint64(text)  # never int() on client text: 4,301 digits raise
        if value is None:
            raise EtcdError(code, f"invalid value for {name}")
        return value


def keys(facade, request, params, arg: str):
    """The route handler: every method of /v2/keys/<key>."""
    handler = _Keys(facade, request)
    try:
        result = handler.dispatch(clean_key(arg))
    except EtcdError as exc:
        return exc.response(facade)
    if isinstance(result, Deferred):
        return result.addErrback(handler.failed)
    return result


class _Keys:
    def __init__(self, facade, request) -> None:
        self.facade = facade
        self.request = request
        self.ttl = TTLKeys(facade, EtcdError)
        self.tree = Tree(facade.store.kv, self.ttl.info)

    def dispatch(self, key: str) -> Response | Deferred:
        fields = Fields(self.request)
        method = self.request.method
        if method in ("GET", "HEAD"):
            return self.get(key, fields)
        if key == "/":
            raise EtcdError(107, "/")
        if method == "DELETE":
            return self.delete(key, fields)
        if method == "POST":
            key = f"{key}/{self.facade.store.index + 1:020d}"
            return self.put(key, fields, create=True)
        return self.put(key, fields)

    def failed(self, failure) -> Response:
        if failure.check(EtcdError):
            return failure.value.response(self.facade)
        failure.trap(WaypostError)
        return EtcdError(300, str(failure.value)).response(self.facade)

    def answer(self, status: int, doc: dict[str, Any], index: int | None = None) -> Response:
        return Response(status, _dumps(doc), headers(self.facade, index), content_type=JSON)

    # --- reads ---

    def get(self, key: str, fields: Fields) -> Response | Deferred:
        recursive = bool(fields.flag("recursive"))
        fields.flag("sorted")  # listings are always sorted
        fields.flag("quorum")  # every read is answered by the leader's state
        if fields.flag("wait"):
            wait_index = fields.uint("waitIndex", 203)
            return Watch(self, kv_key(key), recursive, wait_index).deferred
        node = self.tree.node(kv_key(key), recursive)
        if node is None:
            raise EtcdError(100, key)
        return self.answer(200, {"action": "get", "node": node})

    # --- writes ---

    def put(self, key: str, fields: Fields, create: bool = False) -> Deferred:
        kv = kv_key(key)
        value = fields.raw("value")
        is_dir = bool(fields.flag("dir"))
        prev_exist = fields.flag("prevExist")
        prev_value = fields.raw("prevValue")
        prev_index = fields.uint("prevIndex", 203)
        refresh = bool(fields.flag("refresh"))
        ttl = fields.uint("ttl", 202)
        if create:
            prev_exist = False
        if prev_value == b"":
            raise EtcdError(201, "")
        if is_dir and value:
            raise EtcdError(209, "value field should be empty when setting a directory")
        if refresh:
            if value:
                raise EtcdError(211, "")
            if ttl is None:
                raise EtcdError(212, "")
        self.ttl.check_range(ttl)
        parent = self.tree.file_ancestor(kv)
        if parent is not None:
            raise EtcdError(104, etcd_key(parent))
        entry = self.tree.file(kv)
        compare = prev_value is not None or prev_index
        if entry is None and self.tree.is_dir(kv):
            return self._put_existing_dir(key, is_dir, prev_exist, compare, ttl)
        if prev_exist is False and entry is not None:
            raise EtcdError(105, key)
        if is_dir and entry is not None:
            raise EtcdError(102, key)  # replacing a file by a directory is refused
        if is_dir and ttl:
            raise EtcdError(209, "ttl on directories is not supported")
        if (prev_exist or compare or refresh) and entry is None:
            raise EtcdError(100, key)
        if compare:
            self._compare(entry, prev_value, prev_index)
        prev_node = self.tree.file_node(entry) if entry is not None else None
        if refresh:
            return self.ttl.refresh(entry, ttl).addCallback(
                lambda _: self._written("update", kv, prev_node, 200))
        target = kv + "/" if is_dir else kv
        new = KVEntry(key=target, value=None if is_dir else (value or b""))
        action = ("compareAndSwap" if compare else "update" if prev_exist
                  else "create" if prev_exist is False else "set")
        condition = {"set": NONE, "create": ABSENT}.get(action, INDEX)
        expected = entry.modify_index if entry is not None else 0
        write = self.ttl.write(new, entry, ttl, condition, expected)
        status = 201 if entry is None else 200
        return write.addCallback(lambda _: self._written(action, target, prev_node, status))

    def _put_existing_dir(self, key: str, is_dir: bool, prev_exist: bool | None, compare: Any,
                          ttl: int | None) -> Response:
        if prev_exist is False:
            raise EtcdError(105, key)  # mkdir of an existing directory
        if not is_dir or compare or not prev_exist:
            raise EtcdError(102, key)  # a value or a compare on a directory, or a second setdir
        if ttl:
            raise EtcdError(209, "ttl on directories is not supported")
        node = self.tree.dir_node(kv_key(key), children=False)  # updatedir: nothing to change
        return self.answer(200, {"action": "update", "node": node, "prevNode": node})

    def _compare(self, entry: KVEntry, prev_value: bytes | None, prev_index: int | None) -> None:
        value = entry.value or b""
        value_ok = prev_value is None or prev_value == value  # bytes, as etcd compares
        index_ok = not prev_index or prev_index == entry.modify_index
        if value_ok and index_ok:
            return
        values = f"[{shown(prev_value or b'')} != {shown(value)}]"
        if not index_ok and not value_ok:
            cause = f"{values} [{prev_index} != {entry.modify_index}]"
        elif not index_ok:
            cause = f"[{prev_index} != {entry.modify_index}]"
        else:
            cause = values
        raise EtcdError(101, cause)

    def _written(self, action: str, target: str, prev_node: dict[str, Any] | None,
                 status: int) -> Response:
        entry = self.facade.store.kv.entries.get(target)
        if entry is None:
            raise EtcdError(100, etcd_key(target))
        if target.endswith("/"):
            node = {"key": etcd_key(target), "dir": True}
            self.tree.add_ttl(node, entry)
            node.update(modifiedIndex=entry.modify_index, createdIndex=entry.create_index)
        else:
            node = self.tree.file_node(entry)
        doc: dict[str, Any] = {"action": action, "node": node}
        if prev_node is not None:
            doc["prevNode"] = prev_node
        return self.answer(status, doc)

    def delete(self, key: str, fields: Fields) -> Deferred:
        kv = kv_key(key)
        is_dir = bool(fields.flag("dir"))
        recursive = bool(fields.flag("recursive"))
        prev_value = fields.raw("prevValue")
        prev_index = fields.uint("prevIndex", 203)
        compare = prev_value is not None or prev_index
        entry = self.tree.file(kv)
        if entry is not None:
            if compare:
                self._compare(entry, prev_value, prev_index)
            op = KVOperation("delete-cas", KVEntry(key=kv), entry.modify_index)
            action = "compareAndDelete" if compare else "delete"
            return self._delete(op, action, key, entry, self.tree.file_node(entry))
        if not self.tree.is_dir(kv):
            raise EtcdError(100, key)
        if compare or not (is_dir or recursive):
            raise EtcdError(102, key)
        marker = self.facade.store.kv.entries.get(kv + "/")
        prev_node = self.tree.dir_node(kv, children=False)
        if recursive:
            op = KVOperation("delete-tree", KVEntry(key=kv + "/"))
        elif self.tree.dir_keys(kv) != [kv + "/"]:
            raise EtcdError(108, key)
        else:
            op = KVOperation("delete-cas", KVEntry(key=kv + "/"), marker.modify_index)
        return self._delete(op, "delete", key, marker, prev_node)

    def _delete(self, op: KVOperation, action: str, key: str, prev: KVEntry | None,
                prev_node: dict[str, Any]) -> Deferred:
        def done(ok: Any) -> Response:
            if ok is False:
                raise EtcdError(101, f"[{key} changed concurrently]")
            node: dict[str, Any] = {"key": key}
            if prev_node.get("dir"):
                node["dir"] = True
            node["modifiedIndex"] = self.facade.store.index
            node["createdIndex"] = prev_node.get("createdIndex", 0)
            answer = self.answer(200, {"action": action, "node": node, "prevNode": prev_node})
            return self.ttl.forget(held).addCallback(lambda _: answer)
        kv = self.facade.store.kv
        held = [kv.entries[k] for k in kv.order.with_prefix(op.entry.key)
                if kv.entries[k].session] if op.op == "delete-tree" else [prev] if prev else []
        return maybeDeferred(self.facade.write, op).addCallback(lambda r: done(r.value))


class Watch:
    """A parked ``wait=true`` GET: answers with the first change at or after its index."""

    def __init__(self, keys_handler: _Keys, kv: str, recursive: bool,
                 wait_index: int | None) -> None:
        self.handler = keys_handler
        self.kv = kv
        self.recursive = recursive
        self.start_index = keys_handler.facade.store.index
        self.wait_index = wait_index if wait_index else self.start_index + 1
        self.handle = None
        self.deferred: Deferred = Deferred(self._cancel)
        self._check()

    def _check(self) -> None:
        self.handle = None
        event = self.handler.tree.first_event(self.kv, self.recursive, self.wait_index)
        if event is None:
            self.handle = self.handler.facade.watch(self._check, kv_prefixes=(self.kv,))
            return
        self.deferred.callback(self.handler.answer(200, event, self.start_index))

    def _cancel(self, _deferred: Deferred) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
