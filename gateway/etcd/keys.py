"""/v2/keys/<key>: the etcd v2 key space over the KV store (get, watch, set, create, update,
compare-and-swap, delete, compare-and-delete, in-order keys, directories, TTLs).

Owns: turning each request into reads through ``facade.read`` (:mod:`gateway.etcd.reads`) and
one KV operation through ``facade.write``, conditioned on what was read (``check-index`` with
the index read just before, so a racing writer makes the request fail with "Compare failed",
never half-apply it). The index a write answers is the ``modifiedIndex`` and ``X-Etcd-Index``
shown. TTLs are :mod:`gateway.etcd.ttl`'s, watches :mod:`gateway.etcd.watch`'s.

Values are bytes, as etcd keeps them (Go strings): ``value=%ff`` stores the one byte 0xff,
which ``/v1/kv/<key>?raw`` gives back exactly, and ``prevValue`` compares bytes. etcd's JSON
answers carry values as strings, so there a byte that is not UTF-8 shows as U+FFFD, one per
byte, as Go's encoder (and so etcd) shows it; see :func:`gateway.etcd.tree.shown`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from agent.errors import WaypostError
from agent.facade import CONSISTENT, KVOperation, QueryOptions
from agent.structs import KVEntry
from gateway.etcd.reads import Expiries, Reader, Snapshot
from gateway.etcd.tree import clean_key, etcd_key, kv_key, shown
from gateway.etcd.ttl import ABSENT, INDEX, NONE, TTLKeys
from gateway.etcd.watch import watch
from gateway.etcd.wire import EtcdError, Fields, answer, current_index
from gateway.http.request import Response

__all__ = ["Keys"]

_POST_ATTEMPTS = 5  # in-order keys named after an index another writer took first


class Keys:
    """The ``/v2/keys`` handler of one agent's etcd frontend."""

    def __init__(self, facade, expiries: Expiries) -> None:
        self.facade = facade
        self.expiries = expiries

    def __call__(self, request, arg: str) -> Response | Deferred:
        try:
            return _Request(self.facade, self.expiries, request).dispatch(clean_key(arg))
        except EtcdError as exc:
            return exc.response(self.facade)


class _Request:
    def __init__(self, facade, expiries: Expiries, request) -> None:
        self.facade = facade
        self.request = request
        self.fields = Fields(request)
        # quorum=true is etcd's linearizable read: Consul's consistent mode.
        quorum = request.method in ("GET", "HEAD") and self.fields.flag("quorum")
        self.reader = Reader(facade, expiries,
                             QueryOptions(consistency=CONSISTENT) if quorum else QueryOptions())
        self.ttl = TTLKeys(self.reader, EtcdError)

    def dispatch(self, key: str) -> Deferred:
        method = self.request.method
        if method in ("GET", "HEAD"):
            d = self.get(key)
        elif key == "/":
            raise EtcdError(107, "/")
        elif method == "DELETE":
            d = self.delete(key)
        elif method == "POST":
            d = self.post(key)
        else:
            d = self.put(key)
        return d.addErrback(self.failed)

    def failed(self, failure) -> Response:
        if failure.check(EtcdError):
            return failure.value.response(self.facade)
        failure.trap(WaypostError)
        return EtcdError(300, str(failure.value)).response(self.facade)

    def answer(self, status: int, doc: dict[str, Any], index: int | None = None) -> Response:
        return answer(self.facade, status, doc, index)

    # --- reads ---

    @inlineCallbacks
    def get(self, key: str):
        fields = self.fields
        recursive = bool(fields.flag("recursive"))
        fields.flag("sorted")  # listings are always sorted
        if fields.flag("wait"):
            wait_index = fields.uint("waitIndex", 203)
            start = current_index(self.facade)
            event = yield watch(self.reader, kv_key(key), recursive, wait_index or start + 1)
            return self.answer(200, event, start)
        snapshot: Snapshot = yield self.reader.snapshot(kv_key(key))
        node = snapshot.tree.node(kv_key(key), recursive)
        if node is None:
            raise EtcdError(100, key)
        return self.answer(200, {"action": "get", "node": node})

    # --- writes ---

    @inlineCallbacks
    def post(self, key: str):
        """An in-order key: named after the next index (20 digits), created only if absent."""
        for attempt in range(_POST_ATTEMPTS):
            name = f"{key}/{current_index(self.facade) + 1:020d}"
            try:
                return (yield self.put(name, create=True))
            except EtcdError as exc:
                if exc.code != 105 or attempt == _POST_ATTEMPTS - 1:
                    raise

    @inlineCallbacks
    def put(self, key: str, create: bool = False):
        fields = self.fields
        kv = kv_key(key)
        value = fields.raw("value")
        is_dir = bool(fields.flag("dir"))
        prev_exist = False if create else fields.flag("prevExist")
        prev_value = fields.raw("prevValue")
        prev_index = fields.uint("prevIndex", 203)
        refresh = bool(fields.flag("refresh"))
        ttl = fields.uint("ttl", 202)
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
        snapshot: Snapshot = yield self.reader.snapshot(kv, ancestors=True)
        tree = snapshot.tree
        parent = tree.file_ancestor(kv)
        if parent is not None:
            raise EtcdError(104, etcd_key(parent))
        entry = tree.file(kv)
        compare = prev_value is not None or prev_index
        if entry is None and tree.is_dir(kv):
            return self._put_existing_dir(snapshot, key, is_dir, prev_exist, compare, ttl)
        if prev_exist is False and entry is not None:
            raise EtcdError(105, key)
        if is_dir and entry is not None:
            raise EtcdError(102, key)  # replacing a file by a directory is refused
        if is_dir and ttl:
            raise EtcdError(209, "ttl on directories is not supported")
        if (prev_exist or compare or refresh) and entry is None:
            raise EtcdError(100, key)
        if compare:
            _compare(entry, prev_value, prev_index)
        prev_node = tree.file_node(entry) if entry is not None else None
        if refresh:
            index, written = yield self.ttl.refresh(snapshot, entry, ttl)
            return self._written(snapshot, "update", written, index, prev_node, 200)
        target = kv + "/" if is_dir else kv
        new = KVEntry(key=target, value=None if is_dir else (value or b""))
        action = ("compareAndSwap" if compare else "update" if prev_exist
                  else "create" if prev_exist is False else "set")
        condition = {"set": NONE, "create": ABSENT}.get(action, INDEX)
        expected = entry.modify_index if entry is not None else 0
        index, written = yield self.ttl.write(snapshot, new, entry, ttl, condition, expected)
        return self._written(snapshot, action, written, index, prev_node,
                             201 if entry is None else 200)

    def _put_existing_dir(self, snapshot: Snapshot, key: str, is_dir: bool,
                          prev_exist: bool | None, compare: Any, ttl: int | None) -> Response:
        if prev_exist is False:
            raise EtcdError(105, key)  # mkdir of an existing directory
        if not is_dir or compare or not prev_exist:
            raise EtcdError(102, key)  # a value or a compare on a directory, or a second setdir
        if ttl:
            raise EtcdError(209, "ttl on directories is not supported")
        # updatedir: nothing to change
        node = snapshot.tree.dir_node(kv_key(key), children=False)
        return self.answer(200, {"action": "update", "node": node, "prevNode": node})

    def _written(self, snapshot: Snapshot, action: str, entry: KVEntry, index: int,
                 prev_node: dict[str, Any] | None, status: int) -> Response:
        """The answer to a write, from what the write answered: its index and the entry."""
        tree = snapshot.tree
        if entry.key.endswith("/"):
            node: dict[str, Any] = {"key": etcd_key(entry.key), "dir": True}
            tree.add_ttl(node, entry)
            node.update(modifiedIndex=entry.modify_index, createdIndex=entry.create_index)
        else:
            node = tree.file_node(entry)
        doc: dict[str, Any] = {"action": action, "node": node}
        if prev_node is not None:
            doc["prevNode"] = prev_node
        return self.answer(status, doc, index)

    @inlineCallbacks
    def delete(self, key: str):
        fields = self.fields
        kv = kv_key(key)
        is_dir = bool(fields.flag("dir"))
        recursive = bool(fields.flag("recursive"))
        prev_value = fields.raw("prevValue")
        prev_index = fields.uint("prevIndex", 203)
        compare = prev_value is not None or prev_index
        snapshot: Snapshot = yield self.reader.snapshot(kv)
        tree = snapshot.tree
        entry = tree.file(kv)
        if entry is not None:
            if compare:
                _compare(entry, prev_value, prev_index)
            op = KVOperation("delete-cas", KVEntry(key=kv), entry.modify_index)
            action = "compareAndDelete" if compare else "delete"
            done = yield self._delete(snapshot, op, action, key, [entry], tree.file_node(entry))
            return done
        if not tree.is_dir(kv):
            raise EtcdError(100, key)
        if compare or not (is_dir or recursive):
            raise EtcdError(102, key)
        marker = snapshot.rows.entries.get(kv + "/")
        prev_node = tree.dir_node(kv, children=False)
        if recursive:
            op = KVOperation("delete-tree", KVEntry(key=kv + "/"))
            gone = [snapshot.rows.entries[k] for k in tree.dir_keys(kv)]
        elif tree.dir_keys(kv) != [kv + "/"]:
            raise EtcdError(108, key)
        else:
            op = KVOperation("delete-cas", KVEntry(key=kv + "/"), marker.modify_index)
            gone = [marker]
        done = yield self._delete(snapshot, op, "delete", key, gone, prev_node)
        return done

    @inlineCallbacks
    def _delete(self, snapshot: Snapshot, op: KVOperation, action: str, key: str,
                gone: list[KVEntry], prev_node: dict[str, Any]):
        index, applied = yield self.ttl.delete(snapshot, op, gone)
        if not applied:
            raise EtcdError(101, f"[{key} changed concurrently]")
        node: dict[str, Any] = {"key": key}
        if prev_node.get("dir"):
            node["dir"] = True
        node["modifiedIndex"] = index
        node["createdIndex"] = prev_node.get("createdIndex", 0)
        return self.answer(200, {"action": action, "node": node, "prevNode": prev_node}, index)


def _compare(entry: KVEntry, prev_value: bytes | None, prev_index: int | None) -> None:
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
